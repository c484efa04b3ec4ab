"""Profile the Decision Transformer against the Decision Mamba: speed and memory.

Both models use dt.DecisionConfig's defaults (matched parameter counts) with HalfCheetah's sizes
(17-d states, 6-d actions), on one device. Three measurements:
  1. inference latency per env step vs context K, at batch 1 and 100: the DT re-encoding its
     K-step window (3K tokens) every env step, the Mamba doing the same ("window"), and the Mamba
     acting recurrently (one step() + one step_action() on its fixed-size cache, timed after K
     env steps have been fed, so at episode position >= K);
  2. training step time (forward + backward + clip + AdamW) and peak memory vs K, until a memory
     or time cap stops a model. CPU: peak resident memory of a child process that runs one
     model's sweep (python profile.py --_train-child ...), its peak mark reset before each
     context; CUDA: torch.cuda.max_memory_allocated;
  3. selective-scan throughput: the reference loop, the fast PyTorch scan, Triton (CUDA only).
Every timing: warm-up calls, then repeats; reported as median, quartiles and min/max. The
latency cells of one batch size are timed in turns (round-robin), so that other processes on a
shared CPU disturb them alike; the load average is recorded with the results.
Writes results/profile-<device>.json, a markdown table (.md) and -latency.png / -memory.png.

Run: python profile.py [--quick] [--out results] [--device auto]   (--help lists every option)

The file's name is also the standard library's `profile`, which cProfile imports (and
torch._dynamo imports cProfile): with the repo root first on sys.path that import would land
here. So when imported under the name "profile", the file loads the standard library's module
and puts it in sys.modules in its own place (the import system returns that); it imports neither
torch nor the project, and the functions it still defines are never used.

Glossary: B batch, K context in env steps, T = 3K tokens, L scan length, D scan channels
(d_inner), N SSM state size per channel.
"""
import argparse
import contextlib
import ctypes
import dataclasses
import gc
import importlib.util
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field

try:
    import resource  # Unix only: peak RSS and the memory cap
except ImportError:
    resource = None

if __name__ == "profile":  # imported in place of the standard library's profile: become it
    _spec = importlib.util.spec_from_file_location(
        "profile", os.path.join(sysconfig.get_paths()["stdlib"], "profile.py"))
    sys.modules["profile"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["profile"])
else:  # the profiler's own dependencies, never loaded while standing in for the stdlib module
    import numpy as np
    import torch
    from tqdm import tqdm

    import ssm
    from dt import DecisionConfig, DecisionModel, count_parameters

MODELS = {"dt": "gpt", "mamba": "mamba"}  # model name -> DecisionConfig.backbone
LATENCY_MODES = {("dt", "window"): "DT window", ("mamba", "window"): "Mamba window",
                 ("mamba", "recurrent"): "Mamba recurrent"}


class ProfileError(ValueError):
    """A profiler setting that cannot work; the message says what to do."""


def option(default, doc):
    return field(default=default, metadata={"help": doc})


@dataclass(frozen=True)
class ProfileConfig:
    out: str = option("results", "folder for the json / md / png files")
    quick: bool = option(False, "tiny sweep (K 20 and 100, batch 1, few repeats) that ends within "
                                "a minute on a CPU; replaces the sweep options below")
    device: str = option("auto", "auto | cpu | cuda")
    threads: int = option(0, "torch CPU threads (0: torch's default)")
    state_dim: int = option(17, "state size of the profiled models (HalfCheetah, Walker2d)")
    act_dim: int = option(6, "action size of the profiled models")
    latency_contexts: tuple = option((20, 100, 1000), "contexts K (env steps) of the latency sweep")
    latency_batches: tuple = option((1, 100), "batch sizes (parallel envs) of the latency sweep")
    train_contexts: tuple = option((20, 50, 100, 200, 500, 1000, 2000, 4000, 8000),
                                   "contexts K of the training sweep, increasing")
    train_batch: int = option(16, "batch size of the training sweep")
    scan_shapes: str = option("64x60x256x16,4x3000x256x16", "selective-scan shapes BxLxDxN, "
                              "comma separated (a K=20 and a K=1000 window of the default Mamba)")
    warmup: int = option(3, "untimed calls before a timing (fewer once budget-s is spent)")
    repeats: int = option(20, "timed calls per measurement (fewer once budget-s is spent)")
    budget_s: float = option(10.0, "seconds per measurement after which no more calls start "
                                   "(at least one warm-up and one timed call always run)")
    time_cap_s: float = option(60.0, "a model's sweep stops after a call slower than this")
    memory_cap_gb: float = option(4.0, "CPU: memory a measurement may add (RLIMIT_DATA above what "
                                       "the process holds); beyond it, it is out of memory")
    seed: int = option(0, "seed of the random weights and inputs")


QUICK = dict(latency_contexts=(20, 100), latency_batches=(1,), train_contexts=(20, 40),
             train_batch=4, scan_shapes="8x60x64x16", warmup=1, repeats=5, budget_s=1.0)


# ----------------------------------------------------------------------------- timing, memory

class Timing:
    """Warm-up calls, then timed calls of one function. Each phase ends at its count or once
    cfg.budget_s is spent in it (after at least one call); a call slower than cfg.time_cap_s
    ends the timing."""

    def __init__(self, cfg, warmup=None, repeats=None):
        self.cfg, self.times, self.over_cap = cfg, [], False
        self.counts = [cfg.warmup if warmup is None else warmup,
                       cfg.repeats if repeats is None else repeats]
        self.warm = []

    @property
    def done(self):
        return self.over_cap or self._phase_done(self.times, self.counts[1])

    def _phase_done(self, times, count):
        return len(times) >= max(count, 1) or (times and sum(times) >= self.cfg.budget_s)

    def record(self, seconds):
        phase = self.warm if not self._phase_done(self.warm, self.counts[0]) else self.times
        phase.append(seconds)
        self.over_cap = seconds > self.cfg.time_cap_s

    def summary(self):
        """-> median, quartiles, min/max (ms) and the number of timed calls."""
        ms = np.asarray(self.times or self.warm) * 1e3  # a warm-up over the cap is all there is
        q25, median, q75 = np.percentile(ms, [25, 50, 75])
        return dict(median_ms=float(median), p25_ms=float(q25), p75_ms=float(q75),
                    min_ms=float(ms.min()), max_ms=float(ms.max()), n=int(ms.size))


def timed_call(fn, sync):
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def time_calls(fn, sync, cfg, warmup=None, repeats=None):
    timing = Timing(cfg, warmup, repeats)
    while not timing.done:
        timing.record(timed_call(fn, sync))
    return timing.summary()


def _proc_status_mb(key):
    """A field of /proc/self/status (VmRSS, VmData, ...) in MB on Linux, None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) / 1024
    except (OSError, StopIteration):
        return None


def peak_rss_mb():
    """Peak resident memory of this process (since the last reset_peak_rss) in MB. Linux: VmHWM,
    not ru_maxrss, which keeps the parent's peak across fork + exec and ignores the reset."""
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, kB on Linux
    return _proc_status_mb("VmHWM") or \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def reset_peak_rss():
    """Linux: make the peak-RSS mark the current RSS. False where that is impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def give_back_freed_memory():
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc keeps freed heap memory otherwise
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def memory_cap(cap_gb):
    """CPU allocations beyond cap_gb more than the process's data now fail (Linux RLIMIT_DATA):
    torch then raises "can't allocate memory", which `guarded` reports as out of memory."""
    data_mb = _proc_status_mb("VmData")
    if resource is None or data_mb is None:
        yield
        return
    previous = resource.getrlimit(resource.RLIMIT_DATA)
    limit = int((data_mb + cap_gb * 1024) * 2**20)
    if previous[1] != resource.RLIM_INFINITY:
        limit = min(limit, previous[1])
    resource.setrlimit(resource.RLIMIT_DATA, (limit, previous[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, previous)


def out_of_memory_note(error):
    """The first line of an out-of-memory error; any other error is raised again."""
    message = str(error)
    if not (isinstance(error, MemoryError) or "out of memory" in message.lower()
            or "can't allocate memory" in message.lower()):
        raise error
    return message.splitlines()[0][:160] if message else "MemoryError"


def cap_for(cfg, device):
    return memory_cap(cfg.memory_cap_gb) if device.type == "cpu" else contextlib.nullcontext()


def guarded(measure, cfg, device):
    """measure() under the memory cap (CPU) -> its dict with status "ok", or status "oom"."""
    try:
        with cap_for(cfg, device):
            return dict(measure(), status="ok")
    except (RuntimeError, MemoryError) as e:
        return dict(status="oom", note=out_of_memory_note(e))
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- measurements

def make_model(cfg, model, K, device):
    config = DecisionConfig(state_dim=cfg.state_dim, act_dim=cfg.act_dim, backbone=MODELS[model],
                            context_len=K)
    return DecisionModel(config).to(device)


def make_batch(cfg, B, K, device, generator):
    """Random model inputs for B windows of K env steps (all real, no padding)."""
    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(device)
    return dict(states=randn(B, K, cfg.state_dim),                       # (B, K, obs)
                actions=randn(B, K, cfg.act_dim).tanh(),                 # (B, K, act)
                returns_to_go=randn(B, K, 1),                            # (B, K, 1)
                timesteps=torch.arange(K, device=device).repeat(B, 1),   # (B, K)
                mask=torch.ones(B, K, device=device))                    # (B, K)


def latency_call(cfg, model_name, mode, K, B, device):
    """-> a function doing one env step's model work at batch B with K env steps of history;
    call it (and this) under torch.inference_mode()."""
    model = make_model(cfg, model_name, K, device).eval()
    batch = make_batch(cfg, B, K, device, torch.Generator().manual_seed(cfg.seed))
    if mode == "window":  # re-encode the whole K-step window, read the newest action
        return lambda: model(**batch, last_only=True)[0][:, -1]
    cache, position = model.init_cache(B, device), 0

    def env_step():  # R_t, s_t in -> a_t out; then a_t in
        nonlocal cache, position
        t = torch.full((B,), position, device=device)                    # (B,)
        i = min(position, K - 1)
        action, cache = model.step(batch["returns_to_go"][:, i], batch["states"][:, i], t, cache)
        cache = model.step_action(action, t, cache)
        position += 1
    for _ in range(K):  # feed K env steps first: the timed steps are at position >= K
        env_step()
    return env_step


def measure_train_step(cfg, model_name, K, device, sync, base_mb):
    """Time of one training step (forward, backward, clip, AdamW) and the peak memory while
    taking it; base_mb is the memory in use before the model was built."""
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    model = make_model(cfg, model_name, K, device).train()
    optimizer = torch.optim.AdamW(model.optim_groups(1e-4), lr=1e-4)
    batch = make_batch(cfg, cfg.train_batch, K, device, generator)
    targets = torch.rand(cfg.train_batch, K, cfg.act_dim, generator=generator).to(device) * 2 - 1

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        _, loss = model(**batch, targets=targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        optimizer.step()
    result = time_calls(train_step, sync, cfg, warmup=min(cfg.warmup, 1),
                        repeats=min(cfg.repeats, 5))
    peak_mb = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
               else peak_rss_mb())
    return dict(result, base_mb=base_mb, peak_mb=peak_mb, step_mb=peak_mb - base_mb)


def measure_scan(cfg, backend, shape, direction, device, sync):
    """Selective-scan throughput at shape (B, L, D, N), forward or forward+backward."""
    B, L, D, N = shape
    g = torch.Generator().manual_seed(cfg.seed)
    def rand(*size, scale=1.0):
        return (torch.randn(*size, generator=g) * scale).to(device).requires_grad_()
    u, delta, z = rand(B, L, D), rand(B, L, D, scale=0.5), rand(B, L, D)  # (B, L, D)
    Bm, Cm = rand(B, L, N), rand(B, L, N)                               # (B, L, N)
    A = (-torch.rand(D, N, generator=g) - 0.5).to(device).requires_grad_()  # (D, N), negative
    Dv, bias = rand(D), rand(D, scale=0.1)                              # (D,)
    inputs, grad_y = (u, delta, A, Bm, Cm, Dv, z, bias), torch.randn(B, L, D, generator=g).to(device)

    def scan():
        return ssm.selective_scan(*inputs, delta_softplus=True, backend=backend)
    if direction == "forward":
        with torch.no_grad():
            stats = time_calls(scan, sync, cfg)
    else:
        stats = time_calls(lambda: torch.autograd.grad(scan(), inputs, grad_y), sync, cfg)
    return dict(stats, melem_per_s=B * L * D / stats["median_ms"] / 1e3)


# ----------------------------------------------------------------------------- the sweeps

def sweep_latency(cfg, device, sync, bar):
    """Per batch size, every (model, mode, K) is timed in turns: a round calls each unfinished
    one once, so that load from other processes falls on all of them alike. One leaves the
    rotation when its Timing is done or when it runs out of memory."""
    rows = []
    for B in cfg.latency_batches:
        keys = [(m, mode, K) for K in cfg.latency_contexts for m, mode in LATENCY_MODES]
        calls, timings, failed = {}, {}, {}
        with torch.inference_mode(), cap_for(cfg, device):
            for key in keys:
                try:
                    calls[key], timings[key] = latency_call(cfg, *key, B, device), Timing(cfg)
                except (RuntimeError, MemoryError) as e:
                    failed[key] = out_of_memory_note(e)
                    bar.update()
            while any(not t.done for t in timings.values()):
                for key, timing in timings.items():
                    if key in failed or timing.done:
                        continue
                    try:
                        # One untimed call first: the cell before may have flushed the CPU caches
                        # (a K=1000 window streams far more memory than a recurrent step
                        # touches), and every cell is to be timed warm, as in a rollout loop.
                        calls[key]()
                        sync()
                        timing.record(timed_call(calls[key], sync))
                    except (RuntimeError, MemoryError) as e:
                        failed[key] = out_of_memory_note(e)
                        timing.over_cap = True  # leaves the rotation
                    if timing.done:
                        bar.update()
        for key in keys:
            row = dict(model=key[0], mode=key[1], K=key[2], batch=B)
            row.update(dict(status="oom", note=failed[key]) if key in failed
                       else dict(timings[key].summary(), status="ok"))
            rows.append(row)
        del calls
        gc.collect()
    return rows


def train_sweep_of(cfg, model_name, device, sync, base_mb, emit):
    """Increasing contexts until one runs out of memory or passes the time cap."""
    for K in cfg.train_contexts:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        # Linux resets the peak-RSS mark per context; elsewhere the peak is over this and the
        # smaller contexts, the same thing while memory grows with K.
        peak_reset = device.type == "cuda" or reset_peak_rss()
        row = guarded(lambda: measure_train_step(cfg, model_name, K, device, sync, base_mb),
                      cfg, device)
        emit(dict(row, peak_reset=peak_reset))
        if row["status"] != "ok" or row["median_ms"] > 1e3 * cfg.time_cap_s:
            return


def train_child_main(spec):
    """The measuring child (CPU): one model's training sweep, one JSON line per context."""
    spec = json.loads(spec)
    model_name = spec.pop("model")
    cfg = ProfileConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cpu = torch.device("cpu")
    # A process's first step loads kernels and thread pools (~150-200 MB) that belong to no
    # context, so a throwaway step comes first; the base is the RSS after it, freed memory
    # given back. Each context's memory is its peak RSS above that base.
    measure_train_step(dataclasses.replace(cfg, warmup=0, repeats=1), model_name,
                       cfg.train_contexts[0], cpu, lambda: None, 0.0)
    give_back_freed_memory()
    base_mb = _proc_status_mb("VmRSS") or peak_rss_mb()
    train_sweep_of(cfg, model_name, cpu, lambda: None, base_mb,
                   lambda row: print(json.dumps(row), flush=True))


def run_train_child(cfg, model_name):
    """CPU: one model's training sweep in a fresh process, which measures its own peak RSS."""
    spec = json.dumps(dict(dataclasses.asdict(cfg), model=model_name))
    timeout = len(cfg.train_contexts) * (3 * cfg.time_cap_s + 60)
    try:
        done = subprocess.run([sys.executable, os.path.abspath(__file__), "--_train-child", spec],
                              capture_output=True, text=True, timeout=timeout,
                              cwd=os.path.dirname(os.path.abspath(__file__)))
        stdout, status = done.stdout, "ok" if done.returncode == 0 else "error"
        failure = (done.stderr.strip().splitlines() or ["no message"])[-1][:300]
    except subprocess.TimeoutExpired as e:
        stdout, status, failure = e.stdout or "", "time", f"killed after {timeout:.0f} s"
        stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
    rows = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    if status != "ok":  # the context it was working on
        rows.append(dict(status=status, note=failure))
    return rows


def sweep_train(cfg, device, sync, bar):
    rows, stops = [], {}
    for model_name in MODELS:
        if device.type == "cpu":
            measured = run_train_child(cfg, model_name)
        else:
            measured = []
            train_sweep_of(cfg, model_name, device, sync,
                           torch.cuda.memory_allocated(device) / 2**20, measured.append)
        for K, row in zip(cfg.train_contexts, measured):
            rows.append(dict(row, model=model_name, K=K, batch=cfg.train_batch))
            if row["status"] != "ok":
                stops[model_name] = f"{row['status']} at K={K}" + (
                    f" (memory cap {cfg.memory_cap_gb:g} GB)" if row["status"] == "oom" else "")
            elif row["median_ms"] > 1e3 * cfg.time_cap_s:
                stops[model_name] = f"a step took over the {cfg.time_cap_s:g} s cap at K={K}"
        rows += [dict(model=model_name, K=K, batch=cfg.train_batch, status="skipped")
                 for K in cfg.train_contexts[len(measured):]]
        bar.update(len(cfg.train_contexts))
    return rows, stops


def scan_backends(device):
    """The scan paths timed on this device: the reference loop, the PyTorch scan, and the
    compiled one where it runs (the Triton kernel on CUDA, the C kernel on the CPU)."""
    if device.type == "cuda":
        return ["ref", "torch"] + (["triton"] if ssm._load_triton_scan()[0] is not None else [])
    return ["ref", "torch"] + (["c"] if ssm._load_c_scan()[0] is not None else [])


def sweep_scan(cfg, device, sync, bar):
    backends = scan_backends(device)
    rows = []
    for shape in parse_shapes(cfg.scan_shapes):
        for backend in backends:
            for direction in ("forward", "forward+backward"):
                rows.append(dict(guarded(lambda: measure_scan(cfg, backend, shape, direction,
                                                              device, sync), cfg, device),
                                 backend=backend, shape=list(shape), direction=direction))
            bar.update()
    return rows


# ----------------------------------------------------------------------------- verdicts, outputs

def loglog_slope(points):
    """Least-squares slope of log(memory) against log(K): 1 = linear growth, 2 = quadratic."""
    if len(points) < 2:
        return None
    K, y = zip(*points)
    return float(np.polyfit(np.log(K), np.log(y), 1)[0])


def judge_targets(latency, train, stops):
    """The issue's performance targets, judged only from what was measured here."""
    ok = {(r["model"], r["mode"], r["K"], r["batch"]): r for r in latency if r["status"] == "ok"}
    Ks, targets = sorted({r["K"] for r in latency}), []
    lo, hi = Ks[0], Ks[-1]

    def ratio(key_a, key_b, word):  # a / b by median (the verdict), and by minimum
        a, b = ok[key_a], ok[key_b]
        return a["median_ms"] / b["median_ms"], (
            f"{a['median_ms'] / b['median_ms']:.2f}x by median, "
            f"{a['min_ms'] / b['min_ms']:.2f}x by minimum{word}")
    for B in sorted({r["batch"] for r in latency}):
        rec_lo, rec_hi = ("mamba", "recurrent", lo, B), ("mamba", "recurrent", hi, B)
        dt_lo, dt_hi = ("dt", "window", lo, B), ("dt", "window", hi, B)
        if hi > lo and rec_lo in ok and rec_hi in ok:
            x, text = ratio(rec_hi, rec_lo, " (target <= 1.3x)")
            targets.append(dict(name="recurrent flat", passed=x <= 1.3, detail=(
                f"batch {B}: Mamba recurrent per env step at K={hi} / K={lo} = {text}")))
        if hi > lo and dt_lo in ok and dt_hi in ok:
            x, text = ratio(dt_hi, dt_lo, "")
            targets.append(dict(name="DT grows", passed=x > 1.3, detail=(
                f"batch {B}: DT window per env step at K={hi} / K={lo} = {text}")))
        if ("dt", "window", 20, B) in ok and ("mamba", "recurrent", 20, B) in ok:
            x, text = ratio(("dt", "window", 20, B), ("mamba", "recurrent", 20, B), "")
            targets.append(dict(name="recurrent faster at K=20", passed=x > 1, detail=(
                f"batch {B}: DT window / Mamba recurrent per env step at K=20 = {text} "
                f"(Mamba recurrent {ok['mamba', 'recurrent', 20, B]['median_ms']:.3g} ms, DT "
                f"{ok['dt', 'window', 20, B]['median_ms']:.3g} ms)")))
    slopes = {m: loglog_slope([(r["K"], r["step_mb"]) for r in train if r["model"] == m and
                               r["status"] == "ok" and r["K"] >= 100 and r["step_mb"] > 0])
              for m in MODELS}
    if None not in slopes.values():
        targets.append(dict(name="memory growth", passed=slopes["mamba"] <= 1.2 < slopes["dt"],
                            detail=f"log-log slope of training memory over K >= 100: Mamba "
                                   f"{slopes['mamba']:.2f}, DT {slopes['dt']:.2f} (1 linear, 2 "
                                   "quadratic; target: Mamba <= 1.2 < DT)"))
    tried = [r["K"] for r in train if r["model"] == "dt" and r["status"] == "ok"]
    targets.append(dict(name="DT runs out", passed=None, detail=(
        f"DT training: {stops['dt']}" if "dt" in stops else f"DT trained at every K tried "
        f"(largest {max(tried)})" if tried else "DT training was not measured")))
    return targets


def markdown(r):
    def cell(row):
        return (f"{row['median_ms']:.3g} ({row['p25_ms']:.3g}-{row['p75_ms']:.3g})"
                if row["status"] == "ok" else row["status"])
    Ks = sorted({row["K"] for row in r["latency"]})
    load = [x for x in r["load_average"].values() if x is not None]
    busy = bool(load) and max(load) > r["threads"]
    lines = [f"## Runtime and memory on {r['device_name']}", "",
             f"Device `{r['device']}`, {r['threads']} torch threads, {r['cores']} cores, load "
             f"average {r['load_average']['before']} before / {r['load_average']['after']} "
             "after" + (" (above the threads used: other processes shared the CPU, so timings "
                        "are noisy; the minimum is the least disturbed figure)" if busy else "")
             + "; " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()) + ". Mamba "
             f"scan backend (training and the latency table): {r.get('scan_backend', 'torch')}. "
             "Parameters "
             f"without the timestep table: DT {r['parameters']['dt']:,}, Mamba "
             f"{r['parameters']['mamba']:,}. " + ("Quick sweep. " if r["quick"] else "") +
             "Times: median (25th-75th percentile) in ms; oom: out of memory (CPU cap "
             f"{r['settings']['memory_cap_gb']:g} GB); skipped: not tried, a smaller K already "
             "ran out or passed the time cap.", "",
             "### Inference latency per env step (ms)", "",
             "| model | batch | " + " | ".join(f"K={K}" for K in Ks) + " |",
             "|---|---|" + "---|" * len(Ks)]
    for B in sorted({row["batch"] for row in r["latency"]}):
        for key, label in LATENCY_MODES.items():
            by_K = {row["K"]: row for row in r["latency"]
                    if (row["model"], row["mode"], row["batch"]) == (*key, B)}
            lines.append(f"| {label} | {B} | " + " | ".join(cell(by_K[K]) for K in Ks) + " |")
    lines += ["", f"### Training step, batch {r['settings']['train_batch']}: time (ms) and peak "
              "memory above the process's base (MB)", "", "Memory: " + (
                  "torch.cuda.max_memory_allocated during the steps minus the memory allocated "
                  "before the model was built." if r["device"].startswith("cuda") else
                  "peak resident memory of the measuring child process during the steps minus "
                  "its resident memory after one throwaway step (imports, kernels, thread pools)."),
              "",
              "| K | DT step | DT memory | Mamba step | Mamba memory |", "|---|---|---|---|---|"]
    for K in sorted({row["K"] for row in r["train"]}):
        rows = {row["model"]: row for row in r["train"] if row["K"] == K}
        lines.append(f"| {K} | " + " | ".join(cell(rows[m]) + " | " + (
            f"{rows[m]['step_mb']:.0f}" if rows[m]["status"] == "ok" else "-") for m in MODELS)
            + " |")
    lines += [""] + [f"- {m} stopped: {why}" for m, why in r["train_stops"].items()]
    lines += ["", "### Selective scan throughput (million elements B*L*D per second)", "",
              "| shape BxLxDxN | backend | forward | forward+backward |", "|---|---|---|---|"]
    scans = {(tuple(row["shape"]), row["backend"], row["direction"]): row for row in r["scan"]}
    for shape, backend in dict.fromkeys(key[:2] for key in scans):
        lines.append(f"| {'x'.join(map(str, shape))} | {backend} | " + " | ".join(
            f"{row['melem_per_s']:.3g}" if row["status"] == "ok" else row["status"]
            for row in (scans[shape, backend, d] for d in ("forward", "forward+backward"))) + " |")
    lines += ["", "### Performance targets", ""] + [
        f"- {({True: 'PASS', False: 'FAIL'}).get(t['passed'], 'INFO')}: {t['name']}: {t['detail']}"
        for t in r["targets"]]
    return "\n".join(lines) + "\n"


def plot(r, prefix):
    """-latency.png: ms per env step vs K, a panel per batch; -memory.png: training memory and
    step time vs K. Log-log axes: linear growth is a slope-1 line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def axes_done(ax, Ks, title, ylabel):
        ax.set(xscale="log", yscale="log", title=title, ylabel=ylabel, xlabel="context K")
        ax.set_xticks(Ks, [str(K) for K in Ks])
        ax.tick_params(axis="x", which="minor", bottom=False)
        ax.legend(fontsize=8)
    batches = sorted({row["batch"] for row in r["latency"]})
    fig, axes = plt.subplots(1, len(batches), figsize=(5 * len(batches), 4), squeeze=False)
    for ax, B in zip(axes[0], batches):
        for (key, label), fmt in zip(LATENCY_MODES.items(), ("o-", "s--", "^-")):
            rows = [row for row in r["latency"] if (row["model"], row["mode"], row["batch"])
                    == (*key, B) and row["status"] == "ok"]
            ax.errorbar([row["K"] for row in rows], [row["median_ms"] for row in rows], fmt=fmt,
                        yerr=[[row["median_ms"] - row["p25_ms"] for row in rows],
                              [row["p75_ms"] - row["median_ms"] for row in rows]],
                        label=label, capsize=3)
        axes_done(ax, sorted({row["K"] for row in r["latency"]}), f"inference, batch {B}",
                  "ms per env step")
    fig.suptitle(r["device_name"])
    fig.tight_layout()
    fig.savefig(f"{prefix}-latency.png", dpi=110)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for model, color in zip(MODELS, ("C0", "C1")):
        rows = [row for row in r["train"] if row["model"] == model and row["status"] == "ok"]
        for ax, key in zip(axes, ("step_mb", "median_ms")):
            ax.plot([row["K"] for row in rows], [max(row[key], 1e-3) for row in rows], "o-",
                    color=color, label=LATENCY_MODES[model, "window"].split()[0])
        for row in [row for row in r["train"] if row["model"] == model and row["status"]
                    not in ("ok", "skipped")][:1]:
            axes[0].axvline(row["K"], color=color, ls=":", label=f"{row['status']} at {row['K']}")
    Ks = sorted({row["K"] for row in r["train"]})
    batch = r["settings"]["train_batch"]
    axes_done(axes[0], Ks, f"training step memory, batch {batch}", "peak above base (MB)")
    axes_done(axes[1], Ks, f"training step time, batch {batch}", "ms per step")
    fig.suptitle(r["device_name"])
    fig.tight_layout()
    fig.savefig(f"{prefix}-memory.png", dpi=110)
    plt.close("all")


def describe_device(device):
    """-> (slug for file names such as cpu-amd-epyc, human-readable name)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    words = re.sub(r"\(.*?\)|\bcpu\b|processor|\d+-core", " ", name.lower())
    words = re.sub(r"[^a-z0-9]+", "-", words).strip("-").split("-")
    return f"{device.type}-" + "-".join(words[:3 if device.type == "cpu" else 6]), name


def load_average():
    """1-minute load average (other processes competing for the CPU), None where unknown."""
    with contextlib.suppress(OSError, AttributeError):
        return round(os.getloadavg()[0], 2)
    return None


def versions():
    found = dict(python=platform.python_version(), torch=torch.__version__, numpy=np.__version__)
    with contextlib.suppress(ImportError):
        import triton
        found["triton"] = triton.__version__
    return found


def profile(cfg: ProfileConfig) -> dict:
    """Run every sweep, write the json / md / png files, return the results."""
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ProfileError(f"--device must be auto, cpu or cuda, not {cfg.device!r}.")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ProfileError("--device cuda was asked for but torch sees no CUDA device; use "
                           "--device cpu.")
    if list(cfg.train_contexts) != sorted(cfg.train_contexts) or not cfg.latency_contexts:
        raise ProfileError("--train-contexts must be increasing and --latency-contexts non-empty; "
                           "fix the lists.")
    shapes = parse_shapes(cfg.scan_shapes)
    cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    slug, name = describe_device(device)
    start, load_before = time.time(), load_average()
    total = len(cfg.latency_contexts) * len(cfg.latency_batches) * len(LATENCY_MODES) \
        + 2 * len(cfg.train_contexts) + len(shapes) * len(scan_backends(device))
    with tqdm(total=total, desc=f"profile on {slug}") as bar:
        latency = sweep_latency(cfg, device, sync, bar)
        train, stops = sweep_train(cfg, device, sync, bar)
        scan = sweep_scan(cfg, device, sync, bar)
    results = dict(
        device=slug, device_name=name, versions=versions(), threads=torch.get_num_threads(),
        scan_backend=ssm.default_scan_backend(device),
        quick=cfg.quick, settings=dataclasses.asdict(cfg), date=time.strftime("%Y-%m-%d %H:%M"),
        cores=os.cpu_count(), load_average=dict(before=load_before, after=load_average()),
        command=shlex.join(["python", "profile.py", *sys.argv[1:]]),
        parameters={m: count_parameters(make_model(cfg, m, 20, "cpu")) for m in MODELS},
        latency=latency, train=train, train_stops=stops, scan=scan,
        targets=judge_targets(latency, train, stops), wall_s=round(time.time() - start, 1))
    os.makedirs(cfg.out, exist_ok=True)
    prefix = os.path.join(cfg.out, f"profile-{slug}")
    with open(prefix + ".json", "w") as f:
        json.dump(results, f, indent=1)
    with open(prefix + ".md", "w") as f:
        f.write(markdown(results))
    plot(results, prefix)
    return results


# ----------------------------------------------------------------------------- command line

def parse_ints(text):
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def parse_shapes(text):
    shapes = [s.lower().split("x") for s in text.split(",") if s.strip()]
    if not shapes or any(len(s) != 4 or not all(x.isdigit() for x in s) for s in shapes):
        raise ProfileError(f"--scan-shapes must look like 64x60x256x16,4x3000x256x16, not {text!r}.")
    return [tuple(int(x) for x in s) for s in shapes]


def parse_args(argv=None):
    """-> (ProfileConfig, the internal --_train-child spec or None)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in dataclasses.fields(ProfileConfig):
        flag, help_ = "--" + f.name.replace("_", "-"), f.metadata["help"]
        if f.type is bool:
            parser.add_argument(flag, action="store_true", help=help_)
        else:
            shown = ",".join(map(str, f.default)) if f.type is tuple else f.default
            parser.add_argument(flag, type=parse_ints if f.type is tuple else f.type,
                                default=f.default, help=f"{help_} (default {shown})")
    parser.add_argument("--_train-child", help=argparse.SUPPRESS)  # internal: the CPU child
    args = vars(parser.parse_args(argv))
    child = args.pop("_train_child")
    cfg = ProfileConfig(**args)
    return (dataclasses.replace(cfg, **QUICK) if cfg.quick else cfg), child


def main(argv=None):
    cfg, child = parse_args(argv)
    if child is not None:
        return train_child_main(child)
    try:
        results = profile(cfg)
    except ProfileError as e:
        sys.exit(f"error: {e}")
    print(markdown(results))
    print(f"wrote {os.path.join(cfg.out, 'profile-' + results['device'])}.json, .md, "
          f"-latency.png, -memory.png in {results['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
