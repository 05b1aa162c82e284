"""bench.py: a nano run completes and writes the JSON report with every figure present, positive and finite; the
GPU check's dry run (the same functions on the CPU at nano sizes) writes its JSON with every figure finite.

No timing is asserted (speed is measured by bench.py and recorded in README.md, never tested)."""
import dataclasses
import json
import math
from types import SimpleNamespace

import torch

import engine
import model as bevt_model
import train
from tools import bench

NANO = ["--preset", "nano", "--device", "cpu", "--frames", "4", "--size", "128", "--n", "1", "--warmup", "0",
        "--joint-tokenizer", "vq", "--tokenizer-frames", "1", "--data-clips", "1", "--data-files", "1",
        "--data-frames", "24", "--pretrain-sampling", "4", "2", "--finetune-sampling", "8", "2"]

EXPECTED = {
    "encoder": ["ours_s", "torchvision_s", "speedup_vs_torchvision", "flops", "flops_ours_executed", "ours_flops_per_s",
                "torchvision_flops_per_s", "matmul_peak_flops_per_s", "ours_peak_fraction", "torchvision_peak_fraction",
                "ours_peak_mem_bytes", "torchvision_peak_mem_bytes"],
    "joint": ["step_s", "clips_per_s", "images_per_s", "flops", "tokenizer_flops", "flops_per_s", "peak_fraction"],
    "tokenizer": ["dalle_frames_per_s", "dalle_flops_per_frame", "vq_frames_per_s", "vq_flops_per_frame"],
    "data": ["pretrain_h264_clips_per_s", "finetune_h264_clips_per_s", "pretrain_rawframes_clips_per_s",
             "finetune_rawframes_clips_per_s", "h264_mb_per_video", "rawframes_mb_per_video"],
}
PHASES = {"tokenizer", "forward", "optimizer", "backward_and_rest"}


def positive(v):
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def test_nano_run_writes_complete_json(tmp_path):
    out = tmp_path / "bench.json"
    returned = bench.main(NANO + ["--out", str(out)])
    res = json.loads(out.read_text())
    assert res == json.loads(json.dumps(returned))  # the file holds exactly what main returned
    assert res["config"]["preset"] == "nano" and res["config"]["batch"] == 1 and res["config"]["device"] == "cpu"
    for section, keys in EXPECTED.items():
        bad = {k: res[section].get(k) for k in keys if not positive(res[section].get(k))}
        assert not bad, f"{section}: missing or not positive finite: {bad}"
    # same weights, same input: our encoder reproduces torchvision's Video Swin (fp32)
    assert 0 <= res["encoder"]["max_abs_diff"] <= 1e-4
    # every attention FLOP is counted: ours executes at least the model's arithmetic (more if it recomputes)
    assert res["encoder"]["flops_ours_executed"] >= res["encoder"]["flops"]
    joint = res["joint"]
    assert set(joint["phases_s"]) == PHASES and all(v >= 0 for v in joint["phases_s"].values())
    assert math.isclose(sum(joint["phases_fraction"].values()), 1.0, rel_tol=1e-9)
    assert joint["images"] == 8 * joint["clips"] and joint["flops"] > joint["tokenizer_flops"] > 0


def finite(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def test_gpu_check_dry_run_writes_every_figure(tmp_path):
    """`python -m tools.bench --check true --dry-run true`: joint step eager and compiled, matmul peak, attention
    numerics against float64, `torchrun train.py` and `finetune.py` subprocesses (1 step each, the synthetic
    default)."""
    out = tmp_path / "check.json"
    bench.main(["--check", "true", "--dry-run", "true", "--out", str(out)])
    res = json.loads(out.read_text())
    assert res["dry_run"] and res["config"]["preset"] == "nano" and finite(res["wall_s"])
    assert positive(res["matmul_peak_flops_per_s"])
    for name in ("eager", "compiled"):
        joint = res["joint"][name]
        for key in ("first_step_s", "step_s", "clips_per_s", "images_per_s", "flops", "flops_per_s",
                    "peak_mem_bytes", "peak_fraction"):
            assert positive(joint[key]), (name, key, joint[key])
        assert set(joint["phases_s"]) == PHASES and 0 < joint["tokenizer_share"] < 1
    assert res["joint"]["compiled"]["compile_backend"] == "eager"
    attention = res["attention"]
    for name in ("autocast", "fp32"):
        assert all(finite(attention[name][k]) for k in ("out_rel_err", "bias_grad_rel_err"))
    # bf16 keeps ~3 significant digits, fp32 ~7: the errors say which arithmetic ran
    assert attention["fp32"]["out_rel_err"] < 1e-5 < attention["autocast"]["out_rel_err"] < 3e-2
    assert attention["fp32"]["bias_grad_rel_err"] < 1e-5 < attention["autocast"]["bias_grad_rel_err"] < 3e-2
    for name in ("train", "finetune"):
        run = res[name]
        assert run["returncode"] == 0, run["output_tail"]
        assert run["last_log_row"]["step"] == 1 and finite(run["wall_s"])
    assert 0 <= res["train"]["last_log_row"]["data_share"] <= 1
    assert all(finite(res["train"]["last_log_row"][k]) for k in ("loss_mvm", "loss_mim"))
    assert finite(res["finetune"]["last_log_row"]["loss"]) and 0 <= res["finetune"]["test_top1"] <= 100


def test_the_bench_step_is_train_py_s_step():
    """bench.joint_step (the bench may not import a script) computes what train.train_step does, bit for bit: the
    same per-stream sums, grad norm and updated weights on one micro-batch."""
    cfg = bench.BenchConfig(preset="nano", device="cpu", frames=4, size=64, batch=1)
    env = engine.Dist(False, 0, 0, 1, "cpu")
    types = SimpleNamespace(dtype="float32", lam=bench.LAM, clip_grad=bench.CLIP_GRAD)  # what train_step reads
    tokenizer = bench.build_tokenizer("vq", cfg)
    torch.manual_seed(0)
    mcfg = dataclasses.replace(bevt_model.PRESETS["nano"], vocab_size=tokenizer.vocab_size, drop_path_rate=0.0)
    models = [bevt_model.BEVT(mcfg), bevt_model.BEVT(mcfg)]
    models[1].load_state_dict(models[0].state_dict())
    optimizers = [torch.optim.AdamW(engine.param_groups(m, 0.05, engine.NO_DECAY_KEYS), lr=1e-3) for m in models]
    batch = bench.joint_batch(cfg, mcfg.patch_size[0])
    scaler = engine.make_scaler(env, "float32")
    (grad_a, _), stats = train.train_step(models[0], tokenizer, [batch], optimizers[0], scaler, types, env, 1e-3, 2)
    (grad_b, _), out = bench.joint_step(models[1], tokenizer, batch, optimizers[1], scaler, "float32", env, 1e-3, 2)
    assert grad_a == grad_b and stats.keys() == out.keys() == {"video", "image"}
    for s in stats:
        assert torch.equal(stats[s], torch.stack(out[s]).double())
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(a, b)
