"""BEVT model: Video Swin Transformer encoder shared by an image and a video stream, the two decoders, and the
MIM + lambda * MVM objective (BEVT, CVPR 2022, §3 "BEVT encoders", "BEVT decoders", "Training objectives",
"Weight sharing between streams"), plus the classifier used for finetuning and pure state-dict surgery.

Mirrors the official files mmaction/models/backbones/swin_transformer_bevt.py (pretraining backbone + decoders),
mmaction/models/backbones/swin_transformer.py (finetuning backbone) and heads/bevt_multisource_head.py (lm_head,
loss). Parameter names follow the official code, so released checkpoints load with prefix surgery only.

Symbols (used in every shape comment):
  B batch, C=3 colour channels, T, H, W frames / pixels of the input.
  T', H', W' token grid of the current stage (T' = T / patch_t; the image stream runs with T' = 1).
  D channels of the current stage (embed_dim * 2**stage), C8 = 8 * embed_dim (stage-4 width).
  N tokens per window (wd * wh * ww), nW windows per sample, nH heads, hd = D / nH head width.
  h, w the 16-px token grid of the tokenizer (= stage-3 grid, H/16), V codebook size, M masked positions.
  A mask is a bool tensor, True = masked, on the token grid (B, T', h, w) (video) or (B, h, w) (image).
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from masking import mask_to_patch_grid, mask_to_target_grid


# --- config -----------------------------------------------------------------------------------------------------

@dataclass
class ModelConfig:
    embed_dim: int = 128                          # official cfg swin_base_..._bevt_in1k_k400.py: Swin-B
    depths: tuple = (2, 2, 18, 2)
    num_heads: tuple = (4, 8, 16, 32)
    window_size: tuple = (8, 7, 7)                # (Wd, Wh, Ww); SSv2 finetune uses (16, 7, 7) (spec §7d)
    patch_size: tuple = (2, 4, 4)                 # BEVT §3: tubelets of 2 frames x 4 x 4 px
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.3                   # official: linear 0 -> 0.3 over the 24 blocks
    attn_drop_rate: float = 0.0                   # official: 0
    vocab_size: int = 8192                        # DALL-E codebook (spec §6)


PRESETS = {
    # nano: CPU tests and demos. Window (8, 4, 4): at 128 px the maps are 32/16/8/4, all multiples of 4, so no
    # padding is needed and stage 4 (4x4) is exactly one window (no shift), as stage 4 is for Swin at 224 px;
    # Wd = 8 covers a whole demo clip in time, as the official pretraining window covers all 8 temporal tokens.
    "nano": ModelConfig(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=(8, 4, 4),
                        drop_path_rate=0.1),
    "tiny": ModelConfig(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.1),
    "small": ModelConfig(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.2),
    "base": ModelConfig(),
    "large": ModelConfig(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
}


# --- window geometry (pure functions of Python ints: torch.compile sees constants) ----------------------------

def window_and_shift(size, window):
    """Clamp the window to the feature map and drop the shift on every axis the window covers (Video Swin
    get_window_size; torchvision does the same). Returns (window, shift), tuples of ints."""
    win = tuple(min(s, w) for s, w in zip(size, window))
    shift = tuple(0 if s <= w else w // 2 for s, w in zip(size, window))
    return win, shift


def relative_position_index(window, table_window, device=None):
    """(N, N) rows of the (2Wd-1)(2Wh-1)(2Ww-1)-row bias table for every query/key pair of a `window`
    (which may be clamped smaller than `table_window`). We index with the TRUE relative offsets; torchvision
    and the official code slice the full window's index instead, which is wrong when H' or W' is smaller than
    the window (README: differences). For T' = 1 this picks exactly the dt = 0 slice (BEVT §3 weight sharing)."""
    coords = torch.stack(torch.meshgrid(*[torch.arange(w, device=device) for w in window], indexing="ij"))
    coords = coords.flatten(1)                                   # (3, N)
    rel = coords[:, :, None] - coords[:, None, :]                # (3, N, N) offsets in [-(w-1), w-1]
    Wd, Wh, Ww = table_window
    return ((rel[0] + Wd - 1) * (2 * Wh - 1) * (2 * Ww - 1)
            + (rel[1] + Wh - 1) * (2 * Ww - 1) + (rel[2] + Ww - 1))   # (N, N)


def shift_attention_mask(padded, window, shift, device=None):
    """(nW, N, N) additive mask for shifted windows: -100 between tokens that came from different regions of
    the cyclically shifted map (the value torchvision and the official code use), 0 elsewhere."""
    labels = []
    for p, w, s in zip(padded, window, shift):
        lab = torch.zeros(p, dtype=torch.long, device=device)   # one region on an axis without shift
        if s > 0:
            lab[p - w:p - s] = 1
            lab[p - s:] = 2
        labels.append(lab)
    region = labels[0][:, None, None] * 9 + labels[1][None, :, None] * 3 + labels[2][None, None, :]  # (T', H', W')
    region = rearrange(region, "(t wt) (h wh) (w ww) -> (t h w) (wt wh ww)",
                       wt=window[0], wh=window[1], ww=window[2])  # (nW, N)
    differs = region[:, :, None] != region[:, None, :]           # (nW, N, N)
    return differs.float() * -100.0                             # (nW, N, N)


def window_order(B, padded, window, shift, device=None):
    """Window partition of the cyclically shifted (by -shift) padded grid, as a permutation of token rows:
    perm[r] = grid row (b, t, h, w flattened) of window row r (rows ordered (b, window, token in window)) and its
    inverse. The same rows torchvision gets from roll + partition, as an index."""
    Tp, Hp, Wp = padded
    grid = torch.arange(B * Tp * Hp * Wp, device=device).view(B, Tp, Hp, Wp)   # (B, Tp, Hp, Wp) row ids
    if any(shift):
        grid = torch.roll(grid, shifts=(-shift[0], -shift[1], -shift[2]), dims=(1, 2, 3))
    perm = rearrange(grid, "b (t wd) (h wh) (w ww) -> (b t h w wd wh ww)",
                     wd=window[0], wh=window[1], ww=window[2])   # (B*nW*N,)
    return perm, torch.argsort(perm)


class PermuteRows(torch.autograd.Function):
    """y = x[index] for a permutation `index` of the rows of x (rows, D); the backward is the inverse gather
    (autograd's default for index_select would be a slow scatter-add into zeros)."""

    @staticmethod
    def forward(ctx, x, index, inverse):
        ctx.save_for_backward(inverse)
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(0, inverse), None, None


def change_order(x, orders, src, dst):
    """Token rows (rows, D) from order orders[src] to order orders[dst]; an order is (perm, inverse) from
    window_order, src / dst None is the grid. Row r of the result is the row of x holding grid row perm_dst[r]."""
    if src == dst:
        return x
    if src is None:
        return PermuteRows.apply(x, orders[dst][0], orders[dst][1])
    if dst is None:
        return PermuteRows.apply(x, orders[src][1], orders[src][0])
    (perm_s, inv_s), (perm_d, inv_d) = orders[src], orders[dst]
    return PermuteRows.apply(x, inv_s[perm_d], inv_d[perm_s])


def drop_path(x, p, training):
    """Stochastic depth per sample (BEVT cfg drop_path_rate); identity when p == 0 or in eval."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - p)  # (B, 1, 1, 1, 1)
    return x * keep / (1.0 - p)


# --- building blocks --------------------------------------------------------------------------------------------

class PatchEmbed(nn.Module):
    """Conv patch embedding + LayerNorm. 3D (video, kernel = patch) or 2D (image stream, kernel = patch[1:])."""

    def __init__(self, patch, dim, video):
        super().__init__()
        conv = nn.Conv3d if video else nn.Conv2d
        self.patch = tuple(patch) if video else tuple(patch[1:])
        self.proj = conv(3, dim, kernel_size=self.patch, stride=self.patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):                                       # (B, C, T, H, W) or (B, C, H, W)
        size = x.shape[2:]
        pad = [(p - s % p) % p for s, p in zip(size, self.patch)]
        if any(pad):                                            # official: pad to a multiple of the patch
            x = F.pad(x, [v for q in reversed(pad) for v in (0, q)])
        x = self.proj(x).movedim(1, -1)                         # (B, T', H', W', D) or (B, H', W', D)
        return self.norm(x)


# Window-chunk budget of the CPU attention backward: the (chunk, nH, N, N) logits / probabilities of one chunk stay
# in cache between the matmul that writes them and the softmax, softmax-backward and matmuls that read them.
# Measured here (2-core Xeon, 2 MB L2 per core; tiny encoder fwd+bwd at 16x224x224, N = 392): all windows in one
# pass 1.79 s per step, chunks of 2-8 MB 1.46-1.48 s, 16 MB 1.52 s (README "Speed").
ATTN_CHUNK_BYTES = 4 << 20


class BiasedAttention(torch.autograd.Function):
    """softmax(q k^T / sqrt(hd) + bias [+ shift mask]) v with a gradient for the learned relative bias, for the
    CPU. F.scaled_dot_product_attention runs its fused CPU (flash) kernel only when the mask needs no gradient;
    otherwise it falls back to the unfused math path, which writes several (B*nW, nH, N, N) tensors to memory.
    Here the forward is the fused kernel with the mask detached, and the backward recomputes the probabilities,
    a few windows at a time so that nothing N x N leaves the cache (s = 1 / sqrt(hd)):
      P = softmax(q k^T s + mask),  dV = P^T dO,  dP = dO V^T,  dS = P * (dP - rowsum(dP * P)),
      dQ = dS K s,  dK = dS^T Q s,  dbias = dS summed over windows.
    bias (nH, N, N) is shared by all windows; shift (nW, N, N) is the constant -100 / 0 mask of shifted windows
    (None for plain windows), indexed by window: the windows of qkv are ordered (b, window), so window row i uses
    shift[i % nW] and the (B*nW, nH, N, N) sum of the two is never built. It takes the fused qkv projection and
    returns heads merged, so the backward writes dq, dk, dv into one (3, B*nW, nH, N, hd) buffer. On CUDA plain
    SDPA already has a fused kernel with a bias gradient (memory-efficient attention), so WindowAttention uses
    this only on the CPU."""

    @staticmethod
    def forward(ctx, qkv, bias, shift, heads):                  # qkv (B*nW, N, 3D); bias (nH, N, N); shift (nW, N, N)
        Bw, N, D3 = qkv.shape
        qkv = qkv.view(Bw, N, 3, heads, D3 // 3 // heads).permute(2, 0, 3, 1, 4).contiguous()  # (3, B*nW, nH, N, hd)
        q, k, v = qkv                                            # (B*nW, nH, N, hd) each
        bias = bias.detach().to(qkv.dtype)
        if shift is None:                                        # one call, the bias broadcast over the windows
            o = BiasedAttention._flash(q, k, v, bias[None])      # (B*nW, nH, N, hd)
        else:                                                    # per chunk: bias + that chunk's shift mask
            o = torch.empty_like(q)                              # (B*nW, nH, N, hd)
            for rows, wins in BiasedAttention._chunks(Bw, shift.shape[0], heads * N * N * q.element_size()):
                o[rows] = BiasedAttention._flash(q[rows], k[rows], v[rows], bias + shift[wins, None])
        ctx.save_for_backward(qkv, bias, shift)
        return o.transpose(1, 2).reshape(Bw, N, D3 // 3)         # (B*nW, N, D)

    @staticmethod
    def backward(ctx, do):                                       # (B*nW, N, D)
        qkv, bias, shift = ctx.saved_tensors
        q, k, v = qkv                                            # (B*nW, nH, N, hd) each
        Bw, nH, N, hd = q.shape
        do = do.view(Bw, N, nH, hd).transpose(1, 2).contiguous()  # (B*nW, nH, N, hd)
        dqkv = torch.empty_like(qkv)                             # (3, B*nW, nH, N, hd)
        dbias = torch.zeros_like(bias)                           # (nH, N, N)
        nW = Bw if shift is None else shift.shape[0]
        for rows, wins in BiasedAttention._chunks(Bw, nW, nH * N * N * q.element_size()):
            qs, ks = q[rows] * hd ** -0.5, k[rows] * hd ** -0.5  # scale the small operands, not the N x N ones
            p = torch.matmul(qs, k[rows].transpose(-2, -1)).add_(bias)   # (c, nH, N, N) logits, recomputed
            if shift is not None:
                p += shift[wins, None]                           # (c, 1, N, N)
            p = torch.softmax(p, dim=-1)                         # P
            torch.matmul(p.transpose(-2, -1), do[rows], out=dqkv[2, rows])   # dV = P^T dO
            ds = torch.matmul(do[rows], v[rows].transpose(-2, -1))  # dP = dO V^T (c, nH, N, N)
            ds = torch._softmax_backward_data(ds, p, -1, p.dtype)   # dS = P * (dP - rowsum(dP * P)), one pass
            dbias += ds[0] if len(ds) == 1 else ds.sum(0)        # (nH, N, N); no copy for one window
            torch.matmul(ds, ks, out=dqkv[0, rows])              # dQ = dS K s
            torch.matmul(ds.transpose(-2, -1), qs, out=dqkv[1, rows])   # dK = dS^T Q s
        return dqkv.permute(1, 3, 0, 2, 4).reshape(Bw, N, 3 * nH * hd), dbias, None, None   # (B*nW, N, 3D)

    @staticmethod
    def _flash(q, k, v, mask):
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, attn_mask=mask)[0]

    @staticmethod
    def _chunks(Bw, nW, bytes_per_window):
        """(rows, windows) slice pairs covering the B*nW windows, about ATTN_CHUNK_BYTES of N x N logits each; a
        chunk never crosses a sample (its size divides nW), so windows = rows shifted into [0, nW)."""
        c = max(1, min(nW, ATTN_CHUNK_BYTES // bytes_per_window))
        while nW % c:
            c -= 1
        return [(slice(i, i + c), slice(i % nW, i % nW + c)) for i in range(0, Bw, c)]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside one window, with the relative position bias (BEVT §3 / Video Swin).
    The bias table lives here (official name); Stage gathers it into bias (nH, N, N) once per block and passes
    it with the shift mask (nW, N, N) of shifted blocks (None for plain ones)."""

    def __init__(self, dim, heads, window, qkv_bias, attn_drop):
        super().__init__()
        self.heads, self.attn_drop = heads, attn_drop
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        rows = (2 * window[0] - 1) * (2 * window[1] - 1) * (2 * window[2] - 1)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(rows, heads))  # ((2Wd-1)(2Wh-1)(2Ww-1), nH)

    def forward(self, x, bias, shift):                          # x (B*nW, N, D); bias (nH, N, N); shift (nW, N, N)
        dropout = self.attn_drop if self.training else 0.0
        qkv = self.qkv(x)                                       # (B*nW, N, 3D)
        if x.device.type == "cpu" and dropout == 0.0:
            return self.proj(BiasedAttention.apply(qkv, bias, shift, self.heads))   # (B*nW, N, D)
        return self.proj(window_sdpa(qkv, bias, shift, self.heads, dropout))       # (B*nW, N, D)


def window_sdpa(qkv, bias, shift, heads, dropout=0.0):
    """softmax(q k^T / sqrt(hd) + bias [+ shift mask]) v through F.scaled_dot_product_attention: the path for CUDA
    (its memory-efficient kernel gives the bias a gradient) and for attention dropout. The mask it needs is built
    here: bias (nH, N, N) broadcast over the windows, or bias + shift repeated per sample (B*nW, nH, N, N)."""
    Bw, N, D3 = qkv.shape
    attn_mask = bias[None]                                      # (1, nH, N, N)
    if shift is not None:                                       # windows ordered (b, window)
        attn_mask = (attn_mask + shift[:, None]).repeat(Bw // shift.shape[0], 1, 1, 1)   # (B*nW, nH, N, N)
    q, k, v = qkv.view(Bw, N, 3, heads, D3 // 3 // heads).permute(2, 0, 3, 1, 4)      # 3x (B*nW, nH, N, hd)
    x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)  # (B*nW, nH, N, hd)
    return x.transpose(1, 2).reshape(Bw, N, D3 // 3)            # (B*nW, N, D)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Swin block: x + W-MSA(LN(x)) then x + MLP(LN(x)). It gets its tokens already in window order (Stage), so
    partitioning, the cyclic shift and un-partitioning are one row permutation done by Stage between blocks:
    LayerNorm, MLP and the residual adds are per token and do not care about the order."""

    def __init__(self, dim, heads, window, mlp_ratio, qkv_bias, drop_path_p, attn_drop):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window, qkv_bias, attn_drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path_p = drop_path_p

    def forward(self, x, bias, shift, valid):                   # x (B, nW*N, D) in window order
        B, L, D = x.shape
        N = bias.shape[-1]
        y = self.norm1(x).view(-1, N, D)                        # (B*nW, N, D)
        if valid is not None:                                   # official: pad after norm1, padded tokens are 0
            y = y * valid                                       # valid (B*nW, N, 1)
        y = self.attn(y, bias, shift).view(B, L, D)             # (B, nW*N, D)
        x = x + drop_path(y, self.drop_path_p, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path_p, self.training)


class PatchMerging(nn.Module):
    """2x2 spatial merge: concat 4 neighbours (Swin order x00, x10, x01, x11), LN(4D), Linear(4D -> 2D)."""

    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):                                       # (B, T', H', W', D)
        H, W = x.shape[2:4]
        if H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        # channel index (wp, hp, d): wp=0,hp=0 -> x[0::2, 0::2]; hp=1 -> x[1::2, 0::2]; wp=1 -> x[.., 1::2]
        x = rearrange(x, "b t (h hp) (w wp) d -> b t h w (wp hp d)", hp=2, wp=2)  # (B, T', H'/2, W'/2, 4D)
        return self.reduction(self.norm(x))                     # (B, T', H'/2, W'/2, 2D)


class Stage(nn.Module):
    """`depth` blocks alternating plain / shifted windows, then (except the last stage) patch merging.
    Once per forward it builds the bias index and one shift mask; each block gathers its own bias table
    (per block, official) with that index into bias_j (nH, N, N), shared by all windows; shifted blocks also get
    the shift mask (nW, N, N), which the attention adds per window (the two are never summed into a per-window,
    per-head tensor on the CPU).
    Tokens live in window order inside a stage: partition + cyclic shift is a fixed permutation of the token
    rows, so going from the grid to a block's windows, from plain to shifted windows and back to the grid is one
    row gather each (backward: the inverse gather), instead of roll + partition + reverse + roll per block."""

    def __init__(self, dim, depth, heads, window, mlp_ratio, qkv_bias, drop_paths, attn_drop, downsample):
        super().__init__()
        self.window = tuple(window)
        self.blocks = nn.ModuleList(Block(dim, heads, window, mlp_ratio, qkv_bias, p, attn_drop)
                                    for p in drop_paths)
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x):                                       # (B, T', H', W', D)
        B, T, H, W, D = x.shape
        window, shift = window_and_shift((T, H, W), self.window)
        N = window[0] * window[1] * window[2]
        padded = [s + (w - s % w) % w for s, w in zip((T, H, W), window)]
        Tp, Hp, Wp = padded
        index = relative_position_index(window, self.window, x.device).flatten()  # (N*N,)
        orders = [window_order(B, padded, window, (0, 0, 0), x.device)]        # plain windows
        mask = None
        if any(shift):
            orders.append(window_order(B, padded, window, shift, x.device))     # shifted windows
            mask = shift_attention_mask(padded, window, shift, x.device)        # (nW, N, N)
        valid = [None] * len(orders)
        if (Tp, Hp, Wp) != (T, H, W):                           # official: pad to a multiple of the window
            x = F.pad(x, (0, 0, 0, Wp - W, 0, Hp - H, 0, Tp - T))  # (B, Tp, Hp, Wp, D)
            real = torch.zeros(B, Tp, Hp, Wp, 1, dtype=x.dtype, device=x.device)
            real[:, :T, :H, :W] = 1.0
            valid = [real.view(-1, 1)[perm].view(-1, N, 1) for perm, _ in orders]  # (B*nW, N, 1) per order
        x = x.reshape(B * Tp * Hp * Wp, D)                      # (B*Tp*Hp*Wp, D) token rows, grid order
        now = None                                              # current order: None = grid
        for j, blk in enumerate(self.blocks):
            k = 1 if j % 2 == 1 and mask is not None else 0     # shifted block: order 1
            x = change_order(x, orders, now, k)                 # (B*nW*N, D), windows ordered (b, window)
            now = k
            table = blk.attn.relative_position_bias_table      # (R, nH)
            bias = table.t().index_select(1, index).view(-1, N, N)   # (nH, N, N)
            # no shift mask where nothing is shifted (official video): the bias alone, shared by all windows
            x = blk(x.view(B, -1, D), bias, mask if k == 1 else None, valid[k]).view(-1, D)   # (B*nW*N, D)
        x = change_order(x, orders, now, None).view(B, Tp, Hp, Wp, D)   # (B, Tp, Hp, Wp, D) grid order
        out = x[:, :T, :H, :W]                                  # (B, T', H', W', D) pre-downsampling output
        if self.downsample is not None:
            x = self.downsample(out)                            # (B, T', H'/2, W'/2, 2D)
        return out, x


# --- encoder ----------------------------------------------------------------------------------------------------

class SwinEncoder(nn.Module):
    """Video Swin Transformer (BEVT §3 "BEVT encoders") with the shared image stream (§3 "Weight sharing"):
    images run through the same blocks as 1-frame clips after their own 2D patch embedding. forward returns the
    four stage outputs before downsampling, channels-last (B, T', H', W', D_i); `norm` is the final LayerNorm,
    which BEVT applies after the decoder and the classifier after stage 4."""

    def __init__(self, cfg: ModelConfig, image_stream=True, mask_token=True):
        super().__init__()
        self.cfg = cfg
        C, L = cfg.embed_dim, len(cfg.depths)
        # --- stream-specific input layers (official: patch_embed, patch_embed_2d, untied)
        self.patch_embed = PatchEmbed(cfg.patch_size, C, video=True)
        self.patch_embed_2d = PatchEmbed(cfg.patch_size, C, video=False) if image_stream else None
        # --- one mask token shared by both streams (official: zeros(1, 1, C), trunc_normal 0.02)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, C)) if mask_token else None
        # A 16-px tokenizer cell = stage-3 token = 2**(L-2) x 2**(L-2) patches (official: 14x14 -> 56x56 nearest).
        self.mask_factor = 2 ** (L - 2)
        # --- shared stages; drop path linear over all blocks (official: torch.linspace(0, rate, sum(depths)))
        rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths), device="cpu").tolist()  # cpu: meta-safe
        self.layers = nn.ModuleList()
        for i, depth in enumerate(cfg.depths):
            first = sum(cfg.depths[:i])
            self.layers.append(Stage(C * 2 ** i, depth, cfg.num_heads[i], cfg.window_size, cfg.mlp_ratio,
                                     cfg.qkv_bias, rates[first:first + depth], cfg.attn_drop_rate, i < L - 1))
        self.norm = nn.LayerNorm(C * 2 ** (L - 1))

    def embed(self, x, mask=None):
        """Patch embedding (+ norm), then the mask token where mask is True (official: after the norm)."""
        if x.dim() == 4:                                        # image stream: (B, C, H, W)
            if self.patch_embed_2d is None:
                raise ValueError("this encoder was built with image_stream=False but got a (B, C, H, W) image")
            x = self.patch_embed_2d(x).unsqueeze(1)             # (B, 1, H', W', D): an image is a 1-frame clip
            if mask is not None:
                mask = mask.unsqueeze(1)                        # (B, 1, h, w)
        else:
            x = self.patch_embed(x)                             # (B, T', H', W', D)
        if mask is not None:
            if self.mask_token is None:
                raise ValueError("this encoder was built with mask_token=False but got a mask")
            mask = mask_to_patch_grid(mask, self.mask_factor)   # (B, T', H', W'), True = masked
            if mask.shape != x.shape[:4]:
                raise ValueError(f"mask grid {tuple(mask.shape)} does not match the patch grid {tuple(x.shape[:4])}")
            x = torch.where(mask.unsqueeze(-1), self.mask_token.to(x.dtype), x)   # (B, T', H', W', D)
        return x

    def forward(self, x, mask=None):
        x = self.embed(x, mask)                                 # (B, T', H', W', C)
        outs = []
        for layer in self.layers:
            out, x = layer(x)
            outs.append(out)                                    # (B, T', H'_i, W'_i, D_i)
        return outs


# --- BEVT: encoder + decoders + loss ----------------------------------------------------------------------------

class BEVT(nn.Module):
    """Two-stream BERT pretraining (BEVT §3): image stream (MIM, Eq. 3) and video stream (MVM, Eq. 4) through one
    encoder, stream-specific decoders (Eq. 1), one shared softmax classifier (Eq. 2), L = L_MIM + lam L_MVM (Eq. 5)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        C8, C4 = cfg.embed_dim * 2 ** (len(cfg.depths) - 1), cfg.embed_dim * 2 ** (len(cfg.depths) - 2)
        pt = cfg.patch_size[0]
        self.encoder = SwinEncoder(cfg, image_stream=True, mask_token=True)
        # --- image decoder (spec §4): up(F4) 2x spatially, concat F3, Linear; no nonlinearity anywhere
        self.fpn = nn.ConvTranspose2d(C8, C8, kernel_size=2, stride=2)
        self.lm_down = nn.Linear(C4 + C8, C8)
        # --- video decoder: same, then a temporal upsample back to one prediction per frame (x patch_t)
        self.fpn_s = nn.ConvTranspose3d(C8, C8, kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.lm_down_st = nn.Linear(C4 + C8, C8)
        self.fpn_t = nn.ConvTranspose3d(C8, C8, kernel_size=(pt, 1, 1), stride=(pt, 1, 1))
        # --- shared classifier over the codebook (BEVT §3, Eq. 2; official cls_head.lm_head)
        self.lm_head = nn.Linear(C8, cfg.vocab_size)
        init_weights(self)

    def forward_encoder(self, x, mask):
        """-> stage-3 and stage-4 features (B, T', h, w, C4), (B, T', h/2, w/2, C8); T' = 1 for images."""
        outs = self.encoder(x, mask)
        return outs[-2], outs[-1]

    def forward_decoder(self, f3, f4, video):
        """BEVT §3, Eq. (1): F = Linear(Concat(Spatial-Upsample(F4), F3)), then Temporal-Upsample for video.
        Returns features on the target grid, (B, T, h, w, C8) for video, (B, 1, h, w, C8) for images; the shared
        final norm is applied in forward_loss, on the masked positions only (LayerNorm is per token)."""
        B, T, h, w, _ = f3.shape
        if video:
            up = self.fpn_s(f4.movedim(-1, 1)).movedim(1, -1)   # (B, T', h, w, C8)
            x = self.lm_down_st(torch.cat([f3, up], dim=-1))    # (B, T', h, w, C4 + C8) -> (B, T', h, w, C8)
            return self.fpn_t(x.movedim(-1, 1)).movedim(1, -1)  # (B, T, h, w, C8)
        up = self.fpn(f4[:, 0].movedim(-1, 1)).movedim(1, -1)  # (B, h, w, C8)
        x = self.lm_down(torch.cat([f3[:, 0], up], dim=-1))    # (B, h, w, C4 + C8) -> (B, h, w, C8)
        return x.unsqueeze(1)                                   # (B, 1, h, w, C8)

    def forward_loss(self, feats, ids, mask):
        """BEVT Eq. (3)/(4) of one stream, unnormalised: feats (B, T, h, w, C8) from forward_decoder, ids and mask
        (B, T, h, w) on the target grid (T = 1 for images). Returns fp32 scalars (ce_sum, num_correct, num_masked):
        the cross-entropy summed over the M masked positions, how many of them the argmax predicts right, and M.
        As the official head (official: mmaction/models/heads/bevt_multisource_head.py:48,70), the shared norm and
        classifier run on every position and the masked ones are kept: no host sync for the data-dependent M, and
        with M = 0 the sum is 0 with zero gradients for every parameter used, so DDP sees the same graph everywhere."""
        logits = self.lm_head(self.encoder.norm(feats)).float()   # (B, T, h, w, V)
        ce = F.cross_entropy(logits.movedim(-1, 1), ids, reduction="none")   # (B, T, h, w)
        ce_sum = torch.where(mask, ce, 0.0).sum()               # Eq. (3)/(4) numerator
        num_correct = (mask & (logits.argmax(-1) == ids)).sum().float()
        return ce_sum, num_correct, mask.sum().float()

    def forward(self, video=None, video_mask=None, video_ids=None, image=None, image_mask=None, image_ids=None):
        """video (B, C, T, H, W), video_mask (B, T', h, w), video_ids (B, T, h, w); image (B, C, H, W),
        image_mask / image_ids (B, h, w). Either stream may be absent. Returns {"mvm": (ce_sum, num_correct,
        num_masked), "mim": (...)} for the present streams; `objective` turns the sums into Eq. (5)."""
        if image is None and video is None:
            raise ValueError("BEVT.forward needs video=... and/or image=...")
        out = {}
        # the video stream first, as the official recognizer (it fixes the order of the drop-path random draws)
        # official: mmaction/models/recognizers/bevt_multisource.py:115-118
        if video is not None:
            feats = self.forward_decoder(*self.forward_encoder(video, video_mask), video=True)   # (B, T, h, w, C8)
            target_mask = mask_to_target_grid(video_mask, self.cfg.patch_size[0])   # (B, T, h, w)
            out["mvm"] = self.forward_loss(feats, video_ids, target_mask)
        if image is not None:
            feats = self.forward_decoder(*self.forward_encoder(image, image_mask), video=False)  # (B, 1, h, w, C8)
            out["mim"] = self.forward_loss(feats, image_ids.unsqueeze(1), image_mask.unsqueeze(1))
        return out


def target_counts(video_mask=None, image_mask=None, patch_t=2):
    """Loss positions of a batch per present stream, {"mvm": tensor, "mim": tensor} on the mask's device (no host
    sync): the image mask's True cells, and the video mask's True cells repeated over the patch_t frames of their
    temporal token (the target grid forward_loss sees)."""
    counts = {}
    if video_mask is not None:
        counts["mvm"] = mask_to_target_grid(video_mask, patch_t).sum().float()   # (B, T, h, w) summed
    if image_mask is not None:
        counts["mim"] = image_mask.sum().float()
    return counts


def objective(sums, step_counts, lam, world=1):
    """BEVT §3, Eq. (5): L = L_MIM + lam * L_MVM, each term its stream's ce_sum / step_counts[stream].clamp(min=1).
    sums: {stream: ce_sum} of this micro-batch (forward's first entries); step_counts: {stream: loss positions of
    the WHOLE optimizer step}, summed over all micro-batches and all ranks (target_counts, all-reduced); world: the
    number of ranks, multiplied in because DDP averages the gradients over ranks. The gradients accumulated over
    a step are then those of the mean cross-entropy over every masked position of the step.
    This is the one place the loss is normalised. For one micro-batch on one process it is exactly the mean
    cross-entropy of Eq. (3)/(4). The official code takes the mean per GPU per micro-batch (loss_cls mean,
    official: mmaction/models/heads/bevt_multisource_head.py:77-78) and DDP averages those: every GPU weighs the
    same however many positions it masked (a documented difference). Official lam = 1 (official: mmaction/models/heads/bevt_multisource_head.py:27)."""
    loss = 0.0
    for stream, weight in (("mim", 1.0), ("mvm", lam)):
        if stream in sums:
            loss = loss + weight * world * sums[stream] / step_counts[stream].clamp(min=1)
    return loss


class VideoClassifier(nn.Module):
    """Finetuning model (BEVT §3 "Finetuning and inference"): the video encoder, final norm, global average
    pool, dropout, Linear (official I3DHead, dropout 0.5). Keys "encoder.*", "head.*"."""

    def __init__(self, cfg: ModelConfig, num_classes, head_dropout=0.5):
        super().__init__()
        self.encoder = SwinEncoder(cfg, image_stream=False, mask_token=False)
        self.dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(self.encoder.norm.normalized_shape[0], num_classes)
        init_weights(self)

    def forward(self, video):                                   # (B, C, T, H, W)
        x = self.encoder(video)[-1]                             # (B, T', H', W', C8)
        x = self.encoder.norm(x).mean(dim=(1, 2, 3))            # (B, C8)
        return self.head(self.dropout(x))                       # (B, num_classes)


def init_weights(model):
    """official init_weights: trunc_normal(0.02) Linear weights, zero biases, LayerNorm ones/zeros; bias tables
    and the mask token trunc_normal(0.02); convolutions keep the PyTorch default."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, WindowAttention):
            nn.init.trunc_normal_(m.relative_position_bias_table, std=0.02)
        elif isinstance(m, SwinEncoder) and m.mask_token is not None:
            nn.init.trunc_normal_(m.mask_token, std=0.02)


# --- layer-wise lr decay ids (finetuning) -----------------------------------------------------------------------

def layer_id(name, depths):
    """Depth position of a parameter for layer-wise lr decay; multiplier = decay ** (max_layer_id(depths) - id).
    official K400 finetune cfg (spec §7c): patch_embed 0.9^28, layers.0.blocks.0 0.9^27, ..., layers.3.blocks.1
    0.9, backbone.norm 0.9, head 1.0 for Swin-B: every block AND every downsample is one step (24 + 3 = 27), the
    final norm shares the last block's id, the head is the top. Names are ours ("encoder.*", "head.*").
    official QUIRK (spec §7c, mmcv longest-key match): relative_position_bias_table gets lr_mult 1.0 (no decay)
    and block LayerNorms get weight decay. layer_id returns the positional id; whoever reproduces the quirk
    maps bias tables to max_layer_id(depths) explicitly."""
    name = name.removeprefix("encoder.")
    if name.startswith(("patch_embed", "mask_token")):
        return 0
    if name.startswith("layers."):
        stage, rest = int(name.split(".")[1]), name.split(".", 2)[2]
        before = sum(d + 1 for d in depths[:stage])             # earlier stages: their blocks + their downsample
        if rest.startswith("blocks."):
            return 1 + before + int(rest.split(".")[1])
        return 1 + before + depths[stage]                       # downsample of this stage
    if name.startswith("norm."):
        return sum(depths) + len(depths) - 1                    # = id of the last block
    return max_layer_id(depths)                                 # head (and anything after the encoder)


def max_layer_id(depths):
    return sum(depths) + len(depths)


# --- state-dict surgery (pure functions on dicts of tensors) ----------------------------------------------------

def _tv_block_key(rest):
    return rest.replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2.")


def from_torchvision(sd):
    """torchvision.models.video.swin3d_{t,s,b} state dict -> VideoClassifier state dict (exact; drops only the
    relative_position_index buffers, which we compute)."""
    out = {}
    for k, v in sd.items():
        if k.endswith("relative_position_index"):
            continue
        if k.startswith("features."):
            _, idx, rest = k.split(".", 2)
            idx = int(idx)
            if idx % 2 == 0:                                    # features.{2i}.{j}.* = stage i, block j
                j, rest = rest.split(".", 1)
                k = f"encoder.layers.{idx // 2}.blocks.{j}.{_tv_block_key(rest)}"
            else:                                               # features.{2i+1} = patch merging after stage i
                k = f"encoder.layers.{idx // 2}.downsample.{rest}"
        elif k.startswith(("patch_embed.", "norm.")):
            k = "encoder." + k
        elif not k.startswith("head."):
            raise ValueError(f"from_torchvision: unexpected key {k!r}")
        out[k] = v
    return out


def to_torchvision(sd, window_size=(8, 7, 7)):
    """VideoClassifier state dict -> torchvision swin3d state dict (load_state_dict(strict=True) works);
    re-creates the relative_position_index buffers for the full window."""
    out = {}
    index = relative_position_index(window_size, window_size)   # (N, N)
    for k, v in sd.items():
        if k.startswith("encoder.layers."):
            _, _, stage, kind, rest = k.split(".", 4)
            stage = int(stage)
            if kind == "blocks":
                j, rest = rest.split(".", 1)
                rest = rest.replace("mlp.fc1.", "mlp.0.").replace("mlp.fc2.", "mlp.3.")
                out[f"features.{2 * stage}.{j}.{rest}"] = v
                if rest == "attn.relative_position_bias_table":
                    out[f"features.{2 * stage}.{j}.attn.relative_position_index"] = index.clone()
            else:
                out[f"features.{2 * stage + 1}.{rest}"] = v
        elif k.startswith("encoder."):
            out[k.removeprefix("encoder.")] = v
        else:
            out[k] = v
    return out


def interpolate_relative_bias(table, src_window, dst_window):
    """Resize a ((2Wd-1)(2Wh-1)(2Ww-1), nH) bias table to another window, trilinear (spec §7d: 8 -> 16 frames
    for SSv2, (15,13,13) -> (31,13,13)). With align_corners=False the centre (dt = 0) of the source lands exactly
    on the centre of the target: dst index i samples src at (i + 0.5) * (2Wd-1)/(2Wd'-1) - 0.5, which for
    i = Wd'-1 is Wd-1. So the dt = 0 slice (the image-stream bias) is unchanged up to float rounding (~1e-7
    relative); we do not re-copy it, to keep the official interpolated values everywhere."""
    src = [2 * w - 1 for w in src_window]
    dst = [2 * w - 1 for w in dst_window]
    if src == dst:
        return table
    nH = table.shape[1]
    x = table.float().t().reshape(1, nH, *src)                  # (1, nH, 2Wd-1, 2Wh-1, 2Ww-1)
    x = F.interpolate(x, size=dst, mode="trilinear")            # (1, nH, 2Wd'-1, 2Wh'-1, 2Ww'-1)
    return x.reshape(nH, -1).t().contiguous().to(table.dtype)   # (rows', nH)


def _unwrap(ckpt):
    """mmcv / timm / DDP wrappers -> flat state dict without "module." prefixes."""
    for key in ("state_dict", "model", "module"):
        if isinstance(ckpt, dict) and key in ckpt and isinstance(ckpt[key], dict):
            ckpt = ckpt[key]
            break
    return {k.removeprefix("module."): v for k, v in ckpt.items()}


_DECODER = ("fpn.", "lm_down.", "fpn_s.", "lm_down_st.", "fpn_t.")
_PRETRAIN_ONLY = ("encoder.patch_embed_2d.", "encoder.mask_token", "lm_head.") + _DECODER


def load_official(ckpt, target):
    """Official BEVT joint checkpoint (mmcv {'state_dict': backbone.*, cls_head.lm_head.*, cls_head.vae_encoder.*})
    or a Video Swin checkpoint (backbone.*, cls_head.fc_cls.*) -> state dict for `target` (BEVT or
    VideoClassifier). Returns (state_dict, dropped keys). Dropped BY NAME: relative_position_index, attn_mask,
    the DALL-E encoder, and for a classifier the pretraining-only keys (2D patch embed, mask token, decoders,
    lm_head); a classifier head of another shape. Bias tables of another window are interpolated (spec §7d).
    Any other unexpected key, or a missing one (a classifier head may be missing), raises listing them."""
    own = target.state_dict()
    classifier = isinstance(target, VideoClassifier)
    sd, dropped = {}, []
    for k, v in _unwrap(ckpt).items():
        if k.endswith(("relative_position_index", "attn_mask")) or k.startswith("cls_head.vae_encoder."):
            dropped.append(k)
            continue
        if k.startswith("backbone."):
            k = k.removeprefix("backbone.")
            k = k if k.startswith(_DECODER) else "encoder." + k
        elif k.startswith("cls_head.lm_head."):
            k = k.replace("cls_head.", "", 1)
        elif k.startswith("cls_head.fc_cls."):
            k = k.replace("cls_head.fc_cls.", "head.", 1)
        if classifier and k.startswith(_PRETRAIN_ONLY):
            dropped.append(k)
            continue
        if k.endswith("relative_position_bias_table") and k in own and v.shape != own[k].shape:
            v = interpolate_relative_bias(v, _window_of(v.shape[0], target), target_window(target))
        if classifier and k.startswith("head.") and k in own and v.shape != own[k].shape:
            dropped.append(k)
            continue
        sd[k] = v
    unexpected = sorted(set(sd) - set(own))
    missing = sorted(k for k in set(own) - set(sd) if not (classifier and k.startswith("head.")))
    if unexpected or missing:
        raise ValueError(f"load_official: unexpected keys {unexpected}; missing keys {missing}")
    return sd, dropped


def target_window(model):
    return tuple(model.encoder.cfg.window_size)


def _window_of(rows, model):
    """Temporal window of a table with `rows` rows, given the target's spatial window (only Wd may differ)."""
    _, wh, ww = target_window(model)
    wd2 = rows // ((2 * wh - 1) * (2 * ww - 1))
    if wd2 * (2 * wh - 1) * (2 * ww - 1) != rows:
        raise ValueError(f"bias table with {rows} rows does not fit a (?, {wh}, {ww}) window")
    return ((wd2 + 1) // 2, wh, ww)


def inflate_image_checkpoint(ckpt, cfg: ModelConfig):
    """Image-stream checkpoint -> BEVT state dict for joint pretraining (spec §8, official inflate_weights).
    Accepts an official 2D Swin checkpoint (patch_embed.proj is a Conv2d, 2D bias tables) or our own image-stage
    BEVT checkpoint (patch_embed_2d trained, 3D tables of which image mode used only dt = 0). Returns the keys
    it can fill; the rest (lm_down_st, fpn_s, fpn_t, lm_head, ...) keep their fresh init: load strict=False."""
    sd = {}
    for k, v in _unwrap(ckpt).items():                          # 1. unwrap, strip prefixes
        for p in ("backbone.", "encoder."):
            k = k.removeprefix(p)
        if k.endswith(("relative_position_index", "attn_mask")):  # 2. drop buffers, fc_norm -> norm
            continue
        sd[k.replace("fc_norm.", "norm.", 1) if k.startswith("fc_norm.") else k] = v
    pt, (wd, wh, ww) = cfg.patch_size[0], cfg.window_size
    # 3. the 2D patch embedding: ours is patch_embed_2d; an official 2D Swin calls its Conv2d patch_embed
    src2d = "patch_embed_2d." if "patch_embed_2d.proj.weight" in sd else "patch_embed."
    if sd[src2d + "proj.weight"].dim() != 4:
        raise ValueError("inflate_image_checkpoint: no 2D patch embedding (Conv2d weight) in the checkpoint")
    out = {}
    for name in ("proj.weight", "proj.bias", "norm.weight", "norm.bias"):
        out["encoder.patch_embed_2d." + name] = sd[src2d + name]
        out["encoder.patch_embed." + name] = sd[src2d + name]
    # 4. 3D patch embed = the 2D kernel repeated over the patch_t frames / patch_t: same response on static input
    out["encoder.patch_embed.proj.weight"] = sd[src2d + "proj.weight"].unsqueeze(2).repeat(1, 1, pt, 1, 1) / pt
    rows2d = (2 * wh - 1) * (2 * ww - 1)
    for k, v in sd.items():
        if k.startswith(("patch_embed.", "patch_embed_2d.", "lm_head.", "cls_head.", "head.")):
            continue                                            # official: lm_head lives in cls_head, stays fresh
        if k.endswith("relative_position_bias_table"):          # 5. 2D table -> tiled over all 2Wd-1 offsets
            if v.shape[0] == rows2d * (2 * wd - 1):             # our own 3D table: take its dt = 0 slice
                v = v.view(2 * wd - 1, rows2d, -1)[wd - 1]      # (rows2d, nH)
            elif v.shape[0] != rows2d:                          # official: bicubic resize if the 2D size differs
                s = math.isqrt(v.shape[0])
                v = F.interpolate(v.t().reshape(1, -1, s, s), size=(2 * wh - 1, 2 * ww - 1),
                                  mode="bicubic").reshape(v.shape[1], -1).t()   # (rows2d, nH)
            v = v.repeat(2 * wd - 1, 1)                         # ((2Wd-1) rows2d, nH)
        out[k if k.startswith(_DECODER) else "encoder." + k] = v
    return out                                                  # 6. caller: load_state_dict(strict=False)
