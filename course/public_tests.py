"""Public tests of the course exercises: your code's outputs against the reference's, recorded.

In the student copy this file is tests/test_exercises.py, and tests/expected_outputs.pt holds
what the reference solution returned for each case below (recorded by `assignments.py student`
from the instructor's tree). A case builds fixed inputs, calls your code and returns its outputs;
the test compares them with the recorded ones. No reference code is here, only inputs and calls:
the instructor's graded tests check more (edge cases, shortcuts, messages per formula).

    python -m pytest                              every exercise (unsolved ones fail, by name)
    python -m pytest -k exercise_4_               one exercise
    python course/public_tests.py --record FILE   (instructor) record the reference's outputs
"""
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the project's root
EXPECTED = Path(__file__).with_name("expected_outputs.pt")
CASES = {}  # id -> (exercise number, what the case checks, tolerance, function -> {name: tensor})


def case(number, name, what, tol=1e-5):
    def register(fn):
        CASES[f"exercise_{number}_{name}"] = (number, what, tol, fn)
        return fn
    return register


def randn(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def scan_inputs(seed, batch=2, length=9, channels=3, n_state=4):
    return dict(u=randn(seed, batch, length, channels),
                delta=0.5 * randn(seed + 1, batch, length, channels),
                A=-(torch.rand(channels, n_state, generator=torch.Generator().manual_seed(seed))
                    * 2 + 0.2),
                B=randn(seed + 2, batch, length, n_state),
                C=randn(seed + 3, batch, length, n_state),
                D=randn(seed + 4, channels), z=randn(seed + 5, batch, length, channels),
                delta_bias=0.3 * randn(seed + 6, channels))


@case(1, "mask", "attention_mask: causal, padded keys hidden, every token sees itself")
def _():
    from dt import attention_mask
    token_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    return {"mask": attention_mask(token_mask)}


@case(1, "attention", "attention_ref: softmax(q k^T / sqrt(hs)) v over the allowed keys")
def _():
    from dt import attention_ref
    q, k, v = (randn(seed, 2, 3, 6, 4) for seed in (1, 2, 3))
    mask = torch.ones(6, 6, dtype=torch.bool).tril()[None, None]   # causal, no padding
    return {"out": attention_ref(q, k, v, mask)}


class Recorder(nn.Module):
    """Stands in for the backbone: identity on the tokens, remembering what it was given."""

    def forward(self, x, padding_mask=None, rows=None):
        self.x, self.padding_mask, self.rows = x, padding_mask, rows
        return x if rows is None else x[:, rows]


@case(2, "tokens_and_loss", "DecisionModel.forward: tokens (R, s, a) + timestep embeddings, "
      "normalised and zeroed where padded; actions read at state tokens; masked loss")
def _():
    from dt import DecisionConfig, DecisionModel
    torch.manual_seed(0)
    model = DecisionModel(DecisionConfig(state_dim=3, act_dim=2, backbone="gpt", d_model=8,
                                         n_layer=1, dropout=0.0, context_len=4)).eval()
    model.backbone = Recorder()
    mask = torch.ones(2, 4)
    mask[1, 3] = 0
    pred, loss = model(randn(1, 2, 4, 3), randn(2, 2, 4, 2).tanh(), randn(3, 2, 4, 1),
                       torch.arange(4).repeat(2, 1) + 5, mask, targets=randn(4, 2, 4, 2))
    rows = torch.arange(12)[model.backbone.rows]
    return {"tokens": model.backbone.x, "padding_mask": model.backbone.padding_mask,
            "rows": rows, "pred": pred, "loss": loss}


def labelled(lengths):
    from data import Trajectory
    return [Trajectory(np.stack([np.full(n, i), np.arange(n)], 1).astype(np.float32),
                       np.full((n, 1), float(i), np.float32), np.ones(n, np.float32), False)
            for i, n in enumerate(lengths)]


@case(3, "returns_to_go", "returns_to_go: out[t] = rewards[t] + ... + rewards[-1], float32")
def _():
    from data import returns_to_go
    return {"rtg": torch.as_tensor(returns_to_go(np.array([0.5, -1.0, 2.0, 0.0, 4.25],
                                                          np.float32)))}


@case(3, "windows", "TrajectoryDataset.sample: uniform transitions, right padding, timesteps "
      "capped at max_ep_len - 1")
def _():
    from data import TrajectoryDataset
    data = TrajectoryDataset(labelled([3, 10, 6]), context_len=4, max_ep_len=8, return_scale=1.0,
                             state_mean=np.zeros(2), state_std=np.ones(2))
    batch = data.sample(64, np.random.default_rng(0))
    return {k: batch[k] for k in ("states", "actions", "returns_to_go", "timesteps", "mask")}


@case(4, "every_option", "selective_scan_ref with D, z, delta_bias and softplus")
def _():
    from ssm import selective_scan_ref
    return {"y": selective_scan_ref(**scan_inputs(0), delta_softplus=True)}


@case(4, "bare", "selective_scan_ref without any optional input")
def _():
    from ssm import selective_scan_ref
    x = scan_inputs(10)
    return {"y": selective_scan_ref(*(x[k] for k in ("u", "delta", "A", "B", "C")))}


@case(4, "bf16", "selective_scan_ref on bf16 inputs: fp32 state, bf16 output", tol=1e-2)
def _():
    from ssm import selective_scan_ref
    x = {k: v.to(torch.bfloat16) for k, v in scan_inputs(20, length=24).items()}
    return {"y": selective_scan_ref(**x, delta_softplus=True)}


@case(5, "gradients", "the backward of selective_scan_torch (chunks of 3 steps): every input's "
      "gradient", tol=1e-4)
def _():
    from scan_torch import selective_scan_torch
    leaves = {k: v.requires_grad_() for k, v in scan_inputs(30, length=10).items()}
    y = selective_scan_torch(**leaves, delta_softplus=True, chunk_len=3)
    y.backward(randn(31, *y.shape))
    return {f"d{k}": v.grad for k, v in leaves.items()}


def random_block(seed):
    from ssm import MambaBlock, MambaConfig
    torch.manual_seed(seed)
    block = MambaBlock(MambaConfig(d_model=8, d_state=4, d_conv=4, scan_backend="torch")).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape) * 0.5)
    return block


@case(6, "step_from_cache", "mamba_step_ref: one token from a given cache", tol=1e-4)
@torch.no_grad()
def _():
    from ssm import mamba_step_ref
    block = random_block(40)
    x, conv, ssm = randn(41, 3, 8), randn(42, 3, block.d_inner, 3), randn(43, 3, block.d_inner, 4)
    y, (conv_new, ssm_new) = mamba_step_ref(block, x[:, None], (conv, ssm))   # x (B, 1, d_model)
    return {"y": y, "conv": conv_new, "ssm": ssm_new}


@case(6, "tokens_in_pieces", "mamba_step_ref fed 7 tokens in pieces of 3, 1 and 3", tol=1e-4)
@torch.no_grad()
def _():
    from ssm import mamba_step_ref
    block = random_block(50)
    x, cache, ys = randn(51, 2, 7, 8), block.init_cache(2, "cpu"), []
    for lo, hi in ((0, 3), (3, 4), (4, 7)):
        y, cache = mamba_step_ref(block, x[:, lo:hi], cache)
        ys.append(y)
    return {"y": torch.cat(ys, 1), "conv": cache[0], "ssm": cache[1]}


@case(7, "forward", "the Triton forward kernel (chunks of 8, 4 channels per program) on 20 steps",
      tol=1e-4)
def _():
    scan_kernel = pytest.importorskip("scan_kernel")
    x = scan_inputs(60, length=20, channels=6, n_state=3)
    with torch.no_grad():
        y = scan_kernel.selective_scan_triton(**x, delta_softplus=True, chunk=8, block_d=4)
    return {"y": y}


class StandIn(nn.Module):
    """Called as the Decision Transformer is; its action is a fixed function of the window."""

    def __init__(self, seed=0):
        super().__init__()
        self.config = SimpleNamespace(context_len=5, max_ep_len=1000)
        self.state_weight = randn(seed, 11, 3) * 0.7                    # (obs, act)
        self.return_weight = randn(seed + 1, 3)                          # (act,)

    def forward(self, states, actions, returns_to_go, timesteps, mask, targets=None,
                last_only=False):
        history = actions.cumsum(1) / torch.arange(1, actions.size(1) + 1)[None, :, None]
        pred = 0.1 * torch.tanh(states @ self.state_weight + 0.3 * returns_to_go *
                                self.return_weight + 0.5 * history
                                + 0.01 * timesteps[..., None])         # (B, K, 3)
        return (pred[:, -1:] if last_only else pred), None


@case(8, "evaluation", "evaluate(): returns, lengths and falls of 4 Hopper episodes run as a "
      "batch (some fall, some reach the 30-step limit)", tol=1e-3)
def _():
    import evaluate
    result = evaluate.evaluate(StandIn().eval(), "hopper", np.zeros(11), np.ones(11), 100.0,
                               360.0, episodes=4, seed=40, mode="window", max_episode_steps=30)
    return {"returns": torch.tensor(result["returns"]), "lengths": torch.tensor(result["lengths"]),
            "fell": torch.tensor(float(result["fell"]))}


@pytest.fixture(scope="session")
def expected():
    if not EXPECTED.is_file():
        pytest.fail(f"{EXPECTED} is missing: ask for a fresh student copy (it holds the "
                    "reference's outputs).")
    return torch.load(EXPECTED, weights_only=True)


@pytest.mark.parametrize("name", list(CASES))
def test_exercise(name, expected):
    number, what, tol, fn = CASES[name]
    got = fn()
    for key, want in expected[name].items():
        value = got[key]
        assert tuple(value.shape) == tuple(want.shape) and value.dtype == want.dtype, (
            f"exercise {number}, {what}: {key} should be {tuple(want.shape)} {want.dtype}, got "
            f"{tuple(value.shape)} {value.dtype}")
        torch.testing.assert_close(value.detach(), want, rtol=tol, atol=tol, msg=lambda m: (
            f"exercise {number}, {what}: {key} differs from the reference solution's\n{m}"))


def record(path):
    """Run every case on this tree (the reference) and save the outputs."""
    outputs = {name: {k: v.detach().clone() for k, v in fn().items()}
               for name, (_, _, _, fn) in CASES.items()}
    torch.save(outputs, path)
    return outputs


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--record":
        sys.exit("usage: python course/public_tests.py --record FILE")
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    target = Path(sys.argv[2]).resolve()
    os.chdir(Path(__file__).resolve().parents[1])
    print(f"recorded {len(record(target))} cases to {target}")
