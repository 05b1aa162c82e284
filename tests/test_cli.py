"""run.py and every script's flags: a value outside a numeric flag's range stops the script at once with one line naming
the flag, the value and the range, before any data, model or tokenizer is built; every numeric flag has a range; the
defaults and presets are inside theirs; the rules between flags (sizes the model and tokenizer take) are named."""
import dataclasses

import pytest

import finetune
import run
import synthetic
import train
from tools import bench, demo, prepare, reproduce
from tools import dataset as dataset_tools

# (entry point, the arguments before the flags, the config dataclass those flags fill)
SCRIPTS = [
    (train.main, [], train.TrainConfig),
    (finetune.main, [], finetune.FinetuneConfig),
    (dataset_tools.main, ["synthetic"], synthetic.SyntheticConfig),
    (demo.main, ["masks"], demo.MasksConfig),
    (demo.main, ["reconstruct"], demo.ReconstructConfig),
    (demo.main, ["predict"], demo.PredictConfig),
    (demo.main, ["features"], demo.FeaturesConfig),
    (bench.main, [], bench.BenchConfig),
    (reproduce.main, [], reproduce.ReproduceConfig),
    (reproduce.main, ["readout"], reproduce.ReadoutConfig),
    (dataset_tools.main, ["check", "ann.csv", "root"], dataset_tools.CheckConfig),
    (dataset_tools.main, ["extract-frames"], dataset_tools.ExtractConfig),
    (dataset_tools.main, ["prepare", "ann.csv", "root", "out"], prepare.PrepareConfig),
    (dataset_tools.main, ["small-vq"], dataset_tools.SmallVQConfig),
]
CASES = [(main, before, cls, f) for main, before, cls in SCRIPTS for f in dataclasses.fields(cls)
         if f.type in (int, float, tuple, "int", "float", "tuple") and not isinstance(f.default, bool)]


def bad_value(f):
    """A value just outside the field's range (for a tuple: its first element)."""
    md = f.metadata
    bad = md["above"] if "above" in md else md["min"] - 1 if "min" in md else md["max"] + 1
    if isinstance(f.default, tuple):
        return (type(f.default[0])(bad),) + f.default[1:]
    return type(f.default)(bad)


@pytest.mark.parametrize("main, before, cls, f", CASES, ids=[f"{c.__name__}.{f.name}" for _, _, c, f in CASES])
def test_every_numeric_flag_has_a_range_and_a_value_outside_it_stops_at_once(main, before, cls, f, monkeypatch):
    assert {"min", "max", "above"} & set(f.metadata), f"{cls.__name__}.{f.name} has no range"
    value = bad_value(f)
    argv = before + run.as_flags({f.name: value})
    with pytest.raises(SystemExit) as stop:
        main(argv)
    shown = " ".join(map(str, value)) if isinstance(value, tuple) else str(value)
    assert str(stop.value.code).startswith(f"{run.flag(f.name)} {shown}: must be "), stop.value.code


def test_defaults_and_presets_are_inside_their_ranges():
    for _, _, cls in SCRIPTS:
        run.check_ranges(cls())
    for overrides in (train.SYNTHETIC_DEFAULTS, finetune.SYNTHETIC_DEFAULTS, *finetune.PRESETS.values()):
        cls = train.TrainConfig if overrides is train.SYNTHETIC_DEFAULTS else finetune.FinetuneConfig
        run.check_ranges(cls(**overrides))


@pytest.mark.parametrize("argv, message", [
    (["--img-size", "100"], "--img-size 100: must be a multiple of 32"),
    (["--clip-len", "7"], "--clip-len 7: must be a multiple of the model's tubelet length 2 (--model nano)"),
    (["--rescale", "100", "120"], "--rescale 100 120: must be a range of short sides from --img-size 128 up"),
    (["--tube-range", "0.9", "0.5"], "--tube-range 0.9 0.5: the first must not exceed the second"),
    (["--lr", "nan"], "--lr nan: must be > 0"),
    (["--videos-per-gpu", "-2"], "--videos-per-gpu -2: must be >= 1"),
    (["--frame-interval", "0"], "--frame-interval 0: must be >= 1"),
])
def test_train_rules_between_flags_are_named(argv, message):
    with pytest.raises(SystemExit, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        train.build_config(argv)


@pytest.mark.parametrize("argv, message", [
    (["--test-short-side", "100"], "--test-short-side 100: must be at least --img-size 128"),
    (["--crop-area", "0.9", "0.5"], "--crop-area 0.9 0.5: the first must not exceed the second"),
    (["--window-size", "8", "0", "4"], "--window-size 8 0 4: all three >= 1, or 0 0 0"),
])
def test_finetune_rules_between_flags_are_named(argv, message):
    with pytest.raises(SystemExit, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        finetune.build_config(argv)
