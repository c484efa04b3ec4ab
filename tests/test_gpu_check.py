"""benchmarks/gpu_check.sh on the CPU: its dry run lists every stage's command and runs nothing;
a bad argument ends in one sentence."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def gpu_check(*args):
    return subprocess.run(["bash", "benchmarks/gpu_check.sh", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_dry_run_prints_each_stage_under_a_time_limit_and_runs_nothing(tmp_path):
    out = tmp_path / "gpu-results"
    data_existed = (ROOT / "runs" / "gpu-data").exists()
    result = gpu_check("--dry-run", "--out", str(out), "--train-steps", "300")
    assert result.returncode == 0, result.stderr
    commands = [line for line in result.stdout.splitlines() if line.startswith("[")]
    stages = [line.split("]")[0][1:] for line in commands]
    assert list(dict.fromkeys(stages)) == ["device", "tests", "scan", "profile", "train"]
    assert all(" timeout -k 10 " in line and f"> {out}/" in line for line in commands)
    text = "\n".join(commands)
    assert "nvidia-smi" in text and "-m pytest -q tests/test_scan_kernel.py" in text
    assert "-m pytest -q --ignore=tests/test_scan_kernel.py" in text     # the rest of the suite
    assert "benchmarks/bench_scan_gpu.py" in text and "profile.py --device cuda" in text
    trains = [line for line in commands if line.startswith("[train]")]
    assert len(trains) == 4 and all("--preset paper --steps 300" in line and "--out runs/gpu-"
                                    in line for line in trains)
    assert not out.exists()  # nothing ran, nothing was written
    assert (ROOT / "runs" / "gpu-data").exists() == data_existed


def test_an_unknown_argument_ends_in_one_sentence_and_a_non_zero_exit():
    result = gpu_check("--dry-run", "--bogus")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: unrecognized arguments: --bogus; see --help."]
    result = gpu_check("--budget-s", "0")
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1


def test_without_a_gpu_the_real_run_refuses_in_one_sentence(tmp_path):
    if shutil.which("nvidia-smi"):
        pytest.skip("nvidia-smi is here: the check would really run")
    result = gpu_check("--out", str(tmp_path / "x"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: nvidia-smi finds no GPU")
    assert not (tmp_path / "x").exists()
