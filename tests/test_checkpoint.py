"""run.py: the out-dir lock, checkpoints that round-trip with weights_only=True, resume and rotation that see
only the run's own files, the log's cut-off last line, a failed save, and the messages for a checkpoint that does not
fit or an out-dir that cannot be used."""
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import convert
import engine
import run

CPU = engine.Dist(False, 0, 0, 1, "cpu")
ROOT = Path(__file__).resolve().parents[1]


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
