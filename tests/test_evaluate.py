"""evaluate.py: batched rollouts equal one-at-a-time ones, fell/truncated counts, run folders."""
import json

import numpy as np
import pytest
import torch

import evaluate
import train
from dt import DecisionConfig, DecisionModel
from evaluate import EvalError
from test_train import error_of, hopper_data, tiny  # noqa: F401 (hopper_data is a fixture)

STATS = dict(state_mean=np.zeros(11), state_std=np.ones(11), return_scale=1000.0,
             target_return=3600.0)


def random_model(backbone, context_len=5, seed=0):
    torch.manual_seed(seed)
    return DecisionModel(DecisionConfig(state_dim=11, act_dim=3, backbone=backbone, d_model=16,
                                        n_layer=1, mamba_n_layer=1, context_len=context_len))


@pytest.mark.parametrize("backbone, mode", [("gpt", "window"), ("mamba", "window"),
                                            ("mamba", "recurrent")])
def test_batched_episodes_equal_the_same_episodes_run_one_at_a_time(backbone, mode):
    model = random_model(backbone)
    batched = evaluate.evaluate(model, "hopper", episodes=4, seed=7, mode=mode, context_len=5,
                                **STATS)
    alone = [evaluate.evaluate(model, "hopper", episodes=1, seed=7 + i, mode=mode, context_len=5,
                               **STATS) for i in range(4)]
    assert batched["seeds"] == [7, 8, 9, 10]
    assert batched["lengths"] == [r["lengths"][0] for r in alone]
    np.testing.assert_allclose(batched["returns"], [r["returns"][0] for r in alone], atol=0.02)
    assert batched["env_steps"] == sum(batched["lengths"])


def test_mamba_recurrent_mode_acts_like_a_window_holding_the_whole_episode():
    model = random_model("mamba", context_len=1000)
    window = evaluate.evaluate(model, "hopper", episodes=3, mode="window", context_len=1000,
                               **STATS)
    recurrent = evaluate.evaluate(model, "hopper", episodes=3, mode="recurrent", **STATS)
    assert window["lengths"] == recurrent["lengths"] and min(window["lengths"]) > 5
    np.testing.assert_allclose(window["returns"], recurrent["returns"], atol=0.02)


def test_random_weights_count_fell_and_truncated_episodes_correctly():
    model = random_model("gpt")
    free = evaluate.evaluate(model, "hopper", episodes=6, context_len=5, **STATS)
    lengths = np.array(free["lengths"])  # a random policy falls within a few dozen steps
    assert free["fell"] == 1.0 and free["truncated"] == 0.0 and lengths.max() < 1000
    cap = int(lengths.min())  # some episodes fall by the cap, others are cut at it
    assert lengths.max() > cap, "the random episodes should not all have one length"
    capped = evaluate.evaluate(model, "hopper", episodes=6, context_len=5, max_episode_steps=cap,
                               **STATS)
    assert capped["lengths"] == np.minimum(lengths, cap).tolist()
    assert capped["fell"] == pytest.approx(np.mean(lengths <= cap))  # falling at the cap counts
    assert capped["truncated"] == pytest.approx(np.mean(lengths > cap))
    assert 0 < capped["truncated"] < 1
    assert capped["score_mean"] == pytest.approx(
        np.mean(100 * (np.array(capped["returns"]) + 20.272305) / (3234.3 + 20.272305)),
        abs=1e-3)


def test_cli_evaluates_a_mamba_run_recurrently_for_each_target(hopper_data, tmp_path, capsys):
    run_dir = train.train(tiny(hopper_data, tmp_path / "run", steps=2))
    capsys.readouterr()
    evaluate.main([str(run_dir), "--episodes", "3", "--mode", "recurrent", "--target", "500",
                   "3600", "--seed", "3", "--max-episode-steps", "6", "--device", "cpu"])
    assert "normalised score" in capsys.readouterr().out
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["model"] == "mamba" and report["step"] == 2
    assert [r["target_return"] for r in report["results"]] == [500.0, 3600.0]
    for result in report["results"]:
        assert result["mode"] == "recurrent" and result["seeds"] == [3, 4, 5]
        assert np.isfinite(result["return_mean"]) and result["lengths"] != []
        assert {"return_std", "score_mean", "score_std", "fell", "truncated",
                "wall_time_s"} <= result.keys()


def test_recurrent_mode_is_refused_for_a_transformer_run(hopper_data, tmp_path, capsys):
    run_dir = train.train(tiny(hopper_data, tmp_path / "run", model="dt", steps=2))
    message = error_of(evaluate.main, [str(run_dir), "--mode", "recurrent"], capsys)
    assert message == ("error: recurrent mode needs a Mamba model (this run is a Decision "
                       "Transformer); use --mode window.")


def test_run_folder_without_a_checkpoint_is_one_sentence(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    message = error_of(evaluate.main, [str(tmp_path / "empty")], capsys)
    assert message.startswith(f"error: {tmp_path / 'empty'} has no ckpt.pt; pass a run folder")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "ckpt.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(EvalError, match="is not a readable train.py checkpoint"):
        evaluate.load_run(tmp_path / "broken")
