#!/usr/bin/env bash
# Re-create stylegan_rlo/assets/demo-source.pkl: the small "pretrained" StyleGAN2 that `make demo` fine-tunes on dogs.
# Trained from scratch on source.zip (the nine non-dog Animal-MNIST classes minus the 900 images of
# source-heldout.zip), 32x32 grayscale, on CPU. The configuration was chosen by the pilot in
# experiments/demo-source-pilot/ (see stylegan_rlo/assets/demo-source.md). Interrupted? Run it again: it resumes from the
# newest snapshot of runs/demo-source (kimg continues).
# Usage: bash scripts/pretrain_demo_source.sh [KIMG]
set -euo pipefail
cd "$(dirname "$0")/.."
KIMG="${1:-300}"
PY=.venv/bin/python
# One thread: on a 2-core machine shared with other work, two BLAS threads per process mostly wait on each other.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
$PY -c "from stylegan_rlo.experiments.demo_data import build_demo_datasets; build_demo_datasets('.cache/demo-data', '.cache/demo-wheel')"
last=$(ls -t runs/demo-source/*/network-snapshot-*.pkl 2>/dev/null | head -n 1 || true)
$PY scripts/train.py --data .cache/demo-data/source.zip --outdir runs/demo-source --desc pretrain \
    --cfg auto --cbase 4096 --cmax 64 --map-depth 2 --batch 32 --gamma 0.1 --mbstd-group 32 --glr 0.001 --dlr 0.001 \
    --mirror 1 --aug ada \
    --kimg "$KIMG" --tick 2 --snap 2 --seed 0 --device cpu --workers 1 --loss logistic ${last:+--resume "$last"}
