"""Video and image data for BEVT: decoding, annotation readers, frame sampling, the official pipelines, loaders and
the commands `python data.py check` (validate a dataset) and `python data.py extract-frames` (write a video dataset
as frame folders, mmaction's rawframes, which the same datasets read ~2-3x faster). (The synthetic set that needs no
download is synthetic.py.)

Paper: BEVT §4.1 (K400, SSv2, Diving-48, ImageNet-1K). The pipelines follow the official configs under
configs/recognition/swin/: swin_base_patch244_window877_bevt_in1k_k400.py (pretraining), ..._bevt_finetune_k400.py
and ..._window1677_bevt_finetune_ssv2.py (finetuning). Frame i of a video is its i-th frame in display order, as
decord (the official decoder) numbers frames. Pretraining samples are uint8; `normalize_batch` runs on the device.
"""
import copy
import csv
import functools
import json
import math
import multiprocessing
import os
import re
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
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


@dataclass
class ExtractConfig:
    ann: str = ""  # annotation of the videos (any format read_annotations reads)
    root: str = ""  # folder its paths are relative to
    out: str = ""  # output root of the frame folders and the list
    format: str = field(default="jpg", metadata={"choices": ("jpg", "png")})  # png: the decoded frames exactly
    quality: int = 95  # JPEG quality; official: OpenCV's default 95 (tools/data/build_rawframes.py:58-59)


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


def _decoded(container, stream, path, pts, wanted):
    """(frame index, av.VideoFrame) from the container's position on, in decoding order. A frame that is not wanted is
    decoded only if it is a reference for others (BEVT wants 16 of 128 frames): skipping the others leaves the
    wanted frames' pixels unchanged."""
    index_of, wanted_pts = {p: i for i, p in enumerate(pts)}, {pts[i] for i in wanted}
    for packet in container.demux(stream):  # the last (flush) packet has no pts
        stream.codec_context.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in wanted_pts else "NONREF"
        for frame in packet.decode():
            if frame.pts not in index_of:
                raise MediaError(f"{path}: a decoded frame has pts {frame.pts}, which no packet has")
            yield index_of[frame.pts], frame


def _decode(container, stream, path, pts, start, wanted) -> dict | None:
    """{index: (H, W, 3) uint8} of the wanted frames: seek to the keyframe at or before frame `start`, decode forward
    to the last wanted frame. None if the seek landed past the first wanted frame."""
    container.seek(pts[start], stream=stream, backward=True, any_frame=False)
    found = {}
    for i, frame in _decoded(container, stream, path, pts, wanted):
        if not found and i > min(wanted):
            return None
        if i in wanted:
            found[i] = frame.to_ndarray(format="rgb24")
        if i >= max(wanted):
            break
    return found


def _picked(pick, num_frames, path) -> np.ndarray:
    """pick(num_frames) as int64 indices, checked to be frames of `path`."""
    indices = np.asarray(pick(num_frames), dtype=np.int64).reshape(-1)
    if indices.size == 0 or indices.min() < 0 or indices.max() >= num_frames:
        raise MediaError(f"{path}: frame indices {indices.tolist()} are not all in [0, {num_frames})")
    return indices


def read_frames(path, pick) -> np.ndarray:
    """uint8 (T, H, W, 3) holding frames pick(number of frames) (0-based, in display order; repeats allowed) of
    `path`; the file is opened and indexed once."""
    with av.open(str(path)) as container:
        stream = _video_stream(container, path)
        pts = _frame_pts(container, stream, path)
        indices = _picked(pick, len(pts), path)
        wanted = set(indices.tolist())
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


# --------------------------------------------------------------------------- frame folders (rawframes)
# official: mmaction's RawframeDataset names frame i (0-based, as sampled) img_{i + 1:05}.jpg: filename_tmpl
# 'img_{:05}.jpg' and start_index 1 (mmaction/datasets/rawframe_dataset.py:93, :97), which SampleFrames adds to its
# 0-based indices (mmaction/datasets/pipelines/loading.py:265-266). We also read img_{:05}.png (exact frames).
FRAME_FILE = re.compile(r"img_(\d{5,})\.(jpg|png)")


def frame_file(folder, index, ext=".jpg") -> Path:
    """The file of frame `index` (0-based) of a frame folder."""
    return Path(folder) / f"img_{index + 1:05d}{ext}"


def frame_numbers(folder) -> list:
    """The sorted frame numbers (1-based) of the img_NNNNN.jpg / .png files in a folder."""
    return sorted(int(m[1]) for m in map(FRAME_FILE.fullmatch, os.listdir(folder)) if m)


def _frame_ext(folder):
    return ".png" if frame_file(folder, 0, ".png").exists() else ".jpg"


def read_frame_folder(folder, total_frames, pick) -> np.ndarray:
    """uint8 (T, H, W, 3) holding frames pick(total_frames) (0-based; repeats allowed) of a frame folder, decoded with
    OpenCV as the official RawFrameDecode does (decoding_backend 'cv2', mmcv.imfrombytes to RGB, loading.py:1342,
    :1374-1377). total_frames comes from the annotation, as in mmaction; two file lookups check it (frame
    total_frames - 1 exists, frame total_frames does not), so a wrong count fails every sample, not some."""
    ext = _frame_ext(folder)
    last, after = frame_file(folder, total_frames - 1, ext), frame_file(folder, total_frames, ext)
    if not last.exists():
        raise MediaError(f"{folder}: missing frames or a wrong total_frames ({total_frames}): no {last.name}")
    if after.exists():
        raise MediaError(f"{folder}: wrong total_frames ({total_frames}): {after.name} exists")
    indices, found = _picked(pick, total_frames, folder), {}
    for i in set(indices.tolist()):
        bgr = cv2.imread(str(frame_file(folder, i, ext)), cv2.IMREAD_COLOR)  # None if absent or undecodable
        if bgr is None:
            raise MediaError(f"{folder}: missing frames: {frame_file(folder, i, ext).name} is absent or undecodable")
        found[i] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # (H, W, 3)
    return np.stack([found[i] for i in indices.tolist()])  # (T, H, W, 3)


def frame_folder_problem(folder, total_frames) -> tuple | None:
    """None if a frame folder holds exactly img_00001 .. img_{total_frames:05} (.jpg or .png); ("wrong total_frames",
    text) if it holds another complete sequence from img_00001, else ("missing frames", text naming the first gap)."""
    present, ext = frame_numbers(folder), _frame_ext(folder)
    if present == list(range(1, total_frames + 1)):
        return None
    if present and present == list(range(1, len(present) + 1)):  # complete, but of another length
        return "wrong total_frames", f"{folder}: the list says {total_frames}, the folder holds {len(present)} frames"
    last = max(present + [total_frames])
    missing = sorted(set(range(1, last + 1)) - set(present))
    return "missing frames", (f"{folder}: first missing {frame_file(folder, missing[0] - 1, ext).name} "
                              f"({len(missing)} of {last} missing)")


# --------------------------------------------------------------------------- annotation readers
@dataclass
class VideoRecord:
    path: str
    label: int
    start_frame: int = 0
    end_frame: int | None = None  # exclusive; None = the end of the file
    total_frames: int | None = None  # set: `path` is a frame folder of this many frames (a rawframes list)


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
    """`relative/path label` per line (mmaction VideoDataset / the ImageNet list); images or videos by extension.
    Class names: `<list stem>_classes.txt` beside the list (one a line) if present, else "0", "1", ..."""
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
    return _nonempty(records, list_path), _list_classes(list_path, records)


def read_rawframes(list_path, root):
    """mmaction's rawframes list (rawframe_dataset.py:117-142): `frame_dir total_frames label` per line, frame_dir a
    folder under root holding img_00001.jpg .. (or .png); class names as read_list's."""
    root, records = _need_root(root), []
    with open(list_path) as fh:
        for line_no, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) < 1 or not parts[2].isdigit():
                raise ValueError(f"{list_path}:{line_no}: expected 'frame_dir total_frames label' (total >= 1), "
                                 f"got {line.strip()!r}")
            records.append(VideoRecord(str(root / parts[0]), int(parts[2]), total_frames=int(parts[1])))
    return _nonempty(records, list_path), _list_classes(list_path, records)


def _list_classes(list_path, records):
    names = Path(list_path).with_name(Path(list_path).stem + "_classes.txt")
    classes = names.read_text().splitlines() if names.exists() else \
        [str(i) for i in range(max((r.label for r in records), default=-1) + 1)]
    if any(r.label >= len(classes) for r in records):
        raise ValueError(f"{list_path}: labels up to {max(r.label for r in records)}, but {names} names "
                         f"{len(classes)} classes")
    return classes


def is_rawframes_list(list_path, root) -> bool:
    """A list is a rawframes list if its first line has three fields, the middle one an integer, and the first names
    a folder under root. (A `path label` line whose path has a space, `my clip 12`, splits into three fields too,
    but its first field is no folder under root.)"""
    with open(list_path) as fh:
        parts = next((line.split() for line in fh if line.strip()), [])
    return len(parts) == 3 and parts[1].isdigit() and root is not None and (Path(root) / parts[0]).is_dir()


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
    """Pick the reader from the annotation itself: a folder (ImageNet layout), .csv (Kinetics), .json (SSv2 if its
    entries have a 'template', else Diving-48), a rawframes list (is_rawframes_list), else a `path label` list."""
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
    return read_rawframes(annotation, root) if is_rawframes_list(annotation, root) else read_list(annotation, root)


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
def read_segment(record, pick) -> np.ndarray:
    """uint8 (T, H, W, 3): frames pick(segment length) (0-based) of [start_frame, end_frame) of a record's video, or
    of its frame folder if the record has total_frames."""
    def pick_in_segment(num_frames):
        end = min(record.end_frame or math.inf, num_frames)
        if end <= record.start_frame:
            raise MediaError(f"{record.path}: no frames in [{record.start_frame}, {end})")
        return record.start_frame + np.asarray(pick(end - record.start_frame))
    if record.total_frames is not None:
        return read_frame_folder(record.path, record.total_frames, pick_in_segment)
    return read_frames(record.path, pick_in_segment)


class _Base(Dataset):
    """Per-sample rng from (seed, epoch, index) and bounded replacement of unreadable samples."""

    def __init__(self, records, seed, crop, short_side=math.inf):
        if short_side < crop:
            raise ValueError(f"the rescaled short side {short_side} is smaller than the crop {crop}")
        self.records, self.seed, self.crop, self.epoch, self.views, self.replace = records, seed, crop, 0, 1, True
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
        """self._load(index, rng), rng from (seed, epoch, index); an unreadable sample is replaced by a random other
        one, or where replacing is off (test views) self._blank(index)."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        for _ in range(MAX_RETRIES + 1):
            try:
                return self._load(index, rng)
            except (OSError, av.FFmpegError, MediaError) as err:  # only I/O problems; code errors propagate
                path = self.records[index // self.views].path
                action = "replaced by another" if self.replace else "blanked"
                warnings.warn(f"unreadable sample {path}: {err}; {action}")
                with self._bad.get_lock():
                    self._bad.value += 1
                if not self.replace:
                    return self._blank(index)
                index = int(rng.integers(len(self)))
        raise RuntimeError(f"{MAX_RETRIES + 1} unreadable samples in a row (last {path}); run `python data.py check`")


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
        frames = read_segment(self.records[index],
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
        self.views, self.flip, self.replace = self.num_clips * self.num_crops, flip, train
        self.short_side = short_side or (256 if train else 224)
        self.randaugment = v2.RandAugment(*randaugment) if randaugment else None  # (num_ops, magnitude)
        self.erase_prob, self.area = erase_prob, area  # area: RandomResizedCrop's range; official: (0.08, 1.0)

    def _blank(self, index):
        """A test view of an unreadable video: a blank clip keeps every video's views in place."""
        video_index = index // self.views
        blank = torch.zeros(3, self.clip_len, self.crop, self.crop)
        return {"video": blank, "label": self.records[video_index].label, "video_index": video_index}

    def _load(self, index, rng):
        video_index, view = divmod(index, self.views)
        clip_index, position = divmod(view, self.num_crops)
        record = self.records[video_index]
        def pick(num_frames):
            if self.sampling == "uniform":
                return uniform_indices(num_frames, self.clip_len, self.train, rng)
            clips = dense_indices(num_frames, self.clip_len, self.frame_interval, self.num_clips, self.train, rng)
            return clips[clip_index]  # (clip_len,)
        frames = resize_short(read_segment(record, pick), self.short_side)  # (T, H, W, 3)
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
class TrainOrder(Sampler):
    """(epoch, index) pairs: the DistributedSampler order for (seed, epoch) on this rank from batch `start_batch` on
    (exact resume). make_loader re-aims it at each epoch."""

    def __init__(self, dataset, batch_size, seed, world, rank):
        self.shuffle = DistributedSampler(dataset, world, rank, shuffle=True, seed=seed, drop_last=True)
        self.batch_size, self.epoch, self.start_batch = batch_size, 0, 0

    def __len__(self):
        return max(0, len(self.shuffle) - self.start_batch * self.batch_size)

    def __iter__(self):
        self.shuffle.set_epoch(self.epoch)
        return iter([(self.epoch, index) for index in list(self.shuffle)[self.start_batch * self.batch_size:]])


class AtEpoch(Dataset):
    """dataset[index] at an epoch, for (epoch, index) items: a persistent worker's copy of the dataset never sees the
    main process's set_epoch, so the epoch travels with each index and the worker sets it on its copy."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        epoch, index = item
        self.dataset.set_epoch(epoch)
        return self.dataset[index]

    def __getstate__(self):  # workers started by spawn / forkserver get the dataset without the loader kept on it
        dataset = copy.copy(self.dataset)
        vars(dataset).pop("_train_loader", None)
        return {"dataset": dataset}


def make_loader(dataset, batch_size, train, num_workers, seed, distributed, epoch=0, start_batch=0) -> DataLoader:
    """Train: batches of the TrainOrder for (seed, epoch) from batch `start_batch` on, drop_last; the dataset (with
    set_epoch) draws each sample's randomness from (seed, epoch, index), so nothing depends on the worker count. The
    training loader of a dataset is made once and kept on it, its workers persistent: a later call (next epoch,
    resume) returns the same DataLoader re-aimed, so earlier handles to it follow, and a dataset feeds one training
    stream at a time. Eval: a new loader; rank r takes samples r, r + world, ... (no padding, no duplicates, the
    last batch uneven)."""
    world, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
    # a private generator (it only seeds the workers): creating a loader must not advance the global torch RNG (drop
    # path), or a resumed run, which creates its loaders at another point of that stream, would diverge
    settings = dict(num_workers=num_workers, pin_memory=torch.cuda.is_available(), drop_last=train,
                    generator=torch.Generator().manual_seed(seed))
    if not train:
        return DataLoader(dataset, batch_size, sampler=range(rank, len(dataset), world), **settings)
    key = (batch_size, num_workers, seed, world, rank)
    if getattr(dataset, "_train_loader", (None,))[0] != key:
        order = TrainOrder(dataset, batch_size, seed, world, rank)
        dataset._train_loader = key, DataLoader(AtEpoch(dataset), batch_size, sampler=order,
                                                persistent_workers=num_workers > 0, **settings)
    loader = dataset._train_loader[1]
    loader.sampler.epoch, loader.sampler.start_batch = epoch, start_batch
    return loader


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
    """Open every file of a dataset, decode the last frame of each video's segment (and check each frame folder's
    files against its total_frames); print a summary. Returns the number of problems."""
    records, classes = read_annotations(cfg.annotation, cfg.root)
    problems = {kind: [] for kind in ("missing", "unreadable", "too short", "missing frames", "wrong total_frames")}
    for done, record in enumerate(records, 1):
        try:
            if not os.path.exists(record.path):
                problems["missing"].append(record.path)
            elif isinstance(record, ImageRecord):
                read_image(record.path)
            elif record.total_frames and (problem := frame_folder_problem(record.path, record.total_frames)):
                problems[problem[0]].append(problem[1])
            else:
                lengths = []  # the segment's length, as the sampling sees it
                read_segment(record, lambda n: lengths.append(n) or [n - 1])  # decodes its last frame
                if lengths[0] < cfg.min_frames:
                    problems["too short"].append(f"{record.path} ({lengths[0]} frames)")
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


def frame_folder_name(record, root) -> str:
    """The frame folder of a video record under the output root: its path under `root` without the extension,
    whitespace as '_' (rawframes lists are split at whitespace), and its segment if it has one."""
    name = re.sub(r"\s", "_", os.path.splitext(os.path.relpath(record.path, root))[0])
    has_segment = record.start_frame or record.end_frame is not None
    return f"{name}_{record.start_frame}-{record.end_frame}" if has_segment else name


def _write_frames(record, folder, ext, params) -> int:
    """Frames [start_frame, end_frame) of the record's video as folder/img_00001{ext} ..., numbered as read_frames
    numbers them (decoded from the first frame). Returns the number written."""
    with av.open(record.path) as container:
        stream = _video_stream(container, record.path)
        pts = _frame_pts(container, stream, record.path)  # demuxes to the end: seek back to the first frame
        start, end = record.start_frame, min(record.end_frame or math.inf, len(pts))
        if end <= start:
            raise MediaError(f"{record.path}: no frames in [{start}, {end})")
        container.seek(pts[0], stream=stream, backward=True, any_frame=False)
        written = 0
        for i, frame in _decoded(container, stream, record.path, pts, range(start, end)):
            if start <= i < end:
                path = frame_file(folder, i - start, ext)
                bgr = cv2.cvtColor(frame.to_ndarray(format="rgb24"), cv2.COLOR_RGB2BGR)  # (H, W, 3)
                if not cv2.imwrite(str(path), bgr, params):
                    raise OSError(f"cannot write {path}")
                written += 1
            if i >= end - 1:
                break
    if written < end - start:
        raise MediaError(f"{record.path}: {end - start - written} frames of [{start}, {end}) could not be decoded")
    return written


def extract_frames(cfg: ExtractConfig) -> list:
    """Writes the rawframes layout of a video dataset: OUT/<frame_folder_name>/img_00001.jpg .. and the list
    OUT/<annotation stem>_rawframes.txt (`frame_dir total_frames label`) with its class names beside it, so
    read_annotations gives the same classes. Each video is written into `<folder>.part` and renamed when complete;
    folders already there are kept (a rerun resumes). Returns the unreadable videos (they are left out of the list)."""
    if not (cfg.ann and cfg.root and cfg.out):
        raise SystemExit("extract-frames needs --ann, --root and --out")
    if not 0 <= cfg.quality <= 100:
        raise SystemExit(f"--quality must be in [0, 100], got {cfg.quality}")
    records, classes = read_annotations(cfg.ann, cfg.root)
    not_videos = [r.path for r in records if isinstance(r, ImageRecord) or r.total_frames is not None]
    if not_videos:
        raise SystemExit(f"{cfg.ann}: extract-frames reads videos, not images or frame folders ({not_videos[0]})")
    names = {}
    for record in records:  # the same folder for two different videos (or segments) would mix their frames
        key, name = (record.path, record.start_frame, record.end_frame), frame_folder_name(record, cfg.root)
        if names.setdefault(name, key) != key:
            raise SystemExit(f"{cfg.ann}: {key[0]} and {names[name][0]} would share the frame folder {name}")
    out, ext = Path(cfg.out), "." + cfg.format
    # official: tools/data/build_rawframes.py:58-59 writes JPEG with mmcv.imwrite, i.e. cv2 at OpenCV's quality 95
    params = [cv2.IMWRITE_JPEG_QUALITY, cfg.quality] if cfg.format == "jpg" else []
    lines, failed, skipped = [], [], 0
    for done, record in enumerate(records, 1):
        name = frame_folder_name(record, cfg.root)
        folder, part = out / name, out / (name + ".part")
        try:
            numbers = frame_numbers(folder) if folder.is_dir() else []
            if numbers and numbers == list(range(1, len(numbers) + 1)):  # done before (a damaged folder is redone)
                total = len(numbers)
                skipped += 1
            else:
                shutil.rmtree(part, ignore_errors=True)  # left by an interrupted run
                part.mkdir(parents=True)
                total = _write_frames(record, part, ext, params)
                shutil.rmtree(folder, ignore_errors=True)  # a damaged folder, replaced only now
                part.rename(folder)
            lines.append(f"{name} {total} {record.label}\n")
        except (OSError, av.FFmpegError, MediaError) as err:
            shutil.rmtree(part, ignore_errors=True)
            failed.append(f"{record.path} ({err})")
        print(f"\rextract {done}/{len(records)} skipped={skipped} failed={len(failed)}", end="", file=sys.stderr,
              flush=True)
    print(file=sys.stderr)
    list_path = out / f"{Path(cfg.ann).stem}_rawframes.txt"
    for path, text in ((list_path, "".join(lines)), (list_path.with_name(list_path.stem + "_classes.txt"),
                                                     "".join(c + "\n" for c in classes))):
        path.with_suffix(".tmp").write_text(text)
        path.with_suffix(".tmp").replace(path)
    print(f"{len(lines)} videos in {list_path} ({len(lines) - skipped} extracted, {skipped} already there), "
          f"{len(classes)} classes; unreadable: {len(failed)}" + "".join(f"\n  {f}" for f in failed))
    return failed


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["check"]:
        cfg = CheckConfig(**parse_flags(CheckConfig, argv[1:], "validate a dataset", ("annotation", "root")))
        sys.exit(1 if check(cfg) else 0)
    if argv[:1] == ["extract-frames"]:
        cfg = ExtractConfig(**parse_flags(ExtractConfig, argv[1:], "write the frames of a video dataset (rawframes)"))
        sys.exit(1 if extract_frames(cfg) else 0)
    sys.exit("usage: python data.py check ANNOTATION ROOT [--min-frames 16]\n"
             "       python data.py extract-frames --ann LIST --root DIR --out DIR [--format jpg|png] [--quality 95]")


if __name__ == "__main__":
    main()
