"""Mask generators for BEVT's two pretraining streams, drawn on the token grid.

BEVT §3 "Mask strategy" (blockwise masks for images, tube masks for video) and the Table 8 ablations.
Mirrors the official mmaction/datasets/pipelines/mask_generator.py: `MaskingGenerator` (a copy of BEiT's
beit/masking_generator.py) and `MaskedPositionGenerate` (tube masking). The ablations (Random-3D, Frame-Diff,
Random-Frame) are not in the official code; they follow BEVT §4.3 "Effect of masking strategies".

A mask is a bool np.ndarray, True = masked, with the shape of the token grid:
image (H', W') = (14, 14) for 224 px inputs; video (T', H', W') = (8, 14, 14) for 16 x 224 x 224 clips,
i.e. masks live on temporal *tokens* (frames / temporal patch size), not on frames.
Every function is pure: its randomness comes only from the `rng: np.random.Generator` argument
(data.py passes np.random.default_rng([seed, epoch, index])), never from `random` or `np.random`.
`python -m tools.demo masks --out masks.png` draws sampled masks of every strategy.
"""
import math

import numpy as np
import torch

VIDEO_MASK_STRATEGIES = ("tube", "random_3d", "frame_diff", "random_frame")  # BEVT Table 8 rows


def _num_masked(ratio, cells, name):
    """Cells to mask for `ratio`: int(ratio * cells), 98 for 14 x 14 at 0.5
    (official cfg swin_base_patch244_window877_bevt_in1k_k400.py:52 num_masking_patches=98)."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {ratio}")
    return int(ratio * cells)


# --- blockwise masking (image stream, and the 2D mask inside each tube) -----------------------------------

def _uniform(low, high, rng):
    # Python's random.uniform(a, b) is a + (b - a) * random() and accepts a > b. BEiT relies on that once
    # fewer than min_block cells remain (area ~ uniform(16, remaining)); numpy's Generator.uniform would
    # raise there, so we draw the same formula by hand (official: mask_generator.py:42).
    return low + (high - low) * rng.random()


def _place_block(mask, budget, min_block, log_aspect, rng):
    """Try up to 10 random blocks (official: mask_generator.py:39-61); mask the first one adding 1..budget new
    cells. Returns the count."""
    H, W = mask.shape
    for _ in range(10):  # official: mask_generator.py:41, 10 attempts per block
        area = _uniform(min_block, budget, rng)  # official: target_area ~ U(min_num_patches, max_mask_patches)
        aspect = math.exp(_uniform(log_aspect[0], log_aspect[1], rng))  # log-uniform aspect ratio
        bh = int(round(math.sqrt(area * aspect)))
        bw = int(round(math.sqrt(area / aspect)))
        if bh < H and bw < W:  # official: mask_generator.py:46, a block never spans a whole grid side
            top = int(rng.integers(0, H - bh, endpoint=True))  # = python random.randint(0, H - bh), inclusive
            left = int(rng.integers(0, W - bw, endpoint=True))
            box = mask[top:top + bh, left:left + bw]  # view (bh, bw)
            added = bh * bw - int(box.sum())
            if 0 < added <= budget:
                box[...] = True
                return added
    return 0


def blockwise_mask(h, w, num_masked, min_block=16, max_block=None, aspect=(0.3, 1 / 0.3), *, rng):
    """BEiT blockwise masking, BEVT §3 "Mask strategy": (h, w) bool with at most `num_masked` True cells.

    Blocks of random area (>= min_block), log-uniform aspect and random position are added until
    `num_masked` cells are masked or a round of 10 attempts adds nothing, so the count can fall short.
    min_block=16: official Masked2DPositionGenerate min_num_patches=16; max_block=None means num_masked
    (official max_num_patches=None); aspect (0.3, 1/0.3): official MaskingGenerator min_aspect=0.3.
    """
    if not 0 <= num_masked <= h * w:
        raise ValueError(f"num_masked must be in [0, {h * w}] for a {h}x{w} grid, got {num_masked}")
    max_block = num_masked if max_block is None else max_block
    log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
    mask = np.zeros((h, w), dtype=np.bool_)  # (H', W')
    count = 0
    while count < num_masked:
        added = _place_block(mask, min(num_masked - count, max_block), min_block, log_aspect, rng)
        if added == 0:  # official: mask_generator.py:71, stop when a round adds nothing
            break
        count += added
    return mask


# --- tube masking (video stream) and the Table 8 ablations --------------------------------------------------

def _tube_length_bounds(t, tube_range):
    """Inclusive tube-length bounds on t temporal tokens: [max(int(lo*t), 1), min(int(hi*t), t)]
    (official: mask_generator.py:109-110)."""
    lo, hi = max(int(tube_range[0] * t), 1), min(int(tube_range[1] * t), t)
    if lo > hi:
        raise ValueError(f"tube_range {tuple(tube_range)} gives no valid tube length for t={t} temporal tokens")
    return lo, hi


def _tube_frames(t, tube_range, rng):
    """Temporal tokens covered by one tube: length ~ U{lo..hi}, start ~ U{0..t-1}, wrapping past the end."""
    lo, hi = _tube_length_bounds(t, tube_range)
    length = int(rng.integers(lo, hi, endpoint=True))  # BEVT §3: tube length l in [0.5T, T]
    start = int(rng.integers(0, t))  # official: mask_generator.py:113, uniform over all t positions
    # official: mask_generator.py:115-117 wraps a tube that runs past the last token around
    # to token 0 (cyclic). The paper is silent on it ("apply this 2D mask to each frame from t to t + l").
    return (start + np.arange(length)) % t  # (l,)


def tube_mask(t, h, w, ratio_per_frame=0.5, tube_range=(0.5, 1.0), *, rng, min_block=16):
    """Tube masking, BEVT §3: one 2D blockwise mask copied onto a run of temporal tokens. Returns (t, h, w) bool.

    ratio_per_frame=0.5: BEVT §3 "the masking ratio of each masked frame is 0.5" (official 98 of 196).
    tube_range=(0.5, 1.0): BEVT §3 "[0.5T, T]"; official cfg swin_base_patch244_window877_bevt_in1k_k400.py:53
    masked_tube_range=(0.5, 1.0) (the class default (0.5, 0.75) is overridden). Table 8's tube-length
    variants are tube_range=(0.25, 0.75), (0.75, 1.0) and (1.0, 1.0).
    """
    plane = blockwise_mask(h, w, _num_masked(ratio_per_frame, h * w, "ratio_per_frame"), min_block, rng=rng)
    mask = np.zeros((t, h, w), dtype=np.bool_)  # (T', H', W')
    mask[_tube_frames(t, tube_range, rng)] = plane  # the same (H', W') mask on every masked token
    return mask


def expected_tube_ratio(t, h, w, ratio_per_frame=0.5, tube_range=(0.5, 1.0)):
    """Masked fraction of a tube mask, as requested: mean tube length / t * int(ratio_per_frame*h*w) / (h*w).

    Defaults (8, 14, 14): 6/8 * 98/196 = 0.375. A blockwise mask can fall short of its count, so drawn tube
    masks average a little less (docs/masking.md).
    """
    lo, hi = _tube_length_bounds(t, tube_range)
    return (lo + hi) / 2 / t * _num_masked(ratio_per_frame, h * w, "ratio_per_frame") / (h * w)


def random_3d_mask(t, h, w, ratio, *, rng):
    """Table 8 "Random-3D": int(ratio*t*h*w) cells drawn uniformly without replacement from the (t, h, w) grid."""
    mask = np.zeros(t * h * w, dtype=np.bool_)  # (T'H'W',)
    mask[rng.choice(t * h * w, size=_num_masked(ratio, t * h * w, "ratio"), replace=False)] = True
    return mask.reshape(t, h, w)  # (T', H', W')


def frame_diff_mask(t, h, w, ratio_per_frame=0.5, tube_range=(0.5, 1.0), *, rng, min_block=16):
    """Table 8 "Frame-Diff": tokens chosen as in tube_mask, an independent blockwise mask on each. (t, h, w) bool."""
    num = _num_masked(ratio_per_frame, h * w, "ratio_per_frame")
    mask = np.zeros((t, h, w), dtype=np.bool_)  # (T', H', W')
    for f in _tube_frames(t, tube_range, rng):
        mask[f] = blockwise_mask(h, w, num, min_block, rng=rng)
    return mask


def random_frame_mask(t, h, w, ratio_per_frame=0.5, tube_range=(0.5, 1.0), *, rng, min_block=16):
    """Table 8 "Random-Frame": one blockwise mask on l tokens drawn at random (not necessarily consecutive)."""
    plane = blockwise_mask(h, w, _num_masked(ratio_per_frame, h * w, "ratio_per_frame"), min_block, rng=rng)
    lo, hi = _tube_length_bounds(t, tube_range)  # same length distribution as the tube
    frames = rng.choice(t, size=int(rng.integers(lo, hi, endpoint=True)), replace=False)  # (l,)
    mask = np.zeros((t, h, w), dtype=np.bool_)  # (T', H', W')
    mask[frames] = plane
    return mask


def video_mask(strategy, t, h, w, ratio_per_frame=0.5, tube_range=(0.5, 1.0), *, rng, min_block=16):
    """Video mask for one clip by strategy name (one of VIDEO_MASK_STRATEGIES). Returns (t, h, w) bool.

    "random_3d" masks expected_tube_ratio(...) of all cells (0.375 by default), so the ablation changes
    only the shape of the mask, not how much is masked. (Table 8 prints "50%" in the ratio column of the
    Random-3D row too; the paper does not say whether that is per frame or overall.)
    """
    if strategy == "tube":
        return tube_mask(t, h, w, ratio_per_frame, tube_range, rng=rng, min_block=min_block)
    if strategy == "random_3d":
        return random_3d_mask(t, h, w, expected_tube_ratio(t, h, w, ratio_per_frame, tube_range), rng=rng)
    if strategy == "frame_diff":
        return frame_diff_mask(t, h, w, ratio_per_frame, tube_range, rng=rng, min_block=min_block)
    if strategy == "random_frame":
        return random_frame_mask(t, h, w, ratio_per_frame, tube_range, rng=rng, min_block=min_block)
    raise ValueError(f"unknown mask strategy {strategy!r}; expected one of {VIDEO_MASK_STRATEGIES}")


# --- token grid -> model grids (torch) ---------------------------------------------------------------------

def mask_to_patch_grid(mask, factor):
    """(..., H', W') bool -> (..., factor*H', factor*W') bool, nearest: each mask cell covers factor x factor Swin
    patches, factor 4 = 16 px / 4 px (official: mmaction/models/backbones/swin_transformer_bevt.py:842, nearest)."""
    if mask.dtype != torch.bool or mask.dim() < 2:
        raise ValueError(f"mask must be a bool tensor (..., H', W'), got {mask.dtype} {tuple(mask.shape)}")
    return mask.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)  # (..., fH', fW')


def mask_to_target_grid(mask, frames_per_token):
    """(B, T', H', W') bool -> (B, T'*frames_per_token, H', W'): each temporal token's mask on all of its frames
    (official: mask_generator.py:123-127 output_position_masks, nearest from 8 to 16 frames)."""
    if mask.dtype != torch.bool or mask.dim() != 4:
        raise ValueError(f"mask must be a bool tensor (B, T', H', W'), got {mask.dtype} {tuple(mask.shape)}")
    return mask.repeat_interleave(frames_per_token, dim=1)  # (B, T, H', W')
