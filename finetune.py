"""BEVT finetuning and multi-view testing on K400 / SSv2 / Diving-48, the temporal-dependency test, torchvision export.

BEVT §3 "Finetuning and inference": the 3D patch embedding and the video encoder are kept, a classification head is
appended, and the whole model is finetuned; §4.1 "Implementation details": 60 epochs, batch 64, 32-frame clips, AdamW,
linear warmup + cosine. Table 2: the Single-frame / Random-Shuffling temporal test. The recipes are the official configs
configs/recognition/swin/swin_base_patch244_window877_bevt_finetune_k400.py and ..._window1677_bevt_finetune_ssv2.py;
Diving-48 has no official config (see PRESETS).

    python finetune.py                 # embedded default: synthetic set, nano model, from runs/synthetic_joint
    python finetune.py --init none     # the same from scratch
    torchrun --nproc_per_node 8 finetune.py --preset k400 --init bevt_joint.pth \
        --train-ann k400/train.csv --train-root k400/train --test-ann k400/val.csv --test-root k400/val
    python finetune.py --eval true --init runs/finetune/ckpt_00010000.pt --temporal-test single-frame ...
    python finetune.py --linear-probe true --init bevt_joint.pth ...   # frozen encoder, MAE's probe head

Multi-view testing and the Table 2 test are evaluate.py's; DDP, autocast, optimizer groups, the schedule and the
optimizer step engine.py's; the flags, the out-dir and the stops run.py's.
"""
import dataclasses
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

import convert
import data
import engine
import evaluate
import model as bevt_model
import run
import synthetic as synthetic_set
from run import check_ranges, input_path, parse_flags, ranged

# ----------------------------------------------------------------------------------------------------------------------
# config: the dataclass defaults are the official K400 recipe; PRESETS overrides per dataset


@dataclass
class FinetuneConfig:
    preset: str = field(default="k400", metadata={"choices": ("k400", "ssv2", "diving48")})
    model: str = field(default="base", metadata={"choices": tuple(bevt_model.PRESETS)})  # official: Swin-B
    init: str = input_path()  # ours (pretraining or finetune .pt), official BEVT / torchvision swin3d_* .pth, "none"
    out_dir: str = "runs/finetune"
    resume: bool = False  # continue from the newest checkpoint in out_dir
    eval: bool = False  # no training: evaluate --init (or the newest checkpoint in out_dir)
    temporal_test: str = field(default="none", metadata={"choices": ("none", "single-frame", "shuffle")})  # Table 2
    export_torchvision: str = ""  # write the final weights as a torchvision swin3d_* state dict here
    linear_probe: bool = False  # frozen encoder (eval mode), BatchNorm1d(affine=False) + Linear trained: MAE's probe
    # data
    train_ann: str = input_path()
    train_root: str = input_path()
    test_ann: str = input_path()
    test_root: str = input_path()
    sampling: str = field(default="dense", metadata={"choices": ("dense", "uniform")})  # official: SampleFrames(32, 2)
    clip_len: int = ranged(32, min=1)  # BEVT §4.1: clip length 32
    frame_interval: int = ranged(2, min=1)  # official k400 cfg; unused by uniform (segment) sampling
    img_size: int = ranged(224, min=32)  # BEVT §4.1: 224 x 224
    train_short_side: int = ranged(256, min=1)  # official cfgs: Resize(-1, 256) -> RandomResizedCrop -> Resize(224)
    test_short_side: int = ranged(224, min=1)  # official cfgs: Resize(-1, 224) -> ThreeCrop(224)
    flip: bool = True  # official k400 cfg: Flip(0.5)
    randaugment: tuple = ranged((0, 0), min=0)  # (n, m), (0, 0): off; official ssv2 cfg: n=4, m=7, all frames alike
    erase_prob: float = ranged(0.0, min=0, max=1)  # official ssv2 cfg: RandomErasing(p=0.25)
    crop_area: tuple = ranged((0.08, 1.0), above=0, max=1)  # official cfgs: RandomResizedCrop area range
    label_smoothing: float = ranged(0.0, min=0, max=0.99)  # official ssv2 cfg: LabelSmoothing 0.1
    test_clips: int = ranged(4, min=1)  # official k400 cfg: 4 clips x 3 crops (ThreeCrop 224 on short side 224)
    test_crops: int = ranged(3, min=1, max=3)
    test_batch: int = ranged(4, min=1)  # views per forward at test time (official max_testing_views=4)
    # model
    window_size: tuple = ranged((0, 0, 0), min=0)  # (0, 0, 0): the model preset's, (8, 7, 7) for Swin-B
    drop_path: float = ranged(0.3, min=0, max=0.99)  # official k400 cfg: drop_path_rate=0.3
    head_dropout: float = ranged(0.5, min=0, max=0.99)  # official k400 cfg: I3DHead dropout_ratio=0.5
    grad_checkpoint: bool = False  # recompute blocks in backward; official: use_checkpoint=False (cfgs unset)
    # optimisation: official AdamW, cosine (mmcv by_epoch=True) with a 2.5-epoch linear warmup from 0.1 x lr
    epochs: int = ranged(60, min=1)  # BEVT §4.1: 60 epochs
    warmup_epochs: float = ranged(2.5, min=0)
    warmup_ratio: float = ranged(0.1, min=0, max=1)  # mmcv default
    lr: float = ranged(3e-4, above=0)
    min_lr: float = ranged(0.0, min=0)
    weight_decay: float = ranged(0.001, min=0)
    betas: tuple = ranged((0.9, 0.999), min=0, max=0.999999)
    layer_decay: float = ranged(0.9, above=0, max=1)  # official k400 cfg: custom_keys lr_mult 0.9^k; 1.0: off
    backbone_lr_scale: float = ranged(1.0, min=0)  # official ssv2 cfg: custom key 'backbone' lr_mult 0.1; 1.0: off
    clip_grad: float = ranged(40.0, min=0)  # official k400 cfg: grad_clip max_norm=40; 0 disables
    videos_per_gpu: int = ranged(2, min=1)  # official k400 cfg: 2 per GPU x update_interval 4 x 8 GPUs = 64 (BEVT §4.1)
    accum: int = ranged(4, min=1)
    ema: bool = False  # official ssv2 cfg: EMAHook; evaluation and export then use the EMA weights
    ema_momentum: float = ranged(2e-4, min=0, max=1)  # mmcv EMAHook default, per forward iteration
    max_steps: int = ranged(0, min=0)  # stop after this many optimizer steps (the schedule spans `epochs`); 0: all
    # machinery
    dtype: str = field(default="bfloat16", metadata={"choices": ("bfloat16", "float16", "float32")})
    compile: bool = False
    num_workers: int = ranged(8, min=0)
    seed: int = ranged(0, min=0)
    log_every: int = ranged(20, min=1)
    save_every: int = ranged(1000, min=1)  # optimizer steps; a checkpoint is also written at the end
    keep_last: int = ranged(2, min=1)


OFFICIAL_BATCH = {"clips": 64}  # BEVT §4.1: batch 64 (official: 8 GPUs x 8 clips per step)
# official ssv2 cfg (each value beside K400's: docs/finetuning.md): no flip, as left / right is part of SSv2's labels;
# the (16, 7, 7) window's bias tables are interpolated from the pretrained (8, 7, 7); 1 per GPU x accum 8 x 8 GPUs = 64
SSV2 = dict(sampling="uniform", flip=False, randaugment=(4, 7), erase_prob=0.25, label_smoothing=0.1, test_clips=1,
            window_size=(16, 7, 7), drop_path=0.4, lr=5e-4, weight_decay=0.05, layer_decay=1.0, backbone_lr_scale=0.1,
            clip_grad=0.0, videos_per_gpu=1, accum=8, ema=True)
PRESETS = {
    "k400": {},  # the dataclass defaults
    "ssv2": SSV2,
    # Diving-48 has NO official config: the SSv2 recipe (BEVT §4.1 and Table 2 group them as the temporal datasets),
    # with flip on, since mirroring does not change a dive's class as it does SSv2's "left to right" ones
    "diving48": {**SSV2, "flip": True},
}

# `python finetune.py` with no data flags: the synthetic set, the nano model, CPU-sized, from the embedded default
# pretraining (`python train.py` -> runs/synthetic_joint) when it exists; the preset's recipe otherwise stays. Uniform
# sampling of 8 frames covers each 64-frame clip; a faster EMA (~300 steps); no flip (mirroring turns "slide right"
# into "slide left"); a milder RandomResizedCrop (a 0.08 crop often misses the object).
SYNTHETIC_PRETRAIN_DIR = "runs/synthetic_joint"
SYNTHETIC_DEFAULTS = dict(
    model="nano", out_dir="runs/synthetic_finetune", img_size=128, train_short_side=146, test_short_side=128,
    clip_len=8, sampling="uniform", window_size=(0, 0, 0), flip=False, crop_area=(0.5, 1.0), drop_path=0.1,
    head_dropout=0.0, epochs=16, warmup_epochs=1.0, lr=1e-3, videos_per_gpu=8, accum=1, ema_momentum=0.01,
    test_clips=1, test_crops=3, test_batch=8, num_workers=2, log_every=10, save_every=500, dtype="float32",
)
DESCRIPTION = __doc__.split("\n")[0] + f"""

--preset picks the official recipe of a dataset (k400: the defaults; the values marked ssv2 / diving48 replace them).
Without --train-ann / --test-ann this is the embedded default: the synthetic set, the nano model, minutes on a CPU,
from the output of `python train.py` ({SYNTHETIC_PRETRAIN_DIR}) when there is one: the values marked "no-data run"
replace the preset's. Flags given always win."""


def check_config(cfg):
    """Every flag against its range, then the rules between flags (each failure names the flags and what is
    allowed), before any data or model is built."""
    check_ranges(cfg)
    if not (cfg.test_ann and cfg.test_root):
        raise SystemExit("evaluation needs --test-ann and --test-root")
    if not (cfg.eval or (cfg.train_ann and cfg.train_root)):
        raise SystemExit("training needs --train-ann and --train-root (or --eval true)")
    if not cfg.img_size <= cfg.test_short_side:
        raise SystemExit(f"--test-short-side {cfg.test_short_side}: must be at least --img-size {cfg.img_size} (the "
                         f"test crops are taken from the rescaled frame)")
    if cfg.crop_area[0] > cfg.crop_area[1]:
        raise SystemExit(f"--crop-area {cfg.crop_area[0]} {cfg.crop_area[1]}: the first must not exceed the second")
    if cfg.window_size != (0, 0, 0) and 0 in cfg.window_size:
        raise SystemExit(f"--window-size {' '.join(map(str, cfg.window_size))}: all three >= 1, or 0 0 0 (the "
                         f"preset's)")
    return cfg


def build_config(argv):
    variants = {"ssv2": SSV2, "diving48": PRESETS["diving48"], "no-data run": SYNTHETIC_DEFAULTS}
    given = parse_flags(FinetuneConfig, argv, DESCRIPTION, variants=variants)
    synthetic = not (given.get("train_ann") or given.get("test_ann"))
    preset, paths = PRESETS[given.get("preset", "k400")], synthetic_set.synthetic_paths(synthetic_set.SYNTHETIC_ROOT)
    files = {"train_ann": paths["k400_train_csv"], "test_ann": paths["k400_val_csv"], "train_root": paths["mp4_root"],
             "test_root": paths["mp4_root"]}  # the synthetic set's, generated in main
    base = {**preset, **SYNTHETIC_DEFAULTS, **{k: str(v) for k, v in files.items()}} if synthetic else dict(preset)
    return check_config(FinetuneConfig(**{**base, **given})), synthetic


# ----------------------------------------------------------------------------------------------------------------------
# one optimizer step


def train_step(model, micro_batches, optimizer, scaler, cfg, env, lr):
    """Forward/backward over `accum` equal micro-batches (mean cross-entropy / accum = the step's mean, as the official
    DistOptimizerHook), clip, step. Returns (optimizer_step's result, stats [sum CE, correct, n])."""
    stats = torch.zeros(3, dtype=torch.float64, device=env.device)
    finite = torch.ones((), dtype=torch.bool, device=env.device)
    for i, b in enumerate(micro_batches):
        video, label = b["video"].to(env.device, non_blocking=True), b["label"].to(env.device, non_blocking=True)
        # DDP all-reduces the gradients on the last micro-batch only
        with model.no_sync() if env.ddp and i < len(micro_batches) - 1 else nullcontext():
            with engine.autocast_context(env.device, cfg.dtype):
                logits = model(video)  # (B, num_classes)
            # official ssv2 cfg: LabelSmoothing(0.1) blends the one-hot with 0.1/num_classes, = torch's label_smoothing
            loss = F.cross_entropy(logits.float(), label, label_smoothing=cfg.label_smoothing)
            finite &= torch.isfinite(loss.detach())
            scaler.scale(loss / len(micro_batches)).backward()
        stats[0] += loss.detach().double() * len(label)
        stats[1] += (logits.argmax(-1) == label).sum()
        stats[2] += len(label)  # a Python number: no host-to-device copy
    return engine.optimizer_step(optimizer, scaler, finite, cfg.clip_grad, env, lr), {"clips": stats}


# ----------------------------------------------------------------------------------------------------------------------
# the run


def datasets(cfg):
    """(train records or None with --eval, test records, class names). The annotation format is detected by
    readers.read_annotations (K400 CSV, SSv2 / Diving-48 JSON, UCF101 / HMDB51 splits, lists)."""
    train_records, classes = None, None
    if not cfg.eval:
        train_records, classes = data.read_dataset(cfg.train_ann, cfg.train_root, "--train-ann/--train-root")
    # the test labels are indexed by the training classes (a class the training set lacks is named with its line)
    test_records, classes = data.read_dataset(cfg.test_ann, cfg.test_root, "--test-ann/--test-root", classes)
    return train_records, test_records, classes


def start_weights(cfg, synthetic, env):
    """(checkpoint of out_dir to resume or evaluate, or None; the --init to load otherwise). Resume > --init > the
    embedded default's pretraining output. Both choices are checked to be the same on every rank."""
    own = (cfg.resume or cfg.eval) and not (cfg.eval and cfg.init)  # --eval with --init evaluates that file
    resume = run.resume_checkpoint(cfg.out_dir, env, training=not cfg.eval) if own else None
    init = cfg.init
    if not init and synthetic and resume is None:
        found = run.latest_checkpoint(SYNTHETIC_PRETRAIN_DIR)
        init = engine.same_on_all_ranks(str(found) if found else "none", env, f"the newest in {SYNTHETIC_PRETRAIN_DIR}")
        env.log(f"no pretraining checkpoint in {SYNTHETIC_PRETRAIN_DIR} (run `python train.py` first): from scratch"
                if not found else f"the embedded default starts from the pretraining output {found}")
    if cfg.eval and resume is None and init in ("", "none"):
        raise SystemExit(f"--eval true needs --init CHECKPOINT or a checkpoint in {cfg.out_dir}")
    return resume, init


def probe_head(linear):
    """MAE main_linprobe.py's head: BatchNorm1d(affine=False, eps=1e-6), then the Linear with trunc_normal(0.01)
    weights and zero bias. Keys head.0.running_* and head.1.*; convert.fold_probe_norm folds it into a plain head."""
    torch.nn.init.trunc_normal_(linear.weight, std=0.01)
    torch.nn.init.zeros_(linear.bias)
    return torch.nn.Sequential(torch.nn.BatchNorm1d(linear.in_features, affine=False, eps=1e-6), linear)


def build_model(cfg, env, num_classes, init):
    mcfg = dataclasses.replace(bevt_model.PRESETS[cfg.model], drop_path_rate=cfg.drop_path,
                               grad_checkpoint=cfg.grad_checkpoint)
    if cfg.window_size != (0, 0, 0):
        mcfg = dataclasses.replace(mcfg, window_size=cfg.window_size)
    raw_model = bevt_model.VideoClassifier(mcfg, num_classes, head_dropout=cfg.head_dropout)
    if cfg.linear_probe:  # the head is replaced before loading, so a probe checkpoint's head.0 / head.1 keys fit
        raw_model.head = probe_head(raw_model.head)
    raw_model = raw_model.to(env.device)
    if init not in (None, "", "none"):
        state = convert.load_checkpoint(init)
        sd, dropped, kind = convert.init_classifier(state, raw_model, init)
        convert.load_model_state(raw_model, sd, init, convert.holds(state), f"--model {cfg.model}")
        env.log(f"initialised from {kind} checkpoint {init} ({len(dropped)} keys dropped by name): "
                + ", ".join(sorted({".".join(k.split(".")[:2]) for k in dropped})))
    elif init is not None:  # None: the resume checkpoint's weights follow
        env.log("initialised from scratch" + (" (--init none)" if cfg.init == "none" else " (no --init given)"))
    if cfg.linear_probe:  # only the head learns; the encoder runs in eval mode (no drop path) and takes no gradient
        raw_model.encoder.requires_grad_(False).eval()
        env.log(f"linear probe: {sum(p.numel() for p in raw_model.parameters() if p.requires_grad):,} trainable "
                f"parameters (BatchNorm1d without affine + Linear), the encoder frozen in eval mode")
    return raw_model, mcfg


@torch.no_grad()
def ema_update(ema, model, momentum, accum):
    """ema <- (1 - m) ema + m param, once per optimizer step. mmcv EMAHook runs after every forward iteration with
    m = min(2e-4, (1 + it) / (warm_up + it)) = 2e-4 (warm_up=100 never binds), after the optimizer hook of the same
    iteration; with update_interval=accum the parameters stay fixed for the accum iterations that follow a step, so one
    update per optimizer step with m' = 1 - (1 - m)^accum gives exactly the official EMA."""
    m = 1.0 - (1.0 - momentum) ** accum
    for name, p in model.named_parameters():
        ema[name].mul_(1.0 - m).add_(p.detach(), alpha=m)


RESUME_IGNORES = ("eval", "temporal_test", "export_torchvision")  # flags of what happens after training


def train(cfg, synthetic, env, raw_model, mcfg, records, classes, resume):
    """The finetuning loop; returns the EMA weights (or None). EMA starts from the weights every rank holds after DDP
    broadcast rank 0's (or from the checkpoint's EMA): one EMA on all ranks, the one rank 0 saves."""
    # the recipe's optimizer groups: layer-wise lr decay (k400 cfg:97-125) or the backbone lr_mult (ssv2 cfg:99)
    keys = engine.recipe_keys(mcfg.depths, cfg.layer_decay, cfg.backbone_lr_scale)
    groups = engine.param_groups(raw_model, cfg.weight_decay, keys)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
    scaler = engine.make_scaler(env, cfg.dtype)
    state = run.resume_from(resume, raw_model, optimizer, scaler, cfg, env, RESUME_IGNORES) if resume else {}
    step, ema = state.get("step", 0), state.get("ema")
    ema = {n: t.to(env.device) for n, t in ema.items()} if ema else None
    train_ds = data.FinetuneVideoDataset(
        records, train=True, sampling=cfg.sampling, clip_len=cfg.clip_len, frame_interval=cfg.frame_interval,
        crop=cfg.img_size, short_side=cfg.train_short_side, flip=cfg.flip,
        randaugment=cfg.randaugment if cfg.randaugment[0] > 0 else None, erase_prob=cfg.erase_prob,
        area=cfg.crop_area, seed=cfg.seed)
    engine.same_on_all_ranks(len(train_ds), env, "the number of training samples")
    steps_per_epoch, total_steps, stop_at = data.step_counts(train_ds, cfg.videos_per_gpu, cfg, env)
    model = torch.compile(raw_model) if cfg.compile else raw_model
    if env.ddp:  # every parameter is used in every step: no find_unused_parameters
        model = DDP(model, device_ids=[env.local_rank] if env.device.startswith("cuda") else None)
    if cfg.ema and ema is None:  # after DDP broadcast rank 0's weights
        ema = {n: p.detach().clone() for n, p in raw_model.named_parameters()}
    env.log(f"finetune {cfg.preset} | model {cfg.model} | {len(classes)} classes | {len(records)} train videos | "
            f"{env.world} process(es) on {env.device} {cfg.dtype} | {steps_per_epoch} steps/epoch x {cfg.epochs} = "
            f"{total_steps} steps")
    env.log("\n".join(engine.batch_report({"clips": cfg.videos_per_gpu}, OFFICIAL_BATCH, cfg, env, synthetic)))
    progress, clips_per_step = run.Progress(step, env), cfg.videos_per_gpu * cfg.accum * env.world
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    for micro in data.step_batches(train_ds, cfg.videos_per_gpu, cfg, env, step, steps_per_epoch, stop_at, progress):
        # official: mmcv CosineAnnealing by_epoch=True (the cosine value changes once per epoch), warmup per iteration
        lr = engine.lr_at(progress.step, total_steps, warmup_steps, cfg.lr, cfg.warmup_ratio, cfg.min_lr,
                          cosine_every=steps_per_epoch)
        result, stats = train_step(model, micro, optimizer, scaler, cfg, env, lr)
        if result is None:
            raise SystemExit(f"non-finite loss at step {progress.step + 1}; last good checkpoint: "
                             f"{run.latest_checkpoint(cfg.out_dir) or 'none written yet'}")
        progress.record(result, stats)
        if ema is not None:
            ema_update(ema, raw_model, cfg.ema_momentum, cfg.accum)
        step = progress.step
        if progress.due(cfg.log_every, stop_at):  # means since the last line
            loss, correct, n = progress.take_window()["clips"]
            row = {"step": step, "epoch": step / steps_per_epoch, "loss": loss / n, "acc": correct / n, "lr": lr,
                   **progress.log_fields({"clips": clips_per_step}, stop_at)}
            line = (f"step {step}/{total_steps} | epoch {row['epoch']:.2f} | loss {row['loss']:.4f} | "
                    f"acc {row['acc']:.3f} | lr {lr:.2e} | grad {row['grad_norm']:.3f} | "
                    f"{row['clips_per_s']:.1f} clips/s | data {row['data_share']:.0%}")
            run.append_log(row, line, env, cfg.out_dir)
        if progress.due(cfg.save_every, stop_at):
            saved = run.save_checkpoint(
                {"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                 "ema": ema, "config": asdict(cfg), "model_config": asdict(mcfg), "classes": classes, "step": step},
                env, cfg.out_dir, step, cfg.keep_last)
        if progress.stop_signal:  # SIGTERM / SIGUSR1 (preemption) or Ctrl-C: saved above, exit for a requeue
            progress.exit_after_signal(saved)
    env.log(f"trained {step - progress.first_step} steps in {(time.time() - progress.t0) / 60:.1f} min")
    return ema


def main(argv=None):
    cfg, synthetic = build_config(sys.argv[1:] if argv is None else argv)
    cfg, env = engine.start_run(cfg)
    run.claim_out_dir(cfg.out_dir, env, resume=cfg.resume or cfg.eval)
    if synthetic:
        env.log("no --train-ann/--test-ann given: the embedded default (synthetic data, nano model, CPU-sized; "
                "see --help)")
        engine.rank_zero_first(synthetic_set.synthetic_root, env, "the synthetic data set's folder")
    resume, init = start_weights(cfg, synthetic, env)
    train_records, test_records, classes = datasets(cfg)
    groups = synthetic_set.class_groups(synthetic_set.SYNTHETIC_ROOT) if synthetic else None  # top-1 per group too
    raw_model, mcfg = build_model(cfg, env, len(classes), init if resume is None else None)
    if not cfg.eval:
        ema = train(cfg, synthetic, env, raw_model, mcfg, train_records, classes, resume)
    else:  # a checkpoint of out_dir (or --init, loaded by build_model)
        state = run.resume_from(resume, raw_model, None, None, cfg, env, RESUME_IGNORES) if resume else {}
        ema = state.get("ema")
    if ema is not None and cfg.ema:  # official: EMAHook swaps the EMA weights in for testing
        raw_model.load_state_dict({**raw_model.state_dict(), **ema})
        env.log("evaluating the EMA weights")
    results = {"normal": evaluate.run_eval(raw_model, test_records, len(classes), cfg, env, "none", groups)}
    if cfg.temporal_test != "none":  # BEVT Table 2
        results[cfg.temporal_test] = evaluate.run_eval(raw_model, test_records, len(classes), cfg, env,
                                                       cfg.temporal_test, groups)
    evaluate.report(results, classes, env, cfg.out_dir)
    if cfg.export_torchvision and env.master:
        torch.save(convert.to_torchvision(raw_model.state_dict(), mcfg.window_size), cfg.export_torchvision)
        print(f"wrote {cfg.export_torchvision}: loads into torchvision.models.video.swin3d_* "
              f"(num_classes={len(classes)}) with strict=True")


if __name__ == "__main__":
    run.entry_point(main)
