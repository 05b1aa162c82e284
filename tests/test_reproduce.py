"""Tests for reproduce.py: the whole protocol end to end on a tiny budget (every arm trains, results.json has every
table), its statistics, and that its explicit recipes are the scripts' own no-data values."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import data
import finetune
from tools import reproduce
import synthetic
import tokenizer as tok
import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny synthetic set with a 1-video-per-class test split and a VQ trained for 3 steps (seconds)."""
    out = tmp_path_factory.mktemp("reproduce")
    cfg = synthetic.SyntheticConfig(train_per_class=1, val_per_class=1, test_per_class=1, frames=16, width=64,
                                    height=48, images_per_class=8)
    root = synthetic.make_synthetic(out / "set", cfg)
    frames = data.load_frames(root / "mp4", 64, 64, seed=0)
    vq_cfg = tok.VQConfig(hid=8, code_dim=8, vocab_size=32, size=64, val_frames=16, steps=3, batch_size=16)
    tok.save_tokenizer(tok.train_vq_tokenizer(frames, vq_cfg, log=lambda *a: None), out / "tok.pt")
    return out, root


def test_recipes_are_the_scripts_no_data_values():
    """reproduce passes data flags, which switch both scripts to the official recipe: its explicit recipe must be
    their no-data run's (all but the budget and bookkeeping, which the protocol sets itself)."""
    own = {"out_dir", "epochs", "log_every", "save_every"}
    assert reproduce.PRETRAIN_RECIPE == {k: v for k, v in train.SYNTHETIC_DEFAULTS.items() if k not in own}
    assert reproduce.FINETUNE_RECIPE == {k: v for k, v in finetune.SYNTHETIC_DEFAULTS.items() if k not in own}


def test_interval_and_paired_difference():
    cell = reproduce.interval([1.0, 2.0, 3.0])
    assert cell["mean"] == 2.0 and cell["ci95"] == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert reproduce.interval([5.0])["ci95"] is None
    diff = reproduce.paired([{"all": 3.0}, {"all": 5.0}], [{"all": 1.0}, {"all": 4.0}])
    assert diff["all"]["values"] == [2.0, 1.0] and diff["all"]["ci95"] == pytest.approx(12.706 * 0.5)


def test_claim_verdicts_follow_the_interval_of_the_paired_difference():
    """held: the 95 % interval above 0; reversed: below; not resolved: it contains 0; one seed: no interval."""
    def cell(*values):
        return reproduce.interval(list(values))

    def with_difference(mean_cell):  # every claim of Table 1 reads a paired cell; fill them all with one cell
        return {"table1": {"paired": {k: {g: mean_cell for g in reproduce.GROUPS}
                                      for k in ("bevt - scratch", "bevt - bevt_i", "bevt - bevt_v")}}}

    for values, verdict in (((4.0, 5.0, 6.0), "held"), ((-4.0, -5.0, -6.0), "reversed"),
                            ((-1.0, 2.0, 0.5), "not resolved"), ((3.0,), "one seed")):
        got = reproduce.verdicts(with_difference(cell(*values)))
        assert [v["verdict"] for v in got] == [verdict] * 3  # Tables 2 and 8 were not run: no claim of theirs
    assert {c[1][0] for c in reproduce.CLAIMS} == {"table1", "table2", "table8"}


def test_group_top1_from_per_class():
    evaluation = {"classes": ["a", "b", "c"], "results": {"normal": {
        "top1": 50.0, "per_class": [100.0, 50.0, 0.0], "class_count": [1, 2, 1]}}}
    got = reproduce.top1(evaluation, "normal", {"a": "appearance", "b": "motion", "c": "motion"})
    assert got == {"all": 50.0, "appearance": 100.0, "motion": pytest.approx(100 * 1 / 3)}


def test_run_script_skips_done_runs_and_names_the_log_of_a_failed_one(tmp_path):
    script = tmp_path / "fails.py"
    script.write_text("import sys\nprint('bad flag --x')\nsys.exit(2)\n")
    with pytest.raises(SystemExit, match=r"(?s)exit 2.*console.log.*bad flag --x"):
        reproduce.run_script(str(script), {"x": 1}, tmp_path / "run", tmp_path / "run" / "eval.json")
    (tmp_path / "run" / "eval.json").write_text("{}")  # done: not run again
    assert reproduce.run_script(str(script), {"x": 1}, tmp_path / "run", tmp_path / "run" / "eval.json") == 0.0
    (tmp_path / "run" / "minutes.txt").write_text("2.500\n")  # what a finished run leaves: reported when skipped
    assert reproduce.run_script(str(script), {"x": 1}, tmp_path / "run", tmp_path / "run" / "eval.json") == 2.5


def test_losses_keep_the_later_row_of_a_step_logged_twice(tmp_path):
    rows = [{"step": 1, "loss": 4.0}, {"step": 2, "loss": 9.0}, {"step": 1, "loss": 4.0}, {"step": 2, "loss": 3.0},
            {"step": 3, "loss": 2.0}, {"step": 4, "loss": 1.0}]  # resumed after step 1
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert reproduce.losses(tmp_path) == {"loss": {"start": 4.0, "end": 1.0, "rows": 4}}


def test_protocol_end_to_end_on_a_tiny_budget(tiny):
    """Every run of one seed (7 pretrainings, 7 finetunes, 2 shuffle tests) on the tiny budget; results.json holds
    the three tables; every run's loss went down; a second call finds everything done and runs nothing."""
    out, root = tiny
    command = [sys.executable, "-m", "tools.reproduce", "--budget", "tiny", "--seeds", "1", "--out-dir", str(out / "runs"),
               "--train-set", str(root), "--test-set", str(root), "--tokenizer", str(out / "tok.pt")]
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    result = json.loads((out / "runs" / "results.json").read_text())
    assert result["seeds"] == [1] and result["test_videos"] == len(synthetic.SYNTHETIC_CLASSES)
    assert set(result["table1"]["top1"]) == {"scratch", "bevt_i", "bevt_v", "bevt"}
    assert set(result["table8"]["top1"]) == set(reproduce.MASKS)
    assert set(result["table2"]["drop"]) == {f"{a} {t}" for a in ("scratch", "bevt") for t in reproduce.TEMPORAL_TESTS}
    for table in ("table1", "table2", "table8"):
        for row in [*result[table].get("top1", {}).values(), *result[table].get("drop", {}).values(),
                    *result[table]["paired"].values()]:
            assert set(row) == set(reproduce.GROUPS) and all(len(c["values"]) == 1 for c in row.values())
    assert [c["claim"] for c in result["claims"]] == [c[0] for c in reproduce.CLAIMS]
    assert {c["verdict"] for c in result["claims"]} == {"one seed"}
    runs = result["per_seed"]["1"]["runs"]
    assert len([r for r in runs if r.startswith("pretrain_")]) == 7
    assert len([r for r in runs if r.startswith("finetune_")]) == 7
    for name, run in runs.items():  # every arm trained: its objective (the sum of its streams' losses) went down
        assert all(window["rows"] >= 4 for window in run.values()), (name, run)
        assert sum(w["end"] for w in run.values()) < sum(w["start"] for w in run.values()), (name, run)
    # the pretrained runs stopped at exactly the budget's steps; BEVT's two stages add up to BEVT-V's
    steps = reproduce.BUDGETS["tiny"].pretrain_steps
    seed_dir = reproduce.budget_dir(out / "runs", reproduce.BUDGETS["tiny"]) / "seed1"
    assert (seed_dir / "pretrain_video" / f"ckpt_{steps:08d}.pt").exists()
    assert (seed_dir / "pretrain_image_half" / f"ckpt_{steps // 2:08d}.pt").exists()
    assert (seed_dir / "pretrain_joint_tube" / f"ckpt_{steps - steps // 2:08d}.pt").exists()
    # BEVT-I finetunes from the image-stage checkpoint itself, which finetune.py inflates as the joint stage's --init
    # does (convert.classifier_state; the inflated weights are tested in test_convert)
    image_ckpt = seed_dir / "pretrain_image_full" / f"ckpt_{steps:08d}.pt"
    log = (seed_dir / "finetune_bevt_i" / "console.log").read_text()
    assert f"initialised from our pretraining (image stage, inflated) (new head) checkpoint {image_ckpt}" in log
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0 and "running" not in again.stdout
    assert json.loads((out / "runs" / "results.json").read_text())["table1"] == result["table1"]
