"""Exercise 4: the selective scan as a loop (ssm.selective_scan_ref).

The reference is written here with nothing but Python floats: one nested loop over batch, time,
channel and state index, in float64, straight from the recurrence

    Δ_t = softplus(delta_t + delta_bias),  h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t,
    y_t = <h_t, C_t> + D u_t,  y_t *= silu(z_t).
"""
import math

import pytest
import torch

from ssm import selective_scan_ref


def loop_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The recurrence element by element, in float64 Python floats. -> (B, L, D) float64 tensor."""
    u, delta, A, B, C = (x.double().tolist() for x in (u, delta, A, B, C))
    D = None if D is None else D.double().tolist()
    z = None if z is None else z.double().tolist()
    bias = None if delta_bias is None else delta_bias.double().tolist()
    batch, length, channels, n_state = len(u), len(u[0]), len(u[0][0]), len(A[0])
    y = [[[0.0] * channels for _ in range(length)] for _ in range(batch)]
    for b in range(batch):
        for d in range(channels):
            h = [0.0] * n_state                                  # h_{-1} = 0
            for t in range(length):
                dt = delta[b][t][d] + (bias[d] if bias is not None else 0.0)
                if delta_softplus:
                    dt = math.log1p(math.exp(dt))
                out = 0.0
                for n in range(n_state):
                    h[n] = math.exp(dt * A[d][n]) * h[n] + dt * B[b][t][n] * u[b][t][d]
                    out += h[n] * C[b][t][n]
                if D is not None:
                    out += D[d] * u[b][t][d]
                if z is not None:
                    gate = z[b][t][d]
                    out *= gate / (1.0 + math.exp(-gate))        # silu(z) = z * sigmoid(z)
                y[b][t][d] = out
    return torch.tensor(y, dtype=torch.float64)


def make_inputs(batch=2, length=7, channels=3, n_state=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)                  # noqa: E731
    return dict(u=r(batch, length, channels), delta=0.5 * r(batch, length, channels),
                A=-(torch.rand(channels, n_state, generator=g) * 2 + 0.2),
                B=r(batch, length, n_state), C=r(batch, length, n_state), D=r(channels),
                z=r(batch, length, channels), delta_bias=0.3 * r(channels))


def assert_scan_close(y, expected, what, rtol=1e-5, atol=1e-5):
    assert y.shape == expected.shape, f"y must have shape (B, L, D) = {tuple(expected.shape)}, " \
                                      f"got {tuple(y.shape)}"
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(y.double(), expected, rtol=rtol, atol=atol * scale,
                               msg=lambda m: f"{what}\n{m}")


@pytest.mark.parametrize("length", [1, 7])
def test_scan_with_every_option_follows_the_recurrence(length):
    x = make_inputs(length=length)
    y = selective_scan_ref(**x, delta_softplus=True)
    assert y.dtype == torch.float32, "y comes back in u's dtype (float32 here)"
    assert_scan_close(y, loop_scan(**x, delta_softplus=True), (
        "with D, z, delta_bias and softplus: Δ_t = softplus(delta_t + delta_bias); "
        "h_t must be exp(Δ_t A) * h_{t-1} + Δ_t B_t u_t (h_{-1} = 0), "
        "y_t = <h_t, C_t> + D u_t, then y_t *= silu(z_t)"))


def test_bare_scan_without_optional_inputs_is_the_plain_recurrence():
    x = make_inputs(length=7)
    core = {k: x[k] for k in ("u", "delta", "A", "B", "C")}
    y = selective_scan_ref(**core)
    assert_scan_close(y, loop_scan(**core), (
        "without D, z, delta_bias and softplus, Δ_t is delta_t as given and y_t = <h_t, C_t>, "
        "h_t = exp(Δ_t A) * h_{t-1} + Δ_t B_t u_t (skip every optional input that is None)"))


@pytest.mark.parametrize("option, hint", [
    ("D", "D is the skip: y_t = <h_t, C_t> + D u_t, added before the gate"),
    ("z", "z is the gate: y_t *= silu(z_t) = z_t * sigmoid(z_t), applied last"),
    ("delta_bias", "delta_bias is added to delta before anything else (no softplus here)"),
    ("delta_softplus", "delta_softplus=True: Δ_t = softplus(delta_t) = log(1 + exp(delta_t))"),
], ids=["D", "z", "delta_bias", "delta_softplus"])
def test_each_optional_input_does_its_one_job(option, hint):
    x = make_inputs(length=7, seed=1)
    kwargs = {k: x[k] for k in ("u", "delta", "A", "B", "C")}
    if option == "delta_softplus":
        kwargs["delta_softplus"] = True
    else:
        kwargs[option] = x[option]
    assert_scan_close(selective_scan_ref(**kwargs), loop_scan(**kwargs), f"only {option}: {hint}")


def test_with_A_zero_the_state_is_a_running_sum():
    """exp(Δ * 0) = 1: nothing decays, so h_t = Σ_{s<=t} Δ_s B_s u_s, numbers you can check."""
    u = torch.tensor([[[1.0], [2.0], [3.0]]])                    # (B=1, L=3, D=1)
    delta = torch.tensor([[[0.5], [1.0], [2.0]]])
    A = torch.zeros(1, 1)
    B = torch.ones(1, 3, 1)
    C = torch.tensor([[[1.0], [1.0], [10.0]]])
    y = selective_scan_ref(u, delta, A, B, C)
    # h = 0.5, 0.5 + 2 = 2.5, 2.5 + 6 = 8.5; y = h * C
    expected = torch.tensor([[[0.5], [2.5], [85.0]]], dtype=torch.float64)
    assert_scan_close(y, expected, "with A = 0 the state must add up Δ_t B_t u_t step after step "
                                   "(h_t = h_{t-1} + Δ_t B_t u_t) and y_t = <h_t, C_t>")


def test_an_output_never_depends_on_later_inputs():
    x = make_inputs(length=7, seed=2)
    later = {k: v.clone() for k, v in x.items()}
    for k in ("u", "delta", "B", "C", "z"):
        later[k][:, 4:] = torch.randn(later[k][:, 4:].shape)
    y = selective_scan_ref(**x, delta_softplus=True)
    y_later = selective_scan_ref(**later, delta_softplus=True)
    assert not torch.equal(y[:, 4:], y_later[:, 4:]), "changing inputs from step 4 on must change y"
    torch.testing.assert_close(y[:, :4], y_later[:, :4], rtol=0, atol=0, msg=(
        "y_t must depend only on steps 0..t: run the loop forward in time, one step at a time"))


def test_bf16_inputs_keep_an_fp32_state_and_return_bf16():
    x = make_inputs(batch=2, length=48, channels=4, n_state=8, seed=3)
    x = {k: v.to(torch.bfloat16) for k, v in x.items()}
    y = selective_scan_ref(**x, delta_softplus=True)
    assert y.dtype == torch.bfloat16, "the contract: y is returned in u's dtype (bfloat16 here)"
    # The exact result on the same bf16 inputs, rounded once to bf16 at the end, is off by at
    # most half a bf16 step (2^-8 relative); a state kept in bf16 drifts much further.
    assert_scan_close(y, loop_scan(**x, delta_softplus=True), (
        "with bf16 inputs, cast everything to float32 first and keep the state h in float32; "
        "round to bf16 only the final y"), rtol=2 ** -8 + 1e-5, atol=1e-4)
