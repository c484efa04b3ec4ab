"""How long data.TrajectoryDataset.sample takes next to one Decision Transformer training step.

The sampler must not slow training down: a batch of 64 windows of K=20 steps should cost under
5% of a DT training step (forward + backward + AdamW) on the CPU. This builds a synthetic
Hopper-sized dataset (1000 trajectories x 1000 steps = 1M transitions), times sample() and a
training step of dt.DecisionModel (or, if dt.py cannot be imported, a stand-in transformer of
the same size, and says so), and prints both with their ratio.

Run from the repository root:  python benchmarks/bench_sampler.py [--threads 1] [--out FILE]
"""
import argparse
import json
import statistics
import sys
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from data import Trajectory, TrajectoryDataset  # noqa: E402


@dataclass
class BenchConfig:
    trajectories: int = field(default=1000, metadata={"help": "synthetic trajectories"})
    length: int = field(default=1000, metadata={"help": "steps per synthetic trajectory"})
    batch_size: int = field(default=64, metadata={"help": "windows per batch (B)"})
    context_len: int = field(default=20, metadata={"help": "steps per window (K)"})
    sample_repeats: int = field(default=300, metadata={"help": "timed sample() calls"})
    step_repeats: int = field(default=20, metadata={"help": "timed training steps"})
    threads: int = field(default=1, metadata={"help": "torch CPU threads"})
    seed: int = field(default=0, metadata={"help": "seed of the data and the sampler"})
    out: str = field(default="", metadata={"help": "also write the numbers as JSON here"})


def synthetic_dataset(cfg: BenchConfig) -> TrajectoryDataset:
    """Hopper-sized random trajectories (obs 11, act 3)."""
    rng = np.random.default_rng(cfg.seed)
    trajectories = [Trajectory(rng.normal(size=(cfg.length, 11)).astype(np.float32),
                               rng.uniform(-1, 1, size=(cfg.length, 3)).astype(np.float32),
                               rng.normal(size=cfg.length).astype(np.float32), False)
                    for _ in range(cfg.trajectories)]
    return TrajectoryDataset(trajectories, context_len=cfg.context_len)


class StandInDT(nn.Module):
    """Used only when dt.py is missing: DT-sized (3 layers, width 128, 3K tokens) transformer."""

    def __init__(self, state_dim, act_dim, d_model=128):
        super().__init__()
        self.embed = nn.ModuleList([nn.Linear(1, d_model), nn.Linear(state_dim, d_model),
                                    nn.Linear(act_dim, d_model)])
        self.time = nn.Embedding(1000, d_model)
        layer = nn.TransformerEncoderLayer(d_model, 1, 4 * d_model, 0.1, batch_first=True)
        self.backbone = nn.TransformerEncoder(layer, 3)
        self.head = nn.Linear(d_model, act_dim)

    def forward(self, states, actions, returns_to_go, timesteps, mask, targets=None):
        B, K = mask.shape
        time = self.time(timesteps)  # (B, K, C)
        tokens = torch.stack([e(x) + time for e, x in zip(self.embed, (returns_to_go, states,
                                                                      actions))], 2)  # (B, K, 3, C)
        causal = nn.Transformer.generate_square_subsequent_mask(3 * K)
        h = self.backbone(tokens.reshape(B, 3 * K, -1), mask=causal)  # (B, 3K, C)
        pred = torch.tanh(self.head(h[:, 1::3]))  # (B, K, act), read at the state tokens
        loss = (((pred - targets) ** 2).mean(-1) * mask).sum() / mask.sum()
        return pred, loss


def make_model():
    try:
        from dt import DecisionConfig, DecisionModel
    except ImportError as e:
        print(f"dt.py not importable ({e}): timing a stand-in transformer of DT's size")
        model = StandInDT(11, 3)
        return model, torch.optim.AdamW(model.parameters(), lr=1e-4), "stand-in"
    model = DecisionModel(DecisionConfig(state_dim=11, act_dim=3))
    return model, torch.optim.AdamW(model.optim_groups(1e-4), lr=1e-4), "dt.DecisionModel"


def median_seconds(fn, repeats, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(cfg: BenchConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    dataset = synthetic_dataset(cfg)
    rng = np.random.default_rng(cfg.seed)
    sample_s = median_seconds(lambda: dataset.sample(cfg.batch_size, rng), cfg.sample_repeats)

    model, optimizer, model_name = make_model()
    model.train()
    batch = dataset.sample(cfg.batch_size, rng)

    def train_step():
        _, loss = model(batch["states"], batch["actions"], batch["returns_to_go"],
                        batch["timesteps"], batch["mask"], targets=batch["actions"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step_s = median_seconds(train_step, cfg.step_repeats)
    return {"config": asdict(cfg), "model": model_name, "transitions": dataset.num_transitions,
            "sample_ms": 1e3 * sample_s, "train_step_ms": 1e3 * step_s,
            "ratio_percent": 100 * sample_s / step_s, "torch": torch.__version__}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in fields(BenchConfig):
        assert f.default is not MISSING
        parser.add_argument(f"--{f.name}", type=type(f.default), default=f.default,
                            help=f.metadata["help"])
    cfg = BenchConfig(**vars(parser.parse_args(argv)))
    result = bench(cfg)
    print(f"sample({cfg.batch_size}) at K={cfg.context_len} on {result['transitions']:,} "
          f"transitions: {result['sample_ms']:.3f} ms (median of {cfg.sample_repeats})")
    print(f"{result['model']} training step (B={cfg.batch_size}, K={cfg.context_len}, forward + "
          f"backward + AdamW, {cfg.threads} CPU thread(s)): {result['train_step_ms']:.2f} ms")
    print(f"sampler / training step: {result['ratio_percent']:.2f}% (target < 5%)")
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
