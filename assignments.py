"""Course exercises cut from the real source: list them, make a student copy, check a solution.

Each exercise is one or more regions of the project's own code, marked by a comment line before
and after (`# exercise 4: begin` ... `# exercise 4: end`). The student copy keeps every file as it
is except those regions, whose lines become `raise NotImplementedError("exercise 4: ...")` at the
region's indentation: signatures and docstrings stay, the project still imports, and every part
the student has not touched still runs. Each exercise has its own test file, which checks the
behaviour against an independent reference written in the test (never the code it blanks out),
with messages a student can act on. ASSIGNMENTS.md tells the student what to do.

    python assignments.py list                  one line per exercise: number, title, files, tests
    python assignments.py student DIR           write the student copy of this checkout to DIR
    python assignments.py check N [--repo DIR]  run exercise N's tests against DIR (default: here)

Standard library only (plus pytest for `check`).
References (ideas): Stanford XCS224R's graders, minitorch's per-task tests, CS231n's generated
assignments (a student copy cut from solution code).
"""
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
MARKER = re.compile(r"^(\s*)# exercise (\d+): (begin|end)\s*$")
# what a student copy leaves out: version control, environments, caches, generated data and runs
SKIP = {".git", ".venv", ".ci-venv", "runs", "data", "logs", "__pycache__", ".pytest_cache"}


@dataclass(frozen=True)
class Exercise:
    number: int
    title: str
    files: tuple  # where its regions are
    test: str  # its test file, relative to the project root
    minutes: int  # expected time for a student who has read the background


EXERCISES = (
    Exercise(1, "causal attention with a padding mask", ("dt.py",),
             "tests/test_exercise_1_attention.py", 45),
    Exercise(2, "the trajectory model: (R, s, a) tokens, timestep embeddings, masked loss",
             ("dt.py",), "tests/test_exercise_2_trajectory_model.py", 60),
    Exercise(3, "return-to-go and the right-padded window sampler", ("data.py",),
             "tests/test_exercise_3_data.py", 45),
    Exercise(4, "the selective scan as a loop", ("ssm.py",), "tests/test_exercise_4_scan.py", 45),
    Exercise(5, "the scan's backward: the reverse recurrence", ("scan_torch.py",),
             "tests/test_exercise_5_scan_backward.py", 90),
    Exercise(6, "recurrent inference: MambaBlock.step", ("ssm.py",),
             "tests/test_exercise_6_recurrent_step.py", 60),
    Exercise(7, "the Triton forward kernel (chunked scan)", ("scan_kernel.py",),
             "tests/test_exercise_7_triton_forward.py", 120),
    Exercise(8, "return-conditioned evaluation with episodes that finish early",
             ("evaluate.py",), "tests/test_exercise_8_evaluation.py", 45),
)


class AssignmentError(ValueError):
    """A problem the user can fix; the message says what to do."""


def exercise(number) -> Exercise:
    for ex in EXERCISES:
        if ex.number == number:
            return ex
    raise AssignmentError(f"there is no exercise {number}: choose one of "
                          f"{', '.join(str(e.number) for e in EXERCISES)}.")


def regions(text, path="the file"):
    """The marked regions of a source text: a list of (number, begin line, end line, indent),
    line indices of the two markers (0-based). Checks that markers pair up."""
    found, open_ = [], None
    for i, line in enumerate(text.splitlines()):
        m = MARKER.match(line)
        if not m:
            continue
        indent, number, kind = m.group(1), int(m.group(2)), m.group(3)
        if kind == "begin":
            if open_ is not None:
                raise AssignmentError(f"{path}:{i + 1}: exercise {number} begins inside "
                                      f"exercise {open_[0]}; close that one first.")
            open_ = (number, i, indent)
        else:
            if open_ is None or open_[0] != number:
                raise AssignmentError(f"{path}:{i + 1}: 'exercise {number}: end' without its "
                                      "begin marker.")
            found.append((number, open_[1], i, open_[2]))
            open_ = None
    if open_ is not None:
        raise AssignmentError(f"{path}: exercise {open_[0]} begins but never ends.")
    return found


def blank_out(text, path="the file"):
    """The student version of a source text: each region's lines replaced by one raise."""
    lines = text.splitlines(keepends=True)
    for number, begin, end, indent in reversed(regions(text, path)):
        title = exercise(number).title
        lines[begin + 1:end] = [f'{indent}raise NotImplementedError("exercise {number}: {title}; '
                                f'see ASSIGNMENTS.md")\n']
    return "".join(lines)


def make_student_copy(out, root=ROOT):
    """Copy the project to `out` (which must not exist) with every exercise region blanked."""
    out = Path(out)
    if out.exists():
        raise AssignmentError(f"{out} already exists; pass a new folder.")

    def ignore(folder, names):
        return {n for n in names if n in SKIP or n.endswith(".pyc")}

    shutil.copytree(root, out, ignore=ignore)
    blanked = 0
    for path in sorted(out.rglob("*.py")):
        text = path.read_text()
        if MARKER.search(text) or "# exercise " in text:
            student = blank_out(text, path.relative_to(out))
            blanked += student != text
            path.write_text(student)
    return out, blanked


def check(number, repo=ROOT):
    """Run exercise `number`'s tests (this checkout's test file) against the code in `repo`;
    print one line per test with its points; return True when all pass."""
    ex, repo = exercise(number), Path(repo).resolve()
    if not (repo / ex.files[0]).exists():
        raise AssignmentError(f"{repo} has no {ex.files[0]}; pass the project folder with --repo.")
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        # cwd = repo, so `import dt` finds the repo's code; the test file is this checkout's
        done = subprocess.run(
            [sys.executable, "-m", "pytest", str(ROOT / ex.test), "-q", "-p", "no:cacheprovider",
             "--rootdir", str(repo), f"--junitxml={report}", "-o", "addopts="],
            cwd=repo, capture_output=True, text=True)
        if not report.exists():
            print(done.stdout[-3000:] + done.stderr[-3000:])
            raise AssignmentError(f"the tests of exercise {number} did not run; see above.")
        cases = ET.parse(report).getroot().iter("testcase")
        results = []
        for case in cases:
            failure = case.find("failure")
            if failure is None:
                failure = case.find("error")
            skipped = case.find("skipped") is not None
            message = "" if failure is None else (failure.get("message") or "").splitlines()[0:1]
            results.append((case.get("name"), failure is None and not skipped, skipped,
                            message[0] if message else ""))
    print(f"exercise {ex.number}: {ex.title} ({repo})")
    for name, passed, skipped, message in results:
        verdict = "pass  1/1" if passed else ("skip  0/1" if skipped else "FAIL  0/1")
        print(f"  {verdict}  {name}" + (f"\n            {message[:300]}" if message else ""))
    points = sum(passed for _, passed, _, _ in results)
    print(f"  {points}/{len(results)} points")
    return bool(results) and points == len(results)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    usage = ("usage: python assignments.py list | student DIR | check N [--repo DIR]")
    try:
        if argv[:1] == ["list"] and len(argv) == 1:
            for ex in EXERCISES:
                print(f"{ex.number}  {ex.title}  [files: {', '.join(ex.files)}]  "
                      f"[tests: {ex.test}]  (~{ex.minutes} min)")
        elif argv[:1] == ["student"] and len(argv) == 2:
            out, blanked = make_student_copy(argv[1])
            print(f"wrote the student copy to {out} ({blanked} files with exercises blanked); "
                  f"students read ASSIGNMENTS.md there.")
        elif argv[:1] == ["check"] and len(argv) in (2, 4) and argv[1].isdigit() and (
                len(argv) == 2 or argv[2] == "--repo"):
            repo = argv[3] if len(argv) == 4 else ROOT
            sys.exit(0 if check(int(argv[1]), repo) else 1)
        else:
            sys.exit(usage)
    except AssignmentError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
