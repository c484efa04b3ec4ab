"""The Mamba backbone: selective state-space blocks stacked with RMSNorm residuals.

Top to bottom, the way the paper draws it:
  MambaConfig           the settings the modules read (dt.DecisionConfig has the same names)
  selective_scan_ref    the selective scan as a plain loop over time: slow, readable, the truth
  causal_conv_silu_ref  the block's causal depthwise conv + SiLU
  RMSNorm, MambaBlock, ResidualBlock, MambaBackbone
  mamba_step_ref        recurrent inference: a block continued token by token from a small cache
  choosing the backend  the one door to the fast paths, at the end

A block calls three backend-neutral functions: the scan, the conv + SiLU and the recurrent step.
Their references are here, in plain PyTorch; the fast versions, with the same signatures, live in
files of their own that never import this one:
  scan_torch.py         the scan in chunked, vectorised PyTorch with a hand-written backward,
                        the conv + SiLU as K shifted multiply-adds, the step written for acting
  scan_cpu.py, .c       C kernels for the CPU: the scan, the conv + SiLU, the recurrent step
  scan_kernel.py        the scan as Triton kernels, for CUDA
Which of them run is decided once, when a block is built, from its config's `scan_backend`
("auto" by default); all of them compute the same thing up to rounding.

References (ideas, credited in one line each):
  Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (block,
  parameter names and layout of the reference `mamba_simple.Mamba`, initialisation).
  mamba-minimal (J. Ma): the reference scan written as a loop a reader can follow.

Glossary (dimension letters as in the paper):
  B        batch size (also the input matrix B_t of the SSM; context tells which)
  L        sequence length (tokens); T, a few new tokens fed to step()
  D        channels of the scan = d_inner = E * d_model (also the skip vector D)
  E        expand factor (d_inner = E * d_model)
  N        state size per channel (d_state)
  K        width of the causal conv (d_conv)
  Δ        `delta`, the per-token, per-channel step size; softplus(dt_proj(x) + bias)
  dt_rank  rank of the low-rank projection that produces Δ, ceil(d_model / 16) (the reference's
           "auto")

The recurrence, per channel d and state index n (A is negative, so exp(Δ A) is in (0, 1)):
  h_t = exp(Δ_t A) * h_{t-1} + Δ_t B_t u_t,    y_t = <h_t, C_t> + D u_t,    y_t *= silu(z_t)
"""
import collections
import functools
import math
import os
import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import scan_cpu
from scan_torch import causal_conv_silu_torch, mamba_step_torch, selective_scan_torch

# "auto" picks the fastest backend available on each device (see the end of the file); the
# others force one. DM_SCAN_BACKEND, when set, replaces "auto" (never a backend named explicitly).
SCAN_BACKENDS = ("auto", "triton", "c", "torch", "ref")
BACKEND_ENV = "DM_SCAN_BACKEND"


class SSMError(ValueError):
    """A usage error of this module; the message says what to do."""


@dataclass
class MambaConfig:
    """The settings the Mamba modules read. They take any object with these attributes:
    dt.DecisionConfig (the model's settings, with their defaults and help texts) or this small
    stand-in, which builds a bare block or backbone for tests and benchmarks."""
    d_model: int                # width of the residual stream
    mamba_n_layer: int = 1      # residual blocks in a MambaBackbone
    d_state: int = 16           # N, state size per channel
    d_conv: int = 4             # K, width of the causal conv
    expand: int = 2             # E: d_inner = E * d_model
    dropout: float = 0.0        # on each block's output, before the residual add
    scan_backend: str = "auto"  # one of SCAN_BACKENDS


# ---------------------------------------------------------------------------------------------
# References: the scan and the conv, written to be read
# ---------------------------------------------------------------------------------------------

def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Selective scan, one time step at a time. Shapes: u, delta, z (B, L, D); A (D, N);
    B, C (B, L, N); D, delta_bias (D,). Computes in fp32, returns y (B, L, D) in u's dtype."""
    # exercise 4: begin
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
    # exercise 4: end


def causal_conv_silu_ref(x, weight, bias=None):
    """silu(causal depthwise conv1d(x)), channels last: x (B, L, D), weight (D, K) (conv1d's
    (D, 1, K) squeezed), bias (D,) or None -> (B, L, D) in x's dtype. Padded with K-1 zeros on
    the left, so out_t sees x_t and the K-1 tokens before it; groups=D: one filter per channel."""
    length, channels, kernel = x.shape[1], x.shape[2], weight.shape[1]
    x_pad = F.pad(x.float().transpose(1, 2), (kernel - 1, 0))            # (B, D, K-1+L)
    out = F.conv1d(x_pad, weight.float().unsqueeze(1), None if bias is None else bias.float(),
                   groups=channels)                                      # (B, D, L)
    return F.silu(out).transpose(1, 2).to(x.dtype)                      # (B, L, D)


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

    Reads config.d_model, d_state, d_conv, expand and scan_backend (see MambaConfig); the rest is
    the reference block's: dt_rank "auto" (ceil(d_model / 16)), a bias on the conv only, and its
    initialisation. Parameter names, shapes and split orders follow the reference block, so its
    state dict loads: in_proj (2*d_inner, d_model) [x; z], conv1d (d_inner, 1, d_conv) + bias,
    x_proj (dt_rank + 2*d_state, d_inner) [dt; B; C], dt_proj (d_inner, dt_rank) + bias,
    A_log (d_inner, d_state), D (d_inner,), out_proj (d_model, d_inner).

    scan_backend: which code runs the conv, the scan and the step, one of SCAN_BACKENDS; "auto"
    (or DM_SCAN_BACKEND where set) picks the fastest here. Resolved once, in __init__.
    """

    def __init__(self, config):
        super().__init__()
        d_model, d_state, d_conv = config.d_model, config.d_state, config.d_conv
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = config.expand * d_model
        self.dt_rank = math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner,
                                padding=d_conv - 1, bias=True)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

        # Δ starts small and varied: dt_proj.weight ~ U(+-dt_rank^-0.5), and the bias is
        # softplus^-1(dt) for dt log-uniform in [dt_min, dt_max] (floored): softplus(bias) = dt.
        dt_min, dt_max, dt_init_floor = 1e-3, 1e-1, 1e-4
        std = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))   # inverse softplus
        # S4D-real: A[d, n] = -(n + 1) for every channel; stored as log(-A) to stay negative.
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))                          # (d_inner, N)
        self.D = nn.Parameter(torch.ones(self.d_inner))                  # (d_inner,)
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True

        # The conv, scan and step functions, chosen once: a model is built on the CPU and may
        # move to CUDA, so one Backend for each (see "Choosing the backend" at the end).
        self.backend_cpu = load_backend(resolve_backend(config.scan_backend, "cpu", d_state))
        self.backend_cuda = load_backend(resolve_backend(config.scan_backend, "cuda", d_state))

    def forward(self, x, rows=None):                                     # x: (B, L, d_model)
        """rows: token positions (index or slice) whose outputs are returned (None = all);
        the scan runs over every token either way, only out_proj is spared."""
        backend = self.backend_cuda if x.is_cuda else self.backend_cpu
        x, z = self.in_proj(x).chunk(2, dim=-1)                          # (B, L, d_inner) each
        x = backend.conv_silu(x, self.conv1d.weight.squeeze(1), self.conv1d.bias)  # (B, L, d_inner)
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        # dt (B, L, dt_rank); B, C (B, L, N): Δ, B and C depend on the token (the "selective" part)
        # Δ before dt_proj's bias and the softplus, which the scan applies. The weight enters as
        # a contiguous (rank, D) copy, so its gradient is the (rank, D) product dt^T g (why:
        # benchmarks/bench_cpu_ops.py and its results/bench-cpu-ops-*.json).
        delta = dt @ self.dt_proj.weight.t().contiguous()                # (B, L, d_inner)
        A = -torch.exp(self.A_log.float())                               # (d_inner, N)
        y = backend.scan(x, delta, A, B, C, self.D.float(), z,
                         delta_bias=self.dt_proj.bias.float(), delta_softplus=True)
        return self.out_proj(y if rows is None else y[:, rows])         # (B, L or L_rows, d_model)

    def init_cache(self, batch, device):
        """Empty recurrent state (conv, ssm), as described before mamba_step_ref below."""
        conv = torch.zeros(batch, self.d_inner, self.d_conv - 1, device=device,
                           dtype=self.in_proj.weight.dtype)
        ssm = torch.zeros(batch, self.d_inner, self.d_state, device=device, dtype=torch.float32)
        return conv, ssm

    def step(self, x, cache):
        """Continue the sequence held in `cache` with T new tokens: x (B, T, d_model), or one token
        (B, d_model) -> (y of the same shape, new cache); the input cache is not modified. Equals
        forward()'s outputs at those positions when the sequence is fed from its start."""
        one_token = x.dim() == 2
        if one_token:
            x = x.unsqueeze(1)                                           # (B, 1, d_model)
        backend = self.backend_cuda if x.is_cuda else self.backend_cpu
        y, cache = backend.step(self, x, cache)                          # (B, T, d_model)
        return (y.squeeze(1) if one_token else y), cache


class ResidualBlock(nn.Module):
    """x + dropout(mixer(norm(x))), named like the reference's Block (`norm`, `mixer`) so a
    reference backbone's `layers.{i}.norm.*` / `layers.{i}.mixer.*` weights load too. Reads
    config.d_model and dropout, and the mixer's settings (see MambaBlock)."""

    def __init__(self, config):
        super().__init__()
        self.norm = RMSNorm(config.d_model)
        self.mixer = MambaBlock(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, rows=None):                                     # (B, L, d_model)
        return (x if rows is None else x[:, rows]) + self.drop(self.mixer(self.norm(x), rows))

    def step(self, x, cache):                                   # (B, d_model) or (B, T, d_model)
        y, cache = self.mixer.step(self.norm(x), cache)
        return x + (self.drop(y) if self.training else y), cache


class MambaBackbone(nn.Module):
    """config.mamba_n_layer residual blocks x + dropout(MambaBlock(RMSNorm(x))), each built from
    `config` (see MambaConfig for what is read). No final norm: the DecisionModel applies its
    own. (B, L, d_model) -> (B, L, d_model), causal."""

    def __init__(self, config):
        super().__init__()
        n_layer = config.mamba_n_layer
        self.layers = nn.ModuleList(ResidualBlock(config) for _ in range(n_layer))
        # Keep the residual stream's variance from growing with depth (reference Mamba's
        # rescale; the DT's GPT code does not rescale, and neither does GPTBackbone).
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

    def scan_backend(self, device):
        """The name of the backend the blocks chose for `device` when they were built."""
        mixer = self.layers[0].mixer
        return (mixer.backend_cuda if torch.device(device).type == "cuda"
                else mixer.backend_cpu).name

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


# ---------------------------------------------------------------------------------------------
# Recurrent inference: a block continued token by token
# ---------------------------------------------------------------------------------------------
# A block's output at token t depends on the tokens before it only through two small tensors,
# its cache, so acting costs the same at env step 1000 as at env step 1:
#   conv (B, D, K-1)  the last K-1 inputs of the causal conv, the only past the conv looks at
#                     (the reference keeps K slots and shifts before use; keeping only the past
#                     makes "window = past + new tokens" read directly);
#   ssm  (B, D, N)    the scan's state h_{t-1}, in fp32 whatever the weights' dtype.
# A step takes T new tokens at once and returns the cache after them, so the DecisionModel feeds
# a_{t-1}, R_t, s_t together: one pass through the layers per env step instead of three.

def mamba_step_ref(block, x, cache):
    """A block's step, equation by equation: x (B, T, d_model), T new tokens of the mixer's
    input (after the norm); cache (conv (B, D, K-1), ssm (B, D, N)), left untouched; the weights
    are the block's. -> (y (B, T, d_model) in x's dtype, the new cache (conv, ssm))."""
    # exercise 6: begin
    conv_state, h = cache
    tokens, N = x.shape[1], block.d_state
    x, z = block.in_proj(x).chunk(2, dim=-1)                            # (B, T, D) each
    # The causal conv over the window, the K-1 cached inputs then the new ones, unpadded: each
    # new token's output sums its own input and the K-1 before it, one filter per channel.
    window = torch.cat([conv_state, x.transpose(1, 2)], dim=-1)         # (B, D, K-1+T)
    x = F.conv1d(window, block.conv1d.weight, block.conv1d.bias, groups=block.d_inner)
    x = F.silu(x).transpose(1, 2)                                        # (B, T, D)
    dt, B, C = block.x_proj(x).split([block.dt_rank, N, N], dim=-1)     # (B, T, rank or N)
    delta = F.softplus(block.dt_proj(dt).float())                        # Δ (B, T, D), fp32
    A = -torch.exp(block.A_log.float())                                  # (D, N)
    x, B, C = x.float(), B.float(), C.float()
    ys = []
    for t in range(tokens):                    # h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t x_t
        h = (torch.exp(delta[:, t, :, None] * A) * h
             + delta[:, t, :, None] * B[:, t, None, :] * x[:, t, :, None])  # (B, D, N)
        ys.append((h * C[:, t, None, :]).sum(-1) + block.D.float() * x[:, t])  # (B, D)
    y = torch.stack(ys, dim=1) * F.silu(z.float())                       # (B, T, D), gated
    return block.out_proj(y.to(z.dtype)), (window[..., tokens:], h)
    # exercise 6: end


# ---------------------------------------------------------------------------------------------
# Choosing the backend: the one door to the fast paths
# ---------------------------------------------------------------------------------------------
# A backend is the three functions a block calls: scan, conv_silu, step. The rule, applied once
# when a block is built (resolve_backend):
#   a named backend runs as named, or an SSMError says why it cannot and what to do;
#   "auto", replaced by DM_SCAN_BACKEND where that is set, is
#     on CUDA     triton where it imports, else torch;
#     on the CPU  c where the C kernels build and d_state <= scan_cpu.MAX_D_STATE, else torch.
# ref runs this file's references; torch and triton step with scan_torch's step, c with its C
# step, which hands training and bf16 to scan_torch's. scan_kernel.py is imported only when
# chosen, so the project runs where triton is missing.

Backend = collections.namedtuple("Backend", "name scan conv_silu step")
REFERENCE = Backend("ref", selective_scan_ref, causal_conv_silu_ref, mamba_step_ref)
TORCH = Backend("torch", selective_scan_torch, causal_conv_silu_torch, mamba_step_torch)


@functools.lru_cache(maxsize=None)
def _load_triton_scan():
    """The Triton backend, imported once: (Backend, None), or (None, why not)."""
    try:
        import scan_kernel
    except ImportError as e:
        return None, str(e)
    return Backend("triton", scan_kernel.selective_scan_triton, causal_conv_silu_torch,
                   mamba_step_torch), None


@functools.lru_cache(maxsize=None)
def _load_c_scan():
    """The C backend, built and loaded once: (Backend, None), or (None, why not)."""
    ok, reason = scan_cpu.available()
    if not ok:
        warnings.warn(f"The C kernels are unavailable ({reason}); on the CPU, Mamba runs on the "
                      "PyTorch scan, slower to train (README.md, 'The C kernels').", stacklevel=2)
        return None, reason
    return Backend("c", scan_cpu.selective_scan_cpu, scan_cpu.causal_conv_silu_cpu,
                   scan_cpu.mamba_step_cpu), None


def backend_from_env():
    """DM_SCAN_BACKEND, checked: None where unset; an SSMError for a name that is not a backend,
    or for triton where torch sees no CUDA device (and Triton's interpreter is off)."""
    name = os.environ.get(BACKEND_ENV) or None
    if name is not None and name not in SCAN_BACKENDS:
        raise SSMError(f"{BACKEND_ENV}={name!r} is not a scan backend; set it to one of "
                       f"{', '.join(SCAN_BACKENDS)}, or unset it.")
    if name == "triton" and not torch.cuda.is_available() and (
            os.environ.get("TRITON_INTERPRET") != "1"):
        raise SSMError(f"{BACKEND_ENV}=triton needs a CUDA GPU and torch sees none; set it to c "
                       "or torch, or unset it.")
    return name


def resolve_backend(name, device, d_state=None):
    """The rule above: the backend, a name other than "auto", that `name` (one of SCAN_BACKENDS,
    or None for "auto") stands for on `device` (a torch.device, "cpu" or "cuda")."""
    name = (backend_from_env() or "auto") if name in (None, "auto") else name
    if name not in SCAN_BACKENDS:
        raise SSMError(f"Unknown scan backend {name!r} (from scan_backend or {BACKEND_ENV}); "
                       f"choose one of {', '.join(SCAN_BACKENDS)}.")
    if name != "auto":
        return name
    kind = torch.device(device).type
    if kind == "cuda":
        triton_ok = torch.cuda.is_available() and _load_triton_scan()[0] is not None
        return "triton" if triton_ok else "torch"
    fits = d_state is None or d_state <= scan_cpu.MAX_D_STATE
    return "c" if kind == "cpu" and fits and _load_c_scan()[0] is not None else "torch"


def load_backend(name):
    """The Backend of a resolved name (see resolve_backend), or an SSMError saying what to do."""
    if name in ("ref", "torch"):
        return REFERENCE if name == "ref" else TORCH
    backend, reason = _load_triton_scan() if name == "triton" else _load_c_scan()
    if backend is None:
        raise SSMError(f"The {name} scan backend is unavailable ({reason}); use "
                       f"scan_backend='torch' (or {BACKEND_ENV}=torch).")
    return backend


def default_scan_backend(device, d_state=None):
    """The backend "auto" picks on `device` (DM_SCAN_BACKEND included): what a run records and a
    benchmark reports."""
    return resolve_backend("auto", device, d_state)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   backend="auto"):
    """The selective scan of selective_scan_ref by the backend named (one of SCAN_BACKENDS;
    "auto" picks by u's device, as a block does)."""
    scan = load_backend(resolve_backend(backend, u.device, A.shape[1])).scan
    return scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


if __name__ == "__main__":
    torch.manual_seed(0)
    for d_model, n_layer in ((128, 4), (128, 6)):
        net = MambaBackbone(MambaConfig(d_model=d_model, mamba_n_layer=n_layer)).eval()
        per_block = sum(p.numel() for p in net.layers[0].parameters())
        total = sum(p.numel() for p in net.parameters())
        print(f"MambaBackbone(d_model={d_model}, n_layer={n_layer}): {total:,} parameters "
              f"({per_block:,} per residual block)")
    print(f"scan backend on the CPU here: {net.layers[0].mixer.backend_cpu.name}")
    x = torch.randn(2, 12, 128)
    y = net(x)
    cache, steps = net.init_cache(2, x.device), []
    for t in range(x.shape[1]):
        y_t, cache = net.step(x[:, t], cache)
        steps.append(y_t)
    err = (torch.stack(steps, 1) - y).abs().max().item()
    print(f"forward {tuple(x.shape)} -> {tuple(y.shape)}; step-by-step max |diff| = {err:.2e}")
