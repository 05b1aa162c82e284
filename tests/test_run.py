"""run.py: the flags, the out-dir, the checkpoints and the step loop's record.

Flags (every script's): a value outside a numeric flag's range stops the script at once with one line naming the flag,
the value and the range, before any data, model or tokenizer is built; every numeric flag has a range; the defaults and
presets are inside theirs; the rules between flags (sizes the model and tokenizer take) are named.
The out-dir: the lock, checkpoints that round-trip with weights_only=True, resume and rotation that see only the run's
own files, the log's cut-off last line, a failed save, and the messages for a checkpoint that does not fit or an
out-dir that cannot be used. Progress: the fp16 overflow stop and the data-wait share of the step loop."""
import dataclasses
import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import convert
import data
import engine
import finetune
import run
import synthetic
import train
from tools import bench, demo, prepare, reproduce
from tools import dataset as dataset_tools

CPU = engine.Dist(False, 0, 0, 1, "cpu")
ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------------------------------
# flags

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


# ----------------------------------------------------------------------------------------------------------------------
# the out-dir and its checkpoints


def save(out_dir, step, keep_last=3):
    return run.save_checkpoint({"model": torch.nn.Linear(3, 2).state_dict(), "step": step}, CPU, out_dir, step,
                               keep_last)


def test_checkpoints_round_trip_weights_only_and_keep_the_newest(tmp_path):
    for step in (1, 2, 3):
        save(tmp_path, step, keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_00000002.pt", "ckpt_00000003.pt"]
    assert run.resume_checkpoint(tmp_path, CPU).name == "ckpt_00000003.pt"
    state = convert.load_checkpoint(run.latest_checkpoint(tmp_path))
    assert state["step"] == 3 and torch.equal(state["rng"][0]["cpu"], torch.get_rng_state())
    convert.load_model_state(torch.nn.Linear(3, 2), state["model"], "x")
    with pytest.raises(SystemExit, match="missing keys: \\['bias'\\]"):
        convert.load_model_state(torch.nn.Linear(3, 2), {"weight": state["model"]["weight"]}, "x")
    (tmp_path / "ckpt_00000009.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="cannot load checkpoint .*ckpt_00000009.pt"):
        convert.load_checkpoint(run.latest_checkpoint(tmp_path))


def test_resume_and_rotation_see_only_the_runs_own_checkpoints_by_step(tmp_path, capsys):
    """A user's copy in the out-dir ('ckpt_best.pt' sorts after every step) is neither resumed from nor rotated away;
    the run's checkpoints are ordered by their step, not by name."""
    save(tmp_path, 5)
    (tmp_path / "ckpt_best.pt").write_bytes((tmp_path / "ckpt_00000005.pt").read_bytes())
    (tmp_path / "ckpt_00000003 copy.pt").write_bytes(b"x")
    for step in (6, 7, 8):
        save(tmp_path, step, keep_last=2)
    assert run.resume_checkpoint(tmp_path, CPU).name == "ckpt_00000008.pt"
    assert "also holds ckpt_00000003 copy.pt, ckpt_best.pt: not this run's checkpoints, left alone" in \
        capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.glob("ckpt*")) == [
        "ckpt_00000003 copy.pt", "ckpt_00000007.pt", "ckpt_00000008.pt", "ckpt_best.pt"]
    assert [s for s, _ in run.run_checkpoints(tmp_path)] == [7, 8]


def test_a_second_run_on_the_out_dir_stops_and_the_lock_dies_with_its_process(tmp_path):
    script = "import sys, time, run; run.lock_out_dir(sys.argv[1]); print('locked', flush=True); " \
             "time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SystemExit, match=rf"--out-dir {tmp_path} is in use by a running run \(pid {holder.pid} "):
            run.lock_out_dir(tmp_path)
    finally:
        holder.kill()  # as SIGKILL or a crash would: the operating system releases the lock
        holder.wait()
    run.lock_out_dir(tmp_path)  # now free
    assert f"pid {os.getpid()} " in (tmp_path / "run.lock").read_text()


def test_a_new_run_in_an_out_dir_with_an_earlier_run_stops(tmp_path):
    run.refuse_to_overwrite(tmp_path)  # empty: fine
    (tmp_path / "log.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(SystemExit, match=r"--out-dir .* holds an earlier run \(log.jsonl\): continue it with "
                                         r"--resume true"):
        run.refuse_to_overwrite(tmp_path)


def test_an_out_dir_that_cannot_be_created_is_named(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit, match=r"--out-dir .*file/run: cannot create or write it"):
        run.lock_out_dir(tmp_path / "file" / "run")


def test_cut_off_last_log_line_is_dropped_and_later_rows_forgotten(tmp_path, capsys):
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2, 3)) + '{"step": 4, "lo')
    run.forget_logged_steps_after(2, tmp_path, CPU)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2]
    assert "dropped a cut-off last line" in capsys.readouterr().out
    log.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(SystemExit, match=r"log.jsonl:2: not a log row"):
        run.forget_logged_steps_after(2, tmp_path, CPU)


def test_a_failed_save_removes_its_partial_file_and_says_what_it_needs(tmp_path, monkeypatch):
    save(tmp_path, 1)
    before = (tmp_path / "ckpt_00000001.pt").read_bytes()

    def full_disk(obj, f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(SystemExit, match=r"cannot write checkpoint .*ckpt_00000002.pt \(\[Errno 28\] No space left on "
                                         r"device\): it needs about 0 MiB, .* MiB are free there; the newest complete "
                                         r"checkpoint is .*ckpt_00000001.pt"):
        save(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_00000001.pt"]  # no partial file left
    assert (tmp_path / "ckpt_00000001.pt").read_bytes() == before


def test_a_checkpoint_of_another_model_names_what_it_holds_and_what_is_asked():
    state = torch.nn.Linear(4, 2).state_dict()
    with pytest.raises(SystemExit, match=r"checkpoint c.pt does not fit the model: it holds --model nano, the flags "
                                         r"ask for --model tiny; weight \(2, 4\) vs \(2, 3\)"):
        convert.load_model_state(torch.nn.Linear(3, 2), state, "c.pt", "--model nano", "--model tiny")
    assert convert.holds({"config": {"model": "nano", "stage": "joint"}}) == "--model nano --stage joint"


def test_stale_partial_files_of_a_dead_writer_are_removed_under_the_lock(tmp_path):
    (tmp_path / ".ckpt_00000004.pt.abc.tmp").write_bytes(b"partial")
    save(tmp_path, 3)
    run.lock_out_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_00000003.pt", "run.lock"]


# ----------------------------------------------------------------------------------------------------------------------
# Progress: the step loop's record


def test_overflows_in_a_row_stop_the_run():
    progress, stats = run.Progress(0, CPU), {"clips": torch.zeros(3)}
    for _ in range(run.MAX_OVERFLOWS - 1):
        progress.record((1.0, 1), stats)
    progress.record((1.0, 0), stats)  # a good step resets the count
    for _ in range(run.MAX_OVERFLOWS - 1):
        progress.record((1.0, 1), stats)
    assert progress.skipped == 2 * (run.MAX_OVERFLOWS - 1)
    with pytest.raises(SystemExit, match=f"fp16: {run.MAX_OVERFLOWS} steps in a row overflowed"):
        progress.record((float("inf"), 1), stats)


class SleepyDataset(torch.utils.data.Dataset):
    """`delay` seconds per sample: a loader too slow for the step (or, with 0, a fast one)."""

    def __init__(self, delay, n=16):
        self.delay, self.n = delay, n

    def __len__(self):
        return self.n

    def set_epoch(self, epoch):  # data.make_loader's dataset interface
        pass

    def __getitem__(self, index):
        time.sleep(self.delay)
        return {"x": torch.full((4,), float(index))}


def data_share_of_a_run(delay, compute_s=0.02):
    """data.step_batches + Progress + optimizer_step on a tiny model, as the scripts run them; each step also
    sleeps `compute_s` (a stand-in for the device's work). Returns the logged data share of the one window."""
    @dataclasses.dataclass
    class Cfg:
        accum: int = 2
        num_workers: int = 0
        seed: int = 0

    torch.manual_seed(0)
    net = torch.nn.Linear(4, 1)
    optimizer = torch.optim.AdamW(engine.param_groups(net, 0.05, {}), lr=1e-3)
    scaler = engine.make_scaler(CPU, "float32")
    dataset, progress = SleepyDataset(delay), run.Progress(0, CPU)
    for micro in data.step_batches(dataset, 2, Cfg(), CPU, 0, 4, 4, progress):
        loss = sum(net(b["x"]).square().mean() for b in micro)
        loss.backward()
        time.sleep(compute_s)
        progress.record(engine.optimizer_step(optimizer, scaler, torch.isfinite(loss.detach()), 1.0, CPU, 1e-3),
                        {"loss": loss.detach().double().reshape(1)})
    assert progress.step == 4
    return progress.take_data_share()


def test_data_share_is_near_one_for_a_slow_loader_and_low_for_a_fast_one():
    slow = data_share_of_a_run(delay=0.05)  # 4 samples per step: 0.2 s of waiting against 0.02 s of work
    fast = data_share_of_a_run(delay=0.0, compute_s=0.2)  # loading costs milliseconds of CPU, even on a busy machine
    assert 0.8 < slow <= 1.0, slow
    assert 0.0 <= fast < 0.3, fast
