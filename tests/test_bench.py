"""bench.py: a nano run completes and writes the JSON report with every figure present, positive and finite.

No timing is asserted (speed is measured by bench.py and recorded in README.md, never tested)."""
import json
import math

import bench

NANO = ["--preset", "nano", "--device", "cpu", "--frames", "4", "--size", "128", "--n", "1", "--warmup", "0",
        "--joint-tokenizer", "vq", "--tokenizer-frames", "1", "--data-clips", "1",
        "--pretrain-sampling", "4", "2", "--finetune-sampling", "8", "2"]

EXPECTED = {
    "encoder": ["ours_s", "torchvision_s", "speedup_vs_torchvision", "flops", "flops_ours_executed", "ours_flops_per_s",
                "torchvision_flops_per_s", "matmul_peak_flops_per_s", "ours_peak_fraction", "torchvision_peak_fraction",
                "ours_peak_mem_bytes", "torchvision_peak_mem_bytes"],
    "joint": ["step_s", "clips_per_s", "images_per_s", "flops", "tokenizer_flops", "flops_per_s", "peak_fraction"],
    "tokenizer": ["dalle_frames_per_s", "dalle_flops_per_frame", "vq_frames_per_s", "vq_flops_per_frame"],
    "data": ["pretrain_clips_per_s", "finetune_clips_per_s"],
}
PHASES = {"input_copy", "tokenizer", "encoder", "decoder_loss", "backward", "optimizer"}


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
