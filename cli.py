"""Command-line flags generated from a config dataclass: the one parser every script uses.

Each field `name` becomes `--name` (underscores written as dashes): its type comes from the default, a tuple default
takes that many values (`--rescale 256 320`), a bool takes an explicit value (`--compile true`, never a bare switch),
and `field(metadata={"choices": ...})` restricts the values. Only the flags given on the command line are returned,
so a script can lay them over its defaults, a preset or its embedded synthetic default.

`variants` makes those layers visible in `--help`: {label: {field: value}}, e.g. {"ssv2": {...}, "no-data run":
{...}}; each flag's help shows its default and, where a variant changes it, `label: value`
(`default: 0.0005; no-data run: 0.001`). Variants that give the same value share one entry (`ssv2/diving48: 0.05`).
"""
import argparse
from dataclasses import MISSING, fields


def _bool(text):
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _show(value):
    return " ".join(str(v) for v in value) if isinstance(value, tuple) else repr(value) if value == "" else str(value)


def help_text(name, default, variants):
    """`default: D` then `label: V` for each variant that changes the field, labels with equal values joined."""
    changed = {}
    for label, overrides in variants.items():
        if name in overrides and overrides[name] != default:
            changed.setdefault(_show(overrides[name]), []).append(label)
    return "; ".join([f"default: {_show(default)}"] + [f"{'/'.join(labels)}: {v}" for v, labels in changed.items()])


def parse_flags(cls, argv, description, positional=(), variants=None):
    """-> {field name: value} for the flags in `argv`; names in `positional` are positional arguments instead."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(cls):
        default = f.default if f.default is not MISSING else f.default_factory()
        kw = dict(help=help_text(f.name, default, variants or {}))
        if isinstance(default, bool):
            kw.update(type=_bool, metavar="{true,false}")
        elif isinstance(default, tuple):
            kw.update(type=type(default[0]), nargs=len(default))
        else:
            kw.update(type=type(default), choices=f.metadata.get("choices"))
        if f.name in positional:
            p.add_argument(f.name, **kw)
        else:
            p.add_argument("--" + f.name.replace("_", "-"), default=argparse.SUPPRESS, **kw)
    given = vars(p.parse_args(argv))
    return {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}


def as_flags(values: dict) -> list:
    """The inverse of parse_flags, for running a script: {"clip_len": 8, "rescale": (146, 183), "flip": False} ->
    ["--clip-len", "8", "--rescale", "146", "183", "--flip", "false"]."""
    out = []
    for name, value in values.items():
        out.append("--" + name.replace("_", "-"))
        if isinstance(value, tuple):
            out += [str(v) for v in value]
        else:
            out.append(str(value).lower() if isinstance(value, bool) else str(value))
    return out
