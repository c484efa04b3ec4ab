"""Exercise 6: recurrent inference, ssm.mamba_step_ref(block, x, cache) (the step of the "ref"
backend; the others run the fast steps of scan_torch.py and scan_cpu.py, as MambaBlock.step does).

Two references: the block's own full forward pass (fed the whole sequence at once), and one step
computed by hand here from the block's weights, in float64. The blocks are built on the "torch"
backend, so their full forward is the PyTorch conv and the chunked PyTorch scan's forward, none of
which is this exercise; the tests call mamba_step_ref itself.
"""
import pytest
import torch

from ssm import MambaBlock, MambaConfig, mamba_step_ref

D_MODEL, D_STATE, D_CONV = 8, 4, 4


def random_block(seed=0):
    """A small block with every parameter random (A_log, D and the biases too), so that a formula
    that skips one of them shows."""
    torch.manual_seed(seed)
    config = MambaConfig(d_model=D_MODEL, d_state=D_STATE, d_conv=D_CONV, scan_backend="torch")
    block = MambaBlock(config).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape) * 0.5)
    return block


def feed_in_pieces(block, x, sizes):
    """x (B, L, d_model) through mamba_step_ref, `sizes` tokens per step -> (B, L, d_model)."""
    cache, ys, t = block.init_cache(x.shape[0], x.device), [], 0
    for size in sizes:
        y, cache = mamba_step_ref(block, x[:, t:t + size], cache)
        assert y.shape == (x.shape[0], size, D_MODEL), "x (B, T, d_model) -> y (B, T, d_model)"
        ys.append(y)
        t += size
    return torch.cat(ys, 1)                                      # (B, L, d_model)


@pytest.mark.parametrize("length", [1, 9], ids=["L1", "L9"])
@pytest.mark.parametrize("batch", [1, 3], ids=["B1", "B3"])
@torch.no_grad()
def test_token_by_token_steps_equal_the_full_forward(batch, length):
    block = random_block()
    x = torch.randn(batch, length, D_MODEL, generator=torch.Generator().manual_seed(1))
    y_steps = feed_in_pieces(block, x, [1] * length)
    torch.testing.assert_close(y_steps, block(x), rtol=1e-5, atol=1e-5, msg=lambda m: (
        "feeding tokens one by one through step() must give forward()'s outputs: the conv sees "
        "the cached K-1 inputs before the new one, h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t x_t starts "
        f"from the cached state, and the new cache holds the last K-1 conv inputs and h_t\n{m}"))


@torch.no_grad()
def test_several_tokens_per_step_equal_the_full_forward():
    block = random_block(seed=2)
    x = torch.randn(2, 10, D_MODEL)
    y_steps = feed_in_pieces(block, x, [3, 1, 2, 4])             # 10 tokens in uneven pieces
    torch.testing.assert_close(y_steps, block(x), rtol=1e-5, atol=1e-5, msg=lambda m: (
        "T tokens in one step must equal the full forward at those positions: the conv window is "
        "the K-1 cached inputs followed by all T new ones, the state runs through the T tokens in "
        f"order, and the new conv cache is the last K-1 inputs of that window\n{m}"))


@torch.no_grad()
def test_the_cache_keeps_a_fixed_size_and_the_input_cache_is_not_changed():
    block = random_block()
    x = torch.randn(2, 12, D_MODEL)
    cache = block.init_cache(2, x.device)
    shapes = [(2, block.d_inner, D_CONV - 1), (2, block.d_inner, D_STATE)]
    for t in range(x.shape[1]):
        before = [c.clone() for c in cache]
        _, new_cache = mamba_step_ref(block, x[:, t:t + 1], cache)
        assert [tuple(c.shape) for c in new_cache] == shapes, (
            f"after token {t} the cache must still be conv (B, D, K-1) and ssm (B, D, N) = {shapes}"
            f", whatever t: keep only the last K-1 conv inputs, overwrite the state")
        assert new_cache[1].dtype == torch.float32, "the ssm state stays float32"
        for old, kept in zip(before, cache):
            assert torch.equal(old, kept), "step() must not modify the cache it was given"
        cache = new_cache


def by_hand_step(block, x, conv_state, ssm_state):
    """One token x (B, d_model) through the block, formula by formula, in float64.
    -> (out (B, d_model), conv, ssm)"""
    p = {k: v.double() for k, v in block.state_dict().items()}
    D, N, rank = block.d_inner, block.d_state, block.dt_rank
    xz = x.double() @ p["in_proj.weight"].t()                   # (B, 2D): [x; z]
    xs, z = xz[:, :D], xz[:, D:]
    window = torch.cat([conv_state.double(), xs[:, :, None]], -1)  # (B, D, K): oldest input first
    conv = (window * p["conv1d.weight"][:, 0, :]).sum(-1) + p["conv1d.bias"]
    xc = conv * torch.sigmoid(conv)                              # silu
    dbc = xc @ p["x_proj.weight"].t()                            # (B, rank + 2N): [dt; B; C]
    dt, Bt, Ct = dbc[:, :rank], dbc[:, rank:rank + N], dbc[:, rank + N:]
    delta = torch.log1p(torch.exp(dt @ p["dt_proj.weight"].t() + p["dt_proj.bias"]))  # (B, D)
    A = -torch.exp(p["A_log"])                                   # (D, N)
    h = torch.exp(delta[:, :, None] * A) * ssm_state.double() + \
        delta[:, :, None] * Bt[:, None, :] * xc[:, :, None]     # (B, D, N)
    y = (h * Ct[:, None, :]).sum(-1) + p["D"] * xc               # (B, D)
    y = y * z * torch.sigmoid(z)                                 # gate silu(z)
    return y @ p["out_proj.weight"].t(), window[:, :, 1:], h


@torch.no_grad()
def test_one_step_from_a_given_cache_matches_the_formulas():
    block = random_block(seed=3)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, D_MODEL, generator=g)
    conv_state = torch.randn(3, block.d_inner, D_CONV - 1, generator=g)
    ssm_state = torch.randn(3, block.d_inner, D_STATE, generator=g)
    y, (conv_new, ssm_new) = mamba_step_ref(block, x[:, None], (conv_state, ssm_state))
    y_ref, conv_ref, ssm_ref = by_hand_step(block, x, conv_state, ssm_state)
    torch.testing.assert_close(conv_new.double(), conv_ref, rtol=1e-5, atol=1e-6, msg=lambda m: (
        "the new conv cache is the window (old K-1 inputs, then the new x before the conv) "
        f"without its oldest column\n{m}"))
    torch.testing.assert_close(ssm_new.double(), ssm_ref, rtol=1e-5, atol=1e-5, msg=lambda m: (
        "the new state must be exp(Δ A) * h_old + Δ B x, with x = silu(conv(window) + bias), "
        "[dt; B; C] = x_proj(x), Δ = softplus(dt_proj(dt) + its bias), A = -exp(A_log)"
        f"\n{m}"))
    torch.testing.assert_close(y[:, 0].double(), y_ref, rtol=1e-5, atol=1e-5, msg=lambda m: (
        "the output must be out_proj((<h, C> + D x) * silu(z)), with z the second half of "
        f"in_proj's output\n{m}"))


@torch.no_grad()
def test_bf16_weights_step_in_bf16_with_an_fp32_state():
    block = random_block(seed=5).to(torch.bfloat16)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, D_MODEL, generator=g).to(torch.bfloat16)
    conv_state = torch.randn(2, block.d_inner, D_CONV - 1, generator=g).to(torch.bfloat16)
    ssm_state = torch.randn(2, block.d_inner, D_STATE, generator=g)
    y, (conv_new, ssm_new) = mamba_step_ref(block, x[:, None], (conv_state, ssm_state))
    assert y.dtype == torch.bfloat16 and conv_new.dtype == torch.bfloat16, (
        "with bf16 weights and input the output and the conv cache are bf16")
    assert ssm_new.dtype == torch.float32, "the ssm state stays float32 whatever the weights"
    y_ref, _, ssm_ref = by_hand_step(block, x, conv_state, ssm_state)
    # The projections run in bf16 (about 3 significant digits); the state is fp32 after them.
    torch.testing.assert_close(ssm_new.double(), ssm_ref, rtol=0.05, atol=0.05, msg=lambda m: (
        "bf16 step: compute Δ, exp(Δ A) and the state update in float32 (cast x, B, C and Δ "
        f"with .float()), cast back to the weights' dtype before out_proj\n{m}"))
    torch.testing.assert_close(y[:, 0].double(), y_ref, rtol=0.05, atol=0.05, msg=lambda m: (
        f"bf16 step: the output must still be out_proj((<h, C> + D x) * silu(z)), in bf16\n{m}"))
