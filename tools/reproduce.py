"""The paper's claims in miniature: BEVT Tables 1, 2 and 8 on the synthetic set, with the nano model, on the CPU.

BEVT Table 1: finetuned top-1 from scratch, from BEVT-I (the image stream's pretraining, inflated), from BEVT-V (the
video stream only, from scratch) and from BEVT (image stage, then the joint stage). Table 2: the drop under the
Single-frame and Random-Shuffling tests (here for the BEVT and scratch models, per class group: the synthetic set's
appearance classes play K400, its motion classes SSv2 / Diving-48). Table 8: tube masking of the video stream
against Random-3D, Frame-Diff and Random-Frame masks.

Every run is a subprocess of train.py or finetune.py with explicit flags (nothing imports a script): this file plans
the runs of a fixed protocol, skips those already finished (so a long run resumes), and reads their log.jsonl and
eval.json into the tables, with a 95 % t-interval over seeds per cell and for the paired differences between arms,
and says of each of the paper's claims (CLAIMS) whether that interval puts it above 0.

    python -m tools.reproduce                       # Tables 1, 2 and 8, seeds 1,2,3, one run per core at a time
    python -m tools.reproduce --quick true          # Table 1, one seed, the short budget: a check in ~8 min
    python -m tools.reproduce --seeds 1,2,3,4,5     # more seeds: finished runs are kept

The protocol (equal pretraining steps per arm, one finetune recipe, paired seeds, a held-out test split of 208
videos) is written out in PROTOCOL below and in results.json.
"""
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import checkpoint
import data
import model as bevt_model
import synthetic as synthetic_set
from cli import as_flags, parse_flags

# ----------------------------------------------------------------------------------------------------------------------
# config and the protocol's fixed values


@dataclass
class ReproduceConfig:
    seeds: str = "1,2,3"  # seed s drives every arm's run s (pretraining and finetuning): paired across arms
    quick: bool = False  # Table 1 with the first seed only, at the short budget unless --budget says otherwise
    budget: str = field(default="", metadata={"choices": ("", "full", "short", "tiny")})  # BUDGETS; empty: "full",
    # or "short" with --quick
    out_dir: str = "runs/reproduce"
    train_set: str = ""  # a synthetic set (synthetic.py layout); empty: the default synthetic-v5
    test_set: str = ""  # a synthetic set with a test split (test_per_class > 0); empty: generated, see TEST_SET
    tokenizer: str = ""  # the small VQ .pt; empty: `train.py --stage tokenizer` on the training set, once
    jobs: int = 0  # runs at a time, each with cores / jobs threads; 0: one per core (the nano model's small ops
    # use one core well and two poorly: on 2 cores two 1-thread runs do about twice the work of one 2-thread run)


@dataclass(frozen=True)
class Budget:
    pretrain_steps: int  # optimizer steps of every pretrained arm; BEVT: half image stage, half joint stage
    finetune_epochs: int  # every finetune, scratch included
    log_every: int  # optimizer steps per log.jsonl row (the "loss went down" check reads them)
    save_every: int  # optimizer steps between checkpoints (an interrupted run resumes from the last)


BUDGETS = {
    # 468 = 12 epochs of the 156 training videos at 4 clips per step; BEVT: 234 image + 234 joint steps. 32 finetune
    # epochs (608 steps). Chosen on the validation split (seed 1, docs/reproduce.md), never on the test split: at
    # "short" no arm learned the motion classes; here every arm tried does (motion top-1 28-44 % vs chance 12.5 %).
    "full": Budget(pretrain_steps=468, finetune_epochs=32, log_every=10, save_every=100),
    # the first protocol's budget (156 = 4 epochs; BEVT 78 + 78; 8 finetune epochs, 152 steps), chosen for the time
    # before any result; `--quick true` uses it: Table 1 of one seed in ~8 min, a check of the whole pipeline (at
    # this budget no arm learns the motion classes, see docs/reproduce.md)
    "short": Budget(pretrain_steps=156, finetune_epochs=8, log_every=5, save_every=50),
    # the end-to-end test's (a set of 1 training video per class: 1 finetune step per epoch)
    "tiny": Budget(pretrain_steps=8, finetune_epochs=12, log_every=1, save_every=1000),
}

# The no-data (synthetic) recipes of train.py and finetune.py, passed explicitly: with a data flag both scripts
# switch to the official recipe (tests/test_reproduce.py checks these against the scripts' own no-data values).
PRETRAIN_RECIPE = dict(
    model="nano", drop_path=0.0, img_size=128, rescale=(146, 183), clip_len=8, frame_interval=2, videos_per_gpu=4,
    images_per_gpu=8, accum=1, warmup_epochs=1.0, lr=1e-3, num_workers=2, dtype="float32",
)
FINETUNE_RECIPE = dict(
    model="nano", img_size=128, train_short_side=146, test_short_side=128, clip_len=8, sampling="uniform",
    window_size=(0, 0, 0), flip=False, crop_area=(0.5, 1.0), drop_path=0.1, head_dropout=0.0, warmup_epochs=1.0,
    lr=1e-3, videos_per_gpu=8, accum=1, ema_momentum=0.01, test_clips=1, test_crops=3, test_batch=8, num_workers=2,
    dtype="float32",
)
# The held-out test split: 16 videos per class x 13 classes = 208 (one video = 0.48 % of top-1), rendered from
# their own seeds (synthetic.SPLITS), never seen in training or used for a choice. The training set's own val split
# (52 videos) is the validation split for any choice (the full budget was chosen on it).
TEST_SET_CONFIG = synthetic_set.SyntheticConfig(train_per_class=0, val_per_class=0, test_per_class=16,
                                                images_per_class=0)
TEST_SET = synthetic_set.CACHE / "synthetic-v5-test16"
MASKS = ("tube", "random_3d", "frame_diff", "random_frame")  # BEVT Table 8; tube is BEVT's own (Table 1's BEVT run)
GROUPS = ("all", "appearance", "motion")
TEMPORAL_TESTS = ("single-frame", "shuffle")  # BEVT Table 2
PROTOCOL = """\
Pretraining compute: every pretrained arm runs the same number of optimizer steps S (the budget), each step with
the same batch per stream: 4 clips of 8 frames (video stream) and/or 8 images (image stream), 128 px, nano.
  BEVT-I: S image-stage steps. BEVT-V: S video-stage steps. BEVT: S/2 image-stage steps, inflated into S/2
  joint-stage steps (each joint step = one video batch + one image batch). Table 8: BEVT with the mask strategy of
  the video stream changed, from the same S/2-step image stage.
  Counted as steps, a joint step is one step although it also holds an image batch: in encoder tokens per step an
  image step is 8 x 1,024, a video step 4 x 4,096, a joint step both (see tokens_per_arm in results.json).
  Each run's cosine schedule spans ceil(steps / steps_per_epoch) epochs and stops at exactly its steps.
Finetuning: one recipe for every arm (finetune.py's no-data values: 8 clips per step, lr 1e-3, layer decay 0.9,
  uniform 8 frames, test 1 clip x 3 crops), the same epochs, on the 156 training videos of synthetic-v5.
Seeds: seed s is --seed s of every run of arm s (pretraining, finetuning, temporal tests): differences are paired.
Test: the default test set's 208 held-out videos (16 per class: 80 appearance, 128 motion); never used for a choice.
Intervals: mean +- half-width of the 95 % t-interval over seeds (Student t, n-1 degrees of freedom); for a
  difference between arms the interval of the per-seed paired differences. With one seed: no interval."""

# Student t quantiles t(0.975, df) for df = 1..30
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


# ----------------------------------------------------------------------------------------------------------------------
# running one subprocess, skipped when its result exists


def run_script(script, flags: dict, out_dir: Path, done: Path, threads: int = 0) -> float:
    """`python script flags` unless `done` exists, with `threads` torch threads (0: torch's default); console output
    in out_dir/console.log. Returns the minutes it took, also when skipped (read back from out_dir/minutes.txt,
    which a finished run leaves; 0.0 without it). A failed run stops everything, naming its command and log."""
    if done.exists():
        stored = out_dir / "minutes.txt"
        return float(stored.read_text()) if stored.exists() else 0.0
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, script, *as_flags({**flags, "out_dir": str(out_dir)})]
    print(f"  running {' '.join(command[1:])}", flush=True)
    start, env = time.time(), {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    with open(out_dir / "console.log", "a") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1],
                              env=env).returncode
    if code != 0 or not done.exists():
        tail = "".join((out_dir / "console.log").read_text().splitlines(keepends=True)[-15:])
        raise SystemExit(f"reproduce.py: {script} failed (exit {code}; no {done.name}): {' '.join(command)}\n"
                         f"last lines of {out_dir / 'console.log'}:\n{tail}")
    minutes = (time.time() - start) / 60
    (out_dir / "minutes.txt").write_text(f"{minutes:.3f}\n")
    return minutes


def losses(out_dir: Path) -> dict:
    """{loss name: {"start", "end", "rows"}} from a run's log.jsonl (each key starting "loss"): the mean of the first
    and of the last quarter of its logged rows (at least one each), and how many rows there are. A run that was
    interrupted and resumed logs some steps twice: the later row of a step wins."""
    by_step = {}
    for line in (out_dir / "log.jsonl").read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            by_step[row["step"]] = row
    rows = [by_step[step] for step in sorted(by_step)]
    quarter = max(1, len(rows) // 4)
    return {k: {"start": sum(r[k] for r in rows[:quarter]) / quarter,
                "end": sum(r[k] for r in rows[-quarter:]) / quarter, "rows": len(rows)}
            for k in rows[0] if k.startswith("loss")}


# ----------------------------------------------------------------------------------------------------------------------
# the data: training set, test set, tokenizer


def prepare(cfg, out_dir: Path):
    """(training set root, test set root, tokenizer path, steps per epoch {stage: n}, tokenizer minutes)."""
    train_root = Path(cfg.train_set) if cfg.train_set else synthetic_set.synthetic_root()
    test_root = Path(cfg.test_set) if cfg.test_set else synthetic_set.synthetic_root(TEST_SET, TEST_SET_CONFIG)
    for root, what, key in ((train_root, "--train-set", "k400_train_csv"), (test_root, "--test-set", "k400_test_csv")):
        if not synthetic_set.synthetic_paths(root)[key].exists():
            raise SystemExit(f"reproduce.py: {what} {root}: no {synthetic_set.synthetic_paths(root)[key]}")
    paths = synthetic_set.synthetic_paths(train_root)
    videos = len(data.read_dataset(paths["k400_train_csv"], paths["mp4_root"], "--train-set")[0])
    images = len(data.read_dataset(paths["images_train"], paths["images_train"], "--train-set")[0])
    # train.py: an epoch is the video set (video and joint stages) or the image set (image stage)
    per_epoch = {"video": videos // PRETRAIN_RECIPE["videos_per_gpu"],
                 "image": images // PRETRAIN_RECIPE["images_per_gpu"]}
    per_epoch["joint"] = per_epoch["video"]
    tokenizer, minutes = Path(cfg.tokenizer) if cfg.tokenizer else None, 0.0
    if tokenizer is None:  # the small VQ on the training videos' frames, as the no-data run trains its own
        size = PRETRAIN_RECIPE["img_size"] // 2
        tokenizer = out_dir / "tokenizer" / f"vq_tokenizer_{size}.pt"
        minutes = run_script("train.py", {"stage": "tokenizer", "video_ann": paths["k400_train_csv"],
                                          "video_root": paths["mp4_root"], "img_size": PRETRAIN_RECIPE["img_size"]},
                             out_dir / "tokenizer", tokenizer)
    return train_root, test_root, tokenizer, per_epoch, minutes


# ----------------------------------------------------------------------------------------------------------------------
# the runs of one seed


def run_name(out_dir: Path) -> str:
    return f"{out_dir.parent.name}/{out_dir.name}"  # seed1/pretrain_video


def pretrain(stage, steps, seed, out_dir, ctx, **extra) -> Path:
    """One train.py run of exactly `steps` optimizer steps; returns its final checkpoint."""
    paths = synthetic_set.synthetic_paths(ctx["train_root"])
    flags = {"stage": stage, **PRETRAIN_RECIPE, "tokenizer": ctx["tokenizer"], "seed": seed,
             "epochs": math.ceil(steps / ctx["per_epoch"][stage]), "max_steps": steps,
             "log_every": ctx["budget"].log_every, "save_every": ctx["budget"].save_every, "resume": True, **extra}
    if stage in ("video", "joint"):
        flags.update(video_ann=paths["k400_train_csv"], video_root=paths["mp4_root"])
    if stage in ("image", "joint"):
        flags.update(image_root=paths["images_train"])
    final = out_dir / f"ckpt_{steps:08d}.pt"
    ctx["minutes"][run_name(out_dir)] = run_script("train.py", flags, out_dir, final, ctx["threads"])
    return final


def finetune(init, seed, out_dir, ctx, temporal_test="none") -> dict:
    """One finetune.py run (train, then the multi-view test, optionally with a Table 2 test); returns eval.json."""
    train_paths, test_paths = (synthetic_set.synthetic_paths(ctx[k]) for k in ("train_root", "test_root"))
    flags = {**FINETUNE_RECIPE, "init": init, "seed": seed, "epochs": ctx["budget"].finetune_epochs,
             "train_ann": train_paths["k400_train_csv"], "train_root": train_paths["mp4_root"],
             "test_ann": test_paths["k400_test_csv"], "test_root": test_paths["mp4_root"],
             "temporal_test": temporal_test, "log_every": ctx["budget"].log_every,
             "save_every": ctx["budget"].save_every, "resume": True}
    ctx["minutes"][run_name(out_dir)] = run_script("finetune.py", flags, out_dir, out_dir / "eval.json", ctx["threads"])
    return json.loads((out_dir / "eval.json").read_text())


def temporal_eval(checkpoint, test, seed, out_dir, ctx) -> dict:
    """finetune.py --eval true of a finetuned checkpoint under a Table 2 test; returns eval.json."""
    test_paths = synthetic_set.synthetic_paths(ctx["test_root"])
    flags = {**FINETUNE_RECIPE, "init": checkpoint, "eval": True, "seed": seed, "temporal_test": test,
             "test_ann": test_paths["k400_test_csv"], "test_root": test_paths["mp4_root"]}
    ctx["minutes"][run_name(out_dir)] = run_script("finetune.py", flags, out_dir, out_dir / "eval.json", ctx["threads"])
    return json.loads((out_dir / "eval.json").read_text())


def budget_dir(out_dir, budget) -> Path:
    """Runs of different budgets never share a folder (a resumed run must not continue another budget's run)."""
    return Path(out_dir) / f"pretrain{budget.pretrain_steps}_finetune{budget.finetune_epochs}"


def run_seed(seed, tables, ctx, pool):
    """Submits every run of one seed to `pool`; a run that needs another's checkpoint waits for it (submitted
    earlier, so it is running or done: no deadlock). Returns a function that waits for them all and gives
    {"finetune": {arm: eval.json}, "temporal": {arm: {test: eval.json}}, "runs": {run: losses}}."""
    root, steps = budget_dir(ctx["out_dir"], ctx["budget"]) / f"seed{seed}", ctx["budget"].pretrain_steps
    half = steps // 2

    image_half = pool.submit(pretrain, "image", half, seed, root / "pretrain_image_half", ctx)  # BEVT's image stage

    def joint_stage(mask):  # BEVT: the joint stage, inflated from the image stage (train.py --init)
        return pretrain("joint", steps - half, seed, root / f"pretrain_joint_{mask}", ctx, init=image_half.result(),
                        mask_strategy=mask)

    # BEVT-I: the image stage alone (finetune.py inflates an image-stage checkpoint, convert.classifier_state)
    inits = {"scratch": None,
             "bevt_i": pool.submit(pretrain, "image", steps, seed, root / "pretrain_image_full", ctx),
             "bevt_v": pool.submit(pretrain, "video", steps, seed, root / "pretrain_video", ctx)}  # BEVT-V
    for mask in MASKS if 8 in tables else MASKS[:1]:
        inits["bevt" if mask == "tube" else "bevt_" + mask] = pool.submit(joint_stage, mask)

    def finetune_arm(arm, init):
        init = "none" if init is None else init.result()
        temporal = 2 in tables and arm in ("scratch", "bevt")
        evaluation = finetune(init, seed, root / f"finetune_{arm}", ctx, TEMPORAL_TESTS[0] if temporal else "none")
        if not temporal:
            return evaluation, None
        shuffle = temporal_eval(checkpoint.latest_checkpoint(root / f"finetune_{arm}"), TEMPORAL_TESTS[1], seed,
                                root / f"eval_{arm}_{TEMPORAL_TESTS[1]}", ctx)
        # normal + single-frame are in the finetune's own eval.json
        return evaluation, {TEMPORAL_TESTS[0]: evaluation, TEMPORAL_TESTS[1]: shuffle}

    arms = {arm: pool.submit(finetune_arm, arm, init) for arm, init in inits.items()}

    def results():
        done = {arm: future.result() for arm, future in arms.items()}
        return {"finetune": {arm: evaluation for arm, (evaluation, _) in done.items()},
                "temporal": {arm: tests for arm, (_, tests) in done.items() if tests is not None},
                "runs": {p.name: losses(p) for p in sorted(root.iterdir()) if (p / "log.jsonl").exists()}}

    print(f"seed {seed}: {len(inits)} pretraining runs and {len(arms)} finetunes planned", flush=True)
    return results


# ----------------------------------------------------------------------------------------------------------------------
# statistics and tables


def top1(evaluation, test, kinds) -> dict:
    """{"all", "appearance", "motion"} top-1 (%) of one eval.json's `test` results; groups from its per-class top-1
    and class counts (the class kinds come from the training set's classes.json)."""
    result = evaluation["results"][test]
    out = {"all": result["top1"]}
    for group in GROUPS[1:]:
        labels = [i for i, name in enumerate(evaluation["classes"]) if kinds[name] == group]
        correct = sum(result["per_class"][i] * result["class_count"][i] / 100 for i in labels)
        out[group] = 100 * correct / sum(result["class_count"][i] for i in labels)
    return out


def interval(values) -> dict:
    """Mean and the half-width of its 95 % Student t-interval over the values (None for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "ci95": None, "values": list(values)}
    if n - 1 > len(T975):
        raise SystemExit(f"reproduce.py: at most {len(T975) + 1} seeds (the t table)")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return {"mean": mean, "ci95": T975[n - 2] * sd / math.sqrt(n), "values": list(values)}


def cells(per_seed: list) -> dict:
    """[{group: value} per seed] -> {group: interval}."""
    return {g: interval([s[g] for s in per_seed]) for g in per_seed[0]}


def paired(a: list, b: list) -> dict:
    """a - b per seed (same seed = same data order and masks), then the interval of the differences."""
    return {g: interval([x[g] - y[g] for x, y in zip(a, b)]) for g in a[0]}


def show(cell) -> str:
    return f"{cell['mean']:6.1f}" + (f" ± {cell['ci95']:5.1f}" if cell["ci95"] is not None else " " * 8)


def table(title, rows: dict) -> str:
    """rows {label: {group: interval}} -> text with a column per group."""
    lines = [title, f"  {'':<28}" + "".join(f"{g:>16}" for g in GROUPS)]
    lines += [f"  {label:<28}" + "".join(f"{show(row[g]):>16}" for g in GROUPS) for label, row in rows.items()]
    return "\n".join(lines)


ARM_NAMES = {"scratch": "scratch", "bevt_i": "BEVT-I", "bevt_v": "BEVT-V", "bevt": "BEVT",
             "bevt_random_3d": "BEVT, random-3D mask", "bevt_frame_diff": "BEVT, frame-diff mask",
             "bevt_random_frame": "BEVT, random-frame mask"}


def build_tables(per_seed: list, tables, kinds) -> dict:
    """per_seed: run_seed's results per seed -> {"table1": ..., "table2": ..., "table8": ...} with intervals."""
    acc = {arm: [top1(s["finetune"][arm], "normal", kinds) for s in per_seed] for arm in per_seed[0]["finetune"]}
    out = {"table1": {"top1": {arm: cells(acc[arm]) for arm in ("scratch", "bevt_i", "bevt_v", "bevt")},
                      "paired": {f"{a} - {b}": paired(acc[a], acc[b]) for a, b in (
                          ("bevt", "scratch"), ("bevt_i", "scratch"), ("bevt_v", "scratch"), ("bevt", "bevt_i"),
                          ("bevt", "bevt_v"))}}}
    if 2 in tables:
        drop = {}  # normal - temporal test, per seed
        for arm in ("scratch", "bevt"):
            for test in TEMPORAL_TESTS:
                tested = [top1(s["temporal"][arm][test], test, kinds) for s in per_seed]
                drop[arm, test] = [{g: n[g] - t[g] for g in GROUPS} for n, t in zip(acc[arm], tested)]
        out["table2"] = {"drop": {f"{arm} {test}": cells(d) for (arm, test), d in drop.items()},
                         "paired": {f"bevt - scratch {test}": paired(drop["bevt", test], drop["scratch", test])
                                    for test in TEMPORAL_TESTS},
                         # the drop of the motion classes minus that of the appearance classes, per seed
                         "motion - appearance": {f"{arm} {test}": interval([x["motion"] - x["appearance"] for x in d])
                                                 for (arm, test), d in drop.items()}}
    if 8 in tables:
        out["table8"] = {"top1": {m: cells(acc["bevt" if m == "tube" else "bevt_" + m]) for m in MASKS},
                         "paired": {f"tube - {m}": paired(acc["bevt"], acc["bevt_" + m]) for m in MASKS[1:]}}
    return out


# The paper's claims, each as a difference that the claim says is above 0, and where it is in build_tables' result.
# BEVT §4.2: Table 1's observations (3) and (4), the temporal-dependency analysis (Table 2), Table 8's (1); BEVT
# against scratch is this protocol's own baseline (the paper's are supervised and contrastive image pretraining).
CLAIMS = (
    ("BEVT above scratch on the motion classes", ("table1", "paired", "bevt - scratch", "motion")),
    ("BEVT above BEVT-I on the motion classes", ("table1", "paired", "bevt - bevt_i", "motion")),
    ("BEVT above BEVT-V (the same pretraining steps), all classes", ("table1", "paired", "bevt - bevt_v", "all")),
    ("a single frame costs BEVT more on motion than on appearance classes",
     ("table2", "motion - appearance", "bevt single-frame")),
    ("a single frame costs scratch more on motion than on appearance classes",
     ("table2", "motion - appearance", "scratch single-frame")),
    *((f"tube masking above {m.replace('_', '-')} on the motion classes", ("table8", "paired", f"tube - {m}", "motion"))
      for m in MASKS[1:]),
)


def verdicts(result) -> list:
    """[{"claim", "difference" (an interval), "verdict"}] for each claim whose table was run. The verdict: "held"
    when the 95 % interval of the paired difference is above 0, "reversed" when it is below 0, "not resolved" when
    it contains 0, "one seed" without an interval."""
    out = []
    for claim, (table_name, *keys) in CLAIMS:
        if table_name not in result:
            continue
        cell = result[table_name]
        for key in keys:
            cell = cell[key]
        if cell["ci95"] is None:
            verdict = "one seed"
        elif cell["mean"] - cell["ci95"] > 0:
            verdict = "held"
        elif cell["mean"] + cell["ci95"] < 0:
            verdict = "reversed"
        else:
            verdict = "not resolved"
        out.append({"claim": claim, "difference": cell, "verdict": verdict})
    return out


def print_tables(result):
    t1 = result["table1"]
    print(table("Table 1: finetuned top-1 (%) on the held-out test split",
                {ARM_NAMES[a]: c for a, c in t1["top1"].items()}))
    print(table("  paired differences (same seed)",
                {" - ".join(ARM_NAMES[arm] for arm in k.split(" - ")): c for k, c in t1["paired"].items()}))
    if "table2" in result:
        t2 = result["table2"]
        print(table("Table 2: top-1 drop (normal - test, points)",
                    {f"{ARM_NAMES[k.split()[0]]}, {k.split()[1]}": c for k, c in t2["drop"].items()}))
        print(table("  paired: drop of BEVT - drop of scratch", {k.split()[-1]: c for k, c in t2["paired"].items()}))
    if "table8" in result:
        t8 = result["table8"]
        print(table("Table 8: BEVT's finetuned top-1 (%) by the video stream's mask", t8["top1"]))
        print(table("  paired differences (same seed)", t8["paired"]))
    print("The paper's claims: the paired difference (points, 95 % interval over seeds) and the verdict")
    for v in verdicts(result):
        print(f"  {v['verdict']:<13} {show(v['difference'])}  {v['claim']}")


# ----------------------------------------------------------------------------------------------------------------------
# the run


def main(argv=None):
    cfg = ReproduceConfig(**parse_flags(ReproduceConfig, sys.argv[1:] if argv is None else argv,
                                        __doc__.split("\n")[0]))
    try:
        seeds = [int(s) for s in cfg.seeds.split(",")]
    except ValueError:
        raise SystemExit(f"--seeds {cfg.seeds!r}: expected comma-separated integers, e.g. 1,2,3") from None
    seeds, tables = (seeds[:1], (1,)) if cfg.quick else (seeds, (1, 2, 8))
    budget = BUDGETS[cfg.budget or ("short" if cfg.quick else "full")]
    out_dir, start = Path(cfg.out_dir), time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    print(PROTOCOL)
    train_root, test_root, tokenizer, per_epoch, tokenizer_minutes = prepare(cfg, out_dir)
    cores = os.cpu_count() or 1
    jobs = cfg.jobs or cores
    ctx = {"out_dir": out_dir, "budget": budget, "train_root": train_root, "test_root": test_root,
           "tokenizer": tokenizer, "per_epoch": per_epoch, "minutes": {"tokenizer": tokenizer_minutes},
           "threads": max(1, cores // jobs)}
    print(f"{jobs} runs at a time, {ctx['threads']} thread(s) each")
    with ThreadPoolExecutor(jobs) as pool:
        try:
            waits = [run_seed(seed, tables, ctx, pool) for seed in seeds]
            per_seed = [wait() for wait in waits]
        except BaseException:  # a failed run: start nothing more (the runs under way finish, resumable)
            pool.shutdown(cancel_futures=True)
            raise
    kinds = {c["name"]: c["kind"] for c in json.loads(synthetic_set.synthetic_paths(train_root)["classes"].read_text())}
    result = build_tables(per_seed, tables, kinds)
    steps, half = budget.pretrain_steps, budget.pretrain_steps // 2
    image_tokens = PRETRAIN_RECIPE["images_per_gpu"] * (PRETRAIN_RECIPE["img_size"] // 4) ** 2
    video_tokens = PRETRAIN_RECIPE["videos_per_gpu"] * (PRETRAIN_RECIPE["clip_len"] // 2) * \
        (PRETRAIN_RECIPE["img_size"] // 4) ** 2
    patch = bevt_model.PRESETS[PRETRAIN_RECIPE["model"]].patch_size  # (2, 4, 4) for nano
    assert patch == (2, 4, 4), "tokens_per_arm assumes nano's 2 x 4 x 4 patches"
    test_records = data.read_dataset(synthetic_set.synthetic_paths(test_root)["k400_test_csv"],
                                       synthetic_set.synthetic_paths(test_root)["mp4_root"], "--test-set")[0]
    summary = {
        "protocol": PROTOCOL, "config": asdict(cfg), "seeds": seeds, "tables": list(tables), "budget": asdict(budget),
        "pretrain_recipe": {k: list(v) if isinstance(v, tuple) else v for k, v in PRETRAIN_RECIPE.items()},
        "finetune_recipe": {k: list(v) if isinstance(v, tuple) else v for k, v in FINETUNE_RECIPE.items()},
        "train_set": str(train_root), "test_set": str(test_root), "test_videos": len(test_records),
        "steps_per_epoch": per_epoch,
        "tokens_per_arm": {"bevt_i": steps * image_tokens, "bevt_v": steps * video_tokens,
                           "bevt": half * image_tokens + (steps - half) * (image_tokens + video_tokens)},
        **result, "claims": verdicts(result),
        "per_seed": {str(s): r for s, r in zip(seeds, per_seed)},
        "minutes": {"total": (time.time() - start) / 60, **ctx["minutes"]},
    }
    (out_dir / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    print_tables(result)
    print(f"seeds {seeds}; {len(test_records)} test videos; all numbers in {out_dir / 'results.json'} "
          f"({summary['minutes']['total']:.1f} min)")


if __name__ == "__main__":
    main()
