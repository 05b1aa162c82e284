"""Tests for tools/reproduce.py: the whole protocol end to end on a tiny budget (every arm trains, every readout
writes per-video predictions, results.json has every table and claim), the probe, the statistics (the two-way
bootstrap, Holm, the verdicts), and that its explicit recipes are the scripts' own no-data values but for the
factorial task's stated changes."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import finetune
import synthetic
import tokenizer as tok
import train
from tools import factorial, reproduce

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny factorial set (1 training and 1 test video per cell, 48 px) and a VQ trained for 3 steps (seconds)."""
    out = tmp_path_factory.mktemp("reproduce")
    cfg = factorial.FactorialConfig(train_per_cell=1, val_per_cell=1, test_per_cell=1, size=48, images=64)
    root = factorial.make_factorial(out / "set", cfg)
    frames = synthetic.load_frames(root / "videos", 64, 64, seed=0)
    vq_cfg = tok.VQConfig(hid=8, code_dim=8, vocab_size=32, size=64, val_frames=16, steps=3, batch_size=16)
    tok.save_tokenizer(tok.train_vq_tokenizer(frames, vq_cfg, log=lambda *a: None), out / "tok.pt")
    return out, root


def test_recipes_are_the_scripts_no_data_values_but_for_the_factorial_changes():
    """reproduce passes data flags, which switch both scripts to the official recipe: its explicit recipe must be
    their no-data run's (all but the budget and bookkeeping, which the protocol sets itself), with only the changes
    FACTORIAL_CHANGES names."""
    own = {"out_dir", "epochs", "log_every", "save_every"}
    assert reproduce.PRETRAIN_RECIPE == {**{k: v for k, v in train.SYNTHETIC_DEFAULTS.items() if k not in own},
                                         **reproduce.FACTORIAL_CHANGES["pretrain"]}
    assert reproduce.FINETUNE_RECIPE == {**{k: v for k, v in finetune.SYNTHETIC_DEFAULTS.items() if k not in own},
                                         **reproduce.FACTORIAL_CHANGES["finetune"]}
    # a clip of the recipe is one whole turn of the orbit: 8 consecutive frames
    assert reproduce.PRETRAIN_RECIPE["clip_len"] * reproduce.PRETRAIN_RECIPE["frame_interval"] == factorial.POSITIONS
    assert reproduce.FINETUNE_RECIPE["clip_len"] * reproduce.FINETUNE_RECIPE["frame_interval"] == factorial.POSITIONS


def test_probe_learns_a_linear_rule_and_chooses_its_l2_without_the_test_set():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    y = (x[:, 0] > 0).astype(int) + 2 * (x[:, 1] > 0)  # 4 classes, linear in the features
    noise = rng.normal(size=(100, 5))
    fit = reproduce.probe(x[:200], y[:200], {"test": x[200:], "noise": noise}, 4, seed=1)
    assert (fit["probs"]["test"].argmax(1) == y[200:]).mean() > 0.9
    assert fit["probs"]["test"].shape == (100, 4) and np.allclose(fit["probs"]["test"].sum(1), 1)
    assert set(fit["cv_accuracy"]) == set(reproduce.PROBE_L2) and fit["l2"] in reproduce.PROBE_L2
    other = reproduce.probe(x[:200], y[:200], {"test": x[200:]}, 4, seed=1)  # no other test set: the same fit
    assert other["l2"] == fit["l2"] and np.array_equal(other["probs"]["test"], fit["probs"]["test"])
    shuffled = reproduce.probe(x[:200], rng.permutation(y[:200]), {"test": x[200:]}, 4, seed=1)  # labels of noise
    assert (shuffled["probs"]["test"].argmax(1) == y[200:]).mean() < 0.45


def test_two_way_bootstrap_resamples_seeds_and_videos():
    """A constant has no spread; a seed effect alone gives the spread of a seed mean, a video effect alone that of a
    video mean; one seed: the videos only."""
    assert np.allclose(reproduce.bootstrap(np.full((3, 50), 0.7)), 0.7)
    rng = np.random.default_rng(0)
    seed_effect = np.repeat(rng.normal(size=(8, 1)), 400, axis=1)  # (seeds, videos), constant along videos
    video_effect = np.repeat(rng.normal(size=(1, 400)), 8, axis=0)
    assert reproduce.bootstrap(seed_effect).std() == pytest.approx(seed_effect[:, 0].std() / np.sqrt(8), rel=0.1)
    assert reproduce.bootstrap(video_effect).std() == pytest.approx(video_effect[0].std() / np.sqrt(400), rel=0.1)
    assert reproduce.bootstrap(video_effect[:1]).std() == pytest.approx(video_effect[0].std() / 20, rel=0.1)
    cell = reproduce.interval(np.array([[1, 1, 0, 1], [1, 0, 1, 1]]))  # in points
    assert cell["mean"] == 75.0 and cell["per_seed"] == [75.0, 75.0] and cell["low"] <= 75.0 <= cell["high"]
    assert cell["p_above"] < 0.01 and cell["p_below"] > 0.99


def test_variance_components_recover_a_crossed_design_and_predict_the_half_width():
    """d = seed effect + video effect + noise with known variances (in points after x100): the ANOVA estimates are
    close, and the predicted half-width shrinks with more seeds towards the videos' share."""
    rng = np.random.default_rng(0)
    d = rng.normal(0, 0.03, (12, 1)) + rng.normal(0, 0.2, (1, 2000)) + rng.normal(0, 0.3, (12, 2000))
    c = reproduce.variance_components(d)
    assert c["seed"] == pytest.approx(9, rel=0.6) and c["video"] == pytest.approx(400, rel=0.1)
    assert c["residual"] == pytest.approx(900, rel=0.05)
    widths = [reproduce.predicted_half_width(c, n, 2000) for n in (3, 12, 1000)]
    assert widths[0] > widths[1] > widths[2] > 1.96 * np.sqrt(c["video"] / 2000)


def test_holm_adjusted_p_values():
    assert reproduce.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert reproduce.holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])


def test_the_motion_label_is_right_exactly_when_its_speed_and_direction_are(tmp_path):
    names = [name for name, _ in factorial.MOTIONS]
    parts = factorial.motion_parts(np.arange(len(names)))
    for reverse, forward in factorial.REVERSED_OF.items():  # a reversed pair: one speed, opposite directions
        i, j = names.index(reverse), names.index(forward)
        assert parts["speed"][i] == parts["speed"][j] and parts["direction"][i] == -parts["direction"][j]
    assert len({(s, d) for s, d in zip(parts["speed"], parts["direction"])}) == len(names)  # the pair is the label
    rng = np.random.default_rng(0)
    labels, probabilities = rng.integers(0, len(names), 400), rng.random((400, len(names)))
    np.savez(tmp_path / "predictions.npz", **{"motion/labels": labels, "motion/normal": probabilities,
                                               "appearance/labels": labels, "appearance/normal": probabilities})
    correct = reproduce.correctness([{"probe": {"bevt": tmp_path}}], "probe")
    speed, direction = correct["bevt", "motion speed", "normal"], correct["bevt", "motion direction", "normal"]
    assert np.array_equal(correct["bevt", "motion", "normal"], speed & direction)
    assert 0.3 < speed.mean() < 0.7 and 0.3 < direction.mean() < 0.7  # random guesses: about half each


def test_claims_verdicts_follow_the_bootstrap_and_holm():
    """A large gain holds, a large loss is reversed, a small noisy one is not resolved; a difference of 0 on
    appearance is "similar" (inside the margin); Table 2's measure is the motion drop minus the appearance drop."""
    rng = np.random.default_rng(0)
    seeds, videos = 4, 1200

    def arm(p):
        return rng.random((seeds, videos)) < p

    base = arm(0.5)
    correct = {("bevt_i", "motion", "normal"): base, ("bevt", "motion", "normal"): base | arm(0.3),  # +15 points
               ("bevt_v", "motion", "normal"): base | arm(0.6),  # BEVT below BEVT-V: reversed
               ("bevt_i", "appearance", "normal"): base, ("bevt", "appearance", "normal"): base.copy(),
               ("bevt_v", "appearance", "normal"): base ^ (arm(0.01) & arm(0.5))}  # about equal: not resolved
    rows = {r["id"]: r for r in reproduce.verdicts(correct)}
    assert set(rows) == {"T1.3-motion", "T1.3-appearance", "T1.4-motion", "T1.4-appearance"}  # only what is measured
    assert rows["T1.3-motion"]["verdict"] == "held" and rows["T1.3-motion"]["interval"]["mean"] > 10
    assert rows["T1.3-appearance"]["verdict"] == "held"  # identical predictions: equivalent within the margin
    assert rows["T1.4-motion"]["verdict"] == "reversed"
    assert rows["T1.4-appearance"]["verdict"] == "not resolved"
    assert all(r["p_holm"] >= r["p"] for r in rows.values())
    one_seed = {k: v[:1] for k, v in correct.items()}
    assert {r["verdict"] for r in reproduce.verdicts(one_seed)} == {"one seed"}
    drop = {("bevt", f, c): np.array([[v]]) for f, c, v in (("motion", "normal", 1), ("motion", "shuffle", 0),
                                                            ("appearance", "normal", 1), ("appearance", "shuffle", 1))}
    assert reproduce.measure(drop, ("temporal", "bevt", "shuffle")).tolist() == [[1.0]]


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
    """Every run of one seed (4 pretrainings, 5 probes, 4 finetunes and their per-video tests) on the tiny budget;
    results.json holds both readouts' tables and claims; every training run's loss went down; every readout saved a
    prediction per test video; a second call finds everything done and runs nothing."""
    out, root = tiny
    # --quick's own rule (the first seed only) on the tiny budget
    command = [sys.executable, "-m", "tools.reproduce", "--quick", "true", "--budget", "tiny", "--seeds", "1,2",
               "--out-dir", str(out / "runs"), "--data", str(root), "--tokenizer", str(out / "tok.pt")]
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    result = json.loads((out / "runs" / "results.json").read_text())
    assert result["seeds"] == [1] and set(result) >= {"probe", "finetune"}
    probe, tuned = result["probe"], result["finetune"]
    assert set(probe["tables"]["top1"]) == {"random", *reproduce.ARMS}
    assert set(tuned["tables"]["top1"]) == set(reproduce.FINETUNED)
    assert set(probe["tables"]["temporal"]) == {"bevt single-frame", "bevt shuffle"}
    assert set(probe["tables"]["motion_parts"]) == {"random", *reproduce.ARMS}
    assert [c["id"] for c in probe["claims"]] == [c["id"] for c in reproduce.CLAIMS]
    assert [c["id"] for c in tuned["claims"]] == [c["id"] for c in reproduce.CLAIMS if c["id"][:2] != "T8"]
    assert {c["verdict"] for c in probe["claims"] + tuned["claims"]} == {"one seed"}
    videos = len(factorial.cells())  # 1 test video per cell
    seed_dir = reproduce.budget_dir(out / "runs", reproduce.BUDGETS["tiny"]) / "seed1"
    for folder in [*(f"probe_{a}" for a in ("random", *reproduce.ARMS)),
                   *(f"finetuned_{a}" for a in reproduce.FINETUNED)]:
        predictions = np.load(seed_dir / folder / "predictions.npz")
        conditions = reproduce.CONDITIONS if folder.endswith("_bevt") else reproduce.CONDITIONS[:1]
        assert set(predictions) == {f"{f}/{c}" for f in reproduce.FACTORS for c in (*conditions, "labels")}, folder
        assert predictions["motion/normal"].shape == (videos, len(factorial.MOTIONS))
        assert np.allclose(predictions["appearance/normal"].sum(1), 1, atol=1e-4)
    # the finetuned readout's normal test is finetune.py's own test (the same views and weights): the same top-1
    for arm in reproduce.FINETUNED:
        evaluation = json.loads((seed_dir / f"finetune_{arm}" / "eval.json").read_text())["results"]["normal"]
        summary = json.loads((seed_dir / f"finetuned_{arm}" / "readout.json").read_text())
        assert summary["cell_top1"]["normal"] == pytest.approx(evaluation["top1"]), arm
    labels = np.load(seed_dir / "finetuned_bevt" / "predictions.npz")
    assert labels["motion/labels"].tolist() == [m for _, m in factorial.cells()]
    assert labels["appearance/labels"].tolist() == [a for a, _ in factorial.cells()]
    runs = result["runs"]["1"]
    assert len([r for r in runs if r.startswith("pretrain_")]) == 4
    assert len([r for r in runs if r.startswith("finetune_")]) == 4
    for name, run in runs.items():  # every arm trained: its objective (the sum of its streams' losses) went down
        assert all(window["rows"] >= 4 for window in run.values()), (name, run)
        assert sum(w["end"] for w in run.values()) < sum(w["start"] for w in run.values()), (name, run)
    steps = reproduce.BUDGETS["tiny"].pretrain_steps
    for arm in reproduce.ARMS:  # every pretraining stopped at exactly S steps
        assert (seed_dir / f"pretrain_{arm}" / f"ckpt_{steps:08d}.pt").exists()
    # BEVT's joint stage starts from the BEVT-I checkpoint itself (the paper's BEVT: BEVT-I, then the joint stage)
    image_ckpt = seed_dir / "pretrain_bevt_i" / f"ckpt_{steps:08d}.pt"
    assert f"initialised from {image_ckpt}" in (seed_dir / "pretrain_bevt" / "console.log").read_text()
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0 and "running" not in again.stdout
    assert json.loads((out / "runs" / "results.json").read_text())["probe"] == probe


def test_a_second_reproduce_on_a_running_out_dir_stops_before_any_run(tiny, tmp_path):
    out, root = tiny
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time, run; run.lock_out_dir(sys.argv[1]); "
                               "print('locked', flush=True); time.sleep(60)", str(tmp_path)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = subprocess.run([sys.executable, "-m", "tools.reproduce", "--budget", "tiny", "--seeds", "1",
                                 "--out-dir", str(tmp_path), "--data", str(root), "--tokenizer", str(out / "tok.pt")],
                                cwd=ROOT, capture_output=True, text=True)
    finally:
        holder.kill()
        holder.wait()
    assert second.returncode != 0 and "Traceback" not in second.stderr
    assert f"--out-dir {tmp_path} is in use by a running run (pid {holder.pid}" in second.stderr
    assert second.stdout == "" and [p.name for p in tmp_path.iterdir()] == ["run.lock"]


def test_a_data_or_tokenizer_flag_that_does_not_exist_stops_before_the_out_dir_is_made(tmp_path):
    for name in ("data", "tokenizer"):
        with pytest.raises(SystemExit, match=rf"^--{name} {tmp_path / 'nowhere'}: no such file or folder$"):
            reproduce.main([f"--{name}", str(tmp_path / "nowhere"), "--out-dir", str(tmp_path / "runs")])
    assert not (tmp_path / "runs").exists()
