"""The selective scan as hand-written Triton kernels: forward, backward, autograd Function.

Mamba's scan can run at memory speed because the state never has to leave the chip: only the
inputs and outputs touch HBM, and the backward pass recomputes what it needs. This file shows
how, in the manner of a Triton tutorial.

The recurrence, per batch b, channel d and state index n (A < 0, so exp(delta * A) is in (0, 1)):

    delta_t = softplus(delta_t + delta_bias)           (both optional)
    h_t     = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t        h_{-1} = 0, state in fp32
    y_t     = <h_t, C_t> + D * u_t                     (the D skip is optional)
    y_t    *= silu(z_t)                                (the gate is optional)

The blocked algorithm. Each step is the affine map h -> a_t * h + x_t; composing two such maps
gives another (a2 * a1, a2 * x1 + x2), and composition is associative, so CHUNK steps at a time
can be combined by a parallel prefix scan instead of a loop. One program owns one batch row and
BLOCK_D channels, and carries their (BLOCK_D, N) state in registers from chunk to chunk:

    for b, d_block in grid:                              # one program each, in parallel
        h = zeros(BLOCK_D, N)                            # fp32, stays in registers
        for c in range(n_chunks):                        # sequential over chunks of time
            h_saved[b, c] = h                            # only if a backward pass will follow
            dt = softplus(delta[b, chunk c] + bias)      # (CHUNK, BLOCK_D)
            a = exp(dt[:, :, None] * A)                  # (CHUNK, BLOCK_D, N) decays
            x = (dt * u)[:, :, None] * B[:, None, :]     # (CHUNK, BLOCK_D, N) inputs
            a_cum, x_cum = associative_scan((a, x), axis=0, combine=compose)
            hs = x_cum + a_cum * h                       # every state h_t of the chunk
            y[b, chunk c] = sum_n(hs * C) + D * u, then * silu(z)
            h = hs[-1]

The backward pass walks the chunks in reverse, restarting each from its saved state, and runs
the gradient's recurrence g_t = dLoss/dh_t = C_t * dy_t + exp(delta_{t+1} * A) * g_{t+1} as a
reverse scan over the same tile (dy_t: the gradient of y_t before the gate):

    for b, d_block in grid:
        g = zeros(BLOCK_D, N)                            # gradient arriving from the next chunk
        for c in reversed(range(n_chunks)):
            x, hs = the forward's chunk c, recomputed from h_saved[b, c]
            dy = dy * silu(z)      (dz from the recomputed y)
            a_next = exp(dt[t + 1] * A)                  # decays one row down: delta reloaded shifted
            a_cum, g_loc = associative_scan((a_next, dy[:, :, None] * C[:, None, :]), axis=0, reverse=True)
            gs = g_loc + a_cum * g                       # every g_t of the chunk
            du, ddelta, dB, dC, dA, dD, ddelta_bias: products of (hs, gs, inputs) summed over N or D
            g = gs[0]

Nothing (B, L, D, N)-sized leaves the registers: HBM sees the (B, L, D) inputs and outputs, the
(B, L, N) B and C, one fp32 state per chunk and channel, and the dB / dC partial sums below.

Reductions. dA, dD and ddelta_bias are summed over time inside a program and over the batch on
the host from per-batch partials. dB and dC (sums over channels) are written as per-channel-block
partials (B, n_dblocks, L, N) and summed on the host: deterministic, at the price of writing
and re-reading 2 x 4N / BLOCK_D bytes per (t, d) (8 at N = BLOCK_D = 16, against 14 for the
backward's seven bf16 (B, L, D) tensors). tl.atomic_add into (B, L, N) would keep that traffic
in L2, but its float sums land in a different order on every run: gradients that differ bit-wise
from run to run, which we do not want in a project that compares models seed for seed.

References (ideas, credited in one line each):
  Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (the scan,
  its recompute-in-backward design and reference semantics).
  Blelloch 1990 / Martin & Cundy 2018: linear recurrences as associative (prefix) scans.
  Triton tutorials (fused softmax, layer norm): kernel + host wrapper + autograd layout.
  flash-linear-attention (Yang et al.): chunked recurrent kernels, p_ pointer / b_ block naming.

Glossary:
  B, L, D, N   batch, sequence length, channels (d_inner), state size (d_state); B, C, D are
               also the SSM's input matrix, output matrix and skip vector (context tells which)
  CHUNK        time steps scanned at once by one program (a power of two)
  BLOCK_D      channels per program; BLOCK_N = N rounded up to a power of two
  p_x / b_x    a pointer into x / a block of x loaded into registers (fp32)
"""
import os
import sys
import time
from dataclasses import dataclass

import torch

from cli import option, parse_config

if __name__ == "__main__" and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")   # CPU: run the kernels in the interpreter

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

CHUNK = 16            # time steps per tile: short enough for the backward's ~8 live tiles to fit in registers
TILE_ELEMENTS = 4096  # CHUNK * BLOCK_D * BLOCK_N (16 KB fp32 per tile); sets BLOCK_D (16 at N = 16)
FWD_WARPS = 4         # forward: ~4 live tiles of 4096 fp32 -> ~128 registers per thread
BWD_WARPS = 8         # backward: twice the live tiles, spread over twice the threads
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
POISON_OUTPUTS = False  # tests set True: outputs start as NaN, so any element a kernel skips shows


class ScanKernelError(ValueError):
    """A usage error of the Triton scan; the message says what to do."""


@dataclass
class SmokeConfig:
    """`python scan_kernel.py`: check the kernels against a plain loop on random inputs and time both."""
    batch: int = option(2, "sequences")
    length: int = option(40, "time steps (any length, not only powers of two)")
    dim: int = option(8, "channels D (tiny: the CPU interpreter is slow)")
    dstate: int = option(4, "state size N")
    dtype: str = option("float32", "input dtype: float32, float16 or bfloat16")
    repeats: int = option(1, "timed repeats (median reported)")
    seed: int = option(0, "input seed")


# ---------------------------------------------------------------------------------------------
# Small pieces shared by both kernels
# ---------------------------------------------------------------------------------------------

@triton.jit
def _compose(a_prev, x_prev, a_next, x_next):
    """Apply step (a_prev, x_prev) then (a_next, x_next): h -> a_next * (a_prev * h + x_prev) + x_next."""
    return a_prev * a_next, a_next * x_prev + x_next


@triton.jit
def _load_rows(p_x, offs_t, offs_col, mask_col, seqlen, n_cols):
    """Rows offs_t of a row-major (seqlen, n_cols) matrix as fp32; zero outside it. -> (CHUNK, cols)"""
    mask = (offs_t < seqlen)[:, None] & mask_col[None, :]
    return tl.load(p_x + offs_t[:, None] * n_cols + offs_col[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _step_sizes(p_delta, offs_t, offs_d, mask_d, b_bias, seqlen, dim, DELTA_SOFTPLUS: tl.constexpr):
    """delta after bias and softplus, zero outside the sequence (so padded steps leave h unchanged:
    exp(0 * A) = 1 and 0 * B * u = 0); also returns the softplus input. -> 2 x (CHUNK, BLOCK_D)"""
    b_pre = _load_rows(p_delta, offs_t, offs_d, mask_d, seqlen, dim) + b_bias[None, :]
    b_delta = b_pre
    if DELTA_SOFTPLUS:  # log(1 + e^x), with x itself above 20 where the two agree in fp32
        b_delta = tl.where(b_pre > 20.0, b_pre, tl.log(1.0 + tl.exp(b_pre)))
    valid = (offs_t < seqlen)[:, None] & mask_d[None, :]
    return tl.where(valid, b_delta, 0.0), b_pre


@triton.jit
def _per_channel(p_D, p_delta_bias, offs_d, mask_d, HAS_D: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr,
                 BLOCK_D: tl.constexpr):
    """The skip weights and the delta bias of a channel block, zero where absent. -> 2 x (BLOCK_D,)"""
    b_Dskip = tl.zeros((BLOCK_D,), dtype=tl.float32)
    b_bias = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if HAS_D:
        b_Dskip = tl.load(p_D + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_DELTA_BIAS:
        b_bias = tl.load(p_delta_bias + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    return b_Dskip, b_bias


@triton.jit
def _chunk_states(b_delta, b_u, b_A, b_B, b_h0):
    """Every state of a chunk from the state before it: b_delta, b_u (CHUNK, BLOCK_D), b_A (BLOCK_D,
    BLOCK_N), b_B (CHUNK, BLOCK_N), b_h0 (BLOCK_D, BLOCK_N). -> inputs x_t = delta_t u_t B_t and
    states h_t, both (CHUNK, BLOCK_D, BLOCK_N)"""
    # exercise 7: begin
    b_decay = tl.exp(b_delta[:, :, None] * b_A[None, :, :])
    b_input = (b_delta * b_u)[:, :, None] * b_B[:, None, :]
    b_decay_cum, b_input_cum = tl.associative_scan((b_decay, b_input), axis=0, combine_fn=_compose)
    return b_input, b_input_cum + b_decay_cum * b_h0[None, :, :]
    # exercise 7: end


# ---------------------------------------------------------------------------------------------
# Forward kernel
# ---------------------------------------------------------------------------------------------

@triton.jit
def _scan_fwd_kernel(
    p_u,             # (B, L, D) input sequence, fp32 / fp16 / bf16
    p_delta,         # (B, L, D) step sizes before bias and softplus, u's dtype
    p_A,             # (D, N) state decay rates (negative), any float dtype
    p_B,             # (B, L, N) input matrices, one per step
    p_C,             # (B, L, N) output matrices, B's dtype
    p_D,             # (D,) skip weights; read only if HAS_D
    p_z,             # (B, L, D) gate, u's dtype; read only if HAS_Z
    p_delta_bias,    # (D,) added to delta; read only if HAS_DELTA_BIAS
    p_y,             # (B, L, D) output, u's dtype
    p_h_saved,       # (B, n_chunks, D, N) fp32: the state entering each chunk; written only if SAVE_STATES
    seqlen,          # L
    dim,             # D
    dstate,          # N
    n_chunks,        # cdiv(L, CHUNK)
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr,
    DELTA_SOFTPLUS: tl.constexpr,  # apply softplus to delta (after the bias)
    SAVE_STATES: tl.constexpr,     # write h_saved for the backward pass
    CHUNK: tl.constexpr,           # time steps per tile, a power of two
    BLOCK_D: tl.constexpr,         # channels per program, a power of two
    BLOCK_N: tl.constexpr,         # N rounded up to a power of two
):
    pid_b = tl.program_id(0).to(tl.int64)   # int64: offsets of long, wide batches pass 2**31
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    offs_c = tl.arange(0, CHUNK)
    mask_d, mask_n = offs_d < dim, offs_n < dstate
    mask_dn = mask_d[:, None] & mask_n[None, :]
    # Per-sequence base pointers; rows are time steps.
    seq = pid_b * seqlen * dim                  # offset of this sequence in (B, L, D) tensors
    p_u, p_delta, p_y = p_u + seq, p_delta + seq, p_y + seq
    p_B += pid_b * seqlen * dstate
    p_C += pid_b * seqlen * dstate
    offs_dn = offs_d[:, None] * dstate + offs_n[None, :]

    # Padded channels and state indices load A = 0, B = C = u = 0: their state stays 0.
    b_A = tl.load(p_A + offs_dn, mask=mask_dn, other=0.0).to(tl.float32)      # (BLOCK_D, BLOCK_N)
    b_Dskip, b_bias = _per_channel(p_D, p_delta_bias, offs_d, mask_d, HAS_D, HAS_DELTA_BIAS, BLOCK_D)
    b_h = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)   # h_{-1} = 0

    for c in range(0, n_chunks):
        if SAVE_STATES:
            tl.store(p_h_saved + ((pid_b * n_chunks + c) * dim * dstate + offs_dn), b_h, mask=mask_dn)
        # Chunk c: load its rows, compute its states from b_h, write y, leave the last state in b_h.
        # exercise 7: begin
        offs_t = c * CHUNK + offs_c
        mask_td = (offs_t < seqlen)[:, None] & mask_d[None, :]
        b_delta, _ = _step_sizes(p_delta, offs_t, offs_d, mask_d, b_bias, seqlen, dim,
                                 DELTA_SOFTPLUS)                         # (CHUNK, BLOCK_D)
        b_u = _load_rows(p_u, offs_t, offs_d, mask_d, seqlen, dim)       # (CHUNK, BLOCK_D)
        b_B = _load_rows(p_B, offs_t, offs_n, mask_n, seqlen, dstate)    # (CHUNK, BLOCK_N)
        b_C = _load_rows(p_C, offs_t, offs_n, mask_n, seqlen, dstate)    # (CHUNK, BLOCK_N)

        _, b_hs = _chunk_states(b_delta, b_u, b_A, b_B, b_h)            # (CHUNK, BLOCK_D, BLOCK_N)
        b_y = tl.sum(b_hs * b_C[:, None, :], axis=2) + b_Dskip[None, :] * b_u  # (CHUNK, BLOCK_D)
        if HAS_Z:
            b_z = _load_rows(p_z + seq, offs_t, offs_d, mask_d, seqlen, dim)
            b_y *= b_z * tl.sigmoid(b_z)
        tl.store(p_y + offs_t[:, None] * dim + offs_d[None, :], b_y.to(p_y.dtype.element_ty), mask=mask_td)
        # The last row is the state after the chunk (padded steps past L leave it unchanged).
        b_h = tl.sum(tl.where((offs_c == CHUNK - 1)[:, None, None], b_hs, 0.0), axis=0)
        # exercise 7: end


# ---------------------------------------------------------------------------------------------
# Backward kernel
# ---------------------------------------------------------------------------------------------

@triton.jit
def _scan_bwd_kernel(
    p_u, p_delta, p_A, p_B, p_C, p_D, p_z, p_delta_bias,   # the forward's inputs, as there
    p_h_saved,       # (B, n_chunks, D, N) fp32 states entering each chunk, from the forward
    p_dy,            # (B, L, D) gradient of the output y, u's dtype
    p_du,            # (B, L, D) out: gradient of u, u's dtype
    p_ddelta,        # (B, L, D) out: gradient of the raw delta (through bias and softplus)
    p_dz,            # (B, L, D) out: gradient of z; written only if HAS_Z
    p_dA_part,       # (B, D, N) fp32 out: this batch row's dA, summed over time
    p_dB_part,       # (B, n_dblocks, L, N) fp32 out: dB summed over this program's channels
    p_dC_part,       # (B, n_dblocks, L, N) fp32 out: dC likewise
    p_dD_part,       # (B, D) fp32 out: this batch row's dD; written only if HAS_D
    p_dbias_part,    # (B, D) fp32 out: this batch row's ddelta_bias; written only if HAS_DELTA_BIAS
    seqlen, dim, dstate, n_chunks,                          # L, D, N, cdiv(L, CHUNK)
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr,
    DELTA_SOFTPLUS: tl.constexpr, CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    n_dblocks = tl.num_programs(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    offs_c = tl.arange(0, CHUNK)
    mask_d, mask_n = offs_d < dim, offs_n < dstate
    mask_dn = mask_d[:, None] & mask_n[None, :]
    seq = pid_b * seqlen * dim                  # offset of this sequence in (B, L, D) tensors
    p_u, p_delta, p_dy = p_u + seq, p_delta + seq, p_dy + seq
    p_B += pid_b * seqlen * dstate
    p_C += pid_b * seqlen * dstate
    part = (pid_b * n_dblocks + pid_d) * seqlen * dstate
    offs_dn = offs_d[:, None] * dstate + offs_n[None, :]

    b_A = tl.load(p_A + offs_dn, mask=mask_dn, other=0.0).to(tl.float32)      # (BLOCK_D, BLOCK_N)
    b_Dskip, b_bias = _per_channel(p_D, p_delta_bias, offs_d, mask_d, HAS_D, HAS_DELTA_BIAS, BLOCK_D)
    b_g = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)       # dLoss/dh at the next chunk's first step
    b_dA = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    b_dD = tl.zeros((BLOCK_D,), dtype=tl.float32)
    b_dbias = tl.zeros((BLOCK_D,), dtype=tl.float32)

    for i in range(0, n_chunks):
        c = n_chunks - 1 - i                                     # chunks in reverse
        offs_t = c * CHUNK + offs_c
        mask_td = (offs_t < seqlen)[:, None] & mask_d[None, :]
        p_td = offs_t[:, None] * dim + offs_d[None, :]
        b_delta, b_pre = _step_sizes(p_delta, offs_t, offs_d, mask_d, b_bias, seqlen, dim,
                                     DELTA_SOFTPLUS)                     # (CHUNK, BLOCK_D)
        b_u = _load_rows(p_u, offs_t, offs_d, mask_d, seqlen, dim)
        b_dy = _load_rows(p_dy, offs_t, offs_d, mask_d, seqlen, dim)      # 0 past L: no gradient
        b_B = _load_rows(p_B, offs_t, offs_n, mask_n, seqlen, dstate)    # (CHUNK, BLOCK_N)
        b_C = _load_rows(p_C, offs_t, offs_n, mask_n, seqlen, dstate)

        # 1. Recompute the chunk's states from the saved one: hs[t] = h_t.
        b_h0 = tl.load(p_h_saved + ((pid_b * n_chunks + c) * dim * dstate + offs_dn), mask=mask_dn, other=0.0)
        b_input, b_hs = _chunk_states(b_delta, b_u, b_A, b_B, b_h0)

        # 2. Through the gate and the skip: b_dy becomes the gradient of y before the gate.
        if HAS_Z:
            b_z = _load_rows(p_z + seq, offs_t, offs_d, mask_d, seqlen, dim)
            b_sig = tl.sigmoid(b_z)
            b_y = tl.sum(b_hs * b_C[:, None, :], axis=2) + b_Dskip[None, :] * b_u
            b_dz = b_dy * b_y * b_sig * (1.0 + b_z * (1.0 - b_sig))              # silu'(z) * y
            tl.store(p_dz + seq + p_td, b_dz.to(p_dz.dtype.element_ty), mask=mask_td)
            b_dy = b_dy * b_z * b_sig
        b_du = b_Dskip[None, :] * b_dy                                           # (CHUNK, BLOCK_D)
        b_dD += tl.sum(b_dy * b_u, axis=0)

        # 3. Reverse scan for g_t: the decay that carries g_{t+1} back is the next step's, so
        #    reload delta one row down (past L it is 0 and g there is 0, so nothing leaks in).
        b_delta_next, _ = _step_sizes(p_delta, offs_t + 1, offs_d, mask_d, b_bias, seqlen, dim,
                                      DELTA_SOFTPLUS)
        b_decay_next = tl.exp(b_delta_next[:, :, None] * b_A[None, :, :])  # (CHUNK, BLOCK_D, BLOCK_N)
        b_dh = b_dy[:, :, None] * b_C[:, None, :]                          # from y_t = <h_t, C_t>
        b_decay_cum, b_g_local = tl.associative_scan((b_decay_next, b_dh), axis=0,
                                                     combine_fn=_compose, reverse=True)
        b_gs = b_g_local + b_decay_cum * b_g[None, :, :]                   # g_t for the chunk

        # 4. Gradients from (hs, g). decay_t * h_{t-1} = h_t - input_t: no shifted copy of hs needed.
        b_decayed = b_hs - b_input
        b_gB = tl.sum(b_gs * b_B[:, None, :], axis=2)                      # (CHUNK, BLOCK_D)
        b_du += b_gB * b_delta
        b_ddelta = b_gB * b_u + tl.sum(b_gs * b_decayed * b_A[None, :, :], axis=2)
        b_dA += tl.sum(b_gs * b_decayed * b_delta[:, :, None], axis=0)
        b_dB = tl.sum(b_gs * (b_delta * b_u)[:, :, None], axis=1)          # (CHUNK, BLOCK_N)
        b_dC = tl.sum(b_hs * b_dy[:, :, None], axis=1)                     # (CHUNK, BLOCK_N)
        if DELTA_SOFTPLUS:
            b_ddelta *= tl.sigmoid(b_pre)
        b_ddelta = tl.where(mask_td, b_ddelta, 0.0)
        if HAS_DELTA_BIAS:
            b_dbias += tl.sum(b_ddelta, axis=0)
        tl.store(p_du + seq + p_td, b_du.to(p_du.dtype.element_ty), mask=mask_td)
        tl.store(p_ddelta + seq + p_td, b_ddelta.to(p_ddelta.dtype.element_ty), mask=mask_td)
        mask_tn = (offs_t < seqlen)[:, None] & mask_n[None, :]
        p_tn = part + offs_t[:, None] * dstate + offs_n[None, :]
        tl.store(p_dB_part + p_tn, b_dB, mask=mask_tn)
        tl.store(p_dC_part + p_tn, b_dC, mask=mask_tn)
        # g at this chunk's first step, for the chunk before it.
        b_g = tl.sum(tl.where((offs_c == 0)[:, None, None], b_gs, 0.0), axis=0)

    tl.store(p_dA_part + pid_b * dim * dstate + offs_dn, b_dA, mask=mask_dn)
    if HAS_D:
        tl.store(p_dD_part + pid_b * dim + offs_d, b_dD, mask=mask_d)
    if HAS_DELTA_BIAS:
        tl.store(p_dbias_part + pid_b * dim + offs_d, b_dbias, mask=mask_d)


# ---------------------------------------------------------------------------------------------
# Host side: checks, launches, autograd
# ---------------------------------------------------------------------------------------------

def _new_buffer(shape, dtype, device):
    if POISON_OUTPUTS:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def _block_sizes(dim, dstate, chunk, block_d):
    """(chunk, BLOCK_D, BLOCK_N): BLOCK_N holds the whole state; BLOCK_D fills TILE_ELEMENTS."""
    block_n = triton.next_power_of_2(dstate)
    if block_d is None:
        block_d = max(1, min(triton.next_power_of_2(dim), TILE_ELEMENTS // (chunk * block_n)))
    return chunk, block_d, block_n


def _check_inputs(u, delta, A, B, C, D, z, delta_bias, chunk, block_d):
    """Raise ScanKernelError (one sentence saying what to fix) unless the inputs fit the kernels."""
    if u.dim() != 3 or A.dim() != 2:
        raise ScanKernelError(f"Expected u of shape (B, L, D) and A of shape (D, N), got {tuple(u.shape)} "
                              f"and {tuple(A.shape)}.")
    batch, seqlen, dim = u.shape
    dstate = A.shape[1]
    expected = {"delta": (delta, (batch, seqlen, dim)), "A": (A, (dim, dstate)),
                "B": (B, (batch, seqlen, dstate)), "C": (C, (batch, seqlen, dstate)), "D": (D, (dim,)),
                "z": (z, (batch, seqlen, dim)), "delta_bias": (delta_bias, (dim,))}
    for name, (x, shape) in expected.items():
        if x is not None and tuple(x.shape) != shape:
            raise ScanKernelError(f"{name} has shape {tuple(x.shape)} but u {tuple(u.shape)} and A "
                                  f"{tuple(A.shape)} need {shape}; fix the caller's layout.")
        if x is not None and (x.dtype not in FLOAT_DTYPES or x.device != u.device):
            raise ScanKernelError(f"{name} is {x.dtype} on {x.device}; pass fp32, fp16 or bf16 tensors, "
                                  f"all on u's device ({u.device}).")
    if u.dtype not in FLOAT_DTYPES or delta.dtype != u.dtype or (z is not None and z.dtype != u.dtype):
        raise ScanKernelError(f"u, delta and z must share one dtype of fp32, fp16, bf16 (got {u.dtype}, "
                              f"{delta.dtype}, {None if z is None else z.dtype}); cast them first.")
    if B.dtype != C.dtype:
        raise ScanKernelError(f"B and C must share a dtype (got {B.dtype} and {C.dtype}); cast one.")
    if seqlen == 0 or batch == 0:
        raise ScanKernelError("The scan needs at least one sequence of at least one step.")
    if u.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ScanKernelError("The Triton scan needs CUDA tensors (or TRITON_INTERPRET=1 set before "
                              "triton is imported); use ssm.selective_scan, which falls back to PyTorch.")
    for name, size in (("chunk", chunk), ("block_d", block_d)):
        if size is not None and (size < 1 or size & (size - 1)):
            raise ScanKernelError(f"{name} must be a power of two, got {size}.")


def _scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk, block_d, save_states):
    """Launch the forward kernel on contiguous inputs. -> y (B, L, D), h_saved (B, n_chunks, D, N) or None"""
    batch, seqlen, dim = u.shape
    dstate = A.shape[1]
    chunk, block_d, block_n = _block_sizes(dim, dstate, chunk, block_d)
    n_chunks = triton.cdiv(seqlen, chunk)
    y = _new_buffer(u.shape, u.dtype, u.device)                                  # (B, L, D)
    h_saved = _new_buffer((batch, n_chunks, dim, dstate), torch.float32, u.device) if save_states else None
    grid = (batch, triton.cdiv(dim, block_d))
    _scan_fwd_kernel[grid](
        u, delta, A, B, C, D, z, delta_bias, y, h_saved, seqlen, dim, dstate, n_chunks,
        HAS_D=D is not None, HAS_Z=z is not None, HAS_DELTA_BIAS=delta_bias is not None,
        DELTA_SOFTPLUS=delta_softplus, SAVE_STATES=save_states,
        CHUNK=chunk, BLOCK_D=block_d, BLOCK_N=block_n, num_warps=FWD_WARPS)
    return y, h_saved


def _scan_backward(dy, u, delta, A, B, C, D, z, delta_bias, h_saved, delta_softplus, chunk, block_d):
    """Launch the backward kernel, then sum the partials. -> the 8 input gradients (None if absent)"""
    batch, seqlen, dim = u.shape
    dstate = A.shape[1]
    chunk, block_d, block_n = _block_sizes(dim, dstate, chunk, block_d)
    n_dblocks = triton.cdiv(dim, block_d)
    du, ddelta = _new_buffer(u.shape, u.dtype, u.device), _new_buffer(u.shape, u.dtype, u.device)
    dz = _new_buffer(u.shape, u.dtype, u.device) if z is not None else None
    dA_part = _new_buffer((batch, dim, dstate), torch.float32, u.device)
    dB_part = _new_buffer((batch, n_dblocks, seqlen, dstate), torch.float32, u.device)
    dC_part = _new_buffer((batch, n_dblocks, seqlen, dstate), torch.float32, u.device)
    dD_part = _new_buffer((batch, dim), torch.float32, u.device) if D is not None else None
    dbias_part = _new_buffer((batch, dim), torch.float32, u.device) if delta_bias is not None else None
    _scan_bwd_kernel[(batch, n_dblocks)](
        u, delta, A, B, C, D, z, delta_bias, h_saved, dy, du, ddelta, dz,
        dA_part, dB_part, dC_part, dD_part, dbias_part, seqlen, dim, dstate, h_saved.shape[1],
        HAS_D=D is not None, HAS_Z=z is not None, HAS_DELTA_BIAS=delta_bias is not None,
        DELTA_SOFTPLUS=delta_softplus, CHUNK=chunk, BLOCK_D=block_d, BLOCK_N=block_n, num_warps=BWD_WARPS)
    dD = dD_part.sum(0).to(D.dtype) if D is not None else None
    dbias = dbias_part.sum(0).to(delta_bias.dtype) if delta_bias is not None else None
    return (du, ddelta, dA_part.sum(0).to(A.dtype), dB_part.sum(1).to(B.dtype), dC_part.sum(1).to(C.dtype),
            dD, dz, dbias)


class _SelectiveScanTriton(torch.autograd.Function):
    """y = scan(...); the forward keeps only the chunk-entry states, the backward recomputes the rest."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk, block_d):
        y, h_saved = _scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk, block_d, True)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, h_saved)
        ctx.options = (delta_softplus, chunk, block_d)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        grads = _scan_backward(dy.contiguous(), *ctx.saved_tensors, *ctx.options)
        return (*grads, None, None, None)


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          *, chunk=CHUNK, block_d=None):
    """The selective scan on the GPU (semantics and layout of ssm.selective_scan_ref):
    u, delta, z (B, L, D); A (D, N); B, C (B, L, N); D, delta_bias (D,). Returns y (B, L, D) in
    u's dtype, differentiable in every tensor input; non-contiguous inputs are copied once.
    chunk / block_d override the tile sizes (powers of two; the tests use small ones to cross
    many tile borders)."""
    _check_inputs(u, delta, A, B, C, D, z, delta_bias, chunk, block_d)
    tensors = [x.contiguous() if x is not None else None for x in (u, delta, A, B, C, D, z, delta_bias)]
    if torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in tensors):
        return _SelectiveScanTriton.apply(*tensors, bool(delta_softplus), chunk, block_d)
    # Inference: no backward will follow, so the forward skips writing the chunk-entry states.
    return _scan_forward(*tensors, bool(delta_softplus), chunk, block_d, False)[0]


# ---------------------------------------------------------------------------------------------
# Smoke check: python scan_kernel.py [--length 200 ...] (config: SmokeConfig above)
# ---------------------------------------------------------------------------------------------

def _scan_loop(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """A plain-loop scan for the smoke check (the project's ground truth is ssm.selective_scan_ref)."""
    u, delta, B, C = u.float(), delta.float(), B.float(), C.float()
    delta = delta + delta_bias
    delta = torch.nn.functional.softplus(delta) if delta_softplus else delta
    h, ys = u.new_zeros(u.shape[0], u.shape[2], A.shape[1]), []                  # (B, D, N)
    for t in range(u.shape[1]):
        h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * u[:, t])[..., None] * B[:, t, None]
        ys.append((h * C[:, t, None]).sum(-1) + D * u[:, t])                     # (B, D)
    return torch.stack(ys, 1) * torch.nn.functional.silu(z.float())              # (B, L, D)


def _median_seconds(fn, repeats):
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main(argv=None):
    cfg = parse_config(SmokeConfig, argv, "Check the Triton scan against a plain loop and time "
                                          "both (real GPU timings: benchmarks/bench_scan_gpu.py).")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, cfg.dtype)
    g = torch.Generator().manual_seed(cfg.seed)
    b, l, d, n = cfg.batch, cfg.length, cfg.dim, cfg.dstate
    rand = lambda *s: torch.randn(*s, generator=g)   # noqa: E731
    inputs = dict(u=rand(b, l, d).to(dtype), delta=(0.5 * rand(b, l, d)).to(dtype),
                  A=-torch.rand(d, n, generator=g) - 0.5, B=rand(b, l, n).to(dtype),
                  C=rand(b, l, n).to(dtype), D=rand(d), z=rand(b, l, d).to(dtype), delta_bias=0.3 * rand(d))
    inputs = {k: v.to(device).requires_grad_() for k, v in inputs.items()}
    dy = torch.randn(b, l, d, generator=g).to(device)
    results = {}
    for name, fn in (("triton", selective_scan_triton), ("loop", _scan_loop)):
        y = fn(**inputs, delta_softplus=True)
        grads = torch.autograd.grad(y.float(), list(inputs.values()), dy)
        t_fwd = _median_seconds(lambda: fn(**inputs, delta_softplus=True), cfg.repeats)
        t_all = _median_seconds(lambda: torch.autograd.grad(fn(**inputs, delta_softplus=True).float(),
                                                            list(inputs.values()), dy), cfg.repeats)
        results[name] = (y.float(), grads, t_fwd, t_all)
    (y_k, g_k, *times_k), (y_r, g_r, *times_r) = results["triton"], results["loop"]
    mode = "Triton interpreter" if os.environ.get("TRITON_INTERPRET") == "1" else "compiled"
    print(f"device {device} ({mode}), B={b} L={l} D={d} N={n} {cfg.dtype}")
    print(f"  max |y - y_loop| = {(y_k - y_r).abs().max().item():.2e}")
    for name, gk, gr in zip(inputs, g_k, g_r):
        print(f"  max |d{name} - d{name}_loop| = {(gk.float() - gr.float()).abs().max().item():.2e}")
    for label, tk, tr in (("forward", times_k[0], times_r[0]), ("fwd+bwd", times_k[1], times_r[1])):
        print(f"  {label:8s} triton {tk * 1e3:9.2f} ms   loop {tr * 1e3:9.2f} ms   "
              f"(speed-up {tr / tk:.3g}x)")


if __name__ == "__main__":
    try:
        main()
    except ScanKernelError as e:
        sys.exit(f"error: {e}")
