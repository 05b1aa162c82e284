"""Tests for masking.py: official blockwise/tube statistics, Table 8 ablations, determinism, grid helpers. (The mask
picture that `python -m tools.demo masks` draws: tests/test_demo.py.)"""
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from masking import (VIDEO_MASK_STRATEGIES, blockwise_mask, expected_tube_ratio, mask_to_patch_grid,
                     mask_to_target_grid, random_3d_mask, tube_mask, video_mask)

N_DRAWS = 5000  # statistics over 5,000 seeded draws


def rng(*key):
    return np.random.default_rng(list(key))  # data.py's per-sample key: [seed, epoch, index]


def masked_tokens(masks):
    """(N, T', H', W') -> (N, T') bool: which temporal tokens carry any masked cell."""
    return masks.any(axis=(2, 3))


def run_starts(tok):
    """(N, T') bool -> (N,) number of cyclic runs of masked tokens that start in each draw (0 if all masked)."""
    return (tok & ~np.roll(tok, 1, axis=1)).sum(axis=1)


def same_plane_on_masked_tokens(masks):
    """(N,) bool: every masked temporal token of a draw carries the same (H', W') mask."""
    tok = masked_tokens(masks)
    ref = masks[np.arange(len(masks)), tok.argmax(axis=1)]  # (N, H', W') first masked plane
    return ((masks == ref[:, None]) | ~tok[:, :, None, None]).all(axis=(1, 2, 3))


# --- blockwise -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def blockwise_counts():
    return np.array([blockwise_mask(14, 14, 98, rng=rng(0, 0, i)).sum() for i in range(N_DRAWS)])


def test_blockwise_statistics_match_official(blockwise_counts):
    # the official MaskingGenerator (mask_generator.py:13-76) gives mean 97.5, min 88-89, exactly 98 in ~70 % of masks
    assert abs(blockwise_counts.mean() - 97.5) <= 0.3
    assert blockwise_counts.min() >= 85
    assert blockwise_counts.max() <= 98
    assert 0.65 <= (blockwise_counts == 98).mean() <= 0.75


def test_blockwise_rejects_impossible_count():
    with pytest.raises(ValueError, match="num_masked"):
        blockwise_mask(4, 4, 17, rng=rng(0))


# --- tube ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tube_draws():
    return np.stack([tube_mask(8, 14, 14, rng=rng(1, 0, i)) for i in range(N_DRAWS)])  # (N, 8, 14, 14)


def test_tube_properties(tube_draws):
    tok = masked_tokens(tube_draws)  # (N, 8)
    lengths = tok.sum(axis=1)
    assert same_plane_on_masked_tokens(tube_draws).all()
    assert set(lengths.tolist()) == {4, 5, 6, 7, 8}  # [int(0.5*8), 8]
    assert np.allclose(np.bincount(lengths, minlength=9)[4:] / N_DRAWS, 0.2, atol=0.03)  # uniform length
    starts = run_starts(tok)
    assert ((starts == 1) | (lengths == 8)).all()  # one cyclic run of masked tokens
    partial = tok[lengths < 8]
    wrapped = partial[:, 0] & partial[:, -1]  # run crosses the clip end: token 7 and token 0 both masked
    assert abs(wrapped.mean() - 18 / 32) < 0.03  # official wrap-around: P = mean over l=4..7 of (l-1)/8
    first = (partial & ~np.roll(partial, 1, axis=1)).argmax(axis=1)  # start token of each run
    assert set(first.tolist()) == set(range(8))  # start is uniform over all 8 positions, not only [0, t-l]


def test_tube_overall_ratio(tube_draws):
    ratios = tube_draws.mean(axis=(1, 2, 3))
    assert abs(ratios.mean() - 0.37) <= 0.02  # official: 25-50 %, mean ~37 %
    assert expected_tube_ratio(8, 14, 14) == 0.375  # 6/8 * 98/196, requested
    assert abs(ratios.mean() - 0.375) < 0.005  # blockwise falls a little short of 98
    assert ratios.max() <= 0.5 and ratios.min() >= 4 / 8 * 85 / 196


@pytest.mark.parametrize("tube_range, lo, hi", [((0.5, 1.0), 4, 8), ((0.25, 0.75), 2, 6),
                                                ((0.75, 1.0), 6, 8), ((1.0, 1.0), 8, 8)])  # BEVT Table 8 rows
def test_tube_length_variants(tube_range, lo, hi):
    masks = np.stack([tube_mask(8, 14, 14, tube_range=tube_range, rng=rng(5, 0, i)) for i in range(300)])
    assert set(masked_tokens(masks).sum(axis=1).tolist()) == set(range(lo, hi + 1))
    assert expected_tube_ratio(8, 14, 14, 0.5, tube_range) == (lo + hi) / 2 / 8 * 0.5


def test_tube_range_without_length_raises():
    with pytest.raises(ValueError, match="tube_range"):
        tube_mask(2, 14, 14, tube_range=(0.1, 0.4), rng=rng(0))  # int(0.4*2) = 0 < 1


# --- Table 8 ablations: each property holds for its own strategy and fails for the other three --------------

PROPERTIES = {
    # the same 2D mask on one cyclic run of tokens, and not always the whole clip
    "tube": lambda m: bool(same_plane_on_masked_tokens(m).all() and (run_starts(masked_tokens(m)) == 1).any()
                           and ((run_starts(masked_tokens(m)) == 1) | masked_tokens(m).all(1)).all()),
    # exactly 0.375 * 1568 = 588 cells in every draw, spread over every temporal token
    "random_3d": lambda m: bool((m.sum(axis=(1, 2, 3)) == 588).all() and masked_tokens(m).all()),
    # tube-shaped token run, but the 2D masks differ between tokens
    "frame_diff": lambda m: bool(((run_starts(masked_tokens(m)) == 1) | masked_tokens(m).all(1)).all()
                                 and not masked_tokens(m).all() and not same_plane_on_masked_tokens(m).all()),
    # the same 2D mask everywhere, but the tokens are not always one consecutive run
    "random_frame": lambda m: bool(same_plane_on_masked_tokens(m).all()
                                   and (run_starts(masked_tokens(m)) > 1).any()),
}


@pytest.fixture(scope="module")
def ablation_draws():
    return {s: np.stack([video_mask(s, 8, 14, 14, rng=rng(2, 0, i)) for i in range(100)])
            for s in VIDEO_MASK_STRATEGIES}


@pytest.mark.parametrize("prop", VIDEO_MASK_STRATEGIES)
@pytest.mark.parametrize("strategy", VIDEO_MASK_STRATEGIES)
def test_ablation_property_is_specific(ablation_draws, prop, strategy):
    assert PROPERTIES[prop](ablation_draws[strategy]) == (prop == strategy)


@pytest.mark.parametrize("strategy", ["tube", "frame_diff", "random_frame"])
def test_masked_tokens_carry_blockwise_planes(ablation_draws, strategy):
    masks = ablation_draws[strategy]
    planes = masks[masked_tokens(masks)].sum(axis=(1, 2))  # cells per masked token
    assert planes.max() <= 98 and planes.mean() > 95
    lengths = masked_tokens(masks).sum(axis=1)
    assert lengths.min() >= 4 and lengths.max() <= 8  # same length distribution as the tube


def test_unknown_strategy_names_it():
    with pytest.raises(ValueError, match="'cube'"):
        video_mask("cube", 8, 14, 14, rng=rng(0))


# --- determinism and no global random state --------------------------------------------------------------

def draw(strategy, key):
    if strategy == "image":
        return blockwise_mask(14, 14, 98, rng=rng(*key))
    return video_mask(strategy, 8, 14, 14, rng=rng(*key))


@pytest.mark.parametrize("strategy", ("image",) + VIDEO_MASK_STRATEGIES)
def test_same_seed_same_mask_other_index_other_mask(strategy):
    a = draw(strategy, (0, 3, 7))
    assert np.array_equal(a, draw(strategy, (0, 3, 7)))
    assert not np.array_equal(a, draw(strategy, (0, 3, 8)))  # other sample index
    assert not np.array_equal(a, draw(strategy, (0, 4, 7)))  # other epoch


def test_global_random_state_untouched_and_unused():
    np.random.seed(123)
    random.seed(123)
    np_state, py_state = np.random.get_state(), random.getstate()
    first = [draw(s, (9, 0, 0)) for s in ("image",) + VIDEO_MASK_STRATEGIES]
    mask_to_target_grid(mask_to_patch_grid(torch.from_numpy(first[1])[None], 4), 2)
    after = np.random.get_state()
    assert np_state[0] == after[0] and np.array_equal(np_state[1], after[1]) and np_state[2:] == after[2:]
    assert random.getstate() == py_state
    np.random.seed(456)
    random.seed(456)
    again = [draw(s, (9, 0, 0)) for s in ("image",) + VIDEO_MASK_STRATEGIES]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))  # masks ignore the global seeds


# --- hypothesis: any grid, any ratio ----------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(h=st.integers(1, 24), w=st.integers(1, 24), ratio=st.floats(0, 1), min_block=st.integers(1, 40),
       seed=st.integers(0, 2**32 - 1))
def test_blockwise_any_grid(h, w, ratio, min_block, seed):
    num = int(ratio * h * w)
    mask = blockwise_mask(h, w, num, min_block, rng=rng(seed))
    assert mask.shape == (h, w) and mask.dtype == np.bool_
    assert mask.sum() <= num


@settings(max_examples=150, deadline=None)
@given(strategy=st.sampled_from(VIDEO_MASK_STRATEGIES), t=st.integers(1, 10), h=st.integers(1, 16),
       w=st.integers(1, 16), ratio=st.floats(0, 1), lo=st.floats(0, 1), span=st.floats(0, 1),
       seed=st.integers(0, 2**32 - 1))
def test_video_mask_any_grid(strategy, t, h, w, ratio, lo, span, seed):
    tube_range = (lo, min(lo + span, 1.0))
    lo_len, hi_len = max(int(tube_range[0] * t), 1), min(int(tube_range[1] * t), t)
    if hi_len < lo_len:
        with pytest.raises(ValueError, match="tube_range"):
            video_mask(strategy, t, h, w, ratio, tube_range, rng=rng(seed))
        return
    mask = video_mask(strategy, t, h, w, ratio, tube_range, rng=rng(seed))
    assert mask.shape == (t, h, w) and mask.dtype == np.bool_
    per_frame = int(ratio * h * w)
    assert mask.sum() <= hi_len * per_frame  # never more than the longest tube of full planes
    if strategy == "random_3d":
        assert mask.sum() == int(expected_tube_ratio(t, h, w, ratio, tube_range) * (t * h * w))  # int(), as for 98
    else:
        assert mask.sum(axis=(1, 2)).max() <= per_frame
        assert masked_tokens(mask[None]).sum() <= hi_len


def test_random_3d_exact_count():
    assert random_3d_mask(4, 5, 6, 0.5, rng=rng(0)).sum() == 60


# --- token grid -> model grids ----------------------------------------------------------------------------

def test_mask_to_patch_grid_matches_official_nearest():
    mask = torch.from_numpy(np.stack([tube_mask(8, 14, 14, rng=rng(3, 0, i)) for i in range(2)]))  # (2, 8, 14, 14)
    patch = mask_to_patch_grid(mask, 4)
    assert patch.shape == (2, 8, 56, 56) and patch.dtype == torch.bool
    ref = F.interpolate(mask.float(), size=(56, 56), mode="nearest").bool()  # official
    assert torch.equal(patch, ref)
    image = mask[:, 0]  # (2, 14, 14)
    assert torch.equal(mask_to_patch_grid(image, 4), F.interpolate(image[:, None].float(), size=(56, 56))[:, 0].bool())


def test_mask_to_target_grid_repeats_each_token_over_its_frames():
    mask = torch.from_numpy(np.stack([tube_mask(8, 14, 14, rng=rng(4, 0, i)) for i in range(2)]))  # (2, 8, 14, 14)
    target = mask_to_target_grid(mask, 2)
    assert target.shape == (2, 16, 14, 14)
    assert torch.equal(target[:, 0::2], mask) and torch.equal(target[:, 1::2], mask)
    ref = F.interpolate(mask[:, None].float(), size=(16, 14, 14), mode="nearest")[:, 0].bool()  # official
    assert torch.equal(target, ref)


def test_grid_helpers_reject_non_bool():
    with pytest.raises(ValueError, match="bool"):
        mask_to_patch_grid(torch.zeros(14, 14), 4)
    with pytest.raises(ValueError, match="bool"):
        mask_to_target_grid(torch.zeros(2, 14, 14, dtype=torch.bool), 2)
