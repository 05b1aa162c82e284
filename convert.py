"""Checkpoint conversion: pure functions from one state dict (a dict of tensors) to another. torchvision's
swin3d_{t,s,b} in both directions, the official BEVT releases (pretraining and finetuning formats), the inflation
of an image-stream checkpoint into the joint model (official inflate_weights), the resize of relative
position bias tables to another window (SSv2), and the detection of a checkpoint's format for a classifier
(classifier_state). Nothing here builds or runs a model except to read key names; the last section loads a
checkpoint file into a model, each failure naming the file.

Official key layout (xyzforever/BEVT, mmcv checkpoints {'meta', 'state_dict', ...}):
  pretraining: backbone.* (SwinTransformerBEVT, its decoders included) + cls_head.lm_head.* + cls_head.vae_encoder.*
  (the DALL-E tokenizer, dropped); finetuning: backbone.* (SwinTransformer3D) + cls_head.fc_cls.*.
  official_param_name maps any of our parameter names to its official name.
"""
import math

import torch
import torch.nn.functional as F

from model import ModelConfig, VideoClassifier, relative_position_index

# our decoder's modules -> their names inside the official backbone (official:
# mmaction/models/backbones/swin_transformer_bevt.py:678-700): lm_down is a plain Linear, the other four are each
# wrapped in a one-layer nn.Sequential, so their keys read "<name>.0.*"
DECODER_KEYS = {"decoder.image_spatial_up.": "fpn.0.", "decoder.image_linear.": "lm_down.",
                "decoder.video_spatial_up.": "fpn_s.0.", "decoder.video_linear.": "lm_down_st.0.",
                "decoder.video_temporal_up.": "fpn_t.0."}
PRETRAIN_ONLY = ("encoder.patch_embed_2d.", "encoder.mask_token", "decoder.", "lm_head.")


def official_param_name(name):
    """One of our BEVT / VideoClassifier parameter (or state-dict) names -> the official model's full name: the
    encoder and the decoders are `backbone.*`, the shared classifier `cls_head.lm_head.*`
    (official: mmaction/models/heads/bevt_multisource_head.py:31), the finetuning head `cls_head.fc_cls.*`
    (official: mmaction/models/heads/i3d_head.py:41)."""
    for ours, official in DECODER_KEYS.items():
        if name.startswith(ours):
            return "backbone." + official + name.removeprefix(ours)
    for ours, official in (("encoder.", "backbone."), ("lm_head.", "cls_head.lm_head."), ("head.", "cls_head.fc_cls.")):
        if name.startswith(ours):
            return official + name.removeprefix(ours)
    raise ValueError(f"official_param_name: {name!r} is not a BEVT or VideoClassifier name")


# --- torchvision -------------------------------------------------------------------------------------------------

def _tv_block_key(rest):
    return rest.replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2.")


def from_torchvision(sd):
    """torchvision.models.video.swin3d_{t,s,b} state dict -> VideoClassifier state dict (exact; drops only the
    relative_position_index buffers, which we compute)."""
    out = {}
    for k, v in sd.items():
        if k.endswith("relative_position_index"):
            continue
        if k.startswith("features."):
            _, idx, rest = k.split(".", 2)
            idx = int(idx)
            if idx % 2 == 0:                                    # features.{2i}.{j}.* = stage i, block j
                j, rest = rest.split(".", 1)
                k = f"encoder.layers.{idx // 2}.blocks.{j}.{_tv_block_key(rest)}"
            else:                                               # features.{2i+1} = patch merging after stage i
                k = f"encoder.layers.{idx // 2}.downsample.{rest}"
        elif k.startswith(("patch_embed.", "norm.")):
            k = "encoder." + k
        elif not k.startswith("head."):
            raise ValueError(f"from_torchvision: unexpected key {k!r}")
        out[k] = v
    return out


def to_torchvision(sd, window_size=(8, 7, 7)):
    """VideoClassifier state dict -> torchvision swin3d state dict (load_state_dict(strict=True) works);
    re-creates the relative_position_index buffers for the full window. A linear probe's BatchNorm is folded into
    its Linear first (fold_probe_norm)."""
    out = {}
    sd = fold_probe_norm(sd)
    index = relative_position_index(window_size, window_size)   # (N, N)
    for k, v in sd.items():
        if k.startswith("encoder.layers."):
            _, _, stage, kind, rest = k.split(".", 4)
            stage = int(stage)
            if kind == "blocks":
                j, rest = rest.split(".", 1)
                rest = rest.replace("mlp.fc1.", "mlp.0.").replace("mlp.fc2.", "mlp.3.")
                out[f"features.{2 * stage}.{j}.{rest}"] = v
                if rest == "attn.relative_position_bias_table":
                    out[f"features.{2 * stage}.{j}.attn.relative_position_index"] = index.clone()
            else:
                out[f"features.{2 * stage + 1}.{rest}"] = v
        elif k.startswith("encoder."):
            out[k.removeprefix("encoder.")] = v
        else:
            out[k] = v
    return out


# --- relative position bias tables --------------------------------------------------------------------------------

def interpolate_relative_bias(table, src_window, dst_window):
    """Resize a ((2Wd-1)(2Wh-1)(2Ww-1), nH) bias table to another window, trilinear (official SSv2 finetune:
    8 -> 16 frames, (15,13,13) -> (31,13,13)). With align_corners=False the centre (dt = 0) of the source lands
    exactly on the centre of the target: dst index i samples src at (i + 0.5) * (2Wd-1)/(2Wd'-1) - 0.5, which for
    i = Wd'-1 is Wd-1. So the dt = 0 slice (the image-stream bias) is unchanged up to float rounding; we do not
    re-copy it, to keep the official interpolated values everywhere."""
    src = [2 * w - 1 for w in src_window]
    dst = [2 * w - 1 for w in dst_window]
    if src == dst:
        return table
    nH = table.shape[1]
    x = table.float().t().reshape(1, nH, *src)                  # (1, nH, 2Wd-1, 2Wh-1, 2Ww-1)
    x = F.interpolate(x, size=dst, mode="trilinear")            # (1, nH, 2Wd'-1, 2Wh'-1, 2Ww'-1)
    return x.reshape(nH, -1).t().contiguous().to(table.dtype)   # (rows', nH)


def _window_of(rows, window):
    """Temporal window of a table with `rows` rows, given the target's spatial window (only Wd may differ)."""
    _, wh, ww = window
    wd2 = rows // ((2 * wh - 1) * (2 * ww - 1))
    if wd2 * (2 * wh - 1) * (2 * ww - 1) != rows:
        raise ValueError(f"bias table with {rows} rows does not fit a (?, {wh}, {ww}) window")
    return ((wd2 + 1) // 2, wh, ww)


# --- official BEVT checkpoints -----------------------------------------------------------------------------------

def _unwrap(ckpt):
    """mmcv / timm / DDP wrappers -> flat state dict without "module." prefixes."""
    for key in ("state_dict", "model", "module"):
        if isinstance(ckpt, dict) and key in ckpt and isinstance(ckpt[key], dict):
            ckpt = ckpt[key]
            break
    return {k.removeprefix("module."): v for k, v in ckpt.items()}


def _from_official_backbone(k):
    """A key inside the official backbone -> ours (official_param_name's inverse): the decoders by DECODER_KEYS
    ("fpn.0.weight" -> "decoder.image_spatial_up.weight"), the rest is the encoder. A decoder key of another layout
    ("fpn_s.weight") becomes an encoder key that no model has, so the caller reports it."""
    for ours, official in DECODER_KEYS.items():
        if k.startswith(official):
            return ours + k.removeprefix(official)
    return "encoder." + k


def load_official(ckpt, target):
    """Official BEVT checkpoint -> state dict for `target` (BEVT or VideoClassifier), for load_state_dict(strict=True)
    (a classifier head may be missing). Takes exactly the official module's key names: the pretraining format
    (backbone.* of SwinTransformerBEVT with its decoders fpn.0, lm_down, fpn_s.0, lm_down_st.0, fpn_t.0;
    cls_head.lm_head.*; cls_head.vae_encoder.*) and the finetuning format (backbone.* of SwinTransformer3D,
    cls_head.fc_cls.*). Returns (state_dict, dropped keys). Dropped BY NAME: relative_position_index (we compute
    it), the DALL-E encoder, and for a classifier the pretraining-only keys (2D patch embed, mask token,
    decoders, lm_head) and a classifier head of another shape. Bias tables of another temporal window are
    interpolated (official SSv2 finetune). Any other unexpected key, or a missing one, raises listing them.
    The dropped list names buffers and the tokenizer by their checkpoint key, the rest by our key."""
    own = target.state_dict()
    window = tuple(target.encoder.cfg.window_size)
    classifier = isinstance(target, VideoClassifier)
    sd, dropped, source = {}, [], {}
    for key, v in _unwrap(ckpt).items():
        if key.endswith("relative_position_index") or key.startswith("cls_head.vae_encoder."):
            dropped.append(key)
            continue
        k = key
        if k.startswith("backbone."):
            k = _from_official_backbone(k.removeprefix("backbone."))
        elif k.startswith("cls_head.lm_head."):
            k = k.removeprefix("cls_head.")
        elif k.startswith("cls_head.fc_cls."):
            k = "head." + k.removeprefix("cls_head.fc_cls.")
        if classifier and (k.startswith(PRETRAIN_ONLY) or k.startswith("head.") and k in own
                           and v.shape != own[k].shape):
            dropped.append(k)
            continue
        if k.endswith("relative_position_bias_table") and k in own and v.shape != own[k].shape:
            v = interpolate_relative_bias(v, _window_of(v.shape[0], window), window)
        sd[k], source[k] = v, key
    unexpected = sorted(source[k] for k in set(sd) - set(own))    # by their checkpoint names
    missing = sorted(k for k in set(own) - set(sd) if not (classifier and k.startswith("head.")))
    if unexpected or missing:
        raise ValueError(f"load_official: unexpected keys {unexpected}; missing keys {missing}")
    return sd, dropped


def inflate_image_checkpoint(ckpt, cfg: ModelConfig):
    """Image-stream checkpoint -> BEVT state dict for joint pretraining (official inflate_weights,
    mmaction/models/backbones/swin_transformer_bevt.py:718-793). Accepts an official checkpoint (2D Swin keys:
    patch_embed.proj a Conv2d, 2D bias tables; the official decoders fpn.0.* / lm_down.*, if present) or our own
    image-stage BEVT checkpoint (patch_embed_2d trained, 3D tables of which image mode used only dt = 0).
    Returns the keys it can fill; the rest (the video decoder, lm_head, ...) keep their fresh init: load with
    strict=False."""
    sd = {}
    for k, v in _unwrap(ckpt).items():                          # 1. unwrap, strip prefixes (official :739-740)
        for p in ("backbone.", "encoder."):
            k = k.removeprefix(p)
        if k.endswith(("relative_position_index", "attn_mask")):  # 2. drop buffers, fc_norm -> norm
            continue
        if not k.startswith("decoder."):                        # official decoders -> ours
            k = _from_official_backbone(k).removeprefix("encoder.")
        sd[k.replace("fc_norm.", "norm.", 1) if k.startswith("fc_norm.") else k] = v
    pt, (wd, wh, ww) = cfg.patch_size[0], cfg.window_size
    # 3. the 2D patch embedding: ours is patch_embed_2d; an official 2D Swin calls its Conv2d patch_embed
    src2d = "patch_embed_2d." if "patch_embed_2d.proj.weight" in sd else "patch_embed."
    if src2d + "proj.weight" not in sd or sd[src2d + "proj.weight"].dim() != 4:
        raise ValueError("inflate_image_checkpoint: no 2D patch embedding (Conv2d weight) in the checkpoint")
    out = {}
    for name in ("proj.weight", "proj.bias", "norm.weight", "norm.bias"):
        out["encoder.patch_embed_2d." + name] = sd[src2d + name]
        out["encoder.patch_embed." + name] = sd[src2d + name]
    # 4. 3D patch embed = the 2D kernel repeated over the patch_t frames / patch_t: same response on static input
    out["encoder.patch_embed.proj.weight"] = sd[src2d + "proj.weight"].unsqueeze(2).repeat(1, 1, pt, 1, 1) / pt
    rows2d = (2 * wh - 1) * (2 * ww - 1)
    for k, v in sd.items():
        if k.startswith(("patch_embed.", "patch_embed_2d.", "lm_head.", "cls_head.", "head.")):
            continue                                            # official: lm_head lives in cls_head, stays fresh
        if k.endswith("relative_position_bias_table"):          # 5. 2D table -> tiled over all 2Wd-1 offsets
            if v.shape[0] == rows2d * (2 * wd - 1):             # our own 3D table: take its dt = 0 slice
                v = v.view(2 * wd - 1, rows2d, -1)[wd - 1]      # (rows2d, nH)
            elif v.shape[0] != rows2d:                          # official: bicubic resize if the 2D size differs
                s = math.isqrt(v.shape[0])
                v = F.interpolate(v.t().reshape(1, -1, s, s), size=(2 * wh - 1, 2 * ww - 1),
                                  mode="bicubic").reshape(v.shape[1], -1).t()   # (rows2d, nH)
            v = v.repeat(2 * wd - 1, 1)                         # ((2Wd-1) rows2d, nH)
        out[k if k.startswith("decoder.") else "encoder." + k] = v
    return out                                                  # 6. caller: load_state_dict(strict=False)


def fold_probe_norm(sd):
    """A linear probe's head (head.0 = BatchNorm1d(affine=False), head.1 = Linear) -> the plain head.weight / head.bias
    that gives the same logits in eval mode: W' = W / sqrt(var + eps) per input feature, b' = b - W' mean. A state
    dict without head.0.running_mean is returned as it came."""
    if "head.0.running_mean" not in sd:
        return sd
    eps = 1e-6  # the probe's BatchNorm1d eps (MAE main_linprobe.py)
    mean, var = sd["head.0.running_mean"].double(), sd["head.0.running_var"].double()
    weight = sd["head.1.weight"].double() / (var + eps).sqrt()  # (num_classes, C8)
    bias = sd["head.1.bias"].double() - weight @ mean  # (num_classes,)
    out = {k: v for k, v in sd.items() if not k.startswith("head.")}
    out["head.weight"], out["head.bias"] = weight.to(sd["head.1.weight"].dtype), bias.to(sd["head.1.bias"].dtype)
    return out


# --- any supported checkpoint -> a classifier's state dict ---------------------------------------------------------

def checkpoint_kind(state):
    """Which format a loaded checkpoint is: "torchvision swin3d", "our finetune", "our pretraining" or "official BEVT"
    (anything else is tried as the official layout, which names what does not fit)."""
    if isinstance(state, dict) and "features.0.0.norm1.weight" in state:
        return "torchvision swin3d"
    if isinstance(state, dict) and "config" in state and isinstance(state.get("model"), dict):
        return "our finetune" if "head.weight" in state["model"] else "our pretraining"
    return "official BEVT"


def classifier_state(state, classifier):
    """A loaded checkpoint of any supported format -> (the classifier's full state dict, the dropped keys, the format).
    Formats: ours (pretraining {'model': BEVT} of any stage, or a finetune checkpoint, with its EMA weights merged in
    if any), the official release (mmcv {'state_dict': backbone.*, cls_head.*}), a torchvision swin3d_* state dict.
    load_official does the surgery (decoders, 2D patch embed, mask token, lm_head and DALL-E keys dropped by name,
    bias tables interpolated to the classifier's window). When the checkpoint has no head of the classifier's shape,
    the classifier's own (fresh) head is kept. Raises ValueError naming unexpected or missing keys."""
    kind = checkpoint_kind(state)
    if kind == "torchvision swin3d":
        state = from_torchvision(state)
    elif kind == "our pretraining" and state.get("config", {}).get("stage") == "image":
        # BEVT-I: the image stage trained only patch_embed_2d and the dt = 0 slice of every bias table, so the video
        # classifier starts from their inflation, as the joint stage's --init does (official inflate_weights)
        kind = kind + " (image stage, inflated)"
        state = {**state["model"], **inflate_image_checkpoint(state, classifier.encoder.cfg)}
    elif kind.startswith("our") and state.get("ema"):
        kind, state = kind + " (EMA weights)", {**state["model"], **state["ema"]}
    elif kind.startswith("our"):
        state = state["model"]
    if "head.0.running_mean" in state and "head.0.running_mean" not in classifier.state_dict():
        kind, state = kind + " (linear probe, norm folded into the head)", fold_probe_norm(state)
    sd, dropped = load_official(state, classifier)
    kind += " (head from the checkpoint)" if "head.weight" in sd else " (new head)"
    fresh_head = {k: v for k, v in classifier.state_dict().items() if k.startswith("head.")}
    return {**fresh_head, **sd}, dropped, kind


# ----------------------------------------------------------------------------------------------------------------------
# loading a checkpoint file into a model, each failure naming the file


def init_classifier(state, classifier, path):
    """classifier_state of the checkpoint loaded from `path` (ours of any stage, the official release,
    torchvision swin3d_*): (the classifier's state dict, the dropped keys, the format), or a stop naming the file."""
    try:
        return classifier_state(state, classifier)
    except ValueError as e:
        raise SystemExit(f"cannot initialise from {path} ({checkpoint_kind(state)} checkpoint): {e}") from e


def load_checkpoint(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SystemExit(f"cannot load checkpoint {path}: {e}") from e


def holds(state):
    """What a loaded checkpoint holds, for messages: ours name their flags (`--model nano --stage joint`)."""
    saved = state.get("config", {}) if isinstance(state, dict) else {}
    flags = " ".join(f"--{k} {saved[k]}" for k in ("model", "stage") if k in saved)
    return flags or f"a {checkpoint_kind(state)} checkpoint"


def load_model_state(module, state, path, holds="", asks="", allow_missing=False):
    """Loads `state` into `module`; a checkpoint of another model (shapes) or key set stops naming the file, what it
    holds and what the flags ask for (e.g. "--model nano" vs "--model tiny"). allow_missing: keys the checkpoint lacks
    keep their values and are returned (an image-stage checkpoint inflated into the joint model)."""
    own = module.state_dict()
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
              if k in own and v.shape != own[k].shape]
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if shapes or unexpected or (missing and not allow_missing):
        which = f" it holds {holds}, the flags ask for {asks};" if holds or asks else ""
        raise SystemExit(f"checkpoint {path} does not fit the model:{which} "
                         + "; ".join(shapes[:3] + [f"missing keys: {missing}"] * bool(missing and not allow_missing)
                                     + [f"unexpected keys: {unexpected}"] * bool(unexpected)))
    module.load_state_dict(state, strict=not allow_missing)
    return missing


def load_image_stage(model, path, cfg: ModelConfig, model_name):
    """An image-stage checkpoint (ours or the official release) inflated into the joint model `model` (BEVT §3
    "Training strategies"); a checkpoint of another model stops naming what it holds and `--model model_name`.
    Returns the keys the image checkpoint lacks (they keep their fresh values)."""
    state = load_checkpoint(path)
    if state.get("config", {}).get("model", model_name) != model_name:  # ours name their model
        raise SystemExit(f"--init {path} holds a run of {holds(state)}; the flags ask for --model {model_name}")
    try:
        inflated = inflate_image_checkpoint(state, cfg)
    except (ValueError, RuntimeError) as e:
        raise SystemExit(f"--init {path} ({holds(state)}): {e}; the flags ask for --model {model_name}") from None
    return load_model_state(model, inflated, path, holds(state), f"--model {model_name}", allow_missing=True)
