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
checkpoint first. What keeps the folder safe (refusals before a run starts, the lock, the files
and their writes) is run_folder.py's; the evaluation protocol's targets and seeds are data.py's.

References (ideas, not code):
  Chen et al. 2021, "Decision Transformer" (training settings of --preset paper).
  Karpathy's nanoGPT train.py (a baby default config, checkpoint as a plain dict).
  CleanRL (a config dataclass whose field docs are the --help text, explicit seeding).

Glossary of dimension letters:
  B  windows in a batch (--batch-size)     K  env steps in a window (--context)
  obs, act  observation and action sizes
"""
import copy
import math
import random
import shlex
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cli import given_flags, option, stop_requests
from data import ENVS, LEVELS, MAX_EPISODE_STEPS, OBS_VARIANTS, REWARD_VARIANTS, TARGET_RETURNS, \
    TEST_SEED, VALIDATION_SEED, DataError, TrajectoryDataset, apply_variant, check_fits_env, \
    data_fingerprint, dataset_path, load_trajectories
from dt import MODELS, DecisionConfig, DecisionModel, ModelError, resolve_device
from evaluate import EvalError, evaluate, resolve_mode, summary_line
from run_folder import OLD_RUN_DEFAULTS, RunLock, Stopped, TrainError, check_numbers, \
    check_run_folder, is_out_of_memory, keep_checkpoint, log, memory_error, nan_error, \
    read_checkpoint, restore_checkpoint, save_checkpoint, start_files, write_eval, writing_to


def model_setting(name):
    """A TrainConfig field for DecisionConfig's setting `name`: its default and its help text."""
    field = DecisionConfig.__dataclass_fields__[name]
    return option(field.default, field.metadata["help"])


@dataclass
class TrainConfig:
    model: str = option("mamba", "dt (Decision Transformer) | mamba (Decision Mamba)")
    env: str = option("hopper", "hopper | halfcheetah | walker2d")
    dataset: str = option("medium", "random | medium | medium-replay | expert | medium-expert; "
                                    "data/{env}-{dataset}.hdf5, generated if missing")
    data: str = option(None, "D4RL .hdf5 file or Minari folder (instead of --dataset)", type=str)
    steps: int = option(500, "optimiser steps in total")
    batch_size: int = option(32, "B, windows per step")
    context: str = option("20", "K, env steps per window, or 'full' for whole episodes")
    lr: float = option(1e-3, "peak learning rate of AdamW")
    weight_decay: float = option(1e-4, "AdamW decay (not on norms, biases, embeddings, A_log, D)")
    warmup_steps: int = option(300, "linear learning-rate warmup from 0 to --lr")
    obs: str = option("full", "full | positions: velocities hidden (a partially observed variant)")
    reward: str = option("dense", "dense | delayed: every step 0, the return at the episode's end")
    lr_schedule: str = option("constant", "after the warmup: constant | cosine (decays to 0 at "
                                          "--steps)")
    ema: float = option(0.0, "also keep an exponential moving average of the weights with this "
                             "decay, e.g. 0.999 (0: off); evaluate.py --weights ema scores it")
    keep_last: int = option(1, "keep the weights of the last K checkpoints, --keep-every steps "
                               "apart, in checkpoints/ (evaluate.py --last K scores their mean)")
    keep_every: int = option(1000, "steps between the checkpoints that --keep-last keeps")
    grad_clip: float = option(0.25, "clip the gradient's global norm to this")
    return_scale: float = option(1000.0, "returns-to-go are divided by this")
    # the model's settings, as dt.DecisionConfig defines them (defaults: a small CPU config)
    d_model: int = model_setting("d_model")
    n_layer: int = model_setting("n_layer")
    mamba_n_layer: int = model_setting("mamba_n_layer")
    n_head: int = model_setting("n_head")
    activation: str = model_setting("activation")
    dropout: float = model_setting("dropout")
    d_state: int = model_setting("d_state")
    d_conv: int = model_setting("d_conv")
    expand: int = model_setting("expand")
    scan_backend: str = model_setting("scan_backend")
    fast_attention: bool = model_setting("fast_attention")
    seed: int = option(0, "seed of the initial weights, batch sampling and dropout")
    device: str = option("auto", "auto | cpu | cuda")
    compile: bool = option(False, "torch.compile the model (slow start, faster GPU steps)")
    out: str = option(None, "run folder (default runs/{model}-{env}-{dataset}[-{preset}]-s{seed})",
                      type=str)
    resume: bool = option(False, "continue the run in --out from its checkpoint")
    log_every: int = option(100, "steps between lines of metrics.jsonl")
    save_every: int = option(1000, "steps between checkpoints (also at evals, end, Ctrl-C)")
    eval_every: int = option(0, "steps between evaluations during training (0: only at the end)")
    eval_episodes: int = option(10, "episodes per evaluation (one batch)")
    target: float = option(None, "target return to condition on (default hopper 3600, "
                                 "halfcheetah 12000, walker2d 5000)", type=float)
    eval_mode: str = option("auto", "window | recurrent | auto: recurrent for a full-context Mamba")
    eval_seed: int = option(VALIDATION_SEED, "evaluation episode i resets with seed EVAL_SEED "
                                             f"+ i (validation seeds: below {TEST_SEED})")
    max_episode_steps: int = option(None, "cut eval episodes at N steps (quick checks)", type=int)
    preset: str = option(None, "paper (the DT paper's settings) | report; flags win", type=str)


REPORT_STEPS = 4000  # the pilot's budget (REPORT.md, "The pilot that chose the step budget")

# The Decision Transformer paper's settings (Chen et al. 2021, appendix).
PRESETS = {"paper": dict(steps=100_000, batch_size=64, lr=1e-4, weight_decay=1e-4,
                         warmup_steps=10_000, grad_clip=0.25, context="20", return_scale=1000.0,
                         d_model=128, n_layer=3, mamba_n_layer=5, n_head=1, dropout=0.1,
                         eval_every=10_000, eval_episodes=100, save_every=5000),
           # REPORT.md's runs: the default models for the pilot's budget, curves from 20-episode
           # evals; experiments.sh then scores the last checkpoint at the DT paper's targets.
           "report": dict(steps=REPORT_STEPS, eval_every=1000, eval_episodes=20, save_every=1000)}


# ----------------------------------------------------------------------------- checks

def check_config(cfg: TrainConfig) -> None:
    """TrainError for settings that cannot work, before anything is loaded or written."""
    choices = {"model": tuple(MODELS), "env": tuple(ENVS), "dataset": LEVELS,
               "device": ("auto", "cpu", "cuda"), "eval_mode": ("auto", "window", "recurrent"),
               "preset": (None, *PRESETS), "activation": ("relu", "gelu"),
               "lr_schedule": ("constant", "cosine"), "obs": OBS_VARIANTS,
               "reward": REWARD_VARIANTS}
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            names = ", ".join(str(a) for a in allowed if a is not None)
            raise TrainError(f"unknown {name} {getattr(cfg, name)!r}: choose one of {names}.")
    if cfg.context != "full" and not (cfg.context.isdigit() and int(cfg.context) >= 1):
        raise TrainError(f"--context must be a positive number of steps or 'full', "
                         f"got {cfg.context!r}.")
    check_numbers(cfg)
    if cfg.model == "dt" and cfg.d_model % cfg.n_head:
        raise TrainError(f"--d-model {cfg.d_model} must be divisible by --n-head {cfg.n_head}; "
                         "pick a head count that divides it.")
    if cfg.eval_mode == "recurrent" and cfg.model != "mamba":
        raise TrainError("--eval-mode recurrent needs --model mamba; use window for dt.")


def default_out(cfg_values: dict) -> str:
    data = Path(cfg_values["data"]).stem if cfg_values.get("data") else cfg_values["dataset"]
    preset = f"-{cfg_values['preset']}" if cfg_values.get("preset") else ""
    variant = "".join(f"-{cfg_values[k]}" for k, default in (("obs", "full"), ("reward", "dense"))
                      if cfg_values.get(k, default) != default)  # e.g. -positions-delayed
    return (f"runs/{cfg_values['model']}-{cfg_values['env']}-{data}{variant}{preset}"
            f"-s{cfg_values['seed']}")


# ----------------------------------------------------------------------------- build

@dataclass
class Run:
    """Everything the loop touches: the model and its optimiser, the data, the RNG, the counters."""
    cfg: TrainConfig
    run_dir: Path
    model: DecisionModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    dataset: TrajectoryDataset
    data_path: Path
    np_rng: np.random.Generator
    device: torch.device
    eval_mode: str
    target: float
    data_fingerprint: str = ""
    ema: dict | None = None  # the moving average of model.state_dict() (--ema), else None
    step: int = 0
    elapsed: float = 0.0  # training seconds, evaluations excluded
    saved_step: int | None = None  # the step of the last checkpoint on disk


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """The learning rate over --lr after `step` optimiser steps: a linear warmup from 0, then
    constant, or a cosine decay to 0 at --steps (Loshchilov & Hutter 2017, "SGDR")."""
    warmup = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    if cfg.lr_schedule == "constant" or step < cfg.warmup_steps:
        return warmup
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)  # 0 -> 1
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def update_ema(run: Run) -> None:
    """ema += (w - ema) / min(t, 1 / (1 - decay)) after step t: the plain mean of the weights
    seen so far until t reaches 1 / (1 - decay), an exponential moving average from then on
    (Polyak & Juditsky 1992), so the random initial weights fade at once."""
    rate = max(1 - run.cfg.ema, 1 / run.step)
    for name, value in run.model.state_dict().items():
        if value.is_floating_point():
            run.ema[name].lerp_(value, rate)
        else:
            run.ema[name].copy_(value)


def dataset_file(env: str, level: str) -> Path:
    """data/{env}-{level}.hdf5, rolled out from the committed policies the first time: the only
    use training makes of the behaviour-policy code, imported then."""
    path = dataset_path(env, level)
    if path.exists():
        return path
    from policies.collect import resolve_dataset  # imports td3: only when a dataset is missing
    return resolve_dataset(env, level)


def build(cfg: TrainConfig, run_dir: Path, ckpt: dict | None) -> Run:
    """A new run, or the run in ckpt restored exactly (weights, optimiser, RNG states)."""
    device = resolve_device(cfg.device)
    context_len = None if cfg.context == "full" else int(cfg.context)
    random.seed(cfg.seed)
    np_rng = np.random.default_rng(cfg.seed)  # batch sampling
    torch.manual_seed(cfg.seed)  # initial weights and dropout
    data_path = Path(cfg.data) if cfg.data else dataset_file(cfg.env, cfg.dataset)
    trajectories = load_trajectories(data_path)
    check_fits_env(trajectories, cfg.env, source=str(data_path))
    fingerprint = data_fingerprint(trajectories)  # a resumed run checks it trains on the same
    trajectories = apply_variant(trajectories, cfg.env, cfg.obs, cfg.reward)
    if ckpt is not None and ckpt.get("data", {}).get("fingerprint", fingerprint) != fingerprint:
        raise TrainError(f"{data_path} is not the data {run_dir} was trained on (its contents "
                         "differ: regenerated or replaced?); put that data back to resume, or "
                         "start a new run with another --out.")
    stats = {} if ckpt is None else {"state_mean": ckpt["state_mean"].numpy(),
                                     "state_std": ckpt["state_std"].numpy()}
    dataset = TrajectoryDataset(trajectories, context_len, MAX_EPISODE_STEPS, cfg.return_scale,
                                **stats)
    if cfg.model == "dt" and context_len is None:
        print(f"warning: --context full: {3 * dataset.context_len} tokens a window (cost grows "
              f"with their square); past step {dataset.context_len} it slides, unlike training.")
    try:
        model_cfg = DecisionConfig(
            state_dim=dataset.state_dim, act_dim=dataset.act_dim, backbone=MODELS[cfg.model],
            d_model=cfg.d_model, n_layer=cfg.n_layer, n_head=cfg.n_head, dropout=cfg.dropout,
            context_len=dataset.context_len, max_ep_len=MAX_EPISODE_STEPS,
            mamba_n_layer=cfg.mamba_n_layer, activation=cfg.activation, d_state=cfg.d_state,
            d_conv=cfg.d_conv, expand=cfg.expand, scan_backend=cfg.scan_backend,
            fast_attention=cfg.fast_attention)
    except ModelError as e:
        raise TrainError(str(e)) from None
    model = DecisionModel(model_cfg).to(device)
    optimizer = torch.optim.AdamW(model.optim_groups(cfg.weight_decay), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(cfg, s))
    run = Run(cfg, run_dir, model, optimizer, scheduler, dataset, data_path, np_rng,
              device, resolve_mode(cfg.eval_mode, MODELS[cfg.model], context_len is None),
              cfg.target if cfg.target is not None else TARGET_RETURNS[cfg.env],
              data_fingerprint=fingerprint)
    if cfg.ema:
        run.ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if ckpt is not None:
        restore_checkpoint(run, ckpt)
    return run


def run_eval(run: Run) -> dict:
    """Evaluate the model on the validation seeds (then back to training mode), and its moving
    average too with --ema ("eval_ema"); log the summaries, return the model's result."""
    cfg, logged = run.cfg, {"step": run.step, "time": round(run.elapsed, 3)}
    models = {"eval": run.model}
    if run.ema is not None:
        models["eval_ema"] = copy.deepcopy(run.model)
        models["eval_ema"].load_state_dict(run.ema)
    results = {}
    for key, model in models.items():
        results[key] = result = evaluate(
            model, cfg.env, run.dataset.state_mean, run.dataset.state_std, cfg.return_scale,
            run.target, episodes=cfg.eval_episodes, seed=cfg.eval_seed, mode=run.eval_mode,
            device=run.device, context_len=run.dataset.context_len,
            max_episode_steps=cfg.max_episode_steps, progress=True,
            variant={"obs": cfg.obs, "reward": cfg.reward})
        logged[key] = {k: v for k, v in result.items() if k not in ("returns", "lengths", "seeds")}
    run.model.train()
    log(run, logged)
    return results["eval"]


def final_eval(run: Run, summary: dict) -> None:
    """Score the last checkpoint, print it beside the data's own return, write eval.json."""
    cfg, result = run.cfg, run_eval(run)
    print(f"{cfg.model} on {cfg.env} ({run.data_path.name}: mean return "
          f"{summary['return_mean']:.0f}, normalised {summary['return_mean_normalized']:.1f}), "
          f"step {run.step}:\n  {summary_line(result)}")
    write_eval(run, result)


# ----------------------------------------------------------------------------- the loop

def train_step(run: Run, forward, autocast) -> float:
    """One optimiser step on a fresh batch of windows; returns its loss."""
    batch = {k: v.to(run.device, non_blocking=True)
             for k, v in run.dataset.sample(run.cfg.batch_size, run.np_rng).items()}
    with autocast:
        _, loss = forward(batch["states"], batch["actions"], batch["returns_to_go"],
                          batch["timesteps"], batch["mask"], targets=batch["actions"])
    if not math.isfinite(loss_value := loss.item()):
        raise nan_error(run, f"loss became {loss_value} at step {run.step + 1}")
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    run.step += 1
    if run.ema is not None:
        update_ema(run)
    return loss_value


def train(cfg: TrainConfig) -> Path:
    """Train, checkpoint, evaluate; return the run folder. Raises TrainError / DataError /
    EvalError for problems the user can fix, and Stopped (a KeyboardInterrupt) after saving on
    Ctrl-C or SIGTERM."""
    check_config(cfg)
    run_dir = Path(cfg.out or default_out(asdict(cfg)))
    ckpt = check_run_folder(cfg, run_dir)
    run = build(cfg, run_dir, ckpt)  # loads the data and builds the model: nothing written yet
    with writing_to(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir), stop_requests(tqdm.write, "saving a checkpoint after this step (a "
                                         "second Ctrl-C or SIGTERM quits without it)") as stop:
        data_summary = start_files(run)
        forward = torch.compile(run.model) if cfg.compile else run.model
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if run.device.type == "cuda"
                    else nullcontext())
        run.model.train()
        losses, tick = [], time.perf_counter()
        bar = tqdm(total=cfg.steps, initial=run.step, desc=f"{cfg.model} {cfg.env}",
                   unit="step", dynamic_ncols=True)
        while run.step < cfg.steps and not stop:
            try:
                losses.append(train_step(run, forward, autocast))
            except (TrainError, MemoryError, RuntimeError) as e:
                bar.close()
                raise memory_error(run, e) if is_out_of_memory(e) else e
            bar.update(1)
            now = time.perf_counter()
            run.elapsed, tick = run.elapsed + now - tick, now
            if run.step % cfg.log_every == 0 or run.step == cfg.steps:
                bar.set_postfix(loss=f"{np.mean(losses):.4f}")
                log(run, {"step": run.step, "loss": float(np.mean(losses)),
                          "lr": run.scheduler.get_last_lr()[0], "time": round(run.elapsed, 3),
                          "steps_per_s": round(bar.format_dict["rate"] or 0, 2)})
                losses = []
            if cfg.eval_every and run.step % cfg.eval_every == 0 and run.step < cfg.steps:
                tqdm.write(f"step {run.step}: " + summary_line(run_eval(run)))
                save_checkpoint(run)
                tick = time.perf_counter()  # evaluation time is not training time
            elif run.step % cfg.save_every == 0:
                save_checkpoint(run)
            keep_checkpoint(run)
        bar.close()
        save_checkpoint(run)
        if run.step < cfg.steps:  # stopped by Ctrl-C or SIGTERM
            print(f"stopped at step {run.step} ({signal.Signals(stop[0]).name}); checkpoint "
                  f"saved in {run_dir}; continue with `python train.py --out "
                  f"{shlex.quote(str(run_dir))} --resume`")
            raise Stopped(stop[0])
        final_eval(run, data_summary)
    print(f"run folder: {run_dir}  (evaluate again: python evaluate.py "
          f"{shlex.quote(str(run_dir))} --episodes 100)")
    return run_dir


# ----------------------------------------------------------------------------- command line

def parse_config(argv=None) -> TrainConfig:
    """Flags -> TrainConfig. Values come from, lowest first: the defaults, --preset if given,
    the stored config of a run being resumed (so a preset never undoes what the run was started
    with, its --steps included), then the other flags given."""
    given = given_flags(TrainConfig, argv, "Train a Decision Transformer (--model dt) or "
                                           "Decision Mamba (--model mamba) and score it.")
    values = asdict(TrainConfig())
    values.update(PRESETS.get(given.get("preset"), {}))  # an unknown one: check_config says so
    if given.get("resume"):
        out = Path(given.get("out") or default_out({**values, **given}))
        if (out / "ckpt.pt").is_file():
            values.update({**OLD_RUN_DEFAULTS, **read_checkpoint(out / "ckpt.pt")["config"]})
    values.update(given)
    return TrainConfig(**values)


def main(argv=None) -> None:
    try:
        train(parse_config(argv))
    except (TrainError, DataError, EvalError, ModelError) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt as e:  # 128 + the signal: 130 for Ctrl-C, 143 for SIGTERM
        sys.exit(128 + getattr(e, "signum", signal.SIGINT))


if __name__ == "__main__":
    main()
