"""`python -m tools.dataset prepare`: a video dataset converted once into videos whose every frame decodes alone, so
that readers.read_frames reads a clip with one seek per wanted frame instead of decoding the reference chain from the
keyframe before it (docs/data.md "Prepared format": the measured speed, storage and pixel difference of each choice).

    python -m tools.dataset prepare ANNOTATION ROOT DST [--codec mjpeg|h264] [--mjpeg-q 5] [--crf 18] [--gop 1]
                                    [--max-short-side 320] [--workers N] [--diff-frames 4] [--unlabelled false]

Each video ROOT/<path>.<ext> becomes DST/<path>.mp4: every frame kept in order with its timestamp (frame i stays
frame i, at constant or variable frame rate), the short side scaled down to at most --max-short-side (never up),
audio dropped. The annotation is written for DST: a Kinetics CSV is copied, a Diving-48 JSON keeps the entries of
the prepared videos (and its class names), anything else becomes a `path label` list with its class names beside it,
so read_annotations gives the same labels and classes (with --unlabelled true, a pretraining input without labels,
a video folder or a path list as readers.read_unlabelled reads it, becomes a path list). Files are converted in
parallel processes; each is written
under a temporary name and renamed when complete, so a rerun skips what is done, never touches a finished file and
redoes an interrupted one (DST/prepare.json records the settings; a rerun with others is refused). Sources that
cannot be converted are listed at the end and in DST/<annotation stem>_failed.txt (exit status 1).
"""
import json
import os
import shutil
import sys
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import av
import numpy as np
from filelock import FileLock, Timeout

import readers
from readers import ImageRecord, read_annotations, read_unlabelled
from run import ranged


@dataclass
class PrepareConfig:
    annotation: str = ""  # annotation of the videos (any format read_annotations reads)
    root: str = ""  # folder its paths are relative to
    out: str = ""  # DST: the prepared videos and their annotation
    # mjpeg: every frame a JPEG (fastest to read); h264: x264 with a keyframe every --gop frames (smaller)
    codec: str = field(default="mjpeg", metadata={"choices": ("mjpeg", "h264")})
    mjpeg_q: int = ranged(5, min=2, max=31)  # mjpeg: the JPEG quantiser scale, 2 (best, largest) .. 31
    crf: int = ranged(18, min=0, max=51)  # h264: x264's constant rate factor, 0 (lossless) .. 51
    gop: int = ranged(1, min=1)  # h264: frames per keyframe (1: every frame decodes alone); no B-frames
    # the short side is scaled down to this, never up (official pretraining rescales to <=320)
    max_short_side: int = ranged(320, min=32)
    workers: int = ranged(0, min=0)  # processes converting files at once; 0: one per CPU core
    diff_frames: int = ranged(4, min=0)  # frames of each converted video decoded back and compared with the source
    unlabelled: bool = False  # a pretraining input without labels (a video folder, a path list): DST gets a path list


def validate(cfg: PrepareConfig):
    """Every flag checked at start-up: the message names the flag, the value and what is allowed."""
    if not (cfg.annotation and cfg.root and cfg.out):
        raise SystemExit("prepare needs ANNOTATION ROOT DST")
    if not 2 <= cfg.mjpeg_q <= 31:
        raise SystemExit(f"--mjpeg-q must be in [2, 31], got {cfg.mjpeg_q}")
    if not 0 <= cfg.crf <= 51:
        raise SystemExit(f"--crf must be in [0, 51], got {cfg.crf}")
    if cfg.gop < 1:
        raise SystemExit(f"--gop must be >= 1, got {cfg.gop}")
    if cfg.max_short_side < 2:
        raise SystemExit(f"--max-short-side must be >= 2, got {cfg.max_short_side}")
    if cfg.workers < 0 or cfg.diff_frames < 0:
        raise SystemExit(f"--workers and --diff-frames must be >= 0, got {cfg.workers} and {cfg.diff_frames}")


# --------------------------------------------------------------------------- one video
def even(x) -> int:
    """The nearest even integer >= 2 (4:2:0 chroma needs even sides), as ffmpeg's scale=-2."""
    return max(2, 2 * round(x / 2))


def prepared_size(width, height, max_short_side) -> tuple:
    """(width, height) of the prepared frames: the short side scaled to max_short_side if it is longer, never up,
    the aspect ratio kept, both sides even (official: tools/data/resize_video.py:30-35, ffmpeg scale=-2:SIZE)."""
    scale = min(1.0, max_short_side / min(width, height))
    return even(width * scale), even(height * scale)


def open_encoder(container, cfg, width, height, source):
    """The video stream of the prepared file: the source's time base (every timestamp kept exactly)."""
    if cfg.codec == "mjpeg":  # qmin = qmax: one fixed quantiser for every frame (ffmpeg -q:v)
        stream = container.add_stream("mjpeg", rate=source.average_rate,
                                      options={"qmin": str(cfg.mjpeg_q), "qmax": str(cfg.mjpeg_q)})
        stream.pix_fmt = "yuvj420p"  # JPEG's full-range 4:2:0
    else:
        params = f"keyint={cfg.gop}:min-keyint={cfg.gop}:scenecut=0:bframes=0"
        stream = container.add_stream("libx264", rate=source.average_rate,
                                      options={"crf": str(cfg.crf), "threads": "1", "x264-params": params})
        stream.pix_fmt = "yuv420p"
    stream.width, stream.height = width, height
    stream.time_base = stream.codec_context.time_base = source.time_base
    return stream


def convert(src, dst, cfg: PrepareConfig) -> dict:
    """Write the prepared copy of video `src` to `dst` (any name: the format is given) and check it: as many frames
    as the source, and `diff_frames` of them decoded back (readers.read_frames' way) against the source's frames
    scaled alike. Returns {"frames", "diff_sum", "diff_count", "diff_max"} (sums of mean absolute differences)."""
    with av.open(str(src)) as source, av.open(str(dst), "w", format="mp4") as target:
        stream = readers.video_stream(source, src)
        stream.thread_count = 1  # the workers are the parallelism
        index = readers.frame_index(source, stream, src)  # the frames as the reader numbers them; demuxes to the end
        n = len(index.pts)
        compare = sorted({int(i) for i in np.linspace(0, n - 1, cfg.diff_frames).round()})
        width, height = prepared_size(stream.codec_context.width, stream.codec_context.height, cfg.max_short_side)
        encoder = open_encoder(target, cfg, width, height, stream)
        expected, originals = 0, {}
        for i, frame in readers.decoded_frames(readers.packets_from(source, stream, index, 0), stream, src, index,
                                               range(n)):
            if i != expected:
                raise readers.MediaError(f"{src}: frame {i} decoded where frame {expected} was due")
            if (frame.width, frame.height) != (width, height):
                frame = frame.reformat(width=width, height=height, interpolation="BICUBIC")  # ffmpeg scale's default
            if i in compare:
                originals[i] = frame.to_ndarray(format="rgb24")  # (H, W, 3)
            frame.pts, frame.time_base = index.pts[i] - index.pts[0], stream.time_base
            frame.pict_type = 0  # "none": the encoder picks the type (x264 would force the source frame's I/P/B type)
            target.mux(encoder.encode(frame))
            expected += 1
        if expected < n:
            raise readers.MediaError(f"{src}: {n - expected} of {n} frames could not be decoded")
        target.mux(encoder.encode())
    with av.open(str(dst)) as prepared:  # decoded back as training reads it
        stream = readers.video_stream(prepared, dst)
        index = readers.frame_index(prepared, stream, dst)
        if len(index.pts) != n:
            raise readers.MediaError(f"{src}: the prepared copy has {len(index.pts)} frames, the source {n}")
        found, _ = readers.decode_wanted(prepared, stream, dst, index, set(compare))
    diffs = [np.abs(found[i].astype(np.int16) - originals[i]) for i in compare]  # (H, W, 3) each
    return {"frames": n, "diff_sum": float(sum(d.mean() for d in diffs)), "diff_count": len(diffs),
            "diff_max": int(max((d.max() for d in diffs), default=0))}


def prepare_file(src, dst, cfg: PrepareConfig) -> dict:
    """Convert one video unless DST already holds it: written under a temporary name unique to this writer and
    renamed only when complete. Returns convert's figures, {"skipped": True}, or {"error": text} for a source that
    cannot be read or a copy that cannot be written (the temporary file is removed)."""
    dst = Path(dst)
    if dst.exists():  # complete: only a finished file is ever given this name
        return {"skipped": True}
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f"{dst.name}.{uuid.uuid4().hex}.part")
    try:
        out = convert(src, tmp, cfg)
        os.replace(tmp, dst)
        return out
    except (OSError, av.FFmpegError, readers.MediaError) as err:
        return {"error": f"{src} ({err})"}
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _prepare_job(job):
    return prepare_file(*job)


# --------------------------------------------------------------------------- the dataset
SETTINGS = "prepare.json"  # in DST: the settings its videos were written with (a rerun must use the same)


def prepared_path(path, root, out) -> Path:
    """DST/<path under ROOT>.mp4."""
    return Path(out) / Path(os.path.relpath(path, root)).with_suffix(".mp4")


def write_text(path, text):
    """Write a file whole: a temporary file renamed into place."""
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_annotation(cfg, records, classes, done) -> Path:
    """The annotation of DST (labels and classes as read_annotations gives them for the source; a path list for an
    unlabelled input), holding the videos in `done` (source paths). Returns its path."""
    src = Path(cfg.annotation)
    out = Path(cfg.out)
    if cfg.unlabelled:  # one path a line, as readers.read_path_list reads it
        write_text(out / (src.stem + ".txt"), "".join(f"{prepared_path(r.path, cfg.root, '.').as_posix()}\n"
                                                      for r in records if r.path in done))
        return out / (src.stem + ".txt")
    if src.suffix == ".csv":  # Kinetics: files are found by name under the root; a missing one is skipped with a count
        shutil.copyfile(src, out / (src.name + ".tmp"))
        os.replace(out / (src.name + ".tmp"), out / src.name)
        return out / src.name
    if any(r.start_frame or r.end_frame is not None for r in records):  # Diving-48: segments need the JSON
        entries = [e for e in json.loads(src.read_text()) if str(Path(cfg.root) / f"{e['vid_name']}.mp4") in done]
        write_text(out / src.name, json.dumps(entries, indent=1))
        vocab = src.with_name("Diving48_vocab.json")
        names = json.loads(vocab.read_text()) if vocab.exists() else [[c] for c in classes]  # "_".join gives c
        write_text(out / vocab.name, json.dumps(names))
        return out / src.name
    lines = "".join(f"{prepared_path(r.path, cfg.root, '.').as_posix()} {r.label}\n" for r in records if r.path in done)
    write_text(out / (src.stem + ".txt"), lines)
    write_text(out / (src.stem + "_classes.txt"), "".join(c + "\n" for c in classes))
    return out / (src.stem + ".txt")


def prepare(cfg: PrepareConfig) -> list:
    """Convert the dataset of cfg.annotation (ROOT) into DST; print the pixel difference and the failures. Returns the
    sources that could not be converted."""
    validate(cfg)
    try:
        records, classes = (read_unlabelled(cfg.annotation, cfg.root, "video"), None) if cfg.unlabelled else \
            read_annotations(cfg.annotation, cfg.root)
    except (OSError, ValueError) as err:  # a missing file or root, a malformed line: one line naming it
        raise SystemExit(str(err)) from None
    not_videos = [r.path for r in records if isinstance(r, ImageRecord) or r.total_frames is not None]
    if not_videos:
        raise SystemExit(f"{cfg.annotation}: prepare converts videos, not images or frame folders ({not_videos[0]})")
    if Path(cfg.out).resolve() == Path(cfg.root).resolve():  # DST/a.mp4 would be the source ROOT/a.mp4 itself
        raise SystemExit(f"DST must be another folder than ROOT ({cfg.root})")
    sources = list(dict.fromkeys(r.path for r in records))  # a video with several segments is converted once
    targets = {}
    for path in sources:  # clip.webm and clip.mp4 of one folder would become the same DST file
        if os.path.relpath(path, cfg.root).startswith(os.pardir):
            raise SystemExit(f"{cfg.annotation}: {path} is not under ROOT {cfg.root}, so it has no place under DST")
        target = prepared_path(path, cfg.root, cfg.out)
        if targets.setdefault(target, path) != path:
            raise SystemExit(f"{cfg.annotation}: {path} and {targets[target]} would both become {target}")
    out = Path(cfg.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SystemExit(f"cannot create {out}: {err}") from None
    try:
        lock = FileLock(out / ".prepare.lock").acquire(timeout=0)  # released by the OS if this process dies
    except Timeout:
        raise SystemExit(f"{out} is being written by another prepare run") from None
    with lock:
        settings = {k: getattr(cfg, k) for k in ("codec", "mjpeg_q", "crf", "gop", "max_short_side")}
        if (out / SETTINGS).exists() and json.loads((out / SETTINGS).read_text()) != settings:
            raise SystemExit(f"{out} holds videos prepared with {(out / SETTINGS).read_text().strip()}; "
                             f"these settings are {json.dumps(settings)}: use another DST")
        write_text(out / SETTINGS, json.dumps(settings) + "\n")
        for stale in out.rglob("*.part"):  # left by a killed run: no writer holds them (the lock)
            stale.unlink()
        results = _run(cfg, [(path, prepared_path(path, cfg.root, cfg.out), cfg) for path in sources])
        done = {path for path, res in zip(sources, results) if "error" not in res}
        failed = [res["error"] for res in results if "error" in res]
        annotation = write_annotation(cfg, records, classes, done)
        failed_file = out / (Path(cfg.annotation).stem + "_failed.txt")
        if failed:
            write_text(failed_file, "".join(f + "\n" for f in failed))
        elif failed_file.exists():
            failed_file.unlink()  # a failure list of an earlier run: every source is converted
    report(cfg, results, annotation, failed, failed_file)
    return failed


def _run(cfg, jobs) -> list:
    """prepare_file for every job, in cfg.workers processes (here if 1), with a progress line; results in job order."""
    workers = cfg.workers or os.cpu_count() or 1
    results, counts = [None] * len(jobs), {"done": 0, "skipped": 0, "failed": 0}

    def progress(k, res):
        results[k] = res
        counts["done"] += 1
        counts["skipped"] += bool(res.get("skipped"))
        counts["failed"] += "error" in res
        print(f"\rprepare {counts['done']}/{len(jobs)} skipped={counts['skipped']} failed={counts['failed']}",
              end="", file=sys.stderr, flush=True)

    if workers == 1:
        for k, job in enumerate(jobs):
            progress(k, prepare_file(*job))
    else:  # a worker that dies ends the run (BrokenProcessPool); a rerun resumes
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for k, res in enumerate(pool.map(_prepare_job, jobs, chunksize=1)):
                progress(k, res)
    print(file=sys.stderr)
    return results


def report(cfg, results, annotation, failed, failed_file):
    converted = [r for r in results if "frames" in r]
    skipped = sum(bool(r.get("skipped")) for r in results)
    print(f"{len(results) - len(failed)} videos in {annotation} ({len(converted)} converted, {skipped} already there); "
          f"{cfg.codec} " + (f"q{cfg.mjpeg_q}" if cfg.codec == "mjpeg" else f"crf {cfg.crf}, gop {cfg.gop}"))
    count = sum(r["diff_count"] for r in converted)
    if count:
        mean = sum(r["diff_sum"] for r in converted) / count
        print(f"pixel difference from the source (scaled alike): mean {mean:.2f} grey levels, max "
              f"{max(r['diff_max'] for r in converted)}, over {count} frames of {len(converted)} videos")
    if failed:
        print(f"failed: {len(failed)} (listed in {failed_file})" + "".join(f"\n  {f}" for f in failed))
