"""The two mechanisms every entry point shares: a config dataclass -> command line, and atomic
file writes. Standard library only; imports no project file, so any file may import it.

A config is a flat dataclass whose fields are declared with `option(default, doc)`; the doc is the
field's `--help` text. `parse_config(Config, argv)` gives every field a dash-style flag
(`batch_size` -> `--batch-size`), a bool field a switch, and a field declared
`positional=True` a required positional argument. `given_flags` returns only the flags actually
typed, for callers that layer values (defaults, then a stored run's config, then a preset, then
the typed flags).

`atomic_write(path, write)` calls `write(tmp)` on a temporary file beside `path`, then renames it
over `path`: a reader (or a kill -9) sees the old file or the whole new one, never half; the
temporary file is removed if writing fails (disk full, read-only folder), and the temporary files
that killed writers left beside `path` are removed first.

What a command may write: `refuse_to_replace(path, force, ours)` before any work (a file tracked
by git always needs --force; another existing file needs it unless `ours(path)` says the command
wrote it itself), and `one_sentence_write_errors(path)` around the write, which turns a failed
write (OSError, or the RuntimeError torch.save raises on a full disk) into a WriteError whose
message is one sentence saying what to do.

Long runs share two more: `stop_requests(say, message)` turns Ctrl-C and SIGTERM (what a cluster
scheduler sends at a time limit) into a request to stop at the next safe point, and
`trim_jsonl(path, step)` cuts a JSONL log back to a checkpoint's step before a resumed run
appends to it.
"""
import argparse
import contextlib
import dataclasses
import errno
import glob
import json
import os
import re
import signal
import subprocess
from pathlib import Path


def option(default, doc, *, type=None, positional=False, choices=None, nargs=None):
    """A config field with its --help text. `type` converts the typed text (needed when the
    default is None); `choices` restricts it; nargs="+" takes one or more values (a list)."""
    return dataclasses.field(default=default, metadata=dict(
        help=doc, type=type, positional=positional, choices=choices, nargs=nargs))


def flag_name(name):
    return f"--{name.replace('_', '-')}"


def build_parser(config_cls, description):
    """An ArgumentParser with one argument per field; unset flags are absent from the result."""
    parser = argparse.ArgumentParser(description=description)
    for f in dataclasses.fields(config_cls):
        meta, default = f.metadata, f.default
        if default is dataclasses.MISSING:
            default = None
        shown = "" if default in (None, False, ()) else f" (default: {default})"
        if meta.get("positional"):  # required, unless nargs says "*"
            parser.add_argument(f.name, help=meta["help"], type=meta.get("type") or str,
                                **({"nargs": meta["nargs"]} if meta.get("nargs") else {}))
        elif isinstance(default, bool):  # a switch; one that is on by default turns off
            on = not default
            parser.add_argument(flag_name(f.name) if on else f"--no-{flag_name(f.name)[2:]}",
                                dest=f.name, action="store_true" if on else "store_false",
                                default=argparse.SUPPRESS, help=meta["help"] + (
                                    "" if on else " (on by default; this flag turns it off)"))
        else:
            parser.add_argument(flag_name(f.name), dest=f.name, default=argparse.SUPPRESS,
                                type=meta.get("type") or type(default), choices=meta.get("choices"),
                                nargs=meta.get("nargs"), help=meta["help"] + shown)
    return parser


def given_flags(config_cls, argv=None, description=None):
    """Only the values typed on the command line, as a dict of field name -> value."""
    return vars(build_parser(config_cls, description).parse_args(argv))


def parse_config(config_cls, argv=None, description=None):
    """Command line -> config_cls instance (defaults for what was not typed)."""
    return config_cls(**given_flags(config_cls, argv, description))


class WriteError(Exception):
    """A file was not written (refused, or the write failed); the message is one sentence that
    says what to do."""


def git_tracked(path) -> bool:
    """True if path is a file that git tracks (committed or staged) in the repository it lies in;
    False where git or a repository is absent."""
    path = Path(path).absolute()
    if not path.is_file():
        return False
    try:
        done = subprocess.run(["git", "ls-files", "--error-unmatch", "--", path.name],
                              cwd=path.parent, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def refuse_to_replace(path, force=False, ours=None, flag="--force"):
    """Raise WriteError unless writing `path` replaces nothing it should not: a path that is a
    folder, a dangling link or a file git tracks (always, unless `force`), or any other existing
    file for which `ours(path)` (the caller's test "this command wrote it") is not true (unless
    `force`). Call it before the work whose result goes there. Returns path as a Path."""
    path = Path(path)
    if path.is_dir():
        raise WriteError(f"{path} is a folder: give a file name.")
    if path.is_symlink() and not path.exists():
        raise WriteError(f"{path} is a link to nothing: remove the link or pass another path.")
    if not path.exists():
        return path
    if not path.is_file():
        raise WriteError(f"{path} is not a regular file (a pipe or a device?): pass another "
                         "path.")
    if force:
        return path
    if git_tracked(path):
        raise WriteError(f"{path} is tracked by git: add {flag} to replace it, or write "
                         "elsewhere.")
    try:
        mine = bool(ours and ours(path))
    except Exception:  # an unreadable file is not one we wrote
        mine = False
    if not mine:
        raise WriteError(f"{path} exists and was not written by this command: add {flag} to "
                         "replace it, or write elsewhere.")
    return path


# What errno says, as the part of the sentence that tells what to do.
_FULL = (errno.ENOSPC, errno.EDQUOT)
_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)


@contextlib.contextmanager
def one_sentence_write_errors(path):
    """Inside: an OSError, or torch's RuntimeError of a failed write (torch.save on a full disk),
    becomes a WriteError whose message is one sentence naming `path` and what to do. Other
    errors pass through untouched."""
    try:
        yield
    except WriteError:
        raise
    except (OSError, RuntimeError) as e:
        text = str(e)
        # torch.save's zip writer and HDF5 report a failed write as a RuntimeError
        if isinstance(e, RuntimeError) and not re.search(
                r"PytorchStreamWriter|file write failed|unexpected pos|inline_container|"
                r"errno = \d+", text):
            raise
        code = getattr(e, "errno", None)
        if isinstance(e, RuntimeError):
            found = re.search(r"errno = (\d+)", text)  # HDF5 names the system's error
            code = int(found.group(1)) if found else None  # torch does not
            if code is None:
                raise WriteError(f"cannot write {path}: the disk is full or a file-size limit "
                                 "(ulimit -f) is reached; free some disk space (or raise the "
                                 "limit) and run the command again.") from None
        if code == errno.EFBIG:
            raise WriteError(f"cannot write {path}: it would pass this process's file-size "
                             "limit (ulimit -f); raise the limit or write elsewhere.") from None
        if code in _FULL:
            raise WriteError(f"cannot write {path}: the disk is full (or a quota is reached); "
                             "free some disk space and run the command again.") from None
        if code in _DENIED:
            raise WriteError(f"cannot write {path}: {getattr(e, 'strerror', None) or text}; "
                             "make its folder writable or write elsewhere.") from None
        raise WriteError(f"cannot write {path}: {getattr(e, 'strerror', None) or text}; check "
                         "the path and run the command again.") from None


def remove_stale_tmp(path):
    """Remove the temporary files of atomic_write(path) whose writer process is gone (killed
    mid-write); those of live processes stay."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:-4]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, someone else's
        return True
    return True


def atomic_write(path, write):
    """write(tmp_path), then rename tmp_path over path; the temporary file never outlives a
    failure, and those left by killed writers are removed first. Returns path."""
    path = Path(path)
    remove_stale_tmp(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path, obj):
    """obj as indented JSON, atomically; NaN / inf are refused (they are not valid JSON)."""
    text = json.dumps(obj, indent=2, allow_nan=False)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n"))


@contextlib.contextmanager
def stop_requests(say=print, message="stopping at the next checkpoint (again to stop now)"):
    """While inside: Ctrl-C (SIGINT) or SIGTERM asks the work to stop at its next safe point,
    checkpointed, instead of killing it (`say(message)` tells the user; tqdm.write under a
    progress bar); a second one stops at once (KeyboardInterrupt, losing the work since the last
    checkpoint). -> a list that is non-empty once asked. The handlers from before come back on
    leaving, whatever they were (SIG_IGN under nohup)."""
    def ask(number, frame):
        if asked:
            signal.default_int_handler(number, frame)
        asked.append(number)
        say(message)

    asked, before = [], {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in before:
        signal.signal(sig, ask)
    try:
        yield asked
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def trim_jsonl(path, step, evals_at_step=True):
    """Keep the lines of a JSONL log whose "step" is at most `step` (a checkpoint's): a killed run
    logged past its checkpoint, and the resumed run logs those steps again; a line cut short by
    the kill goes too (and, with evals_at_step=False, an evaluation at `step`, which a resumed
    finished run logs again). Atomic; a missing file becomes an empty one."""
    def up_to_step(line):
        with contextlib.suppress(ValueError, KeyError, TypeError):
            record = json.loads(line)
            return record["step"] < step or record["step"] == step and (
                evals_at_step or not any(key.startswith("eval") for key in record))
        return False
    path = Path(path)
    lines = path.read_text().splitlines(True) if path.exists() else []
    atomic_write(path, lambda tmp: Path(tmp).write_text("".join(filter(up_to_step, lines))))
