"""The pytest plugin that grades one exercise: a time limit per test, no shortcuts, no tampering.

`course/assignments.py check` runs an exercise's instructor tests with `-p course.grading` in a
fresh copy of the reference tree that holds the student's code only inside that exercise's marked
regions. The student's code still runs in the same process as the tests, so this plugin:

  - stops a test after COURSE_TEST_TIMEOUT seconds (SIGALRM raises TestTimedOut, which a
    student's `except Exception` does not catch);
  - refuses the shortcuts of the exercise while the student's function runs (FORBIDDEN below: a
    Python profile hook raises ShortcutRefused when that function calls a forbidden function or
    any code of a forbidden file);
  - ignores `module.helper = ...` for the checking helpers (torch.testing.assert_close,
    pytest.fail, ...), so a patch changes nothing and the tests judge the real output; fails a
    test after which a helper or a name of the test module was replaced anyway (through a
    module's __dict__, a class attribute), and puts the original back before the next test;
  - writes one JSON line per test (nodeid, outcome, message) to COURSE_RESULTS as soon as the
    test ends, so a run stopped from outside still leaves the results of the tests before. Each
    line carries a token that the grader hands over through a pipe (COURSE_TOKEN_FD) and that
    never sits in the environment or a module global: the grader ignores lines without it, so
    code under test cannot append "passed" lines of its own.

What this cannot stop: the student's code runs in the tests' process, so code that goes looking
through the interpreter's memory (gc, frames, the plugin's closures) can still reach anything.
It raises the bar from "replace one function" to deliberate attack; the robust next step would
run each student function in a separate process.

Environment: COURSE_EXERCISE (the exercise number), COURSE_RESULTS (the JSON-lines file),
COURSE_TOKEN_FD (a pipe holding the token), COURSE_TEST_TIMEOUT (seconds per test, default 60);
the last three are removed from os.environ when this plugin loads.
"""
import importlib
import json
import os
import signal
import sys
import threading
import types

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")   # before anything imports triton

EXERCISE = int(os.environ.get("COURSE_EXERCISE", "0"))
TIMEOUT_S = float(os.environ.pop("COURSE_TEST_TIMEOUT", "60"))


def _results_writer():
    """A function that appends one JSON object, with the token, to the results file (or None)."""
    path, fd = os.environ.pop("COURSE_RESULTS", None), os.environ.pop("COURSE_TOKEN_FD", None)
    if path is None:
        return None
    token = ""
    if fd is not None:
        with os.fdopen(int(fd)) as pipe:
            token = pipe.read()

    def write(record):
        with open(path, "a") as f:
            f.write(json.dumps(dict(record, token=token)) + "\n")
    return write


WRITE = _results_writer()


class TestTimedOut(BaseException):
    """A test ran past its time limit (a BaseException, so `except Exception` lets it through)."""


class ShortcutRefused(BaseException):
    """The student's function called a shortcut the exercise forbids."""


# Per exercise: the student's functions (module, qualified name) and, while one of them runs,
# the forbidden project files, the forbidden Python functions and the forbidden C builtins.
# Why each is forbidden is in ASSIGNMENTS.md ("Off-limits while your function runs").
SCAN_FILES = ("scan_torch.py", "scan_cpu.py", "scan_kernel.py")
GRAD_SWITCHES = ("torch.autograd.grad", "torch.autograd.backward", "torch.Tensor.backward",
                 "torch.autograd.grad_mode.enable_grad.__enter__",
                 "torch.autograd.grad_mode.set_grad_enabled.__init__",
                 "torch.autograd.functional.vjp", "torch.func.vjp", "torch.func.grad")
FORBIDDEN = {
    1: dict(entries=(("dt", "attention_ref"), ("dt", "attention_mask")), files=(),
            functions=("torch.nn.functional.multi_head_attention_forward",
                       "torch.nn.MultiheadAttention.forward"),
            builtins=("torch.nn.functional.scaled_dot_product_attention",
                      "torch._C._nn.scaled_dot_product_attention")),
    4: dict(entries=(("ssm", "selective_scan_ref"),), files=SCAN_FILES,
            functions=("ssm.selective_scan", "ssm.mamba_step_ref"), builtins=()),
    5: dict(entries=(("scan_torch", "_SelectiveScanFn.backward"),),
            files=("scan_cpu.py", "scan_kernel.py", "ssm.py"), functions=GRAD_SWITCHES,
            builtins=("torch._C._set_grad_enabled",)),
    6: dict(entries=(("ssm", "mamba_step_ref"),), files=SCAN_FILES,
            functions=("ssm.selective_scan", "ssm.selective_scan_ref"), builtins=()),
}
# Always refused inside the student's function: switching the guard off or running elsewhere.
GUARD_BUILTINS = ("sys.setprofile", "sys.settrace", "threading.setprofile",
                  "threading.settrace", "_thread.start_new_thread")


def _resolve(dotted):
    """'torch.autograd.grad' -> the object; the longest importable module prefix is imported."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


def _code_of(fn):
    fn = getattr(fn, "__func__", fn)
    return getattr(fn, "__code__", None)


def _guarded(fn, rules, label):
    """fn, run with a profile hook that refuses the forbidden calls while it runs."""
    files = {os.path.abspath(f) for f in rules["files"]}
    codes = {c for c in (_code_of(_resolve(f)) for f in rules["functions"]) if c is not None}
    builtins = {id(_resolve(b)) for b in rules["builtins"] + GUARD_BUILTINS}
    own = _code_of(fn)

    def refuse(frame, event, arg):
        if event == "call":
            code = frame.f_code
            if code is not own and (code in codes or os.path.abspath(code.co_filename) in files):
                raise ShortcutRefused(
                    f"{label} called {code.co_name} ({os.path.basename(code.co_filename)}), "
                    "which this exercise forbids; see ASSIGNMENTS.md, 'Off-limits while your "
                    "function runs', and write it yourself.")
        elif event == "c_call" and id(arg) in builtins and frame.f_code is not wrapper.__code__:
            raise ShortcutRefused(f"{label} called {getattr(arg, '__name__', arg)}, which this "
                                  "exercise forbids; see ASSIGNMENTS.md, 'Off-limits while your "
                                  "function runs'.")

    def wrapper(*args, **kwargs):
        previous = sys.getprofile()
        sys.setprofile(refuse)
        try:
            return fn(*args, **kwargs)
        finally:
            sys.setprofile(previous)

    wrapper.__name__, wrapper.__qualname__, wrapper.__doc__ = fn.__name__, fn.__qualname__, \
        fn.__doc__
    wrapper.__wrapped__ = fn
    return wrapper


def _install_guards(number):
    """Replace the exercise's functions by guarded ones, wherever the project holds them."""
    rules = FORBIDDEN.get(number)
    if rules is None:
        return
    for module_name, qualname in rules["entries"]:
        module = importlib.import_module(module_name)
        owner_name, _, name = qualname.rpartition(".")
        owner = getattr(module, owner_name) if owner_name else module
        raw = owner.__dict__[name]
        fn = raw.__func__ if isinstance(raw, staticmethod) else raw
        guarded = _guarded(fn, rules, f"{qualname} (exercise {number})")
        setattr(owner, name, staticmethod(guarded) if isinstance(raw, staticmethod) else guarded)
        if module_name == "ssm":   # the backends hold the reference functions in namedtuples
            for backend in ("REFERENCE", "TORCH"):
                held = getattr(module, backend)
                setattr(module, backend, held._replace(
                    **{field: guarded for field in held._fields if getattr(held, field) is fn}))


# The checking helpers a test relies on; each must still be the original after every test.
HELPERS = ("torch.testing.assert_close", "torch.allclose", "torch.equal", "torch.isclose",
           "torch.Tensor.__eq__", "torch.Tensor.tolist", "numpy.testing.assert_allclose",
           "numpy.testing.assert_array_equal", "numpy.allclose", "pytest.fail", "pytest.approx",
           "pytest.raises", "builtins.isinstance", "builtins.len", "builtins.abs", "builtins.max",
           "builtins.sum", "builtins.all", "builtins.any", "builtins.zip", "builtins.range")


def _holder_and_name(dotted):
    holder, _, name = dotted.rpartition(".")
    return _resolve(holder), name


def _snapshot():
    """[(holder, name, original)] for the helpers."""
    return tuple((h, n, getattr(h, n)) for h, n in (_holder_and_name(d) for d in HELPERS))


def _seal(snapshot):
    """Make `module.helper = something` a no-op for the helpers' modules (a module's class may be
    swapped for a subclass): code that patches a helper the ordinary way changes nothing, so the
    tests still judge its real output. Writes that go around this are caught by _tampering."""
    sealed = {}
    for holder, name, _ in snapshot:
        if isinstance(holder, types.ModuleType):
            sealed.setdefault(holder, set()).add(name)
    _seal_modules(sealed)


def _seal_modules(sealed):
    """{module: names}: assignments to those names of those modules are ignored from now on."""
    for module, names in sealed.items():
        frozen = frozenset(names)

        class Sealed(type(module)):
            def __setattr__(self, attr, value, _frozen=frozen):
                if attr not in _frozen:
                    super().__setattr__(attr, value)

            def __delattr__(self, attr, _frozen=frozen):
                if attr not in _frozen:
                    super().__delattr__(attr)

        module.__class__ = Sealed


def pytest_configure(config):
    _install_guards(EXERCISE)
    config._course_helpers = _snapshot()
    _seal(config._course_helpers)
    config._course_modules = {}


def pytest_collection_modifyitems(session, config, items):
    for item in items:   # the test modules' own names (references, fixtures' helpers)
        module = item.module
        config._course_modules.setdefault(module.__name__, (module, dict(vars(module))))
    _seal_modules({module: set(saved) for module, saved in config._course_modules.values()})


def pytest_collection_finish(session, _write=WRITE):
    if _write:
        _write({"collected": [item.nodeid for item in session.items]})


def _tampering(config):
    """Names of replaced helpers or test-module globals; puts the originals back."""
    changed = []
    for holder, name, original in config._course_helpers:
        if getattr(holder, name, None) is not original:
            changed.append(f"{getattr(holder, '__name__', holder)}.{name}")
            if isinstance(holder, types.ModuleType):
                vars(holder)[name] = original
            else:
                setattr(holder, name, original)
    for module, saved in config._course_modules.values():
        for name, original in saved.items():
            if vars(module).get(name) is not original:
                changed.append(f"{module.__name__}.{name}")
                setattr(module, name, original)
    return changed


def _on_alarm(signum, frame):
    raise TestTimedOut(f"the test ran past its time limit of {TIMEOUT_S:g} s: look for a loop "
                       "that never ends or work that grows too fast")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    on_main_thread = threading.current_thread() is threading.main_thread()
    if on_main_thread:
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, TIMEOUT_S)
    try:
        yield
    finally:
        if on_main_thread:
            signal.setitimer(signal.ITIMER_REAL, 0)
        sys.setprofile(None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if call.when != "call":
        if call.when == "setup" and report.failed:
            report.course_message = call.excinfo.exconly() if call.excinfo else "setup failed"
        return
    changed = _tampering(item.config)
    if changed:
        report.outcome = "failed"
        report.course_message = (f"the code under test replaced {', '.join(sorted(changed))}: "
                                 "tests check your code, so leave the checking helpers alone")
    elif report.failed and call.excinfo is not None:
        report.course_message = call.excinfo.exconly()


def pytest_runtest_logreport(report, _write=WRITE):
    if not _write:
        return
    done = (report.when == "call") or (report.when == "setup" and not report.passed)
    if not done:
        return
    outcome = "passed" if report.passed else ("skipped" if report.skipped else "failed")
    message = getattr(report, "course_message", "")
    if report.skipped and isinstance(report.longrepr, tuple):
        message = str(report.longrepr[2])
    _write({"nodeid": report.nodeid, "outcome": outcome, "message": message[:4000]})
