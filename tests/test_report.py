"""report.py on tiny run folders written here in train.py's format (no training, no env)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import report  # noqa: E402  (after the path is set)


def fake_run(folder, model, seed, score_returns, targets=(3600.0,), evaluated=True, **settings):
    """A hopper run folder: config.json, metrics.jsonl with a falling loss, eval.json with one
    result per target whose mean return is score_returns[i]."""
    folder.mkdir(parents=True)
    train = dict(model=model, env="hopper", dataset="medium", data=None, steps=20, batch_size=4,
                 context="20", lr=1e-3, seed=seed, d_model=16, n_layer=1, mamba_n_layer=2,
                 out=str(folder), resume=False, compile=False, preset=None)
    train.update(settings)
    (folder / "config.json").write_text(json.dumps(dict(
        train=train, model={"backbone": "gpt" if model == "dt" else "mamba"}, eval_mode="window",
        target_return=targets[0], device="cpu",
        data=dict(path="data/hopper-medium.hdf5", return_mean=1500.0, return_max=3100.0),
        versions=dict(torch="9.9", python="3.x"))))
    (folder / "metrics.jsonl").write_text("".join(
        json.dumps(dict(step=s, loss=1.0 / s, lr=1e-3, time=0.1 * s)) + "\n"
        for s in (5, 10, 15, 20)) + json.dumps(dict(step=20, time=2.0, eval={})) + "\n")
    if evaluated:
        results = [dict(env="hopper", target_return=t, mode="window", episodes=2,
                        return_mean=r, return_std=10.0, score_mean=(r + 20.272305) / 32.545723,
                        score_std=0.3, fell=0.5, truncated=0.5, length_mean=500.0)
                   for t, r in zip(targets, score_returns)]
        # train.py's eval.json (one target) or evaluate.py's (its config names the run folder)
        config = dict(episodes=2, seed=10000, mode="window", target=list(targets))
        if len(targets) > 1:
            config.update(run_dir=str(folder), max_episode_steps=None, video=None, device="cpu")
        (folder / "eval.json").write_text(json.dumps(dict(
            run_dir=str(folder), env="hopper", model=model, step=20, device="cpu", config=config,
            results=results)))


@pytest.fixture()
def runs(tmp_path):
    fake_run(tmp_path / "runs" / "dt-s0", "dt", 0, [1000.0])
    fake_run(tmp_path / "runs" / "dt-s1", "dt", 1, [1200.0])
    fake_run(tmp_path / "runs" / "mamba-s0", "mamba", 0, [2000.0, 2500.0], targets=(3600.0, 2000.0))
    fake_run(tmp_path / "runs" / "mamba-s1", "mamba", 1, [2200.0], evaluated=True)
    fake_run(tmp_path / "runs" / "mamba-s2", "mamba", 2, [], evaluated=False)
    fake_run(tmp_path / "runs" / "dt-lowlr-s0", "dt", 0, [500.0], lr=1e-4)  # another experiment
    (tmp_path / "runs" / "ars-hopper").mkdir()  # not a train.py run: listed as skipped
    return tmp_path


def test_report_tables_hold_seed_statistics_dataset_returns_and_figures(runs):
    out = runs / "REPORT.md"
    cfg = report.ReportConfig(runs=tuple(sorted(str(p) for p in (runs / "runs").iterdir())),
                              profile=(), out=str(out), figures=str(runs / "figures"))
    report.write_report(cfg)
    text = out.read_text()
    # DT: seeds 1000 and 1200 -> 1100 +- 141 (ddof=1); Mamba at its own target: 2000, 2200
    assert "| hopper | medium | DT | 20 | window | dt | 0,1 | 1100 ± 141 (ep. sd 10)" in text
    assert "| Mamba | 20 | window | mamba | 0,1,2 (2 evaluated) | 2100 ± 141" in text
    # a run with other settings is its own experiment, not a third seed, and says how it differs
    assert "| DT | 20 | window | dt-lowlr | 0 | 500 (ep. sd 10) |" in text
    assert "mamba (Mamba, window mode) vs dt-lowlr (DT, window mode): Mamba scores higher by " \
           "49.2 normalised points" in text and "also differ in lr." in text
    # the dataset's own mean and best return, with their normalised scores
    assert "1500 (46.7)" in text and "3100 (95.9)" in text
    assert "mamba (Mamba, window mode) vs dt (DT, window mode): Mamba scores higher by 30.7 " \
           "normalised points (Mamba 65.1, DT 34.4); the difference is larger than the sum of " \
           "the seed stds (8.7)." in text
    for png in ("loss-hopper.png", "return-vs-target.png"):
        assert (runs / "figures" / png).stat().st_size > 0
    assert "figures/loss-hopper.png" in text
    assert "Targets evaluated: 2000, 3600." in text
    assert "skipped " + str(runs / "runs" / "ars-hopper") in text
    assert "mamba-s2 has no eval.json" in text
    assert "GPU runtime and memory figures are owed" in text
    assert "python train.py --model dt --env hopper --dataset medium --steps 20" in text
    assert ("python evaluate.py " + str(runs / "runs" / "mamba-s0") +
            " --episodes 2 --seed 10000 --mode window --target 3600.0 2000.0") in text
    assert "python evaluate.py " + str(runs / "runs" / "dt-s0") not in text  # train.py wrote it
    assert "python report.py " + " ".join(cfg.runs) in text


def test_report_includes_a_profile_result(runs, tmp_path):
    profile = tmp_path / "results" / "profile-cuda-test.json"
    profile.parent.mkdir()
    profile.write_text(json.dumps(dict(device="cuda-test", latency=[], date="today", wall_s=3.0,
                                       command="python profile.py -x")))
    profile.with_suffix(".md").write_text("## Runtime and memory on Test GPU\n| K | x |\n")
    out = runs / "REPORT.md"
    report.write_report(report.ReportConfig(runs=(str(runs / "runs" / "dt-s0"),),
                                            profile=(str(profile),), out=str(out),
                                            figures=str(runs / "figures")))
    text = out.read_text()
    assert "### Runtime and memory on Test GPU" in text and "| K | x |" in text
    assert "GPU runtime and memory figures are owed" not in text
    assert "\npython profile.py -x\n" in text


def test_report_on_a_folder_without_runs_says_what_to_do_in_one_sentence(tmp_path):
    result = subprocess.run([sys.executable, "report.py", str(tmp_path), str(tmp_path / "nope"),
                             "--out", str(tmp_path / "R.md")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "python train.py" in lines[0]
    assert not (tmp_path / "R.md").exists()


def test_crafted_run_files_are_skipped_or_read_around_not_a_traceback(runs, tmp_path):
    """A metrics line without a step, config.json that is not train.py's, eval.json that is not
    evaluate.py's: the report still comes out, the bad runs listed as skipped."""
    with open(runs / "runs" / "dt-s0" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"loss": 0.5}) + "\n" + json.dumps([1, 2]) + "\n")
    for name, config in (("list", [1, 2]), ("train-not-dict", {"train": 5}),
                         ("train-partial", {"train": {"model": "dt"}})):
        (runs / "runs" / name).mkdir()
        (runs / "runs" / name / "config.json").write_text(json.dumps(config))
    (runs / "runs" / "dt-s1" / "eval.json").write_text(json.dumps({"results": "oops"}))
    out = tmp_path / "R.md"
    result = subprocess.run([sys.executable, "report.py", *map(str, (runs / "runs").iterdir()),
                             "--out", str(out), "--figures", str(tmp_path / "fig")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    text = out.read_text()
    assert "config.json lacks env, dataset, seed, context" in text
    assert "no readable train.py config.json" in text
