"""Tests for model.py: torchvision parity (video and image stream, outputs and training gradients), the paper's
parameter / GMAC numbers, the losses (Eq. 3-5), the dt = 0 property, the official image-branch attention against
a per-block reference, gradient checkpointing, the finetune head init, and the documented clamped-window
difference from torchvision. CPU only, seeded, no downloads."""
import dataclasses
from pathlib import Path

import torch
from einops import rearrange
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import swin_t
from torchvision.models.video import swin3d_b, swin3d_t
from torchvision.models.video.swin_transformer import (SwinTransformer3d, _get_window_and_shift_size,
                                                       shifted_window_attention_3d)

import convert
import model
from model import BEVT, PRESETS, SwinEncoder, VideoClassifier

NANO = PRESETS["nano"]


def _pair(tv):
    """A torchvision video Swin in eval mode and our classifier holding the same weights."""
    cfg = dataclasses.replace(PRESETS["tiny"], embed_dim=tv.patch_embed.proj.out_channels,
                              depths=tuple(len(tv.features[i]) for i in range(0, len(tv.features), 2)),
                              num_heads=tuple(tv.features[i][0].attn.num_heads for i in range(0, len(tv.features), 2)),
                              window_size=tuple(tv.features[0][0].attn.window_size), drop_path_rate=0.0)
    ours = VideoClassifier(cfg, tv.head.out_features).eval()
    ours.load_state_dict(convert.from_torchvision(tv.state_dict()), strict=True)
    return tv.eval(), ours


def _small_tv(window):
    torch.manual_seed(1)
    return SwinTransformer3d(patch_size=[2, 4, 4], embed_dim=24, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8],
                             window_size=list(window), num_classes=10)


@torch.no_grad()
def test_parity_swin3d_t_regular_and_padded():
    torch.manual_seed(0)
    tv, ours = _pair(swin3d_t())
    for shape in [(1, 3, 8, 224, 224),         # regular: shifted windows on H, W, no padding
                  (1, 3, 10, 224, 200)]:       # T' = 5 clamps the temporal window; W' = 50 needs padding
        x = torch.randn(shape)
        torch.testing.assert_close(ours(x), tv(x), atol=1e-5, rtol=0)


@torch.no_grad()
def test_parity_temporal_shift_and_padding():
    # window (4, 7, 7) at T' = 6: temporal padding 6 -> 8 AND a temporal shift of 2, with spatial padding
    tv, ours = _pair(_small_tv((4, 7, 7)))
    x = torch.randn(2, 3, 12, 224, 200)
    torch.testing.assert_close(ours(x), tv(x), atol=1e-5, rtol=0)


@torch.no_grad()
def test_parity_swin3d_b_structure():
    torch.manual_seed(0)
    tv, ours = _pair(swin3d_b())
    x = torch.randn(1, 3, 2, 224, 224)
    torch.testing.assert_close(ours(x), tv(x), atol=1e-5, rtol=0)
    assert convert.to_torchvision(ours.state_dict()).keys() == tv.state_dict().keys()


@torch.no_grad()
def test_image_stream_matches_torchvision_swin_t():
    torch.manual_seed(0)
    tv2d = swin_t().eval()
    # "swin": plain 2D Swin semantics (the default "official" reproduces the official image-branch mask quirk)
    enc = SwinEncoder(dataclasses.replace(PRESETS["tiny"], drop_path_rate=0.0, image_attention="swin")).eval()
    sd = {k: v.clone() for k, v in enc.state_dict().items()}   # random 3D tables: dt != 0 rows must not matter
    t2 = tv2d.state_dict()
    for a, b in [("proj", "0.0"), ("norm", "0.2")]:
        for p in ("weight", "bias"):
            sd[f"patch_embed_2d.{a}.{p}"] = t2[f"features.{b}.{p}"]
    for k, v in t2.items():
        parts = k.split(".")
        if k.startswith("features.") and parts[1] != "0" and not k.endswith("relative_position_index"):
            i = int(parts[1]) - 1                              # features.{1,3,5,7} stages, {2,4,6} merging
            if i % 2 == 0:
                rest = ".".join(parts[3:]).replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2.")
                key = f"layers.{i // 2}.blocks.{parts[2]}.{rest}"
                if rest.endswith("relative_position_bias_table"):   # the 2D table becomes the dt = 0 slice
                    v3 = sd[key].view(15, 169, -1).clone()
                    v3[7] = v
                    v = v3.view(-1, v.shape[1])
            else:
                key = f"layers.{i // 2}.downsample.{'.'.join(parts[2:])}"
            sd[key] = v
        elif k.startswith("norm."):
            sd[k] = v
    enc.load_state_dict(sd, strict=True)
    x = torch.randn(2, 3, 224, 224)
    ours = enc.norm(enc(x)[-1][:, 0])                           # (B, 7, 7, 768)
    torch.testing.assert_close(ours, tv2d.norm(tv2d.features(x)), atol=1e-5, rtol=0)


def test_params_and_gmacs_match_paper():
    counts = {}
    for win in [(8, 7, 7), (16, 7, 7)]:
        cfg = dataclasses.replace(PRESETS["base"], window_size=win)
        with torch.device("meta"):                             # no memory, no compute
            m = VideoClassifier(cfg, 400)
            with FlopCounterMode(display=False) as fc:
                m(torch.empty(1, 3, 32, 224, 224))
        counts[win] = (sum(p.numel() for p in m.parameters()), fc.get_total_flops() / 2e9)  # 2 FLOPs per MAC
    assert abs(counts[(8, 7, 7)][0] / 88.1e6 - 1) < 0.005      # Table 5: 88M (README of the official repo: 88.1M)
    assert abs(counts[(8, 7, 7)][1] / 282 - 1) < 0.03          # Table 5: 282 GFLOPs(MACs) per view
    assert abs(counts[(16, 7, 7)][1] / 321 - 1) < 0.03         # Table 3: 321 with window (16, 7, 7)


def _nano_batch(vocab, seed=0, T=4, S=64):
    g = torch.Generator().manual_seed(seed)
    h = S // 16
    return dict(video=torch.randn(1, 3, T, S, S, generator=g),
                video_mask=torch.rand(1, T // 2, h, h, generator=g) < 0.5,
                video_ids=torch.randint(0, vocab, (1, T, h, h), generator=g),
                image=torch.randn(2, 3, S, S, generator=g),
                image_mask=torch.rand(2, h, h, generator=g) < 0.5,
                image_ids=torch.randint(0, vocab, (2, h, h), generator=g))


def test_pretraining_step_grads_and_overfit():
    torch.manual_seed(0)
    cfg = dataclasses.replace(NANO, vocab_size=64)
    m = BEVT(cfg)
    batch = _nano_batch(cfg.vocab_size)
    out = m(**batch)
    assert set(out) == {"image", "video"} and all(len(v) == 3 for v in out.values())
    counts = model.target_counts(batch["video_mask"], batch["image_mask"], cfg.patch_size[0])
    for s in ("image", "video"):
        assert out[s][2] == counts[s] and out[s][0].dtype == torch.float32
    loss = model.objective({s: out[s][0] for s in out}, counts, lam=1.0)
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
    # image-only stage: the video-only parameters get no gradient, everything else does
    m.zero_grad(set_to_none=True)
    out = m(image=batch["image"], image_mask=batch["image_mask"], image_ids=batch["image_ids"])
    assert set(out) == {"image"}
    out["image"][0].backward()
    unused = sorted({n.split(".")[1] for n, p in m.named_parameters() if p.grad is None})
    assert unused == ["patch_embed", "video_linear", "video_spatial_up", "video_temporal_up"]
    # overfit one batch
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3)
    losses = []
    for _ in range(20):
        out = m(**batch)
        loss = model.objective({s: out[s][0] for s in out}, counts, lam=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@torch.no_grad()
def test_forward_loss_is_eq3_4_and_objective_is_eq5():
    """forward_loss against F.cross_entropy on the masked rows written out by hand; objective on one micro-batch
    is the mean cross-entropy of each stream (Eq. 3/4) combined by Eq. (5); over two micro-batches with the
    step's counts it is the mean over all masked positions of the step; with world = 2 ranks it is twice the
    local share (DDP then averages)."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(NANO, vocab_size=64)
    m = BEVT(cfg).eval()
    batches = [_nano_batch(cfg.vocab_size, seed=s) for s in (0, 1)]
    means, rows = [], {"image": [], "video": []}
    for b in batches:
        out = m(**b)
        f_vid = m.decoder(*m.forward_encoder(b["video"], b["video_mask"]))   # (B, T, h, w, C8)
        f_img = m.decoder(*m.forward_encoder(b["image"], b["image_mask"]))   # (B, h, w, C8)
        vmask = b["video_mask"].repeat_interleave(cfg.patch_size[0], dim=1)   # (B, T, h, w)
        ref = {}
        for s, f, ids, msk in [("video", f_vid, b["video_ids"], vmask),
                               ("image", f_img, b["image_ids"], b["image_mask"])]:
            logits = m.lm_head(m.encoder.norm(f[msk]))              # (M, V)
            ce = torch.nn.functional.cross_entropy(logits, ids[msk], reduction="none")   # (M,)
            rows[s].append(ce)
            ref[s] = ce.mean()
            torch.testing.assert_close(out[s][0], ce.sum(), atol=1e-4, rtol=1e-5)
            assert out[s][1] == (logits.argmax(-1) == ids[msk]).sum() and out[s][2] == msk.sum()
        counts = model.target_counts(b["video_mask"], b["image_mask"], cfg.patch_size[0])
        loss = model.objective({s: out[s][0] for s in out}, counts, lam=0.5)
        torch.testing.assert_close(loss, ref["image"] + 0.5 * ref["video"], atol=1e-5, rtol=1e-5)
        means.append(out)
    step = {s: sum(model.target_counts(b["video_mask"], b["image_mask"])[s] for b in batches) for s in rows}
    total = sum(model.objective({s: o[s][0] for s in o}, step, lam=0.5) for o in means)
    torch.testing.assert_close(total, torch.cat(rows["image"]).mean() + 0.5 * torch.cat(rows["video"]).mean(),
                               atol=1e-5, rtol=1e-5)
    two = model.objective({s: means[0][s][0] for s in ("image",)}, step, lam=0.5, world=2)
    torch.testing.assert_close(two, 2 * model.objective({"image": means[0]["image"][0]}, step, lam=0.5))


def test_video_stream_runs_before_the_image_stream():
    """With drop path on, a joint forward draws the video stream's random numbers first: its MVM sum equals a
    video-only forward from the same seed (official order), and its MIM sum differs from an image-only one."""
    cfg = dataclasses.replace(NANO, vocab_size=64, drop_path_rate=0.5)
    torch.manual_seed(0)
    m = BEVT(cfg).train()
    batch = _nano_batch(cfg.vocab_size)
    video = {k: v for k, v in batch.items() if k.startswith("video")}
    image = {k: v for k, v in batch.items() if k.startswith("image")}
    torch.manual_seed(5)
    joint = m(**batch)
    torch.manual_seed(5)
    video_only = m(**video)
    torch.manual_seed(5)
    image_only = m(**image)
    assert torch.equal(joint["video"][0], video_only["video"][0])
    assert not torch.equal(joint["image"][0], image_only["image"][0])


def test_masked_positions_get_the_mask_token():
    torch.manual_seed(0)
    enc = SwinEncoder(NANO)
    x = torch.randn(1, 3, 4, 64, 64)
    mask = torch.zeros(1, 2, 4, 4, dtype=torch.bool)
    mask[0, 1, 2, 3] = True                                    # one 16-px cell of temporal token 1
    e = enc.embed(x, mask)                                     # (1, 2, 16, 16, 32)
    hit = (e == enc.mask_token.view(-1)).all(-1)
    assert hit.sum() == 16 and hit[0, 1, 8:12, 12:16].all()   # exactly its 4x4 patches


@torch.no_grad()
def test_dt0_property_by_value():
    """Image mode uses exactly the dt = 0 rows: changing every other row leaves it unchanged, changing a dt = 0
    row changes it; and the bias it gathers equals the table read at (dt=0, dh, dw) computed by hand."""
    torch.manual_seed(0)
    enc = SwinEncoder(NANO).eval()
    x = torch.randn(2, 3, 64, 64)
    ref = enc(x)[-1]
    Wd, Wh, Ww = NANO.window_size
    for layer in enc.layers:
        for blk in layer.blocks:
            t = blk.attn.relative_position_bias_table.view(2 * Wd - 1, -1, blk.attn.heads)
            t[:Wd - 1] += 1.0
            t[Wd:] -= 1.0
    torch.testing.assert_close(enc(x)[-1], ref, atol=0, rtol=0)
    table = enc.layers[0].blocks[0].attn.relative_position_bias_table
    table.view(2 * Wd - 1, -1, table.shape[1])[Wd - 1, 0] += 1.0
    assert not torch.allclose(enc(x)[-1], ref)
    idx = model.relative_position_index((1, Wh, Ww), NANO.window_size)
    t3 = table.view(2 * Wd - 1, 2 * Wh - 1, 2 * Ww - 1, -1)
    for i in range(Wh * Ww):
        for j in range(Wh * Ww):
            dh, dw = i // Ww - j // Ww, i % Ww - j % Ww
            assert torch.equal(table[idx[i, j]], t3[Wd - 1, dh + Wh - 1, dw + Ww - 1])


@torch.no_grad()
def test_clamped_window_difference_is_only_the_bias_index(monkeypatch):
    """At 96 px stage 3 (6x6) and 4 (3x3) are smaller than the 7x7 window: torchvision reads the bias with the
    full window's index sliced to N, we use true offsets, so the logits differ; with torchvision's indexing
    substituted into our model they agree again, so that is the whole difference."""
    tv, ours = _pair(_small_tv((2, 7, 7)))
    x = torch.randn(1, 3, 4, 96, 96)
    assert (ours(x) - tv(x)).abs().max() > 1e-4
    true_index = model.relative_position_index

    def torchvision_index(window, table_window, device=None):
        n = window[0] * window[1] * window[2]
        return true_index(table_window, table_window, device)[:n, :n]
    monkeypatch.setattr(model, "relative_position_index", torchvision_index)
    torch.testing.assert_close(ours(x), tv(x), atol=1e-5, rtol=0)


def test_training_gradients_match_torchvision():
    """Train-mode forward + backward (padding, temporal and spatial shift, shift mask, bias gather) give
    torchvision's gradients for every parameter; float64, so that summation
    order cannot hide an error."""
    torch.manual_seed(1)
    tv, ours = _pair(SwinTransformer3d(patch_size=[2, 4, 4], embed_dim=24, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8],
                                       window_size=[4, 7, 7], stochastic_depth_prob=0.0))
    tv, ours = tv.double().train(), ours.double().train()
    x = torch.randn(1, 3, 12, 224, 200, dtype=torch.float64)   # T' = 6 (pad 8, shift 2), W' = 50 (pad 56)
    out_tv = tv.norm(tv.features(tv.patch_embed(x)))          # (B, T', H', W', C8), no head dropout
    out_ours = ours.encoder.norm(ours.encoder(x)[-1])
    torch.testing.assert_close(out_ours, out_tv, atol=1e-10, rtol=0)
    out_tv.square().sum().backward()
    out_ours.square().sum().backward()
    grads_tv = convert.from_torchvision({k: p.grad for k, p in tv.named_parameters()})
    for name, p in ours.named_parameters():
        if grads_tv[name] is None:                              # the classifier head is not used here
            assert p.grad is None and name.startswith("head."), name
            continue
        torch.testing.assert_close(p.grad, grads_tv[name], atol=1e-9, rtol=1e-7, msg=name)


def test_loss_with_no_masked_positions_is_zero_and_keeps_the_graph():
    torch.manual_seed(0)
    cfg = dataclasses.replace(NANO, vocab_size=64)
    m = BEVT(cfg)
    batch = _nano_batch(cfg.vocab_size)
    batch["video_mask"][:] = False                              # nothing masked in either stream
    batch["image_mask"][:] = False
    out = m(**batch)
    assert all(v.item() == 0.0 for s in out for v in out[s]), out
    counts = model.target_counts(batch["video_mask"], batch["image_mask"])
    loss = model.objective({s: out[s][0] for s in out}, counts, lam=1.0)
    assert loss.item() == 0.0
    loss.backward()
    no_grad = [n for n, p in m.named_parameters() if p.grad is None]
    assert no_grad == [] and all(p.grad.abs().max() == 0 for p in m.parameters())
    batch["image_mask"][0, 0, 0] = True                         # one masked position: a real loss again
    out = m(**batch)
    assert out["image"][0] > 0 and out["image"][2] == 1 and out["video"][0] == 0


def _official_image_block(blk, j, x, table_window):
    """Block j of a stage of the official image branch, written out from its code (not from model.py): a 2D window
    of Wh x Ww, shift Wh // 2, NO clamping; the 2D shift mask (compute_mask_2d, official:
    mmaction/models/backbones/swin_transformer_bevt.py:383-402) passed to EVERY block (:472-478) and applied on
    every block (:246); the cyclic roll on the odd blocks, whatever the map size (:237-238, shift from :439,449);
    the bias is the 3D table read with the full window's index sliced to the first Wh*Ww rows (:166-170)."""
    B, H, W, D = x.shape
    Wd, Wh, Ww = table_window
    ws, ss = Wh, Wh // 2
    region = torch.zeros(H, W)
    count = 0
    for hs in (slice(0, -ws), slice(-ws, -ss), slice(-ss, None)):
        for wsl in (slice(0, -ws), slice(-ws, -ss), slice(-ss, None)):
            region[hs, wsl] = count
            count += 1
    region = region.view(H // ws, ws, W // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)   # (nW, N)
    shift_mask = (region[:, None, :] - region[:, :, None] != 0).float() * -100.0               # (nW, N, N)
    full = model.relative_position_index(table_window, table_window)[:ws * ws, :ws * ws]       # (N, N)
    a = blk.attn
    y = blk.norm1(x)
    if j % 2 == 1:
        y = torch.roll(y, shifts=(-ss, -ss), dims=(1, 2))
    win = y.view(B, H // ws, ws, W // ws, ws, D).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, D)  # (B*nW, N, D)
    qkv = a.qkv(win).view(win.shape[0], ws * ws, 3, a.heads, D // a.heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * (D // a.heads) ** -0.5, qkv[1], qkv[2]                            # (B*nW, nH, N, hd)
    bias = a.relative_position_bias_table[full.flatten()].view(ws * ws, ws * ws, -1).permute(2, 0, 1)
    logits = (q @ k.transpose(-2, -1) + bias).view(B, -1, a.heads, ws * ws, ws * ws) + shift_mask[None, :, None]
    out = (logits.view(-1, a.heads, ws * ws, ws * ws).softmax(-1) @ v).transpose(1, 2).reshape(-1, ws * ws, D)
    out = a.proj(out).view(B, H // ws, W // ws, ws, ws, D).permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, D)
    if j % 2 == 1:
        out = torch.roll(out, shifts=(ss, ss), dims=(1, 2))
    x = x + out
    return x + blk.mlp(blk.norm2(x))


def _official_image_stage(stage, x, table_window):
    """One stage of the official image branch: its blocks (_official_image_block), then the patch merging."""
    for j, blk in enumerate(stage.blocks):
        x = _official_image_block(blk, j, x, table_window)
    return x, (stage.downsample(x[:, None])[:, 0] if stage.downsample is not None else x)


@torch.no_grad()
def test_official_image_attention_matches_a_per_block_reference():
    """image_attention="official" (the default) = the official image branch, block by block, on nano at 128 px
    (maps 32/16/8/4 with a 4x4 window: stage 4 is one window and still rolls by 2); "swin" differs from it."""
    torch.manual_seed(0)
    enc = SwinEncoder(dataclasses.replace(NANO, drop_path_rate=0.0)).eval().double()   # float64: exact test
    assert enc.cfg.image_attention == "official"
    for p in enc.parameters():
        p.add_(0.1 * torch.randn_like(p))
    img = torch.randn(2, 3, 128, 128, dtype=torch.float64)
    ours = enc(img)
    x = enc.embed(img)[:, 0]                                   # (B, H', W', D)
    for i, stage in enumerate(enc.layers):
        out, x = _official_image_stage(stage, x, NANO.window_size)
        torch.testing.assert_close(ours[i][:, 0], out, atol=1e-10, rtol=0)
    enc.cfg = dataclasses.replace(enc.cfg, image_attention="swin")
    swin = enc(img)
    assert all((s - o).abs().max() > 1e-3 for s, o in zip(swin, ours))   # every stage differs (mask on block 0)


def _block_section():
    """model.py's Swin block section as source text, from its banner to the next section's (the stages)."""
    src = Path(model.__file__).read_text()
    start = src.index("# --- the Swin block")
    return src[start:src.index("# --- stages", start)]


def _torchvision_block(blk, x, official_window):
    """The same block as torchvision computes it: its own window and shift (_get_window_and_shift_size), its
    functional shifted_window_attention_3d (mask built inside), given our bias with true offsets; then the MLP."""
    window, shift = _get_window_and_shift_size([s // 2 if blk.shifted else 0 for s in official_window],
                                               list(x.shape[1:4]), list(official_window))
    a = blk.attn
    y = shifted_window_attention_3d(blk.norm1(x), a.qkv.weight, a.proj.weight,
                                    a.relative_position_bias(tuple(window)).unsqueeze(0), window, a.heads, shift,
                                    qkv_bias=a.qkv.bias, proj_bias=a.proj.bias, training=False)
    x = x + y
    return x + blk.mlp(blk.norm2(x))


@torch.no_grad()
def test_swin_block_copies_out_alone():
    """model.py's Swin block section (<= 150 lines) runs on its own with torch, F, nn and einops only. Its SwinBlock,
    with the weights of model.SwinBlock, gives the same output, and that is torchvision's block (functional
    shifted_window_attention_3d + MLP) for plain and shifted windows: regular, padded, and with windows clamped to
    the map (the bias read with true offsets given to both). In official-image mode it is the official image
    branch's block (mask on plain blocks too, the shift kept where the map equals the window), float64."""
    section = _block_section()
    assert len(section.splitlines()) <= 150
    alone = {"torch": torch, "F": torch.nn.functional, "nn": torch.nn, "rearrange": rearrange}
    exec(compile(section, "model.py: the Swin block section", "exec"), alone)
    torch.manual_seed(0)
    window = (4, 4, 4)
    for shifted in (False, True):
        ours = model.SwinBlock(16, 2, window, shifted, 4.0, True, 0.0, 0.0).double().eval()
        copy = alone["SwinBlock"](16, 2, window, shifted, 4.0, True, 0.0, 0.0).double().eval()
        for p in ours.parameters():
            p.normal_(0, 0.3)                                   # a visible bias table
        copy.load_state_dict(ours.state_dict(), strict=True)
        for size in [(4, 8, 8),                                 # regular
                     (6, 10, 8),                                # T' and H' padded to 8 and 12
                     (2, 3, 8)]:                                # T' and H' clamp the window (no shift there)
            x = torch.randn(2, *size, 16, dtype=torch.float64)
            y = ours(x)
            assert torch.equal(copy(x), y), (shifted, size)
            torch.testing.assert_close(y, _torchvision_block(ours, x, window), atol=1e-12, rtol=0)
        for size in [(1, 8, 8), (1, 4, 4)]:                     # the official image branch; 4x4: map = window
            x = torch.randn(2, *size, 16, dtype=torch.float64)
            y = ours(x, official_image=True)
            assert torch.equal(copy(x, official_image=True), y), (shifted, size)
            ref = _official_image_block(ours, int(shifted), x[:, 0], window)
            torch.testing.assert_close(y[:, 0], ref, atol=1e-12, rtol=0)
            if not shifted or size[1] == window[1]:             # plain Swin: no mask, or no shift at map = window
                assert (ours(x) - y).abs().max() > 1e-3


@torch.no_grad()
def test_shift_mask_is_built_once_per_input_size(monkeypatch):
    """A shifted block builds its shift mask on the first input of a size and reuses it (another batch size is the
    same size); another size, or another device, builds another; a plain block needs none, except in
    official-image mode. The cached float32 mask serves a float64 input as a fresh block would."""
    built = []
    real = model.shift_attention_mask
    monkeypatch.setattr(model, "shift_attention_mask", lambda *a, **kw: built.append(a[0]) or real(*a, **kw))
    torch.manual_seed(0)
    blk = model.SwinBlock(8, 2, (2, 4, 4), True, 4.0, True, 0.0, 0.0).eval()
    blk(torch.randn(1, 2, 8, 8, 8))
    blk(torch.randn(3, 2, 8, 8, 8))
    assert built == [(2, 8, 8)] and len(blk.shift_masks) == 1
    blk(torch.randn(1, 2, 12, 8, 8))
    assert built == [(2, 8, 8), (2, 12, 8)]
    first, second = blk.shift_masks.values()
    assert first.shape == (4, 32, 32) and second.shape == (6, 32, 32)   # (nW, N, N)
    assert torch.equal(second, real((2, 12, 8), (2, 4, 4), (0, 2, 2)))   # T' = Wd: no temporal shift
    x = torch.randn(2, 2, 8, 8, 8, dtype=torch.float64)
    fresh = model.SwinBlock(8, 2, (2, 4, 4), True, 4.0, True, 0.0, 0.0).double().eval()
    fresh.load_state_dict(blk.state_dict())
    assert torch.equal(blk.double()(x), fresh(x)) and len(built) == 3   # cache hit in blk, a build in fresh
    blk.to("meta")(torch.empty(1, 2, 8, 8, 8, device="meta", dtype=torch.float64))
    assert len(built) == 4 and {k[-1].type for k in blk.shift_masks} == {"cpu", "meta"}
    plain = model.SwinBlock(8, 2, (2, 4, 4), False, 4.0, True, 0.0, 0.0).eval()
    plain(torch.randn(1, 2, 8, 8, 8))
    assert len(built) == 4 and plain.shift_masks == {}
    plain(torch.randn(1, 1, 8, 8, 8), official_image=True)
    assert built[-1] == (1, 8, 8) and len(plain.shift_masks) == 1


def test_grad_checkpoint_gives_the_same_gradients(monkeypatch):
    """grad_checkpoint=True: every block is recomputed in backward (counted), with drop path on and the same
    seed, and every gradient is the same as without."""
    cfg = dataclasses.replace(NANO, vocab_size=64, drop_path_rate=0.3)
    batch = _nano_batch(cfg.vocab_size)
    calls = []
    real = model.checkpoint
    monkeypatch.setattr(model, "checkpoint", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    grads = []
    for flag in (False, True):
        torch.manual_seed(0)
        m = BEVT(dataclasses.replace(cfg, grad_checkpoint=flag)).train()
        torch.manual_seed(1)
        out = m(**batch)
        counts = model.target_counts(batch["video_mask"], batch["image_mask"])
        model.objective({s: out[s][0] for s in out}, counts, lam=1.0).backward()
        grads.append({n: p.grad for n, p in m.named_parameters()})
    assert len(calls) == 2 * sum(cfg.depths)                   # both streams, every block, only when asked
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, atol=1e-6, rtol=0, msg=name)


def test_finetune_head_init_is_normal_std_001():
    """official I3DHead: normal_init(fc_cls, std=0.01), bias 0 (mmaction/models/heads/i3d_head.py:30,51); the
    encoder's Linear layers keep trunc_normal(0.02)."""
    torch.manual_seed(0)
    clf = VideoClassifier(dataclasses.replace(NANO, embed_dim=64), num_classes=2000)   # 512 x 2000 head
    w = clf.head.weight
    assert abs(w.std().item() / 0.01 - 1) < 0.01 and abs(w.mean().item()) < 1e-4   # 1M samples: +-0.1 % std
    assert torch.equal(clf.head.bias, torch.zeros_like(clf.head.bias))
    qkv = clf.encoder.layers[3].blocks[0].attn.qkv.weight     # 1536 x 512
    assert abs(qkv.std().item() / 0.02 - 1) < 0.01
