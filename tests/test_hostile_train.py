"""Hostile input against train.py and evaluate.py: real signals and real file-size limits in child
processes, resumes on other data, reused pids, impossible sizes, files of the wrong kind, and
evaluate.py refusing to write over what it did not write. Each case ends in one sentence, with
nothing saved lost (issue 25)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import evaluate
import run_folder
import train
from evaluate import EvalConfig, EvalError
from tests.test_train import ROOT, hopper_data, tiny, write_random_dataset  # noqa: F401
from train import TrainConfig, TrainError

TINY_FLAGS = ["--model", "dt", "--batch-size", 4, "--context", 5, "--d-model", 16,
              "--n-layer", 1, "--eval-episodes", 2, "--max-episode-steps", 8, "--device", "cpu"]


def child(args, cwd, limit_bytes=None, **popen):
    """train.py / evaluate.py in a child process; under RLIMIT_FSIZE with SIGXFSZ ignored when
    limit_bytes is given (a write past the limit then fails with EFBIG, as on a real limit)."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        import resource
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, *map(str, args)], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=limit if limit_bytes is not None else None, **popen)


def one_sentence(stderr):
    lines = [line for line in stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_sigterm_saves_a_checkpoint_and_the_run_resumes(hopper_data, tmp_path):
    run_dir = tmp_path / "run"
    proc = child([ROOT / "train.py", *TINY_FLAGS, "--data", hopper_data, "--steps", 100_000,
                  "--log-every", 1, "--save-every", 100_000, "--out", run_dir], tmp_path)
    deadline = time.time() + 120
    while not (run_dir / "metrics.jsonl").exists() or not (
            run_dir / "metrics.jsonl").read_text().count("loss") >= 3:
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped at step" in out and "(SIGTERM)" in out
    step = torch.load(run_dir / "ckpt.pt", weights_only=True)["step"]
    assert 3 <= step < 100_000 and not list(run_dir.glob(".*.tmp"))
    train.train(train.parse_config(["--out", str(run_dir), "--resume", "--steps",
                                    str(step + 2)]))
    assert torch.load(run_dir / "ckpt.pt", weights_only=True)["step"] == step + 2


def test_a_real_file_size_limit_is_one_sentence_and_keeps_the_last_checkpoint(
        hopper_data, tmp_path):
    run_dir = train.train(tiny(hopper_data, tmp_path / "run", model="dt", steps=4))
    before = (run_dir / "ckpt.pt").read_bytes()
    size = len(before)
    proc = child([ROOT / "train.py", "--out", run_dir, "--resume", "--steps", 8], tmp_path,
                 limit_bytes=size // 2)  # config.json fits, the checkpoint does not
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert "file-size limit" in one_sentence(err) and "--resume" in err
    assert (run_dir / "ckpt.pt").read_bytes() == before  # the last checkpoint, untouched
    assert not list(run_dir.glob(".*.tmp"))
    # the lock itself cannot be written: one sentence too
    proc = child([ROOT / "train.py", "--out", run_dir, "--resume", "--steps", 8], tmp_path,
                 limit_bytes=0)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "cannot" in one_sentence(err)


def test_resume_refuses_other_data_and_a_budget_already_passed(tmp_path):
    data = write_random_dataset(tmp_path / "d.hdf5", seed=0)
    run_dir = train.train(tiny(data, tmp_path / "run", model="dt", steps=4))
    with pytest.raises(TrainError, match="already at step 4, past --steps 2"):
        train.train(tiny(data, run_dir, model="dt", steps=2, resume=True))
    write_random_dataset(data, seed=1)  # regenerated in place: other transitions, same path
    with pytest.raises(TrainError, match="not the data .* was trained on"):
        train.train(tiny(data, run_dir, model="dt", steps=8, resume=True))


def test_a_lock_of_a_reused_pid_is_taken_over_and_a_live_one_refused(hopper_data, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lock = run_dir / "lock"
    live = {"pid": os.getpid(), "start": run_folder.process_start(os.getpid())}
    lock.write_text(json.dumps(live))  # this very process: alive, same start time
    with pytest.raises(TrainError, match=f"another training \\(pid {os.getpid()}\\)"):
        train.train(tiny(hopper_data, run_dir, model="dt"))
    lock.write_text(json.dumps({**live, "start": live["start"] - 1}))  # the pid, reused
    train.train(tiny(hopper_data, run_dir, model="dt"))
    assert (run_dir / "eval.json").exists() and not lock.exists()


@pytest.mark.parametrize("flags, says", [
    ({"batch_size": 10**9}, "needs about"), ({"context": "100000"}, "longer than any episode"),
    ({"max_episode_steps": 10**12}, "longer than any episode")])
def test_sizes_that_cannot_fit_are_refused_before_a_folder_is_made(hopper_data, tmp_path,
                                                                   flags, says):
    with pytest.raises(TrainError, match=says):
        train.train(tiny(hopper_data, tmp_path / "run", **flags))
    assert not (tmp_path / "run").exists()


def test_run_files_of_the_wrong_kind_and_foreign_checkpoints_are_one_sentence(
        hopper_data, tmp_path):
    (tmp_path / "a" / "metrics.jsonl").mkdir(parents=True)
    with pytest.raises(TrainError, match="is not a regular file"):
        train.train(tiny(hopper_data, tmp_path / "a"))
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(TrainError, match="is a link to nothing"):
        train.train(tiny(hopper_data, tmp_path / "dangling"))
    run_dir = train.train(tiny(hopper_data, tmp_path / "b", model="dt", steps=2))
    ckpt = torch.load(run_dir / "ckpt.pt", weights_only=True)
    ckpt["model"]["embed_state.weight"] = torch.zeros(3, 3)  # edited to another shape
    torch.save(ckpt, run_dir / "ckpt.pt")
    with pytest.raises(TrainError, match="does not fit this model"):
        train.train(tiny(hopper_data, run_dir, model="dt", steps=4, resume=True))
    with pytest.raises(EvalError, match="weights of another shape"):
        evaluate.load_run(run_dir)
    torch.save({"model": {}}, run_dir / "ckpt.pt")  # a checkpoint of something else
    with pytest.raises(TrainError, match="not a train.py checkpoint"):
        train.train(tiny(hopper_data, run_dir, model="dt", steps=4, resume=True))


def test_out_of_memory_is_one_sentence_and_the_folder_can_be_reused(hopper_data, tmp_path,
                                                                   monkeypatch):
    def no_memory(*args):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't "
                           "allocate memory: you tried to allocate 99999999999 bytes.")
    with monkeypatch.context() as m:
        m.setattr(train, "train_step", no_memory)
        with pytest.raises(TrainError, match="out of memory at step 1 .*lower --batch-size"):
            train.train(tiny(hopper_data, tmp_path / "run"))
    train.train(tiny(hopper_data, tmp_path / "run"))  # no checkpoint was left: start again
    assert (tmp_path / "run" / "eval.json").exists()


def test_evaluate_refuses_to_write_over_what_it_did_not_write(hopper_data, tmp_path):
    run_dir = train.train(tiny(hopper_data, tmp_path / "run"))
    quick = dict(episodes=2, max_episode_steps=8, device="cpu")
    with pytest.raises(EvalError, match="was not written by this command"):
        evaluate.evaluate_run(EvalConfig(str(run_dir), out=str(run_dir / "ckpt.pt"), **quick))
    assert torch.load(run_dir / "ckpt.pt", weights_only=True)["step"] == 6  # untouched
    notes = tmp_path / "notes.md"
    notes.write_text("mine\n")
    with pytest.raises(EvalError, match="add --force"):
        evaluate.evaluate_run(EvalConfig(str(run_dir), out=str(notes), **quick))
    evaluate.evaluate_run(EvalConfig(str(run_dir), out=str(notes), force=True, **quick))
    evaluate.evaluate_run(EvalConfig(str(run_dir), **quick))  # its own eval.json: replaced
    assert json.loads(notes.read_text())["results"]


def test_evaluate_stops_on_sigterm_without_writing(hopper_data, tmp_path):
    run_dir = train.train(tiny(hopper_data, tmp_path / "run"))
    (run_dir / "eval.json").unlink()
    proc = child([ROOT / "evaluate.py", run_dir, "--episodes", 200, "--device", "cpu"], tmp_path)
    fd, seen, deadline = proc.stderr.fileno(), b"", time.time() + 120
    os.set_blocking(fd, False)
    while b"eval hopper" not in seen:  # the rollouts have begun (200 episodes: a while)
        assert time.time() < deadline and proc.poll() is None, seen
        try:
            seen += os.read(fd, 1 << 16)
        except BlockingIOError:
            time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "nothing was written" in err and "Traceback" not in err
    assert not (run_dir / "eval.json").exists() and not list(run_dir.glob(".*.tmp"))


def test_a_run_stopped_before_its_first_checkpoint_can_be_started_again(hopper_data,
                                                                       tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    with pytest.raises(TrainError, match="run the same command without --resume"):
        train.train(tiny(hopper_data, run_dir, resume=True))
    train.train(tiny(hopper_data, run_dir))
    assert TrainConfig  # the config class the tests build from
    assert (run_dir / "eval.json").exists()


def test_the_course_copy_past_a_real_file_size_limit_is_one_sentence(tmp_path):
    proc = child([ROOT / "course" / "assignments.py", "student", tmp_path / "copy"], tmp_path,
                 limit_bytes=50_000)  # REPORT.md and the larger sources do not fit
    _, err = proc.communicate(timeout=300)
    message = one_sentence(err)
    assert proc.returncode == 1 and ("file-size limit" in message or "File too large" in message)
