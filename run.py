"""A run as its user meets it: the flags it is given, the out-dir it owns, and the signals that stop it.

- Flags: every script's command line is generated from its config dataclass (parse_flags); a field's metadata holds
  its range (`ranged`), checked as the flags are parsed, so a wrong value stops before any work naming the flag.
- The out-dir: a lock that makes the run the only one there (released by the operating system when the process
  dies), log.jsonl, and checkpoints: plain dicts written atomically by rank 0, read with weights_only=True, named
  ckpt_<8-digit step>.pt and ordered by that step; exact resume (model, optimizer, scaler, every rank's RNG state).
- Stops: SIGTERM / SIGUSR1 (a preemption) and SIGINT (Ctrl-C) end the step loop at the next step boundary with a
  checkpoint, on every rank at the same step (Progress), and exit with a code a scheduler can act on.
"""
import argparse
import dataclasses
import fcntl
import json
import math
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

from convert import holds, load_checkpoint, load_model_state
from engine import all_sum, same_on_all_ranks

# ----------------------------------------------------------------------------------------------------------------------
# flags: a config dataclass -> the command line. Each field `name` becomes `--name` (underscores written as dashes):
# its type comes from the default, a tuple default takes that many values (`--rescale 256 320`), a bool takes an
# explicit value (`--compile true`, never a bare switch). A field's metadata may hold "choices", "min" / "max"
# (inclusive) and "above" (an exclusive lower bound), checked element by element for a tuple. Only the flags given on
# the command line are returned, so a script can lay them over its defaults, a preset or its embedded synthetic
# default; `variants` ({label: {field: value}}) shows those layers in --help beside each default. The scripts'
# cross-field rules sit beside their config dataclass.


def _bool(text):
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _show(value):
    return " ".join(str(v) for v in value) if isinstance(value, tuple) else repr(value) if value == "" else str(value)


def flag(name):
    return "--" + name.replace("_", "-")


def help_text(f, default, variants):
    """`default: D`, `label: V` for each variant that changes the field (labels with equal values joined), range."""
    changed = {}
    for label, overrides in variants.items():
        if f.name in overrides and overrides[f.name] != default:
            changed.setdefault(_show(overrides[f.name]), []).append(label)
    bounds = [f"must be {allowed(f)}"] if {"above", "min", "max"} & set(f.metadata) else []
    return "; ".join([f"default: {_show(default)}"] + [f"{'/'.join(ls)}: {v}" for v, ls in changed.items()] + bounds)


def allowed(f):
    """The range in a field's metadata, in words: "> 0 and <= 1"."""
    lo, hi, above = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("above")
    return " and ".join([f"> {above}"] * (above is not None) + [f">= {lo}"] * (lo is not None)
                        + [f"<= {hi}"] * (hi is not None)) or "a finite number"


def parse_flags(cls, argv, description, positional=(), variants=None):
    """-> {field name: value} for the flags in `argv` only (a script lays them over its defaults and presets);
    `positional` names positional arguments. Bools take a value (`--compile true`); a tuple default takes that many
    values (`--rescale 256 320`); `variants` ({label: {field: value}}) are shown in --help beside the default."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kw = dict(help=help_text(f, default, variants or {}))
        if isinstance(default, bool):
            kw.update(type=_bool, metavar="{true,false}")
        elif isinstance(default, tuple):
            kw.update(type=type(default[0]), nargs=len(default))
        else:
            kw.update(type=type(default), choices=f.metadata.get("choices"))
        if f.name in positional:
            p.add_argument(f.name, **kw)
        else:
            p.add_argument(flag(f.name), default=argparse.SUPPRESS, **kw)
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(p.parse_args(argv)).items()}
    for f in dataclasses.fields(cls):
        if f.name in given:
            check_range(f, given[f.name])
            if f.metadata.get("input") and given[f.name] not in ("", "none") and not os.path.exists(given[f.name]):
                raise SystemExit(f"{flag(f.name)} {given[f.name]}: no such file or folder")
    return given


def ranged(default, **bounds):
    """A config field with a range: `clip_len: int = ranged(16, min=1)`; bounds "min", "max" (inclusive), "above"."""
    return dataclasses.field(default=default, metadata=bounds)


def input_path(default=""):
    """A config field naming a file or folder the run reads (`video_ann: str = input_path()`): a value given as a flag
    must exist ("none" and "" pass), checked as the flags are parsed, before any work."""
    return dataclasses.field(default=default, metadata={"input": True})


def check_range(f, value):
    """A value of field `f` against the range in its metadata; a violation stops naming the flag, value and range."""
    for v in value if isinstance(value, tuple) else (value,):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        lo, hi, above = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("above")
        if not math.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi) or \
                (above is not None and v <= above):
            raise SystemExit(f"{flag(f.name)} {_show(value)}: must be {allowed(f)}")


def check_ranges(cfg):
    """Every field of a finished config (defaults and presets included) against its range."""
    for f in dataclasses.fields(cfg):
        check_range(f, getattr(cfg, f.name))
    return cfg


def as_flags(values: dict) -> list:
    """The inverse of parse_flags, for running a script: {"clip_len": 8, "rescale": (146, 183), "flip": False} ->
    ["--clip-len", "8", "--rescale", "146", "183", "--flip", "false"]."""
    out = []
    for name, value in values.items():
        out.append(flag(name))
        out += [str(v) for v in value] if isinstance(value, tuple) else \
            [str(value).lower() if isinstance(value, bool) else str(value)]
    return out


# ----------------------------------------------------------------------------------------------------------------------
# the out-dir: its lock and its log

_LOCK = None  # (path, open file) of this process's run lock; the operating system releases it when the process dies


def claim_out_dir(out_dir, env, resume=True):
    """Before any data or model is built: rank 0 locks out_dir for the life of the process (lock_out_dir); a new run
    (resume False) in an out-dir that holds an earlier run stops. Every rank waits for rank 0."""
    if env.master:
        lock_out_dir(out_dir)
        if not resume:
            refuse_to_overwrite(out_dir)
    if env.ddp:
        dist.barrier()


def lock_out_dir(out_dir):
    """out_dir/run.lock, held with flock for the life of the process: a second run on the same out-dir stops at once
    naming the running one. Partial checkpoint files that a killed writer left are removed (no writer is alive)."""
    global _LOCK
    path = Path(out_dir) / "run.lock"
    if _LOCK is not None:  # a run earlier in this process (the tests run several): its out-dir is free again
        if _LOCK[0] == path.resolve():
            return
        os.close(_LOCK[1])
        _LOCK = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise SystemExit(f"--out-dir {out_dir}: cannot create or write it ({e.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
        raise SystemExit(f"--out-dir {out_dir} is in use by a running run ({holder}); wait for it to end or choose "
                         f"another --out-dir") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                 f"{' '.join(sys.argv)}".encode())
    _LOCK = path.resolve(), fd
    for stale in Path(out_dir).glob(".ckpt_*.tmp"):
        stale.unlink()


def append_log(row, line, env, out_dir):
    """Rank 0 only: prints `line` and appends `row` to out_dir/log.jsonl."""
    if env.master:
        print(line, flush=True)
        with open(Path(out_dir) / "log.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")


# ----------------------------------------------------------------------------------------------------------------------
# checkpoints: plain dicts, written atomically by rank 0, read with weights_only=True; a run's own files are
# ckpt_<8-digit step>.pt, ordered by that step

CHECKPOINT = re.compile(r"ckpt_(\d{8})\.pt")


def run_checkpoints(out_dir, env=None):
    """[(step, path)] of the checkpoints the run wrote, by step; other ckpt* files are named in a warning (with env)."""
    found, others = [], []
    for p in sorted(Path(out_dir).glob("ckpt*")):
        match = CHECKPOINT.fullmatch(p.name)
        (found if match else others).append((int(match[1]), p) if match else p.name)
    if others and env is not None:
        env.log(f"note: {out_dir} also holds {', '.join(others)}: not this run's checkpoints, left alone")
    return sorted(found)


def latest_checkpoint(out_dir, env=None):
    found = run_checkpoints(out_dir, env)
    return found[-1][1] if found else None


def save_checkpoint(state, env, out_dir, step, keep_last):
    """A collective: every rank's RNG state (drop path) is gathered into `state`. Rank 0 writes it to a temporary file
    of its own, renames it to ckpt_<step>.pt, then keeps the newest `keep_last` of the run's. Returns the path."""
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
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=out_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(state, f)
            os.replace(tmp, path)  # atomic: a crash mid-write never leaves a truncated file under the real name
        except BaseException as e:  # the partial file never stays behind: a full disk, or an exit mid-save
            os.unlink(tmp)
            if not isinstance(e, (OSError, RuntimeError)):
                raise
            need = sum(t.numel() * t.element_size() for t in _tensors(state))
            raise SystemExit(f"cannot write checkpoint {path} ({e}): it needs about {need / 2**20:,.0f} MiB, "
                             f"{shutil.disk_usage(out_dir).free / 2**20:,.0f} MiB are free there; the newest complete "
                             f"checkpoint is {latest_checkpoint(out_dir)}") from None
        for _, old in run_checkpoints(out_dir)[:-keep_last]:
            old.unlink()
        print(f"saved {path}", flush=True)
    return path


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def resume_checkpoint(out_dir, env, training=True):
    """The run's newest checkpoint in out_dir (or None), the same file on every rank (a disk not shared between nodes
    stops the run naming what each rank sees, instead of some ranks resuming and the others starting afresh). A run
    that will train from step 0 (no checkpoint) first forgets the rows an earlier, killed attempt logged."""
    path = latest_checkpoint(out_dir, env)
    same_on_all_ranks(None if path is None else str(path), env, f"the newest checkpoint in {out_dir}")
    if path is None and training:  # killed before its first checkpoint: it trains from step 0, so logs its rows again
        dropped = forget_logged_steps_after(0, out_dir, env)
        if dropped:
            env.log(f"note: no checkpoint to resume from: training starts at step 0 and the {dropped} rows an earlier "
                    f"attempt wrote to {Path(out_dir) / 'log.jsonl'} are dropped")
    return path


def refuse_to_overwrite(out_dir):
    """A new run (no --resume) in an out-dir that holds another run's checkpoints or log stops before any work."""
    held = [p.name for _, p in run_checkpoints(out_dir)] + ["log.jsonl"] * (Path(out_dir) / "log.jsonl").exists()
    if held:
        raise SystemExit(f"--out-dir {out_dir} holds an earlier run ({', '.join(held[-3:])}): continue it with "
                         f"--resume true, or choose another --out-dir")


def resume_from(path, raw_model, optimizer, scaler, cfg, env, ignore=()):
    """Exact resume: the model, and when training (optimizer given) the optimizer, the scaler and every rank's RNG
    state. A checkpoint of another model or stage stops the run; other differing flags are logged. Returns the
    checkpoint's other entries (step, EMA, data positions)."""
    ckpt = load_checkpoint(path)
    saved = ckpt["config"]
    asks = " ".join(f"--{k} {getattr(cfg, k)}" for k in ("model", "stage") if hasattr(cfg, k))
    if saved.get("model") != cfg.model or saved.get("stage", "") != getattr(cfg, "stage", ""):
        raise SystemExit(f"{path} holds a run of {holds(ckpt)}; the flags ask for {asks}: use the same flags or "
                         f"another --out-dir")
    load_model_state(raw_model, ckpt.pop("model"), path, holds(ckpt), asks)
    changed = {k: (v, getattr(cfg, k)) for k, v in saved.items()
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
    """Rank 0 rewrites log.jsonl without the rows after `step` (a resumed run trains and logs them again) and without
    a cut-off last line (a crash in the middle of an append), which it names. Returns how many rows it dropped."""
    log = Path(out_dir) / "log.jsonl"
    if not (env.master and log.exists()):
        return 0
    lines = [line for line in log.read_text(errors="replace").splitlines(keepends=True) if line.strip()]
    rows = []
    for i, line in enumerate(lines, 1):
        try:
            rows.append((json.loads(line)["step"], line if line.endswith("\n") else line + "\n"))
        except (ValueError, KeyError):
            if i < len(lines):
                raise SystemExit(f"{log}:{i}: not a log row ({line[:60]!r}); move the file away to resume") from None
            env.log(f"note: {log}:{i}: dropped a cut-off last line ({line[:60]!r})")
    tmp = log.with_name(f".log.jsonl.{os.getpid()}.tmp")
    tmp.write_text("".join(line for s, line in rows if s <= step))
    os.replace(tmp, log)  # atomic: the log is never left half-written
    return sum(s > step for s, _ in rows)


def restore_rng(states, env):
    if len(states) != env.world:
        env.log(f"note: checkpoint has RNG states for {len(states)} ranks, this run has {env.world}; reseeding")
        return
    torch.set_rng_state(states[env.rank]["cpu"])
    if torch.cuda.is_available() and "cuda" in states[env.rank]:
        torch.cuda.set_rng_state(states[env.rank]["cuda"])


# ----------------------------------------------------------------------------------------------------------------------
# stops and the step loop's record (Progress): a signal ends the loop at a step boundary, with a checkpoint

MAX_OVERFLOWS = 20  # fp16 steps skipped in a row that stop the run: from 65536 the scale is then below 0.1
# SIGTERM / SIGUSR1 (a preemption: SLURM sends them before the time limit) and SIGINT (Ctrl-C) end the step loop at the
# next step boundary with a checkpoint; the exit code then asks a scheduler to requeue (EX_TEMPFAIL of sysexits.h), or
# is the shell's 128 + SIGINT. Outside the step loop, or at a second Ctrl-C, they stop the script at once.
EXIT_REQUEUE, EXIT_INTERRUPTED = 75, 130
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
_stop = {"signal": 0, "in_loop": False}  # the signal received, and whether the step loop (Progress) runs


def _on_signal(signum, frame):
    again = _stop["signal"] == signal.SIGINT == signum
    _stop["signal"] = signum
    if not _stop["in_loop"] or again:
        raise KeyboardInterrupt


def entry_point(main):
    """A script's (or tool's) entry point: installs the stop signals, and turns a stop outside the step loop into one
    line."""
    for s in STOP_SIGNALS:
        signal.signal(s, _on_signal)
    try:
        main()
    except KeyboardInterrupt:
        name = signal.Signals(_stop["signal"] or signal.SIGINT).name
        print(f"{name}: stopped at once; files already written are kept", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED if name == "SIGINT" else EXIT_REQUEUE)
    if dist.is_initialized():  # a torchrun / srun process group: its ranks end together
        dist.destroy_process_group()


class Progress:
    """The step loop's bookkeeping: the step, fp16 skipped steps, the log window (per-step stats summed since the last
    log line), the speed, the time spent waiting for batches, and `stop_signal`: after a step, nonzero on every rank
    once any rank received a stop signal (entry_point installs them), so all ranks save and stop at the same step."""

    def __init__(self, step, env, skipped=0):
        self.step, self.skipped, self.in_a_row, self.grad_norm = step, skipped, 0, float("nan")
        self.window = {}  # {name: summed per-step stats tensor}
        self.env, self.first_step, self.t0 = env, step, time.time()
        self.data_wait_s, self.data_t0 = 0.0, time.perf_counter()  # seconds in next_batch since data_t0
        self.stop_signal, _stop["in_loop"] = 0, True

    def next_batch(self, batches):
        """next(batches), its wait counted: between two steps the device is idle (each step ends with a host sync)."""
        start = time.perf_counter()
        batch = next(batches)
        self.data_wait_s += time.perf_counter() - start
        return batch

    def take_data_share(self):
        """Share of the wall time since the last call spent waiting for batches, the largest over the ranks."""
        now = time.perf_counter()
        share = torch.tensor(self.data_wait_s / max(now - self.data_t0, 1e-9), dtype=torch.float64,
                             device=self.env.device)
        if self.env.ddp:
            dist.all_reduce(share, op=dist.ReduceOp.MAX)
        self.data_wait_s, self.data_t0 = 0.0, now
        return float(share)

    def record(self, result, stats):
        """After a step whose optimizer_step returned `result` = (grad norm, skipped) and whose stats are `stats`
        ({name: tensor}, each summed into the log window)."""
        self.grad_norm, skipped = result
        self.step, self.skipped = self.step + 1, self.skipped + skipped
        self.window = {k: self.window.get(k, 0) + v.double() for k, v in stats.items()}
        self.in_a_row = self.in_a_row + 1 if skipped else 0
        if self.in_a_row >= MAX_OVERFLOWS:
            raise SystemExit(f"fp16: {self.in_a_row} steps in a row overflowed up to step {self.step} (loss scale "
                             f"too small to recover); try --dtype bfloat16 or float32, or a lower --lr")
        received = torch.tensor(_stop["signal"], device=self.env.device)
        if self.env.ddp:  # every rank stops after the same step, whichever received the signal
            dist.all_reduce(received, op=dist.ReduceOp.MAX)
        self.stop_signal = int(received)

    def due(self, every, stop_at):
        """After a step: whether it logs (or saves): every `every` steps, at the last step, and after a stop signal."""
        return self.step % every == 0 or self.step == stop_at or bool(self.stop_signal)

    def log_fields(self, per_step, stop_at):
        """A log row's bookkeeping: the grad norm, fp16 skipped steps, `{name}_per_s` for each of per_step's {name:
        samples per optimizer step}, the minutes left to step `stop_at`, the share of time spent waiting for data."""
        rate = self.steps_per_s()
        return {"grad_norm": self.grad_norm, "skipped_steps": self.skipped,
                **{f"{k}_per_s": rate * n for k, n in per_step.items()},
                "eta_min": (stop_at - self.step) / max(rate, 1e-9) / 60, "data_share": self.take_data_share()}

    def take_window(self):
        """The window's sums over all ranks ({name: list}), then an empty window."""
        names = sorted(self.window)
        sums = all_sum(torch.stack([self.window[k] for k in names]), self.env).tolist()  # (names, ...)
        self.window = {}
        return dict(zip(names, sums))

    def steps_per_s(self):
        return (self.step - self.first_step) / max(time.time() - self.t0, 1e-9)

    def exit_after_signal(self, saved):
        """The run's last words after a stop signal: one line, then the exit code a scheduler can act on."""
        name = signal.Signals(self.stop_signal).name
        self.env.log(f"{name}: stopped after step {self.step}, checkpoint {saved}; continue with --resume true")
        if self.env.ddp:
            dist.destroy_process_group()
        sys.exit(EXIT_INTERRUPTED if self.stop_signal == signal.SIGINT else EXIT_REQUEUE)
