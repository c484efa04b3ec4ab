"""A regenerated medium-replay file beside the trainer's own episodes up to the medium snapshot.

    python results/behaviour-policies/compare_replay.py data/hopper-medium-replay.hdf5 \
        results/behaviour-policies/td3-hopper-log.jsonl 180000

Every episode in the file counts (the last one ends at the file's end, marked as a timeout); the
trainer's episodes are the log lines with a return whose step is at most the medium step.
"""
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
import data  # noqa: E402

path, log, medium_step = sys.argv[1], sys.argv[2], int(sys.argv[3])
regenerated = np.array([t.rewards.sum(dtype=np.float64) for t in data.load_trajectories(path)])
rows = [json.loads(line) for line in open(log)]
trainer = np.array([r["return"] for r in rows if "return" in r and r["step"] <= medium_step])
for name, returns in (("regenerated", regenerated), ("trainer", trainer)):
    p10, p50, p90 = np.percentile(returns, [10, 50, 90])
    print(f"{name}: {returns.mean():.0f} +- {returns.std():.0f} over {len(returns)} episodes "
          f"(p10 / p50 / p90: {p10:.0f} / {p50:.0f} / {p90:.0f})")
