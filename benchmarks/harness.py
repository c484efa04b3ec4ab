"""profile.py's timing harness (time_cases, ratio, ...) for the scripts in this folder.

profile.py cannot be imported under its own name (that is the standard library's `profile`, for
which the file stands in when imported so; see its docstring), so it is loaded here as
`profile_py`. The repository root is appended to sys.path, not prepended, for the same reason.
"""
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))
_spec = importlib.util.spec_from_file_location("profile_py", ROOT / "profile.py")
profile_py = sys.modules["profile_py"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(profile_py)

from cli import write_json  # noqa: E402  (the repository root is on sys.path from here)


def write_results(path, results):
    """results as JSON at path (its folder made if missing), atomically; says so."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    print(f"wrote {write_json(path, results)}")
