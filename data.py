"""Video and image data for BEVT: decoding, annotation readers, frame sampling, the official pipelines, loaders and
the `check` command. (The synthetic set that needs no download is synthetic.py.)

Paper: BEVT §4.1 (K400, SSv2, Diving-48, ImageNet-1K). The pipelines follow the official configs under
configs/recognition/swin/: swin_base_patch244_window877_bevt_in1k_k400.py (pretraining), ..._bevt_finetune_k400.py
and ..._window1677_bevt_finetune_ssv2.py (finetuning). Frame i of a video is its i-th frame in display order, as
decord (the official decoder) numbers frames. Pretraining samples are uint8; `normalize_batch` runs on the device.
"""
import csv
import functools
import json
import math
import multiprocessing
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from cli import parse_flags
from masking import blockwise_mask, video_mask

cv2.setNumThreads(1)  # DataLoader workers are the parallelism; OpenCV would start a thread per core in every worker

VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".avi", ".mov")
IMAGE_EXTS = (".jpg", ".jpeg", ".png")
# official: img_norm_cfg, swin_base_patch244_window877_bevt_in1k_k400.py:38-39 (the same in the finetune cfgs)
MEAN = torch.tensor([123.675, 116.28, 103.53])
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


def _frame_pts(container, stream, path) -> list:
    """pts of every frame in display order, read from the packets (demuxing only, no decoding): frame i is the packet
    with the i-th smallest pts, as decord (the official decoder) numbers frames (dmlc/decord
    src/video/video_reader.cc IndexKeyframes), whatever the frame rate. Discarded packets (before an edit list's
    start) are not displayed, so they are no frames."""
    pts = [packet.pts for packet in container.demux(stream) if packet.size > 0 and not packet.is_discard]
    if not pts or None in pts or len(set(pts)) < len(pts):
        raise MediaError(f"{path}: no frames, or packets without distinct timestamps; frames cannot be numbered "
                         "(remux it: ffmpeg -i IN -c copy OUT.mp4)")
    return sorted(pts)


@functools.cache  # counted once per process
def video_frame_count(path) -> int:
    with av.open(str(path)) as container:
        return len(_frame_pts(container, _video_stream(container, path), path))


def _decode(container, stream, path, pts, start, wanted) -> dict | None:
    """{index: (H, W, 3) uint8} of the wanted frames: seek to the keyframe at or before frame `start`, decode forward
    to the last wanted frame, name each frame by its pts. None if the seek landed past the first wanted frame."""
    index_of, wanted_pts, found = {p: i for i, p in enumerate(pts)}, {pts[i] for i in wanted}, {}
    container.seek(pts[start], stream=stream, backward=True, any_frame=False)
    for packet in container.demux(stream):
        # A frame that is not wanted is decoded only if it is a reference for others (BEVT wants 16 of 128 frames):
        # skipping the others leaves the wanted frames' pixels unchanged. The last (flush) packet has no pts.
        stream.codec_context.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in wanted_pts else "NONREF"
        for frame in packet.decode():
            i = index_of.get(frame.pts)
            if i is None:
                raise MediaError(f"{path}: a decoded frame has pts {frame.pts}, which no packet has")
            if not found and i > min(wanted):
                return None
            if i in wanted:
                found[i] = frame.to_ndarray(format="rgb24")
            if i >= max(wanted):
                return found
    return found


def read_frames(path, pick) -> np.ndarray:
    """uint8 (T, H, W, 3) holding frames pick(number of frames) (0-based, in display order; repeats allowed) of
    `path`; the file is opened and indexed once."""
    with av.open(str(path)) as container:
        stream = _video_stream(container, path)
        pts = _frame_pts(container, stream, path)
        indices = np.asarray(pick(len(pts)), dtype=np.int64).reshape(-1)
        wanted = set(indices.tolist())
        if indices.size == 0 or indices.min() < 0 or indices.max() >= len(pts):
            raise MediaError(f"{path}: frame indices {indices.tolist()} are not all in [0, {len(pts)})")
        stream.thread_count = 1  # official DecordInit(num_threads=1), loading.py:1154: workers are the parallelism
        found = _decode(container, stream, path, pts, min(wanted), wanted)
        if found is None:  # the container's seek index overshot: decode from the first frame instead
            found = _decode(container, stream, path, pts, 0, wanted)
    if len(found) < len(wanted):
        raise MediaError(f"{path}: frames {sorted(wanted - set(found))} are past the decodable end of the video")
    return np.stack([found[i] for i in indices.tolist()])  # (T, H, W, 3)


def read_video(path, indices) -> torch.Tensor:
    """uint8 (T, H, W, 3) holding frames `indices` of `path`."""
    return torch.from_numpy(read_frames(path, lambda num_frames: indices))


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
    on_disk = {name: os.path.join(folder, name) for folder, _, names in os.walk(_need_root(root)) for name in names}
    rows = []
    with open(csv_path, newline="") as fh:
        for line_no, row in enumerate(csv.reader(fh), 1):
            if line_no == 1 and row[:2] == ["label", "youtube_id"]:
                continue
            try:
                label, youtube_id, start, end = row[0], row[1], int(float(row[2])), int(float(row[3]))
            except (IndexError, ValueError):
                raise ValueError(f"{csv_path}:{line_no}: expected label,youtube_id,time_start,time_end,split") from None
            rows.append((label, f"{youtube_id}_{start:06d}_{end:06d}"))
    classes = classes or sorted({label for label, _ in rows})  # official label map is alphabetical
    index = {name: i for i, name in enumerate(classes)}
    found = [(label, next((on_disk[stem + ext] for ext in VIDEO_EXTS if stem + ext in on_disk), None))
             for label, stem in rows]
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


# --------------------------------------------------------------------------- transforms on uint8 (T, H, W, 3) frames
# The official pipelines work on lists of HWC uint8 numpy frames with mmcv, whose resizes are cv2.resize; so do we.
def resize(frames, width, height, interpolation=cv2.INTER_LINEAR):
    """mmcv.imresize(frame, (width, height)) = cv2.resize of every frame (official Resize default: bilinear)."""
    return np.stack([cv2.resize(np.ascontiguousarray(f), (width, height), interpolation=interpolation) for f in frames])


def resize_short(frames, short, interpolation=cv2.INTER_LINEAR):
    """official: Resize(scale=(-1, short)) (augmentations.py:1135-1149, :1186), the size by mmcv.rescale_size:
    int(w * s + 0.5) x int(h * s + 0.5) with s = short / min(h, w)."""
    h, w = frames.shape[1:3]
    scale = short / min(h, w)
    return resize(frames, int(w * scale + 0.5), int(h * scale + 0.5), interpolation)


def random_crop(frames, crop, rng):
    h, w = frames.shape[1:3]
    top, left = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
    return frames[:, top:top + crop, left:left + crop]


def random_resized_crop(frames, crop, rng, area=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """official: RandomResizedCrop (augmentations.py:792-840: 10 tries, else the centre square) then
    Resize(scale=(crop, crop), keep_ratio=False), bilinear."""
    h, w = frames.shape[1:3]
    for _ in range(10):
        target, aspect = rng.uniform(*area) * h * w, math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        crop_h, crop_w = round(math.sqrt(target / aspect)), round(math.sqrt(target * aspect))
        if crop_h <= h and crop_w <= w:
            top, left = rng.integers(0, h - crop_h + 1), rng.integers(0, w - crop_w + 1)
            break
    else:
        crop_h = crop_w = min(h, w)
        top, left = (h - crop_h) // 2, (w - crop_w) // 2
    return resize(frames[:, top:top + crop_h, left:left + crop_w], crop, crop)


def fixed_crop(frames, crop, position, num_crops):
    """Centre crop (num_crops == 1, official CenterCrop) or crop `position` of three along the long side (official:
    ThreeCrop, augmentations.py:1814-1838, offsets position * ((long - crop) // 2))."""
    h, w = frames.shape[1:3]
    top, left = (h - crop) // 2, (w - crop) // 2
    if num_crops == 3:
        top, left = (position * ((h - crop) // 2), left) if h > w else (top, position * ((w - crop) // 2))
    return frames[:, top:top + crop, left:left + crop]


def to_clip(frames) -> torch.Tensor:
    """uint8 numpy (T, H, W, 3) -> uint8 tensor (3, T, H, W), the layout the model reads."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).contiguous()  # (3, T, H, W)


def color_jitter(image, strength, order, rng):
    """official: ColorJitter(0.4, 0.4, 0.4, hue=0) of the image pipeline (augmentations.py:1561-1670): brightness,
    contrast, saturation factors ~ U(1-s, 1+s) applied in `order` to the float32 image, clipped and truncated to
    uint8 once at the end. uint8 (H, W, 3) -> uint8 (H, W, 3). Scalars are cast as NumPy 1.x cast them for the
    official code (NumPy 2 would compute the contrast offset in float32): the official result bit for bit."""
    grey = lambda x: np.float32(0.2989) * x[..., 0] + np.float32(0.587) * x[..., 1] + np.float32(0.114) * x[..., 2]
    factors = rng.uniform(1 - strength, 1 + strength, size=3).tolist()
    x = image.astype(np.float32)  # (H, W, 3)
    for op in order:  # grey: rgb_to_grayscale, augmentations.py:1589-1591
        factor = factors[op]
        if op == 0:  # brightness: img *= b
            x = x * np.float32(factor)
        elif op == 1:  # contrast: blend with the mean grey level of the image
            x = np.float32(factor) * x + np.float32((1 - factor) * np.float64(np.mean(grey(x))))
        else:  # saturation: blend with the image's own grey
            x = np.float32(factor) * x + np.float32(1 - factor) * grey(x)[..., None]
    return np.clip(x, 0, 255).astype(np.uint8)


def random_erase(x, rng, area=(0.02, 1 / 3), min_aspect=0.3):
    """official: RandomErasing(probability=0.25) after Normalize in the SSv2 finetune cfg (..._ssv2.py:23-24), which
    is timm's RandomErasing with its defaults (timm/data/random_erasing.py: mode 'const', one box): a box of zeros,
    the mean colour after normalisation; augmentations.py:476-484 replays the RNG per frame, so every frame gets the
    same box. x (3, T, H, W) float, erased in place; the caller draws the probability."""
    h, w = x.shape[-2:]
    for _ in range(10):
        target = rng.uniform(*area) * h * w
        aspect = math.exp(rng.uniform(math.log(min_aspect), math.log(1 / min_aspect)))
        box_h, box_w = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if box_h < h and box_w < w:
            top, left = rng.integers(0, h - box_h + 1), rng.integers(0, w - box_w + 1)
            x[..., top:top + box_h, left:left + box_w] = 0
            break
    return x


def view_frames(frames):
    """uint8 (T, H, W, 3) crops -> (T, H/2, W/2, 3) tokenizer views. BEVT §3 "Tokenizer": frames are downsampled by
    1/2; official: CopyResize(scale=(112, 112), 'lanczos'), augmentations.py:1430-1456, is mmcv.imresize =
    cv2.resize(INTER_LANCZOS4) on the uint8 crop. We call OpenCV itself: its uint8 Lanczos sums 11-bit fixed-point
    weights in integers, which a float resize misses by a grey level on ~20 % of pixels."""
    T, H, W, C = frames.shape
    if frames.dtype != np.uint8 or C != 3 or H % 2 or W % 2:
        raise ValueError(f"a tokenizer view needs uint8 crops with 3 channels, H and W even; got {frames.dtype} "
                         f"(H, W, C) = {(H, W, C)}")
    return resize(frames, W // 2, H // 2, cv2.INTER_LANCZOS4)


def tokenizer_view(crops):
    """The same for torch crops (CPU): uint8 (..., 3, H, W) -> uint8 (..., 3, H/2, W/2)."""
    *lead, C, H, W = crops.shape
    if crops.dtype != torch.uint8:
        raise ValueError(f"tokenizer_view needs uint8 crops, got {crops.dtype}")
    views = view_frames(crops.reshape(-1, C, H, W).permute(0, 2, 3, 1).numpy())  # (N, H/2, W/2, 3)
    return torch.from_numpy(views).permute(0, 3, 1, 2).reshape(*lead, C, H // 2, W // 2)  # (..., 3, H/2, W/2)


def normalize_batch(x):
    """uint8 (B, 3, ...) on any device -> float32 (x - mean) / std, the official Normalize (mmcv.imnormalize_,
    augmentations.py:1517), bit for bit on every uint8 level."""
    shape = (1, 3) + (1,) * (x.dim() - 2)
    return (x.float() - MEAN.to(x.device).view(shape)) / STD.to(x.device).view(shape)


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

    def __getitem__(self, index, replace=True):
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

    def _frames(self, record, pick):
        """Decode the frames chosen by pick(num_frames) within [start_frame, end_frame): uint8 (T, H, W, 3) numpy."""
        def pick_in_segment(num_frames):
            end = min(record.end_frame or math.inf, num_frames)
            if end <= record.start_frame:
                raise MediaError(f"{record.path}: no frames in [{record.start_frame}, {end})")
            return record.start_frame + pick(end - record.start_frame)
        return read_frames(record.path, pick_in_segment)  # (T, H, W, 3)


def pretrain_crop(frames, crop, rescale, rng, jitter=lambda frames: frames):
    """The pretraining augmentation (official cfg in1k_k400.py:44-46, :60-63): RandomRescale, short side ~ U{rescale}
    bicubic, (images: ColorJitter), random crop, flip with p = 0.5. (T, H, W, 3) -> (T, crop, crop, 3) uint8."""
    frames = jitter(resize_short(frames, int(rng.integers(rescale[0], rescale[1] + 1)), cv2.INTER_CUBIC))
    frames = random_crop(frames, crop, rng)
    return frames[:, :, ::-1] if rng.random() < 0.5 else frames


class PretrainVideoDataset(_Base):
    """BEVT §4.1 video stream (official cfg in1k_k400.py:40-57): SampleFrames 16x8, the pretraining crop, and a tube
    mask on the T/patch_t temporal tokens. Returns uint8 clips; the engine normalises them on the device."""

    def __init__(self, records, clip_len=16, frame_interval=8, crop=224, rescale=(256, 320), mask_strategy="tube",
                 tube_range=(0.5, 1.0), mask_ratio=0.5, patch_t=2, seed=0):
        super().__init__(records, seed, crop, rescale[0])
        self.clip_len, self.frame_interval, self.rescale, self.patch_t = clip_len, frame_interval, rescale, patch_t
        self.mask_strategy, self.tube_range, self.mask_ratio = mask_strategy, tube_range, mask_ratio

    def _load(self, index, rng):
        frames = self._frames(self.records[index],
                              lambda n: dense_indices(n, self.clip_len, self.frame_interval, 1, True, rng)[0])
        frames = pretrain_crop(frames, self.crop, self.rescale, rng)  # (T, crop, crop, 3)
        grid = self.crop // 16  # BEVT §3 "Mask strategy": masks live on the 14x14 (224/16) token grid
        mask = video_mask(self.mask_strategy, self.clip_len // self.patch_t, grid, grid, self.mask_ratio,
                          self.tube_range, rng=rng)
        return {"video": to_clip(frames), "video_tok": to_clip(view_frames(frames)),  # (3, T, H, W), (3, T, H/2, W/2)
                "video_mask": torch.from_numpy(mask)}  # (T/patch_t, H/16, W/16), True = masked


class PretrainImageDataset(_Base):
    """Image stream (official cfg in1k_k400.py:58-73): rescale, ColorJitter 0.4/0.4/0.4 on the whole rescaled image,
    crop, flip; a blockwise mask of int(mask_ratio * 14 * 14) = 98 cells. Returns uint8 images."""

    def __init__(self, records, crop=224, rescale=(256, 320), jitter=0.4, mask_ratio=0.5, seed=0):
        super().__init__(records, seed, crop, rescale[0])
        self.rescale, self.jitter, self.mask_ratio = rescale, jitter, mask_ratio
        # official: the op order is permuted once at construction (augmentations.py:1616, hue is a 4th op that
        # hue=0 skips, so the three others come in a uniformly random order, as here)
        self.order = np.random.default_rng([seed]).permutation(3)

    def _load(self, index, rng):
        frames = read_image(self.records[index].path).permute(1, 2, 0).numpy()[None]  # (1, H, W, 3)
        def jitter(frames):  # ColorJitter on the whole rescaled image (1, H, W, 3)
            return color_jitter(frames[0], self.jitter, self.order, rng)[None]
        frames = pretrain_crop(frames, self.crop, self.rescale, rng, jitter)  # (1, crop, crop, 3)
        grid = self.crop // 16
        mask = blockwise_mask(grid, grid, int(self.mask_ratio * grid * grid), rng=rng)
        return {"image": to_clip(frames)[:, 0],  # (3, H, W) uint8
                "image_tok": to_clip(view_frames(frames))[:, 0],  # (3, H/2, W/2) uint8
                "image_mask": torch.from_numpy(mask)}  # (H/16, W/16), True = masked


class FinetuneVideoDataset(_Base):
    """Finetuning/testing, float32 normalised clips (3, T, H, W). Train (official finetune cfgs, k400.py:15-27,
    ssv2.py:14-28): short side 256 -> RandomResizedCrop -> crop x crop -> flip (K400; none for SSv2) ->
    RandAugment(n, m) on all frames alike -> Normalize -> random erasing. Test: short side 224, centre or three crops,
    num_clips clips; indexed by (video, clip, crop) views."""

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
        video_index = index // self.views
        item = super().__getitem__(index, replace=self.train)
        if item is None:  # test view of an unreadable video: a blank clip keeps every video's views in place
            blank = torch.zeros(3, self.clip_len, self.crop, self.crop)
            item = {"video": blank, "label": self.records[video_index].label, "video_index": video_index}
        return item

    def _load(self, index, rng):
        video_index, view = divmod(index, self.views)
        clip_index, position = divmod(view, self.num_crops)
        record = self.records[video_index]
        def pick(num_frames):
            if self.sampling == "uniform":
                return uniform_indices(num_frames, self.clip_len, self.train, rng)
            clips = dense_indices(num_frames, self.clip_len, self.frame_interval, self.num_clips, self.train, rng)
            return clips[clip_index]  # (clip_len,)
        frames = resize_short(self._frames(record, pick), self.short_side)  # (T, H, W, 3)
        if not self.train:
            clip = to_clip(fixed_crop(frames, self.crop, position, self.num_crops))  # (3, T, crop, crop)
            return {"video": normalize_batch(clip[None])[0], "label": record.label, "video_index": video_index}
        frames = random_resized_crop(frames, self.crop, rng, self.area)
        clip = to_clip(frames[:, :, ::-1] if self.flip and rng.random() < 0.5 else frames)  # (3, T, crop, crop)
        if self.randaugment is not None:  # torchvision draws from torch's RNG: seed it from ours, then restore it
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(rng.integers(2**62)))
                clip = self.randaugment(clip.transpose(0, 1)).transpose(0, 1)  # one draw of ops, on every frame
        clip = normalize_batch(clip[None])[0]  # (3, T, H, W) float32
        if rng.random() < self.erase_prob:
            clip = random_erase(clip, rng)
        return {"video": clip, "label": record.label, "index": video_index}


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
    """The joint stage's image stream, cycled beside the video epochs (official: RepeatDataset, in1k_k400.py:86-95),
    a new shuffle each time it runs out. `position` {"epoch", "batch"} is advanced in place as batches are handed
    out, so a checkpoint can store it and a resumed run continues with the same images."""
    while True:
        for batch in make_loader(dataset, batch_size, True, num_workers, seed, distributed, position["epoch"],
                                 position["batch"]):
            position["batch"] += 1
            yield batch
        position["epoch"], position["batch"] = position["epoch"] + 1, 0


def load_frames(root, num_frames, size, seed) -> torch.Tensor:
    """uint8 (N, 3, size, size) tokenizer views of random frames (videos) and images under root, made as in
    pretraining: short side rescaled bicubic to U{256..320}/224 of the 2*size crop, random crop, tokenizer_view.
    Training data for the small VQ tokenizer."""
    files = sorted(str(p) for p in _need_root(root).rglob("*") if p.suffix.lower() in VIDEO_EXTS + IMAGE_EXTS)
    if not files:
        raise ValueError(f"{root}: no videos or images found")
    crop, rng, out = 2 * size, np.random.default_rng(seed), []
    per_file = max(1, math.ceil(num_frames / len(files)))
    while len(out) < num_frames:
        path = files[rng.integers(len(files))]
        if path.lower().endswith(IMAGE_EXTS):
            frames = read_image(path).permute(1, 2, 0).numpy()[None]  # (1, H, W, 3)
        else:
            frames = read_frames(path, lambda n: np.sort(rng.integers(0, n, size=min(per_file, n))))  # (N, H, W, 3)
        for frame in frames:
            short = int(rng.integers(round(crop * 256 / 224), round(crop * 320 / 224) + 1))
            crops = random_crop(resize_short(frame[None], short, cv2.INTER_CUBIC), crop, rng)  # (1, crop, crop, 3)
            out.append(to_clip(view_frames(crops))[:, 0])  # (3, size, size)
    return torch.stack(out[:num_frames])  # (N, 3, size, size)


# --------------------------------------------------------------------------- check + CLI
def check(cfg: CheckConfig) -> int:
    """Open every file of a dataset, count frames and decode the last one; print a summary. Returns #problems."""
    records, classes = read_annotations(cfg.annotation, cfg.root)
    problems = {"missing": [], "unreadable": [], "too short": []}
    for done, record in enumerate(records, 1):
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
        if done % 50 == 0 or done == len(records):
            counts = " ".join(f"{key}={len(v)}" for key, v in problems.items())
            print(f"\rcheck {cfg.annotation}: {done}/{len(records)} {counts}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    print(f"{len(records)} samples, {len(classes)} classes")
    for key, paths in problems.items():
        print(f"{key}: {len(paths)}" + "".join(f"\n  {p}" for p in paths[:20]) + ("\n  ..." if len(paths) > 20 else ""))
    return sum(len(v) for v in problems.values())


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] != ["check"]:
        sys.exit("usage: python data.py check ANNOTATION ROOT [--min-frames 16]")
    cfg = CheckConfig(**parse_flags(CheckConfig, argv[1:], "validate a dataset", ("annotation", "root")))
    sys.exit(1 if check(cfg) else 0)


if __name__ == "__main__":
    main()
