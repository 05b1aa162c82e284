"""BEVT model: the Swin block, the Video Swin Transformer encoder shared by an image and a video stream, the
decoder of both streams, the losses (BEVT, CVPR 2022, §3 "BEVT encoders", "BEVT decoders", "Training objectives",
"Weight sharing between streams"), and the classifier used for finetuning. Checkpoint conversion is in convert.py.

Mirrors the official files mmaction/models/backbones/swin_transformer_bevt.py (pretraining backbone + decoders),
mmaction/models/backbones/swin_transformer.py (finetuning backbone) and heads/bevt_multisource_head.py (lm_head,
loss). Encoder parameter names are the official ones; the decoder's are named after Eq. (1).

Symbols (used in every shape comment):
  B batch, C=3 colour channels, T, H, W frames / pixels of the input.
  T', H', W' token grid of the current stage (T' = T / patch_t; the image stream runs with T' = 1);
  Tp, Hp, Wp that grid padded to a multiple of the window.
  D channels of the current stage (embed_dim * 2**stage), C8 = 8 * embed_dim (stage-4 width).
  N tokens per window (Wd * Wh * Ww), nW windows per sample, nH heads, hd = D / nH head width.
  h, w the 16-px token grid of the tokenizer (= stage-3 grid, H/16), V codebook size, M masked positions.
  A mask is a bool tensor, True = masked, on the token grid (B, T', h, w) (video) or (B, h, w) (image).
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from masking import mask_to_patch_grid, mask_to_target_grid


# --- config -----------------------------------------------------------------------------------------------------

@dataclass
class ModelConfig:
    embed_dim: int = 128              # official cfg swin_base_patch244_window877_bevt_in1k_k400.py:12 (Swin-B)
    depths: tuple = (2, 2, 18, 2)     # official cfg ..._bevt_in1k_k400.py:11
    num_heads: tuple = (4, 8, 16, 32)  # official cfg ..._bevt_in1k_k400.py:13
    window_size: tuple = (8, 7, 7)    # (Wd, Wh, Ww), official cfg ..._bevt_in1k_k400.py:14; SSv2 finetune (16, 7, 7)
    patch_size: tuple = (2, 4, 4)     # BEVT §3: tubelets of 2 frames x 4 x 4 px; official cfg ..._in1k_k400.py:10
    mlp_ratio: float = 4.0            # official cfg ..._bevt_in1k_k400.py:15
    qkv_bias: bool = True             # official cfg ..._bevt_in1k_k400.py:16
    drop_path_rate: float = 0.3       # official cfg ..._bevt_in1k_k400.py:21, linear 0 -> 0.3 over the 24 blocks
    attn_drop_rate: float = 0.0       # official cfg ..._bevt_in1k_k400.py:19
    vocab_size: int = 8192            # DALL-E codebook, official cfg ..._bevt_in1k_k400.py:23 (num_classes)
    # Image stream attention: "official" = what the paper's numbers were trained with (not in paper): the 2D
    # shift mask on EVERY block and the shift kept where the map equals the window (stage 4 at 224 px);
    # "swin" = plain 2D Swin semantics (torchvision swin_t). The video stream is unaffected. See SwinBlock.
    image_attention: str = "official"
    grad_checkpoint: bool = False     # recompute each block in backward (official use_checkpoint=False)


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


# --- the Swin block: shifted-window attention with relative position bias (Video Swin; torchvision's
# --- ShiftedWindowAttention3d), and everything the block needs (torch, einops).

def relative_position_index(window, table_window, device=None):
    """(N, N) rows of the (2Wd-1)(2Wh-1)(2Ww-1)-row bias table for every query/key pair of a `window` (maybe clamped
    smaller than `table_window`), by TRUE relative offsets: torchvision and the official code slice the full
    window's index, wrong where the map is smaller than the window. For T' = 1 it is the dt = 0 slice (BEVT §3
    weight sharing)."""
    coords = torch.stack(torch.meshgrid(*[torch.arange(w, device=device) for w in window], indexing="ij"))
    coords = coords.flatten(1)                                   # (3, N)
    rel = coords[:, :, None] - coords[:, None, :]                # (3, N, N) offsets in [-(w-1), w-1]
    Wd, Wh, Ww = table_window
    return ((rel[0] + Wd - 1) * (2 * Wh - 1) * (2 * Ww - 1)
            + (rel[1] + Wh - 1) * (2 * Ww - 1) + (rel[2] + Ww - 1))   # (N, N)


def shift_attention_mask(padded, window, shift_size, device=None):
    """(nW, N, N) additive mask for shifted windows: -100 between tokens that came from different regions of
    the cyclically shifted map (the value torchvision and the official code use), 0 elsewhere."""
    labels = []
    for p, w, s in zip(padded, window, shift_size):
        lab = torch.zeros(p, dtype=torch.long, device=device)   # one region on an axis without shift
        if s > 0:
            lab[p - w:p - s] = 1
            lab[p - s:] = 2
        labels.append(lab)
    region = labels[0][:, None, None] * 9 + labels[1][None, :, None] * 3 + labels[2][None, None, :]  # (Tp, Hp, Wp)
    region = rearrange(region, "(t wt) (h wh) (w ww) -> (t h w) (wt wh ww)",
                       wt=window[0], wh=window[1], ww=window[2])  # (nW, N)
    differs = region[:, :, None] != region[:, None, :]           # (nW, N, N)
    return differs.float() * -100.0                             # (nW, N, N)


def window_and_shift(size, window, keep_shift_at_window=False):
    """Clamp the window to the map and drop the shift on every axis the window covers (Video Swin get_window_size,
    official: mmaction/models/backbones/swin_transformer_bevt.py:86-99, as torchvision). keep_shift_at_window: keep
    it where the map EQUALS the window (the official image branch). Returns (window, shift_size), tuples of ints."""
    win = tuple(min(s, w) for s, w in zip(size, window))
    shift = tuple(0 if s < w or (s == w and not keep_shift_at_window) else w // 2 for s, w in zip(size, window))
    return win, shift


def drop_path(x, p, training):
    """Stochastic depth per sample (BEVT cfg drop_path_rate); identity when p == 0 or in eval."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - p)  # (B, 1, 1, 1, 1)
    return x * keep / (1.0 - p)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, softmax(q k^T / sqrt(hd) + bias [+ shift_mask]) v, as one
    F.scaled_dot_product_attention call. It owns the relative position bias table (official name) and the index
    into it for its full window (a fixed, non-persistent buffer; a clamped window computes its own)."""

    def __init__(self, dim, heads, window, qkv_bias, attn_drop):
        super().__init__()
        self.heads, self.window, self.attn_drop = heads, tuple(window), attn_drop
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        rows = (2 * window[0] - 1) * (2 * window[1] - 1) * (2 * window[2] - 1)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(rows, heads))  # ((2Wd-1)(2Wh-1)(2Ww-1), nH)
        self.register_buffer("relative_position_index", relative_position_index(self.window, self.window),
                             persistent=False)              # (N, N)

    def relative_position_bias(self, window):
        index = self.relative_position_index                    # (N, N)
        if window != self.window:                               # clamped to a smaller map
            index = relative_position_index(window, self.window, index.device)
        N = index.shape[0]
        return self.relative_position_bias_table[index.flatten()].view(N, N, -1).permute(2, 0, 1)  # (nH, N, N)

    def forward(self, x, window, shift_mask=None):              # x (B*nW, N, D); shift_mask (nW, N, N)
        Bw, N, D = x.shape
        q, k, v = self.qkv(x).view(Bw, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # 3x (B*nW, nH, N, hd)
        attn_bias = self.relative_position_bias(window).unsqueeze(0)   # (1, nH, N, N), shared by all windows
        if shift_mask is not None:                              # per window; windows are ordered (b, window)
            attn_bias = attn_bias + shift_mask.unsqueeze(1)     # (nW, nH, N, N)
            attn_bias = attn_bias.repeat(Bw // shift_mask.shape[0], 1, 1, 1)   # (B*nW, nH, N, N)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias.to(q.dtype),
                                           dropout_p=self.attn_drop if self.training else 0.0)  # (B*nW, nH, N, hd)
        return self.proj(x.transpose(1, 2).reshape(Bw, N, D))   # (B*nW, N, D)


class Mlp(nn.Module):                                          # Linear, GELU, Linear
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    """Swin block on channels-last tokens (B, T', H', W', D): x + (S)W-MSA(LN(x)), then x + MLP(LN(x)), with plain
    windows or, if `shifted` (odd blocks), windows shifted by half. It clamps its window to the map and keeps the
    shift mask of each input size in `shift_masks` (not state). official_image: the official image branch (not in
    paper): the shift mask on EVERY block (official: mmaction/models/backbones/swin_transformer_bevt.py:472-478,
    :246) and the shift kept where the map equals the window (:237, no get_window_size: stage 4 at 224 px shifts)."""

    def __init__(self, dim, heads, window, shifted, mlp_ratio, qkv_bias, drop_path_p, attn_drop):
        super().__init__()
        self.window, self.shifted, self.drop_path_p = tuple(window), shifted, drop_path_p
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window, qkv_bias, attn_drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.shift_masks = {}

    def forward(self, x, official_image=False):                # (B, T', H', W', D)
        x = x + drop_path(self.shifted_window_attention(self.norm1(x), official_image),
                          self.drop_path_p, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path_p, self.training)

    def shifted_window_attention(self, x, official_image):     # (B, T', H', W', D)
        B, T, H, W, D = x.shape
        window, shift_size = window_and_shift((T, H, W), self.window, keep_shift_at_window=official_image)
        Wd, Wh, Ww = window
        pad = [(w - s % w) % w for s, w in zip((T, H, W), window)]
        x = F.pad(x, (0, 0, 0, pad[2], 0, pad[1], 0, pad[0]))   # (B, Tp, Hp, Wp, D); official: after norm1, zeros
        Tp, Hp, Wp = x.shape[1:4]
        masked = any(shift_size) and (self.shifted or official_image)
        shift_mask = self.shift_mask((Tp, Hp, Wp), window, shift_size, x.device) if masked else None  # (nW, N, N)
        shift_size = shift_size if self.shifted else (0, 0, 0)
        if any(shift_size):                                     # cyclic shift
            x = torch.roll(x, shifts=[-s for s in shift_size], dims=(1, 2, 3))
        x = rearrange(x, "b (t wd) (h wh) (w ww) d -> (b t h w) (wd wh ww) d",
                      wd=Wd, wh=Wh, ww=Ww)                      # (B*nW, N, D) partition into windows
        x = self.attn(x, window, shift_mask)                    # (B*nW, N, D)
        x = rearrange(x, "(b t h w) (wd wh ww) d -> b (t wd) (h wh) (w ww) d", b=B, t=Tp // Wd, h=Hp // Wh,
                      wd=Wd, wh=Wh, ww=Ww)                      # (B, Tp, Hp, Wp, D) reverse the partition
        if any(shift_size):                                     # roll back
            x = torch.roll(x, shifts=list(shift_size), dims=(1, 2, 3))
        return x[:, :T, :H, :W]                                 # (B, T', H', W', D) crop the padding

    def shift_mask(self, padded, window, shift_size, device):   # (nW, N, N) float32, built once per input size
        if torch.compiler.is_compiling():                       # a compiled graph builds it inside: no recompile
            return shift_attention_mask(padded, window, shift_size, device)
        key = (padded, window, shift_size, device)              # everything the mask depends on
        if key not in self.shift_masks:
            self.shift_masks[key] = shift_attention_mask(*key)
        return self.shift_masks[key]


# --- stages ------------------------------------------------------------------------------------------------------

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
    """Swin blocks (one per drop-path rate) alternating plain / shifted windows, then (but the last) patch merging."""

    def __init__(self, dim, heads, window, mlp_ratio, qkv_bias, drop_paths, attn_drop, downsample, grad_checkpoint):
        super().__init__()
        self.grad_checkpoint = grad_checkpoint
        self.blocks = nn.ModuleList(SwinBlock(dim, heads, window, j % 2 == 1, mlp_ratio, qkv_bias, p, attn_drop)
                                    for j, p in enumerate(drop_paths))
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x, official_image=False):                # (B, T', H', W', D)
        for blk in self.blocks:
            if self.grad_checkpoint and self.training and torch.is_grad_enabled():
                # as Video Swin's use_checkpoint (official: mmaction/models/backbones/swin_transformer.py:320-327),
                # per whole block; the RNG state (drop path) is replayed, so the gradients are the same
                x = checkpoint(blk, x, official_image, use_reentrant=False)   # (B, T', H', W', D)
            else:
                x = blk(x, official_image)                      # (B, T', H', W', D)
        # (B, T', H', W', D) pre-downsampling output, and the input of the next stage (B, T', H'/2, W'/2, 2D)
        return x, (x if self.downsample is None else self.downsample(x))


# --- encoder ----------------------------------------------------------------------------------------------------

class SwinEncoder(nn.Module):
    """Video Swin Transformer (BEVT §3 "BEVT encoders") with the shared image stream (§3 "Weight sharing"):
    images run through the same blocks as 1-frame clips after their own 2D patch embedding. forward returns the
    four stage outputs before downsampling, channels-last (B, T', H', W', D_i); `norm` is the final LayerNorm,
    which BEVT applies after the decoder and the classifier after stage 4."""

    def __init__(self, cfg: ModelConfig, image_stream=True, mask_token=True):
        super().__init__()
        if cfg.image_attention not in ("official", "swin"):
            raise ValueError(f"image_attention must be 'official' or 'swin', got {cfg.image_attention!r}")
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
            self.layers.append(Stage(C * 2 ** i, cfg.num_heads[i], cfg.window_size, cfg.mlp_ratio,
                                     cfg.qkv_bias, rates[first:first + depth], cfg.attn_drop_rate, i < L - 1,
                                     cfg.grad_checkpoint))
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

    def forward(self, x, mask=None):                            # (B, C, T, H, W) or (B, C, H, W)
        official_image = x.dim() == 4 and self.cfg.image_attention == "official"
        x = self.embed(x, mask)                                 # (B, T', H', W', C)
        outs = []
        for layer in self.layers:
            out, x = layer(x, official_image)
            outs.append(out)                                    # (B, T', H'_i, W'_i, D_i)
        return outs


# --- the decoder (Eq. 1) and BEVT: encoder + decoder + loss (Eq. 2-5) ----------------------------------------------

class Decoder(nn.Module):
    """The image and the video decoder (BEVT §3 "BEVT decoders", Eq. 1), no nonlinearity anywhere: F =
    Linear(Concat(Spatial-Upsample(F4), F3)), then for video F^ = Temporal-Upsample(F), one prediction per frame.
    Stage-3/4 features of a clip (B, T', h, w, C4), (B, T', h/2, w/2, C8) -> (B, T, h, w, C8); of an image
    (B, h, w, C4), (B, h/2, w/2, C8) -> (B, h, w, C8)."""

    def __init__(self, C4, C8, patch_t):
        super().__init__()
        # --- image decoder (official backbone.fpn.0, backbone.lm_down)
        self.image_spatial_up = nn.ConvTranspose2d(C8, C8, kernel_size=2, stride=2)
        self.image_linear = nn.Linear(C4 + C8, C8)
        # --- video decoder (official backbone.fpn_s.0, backbone.lm_down_st.0, backbone.fpn_t.0)
        self.video_spatial_up = nn.ConvTranspose3d(C8, C8, kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.video_linear = nn.Linear(C4 + C8, C8)
        self.video_temporal_up = nn.ConvTranspose3d(C8, C8, kernel_size=(patch_t, 1, 1), stride=(patch_t, 1, 1))

    def forward(self, f3, f4):
        if f3.dim() == 4:                                       # image stream
            up = self.image_spatial_up(f4.movedim(-1, 1)).movedim(1, -1)   # (B, h, w, C8)
            return self.image_linear(torch.cat([f3, up], dim=-1))  # (B, h, w, C4 + C8) -> (B, h, w, C8)
        up = self.video_spatial_up(f4.movedim(-1, 1)).movedim(1, -1)       # (B, T', h, w, C8)
        x = self.video_linear(torch.cat([f3, up], dim=-1))      # (B, T', h, w, C4 + C8) -> (B, T', h, w, C8)
        return self.video_temporal_up(x.movedim(-1, 1)).movedim(1, -1)     # (B, T, h, w, C8)


class BEVT(nn.Module):
    """Two-stream BERT pretraining (BEVT §3): image (MIM, Eq. 3) and video (MVM, Eq. 4) streams through one encoder,
    the stream-specific decoders (Eq. 1), one shared softmax classifier (Eq. 2); L = L_MIM + lam L_MVM (Eq. 5)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        C8, C4 = cfg.embed_dim * 2 ** (len(cfg.depths) - 1), cfg.embed_dim * 2 ** (len(cfg.depths) - 2)
        self.encoder = SwinEncoder(cfg, image_stream=True, mask_token=True)
        self.decoder = Decoder(C4, C8, cfg.patch_size[0])
        # --- shared classifier over the codebook (BEVT §3, Eq. 2; official cls_head.lm_head)
        self.lm_head = nn.Linear(C8, cfg.vocab_size)
        init_weights(self)

    def forward_encoder(self, x, mask):
        """-> stage-3 and stage-4 features: (B, T', h, w, C4), (B, T', h/2, w/2, C8) of a clip (B, C, T, H, W);
        (B, h, w, C4), (B, h/2, w/2, C8) of an image (B, C, H, W), without the encoder's 1-frame axis."""
        f3, f4 = self.encoder(x, mask)[-2:]
        if x.dim() == 4:
            return f3[:, 0], f4[:, 0]                           # (B, h, w, C4), (B, h/2, w/2, C8)
        return f3, f4

    def forward_loss(self, feats, ids, mask):
        """BEVT Eq. (3)/(4) of one stream, unnormalised: feats (B, T, h, w, C8) or (B, h, w, C8), ids and mask on
        that grid -> fp32 scalars (ce_sum, num_correct, num_masked) over the M masked positions. As the official head
        (official: mmaction/models/heads/bevt_multisource_head.py:48,70) the norm and classifier run on every
        position: no host sync, no data-dependent shape (one static graph for torch.compile). With M = 0 the sum is
        0 with zero gradients for every parameter used, so DDP sees the same graph everywhere."""
        logits = self.lm_head(self.encoder.norm(feats)).float()   # (B, T, h, w, V) or (B, h, w, V)
        ce = F.cross_entropy(logits.movedim(-1, 1), ids, reduction="none")   # (B, T, h, w) or (B, h, w)
        ce_sum = torch.where(mask, ce, 0.0).sum()               # Eq. (3)/(4) numerator
        num_correct = (mask & (logits.argmax(-1) == ids)).sum().float()
        return ce_sum, num_correct, mask.sum().float()

    def forward(self, video=None, video_mask=None, video_ids=None, image=None, image_mask=None, image_ids=None):
        """video (B, C, T, H, W), video_mask (B, T', h, w), video_ids (B, T, h, w); image (B, C, H, W),
        image_mask / image_ids (B, h, w). Either stream may be absent. Returns {"video": (ce_sum, num_correct,
        num_masked), "image": (...)} for the present streams; `objective` turns the sums into Eq. (5)."""
        if image is None and video is None:
            raise ValueError("BEVT.forward needs video=... and/or image=...")
        out = {}
        # the video stream first, as the official recognizer (it fixes the order of the drop-path random draws)
        # official: mmaction/models/recognizers/bevt_multisource.py:115-118
        if video is not None:
            feats = self.decoder(*self.forward_encoder(video, video_mask))   # (B, T, h, w, C8)
            target_mask = mask_to_target_grid(video_mask, self.cfg.patch_size[0])   # (B, T, h, w)
            out["video"] = self.forward_loss(feats, video_ids, target_mask)
        if image is not None:
            feats = self.decoder(*self.forward_encoder(image, image_mask))   # (B, h, w, C8)
            out["image"] = self.forward_loss(feats, image_ids, image_mask)
        return out


def target_counts(video_mask=None, image_mask=None, patch_t=2):
    """Loss positions per present stream, {"video": tensor, "image": tensor} on the mask's device (no host sync): the
    image mask's True cells; the video mask's, each on the patch_t frames of its token (forward_loss's grid)."""
    counts = {}
    if video_mask is not None:
        counts["video"] = mask_to_target_grid(video_mask, patch_t).sum().float()   # (B, T, h, w) summed
    if image_mask is not None:
        counts["image"] = image_mask.sum().float()
    return counts


def objective(sums, step_counts, lam, world=1):
    """BEVT §3, Eq. (5): L = L_MIM + lam * L_MVM, each term sums[stream] / step_counts[stream].clamp(min=1), the one
    place the loss is normalised. sums: {"video": ce_sum, "image": ce_sum} of this micro-batch; step_counts: the
    loss positions of the WHOLE optimizer step, per stream, over all micro-batches and ranks (target_counts,
    all-reduced); world: the number of ranks, as DDP averages gradients. A step's gradients are then those of the
    mean cross-entropy over its masked positions; one micro-batch on one process gives Eq. (3)/(4) exactly. The
    official code averages per GPU per micro-batch (official: mmaction/models/heads/bevt_multisource_head.py:77-78),
    a documented difference; official lam = 1 (official: mmaction/models/heads/bevt_multisource_head.py:27)."""
    loss = 0.0
    for stream, weight in (("image", 1.0), ("video", lam)):
        if stream in sums:
            loss = loss + weight * world * sums[stream] / step_counts[stream].clamp(min=1)
    return loss


# --- finetuning classifier and init ------------------------------------------------------------------------------

class VideoClassifier(nn.Module):
    """Finetuning model (BEVT §3 "Finetuning and inference"): the video encoder, final norm, global average
    pool, dropout, Linear (official I3DHead, dropout 0.5). Keys "encoder.*", "head.*"."""

    def __init__(self, cfg: ModelConfig, num_classes, head_dropout=0.5):
        super().__init__()
        self.encoder = SwinEncoder(cfg, image_stream=False, mask_token=False)
        self.dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(self.encoder.norm.normalized_shape[0], num_classes)
        init_weights(self)
        nn.init.normal_(self.head.weight, std=0.01)             # official: mmaction/models/heads/i3d_head.py:51
        nn.init.zeros_(self.head.bias)                          # (normal_init, init_std=0.01 at :30, bias 0)

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
