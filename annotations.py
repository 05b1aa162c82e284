"""Dataset formats: the records (VideoRecord, ImageRecord), a reader per annotation format and the frames of a
record's segment (read_segment). What a dataset is on disk (which files, which labels, which segment of a video);
data.py augments the samples, media.py decodes the frames. Two entry points:

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
"""
import csv
import io
import json
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import media

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
    found = [(label, next((on_disk[stem + ext] for ext in media.VIDEO_EXTS if stem + ext in on_disk), None))
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
            paths_only = line.strip().lower().endswith(media.VIDEO_EXTS + media.IMAGE_EXTS)
            raise ValueError(f"{list_path}:{line_no}: expected 'path label', got {line.strip()!r}" +
                             (" (a list of paths without labels can only be pretrained on)" if paths_only else ""))
        path = str(root / parts[0].strip())
        kind = ImageRecord if path.lower().endswith(media.IMAGE_EXTS) else VideoRecord
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
        loose = " (its images have no labels: it can only be pretrained on)" if _files_under(root, media.IMAGE_EXTS) \
            else ""
        raise ValueError(f"{root}: no class folders (ROOT/<class>/<image>){loose}")
    index = {name: i for i, name in enumerate(folders if classes is None else classes)}
    unknown = [name for name in folders if name not in index]
    if unknown:
        raise ValueError(f"{root / unknown[0]}: class folder {unknown[0]!r} is not among the {len(index)} training "
                         f"classes ({len(unknown)} such folders)")
    records, empty = [], []
    for name in folders:
        files = _files_under(root / name, media.IMAGE_EXTS)
        empty += [] if files else [name]
        records += [ImageRecord(str(p), index[name]) for p in files]
    if empty:
        warnings.warn(f"{root}: {len(empty)} of {len(folders)} class folders hold no images "
                      f"({', '.join(media.IMAGE_EXTS)}): {', '.join(empty)}")
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
    exts, record = (media.VIDEO_EXTS, VideoRecord) if kind == "video" else (media.IMAGE_EXTS, ImageRecord)
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
    exts, record = (media.VIDEO_EXTS, VideoRecord) if kind == "video" else (media.IMAGE_EXTS, ImageRecord)
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
            raise media.MediaError(f"{record.path}: no frames in [{record.start_frame}, {end})")
        return record.start_frame + np.asarray(pick(end - record.start_frame))
    if record.total_frames is not None:
        return media.read_frame_folder(record.path, record.total_frames, pick_in_segment)
    return media.read_frames(record.path, pick_in_segment)
