"""Profile the Decision Transformer against the Decision Mamba: speed and memory.

Both models at the DT paper's sizes (benchmarks/timing.py's PAPER_SIZES), HalfCheetah's sizes
(--state-dim 11 --act-dim 3: Hopper's), one device. The measurements (--sweeps):
  latency  per env step vs context K, batch 1 and 100: DT and Mamba re-encoding a K-step window,
           the Mamba acting recurrently (step + step_action, at episode position >= K);
  train    training step time and peak memory vs K until a memory or time cap stops a model
           (CPU: peak RSS of a child process per model; CUDA: max_memory_allocated);
  compare  one training step at batch 64, K 20: DT against the Mamba on each scan backend;
  scan     the selective scan: reference loop, PyTorch scan, C (CPU) or Triton (CUDA) per shape
           and dtype: time, speed-ups, bandwidth of the unavoidable traffic vs the GPU's peak.
Writes profile-<device>.json, .md, -latency.png, -memory.png into --out: results/, or
runs/profile-quick/ for --quick (never committed files). benchmarks/report.py embeds the .md
and plots.

Where the pieces live: benchmarks/timing.py holds the project's one timing harness
(`time_cases`, also used by the benchmarks), the memory probes and the cases timed (a model's
action, a training step, the scan); benchmarks/render.py draws the markdown and the plots; this
file runs the sweeps, judges the performance targets and writes the files.

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
from dataclasses import dataclass
from pathlib import Path

from cli import (WriteError, atomic_write, flag_name, given_flags,  # standard library only
                 one_sentence_write_errors, option, refuse_to_replace, write_json)

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
    from dt import MODELS, count_parameters
    from benchmarks.render import LATENCY_MODES, profile_markdown, profile_plots
    from benchmarks.timing import (proc_status_mb, latency_call, make_model, memory_cap,
                                   oom_guard, out_of_memory_note, peak_rss_mb, ratio,
                                   reset_peak_rss, scan_backends, scan_bytes, scan_call, scan_fn,
                                   scan_inputs, time_cases, train_step_call, versions)

SWEEPS = ("latency", "train", "compare", "scan")
PEAK_TBPS = {"h200": 4.8, "h100": 3.35, "a100": 2.0}  # HBM peak by GPU name (SXM parts)
# The performance targets on latency, per batch: (name, numerator, denominator, test,
# threshold) on a ratio of median times per env step; keys (model, mode, K), "lo" / "hi": the
# smallest / largest K.
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
    force: bool = option(False, "replace result files in --out that git tracks or that "
                                "profile.py did not write")


QUICK = dict(latency_contexts=(20, 100), latency_batches=(1,), train_contexts=(20, 40),
             train_batch=4, compare_batch=4, scan_shapes="8x60x64x16", warmup=1, repeats=5,
             budget_s=1.0)


# ----------------------------------------------------------------------------- the sweeps

def sweep_latency(cfg, device, bar):
    """Per batch size, every (model, mode, K) timed in turns, rewarmed before each timed call
    (a K=1000 window flushes the caches a recurrent step would find warm)."""
    rows = []
    for B in cfg.latency_batches:
        keys = [(m, mode, K) for K in cfg.latency_contexts for m, mode in LATENCY_MODES]
        calls, stats = {}, {}
        with torch.inference_mode(), memory_cap(cfg.memory_cap_gb, device):
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
        with memory_cap(cfg.memory_cap_gb, device):
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
    base_mb = proc_status_mb("VmRSS") or peak_rss_mb()
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
    with memory_cap(cfg.memory_cap_gb, device):
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
            with memory_cap(cfg.memory_cap_gb, device):
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
    """The project's performance targets, judged only from what was measured here."""
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
    for x in r["scan"]:  # the Triton kernel at the largest shape: its two targets
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


def written_by_profile(path):
    """True for a file profile.py wrote: its JSON results, their markdown, or a matplotlib PNG."""
    path = Path(path)
    if path.suffix == ".json":
        return {"device", "settings", "latency"} <= set(json.loads(path.read_text()))
    if path.suffix == ".md":
        return path.read_text(errors="replace").startswith("## Runtime and memory on ")
    head = path.read_bytes()[:4096]
    return head.startswith(b"\x89PNG") and b"Matplotlib" in head


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
    prefix = os.path.join(output_folder(cfg), f"profile-{slug}")
    try:  # before the sweeps: a refusal costs nothing
        for suffix in (".json", ".md", "-latency.png", "-memory.png"):
            refuse_to_replace(prefix + suffix, cfg.force, written_by_profile)
    except WriteError as e:
        raise ProfileError(str(e)) from None
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
    with one_sentence_write_errors(output_folder(cfg)):  # a full disk, a read-only folder
        os.makedirs(output_folder(cfg), exist_ok=True)
        write_json(prefix + ".json", results)
        atomic_write(prefix + ".md", lambda tmp: Path(tmp).write_text(profile_markdown(results)))
        profile_plots(results, prefix)
    return results, prefix


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--_train-child"]:  # internal: the measuring child of a CPU training sweep
        return train_child_main(argv[1])
    typed = given_flags(ProfileConfig, argv, __doc__.split("\n\n")[0])
    cfg = ProfileConfig(**({**QUICK, **typed} if typed.get("quick") else typed))
    try:
        results, prefix = profile(cfg, argv)
    except (ProfileError, WriteError) as e:
        sys.exit(f"error: {e}")
    print(profile_markdown(results))
    print(f"wrote {prefix}.json, .md, .png plots in {results['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
