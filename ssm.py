"""The Mamba backbone: selective state-space blocks stacked with RMSNorm residuals.

What is here, top to bottom:
  selective_scan_ref    the scan as a plain loop over time: slow, readable, the ground truth
  selective_scan_torch  the same scan in vectorised PyTorch: cache-sized chunks, an in-place
                        recurrence, and a hand-derived backward (a reverse scan); the portable path
  selective_scan        the one entry point: the Triton kernel on CUDA (scan_kernel.py), the C
                        kernel on the CPU (scan_cpu.c, where a C compiler builds it), else the
                        fast PyTorch scan
  RMSNorm, MambaBlock, MambaBackbone   with a recurrent step() for constant-cost inference
                        (MambaBlock also takes its conv and, when acting, its step from scan_cpu.c
                        on the C backend; the PyTorch code here is the definition they are tested
                        against)

References (ideas, credited in one line each):
  Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (block,
  parameter names and layout of the reference `mamba_simple.Mamba`, initialisation).
  mamba-minimal (J. Ma): the reference scan written as a loop a reader can follow.

Glossary (dimension letters as in the paper):
  B        batch size (also the input matrix B_t of the SSM; context tells which)
  L        sequence length (tokens)
  D        channels of the scan = d_inner = E * d_model (also the skip vector D)
  E        expand factor (d_inner = E * d_model)
  N        state size per channel (d_state)
  Δ        `delta`, the per-token, per-channel step size; softplus(dt_proj(x) + bias)
  dt_rank  rank of the low-rank projection that produces Δ (ceil(d_model / 16) for "auto")

The recurrence, per channel d and state index n (A is negative, so exp(Δ A) is in (0, 1)):
  h_t = exp(Δ_t A) * h_{t-1} + Δ_t B_t u_t,    y_t = <h_t, C_t> + D u_t,    y_t *= silu(z_t)
"""
import collections
import functools
import math
import os
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

SCAN_BACKENDS = ("auto", "triton", "c", "torch", "ref")


class SSMError(ValueError):
    """A usage error of this module; the message says what to do."""


# ---------------------------------------------------------------------------------------------
# Selective scan: reference loop
# ---------------------------------------------------------------------------------------------

def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Selective scan, one time step at a time. Shapes: u, delta, z (B, L, D); A (D, N);
    B, C (B, L, N); D, delta_bias (D,). Computes in fp32, returns y (B, L, D) in u's dtype."""
    dtype_in = u.dtype
    u, delta, A, B, C = u.float(), delta.float(), A.float(), B.float(), C.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()
    if delta_softplus:
        delta = F.softplus(delta)
    batch, length, channels = u.shape
    h = u.new_zeros(batch, channels, A.shape[1])                         # (B, D, N) fp32 state
    ys = []
    for t in range(length):
        decay = torch.exp(delta[:, t, :, None] * A)                      # (B, D, N)
        drive = delta[:, t, :, None] * B[:, t, None, :] * u[:, t, :, None]  # (B, D, N)
        h = decay * h + drive
        ys.append((h * C[:, t, None, :]).sum(-1))                        # (B, D)
    y = torch.stack(ys, dim=1)                                           # (B, L, D)
    if D is not None:
        y = y + u * D.float()
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype_in)


# ---------------------------------------------------------------------------------------------
# Selective scan: fast PyTorch path with a hand-written backward
# ---------------------------------------------------------------------------------------------

# fp32 elements per (T, B, N, D) work buffer of the fast scan: 2 MiB, so the three buffers of the
# backward stay in cache (on a 512 KiB-L2 / 32 MiB-L3 CPU, 2 MiB beat 1 and 4 MiB).
CHUNK_ELEMS = 2 ** 19
LOG2_E = 1.0 / math.log(2.0)


def _scan_chunk(h0, delta, delta_u, B, A2_t, decay_buf, states_buf):
    """States of one chunk of T steps, written into the work buffers (no allocation), time first.
    h0 (B, N, D) is the state before the chunk; delta, delta_u (T, B, D); B (T, B, N);
    A2_t (N, D) is A * log2(e), transposed (exp2 is cheaper than exp on the CPU).
    Returns decay = exp(Δ A) and states h, both (T, B, N, D) views of the buffers."""
    steps = delta.shape[0]
    decay = torch.mul(delta.unsqueeze(2), A2_t, out=decay_buf[:steps]).exp2_()  # (T, B, N, D)
    h = torch.mul(delta_u.unsqueeze(2), B.unsqueeze(3), out=states_buf[:steps])  # drive
    h[0].addcmul_(decay[0], h0)
    for t in range(1, steps):                 # the only loop: h_t = decay_t * h_{t-1} + drive_t
        h[t].addcmul_(decay[t], h[t - 1])
    return decay, h


def _time_first(x):
    """(B, L, ...) -> fp32 (L, B, ...), contiguous, so that a time step is one block of memory.
    One copy that also casts; it can alias x when B or L is 1, so it is never modified in place."""
    return x.transpose(0, 1).to(torch.float32, memory_format=torch.contiguous_format)


class _SelectiveScanFn(torch.autograd.Function):
    """The scan in chunks of T time steps. Inside the Function every tensor is laid out time
    first, (L, B, D) and states (T, B, N, D): a chunk and a step are contiguous blocks, sums over
    N or D run over long axes, and elementwise ops never mix layouts (mixed-stride ops are several
    times slower on the CPU). Per chunk, exp(Δ A) and the drive Δ B u are made by one vectorised op
    each into reused buffers that fit in the CPU cache, and only the recurrence loops over time (in
    place, no autograd graph). Only the state entering each chunk is saved; backward recomputes a
    chunk's states from it, then runs the reverse scan over the chunk. (Saving every state and
    exp(Δ A) instead was measured 1.5x slower on the CPU: fresh (L, B, N, D) tensors of 60+ MB
    cost page faults and memory traffic that the in-cache recomputation does not.)

    Backward (g_x is the gradient of the loss with respect to x; decay_t = exp(Δ_t A)):
      g_h_t  = C_t g_y_t + decay_{t+1} * g_h_{t+1}         the same recurrence, backwards in time
      g_C_t  = sum_D h_t g_y_t,   g_B_t = sum_D g_h_t Δ_t u_t,   g_(Δu)_t = sum_N g_h_t B_t
      e_t    = g_h_t * h_{t-1} * decay_t   (gradient of Δ_t A)  ->  g_Δ_t += sum_N e_t A,
      g_A    = sum_{B,L} e_t Δ_t
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_len):
        batch, length, channels = u.shape
        d_state = A.shape[1]
        u_tf, delta_raw = _time_first(u), _time_first(delta)             # (L, B, D) fp32
        if delta_bias is not None:
            delta_raw = delta_raw + delta_bias.float()
        # softplus is slow on the CPU (log1p of exp): computed once here and saved for backward.
        delta_tf = F.softplus(delta_raw) if delta_softplus else delta_raw  # (L, B, D)
        delta_u = delta_tf * u_tf                                        # (L, B, D)
        A_t = A.float().t().contiguous()                                 # (N, D)
        B_tf, C_tf = _time_first(B), _time_first(C)                      # (L, B, N)
        steps = min(length, chunk_len or max(1, CHUNK_ELEMS // (batch * d_state * channels)))
        starts = range(0, length, steps)
        decay_buf = u_tf.new_empty(steps, batch, d_state, channels)      # (T, B, N, D)
        states_buf = torch.empty_like(decay_buf)
        h0 = u_tf.new_empty(len(starts), batch, d_state, channels)       # state entering a chunk
        h0[0].zero_()
        y_tf = u_tf.new_empty(length, batch, 1, channels)                # (L, B, 1, D)
        A2_t = A_t * LOG2_E
        for i, t0 in enumerate(starts):
            t1 = min(t0 + steps, length)
            _, h = _scan_chunk(h0[i], delta_tf[t0:t1], delta_u[t0:t1], B_tf[t0:t1], A2_t,
                               decay_buf, states_buf)
            # Sum over N. A matmul with out= is never autocast, so this stays in fp32.
            torch.matmul(C_tf[t0:t1].unsqueeze(2), h, out=y_tf[t0:t1])
            if i + 1 < len(starts):
                h0[i + 1] = h[-1]
        y_tf = y_tf.squeeze(2)                                           # (L, B, D)
        if D is not None:
            y_tf.addcmul_(u_tf, D.float())
        z_tf = sig_z = None
        out = y_tf
        if z is not None:
            z_tf = _time_first(z)
            sig_z = torch.sigmoid(z_tf)                                  # saved for backward
            out = y_tf * z_tf * sig_z                                    # y * silu(z)
        ctx.delta_softplus, ctx.steps = delta_softplus, steps
        ctx.has = (D is not None, z is not None, delta_bias is not None)
        ctx.dtypes = [x.dtype if x is not None else None
                      for x in (u, delta, A, B, C, D, z, delta_bias)]
        ctx.save_for_backward(u_tf, delta_raw, delta_tf, delta_u, A_t, B_tf, C_tf, D, z_tf,
                              sig_z, h0, y_tf)
        return out.transpose(0, 1).to(u.dtype).contiguous()             # (B, L, D)

    @staticmethod
    def backward(ctx, g_out):
        (u_tf, delta_raw, delta_tf, delta_u, A_t, B_tf, C_tf, D, z_tf, sig, h0,
         y_tf) = ctx.saved_tensors
        has_D, has_z, has_bias = ctx.has
        length, batch, d_state, channels = u_tf.shape[0], *h0.shape[1:]
        steps = ctx.steps
        g_y = _time_first(g_out)                                         # (L, B, D)
        g_z = None
        if has_z:
            g_z = g_y * y_tf * sig * (1 + z_tf * (1 - sig))              # d silu(z) / dz
            g_y = g_y * z_tf * sig                                       # g_y * silu(z)
        g_D = (g_y * u_tf).sum((0, 1)) if has_D else None
        decay_buf = u_tf.new_empty(steps, batch, d_state, channels)      # (T, B, N, D)
        states_buf, g_h_buf = torch.empty_like(decay_buf), torch.empty_like(decay_buf)
        g_B, g_C = torch.empty_like(B_tf), torch.empty_like(C_tf)        # (L, B, N)
        g_du, g_delta = torch.empty_like(delta_tf), torch.empty_like(delta_tf)  # (L, B, D)
        g_A_acc = u_tf.new_zeros(batch, d_state, channels)               # g_A before sum over B
        carry = u_tf.new_zeros(batch, d_state, channels)                 # decay_{t+1} g_h_{t+1}
        A2_t = A_t * LOG2_E
        starts = range(0, length, steps)
        for i in reversed(range(len(starts))):
            t0 = starts[i]
            t1 = min(t0 + steps, length)
            decay, h = _scan_chunk(h0[i], delta_tf[t0:t1], delta_u[t0:t1], B_tf[t0:t1],
                                   A2_t, decay_buf, states_buf)
            g_y_c, scratch = g_y[t0:t1].unsqueeze(2), g_h_buf[:t1 - t0]  # (T, B, 1, D)
            # Sums over D as multiply-then-sum (faster than a batched matrix-vector product on
            # the CPU); each product goes into a buffer that is free at that moment, each sum
            # straight into its slice of the result.
            torch.sum(torch.mul(h, g_y_c, out=scratch), -1, out=g_C[t0:t1])  # (T, B, N)
            g_h = torch.mul(g_y_c, C_tf[t0:t1].unsqueeze(3), out=scratch)  # (T, B, N, D)
            g_h[-1] += carry
            for t in range(t1 - t0 - 2, -1, -1):                         # reverse scan
                g_h[t].addcmul_(decay[t + 1], g_h[t + 1])
            torch.mul(decay[0], g_h[0], out=carry)
            torch.matmul(B_tf[t0:t1].unsqueeze(2), g_h, out=g_du[t0:t1].unsqueeze(2))  # sum N
            e = decay.mul_(g_h)                                          # decay -> e, in place
            e[1:].mul_(h[:-1])
            e[0].mul_(h0[i])
            torch.sum(torch.mul(g_h, delta_u[t0:t1].unsqueeze(2), out=h), -1, out=g_B[t0:t1])
            torch.sum(torch.mul(e, A_t, out=g_h), 2, out=g_delta[t0:t1])  # (T, B, D)
            for t in range(t1 - t0):                                     # sum over B at the end
                g_A_acc.addcmul_(e[t], delta_tf[t0 + t].unsqueeze(1))
        g_u = g_du * delta_tf                                            # (L, B, D)
        if has_D:
            g_u.addcmul_(g_y, D.float())
        g_delta.addcmul_(g_du, u_tf)
        if ctx.delta_softplus:
            g_delta.mul_(torch.sigmoid(delta_raw))
        g_bias = g_delta.sum((0, 1)) if has_bias else None
        grads = (g_u, g_delta, g_A_acc.sum(0).t(), g_B, g_C, g_D, g_z, g_bias)
        time_first = (True, True, False, True, True, False, True, False)
        return (*(None if g is None else (g.transpose(0, 1) if tf else g).to(dt).contiguous()
                  for g, dt, tf in zip(grads, ctx.dtypes, time_first)), None, None)


def selective_scan_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         *, chunk_len=None):
    """Fast PyTorch selective scan (same signature and semantics as selective_scan_ref).
    chunk_len: time steps per chunk (default: as many as fit CHUNK_ELEMS); results do not depend
    on it beyond rounding."""
    return _SelectiveScanFn.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_len)


# ---------------------------------------------------------------------------------------------
# Selective scan: the one entry point
# ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _load_triton_scan():
    """Import the Triton kernel lazily (once), so the project runs where triton is missing.
    Returns (function, None) or (None, reason)."""
    try:
        import scan_kernel
    except ImportError as e:
        return None, str(e)
    return scan_kernel.selective_scan_triton, None


def _triton_scan(u):
    if not u.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise SSMError("The triton scan needs CUDA tensors (or TRITON_INTERPRET=1 set before "
                       "triton is imported); use backend='torch' on the CPU.")
    fn, reason = _load_triton_scan()
    if fn is None:
        raise SSMError(f"The triton scan is unavailable ({reason}); install triton or use "
                       "backend='torch'.")
    return fn


# The C backend's three kernels (scan_cpu.py): the scan, the conv + SiLU, the recurrent step.
CKernels = collections.namedtuple("CKernels", "scan conv step")


@functools.lru_cache(maxsize=None)
def _load_c_scan():
    """Build and load the C kernels (scan_cpu.c) once. Returns (CKernels, None) or
    (None, reason)."""
    import scan_cpu
    ok, reason = scan_cpu.available()
    if not ok:
        warnings.warn(f"The C scan for the CPU is unavailable ({reason}); Mamba runs on the "
                      "PyTorch scan, about 3x slower to train.", stacklevel=2)
        return None, reason
    return CKernels(scan_cpu.selective_scan_cpu, scan_cpu.causal_conv_silu_cpu,
                    scan_cpu.mamba_step_cpu), None


def _c_kernels(u):
    """The C backend's CKernels, or a clear error."""
    if u.is_cuda:
        raise SSMError("The c scan runs on the CPU; use backend='triton' or 'torch' for CUDA "
                       "tensors.")
    kernels, reason = _load_c_scan()
    if kernels is None:
        raise SSMError(f"The c scan is unavailable ({reason}); use backend='torch'.")
    return kernels


def _resolve_backend(backend, u, d_state=None):
    """The backend name to run: the argument, else DM_SCAN_BACKEND, else picked by device:
    triton on CUDA when it imports, the C scan on the CPU when it compiles (and d_state is within
    its limit), else torch."""
    if backend in (None, "auto"):
        backend = os.environ.get("DM_SCAN_BACKEND") or "auto"
    if backend not in SCAN_BACKENDS:
        raise SSMError(f"Unknown scan backend {backend!r} (from the argument or DM_SCAN_BACKEND); "
                       f"choose one of {', '.join(SCAN_BACKENDS)}.")
    if backend == "auto":
        if u.is_cuda:
            return "triton" if _load_triton_scan()[0] is not None else "torch"
        import scan_cpu
        fits = d_state is None or d_state <= scan_cpu.MAX_D_STATE
        return "c" if fits and _load_c_scan()[0] is not None else "torch"
    return backend


def default_scan_backend(device, d_state=None):
    """The scan backend selective_scan picks for tensors on `device` when none is named
    (DM_SCAN_BACKEND included): what a run records and a benchmark reports."""
    return _resolve_backend(None, torch.zeros(1, device=device), d_state)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   backend=None):
    """Selective scan by the fastest available path. backend: None/"auto" (env var
    DM_SCAN_BACKEND if set, else triton on CUDA when it imports, the C scan on the CPU when a C
    compiler builds it, else torch), "triton", "c", "torch" or "ref"."""
    name = _resolve_backend(backend, u, A.shape[1])
    fn = {"torch": selective_scan_torch, "ref": selective_scan_ref}.get(name)
    if fn is None:
        fn = _triton_scan(u) if name == "triton" else _c_kernels(u).scan
    return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


# ---------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------

class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in fp32 (no mean subtraction, no bias)."""

    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):                  # one fused op; the casts are no-ops for fp32
        return F.rms_norm(x.float(), self.weight.shape, self.weight.float(), self.eps).to(x.dtype)


class MambaBlock(nn.Module):
    """One Mamba mixer: in_proj -> (x, z); causal depthwise conv + SiLU on x; x_proj -> (dt, B, C);
    Δ = softplus(dt_proj(dt)); selective scan with skip D, gated by silu(z); out_proj.

    Parameter names, shapes and split orders follow the reference block, so its state dict loads:
    in_proj (2*d_inner, d_model) [x; z], conv1d (d_inner, 1, d_conv) + bias, x_proj
    (dt_rank + 2*d_state, d_inner) [dt; B; C], dt_proj (d_inner, dt_rank) + bias,
    A_log (d_inner, d_state), D (d_inner,), out_proj (d_model, d_inner).
    """

    def __init__(self, d_model, d_state=16, d_conv=4, expand=2, dt_rank="auto", dt_min=1e-3,
                 dt_max=1e-1, dt_init_floor=1e-4, dt_scale=1.0, conv_bias=True, bias=False,
                 scan_backend=None):
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
        self.scan_backend = scan_backend
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner,
                                padding=d_conv - 1, bias=conv_bias)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

        # Δ starts small and varied: dt_proj.weight ~ U(+-dt_rank^-0.5 * dt_scale) and the bias
        # is softplus^-1(dt) with dt log-uniform in [dt_min, dt_max] (floored), so softplus(bias)
        # = dt. `_no_reinit` tells model-wide init code to leave this bias alone.
        std = self.dt_rank ** -0.5 * dt_scale
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))   # inverse softplus
        self.dt_proj.bias._no_reinit = True
        # S4D-real: A[d, n] = -(n + 1) for every channel; stored as log(-A) to stay negative.
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))                          # (d_inner, N)
        self.D = nn.Parameter(torch.ones(self.d_inner))                  # (d_inner,)
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True

    def _ssm_inputs(self, x):
        """x (..., d_inner) after conv+SiLU -> (dt before bias (..., d_inner), B, C (..., N))."""
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        # dt_proj's bias goes into the scan. The weight is multiplied as a contiguous (rank, D)
        # copy: its gradient is then dt^T g, a (rank, D) result, which the CPU computes faster
        # than the (D, rank) g^T dt that a transposed view's gradient asks for (forward + weight
        # gradient 2.0-2.2x faster: benchmarks/bench_cpu_ops.py, results/bench-cpu-ops-*.json).
        return dt @ self.dt_proj.weight.t().contiguous(), B, C

    def _causal_conv(self, x):
        """conv1d's depthwise causal conv, x (B, L, d_inner) -> (B, L, d_inner), written as
        d_conv shifted multiply-adds over the input padded on the left with d_conv - 1 zeros:
        out_t = bias + sum_k w_k x_{t-(d_conv-1)+k}. On the CPU this is faster than nn.Conv1d on
        transposed views (forward and backward), and it keeps the channels-last layout that the
        next ops want."""
        length = x.shape[1]
        w = self.conv1d.weight.squeeze(1).t()                            # (d_conv, d_inner)
        x_pad = F.pad(x, (0, 0, self.d_conv - 1, 0))                     # (B, L+d_conv-1, d_inner)
        out = x_pad[:, :length] * w[0]
        if self.conv1d.bias is not None:
            out = out + self.conv1d.bias
        for k in range(1, self.d_conv):
            out = torch.addcmul(out, x_pad[:, k:k + length], w[k])
        return out

    def forward(self, x, rows=None):                                     # x: (B, L, d_model)
        """rows: token positions (index or slice) whose outputs are returned (None = all);
        the scan runs over every token either way, only out_proj is spared."""
        x, z = self.in_proj(x).chunk(2, dim=-1)                          # (B, L, d_inner) each
        backend = _resolve_backend(self.scan_backend, x, self.d_state)
        if backend == "c":     # the C path has the conv too: one pass instead of a dozen ops
            x = _c_kernels(x).conv(x, self.conv1d.weight.squeeze(1), self.conv1d.bias)
        else:
            x = F.silu(self._causal_conv(x))                             # (B, L, d_inner)
        delta, B, C = self._ssm_inputs(x)
        A = -torch.exp(self.A_log.float())                               # (d_inner, N)
        y = selective_scan(x, delta, A, B, C, self.D.float(), z,
                           delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
                           backend=backend)
        return self.out_proj(y if rows is None else y[:, rows])         # (B, L or L_rows, d_model)

    def _c_step_applies(self, xz):
        """The C step serves inference on the CPU in fp32 with the C backend; anything else
        (a GPU, bf16 weights, gradients wanted) runs the PyTorch step."""
        if xz.is_cuda or xz.dtype != torch.float32 or (torch.is_grad_enabled()
                                                       and xz.requires_grad):
            return False
        return _resolve_backend(self.scan_backend, xz) == "c"

    def init_cache(self, batch, device):
        """Empty recurrent state: (conv, ssm). conv (B, d_inner, d_conv-1) holds the last
        d_conv-1 conv inputs (the reference keeps d_conv slots and shifts before use; keeping
        only the past makes "window = past + new input" read directly). ssm (B, d_inner, N) is
        fp32 whatever the weights' dtype, like the scan's state."""
        conv = torch.zeros(batch, self.d_inner, self.d_conv - 1, device=device,
                           dtype=self.in_proj.weight.dtype)
        ssm = torch.zeros(batch, self.d_inner, self.d_state, device=device, dtype=torch.float32)
        return conv, ssm

    def step(self, x, cache):
        """Continue the sequence held in `cache` with T new tokens: x (B, T, d_model), or one token
        (B, d_model) -> (y of the same shape, new cache); the input cache is not modified. Equals
        forward()'s outputs at those positions when the sequence is fed from its start.

        Feeding a few tokens in one call costs about what one token costs (at small batch an op
        costs about its launch overhead, whatever its size), so the DecisionModel feeds a_{t-1},
        R_t, s_t together: one pass through the layers per env step instead of three. For the
        same reason the conv is one batched matrix product and the projections skip the module
        call (F.linear on their weights)."""
        one_token = x.dim() == 2
        if one_token:
            x = x.unsqueeze(1)                                           # (B, 1, d_model)
        conv_state, h = cache                              # (B, d_inner, d_conv-1), (B, d_inner, N)
        tokens, dtype = x.shape[1], x.dtype
        xz = F.linear(x, self.in_proj.weight, self.in_proj.bias)        # (B, T, 2 * d_inner)
        if self._c_step_applies(xz):   # the same maths as below, in one C call (scan_cpu.c)
            y, cache = _c_kernels(x).step(xz, conv_state, h, self.conv1d.weight.squeeze(1),
                                        self.conv1d.bias, self.x_proj.weight, self.dt_proj.weight,
                                        self.dt_proj.bias, self.A_log, self.D)
            y = F.linear(y, self.out_proj.weight, self.out_proj.bias)    # (B, T, d_model)
            return (y.squeeze(1) if one_token else y), cache
        x, z = xz.chunk(2, dim=-1)                                       # (B, T, d_inner) each
        window = torch.cat([conv_state, x.transpose(1, 2)], dim=-1)     # (B, d_inner, d_conv-1+T)
        taps = window.unfold(-1, self.d_conv, 1)                        # (B, d_inner, T, d_conv)
        x = taps @ self.conv1d.weight.transpose(1, 2)                    # (B, d_inner, T, 1)
        if self.conv1d.bias is not None:
            x = x + self.conv1d.bias[:, None, None]
        x = F.silu(x.squeeze(-1).transpose(1, 2))                        # (B, T, d_inner)
        delta, B, C = (t.float() for t in self._ssm_inputs(x))
        delta = F.softplus(delta + self.dt_proj.bias.float())           # (B, T, d_inner)
        x = x.float()
        A = -torch.exp(self.A_log.float())                               # (d_inner, N)
        decay = torch.exp(delta.unsqueeze(-1) * A)                       # (B, T, d_inner, N)
        states = (delta * x).unsqueeze(-1) * B.unsqueeze(2)   # drive Δ B u, (B, T, d_inner, N)
        for t in range(tokens):                # states become h_t = decay_t * h_{t-1} + drive_t
            h = states[:, t].addcmul_(decay[:, t], h)                    # (B, d_inner, N)
        y = (states @ C.unsqueeze(-1)).squeeze(-1)                      # (B, T, d_inner)
        y = torch.addcmul(y, x, self.D.float()).mul_(F.silu(z.float())).to(dtype)
        y = F.linear(y, self.out_proj.weight, self.out_proj.bias)        # (B, T, d_model)
        return (y.squeeze(1) if one_token else y), (window[..., tokens:], h)


class ResidualBlock(nn.Module):
    """x + dropout(mixer(norm(x))), named like the reference's Block (`norm`, `mixer`) so a
    reference backbone's `layers.{i}.norm.*` / `layers.{i}.mixer.*` weights load too."""

    def __init__(self, d_model, dropout=0.0, **mixer_kwargs):
        super().__init__()
        self.norm = RMSNorm(d_model)
        self.mixer = MambaBlock(d_model, **mixer_kwargs)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, rows=None):                                     # (B, L, d_model)
        return (x if rows is None else x[:, rows]) + self.drop(self.mixer(self.norm(x), rows))

    def step(self, x, cache):                                   # (B, d_model) or (B, T, d_model)
        y, cache = self.mixer.step(self.norm(x), cache)
        return x + (self.drop(y) if self.training else y), cache


class MambaBackbone(nn.Module):
    """n_layer residual blocks x + dropout(MambaBlock(RMSNorm(x))). No final norm: the
    DecisionModel applies its own. (B, L, d_model) -> (B, L, d_model), causal."""

    def __init__(self, d_model, n_layer, d_state=16, d_conv=4, expand=2, dropout=0.0,
                 scan_backend=None):
        super().__init__()
        self.layers = nn.ModuleList(
            ResidualBlock(d_model, dropout, d_state=d_state, d_conv=d_conv, expand=expand,
                          scan_backend=scan_backend) for _ in range(n_layer))
        # Keep the residual stream's variance from growing with depth (GPT-2 / reference Mamba).
        with torch.no_grad():
            for layer in self.layers:
                layer.mixer.out_proj.weight /= math.sqrt(n_layer)

    def forward(self, x, padding_mask=None, rows=None):
        """padding_mask (B, L) is accepted and ignored: padding sits on the RIGHT and every layer is
        causal, so padded tokens can only change outputs at padded positions, which the loss
        masks (left padding would need the inputs zeroed and a reset state).
        rows: token positions whose outputs are returned, (B, L_rows, d_model) (None = all)."""
        for i, layer in enumerate(self.layers):
            x = layer(x, rows if i == len(self.layers) - 1 else None)
        return x

    def init_cache(self, batch, device):
        """One (conv, ssm) cache per layer."""
        return [layer.mixer.init_cache(batch, device) for layer in self.layers]

    def step(self, x, cache):
        """One token x (B, d_model), or T tokens (B, T, d_model), continuing the sequence in `cache`
        -> (y of the same shape, new cache); the input cache is not modified."""
        new_cache = []
        for layer, layer_cache in zip(self.layers, cache):
            x, layer_cache = layer.step(x, layer_cache)
            new_cache.append(layer_cache)
        return x, new_cache


if __name__ == "__main__":
    torch.manual_seed(0)
    for d_model, n_layer in ((128, 4), (128, 6)):
        net = MambaBackbone(d_model, n_layer).eval()
        per_block = sum(p.numel() for p in net.layers[0].parameters())
        total = sum(p.numel() for p in net.parameters())
        print(f"MambaBackbone(d_model={d_model}, n_layer={n_layer}): {total:,} parameters "
              f"({per_block:,} per residual block)")
    x = torch.randn(2, 12, 128)
    y = net(x)
    cache, steps = net.init_cache(2, x.device), []
    for t in range(x.shape[1]):
        y_t, cache = net.step(x[:, t], cache)
        steps.append(y_t)
    err = (torch.stack(steps, 1) - y).abs().max().item()
    print(f"forward {tuple(x.shape)} -> {tuple(y.shape)}; step-by-step max |diff| = {err:.2e}")
