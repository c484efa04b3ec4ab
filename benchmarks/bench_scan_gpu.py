"""GPU benchmark of the selective scan: Triton kernel vs. fast PyTorch scan vs. reference loop.

The Triton kernel is scan_kernel.py; the other two are in ssm.py. Forward and forward + backward,
all in one process on one GPU.

Shapes: the Decision Mamba's training batch (batch 64, L = 60 tokens, D = 256, N = 16) and a long
language-model one (batch 8, L = 4096, D = 1536, N 16), in fp32 and bf16 inputs (fp32 state).
"forward" runs under torch.no_grad() (inference: the kernel then skips its chunk-state writes);
"fwd+bwd" is y = scan(...); y.backward(dy).

Bytes-moved model (the traffic a perfect kernel cannot avoid, each element touched once):
  forward  u, delta, z read + y written: 4 (B, L, D) tensors; B, C read once: 2 (B, L, N)
  fwd+bwd  the forward's, then u, delta, z, dy read + du, ddelta, dz written: 11 (B, L, D) in all;
           B, C read twice and dB, dC written: 6 (B, L, N); A, D, delta_bias are negligible
Achieved bandwidth = those bytes / median time, compared with the GPU's HBM peak (--peak_tbps,
3.35 TB/s for an H100 SXM). The kernel's own overheads (chunk states, dB/dC partial sums) are
not counted as useful bytes. Goals (from the issue): forward at the long shape >= half the peak;
fwd+bwd >= 20x faster than the fast PyTorch scan.

Run:  .venv/bin/python benchmarks/bench_scan_gpu.py [--dtypes bfloat16] [--repeats 20]
Writes results/scan-gpu-<device>.json and .md, naming the device and library versions.
"""
import argparse
import json
import math
import platform
import re
import statistics
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {"dt": (64, 60, 256, 16), "long": (8, 4096, 1536, 16)}   # (batch, L, D, N)


@dataclass
class BenchConfig:
    shapes: str = field(default="dt,long", metadata={"help": f"comma-separated, from {', '.join(SHAPES)}"})
    dtypes: str = field(default="float32,bfloat16", metadata={"help": "input dtypes, comma-separated"})
    repeats: int = field(default=20, metadata={"help": "timed repeats of Triton / PyTorch scans (median)"})
    ref_repeats: int = field(default=3, metadata={"help": "timed repeats of the (slow) reference loop"})
    warmup: int = field(default=3, metadata={"help": "untimed runs first (compilation, caches)"})
    peak_tbps: float = field(default=3.35, metadata={"help": "HBM peak in TB/s (H100 SXM: 3.35)"})
    out_dir: str = field(default="results", metadata={"help": "where the .json and .md go"})
    seed: int = field(default=0, metadata={"help": "input seed"})


class BenchError(ValueError):
    """A usage error of this script; the message says what to do."""


def make_inputs(shape, dtype, seed):
    """Inputs as MambaBlock passes them: activations in dtype; A (S4D-real), D, delta_bias in fp32."""
    batch, length, dim, dstate = shape
    g = torch.Generator(device="cuda").manual_seed(seed)
    rand = lambda *s: torch.randn(*s, device="cuda", generator=g)   # noqa: E731
    log_dt = torch.rand(dim, device="cuda", generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)
    dt = log_dt.exp()                                                   # in [1e-3, 0.1], log-uniform
    return dict(u=rand(batch, length, dim).to(dtype), delta=(0.5 * rand(batch, length, dim)).to(dtype),
                A=-torch.arange(1, dstate + 1.0, device="cuda").repeat(dim, 1),
                B=rand(batch, length, dstate).to(dtype), C=rand(batch, length, dstate).to(dtype),
                D=torch.ones(dim, device="cuda"), z=rand(batch, length, dim).to(dtype),
                delta_bias=dt + torch.log(-torch.expm1(-dt)))                   # inverse softplus of dt


def median_ms(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def runner(scan, inputs, backward):
    """A closure running one forward (no grad) or one forward + backward of scan."""
    leaves = {k: v.detach().clone().requires_grad_(backward) for k, v in inputs.items()}
    dy = torch.randn_like(leaves["u"])

    def run():
        with torch.set_grad_enabled(backward):
            y = scan(**leaves, delta_softplus=True)
            if backward:
                y.backward(dy)
    return run


def bytes_moved(shape, dtype, backward):
    batch, length, dim, dstate = shape
    size = torch.tensor([], dtype=dtype).element_size()
    n_bld, n_bln = (11, 6) if backward else (4, 2)
    return (n_bld * batch * length * dim + n_bln * batch * length * dstate) * size


def measure(cfg, scans, shape_name, dtype, mode):
    """Median times of every scan on one shape/dtype/mode, with speed-ups and bandwidth. -> list of rows"""
    shape = SHAPES[shape_name]
    backward = mode == "fwd+bwd"
    inputs = make_inputs(shape, dtype, cfg.seed)
    rows, times = [], {}
    for name, scan in scans.items():
        repeats = cfg.ref_repeats if name == "reference" else cfg.repeats
        try:
            times[name] = median_ms(runner(scan, inputs, backward), min(cfg.warmup, repeats), repeats)
        except torch.cuda.OutOfMemoryError:
            times[name] = None
        torch.cuda.empty_cache()
    for name, ms in times.items():
        row = dict(shape=shape_name, batch=shape[0], length=shape[1], dim=shape[2], dstate=shape[3],
                   dtype=str(dtype).removeprefix("torch."), mode=mode, method=name, ms=ms)
        if ms is not None:
            gbps = bytes_moved(shape, dtype, backward) / (ms * 1e-3) / 1e9
            row.update(gbps=gbps, pct_of_peak=100 * gbps / (cfg.peak_tbps * 1e3),
                       **{f"speedup_vs_{other}": times[other] / ms
                          for other in ("torch", "reference") if times.get(other) and other != name})
        rows.append(row)
    return rows


def max_error(scans, shape, dtype, seed):
    """max |y_triton - y_torch| on one input: a miscompiled kernel shows here before in the timings."""
    inputs = make_inputs(SHAPES[shape], dtype, seed)
    with torch.no_grad():
        return (scans["triton"](**inputs, delta_softplus=True).float()
                - scans["torch"](**inputs, delta_softplus=True).float()).abs().max().item()


def goals(rows, peak_tbps):
    """The issue's two goals, judged on the long shape. -> {goal: {value, met}}"""
    out = {}
    for row in rows:
        if row["shape"] != "long" or row["method"] != "triton" or row["ms"] is None:
            continue
        if row["mode"] == "forward":
            out[f"forward {row['dtype']} >= 50% of {peak_tbps} TB/s"] = dict(
                value=round(row["pct_of_peak"], 1), met=row["pct_of_peak"] >= 50)
        elif "speedup_vs_torch" in row:
            out[f"fwd+bwd {row['dtype']} >= 20x the PyTorch scan"] = dict(
                value=round(row["speedup_vs_torch"], 1), met=row["speedup_vs_torch"] >= 20)
    return out


def write_markdown(path, report):
    lines = [f"# Selective scan on {report['device']}", "",
             f"torch {report['torch']}, triton {report['triton']}, CUDA {report['cuda']}, "
             f"python {report['python']}; HBM peak taken as {report['peak_tbps']} TB/s.", "",
             f"Bytes-moved model: {report['bytes_model']}", "",
             "| shape (B, L, D, N) | dtype | mode | method | ms | x torch | x ref | GB/s | % peak |",
             "|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v, spec: "-" if v is None else format(v, spec)   # noqa: E731
    for r in report["rows"]:
        shape = f"{r['shape']} ({r['batch']}, {r['length']}, {r['dim']}, {r['dstate']})"
        cells = [shape, r["dtype"], r["mode"], r["method"], fmt(r["ms"], ".3f"),
                 fmt(r.get("speedup_vs_torch"), ".1f"), fmt(r.get("speedup_vs_reference"), ".1f"),
                 fmt(r.get("gbps"), ".0f"), fmt(r.get("pct_of_peak"), ".1f")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Goals (long shape):", ""]
    lines += [f"- {goal}: {g['value']} ({'met' if g['met'] else 'NOT met'})"
              for goal, g in report["goals"].items()]
    errors = ", ".join(f"{k} {v:.2e}" for k, v in report["max_error"].items())
    lines += ["", f"max |y_triton - y_torch|: {errors}"]
    path.write_text("\n".join(lines) + "\n")


def run(cfg):
    if not torch.cuda.is_available():
        raise BenchError("bench_scan_gpu.py needs a CUDA GPU and none is visible; on the CPU run "
                         "benchmarks/bench_scan_cpu.py instead.")
    unknown = set(cfg.shapes.split(",")) - set(SHAPES)
    if unknown:
        raise BenchError(f"Unknown shape(s) {sorted(unknown)}; choose from {', '.join(SHAPES)}.")
    sys.path.insert(0, str(ROOT))
    import scan_kernel   # noqa: E402  (imports triton: only once we know there is a GPU)
    import triton        # noqa: E402
    from ssm import selective_scan_ref, selective_scan_torch   # noqa: E402
    scans = {"triton": scan_kernel.selective_scan_triton, "torch": selective_scan_torch,
             "reference": selective_scan_ref}
    dtypes = [getattr(torch, name) for name in cfg.dtypes.split(",")]
    jobs = [(s, d, m) for s in cfg.shapes.split(",") for d in dtypes for m in ("forward", "fwd+bwd")]
    rows = []
    for shape, dtype, mode in tqdm(jobs, desc="scan benchmark"):
        rows += measure(cfg, scans, shape, dtype, mode)
    device = torch.cuda.get_device_name()
    report = dict(device=device, torch=torch.__version__, triton=triton.__version__, cuda=torch.version.cuda,
                  python=platform.python_version(), peak_tbps=cfg.peak_tbps, config=asdict(cfg),
                  bytes_model="forward: u, delta, z read, y written, B and C read once; fwd+bwd: that, then "
                              "u, delta, z, dy read, du, ddelta, dz written, B and C read, dB and dC written",
                  rows=rows, goals=goals(rows, cfg.peak_tbps),
                  max_error={f"{s} {d}".replace("torch.", ""): max_error(scans, s, d, cfg.seed)
                             for s in cfg.shapes.split(",") for d in dtypes})
    out = ROOT / cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    stem = "scan-gpu-" + re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(out / f"{stem}.md", report)
    print((out / f"{stem}.md").read_text())
    return out / f"{stem}.json"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in fields(BenchConfig):
        parser.add_argument(f"--{f.name}", type=type(f.default), default=f.default, help=f.metadata["help"])
    cfg = BenchConfig(**vars(parser.parse_args(argv)))
    try:
        run(cfg)
    except BenchError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
