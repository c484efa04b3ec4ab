"""DecisionModel: causality, padding, recurrent == full forward, attention paths, parameters,
the scan backend chosen by the config."""
import re
import runpy
from dataclasses import asdict, fields
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dt import (BACKBONES, DecisionConfig, DecisionModel, ModelError, attention_mask,
                attention_ref, count_parameters)
from ssm import MambaConfig

OBS, ACT = 5, 3


def small_model(backbone, seed=0, **overrides):
    torch.manual_seed(seed)
    kw = dict(state_dim=OBS, act_dim=ACT, backbone=backbone, d_model=32, n_layer=2, n_head=2,
              mamba_n_layer=2, d_state=4, max_ep_len=50, context_len=8)
    return DecisionModel(DecisionConfig(**{**kw, **overrides})).eval()


def batch(B=2, K=8, seed=1, t0=0):
    g = torch.Generator().manual_seed(seed)
    return dict(states=torch.randn(B, K, OBS, generator=g),
                actions=torch.rand(B, K, ACT, generator=g) * 2 - 1,
                returns_to_go=torch.randn(B, K, 1, generator=g),
                timesteps=(torch.arange(K) + t0).repeat(B, 1),
                mask=torch.ones(B, K))


@pytest.mark.parametrize("backbone", BACKBONES)
def test_backbone_is_causal_changing_a_later_token_never_changes_an_earlier_output(backbone):
    backbone_net = small_model(backbone).backbone
    x = torch.randn(2, 13, 32)
    j = 6
    x2 = x.clone()
    x2[:, j] += torch.randn(2, 32)
    with torch.no_grad():
        y, y2 = backbone_net(x), backbone_net(x2)
    torch.testing.assert_close(y2[:, :j], y[:, :j], rtol=0, atol=0)
    assert (y2[:, j:] - y[:, j:]).abs().amax(dim=-1).min() > 1e-6  # the change does propagate


@pytest.mark.parametrize("backbone", BACKBONES)
def test_action_at_step_t_sees_return_and_state_t_but_not_action_t_or_later(backbone):
    model, b = small_model(backbone), batch()
    j = 4
    with torch.no_grad():
        base, _ = model(**b)
        for key, first_changed in (("returns_to_go", j), ("states", j), ("actions", j + 1)):
            changed = {**b, key: b[key].clone()}
            changed[key][:, j] += 1.0
            pred, _ = model(**changed)
            torch.testing.assert_close(pred[:, :first_changed], base[:, :first_changed],
                                       rtol=0, atol=0)
            assert (pred[:, first_changed] - base[:, first_changed]).abs().max() > 1e-6, key


@pytest.mark.parametrize("backbone", BACKBONES)
def test_padding_never_changes_outputs_loss_or_gradients_of_real_steps(backbone):
    model, L, K = small_model(backbone), 5, 8
    real = batch(K=L)
    real["targets"] = torch.rand(2, L, ACT) * 2 - 1

    def padded(seed):  # real steps, then K - L steps of garbage marked as padding
        g = torch.Generator().manual_seed(seed)
        junk = {key: torch.randn(2, K - L, *v.shape[2:], generator=g) * 5 for key, v in
                real.items() if key not in ("timesteps", "mask")}
        out = {key: torch.cat((real[key], junk[key]), dim=1) for key in junk}
        out["timesteps"] = torch.cat((real["timesteps"], torch.randint(0, 50, (2, K - L))), 1)
        out["mask"] = torch.cat((torch.ones(2, L), torch.zeros(2, K - L)), dim=1)
        return out

    results = []
    for inputs in (real, padded(10), padded(11)):
        model.zero_grad()
        pred, loss = model(**inputs)
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results.append((pred[:, :L], loss, grads))
    for pred, loss, grads in results[1:]:
        torch.testing.assert_close(pred, results[0][0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(loss, results[0][1], rtol=1e-5, atol=1e-7)
        for g, g0 in zip(grads, results[0][2], strict=True):
            torch.testing.assert_close(g, g0, rtol=1e-4, atol=1e-6)


def test_fully_padded_sequence_gives_finite_outputs_and_loss():
    model, b = small_model("gpt"), batch()
    b["mask"][1] = 0.0  # the second sequence is all padding
    pred, loss = model(**b, targets=torch.zeros(2, 8, ACT))
    assert torch.isfinite(pred).all() and torch.isfinite(loss)


def test_loss_is_the_mean_squared_error_averaged_over_real_steps_only():
    model, b = small_model("gpt"), batch()
    b["mask"][0, 6:] = 0.0
    b["mask"][1, 3:] = 0.0
    targets = torch.rand(2, 8, ACT) * 2 - 1
    pred, loss = model(**b, targets=targets)
    per_step = ((pred - targets) ** 2).mean(-1)
    expected = (per_step[0, :6].sum() + per_step[1, :3].sum()) / 9
    torch.testing.assert_close(loss, expected)
    assert model(**b)[1] is None


@pytest.mark.parametrize("K,t0", [(1, 0), (7, 0), (9, 45)])  # t0=45: steps past max_ep_len clip
def test_mamba_token_by_token_equals_full_forward(K, t0):
    model, b = small_model("mamba"), batch(B=3, K=K, t0=t0)
    with torch.no_grad():
        full, _ = model(**b)
        cache = model.init_cache(3, torch.device("cpu"))
        stepped = []
        for t in range(K):
            action, cache = model.step(b["returns_to_go"][:, t], b["states"][:, t],
                                       b["timesteps"][:, t], cache)
            stepped.append(action)
            cache = model.step_action(b["actions"][:, t], b["timesteps"][:, t], cache)
    torch.testing.assert_close(torch.stack(stepped, dim=1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_last_only_predicts_exactly_the_last_action_of_the_full_forward(backbone):
    model, b = small_model(backbone), batch(B=3, K=7)
    with torch.no_grad():
        full, _ = model(**b)
        last, loss = model(**b, last_only=True)
    assert last.shape == (3, 1, ACT) and loss is None
    torch.testing.assert_close(last, full[:, -1:], rtol=1e-5, atol=1e-6)
    with pytest.raises(ModelError, match="last_only"):
        model(**b, targets=b["actions"], last_only=True)


@pytest.mark.parametrize("fast", [True, False])
def test_gpt_backbone_rows_returns_exactly_those_outputs_of_the_full_forward(fast):
    backbone_net = small_model("gpt", fast_attention=fast).backbone
    x, token_mask = torch.randn(2, 15, 32), torch.ones(2, 15)
    token_mask[1, 10:] = 0
    with torch.no_grad():
        y = backbone_net(x, padding_mask=token_mask)
        for rows in (slice(1, 15, 3), slice(13, 14)):
            torch.testing.assert_close(backbone_net(x, padding_mask=token_mask, rows=rows),
                                       y[:, rows], rtol=1e-5, atol=1e-6)


def test_recurrent_inference_on_gpt_raises_a_clear_error():
    model = small_model("gpt")
    with pytest.raises(ModelError, match="needs the Mamba backbone"):
        model.init_cache(1, torch.device("cpu"))
    with pytest.raises(ModelError, match="needs the Mamba backbone"):
        model.step(torch.zeros(1, 1), torch.zeros(1, OBS), torch.zeros(1, dtype=torch.long), None)


def test_written_out_attention_equals_fast_attention_values_and_gradients():
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 21, 8, dtype=torch.float64, requires_grad=True)
               for _ in range(3))
    token_mask = torch.ones(3, 21)
    token_mask[1, 15:] = 0
    token_mask[2, 1:] = 0
    mask = attention_mask(token_mask)
    ref = attention_ref(q, k, v, mask)
    fast = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(fast, ref)
    grad_out = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad_out)
    fast_grads = torch.autograd.grad(fast, (q, k, v), grad_out)
    for a, b in zip(fast_grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_gpt_model_gives_the_same_outputs_with_fast_and_written_out_attention():
    fast, ref = small_model("gpt", fast_attention=True), small_model("gpt", fast_attention=False)
    ref.load_state_dict(fast.state_dict())
    b = batch()
    b["mask"][1, 5:] = 0
    torch.testing.assert_close(fast(**b)[0], ref(**b)[0], rtol=1e-5, atol=1e-6)


def test_attention_mask_is_causal_hides_padded_keys_and_never_leaves_a_row_empty():
    mask = attention_mask(torch.tensor([[1.0, 1, 1, 0, 0]]))[0, 0]  # (T, T)
    assert not mask.triu(1).any()  # no query sees a later key
    assert not mask[:3, 3:].any()  # real queries never see padded keys
    assert mask.any(dim=-1).all()


@pytest.mark.parametrize("sizes", [{}, dict(d_model=128, n_layer=3, mamba_n_layer=5)],
                         ids=["defaults", "paper"])
def test_mamba_parameter_count_is_within_10_percent_of_the_gpt_at_default_and_paper_sizes(sizes):
    for obs, act in ((11, 3), (17, 6)):
        gpt = DecisionModel(DecisionConfig(state_dim=obs, act_dim=act, backbone="gpt", **sizes))
        mamba = DecisionModel(DecisionConfig(state_dim=obs, act_dim=act, backbone="mamba",
                                             **sizes))
        n_gpt, n_mamba = count_parameters(gpt), count_parameters(mamba)
        assert abs(n_mamba / n_gpt - 1) <= 0.10, (n_gpt, n_mamba)
        table = gpt.embed_timestep.weight.numel()
        assert count_parameters(gpt, exclude_timestep=False) == n_gpt + table


@pytest.mark.parametrize("backbone", BACKBONES)
def test_optim_groups_hold_every_parameter_exactly_once_and_spare_norms_biases_embeddings(
        backbone):
    model = small_model(backbone)
    decay, no_decay = (group["params"] for group in model.optim_groups(0.1))
    decay_ids, no_decay_ids = {id(p) for p in decay}, {id(p) for p in no_decay}
    assert len(decay_ids) == len(decay) and len(no_decay_ids) == len(no_decay)
    assert not decay_ids & no_decay_ids
    assert decay_ids | no_decay_ids == {id(p) for p in model.parameters()}
    names = {id(p): n for n, p in model.named_parameters()}
    for pid in no_decay_ids:  # nothing that should decay is spared
        assert not names[pid].endswith(("qkv.weight", "fc.weight", "in_proj.weight")), names[pid]
    for pid in decay_ids:
        assert names[pid].endswith("weight") and "ln" not in names[pid] and "norm" not in \
            names[pid] and "embed_timestep" not in names[pid], names[pid]
    assert id(model.embed_timestep.weight) in no_decay_ids
    if backbone == "mamba":
        special = [p for n, p in model.named_parameters() if n.endswith(("A_log", ".D"))]
        assert special and all(id(p) in no_decay_ids for p in special)


def test_init_is_gpt2_style_but_keeps_mambas_own_initialisation():
    gpt = DecisionModel(DecisionConfig(state_dim=OBS, act_dim=ACT, backbone="gpt"))
    qkv = gpt.backbone.blocks[0].attn.qkv
    assert abs(qkv.weight.std().item() - 0.02) < 0.002 and not qkv.bias.any()
    mamba = small_model("mamba")
    params = dict(mamba.named_parameters())
    A_logs = [p for n, p in params.items() if n.endswith("A_log")]
    Ds = [p for n, p in params.items() if n.endswith(".D")]
    dt_biases = [p for n, p in params.items() if n.endswith("dt_proj.bias")]
    assert A_logs and Ds and dt_biases
    for A_log in A_logs:  # S4D-real: A = -(1, 2, ..., N) in every channel
        expected = torch.log(torch.arange(1, A_log.size(-1) + 1.0)).expand_as(A_log)
        torch.testing.assert_close(A_log.detach(), expected)
    assert all(torch.equal(D.detach(), torch.ones_like(D)) for D in Ds)
    for bias in dt_biases:  # inverse softplus of a dt drawn in [1e-3, 1e-1]
        dt = F.softplus(bias.detach())
        assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 1e-1 * 1.001


def test_config_rejects_unknown_backbone_and_model_rejects_wrong_state_size():
    with pytest.raises(ModelError, match="backbone must be one of"):
        DecisionConfig(state_dim=OBS, act_dim=ACT, backbone="lstm")
    model, b = small_model("gpt"), batch()
    b["states"] = torch.randn(2, 8, OBS + 1)
    with pytest.raises(ModelError, match="use a model built for this environment"):
        model(**b)


def test_scan_backend_field_reaches_every_mamba_block_and_unknown_names_are_refused(
        monkeypatch):
    import ssm
    monkeypatch.delenv("DM_SCAN_BACKEND", raising=False)
    blocks = [layer.mixer for layer in small_model("mamba", scan_backend="ref").backbone.layers]
    assert len(blocks) == 2 and all(b.backend_cpu.name == b.backend_cuda.name == "ref"
                                    for b in blocks)
    auto = small_model("mamba").backbone.layers[0].mixer         # the default: "auto"
    assert auto.backend_cpu.name == ssm.default_scan_backend("cpu", 4)
    with pytest.raises(ModelError, match="scan_backend must be one of"):
        DecisionConfig(state_dim=OBS, act_dim=ACT, backbone="mamba", scan_backend="cuda")


def test_models_on_any_backend_share_one_state_dict_layout_and_old_configs_load():
    # The backend is not part of a checkpoint: a config saved before the field existed builds,
    # and the state dict holds only the reference Mamba names, whatever the backend.
    ref, auto = small_model("mamba", scan_backend="ref"), small_model("mamba", seed=1)
    auto.load_state_dict(ref.state_dict(), strict=True)
    old = {k: v for k, v in asdict(ref.config).items() if k != "scan_backend"}
    assert DecisionConfig(**old).scan_backend == "auto"
    mixer = (r"mixer\.(in_proj\.weight|conv1d\.(weight|bias)|x_proj\.weight"
             r"|dt_proj\.(weight|bias)|A_log|D|out_proj\.weight)")
    layer = re.compile(rf"backbone\.layers\.\d+\.(norm\.weight|{mixer})")
    backbone_keys = [k for k in ref.state_dict() if k.startswith("backbone.")]
    assert len(backbone_keys) == 2 * 10 and all(layer.fullmatch(k) for k in backbone_keys)


def test_the_mamba_modules_read_the_decision_config_itself():
    # ssm.py does not import dt.py: its MambaConfig names the settings it reads, and
    # DecisionConfig must have each of them (the backbone is built from DecisionConfig directly).
    assert {f.name for f in fields(MambaConfig)} <= {f.name for f in fields(DecisionConfig)}
    model = small_model("mamba", d_model=24, mamba_n_layer=3, d_state=6, d_conv=3, expand=1)
    mixer = model.backbone.layers[0].mixer
    assert len(model.backbone.layers) == 3
    assert (mixer.d_model, mixer.d_inner, mixer.d_state, mixer.d_conv) == (24, 24, 6, 3)


def test_every_config_field_has_a_help_text():
    assert all(f.metadata.get("help") for f in fields(DecisionConfig))


def test_main_smoke_check_prints_parameter_counts_of_both_backbones(capsys):
    runpy.run_path(str(Path(__file__).resolve().parents[1] / "dt.py"), run_name="__main__")
    out = capsys.readouterr().out
    for backbone in BACKBONES:
        assert f"{backbone:5s}:" in out
    assert "mamba / gpt parameters" in out and "nan" not in out


def test_the_gpt_mlp_activation_is_a_setting_relu_by_default():
    cfg = DecisionConfig(state_dim=3, act_dim=2, d_model=8, n_layer=1, dropout=0.0)
    assert cfg.activation == "relu"
    torch.manual_seed(0)
    relu = DecisionModel(cfg).eval()
    gelu = DecisionModel(DecisionConfig(**{**cfg.__dict__, "activation": "gelu"})).eval()
    gelu.load_state_dict(relu.state_dict())  # same weights, only the activation differs
    x = torch.randn(2, 5, 8)
    block = relu.backbone.blocks[0].mlp
    torch.testing.assert_close(block(x), block.proj(torch.relu(block.fc(x))))
    assert not torch.allclose(block(x), gelu.backbone.blocks[0].mlp(x))
    with pytest.raises(ModelError, match="activation must be one of"):
        DecisionConfig(state_dim=3, act_dim=2, activation="swish")
