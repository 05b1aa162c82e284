"""BEVT pretraining: the image stage (BEVT-I), the video stage (BEVT-V) and the joint stage (BEVT).

BEVT §3 "Training strategies": first masked image modeling (MIM) on ImageNet, then the video stream is initialised
from it and both streams are trained jointly with L = L_MIM + λ·L_MVM (Eq. 5). §4.1 "Implementation details".
official: configs/recognition/swin/swin_base_patch244_window877_bevt_in1k_k400.py (the joint run whose numbers are the
defaults of TrainConfig), mmaction/core/runner/omnisource_runner.py (one video batch + one image batch per iteration),
mmaction/utils/optimizer.py (gradient accumulation), mmaction/apis/train.py.

    python train.py                                              # embedded default: synthetic data, nano model, CPU
    torchrun --nproc_per_node 8 train.py --stage joint --init image_stage.pt --tokenizer dalle_encoder.pt \
        --video-ann k400/train.csv --video-root k400/train --image-root imagenet/train

One optimizer step = `accum` micro-batches per GPU, each with `videos_per_gpu` clips and `images_per_gpu` images
(train_step: targets, forward, Eq. 5, backward, step). What finetune.py shares (DDP, optimizer groups, schedule, the
optimizer step) is engine.py; the flags, the out-dir (lock, checkpoints, log) and the stops are run.py's.
"""
import dataclasses
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

import convert
import data
import engine
import model as bevt_model
import run
import synthetic as synthetic_set
import tokenizer as tok
from run import check_ranges, input_path, parse_flags, ranged

# ----------------------------------------------------------------------------------------------------------------------
# config


@dataclass
class TrainConfig:
    # BEVT §3 "Training strategies": image (BEVT-I), video (BEVT-V) or the joint stage (BEVT)
    stage: str = field(default="joint", metadata={"choices": ("image", "video", "joint")})
    model: str = field(default="base", metadata={"choices": tuple(bevt_model.PRESETS)})  # official: Swin-B
    drop_path: float = ranged(0.3, min=0, max=0.99)  # official cfg: drop_path_rate=0.3
    grad_checkpoint: bool = False  # recompute blocks in backward; official: use_checkpoint=False (cfgs unset)
    # image stream attention: "official" = the released code's (the 2D shift mask on every block, the shift kept at
    # stage 4; the paper's numbers), "swin" = 2D Swin semantics (model.SwinBlock, docs/differences.md)
    image_attention: str = field(default="official", metadata={"choices": ("official", "swin")})
    init: str = input_path()  # image-stage checkpoint (ours or the official release) to inflate into the joint
    tokenizer: str = input_path()  # converted DALL-E encoder or VQ .pt (needed with data); empty: the synthetic VQ
    tokenizer_precision: str = field(default="official", metadata={"choices": ("official", "fp32")})  # official: the
    # DALL-E encoder in fp16 on GPU under apex O1; fp32: real fp32 (no TF32)
    out_dir: str = "runs/pretrain"
    resume: bool = False  # continue from the newest checkpoint in out_dir
    # data. The video stream (K400 in the paper): a folder of videos (any depth), a list of paths or an annotation file
    # (K400 CSV, `path label` list, SSv2 / Diving-48 JSON, UCF101 / HMDB51 splits; auto-detected), labels unused
    video_ann: str = input_path()
    video_root: str = input_path()  # the folder the annotation's paths are relative to (default: a folder --video-ann)
    image_root: str = input_path()  # a folder of images, with or without class folders (ImageNet); --image-list's root
    image_list: str = input_path()  # optional list of image paths (`path` or `path label`)
    clip_len: int = ranged(16, min=1)  # official cfg: SampleFrames(clip_len=16, frame_interval=8)
    frame_interval: int = ranged(8, min=1)
    img_size: int = ranged(224, min=32)  # official cfg: RandomCrop(224)
    rescale: tuple = ranged((256, 320), min=1)  # official cfg: RandomRescale short side, bicubic
    jitter: float = ranged(0.4, min=0)  # official cfg: image ColorJitter(0.4, 0.4, 0.4)
    mask_ratio: float = ranged(0.5, above=0, max=1)  # official cfg: 98 of 14x14 masked, tube per-frame ratio 0.5
    tube_range: tuple = ranged((0.5, 1.0), above=0, max=1)  # official cfg masked_tube_range; BEVT §3: [0.5T, T]
    mask_strategy: str = field(default="tube",
                               metadata={"choices": ("tube", "random_3d", "frame_diff", "random_frame")})
    lam: float = ranged(1.0, min=0)  # BEVT Eq. (5) λ; official: loss weights 1.0 for both
    # batch: official videos_per_gpu=8, omni_videos_per_gpu=[8, 64], update_interval=2 -> 4 + 32 per forward, accum 2
    videos_per_gpu: int = ranged(4, min=1)
    images_per_gpu: int = ranged(32, min=1)
    accum: int = ranged(2, min=1)
    # optimisation: official AdamW, CosineAnnealing by iteration, 10 warmup epochs from 0.1 x lr, 150 epochs, clip 3.0
    epochs: int = ranged(150, min=1)
    warmup_epochs: float = ranged(10.0, min=0)
    warmup_ratio: float = ranged(0.1, min=0, max=1)  # mmcv default warmup_ratio
    lr: float = ranged(5e-4, above=0)
    min_lr: float = ranged(0.0, min=0)
    weight_decay: float = ranged(0.05, min=0)
    betas: tuple = ranged((0.9, 0.999), min=0, max=0.999999)
    clip_grad: float = ranged(3.0, min=0)  # 0 disables
    max_steps: int = ranged(0, min=0)  # stop after this many optimizer steps (the schedule spans `epochs`); 0: all
    # machinery
    dtype: str = field(default="bfloat16", metadata={"choices": ("bfloat16", "float16", "float32")})  # CPU: float32
    compile: bool = False
    num_workers: int = ranged(8, min=0)
    seed: int = ranged(0, min=0)  # official README: --seed 0
    log_every: int = ranged(20, min=1)
    save_every: int = ranged(1000, min=1)  # optimizer steps; a checkpoint is also written at the end
    keep_last: int = ranged(3, min=1)


def check_config(cfg):
    """Every flag against its range, then the rules between flags; each failure names the flags, values, what is
    allowed. Runs before any data, model or tokenizer is built."""
    check_ranges(cfg)
    patch_t = bevt_model.PRESETS[cfg.model].patch_size[0]
    # the mask grid (16-px tokenizer cells) must be the stage-3 grid, and stage 4 half of it: img_size / 32 whole
    if cfg.img_size % 32:
        raise SystemExit(f"--img-size {cfg.img_size}: must be a multiple of 32 (the tokenizer's 16-px cells on the "
                         f"half-size view make the stage-3 grid, which stage 4 halves)")
    if cfg.clip_len % patch_t:
        raise SystemExit(f"--clip-len {cfg.clip_len}: must be a multiple of the model's tubelet length {patch_t} "
                         f"(--model {cfg.model})")
    if not cfg.img_size <= cfg.rescale[0] <= cfg.rescale[1]:
        raise SystemExit(f"--rescale {cfg.rescale[0]} {cfg.rescale[1]}: must be a range of short sides "
                         f"from --img-size {cfg.img_size} up (the crop is taken from the rescaled frame)")
    if cfg.tube_range[0] > cfg.tube_range[1]:
        raise SystemExit(f"--tube-range {cfg.tube_range[0]} {cfg.tube_range[1]}: the first must not exceed the second")
    return cfg


# BEVT §4.1: batch 256 (joint), 2,048 images (BEVT-I). official: README.md:78 (32 GPUs) x omni_videos_per_gpu
# [8, 64] (configs/recognition/swin/swin_base_patch244_window877_bevt_in1k_k400.py:76) per optimizer step
OFFICIAL_BATCH = {"clips": 256, "images": 2048}

# `python train.py` with no data flags, the embedded default: a joint run on the synthetic set (generated on first
# use) with the nano model and the small VQ tokenizer, a few minutes on a 2-core CPU. Flags still override.
SYNTHETIC_DEFAULTS = dict(
    model="nano", drop_path=0.0, out_dir="runs/synthetic_joint", img_size=128, rescale=(146, 183), clip_len=8,
    frame_interval=2, videos_per_gpu=4, images_per_gpu=8, accum=1, epochs=8, warmup_epochs=1.0, lr=1e-3,
    num_workers=2, log_every=10, save_every=200, dtype="float32",
)
DESCRIPTION = __doc__.split("\n")[0] + """

Without --video-ann / --image-root this is the embedded default, a joint run on a generated synthetic set with the
nano model and a small VQ tokenizer, minutes on a CPU: the values marked "no-data run" replace the defaults.
With a data flag every default is the official recipe (and --tokenizer is needed). Flags given always win."""


def build_config(argv):
    """(config, synthetic): the flags over the official defaults, or over SYNTHETIC_DEFAULTS and the synthetic set's
    files (generated in main) when no data flag is given."""
    given = parse_flags(TrainConfig, argv, DESCRIPTION, variants={"no-data run": SYNTHETIC_DEFAULTS})
    synthetic = not (given.get("video_ann") or given.get("image_root"))
    paths = synthetic_set.synthetic_paths(synthetic_set.SYNTHETIC_ROOT)
    files = {"video_ann": paths["k400_train_csv"], "video_root": paths["mp4_root"], "image_root": paths["images_train"]}
    base = {**SYNTHETIC_DEFAULTS, **{k: str(v) for k, v in files.items()}} if synthetic else {}  # generated in main
    cfg = TrainConfig(**{**base, **given})
    if not cfg.video_root and cfg.video_ann and Path(cfg.video_ann).is_dir():  # a folder of videos is its own root
        cfg = dataclasses.replace(cfg, video_root=cfg.video_ann)
    return check_config(cfg), synthetic


NO_TOKENIZER = """--tokenizer is needed with real data. BEVT's targets come from the DALL-E encoder:
    python tokenizer.py convert encoder.pkl dalle_encoder.pt     (once; then --tokenizer dalle_encoder.pt)
or train the small VQ tokenizer on your data first (minutes; not the paper's tokenizer):
    python -m tools.dataset small-vq --root {root} --img-size {img_size}"""


# ----------------------------------------------------------------------------------------------------------------------
# data and tokenizer


def build_datasets(cfg):
    """(video dataset or None, image dataset or None). Labels are not needed (readers.read_unlabelled): a video
    folder, a list of paths, or any annotation the finetuning readers take; an image folder with or without class
    sub-folders, or a list."""
    video_ds = image_ds = None
    if cfg.stage in ("video", "joint"):
        if not cfg.video_ann:
            raise SystemExit(f"--stage {cfg.stage} needs --video-ann and --video-root")
        records, _ = data.read_dataset(cfg.video_ann, cfg.video_root, "--video-ann/--video-root", kind="video")
        video_ds = data.PretrainVideoDataset(
            records, clip_len=cfg.clip_len, frame_interval=cfg.frame_interval, crop=cfg.img_size, rescale=cfg.rescale,
            mask_strategy=cfg.mask_strategy, tube_range=cfg.tube_range, mask_ratio=cfg.mask_ratio,
            patch_t=bevt_model.PRESETS[cfg.model].patch_size[0], seed=cfg.seed)
    if cfg.stage in ("image", "joint"):
        if not cfg.image_root:
            raise SystemExit(f"--stage {cfg.stage} needs --image-root")
        records, _ = data.read_dataset(cfg.image_list or cfg.image_root, cfg.image_root, "--image-root/--image-list",
                                       kind="image")
        image_ds = data.PretrainImageDataset(records, crop=cfg.img_size, rescale=cfg.rescale, jitter=cfg.jitter,
                                             mask_ratio=cfg.mask_ratio, seed=cfg.seed)
    return video_ds, image_ds


def build_tokenizer(cfg, env):
    """(the frozen target tokenizer on this rank's device, the resolved path of its file) (BEVT §3 "Tokenizer"):
    --tokenizer, or (the synthetic run only) the small VQ of its views, trained once by rank 0 and cached."""
    path = cfg.tokenizer
    if not path:
        root, size = cfg.video_root or cfg.image_root, cfg.img_size // 2  # BEVT §3 "Tokenizer": half-size view
        path = synthetic_set.cached_small_vq_path(root, size)
        engine.rank_zero_first(lambda: synthetic_set.small_vq(root, size, path), env, "the small VQ tokenizer")
    size = Path(path).stat().st_size if Path(path).is_file() else None
    engine.same_on_all_ranks((str(path), size), env, "the tokenizer file (path, bytes)")
    if size is None:
        raise SystemExit(f"--tokenizer {path}: no such file")
    try:
        return tok.load_tokenizer(path, env.device, precision=cfg.tokenizer_precision), str(Path(path).resolve())
    except ValueError as e:
        raise SystemExit(f"--tokenizer: {e}") from None


# ----------------------------------------------------------------------------------------------------------------------
# model and one optimizer step


def build_model(cfg, env, vocab_size, init):
    mcfg = dataclasses.replace(bevt_model.PRESETS[cfg.model], drop_path_rate=cfg.drop_path, vocab_size=vocab_size,
                               grad_checkpoint=cfg.grad_checkpoint, image_attention=cfg.image_attention)
    raw_model = bevt_model.BEVT(mcfg).to(env.device)
    if init:  # BEVT §3 "Training strategies": the image stream's weights initialise the joint model (3D inflation)
        missing = convert.load_image_stage(raw_model, init, mcfg, cfg.model)
        env.log(f"initialised from {init}; fresh (not in the image checkpoint): {missing}")
    return raw_model, mcfg


def train_step(model, tokenizer, micro_batches, optimizer, scaler, cfg, env, lr, patch_t):
    """One optimizer step over `accum` micro-batches: targets, forward, Eq. 5, backward, then the step. Returns
    (engine.optimizer_step's result, {stream: tensor [summed cross-entropy, correct predictions, masked positions]}).
    Each stream's cross-entropy is averaged over its masked positions in the WHOLE step (every micro-batch on every
    rank, counted before the first backward), so the update does not depend on how the batch is split across GPUs or
    accumulation steps (model.objective, BEVT Eq. 5). patch_t: the model's tubelet length."""
    streams = [s for s in ("video", "image") if s in micro_batches[0]]
    masks = [{s: b[s + "_mask"].to(env.device, non_blocking=True) for s in streams} for b in micro_batches]
    per_micro = [bevt_model.target_counts(m.get("video"), m.get("image"), patch_t) for m in masks]
    counts = {s: engine.all_sum(sum(c[s] for c in per_micro), env) for s in streams}  # masked positions of the step
    stats = {s: torch.zeros(3, dtype=torch.float64, device=env.device) for s in streams}
    finite = torch.ones((), dtype=torch.bool, device=env.device)
    for i, (batch, mask) in enumerate(zip(micro_batches, masks)):
        inputs = {}
        for s in streams:
            # targets: BEVT §3 "Tokenizer", the frozen tokenizer's ids of the half-size view (no_grad, fp32 inside)
            inputs[s + "_ids"] = tokenizer.encode(batch[s + "_tok"].to(env.device, non_blocking=True))
            inputs[s] = data.normalize_batch(batch[s].to(env.device, non_blocking=True))  # uint8 -> float, on device
            inputs[s + "_mask"] = mask[s]
        # DDP all-reduces the gradients on the last micro-batch only
        with model.no_sync() if env.ddp and i < len(micro_batches) - 1 else nullcontext():
            with engine.autocast_context(env.device, cfg.dtype):
                out = model(**inputs)  # forward: {stream: (ce_sum, num_correct, num_masked)}
            loss = bevt_model.objective({s: out[s][0] for s in streams}, counts, cfg.lam, env.world)  # BEVT Eq. (5)
            finite &= torch.isfinite(loss.detach())
            scaler.scale(loss).backward()  # backward
        for s in streams:
            stats[s] += torch.stack(out[s]).detach().double()  # (3,)
    return engine.optimizer_step(optimizer, scaler, finite, cfg.clip_grad, env, lr), stats  # step


# BEVT Eq. (3): L_MIM is the image stream's loss, Eq. (4): L_MVM the video stream's
LOSS_NAMES = {"image": "mim", "video": "mvm"}


def summarise(sums):
    """{stream: [summed CE, correct, masked]} -> {"loss_mvm": mean CE, "acc_mvm": accuracy, "masked_mvm": n, ...}."""
    return {f"{name}_{LOSS_NAMES[stream]}": value for stream, (total, correct, n) in sums.items()
            for name, value in (("loss", total / max(n, 1)), ("acc", correct / max(n, 1)), ("masked", int(n)))}


# ----------------------------------------------------------------------------------------------------------------------
# the run


def log_line(row, env, out_dir):
    losses = " ".join(f"{k} {row[k]:.4f}" for k in ("loss_mim", "loss_mvm", "acc_mim", "acc_mvm") if k in row)
    line = (f"step {row['step']}/{row['total']} | epoch {row['epoch']:.2f} | {losses} | lr {row['lr']:.2e} | "
            f"grad {row['grad_norm']:.3f} | {row['clips_per_s']:.1f} clips/s {row['images_per_s']:.1f} img/s | "
            f"data {row['data_share']:.0%} | eta {row['eta_min']:.1f} min")
    line += f" | fp16 skipped {row['skipped_steps']}" if row["skipped_steps"] else ""
    line += f" | {row['bad_samples']} unreadable samples replaced" if row["bad_samples"] else ""
    run.append_log(row, line, env, out_dir)


def main(argv=None):
    cfg, synthetic = build_config(sys.argv[1:] if argv is None else argv)
    if not synthetic and not cfg.tokenizer:
        root = cfg.video_root or cfg.image_root or "FOLDER_OF_YOUR_VIDEOS"
        raise SystemExit(NO_TOKENIZER.format(root=root, img_size=cfg.img_size))
    cfg, env = engine.start_run(cfg)
    run.claim_out_dir(cfg.out_dir, env, resume=cfg.resume)
    if synthetic:
        env.log("no --video-ann/--image-root given: the embedded default (synthetic data, nano model, CPU-sized; "
                "see --help)")
        engine.rank_zero_first(synthetic_set.synthetic_root, env, "the synthetic data set's folder")

    # --- data, tokenizer, model, optimizer; the resume checkpoint first (it replaces --init)
    video_ds, image_ds = build_datasets(cfg)
    tokenizer, tokenizer_path = build_tokenizer(cfg, env)
    resume = run.resume_checkpoint(cfg.out_dir, env) if cfg.resume else None
    raw_model, mcfg = build_model(cfg, env, tokenizer.vocab_size, cfg.init if resume is None else "")
    # official cfg paramwise_cfg: no weight decay for norms and bias tables, everything else (biases too) 0.05
    groups = engine.param_groups(raw_model, cfg.weight_decay, engine.NO_DECAY_KEYS)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
    scaler = engine.make_scaler(env, cfg.dtype)

    # --- schedule in optimizer steps; the epoch is defined by the video set, the image set is cycled
    main_ds, main_bs = (video_ds, cfg.videos_per_gpu) if video_ds is not None else (image_ds, cfg.images_per_gpu)
    engine.same_on_all_ranks(len(main_ds), env, "the number of training samples")
    steps_per_epoch, total_steps, stop_at = data.step_counts(main_ds, main_bs, cfg, env)
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)

    # --- resume
    step, skipped, image_pos = 0, 0, {"epoch": 0, "batch": 0}
    if resume is not None:
        state = run.resume_from(resume, raw_model, optimizer, scaler, cfg, env)
        step, skipped, image_pos = state["step"], state["skipped_steps"], state["image_position"]
    model = torch.compile(raw_model) if cfg.compile else raw_model
    if env.ddp:
        # the image and video stages leave the other stream's patch embed and decoder unused
        model = DDP(model, device_ids=[env.local_rank] if env.device.startswith("cuda") else None,
                    find_unused_parameters=cfg.stage != "joint")

    per_gpu = {k: n for k, n, ds in (("clips", cfg.videos_per_gpu, video_ds), ("images", cfg.images_per_gpu, image_ds))
               if ds is not None}
    per_step = {k: per_gpu.get(k, 0) * cfg.accum * env.world for k in ("clips", "images")}
    env.log(f"stage {cfg.stage} | model {cfg.model} ({sum(p.numel() for p in raw_model.parameters()) / 1e6:.2f}M "
            f"params) | {env.world} process(es) on {env.device} {cfg.dtype} | {steps_per_epoch} steps/epoch x "
            f"{cfg.epochs} epochs = {total_steps} steps")
    env.log("\n".join(engine.batch_report(per_gpu, OFFICIAL_BATCH, cfg, env, synthetic)))

    # BEVT: one video batch and one image batch per iteration, `accum` iterations per optimizer step; the image
    # stream is cycled (official: RepeatDataset + cycle)
    images = data.cycled_batches(image_ds, cfg.images_per_gpu, cfg.num_workers, cfg.seed, env.ddp, image_pos) \
        if cfg.stage == "joint" else None
    progress, last_ckpt = run.Progress(step, env, skipped), resume
    for micro in data.step_batches(main_ds, main_bs, cfg, env, step, steps_per_epoch, stop_at, progress):
        if images is not None:  # joint stage: each micro-batch also gets the next image batch
            micro = [{**b, **progress.next_batch(images)} for b in micro]
        lr = engine.lr_at(progress.step, total_steps, warmup_steps, cfg.lr, cfg.warmup_ratio, cfg.min_lr)
        result, stats = train_step(model, tokenizer, micro, optimizer, scaler, cfg, env, lr, mcfg.patch_size[0])
        if result is None:
            sums = {s: engine.all_sum(v, env).tolist() for s, v in stats.items()}
            raise SystemExit(f"non-finite loss at step {progress.step + 1}: {summarise(sums)}; "
                             f"last good checkpoint: {last_ckpt or 'none written yet'}")
        progress.record(result, stats)
        step = progress.step
        if progress.due(cfg.log_every, stop_at):  # means since the last line
            bad = sum(ds.num_bad for ds in (video_ds, image_ds) if ds is not None)
            row = {"step": step, "total": total_steps, "epoch": step / steps_per_epoch,
                   **summarise(progress.take_window()), "lr": lr, **progress.log_fields(per_step, stop_at),
                   "bad_samples": int(engine.all_sum(torch.tensor(float(bad), device=env.device), env))}
            log_line(row, env, cfg.out_dir)
        if progress.due(cfg.save_every, stop_at):
            last_ckpt = run.save_checkpoint(
                {"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                 "config": asdict(cfg), "model_config": asdict(mcfg), "step": step, "epoch": step // steps_per_epoch,
                 "image_position": dict(image_pos), "skipped_steps": progress.skipped,
                 "tokenizer": tokenizer_path},  # the file the targets came from (demo tools find it here)
                env, cfg.out_dir, step, cfg.keep_last)
        if progress.stop_signal:  # SIGTERM / SIGUSR1 (preemption) or Ctrl-C: saved above, exit for a requeue
            progress.exit_after_signal(last_ckpt)
    env.log(f"done: {step} steps in {(time.time() - progress.t0) / 60:.1f} min; checkpoints in {cfg.out_dir}")


if __name__ == "__main__":
    run.entry_point(main)
