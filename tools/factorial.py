"""The factorial synthetic task of `python -m tools.reproduce`: every clip carries an appearance label (the shape of
its object) and an independent motion label (how the object orbits a hub), so the two kinds of cue are measured on
the same videos, as BEVT Table 2 contrasts K400 (appearance) with SSv2 / Diving-48 (motion).

A clip shows one plain-coloured object circling a small hub on a flat grey background. The orbit has 8 positions,
evenly spaced by 45 degrees from a random start angle; frame j shows position (j * step) mod 8, where the motion class
sets the step: +1 or -1 (clockwise or counterclockwise, slowly: 45 degrees a frame) or +3 or -3 (quickly: 135
degrees). Every step is coprime to 8, so any 8 consecutive frames visit all 8 positions once: every motion class
shows exactly the same frames, in a different order. Hence:
  - no single frame tells the motion class (the start angle is uniform, so is every frame's position);
  - no unordered set of frames tells it either: the multiset of frames of one video is the same for all 4 classes;
  - a class and its reverse are the same frames in opposite order (`render_clip(a, m, seed)[::-1]` is the clip of
    REVERSED_OF[m] for the same seed);
  - the motion class is a matter of temporal order alone, which is what the Single-frame and Random-Shuffling
    tests (BEVT Table 2) remove.
The appearance class is the object's shape (4 shapes); colour, size, orientation, orbit radius and centre, start
angle and background are drawn per video and say nothing about either label. Each split holds the same number of
videos in every (appearance, motion) cell, so the two labels are independent.

The image set (the image stream's data, ImageNet's role in BEVT) has the content diversity the videos lack, as
ImageNet's has over K400's in BEVT §4.2 (Table 1, observation 4): 10 shapes (the 4 of the videos and 6 that no video
shows), 5 textures (videos: plain colour only), one to three objects, three kinds of background.

Layout written by `python -m tools.factorial --out DIR` (and by factorial_root(); see factorial_paths):
    DIR/classes.json                           {"appearance": [names], "motion": [names], "reversed_of": {..}, ..}
    DIR/videos/{split}/{split}_{i:05d}.mp4     16 frames (two turns of the orbit), H.264
    DIR/{split}_{appearance,motion,cell}.txt   "split/file.mp4 label" lists over the same videos (root DIR/videos);
                                               cell = appearance * 4 + motion, the label a finetune learns both from
    DIR/{split}_{factor}_classes.txt           the class names of a list (readers.read_list reads them)
    DIR/images/train/<shape>/*.JPEG            the image set (class folders: readers.read_image_folder)
for split in train, val, test.
"""
import json
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.io import write_jpeg

import synthetic
from run import parse_flags
from synthetic import CACHE, write_video

# ----------------------------------------------------------------------------------------------------------------------
# config and classes


@dataclass
class FactorialConfig:
    out: str = ""  # output folder (python -m tools.factorial)
    train_per_cell: int = 40  # 16 cells: 640 training videos (pretraining's video set and the readouts' training set)
    val_per_cell: int = 10  # 160 videos, for any choice made on data
    test_per_cell: int = 75  # 1,200 held-out videos: the sampling error of a top-1 near 50 % is 1.44 points
    frames: int = 16  # two turns of the 8-position orbit: any 8 consecutive frames are one whole turn
    size: int = 128  # square frames, the model's input size (the test view is the whole frame)
    images: int = 1280  # the image set: 160 image-stream steps of 8 an epoch, as the videos give 160 video steps
    seed: int = 0


APPEARANCES = ("disk", "square", "triangle", "cross")  # the videos' shapes
# (name, step in orbit positions per frame); image y points down, so a growing angle turns clockwise on screen
MOTIONS = (("clockwise slowly", 1), ("counterclockwise slowly", -1), ("clockwise quickly", 3),
           ("counterclockwise quickly", -3))
REVERSED_OF = {"counterclockwise slowly": "clockwise slowly", "counterclockwise quickly": "clockwise quickly"}
POSITIONS = 8  # orbit positions per turn; every |step| is coprime to it
IMAGE_SHAPES = APPEARANCES + ("ring", "star", "hexagon", "diamond", "ellipse", "bar")  # 6 that no video shows
TEXTURES = ("plain", "stripes", "checker", "dots", "gradient")  # videos: plain only
SPLITS = {"train": 0, "val": 1, "test": 2}  # the index in each video's seed: the splits never share a video

# ----------------------------------------------------------------------------------------------------------------------
# drawing


def shape_mask(shape, u, v, r):
    """Inside of a shape of radius r (about its outer radius) in object coordinates u, v (arrays) -> bool array."""
    if shape == "disk":
        return u ** 2 + v ** 2 < r ** 2
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) < 0.75 * r
    if shape == "triangle":
        return (v < 0.5 * r) & (np.sqrt(3) * u - v < r) & (-np.sqrt(3) * u - v < r)
    if shape == "cross":
        return ((np.abs(u) < 0.3 * r) & (np.abs(v) < r)) | ((np.abs(v) < 0.3 * r) & (np.abs(u) < r))
    if shape == "ring":
        return (u ** 2 + v ** 2 < r ** 2) & (u ** 2 + v ** 2 > (0.55 * r) ** 2)
    if shape == "star":
        return np.hypot(u, v) < r * (0.55 + 0.45 * np.cos(5 * np.arctan2(v, u)))
    if shape == "hexagon":
        return np.max([np.abs(u * np.cos(a) + v * np.sin(a)) for a in np.arange(3) * np.pi / 3], axis=0) < 0.85 * r
    if shape == "diamond":
        return np.abs(u) + 0.7 * np.abs(v) < r
    if shape == "ellipse":
        return (u / r) ** 2 + (v / (0.5 * r)) ** 2 < 1
    if shape == "bar":
        return (np.abs(u) < r) & (np.abs(v) < 0.3 * r)
    raise ValueError(f"unknown shape {shape!r}")


def texture(kind, u, v, r, colours) -> np.ndarray:
    """(H, W, 3) fill of an object from two colours (2, 3) in its own coordinates."""
    a, b = colours
    if kind == "plain":
        choice = np.zeros_like(u, dtype=np.bool_)
    elif kind == "stripes":
        choice = np.sin(u * 6 / r) > 0
    elif kind == "checker":
        choice = (np.floor(u * 2.5 / r) + np.floor(v * 2.5 / r)) % 2 == 1
    elif kind == "dots":
        choice = (np.mod(u * 2.5 / r, 1) - 0.5) ** 2 + (np.mod(v * 2.5 / r, 1) - 0.5) ** 2 < 0.08
    elif kind == "gradient":
        t = np.clip((u / r + 1) / 2, 0, 1)[..., None]
        return (1 - t) * a + t * b
    else:
        raise ValueError(f"unknown texture {kind!r}")
    return np.where(choice[..., None], b, a)


def smooth_background(rng, size, low=100, high=150) -> np.ndarray:
    """A smooth (size, size, 3) background: a random 3 x 3 colour grid, bicubically upsampled (as synthetic.py's)."""
    grid = torch.from_numpy(rng.uniform(low, high, size=(1, 3, 3, 3)))  # (1, 3 colours, 3, 3)
    return F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=True)[0].permute(1, 2, 0).numpy()


def bright_colour(rng) -> np.ndarray:
    """A saturated colour, far from the greyish backgrounds: one channel high, one low, one anywhere."""
    channels = rng.permutation(3)
    colour = np.empty(3)
    colour[channels[0]], colour[channels[1]], colour[channels[2]] = rng.uniform(200, 255), rng.uniform(0, 60), \
        rng.uniform(0, 255)
    return colour


def video_params(seed, size) -> dict:
    """Everything about a video but its labels, drawn from its seed: the labels change none of it. The background is
    one flat grey: masked modelling then spends nothing on predicting background texture, only on the object."""
    rng = np.random.default_rng(seed)
    return {"background": np.full((size, size, 3), rng.uniform(90, 160)), "colour": bright_colour(rng),
            "radius": rng.uniform(0.13, 0.17) * size, "angle": rng.uniform(0, 2 * np.pi),  # object size, orientation
            "orbit": rng.uniform(0.2, 0.24) * size, "start": rng.uniform(0, 2 * np.pi),  # orbit radius, start angle
            "centre": size / 2 + rng.uniform(-0.03, 0.03, size=2) * size}  # hub position (x, y)


def orbit_frame(appearance, position, p, size) -> np.ndarray:
    """uint8 (size, size, 3): the object at orbit position `position` (0..7) of a video with parameters p."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    theta = p["start"] + 2 * np.pi * position / POSITIONS
    cx, cy = p["centre"][0] + p["orbit"] * np.cos(theta), p["centre"][1] + p["orbit"] * np.sin(theta)
    u = (xx - cx) * np.cos(p["angle"]) + (yy - cy) * np.sin(p["angle"])  # (H, W) object coordinates
    v = -(xx - cx) * np.sin(p["angle"]) + (yy - cy) * np.cos(p["angle"])
    frame = np.where(shape_mask(appearance, u, v, p["radius"])[..., None], p["colour"], p["background"])
    hub = (xx - p["centre"][0]) ** 2 + (yy - p["centre"][1]) ** 2 < (0.03 * size) ** 2  # drawn on top: always seen
    frame = np.where(hub[..., None], 40.0, frame)
    return np.clip(frame, 0, 255).astype(np.uint8)


def motion_step(motion) -> int:
    return dict(MOTIONS)[motion]


def render_clip(appearance, motion, seed, frames=16, size=128) -> np.ndarray:
    """uint8 (frames, size, size, 3) clip of one (appearance, motion) cell: frame j shows orbit position
    (j * step) mod 8 of the video drawn from `seed`. The 8 positions are drawn once and indexed, so frames at the
    same position are identical arrays (the multiset property is exact, not approximate)."""
    if appearance not in APPEARANCES:
        raise ValueError(f"unknown appearance {appearance!r}; one of {APPEARANCES}")
    if motion in REVERSED_OF:  # the reverse of its partner: the same frames in opposite order
        return render_clip(appearance, REVERSED_OF[motion], seed, frames, size)[::-1].copy()
    p = video_params(seed, size)
    positions = np.stack([orbit_frame(appearance, i, p, size) for i in range(POSITIONS)])  # (8, H, W, 3)
    return positions[(np.arange(frames) * motion_step(motion)) % POSITIONS]  # (T, H, W, 3)


def render_image(seed, size) -> tuple:
    """(uint8 (size, size, 3) image, [(shape, texture)] of its objects): 1-3 objects of any of IMAGE_SHAPES with any of
    TEXTURES on a smooth, noisy or striped background."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(3)
    if kind == 0:
        image = smooth_background(rng, size, 60, 200)
    elif kind == 1:
        image = smooth_background(rng, size) + rng.normal(0, 20, size=(size, size, 3))
    else:
        yy, xx = np.mgrid[0:size, 0:size]
        a = rng.uniform(0, np.pi)
        stripes = np.sin((xx * np.cos(a) + yy * np.sin(a)) * rng.uniform(0.1, 0.5)) > 0
        image = np.where(stripes[..., None], rng.uniform(60, 200, size=3), rng.uniform(60, 200, size=3))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    objects = []
    for _ in range(rng.integers(1, 4)):
        shape, tex = IMAGE_SHAPES[rng.integers(len(IMAGE_SHAPES))], TEXTURES[rng.integers(len(TEXTURES))]
        r, angle = rng.uniform(0.08, 0.25) * size, rng.uniform(0, 2 * np.pi)
        cx, cy = rng.uniform(0.15, 0.85, size=2) * size
        u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        colours = np.stack([bright_colour(rng), rng.uniform(0, 255, size=3)])
        image = np.where(shape_mask(shape, u, v, r)[..., None], texture(tex, u, v, r, colours), image)
        objects.append((shape, tex))
    return np.clip(image, 0, 255).astype(np.uint8), objects


# ----------------------------------------------------------------------------------------------------------------------
# the set on disk


def cells():
    """[(appearance label, motion label)] in the order a split's videos cycle through them."""
    return [(a, m) for a in range(len(APPEARANCES)) for m in range(len(MOTIONS))]


def motion_parts(labels) -> dict:
    """{"speed": |step|, "direction": sign of the step} of an array of motion labels: the motion label is the pair, so
    a prediction is right on motion exactly when it is right on both."""
    steps = np.array([step for _, step in MOTIONS])[np.asarray(labels)]
    return {"speed": np.abs(steps), "direction": np.sign(steps)}


def split_labels(per_cell) -> list:
    """[(appearance label, motion label)] of a split's videos: every cell per_cell times (a balanced cross table)."""
    return [cell for _ in range(per_cell) for cell in cells()]


def make_factorial(out_dir, cfg: FactorialConfig | None = None) -> Path:
    """Write the factorial set (layout in the module docstring) into out_dir; deterministic in cfg.seed."""
    cfg = cfg or FactorialConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    motions = [name for name, _ in MOTIONS]
    (out / "classes.json").write_text(json.dumps(
        {"appearance": list(APPEARANCES), "motion": motions, "reversed_of": REVERSED_OF,
         "cell": [f"{APPEARANCES[a]}, {motions[m]}" for a, m in cells()],
         "image_shapes": list(IMAGE_SHAPES), "textures": list(TEXTURES),
         "config": {k: v for k, v in asdict(cfg).items() if k != "out"}}, indent=1))
    for split, per_cell in (("train", cfg.train_per_cell), ("val", cfg.val_per_cell), ("test", cfg.test_per_cell)):
        (out / "videos" / split).mkdir(parents=True, exist_ok=True)
        lists = {"appearance": [], "motion": [], "cell": []}
        for i, (a, m) in enumerate(split_labels(per_cell)):
            name = f"{split}/{split}_{i:05d}.mp4"
            clip = render_clip(APPEARANCES[a], motions[m], [cfg.seed, SPLITS[split], i], cfg.frames, cfg.size)
            write_video(out / "videos" / name, clip, gop=cfg.frames)
            for factor, label in (("appearance", a), ("motion", m), ("cell", a * len(MOTIONS) + m)):
                lists[factor].append(f"{name} {label}\n")
        for factor, lines in lists.items():
            (out / f"{split}_{factor}.txt").write_text("".join(lines))
            names = {"appearance": list(APPEARANCES), "motion": motions,
                     "cell": [f"{APPEARANCES[a]}, {motions[m]}" for a, m in cells()]}[factor]
            (out / f"{split}_{factor}_classes.txt").write_text("".join(n + "\n" for n in names))
    for i in range(cfg.images):
        image, objects = render_image([cfg.seed, 9, i], cfg.size)
        folder = out / "images" / "train" / objects[0][0]  # a class folder per shape (train.py ignores the classes)
        folder.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():  # the torchvision codec notice, as in synthetic.py
            warnings.simplefilter("ignore", DeprecationWarning)
            write_jpeg(torch.from_numpy(image).permute(2, 0, 1).contiguous(), str(folder / f"{i:05d}.JPEG"), quality=90)
    return out


def factorial_paths(root) -> dict:
    root = Path(root)
    paths = {"classes": root / "classes.json", "video_root": root / "videos", "images": root / "images" / "train"}
    for split in SPLITS:
        for factor in ("appearance", "motion", "cell"):
            paths[f"{split}_{factor}"] = root / f"{split}_{factor}.txt"
    return paths


def factorial_root(root=None, cfg: FactorialConfig | None = None) -> Path:
    """The set, generated on first use into a temporary folder and renamed into place (atomic). The default folder
    names the config, so a set of other sizes is never taken for it."""
    cfg = cfg or FactorialConfig()
    if root is None:
        root = CACHE / ("factorial-v2-" + "-".join(str(v) for k, v in asdict(cfg).items() if k != "out"))
    return synthetic.write_once(root, lambda tmp: make_factorial(tmp, cfg))


def main(argv=None):
    cfg = FactorialConfig(**parse_flags(FactorialConfig, sys.argv[1:] if argv is None else argv,
                                        "write the factorial synthetic set (appearance x motion)"))
    if not cfg.out:
        raise SystemExit("tools/factorial.py: --out DIR is required")
    print(f"wrote {make_factorial(cfg.out, cfg)}")


if __name__ == "__main__":
    main()
