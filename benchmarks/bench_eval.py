"""CPU benchmark of evaluation: batched rollouts vs. the simulation alone vs. one episode at a time.

For N episodes of an env (default hopper, 100) it measures, per env step:
  sim        the envs alone: N envs stepped round-robin with a fixed (zero) action, reset when
             done, for exactly as many env steps as the evaluation made (the floor any
             evaluation pays)
  batched    evaluate.evaluate: all N episodes together, one model call per env step
             (Decision Transformer in window mode, Decision Mamba in recurrent mode; window
             mode too with --mamba-window)
  batch-1    the same evaluate() called with one episode at a time (the original DT code's way),
             on fewer episodes and scaled per env step
and prints batched / sim (the target is <= 2) and batch-1 / batched (the speed-up).

Models are random-weight models of train.py's default size (or --run RUN_DIR's trained one).
A random policy falls within a few dozen steps, so by default the envs run with
terminate_when_unhealthy=False: every episode lasts the full time limit, and all three
measurements make the same number of steps per episode (--terminate keeps the real endings).

Run:  .venv/bin/python benchmarks/bench_eval.py [--episodes 100] [--threads 1] [--out F.json]
(--threads 0, the default, keeps torch's thread count, as evaluate.py runs; the envs always step on
the main thread)
"""
import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data import ENVS  # noqa: E402
from dt import DecisionConfig, DecisionModel  # noqa: E402
from evaluate import TARGET_RETURNS, evaluate, load_run  # noqa: E402
from train import MODELS, TrainConfig  # noqa: E402


@dataclass
class BenchConfig:
    env: str = "hopper"          # hopper | halfcheetah | walker2d
    episodes: int = 100          # N, evaluated as one batch
    single_episodes: int = 5     # episodes of the batch-1 baseline (scaled per env step)
    max_episode_steps: int = 1000  # time limit of every episode
    terminate: bool = False      # keep the env's own endings (falls) instead of full episodes
    run: str = ""                # a train.py run folder to time instead of random weights
    mamba_window: bool = False   # also time Mamba in window mode (slow: K steps re-encoded)
    threads: int = 0             # torch threads, 0 = torch's default (as evaluate.py runs);
                                 # the envs step on the main thread either way
    out: str = ""                # also write the figures as JSON here


def random_models(env, mamba_window):
    """Random-weight models of train.py's default sizes: (name, model, mode) triples."""
    d = TrainConfig()
    probe = gym.make(ENVS[env])
    obs_dim, act_dim = probe.observation_space.shape[0], probe.action_space.shape[0]
    models = []
    runs = [("dt", "window"), ("mamba", "recurrent")] + [("mamba", "window")] * mamba_window
    for name, mode in runs:
        torch.manual_seed(0)
        model = DecisionModel(DecisionConfig(
            state_dim=obs_dim, act_dim=act_dim, backbone=MODELS[name], d_model=d.d_model,
            n_layer=d.n_layer, n_head=d.n_head, mamba_n_layer=d.mamba_n_layer,
            context_len=int(d.context))).eval()
        models.append((name, model, mode))
    return models, np.zeros(obs_dim), np.ones(obs_dim)


def time_simulation(env, episodes, total_steps, env_kwargs, max_episode_steps):
    """Seconds for `total_steps` env steps of N envs stepped round-robin with a zero action."""
    envs = [gym.make(ENVS[env], max_episode_steps=max_episode_steps, **env_kwargs)
            for _ in range(episodes)]
    action = np.zeros(envs[0].action_space.shape, dtype=np.float32)
    start = time.perf_counter()
    for i, e in enumerate(envs):
        e.reset(seed=i)
    steps = 0
    while steps < total_steps:
        for e in envs:
            _, _, terminated, truncated, _ = e.step(action)
            if terminated or truncated:
                e.reset()
            steps += 1
            if steps == total_steps:
                break
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f in fields(BenchConfig):
        if isinstance(f.default, bool):
            parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, action="store_true")
        else:
            parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=f.default,
                                type=type(f.default))
    cfg = BenchConfig(**vars(parser.parse_args(argv)))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    env_kwargs = {} if cfg.terminate or cfg.env == "halfcheetah" else {
        "terminate_when_unhealthy": False}
    if cfg.run:
        model, ckpt = load_run(cfg.run)
        mode = "recurrent" if model.config.backbone == "mamba" else "window"
        models = [(ckpt["config"]["model"], model, mode)]
        state_mean, state_std = ckpt["state_mean"], ckpt["state_std"]
    else:
        models, state_mean, state_std = random_models(cfg.env, cfg.mamba_window)
    common = dict(state_mean=state_mean, state_std=state_std, return_scale=1000.0,
                  target_return=TARGET_RETURNS[cfg.env], max_episode_steps=cfg.max_episode_steps,
                  env_kwargs=env_kwargs, device="cpu")

    rows = []
    for name, model, mode in models:
        # The simulation is timed just before and just after the evaluation and averaged, so
        # that a change in machine speed (shared CPUs drift) falls on both sides alike. Before
        # the evaluation its step count is only known when every episode runs to the time limit.
        sims = [] if cfg.terminate else [time_simulation(
            cfg.env, cfg.episodes, cfg.episodes * cfg.max_episode_steps, env_kwargs,
            cfg.max_episode_steps)]
        batched = evaluate(model, cfg.env, episodes=cfg.episodes, mode=mode,
                           context_len=model.config.context_len, **common)
        sims.append(time_simulation(cfg.env, cfg.episodes, batched["env_steps"], env_kwargs,
                                    cfg.max_episode_steps))
        sim_s = sum(sims) / len(sims)
        singles = [evaluate(model, cfg.env, episodes=1, seed=10_000 + i, mode=mode,
                            context_len=model.config.context_len, **common)
                   for i in range(cfg.single_episodes)]
        single_per_step = (sum(r["wall_time_s"] for r in singles)
                           / sum(r["env_steps"] for r in singles))  # s per env step, batch 1
        row = {"model": name, "mode": mode, "env_steps": batched["env_steps"],
               "batched_s": batched["wall_time_s"], "sim_s": sim_s, "sim_runs_s": sims,
               "batch1_s_scaled": single_per_step * batched["env_steps"],
               "batch1_episodes": cfg.single_episodes}
        row["batched_over_sim"] = row["batched_s"] / sim_s
        row["speedup_over_batch1"] = row["batch1_s_scaled"] / row["batched_s"]
        rows.append(row)
        print(f"{name:5s} {mode:9s}: {row['env_steps']} env steps; batched {row['batched_s']:.1f} s"
              f" = {row['batched_over_sim']:.2f} x sim ({sim_s:.1f} s, mean of "
              f"{', '.join(f'{x:.1f}' for x in sims)}); batch-1 would take "
              f"{row['batch1_s_scaled']:.1f} s (from {cfg.single_episodes} episodes) -> "
              f"{row['speedup_over_batch1']:.1f} x speed-up", flush=True)

    machine = {"device": "cpu", "processor": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "python": platform.python_version(),
               "torch": torch.__version__, "gymnasium": gym.__version__,
               "mujoco": mujoco.__version__, "numpy": np.__version__}
    print("config:", json.dumps(asdict(cfg)), "\nmachine:", json.dumps(machine))
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(json.dumps({"config": asdict(cfg), "machine": machine,
                                             "results": rows}, indent=2))


if __name__ == "__main__":
    main()
