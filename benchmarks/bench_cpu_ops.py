"""CPU micro-benchmark of three choices made in the models, each pair timed in turns in one process.

1. GELU in the DT's MLP: exact (erf) vs the tanh approximation of GPT-2 / the original DT code,
   on the hidden activation of a batched acting call (100 episodes x 60 tokens x 4 * 64).
2. The depthwise causal conv of MambaBlock.step at batch 1 (3 new tokens, d_inner 256, width 4):
   F.conv1d vs one batched matrix product over unfolded windows (what ssm.py does).
3. dt_proj in MambaBlock's training step (tokens 64 x 60, rank 8, d_inner 256), forward and
   the weight's gradient: `dt @ W.t()` (a transposed view, whose gradient autograd computes as
   the (256, 8) product g^T dt) vs `dt @ W.t().contiguous()` (gradient dt^T g, (8, 256)).

Run:  python benchmarks/bench_cpu_ops.py [--threads 1] [--repeats 300] [--out F.json]
Prints the median time of each variant and their ratio, with the torch version and threads.
"""
import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def median_times(cases, repeats, warmup=20):
    """{name: fn} -> {name: median seconds}, the cases called in turns."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--repeats", type=int, default=300, help="timed calls per variant")
    parser.add_argument("--out", default="", help="also write the results as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    hidden = torch.randn(100, 60, 256)                               # (B, T, 4C) MLP activation
    window = torch.randn(1, 256, 3 + 3)                              # (B, d_inner, d_conv-1+T)
    weight, bias = torch.randn(256, 1, 4), torch.randn(256)          # conv1d's (d_inner, 1, d_conv)
    conv = F.conv1d(window, weight, bias, groups=256)                # (B, d_inner, T)
    unfolded = (window.unfold(-1, 4, 1) @ weight.transpose(1, 2)).squeeze(-1) + bias[:, None]
    torch.testing.assert_close(unfolded, conv)                       # the two convs agree
    dt_low = torch.randn(64 * 60, 8)                                 # (tokens, dt_rank)
    dt_weight = torch.randn(256, 8, requires_grad=True)              # dt_proj.weight (D, rank)
    grad_delta = torch.randn(64 * 60, 256)

    def dt_proj_grad(contiguous):
        w = dt_weight.t().contiguous() if contiguous else dt_weight.t()
        return torch.autograd.grad(dt_low @ w, dt_weight, grad_delta)[0]
    torch.testing.assert_close(dt_proj_grad(True), dt_proj_grad(False), rtol=1e-4, atol=1e-3)
    results = {"dt_proj_grad": median_times({"transposed_view": lambda: dt_proj_grad(False),
                                             "contiguous": lambda: dt_proj_grad(True)},
                                            args.repeats // 3)}
    with torch.inference_mode():
        results |= {
            "gelu": median_times({
                "erf": lambda: F.gelu(hidden),
                "tanh": lambda: F.gelu(hidden, approximate="tanh")}, args.repeats // 3),
            "conv_step": median_times({
                "conv1d": lambda: F.conv1d(window, weight, bias, groups=256),
                "unfold_matmul": lambda: (window.unfold(-1, 4, 1) @ weight.transpose(1, 2))
                + bias[:, None, None]}, args.repeats),
        }
    print(f"torch {torch.__version__}, {platform.machine()}, cpu, torch threads "
          f"{torch.get_num_threads()}; median of {args.repeats // 3} / {args.repeats} calls")
    gelu, conv_t = results["gelu"], results["conv_step"]
    print(f"GELU on (100, 60, 256): erf {gelu['erf'] * 1e3:.2f} ms, tanh {gelu['tanh'] * 1e3:.2f} "
          f"ms -> tanh / erf {gelu['tanh'] / gelu['erf']:.2f}x")
    print(f"depthwise conv, batch 1, 3 tokens: F.conv1d {conv_t['conv1d'] * 1e6:.1f} us, unfold @ "
          f"weight {conv_t['unfold_matmul'] * 1e6:.1f} us -> conv1d / unfold "
          f"{conv_t['conv1d'] / conv_t['unfold_matmul']:.2f}x")
    dt_t = results["dt_proj_grad"]
    print(f"dt_proj forward + weight gradient, 3840 tokens: transposed view "
          f"{dt_t['transposed_view'] * 1e3:.2f} ms, contiguous copy {dt_t['contiguous'] * 1e3:.2f} "
          f"ms -> view / contiguous {dt_t['transposed_view'] / dt_t['contiguous']:.2f}x")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(dict(torch=torch.__version__, device="cpu",
                                                  threads=torch.get_num_threads(),
                                                  median_s=results), indent=2))


if __name__ == "__main__":
    main()
