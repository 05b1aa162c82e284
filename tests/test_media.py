"""media.py's video reader on every keyframe layout, and the prepared format it reads fastest (tools/prepare.py).

The reader: on generated files of each layout (long-GOP H.264 with B-frames, short-GOP H.264, all-intra H.264, MJPEG
in Matroska and in MP4), at constant and variable frame rate, every read equals a sequential decode of the whole
file, and the way taken is the planned one (decoded frames counted: one per wanted frame on an all-intra file).
prepare: frames kept in number and order (VFR timestamps too), sizes, audio dropped, the annotation formats, bad
sources listed, and nothing finished ever lost: an exception or a kill mid-file leaves no file under the final name,
and a rerun completes without touching what was done."""
import dataclasses
import multiprocessing
import os
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import annotations
import media
from tools import dataset as dataset_tools
from tools import prepare as prep

T = 90  # frames per generated file
LAYOUTS = {  # name: (codec, pixel format, encoder options, container)
    "long-gop": ("libx264", "yuv420p", {"threads": "1", "x264-params": "keyint=250:scenecut=0:bframes=3"}, "mp4"),
    "short-gop": ("libx264", "yuv420p", {"threads": "1", "x264-params": "keyint=8:min-keyint=8:scenecut=0:bframes=2"},
                  "mp4"),
    "intra": ("libx264", "yuv420p", {"threads": "1", "x264-params": "keyint=1"}, "mp4"),
    "mjpeg": ("mjpeg", "yuvj420p", {"qmin": "5", "qmax": "5"}, "mkv"),
}


def marked_frames(t=T, h=48, w=64, seed=0):
    """Frames of noise blocks, each frame different, so any off-by-one frame shows."""
    frames = np.random.default_rng(seed).integers(0, 256, size=(t, h // 8, w // 8, 3), dtype=np.uint8)
    return frames.repeat(8, 1).repeat(8, 2)  # (T, H, W, 3)


def vfr_times(t=T, seed=0):
    """Irregular timestamps (ms): gaps of 1 to 4 frame times at 30 fps, as a capture that dropped frames."""
    gaps = np.random.default_rng(seed).choice([33, 34, 67, 100, 133], size=t)
    return np.concatenate([[0], np.cumsum(gaps)[:-1]])  # (T,)


def write_video(path, layout, frames, times_ms=None, audio=False):
    """Encode frames in a layout; with times_ms, at those timestamps (time base 1/1000, variable frame rate)."""
    codec, pix_fmt, options, _ = LAYOUTS[layout]
    with av.open(str(path), "w", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(codec, rate=30, options=options)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        if times_ms is not None:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        sound = container.add_stream("pcm_s16le", rate=8000) if audio else None
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            if times_ms is not None:
                frame.pts, frame.time_base = int(times_ms[i]), Fraction(1, 1000)
            container.mux(stream.encode(frame))
            if sound is not None:
                samples = av.AudioFrame.from_ndarray(np.zeros((1, 266), np.int16), format="s16", layout="mono")
                samples.sample_rate, samples.pts = 8000, i * 266
                container.mux(sound.encode(samples))
        container.mux(stream.encode())
    return path


def sequential(path):
    """Every frame, decoded from the start in the decoder's (display) order: the definition of frame i."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])  # (T, H, W, 3)


def picks(rng, n=40):
    """Index lists as the samplers draw them and worse: strided clips, scattered frames with repeats, unsorted."""
    out = [[0], [T - 1], list(range(T))]
    for _ in range(n):
        kind = rng.integers(3)
        if kind == 0:  # a strided clip, as SampleFrames
            stride = int(rng.integers(1, 9))
            start = int(rng.integers(0, T - 8 * stride + 1))
            out.append(list(range(start, start + 8 * stride, stride)))
        elif kind == 1:  # scattered, with repeats, in any order
            out.append(rng.integers(0, T, size=int(rng.integers(1, 12))).tolist())
        else:  # a dense run
            start = int(rng.integers(0, T - 10))
            out.append(list(range(start, start + int(rng.integers(1, 10)))))
    return out


def decode_counted(path, wanted):
    """(frames, number decoded, index) of decode_wanted, the reader's own way."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        index = media.frame_index(container, stream, path)
        found, decoded = media.decode_wanted(container, stream, path, index, set(wanted))
    return found, decoded, index


def decode_from_keyframe_before(path, wanted):
    """The number of frames the sequential way decodes: from the keyframe before the first wanted frame on."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        index = media.frame_index(container, stream, path)
        first = min(wanted)
        key = max(k for k in index.keyframes if k <= first)
        return media._decode_run(container, stream, path, index, key, sorted(set(wanted)), {})


# --------------------------------------------------------------------------- the reader
def test_decode_plan():
    """One seek per run of frames that no keyframe separates; a keyframe between two wanted frames starts a run."""
    assert media.decode_plan((0, 8, 16), {3, 5, 9, 20}) == [(0, [3, 5]), (8, [9]), (16, [20])]
    assert media.decode_plan((0, 8, 16), [12, 9, 9]) == [(8, [9, 12])]
    assert media.decode_plan((0,), range(0, 80, 8)) == [(0, list(range(0, 80, 8)))]  # long GOP: sequential
    assert media.decode_plan(tuple(range(90)), [70, 3, 70]) == [(3, [3]), (70, [70])]  # all intra: a seek per frame
    assert media.decode_plan((0, 40), [8, 39, 40, 41]) == [(0, [8, 39]), (40, [40, 41])]


@pytest.fixture(scope="module", params=[(layout, rate) for layout in LAYOUTS for rate in ("cfr", "vfr")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def layout_file(request, tmp_path_factory):
    layout, rate = request.param
    path = tmp_path_factory.mktemp(layout) / f"{layout}-{rate}.{LAYOUTS[layout][3]}"
    write_video(path, layout, marked_frames(), vfr_times() if rate == "vfr" else None)
    return layout, rate, path


def test_reads_equal_a_sequential_decode(layout_file):
    """Every pick equals the sequential decode, whichever way the reader takes; the keyframes are the layout's."""
    layout, rate, path = layout_file
    full = sequential(path)
    assert len(full) == T == media.video_frame_count(path) and len({f.tobytes() for f in full}) == T
    with av.open(str(path)) as container:
        index = media.frame_index(container, container.streams.video[0], path)
    expected_keys = {"long-gop": (0,), "short-gop": tuple(range(0, T, 8))}.get(layout, tuple(range(T)))
    assert index.keyframes == expected_keys
    if rate == "vfr":  # the file really is variable-rate: frame i is not at i / 30 s
        seconds = np.asarray(index.pts) * float(av.open(str(path)).streams.video[0].time_base)
        assert len(set(np.round(np.diff(seconds), 3))) >= 4
    for indices in picks(np.random.default_rng(1)):
        np.testing.assert_array_equal(media.read_video(path, indices).numpy(), full[indices], err_msg=str(indices))


def test_the_way_taken(layout_file):
    """Decoded frames counted: all intra decodes exactly the wanted frames (one seek each); a long GOP decodes
    sequentially from its keyframe (the old way, the same count); a short GOP never decodes more than that and fewer
    on a clip that spans several GOPs."""
    layout, _, path = layout_file
    full = sequential(path)
    clip = list(range(5, 5 + 8 * 10, 10))  # 8 frames, 10 apart: every gap spans a keyframe of the short GOP
    for wanted in picks(np.random.default_rng(2), 15) + [clip]:
        found, decoded, index = decode_counted(path, wanted)
        assert all(np.array_equal(found[i], full[i]) for i in wanted)
        sequential_way = decode_from_keyframe_before(path, wanted)
        assert decoded <= sequential_way
        if layout in ("intra", "mjpeg"):
            assert decoded == len(set(wanted))
            assert len(media.decode_plan(index.keyframes, wanted)) == len(set(wanted))
        if layout == "long-gop":
            assert decoded == sequential_way and len(media.decode_plan(index.keyframes, wanted)) == 1
    _, decoded, _ = decode_counted(path, clip)
    if layout == "short-gop":
        assert decoded < decode_from_keyframe_before(path, clip)


def test_a_wrong_keyframe_index_still_gives_the_right_frames(tmp_path):
    """An index that claims keyframes the file does not have (the seek then lands on the real keyframe before), and
    a container whose seek lands past the frame (the run is decoded from the first frame instead): the frames are
    still those of the sequential decode."""
    path = write_video(tmp_path / "v.mp4", "short-gop", marked_frames())
    full = sequential(path)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        index = media.frame_index(container, stream, path)
        claims = media.VideoIndex(index.pts, index.frame_of, tuple(range(T)))  # every frame "a keyframe"
        found, _ = media.decode_wanted(container, stream, path, claims, {3, 13, 29, 30, 77})
        assert all(np.array_equal(found[i], full[i]) for i in (3, 13, 29, 30, 77))

        class Overshooting:  # seeks to the last keyframe whatever is asked, except the very start
            def seek(self, offset, **kw):
                container.seek(offset if offset == index.pts[0] else index.pts[index.keyframes[-1]], **kw)

            def demux(self, s):
                return container.demux(s)
        found, decoded = media.decode_wanted(Overshooting(), stream, path, index, {13, 29, 50})
        assert all(np.array_equal(found[i], full[i]) for i in (13, 29, 50)) and decoded >= 50


def test_unreadable_and_out_of_range(tmp_path):
    path = write_video(tmp_path / "v.mp4", "intra", marked_frames(t=10))
    with pytest.raises(media.MediaError, match=r"not all in \[0, 10\)"):
        media.read_video(path, [9, 10])
    (tmp_path / "bad.mp4").write_bytes(b"\x00not a video" * 50)
    with pytest.raises(av.FFmpegError):
        media.read_video(tmp_path / "bad.mp4", [0])


# --------------------------------------------------------------------------- the prepared format (tools/prepare.py)
def test_prepared_size():
    assert prep.prepared_size(340, 256, 320) == (340, 256)  # never up
    assert prep.prepared_size(1280, 720, 320) == (568, 320)  # ffmpeg scale=-2:320
    assert prep.prepared_size(720, 1280, 320) == (320, 568)
    assert prep.prepared_size(1920, 1080, 256) == (456, 256)
    assert prep.prepared_size(101, 75, 320) == (100, 76)  # 4:2:0 needs even sides


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """ROOT with a CFR video (audio beside it), a VFR video of another size in a subfolder, an unreadable file; a
    `path label` list naming them and a missing file; class names beside it."""
    root = tmp_path_factory.mktemp("sources")
    (root / "sub").mkdir()
    write_video(root / "a.mp4", "long-gop", marked_frames(seed=1), audio=True)
    write_video(root / "sub" / "b.mkv", "short-gop", marked_frames(h=96, w=128, seed=2), vfr_times(seed=3))
    (root / "bad.mp4").write_bytes(b"\x00not a video" * 50)
    ann = root / "train.txt"
    ann.write_text("a.mp4 0\nsub/b.mkv 2\nbad.mp4 1\nmissing.mp4 1\n")
    (root / "train_classes.txt").write_text("cat\ndog\nowl\n")
    return root


@pytest.mark.parametrize("codec", ["mjpeg", "h264"])
def test_prepare_keeps_every_frame(sources, tmp_path, capsys, codec):
    """Every frame in order with its timestamp, the short side scaled down to 64, audio dropped, each frame a
    keyframe; the pixels close to the source's; the list keeps labels and class names; bad sources listed, exit 1;
    through `python -m tools.dataset prepare`'s main, in worker processes and in this one."""
    out = tmp_path / "prepared"
    argv = ["prepare", str(sources / "train.txt"), str(sources), str(out), "--codec", codec, "--max-short-side", "64",
            "--workers", "2" if codec == "mjpeg" else "1"]  # the process pool once (its start costs seconds)
    with pytest.raises(SystemExit) as exit_info:
        dataset_tools.main(argv)
    assert exit_info.value.code == 1
    printed = capsys.readouterr().out
    assert "failed: 2" in printed and str(sources / "bad.mp4") in printed and "missing.mp4" in printed
    assert "2 videos in" in printed and "pixel difference from the source" in printed
    failed = (out / "train_failed.txt").read_text().splitlines()
    assert len(failed) == 2 and failed[0].startswith(str(sources / "bad.mp4"))
    records, classes = annotations.read_annotations(out / "train.txt", out)
    assert classes == ["cat", "dog", "owl"]
    assert [(Path(r.path).relative_to(out).as_posix(), r.label) for r in records] == [("a.mp4", 0), ("sub/b.mp4", 2)]
    for source, prepared, size in ((sources / "a.mp4", out / "a.mp4", (64, 48)),
                                   (sources / "sub" / "b.mkv", out / "sub" / "b.mp4", (86, 64))):
        with av.open(str(source)) as a, av.open(str(prepared)) as b:
            assert len(b.streams.audio) == 0 and (b.streams.video[0].width, b.streams.video[0].height) == size
            src_index = media.frame_index(a, a.streams.video[0], source)
            new_index = media.frame_index(b, b.streams.video[0], prepared)
            src_seconds = (np.asarray(src_index.pts) - src_index.pts[0]) * a.streams.video[0].time_base
            new_seconds = (np.asarray(new_index.pts) - new_index.pts[0]) * b.streams.video[0].time_base
        assert list(new_seconds) == list(src_seconds) and new_index.keyframes == tuple(range(T))
        with av.open(str(source)) as container:  # the source's frames scaled alike (bicubic, before RGB)
            original = np.stack([f.reformat(*size, interpolation="BICUBIC").to_ndarray(format="rgb24")
                                 for f in container.decode(video=0)]).astype(np.int16)  # (T, H, W, 3)
        copy = sequential(prepared).astype(np.int16)  # (T, H, W, 3)
        diff = np.abs(copy - original).mean(axis=(1, 2, 3))  # (T,) per frame
        shifted = np.abs(copy[1:] - original[:-1]).mean(axis=(1, 2, 3))  # frame i against the source's i - 1
        assert diff.max() < 12 < shifted.min()  # frame i is the source's frame i, never a neighbour
    assert not list(out.rglob("*.part"))


def test_prepare_resumes_and_never_loses_a_finished_file(sources, tmp_path, monkeypatch, capsys):
    """An exception mid-file leaves no file under its final name (and no temporary one); a rerun converts only
    what is missing and leaves finished files untouched; a rerun with other settings is refused."""
    out = tmp_path / "prepared"
    cfg = prep.PrepareConfig(str(sources / "train.txt"), str(sources), str(out), workers=1)
    decoded = media.decoded_frames

    def interrupted(packets, stream, path, *rest):  # Ctrl-C in the middle of the second video
        for k, item in enumerate(decoded(packets, stream, path, *rest)):
            if "b.mkv" in str(path) and k == 40:
                raise KeyboardInterrupt
            yield item
    monkeypatch.setattr(media, "decoded_frames", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(cfg)
    assert (out / "a.mp4").is_file() and not (out / "sub" / "b.mp4").exists()
    assert not list(out.rglob("*.part")) and not (out / "train.txt").exists()
    monkeypatch.setattr(media, "decoded_frames", decoded)
    done = (out / "a.mp4").stat()
    assert len(prep.prepare(cfg)) == 2  # bad.mp4 and missing.mp4
    assert "1 converted, 1 already there" in capsys.readouterr().out
    assert (out / "a.mp4").stat().st_mtime_ns == done.st_mtime_ns and (out / "a.mp4").stat().st_ino == done.st_ino
    assert len(media.read_video(out / "sub" / "b.mp4", [0, 89])) == 2
    assert len(prep.prepare(cfg)) == 2 and "0 converted, 2 already there" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="use another DST"):  # other settings never mix into a finished DST
        prep.prepare(dataclasses.replace(cfg, codec="h264"))


def _killed_run(cfg):
    """A prepare run whose process is killed (SIGKILL: no handler, no clean-up) in the middle of the second video."""
    decoded = media.decoded_frames

    def killed(packets, stream, path, *rest):
        for k, item in enumerate(decoded(packets, stream, path, *rest)):
            if "b.mkv" in str(path) and k == 40:
                os.kill(os.getpid(), signal.SIGKILL)
            yield item
    media.decoded_frames = killed
    prep.prepare(cfg)


def test_a_killed_prepare_leaves_no_file_under_the_final_name(sources, tmp_path, capsys):
    out = tmp_path / "prepared"
    cfg = prep.PrepareConfig(str(sources / "train.txt"), str(sources), str(out), workers=1)
    child = multiprocessing.get_context("fork").Process(target=_killed_run, args=(cfg,))
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    assert (out / "a.mp4").is_file() and not (out / "sub" / "b.mp4").exists()
    assert [p.name.split(".")[0] for p in out.rglob("*.part")] == ["b"]  # the interrupted file, under its own name
    assert len(prep.prepare(cfg)) == 2  # the lock died with the process; the stale part is cleared
    assert (out / "sub" / "b.mp4").is_file() and not list(out.rglob("*.part"))
    assert len(media.read_video(out / "sub" / "b.mp4", list(range(T)))) == T


def test_prepare_annotation_formats(syn, small_config, tmp_path):
    """Kinetics CSV, Diving-48 JSON (segments) and SSv2 JSON: read_annotations gives the same labels and classes for
    the prepared copy, and the same segments."""
    cases = [("k400_train_csv", "mp4_root", "train.csv"), ("diving48_train", "mp4_root", "Diving48_V2_train.json"),
             ("ssv2_val", "webm_root", "validation.txt")]
    for key, root, written in cases:
        out = tmp_path / key
        records, classes = annotations.read_annotations(syn[key], syn[root])
        assert prep.prepare(prep.PrepareConfig(str(syn[key]), str(syn[root]), str(out), workers=1)) == []
        assert (out / written).is_file()
        again, again_classes = annotations.read_annotations(out / written, out)
        assert again_classes == classes
        rename = lambda r: (Path(r.path).stem, r.label, r.start_frame, r.end_frame)  # noqa: E731
        assert sorted(map(rename, again)) == sorted(map(rename, records))
        assert media.video_frame_count(again[0].path) == small_config.frames


def test_prepare_unlabelled_folder(sources, tmp_path):
    """A plain video folder (pretraining, no labels) becomes a path list that read_unlabelled reads; unreadable files
    are listed as usual."""
    out = tmp_path / "prepared"
    failed = prep.prepare(prep.PrepareConfig(str(sources), str(sources), str(out), workers=1, unlabelled=True))
    assert len(failed) == 1 and failed[0].startswith(str(sources / "bad.mp4"))
    records = annotations.read_unlabelled(out / f"{sources.name}.txt", out, "video")
    assert [Path(r.path).relative_to(out).as_posix() for r in records] == ["a.mp4", "sub/b.mp4"]
    assert {r.label for r in records} == {annotations.NO_LABEL}


def test_prepare_refuses_bad_input(sources, syn, tmp_path):
    """One line naming the problem, no traceback: a missing annotation, frame folders or images, DST = ROOT, a path
    outside ROOT, a flag out of range, a DST another run is writing."""
    run = lambda *argv: subprocess.run([sys.executable, "-m", "tools.dataset", "prepare", *map(str, argv)],  # noqa
                                       capture_output=True, text=True, cwd=Path(__file__).parents[1])
    missing = run(tmp_path / "nope.txt", sources, tmp_path / "out")
    assert missing.returncode == 1 and "nope.txt does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    with pytest.raises(SystemExit, match="converts videos, not images"):
        prep.prepare(prep.PrepareConfig(str(syn["images_train"]), str(syn["images_train"]), str(tmp_path / "o")))
    with pytest.raises(SystemExit, match="DST must be another folder than ROOT"):
        prep.prepare(prep.PrepareConfig(str(sources / "train.txt"), str(sources), str(sources / "."), workers=1))
    outside = tmp_path / "outside.txt"
    outside.write_text("../elsewhere/a.mp4 0\n")
    with pytest.raises(SystemExit, match="is not under ROOT"):
        prep.prepare(prep.PrepareConfig(str(outside), str(sources), str(tmp_path / "o"), workers=1))
    with pytest.raises(SystemExit, match="--mjpeg-q must be in"):
        prep.prepare(prep.PrepareConfig(str(sources / "train.txt"), str(sources), str(tmp_path / "o"), mjpeg_q=1))
    out = tmp_path / "locked"
    out.mkdir()
    from filelock import FileLock
    with FileLock(out / ".prepare.lock"):
        with pytest.raises(SystemExit, match="being written by another prepare run"):
            prep.prepare(prep.PrepareConfig(str(sources / "train.txt"), str(sources), str(out), workers=1))
