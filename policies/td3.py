"""TD3, the off-policy actor-critic that learns the behaviour policies the datasets are made from.

`python policies/collect.py train --env E` (collect.py is the command line) trains one policy for
one env from scratch, one update per env step. The run folder runs/td3-{env}/ holds a resumable
checkpoint (networks, optimisers, replay buffer, RNG states, step), an actor snapshot every
`snapshot_every` env steps with a 10-episode evaluation of each, and log.jsonl (the checkpoint is
plain data, read with weights_only=True: a file handed over never runs code). At the end three
files go to the run folder: {env}-expert.npz (the best late snapshot), {env}-medium.npz (the first
snapshot at D4RL's medium level) and {env}-replay.npz (the snapshots up to medium, in training
order); `collect.py export --to policies --force` re-picks them into the committed policies/.

Why TD3 and not SAC: at the same network sizes a TD3 update costs about half a SAC update on
this project's CPUs (the actor learns every second step and has no entropy term), and D4RL-like
levels need about a million updates per env; TD3 reaches D4RL's expert returns on all three
tasks at 1M steps (Fujimoto et al. 2018; CleanRL's benchmarks).

Map: TrainConfig -> env and policies (make_env, MlpPolicy, run_episode, evaluate_policy,
save_policy) -> the trainer (networks, td3_update, save/read/load_checkpoint, train; stopping on
Ctrl-C or SIGTERM is cli.stop_requests) ->
exporting the levels (measure_noise, export_policies).

References (ideas only):
  Fujimoto, van Hoof, Meger 2018, "Addressing Function Approximation Error in Actor-Critic
    Methods" (TD3: clipped double Q, delayed actor updates, target policy smoothing).
  Huang et al. 2022, CleanRL (single-file TD3 settings: 256x256 networks, 25k random steps).
  Fu et al. 2020, "D4RL" (the medium and expert levels a run is cut into).

Glossary of array dimensions:
  S  observation size (hopper 11, halfcheetah 17, walker2d 17)
  A  action size (hopper 3, halfcheetah 6, walker2d 6); actions live in [-1, 1]
  B  transitions in a minibatch (--batch-size)
  H  hidden width of the actor and critic MLPs       K  actor snapshots kept
  T  steps in one episode (at most the env's 1000-step limit)
"""
import copy
import dataclasses
import functools
import json
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

from cli import (atomic_write, flag_name, one_sentence_write_errors, option,
                 refuse_to_replace, stop_requests, trim_jsonl)
from data import ENVS, MAX_EPISODE_STEPS, DataError, env_key, normalized_score

POLICY_DIR = Path(__file__).resolve().parent   # policies/, where this file lives
# D4RL's medium level, the mean return of its v2 medium datasets: a snapshot is medium once its
# 10-episode evaluation reaches this (40-60% of D4RL's expert datasets).
MEDIUM_LEVEL = {"hopper": 1422.0, "halfcheetah": 4770.0, "walker2d": 2852.0}
NOISE_CHOICES = (0.0, 0.1, 0.2, 0.3)  # Gaussian action-noise stds tried for each dataset policy
EVAL_SEED, MEASURE_SEED = 1_000_000, 2_000_000  # periodic evaluations / export measurements
STOPPING = "stopping at the end of this episode (again to stop now)"  # on Ctrl-C or SIGTERM


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
    to: str = option("", "export: where the policy files go (default: the run folder)")
    force: bool = option(False, "export: replace policy files git tracks or export did not write")
    log_dir: str = option("runs", "where the training run goes (runs/td3-{env}/)")


# ----------------------------------------------------------------------------- env and policies

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
    return save_npz(path, **{k: v.astype(np.float32) for k, v in policy.arrays().items()},
                    meta=json.dumps(meta, sort_keys=True))


def save_npz(path, **arrays):
    """np.savez, atomically (a failed write is a WriteError in one sentence); -> path."""
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    with one_sentence_write_errors(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(path, write)


def written_by_export(path):  # a policy file an export wrote: its metadata names TD3
    with np.load(path) as f:
        return json.loads(str(f["meta"])).get("algorithm") == "TD3"


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
    """Plain containers only (state dicts, tensors, numbers, lists, dicts, numpy arrays); a failed
    write is a WriteError in one sentence and the previous checkpoint stays whole."""
    state = {k: (v.state_dict() if hasattr(v, "state_dict") else v) for k, v in s.items()
             if k not in ("rng", "buffer")}
    state.update(rng=s["rng"].bit_generator.state, torch_rng=torch.get_rng_state(),
                 buffer={k: v[:s["step"]].clone() for k, v in s["buffer"].items()},
                 config=dataclasses.asdict(cfg))
    with one_sentence_write_errors(path):
        atomic_write(path, lambda tmp: torch.save(state, tmp))


# Beyond torch's own types a checkpoint may hold numpy arrays and scalars (no code runs).
_np_core = getattr(np, "_core", None) or np.core
NUMPY_GLOBALS = [_np_core.multiarray._reconstruct, _np_core.multiarray.scalar, np.ndarray,
                 np.dtype] + [type(np.dtype(t)) for t in (np.float16, np.float32, np.float64,
                                                          np.int32, np.int64, np.bool_)]


def read_checkpoint(path):
    """A checkpoint of collect.py train, read without running code (torch.load weights_only);
    anything else (damaged, empty, foreign, a pickle with code) is one sentence."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(NUMPY_GLOBALS):
            saved = torch.load(path, weights_only=True)
        if not {"step", "snapshots", "minutes"} <= set(saved) or type(saved["config"]) != dict:
            raise ValueError("another program's file")
    except Exception as e:
        raise DataError(f"{path} cannot be read ({type(e).__name__}): it is damaged or not a "
                        f"checkpoint of collect.py train; delete {path.parent} and train again "
                        "without --resume.") from None
    return saved


def load_checkpoint(cfg, path, obs_dim, act_dim):
    saved = read_checkpoint(path)
    # what may change between calls: the length, the time limit, threads and where files go
    free = {"steps", "max_minutes", "resume", "threads", "policy_dir", "to", "force", "log_dir"}
    differ = [f"{flag_name(k)} {v}" for k, v in saved["config"].items()
              if k not in free and getattr(cfg, k, v) != v]
    if differ:
        raise DataError(f"{path} was trained with {', '.join(differ)}: resume it with "
                        "the same settings.")
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


def run_flags(cfg):
    """The flags that differ from the defaults (the training settings a resume must repeat)."""
    return " ".join(f"{flag_name(f.name)} {getattr(cfg, f.name)}"
                    for f in dataclasses.fields(cfg)
                    if f.name not in ("resume", "max_minutes", "to", "force")
                    and getattr(cfg, f.name) != f.default)


def train(cfg):
    """TD3 with one update per env step. Keeps runs/td3-{env}/ resumable (ckpt.pt, log.jsonl),
    then exports the three policy files into it once training reaches cfg.steps."""
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:  # a full disk or read-only folder (log, checkpoint, exports): one sentence
        with stop_requests(tqdm.write, STOPPING) as asked, one_sentence_write_errors(cfg.log_dir):
            return _train(cfg, asked)
    finally:
        torch.set_num_threads(threads_before)


def _train(cfg, asked=()):
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
    if cfg.resume:
        trim_jsonl(run_dir / "log.jsonl", s["step"])  # a killed run logged past its checkpoint
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
            s["recent_returns"] = (s["recent_returns"] + [float(episode_return)])[-10:]
            bar.set_postfix(ret=f"{np.mean(s['recent_returns']):.0f}")
            log.write(json.dumps({"step": s["step"], "episode": s["episodes"],
                                  "return": round(episode_return, 2), "length": t}) + "\n")
            out_of_time = cfg.max_minutes and time.time() - start > 60 * cfg.max_minutes
            stop = bool(out_of_time or asked)
            crossed = s["step"] // cfg.checkpoint_every != (s["step"] - t) // cfg.checkpoint_every
            if crossed or stop or s["step"] >= cfg.steps:
                s["minutes"] = minutes_before + (time.time() - start) / 60
                save_checkpoint(s, cfg, ckpt_path)
    if s["step"] >= cfg.steps:
        export_policies(dataclasses.replace(cfg, to="", force=False))
    else:
        why = "on request" if asked else f"after {cfg.max_minutes} minutes"
        print(f"stopped at step {s['step']:,} {why}; continue with "
              f"`python policies/collect.py train --resume {run_flags(cfg)}`.")
    return run_dir


# ----------------------------------------------------------------------------- exporting levels

def measure_noise(env_obj, policy, episodes, seed, explore):
    """Mean and std of the return at each candidate action-noise std, and the std chosen for the
    datasets (choose_noise)."""
    table, seeds = {}, MEASURE_SEED + np.arange(episodes)
    for std in NOISE_CHOICES:
        r = evaluate_policy(env_obj, policy, seeds, std, np.random.default_rng(seed))
        table[str(std)] = [round(float(r.mean()), 1), round(float(r.std()), 1)]
    return choose_noise(table, explore), table


def choose_noise(table, explore):
    """The largest std, up to the trainer's own exploration std, that keeps the mean return within
    10% of the noiseless one. D4RL sampled its actions from the policy SAC trained; a TD3 actor's
    counterpart is the noise it explored with. More than that visits states it never learned
    from: walker2d's 1.76M-step actor kept its return at std 0.2 over 10 episodes, yet fell in 5
    of 27 episodes of a 25k-transition dataset (in none of 50 at 0.1; policies/README.md)."""
    clean = table["0.0"][0]
    return max(std for std in NOISE_CHOICES
               if std <= explore and table[str(std)][0] >= 0.9 * clean)


def export_policies(cfg):
    """From a training run: expert = the best snapshot in the last late_fraction of training,
    medium = the first snapshot whose evaluation reaches D4RL's medium level; both re-measured
    on fresh seeds with and without action noise; replay = the snapshots up to medium. The files
    go to cfg.to (default: the run folder), replacing only what refuse_to_replace allows."""
    run_dir = Path(cfg.log_dir) / f"td3-{cfg.env}"
    ckpt_path = run_dir / "ckpt.pt"
    if not ckpt_path.exists():
        raise DataError(f"no training run in {run_dir}: run `python policies/collect.py train "
                        f"--env {cfg.env}` first.")
    out = Path(cfg.to) if cfg.to else run_dir
    for level in ("expert", "medium", "replay"):  # a WriteError before any work
        refuse_to_replace(out / f"{cfg.env}-{level}.npz", cfg.force, written_by_export)
    saved = read_checkpoint(ckpt_path)
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
    for level, i in (("expert", expert_i), ("medium", medium_i)):
        policy = MlpPolicy.from_arrays(snaps[i]["arrays"])
        noise, table = measure_noise(env_obj, policy, cfg.final_episodes, cfg.seed,
                                     saved["config"]["explore"])
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
    save_npz(out / f"{cfg.env}-replay.npz", **stacked,
             steps=np.array([snaps[i]["step"] for i in keep]),
             meta=json.dumps({**info, "level": "medium-replay",
                              "trainer_steps_to_medium": snaps[medium_i]["step"]}))
    print(f"wrote {cfg.env}-expert.npz, -medium.npz and -replay.npz to {out}")
    return out
