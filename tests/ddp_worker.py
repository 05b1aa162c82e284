"""Run by tests/test_train.py under torchrun: train.main() with every rank saving its flat parameters after each
optimizer step, so the test can check that DDP keeps the ranks identical. Usage: ddp_worker.py OUT_DIR [train flags]"""
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train  # noqa: E402

out_dir, argv = Path(sys.argv[1]), sys.argv[2:]
step_fn, steps = train.train_step, []


def recording_step(model, *args, **kwargs):
    result = step_fn(model, *args, **kwargs)
    steps.append(1)
    flat = torch.cat([p.detach().flatten() for p in model.module.parameters()])  # (num_params,)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(flat, out_dir / f"params_rank{os.environ['RANK']}_step{len(steps)}.pt")
    return result


train.train_step = recording_step
train.main(argv)
