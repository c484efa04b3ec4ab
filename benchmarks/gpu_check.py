"""One command for a machine lent a GPU: record it, test the CUDA code, time it, train on it.

Stages, each under coreutils `timeout` (its limit, or what is left of --budget-s if less; a
stage that would get under 20 s is skipped):
  device   nvidia-smi's GPU, driver and memory; torch, CUDA and triton versions
  tests    tests/test_scan_kernel.py (its tiny-shape tests too, on the GPU) and the Triton
           compile checks for sm_80 / sm_90; the rest of the suite as a GPU user runs it; beside
           them, on the CPU, the hopper-medium dataset
           the training runs read (collect.py, into runs/gpu-data/)
  scan     benchmarks/bench_scan_gpu.py: the Triton scan against the PyTorch paths
  profile  profile.py --device cuda: latency, training step and memory, DT vs Mamba
  train    train.py --preset paper --steps N for DT and Mamba, two seeds, in parallel (runs/gpu-*)
Everything lands in results/gpu-<gpu name>/: one log per command, profile and scan JSON, the
training runs' config / metrics / eval JSON, and summary.json + summary.md saying what passed,
failed, timed out or was skipped. Nothing is installed: it runs with the python it is started by
(benchmarks/gpu_check.sh picks .venv/bin/python where there is one).

Run:  bash benchmarks/gpu_check.sh [--dry-run] [--budget-s 450] [--train-steps 2000]
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))
from cli import atomic_write, build_parser, option, write_json  # noqa: E402

DEVICE = ("import importlib.metadata as m, importlib.util as u, json, torch; print(json.dumps(dict("
          "torch=torch.__version__, cuda=torch.version.cuda, gpu=torch.cuda.get_device_name() if "
          "torch.cuda.is_available() else None, triton=m.version('triton') if u.find_spec('triton')"
          " else None)))")


@dataclass(frozen=True)
class CheckConfig:
    dry_run: bool = option(False, "print every command (with its time limit) and run nothing")
    budget_s: int = option(450, "seconds for all stages together")
    train_steps: int = option(2000, "optimiser steps of each training run")
    out: str = option(None, "results folder (default results/gpu-<gpu name>)", type=str)


def gpu_name():
    """nvidia-smi's name of GPU 0, or None without nvidia-smi or a GPU."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() \
        else None


def stages(cfg, out, stamp):
    """[(stage, limit s, {log name: command})]; the commands of a stage run in parallel."""
    py, data = sys.executable, "runs/gpu-data/hopper-medium.hdf5"
    train = {f"train-{m}-s{s}": [py, "train.py", "--model", m, "--preset", "paper", "--steps",
                                 str(cfg.train_steps), "--seed", str(s), "--device", "cuda",
                                 "--data", data, "--out", f"runs/gpu-{stamp}-{m}-s{s}"]
             for m in ("dt", "mamba") for s in (0, 1)}
    return [
        ("device", 30, {"nvidia-smi": ["nvidia-smi", "--query-gpu=name,driver_version,"
                                       "memory.total", "--format=csv"],
                        "versions": [py, "-c", DEVICE]}),
        ("tests", 240, {"tests": [py, "-m", "pytest", "-q", "tests/test_scan_kernel.py",
                                  "tests/test_kernel_compile.py"],
                        "suite": [py, "-m", "pytest", "-q", "--ignore=tests/test_scan_kernel.py",
                                  "--ignore=tests/test_kernel_compile.py"],
                        "data": [py, "policies/collect.py", "dataset", "--env", "hopper", "--level",
                                 "medium", "--workers", "8", "--out", data]}),
        ("scan", 150, {"scan": [py, "benchmarks/bench_scan_gpu.py", "--out", f"{out}/scan"]}),
        ("profile", 150, {"profile": [py, "profile.py", "--device", "cuda", "--sweeps",
                                      "latency,train,compare", "--budget-s", "2",
                                      "--out", f"{out}/profile"]}),
        ("train", 180, train)]


def run_stage(limit, commands, out):
    """Start the commands together under `timeout`, each logging to out/<name>.log; wait for all.
    -> {name: status} with status passed / failed (exit code) / timeout."""
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 4) // len(commands))))
    running = {}
    for name, command in commands.items():
        with open(out / f"{name}.log", "w") as log:
            log.write(f"$ {shlex.join(command)}\n")
            log.flush()
            running[name] = subprocess.Popen(["timeout", "-k", "10", str(limit), *command],
                                             cwd=ROOT, env=env, stdout=log,
                                             stderr=subprocess.STDOUT)
    codes = {name: p.wait() for name, p in running.items()}
    return {name: "passed" if c == 0 else "timeout" if c in (124, 137) else f"failed (exit {c})"
            for name, c in codes.items()}


def main(argv=None):
    parser = build_parser(CheckConfig, __doc__.split("\n\n")[0])
    parser.error = lambda message: sys.exit(f"error: {message}; see --help.")
    cfg = CheckConfig(**vars(parser.parse_args(argv)))
    if cfg.budget_s <= 0 or cfg.train_steps <= 0:
        sys.exit("error: --budget-s and --train-steps must be positive.")
    name, stamp = gpu_name(), time.strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^a-z0-9]+", "-", (name or "unknown").lower()).strip("-")
    out = Path(cfg.out or f"results/gpu-{slug}")
    plan = stages(cfg, out, stamp)
    if cfg.dry_run:
        print(f"# would write results/logs to {out}/ (GPU: {name or 'none found'}), "
              f"budget {cfg.budget_s} s")
        for stage, limit, commands in plan:
            for log, command in commands.items():
                print(f"[{stage}] timeout -k 10 {limit} {shlex.join(command)}  > {out}/{log}.log")
        return
    if name is None:
        sys.exit("error: nvidia-smi finds no GPU here; run this on the GPU machine (or use "
                 "--dry-run to see the commands).")
    (ROOT / out).mkdir(parents=True, exist_ok=True)
    (ROOT / "runs/gpu-data").mkdir(parents=True, exist_ok=True)
    start, summary = time.time(), dict(gpu=name, config=asdict(cfg), stages=[])
    for stage, limit, commands in plan:
        left = cfg.budget_s - (time.time() - start)
        began = time.time()
        status = ({log: "skipped (budget spent)" for log in commands} if left < 20 else
                  run_stage(int(min(limit, left)), commands, ROOT / out))
        summary["stages"].append(dict(stage=stage, seconds=round(time.time() - began, 1),
                                      commands={log: dict(command=shlex.join(c), status=status[log])
                                                for log, c in commands.items()}))
        print(f"{stage}: " + ", ".join(f"{log} {s}" for log, s in status.items()), flush=True)
    versions = (ROOT / out / "versions.log").read_text().splitlines()[-1:]
    summary["versions"] = json.loads(versions[0]) if versions and versions[0].startswith("{") \
        else None
    for run in (ROOT / "runs").glob(f"gpu-{stamp}-*"):  # the training runs' records, not weights
        for record in ("config.json", "metrics.jsonl", "eval.json"):
            if (run / record).exists():
                (ROOT / out / "runs" / run.name).mkdir(parents=True, exist_ok=True)
                shutil.copy(run / record, ROOT / out / "runs" / run.name / record)
    summary["wall_s"] = round(time.time() - start, 1)
    write_json(ROOT / out / "summary.json", summary)
    lines = [f"# GPU check on {name}", "", "| stage | command | status |", "|---|---|---|"]
    lines += [f"| {s['stage']} | {log} | {c['status']} |" for s in summary["stages"]
              for log, c in s["commands"].items()]
    atomic_write(ROOT / out / "summary.md", lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
    print(f"wrote {out}/summary.json and summary.md in {summary['wall_s']:.0f} s")
    failed = [log for s in summary["stages"] for log, c in s["commands"].items()
              if c["status"] != "passed"]
    sys.exit(f"not passed: {', '.join(failed)}" if failed else 0)


if __name__ == "__main__":
    main()
