#!/usr/bin/env bash
# Same numbers as before a refactor: train the DT and the Mamba for 60 steps (evaluated at 30 and
# 60) in a git worktree at REV and in this tree, on the same data, then compare the losses and
# the evaluation returns digit for digit.
#
#   bash benchmarks/same_numerics.sh REV [DATA.hdf5]     (default data/walker2d-medium.hdf5)
#
# Prints "dt: identical losses and returns" and the same for mamba, or the lines that differ and
# exits 1. Takes a few minutes on a 2-core CPU. Runs saved before REV's checkpoint format changed
# are not needed: both trees train from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: bash benchmarks/same_numerics.sh REV [DATA.hdf5]}
data=$(realpath "${2:-data/walker2d-medium.hdf5}")
[ -f "$data" ] || { echo "error: $data not found: make it first (python policies/collect.py dataset ...)." >&2; exit 2; }
env=$(basename "$data" | cut -d- -f1)
here=$(pwd)
tmp=$(mktemp -d)
trap 'git -C "$here" worktree remove --force "$tmp/before" > /dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
git worktree add -q --detach "$tmp/before" "$rev"
numbers() { grep -o '"loss": [^,}]*\|"return_mean": [^,}]*' "$1/metrics.jsonl"; }
status=0
for model in dt mamba; do
  for tree in before now; do
    dir=$([ $tree = before ] && echo "$tmp/before" || echo "$here")
    (cd "$dir" && OMP_NUM_THREADS=1 ${PYTHON:-python} train.py --model $model --env "$env" \
      --data "$data" --steps 60 --log-every 20 --eval-every 30 --eval-episodes 3 \
      --max-episode-steps 50 --out "$tmp/$model-$tree" > "$tmp/$model-$tree.log" 2>&1) \
      || { echo "error: training $model in the $tree tree failed: see below" >&2;
           tail -5 "$tmp/$model-$tree.log" >&2; exit 1; }
  done
  if diff <(numbers "$tmp/$model-before") <(numbers "$tmp/$model-now"); then
    echo "$model: identical losses and returns"
  else
    echo "$model: the numbers differ (lines above: < before, > now)"; status=1
  fi
done
exit $status
