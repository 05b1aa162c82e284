"""Dataset formats: the records (VideoRecord, ImageRecord), a reader per annotation format (Kinetics CSV, `path label`
lists, mmaction rawframes lists, Something-Something-v2 and Diving-48 JSON, ImageNet class folders; read_annotations
picks one from the file) and the frames of a record's segment (read_segment). What a dataset is on disk (which files,
which labels, which segment of a video); data.py augments the samples, media.py decodes the frames.

Paper: BEVT §4.1 (K400, SSv2, Diving-48, ImageNet-1K).
"""
import csv
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import media


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
