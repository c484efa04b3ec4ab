"""train.py: end-to-end runs, exact resume, seeding, NaN and Ctrl-C stops, bad-input messages."""
import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import ssm
import train
from data import load_trajectories, write_d4rl_hdf5
from dt import DecisionModel
from train import TrainConfig, TrainError

ROOT = Path(__file__).resolve().parents[1]


def write_random_dataset(path, env_id="Hopper-v5", transitions=300, episode_cap=40, seed=0):
    """A tiny D4RL-schema file from uniform random actions in the real env."""
    env = gym.make(env_id, max_episode_steps=episode_cap)
    rng = np.random.default_rng(seed)
    columns = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts")}
    obs, _ = env.reset(seed=seed)
    while len(columns["rewards"]) < transitions:
        action = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(columns, (obs, action, reward, terminated,
                                        truncated and not terminated)):
            columns[key].append(value)
        obs = env.reset()[0] if terminated or truncated else next_obs
    return write_d4rl_hdf5(path, **{k: np.array(v) for k, v in columns.items()},
                           attrs={"env": env_id})


@pytest.fixture(scope="module")
def hopper_data(tmp_path_factory):
    return write_random_dataset(tmp_path_factory.mktemp("data") / "hopper-tiny.hdf5")


def tiny(data, out, **overrides):
    """A config that trains and evaluates in about a second."""
    cfg = TrainConfig(model="mamba", data=str(data), steps=6, batch_size=4, context="5",
                      d_model=16, n_layer=1, mamba_n_layer=1, warmup_steps=2, log_every=2,
                      save_every=3, eval_episodes=2, max_episode_steps=8, device="cpu",
                      out=str(out))
    return replace(cfg, **overrides)


def parameters(run_dir):
    return torch.load(Path(run_dir) / "ckpt.pt", weights_only=True)["model"]


def assert_same_parameters(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def run_cli(script, *args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("model, how", [("mamba", "subprocess"), ("dt", "main()")])
def test_cli_run_of_each_model_writes_every_file_and_a_finite_score(
        model, how, hopper_data, tmp_path, monkeypatch, capsys):
    argv = ["--model", model, "--data", hopper_data, "--steps", 4, "--batch-size", 4,
            "--context", 5, "--d-model", 16, "--n-layer", 1, "--mamba-n-layer", 1,
            "--eval-every", 2, "--eval-episodes", 2, "--max-episode-steps", 8, "--log-every", 2]
    if how == "subprocess":  # the real command line, once
        result = run_cli("train.py", *argv, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        stdout = result.stdout
    else:
        monkeypatch.chdir(tmp_path)
        train.main([str(a) for a in argv])
        stdout = capsys.readouterr().out
    run_dir = tmp_path / "runs" / f"{model}-hopper-hopper-tiny-s0"
    assert f"run folder: {run_dir.relative_to(tmp_path)}" in stdout
    assert "normalised score" in stdout
    assert {p.name for p in run_dir.iterdir()} == {"config.json", "metrics.jsonl", "ckpt.pt",
                                                   "eval.json"}
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["model"] == model and config["data"]["transitions"] == 300
    # the run records which scan trained it (the C kernels where they build, else PyTorch)
    assert config["scan_backend"] == (ssm.default_scan_backend("cpu") if model == "mamba"
                                      else None)
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == [2, 4]
    assert [r["step"] for r in lines if "eval" in r] == [2, 4]  # periodic, then the final one
    assert all(np.isfinite(r["loss"]) and r["lr"] > 0 for r in lines if "loss" in r)
    (result,) = json.loads((run_dir / "eval.json").read_text())["results"]
    assert np.isfinite(result["score_mean"]) and result["episodes"] == 2
    assert result["fell"] + result["truncated"] == pytest.approx(1.0)
    ckpt = torch.load(run_dir / "ckpt.pt", weights_only=True)
    assert ckpt["step"] == 4 and ckpt["env"] == "hopper" and ckpt["return_scale"] == 1000.0
    assert {"model", "optimizer", "scheduler", "rng", "config", "model_config", "state_mean",
            "state_std"} <= ckpt.keys()


@pytest.mark.parametrize("model", ["dt", "mamba"])
def test_resume_after_n_steps_equals_2n_steps_straight(model, hopper_data, tmp_path):
    train.train(tiny(hopper_data, tmp_path / "straight", model=model, steps=8))
    train.train(tiny(hopper_data, tmp_path / "resumed", model=model, steps=4))
    first_half = parameters(tmp_path / "resumed")
    train.train(tiny(hopper_data, tmp_path / "resumed", model=model, steps=8, resume=True))
    straight, resumed = parameters(tmp_path / "straight"), parameters(tmp_path / "resumed")
    assert_same_parameters(straight, resumed)
    assert not torch.equal(first_half["embed_state.weight"], resumed["embed_state.weight"])
    losses = [[json.loads(line)["loss"] for line in (tmp_path / name / "metrics.jsonl")
               .read_text().splitlines() if "loss" in line] for name in ("straight", "resumed")]
    assert losses[0] == losses[1] and len(losses[0]) == 4


def test_same_seed_gives_the_same_run_and_another_seed_does_not(hopper_data, tmp_path):
    runs = {name: train.train(tiny(hopper_data, tmp_path / name, seed=seed))
            for name, seed in (("a", 0), ("b", 0), ("c", 1))}
    assert_same_parameters(parameters(runs["a"]), parameters(runs["b"]))
    evals = {name: json.loads((path / "eval.json").read_text())["results"][0]
             for name, path in runs.items()}
    assert evals["a"]["returns"] == evals["b"]["returns"]
    assert not torch.equal(parameters(runs["a"])["embed_state.weight"],
                           parameters(runs["c"])["embed_state.weight"])


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(
        hopper_data, tmp_path, monkeypatch):
    real_forward, calls = DecisionModel.forward, []

    def forward_that_fails_at_call_5(self, *args, **kwargs):
        calls.append(1)
        prediction, loss = real_forward(self, *args, **kwargs)
        return prediction, loss * float("nan") if len(calls) == 5 else loss

    monkeypatch.setattr(DecisionModel, "forward", forward_that_fails_at_call_5)
    run_dir = tmp_path / "run"
    with pytest.raises(TrainError, match=r"loss became nan at step 5; the last good checkpoint "
                                         r"\(step 3\) is in .*run; try a lower --lr"):
        train.train(tiny(hopper_data, run_dir, steps=10, save_every=3))
    ckpt = torch.load(run_dir / "ckpt.pt", weights_only=True)
    assert ckpt["step"] == 3
    assert all(torch.isfinite(p).all() for p in ckpt["model"].values())
    assert not (run_dir / "eval.json").exists()


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes_the_run(hopper_data, tmp_path,
                                                               monkeypatch):
    real_forward, calls = DecisionModel.forward, []

    def forward_that_presses_ctrl_c_at_call_3(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # the handler only sets a flag
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(DecisionModel, "forward", forward_that_presses_ctrl_c_at_call_3)
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train.train(tiny(hopper_data, run_dir, steps=10, save_every=100))
    assert torch.load(run_dir / "ckpt.pt", weights_only=True)["step"] == 3
    monkeypatch.undo()
    train.train(tiny(hopper_data, run_dir, steps=10, save_every=100, resume=True))
    assert torch.load(run_dir / "ckpt.pt", weights_only=True)["step"] == 10
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text()
             .splitlines() if "loss" in line]
    assert steps == [2, 4, 6, 8, 10]


def test_full_context_mamba_trains_on_whole_episodes_and_evaluates_recurrently(hopper_data,
                                                                             tmp_path):
    run_dir = train.train(tiny(hopper_data, tmp_path / "run", context="full", steps=2))
    ckpt = torch.load(run_dir / "ckpt.pt", weights_only=True)
    longest = max(len(t) for t in load_trajectories(hopper_data))
    assert ckpt["model_config"]["context_len"] == longest > 5
    (result,) = json.loads((run_dir / "eval.json").read_text())["results"]
    assert result["mode"] == "recurrent" and np.isfinite(result["return_mean"])


def test_paper_preset_sets_the_dt_paper_settings_and_explicit_flags_win():
    cfg = train.parse_config(["--preset", "paper", "--steps", "50"])
    assert (cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.warmup_steps, cfg.grad_clip,
            cfg.context, cfg.return_scale) == (64, 1e-4, 1e-4, 10_000, 0.25, "20", 1000.0)
    assert cfg.steps == 50
    assert train.default_out(vars(cfg)) == "runs/mamba-hopper-medium-paper-s0"


def test_a_flag_given_twice_takes_its_last_value_as_experiments_sh_relies_on():
    cfg = train.parse_config(["--ema", "0.999", "--eval-every", "1000", "--ema", "0",
                              "--eval-every", "2000"])
    assert (cfg.ema, cfg.eval_every) == (0.0, 2000)


def test_report_preset_keeps_the_default_models_and_sets_the_pilots_budget():
    cfg, default = train.parse_config(["--preset", "report"]), train.TrainConfig()
    assert cfg.steps == train.REPORT_STEPS > default.steps
    assert (cfg.eval_every, cfg.save_every) == (1000, 1000)
    assert (cfg.d_model, cfg.n_layer, cfg.mamba_n_layer, cfg.lr, cfg.batch_size) == (
        default.d_model, default.n_layer, default.mamba_n_layer, default.lr, default.batch_size)


def error_of(main, argv, capsys):
    """The message a CLI exits with: one line starting 'error:', no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    message = exit_info.value.code
    assert isinstance(message, str) and message.startswith("error: "), message
    assert "\n" not in message and "Traceback" not in capsys.readouterr().err
    return message


@pytest.mark.parametrize("argv, expected", [
    (["--env", "ant"], "unknown env 'ant': choose one of hopper, halfcheetah, walker2d."),
    (["--dataset", "great"], "unknown dataset 'great': choose one of random, medium, "
                             "medium-replay, expert, medium-expert."),
    (["--model", "gpt"], "unknown model 'gpt': choose one of dt, mamba."),
    (["--context", "zero"], "--context must be a positive number of steps or 'full'"),
    (["--preset", "huge"], "unknown preset 'huge': choose one of paper, report."),
])
def test_unknown_choices_are_one_sentence_listing_the_choices(argv, expected, capsys):
    assert expected in error_of(train.main, argv, capsys)


def test_data_file_of_another_env_is_refused(hopper_data, tmp_path, capsys):
    message = error_of(train.main, ["--env", "walker2d", "--data", str(hopper_data), "--out",
                                    str(tmp_path / "run")], capsys)
    assert "Walker2d-v5 has 17 and 6; pass --env hopper" in message
    assert not (tmp_path / "run").exists()


def test_existing_run_is_kept_unless_resumed_and_resume_refuses_another_config(
        hopper_data, tmp_path, capsys):
    run_dir = train.train(tiny(hopper_data, tmp_path / "run", steps=2))
    saved = (run_dir / "ckpt.pt").read_bytes()
    base = ["--data", str(hopper_data), "--out", str(run_dir)]
    assert "already holds a checkpoint; add --resume" in error_of(train.main, base, capsys)
    for argv, flag in ((["--model", "dt"], "--model mamba, not dt"),
                       (["--env", "walker2d"], "--env hopper, not walker2d"),
                       (["--lr", "0.5"], "--lr 0.001, not 0.5")):
        message = error_of(train.main, base + ["--resume"] + argv, capsys)
        assert f"was trained with {flag}; resume with the same" in message
    assert (run_dir / "ckpt.pt").read_bytes() == saved
    assert "has no checkpoint to continue" in error_of(
        train.main, ["--resume", "--out", str(tmp_path / "empty")], capsys)


def test_bad_input_at_the_real_command_line_is_one_line_without_traceback(tmp_path):
    result = run_cli("train.py", "--model", "transformer", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == "error: unknown model 'transformer': choose one of dt, mamba.\n"
    assert not (tmp_path / "runs").exists()


def test_the_dt_uses_relu_as_the_papers_code_and_runs_saved_with_gelu_still_resume(
        hopper_data, tmp_path):
    run_dir = train.train(tiny(hopper_data, tmp_path / "run", model="dt", steps=2))
    ckpt = torch.load(run_dir / "ckpt.pt", weights_only=True)
    assert ckpt["config"]["activation"] == ckpt["model_config"]["activation"] == "relu"
    # a run saved before the activation was a setting: its GPT used GELU
    del ckpt["config"]["activation"], ckpt["model_config"]["activation"]
    torch.save(ckpt, run_dir / "ckpt.pt")
    model, _ = __import__("evaluate").load_run(run_dir)
    assert model.config.activation == "gelu"
    resumed = train.parse_config(["--out", str(run_dir), "--resume", "--steps", "3"])
    assert resumed.activation == "gelu"
    train.train(resumed)
    assert torch.load(run_dir / "ckpt.pt", weights_only=True)["step"] == 3


def test_resuming_a_finished_run_scores_it_again_without_a_second_record(hopper_data, tmp_path):
    run_dir = train.train(tiny(hopper_data, tmp_path / "run", model="dt", steps=4, eval_every=2))
    before = (run_dir / "metrics.jsonl").read_text()
    train.train(train.parse_config(["--out", str(run_dir), "--resume"]))
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "eval" in r] == [2, 4]  # the periodic one, the final one
    assert (run_dir / "metrics.jsonl").read_text().splitlines()[:-1] == before.splitlines()[:-1]


def test_a_preset_given_again_on_resume_keeps_the_runs_own_settings(hopper_data, tmp_path):
    run_dir = train.train(tiny(hopper_data, tmp_path / "run", model="dt", steps=2,
                               eval_episodes=3))
    again = train.parse_config(["--out", str(run_dir), "--resume", "--preset", "report"])
    assert (again.steps, again.eval_episodes) == (2, 3)  # not the preset's 4000 and 20
    assert train.parse_config(["--out", str(run_dir), "--resume", "--preset", "report",
                               "--steps", "5"]).steps == 5  # a flag typed still wins


def test_every_model_setting_is_a_train_flag_with_dt_pys_help_and_reaches_the_model(
        hopper_data, tmp_path):
    from dataclasses import fields
    flags = {f.name for f in fields(TrainConfig)}
    model_only = {"state_dim", "act_dim", "backbone", "context_len", "max_ep_len"}  # from data
    assert {f.name for f in fields(train.DecisionConfig)} - model_only <= flags
    assert TrainConfig.__dataclass_fields__["d_state"].metadata["help"] == \
        train.DecisionConfig.__dataclass_fields__["d_state"].metadata["help"]
    cfg = train.parse_config(["--model", "dt", "--no-fast-attention", "--d-state", "8"])
    assert cfg.fast_attention is False and cfg.d_state == 8
    run_dir = train.train(tiny(hopper_data, tmp_path / "m", d_state=8, expand=1,
                               scan_backend="torch"))
    model = json.loads((run_dir / "config.json").read_text())["model"]
    assert (model["d_state"], model["expand"], model["scan_backend"]) == (8, 1, "torch")
    run_dir = train.train(tiny(hopper_data, tmp_path / "d", model="dt", fast_attention=False))
    assert json.loads((run_dir / "config.json").read_text())["model"]["fast_attention"] is False
