"""report.py on tiny run folders written here in train.py's format (no training, no env)."""
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import report, sections, stats  # noqa: E402  (after the path is set)


def fake_run(folder, model, seed, score_returns, targets=(3600.0,), evaluated=True,
             curve=(), sweep=None, **settings):
    """A hopper run folder: config.json, metrics.jsonl with a falling loss (and the periodic
    evaluations `curve`: [(step, return)]), eval.json with one result per target whose mean
    return is score_returns[i], and targets.json if `sweep` ({target: return}) is given."""
    folder.mkdir(parents=True)
    train = dict(model=model, env="hopper", dataset="medium", data=None, steps=20, batch_size=4,
                 context="20", lr=1e-3, seed=seed, d_model=16, n_layer=1, mamba_n_layer=2,
                 n_head=1, out=str(folder), resume=False, compile=False, preset=None,
                 eval_every=10, eval_episodes=2)
    train.update(settings)
    (folder / "config.json").write_text(json.dumps(dict(
        train=train, model={"backbone": "gpt" if model == "dt" else "mamba"},
        eval_mode="recurrent" if train["context"] == "full" else "window",
        target_return=targets[0], device="cpu",
        parameters=dict(without_timestep_table=100 if model == "dt" else 90, all=1000),
        data=dict(path="data/hopper-medium.hdf5", return_mean=1500.0, return_max=3100.0),
        versions=dict(torch="9.9", python="3.x"))))
    (folder / "metrics.jsonl").write_text("".join(
        json.dumps(dict(step=s, loss=1.0 / s, lr=1e-3, time=0.1 * s)) + "\n"
        for s in (5, 10, 15, 20)) + "".join(json.dumps(dict(step=s, time=2.0, eval=dict(
            return_mean=r))) + "\n" for s, r in curve))
    mode = "recurrent" if train["context"] == "full" else "window"

    def results(pairs):
        return [dict(env="hopper", target_return=t, mode=mode, episodes=2, return_mean=r,
                     return_std=10.0, score_mean=(r + 20.272305) / 32.545723, score_std=0.3,
                     fell=0.5, truncated=0.5, length_mean=500.0) for t, r in pairs]
    if evaluated:
        # train.py's eval.json (one target) or evaluate.py's (its config names the run folder)
        config = dict(episodes=2, seed=10000, mode=mode, target=list(targets))
        if len(targets) > 1:
            config.update(run_dir=str(folder), max_episode_steps=None, video=None, device="cpu")
        (folder / "eval.json").write_text(json.dumps(dict(
            run_dir=str(folder), env="hopper", model=model, step=20, device="cpu", config=config,
            results=results(zip(targets, score_returns)))))
    if sweep:
        (folder / "targets.json").write_text(json.dumps(dict(config=dict(
            run_dir=str(folder), episodes=2, seed=10000, mode=mode, target=list(sweep)),
            results=results(sweep.items()))))


def score(ret):
    return (ret + 20.272305) / 32.545723


@pytest.fixture()
def runs(tmp_path, monkeypatch):
    """DT seeds 0-2 and Mamba seeds 0-2 (one not evaluated) at two targets, a DT experiment
    with another lr, a whole-episode Mamba, a folder that is not a run. The working directory is
    tmp_path, so report.py's default results/profile-*.json are not the repository's."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "runs"
    for seed, (high, low) in enumerate(((1000.0, 900.0), (1200.0, 1000.0), (1100.0, 1100.0))):
        fake_run(root / f"dt-s{seed}", "dt", seed, [high, low], targets=(3600.0, 1800.0),
                 curve=[(10, 500.0 + seed), (20, high)])
    for seed, (high, low) in enumerate(((2000.0, 1000.0), (2200.0, 1200.0))):
        fake_run(root / f"mamba-s{seed}", "mamba", seed, [high, low], targets=(3600.0, 1800.0),
                 sweep={900.0: 800.0, 3600.0: high} if seed == 0 else None)
    fake_run(root / "mamba-s2", "mamba", 2, [], evaluated=False)
    fake_run(root / "dt-lowlr-s0", "dt", 0, [500.0], lr=1e-4)  # another experiment
    for seed in (0, 1):
        fake_run(root / f"mamba-full-s{seed}", "mamba", seed, [2500.0 + 100 * seed],
                 context="full", batch_size=1)
    (root / "ars-hopper").mkdir()  # not a train.py run: listed as skipped
    return tmp_path


def write(runs, **kw):
    out = runs / "REPORT.md"
    cfg = report.ReportConfig(**{**dict(runs=tuple(sorted(str(p) for p in (
        runs / "runs").iterdir())), profile=(), out=str(out), figures=str(runs / "figures"),
        bootstrap_reps=100), **kw})
    report.write_report(cfg)
    return out.read_text(), cfg


def test_welch_interval_verdict_and_the_budget_rule_by_hand():
    # diff 3, each side variance 1/3 -> se sqrt(2/3), Welch df 4 -> t 2.7764 (a t table's)
    lo, hi = stats.welch_interval([1, 2, 3], [4, 5, 6])
    assert lo == pytest.approx(3 - 2.7764 * (2 / 3) ** 0.5, abs=1e-3)
    assert hi == pytest.approx(3 + 2.7764 * (2 / 3) ** 0.5, abs=1e-3)
    # variances 1/3 and 4/3 (n 3 each): Welch df 50/17 = 2.94, read as it is, not rounded down
    # to 2 (t 4.303): its t lies just above df 3's 3.182
    low, high = stats.welch_interval([1, 2, 3], [4, 6, 8])
    assert 3.182 < (high - low) / 2 / (5 / 3) ** 0.5 < 3.25
    assert stats.verdict((lo, hi)) == "Mamba better"
    assert stats.verdict(stats.welch_interval([4, 5, 6], [1, 2, 3])) == "DT better"
    assert stats.verdict(stats.welch_interval([1, 5], [2, 4])) == "undecided"
    assert stats.verdict((-4.9, 4.9)) == "equivalent within 5"  # wholly inside the margin
    assert stats.verdict((-5.1, 4.9)) == "undecided"
    assert stats.welch_interval([1], [2, 3]) is None and stats.verdict(None).startswith("too")
    # best so far 3 at step 2, then three that do not beat it; a rising curve never settles
    assert stats.converged_step([(1, 1, 0), (2, 3, 0), (3, 2, 0), (4, 3, 0), (5, 1, 0)]) == 2
    rising = [(1, 1, 0), (2, 2, 0), (3, 3, 0), (4, 4, 0), (5, 5, 0)]
    assert stats.converged_step(rising) is None
    # a rise within the later evaluation's standard error is not an improvement
    creeping = [(1, 1), (2, 3), (3, 4), (4, 4.4), (5, 4.2)]
    assert stats.converged_step([(s, v, 0) for s, v in creeping]) is None
    assert stats.converged_step([(s, v, 1.5) for s, v in creeping]) == 2


def test_report_tables_hold_seed_statistics_intervals_verdicts_and_figures(runs):
    text, cfg = write(runs, pilot=(str(runs / "runs" / "dt-s0"), str(runs / "runs" / "dt-s1")))
    dt_high, mamba_high = [score(r) for r in (1000, 1200, 1100)], [score(r) for r in (2000, 2200)]
    lo, hi = stats.welch_interval(dt_high, mamba_high)
    diff = np.mean(mamba_high) - np.mean(dt_high)  # +30.7 with two Mamba seeds: Welch df 1.68,
    assert 12 < lo < hi < 50  # t 5.18, so the interval is wide but excludes 0
    assert (f"| hopper | medium | 3600 | 1500 (46.7) / 3100 (95.9) | 34.4 ± 3.1 (n=3) | "
            f"65.1 ± 4.3 (n=2) | {diff:+.1f} [{lo:+.1f}, {hi:+.1f}] | Mamba better | "
            "67.6 ± 1.0 / 65.1 ± 1.6 |") in text
    # the lower target: DT 900/1000/1100, Mamba 1000/1200
    lo, hi = stats.welch_interval([score(r) for r in (900, 1000, 1100)],
                                   [score(r) for r in (1000, 1200)])
    assert "| hopper | medium | 1800 |" in text
    assert f"[{lo:+.1f}, {hi:+.1f}] | undecided" in text
    # every experiment at its own target; another lr is its own experiment, not a fourth seed
    assert "| hopper | medium | DT | K=20 | dt | 0,1,2 | 1100 ± 100 (ep. sd 10)" in text
    assert "| Mamba | K=20 | mamba | 0,1,2 (2 evaluated) | 2100 ± 141" in text
    assert "| DT | K=20 | dt-lowlr | 0 | 500 (ep. sd 10) |" in text
    # whole episodes vs K=20: Mamba full 2500/2600 against DT and Mamba K=20
    full = [score(2500), score(2600)]
    lo, hi = stats.welch_interval(dt_high, full)
    assert f"| hopper | 34.4 ± 3.1 (n=3) | 65.1 ± 4.3 (n=2) | {np.mean(full):.1f} ± " in text
    assert f"[{lo:+.1f}, {hi:+.1f}]: whole episodes better" in text
    # the pilot: curves settle only after three evaluations that do not improve (these have two)
    assert "| dt-s0 | 100 | 10: 500, 20: 1000 | never |" in text
    assert "a curve never settled, so no budget follows" in text
    for png in ("loss-hopper.png", "eval-hopper.png", "return-vs-target.png", "pilot.png"):
        assert (runs / "figures" / png).stat().st_size > 0
        assert f"figures/{png}" in text
    assert "Targets evaluated: 900, 1800, 3600" in text  # mamba-s0's sweep, the others' eval.json
    assert "skipped " + str(runs / "runs" / "ars-hopper") in text
    assert "mamba-s2 has no eval.json" in text
    assert "hopper / medium, Mamba K=20: 2 evaluated seed(s) of the 3 a comparison needs." in text
    assert "hopper / medium, DT K=20:" not in text
    # the DT paper's other eight cells have no runs here; hopper's whole-episode Mamba has two
    assert "walker2d / medium-expert, DT K=20: 0 evaluated seed(s) of the 3" in text
    assert "hopper / medium, Mamba on whole episodes (--context full, recurrent): 2 " in text
    assert "halfcheetah / medium, Mamba on whole episodes (--context full, recurrent): 0 " in text
    assert "GPU runtime and memory figures are owed" in text
    assert "python train.py --model dt --env hopper --dataset medium --steps 20" in text
    assert ("python evaluate.py " + str(runs / "runs" / "mamba-s0") +
            " --episodes 2 --seed 10000 --mode window --target 3600 1800") in text
    assert ("--target 900 3600 --out " + str(runs / "runs" / "mamba-s0" / "targets.json")) in text
    assert "python evaluate.py " + str(runs / "runs" / "dt-lowlr-s0") not in text  # train.py's
    # every folder of runs/: the command says runs/*; a pilot of two of them names both
    assert (f"python benchmarks/report.py {runs / 'runs'}/* --pilot {runs / 'runs' / 'dt-s0'} "
            f"{runs / 'runs' / 'dt-s1'} --out") in text
    assert "DT: 1 pre-LayerNorm GPT blocks" in text and "DT parameters without" in text


def test_report_includes_a_profile_result(runs, tmp_path):
    profile = tmp_path / "results" / "profile-cuda-test.json"
    profile.parent.mkdir()
    profile.write_text(json.dumps(dict(device="cuda-test", latency=[], date="today", wall_s=3.0,
                                       command="python profile.py -x")))
    profile.with_suffix(".md").write_text("## Runtime and memory on Test GPU\n| K | x |\n")
    out = runs / "REPORT.md"
    report.write_report(report.ReportConfig(runs=(str(runs / "runs" / "dt-s0"),),
                                            profile=(str(profile),), out=str(out),
                                            figures=str(runs / "figures")))
    text = out.read_text()
    assert "### Runtime and memory on Test GPU" in text and "| K | x |" in text
    assert "GPU runtime and memory figures are owed" not in text
    assert "\npython profile.py -x\n" in text


def test_report_on_a_folder_without_runs_says_what_to_do_in_one_sentence(tmp_path):
    result = subprocess.run([sys.executable, "benchmarks/report.py", str(tmp_path),
                             str(tmp_path / "nope"), "--out", str(tmp_path / "R.md")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "python train.py" in lines[0]
    assert not (tmp_path / "R.md").exists()


def test_crafted_run_files_are_skipped_or_read_around_not_a_traceback(runs, tmp_path):
    """A metrics line without a step, config.json that is not train.py's, eval.json that is not
    evaluate.py's: the report still comes out, the bad runs listed as skipped."""
    with open(runs / "runs" / "dt-s0" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"loss": 0.5}) + "\n" + json.dumps([1, 2]) + "\n")
    for name, config in (("list", [1, 2]), ("train-not-dict", {"train": 5}),
                         ("train-partial", {"train": {"model": "dt"}})):
        (runs / "runs" / name).mkdir()
        (runs / "runs" / name / "config.json").write_text(json.dumps(config))
    (runs / "runs" / "dt-s1" / "eval.json").write_text(json.dumps({"results": "oops"}))
    out = tmp_path / "R.md"
    result = subprocess.run([sys.executable, "benchmarks/report.py",
                             *map(str, (runs / "runs").iterdir()),
                             "--out", str(out), "--figures", str(tmp_path / "fig")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    text = out.read_text()
    assert "config.json lacks env, dataset, seed, context" in text
    assert "no readable train.py config.json" in text


def markdown_rows(lines):
    """The cells of each row of the first markdown table in lines (header and rule skipped)."""
    table = list(itertools.takewhile(lambda l: l.startswith("|"), itertools.dropwhile(
        lambda l: not l.startswith("|"), lines)))
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in table[2:]]


def test_readme_comparison_table_is_the_committed_reports():
    """README's comparison table is copied by hand from REPORT.md: every number in it
    must be REPORT.md's, and no cell of REPORT.md's higher-target table may be left out."""
    readme = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, l in enumerate(readme) if l.startswith("### The comparison"))
    ours = markdown_rows(readme[start:])
    generated = (ROOT / "REPORT.md").read_text().splitlines()
    start = next(i for i, l in enumerate(generated) if l.startswith("At the higher target"))
    report_rows = {(r[0], r[1]): r for r in markdown_rows(generated[start:])}
    assert len(ours) == len(report_rows)
    for env_data, mean, dt, mamba, diff, verdict in ours:
        env, dataset = env_data.split(" / ")
        row = report_rows[env, dataset]
        assert f"({mean})" in row[3].split(" / ")[0], (env, dataset)
        assert [dt, mamba] == [cell.split(" (n=")[0] for cell in row[4:6]], (env, dataset)
        assert [diff, verdict] == row[6:8], (env, dataset)


def memory_text(root, figures):
    """The memory section of the run folders in `root`, as text."""
    groups = stats.groups_of(stats.read_runs(sorted(root.iterdir()))[0])
    return "\n".join(sections.memory_section(groups, figures, str))


def test_where_memory_matters_gives_each_variants_drop_and_the_models_against_the_dt(tmp_path):
    root = tmp_path / "runs"
    for seed in range(3):
        fake_run(root / f"dt-s{seed}", "dt", seed, [1500.0 + 100 * seed])
        fake_run(root / f"mamba-s{seed}", "mamba", seed, [1600.0 + 100 * seed])
        fake_run(root / f"dt-pos-s{seed}", "dt", seed, [500.0 + 100 * seed], obs="positions")
        fake_run(root / f"mamba-pos-s{seed}", "mamba", seed, [1400.0 + 100 * seed],
                 obs="positions")
        fake_run(root / f"dt-delayed-s{seed}", "dt", seed, [1400.0 + 100 * seed],
                 reward="delayed")
    runs, _ = stats.read_runs(sorted(root.iterdir()))
    groups = stats.groups_of(runs)
    # the standard task's table is not disturbed by the variants
    assert "| hopper | medium | 3600 |" in "\n".join(report.comparison_table(groups, 0))
    assert len(report.comparison_table(groups, 0)) == 3
    (tmp_path / "figures").mkdir()
    text = "\n".join(sections.memory_section(groups, tmp_path / "figures", str))
    assert "## Where memory matters" in text
    drop = score(500.0 + 100) - score(1500.0 + 100)  # seed means: 600 vs 1600
    assert f"| hopper | positions | DT K=20 | {score(600):.1f} ± {score(600) - score(500):.1f} " \
           f"(n=3) | {score(1600):.1f}" in text and f"{drop:+.1f} [" in text
    lo, hi = stats.welch_interval([score(r) for r in (500, 600, 700)],
                                  [score(r) for r in (1400, 1500, 1600)])
    mamba_row = next(line for line in text.splitlines() if "| positions | Mamba K=20 |" in line)
    assert mamba_row.endswith(f"[{lo:+.1f}, {hi:+.1f}] | Mamba K=20 better |")  # beats the DT
    assert "| hopper | delayed | DT K=20 |" in text
    assert "(1 setting compared): Mamba K=20 better in hopper positions: Mamba K=20. Where a " \
           "setting beats the DT K=20, its memory helped" in text
    assert ("the smallest drop under each variant: hopper positions: Mamba K=20 "
            f"({score(1500) - score(1700):+.1f}), the largest DT K=20 ({drop:+.1f})") in text
    assert (tmp_path / "figures" / "memory-drops.png").stat().st_size > 0
    for seed in range(3):  # the Mamba no better than the DT without velocities: said plainly
        (root / f"mamba-pos-s{seed}").rename(tmp_path / f"gone-{seed}")
        fake_run(root / f"mamba-pos-s{seed}", "mamba", seed, [450.0 + 150 * seed],
                 obs="positions")
    text = memory_text(root, tmp_path / "figures")
    assert "compared): 1 undecided. No setting is shown to beat the DT K=20 under a variant " \
           "here; where the intervals are wide, whether more memory helps at this budget is " \
           "not decided." in text
    steady = tmp_path / "steady"  # every setting equivalent within 5 of the DT: did not help
    for seed in range(3):
        fake_run(steady / f"dt-s{seed}", "dt", seed, [1500.0 + 10 * seed])
        fake_run(steady / f"mamba-s{seed}", "mamba", seed, [1600.0 + 10 * seed])
        for model in ("dt", "mamba"):
            fake_run(steady / f"{model}-pos-s{seed}", model, seed, [1000.0 + 10 * seed],
                     obs="positions")
    text = memory_text(steady, tmp_path / "figures")
    assert "compared): 1 equivalent within 5. No setting beats the DT K=20 under a variant " \
           "here, and every one is within 5 points of it: at this budget and on this data, " \
           "more memory did not help." in text


def test_a_cell_over_the_bar_at_its_lower_target_only_shows_how_often_each_seed_fell(tmp_path):
    before, after = tmp_path / "v1", tmp_path / "v2"
    for root in (before, after):
        for seed in range(3):  # steady at 3600, spread at 1800 (the Mamba only)
            fake_run(root / f"dt-s{seed}", "dt", seed, [1000.0 + 10 * seed, 900.0],
                     targets=(3600.0, 1800.0))
            fake_run(root / f"mamba-s{seed}", "mamba", seed, [2000.0 + 10 * seed,
                                                             300.0 + 1500 * seed],
                     targets=(3600.0, 1800.0))
    groups = [stats.groups_of(stats.read_runs(sorted(p.iterdir()))[0]) for p in (before, after)]
    text = "\n".join(sections.lottery_section(*groups))
    spread = np.std([score(300.0 + 1500 * s) for s in range(3)], ddof=1)
    assert f"over it: hopper medium Mamba at target 1800 (sd {spread:.1f})." in text
    assert "Over the bar at the lower target only" in text
    assert (f"- hopper medium Mamba at 1800: seed 0 {score(300.0):.1f} (50% fell), seed 1 "
            f"{score(1800.0):.1f} (50% fell), seed 2 {score(3300.0):.1f} (50% fell).") in text
    assert "over the bar at its higher target" not in text and "DT at 1800" not in text


def test_the_seed_lottery_gives_each_cells_spread_and_verdict_before_and_after(tmp_path):
    before, after = tmp_path / "v1", tmp_path / "v2"
    for seed in range(3):  # before: wide spreads, undecided; after: 5 seeds, tight, Mamba better
        fake_run(before / f"dt-s{seed}", "dt", seed, [500.0 + 900 * seed])
        fake_run(before / f"mamba-s{seed}", "mamba", seed, [2000.0 - 800 * seed])
    for seed in range(5):
        fake_run(after / f"dt-s{seed}", "dt", seed, [1000.0 + 10 * seed], steps=40,
                 lr_schedule="constant", ema=0.999)
        fake_run(after / f"mamba-s{seed}", "mamba", seed, [2000.0 + 20 * seed], steps=40,
                 lr_schedule="constant", ema=0.999)
    eval_json = after / "dt-s0" / "eval.json"
    record = json.loads(eval_json.read_text())
    record["config"].update(seed=500000, seeds="test", estimator="last checkpoint, ema weights")
    eval_json.write_text(json.dumps(record))
    groups = [stats.groups_of(stats.read_runs(sorted(p.iterdir()))[0]) for p in (before, after)]
    text = "\n".join(sections.lottery_section(*groups))
    sd = lambda returns: float(np.std([score(r) for r in returns], ddof=1))  # noqa: E731
    row = next(line for line in text.splitlines() if line.startswith("| hopper | medium |"))
    assert row == (f"| hopper | medium | 3 / 3 | {sd([500, 1400, 2300]):.1f} | "
                   f"{sd([2000, 1200, 400]):.1f} | undecided (data mean 1500) | 5 / 5 | "
                   f"{sd([1000 + 10 * s for s in range(5)]):.1f} | "
                   f"{sd([2000 + 20 * s for s in range(5)]):.1f} | Mamba better (data mean 1500) |")
    assert "Cells decided: 0 before, 1 after, of 1 (more seeds alone narrow" in text
    assert "After, no cell is over it, at either target." in text      # sd 15.8 and 31.6 before
    assert "20 steps, constant lr, scored from the last checkpoint, raw weights on 2 episodes " \
           "(validation seeds 10000-10001, which hold the periodic evaluations' 10000-10001)" \
        in text                                                            # the first protocol
    assert "40 steps, constant lr, scored from the last checkpoint, ema weights on 2 episodes " \
           "(test seeds)" in text                                          # the second
    assert sections.lottery_section(groups[0], {}) == []                  # nothing after: no section
    for seed in range(5, 7):  # two wild Mamba seeds: the cell goes over the bar
        fake_run(after / f"mamba-s{seed}", "mamba", seed, [200.0 + 3000 * (seed - 5)], steps=40,
                 lr_schedule="constant", ema=0.999)
    groups[1] = stats.groups_of(stats.read_runs(sorted(after.iterdir()))[0])
    wild = [score(2000.0 + 20 * s) for s in range(5)] + [score(200.0), score(3200.0)]
    text = "\n".join(sections.lottery_section(*groups))
    assert f"over it: hopper medium Mamba at target 3600 (sd {np.std(wild, ddof=1):.1f})." in text
    assert f"- hopper medium Mamba at 3600: seed 0 {score(2000.0):.1f}, " in text  # why: the seeds
    assert f"seed 6 {score(3200.0):.1f}." in text and "not the evaluation" in text


def test_the_evaluate_command_a_report_gives_names_the_estimator(tmp_path):
    run = type("Run", (), {"path": tmp_path / "run"})()
    config = dict(run_dir=str(run.path), episodes=100, seed=500000, mode="window",
                  target=[3600.0], weights="ema", last=3)
    command = report.eval_command(run, config)
    assert command.endswith("--target 3600 --weights ema --last 3")
    plain = report.eval_command(run, config | dict(weights="raw", last=1))
    assert "--weights" not in plain and "--last" not in plain
    assert report.eval_command(run, {"episodes": 10}) is None  # train.py's own eval.json


def test_a_run_scored_on_validation_seeds_stays_out_of_a_report_scored_on_test_seeds(tmp_path):
    root = tmp_path / "runs"
    for seed in range(3):
        for model in ("dt", "mamba"):
            fake_run(root / f"{model}-s{seed}", model, seed, [1000.0 + 100 * seed])
    for folder in root.iterdir():  # evaluate.py's test-seed scores ...
        if folder.name != "dt-s2":  # ... except one run, left with train.py's own evaluation
            record = json.loads((folder / "eval.json").read_text())
            record["config"].update(seed=500000, seeds="test")
            (folder / "eval.json").write_text(json.dumps(record))
    runs, _ = stats.read_runs(sorted(root.iterdir()))
    kept, skipped = stats.apart_from_test(runs)
    assert sorted(r.path.name for r in kept) == ["dt-s0", "dt-s1", "mamba-s0", "mamba-s1",
                                                 "mamba-s2"]
    assert skipped == [f"{root / 'dt-s2'}: scored on validation seeds (train.py's own evaluation) "
                       "where the others are on test seeds; score it with python evaluate.py "
                       f"{root / 'dt-s2'} --episodes 100"]
    only_validation = [r for r in runs if r.path.name == "dt-s2"]
    assert stats.apart_from_test(only_validation) == (only_validation, [])  # nothing to keep apart
