"""REPORT.md's sections that read the records and say what they show, each a list of markdown
lines (report.py puts them in order; render.py draws their figures).

  aggregate_section     REPORT.md's "Over all tasks": IQM, P(Mamba > DT), performance profiles
  lottery_section       the seed lottery: each cell's seed spread and verdict, the first
                        protocol's records beside the second's; the cells over the bar, seed by
                        seed, and what would bring them under; what the pilot found did not work
  memory_section        "Where memory matters": each variant's drop, the settings against the DT

The pilots' sections are pilots.py's. Standard library and numpy; the statistics are stats.py's.
"""
from collections import defaultdict

import numpy as np

from benchmarks.pilots import pilot_findings, what_would
from benchmarks.render import md_table, plot_drops, plot_profile
from benchmarks.stats import (BAR, MODEL_NAMES, aggregate, experiments, over_seeds,
                              performance_profile, score_cell, scored_on, scores, task_matrices,
                              verdict, welch_interval)


def aggregate_section(groups, figures, rel, reps):
    """Over all env x dataset tasks at each cell's higher target: the IQM of each model with
    stratified-bootstrap intervals, P(Mamba > DT), and the performance profiles."""
    matrices = task_matrices(groups)
    if matrices is None:
        return []
    n = len(matrices["dt"])
    iqm, (p, (p_lo, p_hi)) = aggregate(matrices, reps)
    taus = np.linspace(0, 120, 241)
    png = figures / "performance-profile.png"
    plot_profile(performance_profile(matrices, taus), taus, png)
    reading = ("Mamba better" if p_lo > 0.5 else "DT better" if p_hi < 0.5 else "undecided")
    lines = ["## Over all tasks", "",
             f"{matrices['dt'].shape[1]} env x dataset tasks, {n} seeds a model on each (the "
             f"first {n} by seed where a task has more), each cell at its higher target. The "
             "interquartile mean (IQM) drops the lowest and highest quarter of all runs' scores "
             "and averages the rest; P(Mamba > DT) is the probability that a Mamba run beats a "
             f"DT run on the same task, averaged over tasks. 95% intervals from {reps} stratified "
             "bootstrap resamples (seeds resampled within each task), computed by rliable "
             "(Agarwal et al. 2021).", "", "| model | IQM | 95% CI |", "|---|---|---|"]
    lines += [f"| {MODEL_NAMES[m]} | {v:.1f} | [{lo:.1f}, {hi:.1f}] |"
              for m, (v, (lo, hi)) in iqm.items()]
    return lines + ["", f"P(Mamba > DT) = {p:.2f}, 95% CI [{p_lo:.2f}, {p_hi:.2f}]: {reading} "
                    "(a model is named only when the interval excludes 0.5).", "",
                    f"![performance profiles]({rel(png)})", ""]


def _protocol(run):
    """How a run was trained and scored, read from its records."""
    train, scored, seeds = run.train, run.eval_config, scored_on(run)
    first, n = scored.get("seed", 0), scored.get("episodes", 0)
    shared = (f" {first}-{first + n - 1}, which hold the periodic evaluations' "
              f"{first}-{first + train.get('eval_episodes', 10) - 1}"
              if seeds == "validation" and first and n else "")
    return (f"{train['steps']} steps, {train.get('lr_schedule', 'constant')} lr, scored from the "
            f"{scored.get('estimator', 'last checkpoint, raw weights')} on "
            f"{scored.get('episodes', '?')} episodes ({seeds} seeds{shared})")


def lottery_section(before, after, pilot=None, bar=BAR, me=None, long=None):
    """Each env x dataset cell's seed spread and verdict at its higher target under the first
    protocol (`before`, stats.groups_of of results/report-runs-v1) and the second (`after`);
    the hopper and walker2d cells whose spread after is over `bar` at either target, with what
    the medium-expert pilot (`me`: pilots.pilot_me's result) and the long-budget check (`long`:
    pilots.pilot_long's) found; with `pilot` (stats.read_pilot_v2 of results/pilot-v2), what the
    protocol pilot found did not work."""
    cells, over, why, low = {}, [], [], []
    for name, groups in (("before", before), ("after", after)):
        for (env, dataset, model, variant), runs in experiments(groups).items():
            if variant == "K=20":
                cells.setdefault((env, dataset), {}).setdefault(name, {})[model] = runs
    rows, decided, sds = [], defaultdict(int), defaultdict(list)
    for (env, dataset), by_name in sorted(cells.items()):
        row = [env, dataset]
        for name in ("before", "after"):
            by_model = by_name.get(name, {})
            if {"dt", "mamba"} - by_model.keys():
                row += ["-", "-", "-", "no records"]
                continue
            target = max(res["target_return"] for runs in by_model.values() for r in runs
                         for res in r.evals)
            dt, mamba = (scores(by_model[m], target) for m in ("dt", "mamba"))
            said = verdict(welch_interval(dt, mamba))
            if name == "after" and env in ("hopper", "walker2d"):
                over += [f"{env} {dataset} {MODEL_NAMES[m]} at target {t:g} (sd {sd:.1f})"
                         for t in sorted({res["target_return"] for runs in by_model.values()
                                          for r in runs for res in r.evals}, reverse=True)
                         for m in ("dt", "mamba")
                         if (sd := over_seeds(scores(by_model[m], t))[1] or 0) > bar]
                why += [_seeds_apart(env, dataset, m, by_model[m], target) for m in ("dt", "mamba")
                        if (over_seeds(scores(by_model[m], target))[1] or 0) > bar]
                low += [_seeds_fell(env, dataset, m, by_model[m], t) for m in ("dt", "mamba")
                        if (over_seeds(scores(by_model[m], target))[1] or 0) <= bar
                        for t in sorted({res["target_return"] for r in by_model[m]
                                         for res in r.evals} - {target})
                        if (over_seeds(scores(by_model[m], t))[1] or 0) > bar]
            decided[name] += said != "undecided" and not said.startswith("too few")
            for model, values in (("dt", dt), ("mamba", mamba)):
                sd = over_seeds(values)[1]
                if env in ("hopper", "walker2d") and sd is not None:
                    sds[name, model].append(sd)
            data = by_model["dt"][0].config.get("data", {}).get("return_mean")
            row += [f"{len(dt)} / {len(mamba)}", *(f"{over_seeds(v)[1] or float('nan'):.1f}"
                                                   for v in (dt, mamba)),
                    f"{said} (data mean {data:.0f})" if data is not None else said]
        rows.append(row)
    if not any("after" in by_name for by_name in cells.values()):
        return []
    first = next(r for g in before.values() for r in g)
    second = next(r for g in after.values() for r in g)
    mean_sd = {k: float(np.mean(v)) for k, v in sds.items()}
    spread = "; ".join(f"{MODEL_NAMES[m]} {mean_sd.get(('before', m), float('nan')):.1f} -> "
                       f"{mean_sd.get(('after', m), float('nan')):.1f}" for m in ("dt", "mamba"))
    return ["## The seed lottery, before and after", "",
            f"Before (REPORT.md's first protocol, results/report-runs-v1): {_protocol(first)}. "
            f"After (the protocol pilot's choice): {_protocol(second)}. Each cell at its higher "
            "target; sd: the standard deviation over seeds of the normalised score; a cell is "
            "decided when its verdict names a model or says equivalent. A dataset whose mean "
            "return changed between the two (hopper's, remade at D4RL's level) is not the same "
            "task.", "",
            f"Cells decided: {decided['before']} before, {decided['after']} after, of "
            f"{len(rows)} (more seeds alone narrow an interval: see the seed columns). Mean "
            f"seed sd over the hopper and walker2d cells: {spread}.", "",
            *md_table(["env", "dataset", "seeds DT / Mamba, before", "DT sd", "Mamba sd",
                      "verdict before", "seeds after", "DT sd", "Mamba sd", "verdict after"],
                     rows), "",
            f"The bar (issue 24): every hopper and walker2d cell's seed sd at most {bar:g}. After, "
            + (f"over it: {'; '.join(over)}." if over else "no cell is over it, at either "
               "target."), "",
            *(["Where a cell is over the bar at its higher target, the spread is between the "
               "seeds' last weights, not the evaluation: each seed's score on its 100 test "
               "episodes, and the same checkpoint's return on the 20 validation episodes of "
               "training's last evaluation beside its test return:", "", *why, "",
               "The pilot that chose the protocol ran on the medium data only (its spreads "
               "below); these cells are not medium data. " + what_would(me, long) + " More seeds "
               "narrow the interval of a difference, not the spread itself.", ""] if why else []),
            *(["Over the bar at the lower target only (the pilots measured their spreads at the "
               "higher target, the one training's periodic evaluations ask for): each seed's "
               "test score beside the share of its 100 test episodes that ended by falling:",
               "", *low, ""] if low else []),
            *pilot_findings(pilot)]


def _seeds_fell(env, dataset, model, runs, target):
    """One line: a cell's seeds, their test scores at `target` and the share of episodes that
    fell."""
    shown = ", ".join(f"seed {r.train['seed']} {res['score_mean']:.1f} ({res['fell']:.0%} fell)"
                      for r in sorted(runs, key=lambda r: r.train["seed"])
                      if (res := r.result(target)) is not None)
    return f"- {env} {dataset} {MODEL_NAMES[model]} at {target:g}: {shown}."


def _seeds_apart(env, dataset, model, runs, target):
    """One line: a cell's seeds, their test scores at `target`, and their last checkpoint's
    validation return (training's last periodic evaluation) beside the test return."""
    pairs = [(r.train["seed"], res, r.curve[-1][1] if r.curve else None) for r in runs
             if (res := r.result(target)) is not None]
    shown = ", ".join(f"seed {seed} {res['score_mean']:.1f}" + (
        f" (return {res['return_mean']:.0f}; validation {val:.0f})" if val is not None else "")
        for seed, res, val in sorted(pairs, key=lambda p: p[0]))
    return f"- {env} {dataset} {MODEL_NAMES[model]} at {target:g}: {shown}."


def memory_section(groups, figures, rel):
    """REPORT.md's "Where memory matters" (issue 28), on each env's medium data: per variant
    (positions only, delayed reward) and model setting, its score beside the same setting on the
    standard task (the drop the variant causes) and against the DT at K=20 under the same
    variant, each with Welch's 95% interval and its verdict; a figure of the drops."""
    found = experiments(groups)  # (env, dataset, model, variant) -> the runs (seeds)
    lines = ["| env | variant | model | score | on the standard task | drop, 95% CI | verdict | "
             "- DT K=20 under the variant, 95% CI | verdict |", "|---|---|---|---|---|---|---|---|"
             "---|"]
    drops = defaultdict(dict)  # (env, variant) -> setting -> mean drop
    against_dt = defaultdict(list)  # verdict against the DT K=20 -> ["env variant: setting"]
    stand_ins = set()  # settings with no standard-task run of their own
    for (env, dataset, model, variant), runs in sorted(found.items()):
        parts = variant.split(", ")
        of_data = [p for p in parts if p in ("positions", "delayed")]
        if dataset != "medium" or not of_data:
            continue
        acting = ", ".join(p for p in parts if p not in of_data)
        dt = found.get((env, dataset, "dt", ", ".join(["K=20", *of_data])), [])
        setting = f"{MODEL_NAMES.get(model, model)} {acting}"
        standard = found.get((env, dataset, model, acting))
        if not standard:  # e.g. DT K=60's: the standard task's at K=20
            standard = found.get((env, dataset, model, "K=20"), [])
            stand_ins.add(setting)
        cells = []
        for other, better, worse in ((standard, " + ".join(of_data), "standard task"),
                                     (dt, setting, "DT K=20")):
            interval = welch_interval(scores(other), scores(runs)) if other is not runs else None
            cells += [f"{np.mean(scores(runs)) - np.mean(scores(other)):+.1f} [{interval[0]:+.1f}"
                      f", {interval[1]:+.1f}]" if interval else "-",
                      verdict(interval, better, worse) if interval else "-"]
        if dt is not runs and cells[3] != "-":
            against_dt[cells[3]].append(f"{env} {' + '.join(of_data)}: {setting}")
        if standard and scores(standard) and scores(runs):
            drops[env, " + ".join(of_data)][setting] = float(
                np.mean(scores(runs)) - np.mean(scores(standard)))
        lines.append(f"| {env} | {' + '.join(of_data)} | {setting} | {score_cell(runs)} | "
                     f"{score_cell(standard)} | {' | '.join(cells)} |")
    if len(lines) == 2:
        return []
    doc = ["## Where memory matters", "",
           "The variants of issue 28 on the medium data: `--obs positions` hides the velocities "
           "(the policy must infer them from the history), `--reward delayed` gives the whole "
           "return at the episode's last step. Each setting's score (normalised, true return) "
           "beside the same setting on the standard task; the drop is the variant's cost. A "
           "model that uses memory better loses less. Verdicts as in the main table.", ""] + lines
    if stand_ins:
        doc += ["", f"{', '.join(sorted(stand_ins))}: no run on the standard task, so its drop "
                "is against the same model at K=20 there, and mixes the variant's cost with the "
                "change of K."]
    named = sorted((k, v) for k, v in against_dt.items() if k.endswith(" better"))
    rest = ", ".join(f"{len(v)} {k}" for k, v in sorted(against_dt.items())
                     if not k.endswith(" better"))
    compared = sum(len(v) for v in against_dt.values())
    helped = any(not k.startswith("DT K=20") for k, _ in named)
    doc += ["", f"Against the DT K=20 under the same variant ({compared} setting"
            f"{'' if compared == 1 else 's'} compared): "
            + "; ".join([f"{k} in {', '.join(v)}" for k, v in named]
                        + ([f"{'the rest: ' if named else ''}{rest}"] if rest else [])) + ". "
            + ("Where a setting beats the DT K=20, its memory helped under that variant."
               if helped else "No setting beats the DT K=20 under a variant here, and every "
               "one is within 5 points of it: at this budget and on this data, more memory did "
               "not help." if set(against_dt) == {"equivalent within 5"} else "No setting is "
               "shown to beat the DT K=20 under a variant here; where the intervals are wide, "
               "whether more memory helps at this budget is not decided.")]
    order = [f"{env} {variant}: {max(by, key=by.get)} ({max(by.values()):+.1f}), the largest "
             f"{min(by, key=by.get)} ({min(by.values()):+.1f})"  # drops are negative
             for (env, variant), by in sorted(drops.items()) if len(by) > 1]
    if order:
        doc += ["", "By the mean drop alone (an ordering, not a verdict: the intervals above "
                "decide), the smallest drop under each variant: " + "; ".join(order) + "."]
    if drops:
        png = figures / "memory-drops.png"
        plot_drops(drops, png)
        doc += ["", f"![drop caused by each variant]({rel(png)})"]
    return doc + [""]
