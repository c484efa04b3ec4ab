"""REPORT.md's sections on the pilots that chose the protocol, each a list of markdown lines
(report.py puts them in order; render.py draws their figures; stats.py reads the records and
applies the rules).

  budget_pilot_section  the first pilot: where each curve settled, the step budget
  pilot_v2_section      the protocol pilot: the candidates, RULE.md applied and how it fell
  pilot_me_section      the medium-expert pilot: a longer budget on the cells over the bar
  pilot_long_section    the long-budget check: hopper medium-expert at 48000 steps
  pilot_paper_section   the paper-recipe check: the DT there with the DT paper's settings
  what_would            what would bring the cells over the bar under it, as the pilots found
  pilot_findings        what the protocol pilot measured besides its choice

Standard library and numpy.
"""
import json
from pathlib import Path

from benchmarks.render import curve_of, md_table, plot_bands, plot_pilot, plot_seed_curves
from benchmarks.stats import (BAR, D4RL_DT, ESTIMATORS, MODEL_NAMES, PATIENCE, TIE,
                              apply_pilot_rule, converged_step, over_seeds, pilot_estimates, pm,
                              read_jsonl, read_pilot_long, read_pilot_me, read_pilot_v2,
                              sd_interval)


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
             f"(std over episodes / sqrt(episodes)), so a curve that falls afterwards still "
             f"counts as settled: the rule finds where a curve stops rising, not a plateau; "
             f"{budget}.", "",
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
            return "no lower an sd than the first protocol's recipe"
        if rows[c]["sd"] > rows[chosen]["sd"] + TIE:
            return "a lower sd than the first protocol's recipe, higher than the choice's"
        return "an sd as low as the choice's"

    choice = rows[chosen]
    lines = ["What the pilot measured besides its choice (validation seeds, the four hopper / "
             f"walker2d medium cells, 3 seeds each; the choice, {_name(chosen)}: "
             f"{said(chosen)}; sds of three seeds order the candidates, they do not test a "
             "difference):", "",
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


def what_would(me, long=None):
    """What would bring the medium-expert cells under the bar: the medium-expert pilot's answer
    once its rule has applied, and the long-budget check's (`long`: pilot_long's result) once
    all its runs have records; else that it is not measured (yet)."""
    if me and me[6]:
        estimates, rows, chosen = me[1], me[4], me[5]
        answer = me_answer(rows, chosen, estimates).removeprefix("Rule 4: ")
        hopper, _ = D4RL_DT["hopper", "medium-expert"]
        beyond = "" if rows[chosen]["max_sd"] <= BAR else (
            f" The DT paper's hopper medium-expert ({hopper}, 3 seeds) trains 100k steps at "
            "batch 64, about 12 times the windows of this pilot's 16000 x 32, which the "
            "sweep's 30 core-hours do not afford on this CPU. " + (
                "A check of hopper medium-expert at 48000 steps (\"The long-budget check\" "
                "below) answers: " + long_answer(long).split(": ", 1)[1] if long and long["done"]
                else "A check of hopper medium-expert at 48000 steps (results/pilot-long/RULE.md) "
                + ("is running; its runs so far are below." if long and long["names"] else
                   "is the next step; until then what would is not measured.")))
        return ("A pilot on the medium-expert cells with four times the budget (\"The "
                f"medium-expert pilot\" below) answers: {answer}{beyond}")
    return ("What would bring them under it is not measured yet: a pilot on these cells with a "
            "longer budget (results/pilot-me/RULE.md: cosine to 16000 steps, four times the "
            "sweep's windows) " + ("is running; its runs so far are below." if me and any(
                n.startswith("cosine-16k") for n in me[0]) else
                                   "is the next step."))


def pilot_findings(pilot):
    """what_did_not_work for stats.read_pilot_v2's result, once the rule has chosen."""
    if not pilot or not pilot[3]:  # no pilot, or costs unknown: no choice yet
        return []
    rows, chosen = apply_pilot_rule(pilot[1], pilot[3])
    return what_did_not_work(rows, chosen, pilot[1]) if chosen else []


LONG = ("cosine", 48000, "last")  # results/pilot-long/RULE.md: the one candidate it measures
LONG_RUNS = 6  # hopper medium-expert x 2 models x 3 seeds


def pilot_long(folder, me_folder="results/pilot-me", sweep="results/report-runs"):
    """The long-budget check read (stats.read_pilot_long): a dict of its run names, the
    estimates at 4000, 16000 and 48000 steps, each run's validation curve, the costs, and done
    (all its runs have records and the costs are known)."""
    names, estimates, _, costs = read_pilot_long(folder, me_folder, sweep)
    runs = {}  # model -> [(seed, [(step, validation score)])]
    for train, lines in _records(folder):
        runs.setdefault(train["model"], []).append((train["seed"], _validation_curve(lines)))
    ours = sum(n.startswith("cosine-48k") for n in names)
    return {"names": names, "estimates": estimates, "runs": runs, "costs": costs,
            "ours": ours, "done": ours == LONG_RUNS and bool(costs)}


def _records(folder):
    """(config.json's train settings, metrics.jsonl's lines) of each finished run in `folder`."""
    for path in sorted(Path(folder).glob("*/metrics.jsonl")):
        yield (json.loads((path.parent / "config.json").read_text())["train"],
               read_jsonl(path))


def _validation_curve(lines):
    """[(step, validation score)] of a run's periodic evaluations."""
    return [(r["step"], r["eval"]["score_mean"]) for r in lines if "eval" in r]


SD_COLUMN = "seed sd, 95% interval if normal"


def sd_note():
    """What SD_COLUMN means, with the width of its interval for three seeds."""
    low, high = sd_interval([0.0, 1.0, 2.0])  # three values whose sd is 1
    return ("The last column is where the seed sd would lie, with 95% confidence, if the seeds' "
            "scores were normal (chi-square, n - 1 degrees of freedom): three seeds pin an sd "
            f"down loosely, {low:.2f} to {high:.1f} times the value measured, and hopper's scores "
            "are far from normal. The rules read the measured sd, as written before the runs.")


def _seed_row(values):
    """A table row's seeds, mean ± seed sd and the sd's interval (stats.sd_interval)."""
    interval = sd_interval(values)
    return [" / ".join(f"{v:.0f}" for v in values),
            pm(*over_seeds(values), digits=1) if len(values) > 1 else "-",
            "[{}, {}]".format(*(f"{x:.{1 if x < 10 else 0}f}" for x in interval))
            if interval else "-"]


def _budgets(long, model):
    """model -> [(budget, the seeds' estimates)] at the three budgets that have them."""
    cell = ("hopper", model)
    return [(c[1], long["estimates"][c][cell]) for c in sorted(long["estimates"])
            if c[0] == "cosine" and c[2] == "last" and cell in long["estimates"][c]]


def long_answer(long, bar=BAR):
    """results/pilot-long/RULE.md's rules 1-2 in words."""
    said, passed = [], {}
    for model in ("dt", "mamba"):
        by_budget = dict(_budgets(long, model))
        (m48, sd48), (m16, _) = over_seeds(by_budget[48000]), over_seeds(by_budget[16000])
        passed[model] = sd48 <= bar and m48 >= m16 - 5
        said.append(f"{MODEL_NAMES[model]} sd {sd48:.1f}, mean {m48:.1f} (16000 steps: "
                    f"{m16:.1f}; seeds {' / '.join(f'{v:.0f}' for v in by_budget[48000])})")
    said = "; ".join(said)
    if all(passed.values()):
        return (f"Rule 1: at 48000 steps both hopper medium-expert cells are under the bar of "
                f"{bar:g} without losing their mean ({said}): a budget twelve times the "
                "sweep's (three times the pilot's) is what brings hopper medium-expert under it, "
                "on three validation seeds (a three-seed sd is a loose estimate). The whole "
                f"sweep at that budget projects to {long['costs'][LONG]:.0f} core-hours, beyond "
                "the 30 this CPU affords; using it means re-running the whole sweep with it.")
    alone = [MODEL_NAMES[m] for m in passed if passed[m]]
    paper = long.get("paper")
    tried = ("was not tried on this cell: what would stays unmeasured" if not paper else
             "is being tried on the DT (results/pilot-paper/RULE.md); until it lands, what would "
             "for the DT stays unmeasured" if not paper["done"] else
             "was tried on the DT (\"The paper-recipe check\" below): "
             + paper_answer(paper).split(": ", 1)[1].removesuffix("."))
    return (f"Rule 2: 48000 steps does not bring hopper medium-expert under the bar of {bar:g} "
            f"({said})" + (f"; the {alone[0]} alone is under it" if len(alone) == 1 else "")
            + ". The DT paper's recipe (`train.py --preset paper`: width 128 with "
            "3 GPT or 5 Mamba blocks against our 64 with 2 or 3, batch 64 at lr 1e-4 for 100k "
            f"steps, about 4 times these windows) {tried}. (The whole sweep at 48000 steps "
            f"projects to {long['costs'][LONG]:.0f} core-hours.)")


def pilot_long_section(folder, figures, rel, me_folder="results/pilot-me",
                       sweep="results/report-runs", paper=None):
    """The long-budget check (results/pilot-long): hopper medium-expert's seeds at 4000, 16000
    and 48000 steps, its rule applied once all its runs have records, each run's curve; with
    `paper` (pilot_paper's result), what the paper-recipe check says of the DT."""
    long = pilot_long(folder, me_folder, sweep) | {"paper": paper}
    doc = ["## The long-budget check: hopper medium-expert at 48000 steps", "",
           f"The rule was committed before its first run: [RULE.md]("
           f"{rel(Path(folder) / 'RULE.md')}). Its runs with records: {long['ours']} of "
           f"{LONG_RUNS} (cosine lr to 0 at 48000 steps, evaluated every 2000). 4000 steps: the "
           "sweep's own runs, seeds 0-2; 16000: the medium-expert pilot's. Every score is the "
           "last raw weights' on the 20 validation episodes (seeds 10000-10019) at target 3600"
           + ("" if long["done"] else "; provisional until every run has its record") + ".", ""]
    rows = [[MODEL_NAMES[model], budget, *_seed_row(values)]
            for model in ("dt", "mamba") for budget, values in _budgets(long, model)]
    doc += md_table(["model", "steps", "seeds 0 / 1 / 2", "mean ± seed sd", SD_COLUMN], rows)
    doc += ["", sd_note(), ""]
    if long["done"]:
        doc += [long_answer(long), ""]
    if long["runs"]:
        png = figures / "pilot-long.png"
        plot_seed_curves(long["runs"], png)
        doc += [f"![each run of the long-budget check]({rel(png)})", ""]
    return doc


PAPER_STEPS, PAPER_RUNS = 100_000, 3  # results/pilot-paper/RULE.md: the DT, seeds 0-2
PAPER_FLOOR = 90.0  # its rule 1: every seed near the expert level (our hopper expert: 101)


def pilot_paper(folder):
    """The paper-recipe check read: each finished run's seed -> its last raw validation score at
    100000 steps (None if it has none), each run's curve, its seconds per training step, and
    done (all its runs have a score)."""
    seeds, runs, step_s = {}, {"dt": []}, []
    for train, lines in _records(folder):
        seeds[train["seed"]] = pilot_estimates(lines, PAPER_STEPS)["last"]
        runs["dt"].append((train["seed"], _validation_curve(lines)))
        last = [r for r in lines if "loss" in r][-1]
        step_s.append(last["time"] / last["step"])
    done = len(seeds) == PAPER_RUNS and None not in seeds.values()
    return {"seeds": seeds, "runs": runs, "step_s": step_s, "done": done}


def paper_answer(paper, bar=BAR):
    """results/pilot-paper/RULE.md's rules 1-2 in words (once all its runs have scores)."""
    values = [paper["seeds"][s] for s in sorted(paper["seeds"])]
    mean, sd = over_seeds(values)
    said = f"sd {sd:.1f}, mean {mean:.1f}; seeds {' / '.join(f'{v:.0f}' for v in values)}"
    if sd <= bar and mean >= PAPER_FLOOR:
        step_s = sum(paper["step_s"]) / len(paper["step_s"])
        return (f"Rule 1: with the DT paper's settings the DT's hopper medium-expert seeds all "
                f"reach the expert level ({said}): those settings are what brings the DT's cell "
                f"under the bar of {bar:g}, on three validation seeds. At the check's "
                f"{step_s:.2f} s per training step, the DT half of the sweep (45 runs of 100k "
                f"steps) would train for about {45 * PAPER_STEPS * step_s / 3600:.0f} core-hours "
                "on this CPU, evaluations not counted; the Mamba is untried at these settings "
                "(its own 48000-step recipe is what would for it), and one recipe for both "
                "models means re-running the whole sweep.")
    return (f"Rule 2: not even the DT paper's settings give the DT's hopper medium-expert seeds "
            f"one level near the expert's on this data ({said}): what would for the DT on this "
            "cell is not known here. Our hopper medium-expert is not D4RL's (its medium half "
            "scores 37-42 normalised, D4RL's 44; its expert half 101, D4RL's about 108).")


def pilot_paper_section(paper, long, figures, rel, folder="results/pilot-paper"):
    """The paper-recipe check (results/pilot-paper): the DT's seeds with `--preset paper` beside
    the long-budget check's at 48000 steps, its rule once all its runs have scores, each run's
    curve."""
    doc = ["## The paper-recipe check: the DT on hopper medium-expert with the DT paper's "
           "settings", "",
           f"The rule was committed before its first run: [RULE.md]({rel(Path(folder) / 'RULE.md')}"
           f"). Its runs with records: {len(paper['seeds'])} of {PAPER_RUNS} (`train.py --preset "
           "paper`, evaluated every 5000 steps). Every score is the last raw weights' on the 20 "
           "validation episodes (seeds 10000-10019) at target 3600"
           + ("" if paper["done"] else "; provisional until every run has its record") + ".", ""]
    long48 = {model: dict(_budgets(long, model))[48000] for model in ("dt", "mamba")}
    rows = [[MODEL_NAMES[model], "cosine 48000 (the long-budget check)", *_seed_row(values)]
            for model, values in long48.items()]
    values = [paper["seeds"][s] for s in sorted(paper["seeds"]) if paper["seeds"][s] is not None]
    if values:
        rows.insert(1, ["DT", "--preset paper, 100000", *_seed_row(values)])
    doc += md_table(["model", "recipe, steps", "seeds", "mean ± seed sd", SD_COLUMN], rows)
    doc += ["", "The last column: as in the long-budget check's table.", ""]
    if paper["done"]:
        doc += [paper_answer(paper), ""]
    if paper["runs"]["dt"]:
        png = figures / "pilot-paper.png"
        plot_seed_curves(paper["runs"], png, "hopper medium-expert / DT, --preset paper")
        doc += [f"![each run of the paper-recipe check]({rel(png)})", ""]
    return doc
