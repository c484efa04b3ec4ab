"""Turn train.py run folders and profile.py results into REPORT.md with figures.

Mirrors the results section of the Decision Transformer paper, for the Decision Transformer (DT)
and the Decision Mamba side by side:
  - mean return and D4RL-normalised score per env and dataset, mean +- std over seeds (and the
    over-episode std, averaged over seeds), next to the dataset's own mean and best return;
  - training loss vs step, one PNG per env (every run, coloured by model);
  - achieved vs target return, one PNG (does return conditioning work?);
  - the runtime and memory tables and plots that profile.py rendered, embedded as they are;
  - the settings, seeds, devices, versions and the commands that regenerate all of it.
Every sentence about a comparison is computed from the numbers in the tables; nothing else is
claimed. Missing pieces (runs not evaluated, no GPU profile) are listed, not hidden.

Run: python report.py runs/* [--profile results/profile-*.json] [--out REPORT.md]

A run folder (written by train.py, see its docstring): config.json ({"train": settings, "model":
model settings, "data": {path, return_mean, return_max, ...}, "device", "versions", ...}),
metrics.jsonl (lines {"step", "loss", "lr", "time"} and {"step", "eval": {...}}) and eval.json
({"config": ..., "results": [one evaluate() result per target]}).

Reference (idea only): Chen et al. 2021, "Decision Transformer", Table 1 and Figure 4.
"""
import glob
import json
import os
import re
import shlex
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cli import atomic_write, flag_name, option, parse_config
from data import normalized_score

MODEL_NAMES = {"dt": "DT", "mamba": "Mamba"}
# train.py settings that may differ between the seeds of one experiment (everything else may not)
SEED_ONLY = ("seed", "out", "resume", "device", "compile", "log_every", "save_every")
# settings that differ between a DT and a Mamba experiment by design
MODEL_SPECIFIC = ("model", "n_layer", "mamba_n_layer", "n_head", "eval_mode")
COLORS = {"dt": "C0", "mamba": "C1"}


class ReportError(ValueError):
    """Nothing to report from the given paths; the message says what to do."""


@dataclass(frozen=True)
class ReportConfig:
    runs: tuple = option((), "train.py run folders (e.g. runs/*); folders without config.json "
                             "are listed as skipped", positional=True, nargs="*")
    profile: tuple = option((), "profile.py result files (none given: results/profile-*.json, "
                                "if any)", type=str, nargs="+")
    out: str = option("REPORT.md", "the markdown file to write")
    figures: str = option("results/figures", "folder for the PNG figures (linked from the report "
                                             "by relative path)")


# ----------------------------------------------------------------------------- reading runs

@dataclass
class Run:
    path: Path
    config: dict                      # config.json as written by train.py
    losses: list                      # [(step, loss)] from metrics.jsonl
    evals: list                       # evaluate() results from eval.json (one per target)
    eval_config: dict                 # eval.json's "config"
    step: int                         # the step eval.json's checkpoint was at (None: no eval)

    @property
    def train(self):
        return self.config["train"]

    @property
    def dataset(self):
        return Path(self.train["data"]).stem if self.train.get("data") else self.train["dataset"]

    @property
    def mode(self):
        """The mode eval.json was made in (evaluate.py --mode may differ from the run's)."""
        return self.evals[0]["mode"] if self.evals else self.config.get("eval_mode", "window")

    @property
    def settings(self):
        """The train.py settings that every seed of one experiment shares."""
        return {k: v for k, v in self.train.items() if k not in SEED_ONLY}

    @property
    def key(self):
        """Runs with equal keys are seeds of one experiment."""
        return (self.train["env"], self.dataset, self.train["model"], str(self.train["context"]),
                self.mode, json.dumps(self.settings, sort_keys=True, default=str))

    @property
    def main_result(self):
        """The result for the run's own target return (the first result otherwise)."""
        target = self.config.get("target_return")
        return next((r for r in self.evals if r["target_return"] == target), self.evals[0])


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
    losses = []
    if (path / "metrics.jsonl").exists():
        for line in (path / "metrics.jsonl").read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a line cut short by a crash
                continue
            if isinstance(record, dict) and "loss" in record and "step" in record:
                losses.append((record["step"], record["loss"]))
    evaluation = read_json(path / "eval.json")
    if not isinstance(evaluation, dict) or not isinstance(evaluation.get("results", []), list):
        evaluation = {}  # unreadable or not evaluate.py's: the run is listed without a score
    return Run(path, config, losses, evaluation.get("results", []),
               evaluation.get("config", {}), evaluation.get("step")), None


# ----------------------------------------------------------------------------- statistics

def over_seeds(values):
    """(mean, std over seeds with ddof=1, or None for a single seed)."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), (float(values.std(ddof=1)) if values.size > 1 else None)


def pm(mean, std, digits=0):
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def group_name(runs):
    """The run folders' common name without the seed suffix: dt-hopper-medium-s0, -s1 ->
    dt-hopper-medium."""
    prefix = os.path.commonprefix([r.path.name for r in runs])
    return re.sub(r"[-_]?s?\d*$", "", prefix) or f"{runs[0].path.name}, ..."


def summarise_group(runs):
    """Seed statistics of one experiment, from each seed's result at its own target."""
    evaluated = [r for r in runs if r.evals]
    row = dict(name=group_name(runs), seeds=sorted(r.train["seed"] for r in runs),
               evaluated=len(evaluated), data=runs[0].config.get("data", {}),
               settings=runs[0].settings)
    if evaluated:
        results = [r.main_result for r in evaluated]
        row.update(
            ret=over_seeds([res["return_mean"] for res in results]),
            ret_ep_std=float(np.mean([res["return_std"] for res in results])),
            score=over_seeds([res["score_mean"] for res in results]),
            score_ep_std=float(np.mean([res["score_std"] for res in results])),
            fell=float(np.mean([res["fell"] for res in results])),
            length=float(np.mean([res["length_mean"] for res in results])))
    return row


def compare(label, dt_row, mamba_row):
    """One computed sentence comparing two experiments' normalised scores (and naming the
    settings they differ in, beyond those that differ between the models by design)."""
    (dt_mean, dt_std), (mb_mean, mb_std) = dt_row["score"], mamba_row["score"]
    diff = mb_mean - dt_mean
    spread = (dt_std or 0.0) + (mb_std or 0.0)
    if dt_std is None or mb_std is None:
        verdict = "not compared with a seed spread (a single seed on at least one side)"
    elif abs(diff) > spread:
        verdict = f"larger than the sum of the seed stds ({spread:.1f})"
    else:
        verdict = f"within the sum of the seed stds ({spread:.1f})"
    higher = "Mamba scores higher" if diff > 0 else "DT scores higher" if diff < 0 else "a tie"
    differ = sorted(k for k in set(dt_row["settings"]) | set(mamba_row["settings"])
                    if k not in MODEL_SPECIFIC
                    and dt_row["settings"].get(k) != mamba_row["settings"].get(k))
    return (f"- {label}: {higher} by {abs(diff):.1f} normalised points (Mamba {mb_mean:.1f}, "
            f"DT {dt_mean:.1f}); the difference is {verdict}." + (
                f" The two experiments also differ in {', '.join(differ)}." if differ else ""))


# ----------------------------------------------------------------------------- figures

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_png(fig, path):
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    _pyplot().close(fig)


def plot_losses(runs, env, path):
    """Training loss vs step for every run of env, one panel per dataset."""
    plt = _pyplot()
    datasets = sorted({r.dataset for r in runs})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for run in sorted((r for r in runs if r.dataset == dataset), key=lambda r: r.key):
            if run.losses:
                steps, losses = zip(*run.losses)
                ax.plot(steps, losses, color=COLORS.get(run.train["model"]), alpha=0.8,
                        label=f"{MODEL_NAMES.get(run.train['model'])} K={run.train['context']} "
                              f"seed {run.train['seed']}")
        ax.set(xlabel="optimiser step", ylabel="action MSE (training)", yscale="log",
               title=f"{env} / {dataset}")
        ax.legend(fontsize=7)
    save_png(fig, path)


def plot_targets(runs, path):
    """Achieved vs target return per env: mean over seeds (+- std) per model, the diagonal,
    and the dataset's mean and best return."""
    plt = _pyplot()
    envs = sorted({r.train["env"] for r in runs if r.evals})
    fig, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 4.5), squeeze=False)
    for ax, env in zip(axes[0], envs):
        curves = defaultdict(lambda: defaultdict(list))  # (model, dataset, mode) -> target -> means
        for run in (r for r in runs if r.train["env"] == env):
            for res in run.evals:
                curves[run.train["model"], run.dataset, run.mode][res["target_return"]].append(
                    res["return_mean"])
        for (model, dataset, mode), seed_means in sorted(curves.items()):
            targets = sorted(seed_means)
            means, stds = zip(*(over_seeds(seed_means[t]) for t in targets))
            ax.errorbar(targets, means, yerr=[s or 0.0 for s in stds], marker="o", capsize=3,
                        color=COLORS.get(model), ls="-" if mode == "window" else "--",
                        label=f"{MODEL_NAMES.get(model)} {dataset} ({mode})")
        datasets = {r.dataset: r.config.get("data", {}) for r in runs if r.train["env"] == env}
        targets = [t for seed_means in curves.values() for t in seed_means]
        lo, hi = min(0.0, *targets), max(targets)
        ax.plot([lo, hi], [lo, hi], "k:", label="achieved = target")
        for (dataset, data), color in zip(sorted(datasets.items()), ("grey", "C2", "C3", "C4")):
            for name, word, style in (("return_mean", "mean", "--"), ("return_max", "best", "-.")):
                if name in data:
                    ax.axhline(data[name], color=color, ls=style, lw=1,
                               label=f"{dataset} dataset {word}")
        ax.set(xlabel="target return", ylabel="achieved return", title=env)
        ax.legend(fontsize=7)
    save_png(fig, path)


# ----------------------------------------------------------------------------- the report

def results_table(groups):
    """Markdown rows: one per experiment, grouped by env and dataset; plus comparison lines."""
    lines = ["| env | dataset | model | K | eval mode | runs | seeds | return | normalised score "
             "| fell | length | dataset mean (normalised) | dataset best (normalised) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (env, dataset, model, context, mode, _), row in sorted(groups.items()):
        data = row["data"]
        if "ret" in row:
            ret = f"{pm(*row['ret'])} (ep. sd {row['ret_ep_std']:.0f})"
            score = f"{pm(*row['score'], digits=1)} (ep. sd {row['score_ep_std']:.1f})"
            fell, length = f"{100 * row['fell']:.0f}%", f"{row['length']:.0f}"
        else:
            ret = score = fell = length = "not evaluated"
        seeds = ",".join(map(str, row["seeds"])) + (
            f" ({row['evaluated']} evaluated)" if row["evaluated"] < len(row["seeds"]) else "")
        mean, best = data.get("return_mean"), data.get("return_max")
        lines.append(
            f"| {env} | {dataset} | {MODEL_NAMES.get(model, model)} | {context} | {mode} | "
            f"{row['name']} | {seeds} | {ret} | {score} | {fell} | {length} | "
            + (f"{mean:.0f} ({normalized_score(env, mean):.1f})" if mean is not None else "?")
            + " | " + (f"{best:.0f} ({normalized_score(env, best):.1f})" if best is not None
                       else "?") + " |")
    comparisons = []  # each evaluated Mamba experiment against each DT one with its env, data, K
    for (env, dataset, model, context, mode, _), row in sorted(groups.items()):
        for key, dt_row in sorted(groups.items()):
            if model == "mamba" and key[:4] == (env, dataset, "dt", context) \
                    and "score" in row and "score" in dt_row:
                comparisons.append(compare(
                    f"{env} / {dataset}, K={context}: {row['name']} (Mamba, {mode} mode) vs "
                    f"{dt_row['name']} (DT, {key[4]} mode)", dt_row, row))
    return lines, comparisons


def train_command(run):
    """The train.py command that reproduces a run: every stored setting as a flag."""
    parts = ["python", "train.py"]
    for name, value in dict(run.train, out=str(run.path)).items():
        if name == "resume" or value is None or value is False:
            continue
        parts += [flag_name(name)] + ([] if value is True else [str(value)])
    return shlex.join(parts)


def eval_command(run):
    """The evaluate.py command that rewrites the run's eval.json (None if train.py wrote it)."""
    cfg = run.eval_config
    if "run_dir" not in cfg:
        return None
    parts = ["python", "evaluate.py", str(run.path), "--episodes", str(cfg["episodes"]),
             "--seed", str(cfg["seed"]), "--mode", cfg["mode"]]
    if cfg.get("target"):
        parts += ["--target", *map(str, cfg["target"])]
    if cfg.get("max_episode_steps"):
        parts += ["--max-episode-steps", str(cfg["max_episode_steps"])]
    return shlex.join(parts)


def report_command(cfg: ReportConfig):
    return shlex.join(["python", "report.py", *cfg.runs, *(["--profile", *cfg.profile]
                       if cfg.profile else []), "--out", cfg.out, "--figures", cfg.figures])


def scan_label(run):
    """The scan backend a run trained with, from its config.json (older runs did not record it:
    on the CPU they could only have used the PyTorch scan)."""
    if run.train["model"] != "mamba":
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


def write_report(cfg: ReportConfig) -> Path:
    runs, skipped = [], []
    for path in cfg.runs:
        run, why = load_run(path) if Path(path).is_dir() else (None, "not a folder")
        if run:
            runs.append(run)
        else:
            skipped.append(f"{path}: {why}")
    if not runs:
        raise ReportError(f"none of {', '.join(map(str, cfg.runs)) or 'the given paths'} is a "
                          "train.py run folder (one with config.json); train a model first "
                          "(python train.py --model dt) and pass its folder, e.g. "
                          "python report.py runs/*.")
    profiles = list(cfg.profile) or sorted(glob.glob("results/profile-*.json"))
    out, figures = Path(cfg.out), Path(cfg.figures)
    out_dir = out.parent
    for folder in (out_dir, figures):
        folder.mkdir(parents=True, exist_ok=True)

    groups = defaultdict(list)
    for run in runs:
        groups[run.key].append(run)
    table, comparisons = results_table({k: summarise_group(v) for k, v in groups.items()})
    doc = ["# Decision Transformer vs Decision Mamba: results", "",
           f"Generated by `{report_command(cfg)}` from "
           f"{len(runs)} run folder(s) and {len(profiles)} profile file(s).", "",
           "## Returns and normalised scores", "",
           "Each number is the mean over seeds of each seed's mean over its evaluation episodes, "
           "at the run's own target return, from the last checkpoint; ± is the standard "
           "deviation over seeds (shown only with two or more seeds), ep. sd the standard "
           "deviation over episodes averaged over seeds. Normalised: 100 (R - random) / "
           "(expert - random) with D4RL's reference returns. fell: episodes that ended by "
           "falling (terminated) rather than at the time limit; length: mean episode length (the "
           "env's limit is 1000 steps unless a run cut it).", ""] + table
    doc += ["", "Computed comparisons (normalised score, DT vs Mamba at the same env, dataset "
            "and K):" if comparisons else "No env, dataset and K has evaluated runs of both "
            "models, so no comparison is made."]
    doc += comparisons
    doc += ["", "## Training loss", ""]
    for env in sorted({r.train["env"] for r in runs}):
        png = figures / f"loss-{env}.png"
        plot_losses([r for r in runs if r.train["env"] == env], env, png)
        doc.append(f"![training loss, {env}]({os.path.relpath(png, out_dir)})")
    doc += ["", "## Achieved vs target return", ""]
    if any(r.evals for r in runs):
        png = figures / "return-vs-target.png"
        plot_targets(runs, png)
        targets = sorted({res["target_return"] for r in runs for res in r.evals})
        doc += [f"Targets evaluated: {', '.join(f'{t:g}' for t in targets)}. "
                + ("With a single target per env the plot shows where each model lands against "
                   "the diagonal; evaluate at several targets (python evaluate.py RUN --target "
                   "A B C) to see whether the return follows the target." if len(targets) < 2
                   else "Points on the diagonal mean the model achieves the return it is asked "
                        "for."), "", f"![achieved vs target]({os.path.relpath(png, out_dir)})"]
    else:
        doc.append("No run has an eval.json, so there is nothing to plot.")
    doc += ["", "## Runtime and memory", ""]
    section, profiled = profile_section(profiles, out_dir)
    doc += section or ["No profile.py result was found (run python profile.py)."]

    versions = {json.dumps(r.config.get("versions", {}), sort_keys=True) for r in runs}
    doc += ["", "## Settings, seeds, devices, versions", "",
            "| run | model | env | dataset | seed | steps | batch | K | lr | width | layers | "
            "device | scan | eval episodes | target | eval mode |", "|---" * 16 + "|"]
    for run in sorted(runs, key=lambda r: (r.key, r.train["seed"])):
        t = run.train
        layers = t["n_layer"] if t["model"] == "dt" else t["mamba_n_layer"]
        episodes = run.main_result["episodes"] if run.evals else "-"
        doc.append(f"| {run.path} | {t['model']} | {t['env']} | {run.dataset} | {t['seed']} | "
                   f"{run.step if run.step is not None else t['steps']} | {t['batch_size']} | "
                   f"{t['context']} | {t['lr']:g} | {t['d_model']} | {layers} | "
                   f"{run.config.get('device', '?')} | {scan_label(run)} | {episodes} | "
                   f"{run.config.get('target_return', '?')} | {run.mode} |")
    doc += ["", "Scan: the selective scan that trained a Mamba run (`c`: scan_cpu.c, `torch`: the "
            "PyTorch scan, `triton`: the GPU kernel; they agree up to float rounding). A Mamba run "
            "whose config.json names none predates the C kernels and ran the PyTorch scan on the "
            "CPU (the Triton kernel on CUDA)."]
    doc += ["", "Versions of the training runs: " + "; ".join(
        ", ".join(f"{k} {v}" for k, v in json.loads(v).items()) for v in sorted(versions)) + "."]
    missing = [f"skipped {why}" for why in skipped]
    missing += [f"{r.path} has no eval.json (evaluate it: python evaluate.py {r.path})"
                for r in runs if not r.evals]
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
    for run in sorted(runs, key=lambda r: (r.key, r.train["seed"])):
        doc.append(train_command(run))
        if eval_command(run):
            doc.append(eval_command(run))
    for path in profiles:
        command = (read_json(path) or {}).get("command")
        doc.append(command or "python profile.py")
    doc += [report_command(cfg), "```", ""]
    atomic_write(out, lambda tmp: Path(tmp).write_text("\n".join(doc)))
    return out


def main(argv=None):
    cfg = parse_config(ReportConfig, argv, __doc__.split("\n\n")[0])
    try:
        out = write_report(cfg)
    except ReportError as e:
        sys.exit(f"error: {e}")
    print(f"wrote {out} (figures in {cfg.figures})")


if __name__ == "__main__":
    main()
