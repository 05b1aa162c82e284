"""Tests for tools/factorial.py: the motion label lives in the order of the frames only (reversed pairs, one frame
multiset for every motion class, classifiers on one frame or on the set of frames at chance, one on the order far
above it), the two labels are independent, the lists on disk describe the videos written, and the image set holds
content that no video shows."""
import numpy as np
import pytest

import readers
from tools import factorial, reproduce

MOTIONS = [name for name, _ in factorial.MOTIONS]
SIZE, FRAMES = 32, 8  # small renders: the properties do not depend on the size


def render(a, m, seed, frames=FRAMES):
    return factorial.render_clip(factorial.APPEARANCES[a], MOTIONS[m], seed, frames, SIZE)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A small set on disk: 1 training, 1 validation and 2 test videos per cell, 40 images."""
    cfg = factorial.FactorialConfig(train_per_cell=1, val_per_cell=1, test_per_cell=2, size=48, images=40)
    return factorial.make_factorial(tmp_path_factory.mktemp("factorial"), cfg), cfg


def test_a_motion_class_and_its_reverse_are_the_same_frames_in_opposite_order():
    for seed in range(5):
        for a in range(len(factorial.APPEARANCES)):
            for reverse, forward in factorial.REVERSED_OF.items():
                clip = factorial.render_clip(factorial.APPEARANCES[a], forward, [seed], 16, SIZE)
                np.testing.assert_array_equal(
                    factorial.render_clip(factorial.APPEARANCES[a], reverse, [seed], 16, SIZE), clip[::-1])


def test_every_motion_class_shows_the_same_frames_and_any_8_consecutive_frames_are_one_turn():
    """The multiset of a video's frames is the same whatever its motion label, so no function of the unordered
    frames can tell the label; any 8 consecutive frames (a clip) show the 8 orbit positions once each."""
    def as_set(frames):
        return sorted(f.tobytes() for f in frames)
    for seed in range(3):
        clips = [render(1, m, [seed], frames=16) for m in range(len(MOTIONS))]
        positions = {f.tobytes() for f in clips[0]}
        assert len(positions) == factorial.POSITIONS  # 8 distinct frames
        for clip in clips:
            assert as_set(clip) == as_set(clips[0])
            for start in range(16 - 8 + 1):
                assert {f.tobytes() for f in clip[start:start + 8]} == positions
        assert len({c.tobytes() for c in clips}) == len(MOTIONS)  # but the orders differ


def test_the_labels_change_nothing_but_the_shape_and_the_order():
    """One seed, two appearances: the same background, hub and orbit (only the object's pixels differ)."""
    disk, square = render(0, 0, [3]), render(1, 0, [3])
    same = (disk == square).all(-1)  # (T, H, W)
    assert same.mean() > 0.8 and not same.all()
    p = factorial.video_params([3], SIZE)
    hub = tuple(np.round(p["centre"][::-1]).astype(int))  # (y, x)
    assert (disk[:, hub[0], hub[1]] == 40).all()  # the hub is drawn on top in every frame


def pixel_features(frame):
    """A grey 16 x 16 thumbnail and the radial profile of the frame's Fourier magnitude (shift- and rotation-free, so
    that a linear classifier can see shapes wherever they are)."""
    grey = frame.astype(np.float64).mean(-1) / 255
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(grey - grey.mean())))
    yy, xx = np.mgrid[:SIZE, :SIZE] - SIZE // 2
    radius = np.hypot(yy, xx).astype(int).ravel()
    profile = np.bincount(radius, spectrum.ravel())[:17] / np.bincount(radius)[:17]
    return np.concatenate([grey.reshape(16, 2, 16, 2).mean((1, 3)).ravel(), np.log1p(profile)])


def turning_features(frames):
    """What the order tells: the mean sine and cosine of the object's turn between consecutive frames, around the
    mean of its positions (the object's pixels: those that differ from the clip's per-pixel median)."""
    moving = (np.abs(frames.astype(int) - np.median(frames, 0)).sum(-1) > 30)  # (T, H, W)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    centres = np.array([[xx[m].mean(), yy[m].mean()] for m in moving])  # (T, 2)
    angle = np.arctan2(*(centres - centres.mean(0))[:, ::-1].T)
    turn = np.diff(angle)
    return np.array([np.sin(turn).mean(), np.cos(turn).mean()])


def accuracy(train, test, label):
    """Top-1 (%) of reproduce's probe (a logistic regression, L2 by cross-validation) from (features, labels) pairs."""
    fit = reproduce.probe(train[0], train[1][label], {"test": test[0]}, 4, l2_grid=(1e-1, 1.0), folds=2)
    return 100 * (fit["probs"]["test"].argmax(1) == test[1][label]).mean()


def test_one_frame_or_the_set_of_frames_tells_the_appearance_but_not_the_motion():
    """Logistic regressions on pixels: 480 training and 320 test clips, 4 x 4 balanced cells. On one random frame or
    on the mean over the clip's frames (an unordered summary), motion is at chance (25 %; one sd of a test top-1 is
    2.4 points) while appearance is above it; on the order (the turn between frames) motion is nearly solved, and the
    same feature of shuffled frames is back at chance."""
    rng = np.random.default_rng(0)

    clips = {}  # each clip is rendered once and read by every feature below

    def dataset(n, split, features):
        x, labels = [], {"appearance": [], "motion": []}
        for i in range(n):
            a, m = i % 4, (i // 4) % 4
            if (split, i) not in clips:
                clips[split, i] = render(a, m, [7, split, i])
            x.append(features(clips[split, i]))
            labels["appearance"].append(a)
            labels["motion"].append(m)
        return np.array(x), {k: np.array(v) for k, v in labels.items()}

    def one_frame(clip):
        return pixel_features(clip[rng.integers(FRAMES)])

    def frame_set(clip):
        return np.mean([pixel_features(f) for f in clip], 0)

    def shuffled_order(clip):
        return turning_features(clip[rng.permutation(FRAMES)])

    for features in (one_frame, frame_set):
        train, test = dataset(480, 0, features), dataset(320, 1, features)
        assert accuracy(train, test, "motion") < 35, features.__name__
        assert accuracy(train, test, "appearance") > 35, features.__name__
    assert accuracy(dataset(160, 0, turning_features), dataset(160, 1, turning_features), "motion") > 95
    assert accuracy(dataset(480, 0, shuffled_order), dataset(320, 1, shuffled_order), "motion") < 35


def test_lists_on_disk_are_a_balanced_cross_table_of_the_videos_written(written):
    root, cfg = written
    paths = factorial.factorial_paths(root)
    for split, per_cell in (("train", cfg.train_per_cell), ("val", cfg.val_per_cell), ("test", cfg.test_per_cell)):
        lists = {f: readers.read_annotations(paths[f"{split}_{f}"], paths["video_root"])
                 for f in ("appearance", "motion", "cell")}
        records = {f: r for f, (r, _) in lists.items()}
        assert [r.path for r in records["appearance"]] == [r.path for r in records["motion"]] == \
            [r.path for r in records["cell"]]  # three labels of the same videos, in one order
        assert lists["motion"][1] == MOTIONS and lists["appearance"][1] == list(factorial.APPEARANCES)
        table = np.zeros((4, 4), dtype=int)
        for a, m, c in zip(records["appearance"], records["motion"], records["cell"]):
            table[a.label, m.label] += 1
            assert c.label == a.label * 4 + m.label
        assert (table == per_cell).all()  # every cell equally often: the labels are independent
    # a written video is the clip its labels describe (decoded, within H.264's error)
    record = next(r for r in readers.read_list(paths["test_cell"], paths["video_root"])[0] if r.label == 6)
    index = int(record.path.rsplit("_", 1)[1].split(".")[0])
    decoded = readers.read_frames(record.path, lambda n: np.arange(n))
    expected = factorial.render_clip("square", MOTIONS[2], [cfg.seed, factorial.SPLITS["test"], index], cfg.frames,
                                     cfg.size)
    assert decoded.shape == expected.shape
    assert np.abs(decoded.astype(int) - expected).mean() < 4


def test_the_image_set_holds_shapes_and_textures_that_no_video_shows(written):
    root, cfg = written
    records, classes = readers.read_image_folder(factorial.factorial_paths(root)["images"])
    assert len(records) == cfg.images
    assert set(classes) - set(factorial.APPEARANCES)  # shapes of the images only
    assert set(factorial.IMAGE_SHAPES) > set(factorial.APPEARANCES) and len(factorial.TEXTURES) > 1
    drawn = [obj for i in range(200) for obj in factorial.render_image([0, 9, i], SIZE)[1]]
    assert {shape for shape, _ in drawn} == set(factorial.IMAGE_SHAPES)  # every shape, 6 of them never in a video
    assert {texture for _, texture in drawn} == set(factorial.TEXTURES)  # every texture; a video's object is plain


def test_rendering_is_deterministic_in_the_seed():
    np.testing.assert_array_equal(render(2, 3, [1, 2]), render(2, 3, [1, 2]))
    assert not np.array_equal(render(2, 3, [1, 2]), render(2, 3, [1, 3]))
