"""The CPU path of the Mamba block in C (scan_cpu.c), loaded through ctypes, with autograd.

Three kernels, each one call where eager PyTorch needs a dozen or more ops:
  selective_scan_cpu     softplus, scan, D skip and silu(z) gate, forward and backward
  causal_conv_silu_cpu   the block's causal depthwise conv + SiLU, forward and backward
  mamba_step_cpu         a block's recurrent step, its middle (conv to gate) in C; inference only

Each has the signature of its reference in ssm.py (selective_scan_ref, causal_conv_silu_ref,
mamba_step_ref); this file does not import ssm.py, which picks these kernels on the CPU.

Why: the chunked PyTorch scan (scan_torch.py) writes each of its ~20 elementwise steps to a full
(L, B, N, D) tensor, so it runs at memory speed; scan_cpu.c walks one (batch row, channel) pair
at a time with its N states in registers, so only the (B, L, D) and (B, L, N) tensors touch
memory. It is compiled once per machine with the system C compiler (`cc`, or $CC) into a cache
folder: no build tool, no Python package beyond torch. A cached library is loaded only from a
folder owned by the user that others cannot write to, and only if its SHA-256 is the one recorded
when it was built (else it is rebuilt: a library planted there never runs); a cache folder that
fails the check is not used (the library is built in a private temporary folder for the
process, with a warning). Where no compiler works, `available()`
says why and ssm.py falls back to the PyTorch scan. Batch rows are shared out among torch's own
OpenMP threads (torch.get_num_threads()).

    python scan_cpu.py      # build (or find) the library, check it against scan_torch.py

References (ideas, credited in one line each):
  Gu & Dao 2023, "Mamba": the fused scan that keeps the state on chip and recomputes it in the
  backward pass (their CUDA kernel; this is the same plan for a CPU core and its L1 cache).
"""
import atexit
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from scan_torch import mamba_step_torch, selective_scan_torch

SOURCE = Path(__file__).with_name("scan_cpu.c")
# Tried in order; the first that compiles wins. -ffast-math lets the compiler vectorise the sums
# over n (it may reorder float additions); -march=native lets it use this CPU's widest vectors;
# -fopenmp runs batch rows in parallel on torch's own OpenMP threads (torch has loaded
# libgomp.so.1, and the loader reuses a library already loaded under the same name; a second
# thread pool would fight torch's busy-waiting threads for the cores).
FLAG_SETS = (
    ["-O3", "-march=native", "-ffast-math", "-fopenmp"],
    ["-O3", "-march=native", "-ffast-math"],
    ["-O3", "-ffast-math"],
)


MAX_D_STATE = 64               # scan_cpu.c's MAX_N: a channel's state is a local array


class ScanCpuError(RuntimeError):
    """The C scan could not be built or loaded; the message says why and what to do."""


def _cache_dir():
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(os.environ.get("DM_SCAN_CPU_CACHE") or os.path.join(root, "decision-mamba"))


def _private(folder):
    """True if `folder` belongs to this user and neither group nor others may write to it."""
    st = os.stat(folder)
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def _built_here(target):
    """True if `target` is a library this cache built: owned by this user, writable by nobody
    else, and its SHA-256 the one recorded beside it when it was built."""
    try:
        st, recorded = target.stat(), target.with_suffix(".sha256").read_text().strip()
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & 0o022 and digest == recorded


def _usable_cache():
    """The cache folder, made private if new; a folder that others could write to is replaced by
    a private temporary one for this process (and a warning says how to fix it)."""
    cache = _cache_dir()
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    if _private(cache):
        return cache
    warnings.warn(f"{cache} (the C kernels' cache) is not yours or others can write to it, so "
                  "a library there could be planted; building in a private temporary folder "
                  f"instead (fix: chmod go-w {cache}, or set DM_SCAN_CPU_CACHE to a private "
                  "folder).", stacklevel=3)
    private = tempfile.mkdtemp(prefix="decision-mamba-")
    atexit.register(shutil.rmtree, private, ignore_errors=True)
    return Path(private)


def _machine_key():
    """-march=native code runs only on CPUs like this one: the cache name includes the CPU."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return f"{sys.platform}-{cpu}-{flags}"


class _Args(ctypes.Structure):
    """scan_cpu.c's ScanArgs: the inputs of one call (pointers, row strides, sizes)."""
    _fields_ = ([(name, ctypes.c_void_p) for name in ("u", "delta", "delta_bias", "A", "B", "C",
                                                      "D", "z")]
                + [(name, ctypes.c_int64) for name in ("su", "sdelta", "sb", "sc", "sz")]
                + [(name, ctypes.c_int) for name in ("L", "Dch", "N", "softplus")])


class _Grads(ctypes.Structure):
    """scan_cpu.c's ScanGrads: where the backward writes."""
    _fields_ = [(name, ctypes.c_void_p) for name in ("g_u", "g_delta", "g_z", "g_B", "g_C",
                                                     "g_A_rows", "g_D_rows", "g_bias_rows")]


class _StepArgs(ctypes.Structure):
    """scan_cpu.c's StepArgs: the weights of one Mamba block's recurrent step."""
    _fields_ = ([(name, ctypes.c_void_p) for name in ("conv_w", "conv_b", "x_proj", "dt_proj",
                                                      "dt_bias", "A", "D")]
                + [(name, ctypes.c_int) for name in ("Dch", "N", "R", "K")])


@functools.lru_cache(maxsize=None)
def _load():
    """Compile scan_cpu.c (once per source, compiler, flags and machine) and load it.
    Returns (library, None) or (None, reason)."""
    wanted = os.environ.get("CC")
    compiler = shutil.which(wanted) if wanted else (shutil.which("cc") or shutil.which("gcc"))
    if compiler is None:
        return None, (f"the compiler CC={wanted} was not found" if wanted else
                      "no C compiler found (install gcc or clang, or set CC)")
    source = SOURCE.read_bytes()
    try:
        cache = _usable_cache()
    except OSError as e:
        return None, (f"cannot use the cache folder {_cache_dir()} ({e}); set DM_SCAN_CPU_CACHE "
                      "to a writable folder")
    errors = []
    for flags in FLAG_SETS:
        key = hashlib.sha256(source + " ".join([compiler, *flags, _machine_key()]).encode())
        target = cache / f"scan_cpu-{key.hexdigest()[:16]}.so"
        if not _built_here(target):  # absent, planted or damaged: (re)build it
            try:
                with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                    built = Path(tmp) / target.name
                    cmd = [compiler, "-shared", "-fPIC", "-o", str(built), str(SOURCE), *flags]
                    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
                    if result.returncode != 0:
                        errors.append(f"`{' '.join(cmd)}` failed: {result.stderr.strip()[-300:]}")
                        continue
                    digest = Path(tmp) / "sha256"
                    digest.write_text(hashlib.sha256(built.read_bytes()).hexdigest() + "\n")
                    os.chmod(built, 0o755)  # whatever the umask: nobody else may write it
                    os.chmod(digest, 0o644)
                    os.replace(digest, target.with_suffix(".sha256"))
                    os.replace(built, target)  # atomic: a parallel process never sees half a file
            except subprocess.TimeoutExpired:
                errors.append(f"{compiler} took over 5 minutes")
                continue
            except OSError as e:
                errors.append(f"cannot build into {target.parent} ({e}); set DM_SCAN_CPU_CACHE "
                              "to a writable folder")
                continue
        if not _built_here(target):  # changed under us since it was built
            errors.append(f"{target} changed after it was built")
            continue
        try:
            lib = ctypes.CDLL(str(target))
        except OSError as e:
            errors.append(str(e))
            continue
        ptr, i32 = ctypes.c_void_p, ctypes.c_int
        lib.scan_forward.argtypes = [ctypes.POINTER(_Args), ptr, ptr, i32, i32]
        lib.scan_backward.argtypes = [ctypes.POINTER(_Args), ptr, ctypes.POINTER(_Grads), ptr,
                                      i32, i32]
        lib.scan_forward.restype = lib.scan_backward.restype = None
        i64 = ctypes.c_int64
        lib.conv_forward.argtypes = [ptr, i64, ptr, ptr, ptr] + [i32] * 5
        lib.conv_backward.argtypes = [ptr, i64] + [ptr] * 7 + [i32] * 5
        lib.conv_forward.restype = lib.conv_backward.restype = None
        lib.block_step.argtypes = [ctypes.POINTER(_StepArgs)] + [ptr] * 7 + [i32] * 3
        lib.block_step.restype = None
        lib.built_with = (compiler, flags, target)       # what `python scan_cpu.py` reports
        return lib, None
    return None, "; ".join(errors)


def available():
    """(True, None) if the C scan builds and loads here, else (False, the reason)."""
    lib, reason = _load()
    return lib is not None, reason


def _lib():
    lib, reason = _load()
    if lib is None:
        raise ScanCpuError(f"The C scan is unavailable: {reason}. Use the PyTorch scan "
                           "(scan_backend='torch' or DM_SCAN_BACKEND=torch).")
    return lib


def _on_cpu(x, what):
    """The C code reads memory through data_ptr(): tensors elsewhere get a clear error."""
    if x.device.type != "cpu":
        raise ScanCpuError(f"{what} takes CPU tensors (got {x.device.type}); on CUDA use the "
                           "triton or torch backend.")


def _threads(batch):
    return max(1, min(torch.get_num_threads(), batch))


def _rows(x):
    """x as fp32 (B, L, X) rows: (tensor, row stride). Views whose rows are evenly spaced, like
    the halves of in_proj's output, are used in place; anything else is copied once."""
    if x.dtype != torch.float32:
        x = x.float()
    b, l, w = x.shape
    s = x.stride()
    if s[2] != 1 or s[0] != l * s[1] or s[1] < w:
        x = x.contiguous()
        s = x.stride()
    return x, s[1]


def _ptr(x):
    return None if x is None else x.data_ptr()


def _vector(x):
    """A weight (A, D, a bias) as a contiguous fp32 tensor for the C code; None stays None."""
    return None if x is None else x.detach().float().contiguous()


class _SelectiveScanCpu(torch.autograd.Function):
    """The whole of selective_scan_ref (softplus, scan, D skip, silu(z) gate) in scan_cpu.c."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        batch, length, channels = u.shape
        d_state = A.shape[1]
        if d_state > MAX_D_STATE:
            raise ScanCpuError(f"The C scan supports d_state <= {MAX_D_STATE} (got {d_state}); "
                               "use scan_backend='torch'.")
        (u32, su), (delta32, sdelta), (B32, sb), (C32, sc) = map(_rows, (u, delta, B, C))
        z32, sz = _rows(z) if z is not None else (None, 0)
        A32, D32, bias32 = map(_vector, (A, D, delta_bias))
        zeros = u32.new_zeros(channels)                  # stands in for a missing D or bias
        args = _Args(u32.data_ptr(), delta32.data_ptr(), _ptr(bias32 if bias32 is not None
                                                              else zeros),
                     A32.data_ptr(), B32.data_ptr(), C32.data_ptr(),
                     _ptr(D32 if D32 is not None else zeros), _ptr(z32),
                     su, sdelta, sb, sc, sz, length, channels, d_state, int(delta_softplus))
        out = u32.new_empty(batch, length, channels)
        threads = _threads(batch)
        scratch = u32.new_empty(threads, length * channels)
        _lib().scan_forward(ctypes.byref(args), out.data_ptr(), scratch.data_ptr(), batch, threads)
        ctx.args = args                                  # pointers into the saved tensors
        ctx.dtypes = [x.dtype if x is not None else None
                      for x in (u, delta, A, B, C, D, z, delta_bias)]
        ctx.save_for_backward(u32, delta32, A32, B32, C32, D32, z32, bias32, zeros)
        return out.to(u.dtype)

    @staticmethod
    def backward(ctx, g_out):
        u32, delta32, A32, B32, C32, D32, z32, bias32, _ = ctx.saved_tensors  # keeps args valid
        args = ctx.args
        batch, length, channels, d_state = u32.shape[0], args.L, args.Dch, args.N
        g_out = g_out.float().contiguous()
        g_u, g_delta = (u32.new_empty(batch, length, channels) for _ in range(2))
        g_z = u32.new_empty(batch, length, channels) if z32 is not None else None
        g_B, g_C = u32.new_zeros(batch, length, d_state), u32.new_zeros(batch, length, d_state)
        g_A_rows = u32.new_empty(batch, channels, d_state)
        g_D_rows, g_bias_rows = u32.new_empty(batch, channels), u32.new_empty(batch, channels)
        grads = _Grads(*map(_ptr, (g_u, g_delta, g_z, g_B, g_C, g_A_rows, g_D_rows, g_bias_rows)))
        threads = _threads(batch)
        scratch = u32.new_empty(threads, 3 * length * channels + 2 * length * d_state)
        _lib().scan_backward(ctypes.byref(args), g_out.data_ptr(), ctypes.byref(grads),
                             scratch.data_ptr(), batch, threads)
        g_D = g_D_rows.sum(0) if D32 is not None else None
        g_bias = g_bias_rows.sum(0) if bias32 is not None else None
        out = (g_u, g_delta, g_A_rows.sum(0), g_B, g_C, g_D, g_z, g_bias)
        return (*(None if g is None else g.to(dt) for g, dt in zip(out, ctx.dtypes)), None)


class _CausalConvSiluCpu(torch.autograd.Function):
    """silu(causal depthwise conv1d(x) + bias) in scan_cpu.c; x (B, L, D), weight (D, K)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        batch, length, channels = x.shape
        x32, sx = _rows(x)
        w_t = weight.detach().float().t().contiguous()               # (K, D)
        bias32 = _vector(bias) if bias is not None else x32.new_zeros(channels)
        out = x32.new_empty(batch, length, channels)
        _lib().conv_forward(x32.data_ptr(), sx, w_t.data_ptr(), bias32.data_ptr(), out.data_ptr(),
                            batch, length, channels, w_t.shape[0], _threads(batch))
        ctx.sx, ctx.has_bias, ctx.dtypes = sx, bias is not None, (x.dtype, weight.dtype)
        ctx.save_for_backward(x32, w_t, bias32)
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx, g_out):
        x32, w_t, bias32 = ctx.saved_tensors
        batch, length, channels = x32.shape
        kernel = w_t.shape[0]
        g_out = g_out.float().contiguous()
        g_x = x32.new_empty(batch, length, channels)
        g_w_rows = x32.new_empty(batch, kernel, channels)
        g_bias_rows = x32.new_empty(batch, channels)
        threads = _threads(batch)
        scratch = x32.new_empty(threads, length * channels)
        _lib().conv_backward(x32.data_ptr(), ctx.sx, w_t.data_ptr(), bias32.data_ptr(),
                             g_out.data_ptr(), g_x.data_ptr(), g_w_rows.data_ptr(),
                             g_bias_rows.data_ptr(), scratch.data_ptr(), batch, length, channels,
                             kernel, threads)
        g_w = g_w_rows.sum(0).t().to(ctx.dtypes[1])                  # (D, K)
        g_bias = g_bias_rows.sum(0).to(ctx.dtypes[1]) if ctx.has_bias else None
        return g_x.to(ctx.dtypes[0]), g_w, g_bias


def causal_conv_silu_cpu(x, weight, bias=None):
    """silu(conv(x)) for Mamba's causal depthwise conv, channels last: x (B, L, D), weight
    (D, K) (nn.Conv1d's (D, 1, K) squeezed), bias (D,) or None. out_t = silu(bias +
    sum_k weight[:, k] * x_{t-(K-1)+k}), zeros before t = 0. CPU tensors, fp32 maths."""
    _on_cpu(x, "causal_conv_silu_cpu")
    _lib()
    return _CausalConvSiluCpu.apply(x, weight, bias)


def mamba_step_cpu(block, x, cache):
    """A Mamba block's recurrent step (same signature and results as ssm.mamba_step_ref, up to
    rounding) with its middle, conv to gate, in one C call: x (B, T, d_model), T new tokens of
    the mixer's input, on the CPU; cache (conv (B, D, K-1), ssm (B, D, N)), left untouched ->
    (y (B, T, d_model), new cache). Reads the block's weights by attribute. The C step computes
    no gradients and only fp32: with gradients wanted, or another dtype, scan_torch's step runs."""
    _on_cpu(x, "mamba_step_cpu")
    xz = F.linear(x, block.in_proj.weight, block.in_proj.bias)          # (B, T, 2 D)
    if xz.dtype != torch.float32 or xz.requires_grad:
        return mamba_step_torch(block, x, cache)
    # hidden 6: begin
    conv_state, ssm_state = cache
    batch, tokens, _ = xz.shape
    conv_weight = block.conv1d.weight.squeeze(1)                         # (D, K)
    channels, kernel = conv_weight.shape
    d_state, rank = block.A_log.shape[1], block.dt_proj.weight.shape[1]
    weights = [w.contiguous() for w in (conv_weight, block.x_proj.weight, block.dt_proj.weight,
                                        block.dt_proj.bias, -torch.exp(block.A_log), block.D)]
    conv_bias = (block.conv1d.bias.contiguous() if block.conv1d.bias is not None
                 else xz.new_zeros(channels))
    conv_w, x_proj_w, dt_proj_w, dt_bias, A, skip = weights
    args = _StepArgs(conv_w.data_ptr(), conv_bias.data_ptr(), x_proj_w.data_ptr(),
                     dt_proj_w.data_ptr(), dt_bias.data_ptr(), A.data_ptr(), skip.data_ptr(),
                     channels, d_state, rank, kernel)
    xz, conv_in, h_in = xz.contiguous(), conv_state.contiguous(), ssm_state.contiguous()
    y = xz.new_empty(batch, tokens, channels)
    conv_out, h_out = torch.empty_like(conv_in), torch.empty_like(h_in)
    threads = _threads(batch)
    scratch = xz.new_empty(threads, tokens * channels + rank + 2 * d_state + channels)
    _lib().block_step(ctypes.byref(args), xz.data_ptr(), conv_in.data_ptr(), h_in.data_ptr(),
                      y.data_ptr(), conv_out.data_ptr(), h_out.data_ptr(), scratch.data_ptr(),
                      batch, tokens, threads)
    return F.linear(y, block.out_proj.weight, block.out_proj.bias), (conv_out, h_out)
    # hidden 6: student
    # return mamba_step_torch(block, x, cache)  # the C step would give exercise 6 away
    # hidden 6: end


def selective_scan_cpu(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The selective scan through scan_cpu.c (same signature and semantics as
    ssm.selective_scan_ref). CPU tensors; computes in fp32, returns u's dtype."""
    _on_cpu(u, "selective_scan_cpu")
    _lib()
    return _SelectiveScanCpu.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


if __name__ == "__main__":
    # Smoke check: build, then one forward + backward against the chunked PyTorch scan (another
    # fast path; the tests compare both with the reference loop, ssm.selective_scan_ref).
    lib, reason = _load()
    if lib is None:
        sys.exit(f"The C kernels did not build: {reason}")
    compiler, flags, target = lib.built_with
    print(f"built with {compiler} {' '.join(flags)}\n  -> {target}")
    g = torch.Generator().manual_seed(0)
    b, l, d, n = 4, 50, 32, 16
    inputs = dict(u=torch.randn(b, l, d, generator=g), delta=torch.randn(b, l, d, generator=g),
                  A=-torch.rand(d, n, generator=g) - 0.1, B=torch.randn(b, l, n, generator=g),
                  C=torch.randn(b, l, n, generator=g), D=torch.randn(d, generator=g),
                  z=torch.randn(b, l, d, generator=g), delta_bias=torch.randn(d, generator=g))
    grad_out = torch.randn(b, l, d, generator=g)
    results = []
    for scan in (selective_scan_cpu, selective_scan_torch):
        leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
        y = scan(**leaves, delta_softplus=True)
        y.backward(grad_out)
        results.append([y.detach()] + [leaves[k].grad for k in inputs])
    worst = max(((c - r).abs().max() / r.abs().max().clamp(min=1)).item()
                for c, r in zip(*results))
    print(f"largest relative difference from the PyTorch scan (output and 8 gradients): "
          f"{worst:.1e}")
    sys.exit(0 if worst < 1e-4 else 1)
