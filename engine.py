"""The training machinery that train.py (BEVT pretraining) and finetune.py share.

torchrun set-up, autocast and the run's dtype, the official optimizer groups (mmcv paramwise_cfg with its longest-key
rule, layer-wise lr decay), the warmup + cosine schedule (BEVT §4.1), the optimizer step (clip, fp16 loss scaling),
checkpoints with exact resume, one pretraining step (BEVT Eq. 5), the step loop with its data-wait clock, the log
window, and the small VQ tokenizer's training.
official: mmaction/apis/train.py (optimizer, hooks, runner), mmcv DefaultOptimizerConstructor (parameter groups),
mmcv CosineAnnealingLrUpdaterHook (schedule), mmaction/utils/optimizer.py DistOptimizerHook (accumulation, clipping).
"""
import dataclasses
import json
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist

import annotations
import convert
import data
import model as bevt_model
import synthetic as synthetic_set
import tokenizer as tok

# ----------------------------------------------------------------------------------------------------------------------
# distributed set-up (torchrun environment variables only) and precision


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
            print(*args)


def setup_distributed():
    cuda = torch.cuda.is_available()
    if int(os.environ.get("RANK", -1)) == -1:
        return Dist(False, 0, 0, 1, "cuda" if cuda else "cpu")
    rank, local_rank, world = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(True, rank, local_rank, world, f"cuda:{local_rank}" if cuda else "cpu")


def all_sum(t, env):
    if env.ddp:
        dist.all_reduce(t)
    return t


def same_on_all_ranks(value, env, what):
    """A decision every rank must share (the resume checkpoint, the tokenizer file, the dataset length): gathered
    from all ranks; if any differs, every rank stops with each rank's value. All ranks take part, so a disagreement
    is an error at once, never a rank that waits for a collective the others never reach."""
    if not env.ddp:
        return value
    values = [None] * env.world
    dist.all_gather_object(values, value)
    if any(v != values[0] for v in values):
        raise SystemExit(f"the ranks disagree on {what}: " + "; ".join(f"rank {r}: {v}" for r, v in enumerate(values)))
    return value


def resolve_dtype(device, dtype):
    """The run's dtype on this device: fp32 on a CPU; bf16 only where the GPU computes it natively (V100 and T4 only
    emulate it, which `is_bf16_supported()` counts as support unless told not to), else fp16 with loss scaling."""
    if torch.device(device).type == "cpu":
        return "float32"
    if dtype == "bfloat16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        return "float16"
    return dtype


def autocast_context(device, dtype):
    """bf16 / fp16 autocast on the device's type; fp32: none (nanoGPT train.py:112). A CPU runs bf16 or fp16 only
    when asked for explicitly (the tests): resolve_dtype keeps CPU runs in fp32."""
    if dtype == "float32":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=getattr(torch, dtype))


def start_run(cfg, synthetic, data_flags):
    """The start of both scripts: DDP, the device's dtype, per-rank seed, out_dir and, for the embedded default, the
    synthetic set (generated once, by rank 0, before the other ranks read it)."""
    env = setup_distributed()
    cfg = dataclasses.replace(cfg, dtype=resolve_dtype(env.device, cfg.dtype))
    torch.manual_seed(cfg.seed + env.rank)  # drop path differs per rank (MAE main_pretrain.py:116)
    if env.master:
        Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
        if synthetic:
            print(f"no {data_flags} given: the embedded default (synthetic data, nano model, CPU-sized; see --help)")
            synthetic_set.synthetic_root()
    if env.ddp:
        dist.barrier()
    if synthetic:
        same_on_all_ranks(str(synthetic_set.synthetic_root()), env, "the synthetic data set's folder")
    return cfg, env


# ----------------------------------------------------------------------------------------------------------------------
# optimizer groups: the official paramwise_cfg, matched by mmcv DefaultOptimizerConstructor's rule

# The custom keys every official recipe has. official: configs/recognition/swin/
# swin_base_patch244_window877_bevt_in1k_k400.py:103-105, ..._window877_bevt_finetune_k400.py:94-96,
# ..._window1677_bevt_finetune_ssv2.py:96-98
NO_DECAY_KEYS = {"absolute_pos_embed": {"decay_mult": 0.0}, "relative_position_bias_table": {"decay_mult": 0.0},
                 "norm": {"decay_mult": 0.0}}


def official_name(name):
    """Our parameter name -> the official model's, which the custom keys are matched against: encoder and decoders
    are `backbone.*`, the pretraining classifier `cls_head.lm_head.*` and the finetune head `cls_head.fc_cls.*`
    (official: mmaction/models/heads/i3d_head.py:41). (The decoders' nn.Sequential index, backbone.fpn.0.weight,
    is left out: no key matches on it.)"""
    if name.startswith("head."):
        return "cls_head.fc_cls." + name.removeprefix("head.")
    if name.startswith("lm_head."):
        return "cls_head." + name
    return "backbone." + name.removeprefix("encoder.")


def paramwise(name, custom_keys):
    """(lr multiplier, weight-decay multiplier) of parameter `name` (ours), as mmcv DefaultOptimizerConstructor
    .add_params: the LONGEST key that is a substring of the official name decides (ties: alphabetical order); no key:
    (1, 1). With the official cfgs' defaults (no bias_decay_mult / norm_decay_mult) nothing else changes a group, so a
    bias or norm that no key matches is decayed. Consequences in the official runs: a relative_position_bias_table
    (28 chars) beats every block key (<= 27 chars) and the ssv2 'backbone' key, so bias tables keep lr x 1; a block,
    downsample or patch-embed key beats 'norm', so those norms are decayed and layer-decayed."""
    official = official_name(name)
    for key in sorted(sorted(custom_keys), key=len, reverse=True):
        if key in official:
            return custom_keys[key].get("lr_mult", 1.0), custom_keys[key].get("decay_mult", 1.0)
    return 1.0, 1.0


def layer_id(name, depths):
    """Depth position of a parameter for layer-wise lr decay; multiplier = decay ** (max_layer_id(depths) - id).
    official: configs/recognition/swin/swin_base_patch244_window877_bevt_finetune_k400.py:97-125 writes the table out
    for Swin-B: patch_embed 0.9^28, layers.0.blocks.0 0.9^27, ..., layers.3.blocks.1 0.9, backbone.norm 0.9, head 1:
    every block AND every downsample is one step (24 + 3 = 27), the final norm shares the last block's id, the head is
    the top. This numbering gives that table for any depths. Names are ours ("encoder.*", "head.*")."""
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
    """The official K400 custom keys for any depths: one key per block, per downsample, patch_embed and the final
    norm (also decay_mult 0, official: ..._window877_bevt_finetune_k400.py:97), each with lr_mult decay^(top - id)."""
    top, keys = max_layer_id(depths), {}
    units = ["patch_embed", "norm"] + [f"layers.{i}.downsample" for i in range(len(depths) - 1)]
    units += [f"layers.{i}.blocks.{j}" for i, d in enumerate(depths) for j in range(d)]
    for unit in units:
        keys["backbone." + unit] = {"lr_mult": decay ** (top - layer_id(unit + ".", depths))}
    keys["backbone.norm"]["decay_mult"] = 0.0
    return keys


def param_groups(module, weight_decay, custom_keys):
    """AdamW groups, one per (lr multiplier, weight decay) given by `paramwise`; each group remembers its parameter
    names (tests, logs) and its `lr_scale`, which optimizer_step multiplies into the scheduled lr."""
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
    """Cosine annealing to `min_lr` over `total_steps`, with a linear warmup that starts at warmup_ratio x the cosine
    value (BEVT §4.1; official: mmcv CosineAnnealingLrUpdaterHook, warmup='linear', warmup_ratio=0.1). The cosine
    value changes every `cosine_every` steps (finetuning: once per epoch, mmcv by_epoch=True)."""
    progress = min((step - step % cosine_every) / max(total_steps, 1), 1.0)
    lr = min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if step < warmup_steps:
        lr *= 1.0 - (1.0 - warmup_ratio) * (1.0 - step / warmup_steps)
    return lr


def make_scaler(env, dtype):
    """fp16 needs loss scaling (nanoGPT train.py:196); any other dtype gets a disabled scaler."""
    return torch.amp.GradScaler(torch.device(env.device).type, enabled=(dtype == "float16"))


def optimizer_step(optimizer, scaler, finite, clip_grad, env, lr):
    """The end of every step: a non-finite loss on any rank (`finite` False) stops the run (returns None; fp16: the
    GradScaler skips such a step instead, and it is counted), else set the lr (x each group's lr_scale), unscale,
    clip, step. Returns (grad norm, 1 if the fp16 scaler skipped the step else 0)."""
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


MAX_OVERFLOWS = 20  # fp16 steps skipped in a row that stop the run: from 65536 the scale is then below 0.1


class Progress:
    """The step loop's bookkeeping: the step, fp16 skipped steps (MAX_OVERFLOWS in a row stop the run), the log
    window (per-step stats summed since the last log line, so a line shows means over its window) and the speed."""

    def __init__(self, step, stats_shape, env, skipped=0):
        self.step, self.skipped, self.in_a_row, self.grad_norm = step, skipped, 0, float("nan")
        self.window = torch.zeros(stats_shape, dtype=torch.float64, device=env.device)
        self.env, self.first_step, self.t0 = env, step, time.time()
        # the data-wait clock: seconds spent in next_batch since the window opened at data_t0
        self.data_wait_s, self.data_t0 = 0.0, time.perf_counter()

    def next_batch(self, batches):
        """next(batches), the seconds it waits counted as data wait. Between two steps the device is idle (each
        optimizer step ends with a host sync), so this is the time the GPU waits for the loader."""
        start = time.perf_counter()
        batch = next(batches)
        self.data_wait_s += time.perf_counter() - start
        return batch

    def take_data_share(self):
        """The share of the wall time since the last call (or the start) spent waiting for batches, the largest over
        the ranks (every rank waits for the slowest one at the gradient all-reduce); then a new window."""
        now = time.perf_counter()
        share = torch.tensor(self.data_wait_s / max(now - self.data_t0, 1e-9), dtype=torch.float64,
                             device=self.env.device)
        if self.env.ddp:
            dist.all_reduce(share, op=dist.ReduceOp.MAX)
        self.data_wait_s, self.data_t0 = 0.0, now
        return float(share)

    def record(self, result, stats):
        """After a step whose optimizer_step returned `result` = (grad norm, skipped) and whose stats are `stats`."""
        self.grad_norm, skipped = result
        self.step, self.skipped, self.window = self.step + 1, self.skipped + skipped, self.window + stats
        self.in_a_row = self.in_a_row + 1 if skipped else 0
        if self.in_a_row >= MAX_OVERFLOWS:
            raise SystemExit(f"fp16: {self.in_a_row} steps in a row overflowed up to step {self.step} (loss scale "
                             f"too small to recover); try --dtype bfloat16 or float32, or a lower --lr")

    def take_window(self):
        """The window's sums over all ranks (a list), then an empty window."""
        sums = all_sum(self.window.clone(), self.env).tolist()
        self.window.zero_()
        return sums

    def steps_per_s(self):
        return (self.step - self.first_step) / max(time.time() - self.t0, 1e-9)


# ----------------------------------------------------------------------------------------------------------------------
# checkpoints: plain dicts, written atomically by rank 0, read with weights_only=True


def save_checkpoint(state, env, out_dir, step, keep_last):
    """A collective: every rank's torch RNG state (drop path) is gathered into `state`. Rank 0 writes
    out_dir/ckpt_{step}.pt and keeps the newest `keep_last`. Returns the path."""
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    rngs = [rng]
    if env.ddp:
        rngs = [None] * env.world
        dist.all_gather_object(rngs, rng)
    state = {**state, "rng": rngs}
    path = Path(out_dir) / f"ckpt_{step:08d}.pt"
    if env.master:
        tmp = path.with_suffix(".pt.tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)  # atomic: a crash mid-write never leaves a truncated checkpoint under the real name
        for old in sorted(Path(out_dir).glob("ckpt_*.pt"))[:-keep_last]:
            old.unlink()
        print(f"saved {path}")
    return path


def latest_checkpoint(out_dir):
    return max(Path(out_dir).glob("ckpt_*.pt"), default=None)


def resume_checkpoint(out_dir, env):
    """The newest checkpoint in out_dir (or None), checked to be the same file on every rank: ranks that see
    different folders (a disk not shared between nodes) stop with what each sees, instead of some ranks resuming
    and the others starting afresh."""
    path = latest_checkpoint(out_dir)
    same_on_all_ranks(None if path is None else str(path), env, f"the newest checkpoint in {out_dir}")
    return path


def load_checkpoint(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SystemExit(f"cannot load checkpoint {path}: {e}") from e


def init_classifier(state, classifier, path):
    """convert.classifier_state of the checkpoint loaded from `path` (ours of any stage, with its EMA; the official
    release; torchvision swin3d_*): (the classifier's full state dict, the dropped keys, the format). A key that does
    not fit stops the run naming the file, its format and the keys."""
    try:
        return convert.classifier_state(state, classifier)
    except ValueError as e:
        raise SystemExit(f"cannot initialise from {path} ({convert.checkpoint_kind(state)} checkpoint): {e}") from e


def load_model_state(module, state, path):
    """strict load; a wrong key set fails naming the file and the keys."""
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SystemExit(f"checkpoint {path} does not match the model:\n  missing keys: {missing}\n"
                         f"  unexpected keys: {unexpected}")


def resume_from(path, raw_model, optimizer, scaler, cfg, env, ignore=()):
    """Exact resume: the model, and when training (optimizer given) the optimizer, the scaler and every rank's RNG
    state, from the checkpoint at `path`. Flags that differ from the saved config (except `ignore`) are logged.
    Returns the checkpoint's other entries (step, EMA, data positions); the weights are not kept twice."""
    ckpt = load_checkpoint(path)
    load_model_state(raw_model, ckpt.pop("model"), path)
    changed = {k: (v, getattr(cfg, k)) for k, v in ckpt["config"].items()
               if k not in ("init", "resume", "max_steps", *ignore) and hasattr(cfg, k)
               and (tuple(v) if isinstance(v, list) else v) != getattr(cfg, k)}
    if changed:
        env.log(f"note: flags differ from the checkpoint's (saved, now): {changed}")
    optimizer_state = ckpt.pop("optimizer")
    if optimizer is not None:
        try:
            optimizer.load_state_dict(optimizer_state)
        except ValueError as e:
            raise SystemExit(f"cannot resume from {path}: {e} (the optimizer groups follow the lr/decay flags; "
                             f"differing flags: {changed})") from e
        scaler.load_state_dict(ckpt["scaler"])
        restore_rng(ckpt["rng"], env)
        forget_logged_steps_after(ckpt["step"], Path(path).parent, env)
    env.log(f"{'evaluating' if optimizer is None else 'resumed from'} {path} (step {ckpt['step']})")
    return ckpt


def forget_logged_steps_after(step, out_dir, env):
    """Rank 0: drops the rows of log.jsonl after `step`. A resumed run trains those steps again (bitwise the same),
    and logs them again: without this a run interrupted after its last checkpoint would log some steps twice."""
    log = Path(out_dir) / "log.jsonl"
    if env.master and log.exists():
        rows = [line for line in log.read_text().splitlines(keepends=True) if line.strip()]
        kept = [line for line in rows if json.loads(line)["step"] <= step]
        if len(kept) < len(rows):
            tmp = log.with_suffix(".tmp")
            tmp.write_text("".join(kept))
            os.replace(tmp, log)  # atomic: the log is never left half-written


@torch.no_grad()
def ema_update(ema, model, momentum, accum):
    """ema <- (1 - m) ema + m param, once per optimizer step. mmcv EMAHook runs after every forward iteration with
    m = min(2e-4, (1 + it) / (warm_up + it)) = 2e-4 (warm_up=100 never binds), after the optimizer hook of the same
    iteration; with update_interval=accum the parameters stay fixed for the accum iterations that follow a step, so one
    update per optimizer step with m' = 1 - (1 - m)^accum gives exactly the official EMA."""
    m = 1.0 - (1.0 - momentum) ** accum
    for name, p in model.named_parameters():
        ema[name].mul_(1.0 - m).add_(p.detach(), alpha=m)


def restore_rng(states, env):
    if len(states) != env.world:
        env.log(f"note: checkpoint has RNG states for {len(states)} ranks, this run has {env.world}; reseeding")
        return
    torch.set_rng_state(states[env.rank]["cpu"])
    if torch.cuda.is_available() and "cuda" in states[env.rank]:
        torch.cuda.set_rng_state(states[env.rank]["cuda"])


# ----------------------------------------------------------------------------------------------------------------------
# one pretraining step (train.py; bench.py times this same function)


def pretrain_step(model, tokenizer, micro_batches, optimizer, scaler, cfg, env, lr, patch_t):
    """Forward/backward over `accum` micro-batches, then one optimizer step. `cfg` gives dtype, lam and clip_grad
    (train.TrainConfig); patch_t is the model's temporal patch size. Returns (optimizer_step's result, stats
    (streams, 3): per stream the summed cross-entropy, correct predictions and masked positions).
    Each stream's cross-entropy is averaged over its masked positions in the WHOLE step (every micro-batch on every
    rank, counted before the first backward), so the update does not depend on how the batch is split across GPUs or
    accumulation steps (model.objective, BEVT Eq. 5)."""
    streams = [s for s in ("video", "image") if s in micro_batches[0]]
    masks = [{s: b[s + "_mask"].to(env.device, non_blocking=True) for s in streams} for b in micro_batches]
    per_micro = [bevt_model.target_counts(m.get("video"), m.get("image"), patch_t) for m in masks]
    keys = list(per_micro[0])  # the model's stream names: "mvm" (video), "mim" (image)
    totals = all_sum(torch.stack([sum(c[k] for c in per_micro) for k in keys]), env)  # (streams,)
    counts = dict(zip(keys, totals))
    stats = torch.zeros(len(keys), 3, dtype=torch.float64, device=env.device)
    finite = torch.ones((), dtype=torch.bool, device=env.device)
    for i, (batch, mask) in enumerate(zip(micro_batches, masks)):
        inputs = {}
        for s in streams:
            inputs[s] = data.normalize_batch(batch[s].to(env.device, non_blocking=True))  # uint8 -> float, on device
            # BEVT §3 "Tokenizer": targets from the frozen tokenizer, no_grad and outside autocast inside encode
            inputs[s + "_ids"] = tokenizer.encode(batch[s + "_tok"].to(env.device, non_blocking=True))
            inputs[s + "_mask"] = mask[s]
        # DDP all-reduces the gradients on the last micro-batch only
        with model.no_sync() if env.ddp and i < len(micro_batches) - 1 else nullcontext():
            with autocast_context(env.device, cfg.dtype):
                out = model(**inputs)
            loss = bevt_model.objective({k: out[k][0] for k in keys}, counts, cfg.lam, env.world)
            stats += torch.stack([torch.stack(out[k]) for k in keys]).detach().double()  # (streams, 3)
            finite &= torch.isfinite(loss.detach())
            scaler.scale(loss).backward()
    return optimizer_step(optimizer, scaler, finite, cfg.clip_grad, env, lr), stats


def summarise(sums, keys):
    """(streams, 3) sums -> {"loss_mvm": mean CE, "acc_mvm": accuracy, "masked_mvm": positions, ...}."""
    out = {}
    for k, (total, correct, n) in zip(keys, sums):
        out["loss_" + k], out["acc_" + k], out["masked_" + k] = total / max(n, 1), correct / max(n, 1), int(n)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# data, step counts and the step loop


def read_dataset(annotation, root, flags):
    """annotations.read_annotations with its errors (missing file or root, malformed line, empty set) as a clean exit
    that names the flags."""
    try:
        return annotations.read_annotations(annotation, root)
    except (OSError, ValueError) as e:
        raise SystemExit(f"{flags}: {e}") from None


def step_counts(dataset, batch_size, cfg, env):
    """(optimizer steps per epoch, steps of the whole schedule, the step this run stops at: --max-steps). The
    dataset length must be the same on every rank (each rank reads the annotation file itself)."""
    same_on_all_ranks(len(dataset), env, "the number of training samples")
    steps_per_epoch = len(dataset) // env.world // batch_size // cfg.accum
    if steps_per_epoch == 0:
        raise SystemExit(f"dataset of {len(dataset)} samples is smaller than one step "
                         f"({env.world} GPUs x {batch_size} x accum {cfg.accum})")
    total_steps = cfg.epochs * steps_per_epoch
    return steps_per_epoch, total_steps, min(total_steps, cfg.max_steps) if cfg.max_steps > 0 else total_steps


def step_batches(dataset, batch_size, cfg, env, step, steps_per_epoch, stop_at, progress):
    """Yields the `accum` micro-batches of each optimizer step from `step` to `stop_at`; a resumed run starts its
    epoch's loader after the batches already used. The time spent waiting for the batches, the loader's start
    included, is counted in `progress`'s data-wait clock (the log's data share)."""
    while step < stop_at:
        epoch, in_epoch = divmod(step, steps_per_epoch)
        it = iter(data.make_loader(dataset, batch_size, True, cfg.num_workers, cfg.seed, env.ddp, epoch,
                                   in_epoch * cfg.accum))
        end = min(stop_at, (epoch + 1) * steps_per_epoch)
        for _ in range(step, end):
            yield [progress.next_batch(it) for _ in range(cfg.accum)]
        step = end


def batch_report(per_gpu, official, cfg, env, synthetic=False):
    """Start-up lines: the samples of one optimizer step ({"clips": n, "images": m} per GPU per micro-batch) beside
    the official recipe's step, what to change when they differ (not for the CPU-sized synthetic run), and the data
    workers per rank."""
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


def append_log(row, line, env, out_dir):
    """Rank 0 only: prints `line` and appends `row` to out_dir/log.jsonl."""
    if env.master:
        print(line)
        with open(Path(out_dir) / "log.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")


# ----------------------------------------------------------------------------------------------------------------------
# the small VQ tokenizer (the synthetic default's targets; `train.py --stage tokenizer` for other data)


# The version of what ensure_small_vq produces, part of the synthetic run's cached tokenizer name: bump it when
# data.load_frames / data.tokenizer_view (the frames it trains on), tokenizer.VQConfig or tokenizer.VQTokenizer change,
# so a VQ trained by older code is not reused silently. 2: OpenCV Lanczos tokenizer views of uint8 crops.
SMALL_VQ_VERSION = 2


def ensure_small_vq(data_root, size, path, env):
    """Unless `path` exists, rank 0 trains tokenizer.VQConfig(size=size) on frames of `data_root` and saves it there;
    every rank waits. Deterministic: seeded frames (data.load_frames) and a seeded training."""
    if env.master and not Path(path).exists():
        cfg = tok.VQConfig(size=size)
        frames = data.load_frames(data_root, cfg.num_frames, cfg.size, cfg.seed)  # (N, 3, size, size) uint8
        tok.save_tokenizer(tok.train_vq_tokenizer(frames, cfg), path)
    if env.ddp:
        dist.barrier()
