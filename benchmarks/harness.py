"""What the scripts in this folder share: the repository root on sys.path, and write_results.

The timing harness itself is timing.py in this folder (`time_cases`, `ratio`, the cases
profile.py times). The root is appended to sys.path, not prepended: profile.py there shares its
name with the standard library's `profile` (see profile.py's docstring).
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))

from cli import write_json  # noqa: E402  (the repository root is on sys.path from here)


def write_results(path, results):
    """results as JSON at path (its folder made if missing), atomically; says so."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    print(f"wrote {write_json(path, results)}")
