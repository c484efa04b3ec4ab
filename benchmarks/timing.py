"""The project's one timing harness, its memory probes, and the cases it times.

profile.py's sweeps and the scripts in benchmarks/ all time through `time_cases`: warm-up calls,
then the cases timed in turns (round-robin) in one process, so that other processes on a shared
CPU disturb every case alike; each case's median, quartiles, min/max in ms and median CPU time.
On CUDA with triton installed a case is timed by triton.testing.do_bench (CUDA events, the L2
cache flushed between calls). Ratios of medians taken in one process are the figures to trust.

  the harness    summary, time_cases, ratio; out-of-memory as a result ({"status": "oom"})
  memory         peak resident memory (Linux VmHWM, resettable) and an RLIMIT_DATA cap
  what is timed  a model's per-env-step action (window or recurrent), a training step, the
                 selective scan on random inputs, and the scan's unavoidable memory traffic

`cfg` below is any object with the fields the case needs (profile.ProfileConfig has them all:
state_dim, act_dim, seed).

Glossary: B batch, K context in env steps, L scan length, D scan channels (d_inner), N SSM state
size per channel.
"""
import contextlib
import functools
import gc
import math
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

import ssm
from dt import MODELS, DecisionConfig, DecisionModel

try:
    import resource  # Unix only: peak RSS and the memory cap
except ImportError:
    resource = None


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

def proc_status_mb(key):
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
    return proc_status_mb("VmHWM") or \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def reset_peak_rss():
    """Linux: make the peak-RSS mark the current RSS. False where that is impossible."""
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")
        return True
    return False


@contextlib.contextmanager
def memory_cap(cap_gb, device):
    """CPU allocations beyond cap_gb more than the process's data now fail (Linux
    RLIMIT_DATA): torch then raises "can't allocate memory", reported as out of memory. On the
    way out, what the measurement left is collected (and CUDA's cache emptied)."""
    data_mb = proc_status_mb("VmData")
    capped = device.type == "cpu" and resource is not None and data_mb is not None
    if capped:
        previous = resource.getrlimit(resource.RLIMIT_DATA)
        limit = int((data_mb + cap_gb * 1024) * 2**20)
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

# The models profiled: the DT paper's sizes (train.py --preset paper), matched parameter counts.
PAPER_SIZES = dict(d_model=128, n_layer=3, mamba_n_layer=5)


def make_model(cfg, model, K, device, backend="auto"):
    config = DecisionConfig(state_dim=cfg.state_dim, act_dim=cfg.act_dim, backbone=MODELS[model],
                            context_len=K, scan_backend=backend, **PAPER_SIZES)
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


def versions():
    """The versions that decide a timing: python, torch, numpy (and triton where installed)."""
    found = dict(python=sys.version.split()[0], torch=torch.__version__, numpy=np.__version__)
    with contextlib.suppress(ImportError):
        import triton
        found["triton"] = triton.__version__
    return found
