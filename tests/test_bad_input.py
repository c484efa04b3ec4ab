"""Bad input and faults, as a user meets them at the command line: every case ends in one
sentence starting 'error:' (non-zero exit, no traceback) and nothing already saved changes.
The cases are those a probe of train.py / evaluate.py / data.py / collect.py reproduced."""
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

import cli
import data
import evaluate
import train
from test_train import ROOT, error_of, hopper_data, tiny  # noqa: F401 (hopper_data: a fixture)


def snapshot(folder):
    """Every file under folder with its bytes, to prove nothing changed."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(hopper_data, tmp_path_factory):  # noqa: F811
    """A finished tiny Mamba run (ckpt.pt, metrics.jsonl, config.json, eval.json)."""
    return train.train(tiny(hopper_data, tmp_path_factory.mktemp("finished") / "run", steps=4))


def tiny_argv(data_path, out):
    return ["--data", str(data_path), "--out", str(out), "--steps", "4", "--batch-size", "4",
            "--context", "5", "--d-model", "16", "--n-layer", "1", "--mamba-n-layer", "1",
            "--warmup-steps", "2", "--log-every", "2", "--save-every", "2", "--eval-episodes",
            "2", "--max-episode-steps", "8", "--device", "cpu"]


@pytest.mark.parametrize("flags, expected", [
    (["--lr", "nan"], "--lr must be a positive number, got nan."),
    (["--lr", "-1"], "--lr must be a positive number, got -1.0."),
    (["--seed", "-1"], "--seed must be at least 0, got -1."),
    (["--dropout", "2"], "--dropout must be in [0, 1), got 2.0."),
    (["--model", "dt", "--n-head", "3"], "--d-model 16 must be divisible by --n-head 3"),
    (["--n-head", "0"], "--n-head must be at least 1, got 0."),
    (["--mamba-n-layer", "0"], "--mamba-n-layer must be at least 1, got 0."),
    (["--max-episode-steps", "0"], "--max-episode-steps must be at least 1, got 0."),
    (["--grad-clip", "-1"], "--grad-clip must be a positive number, got -1.0."),
    (["--weight-decay", "-1"], "--weight-decay must be 0 or more, got -1.0."),
    (["--target", "nan"], "--target must be a finite return, got nan."),
    (["--target", "inf"], "--target must be a finite return, got inf."),
    (["--return-scale", "0"], "--return-scale must be a positive number, got 0.0."),
    (["--eval-every", "-5"], "--eval-every must be at least 0, got -5."),
])
def test_train_settings_that_cannot_work_are_one_sentence_before_any_file_is_written(
        flags, expected, hopper_data, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    message = error_of(train.main, tiny_argv(hopper_data, out) + flags, capsys)
    assert expected in message
    assert not out.exists()  # no half-made run folder


def test_out_that_is_a_file_is_refused_before_training(hopper_data, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    message = error_of(train.main, tiny_argv(hopper_data, out), capsys)
    assert "is a file, not a folder; pass another --out" in message
    assert out.read_text() == "mine"


def test_a_folder_holding_another_runs_files_is_not_overwritten(finished_run,  # noqa: F811
                                                                 hopper_data,
                                                                 tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    for name in ("metrics.jsonl", "eval.json"):  # a run whose checkpoint was moved away
        (out / name).write_bytes((finished_run / name).read_bytes())
    before = snapshot(out)
    message = error_of(train.main, tiny_argv(hopper_data, out), capsys)
    assert "is not empty (it holds files of another run); remove the folder or pass another --out" in message
    assert snapshot(out) == before


def test_a_second_training_of_the_same_folder_is_refused_and_a_stale_lock_taken_over(
        hopper_data, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / "lock").write_text(str(sleeper.pid))  # a live training holds the folder
        message = error_of(train.main, tiny_argv(hopper_data, out), capsys)
        assert f"another training (pid {sleeper.pid}) is using {out}" in message
        assert snapshot(out) == {out.joinpath("lock").relative_to(out): str(sleeper.pid).encode()}
    finally:
        sleeper.kill()
        sleeper.wait()
    # the holder died without removing its lock: the next training takes it over
    train.main(tiny_argv(hopper_data, out))
    assert (out / "eval.json").exists() and not (out / "lock").exists()


def test_resume_skips_a_half_written_last_metrics_line(hopper_data, tmp_path):  # noqa: F811
    run_dir = train.train(tiny(hopper_data, tmp_path / "run", steps=4))
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "loss": 0.1')  # killed in mid-write
    train.train(tiny(hopper_data, run_dir, steps=6, resume=True))
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == [2, 4, 6]


def test_disk_full_during_a_checkpoint_is_one_sentence_and_leaves_the_last_one_whole(
        finished_run, hopper_data, tmp_path, monkeypatch, capsys):  # noqa: F811
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for p in finished_run.iterdir():
        (run_dir / p.name).write_bytes(p.read_bytes())
    saved = (run_dir / "ckpt.pt").read_bytes()

    def save_then_disk_full(obj, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", save_then_disk_full)
    argv = tiny_argv(hopper_data, run_dir) + ["--resume", "--steps", "6"]
    message = error_of(train.main, argv, capsys)
    assert f"cannot write {run_dir}: the disk is full" in message and "--resume" in message
    assert (run_dir / "ckpt.pt").read_bytes() == saved
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]  # no temp file left


@pytest.mark.filterwarnings("ignore:overflow encountered")  # the returns-to-go overflow float32
def test_a_nan_loss_blames_the_learning_rate_and_the_reward_scale(tmp_path, capsys):
    """Huge returns-to-go (plausible rewards over a tiny --return-scale): the hint names
    --return-scale, not only --lr. (Rewards beyond any env's are refused before training.)"""
    path = tmp_path / "huge.hdf5"
    n = 200
    rng = np.random.default_rng(0)
    data.write_d4rl_hdf5(path, rng.normal(size=(n, 11)), rng.uniform(-1, 1, (n, 3)),
                         np.full(n, 90.0), np.arange(n) % 50 == 49, np.zeros(n, bool))
    message = error_of(train.main, tiny_argv(path, tmp_path / "run") + ["--return-scale", "1e-36"],
                       capsys)
    assert "check the data's rewards and --return-scale" in message


def test_evaluate_settings_that_cannot_work_leave_eval_json_unchanged(finished_run, capsys):
    before = (finished_run / "eval.json").read_bytes()
    for flags, expected in ((["--seed", "-1"], "--seed must be 0 or more"),
                            (["--target", "nan"], "--target must be a finite return, got nan."),
                            (["--target", "100", "inf"], "--target must be a finite return"),
                            (["--episodes", "0"], "--episodes must be at least 1"),
                            (["--max-episode-steps", "0"], "--max-episode-steps must be at least")):
        assert expected in error_of(evaluate.main, [str(finished_run), *flags], capsys)
    assert (finished_run / "eval.json").read_bytes() == before


def test_evaluate_prints_its_results_before_a_failing_write(finished_run, tmp_path, monkeypatch,
                                                            capsys):
    def disk_full(path, obj):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(evaluate, "write_json", disk_full)
    with pytest.raises(SystemExit) as stop:
        evaluate.main([str(finished_run), "--episodes", "2", "--max-episode-steps", "5",
                       "--device", "cpu"])
    assert "cannot write" in stop.value.code and "the results are printed above" in stop.value.code
    assert "normalised score" in capsys.readouterr().out


def test_a_crafted_minari_episode_or_a_text_column_is_one_sentence(tmp_path, capsys):
    with h5py.File(tmp_path / "m.hdf5", "w") as f:
        f["episode_0"] = np.zeros(5)  # an array where an episode group belongs
    with h5py.File(tmp_path / "t.hdf5", "w") as f:
        f["observations"] = np.zeros((5, 11))
        f["actions"] = np.zeros((5, 3))
        f["rewards"] = np.array([b"x"] * 5)
        f["terminals"] = np.zeros(5, bool)
    assert "is a single array, not an episode group" in error_of(
        data.main, [str(tmp_path / "m.hdf5")], capsys)
    assert "rewards holds |S1 values, not numbers" in error_of(
        data.main, [str(tmp_path / "t.hdf5")], capsys)


def test_the_real_command_lines_exit_non_zero_without_a_traceback(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for argv in (["train.py", "--lr", "nan"], ["evaluate.py", str(tmp_path), "--seed", "-1"],
                 ["policies/collect.py", "dataset", "--env", "ant"],
                 ["data.py", str(tmp_path / "x")]):
        done = subprocess.run([sys.executable, str(ROOT / argv[0]), *argv[1:]], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, (argv, done.stderr)
        assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1, done.stderr


def test_atomic_write_removes_its_temporary_file_when_writing_fails(tmp_path):
    target = tmp_path / "kept.json"
    target.write_text("old")

    def fails(tmp):
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        cli.atomic_write(target, fails)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["kept.json"]
    with pytest.raises(ValueError):  # NaN is not JSON: refused before anything is written
        cli.write_json(target, {"return": float("nan")})
    assert target.read_text() == "old"
