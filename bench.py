"""Speed and memory benchmark of this BEVT implementation (README "Speed"); issue 8.

BEVT §5 names the cost of pretraining as its limitation, so the speed of every hot path is measured here, on the
machine at hand, never claimed. One run prints one table and writes it as JSON to --out:
  1. encoder forward+backward, ours (model.VideoClassifier's encoder) against torchvision's SwinTransformer3d (what
     swin3d_t/s/b build) with IDENTICAL weights (convert.to_torchvision) and input: interleaved A/B, median of --n,
     the speed-up, max |diff| of the final normed features (fp32), and each side's peak memory;
  2. FLOPs of that step (torch.utils.flop_counter) and the achieved FLOP/s as a fraction of a measured peak: a square
     matmul in the same dtype on the same device, with the threads torch uses;
  3. one joint pretraining step (the work of train.train_step) on synthetic tensors (no data loading) in clips/s and
     images/s, and where its time goes (synchronised timers around each phase of a loop that mirrors train_step);
  4. tokenizer throughput (frames/s) of the full-size DALL-E encoder and the default small VQ tokenizer;
  5. data pipeline throughput (clips/s per worker, in-process) on the synthetic videos.

    python bench.py                                   # tiny preset, 1 x 3 x 16 x 224 x 224, on the CPU if no GPU
    python bench.py --device cuda                     # base preset, batch 8, bf16 autocast
    python bench.py --preset nano --frames 4 --size 128 --n 1   # seconds (tests/test_bench.py)
"""
import ctypes
import dataclasses
import gc
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torchvision
from torch.utils import flop_counter
from torchvision.models.video.swin_transformer import SwinTransformer3d

import data
import masking
import model as bevt_model
import synthetic as synthetic_set
import convert
import engine
import tokenizer as tok
from cli import parse_flags

# ----------------------------------------------------------------------------------------------------------------------
# config


@dataclass
class BenchConfig:
    # auto: tiny on CPU, base on GPU
    preset: str = field(default="auto", metadata={"choices": ("auto",) + tuple(bevt_model.PRESETS)})
    device: str = field(default="auto", metadata={"choices": ("auto", "cpu", "cuda")})
    batch: int = 0  # clips per step; 0: 1 on CPU, 8 on GPU
    frames: int = 16  # official pretraining clip: SampleFrames(clip_len=16, frame_interval=8)
    size: int = 224  # student input (official RandomCrop 224); the tokenizers see size / 2
    images_per_clip: int = 8  # joint step: official 32 images per 4 clips per GPU micro-batch (TrainConfig)
    n: int = 5  # timed repetitions; every figure is a median
    warmup: int = 1  # untimed repetitions first
    # auto: bf16 on GPU (fp32 on CPU, as train.py)
    dtype: str = field(default="auto", metadata={"choices": ("auto", "float32", "bfloat16", "float16")})
    compile: bool = False  # torch.compile the encoders (both sides of the A/B; the joint step's encoder)
    memory: bool = True  # peak memory per side (CPU: one fresh subprocess per side)
    joint_tokenizer: str = field(default="dalle", metadata={"choices": ("dalle", "vq")})  # the paper's is DALL-E
    dalle_precision: str = field(default="fp32", metadata={"choices": ("fp32", "official", "bf16")})  # DalleConfig
    tokenizer_frames: int = 0  # frames per tokenizer call; 0: 4 on CPU, 64 on GPU
    matmul_size: int = 0  # side of the square peak matmul; 0: 2048 on CPU, 8192 on GPU
    data_clips: int = 4  # clips read per data-pipeline measurement
    pretrain_sampling: tuple = (16, 8)  # (clip_len, frame_interval): official pretraining SampleFrames
    finetune_sampling: tuple = (32, 2)  # official K400 finetuning SampleFrames
    seed: int = 0
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
    if min(cfg.n, cfg.batch, cfg.images_per_clip, cfg.data_clips) < 1 or cfg.warmup < 0:
        raise SystemExit("--n, --batch, --images-per-clip and --data-clips must be >= 1, --warmup >= 0")
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


# The counter has no formula for the CPU flash-attention kernel (model.py calls it directly); give it the SDPA one.
CPU_FLASH_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
        lambda q, k, v, *args, out_shape=None, **kw: flop_counter.sdpa_flop_count(q, k, v),
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward:
        lambda do, q, k, v, *args, out_shape=None, **kw: flop_counter.sdpa_backward_flop_count(do, q, k, v)}


def count_flops(fn):
    """FLOPs of one call of fn as executed (matmuls, convolutions, attention, recomputation included; elementwise
    ops are not counted)."""
    with flop_counter.FlopCounterMode(display=False, custom_mapping=CPU_FLASH_FLOPS) as counter:
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
    """Fresh process: build ONE side, then report its peak RSS increase over one forward+backward: the high-water
    mark after the step minus the one once the model and the input exist (reset there)."""
    torch.manual_seed(cfg.seed)
    mcfg = encoder_config(cfg)
    net = (build_ours if side == "ours" else build_torchvision)(mcfg).train()
    x = clip_input(cfg)
    reset_peak_rss()
    base = peak_rss_bytes()
    step_fn(net, x, cfg)()
    queue.put(peak_rss_bytes() - base)


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
    ctx = multiprocessing.get_context("spawn")  # fresh interpreter: nothing of the parent's heap is counted
    queue = ctx.Queue()
    child = ctx.Process(target=_memory_child, args=(cfg, side, queue))
    child.start()
    out = queue.get()
    child.join()
    return out


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
# 3. the joint pretraining step


def build_tokenizer(kind, cfg):
    """A frozen tokenizer with random weights (the cost does not depend on the values), as load_tokenizer returns it."""
    if kind == "dalle":
        t = tok.DalleEncoder(tok.DalleConfig(precision=cfg.dalle_precision))
    else:
        t = tok.VQTokenizer(tok.VQConfig())
    t = t.to(cfg.device).eval().requires_grad_(False)
    return t.to(memory_format=torch.channels_last) if cfg.device.startswith("cuda") else t


def joint_batch(cfg, patch_t):
    """One micro-batch as the loaders deliver it (CPU tensors): `batch` clips and `batch * images_per_clip` images,
    uint8 tokenizer views, normalised student views, tube masks (video) and blockwise masks (image), True = masked."""
    rng = np.random.default_rng(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    B, I, T, S, h = cfg.batch, cfg.batch * cfg.images_per_clip, cfg.frames, cfg.size, cfg.size // 16
    video = torch.randint(0, 256, (B, 3, T, S, S), dtype=torch.uint8, generator=g)  # (B, 3, T, H, W)
    image = torch.randint(0, 256, (I, 3, S, S), dtype=torch.uint8, generator=g)  # (I, 3, H, W)
    # the tokenizer views (data.tokenizer_view: half size); random pixels, as the cost does not depend on them
    video_tok = torch.randint(0, 256, (B, 3, T, S // 2, S // 2), dtype=torch.uint8, generator=g)  # (B, 3, T, H/2, W/2)
    image_tok = torch.randint(0, 256, (I, 3, S // 2, S // 2), dtype=torch.uint8, generator=g)  # (I, 3, H/2, W/2)
    video_mask = np.stack([masking.video_mask("tube", T // patch_t, h, h, rng=rng) for _ in range(B)])  # (B, T', h, w)
    image_mask = np.stack([masking.blockwise_mask(h, h, h * h // 2, rng=rng) for _ in range(I)])  # (I, h, w)
    return {"video": data.normalize_batch(video), "video_tok": video_tok,
            "video_mask": torch.from_numpy(video_mask),
            "image": data.normalize_batch(image), "image_tok": image_tok,
            "image_mask": torch.from_numpy(image_mask)}


class PhaseClock:
    """Synchronised wall-clock seconds per named phase."""

    def __init__(self, device):
        self.device, self.times = device, {}
        sync(device)
        self.last = time.perf_counter()

    def lap(self, name):
        sync(self.device)
        now = time.perf_counter()
        self.times[name], self.last = now - self.last, now


# official cfg swin_base_patch244_window877_bevt_in1k_k400.py: AdamW lr 5e-4, wd 0.05, betas (0.9, 0.999), clip 3, λ 1
OFFICIAL = dict(lr=5e-4, weight_decay=0.05, betas=(0.9, 0.999), clip_grad=3.0, lam=1.0)


def joint_step(model, tokenizer, batch, optimizer, scaler, cfg, env):
    """train.train_step for one micro-batch on one process (train.py is a script, not imported): targets, the two
    streams, Eq. (5) normalised by the batch's masked positions, backward, engine.optimizer_step."""
    b = {k: v.to(cfg.device, non_blocking=True) for k, v in batch.items()}
    counts = bevt_model.target_counts(b["video_mask"], b["image_mask"], model.cfg.patch_size[0])
    with engine.autocast_context(cfg.device, cfg.dtype):
        out = model(video=b["video"], video_mask=b["video_mask"], video_ids=tokenizer.encode(b["video_tok"]),
                    image=b["image"], image_mask=b["image_mask"], image_ids=tokenizer.encode(b["image_tok"]))
    loss = bevt_model.objective({k: v[0] for k, v in out.items()}, counts, OFFICIAL["lam"])
    scaler.scale(loss).backward()
    return engine.optimizer_step(optimizer, scaler, torch.isfinite(loss.detach()), OFFICIAL["clip_grad"], env,
                                 OFFICIAL["lr"])


def phase_step(model, tokenizer, batch, optimizer, cfg):
    """The work of joint_step, split into timed phases (same calls, same order)."""
    clock = PhaseClock(cfg.device)
    b = {k: v.to(cfg.device, non_blocking=True) for k, v in batch.items()}
    clock.lap("input_copy")
    video_ids, image_ids = tokenizer.encode(b["video_tok"]), tokenizer.encode(b["image_tok"])  # (B, T, h, w), (I, h, w)
    clock.lap("tokenizer")
    with engine.autocast_context(cfg.device, cfg.dtype):
        f_img = model.forward_encoder(b["image"], b["image_mask"])  # image stream first, as BEVT.forward
        f_vid = model.forward_encoder(b["video"], b["video_mask"])
        clock.lap("encoder")
        loss_mim, _, _ = model.forward_loss(model.forward_decoder(*f_img, video=False), image_ids.unsqueeze(1),
                                         b["image_mask"].unsqueeze(1))  # BEVT Eq. (3)
        target_mask = masking.mask_to_target_grid(b["video_mask"], model.cfg.patch_size[0])  # (B, T, h, w)
        loss_mvm, _, _ = model.forward_loss(model.forward_decoder(*f_vid, video=True), video_ids,
                                            target_mask)  # BEVT Eq. (4)
        counts = bevt_model.target_counts(b["video_mask"], b["image_mask"], model.cfg.patch_size[0])
        loss = bevt_model.objective({"mim": loss_mim, "mvm": loss_mvm}, counts, OFFICIAL["lam"])  # BEVT Eq. (5)
    clock.lap("decoder_loss")
    loss.backward()
    clock.lap("backward")
    torch.nn.utils.clip_grad_norm_(model.parameters(), OFFICIAL["clip_grad"])
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    clock.lap("optimizer")
    return clock.times


def bench_joint(cfg):
    torch.manual_seed(cfg.seed)
    tokenizer = build_tokenizer(cfg.joint_tokenizer, cfg)
    mcfg = dataclasses.replace(bevt_model.PRESETS[cfg.preset], vocab_size=tokenizer.vocab_size)
    model = bevt_model.BEVT(mcfg).to(cfg.device).train()
    groups = engine.param_groups(model, OFFICIAL["weight_decay"], engine.NO_DECAY_KEYS)
    optimizer = torch.optim.AdamW(groups, lr=OFFICIAL["lr"], betas=OFFICIAL["betas"])
    env = engine.Dist(False, 0, 0, 1, cfg.device)
    scaler = engine.make_scaler(env, cfg.dtype)
    batch = joint_batch(cfg, mcfg.patch_size[0])
    full = lambda: joint_step(model, tokenizer, batch, optimizer, scaler, cfg, env)  # noqa: E731
    flops = count_flops(full)  # eager: the counter does not see inside compiled graphs
    one = batch["image_tok"][:1]  # (1, 3, H, W): tokenizer FLOPs do not depend on content, so count one frame
    tok_flops = count_flops(lambda: tokenizer.encode(one)) * (cfg.batch * cfg.frames + cfg.batch * cfg.images_per_clip)
    if cfg.compile:
        model.encoder.compile()  # in place: keys unchanged, joint_step and phase_step both use it
    phases = []
    timed_phases = lambda: phases.append(phase_step(model, tokenizer, batch, optimizer, cfg))  # noqa: E731
    t_full, _ = median_times([full, timed_phases], cfg)
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
    frames = torch.randint(0, 256, (cfg.tokenizer_frames, 3, cfg.size, cfg.size), dtype=torch.uint8, generator=g)
    frames = frames.to(cfg.device)  # (N, 3, H, W) student views; encode makes the H/2 view
    out = {"frames_per_call": cfg.tokenizer_frames, "view_px": cfg.size // 2}
    for kind in ("dalle", "vq"):
        t = build_tokenizer(kind, cfg)
        (s,) = median_times([lambda: t.encode(frames)], cfg)
        out[kind + "_frames_per_s"] = cfg.tokenizer_frames / s
        out[kind + "_flops_per_frame"] = count_flops(lambda: t.encode(frames[:1]))
    return out


def bench_data(cfg, patch_t):
    """Clips/s of one worker (in-process, as num_workers=0): decode + the official transforms, per sampling."""
    paths = synthetic_set.synthetic_paths(synthetic_set.synthetic_root())
    records, _ = data.read_annotations(paths["k400_train_csv"], paths["mp4_root"])
    records = records[:cfg.data_clips]
    for r in records:  # frame counts are cached per process after the first epoch; measure the steady state
        data.video_frame_count(r.path)
    scale = lambda s: round(cfg.size * s / 224)  # noqa: E731  official short sides are for 224 crops
    (pl, pi), (fl, fi) = cfg.pretrain_sampling, cfg.finetune_sampling
    pre = data.PretrainVideoDataset(records, clip_len=pl, frame_interval=pi, crop=cfg.size,
                                    rescale=(scale(256), scale(320)), patch_t=patch_t, seed=cfg.seed)
    fine = data.FinetuneVideoDataset(records, train=True, sampling="dense", clip_len=fl, frame_interval=fi,
                                     crop=cfg.size, short_side=scale(256), seed=cfg.seed)
    sc = synthetic_set.SyntheticConfig
    out = {"videos": f"synthetic {os.path.splitext(str(records[0].path))[1]} {sc.width}x{sc.height}"}
    for name, ds in (("pretrain", pre), ("finetune", fine)):
        times = [timed(lambda: ds[i], "cpu") for i in range(len(records))]
        out[name + "_clips_per_s"] = 1 / statistics.median(times)
    return out


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
        ("data", "pretrain clips/s per worker", f"{d['pretrain_clips_per_s']:.2f}"),
        ("data", "finetune clips/s per worker", f"{d['finetune_clips_per_s']:.2f}")]
    w = max(len(r[1]) for r in rows)
    return "\n".join(f"{s:<10} {m:<{w}}  {v}" for s, m, v in rows)


def main(argv=None):
    given = parse_flags(BenchConfig, sys.argv[1:] if argv is None else argv, __doc__.split("\n")[0])
    cfg = resolve(BenchConfig(**given))
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
    res["machine"]["load_avg_1min_end"] = os.getloadavg()[0]
    print(table(res))
    tmp = cfg.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(res, f, indent=1)
    os.replace(tmp, cfg.out)  # atomic: an earlier result is never half-overwritten
    print(f"wrote {cfg.out}")
    return res


if __name__ == "__main__":
    main()
