"""The trajectory model shared by the Decision Transformer and the Decision Mamba.

An offline-RL episode becomes a token sequence (R_1, s_1, a_1, R_2, s_2, a_2, ...) of
return-to-go, state and action embeddings, each plus a learned embedding of its env step; a
causal backbone reads it and a tanh head predicts a_t from the output at s_t. The backbone is
either a GPT (written out here, attention math included) or a stack of Mamba blocks (ssm.py),
which can also act recurrently: one token at a time, at constant cost per env step.

References (ideas, not code):
  Chen et al. 2021, "Decision Transformer: Reinforcement Learning via Sequence Modeling".
  Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces".
  Karpathy's nanoGPT for the shape of the GPT part.

Glossary of dimension letters:
  B  batch size               K  env steps in a window (context length)
  T  tokens, T = 3K           C  model width (d_model)
  H  attention heads          hs head size, C / H
"""
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssm import SCAN_BACKENDS, MambaBackbone, SSMError, backend_from_env

BACKBONES = ("gpt", "mamba")
MODELS = {"dt": "gpt", "mamba": "mamba"}  # the scripts' --model name -> DecisionConfig.backbone
# The GPT's MLP activation (DecisionConfig.activation). ReLU by default, as the Decision
# Transformer's official code built its GPT (activation_function='relu' in gym/experiment.py);
# "gelu" is exact (erf) GELU, cheaper on the CPU than GPT-2's tanh approximation
# (python benchmarks/bench_cpu_ops.py; results/bench-cpu-ops-*.json).
ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


class ModelError(ValueError):
    """A model built or called in a way it cannot work; the message says what to do."""


@dataclass
class DecisionConfig:
    """The model's settings, one default each: a small model that trains on a CPU (train.py
    --preset paper sets the DT paper's d_model 128, n_layer 3, mamba_n_layer 5). The Mamba
    backbone (ssm.MambaBackbone) reads d_model, mamba_n_layer, d_state, d_conv, expand, dropout
    and scan_backend from it."""
    state_dim: int = field(metadata={"help": "size of an observation vector"})
    act_dim: int = field(metadata={"help": "size of an action vector (actions lie in [-1, 1])"})
    backbone: str = field(default="gpt", metadata={"help": "sequence backbone: gpt | mamba"})
    d_model: int = field(default=64, metadata={"help": "model width C, shared by both backbones"})
    n_layer: int = field(default=2, metadata={"help": "GPT blocks (backbone gpt)"})
    n_head: int = field(default=1, metadata={"help": "attention heads per GPT block"})
    dropout: float = field(default=0.1, metadata={"help": "dropout probability (embeddings, "
                                                          "attention, residual branches)"})
    context_len: int = field(default=20, metadata={"help": "K, env steps the model sees at once "
                                                           "(3K tokens)"})
    max_ep_len: int = field(default=1000, metadata={"help": "rows of the timestep embedding table; "
                                                            "later steps are clipped to the last"})
    mamba_n_layer: int = field(default=3, metadata={"help": "Mamba blocks (backbone mamba); 1.5 "
                                                            "per GPT block matches its parameter "
                                                            "count (3 for 2, 5 for 3)"})
    d_state: int = field(default=16, metadata={"help": "Mamba SSM state size N per channel"})
    d_conv: int = field(default=4, metadata={"help": "Mamba causal depthwise convolution width"})
    expand: int = field(default=2, metadata={"help": "Mamba inner width = expand * d_model"})
    scan_backend: str = field(default="auto", metadata={
        "help": "code that runs Mamba's scan, conv and step: auto (triton on CUDA, C kernels on "
                "the CPU where they build, else torch; env DM_SCAN_BACKEND overrides auto) | "
                "triton | c | torch | ref"})
    activation: str = field(default="relu", metadata={
        "help": "GPT MLP activation: relu (the Decision Transformer's official code builds its "
                "GPT with activation_function='relu') | gelu (exact, GPT-2's choice)"})
    fast_attention: bool = field(default=True, metadata={
        "help": "GPT attention through F.scaled_dot_product_attention (tested equal to the "
                "written-out attention_ref) instead of attention_ref itself"})

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ModelError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}; "
                             "pick one of those.")
        if self.d_model % self.n_head != 0:
            raise ModelError(f"d_model ({self.d_model}) must be divisible by n_head "
                             f"({self.n_head}); change one of them.")
        if self.activation not in ACTIVATIONS:
            raise ModelError(f"activation must be one of {tuple(ACTIVATIONS)}, got "
                             f"{self.activation!r}; pick one of those.")
        if self.scan_backend not in SCAN_BACKENDS:
            raise ModelError(f"scan_backend must be one of {SCAN_BACKENDS}, got "
                             f"{self.scan_backend!r}; pick one of those.")
        if self.backbone == "mamba" and self.scan_backend == "auto":
            try:  # DM_SCAN_BACKEND replaces "auto": a bad value is one sentence, here
                backend_from_env()
            except SSMError as e:
                raise ModelError(str(e)) from None


# ----------------------------------------------------------------------------- attention

def attention_ref(q, k, v, mask, dropout_p=0.0):
    """Scaled dot-product attention written out: softmax(q k^T / sqrt(hs) + mask) v.

    q, k, v: (B, H, T, hs); mask: bool, broadcastable to (B, H, T, T), True where a query may
    look at a key (every query row must allow at least one key). dropout_p > 0 drops attention
    weights (pass 0 in eval mode).
    """
    # exercise 1: begin
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, H, T, T)
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # (B, H, T, T), rows sum to 1
    weights = F.dropout(weights, p=dropout_p, training=dropout_p > 0)
    return weights @ v  # (B, H, T, hs)
    # exercise 1: end


def attention_mask(token_mask):
    """(B, T) 1 = real token -> (B, 1, T, T) bool: causal and never looking at a padded key.

    A query always sees itself, so a padded query's row is never empty (no NaN from a softmax
    over nothing); a real query only sees real keys, so padding never reaches a real token.
    """
    # exercise 1: begin
    T = token_mask.size(1)
    causal = torch.ones(T, T, dtype=torch.bool, device=token_mask.device).tril()  # (T, T)
    self_only = torch.eye(T, dtype=torch.bool, device=token_mask.device)  # (T, T)
    key_real = token_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
    return causal & (key_real | self_only)  # (B, 1, T, T)
    # exercise 1: end


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.fast = config.fast_attention  # False: use attention_ref
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(self, x, mask, rows=None):
        """x (B, T, C), mask (B, 1, T, T) -> (B, T, C); with `rows` (token positions), only those
        tokens ask queries: keys and values still come from all T tokens -> (B, T_rows, C)."""
        B, T, C = x.shape
        H, hs = self.n_head, C // self.n_head
        if rows is None:
            q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        else:
            w_q, w_kv = self.qkv.weight.split((C, 2 * C))
            b_q, b_kv = self.qkv.bias.split((C, 2 * C))
            q = F.linear(x[:, rows], w_q, b_q)  # (B, T_rows, C)
            k, v = F.linear(x, w_kv, b_kv).split(C, dim=2)  # 2 x (B, T, C)
            mask = mask[:, :, rows]  # (B, 1, T_rows, T)
        q = q.view(B, -1, H, hs).transpose(1, 2)  # (B, H, T_rows, hs)
        k, v = (t.view(B, T, H, hs).transpose(1, 2) for t in (k, v))  # 2 x (B, H, T, hs)
        p = self.dropout if self.training else 0.0
        if self.fast:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        else:
            y = attention_ref(q, k, v, mask, dropout_p=p)  # (B, H, T_rows, hs)
        y = y.transpose(1, 2).reshape(B, -1, C)  # (B, T_rows, C)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.fc = nn.Linear(config.d_model, 4 * config.d_model)
        self.proj = nn.Linear(4 * config.d_model, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.act = ACTIVATIONS[config.activation]

    def forward(self, x):
        return self.drop(self.proj(self.act(self.fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config)

    def forward(self, x, mask, rows=None):
        """rows: token positions whose outputs are wanted (None = all); the others are not
        computed past the attention's keys and values (used by the last block)."""
        x = (x if rows is None else x[:, rows]) + self.attn(self.ln_1(x), mask, rows)
        return x + self.mlp(self.ln_2(x))  # (B, T, C) or (B, T_rows, C)


def _init_gpt_style(module):
    """GPT-2 initialisation: N(0, 0.02) weights, zero biases, unit LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


class GPTBackbone(nn.Module):
    """Causal transformer (B, T, C) -> (B, T, C); no positional table (tokens carry timesteps)
    and no final norm (DecisionModel has one)."""

    def __init__(self, config):
        super().__init__()
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.apply(_init_gpt_style)

    def forward(self, x, padding_mask=None, rows=None):
        """rows: token positions (an index or slice) whose outputs are returned, (B, T_rows, C);
        the last block computes only those (the model reads actions from state tokens only)."""
        B, T, _ = x.shape
        if padding_mask is None:
            padding_mask = torch.ones(B, T, device=x.device)
        mask = attention_mask(padding_mask)  # (B, 1, T, T)
        for i, block in enumerate(self.blocks):
            x = block(x, mask, rows if i == len(self.blocks) - 1 else None)
        return x  # (B, T, C) or (B, T_rows, C)


# ----------------------------------------------------------------------------- the model

def count_parameters(model, exclude_timestep=True):
    """Trainable parameters of a DecisionModel, by default without the timestep table (it is
    the same max_ep_len x d_model for both backbones and dwarfs the small differences)."""
    skip = {id(p) for p in model.embed_timestep.parameters()} if exclude_timestep else set()
    return sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in skip)


class DecisionModel(nn.Module):
    """Predicts a_t from (R_1, s_1, a_1, ..., R_t, s_t) with a GPT or Mamba backbone."""

    def __init__(self, config: DecisionConfig):
        super().__init__()
        self.config = config
        C = config.d_model
        self.embed_timestep = nn.Embedding(config.max_ep_len, C)
        self.embed_return = nn.Linear(1, C)
        self.embed_state = nn.Linear(config.state_dim, C)
        self.embed_action = nn.Linear(config.act_dim, C)
        self.embed_ln = nn.LayerNorm(C)
        self.drop = nn.Dropout(config.dropout)
        self.predict_action = nn.Sequential(nn.Linear(C, config.act_dim), nn.Tanh())
        self.ln_f = nn.LayerNorm(C)
        # Each backbone initialises itself (Mamba's A_log, D and dt_proj bias have special
        # initialisations that a blanket re-init would destroy); the rest is GPT-2 style, for
        # both models alike (the DT code leaves these at PyTorch's defaults: N(0, 1) for the
        # timestep table, uniform +-1/sqrt(fan_in) for the linears).
        for module in (self.embed_timestep, self.embed_return, self.embed_state,
                       self.embed_action, self.predict_action):
            module.apply(_init_gpt_style)
        if config.backbone == "gpt":
            self.backbone = GPTBackbone(config)
        else:
            self.backbone = MambaBackbone(config)

    def _time(self, timesteps):
        return self.embed_timestep(timesteps.clamp(0, self.config.max_ep_len - 1))

    def forward(self, states, actions, returns_to_go, timesteps, mask, targets=None,
                last_only=False):
        """states (B, K, obs), actions (B, K, act), returns_to_go (B, K, 1), timesteps (B, K)
        int, mask (B, K) 1 = real step (padding on the right), targets (B, K, act) or None
        -> (action_pred (B, K, act), masked MSE over real steps or None).
        last_only: predict a_K alone, (B, 1, act), as acting needs (no targets then); the
        backbone's last layer then computes one token instead of K."""
        B, K, _ = states.shape
        if last_only and targets is not None:
            raise ModelError("last_only predicts one action and cannot compute the training "
                             "loss; pass targets=None or last_only=False.")
        if states.size(-1) != self.config.state_dim or actions.size(-1) != self.config.act_dim:
            raise ModelError(f"the model expects state/action sizes {self.config.state_dim}/"
                             f"{self.config.act_dim} but got {states.size(-1)}/"
                             f"{actions.size(-1)}; use a model built for this environment.")
        # exercise 2: begin
        time = self._time(timesteps)  # (B, K, C)
        tokens = torch.stack((self.embed_return(returns_to_go) + time,
                              self.embed_state(states) + time,
                              self.embed_action(actions) + time), dim=2)  # (B, K, 3, C)
        tokens = tokens.reshape(B, 3 * K, -1)  # (B, T, C): (R_1, s_1, a_1, R_2, ...)
        token_mask = mask.to(tokens.dtype).repeat_interleave(3, dim=1)  # (B, T)
        # Zeroing padded tokens keeps them out of the Mamba recurrence; the GPT also masks keys.
        x = self.drop(self.embed_ln(tokens)) * token_mask[:, :, None]  # (B, T, C)
        # Actions are read at state tokens (positions 1, 4, 7, ...), so the backbone's last
        # layer computes only those: s_1 .. s_K, or s_K alone.
        rows = slice(3 * K - 2, 3 * K - 1) if last_only else slice(1, 3 * K, 3)
        # exercise 2: end
        x = self.ln_f(self.backbone(x, padding_mask=token_mask, rows=rows))  # (B, K or 1, C)
        action_pred = self.predict_action(x)  # (B, K or 1, act), from s_t
        loss = None
        if targets is not None:
            # exercise 2: begin
            per_step = ((action_pred - targets) ** 2).mean(dim=-1)  # (B, K)
            mask = mask.to(per_step.dtype)
            loss = (per_step * mask).sum() / mask.sum().clamp(min=1.0)
            # exercise 2: end
        return action_pred, loss

    def optim_groups(self, weight_decay):
        """AdamW groups: decay on Linear / Conv1d weights; none on biases, norms, embeddings
        and parameters flagged `_no_weight_decay` (Mamba's A_log and D)."""
        decay, no_decay = [], []
        for module in self.modules():
            for name, p in module.named_parameters(recurse=False):
                is_matrix = isinstance(module, (nn.Linear, nn.Conv1d)) and name == "weight"
                if is_matrix and not getattr(p, "_no_weight_decay", False):
                    decay.append(p)
                else:
                    no_decay.append(p)
        return [{"params": decay, "weight_decay": weight_decay},
                {"params": no_decay, "weight_decay": 0.0}]

    # ------------------------------------------------------------- recurrent inference (Mamba)
    # Per env step t: action, cache = step(R_t, s_t, t, cache); act; cache = step_action(a_t,
    # t, cache). The cache is the backbone's fixed-size state plus a_t's token, which waits
    # there and enters the backbone with R_{t+1}, s_{t+1}: three tokens in one pass through the
    # layers (one pass costs about what one token does at small batch). The cost per env step
    # does not grow with t; in eval mode the actions equal forward() on the whole episode so far.

    def _require_recurrent(self):
        if self.config.backbone != "mamba":
            raise ModelError("recurrent inference needs the Mamba backbone; use "
                             "backbone='mamba' or evaluate this model in window mode.")

    def init_cache(self, batch_size, device):
        """-> (per-layer backbone caches, queued action token or None)."""
        self._require_recurrent()
        return self.backbone.init_cache(batch_size, device), None

    def step(self, returns_to_go, states, timesteps, cache):
        """returns_to_go (B, 1), states (B, obs), timesteps (B,) -> (action (B, act), cache)."""
        self._require_recurrent()
        layers, queued_action = cache
        time = self._time(timesteps)  # (B, C)
        tokens = [self.embed_return(returns_to_go) + time, self.embed_state(states) + time]
        if queued_action is not None:
            tokens.insert(0, queued_action)  # a_{t-1}, R_t, s_t
        x = self.drop(self.embed_ln(torch.stack(tokens, dim=1)))  # (B, 2 or 3, C)
        y, layers = self.backbone.step(x, layers)  # (B, 2 or 3, C)
        return self.predict_action(self.ln_f(y[:, -1])), (layers, None)  # (B, act), at s_t

    def step_action(self, actions, timesteps, cache):
        """actions (B, act), timesteps (B,) -> cache with a_t's token queued for the next step."""
        self._require_recurrent()
        layers, _ = cache
        return layers, self.embed_action(actions) + self._time(timesteps)  # token (B, C)


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda' without a GPU is a ModelError. train.py
    and evaluate.py both place the model with it."""
    if device not in ("auto", "cpu", "cuda"):
        raise ModelError(f"unknown device {device!r}: choose auto, cpu or cuda.")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for but no CUDA GPU is visible; use --device "
                         "cpu.")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


if __name__ == "__main__":
    # Smoke check: parameter counts of the default models and one forward pass each.
    for env, (obs, act) in {"hopper": (11, 3), "halfcheetah/walker2d": (17, 6)}.items():
        counts = {}
        for backbone in BACKBONES:
            model = DecisionModel(DecisionConfig(state_dim=obs, act_dim=act, backbone=backbone))
            counts[backbone] = count_parameters(model)
            B, K = 4, model.config.context_len
            _, loss = model(torch.randn(B, K, obs), torch.rand(B, K, act) * 2 - 1,
                            torch.randn(B, K, 1), torch.arange(K).repeat(B, 1),
                            torch.ones(B, K), targets=torch.zeros(B, K, act))
            print(f"{env:21s} {backbone:5s}: {counts[backbone]:,} parameters without the "
                  f"timestep table ({count_parameters(model, exclude_timestep=False):,} with it),"
                  f" loss {loss.item():.3f}")
        print(f"{env:21s} mamba / gpt parameters: {counts['mamba'] / counts['gpt']:.3f}")
