"""Speed and memory benchmark of this BEVT implementation, and the prepared GPU check (--check).

BEVT §5 names the cost of pretraining as its limitation, so the speed of every hot path is measured here, on the
machine at hand, never claimed. One run prints one table and writes it as JSON to --out:
  1. encoder forward+backward, ours (model.VideoClassifier's encoder) against torchvision's SwinTransformer3d (what
     swin3d_t/s/b build) with IDENTICAL weights (convert.to_torchvision) and input: interleaved A/B, median of --n,
     the speed-up, max |diff| of the final normed features (fp32), and each side's peak memory;
  2. FLOPs of that step (torch.utils.flop_counter) and the achieved FLOP/s as a fraction of a measured peak: a square
     matmul in the same dtype on the same device, with the threads torch uses;
  3. one joint pretraining step (joint_step: train.py's step, the same calls) on synthetic tensors (no data loading)
     in clips/s and images/s, and where its time goes (synchronised timers around the tokenizer, the model's forward
     and the optimizer's step inside that same function; the rest is backward, clipping and the input copies);
  4. tokenizer throughput (frames/s) of the full-size DALL-E encoder and the default small VQ tokenizer;
  5. data pipeline throughput (clips/s per worker, in-process) on K400-like H.264 files, on their rawframes and on
     their prepared copies (tools/prepare.py), decode-only rates (ours, decord's if installed), storage per hour;
  6. (--memory-swin-b true) the peak memory of one Swin-B encoder forward+backward, batch 1, with and without
     --grad-checkpoint (a fresh process each).

    python -m tools.bench                                   # tiny preset, 1 x 3 x 16 x 224 x 224, on the CPU if no GPU
    python -m tools.bench --device cuda                     # base preset, batch 8, bf16 autocast
    python -m tools.bench --preset nano --frames 4 --size 128 --n 1   # smallest (tests/test_bench.py)

--check true runs instead the prepared check of one GPU (within --check-budget seconds, one JSON, see run_check):
the official Swin-B joint micro-batch in bf16, eager and compiled; SDPA and the bias gradient against float64; 20
steps of `torchrun train.py` and a `finetune.py` run with its evaluation. --dry-run true runs the same functions on
the CPU at nano sizes (tests/test_bench.py):

    python -m tools.bench --device cuda --check true --out check.json
    python -m tools.bench --check true --dry-run true --out check_dry.json
"""
import copy
import ctypes
import dataclasses
import gc
import json
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch.utils import flop_counter
from torchvision.models.video.swin_transformer import SwinTransformer3d

import convert
import data
import engine
import masking
import model as bevt_model
import readers
import run
import synthetic as synthetic_set
import tokenizer as tok
from run import parse_flags, ranged
from tools import dataset as dataset_tools
from tools.prepare import PrepareConfig
from tools.prepare import prepare as prepare_dataset

ROOT = Path(__file__).resolve().parents[1]  # the repository: train.py and finetune.py run from there

# ----------------------------------------------------------------------------------------------------------------------
# config


@dataclass
class BenchConfig:
    # auto: tiny on CPU, base on GPU
    preset: str = field(default="auto", metadata={"choices": ("auto",) + tuple(bevt_model.PRESETS)})
    device: str = field(default="auto", metadata={"choices": ("auto", "cpu", "cuda")})
    batch: int = ranged(0, min=0)  # clips per step; 0: 1 on CPU, 8 on GPU
    frames: int = ranged(16, min=1)  # official pretraining clip: SampleFrames(clip_len=16, frame_interval=8)
    size: int = ranged(224, min=32)  # student input (official RandomCrop 224); the tokenizers see size / 2
    # joint step: official 32 images per 4 clips per GPU micro-batch (TrainConfig)
    images_per_clip: int = ranged(8, min=1)
    n: int = ranged(5, min=1)  # timed repetitions; every figure is a median
    warmup: int = ranged(1, min=0)  # untimed repetitions first
    # auto: bf16 on GPU (fp32 on CPU, as train.py)
    dtype: str = field(default="auto", metadata={"choices": ("auto", "float32", "bfloat16", "float16")})
    compile: bool = False  # torch.compile the encoders (both sides of the A/B; the joint step's encoder)
    memory: bool = True  # peak memory per side (CPU: one fresh subprocess per side)
    joint_tokenizer: str = field(default="dalle", metadata={"choices": ("dalle", "vq")})  # the paper's is DALL-E
    # DalleConfig.precision: official = every conv fp16 on a GPU (apex O1), fp32 on a CPU
    dalle_precision: str = field(default="official", metadata={"choices": ("official", "fp32")})
    tokenizer_frames: int = ranged(0, min=0)  # frames per tokenizer call; 0: 4 on CPU, 64 on GPU
    matmul_size: int = ranged(0, min=0)  # side of the square peak matmul; 0: 2048 on CPU, 8192 on GPU
    data_clips: int = ranged(24, min=1)  # samples read per data-pipeline configuration
    data_files: int = ranged(4, min=1)  # K400-like videos generated for the data section
    data_frames: int = ranged(300, min=1)  # frames per K400-like video (K400: 10 s at 30 fps)
    pretrain_sampling: tuple = ranged((16, 8), min=1)  # (clip_len, frame_interval): official pretraining SampleFrames
    finetune_sampling: tuple = ranged((32, 2), min=1)  # official K400 finetuning SampleFrames
    memory_swin_b: bool = False  # section 6: Swin-B batch 1 peak memory, with and without grad checkpointing
    check: bool = False  # the prepared GPU check instead of sections 1-5 (run_check)
    dry_run: bool = False  # with --check: the same functions on the CPU at nano sizes, tiny steps
    # seconds the whole --check may take; the subprocesses get what is left, at most:
    check_budget: int = ranged(480, min=1)
    check_timeout: int = ranged(240, min=1)  # seconds for each of the check's train.py / finetune.py subprocesses
    seed: int = ranged(0, min=0)
    out: str = "bench.json"


def resolve(cfg):
    """Replace the `auto` / 0 defaults by the device's values; check the input shape."""
    cuda = torch.cuda.is_available()
    if cfg.device == "cuda" and not cuda:
        raise SystemExit("--device cuda: no CUDA device is available")
    device = cfg.device if cfg.device != "auto" else ("cuda" if cuda else "cpu")
    gpu = device == "cuda"
    preset = cfg.preset if cfg.preset != "auto" else ("base" if gpu else "tiny")
    cfg = dataclasses.replace(
        cfg, device=device, preset=preset, batch=cfg.batch or (8 if gpu else 1),
        dtype=engine.resolve_dtype(device, "bfloat16" if cfg.dtype == "auto" else cfg.dtype),
        tokenizer_frames=cfg.tokenizer_frames or (64 if gpu else 4),
        matmul_size=cfg.matmul_size or (8192 if gpu else 2048))
    pt = bevt_model.PRESETS[preset].patch_size[0]
    if cfg.size % 32 or cfg.frames % pt:
        raise SystemExit(f"--size must be a multiple of 32 (got {cfg.size}) and --frames of {pt} (got {cfg.frames})")
    if min(cfg.n, cfg.batch, cfg.images_per_clip, cfg.data_clips, cfg.data_files, cfg.data_frames) < 1 \
            or cfg.warmup < 0:
        raise SystemExit("--n, --batch, --images-per-clip, --data-clips, --data-files and --data-frames must be >= 1, "
                         "--warmup >= 0")
    return cfg


# ----------------------------------------------------------------------------------------------------------------------
# timing, FLOPs, memory


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def timed(fn, device):
    """Wall-clock seconds of fn(), synchronised on both sides (GPU kernels are asynchronous)."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def median_times(fns, cfg):
    """Interleaved A/B/...: each repetition runs every fn once, in order; median seconds per fn after warmup."""
    times = [[] for _ in fns]
    for rep in range(cfg.warmup + cfg.n):
        for t, fn in zip(times, fns):
            dt = timed(fn, cfg.device)
            if rep >= cfg.warmup:
                t.append(dt)
    return [statistics.median(t) for t in times]


def count_flops(fn):
    """FLOPs of one call of fn as executed (matmuls, convolutions, attention, recomputation included; elementwise
    ops are not counted)."""
    with flop_counter.FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_peak(cfg):
    """Measured peak FLOP/s: a square matmul in the benchmark's dtype on its device (CPU: torch's thread count)."""
    n, dtype = cfg.matmul_size, getattr(torch, cfg.dtype)
    g = torch.Generator().manual_seed(cfg.seed)
    a, b = (torch.randn(n, n, generator=g).to(cfg.device, dtype) for _ in range(2))
    c = torch.empty_like(a)
    (t,) = median_times([lambda: torch.mm(a, b, out=c)], dataclasses.replace(cfg, warmup=2, n=max(cfg.n, 5)))
    return 2 * n ** 3 / t


def peak_rss_bytes():
    """This process's peak resident memory. Linux: VmHWM of /proc/self/status, which is what getrusage's ru_maxrss
    reports EXCEPT that ru_maxrss also keeps the parent's RSS at fork time across exec (the kernel carries it in the
    signal struct), so a spawned child's ru_maxrss starts at the size of the benchmark process; VmHWM does not."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))  # kB
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux units: KiB


def reset_peak_rss():
    """Make the peak start again from the live heap: hand freed heap back to the OS (glibc malloc_trim), then reset
    the high-water mark (Linux: writing 5 to /proc/self/clear_refs resets VmHWM). Without this, memory freed while
    building the model would hide part of the step's peak."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except (AttributeError, OSError):  # not glibc / not Linux: the baseline stays the build's high-water mark
        pass


# ----------------------------------------------------------------------------------------------------------------------
# 1-2. encoder: ours against torchvision's Video Swin


def encoder_config(cfg):
    # no stochastic depth, so train-mode outputs are deterministic and comparable (torchvision: StochasticDepth p=0)
    return dataclasses.replace(bevt_model.PRESETS[cfg.preset], drop_path_rate=0.0)


def build_ours(mcfg):
    return bevt_model.VideoClassifier(mcfg, num_classes=400, head_dropout=0.0)


def build_torchvision(mcfg):
    """torchvision's Video Swin with our preset's shape; for "tiny"/"small"/"base" this is what swin3d_t/s/b build."""
    return SwinTransformer3d(patch_size=list(mcfg.patch_size), embed_dim=mcfg.embed_dim, depths=list(mcfg.depths),
                             num_heads=list(mcfg.num_heads), window_size=list(mcfg.window_size),
                             mlp_ratio=mcfg.mlp_ratio, stochastic_depth_prob=0.0, num_classes=400)


def features_fn(net):
    """The final normed stage-4 feature map (B, T', H', W', C8) of either model: the part both compute alike."""
    if isinstance(net, bevt_model.VideoClassifier):
        return lambda x: net.encoder.norm(net.encoder(x)[-1])  # (B, T', H', W', C8)
    return lambda x: net.norm(net.features(net.pos_drop(net.patch_embed(x))))  # (B, T', H', W', C8)


def step_fn(net, x, cfg, compiled=None):
    """One training-mode forward+backward of the encoder (loss: mean square of the features, a stand-in objective)."""
    feats = compiled or features_fn(net)
    ctx = engine.autocast_context(cfg.device, cfg.dtype)

    def step():
        net.zero_grad(set_to_none=True)
        with ctx:
            y = feats(x)
        y.float().square().mean().backward()
    return step


def clip_input(cfg):
    g = torch.Generator().manual_seed(cfg.seed)
    return torch.randn(cfg.batch, 3, cfg.frames, cfg.size, cfg.size, generator=g).to(cfg.device)  # (B, C, T, H, W)


def _memory_child(cfg, side, queue):
    """Fresh process: build ONE side ("ours", "ours_grad_checkpoint" or "torchvision"), then report (the resident
    memory once the model and the input exist, the high-water mark of one forward+backward after that)."""
    torch.manual_seed(cfg.seed)
    mcfg = dataclasses.replace(encoder_config(cfg), grad_checkpoint=side == "ours_grad_checkpoint")
    net = (build_torchvision if side == "torchvision" else build_ours)(mcfg).train()
    x = clip_input(cfg)
    reset_peak_rss()
    base = peak_rss_bytes()
    step_fn(net, x, cfg)()
    queue.put((base, peak_rss_bytes()))


def child_memory(cfg, side):
    """(resting bytes, peak bytes) of _memory_child in a fresh interpreter: nothing of this process's heap counts."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_memory_child, args=(cfg, side, queue))
    child.start()
    out = queue.get()
    child.join()
    return out


def peak_memory(cfg, side, net, x):
    """Bytes above the resting state during one forward+backward (GPU: allocator peak; CPU: child process RSS)."""
    if cfg.device.startswith("cuda"):
        net.zero_grad(set_to_none=True)
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step_fn(net, x, cfg)()
        return torch.cuda.max_memory_allocated() - base
    base, peak = child_memory(cfg, side)
    return peak - base


def bench_encoder(cfg):
    torch.manual_seed(cfg.seed)
    mcfg = encoder_config(cfg)
    ours = build_ours(mcfg)
    tv = build_torchvision(mcfg)
    tv.load_state_dict(convert.to_torchvision(ours.state_dict(), mcfg.window_size), strict=True)
    ours, tv = ours.to(cfg.device).train(), tv.to(cfg.device).train()
    x = clip_input(cfg)
    with torch.no_grad():  # parity in fp32, whatever the timed dtype
        diff = (features_fn(ours)(x) - features_fn(tv)(x)).abs().max().item()
    # model FLOPs = torchvision's count (explicit matmuls, no recomputation); ours as executed may recompute
    f_ours, f_tv = count_flops(step_fn(ours, x, cfg)), count_flops(step_fn(tv, x, cfg))
    comp = [torch.compile(features_fn(m)) if cfg.compile else None for m in (ours, tv)]
    t_ours, t_tv = median_times([step_fn(ours, x, cfg, comp[0]), step_fn(tv, x, cfg, comp[1])], cfg)
    peak = matmul_peak(cfg)
    out = {"ours_s": t_ours, "torchvision_s": t_tv, "speedup_vs_torchvision": t_tv / t_ours,
           "max_abs_diff": diff, "flops": f_tv, "flops_ours_executed": f_ours,
           "ours_flops_per_s": f_tv / t_ours, "torchvision_flops_per_s": f_tv / t_tv, "matmul_peak_flops_per_s": peak,
           "ours_peak_fraction": f_tv / t_ours / peak, "torchvision_peak_fraction": f_tv / t_tv / peak}
    if cfg.memory:
        out["ours_peak_mem_bytes"] = peak_memory(cfg, "ours", ours, x)
        out["torchvision_peak_mem_bytes"] = peak_memory(cfg, "torchvision", tv, x)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# 3. the joint pretraining step: train.py's joint step (joint_step, the same calls)


def build_tokenizer(kind, cfg):
    """A frozen tokenizer with random weights (the cost does not depend on the values), as load_tokenizer returns it."""
    if kind == "dalle":
        t = tok.DalleEncoder(tok.DalleConfig(precision=cfg.dalle_precision))
    else:
        t = tok.VQTokenizer(tok.VQConfig())
    t = t.to(cfg.device).eval().requires_grad_(False)
    return t.to(memory_format=torch.channels_last) if cfg.device.startswith("cuda") else t


def joint_batch(cfg, patch_t):
    """One micro-batch as the loaders deliver it (CPU tensors, data.PretrainVideoDataset / PretrainImageDataset
    layout): `batch` clips and `batch * images_per_clip` images, uint8 crops and uint8 half-size tokenizer views
    (random pixels: the cost does not depend on them), tube masks (video) and blockwise masks (image), True = masked."""
    rng = np.random.default_rng(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    B, I, T, S, h = cfg.batch, cfg.batch * cfg.images_per_clip, cfg.frames, cfg.size, cfg.size // 16
    video_mask = np.stack([masking.video_mask("tube", T // patch_t, h, h, rng=rng) for _ in range(B)])  # (B, T', h, w)
    image_mask = np.stack([masking.blockwise_mask(h, h, h * h // 2, rng=rng) for _ in range(I)])  # (I, h, w)
    return {"video": torch.randint(0, 256, (B, 3, T, S, S), dtype=torch.uint8, generator=g),  # (B, 3, T, H, W)
            "video_tok": torch.randint(0, 256, (B, 3, T, S // 2, S // 2), dtype=torch.uint8,
                                       generator=g),  # (B, 3, T, H/2, W/2)
            "video_mask": torch.from_numpy(video_mask),
            "image": torch.randint(0, 256, (I, 3, S, S), dtype=torch.uint8, generator=g),  # (I, 3, H, W)
            "image_tok": torch.randint(0, 256, (I, 3, S // 2, S // 2), dtype=torch.uint8,
                                       generator=g),  # (I, 3, H/2, W/2)
            "image_mask": torch.from_numpy(image_mask)}


# official cfg swin_base_patch244_window877_bevt_in1k_k400.py: grad_clip max_norm 3, loss weights 1 (λ of Eq. 5)
CLIP_GRAD, LAM = 3.0, 1.0


def joint_step(model, tokenizer, batch, optimizer, scaler, dtype, env, lr, patch_t):
    """train.py's train_step for one micro-batch on one process (the bench may not import a script):
    targets, forward, Eq. 5, backward, step. tests/test_bench.py checks it against train.train_step bit for bit."""
    inputs = {}
    for s in ("video", "image"):
        inputs[s + "_ids"] = tokenizer.encode(batch[s + "_tok"].to(env.device, non_blocking=True))
        inputs[s] = data.normalize_batch(batch[s].to(env.device, non_blocking=True))
        inputs[s + "_mask"] = batch[s + "_mask"].to(env.device, non_blocking=True)
    counts = bevt_model.target_counts(inputs["video_mask"], inputs["image_mask"], patch_t)
    with engine.autocast_context(env.device, dtype):
        out = model(**inputs)
    loss = bevt_model.objective({s: out[s][0] for s in out}, counts, LAM, env.world)
    scaler.scale(loss).backward()
    return engine.optimizer_step(optimizer, scaler, torch.isfinite(loss.detach()), CLIP_GRAD, env, lr), out


# official cfg swin_base_patch244_window877_bevt_in1k_k400.py: AdamW lr 5e-4, wd 0.05, betas (0.9, 0.999)
OFFICIAL = dict(lr=5e-4, weight_decay=0.05, betas=(0.9, 0.999))


class PhaseClock:
    """Synchronised wall-clock seconds spent inside named calls, summed since the last `take`."""

    def __init__(self, device):
        self.device, self.times, self.started = device, {}, {}

    def start(self, name):
        sync(self.device)
        self.started[name] = time.perf_counter()

    def stop(self, name):
        sync(self.device)
        self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - self.started.pop(name)

    def around(self, name, fn, *args, **kwargs):
        self.start(name)
        out = fn(*args, **kwargs)
        self.stop(name)
        return out

    def take(self):
        times, self.times = self.times, {}
        return times


class TimedTokenizer:
    """The tokenizer as the joint step calls it (`encode`), its time on the clock."""

    def __init__(self, tokenizer, clock):
        self.tokenizer, self.clock = tokenizer, clock

    def encode(self, views):
        return self.clock.around("tokenizer", self.tokenizer.encode, views)


class TimedModel(torch.nn.Module):
    """The model as the joint step calls it (`model(**inputs)`); its forward (encoders, decoders, losses) is timed."""

    def __init__(self, model, clock):
        super().__init__()
        self.model, self.clock = model, clock

    def forward(self, **inputs):
        return self.clock.around("forward", self.model, **inputs)


def joint_setup(cfg, tokenizer_kind, compile_backend=None):
    """A BEVT of the preset with a `tokenizer_kind` tokenizer, its official AdamW groups, one micro-batch, and the
    step: joint_step on one process. Returns (step function, timed step function, model, tokenizer, batch);
    the timed one runs the same function with the clock's wrappers and returns its phases."""
    torch.manual_seed(cfg.seed)
    tokenizer = build_tokenizer(tokenizer_kind, cfg)
    mcfg = dataclasses.replace(bevt_model.PRESETS[cfg.preset], vocab_size=tokenizer.vocab_size)
    model = bevt_model.BEVT(mcfg).to(cfg.device).train()
    groups = engine.param_groups(model, OFFICIAL["weight_decay"], engine.NO_DECAY_KEYS)
    optimizer = torch.optim.AdamW(groups, lr=OFFICIAL["lr"], betas=OFFICIAL["betas"])
    env = engine.Dist(False, 0, 0, 1, cfg.device)
    scaler = engine.make_scaler(env, cfg.dtype)
    batch, patch_t = joint_batch(cfg, mcfg.patch_size[0]), mcfg.patch_size[0]
    net = torch.compile(model, backend=compile_backend) if compile_backend else model  # as train.py --compile
    clock = PhaseClock(cfg.device)

    def step(net=net, tokens=tokenizer):
        return joint_step(net, tokens, batch, optimizer, scaler, cfg.dtype, env, OFFICIAL["lr"], patch_t)

    def timed_step():
        hooks = [optimizer.register_step_pre_hook(lambda *args: clock.start("optimizer")),
                 optimizer.register_step_post_hook(lambda *args: clock.stop("optimizer"))]
        total = timed(lambda: step(TimedModel(net, clock), TimedTokenizer(tokenizer, clock)), cfg.device)
        for hook in hooks:
            hook.remove()
        phases = clock.take()
        phases["backward_and_rest"] = max(total - sum(phases.values()), 0.0)  # backward, clip, copies, counts
        return phases

    return step, timed_step, model, tokenizer, batch


def bench_joint(cfg):
    step, timed_step, model, tokenizer, batch = joint_setup(cfg, cfg.joint_tokenizer)
    flops = count_flops(step)  # eager: the counter does not see inside compiled graphs
    one = batch["image_tok"][:1]  # (1, 3, h, w): tokenizer FLOPs do not depend on content, so count one frame
    tok_flops = count_flops(lambda: tokenizer.encode(one)) * (cfg.batch * cfg.frames + cfg.batch * cfg.images_per_clip)
    if cfg.compile:
        model.encoder.compile()  # in place: both step functions use it
    phases = []
    t_full, _ = median_times([step, lambda: phases.append(timed_step())], cfg)
    phases = {k: statistics.median(p[k] for p in phases[cfg.warmup:]) for k in phases[0]}
    peak = matmul_peak(cfg)
    I = cfg.batch * cfg.images_per_clip
    return {"tokenizer": cfg.joint_tokenizer, "clips": cfg.batch, "images": I, "step_s": t_full,
            "clips_per_s": cfg.batch / t_full, "images_per_s": I / t_full, "flops": flops, "tokenizer_flops": tok_flops,
            "flops_per_s": flops / t_full, "peak_fraction": flops / t_full / peak,
            "phases_s": phases, "phases_fraction": {k: v / sum(phases.values()) for k, v in phases.items()}}


# ----------------------------------------------------------------------------------------------------------------------
# 4-5. tokenizers and data


def bench_tokenizers(cfg):
    g = torch.Generator().manual_seed(cfg.seed)
    view = cfg.size // 2  # the tokenizer sees half-size views (data.tokenizer_view)
    frames = torch.randint(0, 256, (cfg.tokenizer_frames, 3, view, view), dtype=torch.uint8, generator=g)
    frames = frames.to(cfg.device)  # (N, 3, H/2, W/2)
    out = {"frames_per_call": cfg.tokenizer_frames, "view_px": cfg.size // 2}
    for kind in ("dalle", "vq"):
        t = build_tokenizer(kind, cfg)
        (s,) = median_times([lambda: t.encode(frames)], cfg)
        out[kind + "_frames_per_s"] = cfg.tokenizer_frames / s
        out[kind + "_flops_per_frame"] = count_flops(lambda: t.encode(frames[:1]))
    return out


def k400_like_frames(seed, t, h=256, w=340):
    """uint8 (t, h, w, 3) frames with real-world statistics for a video codec: four drifting sinusoid gratings over a
    low-pass noise field that pans across the frame (smooth, textured, everything moving, as camera footage)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    noise = torch.from_numpy(rng.normal(size=(3, (h + t // 2) // 16 + 2, (w + t) // 16 + 2)).astype(np.float32))
    noise = torch.nn.functional.interpolate(noise[None], scale_factor=16, mode="bicubic")[0]  # (3, ~h + t/2, ~w + t)
    noise = noise.permute(1, 2, 0).numpy()                                                    # (~h + t/2, ~w + t, 3)
    waves = [(rng.uniform(0.01, 0.08), rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 3), rng.uniform(0, 1, 3))
             for _ in range(4)]  # (spatial frequency, direction, speed, colour)
    frames = np.empty((t, h, w, 3), dtype=np.uint8)
    for i in range(t):
        img = 128 + 40 * noise[i // 2:i // 2 + h, i:i + w]  # the noise pans 1 px right, 0.5 px down per frame
        for freq, angle, speed, colour in waves:
            img = img + 25 * np.sin(freq * (xx * np.cos(angle) + yy * np.sin(angle)) + speed * i * 0.1)[..., None] \
                * colour
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def k400_like_files(num_files, num_frames):
    """K400-like videos (generated once into the cache): 340x256 (short side 256, as the resized K400 that mmaction
    trains on), 30 fps, x264's defaults (preset medium, crf 23, keyframe every 250 frames, 3 B-frames with pyramid),
    and their rawframes (data.py extract-frames, JPEG q95). Returns (video records, rawframes records)."""
    root = synthetic_set.CACHE / f"bench-k400-like-{num_files}x{num_frames}"
    if not (root / "videos_rawframes.txt").exists():
        tmp = root.with_name(root.name + ".part")
        tmp.mkdir(parents=True, exist_ok=True)
        for k in range(num_files):
            synthetic_set.write_video(tmp / f"clip{k}.mp4", k400_like_frames(k, num_frames), fps=30, gop=None,
                                      options={"threads": "1"})
        (tmp / "videos.txt").write_text("".join(f"clip{k}.mp4 0\n" for k in range(num_files)))
        dataset_tools.extract_frames(
            dataset_tools.ExtractConfig(str(tmp / "videos.txt"), str(tmp), str(tmp / "frames")))
        os.replace(tmp / "frames" / "videos_rawframes.txt", tmp / "videos_rawframes.txt")
        os.replace(tmp / "frames" / "videos_rawframes_classes.txt", tmp / "videos_rawframes_classes.txt")
        os.rename(tmp, root)
    videos, _ = readers.read_annotations(root / "videos.txt", root)
    frames, _ = readers.read_annotations(root / "videos_rawframes.txt", root / "frames")
    return videos, frames


# The prepared formats measured (tools/prepare.py), the first being prepare's default: JPEG frames, and x264 with every
# frame a keyframe or with a keyframe every 8 frames (P-frames between, no B-frames).
PREPARED = {"mjpeg q5": PrepareConfig(codec="mjpeg", mjpeg_q=5), "mjpeg q3": PrepareConfig(codec="mjpeg", mjpeg_q=3),
            "h264 intra crf18": PrepareConfig(codec="h264", crf=18, gop=1),
            "h264 gop8 crf18": PrepareConfig(codec="h264", crf=18, gop=8)}


def prepared_copies(videos) -> dict:
    """{name: records} of the prepared copies (PREPARED) of the K400-like files, converted once into the cache beside
    them by `prepare` itself (a rerun skips what is there)."""
    root = Path(videos[0].path).parent
    out = {}
    for name, pcfg in PREPARED.items():
        dst = root / ("prepared-" + name.replace(" ", "-"))
        failed = prepare_dataset(dataclasses.replace(pcfg, annotation=str(root / "videos.txt"), root=str(root),
                                                     out=str(dst), workers=1, diff_frames=0))
        if failed:
            raise RuntimeError(f"prepare failed on {failed}")
        out[name], _ = readers.read_annotations(dst / "videos.txt", dst)
    return out


def decord_reader():
    """(read(path, indices), version) of decord, the official decoder, if it is installed (it is no dependency), else
    (None, None): decode only, the official way: a VideoReader per sample with one thread (official: mmaction/
    datasets/pipelines/loading.py:1154-1177 DecordInit) and one frame per unique index (:1213-1216 DecordDecode)."""
    try:
        import decord
    except ImportError:
        return None, None

    def read(path, indices):
        reader = decord.VideoReader(path, num_threads=1)
        return [reader[int(i)].asnumpy() for i in np.unique(indices)]  # (H, W, 3) each
    return read, decord.__version__


def pixel_difference(original, prepared, frames=8) -> float:
    """Mean absolute difference (grey levels) of `frames` evenly spaced frames of each prepared copy and its source."""
    pick = lambda n: np.linspace(0, n - 1, frames).round().astype(np.int64)  # noqa: E731
    return float(np.mean([np.abs(readers.read_frames(a.path, pick).astype(np.int16) - readers.read_frames(b.path, pick))
                          .mean() for a, b in zip(original, prepared)]))


def bench_data(cfg, patch_t):
    """Clips/s of one data-loader worker for the pretraining sample (PretrainVideoDataset, official 16x8) and the K400
    finetuning sample (FinetuneVideoDataset, 32x2), on K400-like H.264 files, on their rawframes and on their prepared
    copies (PREPARED); decode-only rates of the same 16x8 clips (readers.read_frames, and decord's official way on the
    originals if decord is installed); storage per video and per hour of video. A worker is one process on one core
    (torch, OpenCV and PyAV run one thread in it), so the figure is samples per CPU-second of this process
    (time.process_time), which other jobs on a shared machine disturb least; the configurations alternate sample by
    sample and each figure is the median."""
    videos, frames = k400_like_files(cfg.data_files, cfg.data_frames)
    prepared = prepared_copies(videos)
    scale = lambda s: round(cfg.size * s / 224)  # noqa: E731  official short sides are for 224 crops
    (pl, pi), (fl, fi) = cfg.pretrain_sampling, cfg.finetune_sampling
    sets = {"h264": videos, "rawframes": frames, **{"prepared " + name: r for name, r in prepared.items()}}
    runs, datasets = {}, []  # name -> fn(i): one sample
    for kind, records in sets.items():
        pretrain = data.PretrainVideoDataset(records, clip_len=pl, frame_interval=pi, crop=cfg.size,
                                             rescale=(scale(256), scale(320)), patch_t=patch_t, seed=cfg.seed)
        finetune = data.FinetuneVideoDataset(records, train=True, sampling="dense", clip_len=fl, frame_interval=fi,
                                             crop=cfg.size, short_side=scale(256), seed=cfg.seed)
        runs["pretrain_" + kind] = lambda i, ds=pretrain: ds[i % len(videos)]
        runs["finetune_" + kind] = lambda i, ds=finetune: ds[i % len(videos)]
        datasets += [pretrain, finetune]
    # decode only: the frames of a pretraining draw, the same for every reader
    counts = [readers.video_frame_count(r.path) for r in videos]
    clips = [data.dense_indices(counts[i % len(videos)], pl, pi, 1, True, np.random.default_rng([cfg.seed, i]))[0]
             for i in range(cfg.data_clips + 1)]
    for kind in ["h264"] + ["prepared " + name for name in prepared]:
        runs["decode_" + kind] = lambda i, r=sets[kind]: readers.read_frames(r[i % len(videos)].path,
                                                                              lambda n: clips[i])
    decord_read, decord_version = decord_reader()
    if decord_read:
        runs["decode_decord_h264"] = lambda i: decord_read(videos[i % len(videos)].path, clips[i])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    times = {name: [] for name in runs}
    try:
        for read in runs.values():
            read(0)  # warm-up: first open, imports
        for i in range(1, cfg.data_clips + 1):
            for ds in datasets:
                ds.set_epoch(1 + i // len(videos))  # a new draw on every pass over the files
            for name, read in runs.items():
                start = time.process_time()
                read(i)
                times[name].append(time.process_time() - start)
    finally:
        torch.set_num_threads(threads)
    rate = {name: 1 / statistics.median(t) for name, t in times.items()}
    size = lambda paths: sum(p.stat().st_size for p in paths) / len(videos) / 2 ** 20  # noqa: E731
    hours = float(np.mean(counts)) / 30 / 3600  # hours of video per file (the files are 30 fps)
    out = {"videos": f"{len(videos)} K400-like H.264 files, 340x256, {cfg.data_frames} frames, x264 defaults",
           "pretrain": f"{pl}x{pi}", "finetune": f"{fl}x{fi}",
           "h264_mb_per_video": size([Path(r.path) for r in videos]),
           "rawframes_mb_per_video": size([p for r in frames for p in Path(r.path).glob("*.jpg")]),
           "decord": decord_version,
           "decode_decord_h264_clips_per_s": rate.get("decode_decord_h264")}
    out["h264_mb_per_hour"] = out["h264_mb_per_video"] / hours
    out["rawframes_mb_per_hour"] = out["rawframes_mb_per_video"] / hours
    for kind in ("h264", "rawframes"):
        out[f"pretrain_{kind}_clips_per_s"] = rate[f"pretrain_{kind}"]
        out[f"finetune_{kind}_clips_per_s"] = rate[f"finetune_{kind}"]
    out["decode_h264_clips_per_s"] = rate["decode_h264"]
    # the bar: decord's decode-only rate on the originals (ours if decord is not installed)
    baseline = rate.get("decode_decord_h264", rate["decode_h264"])
    out["prepared"] = {}
    for name, records in prepared.items():
        mb = size([Path(r.path) for r in records])
        out["prepared"][name] = {
            "mb_per_video": mb, "mb_per_hour": mb / hours, "size_vs_h264": mb / out["h264_mb_per_video"],
            "pixel_difference": pixel_difference(videos, records),
            "pretrain_clips_per_s": rate["pretrain_prepared " + name],
            "finetune_clips_per_s": rate["finetune_prepared " + name],
            "decode_clips_per_s": rate["decode_prepared " + name],
            "pretrain_vs_decode_baseline": rate["pretrain_prepared " + name] / baseline}
    return out


# ----------------------------------------------------------------------------------------------------------------------
# 6. Swin-B peak memory per micro-batch (CPU, fresh processes)


def bench_memory_swin_b(cfg):
    """Swin-B encoder forward+backward, batch 1, 3 x 16 x 224 x 224 fp32 on the CPU, with and without gradient
    checkpointing: the resident memory once the model and the input exist, and the high-water mark of the step."""
    base = dataclasses.replace(cfg, preset="base", batch=1, frames=16, size=224, device="cpu", dtype="float32")
    out = {"input": "1x3x16x224x224 float32 cpu"}
    for side in ("ours", "ours_grad_checkpoint"):
        rest, peak = child_memory(base, side)
        out[side + "_rest_bytes"], out[side + "_peak_bytes"] = rest, peak
    return out


# ----------------------------------------------------------------------------------------------------------------------
# the prepared GPU check (--check): what one GPU must show before a real run; --dry-run: the same on a CPU


def check_config(cfg):
    """GPU: the official per-GPU micro-batch (4 clips x 16 x 224^2 + 32 images; TrainConfig videos_per_gpu /
    images_per_gpu), Swin-B, full-size DALL-E (random weights), precision "official", bf16. Dry run: nano sizes on
    the CPU (fp32, as engine.resolve_dtype gives a CPU)."""
    if cfg.dry_run:
        return dataclasses.replace(cfg, device="cpu", preset="nano", batch=1, frames=4, size=32, images_per_clip=2,
                                   dtype="float32", n=1, warmup=1, matmul_size=1024, dalle_precision="official")
    if not torch.cuda.is_available():
        raise SystemExit("--check: no CUDA device (use --dry-run true for the CPU rehearsal)")
    return dataclasses.replace(cfg, device="cuda", preset="base", batch=4, frames=16, size=224, images_per_clip=8,
                               dtype=engine.resolve_dtype("cuda", "bfloat16"), n=max(cfg.n, 5), warmup=2,
                               matmul_size=8192, dalle_precision="official")


def peak_memory_of(fn, device):
    """(seconds, peak bytes) of fn(): the CUDA allocator's peak, or this process's resident high-water mark."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        return timed(fn, device), torch.cuda.max_memory_allocated()
    reset_peak_rss()
    return timed(fn, device), peak_rss_bytes()


def check_joint(cfg, compile_backend):
    """The joint step (joint_step, DALL-E targets) eager or compiled (`compile_backend`): median step time,
    clips/s, images/s, the share of the matmul peak (eager FLOPs), peak memory, the tokenizer's share of the step."""
    step, timed_step, _, _, _ = joint_setup(cfg, "dalle", compile_backend)
    flops = count_flops(step)  # eager, before compiling anything (the counter does not see inside compiled graphs)
    first_s, peak_mem = peak_memory_of(step, cfg.device)  # compiles here when compiled
    phases = []
    step_s, _ = median_times([step, lambda: phases.append(timed_step())], cfg)
    phases = {k: statistics.median(p[k] for p in phases[cfg.warmup:]) for k in phases[0]}
    I = cfg.batch * cfg.images_per_clip
    return {"first_step_s": first_s, "step_s": step_s, "clips_per_s": cfg.batch / step_s, "images_per_s": I / step_s,
            "flops": flops, "flops_per_s": flops / step_s, "peak_mem_bytes": peak_mem, "phases_s": phases,
            "tokenizer_share": phases["tokenizer"] / sum(phases.values())}


def check_attention(device, dtype, seed=0):
    """model.WindowAttention (SDPA with the relative bias and a shift mask) under autocast(dtype) on `device` against
    the same module in float64 on the CPU: max relative error of the output and of the bias table's gradient, and
    the aten SDPA ops that ran (which kernel: efficient / flash / math)."""
    torch.manual_seed(seed)
    dim, heads, window, windows = 128, 4, (8, 7, 7), 4  # stage-1 Swin-B shapes, 4 windows of one shifted block
    attn = bevt_model.WindowAttention(dim, heads, window, qkv_bias=True, attn_drop=0.0)
    with torch.no_grad():
        attn.relative_position_bias_table.normal_(0, 1.0)  # a visible bias (trunc_normal 0.02 at init)
    shift_mask = bevt_model.shift_attention_mask((8, 14, 14), window, (4, 3, 3))  # (nW, N, N) of an 8x14x14 map
    x = torch.randn(windows, 8 * 7 * 7, dim)  # (B*nW, N, D), one sample of 4 windows
    grad_out = torch.randn(windows, 8 * 7 * 7, dim)

    def run(module, inp, mask, dev, autocast_dtype):
        module.zero_grad(set_to_none=True)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            with engine.autocast_context(dev, autocast_dtype):
                y = module(inp, window, mask)
            weights = grad_out.to(dev, torch.float64 if inp.dtype == torch.float64 else torch.float32)
            (y.to(weights.dtype) * weights).sum().backward()  # a fixed random output gradient
        ops = sorted({e.name for e in prof.events() if "scaled_dot_product" in e.name or "attention" in e.name})
        return y.detach().double().cpu(), module.relative_position_bias_table.grad.double().cpu(), ops

    ref = copy.deepcopy(attn).double()
    y_ref, g_ref, _ = run(ref, x.double(), shift_mask.double(), "cpu", "float32")
    out = {"shape": f"{windows} windows x {8 * 7 * 7} tokens x {dim} ch, {heads} heads, shift mask", "dtype": dtype}
    for name, autocast_dtype in (("autocast", dtype), ("fp32", "float32")):
        dev_attn = copy.deepcopy(attn).to(device)
        y, g, ops = run(dev_attn, x.to(device), shift_mask.to(device), device, autocast_dtype)
        out[name] = {"out_rel_err": float((y - y_ref).abs().max() / y_ref.abs().max()),
                     "bias_grad_rel_err": float((g - g_ref).abs().max() / g_ref.abs().max()), "sdpa_ops": ops}
    return out


def run_script(argv, timeout, out_dir):
    """A subprocess (the project's script, as a user runs it) with a timeout: return code, wall seconds, the last
    lines of its output and the last row of out_dir/log.jsonl."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "4")}
    start = time.perf_counter()
    try:
        proc = subprocess.run(argv, cwd=ROOT, env=env, timeout=timeout, capture_output=True, text=True)
        rc, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        rc, output = "timeout", (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
    log = Path(out_dir) / "log.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    return {"command": " ".join(map(str, argv)), "returncode": rc, "wall_s": time.perf_counter() - start,
            "last_log_row": rows[-1] if rows else None, "output_tail": output.splitlines()[-15:]}


def check_scripts(cfg, out_dir, deadline):
    """`torchrun --nproc_per_node 1 train.py --max-steps 20` (the synthetic default) on this device, then
    `finetune.py --max-steps 20` from its last checkpoint, with the evaluation (eval.json). Dry run: 1 step each.
    Each gets at most --check-timeout seconds and not more than what is left before `deadline` (at least 30)."""
    steps = 1 if cfg.dry_run else 20
    timeout = lambda: max(30, min(cfg.check_timeout, deadline - time.perf_counter()))  # noqa: E731
    train_dir, finetune_dir = Path(out_dir) / "train", Path(out_dir) / "finetune"
    tokenizer = []
    if cfg.dry_run:  # a tiny VQ (5 steps) instead of the default one, which an uncached run would first train
        crop = 128  # the no-data run's crop; its tokenizer views are half that
        frames = synthetic_set.load_frames(synthetic_set.synthetic_root(), 96, crop // 2, seed=0)
        vq = tok.train_vq_tokenizer(frames, tok.VQConfig(hid=8, code_dim=8, vocab_size=32, size=crop // 2, steps=5,
                                                         batch_size=16, val_frames=16), log=lambda *a: None)
        tokenizer = ["--img-size", str(crop), "--tokenizer", str(Path(out_dir) / "tiny_vq.pt")]
        tok.save_tokenizer(vq, tokenizer[-1])
    train = run_script([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port",
                        str(29400 + os.getpid() % 500), "train.py", "--max-steps", str(steps), "--log-every", "1",
                        *tokenizer, "--out-dir", str(train_dir)], timeout(), train_dir)
    ckpt = run.latest_checkpoint(train_dir)
    train["checkpoint"] = str(ckpt) if ckpt else None
    finetune = run_script([sys.executable, "finetune.py", "--max-steps", str(steps), "--log-every", "1",
                           "--init", str(ckpt), "--out-dir", str(finetune_dir)], timeout(), finetune_dir)
    eval_json = finetune_dir / "eval.json"
    if eval_json.is_file():
        normal = json.loads(eval_json.read_text())["results"]["normal"]
        finetune["test_top1"], finetune["test_top5"] = normal["top1"], normal["top5"]
    return {"train": train, "finetune": finetune}


def run_check(cfg):
    """The prepared check, one JSON: joint step eager and compiled, the matmul peak, attention numerics, the two
    scripts. On the GPU the compile backend is inductor (what train.py --compile uses); the dry run uses "eager"
    (the same dynamo graph capture without inductor's code generation, which is slow on a CPU)."""
    cfg = check_config(cfg)
    start = time.perf_counter()
    res = {"config": asdict(cfg), "machine": machine(cfg), "dry_run": cfg.dry_run}
    print(f"check: preset {cfg.preset}, {cfg.batch} clips x {cfg.frames} x {cfg.size}^2 + "
          f"{cfg.batch * cfg.images_per_clip} images, {cfg.device} {cfg.dtype}, DALL-E {cfg.dalle_precision}",
          flush=True)
    peak = matmul_peak(cfg)
    res["matmul_peak_flops_per_s"] = peak
    joint = {}
    for name, backend in (("eager", None), ("compiled", "eager" if cfg.dry_run else "inductor")):
        joint[name] = check_joint(cfg, backend)
        joint[name]["compile_backend"] = backend
        joint[name]["peak_fraction"] = joint[name]["flops_per_s"] / peak
        print(f"  joint {name}: {joint[name]['step_s']:.3f} s/step, {joint[name]['clips_per_s']:.2f} clips/s, "
              f"{joint[name]['images_per_s']:.1f} img/s, {joint[name]['peak_fraction']:.0%} of the matmul peak, "
              f"peak memory {joint[name]['peak_mem_bytes'] / 2 ** 30:.2f} GiB, "
              f"tokenizer {joint[name]['tokenizer_share']:.0%}", flush=True)
    res["joint"] = joint
    res["attention"] = check_attention(cfg.device, "bfloat16")
    print(f"  attention: {res['attention']}", flush=True)
    runs = Path(cfg.out).resolve().parent / (Path(cfg.out).stem + "_runs")
    res.update(check_scripts(cfg, runs, start + (10 ** 6 if cfg.dry_run else cfg.check_budget)))
    for name in ("train", "finetune"):
        print(f"  {name}: returncode {res[name]['returncode']}, {res[name]['wall_s']:.0f} s, "
              f"last log row {res[name]['last_log_row']}", flush=True)
    res["wall_s"] = time.perf_counter() - start
    return res


# ----------------------------------------------------------------------------------------------------------------------
# report


def machine(cfg):
    out = {"torch": torch.__version__, "torchvision": torchvision.__version__, "python": platform.python_version(),
           "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "load_avg_1min": os.getloadavg()[0]}
    if cfg.device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name(cfg.device)
    return out


def table(res):
    """One row per figure: (section, metric, value) with readable units."""
    e, j, t, d = res["encoder"], res["joint"], res["tokenizer"], res["data"]
    mb, gf = 2 ** 20, 1e9
    rows = [
        ("encoder", "fwd+bwd ours / torchvision", f"{e['ours_s'] * 1e3:.0f} / {e['torchvision_s'] * 1e3:.0f} ms"),
        ("encoder", "speed-up vs torchvision", f"{e['speedup_vs_torchvision']:.2f}x"),
        ("encoder", "max |diff| of final features", f"{e['max_abs_diff']:.1e}"),
        ("encoder", "GFLOPs per step model / ours executed",
         f"{e['flops'] / gf:.1f} / {e['flops_ours_executed'] / gf:.1f}"),
        ("encoder", "model GFLOP/s ours / torchvision",
         f"{e['ours_flops_per_s'] / gf:.1f} / {e['torchvision_flops_per_s'] / gf:.1f}"),
        ("encoder", "matmul peak GFLOP/s", f"{e['matmul_peak_flops_per_s'] / gf:.1f}"),
        ("encoder", "fraction of peak ours / torchvision",
         f"{e['ours_peak_fraction']:.0%} / {e['torchvision_peak_fraction']:.0%}")]
    if "ours_peak_mem_bytes" in e:
        rows.append(("encoder", "peak memory ours / torchvision",
                     f"{e['ours_peak_mem_bytes'] / mb:.0f} / {e['torchvision_peak_mem_bytes'] / mb:.0f} MiB"))
    rows += [
        ("joint", f"step ({j['clips']} clips + {j['images']} images, {j['tokenizer']})", f"{j['step_s']:.2f} s"),
        ("joint", "clips/s, images/s", f"{j['clips_per_s']:.3f}, {j['images_per_s']:.3f}"),
        ("joint", "GFLOPs per step (tokenizer)", f"{j['flops'] / gf:.0f} ({j['tokenizer_flops'] / gf:.0f})"),
        ("joint", "fraction of matmul peak", f"{j['peak_fraction']:.0%}")]
    rows += [("joint", f"phase {k}", f"{v:.3f} s ({j['phases_fraction'][k]:.0%})") for k, v in j["phases_s"].items()]
    rows += [
        ("tokenizer", f"DALL-E frames/s ({t['view_px']} px view)", f"{t['dalle_frames_per_s']:.2f}"),
        ("tokenizer", "DALL-E GFLOPs per frame", f"{t['dalle_flops_per_frame'] / gf:.1f}"),
        ("tokenizer", "VQ frames/s", f"{t['vq_frames_per_s']:.1f}"),
        ("data", f"{d['videos']}", f"{d['h264_mb_per_video']:.1f} MB per video, "
                                     f"rawframes {d['rawframes_mb_per_video']:.1f} MB"),
        ("data", f"pretrain {d['pretrain']} clips/s per worker H.264 / rawframes",
         f"{d['pretrain_h264_clips_per_s']:.1f} / {d['pretrain_rawframes_clips_per_s']:.1f}"),
        ("data", f"finetune {d['finetune']} clips/s per worker H.264 / rawframes",
         f"{d['finetune_h264_clips_per_s']:.1f} / {d['finetune_rawframes_clips_per_s']:.1f}"),
        ("data", f"decode only {d['pretrain']} clips/s H.264: ours / decord {d['decord']}",
         f"{d['decode_h264_clips_per_s']:.1f} / " + (f"{d['decode_decord_h264_clips_per_s']:.1f}"
                                                      if d["decord"] else "not installed"))]
    rows += [("data", f"prepared {name}: MB per hour, vs H.264, pixel diff",
              f"{p['mb_per_hour']:.0f} MB/h, {p['size_vs_h264']:.1f}x, {p['pixel_difference']:.2f}")
             for name, p in d["prepared"].items()]
    rows += [("data", f"prepared {name}: clips/s pretrain / finetune / decode only",
              f"{p['pretrain_clips_per_s']:.1f} / {p['finetune_clips_per_s']:.1f} / {p['decode_clips_per_s']:.1f} "
              f"(pretrain {p['pretrain_vs_decode_baseline']:.2f}x decode-only " +
              ("decord)" if d["decord"] else "ours on H.264)"))
             for name, p in d["prepared"].items()]
    if "memory_swin_b" in res:
        m, gb = res["memory_swin_b"], 2 ** 30
        rows += [("memory", f"Swin-B {m['input']} {side}: rest / peak",
                  f"{m[side + '_rest_bytes'] / gb:.2f} / {m[side + '_peak_bytes'] / gb:.2f} GiB")
                 for side in ("ours", "ours_grad_checkpoint")]
    w = max(len(r[1]) for r in rows)
    return "\n".join(f"{s:<10} {m:<{w}}  {v}" for s, m, v in rows)


def write_json(res, path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(res, f, indent=1)
    os.replace(tmp, path)  # atomic: an earlier result is never half-overwritten
    print(f"wrote {path}")


def main(argv=None):
    given = parse_flags(BenchConfig, sys.argv[1:] if argv is None else argv, __doc__.split("\n")[0])
    cfg = resolve(BenchConfig(**given))
    if cfg.check:
        res = run_check(cfg)
        write_json(res, cfg.out)
        return res
    patch_t = bevt_model.PRESETS[cfg.preset].patch_size[0]
    res = {"config": asdict(cfg), "machine": machine(cfg)}
    inp = f"{cfg.batch}x3x{cfg.frames}x{cfg.size}x{cfg.size}"
    print(f"bench: preset {cfg.preset}, input {inp}, {cfg.device} {cfg.dtype}, compile {cfg.compile}, "
          f"median of {cfg.n}; "
          f"{res['machine']['torch_threads']} threads, load {res['machine']['load_avg_1min']:.1f}", flush=True)
    res["encoder"] = bench_encoder(cfg)
    res["joint"] = bench_joint(cfg)
    res["tokenizer"] = bench_tokenizers(cfg)
    res["data"] = bench_data(cfg, patch_t)
    if cfg.memory_swin_b:
        res["memory_swin_b"] = bench_memory_swin_b(cfg)
    res["machine"]["load_avg_1min_end"] = os.getloadavg()[0]
    print(table(res))
    write_json(res, cfg.out)
    return res


if __name__ == "__main__":
    run.entry_point(main)
