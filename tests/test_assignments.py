"""assignments.py: the student copy imports and every exercise's tests fail on it (each test, not
just one: a test that passes on blank code checks nothing), while they pass on this checkout
(the exercise test files are part of this suite). Markers pair up; list names every exercise."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

import assignments

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def student_copy(tmp_path_factory):
    out, blanked = assignments.make_student_copy(tmp_path_factory.mktemp("course") / "student")
    assert blanked >= 1
    return out


def run(args, cwd=ROOT):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
                                            "HOME": str(Path.home())})


def test_every_exercise_has_marked_regions_and_a_test_file():
    found = {}
    for path in ROOT.glob("*.py"):
        for number, *_ in assignments.regions(path.read_text(), path.name):
            found.setdefault(number, set()).add(path.name)
    for ex in assignments.EXERCISES:
        if ex.number in found:
            assert found[ex.number] <= set(ex.files), (ex.number, found[ex.number])
            assert (ROOT / ex.test).exists(), ex.test
    assert len(found) >= 6, f"exercises marked in the source: {sorted(found)}"


def test_list_prints_one_line_per_exercise_starting_with_its_number():
    done = run(["assignments.py", "list"])
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and len(lines) == len(assignments.EXERCISES) >= 6
    for ex, line in zip(assignments.EXERCISES, lines):
        assert line.startswith(f"{ex.number}  {ex.title}") and ex.test in line


def test_the_student_copy_blanks_the_regions_and_still_imports(student_copy):
    text = (student_copy / "data.py").read_text()
    assert 'raise NotImplementedError("exercise 3:' in text
    assert "np.cumsum(rewards[::-1]" not in text  # the solution is gone
    assert (student_copy / "README.md").read_bytes() == (ROOT / "README.md").read_bytes()
    done = run(["-c", "import dt, ssm, data, train, evaluate, collect, td3; print('ok')"],
               cwd=student_copy)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@pytest.mark.parametrize("number", [ex.number for ex in assignments.EXERCISES
                                    if (ROOT / ex.test).exists()])
def test_every_test_of_an_exercise_fails_on_the_student_copy(number, student_copy):
    done = run(["assignments.py", "check", str(number), "--repo", str(student_copy)])
    assert done.returncode == 1, done.stdout + done.stderr
    points = re.search(r"(\d+)/(\d+) points", done.stdout)
    assert points and points.group(1) == "0" and int(points.group(2)) >= 3, done.stdout


def test_check_passes_on_this_checkout_through_the_command_line():
    done = run(["assignments.py", "check", "3"])
    assert done.returncode == 0 and "7/7 points" in done.stdout, done.stdout + done.stderr


def test_bad_use_is_one_sentence():
    error = run(["assignments.py", "check", "99"]).stderr
    assert error.startswith("error: there is no exercise 99")
    assert run(["assignments.py", "frobnicate"]).stderr.startswith("usage: python assignments.py")
    with pytest.raises(assignments.AssignmentError, match="begins but never ends"):
        assignments.regions("x = 1\n    # exercise 2: begin\ny = 2\n")
