"""Every table and figure the measurements are shown as, drawn in one place.

  profile_markdown  profile.py's results as markdown (the .md that report.py embeds)
  profile_plots     -latency.png (ms per env step vs K) and -memory.png (training step memory
                    and time vs K), log-log axes: linear growth is a slope-1 line
  plot_bands        report.py's curves: per model, the mean over seeds and the min-max band
                    (training loss, evaluation return vs step, the pilot)
  plot_targets      report.py's return conditioning: achieved vs target return
  plot_pilot, plot_seed_curves, plot_profile, plot_drops
                    the figures of REPORT.md's sections (sections.py and pilots.py write their
                    text)

Standard library, numpy and matplotlib only (no torch): profile.py's results are plain dicts
(profile.py's docstring says what they hold) and report.py's runs are stats.Run records.
"""
from collections import defaultdict

import numpy as np

from cli import atomic_write
from benchmarks.stats import MODEL_NAMES, over_seeds

COLORS = {"dt": "C0", "mamba": "C1"}
# The latency sweep's cases, (model, how it acts) -> label: the DT and the Mamba re-encoding a
# K-step window, the Mamba acting recurrently.
LATENCY_MODES = {("dt", "window"): "DT window", ("mamba", "window"): "Mamba window",
                 ("mamba", "recurrent"): "Mamba recurrent"}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def drawn_by_matplotlib(path):
    """True for a PNG that matplotlib saved (its Software text chunk names it)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    return head.startswith(b"\x89PNG") and b"Matplotlib" in head


def save_png(fig, path, title=None):
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    _pyplot().close(fig)


# ----------------------------------------------------------------------------- the profile

def md_table(header, rows):
    """Markdown lines of a table: the header's cells, then each row's."""
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|",
            *("| " + " | ".join(map(str, row)) + " |" for row in rows)]


def profile_markdown(r):
    """The profile as markdown, the one rendering of it (report.py embeds the .md file)."""
    def cell(row):
        return (f"{row['median_ms']:.3g} ({row['p25_ms']:.3g}-{row['p75_ms']:.3g})"
                if row["status"] == "ok" else row["status"])

    def num(row, key, spec=".3g"):
        return "-" if row.get(key) is None else format(row[key], spec)
    load = [x for x in r["load_average"].values() if x is not None]
    noisy = (" (above the threads used: other processes shared the CPU, so timings are noisy; "
             "the minimum is the least disturbed figure)" if load and max(load) > r["threads"]
             else "")
    lines = [f"## Runtime and memory on {r['device_name']}", "",
             f"Device `{r['device']}`, {r['threads']} torch threads, {r['cores']} cores, load "
             f"average {r['load_average']['before']} before / {r['load_average']['after']} after"
             f"{noisy}; " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()) + ". Mamba "
             f"scan backend (training and the latency table): {r['scan_backend']}. Parameters "
             f"without the timestep table: DT {r['parameters']['dt']:,}, Mamba "
             f"{r['parameters']['mamba']:,}. " + ("Quick sweep. " if r["quick"] else "") +
             "Times: median (25th-75th percentile) in ms; oom: out of memory (CPU cap "
             f"{r['settings']['memory_cap_gb']:g} GB); skipped: not tried, a smaller K already "
             "ran out or passed the time cap."]
    if r["latency"]:
        Ks = sorted({row["K"] for row in r["latency"]})
        rows = []
        for B in sorted({row["batch"] for row in r["latency"]}):
            for key, label in LATENCY_MODES.items():
                by_K = {row["K"]: row for row in r["latency"]
                        if (row["model"], row["mode"], row["batch"]) == (*key, B)}
                rows.append([label, B, *(cell(by_K[K]) for K in Ks)])
        lines += ["", "### Inference latency per env step (ms)", "",
                  *md_table(["model", "batch", *(f"K={K}" for K in Ks)], rows)]
    if r["train"]:
        memory = ("torch.cuda.max_memory_allocated during the steps minus the memory allocated "
                  "before the model was built." if r["device"].startswith("cuda") else
                  "peak resident memory of the measuring child process during the steps minus "
                  "its resident memory after one throwaway step (imports, kernels, thread pools).")
        rows = []
        for K in sorted({row["K"] for row in r["train"]}):
            by_model = {row["model"]: row for row in r["train"] if row["K"] == K}
            rows.append([K, *(x for m in MODEL_NAMES
                              for x in (cell(by_model[m]), num(by_model[m], "step_mb", ".0f")))])
        lines += ["", f"### Training step, batch {r['settings']['train_batch']}: time (ms) and "
                  "peak memory above the process's base (MB)", "", f"Memory: {memory}", "",
                  *md_table(["K", "DT step", "DT memory", "Mamba step", "Mamba memory"], rows),
                  *(f"- {m} stopped: {why}" for m, why in r["train_stops"].items())]
    if r["compare"]:
        rows = [[row["model"], row["scan_backend"] or "-", cell(row), num(row, "cpu_ms"),
                 num(row, "over_dt", ".2f")] for row in r["compare"]]
        lines += ["", f"### Training step, batch {r['compare'][0]['batch']}, K "
                  f"{r['compare'][0]['K']}: DT vs Mamba per scan backend, timed in turns", "",
                  *md_table(["model", "scan", "ms", "CPU ms", "/ DT"], rows)]
    if r["scan"]:
        figures = ("melem_per_s", "gbps", "over_ref", "over_torch", "max_diff_vs_torch")
        rows = [["x".join(map(str, row["shape"])), row["dtype"], row["direction"], row["backend"],
                 cell(row), *(num(row, key) for key in figures)] for row in r["scan"]]
        lines += ["", "### Selective scan (million elements B*L*D per second; GB/s of the "
                  "unavoidable traffic; speed-ups over the reference loop and the PyTorch scan)",
                  "", *md_table(["shape BxLxDxN", "dtype", "direction", "backend", "ms", "Melem/s",
                                 "GB/s", "x ref", "x torch", "max diff vs torch"], rows)]
    verdicts = {True: "PASS", False: "FAIL", None: "INFO"}
    lines += ["", "### Performance targets", ""] + ([
        f"- {verdicts[t['passed']]}: {t['name']}: {t['detail']}" for t in r["targets"]]
        or ["- none: what was measured here has no target"])
    return "\n".join(lines) + "\n"


def profile_plots(r, prefix):
    """prefix-latency.png: ms per env step vs K, a panel per batch; prefix-memory.png: training
    memory and step time vs K."""
    plt = _pyplot()

    def axes_done(ax, Ks, title, ylabel):
        ax.set(xscale="log", yscale="log", title=title, ylabel=ylabel, xlabel="context K")
        ax.set_xticks(Ks, [str(K) for K in Ks])
        ax.tick_params(axis="x", which="minor", bottom=False)
        ax.legend(fontsize=8)

    batches = sorted({row["batch"] for row in r["latency"]})
    if batches:
        fig, axes = plt.subplots(1, len(batches), figsize=(5 * len(batches), 4), squeeze=False)
        for ax, B in zip(axes[0], batches):
            for (key, label), fmt in zip(LATENCY_MODES.items(), ("o-", "s--", "^-")):
                rows = [row for row in r["latency"] if (row["model"], row["mode"], row["batch"])
                        == (*key, B) and row["status"] == "ok"]
                ax.errorbar([row["K"] for row in rows], [row["median_ms"] for row in rows],
                            yerr=[[row["median_ms"] - row["p25_ms"] for row in rows],
                                  [row["p75_ms"] - row["median_ms"] for row in rows]],
                            fmt=fmt, label=label, capsize=3)
            axes_done(ax, sorted({row["K"] for row in r["latency"]}), f"inference, batch {B}",
                      "ms per env step")
        save_png(fig, f"{prefix}-latency.png", r["device_name"])
    if r["train"]:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for model, color in COLORS.items():
            rows = [row for row in r["train"] if row["model"] == model and row["status"] == "ok"]
            for ax, key in zip(axes, ("step_mb", "median_ms")):
                ax.plot([row["K"] for row in rows], [max(row[key], 1e-3) for row in rows], "o-",
                        color=color, label=LATENCY_MODES[model, "window"].split()[0])
            for row in [row for row in r["train"] if row["model"] == model and row["status"]
                        not in ("ok", "skipped")][:1]:
                axes[0].axvline(row["K"], color=color, ls=":",
                                label=f"{row['status']} at {row['K']}")
        Ks, batch = sorted({row["K"] for row in r["train"]}), r["settings"]["train_batch"]
        axes_done(axes[0], Ks, f"training step memory, batch {batch}", "peak above base (MB)")
        axes_done(axes[1], Ks, f"training step time, batch {batch}", "ms per step")
        save_png(fig, f"{prefix}-memory.png", r["device_name"])



# ----------------------------------------------------------------------------- the report's curves

def curve_of(run):
    return [(step, value) for step, value, _ in run.curve]


def plot_bands(runs, panel, series, ylabel, path, log=False, data_mean=False):
    """One panel per value of panel(run); per model and variant, the mean over seeds of
    series(run) -> [(step, value)] and the range (min to max) over seeds as a band; with
    data_mean, the dataset's mean return as a dotted line."""
    plt = _pyplot()
    panels = sorted({panel(r) for r in runs})
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    for ax, name in zip(axes[0], panels):
        lines = defaultdict(lambda: defaultdict(list))  # (model, variant) -> step -> values
        for run in (r for r in runs if panel(r) == name):
            for step, value in series(run):
                lines[run.model, run.variant][step].append(value)
        for (model, variant), by_step in sorted(lines.items()):
            steps = sorted(by_step)
            values = [by_step[s] for s in steps]
            seeds = max(len(v) for v in values)
            ax.plot(steps, [np.mean(v) for v in values], color=COLORS.get(model),
                    ls="-" if variant == "K=20" else "--", marker="." if len(steps) < 30 else None,
                    label=f"{MODEL_NAMES.get(model, model)} {variant} ({seeds} seed"
                          f"{'s' if seeds > 1 else ''})")
            ax.fill_between(steps, [min(v) for v in values], [max(v) for v in values],
                            color=COLORS.get(model), alpha=0.2)
        data = next(r.config.get("data", {}) for r in runs if panel(r) == name)
        if data_mean and "return_mean" in data:
            ax.axhline(data["return_mean"], color="grey", ls=":", label="dataset mean")
        ax.set(xlabel="optimiser step", ylabel=ylabel, title=name,
               yscale="log" if log else "linear")
        ax.legend(fontsize=7)
    save_png(fig, path)


def plot_targets(runs, path):
    """Achieved vs target return per env (the runs' target sweeps, targets.json, where the env
    has any, else eval.json), mean over seeds +- std per model and dataset; the diagonal; the
    datasets' mean returns."""
    plt = _pyplot()
    envs = sorted({r.train["env"] for r in runs if r.sweep or r.evals})
    fig, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 4.5), squeeze=False)
    for ax, env in zip(axes[0], envs):
        curves = defaultdict(lambda: defaultdict(list))  # (model, dataset, variant) -> target -> []
        env_runs = [r for r in runs if r.train["env"] == env]
        swept = any(r.sweep for r in env_runs)  # then only the sweeps: one source per panel
        for run in env_runs:
            for res in run.sweep if swept else run.evals:
                curves[run.model, run.dataset, run.variant][res["target_return"]].append(
                    res["return_mean"])
        for (model, dataset, variant), seed_means in sorted(curves.items()):
            targets = sorted(seed_means)
            means, stds = zip(*(over_seeds(seed_means[t]) for t in targets))
            ax.errorbar(targets, means, yerr=[s or 0.0 for s in stds], marker="o", capsize=3,
                        color=COLORS.get(model), ls="-" if dataset == "medium" else "--",
                        label=f"{MODEL_NAMES.get(model, model)} {dataset} ({variant})")
        targets = [t for seed_means in curves.values() for t in seed_means]
        lo, hi = min(0.0, *targets), max(targets)
        ax.plot([lo, hi], [lo, hi], "k:", label="achieved = target")
        datasets = {r.dataset: r.config.get("data", {}) for r in runs if r.train["env"] == env}
        for (dataset, data), color in zip(sorted(datasets.items()), ("grey", "C2", "C3", "C4")):
            if "return_mean" in data:
                ax.axhline(data["return_mean"], color=color, ls="-.", lw=1,
                           label=f"{dataset} dataset mean")
        ax.set(xlabel="target return", ylabel="achieved return", title=env)
        ax.legend(fontsize=6)
    save_png(fig, path)



def plot_pilot(curves, path):
    """The protocol pilot: one panel per cell (env, model), the mean over seeds of each recipe's
    validation score, raw weights solid, EMA dashed. curves: (env, model) -> recipe ->
    {"raw"|"ema": [(step, mean score over seeds)]}."""
    plt = _pyplot()
    cells = sorted(curves)
    recipes = sorted({recipe for by_recipe in curves.values() for recipe in by_recipe})
    fig, axes = plt.subplots(1, len(cells), figsize=(4.2 * len(cells), 3.4), squeeze=False)
    for ax, cell in zip(axes[0], cells):
        for recipe, lines in sorted(curves[cell].items()):
            i = recipes.index(recipe)  # one colour per recipe in every panel
            for kind, style in (("raw", "-"), ("ema", "--")):
                if lines.get(kind):
                    steps, values = zip(*lines[kind])
                    ax.plot(steps, values, style, color=f"C{i}", marker=".",
                            label=f"{recipe} {kind}")
        ax.set_title(f"{cell[0]} / {MODEL_NAMES.get(cell[1], cell[1])}")
        ax.set_xlabel("step")
        ax.set_ylabel("normalised score (validation, mean over seeds)")
        ax.legend(fontsize=7)
    save_png(fig, path)


def plot_profile(profiles, taus, path):
    """Performance profiles (Agarwal et al. 2021): the fraction of runs scoring above tau."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for model, fractions in profiles.items():
        ax.plot(taus, fractions, color=COLORS.get(model), label=MODEL_NAMES.get(model, model))
    ax.set_xlabel("normalised score tau")
    ax.set_ylabel("fraction of runs with score > tau")
    ax.legend()
    save_png(fig, path)


# ----------------------------------------------------------------------------- report sections

def plot_drops(drops, path):
    """One panel per (env, variant): the mean drop of each model setting (bars)."""
    plt = _pyplot()
    panels = sorted(drops)
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        names = sorted(drops[panel])
        ax.bar(range(len(names)), [drops[panel][n] for n in names],
               color=[COLORS["dt" if n.startswith("DT") else "mamba"] for n in names])
        ax.set_xticks(range(len(names)), names, rotation=20, fontsize=7)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_title(" / ".join(panel))
        ax.set_ylabel("score with the variant - standard task")
    save_png(fig, path)


def plot_seed_curves(runs, path, title="hopper medium-expert / {model}"):
    """The long-budget and paper-recipe checks: one panel per model, each seed's validation
    score against the step (a mean over seeds would hide that seeds end at different levels).
    runs: model -> [(seed, [(step, score)])]; title: each panel's, {model} filled in."""
    plt = _pyplot()
    models = sorted(runs)
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.4), squeeze=False)
    for ax, model in zip(axes[0], models):
        for seed, points in sorted(runs[model]):
            if points:
                ax.plot(*zip(*points), color=f"C{seed}", marker=".", label=f"seed {seed}")
        ax.set_title(title.format(model=MODEL_NAMES.get(model, model)))
        ax.set_xlabel("step")
        ax.set_ylabel("normalised score (validation)")
        ax.legend(fontsize=7)
    save_png(fig, path)
