"""Multi-view testing and the temporal-dependency test (BEVT Table 2), for finetune.py and the tools.

Each video is tested on several views (official test pipelines: K400 4 clips x 3 crops,
configs/recognition/swin/swin_base_patch244_window877_bevt_finetune_k400.py:45-56; SSv2 1 clip x 3 crops) and its
softmax probabilities are averaged over them (official: average_clips='prob', configs/_base_/models/swin/
swin_tiny.py:24, the base of swin_base.py). BEVT §4.2 Table 2: the same test on static (Single-frame) or shuffled
(Random-Shuffling) clips measures how much a model depends on temporal order.

The test recipe is read from any object with the fields of finetune.FinetuneConfig that name it (sampling, clip_len,
frame_interval, img_size, test_short_side, test_clips, test_crops, test_batch, num_workers, seed, dtype): the run's
config, or a checkpoint's saved config (`types.SimpleNamespace(**ckpt["config"])`).
"""
import json
from pathlib import Path

import numpy as np
import torch

import data
import engine


# ----------------------------------------------------------------------------------------------------------------------
# Table 2 temporal test: frame-index transforms, pure functions of (T, rng)


def single_frame_indices(t, rng):
    """BEVT §4.2 Table 2 "Single-frame": one random frame replaces every other frame -> a static clip."""
    return np.full(t, rng.integers(t), dtype=np.int64)


def shuffle_indices(t, rng):
    """BEVT §4.2 Table 2 "Random-Shuffling": the frames in a random temporal order."""
    return rng.permutation(t).astype(np.int64)


def temporal_transform(video, video_index, kind, seed):
    """Applies the Table 2 transform to a batch (B, 3, T, H, W); each clip's rng is default_rng([seed, video index]),
    so the result does not depend on batching or the number of ranks (all views of a video share the pattern)."""
    if kind == "none":
        return video
    make = single_frame_indices if kind == "single-frame" else shuffle_indices
    idx = np.stack([make(video.shape[2], np.random.default_rng([seed, int(v)])) for v in video_index])  # (B, T)
    idx = torch.from_numpy(idx).to(video.device)
    return torch.stack([clip.index_select(1, i) for clip, i in zip(video, idx)])  # (B, 3, T, H, W)


# ----------------------------------------------------------------------------------------------------------------------
# multi-view evaluation: softmax probabilities averaged per video over its views, metrics over the whole set


@torch.no_grad()
def evaluate(model, batches, num_videos, num_classes, env, dtype="float32", temporal="none", seed=0):
    """Sums softmax probabilities, view counts, labels and unreadable views per video over this rank's batches
    ({"video", "label", "video_index", "unreadable"}) and all-reduces them, so every rank holds the whole set. Returns
    (prob_sum (N, C), views (N,), labels (N,), unreadable (N,) bool: a view of the video could not be decoded and was
    scored as a blank clip); a video seen by no rank has 0 views (`metrics` refuses that)."""
    model.eval()
    prob_sum = torch.zeros(num_videos, num_classes, dtype=torch.float64, device=env.device)
    views = torch.zeros(num_videos, dtype=torch.float64, device=env.device)
    label_sum = torch.zeros(num_videos, dtype=torch.float64, device=env.device)
    blank = torch.zeros(num_videos, dtype=torch.float64, device=env.device)
    for b in batches:
        video = temporal_transform(b["video"].to(env.device, non_blocking=True), b["video_index"], temporal, seed)
        with engine.autocast_context(env.device, dtype):
            logits = model(video)  # (B, C)
        index = b["video_index"].to(env.device, non_blocking=True)
        prob_sum.index_add_(0, index, logits.float().softmax(-1).double())  # official: average_clips='prob'
        views.index_add_(0, index, torch.ones_like(index, dtype=torch.float64))
        label_sum.index_add_(0, index, b["label"].to(env.device, torch.float64))
        blank.index_add_(0, index, b["unreadable"].to(env.device, torch.float64))
    for t in (prob_sum, views, label_sum, blank):
        engine.all_sum(t, env)
    labels = (label_sum / views.clamp(min=1)).round().long()
    return prob_sum.cpu(), views.cpu(), labels.cpu(), blank.cpu() > 0


def metrics(prob_sum, views, labels, expected_views, groups=None, topk=(1, 5), unreadable=None):
    """Top-k accuracy (%) over videos of the averaged probabilities, per-class top-1 (%, NaN for an empty class) and
    top-1 over the videos of each group of classes ({name: [labels]}, e.g. the synthetic appearance / motion classes),
    and how many videos had a view that could not be read (`unreadable`, scored as blank clips). Every video must have
    been seen exactly `expected_views` times (none dropped or counted twice)."""
    bad = (views != expected_views).nonzero().flatten()
    if len(bad):
        raise RuntimeError(f"{len(bad)} videos were not seen exactly {expected_views} times, e.g. video "
                           f"{int(bad[0])} {int(views[bad[0]])} times")
    probs = prob_sum / views[:, None]  # (N, C) mean over views
    C = probs.shape[1]
    ranked = probs.topk(min(max(topk), C), dim=1).indices  # (N, k)
    hit = ranked == labels[:, None]  # (N, k)
    out = {f"top{k}": 100.0 * hit[:, :k].any(1).double().mean().item() for k in topk}
    correct = torch.zeros(C, dtype=torch.float64).index_add_(0, labels, hit[:, 0].double())
    total = torch.zeros(C, dtype=torch.float64).index_add_(0, labels, torch.ones_like(labels, dtype=torch.float64))
    out["per_class"] = (100.0 * correct / total).tolist()  # NaN where a class has no test video
    out["class_count"] = total.long().tolist()
    out["unreadable_videos"] = int(unreadable.sum()) if unreadable is not None else 0
    out["groups"] = {g: 100.0 * correct[c].sum().item() / max(total[c].sum().item(), 1)
                     for g, c in (groups or {}).items()}
    return out


# ----------------------------------------------------------------------------------------------------------------------
# the test set of a recipe


def test_dataset(records, recipe):
    """The official test views of `records`: recipe.test_clips clips x recipe.test_crops crops (ThreeCrop or the
    centre) of short side recipe.test_short_side, dense or uniform sampling as in training."""
    return data.FinetuneVideoDataset(records, train=False, sampling=recipe.sampling, clip_len=recipe.clip_len,
                                     frame_interval=recipe.frame_interval, num_clips=recipe.test_clips,
                                     num_crops=recipe.test_crops, crop=recipe.img_size,
                                     short_side=recipe.test_short_side, seed=recipe.seed)


def run_eval(model, records, num_classes, recipe, env, temporal="none", groups=None):
    """The multi-view test of `records` (optionally under a Table 2 transform) -> metrics()."""
    engine.same_on_all_ranks(len(records), env, "the number of test videos")  # the all-reduced tensors' size
    ds = test_dataset(records, recipe)
    loader = data.make_loader(ds, recipe.test_batch, train=False, num_workers=recipe.num_workers, seed=recipe.seed,
                              distributed=env.ddp)
    prob_sum, views, labels, unreadable = evaluate(model, loader, len(records), num_classes, env, recipe.dtype,
                                                   temporal, recipe.seed)
    return metrics(prob_sum, views, labels, ds.views, groups, unreadable=unreadable)


def report(results, classes, env, out_dir):
    """Prints top-1/top-5 (and the temporal test beside it with the drop), the group table, the per-class table."""
    if not env.master:
        return
    normal, others = results["normal"], [(k, m) for k, m in results.items() if k != "normal"]
    rows = [("all classes", lambda m: m["top1"])] + [(f"{g} classes", lambda m, g=g: m["groups"][g])
                                                     for g in normal["groups"]]
    if normal["unreadable_videos"]:
        print(f"warning: {normal['unreadable_videos']} of {sum(normal['class_count'])} "
              f"test videos could not be read and were scored as blank clips (listed above; `python -m tools.dataset "
              f"check` names them)")
    print(f"test top-5 {normal['top5']:.2f}; top-1:")
    for name, get in rows:  # BEVT Table 2 layout: normal, then each temporal test with its drop
        print(f"  {name:<20} {get(normal):6.2f}" + "".join(f" | {k} {get(m):6.2f} (drop {get(normal) - get(m):.2f})"
                                                          for k, m in others))
    table = list(zip(classes, normal["class_count"], normal["per_class"]))
    path = Path(out_dir) / "eval.json"
    path.write_text(json.dumps({"results": results, "classes": classes}, indent=1))
    if len(table) <= 60:
        print("per-class top-1:\n" + "\n".join(f"  {c:<32} {n:5d} videos {acc:6.2f}" for c, n, acc in table))
    print(f"all numbers (the per-class table included) in {path}")
