"""train.py: the three stages, DDP equivalence, exact resume, accumulation, the log window, failure messages, the
tokenizer stage, and the CPU-runnable versions of the CUDA paths (bf16 autocast, torch.compile) through the joint step.

All runs use the synthetic set (generated once into BEVT_CACHE), the nano model at 96 px with 4 frames, and a tiny
VQ tokenizer trained by the fixture, so each run takes seconds on a CPU.
"""
import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import convert
import data
import engine
import model as bevt_model
import run
import synthetic
import tokenizer as tok
import train

ROOT = Path(__file__).resolve().parents[1]
CPU = engine.Dist(False, 0, 0, 1, "cpu")


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory):
    """A VQ tokenizer for 96 px student views (48 px tokenizer view -> 6x6 ids), trained for a few seconds."""
    root = synthetic.synthetic_root()
    frames = synthetic.load_frames(root, 256, 48, seed=0)
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
    return run.as_flags({**base, **overrides})


def read_log(out_dir):
    return [json.loads(line) for line in (Path(out_dir) / "log.jsonl").read_text().splitlines()]


def final_params(out_dir):
    ckpt = run.latest_checkpoint(out_dir)
    return torch.load(ckpt, map_location="cpu", weights_only=True)["model"]


def torchrun(script, out_dir, argv, env_extra=None, check=True):
    """tests/ddp_worker.py SCRIPT under torchrun with 2 gloo ranks."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(29500 + os.getpid() % 1000), str(ROOT / "tests" / "ddp_worker.py"), script, str(out_dir)] + argv
    return subprocess.run(cmd, check=check, cwd=ROOT, env=env, timeout=300, capture_output=not check, text=True)


@pytest.mark.parametrize("stage", ["image", "video", "joint"])
def test_each_stage_runs_and_checkpoint_loads_weights_only(stage, tiny_tokenizer, tmp_path):
    train.main(flags(tiny_tokenizer, tmp_path, stage=stage, max_steps=2, grad_checkpoint=stage == "joint"))
    ckpt = torch.load(run.latest_checkpoint(tmp_path), map_location="cpu", weights_only=True)
    assert ckpt["step"] == 2 and ckpt["config"]["stage"] == stage
    assert ckpt["model_config"]["grad_checkpoint"] == (stage == "joint")  # --grad-checkpoint reaches the model
    assert ckpt["tokenizer"] == str(tiny_tokenizer.resolve())  # the file the targets came from
    rows = read_log(tmp_path)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(0 <= r["data_share"] <= 1 for r in rows)  # share of the step time spent waiting for batches
    expect = {"image": {"loss_mim"}, "video": {"loss_mvm"}, "joint": {"loss_mim", "loss_mvm"}}[stage]
    assert expect <= set(rows[-1]) and not ({"loss_mim", "loss_mvm"} - expect) & set(rows[-1])
    assert all(math.isfinite(r[k]) for r in rows for k in expect)
    # the checkpoint restores into a fresh model with the same key set
    m = bevt_model.BEVT(bevt_model.ModelConfig(**ckpt["model_config"]))
    convert.load_model_state(m, ckpt["model"], "ckpt")


def test_default_tokenizer_is_cached_under_the_code_version_and_named_in_checkpoints(tiny_tokenizer, tmp_path,
                                                                                      monkeypatch, capsys):
    """Without --tokenizer the synthetic run caches its small VQ under a name with synthetic.SMALL_VQ_VERSION (a VQ
    made by other data / tokenizer code is not reused) and the checkpoint names that file. The VQ's training is replaced
    by a copy of the fixture's (a minute at its defaults)."""
    made = []

    def fake_small_vq(root, size, path):
        made.append(Path(path))
        Path(path).write_bytes(Path(tiny_tokenizer).read_bytes())
        return Path(path)

    monkeypatch.setattr(synthetic, "CACHE", tmp_path / "cache")
    (tmp_path / "cache").mkdir()
    monkeypatch.setattr(synthetic, "small_vq", fake_small_vq)
    train.main(flags("", tmp_path / "run", max_steps=1))
    assert len(made) == 1 and made[0].name.startswith(f"vq_tokenizer_48_v{synthetic.SMALL_VQ_VERSION}_")
    ckpt = torch.load(run.latest_checkpoint(tmp_path / "run"), map_location="cpu", weights_only=True)
    assert ckpt["tokenizer"] == str(made[0].resolve())
    assert "| data " in capsys.readouterr().out  # the log line shows the data-wait share


def test_exact_resume_is_bitwise(tiny_tokenizer, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train.main(flags(tiny_tokenizer, a, max_steps=4))
    train.main(flags(tiny_tokenizer, b, max_steps=3, save_every=2))
    (b / "ckpt_00000003.pt").unlink()  # interrupted after step 3 was logged, before it was saved
    train.main(flags(tiny_tokenizer, b, max_steps=4, resume=True))
    pa, pb = final_params(a), final_params(b)
    assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)
    la, lb = read_log(a), read_log(b)
    assert [r["step"] for r in lb] == [1, 2, 3, 4]  # step 3, trained again, is logged once
    for ra, rb in zip(la, lb):
        assert ra["loss_mim"] == rb["loss_mim"] and ra["loss_mvm"] == rb["loss_mvm"]


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_over_and_logs_each_step_once(tiny_tokenizer,
                                                                                               tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    train.main(flags(tiny_tokenizer, a, max_steps=3))
    train.main(flags(tiny_tokenizer, b, max_steps=2))
    for ckpt in b.glob("ckpt_*.pt"):
        ckpt.unlink()  # killed after logging steps 1-2, before any checkpoint
    capsys.readouterr()
    train.main(flags(tiny_tokenizer, b, max_steps=3, resume=True))
    assert "the 2 rows an earlier attempt wrote" in capsys.readouterr().out
    la, lb = read_log(a), read_log(b)
    assert [r["step"] for r in lb] == [1, 2, 3]
    assert [(r["loss_mim"], r["loss_mvm"]) for r in la] == [(r["loss_mim"], r["loss_mvm"]) for r in lb]


def script(out_dir, argv, **popen):
    """train.py as a user runs it (its own process, one thread: bitwise comparable with another such run)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "train.py", *argv], cwd=ROOT, env=env, text=True, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def signal_after_step(process, out_dir, signum, step):
    """Sends `signum` to the run's process group (its data workers too, as Ctrl-C in a terminal or SLURM do) once
    log.jsonl has the row of `step`; returns (exit code, stdout, stderr)."""
    log = Path(out_dir) / "log.jsonl"
    while process.poll() is None and not (log.exists() and len(log.read_text().splitlines()) >= step):
        time.sleep(0.05)
    os.killpg(process.pid, signum)
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


@pytest.fixture(scope="module")
def uninterrupted(tiny_tokenizer, tmp_path_factory):
    """The out-dir of a 6-step run as a user starts it, never interrupted: what every interrupted run must end as."""
    out = tmp_path_factory.mktemp("uninterrupted")
    assert script(out, flags(tiny_tokenizer, out, max_steps=6, save_every=100, num_workers=1)).wait(timeout=300) == 0
    return out


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, run.EXIT_REQUEUE), (signal.SIGUSR1, run.EXIT_REQUEUE),
                                          (signal.SIGINT, run.EXIT_INTERRUPTED)])
def test_a_stop_signal_saves_at_the_step_boundary_and_resume_is_bitwise(tiny_tokenizer, uninterrupted, tmp_path,
                                                                        signum, code):
    """SIGTERM / SIGUSR1 (a preemption) or Ctrl-C mid-run: the run finishes its step, saves it, prints one line (no
    traceback) and exits 75 (requeue) or 130; `--resume true` then ends bitwise where an uninterrupted run ends."""
    argv = flags(tiny_tokenizer, tmp_path, max_steps=6, save_every=100, num_workers=1)
    returncode, out, err = signal_after_step(script(tmp_path, argv), tmp_path, signum, 2)
    assert returncode == code and "Traceback" not in err, err
    (saved,) = run.run_checkpoints(tmp_path)
    assert 2 <= saved[0] < 6 and f"{signal.Signals(signum).name}: stopped after step {saved[0]}, checkpoint " \
        f"{saved[1]}; continue with --resume true" in out
    assert script(tmp_path, argv + ["--resume", "true"]).wait(timeout=300) == 0
    pa, pb = final_params(uninterrupted), final_params(tmp_path)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert [r["loss_mvm"] for r in read_log(uninterrupted)] == [r["loss_mvm"] for r in read_log(tmp_path)]


def test_pretraining_reads_label_free_inputs(tiny_tokenizer, tmp_path, syn):
    """A plain video folder (no annotation), a list of paths, and an image folder without class sub-folders."""
    images = tmp_path / "images"
    images.mkdir()
    for k, path in enumerate(sorted(Path(syn["images_train"]).rglob("*.JPEG"))[:6]):
        shutil.copy(path, images / f"img{k}.jpg")
    videos = sorted(Path(syn["mp4_root"]).glob("*.mp4"))[:6]
    (tmp_path / "paths.txt").write_text("".join(f"{p.name}\n" for p in videos))
    for name, video_flags in (("folder", dict(video_ann=str(syn["mp4_root"]))),
                              ("list", dict(video_ann=str(tmp_path / "paths.txt"), video_root=str(syn["mp4_root"])))):
        out = tmp_path / name
        train.main(flags(tiny_tokenizer, out, max_steps=1, image_root=str(images), **video_flags))
        assert read_log(out)[-1]["masked_mvm"] > 0 and read_log(out)[-1]["masked_mim"] > 0


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


def test_log_line_is_the_mean_over_its_window(tiny_tokenizer, tmp_path):
    """log_every 2 logs the mean over the two steps' masked positions, not the last step's mean."""
    train.main(flags(tiny_tokenizer, tmp_path / "every", max_steps=4, drop_path=0.0))
    train.main(flags(tiny_tokenizer, tmp_path / "window", max_steps=4, drop_path=0.0, log_every=2))
    every, window = read_log(tmp_path / "every"), read_log(tmp_path / "window")
    assert [r["step"] for r in window] == [2, 4]
    for row, (a, b) in zip(window, [every[0:2], every[2:4]]):
        for k in ("mim", "mvm"):
            n = a["masked_" + k] + b["masked_" + k]
            assert row["masked_" + k] == n
            mean = (a["loss_" + k] * a["masked_" + k] + b["loss_" + k] * b["masked_" + k]) / n
            assert row["loss_" + k] == pytest.approx(mean, rel=1e-9) and row["loss_" + k] != b["loss_" + k]


def test_ddp_two_ranks_equal_single_process(tiny_tokenizer, tmp_path):
    """torchrun, 2 gloo ranks x 2 clips; parameters identical across ranks after every step, and equal to one
    process with 4 clips (the same samples: DistributedSampler splits one permutation)."""
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    torchrun("train.py", ddp_dir, flags(tiny_tokenizer, ddp_dir, max_steps=2, drop_path=0.0))
    for step in (1, 2):
        r0 = torch.load(ddp_dir / f"params_rank0_step{step}.pt", weights_only=True)
        r1 = torch.load(ddp_dir / f"params_rank1_step{step}.pt", weights_only=True)
        assert torch.equal(r0, r1), f"ranks differ after step {step}"
    train.main(flags(tiny_tokenizer, single_dir, max_steps=2, videos_per_gpu=4, images_per_gpu=4, drop_path=0.0))
    pa, pb = final_params(ddp_dir), final_params(single_dir)
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], rtol=1e-4, atol=1e-5, msg=k)


def test_resume_where_ranks_see_different_checkpoints_fails_fast(tiny_tokenizer, tmp_path):
    """Rank 1 sees no checkpoint in out_dir (a disk not shared between nodes): both ranks stop at once with what
    each sees, instead of rank 0 resuming and rank 1 starting afresh (a hang at the first collective)."""
    (tmp_path / "ckpt_00000002.pt").write_bytes(b"never loaded: the ranks disagree first")
    result = torchrun("train.py", tmp_path, flags(tiny_tokenizer, tmp_path, max_steps=4, resume=True),
                   {"HIDE_CHECKPOINTS_ON_RANK": "1"}, check=False)
    assert result.returncode != 0
    assert "the ranks disagree on the newest checkpoint" in result.stderr
    assert "rank 0: " + str(tmp_path / "ckpt_00000002.pt") in result.stderr and "rank 1: None" in result.stderr


def test_nan_loss_stops_with_step_losses_and_last_checkpoint(tiny_tokenizer, tmp_path, monkeypatch):
    forward, calls = bevt_model.BEVT.forward, []

    def poisoned(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            ce_sum, correct, n = out["image"]
            out["image"] = (ce_sum * float("nan"), correct, n)
        return out

    monkeypatch.setattr(bevt_model.BEVT, "forward", poisoned)
    with pytest.raises(SystemExit, match=r"non-finite loss at step 3: .*loss_mim.*nan.*ckpt_00000002\.pt"):
        train.main(flags(tiny_tokenizer, tmp_path, max_steps=5))


def test_checkpoint_with_wrong_keys_names_them(tiny_tokenizer, tmp_path):
    train.main(flags(tiny_tokenizer, tmp_path, max_steps=1))
    path = run.latest_checkpoint(tmp_path)
    state = torch.load(path, weights_only=True)
    state["model"]["not_a_parameter"] = torch.zeros(1)
    del state["model"]["lm_head.bias"]
    torch.save(state, path)
    with pytest.raises(SystemExit, match=r"(?s)ckpt_00000001\.pt.*lm_head\.bias.*not_a_parameter"):
        train.main(flags(tiny_tokenizer, tmp_path, max_steps=2, resume=True))


def test_a_checkpoint_of_another_model_or_stage_names_what_it_holds(tiny_tokenizer, tmp_path):
    """--resume with another --model or --stage, --init of another model size: one line naming both, no traceback;
    and a second run without --resume in the same out-dir stops before any work, the earlier run left as it was."""
    out = tmp_path / "run"
    train.main(flags(tiny_tokenizer, out, max_steps=1))
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(SystemExit, match=r"holds a run of --model nano --stage joint; the flags ask for --model tiny "
                                         r"--stage joint"):
        train.main(flags(tiny_tokenizer, out, max_steps=2, resume=True, model="tiny"))
    with pytest.raises(SystemExit, match=r"holds a run of --model nano --stage joint; the flags ask for --model nano "
                                         r"--stage video"):
        train.main(flags(tiny_tokenizer, out, max_steps=2, resume=True, stage="video"))
    with pytest.raises(SystemExit, match=r"--out-dir .*run holds an earlier run \(ckpt_00000001.pt, log.jsonl\): "
                                         r"continue it with --resume true"):
        train.main(flags(tiny_tokenizer, out, max_steps=2))
    assert sorted(p.name for p in out.iterdir()) == before
    with pytest.raises(SystemExit, match=r"--init .*ckpt_00000001.pt holds a run of --model nano --stage joint; the "
                                         r"flags ask for --model tiny$"):
        train.main(flags(tiny_tokenizer, tmp_path / "tiny", max_steps=1, model="tiny",
                         init=str(run.latest_checkpoint(out))))


def test_real_data_without_tokenizer_stops_at_once_naming_both_ways(tmp_path):
    (tmp_path / "k400.csv").write_text("")
    argv = ["--video-ann", str(tmp_path / "k400.csv"), "--video-root", str(tmp_path), "--out-dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as e:
        train.main(argv)
    msg = str(e.value)
    assert "python tokenizer.py convert encoder.pkl dalle_encoder.pt" in msg and "--tokenizer dalle_encoder.pt" in msg
    assert f"python -m tools.dataset small-vq --root {tmp_path} --img-size 224" in msg
    assert [p.name for p in tmp_path.iterdir()] == ["k400.csv"]  # nothing was started: no folder, no tokenizer


def test_flags_from_the_config_dataclass(tmp_path):
    given = run.parse_flags(train.TrainConfig, ["--resume", "false", "--compile", "true", "--rescale", "1", "2"], "")
    assert given == {"resume": False, "compile": True, "rescale": (1, 2)}  # only what was given, typed
    values = {"stage": "video", "rescale": (146, 183), "resume": False, "lr": 0.001, "mask_ratio": 0.5}
    assert run.as_flags({"rescale": (146, 183), "flip": False, "out_dir": "a"}) == \
        ["--rescale", "146", "183", "--flip", "false", "--out-dir", "a"]
    assert run.parse_flags(train.TrainConfig, run.as_flags(values), "") == values  # as_flags is the inverse
    with pytest.raises(SystemExit):  # bools take an explicit value
        run.parse_flags(train.TrainConfig, ["--resume", "maybe"], "")
    with pytest.raises(SystemExit):  # choices are enforced
        run.parse_flags(train.TrainConfig, ["--stage", "audio"], "")
    cfg, synthetic = train.build_config(["--epochs", "2"])  # no data flags: the embedded default, flags on top
    assert synthetic and cfg.model == "nano" and cfg.epochs == 2
    (tmp_path / "a.csv").write_text("")
    cfg, synthetic = train.build_config(["--video-ann", str(tmp_path / "a.csv"), "--image-root", str(tmp_path)])
    assert not synthetic and cfg.model == "base" and cfg.epochs == 150  # the official joint run
    for name in ("video-ann", "video-root", "image-root", "image-list", "tokenizer", "init"):  # inputs must exist
        with pytest.raises(SystemExit, match=rf"^--{name} {tmp_path / 'b.csv'}: no such file or folder$"):
            train.build_config([f"--{name}", str(tmp_path / "b.csv")])
    assert train.build_config(["--init", "none"])[0].init == "none"


def test_help_shows_what_the_no_argument_run_changes(capsys):
    with pytest.raises(SystemExit) as e:
        train.build_config(["--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
    assert "Without --video-ann / --image-root this is the embedded default" in out
    for name, value in train.SYNTHETIC_DEFAULTS.items():
        default = getattr(train.TrainConfig, name)
        if value == default:  # e.g. videos_per_gpu 4: the help shows only what changes
            continue
        shown = " ".join(map(str, value)) if isinstance(value, tuple) else str(value)
        assert f"default: {run._show(default)}; no-data run: {shown}" in out, name
    assert "--lr LR default: 0.0005; no-data run: 0.001" in out
    assert "--weight-decay WEIGHT_DECAY default: 0.05; must be >= 0 " in out  # one value: the no-data run keeps it


# ----------------------------------------------------------------------------------------------------------------------
# the CUDA paths' CPU-runnable versions, through the joint step


def joint_inputs(tiny_tokenizer, tmp_path):
    """A nano BEVT, its optimizer, and one joint micro-batch read by train.py's own datasets."""
    cfg, _ = train.build_config(flags(tiny_tokenizer, tmp_path, drop_path=0.0))
    video_ds, image_ds = train.build_datasets(cfg)
    batch = {**next(iter(data.make_loader(video_ds, 2, True, 0, 0, False))),
             **next(iter(data.make_loader(image_ds, 2, True, 0, 0, False)))}
    vq = tok.load_tokenizer(tiny_tokenizer, "cpu")
    torch.manual_seed(0)
    mcfg = dataclasses.replace(bevt_model.PRESETS["nano"], drop_path_rate=0.0, vocab_size=vq.vocab_size)
    return cfg, vq, bevt_model.BEVT(mcfg), batch


def step_once(cfg, vq, model, batch, dtype, compile_backend=None):
    optimizer = torch.optim.AdamW(engine.param_groups(model, cfg.weight_decay, engine.NO_DECAY_KEYS), lr=1e-3)
    scaler = engine.make_scaler(CPU, dtype)
    if compile_backend:
        # a fresh compiler state: after other tests compiled the same model code at other shapes, dynamo would
        # trace this one with symbolic shapes (automatic dynamic shapes), which takes minutes instead of seconds
        torch.compiler.reset()
    net = torch.compile(model, backend=compile_backend) if compile_backend else model
    result, stats = train.train_step(net, vq, [batch], optimizer, scaler, dataclasses.replace(cfg, dtype=dtype),
                                     CPU, 1e-3, model.cfg.patch_size[0])
    return result, train.summarise({s: v.tolist() for s, v in stats.items()})


def test_bf16_autocast_through_the_joint_step(tiny_tokenizer, tmp_path):
    cfg, vq, model, batch = joint_inputs(tiny_tokenizer, tmp_path)
    reference = dataclasses.replace(bevt_model.PRESETS["nano"], drop_path_rate=0.0, vocab_size=vq.vocab_size)
    fp32_model = bevt_model.BEVT(reference)
    fp32_model.load_state_dict(model.state_dict())
    seen = []
    model.lm_head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    before = model.lm_head.weight.detach().clone()
    (grad_norm, skipped), bf16 = step_once(cfg, vq, model, batch, "bfloat16")
    _, fp32 = step_once(cfg, vq, fp32_model, batch, "float32")
    assert seen == [torch.bfloat16, torch.bfloat16]  # both streams ran under bf16 autocast
    assert math.isfinite(grad_norm) and skipped == 0 and not torch.equal(before, model.lm_head.weight)
    for k in ("loss_mvm", "loss_mim"):  # bf16 keeps ~3 significant digits
        assert bf16[k] == pytest.approx(fp32[k], rel=2e-2) and bf16[k] != fp32[k]


def test_torch_compile_of_the_joint_step(tiny_tokenizer, tmp_path):
    """--compile true captures the whole joint step (both streams, the masked gather, the objective) in graphs and
    differentiates them with AOTAutograd. The CPU test uses the aot_eager backend: the same capture and autograd as
    on the GPU, without inductor's C++ code generation (minutes on 2 cores)."""
    cfg, vq, model, batch = joint_inputs(tiny_tokenizer, tmp_path)
    eager = bevt_model.BEVT(model.cfg)
    eager.load_state_dict(model.state_dict())
    (grad_compiled, _), compiled = step_once(cfg, vq, model, batch, "float32", compile_backend="aot_eager")
    (grad_eager, _), reference = step_once(cfg, vq, eager, batch, "float32")
    assert compiled["loss_mim"] == pytest.approx(reference["loss_mim"], rel=1e-5)
    assert compiled["loss_mvm"] == pytest.approx(reference["loss_mvm"], rel=1e-5)
    assert grad_compiled == pytest.approx(grad_eager, rel=1e-4)  # the same gradients, before clipping
    assert compiled["masked_mim"] == reference["masked_mim"] > 0
