"""data.py: reading D4RL / Minari / our files, return-to-go, statistics, the window sampler, and
the one-sentence messages for bad input. Every file is tiny and written by the test itself."""
import ast
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import data
from data import DataError, Trajectory, TrajectoryDataset


def write_raw_d4rl(path, n=30, obs_dim=11, act_dim=3, dtype=np.float32, reward_shape=None,
                   terminal_rows=(), timeout_rows=(), with_timeouts=True, **overrides):
    """A D4RL-style file written with h5py directly (not with data.py); obs[:, 0] numbers rows."""
    columns = {
        "observations": np.tile(np.arange(n, dtype=dtype)[:, None], (1, obs_dim)),
        "actions": np.full((n, act_dim), 0.5, dtype=dtype),
        "rewards": np.arange(n, dtype=dtype).reshape(reward_shape or (n,)),
        "terminals": np.isin(np.arange(n), terminal_rows),
        "timeouts": np.isin(np.arange(n), timeout_rows),
    }
    if not with_timeouts:
        del columns["timeouts"]
    columns.update(overrides)
    with h5py.File(path, "w") as f:
        for name, value in columns.items():
            f.create_dataset(name, data=value)
    return path


def write_minari(folder, episode_lengths, obs_dim=11, act_dim=3, terminated=(), extra_obs=1):
    """A Minari-style folder: data/main_data.hdf5 with one episode_i group per episode; the
    observations of episode i hold the value i, so reading order can be checked."""
    (folder / "data").mkdir(parents=True)
    with h5py.File(folder / "data" / "main_data.hdf5", "w") as f:
        for i, t in enumerate(episode_lengths):
            g = f.create_group(f"episode_{i}")
            g["observations"] = np.full((t + extra_obs, obs_dim), float(i))
            g["observations"][-1] = -1.0  # the state after the last action: must be dropped
            g["actions"] = np.zeros((t, act_dim))
            g["rewards"] = np.ones(t)
            g["terminations"] = np.arange(t) == (t - 1 if i in terminated else -1)
            g["truncations"] = np.arange(t) == (-1 if i in terminated else t - 1)
    return folder


def make_trajectory(length, first_value=0.0, obs_dim=2, act_dim=1, terminated=False):
    """observations[:, 0] counts first_value, first_value+1, ...; rewards are 1 per step."""
    obs = np.zeros((length, obs_dim), np.float32)
    obs[:, 0] = first_value + np.arange(length)
    return Trajectory(obs, np.full((length, act_dim), 0.25, np.float32),
                      np.ones(length, np.float32), terminated)


def assert_one_sentence(message, *parts):
    assert "\n" not in message and message.endswith("."), message
    for part in parts:
        assert part in message, (part, message)


# ----------------------------------------------------------------------------- reading files

def test_d4rl_splits_at_terminals_and_timeouts_and_keeps_trailing_piece_as_truncated(tmp_path):
    path = write_raw_d4rl(tmp_path / "d.hdf5", n=30, terminal_rows=[4], timeout_rows=[14])
    trajectories = data.load_trajectories(path)
    assert [len(t) for t in trajectories] == [5, 10, 15]
    assert [t.terminated for t in trajectories] == [True, False, False]
    assert [t.observations[0, 0] for t in trajectories] == [0, 5, 15]  # split positions
    assert trajectories[0].observations.dtype == np.float32


def test_terminal_and_timeout_on_the_same_row_count_as_terminated(tmp_path):
    path = write_raw_d4rl(tmp_path / "d.hdf5", n=10, terminal_rows=[9], timeout_rows=[9])
    [trajectory] = data.load_trajectories(path)
    assert len(trajectory) == 10 and trajectory.terminated


def test_float64_file_with_column_rewards_reads_as_float32_vectors(tmp_path):
    path = write_raw_d4rl(tmp_path / "d.hdf5", n=12, dtype=np.float64, reward_shape=(12, 1),
                          timeout_rows=[5, 11])
    trajectories = data.load_trajectories(path)
    assert [len(t) for t in trajectories] == [6, 6]
    for t in trajectories:
        assert t.observations.dtype == t.actions.dtype == t.rewards.dtype == np.float32
        assert t.rewards.shape == (6,)
    np.testing.assert_array_equal(trajectories[1].rewards, np.arange(6, 12))


def test_file_without_timeouts_is_cut_at_terminals_and_at_the_time_limit(tmp_path):
    path = write_raw_d4rl(tmp_path / "d.hdf5", n=3700, terminal_rows=[299, 1299, 1499],
                          with_timeouts=False)
    trajectories = data.load_trajectories(path)
    # fell at 300; fell at step 1000 (the limit's row too); fell at 200; then 2200 steps that
    # never fell: 1000, 1000 (the time limit, as D4RL's loader cuts) and a trailing 200
    assert [len(t) for t in trajectories] == [300, 1000, 200, 1000, 1000, 200]
    assert [t.terminated for t in trajectories] == [True, True, True, False, False, False]
    assert trajectories[4].observations[0, 0] == 2500  # obs[:, 0] numbers the rows


def test_minari_folder_drops_last_observation_and_sorts_episodes_numerically(tmp_path):
    lengths = [3 + i for i in range(12)]  # 12 episodes: episode_10 must come after episode_2
    folder = write_minari(tmp_path / "hopper-medium-v0", lengths, terminated={1})
    trajectories = data.load_trajectories(folder)
    assert [len(t) for t in trajectories] == lengths
    assert [t.observations[0, 0] for t in trajectories] == list(range(12))
    assert all((t.observations != -1.0).all() for t in trajectories)  # last observation gone
    assert [t.terminated for t in trajectories] == [i == 1 for i in range(12)]
    # the main_data.hdf5 file itself, and a folder holding it directly, read the same
    file = folder / "data" / "main_data.hdf5"
    assert [len(t) for t in data.load_trajectories(file)] == lengths
    assert [len(t) for t in data.load_trajectories(folder / "data")] == lengths


def test_written_file_reads_back_with_values_and_attributes(tmp_path):
    rng = np.random.default_rng(0)
    obs, actions = rng.normal(size=(8, 17)), rng.uniform(-1, 1, size=(8, 6))
    path = data.write_d4rl_hdf5(tmp_path / "sub" / "ours.hdf5", obs, actions, np.ones(8),
                                np.eye(8)[3].astype(bool), np.eye(8)[7].astype(bool),
                                {"env_id": "Walker2d-v5", "seed": 3, "versions": {"mujoco": "3"}})
    assert path.exists() and not list(path.parent.glob(".*tmp"))  # temp file renamed away
    first, second = data.load_trajectories(path)
    np.testing.assert_allclose(first.observations, obs[:4], rtol=1e-6)
    np.testing.assert_allclose(second.actions, actions[4:], rtol=1e-6)
    assert (first.terminated, second.terminated) == (True, False)
    with h5py.File(path) as f:
        assert f.attrs["env_id"] == "Walker2d-v5" and f.attrs["seed"] == 3
        assert json.loads(f.attrs["versions"]) == {"mujoco": "3"}
        assert f["observations"].dtype == np.float32 and f["terminals"].dtype == bool


# ----------------------------------------------------------------------------- return-to-go, stats

def test_returns_to_go_sums_the_remaining_rewards():
    np.testing.assert_array_equal(data.returns_to_go(np.array([1.0, 2.0, 3.0, -0.5])),
                                  [5.5, 4.5, 2.5, -0.5])


def test_dataset_return_to_go_restarts_per_trajectory_and_is_scaled():
    ds = TrajectoryDataset([make_trajectory(3), make_trajectory(2)], return_scale=10.0)
    np.testing.assert_allclose(ds.returns_to_go, [0.3, 0.2, 0.1, 0.2, 0.1], rtol=1e-6)
    np.testing.assert_array_equal(ds.episode_returns, [3.0, 2.0])


def test_state_statistics_match_numpy_and_constant_columns_get_the_std_floor():
    rng = np.random.default_rng(1)
    trajectories = [Trajectory(np.c_[rng.normal(3, 2, size=(n, 1)), np.ones((n, 1))]
                               .astype(np.float32), np.zeros((n, 1), np.float32),
                               np.zeros(n, np.float32), False) for n in (50, 70)]
    ds = TrajectoryDataset(trajectories)
    states = np.concatenate([t.observations for t in trajectories])
    np.testing.assert_allclose(ds.state_mean, states.mean(0), rtol=1e-5)
    np.testing.assert_allclose(ds.state_std, [states[:, 0].std(), 1e-6], rtol=1e-5)
    np.testing.assert_allclose(ds.states.mean(0)[0], 0.0, atol=1e-5)
    assert ds.state_mean.dtype == ds.state_std.dtype == np.float32


def test_given_statistics_replace_the_datasets_own():
    ds = TrajectoryDataset([make_trajectory(4, first_value=10)], state_mean=[10.0, 0.0],
                           state_std=[2.0, 0.0])
    np.testing.assert_allclose(ds.states[:, 0], [0.0, 0.5, 1.0, 1.5])
    np.testing.assert_allclose(ds.state_std, [2.0, 1e-6])


def test_summary_counts_trajectories_transitions_returns_and_falls():
    ds = TrajectoryDataset([make_trajectory(3, terminated=True), make_trajectory(5)])
    assert ds.summary() == {"trajectories": 2, "transitions": 8, "return_mean": 4.0,
                            "return_std": 1.0, "return_min": 3.0, "return_max": 5.0,
                            "length_mean": 4.0, "fraction_terminated": 0.5}


# ----------------------------------------------------------------------------- sampler

def test_sample_shapes_and_dtypes():
    ds = TrajectoryDataset([make_trajectory(30, obs_dim=5, act_dim=2)], context_len=7)
    batch = ds.sample(4, np.random.default_rng(0))
    assert {k: tuple(v.shape) for k, v in batch.items()} == {
        "states": (4, 7, 5), "actions": (4, 7, 2), "returns_to_go": (4, 7, 1),
        "timesteps": (4, 7), "mask": (4, 7)}
    assert batch["timesteps"].dtype == torch.int64
    assert all(batch[k].dtype == torch.float32
               for k in ("states", "actions", "returns_to_go", "mask"))


def test_windows_hold_consecutive_steps_of_one_trajectory():
    trajectories = [make_trajectory(n, first_value=1000 * i) for i, n in enumerate((5, 40, 9))]
    ds = TrajectoryDataset(trajectories, context_len=6, state_mean=[0, 0], state_std=[1, 1])
    batch = ds.sample(200, np.random.default_rng(0))
    first_col, mask = batch["states"][..., 0], batch["mask"].bool()
    for row in range(200):
        values = first_col[row][mask[row]]
        traj, step = divmod(int(values[0]), 1000)
        length = len(trajectories[traj])
        np.testing.assert_array_equal(values, 1000 * traj + step + np.arange(len(values)))
        assert len(values) == min(6, length - step)  # cut only by the trajectory's end
        np.testing.assert_array_equal(batch["timesteps"][row][mask[row]],
                                      step + np.arange(len(values)))
        np.testing.assert_allclose(batch["returns_to_go"][row, mask[row], 0],
                                   (length - step - np.arange(len(values))) / 1000.0)


def test_mask_is_ones_then_zeros_and_padded_values_are_exactly_zero():
    ds = TrajectoryDataset([make_trajectory(3, first_value=5), make_trajectory(4, first_value=7)],
                           context_len=8)
    batch = ds.sample(64, np.random.default_rng(0))
    mask = batch["mask"]
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert (mask[:, 0] == 1).all() and (mask[:, 1:] <= mask[:, :-1]).all()  # padding on the right
    assert (mask.sum(1) < 8).all()  # every window here is padded
    pad = mask == 0
    for key in ("states", "actions", "returns_to_go"):
        assert (batch[key][pad] == 0).all() and (batch[key][~pad] != 0).any(), key
    assert (batch["timesteps"][pad] == 0).all()


def test_timesteps_are_clipped_at_max_ep_len_minus_one():
    ds = TrajectoryDataset([make_trajectory(50)], context_len=50, max_ep_len=10)
    batch = ds.sample(32, np.random.default_rng(0))
    real = batch["mask"].bool()
    assert batch["timesteps"][real].max() == 9
    assert (batch["timesteps"][0][real[0]] == torch.clamp(
        torch.arange(int(real[0].sum())) + batch["timesteps"][0, 0], max=9)).all()


def test_a_ten_times_longer_trajectory_is_sampled_about_ten_times_as_often():
    ds = TrajectoryDataset([make_trajectory(10, first_value=0),
                            make_trajectory(100, first_value=1000)], context_len=1,
                           state_mean=[0, 0], state_std=[1, 1])
    first = ds.sample(11000, np.random.default_rng(0))["states"][:, 0, 0]
    long_share = (first >= 1000).float().mean().item()
    assert abs(long_share - 100 / 110) < 0.01, long_share


def test_window_start_is_uniform_over_the_trajectory():
    ds = TrajectoryDataset([make_trajectory(5)], context_len=3, state_mean=[0, 0],
                           state_std=[1, 1])
    starts = ds.sample(10000, np.random.default_rng(0))["states"][:, 0, 0]
    counts = torch.bincount(starts.long(), minlength=5).numpy()
    np.testing.assert_allclose(counts / 10000, 0.2, atol=0.02)


def test_same_generator_seed_gives_the_same_batch():
    ds = TrajectoryDataset([make_trajectory(n) for n in (7, 20, 33)], context_len=5)
    a, b = (ds.sample(16, np.random.default_rng(42)) for _ in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_full_trajectory_mode_uses_whole_episodes_from_step_zero():
    ds = TrajectoryDataset([make_trajectory(4), make_trajectory(9)], context_len=None,
                           state_mean=[0, 0], state_std=[1, 1])
    assert ds.context_len == 9
    batch = ds.sample(20, np.random.default_rng(0))
    assert (batch["states"][:, 0, 0] == 0).all() and (batch["timesteps"][:, 0] == 0).all()
    assert set(batch["mask"].sum(1).tolist()) == {4.0, 9.0}
    capped = TrajectoryDataset([make_trajectory(30)], context_len=None, max_ep_len=25)
    assert capped.context_len == 25


# ----------------------------------------------------------------------------- scores and names

def test_normalized_score_is_0_at_random_and_100_at_expert_returns():
    for env, (random_return, expert_return) in data.REF_RETURNS.items():
        assert data.normalized_score(env, random_return) == pytest.approx(0.0, abs=1e-9)
        assert data.normalized_score(env, expert_return) == pytest.approx(100.0)
    scores = data.normalized_score("Hopper-v5", np.array(data.REF_RETURNS["hopper"]))
    np.testing.assert_allclose(scores, [0.0, 100.0], atol=1e-9)


def test_data_py_imports_no_other_project_file_but_the_stdlib_cli_helper():
    """data.py is the bottom of the house: every reader of data imports it, it imports nothing
    of ours except cli.py (standard library only)."""
    project = {p.stem for p in Path(data.__file__).parent.glob("*.py")}
    tree = ast.parse(Path(data.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported & project <= {"cli"}, imported & project


def test_inspect_cli_prints_the_summary_as_json(tmp_path, capsys):
    path = write_raw_d4rl(tmp_path / "d.hdf5", n=20, timeout_rows=[9, 19])
    data.main([str(path), "--env", "hopper"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["trajectories"] == 2 and summary["transitions"] == 20


# ----------------------------------------------------------------------------- bad input

def test_missing_file_names_the_command_that_makes_a_dataset(tmp_path):
    with pytest.raises(DataError) as e:
        data.load_trajectories(tmp_path / "nope.hdf5")
    assert_one_sentence(str(e.value), "nope.hdf5 not found", "python policies/collect.py dataset")


def test_file_without_needed_keys_names_the_keys_found_and_missing(tmp_path):
    with h5py.File(tmp_path / "d.hdf5", "w") as f:
        f["observations"] = np.zeros((3, 11))
        f["rewards"] = np.zeros(3)
        f.create_group("infos")
    with pytest.raises(DataError) as e:
        data.load_trajectories(tmp_path / "d.hdf5")
    assert_one_sentence(str(e.value), "lacks actions, terminals",
                        "found: infos/, observations, rewards")


def test_mismatched_lengths_name_every_column_length(tmp_path):
    path = write_raw_d4rl(tmp_path / "d.hdf5", n=10, actions=np.zeros((9, 3), np.float32))
    with pytest.raises(DataError) as e:
        data.load_trajectories(path)
    assert_one_sentence(str(e.value), "different lengths", "observations 10", "actions 9")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_values_name_the_column_and_first_row(tmp_path, bad):
    obs = np.zeros((10, 11), np.float32)
    obs[6, 2] = bad
    path = write_raw_d4rl(tmp_path / "d.hdf5", n=10, observations=obs)
    with pytest.raises(DataError) as e:
        data.load_trajectories(path)
    assert_one_sentence(str(e.value), "observations has NaN/inf values in 1 rows",
                        "first at row 6")


def test_wrong_shapes_are_named(tmp_path):
    path = write_raw_d4rl(tmp_path / "d.hdf5", n=10, rewards=np.zeros((10, 2)))
    with pytest.raises(DataError) as e:
        data.load_trajectories(path)
    assert_one_sentence(str(e.value), "rewards has shape (10, 2)", "(N,)")


def test_a_file_that_is_not_hdf5_is_a_data_error_not_an_h5py_traceback(tmp_path):
    (tmp_path / "d.hdf5").write_text("not hdf5")
    with pytest.raises(DataError) as e:
        data.load_trajectories(tmp_path / "d.hdf5")
    assert_one_sentence(str(e.value), "is not a readable HDF5 file")


def test_empty_file_is_refused(tmp_path):
    path = write_raw_d4rl(tmp_path / "d.hdf5", n=0)
    with pytest.raises(DataError, match="has no transitions"):
        data.load_trajectories(path)


def test_minari_problems_name_the_episode(tmp_path):
    folder = write_minari(tmp_path / "short", [4, 5], extra_obs=0)
    with pytest.raises(DataError) as e:
        data.load_trajectories(folder)
    assert_one_sentence(str(e.value), "episode_0", "observations has 4 rows", "= 5")
    folder = write_minari(tmp_path / "nokey", [4])
    with h5py.File(folder / "data" / "main_data.hdf5", "a") as f:
        del f["episode_0/truncations"]
    with pytest.raises(DataError) as e:
        data.load_trajectories(folder)
    assert_one_sentence(str(e.value), "episode_0 lacks truncations", "found: actions,")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as e:
        data.load_trajectories(tmp_path / "empty")
    assert_one_sentence(str(e.value), "has no main_data.hdf5")


def test_observation_size_that_does_not_fit_the_env_names_both_sizes(tmp_path):
    trajectories = data.load_trajectories(write_raw_d4rl(tmp_path / "d.hdf5", obs_dim=17,
                                                         act_dim=6))
    data.check_fits_env(trajectories, "walker2d")  # fits: no error, whatever form the data has
    data.check_fits_env(TrajectoryDataset(trajectories), "HalfCheetah-v5")
    data.check_fits_env((11, 3), "hopper")
    with pytest.raises(DataError, match="pass a dataset made for it"):
        data.check_fits_env((5, 3), "hopper")
    with pytest.raises(DataError) as e:
        data.check_fits_env(trajectories, "hopper", source="d.hdf5")
    assert_one_sentence(str(e.value), "d.hdf5 has observations of size 17", "Hopper-v5 has 11",
                        "--env halfcheetah or walker2d")


def test_unknown_env_or_level_lists_the_choices():
    with pytest.raises(DataError) as e:
        data.dataset_path("ant", "medium")
    assert_one_sentence(str(e.value), "'ant'", "hopper, halfcheetah, walker2d")
    with pytest.raises(DataError) as e:
        data.dataset_path("hopper", "meduim")
    assert_one_sentence(str(e.value), "'meduim'", "medium-replay")


def test_dataset_of_mixed_sizes_or_wrong_statistics_is_refused():
    with pytest.raises(DataError, match="different"):
        TrajectoryDataset([make_trajectory(3, obs_dim=2), make_trajectory(3, obs_dim=4)])
    with pytest.raises(DataError, match="state_mean/state_std"):
        TrajectoryDataset([make_trajectory(3)], state_mean=np.zeros(5), state_std=np.ones(5))


def test_inspect_cli_ends_bad_input_in_one_error_line(tmp_path):
    with pytest.raises(SystemExit) as e:
        data.main([str(tmp_path / "nope.hdf5")])
    assert str(e.value).startswith("error: ") and "not found" in str(e.value)
