"""Behaviour policies and offline datasets for Hopper, HalfCheetah and Walker2d (Gymnasium v5).

Two jobs, one file:
  train    TD3, an off-policy actor-critic, learns a policy for one env from scratch. The run
           folder runs/td3-{env}/ holds a resumable checkpoint (networks, optimisers, replay
           buffer, RNG states, step), an actor snapshot every `snapshot_every` env steps with a
           10-episode evaluation of each, and log.jsonl. At the end (or `collect.py export`)
           three files go to policies/: {env}-expert.npz (the best late snapshot),
           {env}-medium.npz (the first snapshot at D4RL's medium level) and {env}-replay.npz
           (the snapshots from the start up to medium, in training order).
  dataset  rolls those policies out into a D4RL-schema HDF5 file for one level:
           random (uniform actions), medium, expert (each policy's actions with the Gaussian
           noise measured for it at export), medium-replay (the trainer's data regenerated:
           uniform actions for the warm-up, then each snapshot with the trainer's exploration
           noise, in training order), medium-expert (medium then expert, concatenated).

Why TD3 and not SAC: at the same network sizes a TD3 update costs about half a SAC update on
this project's CPUs (the actor learns every second step and has no entropy term), and D4RL-like
levels need about a million updates per env; TD3 reaches D4RL's expert returns on all three
tasks at 1M steps (Fujimoto et al. 2018; CleanRL's benchmarks).

References (ideas only):
  Fujimoto, van Hoof, Meger 2018, "Addressing Function Approximation Error in Actor-Critic
    Methods" (TD3: clipped double Q, delayed actor updates, target policy smoothing).
  Huang et al. 2022, CleanRL (single-file TD3 settings: 256x256 networks, 25k random steps).
  Fu et al. 2020, "D4RL" (dataset levels and the HDF5 schema).

Glossary of array dimensions:
  S  observation size (hopper 11, halfcheetah 17, walker2d 17)
  A  action size (hopper 3, halfcheetah 6, walker2d 6); actions live in [-1, 1]
  H  hidden width of the actor and critic MLPs       K  actor snapshots kept
  T  steps in one episode (at most the env's 1000-step limit)
"""
import contextlib
import copy
import dataclasses
import functools
import json
import multiprocessing
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from cli import atomic_write, option, parse_config
from data import (ENVS, LEVELS, DataError, dataset_path, env_key, normalized_score,
                  write_d4rl_hdf5)

POLICY_DIR = Path(__file__).resolve().parent / "policies"
MAX_EPISODE_STEPS = 1000
# D4RL's medium level, the mean return of its v2 medium datasets: a snapshot is medium once its
# 10-episode evaluation reaches this (40-60% of D4RL's expert datasets).
MEDIUM_LEVEL = {"hopper": 1422.0, "halfcheetah": 4770.0, "walker2d": 2852.0}
NOISE_CHOICES = (0.0, 0.1, 0.2, 0.3)  # Gaussian action-noise stds tried for each dataset policy
EVAL_SEED, MEASURE_SEED = 1_000_000, 2_000_000  # periodic evaluations / export measurements


@dataclass(frozen=True)
class TrainConfig:
    env: str = option("hopper", "environment: hopper | halfcheetah | walker2d")
    steps: int = option(1_000_000, "env steps to train for (one update per step)")
    max_minutes: float = option(0.0, "stop (checkpointed, resumable) after this much wall "
                                         "time in this call; 0: no limit")
    seed: int = option(0, "training seed (networks, exploration, episode seeds)")
    random_steps: int = option(25_000, "uniform-random actions before learning starts")
    batch_size: int = option(100, "transitions per update (the TD3 paper's 100)")
    hidden: int = option(256, "H, width of the two hidden layers of actor and critics")
    lr: float = option(3e-4, "Adam learning rate of actor and critics")
    gamma: float = option(0.99, "discount")
    tau: float = option(0.005, "target networks move this fraction towards the online ones")
    explore: float = option(0.1, "std of the Gaussian exploration noise on actions")
    target_noise: float = option(0.2, "std of the target policy smoothing noise")
    target_noise_clip: float = option(0.5, "the smoothing noise is clipped to +- this")
    actor_every: int = option(2, "actor and targets update once per this many critic updates")
    checkpoint_every: int = option(20_000, "save a resumable checkpoint after the episode "
                                               "that crosses every this many env steps")
    snapshot_every: int = option(10_000, "keep and evaluate an actor snapshot every this "
                                             "many env steps")
    eval_episodes: int = option(10, "episodes per snapshot evaluation (deterministic actor)")
    threads: int = option(1, "torch threads (one core per env trains three envs at once)")
    resume: bool = option(False, "continue the run in runs/td3-{env}/ up to --steps")
    late_fraction: float = option(0.5, "expert = the best snapshot in the last this "
                                           "fraction of training")
    replay_snapshots: int = option(30, "at most this many snapshots kept for medium-replay")
    final_episodes: int = option(10, "episodes measuring each exported policy and noise")
    policy_dir: str = option(str(POLICY_DIR), "where the exported policies go")
    log_dir: str = option("runs", "where the training run goes (runs/td3-{env}/)")


@dataclass(frozen=True)
class DatasetConfig:
    env: str = option("hopper", "environment: hopper | halfcheetah | walker2d")
    level: str = option("medium", "random | medium | medium-replay | expert | medium-expert")
    transitions: int = option(0, "transitions to write (0: 1M, 2M for medium-expert, "
                                     "the trainer's steps up to medium, at most 1M, for "
                                     "medium-replay)")
    out: str = option("", "output file (default data/{env}-{level}.hdf5)")
    seed: int = option(0, "dataset seed (episode seeds and action noise)")
    workers: int = option(2, "rollout processes")
    policy_dir: str = option(str(POLICY_DIR), "where the committed policies live")


# ----------------------------------------------------------------------------- small pieces

@functools.lru_cache
def make_env(env):
    """The bare MuJoCo env (no wrappers: faster), one per process; callers count steps up to
    the time limit."""
    return gym.make(ENVS[env_key(env)]).unwrapped


def versions():
    return {"numpy": np.__version__, "torch": torch.__version__, "gymnasium": gym.__version__,
            "mujoco": mujoco.__version__, "python": sys.version.split()[0]}


@dataclass
class MlpPolicy:
    """a = tanh(W3 relu(W2 relu(W1 s + b1) + b2) + b3), the TD3 actor as numpy arrays, so that
    rollouts need no torch. layers: [(W (H, S), b (H,)), (W (H, H), b), (W (A, H), b (A,))]."""
    layers: list

    def __call__(self, obs):  # (S,) -> (A,)
        h = obs
        for w, b in self.layers[:-1]:
            h = np.maximum(w @ h + b, 0.0)
        w, b = self.layers[-1]
        return np.tanh(w @ h + b)

    def arrays(self):
        return {f"{name}{i}": x for i, (w, b) in enumerate(self.layers)
                for name, x in (("w", w), ("b", b))}

    @classmethod
    def from_arrays(cls, arrays):
        """From the arrays w0, b0, w1, b1, ... of one actor (float16 or float32)."""
        n = sum(k.startswith("w") and k[1:].isdigit() for k in arrays)
        return cls([(arrays[f"w{i}"].astype(np.float64), arrays[f"b{i}"].astype(np.float64))
                    for i in range(n)])


def run_episode(env, policy, seed, max_steps=MAX_EPISODE_STEPS, action_noise=0.0, rng=None):
    """One episode of a = clip(policy(obs) [+ noise]); policy None = uniform random actions.

    Returns observations (T, S), actions (T, A), rewards (T,) and whether it ended by a terminal
    (fell); an episode that reaches max_steps is truncated instead.
    """
    obs, _ = env.reset(seed=seed)
    low, high = env.action_space.low, env.action_space.high
    observations, actions, rewards, terminated = [], [], [], False
    for _ in range(max_steps):
        if policy is None:
            action = rng.uniform(low, high)
        else:
            action = policy(obs)
            if action_noise:
                action = action + action_noise * rng.standard_normal(len(action))
        action = np.clip(action, low, high)
        observations.append(obs)
        actions.append(action)
        obs, reward, terminated, _, _ = env.step(action)
        rewards.append(reward)
        if terminated:
            break
    return np.array(observations), np.array(actions), np.array(rewards), terminated


def evaluate_policy(env_obj, policy, seeds, action_noise=0.0, rng=None):
    return np.array([run_episode(env_obj, policy, int(s), action_noise=action_noise,
                                 rng=rng)[2].sum() for s in seeds])


def save_policy(path, policy, **meta):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{k: v.astype(np.float32) for k, v in policy.arrays().items()},
             meta=json.dumps(meta, sort_keys=True))
    return path


def read_npz(path, env):
    """A policy file's arrays and metadata; the file must belong to env."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"no policy file {path}: train one with "
                        f"`python collect.py train --env {env}`.")
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(str(arrays.pop("meta")))
    except Exception as e:  # a truncated zip, a foreign .npz, bad JSON
        raise DataError(f"{path} is not a policy file collect.py wrote ({type(e).__name__}): "
                        f"retrain it with `python collect.py train --env {env}`.") from None
    if meta.get("env_id") != ENVS[env]:
        raise DataError(f"{path} holds a policy for {meta.get('env_id')}, not {ENVS[env]}: "
                        f"point --policy-dir at {env}'s policies.")
    if "w0" not in arrays:
        raise DataError(f"{path} is not a TD3 actor (an older linear policy?): retrain it with "
                        f"`python collect.py train --env {env}`.")
    return arrays, meta


def load_policy(env, level, policy_dir=POLICY_DIR):
    """The committed policy for env at level ('medium' or 'expert'), and its metadata."""
    env = env_key(env)
    arrays, meta = read_npz(Path(policy_dir) / f"{env}-{level}.npz", env)
    return MlpPolicy.from_arrays(arrays), meta


# ----------------------------------------------------------------------------- TD3 trainer

def mlp(n_in, hidden, n_out, out_act=None):
    layers = [nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
              nn.Linear(hidden, n_out)]
    return nn.Sequential(*layers, *([out_act] if out_act else []))


class Critics(nn.Module):
    """Two independent Q(s, a) networks; TD3 learns from the smaller of their targets."""

    def __init__(self, obs_dim, act_dim, hidden):
        super().__init__()
        self.q1, self.q2 = (mlp(obs_dim + act_dim, hidden, 1) for _ in range(2))

    def forward(self, obs, act):  # (B, S), (B, A) -> (B,), (B,)
        x = torch.cat([obs, act], -1)  # (B, S + A)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


def actor_to_policy(actor):
    linears = [m for m in actor if isinstance(m, nn.Linear)]
    return MlpPolicy([(m.weight.detach().numpy().astype(np.float64),
                       m.bias.detach().numpy().astype(np.float64)) for m in linears])


def new_trainer_state(cfg, obs_dim, act_dim):
    """Everything a checkpoint holds: networks, targets, optimisers, buffer, counters, RNGs."""
    torch.manual_seed(cfg.seed)
    actor, critics = mlp(obs_dim, cfg.hidden, act_dim, nn.Tanh()), Critics(obs_dim, act_dim,
                                                                           cfg.hidden)
    return dict(
        actor=actor, critics=critics,
        actor_target=copy.deepcopy(actor).requires_grad_(False),
        critics_target=copy.deepcopy(critics).requires_grad_(False),
        actor_opt=torch.optim.Adam(actor.parameters(), lr=cfg.lr, fused=True),
        critic_opt=torch.optim.Adam(critics.parameters(), lr=cfg.lr, fused=True),
        # the replay buffer: one row per env step, preallocated for the whole run
        buffer=dict(obs=torch.zeros(cfg.steps, obs_dim), act=torch.zeros(cfg.steps, act_dim),
                    reward=torch.zeros(cfg.steps), next_obs=torch.zeros(cfg.steps, obs_dim),
                    done=torch.zeros(cfg.steps)),  # done: fell (a time limit is not an end)
        step=0, updates=0, episodes=0, minutes=0.0, recent_returns=[],
        snapshots=[],  # dicts: step, actor arrays, eval returns
        rng=np.random.default_rng(cfg.seed))


def td3_update(s, cfg, size):
    """One critic update on a uniform minibatch; the actor and targets every actor_every-th."""
    buf = s["buffer"]
    idx = torch.from_numpy(s["rng"].integers(0, size, cfg.batch_size))
    obs, act, reward, next_obs, done = (buf[k][idx] for k in
                                        ("obs", "act", "reward", "next_obs", "done"))
    with torch.no_grad():  # target: r + gamma * min_i Q'_i(s', clip(pi'(s') + clipped noise))
        noise = (torch.randn_like(act) * cfg.target_noise).clamp(-cfg.target_noise_clip,
                                                                  cfg.target_noise_clip)
        next_act = (s["actor_target"](next_obs) + noise).clamp(-1.0, 1.0)  # (B, A)
        q1_next, q2_next = s["critics_target"](next_obs, next_act)
        target = reward + cfg.gamma * (1.0 - done) * torch.min(q1_next, q2_next)  # (B,)
    q1, q2 = s["critics"](obs, act)
    critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
    s["critic_opt"].zero_grad(set_to_none=True)
    critic_loss.backward()
    s["critic_opt"].step()
    s["updates"] += 1
    if s["updates"] % cfg.actor_every == 0:  # delayed policy update, then Polyak targets
        actor_loss = -s["critics"].q1(torch.cat([obs, s["actor"](obs)], -1)).mean()
        s["actor_opt"].zero_grad(set_to_none=True)
        actor_loss.backward()
        s["actor_opt"].step()
        for net in ("actor", "critics"):
            online = [p.detach() for p in s[net].parameters()]
            torch._foreach_lerp_(list(s[f"{net}_target"].parameters()), online, cfg.tau)


def save_checkpoint(s, cfg, path):
    state = {k: (v.state_dict() if hasattr(v, "state_dict") else v) for k, v in s.items()
             if k not in ("rng", "buffer")}
    state.update(rng=s["rng"].bit_generator.state, torch_rng=torch.get_rng_state(),
                 buffer={k: v[:s["step"]].clone() for k, v in s["buffer"].items()},
                 config=dataclasses.asdict(cfg))
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(cfg, path, obs_dim, act_dim):
    try:
        saved = torch.load(path, weights_only=False)
    except Exception as e:
        raise DataError(f"{path} cannot be read ({type(e).__name__}): it is damaged; delete "
                        f"{path.parent} and train again without --resume.") from None
    if saved["config"]["env"] != cfg.env or saved["config"]["hidden"] != cfg.hidden:
        raise DataError(f"{path} is a {saved['config']['env']} run with hidden "
                        f"{saved['config']['hidden']}: resume it with those settings.")
    if saved["step"] > cfg.steps:
        raise DataError(f"{path} is already at step {saved['step']}: pass --steps above it.")
    s = new_trainer_state(cfg, obs_dim, act_dim)
    for k, v in saved.items():
        if k in ("config", "torch_rng"):
            continue
        if k == "rng":
            s["rng"].bit_generator.state = v
        elif k == "buffer":
            for name, rows in v.items():
                s["buffer"][name][:len(rows)] = rows
        elif hasattr(s[k], "load_state_dict"):
            s[k].load_state_dict(v)
        else:
            s[k] = v
    torch.set_rng_state(saved["torch_rng"])
    return s


def train(cfg):
    """TD3 with one update per env step. Keeps runs/td3-{env}/ resumable (ckpt.pt, log.jsonl),
    then exports policies/ once training reaches cfg.steps."""
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg)
    finally:
        torch.set_num_threads(threads_before)


def _train(cfg):
    env_obj, eval_env = make_env(cfg.env), gym.make(ENVS[cfg.env]).unwrapped
    obs_dim, act_dim = env_obj.observation_space.shape[0], env_obj.action_space.shape[0]
    run_dir = Path(cfg.log_dir) / f"td3-{cfg.env}"
    ckpt_path = run_dir / "ckpt.pt"
    if cfg.resume:
        if not ckpt_path.exists():
            raise DataError(f"nothing to resume in {run_dir}: train without --resume first.")
        s = load_checkpoint(cfg, ckpt_path, obs_dim, act_dim)
    else:
        if ckpt_path.exists():
            raise DataError(f"{run_dir} already holds a run: add --resume to continue it, or "
                            "pass another --log-dir.")
        s = new_trainer_state(cfg, obs_dim, act_dim)
    run_dir.mkdir(parents=True, exist_ok=True)
    rng, buf, start, minutes_before = s["rng"], s["buffer"], time.time(), s["minutes"]
    eval_seeds = EVAL_SEED + np.arange(cfg.eval_episodes)
    print(f"TD3 on {ENVS[cfg.env]} from step {s['step']:,} to {cfg.steps:,} "
          f"({cfg.threads} thread(s)); run folder {run_dir}")
    with open(run_dir / "log.jsonl", "a") as log, \
            tqdm(total=cfg.steps, initial=s["step"], desc=f"TD3 {cfg.env}", unit="step",
                 mininterval=5) as bar:
        stop = False
        while s["step"] < cfg.steps and not stop:
            # one episode; checkpoints fall between episodes, so a resumed run is identical
            obs, _ = env_obj.reset(seed=int(rng.integers(2**31)))
            episode_return, t, terminated = 0.0, 0, False
            while t < MAX_EPISODE_STEPS and s["step"] < cfg.steps and not terminated:
                if s["step"] < cfg.random_steps:
                    action = rng.uniform(-1.0, 1.0, act_dim)
                else:
                    with torch.no_grad():
                        action = s["actor"](torch.as_tensor(obs, dtype=torch.float32)).numpy()
                    action = np.clip(action + cfg.explore * rng.standard_normal(act_dim), -1, 1)
                next_obs, reward, terminated, _, _ = env_obj.step(action)
                i = s["step"]
                buf["obs"][i], buf["act"][i] = torch.from_numpy(obs), torch.from_numpy(action)
                buf["reward"][i], buf["done"][i] = reward, float(terminated)
                buf["next_obs"][i] = torch.from_numpy(next_obs)
                obs, episode_return, t, s["step"] = next_obs, episode_return + reward, t + 1, i + 1
                if s["step"] >= cfg.random_steps:
                    td3_update(s, cfg, s["step"])
                if s["step"] % cfg.snapshot_every == 0:
                    snap = actor_to_policy(s["actor"])
                    returns = evaluate_policy(eval_env, snap, eval_seeds)
                    s["snapshots"].append(dict(step=s["step"], returns=returns.tolist(),
                                               arrays={k: v.astype(np.float32) for k, v in
                                                       snap.arrays().items()}))
                    tqdm.write(f"step {s['step']:8,d}  eval {returns.mean():8.1f} +- "
                               f"{returns.std():6.1f}  ({cfg.eval_episodes} episodes)")
                    log.write(json.dumps({"step": s["step"], "eval_mean": returns.mean(),
                                          "eval_std": returns.std(), "minutes": round(
                                              minutes_before + (time.time() - start) / 60, 2)})
                              + "\n")
                    log.flush()
                bar.update(1)
            s["episodes"] += 1
            s["recent_returns"] = (s["recent_returns"] + [episode_return])[-10:]
            bar.set_postfix(ret=f"{np.mean(s['recent_returns']):.0f}")
            log.write(json.dumps({"step": s["step"], "episode": s["episodes"],
                                  "return": round(episode_return, 2), "length": t}) + "\n")
            out_of_time = cfg.max_minutes and time.time() - start > 60 * cfg.max_minutes
            crossed = s["step"] // cfg.checkpoint_every != (s["step"] - t) // cfg.checkpoint_every
            if crossed or out_of_time or s["step"] >= cfg.steps:
                s["minutes"] = minutes_before + (time.time() - start) / 60
                save_checkpoint(s, cfg, ckpt_path)
            stop = bool(out_of_time)
    if s["step"] >= cfg.steps:
        export_policies(cfg)
    else:
        print(f"stopped at step {s['step']:,} after {cfg.max_minutes} minutes; continue with "
              f"`python collect.py train --env {cfg.env} --steps {cfg.steps} --resume`.")
    return run_dir


# ----------------------------------------------------------------------------- exporting levels

def measure_noise(env_obj, policy, episodes, seed):
    """Mean and std of the return at each candidate action-noise std, and the largest std that
    keeps the mean within 10% of the noiseless one (D4RL sampled its actions; so do we, as far
    as the policy tolerates it)."""
    table, seeds = {}, MEASURE_SEED + np.arange(episodes)
    for std in NOISE_CHOICES:
        r = evaluate_policy(env_obj, policy, seeds, std, np.random.default_rng(seed))
        table[str(std)] = [round(float(r.mean()), 1), round(float(r.std()), 1)]
    clean = table["0.0"][0]
    chosen = max(std for std in NOISE_CHOICES if table[str(std)][0] >= 0.9 * clean)
    return chosen, table


def export_policies(cfg):
    """From a training run: expert = the best snapshot in the last late_fraction of training,
    medium = the first snapshot whose evaluation reaches D4RL's medium level; both re-measured
    on fresh seeds with and without action noise; replay = the snapshots up to medium."""
    run_dir = Path(cfg.log_dir) / f"td3-{cfg.env}"
    ckpt_path = run_dir / "ckpt.pt"
    if not ckpt_path.exists():
        raise DataError(f"no training run in {run_dir}: run `python collect.py train "
                        f"--env {cfg.env}` first.")
    saved = torch.load(ckpt_path, weights_only=False)
    snaps, env_obj = saved["snapshots"], make_env(cfg.env)
    if not snaps:
        raise DataError(f"{run_dir} has no snapshots yet: train past --snapshot-every steps.")
    means = np.array([np.mean(x["returns"]) for x in snaps])
    late = [i for i, x in enumerate(snaps) if x["step"] >= (1 - cfg.late_fraction) * saved["step"]]
    expert_i = max(late, key=lambda i: means[i])
    medium_i = next((i for i in range(expert_i) if means[i] >= MEDIUM_LEVEL[cfg.env]), None)
    if medium_i is None:
        medium_i = int(np.argmin(np.abs(means[:expert_i + 1] - MEDIUM_LEVEL[cfg.env])))
        print(f"warning: no snapshot before the expert reached D4RL's medium level "
              f"{MEDIUM_LEVEL[cfg.env]:.0f}; medium = the closest one (train longer).")
    info = dict(env_id=ENVS[cfg.env], seed=saved["config"]["seed"], algorithm="TD3",
                td3={k: saved["config"][k] for k in (
                    "batch_size", "hidden", "lr", "gamma", "tau", "explore", "target_noise",
                    "target_noise_clip", "actor_every", "random_steps")},
                trainer_steps=saved["step"], train_minutes_one_core=round(saved["minutes"], 1),
                versions=versions())
    out = Path(cfg.policy_dir)
    for level, i in (("expert", expert_i), ("medium", medium_i)):
        policy = MlpPolicy.from_arrays(snaps[i]["arrays"])
        noise, table = measure_noise(env_obj, policy, cfg.final_episodes, cfg.seed)
        returns = evaluate_policy(env_obj, policy, MEASURE_SEED + np.arange(cfg.final_episodes))
        save_policy(out / f"{cfg.env}-{level}.npz", policy, **info, level=level,
                    steps_at_snapshot=snaps[i]["step"], training_eval=snaps[i]["returns"],
                    return_mean=float(returns.mean()), return_std=float(returns.std()),
                    episodes=len(returns), returns=[round(float(r), 3) for r in returns],
                    normalized_score=float(normalized_score(cfg.env, returns.mean())),
                    action_noise=noise, noise_table=table)
        print(f"{cfg.env}-{level}: step {snaps[i]['step']:,}, return {returns.mean():.1f} +- "
              f"{returns.std():.1f} over {len(returns)} episodes; action noise {noise} "
              f"(mean, std by noise: {table})")
    n_keep = min(cfg.replay_snapshots, medium_i + 1)
    keep = np.unique(np.linspace(0, medium_i, n_keep).astype(int))  # evenly spaced, in order
    stacked = {k: np.stack([snaps[i]["arrays"][k] for i in keep]).astype(np.float16)
               for k in snaps[0]["arrays"]}
    np.savez(out / f"{cfg.env}-replay.npz", **stacked,
             steps=np.array([snaps[i]["step"] for i in keep]),
             meta=json.dumps({**info, "level": "medium-replay",
                              "trainer_steps_to_medium": snaps[medium_i]["step"]}))


# ----------------------------------------------------------------------------- datasets

def policy_sources(env, level, policy_dir):
    """What a level rolls out, part by part, and the metadata to record. A part is its level and
    a list of segments (policy arrays or None for uniform actions, action-noise std, share of
    the part)."""
    if level == "random":
        return [(level, [(None, 0.0, 1.0)])], {"policy": "uniform random actions"}
    if level == "medium-replay":  # the trainer's data regenerated, in training order
        arrays, meta = read_npz(Path(policy_dir) / f"{env}-replay.npz", env)
        steps, total = arrays.pop("steps"), meta["trainer_steps_to_medium"]
        warmup = min(meta["td3"]["random_steps"], total)
        # snapshot k acts from its own step until the next snapshot's (the last until medium)
        bounds = np.append(np.maximum(steps, warmup), total)
        segments = [(None, 0.0, warmup / total)] if warmup else []
        segments += [({k: v[i] for k, v in arrays.items()}, meta["td3"]["explore"],
                      (bounds[i + 1] - bounds[i]) / total) for i in range(len(steps))
                     if bounds[i + 1] > bounds[i]]
        return [(level, segments)], meta
    parts, metas = [], {}
    for part in level.split("-"):
        arrays, metas[part] = read_npz(Path(policy_dir) / f"{env}-{part}.npz", env)
        parts.append((part, [(arrays, metas[part]["action_noise"], 1.0)]))
    return parts, metas


def part_sizes(transitions, n_parts):
    return [transitions * (i + 1) // n_parts - transitions * i // n_parts for i in range(n_parts)]


def rollout_job(job):
    """Complete episodes until at least job['transitions'] steps (run in a worker process)."""
    env_obj, rng = make_env(job["env"]), np.random.default_rng(job["seed"])
    policy = None if job["policy"] is None else MlpPolicy.from_arrays(job["policy"])
    episodes, n = [], 0
    while n < job["transitions"]:
        episodes.append(run_episode(env_obj, policy, int(rng.integers(2**31)),
                                    action_noise=job["action_noise"], rng=rng))
        n += len(episodes[-1][2])
    return episodes


def plan_jobs(env, sources, transitions, seed, chunk=20_000):
    """Split the work into jobs in the order their data is written. A job's seed depends only on
    (seed, its part's level, its index in the part), so medium-expert is medium followed by
    expert, and the data are the same whatever the number of workers."""
    jobs = []
    for part, ((level, segments), n_part) in enumerate(zip(sources, part_sizes(transitions,
                                                                                len(sources)))):
        first = len(jobs)
        shares = np.cumsum([0.0] + [share for _, _, share in segments]) / sum(
            share for _, _, share in segments)
        for j, (policy, noise, _) in enumerate(segments):
            n_segment = round(n_part * shares[j + 1]) - round(n_part * shares[j])
            for n_job in part_sizes(n_segment, -(-n_segment // chunk)):
                seed_k = np.random.SeedSequence(seed, spawn_key=(LEVELS.index(level),
                                                                 len(jobs) - first))
                jobs.append(dict(env=env, part=part, seed=seed_k.generate_state(1)[0],
                                 transitions=n_job, policy=policy, action_noise=noise))
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
                 versions=versions(),
                 action_noise=[noise for _, segments in sources for _, noise, _ in segments],
                 episode_return_mean=ret_mean, episode_return_std=ret_std,
                 episodes=len(returns), generation_seconds=round(time.time() - start, 1))
    path = write_d4rl_hdf5(out, *arrays, attrs=attrs)
    print(f"wrote {path}: {len(arrays[2]):,} transitions, {len(returns)} episodes, return "
          f"{ret_mean:.1f} +- {ret_std:.1f} (normalised {normalized_score(env, ret_mean):.1f}), "
          f"{time.time() - start:.0f} s")
    return path


def resolve_dataset(env, level, data_dir="data"):
    """The named dataset's path, generating it from policies/ first if it is missing (what
    `train.py --env E --dataset L` reads)."""
    path = dataset_path(env, level, data_dir)
    if path.exists():
        return path
    print(f"{path} not found: generating it from policies/ (a few minutes, once; the same as "
          f"`python collect.py dataset --env {env_key(env)} --level {level}`)", flush=True)
    return Path(make_dataset(env_key(env), level, out=path))


# ----------------------------------------------------------------------------- command line

COMMANDS = {"train": (TrainConfig, "train a TD3 behaviour policy (resumable)"),
            "export": (TrainConfig, "re-pick medium / expert / replay from a training run"),
            "dataset": (DatasetConfig, "write a D4RL-schema dataset for one level")}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if not argv or argv[0] not in COMMANDS:
        lines = [f"  python collect.py {name} --help   {doc}" for name, (_, doc) in COMMANDS.items()]
        print(__doc__.split("\n\n")[0] + "\n\ncommands:\n" + "\n".join(lines))
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    command, (config_cls, doc) = argv[0], COMMANDS[argv[0]]
    try:
        cfg = parse_config(config_cls, argv[1:], f"python collect.py {command}: {doc}")
        cfg = dataclasses.replace(cfg, env=env_key(cfg.env))
        if command in ("train", "export"):
            if min(cfg.steps, cfg.batch_size, cfg.hidden, cfg.snapshot_every,
                   cfg.checkpoint_every, cfg.eval_episodes, cfg.threads) < 1:
                raise DataError("--steps, --batch-size, --hidden, --snapshot-every, "
                                "--checkpoint-every, --eval-episodes and --threads must be "
                                "positive.")
            (train if command == "train" else export_policies)(cfg)
        else:
            if cfg.out and Path(cfg.out).is_dir():
                raise DataError(f"--out {cfg.out} is a folder: give a file name ending in .hdf5.")
            if cfg.transitions < 0 or cfg.workers < 1:
                raise DataError("--transitions must be 0 (the default size) or more and "
                                "--workers at least 1.")
            make_dataset(cfg.env, cfg.level, cfg.transitions or None, cfg.out or None, cfg.seed,
                         cfg.workers, cfg.policy_dir)
    except DataError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
