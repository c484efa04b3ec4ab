"""Exercise 1: causal attention with a padding mask (dt.attention_mask, dt.attention_ref).

References written here: the mask by two loops over (query, key), attention by an explicit
softmax over the allowed keys of each query.
"""
import math

import pytest
import torch

from dt import DecisionConfig, attention_mask, attention_ref, CausalSelfAttention


def loop_mask(token_mask):
    B, T = token_mask.shape
    allowed = torch.zeros(B, 1, T, T, dtype=torch.bool)
    for b in range(B):
        for i in range(T):
            for j in range(T):
                allowed[b, 0, i, j] = j <= i and (bool(token_mask[b, j]) or i == j)
    return allowed


def loop_attention(q, k, v, mask):
    B, H, T, hs = q.shape
    out = torch.zeros_like(q)
    for b in range(B):
        for h in range(H):
            for i in range(T):
                keys = [j for j in range(T) if mask[b if mask.size(0) > 1 else 0, 0, i, j]]
                scores = torch.stack([q[b, h, i] @ k[b, h, j] / math.sqrt(hs) for j in keys])
                weights = torch.exp(scores - scores.max())
                weights = weights / weights.sum()
                out[b, h, i] = sum(w * v[b, h, j] for w, j in zip(weights, keys))
    return out


def test_the_mask_is_causal_and_hides_padded_keys_but_never_a_tokens_own_position():
    token_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0]])
    got = attention_mask(token_mask)
    assert got.shape == (3, 1, 6, 6) and got.dtype == torch.bool, (
        "the mask is (B, 1, T, T) booleans: True where query i may look at key j")
    expected = loop_mask(token_mask)
    for b, i, j in zip(*torch.nonzero(got[:, 0] != expected[:, 0], as_tuple=True)):
        pytest.fail(f"row {b}: the mask lets token {i} see token {j}" if got[b, 0, i, j] else
                    f"row {b}: the mask hides token {j} from token {i}, which should see it")


@pytest.mark.parametrize("T", [1, 5, 9])
def test_attention_is_softmax_of_scaled_scores_over_the_allowed_keys(T):
    torch.manual_seed(T)
    q, k, v = (torch.randn(2, 3, T, 4) for _ in range(3))
    token_mask = torch.ones(2, T)
    token_mask[1, T // 2 + 1:] = 0
    mask = loop_mask(token_mask)
    got = attention_ref(q, k, v, mask)
    assert got.shape == (2, 3, T, 4), "the output has the shape of q: (B, H, T, hs)"
    torch.testing.assert_close(got, loop_attention(q, k, v, mask), rtol=1e-5, atol=1e-5, msg=(
        "attention must be softmax(q k^T / sqrt(hs)) v with masked scores at -inf"))


def test_future_and_padded_keys_do_not_change_a_real_tokens_output():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 1, 6, 4) for _ in range(3))
    token_mask = torch.tensor([[1.0, 1, 1, 1, 0, 0]])
    mask = loop_mask(token_mask)
    before = attention_ref(q, k, v, mask)
    k2, v2 = k.clone(), v.clone()
    k2[..., 3:, :] += 10 * torch.randn(1, 1, 3, 4)  # the future of token 2, and the padding
    v2[..., 3:, :] += 10 * torch.randn(1, 1, 3, 4)
    after = attention_ref(q, k2, v2, mask)
    torch.testing.assert_close(after[..., :3, :], before[..., :3, :], msg=(
        "tokens 0-2 changed when later keys/values changed: attention must be causal"))
    # a padded key in the middle (not only in the future) must be hidden from real queries
    token_mask = torch.tensor([[1.0, 0, 1, 1, 1, 1]])
    mask = loop_mask(token_mask)
    before = attention_ref(q, k, v, mask)
    k2, v2 = k.clone(), v.clone()
    k2[..., 1, :], v2[..., 1, :] = 50.0, 50.0
    after = attention_ref(q, k2, v2, mask)
    torch.testing.assert_close(after[..., 2:, :], before[..., 2:, :], msg=(
        "a real token's output changed with a padded token's key/value: hide padded keys"))


def test_dropout_only_when_asked_and_unbiased():
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 1, 4, 8) for _ in range(3))
    mask = loop_mask(torch.ones(1, 4))
    clean = loop_attention(q, k, v, mask)
    first = attention_ref(q, k, v, mask, dropout_p=0.0)
    assert torch.equal(first, attention_ref(q, k, v, mask, dropout_p=0.0)), (
        "dropout_p=0 must be deterministic: two calls gave different outputs")
    torch.testing.assert_close(first, clean, msg=lambda m: (
        "with dropout_p=0 the output must be softmax(q k^T / sqrt(hs)) v over the allowed keys: "
        f"check the scale 1/sqrt(hs) and the mask\n{m}"))
    # 4000 independent draws at once: the same inputs repeated along the batch dimension
    draws = attention_ref(q.expand(4000, -1, -1, -1), k.expand(4000, -1, -1, -1),
                          v.expand(4000, -1, -1, -1), mask, dropout_p=0.5)
    assert not torch.allclose(draws[0], draws[1]), "dropout_p > 0 must drop attention weights"
    torch.testing.assert_close(draws.mean(0, keepdim=True), clean, atol=0.15, rtol=0.1, msg=(
        lambda m: f"dropped weights must be rescaled by 1/(1-p) so the output is unbiased\n{m}"))


def test_a_transformer_layer_with_the_written_out_attention_equals_the_fused_one():
    torch.manual_seed(2)
    cfg = DecisionConfig(state_dim=3, act_dim=2, d_model=8, n_head=2, dropout=0.0)
    layer = CausalSelfAttention(cfg).eval()
    x, mask = torch.randn(2, 7, 8), loop_mask(torch.tensor([[1.0] * 7, [1.0] * 5 + [0.0] * 2]))
    layer.fast = True
    fused = layer(x, mask)
    layer.fast = False
    torch.testing.assert_close(layer(x, mask), fused, rtol=1e-5, atol=1e-5, msg=(
        "the layer with attention_ref must equal F.scaled_dot_product_attention"))
