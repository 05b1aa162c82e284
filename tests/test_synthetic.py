"""Tests for synthetic.py: deterministic video files, the temporal-order class pairs, the small VQ tokenizer, and
their commands (`python -m tools.dataset synthetic`, `small-vq`)."""
import json

import numpy as np
import pytest
import torch

import readers
import synthetic
import tokenizer as tok
from tools import dataset as dataset_tools


def sequential(path):
    """Every frame of `path`, (T, H, W, 3) uint8. `syn`, the small synthetic set's paths, comes from conftest.py."""
    return readers.read_frames(path, np.arange)


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_write_video_is_deterministic(tmp_path, suffix):
    """The same frames encode to the same bytes, so the synthetic set and every result on it are reproducible. This
    clip of the set came out of x264 (one thread, macroblock-tree on) as 2 different files in 10 encodes."""
    frames = synthetic.render_clip("fall reversed", [0, 2, False, 9], 64, 128, 160)   # (T, H, W, 3) uint8
    blobs = set()
    for i in range(8):
        synthetic.write_video(tmp_path / f"v{i}{suffix}", frames)
        blobs.add((tmp_path / f"v{i}{suffix}").read_bytes())
    assert len(blobs) == 1
    assert len(sequential(tmp_path / f"v0{suffix}")) == 64


def test_class_pair_separable_only_by_temporal_order(syn):
    np.testing.assert_array_equal(synthetic.render_clip("fall reversed", 7, 16, 48, 64),
                                  synthetic.render_clip("fall", 7, 16, 48, 64)[::-1])
    records, classes = readers.read_k400_csv(syn["k400_train_csv"], syn["mp4_root"])
    for forward, backward in [("fall", "fall reversed"), ("slide right", "slide left")]:
        a = [r.path for r in records if classes[r.label] == forward]
        b = [r.path for r in records if classes[r.label] == backward]
        assert len(a) == len(b) == 2
        for pa, pb in zip(a, b):  # the i-th videos hold the same frames, in opposite order
            fa, fb = sequential(pa).astype(float), sequential(pb).astype(float)  # (T, H, W, 3)
            dist = np.abs(fa[:, None] - fb[None]).mean(axis=(2, 3, 4))  # (T, T) frame-to-frame distances
            t = len(fa)
            np.testing.assert_allclose(dist.argmin(1), t - 1 - np.arange(t), atol=1)  # frame i of a = frame T-1-i of b
            assert np.diag(dist[:, ::-1]).max() < 3.0  # equal up to compression
            assert dist[0, 0] > 1.5 * dist[0, -1]  # and the order differs: first frames far apart
    kinds = dict(zip(classes, synthetic.class_kinds(syn["classes"].parent)))
    assert kinds["fall"] == kinds["slide left"] == "motion" and kinds["red disk"] == "appearance"


def test_command_writes_the_set(tmp_path, capsys):
    out = tmp_path / "set"
    dataset_tools.main(["synthetic", "--out", str(out), "--train-per-class", "1", "--val-per-class", "1",
                        "--frames", "8", "--width", "32", "--height", "32", "--images-per-class", "1"])
    assert str(out) in capsys.readouterr().out
    classes = json.loads((out / "classes.json").read_text())
    assert len(classes) == len(synthetic.SYNTHETIC_CLASSES)
    assert len(list((out / "mp4").glob("*.mp4"))) == len(list((out / "webm").glob("*.webm"))) == 2 * len(classes)
    assert readers.video_frame_count(next((out / "webm").glob("*.webm"))) == 8
    with pytest.raises(SystemExit, match="--out"):
        dataset_tools.main(["synthetic"])


def test_held_out_test_split(tmp_path, syn):
    """test_per_class > 0 adds a test split of new videos (their own seeds and names) in every annotation format;
    the default (0) writes none, and images_per_class=0 makes a set of videos only."""
    assert not syn["k400_test_csv"].exists() and not syn["ssv2_test"].exists()
    cfg = synthetic.SyntheticConfig(train_per_class=1, val_per_class=1, test_per_class=2, frames=8, width=32,
                                    height=32, images_per_class=0)
    paths = synthetic.synthetic_paths(synthetic.make_synthetic(tmp_path / "set", cfg))
    n = len(synthetic.SYNTHETIC_CLASSES)
    assert len(list(paths["mp4_root"].glob("*.mp4"))) == len(list(paths["webm_root"].glob("*.webm"))) == 4 * n
    test, classes = readers.read_k400_csv(paths["k400_test_csv"], paths["mp4_root"])
    train, _ = readers.read_k400_csv(paths["k400_train_csv"], paths["mp4_root"], classes)
    val, _ = readers.read_k400_csv(paths["k400_val_csv"], paths["mp4_root"], classes)
    assert len(test) == 2 * n and sorted({r.label for r in test}) == list(range(n))
    assert not {r.path for r in test} & {r.path for r in train + val}
    for record in train:  # a test video is not a copy of the training video of its class
        first = [r for r in test if r.label == record.label][0]
        assert np.abs(sequential(first.path)[0].astype(float) - sequential(record.path)[0]).mean() > 1.0
    assert len(json.loads(paths["ssv2_test"].read_text())) == len(json.loads(paths["diving48_heldout"].read_text())) \
        == 2 * n
    assert len(readers.read_annotations(paths["ssv2_test"], paths["webm_root"])[0]) == 2 * n
    assert not (tmp_path / "set" / "images").exists()


def test_small_vq_command_trains_the_tokenizer_into_out_dir(tmp_path, syn, monkeypatch, capsys):
    """The small VQ at its defaults takes a minute: the test shrinks it (tokenizer.VQConfig, as synthetic.small_vq
    reads it)."""
    vq_config = tok.VQConfig
    tiny = dict(hid=8, code_dim=8, vocab_size=16, num_frames=48, val_frames=16, steps=3, batch_size=16)
    monkeypatch.setattr(tok, "VQConfig", lambda **fields: vq_config(**{**tiny, **fields}))
    dataset_tools.main(["small-vq", "--root", str(syn["mp4_root"]), "--img-size", "96",
                        "--out-dir", str(tmp_path)])
    path = tmp_path / "vq_tokenizer_48.pt"
    vq = tok.load_tokenizer(path, "cpu")
    assert vq.vocab_size == 16 and f"--tokenizer {path}" in capsys.readouterr().out
    ids = vq.encode(torch.zeros(1, 3, 48, 48, dtype=torch.uint8))  # a 48-px tokenizer view of a 96-px crop
    assert ids.shape == (1, 6, 6)
    for argv, message in ((["--root", str(tmp_path / "none")], "does not exist"),
                          (["--root", str(tmp_path), "--img-size", "100"], "--img-size 100: must be a multiple of 32"),
                          (["--root", str(tmp_path / "set")], "no videos or images found")):
        (tmp_path / "set").mkdir(exist_ok=True)
        with pytest.raises(SystemExit, match=message):
            dataset_tools.main(["small-vq", "--out-dir", str(tmp_path / "other"), *argv])
