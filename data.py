"""Offline-RL data: D4RL / Minari / our HDF5 files -> trajectories -> normalised training windows.

Files use the D4RL schema, one row per transition:
    observations (N, obs) f32, actions (N, act) f32, rewards (N,) or (N, 1), terminals (N,) bool,
    timeouts (N,) bool
A trajectory ends at every row where `terminals` (it fell) or `timeouts` (time limit) is true;
rows after the last such flag are kept as one more trajectory, marked truncated. Old D4RL files
without `timeouts` are also cut after every 1000 steps without a terminal, the envs' time limit
(as D4RL's sequence_dataset and the DT code's loader do): read as one, consecutive episodes would
carry returns-to-go across episodes and timesteps past the limit. A Minari dataset folder
(`main_data.hdf5`, or `data/main_data.hdf5`, with groups `episode_0, episode_1, ...`) stores
one episode per group with T+1 observations (the last is the state after the final action; it is
dropped). Our own files are D4RL files with attributes (env id, level, seed, policy, versions),
written atomically by `write_d4rl_hdf5`.

Training windows are K consecutive steps of one trajectory. A window starts at a transition drawn
uniformly from the whole dataset, so trajectories are chosen in proportion to their length and
the start is uniform within the chosen one (as in the DT paper). A window that runs past the end
is padded on the RIGHT with zeros and mask 0: real steps always come first, so a causal
recurrence (Mamba) never reads padding before a real step. With context_len=None, windows are
whole trajectories from step 0 (K = the longest trajectory, at most max_ep_len).

References (ideas, not code):
  Fu et al. 2020, "D4RL: Datasets for Deep Data-Driven Reinforcement Learning" (schema, scores).
  Farama Foundation, Minari dataset format (episode groups).
  Chen et al. 2021, "Decision Transformer" (return-to-go conditioning, window sampling).

Glossary of dimension letters:
  N  transitions in a file or dataset     T  steps in one trajectory
  n  trajectories in a dataset            B  windows in a batch
  K  steps in a window (context length)
  obs, act  observation and action sizes
"""
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from cli import atomic_write, option, parse_config

ENVS = {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5", "walker2d": "Walker2d-v5"}
LEVELS = ("random", "medium", "medium-replay", "expert", "medium-expert")
MAX_EPISODE_STEPS = 1000  # the envs' time limit: no episode is longer
# (random, expert) returns of D4RL's reference policies, for normalised scores
REF_RETURNS = {"hopper": (-20.272305, 3234.3), "halfcheetah": (-280.178953, 12135.0),
               "walker2d": (1.629008, 4592.3)}
# (observation size, action size) of the Gymnasium v5 envs, so checks need no MuJoCo
# The evaluation protocol, read by train.py and evaluate.py: the DT paper's target return per env,
# and the seeds. Episode i of an evaluation resets its env with seed SEED + i. Two ranges that
# never meet: validation seeds (train.py's periodic evaluations, pilots: whatever chooses a
# setting) start at VALIDATION_SEED and stay below TEST_SEED; reported scores use test seeds.
TARGET_RETURNS = {"hopper": 3600.0, "halfcheetah": 12000.0, "walker2d": 5000.0}
VALIDATION_SEED, TEST_SEED = 10_000, 500_000
ENV_DIMS = {"hopper": (11, 3), "halfcheetah": (17, 6), "walker2d": (17, 6)}
D4RL_KEYS = ("observations", "actions", "rewards", "terminals")  # plus optional "timeouts"
MINARI_KEYS = ("observations", "actions", "rewards", "terminations", "truncations")
MAKE_DATASET = "python policies/collect.py dataset --env ENV --level LEVEL"
# What a transition of these envs can hold: actions in [-1, 1] (all three action spaces), with a
# tolerance for rounding; a step's reward is at most ~20 in size (halfcheetah's fastest runs),
# so a larger one is a damaged or foreign file.
ACTION_LOW, ACTION_HIGH, ACTION_TOLERANCE = -1.0, 1.0, 1e-2
MAX_STEP_REWARD = 100.0


@dataclass
class InspectConfig:
    data: str = option(None, "a D4RL .hdf5 file or a Minari dataset folder", positional=True)
    env: str = option("", "check sizes against this env and print normalised returns "
                          "(hopper | halfcheetah | walker2d)")


class DataError(ValueError):
    """A dataset problem the user can fix; the message is one sentence saying what to do."""


# ----------------------------------------------------------------------------- envs and scores

def env_key(env: str) -> str:
    """'hopper' or 'Hopper-v5' -> 'hopper'; anything else is a DataError naming the choices."""
    key = {v.lower(): k for k, v in ENVS.items()}.get(env.lower(), env.lower())
    if key not in ENVS:
        raise DataError(f"unknown env {env!r}: choose one of {', '.join(ENVS)}.")
    return key


def normalized_score(env: str, returns):
    """D4RL-normalised score 100 * (R - random) / (expert - random); float in, float out."""
    random_return, expert_return = REF_RETURNS[env_key(env)]
    score = 100.0 * (np.asarray(returns, dtype=np.float64) - random_return) / (
        expert_return - random_return)
    return float(score) if score.ndim == 0 else score


# ----------------------------------------------------------------------------- trajectories

@dataclass
class Trajectory:
    """One episode, or the truncated piece of one that a file ends with."""
    observations: np.ndarray  # (T, obs) f32
    actions: np.ndarray  # (T, act) f32
    rewards: np.ndarray  # (T,) f32
    terminated: bool  # True if it ended by a terminal (fell); False at a time limit or a cut

    def __len__(self) -> int:
        return len(self.rewards)


def returns_to_go(rewards: np.ndarray) -> np.ndarray:
    """Undiscounted return-to-go: out[t] = rewards[t] + rewards[t+1] + ... (f32, same length)."""
    # exercise 3: begin
    return np.cumsum(rewards[::-1], dtype=np.float64)[::-1].astype(np.float32)
    # exercise 3: end


# Variants where memory should matter. Partially observed (Ni et al. 2022, "Recurrent model-free RL
# can be a strong baseline for many POMDPs"): positions only, velocities hidden. A Gymnasium v5
# observation is qpos[1:] (the x position left out) followed by qvel, so its first POSITIONS[env]
# entries are the positions. Delayed reward (Chen et al. 2021, Table 5): every step 0, the whole
# return at the episode's last step, so returns-to-go hold the episode's return throughout.
POSITIONS = {"hopper": 5, "halfcheetah": 8, "walker2d": 8}  # obs[:n] == data.qpos[1:]
OBS_VARIANTS, REWARD_VARIANTS = ("full", "positions"), ("dense", "delayed")


def apply_variant(trajectories, env: str, obs="full", reward="dense") -> list:
    """The trajectories as a variant's agent sees them (the same in training and evaluation:
    evaluate.VariantEnv applies it to the env)."""
    if obs not in OBS_VARIANTS or reward not in REWARD_VARIANTS:
        raise DataError(f"unknown variant --obs {obs} --reward {reward}: choose --obs "
                        f"{' | '.join(OBS_VARIANTS)} and --reward {' | '.join(REWARD_VARIANTS)}.")
    out = []
    for t in trajectories:
        observations = t.observations[:, :POSITIONS[env_key(env)]] if obs == "positions" \
            else t.observations  # (T, obs) -> (T, positions)
        rewards = t.rewards
        if reward == "delayed":
            rewards = np.zeros_like(t.rewards)  # (T,)
            rewards[-1] = t.rewards.sum(dtype=np.float64)
        out.append(Trajectory(observations, t.actions, rewards, t.terminated))
    return out


def _clean_columns(source: str, columns: dict) -> dict:
    """Cast columns to the schema's dtypes and shapes; one sentence on bad shapes, lengths, NaN."""
    out = {}
    for name, value in columns.items():
        value = np.asarray(value)
        is_matrix = name in ("observations", "actions")
        if not is_matrix and value.ndim == 2 and value.shape[1] == 1:
            value = value[:, 0]  # rewards / flags stored as (N, 1) -> (N,)
        if value.ndim != (2 if is_matrix else 1):
            raise DataError(f"{source}: {name} has shape {value.shape} but should be "
                            f"{'(N, size)' if is_matrix else '(N,)'}; regenerate the file.")
        if not (np.issubdtype(value.dtype, np.number) or value.dtype == bool):
            raise DataError(f"{source}: {name} holds {value.dtype} values, not numbers; "
                            "regenerate the file.")
        if np.iscomplexobj(value):
            raise DataError(f"{source}: {name} holds complex numbers ({value.dtype}), not real "
                            "ones; regenerate the file.")
        out[name] = value.astype(bool) if name in ("terminals", "timeouts") else (
            value.astype(np.float32))
    lengths = {name: len(value) for name, value in out.items()}
    if len(set(lengths.values())) > 1:
        found = ", ".join(f"{name} {n}" for name, n in lengths.items())
        raise DataError(f"{source}: columns have different lengths ({found}) but need one row "
                        "per transition; regenerate or repair the file.")
    for name in ("observations", "actions", "rewards"):
        bad = ~np.isfinite(out[name])  # (N, size) or (N,)
        bad = bad.any(axis=1) if bad.ndim == 2 else bad  # (N,) rows with a bad value
        if bad.any():
            raise DataError(f"{source}: {name} has NaN/inf values in {bad.sum()} rows (first at "
                            f"row {bad.argmax()}); drop those transitions or regenerate the file.")
    return out


def _split(columns: dict) -> list[Trajectory]:
    """Cut D4RL rows into trajectories after every terminal or timeout (without timeouts, after
    every 1000 steps since the last terminal); keep the trailing piece."""
    terminals = columns["terminals"]
    ends = terminals | columns.get("timeouts", np.zeros_like(terminals))  # (N,)
    if "timeouts" not in columns:  # old D4RL files: the time limit cut without a flag
        after_fall = np.r_[0, np.flatnonzero(terminals) + 1]  # where each run of steps starts
        for a, b in zip(after_fall, np.r_[after_fall[1:], len(ends)]):
            ends[a + MAX_EPISODE_STEPS - 1:b:MAX_EPISODE_STEPS] = True
    stops = np.flatnonzero(ends) + 1  # one past each trajectory's last row
    if len(stops) == 0 or stops[-1] != len(ends):
        stops = np.append(stops, len(ends))  # trailing rows: a truncated trajectory
    starts = np.concatenate([[0], stops[:-1]])
    obs, actions, rewards = columns["observations"], columns["actions"], columns["rewards"]
    return [Trajectory(obs[a:b], actions[a:b], rewards[a:b], terminated=bool(terminals[b - 1]))
            for a, b in zip(starts, stops)]


def _keys_found(group: h5py.Group) -> str:
    return ", ".join(k + ("/" if isinstance(group[k], h5py.Group) else "") for k in group) or (
        "nothing")


def _missing_keys(source: str, group: h5py.Group, needed: tuple, what: str) -> None:
    missing = [k for k in needed if not isinstance(group.get(k), h5py.Dataset)]
    if missing:
        raise DataError(f"{source} lacks {', '.join(missing)} (found: {_keys_found(group)}); "
                        f"{what} needs {', '.join(needed)}.")


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on this system: a generous 1 TiB
        return 2**40


def _read(dataset: h5py.Dataset, where: str) -> np.ndarray:
    """dataset[()], once its declared size is known to fit in this machine's memory."""
    need = dataset.size * dataset.dtype.itemsize
    if need > _memory_bytes():
        raise DataError(f"{where} declares shape {dataset.shape} ({need / 2**30:,.0f} GiB), more "
                        "than this machine's memory holds: the file is damaged or not a dataset; "
                        "regenerate it.")
    return dataset[()]


def _read_d4rl(f: h5py.File, source: str) -> list[Trajectory]:
    _missing_keys(source, f, D4RL_KEYS, "a D4RL file (timeouts optional)")
    keys = D4RL_KEYS + (("timeouts",) if isinstance(f.get("timeouts"), h5py.Dataset) else ())
    columns = _clean_columns(source, {k: _read(f[k], f"{source}: {k}") for k in keys})
    if len(columns["rewards"]) == 0:
        raise DataError(f"{source} has no transitions; regenerate it with `{MAKE_DATASET}`.")
    return _split(columns)


def _read_minari(f: h5py.File, source: str) -> list[Trajectory]:
    names = sorted((k for k in f if k.startswith("episode_") and k[8:].isdigit()),
                   key=lambda k: int(k[8:]))  # episode_10 after episode_2
    trajectories = []
    for name in names:
        episode, where = f[name], f"{source} {name}"
        if not isinstance(episode, h5py.Group):
            raise DataError(f"{where} is a single array, not an episode group; a Minari file "
                            "stores each episode as a group of observations, actions, rewards, "
                            "terminations and truncations.")
        _missing_keys(where, episode, MINARI_KEYS, "a Minari episode")
        obs, actions = (_read(episode[k], f"{where}: {k}") for k in ("observations", "actions"))
        if len(obs) != len(actions) + 1:
            raise DataError(f"{where}: observations has {len(obs)} rows but a Minari episode "
                            f"stores len(actions) + 1 = {len(actions) + 1}; repair the file.")
        columns = _clean_columns(where, {
            "observations": obs[:-1], "actions": actions,
            **{name: _read(episode[k], f"{where}: {k}") for name, k in (
                ("rewards", "rewards"), ("terminals", "terminations"),
                ("timeouts", "truncations"))}})
        if len(actions):
            trajectories.append(Trajectory(columns["observations"], columns["actions"],
                                           columns["rewards"], bool(columns["terminals"].any())))
    if not trajectories:
        raise DataError(f"{source} has no non-empty episode_* groups; pass another dataset.")
    return trajectories


def _minari_file(folder: Path) -> Path:
    for candidate in (folder / "main_data.hdf5", folder / "data" / "main_data.hdf5"):
        if candidate.is_file():
            return candidate
    raise DataError(f"folder {folder} has no main_data.hdf5 (nor data/main_data.hdf5); pass a "
                    "D4RL .hdf5 file or a Minari dataset folder.")


def load_trajectories(path) -> list[Trajectory]:
    """Read a D4RL .hdf5 file, a Minari dataset folder or one of our files into trajectories."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} not found: make a dataset with `{MAKE_DATASET}` (or train with "
                        "--env ENV --dataset LEVEL), or pass a D4RL file or Minari folder.")
    if not (path.is_file() or path.is_dir()):  # opening a pipe would wait forever
        raise DataError(f"{path} is neither a regular file nor a folder (a pipe or a device?); "
                        "pass a D4RL .hdf5 file or a Minari dataset folder.")
    file = _minari_file(path) if path.is_dir() else path
    try:
        with h5py.File(file, "r") as f:
            is_minari = any(k.startswith("episode_") for k in f)
            return _read_minari(f, str(path)) if is_minari else _read_d4rl(f, str(path))
    except OSError as e:  # not HDF5, truncated, or unreadable
        raise DataError(f"{file} is not a readable HDF5 file ({e}); pass a D4RL .hdf5 file or "
                        "a Minari dataset folder.") from None
    except KeyError as e:  # h5py's way of saying a link leads nowhere (an external file gone)
        raise DataError(f"{file} links to data that cannot be opened ({e.args[0] if e.args else e})"
                        "; copy the data into the file or pass another dataset.") from None


def write_d4rl_hdf5(path, observations, actions, rewards, terminals, timeouts,
                    attrs: dict | None = None) -> Path:
    """Write a D4RL-schema file atomically (temp file + rename); attrs that are not plain
    numbers or strings are stored as JSON text."""
    path = Path(path)
    columns = _clean_columns(str(path), {
        "observations": observations, "actions": actions, "rewards": rewards,
        "terminals": terminals, "timeouts": timeouts})
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp):
        with h5py.File(tmp, "w") as f:
            for name, value in columns.items():
                f.create_dataset(name, data=value)
            for key, value in (attrs or {}).items():
                plain = isinstance(value, (str, int, float, bool, np.number))
                f.attrs[key] = value if plain else json.dumps(value)
    atomic_write(path, write)  # readers see the old file or the whole new one, never half
    return path


def check_fits_env(data, env: str, source="the dataset") -> None:
    """DataError unless the observation/action sizes of data (a list of trajectories, a
    TrajectoryDataset or an (obs, act) pair) are those of env; for a list of trajectories also
    unless every action lies in env's action space (with ACTION_TOLERANCE) and every reward
    within +- MAX_STEP_REWARD (the message names the first bad row)."""
    if isinstance(data, tuple):
        sizes = data
    elif hasattr(data, "state_dim"):  # a TrajectoryDataset
        sizes = (data.state_dim, data.act_dim)
    else:
        sizes = (data[0].observations.shape[1], data[0].actions.shape[1])
    key = env_key(env)
    if sizes != ENV_DIMS[key]:
        fits = [name for name, dims in ENV_DIMS.items() if dims == sizes]
        hint = f"pass --env {' or '.join(fits)}" if fits else "pass a dataset made for it"
        raise DataError(f"{source} has observations of size {sizes[0]} and actions of size "
                        f"{sizes[1]} but {ENVS[key]} has {ENV_DIMS[key][0]} and "
                        f"{ENV_DIMS[key][1]}; {hint}.")
    if isinstance(data, list):
        _check_plausible(data, key, source)


def _check_plausible(trajectories, key, source):
    """Actions inside the env's action space (with a tolerance), rewards of a plausible size."""
    actions = np.concatenate([t.actions for t in trajectories])  # (N, act)
    rewards = np.concatenate([t.rewards for t in trajectories])  # (N,)
    low, high = ACTION_LOW - ACTION_TOLERANCE, ACTION_HIGH + ACTION_TOLERANCE
    bad = ((actions < low) | (actions > high)).any(axis=1)  # (N,)
    if bad.any():
        row = int(bad.argmax())
        raise DataError(f"{source}: {bad.sum()} rows have actions outside {ENVS[key]}'s action "
                        f"space [{ACTION_LOW:g}, {ACTION_HIGH:g}], the first at row {row} "
                        f"({np.array2string(actions[row], precision=3)}); pass a dataset made "
                        f"for {ENVS[key]} (or clip its actions).")
    bad = np.abs(rewards) > MAX_STEP_REWARD  # (N,)
    if bad.any():
        row = int(bad.argmax())
        raise DataError(f"{source}: {bad.sum()} rows have rewards beyond +-{MAX_STEP_REWARD:g}, "
                        f"more than one step of {ENVS[key]} earns, the first at row {row} "
                        f"({rewards[row]:.3g}); the file is damaged or not {key}'s: regenerate "
                        "it.")


# ----------------------------------------------------------------------------- datasets by name

def data_fingerprint(trajectories) -> str:
    """A hash of the trajectories' observations, actions and rewards: the same data gives the
    same fingerprint wherever its file lies, regenerated or edited data another."""
    digest = hashlib.sha256()
    for t in trajectories:
        for array in (t.observations, t.actions, t.rewards):
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:32]


def dataset_path(env: str, level: str, data_dir="data") -> Path:
    """Where the named dataset lives: data/{env}-{level}.hdf5."""
    if level not in LEVELS:
        raise DataError(f"unknown dataset level {level!r}: choose one of {', '.join(LEVELS)}.")
    return Path(data_dir) / f"{env_key(env)}-{level}.hdf5"


# ----------------------------------------------------------------------------- training windows

def _gather(array: np.ndarray, rows: np.ndarray, real: np.ndarray) -> torch.Tensor:
    """array[rows] with padded positions exactly 0: (N, C) -> (B, K, C)."""
    return torch.from_numpy(np.where(real[..., None], array[rows], np.float32(0)))


class TrajectoryDataset:
    """Trajectories as concatenated arrays (normalised states, scaled return-to-go) that sample()
    cuts into padded windows of K steps with one vectorised gather, no loop per window."""

    def __init__(self, trajectories, context_len: int | None = 20, max_ep_len=MAX_EPISODE_STEPS,
                 return_scale=1000.0, state_mean=None, state_std=None):
        if not trajectories:
            raise DataError(f"the dataset has no trajectories; make one with `{MAKE_DATASET}`.")
        sizes = sorted({(t.observations.shape[1], t.actions.shape[1]) for t in trajectories})
        if len(sizes) > 1:
            raise DataError(f"trajectories have different (observation, action) sizes {sizes}; "
                            "use trajectories of one env.")
        if context_len is not None and context_len < 1:
            raise DataError(f"context_len must be at least 1 or None, got {context_len}.")
        self.state_dim, self.act_dim = sizes[0]
        self.max_ep_len, self.return_scale = max_ep_len, return_scale
        self.trajectory_lengths = np.array([len(t) for t in trajectories])  # (n,)
        self.starts = np.concatenate([[0], np.cumsum(self.trajectory_lengths)[:-1]])  # (n,)
        self.num_transitions = int(self.trajectory_lengths.sum())
        self.terminated = np.array([t.terminated for t in trajectories])  # (n,) bool
        self.episode_returns = np.array([t.rewards.sum(dtype=np.float64) for t in trajectories])

        states = np.concatenate([t.observations for t in trajectories])  # (N, obs)
        self.state_mean = (states.mean(0, dtype=np.float64) if state_mean is None
                           else np.asarray(state_mean)).astype(np.float32)  # (obs,)
        std = states.std(0, dtype=np.float64) if state_std is None else np.asarray(state_std)
        self.state_std = np.maximum(std, 1e-6).astype(np.float32)  # (obs,), never divide by 0
        if self.state_mean.shape != (self.state_dim,) or self.state_std.shape != (self.state_dim,):
            raise DataError(f"state_mean/state_std have shapes {self.state_mean.shape}/"
                            f"{self.state_std.shape} but the states have size {self.state_dim}; "
                            "pass statistics of the same env.")
        self.states = (states - self.state_mean) / self.state_std  # (N, obs) normalised once
        self.actions = np.concatenate([t.actions for t in trajectories])  # (N, act)
        self.returns_to_go = np.concatenate(
            [returns_to_go(t.rewards) for t in trajectories]) / np.float32(return_scale)  # (N,)

        self.full_trajectory = context_len is None
        self.context_len = (min(int(self.trajectory_lengths.max()), max_ep_len)
                            if context_len is None else int(context_len))

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """B windows of K steps: trajectories in proportion to length, uniform start (0 in
        full-trajectory mode), right padding with zeros and mask 0."""
        # exercise 3: begin
        row = rng.integers(0, self.num_transitions, size=batch_size)  # (B,) uniform transition
        traj = np.searchsorted(self.starts, row, side="right") - 1  # (B,) its trajectory
        start = np.zeros_like(row) if self.full_trajectory else row - self.starts[traj]  # (B,)
        step = start[:, None] + np.arange(self.context_len)  # (B, K) step within trajectory
        real = step < self.trajectory_lengths[traj][:, None]  # (B, K) real steps, then padding
        rows = np.where(real, self.starts[traj][:, None] + step, 0)  # (B, K) rows to gather
        timesteps = np.where(real, np.minimum(step, self.max_ep_len - 1), 0)  # (B, K)
        # exercise 3: end
        return {
            "states": _gather(self.states, rows, real),  # (B, K, obs)
            "actions": _gather(self.actions, rows, real),  # (B, K, act)
            "returns_to_go": _gather(self.returns_to_go[:, None], rows, real),  # (B, K, 1)
            "timesteps": torch.from_numpy(timesteps.astype(np.int64)),  # (B, K)
            "mask": torch.from_numpy(real.astype(np.float32)),  # (B, K)
        }

    def summary(self) -> dict:
        """Plain numbers describing the dataset, for reports."""
        returns = self.episode_returns
        return {"trajectories": len(returns), "transitions": self.num_transitions,
                "return_mean": float(returns.mean()), "return_std": float(returns.std()),
                "return_min": float(returns.min()), "return_max": float(returns.max()),
                "length_mean": float(self.trajectory_lengths.mean()),
                "fraction_terminated": float(self.terminated.mean())}


# ----------------------------------------------------------------------------- CLI: inspect a file

def main(argv=None) -> None:
    """python data.py PATH [--env ENV]: print what a dataset holds, as JSON."""
    cfg = parse_config(InspectConfig, argv, main.__doc__)
    try:
        trajectories = load_trajectories(cfg.data)
        if cfg.env:
            check_fits_env(trajectories, cfg.env, source=cfg.data)
        dataset = TrajectoryDataset(trajectories)
        summary = dataset.summary()
        if cfg.env:
            summary["normalized_mean"] = normalized_score(cfg.env, summary["return_mean"])
    except DataError as e:
        sys.exit(f"error: {e}")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
