"""A regenerated medium-replay file beside the trainer's own episodes up to the medium snapshot.

    python results/behaviour-policies/compare_replay.py data/hopper-medium-replay.hdf5 \
        results/behaviour-policies/td3-hopper-log.jsonl 180000

Every episode in the file counts (the last one ends at the file's end, marked as a timeout); the
trainer's episodes are the log lines with a return whose step is at most the medium step.
"""
import json
import sys

import h5py
import numpy as np

path, log, medium_step = sys.argv[1], sys.argv[2], int(sys.argv[3])
with h5py.File(path) as f:
    rewards, ends = f["rewards"][:], np.flatnonzero(f["terminals"][:] | f["timeouts"][:])
starts = np.concatenate([[0], ends[:-1] + 1])
regenerated = np.array([rewards[s:e + 1].sum() for s, e in zip(starts, ends)])
rows = [json.loads(line) for line in open(log)]
trainer = np.array([r["return"] for r in rows if "return" in r and r["step"] <= medium_step])
for name, returns in (("regenerated", regenerated), ("trainer", trainer)):
    p10, p50, p90 = np.percentile(returns, [10, 50, 90])
    print(f"{name}: {returns.mean():.0f} +- {returns.std():.0f} over {len(returns)} episodes "
          f"(p10 / p50 / p90: {p10:.0f} / {p50:.0f} / {p90:.0f})")
