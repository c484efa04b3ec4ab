"""Tests for ssm.py and scan_torch.py: the chunked PyTorch scan against the reference loop
(forward and every gradient), the reference conv against nn.Conv1d, the choice of backend (config
field, DM_SCAN_BACKEND, fallbacks), the house rule that no fast path imports the model, the Mamba
block's reference layout and initialisation, causality, and recurrent step() == full forward.
CPU only, a few seconds in all. The C and Triton backends: test_scan_cpu.py, test_scan_kernel.py."""
import ast
import math
import runpy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import ssm
from scan_torch import causal_conv_silu_torch, mamba_step_torch, selective_scan_torch
from ssm import (Backend, MambaBackbone, MambaBlock, MambaConfig, SSMError, causal_conv_silu_ref,
                 selective_scan, selective_scan_ref)

ROOT = Path(__file__).resolve().parents[1]
GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")

# Tolerances (rtol, atol); atol is multiplied by max(1, max |reference|), because gradients
# summed over batch and time (A, D, delta_bias) are large. fp32: both paths compute in fp32 and
# differ only in summation order. bf16: the fast scan takes bf16 inputs and returns bf16 outputs
# and gradients; it is compared with the reference run in fp32 on the same bf16-rounded inputs
# (as the official Mamba tests do), so the error is the bf16 rounding of the results (2^-8).
TOL = {torch.float32: dict(fwd=(1e-5, 1e-5), grad=(1e-4, 1e-4)),
       torch.bfloat16: dict(fwd=(3e-2, 5e-2), grad=(5e-2, 2e-2))}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: on a shared 2-core machine a second OpenMP thread only adds waiting
    (measured here: the step test took seconds with 2 threads, 0.05 s with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def scan_inputs(batch, length, channels, d_state, dtype, seed=0):
    """Random scan inputs in `dtype` with realistic ranges (A negative, small pre-softplus Δ)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)                          # noqa: E731
    x = dict(u=r(batch, length, channels), delta=r(batch, length, channels) * 0.5 - 1.0,
             A=-torch.rand(channels, d_state, generator=g) * 2 - 0.1,
             B=r(batch, length, d_state), C=r(batch, length, d_state), D=r(channels),
             z=r(batch, length, channels), delta_bias=r(channels) * 0.3)
    return {k: v.to(dtype) for k, v in x.items()}


def run_with_grads(scan, inputs, grad_out, **kwargs):
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    y = scan(**leaves, **kwargs)
    y.backward(grad_out)
    return y, {k: v.grad for k, v in leaves.items()}


def assert_close_rel(actual, expected, rtol, atol, what):
    """allclose with atol scaled by the reference's magnitude (gradients summed over many terms
    are large), and a message naming the tensor."""
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual.float(), expected.float(), rtol=rtol, atol=atol * scale,
                               msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("length", [1, 7, 63, 100])
@pytest.mark.parametrize("chunk_len", [None, 5], ids=["one_chunk", "chunks_of_5"])
def test_chunked_torch_scan_matches_reference_forward_and_all_gradients(length, dtype, chunk_len):
    inputs = scan_inputs(2, length, 6, 4, dtype)
    grad_out = torch.randn(2, length, 6, generator=torch.Generator().manual_seed(1)).to(dtype)
    y_fast, g_fast = run_with_grads(selective_scan_torch, inputs, grad_out, delta_softplus=True,
                                    chunk_len=chunk_len)
    ref_inputs = {k: v.float() for k, v in inputs.items()}             # same bf16-rounded values
    y_ref, g_ref = run_with_grads(selective_scan_ref, ref_inputs, grad_out.float(),
                                  delta_softplus=True)
    assert y_fast.dtype == dtype
    assert_close_rel(y_fast, y_ref, *TOL[dtype]["fwd"], "y")
    for name in GRAD_NAMES:
        # with one step h_{-1} = 0, so exp(Δ A) multiplies nothing and A gets no gradient
        nonzero = length > 1 or name != "A"
        assert g_fast[name].dtype == dtype and (g_fast[name].abs().sum() > 0) == nonzero, name
        assert_close_rel(g_fast[name], g_ref[name], *TOL[dtype]["grad"], f"grad {name}")


def test_chunked_torch_scan_matches_reference_without_optional_inputs():
    inputs = scan_inputs(3, 19, 5, 3, torch.float32)
    core = {k: inputs[k] for k in ("u", "delta", "A", "B", "C")}
    core["delta"] = core["delta"].abs() * 0.2                            # no softplus: keep Δ > 0
    grad_out = torch.randn(3, 19, 5)
    y_fast, g_fast = run_with_grads(selective_scan_torch, core, grad_out, chunk_len=4)
    y_ref, g_ref = run_with_grads(selective_scan_ref, core, grad_out)
    assert_close_rel(y_fast, y_ref, 1e-5, 1e-5, "y")
    for name in core:
        assert_close_rel(g_fast[name], g_ref[name], 1e-4, 1e-4, f"grad {name}")


@pytest.mark.parametrize("batch, length", [(1, 9), (3, 1)], ids=["batch1", "length1"])
def test_chunked_torch_scan_leaves_inputs_untouched_when_time_first_is_a_view(batch, length):
    # With B or L of 1 the time-first copy of an fp32 input is the input itself; the fast scan
    # must then not write into it (forward or backward), and must still match the reference.
    inputs = scan_inputs(batch, length, 6, 4, torch.float32)
    grad_out = torch.randn(batch, length, 6)
    originals = {k: v.clone() for k, v in inputs.items()}
    leaves = {k: v.requires_grad_() for k, v in inputs.items()}
    grad_copy = grad_out.clone()
    y_fast = selective_scan_torch(**leaves, delta_softplus=True)
    y_fast.backward(grad_out)
    for name, value in originals.items():
        assert torch.equal(inputs[name].detach(), value), name
    assert torch.equal(grad_out, grad_copy)
    y_ref, g_ref = run_with_grads(selective_scan_ref, originals, grad_out, delta_softplus=True)
    assert_close_rel(y_fast, y_ref, 1e-5, 1e-5, "y")
    for name in GRAD_NAMES:
        assert_close_rel(leaves[name].grad, g_ref[name], 1e-4, 1e-4, f"grad {name}")


def test_chunked_torch_scan_stays_fp32_under_autocast():
    # Under bf16 autocast a matmul would round to bf16; the fast scan's sums over N must not.
    inputs = scan_inputs(2, 9, 6, 4, torch.float32)
    grad_out = torch.randn(2, 9, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_fast, g_fast = run_with_grads(selective_scan_torch, inputs, grad_out,
                                        delta_softplus=True, chunk_len=4)
    y_ref, g_ref = run_with_grads(selective_scan_ref, inputs, grad_out, delta_softplus=True)
    assert y_fast.dtype == torch.float32
    assert_close_rel(y_fast, y_ref, 1e-5, 1e-5, "y")
    for name in GRAD_NAMES:
        assert_close_rel(g_fast[name], g_ref[name], 1e-4, 1e-4, f"grad {name}")


def test_reference_scan_matches_closed_form_for_one_channel():
    # One channel, N = 1, no softplus: h_t = a_t h_{t-1} + Δ_t b_t u_t written out by hand.
    u, delta = torch.tensor([[[1.0], [2.0], [-1.0]]]), torch.tensor([[[0.5], [0.1], [1.0]]])
    A, B, C = torch.tensor([[-2.0]]), torch.tensor([[[1.0], [3.0], [0.5]]]), torch.ones(1, 3, 1)
    h, expected = 0.0, []
    for t in range(3):
        h = math.exp(delta[0, t, 0] * A[0, 0]) * h + delta[0, t, 0] * B[0, t, 0] * u[0, t, 0]
        expected.append(h)
    y = selective_scan_ref(u, delta, A, B, C)
    torch.testing.assert_close(y.flatten(), torch.tensor(expected))


def conv_silu_conv1d(x, weight, bias):
    """silu(nn.Conv1d's causal depthwise conv): pad K-1 zeros on the left, keep L outputs."""
    length, kernel = x.shape[1], weight.shape[1]
    out = F.conv1d(x.transpose(1, 2), weight.unsqueeze(1), bias, padding=kernel - 1,
                   groups=x.shape[2])[..., :length]
    return F.silu(out).transpose(1, 2)


def conv_inputs(kernel, length, bias, seed=0):
    """x as a strided half of a (B, L, 2D) tensor (as in the block), weight (D, K), bias (D,)."""
    g = torch.Generator().manual_seed(seed)
    xz = torch.randn(3, length, 2 * 13, generator=g, requires_grad=True)
    weight = torch.randn(13, kernel, generator=g, requires_grad=True)
    b = torch.randn(13, generator=g, requires_grad=True) if bias else None
    return xz, weight, b


CONV_CASES = pytest.mark.parametrize("kernel, length, bias",
                                     [(4, 60, True), (4, 2, True), (2, 9, False)],
                                     ids=["K4", "shorter_than_K", "K2_no_bias"])


@CONV_CASES
def test_reference_conv_silu_matches_conv1d_forward_and_gradients(kernel, length, bias):
    xz, weight, b = conv_inputs(kernel, length, bias)
    leaves = [t for t in (xz, weight, b) if t is not None]
    grad_out = torch.randn(3, length, 13)
    out = causal_conv_silu_ref(xz[..., :13], weight, b)
    expected = conv_silu_conv1d(xz[..., :13], weight, b)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(torch.autograd.grad(out, leaves, grad_out),
                         torch.autograd.grad(expected, leaves, grad_out), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@CONV_CASES
def test_torch_conv_silu_matches_the_reference_forward_and_gradients(kernel, length, bias):
    xz, weight, b = conv_inputs(kernel, length, bias)
    leaves = [t for t in (xz, weight, b) if t is not None]
    grad_out = torch.randn(3, length, 13)
    out = causal_conv_silu_torch(xz[..., :13], weight, b)       # a strided view, as in the block
    expected = causal_conv_silu_ref(xz[..., :13], weight, b)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(torch.autograd.grad(out, leaves, grad_out),
                         torch.autograd.grad(expected, leaves, grad_out), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_conv_silu_keeps_x_dtype_with_fp32_weights():
    xz, weight, b = conv_inputs(4, 9, True)
    x = xz.detach()[..., :13].bfloat16()
    for conv in (causal_conv_silu_ref, causal_conv_silu_torch):
        out = conv(x, weight.detach(), b.detach())
        assert out.dtype == torch.bfloat16 and out.shape == x.shape, conv.__name__
    torch.testing.assert_close(causal_conv_silu_torch(x, weight.detach(), b.detach()).float(),
                               causal_conv_silu_ref(x, weight.detach(), b.detach()).float(),
                               rtol=1e-2, atol=1e-2)


# ---------------------------------------------------------------------------------------------
# Choosing the backend
# ---------------------------------------------------------------------------------------------

def recording(name, calls):
    """A Backend that notes which of its functions ran, then runs the reference."""
    def record(what, fn):
        return lambda *a, **kw: calls.append(f"{name}.{what}") or fn(*a, **kw)
    return Backend(name, record("scan", selective_scan_ref),
                   record("conv_silu", causal_conv_silu_ref), record("step", ssm.mamba_step_ref))


@pytest.fixture
def calls(monkeypatch):
    """The ref and torch backends replaced by recorders; DM_SCAN_BACKEND unset."""
    calls = []
    monkeypatch.setattr(ssm, "REFERENCE", recording("ref", calls))
    monkeypatch.setattr(ssm, "TORCH", recording("torch", calls))
    monkeypatch.delenv("DM_SCAN_BACKEND", raising=False)
    return calls


def _call(backend="auto"):
    x = scan_inputs(1, 3, 2, 2, torch.float32)
    return selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], backend=backend)


C_BUILT = (Backend("c", None, None, None), None)            # what _load_c_scan gives, faked
C_MISSING = (None, "no C compiler found")


def test_auto_on_cpu_is_c_where_it_builds_and_the_state_fits_else_torch(monkeypatch):
    monkeypatch.delenv("DM_SCAN_BACKEND", raising=False)
    limit = ssm.scan_cpu.MAX_D_STATE
    monkeypatch.setattr(ssm, "_load_c_scan", lambda: C_BUILT)
    assert ssm.resolve_backend("auto", "cpu", d_state=16) == "c"
    assert ssm.resolve_backend(None, torch.device("cpu"), d_state=limit) == "c"
    assert ssm.resolve_backend("auto", "cpu", d_state=limit + 1) == "torch"
    assert ssm.default_scan_backend("cpu", limit + 1) == "torch"
    monkeypatch.setattr(ssm, "_load_c_scan", lambda: C_MISSING)
    assert ssm.resolve_backend("auto", "cpu", d_state=16) == "torch"
    assert ssm.default_scan_backend("cpu") == "torch"


def test_auto_on_cuda_is_triton_where_cuda_and_triton_are_present_else_torch(monkeypatch):
    monkeypatch.delenv("DM_SCAN_BACKEND", raising=False)
    monkeypatch.setattr(ssm, "_load_triton_scan", lambda: (Backend("triton", *[None] * 3), None))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert ssm.resolve_backend("auto", "cuda") == "triton"
    monkeypatch.setattr(ssm, "_load_triton_scan", lambda: (None, "No module named 'triton'"))
    assert ssm.resolve_backend("auto", "cuda") == "torch"
    monkeypatch.setattr(ssm, "_load_triton_scan", lambda: (Backend("triton", *[None] * 3), None))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert ssm.resolve_backend("auto", "cuda") == "torch"


def test_env_var_replaces_auto_but_never_a_named_backend(monkeypatch):
    monkeypatch.setenv("DM_SCAN_BACKEND", "ref")
    assert ssm.resolve_backend("auto", "cpu") == ssm.resolve_backend(None, "cuda") == "ref"
    assert ssm.default_scan_backend("cpu") == "ref"
    assert ssm.resolve_backend("torch", "cpu") == "torch"
    assert MambaBlock(MambaConfig(d_model=8, scan_backend="torch")).backend_cpu.name == "torch"


def test_unknown_backend_is_rejected_from_the_argument_or_the_env_var(monkeypatch):
    monkeypatch.delenv("DM_SCAN_BACKEND", raising=False)
    with pytest.raises(SSMError, match="choose one of"):
        MambaBlock(MambaConfig(d_model=8, scan_backend="cuda-magic"))
    monkeypatch.setenv("DM_SCAN_BACKEND", "cuda-magic")
    with pytest.raises(SSMError, match="DM_SCAN_BACKEND"):
        _call()


def test_selective_scan_runs_the_backend_named_or_the_env_vars_under_auto(calls, monkeypatch):
    _call("ref")
    _call("torch")
    monkeypatch.setenv("DM_SCAN_BACKEND", "ref")
    _call()                      # env var honoured under auto
    _call("torch")               # a named backend beats the env var
    assert calls == ["ref.scan", "torch.scan", "ref.scan", "torch.scan"]


def test_a_forced_backend_that_is_missing_says_why_when_the_block_is_built(monkeypatch):
    monkeypatch.setattr(ssm, "_load_triton_scan", lambda: (None, "No module named 'triton'"))
    monkeypatch.setattr(ssm, "_load_c_scan", lambda: C_MISSING)
    for name, reason in (("triton", "No module named 'triton'"), ("c", "no C compiler found")):
        with pytest.raises(SSMError, match=f"{name} scan backend is unavailable \\({reason}"):
            MambaBlock(MambaConfig(d_model=8, scan_backend=name))
        with pytest.raises(SSMError, match="scan_backend='torch'"):
            _call(name)


def test_block_chooses_its_backend_once_and_runs_conv_scan_and_step_through_it(calls,
                                                                               monkeypatch):
    monkeypatch.setenv("DM_SCAN_BACKEND", "ref")
    block = MambaBlock(MambaConfig(d_model=8, d_state=4)).eval()     # auto -> ref, from the env var
    monkeypatch.setenv("DM_SCAN_BACKEND", "torch")             # read once: no effect any more
    assert block.backend_cpu.name == block.backend_cuda.name == "ref"
    with torch.no_grad():
        block(torch.randn(2, 5, 8))
        block.step(torch.randn(2, 8), block.init_cache(2, "cpu"))
    assert calls == ["ref.conv_silu", "ref.scan", "ref.step"]


def block_run(scan_backend, state_dict, x, d_state, device="cpu"):
    """A MambaBlock on `scan_backend` with these weights, run on `device` -> its output and the
    gradients of x and of every parameter for the loss sum(out^2), on the CPU."""
    config = MambaConfig(d_model=x.shape[-1], d_state=d_state, scan_backend=scan_backend)
    block = MambaBlock(config).to(device)
    block.load_state_dict(state_dict)
    assert (block.backend_cuda if device == "cuda" else block.backend_cpu).name == scan_backend
    x = x.clone().to(device).requires_grad_()
    out = block(x)
    out.square().sum().backward()
    return out.detach().cpu(), [g.cpu() for g in [x.grad] + [p.grad for p in block.parameters()]]


def assert_blocks_agree(scan_backend, length=23, d_model=16, d_state=16, fwd=1e-5, grad=1e-4,
                        device="cpu"):
    """The block on `scan_backend` (on `device`) against the block on the reference backend (on
    the CPU), same weights."""
    torch.manual_seed(0)
    state_dict = MambaBlock(MambaConfig(d_model=d_model, d_state=d_state)).state_dict()
    x = torch.randn(2, length, d_model)
    out, grads = block_run(scan_backend, state_dict, x, d_state, device)
    out_ref, grads_ref = block_run("ref", state_dict, x, d_state)
    torch.testing.assert_close(out, out_ref, rtol=fwd, atol=fwd)
    for got, want in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, want, rtol=grad, atol=grad)


def test_block_on_the_torch_backend_matches_the_reference_backend():
    assert_blocks_agree("torch")


def imported_modules(path):
    """Every top-level module name a file imports, anywhere in it (functions, __main__ too)."""
    names = set()
    for node in ast.walk(ast.parse(Path(path).read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_fast_path_imports_the_model_it_speeds_up():
    # The finder sees imports at the top and inside functions: ssm.py has both kinds.
    assert {"scan_torch", "scan_cpu", "scan_kernel"} <= imported_modules(ROOT / "ssm.py")
    for name in ("scan_torch.py", "scan_cpu.py", "scan_kernel.py"):
        found = imported_modules(ROOT / name) & {"ssm", "dt"}
        assert not found, f"{name} imports {found}"


def test_ssm_reads_model_first_and_holds_no_hand_written_backward():
    tree = ast.parse((ROOT / "ssm.py").read_text())
    order = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert (order.index("selective_scan_ref") < order.index("MambaBlock")
            < order.index("MambaBackbone") < order.index("mamba_step_ref")
            < order.index("resolve_backend") < order.index("selective_scan"))
    bases = [ast.unparse(b) for n in ast.walk(tree) if isinstance(n, ast.ClassDef) for b in n.bases]
    assert "torch.autograd.Function" not in bases and bases    # autograd Functions live elsewhere


# ---------------------------------------------------------------------------------------------
# Mamba block and backbone
# ---------------------------------------------------------------------------------------------

def reference_state_dict(d_model=16, d_state=16, d_conv=4, expand=2, seed=0):
    """A state dict with the reference Mamba block's names and shapes, written out by hand."""
    d_inner, dt_rank = expand * d_model, math.ceil(d_model / 16)
    g = torch.Generator().manual_seed(seed)
    shapes = {"in_proj.weight": (2 * d_inner, d_model), "conv1d.weight": (d_inner, 1, d_conv),
              "conv1d.bias": (d_inner,), "x_proj.weight": (dt_rank + 2 * d_state, d_inner),
              "dt_proj.weight": (d_inner, dt_rank), "dt_proj.bias": (d_inner,),
              "A_log": (d_inner, d_state), "D": (d_inner,), "out_proj.weight": (d_model, d_inner)}
    return {k: torch.randn(*s, generator=g) * 0.3 for k, s in shapes.items()}


def reference_block_forward(sd, x, d_state=16, d_conv=4):
    """The reference block's computation from its raw tensors, with the reference split orders:
    in_proj -> [x; z], x_proj -> [dt; B; C]."""
    d_inner, length = sd["D"].shape[0], x.shape[1]
    dt_rank = sd["dt_proj.weight"].shape[1]
    xz = x @ sd["in_proj.weight"].t()
    xs, z = xz[..., :d_inner], xz[..., d_inner:]
    xs = F.conv1d(xs.transpose(1, 2), sd["conv1d.weight"], sd["conv1d.bias"],
                  padding=d_conv - 1, groups=d_inner)[..., :length].transpose(1, 2)
    xs = F.silu(xs)
    x_dbl = xs @ sd["x_proj.weight"].t()
    dt = x_dbl[..., :dt_rank]
    B, C = x_dbl[..., dt_rank:dt_rank + d_state], x_dbl[..., dt_rank + d_state:]
    delta = F.softplus(dt @ sd["dt_proj.weight"].t() + sd["dt_proj.bias"])
    y = selective_scan_ref(xs, delta, -torch.exp(sd["A_log"]), B, C, sd["D"], z)
    return y @ sd["out_proj.weight"].t()


def test_reference_state_dict_loads_and_computes_the_reference_block():
    sd = reference_state_dict()
    block = MambaBlock(MambaConfig(d_model=16))
    block.load_state_dict(sd, strict=True)
    x = torch.randn(2, 9, 16)
    torch.testing.assert_close(block(x), reference_block_forward(sd, x), rtol=1e-5, atol=1e-5)


def test_backbone_state_dict_uses_reference_layer_names():
    block_sd = reference_state_dict()
    sd = {f"layers.{i}.mixer.{k}": v for i in range(2) for k, v in block_sd.items()}
    sd.update({f"layers.{i}.norm.weight": torch.full((16,), 0.5) for i in range(2)})
    net = MambaBackbone(MambaConfig(d_model=16, mamba_n_layer=2))
    net.load_state_dict(sd, strict=True)
    assert torch.equal(net.layers[1].mixer.A_log, block_sd["A_log"])


def test_block_initialisation_follows_reference():
    torch.manual_seed(0)
    block = MambaBlock(MambaConfig(d_model=64, d_state=8))             # d_inner 128, dt_rank 4
    assert block.dt_rank == 4 and block.d_inner == 128
    torch.testing.assert_close(block.A_log, torch.log(torch.arange(1.0, 9.0)).repeat(128, 1))
    assert torch.equal(block.D, torch.ones(128))
    dt = F.softplus(block.dt_proj.bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 1e-1 * 1.001 and dt.std() > 0
    assert block.dt_proj.weight.abs().max() <= 4 ** -0.5
    assert block.A_log._no_weight_decay and block.D._no_weight_decay


def test_block_parameter_count_matches_reference_formula():
    d_model, d_state, d_conv, d_inner, r = 128, 16, 4, 256, 8
    expected = (d_model * 2 * d_inner + d_inner * d_conv + d_inner + d_inner * (r + 2 * d_state)
                + r * d_inner + d_inner + d_inner * d_state + d_inner + d_inner * d_model)
    assert sum(p.numel() for p in MambaBlock(MambaConfig(d_model=d_model)).parameters()) == expected


def test_backbone_is_causal():
    torch.manual_seed(0)
    net = MambaBackbone(MambaConfig(d_model=16, mamba_n_layer=2)).eval()
    x = torch.randn(2, 12, 16)
    x_changed = x.clone()
    x_changed[:, 7:] = torch.randn(2, 5, 16)
    y, y_changed = net(x), net(x_changed)
    torch.testing.assert_close(y[:, :7], y_changed[:, :7], rtol=0, atol=1e-6)
    assert (y[:, 7:] - y_changed[:, 7:]).abs().max() > 1e-2            # the change did arrive


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("tokens", [1, 3, 7])
@torch.no_grad()
def test_torch_step_equals_the_reference_step_and_leaves_the_cache_untouched(tokens, dtype):
    torch.manual_seed(0)
    block = MambaBlock(MambaConfig(d_model=16, d_state=5)).to(dtype)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, tokens, 16, generator=g).to(dtype)
    cache = (torch.randn(3, block.d_inner, block.d_conv - 1, generator=g).to(dtype),
             torch.randn(3, block.d_inner, 5, generator=g))
    before = [c.clone() for c in cache]
    y_fast, cache_fast = mamba_step_torch(block, x, cache)
    y_ref, cache_ref = ssm.mamba_step_ref(block, x, cache)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=0.02, atol=0.02)
    for got, want in zip((y_fast, *cache_fast), (y_ref, *cache_ref), strict=True):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got.float(), want.float(), **tol)
    assert all(torch.equal(c, b) for c, b in zip(cache, before, strict=True))


# The step: mamba_step_ref on ref, scan_torch's on torch (and on triton); the C step:
# test_scan_cpu.py.
STEP_BACKENDS = pytest.mark.parametrize("scan_backend", ["torch", "ref"])


@STEP_BACKENDS
def test_backbone_step_by_step_equals_full_forward(scan_backend):
    torch.manual_seed(0)
    net = MambaBackbone(MambaConfig(d_model=16, mamba_n_layer=3, dropout=0.1,
                                    scan_backend=scan_backend)).eval()
    x = torch.randn(3, 11, 16)
    y = net(x)
    cache, outs = net.init_cache(3, x.device), []
    for t in range(x.shape[1]):
        y_t, cache = net.step(x[:, t], cache)
        outs.append(y_t)
    torch.testing.assert_close(torch.stack(outs, 1), y, rtol=1e-5, atol=1e-5)
    conv, h = cache[0]
    assert conv.shape == (3, 32, 3) and h.shape == (3, 32, 16) and h.dtype == torch.float32


@STEP_BACKENDS
def test_backbone_fed_in_chunks_of_several_tokens_equals_full_forward(scan_backend):
    torch.manual_seed(0)
    net = MambaBackbone(MambaConfig(d_model=16, mamba_n_layer=2, scan_backend=scan_backend)).eval()
    x = torch.randn(2, 12, 16)
    y = net(x)
    cache, outs, t = net.init_cache(2, x.device), [], 0
    for size in (3, 1, 2, 3, 3):                          # 12 tokens in uneven chunks
        y_chunk, cache = net.step(x[:, t:t + size], cache)
        assert y_chunk.shape == (2, size, 16)
        outs.append(y_chunk)
        t += size
    torch.testing.assert_close(torch.cat(outs, 1), y, rtol=1e-5, atol=1e-5)


def test_step_leaves_the_input_cache_unchanged():
    torch.manual_seed(0)
    net = MambaBackbone(MambaConfig(d_model=16, mamba_n_layer=2)).eval()
    _, cache = net.step(torch.randn(2, 3, 16), net.init_cache(2, torch.device("cpu")))
    before = [t.clone() for layer in cache for t in layer]
    net.step(torch.randn(2, 3, 16), cache)
    for b, a in zip(before, (t for layer in cache for t in layer), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_backbone_rows_returns_exactly_those_outputs_of_the_full_forward():
    torch.manual_seed(0)
    net = MambaBackbone(MambaConfig(d_model=16, mamba_n_layer=2)).eval()
    x = torch.randn(2, 12, 16)
    y = net(x)
    for rows in (slice(1, 12, 3), slice(10, 11)):
        torch.testing.assert_close(net(x, rows=rows), y[:, rows], rtol=1e-6, atol=1e-6)


def test_backbone_backward_reaches_every_parameter():
    torch.manual_seed(0)
    net = MambaBackbone(MambaConfig(d_model=16, mamba_n_layer=2))
    net(torch.randn(2, 8, 16)).square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


def test_backbone_runs_in_bf16():
    torch.manual_seed(0)
    net = MambaBackbone(MambaConfig(d_model=16, mamba_n_layer=2)).to(torch.bfloat16).eval()
    x = torch.randn(2, 6, 16, dtype=torch.bfloat16)
    y = net(x)
    y_t, _ = net.step(x[:, 0], net.init_cache(2, x.device))
    assert y.dtype == y_t.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
    torch.testing.assert_close(y_t, y[:, 0], rtol=3e-2, atol=3e-2)


def test_main_smoke_check_prints_parameter_counts(capsys):
    runpy.run_path(str(ROOT / "ssm.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "MambaBackbone(d_model=128, n_layer=4): 466,432 parameters" in out
    assert "step-by-step max |diff|" in out
