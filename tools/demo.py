"""Pictures and tools on what BEVT trained, one subcommand each. Each runs with no arguments on the embedded default:
the newest checkpoint of `python train.py` (runs/synthetic_joint) or `python finetune.py` (runs/synthetic_finetune)
and a video of the synthetic set.

    python -m tools.demo masks --out masks.png    # sampled masks: image blockwise, then each video strategy (Table 8)
    python -m tools.demo reconstruct --ckpt PRETRAIN.pt --video FILE --out rec.png [--gif rec.gif]   # or --image FILE
    python -m tools.demo predict --ckpt FINETUNED.pt --video FILE [FILE ...] [--out preds.csv]      # or --video DIR
    python -m tools.demo features --ckpt ANY.pt --ann LIST --root DIR --out feats.npy [--per-view true]

reconstruct: BEVT §3, Eq. (2) at work: the clip, its mask, the tokenizer's target tokens and the model's predictions
at the masked positions, decoded back to pixels (the small VQ's decoder; a DALL-E encoder has no decoder here, so its
tokens are drawn as colour maps, one fixed colour per id). predict: top-5 classes with the multi-view test of the
checkpoint's recipe (evaluate.py, the same numbers as finetune.py's test). features: the pooled encoder features
(final norm + global average pool, C8 values per video) of any checkpoint format convert.py reads.
"""
import csv
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.utils import save_image

import convert
import data
import engine
import evaluate
import readers
import run
import synthetic as synthetic_set
import tokenizer as tok
from masking import VIDEO_MASK_STRATEGIES, blockwise_mask, mask_to_patch_grid, mask_to_target_grid, video_mask
from model import BEVT, PRESETS, ModelConfig, VideoClassifier
from run import parse_flags, ranged

PRETRAIN_DIR, FINETUNE_DIR = "runs/synthetic_joint", "runs/synthetic_finetune"  # the scripts' embedded defaults


# --------------------------------------------------------------------------- masks
@dataclass
class MasksConfig:
    out: str = "masks.png"  # where the PNG goes (parent folders are created)
    seed: int = ranged(0, min=0)  # row r is drawn with np.random.default_rng([seed, r])
    t: int = ranged(8, min=1)  # temporal tokens: official clip_len 16 / temporal patch 2
    grid: int = ranged(14, min=1)  # H' = W': 224 px / 16 (official input_size=14)
    ratio_per_frame: float = ranged(0.5, above=0, max=1)  # BEVT §3: masking ratio of each masked frame
    cell_px: int = ranged(8, min=1)  # PNG pixels per mask cell


def parse_masks_args(argv):
    cfg = MasksConfig(**parse_flags(MasksConfig, argv, "Draw sampled BEVT masks as a PNG grid."))
    if not cfg.out.lower().endswith(".png"):
        raise SystemExit(f"--out must name a .png file, got {cfg.out!r}")
    for name in ("t", "grid", "cell_px"):
        if getattr(cfg, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if not 0.0 <= cfg.ratio_per_frame <= 1.0:
        raise SystemExit(f"--ratio-per-frame must be in [0, 1], got {cfg.ratio_per_frame}")
    return cfg


def draw_masks(cfg):
    """Row 0: t independent image (blockwise) masks; rows 1..4: the t temporal tokens of one clip per strategy
    in VIDEO_MASK_STRATEGIES order. Returns (rows*t, 1, grid*cell_px, grid*cell_px) float, masked = dark."""
    num_masked = int(cfg.ratio_per_frame * cfg.grid * cfg.grid)  # 98 of 196 at the defaults, as masking.py counts
    rng = np.random.default_rng([cfg.seed, 0])
    rows = [np.stack([blockwise_mask(cfg.grid, cfg.grid, num_masked, rng=rng) for _ in range(cfg.t)])]  # (T', H', W')
    for r, strategy in enumerate(VIDEO_MASK_STRATEGIES, start=1):
        rows.append(video_mask(strategy, cfg.t, cfg.grid, cfg.grid, cfg.ratio_per_frame,
                               rng=np.random.default_rng([cfg.seed, r])))  # (T', H', W')
    masks = torch.from_numpy(np.concatenate(rows))[:, None]  # (rows*T', 1, H', W')
    masks = mask_to_patch_grid(masks, cfg.cell_px)  # (rows*T', 1, H'*cell_px, W'*cell_px)
    return torch.where(masks, 0.15, 0.95)  # masked cells dark grey, visible cells near white


def masks(argv):
    cfg = parse_masks_args(argv)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(draw_masks(cfg), out, nrow=cfg.t, padding=2, pad_value=0.55)
    print(f"wrote {out}: {1 + len(VIDEO_MASK_STRATEGIES)} rows x {cfg.t} columns "
          f"(rows: image blockwise, then {', '.join(VIDEO_MASK_STRATEGIES)}; columns: temporal tokens)")
    return out


# --------------------------------------------------------------------------- shared: checkpoints, inputs, drawing
def find_checkpoint(path, default_dir, needs=()):
    """The checkpoint at `path` (default: the newest in default_dir), checked to hold the keys `needs`."""
    path = path or run.latest_checkpoint(default_dir)
    if path is None:
        raise SystemExit(f"no --ckpt given and no checkpoint in {default_dir} (run `python "
                         f"{'train' if default_dir == PRETRAIN_DIR else 'finetune'}.py` first)")
    state = convert.load_checkpoint(path)
    missing = [k for k in needs if not (isinstance(state, dict) and k in state)]
    if missing:
        raise SystemExit(f"--ckpt {path}: no {missing} in it (written by train.py / finetune.py of this repo?)")
    return Path(path), state


def synthetic_records(classes=None):
    """(the synthetic set's test videos, the embedded default's input; class names), labels indexed by `classes`."""
    paths = synthetic_set.synthetic_paths(synthetic_set.synthetic_root())
    return readers.read_k400_csv(paths["k400_val_csv"], paths["mp4_root"], classes)


def centre_clip(path, img_size, clip_len, frame_interval, short_side):
    """Pretraining's sampling made deterministic: the centre clip (SampleFrames test mode), short side `short_side`
    bicubic (the smallest RandomRescale of pretraining), the centre img_size crop. -> uint8 (3, T, S, S)."""
    pick = lambda n: data.dense_indices(n, clip_len, frame_interval, 1, False, None)[0]  # noqa: E731
    frames = data.resize_short(readers.read_frames(path, pick), short_side, cv2.INTER_CUBIC)  # (T, H, W, 3)
    return data.to_clip(data.fixed_crop(frames, img_size, 0, 1))  # (3, T, S, S)


def token_colours(ids, vocab_size):
    """A fixed colour per token id (the same palette in every picture): ids (...) -> float (..., 3) in [0.1, 0.9]."""
    palette = torch.rand(vocab_size, 3, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1  # (V, 3)
    return palette[ids]


def label_tile(tile, text):
    """float (3, h, w) in [0, 1] -> the same with `text` written in its top-left corner (white on black)."""
    if not text:
        return tile
    img = Image.fromarray((tile.clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy())
    draw = ImageDraw.Draw(img)
    box = draw.textbbox((2, 1), text)
    draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(0, 0, 0))
    draw.text((2, 1), text, fill=(255, 255, 255))
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255  # (3, h, w)


# --------------------------------------------------------------------------- reconstruct
@dataclass
class ReconstructConfig:
    ckpt: str = ""  # a pretraining checkpoint of train.py; default: the newest in runs/synthetic_joint
    video: str = ""  # default: a video of the synthetic set
    image: str = ""  # an image instead of a video (the image stream, blockwise mask)
    tokenizer: str = ""  # the target tokenizer .pt; default: the one the checkpoint names
    out: str = "rec.png"
    gif: str = ""  # also an animated GIF, one frame per video frame
    seed: int = ranged(0, min=0)  # the mask: np.random.default_rng(seed)
    index: int = ranged(0, min=0)  # which synthetic test video (without --video / --image)


def tokenizer_path(cfg, state, ckpt_path):
    path = cfg.tokenizer or state.get("tokenizer") or state["config"].get("tokenizer")
    if not path:
        raise SystemExit(f"{ckpt_path} does not name its tokenizer: pass --tokenizer FILE (the .pt it was trained "
                         f"with)")
    if not Path(path).is_file():
        raise SystemExit(f"tokenizer {path} (named by {'--tokenizer' if cfg.tokenizer else ckpt_path}): no such file; "
                         f"pass --tokenizer FILE")
    return path


@torch.no_grad()
def predict_tokens(model, tokenizer, crops, stream_mask, video):
    """crops uint8 (3, T, S, S) (T = 1 for an image), stream_mask bool (T', S/16, S/16) -> (target ids, predicted
    ids, mask on the target grid), each (T, S/16, S/16): BEVT Eq. (1)-(2) in eval mode."""
    views = data.tokenizer_view(crops.transpose(0, 1))  # (T, 3, S/2, S/2)
    ids = tokenizer.encode(views)  # (T, S/16, S/16)
    x = data.normalize_batch(crops[None])  # (1, 3, T, S, S)
    mask = torch.from_numpy(stream_mask)[None]  # (1, T', S/16, S/16)
    if video:
        feats = model.decoder(*model.forward_encoder(x, mask))  # (1, T, h, w, C8)
        target_mask = mask_to_target_grid(mask, model.cfg.patch_size[0])  # (1, T, h, w)
    else:
        feats = model.decoder(*model.forward_encoder(x[:, :, 0], mask[:, 0])).unsqueeze(1)  # (1, 1, h, w, C8)
        target_mask = mask
    pred = model.lm_head(model.encoder.norm(feats)).argmax(-1)  # (1, T, h, w)
    return ids, pred[0], target_mask[0]


@torch.no_grad()
def decode(tokenizer, ids):
    """ids (T, h, w) -> float (T, 3, 8h, 8w) in [0, 1]: the VQ decoder, else the colour map of the ids."""
    if isinstance(tokenizer, tok.VQTokenizer):
        return tokenizer.decoder(tokenizer.codebook[ids].permute(0, 3, 1, 2)).clamp(0, 1)  # (T, 3, 8h, 8w)
    colours = token_colours(ids, tokenizer.vocab_size).permute(0, 3, 1, 2)  # (T, 3, h, w)
    return colours.repeat_interleave(8, -2).repeat_interleave(8, -1)  # (T, 3, 8h, 8w)


def reconstruction_rows(crops, ids, pred, mask, tokenizer):
    """The picture's rows, each (T, 3, S, S) float: the frames, the masked frames, the target tokens decoded, the
    predictions at masked positions (targets elsewhere) decoded, and green / red / grey = right / wrong / visible."""
    T, S = crops.shape[1], crops.shape[-1]
    frames = crops.transpose(0, 1).float() / 255  # (T, 3, S, S)
    cell = S // mask.shape[-1]  # 16 px per token
    pixel_mask = mask_to_patch_grid(mask, cell)[:, None]  # (T, 1, S, S)
    up = lambda x: torch.nn.functional.interpolate(x, size=(S, S), mode="nearest")  # noqa: E731
    right = torch.tensor([0.1, 0.75, 0.2]).view(1, 3, 1, 1)
    wrong = torch.tensor([0.85, 0.15, 0.1]).view(1, 3, 1, 1)
    hit = mask_to_patch_grid(pred == ids, cell)[:, None]  # (T, 1, S, S)
    verdict = torch.where(pixel_mask, torch.where(hit, right, wrong), torch.full((1, 3, 1, 1), 0.6))
    return {"frames": frames, "masked": torch.where(pixel_mask, 0.5, frames),
            "target tokens": up(decode(tokenizer, ids)),
            "predicted": up(decode(tokenizer, torch.where(mask, pred, ids))),
            "right / wrong": verdict.expand(T, 3, S, S)}


def reconstruct(argv):
    cfg = ReconstructConfig(**parse_flags(ReconstructConfig, argv, "Masked-token prediction of a pretrained BEVT."))
    ckpt_path, state = find_checkpoint(cfg.ckpt, PRETRAIN_DIR, needs=("model", "model_config", "config"))
    if "head.weight" in state["model"]:
        raise SystemExit(f"--ckpt {ckpt_path} is a finetuned classifier: reconstruct needs a pretraining checkpoint")
    saved = SimpleNamespace(**state["config"])
    model = BEVT(ModelConfig(**state["model_config"]))
    convert.load_model_state(model, state["model"], ckpt_path)
    model.eval()
    tokenizer = tok.load_tokenizer(tokenizer_path(cfg, state, ckpt_path), "cpu")
    rng, grid, video = np.random.default_rng(cfg.seed), saved.img_size // 16, not cfg.image
    if cfg.image:
        image = readers.read_image(cfg.image).permute(1, 2, 0).numpy()[None]  # (1, H, W, 3)
        crops = data.to_clip(data.fixed_crop(data.resize_short(image, saved.rescale[0], cv2.INTER_CUBIC),
                                             saved.img_size, 0, 1))  # (3, 1, S, S)
        stream_mask = blockwise_mask(grid, grid, int(saved.mask_ratio * grid * grid), rng=rng)[None]  # (1, h, w)
        source = cfg.image
    else:
        source = cfg.video or synthetic_records()[0][cfg.index].path
        crops = centre_clip(source, saved.img_size, saved.clip_len, saved.frame_interval,
                            saved.rescale[0])  # (3, T, S, S)
        stream_mask = video_mask(saved.mask_strategy, saved.clip_len // model.cfg.patch_size[0], grid, grid,
                                 saved.mask_ratio, tuple(saved.tube_range), rng=rng)  # (T', h, w)
    ids, pred, mask = predict_tokens(model, tokenizer, crops, stream_mask, video)
    accuracy = [((pred[t] == ids[t]) & mask[t]).sum().item() / mask[t].sum().item() if mask[t].any() else None
                for t in range(len(ids))]  # None: nothing masked in frame t
    shown = ["-" if a is None else f"{a:.2f}" for a in accuracy]
    rows = reconstruction_rows(crops, ids, pred, mask, tokenizer)
    tiles = [label_tile(tile, (f"{name}" if t == 0 else "") + (f" t={t} acc {shown[t]}" if r == 3 else ""))
             for r, (name, row) in enumerate(rows.items()) for t, tile in enumerate(row)]
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(torch.stack(tiles), out, nrow=len(ids), padding=2, pad_value=1.0)
    total = (pred == ids)[mask].float().mean().item()
    print(f"{source}: step {state.get('step')} of {ckpt_path}; {mask.sum().item()} masked of {mask.numel()} target "
          f"positions; masked-token accuracy {total:.3f}; per frame: " + " ".join(shown))
    if cfg.gif:  # one picture per frame: that frame's tiles stacked vertically
        T = len(ids)
        columns = [torch.cat([tiles[r * T + t] for r in range(len(rows))], dim=1) for t in range(T)]  # (3, R*S, S)
        pictures = [Image.fromarray((c * 255).round().byte().permute(1, 2, 0).numpy()) for c in columns]
        pictures[0].save(cfg.gif, save_all=True, append_images=pictures[1:], duration=300, loop=0)
        print(f"wrote {cfg.gif}")
    print(f"wrote {out}: rows {', '.join(rows)}; columns: frames")
    return {"ids": ids, "pred": pred, "mask": mask, "accuracy": accuracy}


# --------------------------------------------------------------------------- predict and features: the test views
def classifier_from(state, path, model_name="", window_size=(0, 0, 0)):
    """(VideoClassifier in eval mode with the checkpoint's weights, its classes or None) for any format convert reads:
    ours carry their model_config; an official or torchvision file needs the preset (--model)."""
    if isinstance(state, dict) and "model_config" in state and not model_name:
        mcfg = ModelConfig(**state["model_config"])
    elif model_name in PRESETS:
        mcfg = PRESETS[model_name]
    else:
        raise SystemExit(f"{path} has no model_config: pass --model {{{','.join(PRESETS)}}}")
    if window_size != (0, 0, 0):
        mcfg = dataclasses.replace(mcfg, window_size=window_size)
    classes = state.get("classes") if isinstance(state, dict) else None
    model = VideoClassifier(mcfg, len(classes) if classes else 1, head_dropout=0.0)
    sd, _, kind = convert.init_classifier(state, model, path)
    convert.load_model_state(model, sd, path)  # a checkpoint without a head keeps a fresh one
    return model.eval(), classes, kind


def test_recipe(saved, clips=0, crops=0, batch=8, workers=2):
    """The checkpoint's test views (finetune config: its own recipe; pretraining config: its clip, centre crop;
    none: the official K400 test), with clips / crops / batch / workers replaced where given."""
    saved = dict(saved or {})
    recipe = SimpleNamespace(sampling=saved.get("sampling", "dense"), clip_len=saved.get("clip_len", 32),
                             frame_interval=saved.get("frame_interval", 2), img_size=saved.get("img_size", 224),
                             test_short_side=saved.get("test_short_side", saved.get("img_size", 224)),
                             test_clips=saved.get("test_clips", 1 if saved else 4),
                             test_crops=saved.get("test_crops", 1 if saved else 3), seed=saved.get("seed", 0))
    recipe.test_clips, recipe.test_crops = clips or recipe.test_clips, crops or recipe.test_crops
    recipe.test_batch, recipe.num_workers = batch, workers
    recipe.dtype = engine.resolve_dtype("cuda" if torch.cuda.is_available() else "cpu", saved.get("dtype", "float32"))
    return recipe


def video_list(paths):
    """--video FILE [FILE ...] or a folder (its videos, sorted) -> records (label 0: unknown)."""
    files = []
    for p in paths:
        files += sorted(str(f) for f in Path(p).iterdir() if f.suffix.lower() in readers.VIDEO_EXTS) \
            if Path(p).is_dir() else [p]
    return [readers.VideoRecord(f, 0) for f in files]


def take_list(argv, flag):
    """The values after `flag` up to the next --flag (argparse-from-dataclass flags take one value each)."""
    if flag not in argv:
        return [], argv
    i = argv.index(flag)
    j = next((k for k in range(i + 1, len(argv)) if argv[k].startswith("--")), len(argv))
    return argv[i + 1:j], argv[:i] + argv[j:]


def multi_view_probabilities(model, records, recipe):
    """(probabilities averaged over the views (N, C), indices of unreadable videos): evaluate.evaluate's numbers."""
    ds = evaluate.test_dataset(records, recipe)
    loader = data.make_loader(ds, recipe.test_batch, False, recipe.num_workers, recipe.seed, False)
    env = engine.Dist(False, 0, 0, 1, "cuda" if torch.cuda.is_available() else "cpu")
    prob_sum, views, _, unreadable = evaluate.evaluate(model.to(env.device), loader, len(records),
                                                       model.head.out_features, env, recipe.dtype)
    return prob_sum / views[:, None], set(unreadable.nonzero().flatten().tolist())


@dataclass
class PredictConfig:
    ckpt: str = ""  # a finetune.py checkpoint; default: the newest in runs/synthetic_finetune
    video: str = ""  # one or more files, or a folder; default: three videos of the synthetic test set
    out: str = ""  # a .csv of the top-5 per video
    batch: int = ranged(8, min=1)  # views per forward
    num_workers: int = ranged(2, min=0)


def predict(argv):
    videos, argv = take_list(argv, "--video")
    cfg = PredictConfig(**parse_flags(PredictConfig, argv, "Top-5 classes with the checkpoint's multi-view test."))
    ckpt_path, state = find_checkpoint(cfg.ckpt, FINETUNE_DIR, needs=("model", "config", "classes"))
    model, classes, kind = classifier_from(state, ckpt_path)
    if videos:
        records, truth = video_list(videos), None
    else:
        test, _ = synthetic_records(classes)
        records = test[::max(len(test) // 3, 1)][:3]
        truth = [classes[r.label] for r in records]
    recipe = test_recipe(state["config"], batch=cfg.batch, workers=cfg.num_workers)
    probs, failed = multi_view_probabilities(model, records, recipe)
    top = probs.topk(min(5, len(classes)), dim=1)
    rows = []
    for i, r in enumerate(records):
        names = [(classes[c], p) for c, p in zip(top.indices[i].tolist(), top.values[i].tolist())]
        rows.append([r.path] + [x for n, p in names for x in (n, f"{p:.6f}")] if i not in failed else [r.path])
        told = f" (true: {truth[i]})" if truth else ""
        print(f"{r.path}{told}: " + ("UNREADABLE" if i in failed else ", ".join(f"{n} {p:.3f}" for n, p in names)))
    print(f"{len(records)} videos, {recipe.test_clips} clips x {recipe.test_crops} crops each, {kind} {ckpt_path}")
    if cfg.out:
        with open(cfg.out, "w", newline="") as f:
            csv.writer(f).writerows([["path"] + [f"{w}{k}" for k in range(1, 6) for w in ("class", "prob")]] + rows)
        print(f"wrote {cfg.out}")
    if failed:
        raise SystemExit(f"{len(failed)} unreadable: " + ", ".join(records[i].path for i in failed))
    return probs


@dataclass
class FeaturesConfig:
    ckpt: str = ""  # any format: ours (pretraining / finetune), official BEVT, torchvision swin3d_*
    ann: str = ""  # annotation file (any format readers.read_annotations reads); default: the synthetic test set
    root: str = ""
    out: str = "feats.npy"  # float32 (N, C8), or (N, views, C8) with --per-view true; NaN rows: unreadable videos
    per_view: bool = False
    model: str = ""  # the preset of a checkpoint without model_config (official, torchvision)
    window_size: tuple = ranged((0, 0, 0), min=0)  # (0, 0, 0): the model's
    # 0: the checkpoint's test recipe (1 for pretraining checkpoints, official 4 without a config)
    clips: int = ranged(0, min=0)
    crops: int = ranged(0, min=0, max=3)
    batch: int = ranged(8, min=1)
    num_workers: int = ranged(2, min=0)


@torch.no_grad()
def features(argv):
    cfg = FeaturesConfig(**parse_flags(FeaturesConfig, argv, "Pooled encoder features (final norm + average pool)."))
    ckpt_path, state = find_checkpoint(cfg.ckpt, FINETUNE_DIR)
    model, _, kind = classifier_from(state, ckpt_path, cfg.model, cfg.window_size)
    if cfg.ann:
        try:
            records, _ = readers.read_annotations(cfg.ann, cfg.root)
        except (OSError, ValueError) as e:
            raise SystemExit(f"--ann/--root: {e}") from None
    else:
        records, _ = synthetic_records()
    saved = state.get("config") if isinstance(state, dict) else None
    recipe = test_recipe(saved, cfg.clips, cfg.crops, cfg.batch, cfg.num_workers)
    ds = evaluate.test_dataset(records, recipe)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    feats = torch.zeros(len(ds), model.head.in_features, dtype=torch.float64)  # (N * views, C8), dataset order
    seen, failed = 0, set()
    for b in data.make_loader(ds, cfg.batch, False, cfg.num_workers, recipe.seed, False):
        with engine.autocast_context(device, recipe.dtype):
            x = model.encoder(b["video"].to(device))[-1]  # (B, T', H', W', C8)
            x = model.encoder.norm(x).mean(dim=(1, 2, 3))  # (B, C8): VideoClassifier's pooled features
        feats[seen:seen + len(x)] = x.double().cpu()
        failed.update(int(i) for i, bad in zip(b["video_index"], b["unreadable"]) if bad)
        seen += len(x)
        print(f"\rfeatures: {seen // ds.views}/{len(records)} videos", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    feats = feats.view(len(records), ds.views, -1)  # (N, views, C8)
    feats = (feats if cfg.per_view else feats.mean(1)).float().numpy()
    feats[sorted(failed)] = np.nan
    np.save(cfg.out, feats)
    Path(cfg.out).with_suffix(".txt").write_text("".join(r.path + "\n" for r in records))
    print(f"wrote {cfg.out}: {feats.shape} float32 ({kind} {ckpt_path}, {recipe.test_clips} clips x "
          f"{recipe.test_crops} crops per video); row order in {Path(cfg.out).with_suffix('.txt')}")
    if failed:
        raise SystemExit(f"{len(failed)} unreadable (NaN rows): " + ", ".join(records[i].path for i in sorted(failed)))
    return feats


# --------------------------------------------------------------------------- CLI
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    if command == "masks":
        return masks(rest)
    if command == "reconstruct":
        return reconstruct(rest)
    if command == "predict":
        return predict(rest)
    if command == "features":
        return features(rest)
    sys.exit("usage: python -m tools.demo {masks,reconstruct,predict,features} [--help]  (see the module docstring)")


if __name__ == "__main__":
    run.entry_point(main)
