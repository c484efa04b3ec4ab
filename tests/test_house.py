"""The house: imports between the project's files point one way, and no file grows too long."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = {p.stem: p for p in ROOT.glob("*.py")}


def project_imports(path):
    """The project modules a file imports, at module or function level; what only its
    `if __name__ == "__main__":` block imports is left out (a script may call anything)."""
    tree = ast.parse(path.read_text())
    main_blocks = [node for node in tree.body if isinstance(node, ast.If)
                   and "__main__" in ast.unparse(node.test)]
    skipped = {id(n) for block in main_blocks for n in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(MODULES) - {path.stem}


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
    for scan_file in ("scan_torch", "scan_cpu", "scan_kernel"):  # fast paths never import the model
        assert not graph[scan_file] & {"ssm", "dt", "train", "evaluate"}, scan_file
    assert not graph["ssm"] & {"dt", "train", "evaluate", "data"}
    assert not graph["dt"] & {"train", "evaluate", "data", "collect"}
    assert "collect" not in graph["td3"]  # collect.py -> td3.py, never back
    assert not graph["stats"] & {"report", "render", "profile"}
    assert "profile" not in graph["timing"] | graph["render"]


def test_no_python_file_is_over_500_lines_or_has_a_line_over_100_columns():
    files = list(MODULES.values()) + list((ROOT / "benchmarks").glob("*.py"))
    too_long = {p.name: n for p in files if (n := len(p.read_text().splitlines())) > 500}
    assert not too_long, too_long
    wide = {p.name: [i + 1 for i, line in enumerate(p.read_text().splitlines()) if len(line) > 100]
            for p in files}
    assert not {name: lines for name, lines in wide.items() if lines}


def test_the_mamba_block_comes_early_in_ssm_py():
    lines = (ROOT / "ssm.py").read_text().splitlines()
    assert next(i for i, line in enumerate(lines) if line.startswith("class MambaBlock")) < 250
