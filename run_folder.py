"""The run folder's safety around train.py's loop: one trainer per folder, a disk problem as one
sentence, a Ctrl-C that saves before it stops.

  open_run_folder  the checkpoint a --resume continues, or a refusal to overwrite another run
  RunLock      runs/NAME/lock holds the trainer's pid; a second trainer of the folder is refused,
               the lock of a process that died is taken over
  writing_to   an OSError while writing the folder becomes one TrainError sentence
  StopOnCtrlC  the first Ctrl-C asks the loop to checkpoint and stop; a second one quits at once

Imports no other project file; train.py re-exports TrainError.
"""
import os
import signal
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm import tqdm


class TrainError(ValueError):
    """A problem the user can fix; the message is one sentence saying what to do."""


class RunLock:
    """A lock file in the run folder holding the trainer's pid: a second training of the same
    folder is refused; the lock of a process that died is taken over."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "lock"

    def refuse_if_held(self) -> None:
        try:
            pid = int(self.path.read_text())
        except (OSError, ValueError):  # no lock, or a lock cut short by a kill
            return
        try:
            os.kill(pid, 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            return
        except PermissionError:  # it exists, as another user's process
            pass
        if pid > 0:
            raise TrainError(f"another training (pid {pid}) is using {self.path.parent}; wait "
                             "for it or pass another --out.")

    def __enter__(self):
        for _ in range(2):
            try:
                with open(self.path, "x") as f:  # "x": fails if the file exists
                    f.write(str(os.getpid()))
                return self
            except FileExistsError:
                self.refuse_if_held()
                self.path.unlink(missing_ok=True)  # stale: its process is gone
        raise TrainError(f"cannot take the lock {self.path}; remove it if no training runs there.")

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)


@contextmanager
def writing_to(run_dir: Path):
    """A disk or permission problem in the block becomes one sentence naming the folder."""
    try:
        yield
    except OSError as e:
        raise TrainError(f"cannot write to {run_dir} ({e.strerror or e}); free some disk space "
                         "or fix the folder's permissions, then --resume.") from None


class StopOnCtrlC:
    """First Ctrl-C: ask the loop to save and stop after the current step. Second: quit now."""

    def __enter__(self):
        self.requested = False
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self.previous)  # a second Ctrl-C interrupts at once
        tqdm.write("Ctrl-C: saving a checkpoint after this step (Ctrl-C again quits without it)")

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)


def read_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file: say which and what to do
        raise TrainError(f"{path} cannot be read ({type(e).__name__}); move it away and start "
                         "again, or pass another --out.") from None


def open_run_folder(run_dir: Path, resume: bool) -> dict | None:
    """The checkpoint that --resume continues (None for a new run); TrainError when the folder
    holds something a new run would overwrite, or nothing to resume."""
    ckpt_path = run_dir / "ckpt.pt"
    RunLock(run_dir).refuse_if_held()
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainError(f"--out {run_dir} is a file, not a folder; pass another --out.")
    if not resume:
        if ckpt_path.exists():
            raise TrainError(f"{run_dir} already holds a checkpoint; add --resume to continue "
                             "it or pass another --out.")
        if run_dir.exists() and any(p.name != "lock" for p in run_dir.iterdir()):
            raise TrainError(f"{run_dir} is not empty (it holds files of another run); pass "
                             "another --out, or remove it if you do not need them.")
        return None
    if not ckpt_path.exists():
        raise TrainError(f"--resume: {run_dir} has no checkpoint to continue; drop --resume "
                         "to start a new run there.")
    return read_checkpoint(ckpt_path)
