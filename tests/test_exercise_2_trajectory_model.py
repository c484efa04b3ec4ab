"""Exercise 2: the trajectory model (dt.DecisionModel.forward): (R, s, a) tokens with timestep
embeddings, the rows the actions are read from, the masked loss.

The backbone is replaced by a recorder written here (identity on the tokens it is given, so no
other exercise's code runs), and every expectation is computed here from the model's own
embedding layers, step by step.
"""
import pytest
import torch
from torch import nn

from dt import DecisionConfig, DecisionModel


class Recorder(nn.Module):
    """Stands in for the backbone: remembers its inputs, returns the requested token rows."""

    def forward(self, x, padding_mask=None, rows=None):
        self.x, self.padding_mask, self.rows = x, padding_mask, rows
        return x if rows is None else x[:, rows]


def model_and_batch(K=4, B=2, seed=0):
    torch.manual_seed(seed)
    model = DecisionModel(DecisionConfig(state_dim=3, act_dim=2, backbone="gpt", d_model=8,
                                         n_layer=1, dropout=0.0, context_len=K)).eval()
    model.backbone = Recorder()
    batch = dict(states=torch.randn(B, K, 3), actions=torch.rand(B, K, 2) * 2 - 1,
                 returns_to_go=torch.randn(B, K, 1), timesteps=torch.arange(K).repeat(B, 1) + 5,
                 mask=torch.ones(B, K))
    batch["mask"][1, K - 1:] = 0  # row 1: its last step is padding
    return model, batch


def expected_tokens(model, b):
    """(3K, C): R_1, s_1, a_1, R_2, ... each with its step's timestep embedding, normalised,
    padded steps zeroed."""
    time = model.embed_timestep(b["timesteps"])
    per_step = [model.embed_return(b["returns_to_go"]) + time,
                model.embed_state(b["states"]) + time,
                model.embed_action(b["actions"]) + time]
    B, K = b["mask"].shape
    tokens = torch.zeros(B, 3 * K, per_step[0].size(-1))
    for t in range(K):
        for j in range(3):
            tokens[:, 3 * t + j] = per_step[j][:, t]
    return model.embed_ln(tokens) * b["mask"].repeat_interleave(3, 1)[:, :, None]


@torch.no_grad()
def test_tokens_interleave_return_state_action_with_the_timestep_added_to_each():
    model, b = model_and_batch()
    model(**b)
    x = model.backbone.x
    assert x.shape == (2, 12, 8), "K steps make 3K tokens of width d_model: (B, 3K, C)"
    expected = expected_tokens(model, b)
    for position in range(12):
        if not torch.allclose(x[:, position], expected[:, position], atol=1e-5):
            kind = "R s a".split()[position % 3]
            pytest.fail(f"token {position} should be {kind}_{position // 3 + 1} (embedded, plus "
                        "the timestep embedding of its step, normalised by embed_ln, zero "
                        "where padded)")


@torch.no_grad()
def test_padding_is_masked_per_token_and_actions_are_read_at_state_tokens():
    model, b = model_and_batch()
    pred, _ = model(**b)
    assert model.backbone.padding_mask.tolist() == b["mask"].repeat_interleave(3, 1).tolist(), (
        "the backbone's padding mask has one entry per token: each step's mask three times")
    rows = torch.arange(12)[model.backbone.rows].tolist()
    assert rows == [1, 4, 7, 10], (
        f"a_t is predicted from the s_t token (positions 1, 4, 7, ...), got rows {rows}")
    expected = model.predict_action(model.ln_f(expected_tokens(model, b)[:, 1::3]))
    torch.testing.assert_close(pred, expected, msg="action_pred = predict_action(ln_f(x[s_t]))")
    last, _ = model(b["states"], b["actions"], b["returns_to_go"], b["timesteps"], b["mask"],
                    last_only=True)
    assert torch.arange(12)[model.backbone.rows].tolist() == [10], (
        "last_only reads only the last state token")
    torch.testing.assert_close(last[:, 0], pred[:, -1])


def test_the_loss_is_the_squared_error_averaged_over_real_steps_only():
    model, b = model_and_batch()
    targets = torch.rand(2, 4, 2) * 2 - 1
    pred, loss = model(**b, targets=targets)
    real = b["mask"].bool()
    expected = ((pred - targets) ** 2)[real].mean()
    torch.testing.assert_close(loss, expected, msg=(
        "loss = mean over real (mask 1) steps and action dimensions of (pred - target)^2"))
    wild = targets.clone()
    wild[1, 3] = 100.0  # the padded step's target
    assert torch.allclose(model(**b, targets=wild)[1], loss), "padded steps must not count"
    loss.backward()
    assert model.embed_state.weight.grad is not None, "the loss must be differentiable"
