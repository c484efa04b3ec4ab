"""CPU benchmark of evaluation: batched rollouts vs. the simulation alone vs. one episode at a time.

For N episodes of an env (default hopper, 100), timed in turns (timing.time_cases):
  batched  evaluate.evaluate: all N episodes together, one model call per env step (DT in window
           mode, Mamba in recurrent mode; Mamba in window mode too with --mamba-window)
  sim      the envs alone: N envs made, then stepped round-robin with a zero action for as many
           env steps as the batched evaluation made: the floor any evaluation pays
  batch1   evaluate() one episode at a time (the original DT code's way), scaled per env step
-> batched / sim (the target is <= 2) and batch1 / batched (the speed-up of batching).
Random-weight models of train.py's default size (or --run RUN_DIR's). A random policy falls
within a few dozen steps, so the envs run with terminate_when_unhealthy=False: every episode
lasts the time limit (--terminate keeps the real endings).

Run:  python benchmarks/bench_eval.py [--episodes 100] [--threads 1] [--out F.json]
"""
import os
import platform
from dataclasses import asdict, dataclass

import gymnasium as gym
import mujoco
import numpy as np
import torch

from harness import write_results  # first: puts the repository root on sys.path
from cli import option, parse_config
from data import ENVS
from dt import MODELS, DecisionConfig, DecisionModel
from evaluate import TARGET_RETURNS, evaluate, load_run
from train import TrainConfig
from benchmarks import timing


@dataclass(frozen=True)
class BenchConfig:
    env: str = option("hopper", "hopper | halfcheetah | walker2d", choices=tuple(ENVS))
    episodes: int = option(100, "N, evaluated as one batch")
    single_episodes: int = option(5, "episodes of the batch-1 baseline (scaled per env step)")
    max_episode_steps: int = option(1000, "time limit of every episode")
    terminate: bool = option(False, "keep the env's own endings (falls) instead of full episodes")
    run: str = option(None, "a train.py run folder to time instead of random weights", type=str)
    mamba_window: bool = option(False, "also time Mamba in window mode (slow: K steps re-encoded)")
    rounds: int = option(1, "times each of the three is run (the median is reported)")
    threads: int = option(0, "torch threads (0: torch's default, as evaluate.py runs; the envs "
                             "always step on the main thread)")
    out: str = option(None, "also write the figures as JSON here", type=str)


def random_models(env, mamba_window):
    """Random-weight models of train.py's default sizes: (name, model, mode) triples."""
    d, probe = TrainConfig(), gym.make(ENVS[env])
    obs_dim, act_dim = probe.observation_space.shape[0], probe.action_space.shape[0]
    models = []
    runs = [("dt", "window"), ("mamba", "recurrent"), ("mamba", "window")][:2 + mamba_window]
    for name, mode in runs:
        torch.manual_seed(0)
        models.append((name, DecisionModel(DecisionConfig(
            state_dim=obs_dim, act_dim=act_dim, backbone=MODELS[name], d_model=d.d_model,
            n_layer=d.n_layer, n_head=d.n_head, mamba_n_layer=d.mamba_n_layer,
            context_len=int(d.context))).eval(), mode))
    return models, np.zeros(obs_dim), np.ones(obs_dim)


def simulate(cfg, total_steps, env_kwargs):
    """N envs made, then stepped round-robin with a zero action for total_steps env steps."""
    envs = [gym.make(ENVS[cfg.env], max_episode_steps=cfg.max_episode_steps, **env_kwargs)
            for _ in range(cfg.episodes)]
    action = np.zeros(envs[0].action_space.shape, dtype=np.float32)
    for i, e in enumerate(envs):
        e.reset(seed=i)
    for step in range(total_steps):
        e = envs[step % len(envs)]
        _, _, terminated, truncated, _ = e.step(action)
        if terminated or truncated:
            e.reset()


def main(argv=None):
    cfg = parse_config(BenchConfig, argv, __doc__.split("\n")[0])
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
        steps = {}  # env steps made by each case's last call; sim follows the batched one's

        def batched():
            steps["batched"] = evaluate(model, cfg.env, episodes=cfg.episodes, mode=mode,
                                        **common)["env_steps"]

        def batch1():
            steps["batch1"] = sum(evaluate(model, cfg.env, episodes=1, seed=10_000 + i,
                                           mode=mode, **common)["env_steps"]
                                  for i in range(cfg.single_episodes))
        stats = timing.time_cases({"batched": batched, "sim": lambda: simulate(
            cfg, steps["batched"], env_kwargs), "batch1": batch1}, "cpu", 0, cfg.rounds)
        seconds = {case: s["median_ms"] / 1e3 for case, s in stats.items()}
        row = dict(model=name, mode=mode, env_steps=steps["batched"], **{f"{case}_s": s for
                   case, s in seconds.items()}, timings=stats, batch1_episodes=cfg.single_episodes,
                   batch1_s_scaled=seconds["batch1"] / steps["batch1"] * steps["batched"])
        row.update(batched_over_sim=timing.ratio(stats["batched"], stats["sim"]),
                   speedup_over_batch1=row["batch1_s_scaled"] / seconds["batched"])
        rows.append(row)
        print(f"{name:5s} {mode:9s}: {row['env_steps']} env steps; batched {seconds['batched']:.1f}"
              f" s = {row['batched_over_sim']:.2f} x sim ({seconds['sim']:.1f} s); batch-1 would "
              f"take {row['batch1_s_scaled']:.1f} s (from {cfg.single_episodes} episodes) -> "
              f"{row['speedup_over_batch1']:.1f} x speed-up", flush=True)
    machine = dict(timing.versions(), device="cpu", cpu_count=os.cpu_count(),
                   processor=platform.processor() or platform.machine(),
                   torch_threads=torch.get_num_threads(), gymnasium=gym.__version__,
                   mujoco=mujoco.__version__)
    print("machine:", machine)
    if cfg.out:
        write_results(cfg.out, dict(config=asdict(cfg), machine=machine, results=rows))


if __name__ == "__main__":
    main()
