"""CPU benchmark of the two DecisionModels at their default sizes, in one process.

1. Training step (forward + backward + AdamW step), batch 64, K = 20: DT vs Decision Mamba on
   the default CPU scan backend (the C kernels of scan_cpu.c where they build) and, alongside,
   on the PyTorch scan (DM_SCAN_BACKEND=torch picks that one as the default instead).
2. Inference cost per env step at batch 1 (and a vectorised batch): the DT re-encodes its
   20-step window (60 tokens) for every action; the Mamba feeds R_t, s_t (-> action) and then
   a_t to its recurrent cache. Both are timed at episode positions t = 20 and t = 1000 to show
   that the Mamba's cost does not grow with t.

Run:  OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_models_cpu.py [--threads 1] [--out F]
Prints medians over repeats (cases interleaved), the ratios, and the machine/library versions;
--out writes JSON.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

# Appended, not prepended: the repo's profile.py must not shadow the standard library's
# `profile`, which torch.optim imports (via torch._dynamo and cProfile).
sys.path.append(str(Path(__file__).resolve().parents[1]))
from dt import DecisionConfig, DecisionModel, count_parameters  # noqa: E402
from ssm import MambaBlock, default_scan_backend  # noqa: E402


@dataclass
class BenchConfig:
    state_dim: int = field(default=11, metadata={"help": "observation size (Hopper: 11)"})
    act_dim: int = field(default=3, metadata={"help": "action size (Hopper: 3)"})
    batch: int = field(default=64, metadata={"help": "training batch size"})
    context_len: int = field(default=20, metadata={"help": "K, env steps per window"})
    train_repeats: int = field(default=15, metadata={"help": "timed training steps per model "
                                                             "(0 skips the training benchmark)"})
    repeats: int = field(default=200, metadata={"help": "timed env steps per inference case"})
    warmup: int = field(default=3, metadata={"help": "untimed repeats before each measurement"})
    positions: str = field(default="20,1000", metadata={"help": "episode positions t at which "
                                                                "both models are timed"})
    infer_batches: str = field(default="1,32", metadata={"help": "batch sizes (episodes run "
                                                                 "together) for inference"})
    threads: int = field(default=0, metadata={"help": "torch threads (0 = torch's default)"})
    seed: int = field(default=0, metadata={"help": "seed for weights and inputs"})
    out: str = field(default="", metadata={"help": "write the results as JSON here (optional)"})


def interleaved_times(cases, repeats, warmup):
    """Time each case `repeats` times, round-robin, so that load from other processes on a
    shared machine falls on all cases alike. -> {name: {"wall": median s, "wall_min": min s,
    "cpu": median process CPU s}}; CPU time (all threads of this process) is what a case costs
    when other processes take turns on the cores, wall time is what a user waits."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    wall, cpu = ({name: [] for name in cases} for _ in range(2))
    for _ in range(repeats):
        for name, fn in cases.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    return {name: {"wall": statistics.median(wall[name]), "wall_min": min(wall[name]),
                   "cpu": statistics.median(cpu[name])} for name in cases}


def ms(times):
    return (f"{times['wall'] * 1e3:.2f} ms (min {times['wall_min'] * 1e3:.2f}, "
            f"cpu {times['cpu'] * 1e3:.2f})")


def make_model(cfg, backbone, scan_backend=None):
    torch.manual_seed(cfg.seed)
    model = DecisionModel(DecisionConfig(state_dim=cfg.state_dim, act_dim=cfg.act_dim,
                                         backbone=backbone, context_len=cfg.context_len))
    for module in model.modules():
        if isinstance(module, MambaBlock):
            module.scan_backend = scan_backend
    return model


def random_window(cfg, batch, t0=0):
    B, K = batch, cfg.context_len
    return dict(states=torch.randn(B, K, cfg.state_dim),
                actions=torch.rand(B, K, cfg.act_dim) * 2 - 1,
                returns_to_go=torch.rand(B, K, 1) * 3,
                timesteps=(torch.arange(K) + t0).repeat(B, 1),
                mask=torch.ones(B, K))


def train_step_fn(cfg, backbone, scan_backend=None):
    """One training step: forward + backward + AdamW step, batch cfg.batch, K steps."""
    model = make_model(cfg, backbone, scan_backend).train()
    optimizer = torch.optim.AdamW(model.optim_groups(0.1), lr=1e-4)
    inputs = random_window(cfg, cfg.batch)

    def train_step():
        _, loss = model(**inputs, targets=inputs["actions"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return train_step


def dt_window_fn(cfg, t, batch):
    """One env step of window-mode inference at episode position t: re-encode the last K steps
    (3K tokens) and read the last action."""
    model = make_model(cfg, "gpt").eval()
    inputs = random_window(cfg, batch, t0=t + 1 - cfg.context_len)

    @torch.inference_mode()
    def env_step():
        return model(**inputs, last_only=True)[0][:, -1]  # as evaluate.py acts
    return env_step


def mamba_recurrent_fn(cfg, t, batch):
    """One env step of recurrent inference at episode position t: R_t, s_t -> action, then a_t.
    The cache is first brought to position t; every timed step starts from that cache."""
    model = make_model(cfg, "mamba").eval()
    state, rtg = torch.randn(batch, cfg.state_dim), torch.ones(batch, 1)

    @torch.inference_mode()
    def env_step(cache, position):
        timestep = torch.full((batch,), position)
        action, cache = model.step(rtg, state, timestep, cache)
        return model.step_action(action, timestep, cache)
    cache = model.init_cache(batch, torch.device("cpu"))
    for position in range(t):
        cache = env_step(cache, position)
    return lambda: env_step(cache, t)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in fields(BenchConfig):
        parser.add_argument(f"--{f.name}", type=type(f.default), default=f.default,
                            help=f.metadata["help"])
    cfg = BenchConfig(**vars(parser.parse_args()))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    positions = [int(p) for p in cfg.positions.split(",")]
    print(f"python {platform.python_version()}, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch threads {torch.get_num_threads()}, device cpu")
    counts = {b: count_parameters(make_model(cfg, b)) for b in ("gpt", "mamba")}
    print(f"parameters without the timestep table: DT {counts['gpt']:,}, "
          f"Mamba {counts['mamba']:,} (ratio {counts['mamba'] / counts['gpt']:.3f})")

    train = {}
    default = default_scan_backend("cpu")              # what train.py runs: "c" where it builds
    print(f"Mamba scan backend by default here: {default}")
    if cfg.train_repeats:
        # "mamba" runs the default backend; the PyTorch scan is timed alongside when it is not
        # the default, so that both CPU paths are measured against the same DT steps.
        cases = {"gpt": train_step_fn(cfg, "gpt"), "mamba": train_step_fn(cfg, "mamba")}
        if default != "torch":
            cases["mamba_torch_scan"] = train_step_fn(cfg, "mamba", "torch")
        train = interleaved_times(cases, cfg.train_repeats, cfg.warmup)
        print(f"training step (fwd+bwd+AdamW, batch {cfg.batch}, K {cfg.context_len}), "
              f"wall median (min, CPU-time median) of {cfg.train_repeats}, interleaved:")
        print(f"  DT {ms(train['gpt'])}")
        for name in [n for n in cases if n != "gpt"]:
            label = "Mamba (torch scan)" if name == "mamba_torch_scan" else f"Mamba ({default})"
            ratio = {k: train[name][k] / train["gpt"][k] for k in ("wall", "cpu")}
            print(f"  {label} {ms(train[name])} | Mamba / DT {ratio['wall']:.2f}x wall, "
                  f"{ratio['cpu']:.2f}x cpu")

    infer = {}
    for batch in (int(b) for b in cfg.infer_batches.split(",")):
        cases = {f"dt_window@{t}": dt_window_fn(cfg, t, batch) for t in positions}
        cases |= {f"mamba_recurrent@{t}": mamba_recurrent_fn(cfg, t, batch) for t in positions}
        times = infer[f"batch{batch}"] = interleaved_times(cases, cfg.repeats, cfg.warmup)
        print(f"inference per env step, batch {batch}, wall median (min, CPU-time median) of "
              f"{cfg.repeats}, interleaved:")
        for t in positions:
            dt_t, mamba_t = times[f"dt_window@{t}"], times[f"mamba_recurrent@{t}"]
            wall, cpu = (mamba_t[k] / dt_t[k] for k in ("wall", "cpu"))
            print(f"  t = {t:4d}: DT window ({3 * cfg.context_len} tokens) {ms(dt_t)} | Mamba "
                  f"recurrent (3 tokens) {ms(mamba_t)} | Mamba / DT {wall:.2f}x wall, "
                  f"{cpu:.2f}x cpu")
        first, last = (times[f"mamba_recurrent@{t}"] for t in (positions[0], positions[-1]))
        print(f"  Mamba step at t = {positions[-1]} / at t = {positions[0]}: "
              f"{last['wall'] / first['wall']:.2f}x wall, {last['cpu'] / first['cpu']:.2f}x cpu")

    if cfg.out:
        results = dict(config=asdict(cfg), torch=torch.__version__,
                       threads=torch.get_num_threads(), scan_backend=default,
                       parameters=counts, train_step_s=train,
                       inference_step_s=infer)
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(json.dumps(results, indent=2))
        print(f"wrote {cfg.out}")


if __name__ == "__main__":
    main()
