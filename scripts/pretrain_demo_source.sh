#!/usr/bin/env bash
# Re-create stylegan_rlo/assets/demo-source.pkl (package data): the small "pretrained" StyleGAN2 that `make demo` fine-tunes on dogs.
# It is trained from scratch on the nine non-dog Animal-MNIST classes (32x32 grayscale), on CPU.
# Usage: bash scripts/pretrain_demo_source.sh [KIMG]   (the committed model: see stylegan_rlo/assets/demo-source.md)
set -euo pipefail
cd "$(dirname "$0")/.."
KIMG="${1:-60}"
PY=.venv/bin/python
# One thread: on a 2-core machine shared with other work, two BLAS threads per process mostly wait on each other.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
$PY -c "from stylegan_rlo.demo_data import build_demo_datasets; build_demo_datasets('.cache/demo-data', '.cache/demo-wheel')"
$PY scripts/train.py --data .cache/demo-data/source.zip --outdir runs/demo-source --desc pretrain \
    --cfg auto --cbase 4096 --cmax 64 --map-depth 2 --batch 16 --mirror 1 --aug ada \
    --kimg "$KIMG" --tick 2 --snap 2 --seed 0 --device cpu --workers 1 --loss logistic
