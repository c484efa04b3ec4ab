#!/usr/bin/env bash
# The comparison behind REPORT.md: both models, three seeds, on the medium datasets of the three
# envs and on hopper medium-replay, with the default (CPU-sized) training config, plus a
# long-context pair (Decision Mamba trained on whole episodes and evaluated recurrently).
# Runs go to runs/report/; two at a time, one torch thread each. Then:
#   python report.py runs/report/* --out REPORT.md
# Usage: [SEEDS="0 1 2"] bash experiments.sh [STEPS] [EVAL_EPISODES]
set -euo pipefail
cd "$(dirname "$0")"
STEPS=${1:-500}
EPISODES=${2:-20}
SEEDS=${SEEDS:-"0 1 2"}
export OMP_NUM_THREADS=1
mkdir -p runs/report logs

run() {  # run NAME ARGS...: skip a run that already has its eval.json
  local name=$1; shift
  [ -f "runs/report/$name/eval.json" ] && return 0
  python train.py --out "runs/report/$name" --steps "$STEPS" --eval-episodes "$EPISODES" "$@" \
    > "logs/report-$name.log" 2>&1 || echo "run $name failed: see logs/report-$name.log"
}

# make every dataset first, so that two parallel runs never generate the same file
for env_dataset in "hopper medium" "halfcheetah medium" "hopper medium-replay" "walker2d medium"; do
  set -- $env_dataset
  [ -f "data/$1-$2.hdf5" ] || python collect.py dataset --env "$1" --level "$2"
done

jobs=()
for seed in $SEEDS; do
  for env_dataset in "hopper medium" "halfcheetah medium" "walker2d medium" "hopper medium-replay"; do
    set -- $env_dataset
    for model in dt mamba; do
      jobs+=("$model-$1-$2-s$seed --model $model --env $1 --dataset $2 --seed $seed")
    done
  done
  # long context: Decision Mamba on whole episodes, acting recurrently (compare with dt-hopper-medium)
  [ $seed = 0 ] && jobs+=("mamba-hopper-medium-full-s0 --model mamba --env hopper --dataset medium --seed 0 --context full --batch-size 4 --steps 200 --eval-mode recurrent")
done

for ((i = 0; i < ${#jobs[@]}; i += 2)); do
  run ${jobs[i]} &
  [ $((i + 1)) -lt ${#jobs[@]} ] && run ${jobs[i + 1]} &
  wait
done
