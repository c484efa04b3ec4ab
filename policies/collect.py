"""Behaviour policies and offline datasets for Hopper, HalfCheetah and Walker2d (Gymnasium v5).

The command line of both halves, and the datasets half itself:
  train    TD3 learns a behaviour policy for one env, resumably, in runs/td3-{env}/, then
           exports {env}-{expert,medium,replay}.npz into that run folder (td3.py holds the
           trainer)
  export   re-picks those three files from a training run; `--to policies` writes the
           committed ones (replacing a file tracked by git needs --force)
  dataset  rolls those policies out into a D4RL-schema HDF5 file for one level:
           random (uniform actions), medium, expert (each policy's actions with the Gaussian
           noise measured for it at export), medium-replay (the trainer's data regenerated:
           uniform actions for the warm-up, then each snapshot with the trainer's exploration
           noise, in training order), medium-expert (medium then expert, concatenated).

A dataset is planned as jobs of at most 20k transitions, each with a seed derived from (seed,
level, index in its part) only, rolled out as complete episodes in worker processes and cut to
the exact size at the end: the same seed gives the same arrays with any number of workers.

Map: DatasetConfig -> reading policy files (read_npz, load_policy) -> datasets (policy_sources,
plan_jobs, rollout_job, to_arrays, make_dataset, resolve_dataset) -> command line (main).

References (ideas only):
  Fu et al. 2020, "D4RL" (dataset levels and the HDF5 schema).

Glossary of array dimensions:
  N  transitions in a dataset (--transitions)
  S  observation size (hopper 11, halfcheetah 17, walker2d 17)
  A  action size (hopper 3, halfcheetah 6, walker2d 6); actions live in [-1, 1]
  T  steps in one episode (at most the env's 1000-step limit)
"""
import contextlib
import dataclasses
import json
import multiprocessing
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

sys.path.append(str(Path(__file__).resolve().parents[1]))  # the repository root

from cli import (WriteError, one_sentence_write_errors, option, parse_config,  # noqa: E402
                 refuse_to_replace)
from data import (ENVS, LEVELS, DataError, dataset_path, env_key, normalized_score,
                  write_d4rl_hdf5)
from policies.td3 import (POLICY_DIR, MlpPolicy, TrainConfig, export_policies, make_env,
                          run_episode, train, versions)


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
    force: bool = option(False, "replace --out even if git tracks it or collect.py did not "
                                "write it")


# ----------------------------------------------------------------------------- policy files

def read_npz(path, env):
    """A policy file's arrays and metadata; the file must belong to env."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"no policy file {path}: train one with "
                        f"`python policies/collect.py train --env {env}`.")
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(str(arrays.pop("meta")))
    except Exception as e:  # a truncated zip, a foreign .npz, bad JSON
        raise DataError(f"{path} is not a policy file collect.py wrote ({type(e).__name__}): "
                        "retrain it with "
                        f"`python policies/collect.py train --env {env}`.") from None
    if meta.get("env_id") != ENVS[env]:
        raise DataError(f"{path} holds a policy for {meta.get('env_id')}, not {ENVS[env]}: "
                        f"point --policy-dir at {env}'s policies.")
    if "w0" not in arrays:
        raise DataError(f"{path} is not a TD3 actor (an older linear policy?): retrain it with "
                        f"`python policies/collect.py train --env {env}`.")
    return arrays, meta


def load_policy(env, level, policy_dir=POLICY_DIR):
    """The committed policy for env at level ('medium' or 'expert'), and its metadata."""
    env = env_key(env)
    arrays, meta = read_npz(Path(policy_dir) / f"{env}-{level}.npz", env)
    return MlpPolicy.from_arrays(arrays), meta


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


def written_by_collect(path):
    """True for a dataset file this command wrote (its attributes name env, level, policy)."""
    with h5py.File(path, "r") as f:
        return {"env_id", "level", "policy", "generation_seconds"} <= set(f.attrs)


def make_dataset(env, level, transitions=None, out=None, seed=0, workers=2, policy_dir=POLICY_DIR,
                 force=False):
    """Roll out the committed policies for `level` and write a D4RL-schema HDF5 file; returns
    its path. Default size: 1M transitions (2M for medium-expert; for medium-replay the env
    steps the trainer took up to the medium snapshot, at most 1M). An existing `out` that git
    tracks or that collect.py did not write is replaced only with `force` (checked first)."""
    env = env_key(env)
    if level not in LEVELS:
        raise DataError(f"unknown level {level!r}: choose one of {', '.join(LEVELS)}.")
    out = Path(out) if out else dataset_path(env, level)
    try:
        refuse_to_replace(out, force, written_by_collect)
    except WriteError as e:
        raise DataError(str(e)) from None
    sources, meta = policy_sources(env, level, policy_dir)
    if transitions is not None and transitions < len(sources):
        raise DataError(f"--transitions must be at least {len(sources)} for {level}, "
                        f"not {transitions}.")
    if transitions is None:
        transitions = {"medium-expert": 2_000_000, "medium-replay":
                       min(meta.get("trainer_steps_to_medium", 0), 1_000_000)}.get(level, 1_000_000)
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
    with one_sentence_write_errors(out):  # a full disk: one sentence, the old file whole
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
          f"`python policies/collect.py dataset --env {env_key(env)} --level {level}`)", flush=True)
    return Path(make_dataset(env_key(env), level, out=path))


# ----------------------------------------------------------------------------- command line

COMMANDS = {"train": (TrainConfig, "train a TD3 behaviour policy (resumable)"),
            "export": (TrainConfig, "re-pick medium / expert / replay from a training run"),
            "dataset": (DatasetConfig, "write a D4RL-schema dataset for one level")}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if not argv or argv[0] not in COMMANDS:
        lines = [f"  python policies/collect.py {name} --help   {doc}"
                 for name, (_, doc) in COMMANDS.items()]
        print(__doc__.split("\n\n")[0] + "\n\ncommands:\n" + "\n".join(lines))
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    command, (config_cls, doc) = argv[0], COMMANDS[argv[0]]
    try:
        cfg = parse_config(config_cls, argv[1:], f"python policies/collect.py {command}: {doc}")
        cfg = dataclasses.replace(cfg, env=env_key(cfg.env))
        if command == "train" and (cfg.to or cfg.force):
            raise DataError("--to and --force belong to collect.py export: train writes its "
                            "policy files into its run folder; export them from there.")
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
                         cfg.workers, cfg.policy_dir, cfg.force)
    except (DataError, WriteError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
