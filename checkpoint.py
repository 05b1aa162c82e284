"""A run's files in its out-dir: the lock that makes it the only run there, checkpoints (plain dicts written atomically
by rank 0, read with weights_only=True, ckpt_<8-digit step>.pt ordered by that step), exact resume, and log.jsonl.
"""
import fcntl
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

import convert
from engine import same_on_all_ranks

# ----------------------------------------------------------------------------------------------------------------------
# the out-dir lock

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


def resume_checkpoint(out_dir, env):
    """The run's newest checkpoint in out_dir (or None), the same file on every rank (a disk not shared between nodes
    stops the run naming what each rank sees, instead of some ranks resuming and the others starting afresh)."""
    path = latest_checkpoint(out_dir, env)
    same_on_all_ranks(None if path is None else str(path), env, f"the newest checkpoint in {out_dir}")
    return path


def refuse_to_overwrite(out_dir):
    """A new run (no --resume) in an out-dir that holds another run's checkpoints or log stops before any work."""
    held = [p.name for _, p in run_checkpoints(out_dir)] + ["log.jsonl"] * (Path(out_dir) / "log.jsonl").exists()
    if held:
        raise SystemExit(f"--out-dir {out_dir} holds an earlier run ({', '.join(held[-3:])}): continue it with "
                         f"--resume true, or choose another --out-dir")


def init_classifier(state, classifier, path):
    """convert.classifier_state of the checkpoint loaded from `path` (ours of any stage, the official release,
    torchvision swin3d_*): (the classifier's state dict, the dropped keys, the format), or a stop naming the file."""
    try:
        return convert.classifier_state(state, classifier)
    except ValueError as e:
        raise SystemExit(f"cannot initialise from {path} ({convert.checkpoint_kind(state)} checkpoint): {e}") from e


def load_checkpoint(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SystemExit(f"cannot load checkpoint {path}: {e}") from e


def holds(state):
    """What a loaded checkpoint holds, for messages: ours name their flags (`--model nano --stage joint`)."""
    saved = state.get("config", {}) if isinstance(state, dict) else {}
    flags = " ".join(f"--{k} {saved[k]}" for k in ("model", "stage") if k in saved)
    return flags or f"a {convert.checkpoint_kind(state)} checkpoint"


def load_model_state(module, state, path, holds="", asks="", allow_missing=False):
    """Loads `state` into `module`; a checkpoint of another model (shapes) or key set stops naming the file, what it
    holds and what the flags ask for (e.g. "--model nano" vs "--model tiny"). allow_missing: keys the checkpoint lacks
    keep their values and are returned (an image-stage checkpoint inflated into the joint model)."""
    own = module.state_dict()
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
              if k in own and v.shape != own[k].shape]
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if shapes or unexpected or (missing and not allow_missing):
        which = f" it holds {holds}, the flags ask for {asks};" if holds or asks else ""
        raise SystemExit(f"checkpoint {path} does not fit the model:{which} "
                         + "; ".join(shapes[:3] + [f"missing keys: {missing}"] * bool(missing and not allow_missing)
                                     + [f"unexpected keys: {unexpected}"] * bool(unexpected)))
    module.load_state_dict(state, strict=not allow_missing)
    return missing


def resume_from(path, raw_model, optimizer, scaler, cfg, env, ignore=()):
    """Exact resume: the model, and when training (optimizer given) the optimizer, the scaler and every rank's RNG
    state. A checkpoint of another model or stage stops the run; other differing flags are logged. Returns the
    checkpoint's other entries (step, EMA, data positions)."""
    ckpt = load_checkpoint(path)
    saved = ckpt["config"]
    if saved.get("model") != cfg.model or saved.get("stage", "") != getattr(cfg, "stage", ""):
        holds = " ".join(f"--{k} {saved[k]}" for k in ("model", "stage") if k in saved)
        asks = " ".join(f"--{k} {getattr(cfg, k)}" for k in ("model", "stage") if hasattr(cfg, k))
        raise SystemExit(f"{path} holds a run of {holds}; the flags ask for {asks}: use the same flags or another "
                         f"--out-dir")
    load_model_state(raw_model, ckpt.pop("model"), path, holds(ckpt), f"--model {cfg.model}")
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
    a cut-off last line (a crash in the middle of an append), which it names."""
    log = Path(out_dir) / "log.jsonl"
    if not (env.master and log.exists()):
        return
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


def restore_rng(states, env):
    if len(states) != env.world:
        env.log(f"note: checkpoint has RNG states for {len(states)} ranks, this run has {env.world}; reseeding")
        return
    torch.set_rng_state(states[env.rank]["cpu"])
    if torch.cuda.is_available() and "cuda" in states[env.rank]:
        torch.cuda.set_rng_state(states[env.rank]["cuda"])
