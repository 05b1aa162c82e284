"""Tests for data.py and the two files it reads through, readers.py (readers, the check and extract-frames
tools) and readers.py (frame-exact decoding at constant and variable frame rate, frame folders): sampling, the official
transforms bit for bit (OpenCV tokenizer view, Normalize, ColorJitter, RandomErasing), pipelines, bad input,
determinism. They share the synthetic set and the photo videos, and most check a reader through the samples of a
pipeline, so they stay in one file."""
import hashlib
import json
import math
import os
import shutil
import warnings
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import readers
import data
import synthetic
from tools import dataset as dataset_tools

PHOTOS = sorted((Path(__file__).parent / "data").glob("*.png"))  # real photographs (scikit-image's sample images)
assert len(PHOTOS) == 3, "tests/data/{astronaut,chelsea,coffee}.png are missing"  # never test on nothing

NUM_CLASSES = len(synthetic.SYNTHETIC_CLASSES)
# `syn` (the small synthetic set's paths) and `small_config` (its SyntheticConfig) come from conftest.py.


def sequential(path):
    """Every frame, decoded from the start in the decoder's (display) order: the definition of frame i."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])  # (T, H, W, 3)


def marked_frames(t=90, h=48, w=64, seed=0):
    """Frames of noise, each different, so any off-by-one frame shows."""
    frames = np.random.default_rng(seed).integers(0, 256, size=(t, h // 8, w // 8, 3), dtype=np.uint8)
    return frames.repeat(8, 1).repeat(8, 2)  # (T, H, W, 3) blocks survive compression as distinct frames


def marked_video(path, t=90):
    synthetic.write_video(path, marked_frames(t), gop=12)
    return path


def variable_rate_video(path, t=90):
    """H.264 with B-frames at 30 fps with dropped frames (gaps of 2 and 3 frame times after frames 10, 40 and 41),
    as a capture that skipped frames: a variable-frame-rate file."""
    gaps = np.full(t, 100 / 3)
    gaps[[10, 40, 41]] = [200 / 3, 100, 200 / 3]
    times = np.round(np.concatenate([[0], np.cumsum(gaps)[:-1]]))  # (T,) ms
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30, options={"threads": "1"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        stream.codec_context.gop_size = 12
        for ms, array in zip(times, marked_frames(t)):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts, frame.time_base = int(ms), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def remux(src, dst):
    """The same packets in another container (Matroska: millisecond timestamps, no frame count in the header)."""
    with av.open(str(src)) as source, av.open(str(dst), "w") as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                target.mux(packet)
    return dst


# --------------------------------------------------------------------------- 1. readers and counts (readers.py)
def test_readers_labels_and_counts(syn, small_config):
    kinds = json.loads(syn["classes"].read_text())
    names = [c["name"] for c in kinds]
    assert names == sorted(names) and len(names) == NUM_CLASSES
    csv_records, csv_classes = readers.read_k400_csv(syn["k400_train_csv"], syn["mp4_root"])
    assert csv_classes == names and len(csv_records) == 2 * NUM_CLASSES
    by_path = {r.path: r.label for r in csv_records}
    assert sorted(by_path.values()) == sorted(list(range(NUM_CLASSES)) * 2)
    list_records, _ = readers.read_list(syn["k400_train_list"], syn["mp4_root"])
    assert {r.path: r.label for r in list_records} == by_path
    val_records, _ = readers.read_k400_csv(syn["k400_val_csv"], syn["mp4_root"], classes=csv_classes)
    assert len(val_records) == NUM_CLASSES and not set(r.path for r in val_records) & set(by_path)
    dv, dv_classes = readers.read_diving48(syn["diving48_train"], syn["mp4_root"])
    assert {r.path: r.label for r in dv} == by_path and all(r.end_frame == small_config.frames for r in dv)
    assert len(dv_classes) == NUM_CLASSES
    ss, ss_classes = readers.read_ssv2(syn["ssv2_train"], syn["ssv2_labels"], syn["webm_root"])
    assert ss_classes == [c["template"].replace("[", "").replace("]", "") for c in kinds] and len(ss) == 2 * NUM_CLASSES
    ssv, _ = readers.read_ssv2(syn["ssv2_val"], syn["ssv2_labels"], syn["webm_root"])
    assert sorted(r.label for r in ssv) == list(range(NUM_CLASSES))
    images, image_classes = readers.read_image_folder(syn["images_train"])
    assert image_classes == sorted(n.replace(" ", "_") for n, k, _ in synthetic.SYNTHETIC_CLASSES if k == "appearance")
    assert len(images) == 3 * len(image_classes)
    image_list, _ = readers.read_list(syn["images_train_list"], syn["images_root"])
    assert [(r.path, r.label) for r in image_list] == [(r.path, r.label) for r in images]
    assert all(isinstance(r, readers.ImageRecord) for r in image_list)
    val_images, _ = readers.read_annotations(syn["images_val"], None)
    assert readers.read_image(val_images[0].path).shape == (3, small_config.height, small_config.width)  # PNG
    assert readers.read_image(images[0].path).shape == (3, small_config.height, small_config.width)  # JPEG
    auto, _ = readers.read_annotations(syn["ssv2_val"], syn["webm_root"])
    assert auto == ssv
    assert synthetic.class_kinds(syn["classes"].parent) == [c["kind"] for c in kinds]
    for record in (csv_records[0], ss[0], ss[-1]):  # every format decodes, count = sequential decode
        assert readers.video_frame_count(record.path) == len(sequential(record.path)) == small_config.frames


# --------------------------------------------------------------------------- 2. frame-exact seeks (readers.py)
@pytest.mark.parametrize("kind", ["mp4", "webm", "mkv", "vfr.mp4", "vfr.mkv"])
def test_read_video_is_frame_exact(tmp_path, kind):
    """Frame i is the i-th frame in display order (decord's numbering) for constant- and variable-frame-rate files
    and a Matroska remux: every read equals the sequential decode."""
    if kind.startswith("vfr"):
        path = variable_rate_video(tmp_path / "vfr.mp4")
    else:
        path = marked_video(tmp_path / f"v.{'mp4' if kind == 'mkv' else kind}")
    if kind.endswith("mkv"):
        path = remux(path, tmp_path / "remux.mkv")
    full = sequential(path)
    assert len(full) == 90 == readers.video_frame_count(path)
    assert len({f.tobytes() for f in full}) == 90
    for indices in ([0], [89], [88, 89], [45], [70, 3, 70], list(range(60, 76, 3)), [13, 12, 11], [24, 36, 48, 60]):
        got = readers.read_video(path, indices).numpy()
        np.testing.assert_array_equal(got, full[indices])
    with av.open(str(path)) as container:  # the seek itself lands before frame 77 (no decode from the start)
        stream = container.streams.video[0]
        index = readers.frame_index(container, stream, path)
        found, decoded = readers.decode_wanted(container, stream, path, index, {77, 80})
    assert decoded <= 80 - 72 + 1  # from the keyframe at frame 72 (gop 12) at most
    np.testing.assert_array_equal(found[77], full[77])
    np.testing.assert_array_equal(found[80], full[80])
    pts = index.pts
    if kind.startswith("vfr"):  # placing frames by pts x the capture rate (30 fps) would pick other frames here
        with av.open(str(path)) as container:
            by_rate = np.round(np.asarray(pts) * float(container.streams.video[0].time_base) * 30).astype(int)
        assert (by_rate != np.arange(90)).sum() == 79  # every frame after the first gap (after frame 10)
    with pytest.raises(readers.MediaError, match=r"not all in \[0, 90\)"):
        readers.read_video(path, [89, 90])


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


# --------------------------------------------------------------------------- 4. official transforms, bit for bit
def photo(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)  # (H, W, 3) uint8 RGB


def float_lanczos4(img, out_h, out_w):
    """cv2's INTER_LANCZOS4 geometry and kernel in float64, rounded once: what a float port computes."""
    def matrix(n_in, n_out):
        src = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        taps = np.floor(src)[:, None] + np.arange(-3, 5)  # (n_out, 8)
        weights = np.sinc(src[:, None] - taps) * np.sinc((src[:, None] - taps) / 4)
        out = np.zeros((n_out, n_in))
        weights /= weights.sum(1, keepdims=True)
        np.add.at(out, (np.arange(n_out)[:, None], taps.clip(0, n_in - 1).astype(int)), weights)
        return out
    H, W, C = img.shape
    rows = matrix(H, out_h) @ img.astype(np.float64).reshape(H, W * C)  # (out_h, W*C)
    y = (rows.reshape(out_h, W, C).transpose(0, 2, 1) @ matrix(W, out_w).T).transpose(0, 2, 1)  # (out_h, out_w, C)
    return np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)


def test_tokenizer_view_is_opencv_lanczos_on_photos():
    """official: CopyResize(scale=(112, 112), 'lanczos') = mmcv.imresize = cv2.resize(INTER_LANCZOS4) on the uint8
    crop (mmaction/datasets/pipelines/augmentations.py:1441-1444). The view equals OpenCV bit for bit on crops of real
    photographs, (T, 3, H, W) batches and non-square crops included; a float Lanczos misses it on many pixels."""
    assert len(PHOTOS) == 3
    rng, float_misses, total = np.random.default_rng(0), 0, 0
    for path in PHOTOS:
        img = photo(path)
        for crop_h, crop_w in ((224, 224), (224, 160), (96, 128)):
            tops = rng.integers(0, img.shape[0] - crop_h + 1, size=3)
            lefts = rng.integers(0, img.shape[1] - crop_w + 1, size=3)
            crops = np.stack([img[t:t + crop_h, l:l + crop_w] for t, l in zip(tops, lefts)])  # (3, h, w, 3)
            view = data.tokenizer_view(torch.from_numpy(crops).permute(0, 3, 1, 2))  # (3, 3, h/2, w/2)
            assert view.dtype == torch.uint8 and view.shape == (3, 3, crop_h // 2, crop_w // 2)
            for crop, got in zip(crops, view.permute(0, 2, 3, 1).numpy()):
                ref = cv2.resize(crop, (crop_w // 2, crop_h // 2), interpolation=cv2.INTER_LANCZOS4)
                np.testing.assert_array_equal(got, ref)
                float_misses += (float_lanczos4(crop, crop_h // 2, crop_w // 2) != ref).sum()
                total += ref.size
    assert float_misses > 0.05 * total  # measured: ~20 % of pixels one grey level off
    with pytest.raises(ValueError, match="uint8"):
        data.tokenizer_view(torch.zeros(3, 32, 32))


def test_pretraining_samples_are_uint8_with_the_view_of_the_same_crop(tmp_path):
    """video / image: the uint8 augmented crop; *_tok: OpenCV's view of that same crop (same crop, flip, jitter)."""
    t, h, w = 8, 96, 128
    frames = np.stack([photo(PHOTOS[1])[i:i + h, 2 * i:2 * i + w] for i in range(t)])  # (T, H, W, 3) moving photo
    frames[..., 0] = np.linspace(0, 255, w).astype(np.uint8)  # red grows left -> right: shows the flip
    path = tmp_path / "photo.mp4"
    synthetic.write_video(path, frames)
    ds = data.PretrainVideoDataset([readers.VideoRecord(str(path), 0)], clip_len=4, frame_interval=2, crop=64,
                                   rescale=(96, 112), patch_t=2, seed=1)
    flips = 0
    for epoch in range(12):
        ds.set_epoch(epoch)
        item = ds[0]
        video, tok = item["video"], item["video_tok"]  # (3, T, H, W), (3, T, H/2, W/2)
        assert video.dtype == tok.dtype == torch.uint8 and item["video_mask"].dtype == torch.bool
        assert video.shape == (3, 4, 64, 64) and tok.shape == (3, 4, 32, 32) and item["video_mask"].shape == (2, 4, 4)
        for i in range(4):
            ref = cv2.resize(video[:, i].permute(1, 2, 0).numpy(), (32, 32), interpolation=cv2.INTER_LANCZOS4)
            np.testing.assert_array_equal(tok[:, i].permute(1, 2, 0).numpy(), ref)
        red = video[0, 0].float().mean(0)  # (W,) column profile of the red ramp in frame 0
        flips += bool(red[:8].mean() > red[-8:].mean())
    assert 0 < flips < 12

    ids = data.PretrainImageDataset([readers.ImageRecord(str(p), 0) for p in PHOTOS], crop=64, rescale=(96, 112))
    for i in range(3):
        item = ids[i]
        image, tok = item["image"], item["image_tok"]
        assert image.shape == (3, 64, 64) and tok.shape == (3, 32, 32) and item["image_mask"].shape == (4, 4)
        ref = cv2.resize(image.permute(1, 2, 0).numpy(), (32, 32), interpolation=cv2.INTER_LANCZOS4)
        np.testing.assert_array_equal(tok.permute(1, 2, 0).numpy(), ref)


def official_resize_short(frames, short, interpolation):
    """mmcv.rescale_size + mmcv.imresize, as the official Resize(scale=(-1, short)) calls them."""
    h, w = frames.shape[1:3]
    scale_factor = min(np.inf / max(h, w), short / min(h, w))
    size = int(w * float(scale_factor) + 0.5), int(h * float(scale_factor) + 0.5)  # (w, h)
    return np.stack([cv2.resize(f, size, interpolation=interpolation) for f in frames])


def test_pipelines_are_the_official_transforms(tmp_path):
    """Each sample equals the official ops composed by hand on the decoded frames with the same draws: pretraining
    RandomRescale (bicubic) -> RandomCrop -> Flip; K400 finetune Resize(-1, 256) (bilinear) -> RandomResizedCrop ->
    Resize(224, 224) -> Flip; test Resize(-1, 224) -> ThreeCrop."""
    t, h, w = 24, 96, 130  # an odd long-side margin checks ThreeCrop's offsets 0, (w - c) // 2, 2 * ((w - c) // 2)
    frames = np.stack([photo(PHOTOS[2])[i:i + h, 3 * i:3 * i + w] for i in range(t)])  # (T, H, W, 3)
    path = tmp_path / "photo.mp4"
    synthetic.write_video(path, frames)
    decoded = sequential(path)
    records = [readers.VideoRecord(str(path), 0)]
    pretrain = data.PretrainVideoDataset(records, clip_len=4, frame_interval=2, crop=64, rescale=(96, 112), seed=2)
    finetune = data.FinetuneVideoDataset(records, train=True, clip_len=4, frame_interval=2, crop=48, short_side=72,
                                         seed=2)
    test = data.FinetuneVideoDataset(records, train=False, clip_len=4, frame_interval=2, num_crops=3, crop=48,
                                     short_side=48, seed=2)
    for epoch in range(6):
        pretrain.set_epoch(epoch)
        rng = np.random.default_rng([2, epoch, 0])
        x = decoded[data.dense_indices(t, 4, 2, 1, True, rng)[0]]
        x = official_resize_short(x, int(rng.integers(96, 113)), cv2.INTER_CUBIC)
        top, left = rng.integers(0, x.shape[1] - 64 + 1), rng.integers(0, x.shape[2] - 64 + 1)
        x = x[:, top:top + 64, left:left + 64]
        x = x[:, :, ::-1] if rng.random() < 0.5 else x
        np.testing.assert_array_equal(pretrain[0]["video"].permute(1, 2, 3, 0).numpy(), x)

        finetune.set_epoch(epoch)
        rng = np.random.default_rng([2, epoch, 0])
        x = official_resize_short(decoded[data.dense_indices(t, 4, 2, 1, True, rng)[0]], 72, cv2.INTER_LINEAR)
        for _ in range(10):  # RandomResizedCrop, augmentations.py:815-840
            area = rng.uniform(0.08, 1.0) * x.shape[1] * x.shape[2]
            aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            crop_w, crop_h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if crop_h <= x.shape[1] and crop_w <= x.shape[2]:
                top, left = rng.integers(0, x.shape[1] - crop_h + 1), rng.integers(0, x.shape[2] - crop_w + 1)
                break
        x = np.stack([cv2.resize(f, (48, 48), interpolation=cv2.INTER_LINEAR)
                      for f in x[:, top:top + crop_h, left:left + crop_w]])
        x = x[:, :, ::-1] if rng.random() < 0.5 else x
        ref = data.normalize_batch(torch.from_numpy(np.ascontiguousarray(x)).permute(3, 0, 1, 2)[None])[0]
        assert torch.equal(finetune[0]["video"], ref)  # (3, T, H, W) normalised

    x = official_resize_short(decoded[data.dense_indices(t, 4, 2, 1, False, None)[0]], 48, cv2.INTER_LINEAR)
    assert x.shape[1:3] == (48, 65)  # 130 * 48 / 96
    step = (x.shape[2] - 48) // 2  # ThreeCrop, augmentations.py:1818-1824: offsets 0, 8, 16 of a 17 px margin
    for position in range(3):
        ref = x[:, :, position * step:position * step + 48]
        ref = data.normalize_batch(torch.from_numpy(np.ascontiguousarray(ref)).permute(3, 0, 1, 2)[None])[0]
        assert torch.equal(test[position]["video"], ref)


def official_imnormalize(img, mean, std, opencv_major):
    """mmcv.imnormalize_ (augmentations.py:1517 calls it): cv2.subtract(img, mean) then cv2.multiply(img, 1 / std),
    float64 mean and std, on a float32 (H, W, 3) image, written out in NumPy. OpenCV 4, which the official code ran
    on, computes each op in float64 and rounds to float32; OpenCV 5 first rounds the scalar to float32 and computes
    in float32 (one ulp apart on 214 of the 768 level/channel pairs)."""
    x = img.astype(np.float32)
    mean64, scale64 = np.float64(mean), 1 / np.float64(std)
    if opencv_major == 4:
        x = (x.astype(np.float64) - mean64).astype(np.float32)
        return (x.astype(np.float64) * scale64).astype(np.float32)
    return (x - mean64.astype(np.float32)) * scale64.astype(np.float32)


LEVELS = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)  # (16, 16, 3): every level, an image
# official cfg in1k_k400.py:38-39; Normalize keeps them as float32 (augmentations.py:1501-1502)
MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


def test_normalize_batch_is_official_normalize():
    """official: Normalize(**img_norm_cfg) as the official code ran it (mmcv.imnormalize_ on OpenCV 4) on every uint8
    level of every channel, as (B, 3, T, H, W) clips and (B, 3, H, W) images, bit for bit."""
    ref = official_imnormalize(LEVELS, MEAN, STD, opencv_major=4)  # (16, 16, 3)
    assert ref[0, 0].tolist() == pytest.approx([-2.117904, -2.0357144, -1.8044444])  # level 0
    chw = torch.from_numpy(LEVELS).permute(2, 0, 1)  # (3, 16, 16)
    clip = data.normalize_batch(chw[None, :, None].expand(2, 3, 4, 16, 16))  # (B, 3, T, 16, 16)
    image = data.normalize_batch(chw[None])  # (1, 3, 16, 16)
    assert clip.dtype == image.dtype == torch.float32
    np.testing.assert_array_equal(image[0].permute(1, 2, 0).numpy(), ref)
    np.testing.assert_array_equal(clip[1, :, 3].permute(1, 2, 0).numpy(), ref)


def test_installed_opencv_normalizes_as_written_out():
    """The OpenCV installed here computes mmcv.imnormalize_ exactly as official_imnormalize writes it out for its
    major version; a release that changes that arithmetic (as 5.0 did) fails here instead of moving the reference."""
    major = int(cv2.__version__.split(".")[0])
    assert major in (4, 5), f"OpenCV {cv2.__version__}: untested major version (requirements.txt caps it)"
    got = LEVELS.astype(np.float32)
    cv2.subtract(got, np.float64(MEAN.reshape(1, -1)), got)  # as mmcv.imnormalize_
    cv2.multiply(got, 1 / np.float64(STD.reshape(1, -1)), got)
    np.testing.assert_array_equal(got, official_imnormalize(LEVELS, MEAN, STD, major))
    differs = official_imnormalize(LEVELS, MEAN, STD, 4) != official_imnormalize(LEVELS, MEAN, STD, 5)
    assert differs.sum() == 214  # the two emulations are distinct, so this test tells the versions apart


def official_color_jitter(img, b, c, s, fn_idx):
    """ColorJitter.__call__ of augmentations.py:1589-1600 and 1633-1646 (frame_independent, hue=0 so op 3 is
    skipped) on one (H, W, 3) uint8 frame, as the official code runs under NumPy 1.x: float32 throughout, one clip
    and truncation at the end. NumPy 1.x made `(1 - c) * val` (a Python float times a float32 scalar) float64; it is
    written out so that NumPy 2 computes the same."""
    def rgb_to_grayscale(x):
        return 0.2989 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
    img = img.astype(np.float32)
    for fn_id in fn_idx:
        if fn_id == 0 and b != 1:
            img *= b
        if fn_id == 1 and c != 1:
            val = np.mean(rgb_to_grayscale(img))
            img = c * img + np.float32(float(1 - c) * float(val))
        if fn_id == 2 and s != 1:
            gray = np.stack([rgb_to_grayscale(img)] * 3, axis=-1)
            img = s * img + (1 - s) * gray
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 0, 2)])
def test_color_jitter_is_official(order):
    """data.color_jitter equals the official formula bit for bit on real photographs, including pixels that a
    brightness factor pushes past 255 before contrast or saturation brings them back (a per-op uint8 clamp, as
    torchvision's adjust_* do, differs there)."""
    per_op_clamp_differs = 0
    for k, path in enumerate(PHOTOS):
        img = photo(path)
        for seed in range(4):
            b, c, s = np.random.default_rng([k, seed]).uniform(1 - 0.4, 1 + 0.4, size=3).tolist()
            fn_idx = list(order[:1]) + [3] + list(order[1:])  # the official permutation of 4 ops; hue=0 is skipped
            ref = official_color_jitter(img, b, c, s, fn_idx)
            got = data.color_jitter(img, 0.4, np.array(order), np.random.default_rng([k, seed]))  # (H, W, 3)
            np.testing.assert_array_equal(got, ref)
            clamped = img.astype(np.float32)
            for op in order:
                clamped = np.clip(official_color_jitter(clamped.astype(np.uint8), b, c, s, [op]), 0, 255)
            per_op_clamp_differs += (clamped != ref).sum()
    assert per_op_clamp_differs > 0


def test_random_erase_is_timm_const_mode():
    """official: RandomErasing(probability=0.25) after Normalize (..._window1677_bevt_finetune_ssv2.py:23-24) is timm's
    RandomErasing with its defaults, mode 'const': one box set to 0, the same on every frame. Reference: timm's
    _erase formula (timm/data/random_erasing.py), written out with numpy draws in timm's order."""
    for seed in range(50):
        x = torch.randn(3, 4, 32, 48)
        got = data.random_erase(x.clone(), np.random.default_rng(seed))  # (3, T, H, W)
        rng, ref = np.random.default_rng(seed), x.clone()
        for _ in range(10):  # timm: 10 attempts; area in [0.02, 1/3], log-uniform aspect in [0.3, 1/0.3]
            target_area = rng.uniform(0.02, 1 / 3) * 32 * 48
            aspect_ratio = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
            h = int(round(math.sqrt(target_area * aspect_ratio)))
            w = int(round(math.sqrt(target_area / aspect_ratio)))
            if w < 48 and h < 32:
                top, left = rng.integers(0, 32 - h + 1), rng.integers(0, 48 - w + 1)
                ref[:, :, top:top + h, left:left + w] = 0.0  # mode 'const': zeros, every channel and frame
                break
        assert torch.equal(got, ref)
        erased = (got != x).any(0)  # (T, H, W)
        assert erased.any() and all(torch.equal(erased[0], erased[t]) for t in range(4))
        assert got[:, :, erased[0]].eq(0).all()


# --------------------------------------------------------------------------- 5. bad input
def test_corrupt_and_missing_files_are_replaced(syn, tmp_path):
    records, _ = readers.read_k400_csv(syn["k400_train_csv"], syn["mp4_root"])
    good = records[:6]
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00not a video" * 100)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(open(good[0].path, "rb").read()[:3000])
    missing = str(tmp_path / "missing.mp4")
    bad = [readers.VideoRecord(str(corrupt), 0), readers.VideoRecord(str(truncated), 0),
           readers.VideoRecord(missing, 0)]
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
        readers.read_list(bad_list, tmp_path)
    bad_csv = tmp_path / "k.csv"
    bad_csv.write_text("label,youtube_id,time_start,time_end,split\nabseiling,abc,1,11,train\nabseiling,abc\n")
    with pytest.raises(ValueError, match=r"k.csv:3"):
        readers.read_k400_csv(bad_csv, tmp_path)
    bad_json = tmp_path / "d.json"
    bad_json.write_text(json.dumps([{"vid_name": "a", "label": 1, "start_frame": 0, "end_frame": 9},
                                    {"vid_name": "b"}]))
    with pytest.raises(ValueError, match=r"d.json: entry 2"):
        readers.read_diving48(bad_json, tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(ValueError, match=r"empty.txt: the dataset is empty"):
        readers.read_list(empty, tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        readers.read_list(syn["k400_train_list"], tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no_such.csv"):
        readers.read_annotations(tmp_path / "no_such.csv", tmp_path)
    with pytest.warns(UserWarning, match="26 of 26 videos not found"), pytest.raises(ValueError, match="empty"):
        readers.read_k400_csv(syn["k400_train_csv"], tmp_path)
    with pytest.raises(ValueError, match="short side 100 is smaller than the crop 128"):
        data.PretrainVideoDataset([readers.VideoRecord("a.mp4", 0)], crop=128, rescale=(100, 140))


def test_check_command(syn, tmp_path, capsys):
    root = tmp_path / "videos"
    shutil.copytree(syn["mp4_root"], root)
    records, _ = readers.read_list(syn["k400_val_list"], root)
    (root / records[0].path.split("/")[-1]).write_bytes(b"garbage")
    (root / records[1].path.split("/")[-1]).unlink()
    with pytest.raises(SystemExit) as exit_info:
        dataset_tools.main(["check", str(syn["k400_val_list"]), str(root), "--min-frames", "30"])
    assert exit_info.value.code == 1
    out = capsys.readouterr()
    assert f"{NUM_CLASSES} samples" in out.out and "missing: 1" in out.out and "unreadable: 1" in out.out
    assert f"too short: {NUM_CLASSES - 2}" in out.out and records[1].path.split("/")[-1] in out.out
    assert f"{NUM_CLASSES}/{NUM_CLASSES}" in out.err  # progress line
    cfg = dataset_tools.CheckConfig(str(syn["ssv2_val"]), str(syn["webm_root"]), min_frames=8)
    assert dataset_tools.check(cfg) == 0


# --------------------------------------------------------------------------- 5b. frame folders (rawframes)
PHOTO_CLASSES = ["punching bag", "abseiling", "zumba"]  # one video per class, a class with a space


@pytest.fixture(scope="module")
def photo_set(tmp_path_factory):
    """A Kinetics CSV of three H.264 videos (40 frames, 96x128, moving crops of the photographs: fine detail, the
    hard case for JPEG) in class folders: videos/<label>/vid<k>_000000_000010.mp4."""
    root = tmp_path_factory.mktemp("photo_set")
    rows = ["label,youtube_id,time_start,time_end,split"]
    for k, (label, path) in enumerate(zip(PHOTO_CLASSES, PHOTOS)):
        img = photo(path)
        (root / "videos" / label).mkdir(parents=True)
        synthetic.write_video(root / "videos" / label / f"vid{k}_000000_000010.mp4",
                              np.stack([img[i:i + 96, 2 * i:2 * i + 128] for i in range(40)]))  # (T, H, W, 3)
        rows.append(f"{label},vid{k},0,10,train")
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    return root


def sample_sets(records):
    """Pretraining, finetune-train and test-view datasets of the same records."""
    return [data.PretrainVideoDataset(records, clip_len=4, frame_interval=2, crop=64, rescale=(96, 112), seed=1),
            data.FinetuneVideoDataset(records, train=True, clip_len=4, frame_interval=2, crop=48, short_side=72,
                                      seed=1),
            data.FinetuneVideoDataset(records, train=False, clip_len=4, frame_interval=8, num_clips=2, num_crops=3,
                                      crop=48, short_side=48)]


def same(a, b, keys=None):
    """Two samples agree on `keys` (default: all): tensors equal, labels and indices equal."""
    return all(torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])) for key in keys or a)


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_extracted_frames_give_the_samples_of_the_video(photo_set, tmp_path, fmt):
    """extract-frames writes mmaction's rawframes layout (img_00001.jpg .. = frames 0 ..) with a list that keeps the
    labels and class names; the same datasets read it with the same sampling and augmentation draws. PNG gives the
    samples of the video exactly; JPEG at quality 95 (OpenCV's default, as the official extraction) within the
    bound measured on these detailed frames: mean 1.58 grey levels, max 30 (raw frames), mean 1.62 on the
    pretraining crops. (At quality 90 the mean is 2.2: the bound fails.)"""
    out = tmp_path / "frames"
    cfg = dataset_tools.ExtractConfig(str(photo_set / "train.csv"), str(photo_set / "videos"), str(out), fmt)
    assert dataset_tools.extract_frames(cfg) == []
    videos, classes = readers.read_annotations(photo_set / "train.csv", photo_set / "videos")
    frames, frame_classes = readers.read_annotations(out / "train_rawframes.txt", out)
    assert frame_classes == classes == sorted(PHOTO_CLASSES)
    assert (out / "train_rawframes.txt").read_text().splitlines() == [  # the annotation's order, whitespace as _
        "punching_bag/vid0_000000_000010 40 1", "abseiling/vid1_000000_000010 40 0", "zumba/vid2_000000_000010 40 2"]
    assert [r.label for r in frames] == [r.label for r in videos] and all(r.total_frames == 40 for r in frames)
    assert sorted(p.name for p in Path(frames[0].path).iterdir()) == [f"img_{i:05d}.{fmt}" for i in range(1, 41)]
    raw = [np.stack([readers.read_segment(r, lambda n: np.arange(n)) for r in records])
           for records in (videos, frames)]
    raw_diff = np.abs(raw[0].astype(np.int16) - raw[1])  # (3, 40, 96, 128, 3)
    pairs = []  # (sample from the video, sample from the frames) of every dataset, 3 epochs
    for from_video, from_frames in zip(sample_sets(videos), sample_sets(frames)):
        for epoch in range(3):
            from_video.set_epoch(epoch)
            from_frames.set_epoch(epoch)
            pairs += [(from_video[i], from_frames[i]) for i in range(len(from_video))]
    if fmt == "png":
        assert raw_diff.max() == 0
        assert all(same(a, b) for a, b in pairs)
        return
    assert raw_diff.mean() < 1.9 and raw_diff.max() <= 32
    std = data.STD.view(3, 1, 1, 1)  # finetune clips are normalised: back to grey levels
    for a, b in pairs:
        assert same(a, b, [key for key in a if key not in ("video", "video_tok")])  # masks, labels, indices
        levels = (a["video"].float() - b["video"].float()).abs() * (1 if a["video"].dtype == torch.uint8 else std)
        assert levels.mean() < 1.9 and levels.max() <= 32


def test_extracted_segments(photo_set, tmp_path):
    """A Diving-48 record's segment [start_frame, end_frame) becomes a folder of its own, numbered from 1."""
    ann = tmp_path / "diving.json"
    ann.write_text(json.dumps([{"vid_name": "zumba/vid2_000000_000010", "label": 0, "start_frame": 5,
                                "end_frame": 29}, {"vid_name": "zumba/vid2_000000_000010", "label": 0,
                                                   "start_frame": 30, "end_frame": 99}]))
    out = tmp_path / "frames"
    dataset_tools.extract_frames(dataset_tools.ExtractConfig(str(ann), str(photo_set / "videos"), str(out), "png"))
    assert (out / "diving_rawframes.txt").read_text().splitlines() == [
        "zumba/vid2_000000_000010_5-29 24 0", "zumba/vid2_000000_000010_30-99 10 0"]  # the second ends at frame 40
    videos, _ = readers.read_diving48(ann, photo_set / "videos")
    frames, _ = readers.read_annotations(out / "diving_rawframes.txt", out)
    for from_video, from_frames in zip(sample_sets(videos), sample_sets(frames)):
        for i in range(len(from_video)):
            assert same(from_video[i], from_frames[i])


def test_extract_frames_resumes_and_names_unreadable_videos(photo_set, tmp_path, capsys, monkeypatch):
    videos = tmp_path / "videos"
    shutil.copytree(photo_set / "videos", videos)
    (videos / "broken.mp4").write_bytes(b"\x00not a video" * 100)
    ann = tmp_path / "train.txt"
    ann.write_text("abseiling/vid1_000000_000010.mp4 0\nbroken.mp4 1\nzumba/vid2_000000_000010.mp4 2\n")
    out = tmp_path / "frames"
    stale = out / "zumba" / "vid2_000000_000010.part"  # left by an interrupted run
    stale.mkdir(parents=True)
    (stale / "img_00041.jpg").write_bytes(b"stale")
    with pytest.raises(SystemExit) as exit_info:
        dataset_tools.main(["extract-frames", "--ann", str(ann), "--root", str(videos), "--out", str(out)])
    assert exit_info.value.code == 1
    printed = capsys.readouterr()
    assert "unreadable: 1" in printed.out and str(videos / "broken.mp4") in printed.out
    assert "\rextract 3/3" in printed.err
    listed = ["abseiling/vid1_000000_000010 40 0", "zumba/vid2_000000_000010 40 2"]
    assert (out / "train_rawframes.txt").read_text().splitlines() == listed
    assert (out / "train_rawframes_classes.txt").read_text().splitlines() == ["0", "1", "2"]
    assert not list(out.rglob("*.part")) and not list(out.rglob("*.tmp"))
    assert all(readers.frame_folder_problem(out / line.split()[0], 40) is None for line in listed)
    (out / "zumba" / "vid2_000000_000010" / "img_00007.jpg").unlink()  # a damaged folder is extracted again
    before = (out / "abseiling" / "vid1_000000_000010" / "img_00001.jpg").stat().st_mtime_ns
    written, write = [], dataset_tools._write_frames
    monkeypatch.setattr(dataset_tools, "_write_frames",
                        lambda record, *to: written.append(record.path) or write(record, *to))
    assert len(dataset_tools.extract_frames(dataset_tools.ExtractConfig(str(ann), str(videos), str(out)))) == 1
    assert written == [str(videos / "broken.mp4"), str(videos / "zumba" / "vid2_000000_000010.mp4")]
    assert (out / "abseiling" / "vid1_000000_000010" / "img_00001.jpg").stat().st_mtime_ns == before
    assert (out / "train_rawframes.txt").read_text().splitlines() == listed
    assert readers.frame_folder_problem(out / "zumba" / "vid2_000000_000010", 40) is None
    with pytest.raises(SystemExit, match="needs --ann, --root and --out"):
        dataset_tools.main(["extract-frames", "--ann", str(ann)])


def test_bad_frame_folders_are_reported_and_replaced(photo_set, tmp_path, capsys):
    out = tmp_path / "frames"
    dataset_tools.extract_frames(dataset_tools.ExtractConfig(str(photo_set / "train.csv"), str(photo_set / "videos"),
                                                         str(out)))
    folders = [line.split()[0] for line in (out / "train_rawframes.txt").read_text().splitlines()]
    (out / folders[0] / "img_00013.jpg").unlink()
    bad = [f"{folders[0]} 40 0", f"{folders[1]} 45 1", f"{folders[2]} 30 2"]  # a gap, too many, too few
    (out / "bad.txt").write_text("\n".join(bad + [f"{folders[2]} 40 2"] * 6) + "\n")
    with pytest.raises(SystemExit) as exit_info:
        dataset_tools.main(["check", str(out / "bad.txt"), str(out)])
    assert exit_info.value.code == 1
    printed = capsys.readouterr().out
    assert f"missing frames: 1\n  {out / folders[0]}: first missing img_00013.jpg (1 of 40 missing)" in printed
    assert (f"wrong total_frames: 2\n  {out / folders[1]}: the list says 45, the folder holds 40 frames\n"
            f"  {out / folders[2]}: the list says 30, the folder holds 40 frames") in printed
    assert "unreadable: 0" in printed and "too short: 0" in printed
    records, _ = readers.read_annotations(out / "bad.txt", out)
    ds = data.PretrainVideoDataset(records, clip_len=20, frame_interval=2, crop=64, rescale=(96, 112))  # all even
    with pytest.warns(UserWarning) as caught:  # frames of 40: frame 12 (img_00013) is in every clip of folder 0
        items = [ds[i] for i in range(3)]
    messages = [str(w.message) for w in caught]
    assert any(str(out / folders[0]) in m and "img_00013.jpg is absent" in m for m in messages)
    assert any(str(out / folders[1]) in m and "wrong total_frames (45): no img_00045.jpg" in m for m in messages)
    assert any(str(out / folders[2]) in m and "wrong total_frames (30): img_00031.jpg exists" in m for m in messages)
    assert ds.num_bad == len(messages) >= 3 and all(item["video"].shape == (3, 20, 64, 64) for item in items)


@pytest.mark.filterwarnings("ignore:.*distinct labels span:UserWarning")  # label 3 alone: 3 of 4 classes empty
def test_rawframes_list_detection(tmp_path):
    """A list is read as rawframes when its first line has three fields, an integer in the middle and a folder
    under root first; a `path label` list whose path has spaces is not."""
    (tmp_path / "jump").mkdir()
    (tmp_path / "rawframes.txt").write_text("jump 12 3\n")
    (tmp_path / "spaces.txt").write_text("run 12 3\n")  # the file 'run 12', label 3 ('run' is no folder)
    (tmp_path / "named.txt").write_text("walk 12.mp4 3\n")
    records, classes = readers.read_annotations(tmp_path / "rawframes.txt", tmp_path)
    assert records == [readers.VideoRecord(str(tmp_path / "jump"), 3, total_frames=12)] and len(classes) == 4
    spaces, _ = readers.read_annotations(tmp_path / "spaces.txt", tmp_path)
    assert spaces == [readers.VideoRecord(str(tmp_path / "run 12"), 3)]
    assert readers.read_annotations(tmp_path / "named.txt", tmp_path)[0][0].path == str(tmp_path / "walk 12.mp4")
    for text, line in (("jump 12 3\njump 12\n", 2), ("jump 0 3\n", 1)):
        (tmp_path / "bad.txt").write_text(text)
        with pytest.raises(ValueError, match=f"bad.txt:{line}: expected 'frame_dir total_frames label'"):
            readers.read_rawframes(tmp_path / "bad.txt", tmp_path)
    (tmp_path / "rawframes_classes.txt").write_text("a\nb\n")  # names 2 classes, the list has label 3
    with pytest.raises(ValueError, match=r"rawframes.txt:1: label 3 is outside the 2 classes of .*_classes.txt"):
        readers.read_annotations(tmp_path / "rawframes.txt", tmp_path)


# --------------------------------------------------------------------------- 6. determinism
class PidVideos(data.PretrainVideoDataset):
    """Each sample also names the process that made it."""

    def _load(self, index, rng):
        return {**super()._load(index, rng), "pid": torch.tensor(os.getpid())}


def test_same_samples_with_0_and_2_workers_and_one_persistent_loader(syn):
    """A training loader with workers is made once and re-aimed at each epoch (aim_loader; its workers persist); its
    samples are the dataset's at that epoch in DistributedSampler's order, as with 0 workers, after a partly used
    epoch and from a mid-epoch resume."""
    records, _ = readers.read_k400_csv(syn["k400_train_csv"], syn["mp4_root"])
    make = lambda: PidVideos(records[:8], clip_len=4, frame_interval=2, crop=32, rescale=(48, 56), seed=5)  # noqa
    expected = []  # per epoch: the samples of a plain dataset at that epoch, in the sampler's order
    for epoch in range(3):
        order, ref = torch.utils.data.DistributedSampler(range(8), 1, 0, shuffle=True, seed=3), make()
        order.set_epoch(epoch)
        ref.set_epoch(epoch)
        expected.append([ref[i] for i in order])
    fresh = [list(data.make_loader(make(), 2, True, 0, 3, False, epoch)) for epoch in range(3)]  # 4 batches each
    ds = make()
    loader = data.make_loader(ds, 2, True, 2, 3, False, 0)
    next(iter(loader))  # epoch 0 used in part, as when an epoch stops at a step count
    persistent = []
    for epoch in range(3):
        persistent.append(list(data.aim_loader(loader, epoch)))  # the same workers, re-aimed
    tail = list(data.aim_loader(loader, 1, start_batch=2))  # resume epoch 1 at its batch 2
    for run, want in ((fresh, sum(expected, [])), (persistent + [tail], sum(expected, []) + expected[1][4:])):
        samples = [{key: batch[key][j] for key in batch} for batch in sum(run, []) for j in range(2)]
        for a, b in zip(want, samples, strict=True):
            for key in ("video", "video_tok", "video_mask"):
                assert torch.equal(a[key], b[key])
    assert len(tail) == 2 and [len(run) for run in persistent] == [4, 4, 4]
    assert not torch.equal(persistent[0][0]["video"], persistent[1][0]["video"])  # a new epoch, new samples
    pids = [{int(p) for batch in run for p in batch["pid"]} for run in persistent + [tail]]
    assert len(pids[0]) == 2 and os.getpid() not in pids[0] and all(p == pids[0] for p in pids)  # the same workers
    assert {int(p) for batch in fresh[0] for p in batch["pid"]} == {os.getpid()}
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
    monkeypatch.setattr(readers, "read_frames", lambda path, pick: frame[None].repeat(len(pick(12)), 1, 1, 1).numpy())
    ds = data.FinetuneVideoDataset([readers.VideoRecord("static.mp4", 3)], train=True, sampling="uniform",
                                   clip_len=4, crop=32, short_side=40, flip=False, randaugment=(4, 7), erase_prob=1.0,
                                   seed=0)
    for epoch in range(4):
        ds.set_epoch(epoch)
        video = ds[0]["video"]  # (3, T, H, W)
        assert video.shape == (3, 4, 32, 32) and ds[0]["label"] == 3
        for t in range(1, 4):
            assert torch.equal(video[:, t], video[:, 0])  # same RandAugment ops and erased box per frame
        assert torch.equal(video, ds[0]["video"])  # and reproducible from (seed, epoch, index)


def test_finetune_views_and_segments(syn, monkeypatch):
    records, _ = readers.read_diving48(syn["diving48_test"], syn["mp4_root"])
    records = [readers.VideoRecord(r.path, r.label, 4, 12) for r in records[:3]]
    seen = []
    read = readers.read_frames
    monkeypatch.setattr(readers, "read_frames",
                        lambda path, pick: read(path, lambda n: seen.append(pick(n)) or seen[-1]))
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
    images, _ = readers.read_image_folder(syn["images_train"])
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
    workers = data.cycled_batches(data.PretrainImageDataset(images[:6], crop=32, rescale=(48, 56)), 4, 2, 0, False,
                                  {"epoch": 0, "batch": 0})  # persistent workers, the same images
    assert all(torch.equal(a["image"], next(workers)["image"]) for a in first + after)


def test_load_frames(syn, tmp_path):
    frames = synthetic.load_frames(syn["classes"].parent, 10, 32, seed=0)
    assert frames.shape == (10, 3, 32, 32) and frames.dtype == torch.uint8
    assert torch.equal(frames, synthetic.load_frames(syn["classes"].parent, 10, 32, seed=0))
    # the views are made as in pretraining: bicubic rescale of the short side to U{73..91} (256..320 of a 224 crop,
    # scaled to the 64 px crop), random crop, the OpenCV view
    shutil.copy(PHOTOS[0], tmp_path / "photo.png")
    views = synthetic.load_frames(tmp_path, 4, 32, seed=1)
    rng, img = np.random.default_rng(1), photo(PHOTOS[0])
    for view in views:
        assert rng.integers(1) == 0  # the file draw
        x = official_resize_short(img[None], int(rng.integers(73, 92)), cv2.INTER_CUBIC)[0]
        top, left = rng.integers(0, x.shape[0] - 64 + 1), rng.integers(0, x.shape[1] - 64 + 1)
        ref = cv2.resize(np.ascontiguousarray(x[top:top + 64, left:left + 64]), (32, 32),
                         interpolation=cv2.INTER_LANCZOS4)
        np.testing.assert_array_equal(view.permute(1, 2, 0).numpy(), ref)


# --------------------------------------------------------------------------- the libraries' own behaviour, pinned
# The exactness tests above compare our pipelines with OpenCV and PyAV themselves; these pin what the libraries give,
# so a release that changes it fails here instead of moving both sides of those comparisons.
OPENCV_RESIZES = {  # (interpolation, (width, height)): sha256[:16] of cv2.resize on the crop; OpenCV 4.10 and 5.1 agree
    "INTER_LANCZOS4": ((64, 48), "faaa3445e798cb37"), "INTER_CUBIC": ((171, 128), "553a5aa8ff58b3e1"),
    "INTER_LINEAR": ((171, 128), "41ac00adfe77b69a"),
}


@pytest.mark.parametrize("name", ["INTER_LANCZOS4", "INTER_CUBIC", "INTER_LINEAR"])
def test_opencv_resizes_are_the_pinned_ones(name):
    """The official pipeline's resizes (tokenizer view: Lanczos; pretraining rescale: bicubic; finetuning: bilinear)
    on a crop of a real photograph, as OpenCV 4.10 and 5.1 compute them, bit for bit."""
    crop = np.ascontiguousarray(photo(PHOTOS[0])[10:10 + 96, 20:20 + 128])  # (96, 128, 3)
    size, digest = OPENCV_RESIZES[name]
    out = cv2.resize(crop, size, interpolation=getattr(cv2, name))
    assert hashlib.sha256(out.tobytes()).hexdigest()[:16] == digest


@pytest.mark.parametrize("codec, pix_fmt", [("ffv1", "bgr0"), ("libx264rgb", "rgb24")])
def test_lossless_files_read_back_exactly(tmp_path, codec, pix_fmt):
    """A lossless encode read by readers.read_video gives back the very frames written: a reference that does not come
    from PyAV's own decoding (any pick, in any order)."""
    frames = np.random.default_rng(0).integers(0, 256, size=(20, 48, 64, 3), dtype=np.uint8)  # (T, H, W, 3)
    path = tmp_path / f"{codec}.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25, options={"qp": "0"} if codec == "libx264rgb" else {})
        stream.width, stream.height, stream.pix_fmt = 64, 48, pix_fmt
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())
    for pick in ([0, 1, 2], [19], [15, 3, 15, 7], list(range(20))):
        np.testing.assert_array_equal(readers.read_video(path, pick).numpy(), frames[pick])
