"""The paper's claims in miniature: BEVT Tables 1, 2 and 8 on the factorial synthetic task, nano model, CPU.

The task (tools/factorial.py): every clip has an appearance label (its object's shape, K400's kind of cue) and an
independent motion label (which way and how fast the object orbits, SSv2's / Diving-48's kind: every motion class
shows the same frames in another order). The arms are the paper's (BEVT §4.2, Table 1): BEVT-I (S image-stream
steps on the image set, which has the diversity the videos lack, as ImageNet has over K400), BEVT-V (S video-stream
steps from scratch), BEVT (BEVT-I's checkpoint, then S joint steps); Table 8 varies BEVT-V's mask (tube against
Random-3D). The primary readout is a frozen-encoder linear probe (a logistic regression on the final tokens' mean and
max, its L2 weight chosen by cross-validation on the training features only), with a randomly initialised encoder as
the floor; finetuning (finetune.py) is the secondary readout. Table 2's Single-frame and Random-Shuffling tests run on
both readouts. Every test video's prediction is saved, and the intervals resample seeds and test videos together.

Every pretraining and finetune is a subprocess of train.py or finetune.py with explicit flags; the probe and the
per-video test of a finetuned model are a subprocess of this file (`python -m tools.reproduce readout ...`). This file
plans the runs of the fixed protocol (PROTOCOL), skips those already finished (a long run resumes), and reads their
outputs into the tables and the claims' verdicts (CLAIMS, docs/reproduce.md).

    python -m tools.reproduce                       # the protocol: every arm and readout, SEEDS
    python -m tools.reproduce --quick true          # one seed at a tiny budget: a check of the pipeline in minutes
    python -m tools.reproduce --seeds 101,102,103 --finetune-seeds 0    # the pilot (docs/reproduce.md)
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
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

import convert
import data
import evaluate
import model as bevt_model
import readers
import run
from run import as_flags, input_path, parse_flags, ranged
from tools import factorial

# ----------------------------------------------------------------------------------------------------------------------
# config and the protocol's fixed values

SEEDS = ",".join(str(s) for s in range(1, 13))  # the main run's seeds; their number was set by the pilot


@dataclass
class ReproduceConfig:
    seeds: str = SEEDS  # seed s drives every run of seed s (pretraining, readouts): arms are paired by seed
    quick: bool = False  # the first seed only, at the "quick" budget unless --budget says otherwise
    budget: str = field(default="", metadata={"choices": ("", "full", "quick", "tiny")})  # BUDGETS; empty: "full",
    # or "quick" with --quick
    # how many of the seeds (the first ones) also get the finetune readout; -1: the budget's
    finetune_seeds: int = ranged(-1, min=-1)
    out_dir: str = "runs/reproduce"
    data: str = input_path()  # a factorial set (tools/factorial.py layout); empty: the default one, made on first use
    tokenizer: str = input_path()  # the small VQ .pt; empty: `python -m tools.dataset small-vq` on the training videos
    # runs at a time, each with cores / jobs threads; 0: one per core (the nano model's small ops use one core well
    # and two poorly)
    jobs: int = ranged(0, min=0)
    threads: int = ranged(0, min=0)  # torch threads per run; 0: cores / jobs (1 on a machine shared with other work)


@dataclass(frozen=True)
class Budget:
    pretrain_steps: int  # S: optimizer steps of BEVT-I, of BEVT-V, and of BEVT's joint stage (after BEVT-I)
    finetune_epochs: int  # every finetune, scratch included
    finetune_seeds: int  # how many of the seeds (the first ones) get the finetune readout
    log_every: int  # optimizer steps per log.jsonl row (the "loss went down" check reads them)
    save_every: int  # optimizer steps between checkpoints (an interrupted run resumes from the last)
    task: factorial.FactorialConfig = field(default_factory=factorial.FactorialConfig)  # the set generated
    # when --data is not given


BUDGETS = {
    # S = 480 = 3 epochs of the 640 training videos at 4 clips per step (the image stage: 3 epochs of the 1,280
    # images); 8 finetune epochs = 640 steps of 8 clips. Fixed before the pilot, from step times (docs/reproduce.md).
    "full": Budget(pretrain_steps=480, finetune_epochs=8, finetune_seeds=3, log_every=10, save_every=100),
    # `--quick true`: every arm and both readouts on one seed in minutes, on a quarter-size set (160 training, 320
    # test videos, 320 images); too short to learn anything: a check of the pipeline
    "quick": Budget(pretrain_steps=40, finetune_epochs=2, finetune_seeds=1, log_every=5, save_every=1000,
                    task=factorial.FactorialConfig(train_per_cell=10, val_per_cell=2, test_per_cell=20, images=320)),
    # the end-to-end test's (a set of 1 training video per cell)
    "tiny": Budget(pretrain_steps=8, finetune_epochs=8, finetune_seeds=1, log_every=1, save_every=1000),
}

# The no-data (synthetic) recipes of train.py and finetune.py, passed explicitly (with a data flag both scripts switch
# to the official recipe), with the factorial task's changes (FACTORIAL_CHANGES; tests/test_reproduce.py checks that
# nothing else differs from the scripts' own no-data values).
PRETRAIN_RECIPE = dict(
    model="nano", drop_path=0.0, img_size=128, rescale=(146, 183), clip_len=8, frame_interval=1, videos_per_gpu=4,
    images_per_gpu=8, accum=1, warmup_epochs=1.0, lr=1e-3, num_workers=2, dtype="float32",
)
FINETUNE_RECIPE = dict(
    model="nano", img_size=128, train_short_side=146, test_short_side=128, clip_len=8, sampling="dense",
    frame_interval=1, window_size=(0, 0, 0), flip=False, crop_area=(0.5, 1.0), drop_path=0.1, head_dropout=0.0,
    warmup_epochs=1.0, lr=1e-3, videos_per_gpu=8, accum=1, ema_momentum=0.01, test_clips=1, test_crops=1,
    test_batch=8, num_workers=2, dtype="float32",
)
# A clip is 8 consecutive frames, one whole turn of the orbit (every motion class shows the same 8 frames: with a
# stride of 2, or with uniform sampling's uneven segments, a clip would see only some of them). The frames are
# square and the object stays inside them, so one centre crop is the whole frame (three crops would be one view
# three times).
FACTORIAL_CHANGES = {"pretrain": {"frame_interval": 1}, "finetune": {"sampling": "dense", "frame_interval": 1,
                                                                      "test_crops": 1}}
ARMS = ("bevt_i", "bevt_v", "bevt_v_random_3d", "bevt")  # pretrained encoders; "random" is the floor (no pretraining)
ARM_NAMES = {"random": "random encoder (floor)", "scratch": "scratch", "bevt_i": "BEVT-I", "bevt_v": "BEVT-V",
             "bevt_v_random_3d": "BEVT-V, random-3D mask", "bevt": "BEVT"}
FINETUNED = ("scratch", "bevt_i", "bevt_v", "bevt")  # the secondary readout's arms (scratch: finetune.py --init none)
FACTORS = ("appearance", "motion")
CONDITIONS = ("normal", "single-frame", "shuffle")  # BEVT Table 2's tests (evaluate.temporal_transform)
MOTION_PARTS = ("speed", "direction")  # reported, not claims: which part of the motion label a readout gets
TEMPORAL_ARMS = ("bevt",)  # the arms tested under Table 2's conditions (the others: normal only)
PROBE_L2 = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # the probe's L2 weights tried by cross-validation
PROBE_FOLDS = 5
PROTOCOL = """\
Task: tools/factorial.py's set: 640 training, 160 validation, 1,200 test videos; each with an appearance label (4
  shapes) and an independent motion label (4 orbit directions x speeds, every one the same frames in another order);
  a balanced cross table in every split. Image set: 1,280 images of 10 shapes x 5 textures (videos: 4 shapes, plain).
Arms, S = the budget's steps, each step one batch per stream (4 clips of 8 frames, 8 images), nano, 128 px:
  BEVT-I: S image-stream steps on the image set. BEVT-V: S video-stream steps from scratch (tube masks).
  BEVT: BEVT-I's checkpoint inflated into S joint steps (one video + one image batch each), as BEVT §4.1 pretrains
  the joint stage from the 800-epoch image stage. Table 8: BEVT-V with Random-3D masks. Floor: a random encoder.
Primary readout, the probe: the frozen encoder's final tokens (after the final norm), averaged (the classifier's
  pooled features) and max-pooled over time and space, of the centre clip; per label a multinomial logistic
  regression on the standardised training features, its L2 weight from PROBE_L2 by 5-fold cross-validation on the
  training videos. Tested on the 1,200 test videos.
Secondary readout, finetuning (the first finetune seeds only): finetune.py's no-data recipe on the 16-class cell
  label (appearance x motion), scratch = --init none; a video's appearance (motion) prediction sums the cell
  probabilities over motions (appearances).
Table 2: BEVT's readouts on the test videos again with one repeated frame and with shuffled frames.
Seeds: seed s is --seed s of every run of seed s; every difference between arms is paired by seed and video.
Intervals: a two-way bootstrap that resamples seeds and test videos (4,000 replicates); claims: docs/reproduce.md."""


# ----------------------------------------------------------------------------------------------------------------------
# running one subprocess, skipped when its result exists


def run_script(script, flags: dict, out_dir: Path, done: Path, threads: int = 0) -> float:
    """`python script flags` (or `python -m tools.reproduce readout flags` for script "readout") unless `done`
    exists, with `threads` torch threads (0: torch's default); console output in out_dir/console.log. Returns the
    minutes it took, also when skipped (read back from out_dir/minutes.txt; 0.0 without it). A failed run stops
    everything, naming its command and log."""
    if done.exists():
        stored = out_dir / "minutes.txt"
        return float(stored.read_text()) if stored.exists() else 0.0
    out_dir.mkdir(parents=True, exist_ok=True)
    target = ["-m", "tools.reproduce", "readout"] if script == "readout" else script.split()
    command = [sys.executable, *target, *as_flags({**flags, "out_dir": str(out_dir)})]
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
# the probe: a logistic regression on frozen features, its L2 weight chosen by cross-validation


def fit_logistic(x, y, num_classes, l2):
    """Multinomial logistic regression: minimises mean cross-entropy + l2 / 2 * |W|^2 (the bias is not penalised)
    with L-BFGS in float64 from zeros, so the fit is deterministic. x (N, D) float, y (N,) int -> (W (D, K), b (K,))."""
    x, y = torch.as_tensor(np.asarray(x), dtype=torch.float64), torch.as_tensor(np.asarray(y), dtype=torch.long)
    w = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=500, tolerance_grad=1e-8, tolerance_change=1e-12,
                                  history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + l2 / 2 * (w ** 2).sum()  # (N, K) logits
        loss.backward()
        return loss
    optimizer.step(closure)
    return w.detach(), b.detach()


def predict_logistic(weights, x) -> np.ndarray:
    w, b = weights
    return torch.softmax(torch.as_tensor(np.asarray(x), dtype=torch.float64) @ w + b, -1).numpy()  # (N, K)


def probe(train_x, train_y, tests: dict, num_classes, l2_grid=PROBE_L2, folds=PROBE_FOLDS, seed=0) -> dict:
    """The linear probe: features standardised with the training set's mean and sd; the L2 weight with the best
    cross-validated accuracy on the training set (folds drawn from `seed`; a tie goes to the larger weight); that
    weight refitted on the whole training set. Returns {"l2", "cv_accuracy": {l2: %}, "probs": {name: (N, K)}} for
    each test feature array in `tests`. Nothing of the test sets is used before the final prediction."""
    train_x, train_y = np.asarray(train_x, dtype=np.float64), np.asarray(train_y)
    mean, sd = train_x.mean(0), train_x.std(0) + 1e-6
    z = (train_x - mean) / sd
    fold = np.random.default_rng(seed).permutation(len(z)) % folds
    cv = {}
    for l2 in l2_grid:
        hits = 0
        for k in range(folds):
            weights = fit_logistic(z[fold != k], train_y[fold != k], num_classes, l2)
            hits += int((predict_logistic(weights, z[fold == k]).argmax(1) == train_y[fold == k]).sum())
        cv[l2] = 100.0 * hits / len(z)
    best = max(l2_grid, key=lambda l2: (cv[l2], l2))
    weights = fit_logistic(z, train_y, num_classes, best)
    return {"l2": best, "cv_accuracy": cv,
            "probs": {name: predict_logistic(weights, (np.asarray(x, dtype=np.float64) - mean) / sd)
                      for name, x in tests.items()}}


# ----------------------------------------------------------------------------------------------------------------------
# the readout subprocess: the probe of an encoder, or the per-video test of a finetuned model


@dataclass
class ReadoutConfig:
    kind: str = field(default="probe", metadata={"choices": ("probe", "finetuned")})
    checkpoint: str = ""  # probe: a pretraining checkpoint of any stage, or "none" (a random encoder drawn from
    # --seed); finetuned: finetune.py's final checkpoint (16-class cell head)
    data: str = ""  # the factorial set
    conditions: str = "normal"  # comma-separated CONDITIONS to test under
    seed: int = ranged(0, min=0)  # the random encoder's weights, the cross-validation folds, the Table 2 transforms
    out_dir: str = ""  # writes predictions.npz (per test video: probabilities per factor and condition), readout.json
    batch: int = ranged(8, min=1)
    num_workers: int = ranged(1, min=0)  # one decoding process beside the model's: the readout uses about one core


def test_views(seed):
    """The test view of FINETUNE_RECIPE as evaluate.test_dataset reads it: the centre 8-frame clip, the whole frame."""
    return SimpleNamespace(**{k: FINETUNE_RECIPE[k] for k in ("sampling", "clip_len", "frame_interval", "img_size",
                                                               "test_short_side", "test_clips", "test_crops")},
                           seed=seed)


def load_classifier(path, num_classes, seed):
    """VideoClassifier (nano, eval mode) from any checkpoint convert.py reads (an image-stage one is inflated), or
    with the weights torch draws from `seed` for "none"."""
    torch.manual_seed(seed)
    model = bevt_model.VideoClassifier(bevt_model.PRESETS[PRETRAIN_RECIPE["model"]], num_classes, head_dropout=0.0)
    if path != "none":
        state, _, _ = convert.init_classifier(convert.load_checkpoint(path), model, path)
        convert.load_model_state(model, state, path)  # a pretraining checkpoint keeps the fresh head: unused
    return model.eval()


@torch.no_grad()
def test_outputs(model, records, condition, cfg, features: bool) -> np.ndarray:
    """Per video, in record order: the encoder features (N, 2 C8) (features=True: the final tokens' mean and max over
    time and space) or the softmax (N, K), of the
    test view under a Table 2 condition (evaluate.temporal_transform, the transform of finetune.py's test)."""
    ds = evaluate.test_dataset(records, test_views(cfg.seed))
    assert ds.views == 1, "one view per video: the outputs are indexed by video"
    out = [None] * len(records)
    for b in data.make_loader(ds, cfg.batch, False, cfg.num_workers, cfg.seed, False):
        video = evaluate.temporal_transform(b["video"], b["video_index"], condition.replace("normal", "none"),
                                            cfg.seed)  # (B, 3, T, H, W)
        if features:  # the classifier's pooled features (the mean) and the max beside them: the object covers a
            # few of the 4 x 4 final positions, and the mean dilutes it in the background
            x = model.encoder.norm(model.encoder(video)[-1])  # (B, T', H', W', C8)
            y = torch.cat([x.mean(dim=(1, 2, 3)), x.amax(dim=(1, 2, 3))], -1)  # (B, 2 C8)
        else:
            y = model(video).softmax(-1)  # (B, K)
        for i, row in zip(b["video_index"].tolist(), y.double().numpy()):
            out[i] = row
    return np.stack(out)


def readout_main(argv):
    """`python -m tools.reproduce readout ...`: writes out_dir/predictions.npz ({factor}/{condition}: (N, K) float32
    probabilities per test video, {factor}/labels: (N,)) and out_dir/readout.json (accuracies, the probe's L2)."""
    cfg = ReadoutConfig(**parse_flags(ReadoutConfig, argv, "one readout of the reproduce protocol"))
    paths, out = factorial.factorial_paths(cfg.data), Path(cfg.out_dir)
    conditions = cfg.conditions.split(",")
    if not set(conditions) <= set(CONDITIONS) or not cfg.checkpoint:
        raise SystemExit(f"--conditions: some of {CONDITIONS}; --checkpoint: a file or none")
    root = paths["video_root"]
    test = {f: readers.read_list(paths[f"test_{f}"], root)[0] for f in (*FACTORS, "cell")}
    assert all([r.path for r in test[f]] == [r.path for r in test["cell"]] for f in FACTORS), "one video order"
    labels = {f: np.array([r.label for r in test[f]]) for f in FACTORS}
    num = {"appearance": len(factorial.APPEARANCES), "motion": len(factorial.MOTIONS)}  # classes per label
    arrays, summary = {f"{f}/labels": labels[f] for f in FACTORS}, {"kind": cfg.kind, "checkpoint": cfg.checkpoint}
    start = time.time()
    if cfg.kind == "probe":
        model = load_classifier(cfg.checkpoint, 1, cfg.seed)
        train = readers.read_list(paths["train_cell"], root)[0]
        train_x = test_outputs(model, train, "normal", cfg, features=True)
        test_x = {c: test_outputs(model, test["cell"], c, cfg, features=True) for c in conditions}
        summary["feature_minutes"] = (time.time() - start) / 60
        for f in FACTORS:
            train_y = readers.read_list(paths[f"train_{f}"], root)[0]
            fit = probe(train_x, [r.label for r in train_y], test_x, num[f], seed=cfg.seed)
            summary[f] = {"l2": fit["l2"], "cv_accuracy": fit["cv_accuracy"]}
            arrays.update({f"{f}/{c}": p for c, p in fit["probs"].items()})
    else:  # the finetuned model's cell probabilities, summed over the other factor
        model = load_classifier(cfg.checkpoint, len(factorial.cells()), cfg.seed)
        for c in conditions:
            cell = test_outputs(model, test["cell"], c, cfg, features=False).reshape(-1, num["appearance"],
                                                                                      num["motion"])  # (N, A, M)
            arrays[f"appearance/{c}"], arrays[f"motion/{c}"] = cell.sum(2), cell.sum(1)
            cell_labels = np.array([r.label for r in test["cell"]])
            summary.setdefault("cell_top1", {})[c] = 100.0 * float((cell.reshape(len(cell), -1).argmax(1)
                                                                     == cell_labels).mean())
    for f in FACTORS:
        summary[f] = {**summary.get(f, {}), "top1": {
            c: 100.0 * float((arrays[f"{f}/{c}"].argmax(1) == labels[f]).mean()) for c in conditions}}
    summary["minutes"] = (time.time() - start) / 60
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "predictions.npz", **{k: v.astype(np.float32) if v.dtype.kind == "f" else v
                                                    for k, v in arrays.items()})
    (out / "readout.json").write_text(json.dumps(summary, indent=1))  # written last: the run's "done" file
    print(json.dumps(summary))


# ----------------------------------------------------------------------------------------------------------------------
# the data: the factorial set and the tokenizer


def prepare(cfg, budget, out_dir: Path):
    """(factorial set root, tokenizer path, steps per epoch {stage: n}, tokenizer minutes)."""
    root = Path(cfg.data) if cfg.data else factorial.factorial_root(cfg=budget.task)
    paths = factorial.factorial_paths(root)
    for key in ("train_cell", "test_cell", "images"):
        if not paths[key].exists():
            raise SystemExit(f"reproduce.py: --data {root}: no {paths[key]} (tools/factorial.py writes the layout)")
    videos = len(readers.read_list(paths["train_motion"], paths["video_root"])[0])
    images = len(readers.read_image_folder(paths["images"])[0])
    # train.py: an epoch is the video set (video and joint stages) or the image set (image stage)
    per_epoch = {"video": videos // PRETRAIN_RECIPE["videos_per_gpu"],
                 "image": images // PRETRAIN_RECIPE["images_per_gpu"]}
    per_epoch["joint"] = per_epoch["video"]
    tokenizer, minutes = Path(cfg.tokenizer) if cfg.tokenizer else None, 0.0
    if tokenizer is None:  # the small VQ on the training videos' frames, as the no-data run trains its own
        size = PRETRAIN_RECIPE["img_size"] // 2
        folder = out_dir / f"tokenizer-{root.name}"  # one per set: --quick's smaller set has its own
        tokenizer = folder / f"vq_tokenizer_{size}.pt"
        minutes = run_script("-m tools.dataset small-vq", {"root": paths["video_root"],
                                                           "img_size": PRETRAIN_RECIPE["img_size"]}, folder, tokenizer)
    return root, tokenizer, per_epoch, minutes


# ----------------------------------------------------------------------------------------------------------------------
# the runs of one seed


def run_name(out_dir: Path) -> str:
    return f"{out_dir.parent.name}/{out_dir.name}"  # seed1/pretrain_bevt_v


def pretrain(stage, seed, out_dir, ctx, **extra) -> Path:
    """One train.py run of exactly S optimizer steps; returns its final checkpoint."""
    paths, steps = factorial.factorial_paths(ctx["root"]), ctx["budget"].pretrain_steps
    flags = {"stage": stage, **PRETRAIN_RECIPE, "tokenizer": ctx["tokenizer"], "seed": seed,
             "epochs": math.ceil(steps / ctx["per_epoch"][stage]), "max_steps": steps,
             "log_every": ctx["budget"].log_every, "save_every": ctx["budget"].save_every, "resume": True, **extra}
    if stage in ("video", "joint"):
        flags.update(video_ann=paths["train_motion"], video_root=paths["video_root"])
    if stage in ("image", "joint"):
        flags.update(image_root=paths["images"])
    final = out_dir / f"ckpt_{steps:08d}.pt"
    ctx["minutes"][run_name(out_dir)] = run_script("train.py", flags, out_dir, final, ctx["threads"])
    return final


def finetune(init, seed, out_dir, ctx) -> Path:
    """One finetune.py run on the cell label (train, then its own normal test); returns its final checkpoint."""
    paths = factorial.factorial_paths(ctx["root"])
    flags = {**FINETUNE_RECIPE, "init": init, "seed": seed, "epochs": ctx["budget"].finetune_epochs,
             "train_ann": paths["train_cell"], "train_root": paths["video_root"], "test_ann": paths["test_cell"],
             "test_root": paths["video_root"], "log_every": ctx["budget"].log_every,
             "save_every": ctx["budget"].save_every, "resume": True}
    ctx["minutes"][run_name(out_dir)] = run_script("finetune.py", flags, out_dir, out_dir / "eval.json", ctx["threads"])
    return run.latest_checkpoint(out_dir)


def readout(kind, ckpt_path, arm, seed, out_dir, ctx) -> Path:
    """One readout subprocess; returns its folder (predictions.npz, readout.json)."""
    conditions = CONDITIONS if arm in TEMPORAL_ARMS else CONDITIONS[:1]
    flags = {"kind": kind, "checkpoint": ckpt_path, "data": ctx["root"], "conditions": ",".join(conditions),
             "seed": seed}
    ctx["minutes"][run_name(out_dir)] = run_script("readout", flags, out_dir, out_dir / "readout.json", ctx["threads"])
    return out_dir


def budget_dir(out_dir, budget) -> Path:
    """Runs of different budgets never share a folder (a resumed run must not continue another budget's run)."""
    return Path(out_dir) / f"pretrain{budget.pretrain_steps}_finetune{budget.finetune_epochs}"


def run_seed(seed, with_finetune, ctx, pool):
    """Submits every run of one seed to `pool`; a run that needs another's output waits for it (submitted earlier,
    so it is running or done: no deadlock). Returns a function that waits for them all and gives
    {"probe": {arm: folder}, "finetune": {arm: folder}, "runs": {run: losses}}."""
    root = budget_dir(ctx["out_dir"], ctx["budget"]) / f"seed{seed}"
    ckpt = {"bevt_i": pool.submit(pretrain, "image", seed, root / "pretrain_bevt_i", ctx),
            "bevt_v": pool.submit(pretrain, "video", seed, root / "pretrain_bevt_v", ctx),
            "bevt_v_random_3d": pool.submit(pretrain, "video", seed, root / "pretrain_bevt_v_random_3d", ctx,
                                            mask_strategy="random_3d")}
    # BEVT: the BEVT-I checkpoint, inflated by train.py --init, then S joint steps
    ckpt["bevt"] = pool.submit(lambda: pretrain("joint", seed, root / "pretrain_bevt", ctx,
                                                init=ckpt["bevt_i"].result()))

    def probe_arm(arm):
        init = "none" if arm == "random" else str(ckpt[arm].result())
        return readout("probe", init, arm, seed, root / f"probe_{arm}", ctx)

    def finetune_arm(arm):
        init = "none" if arm == "scratch" else str(ckpt[arm].result())
        final = finetune(init, seed, root / f"finetune_{arm}", ctx)
        return readout("finetuned", str(final), arm, seed, root / f"finetuned_{arm}", ctx)

    probes = {arm: pool.submit(probe_arm, arm) for arm in ("random", *ARMS)}
    finetunes = {arm: pool.submit(finetune_arm, arm) for arm in FINETUNED} if with_finetune else {}

    def results():
        return {"probe": {arm: future.result() for arm, future in probes.items()},
                "finetune": {arm: future.result() for arm, future in finetunes.items()},
                "runs": {p.name: losses(p) for p in sorted(root.iterdir()) if (p / "log.jsonl").exists()}}

    print(f"seed {seed}: {len(ckpt)} pretraining runs, {len(probes)} probes, {len(finetunes)} finetunes planned",
          flush=True)
    return results


# ----------------------------------------------------------------------------------------------------------------------
# statistics: a two-way bootstrap over seeds and test videos, Holm's correction across claims

BOOT_REPS = 4000
EQUIVALENCE_MARGIN = 1.5  # points: "similar" means inside +-1.5 (docs/reproduce.md: the paper's smallest claimed gain)
ALPHA = 0.05  # familywise, per readout (Holm)
PREDICT_SEEDS = (3, 6, 9, 12, 18, 24, 36)  # seed counts whose predicted half-width results.json lists per claim


def bootstrap(d, reps=BOOT_REPS, seed=0) -> np.ndarray:
    """(reps,) bootstrap means of d (seeds, videos): each replicate draws the seeds and, independently, the test videos
    with replacement and averages d over the drawn grid (the two-way bootstrap of a crossed design: every seed is
    tested on the same videos, so both are sources of variation). One seed: the videos only."""
    d = np.asarray(d, dtype=np.float64)
    n_seeds, n_videos = d.shape
    rng = np.random.default_rng(seed)
    seed_weights = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=reps)  # (reps, seeds)
    video_weights = rng.multinomial(n_videos, np.full(n_videos, 1 / n_videos), size=reps)  # (reps, videos)
    per_seed = d @ video_weights.T  # (seeds, reps): each seed's sum over the drawn videos
    return (seed_weights * per_seed.T).sum(1) / (n_seeds * n_videos)


def interval(d, margin=EQUIVALENCE_MARGIN) -> dict:
    """Summary of d (seeds, videos) in points: the mean, the 95 % percentile interval of the two-way bootstrap, the
    one-sided bootstrap p-values of "above 0", "below 0" and of equivalence within +-margin (TOST: the larger of the
    two one-sided p-values against -margin and +margin), and the mean of each seed."""
    d = 100.0 * np.asarray(d, dtype=np.float64)
    boot, n = bootstrap(d), BOOT_REPS + 1
    low, high = np.percentile(boot, [2.5, 97.5])
    return {"mean": float(d.mean()), "low": float(low), "high": float(high),
            "p_above": float((1 + (boot <= 0).sum()) / n), "p_below": float((1 + (boot >= 0).sum()) / n),
            "p_equivalent": float(max(1 + (boot <= -margin).sum(), 1 + (boot >= margin).sum()) / n),
            "seeds": d.shape[0], "videos": d.shape[1], "per_seed": d.mean(1).tolist()}


def variance_components(d) -> dict:
    """The two-way random-effects decomposition of d (seeds, videos) in points: the variance of a seed's effect,
    of a video's effect, and the residual (seed x video) variance, from the ANOVA mean squares (negative estimates
    clipped to 0). Needs 2 seeds or more."""
    d = 100.0 * np.asarray(d, dtype=np.float64)
    n_seeds, n_videos = d.shape
    rows, cols, grand = d.mean(1, keepdims=True), d.mean(0, keepdims=True), d.mean()
    residual = ((d - rows - cols + grand) ** 2).sum() / ((n_seeds - 1) * (n_videos - 1))
    return {"seed": max(0.0, float(rows.var(ddof=1)) - residual / n_videos),
            "video": max(0.0, float(cols.var(ddof=1)) - residual / n_seeds), "residual": float(residual)}


def predicted_half_width(components, n_seeds, n_videos) -> float:
    """The 95 % half-width (points) of a mean over n_seeds seeds and n_videos videos, from variance_components:
    1.96 sqrt(seed / n_seeds + video / n_videos + residual / (n_seeds n_videos)). The pilot sets the seed count
    with it."""
    return 1.96 * math.sqrt(components["seed"] / n_seeds + components["video"] / n_videos
                            + components["residual"] / (n_seeds * n_videos))


def holm(p_values) -> list:
    """Holm's step-down adjusted p-values (familywise error control across the claims of one readout)."""
    order = np.argsort(p_values)
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


# ----------------------------------------------------------------------------------------------------------------------
# the claims (BEVT §4.2-4.3) and the tables

# Each claim: its text, what is measured (a difference of two arms' top-1 on one factor, or for Table 2 the drop on
# the motion label minus the drop on the appearance label under a test condition), the test ("above": the difference
# is above 0; "equivalent": inside +-EQUIVALENCE_MARGIN) and the paper's own effect. Motion plays SSv2 / Diving-48,
# appearance K400. The probe is the primary readout (one Holm family); the finetune readout is a second family.
CLAIMS = (
    {"id": "T1.3-motion", "claim": "BEVT above BEVT-I on motion (Table 1, obs. 3)",
     "measure": ("difference", "bevt", "bevt_i", "motion"), "test": "above", "paper": "+1.4 SSv2, +5.5 Diving-48"},
    {"id": "T1.3-appearance", "claim": "BEVT similar to BEVT-I on appearance (Table 1, obs. 3)",
     "measure": ("difference", "bevt", "bevt_i", "appearance"), "test": "equivalent", "paper": "+0.1 K400"},
    {"id": "T1.4-motion", "claim": "BEVT above BEVT-V on motion (Table 1, obs. 4)",
     "measure": ("difference", "bevt", "bevt_v", "motion"), "test": "above", "paper": "+3.5 SSv2, +3.0 Diving-48"},
    {"id": "T1.4-appearance", "claim": "BEVT above BEVT-V on appearance (Table 1, obs. 4)",
     "measure": ("difference", "bevt", "bevt_v", "appearance"), "test": "above", "paper": "+4.4 K400"},
    {"id": "T2-single-frame", "claim": "a single frame costs BEVT more on motion than on appearance (Table 2)",
     "measure": ("temporal", "bevt", "single-frame"), "test": "above",
     "paper": "drops 60.0 SSv2, 70.2 Diving-48 vs 15.3 K400"},
    {"id": "T2-shuffle", "claim": "shuffling costs BEVT more on motion than on appearance (Table 2)",
     "measure": ("temporal", "bevt", "shuffle"), "test": "above",
     "paper": "drops 47.3 SSv2, 33.6 Diving-48 vs 2.8 K400"},
    {"id": "T8-motion", "claim": "BEVT-V: tube masks above random-3D on motion (Table 8)",
     "measure": ("difference", "bevt_v", "bevt_v_random_3d", "motion"), "test": "above", "paper": "+4.2 SSv2 (Swin-T)"},
    {"id": "T8-appearance", "claim": "BEVT-V: tube masks above random-3D on appearance (Table 8)",
     "measure": ("difference", "bevt_v", "bevt_v_random_3d", "appearance"), "test": "above",
     "paper": "+4.2 K400 (Swin-T)"},
)


def correctness(per_seed: list, readout_name) -> dict:
    """{(arm, factor, condition): (seeds, videos) bool} from the predictions.npz of every seed that has the readout;
    besides the two labels, the motion label's parts ("motion speed", "motion direction", factorial.motion_parts)."""
    seeds = [s for s in per_seed if s[readout_name]]
    out = {}
    for arm in seeds[0][readout_name] if seeds else ():
        arrays = [np.load(Path(s[readout_name][arm]) / "predictions.npz") for s in seeds]
        for f in FACTORS:
            for c in CONDITIONS:
                if f"{f}/{c}" in arrays[0]:
                    out[arm, f, c] = np.stack([a[f"{f}/{c}"].argmax(1) == a[f"{f}/labels"] for a in arrays])
        for c in CONDITIONS:
            if f"motion/{c}" in arrays[0]:
                parts = [(factorial.motion_parts(a[f"motion/{c}"].argmax(1)),  # (predicted, true) per seed
                          factorial.motion_parts(a["motion/labels"])) for a in arrays]
                for part in MOTION_PARTS:
                    out[arm, f"motion {part}", c] = np.stack([pred[part] == true[part] for pred, true in parts])
    return out


def measure(correct, spec):
    """The (seeds, videos) values of a claim's measure, or None if its readout lacks an arm or condition."""
    if spec[0] == "difference":
        _, a, b, f = spec
        keys = [(a, f, "normal"), (b, f, "normal")]
        return None if any(k not in correct for k in keys) else correct[keys[0]].astype(float) - correct[keys[1]]
    _, arm, condition = spec
    keys = [(arm, f, c) for f in ("motion", "appearance") for c in ("normal", condition)]
    if any(k not in correct for k in keys):
        return None
    drop = {f: correct[arm, f, "normal"].astype(float) - correct[arm, f, condition] for f in FACTORS}
    return drop["motion"] - drop["appearance"]


def verdicts(correct) -> list:
    """[{id, claim, test, paper, interval, p, p_holm, verdict}] for the claims this readout can measure. "held": the
    Holm-adjusted p-value of the claim's test is below ALPHA; "reversed": the 95 % interval is on the other side of 0
    (for an equivalence claim: outside the margin); otherwise "not resolved". With one seed the interval covers the
    test videos only and the verdict says "one seed"."""
    rows = []
    for claim in CLAIMS:
        d = measure(correct, claim["measure"])
        if d is not None:
            cell = interval(d)
            p = cell["p_equivalent"] if claim["test"] == "equivalent" else cell["p_above"]
            row = {k: claim[k] for k in ("id", "claim", "test", "paper")} | {"interval": cell, "p": p}
            if cell["seeds"] >= 2:  # what more seeds would give (the pilot's seed count comes from it)
                components = variance_components(d)
                row["variance_components"] = components
                row["predicted_half_width"] = {n: predicted_half_width(components, n, cell["videos"])
                                               for n in PREDICT_SEEDS}
            rows.append(row)
    for row, adjusted in zip(rows, holm([r["p"] for r in rows])):
        cell, row["p_holm"] = row["interval"], adjusted
        if cell["seeds"] < 2:
            row["verdict"] = "one seed"
        elif adjusted < ALPHA:
            row["verdict"] = "held"
        elif (cell["high"] < 0 if row["test"] == "above" else
              cell["low"] > EQUIVALENCE_MARGIN or cell["high"] < -EQUIVALENCE_MARGIN):
            row["verdict"] = "reversed"
        else:
            row["verdict"] = "not resolved"
    return rows


def build_tables(correct) -> dict:
    """One readout's tables: top-1 per arm and factor (normal test), the paired differences of Tables 1 and 8 and
    against the floor, each arm's accuracy on the motion label's speed and direction, and Table 2's accuracies and
    drops per condition."""
    arms = sorted({a for a, _, _ in correct}, key=list(ARM_NAMES).index)
    floor = "random" if "random" in arms else "scratch"
    out = {"top1": {a: {f: interval(correct[a, f, "normal"]) for f in FACTORS} for a in arms}, "paired": {},
           "motion_parts": {a: {p: interval(correct[a, f"motion {p}", "normal"]) for p in MOTION_PARTS} for a in arms}}
    pairs = [("bevt", "bevt_i"), ("bevt", "bevt_v"), ("bevt_v", "bevt_v_random_3d")] + \
        [(a, floor) for a in ARMS]
    for a, b in pairs:
        if a in arms and b in arms:
            out["paired"][f"{a} - {b}"] = {f: interval(measure(correct, ("difference", a, b, f))) for f in FACTORS}
    out["temporal"] = {}
    for a in arms:
        for c in CONDITIONS[1:]:
            if (a, "motion", c) in correct:
                out["temporal"][f"{a} {c}"] = {
                    **{f: interval(correct[a, f, c]) for f in FACTORS},
                    **{f"drop {f}": interval(correct[a, f, "normal"].astype(float) - correct[a, f, c])
                       for f in FACTORS},
                    "drop motion - drop appearance": interval(measure(correct, ("temporal", a, c)))}
    return out


def show(cell) -> str:
    return f"{cell['mean']:6.1f} [{cell['low']:6.1f}, {cell['high']:6.1f}]"


def print_readout(name, tables, claims):
    print(f"\n{name}: top-1 (%) on the test videos, mean [95 % interval over seeds and videos]")
    print(f"  {'':<34}" + "".join(f"{f:>26}" for f in FACTORS))
    for label, row in [(ARM_NAMES[a], r) for a, r in tables["top1"].items()] + \
            [(" - ".join(ARM_NAMES[x] for x in k.split(" - ")), r) for k, r in tables["paired"].items()]:
        print(f"  {label:<34}" + "".join(f"{show(row[f]):>26}" for f in FACTORS))
    for arm, row in tables["motion_parts"].items():
        print(f"  {ARM_NAMES[arm]}, the motion label's parts (chance 50 %): "
              + ", ".join(f"{p} {show(v)}" for p, v in row.items()))
    for key, row in tables["temporal"].items():
        arm, condition = key.split()
        print(f"  {ARM_NAMES[arm]}, {condition}: " + ", ".join(f"{k} {show(v)}" for k, v in row.items()))
    print(f"  claims ({name}; Holm across these):")
    for c in claims:
        print(f"  {c['verdict']:<13} {show(c['interval'])}  p {c['p']:.4f}, Holm {c['p_holm']:.4f}  {c['claim']}"
              f"  [paper: {c['paper']}]")
        if "predicted_half_width" in c:
            print("                predicted 95 % half-width with n seeds: " + ", ".join(
                f"{n}: {w:.1f}" for n, w in c["predicted_half_width"].items()))


# ----------------------------------------------------------------------------------------------------------------------
# the run


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["readout"]:
        return readout_main(argv[1:])
    cfg = ReproduceConfig(**parse_flags(ReproduceConfig, argv, __doc__.split("\n")[0]))
    try:
        seeds = [int(s) for s in cfg.seeds.split(",")]
    except ValueError:
        raise SystemExit(f"--seeds {cfg.seeds!r}: expected comma-separated integers, e.g. 1,2,3") from None
    budget = BUDGETS[cfg.budget or ("quick" if cfg.quick else "full")]
    seeds = seeds[:1] if cfg.quick else seeds
    finetune_seeds = budget.finetune_seeds if cfg.finetune_seeds < 0 else cfg.finetune_seeds
    out_dir, start = Path(cfg.out_dir), time.time()
    run.lock_out_dir(out_dir)  # a second reproduce on the same folder stops here, before it starts any run
    print(PROTOCOL)
    root, tokenizer, per_epoch, tokenizer_minutes = prepare(cfg, budget, out_dir)
    cores = os.cpu_count() or 1
    jobs = cfg.jobs or cores
    ctx = {"out_dir": out_dir, "budget": budget, "root": root, "tokenizer": tokenizer, "per_epoch": per_epoch,
           "minutes": {"tokenizer": tokenizer_minutes}, "threads": cfg.threads or max(1, cores // jobs)}
    print(f"{jobs} runs at a time, {ctx['threads']} thread(s) each; S = {budget.pretrain_steps} steps; "
          f"finetunes for the first {finetune_seeds} seed(s)")
    with ThreadPoolExecutor(jobs) as pool:
        try:
            waits = [run_seed(seed, i < finetune_seeds, ctx, pool) for i, seed in enumerate(seeds)]
            per_seed = [wait() for wait in waits]
        except BaseException:  # a failed run: start nothing more (the runs under way finish, resumable)
            pool.shutdown(cancel_futures=True)
            raise
    readouts = {}
    for name in ("probe", "finetune"):
        correct = correctness(per_seed, name)
        if correct:
            readouts[name] = {"tables": build_tables(correct), "claims": verdicts(correct),
                              "seeds": [s for s, r in zip(seeds, per_seed) if r[name]]}
    summary = {
        "protocol": PROTOCOL, "config": asdict(cfg), "seeds": seeds, "budget": asdict(budget),
        "pretrain_recipe": {k: list(v) if isinstance(v, tuple) else v for k, v in PRETRAIN_RECIPE.items()},
        "finetune_recipe": {k: list(v) if isinstance(v, tuple) else v for k, v in FINETUNE_RECIPE.items()},
        "data": str(root), "steps_per_epoch": per_epoch, "equivalence_margin": EQUIVALENCE_MARGIN,
        "bootstrap_replicates": BOOT_REPS, **readouts,
        "readout_summaries": {str(s): {name: {arm: json.loads((Path(folder) / "readout.json").read_text())
                                              for arm, folder in r[name].items()} for name in ("probe", "finetune")}
                              for s, r in zip(seeds, per_seed)},
        "runs": {str(s): r["runs"] for s, r in zip(seeds, per_seed)},
        # this call's wall time (a continued protocol skips finished runs) and every run's own minutes, however many
        # calls it took
        "minutes": {"this_call": (time.time() - start) / 60, "runs": sum(ctx["minutes"].values()), **ctx["minutes"]},
    }
    (out_dir / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    for name, r in readouts.items():
        print_readout({"probe": "Probe (primary readout)", "finetune": "Finetune (secondary readout)"}[name],
                      r["tables"], r["claims"])
    print(f"seeds {seeds}; all numbers and every run's losses in {out_dir / 'results.json'} "
          f"(this call {summary['minutes']['this_call']:.1f} min, the runs' own {summary['minutes']['runs']:.1f} "
          f"run-minutes); per-video predictions in each readout's predictions.npz")


if __name__ == "__main__":
    run.entry_point(main)
