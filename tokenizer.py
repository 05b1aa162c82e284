"""Visual tokenizers that make BEVT's MIM/MVM targets: the DALL-E dVAE encoder and a small offline VQ-VAE.

BEVT §3 "Tokenizer": every frame (and image) is downsampled by 1/2 and mapped to discrete ids by the frozen DALL-E
dVAE encoder (V = 8192, one id per 16x16 patch of the 224 view). Mirrors openai/DALL-E dall_e/encoder.py and
dall_e/utils.py, which the official repo vendors as mmaction/models/dall_e/, loaded as in official
mmaction/models/heads/bevt_multisource_head.py:32,59; the pixel mapping is MapPixels (official cfg
swin_base_patch244_window877_bevt_in1k_k400.py:56, mmaction/datasets/pipelines/augmentations.py:1459-1472).

Both tokenizers share one interface, `encode(views) -> LongTensor`, on uint8 tokenizer views, which data.py makes
(data.tokenizer_view: OpenCV's Lanczos resize of the student's crop to H/2, as the official CopyResize):
    (N, 3, h, w) uint8, h = H/2    -> (N, h/8, w/8)      e.g. 112 -> 14
    (B, 3, T, h, w)                -> (B, T, h/8, w/8)   all T frames in one batched call
`encode` applies its own pixel mapping and runs frozen under torch.no_grad() with autocast off. Neither tokenizer
belongs to the student's state_dict.

    python tokenizer.py convert encoder.pkl dalle_encoder.pt    # official weights -> safe .pt (the only unpickler)
"""
import argparse
import hashlib
import math
import os
import pickle
import sys
import time
import warnings
import zipfile
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

LOGIT_LAPLACE_EPS = 0.1  # official: mmaction/models/dall_e/utils.py:8
PRECISIONS = ("official", "fp32")  # DalleConfig.precision; see conv_dtype


# --- configs ---------------------------------------------------------------------------------------------------

@dataclass
class DalleConfig:
    n_hid: int = 256  # official: mmaction/models/dall_e/encoder.py:48 (n_hid=64 runs the same code path in tests)
    n_blk_per_group: int = 2  # official: Encoder.n_blk_per_group
    vocab_size: int = 8192  # BEVT §3 "Tokenizer": 8192 visual tokens
    precision: str = "official"  # "official" | "fp32", see conv_dtype


@dataclass
class VQConfig:  # the small VQ-VAE's recipe; docs/tokenizer.md gives its measured cost and quality
    hid: int = 32  # encoder width; the bottleneck has 2*hid channels
    code_dim: int = 32
    vocab_size: int = 512  # not 8192: on num_frames training frames most of a larger codebook stays dead
    size: int = 112  # tokenizer-view size of the training frames (224 crop / 2)
    num_frames: int = 3256  # training frames (synthetic.load_frames): 3000 train + 256 validation
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


# --- precision and the shared interface ------------------------------------------------------------------------

def conv_dtype(precision, device_type) -> torch.dtype:
    """The dtype every DALL-E conv computes in. "official": fp16 on CUDA, the output conv included, which is what BEVT
    trained with: it runs the encoder inside apex amp O1 (official: mmaction/apis/train.py:98-99), and O1 casts every
    F.conv2d to fp16, so the output conv's use_float16=False (mmaction/models/dall_e/encoder.py:85) has no effect.
    On CPU fp32, as the official code runs there (nobody trained with CPU fp16 convs). "fp32": IEEE fp32 everywhere
    (encode turns TF32 off, which cuDNN would otherwise use for fp32 convs)."""
    if precision not in PRECISIONS:
        raise ValueError(f"tokenizer precision must be one of {PRECISIONS}, got {precision!r}")
    return torch.float16 if precision == "official" and device_type == "cuda" else torch.float32


@contextmanager
def _ieee_fp32():
    """fp32 convs and matmuls in IEEE fp32 on CUDA (not TF32, whose 10-bit mantissa cuDNN uses by default)."""
    saved = torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision
    torch.backends.cudnn.conv.fp32_precision = torch.backends.cuda.matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = saved


def map_pixels(x):
    """Logit-Laplace input mapping [0, 1] -> [0.1, 0.9] (official: mmaction/models/dall_e/utils.py:45-49, MapPixels)."""
    return (1 - 2 * LOGIT_LAPLACE_EPS) * x + LOGIT_LAPLACE_EPS


class Tokenizer(nn.Module):
    """Shared `encode`; a subclass implements `ids_from_view(view (N, 3, h, w) float 0..1) -> (N, h/8, w/8)`."""

    @torch.no_grad()
    def encode(self, views):
        """uint8 tokenizer views (N, 3, h, w) or (B, 3, T, h, w) -> ids (N, h/8, w/8) or (B, T, h/8, w/8). Targets
        under no_grad, outside autocast; the result does not depend on train/eval mode."""
        if views.dtype != torch.uint8 or views.dim() not in (4, 5) or views.shape[1] != 3 or \
                views.shape[-2] % 8 or views.shape[-1] % 8:
            raise ValueError(f"tokenizer input must be uint8 tokenizer views (N, 3, h, w) or (B, 3, T, h, w) with h, "
                             f"w divisible by 8, got {views.dtype} {tuple(views.shape)}")
        device = next(self.parameters()).device
        flat = views if views.dim() == 4 else views.transpose(1, 2).flatten(0, 1)  # (N or B*T, 3, h, w)
        with torch.autocast(device_type=device.type, enabled=False), _ieee_fp32():
            ids = self.ids_from_view(flat.to(device).float() / 255)  # (N, h/8, w/8), 0..1 as MapPixels divides
        return ids if views.dim() == 4 else ids.unflatten(0, (views.shape[0], views.shape[2]))  # (B, T, h/8, w/8)


# --- DALL-E dVAE encoder (state_dict keys identical to the official encoder.pkl) -------------------------------

class DalleConv2d(nn.Module):
    """official: mmaction/models/dall_e/utils.py:10-43 Conv2d: parameters `w` (n_out, n_in, kw, kw) and `b`, stride 1,
    'same' padding; computes in conv_dtype(precision, device of w)."""

    def __init__(self, n_in, n_out, kw, precision):
        super().__init__()
        self.kw, self.precision = kw, precision
        self.w = nn.Parameter(torch.randn(n_out, n_in, kw, kw) / math.sqrt(n_in * kw ** 2))  # official init
        self.b = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        dtype = conv_dtype(self.precision, self.w.device.type)
        return F.conv2d(x.to(dtype), self.w.to(dtype), self.b.to(dtype), padding=(self.kw - 1) // 2)


class DalleEncoderBlock(nn.Module):
    """official: mmaction/models/dall_e/encoder.py:15-42 EncoderBlock: pre-activation residual block,
    out = id + post_gain * res."""

    def __init__(self, n_in, n_out, n_layers, precision):
        super().__init__()
        n_hid = n_out // 4
        self.post_gain = 1 / n_layers ** 2  # 1/64 for 4 groups x 2 blocks
        self.id_path = DalleConv2d(n_in, n_out, 1, precision) if n_in != n_out else nn.Identity()
        self.res_path = nn.Sequential(OrderedDict([
            ("relu_1", nn.ReLU()), ("conv_1", DalleConv2d(n_in, n_hid, 3, precision)),
            ("relu_2", nn.ReLU()), ("conv_2", DalleConv2d(n_hid, n_hid, 3, precision)),
            ("relu_3", nn.ReLU()), ("conv_3", DalleConv2d(n_hid, n_hid, 3, precision)),
            ("relu_4", nn.ReLU()), ("conv_4", DalleConv2d(n_hid, n_out, 1, precision))]))

    def forward(self, x):
        return self.id_path(x) + self.post_gain * self.res_path(x)  # official order of operations (bit-exact)


class DalleEncoder(Tokenizer):
    """official: mmaction/models/dall_e/encoder.py:45-97 Encoder: 7x7 conv, 4 groups x n_blk blocks (max-pool after
    groups 1-3), ReLU, 1x1 conv to V logits. (B, 3, H, W) float32 -> (B, V, H/8, W/8); 53,786,240 parameters at the
    defaults."""

    def __init__(self, cfg):
        super().__init__()
        conv_dtype(cfg.precision, "cpu")  # a bad precision fails here, at construction
        self.cfg, self.vocab_size, precision = cfg, cfg.vocab_size, cfg.precision
        n, nb = cfg.n_hid, cfg.n_blk_per_group
        n_layers = 4 * nb  # official: group_count * n_blk_per_group

        def group(n_in, n_out, pool):
            blocks = [(f"block_{i + 1}", DalleEncoderBlock(n_in if i == 0 else n_out, n_out, n_layers, precision))
                      for i in range(nb)]
            return nn.Sequential(OrderedDict(blocks + ([("pool", nn.MaxPool2d(kernel_size=2))] if pool else [])))

        self.blocks = nn.Sequential(OrderedDict([
            ("input", DalleConv2d(3, n, 7, precision)),
            ("group_1", group(n, n, True)), ("group_2", group(n, 2 * n, True)),
            ("group_3", group(2 * n, 4 * n, True)), ("group_4", group(4 * n, 8 * n, False)),
            ("output", nn.Sequential(OrderedDict([
                ("relu", nn.ReLU()), ("conv", DalleConv2d(8 * n, cfg.vocab_size, 1, precision))])))]))  # see conv_dtype

    def forward(self, x):
        B, C, H, W = x.shape
        if C != 3 or x.dtype != torch.float32:  # official: mmaction/models/dall_e/encoder.py:90-95
            raise ValueError(f"DalleEncoder expects float32 (B, 3, H, W), got {x.dtype} {tuple(x.shape)}")
        return self.blocks(x)  # (B, V, H/8, W/8)

    def ids_from_view(self, view):
        x = map_pixels(view)  # the one place map_pixels is applied (BEiT applies it in data, BEVT in MapPixels)
        if x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)  # NHWC convs for cuDNN tensor cores
        return self(x).argmax(1)  # (N, h/8, w/8) official: mmaction/models/heads/bevt_multisource_head.py:59


# --- small VQ-VAE tokenizer (the offline default) --------------------------------------------------------------

class ResBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(channels, channels, 3, padding=1), nn.Conv2d(channels, channels, 1)

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
        for m in self.modules():  # He init: PyTorch's default (weight variance 1/(3 fan_in)) shrinks activations
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):  # layer by layer: the AE stalls on a mean-colour plateau
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


def _kmeans(z, num_centres, iters, generator):
    """Lloyd's k-means on z (M, D) from num_centres distinct random points -> centres (num_centres, D)."""
    centres = z[torch.randperm(len(z), generator=generator)[:num_centres]].clone()
    for _ in range(iters):
        ids = torch.cdist(z, centres).argmin(1)
        count = torch.bincount(ids, minlength=num_centres).float()
        sums = torch.zeros_like(centres).index_add_(0, ids, z)
        centres = torch.where(count[:, None] > 0, sums / count.clamp(min=1)[:, None], centres)  # empty: unchanged
    return centres


def _vq_step(tok, view, opt, step, generator):
    """One training step: encode, EMA codebook update (+ k-means init, dead-code restarts), reconstruct, Adam."""
    cfg = tok.cfg
    z = tok.embed(view)  # (B, h', w', D)
    flat = z.detach().reshape(-1, cfg.code_dim)  # (M, D)
    with torch.no_grad():
        if step == 0:  # k-means init on the first batch (BEiT v2 norm_ema_quantizer.py)
            centres = F.normalize(_kmeans(flat, cfg.vocab_size, cfg.kmeans_iters, generator), dim=-1)  # (V, D)
            # counts start at 1, so a code unused in a step falls below dead_threshold and is restarted at once
            tok.codebook.copy_(centres), tok.ema_count.fill_(1.0), tok.ema_sum.copy_(centres)
        ids = tok.nearest(flat)  # (M,)
        onehot = F.one_hot(ids, cfg.vocab_size).float()  # (M, V)
        tok.ema_count.mul_(cfg.ema_decay).add_(onehot.sum(0), alpha=1 - cfg.ema_decay)
        tok.ema_sum.mul_(cfg.ema_decay).add_(onehot.T @ flat, alpha=1 - cfg.ema_decay)
        n = tok.ema_count.sum()
        smoothed = (tok.ema_count + cfg.ema_eps) / (n + cfg.vocab_size * cfg.ema_eps) * n  # Laplace smoothing
        tok.codebook.copy_(F.normalize(tok.ema_sum / smoothed[:, None], dim=-1))
        dead = (tok.ema_count < cfg.dead_threshold).nonzero().squeeze(1)
        if len(dead):  # restart dead codes at random encoder outputs of this batch, with a count of 1
            fresh = flat[torch.randint(len(flat), (len(dead),), generator=generator)]
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
    generator = torch.Generator().manual_seed(cfg.seed)
    views = frames.float() / 255
    val, train = views[:cfg.val_frames], views[cfg.val_frames:]
    opt = torch.optim.Adam(tok.parameters(), lr=cfg.lr)
    start, restarts = time.time(), 0
    for step in range(cfg.steps):
        batch = train[torch.randint(len(train), (cfg.batch_size,), generator=generator)]  # (batch, 3, S, S)
        loss, n_dead = _vq_step(tok, batch, opt, step, generator)
        restarts += n_dead
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            log(f"vq step {step + 1}/{cfg.steps} loss {loss:.4f} dead-code restarts {restarts} "
                f"{time.time() - start:.0f}s")
    r = vq_report(tok.eval(), val)
    log(f"vq tokenizer: val PSNR {r['psnr']:.1f} dB, codes used {r['codes_used']}/{cfg.vocab_size}, "
        f"perplexity {r['perplexity']:.0f} ({len(val)} val frames, {time.time() - start:.0f}s)")
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
    """Our .pt ({'kind': 'dalle'|'vq', 'config', 'state_dict'}) -> frozen eval tokenizer on `device`. `precision`
    ("official" | "fp32", see conv_dtype) overrides a DALL-E file's DalleConfig.precision; the small VQ tokenizer is
    our own model, trained in fp32, and always runs in IEEE fp32."""
    if precision is not None:
        conv_dtype(precision, "cpu")  # a bad value fails before the file is read
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a tokenizer .pt written by tokenizer.py (an official encoder.pkl must first "
                         f"be converted: python tokenizer.py convert encoder.pkl dalle_encoder.pt): {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("kind") not in ("dalle", "vq"):
        raise ValueError(f"{path}: expected a dict with kind 'dalle' or 'vq'")
    if ckpt["kind"] == "dalle":
        cfg = DalleConfig(**ckpt["config"])
        if cfg.precision not in PRECISIONS and precision is None:
            raise ValueError(f"{path}: precision {cfg.precision!r} is not one of {PRECISIONS}; pass precision=")
        tok = DalleEncoder(replace(cfg, precision=precision or cfg.precision))
    else:
        tok = VQTokenizer(VQConfig(**ckpt["config"]))
    tok.load_state_dict(ckpt["state_dict"], strict=True)
    tok = tok.to(device).eval().requires_grad_(False)
    if torch.device(device).type == "cuda":
        tok = tok.to(memory_format=torch.channels_last)  # weights in NHWC beside the NHWC input of ids_from_view
    return tok


# --- the official encoder.pkl: the only function that unpickles ------------------------------------------------

class _PickledDalleModule(nn.Module):
    """Inert stand-in for dall_e.encoder.Encoder/EncoderBlock and dall_e.utils.Conv2d: unpickling only restores its
    __dict__ (attrs fields, _parameters, _modules) through nn.Module.__setstate__; no dall_e code runs."""


_DALLE_CLASSES = ("dall_e.encoder.Encoder", "dall_e.encoder.EncoderBlock", "dall_e.utils.Conv2d")
_ALLOWED = {  # path B allow-list: the globals a pickled dall_e.Encoder references (listed with pickletools)
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
    cfg = DalleConfig(n_hid=obj.n_hid, n_blk_per_group=obj.n_blk_per_group, vocab_size=obj.vocab_size)  # "official"
    sd = {k: v.detach().float().contiguous().clone() for k, v in obj.state_dict().items()}
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in DalleEncoder(cfg).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in sd.items()}
    if got != expected:
        bad = sorted(k for k in got.keys() | expected.keys() if got.get(k) != expected.get(k))
        raise ValueError(f"{src}: state_dict does not match DalleEncoder({cfg}): {bad[:8]}")
    _atomic_save({"kind": "dalle", "config": asdict(cfg), "state_dict": sd, "source_sha256": sha}, dst)
    return cfg


# ----------------------------------------------------------------------------------------------------------------------
# the one command: converting the official weights


def main(argv=None):
    """`python tokenizer.py convert encoder.pkl dalle_encoder.pt`: the official weights -> our safe .pt, once."""
    p = argparse.ArgumentParser(description="official DALL-E encoder.pkl -> a plain state-dict .pt (the small VQ "
                                            "tokenizer: python -m tools.dataset small-vq)")
    p.add_argument("command", choices=["convert"])
    p.add_argument("src", help="the official encoder.pkl")
    p.add_argument("dst", nargs="?", default="dalle_encoder.pt", help="our plain state-dict file")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if not Path(args.src).is_file():
        sys.exit(f"convert: {args.src}: no such file")
    print(f"wrote {args.dst}: DALL-E encoder {convert_dalle(args.src, args.dst)}")


if __name__ == "__main__":
    main()
