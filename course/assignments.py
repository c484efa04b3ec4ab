"""Course exercises cut from the real source: list them, make a student copy, grade submissions.

Each exercise is one or more regions of the project's own code, marked by a comment line before
and after (`# exercise 4: begin` ... `# exercise 4: end`). The student copy keeps every file git
tracks except the instructor's (tests/, course/), with each region's lines replaced by
`raise NotImplementedError("exercise 4: ...")`: signatures and docstrings stay, the project still
imports, and every part the student has not touched still runs. Code elsewhere that would give an
exercise away is marked `# hidden 4: begin` ... `# hidden 4: end` (`//` in C) and left out of the
student copy; an optional `# hidden 4: student` line starts commented-out lines that the student
copy gets instead. The student copy's tests are public ones (course/public_tests.py) that compare
with outputs recorded from this tree, so they hold no reference code.

Grading never runs the student's tree. `check` takes only the marked regions out of a submission
(a student folder or a zip made by `submit`), splices them into a fresh copy of this tree in
which every other exercise is blank, and runs the instructor's tests of that exercise there, with
course/grading.py watching: a time limit per test, the exercise's shortcuts refused while the
student's function runs, checking helpers that must stay untouched. Each exercise is worth
POINTS points, shared equally by its tests.

    python course/assignments.py list                 the exercises: number, title, files, tests
    python course/assignments.py student DIR          write the student copy to DIR
    python course/assignments.py submit DIR --out Z   pack a student folder's regions (a zip)
    python course/assignments.py check N|all [--submission DIR|ZIP] [--json FILE] [--timeout S]

Without --submission, `check` grades this tree's own regions (the reference solution here; in a
student copy it runs the public tests of the copy in place). --json writes the scores in the
results format autograders such as Gradescope read (per test: name, score, max_score, output).
Standard library only (plus pytest for `check`).
References (ideas): Stanford XCS224R's graders, minitorch's per-task tests, CS231n's generated
assignments and collect-submission script, Gradescope's autograder results file.
"""
import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]   # the repository root (this file is in course/)
MARKER = re.compile(r"^(\s*)(#|//) (exercise|hidden) (\d+): (begin|student|end)\s*$")
POINTS = 10                 # every exercise is worth the same, whatever its number of tests
TEST_TIMEOUT_S = 60         # per test; the slowest reference test takes a few seconds
STALL_S = 120               # a run silent this long past the limit is stopped (a hang in C code)
PUBLIC_TESTS = "course/public_tests.py"         # -> tests/test_exercises.py in the student copy
PUBLIC_EXPECTED = "tests/expected_outputs.pt"   # the reference's outputs, recorded for the copy
VERSION_FILE = "COURSE_VERSION"                 # in the student copy: which tree it was cut from
NOT_IN_GRADING_TREE = ("results/", "policies/")  # large, and no exercise test reads them


@dataclass(frozen=True)
class Exercise:
    number: int
    title: str
    files: tuple  # where its regions are
    test: str  # its instructor test file, relative to the project root
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
             "tests/test_exercise_7_triton_forward.py", 60),
    Exercise(8, "return-conditioned evaluation with episodes that finish early",
             ("evaluate.py",), "tests/test_exercise_8_evaluation.py", 45),
)
EXERCISE_FILES = tuple(sorted({f for ex in EXERCISES for f in ex.files}))


class AssignmentError(ValueError):
    """A problem the user can fix; the message says what to do."""


def exercise(number) -> Exercise:
    for ex in EXERCISES:
        if str(ex.number) == str(number):
            return ex
    raise AssignmentError(f"there is no exercise {number}: choose one of "
                          f"{', '.join(str(e.number) for e in EXERCISES)} or all.")


# ----------------------------------------------------------------------------- regions

@dataclass(frozen=True)
class Region:
    kind: str       # "exercise" (the student writes it) or "hidden" (left out of the copy)
    number: int
    begin: int      # line index of the begin marker (0-based)
    student: int    # line index of a hidden region's `student` marker, or -1
    end: int        # line index of the end marker
    indent: str
    comment: str    # "#" or "//"


def regions(text, path="the file"):
    """The marked regions of a source text, in order; checks that the markers pair up."""
    found, open_ = [], None
    for i, line in enumerate(text.splitlines()):
        m = MARKER.match(line)
        if not m:
            continue
        indent, comment, kind, number, what = m.group(1), m.group(2), m.group(3), \
            int(m.group(4)), m.group(5)
        where = f"{path}:{i + 1}"
        if what == "begin":
            if open_ is not None:
                raise AssignmentError(f"{where}: {kind} {number} begins inside {open_[0]} "
                                      f"{open_[1]}; close that one first.")
            open_ = [kind, number, i, -1, indent, comment]
        elif open_ is None or open_[:2] != [kind, number]:
            raise AssignmentError(f"{where}: '{kind} {number}: {what}' without its begin "
                                  "marker; put the markers back as they were.")
        elif what == "student":
            if kind != "hidden" or open_[3] != -1:
                raise AssignmentError(f"{where}: a 'student' line belongs once inside a hidden "
                                      "region.")
            open_[3] = i
        else:
            found.append(Region(kind, number, open_[2], open_[3], i, open_[4], open_[5]))
            open_ = None
    if open_ is not None:
        raise AssignmentError(f"{path}: {open_[0]} {open_[1]} begins but never ends.")
    return found


def _blank(region):
    title = exercise(region.number).title
    return f'{region.indent}raise NotImplementedError("exercise {region.number}: {title}; ' \
           f'see ASSIGNMENTS.md")\n'


def _student_lines(region, lines):
    """What the student copy holds instead of a hidden region (its markers included)."""
    if region.student >= 0:
        prefix = f"{region.indent}{region.comment} "
        return [line.replace(prefix, region.indent, 1) for line in
                lines[region.student + 1:region.end]]
    why = f"hidden in the student copy: it would give exercise {region.number} away"
    if region.comment == "//":
        return [f"{region.indent}/* {why} */\n"]
    return [f'{region.indent}raise NotImplementedError("{why}")\n']


def blank_out(text, path="the file"):
    """The student version of a source text: exercise regions blanked, hidden regions left out."""
    lines = text.splitlines(keepends=True)
    for r in reversed(regions(text, path)):
        if r.kind == "exercise":
            lines[r.begin + 1:r.end] = [_blank(r)]
        else:
            lines[r.begin:r.end + 1] = _student_lines(r, lines)
    return "".join(lines)


def region_code(text, path="the file"):
    """{exercise number: [the code of each of its regions in this text, in order]}"""
    lines, code = text.splitlines(keepends=True), {}
    for r in regions(text, path):
        if r.kind == "exercise":
            code.setdefault(r.number, []).append("".join(lines[r.begin + 1:r.end]))
    return code


def splice(text, answers, path="the file"):
    """`text` with the regions of each exercise in `answers` ({number: [code of each region]})
    holding that code and every other exercise region blank; hidden regions stay as they are."""
    lines, seen = text.splitlines(keepends=True), {}
    filled = []
    for r in regions(text, path):
        if r.kind == "exercise":
            index = seen[r.number] = seen.get(r.number, -1) + 1
            code = answers.get(r.number, [None] * (index + 1))[index]
            filled.append((r, code))
    for r, code in reversed(filled):
        if code is None:
            lines[r.begin + 1:r.end] = [_blank(r)]
        else:
            lines[r.begin + 1:r.end] = [code if code.endswith("\n") or not code else code + "\n"]
    return "".join(lines)


# ----------------------------------------------------------------------------- the trees

def tracked_files(root=ROOT):
    """The files git tracks in `root` that exist in its working tree (relative paths)."""
    done = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise AssignmentError(f"{root} is not a git checkout; run this in a clone of the course "
                              "repository (a student copy cannot make copies or grade).")
    return [p for p in done.stdout.split("\0") if p and (Path(root) / p).is_file()]


def course_version(root=ROOT):
    """The commit the tree is at, with '+modified' if tracked files differ from it."""
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                          capture_output=True, text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                            "--untracked-files=no"], capture_output=True, text=True).stdout
    return head + ("+modified" if dirty.strip() else "")


def instructor_only(rel):
    """Files the student copy leaves out: the graded tests and the course's machinery."""
    return ((rel.startswith("course/") and rel != "course/assignments.py") or
            rel.startswith(".ci/") or (rel.startswith("tests/") and rel != "tests/conftest.py"))


def make_student_copy(out, root=ROOT):
    """Copy the git-tracked files of `root` to `out` (which must not exist): exercise regions
    blanked, hidden regions left out, the public tests and the reference's outputs for them."""
    out, root = Path(out).resolve(), Path(root)
    if out.exists():
        raise AssignmentError(f"{out} already exists; pass a new folder.")
    blanked = 0
    for rel in tracked_files(root):
        if instructor_only(rel):
            continue
        src, dst = root / rel, out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
        if src.suffix in (".py", ".c"):
            text = src.read_text()
            student = blank_out(text, rel)
            if student != text:
                dst.write_text(student)
                blanked += 1
    (out / "tests").mkdir(exist_ok=True)
    shutil.copy2(root / PUBLIC_TESTS, out / "tests" / "test_exercises.py")
    shutil.copy2(root / "course" / "grading.py", out / "tests" / "grading.py")
    done = subprocess.run([sys.executable, PUBLIC_TESTS, "--record", str(out / PUBLIC_EXPECTED)],
                          cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise AssignmentError("recording the reference's outputs for the public tests failed:\n"
                              f"{done.stderr[-3000:]}\nfix this tree's exercises first.")
    (out / VERSION_FILE).write_text(json.dumps({"course_version": course_version(root)}) + "\n")
    return out, blanked


def read_submission(path):
    """A submission -> ({file: {exercise number: [region code, ...]}}, manifest). `path` is a
    student folder or a zip made by `submit`."""
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if not {"manifest.json", "regions.json"} <= names:
                raise AssignmentError(f"{path} holds no manifest.json and regions.json; make it "
                                      "with `python course/assignments.py submit DIR --out FILE`.")
            manifest = json.loads(z.read("manifest.json"))
            answers = {f: {int(n): list(codes) for n, codes in by_number.items()}
                       for f, by_number in json.loads(z.read("regions.json")).items()}
        return answers, manifest
    if not path.is_dir():
        raise AssignmentError(f"{path} is neither a folder nor a zip file; pass the student's "
                              "folder or the zip that `submit` made.")
    answers = {}
    for rel in EXERCISE_FILES:
        if (path / rel).is_file():
            answers[rel] = region_code((path / rel).read_text(), rel)
    version = path / VERSION_FILE
    manifest = json.loads(version.read_text()) if version.is_file() else {
        "course_version": "unknown"}
    return answers, manifest


def submit(folder, out):
    """Pack the marked regions of a student folder (and a manifest) into the zip `out`."""
    folder, out = Path(folder), Path(out)
    if not (folder / "dt.py").is_file():
        raise AssignmentError(f"{folder} has no dt.py; pass your copy of the course folder.")
    answers, manifest = read_submission(folder)
    manifest.update(made=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    files=sorted(answers))
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", json.dumps(manifest, indent=1) + "\n")
        z.writestr("regions.json", json.dumps(answers, indent=1) + "\n")
    return out


def _answers_for(number, answers, reference_text, rel):
    """The submission's regions of exercise `number` in file `rel`, or None (left blank) when
    the submission lacks them; an error when it has a different number of them."""
    theirs = answers.get(rel, {}).get(number)
    if theirs is None:
        return None
    expected = len(region_code(reference_text, rel).get(number, []))
    if len(theirs) != expected:
        raise AssignmentError(f"the submission's {rel} has {len(theirs)} regions of exercise "
                              f"{number} where the course has {expected}; keep every "
                              "'# exercise N: begin/end' marker as it was given.")
    return theirs


def build_grading_tree(number, answers, dest, root=ROOT):
    """A fresh copy of `root`'s tracked files in `dest`, exercise `number` spliced in from
    `answers`, every other exercise blank."""
    dest = Path(dest)
    for rel in tracked_files(root):
        if rel.startswith(NOT_IN_GRADING_TREE):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel in EXERCISE_FILES:
            text = (root / rel).read_text()
            theirs = _answers_for(number, answers, text, rel)
            target.write_text(splice(text, {} if theirs is None else {number: theirs}, rel))
        else:
            shutil.copy2(root / rel, target)
    return dest


# ----------------------------------------------------------------------------- running tests

def run_tests(tree, test, number, timeout_s, select=None):
    """Run one test file in `tree` under course/grading.py; -> [(test name, outcome, message)]
    and the run's output. A test that never reported (the run was stopped) counts as failed."""
    tree = Path(tree)
    results = tree / f".course-results-{number}.jsonl"
    results.unlink(missing_ok=True)
    plugin = "course.grading" if (tree / "course" / "grading.py").is_file() else "grading"
    token = secrets.token_hex(16)            # handed over through a pipe, never the environment
    read_end, write_end = os.pipe()
    os.write(write_end, token.encode())
    os.close(write_end)
    env = dict(os.environ, COURSE_EXERCISE=str(number), COURSE_RESULTS=str(results),
               COURSE_TOKEN_FD=str(read_end), COURSE_TEST_TIMEOUT=str(timeout_s),
               PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=str(tree / "tests") if plugin == "grading" else "")
    args = [sys.executable, "-m", "pytest", test, "-p", plugin, "-q", "-p", "no:cacheprovider",
            "-o", "addopts=", "--rootdir", str(tree)] + (["-k", select] if select else [])
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(args, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT,
                                text=True, pass_fds=(read_end,))
        os.close(read_end)
        last, stopped = time.monotonic(), False
        while proc.poll() is None:   # stop a run whose current test outlives its limit
            time.sleep(0.2)
            if results.exists() and results.stat().st_mtime > time.time() - 1:
                last = time.monotonic()
            if time.monotonic() - last > timeout_s + STALL_S:
                proc.kill()
                proc.wait()
                stopped = True
        log.seek(0)
        output = log.read()
    lines = [json.loads(x) for x in results.read_text().splitlines()] if results.exists() else []
    lines = [x for x in lines if x.pop("token", None) == token]   # the plugin's lines only
    collected = next((x["collected"] for x in lines if "collected" in x), None)
    if not collected:
        return None, output
    reported = {x["nodeid"]: x for x in lines if "nodeid" in x}
    outcomes = []
    for nodeid in collected:
        name = nodeid.split("::", 1)[-1]
        if nodeid in reported:
            outcomes.append((name, reported[nodeid]["outcome"], reported[nodeid]["message"]))
        else:
            why = (f"the test did not finish: the run was stopped {timeout_s + STALL_S:g} s after "
                   "its last progress (a hang outside Python?)" if stopped else
                   "the test did not run: the run ended before it (see the output above)")
            outcomes.append((name, "failed", why))
    return outcomes, output


def grade(number, answers=None, timeout_s=TEST_TIMEOUT_S):
    """Exercise `number` graded: -> [dict(name, score, max_score, output, status)].
    answers None: this tree's own regions (or, in a student copy, its public tests in place)."""
    ex = exercise(number)
    public = not (ROOT / ex.test).is_file()
    if public and answers is not None:
        raise AssignmentError("grading a submission needs the instructor's tests, which a student "
                              "copy does not have; run it in the course repository.")
    if public:
        outcomes, output = run_tests(ROOT, "tests/test_exercises.py", ex.number, timeout_s,
                                     select=f"exercise_{ex.number}_")
    else:
        if answers is None:
            answers = read_submission(ROOT)[0]
        with tempfile.TemporaryDirectory(prefix=f"grade-{ex.number}-") as tmp:
            build_grading_tree(ex.number, answers, tmp)
            outcomes, output = run_tests(tmp, ex.test, ex.number, timeout_s)
    if outcomes is None:   # nothing was collected: the code does not even import
        return [dict(name=f"exercise {ex.number}: the tests could not start", score=0.0,
                     max_score=float(POINTS), status="failed",
                     output=f"{output[-3000:]}\nthe tests of exercise {ex.number} could not "
                            "start (see above): make your code import (no syntax errors).")]
    share = POINTS / len(outcomes)
    return [dict(name=f"exercise {ex.number}: {name}", max_score=share,
                 score=share if outcome == "passed" else 0.0, status=outcome,
                 output=message) for name, outcome, message in outcomes]


def print_results(number, tests):
    ex = exercise(number)
    print(f"exercise {ex.number}: {ex.title}")
    for t in tests:
        verdict = {"passed": "pass", "skipped": "skip"}.get(t["status"], "FAIL")
        print(f"  {verdict}  {t['score']:5.2f}/{t['max_score']:.2f}  "
              f"{t['name'].split(': ', 1)[-1]}")
        for line in t["output"].splitlines():
            print(f"              {line}")
    score = sum(t["score"] for t in tests)
    print(f"  {score:.2f}/{POINTS} points")
    return score


def write_results(path, tests, manifest):
    """The Gradescope-style results file: total score and one entry per test."""
    payload = {"score": round(sum(t["score"] for t in tests), 4),
               "max_score": float(POINTS * len({t["name"].split(":")[0] for t in tests})),
               "course_version": manifest.get("course_version", "unknown"),
               "tests": [{k: t[k] for k in ("name", "score", "max_score", "output", "status")}
                         for t in tests]}
    Path(path).write_text(json.dumps(payload, indent=1) + "\n")


# ----------------------------------------------------------------------------- command line

def parser():
    p = argparse.ArgumentParser(prog="python course/assignments.py",
                                description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="one line per exercise: number, title, files, tests, minutes")
    student = sub.add_parser("student", help="write the student copy of this tree")
    student.add_argument("dir", help="a new folder")
    pack = sub.add_parser("submit", help="pack the marked regions of a student folder")
    pack.add_argument("dir", help="the student's folder")
    pack.add_argument("--out", required=True, help="the zip to write, e.g. submission.zip")
    check = sub.add_parser("check", help="grade an exercise (or all) with points")
    check.add_argument("exercise", help="an exercise number, or all")
    check.add_argument("--submission", help="a student folder or a zip from submit (default: "
                                            "this tree's own regions)")
    check.add_argument("--json", help="write a results file (per test: name, score, "
                                      "max_score, output) here")
    check.add_argument("--timeout", type=float, default=TEST_TIMEOUT_S,
                       help=f"seconds per test (default {TEST_TIMEOUT_S})")
    return p


def main(argv=None):
    args = parser().parse_args(None if argv is None else [str(a) for a in argv])
    try:
        if args.command == "list":
            for ex in EXERCISES:
                print(f"{ex.number}  {ex.title}  [files: {', '.join(ex.files)}]  "
                      f"[tests: {ex.test}]  (~{ex.minutes} min, {POINTS} points)")
        elif args.command == "student":
            out, blanked = make_student_copy(args.dir)
            print(f"wrote the student copy to {out} ({blanked} files blanked); students read "
                  "ASSIGNMENTS.md there.")
        elif args.command == "submit":
            print(f"wrote {submit(args.dir, args.out)}: hand in this file.")
        else:
            numbers = ([ex.number for ex in EXERCISES] if args.exercise == "all"
                       else [exercise(args.exercise).number])
            answers, manifest = (read_submission(args.submission) if args.submission
                                 else (None, {"course_version": course_version()}))
            tests, full = [], True
            for number in numbers:
                graded = grade(number, answers, args.timeout)
                full = print_results(number, graded) >= POINTS - 1e-9 and full
                tests += graded
            if len(numbers) > 1:
                print(f"total {sum(t['score'] for t in tests):.2f}/{POINTS * len(numbers)}")
            if args.json:
                write_results(args.json, tests, manifest)
                print(f"wrote {args.json}")
            sys.exit(0 if full else 1)
    except AssignmentError as e:
        sys.exit(f"error: {e}")
    except OSError as e:  # a full disk, a file-size limit, a folder it may not write
        where = e.filename2 or e.filename or "a file"
        sys.exit(f"error: cannot write {where} ({e.strerror or e}); free some disk space or "
                 "write elsewhere, then run the command again.")


if __name__ == "__main__":
    main()
