"""The comparison's estimators and seeds: cosine decay, EMA weights, the mean over the last K kept
checkpoints, and validation seeds kept apart from test seeds (train.py, evaluate.py)."""
import inspect
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

import evaluate
import train
from evaluate import TEST_SEED, VALIDATION_SEED, EvalConfig, EvalError
from tests.test_train import hopper_data, parameters, tiny  # noqa: F401 (a fixture)
from train import TrainConfig, TrainError


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_constant_schedule_is_the_old_warmup_and_cosine_decays_to_zero_at_the_last_step():
    cfg = TrainConfig(steps=1000, warmup_steps=100)
    old = [min(1.0, (s + 1) / 100) for s in range(1001)]  # the lambda runs were trained with
    assert [train.lr_factor(cfg, s) for s in range(1001)] == old
    cosine = replace(cfg, lr_schedule="cosine")
    factors = [train.lr_factor(cosine, s) for s in range(1001)]
    assert factors[:100] == old[:100] and factors[100] == 1.0
    assert factors[550] == pytest.approx(0.5) and factors[1000] == 0.0
    assert all(a >= b for a, b in zip(factors[100:], factors[101:]))  # never rises again


def test_cosine_run_logs_a_decaying_lr_and_refuses_to_resume_with_another_budget(
        hopper_data, tmp_path):
    run_dir = train.train(tiny(hopper_data, tmp_path / "cos", lr_schedule="cosine", steps=6,
                               warmup_steps=2))
    lrs = [r["lr"] for r in metrics(run_dir) if "lr" in r]
    assert lrs[-1] == 0.0 and lrs[0] > lrs[1] > lrs[2]
    with pytest.raises(TrainError, match="cosine schedule ends at step 6"):
        train.train(tiny(hopper_data, run_dir, lr_schedule="cosine", steps=8, warmup_steps=2,
                         resume=True))


def test_ema_is_the_mean_of_the_weights_then_a_moving_average():
    model = torch.nn.Linear(1, 1, bias=False)
    run = train.Run.__new__(train.Run)
    run.cfg, run.model = TrainConfig(ema=0.75), model
    run.ema = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    for step, w in enumerate([4.0, 2.0, 8.0, 0.0], start=1):
        model.weight.data.fill_(w)
        seen.append(w)
        run.step = step
        train.update_ema(run)
        if step <= 3:  # t <= 1 / (1 - 0.75) = 4: the plain mean of the weights seen
            assert run.ema["weight"].item() == pytest.approx(np.mean(seen))
    assert run.ema["weight"].item() == pytest.approx(0.75 * np.mean(seen[:3]) + 0.25 * 0.0)


def test_ema_leaves_training_unchanged_and_resumes_exactly(hopper_data, tmp_path):
    plain = train.train(tiny(hopper_data, tmp_path / "plain", steps=8))
    straight = train.train(tiny(hopper_data, tmp_path / "ema", steps=8, ema=0.9, eval_every=4))
    train.train(tiny(hopper_data, tmp_path / "resumed", steps=4, ema=0.9, eval_every=4))
    resumed = train.train(tiny(hopper_data, tmp_path / "resumed", steps=8, ema=0.9,
                               eval_every=4, resume=True))
    loss = [[r["loss"] for r in metrics(d) if "loss" in r] for d in (plain, straight, resumed)]
    assert loss[0] == loss[1] == loss[2]
    ckpts = [torch.load(d / "ckpt.pt", weights_only=True) for d in (plain, straight, resumed)]
    for name, value in ckpts[0]["model"].items():
        assert torch.equal(value, ckpts[1]["model"][name]) and torch.equal(
            value, ckpts[2]["model"][name]), name
    assert ckpts[0]["ema"] is None
    for name, value in ckpts[1]["ema"].items():
        assert torch.equal(value, ckpts[2]["ema"][name]), name
    assert not torch.equal(ckpts[1]["ema"]["embed_state.weight"],
                           ckpts[1]["model"]["embed_state.weight"])
    evals = [r for r in metrics(straight) if "eval" in r]
    assert [r["step"] for r in evals] == [4, 8] and all("eval_ema" in r for r in evals)


def test_evaluate_scores_ema_weights_and_says_so_when_a_run_has_none(hopper_data, tmp_path):
    run_dir = train.train(tiny(hopper_data, tmp_path / "ema", ema=0.9))
    raw = train.train(tiny(hopper_data, tmp_path / "raw"))
    quick = dict(episodes=2, max_episode_steps=8, device="cpu")
    report = evaluate.evaluate_run(EvalConfig(str(run_dir), weights="ema", **quick))
    assert report["config"]["estimator"] == "last checkpoint, ema weights"
    model, _ = evaluate.load_run(run_dir, weights="ema")
    ema = torch.load(run_dir / "ckpt.pt", weights_only=True)["ema"]
    assert torch.equal(model.state_dict()["embed_state.weight"], ema["embed_state.weight"])
    with pytest.raises(EvalError, match="trained without --ema"):
        evaluate.evaluate_run(EvalConfig(str(raw), weights="ema", **quick))


def test_keep_last_keeps_k_checkpoints_and_evaluate_scores_their_mean(hopper_data, tmp_path):
    run_dir = train.train(tiny(hopper_data, tmp_path / "k", steps=7, keep_last=3, keep_every=2))
    kept = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert kept == ["step-0000003.pt", "step-0000005.pt", "step-0000007.pt"]
    last = torch.load(run_dir / "checkpoints" / kept[-1], weights_only=True)["model"]
    for name, value in parameters(run_dir).items():
        assert torch.equal(value, last[name]), name
    quick = dict(episodes=2, max_episode_steps=8, device="cpu", target=[3600.0, 1800.0])
    report = evaluate.evaluate_run(EvalConfig(str(run_dir), last=3, **quick))
    assert len(report["results"]) == 2  # one per target
    for result in report["results"]:
        assert result["checkpoint_steps"] == [3, 5, 7]
        means = [r["score_mean"] for r in result["per_checkpoint"]]
        assert result["score_mean"] == pytest.approx(np.mean(means))
        assert len(result["returns"]) == result["episodes_pooled"] == 6
        assert result["episodes"] == 2  # per checkpoint
    assert "mean over the last 3 checkpoints (steps 3, 5, 7)" in report["config"]["estimator"]
    with pytest.raises(EvalError, match="kept 3 checkpoints, fewer than --last 4"):
        evaluate.evaluate_run(EvalConfig(str(run_dir), last=4, **quick))


def test_validation_and_test_seeds_never_meet(hopper_data, tmp_path):
    assert VALIDATION_SEED + 100_000 <= TEST_SEED  # room for any pilot's validation episodes
    run_dir = train.train(tiny(hopper_data, tmp_path / "s"))
    periodic = json.loads((run_dir / "eval.json").read_text())
    assert periodic["config"]["seeds"] == "validation"
    assert periodic["results"][0]["seeds"] == [VALIDATION_SEED, VALIDATION_SEED + 1]
    report = evaluate.evaluate_run(EvalConfig(str(run_dir), episodes=2, max_episode_steps=8,
                                              device="cpu"))
    assert report["config"]["seeds"] == "test"
    assert report["results"][0]["seeds"] == [TEST_SEED, TEST_SEED + 1]
    with pytest.raises(EvalError, match="straddle the test seeds"):
        evaluate.check_config(EvalConfig(str(run_dir), seed=TEST_SEED - 1, episodes=2))
    with pytest.raises(TrainError, match="validation seeds"):
        train.check_config(TrainConfig(eval_seed=TEST_SEED - 1, eval_episodes=2))
    assert inspect.signature(evaluate.evaluate).parameters["seed"].default == TEST_SEED


def test_last_k_refuses_checkpoints_that_are_not_the_runs_last_k_or_ask_for_other_targets(
        hopper_data, tmp_path):
    run_dir = train.train(tiny(hopper_data, tmp_path / "k", steps=7, keep_last=3, keep_every=2))
    quick = dict(episodes=2, max_episode_steps=8, device="cpu")
    longer = replace(tiny(hopper_data, run_dir, steps=8, keep_last=3, keep_every=2), resume=True)
    train.train(longer)  # resumed to 8 steps: kept 3, 5, 7 from the first budget, then 8
    with pytest.raises(EvalError, match=r"kept checkpoints are at steps 5, 7, 8, not 2 apart up "
                                        r"to its last step 8 \(unfinished, or resumed"):
        evaluate.evaluate_run(EvalConfig(str(run_dir), last=3, **quick))
    assert evaluate.evaluate_run(EvalConfig(str(run_dir), last=1, **quick))["step"] == 8
    other = train.train(tiny(hopper_data, tmp_path / "t", steps=7, keep_last=2, keep_every=2,
                             save_every=5))  # kept 5 and 7: retarget the last before it is kept
    ckpt_path = other / "checkpoints" / "step-0000007.pt"
    ckpt = torch.load(ckpt_path, weights_only=False)
    ckpt["config"]["target"] = 1800.0
    torch.save(ckpt, ckpt_path)
    with pytest.raises(EvalError, match="trained with different targets or evaluation modes"):
        evaluate.evaluate_run(EvalConfig(str(other), last=2, **quick))
    result = evaluate.evaluate_run(EvalConfig(str(other), last=2, target=[3600.0], mode="window",
                                              **quick))
    assert result["results"][0]["checkpoint_steps"] == [5, 7]
