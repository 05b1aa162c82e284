"""finetune.py: the official optimizer groups of each preset on Swin-B (K400 layer decay, SSv2 backbone multiplier,
both with mmcv's longest-key rule), the EMA rule and one EMA on every rank, bf16 autocast through a step, torchvision
export parity, initialisation from the official / our / torchvision checkpoint formats, and the linear probe.
(Multi-view testing and the Table 2 transforms: tests/test_evaluate.py.)"""
import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import convert  # noqa: E402
import engine  # noqa: E402
import finetune  # noqa: E402
import model as bevt_model  # noqa: E402
import run
from engine import Dist  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CPU = Dist(False, 0, 0, 1, "cpu")
TINY = dataclasses.replace(bevt_model.PRESETS["nano"], embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2),
                           window_size=(2, 2, 2), drop_path_rate=0.0)


def cfg_for(preset, **kw):
    return finetune.FinetuneConfig(**{**finetune.PRESETS[preset], **kw})


# ----------------------------------------------------------------------------------------------------------------------
# acceptance 1: optimizer groups


def official_k400_multipliers(depths, decay=0.9):
    """The official custom_keys table (k400 cfg:97-125) written out independently of engine.layer_id: walking down from
    the head, backbone.norm and the last block share 0.9, then every block and every downsample one more factor."""
    table, k = {"head": 1.0, "norm": decay}, 1
    for i in reversed(range(len(depths))):
        if i < len(depths) - 1:
            k += 1
            table[f"layers.{i}.downsample"] = decay ** k
        for j in reversed(range(depths[i])):
            if not (i == len(depths) - 1 and j == depths[i] - 1):
                k += 1
            table[f"layers.{i}.blocks.{j}"] = decay ** k
    table["patch_embed"] = decay ** (k + 1)
    return table


def test_official_table_numbers_for_swin_b():
    t = official_k400_multipliers((2, 2, 18, 2))
    assert t["layers.3.blocks.1"] == 0.9 and t["norm"] == 0.9 and t["head"] == 1.0
    assert math.isclose(t["layers.0.blocks.0"], 0.9 ** 27) and math.isclose(t["patch_embed"], 0.9 ** 28)


def groups_by_name(cfg, mcfg, num_classes=400):
    with torch.device("meta"):  # names and shapes only
        m = bevt_model.VideoClassifier(mcfg, num_classes)
    keys = engine.recipe_keys(mcfg.depths, cfg.layer_decay, cfg.backbone_lr_scale)
    groups = engine.param_groups(m, cfg.weight_decay, keys)
    return {n: (g["lr_scale"], g["weight_decay"]) for g in groups for n in g["names"]}, m


def counts(by_name):
    out = {}
    for group in by_name.values():
        out[group] = out.get(group, 0) + 1
    return out


def test_k400_groups_per_parameter_swin_b():
    """official: configs/recognition/swin/swin_base_patch244_window877_bevt_finetune_k400.py:93-125 with mmcv's
    longest-key rule: every block / downsample / patch_embed parameter (norms and biases included) takes its key's
    layer decay and wd 0.001, because the block key is longer than 'norm'; the 24 relative_position_bias_tables match
    'relative_position_bias_table' (28 chars, longer than any block key): lr x 1, no decay; backbone.norm 0.9, no
    decay; the head (no key) lr x 1, wd 0.001, bias too."""
    cfg, mcfg = cfg_for("k400"), bevt_model.PRESETS["base"]
    got, m = groups_by_name(cfg, mcfg)
    table = official_k400_multipliers(mcfg.depths)
    assert set(got) == {n for n, _ in m.named_parameters()} and len(got) == 329  # each parameter in one group
    for name, _ in m.named_parameters():
        key = name.removeprefix("encoder.")
        unit = next(u for u in sorted(table, key=len, reverse=True) if key.startswith(u + "."))
        lr, wd = got[name]
        if name.endswith("relative_position_bias_table"):
            assert (lr, wd) == (1.0, 0.0), name
        else:
            assert math.isclose(lr, table[unit], rel_tol=1e-12), name
            assert wd == (0.0 if unit == "norm" else 0.001), name
    c = counts(got)
    assert c[(1.0, 0.0)] == 24 and c[(0.9, 0.0)] == 2 and c[(1.0, 0.001)] == 2
    assert len(c) == 31  # 28 layer-decay groups + bias tables + final norm + head
    assert got["encoder.patch_embed.norm.weight"] == (pytest.approx(0.9 ** 28), 0.001)
    assert got["encoder.layers.1.downsample.norm.bias"] == (pytest.approx(0.9 ** 22), 0.001)
    assert got["encoder.layers.0.blocks.0.norm1.weight"] == (pytest.approx(0.9 ** 27), 0.001)
    assert got["encoder.layers.2.blocks.5.attn.proj.bias"] == (pytest.approx(0.9 ** 16), 0.001)
    assert got["encoder.norm.weight"] == (pytest.approx(0.9), 0.0) and got["head.bias"] == (1.0, 0.001)


@pytest.mark.parametrize("preset", ["ssv2", "diving48"])
def test_ssv2_groups_per_parameter_swin_b(preset):
    """official: configs/recognition/swin/swin_base_patch244_window1677_bevt_finetune_ssv2.py:95-99 with mmcv's
    longest-key rule: 'backbone' (8 chars) beats 'norm' (4), so the 106 backbone norm tensors and 97 backbone biases
    get lr x 0.1 AND wd 0.05; the 24 bias tables keep lr x 1 without decay; the head (no key) lr x 1, wd 0.05."""
    cfg = cfg_for(preset)
    mcfg = dataclasses.replace(bevt_model.PRESETS["base"], window_size=(16, 7, 7))
    got, _ = groups_by_name(cfg, mcfg, 174)
    assert counts(got) == {(1.0, 0.0): 24, (0.1, 0.05): 329 - 24 - 2, (1.0, 0.05): 2}
    norms = [n for n in got if ".norm" in n]
    biases = [n for n in got if n.endswith(".bias") and ".norm" not in n and n.startswith("encoder.")]
    assert len(norms) == 106 and {got[n] for n in norms} == {(0.1, 0.05)}
    assert len(biases) == 97 and {got[n] for n in biases} == {(0.1, 0.05)}
    assert got["encoder.layers.2.blocks.9.attn.relative_position_bias_table"] == (1.0, 0.0)
    assert got["head.bias"] == (1.0, 0.05) and got["encoder.layers.0.blocks.0.attn.qkv.weight"] == (0.1, 0.05)


def test_presets_are_the_official_recipes(tmp_path):
    k, s = cfg_for("k400"), cfg_for("ssv2")
    assert (k.lr, k.weight_decay, k.clip_grad, k.videos_per_gpu * k.accum * 8, k.clip_len, k.frame_interval) == \
        (3e-4, 0.001, 40.0, 64, 32, 2)
    assert (k.test_clips, k.test_crops, k.drop_path, k.head_dropout, k.epochs, k.warmup_epochs) == \
        (4, 3, 0.3, 0.5, 60, 2.5)
    assert finetune.PRESETS["diving48"] == {**finetune.PRESETS["ssv2"], "flip": True}
    (tmp_path / "a.csv").write_text("")
    paths = {"train_ann": str(tmp_path / "a.csv"), "train_root": str(tmp_path), "test_ann": str(tmp_path / "a.csv"),
             "test_root": str(tmp_path)}
    cfg, synthetic = finetune.build_config(["--preset", "ssv2", *run.as_flags(paths), "--lr", "1e-3"])
    assert not synthetic and cfg == finetune.FinetuneConfig(
        **{**finetune.PRESETS["ssv2"], "preset": "ssv2", **paths, "lr": 1e-3})
    cfg, synthetic = finetune.build_config(["--preset", "ssv2", "--flip", "true"])
    assert synthetic and (cfg.model, cfg.flip, cfg.backbone_lr_scale, cfg.window_size) == ("nano", True, 0.1, (0, 0, 0))
    assert (s.lr, s.weight_decay, s.clip_grad, s.videos_per_gpu * s.accum * 8, s.sampling, s.flip) == \
        (5e-4, 0.05, 0.0, 64, "uniform", False)
    assert (s.window_size, s.randaugment, s.erase_prob, s.label_smoothing, s.ema, s.test_clips) == \
        ((16, 7, 7), (4, 7), 0.25, 0.1, True, 1)


def test_a_missing_or_absent_dataset_flag_is_named_before_the_out_dir_is_made(tmp_path):
    (tmp_path / "a.csv").write_text("")
    out, ann = ["--out-dir", str(tmp_path / "out")], str(tmp_path / "a.csv")
    with pytest.raises(SystemExit, match=r"^evaluation needs --test-ann and --test-root$"):
        finetune.main(["--train-ann", ann, "--train-root", str(tmp_path), *out])
    with pytest.raises(SystemExit, match=r"^training needs --train-ann and --train-root \(or --eval true\)$"):
        finetune.main(["--test-ann", ann, "--test-root", str(tmp_path), *out])
    for name in ("train-ann", "train-root", "test-ann", "test-root", "init"):
        with pytest.raises(SystemExit, match=rf"^--{name} {tmp_path / 'b.csv'}: no such file or folder$"):
            finetune.main([f"--{name}", str(tmp_path / "b.csv"), *out])
    assert not (tmp_path / "out").exists()


def test_lr_schedule_cosine_by_epoch_with_iteration_warmup():
    lrs = [engine.lr_at(s, 40, 10, 1.0, cosine_every=10) for s in range(40)]  # as finetune.train: 10 steps/epoch
    assert lrs[0] == pytest.approx(0.1) and lrs[5] == pytest.approx(0.55)  # linear warmup from 0.1 x lr
    assert lrs[10:20] == [pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))] * 10  # constant within an epoch
    assert lrs[39] == pytest.approx(0.5 * (1 + math.cos(3 * math.pi / 4)))


def test_ema_one_update_per_step_equals_official_per_iteration_updates():
    m = torch.nn.Linear(3, 2)
    ema = {n: torch.zeros_like(p) for n, p in m.named_parameters()}
    ref = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in m.named_parameters()}
    for _ in range(3):
        for _ in range(8):  # mmcv EMAHook: after every forward iteration; params unchanged between steps
            for n, p in m.named_parameters():
                ref[n] = (1 - 2e-4) * ref[n] + 2e-4 * p.detach().double()
        finetune.ema_update(ema, m, 2e-4, accum=8)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(1.0)
    for n in ema:
        torch.testing.assert_close(ema[n].double(), ref[n], rtol=1e-5, atol=1e-9)


# ----------------------------------------------------------------------------------------------------------------------
# acceptance 4: export to torchvision


def export_torchvision(model, path):
    """What `finetune.py --export-torchvision PATH` writes."""
    torch.save(convert.to_torchvision(model.state_dict(), model.encoder.cfg.window_size), path)


def randomised(model):
    with torch.no_grad():  # non-trivial norms and biases, so a swapped key would show
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def test_export_loads_strictly_into_torchvision_swin3d_t(tmp_path):
    torch.manual_seed(0)
    ours = randomised(bevt_model.VideoClassifier(bevt_model.PRESETS["tiny"], num_classes=5))
    export_torchvision(ours, tmp_path / "tv.pt")
    tv = torchvision.models.video.swin3d_t(num_classes=5)
    tv.load_state_dict(torch.load(tmp_path / "tv.pt", weights_only=True), strict=True)
    torch.testing.assert_close(tv.state_dict()["features.4.5.mlp.3.weight"],
                               ours.state_dict()["encoder.layers.2.blocks.5.mlp.fc2.weight"])


def tiny_torchvision(mcfg, num_classes):
    return torchvision.models.video.swin_transformer.SwinTransformer3d(
        patch_size=list(mcfg.patch_size), embed_dim=mcfg.embed_dim, depths=list(mcfg.depths),
        num_heads=list(mcfg.num_heads), window_size=list(mcfg.window_size), stochastic_depth_prob=0.0,
        num_classes=num_classes)


def test_export_same_logits_as_torchvision(tmp_path):
    """Logit parity on a tiny input needs a torchvision SwinTransformer3d of a tiny config: at sizes where a window
    is clamped to a smaller map torchvision (and the official code) slice the bias index, model.py does not (README
    'Differences'); swin3d_t needs 16 x 224 x 224 to avoid that (checked by hand: 7e-8, 14 s)."""
    torch.manual_seed(0)
    mcfg = dataclasses.replace(TINY, window_size=(2, 2, 2))
    ours = randomised(bevt_model.VideoClassifier(mcfg, num_classes=5, head_dropout=0.5))
    export_torchvision(ours, tmp_path / "tv.pt")
    tv = tiny_torchvision(mcfg, 5)
    tv.load_state_dict(torch.load(tmp_path / "tv.pt", weights_only=True), strict=True)
    x = torch.randn(2, 3, 4, 64, 64)  # token maps 16, 8, 4, 2: every window (2, 2, 2) fits, shifts in stages 1-3
    with torch.no_grad():
        torch.testing.assert_close(tv.eval()(x), ours(x), rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------------
# acceptance 5: initialisation formats


def init_classifier(path, classifier):
    """What finetune.py --init does with the file: (state dict, dropped keys, the format)."""
    return convert.init_classifier(convert.load_checkpoint(path), classifier, path)


def official_layout(bevt_sd):
    """Our BEVT state dict -> the official mmcv joint checkpoint layout."""
    # official: mmaction/models/backbones/swin_transformer_bevt.py:678-700, the decoders in the backbone (nn.Sequential
    # wrappers, but lm_down)
    decoders = {"image_spatial_up": "fpn.0", "image_linear": "lm_down", "video_spatial_up": "fpn_s.0",
                "video_linear": "lm_down_st.0", "video_temporal_up": "fpn_t.0"}
    sd = {}
    for k, v in bevt_sd.items():
        name, _, rest = k.partition(".")
        if name == "lm_head":
            sd["cls_head." + k] = v
        elif name == "decoder":
            part, _, param = rest.partition(".")
            sd[f"backbone.{decoders[part]}.{param}"] = v
        else:
            sd["backbone." + k.removeprefix("encoder.")] = v
    for i, d in enumerate(TINY.depths):
        for j in range(d):
            sd[f"backbone.layers.{i}.blocks.{j}.attn.relative_position_index"] = torch.zeros(8, 8, dtype=torch.long)
    sd["cls_head.vae_encoder.blocks.input.w"] = torch.zeros(4, 3, 7, 7)
    return {"meta": {"epoch": 150}, "state_dict": sd}


def test_official_checkpoint_drops_exactly_the_pretraining_keys(tmp_path):
    torch.manual_seed(0)
    pre = bevt_model.BEVT(dataclasses.replace(TINY, vocab_size=32))
    ckpt = official_layout(pre.state_dict())
    torch.save(ckpt, tmp_path / "bevt.pth")
    clf = bevt_model.VideoClassifier(TINY, num_classes=6)
    sd, dropped, msg = init_classifier(tmp_path / "bevt.pth", clf)
    assert set(sd) == set(clf.state_dict())
    pretrain_only = {k for k in pre.state_dict() if k.startswith(
        ("encoder.patch_embed_2d.", "encoder.mask_token", "lm_head.", "decoder."))}
    assert pretrain_only == set(pre.state_dict()) - set(clf.state_dict())
    buffers = {k for k in ckpt["state_dict"] if k.endswith("relative_position_index")}
    assert len(buffers) == sum(TINY.depths) and len(pretrain_only) == 4 + 1 + 2 + 5 * 2
    assert sorted(dropped) == sorted(pretrain_only | buffers | {"cls_head.vae_encoder.blocks.input.w"})
    assert "new head" in msg
    for k in clf.state_dict():
        if k.startswith("encoder."):
            assert torch.equal(sd[k], pre.state_dict()[k]), k
    ckpt["state_dict"]["backbone.surprise.weight"] = torch.zeros(1)
    torch.save(ckpt, tmp_path / "bad.pth")
    with pytest.raises(SystemExit, match="backbone.surprise|surprise.weight"):
        init_classifier(tmp_path / "bad.pth", clf)


def test_our_pretraining_and_torchvision_checkpoints_load(tmp_path):
    torch.manual_seed(0)
    pre = bevt_model.BEVT(dataclasses.replace(TINY, vocab_size=32))
    torch.save({"model": pre.state_dict(), "config": {}, "step": 1}, tmp_path / "ours.pt")
    wide = dataclasses.replace(TINY, window_size=(4, 2, 2))  # ssv2-style: a longer temporal window, tables resized
    clf = bevt_model.VideoClassifier(wide, num_classes=3)
    sd, _, msg = init_classifier(tmp_path / "ours.pt", clf)
    clf.load_state_dict(sd, strict=True)
    assert "our pretraining" in msg
    key = "encoder.layers.0.blocks.0.attn.relative_position_bias_table"
    assert pre.state_dict()[key].shape[0] == 3 * 3 * 3 and sd[key].shape[0] == 7 * 3 * 3
    tv = tiny_torchvision(TINY, 4)
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    clf = bevt_model.VideoClassifier(TINY, num_classes=4)
    sd, _, msg = init_classifier(tmp_path / "tv.pth", clf)
    clf.load_state_dict(sd, strict=True)
    assert "torchvision" in msg and "head from the checkpoint" in msg
    torch.testing.assert_close(sd["head.weight"], tv.state_dict()["head.weight"])


# ----------------------------------------------------------------------------------------------------------------------
# runs: one EMA on every rank, EMA from resumed weights, bf16 through a step, --help


def run_flags(out_dir, **overrides):
    """A tiny finetuning run on the synthetic set: nano, 64 px, 4 frames, 1 view per test video, from scratch."""
    base = dict(model="nano", init="none", out_dir=str(out_dir), img_size=64, train_short_side=73,
                test_short_side=64, clip_len=4, videos_per_gpu=2, accum=1, max_steps=1, num_workers=0, log_every=1,
                save_every=1, test_clips=1, test_crops=1, test_batch=16, dtype="float32")
    return run.as_flags({**base, **overrides})


def test_two_gloo_ranks_hold_one_ema(tmp_path):
    """From scratch every rank builds different weights (per-rank seed) until DDP broadcasts rank 0's: the EMA must
    start after that, or each rank evaluates (and rank 0 saves) an EMA of other weights."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(30500 + os.getpid() % 1000), str(ROOT / "tests" / "ddp_worker.py"), "finetune.py", str(tmp_path)]
    subprocess.run(cmd + run_flags(tmp_path, ema=True, max_steps=2), check=True, cwd=ROOT, env=env, timeout=300)
    for step in (1, 2):
        e0, e1 = (torch.load(tmp_path / f"ema_rank{r}_step{step}.pt", weights_only=True) for r in (0, 1))
        assert e0.keys() == e1.keys() and all(torch.equal(e0[k], e1[k]) for k in e0), f"EMA differs at step {step}"
    p0 = torch.load(tmp_path / "params_rank0_step2.pt", weights_only=True)
    assert torch.equal(p0, torch.load(tmp_path / "params_rank1_step2.pt", weights_only=True))


def test_resume_without_ema_starts_ema_from_the_resumed_weights(tmp_path):
    finetune.main(run_flags(tmp_path, max_steps=1))  # checkpoint without EMA
    resumed = torch.load(run.latest_checkpoint(tmp_path), weights_only=True)["model"]
    finetune.main(run_flags(tmp_path, max_steps=2, resume=True, ema=True, ema_momentum=0.0))  # EMA frozen at start
    ema = torch.load(run.latest_checkpoint(tmp_path), weights_only=True)["ema"]
    assert ema.keys() <= resumed.keys() and all(torch.equal(ema[k], resumed[k]) for k in ema)


def test_bf16_autocast_through_a_finetuning_step():
    torch.manual_seed(0)
    net = bevt_model.VideoClassifier(TINY, num_classes=5, head_dropout=0.0)
    reference = bevt_model.VideoClassifier(TINY, num_classes=5, head_dropout=0.0)
    reference.load_state_dict(net.state_dict())
    batch = {"video": torch.randn(2, 3, 4, 32, 32), "label": torch.tensor([1, 3])}
    seen = []
    net.head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    losses = {}
    for dtype, m in (("bfloat16", net), ("float32", reference)):
        cfg = cfg_for("k400", dtype=dtype, clip_grad=40.0)
        keys = engine.recipe_keys(TINY.depths, cfg.layer_decay, cfg.backbone_lr_scale)
        optimizer = torch.optim.AdamW(engine.param_groups(m, cfg.weight_decay, keys))
        result, stats = finetune.train_step(m, [batch], optimizer, engine.make_scaler(CPU, dtype), cfg, CPU, 1e-3)
        assert math.isfinite(result[0]) and result[1] == 0 and stats["clips"][2] == 2
        losses[dtype] = stats["clips"][0].item() / 2
    assert seen == [torch.bfloat16]
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=2e-2) and losses["bfloat16"] != losses["float32"]
    assert not torch.equal(net.head.weight, reference.head.weight)  # both stepped, in different precisions


def test_help_shows_each_preset_and_the_no_data_run(capsys):
    with pytest.raises(SystemExit):
        finetune.build_config(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--lr LR default: 0.0003; ssv2/diving48: 0.0005; no-data run: 0.001" in out
    assert "--flip {true,false} default: True; ssv2/no-data run: False" in out  # equal values share an entry
    assert "--layer-decay LAYER_DECAY default: 0.9; ssv2/diving48: 1.0; must be > 0 and <= 1 " in out
    for name, value in finetune.SYNTHETIC_DEFAULTS.items():
        if value != getattr(finetune.FinetuneConfig, name):
            assert f"no-data run: {run._show(value)}" in out, name


# ----------------------------------------------------------------------------------------------------------------------
# the linear probe


def test_linear_probe_trains_only_the_head_and_leaves_the_encoder_bit_identical():
    """MAE's probe: BatchNorm1d(affine=False, eps 1e-6) + Linear on the frozen encoder, run in eval mode (drop path
    0.3 would otherwise make two forwards differ); 15 steps on one batch bring its loss down."""
    torch.manual_seed(0)
    cfg = cfg_for("k400", model="nano", linear_probe=True, drop_path=0.3, head_dropout=0.0, clip_grad=0.0)
    raw, mcfg = finetune.build_model(cfg, CPU, 3, "none")
    bn = raw.head[0]
    assert isinstance(bn, torch.nn.BatchNorm1d) and not bn.affine and bn.eps == 1e-6
    assert not raw.encoder.training and raw.head.training
    encoder_before = {k: v.clone() for k, v in raw.encoder.state_dict().items()}
    keys = engine.recipe_keys(mcfg.depths, cfg.layer_decay, cfg.backbone_lr_scale)
    groups = engine.param_groups(raw, cfg.weight_decay, keys)
    assert sorted(n for g in groups for n in g["names"]) == ["head.1.bias", "head.1.weight"]
    optimizer = torch.optim.AdamW(groups, lr=1e-2)
    batch = {"video": torch.randn(6, 3, 4, 32, 32), "label": torch.tensor([0, 1, 2, 0, 1, 2])}
    with torch.no_grad():
        feats = [raw.encoder(batch["video"])[-1] for _ in range(2)]
    assert torch.equal(*feats)  # eval mode: no drop path
    losses = []
    for _ in range(15):
        _, stats = finetune.train_step(raw, [batch], optimizer, engine.make_scaler(CPU, "float32"), cfg, CPU, 1e-2)
        losses.append(stats["clips"][0].item() / 6)
    assert losses[-1] < 0.5 * losses[0], losses
    after = raw.encoder.state_dict()
    assert all(torch.equal(encoder_before[k], after[k]) for k in encoder_before)  # bit for bit
    assert not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))  # the norm's statistics were tracked


def test_linear_probe_checkpoint_evaluates_and_exports_as_a_plain_head(tmp_path):
    """A probe checkpoint loads into a plain classifier (demo.py, --eval without --linear-probe) and exports to
    torchvision with the norm folded into the Linear: the same eval logits."""
    torch.manual_seed(0)
    cfg = cfg_for("k400", model="nano", linear_probe=True, head_dropout=0.0)
    probe, mcfg = finetune.build_model(cfg, CPU, 4, "none")
    with torch.no_grad():
        probe.head[0].running_mean.normal_()
        probe.head[0].running_var.uniform_(0.5, 2.0)
    probe.eval()
    torch.save({"model": probe.state_dict(), "config": dataclasses.asdict(cfg), "step": 1}, tmp_path / "probe.pt")
    plain = bevt_model.VideoClassifier(mcfg, 4, head_dropout=0.0).eval()
    sd, _, msg = init_classifier(tmp_path / "probe.pt", plain)
    plain.load_state_dict(sd, strict=True)
    assert "linear probe" in msg and "head from the checkpoint" in msg
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), probe(x), rtol=0, atol=1e-5)
    export_torchvision(probe, tmp_path / "tv.pt")
    assert {"head.weight", "head.bias"} <= set(torch.load(tmp_path / "tv.pt", weights_only=True))
