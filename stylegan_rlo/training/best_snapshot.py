"""Best-snapshot tracking: after each evaluation the run directory holds `best-<metric>.pkl`, an atomic copy of the
best snapshot so far, and `best-<metric>.json` saying which one it is (kimg, value, snapshot). A snapshot is ranked by
one number, better when lower: FID or KID. Precision and recall (pr50k3_inception) are two numbers that trade off
against each other, and the memorization fraction (mem50k_inception) flags copies rather than measuring quality, so
they rank nothing.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from typing import Sequence

from stylegan_rlo.fileio import atomic_write
from stylegan_rlo.training.options import TrainingOptionsError

RANKING_METRICS = ("fid50k_full", "kid50k_full")  # the metrics a best snapshot can be chosen by (lower is better)


def resolve_best_metric(best_metric: str | None, metrics: Sequence[str]) -> str | None:
    """The metric to track: `best_metric` (a name or shorthand among `metrics`), by default the first metric that
    ranks snapshots (None when none does)."""
    if best_metric is None:
        return next((name for name in metrics if name in RANKING_METRICS), None)
    # start-up: torch-fidelity (~1.5 s) loads only when --best-metric is given; the options are checked without it
    from stylegan_rlo.evaluation.metrics import PR_METRICS, MetricError, validate_metric_names
    try:
        names = validate_metric_names([best_metric])
    except MetricError as e:
        raise TrainingOptionsError(f"--best-metric: {e}") from e
    if names and names[0] not in RANKING_METRICS:
        why = "precision and recall are two numbers that trade off against each other, so neither ranks snapshots " \
            "alone" if names[0] in PR_METRICS else "it flags copied training images, it does not measure quality (a " \
            "generator of blank images copies nothing)"
        raise TrainingOptionsError(f"--best-metric {best_metric}: {why}; keep the best snapshot by "
                                   f"{' or '.join(RANKING_METRICS)} (evaluate it as well)")
    if not names or names[0] not in metrics:
        raise TrainingOptionsError(f"--best-metric {best_metric}: it must be one of the evaluated metrics "
                                   f"(--metrics {','.join(metrics) or 'none'})")
    return names[0]


def best_paths(run_dir: str, metric: str) -> tuple[str, str]:
    """(best-<metric>.pkl, best-<metric>.json) in run_dir."""
    base = os.path.join(run_dir, f"best-{metric}")
    return base + ".pkl", base + ".json"


def read_best(run_dir: str, metric: str) -> dict | None:
    """The recorded best {metric, kimg, value, snapshot}, or None before the first evaluation."""
    path = best_paths(run_dir, metric)[1]
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def update_best(run_dir: str, metric: str, value: float, snapshot_pkl: str, kimg: float) -> bool:
    """Make `snapshot_pkl` the best if `value` beats the recorded best (non-finite values never do)."""
    if not math.isfinite(value):
        return False
    current = read_best(run_dir, metric)
    if current is not None and not value < current["value"]:
        return False
    pkl_path, json_path = best_paths(run_dir, metric)
    with open(snapshot_pkl, "rb") as src, atomic_write(pkl_path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    with atomic_write(json_path, "w") as f:
        json.dump(dict(metric=metric, kimg=float(kimg), value=float(value),
                       snapshot=os.path.basename(snapshot_pkl)), f, indent=2)
    return True
