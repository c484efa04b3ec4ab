"""Exercise 8: return-conditioned evaluation with batched episodes that finish early (evaluate.py).

The reference is a plain loop written here: one episode at a time, the whole history re-read at
every step, R_{t+1} = R_t - r_t by hand. The model is a stand-in written here (no other
exercise's code runs, so this exercise's score depends on exercise 8 alone): its action is a fixed
function of the window's states, actions, returns-to-go and timesteps, so an episode that gets
another episode's history or return-to-go acts differently. A spy records the returns-to-go the
model is given.
"""
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

import evaluate

SCALE, TARGET = 100.0, 360.0


class StandIn(nn.Module):
    """Called as the Decision Transformer is: (states, actions, returns_to_go, timesteps, mask)
    -> (actions (B, K, 3), None), or the last one (B, 1, 3) with last_only."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.config = SimpleNamespace(context_len=5, max_ep_len=1000)
        self.state_weight = torch.randn(11, 3, generator=g) * 0.7       # (obs, act)
        self.return_weight = torch.randn(3, generator=g)                # (act,)

    def forward(self, states, actions, returns_to_go, timesteps, mask, targets=None,
                last_only=False):
        history = actions.cumsum(1) / torch.arange(1, actions.size(1) + 1)[None, :, None]
        pred = 0.1 * torch.tanh(states @ self.state_weight + 0.3 * returns_to_go *
                                self.return_weight + 0.5 * history
                                + 0.01 * timesteps[..., None])        # (B, K, 3)
        return (pred[:, -1:] if last_only else pred), None


def tiny_model(seed=0):
    return StandIn(seed).eval()


@torch.inference_mode()
def reference_episode(model, seed, max_steps):
    """One Hopper episode acting on the last 5 steps; returns (return, length, fell, R inputs)."""
    env = gym.make("Hopper-v5", max_episode_steps=max_steps)
    obs, _ = env.reset(seed=seed)
    states, actions, rtgs, seen = [], [], [], []
    total, rtg, t = 0.0, TARGET / SCALE, 0
    while True:
        states.append(torch.as_tensor(obs, dtype=torch.float32))
        actions.append(torch.zeros(3))
        rtgs.append(torch.tensor([rtg]))
        seen.append(rtg)
        lo = max(0, t - 4)
        pred, _ = model(torch.stack(states[lo:])[None], torch.stack(actions[lo:])[None],
                        torch.stack(rtgs[lo:])[None], torch.arange(lo, t + 1)[None],
                        torch.ones(1, t + 1 - lo))
        action = pred[0, -1].clamp(-1, 1)
        actions[-1] = action
        obs, reward, terminated, truncated, _ = env.step(action.numpy())
        total, rtg, t = total + float(reward), rtg - float(reward) / SCALE, t + 1
        if terminated or truncated:
            return total, t, terminated, seen


def run_batch(model, episodes, max_steps, spy=None):
    if spy is not None:
        real_forward = model.forward

        def forward(states, actions, returns_to_go, *args, **kwargs):
            spy.append(returns_to_go[:, -1, 0].clone())  # R_t of every running episode
            return real_forward(states, actions, returns_to_go, *args, **kwargs)
        model.forward = forward
    try:
        return evaluate.evaluate(model, "hopper", np.zeros(11), np.ones(11), SCALE, TARGET,
                                 episodes=episodes, seed=40, mode="window",
                                 max_episode_steps=max_steps)
    finally:
        model.__dict__.pop("forward", None)


def test_each_episode_of_the_batch_gets_the_return_it_would_get_alone():
    model = tiny_model()
    result = run_batch(model, 4, 30)    # episodes of 29 to 31 steps: some fall, some are cut
    alone = [reference_episode(model, 40 + i, 30) for i in range(4)]
    assert 0 < np.mean([a[2] for a in alone]) < 1, "the test needs episodes of both kinds"
    np.testing.assert_allclose(result["returns"], [a[0] for a in alone], atol=0.006, err_msg=(
        "episode i of the batch must earn what it earns run alone: add each step's reward to "
        "the right episode (rows map batch rows to episodes)"))
    assert result["lengths"] == [a[1] for a in alone], "count steps per episode until it ends"
    assert result["fell"] == pytest.approx(np.mean([a[2] for a in alone])), (
        "count an episode as fell when it ended by `terminated`")


def test_episodes_that_end_early_leave_the_batch():
    model = tiny_model()
    spy = []
    result = run_batch(model, 4, 60, spy)
    running = [len(r) for r in spy]
    expected = [sum(length > t for length in result["lengths"]) for t in range(len(spy))]
    assert len(set(result["lengths"])) > 1, "the test needs episodes of different lengths"
    assert running == expected, (
        "after an episode ends, the next model call must not include it: running episodes per "
        f"model call should be\n{expected}\nbut were\n{running}")


def test_the_return_to_go_drops_by_each_reward_divided_by_the_scale():
    model = tiny_model()
    spy = []
    run_batch(model, 1, 40, spy)
    seen = reference_episode(model, 40, 40)[3]
    np.testing.assert_allclose([r.item() for r in spy], seen, rtol=1e-5, err_msg=(
        "the model must be conditioned on R_0 = target / scale, then R_{t+1} = R_t - r_t / scale"))
