"""Run records and the statistics over seeds that REPORT.md is computed from.

  reading runs   a train.py run folder -> Run: config.json, the losses and periodic evaluations
                 of metrics.jsonl, eval.json (evaluate.py's results, one per target) and
                 targets.json (a sweep of targets); runs with equal `key` are seeds of one
                 experiment
  statistics     mean +- std over seeds, Welch's 95% interval of a difference of means and the
                 verdict it allows, and the pilot's rule for when a learning curve has settled

A run folder (written by train.py, see its docstring): config.json ({"train": settings, "model":
model settings, "data": {path, return_mean, return_max, ...}, "device", "versions", ...}),
metrics.jsonl (lines {"step", "loss", "lr", "time"} and {"step", "eval": {...}}), eval.json
({"config": ..., "results": [one evaluate() result per target]}) and, optionally, targets.json
(evaluate.py --out: the same, for a sweep of targets).

Reference: Welch 1947, "The generalization of Student's problem when several different population
variances are involved" (the interval of a difference of means with unequal variances).
"""
import json
import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODEL_NAMES = {"dt": "DT", "mamba": "Mamba"}
# train.py settings that may differ between the seeds of one experiment (everything else may not)
SEED_ONLY = ("seed", "out", "resume", "device", "compile", "log_every", "save_every")
# Student's t, 97.5% quantile by degrees of freedom (Welch's df is rounded down: a slightly wide
# interval, never a narrow one).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000}
PATIENCE = 3  # the budget rule: evaluations in a row that must not beat the best so far


# ----------------------------------------------------------------------------- reading runs

@dataclass
class Run:
    path: Path
    config: dict                      # config.json as written by train.py
    losses: list                      # [(step, training loss)] from metrics.jsonl
    curve: list                       # [(step, mean return, its standard error)] of the
    #                                   periodic evaluations
    evals: list                       # evaluate() results from eval.json (one per target)
    eval_config: dict                 # eval.json's "config"
    step: int                         # the step eval.json's checkpoint was at (None: no eval)
    sweep: list                       # evaluate() results from targets.json (a target sweep)

    @property
    def train(self):
        return self.config["train"]

    @property
    def model(self):
        return self.train["model"]

    @property
    def dataset(self):
        return Path(self.train["data"]).stem if self.train.get("data") else self.train["dataset"]

    @property
    def mode(self):
        """The mode eval.json was made in (evaluate.py --mode may differ from the run's)."""
        return self.evals[0]["mode"] if self.evals else self.config.get("eval_mode", "window")

    @property
    def variant(self):
        """How a model was trained and acted: 'K=20', or 'K=full, recurrent'."""
        return f"K={self.train['context']}" + (", recurrent" if self.mode == "recurrent" else "")

    @property
    def key(self):
        """Runs with equal keys are seeds of one experiment."""
        settings = {k: v for k, v in self.train.items() if k not in SEED_ONLY}
        return (self.train["env"], self.dataset, self.model, self.variant,
                json.dumps(settings, sort_keys=True, default=str))

    def result(self, target=None):
        """The result at `target`, or by default at the run's own target (else its first)."""
        if target is not None:
            return next((r for r in self.evals if r["target_return"] == target), None)
        own = self.config.get("target_return")
        return next((r for r in self.evals if r["target_return"] == own),
                    self.evals[0] if self.evals else None)


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def load_run(path):
    """-> (Run, None), or (None, why it was skipped)."""
    path = Path(path)
    config = read_json(path / "config.json")
    if not isinstance(config, dict) or not isinstance(config.get("train"), dict):
        return None, "no readable train.py config.json"
    missing = [k for k in ("model", "env", "dataset", "seed", "context")
               if k not in config["train"]]
    if missing:
        return None, f"config.json lacks {', '.join(missing)} (not written by train.py?)"
    losses, curve = [], []
    if (path / "metrics.jsonl").exists():
        for line in (path / "metrics.jsonl").read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a line cut short by a crash
                continue
            if not isinstance(record, dict) or "step" not in record:
                continue
            if "loss" in record:
                losses.append((record["step"], record["loss"]))
            elif isinstance(record.get("eval"), dict) and "return_mean" in record["eval"]:
                curve.append(curve_point(record))
    evaluation, sweep = (read_json(path / name) for name in ("eval.json", "targets.json"))
    results = [] if not isinstance(evaluation, dict) else evaluation.get("results", [])
    if not isinstance(results, list):  # not evaluate.py's: the run is listed without a score
        evaluation, results = {}, []
    sweep = sweep.get("results", []) if isinstance(sweep, dict) else []
    return Run(path, config, losses, curve, results, (evaluation or {}).get("config", {}),
               (evaluation or {}).get("step"), sweep if isinstance(sweep, list) else []), None


def read_runs(paths):
    runs, skipped = [], []
    for path in paths:
        run, why = load_run(path) if Path(path).is_dir() else (None, "not a folder")
        if run:
            runs.append(run)
        else:
            skipped.append(f"{path}: {why}")
    return runs, skipped


# ----------------------------------------------------------------------------- statistics

def over_seeds(values):
    """(mean, std over seeds with ddof=1, or None for a single seed)."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), (float(values.std(ddof=1)) if values.size > 1 else None)


def pm(mean, std, digits=0):
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def welch_interval(a, b):
    """95% confidence interval of mean(b) - mean(a) by Welch's t (None with < 2 values a side)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if min(a.size, b.size) < 2:
        return None
    diff = b.mean() - a.mean()
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    if va + vb == 0:
        return float(diff), float(diff)
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    t = T_975[max(k for k in T_975 if k <= max(df, 1))]
    half = t * math.sqrt(va + vb)
    return float(diff - half), float(diff + half)


def verdict(interval, better="Mamba", worse="DT"):
    if interval is None:
        return "too few seeds to compare"
    lo, hi = interval
    return (f"{better} better" if lo > 0 else f"{worse} better" if hi < 0
            else "no detectable difference")


def curve_point(record):
    """A metrics.jsonl evaluation record -> (step, mean return, standard error of that mean)."""
    e = record["eval"]
    return (record["step"], e["return_mean"],
            e.get("return_std", 0.0) / math.sqrt(max(1, e.get("episodes", 1))))


def converged_step(curve, patience=PATIENCE):
    """The first evaluation step after which `patience` evaluations in a row do not beat the
    best mean return so far, where beating means exceeding it by more than the later
    evaluation's own standard error (None if the curve never settles). curve: [(step, mean,
    standard error)]."""
    best = -math.inf
    for i, (step, value, _) in enumerate(curve):
        best = max(best, value)
        later = curve[i + 1:i + 1 + patience]
        if len(later) == patience and all(v <= best + se for _, v, se in later):
            return step
    return None


def group_name(runs):
    """The run folders' common name without the seed suffix: dt-hopper-medium-s0, -s1 ->
    dt-hopper-medium."""
    prefix = os.path.commonprefix([r.path.name for r in runs])
    return re.sub(r"[-_]?s?\d*$", "", prefix) or f"{runs[0].path.name}, ..."


def scores(runs, target=None):
    """Each evaluated seed's mean normalised score at `target` (default: its own target)."""
    return [res["score_mean"] for r in runs if (res := r.result(target)) is not None]


def score_cell(runs, target=None):
    values = scores(runs, target)
    return f"{pm(*over_seeds(values), digits=1)} (n={len(values)})" if values else "-"


def groups_of(runs):
    """Run key -> the runs (seeds) of that experiment."""
    groups = defaultdict(list)
    for run in runs:
        groups[run.key].append(run)
    return groups


def experiments(groups):
    """(env, dataset, model, variant) -> the runs of the experiment with the most seeds there
    (the sweep's; an extra experiment with other settings only shows in the table of all)."""
    chosen = {}
    for (env, dataset, model, variant, _), runs in sorted(groups.items()):
        if len(runs) > len(chosen.get((env, dataset, model, variant), [])):
            chosen[env, dataset, model, variant] = runs
    return chosen

