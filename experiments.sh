#!/usr/bin/env bash
# The comparison behind REPORT.md as a list of independent jobs, one shell command per line:
# {hopper, halfcheetah, walker2d} x {medium, medium-replay, medium-expert} x {dt, mamba} x seeds,
# all with `train.py --preset report`, then the Decision Mamba trained on whole episodes
# (`--context full`, acting recurrently) on each env's medium data, one episode per batch: about
# the env steps of a K=20 batch of 32 windows (640), since the medium episodes average 740 or
# fewer steps.
#
#   bash experiments.sh pilot           the pilot that chose the step budget of --preset report:
#                                       both models on each env's medium data, seed 0, 10k steps,
#                                       20-episode evaluations every 1k (records: results/pilot/)
#   bash experiments.sh pilot2-jobs     the protocol pilot (results/pilot-v2/RULE.md: three recipes
#                                       x {walker2d, hopper} medium x {dt, mamba} x seeds 0-2)
#   bash experiments.sh pilot2 [N]      run its unfinished jobs, N at a time (default 2)
#   bash experiments.sh pilot-me-jobs   the medium-expert pilot (results/pilot-me/RULE.md: cosine
#                                       16000 steps x {hopper, walker2d} medium-expert x {dt, mamba}
#                                       x seeds 0-2); pilot-me [N] runs them, N at a time
#   bash experiments.sh pilot-long-jobs the long-budget check (results/pilot-long/RULE.md: cosine
#                                       48000 steps x hopper medium-expert x {dt, mamba} x seeds
#                                       0-2); pilot-long [N] runs them, N at a time
#   bash experiments.sh pilot-paper-jobs the paper-recipe check (results/pilot-paper/RULE.md: the
#                                       DT with --preset paper on hopper medium-expert, seeds
#                                       0-2); pilot-paper [N] runs them, N at a time
#   bash experiments.sh jobs            print the job list (the same list every time)
#   SCHEDULE=S BUDGET=N ESTIMATOR=E bash experiments.sh jobs|run|memory-jobs|memory
#                                       the second protocol, once the pilot's rule has chosen
#                                       (S constant|cosine, N steps, E last|ema|mean3): 5 seeds
#                                       (SEEDS), runs in runs/report-v2/, the score on test seeds
#                                       with that estimator; memory-jobs / memory: issue 28's
#                                       variants on hopper and walker2d medium, 3 seeds
#   bash experiments.sh data            make every dataset the jobs use (run does it first too)
#   bash experiments.sh run [N]         run the jobs not finished yet, N at a time (default 2)
#   bash experiments.sh one NAME FLAGS  one job: what each line of the list calls
#   python benchmarks/report.py results/report-runs/* --before results/report-runs-v1/* \
#     --pilot results/pilot/* --pilot-v2 results/pilot-v2 --pilot-me results/pilot-me \
#     --pilot-long results/pilot-long --pilot-paper results/pilot-paper --out REPORT.md --force
#                                       then write the report (REPORT.md's runs: SCHEDULE=cosine
#                                       BUDGET=4000 ESTIMATOR=last, the pilot's choice)
#
# One job trains runs/report/NAME (continuing its checkpoint if an earlier job was killed; a
# folder left without a checkpoint is cleared first), evaluates its last checkpoint on 100
# episodes at the DT paper's two targets, sweeps six targets (seed 0, medium and medium-replay:
# the return-conditioning figure), and copies the small run records (config.json,
# metrics.jsonl, eval.json, targets.json) to results/report-runs/NAME/.
# A job whose records are there is finished and is skipped. Every job uses one torch thread.
#
# On a cluster, each line is one array task (SLURM):
#   bash experiments.sh jobs > jobs.txt
#   sbatch --array=1-$(wc -l < jobs.txt) --cpus-per-task=1 --wrap 'sed -n "${SLURM_ARRAY_TASK_ID}p" jobs.txt | bash'
# `run`, `memory` and `pilot2` first make the datasets their jobs need, one at a time (policies/
# collect.py dataset), so that two jobs never write the same file; on a cluster, run
# `bash experiments.sh data` once before the array.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python}
export OMP_NUM_THREADS=1
# The protocol: v1 (REPORT.md so far) is --preset report and the last checkpoint; v2 is what the
# protocol pilot chose (results/pilot-v2/RULE.md), given as SCHEDULE, BUDGET and ESTIMATOR.
if [ -n "${SCHEDULE:-}${BUDGET:-}${ESTIMATOR:-}" ]; then
  case "${SCHEDULE:-}/${ESTIMATOR:-}" in constant/* | cosine/*) ;; *)
    echo "error: set SCHEDULE (constant|cosine), BUDGET (steps) and ESTIMATOR (last|ema|mean3) together, as results/pilot-v2's rule chose." >&2; exit 2 ;;
  esac
  case "${BUDGET:-}" in '' | *[!0-9]*) echo "error: BUDGET must be a number of steps, got '${BUDGET:-}'." >&2; exit 2 ;; esac
  TRAIN_RECIPE=(--steps "$BUDGET" --lr-schedule "$SCHEDULE" --eval-every 1000 --eval-episodes 20
                --save-every 1000)
  case $ESTIMATOR in
    last) EVAL_ESTIMATOR=() ;;
    ema) TRAIN_RECIPE+=(--ema 0.999); EVAL_ESTIMATOR=(--weights ema) ;;
    mean3) TRAIN_RECIPE+=(--keep-last 3 --keep-every 1000); EVAL_ESTIMATOR=(--last 3) ;;
    *) echo "error: ESTIMATOR must be last, ema or mean3, got '$ESTIMATOR'." >&2; exit 2 ;;
  esac
  RUNS=runs/report-v2; SEEDS=${SEEDS:-"0 1 2 3 4"}
  if grep -qsl '"preset": "report"' results/report-runs/*/config.json; then
    echo "error: results/report-runs/ still holds the first protocol's records (same names): move them first (git mv results/report-runs results/report-runs-v1)." >&2; exit 2
  fi
else
  TRAIN_RECIPE=(--preset report); EVAL_ESTIMATOR=(); RUNS=runs/report; SEEDS=${SEEDS:-"0 1 2"}
fi

declare -A HIGH=([hopper]=3600 [halfcheetah]=12000 [walker2d]=5000)  # the DT paper's targets
declare -A LOW=([hopper]=1800 [halfcheetah]=6000 [walker2d]=2500)

jobs() {  # dataset by dataset, all seeds of a cell together: a partial sweep has whole cells
  for dataset in medium medium-replay medium-expert; do
    for env in hopper halfcheetah walker2d; do
      for seed in $SEEDS; do
        for model in dt mamba; do
          echo "bash experiments.sh one $model-$env-$dataset-s$seed --model $model --env $env --dataset $dataset --seed $seed"
        done
      done
    done
  done
  for seed in $(echo "$SEEDS" | cut -d' ' -f1-3); do  # the whole-episode runs: 3 seeds
    for env in hopper halfcheetah walker2d; do
      echo "bash experiments.sh one mamba-$env-medium-full-s$seed --model mamba --env $env --dataset medium --seed $seed --context full --batch-size 1"
    done
  done
}

memory_jobs() {  # issue 28: positions only x {DT K=20, DT K=60, Mamba K=20, Mamba whole
  # episodes}, delayed reward x {DT, Mamba} K=20; hopper and walker2d medium, 3 seeds
  for env in hopper walker2d; do for seed in $(echo "$SEEDS" | cut -d' ' -f1-3); do
    local base="--env $env --dataset medium --seed $seed"
    echo "bash experiments.sh one dt-$env-medium-positions-s$seed --model dt $base --obs positions"
    echo "bash experiments.sh one dt-$env-medium-positions-k60-s$seed --model dt $base --obs positions --context 60"
    echo "bash experiments.sh one mamba-$env-medium-positions-s$seed --model mamba $base --obs positions"
    echo "bash experiments.sh one mamba-$env-medium-positions-full-s$seed --model mamba $base --obs positions --context full --batch-size 1"
    echo "bash experiments.sh one dt-$env-medium-delayed-s$seed --model dt $base --reward delayed"
    echo "bash experiments.sh one mamba-$env-medium-delayed-s$seed --model mamba $base --reward delayed"
  done; done
}

check_python() {  # one sentence instead of a failed job per line when torch is missing
  $PYTHON -c "import torch, gymnasium, h5py" 2> /dev/null || {
    echo "error: '$PYTHON' cannot import torch, gymnasium and h5py: activate the project's venv (. .venv/bin/activate) or set PYTHON, as README.md's install section says." >&2
    exit 2; }
}

make_data() {  # make_data < JOB_LINES: the datasets the jobs train on, made one at a time
  local env dataset
  sed -n 's/.*--env \([a-z0-9]*\) --dataset \([a-z-]*\).*/\1 \2/p' | sort -u |
    while read -r env dataset; do
      [ -f "data/$env-$dataset.hdf5" ] && continue
      echo "making data/$env-$dataset.hdf5 (policies/collect.py dataset)"
      $PYTHON policies/collect.py dataset --env "$env" --level "$dataset" < /dev/null \
        || { echo "error: making data/$env-$dataset.hdf5 failed (see above)." >&2; exit 2; }
    done
}

one() {  # one NAME TRAIN_FLAGS...
  local name=${1:-}
  case $name in  # NAME becomes a path that may be removed: letters, digits, - _ . only
    '' | . | .. | *[!A-Za-z0-9._-]*)
      echo "error: job name '$name' must be letters, digits, '-', '_' or '.' (not empty, '.' or '..'); pass a plain name such as dt-hopper-medium-s0." >&2
      return 2 ;;
  esac
  shift
  local run=$RUNS/$name record=results/report-runs/$name
  [ -f "$record/eval.json" ] && { echo "$name: finished (its records are in $record)"; return 0; }
  local env seed dataset context=20 resume=()
  env=$(flag --env "$@"); seed=$(flag --seed "$@"); dataset=$(flag --dataset "$@")
  context=$(flag --context "$@" || echo 20)
  if [ -f "$run/ckpt.pt" ]; then resume=(--resume)
  elif [ -d "$run" ] && [ ! -L "$run" ] && [ ! -e "$run/ckpt.pt" ]; then
    rm -rf "$run"  # killed before its first checkpoint: nothing to keep
  fi
  mkdir -p logs
  local log=logs/report-$name.log
  echo "$name: training (log: $log)"
  $PYTHON train.py "${TRAIN_RECIPE[@]}" --out "$run" "$@" "${resume[@]}" > "$log" 2>&1
  $PYTHON evaluate.py "$run" --episodes 100 --target "${HIGH[$env]}" "${LOW[$env]}" \
    "${EVAL_ESTIMATOR[@]}" >> "$log" 2>&1
  if [ "$seed" = 0 ] && [ "$context" != full ] && [ "$dataset" != medium-expert ] \
      && ! flag --obs "$@" > /dev/null && ! flag --reward "$@" > /dev/null; then
    local high=${HIGH[$env]}  # 10% to 125% of the high target: the dataset's range and beyond
    $PYTHON evaluate.py "$run" --episodes 20 --out "$run/targets.json" --target \
      $((high / 10)) $((high / 4)) $((high / 2)) $((3 * high / 4)) "$high" $((5 * high / 4)) \
      "${EVAL_ESTIMATOR[@]}" >> "$log" 2>&1
  fi
  mkdir -p "$record"
  for file in config.json metrics.jsonl targets.json eval.json; do  # eval.json last: "finished"
    [ -f "$run/$file" ] && cp "$run/$file" "$record/"
  done
  echo "$name: done"
}

flag() {  # flag NAME ARGS...: the value after NAME in ARGS (fails if absent)
  local name=$1; shift
  while [ $# -gt 1 ]; do [ "$1" = "$name" ] && { echo "$2"; return 0; }; shift; done
  return 1
}

pilot() {  # report.py --pilot applies the budget rule; a run may be stopped (Ctrl-C) once its
  # curve has settled: later evaluations cannot move the step at which it settled
  for env in hopper halfcheetah walker2d; do for model in mamba dt; do
    echo "$model $env"
  done; done | xargs -P 2 -L 1 sh -c 'run=runs/pilot/$0-$1-medium-s0
    '"$PYTHON"' train.py --model $0 --env $1 --dataset medium --seed 0 --steps 10000 \
      --eval-every 1000 --eval-episodes 20 --save-every 1000 --out $run $([ -f $run/ckpt.pt ] \
      && echo --resume) > logs/pilot-$0-$1.log 2>&1
    mkdir -p results/pilot/$0-$1-medium-s0 && cp $run/config.json $run/metrics.jsonl results/pilot/$0-$1-medium-s0/'
}

declare -A RECIPE=([const-8k]="--steps 8000" [cosine-8k]="--steps 8000 --lr-schedule cosine"
                   [cosine-4k]="--steps 4000 --lr-schedule cosine"
                   [cosine-16k]="--steps 16000 --lr-schedule cosine"
                   [cosine-48k]="--steps 48000 --lr-schedule cosine" [paper]="--preset paper")

pilot2_jobs() {  # walker2d first (hopper waits for its new medium data), cell by cell
  for env in walker2d hopper; do for model in dt mamba; do for seed in 0 1 2; do
    for recipe in cosine-4k const-8k cosine-8k; do
      echo "bash experiments.sh pilot-one pilot-v2 $recipe-$model-$env-medium-s$seed $recipe --model" \
           "$model --env $env --dataset medium --seed $seed"
    done
  done; done; done
}

pilot_me_jobs() {  # the cells over issue 24's bar; cosine-4k is the sweep's own runs
  for env in hopper walker2d; do for model in dt mamba; do for seed in 0 1 2; do
    echo "bash experiments.sh pilot-one pilot-me cosine-16k-$model-$env-medium-expert-s$seed" \
         "cosine-16k --model $model --env $env --dataset medium-expert --seed $seed"
  done; done; done
}

pilot_long_jobs() {  # hopper medium-expert only (walker2d was under the bar at 16000); the
  # Mamba runs (twice as long) first; no EMA and evaluations every 2000 steps, as RULE.md says
  for model in mamba dt; do for seed in 0 1 2; do
    echo "bash experiments.sh pilot-one pilot-long cosine-48k-$model-hopper-medium-expert-s$seed" \
         "cosine-48k --model $model --env hopper --dataset medium-expert --seed $seed" \
         "--ema 0 --eval-every 2000"
  done; done
}

pilot_paper_jobs() {  # the DT only (the Mamba was steady at 48000 steps); evaluations of 20
  # episodes every 5000 steps instead of the preset's 100 every 10000, no EMA, as RULE.md says
  for seed in 0 1 2; do
    echo "bash experiments.sh pilot-one pilot-paper paper-dt-hopper-medium-expert-s$seed paper" \
         "--model dt --env hopper --dataset medium-expert --seed $seed --ema 0 --eval-every 5000"
  done
}

pilot_one() {  # pilot-one PILOT NAME RECIPE TRAIN_FLAGS...: train on validation seeds, keep the
  # records in results/PILOT/NAME
  local pilot=$1 name=$2 recipe=$3; shift 3
  local run=runs/$pilot/$name record=results/$pilot/$name resume=()
  [ -f "$record/metrics.jsonl" ] && { echo "$name: finished ($record)"; return 0; }
  [ -f "$run/ckpt.pt" ] && resume=(--resume)
  mkdir -p logs
  echo "$name: training (log: logs/$pilot-$name.log)"
  # shellcheck disable=SC2086  # the recipe is a list of flags
  $PYTHON train.py ${RECIPE[$recipe]} --ema 0.999 --eval-every 1000 --eval-episodes 20 \
    --save-every 1000 --out "$run" "$@" "${resume[@]}" > "logs/$pilot-$name.log" 2>&1
  mkdir -p "$record"
  cp "$run/config.json" "$record/"
  cp "$run/metrics.jsonl" "$record/"  # last: its presence means "finished"
  echo "$name: done"
}

case ${1:-} in
  pilot2-jobs) pilot2_jobs ;;
  pilot-one) shift; pilot_one "$@" ;;
  pilot2) check_python; pilot2_jobs | make_data; pilot2_jobs | xargs -P "${2:-2}" -I{} sh -c '{} || echo "failed: {} (see logs/)"' ;;
  pilot-me-jobs) pilot_me_jobs ;;
  pilot-me) check_python; pilot_me_jobs | make_data; pilot_me_jobs | xargs -P "${2:-2}" -I{} sh -c '{} || echo "failed: {} (see logs/)"' ;;
  pilot-long-jobs) pilot_long_jobs ;;
  pilot-long) check_python; pilot_long_jobs | make_data; pilot_long_jobs | xargs -P "${2:-2}" -I{} sh -c '{} || echo "failed: {} (see logs/)"' ;;
  pilot-paper-jobs) pilot_paper_jobs ;;
  pilot-paper) check_python; pilot_paper_jobs | make_data; pilot_paper_jobs | xargs -P "${2:-2}" -I{} sh -c '{} || echo "failed: {} (see logs/)"' ;;
  jobs) jobs ;;
  memory-jobs) [ "$RUNS" = runs/report-v2 ] || { echo "error: the memory runs use the second protocol: set SCHEDULE, BUDGET and ESTIMATOR as the pilot chose." >&2; exit 2; }
               memory_jobs ;;
  memory) [ "$RUNS" = runs/report-v2 ] || { echo "error: set SCHEDULE, BUDGET and ESTIMATOR as the pilot chose." >&2; exit 2; }
          check_python; memory_jobs | make_data; memory_jobs | xargs -P "${2:-2}" -I{} sh -c '{} || echo "failed: {} (see its log in logs/)"' ;;
  pilot) mkdir -p logs; pilot ;;
  one) shift; one "$@" ;;
  data) check_python; { jobs; memory_jobs; } | make_data ;;
  run) check_python; jobs | make_data; jobs | xargs -P "${2:-2}" -I{} sh -c '{} || echo "failed: {} (see its log in logs/)"' ;;
  *) sed -n '2,/^set -e/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
