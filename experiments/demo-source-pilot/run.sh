#!/usr/bin/env bash
# Pilot for the demo's source model: short from-scratch runs on source.zip that vary what plausibly made the old
# source model collapse (R1 gamma, ADA, capacity), each judged by FID/KID of 900 generated images against
# source-heldout.zip (900 real). Usage: bash experiments/demo-source-pilot/run.sh [KIMG] [NAME ...]
# Runs go to runs/pilot/<name>; results to experiments/demo-source-pilot/results.jsonl (one line per evaluation).
# SNAP: ticks (of 2 kimg) between snapshots, default 2 (gamma-auto and gamma1-noaug ran with SNAP=3).
# STAGE=train or STAGE=eval does one half only (eval: every snapshot of runs/pilot/<name> not evaluated yet;
# EVAL_KIMG=6,12 evaluates only the snapshots of those kimg).
set -euo pipefail
cd "$(dirname "$0")/../.."
KIMG="${1:-12}"; shift || true
PY=.venv/bin/python
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
DATA=.cache/demo-data
OUT=experiments/demo-source-pilot
declare -A CFG=(
  [gamma-auto]="--cbase 4096 --cmax 64 --batch 32 --aug ada"
  [gamma1]="--cbase 4096 --cmax 64 --batch 32 --aug ada --gamma 1"
  [gamma1-noaug]="--cbase 4096 --cmax 64 --batch 32 --aug noaug --gamma 1"
  [gamma1-cmax128]="--cbase 8192 --cmax 128 --batch 32 --aug ada --gamma 1"
  [mbstd32-gamma0.1]="--cbase 4096 --cmax 64 --batch 32 --aug ada --gamma 0.1 --mbstd-group 32"
  [mbstd32-gamma0.1-lr0.001]="--cbase 4096 --cmax 64 --batch 32 --aug ada --gamma 0.1 --mbstd-group 32 --glr 0.001 --dlr 0.001"
)
STAGE="${STAGE:-both}"
NAMES=("$@"); [ ${#NAMES[@]} -gt 0 ] || NAMES=("${!CFG[@]}")
$PY -c "from stylegan_rlo.experiments.demo_data import build_demo_datasets; build_demo_datasets('$DATA', '.cache/demo-wheel')"
for name in "${NAMES[@]}"; do
  [ "$STAGE" = eval ] || $PY scripts/train.py --data $DATA/source.zip --outdir runs/pilot/$name --desc "$name" ${CFG[$name]} \
      --cfg auto --map-depth 2 --mirror 1 --kimg "$KIMG" --tick 2 --snap "${SNAP:-2}" --seed 0 --device cpu --workers 1 \
      --loss logistic
  [ "$STAGE" = train ] && continue
  for pkl in runs/pilot/$name/*/network-snapshot-*.pkl; do
    grep -qF "\"$pkl\"" $OUT/results.jsonl 2>/dev/null && continue
    kimg=$(basename "$pkl" .pkl); kimg=$((10#${kimg#network-snapshot-}))
    [ -z "${EVAL_KIMG:-}" ] || [[ ",$EVAL_KIMG," == *",$kimg,"* ]] || continue
    $PY scripts/calc_fid.py --network "$pkl" --data $DATA/source-heldout.zip --metrics fid,kid --num 900 \
        --device cpu | $PY -c "import json,sys; [print(json.dumps(dict(json.loads(l), config='$name', args='${CFG[$name]}', snapshot='$pkl'))) for l in sys.stdin]" \
        >> $OUT/results.jsonl
  done
done
