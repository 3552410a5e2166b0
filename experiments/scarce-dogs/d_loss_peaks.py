"""The largest tick mean of the discriminator loss in every run of an experiment-2 stage, beside the run's final FID.

Experiment 1's k=2 collapses came with discriminator-loss spikes (a tick mean of 200-600 where every other run stayed
below 1.6); this table shows whether the same holds here. Reads <out>/<stage>/runs/*/stats.jsonl and
<out>/<stage>/summary.json, writes experiments/scarce-dogs/<stage>/d-loss-peaks.md.

Usage: .venv/bin/python experiments/scarce-dogs/d_loss_peaks.py STAGE [STAGE ...]
"""

from __future__ import annotations

import json
import os
import sys

EXP = os.path.dirname(os.path.abspath(__file__))
OUT = os.environ.get("OUT", os.path.join(EXP, "out"))


def peak_d_loss(stats_path: str) -> float | None:
    """The largest per-tick mean of Loss/D/loss in a run's stats.jsonl (None when it has no ticks)."""
    means = []
    with open(stats_path) as f:
        for line in f:
            value = json.loads(line).get("Loss/D/loss") or {}
            if isinstance(value.get("mean"), (int, float)):
                means.append(value["mean"])
    return max(means) if means else None


def stage_table(stage: str) -> list[str]:
    """Markdown lines: arm, seed, final FID and peak D loss for every run of the stage's summary."""
    with open(os.path.join(OUT, stage, "summary.json")) as f:
        summary = json.load(f)
    lines = [f"# Discriminator-loss peaks, stage {stage}", "",
             "The largest tick mean of `Loss/D/loss` (one tick = 4 kimg here) of each run, and its final FID.", "",
             "| arm | seed | final FID | peak D loss (tick mean) |", "|---|---|---|---|"]
    for run in summary["runs"]:
        stats = os.path.join(run["run_dir"], "stats.jsonl")
        peak = peak_d_loss(stats) if os.path.isfile(stats) else None
        fid = run["points"][-1].get("fid50k_full")
        lines.append(f"| {run['arm']} | {run['seed']} | {fid:.2f} | {'-' if peak is None else f'{peak:.2f}'} |")
    return lines


if __name__ == "__main__":
    for name in sys.argv[1:]:
        path = os.path.join(EXP, name, "d-loss-peaks.md")
        with open(path + ".tmp", "w") as out:
            out.write("\n".join(stage_table(name)) + "\n")
        os.replace(path + ".tmp", path)
        print(f"Wrote {path}")
