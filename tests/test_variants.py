"""Where memory should matter (issue 28): the positions-only and delayed-reward variants, applied to
a dataset (data.apply_variant) and to the env (evaluate.VariantEnv), and the two agreeing."""
import gymnasium as gym
import numpy as np
import pytest

from data import ENVS, POSITIONS, DataError, Trajectory, apply_variant, returns_to_go
from evaluate import VariantEnv


@pytest.mark.parametrize("env", sorted(ENVS))
def test_the_kept_entries_are_the_envs_positions(env):
    inner = gym.make(ENVS[env])
    obs, _ = inner.reset(seed=0)
    for _ in range(10):
        obs, *_ = inner.step(inner.action_space.sample())
    qpos = inner.unwrapped.data.qpos
    assert POSITIONS[env] == len(qpos) - 1  # v5 leaves the x position out
    np.testing.assert_array_equal(obs[:POSITIONS[env]], qpos[1:])


def trajectory(rng, length=7, obs=11):
    return Trajectory(rng.normal(size=(length, obs)).astype(np.float32),
                      rng.uniform(-1, 1, (length, 3)).astype(np.float32),
                      rng.uniform(0, 3, length).astype(np.float32), terminated=True)


def test_delayed_rewards_sum_to_the_return_which_every_return_to_go_then_holds():
    rng = np.random.default_rng(0)
    dense = [trajectory(rng), trajectory(rng, length=1)]
    delayed = apply_variant(dense, "hopper", reward="delayed")
    for d, t in zip(delayed, dense):
        assert np.all(d.rewards[:-1] == 0)
        assert d.rewards.sum() == pytest.approx(t.rewards.sum(), rel=1e-6)
        np.testing.assert_allclose(returns_to_go(d.rewards), t.rewards.sum(), rtol=1e-6)
        np.testing.assert_array_equal(d.observations, t.observations)
    positions = apply_variant(dense, "hopper", obs="positions")
    assert positions[0].observations.shape == (7, 5)
    np.testing.assert_array_equal(positions[0].observations, dense[0].observations[:, :5])
    np.testing.assert_array_equal(positions[0].rewards, dense[0].rewards)
    with pytest.raises(DataError, match="unknown variant"):
        apply_variant(dense, "hopper", obs="pixels")


@pytest.mark.parametrize("obs, reward", [("positions", "dense"), ("full", "delayed"),
                                         ("positions", "delayed")])
def test_the_env_wrapper_shows_what_the_transformed_data_shows(obs, reward):
    """Roll an episode in the bare env, recording it as a trajectory; the same actions in the
    wrapped env give exactly apply_variant of that trajectory, and the same total return."""
    rng = np.random.default_rng(1)
    actions = rng.uniform(-1, 1, (60, 3)).astype(np.float32)
    bare = gym.make("Hopper-v5", max_episode_steps=40)
    wrapped = VariantEnv(gym.make("Hopper-v5", max_episode_steps=40), "hopper", obs, reward)
    rows = {"bare": ([], []), "wrapped": ([], [])}
    for name, env in (("bare", bare), ("wrapped", wrapped)):
        o, _ = env.reset(seed=3)
        for a in actions:
            rows[name][0].append(o)
            o, r, terminated, truncated, _ = env.step(a)
            rows[name][1].append(r)
            if terminated or truncated:
                break
    steps = len(rows["bare"][1])
    seen = Trajectory(np.array(rows["bare"][0], dtype=np.float32), actions[:steps],
                      np.array(rows["bare"][1], dtype=np.float32), terminated=True)
    (expected,) = apply_variant([seen], "hopper", obs, reward)
    np.testing.assert_allclose(np.array(rows["wrapped"][0], dtype=np.float32),
                               expected.observations)
    np.testing.assert_allclose(np.array(rows["wrapped"][1], dtype=np.float32), expected.rewards,
                               rtol=1e-5, atol=1e-5)
    assert sum(rows["wrapped"][1]) == pytest.approx(sum(rows["bare"][1]))  # the true return
    assert wrapped.observation_space.shape == (expected.observations.shape[1],)


def test_a_run_records_its_variant_and_evaluate_applies_it_by_itself(tmp_path):
    import json

    import evaluate
    import train
    from tests.test_train import tiny, write_random_dataset
    data = write_random_dataset(tmp_path / "hopper.hdf5")
    cfg = tiny(data, tmp_path / "unused", obs="positions", reward="delayed")
    assert train.default_out(cfg.__dict__).endswith("hopper-positions-delayed-s0")
    run_dir = train.train(tiny(data, tmp_path / "run", obs="positions", reward="delayed"))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["obs"] == "positions" and config["model"]["state_dim"] == 5
    report = evaluate.evaluate_run(evaluate.EvalConfig(str(run_dir), episodes=2,
                                                       max_episode_steps=8, device="cpu"))
    (result,) = report["results"]
    assert np.isfinite(result["score_mean"]) and result["episodes"] == 2
    with pytest.raises(train.TrainError, match="unknown obs 'pixels'"):
        train.train(tiny(data, tmp_path / "bad", obs="pixels"))
