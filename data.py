"""Video and image data for BEVT: decoding, annotation readers, frame sampling, the official pipelines, loaders,
and the `check` command (the synthetic dataset that needs no download is synthetic.py).

Paper: BEVT §4.1 "Experimental setup" (K400, SSv2, Diving-48, ImageNet-1K). Pipelines follow the official configs
(spec/official_bevt.md §5 and §7): swin_base_patch244_window877_bevt_in1k_k400.py (pretraining),
..._bevt_finetune_k400.py and ..._window1677_bevt_finetune_ssv2.py (finetuning). Decoding uses PyAV, frame-exactly.
"""
import csv
import functools
import itertools
import json
import math
import multiprocessing
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from cli import parse_flags
from masking import blockwise_mask, video_mask

VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".avi", ".mov")
IMAGE_EXTS = (".jpg", ".jpeg", ".png")
MEAN = torch.tensor([123.675, 116.28, 103.53])  # official: ImageNet mean/std on 0..255 pixels (Normalize in every cfg)
STD = torch.tensor([58.395, 57.12, 57.375])
MAX_RETRIES = 10  # a bad sample is replaced at most this many times in a row before we give up loudly


class MediaError(Exception):
    """A video or image that cannot be decoded as asked (too few frames, corrupt image)."""


@dataclass
class CheckConfig:
    annotation: str = ""  # annotation file (csv / json / list) or an ImageNet-style class folder
    root: str = ""  # folder the annotation's paths are relative to
    min_frames: int = 16  # fewer decodable frames than this is reported as "too short" (sampling would loop)


# --------------------------------------------------------------------------- decoding (PyAV)
def _video_stream(container, path):
    if not container.streams.video:
        raise MediaError(f"{path}: no video stream")
    return container.streams.video[0]


@functools.cache  # counted once per process
def video_frame_count(path) -> int:
    with av.open(str(path)) as container:
        stream = _video_stream(container, path)
        n = stream.frames  # from the container index (mp4); 0 where the container does not store it (webm)
        if n <= 0:  # count packets once (demux only, no decoding)
            n = sum(1 for packet in container.demux(stream) if packet.size > 0)
    if n <= 0:
        raise MediaError(f"{path}: no video frames")
    return n


def _decode(container, stream, wanted: set) -> dict:
    """Frames {index: (H, W, 3) uint8} for the wanted indices, identified by pts; None if pts cannot place them."""
    start = stream.start_time or 0
    frame_dt = 1 / (stream.average_rate * stream.time_base)  # pts ticks per frame (constant frame rate)
    first, last = min(wanted), max(wanted)
    if first > 0:  # land on the keyframe at or before the first wanted frame, then decode forward
        container.seek(start + int(first * frame_dt), stream=stream, backward=True, any_frame=False)
    found = {}
    for n, frame in enumerate(container.decode(stream)):
        if frame.pts is None:
            return None
        i = round((frame.pts - start) / frame_dt)
        if n == 0 and i > first:
            return None  # the seek overshot: caller falls back to a sequential decode
        if i in wanted:
            found[i] = frame.to_ndarray(format="rgb24")
        if i >= last:
            break
    return found if len(found) == len(wanted) else None


def read_video(path, indices) -> torch.Tensor:
    """uint8 (T, H, W, 3) holding frames `indices` (0-based, in display order; repeats allowed) of `path`."""
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    wanted = set(indices.tolist())
    if indices.size == 0 or indices.min() < 0:
        raise MediaError(f"{path}: bad frame indices {indices.tolist()}")
    with av.open(str(path)) as container:
        stream = _video_stream(container, path)
        if indices.max() - indices.min() >= 16:
            stream.thread_type = "AUTO"  # frame threads pay off for long spans, they only add latency for a few frames
        found = _decode(container, stream, wanted) if stream.average_rate else None
        if found is None:  # variable frame rate or odd timestamps: count frames from the start, exact by definition
            container.seek(0, stream=stream, backward=True, any_frame=False)
            frames = itertools.islice(container.decode(stream), max(wanted) + 1)
            found = {i: frame.to_ndarray(format="rgb24") for i, frame in enumerate(frames) if i in wanted}
    if len(found) < len(wanted):
        raise MediaError(f"{path}: frames {sorted(wanted - set(found))} are past the decodable end of the video")
    return torch.from_numpy(np.stack([found[i] for i in indices.tolist()]))  # (T, H, W, 3)


def write_video(path, frames: np.ndarray, fps: int = 25, gop: int = 12) -> None:
    """Encode uint8 (T, H, W, 3) frames: H.264 for .mp4, VP9 for .webm (even H and W)."""
    h264 = str(path).endswith(".mp4")
    # Same frames, same bytes, so the synthetic set and every result on it are reproducible: x264's macroblock-tree
    # rate control (its assembly) made some files differ from run to run here, even on one thread (decoded pixels up
    # to 22 levels apart), so it is off and x264 runs on one thread; bitexact muxing (Matroska writes random UIDs).
    options = {"crf": "18", "preset": "veryfast", "threads": "1", "x264-params": "no-mbtree=1"} if h264 else \
        {"crf": "20", "b": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "0"}
    with av.open(str(path), "w", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("libx264" if h264 else "libvpx-vp9", rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.gop_size = gop  # keyframes every `gop` frames, so seeks land mid-file
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")))
        container.mux(stream.encode())


def read_image(path) -> torch.Tensor:
    try:
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its codecs (for TorchCodec), but they work and
            warnings.simplefilter("ignore", DeprecationWarning)  # decode JPEG ~3x faster than PyAV: mute the notice
            return decode_image(str(path), mode=ImageReadMode.RGB)  # (3, H, W) uint8
    except RuntimeError as err:  # torchvision reports undecodable bytes as RuntimeError
        raise MediaError(f"{path}: {err}") from None


# --------------------------------------------------------------------------- annotation readers
@dataclass
class VideoRecord:
    path: str
    label: int
    start_frame: int = 0
    end_frame: int | None = None  # exclusive; None = the end of the file


@dataclass
class ImageRecord:
    path: str
    label: int


def _need_root(root) -> Path:
    if not Path(root).is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist or is not a folder")
    return Path(root)


def read_k400_csv(csv_path, root, classes=None):
    """Official Kinetics CSV (label,youtube_id,time_start,time_end,split); files {id}_{start:06d}_{end:06d}.mp4
    anywhere under root (split folders, class folders or flat). Rows whose file is absent are skipped and counted."""
    on_disk = {f: os.path.join(d, f) for d, _, fs in os.walk(_need_root(root)) for f in fs}
    rows = []
    with open(csv_path, newline="") as fh:
        for line_no, row in enumerate(csv.reader(fh), 1):
            if line_no == 1 and row[:2] == ["label", "youtube_id"]:
                continue
            try:
                label, yid, t0, t1 = row[0], row[1], int(float(row[2])), int(float(row[3]))
            except (IndexError, ValueError):
                raise ValueError(f"{csv_path}:{line_no}: expected label,youtube_id,time_start,time_end,split") from None
            rows.append((label, f"{yid}_{t0:06d}_{t1:06d}"))
    classes = classes or sorted({label for label, _ in rows})  # official label map is alphabetical
    index = {name: i for i, name in enumerate(classes)}
    found = [(label, next((on_disk[n + e] for e in VIDEO_EXTS if n + e in on_disk), None)) for label, n in rows]
    records = [VideoRecord(path, index[label]) for label, path in found if path is not None]
    if len(records) < len(rows):
        warnings.warn(f"{csv_path}: {len(rows) - len(records)} of {len(rows)} videos not found under {root}, skipped")
    return _nonempty(records, csv_path), classes


def read_list(list_path, root):
    """`relative/path label` per line (mmaction VideoDataset / the ImageNet list); images or videos by extension."""
    root, records = _need_root(root), []
    with open(list_path) as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            parts = line.rsplit(None, 1)
            if len(parts) != 2 or not parts[1].isdigit():
                raise ValueError(f"{list_path}:{line_no}: expected 'path label', got {line.strip()!r}")
            path = str(root / parts[0].strip())
            kind = ImageRecord if path.lower().endswith(IMAGE_EXTS) else VideoRecord
            records.append(kind(path, int(parts[1])))
    num_classes = max((r.label for r in records), default=-1) + 1
    return _nonempty(records, list_path), [str(i) for i in range(num_classes)]


def read_ssv2(json_path, labels_path, root):
    """Something-Something-v2 train/validation JSON [{id, label, template, placeholders}] + labels.json {name: idx}."""
    root = _need_root(root)
    with open(labels_path) as fh:
        label_map = {name: int(idx) for name, idx in json.load(fh).items()}
    classes = sorted(label_map, key=label_map.get)
    records = []
    for i, item in enumerate(_load_json_list(json_path), 1):
        try:
            name = item["template"].replace("[", "").replace("]", "")  # official: class = template without brackets
            records.append(VideoRecord(str(root / f"{item['id']}.webm"), label_map[name]))
        except (KeyError, TypeError, AttributeError):
            raise ValueError(f"{json_path}: entry {i}: needs 'id' and a 'template' listed in {labels_path}") from None
    return _nonempty(records, json_path), classes


def read_diving48(json_path, root):
    """Diving-48 V2 JSON [{vid_name, label, start_frame, end_frame}] with files root/{vid_name}.mp4."""
    root, records = _need_root(root), []
    for i, item in enumerate(_load_json_list(json_path), 1):
        try:
            records.append(VideoRecord(str(root / f"{item['vid_name']}.mp4"), int(item["label"]),
                                       int(item["start_frame"]), int(item["end_frame"])))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{json_path}: entry {i}: needs vid_name, label, start_frame, end_frame") from None
    vocab = Path(json_path).with_name("Diving48_vocab.json")  # [[takeoff, somersault, twist, flight], ...] if present
    classes = ["_".join(v) for v in json.loads(vocab.read_text())] if vocab.exists() else \
        [str(i) for i in range(max(r.label for r in records) + 1)]
    return _nonempty(records, json_path), classes


def read_image_folder(root):
    """ImageNet layout root/<class>/<image>; classes sorted by folder name (torchvision ImageFolder convention)."""
    classes = sorted(d.name for d in _need_root(root).iterdir() if d.is_dir())
    records = [ImageRecord(str(p), i) for i, c in enumerate(classes) for p in sorted((Path(root) / c).iterdir())
               if p.suffix.lower() in IMAGE_EXTS]
    return _nonempty(records, root), classes


def read_annotations(annotation, root):
    """Pick the reader from the annotation itself (folder, .csv, .json kind, or a path-label list)."""
    annotation = Path(annotation)
    if annotation.is_dir():
        return read_image_folder(annotation)
    if not annotation.is_file():
        raise FileNotFoundError(f"annotation file {annotation} does not exist")
    if annotation.suffix == ".csv":
        return read_k400_csv(annotation, root)
    if annotation.suffix == ".json":
        items = _load_json_list(annotation)
        if items and isinstance(items[0], dict) and "template" in items[0]:
            return read_ssv2(annotation, next(annotation.parent.glob("*labels.json")), root)
        return read_diving48(annotation, root)
    return read_list(annotation, root)


def _load_json_list(path):
    with open(path) as fh:
        items = json.load(fh)
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a JSON list of entries")
    return items


def _nonempty(records, source):
    if not records:
        raise ValueError(f"{source}: the dataset is empty")
    return records


# --------------------------------------------------------------------------- frame sampling (pure functions)
def dense_indices(num_frames, clip_len, frame_interval, num_clips, train, rng) -> np.ndarray:
    """(num_clips, clip_len) frame indices; official: mmaction SampleFrames (random offset in train, evenly spaced
    clip centres at test, out-of-range indices loop: np.mod)."""
    span = clip_len * frame_interval
    if train:
        room = (num_frames - span + 1) // num_clips
        if room > 0:
            offsets = np.arange(num_clips) * room + rng.integers(0, room, size=num_clips)
        elif num_frames > max(num_clips, span):
            offsets = np.sort(rng.integers(0, num_frames - span + 1, size=num_clips))
        else:  # short video: clips start at (about) 0 and loop
            offsets = np.around(np.arange(num_clips) * max(num_frames - span + 1, 0) / num_clips).astype(np.int64)
    else:
        step = max(num_frames - span + 1, 0) / num_clips  # a short video: every clip starts at 0
        offsets = (np.arange(num_clips) * step + step / 2).astype(np.int64)
    return np.mod(offsets[:, None] + np.arange(clip_len)[None] * frame_interval, num_frames)  # (num_clips, clip_len)


def uniform_indices(num_frames, clip_len, train, rng) -> np.ndarray:
    """(clip_len,) one frame per segment; official: Video Swin SampleFrames(frame_uniform=True): segment bounds
    round((n-1)/clip_len * i), a random frame in [start, end] (both inclusive) in train, the middle at test."""
    bounds = np.round((num_frames - 1) / clip_len * np.arange(clip_len + 1)).astype(np.int64)
    starts, ends = bounds[:-1], bounds[1:]
    return rng.integers(starts, ends + 1) if train else (starts + ends) // 2


# --------------------------------------------------------------------------- transforms on uint8 (N, 3, H, W)
def resize_short(x, short, interpolation=InterpolationMode.BILINEAR):
    h, w = x.shape[-2:]
    size = [round(h * short / min(h, w)), round(w * short / min(h, w))]
    return TF.resize(x, size, interpolation=interpolation, antialias=True)


def random_crop(x, crop, rng):
    h, w = x.shape[-2:]
    top, left = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
    return x[..., top:top + crop, left:left + crop]


def random_resized_crop(x, crop, rng, area=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """official: mmaction RandomResizedCrop (10 tries, else the centre square) then Resize to crop x crop."""
    h, w = x.shape[-2:]
    for _ in range(10):
        target, aspect = rng.uniform(*area) * h * w, math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        ch, cw = round(math.sqrt(target / aspect)), round(math.sqrt(target * aspect))
        if ch <= h and cw <= w:
            top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            break
    else:
        ch = cw = min(h, w)
        top, left = (h - ch) // 2, (w - cw) // 2
    return TF.resize(x[..., top:top + ch, left:left + cw], [crop, crop], antialias=True)


def fixed_crop(x, crop, position, num_crops):
    """Centre crop (num_crops == 1) or crop `position` of three along the long side (official: ThreeCrop)."""
    h, w = x.shape[-2:]
    t, l = (h - crop) // 2, (w - crop) // 2
    if num_crops == 3:
        t, l = (position * (h - crop) // 2, l) if h > w else (t, position * (w - crop) // 2)
    return x[..., t:t + crop, l:l + crop]


def color_jitter(x, strength, order, rng):
    """BEVT image stream: brightness/contrast/saturation factors ~ U(1-s, 1+s), hue 0; official ColorJitter
    permutes the op order once at construction, and so do we (order is fixed per dataset)."""
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    factors = rng.uniform(1 - strength, 1 + strength, size=3)
    for k in order:
        x = ops[k](x, float(factors[k]))
    return x


def random_erase(x, rng, area=(0.02, 1 / 3), aspect=0.3):
    """official: RandomErasing(p) in the SSv2 cfg (timm, mode 'pixel'): one box of N(0,1) noise, same on all frames
    of x (3, T, H, W)."""
    h, w = x.shape[-2:]
    for _ in range(10):
        target, r = rng.uniform(*area) * h * w, math.exp(rng.uniform(math.log(aspect), math.log(1 / aspect)))
        eh, ew = round(math.sqrt(target * r)), round(math.sqrt(target / r))
        if eh < h and ew < w:
            top, left = rng.integers(0, h - eh + 1), rng.integers(0, w - ew + 1)
            noise = torch.from_numpy(rng.standard_normal((3, 1, eh, ew), dtype=np.float32))  # (3, 1, h, w)
            x[..., top:top + eh, left:left + ew] = noise  # broadcast over T
            break
    return x


def normalize(x):
    """uint8 (N, 3, H, W) -> float (3, N, H, W) normalised with the ImageNet mean/std."""
    x = (x.float() - MEAN[:, None, None]) / STD[:, None, None]  # (N, 3, H, W)
    return x.permute(1, 0, 2, 3).contiguous()  # (3, N, H, W)


# --------------------------------------------------------------------------- datasets
class _Base(Dataset):
    """Per-sample rng from (seed, epoch, index) and bounded replacement of unreadable samples."""

    def __init__(self, records, seed, crop, short_side=math.inf):
        if short_side < crop:
            raise ValueError(f"the rescaled short side {short_side} is smaller than the crop {crop}")
        self.records, self.seed, self.crop, self.epoch, self.views = records, seed, crop, 0, 1
        self._bad = multiprocessing.Value("i", 0)  # shared with DataLoader workers

    def __len__(self):
        return len(self.records) * self.views

    def set_epoch(self, epoch):
        self.epoch = epoch

    @property
    def num_bad(self) -> int:
        """Samples replaced (train) or blanked (test) because their file could not be read, over all workers."""
        return self._bad.value

    def __getitem__(self, index):
        return self._get(index)

    def _get(self, index, replace=True):
        """self._load(index, rng); an unreadable sample is replaced by a random other one, or if not `replace`, None."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        for _ in range(MAX_RETRIES + 1):
            try:
                return self._load(index, rng)
            except (OSError, av.FFmpegError, MediaError) as err:  # only I/O problems; code errors propagate
                path = self.records[index // self.views].path
                warnings.warn(f"unreadable sample {path}: {err}; {'replaced by another' if replace else 'blanked'}")
                with self._bad.get_lock():
                    self._bad.value += 1
                if not replace:
                    return None
                index = int(rng.integers(len(self)))
        raise RuntimeError(f"{MAX_RETRIES + 1} unreadable samples in a row (last {path}); run `python data.py check`")

    def _clip(self, record, pick):
        """Decode the frames chosen by pick(num_frames) within [start_frame, end_frame): uint8 (T, 3, H, W)."""
        end = min(record.end_frame or math.inf, video_frame_count(record.path))
        if end <= record.start_frame:
            raise MediaError(f"{record.path}: no frames in [{record.start_frame}, {end})")
        indices = record.start_frame + pick(end - record.start_frame)
        return read_video(record.path, indices).permute(0, 3, 1, 2)  # (T, 3, H, W)


class PretrainVideoDataset(_Base):
    """BEVT §4.1 video stream; official pipeline (spec §7a): SampleFrames 16x8 -> RandomRescale short side U{256..320}
    bicubic -> RandomCrop 224 -> Flip 0.5; the tokenizer sees the same crop/flip; tube mask on T/patch_t tokens."""

    def __init__(self, records, clip_len=16, frame_interval=8, crop=224, rescale=(256, 320), mask_strategy="tube",
                 tube_range=(0.5, 1.0), mask_ratio=0.5, patch_t=2, seed=0):
        super().__init__(records, seed, crop, rescale[0])
        self.clip_len, self.frame_interval, self.rescale, self.patch_t = clip_len, frame_interval, rescale, patch_t
        self.mask_strategy, self.tube_range, self.mask_ratio = mask_strategy, tube_range, mask_ratio

    def _load(self, index, rng):
        x = self._clip(self.records[index],
                       lambda n: dense_indices(n, self.clip_len, self.frame_interval, 1, True, rng)[0])  # (T, 3, H, W)
        x = resize_short(x, int(rng.integers(self.rescale[0], self.rescale[1] + 1)), InterpolationMode.BICUBIC)
        x = random_crop(x, self.crop, rng)
        x = x.flip(-1) if rng.random() < 0.5 else x
        g = self.crop // 16  # BEVT §3 "Mask strategy": masks live on the 14x14 (224/16) token grid
        t = self.clip_len // self.patch_t
        mask = video_mask(self.mask_strategy, t, g, g, self.mask_ratio, self.tube_range, rng=rng)
        return {"video": normalize(x), "video_tok": x.permute(1, 0, 2, 3).contiguous(),  # (3, T, H, W) both
                "video_mask": torch.from_numpy(mask)}  # (T/patch_t, H/16, W/16), True = masked


class PretrainImageDataset(_Base):
    """Image stream (spec §7a): RandomRescale 256-320 bicubic -> ColorJitter 0.4/0.4/0.4 -> RandomCrop 224 -> Flip;
    blockwise mask with int(mask_ratio * 14 * 14) = 98 cells; the tokenizer sees the same jitter/crop/flip."""

    def __init__(self, records, crop=224, rescale=(256, 320), jitter=0.4, mask_ratio=0.5, seed=0):
        super().__init__(records, seed, crop, rescale[0])
        self.rescale, self.jitter, self.mask_ratio = rescale, jitter, mask_ratio
        self.order = np.random.default_rng([seed]).permutation(3)  # official: jitter op order fixed at construction

    def _load(self, index, rng):
        x = read_image(self.records[index].path)[None]  # (1, 3, H, W)
        x = resize_short(x, int(rng.integers(self.rescale[0], self.rescale[1] + 1)), InterpolationMode.BICUBIC)
        x = random_crop(color_jitter(x, self.jitter, self.order, rng), self.crop, rng)
        x = x.flip(-1) if rng.random() < 0.5 else x
        g = self.crop // 16
        mask = blockwise_mask(g, g, int(self.mask_ratio * g * g), rng=rng)
        return {"image": normalize(x)[:, 0], "image_tok": x[0].contiguous(),  # (3, H, W) both
                "image_mask": torch.from_numpy(mask)}  # (H/16, W/16), True = masked


class FinetuneVideoDataset(_Base):
    """Finetuning/testing (spec §7c, §7d). Train: resize short side 256 -> RandomResizedCrop -> crop x crop
    -> flip (K400; none for SSv2) -> RandAugment(n, m) on all frames alike -> normalise -> random erasing.
    Test: short side 224 -> centre or three crops, num_clips clips; indexed by (video, clip, crop) views."""

    def __init__(self, records, train, sampling="dense", clip_len=32, frame_interval=2, num_clips=1, num_crops=1,
                 crop=224, short_side=None, flip=True, randaugment=None, erase_prob=0.0, area=(0.08, 1.0), seed=0):
        super().__init__(records, seed, crop)
        if sampling not in ("dense", "uniform") or num_crops not in (1, 3) or sampling == "uniform" and num_clips != 1:
            raise ValueError("sampling must be dense|uniform (uniform has one clip), num_crops 1 or 3")
        self.train, self.sampling, self.clip_len, self.frame_interval = train, sampling, clip_len, frame_interval
        self.num_clips, self.num_crops = (1, 1) if train else (num_clips, num_crops)  # training takes one view
        self.views, self.flip = self.num_clips * self.num_crops, flip
        self.short_side = short_side or (256 if train else 224)
        self.randaugment = v2.RandAugment(*randaugment) if randaugment else None  # (num_ops, magnitude)
        self.erase_prob, self.area = erase_prob, area  # area: RandomResizedCrop's range; official: (0.08, 1.0)

    def __getitem__(self, index):
        video = index // self.views
        item = self._get(index, replace=self.train)
        if item is None:  # test view of an unreadable video: a blank clip keeps every video's views in place
            blank = torch.zeros(3, self.clip_len, self.crop, self.crop)
            item = {"video": blank, "label": self.records[video].label, "video_index": video}
        return item

    def _pick(self, n, clip, rng):
        if self.sampling == "uniform":
            return uniform_indices(n, self.clip_len, self.train, rng)
        return dense_indices(n, self.clip_len, self.frame_interval, self.num_clips, self.train, rng)[clip]

    def _load(self, index, rng):
        video, view = divmod(index, self.views)
        clip, position = divmod(view, self.num_crops)
        record = self.records[video]
        x = resize_short(self._clip(record, lambda n: self._pick(n, clip, rng)), self.short_side)
        if not self.train:
            return {"video": normalize(fixed_crop(x, self.crop, position, self.num_crops)), "label": record.label,
                    "video_index": video}
        x = random_resized_crop(x, self.crop, rng, self.area)
        x = x.flip(-1) if self.flip and rng.random() < 0.5 else x
        if self.randaugment is not None:  # torchvision draws from torch's RNG: seed it from ours, then restore it
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(rng.integers(2**62)))
                x = self.randaugment(x)  # (T, 3, H, W) uint8: one draw of ops, applied to every frame
        x = normalize(x)  # (3, T, H, W)
        if rng.random() < self.erase_prob:
            x = random_erase(x, rng)
        return {"video": x, "label": record.label, "index": video}


# --------------------------------------------------------------------------- loaders
def make_loader(dataset, batch_size, train, num_workers, seed, distributed, epoch=0, start_batch=0) -> DataLoader:
    """Train: the DistributedSampler order for (seed, epoch) on this rank, from batch `start_batch` on (exact resume),
    drop_last; the dataset draws each sample's randomness from (seed, epoch, index), so nothing depends on the
    worker count. Eval: rank r takes samples r, r + world, ... (no padding, no duplicates, the last batch uneven)."""
    world, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
    if train:
        sampler = DistributedSampler(dataset, world, rank, shuffle=True, seed=seed, drop_last=True)
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)  # workers are not persistent: each loader's workers see this epoch
        indices = list(sampler)[start_batch * batch_size:]
    else:
        indices = range(rank, len(dataset), world)
    # a private generator: creating a loader must not advance the global torch RNG (drop path), or a resumed run,
    # which creates its loaders at another point of that RNG's stream, would diverge from an uninterrupted one
    return DataLoader(dataset, batch_size, sampler=indices, num_workers=num_workers, drop_last=train,
                      pin_memory=torch.cuda.is_available(), persistent_workers=False,
                      generator=torch.Generator().manual_seed(seed + epoch))


def cycled_batches(dataset, batch_size, num_workers, seed, distributed, position):
    """Spec §5: the joint stage's image stream, cycled beside the video epochs (official: RepeatDataset + cycle),
    a new shuffle each time it runs out. `position` {"epoch", "batch"} is advanced in place as batches are handed
    out, so a checkpoint can store it and a resumed run continues with the same images."""
    while True:
        for batch in make_loader(dataset, batch_size, True, num_workers, seed, distributed, position["epoch"],
                                 position["batch"]):
            position["batch"] += 1
            yield batch
        position["epoch"], position["batch"] = position["epoch"] + 1, 0


def load_frames(root, num_frames, size, seed) -> torch.Tensor:
    """uint8 (N, 3, size, size) random frames (videos) / images under root, rescaled like the tokenizer view
    (short side x U(256/224, 320/224) of size, random crop): training data for the small VQ tokenizer."""
    files = sorted(str(p) for p in _need_root(root).rglob("*") if p.suffix.lower() in VIDEO_EXTS + IMAGE_EXTS)
    if not files:
        raise ValueError(f"{root}: no videos or images found")
    rng, out = np.random.default_rng(seed), []
    per_file = max(1, math.ceil(num_frames / len(files)))
    while len(out) < num_frames:
        path = files[rng.integers(len(files))]
        if path.lower().endswith(IMAGE_EXTS):
            x = read_image(path)[None]  # (1, 3, H, W)
        else:
            n = video_frame_count(path)
            x = read_video(path, np.sort(rng.integers(0, n, size=min(per_file, n)))).permute(0, 3, 1, 2)
        for frame in x:
            short = int(size * rng.uniform(256 / 224, 320 / 224))
            out.append(random_crop(resize_short(frame[None], short, InterpolationMode.BICUBIC), size, rng)[0])
    return torch.stack(out[:num_frames])  # (N, 3, size, size)


# --------------------------------------------------------------------------- check + CLI
def check(cfg: CheckConfig) -> int:
    """Open every file of a dataset, count frames and decode the last one; print a summary. Returns #problems."""
    records, classes = read_annotations(cfg.annotation, cfg.root)
    problems = {"missing": [], "unreadable": [], "too short": []}
    for k, record in enumerate(records, 1):
        try:
            if not os.path.exists(record.path):
                problems["missing"].append(record.path)
            elif isinstance(record, ImageRecord):
                read_image(record.path)
            else:
                n = min(record.end_frame or math.inf, video_frame_count(record.path))
                read_video(record.path, [n - 1])
                if n - record.start_frame < cfg.min_frames:
                    problems["too short"].append(f"{record.path} ({n - record.start_frame} frames)")
        except (OSError, av.FFmpegError, MediaError) as err:
            problems["unreadable"].append(f"{record.path} ({err})")
        if k % 50 == 0 or k == len(records):
            counts = " ".join(f"{key}={len(v)}" for key, v in problems.items())
            print(f"\rcheck {cfg.annotation}: {k}/{len(records)} {counts}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    print(f"{len(records)} samples, {len(classes)} classes")
    for key, paths in problems.items():
        print(f"{key}: {len(paths)}" + "".join(f"\n  {p}" for p in paths[:20]) + ("\n  ..." if len(paths) > 20 else ""))
    return sum(len(v) for v in problems.values())


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["make-synthetic"]:
        import synthetic  # lazy: synthetic.py writes its videos with this file's write_video
        cfg = synthetic.SyntheticConfig(**parse_flags(synthetic.SyntheticConfig, argv[1:], "write the synthetic set"))
        if not cfg.out:
            sys.exit("make-synthetic: --out DIR is required")
        print(f"wrote {synthetic.make_synthetic(cfg.out, cfg)}")
    elif argv[:1] == ["check"]:
        cfg = CheckConfig(**parse_flags(CheckConfig, argv[1:], "validate a dataset", ("annotation", "root")))
        sys.exit(1 if check(cfg) else 0)
    else:
        sys.exit("usage: python data.py make-synthetic --out DIR [...] | python data.py check ANNOTATION ROOT [...]")


if __name__ == "__main__":
    main()
