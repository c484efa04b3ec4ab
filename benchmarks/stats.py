"""Run records and the statistics over seeds that REPORT.md is computed from.

  reading runs   a train.py run folder -> Run: config.json, the losses and periodic evaluations
                 of metrics.jsonl, eval.json (evaluate.py's results, one per target) and
                 targets.json (a sweep of targets); runs with equal `key` are seeds of one
                 experiment
  statistics     mean +- std over seeds, Welch's 95% interval of a difference of means and the
                 verdict it allows (with an equivalence margin), and the pilot's rule for when a
                 learning curve has settled
  aggregate      over all tasks: the interquartile mean of normalised scores with stratified
                 bootstrap intervals, P(Mamba > DT) and performance profiles (rliable)
  protocol pilot the candidate estimators read from the pilot's curves, and the rule written
                 before it ran (results/pilot-v2/RULE.md) applied to them

A run folder (written by train.py, see its docstring): config.json ({"train": settings, "model":
model settings, "data": {path, return_mean, return_max, ...}, "device", "versions", ...}),
metrics.jsonl (lines {"step", "loss", "lr", "time"} and {"step", "eval": {...}}), eval.json
({"config": ..., "results": [one evaluate() result per target]}) and, optionally, targets.json
(evaluate.py --out: the same, for a sweep of targets).

References: Welch 1947, "The generalization of Student's problem when several different
population variances are involved" (the interval of a difference of means with unequal
variances); Agarwal et al. 2021, "Deep RL at the edge of the statistical precipice" (IQM,
stratified bootstrap, probability of improvement, performance profiles; their `rliable` computes
them).
"""
import json
import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from run_folder import OLD_RUN_DEFAULTS

MODEL_NAMES = {"dt": "DT", "mamba": "Mamba"}
# train.py settings that may differ between the seeds of one experiment (everything else may not)
SEED_ONLY = ("seed", "out", "resume", "device", "compile", "log_every", "save_every")
PATIENCE = 3  # the budget rule: evaluations in a row that must not beat the best so far
MARGIN = 5.0  # normalised points: a difference whose whole interval lies within +-MARGIN is
#               "equivalent"; a wide interval that holds 0 is "undecided"

# The DT's normalised scores on D4RL's own datasets (context, not comparable with ours):
# (Chen et al. 2021, Table 2; CORL's DT, last checkpoint, Tarasov et al. 2022 README).
D4RL_DT = {("halfcheetah", "medium"): ("42.6 ± 0.1", "42.2 ± 0.3"),
           ("halfcheetah", "medium-replay"): ("36.6 ± 0.8", "38.9 ± 0.5"),
           ("halfcheetah", "medium-expert"): ("86.8 ± 1.3", "91.6 ± 1.0"),
           ("hopper", "medium"): ("67.6 ± 1.0", "65.1 ± 1.6"),
           ("hopper", "medium-replay"): ("82.7 ± 7.0", "81.8 ± 6.9"),
           ("hopper", "medium-expert"): ("107.6 ± 1.8", "110.4 ± 0.3"),
           ("walker2d", "medium"): ("74.0 ± 1.4", "67.6 ± 2.5"),
           ("walker2d", "medium-replay"): ("66.6 ± 3.0", "59.9 ± 2.7"),
           ("walker2d", "medium-expert"): ("108.1 ± 0.2", "107.1 ± 1.0")}


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
        """How a model was trained and acted: 'K=20', or 'K=full, recurrent'; then issue 28's
        variants where not the default: ', positions' (velocities hidden), ', delayed'."""
        acting = f"K={self.train['context']}" + (", recurrent" if self.mode == "recurrent" else "")
        return ", ".join([acting, *self.variant_of_data])

    @property
    def variant_of_data(self):
        """[] for the standard task, else the non-default ones of 'positions', 'delayed'."""
        return [value for name, default in (("obs", "full"), ("reward", "dense"))
                if (value := self.train.get(name, default)) != default]

    @property
    def key(self):
        """Runs with equal keys are seeds of one experiment."""
        # a setting a run was saved without had its default: runs from before it existed and
        # after group together
        settings = {k: v for k, v in {**OLD_RUN_DEFAULTS, **self.train}.items()
                    if k not in SEED_ONLY}
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


def read_jsonl(path):
    """The records of a JSONL log that have a step, skipping a line cut short by a kill; [] for
    a missing file."""
    records = []
    for line in Path(path).read_text().splitlines() if Path(path).exists() else []:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


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
    for record in read_jsonl(path / "metrics.jsonl"):
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


# What each evaluate.py result must hold, as finite numbers, to enter the tables.
RESULT_NUMBERS = ("target_return", "return_mean", "return_std", "score_mean", "score_std",
                  "episodes")


def unfit(run):
    """Why a run's records cannot enter the tables, or None: results without their numbers, or
    not finite (a nan score is skipped and said so, never printed as a result)."""
    for name, results in (("eval.json", run.evals), ("targets.json", run.sweep)):
        for res in results:
            if not isinstance(res, dict) or not all(
                    isinstance(res.get(k), (int, float)) for k in RESULT_NUMBERS):
                return f"{name} holds a result without the numbers evaluate.py writes"
            if not all(math.isfinite(res[k]) for k in RESULT_NUMBERS):
                return f"its scores in {name} are not finite (nan or inf): re-evaluate it"
    if not all(isinstance(x, (int, float)) for point in run.losses + run.curve for x in point):
        return "metrics.jsonl holds records that are not numbers"
    return None


def scored_on(run):
    """"test" or "validation": the seed range of a run's eval.json (records older than the split
    name none: their first seed says which)."""
    scored = run.eval_config
    return scored.get("seeds") or ("test" if scored.get("seed", 0) >= 500_000 else "validation")


def apart_from_test(runs):
    """-> (runs, [why each other is skipped]): where some runs are scored on test seeds, those
    scored on validation seeds (train.py's own final evaluation) cannot share their tables."""
    if not any(run.evals and scored_on(run) == "test" for run in runs):
        return runs, []
    kept = [run for run in runs if not run.evals or scored_on(run) == "test"]
    return kept, [f"{run.path}: scored on validation seeds (train.py's own evaluation) where the "
                  f"others are on test seeds; score it with python evaluate.py {run.path} "
                  "--episodes 100" for run in runs if run not in kept]


def read_runs(paths):
    """-> (runs, [why each other path is skipped]): not a run folder, or unfit records."""
    runs, skipped = [], []
    for path in paths:
        run, why = load_run(path) if Path(path).is_dir() else (None, "not a folder")
        why = why or unfit(run)
        if why:
            skipped.append(f"{path}: {why}")
        else:
            runs.append(run)
    return runs, skipped


# ----------------------------------------------------------------------------- statistics

def over_seeds(values):
    """(mean, std over seeds with ddof=1, or None for a single seed)."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), (float(values.std(ddof=1)) if values.size > 1 else None)


def sd_interval(values, level=0.95):
    """The interval of the seeds' standard deviation if their scores were normal (chi-square with
    n - 1 degrees of freedom), or None under two values. Few seeds pin an sd down loosely: three
    give 0.52 to 6.3 times the sd measured."""
    from scipy.stats import chi2  # scipy comes with rliable
    values = np.asarray(values, dtype=float)
    if values.size < 2:
        return None
    dof, sd, tail = values.size - 1, float(values.std(ddof=1)), (1 - level) / 2
    return tuple(sd * math.sqrt(dof / float(chi2.ppf(q, dof))) for q in (1 - tail, tail))


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
    from scipy.stats import t  # scipy comes with rliable
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))  # Welch-Satterthwaite
    half = float(t.ppf(0.975, df)) * math.sqrt(va + vb)
    return float(diff - half), float(diff + half)


def verdict(interval, better="Mamba", worse="DT", margin=MARGIN):
    """A model is named only when the interval excludes 0; "equivalent" needs all of it inside
    [-margin, +margin]; an interval that holds 0 and reaches past the margin is undecided."""
    if interval is None:
        return "too few seeds to compare"
    lo, hi = interval
    if lo > 0 or hi < 0:
        return f"{better} better" if lo > 0 else f"{worse} better"
    return f"equivalent within {margin:g}" if -margin <= lo and hi <= margin else "undecided"


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



# ----------------------------------------------------------------------------- aggregate

def aggregate(score_matrices, reps=2000, seed=0):
    """Over all tasks, with rliable (Agarwal et al. 2021). score_matrices: model -> (seeds,
    tasks) normalised scores, the same tasks (columns) in the same order for every model.
    Returns model -> (IQM, (lo, hi)), and P(Mamba > DT) with its interval: the probability that
    a run of Mamba beats a run of the DT on a task, averaged over tasks. 95% intervals from the
    stratified bootstrap (seeds resampled within each task)."""
    from rliable import library as rly, metrics  # only the report needs it
    np.random.seed(seed)  # rliable's bootstrap draws from numpy's global generator
    matrices = {m: np.asarray(v, dtype=float) for m, v in score_matrices.items()}
    point, ci = rly.get_interval_estimates(
        matrices, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps)
    iqm = {m: (float(point[m][0]), (float(ci[m][0, 0]), float(ci[m][1, 0]))) for m in matrices}
    pair = {"mamba,dt": (matrices["mamba"], matrices["dt"])}
    point, ci = rly.get_interval_estimates(pair, metrics.probability_of_improvement, reps=reps)
    p = (float(np.squeeze(point["mamba,dt"])), tuple(float(x) for x in np.ravel(ci["mamba,dt"])))
    return iqm, p


def task_matrices(groups):
    """model -> (seeds, tasks) normalised scores of the K=20 runs, each env x dataset task that
    has both models at its higher target, the first n seeds of each (n: the fewest any task
    has); None with fewer than 2 seeds."""
    by_task = defaultdict(dict)
    for (env, dataset, model, variant), runs in experiments(groups).items():
        if variant == "K=20":
            by_task[env, dataset][model] = sorted(runs, key=lambda r: r.train["seed"])
    columns = defaultdict(list)  # model -> per task, the seeds' scores
    for task, by_model in sorted(by_task.items()):
        if {"dt", "mamba"} <= by_model.keys():
            target = max(res["target_return"] for m in ("dt", "mamba") for r in by_model[m]
                         for res in r.evals)
            for m in ("dt", "mamba"):
                columns[m].append(scores(by_model[m], target))
    n = min((len(c) for cols in columns.values() for c in cols), default=0)
    if n < 2:
        return None
    return {m: np.array([c[:n] for c in cols]).T for m, cols in columns.items()}


def performance_profile(score_matrices, taus):
    """model -> the fraction of all (seed, task) runs whose score exceeds each tau."""
    return {m: np.array([(np.asarray(v) > t).mean() for t in taus]) for m, v in
            score_matrices.items()}


# ----------------------------------------------------------------------------- protocol pilot

# recipe -> the budgets its runs are read at
PILOT_BUDGETS = {"const-8k": (4000, 8000), "cosine-8k": (8000,), "cosine-4k": (4000,),
                 "cosine-16k": (16000,), "cosine-48k": (48000,)}
ESTIMATORS = ("last", "ema", "mean3")  # the tie-break order of RULE.md: simplest first
TIE = 1.0   # RULE.md, rule 3: candidates within this many points of the lowest sd are tied
BAR = 12.0  # issue 24's bar: every hopper and walker2d cell's seed sd at most this


def pilot_estimates(metrics_lines, budget):
    """A pilot run's three estimates at `budget` (normalised scores on validation seeds), from
    its metrics.jsonl lines: last = the raw weights at the budget, ema = the EMA weights there,
    mean3 = the mean of the raw evaluations at budget-2000, budget-1000 and budget. None where
    an evaluation is missing."""
    raw = {r["step"]: r["eval"]["score_mean"] for r in metrics_lines if "eval" in r}
    ema = {r["step"]: r["eval_ema"]["score_mean"] for r in metrics_lines if "eval_ema" in r}
    window = [budget - 2000, budget - 1000, budget]
    return {"last": raw.get(budget), "ema": ema.get(budget),
            "mean3": (float(np.mean([raw[s] for s in window]))
                      if all(s in raw for s in window) else None)}


def apply_pilot_rule(estimates, costs, baseline=("const", 4000, "last")):
    """RULE.md applied. estimates: (schedule, budget, estimator) -> cell (env, model) -> the seeds'
    estimates; costs: candidate -> projected sweep core-hours. Only complete cells (3 seeds in
    every candidate) count. Returns (rows, chosen): a row per candidate with sd, mean, cost,
    the max cell sd and why it is out (None: eligible); chosen is the candidate picked (None
    when no cell is complete)."""
    cells = sorted(set.intersection(*[{c for c, v in by_cell.items() if len(v) >= 3}
                                      for by_cell in estimates.values()]))
    rows = {}
    for cand, by_cell in estimates.items():
        if not cells:
            break
        sds = [float(np.std(by_cell[c], ddof=1)) for c in cells]
        rows[cand] = {"sd": float(np.mean(sds)), "max_sd": max(sds), "cost": costs[cand],
                      "mean": float(np.mean([np.mean(by_cell[c]) for c in cells])),
                      "cells": cells, "out": None}
    if not rows:
        return rows, None
    for cand, row in rows.items():
        if row["cost"] > 30:
            row["out"] = f"unaffordable ({row['cost']:.0f} > 30 core-hours)"
        elif row["mean"] < rows[baseline]["mean"] - 5:
            row["out"] = (f"mean {row['mean']:.1f} < {' '.join(map(str, baseline))}'s "
                          f"{rows[baseline]['mean']:.1f} - 5")
    left = {c: r for c, r in rows.items() if r["out"] is None}
    if not left:
        return rows, None
    best = min(r["sd"] for r in left.values())
    tied = [c for c, r in left.items() if r["sd"] <= best + TIE]
    chosen = min(tied, key=lambda c: (rows[c]["cost"], ESTIMATORS.index(c[2]), rows[c]["sd"],
                                      c[0] != "const"))
    return rows, chosen


def read_pilot_v2(folder):
    """The protocol pilot's records (results/pilot-v2): read_pilot of every run, each timed."""
    paths = sorted(Path(folder).glob("*/metrics.jsonl"))
    return read_pilot([(p.parent, next(r for r in PILOT_BUDGETS if p.parent.name.startswith(
        r + "-")), True) for p in paths])


def read_pilot_me(folder, sweep="results/report-runs"):
    """The medium-expert pilot (results/pilot-me/RULE.md): its cosine-16k runs, and the sweep's
    own cosine-4k runs of the same cells and seeds, which alone are timed for the costs."""
    return read_pilot(_medium_expert_records(folder, sweep, ("hopper", "walker2d")))


def _medium_expert_records(folder, sweep, envs):
    """read_pilot's records of the medium-expert pilot's cosine-16k runs on `envs` and of the
    sweep's cosine-4k runs of the same cells, seeds 0-2 (timed)."""
    ours = [(p.parent, "cosine-16k", False) for env in envs
            for p in sorted(Path(folder).glob(f"*-{env}-medium-expert-s*/metrics.jsonl"))]
    theirs = [(Path(sweep) / f"{model}-{env}-medium-expert-s{seed}", "cosine-4k", True)
              for env in envs for model in ("dt", "mamba") for seed in (0, 1, 2)]
    return ours + [r for r in theirs if (r[0] / "metrics.jsonl").is_file()]


def read_pilot_long(folder, me_folder="results/pilot-me", sweep="results/report-runs"):
    """The long-budget check (results/pilot-long/RULE.md): its cosine-48k runs beside the
    medium-expert pilot's records (read_pilot_me's: its hopper cells beside the check's, and
    the costs from its formula and timings, hopper's and walker2d's sweep runs)."""
    ours = [(p.parent, "cosine-48k", False) for p in sorted(Path(folder).glob("*/metrics.jsonl"))]
    return read_pilot(ours + _medium_expert_records(me_folder, sweep, ("hopper", "walker2d")))


def read_pilot(records):
    """Pilot records [(folder, recipe, timed)] -> (run names, estimates: candidate -> cell ->
    seeds' estimates, curves: cell -> recipe -> raw|ema -> [(step, mean over seeds)], costs:
    candidate -> projected sweep core-hours as RULE.md defines them, from the timed records;
    None until both models have timed ones)."""
    estimates = defaultdict(lambda: defaultdict(list))
    points = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    step_s, eval_s, names = defaultdict(list), defaultdict(list), []
    for folder, recipe, timed in records:
        train = read_json(folder / "config.json")["train"]
        cell = (train["env"], train["model"])
        lines = read_jsonl(folder / "metrics.jsonl")
        names.append(folder.name)
        for budget in PILOT_BUDGETS[recipe]:
            for estimator, value in pilot_estimates(lines, budget).items():
                if value is not None:
                    estimates[recipe.split("-")[0], budget, estimator][cell].append(value)
        for r in lines:
            for kind, key in (("raw", "eval"), ("ema", "eval_ema")):
                if key in r:
                    points[cell][recipe][kind][r["step"]].append(r[key]["score_mean"])
        if timed:
            last = [r for r in lines if "loss" in r][-1]
            step_s[train["model"]].append(last["time"] / last["step"])
            eval_s[train["model"]] += [r["eval"]["wall_time_s"] for r in lines if "eval" in r]
    curves = {cell: {recipe: {kind: sorted((s, float(np.mean(v))) for s, v in pts.items())
                              for kind, pts in kinds.items()} for recipe, kinds in by.items()}
              for cell, by in points.items()}
    if {"dt", "mamba"} - step_s.keys():
        return names, estimates, curves, None

    def run_hours(model, budget, checkpoints):  # training, then 100 test episodes x 2 targets
        return (budget * np.mean(step_s[model]) + checkpoints * 10 * np.mean(eval_s[model])) / 3600

    costs = {}
    for cand in estimates:
        k = 3 if cand[2] == "mean3" else 1
        costs[cand] = float(45 * (run_hours("dt", cand[1], k) + run_hours("mamba", cand[1], k))
                            + 9 * 2 * run_hours("mamba", cand[1], k))
    return names, estimates, curves, costs
