"""Exercise 3: return-to-go and the right-padded window sampler (data.py).

Checked against references written here: a plain loop for the return-to-go, and trajectories whose
states spell out (trajectory, step), so every sampled window can be read back and judged.
"""
import numpy as np
import pytest

from data import Trajectory, TrajectoryDataset, returns_to_go


def loop_returns_to_go(rewards):
    out, total = [], 0.0
    for r in reversed(list(rewards)):
        total += r
        out.append(total)
    return np.array(out[::-1])


@pytest.mark.parametrize("rewards", [[1.0], [1.0, 2.0, 3.0], [0.5, -1.0, 2.0, 0.0, 4.25]])
def test_returns_to_go_sums_the_rewards_from_each_step_to_the_end(rewards):
    got = returns_to_go(np.array(rewards, dtype=np.float32))
    assert got.shape == (len(rewards),), "one return-to-go per step"
    assert got.dtype == np.float32, "returns-to-go are float32 like the rest of the data"
    np.testing.assert_allclose(got, loop_returns_to_go(rewards), rtol=1e-6,
                               err_msg="out[t] must be rewards[t] + rewards[t+1] + ... + "
                                       "rewards[-1]")


def labelled(lengths):
    """Trajectories whose state row is (trajectory id, step) and whose reward is 1 per step."""
    return [Trajectory(np.stack([np.full(n, i), np.arange(n)], 1).astype(np.float32),
                       np.full((n, 1), float(i), np.float32), np.ones(n, np.float32), False)
            for i, n in enumerate(lengths)]


def dataset(lengths, context_len):
    return TrajectoryDataset(labelled(lengths), context_len=context_len, max_ep_len=1000,
                             return_scale=1.0, state_mean=np.zeros(2), state_std=np.ones(2))


def test_a_window_is_consecutive_steps_of_one_trajectory_then_right_padding():
    lengths, K = [3, 10, 6], 4
    batch = dataset(lengths, K).sample(500, np.random.default_rng(0))
    states, mask, steps = batch["states"].numpy(), batch["mask"].numpy(), batch["timesteps"].numpy()
    assert states.shape == (500, K, 2) and mask.shape == (500, K), "shapes (B, K, obs) / (B, K)"
    for b in range(500):
        traj, start = int(states[b, 0, 0]), int(states[b, 0, 1])
        real = min(K, lengths[traj] - start)
        assert list(mask[b]) == [1.0] * real + [0.0] * (K - real), (
            f"window {b} starts at step {start} of a trajectory of {lengths[traj]} steps: its "
            f"mask should be {real} ones then zeros (padding goes on the RIGHT)")
        np.testing.assert_array_equal(states[b, :real, 1], np.arange(start, start + real),
                                      err_msg=f"window {b}: real steps must be consecutive")
        assert (states[b, :real, 0] == traj).all(), f"window {b} mixes trajectories"
        assert (states[b, real:] == 0).all() and (batch["actions"].numpy()[b, real:] == 0).all(), (
            f"window {b}: padded positions must hold exactly 0")
        assert list(steps[b, :real]) == list(range(start, start + real)), (
            f"window {b}: timesteps must be the steps within the episode")


def test_returns_to_go_in_a_window_are_the_rewards_still_to_come():
    lengths = [3, 10, 6]
    batch = dataset(lengths, 4).sample(200, np.random.default_rng(1))
    states, rtg, mask = batch["states"].numpy(), batch["returns_to_go"].numpy(), batch["mask"]
    for b in range(200):
        traj, start = int(states[b, 0, 0]), int(states[b, 0, 1])
        real = int(mask[b].sum())
        expected = lengths[traj] - np.arange(start, start + real)  # reward 1 per step
        np.testing.assert_allclose(rtg[b, :real, 0], expected, err_msg=(
            f"window {b}: R_t must be the sum of rewards from step t to the episode's end"))


def test_trajectories_are_drawn_in_proportion_to_their_length_with_uniform_starts():
    lengths = [10, 30, 60]
    states = dataset(lengths, 2).sample(20_000, np.random.default_rng(2))["states"].numpy()
    share = np.bincount(states[:, 0, 0].astype(int), minlength=3) / 20_000
    np.testing.assert_allclose(share, np.array(lengths) / 100, atol=0.02, err_msg=(
        "draw a transition uniformly from the whole dataset: a trajectory is chosen in "
        "proportion to its length"))
    starts = states[states[:, 0, 0] == 2, 0, 1]
    assert starts.min() == 0 and starts.max() == 59 and abs(starts.mean() - 29.5) < 2, (
        "the window's start must be uniform over the chosen trajectory's steps")


def test_whole_trajectory_windows_start_at_step_0():
    batch = dataset([3, 10, 6], None).sample(100, np.random.default_rng(3))
    assert batch["states"].shape[1] == 10, "context_len=None: K is the longest trajectory"
    assert (batch["states"].numpy()[:, 0, 1] == 0).all(), "whole-trajectory windows start at 0"


def test_timesteps_past_the_episode_limit_are_capped_at_max_ep_len_minus_1():
    data = TrajectoryDataset(labelled([12]), context_len=4, max_ep_len=6, return_scale=1.0,
                             state_mean=np.zeros(2), state_std=np.ones(2))
    batch = data.sample(300, np.random.default_rng(4))
    states, steps, mask = (batch[k].numpy() for k in ("states", "timesteps", "mask"))
    for b in range(300):
        real = int(mask[b].sum())
        expected = np.minimum(states[b, :real, 1], 5).astype(int)
        assert list(steps[b, :real]) == list(expected), (
            f"window {b}: the timestep embedding has max_ep_len = 6 rows, so step t is embedded "
            f"as min(t, 5): expected {list(expected)}, got {list(steps[b, :real])}")
