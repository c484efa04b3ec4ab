"""The Triton kernels compile for real GPUs, without a GPU: each kernel is built for sm_80 (A100)
and sm_90 (H100 / H200) at the launch settings scan_kernel.py uses, with fp32 and bf16 inputs,
and the cubin's resource usage (read by the cuobjdump that ships with triton's nvidia backend)
must show no register spills. A kernel that spills runs, but slowly; one that fails to compile
would fail only on the first GPU it meets. Skips where triton or its nvidia backend is missing.

The compiles run in a child process: the test session switches on Triton's interpreter (see
conftest.py), under which kernels are interpreted functions that cannot be compiled.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
triton = pytest.importorskip("triton", reason="triton is not installed (only Linux gets it)")
CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
if not CUOBJDUMP.exists():
    pytest.skip(f"triton's nvidia backend has no cuobjdump ({CUOBJDUMP})", allow_module_level=True)

# The child: compile each case as _scan_forward / _scan_backward launch it, print its usage.
CHILD = r"""
import json, re, subprocess, sys, tempfile
from pathlib import Path
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import scan_kernel

# pointers whose dtype follows the inputs (u's or B's); the others are fp32 by design
FOLLOWS_INPUT = {"p_u", "p_delta", "p_B", "p_C", "p_z", "p_y", "p_dy", "p_du", "p_ddelta", "p_dz"}
FP32_ALWAYS = {"p_A", "p_D", "p_delta_bias", "p_h_saved", "p_dA_part", "p_dB_part", "p_dC_part",
               "p_dD_part", "p_dbias_part"}
CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"

def usage(kernel_name, arch, dtype, num_warps=None, d_inner=256, d_state=16):
    chunk, block_d, block_n = scan_kernel._block_sizes(d_inner, d_state, scan_kernel.CHUNK, None)
    constexprs = dict(HAS_D=True, HAS_Z=True, HAS_DELTA_BIAS=True, DELTA_SOFTPLUS=True,
                      CHUNK=chunk, BLOCK_D=block_d, BLOCK_N=block_n)
    if kernel_name == "forward":
        kernel, warps = scan_kernel._scan_fwd_kernel, scan_kernel.FWD_WARPS
        constexprs["SAVE_STATES"] = True
    else:
        kernel, warps = scan_kernel._scan_bwd_kernel, scan_kernel.BWD_WARPS
    signature = {}
    for name in kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in FOLLOWS_INPUT:
            signature[name] = "*" + dtype
        elif name in FP32_ALWAYS:
            signature[name] = "*fp32"
        elif name.startswith("p_"):
            sys.exit(f"{name}: a new pointer argument; say in this test which dtype it takes")
        else:  # sizes: seqlen, dim, dstate, n_chunks
            signature[name] = "i32"
    compiled = triton.compile(ASTSource(kernel, signature, constexprs),
                              target=GPUTarget("cuda", arch, 32),
                              options=dict(num_warps=num_warps or warps))
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        out = subprocess.run([str(CUOBJDUMP), "--dump-resource-usage", str(cubin)],
                             capture_output=True, text=True, check=True).stdout
    return dict(num_warps=num_warps or warps, **{k: int(v) for k, v in
                re.findall(r"\b(REG|STACK|LOCAL|SHARED):(\d+)", out)})

cases = {f"{k}-sm_{a}-{d}": usage(k, a, d) for k in ("forward", "backward") for a in (80, 90)
         for d in ("fp32", "bf16")}
cases["backward-sm_90-fp32-4warps"] = usage("backward", 90, "fp32", num_warps=4)
print(json.dumps(cases))
"""


@pytest.fixture(scope="module")
def usage(tmp_path_factory):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path_factory.mktemp("triton-cache"))  # compile afresh
    done = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("arch", [80, 90])
@pytest.mark.parametrize("kernel", ["forward", "backward"])
def test_scan_kernel_compiles_for_the_gpu_without_spilling(usage, kernel, arch, dtype):
    u = usage[f"{kernel}-sm_{arch}-{dtype}"]
    assert u["REG"] <= 255, u
    assert u["LOCAL"] == 0 and u["STACK"] == 0, (
        f"the {kernel} kernel spills to local memory on sm_{arch} with {dtype} inputs ({u}); "
        "lower TILE_ELEMENTS or raise its num_warps in scan_kernel.py")


def test_the_spill_check_can_fail(usage):
    """The backward at 4 warps needs more registers than a thread may have, so it spills: the
    check above does see a kernel that stops fitting."""
    u = usage["backward-sm_90-fp32-4warps"]
    assert u["LOCAL"] > 0 or u["STACK"] > 0, u
