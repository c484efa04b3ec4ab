"""The selective scan in vectorised PyTorch with a hand-written backward: the portable fast path.
Also the block's causal conv + SiLU as K shifted multiply-adds (causal_conv_silu_torch, same
signature and semantics as ssm.causal_conv_silu_ref, the plain conv1d), and the block's recurrent
step written for acting (mamba_step_torch, as ssm.mamba_step_ref; it reads the block's weights by
attribute and does not import ssm.py).

selective_scan_torch has the signature and semantics of ssm.selective_scan_ref (the loop that
defines the scan):

    h_t = exp(Δ_t A) * h_{t-1} + Δ_t B_t u_t,    y_t = <h_t, C_t> + D u_t,    y_t *= silu(z_t)

It runs wherever PyTorch runs (CPU, CUDA, any dtype in, fp32 state), and is what ssm.py picks when
neither the Triton kernel (scan_kernel.py, CUDA) nor the C kernels (scan_cpu.c, CPU) are there.

The algorithm. Autograd through the loop would record a dozen ops per time step and keep every
(B, D, N) state; instead one autograd Function does the work in chunks of T time steps:

    forward:  for each chunk:                       (every tensor time first, see below)
                  decay = exp(Δ A), drive = Δ B u    one vectorised op each, (T, B, N, D)
                  h_t = decay_t * h_{t-1} + drive_t  the only loop, in place, no graph
                  y   = sum_N C_t h_t                one matmul
              save only the state entering each chunk
    backward: for each chunk, last first:
                  recompute decay and h from the saved state (as above)
                  g_h_t = C_t g_y_t + decay_{t+1} * g_h_{t+1}     the reverse scan
                  the input gradients: products of (h, g_h, inputs) summed over N or D

Backward in full (g_x is the gradient of the loss with respect to x; decay_t = exp(Δ_t A)):

    g_h_t  = C_t g_y_t + decay_{t+1} * g_h_{t+1}         the same recurrence, backwards in time
    g_C_t  = sum_D h_t g_y_t,   g_B_t = sum_D g_h_t Δ_t u_t,   g_(Δu)_t = sum_N g_h_t B_t
    e_t    = g_h_t * h_{t-1} * decay_t   (gradient of Δ_t A)  ->  g_Δ_t += sum_N e_t A,
    g_A    = sum_{B,L} e_t Δ_t

Why it is laid out this way (all measured on the CPU, where this path matters most):
  - Time first: inside the Function every tensor is (L, B, D) and the states (T, B, N, D), so a
    chunk and a step are contiguous blocks, sums over N or D run over long axes, and elementwise
    ops never mix layouts (mixed-stride ops are several times slower on the CPU).
  - Chunks sized to the cache (CHUNK_ELEMS): exp(Δ A) and the drive go into buffers that are
    reused from chunk to chunk and stay in cache.
  - Recompute instead of save: saving every state and exp(Δ A) was 1.5x slower, because fresh
    (L, B, N, D) tensors of 60+ MB cost page faults and memory traffic that the in-cache
    recomputation does not.
  - exp2 with A pre-multiplied by log2(e): exp2 is cheaper than exp on the CPU.

Glossary (as in ssm.py): B batch (also the SSM input matrix B_t), L sequence length, D channels
(also the skip vector D), N state size, Δ `delta`, T time steps per chunk.

References (ideas, credited in one line each):
  Gu & Dao 2023, "Mamba": the scan's semantics and the recompute-in-backward design.
"""
import math

import torch
import torch.nn.functional as F

# fp32 elements per (T, B, N, D) work buffer: 2 MiB, so the three buffers of the backward stay in
# cache (on a 512 KiB-L2 / 32 MiB-L3 CPU, 2 MiB beat 1 and 4 MiB).
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
    """The scan in chunks of T time steps, time first; the module docstring gives the plan and
    the backward's formulas."""

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
        # The scan's own gradients, from g_y (L, B, D), the gradient of y_t = <h_t, C_t>: g_u
        # and g_delta (L, B, D) with respect to u and Δ (Δ after bias and softplus), g_A (D, N),
        # g_B and g_C (L, B, N), all fp32, time first, new tensors (the lines after the region
        # change g_u and g_delta in place). The forward saved h0[i], the state entering chunk i
        # (chunks of `steps` time steps); _scan_chunk recomputes a chunk's decays and states.
        # exercise 5: begin
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
        g_delta.addcmul_(g_du, u_tf)
        g_A = g_A_acc.sum(0).t()                                         # (D, N)
        # exercise 5: end
        if has_D:
            g_u.addcmul_(g_y, D.float())                                 # y_t += D u_t
        if ctx.delta_softplus:
            g_delta.mul_(torch.sigmoid(delta_raw))                       # softplus' = sigmoid
        g_bias = g_delta.sum((0, 1)) if has_bias else None
        grads = (g_u, g_delta, g_A, g_B, g_C, g_D, g_z, g_bias)
        time_first = (True, True, False, True, True, False, True, False)
        return (*(None if g is None else (g.transpose(0, 1) if tf else g).to(dt).contiguous()
                  for g, dt, tf in zip(grads, ctx.dtypes, time_first)), None, None)


def selective_scan_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         *, chunk_len=None):
    """Fast PyTorch selective scan (same signature and semantics as ssm.selective_scan_ref):
    u, delta, z (B, L, D); A (D, N); B, C (B, L, N); D, delta_bias (D,) -> y (B, L, D) in u's
    dtype, state in fp32. chunk_len: time steps per chunk (default: as many as fit CHUNK_ELEMS);
    results do not depend on it beyond rounding."""
    return _SelectiveScanFn.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_len)


def causal_conv_silu_torch(x, weight, bias=None):
    """silu(causal depthwise conv(x)) as ssm.causal_conv_silu_ref computes it: x (B, L, D),
    weight (D, K), bias (D,) or None -> (B, L, D) in x's dtype. out_t = silu(bias + sum_k
    weight[:, k] x_{t-(K-1)+k}), zeros before t = 0. Written as K shifted multiply-adds over x
    padded on the left: on the CPU faster than conv1d on transposed views (forward and backward),
    and it keeps the channels-last layout that the next ops want. Under autocast x is bf16 while
    the weights stay fp32; the sums are then fp32 and the output is cast back to x's dtype."""
    length, kernel = x.shape[1], weight.shape[1]
    w = weight.t()                                                       # (K, D)
    x_pad = F.pad(x, (0, 0, kernel - 1, 0))                              # (B, L+K-1, D)
    out = x_pad[:, :length] * w[0]
    if bias is not None:
        out = out + bias
    for k in range(1, kernel):
        out = torch.addcmul(out, x_pad[:, k:k + length], w[k])
    return F.silu(out).to(x.dtype)                                      # (B, L, D)


def mamba_step_torch(block, x, cache):
    """A Mamba block's recurrent step (same signature and results as ssm.mamba_step_ref, up to
    rounding): x (B, T, d_model), T new tokens of the mixer's input; cache (conv (B, D, K-1),
    ssm (B, D, N)), left untouched -> (y (B, T, d_model) in the weights' dtype, new cache).
    Reads the block's weights by attribute. Written for acting, a few tokens at small batch: the
    projections as F.linear on the weights (no module call), the conv as one batched product of
    the unfolded windows (B, D, T, K) with the weights (D, K, 1), the state updated in place in
    the buffer of the drives, the skip and the gate fused into addcmul and mul_."""
    # hidden 6: begin
    conv_state, ssm_state = cache
    conv_weight, conv_bias = block.conv1d.weight.squeeze(1), block.conv1d.bias  # (D, K), (D,)
    kernel, rank, d_state = conv_weight.shape[1], block.dt_proj.weight.shape[1], block.d_state
    xz = F.linear(x, block.in_proj.weight, block.in_proj.bias)          # (B, T, 2 D)
    tokens, dtype = xz.shape[1], xz.dtype
    x, z = xz.chunk(2, dim=-1)                                           # (B, T, D) each
    window = torch.cat([conv_state, x.transpose(1, 2)], dim=-1)         # (B, D, K-1+T)
    taps = window.unfold(-1, kernel, 1)                                  # (B, D, T, K)
    x = taps @ conv_weight.unsqueeze(-1)                                 # (B, D, T, 1)
    if conv_bias is not None:
        x = x + conv_bias[:, None, None]
    x = F.silu(x.squeeze(-1).transpose(1, 2))                            # (B, T, D)
    dt, B, C = F.linear(x, block.x_proj.weight).split([rank, d_state, d_state], dim=-1)
    delta = F.softplus(F.linear(dt, block.dt_proj.weight).float()
                       + block.dt_proj.bias.float())                     # (B, T, D)
    x, B, C = x.float(), B.float(), C.float()
    A = -torch.exp(block.A_log.float())                                  # (D, N)
    decay = torch.exp(delta.unsqueeze(-1) * A)                           # (B, T, D, N)
    states = (delta * x).unsqueeze(-1) * B.unsqueeze(2)       # drive Δ B u, (B, T, D, N)
    h = ssm_state
    for t in range(tokens):                    # states become h_t = decay_t * h_{t-1} + drive_t
        h = states[:, t].addcmul_(decay[:, t], h)                        # (B, D, N)
    y = (states @ C.unsqueeze(-1)).squeeze(-1)                          # (B, T, D)
    y = torch.addcmul(y, x, block.D.float()).mul_(F.silu(z.float())).to(dtype)
    return F.linear(y, block.out_proj.weight, block.out_proj.bias), (window[..., tokens:], h)
    # hidden 6: student
    # import ssm  # the fast step is left out of the student copy: it would give exercise 6 away
    # return ssm.mamba_step_ref(block, x, cache)
    # hidden 6: end
