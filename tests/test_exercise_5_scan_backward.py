"""Exercise 5: the scan's backward, the reverse recurrence (scan_torch._SelectiveScanFn.backward).

The reference is autograd through a plain loop written here, in float64: whatever the hand-written
backward computes must agree with it for every input's gradient. The forward of scan_torch is not
part of the exercise; these tests call its backward through `y.backward(dy)`. `chunk_len` forces
short chunks, so the gradient of the state must cross chunk borders (its carry from one chunk to
the one before).
"""
import pytest
import torch

from scan_torch import selective_scan_torch

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
HINTS = {
    "u": "du_t = Δ_t * sum_N(g_h_t B_t) (+ D dy_t, added after the region)",
    "delta": "dΔ_t = u_t sum_N(g_h_t B_t) + sum_N(g_h_t h_{t-1} exp(Δ_t A) A) (the softplus and "
             "bias are applied after the region)",
    "A": "dA = sum over batch and time of g_h_t h_{t-1} exp(Δ_t A) Δ_t",
    "B": "dB_t = sum_D(g_h_t Δ_t u_t)",
    "C": "dC_t = sum_D(h_t dy_t)",
    "D": "dD = sum over batch and time of dy_t u_t (outside the region: check g_y and u)",
    "z": "dz comes from the gate (outside the region: check y)",
    "delta_bias": "d delta_bias is dΔ summed over batch and time, after the softplus' sigmoid",
}


def loop_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The recurrence as a loop over time in float64, differentiable by autograd."""
    u, delta, A, B, C = (x.double() for x in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.double()
    if delta_softplus:
        delta = torch.log1p(torch.exp(delta))
    h = u.new_zeros(u.shape[0], u.shape[2], A.shape[1])         # (B, D, N)
    ys = []
    for t in range(u.shape[1]):
        dt = delta[:, t, :, None]                                # (B, D, 1)
        h = torch.exp(dt * A) * h + dt * B[:, t, None, :] * u[:, t, :, None]
        ys.append((h * C[:, t, None, :]).sum(-1))               # (B, D)
    y = torch.stack(ys, 1)                                       # (B, L, D)
    if D is not None:
        y = y + D.double() * u
    if z is not None:
        y = y * z.double() * torch.sigmoid(z.double())
    return y


def make_inputs(batch=2, length=9, channels=3, n_state=4, seed=0, dtype=torch.float32,
                options=("D", "z", "delta_bias")):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)                  # noqa: E731
    x = dict(u=r(batch, length, channels), delta=0.5 * r(batch, length, channels) - 0.5,
             A=-(torch.rand(channels, n_state, generator=g) * 2 + 0.2),
             B=r(batch, length, n_state), C=r(batch, length, n_state), D=r(channels),
             z=r(batch, length, channels), delta_bias=0.3 * r(channels))
    for k in ("D", "z", "delta_bias"):
        if k not in options:
            x[k] = None
    return {k: None if v is None else v.to(dtype) for k, v in x.items()}


def grads_of(scan, inputs, dy, dtype=None, **kwargs):
    """The gradient of <scan(inputs), dy> for each present input (leaves cast to `dtype`)."""
    leaves = {k: v.detach().to(dtype or v.dtype).requires_grad_()
              for k, v in inputs.items() if v is not None}
    y = scan(**leaves, **kwargs)
    y.backward(dy.to(y.dtype))
    return {k: v.grad for k, v in leaves.items()}


def assert_grads_match(inputs, dy, rtol, atol, **kwargs):
    """Every present input's gradient from selective_scan_torch vs autograd through the loop."""
    softplus = kwargs.pop("delta_softplus", False)
    got = grads_of(selective_scan_torch, inputs, dy, delta_softplus=softplus, **kwargs)
    expected = grads_of(loop_scan, inputs, dy, torch.float64, delta_softplus=softplus)
    for name in (n for n in NAMES if n in expected):
        g, g_ref = got[name], expected[name]
        assert g is not None, f"d{name} is None: the backward must return a gradient for {name}"
        assert g.shape == g_ref.shape and g.dtype == inputs[name].dtype, (
            f"d{name} must have {name}'s shape {tuple(g_ref.shape)} and dtype")
        scale = max(1.0, g_ref.abs().max().item())
        torch.testing.assert_close(g.double(), g_ref, rtol=rtol, atol=atol * scale,
                                   msg=lambda m: f"d{name} is wrong; {HINTS[name]}\n{m}")


@pytest.mark.parametrize("length, chunk_len", [(1, None), (7, None), (7, 4), (9, 4), (20, 3)],
                         ids=["L1", "L7-one-chunk", "L7-chunks-of-4", "L9-chunks-of-4",
                              "L20-chunks-of-3"])
def test_every_gradient_matches_autograd_through_the_loop(length, chunk_len):
    inputs = make_inputs(length=length, seed=length)
    dy = torch.randn(inputs["u"].shape, generator=torch.Generator().manual_seed(1))
    assert_grads_match(inputs, dy, 1e-5, 1e-5, delta_softplus=True, chunk_len=chunk_len)


@pytest.mark.parametrize("options, softplus", [((), False), (("D",), False), (("z",), True),
                                               (("delta_bias",), False)],
                         ids=["bare", "D-only", "z-and-softplus", "bias-only"])
def test_gradients_without_some_optional_inputs(options, softplus):
    inputs = make_inputs(length=8, seed=5, options=options)
    dy = torch.randn(inputs["u"].shape, generator=torch.Generator().manual_seed(2))
    assert_grads_match(inputs, dy, 1e-5, 1e-5, delta_softplus=softplus, chunk_len=3)


def test_the_state_gradient_is_carried_across_chunk_borders():
    """Only the last output has a gradient: everything before it, in earlier chunks, learns of it
    only through g_h carried backwards, chunk to chunk."""
    inputs = make_inputs(batch=1, length=10, seed=7, options=())
    dy = torch.zeros(inputs["u"].shape)
    dy[:, -1] = 1.0
    got = grads_of(selective_scan_torch, inputs, dy, chunk_len=3)
    expected = grads_of(loop_scan, inputs, dy, torch.float64)
    assert expected["u"][:, 0].abs().max() > 1e-3, "the test needs a gradient that reaches step 0"
    torch.testing.assert_close(got["u"].double(), expected["u"], rtol=1e-5, atol=1e-6, msg=(
        lambda m: "du at early steps is wrong although only y at the last step has a gradient: "
        "g_h must flow backwards through every step, g_h_t = C_t dy_t + exp(Δ_{t+1} A) g_h_{t+1}, "
        "and across chunk borders (pass exp(Δ_{t0} A) g_h_{t0} of a chunk to the end of the chunk "
        f"before it)\n{m}"))


def test_bf16_inputs_get_gradients_from_an_fp32_backward():
    inputs = make_inputs(batch=2, length=24, seed=9, dtype=torch.bfloat16)
    for k in ("A", "D", "delta_bias"):                         # parameters stay fp32
        inputs[k] = inputs[k].float()
    dy = torch.randn(inputs["u"].shape, generator=torch.Generator().manual_seed(3))
    # Each gradient is computed in fp32 and rounded once to its input's dtype.
    assert_grads_match(inputs, dy, 2e-2, 2e-2, delta_softplus=True, chunk_len=5)
