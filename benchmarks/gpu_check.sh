#!/usr/bin/env bash
# The GPU check in one command (what it runs: benchmarks/gpu_check.py's docstring, or --dry-run).
# Uses the repository's .venv python where there is one, else python (or python3) on PATH;
# installs nothing.
cd "$(dirname "$0")/.." || exit 1
python=python
command -v python >/dev/null || python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python
exec "$python" benchmarks/gpu_check.py "$@"
