"""engine.py: the official optimizer groups (mmcv's longest-key rule on the official custom keys, layer ids), the lr
schedule, dtype resolution and autocast, fp16 loss scaling with a skipped step, the batch report, the distributed
set-up."""
import math

import pytest
import torch

import convert
import engine
import model as bevt_model

CPU = engine.Dist(False, 0, 0, 1, "cpu")


@pytest.fixture(scope="module")
def swin_b_bevt():
    with torch.device("meta"):  # the names and shapes of Swin-B's 344 pretraining parameters, no memory
        return bevt_model.BEVT(bevt_model.PRESETS["base"])


def group_of(groups):
    """{parameter name: (lr multiplier, weight decay)} from engine.param_groups' output."""
    return {n: (g["lr_scale"], g["weight_decay"]) for g in groups for n in g["names"]}


def counts(by_name):
    out = {}
    for group in by_name.values():
        out[group] = out.get(group, 0) + 1
    return out


# ----------------------------------------------------------------------------------------------------------------------
# mmcv DefaultOptimizerConstructor's rule


def test_longest_custom_key_wins_then_alphabetical():
    keys = {"norm": {"decay_mult": 0.0}, "backbone": {"lr_mult": 0.1}, "bias_table": {"lr_mult": 2.0},
            "relative_position_bias_table": {"decay_mult": 0.0}, "aaaa": {"lr_mult": 3.0}, "zzzz": {"lr_mult": 4.0}}
    assert engine.paramwise("encoder.layers.0.blocks.0.norm1.weight", keys) == (0.1, 1.0)  # backbone (8) > norm (4)
    assert engine.paramwise("encoder.layers.0.blocks.0.attn.relative_position_bias_table", keys) == (1.0, 0.0)
    assert engine.paramwise("head.weight", keys) == (1.0, 1.0)  # cls_head.fc_cls.weight: no key, no other rule
    assert engine.paramwise("head.bias", keys) == (1.0, 1.0)  # a bias no key matches is decayed (mmcv defaults)
    tie = {"aaaa": {"lr_mult": 3.0}, "zzzz": {"lr_mult": 4.0}}
    assert engine.paramwise("encoder.zzzz.aaaa.weight", tie) == (3.0, 1.0)  # equal length: alphabetical first
    names = ("encoder.norm.weight", "head.bias", "lm_head.weight", "decoder.image_spatial_up.weight")
    assert [convert.official_param_name(n) for n in names] == [
        "backbone.norm.weight", "cls_head.fc_cls.bias", "cls_head.lm_head.weight", "backbone.fpn.0.weight"]


def test_layer_ids_follow_official_k400_decay():
    d = bevt_model.PRESETS["base"].depths
    top = engine.max_layer_id(d)
    exp = {n: top - engine.layer_id(n, d) for n in ["encoder.patch_embed.proj.weight",
           "encoder.layers.0.blocks.0.attn.qkv.weight", "encoder.layers.0.downsample.reduction.weight",
           "encoder.layers.3.blocks.1.mlp.fc1.bias", "encoder.norm.weight", "head.weight"]}
    assert list(exp.values()) == [28, 27, 25, 1, 1, 0]  # official k400 cfg: 0.9^28 ... 0.9^27 ... 0.9, 0.9, 1


def test_layer_decay_keys_are_the_official_k400_table():
    """official: configs/recognition/swin/swin_base_patch244_window877_bevt_finetune_k400.py:97-125, written out:
    backbone.norm 0.9 (decay_mult 0), then one more factor 0.9 per block and per downsample, top to bottom."""
    d = 0.9
    table = {"backbone.norm": {"lr_mult": d, "decay_mult": 0.0}, "backbone.layers.3.blocks.1": {"lr_mult": d},
             "backbone.layers.3.blocks.0": {"lr_mult": d ** 2}, "backbone.layers.2.downsample": {"lr_mult": d ** 3}}
    table.update({f"backbone.layers.2.blocks.{j}": {"lr_mult": d ** (21 - j)} for j in range(18)})
    for key, power in (("layers.1.downsample", 22), ("layers.1.blocks.1", 23), ("layers.1.blocks.0", 24),
                       ("layers.0.downsample", 25), ("layers.0.blocks.1", 26), ("layers.0.blocks.0", 27),
                       ("patch_embed", 28)):
        table["backbone." + key] = {"lr_mult": d ** power}
    ours = engine.layer_decay_keys((2, 2, 18, 2), d)
    assert ours.keys() == table.keys()
    for key, value in table.items():
        assert ours[key].keys() == value.keys(), key
        assert all(math.isclose(ours[key][f], value[f], rel_tol=1e-12) for f in value), key


def test_pretraining_groups_are_the_official_cfg(swin_b_bevt):
    """official: configs/recognition/swin/swin_base_patch244_window877_bevt_in1k_k400.py:102-105: AdamW wd 0.05,
    custom keys absolute_pos_embed, relative_position_bias_table and norm with decay_mult 0, nothing else. So every
    LayerNorm (patch embeds 2 x 2, blocks 24 x 4, downsamples 3 x 2, final 2 = 108 tensors) and the 24 bias tables get
    no decay; everything else, biases, mask token, decoders and lm_head included, 0.05. All at lr x 1."""
    by_name = group_of(engine.param_groups(swin_b_bevt, 0.05, engine.NO_DECAY_KEYS))
    assert len(by_name) == 344
    assert counts(by_name) == {(1.0, 0.0): 108 + 24, (1.0, 0.05): 344 - 132}
    assert by_name["encoder.layers.2.blocks.7.attn.qkv.bias"] == (1.0, 0.05)
    assert by_name["encoder.mask_token"] == (1.0, 0.05) and by_name["lm_head.bias"] == (1.0, 0.05)
    assert by_name["decoder.video_temporal_up.bias"] == (1.0, 0.05)
    assert by_name["encoder.patch_embed_2d.norm.bias"] == (1.0, 0.0)
    assert by_name["encoder.layers.1.downsample.norm.weight"] == (1.0, 0.0)


# ----------------------------------------------------------------------------------------------------------------------
# schedule, precision, the optimizer step


def test_lr_schedule_breakpoints():
    lr, total, warm = 5e-4, 1000, 100
    assert engine.lr_at(0, total, warm, lr) == pytest.approx(0.1 * lr)  # warmup starts at 0.1 x lr
    cos_at_warm = 0.5 * lr * (1 + math.cos(math.pi * warm / total))
    assert engine.lr_at(warm, total, warm, lr) == pytest.approx(cos_at_warm)  # end of warmup joins the cosine
    assert engine.lr_at(warm // 2, total, warm, lr) == pytest.approx(0.55 * 0.5 * lr * (1 + math.cos(math.pi * 0.05)))
    assert engine.lr_at(total, total, warm, lr) == pytest.approx(0.0, abs=1e-12)  # cosine to min_lr = 0
    assert engine.lr_at(total, total, warm, lr, min_lr=1e-6) == pytest.approx(1e-6)
    assert all(engine.lr_at(s + 1, total, warm, lr) <= engine.lr_at(s, total, warm, lr) for s in range(warm, total))


def test_bf16_only_where_the_gpu_has_it_natively(monkeypatch):
    """V100 / T4: is_bf16_supported() is True (emulation counts), including_emulation=False is False -> fp16."""
    native = {"yes": True}
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: including_emulation or native["yes"])
    assert engine.resolve_dtype("cuda:0", "bfloat16") == "bfloat16"
    native["yes"] = False
    assert engine.resolve_dtype("cuda:3", "bfloat16") == "float16"
    assert engine.resolve_dtype("cuda:0", "float32") == "float32"
    assert engine.resolve_dtype("cpu", "bfloat16") == "float32"  # the CPU default stays fp32


def test_autocast_runs_bf16_on_cpu_when_asked():
    x, w = torch.randn(4, 8), torch.randn(8, 8)
    with engine.autocast_context("cpu", "bfloat16"):
        assert (x @ w).dtype == torch.bfloat16
    with engine.autocast_context("cpu", "float32"):
        assert (x @ w).dtype == torch.float32


def test_fp16_scaler_on_cpu_steps_and_skips_an_overflowing_step():
    torch.manual_seed(0)
    net = torch.nn.Linear(8, 4)
    optimizer = torch.optim.AdamW(engine.param_groups(net, 0.05, {}), lr=1e-3)
    scaler = engine.make_scaler(CPU, "float16")
    assert scaler.is_enabled()
    finite = torch.ones((), dtype=torch.bool)

    def step(poison):
        with engine.autocast_context("cpu", "float16"):
            loss = net(torch.randn(2, 8)).float().square().mean()
        scaler.scale(loss).backward()
        if poison:
            net.weight.grad[0, 0] = float("inf")
        return engine.optimizer_step(optimizer, scaler, finite & torch.isfinite(loss), 0.0, CPU, 1e-3)

    before = net.weight.detach().clone()
    grad_norm, skipped = step(poison=False)
    assert skipped == 0 and math.isfinite(grad_norm) and not torch.equal(before, net.weight)
    before, scale = net.weight.detach().clone(), scaler.get_scale()
    grad_norm, skipped = step(poison=True)
    assert skipped == 1 and torch.equal(before, net.weight) and scaler.get_scale() == scale / 2
    assert all(p.grad is None for p in net.parameters())  # the skipped step's gradients are not carried over


def test_nonfinite_loss_without_scaler_returns_none_and_keeps_weights():
    net = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(engine.param_groups(net, 0.05, {}), lr=1e-3)
    net(torch.randn(1, 2)).sum().backward()
    before = net.weight.detach().clone()
    assert engine.optimizer_step(optimizer, engine.make_scaler(CPU, "float32"), torch.tensor(False), 1.0, CPU,
                                 1e-3) is None
    assert torch.equal(before, net.weight)


def test_batch_report_names_the_official_batch_and_the_fix():
    class Cfg:
        accum, lr, num_workers = 2, 5e-4, 8
    env = engine.Dist(True, 0, 0, 8, "cuda:0")
    lines = engine.batch_report({"clips": 4, "images": 32}, {"clips": 256, "images": 2048}, Cfg, env)
    assert lines[0] == ("effective batch: 64 clips + 512 images per optimizer step (8 process(es) x 4 clips + "
                        "32 images x accum 2); official: 256 clips + 2,048 images")
    assert "--accum 8" in lines[1] and "--lr 0.000125" in lines[1]
    assert lines[-1] == "data workers per rank: 8"
    env32 = engine.Dist(True, 0, 0, 32, "cuda:0")
    assert len(engine.batch_report({"clips": 4, "images": 32}, {"clips": 256, "images": 2048}, Cfg, env32)) == 2


# ----------------------------------------------------------------------------------------------------------------------
# the step loop's data-wait share


# ----------------------------------------------------------------------------------------------------------------------
# distributed set-up


def test_torchrun_variables_else_srun_variables_else_one_process(monkeypatch):
    calls = []
    monkeypatch.setattr(engine.dist, "init_process_group", lambda backend, **kw: calls.append((backend, kw)))
    monkeypatch.setattr(engine.torch.cuda, "is_available", lambda: False)
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    assert engine.setup_distributed() == engine.Dist(False, 0, 0, 1, "cpu") and not calls
    monkeypatch.setenv("SLURM_NTASKS", "1")  # `python train.py` inside an allocation: still one process
    assert engine.setup_distributed() == engine.Dist(False, 0, 0, 1, "cpu") and not calls
    monkeypatch.setenv("SLURM_NTASKS", "16")  # srun, one task per GPU
    monkeypatch.setenv("SLURM_PROCID", "9")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    assert engine.setup_distributed() == engine.Dist(True, 9, 1, 16, "cpu")
    assert calls[-1] == ("gloo", {"rank": 9, "world_size": 16})
    monkeypatch.setenv("RANK", "3")  # torchrun inside an sbatch job: its variables win
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "32")
    assert engine.setup_distributed() == engine.Dist(True, 3, 3, 32, "cpu")
    assert calls[-1] == ("gloo", {"rank": 3, "world_size": 32})
