"""BEVT pretraining: the image stage (BEVT-I), the video stage (BEVT-V) and the joint stage (BEVT).

BEVT §3 "Training strategies": first masked image modeling (MIM) on ImageNet, then the video stream is initialised
from it and both streams are trained jointly with L = L_MIM + λ·L_MVM (Eq. 5). §4.1 "Implementation details".
official: configs/recognition/swin/swin_base_patch244_window877_bevt_in1k_k400.py (the joint run whose numbers are the
defaults of TrainConfig), mmaction/core/runner/omnisource_runner.py (one video batch + one image batch per iteration),
mmaction/utils/optimizer.py (gradient accumulation), mmaction/apis/train.py.

    python train.py                                              # embedded default: synthetic data, nano model, CPU
    python train.py --stage tokenizer --image-root imagenet/train    # the small VQ tokenizer for your data
    torchrun --nproc_per_node 8 train.py --stage joint --init image_stage.pt --tokenizer dalle_encoder.pt \
        --video-ann k400/train.csv --video-root k400/train --image-root imagenet/train

One optimizer step = `accum` micro-batches per GPU, each with `videos_per_gpu` clips and `images_per_gpu` images.
The shared machinery (DDP, optimizer groups, schedule, checkpoints, the step loop) is engine.py.
"""
import dataclasses
import hashlib
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import convert
import data
import engine
import model as bevt_model
import synthetic as synthetic_set
import tokenizer as tok
from cli import parse_flags

# ----------------------------------------------------------------------------------------------------------------------
# config


@dataclass
class TrainConfig:
    # BEVT §3 "Training strategies"; "tokenizer": train the small VQ tokenizer on the data flags' frames and stop
    stage: str = field(default="joint", metadata={"choices": ("image", "video", "joint", "tokenizer")})
    model: str = field(default="base", metadata={"choices": tuple(bevt_model.PRESETS)})  # official: Swin-B
    drop_path: float = 0.3  # official cfg: drop_path_rate=0.3 (pretraining)
    grad_checkpoint: bool = False  # recompute each block in backward; official: use_checkpoint=False
    # image stream attention: "official" = the released code's (the 2D shift mask on every block, the shift kept at
    # stage 4; the paper's numbers), "swin" = 2D Swin semantics (model.Stage.forward, docs/differences.md)
    image_attention: str = field(default="official", metadata={"choices": ("official", "swin")})
    # (mmaction/models/backbones/swin_transformer_bevt.py:626, not set by the cfgs)
    init: str = ""  # image-stage checkpoint (ours or the official release) to inflate into the joint stage
    tokenizer: str = ""  # converted DALL-E encoder or VQ .pt (needed with data flags); empty: the synthetic run's VQ
    tokenizer_precision: str = field(default="official", metadata={"choices": ("official", "fp32")})  # official: the
    # DALL-E encoder in fp16 on GPU under apex O1; fp32: real fp32 (no TF32)
    out_dir: str = "runs/pretrain"
    resume: bool = False  # continue from the newest checkpoint in out_dir
    # data: video stream (K400 in the paper) and image stream (ImageNet-1K)
    video_ann: str = ""  # annotation file: K400 CSV or `path label` list, SSv2 JSON, Diving-48 JSON (auto-detected)
    video_root: str = ""
    image_root: str = ""  # ImageNet train folder (class sub-folders), or the root of --image-list paths
    image_list: str = ""  # optional `path label` list
    clip_len: int = 16  # official cfg: SampleFrames(clip_len=16, frame_interval=8)
    frame_interval: int = 8
    img_size: int = 224  # official cfg: RandomCrop(224)
    rescale: tuple = (256, 320)  # official cfg: RandomRescale short side in [256, 320], bicubic
    jitter: float = 0.4  # official cfg: image ColorJitter(0.4, 0.4, 0.4)
    mask_ratio: float = 0.5  # official cfg: 98 of 14x14 masked, tube per-frame ratio 0.5 (BEVT §3 "Mask strategy")
    tube_range: tuple = (0.5, 1.0)  # official cfg: masked_tube_range=(0.5, 1.0); BEVT §3: tube length in [0.5T, T]
    mask_strategy: str = field(default="tube",
                               metadata={"choices": ("tube", "random_3d", "frame_diff", "random_frame")})
    lam: float = 1.0  # BEVT Eq. (5) λ; official: loss weights 1.0 for both streams
    # batch: official videos_per_gpu=8, omni_videos_per_gpu=[8, 64], update_interval=2 -> 4 + 32 per forward, accum 2
    videos_per_gpu: int = 4
    images_per_gpu: int = 32
    accum: int = 2
    # optimisation: official AdamW, CosineAnnealing by iteration, 10 warmup epochs from 0.1 x lr, 150 epochs, clip 3.0
    epochs: int = 150
    warmup_epochs: float = 10.0
    warmup_ratio: float = 0.1  # mmcv default warmup_ratio
    lr: float = 5e-4
    min_lr: float = 0.0
    weight_decay: float = 0.05
    betas: tuple = (0.9, 0.999)
    clip_grad: float = 3.0  # 0 disables
    max_steps: int = 0  # stop after this many optimizer steps (the schedule still spans `epochs`); 0: run all
    # machinery
    dtype: str = field(default="bfloat16", metadata={"choices": ("bfloat16", "float16", "float32")})  # CPU: float32
    compile: bool = False
    num_workers: int = 8
    seed: int = 0  # official README: --seed 0
    log_every: int = 20
    save_every: int = 1000  # optimizer steps; a checkpoint is also written at the end
    keep_last: int = 3


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
    given = parse_flags(TrainConfig, argv, DESCRIPTION, variants={"no-data run": SYNTHETIC_DEFAULTS})
    synthetic = not (given.get("video_ann") or given.get("image_root"))
    base = {**SYNTHETIC_DEFAULTS} if synthetic else {}
    return TrainConfig(**{**base, **given}), synthetic


NO_TOKENIZER = """--tokenizer is needed with real data. BEVT's targets come from the DALL-E encoder:
    python tokenizer.py convert encoder.pkl dalle_encoder.pt     (once; then --tokenizer dalle_encoder.pt)
or train the small VQ tokenizer on your data first (minutes; not the paper's tokenizer):
    python train.py --stage tokenizer {data_flags}"""


# ----------------------------------------------------------------------------------------------------------------------
# data and tokenizer


def data_paths(cfg):
    """(video annotation, video root, image list or root, image root): the flags, or the synthetic set's."""
    if not (cfg.video_ann or cfg.image_root):  # the embedded default
        paths = synthetic_set.synthetic_paths(synthetic_set.synthetic_root())
        return paths["k400_train_csv"], paths["mp4_root"], paths["images_train"], paths["images_train"]
    return cfg.video_ann, cfg.video_root, cfg.image_list or cfg.image_root, cfg.image_root


def build_datasets(cfg):
    """(video dataset or None, image dataset or None). The annotation format is recognised from the file
    (annotations.read_annotations: K400 CSV, SSv2 JSON, Diving-48 JSON, `path label`)."""
    video_ann, video_root, image_ann, image_root = data_paths(cfg)
    video_ds = image_ds = None
    if cfg.stage in ("video", "joint"):
        if not video_ann:
            raise SystemExit(f"--stage {cfg.stage} needs --video-ann and --video-root")
        records, _ = engine.read_dataset(video_ann, video_root, "--video-ann/--video-root")
        video_ds = data.PretrainVideoDataset(
            records, clip_len=cfg.clip_len, frame_interval=cfg.frame_interval, crop=cfg.img_size, rescale=cfg.rescale,
            mask_strategy=cfg.mask_strategy, tube_range=cfg.tube_range, mask_ratio=cfg.mask_ratio,
            patch_t=bevt_model.PRESETS[cfg.model].patch_size[0], seed=cfg.seed)
    if cfg.stage in ("image", "joint"):
        if not image_root:
            raise SystemExit(f"--stage {cfg.stage} needs --image-root")
        records, _ = engine.read_dataset(image_ann, image_root, "--image-root/--image-list")
        image_ds = data.PretrainImageDataset(records, crop=cfg.img_size, rescale=cfg.rescale, jitter=cfg.jitter,
                                             mask_ratio=cfg.mask_ratio, seed=cfg.seed)
    return video_ds, image_ds


def build_tokenizer(cfg, env):
    """(the frozen target tokenizer on this rank's device, the resolved path of its file) (BEVT §3 "Tokenizer"):
    --tokenizer, or (the synthetic run only) the small VQ for its views, trained once by rank 0 and cached per data
    folder, view size and engine.SMALL_VQ_VERSION (the code that made it)."""
    path = cfg.tokenizer
    if not path:
        _, video_root, _, image_root = data_paths(cfg)
        root = str(Path(video_root or image_root).resolve())
        size = cfg.img_size // 2  # BEVT §3 "Tokenizer": frames downsampled by 1/2 (the dataset's tokenizer view)
        key = hashlib.sha1(root.encode()).hexdigest()[:10]
        path = synthetic_set.CACHE / f"vq_tokenizer_{size}_v{engine.SMALL_VQ_VERSION}_{key}.pt"
        engine.ensure_small_vq(root, size, path, env)
    size = Path(path).stat().st_size if Path(path).is_file() else None
    engine.same_on_all_ranks((str(path), size), env, "the tokenizer file (path, bytes)")
    if size is None:
        raise SystemExit(f"--tokenizer {path}: no such file")
    try:
        return tok.load_tokenizer(path, env.device, precision=cfg.tokenizer_precision), str(Path(path).resolve())
    except ValueError as e:
        raise SystemExit(f"--tokenizer: {e}") from None


def train_tokenizer_stage(cfg, env):
    """--stage tokenizer: the small VQ trained on the frames of the run's data (video root, else image root)."""
    _, video_root, _, image_root = data_paths(cfg)
    size = cfg.img_size // 2
    path = Path(cfg.out_dir) / f"vq_tokenizer_{size}.pt"
    if path.exists():
        env.log(f"{path} exists, not retrained (delete it to retrain)")
    env.log(f"training the small VQ tokenizer on frames of {video_root or image_root} ({size}-px tokenizer views)")
    engine.ensure_small_vq(video_root or image_root, size, path, env)
    env.log(f"tokenizer: {path}; pass it as --tokenizer {path} (with --img-size {cfg.img_size})")


# ----------------------------------------------------------------------------------------------------------------------
# model (one optimizer step is engine.pretrain_step)


def build_model(cfg, env, vocab_size, init):
    mcfg = dataclasses.replace(bevt_model.PRESETS[cfg.model], drop_path_rate=cfg.drop_path, vocab_size=vocab_size,
                               grad_checkpoint=cfg.grad_checkpoint, image_attention=cfg.image_attention)
    raw_model = bevt_model.BEVT(mcfg).to(env.device)
    if init:
        # BEVT §3 "Training strategies": the image stream's weights initialise the joint model (3D inflation)
        inflated = convert.inflate_image_checkpoint(engine.load_checkpoint(init), mcfg)
        missing, unexpected = raw_model.load_state_dict(inflated, strict=False)
        if unexpected:
            raise SystemExit(f"--init {init}: keys that are not in the model: {unexpected}")
        env.log(f"initialised from {init}; fresh (not in the image checkpoint): {missing}")
    return raw_model, mcfg


# ----------------------------------------------------------------------------------------------------------------------
# the run


def log_line(row, env, out_dir):
    losses = " ".join(f"{k} {row[k]:.4f}" for k in ("loss_mim", "loss_mvm", "acc_mim", "acc_mvm") if k in row)
    line = (f"step {row['step']}/{row['total']} | epoch {row['epoch']:.2f} | {losses} | lr {row['lr']:.2e} | "
            f"grad {row['grad_norm']:.3f} | {row['clips_per_s']:.1f} clips/s {row['images_per_s']:.1f} img/s | "
            f"data {row['data_share']:.0%} | eta {row['eta_min']:.1f} min")
    line += f" | fp16 skipped {row['skipped_steps']}" if row["skipped_steps"] else ""
    line += f" | {row['bad_samples']} unreadable samples replaced" if row["bad_samples"] else ""
    engine.append_log(row, line, env, out_dir)


def main(argv=None):
    cfg, synthetic = build_config(sys.argv[1:] if argv is None else argv)
    if not synthetic and not cfg.tokenizer and cfg.stage != "tokenizer":
        flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in asdict(cfg).items()
                         if k in ("video_ann", "video_root", "image_root", "image_list") and v)
        raise SystemExit(NO_TOKENIZER.format(data_flags=flags))
    cfg, env = engine.start_run(cfg, synthetic, "--video-ann/--image-root")
    if cfg.stage == "tokenizer":
        return train_tokenizer_stage(cfg, env)

    # --- data, tokenizer, model, optimizer; the resume checkpoint first (it replaces --init)
    video_ds, image_ds = build_datasets(cfg)
    tokenizer, tokenizer_path = build_tokenizer(cfg, env)
    resume = engine.resume_checkpoint(cfg.out_dir, env) if cfg.resume else None
    raw_model, mcfg = build_model(cfg, env, tokenizer.vocab_size, cfg.init if resume is None else "")
    # official cfg paramwise_cfg: no weight decay for norms and bias tables, everything else (biases too) 0.05
    groups = engine.param_groups(raw_model, cfg.weight_decay, engine.NO_DECAY_KEYS)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
    scaler = engine.make_scaler(env, cfg.dtype)

    # --- schedule in optimizer steps; the epoch is defined by the video set, the image set is cycled
    main_ds, main_bs = (video_ds, cfg.videos_per_gpu) if video_ds is not None else (image_ds, cfg.images_per_gpu)
    steps_per_epoch, total_steps, stop_at = engine.step_counts(main_ds, main_bs, cfg, env)
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)

    # --- resume
    step, skipped, image_pos = 0, 0, {"epoch": 0, "batch": 0}
    if resume is not None:
        state = engine.resume_from(resume, raw_model, optimizer, scaler, cfg, env)
        step, skipped, image_pos = state["step"], state["skipped_steps"], state["image_position"]
    model = torch.compile(raw_model) if cfg.compile else raw_model
    if env.ddp:
        # the image and video stages leave the other stream's patch embed and decoder unused; the joint stage uses
        # every parameter in every step
        model = DDP(model, device_ids=[env.local_rank] if env.device.startswith("cuda") else None,
                    find_unused_parameters=cfg.stage != "joint")

    per_gpu = {k: n for k, n, ds in (("clips", cfg.videos_per_gpu, video_ds), ("images", cfg.images_per_gpu, image_ds))
               if ds is not None}
    per_step = {k: n * cfg.accum * env.world for k, n in per_gpu.items()}
    env.log(f"stage {cfg.stage} | model {cfg.model} ({sum(p.numel() for p in raw_model.parameters()) / 1e6:.2f}M "
            f"params) | {env.world} process(es) on {env.device} {cfg.dtype} | {steps_per_epoch} steps/epoch x "
            f"{cfg.epochs} epochs = {total_steps} steps")
    env.log("\n".join(engine.batch_report(per_gpu, OFFICIAL_BATCH, cfg, env, synthetic)))

    # BEVT: one video batch and one image batch per iteration, `accum` iterations per optimizer step; the image
    # stream is cycled (official: RepeatDataset + cycle)
    images = data.cycled_batches(image_ds, cfg.images_per_gpu, cfg.num_workers, cfg.seed, env.ddp, image_pos) \
        if cfg.stage == "joint" else None
    keys = [k for k, ds in (("mvm", video_ds), ("mim", image_ds)) if ds is not None]
    progress, last_ckpt = engine.Progress(step, (len(keys), 3), env, skipped), resume
    for micro in engine.step_batches(main_ds, main_bs, cfg, env, step, steps_per_epoch, stop_at, progress):
        if images is not None:  # joint stage: each micro-batch also gets the next image batch
            micro = [{**b, **progress.next_batch(images)} for b in micro]
        lr = engine.lr_at(progress.step, total_steps, warmup_steps, cfg.lr, cfg.warmup_ratio, cfg.min_lr)
        result, stats = engine.pretrain_step(model, tokenizer, micro, optimizer, scaler, cfg, env, lr,
                                             mcfg.patch_size[0])
        if result is None:
            sums = engine.all_sum(stats, env).tolist()
            raise SystemExit(f"non-finite loss at step {progress.step + 1}: {engine.summarise(sums, keys)}; "
                             f"last good checkpoint: {last_ckpt or 'none written yet'}")
        progress.record(result, stats)
        step = progress.step
        if step % cfg.log_every == 0 or step == stop_at:  # means over the steps since the last line
            rate = progress.steps_per_s()
            bad = sum(ds.num_bad for ds in (video_ds, image_ds) if ds is not None)
            row = {"step": step, "total": total_steps, "epoch": step / steps_per_epoch,
                   **engine.summarise(progress.take_window(), keys), "lr": lr, "grad_norm": progress.grad_norm,
                   "clips_per_s": rate * per_step.get("clips", 0), "images_per_s": rate * per_step.get("images", 0),
                   "eta_min": (stop_at - step) / max(rate, 1e-9) / 60, "data_share": progress.take_data_share(),
                   "skipped_steps": progress.skipped,
                   "bad_samples": int(engine.all_sum(torch.tensor(float(bad), device=env.device), env))}
            log_line(row, env, cfg.out_dir)
        if step % cfg.save_every == 0 or step == stop_at:
            last_ckpt = engine.save_checkpoint(
                {"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                 "config": asdict(cfg), "model_config": asdict(mcfg), "step": step, "epoch": step // steps_per_epoch,
                 "image_position": dict(image_pos), "skipped_steps": progress.skipped,
                 "tokenizer": tokenizer_path},  # the file the targets came from (demo tools find it here)
                env, cfg.out_dir, step, cfg.keep_last)
    env.log(f"done: {step} steps in {(time.time() - progress.t0) / 60:.1f} min; checkpoints in {cfg.out_dir}")
    if env.ddp:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
