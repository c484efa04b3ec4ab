"""CPU benchmark of the selective scan: autograd through the reference loop vs. the fast PyTorch
scan (hand-written backward), forward only and forward + backward, at the shape the Decision
Mamba trains with (batch 64, K = 20 -> L = 60 tokens, d_inner 256, N 16).

Run:  .venv/bin/python benchmarks/bench_scan_cpu.py [--threads 1] [--precomputed_ref] [--out F]
Prints, per path, the median wall time and the median CPU time of this process (on a shared
machine the CPU time is the steadier number), the speed-ups, the load average and versions.

--precomputed_ref adds a third path: the official Mamba repository's reference layout, where
exp(Δ A) and Δ B u are computed for all steps first and the loop indexes them; autograd through
that indexing is much slower (each step's slice gets a full-size gradient), so it shows what
"autograd through a Python loop" can cost when the loop is written that way.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ssm import selective_scan_ref, selective_scan_torch  # noqa: E402


def _field(default, doc):
    return field(default=default, metadata={"help": doc})


@dataclass
class BenchConfig:
    batch: int = _field(64, "sequences per batch")
    length: int = _field(60, "tokens per sequence (3 tokens per step x K = 20)")
    channels: int = _field(256, "scan channels D (d_inner = 2 * d_model 128)")
    d_state: int = _field(16, "state size N")
    repeats: int = _field(7, "timed repeats per measurement (the median is reported)")
    warmup: int = _field(2, "untimed repeats first")
    threads: int = _field(0, "torch threads (0 = leave torch's default)")
    precomputed_ref: bool = _field(False, "also time the official-layout reference loop (slow)")
    seed: int = _field(0, "input seed")
    out: str = _field("", "also write the results to this JSON file")


def scan_ref_precomputed(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                         delta_softplus=False):
    """The reference scan in the official repository's layout (all exp(Δ A) and Δ B u first)."""
    u, delta = u.float(), delta.float() + delta_bias.float()
    delta = F.softplus(delta) if delta_softplus else delta
    decay = torch.exp(delta.unsqueeze(-1) * A)                           # (B, L, D, N)
    drive = (delta * u).unsqueeze(-1) * B.unsqueeze(2)                   # (B, L, D, N)
    h, ys = u.new_zeros(decay[:, 0].shape), []
    for t in range(u.shape[1]):
        h = decay[:, t] * h + drive[:, t]
        ys.append((h * C[:, t].unsqueeze(1)).sum(-1))                    # (B, D)
    return (torch.stack(ys, 1) + u * D) * F.silu(z)


def make_inputs(cfg):
    g = torch.Generator().manual_seed(cfg.seed)
    b, l, d, n = cfg.batch, cfg.length, cfg.channels, cfg.d_state
    r = lambda *s: torch.randn(*s, generator=g)                          # noqa: E731
    return dict(u=r(b, l, d), delta=r(b, l, d) * 0.5, A=-torch.rand(d, n, generator=g) - 0.5,
                B=r(b, l, n), C=r(b, l, n), D=r(d), z=r(b, l, d), delta_bias=r(d) * 0.3)


def bench(scan, inputs, cfg, backward, repeats):
    """Median (wall seconds, process CPU seconds) of one scan call (+ backward)."""
    leaves = {k: v.clone().requires_grad_(backward) for k, v in inputs.items()}
    grad_out = torch.randn(cfg.batch, cfg.length, cfg.channels)

    def run():
        with torch.set_grad_enabled(backward):
            y = scan(**leaves, delta_softplus=True)
            if backward:
                y.backward(grad_out)

    for _ in range(cfg.warmup):
        run()
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        run()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in fields(BenchConfig):
        if isinstance(f.default, bool):
            parser.add_argument(f"--{f.name}", action="store_true", help=f.metadata["help"])
        else:
            parser.add_argument(f"--{f.name}", type=type(f.default), default=f.default,
                                help=f.metadata["help"])
    cfg = BenchConfig(**vars(parser.parse_args()))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    inputs = make_inputs(cfg)
    info = dict(python=platform.python_version(), torch=torch.__version__,
                cpu=platform.processor() or platform.machine(), cpus=os.cpu_count(),
                torch_threads=torch.get_num_threads(), load_average=os.getloadavg())
    print(", ".join(f"{k} {v}" for k, v in info.items()))
    print(f"shape: batch {cfg.batch}, L {cfg.length}, D {cfg.channels}, N {cfg.d_state}; "
          f"median of {cfg.repeats} after {cfg.warmup} warm-up; times in ms as wall / CPU")
    paths = {"reference loop (autograd)": (selective_scan_ref, cfg.repeats),
             "fast scan": (selective_scan_torch, cfg.repeats)}
    if cfg.precomputed_ref:
        paths["precomputed-layout loop (autograd)"] = (scan_ref_precomputed, 3)
    results = {}
    for mode, backward in (("forward", False), ("forward+backward", True)):
        results[mode] = {name: bench(fn, inputs, cfg, backward, repeats)
                         for name, (fn, repeats) in paths.items()}
        fast_wall, fast_cpu = results[mode]["fast scan"]
        for name, (wall, cpu) in results[mode].items():
            ratio = "" if name == "fast scan" else (f"   fast scan {wall / fast_wall:5.1f}x "
                                                    f"(wall) / {cpu / fast_cpu:5.1f}x (CPU) faster")
            print(f"{mode:>17} | {name:<35} {wall * 1e3:8.1f} / {cpu * 1e3:8.1f}{ratio}")
    info["load_average_after"] = os.getloadavg()
    if cfg.out:
        Path(cfg.out).write_text(json.dumps(dict(config=asdict(cfg), info=info, results={
            mode: {name: dict(wall_ms=w * 1e3, cpu_ms=c * 1e3) for name, (w, c) in r.items()}
            for mode, r in results.items()}), indent=2))
        print(f"wrote {cfg.out}")


if __name__ == "__main__":
    main()
