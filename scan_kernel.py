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
            a_next = exp(dt[t + 1] * A)                  # one row down: delta reloaded shifted
            a_cum, g_loc = associative_scan((a_next, dy[:, :, None] * C[:, None, :]), reverse=True)
            gs = g_loc + a_cum * g                       # every g_t of the chunk
            du, ddelta, dB, dC, dA, dD, ddelta_bias: products of (hs, gs, inputs) summed over N or D
            g = gs[0]

Nothing (B, L, D, N)-sized leaves the registers: HBM sees the (B, L, D) inputs and outputs, the
(B, L, N) B and C, one fp32 state per chunk and channel, and the dB / dC partial sums. The
reductions: dA, dD and ddelta_bias are summed over time in a program, then over the batch on the
host. dB and dC (sums over channels) go out as per-channel-block partials (B, n_dblocks, L, N),
summed on the host: 2 x 4N / BLOCK_D bytes per (t, d) written and re-read (8 at N = BLOCK_D = 16,
against 14 for the backward's seven bf16 (B, L, D) tensors). tl.atomic_add into (B, L, N) would
keep that traffic in L2 but adds floats in a different order on every run, and a project that
compares models seed for seed wants gradients that are the same bit for bit.

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
from dataclasses import dataclass

import torch

from cli import option, parse_config
from scan_torch import selective_scan_torch

if __name__ == "__main__" and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")   # CPU: run the kernels in the interpreter

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

CHUNK = 16            # time steps per tile: the backward's ~8 live tiles must fit in registers
TILE_ELEMENTS = 4096  # CHUNK * BLOCK_D * BLOCK_N (16 KB fp32 per tile); sets BLOCK_D (16 at N = 16)
FWD_WARPS = 4         # forward: ~4 live tiles of 4096 fp32 -> ~128 registers per thread
BWD_WARPS = 8         # backward: twice the live tiles, spread over twice the threads
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
POISON_OUTPUTS = False  # tests set True: outputs start as NaN, so any element a kernel skips shows


class ScanKernelError(ValueError):
    """A usage error of the Triton scan; the message says what to do."""


@dataclass
class SmokeConfig:
    """`python scan_kernel.py`: the kernels against the chunked PyTorch scan (scan_torch.py) on
    random inputs (no timing); the tests compare both with the reference loop."""
    batch: int = option(2, "sequences")
    length: int = option(40, "time steps (any length, not only powers of two)")
    dim: int = option(8, "channels D (tiny: the CPU interpreter is slow)")
    dstate: int = option(4, "state size N")
    dtype: str = option("float32", "input dtype", choices=("float32", "float16", "bfloat16"))
    seed: int = option(0, "input seed")


# ----------------------------------------------------------------------------- small pieces

@triton.jit
def _compose(a_prev, x_prev, a_next, x_next):
    """Step (a_prev, x_prev), then (a_next, x_next): h -> a_next * (a_prev * h + x_prev) + x_next"""
    return a_prev * a_next, a_next * x_prev + x_next


@triton.jit
def _load_rows(p_x, offs_t, offs_col, mask_col, seqlen, n_cols):
    """Rows offs_t of a row-major (seqlen, n_cols) matrix in fp32, zero outside. -> (CHUNK, cols)"""
    mask = (offs_t < seqlen)[:, None] & mask_col[None, :]
    return tl.load(p_x + offs_t[:, None] * n_cols + offs_col[None, :], mask=mask,
                   other=0.0).to(tl.float32)


@triton.jit
def _step_sizes(p_delta, offs_t, offs_d, mask_d, b_bias, seqlen, dim, DELTA_SOFTPLUS: tl.constexpr):
    """delta after bias and softplus, zero outside the sequence (so padded steps leave h unchanged:
    exp(0 * A) = 1 and 0 * B * u = 0); also returns the softplus input. -> 2 x (CHUNK, BLOCK_D)"""
    b_pre = _load_rows(p_delta, offs_t, offs_d, mask_d, seqlen, dim) + b_bias[None, :]
    b_delta = b_pre
    if DELTA_SOFTPLUS:  # log(1 + e^x), with x itself above 20 where the two agree in fp32; as
        # log(u) e / (u - 1), u = 1 + e (Goldberg's log1p), so a tiny e^x is not lost to rounding
        b_exp = tl.exp(b_pre)
        b_u = 1.0 + b_exp
        b_log1p = tl.where(b_u == 1.0, b_exp, tl.log(b_u) * b_exp / tl.where(b_u == 1.0, 1.0,
                                                                             b_u - 1.0))
        b_delta = tl.where(b_pre > 20.0, b_pre, b_log1p)
    valid = (offs_t < seqlen)[:, None] & mask_d[None, :]
    return tl.where(valid, b_delta, 0.0), b_pre


@triton.jit
def _per_channel(p_D, p_delta_bias, offs_d, mask_d,
                 HAS_D: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr, BLOCK_D: tl.constexpr):
    """The skip weights and delta bias of a channel block, zero where absent. -> 2 x (BLOCK_D,)"""
    b_D = tl.zeros((BLOCK_D,), dtype=tl.float32)
    b_bias = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if HAS_D:
        b_D = tl.load(p_D + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_DELTA_BIAS:
        b_bias = tl.load(p_delta_bias + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    return b_D, b_bias


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


# ----------------------------------------------------------------------------- forward kernel

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
    p_h_saved,       # (B, n_chunks, D, N) fp32: the state entering each chunk, if SAVE_STATES
    seqlen, dim, dstate, n_chunks,   # L, D, N, cdiv(L, CHUNK)
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr,
    DELTA_SOFTPLUS: tl.constexpr,  # apply softplus to delta (after the bias)
    SAVE_STATES: tl.constexpr,     # write h_saved for the backward pass
    CHUNK: tl.constexpr,           # time steps per tile, a power of two
    BLOCK_D: tl.constexpr,         # channels per program, a power of two
    BLOCK_N: tl.constexpr,         # N rounded up to a power of two
):
    pid_b, pid_d = tl.program_id(0).to(tl.int64), tl.program_id(1)   # int64: offsets pass 2**31
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n, offs_c = tl.arange(0, BLOCK_N), tl.arange(0, CHUNK)
    mask_d, mask_n = offs_d < dim, offs_n < dstate
    mask_dn = mask_d[:, None] & mask_n[None, :]
    seq = pid_b * seqlen * dim                  # offset of this sequence in (B, L, D) tensors
    p_u, p_delta, p_y = p_u + seq, p_delta + seq, p_y + seq
    p_B, p_C = p_B + pid_b * seqlen * dstate, p_C + pid_b * seqlen * dstate   # (B, L, N) tensors
    offs_dn = offs_d[:, None] * dstate + offs_n[None, :]

    # Padded channels and state indices load A = 0, B = C = u = 0: their state stays 0.
    b_A = tl.load(p_A + offs_dn, mask=mask_dn, other=0.0).to(tl.float32)      # (BLOCK_D, BLOCK_N)
    b_D, b_bias = _per_channel(p_D, p_delta_bias, offs_d, mask_d, HAS_D, HAS_DELTA_BIAS, BLOCK_D)
    b_h = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)   # h_{-1} = 0

    for c in range(0, n_chunks):
        if SAVE_STATES:
            tl.store(p_h_saved + ((pid_b * n_chunks + c) * dim * dstate + offs_dn), b_h,
                     mask=mask_dn)
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
        b_y = tl.sum(b_hs * b_C[:, None, :], axis=2) + b_D[None, :] * b_u  # (CHUNK, BLOCK_D)
        if HAS_Z:
            b_z = _load_rows(p_z + seq, offs_t, offs_d, mask_d, seqlen, dim)
            b_y *= b_z * tl.sigmoid(b_z)
        tl.store(p_y + offs_t[:, None] * dim + offs_d[None, :], b_y.to(p_y.dtype.element_ty),
                 mask=mask_td)
        # The last row is the state after the chunk (padded steps past L leave it unchanged).
        b_h = tl.sum(tl.where((offs_c == CHUNK - 1)[:, None, None], b_hs, 0.0), axis=0)
        # exercise 7: end


# ----------------------------------------------------------------------------- backward kernel

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
    pid_b, pid_d = tl.program_id(0).to(tl.int64), tl.program_id(1)
    n_dblocks = tl.num_programs(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n, offs_c = tl.arange(0, BLOCK_N), tl.arange(0, CHUNK)
    mask_d, mask_n = offs_d < dim, offs_n < dstate
    mask_dn = mask_d[:, None] & mask_n[None, :]
    seq = pid_b * seqlen * dim                  # offset of this sequence in (B, L, D) tensors
    p_u, p_delta, p_dy = p_u + seq, p_delta + seq, p_dy + seq
    p_B, p_C = p_B + pid_b * seqlen * dstate, p_C + pid_b * seqlen * dstate   # (B, L, N) tensors
    part = (pid_b * n_dblocks + pid_d) * seqlen * dstate
    offs_dn = offs_d[:, None] * dstate + offs_n[None, :]

    b_A = tl.load(p_A + offs_dn, mask=mask_dn, other=0.0).to(tl.float32)      # (BLOCK_D, BLOCK_N)
    b_D, b_bias = _per_channel(p_D, p_delta_bias, offs_d, mask_d, HAS_D, HAS_DELTA_BIAS, BLOCK_D)
    b_g = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)   # dLoss/dh at the next chunk's 1st step
    b_dA = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    b_dD, b_dbias = tl.zeros((BLOCK_D,), dtype=tl.float32), tl.zeros((BLOCK_D,), dtype=tl.float32)

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
        b_h0 = tl.load(p_h_saved + ((pid_b * n_chunks + c) * dim * dstate + offs_dn),
                       mask=mask_dn, other=0.0)                            # (BLOCK_D, BLOCK_N)
        b_input, b_hs = _chunk_states(b_delta, b_u, b_A, b_B, b_h0)

        # 2. Through the gate and the skip: b_dy becomes the gradient of y before the gate.
        if HAS_Z:
            b_z = _load_rows(p_z + seq, offs_t, offs_d, mask_d, seqlen, dim)
            b_sig = tl.sigmoid(b_z)
            b_y = tl.sum(b_hs * b_C[:, None, :], axis=2) + b_D[None, :] * b_u
            b_dz = b_dy * b_y * b_sig * (1.0 + b_z * (1.0 - b_sig))              # silu'(z) * y
            tl.store(p_dz + seq + p_td, b_dz.to(p_dz.dtype.element_ty), mask=mask_td)
            b_dy = b_dy * b_z * b_sig
        b_du = b_D[None, :] * b_dy                                               # (CHUNK, BLOCK_D)
        b_dD += tl.sum(b_dy * b_u, axis=0)

        # 3. Reverse scan for g_t: the decay that carries g_{t+1} back is the next step's, so
        #    reload delta one row down (past L it is 0 and g there is 0, so nothing leaks in).
        b_delta_next, _ = _step_sizes(p_delta, offs_t + 1, offs_d, mask_d, b_bias, seqlen, dim,
                                      DELTA_SOFTPLUS)
        b_decay_next = tl.exp(b_delta_next[:, :, None] * b_A[None, :, :])  # shape of b_hs
        b_dh = b_dy[:, :, None] * b_C[:, None, :]                          # from y_t = <h_t, C_t>
        b_decay_cum, b_g_local = tl.associative_scan((b_decay_next, b_dh), axis=0,
                                                     combine_fn=_compose, reverse=True)
        b_gs = b_g_local + b_decay_cum * b_g[None, :, :]                   # g_t for the chunk

        # 4. Gradients from (hs, g). decay_t * h_{t-1} = h_t - input_t: no shifted hs needed.
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


# ----------------------------------------------------------------------------- the host side

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
        raise ScanKernelError(f"Expected u of shape (B, L, D) and A of shape (D, N), got "
                              f"{tuple(u.shape)} and {tuple(A.shape)}.")
    (batch, seqlen, dim), dstate = u.shape, A.shape[1]
    expected = {"delta": (delta, (batch, seqlen, dim)), "A": (A, (dim, dstate)), "D": (D, (dim,)),
                "B": (B, (batch, seqlen, dstate)), "C": (C, (batch, seqlen, dstate)),
                "z": (z, (batch, seqlen, dim)), "delta_bias": (delta_bias, (dim,))}
    for name, (x, shape) in expected.items():
        if x is not None and tuple(x.shape) != shape:
            raise ScanKernelError(f"{name} has shape {tuple(x.shape)} but u {tuple(u.shape)} and A "
                                  f"{tuple(A.shape)} need {shape}; fix the caller's layout.")
        if x is not None and (x.dtype not in FLOAT_DTYPES or x.device != u.device):
            raise ScanKernelError(f"{name} is {x.dtype} on {x.device}; pass fp32, fp16 or bf16 "
                                  f"tensors, all on u's device ({u.device}).")
    z_dtype = None if z is None else z.dtype
    if u.dtype not in FLOAT_DTYPES or delta.dtype != u.dtype or z_dtype not in (None, u.dtype):
        raise ScanKernelError(f"u, delta and z must share one dtype of fp32, fp16, bf16 (got "
                              f"{u.dtype}, {delta.dtype}, {z_dtype}); cast them first.")
    if B.dtype != C.dtype:
        raise ScanKernelError(f"B and C must share a dtype (got {B.dtype}, {C.dtype}); cast one.")
    if seqlen == 0 or batch == 0:
        raise ScanKernelError("The scan needs at least one sequence of at least one step.")
    if seqlen * max(dim, dstate) >= 2**31:  # offsets within one sequence are 32-bit
        raise ScanKernelError(f"L x D = {seqlen * max(dim, dstate):,} overflows the kernels' "
                              "32-bit offsets within a sequence; split it, or use the PyTorch "
                              "scan.")
    if u.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ScanKernelError("The Triton scan needs CUDA tensors (or TRITON_INTERPRET=1 set "
                              "before importing triton); ssm.selective_scan falls back to PyTorch.")
    for name, size in (("chunk", chunk), ("block_d", block_d)):
        if size is not None and (size < 1 or size & (size - 1)):
            raise ScanKernelError(f"{name} must be a power of two, got {size}.")


def _scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk, block_d, save_states):
    """Launch the forward kernel on contiguous inputs. -> y, h_saved (None unless save_states)"""
    (batch, seqlen, dim), dstate = u.shape, A.shape[1]
    chunk, block_d, block_n = _block_sizes(dim, dstate, chunk, block_d)
    n_chunks = triton.cdiv(seqlen, chunk)
    y = _new_buffer(u.shape, u.dtype, u.device)                                  # (B, L, D)
    h_saved = (_new_buffer((batch, n_chunks, dim, dstate), torch.float32, u.device)
               if save_states else None)                                     # (B, n_chunks, D, N)
    _scan_fwd_kernel[(batch, triton.cdiv(dim, block_d))](
        u, delta, A, B, C, D, z, delta_bias, y, h_saved, seqlen, dim, dstate, n_chunks,
        HAS_D=D is not None, HAS_Z=z is not None, HAS_DELTA_BIAS=delta_bias is not None,
        DELTA_SOFTPLUS=delta_softplus, SAVE_STATES=save_states,
        CHUNK=chunk, BLOCK_D=block_d, BLOCK_N=block_n, num_warps=FWD_WARPS)
    return y, h_saved


def _scan_backward(dy, u, delta, A, B, C, D, z, delta_bias, h_saved, delta_softplus, chunk,
                   block_d):
    """Launch the backward kernel, sum the partials. -> the 8 input gradients (None if absent)"""
    (batch, seqlen, dim), dstate = u.shape, A.shape[1]
    chunk, block_d, block_n = _block_sizes(dim, dstate, chunk, block_d)
    n_dblocks = triton.cdiv(dim, block_d)
    has_d, has_z, has_bias = D is not None, z is not None, delta_bias is not None
    du, ddelta = _new_buffer(u.shape, u.dtype, u.device), _new_buffer(u.shape, u.dtype, u.device)
    dz = _new_buffer(u.shape, u.dtype, u.device) if has_z else None
    dA_part = _new_buffer((batch, dim, dstate), torch.float32, u.device)
    dB_part = _new_buffer((batch, n_dblocks, seqlen, dstate), torch.float32, u.device)
    dC_part = _new_buffer((batch, n_dblocks, seqlen, dstate), torch.float32, u.device)
    dD_part = _new_buffer((batch, dim), torch.float32, u.device) if has_d else None
    dbias_part = _new_buffer((batch, dim), torch.float32, u.device) if has_bias else None
    _scan_bwd_kernel[(batch, n_dblocks)](
        u, delta, A, B, C, D, z, delta_bias, h_saved, dy, du, ddelta, dz,
        dA_part, dB_part, dC_part, dD_part, dbias_part, seqlen, dim, dstate, h_saved.shape[1],
        HAS_D=has_d, HAS_Z=has_z, HAS_DELTA_BIAS=has_bias, DELTA_SOFTPLUS=delta_softplus,
        CHUNK=chunk, BLOCK_D=block_d, BLOCK_N=block_n, num_warps=BWD_WARPS)
    dD = dD_part.sum(0).to(D.dtype) if has_d else None
    dbias = dbias_part.sum(0).to(delta_bias.dtype) if has_bias else None
    return (du, ddelta, dA_part.sum(0).to(A.dtype), dB_part.sum(1).to(B.dtype),
            dC_part.sum(1).to(C.dtype), dD, dz, dbias)


class _SelectiveScanTriton(torch.autograd.Function):
    """The forward saves only the chunk-entry states; the backward recomputes the rest."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, *options):
        y, h_saved = _scan_forward(u, delta, A, B, C, D, z, delta_bias, *options, True)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, h_saved)
        ctx.options = options                   # (delta_softplus, chunk, block_d): no gradients
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
    chunk, block_d: tile sizes (powers of two; tests use small ones to cross many tile borders)."""
    _check_inputs(u, delta, A, B, C, D, z, delta_bias, chunk, block_d)
    tensors = [x if x is None else x.contiguous() for x in (u, delta, A, B, C, D, z, delta_bias)]
    if torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in tensors):
        return _SelectiveScanTriton.apply(*tensors, bool(delta_softplus), chunk, block_d)
    # Inference: no backward will follow, so the forward skips writing the chunk-entry states.
    return _scan_forward(*tensors, bool(delta_softplus), chunk, block_d, False)[0]


# ----------------------------------------------------------------------------- smoke check

def main(argv=None):
    cfg = parse_config(SmokeConfig, argv, "Check the Triton scan's output and every gradient "
                       "against the PyTorch scan. No timing here: python "
                       "benchmarks/bench_scan_gpu.py (GPU) or python profile.py --sweeps scan.")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, cfg.dtype)
    g = torch.Generator().manual_seed(cfg.seed)
    b, l, d, n = cfg.batch, cfg.length, cfg.dim, cfg.dstate
    rand = lambda *s: torch.randn(*s, generator=g)   # noqa: E731
    inputs = dict(u=rand(b, l, d).to(dtype), delta=(0.5 * rand(b, l, d)).to(dtype),
                  A=-torch.rand(d, n, generator=g) - 0.5, B=rand(b, l, n).to(dtype),
                  C=rand(b, l, n).to(dtype), D=rand(d), z=rand(b, l, d).to(dtype),
                  delta_bias=0.3 * rand(d))
    inputs = {k: v.to(device).requires_grad_() for k, v in inputs.items()}
    dy = rand(b, l, d).to(device)
    results = []                                  # [y, du, ddelta, ...] for triton, then torch
    for fn in (selective_scan_triton, selective_scan_torch):
        y = fn(**inputs, delta_softplus=True).float()
        results.append([y, *torch.autograd.grad(y, list(inputs.values()), dy)])
    mode = "Triton interpreter" if os.environ.get("TRITON_INTERPRET") == "1" else "compiled"
    print(f"device {device} ({mode}), B={b} L={l} D={d} N={n} {cfg.dtype}")
    # Allowed max |triton - torch| / max(1, max |torch|): fp32 sums reorder; fp16 and bf16 round.
    rtol = max(1e-3, 10 * torch.finfo(dtype).eps)
    passed = True
    for name, out, ref in zip(["y", *(f"d{k}" for k in inputs)], *results):
        err, scale = (out.float() - ref.float()).abs().max().item(), ref.abs().max().item()
        ok = err <= rtol * max(scale, 1.0)
        passed = passed and ok
        print(f"  max |{name} - {name}_torch| = {err:.2e} of {scale:.2e}  {'ok' if ok else 'FAIL'}")
    print("PASS" if passed else f"FAIL: a difference above {rtol:.0e} x max(1, max |torch|)")
    return passed                          # True: y and every gradient match the PyTorch scan


if __name__ == "__main__":
    try:
        sys.exit(0 if main() else 1)
    except ScanKernelError as e:
        sys.exit(f"error: {e}")
