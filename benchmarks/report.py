"""Turn train.py run folders and profile.py results into REPORT.md with figures.

Mirrors the results section of the Decision Transformer paper (and of the report this project
revisits), the Decision Transformer (DT) and the Decision Mamba side by side:
  - per env and dataset: normalised score of each model, mean +- std over seeds, the 95%
    confidence interval of the difference (Welch) and a verdict that follows from it, beside the
    dataset's own mean and best return and the DT's published D4RL scores (context only);
  - training loss and evaluation return vs step, mean and range over seeds;
  - the pilot that chose the step budget (--pilot), with the rule applied to its curves;
  - achieved vs target return (return conditioning), from each run's targets.json if any;
  - the Decision Mamba trained on whole episodes and acting recurrently, against K=20 models;
  - the runtime and memory tables and plots that profile.py rendered, embedded as they are;
  - the settings, seeds, devices, versions and the commands that regenerate all of it.
Every sentence about a comparison is computed from the numbers in the tables. Missing pieces (runs
not evaluated, too few seeds, no GPU profile) are listed, not hidden.

Run: python benchmarks/report.py results/report-runs/* [--pilot results/pilot/*] [--out REPORT.md]

Where the pieces live: stats.py reads the run folders (what a run folder holds is in its
docstring) and does the statistics over seeds; render.py draws the figures; this file builds the
tables and writes the report.

Reference (ideas only): Chen et al. 2021, "Decision Transformer", Table 2 and Figure 4.
"""
import glob
import json
import os
import shlex
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parents[1]))  # the repository root

from cli import (WriteError, atomic_write, flag_name,  # noqa: E402
                 one_sentence_write_errors, option, parse_config, refuse_to_replace)
from data import normalized_score
from benchmarks.render import curve_of, drawn_by_matplotlib, plot_bands, plot_targets
from benchmarks.pilots import budget_pilot_section, pilot_long, pilot_long_section, pilot_me, \
    pilot_me_section, pilot_paper, pilot_paper_section, pilot_v2_section
from benchmarks.sections import aggregate_section, lottery_section, memory_section
from benchmarks.stats import (D4RL_DT, MARGIN, MODEL_NAMES, apart_from_test, experiments,
                              group_name, groups_of, over_seeds, pm, read_json, read_pilot_v2,
                              read_runs, score_cell, scores, verdict, welch_interval)

MIN_SEEDS = 3  # seeds per model a comparison is owed (fewer are listed under Missing)


class ReportError(ValueError):
    """Nothing to report from the given paths; the message says what to do."""


@dataclass(frozen=True)
class ReportConfig:
    runs: tuple = option((), "train.py run folders (e.g. results/report-runs/*); folders "
                             "without config.json are listed as skipped", positional=True,
                         nargs="*")
    pilot: tuple = option((), "run folders of the pilot that chose the step budget (their "
                              "periodic evaluations are plotted)", type=str, nargs="+")
    before: tuple = option((), "run folders of the first protocol (results/report-runs-v1/*): "
                               "the seed lottery before and after", type=str, nargs="+")
    pilot_v2: str = option(None, "folder of the protocol pilot's records (results/pilot-v2): "
                                 "its candidates, with RULE.md's rule applied", type=str)
    pilot_me: str = option(None, "folder of the medium-expert pilot's records "
                                 "(results/pilot-me; its 4000-step candidates are the runs' "
                                 "own medium-expert seeds 0-2)", type=str)
    pilot_long: str = option(None, "folder of the long-budget check's records (results/pilot-"
                                   "long; read with --pilot-me's hopper runs)", type=str)
    pilot_paper: str = option(None, "folder of the paper-recipe check's records (results/pilot-"
                                    "paper; shown beside --pilot-long's)", type=str)
    profile: tuple = option((), "profile.py result files (none given: results/profile-*.json, "
                                "if any)", type=str, nargs="+")
    bootstrap_reps: int = option(2000, "bootstrap resamples of the aggregate's intervals")
    out: str = option("REPORT.md", "the markdown file to write")
    figures: str = option("", "folder for the PNG figures, linked from the report by relative "
                              "path (default: results/figures for REPORT.md, else OUT-figures/ "
                              "beside --out)")
    force: bool = option(False, "replace --out and the figures even if git tracks them or "
                                "report.py did not write them")


# ----------------------------------------------------------------------------- tables


def comparison_table(groups, target_rank):
    """The report's main table: per env and dataset, DT vs Mamba at K=20 at the env's
    `target_rank`-th highest evaluated target, with the interval and verdict of the difference."""
    lines = ["| env | dataset | target | dataset mean / best (normalised) | DT | Mamba | "
             "Mamba - DT, 95% CI | verdict | DT on D4RL's data: paper / CORL |",
             "|---|---|---|---|---|---|---|---|---|"]
    cells = defaultdict(dict)
    for (env, dataset, model, variant), runs in experiments(groups).items():
        if variant == "K=20":
            cells[env, dataset][model] = runs
    for (env, dataset), by_model in sorted(cells.items()):
        dt_runs, mamba_runs = by_model.get("dt", []), by_model.get("mamba", [])
        targets = sorted({res["target_return"] for r in dt_runs + mamba_runs for res in r.evals},
                         reverse=True)
        if len(targets) <= target_rank:
            continue
        target = targets[target_rank]
        data = (dt_runs or mamba_runs)[0].config.get("data", {})
        dt, mamba = scores(dt_runs, target), scores(mamba_runs, target)
        interval = welch_interval(dt, mamba)
        ci = (f"{np.mean(mamba) - np.mean(dt):+.1f} [{interval[0]:+.1f}, {interval[1]:+.1f}]"
              if interval else "-")
        paper, corl = D4RL_DT.get((env, dataset), ("-", "-"))
        lines.append(f"| {env} | {dataset} | {target:g} | {dataset_cell(env, data)} | "
                     f"{score_cell(dt_runs, target)} | {score_cell(mamba_runs, target)} | {ci} | "
                     f"{verdict(interval)} | {paper} / {corl} |")
    return lines


def dataset_cell(env, data):
    mean, best = data.get("return_mean"), data.get("return_max")
    if mean is None or best is None:
        return "?"
    return (f"{mean:.0f} ({normalized_score(env, mean):.1f}) / "
            f"{best:.0f} ({normalized_score(env, best):.1f})")


def experiments_table(groups):
    """One row per experiment at its own target: returns, episode spread, falls, lengths."""
    lines = ["| env | dataset | model | variant | runs | seeds | return | normalised score | "
             "fell | length |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (env, dataset, model, variant, _), runs in sorted(groups.items()):
        results = [res for r in runs if (res := r.result()) is not None]
        seeds = ",".join(str(s) for s in sorted(r.train["seed"] for r in runs)) + (
            f" ({len(results)} evaluated)" if len(results) < len(runs) else "")
        if results:
            ret = (f"{pm(*over_seeds([x['return_mean'] for x in results]))} (ep. sd "
                   f"{np.mean([x['return_std'] for x in results]):.0f})")
            score = (f"{pm(*over_seeds([x['score_mean'] for x in results]), digits=1)} (ep. sd "
                     f"{np.mean([x['score_std'] for x in results]):.1f})")
            fell = f"{100 * np.mean([x['fell'] for x in results]):.0f}%"
            length = f"{np.mean([x['length_mean'] for x in results]):.0f}"
        else:
            ret = score = fell = length = "not evaluated"
        lines.append(f"| {env} | {dataset} | {MODEL_NAMES.get(model, model)} | {variant} | "
                     f"{group_name(runs)} | {seeds} | {ret} | {score} | {fell} | {length} |")
    return lines


def whole_episode_table(groups):
    """Medium data: the whole-episode Mamba acting recurrently against both K=20 models."""
    by_env = defaultdict(dict)
    for (env, dataset, model, variant), runs in experiments(groups).items():
        if dataset == "medium":
            by_env[env][model, variant] = runs
    lines = ["| env | DT, K=20 | Mamba, K=20 | Mamba, whole episodes, recurrent | full - DT, "
             "95% CI | full - Mamba K=20, 95% CI |", "|---|---|---|---|---|---|"]
    for env, found in sorted(by_env.items()):
        full = found.get(("mamba", "K=full, recurrent"))
        if full is None:
            continue
        dt, mamba = found.get(("dt", "K=20"), []), found.get(("mamba", "K=20"), [])
        cells = []
        for other in (dt, mamba):
            interval = welch_interval(scores(other), scores(full))
            cells.append(f"[{interval[0]:+.1f}, {interval[1]:+.1f}]: "
                         f"{verdict(interval, 'whole episodes', 'K=20')}" if interval else "-")
        lines.append(f"| {env} | {score_cell(dt)} | {score_cell(mamba)} | {score_cell(full)} | "
                     f"{cells[0]} | {cells[1]} |")
    return lines if len(lines) > 2 else []


# ----------------------------------------------------------------------------- the report

def train_command(run):
    """The train.py command that reproduces a run: every stored setting as a flag."""
    parts = ["python", "train.py"]
    for name, value in dict(run.train, out=str(run.path)).items():
        if name == "resume" or value is None or value is False:
            continue
        parts += [flag_name(name)] + ([] if value is True else [str(value)])
    return shlex.join(parts)


def eval_command(run, config, out=None):
    """The evaluate.py command behind an eval.json / targets.json (None if train.py wrote it)."""
    if "run_dir" not in config:
        return None
    parts = ["python", "evaluate.py", str(run.path), "--episodes", str(config["episodes"]),
             "--seed", str(config["seed"]), "--mode", config["mode"]]
    if config.get("target"):
        parts += ["--target", *(f"{t:g}" for t in config["target"])]
    if config.get("max_episode_steps"):
        parts += ["--max-episode-steps", str(config["max_episode_steps"])]
    if config.get("weights", "raw") != "raw":  # the estimator: EMA weights, or a mean of the last
        parts += ["--weights", config["weights"]]
    if config.get("last", 1) != 1:
        parts += ["--last", str(config["last"])]
    return shlex.join(parts + (["--out", out] if out else []))


def shell_paths(paths):
    """Paths for a command line: 'folder/*' when they are exactly the entries of one folder."""
    parents = {Path(p).parent for p in paths}
    if len(parents) == 1 and len(paths) > 1:
        parent = parents.pop()
        if sorted(map(Path, paths)) == sorted(parent.iterdir()):
            return [f"{shlex.quote(str(parent))}/*"]
    return [shlex.quote(str(p)) for p in paths]


def report_command(cfg: ReportConfig):
    return " ".join(["python", "benchmarks/report.py", *shell_paths(cfg.runs), *(
        ["--pilot", *shell_paths(cfg.pilot)] if cfg.pilot else []), *(
        ["--before", *shell_paths(cfg.before)] if cfg.before else []), *(
        ["--pilot-v2", shlex.quote(cfg.pilot_v2)] if cfg.pilot_v2 else []), *(
        ["--pilot-me", shlex.quote(cfg.pilot_me)] if cfg.pilot_me else []), *(
        ["--pilot-long", shlex.quote(cfg.pilot_long)] if cfg.pilot_long else []), *(
        ["--pilot-paper", shlex.quote(cfg.pilot_paper)] if cfg.pilot_paper else []), *(
        ["--profile", *shell_paths(cfg.profile)] if cfg.profile else []),
        "--out", shlex.quote(cfg.out), "--figures", shlex.quote(str(figures_folder(cfg))),
        *(["--force"] if cfg.force else [])])


def figures_folder(cfg: ReportConfig) -> Path:
    """--figures, else results/figures for the default REPORT.md and OUT-figures/ beside any
    other --out (a report written elsewhere never touches the committed figures)."""
    if cfg.figures:
        return Path(cfg.figures)
    out = Path(cfg.out)
    return Path("results/figures") if out == Path("REPORT.md") else out.with_name(
        f"{out.stem}-figures")


def written_by_report(path):
    """True for a markdown file report.py wrote (its title and "Generated by" line)."""
    text = Path(path).read_text(errors="replace")
    return text.startswith("# Decision Transformer vs Decision Mamba") and any(  # (report.py: the
        f"Generated by `python {script}" in text   # path before the move into benchmarks/)
        for script in ("benchmarks/report.py", "report.py"))


def refuse_to_overwrite(cfg, out, figures):
    """--out, and every PNG already in the figures folder, is replaced only if report.py wrote
    it and git does not track it, or with --force; checked before anything is written."""
    try:
        refuse_to_replace(out, cfg.force, written_by_report)
        for png in sorted(figures.glob("*.png")) if figures.is_dir() else []:
            refuse_to_replace(png, cfg.force, drawn_by_matplotlib)
    except WriteError as e:
        raise ReportError(str(e)) from None


def scan_label(run):
    """The scan backend a run trained with (older runs did not record it: on the CPU they
    could only have used the PyTorch scan)."""
    if run.model != "mamba":
        return "-"
    cuda = str(run.config.get("device", "")).startswith("cuda")
    return run.config.get("scan_backend") or ("triton" if cuda else "torch")


def profile_section(paths, out_dir):
    """Each profile.py result: its markdown tables (headings one level down) and its plots.
    -> (markdown lines, the results read)."""
    lines, loaded = [], []
    for path in paths:
        results = read_json(path)
        if results is None or "latency" not in results:
            lines.append(f"- {path}: not a readable profile.py result, skipped.")
            continue
        loaded.append(results)
        md, command = Path(path).with_suffix(".md"), results.get("command", "python profile.py")
        if md.exists():
            lines += ["#" + line if line.startswith("#") else line
                      for line in md.read_text().splitlines()]
        else:
            lines.append(f"- {md} is missing; rerun `{command}`.")
        for kind in ("latency", "memory"):
            png = Path(path).with_name(f"{Path(path).stem}-{kind}.png")
            if png.exists():
                lines += ["", f"![{kind} on {results['device']}]({os.path.relpath(png, out_dir)})"]
        lines += ["", f"Measured {results.get('date', '?')} in {results.get('wall_s', 0):.0f} s "
                      f"with `{command}`.", ""]
    return lines, loaded



def models_paragraph(runs):
    """What each model's blocks are, with the parameter counts the runs recorded."""
    counts = defaultdict(set)
    for run in runs:
        if "parameters" in run.config:
            counts[run.model].add(run.config["parameters"]["without_timestep_table"])
    dt = next((r for r in runs if r.model == "dt"), None)
    mamba = next((r for r in runs if r.model == "mamba"), None)
    say = []
    if dt:
        t = dt.train
        act = "ReLU, as the DT paper's code" if t.get("activation") == "relu" else "GELU"
        say.append(f"DT: {t['n_layer']} pre-LayerNorm GPT blocks of width {t['d_model']} (causal "
                   f"self-attention, {t['n_head']} head(s); MLP 4x wide with {act})")
    if mamba:
        t = mamba.train
        say.append(f"Mamba: {t['mamba_n_layer']} residual blocks x + Mamba(RMSNorm(x)) of width "
                   f"{t['d_model']} (expand 2, d_state 16, causal conv 4, selective scan gated by "
                   f"SiLU), no attention and no MLP")
    for model, n in sorted(counts.items()):
        say.append(f"{MODEL_NAMES[model]} parameters without the shared timestep table: "
                   + ", ".join(f"{x:,}" for x in sorted(n)))
    return "; ".join(say) + ". Both embed (R, s, a) tokens with a learned timestep embedding, " \
        "end in one LayerNorm and read each action from the output at its state token."


def write_report(cfg: ReportConfig) -> Path:
    if cfg.pilot_long and not cfg.pilot_me:
        raise ReportError("--pilot-long compares with the medium-expert pilot's runs: give "
                          "--pilot-me results/pilot-me too.")
    if cfg.pilot_paper and not cfg.pilot_long:
        raise ReportError("--pilot-paper is shown beside the long-budget check: give "
                          "--pilot-long results/pilot-long too.")
    runs, skipped = read_runs(cfg.runs)
    runs, validation_scored = apart_from_test(runs)
    skipped += validation_scored
    if not runs:
        raise ReportError(f"none of {', '.join(map(str, cfg.runs)) or 'the given paths'} is a "
                          "train.py run folder (one with config.json); train a model first "
                          "(python train.py --model dt) and pass its folder, e.g. "
                          "python benchmarks/report.py runs/*.")
    for why in skipped:  # not run folders, unreadable records, nan scores: said here and in Missing
        print(f"skipped {why}", file=sys.stderr)
    pilot, pilot_skipped = read_runs(cfg.pilot)
    profiles = list(cfg.profile) or sorted(glob.glob("results/profile-*.json"))
    out, figures = Path(cfg.out), figures_folder(cfg)
    refuse_to_overwrite(cfg, out, figures)
    out_dir = out.parent
    for folder in (out_dir, figures):
        folder.mkdir(parents=True, exist_ok=True)
    rel = lambda p: os.path.relpath(p, out_dir)  # noqa: E731 (figure links)

    groups = groups_of(runs)
    doc = ["# Decision Transformer vs Decision Mamba: results", "",
           f"Generated by `{report_command(cfg)}` from {len(runs)} run folder(s) and "
           f"{len(profiles)} profile file(s).", "", "Models: " + models_paragraph(runs), "",
           "## Normalised score: DT vs Mamba", "",
           "Each seed's score is its mean normalised score (100 (R - random) / (expert - random), "
           "D4RL's reference returns) over the evaluation episodes, from its last checkpoint. "
           "A cell is mean ± std over seeds (n seeds). The interval is Welch's 95% confidence "
           "interval of the difference of the means over seeds; the verdict names a model only "
           f"when the interval excludes 0, reads \"equivalent within {MARGIN:g}\" when the whole "
           f"interval lies inside ±{MARGIN:g} points, and \"undecided\" otherwise. The DT's "
           "published scores are on D4RL's datasets, not ours: context, not a comparison.", ""]
    for rank, name in ((0, "the higher target (the DT paper's first)"),
                       (1, "the lower target (the DT paper's second)")):
        table = comparison_table(groups, rank)
        if len(table) > 2:
            doc += [f"At {name}:", ""] + table + [""]
    doc += aggregate_section(groups, figures, rel, cfg.bootstrap_reps)
    sweep = str(Path(cfg.runs[0]).parent) if cfg.runs else "results/report-runs"
    me = pilot_me(cfg.pilot_me, sweep) if cfg.pilot_me else None
    long = pilot_long(cfg.pilot_long, cfg.pilot_me, sweep) if cfg.pilot_long else None
    if cfg.pilot_paper:
        long["paper"] = pilot_paper(cfg.pilot_paper)
    if cfg.before:
        doc += lottery_section(groups_of(read_runs(cfg.before)[0]), groups,
                               read_pilot_v2(cfg.pilot_v2) if cfg.pilot_v2 else None, me=me,
                               long=long)
    doc += ["### Every experiment at its own target", "",
            "ep. sd: the standard deviation over episodes, averaged over seeds; fell: episodes "
            "that ended by falling rather than at the 1000-step limit.", ""]
    doc += experiments_table(groups)
    whole = whole_episode_table(groups)
    if whole:
        doc += ["", "## Whole episodes, acting recurrently", "",
                "The Decision Mamba trained on whole episodes (`--context full`) and acting "
                "recurrently (constant cost per env step, no window), against both K=20 models "
                "on the medium data, at each run's own target:", ""] + whole
    if pilot:
        doc += budget_pilot_section(pilot, figures, rel)
    doc += [""] + memory_section(groups, figures, rel)
    if cfg.pilot_v2:
        doc += [""] + pilot_v2_section(cfg.pilot_v2, figures, rel)
    if cfg.pilot_me:
        doc += [""] + pilot_me_section(cfg.pilot_me, figures, rel, sweep)
    if long:
        doc += [""] + pilot_long_section(cfg.pilot_long, figures, rel, cfg.pilot_me, sweep,
                                         long.get("paper"))
    if cfg.pilot_paper:
        doc += [""] + pilot_paper_section(long["paper"], long, figures, rel, cfg.pilot_paper)
    doc += ["", "## Training loss and evaluation return vs step", "",
            "Mean over seeds (line) and the range over seeds (band). The evaluation curves are "
            "the periodic evaluations during training (fewer episodes than the tables).", ""]
    for env in sorted({r.train["env"] for r in runs}):
        env_runs = [r for r in runs if r.train["env"] == env]
        png = figures / f"loss-{env}.png"
        plot_bands(env_runs, lambda r: f"{env} / {r.dataset}", lambda r: r.losses,
                   "action MSE (training)", png, log=True)
        doc.append(f"![training loss, {env}]({rel(png)})")
        if any(r.curve for r in env_runs):
            png = figures / f"eval-{env}.png"
            plot_bands([r for r in env_runs if r.curve], lambda r: f"{env} / {r.dataset}",
                       curve_of, "mean return (periodic evaluation)", png, data_mean=True)
            doc.append(f"![evaluation return, {env}]({rel(png)})")
    doc += ["", "## Return conditioning: achieved vs target return", ""]
    if any(r.evals or r.sweep for r in runs):
        png = figures / "return-vs-target.png"
        plot_targets(runs, png)
        targets = sorted({res["target_return"] for r in runs for res in r.sweep or r.evals})
        doc += [f"Targets evaluated: {', '.join(f'{t:g}' for t in targets)} (the runs' target "
                "sweeps, targets.json, where an env has any; else eval.json). Points on the "
                "diagonal mean the "
                "model achieves the return it is asked for; a flat line means the target is "
                "ignored.", "", f"![achieved vs target]({rel(png)})"]
    else:
        doc.append("No run has an eval.json, so there is nothing to plot.")
    doc += ["", "## Runtime and memory", ""]
    section, profiled = profile_section(profiles, out_dir)
    doc += section or ["No profile.py result was found (run python profile.py)."]
    doc += settings_section(runs, skipped + pilot_skipped, profiled, cfg, profiles)
    atomic_write(out, lambda tmp: Path(tmp).write_text("\n".join(doc)))
    return out


def settings_section(runs, skipped, profiled, cfg, profiles):
    versions = {json.dumps(r.config.get("versions", {}), sort_keys=True) for r in runs}
    doc = ["", "## Settings, seeds, devices, versions", "",
           "| run | model | env | dataset | seed | steps | batch | K | lr | width | layers | "
           "device | scan | eval episodes | targets | eval mode |", "|---" * 16 + "|"]
    ordered = sorted(runs, key=lambda r: (r.key, r.train["seed"]))
    for run in ordered:
        t = run.train
        layers = t["n_layer"] if run.model == "dt" else t["mamba_n_layer"]
        episodes = run.evals[0]["episodes"] if run.evals else "-"
        targets = ", ".join(f"{r['target_return']:g}" for r in run.evals) or "-"
        doc.append(f"| {run.path} | {run.model} | {t['env']} | {run.dataset} | {t['seed']} | "
                   f"{run.step if run.step is not None else t['steps']} | {t['batch_size']} | "
                   f"{t['context']} | {t['lr']:g} | {t['d_model']} | {layers} | "
                   f"{run.config.get('device', '?')} | {scan_label(run)} | {episodes} | "
                   f"{targets} | {run.mode} |")
    doc += ["", "Scan: the selective scan that trained a Mamba run (`c`: scan_cpu.c, `torch`: the "
            "PyTorch scan, `triton`: the GPU kernel; they agree up to float rounding).", "",
            "Versions of the training runs: " + "; ".join(
                ", ".join(f"{k} {v}" for k, v in json.loads(v).items()) for v in sorted(versions))
            + "."]
    missing = [f"skipped {why}" for why in skipped]
    missing += [f"{r.path} has no eval.json (evaluate it: python evaluate.py {r.path})"
                for r in runs if not r.evals]
    found = experiments(groups_of(runs))
    cells = {(e, d) for e, d, _, v in found if v == "K=20"} | set(D4RL_DT)  # the DT paper's 9
    for env, dataset in sorted(cells):
        for model in MODEL_NAMES:
            n = len(scores(found.get((env, dataset, model, "K=20"), [])))
            if n < MIN_SEEDS:
                missing.append(f"{env} / {dataset}, {MODEL_NAMES[model]} K=20: {n} evaluated "
                               f"seed(s) of the {MIN_SEEDS} a comparison needs.")
    for env in sorted({env for env, _ in D4RL_DT}):
        n = len(scores(found.get((env, "medium", "mamba", "K=full, recurrent"), [])))
        if n < MIN_SEEDS:
            missing.append(f"{env} / medium, Mamba on whole episodes (--context full, "
                           f"recurrent): {n} evaluated seed(s) of {MIN_SEEDS}.")
    for run in runs:
        cut = run.eval_config.get("max_episode_steps", run.train.get("max_episode_steps"))
        if cut and run.evals:
            missing.append(f"{run.path} was evaluated on episodes cut at {cut} steps; its "
                           "returns are not comparable with full 1000-step episodes.")
    missing += [f"the profile on {r['device']} is a --quick sweep; run python profile.py for the "
                "full one." for r in profiled if r.get("quick")]
    if not any(r["device"].startswith("cuda") for r in profiled):
        missing.append("GPU runtime and memory figures are owed: no profile.py result from a "
                       "CUDA device was given (run python profile.py on a GPU machine).")
    if missing:
        doc += ["", "## Missing", ""] + [f"- {m}" for m in missing]
    doc += ["", "## Commands that regenerate this report", "", "```bash"]
    for run in ordered:
        doc.append(train_command(run))
        doc += [c for c in (eval_command(run, run.eval_config),) if c]
        if run.sweep:
            sweep = read_json(run.path / "targets.json").get("config", {})
            doc += [c for c in (eval_command(run, sweep, str(run.path / "targets.json")),) if c]
    doc += [(read_json(path) or {}).get("command") or "python profile.py" for path in profiles]
    return doc + [report_command(cfg), "```", ""]


def main(argv=None):
    cfg = parse_config(ReportConfig, argv, __doc__.split("\n\n")[0])
    try:
        with one_sentence_write_errors(cfg.out):  # a full disk or read-only folder
            out = write_report(cfg)
    except (ReportError, WriteError) as e:
        sys.exit(f"error: {e}")
    except (KeyError, TypeError, ValueError, IndexError) as e:  # a record edited or cut short
        sys.exit(f"error: a run record does not have the form train.py and evaluate.py write "
                 f"({type(e).__name__}: {e}); regenerate or leave out the run folders it came "
                 "from.")
    print(f"wrote {out} (figures in {figures_folder(cfg)})")


if __name__ == "__main__":
    main()
