"""Dataset tools: check a dataset before a run, write a video dataset as frame folders (mmaction's rawframes),
convert it into prepared videos that read faster (tools/prepare.py), train the small VQ tokenizer on a dataset's
frames (targets for runs without the DALL-E encoder), or write the synthetic set of the embedded default.

    python -m tools.dataset check ANNOTATION ROOT [--min-frames 16] [--unlabelled video|image]
        [--train-ann TRAIN --train-root DIR]                          # every file opened, problems listed
    python -m tools.dataset extract-frames --ann LIST --root DIR --out DIR [--format jpg|png] [--quality 95]
    python -m tools.dataset prepare ANNOTATION ROOT DST [--codec mjpeg|h264] [--workers N]   # see tools/prepare.py
    python -m tools.dataset small-vq --root DIR [--img-size 224] [--out-dir DIR]   # prints the --tokenizer to pass
    python -m tools.dataset synthetic --out DIR [--train-per-class 12] [--frames 64] ...   # the embedded default set

The formats are those readers.read_annotations reads; docs/data.md describes them and what each tool writes.
"""
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

import readers
import run
from readers import ImageRecord, read_annotations, read_segment, read_unlabelled
from run import parse_flags, ranged
from synthetic import SyntheticConfig, make_synthetic
from synthetic import small_vq as make_small_vq
from tools.prepare import PrepareConfig, prepare


@dataclass
class CheckConfig:
    annotation: str = ""  # annotation file (csv / json / list), a folder (class folders; with --unlabelled any)
    root: str = ""  # folder the annotation's paths are relative to
    # fewer decodable frames than this is reported as "too short" (sampling would loop)
    min_frames: int = ranged(16, min=1)
    # read as a pretraining input of this kind, labels not needed (a plain folder, a list of paths)
    unlabelled: str = field(default="", metadata={"choices": ("", "video", "image")})
    train_ann: str = ""  # a training annotation: the checked (test) set must use its classes, as finetune reads it
    train_root: str = ""  # the folder of --train-ann's paths


@dataclass
class ExtractConfig:
    ann: str = ""  # annotation of the videos (any format read_annotations reads)
    root: str = ""  # folder its paths are relative to
    out: str = ""  # output root of the frame folders and the list
    format: str = field(default="jpg", metadata={"choices": ("jpg", "png")})  # png: the decoded frames exactly
    # JPEG quality; official: OpenCV's default 95 (tools/data/build_rawframes.py:58-59)
    quality: int = ranged(95, min=0, max=100)



@dataclass
class SmallVQConfig:
    root: str = ""  # a folder of videos and / or images (at any depth): the frames the tokenizer learns from
    img_size: int = ranged(224, min=32)  # train.py's --img-size: the tokenizer sees the half-size view of that crop
    out_dir: str = "runs/tokenizer"  # writes vq_tokenizer_<img_size / 2>.pt there


def small_vq(cfg: SmallVQConfig):
    """The small VQ tokenizer (not the paper's: see docs/tokenizer.md) trained on frames of --root, once."""
    if not cfg.root:
        sys.exit("small-vq: --root DIR is required (a folder of the pretraining videos or images)")
    if cfg.img_size % 32:
        sys.exit(f"small-vq: --img-size {cfg.img_size}: must be a multiple of 32, as train.py's")
    size, path = cfg.img_size // 2, Path(cfg.out_dir) / f"vq_tokenizer_{cfg.img_size // 2}.pt"
    if path.exists():
        print(f"{path} exists, not retrained (delete it to retrain)")
    else:
        try:
            root = readers.need_root(cfg.root)
        except OSError as e:
            sys.exit(f"small-vq: --root {cfg.root}: {e}")
        try:  # the out-dir only once the root is known to exist: a mistake leaves no empty folder behind
            Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            sys.exit(f"small-vq: --out-dir {cfg.out_dir}: cannot create it ({e.strerror})")
        try:
            print(f"training the small VQ tokenizer on frames of {root} ({size}-px tokenizer views)", flush=True)
            make_small_vq(root, size, path)
        except (OSError, ValueError) as e:  # no video or image in the root, a file it cannot write
            sys.exit(f"small-vq: --root {cfg.root}: {e}")
    print(f"tokenizer: {path}; pass it as --tokenizer {path} (with --img-size {cfg.img_size})")


PROBLEMS = ("annotation", "missing", "unreadable", "too short", "missing frames", "wrong total_frames")


def read_for_check(cfg: CheckConfig, found: list):
    """(records, classes or None) as a run would read the dataset; the readers' errors and warnings (a malformed
    line, a missing root, an empty class folder, videos of a CSV not on disk) are appended to `found`, no records
    after an error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if cfg.unlabelled:
                result = read_unlabelled(cfg.annotation, cfg.root, cfg.unlabelled), None
            else:
                classes = None
                if cfg.train_ann:
                    try:
                        _, classes = read_annotations(cfg.train_ann, cfg.train_root)
                    except (OSError, ValueError) as err:
                        raise ValueError(f"--train-ann: {err}") from None
                result = read_annotations(cfg.annotation, cfg.root, classes)
        except Exception as err:  # a checking tool reports and goes on; the readers raise OSError or ValueError
            found.append(str(err) if isinstance(err, (OSError, ValueError)) else f"{type(err).__name__}: {err}")
            result = [], None
    found += [str(w.message) for w in caught]
    return result


def check(cfg: CheckConfig) -> int:
    """Read the annotation as a run would, open every file, decode the last frame of each video's segment (and check
    each frame folder's files against its total_frames); print every problem found, by kind. Returns the number of
    problems."""
    problems = {kind: [] for kind in PROBLEMS}
    records, classes = read_for_check(cfg, problems["annotation"])
    for done, record in enumerate(records, 1):
        try:
            if not os.path.exists(record.path):
                problems["missing"].append(record.path)
            elif isinstance(record, ImageRecord):
                readers.read_image(record.path)
            elif record.total_frames and (
                    problem := readers.frame_folder_problem(record.path, record.total_frames)):
                problems[problem[0]].append(problem[1])
            else:
                lengths = []  # the segment's length, as the sampling sees it
                read_segment(record, lambda n: lengths.append(n) or [n - 1])  # decodes its last frame
                if lengths[0] < cfg.min_frames:
                    problems["too short"].append(f"{record.path} ({lengths[0]} frames)")
        except Exception as err:  # every failure to read a file is a finding, whatever raised it
            problems["unreadable"].append(f"{record.path} ({err})")
        if done % 50 == 0 or done == len(records):
            counts = " ".join(f"{key}={len(v)}" for key, v in problems.items())
            print(f"\rcheck {cfg.annotation}: {done}/{len(records)} {counts}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    read = f"{len(classes)} classes" if classes is not None else "no labels read" if records else "nothing read"
    print(f"{len(records)} samples, {read}")
    for key, found in problems.items():
        print(f"{key}: {len(found)}" + "".join(f"\n  {p}" for p in found))
    return sum(len(v) for v in problems.values())


def frame_folder_name(record, root) -> str:
    """The frame folder of a video record under the output root: its path under `root` without the extension,
    whitespace as '_' (rawframes lists are split at whitespace), and its segment if it has one."""
    name = re.sub(r"\s", "_", os.path.splitext(os.path.relpath(record.path, root))[0])
    has_segment = record.start_frame or record.end_frame is not None
    return f"{name}_{record.start_frame}-{record.end_frame}" if has_segment else name


def _write_frames(record, folder, ext, params) -> int:
    """Frames [start_frame, end_frame) of the record's video as folder/img_00001{ext} ..., numbered as
    readers.read_frames numbers them (decoded from the first frame). Returns the number written."""
    with av.open(record.path) as container:
        stream = readers.video_stream(container, record.path)
        index = readers.frame_index(container, stream, record.path)  # demuxes to the end: seek back to the start
        start, end = record.start_frame, min(record.end_frame or math.inf, len(index.pts))
        if end <= start:
            raise readers.MediaError(f"{record.path}: no frames in [{start}, {end})")
        container.seek(index.pts[0], stream=stream, backward=True, any_frame=False)
        written = 0
        for i, frame in readers.decoded_frames(container.demux(stream), stream, record.path, index,
                                               range(start, end)):
            if start <= i < end:
                path = readers.frame_file(folder, i - start, ext)
                bgr = cv2.cvtColor(frame.to_ndarray(format="rgb24"), cv2.COLOR_RGB2BGR)  # (H, W, 3)
                if not cv2.imwrite(str(path), bgr, params):
                    raise OSError(f"cannot write {path}")
                written += 1
            if i >= end - 1:
                break
    if written < end - start:
        raise readers.MediaError(f"{record.path}: {end - start - written} frames of [{start}, {end}) "
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
            numbers = readers.frame_numbers(folder) if folder.is_dir() else []
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
        except (OSError, av.FFmpegError, readers.MediaError) as err:
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


USAGE = """usage: python -m tools.dataset check ANNOTATION ROOT [--min-frames 16] [--unlabelled video|image]
           [--train-ann TRAIN --train-root DIR]
       python -m tools.dataset extract-frames --ann LIST --root DIR --out DIR [--format jpg|png] [--quality 95]
       python -m tools.dataset prepare ANNOTATION ROOT DST [--codec mjpeg|h264] [--workers N]
       python -m tools.dataset small-vq --root DIR [--img-size 224] [--out-dir DIR]
       python -m tools.dataset synthetic --out DIR [--train-per-class 12] [--frames 64] ...   (--help: all flags)"""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["check"]:
        cfg = CheckConfig(**parse_flags(CheckConfig, argv[1:], "validate a dataset", ("annotation", "root")))
        sys.exit(1 if check(cfg) else 0)
    if argv[:1] == ["extract-frames"]:
        cfg = ExtractConfig(**parse_flags(ExtractConfig, argv[1:], "write the frames of a video dataset (rawframes)"))
        sys.exit(1 if extract_frames(cfg) else 0)
    if argv[:1] == ["prepare"]:
        cfg = PrepareConfig(**parse_flags(PrepareConfig, argv[1:], "convert a video dataset into prepared videos",
                                          ("annotation", "root", "out")))
        sys.exit(1 if prepare(cfg) else 0)
    if argv[:1] == ["small-vq"]:
        return small_vq(SmallVQConfig(**parse_flags(SmallVQConfig, argv[1:], "train the small VQ tokenizer")))
    if argv[:1] == ["synthetic"]:
        cfg = SyntheticConfig(**parse_flags(SyntheticConfig, argv[1:], "write the synthetic video and image set"))
        if not cfg.out:
            sys.exit("synthetic: --out DIR is required")
        print(f"wrote {make_synthetic(cfg.out, cfg)}")
        return
    sys.exit(USAGE)


if __name__ == "__main__":
    run.entry_point(main)
