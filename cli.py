"""Command-line flags generated from a config dataclass: the one parser every script uses, and the range check.

Each field `name` becomes `--name` (underscores written as dashes): its type comes from the default, a tuple default
takes that many values (`--rescale 256 320`), a bool takes an explicit value (`--compile true`, never a bare switch).
A field's metadata may hold "choices", "min" / "max" (inclusive) and "above" (an exclusive lower bound): a flag given
outside its range stops at once naming the flag, its value and the range (a tuple element by element); --help shows
them. Only the flags given on the
command line are returned, so a script can lay them over its defaults, a preset or its embedded synthetic default;
`variants` ({label: {field: value}}) shows those layers in --help beside each default (`default: 0.0005; no-data run:
0.001`).
"""
import argparse
import dataclasses
import math


# A field's metadata may hold "choices", "min" / "max" (inclusive) and "above" (exclusive lower bound); a tuple field
# is checked element by element. The scripts' cross-field rules sit beside their config dataclass.


def _bool(text):
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _show(value):
    return " ".join(str(v) for v in value) if isinstance(value, tuple) else repr(value) if value == "" else str(value)


def flag(name):
    return "--" + name.replace("_", "-")


def help_text(f, default, variants):
    """`default: D`, `label: V` for each variant that changes the field (labels with equal values joined), range."""
    changed = {}
    for label, overrides in variants.items():
        if f.name in overrides and overrides[f.name] != default:
            changed.setdefault(_show(overrides[f.name]), []).append(label)
    bounds = [f"must be {allowed(f)}"] if {"above", "min", "max"} & set(f.metadata) else []
    return "; ".join([f"default: {_show(default)}"] + [f"{'/'.join(ls)}: {v}" for v, ls in changed.items()] + bounds)


def allowed(f):
    """The range in a field's metadata, in words: "> 0 and <= 1"."""
    lo, hi, above = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("above")
    return " and ".join([f"> {above}"] * (above is not None) + [f">= {lo}"] * (lo is not None)
                        + [f"<= {hi}"] * (hi is not None)) or "a finite number"


def parse_flags(cls, argv, description, positional=(), variants=None):
    """-> {field name: value} for the flags in `argv` only (a script lays them over its defaults and presets);
    `positional` names positional arguments. Bools take a value (`--compile true`); a tuple default takes that many
    values (`--rescale 256 320`); `variants` ({label: {field: value}}) are shown in --help beside the default."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kw = dict(help=help_text(f, default, variants or {}))
        if isinstance(default, bool):
            kw.update(type=_bool, metavar="{true,false}")
        elif isinstance(default, tuple):
            kw.update(type=type(default[0]), nargs=len(default))
        else:
            kw.update(type=type(default), choices=f.metadata.get("choices"))
        if f.name in positional:
            p.add_argument(f.name, **kw)
        else:
            p.add_argument(flag(f.name), default=argparse.SUPPRESS, **kw)
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(p.parse_args(argv)).items()}
    for f in dataclasses.fields(cls):
        if f.name in given:
            check_range(f, given[f.name])
    return given


def ranged(default, **bounds):
    """A config field with a range: `clip_len: int = ranged(16, min=1)`; bounds "min", "max" (inclusive), "above"."""
    return dataclasses.field(default=default, metadata=bounds)


def check_range(f, value):
    """A value of field `f` against the range in its metadata; a violation stops naming the flag, value and range."""
    for v in value if isinstance(value, tuple) else (value,):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        lo, hi, above = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("above")
        if not math.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi) or \
                (above is not None and v <= above):
            raise SystemExit(f"{flag(f.name)} {_show(value)}: must be {allowed(f)}")


def check_ranges(cfg):
    """Every field of a finished config (defaults and presets included) against its range."""
    for f in dataclasses.fields(cfg):
        check_range(f, getattr(cfg, f.name))
    return cfg


def as_flags(values: dict) -> list:
    """The inverse of parse_flags, for running a script: {"clip_len": 8, "rescale": (146, 183), "flip": False} ->
    ["--clip-len", "8", "--rescale", "146", "183", "--flip", "false"]."""
    out = []
    for name, value in values.items():
        out.append(flag(name))
        out += [str(v) for v in value] if isinstance(value, tuple) else \
            [str(value).lower() if isinstance(value, bool) else str(value)]
    return out
