"""The embedded default: the synthetic video and image set that every script falls back to when no dataset is given,
and the small VQ tokenizer of runs without --tokenizer (small_vq, trained on any folder's frames). The set: real
encoded videos (H.264 .mp4 and VP9 .webm) with annotation files in the Kinetics-400, Something-Something-v2 and
Diving-48 formats, and an ImageNet-style image folder, generated deterministically on first use. Its classes combine
appearance (solvable from one frame, like K400) and motion (direction, rotation sense, speed, forward vs reversed
playback of the same frames: not solvable from one frame, like SSv2 and Diving-48), so the paper's temporal-dependency
test (Table 2) has something to measure.

Layout written by `python -m tools.dataset synthetic --out DIR` (and by synthetic_root(); see synthetic_paths):
    DIR/classes.json                     [{"label", "name", "kind": "appearance"|"motion", "template"}] by label
    DIR/mp4/{youtube_id}_{start:06d}_{end:06d}.mp4   H.264 clips (Kinetics naming, flat)
    DIR/webm/{id}.webm                   VP9 copies of the same clips (Something-Something naming)
    DIR/k400/{train,val}.csv             label,youtube_id,time_start,time_end,split      (root: DIR/mp4)
    DIR/k400/{train,val}_list.txt        "name.mp4 label"                                (root: DIR/mp4)
    DIR/ssv2/{train,validation}.json, DIR/ssv2/labels.json                               (root: DIR/webm)
    DIR/diving48/Diving48_V2_{train,test}.json   vid_name, label, start_frame, end_frame  (root: DIR/mp4)
    with test_per_class > 0 also a held-out test split: DIR/k400/test.csv, DIR/k400/test_list.txt, DIR/ssv2/test.json,
    DIR/diving48/Diving48_V2_heldout.json (Diving-48's own "test" file holds the val split)
    DIR/images/{train,val}/<class>/*.{JPEG,png}, DIR/images/train_list.txt "class/file label"
"""
import csv
import hashlib
import json
import math
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torchvision.io import write_jpeg, write_png

import data
import readers
import tokenizer as tok

# the version in the name changes whenever the generator changes, so a stale cached copy is never used
CACHE = Path(os.environ.get("BEVT_CACHE", Path.home() / ".cache" / "bevt"))  # also holds train.py's default tokenizer
SYNTHETIC_ROOT = CACHE / "synthetic-v5"


@dataclass
class SyntheticConfig:  # the metadata: each flag's range (run.parse_flags checks it)
    out: str = ""  # output folder
    train_per_class: int = field(default=12, metadata={"min": 1})
    val_per_class: int = field(default=4, metadata={"min": 1})
    # a held-out test split; 0: none. The train and val files do not depend on it
    test_per_class: int = field(default=0, metadata={"min": 0})
    frames: int = field(default=64, metadata={"min": 8})
    width: int = field(default=160, metadata={"min": 32})
    height: int = field(default=128, metadata={"min": 32})
    # training images per appearance class (+ 1/6 as many for val)
    images_per_class: int = field(default=48, metadata={"min": 1})
    seed: int = field(default=0, metadata={"min": 0})


# (name, kind, SSv2-style template). Appearance classes are solvable from one frame; motion classes share one
# look (a bar of random colour with a dot on one end) and differ only in how it moves.
SYNTHETIC_CLASSES = (
    ("red disk", "appearance", "Showing [something] red and round"),
    ("green square", "appearance", "Showing [something] green and square"),
    ("blue triangle", "appearance", "Showing [something] blue and triangular"),
    ("striped disk", "appearance", "Showing [something] striped"),
    ("checkered square", "appearance", "Showing [something] checkered"),
    ("slide right", "motion", "Sliding [something] right"),
    ("slide left", "motion", "Sliding [something] left"),  # = "slide right" played backwards
    ("rotate clockwise", "motion", "Turning [something] clockwise"),
    ("rotate counterclockwise", "motion", "Turning [something] counterclockwise"),  # = clockwise backwards
    ("fall", "motion", "Letting [something] fall"),
    ("fall reversed", "motion", "Letting [something] fall, played backwards"),  # same frames as "fall", reversed
    ("move slowly", "motion", "Moving [something] slowly"),
    ("move quickly", "motion", "Moving [something] quickly"),
)
REVERSED_OF = {"slide left": "slide right", "rotate counterclockwise": "rotate clockwise", "fall reversed": "fall"}
# Per video split: the index in each video's seed (one per split, so the splits never share a video), the letter in
# its file name, its SSv2 and Diving-48 annotation files.
SPLITS = {"train": (0, "t", "train.json", "Diving48_V2_train.json"),
          "val": (1, "v", "validation.json", "Diving48_V2_test.json"),
          "test": (2, "x", "test.json", "Diving48_V2_heldout.json")}


def _fold(x, lo, hi):
    """Bounce x back and forth inside [lo, hi]."""
    span = hi - lo
    return lo + span - np.abs(np.mod(x - lo, 2 * span) - span)


def render_clip(name, seed, t, h, w) -> np.ndarray:
    """uint8 (T, H, W, 3) clip of synthetic class `name`; a reversed class is its partner's clip, backwards."""
    if name in REVERSED_OF:
        return render_clip(REVERSED_OF[name], seed, t, h, w)[::-1].copy()
    rng = np.random.default_rng(seed)
    # A smooth, low-contrast greyish background, so that the objects, not the background, stand out.
    low = torch.from_numpy(rng.uniform(100, 150, size=(1, 3, 3, 4))).float()  # (1, 3, 3, 4) colours, upsampled
    bg = F.interpolate(low, size=(h, w), mode="bicubic", align_corners=True)[0].permute(1, 2, 0).numpy()  # (H, W, 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # Large objects (about a third of the frame): a from-scratch ViT must see them through a mean pool over tokens.
    r, p = rng.uniform(0.3, 0.38) * h, np.linspace(0, 1, t)
    is_app = name in [c[0] for c in SYNTHETIC_CLASSES if c[1] == "appearance"]
    m = (0.4 if is_app else 0.25) * h  # appearance objects stay inside the frame; bars may touch its edges
    cx, cy = rng.uniform(m, w - m), rng.uniform(m, h - m)
    angle = np.full(t, rng.uniform(0, 2 * np.pi))
    direction = rng.uniform(0, 2 * np.pi)
    if name == "slide right":
        cx = m + p * (w - 2 * m)
    elif name == "rotate clockwise":  # image y points down, so a growing angle turns clockwise on screen
        angle = angle + p * 1.5 * np.pi
    elif name == "fall":  # constant acceleration from rest
        cy = m + p ** 2 * (h - 2 * m)
    elif name in ("move slowly", "move quickly"):
        length = (0.3 if name == "move slowly" else 1.5) * w
        cx = _fold(cx + p * length * np.cos(direction), m, w - m)
        cy = _fold(cy + p * length * np.sin(direction), m, h - m)
    elif name not in [c[0] for c in SYNTHETIC_CLASSES if c[1] == "appearance"]:
        raise ValueError(f"unknown synthetic class {name!r}")
    else:  # appearance classes drift slowly in a random direction and turn a little
        cx, cy = cx + p * 0.1 * w * np.cos(direction), cy + p * 0.1 * w * np.sin(direction)
        angle = angle + p * rng.uniform(-0.5, 0.5)
    cx, cy = np.broadcast_to(cx, (t,)), np.broadcast_to(cy, (t,))
    colour = rng.uniform(190, 255, size=3)  # a light bar: always in contrast with the background and its dark dot
    frames = np.empty((t, h, w, 3), dtype=np.uint8)
    for i in range(t):
        u = (xx - cx[i]) * np.cos(angle[i]) + (yy - cy[i]) * np.sin(angle[i])  # (H, W) object-frame coordinates
        v = -(xx - cx[i]) * np.sin(angle[i]) + (yy - cy[i]) * np.cos(angle[i])
        img = bg.copy()
        if name in ("red disk", "striped disk"):
            inside = u ** 2 + v ** 2 < r ** 2
            fill = [220, 30, 30] if name == "red disk" else (np.sin(u * 1.2)[..., None] > 0) * 255.0
        elif name in ("green square", "checkered square"):
            inside = np.maximum(np.abs(u), np.abs(v)) < 0.85 * r
            fill = [30, 200, 40] if name == "green square" else \
                ((np.floor(u / 4) + np.floor(v / 4)) % 2)[..., None] * 255.0
        elif name == "blue triangle":
            inside = (v < 0.5 * r) & (np.sqrt(3) * u - v < r) & (-np.sqrt(3) * u - v < r)
            fill = [30, 60, 230]
        else:  # motion classes: the bar, with a dark dot marking one end
            inside = (np.abs(u) < 1.0 * r) & (np.abs(v) < 0.4 * r)
            fill = np.where(((u - 0.6 * r) ** 2 + v ** 2 < (0.25 * r) ** 2)[..., None], 20.0, colour)
        img = np.where(inside[..., None], fill, img)
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def write_video(path, frames: np.ndarray, fps: int = 25, gop: int | None = 12, options: dict | None = None) -> None:
    """Encode uint8 (T, H, W, 3) frames: H.264 for .mp4, VP9 for .webm (even H and W). `options` replaces the encoder
    options below and gop=None keeps the encoder's keyframe interval (x264: 250), e.g. for K400-like files."""
    h264 = str(path).endswith(".mp4")
    # Same frames, same bytes, so the synthetic set and every result on it are reproducible: x264's threads and its
    # macroblock-tree rate control (its assembly) can encode the same frames differently from run to run, so x264
    # runs on one thread with macroblock-tree off (docs/data.md); bitexact muxing (Matroska writes random UIDs).
    if options is None:
        options = {"crf": "18", "preset": "veryfast", "threads": "1", "x264-params": "no-mbtree=1"} if h264 else \
            {"crf": "20", "b": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "0"}
    with av.open(str(path), "w", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("libx264" if h264 else "libvpx-vp9", rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop  # keyframes every `gop` frames, so seeks land mid-file
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")))
        container.mux(stream.encode())


def make_synthetic(out_dir, cfg: SyntheticConfig = SyntheticConfig()) -> Path:
    """Write the synthetic dataset (layout in the module docstring) into out_dir; deterministic in cfg.seed."""
    out = Path(out_dir)
    for sub in ("mp4", "webm", "k400", "ssv2", "diving48"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    classes = sorted(SYNTHETIC_CLASSES)  # label = alphabetical index, as the Kinetics reader derives it
    (out / "classes.json").write_text(json.dumps(
        [{"label": i, "name": n, "kind": k, "template": tp} for i, (n, k, tp) in enumerate(classes)], indent=1))
    (out / "ssv2" / "labels.json").write_text(json.dumps(
        {tp.replace("[", "").replace("]", ""): str(i) for i, (_, _, tp) in enumerate(classes)}, indent=1))
    group = {n: sorted(SYNTHETIC_CLASSES).index(next(c for c in classes if c[0] == REVERSED_OF.get(n, n)))
             for n, _, _ in classes}  # a reversed class shares its partner's seeds: same frames, opposite order
    splits = [("train", cfg.train_per_class), ("val", cfg.val_per_class)]
    splits += [("test", cfg.test_per_class)] if cfg.test_per_class > 0 else []
    for split, count in splits:
        rows, lines, ssv2, diving = [], [], [], []
        split_index, letter, ssv2_json, diving_json = SPLITS[split]  # the index: the splits never share a video
        for label, (name, _, template) in enumerate(classes):
            for i in range(count):
                seed = [cfg.seed, group[name], split_index, i]
                frames = render_clip(name, seed, cfg.frames, cfg.height, cfg.width)
                youtube_id, start = f"syn{label:02d}{letter}{i:05d}", 10 * i
                stem = f"{youtube_id}_{start:06d}_{start + 10:06d}"
                video_id = str(100000 * split_index + 1000 * label + i)
                write_video(out / "mp4" / f"{stem}.mp4", frames)
                write_video(out / "webm" / f"{video_id}.webm", frames, gop=16)
                rows.append([name, youtube_id, start, start + 10, split])
                lines.append(f"{stem}.mp4 {label}\n")
                ssv2.append({"id": video_id, "label": name, "template": template, "placeholders": ["something"]})
                diving.append({"vid_name": stem, "label": label, "start_frame": 0, "end_frame": cfg.frames})
        with open(out / "k400" / f"{split}.csv", "w", newline="") as fh:
            csv.writer(fh).writerows([["label", "youtube_id", "time_start", "time_end", "split"]] + rows)
        (out / "k400" / f"{split}_list.txt").write_text("".join(lines))
        (out / "ssv2" / ssv2_json).write_text(json.dumps(ssv2))
        (out / "diving48" / diving_json).write_text(json.dumps(diving))
    image_classes = [n for n, k, _ in classes if k == "appearance"]
    lines = []
    image_splits = (("train", cfg.images_per_class), ("val", max(1, cfg.images_per_class // 6)))
    for split, count in image_splits if cfg.images_per_class > 0 else ():  # 0: a set of videos only
        for label, name in enumerate(image_classes):
            folder = out / "images" / split / name.replace(" ", "_")
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                frame = torch.from_numpy(render_clip(name, [cfg.seed, 99, label, split == "val", i], 1,
                                                     cfg.height, cfg.width)[0]).permute(2, 0, 1)  # (3, H, W)
                with warnings.catch_warnings():  # torchvision's deprecation notice for its image codecs
                    warnings.simplefilter("ignore", DeprecationWarning)
                    if split == "train":  # JPEG for train (as ImageNet), PNG for val: both decoders are exercised
                        write_jpeg(frame, str(folder / f"{i:05d}.JPEG"), quality=90)
                        lines.append(f"{folder.name}/{i:05d}.JPEG {label}\n")
                    else:
                        write_png(frame, str(folder / f"{i:05d}.png"))
    if cfg.images_per_class > 0:
        (out / "images" / "train_list.txt").write_text("".join(lines))
    return out


def synthetic_paths(root) -> dict:
    root = Path(root)
    return {"classes": root / "classes.json", "mp4_root": root / "mp4", "webm_root": root / "webm",
            "k400_train_csv": root / "k400/train.csv", "k400_val_csv": root / "k400/val.csv",
            "k400_train_list": root / "k400/train_list.txt", "k400_val_list": root / "k400/val_list.txt",
            # the test split's files exist when test_per_class > 0
            "k400_test_csv": root / "k400/test.csv", "k400_test_list": root / "k400/test_list.txt",
            "ssv2_test": root / "ssv2/test.json", "diving48_heldout": root / "diving48/Diving48_V2_heldout.json",
            "ssv2_train": root / "ssv2/train.json", "ssv2_val": root / "ssv2/validation.json",
            "ssv2_labels": root / "ssv2/labels.json",
            "diving48_train": root / "diving48/Diving48_V2_train.json",
            "diving48_test": root / "diving48/Diving48_V2_test.json",
            "images_train": root / "images/train", "images_val": root / "images/val",
            "images_train_list": root / "images/train_list.txt", "images_root": root / "images/train"}


def class_kinds(root) -> list:
    """'appearance' | 'motion' per label of the synthetic set (labels agree across its annotation formats)."""
    return [c["kind"] for c in json.loads(Path(synthetic_paths(root)["classes"]).read_text())]


def class_groups(root) -> dict:
    """{"appearance": [labels], "motion": [labels]}: the class groups finetune.py reports top-1 for."""
    kinds = class_kinds(root)
    return {g: [c for c, k in enumerate(kinds) if k == g] for g in ("appearance", "motion")}


def synthetic_root(root=SYNTHETIC_ROOT, cfg: SyntheticConfig = SyntheticConfig()) -> Path:
    """The synthetic dataset, generated on first use into a temporary folder and renamed into place (atomic)."""
    return write_once(root, lambda tmp: make_synthetic(tmp, cfg))


def write_once(root, make):
    """A generated folder, made on first use: make(tmp) writes it into a temporary folder beside `root`, which is then
    renamed into place (atomic: an interrupted run never leaves a half-written set under the real name)."""
    root = Path(root)
    if not (root / "classes.json").exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
        make(tmp)
        try:
            os.rename(tmp, root)
        except OSError:  # another process finished first: keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
    return root


# ----------------------------------------------------------------------------------------------------------------------
# the small VQ tokenizer of the runs without a --tokenizer (trained on the frames of any folder)

# Part of the cached tokenizer's name: bump it when what small_vq trains changes (load_frames, data.tokenizer_view,
# tokenizer.VQConfig or tokenizer.VQTokenizer), so a VQ made by other code is not reused.
SMALL_VQ_VERSION = 2


def load_frames(root, num_frames, size, seed) -> torch.Tensor:
    """uint8 (N, 3, size, size) tokenizer views of random frames (videos) and images under root, made as in
    pretraining: short side rescaled bicubic to U{256..320}/224 of the 2*size crop, random crop, tokenizer_view.
    Training data for the small VQ tokenizer."""
    files = sorted(str(p) for p in readers.need_root(root).rglob("*")
                   if p.suffix.lower() in readers.VIDEO_EXTS + readers.IMAGE_EXTS)
    if not files:
        raise ValueError(f"{root}: no videos or images found")
    crop, rng, out = 2 * size, np.random.default_rng(seed), []
    per_file = max(1, math.ceil(num_frames / len(files)))
    while len(out) < num_frames:
        path = files[rng.integers(len(files))]
        if path.lower().endswith(readers.IMAGE_EXTS):
            frames = readers.read_image(path).permute(1, 2, 0).numpy()[None]  # (1, H, W, 3)
        else:
            frames = readers.read_frames(
                path, lambda n: np.sort(rng.integers(0, n, size=min(per_file, n))))  # (N, H, W, 3)
        for frame in frames:
            short = int(rng.integers(round(crop * 256 / 224), round(crop * 320 / 224) + 1))
            crops = data.random_crop(data.resize_short(frame[None], short, cv2.INTER_CUBIC), crop, rng)  # (1, c, c, 3)
            out.append(data.to_clip(data.view_frames(crops))[:, 0])  # (3, size, size)
    return torch.stack(out[:num_frames])  # (N, 3, size, size)


def cached_small_vq_path(root, size) -> Path:
    """Where the small VQ for `root`'s frames at `size` px is cached: per data folder, view size and
    SMALL_VQ_VERSION (the code that made it)."""
    key = hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:10]
    return CACHE / f"vq_tokenizer_{size}_v{SMALL_VQ_VERSION}_{key}.pt"


def small_vq(root, size, path):
    """The small VQ tokenizer (tokenizer.VQConfig(size=size)) trained on frames of `root`, saved at `path` unless that
    exists; deterministic (seeded frames and training). Returns path."""
    if not Path(path).exists():
        cfg = tok.VQConfig(size=size)
        frames = load_frames(root, cfg.num_frames, cfg.size, cfg.seed)  # (N, 3, size, size) uint8
        tok.save_tokenizer(tok.train_vq_tokenizer(frames, cfg), path)
    return Path(path)
