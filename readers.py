"""Reading a dataset from disk: the annotation formats (which files, which labels, which segment) and the pixels
(videos decoded with PyAV, images and frame folders with OpenCV). data.py augments what these return.

Annotations. Records (VideoRecord, ImageRecord), a reader per format, and the frames of a record's segment
(read_segment). Two entry points:

- read_annotations(annotation, root, classes=None) -> (records, class names), for finetuning and evaluation. The
  reader is picked from the annotation itself: a folder of class folders (ImageNet), .csv (Kinetics), .json (SSv2 or
  Diving-48), UCF101's trainlistNN.txt / testlistNN.txt (classInd.txt beside them), HMDB51's split files named as
  SPLITS/train1 .. SPLITS/test3 (read_hmdb51), an mmaction rawframes list, else a `path label` list. Pass the
  training set's `classes` when reading a validation or test set: its labels then index the same classes, and a
  class the training set lacks is an error naming its line.
- read_unlabelled(annotation, root, kind) -> records, for pretraining: a folder of videos or images at any depth, a
  list of paths (one per line), or anything read_annotations reads (the labels are unused).

Every mistake in an annotation is a ValueError (a missing file an OSError) naming the file and, where there is one,
the line (`file:line`; JSON entries `file: entry N`). Labels are class indices in [0, number of classes); integer
labels that no class-name file names make classes 0 .. max label, with a warning when most of them are empty.

Paper: BEVT §4.1 (K400, SSv2, Diving-48, ImageNet-1K). UCF101 / HMDB51 splits as mmaction reads them
(tools/data/parse_file_list.py in xyzforever/BEVT).

Pixels. Every pixel reader returns uint8 RGB frames; a file that cannot give what was asked (too few frames, an
undecodable image, a wrong frame count) raises MediaError, and PyAV's errors and OSError pass through.

Frame i of a video is its i-th frame in display order, as decord (the official decoder) numbers frames, whatever the
frame rate. A read uses the file's keyframes (from its packets): it seeks to the keyframe before a wanted frame
whenever that skips decoding frames, else decodes on, so an all-intra file (tools/prepare.py writes them) costs one
seek and one decoded frame per wanted frame, and a long-GOP file a sequential decode from the keyframe before the
clip. Frame folders are read as the official RawFrameDecode reads them (OpenCV, files img_00001.jpg ..).
"""
import bisect
import csv
import functools
import io
import itertools
import json
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import torch

# ----------------------------------------------------------------------------------------------------------------------
# pixels: videos, images, frame folders

cv2.setNumThreads(1)  # DataLoader workers are the parallelism; OpenCV would start a thread per core in every worker

VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".avi", ".mov")
IMAGE_EXTS = (".jpg", ".jpeg", ".png")


class MediaError(Exception):
    """A video or image that cannot be decoded as asked (too few frames, corrupt image)."""


# --------------------------------------------------------------------------- decoding (PyAV)
def video_stream(container, path):
    """The first video stream of an open container; MediaError if it has none."""
    if not container.streams.video:
        raise MediaError(f"{path}: no video stream")
    return container.streams.video[0]


@dataclass(frozen=True)
class VideoIndex:
    """Where a video's frames are: pts[i] is the timestamp of frame i (display order), frame_of the inverse map, and
    keyframes the sorted frame numbers a decode can start from (frame 0 always: decoding from the start of the file
    is what defines the frames)."""
    pts: tuple
    frame_of: dict
    keyframes: tuple


def frame_index(container, stream, path) -> VideoIndex:
    """The VideoIndex of a stream, read from its packets (demuxing only, no decoding): frame i is the packet with the
    i-th smallest pts, as decord (the official decoder) numbers frames (dmlc/decord src/video/video_reader.cc
    IndexKeyframes), whatever the frame rate; a keyframe is a frame whose packet the container flags as one.
    Discarded packets (before an edit list's start) are not displayed, so they are no frames."""
    packets = [(packet.pts, packet.is_keyframe) for packet in container.demux(stream)
               if packet.size > 0 and not packet.is_discard]
    pts = sorted(p for p, _ in packets)
    if not pts or None in pts or len(set(pts)) < len(pts):
        raise MediaError(f"{path}: no frames, or packets without distinct timestamps; frames cannot be numbered "
                         "(remux it: ffmpeg -i IN -c copy OUT.mp4)")
    frame_of = {p: i for i, p in enumerate(pts)}
    return VideoIndex(tuple(pts), frame_of, tuple(sorted({0} | {frame_of[p] for p, key in packets if key})))


@functools.cache  # counted once per process
def video_frame_count(path) -> int:
    with av.open(str(path)) as container:
        return len(frame_index(container, video_stream(container, path), path).pts)


def decode_plan(keyframes, wanted) -> list:
    """How to decode the wanted frames: [(keyframe, [wanted frames]), ...], one seek to each keyframe, then decoding
    forward to the last of its frames. Frames go in order; the next one starts a new seek when a keyframe lies after
    the frame decoded last and at or before it (the seek then skips decoding the frames in between), else it is
    decoded by going on. So an all-intra file is read with one seek per wanted frame, a file with one keyframe per
    clip span sequentially from the keyframe before the clip, and never more frames are decoded than that way."""
    runs = []
    for i in sorted(set(wanted)):
        key = keyframes[bisect.bisect_right(keyframes, i) - 1]  # the last keyframe at or before frame i
        if runs and key <= runs[-1][1][-1]:
            runs[-1][1].append(i)
        else:
            runs.append((key, [i]))
    return runs


def decoded_frames(packets, stream, path, index, wanted):
    """(frame number, av.VideoFrame) of the stream's `packets` (container.demux(stream) from its position on), in
    decoding order. A frame that is not wanted is decoded only if it is a reference for others (BEVT wants 16 of 128
    frames): skipping the others leaves the wanted frames' pixels unchanged."""
    wanted_pts = {index.pts[i] for i in wanted}
    for packet in packets:  # the last (flush) packet has no pts
        stream.codec_context.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in wanted_pts else "NONREF"
        for frame in packet.decode():
            if frame.pts not in index.frame_of:
                raise MediaError(f"{path}: a decoded frame has pts {frame.pts}, which no packet has")
            yield index.frame_of[frame.pts], frame


def packets_from(container, stream, index, key):
    """The stream's packets from keyframe `key` on (the decoder emptied). A seek goes to the keyframe at or before a
    timestamp of the container's seek index, which MP4 keeps in decoding time: where frames are reordered (B-frames)
    at a variable frame rate, a seek to the keyframe's pts can land on the keyframe before; a seek forward to the
    same pts then lands on it."""
    container.seek(index.pts[key], stream=stream, backward=True, any_frame=False)  # also empties the decoder
    packets = container.demux(stream)
    first = next(packets, None)
    if first is not None and index.frame_of.get(first.pts, key) < key:
        container.seek(index.pts[key], stream=stream, backward=False, any_frame=False)
        packets = container.demux(stream)
        first = next(packets, None)
    return itertools.chain([first] if first is not None else [], packets)


def _decode_run(container, stream, path, index, start, wanted, found) -> int | None:
    """Decode from the keyframe `start` forward to the last of the `wanted` frames (sorted) and put them as (H, W, 3)
    uint8 into `found`. Returns the number of frames decoded, None if the decoding began past the first wanted frame
    (nothing is put then)."""
    decoded, run = 0, {}
    for i, frame in decoded_frames(packets_from(container, stream, index, start), stream, path, index, wanted):
        if not decoded and i > wanted[0]:
            return None
        decoded += 1
        if i in wanted and i not in run:
            run[i] = frame.to_ndarray(format="rgb24")
        if i >= wanted[-1]:
            break
    found.update(run)
    return decoded


def decode_wanted(container, stream, path, index, wanted) -> tuple:
    """({frame: (H, W, 3) uint8}, number of frames decoded) for the set `wanted`, read along decode_plan. Every way
    gives the frames of a sequential decode of the whole file; a run whose seek lands past its first frame (a
    container's seek index that disagrees with its packets) is decoded from the first frame instead."""
    found, decoded = {}, 0
    for key, frames in decode_plan(index.keyframes, wanted):
        count = _decode_run(container, stream, path, index, key, frames, found)
        if count is None:
            count = _decode_run(container, stream, path, index, 0, frames, found)
        decoded += count or 0
    return found, decoded


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
        stream = video_stream(container, path)
        index = frame_index(container, stream, path)
        indices = _picked(pick, len(index.pts), path)
        wanted = set(indices.tolist())
        stream.thread_count = 1  # official DecordInit(num_threads=1), loading.py:1154: workers are the parallelism
        found, _ = decode_wanted(container, stream, path, index, wanted)
    if len(found) < len(wanted):
        raise MediaError(f"{path}: frames {sorted(wanted - set(found))} are past the decodable end of the video")
    return np.stack([found[i] for i in indices.tolist()])  # (T, H, W, 3)


def read_video(path, indices) -> torch.Tensor:
    """uint8 (T, H, W, 3) holding frames `indices` of `path`."""
    return torch.from_numpy(read_frames(path, lambda num_frames: indices))


def read_image(path) -> torch.Tensor:
    """uint8 (3, H, W) RGB, a view of the decoded (H, W, 3) array. Decoded by OpenCV as the official ImageDecode
    does (mmcv.imfrombytes with channel_order 'rgb': IMREAD_COLOR, then BGR to RGB), so any PNG or JPEG comes out
    8-bit with 3 channels: 16-bit samples keep their high byte, grey is repeated, alpha is dropped, palettes are
    looked up, the EXIF orientation is applied. MediaError if OpenCV cannot decode the file (corrupt, or a format it
    does not read)."""
    # official: mmaction/datasets/pipelines/loading.py:1454 (ImageDecode): mmcv.imfrombytes(channel_order='rgb')
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such image file")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)  # (H, W, 3) uint8; None if it cannot be decoded
    if bgr is None:
        raise MediaError(f"{path}: not an image OpenCV can decode (corrupt, or an unsupported format)")
    return torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)  # (3, H, W)


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


# ----------------------------------------------------------------------------------------------------------------------
# annotations: the records and a reader per format

NO_LABEL = -1  # the label of a record read without labels (read_unlabelled); pretraining never reads it


# --------------------------------------------------------------------------- records
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


# --------------------------------------------------------------------------- text, JSON, labels, classes
def need_root(root) -> Path:
    """`root` as a Path; FileNotFoundError naming it if it is not a folder."""
    if not root:
        raise FileNotFoundError("no dataset root given (the folder the annotation's paths are relative to)")
    if not Path(root).is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist or is not a folder")
    return Path(root)


def read_text(path) -> str:
    """The file as text: UTF-8, a byte-order mark allowed; ValueError naming the line of a byte that is not UTF-8."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x}); save it as UTF-8") from None


def _lines(path):
    """(line number, line) of each non-blank line; \\n or \\r\\n ends a line."""
    for line_no, line in enumerate(read_text(path).split("\n"), 1):
        if line.strip():
            yield line_no, line.rstrip("\r")


def _load_json(path):
    text = read_text(path)
    if not text.strip():
        raise ValueError(f"{path}: the file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}:{err.colno}: invalid JSON: {err.msg}") from None


def _load_json_list(path):
    items = _load_json(path)
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a JSON list of entries")
    return _nonempty(items, path)


def _nonempty(records, source):
    if not records:
        raise ValueError(f"{source}: the dataset is empty")
    return records


def _integer(value, where, what) -> int:
    """An integer field of an annotation (`where`: 'file:line' or 'file: entry N'), written as digits."""
    if isinstance(value, bool) or not re.fullmatch(r"-?\d+", str(value).strip()):
        raise ValueError(f"{where}: {what} {value!r} is not an integer")
    return int(value)


def _label(value, where, bound) -> int:
    """A class index: an integer >= 0, and below the number of classes when that is known. `bound`:
    (number of classes, what fixes it) or None."""
    label = _integer(value, where, "label")
    if label < 0:
        raise ValueError(f"{where}: label {label} is negative (labels are class indices from 0)")
    if bound and label >= bound[0]:
        raise ValueError(f"{where}: label {label} is outside the {bound[0]} classes of {bound[1]} (0..{bound[0] - 1})")
    return label


def _vocabulary(path):
    """(path, class names) of a class-name file, one name a line, or None if there is no such file."""
    if not Path(path).is_file():
        return None
    return path, _nonempty([line.strip() for _, line in _lines(path)], path)


def _bound(vocabulary, classes):
    """(number of classes, what fixes it) for _label: the training classes, else the annotation's vocabulary."""
    if classes is not None:
        return len(classes), "the training set"
    return (len(vocabulary[1]), vocabulary[0]) if vocabulary else None


def _classes(records, source, vocabulary, classes) -> list:
    """The class names of integer-labelled records: the training set's `classes` if given (a vocabulary of the
    annotation must then be the same), else the annotation's vocabulary, else "0" .. "max label" (_span_classes)."""
    if classes is not None and vocabulary and vocabulary[1] != list(classes):
        theirs, ours = vocabulary[1], list(classes)
        i = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
        differ = f"class {i} is {theirs[i]!r} there, {ours[i]!r} in training" if i < min(len(theirs), len(ours)) else \
            f"{len(theirs)} classes there, {len(ours)} in training"
        raise ValueError(f"{source}: the classes of {vocabulary[0]} are not the training set's ({differ})")
    if classes is not None:
        return list(classes)
    return vocabulary[1] if vocabulary else _span_classes(records, source)


def _span_classes(records, source) -> list:
    """Classes "0" .. "max label" for integer labels that no file names. The classifier gets max label + 1 outputs,
    so a typo (labels {0, 1, 99999}: a 100,000-class head) would pass unseen: when more than half of these classes
    have no sample, a warning gives the counts and the largest labels."""
    labels = sorted({r.label for r in records})
    span = labels[-1] + 1
    if 2 * (span - len(labels)) > span:
        warnings.warn(f"{source}: {len(labels)} distinct labels span {span} classes ({span - len(labels)} empty), "
                      f"so the classifier gets {span} outputs; largest labels {labels[-3:]}: a typo? (class names in "
                      "a class-name file fix the number of classes)")
    return [str(i) for i in range(span)]


def _files_under(folder, exts) -> list:
    """Files ending in `exts` (any case) at any depth under `folder`, links followed, hidden names (such as macOS's
    ._x.jpg) skipped, sorted by their path parts: class folder, then file, as torchvision's ImageFolder."""
    found = []
    for d, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        found += [Path(d, name) for name in names if name.lower().endswith(exts) and not name.startswith(".")]
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


# --------------------------------------------------------------------------- readers with labels
def read_k400_csv(csv_path, root, classes=None):
    """Official Kinetics CSV (label,youtube_id,time_start,time_end,split); files {id}_{start:06d}_{end:06d}.mp4
    anywhere under root (split folders, class folders or flat). Classes: `classes` (the training set's) if given,
    else the labels sorted (the official label map is alphabetical). Rows whose file is absent are skipped and
    counted in a warning."""
    root, rows, unseen = need_root(root), [], []
    index = None if classes is None else {name: i for i, name in enumerate(classes)}
    reader = csv.reader(io.StringIO(read_text(csv_path), newline=""))
    try:
        for row in reader:
            if not any(field.strip() for field in row) or (reader.line_num == 1 and row[:2] == ["label", "youtube_id"]):
                continue
            try:
                label, youtube_id, start, end = row[0], row[1], int(float(row[2])), int(float(row[3]))
            except (IndexError, ValueError, OverflowError):
                label = ""  # reported below, as an empty label or id is
            if not (label and youtube_id):
                raise ValueError(f"{csv_path}:{reader.line_num}: expected label,youtube_id,time_start,time_end,split, "
                                 f"got {','.join(row)!r}")
            if index is not None and label not in index:
                unseen.append((reader.line_num, label))
            rows.append((label, f"{youtube_id}_{start:06d}_{end:06d}"))
    except csv.Error as err:
        raise ValueError(f"{csv_path}:{reader.line_num}: {err}") from None
    if unseen:
        line_no, label = unseen[0]
        raise ValueError(f"{csv_path}:{line_no}: class {label!r} is not among the {len(classes)} training classes "
                         f"({len(unseen)} rows of {len({name for _, name in unseen})} such classes)")
    classes = list(classes) if classes is not None else sorted({label for label, _ in _nonempty(rows, csv_path)})
    index = {name: i for i, name in enumerate(classes)}
    on_disk = {name: os.path.join(folder, name) for folder, _, names in os.walk(root) for name in names}
    found = [(label, next((on_disk[stem + ext] for ext in VIDEO_EXTS if stem + ext in on_disk), None))
             for label, stem in rows]
    records = [VideoRecord(path, index[label]) for label, path in found if path is not None]
    if len(records) < len(rows):
        warnings.warn(f"{csv_path}: {len(rows) - len(records)} of {len(rows)} videos not found under {root}, skipped")
    return _nonempty(records, csv_path), classes


def read_list(list_path, root, classes=None):
    """`relative/path label` per line (mmaction VideoDataset / the ImageNet list); images or videos by extension.
    Class names: `<list stem>_classes.txt` beside the list (one a line) if present, else "0", "1", ..."""
    root, records = need_root(root), []
    vocabulary = _vocabulary(Path(list_path).with_name(Path(list_path).stem + "_classes.txt"))
    bound = _bound(vocabulary, classes)
    for line_no, line in _lines(list_path):
        parts = line.rsplit(None, 1)
        if len(parts) != 2 or not re.fullmatch(r"-?\d+", parts[1]):
            paths_only = line.strip().lower().endswith(VIDEO_EXTS + IMAGE_EXTS)
            raise ValueError(f"{list_path}:{line_no}: expected 'path label', got {line.strip()!r}" +
                             (" (a list of paths without labels can only be pretrained on)" if paths_only else ""))
        path = str(root / parts[0].strip())
        kind = ImageRecord if path.lower().endswith(IMAGE_EXTS) else VideoRecord
        records.append(kind(path, _label(parts[1], f"{list_path}:{line_no}", bound)))
    records = _nonempty(records, list_path)
    return records, _classes(records, list_path, vocabulary, classes)


def read_rawframes(list_path, root, classes=None):
    """mmaction's rawframes list (rawframe_dataset.py:117-142): `frame_dir total_frames label` per line, frame_dir a
    folder under root holding img_00001.jpg .. (or .png); class names as read_list's."""
    root, records = need_root(root), []
    vocabulary = _vocabulary(Path(list_path).with_name(Path(list_path).stem + "_classes.txt"))
    bound = _bound(vocabulary, classes)
    for line_no, line in _lines(list_path):
        parts = line.split()
        if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) < 1 or not re.fullmatch(r"-?\d+", parts[2]):
            raise ValueError(f"{list_path}:{line_no}: expected 'frame_dir total_frames label' (total >= 1), "
                             f"got {line.strip()!r}")
        label = _label(parts[2], f"{list_path}:{line_no}", bound)
        records.append(VideoRecord(str(root / parts[0]), label, total_frames=int(parts[1])))
    records = _nonempty(records, list_path)
    return records, _classes(records, list_path, vocabulary, classes)


def is_rawframes_list(list_path, root) -> bool:
    """A list is a rawframes list if its first line has three fields, the middle one an integer, and the first names
    a folder under root. (A `path label` line whose path has a space, `my clip 12`, splits into three fields too,
    but its first field is no folder under root.)"""
    parts = next((line.split() for _, line in _lines(list_path)), [])
    return len(parts) == 3 and parts[1].isdigit() and bool(root) and (Path(root) / parts[0]).is_dir()


def read_ssv2(json_path, labels_path, root, classes=None):
    """Something-Something-v2 train/validation JSON [{id, label, template, placeholders}] + labels.json
    {name: index}; files root/{id}.webm."""
    root, label_map = need_root(root), _load_json(labels_path)
    try:
        label_map = {name: int(index) for name, index in label_map.items()}
    except (AttributeError, TypeError, ValueError):
        raise ValueError(f"{labels_path}: expected {{\"class name\": index, ...}}") from None
    if sorted(label_map.values()) != list(range(len(label_map))):
        raise ValueError(f"{labels_path}: the indices must be 0..{len(label_map) - 1}, each once")
    records = []
    for i, item in enumerate(_load_json_list(json_path), 1):
        if not isinstance(item, dict) or "id" not in item:
            raise ValueError(f"{json_path}: entry {i}: needs 'id' and 'template'")
        if "template" not in item:
            raise ValueError(f"{json_path}: entry {i}: no 'template', so no label (the SSv2 test split is unlabelled: "
                             "evaluate on the validation JSON)")
        name = str(item["template"]).replace("[", "").replace("]", "")  # official: class = template without brackets
        if name not in label_map:
            raise ValueError(f"{json_path}: entry {i}: template {name!r} is not a class of {labels_path}")
        records.append(VideoRecord(str(root / f"{item['id']}.webm"), label_map[name]))
    vocabulary = (labels_path, sorted(label_map, key=label_map.get))
    return records, _classes(records, json_path, vocabulary, classes)


def ssv2_labels_file(json_path) -> Path:
    """The `*labels.json` beside an SSv2 annotation (something-something-v2-labels.json)."""
    found = sorted(Path(json_path).parent.glob("*labels.json"))
    if not found:
        raise FileNotFoundError(f"{json_path}: an SSv2 annotation needs its labels file "
                                f"(something-something-v2-labels.json) in the same folder; there is none")
    if len(found) > 1:
        raise ValueError(f"{json_path}: {len(found)} *labels.json files beside it ({', '.join(p.name for p in found)})"
                         "; keep the one of this annotation")
    return found[0]


def read_diving48(json_path, root, classes=None):
    """Diving-48 V2 JSON [{vid_name, label, start_frame, end_frame}] with files root/{vid_name}.mp4. Class names:
    Diving48_vocab.json beside it ([[takeoff, somersault, twist, flight], ...]) if present, else the labels."""
    root, records, vocabulary = need_root(root), [], None
    vocab_path = Path(json_path).with_name("Diving48_vocab.json")
    if vocab_path.is_file():
        vocab = _load_json(vocab_path)
        if not isinstance(vocab, list) or not all(isinstance(v, list) for v in vocab):
            raise ValueError(f"{vocab_path}: expected a JSON list of [takeoff, somersault, twist, flight] lists")
        vocabulary = (vocab_path, ["_".join(map(str, v)) for v in vocab])
    bound = _bound(vocabulary, classes)
    for i, item in enumerate(_load_json_list(json_path), 1):
        where = f"{json_path}: entry {i}"
        try:
            name, label, start, end = item["vid_name"], item["label"], item["start_frame"], item["end_frame"]
        except (KeyError, TypeError):
            raise ValueError(f"{where}: needs vid_name, label, start_frame, end_frame") from None
        records.append(VideoRecord(str(root / f"{name}.mp4"), _label(label, where, bound),
                                   _integer(start, where, "start_frame"), _integer(end, where, "end_frame")))
    return records, _classes(records, json_path, vocabulary, classes)


def read_image_folder(root, classes=None):
    """ImageNet layout root/<class>/<images, at any depth>; classes sorted by folder name (torchvision ImageFolder
    convention), or the training set's `classes`, which every folder must be one of. A class folder without images
    is named in a warning (its class keeps its index, with no samples)."""
    root = need_root(root)
    folders = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        loose = " (its images have no labels: it can only be pretrained on)" if _files_under(root, IMAGE_EXTS) \
            else ""
        raise ValueError(f"{root}: no class folders (ROOT/<class>/<image>){loose}")
    index = {name: i for i, name in enumerate(folders if classes is None else classes)}
    unknown = [name for name in folders if name not in index]
    if unknown:
        raise ValueError(f"{root / unknown[0]}: class folder {unknown[0]!r} is not among the {len(index)} training "
                         f"classes ({len(unknown)} such folders)")
    records, empty = [], []
    for name in folders:
        files = _files_under(root / name, IMAGE_EXTS)
        empty += [] if files else [name]
        records += [ImageRecord(str(p), index[name]) for p in files]
    if empty:
        warnings.warn(f"{root}: {len(empty)} of {len(folders)} class folders hold no images "
                      f"({', '.join(IMAGE_EXTS)}): {', '.join(empty)}")
    return _nonempty(records, root), list(index)


def read_ucf101(list_path, root, classes=None):
    """UCF101's official splits: classInd.txt beside the list (`1 ApplyEyeMakeup`, indices from 1), trainlistNN.txt
    (`ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1`) or testlistNN.txt (paths only); videos at ROOT/<path>. The
    class is the path's folder looked up in classInd.txt, as mmaction's parse_ucf101_splits (level 2); a trainlist
    index must agree with it. (mmaction's generated HMDB51 lists have the same form.)"""
    root, class_file, names = need_root(root), Path(list_path).with_name("classInd.txt"), []
    for line_no, line in _lines(class_file):
        parts = line.split()
        if len(parts) != 2 or parts[0] != str(len(names) + 1):
            raise ValueError(f"{class_file}:{line_no}: expected '{len(names) + 1} ClassName' (indices from 1, in "
                             f"order), got {line.strip()!r}")
        names.append(parts[1])
    index, records = {name: i for i, name in enumerate(_nonempty(names, class_file))}, []
    for line_no, line in _lines(list_path):
        parts, where = line.split(), f"{list_path}:{line_no}"
        if len(parts) not in (1, 2) or "/" not in parts[0]:
            raise ValueError(f"{where}: expected 'Class/video.avi' or 'Class/video.avi index', got {line.strip()!r}")
        folder = parts[0].rsplit("/", 1)[0]
        if folder not in index:
            raise ValueError(f"{where}: class folder {folder!r} is not in {class_file}")
        if len(parts) == 2 and parts[1] != str(index[folder] + 1):
            raise ValueError(f"{where}: index {parts[1]} disagrees with {class_file}, where {folder} is "
                             f"{index[folder] + 1}")
        records.append(VideoRecord(str(root / parts[0]), index[folder]))
    records = _nonempty(records, list_path)
    return records, _classes(records, list_path, (class_file, names), classes)


HMDB51_SUBSET = re.compile(r"(train|test)(\d+)")  # the name read_annotations reads as an HMDB51 split: SPLITS/train1


def read_hmdb51(split_dir, subset, split, root, classes=None):
    """HMDB51's official splits (the folder testTrainMulti_7030_splits): one `<class>_test_split<N>.txt` per class,
    lines `<video>.avi <0|1|2>` (1 = train, 2 = test, 0 = unused); videos at ROOT/<class>/<video>.avi; classes the
    sorted class names, as mmaction's parse_hmdb51_split. `subset` is "train" or "test", `split` N. read_annotations
    reads the annotation SPLITS/train1 .. SPLITS/test3 (a name, not a file) as this."""
    root, suffix = need_root(root), f"_test_split{split}.txt"
    files = {p.name[:-len(suffix)]: p for p in Path(split_dir).iterdir()
             if p.name.endswith(suffix) and not p.name.startswith(".")}  # not macOS's ._brush_hair_test_split1.txt
    if not files:
        raise FileNotFoundError(f"{split_dir}: no HMDB51 split files *{suffix}")
    names, wanted, records = sorted(files), {"train": "1", "test": "2"}[subset], []
    for label, name in enumerate(names):
        for line_no, line in _lines(files[name]):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise ValueError(f"{files[name]}:{line_no}: expected '<video>.avi 0|1|2' (1 train, 2 test, 0 unused), "
                                 f"got {line.strip()!r}")
            if parts[1] == wanted:
                records.append(VideoRecord(str(root / name / parts[0]), label))
    records = _nonempty(records, Path(split_dir) / f"{subset}{split}")
    return records, _classes(records, Path(split_dir) / f"{subset}{split}", (split_dir, names), classes)


def read_annotations(annotation, root, classes=None):
    """(records, class names) of a labelled dataset, the reader picked from the annotation: a folder (class folders,
    ImageNet), .csv (Kinetics), .json (Diving-48 if its entries have 'vid_name', else SSv2 with the *labels.json
    beside it), trainlistNN.txt / testlistNN.txt with classInd.txt beside it (UCF101), SPLITS/trainN or
    SPLITS/testN where SPLITS holds *_test_splitN.txt (HMDB51), a rawframes list (is_rawframes_list), else a
    `path label` list. `classes`: the training set's class names, for a validation or test set."""
    annotation = Path(annotation)
    if annotation.is_dir():
        return read_image_folder(annotation, classes)
    hmdb = HMDB51_SUBSET.fullmatch(annotation.name)
    if not annotation.exists() and hmdb and annotation.parent.is_dir() and \
            any(annotation.parent.glob(f"*_test_split{hmdb[2]}.txt")):
        return read_hmdb51(annotation.parent, hmdb[1], int(hmdb[2]), root, classes)
    if not annotation.is_file():
        raise FileNotFoundError(f"annotation file {annotation} does not exist")
    if annotation.suffix == ".csv":
        return read_k400_csv(annotation, root, classes)
    if annotation.suffix == ".json":
        first = _load_json_list(annotation)[0]
        if isinstance(first, dict) and "vid_name" in first:
            return read_diving48(annotation, root, classes)
        if isinstance(first, dict) and "id" in first:
            return read_ssv2(annotation, ssv2_labels_file(annotation), root, classes)
        raise ValueError(f"{annotation}: entry 1: expected an SSv2 entry {{id, template, ...}} or a Diving-48 entry "
                         "{vid_name, label, start_frame, end_frame}")
    if re.fullmatch(r"(train|test)list\d+\.txt", annotation.name) and annotation.with_name("classInd.txt").is_file():
        return read_ucf101(annotation, root, classes)
    if is_rawframes_list(annotation, root):
        return read_rawframes(annotation, root, classes)
    return read_list(annotation, root, classes)


# --------------------------------------------------------------------------- pretraining inputs, labels not needed
def read_path_list(list_path, root, kind) -> list:
    """One path per line, relative to root, each ending in a video (kind "video") or image ("image") extension."""
    exts, record = (VIDEO_EXTS, VideoRecord) if kind == "video" else (IMAGE_EXTS, ImageRecord)
    root, records = need_root(root), []
    for line_no, line in _lines(list_path):
        if not line.strip().lower().endswith(exts):
            raise ValueError(f"{list_path}:{line_no}: expected the path of a {kind} ({', '.join(exts)}), "
                             f"got {line.strip()!r}")
        records.append(record(str(root / line.strip()), NO_LABEL))
    return _nonempty(records, list_path)


def read_unlabelled(annotation, root, kind) -> list:
    """The records of a pretraining input of `kind` "video" or "image"; labels are not needed. `annotation` is
    - a folder: every video (.mp4 .webm .mkv .avi .mov) or image (.jpg .jpeg .png) file under it, at any depth,
      sorted by path (ImageNet's class folders give read_image_folder's order); `root` is not used;
    - a list whose first line ends in such an extension: one path per line, relative to `root` (read_path_list);
    - anything read_annotations reads (K400 CSV, SSv2 / Diving-48 JSON, lists, ...): its records, labels unused.
    Records read without labels have label NO_LABEL. Every record must be of `kind`."""
    if kind not in ("video", "image"):
        raise ValueError(f"kind must be 'video' or 'image', got {kind!r}")
    exts, record = (VIDEO_EXTS, VideoRecord) if kind == "video" else (IMAGE_EXTS, ImageRecord)
    annotation = Path(annotation)
    if annotation.is_dir():
        files = _files_under(annotation, exts)
        if not files:
            raise ValueError(f"{annotation}: no {kind} files ({', '.join(exts)}) in it, at any depth")
        return [record(str(p), NO_LABEL) for p in files]
    if annotation.is_file() and annotation.suffix not in (".csv", ".json") and \
            next((line for _, line in _lines(annotation)), "").strip().lower().endswith(exts):
        return read_path_list(annotation, root, kind)
    records, _ = read_annotations(annotation, root)
    wrong = next((r for r in records if not isinstance(r, record)), None)
    if wrong is not None:
        raise ValueError(f"{annotation}: the {kind} input takes {', '.join(exts)} files only, not {wrong.path}")
    return records


# --------------------------------------------------------------------------- the frames of a record
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
