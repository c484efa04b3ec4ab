"""collect.py: the ARS trainer, dataset files for every level, env set-up, bad input, and the
committed behaviour policies under policies/."""
import h5py
import numpy as np
import pytest

import collect
import data

TINY = 300  # transitions in a tiny dataset
ISSUE_MEDIUM_FLOORS = {"hopper": 1000.0, "halfcheetah": 3000.0, "walker2d": 1000.0}


@pytest.fixture(scope="module")
def tiny_policies(tmp_path_factory):
    """A 3-iteration ARS run on Hopper with 50-step training episodes."""
    root = tmp_path_factory.mktemp("ars")
    cfg = collect.TrainConfig(env="hopper", iterations=3, episode_steps=50, eval_every=1,
                              eval_episodes=1, final_episodes=2, policy_dir=str(root / "policies"),
                              log_dir=str(root / "runs"))
    collect.train(cfg)
    return root


@pytest.mark.parametrize("env, obs_dim, act_dim", [("hopper", 11, 3), ("halfcheetah", 17, 6),
                                                    ("walker2d", 17, 6)])
def test_all_three_envs_make_reset_and_step(env, obs_dim, act_dim):
    env_obj = collect.make_env(env)
    obs, _ = env_obj.reset(seed=0)
    obs2, reward, terminated, _, _ = env_obj.step(np.zeros(act_dim))
    assert obs.shape == obs2.shape == (obs_dim,)
    assert env_obj.action_space.shape == (act_dim,)
    assert np.isfinite(reward) and not terminated and not np.allclose(obs, obs2)


def test_tiny_ars_run_learns_and_writes_policies_that_load(tiny_policies):
    history = np.load(tiny_policies / "runs" / "ars-hopper" / "history.npz")
    assert history["weights"].shape == (3, 3, 11)
    assert np.abs(history["weights"][-1]).sum() > 0  # the ARS update moved the weights off zero
    for level in ("medium", "expert"):
        policy, meta = collect.load_policy("hopper", level, tiny_policies / "policies")
        assert policy.weights.shape == (3, 11) and policy.obs_std.min() > 0
        assert meta["env_id"] == "Hopper-v5" and meta["seed"] == 0 and meta["episodes"] == 2
        assert {"numpy", "gymnasium", "mujoco"} <= set(meta["versions"])
    replay = np.load(tiny_policies / "policies" / "hopper-replay.npz")
    assert replay["weights"].shape[1:] == (3, 11) and np.all(np.diff(replay["iteration"]) > 0)


@pytest.mark.parametrize("level", data.LEVELS)
def test_tiny_dataset_is_a_valid_d4rl_file_for_every_level(tiny_policies, tmp_path, level):
    path = collect.make_dataset("hopper", level, transitions=TINY, out=tmp_path / "d.hdf5",
                                workers=1, policy_dir=tiny_policies / "policies")
    with h5py.File(path) as f:
        columns = {k: f[k][:] for k in ("observations", "actions", "rewards", "terminals",
                                         "timeouts")}
        attrs = dict(f.attrs)
    assert columns["observations"].shape == (TINY, 11) and columns["actions"].shape == (TINY, 3)
    assert columns["observations"].dtype == columns["actions"].dtype == np.float32
    assert columns["terminals"].dtype == columns["timeouts"].dtype == bool
    assert not np.any(columns["terminals"] & columns["timeouts"])
    assert columns["terminals"][-1] or columns["timeouts"][-1]  # the last episode is closed
    assert np.abs(columns["actions"]).max() <= 1.0
    assert attrs["env_id"] == "Hopper-v5" and attrs["level"] == level and attrs["seed"] == 0
    assert "mujoco" in attrs["versions"] and attrs["policy"]
    trajectories = data.load_trajectories(path)
    assert sum(len(t.rewards) for t in trajectories) == TINY


def test_dataset_is_the_same_with_one_or_two_workers(tiny_policies, tmp_path):
    files = [collect.make_dataset("hopper", "medium-expert", transitions=TINY,
                                  out=tmp_path / f"{w}.hdf5", workers=w,
                                  policy_dir=tiny_policies / "policies") for w in (1, 2)]
    one, two = (h5py.File(f) for f in files)
    for key in ("observations", "actions", "rewards", "terminals", "timeouts"):
        np.testing.assert_array_equal(one[key][:], two[key][:])


def test_medium_expert_is_medium_followed_by_expert(tiny_policies, tmp_path):
    files = {level: collect.make_dataset("hopper", level, transitions=n, out=tmp_path / level,
                                         workers=1, policy_dir=tiny_policies / "policies")
             for level, n in (("medium", TINY // 2), ("expert", TINY // 2),
                              ("medium-expert", TINY))}
    both, medium, expert = (h5py.File(files[k]) for k in ("medium-expert", "medium", "expert"))
    for key in ("observations", "actions", "rewards", "terminals", "timeouts"):
        np.testing.assert_array_equal(both[key][:], np.concatenate([medium[key], expert[key]]))


def test_random_level_ends_episodes_by_falling_and_halfcheetah_never_falls(tmp_path):
    hopper = collect.make_dataset("hopper", "random", transitions=TINY, out=tmp_path / "h.hdf5",
                                  workers=1)
    cheetah = collect.make_dataset("halfcheetah", "random", transitions=TINY,
                                   out=tmp_path / "c.hdf5", workers=1)
    with h5py.File(hopper) as h, h5py.File(cheetah) as c:
        assert h["terminals"][:].sum() >= 3  # uniform actions topple the hopper within ~50 steps
        assert c["terminals"][:].sum() == 0 and c["timeouts"][:].sum() == 1  # cut at 300 steps


def test_unknown_env_or_level_is_one_clear_sentence(capsys):
    with pytest.raises(data.DataError, match="choose one of hopper, halfcheetah, walker2d"):
        collect.make_dataset("ant", "medium")
    with pytest.raises(SystemExit, match="error: unknown level 'best': choose one of random"):
        collect.main(["dataset", "--env", "hopper", "--level", "best"])
    with pytest.raises(SystemExit, match="error: no policy file"):
        collect.main(["dataset", "--env", "hopper", "--level", "medium", "--policy-dir", "/nope"])


WALKER_SHORT = pytest.mark.xfail(strict=True, reason="ARS did not get Walker2d past standing "
                                 "within the CPU budget; see policies/README.md")


@pytest.mark.parametrize("env", ["hopper", "halfcheetah",
                                 pytest.param("walker2d", marks=WALKER_SHORT)])
def test_committed_policies_reach_the_issue_floors_and_expert_beats_medium(env):
    _, medium = collect.load_policy(env, "medium")
    expert_policy, expert = collect.load_policy(env, "expert")
    assert medium["episodes"] >= 10 and expert["episodes"] >= 10
    assert medium["return_mean"] >= ISSUE_MEDIUM_FLOORS[env]
    assert expert["return_mean"] >= 1.3 * medium["return_mean"]  # clearly above: >= 30% more
    assert (collect.POLICY_DIR / f"{env}-replay.npz").exists()
    # the file really holds that policy: re-run its first measured episode
    env_obj = collect.make_env(env)
    rerun = collect.evaluate_policy(env_obj, expert_policy, [2_000_000])[0]
    assert rerun == pytest.approx(expert["returns"][0], rel=0.05)
