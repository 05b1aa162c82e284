"""Command-line flags generated from a config dataclass: the one parser every script uses (STYLE rule 12).

Each field `name` becomes `--name` (underscores written as dashes): its type comes from the default, a tuple default
takes that many values (`--rescale 256 320`), a bool takes an explicit value (`--compile true`, never a bare switch),
and `field(metadata={"choices": ...})` restricts the values. Only the flags given on the command line are returned,
so a script can lay them over its defaults or a preset.
"""
import argparse
from dataclasses import MISSING, fields


def _bool(text):
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_flags(cls, argv, description, positional=()):
    """-> {field name: value} for the flags in `argv`; names in `positional` are positional arguments instead."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(cls):
        default = f.default if f.default is not MISSING else f.default_factory()
        kw = dict(help=f"default: {default}")
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
