"""Tests for readers.py.

Annotations: the readers (every mistake named with its file and line; UCF101, HMDB51 and label-free
inputs), readers.read_image on images of every bit depth and channel count, and `python -m tools.dataset check`
(every problem listed, never a traceback). Tiny files written per test; no video is decoded except in the check of
a label-free video folder.

Pixels: the video reader on every keyframe layout, and the prepared format it reads fastest (tools/prepare.py).

The reader: on generated files of each layout (long-GOP H.264 with B-frames, short-GOP H.264, all-intra H.264, MJPEG
in Matroska and in MP4), at constant and variable frame rate, every read equals a sequential decode of the whole
file, and the way taken is the planned one (decoded frames counted: one per wanted frame on an all-intra file).
prepare: frames kept in number and order (VFR timestamps too), sizes, audio dropped, the annotation formats, bad
sources listed, and nothing finished ever lost: an exception or a kill mid-file leaves no file under the final name,
and a rerun completes without touching what was done."""
import dataclasses
import json
import multiprocessing
import os
import re
import signal
import struct
import subprocess
import sys
import warnings
import zlib
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

import readers
import synthetic
from readers import ImageRecord, VideoRecord
from tools import dataset as dataset_tools
from tools import prepare as prep

# ----------------------------------------------------------------------------------------------------------------------
# annotations

def write(path, content) -> Path:
    """Write text (or bytes) to path, making its folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def quiet(read, *args, **kwargs):
    """read(*args, **kwargs) with warnings turned into errors: the result of a reader that warns about nothing."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return read(*args, **kwargs)


# --------------------------------------------------------------------------- labels and classes
def kinetics(tmp_path, name, rows):
    """A Kinetics CSV of (label, youtube_id) rows whose files exist (empty) under tmp_path/videos."""
    for _, youtube_id in rows:
        write(tmp_path / "videos" / f"{youtube_id}_000001_000011.mp4", b"")
    text = "label,youtube_id,time_start,time_end,split\n" + "".join(f"{label},{y},1,11,x\n" for label, y in rows)
    return write(tmp_path / name, text)


def test_kinetics_test_set_uses_the_training_classes(tmp_path):
    train = kinetics(tmp_path, "train.csv", [("abseiling", "a"), ("zumba", "b"), ("juggling", "c")])
    _, classes = quiet(readers.read_k400_csv, train, tmp_path / "videos")
    assert classes == ["abseiling", "juggling", "zumba"]
    val = kinetics(tmp_path, "val.csv", [("zumba", "d")])  # alone it would be class 0 of 1
    records, val_classes = quiet(readers.read_annotations, val, tmp_path / "videos", classes)
    assert [r.label for r in records] == [2] and val_classes == classes
    unseen = kinetics(tmp_path, "unseen.csv", [("zumba", "e"), ("ice fishing", "f"), ("ice fishing", "g")])
    with pytest.raises(ValueError, match=r"unseen.csv:3: class 'ice fishing' is not among the 3 training classes "
                                         r"\(2 rows of 1 such classes\)"):
        readers.read_annotations(unseen, tmp_path / "videos", classes)


def test_integer_labels_are_checked_and_sparse_ones_warned(tmp_path):
    (tmp_path / "a.mp4").touch()
    negative = write(tmp_path / "neg.txt", "a.mp4 0\na.mp4 -1\n")
    with pytest.raises(ValueError, match=r"neg.txt:2: label -1 is negative"):
        readers.read_annotations(negative, tmp_path)
    typo = write(tmp_path / "typo.txt", "a.mp4 0\na.mp4 1\na.mp4 99999\n")
    with pytest.warns(UserWarning, match=r"typo.txt: 3 distinct labels span 100000 classes \(99997 empty\)"):
        _, classes = readers.read_annotations(typo, tmp_path)
    assert classes == [str(i) for i in range(100000)]  # what the labels say: the head would have 100000 outputs
    with pytest.raises(ValueError, match=r"typo.txt:3: label 99999 is outside the 2 classes of the training set"):
        readers.read_annotations(typo, tmp_path, classes=["cat", "dog"])
    write(tmp_path / "typo_classes.txt", "cat\ndog\n")
    with pytest.raises(ValueError, match=r"typo.txt:3: label 99999 is outside the 2 classes of .*typo_classes.txt"):
        readers.read_annotations(typo, tmp_path)
    dense = write(tmp_path / "dense.txt", "a.mp4 2\na.mp4 0\n")  # class 1 empty: one of three, no warning
    assert quiet(readers.read_annotations, dense, tmp_path)[1] == ["0", "1", "2"]
    assert quiet(readers.read_annotations, dense, tmp_path, ["x", "y", "z"])[1] == ["x", "y", "z"]
    write(tmp_path / "dense_classes.txt", "x\ny\nw\n")  # its own names, not the training set's
    with pytest.raises(ValueError, match=r"dense.txt: the classes of .*dense_classes.txt are not the training set's "
                                         r"\(class 2 is 'w' there, 'z' in training\)"):
        readers.read_annotations(dense, tmp_path, ["x", "y", "z"])
    (tmp_path / "clip").mkdir()
    frames = write(tmp_path / "frames.txt", "clip 8 1\nclip 8 -3\n")
    with pytest.raises(ValueError, match=r"frames.txt:2: label -3 is negative"):
        readers.read_annotations(frames, tmp_path)


def diving(tmp_path, entries, vocab=None):
    if vocab is not None:
        write(tmp_path / "Diving48_vocab.json", json.dumps(vocab))
    return write(tmp_path / "Diving48_V2_train.json", json.dumps(
        [{"vid_name": f"v{i}", "start_frame": 0, "end_frame": 9, **e} for i, e in enumerate(entries)]))


def test_diving48_labels(tmp_path):
    with pytest.raises(ValueError, match=r"Diving48_V2_train.json: entry 2: label -1 is negative"):
        readers.read_annotations(diving(tmp_path, [{"label": 0}, {"label": -1}]), tmp_path)
    with pytest.raises(ValueError, match=r"entry 1: label 'x' is not an integer"):
        readers.read_annotations(diving(tmp_path, [{"label": "x"}]), tmp_path)
    with pytest.raises(ValueError, match=r"entry 1: start_frame 1.5 is not an integer"):
        readers.read_annotations(diving(tmp_path, [{"label": 0, "start_frame": 1.5}]), tmp_path)
    ann = diving(tmp_path, [{"label": 1}, {"label": 2}], vocab=[["back", "15som", "05Twis", "FREE"], ["a"]])
    with pytest.raises(ValueError, match=r"entry 2: label 2 is outside the 2 classes of .*Diving48_vocab.json"):
        readers.read_annotations(ann, tmp_path)
    ann = diving(tmp_path, [{"label": 1}])
    records, classes = quiet(readers.read_annotations, ann, tmp_path)
    assert records == [VideoRecord(str(tmp_path / "v0.mp4"), 1, 0, 9)] and classes == ["back_15som_05Twis_FREE", "a"]


def ssv2(tmp_path, entries, labels={"Pushing something": 0, "Pulling something": 1}):
    if labels is not None:
        write(tmp_path / "something-something-v2-labels.json", json.dumps(labels))
    return write(tmp_path / "something-something-v2-validation.json", json.dumps(entries))


def test_ssv2_labels_file_and_templates(tmp_path):
    ann = ssv2(tmp_path, [{"id": "7", "template": "Pulling [something]"}])
    assert quiet(readers.read_annotations, ann, tmp_path) == (
        [VideoRecord(str(tmp_path / "7.webm"), 1)], ["Pushing something", "Pulling something"])
    with pytest.raises(ValueError, match=r"are not the training set's \(class 0 is 'Pushing something' there, 'a'"):
        readers.read_annotations(ann, tmp_path, ["a", "b"])
    (tmp_path / "something-something-v2-labels.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"validation.json: an SSv2 annotation needs its labels file"):
        readers.read_annotations(ann, tmp_path)
    ann = ssv2(tmp_path, [{"id": "7", "template": "Pulling [something]"}, {"id": "8", "template": "Poking it"}])
    with pytest.raises(ValueError, match=r"validation.json: entry 2: template 'Poking it' is not a class of .*labels"):
        readers.read_annotations(ann, tmp_path)
    with pytest.raises(ValueError, match=r"entry 1: no 'template', so no label \(the SSv2 test split is unlabelled"):
        readers.read_annotations(ssv2(tmp_path, [{"id": "9"}]), tmp_path)
    with pytest.raises(ValueError, match=r"labels.json: the indices must be 0..1, each once"):
        readers.read_annotations(ssv2(tmp_path, [{"id": "9"}], {"a": 0, "b": 2}), tmp_path)
    with pytest.raises(ValueError, match=r"labels.json: expected \{\"class name\": index"):
        readers.read_annotations(ssv2(tmp_path, [{"id": "9"}], ["a"]), tmp_path)
    write(tmp_path / "old-labels.json", "{}")
    with pytest.raises(ValueError, match=r"2 \*labels.json files beside it"):
        readers.read_annotations(ann, tmp_path)


# --------------------------------------------------------------------------- text, JSON and malformed lines
def test_encoding_json_and_malformed_lines(tmp_path):
    (tmp_path / "a.mp4").touch()
    latin = write(tmp_path / "latin.txt", "a.mp4 0\na.mp4 1\ncaf\xe9.mp4 1\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin.txt:3: not UTF-8 text \(byte 0xe9\)"):
        readers.read_annotations(latin, tmp_path)
    with pytest.raises(ValueError, match=r"bad.csv:2: not UTF-8"):
        readers.read_annotations(write(tmp_path / "bad.csv", b"label,youtube_id\n\xff,x,1,2,x\n"), tmp_path)
    with pytest.raises(ValueError, match=r"bad.json:1: not UTF-8"):
        readers.read_annotations(write(tmp_path / "bad.json", b'[{"id": "\xff"}]'), tmp_path)
    with pytest.raises(ValueError, match=r"broken.json:2:1: invalid JSON: Expecting value"):
        readers.read_annotations(write(tmp_path / "broken.json", '[{"id": 1},\n]'), tmp_path)
    with pytest.raises(ValueError, match=r"empty.json: the file is empty"):
        readers.read_annotations(write(tmp_path / "empty.json", "\n"), tmp_path)
    with pytest.raises(ValueError, match=r"dict.json: expected a JSON list of entries"):
        readers.read_annotations(write(tmp_path / "dict.json", "{}"), tmp_path)
    with pytest.raises(ValueError, match=r"other.json: entry 1: expected an SSv2 entry"):
        readers.read_annotations(write(tmp_path / "other.json", '[{"video": 1}]'), tmp_path)
    with pytest.raises(ValueError, match=r"none.json: the dataset is empty"):
        readers.read_annotations(write(tmp_path / "none.json", "[]"), tmp_path)
    # a byte-order mark and Windows line ends are read
    bom = write(tmp_path / "bom.csv", "\ufefflabel,youtube_id,time_start,time_end,split\r\nrun,a,1,11,x\r\n")
    (tmp_path / "a_000001_000011.mp4").touch()
    assert quiet(readers.read_annotations, bom, tmp_path)[1] == ["run"]
    assert quiet(readers.read_annotations, write(tmp_path / "crlf.txt", "a.mp4 0\r\n"), tmp_path)[0] == [
        VideoRecord(str(tmp_path / "a.mp4"), 0)]
    cases = [("k.csv", "label,youtube_id,time_start,time_end,split\nrun,a,1,11,x\nrun,b,one,11,x\n",
              r"k.csv:3: expected label,youtube_id,time_start,time_end,split, got 'run,b,one,11,x'"),
             ("paths.txt", "a.mp4\n", r"paths.txt:1: expected 'path label', got 'a.mp4' \(a list of paths without "
                                      r"labels can only be pretrained on\)"),
             ("float.txt", "a.mp4 0\n\na.mp4 1.0\n", r"float.txt:3: expected 'path label', got 'a.mp4 1.0'$")]
    for name, text, message in cases:
        with pytest.raises(ValueError, match=message):
            readers.read_annotations(write(tmp_path / name, text), tmp_path)
    with pytest.raises(FileNotFoundError, match="no dataset root given"):
        readers.read_annotations(tmp_path / "crlf.txt", "")


# --------------------------------------------------------------------------- UCF101 and HMDB51 splits
def test_ucf101_splits(tmp_path):
    splits = tmp_path / "ucfTrainTestlist"
    write(splits / "classInd.txt", "1 ApplyEyeMakeup\r\n2 Archery\r\n3 YoYo\r\n")  # the official files end in \r\n
    write(splits / "trainlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\nYoYo/v_YoYo_g08_c01.avi 3\r\n")
    write(splits / "testlist01.txt", "Archery/v_Archery_g01_c01.avi\r\n")
    train, classes = quiet(readers.read_annotations, splits / "trainlist01.txt", tmp_path)
    assert classes == ["ApplyEyeMakeup", "Archery", "YoYo"]
    assert train == [VideoRecord(str(tmp_path / "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"), 0),
                     VideoRecord(str(tmp_path / "YoYo/v_YoYo_g08_c01.avi"), 2)]
    test, _ = quiet(readers.read_annotations, splits / "testlist01.txt", tmp_path, classes)
    assert test == [VideoRecord(str(tmp_path / "Archery/v_Archery_g01_c01.avi"), 1)]
    cases = [("testlist02.txt", "Archery/v_Archery_g01_c01.avi 1\n",
              r"testlist02.txt:1: index 1 disagrees with .*classInd.txt, where Archery is 2"),
             ("testlist03.txt", "Archery/a.avi\nBowling/b.avi\n",
              r"testlist03.txt:2: class folder 'Bowling' is not in .*classInd.txt"),
             ("trainlist02.txt", "v_Archery_g01_c01.avi 2\n",
              r"trainlist02.txt:1: expected 'Class/video.avi' or 'Class/video.avi index'")]
    for name, text, message in cases:
        with pytest.raises(ValueError, match=message):
            readers.read_annotations(write(splits / name, text), tmp_path)
    write(splits / "classInd.txt", "1 ApplyEyeMakeup\n3 Archery\n")
    with pytest.raises(ValueError, match=r"classInd.txt:2: expected '2 ClassName' \(indices from 1, in order\)"):
        readers.read_annotations(splits / "trainlist01.txt", tmp_path)


def test_hmdb51_splits(tmp_path):
    splits = tmp_path / "testTrainMulti_7030_splits"
    # climb_stairs sorts after climb by class name, before it by file name: classes are the sorted class names
    write(splits / "climb_stairs_test_split1.txt", "s1.avi 1 \ns2.avi 2 \ns3.avi 0 \n")
    write(splits / "climb_test_split1.txt", "c1.avi 2 \nc2.avi 1 \n")
    write(splits / "climb_test_split2.txt", "c1.avi 1 \n")
    train, classes = quiet(readers.read_annotations, splits / "train1", tmp_path)
    assert classes == ["climb", "climb_stairs"]
    assert train == [VideoRecord(str(tmp_path / "climb/c2.avi"), 0),
                     VideoRecord(str(tmp_path / "climb_stairs/s1.avi"), 1)]
    test, _ = quiet(readers.read_annotations, splits / "test1", tmp_path, classes)
    assert test == [VideoRecord(str(tmp_path / "climb/c1.avi"), 0),
                    VideoRecord(str(tmp_path / "climb_stairs/s2.avi"), 1)]
    assert quiet(readers.read_annotations, splits / "train2", tmp_path)[1] == ["climb"]
    with pytest.raises(FileNotFoundError, match=r"annotation file .*train3 does not exist"):
        readers.read_annotations(splits / "train3", tmp_path)
    with pytest.raises(ValueError, match=r"test2: the dataset is empty"):
        readers.read_annotations(splits / "test2", tmp_path)
    write(splits / "climb_test_split2.txt", "c1.avi 1\nc2.avi 3\n")
    with pytest.raises(ValueError, match=r"climb_test_split2.txt:2: expected '<video>.avi 0\|1\|2' \(1 train, 2 test"):
        readers.read_annotations(splits / "train2", tmp_path)


# --------------------------------------------------------------------------- image folders, label-free inputs
def test_image_folder_classes_empty_folders_and_depth(tmp_path):
    root = tmp_path / "train"
    for path in ("cat/b.png", "cat/sub/a.JPEG", "dog/x.jpg", "cat/.hidden/z.png", "cat/._mac.jpg"):
        write(root / path, b"")
    (root / "emu").mkdir()
    with pytest.warns(UserWarning, match=r"train: 1 of 3 class folders hold no images \(.jpg, .jpeg, .png\): emu"):
        records, classes = readers.read_annotations(root, None)
    assert classes == ["cat", "dog", "emu"]
    assert records == [ImageRecord(str(root / "cat/b.png"), 0), ImageRecord(str(root / "cat/sub/a.JPEG"), 0),
                       ImageRecord(str(root / "dog/x.jpg"), 1)]
    write(tmp_path / "val/dog/y.png", b"")
    assert quiet(readers.read_annotations, tmp_path / "val", None, classes)[0] == [
        ImageRecord(str(tmp_path / "val/dog/y.png"), 1)]
    write(tmp_path / "val/fox/y.png", b"")
    with pytest.raises(ValueError, match=r"val/fox: class folder 'fox' is not among the 3 training classes"):
        readers.read_annotations(tmp_path / "val", None, classes)
    write(tmp_path / "flat/a.png", b"")
    with pytest.raises(ValueError, match=r"flat: no class folders .*no labels: it can only be pretrained"):
        readers.read_annotations(tmp_path / "flat", None)


def test_unlabelled_inputs(tmp_path):
    videos = tmp_path / "videos"
    for path in ("b.mp4", "a/z.webm", "a/y.MKV", "notes.txt", "thumb.jpg", ".cache/c.mp4", "a b/c.avi"):
        write(videos / path, b"")
    found = readers.read_unlabelled(videos, None, "video")
    assert [Path(r.path).relative_to(videos).as_posix() for r in found] == [
        "a/y.MKV", "a/z.webm", "a b/c.avi", "b.mp4"]  # sorted by path parts; hidden folders and other files left out
    assert all(type(r) is VideoRecord and r.label == readers.NO_LABEL for r in found)
    assert readers.read_unlabelled(videos, None, "image") == [ImageRecord(str(videos / "thumb.jpg"), -1)]
    with pytest.raises(ValueError, match=r"empty: no video files \(.mp4, .webm, .mkv, .avi, .mov\) in it"):
        readers.read_unlabelled(write(tmp_path / "empty/x.txt", "").parent, None, "video")
    paths = write(tmp_path / "paths.txt", "b.mp4\na b/c.avi\n\n")
    assert readers.read_unlabelled(paths, videos, "video") == [
        VideoRecord(str(videos / "b.mp4"), -1), VideoRecord(str(videos / "a b/c.avi"), -1)]
    with pytest.raises(ValueError, match=r"paths.txt:3: expected the path of a video \(.mp4, .*\), got 'thumb.jpg"):
        readers.read_unlabelled(write(paths, "b.mp4\n\nthumb.jpg\n"), videos, "video")
    labelled = write(tmp_path / "labelled.txt", "b.mp4 3\nb.mp4 2\nb.mp4 1\nb.mp4 0\n")
    assert [r.label for r in readers.read_unlabelled(labelled, videos, "video")] == [3, 2, 1, 0]
    with pytest.raises(ValueError, match=r"labelled.txt: the image input takes .jpg, .* files only, not .*b.mp4"):
        readers.read_unlabelled(labelled, videos, "image")
    images = tmp_path / "images"  # no class folders: images directly and at any depth
    for path in ("x.png", "2024/y.jpg", "2024/deep/z.JPEG"):
        write(images / path, b"")
    found = readers.read_unlabelled(images, None, "image")  # sorted by path parts: folder, then file
    assert [Path(r.path).relative_to(images).as_posix() for r in found] == ["2024/deep/z.JPEG", "2024/y.jpg", "x.png"]
    with pytest.raises(ValueError, match="kind must be 'video' or 'image'"):
        readers.read_unlabelled(images, None, "images")


# --------------------------------------------------------------------------- images of every kind (readers.read_image)
def png(path, samples, depth, color_type, palette=None, transparency=None) -> Path:
    """A PNG written by hand (not by OpenCV): rows of `samples` (H, W, channels) packed at `depth` bits."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    h, w = samples.shape[:2]
    if depth == 16:
        rows = [row.astype(">u2").tobytes() for row in samples]
    elif depth < 8:
        rows = [np.packbits(np.unpackbits(row.reshape(-1, 1).astype(np.uint8), axis=1)[:, 8 - depth:]).tobytes()
                for row in samples]
    else:
        rows = [row.astype(np.uint8).tobytes() for row in samples]
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0))
    data += chunk(b"PLTE", palette.tobytes()) if palette is not None else b""
    data += chunk(b"tRNS", transparency) if transparency is not None else b""
    data += chunk(b"IDAT", zlib.compress(b"".join(b"\0" + row for row in rows))) + chunk(b"IEND", b"")
    return write(path, data)


PALETTE = np.random.default_rng(1).integers(0, 256, (16, 3), dtype=np.uint8)


@pytest.mark.parametrize("kind", ["grey 1-bit", "grey 8", "grey 16", "grey+alpha 8", "grey+alpha 16", "rgb 8",
                                  "rgb 16", "rgba 8", "rgba 16", "palette 4-bit", "palette 8 with transparency"])
def test_read_image_is_opencv_imread_for_every_png_kind(tmp_path, kind):
    """read_image = cv2.imread(IMREAD_COLOR) + BGR2RGB bit for bit, and that is 8-bit RGB: 16-bit samples keep their
    high byte, grey is repeated, alpha dropped, palette entries looked up (OpenCV's behaviour, asserted here)."""
    rng = np.random.default_rng(0)
    channels = {"grey": 1, "grey+alpha": 2, "rgb": 3, "rgba": 4, "palette": 1}[kind.split()[0]]
    color_type = {"grey": 0, "grey+alpha": 4, "rgb": 2, "rgba": 6, "palette": 3}[kind.split()[0]]
    depth = 1 if "1-bit" in kind else 4 if "4-bit" in kind else int(kind.split()[1])
    samples = rng.integers(0, len(PALETTE) if kind.startswith("palette") else 2 ** depth, (5, 7, channels))
    path = png(tmp_path / "image.png", samples, depth, color_type, PALETTE if kind.startswith("palette") else None,
               bytes([0, 128, 255]) if "transparency" in kind else None)
    ours = readers.read_image(path).permute(1, 2, 0).numpy()  # (H, W, 3)
    opencv = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert ours.dtype == np.uint8 and ours.shape == (5, 7, 3) and np.array_equal(ours, opencv)
    if kind.startswith("palette"):
        expected = PALETTE[samples[..., 0]]
    else:
        colour = samples[..., :3] if channels >= 3 else samples[..., :1].repeat(3, axis=2)
        expected = colour * 255 if depth == 1 else colour >> 8 if depth == 16 else colour
    assert np.array_equal(ours, expected)


def test_read_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.png"):
        readers.read_image(tmp_path / "nothing.png")
    with pytest.raises(readers.MediaError, match=r"junk.png: not an image OpenCV can decode"):
        readers.read_image(write(tmp_path / "junk.png", b"\x89PNG not really"))
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8)
    cv2.imwrite(str(tmp_path / "grey.jpg"), grey)
    ours = readers.read_image(tmp_path / "grey.jpg")
    assert ours.shape == (3, 6, 8) and np.array_equal(ours[0], ours[2])


# --------------------------------------------------------------------------- python -m tools.dataset check
def run_check(capsys, *argv):
    """(exit status, stdout) of `python -m tools.dataset check ARGV`; any other exception fails the test."""
    with pytest.raises(SystemExit) as exit_info:
        dataset_tools.main(["check", *map(str, argv)])
    return exit_info.value.code, capsys.readouterr().out


def test_check_lists_every_problem_and_never_raises(tmp_path, capsys):
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    cv2.imwrite(str(write(root / "cat/a.png", b"")), rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    png(root / "cat/deep.png", rng.integers(0, 2 ** 16, (8, 8, 3)), 16, 2)  # 16-bit: read like any other
    png(root / "dog/alpha.png", rng.integers(0, 256, (8, 8, 2)), 8, 4)
    status, out = run_check(capsys, root, root)
    assert status == 0 and "3 samples, 2 classes" in out and "unreadable: 0" in out and "annotation: 0" in out
    write(root / "dog/bad.png", b"not an image")
    (root / "emu").mkdir()
    status, out = run_check(capsys, root, root)
    assert status == 1 and "unreadable: 1" in out and f"{root / 'dog/bad.png'} (" in out
    assert "annotation: 1" in out and "1 of 3 class folders hold no images" in out and ": emu" in out
    (tmp_path / "ok.png").write_bytes((root / "cat/a.png").read_bytes())
    write(tmp_path / "many.txt", "".join(f"missing{i}.png 0\n" for i in range(25)) + "ok.png 0\n")
    status, out = run_check(capsys, tmp_path / "many.txt", tmp_path)  # every problem listed, not the first 20
    assert status == 1 and "missing: 25" in out and all(f"missing{i}.png" in out for i in range(25))
    cases = [(tmp_path / "absent.txt", tmp_path, "annotation file .*absent.txt does not exist"),
             (write(tmp_path / "empty.txt", ""), tmp_path, "empty.txt: the dataset is empty"),
             (write(tmp_path / "bad.txt", "a.png 0\na.png\n"), tmp_path, "bad.txt:2: expected 'path label'"),
             (tmp_path / "many.txt", tmp_path / "nowhere", "dataset root .*nowhere does not exist"),
             (write(tmp_path / "latin.txt", b"\xe9.png 0\n"), tmp_path, r"latin.txt:1: not UTF-8 text"),
             (ssv2(tmp_path / "ssv2", [{"id": "1", "template": "x"}], labels=None), tmp_path,
              "needs its labels file"),
             (write(tmp_path / "neg.txt", "ok.png -1\n"), tmp_path, r"neg.txt:1: label -1 is negative"),
             (write(tmp_path / "sparse.txt", "ok.png 0\nok.png 99999\n"), tmp_path,
              r"sparse.txt: 2 distinct labels span 100000 classes \(99998 empty\)")]
    for annotation, where, message in cases:
        status, out = run_check(capsys, annotation, where)
        assert status == 1 and "annotation: 1\n" in out, out
        assert re.search(message, out), (message, out)


def test_check_test_set_against_training_classes_and_unlabelled(tmp_path, capsys):
    kinetics(tmp_path, "train.csv", [("abseiling", "a"), ("zumba", "b")])
    kinetics(tmp_path, "val.csv", [("zumba", "c"), ("yodelling", "d")])
    status, out = run_check(capsys, tmp_path / "val.csv", tmp_path / "videos", "--train-ann", tmp_path / "train.csv",
                            "--train-root", tmp_path / "videos")
    assert status == 1 and "val.csv:3: class 'yodelling' is not among the 2 training classes" in out
    status, out = run_check(capsys, tmp_path / "val.csv", tmp_path / "videos", "--train-ann", tmp_path / "no.csv")
    assert status == 1 and "--train-ann: annotation file" in out and "no.csv does not exist" in out
    folder = tmp_path / "clips"
    synthetic.write_video(write(folder / "part1/a.mp4", b""), np.zeros((20, 32, 32, 3), np.uint8))
    status, out = run_check(capsys, folder, folder, "--unlabelled", "video", "--min-frames", "8")
    assert status == 0 and "1 samples, no labels read" in out
    status, out = run_check(capsys, folder, folder, "--unlabelled", "image")
    assert status == 1 and "clips: no image files" in out


# ----------------------------------------------------------------------------------------------------------------------
# pixels: the video reader and the prepared format

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
        index = readers.frame_index(container, stream, path)
        found, decoded = readers.decode_wanted(container, stream, path, index, set(wanted))
    return found, decoded, index


def decode_from_keyframe_before(path, wanted):
    """The number of frames the sequential way decodes: from the keyframe before the first wanted frame on."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        index = readers.frame_index(container, stream, path)
        first = min(wanted)
        key = max(k for k in index.keyframes if k <= first)
        return readers._decode_run(container, stream, path, index, key, sorted(set(wanted)), {})


# --------------------------------------------------------------------------- the reader
def test_decode_plan():
    """One seek per run of frames that no keyframe separates; a keyframe between two wanted frames starts a run."""
    assert readers.decode_plan((0, 8, 16), {3, 5, 9, 20}) == [(0, [3, 5]), (8, [9]), (16, [20])]
    assert readers.decode_plan((0, 8, 16), [12, 9, 9]) == [(8, [9, 12])]
    assert readers.decode_plan((0,), range(0, 80, 8)) == [(0, list(range(0, 80, 8)))]  # long GOP: sequential
    assert readers.decode_plan(tuple(range(90)), [70, 3, 70]) == [(3, [3]), (70, [70])]  # all intra: a seek per frame
    assert readers.decode_plan((0, 40), [8, 39, 40, 41]) == [(0, [8, 39]), (40, [40, 41])]


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
    assert len(full) == T == readers.video_frame_count(path) and len({f.tobytes() for f in full}) == T
    with av.open(str(path)) as container:
        index = readers.frame_index(container, container.streams.video[0], path)
    expected_keys = {"long-gop": (0,), "short-gop": tuple(range(0, T, 8))}.get(layout, tuple(range(T)))
    assert index.keyframes == expected_keys
    if rate == "vfr":  # the file really is variable-rate: frame i is not at i / 30 s
        seconds = np.asarray(index.pts) * float(av.open(str(path)).streams.video[0].time_base)
        assert len(set(np.round(np.diff(seconds), 3))) >= 4
    for indices in picks(np.random.default_rng(1)):
        np.testing.assert_array_equal(readers.read_video(path, indices).numpy(), full[indices], err_msg=str(indices))


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
            assert len(readers.decode_plan(index.keyframes, wanted)) == len(set(wanted))
        if layout == "long-gop":
            assert decoded == sequential_way and len(readers.decode_plan(index.keyframes, wanted)) == 1
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
        index = readers.frame_index(container, stream, path)
        claims = readers.VideoIndex(index.pts, index.frame_of, tuple(range(T)))  # every frame "a keyframe"
        found, _ = readers.decode_wanted(container, stream, path, claims, {3, 13, 29, 30, 77})
        assert all(np.array_equal(found[i], full[i]) for i in (3, 13, 29, 30, 77))

        class Overshooting:  # seeks to the last keyframe whatever is asked, except the very start
            def seek(self, offset, **kw):
                container.seek(offset if offset == index.pts[0] else index.pts[index.keyframes[-1]], **kw)

            def demux(self, s):
                return container.demux(s)
        found, decoded = readers.decode_wanted(Overshooting(), stream, path, index, {13, 29, 50})
        assert all(np.array_equal(found[i], full[i]) for i in (13, 29, 50)) and decoded >= 50


def test_unreadable_and_out_of_range(tmp_path):
    path = write_video(tmp_path / "v.mp4", "intra", marked_frames(t=10))
    with pytest.raises(readers.MediaError, match=r"not all in \[0, 10\)"):
        readers.read_video(path, [9, 10])
    (tmp_path / "bad.mp4").write_bytes(b"\x00not a video" * 50)
    with pytest.raises(av.FFmpegError):
        readers.read_video(tmp_path / "bad.mp4", [0])


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
    records, classes = readers.read_annotations(out / "train.txt", out)
    assert classes == ["cat", "dog", "owl"]
    assert [(Path(r.path).relative_to(out).as_posix(), r.label) for r in records] == [("a.mp4", 0), ("sub/b.mp4", 2)]
    for source, prepared, size in ((sources / "a.mp4", out / "a.mp4", (64, 48)),
                                   (sources / "sub" / "b.mkv", out / "sub" / "b.mp4", (86, 64))):
        with av.open(str(source)) as a, av.open(str(prepared)) as b:
            assert len(b.streams.audio) == 0 and (b.streams.video[0].width, b.streams.video[0].height) == size
            src_index = readers.frame_index(a, a.streams.video[0], source)
            new_index = readers.frame_index(b, b.streams.video[0], prepared)
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
    decoded = readers.decoded_frames

    def interrupted(packets, stream, path, *rest):  # Ctrl-C in the middle of the second video
        for k, item in enumerate(decoded(packets, stream, path, *rest)):
            if "b.mkv" in str(path) and k == 40:
                raise KeyboardInterrupt
            yield item
    monkeypatch.setattr(readers, "decoded_frames", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(cfg)
    assert (out / "a.mp4").is_file() and not (out / "sub" / "b.mp4").exists()
    assert not list(out.rglob("*.part")) and not (out / "train.txt").exists()
    monkeypatch.setattr(readers, "decoded_frames", decoded)
    done = (out / "a.mp4").stat()
    assert len(prep.prepare(cfg)) == 2  # bad.mp4 and missing.mp4
    assert "1 converted, 1 already there" in capsys.readouterr().out
    assert (out / "a.mp4").stat().st_mtime_ns == done.st_mtime_ns and (out / "a.mp4").stat().st_ino == done.st_ino
    assert len(readers.read_video(out / "sub" / "b.mp4", [0, 89])) == 2
    assert len(prep.prepare(cfg)) == 2 and "0 converted, 2 already there" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="use another DST"):  # other settings never mix into a finished DST
        prep.prepare(dataclasses.replace(cfg, codec="h264"))


def _killed_run(cfg):
    """A prepare run whose process is killed (SIGKILL: no handler, no clean-up) in the middle of the second video."""
    decoded = readers.decoded_frames

    def killed(packets, stream, path, *rest):
        for k, item in enumerate(decoded(packets, stream, path, *rest)):
            if "b.mkv" in str(path) and k == 40:
                os.kill(os.getpid(), signal.SIGKILL)
            yield item
    readers.decoded_frames = killed
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
    assert len(readers.read_video(out / "sub" / "b.mp4", list(range(T)))) == T


def test_prepare_annotation_formats(syn, small_config, tmp_path):
    """Kinetics CSV, Diving-48 JSON (segments) and SSv2 JSON: read_annotations gives the same labels and classes for
    the prepared copy, and the same segments."""
    cases = [("k400_train_csv", "mp4_root", "train.csv"), ("diving48_train", "mp4_root", "Diving48_V2_train.json"),
             ("ssv2_val", "webm_root", "validation.txt")]
    for key, root, written in cases:
        out = tmp_path / key
        records, classes = readers.read_annotations(syn[key], syn[root])
        assert prep.prepare(prep.PrepareConfig(str(syn[key]), str(syn[root]), str(out), workers=1)) == []
        assert (out / written).is_file()
        again, again_classes = readers.read_annotations(out / written, out)
        assert again_classes == classes
        rename = lambda r: (Path(r.path).stem, r.label, r.start_frame, r.end_frame)  # noqa: E731
        assert sorted(map(rename, again)) == sorted(map(rename, records))
        assert readers.video_frame_count(again[0].path) == small_config.frames


def test_prepare_unlabelled_folder(sources, tmp_path):
    """A plain video folder (pretraining, no labels) becomes a path list that read_unlabelled reads; unreadable files
    are listed as usual."""
    out = tmp_path / "prepared"
    failed = prep.prepare(prep.PrepareConfig(str(sources), str(sources), str(out), workers=1, unlabelled=True))
    assert len(failed) == 1 and failed[0].startswith(str(sources / "bad.mp4"))
    records = readers.read_unlabelled(out / f"{sources.name}.txt", out, "video")
    assert [Path(r.path).relative_to(out).as_posix() for r in records] == ["a.mp4", "sub/b.mp4"]
    assert {r.label for r in records} == {readers.NO_LABEL}


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
