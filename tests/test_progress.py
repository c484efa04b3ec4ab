"""benchmarks/progress.py: where a run stands, read from its folder, never written to."""
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import progress  # noqa: E402  (after the path is set)
from run_folder import process_start  # noqa: E402


def make_run(folder, steps=100_000, logged=(100, 200, 300), s_per_step=0.25):
    folder.mkdir()
    train = {"model": "dt", "env": "hopper", "dataset": "medium", "seed": 3, "steps": steps}
    (folder / "config.json").write_text(json.dumps({"train": train}))
    lines = [json.dumps({"step": s, "loss": 0.1, "time": s * s_per_step,
                         "steps_per_s": 1 / s_per_step}) for s in logged]
    lines.insert(2, json.dumps({"step": 200, "time": 50.0, "eval": {"score_mean": 61.4}}))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 400, "lo')  # a kill
    return folder


def test_a_stopped_run_says_its_step_rate_time_left_and_evaluations(tmp_path):
    folder = make_run(tmp_path / "run")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    text = "\n".join(progress.describe(progress.run_progress(folder)))
    assert "dt hopper medium seed 3, step 300 of 100,000 (0%); stopped" in text
    assert "0.250 s/step recently, 6.9 h left" in text  # 99,700 steps x 0.25 s
    assert "validation scores (step: normalised score): 0k 61" in text
    assert "EMA" not in text
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing written


def test_a_held_lock_reads_training_and_a_finished_run_reads_finished(tmp_path):
    held = make_run(tmp_path / "held")
    (held / "lock").write_text(json.dumps({"pid": os.getpid(),
                                           "start": process_start(os.getpid())}))
    assert f"training (pid {os.getpid()})" in progress.describe(progress.run_progress(held))[0]
    done = make_run(tmp_path / "done", steps=300)
    assert progress.describe(progress.run_progress(done))[0].endswith("(100%); finished")


def test_a_folder_that_is_not_a_run_is_one_sentence_and_the_others_still_print(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    assert progress.main([str(tmp_path / "missing"), str(run)]) == 0
    out, err = capsys.readouterr()
    assert "step 300 of 100,000" in out
    assert err == (f"skipped {tmp_path / 'missing'}: no readable train.py config.json "
                   "(not a run folder?)\n")
    assert progress.main([str(tmp_path / "missing")]) == 1
