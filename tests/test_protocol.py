"""The comparison's statistics (stats.py, report.py): the aggregate over tasks (rliable) checked by
hand, and the protocol pilot's rule (results/pilot-v2/RULE.md) on records made up to test it."""
import json
import math

import numpy as np
import pytest

from benchmarks import pilots, stats

CELLS = [("hopper", "dt"), ("hopper", "mamba")]


def test_iqm_and_probability_of_improvement_match_a_hand_computation():
    rng = np.random.default_rng(0)
    dt, mamba = rng.uniform(0, 100, (4, 3)), rng.uniform(20, 100, (4, 3))  # (seeds, tasks)
    iqm, (p, (p_lo, p_hi)) = stats.aggregate({"dt": dt, "mamba": mamba}, reps=200)
    for name, scores in (("dt", dt), ("mamba", mamba)):
        middle = np.sort(scores.ravel())[3:9]  # 12 runs: drop the lowest and highest 3
        assert iqm[name][0] == pytest.approx(middle.mean())
        assert iqm[name][1][0] < iqm[name][0] < iqm[name][1][1]
    by_task = [np.mean([(x > y) + 0.5 * (x == y) for x in mamba[:, t] for y in dt[:, t]])
               for t in range(3)]
    assert p == pytest.approx(np.mean(by_task)) and p_lo <= p <= p_hi


def test_performance_profile_is_the_fraction_of_runs_above_each_threshold():
    profile = stats.performance_profile({"dt": [[10, 50], [30, 70]]}, [0, 30, 70])
    assert profile["dt"].tolist() == [1.0, 0.5, 0.0]


def pilot_lines(raw, ema, budget, seconds_per_step=0.1):
    """metrics.jsonl lines of a pilot run: evaluations every 1000 steps with these scores."""
    lines = [{"step": budget, "loss": 0.1, "lr": 0.0, "time": budget * seconds_per_step}]
    for i, (r, e) in enumerate(zip(raw, ema), start=1):
        lines.append({"step": 1000 * i, "eval": {"score_mean": r, "wall_time_s": 10.0},
                      "eval_ema": {"score_mean": e, "wall_time_s": 10.0}})
    return lines


def test_pilot_estimates_read_last_ema_and_the_mean_of_the_last_three():
    lines = pilot_lines([10, 20, 30, 40], [1, 2, 3, 4], 4000)
    assert stats.pilot_estimates(lines, 4000) == {"last": 40, "ema": 4, "mean3": 30.0}
    assert stats.pilot_estimates(lines, 2000) == {"last": 20, "ema": 2, "mean3": None}


def test_the_rule_drops_the_unaffordable_and_the_stably_bad_then_takes_the_lowest_spread():
    v1 = ("const", 4000, "last")
    estimates = {v1: {c: [20, 60, 70] for c in CELLS},  # the noisy baseline, mean 50
                 ("const", 4000, "ema"): {c: [12, 13, 14] for c in CELLS},  # stable but bad
                 ("cosine", 8000, "last"): {c: [55, 56, 57] for c in CELLS},  # stable, too dear
                 ("cosine", 4000, "mean3"): {c: [50, 54, 58] for c in CELLS},  # sd 4
                 ("cosine", 4000, "last"): {c: [49, 52, 55] for c in CELLS},  # sd 3
                 ("cosine", 4000, "ema"): {c: [50, 52, 54] for c in CELLS}}  # sd 2: lowest
    costs = {c: 40.0 if c[1] == 8000 else 12.0 for c in estimates}
    costs["cosine", 4000, "ema"] = 13.0  # tied within 1 point with "last" (sd 3), and dearer
    rows, chosen = stats.apply_pilot_rule(estimates, costs)
    assert rows["const", 4000, "ema"]["out"].startswith("mean 13.0 < const 4000 last's 50.0 - 5")
    assert rows["cosine", 8000, "last"]["out"].startswith("unaffordable")
    assert chosen == ("cosine", 4000, "last")  # the tie goes to the cheaper candidate
    assert rows[chosen]["sd"] == pytest.approx(3.0) and rows[chosen]["max_sd"] == pytest.approx(3)
    # a cell without three seeds of every candidate does not count
    estimates[v1][("walker2d", "dt")] = [1, 99]
    assert stats.apply_pilot_rule(estimates, costs)[0][v1]["cells"] == CELLS


def write_pilot(folder, cells):
    """Made-up pilot records: every recipe's raw scores 10, 20, 30 over the seeds (+40 with a
    cosine schedule), EMA 5 everywhere."""
    (folder / "RULE.md").parent.mkdir()
    (folder / "RULE.md").write_text("the rule\n")
    for (env, model) in cells:
        for seed in range(3):
            for recipe, budget in (("const-8k", 8000), ("cosine-8k", 8000), ("cosine-4k", 4000)):
                raw = [10.0 * (seed + 1) + (recipe != "const-8k") * 40] * (budget // 1000)
                run = folder / f"{recipe}-{model}-{env}-medium-s{seed}"
                run.mkdir()
                (run / "config.json").write_text(json.dumps(
                    {"train": {"env": env, "model": model, "seed": seed}}))
                (run / "metrics.jsonl").write_text("\n".join(
                    json.dumps(x) for x in pilot_lines(raw, [5.0] * len(raw), budget)))


def test_report_applies_the_rule_to_pilot_records_and_draws_the_candidates(tmp_path):
    folder = tmp_path / "pilot-v2"
    write_pilot(folder, CELLS)
    (tmp_path / "figures").mkdir()  # write_report makes it
    doc = pilots.pilot_v2_section(folder, tmp_path / "figures", lambda p: str(p))
    text = "\n".join(doc)
    assert "Runs with records: 18 of 36" in text
    # every candidate has seed sd 10 (scores 10, 20, 30 + offset); the const EMA is stably bad;
    # 8k costs 45 x (800 + 800 s) + 18 x 800 s of training alone = 24 h: still affordable
    assert "| const | 4000 | ema | 5.0 | 0.0 | 0.0 |" in text
    assert "mean 5.0 < const 4000 last's 20.0" in text
    assert text.count("**chosen**") == 1
    assert "| cosine | 4000 | last | 60.0 | 10.0 | 10.0 |" in text
    # each cell's estimates: the raw scores 50, 60, 70; the EMA's 5 on every seed
    assert "| cosine | 4000 | last |" + " 60.0 ± 10.0 |" * len(CELLS) in text
    assert "| const | 4000 | ema |" + " 5.0 ± 0.0 |" * len(CELLS) in text
    assert (tmp_path / "figures" / "pilot-v2.png").stat().st_size > 0


def test_with_one_models_runs_the_pilot_shows_its_cells_without_a_verdict(tmp_path):
    folder = tmp_path / "pilot-v2"
    write_pilot(folder, CELLS[:1])
    (tmp_path / "figures").mkdir()
    text = "\n".join(pilots.pilot_v2_section(folder, tmp_path / "figures", lambda p: str(p)))
    assert "Runs with records: 9 of 36" in text and "costs need both models' runs" in text
    assert "| cosine | 4000 | last | 60.0 | 10.0 | 10.0 | ? | - |" in text
    assert "**chosen**" not in text


def test_the_report_says_how_the_rule_chose_and_what_did_not_work():
    v1, ema, longer = ("const", 4000, "last"), ("const", 4000, "ema"), ("const", 8000, "last")
    mean3, cosine = ("const", 4000, "mean3"), ("cosine", 4000, "last")
    estimates = {v1: {c: [20, 60, 70] for c in CELLS},      # sd 26.5, mean 50
                 longer: {c: [25, 60, 65] for c in CELLS},  # sd 21.8: barely steadier
                 mean3: {c: [40, 50, 60] for c in CELLS},   # sd 10
                 ema: {c: [52, 53, 54] for c in CELLS},     # sd 1, mean 53: steady, not bad
                 cosine: {c: [50, 51.5, 53] for c in CELLS}}  # sd 1.5: tied with the EMA
    costs = {c: 20.0 if c == longer else 12.0 for c in estimates}
    rows, chosen = stats.apply_pilot_rule(estimates, costs)
    assert chosen == cosine  # tied with the EMA at equal cost: the simpler estimator
    reading = pilots.rule_reading(rows, chosen)
    assert "the lowest sd is const 4000 ema's 1.0" in reading
    assert "the simpler estimator: cosine 4000 last" in reading
    assert "largest cell sd is 1.5, within the bar of 12" in reading
    text = "\n".join(pilots.what_did_not_work(rows, chosen, estimates))
    assert "(constant lr, 4000 steps, last checkpoint): sd 26.5 (worst cell 26.5)" in text
    assert "(8000, last checkpoint): sd 21.8 (worst cell 21.8), mean 50.0, at 20.0 sweep " \
           "core-hours against 12.0: a lower sd than the first protocol's recipe, higher than " \
           "the choice's." in text
    assert "here it is not (mean 53.0, the raw weights' 50.0); hopper DT reads 53.0 ± 1.0 with " \
           "the EMA, 50.0 ± 26.5 with the raw weights. It tied with the choice" in text
    estimates[ema] = {c: [12, 13, 14] for c in CELLS}  # the EMA: stable at the bottom
    rows, chosen = stats.apply_pilot_rule(estimates, costs)
    text = "\n".join(pilots.what_did_not_work(rows, chosen, estimates))
    assert "here it is stable at the bottom again" in text and "It tied" not in text
    reading = pilots.rule_reading(rows, chosen)
    assert "out: const 4000 ema: mean 13.0 < const 4000 last's 50.0 - 5" in reading


ME_CELLS = [(env, model) for env in ("hopper", "walker2d") for model in ("dt", "mamba")]


def write_pilot_me(tmp_path, pilot_scores, sweep_scores=(10.0, 50.0, 90.0), runs=12):
    """Made-up medium-expert pilot: the sweep's cosine-4k runs (seeds 0-2, raw scores constant
    over a run) and the first `runs` of the pilot's cosine-16k runs (EMA 1 point above raw)."""
    sweep, folder = tmp_path / "report-runs", tmp_path / "pilot-me"
    folder.mkdir()
    (folder / "RULE.md").write_text("the rule\n")
    made = 0
    for env, model in ME_CELLS:
        for seed in range(3):
            for root, name, budget, score in (
                    (sweep, f"{model}-{env}-medium-expert-s{seed}", 4000, sweep_scores[seed]),
                    (folder, f"cosine-16k-{model}-{env}-medium-expert-s{seed}", 16000,
                     pilot_scores[seed])):
                if root == folder and (made := made + 1) > runs:
                    continue
                (root / name).mkdir(parents=True)
                (root / name / "config.json").write_text(json.dumps(
                    {"train": {"env": env, "model": model, "seed": seed}}))
                n = budget // 1000
                lines = pilot_lines([score] * n, [score + 1] * n, budget, seconds_per_step=0.01)
                if root == sweep:  # the sweep tracked no EMA
                    lines = [{k: v for k, v in x.items() if k != "eval_ema"} for x in lines]
                (root / name / "metrics.jsonl").write_text("\n".join(map(json.dumps, lines)))
    (tmp_path / "figures").mkdir()
    return folder, sweep


def test_the_medium_expert_pilot_says_what_brings_those_cells_under_the_bar(tmp_path):
    folder, sweep = write_pilot_me(tmp_path, (60.0, 62.0, 64.0))
    me = pilots.pilot_me(folder, sweep)
    assert me[6] and me[5] == ("cosine", 16000, "last")  # done; sd 2 beats the sweep's 40
    assert me[4]["cosine", 4000, "last"]["sd"] == pytest.approx(40.0)
    assert ("cosine", 4000, "ema") not in me[4]  # the sweep tracked no EMA
    text = "\n".join(pilots.pilot_me_section(folder, tmp_path / "figures", str, sweep))
    assert "Its runs with records: 12 of 12" in text and "(the rule's choice)" in text
    assert "| cosine | 16000 | last | 62.0 | 2.0 | 2.0 |" in text
    assert "Rule 4: cosine 16000 last brings every medium-expert cell under the bar of 12 " \
           "(largest cell sd 2.0)" in text
    assert "re-running the whole sweep with it" in text
    assert "hopper DT 10 / 50 / 90 at 4000 steps, then 60 / 62 / 64 at 16000 steps;" in text
    assert (tmp_path / "figures" / "pilot-me.png").stat().st_size > 0
    assert pilots.what_would(me).startswith("A pilot on the medium-expert cells with four")


def test_the_medium_expert_pilot_says_so_when_nothing_gets_under_the_bar(tmp_path):
    folder, sweep = write_pilot_me(tmp_path, (30.0, 50.0, 70.0))  # sd 20 at 16000 steps
    text = "\n".join(pilots.pilot_me_section(folder, tmp_path / "figures", str, sweep))
    assert "Rule 4: the choice's largest cell sd is 20.0, over the bar of 12: no affordable " \
           "candidate measured here gets medium-expert under it" in text
    assert "cosine 4000 last 40.0" in text and "cosine 16000 last 20.0" in text
    assert "With the choice, under the bar: none; over it: hopper DT (20.0), hopper Mamba " \
           "(20.0), walker2d DT (20.0), walker2d Mamba (20.0)." in text


def test_a_medium_expert_pilot_under_way_is_provisional(tmp_path):
    folder, sweep = write_pilot_me(tmp_path, (60.0, 62.0, 64.0), runs=3)  # hopper DT only
    me = pilots.pilot_me(folder, sweep)
    assert not me[6]
    text = "\n".join(pilots.pilot_me_section(folder, tmp_path / "figures", str, sweep))
    assert "Its runs with records: 3 of 12" in text and "provisional: 3 of 12 runs" in text
    assert "Rule 4" not in text and "**chosen**" not in text
    assert "is running; its runs so far are below" in pilots.what_would(me)
    assert "is the next step" in pilots.what_would(None)


def write_pilot_long(tmp_path, long_scores, runs=6, dt_scores=None):
    """Made-up long-budget check beside a made-up medium-expert pilot (16000 steps: 30 / 50 / 70
    for every cell): the first `runs` of its 48000-step hopper runs, evaluated every 2000 steps,
    each ending at long_scores[seed] (the DT's at dt_scores[seed] if given; no EMA)."""
    me, sweep = write_pilot_me(tmp_path, (30.0, 50.0, 70.0))
    folder = tmp_path / "pilot-long"
    folder.mkdir()
    (folder / "RULE.md").write_text("the rule\n")
    for i, (model, seed) in enumerate((m, s) for m in ("mamba", "dt") for s in range(3)):
        if i >= runs:
            break
        run = folder / f"cosine-48k-{model}-hopper-medium-expert-s{seed}"
        run.mkdir()
        (run / "config.json").write_text(json.dumps(
            {"train": {"env": "hopper", "model": model, "seed": seed}}))
        lines = [{"step": 48000, "loss": 0.1, "lr": 0.0, "time": 480.0}] + [
            {"step": 2000 * k, "eval": {"score_mean": (dt_scores if dt_scores and model == "dt"
                                                       else long_scores)[seed],
                                        "wall_time_s": 10.0}}
            for k in range(1, 25)]
        (run / "metrics.jsonl").write_text("\n".join(map(json.dumps, lines)))
    return folder, me, sweep


def test_the_long_budget_check_says_a_longer_budget_is_what_would_when_it_is(tmp_path):
    folder, me, sweep = write_pilot_long(tmp_path, (60.0, 62.0, 64.0))
    long = pilots.pilot_long(folder, me, sweep)
    assert long["done"] and long["ours"] == 6
    text = "\n".join(pilots.pilot_long_section(folder, tmp_path / "figures", str, me, sweep))
    assert "Its runs with records: 6 of 6" in text and "provisional" not in text
    assert "| DT | 4000 | 10 / 50 / 90 | 50.0 ± 40.0 |" in text
    assert "| DT | 16000 | 30 / 50 / 70 | 50.0 ± 20.0 |" in text
    assert "| Mamba | 48000 | 60 / 62 / 64 | 62.0 ± 2.0 | [1.0, 13] |" in text  # sd 2 x 0.52, 6.3
    assert "three seeds pin an sd down loosely, 0.52 to 6.3 times the value measured" in text
    assert "Rule 1: at 48000 steps both hopper medium-expert cells are under the bar" in text
    assert f"projects to {long['costs'][pilots.LONG]:.0f} core-hours" in text
    assert (tmp_path / "figures" / "pilot-long.png").stat().st_size > 0
    would = pilots.what_would(pilots.pilot_me(me, sweep), long)
    assert "A check of hopper medium-expert at 48000 steps" in would
    assert "answers: at 48000 steps both hopper medium-expert cells are under the bar" in would


def test_the_long_budget_checks_cost_is_the_medium_expert_pilots_formula_and_timings(tmp_path):
    """RULE.md: the cost at 48000 steps comes from the medium-expert pilot's timings, hopper's
    and walker2d's sweep runs both (walker2d's made slower here, so hopper alone would differ)."""
    folder, me, sweep = write_pilot_long(tmp_path, (60.0, 62.0, 64.0))
    for path in sweep.glob("*-walker2d-*/metrics.jsonl"):
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        lines = [r | {"time": 3 * r["time"]} if "loss" in r else r for r in lines]
        path.write_text("\n".join(map(json.dumps, lines)))
    costs, long = pilots.pilot_me(me, sweep)[3], pilots.pilot_long(folder, me, sweep)
    sixteen = ("cosine", 16000, "last")
    assert long["costs"][sixteen] == pytest.approx(costs[sixteen])
    four, c = ("cosine", 4000, "last"), long["costs"]  # training time is linear in the steps:
    assert c[pilots.LONG] - c[sixteen] == pytest.approx(32 / 12 * (c[sixteen] - costs[four]))


@pytest.mark.parametrize("scores", [(30.0, 60.0, 90.0), (10.0, 11.0, 12.0)])
def test_the_long_budget_check_says_so_when_it_is_still_spread_or_steady_by_being_bad(
        tmp_path, scores):
    folder, me, sweep = write_pilot_long(tmp_path, scores)
    text = "\n".join(pilots.pilot_long_section(folder, tmp_path / "figures", str, me, sweep))
    assert "Rule 2: 48000 steps does not bring hopper medium-expert under the bar" in text
    assert "what would stays unmeasured" in text and "Rule 1" not in text
    assert "The whole sweep at 48000 steps projects to " in text


def test_a_long_budget_check_under_way_is_provisional(tmp_path):
    folder, me, sweep = write_pilot_long(tmp_path, (60.0, 62.0, 64.0), runs=2)
    long = pilots.pilot_long(folder, me, sweep)
    text = "\n".join(pilots.pilot_long_section(folder, tmp_path / "figures", str, me, sweep))
    assert not long["done"] and "Its runs with records: 2 of 6" in text
    assert "provisional until every run has its record" in text and "Rule" not in text
    assert "| Mamba | 48000 | 60 / 62 | 61.0 ± 1.4 |" in text
    assert "is running; its runs so far are below" in pilots.what_would(
        pilots.pilot_me(me, sweep), long)


def test_the_seed_sds_interval_is_the_chi_square_one():
    """With 3 seeds (2 degrees of freedom) chi-square's quantiles have a closed form: -2 ln(1 - q),
    so sd x sqrt(2 / quantile) is checked here without scipy."""
    low, high = stats.sd_interval([59.0, 54.0, 83.0])
    sd = float(np.std([59.0, 54.0, 83.0], ddof=1))
    assert low == pytest.approx(sd * math.sqrt(2 / (-2 * math.log(0.025))))
    assert high == pytest.approx(sd * math.sqrt(2 / (-2 * math.log(0.975))))
    assert low < 12 < sd < high  # the DT's 48000-step spread: over the bar, its interval not
    assert stats.sd_interval([70.0]) is None


def test_report_refuses_a_long_budget_check_without_the_medium_expert_pilot(capsys):
    from benchmarks import report
    with pytest.raises(SystemExit) as stop:
        report.main(["runs/x", "--pilot-long", "results/pilot-long"])
    assert "give --pilot-me results/pilot-me too" in str(stop.value)


def write_pilot_paper(tmp_path, scores, runs=3):
    """Made-up paper-recipe check: the first `runs` DT seeds, evaluated every 5000 steps to
    100000, each ending at scores[seed], 0.2 s per training step."""
    folder = tmp_path / "pilot-paper"
    folder.mkdir()
    for seed in range(runs):
        run = folder / f"paper-dt-hopper-medium-expert-s{seed}"
        run.mkdir()
        (run / "config.json").write_text(json.dumps(
            {"train": {"env": "hopper", "model": "dt", "seed": seed}}))
        lines = [{"step": 100000, "loss": 0.1, "lr": 1e-4, "time": 20000.0}] + [
            {"step": 5000 * k, "eval": {"score_mean": scores[seed], "wall_time_s": 10.0}}
            for k in range(1, 21)]
        (run / "metrics.jsonl").write_text("\n".join(map(json.dumps, lines)))
    return folder


def test_the_paper_recipe_check_says_the_papers_settings_are_what_would_for_the_dt(tmp_path):
    folder, me, sweep = write_pilot_long(tmp_path, (60.0, 62.0, 64.0), dt_scores=(30, 60, 90))
    paper = pilots.pilot_paper(write_pilot_paper(tmp_path, (95.0, 100.0, 105.0)))
    assert paper["done"] and paper["seeds"] == {0: 95.0, 1: 100.0, 2: 105.0}
    long = pilots.pilot_long(folder, me, sweep) | {"paper": paper}
    text = "\n".join(pilots.pilot_paper_section(paper, long, tmp_path / "figures", str))
    assert "Its runs with records: 3 of 3" in text and "provisional" not in text
    assert "| DT | --preset paper, 100000 | 95 / 100 / 105 | 100.0 ± 5.0 |" in text
    assert "| Mamba | cosine 48000 (the long-budget check) | 60 / 62 / 64 | 62.0 ± 2.0 |" in text
    # 45 runs x 100000 steps x 0.2 s = 250 core-hours
    assert "Rule 1: with the DT paper's settings" in text and "about 250 core-hours" in text
    assert (tmp_path / "figures" / "pilot-paper.png").stat().st_size > 0
    said = "\n".join(pilots.pilot_long_section(folder, tmp_path / "figures", str, me, sweep,
                                                paper))
    assert "Rule 2: 48000 steps does not" in said and "; the Mamba alone is under it." in said
    assert 'was tried on the DT ("The paper-recipe check" below): with the DT paper' in said
    assert "answers: 48000 steps does not" in pilots.what_would(pilots.pilot_me(me, sweep), long)


@pytest.mark.parametrize("scores", [(40.0, 70.0, 100.0), (60.0, 62.0, 64.0)])
def test_the_paper_recipe_check_says_so_when_it_is_spread_or_steady_below_the_expert(
        tmp_path, scores):
    folder, me, sweep = write_pilot_long(tmp_path, (30.0, 60.0, 90.0))
    paper = pilots.pilot_paper(write_pilot_paper(tmp_path, scores))
    long = pilots.pilot_long(folder, me, sweep) | {"paper": paper}
    text = "\n".join(pilots.pilot_paper_section(paper, long, tmp_path / "figures", str))
    assert "Rule 2: not even the DT paper's settings" in text and "Rule 1" not in text
    assert "the Mamba alone" not in "\n".join(pilots.pilot_long_section(
        folder, tmp_path / "figures", str, me, sweep, paper))


def test_a_paper_recipe_check_under_way_is_provisional(tmp_path):
    folder, me, sweep = write_pilot_long(tmp_path, (30.0, 60.0, 90.0))
    paper = pilots.pilot_paper(write_pilot_paper(tmp_path, (95.0, 100.0), runs=2))
    long = pilots.pilot_long(folder, me, sweep) | {"paper": paper}
    text = "\n".join(pilots.pilot_paper_section(paper, long, tmp_path / "figures", str))
    assert not paper["done"] and "Its runs with records: 2 of 3" in text
    assert "provisional until every run has its record" in text and "Rule" not in text
    assert "| DT | --preset paper, 100000 | 95 / 100 | 97.5 ± 3.5 |" in text
    said = "\n".join(pilots.pilot_long_section(folder, tmp_path / "figures", str, me, sweep,
                                                paper))
    assert "is being tried on the DT (results/pilot-paper/RULE.md)" in said


def test_report_refuses_a_paper_recipe_check_without_the_long_budget_check():
    from benchmarks import report
    with pytest.raises(SystemExit) as stop:
        report.main(["runs/x", "--pilot-me", "results/pilot-me", "--pilot-paper", "p"])
    assert "give --pilot-long results/pilot-long too" in str(stop.value)
