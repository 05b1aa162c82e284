"""train.py: the three stages, DDP equivalence, exact resume, accumulation, the lr schedule, failure messages.

All runs use the synthetic set (generated once into BEVT_CACHE), the nano model at 96 px with 4 frames, and a tiny
VQ tokenizer trained by the fixture, so each run takes seconds on a CPU.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cli
import data
import model as bevt_model
import synthetic
import tokenizer as tok
import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory):
    """A VQ tokenizer for 96 px student views (48 px tokenizer view -> 6x6 ids), trained for a few seconds."""
    root = synthetic.synthetic_root()
    frames = data.load_frames(root, 256, 48, seed=0)
    cfg = tok.VQConfig(hid=16, vocab_size=64, size=48, steps=40, batch_size=32, val_frames=32)
    vq = tok.train_vq_tokenizer(frames, cfg, log=lambda *a: None)
    path = tmp_path_factory.mktemp("tok") / "tok.pt"
    tok.save_tokenizer(vq, path)
    return path


def flags(tokenizer_path, out_dir, **overrides):
    """A tiny run on the synthetic set: nano model, 96 px, 4 frames, no workers."""
    base = dict(model="nano", tokenizer=str(tokenizer_path), out_dir=str(out_dir), img_size=96, rescale=(110, 137),
                clip_len=4, frame_interval=2, videos_per_gpu=2, images_per_gpu=2, accum=1, epochs=2, warmup_epochs=0.5,
                lr=1e-3, num_workers=0, log_every=1, save_every=1, drop_path=0.1, dtype="float32")
    base.update(overrides)
    argv = []
    for k, v in base.items():
        argv.append("--" + k.replace("_", "-"))
        argv.extend(str(x) for x in v) if isinstance(v, tuple) else argv.append(str(v))
    return argv


def read_log(out_dir):
    return [json.loads(line) for line in (Path(out_dir) / "log.jsonl").read_text().splitlines()]


def final_params(out_dir):
    ckpt = train.latest_checkpoint(out_dir)
    return torch.load(ckpt, map_location="cpu", weights_only=True)["model"]


@pytest.mark.parametrize("stage", ["image", "video", "joint"])
def test_each_stage_runs_and_checkpoint_loads_weights_only(stage, tiny_tokenizer, tmp_path):
    train.main(flags(tiny_tokenizer, tmp_path, stage=stage, max_steps=2))
    ckpt = torch.load(train.latest_checkpoint(tmp_path), map_location="cpu", weights_only=True)
    assert ckpt["step"] == 2 and ckpt["config"]["stage"] == stage
    rows = read_log(tmp_path)
    assert [r["step"] for r in rows] == [1, 2]
    expect = {"image": {"loss_mim"}, "video": {"loss_mvm"}, "joint": {"loss_mim", "loss_mvm"}}[stage]
    assert expect <= set(rows[-1]) and not ({"loss_mim", "loss_mvm"} - expect) & set(rows[-1])
    assert all(math.isfinite(r[k]) for r in rows for k in expect)
    # the checkpoint restores into a fresh model with the same key set
    m = bevt_model.BEVT(bevt_model.ModelConfig(**ckpt["model_config"]))
    train.load_model_state(m, ckpt["model"], "ckpt")


def test_exact_resume_is_bitwise(tiny_tokenizer, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train.main(flags(tiny_tokenizer, a, max_steps=4))
    train.main(flags(tiny_tokenizer, b, max_steps=2))
    train.main(flags(tiny_tokenizer, b, max_steps=4, resume=True))
    pa, pb = final_params(a), final_params(b)
    assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)
    la, lb = read_log(a), read_log(b)
    assert [r["step"] for r in lb] == [1, 2, 3, 4]
    for ra, rb in zip(la, lb):
        assert ra["loss_mim"] == rb["loss_mim"] and ra["loss_mvm"] == rb["loss_mvm"]


def test_accumulation_equals_larger_batch(tiny_tokenizer, tmp_path):
    train.main(flags(tiny_tokenizer, tmp_path / "acc", max_steps=2, accum=2, drop_path=0.0))
    train.main(flags(tiny_tokenizer, tmp_path / "big", max_steps=2, videos_per_gpu=4, images_per_gpu=4,
                     drop_path=0.0))
    pa, pb = final_params(tmp_path / "acc"), final_params(tmp_path / "big")
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], rtol=1e-4, atol=1e-5, msg=k)
    la, lb = read_log(tmp_path / "acc"), read_log(tmp_path / "big")
    for ra, rb in zip(la, lb):  # the same samples, the same masked tokens: the same step losses
        assert ra["loss_mvm"] == pytest.approx(rb["loss_mvm"], rel=1e-5)
        assert ra["loss_mim"] == pytest.approx(rb["loss_mim"], rel=1e-5)


def test_ddp_two_ranks_equal_single_process(tiny_tokenizer, tmp_path):
    """torchrun, 2 gloo ranks x 2 clips; parameters identical across ranks after every step, and equal to one
    process with 4 clips (the same samples: DistributedSampler splits one permutation)."""
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(29500 + os.getpid() % 1000), str(ROOT / "tests" / "ddp_worker.py"), str(ddp_dir)]
    cmd += flags(tiny_tokenizer, ddp_dir, max_steps=2, drop_path=0.0)
    subprocess.run(cmd, check=True, cwd=ROOT, env=env, timeout=300)
    for step in (1, 2):
        r0 = torch.load(ddp_dir / f"params_rank0_step{step}.pt", weights_only=True)
        r1 = torch.load(ddp_dir / f"params_rank1_step{step}.pt", weights_only=True)
        assert torch.equal(r0, r1), f"ranks differ after step {step}"
    train.main(flags(tiny_tokenizer, single_dir, max_steps=2, videos_per_gpu=4, images_per_gpu=4, drop_path=0.0))
    pa, pb = final_params(ddp_dir), final_params(single_dir)
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], rtol=1e-4, atol=1e-5, msg=k)


def test_lr_schedule_breakpoints():
    lr, total, warm = 5e-4, 1000, 100
    assert train.lr_at(0, total, warm, lr) == pytest.approx(0.1 * lr)  # warmup starts at 0.1 x lr
    cos_at_warm = 0.5 * lr * (1 + math.cos(math.pi * warm / total))
    assert train.lr_at(warm, total, warm, lr) == pytest.approx(cos_at_warm)  # end of warmup joins the cosine
    assert train.lr_at(warm // 2, total, warm, lr) == pytest.approx(0.55 * 0.5 * lr * (1 + math.cos(math.pi * 0.05)))
    assert train.lr_at(total, total, warm, lr) == pytest.approx(0.0, abs=1e-12)  # cosine to min_lr = 0
    assert train.lr_at(total, total, warm, lr, min_lr=1e-6) == pytest.approx(1e-6)
    assert all(train.lr_at(s + 1, total, warm, lr) <= train.lr_at(s, total, warm, lr) for s in range(warm, total))


def test_nan_loss_stops_with_step_losses_and_last_checkpoint(tiny_tokenizer, tmp_path, monkeypatch):
    forward, calls = bevt_model.BEVT.forward, []

    def poisoned(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            out["loss_mim"] = out["loss_mim"] * float("nan")
        return out

    monkeypatch.setattr(bevt_model.BEVT, "forward", poisoned)
    with pytest.raises(SystemExit, match=r"non-finite loss at step 3: .*loss_mim.*nan.*ckpt_00000002\.pt"):
        train.main(flags(tiny_tokenizer, tmp_path, max_steps=5))


def test_checkpoint_with_wrong_keys_names_them(tiny_tokenizer, tmp_path):
    train.main(flags(tiny_tokenizer, tmp_path, max_steps=1))
    path = train.latest_checkpoint(tmp_path)
    state = torch.load(path, weights_only=True)
    state["model"]["not_a_parameter"] = torch.zeros(1)
    del state["model"]["lm_head.bias"]
    torch.save(state, path)
    with pytest.raises(SystemExit, match=r"(?s)ckpt_00000001\.pt.*lm_head\.bias.*not_a_parameter"):
        train.main(flags(tiny_tokenizer, tmp_path, max_steps=2, resume=True))


def test_flags_from_the_config_dataclass():
    given = cli.parse_flags(train.TrainConfig, ["--resume", "false", "--compile", "true", "--rescale", "1", "2"], "")
    assert given == {"resume": False, "compile": True, "rescale": (1, 2)}  # only what was given, typed
    with pytest.raises(SystemExit):  # bools take an explicit value
        cli.parse_flags(train.TrainConfig, ["--resume", "maybe"], "")
    with pytest.raises(SystemExit):  # choices are enforced
        cli.parse_flags(train.TrainConfig, ["--stage", "audio"], "")
    cfg, synthetic = train.build_config(["--epochs", "2"])  # no data flags: the embedded default, flags on top
    assert synthetic and cfg.model == "nano" and cfg.epochs == 2
    cfg, synthetic = train.build_config(["--video-ann", "a.csv", "--image-root", "im"])
    assert not synthetic and cfg.model == "base" and cfg.epochs == 150  # the official joint run
