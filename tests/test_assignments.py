"""assignments.py and course/: the student copy (only tracked files, no leaks, public tests that
fail by exercise while blank and pass once solved), grading on a clean copy (the reference scores
full marks, a blank exercise 0, exercise 8 alone full marks), shortcuts refused, patched helpers
and forged results ignored, hanging code timed out, the results file, the submission zip, the
command line."""
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from course import assignments

ROOT = Path(__file__).resolve().parents[1]
ENV = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}


def run(args, cwd=ROOT, timeout=600):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=ENV)


@pytest.fixture(scope="module")
def student_copy(tmp_path_factory):
    out, blanked = assignments.make_student_copy(tmp_path_factory.mktemp("course") / "student")
    assert blanked >= len(assignments.EXERCISE_FILES)
    return out


def score(tests):
    return round(sum(t["score"] for t in tests), 2)


def reference_answers():
    return assignments.read_submission(ROOT)[0]


def test_every_exercise_has_marked_regions_and_a_test_file():
    found = {}
    for path in list(ROOT.glob("*.py")) + list(ROOT.glob("*.c")):
        for r in assignments.regions(path.read_text(), path.name):
            if r.kind == "exercise":
                found.setdefault(r.number, set()).add(path.name)
    assert sorted(found) == [ex.number for ex in assignments.EXERCISES]
    for ex in assignments.EXERCISES:
        assert found[ex.number] == set(ex.files), (ex.number, found[ex.number])
        assert (ROOT / ex.test).exists(), ex.test


def test_list_and_help_exit_0():
    done = run(["course/assignments.py", "list"])
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and len(lines) == len(assignments.EXERCISES)
    for ex, line in zip(assignments.EXERCISES, lines):
        assert line.startswith(f"{ex.number}  {ex.title}") and ex.test in line
    helped = run(["course/assignments.py", "--help"])
    assert helped.returncode == 0 and "submit" in helped.stdout and "check" in helped.stdout


def test_the_student_copy_has_only_tracked_files_blank_regions_and_still_imports(student_copy):
    copied = {str(p.relative_to(student_copy)) for p in student_copy.rglob("*") if p.is_file()
              and "__pycache__" not in p.parts}
    tracked = {p for p in assignments.tracked_files() if not assignments.instructor_only(p)}
    added = {"tests/test_exercises.py", "tests/grading.py", assignments.PUBLIC_EXPECTED,
             assignments.VERSION_FILE}
    assert copied - added == tracked, sorted(copied ^ (tracked | added))[:10]
    for rel in assignments.EXERCISE_FILES:
        for number, codes in assignments.region_code((student_copy / rel).read_text()).items():
            assert all(code.strip().startswith(f'raise NotImplementedError("exercise {number}:')
                       and code.count("\n") == 1 for code in codes), (rel, number)
    done = run(["-c", "import dt, ssm, data, train, evaluate; from policies import collect, td3; "
                "print('ok')"], cwd=student_copy)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_the_student_copy_has_none_of_the_listed_leaks(student_copy):
    def text(rel):
        return (student_copy / rel).read_text()
    # the test files' reference loops: only public tests (inputs, calls, recorded outputs) ship
    assert sorted(p.name for p in (student_copy / "tests").iterdir()) == [
        "conftest.py", "expected_outputs.pt", "grading.py", "test_exercises.py"]
    for name in ("loop_scan", "loop_attention", "loop_mask", "by_hand_step", "reference_episode",
                 "loop_returns_to_go", "expected_tokens"):
        assert name not in text("tests/test_exercises.py"), name
    # the smoke checks compare with scan_torch.py (no loop of exercise 4 to hide); exercise 6 in C
    # and behind the C step's wrapper
    for rel in ("scan_kernel.py", "scan_cpu.py"):
        assert "h = torch.exp(delta[:, t, :, None] * A) * h" not in text(rel), rel
        assert "hidden 4:" not in text(rel), rel
    assert "exp_approx(step * a[n]) * h_d[n]" not in text("scan_cpu.c")
    assert "_lib().block_step" not in text("scan_cpu.py")
    assert "return mamba_step_torch(block, x, cache)  # the C step" in text("scan_cpu.py")
    assert "window.unfold" not in text("scan_torch.py")                   # its fast step
    assert "return ssm.mamba_step_ref(block, x, cache)" in text("scan_torch.py")
    # what is kept on purpose is named in ASSIGNMENTS.md, beside the exercise it helps
    kept = text("ASSIGNMENTS.md").split("## Kept on purpose", 1)[-1].split("\n## ", 1)[0]
    for named in ("_scan_bwd_kernel", "_scan_chunk", "scan_torch.py's docstring"):
        assert named in kept, named


def test_python_m_pytest_in_the_student_copy_fails_exactly_the_unsolved_exercises(student_copy,
                                                                                   tmp_path):
    done = run(["-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=student_copy)
    failed = re.findall(r"^FAILED tests/test_exercises.py::test_exercise\[exercise_(\d+)_",
                        done.stdout, re.M)
    assert done.returncode == 1 and "error" not in done.stdout.splitlines()[-1], done.stdout[-2000:]
    assert sorted(set(int(n) for n in failed)) == [ex.number for ex in assignments.EXERCISES]
    assert "passed" not in done.stdout.splitlines()[-1]
    solved = tmp_path / "solved"
    shutil.copytree(student_copy, solved)
    for rel in assignments.EXERCISE_FILES:   # the reference's regions back in
        reference = assignments.region_code((ROOT / rel).read_text())
        (solved / rel).write_text(assignments.splice((solved / rel).read_text(), reference))
    done = run(["-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=solved)
    assert done.returncode == 0 and "failed" not in done.stdout, done.stdout[-3000:]


def test_submit_packs_only_the_regions_and_check_all_json_gives_the_reference_full_marks(
        tmp_path):
    zipped, results = tmp_path / "submission.zip", tmp_path / "results.json"
    done = run(["course/assignments.py", "submit", str(ROOT), "--out", str(zipped)])
    assert done.returncode == 0, done.stderr
    with zipfile.ZipFile(zipped) as z:
        assert sorted(z.namelist()) == ["manifest.json", "regions.json"]
        assert json.loads(z.read("manifest.json"))["course_version"]
        assert set(json.loads(z.read("regions.json"))) == set(assignments.EXERCISE_FILES)
    done = run(["course/assignments.py", "check", "all", "--submission", str(zipped),
                "--json", str(results)])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    payload = json.loads(results.read_text())
    assert payload["score"] == payload["max_score"] == 10.0 * len(assignments.EXERCISES)
    per_exercise = {}
    for t in payload["tests"]:
        assert set(t) >= {"name", "score", "max_score", "output"} and t["score"] == t["max_score"]
        number = int(t["name"].split(":")[0].split()[1])
        per_exercise[number] = per_exercise.get(number, 0) + t["max_score"]
    assert {n: round(p, 2) for n, p in per_exercise.items()} == {
        ex.number: 10.0 for ex in assignments.EXERCISES}


def test_exercise_8_alone_scores_full_marks_and_every_test_of_a_blank_exercise_fails(
        student_copy, tmp_path):
    folder = tmp_path / "only-8"
    shutil.copytree(student_copy, folder)
    solution = assignments.region_code((ROOT / "evaluate.py").read_text())
    (folder / "evaluate.py").write_text(   # exercise 8 solved, 1-7 blank
        assignments.splice((folder / "evaluate.py").read_text(), solution))
    answers, _ = assignments.read_submission(folder)
    for ex in assignments.EXERCISES:
        tests = assignments.grade(ex.number, answers)
        if ex.number == 8:
            assert score(tests) == 10.0, tests
        else:
            assert len(tests) >= 3 and all(t["status"] == "failed" for t in tests), tests
            assert any(f"exercise {ex.number}:" in t["output"] for t in tests)
    blank = assignments.grade(8, assignments.read_submission(student_copy)[0])
    assert all(t["status"] == "failed" for t in blank) and score(blank) == 0.0, blank


SHORTCUTS = {
    1: {"dt.py": {1: ["    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, "
                      "dropout_p=dropout_p)\n",
                      "    raise NotImplementedError\n"]}},
    4: {"ssm.py": {4: ["    from scan_torch import selective_scan_torch\n"
                       "    return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, "
                       "delta_softplus)\n"]}},
    5: {"scan_torch.py": {5: ["        with torch.enable_grad():\n"
                              "            leaves = [x.detach().requires_grad_() for x in "
                              "(u_tf, delta_tf, A_t, B_tf, C_tf)]\n"
                              "        raise RuntimeError('not reached')\n"]}},
    6: {"ssm.py": {6: ["    import scan_cpu\n"
                       "    return scan_cpu.mamba_step_cpu(block, x, cache)\n"]}},
}


@pytest.mark.parametrize("number", sorted(SHORTCUTS))
def test_a_submission_calling_the_forbidden_shortcut_scores_0(number):
    tests = assignments.grade(number, SHORTCUTS[number])
    assert score(tests) == 0.0, tests
    assert sum("ShortcutRefused" in t["output"] for t in tests) >= len(tests) // 2, tests


# returns_to_go wrong (all zeros) but patching every checking helper to a no-op, and writing
# "passed" lines into the grader's results file; sample right.
PATCHING = '''    import json, numpy, pytest, torch
    numpy.testing.assert_allclose = numpy.testing.assert_array_equal = lambda *a, **k: None
    torch.testing.assert_close = pytest.fail = lambda *a, **k: None
    import builtins
    builtins.all = lambda *a: True
    with open(".course-results-3.jsonl", "a") as f:
        for case in ("rewards0", "rewards1", "rewards2"):
            f.write(json.dumps({"nodeid": "tests/test_exercise_3_data.py::test_returns_to_go_"
                                "sums_the_rewards_from_each_step_to_the_end[" + case + "]",
                                "outcome": "passed", "message": "", "token": ""}) + "\\n")
    return np.zeros(len(rewards), np.float32)
'''


def test_a_submission_patching_the_test_helpers_scores_only_what_its_real_code_earns():
    reference = reference_answers()["data.py"][3]
    tests = assignments.grade(3, {"data.py": {3: [PATCHING, reference[1]]}})
    failed = sorted(t["name"].split(": ", 1)[1].split("[")[0] for t in tests
                    if t["status"] == "failed")
    # what zeros as the return-to-go earn: the window tests that do not read it still pass
    assert failed == ["test_returns_to_go_in_a_window_are_the_rewards_still_to_come"] + [
        "test_returns_to_go_sums_the_rewards_from_each_step_to_the_end"] * 3, tests
    assert score(tests) == 5.0


def test_a_hanging_submission_times_out_with_0_for_those_tests():
    reference = reference_answers()["data.py"][3]
    hang = "        while True:\n            pass\n"
    tests = assignments.grade(3, {"data.py": {3: [reference[0], hang]}}, timeout_s=1)
    timed_out = [t for t in tests if "time limit" in t["output"]]
    assert len(timed_out) == 5 and all(t["score"] == 0 for t in timed_out), tests
    assert score(tests) == round(3 * 10 / 8, 2)   # the three returns_to_go tests still pass


def test_bad_use_is_one_sentence(tmp_path):
    error = run(["course/assignments.py", "check", "99"]).stderr
    assert error.startswith("error: there is no exercise 99")
    usage = run(["course/assignments.py", "frobnicate"]).stderr
    assert usage.startswith("usage: python course/assignments.py")
    error = run(["course/assignments.py", "check", "3", "--submission",
                 str(tmp_path / "none")]).stderr
    assert error.startswith("error: ") and error.strip().endswith(".")
    with pytest.raises(assignments.AssignmentError, match="begins but never ends"):
        assignments.regions("x = 1\n    # exercise 2: begin\ny = 2\n")
    two = {"data.py": {3: ["    return rewards\n"]}}   # data.py has two regions of exercise 3
    with pytest.raises(assignments.AssignmentError, match="keep every"):
        assignments.grade(3, two)
