"""Behaviour policies and offline datasets for Hopper, HalfCheetah and Walker2d (Gymnasium v5).

Two jobs, one file:
  train    Augmented Random Search (ARS V2-t) trains a linear policy on normalised observations
           (runs/ars-{env}/ keeps every iteration's policy; --resume continues a run), then
           exports three small files to policies/: {env}-expert.npz (the best snapshot),
           {env}-medium.npz (the first snapshot reaching the medium target) and {env}-replay.npz
           (the snapshots on the way up to medium, in training order). `export` re-picks them.
  dataset  rolls those policies out and writes a D4RL-schema HDF5 file for one level:
           random (uniform actions), medium, expert, medium-replay (the replay snapshots in
           training order, each perturbed the way the trainer perturbed it), medium-expert
           (medium then expert, concatenated).

References (ideas only):
  Mania, Guy, Recht 2018, "Simple random search provides a competitive approach to RL" (ARS:
    antithetic directions, top-b directions, reward-std step size, state normalisation,
    subtracting the survival bonus while training).
  Fu et al. 2020, "D4RL" (dataset levels and the HDF5 schema).

Glossary of array dimensions:
  S  observation size (hopper 11, halfcheetah 17, walker2d 17)
  A  action size (hopper 3, halfcheetah 6, walker2d 6); actions live in [-1, 1]
  N  number of random directions per ARS iteration; b the top directions kept
  T  steps in one episode (at most the env's 1000-step limit)
"""
import argparse
import contextlib
import dataclasses
import functools
import json
import multiprocessing
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
from tqdm import tqdm

from data import (ENVS, LEVELS, DataError, dataset_path, env_key, normalized_score,
                  write_d4rl_hdf5)

POLICY_DIR = Path(__file__).resolve().parent / "policies"
# ARS V2-t settings per env (directions N, top b, step size alpha, exploration noise nu), as in
# Mania et al. 2018, Table 9; shift is the per-step survival bonus subtracted while training.
ARS_SETTINGS = {
    "hopper": dict(directions=8, top=4, step_size=0.01, explore=0.025, shift=1.0),
    "halfcheetah": dict(directions=32, top=4, step_size=0.02, explore=0.03, shift=0.0),
    "walker2d": dict(directions=40, top=30, step_size=0.03, explore=0.025, shift=1.0),
}
MEDIUM_FLOOR = {"hopper": 1000.0, "halfcheetah": 3000.0, "walker2d": 1000.0}
# Gaussian action-noise std when rolling out medium / expert policies into a dataset: the largest
# of 0, 0.05, 0.1, 0.2 that kept both levels' mean return within ~15% of the noiseless one
# (measured, see policies/README.md); linear policies are brittle, so mostly none.
ACTION_NOISE = {"hopper": 0.05, "halfcheetah": 0.0, "walker2d": 0.0}
MAX_EPISODE_STEPS = 1000


def field_help(default, doc):
    return field(default=default, metadata={"help": doc})


@dataclass(frozen=True)
class TrainConfig:
    env: str = field_help("hopper", "environment: hopper | halfcheetah | walker2d")
    iterations: int = field_help(1000, "ARS iterations (each rolls out 2N perturbed policies)")
    max_minutes: float = field_help(60.0, "stop early after this much wall time")
    seed: int = field_help(0, "training seed (directions and episode seeds)")
    directions: int = field_help(0, "N, random directions per iteration (0: the env's default)")
    top: int = field_help(0, "b, best directions used in the update (0: the env's default)")
    step_size: float = field_help(0.0, "alpha, update step size (0: the env's default)")
    explore: float = field_help(0.0, "nu, std of the parameter perturbation (0: the env's default)")
    shift: float = field_help(-1.0, "survival bonus subtracted per training step (-1: env default)")
    episode_steps: int = field_help(MAX_EPISODE_STEPS, "cap on steps per training episode")
    workers: int = field_help(1, "rollout processes (episodes of one iteration run in parallel)")
    resume: bool = field_help(False, "continue the run saved in runs/ars-{env}/ up to --iterations")
    eval_every: int = field_help(10, "evaluate the unperturbed policy every this many iterations")
    eval_episodes: int = field_help(5, "episodes per periodic evaluation")
    final_episodes: int = field_help(10, "episodes measuring the exported medium / expert policies")
    medium_fraction: float = field_help(0.4, "medium target = max(this * expert, issue floor)")
    replay_snapshots: int = field_help(100, "at most this many snapshots kept for medium-replay")
    policy_dir: str = field_help(str(POLICY_DIR), "where the exported policies go")
    log_dir: str = field_help("runs", "where the training history goes (runs/ars-{env}/)")


@dataclass(frozen=True)
class DatasetConfig:
    env: str = field_help("hopper", "environment: hopper | halfcheetah | walker2d")
    level: str = field_help("medium", "random | medium | medium-replay | expert | medium-expert")
    transitions: int = field_help(0, "transitions to write (0: 1M, 2M for medium-expert, "
                                     "the trainer's steps up to medium, at most 1M, for "
                                     "medium-replay)")
    out: str = field_help("", "output file (default data/{env}-{level}.hdf5)")
    seed: int = field_help(0, "dataset seed (episode seeds and exploration noise)")
    workers: int = field_help(2, "rollout processes")
    policy_dir: str = field_help(str(POLICY_DIR), "where the committed policies live")


# ----------------------------------------------------------------------------- small pieces

@functools.lru_cache
def make_env(env):
    """The bare MuJoCo env (no wrappers: faster), one per process; callers count steps up to
    the time limit."""
    return gym.make(ENVS[env_key(env)]).unwrapped


def versions():
    return {"numpy": np.__version__, "gymnasium": gym.__version__, "mujoco": mujoco.__version__,
            "python": sys.version.split()[0]}


@dataclass
class LinearPolicy:
    """a = clip(weights @ (obs - obs_mean) / obs_std, -1, 1); weights (A, S), stats (S,)."""
    weights: np.ndarray
    obs_mean: np.ndarray
    obs_std: np.ndarray

    def affine(self, weights=None):
        """The same map folded into (W, c) with a = W @ obs + c, for fast rollouts."""
        w = (self.weights if weights is None else weights) / self.obs_std  # (A, S)
        return w, -w @ self.obs_mean  # (A, S), (A,)


class RunningStats:
    """Mean and std of every observation seen so far (Chan et al. parallel update)."""

    def __init__(self, size):
        self.count, self.mean, self.m2 = 0, np.zeros(size), np.zeros(size)

    def update(self, x):  # x (T, S)
        n, mean = len(x), x.mean(0)
        delta, total = mean - self.mean, self.count + n
        self.m2 += ((x - mean) ** 2).sum(0) + delta ** 2 * self.count * n / total
        self.mean += delta * n / total
        self.count = total

    @property
    def std(self):  # floored so that a nearly constant coordinate cannot blow up the input
        if not self.count:
            return np.ones_like(self.mean)
        return np.maximum(np.sqrt(self.m2 / self.count), 1e-2)


def run_episode(env, w, c, seed, max_steps=MAX_EPISODE_STEPS, action_noise=0.0, rng=None):
    """One episode of a = clip(w @ obs + c [+ noise]); w None = uniform random actions.

    Returns observations (T, S), actions (T, A), rewards (T,) and whether it ended by a terminal
    (fell); an episode that reaches max_steps is truncated instead.
    """
    obs, _ = env.reset(seed=seed)
    low, high = env.action_space.low, env.action_space.high
    observations, actions, rewards, terminated = [], [], [], False
    for _ in range(max_steps):
        if w is None:
            action = rng.uniform(low, high)
        else:
            action = w @ obs + c
            if action_noise:
                action = action + action_noise * rng.standard_normal(len(c))
        action = np.clip(action, low, high)
        observations.append(obs)
        actions.append(action)
        obs, reward, terminated, _, _ = env.step(action)
        rewards.append(reward)
        if terminated:
            break
    return np.array(observations), np.array(actions), np.array(rewards), terminated


def evaluate_policy(env_obj, policy, seeds, action_noise=0.0, rng=None):
    w, c = policy.affine()
    return np.array([run_episode(env_obj, w, c, int(s), action_noise=action_noise, rng=rng)[2].sum()
                     for s in seeds])


def save_policy(path, policy, **meta):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, weights=policy.weights, obs_mean=policy.obs_mean, obs_std=policy.obs_std,
             meta=json.dumps(meta, sort_keys=True))
    return path


def read_npz(path):
    path = Path(path)
    if not path.exists():
        raise DataError(f"no policy file {path}: train one with "
                        "`python collect.py train --env ...`.")
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    return arrays, json.loads(str(arrays.pop("meta")))


def load_policy(env, level, policy_dir=POLICY_DIR):
    """The committed policy for env at level ('medium' or 'expert'), and its metadata."""
    arrays, meta = read_npz(Path(policy_dir) / f"{env_key(env)}-{level}.npz")
    return LinearPolicy(arrays["weights"], arrays["obs_mean"], arrays["obs_std"]), meta


# ----------------------------------------------------------------------------- ARS trainer

def ars_settings(cfg):
    """The config's ARS hyper-parameters with the env defaults filled in (0 / -1 = default)."""
    default = ARS_SETTINGS[cfg.env]
    return dict(directions=cfg.directions or default["directions"], top=cfg.top or default["top"],
                step_size=cfg.step_size or default["step_size"],
                explore=cfg.explore or default["explore"],
                shift=default["shift"] if cfg.shift < 0 else cfg.shift)


def training_rollout(job):
    """One ARS training episode (run in a worker): its observations, return and length."""
    env, weights, obs_mean, obs_std, seed, max_steps = job
    w, c = LinearPolicy(weights, obs_mean, obs_std).affine()
    obs, _, rewards, _ = run_episode(make_env(env), w, c, seed, max_steps=max_steps)
    return obs, rewards.sum(), len(rewards)


def train(cfg):
    """ARS V2-t. Keeps runs/ars-{env}/ up to date: log.jsonl, history.npz (every iteration's
    policy, the periodic evaluations, the trainer's state) and info.json; then exports policies/."""
    env_obj, hp = make_env(cfg.env), ars_settings(cfg)
    n, top, nu = hp["directions"], min(hp["top"], hp["directions"]), hp["explore"]
    rng = np.random.default_rng(cfg.seed)
    act_dim, obs_dim = env_obj.action_space.shape[0], env_obj.observation_space.shape[0]
    weights, stats = np.zeros((act_dim, obs_dim)), RunningStats(obs_dim)  # (A, S)
    eval_seeds = 1_000_000 + np.arange(cfg.eval_episodes)
    run_dir = Path(cfg.log_dir) / f"ars-{cfg.env}"
    run_dir.mkdir(parents=True, exist_ok=True)
    history = {k: [] for k in ("weights", "obs_mean", "obs_std", "steps", "train_return")}
    evals, steps, first, minutes_before, start = {}, 0, 0, 0.0, time.time()
    phases = [dict(from_iteration=0, **hp)]  # the hyper-parameters used from which iteration on
    if cfg.resume:  # continue exactly where the saved run stopped
        if not (run_dir / "info.json").exists():
            raise DataError(f"nothing to resume in {run_dir}: train without --resume first.")
        info = json.loads((run_dir / "info.json").read_text())
        with np.load(run_dir / "history.npz") as f:
            saved = {k: f[k] for k in f.files}
        history = {k: list(saved[k]) for k in history}
        evals = dict(zip(saved["eval_iterations"].tolist(), saved["eval_returns"].tolist()))
        weights = saved["last_weights"]
        stats.mean, stats.m2 = saved["stats_mean"], saved["stats_m2"]
        stats.count, rng.bit_generator.state = int(saved["stats_count"]), info["rng_state"]
        steps, first, minutes_before = info["env_steps"], info["iterations"], info["train_minutes"]
        phases = info.get("phases", [dict(from_iteration=0, **info["ars"])])
        if hp != {k: v for k, v in phases[-1].items() if k != "from_iteration"}:
            phases.append(dict(from_iteration=first, **hp))

    def save(iterations):
        np.savez(run_dir / "history.npz", **{k: np.array(v) for k, v in history.items()},
                 eval_iterations=np.array(list(evals)), eval_returns=np.array(list(evals.values())),
                 last_weights=weights, stats_count=stats.count, stats_mean=stats.mean,
                 stats_m2=stats.m2)
        minutes = round(minutes_before + (time.time() - start) / 60, 2)
        info = dict(env_id=ENVS[cfg.env], seed=cfg.seed, ars=hp, phases=phases,
                    iterations=iterations, env_steps=steps, train_minutes=minutes,
                    versions=versions(), rng_state=rng.bit_generator.state)
        (run_dir / "info.json").write_text(json.dumps(info, indent=1))

    log = open(run_dir / "log.jsonl", "a" if cfg.resume else "w")
    pool = multiprocessing.Pool(cfg.workers) if cfg.workers > 1 else None
    print(f"ARS on {ENVS[cfg.env]}: {hp}")
    for it in tqdm(range(first, cfg.iterations), desc=f"ARS {cfg.env}"):
        policy = LinearPolicy(weights.copy(), stats.mean.copy(), stats.std)
        for key, value in (("weights", policy.weights), ("obs_mean", policy.obs_mean),
                           ("obs_std", policy.obs_std), ("steps", steps)):
            history[key].append(value)
        if it % cfg.eval_every == 0:
            evals[it] = evaluate_policy(env_obj, policy, eval_seeds).mean()
        deltas = rng.standard_normal((n, act_dim, obs_dim))  # (N, A, S)
        jobs = [(cfg.env, weights + sign * nu * deltas[i], policy.obs_mean, policy.obs_std,
                 int(rng.integers(2**31)), cfg.episode_steps) for i in range(n) for sign in (1, -1)]
        seen, returns, lengths = zip(*(pool.map(training_rollout, jobs) if pool else
                                       map(training_rollout, jobs)))
        steps += sum(lengths)
        # returns minus the survival bonus, one row per direction: (+delta, -delta)
        shifted = (np.array(returns) - hp["shift"] * np.array(lengths)).reshape(n, 2)
        best = np.argsort(-shifted.max(1))[:top]  # the b directions with the best returns
        reward_std = shifted[best].std() or 1.0
        weights = weights + hp["step_size"] / (top * reward_std) * np.einsum(
            "n,nas->as", shifted[best, 0] - shifted[best, 1], deltas[best])
        stats.update(np.concatenate(seen))
        history["train_return"].append(np.mean(returns))
        log.write(json.dumps({"iteration": it, "steps": steps,
                              "minutes": (time.time() - start) / 60,
                              "train_return": float(np.mean(returns)),
                              "eval_return": float(evals[it]) if it in evals else None}) + "\n")
        log.flush()
        if it in evals:
            tqdm.write(f"it {it:4d}  steps {steps:9d}  eval {evals[it]:8.1f}  "
                       f"train {np.mean(returns):8.1f}")
            save(it + 1)
        if time.time() - start > 60 * cfg.max_minutes:
            break
    save(it + 1)
    if pool:
        pool.close()
    export_policies(cfg)
    return run_dir


def export_policies(cfg):
    """From a training run: expert = the best evaluated snapshot, medium = the first snapshot
    reaching the medium target, both re-measured on fresh seeds; replay = the snapshots from the
    start up to medium, in training order (at most cfg.replay_snapshots, evenly spaced)."""
    run_dir = Path(cfg.log_dir) / f"ars-{cfg.env}"
    if not (run_dir / "info.json").exists():
        raise DataError(f"no finished training run in {run_dir}: run `python collect.py train "
                        f"--env {cfg.env}` first.")
    info, env_obj = json.loads((run_dir / "info.json").read_text()), make_env(cfg.env)
    with np.load(run_dir / "history.npz") as f:
        history = {k: f[k] for k in f.files}

    def snapshot(it):
        return LinearPolicy(history["weights"][it], history["obs_mean"][it], history["obs_std"][it])

    def measure(it):
        return evaluate_policy(env_obj, snapshot(it), 2_000_000 + np.arange(cfg.final_episodes))

    order = history["eval_iterations"]
    expert_it = int(order[np.argmax(history["eval_returns"])])
    expert_returns = measure(expert_it)
    target = max(cfg.medium_fraction * expert_returns.mean(), MEDIUM_FLOOR[cfg.env])
    medium_it, medium_returns = expert_it, expert_returns
    # the periodic evaluations bracket the crossing; the first iteration inside it that
    # reaches the target over the full measurement is medium
    for k, (it, quick) in enumerate(zip(order, history["eval_returns"])):
        if it < expert_it and quick >= target:
            for candidate in range(order[k - 1] + 1 if k else 0, it + 1):
                if (r := measure(candidate)).mean() >= target:
                    medium_it, medium_returns = candidate, r
                    break
            if medium_it != expert_it:
                break
    else:
        print(f"warning: no snapshot before the expert reached the medium target {target:.0f}; "
              "medium = expert (train longer).")
    out = Path(cfg.policy_dir)
    for level, it, returns in (("expert", expert_it, expert_returns),
                               ("medium", medium_it, medium_returns)):
        save_policy(out / f"{cfg.env}-{level}.npz", snapshot(it), **info, level=level,
                    iteration=it, steps_at_snapshot=int(history["steps"][it]),
                    return_mean=float(returns.mean()), return_std=float(returns.std()),
                    episodes=len(returns), returns=[round(float(r), 3) for r in returns],
                    normalized_score=float(normalized_score(cfg.env, returns.mean())))
        print(f"{cfg.env}-{level}: iteration {it}, return {returns.mean():.1f} +- "
              f"{returns.std():.1f} over {len(returns)} episodes")
    n_keep = min(cfg.replay_snapshots, medium_it + 1)
    keep = np.unique(np.linspace(0, medium_it, n_keep).astype(int))  # evenly spaced, in order
    np.savez(out / f"{cfg.env}-replay.npz", weights=history["weights"][keep].astype(np.float32),
             obs_mean=history["obs_mean"][keep].astype(np.float32),
             obs_std=history["obs_std"][keep].astype(np.float32),
             iteration=keep, steps=history["steps"][keep],
             meta=json.dumps({**info, "level": "medium-replay", "medium_iteration": medium_it,
                              "trainer_steps_to_medium": int(history["steps"][medium_it])}))


# ----------------------------------------------------------------------------- datasets

def policy_sources(env, level, policy_dir):
    """What a level rolls out, part by part (medium-expert: medium, then expert), and the
    metadata to record. A part has its level name, its policy snapshots (weights (K, A, S),
    obs_mean (K, S), obs_std (K, S); None for uniform random actions), the std of the parameter
    noise drawn once per episode and the std of the Gaussian action noise."""
    if level == "random":
        return [dict(level=level, snapshots=None, param_noise=0.0, action_noise=0.0)], \
            {"policy": "uniform random actions"}
    if level == "medium-replay":  # the trainer's snapshots, perturbed as the trainer did
        arrays, meta = read_npz(Path(policy_dir) / f"{env}-replay.npz")
        snapshots = (arrays["weights"], arrays["obs_mean"], arrays["obs_std"])
        return [dict(level=level, snapshots=snapshots, param_noise=meta["ars"]["explore"],
                     action_noise=0.0)], meta
    parts, metas = [], {}
    for part in level.split("-"):
        policy, metas[part] = load_policy(env, part, policy_dir)
        snapshots = (policy.weights[None], policy.obs_mean[None], policy.obs_std[None])
        parts.append(dict(level=part, snapshots=snapshots, param_noise=0.0,
                          action_noise=ACTION_NOISE[env]))
    return parts, metas


def part_sizes(transitions, n_parts):
    return [transitions * (i + 1) // n_parts - transitions * i // n_parts for i in range(n_parts)]


def rollout_job(job):
    """Complete episodes until at least job['transitions'] steps (run in a worker process)."""
    env_obj, rng = make_env(job["env"]), np.random.default_rng(job["seed"])
    episodes, n = [], 0
    while n < job["transitions"]:
        w = c = None  # uniform random actions
        if job["policy"] is not None:
            weights, obs_mean, obs_std = job["policy"]
            weights = weights + job["param_noise"] * rng.standard_normal(weights.shape)
            w, c = LinearPolicy(weights, obs_mean, obs_std).affine()
        episodes.append(run_episode(env_obj, w, c, int(rng.integers(2**31)),
                                    action_noise=job["action_noise"], rng=rng))
        n += len(episodes[-1][2])
    return episodes


def plan_jobs(env, sources, transitions, seed, chunk=20_000):
    """Split the work into jobs in the order their data is written. A job's seed depends only on
    (seed, its part's level, its index), so medium-expert is medium followed by expert."""
    jobs = []
    for part, (source, n_part) in enumerate(zip(sources, part_sizes(transitions, len(sources)))):
        n_snap = 1 if source["snapshots"] is None else len(source["snapshots"][0])
        if n_snap > 1:  # replay: snapshots in training order, each ~1000 steps at least
            n_jobs = min(n_snap, max(1, n_part // 1000))
        else:
            n_jobs = -(-n_part // chunk)
        for k in range(n_jobs):
            snap = k * n_snap // n_jobs
            seed_k = np.random.SeedSequence(seed, spawn_key=(LEVELS.index(source["level"]), k))
            jobs.append(dict(env=env, part=part, seed=seed_k.generate_state(1)[0],
                             transitions=n_part * (k + 1) // n_jobs - n_part * k // n_jobs,
                             policy=None if source["snapshots"] is None else
                             tuple(np.asarray(x[snap], np.float64) for x in source["snapshots"]),
                             param_noise=source["param_noise"],
                             action_noise=source["action_noise"]))
    return jobs


def to_arrays(episodes, transitions):
    """Concatenate episodes and cut at exactly `transitions` steps (the cut ends in a timeout);
    also returns the returns of the episodes written whole."""
    obs, act, rew, terminals, timeouts, returns, n = [], [], [], [], [], [], 0
    for o, a, r, terminated in episodes:
        t = min(len(r), transitions - n)
        if t <= 0:
            break
        ends = np.zeros(t, bool)
        ends[-1] = True
        fell = terminated and t == len(r)
        obs.append(o[:t]), act.append(a[:t]), rew.append(r[:t])
        terminals.append(ends & fell), timeouts.append(ends & ~fell)
        if t == len(r):
            returns.append(r.sum())
        n += t
    return [np.concatenate(x) for x in (obs, act, rew, terminals, timeouts)] + [np.array(returns)]


def make_dataset(env, level, transitions=None, out=None, seed=0, workers=2, policy_dir=POLICY_DIR):
    """Roll out the committed policies for `level` and write a D4RL-schema HDF5 file; returns
    its path. Default size: 1M transitions (2M for medium-expert; for medium-replay the env
    steps the trainer took up to the medium snapshot, at most 1M)."""
    env = env_key(env)
    if level not in LEVELS:
        raise DataError(f"unknown level {level!r}: choose one of {', '.join(LEVELS)}.")
    sources, meta = policy_sources(env, level, policy_dir)
    if transitions is not None and transitions < len(sources):
        raise DataError(f"--transitions must be at least {len(sources)} for {level}, "
                        f"not {transitions}.")
    if transitions is None:
        transitions = {"medium-expert": 2_000_000, "medium-replay":
                       min(meta.get("trainer_steps_to_medium", 0), 1_000_000)}.get(level, 1_000_000)
    out = Path(out) if out else dataset_path(env, level)
    print(f"Generating {out}: {transitions:,} transitions of {ENVS[env]} at level {level!r} "
          f"({workers} workers).")
    jobs, start = plan_jobs(env, sources, transitions, seed), time.time()
    episodes = [[] for _ in sources]
    with tqdm(total=transitions, desc=f"{env}-{level}", unit="step") as bar:
        pool_or_none = multiprocessing.Pool(workers) if workers > 1 else contextlib.nullcontext()
        with pool_or_none as pool:
            results = pool.imap(rollout_job, jobs) if pool else map(rollout_job, jobs)
            for job, result in zip(jobs, results):
                episodes[job["part"]] += result
                bar.update(min(sum(len(e[2]) for e in result), bar.total - bar.n))
    sizes = part_sizes(transitions, len(sources))
    *arrays, returns = [np.concatenate(x) for x in
                        zip(*(to_arrays(e, n) for e, n in zip(episodes, sizes)))]
    # returns of the episodes written whole (none in a file shorter than one episode)
    ret_mean, ret_std = (returns.mean(), returns.std()) if len(returns) else (np.nan, np.nan)
    attrs = dict(env_id=ENVS[env], level=level, seed=seed, policy=json.dumps(meta, sort_keys=True),
                 versions=versions(), action_noise=[s["action_noise"] for s in sources],
                 param_noise=[s["param_noise"] for s in sources],
                 episode_return_mean=ret_mean, episode_return_std=ret_std,
                 episodes=len(returns), generation_seconds=round(time.time() - start, 1))
    path = write_d4rl_hdf5(out, *arrays, attrs=attrs)
    print(f"wrote {path}: {len(arrays[2]):,} transitions, {len(returns)} episodes, return "
          f"{ret_mean:.1f} +- {ret_std:.1f} (normalised {normalized_score(env, ret_mean):.1f}), "
          f"{time.time() - start:.0f} s")
    return path


# ----------------------------------------------------------------------------- command line

def add_config_arguments(parser, config_cls):
    for f in dataclasses.fields(config_cls):
        name, kind = f"--{f.name.replace('_', '-')}", type(f.default)
        if kind is bool:
            parser.add_argument(name, action="store_true", help=f.metadata["help"])
        else:
            parser.add_argument(name, type=kind, default=f.default, help=f.metadata["help"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add_config_arguments(commands.add_parser("train", help="train ARS behaviour policies"),
                         TrainConfig)
    add_config_arguments(commands.add_parser("export", help="re-pick medium / expert from a "
                                             "finished training run"), TrainConfig)
    add_config_arguments(commands.add_parser("dataset", help="write a D4RL-schema dataset"),
                         DatasetConfig)
    args = vars(parser.parse_args(argv))
    command = args.pop("command")
    try:
        if command == "train":
            train(TrainConfig(**{**args, "env": env_key(args["env"])}))
        elif command == "export":
            export_policies(TrainConfig(**{**args, "env": env_key(args["env"])}))
        else:
            cfg = DatasetConfig(**args)
            make_dataset(cfg.env, cfg.level, cfg.transitions or None, cfg.out or None, cfg.seed,
                         cfg.workers, cfg.policy_dir)
    except DataError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
