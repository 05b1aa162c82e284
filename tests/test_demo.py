"""demo.py: the mask picture; reconstruct's tokens and per-frame accuracy against the model's own loss count;
predict's probabilities against evaluate.py's test of the same checkpoint (and finetune.py's reported top-1);
features equal to the classifier's pooled features whatever the batch size or worker count, with an unreadable file
named and written as a NaN row. CPU, tiny models, the synthetic set."""
import csv
import dataclasses
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import data  # noqa: E402
import engine  # noqa: E402
import evaluate  # noqa: E402
import finetune  # noqa: E402
import readers  # noqa: E402
import run
import synthetic as synthetic_set  # noqa: E402
import tokenizer as tok  # noqa: E402
from masking import VIDEO_MASK_STRATEGIES, blockwise_mask, mask_to_target_grid, video_mask  # noqa: E402
from model import BEVT, PRESETS, VideoClassifier  # noqa: E402
from tools import demo  # noqa: E402

CPU = engine.Dist(False, 0, 0, 1, "cpu")


def rng(seed, index):
    return np.random.default_rng([seed, index])


def synthetic_test_set(classes=None):
    paths = synthetic_set.synthetic_paths(synthetic_set.synthetic_root())
    return readers.read_k400_csv(paths["k400_val_csv"], paths["mp4_root"], classes)


# --------------------------------------------------------------------------- masks (moved from test_masking.py)
def test_masks_writes_png_of_the_drawn_masks(tmp_path, capsys):
    out = tmp_path / "docs" / "masks.png"
    demo.main(["masks", "--out", str(out), "--seed", "3"])
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(out) as png:
        img = torch.from_numpy(np.array(png.convert("RGB"))).permute(2, 0, 1)  # (3, H, W)
    tile = 14 * 8 + 2  # grid * cell_px + padding
    assert img.shape == (3, 5 * tile + 2, 8 * tile + 2)
    gen = rng(3, 0)
    expected = [np.stack([blockwise_mask(14, 14, 98, rng=gen) for _ in range(8)])]
    expected += [video_mask(s, 8, 14, 14, rng=rng(3, r)) for r, s in enumerate(VIDEO_MASK_STRATEGIES, 1)]
    centres = 2 + torch.arange(14) * 8 + 4  # pixel at the centre of each mask cell inside a tile
    for r, masks in enumerate(expected):
        for c in range(8):
            cells = img[0][r * tile + centres[:, None], c * tile + centres[None, :]]  # (14, 14)
            assert torch.equal(cells < 128, torch.from_numpy(masks[c]))  # masked = dark
    assert str(out) in capsys.readouterr().out


def test_masks_bad_flag_is_named(tmp_path):
    with pytest.raises(SystemExit, match="--out"):
        demo.main(["masks", "--out", str(tmp_path / "masks.jpg")])
    assert not (tmp_path / "masks.jpg").exists()


# --------------------------------------------------------------------------- reconstruct
@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A random nano BEVT and a random small VQ (32-px views), saved as train.py saves them."""
    folder = tmp_path_factory.mktemp("pretrain")
    torch.manual_seed(0)
    vq = tok.VQTokenizer(tok.VQConfig(size=32, vocab_size=64))
    vq.codebook.copy_(torch.nn.functional.normalize(torch.randn(64, vq.cfg.code_dim), dim=-1))
    tok.save_tokenizer(vq, folder / "vq.pt")
    mcfg = dataclasses.replace(PRESETS["nano"], vocab_size=64, window_size=(2, 2, 2))
    model = BEVT(mcfg)
    config = dict(img_size=64, clip_len=4, frame_interval=2, rescale=(73, 80), mask_ratio=0.5, tube_range=(0.5, 1.0),
                  mask_strategy="tube", tokenizer="")
    state = {"model": model.state_dict(), "model_config": dataclasses.asdict(mcfg), "config": config, "step": 3,
             "tokenizer": str(folder / "vq.pt")}
    torch.save(state, folder / "ckpt_00000003.pt")
    return folder, model.eval(), tok.load_tokenizer(folder / "vq.pt", "cpu")


def test_reconstruct_tokens_and_accuracy_match_the_model(pretrained, tmp_path, capsys):
    folder, model, vq = pretrained
    video = synthetic_test_set()[0][5].path
    out = demo.main(["reconstruct", "--ckpt", str(folder / "ckpt_00000003.pt"), "--video", video, "--seed", "4",
                     "--out", str(tmp_path / "rec.png"), "--gif", str(tmp_path / "rec.gif")])
    # the same clip, mask and targets built by hand: centre clip, short side 73 bicubic, centre 64 crop, tube mask
    crops = demo.centre_clip(video, 64, 4, 2, 73)  # (3, 4, 64, 64)
    mask = video_mask("tube", 2, 4, 4, 0.5, (0.5, 1.0), rng=np.random.default_rng(4))  # (T', h, w)
    ids = vq.encode(data.tokenizer_view(crops.transpose(0, 1)))  # (T, 4, 4)
    target_mask = mask_to_target_grid(torch.from_numpy(mask)[None], 2)[0]
    assert torch.equal(out["ids"], ids) and torch.equal(out["mask"], target_mask)
    with torch.no_grad():  # the model's own count of right predictions at the masked positions
        _, correct, masked = model(video=data.normalize_batch(crops[None]), video_mask=torch.from_numpy(mask)[None],
                                   video_ids=ids[None])["video"]
    assert (out["pred"] == ids)[target_mask].sum().item() == correct.item() and masked.item() == target_mask.sum()
    per_frame = [a for a in out["accuracy"] if a is not None]
    counts = target_mask.flatten(1).sum(1)[target_mask.flatten(1).any(1)]
    assert sum(a * n for a, n in zip(per_frame, counts.tolist())) == pytest.approx(correct.item())
    with Image.open(tmp_path / "rec.png") as png:
        assert png.size == (4 * 66 + 2, 5 * 66 + 2)  # 4 frames x 5 rows of 64-px tiles, 2-px padding
        img = np.array(png.convert("RGB"))
    masked_row = img[66 + 2:2 * 66, 66 + 2:2 * 66]  # row 2, frame 1 (no label): grey 0.5 where masked
    cell_grey = (masked_row[8::16, 8::16] == 128).all(-1)  # (4, 4) cell centres
    assert np.array_equal(cell_grey, target_mask[1].numpy())
    with Image.open(tmp_path / "rec.gif") as gif:
        assert gif.n_frames == 4
    assert "masked-token accuracy" in capsys.readouterr().out


def test_reconstruct_without_a_tokenizer_names_the_flag(pretrained, tmp_path):
    folder, model, _ = pretrained
    state = torch.load(folder / "ckpt_00000003.pt", weights_only=True)
    del state["tokenizer"]
    torch.save(state, tmp_path / "ckpt_00000001.pt")
    with pytest.raises(SystemExit, match="--tokenizer"):
        demo.main(["reconstruct", "--ckpt", str(tmp_path / "ckpt_00000001.pt"), "--out", str(tmp_path / "r.png")])
    assert not (tmp_path / "r.png").exists()


# --------------------------------------------------------------------------- predict and features
@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """finetune.py for two steps on the synthetic set (nano, 64 px, 4 frames), tested with 2 clips x 3 crops."""
    out = tmp_path_factory.mktemp("finetune")
    flags = dict(model="nano", init="none", out_dir=str(out), img_size=64, train_short_side=73, test_short_side=64,
                 clip_len=4, sampling="dense", videos_per_gpu=2, accum=1, max_steps=2, num_workers=0, log_every=1,
                 save_every=2, test_clips=2, test_crops=3, test_batch=16, dtype="float32", window_size=(2, 2, 2))
    finetune.main(run.as_flags(flags))
    return run.latest_checkpoint(out), json.loads((out / "eval.json").read_text())


def reference_probabilities(ckpt_path, records):
    """evaluate.py's multi-view test of the checkpoint, the model built by hand from what finetune.py saved."""
    state = torch.load(ckpt_path, weights_only=True)
    mcfg = dataclasses.replace(PRESETS["nano"], **{k: tuple(v) if isinstance(v, list) else v
                                                  for k, v in state["model_config"].items()})
    model = VideoClassifier(mcfg, len(state["classes"]), head_dropout=0.0)
    model.load_state_dict(state["model"])
    recipe = SimpleNamespace(**state["config"])
    ds = evaluate.test_dataset(records, recipe)
    loader = data.make_loader(ds, 5, train=False, num_workers=0, seed=0, distributed=False)
    prob_sum, views, _, _ = evaluate.evaluate(model, loader, len(records), len(state["classes"]), CPU)
    assert views.tolist() == [6] * len(records)
    return prob_sum / views[:, None], model


def test_predict_gives_evaluate_probabilities_and_finetune_top1(finetuned, tmp_path, capsys):
    ckpt_path, report = finetuned
    classes = torch.load(ckpt_path, weights_only=True)["classes"]
    records, _ = synthetic_test_set(classes)
    paths = [r.path for r in records]
    probs = demo.main(["predict", "--ckpt", str(ckpt_path), "--video", *paths, "--out", str(tmp_path / "p.csv"),
                       "--batch", "7", "--num-workers", "0"])
    reference, _ = reference_probabilities(ckpt_path, records)
    torch.testing.assert_close(probs.double(), reference.double(), rtol=0, atol=1e-6)
    assert torch.equal(probs.argmax(1), reference.argmax(1))
    labels = torch.tensor([r.label for r in records])
    top1 = 100.0 * (probs.argmax(1) == labels).double().mean().item()
    assert top1 == pytest.approx(report["results"]["normal"]["top1"])  # what finetune.py printed and saved
    rows = list(csv.reader(open(tmp_path / "p.csv")))
    assert len(rows) == 1 + len(records) and rows[1][0] == paths[0]
    assert rows[1][1] == classes[int(probs[0].argmax())] and float(rows[1][2]) == pytest.approx(probs[0].max().item(), abs=1e-6)
    assert "clips x 3 crops" in capsys.readouterr().out


def test_features_are_the_pooled_features_across_batches_and_workers(finetuned, tmp_path, capsys):
    ckpt_path, _ = finetuned
    classes = torch.load(ckpt_path, weights_only=True)["classes"]
    records, _ = synthetic_test_set(classes)
    records = records[:4]
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    lines = [f"{r.path} {r.label}" for r in records[:2]] + ["broken.mp4 0"] + [f"{r.path} {r.label}" for r in records[2:]]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    runs = {}
    for batch, workers in (("1", "0"), ("4", "2")):
        out = tmp_path / f"f{batch}.npy"
        with pytest.raises(SystemExit, match="1 unreadable.*broken.mp4"):
            demo.main(["features", "--ckpt", str(ckpt_path), "--ann", str(tmp_path / "list.txt"), "--root",
                       str(tmp_path), "--out", str(out), "--per-view", "true", "--batch", batch, "--num-workers",
                       workers])
        runs[batch] = np.load(out)  # written although one file failed
    assert runs["1"].shape == (5, 6, 256)  # 5 videos x (2 clips x 3 crops) x C8
    assert np.isnan(runs["1"][2]).all() and np.isfinite(np.delete(runs["1"], 2, 0)).all()
    np.testing.assert_allclose(runs["1"], runs["4"], rtol=0, atol=1e-5)
    # the head on the per-view features gives predict's (= evaluate's) probabilities: the classifier's pooled features
    reference, model = reference_probabilities(ckpt_path, records)
    feats = torch.from_numpy(np.delete(runs["1"], 2, 0))  # (4, 6, C8)
    with torch.no_grad():
        probs = model.head(feats).double().softmax(-1).mean(1)  # (4, C)
    torch.testing.assert_close(probs, reference.double(), rtol=0, atol=1e-5)
    assert (tmp_path / "f1.txt").read_text().splitlines()[2] == str(tmp_path / "broken.mp4")
    assert "features: 5/5 videos" in capsys.readouterr().err
