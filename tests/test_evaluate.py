"""evaluate.py: multi-view probability averaging and top-k, also across 2 gloo ranks with an uneven last batch, and
the Table 2 frame transforms (Single-frame, Random-Shuffling) as pure functions of (T, rng)."""
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import data  # noqa: E402
import evaluate  # noqa: E402
from engine import Dist  # noqa: E402

CPU = Dist(False, 0, 0, 1, "cpu")


# ----------------------------------------------------------------------------------------------------------------------
# multi-view averaging, top-k, 2 gloo ranks with an uneven last batch


class LogitsInPixels(torch.nn.Module):
    """A fake classifier whose logits are written in the clip itself: video[:, 0, 0, 0, :C]."""

    def forward(self, video):
        return video[:, 0, 0, 0, :]


NUM_CLASSES, VIEWS = 7, 3


def view_logits(video, view):
    """Per-video views that disagree. Video 0: view 0 is sure of class 1, views 1-2 lean to class 2 -> averaged
    probabilities say 1 while averaged logits would say 2. Other videos: the label ranks 1st, 3rd, or 6th."""
    g = torch.Generator().manual_seed(1000 * video + view)
    x = torch.randn(NUM_CLASSES, generator=g) * 0.02  # views differ a little; ranks are 0.5 apart
    if video == 0:
        x[1], x[2] = (12.0, 0.0) if view == 0 else (-7.0, 1.0)
        return x
    label, rank = video % NUM_CLASSES, (0, 2, 5)[video % 3]
    order = [c for c in range(NUM_CLASSES) if c != label]
    order.insert(rank, label)
    for i, c in enumerate(order):
        x[c] += 5.0 - 0.5 * i
    return x


class FakeViews(torch.utils.data.Dataset):
    def __init__(self, num_videos):
        self.n = num_videos

    def __len__(self):
        return self.n * VIEWS

    def __getitem__(self, index):
        v, view = divmod(index, VIEWS)
        video = torch.zeros(3, 2, 1, NUM_CLASSES)
        video[0, 0, 0] = view_logits(v, view)
        return {"video": video, "label": 1 if v == 0 else v % NUM_CLASSES, "video_index": v, "unreadable": v == 5}


def expected(num_videos):
    probs = torch.stack([torch.stack([view_logits(v, w).double().softmax(-1) for w in range(VIEWS)]).mean(0)
                         for v in range(num_videos)])
    labels = torch.tensor([1 if v == 0 else v % NUM_CLASSES for v in range(num_videos)])
    ranks = (probs > probs.gather(1, labels[:, None])).sum(1)  # 0 = top-1
    return probs, labels, ranks


def test_multiview_averages_probabilities_and_topk():
    n = 8
    loader = data.make_loader(FakeViews(n), 5, train=False, num_workers=0, seed=0, distributed=False)
    prob_sum, views, labels, unreadable = evaluate.evaluate(LogitsInPixels(), loader, n, NUM_CLASSES, CPU)
    probs, exp_labels, ranks = expected(n)
    assert unreadable.tolist() == [v == 5 for v in range(n)]
    torch.testing.assert_close(prob_sum / VIEWS, probs)
    assert views.tolist() == [VIEWS] * n and labels.tolist() == exp_labels.tolist()
    assert probs[0].argmax() == 1 and torch.stack([view_logits(0, w) for w in range(VIEWS)]).mean(0).argmax() == 2
    m = evaluate.metrics(prob_sum, views, labels, VIEWS, groups={"a": [1, 2], "b": [0, 3, 4, 5, 6]},
                         unreadable=unreadable)
    assert m["unreadable_videos"] == 1
    assert ranks.tolist() == [0, 2, 5, 0, 2, 5, 0, 2]  # label rank per video, by construction
    assert m["groups"] == {"a": pytest.approx(100 / 3), "b": pytest.approx(200 / 5)}  # videos 0,1,2 | 3,4,5,6,7
    assert m["top1"] == pytest.approx(100 * 3 / 8) and m["top5"] == pytest.approx(100 * 6 / 8)
    assert m["class_count"][1] == 2 and m["per_class"][1] == pytest.approx(50.0)  # videos 0 (hit) and 1 (rank 2)
    with pytest.raises(RuntimeError, match="not seen exactly 3 times"):
        evaluate.metrics(prob_sum, views - torch.eye(n)[4], labels, VIEWS)


def _rank_worker(rank, world, port, n, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    env = Dist(True, rank, rank, world, "cpu")
    loader = data.make_loader(FakeViews(n), 4, train=False, num_workers=0, seed=0, distributed=True)
    sizes = [len(b["label"]) for b in loader]
    result = evaluate.evaluate(LogitsInPixels(), loader, n, NUM_CLASSES, env)
    torch.save({"result": result, "sizes": sizes}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_multiview_across_two_gloo_ranks_uneven_last_batch(tmp_path):
    n = 7  # 21 views: ranks get 11 and 10 -> batches of 4 end with 3 and 2
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank_worker, args=(2, port, n, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["sizes"] == [4, 4, 3] and r1["sizes"] == [4, 4, 2]
    for a, b in zip(r0["result"], r1["result"]):
        torch.testing.assert_close(a, b)  # every rank holds the whole set
    single = evaluate.evaluate(LogitsInPixels(), data.make_loader(FakeViews(n), 4, False, 0, 0, False), n,
                               NUM_CLASSES, CPU)
    for a, b in zip(r0["result"], single):
        torch.testing.assert_close(a, b)
    prob_sum, views, labels, _ = r0["result"]
    assert views.tolist() == [VIEWS] * n  # no view dropped or counted twice
    _, _, ranks = expected(n)
    m = evaluate.metrics(prob_sum, views, labels, VIEWS)
    assert m["top1"] == pytest.approx(100 * (ranks == 0).sum().item() / n)
    assert m["top5"] == pytest.approx(100 * (ranks < 5).sum().item() / n)


# ----------------------------------------------------------------------------------------------------------------------
# Table 2 transforms


@settings(max_examples=60, deadline=None)
@given(t=st.integers(1, 64), seed=st.integers(0, 2**32 - 1))
def test_single_frame_and_shuffle_index_patterns(t, seed):
    one = evaluate.single_frame_indices(t, np.random.default_rng(seed))
    assert one.shape == (t,) and len(set(one.tolist())) == 1 and 0 <= one[0] < t
    perm = evaluate.shuffle_indices(t, np.random.default_rng(seed))
    assert sorted(perm.tolist()) == list(range(t))
    assert (evaluate.shuffle_indices(t, np.random.default_rng(seed)) == perm).all()  # a function of (T, rng)


def test_single_frame_hits_every_frame_and_shuffle_reorders():
    picks = {int(evaluate.single_frame_indices(8, np.random.default_rng(s))[0]) for s in range(200)}
    assert picks == set(range(8))
    perms = [tuple(evaluate.shuffle_indices(8, np.random.default_rng(s))) for s in range(200)]
    assert sum(p == tuple(range(8)) for p in perms) <= 1 and len(set(perms)) > 190


def test_temporal_transform_on_clips():
    B, T = 5, 6
    video = torch.arange(T, dtype=torch.float32).view(1, 1, T, 1, 1).expand(B, 3, T, 4, 4).clone()  # frame t = t
    index = torch.tensor([3, 9, 3, 4, 0])
    static = evaluate.temporal_transform(video, index, "single-frame", seed=0)
    frames = static[:, 0, :, 0, 0]  # (B, T)
    assert (frames == frames[:, :1]).all() and torch.equal(frames[0], frames[2])  # same video -> same pattern
    shuffled = evaluate.temporal_transform(video, index, "shuffle", seed=0)[:, 0, :, 0, 0]
    assert all(sorted(row.tolist()) == list(range(T)) for row in shuffled)
    alone = evaluate.temporal_transform(video[1:2], index[1:2], "shuffle", seed=0)[:, 0, :, 0, 0]
    assert torch.equal(alone[0], shuffled[1])  # independent of the rest of the batch
    assert torch.equal(evaluate.temporal_transform(video, index, "none", 0), video)
