"""Where long training runs stand, read from their folders while they train (or after a kill).

    python benchmarks/progress.py runs/pilot-paper/*

For each train.py run folder: its step of --steps, the seconds per step of its recent log lines
and the hours left at that rate, whether a trainer holds the folder now (its lock), and the
normalised scores of its periodic evaluations (validation episodes; `eval_ema` too if the run
keeps an EMA). It reads config.json, metrics.jsonl and the lock, and writes nothing; a line cut
short by a kill is skipped. A run killed with its session continues with `--resume` (or the
experiments.sh command that started it): this says where it will continue from.
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # the repository root

from benchmarks.stats import read_jsonl  # noqa: E402
from run_folder import RunLock  # noqa: E402

RECENT = 20  # log lines whose step times give the rate


def run_progress(folder):
    """-> a dict of where the run in `folder` stands, or raise ValueError saying why it is not a
    train.py run folder."""
    folder = Path(folder)
    try:
        train = json.loads((folder / "config.json").read_text())["train"]
        steps = int(train["steps"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"{folder}: no readable train.py config.json (not a run folder?)")
    records = read_jsonl(folder / "metrics.jsonl")
    losses = [r for r in records if "loss" in r]
    step = losses[-1]["step"] if losses else 0
    rates = [1 / r["steps_per_s"] for r in losses[-RECENT:]
             if isinstance(r.get("steps_per_s"), (int, float)) and r["steps_per_s"] > 0]
    s_per_step = statistics.median(rates) if rates else None
    evals = {key: [(r["step"], r[key]["score_mean"]) for r in records
                   if isinstance(r.get(key), dict) and "score_mean" in r[key]]
             for key in ("eval", "eval_ema")}
    return {"name": folder.name, "train": train, "step": step, "steps": steps,
            "s_per_step": s_per_step, "finished": (folder / "eval.json").exists() or step >= steps,
            "holder": RunLock(folder).holder(), "evals": evals}


def describe(p):
    """A run's progress as two or three lines of text."""
    t = p["train"]
    head = (f"{p['name']}: {t.get('model')} {t.get('env')} {t.get('dataset')} seed {t.get('seed')}"
            f", step {p['step']:,} of {p['steps']:,} ({100 * p['step'] / max(1, p['steps']):.0f}%)")
    if p["finished"]:
        state = "finished"
    else:
        left = p["steps"] - p["step"]
        rate = (f"{p['s_per_step']:.3f} s/step recently, {left * p['s_per_step'] / 3600:.1f} h "
                "left at that rate" if p["s_per_step"] else "no step timed yet")
        state = (f"training (pid {p['holder']}), " if p["holder"] else "stopped, ") + rate
    lines = [f"{head}; {state}"]
    for key, label in (("eval", "validation scores"), ("eval_ema", "EMA validation scores")):
        if p["evals"][key]:
            points = ", ".join(f"{step // 1000}k {score:.0f}" for step, score in p["evals"][key])
            lines.append(f"  {label} (step: normalised score): {points}")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="train.py run folders (runs/NAME)")
    args = parser.parse_args(argv)
    skipped = 0
    for folder in args.folders:
        try:
            print("\n".join(describe(run_progress(folder))))
        except ValueError as e:
            print(f"skipped {e}", file=sys.stderr)
            skipped += 1
    return 1 if skipped == len(args.folders) else 0


if __name__ == "__main__":
    sys.exit(main())
