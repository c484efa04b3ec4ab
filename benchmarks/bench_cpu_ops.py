"""CPU micro-benchmark of three choices made in the models, each pair timed in turns in one process.

1. GELU in the DT's MLP: exact (erf) vs the tanh approximation of GPT-2 / the original DT code,
   on the hidden activation of a batched acting call (100 episodes x 60 tokens x 4 * 64).
2. The depthwise causal conv of MambaBlock.step at batch 1 (3 new tokens, d_inner 256, width 4):
   F.conv1d vs one batched matrix product over unfolded windows.
3. dt_proj in MambaBlock's training step (tokens 64 x 60, rank 8, d_inner 256), forward and
   the weight's gradient: `dt @ W.t()` (a transposed view, whose gradient autograd computes as
   the (256, 8) product g^T dt) vs `dt @ W.t().contiguous()` (gradient dt^T g, (8, 256)).

Run:  python benchmarks/bench_cpu_ops.py [--threads 1] [--repeats 300] [--out F.json]
Prints each variant's median and the pair's ratio (timing.time_cases: times in ms).
"""
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from harness import write_results  # first: puts the repository root on sys.path
from cli import option, parse_config
from benchmarks import timing


@dataclass(frozen=True)
class BenchConfig:
    threads: int = option(0, "torch threads (0: torch's default)")
    repeats: int = option(300, "timed calls per conv variant (a third of it for GELU and dt_proj)")
    out: str = option(None, "also write the results as JSON here", type=str)


def main(argv=None):
    cfg = parse_config(BenchConfig, argv, __doc__.splitlines()[0])
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
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
    pairs = {"dt_proj_grad": ({"transposed_view": lambda: dt_proj_grad(False),
                               "contiguous": lambda: dt_proj_grad(True)}, cfg.repeats // 3),
             "gelu": ({"erf": lambda: F.gelu(hidden),
                       "tanh": lambda: F.gelu(hidden, approximate="tanh")}, cfg.repeats // 3),
             "conv_step": ({"conv1d": lambda: F.conv1d(window, weight, bias, groups=256),
                            "unfold_matmul": lambda: (window.unfold(-1, 4, 1) @ weight.transpose(
                                1, 2)) + bias[:, None, None]}, cfg.repeats)}
    results = {}
    for name, (cases, repeats) in pairs.items():
        with torch.inference_mode(name != "dt_proj_grad"):
            results[name] = stats = timing.time_cases(cases, "cpu", 20, repeats)
        (a, sa), (b, sb) = stats.items()
        print(f"{name}: {a} {sa['median_ms']:.4g} ms, {b} {sb['median_ms']:.4g} ms -> {a} / {b} "
              f"{timing.ratio(sa, sb):.2f}x (median of {repeats})")
    print(f"torch {torch.__version__}, cpu, torch threads {torch.get_num_threads()}")
    if cfg.out:
        write_results(cfg.out, dict(config=asdict(cfg), torch=torch.__version__, device="cpu",
                                    threads=torch.get_num_threads(), results=results))


if __name__ == "__main__":
    main()
