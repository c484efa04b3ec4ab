"""How long data.TrajectoryDataset.sample takes next to one Decision Transformer training step.

The sampler must not slow training down: a batch of 64 windows of K=20 steps should cost under
5% of a DT training step (forward + backward + AdamW) on the CPU. This builds a synthetic
Hopper-sized dataset (1000 trajectories x 1000 steps = 1M transitions) and times sample() and a
training step of dt.DecisionModel in turns (profile.py's time_cases), and prints their ratio.

Run:  python benchmarks/bench_sampler.py [--threads 1] [--out FILE]
"""
from dataclasses import asdict, dataclass

import numpy as np
import torch

from harness import profile_py, write_results  # first: puts the repository root on sys.path
from cli import option, parse_config
from data import Trajectory, TrajectoryDataset
from dt import DecisionConfig, DecisionModel


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
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    dataset = TrajectoryDataset([Trajectory(  # Hopper-sized random trajectories (obs 11, act 3)
        rng.normal(size=(cfg.length, 11)).astype(np.float32),
        rng.uniform(-1, 1, size=(cfg.length, 3)).astype(np.float32),
        rng.normal(size=cfg.length).astype(np.float32), False)
        for _ in range(cfg.trajectories)], context_len=cfg.context_len)
    model = DecisionModel(DecisionConfig(state_dim=11, act_dim=3, context_len=cfg.context_len))
    optimizer = torch.optim.AdamW(model.optim_groups(1e-4), lr=1e-4)
    batch = dataset.sample(cfg.batch_size, rng)

    def train_step():
        _, loss = model(batch["states"], batch["actions"], batch["returns_to_go"],
                        batch["timesteps"], batch["mask"], targets=batch["actions"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    stats = profile_py.time_cases({"sample": lambda: dataset.sample(cfg.batch_size, rng),
                                   "train_step": train_step}, "cpu", 3, cfg.repeats)
    percent = 100 * profile_py.ratio(stats["sample"], stats["train_step"])
    print(f"sample({cfg.batch_size}) at K={cfg.context_len} on {dataset.num_transitions:,} "
          f"transitions: {stats['sample']['median_ms']:.3f} ms; DT training step (forward + "
          f"backward + AdamW, {cfg.threads} thread(s)): {stats['train_step']['median_ms']:.2f} ms "
          f"-> sampler / training step {percent:.2f}% (target < 5%; medians of {cfg.repeats})")
    if cfg.out:
        write_results(cfg.out, dict(config=asdict(cfg), transitions=dataset.num_transitions,
                                    ratio_percent=percent, torch=torch.__version__, **stats))


if __name__ == "__main__":
    main()
