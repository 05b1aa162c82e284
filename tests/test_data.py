"""Tests for data.py: readers, frame-exact decoding, sampling, pipelines, bad input, determinism, synthetic set."""
import json
import shutil
import warnings

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.io import write_png

import data
import synthetic

SMALL = synthetic.SyntheticConfig(train_per_class=2, val_per_class=1, frames=24, width=64, height=48, images_per_class=3)
NUM_CLASSES = len(synthetic.SYNTHETIC_CLASSES)


@pytest.fixture(scope="session")
def syn(tmp_path_factory):
    root = synthetic.synthetic_root(tmp_path_factory.mktemp("cache") / "synthetic", SMALL)
    return synthetic.synthetic_paths(root)


def sequential(path):
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])  # (T, H, W, 3)


def marked_video(path, t=90, h=48, w=64, seed=0):
    """Frames of noise, each different, so any off-by-one frame shows."""
    frames = np.random.default_rng(seed).integers(0, 256, size=(t, h // 8, w // 8, 3), dtype=np.uint8)
    frames = frames.repeat(8, 1).repeat(8, 2)  # (T, H, W, 3) blocks survive compression as distinct frames
    data.write_video(path, frames, gop=12)
    return path


# --------------------------------------------------------------------------- 1. readers and counts
def test_readers_labels_and_counts(syn):
    kinds = json.loads(syn["classes"].read_text())
    names = [c["name"] for c in kinds]
    assert names == sorted(names) and len(names) == NUM_CLASSES
    csv_records, csv_classes = data.read_k400_csv(syn["k400_train_csv"], syn["mp4_root"])
    assert csv_classes == names and len(csv_records) == 2 * NUM_CLASSES
    by_path = {r.path: r.label for r in csv_records}
    assert sorted(by_path.values()) == sorted(list(range(NUM_CLASSES)) * 2)
    list_records, _ = data.read_list(syn["k400_train_list"], syn["mp4_root"])
    assert {r.path: r.label for r in list_records} == by_path
    val_records, _ = data.read_k400_csv(syn["k400_val_csv"], syn["mp4_root"], classes=csv_classes)
    assert len(val_records) == NUM_CLASSES and not set(r.path for r in val_records) & set(by_path)
    dv, dv_classes = data.read_diving48(syn["diving48_train"], syn["mp4_root"])
    assert {r.path: r.label for r in dv} == by_path and all(r.end_frame == SMALL.frames for r in dv)
    assert len(dv_classes) == NUM_CLASSES
    ss, ss_classes = data.read_ssv2(syn["ssv2_train"], syn["ssv2_labels"], syn["webm_root"])
    assert ss_classes == [c["template"].replace("[", "").replace("]", "") for c in kinds] and len(ss) == 2 * NUM_CLASSES
    ssv, _ = data.read_ssv2(syn["ssv2_val"], syn["ssv2_labels"], syn["webm_root"])
    assert sorted(r.label for r in ssv) == list(range(NUM_CLASSES))
    images, image_classes = data.read_image_folder(syn["images_train"])
    assert image_classes == sorted(n.replace(" ", "_") for n, k, _ in synthetic.SYNTHETIC_CLASSES if k == "appearance")
    assert len(images) == 3 * len(image_classes)
    image_list, _ = data.read_list(syn["images_train_list"], syn["images_root"])
    assert [(r.path, r.label) for r in image_list] == [(r.path, r.label) for r in images]
    assert all(isinstance(r, data.ImageRecord) for r in image_list)
    val_images, _ = data.read_annotations(syn["images_val"], None)
    assert data.read_image(val_images[0].path).shape == (3, SMALL.height, SMALL.width)  # PNG
    assert data.read_image(images[0].path).shape == (3, SMALL.height, SMALL.width)  # JPEG
    auto, _ = data.read_annotations(syn["ssv2_val"], syn["webm_root"])
    assert auto == ssv
    assert synthetic.class_kinds(syn["classes"].parent) == [c["kind"] for c in kinds]
    for record in (csv_records[0], ss[0], ss[-1]):  # every format decodes, count = sequential decode
        assert data.video_frame_count(record.path) == len(sequential(record.path)) == SMALL.frames


# --------------------------------------------------------------------------- 2. frame-exact seeks
@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_read_video_is_frame_exact(tmp_path, suffix):
    path = marked_video(tmp_path / f"v{suffix}")
    full = sequential(path)
    assert len(full) == 90 == data.video_frame_count(path)
    assert len({f.tobytes() for f in full}) == 90
    for indices in ([0], [89], [88, 89], [45], [70, 3, 70], list(range(60, 76, 3)), [13, 12, 11], [24, 36, 48, 60]):
        got = data.read_video(path, indices).numpy()
        np.testing.assert_array_equal(got, full[indices])
    with av.open(str(path)) as container:  # the seek path itself finds the frames (no sequential fallback)
        found = data._decode(container, container.streams.video[0], {77, 80})
    np.testing.assert_array_equal(found[77], full[77])
    with pytest.raises(data.MediaError, match="past the decodable end"):
        data.read_video(path, [89, 90])


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_write_video_is_deterministic(tmp_path, suffix):
    """The same frames encode to the same bytes, so the synthetic set and every result on it are reproducible. This
    clip of the set came out of x264 (one thread, macroblock-tree on) as 2 different files in 10 encodes."""
    frames = synthetic.render_clip("fall reversed", [0, 2, False, 9], 64, 128, 160)   # (T, H, W, 3) uint8
    blobs = set()
    for i in range(8):
        data.write_video(tmp_path / f"v{i}{suffix}", frames)
        blobs.add((tmp_path / f"v{i}{suffix}").read_bytes())
    assert len(blobs) == 1


# --------------------------------------------------------------------------- 3. sampling properties
@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 400), clip_len=st.integers(1, 32), interval=st.integers(1, 8), clips=st.integers(1, 5),
       train=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_dense_indices(n, clip_len, interval, clips, train, seed):
    idx = data.dense_indices(n, clip_len, interval, clips, train, np.random.default_rng(seed))
    assert idx.shape == (clips, clip_len) and idx.min() >= 0 and idx.max() < n
    span = clip_len * interval
    unwrapped = idx[:, :1] + np.arange(clip_len) * interval  # consecutive frames are `interval` apart, modulo n
    np.testing.assert_array_equal(idx, np.mod(unwrapped, n))
    if n >= span and (not train or n - span + 1 >= clips or n > max(clips, span)):  # long enough: no looping
        assert (np.diff(idx, axis=1) == interval).all() and (np.diff(idx[:, 0]) >= 0).all()
    elif clips == 1:  # short video: starts at frame 0 and loops (mmaction SampleFrames 'loop')
        np.testing.assert_array_equal(idx[0], np.arange(clip_len) * interval % n)
    if not train:  # test clips: deterministic, evenly spaced centres
        again = data.dense_indices(n, clip_len, interval, clips, False, np.random.default_rng(seed + 1))
        np.testing.assert_array_equal(idx, again)
        if n >= span:
            step = (n - span + 1) / clips
            np.testing.assert_array_equal(idx[:, 0], (step * (np.arange(clips) + 0.5)).astype(int))


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 400), clip_len=st.integers(1, 32), train=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_uniform_indices(n, clip_len, train, seed):
    idx = data.uniform_indices(n, clip_len, train, np.random.default_rng(seed))
    assert idx.shape == (clip_len,) and idx.min() >= 0 and idx.max() < n
    assert (np.diff(idx) >= 0).all()  # one frame per consecutive segment
    bounds = np.round((n - 1) / clip_len * np.arange(clip_len + 1))
    assert ((idx >= bounds[:-1]) & (idx <= bounds[1:])).all()
    if not train:
        np.testing.assert_array_equal(idx, (bounds[:-1] + bounds[1:]).astype(int) // 2)
    if n >= 2 * clip_len:  # enough frames: each segment contributes a distinct frame
        assert len(set(idx.tolist())) >= clip_len // 2


# --------------------------------------------------------------------------- 4. tokenizer view = student view
def denormalise(x):
    return x * data.STD.view(3, *[1] * (x.dim() - 1)) + data.MEAN.view(3, *[1] * (x.dim() - 1))


def test_tokenizer_view_matches_student_view(tmp_path):
    t, h, w = 8, 48, 64
    frames = np.zeros((t, h, w, 3), dtype=np.uint8)
    frames[..., 0] = np.linspace(0, 255, w).astype(np.uint8)  # red grows left -> right
    frames[:, 4:20, 4:20] = 255  # a white mark at the top left of every frame
    path = tmp_path / "mark.mp4"
    data.write_video(path, frames)
    ds = data.PretrainVideoDataset([data.VideoRecord(str(path), 0)], clip_len=4, frame_interval=2, crop=32,
                                   rescale=(48, 56), patch_t=2, seed=1)
    flips = 0
    for epoch in range(12):
        ds.set_epoch(epoch)
        item = ds[0]
        video, tok = denormalise(item["video"]), item["video_tok"].float()  # (3, T, H, W) both
        assert tok.shape == video.shape == (3, 4, 32, 32) and item["video_mask"].shape == (2, 2, 2)
        assert (video - tok).abs().max() < 0.01  # same crop, flip, pixels
        half_v, half_t = F.avg_pool2d(video[:, 0], 2), F.avg_pool2d(tok[:, 0], 2)  # tokenizer resolution
        assert (half_v - half_t).abs().max() < 0.01
        red = tok[0, 0].mean(0)  # (W,) column profile of the red ramp
        flipped = bool(red[0] > red[-1])
        flips += flipped
        white = (tok.min(0).values[0] > 200).nonzero()  # mark pixels in frame 0
        if len(white):  # the mark sits on the side the flip puts it
            assert (white[:, 1].float().mean() > 16) == flipped
    assert 0 < flips < 12

    img = tmp_path / "img.png"
    write_png(torch.from_numpy(frames[0]).permute(2, 0, 1).contiguous(), str(img))
    ids = data.PretrainImageDataset([data.ImageRecord(str(img), 0)], crop=32, rescale=(48, 56), seed=0)
    item = ids[0]
    assert (denormalise(item["image"]) - item["image_tok"].float()).abs().max() < 0.01  # jitter shared too
    assert item["image_mask"].shape == (2, 2)


# --------------------------------------------------------------------------- 5. bad input
def test_corrupt_and_missing_files_are_replaced(syn, tmp_path):
    records, _ = data.read_k400_csv(syn["k400_train_csv"], syn["mp4_root"])
    good = records[:6]
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00not a video" * 100)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(open(good[0].path, "rb").read()[:3000])
    missing = str(tmp_path / "missing.mp4")
    bad = [data.VideoRecord(str(corrupt), 0), data.VideoRecord(str(truncated), 0), data.VideoRecord(missing, 0)]
    ds = data.PretrainVideoDataset(good + bad, clip_len=4, frame_interval=2, crop=32, rescale=(48, 56))
    loader = data.make_loader(ds, batch_size=3, train=True, num_workers=0, seed=0, distributed=False)
    with pytest.warns(UserWarning) as caught:
        batches = list(loader)
    assert len(batches) == 3  # the epoch completes: 9 samples / 3
    messages = " ".join(str(w.message) for w in caught)
    for path in (corrupt, truncated, missing):
        assert str(path) in messages
    assert ds.num_bad >= 3
    all_bad = data.PretrainVideoDataset(bad, clip_len=4, frame_interval=2, crop=32, rescale=(48, 56))
    with warnings.catch_warnings(), pytest.raises(RuntimeError, match="unreadable samples in a row"):
        warnings.simplefilter("ignore")
        all_bad[0]
    test_ds = data.FinetuneVideoDataset(bad[:1] + good[:1], train=False, clip_len=4, frame_interval=2, crop=32,
                                        short_side=32, num_clips=2)
    with pytest.warns(UserWarning, match="corrupt.mp4"):
        blank = test_ds[0]
    assert blank["video_index"] == 0 and blank["video"].abs().sum() == 0 and test_ds[2]["video_index"] == 1


def test_malformed_empty_and_missing_root(tmp_path, syn):
    bad_list = tmp_path / "list.txt"
    bad_list.write_text("a.mp4 1\nb.mp4 2\nc.mp4 x\n")
    with pytest.raises(ValueError, match=r"list.txt:3"):
        data.read_list(bad_list, tmp_path)
    bad_csv = tmp_path / "k.csv"
    bad_csv.write_text("label,youtube_id,time_start,time_end,split\nabseiling,abc,1,11,train\nabseiling,abc\n")
    with pytest.raises(ValueError, match=r"k.csv:3"):
        data.read_k400_csv(bad_csv, tmp_path)
    bad_json = tmp_path / "d.json"
    bad_json.write_text(json.dumps([{"vid_name": "a", "label": 1, "start_frame": 0, "end_frame": 9}, {"vid_name": "b"}]))
    with pytest.raises(ValueError, match=r"d.json: entry 2"):
        data.read_diving48(bad_json, tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(ValueError, match=r"empty.txt: the dataset is empty"):
        data.read_list(empty, tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        data.read_list(syn["k400_train_list"], tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no_such.csv"):
        data.read_annotations(tmp_path / "no_such.csv", tmp_path)
    with pytest.warns(UserWarning, match="26 of 26 videos not found"), pytest.raises(ValueError, match="empty"):
        data.read_k400_csv(syn["k400_train_csv"], tmp_path)
    with pytest.raises(ValueError, match="short side 100 is smaller than the crop 128"):
        data.PretrainVideoDataset([data.VideoRecord("a.mp4", 0)], crop=128, rescale=(100, 140))


def test_check_command(syn, tmp_path, capsys):
    root = tmp_path / "videos"
    shutil.copytree(syn["mp4_root"], root)
    records, _ = data.read_list(syn["k400_val_list"], root)
    (root / records[0].path.split("/")[-1]).write_bytes(b"garbage")
    (root / records[1].path.split("/")[-1]).unlink()
    with pytest.raises(SystemExit) as exit_info:
        data.main(["check", str(syn["k400_val_list"]), str(root), "--min-frames", "30"])
    assert exit_info.value.code == 1
    out = capsys.readouterr()
    assert f"{NUM_CLASSES} samples" in out.out and "missing: 1" in out.out and "unreadable: 1" in out.out
    assert f"too short: {NUM_CLASSES - 2}" in out.out and records[1].path.split("/")[-1] in out.out
    assert f"{NUM_CLASSES}/{NUM_CLASSES}" in out.err  # progress line
    assert data.check(data.CheckConfig(str(syn["ssv2_val"]), str(syn["webm_root"]), min_frames=8)) == 0


# --------------------------------------------------------------------------- 6. determinism
def test_same_samples_with_0_and_2_workers(syn):
    records, _ = data.read_k400_csv(syn["k400_train_csv"], syn["mp4_root"])
    ds = data.PretrainVideoDataset(records[:8], clip_len=4, frame_interval=2, crop=32, rescale=(48, 56), seed=5)
    runs = []
    for workers in (0, 2):
        loader = data.make_loader(ds, batch_size=2, train=True, num_workers=workers, seed=3, distributed=False, epoch=1)
        runs.append(list(loader))
    assert len(runs[0]) == len(runs[1]) == 4
    for a, b in zip(*runs):
        for key in ("video", "video_tok", "video_mask"):
            assert torch.equal(a[key], b[key])
    ds.set_epoch(1)
    first = ds[0]
    ds.set_epoch(2)
    assert not torch.equal(first["video"], ds[0]["video"]) or not torch.equal(first["video_mask"], ds[0]["video_mask"])


def test_finetune_augmentation_is_identical_on_every_frame(monkeypatch):
    """RandAugment, the crop and random erasing draw once per clip: identical input frames stay identical. The
    decoder is replaced by exact frames, because codec noise (a few grey levels between the frames of a static
    H.264 clip) can be amplified by ops such as solarize or equalize and would hide what is tested."""
    frame = torch.from_numpy(np.random.default_rng(0).integers(0, 256, size=(6, 8, 3), dtype=np.uint8))
    frame = frame.repeat_interleave(8, 0).repeat_interleave(8, 1)  # (48, 64, 3) blocky texture
    monkeypatch.setattr(data, "video_frame_count", lambda path: 12)
    monkeypatch.setattr(data, "read_video", lambda path, indices: frame[None].repeat(len(indices), 1, 1, 1))
    ds = data.FinetuneVideoDataset([data.VideoRecord("static.mp4", 3)], train=True, sampling="uniform", clip_len=4,
                                   crop=32, short_side=40, flip=False, randaugment=(4, 7), erase_prob=1.0, seed=0)
    for epoch in range(4):
        ds.set_epoch(epoch)
        video = ds[0]["video"]  # (3, T, H, W)
        assert video.shape == (3, 4, 32, 32) and ds[0]["label"] == 3
        for t in range(1, 4):
            assert torch.equal(video[:, t], video[:, 0])  # same RandAugment ops and erased box per frame
        assert torch.equal(video, ds[0]["video"])  # and reproducible from (seed, epoch, index)


def test_finetune_views_and_segments(syn, monkeypatch):
    records, _ = data.read_diving48(syn["diving48_test"], syn["mp4_root"])
    records = [data.VideoRecord(r.path, r.label, 4, 12) for r in records[:3]]
    seen = []
    read = data.read_video
    monkeypatch.setattr(data, "read_video", lambda path, idx: seen.append(np.asarray(idx)) or read(path, idx))
    ds = data.FinetuneVideoDataset(records, train=False, clip_len=4, frame_interval=1, num_clips=2, num_crops=3,
                                   crop=32, short_side=32)
    assert len(ds) == 3 * 2 * 3
    items = [ds[i] for i in range(6)]  # the views of video 0
    assert [it["video_index"] for it in items] == [0] * 6 and ds[6]["video_index"] == 1
    assert all(((idx >= 4) & (idx < 12)).all() for idx in seen)  # start_frame / end_frame respected
    assert not torch.equal(items[0]["video"], items[2]["video"])  # left vs right crop differ
    assert not torch.equal(items[0]["video"], items[3]["video"])  # clip 0 vs clip 1 differ
    loader = data.make_loader(ds, batch_size=4, train=False, num_workers=0, seed=0, distributed=False)
    assert sum(len(b["video_index"]) for b in loader) == len(ds)  # eval keeps every view


# --------------------------------------------------------------------------- cycled image stream, load_frames
def test_cycled_image_stream_resumes_exactly(syn):
    images, _ = data.read_image_folder(syn["images_train"])
    ids = data.PretrainImageDataset(images[:6], crop=32, rescale=(48, 56))
    pos = {"epoch": 0, "batch": 0}
    stream = data.cycled_batches(ids, 4, 0, 0, False, pos)  # 1 batch of 4 per pass over 6 images (drop_last)
    first = [next(stream) for _ in range(3)]
    assert pos == {"epoch": 2, "batch": 1}  # paused right after handing out epoch 2's only batch
    assert not torch.equal(first[0]["image"], first[1]["image"])  # a new shuffle and new augmentations each pass
    saved = dict(pos)
    after = [next(stream) for _ in range(2)]
    resumed = data.cycled_batches(ids, 4, 0, 0, False, saved)  # a checkpoint's copy of the position
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(after, [next(resumed) for _ in range(2)]))


def test_load_frames(syn):
    frames = data.load_frames(syn["classes"].parent, 10, 32, seed=0)
    assert frames.shape == (10, 3, 32, 32) and frames.dtype == torch.uint8
    assert torch.equal(frames, data.load_frames(syn["classes"].parent, 10, 32, seed=0))


# --------------------------------------------------------------------------- 7. temporal-order class pair
def test_class_pair_separable_only_by_temporal_order(syn):
    np.testing.assert_array_equal(synthetic.render_clip("fall reversed", 7, 16, 48, 64),
                                  synthetic.render_clip("fall", 7, 16, 48, 64)[::-1])
    records, classes = data.read_k400_csv(syn["k400_train_csv"], syn["mp4_root"])
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
