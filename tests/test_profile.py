"""profile.py: safe under the standard library's name, its --quick run writes every output (and
only where it should), and bad settings end in one sentence."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ssm
from benchmarks import render, timing

ROOT = Path(__file__).resolve().parents[1]
# The file cannot be imported as `profile` (the standard library's name): load it as benchmarks do.
_spec = importlib.util.spec_from_file_location("profile_py", ROOT / "profile.py")
profile_py = sys.modules.setdefault("profile_py", importlib.util.module_from_spec(_spec))
if not hasattr(profile_py, "main"):
    _spec.loader.exec_module(profile_py)

SHADOW_CHECK = """
import importlib.util, os, sys, sysconfig
sys.path.insert(0, {root!r})
# The precondition of the trap: with the repo root first, `profile` resolves to the repo's file.
assert importlib.util.find_spec("profile").origin == os.path.join({root!r}, "profile.py")
import cProfile
import profile
stdlib_profile = os.path.join(sysconfig.get_paths()["stdlib"], "profile.py")
assert profile.__file__ == stdlib_profile, profile.__file__
assert "torch" not in sys.modules  # standing in for the stdlib module loads nothing heavy
cProfile.run("sum(range(10))", os.devnull)
import torch
import torch._dynamo
print(torch.compile(lambda x: x * 2 + 1, backend="eager")(torch.ones(3)).tolist())
"""


def test_importing_profile_from_the_repo_root_gives_the_stdlib_and_torch_dynamo_works():
    result = subprocess.run([sys.executable, "-c", SHADOW_CHECK.format(root=str(ROOT))],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[3.0, 3.0, 3.0]"


def test_quick_profile_writes_json_markdown_and_plots(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("DM_SCAN_BACKEND", None)
    result = subprocess.run([sys.executable, "profile.py", "--quick", "--out", str(tmp_path),
                             "--threads", "1"],
                            cwd=ROOT, capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    (json_path,) = tmp_path.glob("profile-*.json")
    device = json_path.stem[len("profile-"):]
    assert device.startswith("cpu")
    for suffix in (".md", "-latency.png", "-memory.png"):
        path = tmp_path / f"profile-{device}{suffix}"
        assert path.stat().st_size > 0, path
    results = json.loads(json_path.read_text())
    assert results["quick"] is True
    assert {"python", "torch", "numpy"} <= set(results["versions"])
    # every latency cell of the quick sweep was measured, with positive, ordered statistics
    cells = {(r["model"], r["mode"], r["K"], r["batch"]) for r in results["latency"]
             if r["status"] == "ok"}
    assert cells == {(m, mode, K, 1) for m, mode in (("dt", "window"), ("mamba", "window"),
                                                     ("mamba", "recurrent")) for K in (20, 100)}
    for row in results["latency"] + results["train"] + results["scan"] + results["compare"]:
        assert row["status"] == "ok", row
        assert 0 < row["min_ms"] <= row["median_ms"] <= row["max_ms"]
    # training steps of both models at both quick contexts, with a peak memory above the base
    trained = {(r["model"], r["K"]) for r in results["train"]}
    assert trained == {(m, K) for m in ("dt", "mamba") for K in (20, 40)}
    assert all(r["peak_mb"] >= r["base_mb"] > 0 for r in results["train"])
    c_built = ssm.default_scan_backend(torch.device("cpu")) == "c"  # where a compiler built it
    scanned = {r["backend"] for r in results["scan"]}
    assert scanned == {"ref", "torch"} | ({"c"} if c_built else set())
    assert results["scan_backend"] == ("c" if c_built else "torch")
    # the DT against the Mamba on each scan backend that trains, timed in one rotation
    compared = {(r["model"], r["scan_backend"]): r for r in results["compare"]}
    assert set(compared) == {("dt", None), ("mamba", "torch")} | ({("mamba", "c")} if c_built
                                                                   else set())
    assert compared["dt", None]["over_dt"] == 1.0 and compared["mamba", "torch"]["over_dt"] > 0
    for row in results["scan"]:  # speed-ups over the other paths; the outputs agree
        assert row["gbps"] > 0 and (row["backend"] == "ref" or row["over_ref"] > 0)
        if row["direction"] == "forward" and row["backend"] != "torch":
            assert row["max_diff_vs_torch"] < 1e-3
    assert {t["name"] for t in results["targets"]} >= {"recurrent flat", "recurrent faster at K=20"}
    table = (tmp_path / f"profile-{device}.md").read_text()
    assert "Mamba recurrent" in table and "| K |" in table and "per scan backend" in table


def test_a_quick_profile_never_writes_into_the_committed_results_unless_told():
    def folder(argv):
        typed = profile_py.given_flags(profile_py.ProfileConfig, argv)
        return profile_py.output_folder(profile_py.ProfileConfig(**typed))
    assert folder(["--quick"]) == "runs/profile-quick"  # runs/ is ignored by git
    assert folder([]) == "results"
    assert folder(["--quick", "--out", "results"]) == "results"


def test_time_cases_times_every_case_in_turns_and_reports_out_of_memory():
    calls = []

    def fails():
        raise RuntimeError("CUDA out of memory. Tried to allocate 1 GiB")
    stats = timing.time_cases({"a": lambda: calls.append("a"), "b": lambda: calls.append("b"),
                                   "oom": fails}, warmup=1, repeats=3)
    assert calls == ["a", "b"] * 4  # one warm-up round, then three timed rounds, alternating
    assert stats["a"]["n"] == stats["b"]["n"] == 3 and stats["a"]["status"] == "ok"
    assert stats["oom"] == dict(status="oom", note="CUDA out of memory. Tried to allocate 1 GiB")
    with pytest.raises(ValueError):  # any other error is not hidden
        timing.time_cases({"bad": lambda: int("x")})


@pytest.mark.parametrize("argv, flag", [
    (["--threads", "-1"], "--threads"), (["--latency-contexts", "0"], "--latency-contexts"),
    (["--latency-batches", ""], "--latency-batches"), (["--train-contexts", "40,20"],
                                                       "--train-contexts"),
    (["--repeats", "0"], "--repeats"), (["--budget-s", "-1"], "--budget-s"),
    (["--memory-cap-gb", "0"], "--memory-cap-gb"), (["--compare-batch", "0"], "--compare-batch"),
    (["--scan-shapes", "64x60x256"], "--scan-shapes"), (["--sweeps", "latency,nope"], "--sweeps"),
    (["--scan-dtypes", "int8"], "--scan-dtypes"), (["--scan-backends", "cuda"], "--scan-backends"),
])
def test_a_bad_setting_ends_in_one_sentence_naming_the_flag(argv, flag, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        profile_py.main(argv + ["--out", str(tmp_path / "out")])
    message = str(exit_.value.code)
    assert message.startswith(f"error: {flag} must ") and message.count("\n") == 0
    assert not (tmp_path / "out").exists()  # checked before anything ran or was written


def test_a_bad_setting_on_the_command_line_exits_non_zero_without_a_traceback():
    result = subprocess.run([sys.executable, "profile.py", "--threads", "-1"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: --threads must be 0 or a positive number, not -1."]


def test_time_cases_on_cuda_goes_through_triton_do_bench(monkeypatch):
    pytest.importorskip("triton")
    asked = []

    def do_bench(fn, warmup, rep, return_mode):  # stands in for triton.testing.do_bench (GPU)
        asked.append((warmup, rep, return_mode))
        return [3.0, 1.0, 2.0]  # ms per call
    monkeypatch.setitem(sys.modules, "triton.testing", type(sys)("triton.testing"))
    sys.modules["triton.testing"].do_bench = do_bench
    stats = timing.time_cases({"a": lambda: None}, "cuda", budget_s=0.05)["a"]
    assert asked == [(25, 50.0, "all")]  # triton's warm-up, timed calls within the budget
    assert (stats["median_ms"], stats["min_ms"], stats["max_ms"], stats["n"]) == (2.0, 1.0, 3.0, 3)


def test_latency_targets_are_judged_per_batch_from_the_ratio_of_median_times():
    def row(model, mode, K, ms, batch=1):
        return dict(status="ok", median_ms=ms, min_ms=ms, model=model, mode=mode, K=K, batch=batch)
    latency = [row("dt", "window", 20, 2.0), row("dt", "window", 1000, 200.0),
               row("mamba", "recurrent", 20, 1.0), row("mamba", "recurrent", 1000, 1.5),
               row("dt", "window", 20, 1.0, 100), row("mamba", "recurrent", 20, 4.0, 100)]
    targets = profile_py.judge_targets(dict(latency=latency, train=[], train_stops={}, scan=[]))
    verdicts = [(t["name"], t["detail"].split(",")[0], t["passed"]) for t in targets]
    assert verdicts == [("recurrent flat", "batch 1", False), ("DT grows", "batch 1", True),
                        ("recurrent faster at K=20", "batch 1", True),
                        ("recurrent faster at K=20", "batch 100", False)]  # K=20 only: no growth
    assert targets[0]["detail"] == (
        "batch 1, per env step: Mamba recurrent at K=1000 / Mamba recurrent at K=20 = 1.50x by "
        "median (1.5 / 1 ms), 1.50x by minimum (target <= 1.3x)")


def test_cuda_scan_results_are_judged_against_the_scan_goals_and_rendered():
    def row(direction, backend, ms, **extra):
        return dict(status="ok", median_ms=ms, p25_ms=ms, p75_ms=ms, min_ms=ms, max_ms=ms, n=3,
                    backend=backend, shape=[8, 4096, 1536, 16], dtype="bfloat16",
                    direction=direction, **extra)
    gbps = timing.scan_bytes((8, 4096, 1536, 16), torch.bfloat16, False) / 0.2 / 1e6
    results = dict(
        device="cuda-nvidia-h200", device_name="NVIDIA H200", versions={"torch": "x"}, threads=1,
        cores=16, load_average=dict(before=0.1, after=0.1), scan_backend="triton",
        parameters=dict(dt=1, mamba=1), quick=False, settings=dict(memory_cap_gb=4.0),
        peak_tbps=4.8, latency=[], train=[], train_stops={}, compare=[],
        scan=[row("forward", "triton", 0.2, gbps=gbps, max_diff_vs_torch=1e-3),
              row("forward+backward", "triton", 1.0, over_torch=25.0),
              row("forward+backward", "torch", 25.0)])
    results["targets"] = profile_py.judge_targets(results)
    goals = {t["name"]: t for t in results["targets"]}
    assert set(goals) == {"scan bandwidth", "scan speed-up"}  # nothing else was measured
    assert goals["scan bandwidth"]["passed"] is (gbps / 4800 >= 0.5)
    assert goals["scan speed-up"]["passed"] is True and "25.0x" in goals["scan speed-up"]["detail"]
    table = render.profile_markdown(results)
    assert "| 8x4096x1536x16 | bfloat16 | forward+backward | triton | 1 (1-1) |" in table
    assert "Inference latency" not in table and "| K | DT step" not in table
