"""Everything around train.py's loop that is not the training idea: settings refused before a
run starts, one trainer per folder, the run's files, a disk problem as one sentence (Ctrl-C and
SIGTERM are cli.stop_requests, shared with policies/td3.py).

  check_numbers    sizes, seeds and rates that cannot work; check_sizes: a window longer than an
                   episode, activations beyond the machine's memory
  open_run_folder  the checkpoint a --resume continues, or a refusal to overwrite another run;
                   check_run_folder also refuses a resume with other settings (RESUMABLE)
  RunLock          runs/NAME/lock holds the trainer's pid and the process's start time; a second
                   trainer of the folder is refused, the lock of a process that died (or whose
                   pid was reused by another process) is taken over
  writing_to       a failed write (OSError, or torch.save's RuntimeError on a full disk) becomes
                   one TrainError sentence; the checkpoint already on disk is intact

  files of a run   ckpt.pt (save_checkpoint, restore_checkpoint), the kept checkpoints of
                   --keep-last (keep_checkpoint), config.json and metrics.jsonl at the start
                   (start_files), metrics.jsonl lines (log), eval.json at the end (write_eval),
                   and the one-sentence errors of a NaN or out-of-memory stop

Imports cli, data (the env facts) and dt (parameter counts), never train.py: `cfg` is train.py's
TrainConfig and `run` its Run; train.py re-exports TrainError.
"""
import json
import math
import os
import random
import sys
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from cli import WriteError, atomic_write, flag_name, one_sentence_write_errors, trim_jsonl, \
    write_json
from data import MAX_EPISODE_STEPS, TEST_SEED, normalized_score
from dt import count_parameters

RUN_FILES = ("lock", "ckpt.pt", "config.json", "metrics.jsonl", "eval.json")
BEFORE_FIRST_CHECKPOINT = {"config.json", "metrics.jsonl", "lock"}  # what such a run leaves


class TrainError(ValueError):
    """A problem the user can fix; the message is one sentence saying what to do."""


# ----------------------------------------------------------------------------- before a run starts

def check_numbers(cfg) -> None:
    """Sizes, seeds and rates that cannot work (train.py's TrainConfig), refused before anything
    is loaded or written."""
    lowest = {"steps": 1, "batch_size": 1, "log_every": 1, "save_every": 1, "eval_episodes": 1,
              "d_model": 1, "n_layer": 1, "mamba_n_layer": 1, "n_head": 1, "warmup_steps": 0,
              "keep_last": 1, "keep_every": 1, "d_state": 1, "d_conv": 1, "expand": 1,
              "eval_every": 0, "seed": 0, "eval_seed": 0, "max_episode_steps": 1}
    for name, low in lowest.items():
        if (value := getattr(cfg, name)) is not None and value < low:  # None: the default
            raise TrainError(f"{flag_name(name)} must be at least {low}, got {value}.")
    check_sizes(cfg)
    if cfg.seed >= 2**32 or cfg.eval_seed >= 2**32:
        raise TrainError("--seed and --eval-seed must be below 2**32.")
    for name in ("lr", "grad_clip", "return_scale"):
        if not (math.isfinite(value := getattr(cfg, name)) and value > 0):
            raise TrainError(f"{flag_name(name)} must be a positive number, got {value}.")
    if not (math.isfinite(cfg.weight_decay) and cfg.weight_decay >= 0):
        raise TrainError(f"--weight-decay must be 0 or more, got {cfg.weight_decay}.")
    if not 0 <= cfg.ema < 1:
        raise TrainError(f"--ema must be in [0, 1) (0: off; 0.999 is usual), got {cfg.ema}.")
    if cfg.eval_seed + cfg.eval_episodes > TEST_SEED:
        raise TrainError(f"training evaluates on validation seeds: --eval-seed plus "
                         f"--eval-episodes must stay at or below {TEST_SEED}, the first test seed.")
    if not 0 <= cfg.dropout < 1:
        raise TrainError(f"--dropout must be in [0, 1), got {cfg.dropout}.")
    if cfg.target is not None and not math.isfinite(cfg.target):
        raise TrainError(f"--target must be a finite return, got {cfg.target}.")


def check_sizes(cfg) -> None:
    """Sizes that cannot fit, refused before anything is loaded or written: a window or an
    evaluation episode longer than the env's 1000 steps, or activations beyond this machine's
    memory (a rough count: about 40 floats per token and width per layer, attention's B x K^2
    per head and layer on top for the DT)."""
    for name in ("context", "max_episode_steps"):
        value = getattr(cfg, name)
        if value not in (None, "full") and int(value) > MAX_EPISODE_STEPS:
            raise TrainError(f"{flag_name(name)} {value} is longer than any episode "
                             f"({MAX_EPISODE_STEPS} steps); use {MAX_EPISODE_STEPS} or less.")
    tokens = 3 * (MAX_EPISODE_STEPS if cfg.context == "full" else int(cfg.context))
    layers = cfg.n_layer if cfg.model == "dt" else cfg.mamba_n_layer
    floats = cfg.batch_size * tokens * layers * (40 * cfg.d_model + (
        cfg.n_head * tokens * 3 if cfg.model == "dt" else 0))
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: no check
        return
    if 4 * floats > memory:
        raise TrainError(f"--batch-size {cfg.batch_size} with --context {cfg.context} and "
                         f"--d-model {cfg.d_model} needs about {4 * floats / 2**30:.0f} GiB for "
                         f"activations, more than this machine's {memory / 2**30:.0f} GiB; "
                         "lower --batch-size or --context.")


def process_start(pid: int):
    """When process pid started, in clock ticks since boot (Linux's /proc), else None."""
    try:  # field 22 of /proc/PID/stat; the name before it, in parentheses, may hold spaces
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


class RunLock:
    """A lock file in the run folder holding the trainer's pid and start time: a second training
    of the same folder is refused; the lock of a process that died is taken over, and so is one
    whose pid now belongs to a process that started later (a reused pid)."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "lock"

    def holder(self):
        """The pid of the live trainer holding the lock, or None."""
        try:
            text = self.path.read_text()
            held = json.loads(text) if text.lstrip().startswith("{") else {"pid": int(text)}
            pid, start = int(held["pid"]), held.get("start")
        except (OSError, ValueError, KeyError, TypeError):  # no lock, or one cut short by a kill
            return None
        try:
            os.kill(pid, 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            return None
        except (PermissionError, OverflowError, ValueError):  # another user's, or not a pid
            if pid <= 0 or pid > 2**22:
                return None
        now = process_start(pid)
        return pid if pid > 0 and (start is None or now is None or now == start) else None

    def refuse_if_held(self) -> None:
        if (pid := self.holder()) is not None:
            raise TrainError(f"another training (pid {pid}) is using {self.path.parent}; wait "
                             "for it or pass another --out.")

    def __enter__(self):
        record = json.dumps({"pid": os.getpid(), "start": process_start(os.getpid())})
        for _ in range(2):
            try:
                with open(self.path, "x") as f:  # "x": fails if the file exists
                    f.write(record)
                return self
            except FileExistsError:
                self.refuse_if_held()
                self.path.unlink(missing_ok=True)  # stale: its process is gone
            except OSError as e:
                raise TrainError(f"cannot create the lock file {self.path} ({e.strerror or e}); "
                                 "free some disk space or make the folder writable, then run "
                                 "the command again.") from None
        raise TrainError(f"cannot take the lock {self.path}; remove it if no training runs there.")

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)


@contextmanager
def writing_to(run_dir: Path):
    """A failed write in the block becomes one sentence naming the file and what to do."""
    try:
        with one_sentence_write_errors(run_dir):
            yield
    except WriteError as e:
        raise TrainError(f"{str(e).rstrip('.')}, adding --resume to continue from the last "
                         f"checkpoint in {run_dir} (it is intact).") from None


CHECKPOINT_KEYS = {"model": dict, "optimizer": dict, "scheduler": dict, "step": int,
                   "config": dict, "rng": dict, "state_mean": torch.Tensor,
                   "state_std": torch.Tensor}


def read_checkpoint(path: Path) -> dict:
    """A train.py checkpoint (weights_only: loading never runs code), checked for its parts."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file: say which and what to do
        raise TrainError(f"{path} cannot be read ({type(e).__name__}); move it away and start "
                         "again, or pass another --out.") from None
    wrong = [k for k, kind in CHECKPOINT_KEYS.items()
             if not isinstance(ckpt, dict) or not isinstance(ckpt.get(k), kind)]
    if wrong:
        raise TrainError(f"{path} is not a train.py checkpoint (no valid {wrong[0]!r}); move it "
                         "away and start again, or pass another --out.")
    return ckpt


def open_run_folder(run_dir: Path, resume: bool) -> dict | None:
    """The checkpoint that --resume continues (None for a new run); TrainError when the folder
    holds something a new run would overwrite, or nothing to resume."""
    ckpt_path = run_dir / "ckpt.pt"
    if run_dir.is_symlink() and not run_dir.exists():
        raise TrainError(f"--out {run_dir} is a link to nothing; remove the link or pass "
                         "another --out.")
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainError(f"--out {run_dir} is a file, not a folder; pass another --out.")
    for name in RUN_FILES:
        path = run_dir / name
        if (path.exists() or path.is_symlink()) and not path.is_file():
            raise TrainError(f"{path} is not a regular file; remove it or pass another --out.")
    RunLock(run_dir).refuse_if_held()
    held = {p.name for p in run_dir.iterdir()} if run_dir.is_dir() else set()
    if not resume:
        if ckpt_path.exists():
            raise TrainError(f"{run_dir} already holds a checkpoint; add --resume to continue "
                             "it, or pass another --out.")
        if held - BEFORE_FIRST_CHECKPOINT:
            raise TrainError(f"{run_dir} is not empty (it holds files of another run); remove "
                             "the folder or pass another --out.")
        if held - {"lock"}:  # a run stopped before its first checkpoint: nothing to keep
            print(f"note: {run_dir} holds a run stopped before its first checkpoint; starting "
                  "it again.")
        return None
    if not ckpt_path.exists():
        raise TrainError(f"--resume: {run_dir} has no checkpoint to continue (a run stopped "
                         "before its first one, or none); run the same command without "
                         "--resume to start it, or pass another --out.")
    return read_checkpoint(ckpt_path)


# Settings a resumed run may change; any other difference would not continue the same run.
RESUMABLE = {"steps", "device", "compile", "out", "resume", "log_every", "save_every", "eval_every",
             "eval_episodes", "target", "eval_mode", "eval_seed", "max_episode_steps", "preset",
             "keep_last", "keep_every", "scan_backend", "fast_attention"}  # the last two: the
# same numbers up to rounding (tested equal), computed another way
# settings that runs saved before they existed had
OLD_RUN_DEFAULTS = {"activation": "gelu", "lr_schedule": "constant", "ema": 0.0, "keep_last": 1,
                    "keep_every": 1000, "obs": "full", "reward": "dense", "d_state": 16,
                    "d_conv": 4, "expand": 2, "scan_backend": "auto", "fast_attention": True}


def check_run_folder(cfg, run_dir: Path) -> dict | None:
    """The checkpoint to resume from (None for a new run); TrainError when the folder would
    not continue the same run, or holds something a new run would overwrite."""
    ckpt = open_run_folder(run_dir, cfg.resume)
    if ckpt is None:
        return None
    if cfg.steps < ckpt["step"]:
        raise TrainError(f"{run_dir} is already at step {ckpt['step']}, past --steps "
                         f"{cfg.steps}; pass --steps {ckpt['step']} or more to continue it.")
    if cfg.lr_schedule == "cosine" and cfg.steps != ckpt["config"]["steps"]:
        raise TrainError(f"{run_dir}'s cosine schedule ends at step {ckpt['config']['steps']}; "
                         "resume with that --steps, or start a new run for another budget.")
    for name, value in asdict(cfg).items():
        stored = ckpt["config"].get(name, OLD_RUN_DEFAULTS.get(name))
        if name not in RESUMABLE and stored != value:
            flag = flag_name(name)
            raise TrainError(f"{run_dir} was trained with {flag} {stored}, not {value}; "
                             f"resume with the same {flag} or start a new run with another --out.")
    return ckpt


def restore_checkpoint(run, ckpt: dict) -> None:
    """The run in ckpt, exactly: weights, EMA, optimiser, scheduler, step, RNG states."""
    try:
        run.model.load_state_dict(ckpt["model"])
        if run.cfg.ema:
            run.ema = {k: v.to(run.device) for k, v in ckpt["ema"].items()}
        run.optimizer.load_state_dict(ckpt["optimizer"])
        run.scheduler.load_state_dict(ckpt["scheduler"])
        run.step = run.saved_step = ckpt["step"]
        run.elapsed = ckpt["time"]
        run.np_rng.bit_generator.state = ckpt["rng"]["numpy"]
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())
        if run.device.type == "cuda" and "cuda" in ckpt["rng"]:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"].cpu())
        random.setstate(ckpt["rng"]["python"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise TrainError(f"{run.run_dir / 'ckpt.pt'} does not fit this model and data (edited, "
                         f"or of another run: {type(e).__name__}); move it away and start "
                         "again, or pass another --out.") from None


# ----------------------------------------------------------------------------- files of a run

def save_checkpoint(run) -> None:
    """ckpt.pt as a plain dict, written atomically; refuses weights that are no longer finite."""
    if not all(torch.isfinite(p).all() for p in run.model.parameters()):
        raise nan_error(run, f"the weights became nan/inf by step {run.step}")
    rng = {"numpy": run.np_rng.bit_generator.state, "torch": torch.get_rng_state(),
           "python": random.getstate()}
    if run.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state()
    state = {"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
             "scheduler": run.scheduler.state_dict(), "step": run.step, "time": run.elapsed,
             "rng": rng, "config": asdict(run.cfg), "model_config": asdict(run.model.config),
             "env": run.cfg.env, "state_mean": torch.from_numpy(run.dataset.state_mean),
             "state_std": torch.from_numpy(run.dataset.state_std),
             "return_scale": run.cfg.return_scale, "ema": run.ema,
             "data": {"path": str(run.data_path), "fingerprint": run.data_fingerprint}}
    with writing_to(run.run_dir):
        atomic_write(run.run_dir / "ckpt.pt", lambda tmp: torch.save(state, tmp))
    run.saved_step = run.step


def keep_checkpoint(run) -> None:
    """checkpoints/step-NNNNNNN.pt: this step's weights (and EMA) with what evaluate.py needs to
    load them, when the step is one of the last --keep-last ones, --keep-every apart."""
    cfg, to_end = run.cfg, run.cfg.steps - run.step
    if cfg.keep_last < 2 or to_end % cfg.keep_every or to_end >= cfg.keep_last * cfg.keep_every:
        return
    state = {"model": run.model.state_dict(), "ema": run.ema, "step": run.step,
             "config": asdict(cfg), "model_config": asdict(run.model.config), "env": cfg.env,
             "state_mean": torch.from_numpy(run.dataset.state_mean),
             "state_std": torch.from_numpy(run.dataset.state_std), "return_scale": cfg.return_scale}
    folder = run.run_dir / "checkpoints"
    with writing_to(run.run_dir):
        folder.mkdir(exist_ok=True)
        atomic_write(folder / f"step-{run.step:07d}.pt", lambda tmp: torch.save(state, tmp))


def start_files(run) -> dict:
    """metrics.jsonl cut back to the checkpoint's step, then config.json: settings, model,
    device, scan, data. Returns the data summary."""
    summary = run.dataset.summary()
    summary["return_mean_normalized"] = normalized_score(run.cfg.env, summary["return_mean"])
    with writing_to(run.run_dir):
        # a resumed run logs those steps again; a finished one, its final evaluation
        trim_jsonl(run.run_dir / "metrics.jsonl", run.step, run.step < run.cfg.steps)
        write_json(run.run_dir / "config.json", {
            "train": asdict(run.cfg), "model": asdict(run.model.config), "eval_mode": run.eval_mode,
            "target_return": run.target, "device": str(run.device),
            "parameters": {"without_timestep_table": count_parameters(run.model),
                           "all": count_parameters(run.model, exclude_timestep=False)},
            # the selective scan the Mamba chose (c, torch, triton; equal up to float rounding)
            "scan_backend": (run.model.backbone.scan_backend(run.device)
                             if run.model.config.backbone == "mamba" else None),
            "data": {"path": str(run.data_path), **summary},
            "versions": {"torch": torch.__version__, "numpy": np.__version__,
                         "python": sys.version.split()[0]}})
    return summary


def write_eval(run, result: dict) -> None:
    """eval.json: the final evaluation of the last checkpoint (evaluate.py's format)."""
    cfg = run.cfg
    with writing_to(run.run_dir):
        write_json(run.run_dir / "eval.json", {
            "run_dir": str(run.run_dir), "env": cfg.env, "model": cfg.model, "step": run.step,
            "device": str(run.device), "config": {
                "episodes": cfg.eval_episodes, "seed": cfg.eval_seed, "seeds": "validation",
                "estimator": "last checkpoint, raw weights", "mode": run.eval_mode,
                "target": [run.target]}, "results": [result]})


def nan_error(run, what: str) -> TrainError:
    """what became nan/inf, where the last good checkpoint is, and what to try."""
    last = (f"the last good checkpoint (step {run.saved_step}) is in {run.run_dir}"
            if run.saved_step is not None else "no checkpoint had been saved yet")
    return TrainError(f"{what}; {last}; try a lower --lr, or check the data's rewards and "
                      "--return-scale (returns-to-go of order 1 train best).")


def is_out_of_memory(e: BaseException) -> bool:
    """torch.OutOfMemoryError (CUDA), or the CPU allocator's RuntimeError, or a MemoryError."""
    return isinstance(e, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(e, RuntimeError) and "can't allocate memory" in str(e))


def memory_error(run, e: BaseException) -> TrainError:
    last = (f"the checkpoint of step {run.saved_step} in {run.run_dir} is kept"
            if run.saved_step is not None else "no checkpoint had been saved")
    cfg = run.cfg
    return TrainError(f"out of memory at step {run.step + 1} (--batch-size {cfg.batch_size}, "
                      f"--context {cfg.context}, --d-model {cfg.d_model}); {last}; lower "
                      "--batch-size or --context, or free memory, and run the command again.")


def log(run, record: dict) -> None:
    with writing_to(run.run_dir), open(run.run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


class Stopped(KeyboardInterrupt):
    """Training stopped on a signal after saving; `signum` says which (the exit status)."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = int(signum)
