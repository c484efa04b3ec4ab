"""The Triton selective scan (scan_kernel.py) against the reference loop ssm.selective_scan_ref.

Without CUDA the kernels run in Triton's interpreter (conftest.py sets TRITON_INTERPRET=1 before
triton is imported): exact, but slow (about a millisecond per scanned element), so the shapes are
tiny and the tiles small (16 steps, 1-2 channels per program) so that even these shapes cross
tile borders in time, channels and state size. Every output buffer starts as NaN, so an element
a kernel forgets to write fails the comparison. On CUDA the same comparisons run at real sizes
with the tolerances of the official Mamba tests.
"""
import pytest
import torch

pytest.importorskip("triton")   # the project runs without triton; so do its other tests
import scan_kernel  # noqa: E402
from ssm import selective_scan_ref  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"     # where the tiny-shape tests run: interpreter or GPU
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
# (rtol, atol) for y and for the gradients. Interpreter: both sides compute in fp32 on the same
# inputs, so only summation order differs. GPU: the official Mamba tests' y tolerances, and
# gradients a few times looser.
TOL_INTERPRETER = {torch.float32: (1e-4, 1e-5), torch.float16: (2e-3, 2e-3),
                   torch.bfloat16: (2e-2, 2e-2)}
TOL_GPU = {torch.float32: ((6e-4, 2e-3), (2e-3, 1e-2)),
           torch.bfloat16: ((3e-2, 5e-2), (6e-2, 1e-1))}
# The tiny-shape tests' (tol_y, tol_grad): the interpreter's on the CPU, the GPU's on a GPU.
TOL_TINY = ({d: (t, t) for d, t in TOL_INTERPRETER.items()} if not CUDA else
            {torch.float32: TOL_GPU[torch.float32], torch.float16: TOL_GPU[torch.bfloat16],
             torch.bfloat16: TOL_GPU[torch.bfloat16]})
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    monkeypatch.setattr(scan_kernel, "POISON_OUTPUTS", True)


def make_inputs(batch, length, dim, dstate, dtype=torch.float32, device=DEVICE, D=True, z=True,
                delta_bias=True, softplus=True, seed=0):
    """Random scan inputs with grads on; A in the S4D-real range (-1..-dstate), as Mamba
    initialises it. Without softplus the step delta is made positive, as a real step is: a
    negative one makes exp(delta A) grow, and over a few hundred steps both sides overflow."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=g)   # noqa: E731
    delta = 0.5 * rand(batch, length, dim)
    x = dict(u=rand(batch, length, dim), delta=delta if softplus else delta.abs(),
             A=-(0.5 + torch.rand(dim, 1, generator=g)) * torch.arange(1, dstate + 1.0),
             B=rand(batch, length, dstate), C=rand(batch, length, dstate),
             D=rand(dim) if D else None, z=rand(batch, length, dim) if z else None,
             delta_bias=0.3 * rand(dim) if delta_bias else None)
    low = {"u", "delta", "B", "C", "z"}                  # inputs in the activation dtype
    return {k: None if v is None
            else v.to(device, dtype if k in low else torch.float32).requires_grad_()
            for k, v in x.items()}


def run_with_grads(fn, inputs, dy, **kwargs):
    """y and the gradient of <y, dy> for every present input. -> (y, {name: grad})"""
    present = [k for k in NAMES if inputs[k] is not None]
    y = fn(*(inputs[k] for k in NAMES), **kwargs)
    grads = torch.autograd.grad(y, [inputs[k] for k in present], dy)
    return y, dict(zip(present, grads))


def assert_matches_reference(inputs, delta_softplus, tol_y, tol_grad, **tiles):
    u = inputs["u"]
    dy = torch.randn(u.shape, generator=torch.Generator().manual_seed(1)).to(u.device, u.dtype)
    y, grads = run_with_grads(scan_kernel.selective_scan_triton, inputs, dy,
                              delta_softplus=delta_softplus, **tiles)
    y_ref, grads_ref = run_with_grads(selective_scan_ref, inputs, dy, delta_softplus=delta_softplus)
    assert torch.isfinite(y_ref).all(), "the reference overflows on these inputs: fix the test"
    assert y.dtype == u.dtype and y.shape == u.shape
    torch.testing.assert_close(y, y_ref, rtol=tol_y[0], atol=tol_y[1])
    assert grads.keys() == grads_ref.keys()
    for name, g_ref in grads_ref.items():
        if name != "A" or u.shape[1] > 1:        # at L = 1, dA is 0: it multiplies h_{-1} = 0
            assert g_ref.abs().max() > 0, (
                f"reference d{name} is all zero: the comparison would prove nothing")
        assert grads[name].dtype == inputs[name].dtype
        torch.testing.assert_close(grads[name], g_ref, rtol=tol_grad[0], atol=tol_grad[1],
                                   msg=lambda m: f"d{name}: {m}")


# --- Interpreter (CPU) and GPU alike: tiny shapes -------------------------------------------

# (length, channels, channels per program): 1 and 7 fit in one tile; 33 and 130 span 3 and 9
# chunks of 16; 3 channels in blocks of 2 leave a half-empty block, N = 3 pads the state to 4.
@pytest.mark.parametrize("length, dim, block_d", [(1, 3, 2), (7, 3, 2), (33, 3, 2), (130, 3, 4)])
def test_output_and_every_gradient_match_reference_at_any_length(length, dim, block_d):
    inputs = make_inputs(2, length, dim, 3)
    assert_matches_reference(inputs, True, *TOL_TINY[torch.float32], chunk=16, block_d=block_d)


@pytest.mark.parametrize("D, z, delta_bias, delta_softplus", [
    (False, False, False, False), (True, False, False, False), (False, True, False, False),
    (False, False, True, False), (False, False, False, True), (True, True, False, True)])
def test_each_optional_input_matches_reference(D, z, delta_bias, delta_softplus):
    inputs = make_inputs(2, 13, 3, 3, D=D, z=z, delta_bias=delta_bias,   # 2 chunks of 8
                         softplus=delta_softplus)
    assert_matches_reference(inputs, delta_softplus, *TOL_TINY[torch.float32], chunk=8, block_d=2)


def test_softplus_keeps_its_precision_for_tiny_steps():
    """A step size far below Mamba's initial 1e-3 (softplus of -13 is about 2e-6): log(1 + e^x)
    rounds 1 + e^x and loses percents there; the reference's softplus does not."""
    inputs = make_inputs(2, 13, 3, 3, D=False, z=False)
    inputs["delta_bias"] = torch.full((3,), -13.0, device=DEVICE, requires_grad=True)
    y = scan_kernel.selective_scan_triton(*(inputs[k] for k in NAMES), delta_softplus=True,
                                          chunk=8, block_d=2)
    y_ref = selective_scan_ref(*(inputs[k] for k in NAMES), delta_softplus=True)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_match_reference(dtype):
    inputs = make_inputs(2, 13, 3, 3, dtype=dtype)
    assert_matches_reference(inputs, True, *TOL_TINY[dtype], chunk=8, block_d=2)


def test_saved_states_are_the_states_entering_each_chunk():
    x = make_inputs(2, 33, 3, 3, D=False, z=False, delta_bias=False)
    x = {k: v.detach() if v is not None else None for k, v in x.items()}
    _, h_saved = scan_kernel._scan_forward(*(x[k] for k in NAMES), False, 16, 2, True)
    assert h_saved.shape == (2, 3, 3, 3)           # (B, n_chunks, D, N): no (B, L, D, N) tensor
    # Reference states: scan one channel-state pair at a time with C = e_n picking h[..., n].
    u, delta, A, B = x["u"], x["delta"], x["A"], x["B"]
    for c, t in enumerate((16, 32)):               # chunks 1 and 2 start after steps 15 and 31
        for n in range(3):
            C = torch.zeros_like(B)
            C[..., n] = 1.0
            y = selective_scan_ref(u[:, :t], delta[:, :t], A, B[:, :t], C[:, :t])  # (B, t, D)
            h_ref = y[:, -1]                                                      # (B, D)
            rtol, atol = TOL_TINY[torch.float32][0]
            torch.testing.assert_close(h_saved[:, c + 1, :, n], h_ref, rtol=rtol, atol=atol)
    assert torch.all(h_saved[:, 0] == 0)           # h_{-1} = 0


def test_inference_skips_state_saves_and_gives_the_same_output(monkeypatch):
    inputs = make_inputs(2, 7, 3, 3)
    saved = []
    forward = scan_kernel._scan_forward
    monkeypatch.setattr(scan_kernel, "_scan_forward", lambda *a: saved.append(a[-1]) or forward(*a))
    args = [inputs[k] for k in NAMES]
    y_train = scan_kernel.selective_scan_triton(*args, delta_softplus=True, chunk=16)
    with torch.no_grad():
        y_infer = scan_kernel.selective_scan_triton(*args, delta_softplus=True, chunk=16)
    assert saved == [True, False]
    torch.testing.assert_close(y_infer, y_train.detach(), rtol=0, atol=0)


def test_non_contiguous_inputs_match_reference():
    """Mamba passes x and z as halves of one projection, and x after a transpose: strided views."""
    inputs = make_inputs(2, 7, 3, 3)
    u_z = torch.cat([inputs["u"].detach(), inputs["z"].detach()], dim=-1)   # (B, L, 2D)
    u_z.requires_grad_()
    u, z = u_z.chunk(2, dim=-1)
    delta = inputs["delta"].detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()
    assert not (u.is_contiguous() or z.is_contiguous() or delta.is_contiguous())
    assert_matches_reference({**inputs, "u": u, "z": z, "delta": delta}, True,
                             *TOL_TINY[torch.float32], chunk=16, block_d=2)


def test_ssm_selective_scan_reaches_this_kernel_with_the_triton_backend(monkeypatch):
    import ssm
    inputs = make_inputs(2, 7, 3, 3)
    launched = []
    forward = scan_kernel._scan_forward
    monkeypatch.setattr(scan_kernel, "_scan_forward", lambda *a: launched.append(1) or forward(*a))
    with torch.no_grad():
        y = ssm.selective_scan(*(inputs[k] for k in NAMES), delta_softplus=True, backend="triton")
        y_ref = selective_scan_ref(*(inputs[k] for k in NAMES), delta_softplus=True)
    assert launched == [1]
    rtol, atol = TOL_TINY[torch.float32][0]
    torch.testing.assert_close(y, y_ref, rtol=rtol, atol=atol)


def test_mamba_block_on_the_triton_backend_runs_this_kernel_and_matches_the_reference_backend(
        monkeypatch):
    from test_ssm import assert_blocks_agree
    launched = []
    forward = scan_kernel._scan_forward
    monkeypatch.setattr(scan_kernel, "_scan_forward", lambda *a: launched.append(1) or forward(*a))
    (_, fwd), (_, grad) = TOL_GPU[torch.float32]         # atol of y, atol of the gradients
    tol = {} if not CUDA else dict(fwd=fwd, grad=grad)
    assert_blocks_agree("triton", length=9, d_model=4, d_state=3, device=DEVICE, **tol)
    assert launched == [1]


def test_mamba_block_on_the_triton_backend_trains_under_bf16_autocast_interpreter_or_gpu():
    # train.py's CUDA steps run under bf16 autocast: in_proj's z is bf16 there, so the conv's
    # output u must be too, or the kernel refuses the mix (it did, on an H200, 2026-12-04).
    from ssm import MambaBlock, MambaConfig
    torch.manual_seed(0)
    block = MambaBlock(MambaConfig(d_model=4, d_state=3, scan_backend="triton")).to(DEVICE)
    x = torch.randn(2, 9, 4, device=DEVICE, requires_grad=True)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        y = block(x)
    y.float().sum().backward()
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
    assert all(torch.isfinite(p.grad).all() for p in block.parameters())


def test_ssm_triton_backend_on_cpu_tensors_without_the_interpreter_says_it_needs_cuda(
        monkeypatch):
    import ssm
    if CUDA:
        pytest.skip("CPU tensors on a machine with CUDA: not this situation")
    monkeypatch.delenv("TRITON_INTERPRET")
    x = {k: v.detach() if v is not None else None for k, v in make_inputs(1, 3, 2, 2).items()}
    with pytest.raises(scan_kernel.ScanKernelError, match="needs CUDA tensors"):
        ssm.selective_scan(*(x[k] for k in NAMES), backend="triton")


def test_bad_inputs_raise_one_clear_error(monkeypatch):
    x = {k: v.detach() if v is not None else None for k, v in make_inputs(2, 5, 4, 3).items()}
    call = lambda **change: scan_kernel.selective_scan_triton(**{**x, **change})   # noqa: E731
    with pytest.raises(scan_kernel.ScanKernelError, match="B has shape"):
        call(B=x["B"][:, :4])
    with pytest.raises(scan_kernel.ScanKernelError, match="share one dtype"):
        call(delta=x["delta"].half())
    with pytest.raises(scan_kernel.ScanKernelError, match="power of two"):
        scan_kernel.selective_scan_triton(*(x[k] for k in NAMES), chunk=12)
    if not CUDA:
        monkeypatch.delenv("TRITON_INTERPRET")
        with pytest.raises(scan_kernel.ScanKernelError, match="needs CUDA tensors"):
            call()


def test_a_sequence_too_long_for_32_bit_offsets_is_refused_before_launch():
    length, dim = 2**16, 2**15  # L x D = 2**31: no memory is made on the meta device
    u = torch.empty(1, length, dim, device="meta")
    A, B = torch.empty(dim, 4, device="meta"), torch.empty(1, length, 4, device="meta")
    with pytest.raises(scan_kernel.ScanKernelError, match="overflows the kernels' 32-bit"):
        scan_kernel._check_inputs(u, u, A, B, B, None, None, None, None, None)


def test_smoke_check_compares_the_output_and_every_gradient_with_the_torch_scan(capsys):
    assert scan_kernel.main(["--length", "19", "--dim", "3", "--dstate", "2"]) is True
    out = capsys.readouterr().out
    for name in ("y", *(f"d{k}" for k in NAMES)):
        assert f"max |{name} - {name}_torch|" in out
    assert out.splitlines()[-1] == "PASS" and "FAIL" not in out
    assert " ms" not in out                              # a correctness check: timing is elsewhere


def test_smoke_check_fails_when_the_torch_scan_disagrees(monkeypatch, capsys):
    torch_scan = scan_kernel.selective_scan_torch
    monkeypatch.setattr(scan_kernel, "selective_scan_torch", lambda **x: 1.01 * torch_scan(**x))
    assert scan_kernel.main(["--length", "5", "--dim", "2", "--dstate", "2"]) is False
    assert capsys.readouterr().out.splitlines()[-1].startswith("FAIL")


# --- CUDA only: real sizes, fp32 and bf16 -------------------------------------------------------

@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch, length, dim, dstate",
                         [(2, 2048, 768, 16), (64, 60, 256, 16), (3, 1000, 100, 5)])
def test_gpu_matches_reference_at_real_sizes(dtype, batch, length, dim, dstate):
    inputs = make_inputs(batch, length, dim, dstate, dtype=dtype, device="cuda")
    tol_y, tol_grad = TOL_GPU[dtype]
    assert_matches_reference(inputs, True, tol_y, tol_grad)


@needs_cuda
def test_gpu_each_optional_input_matches_reference():
    combos = [(False, False, False, False), (True, True, True, True), (False, True, False, True)]
    for D, z, bias, softplus in combos:
        inputs = make_inputs(2, 300, 64, 16, device="cuda", D=D, z=z, delta_bias=bias,
                             softplus=softplus)
        assert_matches_reference(inputs, softplus, *TOL_GPU[torch.float32])
