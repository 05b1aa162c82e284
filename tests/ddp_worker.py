"""Run under torchrun by the tests: a script (train.py or finetune.py) as `__main__`, with every rank recording what
the tests compare across ranks. Usage: ddp_worker.py SCRIPT OUT_DIR [script flags]

- after each optimizer step, the rank's flat parameters -> OUT_DIR/params_rank{r}_step{n}.pt
- at each checkpoint, the rank's EMA weights (finetune.py --ema true) -> OUT_DIR/ema_rank{r}_step{n}.pt
- HIDE_CHECKPOINTS_ON_RANK=r: rank r sees no checkpoint in out_dir (as on a node whose disk is not shared)
"""
import os
import runpy
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import engine  # noqa: E402
import run  # noqa: E402

script, out_dir, argv = ROOT / sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
rank = os.environ["RANK"]
optimizer_step, save_checkpoint, latest_checkpoint, steps = (engine.optimizer_step, run.save_checkpoint,
                                                             run.latest_checkpoint, [])


def recording_step(optimizer, *args, **kwargs):
    result = optimizer_step(optimizer, *args, **kwargs)
    steps.append(1)
    flat = torch.cat([p.detach().flatten() for g in optimizer.param_groups for p in g["params"]])  # (num_params,)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(flat, out_dir / f"params_rank{rank}_step{len(steps)}.pt")
    return result


def recording_save(state, env, ckpt_dir, step, keep_last):
    if state.get("ema") is not None:
        torch.save(state["ema"], out_dir / f"ema_rank{rank}_step{step}.pt")
    return save_checkpoint(state, env, ckpt_dir, step, keep_last)


def hiding_latest(folder, env=None):
    return None if os.environ.get("HIDE_CHECKPOINTS_ON_RANK") == rank else latest_checkpoint(folder, env)


engine.optimizer_step, run.save_checkpoint = recording_step, recording_save
run.latest_checkpoint = hiding_latest
sys.argv = [str(script)] + argv
runpy.run_path(str(script), run_name="__main__")
