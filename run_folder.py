"""The run folder's safety around train.py's loop: one trainer per folder, a disk problem as one
sentence (Ctrl-C and SIGTERM are cli.stop_requests, shared with policies/td3.py).

  open_run_folder  the checkpoint a --resume continues, or a refusal to overwrite another run
  RunLock          runs/NAME/lock holds the trainer's pid and the process's start time; a second
                   trainer of the folder is refused, the lock of a process that died (or whose
                   pid was reused by another process) is taken over
  writing_to       a failed write (OSError, or torch.save's RuntimeError on a full disk) becomes
                   one TrainError sentence; the checkpoint already on disk is intact

  files of a run   ckpt.pt (save_checkpoint), the kept checkpoints of --keep-last
                   (keep_checkpoint), metrics.jsonl lines (log), and the one-sentence
                   errors of a NaN or out-of-memory stop

  check_sizes      sizes that cannot fit (a window longer than an episode, activations beyond
                   the machine's memory), refused before a folder is made

Imports only cli and data's constants: `run` is train.py's Run and `cfg` its TrainConfig;
train.py re-exports TrainError.
"""
import json
import os
import random
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch

from cli import WriteError, atomic_write, flag_name, one_sentence_write_errors
from data import MAX_EPISODE_STEPS

RUN_FILES = ("lock", "ckpt.pt", "config.json", "metrics.jsonl", "eval.json")
BEFORE_FIRST_CHECKPOINT = {"config.json", "metrics.jsonl", "lock"}  # what such a run leaves


class TrainError(ValueError):
    """A problem the user can fix; the message is one sentence saying what to do."""


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
