"""Evaluate a trained Decision Transformer / Decision Mamba in its MuJoCo env, all episodes at once.

The N episodes step together: one batched model call per env step decides the actions of every
episode still running, then each env steps; an episode that ends (fell = `terminated`, or reached
the time limit = `truncated`) drops out of the batch. Because every running episode is at the same
step t, their histories have the same length and need no padding.

Two ways to act:
  window     re-encode the last K steps each env step, exactly the windows seen in training
             (the Decision Transformer's way; also works for Mamba)
  recurrent  Mamba only: carry the backbone's fixed-size cache through the whole episode and feed
             three tokens per env step, at constant cost per step (the natural mode for a model
             trained on whole episodes, `--context full`)

Return conditioning: R_0 = target, R_{t+1} = R_t - r_t (both divided by return_scale); states are
normalised with the dataset's state mean/std saved in the checkpoint.

References (ideas, not code):
  Chen et al. 2021, "Decision Transformer" (return conditioning, rollout with a K-step window).
  CORL (Tarasov et al. 2022), dt.py (index convention comment, separate eval seeds).
  Fu et al. 2020, "D4RL" (normalised score).

Glossary of dimension letters:
  N  episodes evaluated together (rows still running: n <= N)
  T  the env's time limit (steps)        K  context length (env steps in a window)
  obs, act  observation and action sizes
"""
import argparse
import json
import os
import sys
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from data import ENVS, DataError, env_key, normalized_score
from dt import DecisionConfig, DecisionModel

MODES = ("window", "recurrent")
TARGET_RETURNS = {"hopper": 3600.0, "halfcheetah": 12000.0, "walker2d": 5000.0}
EVAL_SEED = 10_000  # episode i of an evaluation resets its env with seed EVAL_SEED + i


@dataclass
class EvalConfig:
    run_dir: str = field(metadata={"help": "run folder written by train.py (holds ckpt.pt)"})
    episodes: int = field(default=10, metadata={"help": "episodes, run together as one batch"})
    target: list = field(default=None, metadata={
        "help": "target return(s) to condition on; several give one result each (default: the "
                "run's target, else hopper 3600, halfcheetah 12000, walker2d 5000)",
        "nargs": "+", "type": float})
    mode: str = field(default="auto", metadata={
        "help": "auto | window | recurrent; auto = the run's eval mode (recurrent for a Mamba "
                "trained with --context full, window otherwise)"})
    seed: int = field(default=EVAL_SEED, metadata={"help": "episode i resets with seed SEED + i"})
    video: str = field(default=None, metadata={
        "help": "write episode 0 of the first target as a video (.mp4 needs imageio[ffmpeg], "
                ".gif works with Pillow); rendering uses MUJOCO_GL (egl unless set)"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda"})
    max_episode_steps: int = field(default=None, metadata={
        "help": "cut episodes at this many steps instead of the env's limit (1000); for quick checks",
        "type": int})


class EvalError(ValueError):
    """A problem the user can fix (missing run, bad option); the message says what to do."""


# ----------------------------------------------------------------------------- small pieces

def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda' without a GPU is an EvalError."""
    if device not in ("auto", "cpu", "cuda"):
        raise EvalError(f"unknown device {device!r}: choose auto, cpu or cuda.")
    if device == "cuda" and not torch.cuda.is_available():
        raise EvalError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu.")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def resolve_mode(mode: str, backbone: str, trained_full: bool) -> str:
    """auto -> recurrent for a Mamba trained on whole episodes, window otherwise."""
    if mode == "auto":
        return "recurrent" if backbone == "mamba" and trained_full else "window"
    if mode not in MODES:
        raise EvalError(f"unknown mode {mode!r}: choose auto, window or recurrent.")
    if mode == "recurrent" and backbone != "mamba":
        raise EvalError("recurrent mode needs a Mamba model (this run is a Decision Transformer); "
                        "use --mode window.")
    return mode


def _select_rows(cache, keep):
    """The batch rows `keep` of every tensor in a nested (list / tuple) recurrent cache."""
    if cache is None:  # e.g. no action token queued yet
        return None
    if isinstance(cache, torch.Tensor):
        return cache[keep]
    return type(cache)(_select_rows(part, keep) for part in cache)


def _write_video(path: Path, frames: list, fps: float) -> None:
    import imageio  # only videos need it (it comes with gymnasium[mujoco])
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        imageio.mimsave(path, frames, **({"fps": fps} if path.suffix == ".mp4" else
                                         {"duration": 1000 / fps, "loop": 0}))
    except (ValueError, ImportError) as e:  # imageio's way of saying "no plugin for .mp4"
        raise EvalError(f"cannot write {path} ({str(e).splitlines()[0]}); install an mp4 writer "
                        "with `pip install imageio[ffmpeg]` or pass a .gif path.") from None


def load_run(run_dir, device="cpu"):
    """Rebuild the model of a run folder from its ckpt.pt -> (model in eval mode, checkpoint)."""
    run_dir = Path(run_dir)
    path = run_dir / "ckpt.pt"
    if not path.is_file():
        where = "does not exist" if not run_dir.exists() else "has no ckpt.pt"
        raise EvalError(f"{run_dir} {where}; pass a run folder made by train.py "
                        "(e.g. runs/mamba-hopper-medium-s0).")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        model = DecisionModel(DecisionConfig(**ckpt["model_config"]))
        model.load_state_dict(ckpt["model"])
        env_key(ckpt["env"])
    except Exception as e:  # unreadable, truncated, or not ours: say so in one sentence
        raise EvalError(f"{path} is not a readable train.py checkpoint ({type(e).__name__}); "
                        "retrain it or pass another run folder.") from None
    return model.to(device).eval(), ckpt


# ----------------------------------------------------------------------------- the rollout

@torch.inference_mode()
def evaluate(model, env, state_mean, state_std, return_scale, target_return, episodes=10,
             seed=EVAL_SEED, mode="window", context_len=20, device="cpu",
             max_episode_steps=None, video=None, progress=False, env_kwargs=None) -> dict:
    """Run `episodes` episodes of `env` as one batch, conditioned on `target_return`.

    Returns plain numbers: mean/std of return and D4RL-normalised score, the fractions that fell
    (terminated) and that reached the time limit (truncated), episode lengths, seeds, mode, wall
    time. `video` (a path) records episode 0; env_kwargs go to gym.make (e.g.
    terminate_when_unhealthy=False for fixed-length timing runs).
    """
    env = env_key(env)
    if mode not in MODES:
        raise EvalError(f"unknown mode {mode!r}: choose window or recurrent.")
    start_time = time.perf_counter()
    device = torch.device(device)
    model.eval()
    seeds = [seed + i for i in range(episodes)]
    envs = [gym.make(ENVS[env], max_episode_steps=max_episode_steps,
                     render_mode="rgb_array" if video and i == 0 else None, **(env_kwargs or {}))
            for i in range(episodes)]
    horizon = envs[0].spec.max_episode_steps  # T
    low = torch.as_tensor(envs[0].action_space.low, device=device)  # (act,)
    high = torch.as_tensor(envs[0].action_space.high, device=device)  # (act,)
    mean = torch.as_tensor(state_mean, dtype=torch.float32, device=device)  # (obs,)
    std = torch.as_tensor(state_std, dtype=torch.float32, device=device)  # (obs,)
    last_time = model.config.max_ep_len - 1  # timesteps past the embedding table are clipped

    obs = np.stack([e.reset(seed=s)[0] for e, s in zip(envs, seeds)])  # (N, obs) f64
    rows = np.arange(episodes)  # episode index of each batch row still running
    returns, lengths = np.zeros(episodes), np.zeros(episodes, dtype=np.int64)
    fell, cut = np.zeros(episodes, dtype=bool), np.zeros(episodes, dtype=bool)
    rtg = torch.full((episodes, 1), target_return / return_scale, device=device)  # (n, 1)
    if mode == "window":
        # Index convention: at env step t the model reads steps max(0, t-K+1) .. t, i.e.
        # (R_i, s_i, a_i) for those i, and predicts a_t at the output of s_t. The slot a_t is
        # still zero when read; the causal backbone cannot see it from s_t anyway.
        history_states = torch.zeros(episodes, horizon, len(mean), device=device)  # (N, T, obs)
        history_actions = torch.zeros(episodes, horizon, len(low), device=device)  # (N, T, act)
        history_rtg = torch.zeros(episodes, horizon, 1, device=device)  # (N, T, 1)
    else:
        cache = model.init_cache(episodes, device)  # fixed size, whatever t is
    frames = [envs[0].render()] if video else []

    bar = tqdm(total=horizon, desc=f"eval {env} x{episodes}", leave=False, disable=not progress)
    for t in range(horizon):
        states = (torch.as_tensor(obs, dtype=torch.float32, device=device) - mean) / std  # (n, obs)
        if mode == "window":
            history_states[:, t], history_rtg[:, t] = states, rtg
            lo = max(0, t + 1 - context_len)
            window_time = torch.arange(lo, t + 1, device=device).clamp(max=last_time)  # (k,)
            action_pred, _ = model(history_states[:, lo:t + 1], history_actions[:, lo:t + 1],
                                   history_rtg[:, lo:t + 1], window_time.expand(len(rows), -1),
                                   torch.ones(len(rows), t + 1 - lo, device=device),
                                   last_only=True)  # (n, 1, act)
            action = action_pred[:, -1].float()  # (n, act), read at s_t
        else:
            timestep = torch.full((len(rows),), min(t, last_time), device=device)  # (n,)
            action, cache = model.step(rtg, states, timestep, cache)  # (n, act)
            action = action.float()
        action = action.clamp(low, high)  # (n, act)
        if mode == "window":
            history_actions[:, t] = action
        else:
            cache = model.step_action(action, timestep, cache)  # a_t enters the cache

        actions = action.cpu().numpy()  # (n, act)
        rewards, done = np.zeros(len(rows)), np.zeros(len(rows), dtype=bool)  # (n,)
        for i, episode in enumerate(rows):
            obs[i], rewards[i], terminated, truncated, _ = envs[episode].step(actions[i])
            fell[episode], cut[episode] = terminated, truncated and not terminated
            done[i] = terminated or truncated
        if video and rows[0] == 0:
            frames.append(envs[0].render())
        returns[rows] += rewards
        lengths[rows] += 1
        rtg = rtg - torch.as_tensor(rewards / return_scale, dtype=torch.float32,
                                    device=device)[:, None]  # R_{t+1} = R_t - r_t
        if done.any():  # finished episodes leave the batch
            keep = ~done
            keep_t = torch.as_tensor(keep, device=device)
            rows, obs, rtg = rows[keep], obs[keep], rtg[keep_t]
            if mode == "window":
                history_states, history_actions, history_rtg = (
                    history_states[keep_t], history_actions[keep_t], history_rtg[keep_t])
            else:
                cache = _select_rows(cache, keep_t)
        bar.update(1)
        bar.set_postfix(running=len(rows), refresh=False)
        if len(rows) == 0:
            break
    bar.close()
    for e in envs:
        e.close()
    if video:
        _write_video(Path(video), frames, envs[0].metadata.get("render_fps", 30))

    scores = normalized_score(env, returns)
    return {
        "env": env, "target_return": float(target_return), "mode": mode, "episodes": episodes,
        "return_mean": float(returns.mean()), "return_std": float(returns.std()),
        "score_mean": float(scores.mean()), "score_std": float(scores.std()),
        "fell": float(fell.mean()), "truncated": float(cut.mean()),
        "length_mean": float(lengths.mean()), "env_steps": int(lengths.sum()),
        "wall_time_s": time.perf_counter() - start_time,
        "returns": returns.round(2).tolist(), "lengths": lengths.tolist(), "seeds": seeds,
    }


def summary_line(result: dict) -> str:
    """One human line for a result of evaluate()."""
    return (f"target {result['target_return']:g}: return {result['return_mean']:.1f} +- "
            f"{result['return_std']:.1f}, normalised score {result['score_mean']:.1f} +- "
            f"{result['score_std']:.1f} ({result['episodes']} episodes, {result['mode']} mode, "
            f"{100 * result['fell']:.0f}% fell, {100 * result['truncated']:.0f}% reached the "
            f"time limit, mean length {result['length_mean']:.0f}, {result['wall_time_s']:.1f} s)")


def evaluate_run(cfg: EvalConfig) -> dict:
    """Load a run folder, evaluate it for each target, write RUN_DIR/eval.json; return it."""
    device = resolve_device(cfg.device)
    if cfg.episodes < 1:
        raise EvalError(f"--episodes must be at least 1, got {cfg.episodes}.")
    model, ckpt = load_run(cfg.run_dir, device)
    train_cfg = ckpt["config"]
    mode = resolve_mode(train_cfg.get("eval_mode", "auto") if cfg.mode == "auto" else cfg.mode,
                        model.config.backbone, train_cfg.get("context") == "full")
    targets = cfg.target or [train_cfg.get("target") or TARGET_RETURNS[ckpt["env"]]]
    if cfg.video:
        os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; read when MuJoCo renders
    results = [evaluate(model, ckpt["env"], ckpt["state_mean"], ckpt["state_std"],
                        ckpt["return_scale"], target, episodes=cfg.episodes, seed=cfg.seed,
                        mode=mode, context_len=model.config.context_len, device=device,
                        max_episode_steps=cfg.max_episode_steps,
                        video=cfg.video if i == 0 else None, progress=True)
               for i, target in enumerate(targets)]
    report = {"run_dir": str(cfg.run_dir), "env": ckpt["env"], "model": train_cfg.get("model"),
              "step": ckpt["step"], "device": str(device), "config": asdict(cfg),
              "results": results}
    path = Path(cfg.run_dir) / "eval.json"
    tmp = path.with_name(f".eval.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, path)
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Evaluate a train.py run folder in its env "
                                                 "(all episodes as one batch); writes eval.json.")
    for f in fields(EvalConfig):
        extra = {k: v for k, v in f.metadata.items() if k != "help"}
        if f.default is MISSING:
            parser.add_argument(f.name, help=f.metadata["help"])
        else:
            parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=f.default,
                                help=f.metadata["help"] + ("" if f.default is None
                                                           else " (default: %(default)s)"),
                                **({"type": type(f.default)} if f.default is not None else {}),
                                **extra)
    cfg = EvalConfig(**vars(parser.parse_args(argv)))
    try:
        report = evaluate_run(cfg)
    except (EvalError, DataError) as e:
        sys.exit(f"error: {e}")
    print(f"{report['run_dir']} ({report['model']}, {report['env']}, step {report['step']}):")
    for result in report["results"]:
        print("  " + summary_line(result))
    print(f"wrote {Path(cfg.run_dir) / 'eval.json'}")


if __name__ == "__main__":
    main()
