"""experiments.sh: the job list, and one job's steps, run with a stand-in for python that records
its calls and writes the files train.py and evaluate.py would (no training here)."""
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FAKE_PYTHON = r"""#!/usr/bin/env bash
echo "$*" >> calls.log
out=""; prev=""
for a in "$@"; do [ "$prev" = --out ] && out=$a; prev=$a; done
case $1 in
  train.py) mkdir -p "$out"
            for f in config.json metrics.jsonl ckpt.pt; do echo x > "$out/$f"; done ;;
  evaluate.py) if [ -n "$out" ]; then echo sweep > "$out"; else echo e > "$2/eval.json"; fi ;;
esac
"""


def sandbox(tmp_path):
    """experiments.sh copied into tmp_path beside the stand-in python; returns the stand-in."""
    shutil.copy(ROOT / "experiments.sh", tmp_path)
    fake = tmp_path / "fakepy"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    return fake


def jobs():
    lines = subprocess.run(["bash", "experiments.sh", "jobs"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    return lines


def test_job_list_covers_every_cell_with_three_seeds_and_the_whole_episode_runs():
    lines = jobs()
    assert all(line.startswith("bash experiments.sh one ") for line in lines)
    names = [line.split()[3] for line in lines]
    assert len(names) == len(set(names)) == 3 * 3 * 2 * 3 + 3 * 3
    for env in ("hopper", "halfcheetah", "walker2d"):
        for dataset in ("medium", "medium-replay", "medium-expert"):
            for model in ("dt", "mamba"):
                assert {f"{model}-{env}-{dataset}-s{s}" for s in (0, 1, 2)} <= set(names)
        full = [line for line in lines if f"mamba-{env}-medium-full-" in line]
        assert len(full) == 3 and all("--context full" in line for line in full)


def test_one_job_trains_evaluates_sweeps_copies_records_resumes_and_skips(tmp_path):
    fake = sandbox(tmp_path)
    line = next(line for line in jobs() if " dt-walker2d-medium-s0 " in line)

    def run_line():
        return subprocess.run(["bash", "-c", line], cwd=tmp_path, capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin", "PYTHON": str(fake)}, check=True)

    run_line()
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls[0].startswith("train.py --preset report --out runs/report/dt-walker2d-medium-s0 "
                               "--model dt --env walker2d --dataset medium --seed 0")
    assert "--resume" not in calls[0]
    assert calls[1] == ("evaluate.py runs/report/dt-walker2d-medium-s0 --episodes 100 "
                        "--target 5000 2500")
    assert calls[2].startswith("evaluate.py runs/report/dt-walker2d-medium-s0 --episodes 20 "
                               "--out runs/report/dt-walker2d-medium-s0/targets.json --target "
                               "500 1250 2500 3750 5000 6250")
    record = tmp_path / "results/report-runs/dt-walker2d-medium-s0"
    assert sorted(p.name for p in record.iterdir()) == ["config.json", "eval.json",
                                                        "metrics.jsonl", "targets.json"]
    # finished: skipped without a call; records gone but a checkpoint there: resumed
    assert "finished" in run_line().stdout and len((tmp_path / "calls.log").read_text()
                                                   .splitlines()) == 3
    shutil.rmtree(record)
    run_line()
    assert (tmp_path / "calls.log").read_text().splitlines()[3].endswith("--resume")
    # killed before its first checkpoint: the half-made folder is cleared, trained from scratch
    shutil.rmtree(record)
    run = tmp_path / "runs/report/dt-walker2d-medium-s0"
    (run / "ckpt.pt").unlink()
    (run / "lock").write_text("1")
    run_line()
    assert not (run / "lock").exists()  # cleared: train.py refuses a folder with a config in it
    trains = [c for c in (tmp_path / "calls.log").read_text().splitlines() if "train.py" in c]
    assert len(trains) == 3 and "--resume" not in trains[-1]
    assert (record / "eval.json").exists()


def test_pilot_trains_both_models_on_each_medium_dataset_and_keeps_the_records(tmp_path):
    fake = sandbox(tmp_path)
    subprocess.run(["bash", "experiments.sh", "pilot"], cwd=tmp_path, check=True,
                   env={"PATH": "/usr/bin:/bin", "PYTHON": str(fake)}, capture_output=True)
    calls = sorted((tmp_path / "calls.log").read_text().splitlines())
    assert len(calls) == 6 and all("--steps 10000 --eval-every 1000 --eval-episodes 20" in c
                                   for c in calls)
    for env in ("hopper", "halfcheetah", "walker2d"):
        for model in ("dt", "mamba"):
            record = tmp_path / f"results/pilot/{model}-{env}-medium-s0"
            assert sorted(p.name for p in record.iterdir()) == ["config.json", "metrics.jsonl"]


def pilot_job(tmp_path, listing, index, times=1):
    """List a pilot's jobs with `bash experiments.sh LISTING`, run job `index` `times` times
    with a fake python; returns (the job lines, the train.py calls, the job's record folder)."""
    fake = sandbox(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(fake)}
    lines = subprocess.run(["bash", "experiments.sh", listing], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for _ in range(times):
        subprocess.run(["bash", "-c", lines[index]], cwd=tmp_path, env=env, check=True,
                       capture_output=True)
    pilot, name = lines[index].split()[3:5]
    record = tmp_path / "results" / pilot / name
    assert sorted(p.name for p in record.iterdir()) == ["config.json", "metrics.jsonl"]
    return lines, (tmp_path / "calls.log").read_text().splitlines(), record


def test_the_medium_expert_pilot_trains_its_recipe_on_validation_seeds_and_keeps_records(
        tmp_path):
    # the second time the job is finished and skipped
    lines, calls, record = pilot_job(tmp_path, "pilot-me-jobs", 0, times=2)
    names = {line.split()[4] for line in lines}
    assert names == {f"cosine-16k-{m}-{e}-medium-expert-s{s}" for e in ("hopper", "walker2d")
                     for m in ("dt", "mamba") for s in (0, 1, 2)}
    assert calls == ["train.py --steps 16000 --lr-schedule cosine --ema 0.999 --eval-every 1000 "
                     f"--eval-episodes 20 --save-every 1000 --out runs/pilot-me/{record.name} "
                     "--model dt --env hopper --dataset medium-expert --seed 0"]


def test_the_long_budget_check_trains_hopper_medium_expert_at_48000_steps_without_ema(tmp_path):
    lines, calls, _ = pilot_job(tmp_path, "pilot-long-jobs", 3)
    assert [line.split()[4] for line in lines] == [
        f"cosine-48k-{m}-hopper-medium-expert-s{s}" for m in ("mamba", "dt") for s in (0, 1, 2)]
    # the job's own flags come last, so they override pilot-one's EMA and evaluation spacing
    assert calls == [
        "train.py --steps 48000 --lr-schedule cosine --ema 0.999 --eval-every 1000 "
        "--eval-episodes 20 --save-every 1000 --out runs/pilot-long/cosine-48k-dt-hopper-"
        "medium-expert-s0 --model dt --env hopper --dataset medium-expert --seed 0 --ema 0 "
        "--eval-every 2000"]


def test_the_paper_recipe_check_trains_the_dt_with_the_paper_preset_and_its_own_flags_last(
        tmp_path):
    lines, calls, _ = pilot_job(tmp_path, "pilot-paper-jobs", 1)
    assert [line.split()[4] for line in lines] == [
        f"paper-dt-hopper-medium-expert-s{s}" for s in (0, 1, 2)]
    assert calls == [
        "train.py --preset paper --ema 0.999 --eval-every 1000 --eval-episodes 20 --save-every "
        "1000 --out runs/pilot-paper/paper-dt-hopper-medium-expert-s1 --model dt --env hopper "
        "--dataset medium-expert --seed 1 --ema 0 --eval-every 5000"]


V2 = {"SCHEDULE": "cosine", "BUDGET": "4000", "ESTIMATOR": "ema"}


def test_the_second_protocol_lists_five_seeds_a_cell_and_the_memory_variants(tmp_path):
    shutil.copy(ROOT / "experiments.sh", tmp_path)

    def listing(command, **env):
        return subprocess.run(["bash", "experiments.sh", command], cwd=tmp_path,
                              capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin", **env})
    lines = listing("jobs", **V2).stdout.splitlines()
    names = [line.split()[3] for line in lines]
    assert len(names) == len(set(names)) == 3 * 3 * 2 * 5 + 3 * 3
    assert {f"dt-hopper-medium-s{s}" for s in range(5)} <= set(names)
    memory = listing("memory-jobs", **V2).stdout.splitlines()
    assert len(memory) == 2 * 3 * 6
    assert sum("--obs positions --context full" in m for m in memory) == 6
    assert sum("--context 60" in m for m in memory) == 6
    assert sum("--reward delayed" in m for m in memory) == 12
    # the variables go together; the memory runs need them; v1's records must move first
    assert listing("jobs", SCHEDULE="cosine").returncode == 2
    assert "second protocol" in listing("memory-jobs").stderr
    v1 = tmp_path / "results/report-runs/dt-hopper-medium-s0"
    v1.mkdir(parents=True)
    (v1 / "config.json").write_text('{"train": {"preset": "report"}}')
    refused = listing("jobs", **V2)
    assert refused.returncode == 2 and "report-runs-v1" in refused.stderr


def test_a_second_protocol_job_trains_the_recipe_and_scores_its_estimator_on_test_seeds(
        tmp_path):
    fake = sandbox(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(fake), **V2, "ESTIMATOR": "mean3"}
    line = ("bash experiments.sh one mamba-walker2d-medium-positions-s0 --model mamba --env "
            "walker2d --dataset medium --seed 0 --obs positions")
    subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, check=True, capture_output=True)
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls[0].startswith("train.py --steps 4000 --lr-schedule cosine --eval-every 1000 "
                               "--eval-episodes 20 --save-every 1000 --keep-last 3 --keep-every "
                               "1000 --out runs/report-v2/mamba-walker2d-medium-positions-s0 ")
    assert calls[1] == ("evaluate.py runs/report-v2/mamba-walker2d-medium-positions-s0 "
                        "--episodes 100 --target 5000 2500 --last 3")  # test seeds: the default
    assert len(calls) == 2  # a variant gets no target sweep


def test_run_makes_each_missing_dataset_once_before_any_job_and_without_torch_says_so(tmp_path):
    fake = sandbox(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "hopper-medium.hdf5").write_text("made before")
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(fake), "SEEDS": "0"}
    subprocess.run(["bash", "experiments.sh", "run", "1"], cwd=tmp_path, env=env, check=True,
                   capture_output=True)
    calls = (tmp_path / "calls.log").read_text().splitlines()
    made = [c for c in calls if c.startswith("policies/collect.py dataset")]
    expected = {f"policies/collect.py dataset --env {e} --level {d}"
                for e in ("hopper", "halfcheetah", "walker2d")
                for d in ("medium", "medium-replay", "medium-expert")}
    assert sorted(made) == sorted(expected - {"policies/collect.py dataset --env hopper "
                                              "--level medium"})  # each once, none made twice
    first_train = next(i for i, c in enumerate(calls) if c.startswith("train.py"))
    assert max(calls.index(c) for c in made) < first_train  # all data before any training
    no_torch = subprocess.run(["bash", "experiments.sh", "run", "1"], cwd=tmp_path,
                              env={**env, "PYTHON": "/bin/false"}, capture_output=True, text=True)
    assert no_torch.returncode == 2
    assert no_torch.stderr.count("\n") == 1 and "activate the project's venv" in no_torch.stderr
