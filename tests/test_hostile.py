"""Hostile input (issue #25): files that would run code, commands that would destroy what is
committed or another run's files, a real full disk, and data that is not what it claims to be.
Each case ends in one sentence (or a refusal) and leaves everything that was there untouched.

Nothing here touches the repository itself: git repositories, run folders, caches and copies of
experiments.sh are made under tmp_path."""
import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import cli
from policies import collect
import data
import dt
from benchmarks import report
import scan_cpu
from policies import td3

ROOT = Path(__file__).resolve().parent.parent
TINY_TD3 = ["--env", "hopper", "--random-steps", "200", "--batch-size", "32", "--hidden", "16",
            "--snapshot-every", "100", "--checkpoint-every", "150", "--eval-episodes", "1",
            "--final-episodes", "2"]


def git_repo(folder, files):
    """A git repository at folder with `files` ({relative path: bytes}) committed."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME":
           "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["init", "-q"], ["add", *files], ["commit", "-q", "-m", "committed"]):
        subprocess.run(["git", *cmd], cwd=folder, check=True, env=env, capture_output=True)
    return folder


def exit_message(main, argv):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert isinstance(stop.value.code, str), f"exit code {stop.value.code}, not a message"
    return stop.value.code


def one_sentence(message):
    assert message.startswith("error: ") and "Traceback" not in message
    assert message.count("\n") == 0 and message.endswith(".")
    return message


def run_limited(argv, limit_bytes, cwd=ROOT):
    """argv in a child process that may write files of at most limit_bytes (RLIMIT_FSIZE), with
    SIGXFSZ ignored so that a write past it fails (EFBIG) as on a full disk."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return subprocess.run([sys.executable, *argv], cwd=cwd, preexec_fn=limit, text=True,
                          capture_output=True, timeout=300)


def last_line(done):
    return done.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def td3_run(tmp_path_factory):
    """A finished 300-step TD3 run (seconds): runs/td3-hopper/ with its checkpoint."""
    assert "to" in {f.name for f in dataclasses.fields(td3.TrainConfig)}, \
        "collect.py train would write into the committed policies/"   # today's code: stop here
    root = tmp_path_factory.mktemp("td3")
    collect.main(["train", *TINY_TD3, "--steps", "300", "--log-dir", str(root / "runs")])
    return root / "runs"


# ----------------------------------------------------------------------------- code execution

class RunsCode:
    """Unpickling this calls os.mkdir(marker): what a hostile checkpoint could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.mark.parametrize("command", ["resume", "export"])
def test_a_td3_checkpoint_whose_pickle_runs_code_is_refused_without_running_it(tmp_path,
                                                                               command):
    run = tmp_path / "runs" / "td3-hopper"
    run.mkdir(parents=True)
    marker = tmp_path / "the-checkpoint-ran-code"
    torch.save({"step": 1, "config": {}, "snapshots": [], "minutes": 0.0,
                "payload": RunsCode(marker)}, run / "ckpt.pt")
    argv = (["train", "--resume"] if command == "resume" else ["export"]) + [
        "--env", "hopper", "--log-dir", str(tmp_path / "runs")]
    message = one_sentence(exit_message(collect.main, argv))
    assert not marker.exists()
    assert "ckpt.pt cannot be read" in message


@pytest.mark.parametrize("content", [b"", "foreign"])
def test_collect_export_of_an_empty_or_foreign_checkpoint_is_one_sentence(tmp_path, content):
    run = tmp_path / "runs" / "td3-hopper"
    run.mkdir(parents=True)
    if content == "foreign":  # a train.py checkpoint, say: plain data, another schema
        torch.save({"model": {"w": torch.zeros(2)}, "step": 3}, run / "ckpt.pt")
    else:
        (run / "ckpt.pt").write_bytes(content)
    message = one_sentence(exit_message(collect.main, ["export", "--env", "hopper", "--log-dir",
                                                       str(tmp_path / "runs")]))
    assert "ckpt.pt" in message and "train again" in message


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="no C compiler")
@pytest.mark.parametrize("cache_mode", [0o700, 0o777])
def test_a_library_planted_in_the_c_kernels_cache_is_never_loaded(tmp_path, cache_mode):
    """0o700: a planted library without the hash recorded at build is rebuilt over; 0o777: a
    cache others can write to is not used at all, even with a matching hash file."""
    marker, cache = tmp_path / "the-planted-library-ran", tmp_path / "cache"
    cache.mkdir()
    planted = tmp_path / "planted.c"
    planted.write_text('#include <stdio.h>\n__attribute__((constructor)) static void run(void) '
                       f'{{ FILE *f = fopen("{marker}", "w"); if (f) fclose(f); }}\n')
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(tmp_path / "planted.so"),
                    str(planted)], check=True)
    source = scan_cpu.SOURCE.read_bytes()
    for flags in scan_cpu.FLAG_SETS:  # every name the loader may try
        key = hashlib.sha256(source + " ".join([shutil.which(compiler), *flags,
                                                scan_cpu._machine_key()]).encode())
        target = cache / f"scan_cpu-{key.hexdigest()[:16]}.so"
        shutil.copy(tmp_path / "planted.so", target)
        target.with_suffix(".sha256").write_text(
            hashlib.sha256(target.read_bytes()).hexdigest() + "\n")
        if cache_mode == 0o700:
            target.with_suffix(".sha256").unlink()
    cache.chmod(cache_mode)
    done = subprocess.run([sys.executable, "-c", "import scan_cpu; print(scan_cpu.available())"],
                          cwd=ROOT, env={**os.environ, "DM_SCAN_CPU_CACHE": str(cache)},
                          capture_output=True, text=True, timeout=300)
    assert not marker.exists(), "the planted library ran"
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(True, None)"  # and the real kernels built instead


# ----------------------------------------------------------------------------- destroying data

def test_experiments_one_refuses_names_that_reach_outside_runs_report(tmp_path):
    """NAME=../../results deleted the committed results; an empty NAME every run of the sweep."""
    shutil.copy(ROOT / "experiments.sh", tmp_path / "experiments.sh")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "committed.md").write_text("precious")
    (tmp_path / "runs" / "report" / "a-run").mkdir(parents=True)
    (tmp_path / "runs" / "report" / "a-run" / "ckpt.pt").write_text("weights")
    for name in ["../../results", "", ".", "..", "a/b", "x y"]:
        done = subprocess.run(["bash", "experiments.sh", "one", name, "--model", "dt", "--env",
                               "hopper", "--dataset", "medium", "--seed", "0"], cwd=tmp_path,
                              env={**os.environ, "PYTHON": "true"}, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode != 0 and "error: job name" in done.stderr, name
    assert (tmp_path / "results" / "committed.md").read_text() == "precious"
    assert (tmp_path / "runs" / "report" / "a-run" / "ckpt.pt").read_text() == "weights"


def test_collect_train_exports_into_its_run_folder_and_export_needs_force_for_committed_files(
        td3_run, tmp_path):
    run = td3_run / "td3-hopper"
    assert sorted(p.name for p in run.glob("*.npz")) == [
        "hopper-expert.npz", "hopper-medium.npz", "hopper-replay.npz"]
    committed = b"a committed policy"
    repo = git_repo(tmp_path / "repo", {"policies/hopper-expert.npz": committed})
    argv = ["export", *TINY_TD3, "--log-dir", str(td3_run), "--to", str(repo / "policies")]
    message = one_sentence(exit_message(collect.main, argv))
    assert "tracked by git: add --force" in message
    assert (repo / "policies" / "hopper-expert.npz").read_bytes() == committed
    assert not (repo / "policies" / "hopper-medium.npz").exists()  # refused before any work
    collect.main(argv + ["--force"])
    policy, meta = collect.load_policy("hopper", "expert", repo / "policies")
    assert meta["algorithm"] == "TD3"


def test_collect_dataset_out_refuses_a_tracked_or_foreign_file_unless_forced(tmp_path):
    repo = git_repo(tmp_path / "repo", {"policies/hopper-medium.npz": b"committed"})
    foreign = tmp_path / "notes.hdf5"
    foreign.write_bytes(b"somebody else's file")
    argv = ["dataset", "--env", "hopper", "--level", "random", "--transitions", "50",
            "--workers", "1", "--out"]
    for target, why in ((repo / "policies" / "hopper-medium.npz", "tracked by git"),
                        (foreign, "not written by this command")):
        before = target.read_bytes()
        assert why in one_sentence(exit_message(collect.main, argv + [str(target)]))
        assert target.read_bytes() == before
    collect.main(argv + [str(foreign), "--force"])
    collect.main(argv + [str(foreign)])  # its own dataset: replaced without --force
    assert len(data.load_trajectories(foreign)[0]) > 0


@pytest.fixture(scope="module")
def report_runs(tmp_path_factory):
    """Two committed report runs (the first protocol's hopper medium, DT and Mamba seed 0), copied."""
    root = tmp_path_factory.mktemp("report-runs")
    for name in ("dt-hopper-medium-s0", "mamba-hopper-medium-s0"):
        shutil.copytree(ROOT / "results" / "report-runs-v1" / name, root / name)
    return root


def test_report_out_elsewhere_leaves_the_committed_figures_and_refuses_tracked_files(
        report_runs, tmp_path, monkeypatch):
    png = b"\x89PNG committed figure"
    repo = git_repo(tmp_path / "repo", {"REPORT.md": b"# the committed report\n",
                                        "results/figures/loss-hopper.png": png})
    monkeypatch.chdir(repo)
    runs = [str(p) for p in sorted(report_runs.iterdir())]
    report.main(runs + ["--out", "elsewhere/x.md"])
    assert (repo / "results" / "figures" / "loss-hopper.png").read_bytes() == png
    assert (repo / "elsewhere" / "x-figures" / "loss-hopper.png").stat().st_size > 1000
    assert "(x-figures/loss-hopper.png)" in (repo / "elsewhere" / "x.md").read_text()
    message = one_sentence(exit_message(report.main, runs + ["--out", "REPORT.md"]))
    assert "REPORT.md is tracked by git: add --force" in message
    assert (repo / "REPORT.md").read_text() == "# the committed report\n"
    report.main(runs + ["--out", "elsewhere/x.md"])  # its own report: replaced without --force


def profile_module():
    """profile.py, loaded as benchmarks load it (the name `profile` is the standard library's)."""
    spec = importlib.util.spec_from_file_location("profile_py", ROOT / "profile.py")
    module = sys.modules.setdefault("profile_py", importlib.util.module_from_spec(spec))
    if not hasattr(module, "main"):
        spec.loader.exec_module(module)
    return module


def test_profile_refuses_to_replace_a_tracked_result_before_measuring(tmp_path):
    profile_py = profile_module()
    slug = profile_py.describe_device(torch.device("cpu"))[0]
    repo = git_repo(tmp_path / "repo", {f"results/profile-{slug}.json": b"{}"})
    message = one_sentence(exit_message(profile_py.main, [
        "--quick", "--device", "cpu", "--out", str(repo / "results")]))
    assert "tracked by git: add --force" in message
    assert (repo / "results" / f"profile-{slug}.json").read_bytes() == b"{}"


# ----------------------------------------------------------------------------- a real full disk

def test_a_dataset_past_a_real_file_size_limit_is_one_sentence_and_the_old_file_stays(tmp_path):
    out = tmp_path / "d.hdf5"
    argv = ["policies/collect.py", "dataset", "--env", "hopper", "--level", "random",
            "--workers", "1", "--out", str(out), "--transitions"]
    collect.main(argv[1:] + ["100"])
    before = out.read_bytes()
    done = run_limited(argv + ["5000"], len(before) + 4096)
    assert done.returncode == 1 and last_line(done).startswith("error: cannot write")
    assert "ulimit -f" in last_line(done) and "Traceback" not in done.stderr
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.hdf5"]  # no .tmp left


def test_a_td3_checkpoint_past_a_real_file_size_limit_is_one_sentence_and_the_old_one_stays(
        td3_run, tmp_path):
    shutil.copytree(td3_run, tmp_path / "runs")
    ckpt = tmp_path / "runs" / "td3-hopper" / "ckpt.pt"
    before, files = ckpt.read_bytes(), sorted(p.name for p in ckpt.parent.iterdir())
    done = run_limited(["policies/collect.py", "train", *TINY_TD3, "--steps", "600", "--resume",
                        "--log-dir", str(tmp_path / "runs")], len(before) + 2048)
    assert done.returncode == 1 and last_line(done).startswith(f"error: cannot write {ckpt}")
    assert "Traceback" not in done.stderr
    assert ckpt.read_bytes() == before
    assert sorted(p.name for p in ckpt.parent.iterdir()) == files  # no .tmp left


def test_the_temporary_file_of_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".ckpt.pt.{dead}.tmp"
    alive = tmp_path / f".ckpt.pt.{os.getppid()}.tmp"  # a live writer's: kept
    stale.write_text("half"), alive.write_text("half")
    cli.atomic_write(tmp_path / "ckpt.pt", lambda tmp: Path(tmp).write_text("whole"))
    assert not stale.exists() and alive.exists()
    assert (tmp_path / "ckpt.pt").read_text() == "whole"


# ----------------------------------------------------------------------------- data that lies

def d4rl_columns(n=60, **change):
    rng = np.random.default_rng(0)
    columns = dict(observations=rng.normal(size=(n, 11)).astype(np.float32),
                   actions=rng.uniform(-1, 1, (n, 3)).astype(np.float32),
                   rewards=rng.uniform(0, 3, n).astype(np.float32),
                   terminals=np.arange(n) % 30 == 29, timeouts=np.zeros(n, bool))
    return {**columns, **change}


def write_h5(path, columns):
    with h5py.File(path, "w") as f:
        for name, value in columns.items():
            f[name] = value
    return path


def complex_obs():
    return d4rl_columns()["observations"] + 1j


def far_actions():
    actions = d4rl_columns()["actions"].copy()
    actions[17, 1] = 40.0
    return actions


def huge_rewards():
    rewards = d4rl_columns()["rewards"].copy()
    rewards[23] = 3e38
    return rewards


@pytest.mark.parametrize("column, value, expected", [
    ("observations", complex_obs, "observations holds complex numbers"),
    ("actions", far_actions, "outside Hopper-v5's action space [-1, 1], the first at row 17"),
    ("rewards", huge_rewards, "beyond +-100, more than one step of Hopper-v5 earns, the first at "
                              "row 23"),
])
def test_data_that_is_complex_or_beyond_the_envs_bounds_is_one_sentence_naming_the_row(
        tmp_path, column, value, expected):
    path = write_h5(tmp_path / "d.hdf5", d4rl_columns(**{column: value()}))
    with pytest.raises(data.DataError) as error:
        data.check_fits_env(data.load_trajectories(path), "hopper", str(path))
    assert expected in str(error.value) and str(path) in str(error.value)


def test_hdf5_with_a_dangling_external_link_or_an_absurd_declared_size_is_one_sentence(
        tmp_path):
    columns = d4rl_columns()
    del columns["observations"]
    linked = write_h5(tmp_path / "linked.hdf5", columns)
    with h5py.File(linked, "a") as f:
        f["observations"] = h5py.ExternalLink(str(tmp_path / "gone.hdf5"), "/observations")
    with pytest.raises(data.DataError, match="links to data that cannot be opened"):
        data.load_trajectories(linked)
    huge = write_h5(tmp_path / "huge.hdf5", columns)
    with h5py.File(huge, "a") as f:  # declared, never written: the file stays small
        f.create_dataset("observations", shape=(10**12, 11), dtype="f4", chunks=(1024, 11))
    with pytest.raises(data.DataError, match=r"declares shape \(1000000000000, 11\)"):
        data.load_trajectories(huge)


def test_a_fifo_given_as_a_dataset_is_refused_without_waiting_on_it(tmp_path):
    fifo = tmp_path / "d.hdf5"
    os.mkfifo(fifo)
    try:
        done = subprocess.run([sys.executable, "data.py", str(fifo)], cwd=ROOT, timeout=60,
                              capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        pytest.fail("reading a FIFO hung")
    assert done.returncode == 1 and "neither a regular file nor a folder" in done.stderr


def test_report_skips_runs_with_nan_scores_and_says_so(report_runs, tmp_path, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(report_runs, runs)
    record = runs / "mamba-hopper-medium-s0" / "eval.json"
    evaluation = json.loads(record.read_text())
    evaluation["results"][0]["score_mean"] = float("nan")
    record.write_text(json.dumps(evaluation))
    report.main([str(p) for p in sorted(runs.iterdir())] + ["--out", str(tmp_path / "R.md")])
    text = (tmp_path / "R.md").read_text()
    assert "not finite" in capsys.readouterr().err
    assert f"skipped {runs / 'mamba-hopper-medium-s0'}: its scores in eval.json are not " \
           "finite" in text
    tables = [line for line in text.splitlines() if line.startswith("|")]
    assert tables and not any(re.search(r"\bnan\b", line, re.IGNORECASE) for line in tables)


def test_a_bogus_or_gpu_less_triton_scan_backend_in_the_environment_is_one_sentence(
        monkeypatch):
    config = dict(state_dim=11, act_dim=3, backbone="mamba", d_model=16, mamba_n_layer=1)
    monkeypatch.setenv("DM_SCAN_BACKEND", "bogus")
    with pytest.raises(dt.ModelError, match="DM_SCAN_BACKEND='bogus' is not a scan backend"):
        dt.DecisionConfig(**config)
    if not torch.cuda.is_available():
        monkeypatch.setenv("DM_SCAN_BACKEND", "triton")
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        with pytest.raises(dt.ModelError, match="triton needs a CUDA GPU"):
            dt.DecisionConfig(**config)
