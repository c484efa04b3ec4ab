"""Tests for scan_cpu.py / scan_cpu.c, the C kernels of the CPU path: the selective scan and the
causal conv + SiLU against their PyTorch definitions (forward and every gradient), strided
inputs, thread counts, a Mamba block on both backends, and what happens without a compiler.
They need a C compiler (CI has one); without it they skip with the build error as the reason,
and the fallback test below still runs."""
import pytest
import torch
import torch.nn.functional as F

import scan_cpu
import ssm
from ssm import MambaBlock, selective_scan, selective_scan_ref
from test_ssm import GRAD_NAMES, TOL, assert_close_rel, run_with_grads, scan_inputs

BUILT, WHY_NOT = scan_cpu.available()
needs_c = pytest.mark.skipif(not BUILT, reason=f"the C kernels did not build: {WHY_NOT}")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors, so one thread (as in test_ssm.py), restored after every test: one test here
    sets the thread count itself."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("length", [1, 7, 63, 100])
@pytest.mark.parametrize("d_state", [16, 5], ids=["N16", "N5"])
def test_c_scan_matches_reference_forward_and_all_gradients(length, dtype, d_state):
    # N = 16 runs the specialised code, N = 5 the generic one; 13 channels is not a multiple of
    # the vector width, so the loops' tails run too.
    inputs = scan_inputs(3, length, 13, d_state, dtype)
    grad_out = torch.randn(3, length, 13, generator=torch.Generator().manual_seed(1)).to(dtype)
    y_c, g_c = run_with_grads(scan_cpu.selective_scan_cpu, inputs, grad_out, delta_softplus=True)
    ref_inputs = {k: v.float() for k, v in inputs.items()}
    y_ref, g_ref = run_with_grads(selective_scan_ref, ref_inputs, grad_out.float(),
                                  delta_softplus=True)
    assert y_c.dtype == dtype
    assert_close_rel(y_c, y_ref, *TOL[dtype]["fwd"], "y")
    for name in GRAD_NAMES:
        nonzero = length > 1 or name != "A"        # one step: exp(Δ A) multiplies h_{-1} = 0
        assert g_c[name].dtype == dtype and (g_c[name].abs().sum() > 0) == nonzero, name
        assert_close_rel(g_c[name], g_ref[name], *TOL[dtype]["grad"], f"grad {name}")


@needs_c
def test_c_scan_without_optional_inputs():
    inputs = scan_inputs(2, 19, 5, 3, torch.float32)
    core = {k: inputs[k] for k in ("u", "delta", "A", "B", "C")}
    core["delta"] = core["delta"].abs() * 0.2                            # no softplus: keep Δ > 0
    grad_out = torch.randn(2, 19, 5)
    y_c, g_c = run_with_grads(scan_cpu.selective_scan_cpu, core, grad_out)
    y_ref, g_ref = run_with_grads(selective_scan_ref, core, grad_out)
    assert_close_rel(y_c, y_ref, 1e-5, 1e-5, "y")
    for name in core:
        assert_close_rel(g_c[name], g_ref[name], 1e-4, 1e-4, f"grad {name}")


@needs_c
def test_c_scan_reads_strided_views_in_place_and_leaves_inputs_untouched():
    # As in the Mamba block: x and z are halves of one (B, L, 2D) tensor, B and C slices of
    # another; the kernel reads them through their row stride, writes nothing into them.
    g = torch.Generator().manual_seed(3)
    xz, proj = torch.randn(2, 11, 2 * 6, generator=g), torch.randn(2, 11, 3 + 2 * 4, generator=g)
    inputs = dict(u=xz[..., :6], z=xz[..., 6:], delta=torch.randn(2, 11, 6, generator=g) - 1,
                  B=proj[..., 3:7], C=proj[..., 7:], A=-torch.rand(6, 4, generator=g) - 0.1,
                  D=torch.randn(6, generator=g), delta_bias=torch.randn(6, generator=g))
    originals = {k: v.clone() for k, v in inputs.items()}
    grad_out = torch.randn(2, 11, 6, generator=g)
    y_c, g_c = run_with_grads(scan_cpu.selective_scan_cpu, inputs, grad_out, delta_softplus=True)
    y_ref, g_ref = run_with_grads(selective_scan_ref, originals, grad_out, delta_softplus=True)
    for name, value in originals.items():
        assert torch.equal(inputs[name], value), name
    assert_close_rel(y_c, y_ref, 1e-5, 1e-5, "y")
    for name in GRAD_NAMES:
        assert_close_rel(g_c[name], g_ref[name], 1e-4, 1e-4, f"grad {name}")


@needs_c
def test_c_scan_gives_the_same_bits_on_any_number_of_threads():
    # Rows are independent and per-row partial sums are added by torch in a fixed order.
    inputs = scan_inputs(5, 30, 16, 16, torch.float32)
    grad_out = torch.randn(5, 30, 16)
    results = []
    for threads in (1, 2, 3):
        torch.set_num_threads(threads)
        results.append(run_with_grads(scan_cpu.selective_scan_cpu, inputs, grad_out,
                                      delta_softplus=True))
    for y, grads in results[1:]:
        assert torch.equal(y, results[0][0])
        for name in GRAD_NAMES:
            assert torch.equal(grads[name], results[0][1][name]), name


def conv_silu_reference(x, weight, bias):
    """silu(nn.Conv1d's causal depthwise conv): pad K-1 zeros on the left, keep L outputs."""
    length, kernel = x.shape[1], weight.shape[1]
    out = F.conv1d(x.transpose(1, 2), weight.unsqueeze(1), bias, padding=kernel - 1,
                   groups=x.shape[2])[..., :length]
    return F.silu(out).transpose(1, 2)


@needs_c
@pytest.mark.parametrize("kernel, length, bias", [(4, 60, True), (4, 2, True), (2, 9, False)],
                         ids=["K4", "shorter_than_K", "K2_no_bias"])
def test_c_conv_silu_matches_conv1d_forward_and_gradients(kernel, length, bias):
    g = torch.Generator().manual_seed(0)
    xz = torch.randn(3, length, 2 * 13, generator=g, requires_grad=True)
    x = xz[..., :13]                                  # a strided view, as in the block
    weight = torch.randn(13, kernel, generator=g, requires_grad=True)
    b = torch.randn(13, generator=g, requires_grad=True) if bias else None
    leaves = [t for t in (xz, weight, b) if t is not None]
    grad_out = torch.randn(3, length, 13, generator=g)
    out_c = scan_cpu.causal_conv_silu_cpu(x, weight, b)
    out_ref = conv_silu_reference(x, weight, b)
    torch.testing.assert_close(out_c, out_ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(torch.autograd.grad(out_c, leaves, grad_out),
                         torch.autograd.grad(out_ref, leaves, grad_out)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@needs_c
def test_mamba_block_on_the_c_backend_matches_the_torch_backend():
    torch.manual_seed(0)
    blocks = {name: MambaBlock(16, scan_backend=name) for name in ("c", "torch")}
    blocks["torch"].load_state_dict(blocks["c"].state_dict())
    x = torch.randn(2, 23, 16)
    outs, grads = {}, {}
    for name, block in blocks.items():
        xi = x.clone().requires_grad_()
        out = block(xi)
        out.square().sum().backward()
        outs[name] = out.detach()
        grads[name] = [xi.grad] + [p.grad for p in block.parameters()]
    torch.testing.assert_close(outs["c"], outs["torch"], rtol=1e-5, atol=1e-5)
    for got, want in zip(grads["c"], grads["torch"]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@needs_c
def test_auto_backend_on_cpu_is_the_c_scan(monkeypatch):
    monkeypatch.delenv("DM_SCAN_BACKEND", raising=False)
    assert ssm.default_scan_backend("cpu") == "c"
    monkeypatch.setenv("DM_SCAN_BACKEND", "torch")           # the environment can opt out
    assert ssm.default_scan_backend("cpu") == "torch"


def test_without_a_compiler_the_reason_is_given_and_auto_falls_back_to_torch(monkeypatch,
                                                                            tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("DM_SCAN_CPU_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DM_SCAN_BACKEND", raising=False)
    scan_cpu._load.cache_clear()
    ssm._load_c_scan.cache_clear()
    try:
        ok, reason = scan_cpu.available()
        assert not ok and "no-such-compiler" in reason
        x = scan_inputs(1, 4, 3, 2, torch.float32)
        with pytest.warns(UserWarning, match="no-such-compiler.*PyTorch scan"):   # said once
            assert ssm._resolve_backend(None, x["u"]) == "torch"
        y = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"])   # runs, on torch
        torch.testing.assert_close(y, selective_scan_ref(x["u"], x["delta"], x["A"], x["B"],
                                                         x["C"]))
        with pytest.raises(ssm.SSMError, match="c scan is unavailable.*no-such-compiler"):
            selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], backend="c")
        with pytest.raises(scan_cpu.ScanCpuError, match="backend='torch'"):
            scan_cpu.selective_scan_cpu(x["u"], x["delta"], x["A"], x["B"], x["C"])
    finally:
        scan_cpu._load.cache_clear()
        ssm._load_c_scan.cache_clear()


@needs_c
@pytest.mark.parametrize("batch, chunks", [(1, (1,) * 9), (3, (3, 1, 2, 3))],
                         ids=["batch1_one_token_at_a_time", "batch3_uneven_chunks"])
def test_c_recurrent_step_equals_torch_step_and_full_forward(batch, chunks):
    torch.manual_seed(0)
    nets = {name: ssm.MambaBackbone(16, n_layer=2, scan_backend=name).eval()
            for name in ("c", "torch")}
    nets["torch"].load_state_dict(nets["c"].state_dict())
    x = torch.randn(batch, sum(chunks), 16)
    with torch.inference_mode():
        full = nets["torch"](x)
        outs = {}
        for name, net in nets.items():
            cache, pieces, t = net.init_cache(batch, x.device), [], 0
            for size in chunks:
                before = [c.clone() for layer in cache for c in layer]
                y, new_cache = net.step(x[:, t:t + size], cache)
                for b, a in zip(before, (c for layer in cache for c in layer), strict=True):
                    assert torch.equal(a, b)                     # the input cache is untouched
                pieces.append(y)
                cache, t = new_cache, t + size
            outs[name] = torch.cat(pieces, 1)
    torch.testing.assert_close(outs["c"], outs["torch"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs["c"], full, rtol=1e-5, atol=1e-5)


@needs_c
def test_c_step_is_used_for_inference_only():
    block = MambaBlock(16, scan_backend="c")
    xz = torch.randn(1, 1, 64)
    with torch.inference_mode():
        assert block._c_step_applies(xz)
        assert not block._c_step_applies(xz.to(torch.bfloat16))
    assert not block._c_step_applies(block.in_proj(torch.randn(1, 1, 16)))   # grads wanted
    assert not MambaBlock(16, scan_backend="torch")._c_step_applies(xz)


@needs_c
def test_a_state_too_large_for_the_c_scan_runs_on_torch_under_auto_and_errors_when_forced(
        monkeypatch):
    monkeypatch.delenv("DM_SCAN_BACKEND", raising=False)
    n = scan_cpu.MAX_D_STATE + 1
    x = scan_inputs(1, 3, 2, n, torch.float32)
    args = [x[k] for k in ("u", "delta", "A", "B", "C")]
    torch.testing.assert_close(selective_scan(*args), selective_scan_ref(*args))
    with pytest.raises(scan_cpu.ScanCpuError, match=f"d_state <= {scan_cpu.MAX_D_STATE}"):
        selective_scan(*args, backend="c")
