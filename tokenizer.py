"""Visual tokenizers that make BEVT's MIM/MVM targets: the DALL-E dVAE encoder and a small offline VQ-VAE.

BEVT §3 "Tokenizer": every frame (and image) is downsampled by 1/2 and mapped to discrete ids by the frozen DALL-E
dVAE encoder (V = 8192, one id per 16x16 patch of the 224 view). Mirrors openai/DALL-E dall_e/encoder.py and
dall_e/utils.py, loaded as in official mmaction/models/heads/bevt_multisource_head.py:32,59; the preprocessing is
official configs/.../swin_base_patch244_window877_bevt_in1k_k400.py:40-73 (CopyResize 112 lanczos, MapPixels).

Both tokenizers share one interface, `encode(frames) -> LongTensor`:
    (N, 3, H, W) uint8 0..255 or float 0..1   -> (N, H/16, W/16)      the student's augmented view, e.g. 224
    (B, 3, T, H, W)                            -> (B, T, H/16, W/16)   all T frames in one batched call
`encode` makes the H/2 tokenizer view itself (Lanczos-4, see `lanczos4_resize`), applies its own pixel mapping
and runs frozen under torch.no_grad() with autocast off. Neither tokenizer belongs to the student's state_dict.

    python tokenizer.py convert encoder.pkl dalle_encoder.pt    # official weights -> safe .pt (the only unpickler)
    python tokenizer.py train --data DIR --out tok.pt            # the small VQ tokenizer of the embedded default
"""
import dataclasses
import hashlib
import math
import os
import pickle
import sys
import time
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from cli import parse_flags

LOGIT_LAPLACE_EPS = 0.1  # official: dall_e/utils.py:8


# --- configs ---------------------------------------------------------------------------------------------------

@dataclass
class DalleConfig:
    n_hid: int = 256  # official: dall_e/encoder.py Encoder.n_hid (reduced n_hid=64 runs the same code path in tests)
    n_blk_per_group: int = 2  # official: Encoder.n_blk_per_group
    vocab_size: int = 8192  # BEVT §3 "Tokenizer": 8192 visual tokens
    # "fp32": every conv in fp32 (the official CPU path, bit-identical; STYLE rule 22). "official": on CUDA all convs
    # but the output conv in fp16, as dall_e.utils.Conv2d (use_float16=True): the targets of BEiT/BEVT GPU runs.
    # "bf16": the same casts in bfloat16 (speed only, not parity). On CPU all three are fp32, as in the official code.
    precision: str = "fp32"


@dataclass
class VQConfig:  # spec tokenizer_and_data.md §4.3, measured on the 2-core CPU: 52 s, 21.9 dB, 452/512 codes
    hid: int = 32  # encoder width; the bottleneck has 2*hid channels
    code_dim: int = 32
    vocab_size: int = 512  # more codes stay dead with ~1e5 training vectors (spec §4.3)
    size: int = 112  # tokenizer-view size of the training frames (224 crop / 2)
    num_frames: int = 3256  # frames read by `train`/default_tokenizer: 3000 train + 256 validation
    val_frames: int = 256
    steps: int = 300
    batch_size: int = 32
    lr: float = 2e-3  # Adam
    commitment: float = 0.25  # VQ-VAE commitment weight (beta)
    ema_decay: float = 0.99
    ema_eps: float = 1e-5  # Laplace smoothing of the EMA cluster sizes
    kmeans_iters: int = 10  # k-means init on the first batch (BEiT v2 norm_ema_quantizer.py)
    dead_threshold: float = 1.0  # restart a code whose EMA count falls below this
    seed: int = 0
    log_every: int = 50


# --- the tokenizer view: Lanczos-4 downsampling ----------------------------------------------------------------

def lanczos4_matrix(n_in, n_out, device=None):
    """(n_out, n_in) float64 matrix M with out = M @ in along one axis: the cv2 INTER_LANCZOS4 weights.
    No antialiasing, as cv2: the kernel is not widened on downscale."""
    src = (torch.arange(n_out, dtype=torch.float64, device=device) + 0.5) * (n_in / n_out) - 0.5  # (n_out,) as cv2
    left = src.floor()
    taps = torch.arange(-3, 5, dtype=torch.float64, device=device)  # 8 taps, floor(src)-3 .. floor(src)+4
    t = (src - left)[:, None] - taps[None, :]  # (n_out, 8) distance from the sample point to each tap
    w = torch.sinc(t) * torch.sinc(t / 4)  # L(t) = sinc(t) sinc(t / 4)
    w = w / w.sum(1, keepdim=True)  # sum 1 per output
    idx = (left[:, None] + taps[None, :]).clamp(0, n_in - 1).long()  # (n_out, 8) replicate border, as cv2
    return torch.zeros(n_out, n_in, dtype=torch.float64, device=device).scatter_add_(1, idx, w)


def lanczos4_resize(x, out_h, out_w):
    """(N, C, H, W) in 0..255 levels -> (N, C, out_h, out_w) float32 rounded to integer levels 0..255.

    BEVT resizes the uint8 224 crop with mmcv.imresize(..., 'lanczos') = cv2.INTER_LANCZOS4 (official:
    mmaction/datasets/pipelines/augmentations.py:1430-1456 CopyResize). Same kernel, geometry, border and rounding as
    cv2, but cv2 sums 11-bit fixed-point weights (INTER_RESIZE_COEF_BITS) in integers and we use float64, so an output
    can differ from cv2 by one grey level. BEiT instead resizes the original-resolution box with PIL LANCZOS (a=3,
    antialiased); on a real crop PIL and cv2 differ by 2.97 levels on average (spec §2.3).
    """
    N, C, H, W = x.shape
    mh = lanczos4_matrix(H, out_h, x.device)  # (out_h, H)
    mw = lanczos4_matrix(W, out_w, x.device)  # (out_w, W)
    y = mh @ x.double() @ mw.T  # (N, C, out_h, out_w), separable: rows then columns
    return torch.floor(y + 0.5).clamp_(0, 255).float()  # cv2 saturate_cast<uchar>: round half up, clip


def tokenizer_view(frames):
    """Student view (N, 3, H, W) uint8 or float 0..1 -> tokenizer view (N, 3, H/2, W/2) float 0..1 on uint8 levels."""
    N, C, H, W = frames.shape
    if C != 3 or H % 16 or W % 16:
        raise ValueError(f"tokenizer input must be (N, 3, H, W) with H, W divisible by 16, got {tuple(frames.shape)}")
    if frames.dtype != torch.uint8 and not frames.is_floating_point():
        raise ValueError(f"tokenizer input must be uint8 or float, got {frames.dtype}")
    # BEVT always resizes a uint8 image, so a float view is put on the same 256 levels first
    levels = frames.float() if frames.dtype == torch.uint8 else torch.floor(frames.float() * 255 + 0.5).clamp_(0, 255)
    return lanczos4_resize(levels, H // 2, W // 2) / 255  # BEVT §3 "Tokenizer": downsampled by 1/2


def map_pixels(x):
    """Logit-Laplace input mapping [0, 1] -> [0.1, 0.9] (official: dall_e/utils.py:45-51, BEVT MapPixels)."""
    return (1 - 2 * LOGIT_LAPLACE_EPS) * x + LOGIT_LAPLACE_EPS


class Tokenizer(nn.Module):
    """Shared `encode`; a subclass implements `ids_from_view(view (N, 3, h, w) float 0..1) -> (N, h/8, w/8)`."""

    @torch.no_grad()
    def encode(self, frames):
        # STYLE rule 22: targets under no_grad, outside autocast; the result does not depend on train/eval mode.
        frames = frames.to(next(self.parameters()).device)
        with torch.autocast(device_type=frames.device.type, enabled=False):
            if frames.dim() == 5:
                B, C, T, H, W = frames.shape
                flat = frames.permute(0, 2, 1, 3, 4).reshape(B * T, C, H, W)  # (B*T, 3, H, W)
                return self.ids_from_view(tokenizer_view(flat)).reshape(B, T, H // 16, W // 16)  # (B, T, H/16, W/16)
            if frames.dim() == 4:
                return self.ids_from_view(tokenizer_view(frames))  # (N, H/16, W/16)
            raise ValueError(f"tokenizer input must be (N, 3, H, W) or (B, 3, T, H, W), got {tuple(frames.shape)}")


# --- DALL-E dVAE encoder (state_dict keys identical to the official encoder.pkl) -------------------------------

class DalleConv2d(nn.Module):
    """official: dall_e/utils.py Conv2d: parameters `w` (n_out, n_in, kw, kw) and `b`, stride 1, 'same' padding."""

    def __init__(self, n_in, n_out, kw, low_dtype=None):
        super().__init__()
        self.kw, self.low_dtype = kw, low_dtype  # low_dtype: fp16/bf16 on CUDA ("official"/"bf16"), None = fp32
        self.w = nn.Parameter(torch.randn(n_out, n_in, kw, kw) / math.sqrt(n_in * kw ** 2))  # official init
        self.b = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        dtype = self.low_dtype if self.low_dtype is not None and self.w.is_cuda else torch.float32
        return F.conv2d(x.to(dtype), self.w.to(dtype), self.b.to(dtype), padding=(self.kw - 1) // 2)


class DalleEncoderBlock(nn.Module):
    """official: dall_e/encoder.py EncoderBlock: pre-activation residual block, out = id + post_gain * res."""

    def __init__(self, n_in, n_out, n_layers, low_dtype):
        super().__init__()
        n_hid = n_out // 4
        self.post_gain = 1 / n_layers ** 2  # 1/64 for 4 groups x 2 blocks
        self.id_path = DalleConv2d(n_in, n_out, 1, low_dtype) if n_in != n_out else nn.Identity()
        self.res_path = nn.Sequential(OrderedDict([
            ("relu_1", nn.ReLU()), ("conv_1", DalleConv2d(n_in, n_hid, 3, low_dtype)),
            ("relu_2", nn.ReLU()), ("conv_2", DalleConv2d(n_hid, n_hid, 3, low_dtype)),
            ("relu_3", nn.ReLU()), ("conv_3", DalleConv2d(n_hid, n_hid, 3, low_dtype)),
            ("relu_4", nn.ReLU()), ("conv_4", DalleConv2d(n_hid, n_out, 1, low_dtype))]))

    def forward(self, x):
        return self.id_path(x) + self.post_gain * self.res_path(x)  # official order of operations (bit-exact)


class DalleEncoder(Tokenizer):
    """official: dall_e/encoder.py Encoder: 7x7 conv, 4 groups x n_blk blocks (max-pool after groups 1-3), ReLU,
    1x1 conv to V logits. (B, 3, H, W) float32 -> (B, V, H/8, W/8); 53,786,240 parameters at the defaults."""

    def __init__(self, cfg):
        super().__init__()
        if cfg.precision not in ("fp32", "official", "bf16"):
            raise ValueError(f"DalleConfig.precision must be fp32|official|bf16, got {cfg.precision!r}")
        self.cfg, self.vocab_size = cfg, cfg.vocab_size
        low = {"fp32": None, "official": torch.float16, "bf16": torch.bfloat16}[cfg.precision]
        n, nb = cfg.n_hid, cfg.n_blk_per_group
        n_layers = 4 * nb  # official: group_count * n_blk_per_group

        def group(n_in, n_out, pool):
            blocks = [(f"block_{i + 1}", DalleEncoderBlock(n_in if i == 0 else n_out, n_out, n_layers, low))
                      for i in range(nb)]
            return nn.Sequential(OrderedDict(blocks + ([("pool", nn.MaxPool2d(kernel_size=2))] if pool else [])))

        self.blocks = nn.Sequential(OrderedDict([
            ("input", DalleConv2d(3, n, 7, low)),
            ("group_1", group(n, n, True)), ("group_2", group(n, 2 * n, True)),
            ("group_3", group(2 * n, 4 * n, True)), ("group_4", group(4 * n, 8 * n, False)),
            ("output", nn.Sequential(OrderedDict([
                ("relu", nn.ReLU()), ("conv", DalleConv2d(8 * n, cfg.vocab_size, 1, None))])))]))  # output conv: fp32

    def forward(self, x):
        B, C, H, W = x.shape
        if C != 3 or x.dtype != torch.float32:  # official Encoder.forward checks
            raise ValueError(f"DalleEncoder expects float32 (B, 3, H, W), got {x.dtype} {tuple(x.shape)}")
        return self.blocks(x)  # (B, V, H/8, W/8)

    def ids_from_view(self, view):
        x = map_pixels(view)  # the one place map_pixels is applied (BEiT applies it in data, BEVT in MapPixels)
        if x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)  # NHWC convs for cuDNN tensor cores
        return self(x).argmax(1)  # (N, h/8, w/8) official: bevt_multisource_head.py:59 argmax over V


# --- small VQ-VAE tokenizer (the offline default) --------------------------------------------------------------

class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 1)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class VQTokenizer(Tokenizer):
    """VQ-VAE with an EMA codebook (van den Oord et al. 2017, App. A.1): 8x downsampling, V unit-norm codes of dim
    code_dim (l2-normalised codes as BEiT v2 norm_ema_quantizer.py: the encoder can neither shrink nor blow up z).
    Buffers `codebook`, `ema_count`, `ema_sum` are updated by `train_vq_tokenizer` only; `encode` is pure."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg, self.vocab_size = cfg, cfg.vocab_size
        h, V, D = cfg.hid, cfg.vocab_size, cfg.code_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(3, h, 4, 2, 1), nn.ReLU(), nn.Conv2d(h, h, 4, 2, 1), nn.ReLU(), nn.Conv2d(h, 2 * h, 4, 2, 1),
            ResBlock(2 * h), nn.ReLU(), nn.Conv2d(2 * h, D, 1))
        self.decoder = nn.Sequential(
            nn.Conv2d(D, 2 * h, 3, padding=1), ResBlock(2 * h), nn.ReLU(), nn.ConvTranspose2d(2 * h, h, 4, 2, 1),
            nn.ReLU(), nn.ConvTranspose2d(h, h, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(h, 3, 4, 2, 1), nn.Sigmoid())
        for m in self.modules():  # He init: PyTorch's default shrinks activations ~2.5x per layer, and 10 layers
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):  # of that leave the AE on a long mean-colour plateau
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        self.register_buffer("codebook", torch.zeros(V, D))
        self.register_buffer("ema_count", torch.zeros(V))
        self.register_buffer("ema_sum", torch.zeros(V, D))

    def embed(self, view):
        """view (N, 3, h, w) float 0..1 -> z (N, h/8, w/8, D) channels-last."""
        z = self.encoder(view * 2 - 1).permute(0, 2, 3, 1)  # (N, h', w', D); its own pixel mapping: [-1, 1]
        return F.normalize(z, dim=-1)  # (N, h', w', D) on the unit sphere, like the codes

    def nearest(self, z):
        """Nearest code, z (..., D) -> ids (...): ||z - c||^2 = ||z||^2 - 2 z.c + ||c||^2, and ||z||^2 is constant."""
        d = self.codebook.pow(2).sum(1) - 2 * z @ self.codebook.T  # (..., V)
        return d.argmin(-1)

    def ids_from_view(self, view):
        return self.nearest(self.embed(view))  # (N, h/8, w/8)

    def reconstruct(self, view):
        """(N, 3, h, w) 0..1 -> reconstruction through the quantised codes (no straight-through needed)."""
        ids = self.ids_from_view(view)
        return self.decoder(self.codebook[ids].permute(0, 3, 1, 2))  # (N, 3, h, w)


def _kmeans(z, k, iters, g):
    """Lloyd's k-means on z (M, D) from k distinct random points -> centres (k, D)."""
    c = z[torch.randperm(len(z), generator=g)[:k]].clone()
    for _ in range(iters):
        ids = torch.cdist(z, c).argmin(1)
        count = torch.bincount(ids, minlength=k).float()
        sums = torch.zeros_like(c).index_add_(0, ids, z)
        c = torch.where(count[:, None] > 0, sums / count.clamp(min=1)[:, None], c)  # an empty cluster keeps its centre
    return c


def _vq_step(tok, view, opt, step, g):
    """One training step: encode, EMA codebook update (+ k-means init, dead-code restarts), reconstruct, Adam."""
    cfg = tok.cfg
    z = tok.embed(view)  # (B, h', w', D)
    flat = z.detach().reshape(-1, cfg.code_dim)  # (M, D)
    with torch.no_grad():
        if step == 0:  # k-means init on the first batch (BEiT v2 norm_ema_quantizer.py)
            c = F.normalize(_kmeans(flat, cfg.vocab_size, cfg.kmeans_iters, g), dim=-1)  # (V, D)
            # counts start at 1, so a code unused in a step falls below dead_threshold and is restarted at once
            tok.codebook.copy_(c), tok.ema_count.fill_(1.0), tok.ema_sum.copy_(c)
        ids = tok.nearest(flat)  # (M,)
        onehot = F.one_hot(ids, cfg.vocab_size).float()  # (M, V)
        tok.ema_count.mul_(cfg.ema_decay).add_(onehot.sum(0), alpha=1 - cfg.ema_decay)
        tok.ema_sum.mul_(cfg.ema_decay).add_(onehot.T @ flat, alpha=1 - cfg.ema_decay)
        n = tok.ema_count.sum()
        smoothed = (tok.ema_count + cfg.ema_eps) / (n + cfg.vocab_size * cfg.ema_eps) * n  # Laplace smoothing
        tok.codebook.copy_(F.normalize(tok.ema_sum / smoothed[:, None], dim=-1))
        dead = (tok.ema_count < cfg.dead_threshold).nonzero().squeeze(1)
        if len(dead):  # restart dead codes at random encoder outputs of this batch, with a count of 1
            fresh = flat[torch.randint(len(flat), (len(dead),), generator=g)]
            tok.codebook[dead], tok.ema_sum[dead], tok.ema_count[dead] = fresh, fresh, 1.0
    zq = tok.codebook[ids].reshape(z.shape)  # (B, h', w', D)
    # Summed squared errors per token, as in van den Oord et al. Eq. (3): with per-element means instead, the
    # commitment would outweigh reconstruction by pixels-per-latent-element (192/32) and freeze the assignments.
    commit = F.mse_loss(z, zq, reduction="sum") / len(flat)  # pulls the encoder to its code; codes move by EMA
    zq = z + (zq - z).detach()  # straight-through gradient
    recon = tok.decoder(zq.permute(0, 3, 1, 2))  # (B, 3, h, w)
    loss = F.mse_loss(recon, view, reduction="sum") / len(flat) + cfg.commitment * commit
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item(), len(dead)


@torch.no_grad()
def vq_report(tok, views):
    """Validation PSNR (dB), codes used and code perplexity on views (N, 3, S, S) float 0..1."""
    mse = sum(F.mse_loss(tok.reconstruct(v), v, reduction="sum").item() for v in views.split(64)) / views.numel()
    ids = torch.cat([tok.ids_from_view(v).flatten() for v in views.split(64)])
    p = ids.unique(return_counts=True)[1] / len(ids)  # (codes used,) frequencies
    perplexity = torch.exp(-(p * p.log()).sum()).item()
    return {"psnr": 10 * math.log10(1 / mse), "codes_used": len(p), "perplexity": perplexity}


def train_vq_tokenizer(frames, cfg, log=print):
    """Train a VQTokenizer on uint8 frames (N, 3, S, S) already at the tokenizer-view size S. Deterministic given
    cfg.seed and the thread count: init under a forked RNG, batches and restarts from a private torch.Generator."""
    N, C, S, _ = frames.shape
    if frames.dtype != torch.uint8 or C != 3 or S % 8 or N <= cfg.val_frames:
        raise ValueError(f"frames must be uint8 (N > val_frames={cfg.val_frames}, 3, S, S), S % 8 == 0, "
                         f"got {frames.dtype} {tuple(frames.shape)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        tok = VQTokenizer(cfg)
    g = torch.Generator().manual_seed(cfg.seed)
    views = frames.float() / 255
    val, train = views[:cfg.val_frames], views[cfg.val_frames:]
    opt = torch.optim.Adam(tok.parameters(), lr=cfg.lr)
    t0, restarts = time.time(), 0
    for step in range(cfg.steps):
        batch = train[torch.randint(len(train), (cfg.batch_size,), generator=g)]  # (batch, 3, S, S)
        loss, n_dead = _vq_step(tok, batch, opt, step, g)
        restarts += n_dead
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            log(f"vq step {step + 1}/{cfg.steps} loss {loss:.4f} dead-code restarts {restarts} "
                f"{time.time() - t0:.0f}s")
    r = vq_report(tok.eval(), val)
    log(f"vq tokenizer: val PSNR {r['psnr']:.1f} dB, codes used {r['codes_used']}/{cfg.vocab_size}, "
        f"perplexity {r['perplexity']:.0f} ({len(val)} val frames, {time.time() - t0:.0f}s)")
    return tok.requires_grad_(False)


# --- checkpoints: our own .pt files only (weights_only=True) ---------------------------------------------------

def _atomic_save(obj, path):
    """torch.save to a temp file beside `path`, then rename: a crash never leaves a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_tokenizer(tok, path):
    kind = "dalle" if isinstance(tok, DalleEncoder) else "vq"
    _atomic_save({"kind": kind, "config": asdict(tok.cfg), "state_dict": tok.state_dict()}, path)


def load_tokenizer(path, device, precision=None):
    """Our .pt ({'kind': 'dalle'|'vq', 'config', 'state_dict'}) -> frozen eval tokenizer on `device`.
    `precision` overrides a DALL-E file's DalleConfig.precision ("fp32" | "official" | "bf16")."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a tokenizer .pt written by tokenizer.py (an official encoder.pkl must first "
                         f"be converted: python tokenizer.py convert encoder.pkl dalle_encoder.pt): {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("kind") not in ("dalle", "vq"):
        raise ValueError(f"{path}: expected a dict with kind 'dalle' or 'vq'")
    if ckpt["kind"] == "dalle":
        cfg = DalleConfig(**ckpt["config"])
        tok = DalleEncoder(dataclasses.replace(cfg, precision=precision or cfg.precision))
    else:
        tok = VQTokenizer(VQConfig(**ckpt["config"]))
    tok.load_state_dict(ckpt["state_dict"], strict=True)
    tok = tok.to(device).eval().requires_grad_(False)
    if torch.device(device).type == "cuda":
        tok = tok.to(memory_format=torch.channels_last)  # weights in NHWC beside the NHWC input of ids_from_view
    return tok


def _train_and_save(cfg, data_root, path):
    """Train a VQTokenizer(cfg) on frames from `data_root` (data.load_frames) and save it atomically to `path`."""
    import data  # lazy: only training needs the dataset readers
    frames = data.load_frames(data_root, cfg.num_frames, cfg.size, cfg.seed)  # (N, 3, size, size) uint8
    save_tokenizer(train_vq_tokenizer(frames, cfg), path)


def default_tokenizer(path, data_root, size):
    """The embedded default: load `path`, or first train the default VQ for tokenizer-view size `size` on `data_root`
    and save it there. Deterministic, so concurrent ranks agree."""
    if not Path(path).exists():
        _train_and_save(VQConfig(size=size), data_root, path)
    return load_tokenizer(path, "cpu")


# --- the official encoder.pkl: the only function that unpickles ------------------------------------------------

class _PickledDalleModule(nn.Module):
    """Inert stand-in for dall_e.encoder.Encoder/EncoderBlock and dall_e.utils.Conv2d: unpickling only restores its
    __dict__ (attrs fields, _parameters, _modules) through nn.Module.__setstate__; no dall_e code runs."""


_DALLE_CLASSES = ("dall_e.encoder.Encoder", "dall_e.encoder.EncoderBlock", "dall_e.utils.Conv2d")
_ALLOWED = {  # path B allow-list: the globals a pickled dall_e.Encoder references (spec §1.5, pickletools)
    ("collections", "OrderedDict"): OrderedDict, ("builtins", "set"): set, ("__builtin__", "set"): set,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter, ("torch", "device"): torch.device,
    ("torch.nn.modules.container", "Sequential"): nn.Sequential, ("torch.nn.modules.activation", "ReLU"): nn.ReLU,
    ("torch.nn.modules.pooling", "MaxPool2d"): nn.MaxPool2d, ("torch.nn.modules.linear", "Identity"): nn.Identity,
    **{tuple(c.rsplit(".", 1)): _PickledDalleModule for c in _DALLE_CLASSES}}


class _restricted_pickle:  # a `pickle_module` for torch.load: Unpickler plus load, both restricted to _ALLOWED
    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):  # torch resolves storage classes itself before calling this
            if (module, name) not in _ALLOWED:
                raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
            return _ALLOWED[(module, name)]

    @staticmethod
    def load(f, **kwargs):
        return _restricted_pickle.Unpickler(f, **kwargs).load()


def convert_dalle(src, dst):
    """Official encoder.pkl (a pickled dall_e.Encoder) -> {'kind': 'dalle', 'config', 'state_dict', 'source_sha256'}
    at `dst`, loadable with torch.load(weights_only=True). Safe for an untrusted file: every global is allow-listed.
    Path A (zip format): weights_only=True with the three dall_e classes mapped to an inert stub. Path B (legacy
    format, whose ('module', cls, file, source) records weights_only rejects): the restricted pickle_module."""
    sha = hashlib.sha256(Path(src).read_bytes()).hexdigest()
    try:
        if zipfile.is_zipfile(src):
            with torch.serialization.safe_globals([(_PickledDalleModule, c) for c in _DALLE_CLASSES]
                                                  + [nn.Sequential, nn.ReLU, nn.MaxPool2d, nn.Identity, set]):
                obj = torch.load(src, map_location="cpu", weights_only=True)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # SourceChangeWarning: the stub's source differs from dall_e's
                obj = torch.load(src, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle)
    except Exception as e:
        if "pickle_module" in str(e) and os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD"):  # torch refuses path B then
            raise ValueError(f"{src}: a legacy-format pickle needs the restricted pickle_module, which torch refuses "
                             "while TORCH_FORCE_WEIGHTS_ONLY_LOAD is set; unset it for this one conversion (the "
                             "restricted unpickler only admits allow-listed globals)") from e
        # weights_only wraps its reason in advice to retry unsafely: keep only the reason
        why = next((ln for ln in str(e).splitlines() if "GLOBAL" in ln or "not allowed" in ln), str(e))
        raise ValueError(f"{src}: refused or unreadable as a DALL-E encoder pickle: {why}") from e
    if not isinstance(obj, _PickledDalleModule) or "n_hid" not in obj.__dict__:
        raise ValueError(f"{src}: expected a pickled dall_e.encoder.Encoder, got {type(obj).__name__}")
    # attrs fields are pickled as plain instance attributes
    if getattr(obj, "input_channels", 3) != 3:
        raise ValueError(f"{src}: input_channels={obj.input_channels}, only RGB encoders are supported")
    cfg = DalleConfig(n_hid=obj.n_hid, n_blk_per_group=obj.n_blk_per_group, vocab_size=obj.vocab_size)
    sd = {k: v.detach().float().contiguous().clone() for k, v in obj.state_dict().items()}
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in DalleEncoder(cfg).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in sd.items()}
    if got != expected:
        bad = sorted(k for k in got.keys() | expected.keys() if got.get(k) != expected.get(k))
        raise ValueError(f"{src}: state_dict does not match DalleEncoder({cfg}): {bad[:8]}")
    _atomic_save({"kind": "dalle", "config": asdict(cfg), "state_dict": sd, "source_sha256": sha}, dst)
    return cfg


# --- CLI --------------------------------------------------------------------------------------------------------

@dataclass
class ConvertConfig:
    src: str = ""  # the official encoder.pkl
    dst: str = "dalle_encoder.pt"  # our plain state-dict file


@dataclass
class TrainTokenizerConfig(VQConfig):
    data: str = ""  # folder of images and/or videos (data.load_frames)
    out: str = "vq_tokenizer.pt"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["convert"]:
        cfg = ConvertConfig(**parse_flags(ConvertConfig, argv[1:], "official encoder.pkl -> safe .pt", ("src", "dst")))
        if not Path(cfg.src).is_file():
            sys.exit(f"convert: {cfg.src}: no such file")
        print(f"wrote {cfg.dst}: DALL-E encoder {convert_dalle(cfg.src, cfg.dst)}")
    elif argv[:1] == ["train"]:
        cfg = TrainTokenizerConfig(**parse_flags(TrainTokenizerConfig, argv[1:], "train the small VQ tokenizer"))
        if not cfg.data:
            sys.exit("train: --data DIR is required (a folder of images and/or videos)")
        vq = VQConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(VQConfig)})
        _train_and_save(vq, cfg.data, cfg.out)
        print(f"wrote {cfg.out}")
    else:
        sys.exit("usage: python tokenizer.py convert encoder.pkl dalle_encoder.pt | "
                 "python tokenizer.py train --data DIR --out tok.pt [--vocab-size 512 --steps 300 ...]")


if __name__ == "__main__":
    main()
