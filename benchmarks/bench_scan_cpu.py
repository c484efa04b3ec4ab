"""CPU benchmark of the selective scan: autograd through the reference loop vs. the fast PyTorch
scan (hand-written backward) vs. the C scan (scan_cpu.c, if a C compiler built it), forward only
and forward + backward, at the shape the Decision Mamba trains with (batch 64, K = 20 -> L = 60
tokens, d_inner 256, N 16).

Run:  .venv/bin/python benchmarks/bench_scan_cpu.py [--threads 1] [--precomputed_ref] [--out F]
Prints, per path, the median wall time and the median CPU time of this process (on a shared
machine the CPU time is the steadier number), each path's speed-up over the reference loop, the
load average and versions. The paths are timed round-robin (one call of each in turn), so that
load from other processes falls on all of them alike.

--precomputed_ref adds the official Mamba repository's reference layout, where exp(Δ A) and
Δ B u are computed for all steps first and the loop indexes them; autograd through that indexing
is much slower (each step's slice gets a full-size gradient), so it shows what "autograd through
a Python loop" can cost when the loop is written that way.
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
import scan_cpu  # noqa: E402
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


def make_call(scan, inputs, cfg, backward):
    """One scan call (+ backward) on fresh leaf copies of the inputs."""
    leaves = {k: v.clone().requires_grad_(backward) for k, v in inputs.items()}
    grad_out = torch.randn(cfg.batch, cfg.length, cfg.channels)

    def run():
        with torch.set_grad_enabled(backward):
            y = scan(**leaves, delta_softplus=True)
            if backward:
                y.backward(grad_out)
    return run


def bench(paths, inputs, cfg, backward):
    """{name: (median wall s, median process CPU s)} of one call of each path, timed
    round-robin; paths: {name: (scan, repeats)} (slow paths may ask for fewer repeats)."""
    calls = {name: make_call(scan, inputs, cfg, backward) for name, (scan, _) in paths.items()}
    for run in calls.values():
        for _ in range(cfg.warmup):
            run()
    walls, cpus = ({name: [] for name in paths} for _ in range(2))
    for i in range(max(repeats for _, repeats in paths.values())):
        for name, run in calls.items():
            if i < paths[name][1]:
                w, c = time.perf_counter(), time.process_time()
                run()
                walls[name].append(time.perf_counter() - w)
                cpus[name].append(time.process_time() - c)
    return {name: (statistics.median(walls[name]), statistics.median(cpus[name]))
            for name in paths}


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
    reference = "reference loop (autograd)"
    paths = {reference: (selective_scan_ref, cfg.repeats),
             "fast PyTorch scan": (selective_scan_torch, cfg.repeats)}
    built, why_not = scan_cpu.available()
    if built:
        paths["C scan (scan_cpu.c)"] = (scan_cpu.selective_scan_cpu, cfg.repeats)
    else:
        print(f"C scan not timed: {why_not}")
    if cfg.precomputed_ref:
        paths["precomputed-layout loop (autograd)"] = (scan_ref_precomputed, 3)
    results = {}
    for mode, backward in (("forward", False), ("forward+backward", True)):
        results[mode] = bench(paths, inputs, cfg, backward)
        ref_wall, ref_cpu = results[mode][reference]
        for name, (wall, cpu) in results[mode].items():
            ratio = "" if name == reference else (f"   speed-up over the reference "
                                                  f"{ref_wall / wall:5.1f}x (wall) / "
                                                  f"{ref_cpu / cpu:5.1f}x (CPU)")
            print(f"{mode:>17} | {name:<35} {wall * 1e3:8.1f} / {cpu * 1e3:8.1f}{ratio}")
    info["load_average_after"] = os.getloadavg()
    if cfg.out:
        Path(cfg.out).write_text(json.dumps(dict(config=asdict(cfg), info=info, results={
            mode: {name: dict(wall_ms=w * 1e3, cpu_ms=c * 1e3) for name, (w, c) in r.items()}
            for mode, r in results.items()}), indent=2))
        print(f"wrote {cfg.out}")


if __name__ == "__main__":
    main()
