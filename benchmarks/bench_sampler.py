"""How long data.TrajectoryDataset.sample takes next to one Decision Transformer training step.

The sampler must not slow training down: a batch of 64 windows of K=20 steps should cost under
5% of a DT training step (forward + backward + clip + AdamW) on the CPU. This builds a synthetic
Hopper-sized dataset (1000 trajectories x 1000 steps = 1M transitions) and times sample() and
the DT training step profile.py times, in turns (timing.time_cases), and prints their ratio.

Run:  python benchmarks/bench_sampler.py [--threads 1] [--out FILE]
"""
from dataclasses import asdict, dataclass
from types import SimpleNamespace

import numpy as np
import torch

from harness import write_results  # first: puts the repository root on sys.path
from cli import option, parse_config
from data import Trajectory, TrajectoryDataset
from benchmarks import timing


@dataclass(frozen=True)
class BenchConfig:
    trajectories: int = option(1000, "synthetic trajectories")
    length: int = option(1000, "steps per synthetic trajectory")
    batch_size: int = option(64, "windows per batch (B)")
    context_len: int = option(20, "steps per window (K)")
    repeats: int = option(20, "timed sample() calls and training steps")
    threads: int = option(1, "torch CPU threads")
    seed: int = option(0, "seed of the data and the sampler")
    out: str = option(None, "also write the numbers as JSON here", type=str)


def main(argv=None):
    cfg = parse_config(BenchConfig, argv, __doc__.split("\n\n")[0])
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    dataset = TrajectoryDataset([Trajectory(  # Hopper-sized random trajectories (obs 11, act 3)
        rng.normal(size=(cfg.length, 11)).astype(np.float32),
        rng.uniform(-1, 1, size=(cfg.length, 3)).astype(np.float32),
        rng.normal(size=cfg.length).astype(np.float32), False)
        for _ in range(cfg.trajectories)], context_len=cfg.context_len)
    train_step = timing.train_step_call(  # the DT's default size at Hopper's obs and act
        SimpleNamespace(state_dim=11, act_dim=3, seed=cfg.seed), "dt", cfg.batch_size,
        cfg.context_len, torch.device("cpu"))
    stats = timing.time_cases({"sample": lambda: dataset.sample(cfg.batch_size, rng),
                                   "train_step": train_step}, "cpu", 3, cfg.repeats)
    percent = 100 * timing.ratio(stats["sample"], stats["train_step"])
    print(f"sample({cfg.batch_size}) at K={cfg.context_len} on {dataset.num_transitions:,} "
          f"transitions: {stats['sample']['median_ms']:.3f} ms; DT training step ({cfg.threads} "
          f"thread(s)): {stats['train_step']['median_ms']:.2f} ms -> sampler / training step "
          f"{percent:.2f}% (target < 5%; medians of {cfg.repeats})")
    if cfg.out:
        write_results(cfg.out, dict(config=asdict(cfg), transitions=dataset.num_transitions,
                                    ratio_percent=percent, torch=torch.__version__, **stats))


if __name__ == "__main__":
    main()
