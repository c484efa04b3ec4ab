"""Profile the Decision Transformer against the Decision Mamba: speed and memory.

Both models at dt.DecisionConfig's defaults (matched parameter counts), HalfCheetah's sizes
(--state-dim 11 --act-dim 3: Hopper's), one device. The measurements (--sweeps):
  latency  per env step vs context K, batch 1 and 100: DT and Mamba re-encoding a K-step window,
           the Mamba acting recurrently (step + step_action, at episode position >= K);
  train    training step time and peak memory vs K until a memory or time cap stops a model
           (CPU: peak RSS of a child process per model; CUDA: max_memory_allocated);
  compare  one training step at batch 64, K 20: DT against the Mamba on each scan backend;
  scan     the selective scan: reference loop, PyTorch scan, C (CPU) or Triton (CUDA) per shape
           and dtype: time, speed-ups, bandwidth of the unavoidable traffic vs the GPU's peak.
Writes profile-<device>.json, .md, -latency.png, -memory.png into --out: results/, or
runs/profile-quick/ for --quick (never committed files). report.py embeds the .md and plots.

`time_cases` is the project's one timing harness (benchmarks/ loads it from here): warm-up, then
the cases timed in turns so that other processes on a shared CPU disturb them alike; median,
quartiles, min/max in ms, and CPU time. CUDA: triton.testing.do_bench (CUDA events without
triton).

Run: python profile.py [--quick] [--out DIR] [--device auto]   (--help lists every option)

The file's name is the standard library's `profile`, which cProfile (so torch._dynamo) imports:
with the repo root first on sys.path that import lands here. Imported as "profile", the file
puts the standard library's module in sys.modules in its place (the import system returns that)
and imports neither torch nor the models.

Glossary: B batch, K context in env steps, T = 3K tokens, L scan length, D scan channels
(d_inner), N SSM state size per channel.
"""
import contextlib
import ctypes
import dataclasses
import functools
import gc
import importlib.util
import itertools
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import sysconfig
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from cli import atomic_write, flag_name, given_flags, option, write_json  # standard library only

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
    import torch.nn.functional as F
    from tqdm import tqdm

    import ssm
    from dt import DecisionConfig, DecisionModel, count_parameters

MODELS = {"dt": "gpt", "mamba": "mamba"}  # model name -> DecisionConfig.backbone
LATENCY_MODES = {("dt", "window"): "DT window", ("mamba", "window"): "Mamba window",
                 ("mamba", "recurrent"): "Mamba recurrent"}
SWEEPS = ("latency", "train", "compare", "scan")
PEAK_TBPS = {"h200": 4.8, "h100": 3.35, "a100": 2.0}  # HBM peak by GPU name (SXM parts)
# The issues' latency targets per batch: (name, numerator, denominator, test, threshold) on a ratio
# of median times per env step; keys (model, mode, K), "lo" / "hi": the smallest / largest K.
LATENCY_TARGETS = (
    ("recurrent flat", ("mamba", "recurrent", "hi"), ("mamba", "recurrent", "lo"), "<=", 1.3),
    ("DT grows", ("dt", "window", "hi"), ("dt", "window", "lo"), ">", 1.3),
    ("recurrent faster at K=20", ("dt", "window", 20), ("mamba", "recurrent", 20), ">", 1),
)


class ProfileError(ValueError):
    """A profiler setting that cannot work; the message says what to do."""


def parse_ints(text):  # a ValueError becomes argparse's "invalid parse_ints value"
    return tuple(int(x) for x in text.split(",") if x.strip())


def parse_words(text):
    return tuple(x.strip() for x in text.split(",") if x.strip())


@dataclass(frozen=True)
class ProfileConfig:
    out: str = option(None, "folder for the json / md / png files (default results/, and "
                            "runs/profile-quick/ for --quick)", type=str)
    quick: bool = option(False, "tiny sweep (K 20 and 100, batch 1, few repeats) that ends within "
                                "a minute on a CPU; sets the options below unless typed too")
    sweeps: tuple = option(SWEEPS, "measurements to run: latency, train, compare, scan",
                           type=parse_words)
    device: str = option("auto", "auto | cpu | cuda", choices=("auto", "cpu", "cuda"))
    threads: int = option(0, "torch CPU threads (0: torch's default)")
    state_dim: int = option(17, "state size of the profiled models (HalfCheetah, Walker2d)")
    act_dim: int = option(6, "action size of the profiled models")
    latency_contexts: tuple = option((20, 100, 1000), "contexts K (env steps) of the latency "
                                     "sweep, comma separated", type=parse_ints)
    latency_batches: tuple = option((1, 100), "batch sizes (parallel envs) of the latency sweep",
                                    type=parse_ints)
    train_contexts: tuple = option((20, 50, 100, 200, 500, 1000, 2000, 4000, 8000),
                                   "contexts K of the training sweep, increasing", type=parse_ints)
    train_batch: int = option(16, "batch size of the training sweep")
    compare_batch: int = option(64, "batch size of the compare sweep")
    compare_context: int = option(20, "context K of the compare sweep")
    scan_shapes: str = option("64x60x256x16,4x3000x256x16", "selective-scan shapes BxLxDxN, "
                              "comma separated (a K=20 and a K=1000 window of the default Mamba)")
    scan_dtypes: tuple = option(("float32",), "input dtypes of the scan sweep (float32, "
                                "bfloat16, float16); the state is fp32 anyway", type=parse_words)
    scan_backends: tuple = option((), "scan paths to time (default: ref, torch and c or triton "
                                  "where it runs; ref-precomputed: the reference loop in the "
                                  "official repository's layout, slow)", type=parse_words)
    peak_tbps: float = option(0.0, "GPU memory peak in TB/s for the scan's bandwidth (0: by the "
                                   "GPU's name: H200 4.8, H100 3.35, A100 2.0, others none)")
    warmup: int = option(3, "untimed calls before a timing (fewer once budget-s is spent)")
    repeats: int = option(20, "timed calls per measurement (fewer once budget-s is spent)")
    budget_s: float = option(10.0, "seconds per measurement after which no more calls start "
                                   "(at least one timed call always runs)")
    time_cap_s: float = option(60.0, "a model's sweep stops after a call slower than this")
    memory_cap_gb: float = option(4.0, "CPU: memory a measurement may add (RLIMIT_DATA above what "
                                       "the process holds); beyond it, it is out of memory")
    seed: int = option(0, "seed of the random weights and inputs")


QUICK = dict(latency_contexts=(20, 100), latency_batches=(1,), train_contexts=(20, 40),
             train_batch=4, compare_batch=4, scan_shapes="8x60x64x16", warmup=1, repeats=5,
             budget_s=1.0)


# ----------------------------------------------------------------------------- the timing harness

def summary(seconds, cpu_seconds=()):
    """Timed calls -> median, quartiles, min/max and count in ms (+ median CPU time)."""
    ms = np.asarray(seconds) * 1e3
    q25, median, q75 = np.percentile(ms, [25, 50, 75])
    cpu = {"cpu_ms": float(np.median(cpu_seconds) * 1e3)} if len(cpu_seconds) else {}
    return dict(median_ms=float(median), p25_ms=float(q25), p75_ms=float(q75), **cpu,
                min_ms=float(ms.min()), max_ms=float(ms.max()), n=int(ms.size), status="ok")


def clock(fn, cuda):
    """(wall s, this process's CPU s) of one call; on CUDA the time between two CUDA events."""
    cpu, wall = time.process_time(), time.perf_counter()
    if not cuda:
        fn()
        return time.perf_counter() - wall, time.process_time() - cpu
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3, time.process_time() - cpu


def time_cases(cases, device="cpu", warmup=3, repeats=20, budget_s=math.inf, cap_s=math.inf,
               rewarm=False):
    """Time several cases in one process: {name: fn} -> {name: summary() or status "oom"}.

    Round-robin: each round calls every unfinished case once. A case's warm-up ends after
    `warmup` calls or budget_s, its timing after `repeats` calls or budget_s (one at least), or
    at a call slower than cap_s. rewarm: an untimed call before each timed one (the case before
    may have flushed the caches). CUDA with triton: each case through triton.testing.do_bench
    (its 25 ms warm-up, then timed calls for 100 ms or budget_s, L2 flushed between calls). A
    case that runs out of memory gets {"status": "oom", "note": ...}; other errors propagate."""
    cuda, do_bench = torch.device(device).type == "cuda", None
    if cuda:
        with contextlib.suppress(ImportError):
            from triton.testing import do_bench
    if do_bench:
        return {name: oom_guard(lambda: summary(np.asarray(do_bench(
            fn, warmup=25, rep=min(100, 1e3 * budget_s), return_mode="all")) / 1e3))
            for name, fn in cases.items()}
    (warm, walls, cpus), done = ({n: [] for n in cases} for _ in range(3)), {}
    while pending := [n for n in cases if n not in done]:
        for name in pending:
            try:
                if rewarm:
                    cases[name]()
                wall, cpu = clock(cases[name], cuda)
            except (RuntimeError, MemoryError) as e:
                done[name] = dict(status="oom", note=out_of_memory_note(e))
                continue
            if len(warm[name]) < warmup and sum(warm[name]) < budget_s:
                warm[name].append(wall)
            else:
                walls[name].append(wall)
                cpus[name].append(cpu)
            timed = walls[name]
            if wall > cap_s or (timed and (len(timed) >= repeats or sum(timed) >= budget_s)):
                done[name] = summary(timed or warm[name], cpus[name])
    return {name: done[name] for name in cases}


def oom_guard(measure):
    try:
        return measure()
    except (RuntimeError, MemoryError) as e:
        return dict(status="oom", note=out_of_memory_note(e))


def out_of_memory_note(error):
    """The first line of an out-of-memory error; any other error is raised again."""
    message = str(error)
    if not (isinstance(error, MemoryError) or "out of memory" in message.lower()
            or "can't allocate memory" in message.lower()):
        raise error
    return message.splitlines()[0][:160] if message else "MemoryError"


def ratio(a, b):
    """a's median time over b's (time_cases statistics); None unless both were measured."""
    return a["median_ms"] / b["median_ms"] if a["status"] == b["status"] == "ok" else None


# ----------------------------------------------------------------------------- memory

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
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")
        return True
    return False


@contextlib.contextmanager
def memory_cap(cfg, device):
    """CPU allocations beyond cfg.memory_cap_gb more than the process's data now fail (Linux
    RLIMIT_DATA): torch then raises "can't allocate memory", reported as out of memory. On the
    way out, what the measurement left is collected (and CUDA's cache emptied)."""
    data_mb = _proc_status_mb("VmData")
    capped = device.type == "cpu" and resource is not None and data_mb is not None
    if capped:
        previous = resource.getrlimit(resource.RLIMIT_DATA)
        limit = int((data_mb + cfg.memory_cap_gb * 1024) * 2**20)
        if previous[1] != resource.RLIM_INFINITY:
            limit = min(limit, previous[1])
        resource.setrlimit(resource.RLIMIT_DATA, (limit, previous[1]))
    try:
        yield
    finally:
        if capped:
            resource.setrlimit(resource.RLIMIT_DATA, previous)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- what is timed

def make_model(cfg, model, K, device, backend="auto"):
    config = DecisionConfig(state_dim=cfg.state_dim, act_dim=cfg.act_dim, backbone=MODELS[model],
                            context_len=K, scan_backend=backend)
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


def train_step_call(cfg, model_name, B, K, device, backend="auto"):
    """-> one training step (forward, backward, clip, AdamW) of a fresh model on a scan backend."""
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    model = make_model(cfg, model_name, K, device, backend).train()
    optimizer = torch.optim.AdamW(model.optim_groups(1e-4), lr=1e-4)
    batch = make_batch(cfg, B, K, device, generator)
    targets = torch.rand(B, K, cfg.act_dim, generator=generator).to(device) * 2 - 1

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        _, loss = model(**batch, targets=targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        optimizer.step()
    return train_step


def scan_inputs(shape, device, dtype="float32", seed=0):
    """Scan inputs (B, L, D, N) as MambaBlock passes them: activations in dtype (a name: no
    torch at definition time, see the docstring); A (S4D-real), D and delta_bias (inverse
    softplus of a dt in [1e-3, 0.1]) in fp32."""
    B, L, D, N, dtype = *shape, getattr(torch, dtype)
    g = torch.Generator().manual_seed(seed)
    def rand(*size, scale=1.0):
        return (torch.randn(*size, generator=g) * scale).to(device, dtype)
    dt = torch.exp(torch.rand(D, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    return dict(u=rand(B, L, D), delta=rand(B, L, D, scale=0.5), z=rand(B, L, D),  # (B, L, D)
                B=rand(B, L, N), C=rand(B, L, N),                                  # (B, L, N)
                A=-torch.arange(1, N + 1.0).repeat(D, 1).to(device),               # (D, N)
                D=torch.ones(D, device=device),                                    # (D,)
                delta_bias=(dt + torch.log(-torch.expm1(-dt))).to(device))         # (D,)


def scan_ref_precomputed(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True):
    """The reference loop in the official repository's layout: every exp(delta A) and
    delta B u first, then a loop indexing them; autograd through that indexing gives each
    step's slice a full-size gradient, which is what makes it slow."""
    u, delta = u.float(), delta.float() + delta_bias
    delta = F.softplus(delta) if delta_softplus else delta
    decay = torch.exp(delta.unsqueeze(-1) * A)                           # (B, L, D, N)
    drive = (delta * u).unsqueeze(-1) * B.float().unsqueeze(2)           # (B, L, D, N)
    h, ys = u.new_zeros(decay[:, 0].shape), []
    for t in range(u.shape[1]):
        h = decay[:, t] * h + drive[:, t]                                # (B, D, N)
        ys.append((h * C[:, t].float().unsqueeze(1)).sum(-1))            # (B, D)
    return ((torch.stack(ys, 1) + u * D) * F.silu(z.float())).to(z.dtype)  # (B, L, D)


def scan_fn(backend):
    if backend == "ref-precomputed":
        return scan_ref_precomputed
    return functools.partial(ssm.selective_scan, backend=backend)


def scan_call(scan, inputs, backward):
    """-> one forward (no grad) or forward + backward call of scan(**inputs, softplus on)."""
    leaves = {k: v.detach().clone().requires_grad_(backward) for k, v in inputs.items()}
    dy = torch.randn_like(leaves["u"])

    def run():
        with torch.set_grad_enabled(backward):
            y = scan(**leaves, delta_softplus=True)
            if backward:
                torch.autograd.grad(y, list(leaves.values()), dy)
    return run


def scan_bytes(shape, dtype, backward):
    """Traffic a perfect kernel cannot avoid. Forward: u, delta, z read, y written, B, C read.
    Forward + backward: also dy, u, delta, z read, du, ddelta, dz written, B, C read again, dB,
    dC written. A, D, delta_bias are negligible."""
    B, L, D, N = shape
    n_bld, n_bln = (11, 6) if backward else (4, 2)
    return (n_bld * B * L * D + n_bln * B * L * N) * torch.finfo(dtype).bits // 8


def scan_backends(cfg, device):
    """The scan paths to time: as asked, else the reference loop, the PyTorch scan and the
    compiled one where it runs (the Triton kernel on CUDA, the C kernel on the CPU)."""
    fast = "triton" if device.type == "cuda" else "c"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:  # a tiny call: C needs a compiler, Triton a GPU
            scan_fn(fast)(**scan_inputs((1, 2, 2, 2), device))
        except (ValueError, ImportError, RuntimeError):
            fast = None
    return list(cfg.scan_backends) or ["ref", "torch"] + ([fast] if fast else [])


# ----------------------------------------------------------------------------- the sweeps

def sweep_latency(cfg, device, bar):
    """Per batch size, every (model, mode, K) timed in turns, rewarmed before each timed call
    (a K=1000 window flushes the caches a recurrent step would find warm)."""
    rows = []
    for B in cfg.latency_batches:
        keys = [(m, mode, K) for K in cfg.latency_contexts for m, mode in LATENCY_MODES]
        calls, stats = {}, {}
        with torch.inference_mode(), memory_cap(cfg, device):
            for key in keys:
                try:
                    calls[key] = latency_call(cfg, *key, B, device)
                except (RuntimeError, MemoryError) as e:
                    stats[key] = dict(status="oom", note=out_of_memory_note(e))
            stats |= time_cases(calls, device, cfg.warmup, cfg.repeats, cfg.budget_s,
                                cfg.time_cap_s, rewarm=True)
            del calls
        rows += [dict(stats[key], model=key[0], mode=key[1], K=key[2], batch=B) for key in keys]
        bar.update(len(keys))
    return rows


def train_sweep_of(cfg, model_name, device, base_mb, emit):
    """A training step at increasing contexts until one runs out of memory or passes the time
    cap. Per context: the peak memory of a first step above base_mb (the memory in use before
    the model was built), then the time of a few steps. The peak comes first: do_bench's
    L2-flush buffer (256 MB) is no part of it."""
    def measure(K):
        step = train_step_call(cfg, model_name, cfg.train_batch, K, device)
        step()
        peak_mb = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
                   else peak_rss_mb())
        timing = time_cases({"step": step}, device, min(cfg.warmup, 1), min(cfg.repeats, 5),
                            cfg.budget_s, cfg.time_cap_s)["step"]
        return dict(timing, base_mb=base_mb, peak_mb=peak_mb, step_mb=peak_mb - base_mb)
    for K in cfg.train_contexts:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        # Linux resets the peak-RSS mark per context; elsewhere the peak is over this and the
        # smaller contexts, the same thing while memory grows with K.
        peak_reset = device.type == "cuda" or reset_peak_rss()
        with memory_cap(cfg, device):
            row = oom_guard(lambda: measure(K))
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
    # given back (glibc keeps it otherwise). Each context's memory is its peak RSS above that.
    train_step_call(cfg, model_name, cfg.train_batch, cfg.train_contexts[0], cpu)()
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    base_mb = _proc_status_mb("VmRSS") or peak_rss_mb()
    train_sweep_of(cfg, model_name, cpu, base_mb, lambda row: print(json.dumps(row), flush=True))


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


def sweep_train(cfg, device, bar):
    rows, stops = [], {}
    for model_name in MODELS:
        if device.type == "cpu":
            measured = run_train_child(cfg, model_name)
        else:
            measured = []
            train_sweep_of(cfg, model_name, device, torch.cuda.memory_allocated(device) / 2**20,
                           measured.append)
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


def sweep_compare(cfg, device, backends, bar):
    """One training step: DT and the Mamba on each scan backend that trains (not the slow
    reference loops), timed in turns; each row with its time over the DT's."""
    B, K = cfg.compare_batch, cfg.compare_context
    cases = {("dt", None): train_step_call(cfg, "dt", B, K, device)}
    cases |= {("mamba", b): train_step_call(cfg, "mamba", B, K, device, b)
              for b in backends if not b.startswith("ref")}
    with memory_cap(cfg, device):
        stats = time_cases(cases, device, cfg.warmup, cfg.repeats, cfg.budget_s, cfg.time_cap_s)
    bar.update(len(cases))
    return [dict(s, model=m, scan_backend=b, batch=B, K=K, over_dt=ratio(s, stats["dt", None]))
            for (m, b), s in stats.items()]


def sweep_scan(cfg, device, backends, bar):
    """Per shape, dtype and direction, every backend timed in turns; forward rows also hold the
    largest difference of the output from the PyTorch scan's."""
    rows = []
    for shape, dtype in itertools.product(parse_shapes(cfg.scan_shapes), cfg.scan_dtypes):
        inputs = scan_inputs(shape, device, dtype, cfg.seed)
        with torch.no_grad():
            y_torch = scan_fn("torch")(**inputs, delta_softplus=True).float()
        for backward in (False, True):
            calls = {b: scan_call(scan_fn(b), inputs, backward) for b in backends}
            with memory_cap(cfg, device):
                stats = time_cases(calls, device, cfg.warmup, cfg.repeats, cfg.budget_s,
                                   cfg.time_cap_s)
            for b, s in stats.items():
                row = dict(s, backend=b, shape=list(shape), dtype=dtype,
                           direction="forward+backward" if backward else "forward")
                if s["status"] == "ok":
                    row.update(melem_per_s=math.prod(shape[:3]) / s["median_ms"] / 1e3,
                               gbps=scan_bytes(shape, getattr(torch, dtype), backward)
                               / s["median_ms"] / 1e6,
                               **{f"over_{o}": ratio(stats[o], s) for o in ("ref", "torch")
                                  if o in stats and o != b})
                if not backward and b != "torch":
                    with torch.no_grad(), contextlib.suppress(RuntimeError):
                        row["max_diff_vs_torch"] = (scan_fn(b)(**inputs, delta_softplus=True)
                                                    .float() - y_torch).abs().max().item()
                rows.append(row)
            bar.update(len(backends))
    return rows


# ----------------------------------------------------------------------------- verdicts, outputs

def loglog_slope(points):
    """Least-squares slope of log(memory) against log(K): 1 = linear growth, 2 = quadratic."""
    if len(points) < 2:
        return None
    K, y = zip(*points)
    return float(np.polyfit(np.log(K), np.log(y), 1)[0])


def judge_targets(r):
    """The issues' performance targets, judged only from what was measured here."""
    ok = {(x["model"], x["mode"], x["K"], x["batch"]): x for x in r["latency"]
          if x["status"] == "ok"}
    Ks, targets = sorted({x["K"] for x in r["latency"]}), []
    for B in sorted({x["batch"] for x in r["latency"]}):
        for name, above, below, test, threshold in LATENCY_TARGETS:
            keys = [(model, mode, {"lo": Ks[0], "hi": Ks[-1]}.get(K, K), B)
                    for model, mode, K in (above, below)]
            if keys[0] == keys[1] or not all(key in ok for key in keys):
                continue
            a, b = ok[keys[0]], ok[keys[1]]
            x, what = ratio(a, b), " / ".join(f"{LATENCY_MODES[k[:2]]} at K={k[2]}" for k in keys)
            passed = x <= threshold if test == "<=" else x > threshold
            targets.append(dict(name=name, passed=passed, detail=(
                f"batch {B}, per env step: {what} = {x:.2f}x by median ({a['median_ms']:.3g} / "
                f"{b['median_ms']:.3g} ms), {a['min_ms'] / b['min_ms']:.2f}x by minimum (target "
                f"{test} {threshold:g}x)")))
    slopes = {m: loglog_slope([(x["K"], x["step_mb"]) for x in r["train"] if x["model"] == m and
                               x["status"] == "ok" and x["K"] >= 100 and x["step_mb"] > 0])
              for m in MODELS}
    if None not in slopes.values():
        targets.append(dict(name="memory growth", passed=slopes["mamba"] <= 1.2 < slopes["dt"],
                            detail=f"log-log slope of training memory over K >= 100: Mamba "
                                   f"{slopes['mamba']:.2f}, DT {slopes['dt']:.2f} (1 linear, 2 "
                                   "quadratic; target: Mamba <= 1.2 < DT)"))
    if r["train"]:
        tried = [x["K"] for x in r["train"] if x["model"] == "dt" and x["status"] == "ok"]
        targets.append(dict(name="DT runs out", passed=None, detail=(
            f"DT training: {r['train_stops']['dt']}" if "dt" in r["train_stops"] else
            f"DT trained at every K tried (largest {max(tried)})" if tried else "DT failed")))
    largest = max((x["shape"] for x in r["scan"]), key=math.prod, default=None)
    for x in r["scan"]:  # the Triton kernel at the largest shape (the scan issue's two goals)
        if x["backend"] != "triton" or x["shape"] != largest or x["status"] != "ok":
            continue
        where = f"{x['dtype']} {x['direction']} at {'x'.join(map(str, x['shape']))}"
        if x["direction"] == "forward" and r["peak_tbps"]:
            share = x["gbps"] / 10 / r["peak_tbps"]
            targets.append(dict(name="scan bandwidth", passed=share >= 50, detail=(
                f"{where}: {share:.0f}% of {r['peak_tbps']} TB/s (target >= 50%)")))
        elif x["direction"] != "forward" and x.get("over_torch"):
            targets.append(dict(name="scan speed-up", passed=x["over_torch"] >= 20, detail=(
                f"{where}: {x['over_torch']:.1f}x the PyTorch scan (target >= 20x)")))
    return targets


def md_table(header, rows):
    """Markdown lines of a table: the header's cells, then each row's."""
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|",
            *("| " + " | ".join(map(str, row)) + " |" for row in rows)]


def markdown(r):
    """The profile as markdown, the one rendering of it (report.py embeds this file)."""
    def cell(row):
        return (f"{row['median_ms']:.3g} ({row['p25_ms']:.3g}-{row['p75_ms']:.3g})"
                if row["status"] == "ok" else row["status"])

    def num(row, key, spec=".3g"):
        return "-" if row.get(key) is None else format(row[key], spec)
    load = [x for x in r["load_average"].values() if x is not None]
    noisy = (" (above the threads used: other processes shared the CPU, so timings are noisy; "
             "the minimum is the least disturbed figure)" if load and max(load) > r["threads"]
             else "")
    lines = [f"## Runtime and memory on {r['device_name']}", "",
             f"Device `{r['device']}`, {r['threads']} torch threads, {r['cores']} cores, load "
             f"average {r['load_average']['before']} before / {r['load_average']['after']} after"
             f"{noisy}; " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()) + ". Mamba "
             f"scan backend (training and the latency table): {r['scan_backend']}. Parameters "
             f"without the timestep table: DT {r['parameters']['dt']:,}, Mamba "
             f"{r['parameters']['mamba']:,}. " + ("Quick sweep. " if r["quick"] else "") +
             "Times: median (25th-75th percentile) in ms; oom: out of memory (CPU cap "
             f"{r['settings']['memory_cap_gb']:g} GB); skipped: not tried, a smaller K already "
             "ran out or passed the time cap."]
    if r["latency"]:
        Ks = sorted({row["K"] for row in r["latency"]})
        rows = []
        for B in sorted({row["batch"] for row in r["latency"]}):
            for key, label in LATENCY_MODES.items():
                by_K = {row["K"]: row for row in r["latency"]
                        if (row["model"], row["mode"], row["batch"]) == (*key, B)}
                rows.append([label, B, *(cell(by_K[K]) for K in Ks)])
        lines += ["", "### Inference latency per env step (ms)", "",
                  *md_table(["model", "batch", *(f"K={K}" for K in Ks)], rows)]
    if r["train"]:
        memory = ("torch.cuda.max_memory_allocated during the steps minus the memory allocated "
                  "before the model was built." if r["device"].startswith("cuda") else
                  "peak resident memory of the measuring child process during the steps minus "
                  "its resident memory after one throwaway step (imports, kernels, thread pools).")
        rows = []
        for K in sorted({row["K"] for row in r["train"]}):
            by_model = {row["model"]: row for row in r["train"] if row["K"] == K}
            rows.append([K, *(x for m in MODELS
                              for x in (cell(by_model[m]), num(by_model[m], "step_mb", ".0f")))])
        lines += ["", f"### Training step, batch {r['settings']['train_batch']}: time (ms) and "
                  "peak memory above the process's base (MB)", "", f"Memory: {memory}", "",
                  *md_table(["K", "DT step", "DT memory", "Mamba step", "Mamba memory"], rows),
                  *(f"- {m} stopped: {why}" for m, why in r["train_stops"].items())]
    if r["compare"]:
        rows = [[row["model"], row["scan_backend"] or "-", cell(row), num(row, "cpu_ms"),
                 num(row, "over_dt", ".2f")] for row in r["compare"]]
        lines += ["", f"### Training step, batch {r['compare'][0]['batch']}, K "
                  f"{r['compare'][0]['K']}: DT vs Mamba per scan backend, timed in turns", "",
                  *md_table(["model", "scan", "ms", "CPU ms", "/ DT"], rows)]
    if r["scan"]:
        figures = ("melem_per_s", "gbps", "over_ref", "over_torch", "max_diff_vs_torch")
        rows = [["x".join(map(str, row["shape"])), row["dtype"], row["direction"], row["backend"],
                 cell(row), *(num(row, key) for key in figures)] for row in r["scan"]]
        lines += ["", "### Selective scan (million elements B*L*D per second; GB/s of the "
                  "unavoidable traffic; speed-ups over the reference loop and the PyTorch scan)",
                  "", *md_table(["shape BxLxDxN", "dtype", "direction", "backend", "ms", "Melem/s",
                                 "GB/s", "x ref", "x torch", "max diff vs torch"], rows)]
    verdicts = {True: "PASS", False: "FAIL", None: "INFO"}
    lines += ["", "### Performance targets", ""] + ([
        f"- {verdicts[t['passed']]}: {t['name']}: {t['detail']}" for t in r["targets"]]
        or ["- none: what was measured here has no target"])
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

    def save(fig, kind):
        fig.suptitle(r["device_name"])
        fig.tight_layout()
        atomic_write(f"{prefix}-{kind}.png", lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    batches = sorted({row["batch"] for row in r["latency"]})
    if batches:
        fig, axes = plt.subplots(1, len(batches), figsize=(5 * len(batches), 4), squeeze=False)
        for ax, B in zip(axes[0], batches):
            for (key, label), fmt in zip(LATENCY_MODES.items(), ("o-", "s--", "^-")):
                rows = [row for row in r["latency"] if (row["model"], row["mode"], row["batch"])
                        == (*key, B) and row["status"] == "ok"]
                ax.errorbar([row["K"] for row in rows], [row["median_ms"] for row in rows],
                            yerr=[[row["median_ms"] - row["p25_ms"] for row in rows],
                                  [row["p75_ms"] - row["median_ms"] for row in rows]],
                            fmt=fmt, label=label, capsize=3)
            axes_done(ax, sorted({row["K"] for row in r["latency"]}), f"inference, batch {B}",
                      "ms per env step")
        save(fig, "latency")
    if r["train"]:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for model, color in zip(MODELS, ("C0", "C1")):
            rows = [row for row in r["train"] if row["model"] == model and row["status"] == "ok"]
            for ax, key in zip(axes, ("step_mb", "median_ms")):
                ax.plot([row["K"] for row in rows], [max(row[key], 1e-3) for row in rows], "o-",
                        color=color, label=LATENCY_MODES[model, "window"].split()[0])
            for row in [row for row in r["train"] if row["model"] == model and row["status"]
                        not in ("ok", "skipped")][:1]:
                axes[0].axvline(row["K"], color=color, ls=":",
                                label=f"{row['status']} at {row['K']}")
        Ks, batch = sorted({row["K"] for row in r["train"]}), r["settings"]["train_batch"]
        axes_done(axes[0], Ks, f"training step memory, batch {batch}", "peak above base (MB)")
        axes_done(axes[1], Ks, f"training step time, batch {batch}", "ms per step")
        save(fig, "memory")
    plt.close("all")


def describe_device(device):
    """-> (slug for file names such as cpu-amd-epyc, human-readable name)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    words = re.sub(r"\(.*?\)|\bcpu\b|processor|\d+-core", " ", name.lower())
    words = re.sub(r"[^a-z0-9]+", "-", words).strip("-").split("-")
    return f"{device.type}-" + "-".join(words[:3 if device.type == "cpu" else 6]), name


def load_average():
    """1-minute load average (other processes competing for the CPU), None where unknown."""
    with contextlib.suppress(OSError, AttributeError):
        return round(os.getloadavg()[0], 2)


def versions():
    found = dict(python=platform.python_version(), torch=torch.__version__, numpy=np.__version__)
    with contextlib.suppress(ImportError):
        import triton
        found["triton"] = triton.__version__
    return found


# ----------------------------------------------------------------------------- command line

def parse_shapes(text):
    shapes = [s.lower().split("x") for s in text.split(",") if s.strip()]
    if not shapes or any(len(s) != 4 or not all(x.isdigit() and int(x) > 0 for x in s)
                         for s in shapes):
        raise ProfileError(f"--scan-shapes must look like 64x60x256x16,4x3000x256x16 (positive "
                           f"sizes), not {text!r}.")
    return [tuple(int(x) for x in s) for s in shapes]


def check_config(cfg):
    """ProfileError, in one sentence, for a setting that cannot work."""
    def need(ok, name, what):
        value = getattr(cfg, name)
        if not ok:
            shown = ",".join(map(str, value)) or "empty" if isinstance(value, tuple) else value
            raise ProfileError(f"{flag_name(name)} must be {what}, not {shown}.")
    for name in ("latency_contexts", "latency_batches", "train_contexts"):
        need(getattr(cfg, name) and min(getattr(cfg, name)) > 0, name,
             "a comma-separated list of positive integers")
    need(list(cfg.train_contexts) == sorted(set(cfg.train_contexts)), "train_contexts",
         "increasing")
    for name in ("state_dim", "act_dim", "train_batch", "compare_batch", "compare_context",
                 "repeats", "budget_s", "time_cap_s", "memory_cap_gb"):
        need(0 < getattr(cfg, name) < math.inf, name, "a positive number")
    for name in ("threads", "warmup", "seed", "peak_tbps"):
        need(0 <= getattr(cfg, name) < math.inf, name, "0 or a positive number")
    need(cfg.sweeps and set(cfg.sweeps) <= set(SWEEPS), "sweeps", "some of " + ",".join(SWEEPS))
    need(set(cfg.scan_dtypes) <= {"float32", "bfloat16", "float16"}, "scan_dtypes",
         "some of float32,bfloat16,float16")
    need(set(cfg.scan_backends) <= set(ssm.SCAN_BACKENDS) - {"auto"} | {"ref-precomputed"},
         "scan_backends", "some of ref,torch,c,triton,ref-precomputed")
    parse_shapes(cfg.scan_shapes)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ProfileError("--device cuda was asked for but torch sees no CUDA device; use "
                           "--device cpu.")


def output_folder(cfg):
    """--out, else results/ for a full run and runs/profile-quick/ (ignored by git) for --quick."""
    return cfg.out or ("runs/profile-quick" if cfg.quick else "results")


def profile(cfg: ProfileConfig, command) -> tuple:
    """Run the sweeps, write the json / md / png files; -> (results, file prefix)."""
    check_config(cfg)
    cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    slug, name = describe_device(device)
    start, load_before = time.time(), load_average()
    backends, run = scan_backends(cfg, device), set(cfg.sweeps)
    calls = dict(latency=3 * len(cfg.latency_contexts) * len(cfg.latency_batches),
                 train=2 * len(cfg.train_contexts), compare=len(backends),
                 scan=2 * len(parse_shapes(cfg.scan_shapes)) * len(cfg.scan_dtypes) * len(backends))
    with tqdm(total=sum(calls[sweep] for sweep in run), desc=f"profile on {slug}") as bar:
        latency = sweep_latency(cfg, device, bar) if "latency" in run else []
        train, stops = sweep_train(cfg, device, bar) if "train" in run else ([], {})
        compare = sweep_compare(cfg, device, backends, bar) if "compare" in run else []
        scan = sweep_scan(cfg, device, backends, bar) if "scan" in run else []
    results = dict(
        device=slug, device_name=name, versions=versions(), threads=torch.get_num_threads(),
        scan_backend=ssm.default_scan_backend(device), peak_tbps=cfg.peak_tbps or next(
            (v for k, v in PEAK_TBPS.items() if k in name.lower() and cuda), 0.0),
        quick=cfg.quick, settings=dataclasses.asdict(cfg), date=time.strftime("%Y-%m-%d %H:%M"),
        cores=os.cpu_count(), load_average=dict(before=load_before, after=load_average()),
        command=shlex.join(["python", "profile.py", *command]),
        parameters={m: count_parameters(make_model(cfg, m, 20, "cpu")) for m in MODELS},
        latency=latency, train=train, train_stops=stops, compare=compare, scan=scan,
        wall_s=round(time.time() - start, 1))
    results["targets"] = judge_targets(results)
    os.makedirs(output_folder(cfg), exist_ok=True)
    prefix = os.path.join(output_folder(cfg), f"profile-{slug}")
    write_json(prefix + ".json", results)
    atomic_write(prefix + ".md", lambda tmp: Path(tmp).write_text(markdown(results)))
    plot(results, prefix)
    return results, prefix


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--_train-child"]:  # internal: the measuring child of a CPU training sweep
        return train_child_main(argv[1])
    typed = given_flags(ProfileConfig, argv, __doc__.split("\n\n")[0])
    cfg = ProfileConfig(**({**QUICK, **typed} if typed.get("quick") else typed))
    try:
        results, prefix = profile(cfg, argv)
    except ProfileError as e:
        sys.exit(f"error: {e}")
    print(markdown(results))
    print(f"wrote {prefix}.json, .md, .png plots in {results['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
