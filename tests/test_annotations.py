"""Tests for annotations.py's readers (every mistake named with its file and line; UCF101, HMDB51 and label-free
inputs), media.read_image on images of every bit depth and channel count, and `python -m tools.dataset check`
(every problem listed, never a traceback). Tiny files written per test; no video is decoded except in the check of
a label-free video folder."""
import json
import re
import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

import annotations
import media
import synthetic
from annotations import ImageRecord, VideoRecord
from tools import dataset as dataset_tools


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
    _, classes = quiet(annotations.read_k400_csv, train, tmp_path / "videos")
    assert classes == ["abseiling", "juggling", "zumba"]
    val = kinetics(tmp_path, "val.csv", [("zumba", "d")])  # alone it would be class 0 of 1
    records, val_classes = quiet(annotations.read_annotations, val, tmp_path / "videos", classes)
    assert [r.label for r in records] == [2] and val_classes == classes
    unseen = kinetics(tmp_path, "unseen.csv", [("zumba", "e"), ("ice fishing", "f"), ("ice fishing", "g")])
    with pytest.raises(ValueError, match=r"unseen.csv:3: class 'ice fishing' is not among the 3 training classes "
                                         r"\(2 rows of 1 such classes\)"):
        annotations.read_annotations(unseen, tmp_path / "videos", classes)


def test_integer_labels_are_checked_and_sparse_ones_warned(tmp_path):
    (tmp_path / "a.mp4").touch()
    negative = write(tmp_path / "neg.txt", "a.mp4 0\na.mp4 -1\n")
    with pytest.raises(ValueError, match=r"neg.txt:2: label -1 is negative"):
        annotations.read_annotations(negative, tmp_path)
    typo = write(tmp_path / "typo.txt", "a.mp4 0\na.mp4 1\na.mp4 99999\n")
    with pytest.warns(UserWarning, match=r"typo.txt: 3 distinct labels span 100000 classes \(99997 empty\)"):
        _, classes = annotations.read_annotations(typo, tmp_path)
    assert classes == [str(i) for i in range(100000)]  # what the labels say: the head would have 100000 outputs
    with pytest.raises(ValueError, match=r"typo.txt:3: label 99999 is outside the 2 classes of the training set"):
        annotations.read_annotations(typo, tmp_path, classes=["cat", "dog"])
    write(tmp_path / "typo_classes.txt", "cat\ndog\n")
    with pytest.raises(ValueError, match=r"typo.txt:3: label 99999 is outside the 2 classes of .*typo_classes.txt"):
        annotations.read_annotations(typo, tmp_path)
    dense = write(tmp_path / "dense.txt", "a.mp4 2\na.mp4 0\n")  # class 1 empty: one of three, no warning
    assert quiet(annotations.read_annotations, dense, tmp_path)[1] == ["0", "1", "2"]
    assert quiet(annotations.read_annotations, dense, tmp_path, ["x", "y", "z"])[1] == ["x", "y", "z"]
    write(tmp_path / "dense_classes.txt", "x\ny\nw\n")  # its own names, not the training set's
    with pytest.raises(ValueError, match=r"dense.txt: the classes of .*dense_classes.txt are not the training set's "
                                         r"\(class 2 is 'w' there, 'z' in training\)"):
        annotations.read_annotations(dense, tmp_path, ["x", "y", "z"])
    (tmp_path / "clip").mkdir()
    frames = write(tmp_path / "frames.txt", "clip 8 1\nclip 8 -3\n")
    with pytest.raises(ValueError, match=r"frames.txt:2: label -3 is negative"):
        annotations.read_annotations(frames, tmp_path)


def diving(tmp_path, entries, vocab=None):
    if vocab is not None:
        write(tmp_path / "Diving48_vocab.json", json.dumps(vocab))
    return write(tmp_path / "Diving48_V2_train.json", json.dumps(
        [{"vid_name": f"v{i}", "start_frame": 0, "end_frame": 9, **e} for i, e in enumerate(entries)]))


def test_diving48_labels(tmp_path):
    with pytest.raises(ValueError, match=r"Diving48_V2_train.json: entry 2: label -1 is negative"):
        annotations.read_annotations(diving(tmp_path, [{"label": 0}, {"label": -1}]), tmp_path)
    with pytest.raises(ValueError, match=r"entry 1: label 'x' is not an integer"):
        annotations.read_annotations(diving(tmp_path, [{"label": "x"}]), tmp_path)
    with pytest.raises(ValueError, match=r"entry 1: start_frame 1.5 is not an integer"):
        annotations.read_annotations(diving(tmp_path, [{"label": 0, "start_frame": 1.5}]), tmp_path)
    ann = diving(tmp_path, [{"label": 1}, {"label": 2}], vocab=[["back", "15som", "05Twis", "FREE"], ["a"]])
    with pytest.raises(ValueError, match=r"entry 2: label 2 is outside the 2 classes of .*Diving48_vocab.json"):
        annotations.read_annotations(ann, tmp_path)
    ann = diving(tmp_path, [{"label": 1}])
    records, classes = quiet(annotations.read_annotations, ann, tmp_path)
    assert records == [VideoRecord(str(tmp_path / "v0.mp4"), 1, 0, 9)] and classes == ["back_15som_05Twis_FREE", "a"]


def ssv2(tmp_path, entries, labels={"Pushing something": 0, "Pulling something": 1}):
    if labels is not None:
        write(tmp_path / "something-something-v2-labels.json", json.dumps(labels))
    return write(tmp_path / "something-something-v2-validation.json", json.dumps(entries))


def test_ssv2_labels_file_and_templates(tmp_path):
    ann = ssv2(tmp_path, [{"id": "7", "template": "Pulling [something]"}])
    assert quiet(annotations.read_annotations, ann, tmp_path) == (
        [VideoRecord(str(tmp_path / "7.webm"), 1)], ["Pushing something", "Pulling something"])
    with pytest.raises(ValueError, match=r"are not the training set's \(class 0 is 'Pushing something' there, 'a'"):
        annotations.read_annotations(ann, tmp_path, ["a", "b"])
    (tmp_path / "something-something-v2-labels.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"validation.json: an SSv2 annotation needs its labels file"):
        annotations.read_annotations(ann, tmp_path)
    ann = ssv2(tmp_path, [{"id": "7", "template": "Pulling [something]"}, {"id": "8", "template": "Poking it"}])
    with pytest.raises(ValueError, match=r"validation.json: entry 2: template 'Poking it' is not a class of .*labels"):
        annotations.read_annotations(ann, tmp_path)
    with pytest.raises(ValueError, match=r"entry 1: no 'template', so no label \(the SSv2 test split is unlabelled"):
        annotations.read_annotations(ssv2(tmp_path, [{"id": "9"}]), tmp_path)
    with pytest.raises(ValueError, match=r"labels.json: the indices must be 0..1, each once"):
        annotations.read_annotations(ssv2(tmp_path, [{"id": "9"}], {"a": 0, "b": 2}), tmp_path)
    with pytest.raises(ValueError, match=r"labels.json: expected \{\"class name\": index"):
        annotations.read_annotations(ssv2(tmp_path, [{"id": "9"}], ["a"]), tmp_path)
    write(tmp_path / "old-labels.json", "{}")
    with pytest.raises(ValueError, match=r"2 \*labels.json files beside it"):
        annotations.read_annotations(ann, tmp_path)


# --------------------------------------------------------------------------- text, JSON and malformed lines
def test_encoding_json_and_malformed_lines(tmp_path):
    (tmp_path / "a.mp4").touch()
    latin = write(tmp_path / "latin.txt", "a.mp4 0\na.mp4 1\ncaf\xe9.mp4 1\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin.txt:3: not UTF-8 text \(byte 0xe9\)"):
        annotations.read_annotations(latin, tmp_path)
    with pytest.raises(ValueError, match=r"bad.csv:2: not UTF-8"):
        annotations.read_annotations(write(tmp_path / "bad.csv", b"label,youtube_id\n\xff,x,1,2,x\n"), tmp_path)
    with pytest.raises(ValueError, match=r"bad.json:1: not UTF-8"):
        annotations.read_annotations(write(tmp_path / "bad.json", b'[{"id": "\xff"}]'), tmp_path)
    with pytest.raises(ValueError, match=r"broken.json:2:1: invalid JSON: Expecting value"):
        annotations.read_annotations(write(tmp_path / "broken.json", '[{"id": 1},\n]'), tmp_path)
    with pytest.raises(ValueError, match=r"empty.json: the file is empty"):
        annotations.read_annotations(write(tmp_path / "empty.json", "\n"), tmp_path)
    with pytest.raises(ValueError, match=r"dict.json: expected a JSON list of entries"):
        annotations.read_annotations(write(tmp_path / "dict.json", "{}"), tmp_path)
    with pytest.raises(ValueError, match=r"other.json: entry 1: expected an SSv2 entry"):
        annotations.read_annotations(write(tmp_path / "other.json", '[{"video": 1}]'), tmp_path)
    with pytest.raises(ValueError, match=r"none.json: the dataset is empty"):
        annotations.read_annotations(write(tmp_path / "none.json", "[]"), tmp_path)
    # a byte-order mark and Windows line ends are read
    bom = write(tmp_path / "bom.csv", "\ufefflabel,youtube_id,time_start,time_end,split\r\nrun,a,1,11,x\r\n")
    (tmp_path / "a_000001_000011.mp4").touch()
    assert quiet(annotations.read_annotations, bom, tmp_path)[1] == ["run"]
    assert quiet(annotations.read_annotations, write(tmp_path / "crlf.txt", "a.mp4 0\r\n"), tmp_path)[0] == [
        VideoRecord(str(tmp_path / "a.mp4"), 0)]
    cases = [("k.csv", "label,youtube_id,time_start,time_end,split\nrun,a,1,11,x\nrun,b,one,11,x\n",
              r"k.csv:3: expected label,youtube_id,time_start,time_end,split, got 'run,b,one,11,x'"),
             ("paths.txt", "a.mp4\n", r"paths.txt:1: expected 'path label', got 'a.mp4' \(a list of paths without "
                                      r"labels can only be pretrained on\)"),
             ("float.txt", "a.mp4 0\n\na.mp4 1.0\n", r"float.txt:3: expected 'path label', got 'a.mp4 1.0'$")]
    for name, text, message in cases:
        with pytest.raises(ValueError, match=message):
            annotations.read_annotations(write(tmp_path / name, text), tmp_path)
    with pytest.raises(FileNotFoundError, match="no dataset root given"):
        annotations.read_annotations(tmp_path / "crlf.txt", "")


# --------------------------------------------------------------------------- UCF101 and HMDB51 splits
def test_ucf101_splits(tmp_path):
    splits = tmp_path / "ucfTrainTestlist"
    write(splits / "classInd.txt", "1 ApplyEyeMakeup\r\n2 Archery\r\n3 YoYo\r\n")  # the official files end in \r\n
    write(splits / "trainlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\nYoYo/v_YoYo_g08_c01.avi 3\r\n")
    write(splits / "testlist01.txt", "Archery/v_Archery_g01_c01.avi\r\n")
    train, classes = quiet(annotations.read_annotations, splits / "trainlist01.txt", tmp_path)
    assert classes == ["ApplyEyeMakeup", "Archery", "YoYo"]
    assert train == [VideoRecord(str(tmp_path / "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"), 0),
                     VideoRecord(str(tmp_path / "YoYo/v_YoYo_g08_c01.avi"), 2)]
    test, _ = quiet(annotations.read_annotations, splits / "testlist01.txt", tmp_path, classes)
    assert test == [VideoRecord(str(tmp_path / "Archery/v_Archery_g01_c01.avi"), 1)]
    cases = [("testlist02.txt", "Archery/v_Archery_g01_c01.avi 1\n",
              r"testlist02.txt:1: index 1 disagrees with .*classInd.txt, where Archery is 2"),
             ("testlist03.txt", "Archery/a.avi\nBowling/b.avi\n",
              r"testlist03.txt:2: class folder 'Bowling' is not in .*classInd.txt"),
             ("trainlist02.txt", "v_Archery_g01_c01.avi 2\n",
              r"trainlist02.txt:1: expected 'Class/video.avi' or 'Class/video.avi index'")]
    for name, text, message in cases:
        with pytest.raises(ValueError, match=message):
            annotations.read_annotations(write(splits / name, text), tmp_path)
    write(splits / "classInd.txt", "1 ApplyEyeMakeup\n3 Archery\n")
    with pytest.raises(ValueError, match=r"classInd.txt:2: expected '2 ClassName' \(indices from 1, in order\)"):
        annotations.read_annotations(splits / "trainlist01.txt", tmp_path)


def test_hmdb51_splits(tmp_path):
    splits = tmp_path / "testTrainMulti_7030_splits"
    # climb_stairs sorts after climb by class name, before it by file name: classes are the sorted class names
    write(splits / "climb_stairs_test_split1.txt", "s1.avi 1 \ns2.avi 2 \ns3.avi 0 \n")
    write(splits / "climb_test_split1.txt", "c1.avi 2 \nc2.avi 1 \n")
    write(splits / "climb_test_split2.txt", "c1.avi 1 \n")
    train, classes = quiet(annotations.read_annotations, splits / "train1", tmp_path)
    assert classes == ["climb", "climb_stairs"]
    assert train == [VideoRecord(str(tmp_path / "climb/c2.avi"), 0),
                     VideoRecord(str(tmp_path / "climb_stairs/s1.avi"), 1)]
    test, _ = quiet(annotations.read_annotations, splits / "test1", tmp_path, classes)
    assert test == [VideoRecord(str(tmp_path / "climb/c1.avi"), 0),
                    VideoRecord(str(tmp_path / "climb_stairs/s2.avi"), 1)]
    assert quiet(annotations.read_annotations, splits / "train2", tmp_path)[1] == ["climb"]
    with pytest.raises(FileNotFoundError, match=r"annotation file .*train3 does not exist"):
        annotations.read_annotations(splits / "train3", tmp_path)
    with pytest.raises(ValueError, match=r"test2: the dataset is empty"):
        annotations.read_annotations(splits / "test2", tmp_path)
    write(splits / "climb_test_split2.txt", "c1.avi 1\nc2.avi 3\n")
    with pytest.raises(ValueError, match=r"climb_test_split2.txt:2: expected '<video>.avi 0\|1\|2' \(1 train, 2 test"):
        annotations.read_annotations(splits / "train2", tmp_path)


# --------------------------------------------------------------------------- image folders, label-free inputs
def test_image_folder_classes_empty_folders_and_depth(tmp_path):
    root = tmp_path / "train"
    for path in ("cat/b.png", "cat/sub/a.JPEG", "dog/x.jpg", "cat/.hidden/z.png", "cat/._mac.jpg"):
        write(root / path, b"")
    (root / "emu").mkdir()
    with pytest.warns(UserWarning, match=r"train: 1 of 3 class folders hold no images \(.jpg, .jpeg, .png\): emu"):
        records, classes = annotations.read_annotations(root, None)
    assert classes == ["cat", "dog", "emu"]
    assert records == [ImageRecord(str(root / "cat/b.png"), 0), ImageRecord(str(root / "cat/sub/a.JPEG"), 0),
                       ImageRecord(str(root / "dog/x.jpg"), 1)]
    write(tmp_path / "val/dog/y.png", b"")
    assert quiet(annotations.read_annotations, tmp_path / "val", None, classes)[0] == [
        ImageRecord(str(tmp_path / "val/dog/y.png"), 1)]
    write(tmp_path / "val/fox/y.png", b"")
    with pytest.raises(ValueError, match=r"val/fox: class folder 'fox' is not among the 3 training classes"):
        annotations.read_annotations(tmp_path / "val", None, classes)
    write(tmp_path / "flat/a.png", b"")
    with pytest.raises(ValueError, match=r"flat: no class folders .*no labels: it can only be pretrained"):
        annotations.read_annotations(tmp_path / "flat", None)


def test_unlabelled_inputs(tmp_path):
    videos = tmp_path / "videos"
    for path in ("b.mp4", "a/z.webm", "a/y.MKV", "notes.txt", "thumb.jpg", ".cache/c.mp4", "a b/c.avi"):
        write(videos / path, b"")
    found = annotations.read_unlabelled(videos, None, "video")
    assert [Path(r.path).relative_to(videos).as_posix() for r in found] == [
        "a/y.MKV", "a/z.webm", "a b/c.avi", "b.mp4"]  # sorted by path parts; hidden folders and other files left out
    assert all(type(r) is VideoRecord and r.label == annotations.NO_LABEL for r in found)
    assert annotations.read_unlabelled(videos, None, "image") == [ImageRecord(str(videos / "thumb.jpg"), -1)]
    with pytest.raises(ValueError, match=r"empty: no video files \(.mp4, .webm, .mkv, .avi, .mov\) in it"):
        annotations.read_unlabelled(write(tmp_path / "empty/x.txt", "").parent, None, "video")
    paths = write(tmp_path / "paths.txt", "b.mp4\na b/c.avi\n\n")
    assert annotations.read_unlabelled(paths, videos, "video") == [
        VideoRecord(str(videos / "b.mp4"), -1), VideoRecord(str(videos / "a b/c.avi"), -1)]
    with pytest.raises(ValueError, match=r"paths.txt:3: expected the path of a video \(.mp4, .*\), got 'thumb.jpg"):
        annotations.read_unlabelled(write(paths, "b.mp4\n\nthumb.jpg\n"), videos, "video")
    labelled = write(tmp_path / "labelled.txt", "b.mp4 3\nb.mp4 2\nb.mp4 1\nb.mp4 0\n")
    assert [r.label for r in annotations.read_unlabelled(labelled, videos, "video")] == [3, 2, 1, 0]
    with pytest.raises(ValueError, match=r"labelled.txt: the image input takes .jpg, .* files only, not .*b.mp4"):
        annotations.read_unlabelled(labelled, videos, "image")
    images = tmp_path / "images"  # no class folders: images directly and at any depth
    for path in ("x.png", "2024/y.jpg", "2024/deep/z.JPEG"):
        write(images / path, b"")
    found = annotations.read_unlabelled(images, None, "image")  # sorted by path parts: folder, then file
    assert [Path(r.path).relative_to(images).as_posix() for r in found] == ["2024/deep/z.JPEG", "2024/y.jpg", "x.png"]
    with pytest.raises(ValueError, match="kind must be 'video' or 'image'"):
        annotations.read_unlabelled(images, None, "images")


# --------------------------------------------------------------------------- images of every kind (media.read_image)
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
    ours = media.read_image(path).permute(1, 2, 0).numpy()  # (H, W, 3)
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
        media.read_image(tmp_path / "nothing.png")
    with pytest.raises(media.MediaError, match=r"junk.png: not an image OpenCV can decode"):
        media.read_image(write(tmp_path / "junk.png", b"\x89PNG not really"))
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8)
    cv2.imwrite(str(tmp_path / "grey.jpg"), grey)
    ours = media.read_image(tmp_path / "grey.jpg")
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
