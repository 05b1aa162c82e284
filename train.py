"""BEVT pretraining: the image stage (BEVT-I), the video stage (BEVT-V) and the joint stage (BEVT).

BEVT §3 "Training strategies": first masked image modeling (MIM) on ImageNet, then the video stream is initialised
from it and both streams are trained jointly with L = L_MIM + λ·L_MVM (Eq. 5). §4.1 "Implementation details".
official: configs/recognition/swin/swin_base_patch244_window877_bevt_in1k_k400.py (the joint run whose numbers are the
defaults of TrainConfig), mmaction/core/runner/omnisource_runner.py (one video batch + one image batch per iteration),
mmaction/utils/optimizer.py (gradient accumulation), mmaction/apis/train.py.

    python train.py                                              # embedded default: synthetic data, nano model, CPU
    torchrun --nproc_per_node 8 train.py --stage joint --init image_stage.pt \
        --video-ann k400/train.csv --video-root k400/train --image-root imagenet/train

One optimizer step = `accum` micro-batches per GPU, each with `videos_per_gpu` clips and `images_per_gpu` images.
finetune.py imports this file's machinery: DDP set-up, optimizer groups, the lr schedule, checkpoints, step loop.
"""
import ctypes
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import data
import model as bevt_model
import synthetic as synthetic_set
import tokenizer as tok
from cli import parse_flags

# ----------------------------------------------------------------------------------------------------------------------
# config


@dataclass
class TrainConfig:
    # BEVT §3 "Training strategies"
    stage: str = field(default="joint", metadata={"choices": ("image", "video", "joint")})
    model: str = field(default="base", metadata={"choices": tuple(bevt_model.PRESETS)})  # official: Swin-B
    drop_path: float = 0.3  # official cfg: drop_path_rate=0.3 (pretraining)
    init: str = ""  # image-stage checkpoint (ours or the official release) to inflate into the joint stage (spec §8)
    tokenizer: str = ""  # converted DALL-E encoder or VQ tokenizer .pt; empty: the default VQ (trained on first use)
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


# `python train.py` with no data flags, the embedded default: a joint run on the synthetic set (generated on first
# use) with the nano model and the small VQ tokenizer, a few minutes on a 2-core CPU. Flags still override.
SYNTHETIC_DEFAULTS = dict(
    model="nano", drop_path=0.0, out_dir="runs/synthetic_joint", img_size=128, rescale=(146, 183), clip_len=8,
    frame_interval=2, videos_per_gpu=4, images_per_gpu=8, accum=1, epochs=8, warmup_epochs=1.0, lr=1e-3,
    num_workers=2, log_every=10, save_every=200, dtype="float32",
)


# ----------------------------------------------------------------------------------------------------------------------
# distributed set-up (torchrun environment variables only)


@dataclass
class Dist:
    ddp: bool
    rank: int
    local_rank: int
    world: int
    device: str

    @property
    def master(self):
        return self.rank == 0

    def log(self, *args):  # print on the master only (STYLE rule 19)
        if self.master:
            print(*args)


def setup_distributed():
    cuda = torch.cuda.is_available()
    if int(os.environ.get("RANK", -1)) == -1:
        return Dist(False, 0, 0, 1, "cuda" if cuda else "cpu")
    rank, local_rank, world = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(True, rank, local_rank, world, f"cuda:{local_rank}" if cuda else "cpu")


def autocast_context(device, dtype):
    """bf16/fp16 autocast on GPU; fp32 on CPU (nanoGPT train.py:112)."""
    if device.startswith("cpu") or dtype == "float32":
        return nullcontext()
    return torch.autocast("cuda", dtype=getattr(torch, dtype))


def keep_freed_memory():
    """Let glibc keep freed memory for reuse, not unmap and re-map (zero-filled) a CPU step's activations every step:
    ~100k page faults, ~6 % of a tiny 16x224 encoder step (README "Speed"). Blocks up to 32 MiB (glibc's cap) then
    come from the heap, trimmed only above 2 GiB free, as with jemalloc or tcmalloc (PyTorch CPU tuning guide).
    A no-op where glibc is absent."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 32 << 20)                              # M_MMAP_THRESHOLD
        libc.mallopt(-1, 2 ** 31 - 1)                           # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def resolve_dtype(device, dtype):
    if device.startswith("cpu"):
        return "float32"
    if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        return "float16"
    return dtype


def all_sum(t, env):
    if env.ddp:
        dist.all_reduce(t)
    return t


def start_run(cfg, synthetic, data_flags):
    """The start shared with finetune.py: malloc tuning, DDP, the device's dtype, per-rank seed, out_dir and, for the
    embedded default, the synthetic set (generated once, by the master, before the other ranks read it)."""
    keep_freed_memory()
    env = setup_distributed()
    cfg = dataclasses.replace(cfg, dtype=resolve_dtype(env.device, cfg.dtype))
    torch.manual_seed(cfg.seed + env.rank)  # STYLE rule 16: drop path differs per rank
    if env.master:
        Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
        if synthetic:
            print(f"no {data_flags} given: embedded default (synthetic data, nano model, CPU-sized)")
            synthetic_set.synthetic_root()
    if env.ddp:
        dist.barrier()
    return cfg, env


# ----------------------------------------------------------------------------------------------------------------------
# optimizer groups and learning-rate schedule


def param_groups(module, weight_decay, lr_scale=lambda name: 1.0):
    """AdamW groups keyed by (weight decay, lr multiplier); `lr_scale(name)` gives layer-wise decay in finetune.py.
    Norm weights, biases and relative-position bias tables are not decayed (official: paramwise_cfg norm and
    relative_position_bias_table decay_mult=0; biases follow BEiT/MAE here, see README 'Differences')."""
    groups = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        wd = 0.0 if p.ndim <= 1 or "relative_position_bias_table" in name else weight_decay
        scale = lr_scale(name)
        g = groups.setdefault((wd, scale), {"params": [], "names": [], "weight_decay": wd, "lr_scale": scale})
        g["params"].append(p)
        g["names"].append(name)
    return list(groups.values())


def lr_at(step, total_steps, warmup_steps, base_lr, warmup_ratio=0.1, min_lr=0.0, cosine_every=1):
    """Cosine annealing to `min_lr` over `total_steps`, with a linear warmup that starts at warmup_ratio x the cosine
    value (official: mmcv CosineAnnealingLrUpdaterHook, by_epoch=False, warmup='linear', warmup_ratio=0.1). The cosine
    value changes every `cosine_every` steps (finetune.py: once per epoch, mmcv by_epoch=True)."""
    progress = min((step - step % cosine_every) / max(total_steps, 1), 1.0)
    lr = min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if step < warmup_steps:
        lr *= 1.0 - (1.0 - warmup_ratio) * (1.0 - step / warmup_steps)
    return lr


# ----------------------------------------------------------------------------------------------------------------------
# checkpoints: plain dicts, written atomically on the master, read with weights_only=True


def save_checkpoint(state, env, out_dir, step, keep_last):
    """A collective: every rank's torch RNG state (drop path) is gathered into `state`. The master writes
    out_dir/ckpt_{step}.pt and keeps the newest `keep_last`. Returns the path."""
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    rngs = [rng]
    if env.ddp:
        rngs = [None] * env.world
        dist.all_gather_object(rngs, rng)
    state = {**state, "rng": rngs}
    path = Path(out_dir) / f"ckpt_{step:08d}.pt"
    if env.master:
        tmp = path.with_suffix(".pt.tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)  # atomic: a crash mid-write never leaves a truncated checkpoint under the real name
        for old in sorted(Path(out_dir).glob("ckpt_*.pt"))[:-keep_last]:
            old.unlink()
        print(f"saved {path}")
    return path


def latest_checkpoint(out_dir):
    return max(Path(out_dir).glob("ckpt_*.pt"), default=None)


def load_checkpoint(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SystemExit(f"cannot load checkpoint {path}: {e}") from e


def load_model_state(module, state, path):
    """strict load; a wrong key set fails naming the file and the keys."""
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SystemExit(f"checkpoint {path} does not match the model:\n  missing keys: {missing}\n"
                         f"  unexpected keys: {unexpected}")


def restore_rng(states, env):
    if len(states) != env.world:
        print(f"note: checkpoint has RNG states for {len(states)} ranks, this run has {env.world}; reseeding")
        return
    torch.set_rng_state(states[env.rank]["cpu"])
    if torch.cuda.is_available() and "cuda" in states[env.rank]:
        torch.cuda.set_rng_state(states[env.rank]["cuda"])


def append_log(row, line, env, out_dir):
    """Master only: prints `line` and appends `row` to out_dir/log.jsonl."""
    if env.master:
        print(line)
        with open(Path(out_dir) / "log.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")


# ----------------------------------------------------------------------------------------------------------------------
# data


def read_dataset(annotation, root, flags):
    """data.read_annotations with its errors (missing file or root, malformed line, empty set) as a clean exit
    that names the flags; shared with finetune.py."""
    try:
        return data.read_annotations(annotation, root)
    except (OSError, ValueError) as e:
        raise SystemExit(f"{flags}: {e}") from None


def step_counts(dataset, batch_size, cfg, env):
    """(optimizer steps per epoch, steps of the whole schedule, the step this run stops at: --max-steps)."""
    steps_per_epoch = len(dataset) // env.world // batch_size // cfg.accum
    if steps_per_epoch == 0:
        raise SystemExit(f"dataset of {len(dataset)} samples is smaller than one step "
                         f"({env.world} GPUs x {batch_size} x accum {cfg.accum})")
    total_steps = cfg.epochs * steps_per_epoch
    return steps_per_epoch, total_steps, min(total_steps, cfg.max_steps) if cfg.max_steps > 0 else total_steps


def step_batches(dataset, batch_size, cfg, env, step, steps_per_epoch, stop_at):
    """Yields the `accum` micro-batches of each optimizer step from `step` to `stop_at`; a resumed run starts its
    epoch's loader after the batches already used."""
    while step < stop_at:
        epoch, in_epoch = divmod(step, steps_per_epoch)
        it = iter(data.make_loader(dataset, batch_size, True, cfg.num_workers, cfg.seed, env.ddp, epoch,
                                   in_epoch * cfg.accum))
        end = min(stop_at, (epoch + 1) * steps_per_epoch)
        for _ in range(step, end):
            yield [next(it) for _ in range(cfg.accum)]
        step = end


def build_datasets(cfg):
    """(video dataset or None, image dataset or None, data root used for the default tokenizer). The annotation
    format is recognised from the file (data.read_annotations: K400 CSV, SSv2 JSON, Diving-48 JSON, `path label`)."""
    if not (cfg.video_ann or cfg.image_root):  # the embedded default
        paths = synthetic_set.synthetic_paths(synthetic_set.synthetic_root())
        video_ann, video_root = paths["k400_train_csv"], paths["mp4_root"]
        image_ann, image_root = paths["images_train"], paths["images_train"]
    else:
        video_ann, video_root = cfg.video_ann, cfg.video_root
        image_ann, image_root = cfg.image_list or cfg.image_root, cfg.image_root
    video_ds = image_ds = None
    if cfg.stage in ("video", "joint"):
        if not video_ann:
            raise SystemExit(f"--stage {cfg.stage} needs --video-ann and --video-root")
        records, _ = read_dataset(video_ann, video_root, "--video-ann/--video-root")
        video_ds = data.PretrainVideoDataset(
            records, clip_len=cfg.clip_len, frame_interval=cfg.frame_interval, crop=cfg.img_size, rescale=cfg.rescale,
            mask_strategy=cfg.mask_strategy, tube_range=cfg.tube_range, mask_ratio=cfg.mask_ratio,
            patch_t=bevt_model.PRESETS[cfg.model].patch_size[0], seed=cfg.seed)
    if cfg.stage in ("image", "joint"):
        if not image_root:
            raise SystemExit(f"--stage {cfg.stage} needs --image-root")
        records, _ = read_dataset(image_ann, image_root, "--image-root/--image-list")
        image_ds = data.PretrainImageDataset(records, crop=cfg.img_size, rescale=cfg.rescale, jitter=cfg.jitter,
                                             mask_ratio=cfg.mask_ratio, seed=cfg.seed)
    return video_ds, image_ds, (video_root or image_root)


# ----------------------------------------------------------------------------------------------------------------------
# one optimizer step

LOSS_KEY = {"video": "mvm", "image": "mim"}  # the model's loss and accuracy names per stream


def masked_targets(batch, key):
    """Number of loss positions of one micro-batch: masked tokens on the target grid (video: each temporal token's
    mask covers its frames, spec §2 output_position_masks)."""
    mask = batch[key + "_mask"]
    frames_per_token = batch["video"].shape[2] // mask.shape[1] if key == "video" else 1
    return mask.sum() * frames_per_token


def train_step(model, tokenizer, micro_batches, optimizer, scaler, cfg, env, lr):
    """Forward/backward over `accum` micro-batches, then one optimizer step. Returns (optimizer_step's result, stats).
    Loss normalisation: each stream's cross-entropy is averaged over ALL masked tokens of the optimizer step (every
    micro-batch on every rank), so the update does not depend on how the batch is split across GPUs or accumulation
    steps (BEVT Eq. 3-5 with M_I, M_V = the masked positions of the step's batch). official: mean per GPU per
    micro-batch, which weights samples by their micro-batch's mask count (README 'Differences')."""
    streams = [s for s in ("video", "image") if s in micro_batches[0]]
    counts = torch.tensor([float(sum(masked_targets(b, s) for b in micro_batches)) for s in streams],
                          dtype=torch.float64, device=env.device)
    # (num_streams,) masked targets of the whole step; clamped so a step without any masked token adds zero loss
    counts = all_sum(counts, env).clamp(min=1)
    weight = {s: (cfg.lam if s == "video" else 1.0) for s in streams}  # Eq. (5): L = L_MIM + λ L_MVM
    stats = torch.zeros(len(streams), 3, dtype=torch.float64, device=env.device)  # per stream: sum CE, correct, n
    finite = torch.ones((), dtype=torch.bool, device=env.device)
    for i, batch in enumerate(micro_batches):
        inputs = {}
        for s in streams:
            inputs[s] = batch[s].to(env.device, non_blocking=True)
            # BEVT §3 "Tokenizer": targets from the frozen tokenizer, no_grad and fp32 inside encode (STYLE rule 22)
            inputs[s + "_ids"] = tokenizer.encode(batch[s + "_tok"].to(env.device))
            inputs[s + "_mask"] = batch[s + "_mask"].to(env.device, non_blocking=True)
        # DDP all-reduces the gradients on the last micro-batch only
        with model.no_sync() if env.ddp and i < len(micro_batches) - 1 else nullcontext():
            with autocast_context(env.device, cfg.dtype):
                out = model(**inputs, lam=1.0)
            loss = 0.0
            for j, s in enumerate(streams):
                ce, acc = out["loss_" + LOSS_KEY[s]], out["acc_" + LOSS_KEY[s]]
                n = masked_targets(batch, s).to(env.device, torch.float64)
                # mean over this micro-batch's masked tokens -> its share of the step mean; x world because DDP
                # averages gradients over ranks
                loss = loss + ce * (weight[s] * n / counts[j] * env.world).float()
                stats[j] += torch.stack([ce.detach().double() * n, acc.detach().double() * n, n])
            finite &= torch.isfinite(loss.detach())
            scaler.scale(loss).backward()
    return optimizer_step(optimizer, scaler, finite, cfg.clip_grad, env, lr), stats


def optimizer_step(optimizer, scaler, finite, clip_grad, env, lr):
    """The end of every step, shared with finetune.py: a non-finite loss on any rank (`finite` False) stops the run
    (returns None; fp16: the GradScaler skips such a step instead, and it is counted), else set the lr (x each group's
    lr_scale), unscale, clip, step. Returns (grad norm, 1 if the fp16 scaler skipped the step else 0)."""
    if all_sum((~finite).float(), env).item() > 0 and not scaler.is_enabled():
        optimizer.zero_grad(set_to_none=True)
        return None
    for g in optimizer.param_groups:
        g["lr"] = lr * g["lr_scale"]
    scaler.unscale_(optimizer)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, clip_grad if clip_grad > 0 else float("inf"))
    scale_before = scaler.get_scale()  # 1.0 when the scaler is disabled (not fp16)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return float(grad_norm), int(scaler.get_scale() < scale_before)


def summarise(stats, streams, env):
    out = {}
    for s, (total, correct, n) in zip(streams, all_sum(stats.to(env.device), env).tolist()):
        out["loss_" + LOSS_KEY[s]], out["acc_" + LOSS_KEY[s]] = total / max(n, 1), correct / max(n, 1)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# the run


def build_config(argv):
    given = parse_flags(TrainConfig, argv, __doc__.split("\n")[0])
    synthetic = not (given.get("video_ann") or given.get("image_root"))
    base = {**SYNTHETIC_DEFAULTS} if synthetic else {}
    return TrainConfig(**{**base, **given}), synthetic


def build_tokenizer(path, env, data_root, size):
    """The frozen target tokenizer on this rank's device (BEVT §3 "Tokenizer"). Without `path`: the default small VQ
    for `size`-px views, trained once on `data_root` by the master (tokenizer.default_tokenizer)."""
    if not path:  # cached per dataset and view size: a tokenizer trained on other data is never picked up
        key = hashlib.sha1(str(Path(data_root).resolve()).encode()).hexdigest()[:10]
        path = synthetic_set.CACHE / f"vq_tokenizer_{size}_{key}.pt"
        if env.master:
            tok.default_tokenizer(path, data_root, size)
        if env.ddp:
            dist.barrier()
    return tok.load_tokenizer(path, env.device)


def build_model(cfg, env, vocab_size):
    mcfg = dataclasses.replace(bevt_model.PRESETS[cfg.model], drop_path_rate=cfg.drop_path, vocab_size=vocab_size)
    raw_model = bevt_model.BEVT(mcfg).to(env.device)
    if cfg.init and not cfg.resume:
        # BEVT §3 "Training strategies": the image stream's weights initialise the joint model (spec §8 inflation)
        inflated = bevt_model.inflate_image_checkpoint(load_checkpoint(cfg.init), mcfg)
        missing, unexpected = raw_model.load_state_dict(inflated, strict=False)
        if unexpected:
            raise SystemExit(f"--init {cfg.init}: keys that are not in the model: {unexpected}")
        env.log(f"initialised from {cfg.init}; fresh (not in the image checkpoint): {missing}")
    return raw_model, mcfg


def log_line(row, env, out_dir):
    losses = " ".join(f"{k} {row[k]:.4f}" for k in ("loss_mim", "loss_mvm", "acc_mim", "acc_mvm") if k in row)
    line = (f"step {row['step']}/{row['total']} | epoch {row['epoch']:.2f} | {losses} | lr {row['lr']:.2e} | "
            f"grad {row['grad_norm']:.3f} | {row['clips_per_s']:.1f} clips/s {row['images_per_s']:.1f} img/s | "
            f"eta {row['eta_min']:.1f} min")
    line += f" | fp16 skipped {row['skipped_steps']}" if row["skipped_steps"] else ""
    line += f" | {row['bad_samples']} unreadable samples replaced" if row["bad_samples"] else ""
    append_log(row, line, env, out_dir)


def main(argv=None):
    cfg, synthetic = build_config(sys.argv[1:] if argv is None else argv)
    cfg, env = start_run(cfg, synthetic, "--video-ann/--image-root")

    # --- data, tokenizer, model, optimizer
    video_ds, image_ds, data_root = build_datasets(cfg)
    # BEVT §3 "Tokenizer": frames are downsampled by 1/2 before the tokenizer (done inside tokenizer.encode)
    tokenizer = build_tokenizer(cfg.tokenizer, env, data_root, cfg.img_size // 2)
    raw_model, mcfg = build_model(cfg, env, tokenizer.vocab_size)
    optimizer = torch.optim.AdamW(param_groups(raw_model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
    scaler = torch.amp.GradScaler("cuda", enabled=(cfg.dtype == "float16"))

    # --- schedule in optimizer steps; the epoch is defined by the video set (spec §5), the image set is cycled
    main_ds, main_bs = (video_ds, cfg.videos_per_gpu) if video_ds is not None else (image_ds, cfg.images_per_gpu)
    steps_per_epoch, total_steps, stop_at = step_counts(main_ds, main_bs, cfg, env)
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)

    # --- resume
    step, skipped, last_ckpt, image_pos = 0, 0, None, {"epoch": 0, "batch": 0}
    if cfg.resume and (path := latest_checkpoint(cfg.out_dir)) is not None:
        state = load_checkpoint(path)
        load_model_state(raw_model, state["model"], path)
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step, skipped, image_pos = state["step"], state["skipped_steps"], state["image_position"]
        restore_rng(state["rng"], env)
        last_ckpt = path
        env.log(f"resumed from {path} at step {step}")
    model = torch.compile(raw_model) if cfg.compile else raw_model
    if env.ddp:
        # the image and video stages leave the other stream's patch embed and decoder unused (STYLE rule 20);
        # the joint stage uses every parameter in every step
        model = DDP(model, device_ids=[env.local_rank] if env.device.startswith("cuda") else None,
                    find_unused_parameters=cfg.stage != "joint")

    streams = [s for s, ds in (("video", video_ds), ("image", image_ds)) if ds is not None]
    clips_per_step = cfg.videos_per_gpu * cfg.accum * env.world if video_ds is not None else 0
    images_per_step = cfg.images_per_gpu * cfg.accum * env.world if image_ds is not None else 0
    env.log(f"stage {cfg.stage} | model {cfg.model} ({sum(p.numel() for p in raw_model.parameters()) / 1e6:.2f}M "
            f"params) | {env.world} process(es) on {env.device} {cfg.dtype} | {steps_per_epoch} steps/epoch x "
            f"{cfg.epochs} epochs = {total_steps} steps | per step: {clips_per_step} clips + {images_per_step} images")

    # BEVT: one video batch and one image batch per iteration, `accum` iterations per optimizer step; the image
    # stream is cycled (spec §5)
    images = data.cycled_batches(image_ds, cfg.images_per_gpu, cfg.num_workers, cfg.seed, env.ddp, image_pos) \
        if cfg.stage == "joint" else None
    t0, first_step = time.time(), step
    for micro in step_batches(main_ds, main_bs, cfg, env, step, steps_per_epoch, stop_at):
        if images is not None:  # joint stage: each micro-batch also gets the next image batch
            micro = [{**b, **next(images)} for b in micro]
        lr = lr_at(step, total_steps, warmup_steps, cfg.lr, cfg.warmup_ratio, cfg.min_lr)
        result, stats = train_step(model, tokenizer, micro, optimizer, scaler, cfg, env, lr)
        if result is None:
            raise SystemExit(f"non-finite loss at step {step + 1}: {summarise(stats, streams, env)}; "
                             f"last good checkpoint: {last_ckpt or 'none written yet'}")
        grad_norm, skipped_now = result
        step, skipped = step + 1, skipped + skipped_now
        if step % cfg.log_every == 0 or step == stop_at:
            rate = (step - first_step) / max(time.time() - t0, 1e-9)  # optimizer steps per second
            bad = sum(ds.num_bad for ds in (video_ds, image_ds) if ds is not None)
            row = {"step": step, "total": total_steps, "epoch": step / steps_per_epoch,
                   **summarise(stats, streams, env), "lr": lr, "grad_norm": grad_norm,
                   "clips_per_s": rate * clips_per_step, "images_per_s": rate * images_per_step,
                   "eta_min": (stop_at - step) / max(rate, 1e-9) / 60, "skipped_steps": skipped,
                   "bad_samples": int(all_sum(torch.tensor(float(bad), device=env.device), env))}
            log_line(row, env, cfg.out_dir)
        if step % cfg.save_every == 0 or step == stop_at:
            last_ckpt = save_checkpoint(
                {"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                 "config": asdict(cfg), "model_config": asdict(mcfg), "step": step, "epoch": step // steps_per_epoch,
                 "image_position": dict(image_pos), "skipped_steps": skipped}, env, cfg.out_dir, step, cfg.keep_last)
    env.log(f"done: {step} steps in {(time.time() - t0) / 60:.1f} min; checkpoints in {cfg.out_dir}")
    if env.ddp:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
