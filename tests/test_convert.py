"""Tests for convert.py: the official checkpoint key layouts (written out from the official module structure) load
strictly into the right modules, torchvision round trips, inflation of an image-stream checkpoint is exact on a
static clip, and the relative bias interpolation keeps the dt = 0 slice. CPU only, seeded, no downloads."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.video import swin3d_t

import convert
from model import BEVT, PRESETS, VideoClassifier

NANO = PRESETS["nano"]
# tiny config for the key lists: stage widths 8/16/32/64, window (2, 2, 2) -> 27-row tables, 8 x 8 index
TINY = dataclasses.replace(NANO, embed_dim=8, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2), window_size=(2, 2, 2),
                           vocab_size=16, drop_path_rate=0.0)


# --- the official key layouts, written out from the official modules (paths in xyzforever/BEVT) ------------------

def official_block_keys(prefix, dim, heads, window=(2, 2, 2)):
    """SwinTransformerBlock3D: norm1, attn, norm2, mlp (mmaction/models/backbones/swin_transformer_bevt.py:221-229);
    WindowAttention3D: the bias table (:125-127), the PERSISTENT relative_position_index buffer (:143), qkv (:145),
    proj (:147); Mlp fc1 / fc2 (:25, :27). The finetuning backbone (swin_transformer.py:134, 157, 159, 161, 248,
    255) has the same names."""
    rows = (2 * window[0] - 1) * (2 * window[1] - 1) * (2 * window[2] - 1)
    n = window[0] * window[1] * window[2]
    return {f"{prefix}.norm1.weight": (dim,), f"{prefix}.norm1.bias": (dim,),
            f"{prefix}.attn.relative_position_bias_table": (rows, heads),
            f"{prefix}.attn.relative_position_index": (n, n),
            f"{prefix}.attn.qkv.weight": (3 * dim, dim), f"{prefix}.attn.qkv.bias": (3 * dim,),
            f"{prefix}.attn.proj.weight": (dim, dim), f"{prefix}.attn.proj.bias": (dim,),
            f"{prefix}.norm2.weight": (dim,), f"{prefix}.norm2.bias": (dim,),
            f"{prefix}.mlp.fc1.weight": (4 * dim, dim), f"{prefix}.mlp.fc1.bias": (4 * dim,),
            f"{prefix}.mlp.fc2.weight": (dim, 4 * dim), f"{prefix}.mlp.fc2.bias": (dim,)}


def official_encoder_keys(cfg):
    """patch_embed (PatchEmbed3D: proj Conv3d + norm, swin_transformer_bevt.py:525-527), layers.i.blocks.j
    (BasicLayer :444-459), layers.i.downsample (PatchMerging: reduction without bias, norm, :330-331), norm (:676)."""
    C = cfg.embed_dim
    keys = {"backbone.patch_embed.proj.weight": (C, 3, 2, 4, 4), "backbone.patch_embed.proj.bias": (C,),
            "backbone.patch_embed.norm.weight": (C,), "backbone.patch_embed.norm.bias": (C,)}
    for i, (depth, heads) in enumerate(zip(cfg.depths, cfg.num_heads)):
        D = C * 2 ** i
        for j in range(depth):
            keys.update(official_block_keys(f"backbone.layers.{i}.blocks.{j}", D, heads))
        if i < len(cfg.depths) - 1:
            keys.update({f"backbone.layers.{i}.downsample.reduction.weight": (2 * D, 4 * D),
                         f"backbone.layers.{i}.downsample.norm.weight": (4 * D,),
                         f"backbone.layers.{i}.downsample.norm.bias": (4 * D,)})
    C8 = C * 2 ** (len(cfg.depths) - 1)
    keys.update({"backbone.norm.weight": (C8,), "backbone.norm.bias": (C8,)})
    return keys


def official_pretraining_keys(cfg):
    """SwinTransformerBEVT + BEVTMultiSourceHead: patch_embed_2d (PatchEmbed: Conv2d + norm, :569-571, :643-645),
    mask_token (:647); lm_down a plain Linear (:678) but fpn, lm_down_st, fpn_s, fpn_t each wrapped in a one-layer
    nn.Sequential (:680-700), hence ".0."; cls_head.lm_head (heads/bevt_multisource_head.py:31) and the DALL-E
    encoder cls_head.vae_encoder (:32; two of its keys stand for all)."""
    C = cfg.embed_dim
    C8, C4 = C * 2 ** (len(cfg.depths) - 1), C * 2 ** (len(cfg.depths) - 2)
    keys = official_encoder_keys(cfg)
    keys.update({"backbone.patch_embed_2d.proj.weight": (C, 3, 4, 4), "backbone.patch_embed_2d.proj.bias": (C,),
                 "backbone.patch_embed_2d.norm.weight": (C,), "backbone.patch_embed_2d.norm.bias": (C,),
                 "backbone.mask_token": (1, 1, C),
                 "backbone.lm_down.weight": (C8, C8 + C4), "backbone.lm_down.bias": (C8,),
                 "backbone.fpn.0.weight": (C8, C8, 2, 2), "backbone.fpn.0.bias": (C8,),
                 "backbone.lm_down_st.0.weight": (C8, C8 + C4), "backbone.lm_down_st.0.bias": (C8,),
                 "backbone.fpn_s.0.weight": (C8, C8, 1, 2, 2), "backbone.fpn_s.0.bias": (C8,),
                 "backbone.fpn_t.0.weight": (C8, C8, 2, 1, 1), "backbone.fpn_t.0.bias": (C8,),
                 "cls_head.lm_head.weight": (cfg.vocab_size, C8), "cls_head.lm_head.bias": (cfg.vocab_size,),
                 "cls_head.vae_encoder.blocks.input.w": (4, 3, 7, 7), "cls_head.vae_encoder.blocks.input.b": (4,)})
    return keys


def official_finetune_keys(cfg, num_classes):
    """SwinTransformer3D (swin_transformer.py: patch_embed :502-504, layers, norm :622) + I3DHead fc_cls
    (heads/i3d_head.py:41)."""
    C8 = cfg.embed_dim * 2 ** (len(cfg.depths) - 1)
    keys = official_encoder_keys(cfg)
    keys.update({"cls_head.fc_cls.weight": (num_classes, C8), "cls_head.fc_cls.bias": (num_classes,)})
    return keys


def random_checkpoint(keys, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {k: (torch.zeros(s, dtype=torch.long) if k.endswith("relative_position_index") else torch.randn(s, generator=g))
          for k, s in keys.items()}
    return {"meta": {"epoch": 150}, "state_dict": {"module." + k: v for k, v in sd.items()}}, sd


@torch.no_grad()
def test_official_pretraining_checkpoint_loads_strictly_into_the_right_modules():
    ckpt, off = random_checkpoint(official_pretraining_keys(TINY))
    bevt = BEVT(TINY).eval()
    sd, dropped = convert.load_official(ckpt, bevt)
    bevt.load_state_dict(sd, strict=True)
    assert sorted(dropped) == sorted(k for k in off
                              if k.endswith("relative_position_index") or "vae_encoder" in k)
    assert torch.equal(bevt.encoder.layers[2].blocks[1].attn.qkv.weight, off["backbone.layers.2.blocks.1.attn.qkv.weight"])
    # decoders: our Decoder equals the official decoder computed from the official tensors by hand
    f3, f4 = torch.randn(2, 4, 4, 32), torch.randn(2, 2, 2, 64)                # (B, h, w, C4), (B, h/2, w/2, C8)
    up = F.conv_transpose2d(f4.movedim(-1, 1), off["backbone.fpn.0.weight"], off["backbone.fpn.0.bias"], stride=2)
    ref = F.linear(torch.cat([f3, up.movedim(1, -1)], -1), off["backbone.lm_down.weight"], off["backbone.lm_down.bias"])
    torch.testing.assert_close(bevt.decoder(f3, f4), ref)
    v3, v4 = torch.randn(2, 3, 4, 4, 32), torch.randn(2, 3, 2, 2, 64)          # (B, T', h, w, C4), (B, T', h/2, w/2, C8)
    up = F.conv_transpose3d(v4.movedim(-1, 1), off["backbone.fpn_s.0.weight"], off["backbone.fpn_s.0.bias"],
                            stride=(1, 2, 2))                                   # (B, C8, T', h, w)
    x = F.linear(torch.cat([v3, up.movedim(1, -1)], -1), off["backbone.lm_down_st.0.weight"],
                 off["backbone.lm_down_st.0.bias"])                             # (B, T', h, w, C8)
    ref = F.conv_transpose3d(x.movedim(-1, 1), off["backbone.fpn_t.0.weight"], off["backbone.fpn_t.0.bias"],
                             stride=(2, 1, 1)).movedim(1, -1)                   # (B, T, h, w, C8)
    torch.testing.assert_close(bevt.decoder(v3, v4), ref)
    torch.testing.assert_close(bevt.lm_head.weight, off["cls_head.lm_head.weight"])
    # a decoder key in another layout (no ".0.") or an unknown key is an error naming it, not a silent skip
    for bad in ("module.backbone.fpn_s.weight", "module.backbone.extra.weight"):
        broken = {"state_dict": {**ckpt["state_dict"], bad: torch.zeros(1)}}
        with pytest.raises(ValueError, match=bad.removeprefix("module.")):
            convert.load_official(broken, BEVT(TINY))


def test_official_checkpoints_load_into_the_classifier():
    # joint pretraining checkpoint -> finetuning: the pretraining-only keys are dropped, the head stays fresh
    ckpt, off = random_checkpoint(official_pretraining_keys(TINY))
    clf = VideoClassifier(TINY, num_classes=6)
    sd, dropped = convert.load_official(ckpt, clf)
    assert set(clf.state_dict()) - set(sd) == {"head.weight", "head.bias"}
    assert {"encoder.mask_token", "lm_head.weight", "decoder.image_spatial_up.weight", "decoder.video_temporal_up.bias",
            "decoder.image_linear.weight"} <= set(dropped)
    clf.load_state_dict(sd, strict=False)
    assert torch.equal(clf.encoder.norm.weight, off["backbone.norm.weight"])
    # official finetuning checkpoint (Video Swin layout): everything, the head included, loads strictly
    ckpt, off = random_checkpoint(official_finetune_keys(TINY, 6), seed=1)
    sd, dropped = convert.load_official(ckpt, clf)
    clf.load_state_dict(sd, strict=True)
    assert torch.equal(clf.head.weight, off["cls_head.fc_cls.weight"])
    assert all(k.endswith("relative_position_index") for k in dropped)
    # a head of another size is dropped; a longer temporal window interpolates the tables
    clf16 = VideoClassifier(dataclasses.replace(TINY, window_size=(4, 2, 2)), num_classes=7)
    sd, dropped = convert.load_official(ckpt, clf16)
    clf16.load_state_dict(sd, strict=False)
    assert "head.weight" in dropped and sd["encoder.layers.0.blocks.0.attn.relative_position_bias_table"].shape == (63, 1)


def test_official_param_names_are_the_official_layout_and_round_trip():
    """official_param_name maps every BEVT and VideoClassifier parameter onto exactly the official key list written
    out above, at the official shape (buffers and the DALL-E encoder aside), each decoder module onto its own
    official module; load_official maps the official names back to the same tensors."""
    pairs = {"decoder.image_spatial_up.weight": "backbone.fpn.0.weight", "decoder.image_linear.bias": "backbone.lm_down.bias",
             "decoder.video_spatial_up.bias": "backbone.fpn_s.0.bias",
             "decoder.video_linear.weight": "backbone.lm_down_st.0.weight",
             "decoder.video_temporal_up.weight": "backbone.fpn_t.0.weight", "lm_head.bias": "cls_head.lm_head.bias",
             "encoder.layers.2.blocks.1.norm2.weight": "backbone.layers.2.blocks.1.norm2.weight",
             "encoder.mask_token": "backbone.mask_token", "head.weight": "cls_head.fc_cls.weight"}
    assert {k: convert.official_param_name(k) for k in pairs} == pairs
    torch.manual_seed(0)
    for ours, keys in [(BEVT(TINY), official_pretraining_keys(TINY)),
                       (VideoClassifier(TINY, num_classes=6), official_finetune_keys(TINY, 6))]:
        sd = ours.state_dict()
        official = {convert.official_param_name(k): v for k, v in sd.items()}
        assert {k: tuple(v.shape) for k, v in official.items()} == \
            {k: s for k, s in keys.items() if not k.endswith("relative_position_index") and "vae_encoder" not in k}
        loaded, dropped = convert.load_official({"state_dict": official}, ours)
        assert loaded.keys() == sd.keys() and all(torch.equal(loaded[k], sd[k]) for k in sd) and dropped == []
    with pytest.raises(ValueError, match="fpn.weight"):
        convert.official_param_name("fpn.weight")


@torch.no_grad()
def test_to_torchvision_round_trip():
    torch.manual_seed(0)
    tv = swin3d_t().eval()
    ours = VideoClassifier(dataclasses.replace(PRESETS["tiny"], drop_path_rate=0.0), 400).eval()
    ours.load_state_dict(convert.from_torchvision(tv.state_dict()), strict=True)
    back = swin3d_t()
    back.load_state_dict(convert.to_torchvision(ours.state_dict()), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), tv.state_dict().values()))
    x = torch.randn(1, 3, 4, 224, 224)
    assert torch.equal(back.eval()(x), tv(x))
    with pytest.raises(ValueError, match="surprise"):
        convert.from_torchvision({"surprise.weight": torch.zeros(1)})


@pytest.mark.parametrize("source", ["ours", "official_2d"])
@torch.no_grad()
def test_inflation_is_exact_on_static_clip(source):
    torch.manual_seed(0)
    img_model = BEVT(NANO)
    for p in img_model.parameters():                            # make every table row and norm non-trivial
        p.add_(0.05 * torch.randn_like(p))
    sd = img_model.state_dict()
    if source == "official_2d":                                 # a 2D Swin: Conv2d patch_embed, 2D tables, fpn.0
        Wd = NANO.window_size[0]
        sd = {k: v for k, v in sd.items() if not k.startswith(("encoder.patch_embed.", "lm_head.", "decoder.video_"))}
        sd = {k.replace("patch_embed_2d.", "patch_embed.").replace("decoder.image_spatial_up.", "fpn.0.")
              .replace("decoder.image_linear.", "lm_down."): v for k, v in sd.items()}
        sd = {k: (v.view(2 * Wd - 1, -1, v.shape[1])[Wd - 1] if k.endswith("bias_table") else v)
              for k, v in sd.items()}
        assert "fpn.0.weight" in sd
        sd = {"model": {"module.backbone." + k.removeprefix("encoder."): v for k, v in sd.items()}}
    joint = BEVT(dataclasses.replace(NANO, image_attention="swin")).eval()   # swin: image = static clip exactly
    missing, unexpected = joint.load_state_dict(convert.inflate_image_checkpoint(sd, NANO), strict=False)
    fresh = ("lm_head.",) if source == "ours" else ("lm_head.", "decoder.video_")
    assert unexpected == [] and sorted(missing) == sorted(k for k in joint.state_dict() if k.startswith(fresh))
    for name in ("image_spatial_up", "image_linear"):
        torch.testing.assert_close(getattr(joint.decoder, name).weight, getattr(img_model.decoder, name).weight,
                                   atol=0, rtol=0)
    img = torch.randn(2, 3, 64, 64)
    clip = img.unsqueeze(2).repeat(1, 1, 8, 1, 1)               # (B, C, T, H, W) static clip
    f_img = joint.encoder(img)[-1]                              # (B, 1, h, w, C8)
    f_vid = joint.encoder(clip)[-1]                             # (B, T', h, w, C8)
    assert f_vid.shape[1] == 4
    torch.testing.assert_close(f_vid, f_img.expand_as(f_vid), atol=1e-5, rtol=0)


def test_bias_interpolation_8_to_16_keeps_dt0_slice():
    torch.manual_seed(0)
    table = torch.randn(15 * 13 * 13, 4)
    new = convert.interpolate_relative_bias(table, (8, 7, 7), (16, 7, 7))
    assert new.shape == (31 * 13 * 13, 4)
    torch.testing.assert_close(new.view(31, 169, 4)[15], table.view(15, 169, 4)[7], atol=1e-6, rtol=0)


# --- checkpoint format detection for a classifier -----------------------------------------------------------------

def test_classifier_state_detects_each_format_and_merges_the_ema():
    torch.manual_seed(0)
    clf = VideoClassifier(TINY, num_classes=3)
    ours = clf.state_dict()
    ema = {n: torch.randn_like(p) for n, p in clf.named_parameters()}
    sd, dropped, kind = convert.classifier_state({"model": ours, "ema": ema, "config": {}}, clf)
    assert kind == "our finetune (EMA weights) (head from the checkpoint)" and dropped == []
    assert all(torch.equal(sd[k], ema[k]) for k in ema)  # the EMA replaces every parameter
    assert all(torch.equal(sd[k], ours[k]) for k in ours if k not in ema)  # buffers from the model
    sd, _, kind = convert.classifier_state({"model": ours, "ema": None, "config": {}}, clf)
    assert kind == "our finetune (head from the checkpoint)" and all(torch.equal(sd[k], ours[k]) for k in ours)
    pre = BEVT(TINY)
    sd, dropped, kind = convert.classifier_state({"model": pre.state_dict(), "config": {}}, clf)
    assert kind == "our pretraining (new head)" and set(sd) == set(ours)
    assert all(torch.equal(sd[k], ours[k]) for k in ours if k.startswith("head."))  # the classifier's fresh head
    tv = convert.to_torchvision(ours, TINY.window_size)
    sd, _, kind = convert.classifier_state(tv, clf)
    assert kind == "torchvision swin3d (head from the checkpoint)" and all(torch.equal(sd[k], ours[k]) for k in ours)
    with pytest.raises(ValueError, match="surprise"):
        convert.classifier_state({"state_dict": {"backbone.surprise": torch.zeros(1)}}, clf)


@torch.no_grad()
def test_classifier_from_an_image_stage_checkpoint_is_inflated():
    """BEVT-I: an image-stage checkpoint trained only patch_embed_2d and the dt = 0 bias slices; the classifier must get
    their inflation (as train.py --init), not the untrained 3D patch embedding: a static clip then gives the image's
    features."""
    torch.manual_seed(0)
    img_model = BEVT(dataclasses.replace(NANO, image_attention="swin")).eval()
    for p in img_model.parameters():
        p.add_(0.05 * torch.randn_like(p))
    clf = VideoClassifier(NANO, num_classes=3).eval()
    sd, _, kind = convert.classifier_state({"model": img_model.state_dict(), "config": {"stage": "image"}}, clf)
    assert kind == "our pretraining (image stage, inflated) (new head)"
    w2d = img_model.encoder.patch_embed_2d.proj.weight                      # (C, 3, 4, 4)
    torch.testing.assert_close(sd["encoder.patch_embed.proj.weight"], w2d.unsqueeze(2).repeat(1, 1, 2, 1, 1) / 2)
    clf.load_state_dict({**clf.state_dict(), **sd})
    img = torch.randn(2, 3, 64, 64)
    f_img = img_model.encoder.norm(img_model.encoder(img)[-1]).mean(dim=(1, 2, 3))       # (B, C8)
    f_vid = clf.encoder.norm(clf.encoder(img.unsqueeze(2).repeat(1, 1, 8, 1, 1))[-1]).mean(dim=(1, 2, 3))
    torch.testing.assert_close(f_vid, f_img, atol=1e-5, rtol=0)


def test_fold_probe_norm_gives_the_probe_logits():
    torch.manual_seed(0)
    norm = torch.nn.BatchNorm1d(16, affine=False, eps=1e-6).eval()
    norm.running_mean.normal_()
    norm.running_var.uniform_(0.1, 3.0)
    linear = torch.nn.Linear(16, 5)
    sd = {"encoder.norm.weight": torch.ones(16), "head.0.running_mean": norm.running_mean,
          "head.0.running_var": norm.running_var, "head.0.num_batches_tracked": torch.tensor(7),
          "head.1.weight": linear.weight.detach(), "head.1.bias": linear.bias.detach()}
    folded = convert.fold_probe_norm(sd)
    assert set(folded) == {"encoder.norm.weight", "head.weight", "head.bias"}
    x = torch.randn(9, 16)
    with torch.no_grad():
        torch.testing.assert_close(F.linear(x, folded["head.weight"], folded["head.bias"]), linear(norm(x)),
                                   rtol=0, atol=1e-5)
    assert convert.fold_probe_norm(folded) is folded  # a plain head is left alone
