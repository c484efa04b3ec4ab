"""profile.py: safe under the standard library's name, and its --quick run writes every output."""
import json
import os
import subprocess
import sys
from pathlib import Path

import ssm

ROOT = Path(__file__).resolve().parents[1]

SHADOW_CHECK = """
import importlib.util, os, sys, sysconfig
sys.path.insert(0, {root!r})
# The precondition of the trap: with the repo root first, `profile` resolves to the repo's file.
assert importlib.util.find_spec("profile").origin == os.path.join({root!r}, "profile.py")
import cProfile
import profile
assert profile.__file__ == os.path.join(sysconfig.get_paths()["stdlib"], "profile.py"), profile.__file__
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
    for row in results["latency"] + results["train"] + results["scan"]:
        if row["status"] == "ok":
            assert 0 < row["min_ms"] <= row["median_ms"] <= row["max_ms"]
    # training steps of both models at both quick contexts, with a peak memory above the base
    trained = {(r["model"], r["K"]) for r in results["train"] if r["status"] == "ok"}
    assert trained == {(m, K) for m in ("dt", "mamba") for K in (20, 40)}
    assert all(r["peak_mb"] >= r["base_mb"] > 0 for r in results["train"])
    c_built = ssm._load_c_scan()[0] is not None          # the C scan where a compiler built it
    scanned = {r["backend"] for r in results["scan"]}
    assert scanned == {"ref", "torch"} | ({"c"} if c_built else set())
    assert results["scan_backend"] == ("c" if c_built else "torch")
    assert {t["name"] for t in results["targets"]} >= {"recurrent flat", "recurrent faster at K=20"}
    table = (tmp_path / f"profile-{device}.md").read_text()
    assert "Mamba recurrent" in table and "| K |" in table
