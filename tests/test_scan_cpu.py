"""Tests for scan_cpu.py / scan_cpu.c, the C kernels of the CPU path: the selective scan, the
causal conv + SiLU and the recurrent step against their references in ssm.py (forward and every
gradient), strided inputs, thread counts, a Mamba block on the C backend, when the C step runs,
and the fallbacks (no compiler, d_state too large). They need a C compiler (CI has one); without
it they skip with the build error as the reason, and the fallback test below still runs."""
import pytest
import torch

import scan_cpu
import scan_torch
import ssm
from ssm import (MambaBlock, MambaConfig, causal_conv_silu_ref, mamba_step_ref, selective_scan,
                 selective_scan_ref)
from test_ssm import (CONV_CASES, GRAD_NAMES, TOL, assert_blocks_agree, assert_close_rel,
                      conv_inputs, conv_silu_conv1d, run_with_grads, scan_inputs)

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


@needs_c
@CONV_CASES
def test_c_conv_silu_matches_the_reference_and_conv1d_forward_and_gradients(kernel, length,
                                                                          bias):
    xz, weight, b = conv_inputs(kernel, length, bias)
    x = xz[..., :13]                                  # a strided view, as in the block
    leaves = [t for t in (xz, weight, b) if t is not None]
    grad_out = torch.randn(3, length, 13)
    out_c = scan_cpu.causal_conv_silu_cpu(x, weight, b)
    grads_c = torch.autograd.grad(out_c, leaves, grad_out)
    for reference in (causal_conv_silu_ref, conv_silu_conv1d):
        out_ref = reference(x, weight, b)
        torch.testing.assert_close(out_c, out_ref, rtol=1e-5, atol=1e-5)
        for got, want in zip(grads_c, torch.autograd.grad(out_ref, leaves, grad_out), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@needs_c
@pytest.mark.parametrize("tokens", [1, 3])
def test_c_step_matches_the_reference_step_and_leaves_the_cache_untouched(tokens):
    torch.manual_seed(0)
    block = MambaBlock(MambaConfig(d_model=16, d_state=5))  # N = 5: not the specialised N = 16 code
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, tokens, 16, generator=g)
    cache = (torch.randn(3, block.d_inner, block.d_conv - 1, generator=g),
             torch.randn(3, block.d_inner, 5, generator=g))
    before = [c.clone() for c in cache]
    with torch.inference_mode():
        y_c, cache_c = scan_cpu.mamba_step_cpu(block, x, cache)
        y_ref, cache_ref = mamba_step_ref(block, x, cache)
    torch.testing.assert_close(y_c, y_ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(cache_c, cache_ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for c, b in zip(cache, before, strict=True):
        assert torch.equal(c, b)


@needs_c
def test_mamba_block_on_the_c_backend_matches_the_reference_backend():
    assert_blocks_agree("c")


@needs_c
def test_auto_backend_on_cpu_is_the_c_scan(monkeypatch):
    monkeypatch.delenv("DM_SCAN_BACKEND", raising=False)
    assert ssm.default_scan_backend("cpu") == "c"
    assert MambaBlock(MambaConfig(d_model=16)).backend_cpu.name == "c"
    monkeypatch.setenv("DM_SCAN_BACKEND", "torch")           # the environment can opt out
    assert ssm.default_scan_backend("cpu") == "torch"
    assert MambaBlock(MambaConfig(d_model=16)).backend_cpu.name == "torch"
    assert MambaBlock(MambaConfig(d_model=16, scan_backend="c")).backend_cpu.name == "c"  # named: kept


def test_c_kernels_refuse_tensors_off_the_cpu():
    # The C code reads tensors through data_ptr(): anything not in CPU memory must be refused
    # before it gets there ("meta" stands in for CUDA on a machine without a GPU).
    x = {k: v.to("meta") for k, v in scan_inputs(1, 4, 3, 2, torch.float32).items()}
    with pytest.raises(scan_cpu.ScanCpuError, match="selective_scan_cpu takes CPU tensors"):
        scan_cpu.selective_scan_cpu(x["u"], x["delta"], x["A"], x["B"], x["C"])
    with pytest.raises(scan_cpu.ScanCpuError, match="causal_conv_silu_cpu takes CPU tensors"):
        scan_cpu.causal_conv_silu_cpu(x["u"], torch.ones(3, 4, device="meta"))
    block = MambaBlock(MambaConfig(d_model=3))
    with pytest.raises(scan_cpu.ScanCpuError, match="mamba_step_cpu takes CPU tensors"):
        scan_cpu.mamba_step_cpu(block, torch.ones(1, 1, 3, device="meta"), None)


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
            assert ssm.resolve_backend("auto", "cpu") == "torch"
        assert ssm.default_scan_backend("cpu") == "torch"
        assert MambaBlock(MambaConfig(d_model=16)).backend_cpu.name == "torch"
        y = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"])   # runs, on torch
        torch.testing.assert_close(y, selective_scan_ref(x["u"], x["delta"], x["A"], x["B"],
                                                         x["C"]))
        with pytest.raises(ssm.SSMError, match="c scan backend is unavailable.*no-such-compiler"):
            selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], backend="c")
        with pytest.raises(ssm.SSMError, match="no-such-compiler.*scan_backend='torch'"):
            MambaBlock(MambaConfig(d_model=16, scan_backend="c"))
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
    nets = {name: ssm.MambaBackbone(MambaConfig(d_model=16, mamba_n_layer=2,
                                                     scan_backend=name)).eval()
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
def test_c_step_runs_for_inference_in_fp32_only(monkeypatch):
    # It computes no gradients and only fp32: with gradients wanted, or bf16 weights, the C
    # backend's step hands over to scan_torch's (which the torch and triton backends take).
    ran = []
    for module, name in ((scan_cpu, "mamba_step_torch"), (scan_cpu, "_lib")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name,
                            lambda *a, _name=name, _real=real: ran.append(_name) or _real(*a))
    block, x = MambaBlock(MambaConfig(d_model=16, scan_backend="c")), torch.randn(2, 3, 16)
    block_bf16 = MambaBlock(MambaConfig(d_model=16, scan_backend="c")).to(torch.bfloat16)
    assert block.backend_cpu.step is scan_cpu.mamba_step_cpu
    with torch.inference_mode():
        block.step(x, block.init_cache(2, "cpu"))
        block_bf16.step(x.bfloat16(), block_bf16.init_cache(2, "cpu"))
    block.step(x, block.init_cache(2, "cpu"))                                 # grads wanted
    assert ran == ["_lib", "mamba_step_torch", "mamba_step_torch"]
    torch_block = MambaBlock(MambaConfig(d_model=16, scan_backend="torch"))
    assert torch_block.backend_cpu.step is scan_torch.mamba_step_torch


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
    assert MambaBlock(MambaConfig(d_model=4, d_state=n)).backend_cpu.name == "torch"
    assert MambaBlock(MambaConfig(d_model=4, d_state=n - 1)).backend_cpu.name == "c"
    with pytest.raises(scan_cpu.ScanCpuError, match=f"d_state <= {scan_cpu.MAX_D_STATE}"):
        MambaBlock(MambaConfig(d_model=4, d_state=n, scan_backend="c"))(torch.randn(1, 3, 4))
