"""Train a Decision Transformer or a Decision Mamba offline, then score it in the environment.

One loop for both models: sample windows of K steps from a D4RL-style dataset, predict each action
from the tokens before it (masked MSE), AdamW with linear warmup and gradient clipping, bf16
autocast on CUDA. The loop only calls `model(...) -> (prediction, loss)`; it never asks which
backbone it drives. A run lives in one folder:

    runs/NAME/config.json    the settings, the model's settings, what the dataset holds
    runs/NAME/metrics.jsonl  one JSON object per log step (step, loss, lr, time) and per eval
    runs/NAME/ckpt.pt        the last checkpoint: model, optimiser, scheduler, step, RNG states,
                             config, state mean/std, return scale (written atomically)
    runs/NAME/eval.json      the final evaluation (see evaluate.py), from the last checkpoint

`python train.py --model mamba` is a small CPU-friendly run; `--preset paper` uses the Decision
Transformer paper's settings. `--resume` continues a run exactly where it stopped; Ctrl-C saves a
checkpoint first.

References (ideas, not code):
  Chen et al. 2021, "Decision Transformer" (training settings of --preset paper).
  Karpathy's nanoGPT train.py (a baby default config, checkpoint as a plain dict).
  CleanRL (a config dataclass whose field docs are the --help text, explicit seeding).

Glossary of dimension letters:
  B  windows in a batch (--batch-size)     K  env steps in a window (--context)
  obs, act  observation and action sizes
"""
import argparse
import json
import math
import os
import random
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data import (ENVS, LEVELS, DataError, TrajectoryDataset, check_fits_env, load_trajectories,
                  normalized_score, resolve_dataset)
from dt import DecisionConfig, DecisionModel
from ssm import default_scan_backend
from evaluate import EVAL_SEED, TARGET_RETURNS, EvalError, evaluate, resolve_device, \
    resolve_mode, summary_line

MODELS = {"dt": "gpt", "mamba": "mamba"}  # --model -> DecisionConfig.backbone
MAX_EP_LEN = 1000  # the envs' time limit; rows of the timestep embedding


def option(default, doc, **argparse_kw):
    return field(default=default, metadata={"help": doc, **argparse_kw})


@dataclass
class TrainConfig:
    model: str = option("mamba", "dt (Decision Transformer) | mamba (Decision Mamba)")
    env: str = option("hopper", "hopper | halfcheetah | walker2d")
    dataset: str = option("medium", "random | medium | medium-replay | expert | medium-expert; "
                                    "data/{env}-{dataset}.hdf5, generated if missing")
    data: str = option(None, "train on this D4RL .hdf5 file or Minari folder instead of --dataset",
                       type=str)
    steps: int = option(500, "optimiser steps in total")
    batch_size: int = option(32, "B, windows per step")
    context: str = option("20", "K, env steps per window, or 'full' for whole episodes")
    lr: float = option(1e-3, "peak learning rate of AdamW")
    weight_decay: float = option(1e-4, "AdamW weight decay (not on norms, biases, embeddings, "
                                       "A_log, D)")
    warmup_steps: int = option(300, "linear learning-rate warmup from 0, then constant")
    grad_clip: float = option(0.25, "clip the gradient's global norm to this")
    return_scale: float = option(1000.0, "returns-to-go are divided by this")
    d_model: int = option(64, "model width, both backbones")
    n_layer: int = option(2, "Decision Transformer blocks")
    mamba_n_layer: int = option(3, "Decision Mamba blocks (about 1.5 per transformer block "
                                   "gives the same parameter count)")
    n_head: int = option(1, "attention heads (Decision Transformer)")
    dropout: float = option(0.1, "dropout probability")
    seed: int = option(0, "seed of the initial weights, batch sampling and dropout")
    device: str = option("auto", "auto | cpu | cuda")
    compile: bool = option(False, "torch.compile the model for training (slow start, faster "
                                  "steps on a GPU)")
    out: str = option(None, "run folder (default runs/{model}-{env}-{dataset}[-{preset}]-s{seed})",
                      type=str)
    resume: bool = option(False, "continue the run in --out from its checkpoint")
    log_every: int = option(100, "steps between lines of metrics.jsonl")
    save_every: int = option(1000, "steps between checkpoints (also saved at every evaluation, "
                                   "at the end and on Ctrl-C)")
    eval_every: int = option(0, "steps between evaluations during training (0: only at the end)")
    eval_episodes: int = option(10, "episodes per evaluation (one batch)")
    target: float = option(None, "target return to condition on (default hopper 3600, "
                                 "halfcheetah 12000, walker2d 5000)", type=float)
    eval_mode: str = option("auto", "auto | window | recurrent; auto = recurrent for a Mamba "
                                    "trained with --context full, window otherwise")
    eval_seed: int = option(EVAL_SEED, "evaluation episode i resets with seed EVAL_SEED + i")
    max_episode_steps: int = option(None, "cut evaluation episodes at this many steps (quick "
                                          "checks; default the env's 1000)", type=int)
    preset: str = option(None, "paper: the Decision Transformer paper's settings (explicit flags "
                               "still win)", type=str)


# The Decision Transformer paper's settings (Chen et al. 2021, appendix): 100k steps, batch 64,
# lr 1e-4, weight decay 1e-4, 10k warmup, clip 0.25, K 20, returns / 1000, 3 blocks of width 128.
PRESETS = {"paper": dict(steps=100_000, batch_size=64, lr=1e-4, weight_decay=1e-4,
                         warmup_steps=10_000, grad_clip=0.25, context="20", return_scale=1000.0,
                         d_model=128, n_layer=3, mamba_n_layer=5, n_head=1, dropout=0.1,
                         eval_every=10_000, eval_episodes=100, save_every=5000)}
# Settings a resumed run may change; any other difference would not continue the same run.
RESUMABLE = {"steps", "device", "compile", "out", "resume", "log_every", "save_every",
             "eval_every", "eval_episodes", "target", "eval_mode", "eval_seed",
             "max_episode_steps", "preset"}


class TrainError(ValueError):
    """A problem the user can fix; the message is one sentence saying what to do."""


# ----------------------------------------------------------------------------- small pieces

def check_config(cfg: TrainConfig) -> None:
    """TrainError for settings that cannot work, listing the choices."""
    choices = {"model": tuple(MODELS), "env": tuple(ENVS), "dataset": LEVELS,
               "device": ("auto", "cpu", "cuda"), "eval_mode": ("auto", "window", "recurrent"),
               "preset": (None, *PRESETS)}
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            names = ", ".join(str(a) for a in allowed if a is not None)
            raise TrainError(f"unknown {name} {getattr(cfg, name)!r}: choose one of {names}.")
    if cfg.context != "full" and not (cfg.context.isdigit() and int(cfg.context) >= 1):
        raise TrainError(f"--context must be a positive number of steps or 'full', "
                         f"got {cfg.context!r}.")
    for name in ("steps", "batch_size", "log_every", "save_every", "eval_episodes", "d_model"):
        if getattr(cfg, name) < 1:
            raise TrainError(f"--{name.replace('_', '-')} must be at least 1.")
    if cfg.eval_mode == "recurrent" and cfg.model != "mamba":
        raise TrainError("--eval-mode recurrent needs --model mamba; use window for dt.")


def default_out(cfg_values: dict) -> str:
    data = Path(cfg_values["data"]).stem if cfg_values.get("data") else cfg_values["dataset"]
    preset = f"-{cfg_values['preset']}" if cfg_values.get("preset") else ""
    return f"runs/{cfg_values['model']}-{cfg_values['env']}-{data}{preset}-s{cfg_values['seed']}"


def read_checkpoint(path: Path, device="cpu") -> dict:
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # any unreadable file: say which and what to do
        raise TrainError(f"{path} cannot be read ({type(e).__name__}); move it away and start "
                         "again, or pass another --out.") from None


def check_resumable(cfg: TrainConfig, stored: dict, run_dir: Path) -> None:
    """TrainError if cfg would not continue the run whose stored config is `stored`."""
    for name, value in asdict(cfg).items():
        if name not in RESUMABLE and stored.get(name) != value:
            flag = f"--{name.replace('_', '-')}"
            raise TrainError(f"{run_dir} was trained with {flag} {stored.get(name)}, not {value}; "
                             f"resume with the same {flag} or start a new run with another --out.")


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temp file, then rename: a crash never leaves half a checkpoint."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def keep_metrics_until(path: Path, step: int) -> None:
    """Drop metrics.jsonl lines past `step` (written after the checkpoint a resume starts from)."""
    if path.exists():
        lines = [line for line in path.read_text().splitlines()
                 if line and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in lines))


class StopOnCtrlC:
    """First Ctrl-C: ask the loop to save and stop after the current step. Second: quit now."""

    def __enter__(self):
        self.requested = False
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self.previous)  # a second Ctrl-C interrupts at once
        tqdm.write("Ctrl-C: saving a checkpoint after this step (Ctrl-C again quits without it)")

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)


# ----------------------------------------------------------------------------- the loop

def train(cfg: TrainConfig) -> Path:
    """Train, checkpoint, evaluate; return the run folder. Raises TrainError / DataError /
    EvalError for problems the user can fix and KeyboardInterrupt after saving on Ctrl-C."""
    check_config(cfg)
    run_dir = Path(cfg.out or default_out(asdict(cfg)))
    ckpt_path, metrics_path = run_dir / "ckpt.pt", run_dir / "metrics.jsonl"
    ckpt = None
    if ckpt_path.exists() and not cfg.resume:
        raise TrainError(f"{run_dir} already holds a checkpoint; add --resume to continue it or "
                         "pass another --out.")
    if cfg.resume:
        if not ckpt_path.exists():
            raise TrainError(f"--resume: {run_dir} has no checkpoint to continue; drop --resume "
                             "to start a new run there.")
        ckpt = read_checkpoint(ckpt_path)
        check_resumable(cfg, ckpt["config"], run_dir)
    device = resolve_device(cfg.device)
    context_len = None if cfg.context == "full" else int(cfg.context)
    eval_mode = resolve_mode(cfg.eval_mode, MODELS[cfg.model], context_len is None)
    target = cfg.target if cfg.target is not None else TARGET_RETURNS[cfg.env]

    random.seed(cfg.seed)
    np_rng = np.random.default_rng(cfg.seed)  # batch sampling
    torch.manual_seed(cfg.seed)  # initial weights and dropout

    data_path = Path(cfg.data) if cfg.data else resolve_dataset(cfg.env, cfg.dataset)
    trajectories = load_trajectories(data_path)
    check_fits_env(trajectories, cfg.env, source=str(data_path))
    stats = {} if ckpt is None else {"state_mean": ckpt["state_mean"].numpy(),
                                     "state_std": ckpt["state_std"].numpy()}
    dataset = TrajectoryDataset(trajectories, context_len, MAX_EP_LEN, cfg.return_scale, **stats)
    if cfg.model == "dt" and context_len is None:
        print(f"warning: --context full gives the transformer {3 * dataset.context_len} tokens per "
              "window; attention cost grows with their square (slow).")

    model_cfg = DecisionConfig(
        state_dim=dataset.state_dim, act_dim=dataset.act_dim, backbone=MODELS[cfg.model],
        d_model=cfg.d_model, n_layer=cfg.n_layer, n_head=cfg.n_head, dropout=cfg.dropout,
        context_len=dataset.context_len, max_ep_len=MAX_EP_LEN, mamba_n_layer=cfg.mamba_n_layer)
    model = DecisionModel(model_cfg).to(device)
    optimizer = torch.optim.AdamW(model.optim_groups(cfg.weight_decay), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)))
    step, elapsed = 0, 0.0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        step, elapsed = ckpt["step"], ckpt["time"]
        np_rng.bit_generator.state = ckpt["rng"]["numpy"]
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())
        if device.type == "cuda" and "cuda" in ckpt["rng"]:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"].cpu())
        random.setstate(ckpt["rng"]["python"])
        keep_metrics_until(metrics_path, step)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        metrics_path.write_text("")
    data_summary = dataset.summary()
    data_summary["return_mean_normalized"] = normalized_score(cfg.env, data_summary["return_mean"])
    write_json(run_dir / "config.json", {
        "train": asdict(cfg), "model": asdict(model_cfg), "eval_mode": eval_mode,
        "target_return": target, "device": str(device),
        # which selective scan trained a Mamba (c, torch, triton; equal up to float rounding)
        "scan_backend": (default_scan_backend(device, model_cfg.d_state)
                         if model_cfg.backbone == "mamba" else None),
        "data": {"path": str(data_path), **data_summary},
        "versions": {"torch": torch.__version__, "numpy": np.__version__,
                     "python": sys.version.split()[0]}})
    forward = torch.compile(model) if cfg.compile else model
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else nullcontext())

    def last_good() -> str:
        return (f"the last good checkpoint (step {saved_step}) is in {run_dir}"
                if saved_step is not None else "no checkpoint had been saved yet")

    def checkpoint() -> None:
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise TrainError(f"the weights became nan/inf by step {step}; {last_good()}; try a "
                             "lower --lr.")
        rng = {"numpy": np_rng.bit_generator.state, "torch": torch.get_rng_state(),
               "python": random.getstate()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state()
        save_checkpoint(ckpt_path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "step": step, "time": elapsed, "rng": rng,
            "config": asdict(cfg), "model_config": asdict(model_cfg), "env": cfg.env,
            "state_mean": torch.from_numpy(dataset.state_mean),
            "state_std": torch.from_numpy(dataset.state_std), "return_scale": cfg.return_scale})
        nonlocal saved_step
        saved_step = step

    def log(record: dict) -> None:
        with open(metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def run_eval() -> dict:
        result = evaluate(model, cfg.env, dataset.state_mean, dataset.state_std, cfg.return_scale,
                          target, episodes=cfg.eval_episodes, seed=cfg.eval_seed, mode=eval_mode,
                          context_len=dataset.context_len, device=device,
                          max_episode_steps=cfg.max_episode_steps, progress=True)
        model.train()
        log({"step": step, "time": round(elapsed, 3), "eval": {
            k: v for k, v in result.items() if k not in ("returns", "lengths", "seeds")}})
        return result

    saved_step = ckpt["step"] if ckpt is not None else None
    model.train()
    losses, tick = [], time.perf_counter()
    bar = tqdm(total=cfg.steps, initial=step, desc=f"{cfg.model} {cfg.env}", unit="step",
               dynamic_ncols=True)
    with StopOnCtrlC() as ctrl_c:
        while step < cfg.steps:
            if ctrl_c.requested:
                checkpoint()
                bar.close()
                print(f"stopped at step {step}; checkpoint saved in {run_dir}; continue with "
                      f"`python train.py --out {run_dir} --resume`")
                raise KeyboardInterrupt
            batch = {k: v.to(device, non_blocking=True)
                     for k, v in dataset.sample(cfg.batch_size, np_rng).items()}
            with autocast:
                _, loss = forward(batch["states"], batch["actions"], batch["returns_to_go"],
                                  batch["timesteps"], batch["mask"], targets=batch["actions"])
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                bar.close()
                raise TrainError(f"loss became {loss_value} at step {step + 1}; {last_good()}; "
                                 "try a lower --lr.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(loss_value)
            bar.update(1)
            now = time.perf_counter()
            elapsed, tick = elapsed + now - tick, now
            if step % cfg.log_every == 0 or step == cfg.steps:
                bar.set_postfix(loss=f"{np.mean(losses):.4f}")
                log({"step": step, "loss": float(np.mean(losses)), "lr": scheduler.get_last_lr()[0],
                     "time": round(elapsed, 3), "steps_per_s": round(bar.format_dict["rate"] or 0, 2)})
                losses = []
            if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
                tqdm.write(f"step {step}: " + summary_line(run_eval()))
                checkpoint()
                tick = time.perf_counter()  # evaluation time is not training time
            elif step % cfg.save_every == 0:
                checkpoint()
    bar.close()
    checkpoint()
    result = run_eval()
    write_json(run_dir / "eval.json", {
        "run_dir": str(run_dir), "env": cfg.env, "model": cfg.model, "step": step,
        "device": str(device), "config": {"episodes": cfg.eval_episodes, "seed": cfg.eval_seed,
                                          "mode": eval_mode, "target": [target]},
        "results": [result]})
    print(f"{cfg.model} on {cfg.env} ({data_path.name}: mean return "
          f"{data_summary['return_mean']:.0f}, normalised "
          f"{data_summary['return_mean_normalized']:.1f}), step {step}:\n  {summary_line(result)}")
    print(f"run folder: {run_dir}  (evaluate again: python evaluate.py {run_dir} --episodes 100)")
    return run_dir


# ----------------------------------------------------------------------------- command line

def parse_config(argv=None) -> TrainConfig:
    """Flags -> TrainConfig. Values come from, lowest first: the defaults, the stored config of
    a run being resumed, --preset if given, then the other flags given."""
    parser = argparse.ArgumentParser(description="Train a Decision Transformer (--model dt) or "
                                                 "Decision Mamba (--model mamba) and score it.")
    for f in fields(TrainConfig):
        flag = f"--{f.name.replace('_', '-')}"
        help_text = f.metadata["help"] + ("" if f.default is None else f" (default: {f.default})")
        if isinstance(f.default, bool):
            parser.add_argument(flag, dest=f.name, action="store_true", help=help_text,
                                default=argparse.SUPPRESS)
        else:
            parser.add_argument(flag, dest=f.name, help=help_text, default=argparse.SUPPRESS,
                                type=f.metadata.get("type", type(f.default)))
    given = vars(parser.parse_args(argv))  # only the flags actually typed
    values = asdict(TrainConfig())
    if given.get("resume"):
        out = Path(given.get("out") or default_out({**values, **given}))
        if (out / "ckpt.pt").exists():
            values.update(read_checkpoint(out / "ckpt.pt")["config"])
    if "preset" in given:
        if given["preset"] not in PRESETS:
            raise TrainError(f"unknown preset {given['preset']!r}: choose one of "
                             f"{', '.join(PRESETS)}.")
        values.update(PRESETS[given["preset"]])
    values.update(given)
    return TrainConfig(**values)


def main(argv=None) -> None:
    try:
        train(parse_config(argv))
    except (TrainError, DataError, EvalError) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
