"""Dataset formats and the dataset tools. The records (VideoRecord, ImageRecord), a reader per annotation format
(Kinetics CSV, `path label` lists, mmaction rawframes lists, Something-Something-v2 and Diving-48 JSON, ImageNet class
folders; read_annotations picks one from the file), the frames of a record's segment (read_segment), and the work
behind the commands `python data.py check` (validate a dataset) and `python data.py extract-frames` (write a video
dataset as frame folders, mmaction's rawframes, which the same datasets read ~2-3x faster).

Its own file because what a dataset is on disk (which files, which labels, which segment of a video) does not depend
on how its samples are augmented: data.py's pipelines take the records from here, and the tools check and convert
a dataset without building a pipeline. Frames are read with media.py.

Paper: BEVT §4.1 (K400, SSv2, Diving-48, ImageNet-1K).
"""
import csv
import json
import math
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

import media


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


def need_root(root) -> Path:
    """`root` as a Path; FileNotFoundError naming it if it is not a folder."""
    if not Path(root).is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist or is not a folder")
    return Path(root)


def read_k400_csv(csv_path, root, classes=None):
    """Official Kinetics CSV (label,youtube_id,time_start,time_end,split); files {id}_{start:06d}_{end:06d}.mp4
    anywhere under root (split folders, class folders or flat). Rows whose file is absent are skipped and counted."""
    on_disk = {name: os.path.join(folder, name) for folder, _, names in os.walk(need_root(root)) for name in names}
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
    found = [(label, next((on_disk[stem + ext] for ext in media.VIDEO_EXTS if stem + ext in on_disk), None))
             for label, stem in rows]
    records = [VideoRecord(path, index[label]) for label, path in found if path is not None]
    if len(records) < len(rows):
        warnings.warn(f"{csv_path}: {len(rows) - len(records)} of {len(rows)} videos not found under {root}, skipped")
    return _nonempty(records, csv_path), classes


def read_list(list_path, root):
    """`relative/path label` per line (mmaction VideoDataset / the ImageNet list); images or videos by extension.
    Class names: `<list stem>_classes.txt` beside the list (one a line) if present, else "0", "1", ..."""
    root, records = need_root(root), []
    with open(list_path) as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            parts = line.rsplit(None, 1)
            if len(parts) != 2 or not parts[1].isdigit():
                raise ValueError(f"{list_path}:{line_no}: expected 'path label', got {line.strip()!r}")
            path = str(root / parts[0].strip())
            kind = ImageRecord if path.lower().endswith(media.IMAGE_EXTS) else VideoRecord
            records.append(kind(path, int(parts[1])))
    return _nonempty(records, list_path), _list_classes(list_path, records)


def read_rawframes(list_path, root):
    """mmaction's rawframes list (rawframe_dataset.py:117-142): `frame_dir total_frames label` per line, frame_dir a
    folder under root holding img_00001.jpg .. (or .png); class names as read_list's."""
    root, records = need_root(root), []
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
    root = need_root(root)
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
    root, records = need_root(root), []
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
    classes = sorted(d.name for d in need_root(root).iterdir() if d.is_dir())
    records = [ImageRecord(str(p), i) for i, c in enumerate(classes) for p in sorted((Path(root) / c).iterdir())
               if p.suffix.lower() in media.IMAGE_EXTS]
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


# --------------------------------------------------------------------------- the frames of a record
def read_segment(record, pick) -> np.ndarray:
    """uint8 (T, H, W, 3): frames pick(segment length) (0-based) of [start_frame, end_frame) of a record's video, or
    of its frame folder if the record has total_frames."""
    def pick_in_segment(num_frames):
        end = min(record.end_frame or math.inf, num_frames)
        if end <= record.start_frame:
            raise media.MediaError(f"{record.path}: no frames in [{record.start_frame}, {end})")
        return record.start_frame + np.asarray(pick(end - record.start_frame))
    if record.total_frames is not None:
        return media.read_frame_folder(record.path, record.total_frames, pick_in_segment)
    return media.read_frames(record.path, pick_in_segment)


# --------------------------------------------------------------------------- dataset tools: check, extract-frames
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
                media.read_image(record.path)
            elif record.total_frames and (
                    problem := media.frame_folder_problem(record.path, record.total_frames)):
                problems[problem[0]].append(problem[1])
            else:
                lengths = []  # the segment's length, as the sampling sees it
                read_segment(record, lambda n: lengths.append(n) or [n - 1])  # decodes its last frame
                if lengths[0] < cfg.min_frames:
                    problems["too short"].append(f"{record.path} ({lengths[0]} frames)")
        except (OSError, av.FFmpegError, media.MediaError) as err:
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
    """Frames [start_frame, end_frame) of the record's video as folder/img_00001{ext} ..., numbered as
    media.read_frames numbers them (decoded from the first frame). Returns the number written."""
    with av.open(record.path) as container:
        stream = media.video_stream(container, record.path)
        pts = media.frame_pts(container, stream, record.path)  # demuxes to the end: seek back to the first frame
        start, end = record.start_frame, min(record.end_frame or math.inf, len(pts))
        if end <= start:
            raise media.MediaError(f"{record.path}: no frames in [{start}, {end})")
        container.seek(pts[0], stream=stream, backward=True, any_frame=False)
        written = 0
        for i, frame in media.decoded_frames(container, stream, record.path, pts, range(start, end)):
            if start <= i < end:
                path = media.frame_file(folder, i - start, ext)
                bgr = cv2.cvtColor(frame.to_ndarray(format="rgb24"), cv2.COLOR_RGB2BGR)  # (H, W, 3)
                if not cv2.imwrite(str(path), bgr, params):
                    raise OSError(f"cannot write {path}")
                written += 1
            if i >= end - 1:
                break
    if written < end - start:
        raise media.MediaError(f"{record.path}: {end - start - written} frames of [{start}, {end}) "
                               "could not be decoded")
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
            numbers = media.frame_numbers(folder) if folder.is_dir() else []
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
        except (OSError, av.FFmpegError, media.MediaError) as err:
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
