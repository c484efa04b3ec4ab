"""The house: the top level is the models and the scripts a user runs, imports between the
project's files point one way, and no file grows too long."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("policies", "benchmarks", "course")  # behaviour policies, measurement, the course
TOP_LEVEL = {p.stem: p for p in ROOT.glob("*.py")}
MODULES = {**TOP_LEVEL, **{f"{folder}.{p.stem}": p for folder in FOLDERS
                           for p in (ROOT / folder).glob("*.py")}}
DESIGN = ("dt", "ssm", "scan_kernel", "data", "train", "evaluate", "profile")
MODELS = ("cli", "data", "dt", "ssm", "scan_torch", "scan_cpu", "scan_kernel", "run_folder")


def module_name(path):
    return path.stem if path.parent == ROOT else f"{path.parent.name}.{path.stem}"


def project_imports(path):
    """The project modules a file imports, at module or function level; what only its
    `if __name__ == "__main__":` block imports is left out (a script may call anything). A plain
    name in a folder's file is a sibling where the folder has one (its folder comes first on
    sys.path when it runs), else a top-level module."""
    tree = ast.parse(path.read_text())
    main_blocks = [node for node in tree.body if isinstance(node, ast.If)
                   and "__main__" in ast.unparse(node.test)]
    skipped = {id(n) for block in main_blocks for n in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    sibling = {f"{path.parent.name}.{name}" for name in found} if path.parent != ROOT else set()
    return (found | sibling) & set(MODULES) - {module_name(path)}


def test_the_top_level_is_the_models_and_the_scripts_a_user_runs():
    assert len(TOP_LEVEL) <= 12, sorted(TOP_LEVEL)
    assert set(DESIGN) <= set(TOP_LEVEL)
    for name in ("td3", "collect", "report", "stats", "render", "timing", "assignments"):
        assert name not in TOP_LEVEL, f"{name}.py belongs in one of {FOLDERS}"


def test_train_py_is_short_and_imports_the_behaviour_policies_only_to_make_a_dataset():
    source = (ROOT / "train.py").read_text()
    assert len(source.splitlines()) < 400
    top = [node for node in ast.parse(source).body if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = {alias.name for node in top if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in top if isinstance(node, ast.ImportFrom)}
    assert not {name for name in names if name.split(".")[0] == "policies"}, names
    assert not {"td3", "collect"} & names


def test_project_modules_import_each_other_without_a_cycle():
    graph = {name: project_imports(path) for name, path in MODULES.items()}
    done, stack = set(), []

    def visit(name):  # depth-first; a module met again while on the stack closes a cycle
        assert name not in stack, "import cycle: " + " -> ".join(stack[stack.index(name):] + [name])
        if name in done:
            return
        stack.append(name)
        for other in sorted(graph[name]):
            visit(other)
        stack.pop()
        done.add(name)
    for name in sorted(graph):
        visit(name)


def test_arrows_point_one_way():
    graph = {name: project_imports(path) for name, path in MODULES.items()}
    assert graph["data"] <= {"cli"}
    assert graph["cli"] == set()
    for name in MODELS + ("evaluate",):  # the models never import a script or a folder's file
        assert not {m for m in graph[name] if "." in m or m in ("train", "profile")}, name
    for scan_file in ("scan_torch", "scan_cpu", "scan_kernel"):  # fast paths never import the model
        assert not graph[scan_file] & {"ssm", "dt", "train", "evaluate"}, scan_file
    assert not graph["ssm"] & {"dt", "train", "evaluate", "data"}
    assert not graph["dt"] & {"train", "evaluate", "data"}
    assert graph["train"] & {"policies.collect"}  # only to make a missing dataset (test above)
    assert "policies.collect" not in graph["policies.td3"]  # collect.py -> td3.py, never back
    assert not graph["benchmarks.stats"] & {"benchmarks.report", "benchmarks.render", "profile"}
    assert "profile" not in graph["benchmarks.timing"] | graph["benchmarks.render"]


def test_no_python_file_is_over_500_lines_or_has_a_line_over_100_columns():
    files = list(MODULES.values())
    too_long = {p.name: n for p in files if (n := len(p.read_text().splitlines())) > 500}
    assert not too_long, too_long
    wide = {p.name: [i + 1 for i, line in enumerate(p.read_text().splitlines()) if len(line) > 100]
            for p in files}
    assert not {name: lines for name, lines in wide.items() if lines}


def test_the_mamba_block_comes_early_in_ssm_py():
    lines = (ROOT / "ssm.py").read_text().splitlines()
    assert next(i for i, line in enumerate(lines) if line.startswith("class MambaBlock")) < 250


def loops_with_exp(path):
    """Line numbers of Python loops whose body calls exp (torch.exp, .exp(), exp2_, ...): the scan
    recurrence as a loop over time, decay exp(Δ A) inside. Triton kernels (@triton.jit) are
    compiled, not Python loops, and are left out."""
    tree = ast.parse(path.read_text())
    jitted = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
              and any("jit" in ast.unparse(d) for d in f.decorator_list) for n in ast.walk(f)}
    found = []
    for loop in ast.walk(tree):
        if isinstance(loop, (ast.For, ast.While)) and id(loop) not in jitted:
            calls = [c.func for c in ast.walk(loop) if isinstance(c, ast.Call)]
            names = {getattr(f, "attr", getattr(f, "id", "")) for f in calls}
            if names & {"exp", "exp_", "exp2", "exp2_"}:
                found.append(loop.lineno)
    return found


def test_the_scans_plain_loop_is_written_once_in_ssm_py():
    # Smoke checks compare one fast path with another; only the tests hold copies of the loop.
    assert loops_with_exp(ROOT / "ssm.py")                     # selective_scan_ref's loop
    copies = {name: lines for name, path in MODULES.items() if name != "ssm"
              and (lines := loops_with_exp(path))}
    assert not copies, f"the scan's loop is written again in {copies}"
