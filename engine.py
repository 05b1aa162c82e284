"""What train.py (BEVT pretraining) and finetune.py share: the torchrun (or srun) set-up, autocast, the official
optimizer groups, the warmup + cosine schedule (BEVT §4.1) and the optimizer step. The run's flags, files (out-dir
lock, checkpoints, log) and stops are run.py's.
official: mmaction/apis/train.py (optimizer, hooks, runner), mmcv DefaultOptimizerConstructor (parameter groups),
mmcv CosineAnnealingLrUpdaterHook (schedule), mmaction/utils/optimizer.py DistOptimizerHook (accumulation, clipping).
"""
import dataclasses
import math
import os
from contextlib import nullcontext

import torch
import torch.distributed as dist

import convert

# ----------------------------------------------------------------------------------------------------------------------
# distributed set-up (torchrun's variables, else srun's) and precision


@dataclasses.dataclass
class Dist:
    ddp: bool
    rank: int
    local_rank: int
    world: int
    device: str

    @property
    def master(self):
        return self.rank == 0

    def log(self, *args):  # only rank 0 prints
        if self.master:
            print(*args, flush=True)


def setup_distributed():
    """torchrun's RANK / LOCAL_RANK / WORLD_SIZE; when absent, srun's SLURM_PROCID / SLURM_LOCALID / SLURM_NTASKS (one
    task per GPU, MASTER_ADDR / MASTER_PORT exported by the job script); else one process."""
    env, cuda = os.environ, torch.cuda.is_available()
    if "RANK" in env:
        rank, local_rank, world = int(env["RANK"]), int(env["LOCAL_RANK"]), int(env["WORLD_SIZE"])
    elif int(env.get("SLURM_NTASKS", 1)) > 1:
        rank, local_rank, world = int(env["SLURM_PROCID"]), int(env["SLURM_LOCALID"]), int(env["SLURM_NTASKS"])
    else:
        return Dist(False, 0, 0, 1, "cuda" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    return Dist(True, rank, local_rank, world, f"cuda:{local_rank}" if cuda else "cpu")


def all_sum(t, env):
    if env.ddp:
        dist.all_reduce(t)
    return t


def same_on_all_ranks(value, env, what):
    """A decision every rank must share (the resume checkpoint, the tokenizer file, the dataset length): if any rank
    differs, every rank stops naming each rank's value (all ranks take part, so none waits on a collective)."""
    if not env.ddp:
        return value
    values = [None] * env.world
    dist.all_gather_object(values, value)
    if any(v != values[0] for v in values):
        raise SystemExit(f"the ranks disagree on {what}: " + "; ".join(f"rank {r}: {v}" for r, v in enumerate(values)))
    return value


def rank_zero_first(make, env, what):
    """make() on rank 0 (it writes something once), then on the other ranks (they find it); every rank's result must
    be the same (`what` names it in the error)."""
    result = make() if env.master else None
    if env.ddp:
        dist.barrier()
    return same_on_all_ranks(result if env.master else make(), env, what)


def resolve_dtype(device, dtype):
    """fp32 on a CPU; bf16 only where the GPU computes it natively (V100 and T4 only emulate it), else fp16."""
    if torch.device(device).type == "cpu":
        return "float32"
    if dtype == "bfloat16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        return "float16"
    return dtype


def autocast_context(device, dtype):
    """bf16 / fp16 autocast on the device's type; fp32: none (nanoGPT train.py:112)."""
    if dtype == "float32":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=getattr(torch, dtype))


def start_run(cfg):
    """DDP, the device's dtype and the per-rank seed. Returns (cfg with the resolved dtype, Dist)."""
    env = setup_distributed()
    cfg = dataclasses.replace(cfg, dtype=resolve_dtype(env.device, cfg.dtype))
    torch.manual_seed(cfg.seed + env.rank)  # drop path differs per rank (MAE main_pretrain.py:116)
    return cfg, env


# ----------------------------------------------------------------------------------------------------------------------
# optimizer groups: the official paramwise_cfg, matched by mmcv DefaultOptimizerConstructor's rule

# The custom keys every official recipe has. official: configs/recognition/swin/
# swin_base_patch244_window877_bevt_in1k_k400.py:103-105, ..._window877_bevt_finetune_k400.py:94-96,
# ..._window1677_bevt_finetune_ssv2.py:96-98
NO_DECAY_KEYS = {"absolute_pos_embed": {"decay_mult": 0.0}, "relative_position_bias_table": {"decay_mult": 0.0},
                 "norm": {"decay_mult": 0.0}}


def paramwise(name, custom_keys):
    """(lr multiplier, weight-decay multiplier) of parameter `name` (ours), as mmcv DefaultOptimizerConstructor
    .add_params: the LONGEST key that is a substring of the official name decides (ties: alphabetical); no key: (1, 1).
    So a relative_position_bias_table (28 chars) beats every block key (<= 27 chars) and the ssv2 'backbone' key, and a
    block, downsample or patch-embed key beats 'norm' (those norms are decayed and layer-decayed)."""
    try:
        official = convert.official_param_name(name)
    except ValueError:  # not a BEVT or VideoClassifier parameter (a small module in the tests): its own name
        official = name
    for key in sorted(sorted(custom_keys), key=len, reverse=True):
        if key in official:
            return custom_keys[key].get("lr_mult", 1.0), custom_keys[key].get("decay_mult", 1.0)
    return 1.0, 1.0


def layer_id(name, depths):
    """Depth position of a parameter for layer-wise lr decay, multiplier decay ** (max_layer_id - id). official:
    configs/recognition/swin/swin_base_patch244_window877_bevt_finetune_k400.py:97-125 writes the table for Swin-B:
    patch_embed 0.9^28, layers.0.blocks.0 0.9^27, ..., backbone.norm 0.9, head 1: every block AND every downsample
    is one step, the final norm shares the last block's id, the head is the top."""
    name = name.removeprefix("encoder.")
    if name.startswith(("patch_embed", "mask_token")):
        return 0
    if name.startswith("layers."):
        stage, rest = int(name.split(".")[1]), name.split(".", 2)[2]
        before = sum(d + 1 for d in depths[:stage])             # earlier stages: their blocks + their downsample
        if rest.startswith("blocks."):
            return 1 + before + int(rest.split(".")[1])
        return 1 + before + depths[stage]                       # downsample of this stage
    if name.startswith("norm."):
        return sum(depths) + len(depths) - 1                    # = id of the last block
    return max_layer_id(depths)                                 # head (and anything after the encoder)


def max_layer_id(depths):
    return sum(depths) + len(depths)


def layer_decay_keys(depths, decay):
    """The official K400 custom keys for any depths: per block, per downsample, patch_embed and the final norm (also
    decay_mult 0, official: ..._window877_bevt_finetune_k400.py:97), each lr_mult decay^(top - id)."""
    top, keys = max_layer_id(depths), {}
    units = ["patch_embed", "norm"] + [f"layers.{i}.downsample" for i in range(len(depths) - 1)]
    units += [f"layers.{i}.blocks.{j}" for i, d in enumerate(depths) for j in range(d)]
    for unit in units:
        keys["backbone." + unit] = {"lr_mult": decay ** (top - layer_id(unit + ".", depths))}
    keys["backbone.norm"]["decay_mult"] = 0.0
    return keys


def recipe_keys(depths, layer_decay=1.0, backbone_lr_scale=1.0):
    """The official paramwise_cfg custom keys of a recipe: no decay for norms and bias tables (NO_DECAY_KEYS, every
    recipe), plus layer-wise lr decay (finetuning K400, layer_decay < 1) or the backbone lr_mult (SSv2, scale != 1)."""
    keys = dict(NO_DECAY_KEYS)
    if layer_decay != 1.0:
        keys.update(layer_decay_keys(depths, layer_decay))
    if backbone_lr_scale != 1.0:
        keys["backbone"] = {"lr_mult": backbone_lr_scale}
    return keys


def param_groups(module, weight_decay, custom_keys):
    """AdamW groups, one per (lr multiplier, weight decay); each remembers its names and its `lr_scale`."""
    groups = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        lr_mult, decay_mult = paramwise(name, custom_keys)
        key = (lr_mult, weight_decay * decay_mult)
        g = groups.setdefault(key, {"params": [], "names": [], "lr_scale": key[0], "weight_decay": key[1]})
        g["params"].append(p)
        g["names"].append(name)
    return list(groups.values())


# ----------------------------------------------------------------------------------------------------------------------
# learning-rate schedule and the optimizer step


def lr_at(step, total_steps, warmup_steps, base_lr, warmup_ratio=0.1, min_lr=0.0, cosine_every=1):
    """Cosine annealing to `min_lr` over `total_steps`, linear warmup from warmup_ratio x the cosine value (BEVT §4.1;
    official: mmcv CosineAnnealingLrUpdaterHook, warmup='linear'); the cosine value changes every `cosine_every` steps
    (finetuning: once per epoch, mmcv by_epoch=True)."""
    progress = min((step - step % cosine_every) / max(total_steps, 1), 1.0)
    lr = min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if step < warmup_steps:
        lr *= 1.0 - (1.0 - warmup_ratio) * (1.0 - step / warmup_steps)
    return lr


def make_scaler(env, dtype):
    """fp16 needs loss scaling (nanoGPT train.py:196); any other dtype gets a disabled scaler."""
    return torch.amp.GradScaler(torch.device(env.device).type, enabled=(dtype == "float16"))


def optimizer_step(optimizer, scaler, finite, clip_grad, env, lr):
    """A non-finite loss on any rank (`finite` False) returns None (fp16: the scaler skips such a step instead), else
    set the lr (x each group's lr_scale), unscale, clip, step. Returns (grad norm, 1 if fp16 skipped the step)."""
    if all_sum((~finite).float(), env).item() > 0 and not scaler.is_enabled():
        optimizer.zero_grad(set_to_none=True)
        return None
    for g in optimizer.param_groups:
        g["lr"] = lr * g["lr_scale"]
    scaler.unscale_(optimizer)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, clip_grad if clip_grad > 0 else float("inf"))
    scale_before = scaler.get_scale()  # 1.0 when the scaler is disabled (not fp16)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return float(grad_norm), int(scaler.get_scale() < scale_before)


def batch_report(per_gpu, official, cfg, env, synthetic=False):
    """Start-up lines: one optimizer step's samples ({"clips": n, "images": m} per GPU per micro-batch) beside the
    official recipe's, what to change when they differ (not for the CPU-sized synthetic run), the workers per rank."""
    ours = {k: n * cfg.accum * env.world for k, n in per_gpu.items()}
    show = lambda d: " + ".join(f"{d[k]:,} {k}" for k in per_gpu)  # noqa: E731
    lines = [f"effective batch: {show(ours)} per optimizer step ({env.world} process(es) x {show(per_gpu)} x accum "
             f"{cfg.accum}); official: {show(official)}"]
    main = next(iter(per_gpu))  # the stream whose batch the official lr belongs to (the video stream if present)
    if ours[main] != official[main] and not synthetic:
        need = official[main] / (per_gpu[main] * env.world)
        accum = f"--accum {int(need)}" if need == int(need) else "more --accum / GPUs"
        lines.append(f"  differs from the official batch: for the official recipe use {accum}, or keep the batch and "
                     f"scale the lr linearly: --lr {cfg.lr * ours[main] / official[main]:.3g}")
    lines.append(f"data workers per rank: {cfg.num_workers}")
    return lines


