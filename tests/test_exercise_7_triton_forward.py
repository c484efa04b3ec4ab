"""Exercise 7: the Triton forward kernel (scan_kernel._scan_fwd_kernel and _chunk_states).

The reference is a plain loop over time written here, in float64. The kernel runs forward only
(under torch.no_grad(), so it saves no states), under Triton's interpreter on the CPU (conftest.py
sets TRITON_INTERPRET=1) or compiled on a GPU, on tiny shapes with tiny tiles: chunks of 8 steps
and 4 channels per program, so lengths 9 and 20 cross chunk borders, 6 channels leave the second
channel block half empty, and N = 3 pads the state to 4. Every output starts as NaN, so an element
the kernel forgets to write shows.
"""
import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (exercise 7 needs it)")
import scan_kernel  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TILES = dict(chunk=8, block_d=4)


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    monkeypatch.setattr(scan_kernel, "POISON_OUTPUTS", True)


def loop_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The recurrence as a loop over time, in float64. -> (B, L, D) float64"""
    u, delta, A, B, C = (x.double().cpu() for x in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.double().cpu()
    if delta_softplus:
        delta = torch.log1p(torch.exp(delta))
    h = torch.zeros(u.shape[0], u.shape[2], A.shape[1], dtype=torch.float64)  # (B, D, N)
    ys = []
    for t in range(u.shape[1]):
        dt = delta[:, t, :, None]                                # (B, D, 1)
        h = torch.exp(dt * A) * h + dt * B[:, t, None, :] * u[:, t, :, None]
        ys.append((h * C[:, t, None, :]).sum(-1))               # (B, D)
    y = torch.stack(ys, 1)                                       # (B, L, D)
    if D is not None:
        y = y + D.double().cpu() * u
    if z is not None:
        zz = z.double().cpu()
        y = y * zz * torch.sigmoid(zz)
    return y


def make_inputs(batch=2, length=9, channels=6, n_state=3, seed=0, dtype=torch.float32,
                options=("D", "z", "delta_bias")):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)                  # noqa: E731
    x = dict(u=r(batch, length, channels), delta=0.5 * r(batch, length, channels),
             A=-(torch.rand(channels, n_state, generator=g) * 2 + 0.2),
             B=r(batch, length, n_state), C=r(batch, length, n_state), D=r(channels),
             z=r(batch, length, channels), delta_bias=0.3 * r(channels))
    low = {"u", "delta", "B", "C", "z"}                          # the activations' dtype
    return {k: None if k in ("D", "z", "delta_bias") and k not in options
            else v.to(DEVICE, dtype if k in low else torch.float32) for k, v in x.items()}


def run_kernel(x, delta_softplus):
    with torch.no_grad():
        return scan_kernel.selective_scan_triton(**x, delta_softplus=delta_softplus, **TILES)


def assert_scan_close(y, expected, what, rtol=1e-5, atol=1e-5):
    assert y.shape == expected.shape, f"y must have shape (B, L, D) = {tuple(expected.shape)}"
    assert not y.isnan().any(), (
        f"{y.isnan().sum().item()} elements of y were never written (still NaN): store y for "
        "every step < L of every chunk and every channel < D of every block (masked stores)")
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(y.double().cpu(), expected, rtol=rtol, atol=atol * scale,
                               msg=lambda m: f"{what}\n{m}")


@pytest.mark.parametrize("length", [1, 8, 9, 20])
def test_forward_matches_the_loop_at_any_length(length):
    x = make_inputs(length=length, seed=length)
    y = run_kernel(x, True)
    assert y.dtype == x["u"].dtype, "y is written in u's dtype"
    assert_scan_close(y, loop_scan(**x, delta_softplus=True), (
        f"L = {length} in chunks of 8: in each chunk compute every h_t from the state entering "
        "it (h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t), write y_t = (<h_t, C_t> + D u_t) * "
        "silu(z_t) for the chunk's steps < L, and carry the state after the chunk's last step "
        "(steps past L must leave it unchanged) into the next chunk"))


@pytest.mark.parametrize("options, softplus", [((), False), (("D",), False), (("z",), False),
                                               (("delta_bias",), False), ((), True)],
                         ids=["bare", "D-only", "z-only", "bias-only", "softplus-only"])
def test_each_optional_input_matches_the_loop(options, softplus):
    x = make_inputs(length=9, seed=3, options=options)
    what = ", ".join(options + (("softplus",) if softplus else ())) or "no optional input"
    assert_scan_close(run_kernel(x, softplus), loop_scan(**x, delta_softplus=softplus), (
        f"with {what}: the skip D u_t is added only if HAS_D, the gate silu(z_t) applied only if "
        "HAS_Z; the delta bias and softplus come with _step_sizes (zero outside the sequence)"))


def test_the_state_is_carried_from_chunk_to_chunk():
    """One input at step 0, then nothing: y at steps 8..19 (chunks 1 and 2) is that input's state
    decayed, reaching them only through the state carried over chunk borders."""
    x = make_inputs(batch=1, length=20, seed=4, options=())
    x["u"][:, 1:] = 0.0
    y = run_kernel(x, False)
    expected = loop_scan(**x)
    assert expected[:, 8:].abs().max() > 1e-3, "the test needs a state that survives to chunk 1"
    assert_scan_close(y, expected, (
        "y after step 7 must see the state built in chunk 0: after each chunk keep its last "
        "state (the row of step CHUNK - 1) in b_h and start the next chunk's states from it"))


def test_bf16_inputs_give_bf16_output_from_an_fp32_state():
    x = make_inputs(batch=2, length=20, seed=5, dtype=torch.bfloat16)
    y = run_kernel(x, True)
    assert y.dtype == torch.bfloat16, "y is written in u's dtype (bfloat16 here)"
    # exact on the same bf16 inputs, rounded once: within one bf16 step (2^-7 relative; the
    # interpreter's casts truncate, a GPU's round to nearest)
    assert_scan_close(y, loop_scan(**x, delta_softplus=True), (
        "with bf16 inputs load every block as float32 (as _load_rows does), keep the state in "
        "float32 and convert y to the output's dtype only when storing it"),
        rtol=2 ** -7 + 1e-5, atol=1e-4)
