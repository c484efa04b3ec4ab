"""REPORT.md's sections that read the records and say what they show, each a list of markdown
lines (report.py puts them in order; render.py draws their figures).

  aggregate_section     REPORT.md's "Over all tasks": IQM, P(Mamba > DT), performance profiles
  budget_pilot_section  the first pilot: where each curve settled, the step budget
  pilot_v2_section      the protocol pilot: the candidates, RULE.md applied and how it fell
  pilot_me_section      the medium-expert pilot: a longer budget on the cells over the bar
  lottery_section       the seed lottery: each cell's seed spread and verdict, the first
                        protocol's records beside the second's; the cells over the bar, seed by
                        seed, and what would bring them under; what the pilot found did not work
  memory_section        "Where memory matters": each variant's drop, the settings against the DT

Standard library and numpy; the statistics are stats.py's.
"""
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.render import curve_of, md_table, plot_bands, plot_drops, plot_pilot, \
    plot_profile
from benchmarks.stats import (BAR, ESTIMATORS, MODEL_NAMES, PATIENCE, TIE, aggregate,
                              apply_pilot_rule, converged_step, experiments, over_seeds,
                              performance_profile, pm, read_pilot_me, read_pilot_v2,
                              score_cell, scores, task_matrices, verdict, welch_interval)


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


def budget_pilot_section(pilot, figures, rel):
    """The first pilot (results/pilot): one seed per model on each medium set, where each
    curve settled (stats.converged_step) and the step budget that follows."""
    png = figures / "pilot.png"
    plot_bands(pilot, lambda r: f"{r.train['env']} / {r.dataset}", curve_of,
               "mean return (periodic evaluation)", png, data_mean=True)
    settled = [converged_step(r.curve) for r in pilot]
    budget = (f"the budget is the latest of these, {max(settled)} steps" if all(
        s is not None for s in settled) else "a curve never settled, so no budget follows")
    lines = ["", "## The pilot that chose the step budget", "",
             f"One seed per model on each env's medium data, evaluated every "
             f"{pilot[0].train.get('eval_every')} steps on {pilot[0].train.get('eval_episodes')}"
             f" episodes. A curve settles at the first evaluation after which {PATIENCE} in a "
             f"row do not beat the best mean return so far by more than their standard error "
             f"(std over episodes / sqrt(episodes)); {budget}.", "",
             "| run | parameters | evaluations (step: mean return) | settled at |",
             "|---|---|---|---|"]
    for run in sorted(pilot, key=lambda r: (r.train["env"], r.model)):
        params = run.config.get("parameters", {}).get("without_timestep_table", "?")
        points = ", ".join(f"{s}: {v:.0f}" for s, v, _ in run.curve)
        at = converged_step(run.curve)
        lines.append(f"| {run.path.name} | {params} | {points} | "
                     f"{at if at is not None else 'never'} |")
    return lines + ["", f"![pilot]({rel(png)})"]


def pilot_v2_section(folder, figures, rel):
    """The protocol pilot (results/pilot-v2): each candidate's seed spread, mean and projected
    sweep cost on the complete cells, RULE.md's rule applied once both models have runs (marked
    provisional until all four cells are complete), and the candidates' curves."""
    names, estimates, curves, costs = read_pilot_v2(folder)
    doc = ["## The protocol pilot", "", f"The rule was written and committed before any pilot "
           f"run: [RULE.md]({rel(Path(folder) / 'RULE.md')}). Runs with records: {len(names)} of "
           "36.", ""]
    rows, chosen = apply_pilot_rule(estimates, costs or {c: float("nan") for c in estimates})
    if rows:
        cells = next(iter(rows.values()))["cells"]
        status = ("the rule's choice" if costs and len(cells) == 4 else
                  "not yet the rule's choice: costs need both models' runs" if not costs else
                  f"provisional: {len(cells)} of 4 cells complete")
        doc += candidates_table(rows, estimates, costs, chosen, status)
        if costs and chosen is not None:
            doc += [rule_reading(rows, chosen), ""]
    else:
        doc += ["No cell has 3 seeds of every recipe yet.", ""]
    if not curves:
        return doc
    png = figures / "pilot-v2.png"
    plot_pilot(curves, png)
    return doc + [f"![the pilot's candidates]({rel(png)})", ""]


def candidates_table(rows, estimates, costs, chosen, status):
    """A pilot's candidates (stats.apply_pilot_rule's rows) and each cell's estimates."""
    cells = next(iter(rows.values()))["cells"]
    order = sorted(rows, key=lambda c: (c[0], c[1], ESTIMATORS.index(c[2])))
    doc = [f"Cells with all three seeds of every recipe: "
           f"{', '.join(' / '.join(c) for c in cells)} ({status}). sd: the seed standard "
           "deviation of the estimate (normalised score on validation seeds), averaged over "
           "those cells.", "",
           "| schedule | budget | estimator | mean | sd | max cell sd | sweep core-hours | "
           "rule |", "|---|---|---|---|---|---|---|---|"]
    for c in order:
        r = rows[c]
        said = ("-" if not costs else "**chosen**" if c == chosen else r["out"] or "eligible")
        cost = f"{r['cost']:.1f}" if costs else "?"
        doc.append(f"| {c[0]} | {c[1]} | {c[2]} | {r['mean']:.1f} | {r['sd']:.1f} | "
                   f"{r['max_sd']:.1f} | {cost} | {said} |")
    return doc + ["", "Each cell's estimates, mean ± seed sd (normalised score, validation "
                  "seeds):", ""] + md_table(
        ["schedule", "budget", "estimator",
         *(f"{env} {MODEL_NAMES[model]}" for env, model in cells)],
        [[*c, *(pm(*over_seeds(estimates[c][cell]), digits=1) for cell in cells)]
         for c in order]) + [""]


SWEEP_4K = ("cosine", 4000, "last")  # the sweep's protocol: results/pilot-me/RULE.md's baseline
ME_RUNS = 12  # the medium-expert pilot's runs: 2 envs x 2 models x 3 seeds


def pilot_me(folder, sweep="results/report-runs"):
    """The medium-expert pilot read and its rule applied: (names, estimates, curves, costs,
    rows, chosen, done); done when all its runs have records and the costs are known."""
    names, estimates, curves, costs = read_pilot_me(folder, sweep)
    rows, chosen = apply_pilot_rule(estimates, costs or {c: float("nan") for c in estimates},
                                    baseline=SWEEP_4K) if SWEEP_4K in estimates else ({}, None)
    done = bool(costs) and chosen is not None and sum(
        n.startswith("cosine-16k") for n in names) == ME_RUNS
    return names, estimates, curves, costs, rows, chosen, done


def me_answer(rows, chosen, estimates, bar=BAR):
    """Rule 4 of results/pilot-me/RULE.md in words: the answer to issue 24's bar, and which
    cells the choice brings under it."""
    worst = rows[chosen]["max_sd"]
    if worst <= bar:
        return (f"Rule 4: {_name(chosen)} brings every medium-expert cell under the bar of "
                f"{bar:g} (largest cell sd {worst:.1f}) at {rows[chosen]['cost']:.1f} projected "
                "sweep core-hours. Using it means re-running the whole sweep with it (one "
                "protocol for every cell); this pilot did not measure it on the other datasets.")
    sds = {cell: over_seeds(estimates[chosen][cell])[1] for cell in rows[chosen]["cells"]}

    def cells(keep):
        return ", ".join(f"{env} {MODEL_NAMES[model]} ({sd:.1f})"
                         for (env, model), sd in sds.items() if keep(sd)) or "none"
    return (f"Rule 4: the choice's largest cell sd is {worst:.1f}, over the bar of {bar:g}: no "
            "affordable candidate measured here gets medium-expert under it (largest cell sd: "
            + ", ".join(f"{_name(c)} {r['max_sd']:.1f}" for c, r in sorted(rows.items()))
            + f"). With the choice, under the bar: {cells(lambda sd: sd <= bar)}; over it: "
            f"{cells(lambda sd: sd > bar)}.")


def pilot_me_section(folder, figures, rel, sweep="results/report-runs"):
    """The medium-expert pilot (results/pilot-me): the candidates on the cells over the bar,
    its rule applied once all its runs have records (provisional before), and the curves."""
    names, estimates, curves, costs, rows, chosen, done = pilot_me(folder, sweep)
    ours = sum(n.startswith("cosine-16k") for n in names)
    doc = ["## The medium-expert pilot: a longer budget on the cells over the bar", "",
           f"The rule was committed before its first run: [RULE.md]("
           f"{rel(Path(folder) / 'RULE.md')}). Its runs with records: {ours} of {ME_RUNS} "
           "(cosine lr to 0 at 16000 steps, EMA tracked); the 4000-step candidates are the "
           "sweep's own runs of these cells, seeds 0-2.", ""]
    if rows:
        doc += candidates_table(rows, estimates, costs, chosen if done else None,
                                "the rule's choice" if done else
                                f"provisional: {ours} of {ME_RUNS} runs")
        if done:
            doc += [rule_reading(rows, chosen, then=me_answer(rows, chosen, estimates)), ""]
        doc += [_seed_by_seed(rows, estimates), ""]
    else:
        doc += ["No cell has 3 seeds of every candidate yet.", ""]
    if curves:
        png = figures / "pilot-me.png"
        plot_pilot(curves, png)
        doc += [f"![the medium-expert pilot's candidates]({rel(png)})", ""]
    return doc


def _seed_by_seed(rows, estimates):
    """Each cell's seeds at each budget, the last raw weights: a spread's shape (two modes, or
    one) in a line."""
    lasts = sorted(c for c in rows if c[2] == "last")

    def seeds(cand, cell):
        return " / ".join(f"{v:.0f}" for v in estimates[cand][cell])
    return ("Seed by seed, the last raw weights (validation scores of seeds 0, 1, 2): " + "; ".join(
        f"{env} {MODEL_NAMES[model]} " + ", then ".join(
            f"{seeds(c, (env, model))} at {c[1]} steps" for c in lasts)
        for env, model in next(iter(rows.values()))["cells"]) + ".")


def _name(candidate):
    return " ".join(map(str, candidate))  # ("cosine", 4000, "last") -> "cosine 4000 last"


def rule_reading(rows, chosen, bar=BAR, then=None):
    """RULE.md's four steps as they fell on the pilot's rows (stats.apply_pilot_rule), in words;
    `then` replaces rule 4's sentence."""
    left = {c: r for c, r in rows.items() if r["out"] is None}
    best = min(left, key=lambda c: left[c]["sd"])
    tied = sorted((c for c, r in left.items() if r["sd"] <= left[best]["sd"] + TIE),
                  key=lambda c: left[c]["sd"])
    out = [f"{_name(c)}: {r['out']}" for c, r in rows.items() if r["out"]]
    text = (f"How the rule chose: rules 1-2 leave {len(left)} of {len(rows)} candidates"
            + (f" (out: {'; '.join(out)})" if out else "") + f". Rule 3: the lowest sd is "
            f"{_name(best)}'s {left[best]['sd']:.1f}")
    if len(tied) > 1:
        text += (f"; within {TIE:.1f} of it: " + ", ".join(
            f"{_name(c)} (sd {rows[c]['sd']:.1f}, {rows[c]['cost']:.1f} core-hours)"
            for c in tied) + "; the tie goes to the cheaper, then the simpler estimator: "
            f"{_name(chosen)}")
    worst = rows[chosen]["max_sd"]
    if then:
        return f"{text}. {then}"
    return text + (f". Rule 4: the choice's largest cell sd is {worst:.1f}, " + (
        f"within the bar of {bar:g} in every cell." if worst <= bar else
        f"over the bar of {bar:g}: the report says so and the sweep keeps the choice."))


def what_did_not_work(rows, chosen, estimates, baseline=("const", 4000, "last")):
    """The pilot's other candidates against its choice, in words: the first protocol's recipe,
    a longer budget, an average of checkpoints and of weights at a constant lr."""
    def said(c):
        r = rows[c]
        return f"sd {r['sd']:.1f} (worst cell {r['max_sd']:.1f}), mean {r['mean']:.1f}"

    def helped(c):
        if rows[c]["sd"] > rows[baseline]["sd"] - TIE:
            return "no steadier than the first protocol's recipe"
        if rows[c]["sd"] > rows[chosen]["sd"] + TIE:
            return "steadier than the first protocol's recipe, less than the choice"
        return "as steady as the choice"

    choice = rows[chosen]
    lines = ["What the pilot measured besides its choice (validation seeds, the four hopper / "
             f"walker2d medium cells, 3 seeds each; the choice, {_name(chosen)}: "
             f"{said(chosen)}):", "",
             f"- The first protocol's recipe (constant lr, 4000 steps, last checkpoint): "
             f"{said(baseline)}."]
    longer = ("const", 8000, "last")
    if longer in rows:
        lines.append(f"- Twice the steps at the constant lr (8000, last checkpoint): "
                     f"{said(longer)}, at {rows[longer]['cost']:.1f} sweep core-hours against "
                     f"{choice['cost']:.1f}: {helped(longer)}.")
    for est, what in (("mean3", "the mean of the last three checkpoints' evaluations"),
                      ("ema", "an exponential moving average of the weights (decay 0.999)")):
        c = ("const", 4000, est)
        if c not in rows:
            continue
        line = f"- At the constant lr, {what}: {said(c)}: {helped(c)}"
        if est == "ema":
            bottom = rows[c]["mean"] < rows[baseline]["mean"] - 5
            line += (". Issue 24 measured this EMA stable at the bottom on the first hopper data "
                     "(10-17 normalised where the raw weights reached about 70); here it is " + (
                         "stable at the bottom again" if bottom else
                         f"not (mean {rows[c]['mean']:.1f}, the raw weights' "
                         f"{rows[baseline]['mean']:.1f})"))
            cell = ("hopper", "dt")
            if cell in estimates[c] and cell in estimates[baseline]:
                line += (f"; hopper DT reads {pm(*over_seeds(estimates[c][cell]), digits=1)} "
                         f"with the EMA, {pm(*over_seeds(estimates[baseline][cell]), digits=1)} "
                         "with the raw weights")
            if not bottom and c != chosen and rows[c]["sd"] <= choice["sd"] + TIE:
                line += (". It tied with the choice under rule 3 and lost the tie-break to the "
                         "simpler estimator at equal cost")
        lines.append(line + ".")
    return lines + [""]


def _protocol(run):
    """How a run was trained and scored, read from its records."""
    train, scored = run.train, run.eval_config
    seeds = scored.get("seeds") or ("test" if scored.get("seed", 0) >= 500_000 else  # TEST_SEED
                                    "validation")
    shared = ", the periodic evaluations' own" if seeds == "validation" else ""
    return (f"{train['steps']} steps, {train.get('lr_schedule', 'constant')} lr, scored from the "
            f"{scored.get('estimator', 'last checkpoint, raw weights')} on "
            f"{scored.get('episodes', '?')} episodes ({seeds} seeds{shared})")


def lottery_section(before, after, pilot=None, bar=BAR, me=None):
    """Each env x dataset cell's seed spread and verdict at its higher target under the first
    protocol (`before`, stats.groups_of of results/report-runs-v1) and the second (`after`);
    the hopper and walker2d cells whose spread after is over `bar` at either target, with what
    the medium-expert pilot (`me`: pilot_me's result) found; with `pilot` (stats.read_pilot_v2
    of results/pilot-v2), what the protocol pilot found did not work."""
    cells, over, why = {}, [], []
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
            f"{len(rows)}. Mean seed sd over the hopper and walker2d cells: {spread}.", "",
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
               "below); these cells are not medium data. " + _what_would(me) + " More seeds "
               "narrow the interval of a difference, not the spread itself.", ""] if why else []),
            *_pilot_findings(pilot)]


def _what_would(me):
    """What would bring the medium-expert cells under the bar: the medium-expert pilot's answer
    once its rule has applied, else that it is not measured (yet)."""
    if me and me[6]:
        estimates, rows, chosen = me[1], me[4], me[5]
        answer = me_answer(rows, chosen, estimates).removeprefix("Rule 4: ")
        beyond = "" if rows[chosen]["max_sd"] <= BAR else (
            " What would is not measured: the DT paper's hopper medium-expert (107.6 ± 1.8, 3 "
            "seeds) trains 100k steps at batch 64, about 12 times the windows of this pilot's "
            "16000 x 32, which the sweep's 30 core-hours do not afford on this CPU.")
        return ("A pilot on the medium-expert cells with four times the budget (\"The "
                f"medium-expert pilot\" below) answers: {answer}{beyond}")
    return ("What would bring them under it is not measured yet: a pilot on these cells with a "
            "longer budget (results/pilot-me/RULE.md: cosine to 16000 steps, four times the "
            "sweep's windows) " + ("is running; its runs so far are below." if me and any(
                n.startswith("cosine-16k") for n in me[0]) else
                                   "is the next step."))


def _seeds_apart(env, dataset, model, runs, target):
    """One line: a cell's seeds, their test scores at `target`, and their last checkpoint's
    validation return (training's last periodic evaluation) beside the test return."""
    pairs = [(r.train["seed"], res, r.curve[-1][1] if r.curve else None) for r in runs
             if (res := r.result(target)) is not None]
    shown = ", ".join(f"seed {seed} {res['score_mean']:.1f}" + (
        f" (return {res['return_mean']:.0f}; validation {val:.0f})" if val is not None else "")
        for seed, res, val in sorted(pairs, key=lambda p: p[0]))
    return f"- {env} {dataset} {MODEL_NAMES[model]} at {target:g}: {shown}."


def _pilot_findings(pilot):
    """what_did_not_work for stats.read_pilot_v2's result, once the rule has chosen."""
    if not pilot or not pilot[3]:  # no pilot, or costs unknown: no choice yet
        return []
    rows, chosen = apply_pilot_rule(pilot[1], pilot[3])
    return what_did_not_work(rows, chosen, pilot[1]) if chosen else []


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
    for (env, dataset, model, variant), runs in sorted(found.items()):
        parts = variant.split(", ")
        of_data = [p for p in parts if p in ("positions", "delayed")]
        if dataset != "medium" or not of_data:
            continue
        acting = ", ".join(p for p in parts if p not in of_data)
        standard = found.get((env, dataset, model, acting)) or found.get(
            (env, dataset, model, "K=20"), [])  # e.g. DT K=60's: the standard task's at K=20
        dt = found.get((env, dataset, "dt", ", ".join(["K=20", *of_data])), [])
        setting = f"{MODEL_NAMES.get(model, model)} {acting}"
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
    named = sorted((k, v) for k, v in against_dt.items() if k.endswith(" better"))
    compared = sum(len(v) for v in against_dt.values())
    helped = any(not k.startswith("DT K=20") for k, _ in named)
    doc += ["", f"Against the DT K=20 under the same variant ({compared} setting"
            f"{'' if compared == 1 else 's'} compared): "
            + "".join(f"{k} in {', '.join(v)}; " for k, v in named)
            + "the rest undecided or equivalent within 5. "
            + ("Where a setting beats the DT K=20, its memory helped under that variant."
               if helped else "No setting beats the DT K=20 under a variant here: at this "
               "budget and on this data, more memory did not help.")]
    if drops:
        png = figures / "memory-drops.png"
        plot_drops(drops, png)
        doc += ["", f"![drop caused by each variant]({rel(png)})"]
    return doc + [""]
