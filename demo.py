"""Pictures of what BEVT does, one subcommand each.

    python demo.py masks --out masks.png    # sampled masks: image blockwise, then each video strategy (BEVT Table 8)
"""
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import save_image

from cli import parse_flags
from masking import VIDEO_MASK_STRATEGIES, blockwise_mask, mask_to_patch_grid, video_mask


# --------------------------------------------------------------------------- masks
@dataclass
class MasksConfig:
    out: str = "masks.png"  # where the PNG goes (parent folders are created)
    seed: int = 0  # row r is drawn with np.random.default_rng([seed, r])
    t: int = 8  # temporal tokens: official clip_len 16 / temporal patch 2
    grid: int = 14  # H' = W': 224 px / 16 (official input_size=14)
    ratio_per_frame: float = 0.5  # BEVT §3: masking ratio of each masked frame
    cell_px: int = 8  # PNG pixels per mask cell


def parse_masks_args(argv):
    cfg = MasksConfig(**parse_flags(MasksConfig, argv, "Draw sampled BEVT masks as a PNG grid."))
    if not cfg.out.lower().endswith(".png"):
        raise SystemExit(f"--out must name a .png file, got {cfg.out!r}")
    for name in ("t", "grid", "cell_px"):
        if getattr(cfg, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if not 0.0 <= cfg.ratio_per_frame <= 1.0:
        raise SystemExit(f"--ratio-per-frame must be in [0, 1], got {cfg.ratio_per_frame}")
    return cfg


def draw_masks(cfg):
    """Row 0: t independent image (blockwise) masks; rows 1..4: the t temporal tokens of one clip per strategy
    in VIDEO_MASK_STRATEGIES order. Returns (rows*t, 1, grid*cell_px, grid*cell_px) float, masked = dark."""
    num_masked = int(cfg.ratio_per_frame * cfg.grid * cfg.grid)  # 98 of 196 at the defaults, as masking.py counts
    rng = np.random.default_rng([cfg.seed, 0])
    rows = [np.stack([blockwise_mask(cfg.grid, cfg.grid, num_masked, rng=rng) for _ in range(cfg.t)])]  # (T', H', W')
    for r, strategy in enumerate(VIDEO_MASK_STRATEGIES, start=1):
        rows.append(video_mask(strategy, cfg.t, cfg.grid, cfg.grid, cfg.ratio_per_frame,
                               rng=np.random.default_rng([cfg.seed, r])))  # (T', H', W')
    masks = torch.from_numpy(np.concatenate(rows))[:, None]  # (rows*T', 1, H', W')
    masks = mask_to_patch_grid(masks, cfg.cell_px)  # (rows*T', 1, H'*cell_px, W'*cell_px)
    return torch.where(masks, 0.15, 0.95)  # masked cells dark grey, visible cells near white


def masks(argv):
    cfg = parse_masks_args(argv)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(draw_masks(cfg), out, nrow=cfg.t, padding=2, pad_value=0.55)
    print(f"wrote {out}: {1 + len(VIDEO_MASK_STRATEGIES)} rows x {cfg.t} columns "
          f"(rows: image blockwise, then {', '.join(VIDEO_MASK_STRATEGIES)}; columns: temporal tokens)")
    return out


# --------------------------------------------------------------------------- CLI
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["masks"]:
        return masks(argv[1:])
    sys.exit("usage: python demo.py masks --out masks.png [--seed 0 --t 8 --grid 14 --ratio-per-frame 0.5 ...]")


if __name__ == "__main__":
    main()
