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
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from cli import WriteError, option, one_sentence_write_errors, parse_config, \
    refuse_to_replace, write_json
from data import ENVS, POSITIONS, TARGET_RETURNS, TEST_SEED, VALIDATION_SEED, DataError, \
    env_key, normalized_score
from dt import DecisionConfig, DecisionModel, ModelError, resolve_device

MODES = ("window", "recurrent")
VARIANT_DEFAULTS = {"obs": "full", "reward": "dense"}  # a run's variant (train.py --obs, --reward)
EVAL_SEED = VALIDATION_SEED  # the name older callers import (the seeds live in data.py)


@dataclass
class EvalConfig:
    run_dir: str = option(None, "run folder written by train.py (holds ckpt.pt)", positional=True)
    episodes: int = option(10, "episodes, run together as one batch")
    target: list = option(None, "target return(s) to condition on; several give one result "
                                "each (default: the run's target, else hopper 3600, halfcheetah "
                                "12000, walker2d 5000)", type=float, nargs="+")
    mode: str = option("auto", "auto | window | recurrent; auto = the run's eval mode (recurrent "
                               "for a Mamba trained with --context full, window otherwise)")
    seed: int = option(TEST_SEED, f"episode i resets with seed SEED + i; test seeds are "
                                   f"{TEST_SEED} and above, validation seeds below")
    weights: str = option("raw", "raw | ema: the trained weights, or their moving average "
                                 "(a run trained with train.py --ema)")
    last: int = option(1, "score the mean over the run's last K kept checkpoints (train.py "
                          "--keep-last K), each on the same episodes; 1: the last checkpoint")
    video: str = option(None, "write episode 0 of the first target as a video (.mp4 needs "
                              "imageio[ffmpeg], .gif works with Pillow); rendering uses MUJOCO_GL "
                              "(egl unless set)", type=str)
    device: str = option("auto", "auto | cpu | cuda")
    max_episode_steps: int = option(None, "cut episodes at this many steps instead of the env's "
                                          "limit (1000); for quick checks", type=int)
    out: str = option(None, "write the results here instead of RUN_DIR/eval.json (e.g. a sweep "
                            "of targets beside the run's own evaluation)", type=str)
    force: bool = option(False, "replace --out even if evaluate.py did not write it (or git "
                                "tracks it)")


class EvalError(ValueError):
    """A problem the user can fix (missing run, bad option); the message says what to do."""


# ----------------------------------------------------------------------------- small pieces

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


class VariantEnv(gym.Wrapper):
    """The env as a variant's data shows it (data.apply_variant): positions only keeps the first
    POSITIONS[env] entries of each observation; delayed reward gives 0 at every step and the
    episode's whole return at its last, so the sum, and the score, stay the true return."""

    def __init__(self, env, name: str, obs="full", reward="dense"):
        super().__init__(env)
        self.keep = POSITIONS[env_key(name)] if obs == "positions" else None
        self.delayed, self.held = reward == "delayed", 0.0
        if self.keep is not None:
            self.observation_space = gym.spaces.Box(
                env.observation_space.low[:self.keep], env.observation_space.high[:self.keep])

    def reset(self, **kwargs):
        self.held = 0.0
        obs, info = self.env.reset(**kwargs)
        return obs[:self.keep], info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.delayed:
            self.held += reward
            reward = self.held if terminated or truncated else 0.0
        return obs[:self.keep], reward, terminated, truncated, info


def _write_video(path: Path, frames: list, fps: float) -> None:
    import imageio  # only videos need it (it comes with gymnasium[mujoco])
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        imageio.mimsave(path, frames, **({"fps": fps} if path.suffix == ".mp4" else
                                         {"duration": 1000 / fps, "loop": 0}))
    except (ValueError, ImportError) as e:  # imageio's way of saying "no plugin for .mp4"
        raise EvalError(f"cannot write {path} ({str(e).splitlines()[0]}); install an mp4 writer "
                        "with `pip install imageio[ffmpeg]` or pass a .gif path.") from None


def load_run(run_dir, device="cpu", weights="raw", path=None):
    """Rebuild the model of a run folder from its ckpt.pt (or `path`, one of its kept
    checkpoints) with its raw or EMA weights -> (model in eval mode, checkpoint)."""
    run_dir = Path(run_dir)
    path = Path(path) if path else run_dir / "ckpt.pt"
    if not path.is_file():
        where = "does not exist" if not run_dir.exists() else f"has no {path.name}"
        raise EvalError(f"{run_dir} {where}; pass a run folder made by train.py "
                        "(e.g. runs/mamba-hopper-medium-s0).")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        # runs saved before the activation became a setting trained the GPT with GELU
        model = DecisionModel(DecisionConfig(**{"activation": "gelu", **ckpt["model_config"]}))
        env_key(ckpt["env"])
    except ModelError as e:  # e.g. DM_SCAN_BACKEND names no usable scan: its own sentence
        raise EvalError(str(e)) from None
    except Exception as e:  # unreadable, truncated, or not ours: say so in one sentence
        raise EvalError(f"{path} is not a readable train.py checkpoint ({type(e).__name__}); "
                        "retrain it or pass another run folder.") from None
    if weights == "ema" and ckpt.get("ema") is None:
        raise EvalError(f"{run_dir} was trained without --ema, so it has no averaged weights; "
                        "use --weights raw, or train with --ema 0.999.")
    try:
        model.load_state_dict(ckpt["ema" if weights == "ema" else "model"])
    except Exception as e:
        raise EvalError(f"{path} holds weights of another shape ({type(e).__name__}); retrain "
                        "it or pass another run folder.") from None
    return model.to(device).eval(), ckpt


def kept_checkpoints(run_dir, last: int) -> list:
    """The last `last` checkpoints train.py --keep-last kept in RUN_DIR/checkpoints/, oldest
    first; [ckpt.pt] for last=1."""
    run_dir = Path(run_dir)
    if last == 1:
        return [run_dir / "ckpt.pt"]
    kept = sorted((run_dir / "checkpoints").glob("step-*.pt"))[-last:]
    if len(kept) < last:
        raise EvalError(f"{run_dir} kept {len(kept)} checkpoints, fewer than --last {last}; "
                        f"train with --keep-last {last} or pass --last {max(1, len(kept))}.")
    return kept


def check_kept(cfg, ckpts: list) -> None:
    """The checkpoints --last K averages must be the run's last K, --keep-every apart, and ask
    for the same targets and mode (a run resumed with another --steps or --target would mix)."""
    steps, train_cfg = [c["step"] for c in ckpts], ckpts[-1]["config"]
    every, final = train_cfg.get("keep_every", 0), train_cfg.get("steps")
    if len(ckpts) > 1 and steps != [final - every * i for i in reversed(range(len(ckpts)))]:
        raise EvalError(f"{cfg.run_dir}'s last {len(ckpts)} kept checkpoints are at steps "
                        f"{', '.join(map(str, steps))}, not {every} apart up to its last step "
                        f"{final} (unfinished, or resumed with another --steps): train it to the "
                        "end, or pass --last 1.")
    asked = {(c["config"].get("target"), c["config"].get("eval_mode")) for c in ckpts}
    if len(asked) > 1 and (cfg.target is None or cfg.mode == "auto"):
        raise EvalError(f"{cfg.run_dir}'s kept checkpoints were trained with different targets or "
                        "evaluation modes; pass --target and --mode to score them alike.")


def mean_over_checkpoints(results: list, steps: list) -> dict:
    """One result from the same evaluation of several checkpoints: means of their means (the
    score of the estimator), stds over all their episodes (`episodes_pooled` of them; `episodes`
    stays the count per checkpoint), each checkpoint's summary kept."""
    pooled = {k: float(np.mean([r[k] for r in results]))
              for k in ("return_mean", "score_mean", "fell", "truncated", "length_mean")}
    returns = np.concatenate([r["returns"] for r in results])
    scores = np.concatenate([normalized_score(results[0]["env"], np.array(r["returns"]))
                             for r in results])
    return {**results[0], **pooled, "return_std": float(returns.std()),
            "score_std": float(scores.std()), "episodes_pooled": len(returns),
            "env_steps": sum(r["env_steps"] for r in results),
            "wall_time_s": sum(r["wall_time_s"] for r in results), "checkpoint_steps": steps,
            "per_checkpoint": [{k: v for k, v in r.items() if k not in ("lengths", "seeds")}
                               for r in results], "returns": returns.round(2).tolist(),
            "lengths": [n for r in results for n in r["lengths"]]}


def seed_split(seed: int, episodes: int) -> str:
    """'test' or 'validation': which of the two seed ranges episodes seed.. seed+episodes-1 use."""
    if seed >= TEST_SEED:
        return "test"
    if seed + episodes <= TEST_SEED:
        return "validation"
    raise EvalError(f"seeds {seed}..{seed + episodes - 1} straddle the test seeds (from "
                    f"{TEST_SEED}); start at {TEST_SEED} to test, or lower to validate.")


# ----------------------------------------------------------------------------- the rollout

class WindowActor:
    """Re-encode the last K steps at every env step, exactly the windows seen in training.

    Index convention: at env step t the model reads steps max(0, t-K+1) .. t, i.e. (R_i, s_i,
    a_i) for those i, and predicts a_t at the output of s_t. The slot a_t is still zero when
    read; the causal backbone cannot see it from s_t anyway."""

    def __init__(self, model, episodes, horizon, obs_dim, act_dim, device):
        self.model, self.context_len = model, model.config.context_len
        self.last_time = model.config.max_ep_len - 1  # timesteps past the table are clipped
        self.states = torch.zeros(episodes, horizon, obs_dim, device=device)  # (N, T, obs)
        self.actions = torch.zeros(episodes, horizon, act_dim, device=device)  # (N, T, act)
        self.rtg = torch.zeros(episodes, horizon, 1, device=device)  # (N, T, 1)

    def act(self, rtg, states, t):  # (n, 1), (n, obs) -> (n, act)
        self.states[:, t], self.rtg[:, t] = states, rtg
        lo, n = max(0, t + 1 - self.context_len), len(states)
        times = torch.arange(lo, t + 1, device=states.device).clamp(max=self.last_time)  # (k,)
        action_pred, _ = self.model(self.states[:, lo:t + 1], self.actions[:, lo:t + 1],
                                    self.rtg[:, lo:t + 1], times.expand(n, -1),
                                    torch.ones(n, t + 1 - lo, device=states.device),
                                    last_only=True)  # (n, 1, act)
        return action_pred[:, -1]

    def took(self, action, t):  # the action sent to the env fills the slot a_t
        self.actions[:, t] = action

    def keep(self, rows):  # rows (n,) bool: the episodes still running
        self.states, self.actions, self.rtg = self.states[rows], self.actions[rows], self.rtg[rows]


class RecurrentActor:
    """Mamba only: carry the backbone's fixed-size cache through the episode; R_t and s_t go
    in before the action is read at s_t, a_t goes in after it is chosen: constant cost per step."""

    def __init__(self, model, episodes, device):
        self.model, self.last_time = model, model.config.max_ep_len - 1
        self.cache = model.init_cache(episodes, device)  # fixed size, whatever t is

    def _time(self, n, t, device):
        return torch.full((n,), min(t, self.last_time), device=device)  # (n,)

    def act(self, rtg, states, t):  # (n, 1), (n, obs) -> (n, act)
        action, self.cache = self.model.step(rtg, states, self._time(len(states), t,
                                                                     states.device), self.cache)
        return action

    def took(self, action, t):  # a_t enters the cache
        self.cache = self.model.step_action(action, self._time(len(action), t, action.device),
                                            self.cache)

    def keep(self, rows):
        self.cache = _select_rows(self.cache, rows)


@torch.inference_mode()
def evaluate(model, env, state_mean, state_std, return_scale, target_return, episodes=10,
             seed=TEST_SEED, mode="window", context_len=None, device="cpu",
             max_episode_steps=None, video=None, progress=False, env_kwargs=None,
             variant=None) -> dict:
    """Run `episodes` episodes of `env` as one batch, conditioned on `target_return`.

    Returns plain numbers: mean/std of return and D4RL-normalised score, the fractions that fell
    (terminated) and that reached the time limit (truncated), episode lengths, seeds, mode, wall
    time. `video` (a path) records episode 0; env_kwargs go to gym.make (e.g.
    terminate_when_unhealthy=False for fixed-length timing runs); variant ({"obs", "reward"})
    wraps each env as the model's training data was transformed (VariantEnv). The window is the
    model's context length (context_len is accepted for older callers and must agree).
    """
    env = env_key(env)
    if mode not in MODES:
        raise EvalError(f"unknown mode {mode!r}: choose window or recurrent.")
    if context_len is not None and context_len != model.config.context_len:
        raise EvalError(f"context_len {context_len} differs from the model's "
                        f"{model.config.context_len}; pass the model's.")
    start_time = time.perf_counter()
    device = torch.device(device)
    model.eval()
    seeds = [seed + i for i in range(episodes)]
    envs = [VariantEnv(gym.make(ENVS[env], max_episode_steps=max_episode_steps,
                                render_mode="rgb_array" if video and i == 0 else None,
                                **(env_kwargs or {})), env, **(variant or {}))
            for i in range(episodes)]
    horizon = envs[0].spec.max_episode_steps  # T
    low = torch.as_tensor(envs[0].action_space.low, device=device)  # (act,)
    high = torch.as_tensor(envs[0].action_space.high, device=device)  # (act,)
    mean = torch.as_tensor(state_mean, dtype=torch.float32, device=device)  # (obs,)
    std = torch.as_tensor(state_std, dtype=torch.float32, device=device)  # (obs,)
    actor = (WindowActor(model, episodes, horizon, len(mean), len(low), device)
             if mode == "window" else RecurrentActor(model, episodes, device))

    obs = np.stack([e.reset(seed=s)[0] for e, s in zip(envs, seeds)])  # (N, obs) f64
    rows = np.arange(episodes)  # episode index of each batch row still running
    returns, lengths = np.zeros(episodes), np.zeros(episodes, dtype=np.int64)
    fell, cut = np.zeros(episodes, dtype=bool), np.zeros(episodes, dtype=bool)
    rtg = torch.full((episodes, 1), target_return / return_scale, device=device)  # (n, 1)
    frames = [envs[0].render()] if video else []
    bar = tqdm(total=horizon, desc=f"eval {env} x{episodes}", leave=False, disable=not progress)
    for t in range(horizon):
        states = (torch.as_tensor(obs, dtype=torch.float32, device=device) - mean) / std  # (n, obs)
        action = actor.act(rtg, states, t).float().clamp(low, high)  # (n, act)
        actor.took(action, t)
        actions = action.cpu().numpy()  # (n, act)
        rewards, done = np.zeros(len(rows)), np.zeros(len(rows), dtype=bool)  # (n,)
        for i, episode in enumerate(rows):
            obs[i], rewards[i], terminated, truncated, _ = envs[episode].step(actions[i])
            fell[episode], cut[episode] = terminated, truncated and not terminated
            done[i] = terminated or truncated
        if video and rows[0] == 0:
            frames.append(envs[0].render())
        # exercise 8: begin
        returns[rows] += rewards
        lengths[rows] += 1
        rtg = rtg - torch.as_tensor(rewards / return_scale, dtype=torch.float32,
                                    device=device)[:, None]  # R_{t+1} = R_t - r_t
        if done.any():  # finished episodes leave the batch
            keep = torch.as_tensor(~done, device=device)
            rows, obs, rtg = rows[~done], obs[~done], rtg[keep]
            actor.keep(keep)
        # exercise 8: end
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


def check_config(cfg: EvalConfig) -> None:
    if cfg.episodes < 1:
        raise EvalError(f"--episodes must be at least 1, got {cfg.episodes}.")
    if not 0 <= cfg.seed < 2**32 - cfg.episodes:
        raise EvalError(f"--seed must be 0 or more (and below 2**32), got {cfg.seed}.")
    if cfg.max_episode_steps is not None and cfg.max_episode_steps < 1:
        raise EvalError(f"--max-episode-steps must be at least 1, got {cfg.max_episode_steps}.")
    if cfg.weights not in ("raw", "ema"):
        raise EvalError(f"unknown --weights {cfg.weights!r}: choose raw or ema.")
    if cfg.last < 1:
        raise EvalError(f"--last must be at least 1, got {cfg.last}.")
    if cfg.last > 1 and cfg.video:
        raise EvalError("--video records one checkpoint; drop --last or --video.")
    seed_split(cfg.seed, cfg.episodes)
    for target in cfg.target or []:
        if not math.isfinite(target):
            raise EvalError(f"--target must be a finite return, got {target}.")


def written_by_us(path) -> bool:
    """True if path is an evaluation report (eval.json / targets.json) of this project."""
    report = json.loads(Path(path).read_text())
    return isinstance(report, dict) and {"run_dir", "results", "config"} <= report.keys()


def stop_on_sigterm(signum, frame):
    """SIGTERM (kill, a cluster's time limit) ends an evaluation as Ctrl-C does: nothing half
    written, one sentence."""
    raise KeyboardInterrupt


def evaluate_run(cfg: EvalConfig) -> dict:
    """Load a run folder, evaluate it for each target, print the results, then write
    RUN_DIR/eval.json (or --out); return the report."""
    check_config(cfg)
    device = resolve_device(cfg.device)
    out = Path(cfg.out) if cfg.out else Path(cfg.run_dir) / "eval.json"
    try:  # before the work: a refusal after an hour of rollouts would waste it
        refuse_to_replace(out, cfg.force, ours=written_by_us)
    except WriteError as e:
        raise EvalError(str(e).rstrip(".") + " (--out).") from None
    per_checkpoint, steps = [], []  # [checkpoint][target] results
    loaded = [load_run(cfg.run_dir, device, cfg.weights, path)
              for path in kept_checkpoints(cfg.run_dir, cfg.last)]
    check_kept(cfg, [ckpt for _, ckpt in loaded])
    for model, ckpt in loaded:
        train_cfg = ckpt["config"]
        mode = resolve_mode(train_cfg.get("eval_mode", "auto") if cfg.mode == "auto" else
                            cfg.mode, model.config.backbone, train_cfg.get("context") == "full")
        targets = cfg.target or [train_cfg.get("target") or TARGET_RETURNS[ckpt["env"]]]
        if cfg.video:
            os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering, read when it renders
        per_checkpoint.append([
            evaluate(model, ckpt["env"], ckpt["state_mean"], ckpt["state_std"],
                     ckpt["return_scale"], target, episodes=cfg.episodes, seed=cfg.seed,
                     mode=mode, device=device, max_episode_steps=cfg.max_episode_steps,
                     video=cfg.video if i == 0 else None, progress=True,
                     variant={k: train_cfg.get(k, d) for k, d in VARIANT_DEFAULTS.items()})
            for i, target in enumerate(targets)])
        steps.append(ckpt["step"])
    results = (per_checkpoint[0] if cfg.last == 1 else  # zip: [target][checkpoint]
               [mean_over_checkpoints(list(each), steps) for each in zip(*per_checkpoint)])
    estimator = ("last checkpoint" if cfg.last == 1 else
                 f"mean over the last {cfg.last} checkpoints (steps {', '.join(map(str, steps))})")
    report = {"run_dir": str(cfg.run_dir), "env": ckpt["env"], "model": train_cfg.get("model"),
              "step": ckpt["step"], "device": str(device),
              "config": {**asdict(cfg), "seeds": seed_split(cfg.seed, cfg.episodes),
                         "estimator": f"{estimator}, {cfg.weights} weights"},
              "results": results}
    print(f"{report['run_dir']} ({report['model']}, {report['env']}, step {report['step']}, "
          f"{report['config']['estimator']}, {report['config']['seeds']} seeds):")
    for result in results:
        print("  " + summary_line(result))
    try:
        with one_sentence_write_errors(out):
            write_json(out, report)
    except WriteError as e:
        raise EvalError(f"{str(e).rstrip('.')} (the results are printed above).") from None
    print(f"wrote {out}")
    return report


def main(argv=None) -> None:
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        evaluate_run(parse_config(EvalConfig, argv, "Evaluate a train.py run folder in its env "
                                                    "(all episodes as one batch); writes "
                                                    "eval.json."))
    except (EvalError, DataError, ModelError) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit("stopped before the results were written; nothing was written.")


if __name__ == "__main__":
    main()
