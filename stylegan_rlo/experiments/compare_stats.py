"""Statistics of a comparison over seeds: mean +- sd per arm and snapshot, paired differences against the first arm
with 95% t confidence intervals, sec/kimg, and the runs that collapsed or ended worse than the start network
(counted, never dropped).

Pairing: runs of two arms with the same seed share the start network, the data order and the metric latents, so
their difference removes the seed's own luck; the interval is Student's t on the per-seed differences.
Works on the summary dict that experiments.compare writes (summary.json), so it can be re-run on old outputs (those
written before arms existed group runs by their objective).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats as scipy_stats

CONFIDENCE = 0.95
# A run collapsed when its final FID is more than this factor above the start network's: a margin far beyond the
# seed-to-seed spread of the runs that did not blow up (sd 4-7 FID at about 148 in both dog experiments), which
# short fine-tuning runs easily end slightly above, so "worse than the start" is counted on its own.
COLLAPSE_FACTOR = 1.2


def mean_sd(values: Sequence[float]) -> dict:
    """n, mean and sample standard deviation (ddof=1; None for a single value) of the finite values."""
    vals = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if len(vals) == 0:
        return dict(n=0, mean=None, sd=None)
    return dict(n=int(len(vals)), mean=float(vals.mean()), sd=float(vals.std(ddof=1)) if len(vals) > 1 else None)


def t_interval(diffs: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """Mean of paired differences with its two-sided Student-t confidence interval (None bounds for n < 2)."""
    d = np.asarray(diffs, dtype=np.float64)
    out = dict(n=int(len(d)), mean=float(d.mean()) if len(d) else None, low=None, high=None)
    if len(d) >= 2:
        half = scipy_stats.t.ppf(0.5 + confidence / 2, df=len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
        out.update(low=float(d.mean() - half), high=float(d.mean() + half))
    return out


def _is_finite(value) -> bool:
    return value is not None and math.isfinite(value)


def _final_and_start_fid(run: dict, start: dict, names: Sequence[str]) -> tuple[float, float] | None:
    fid = next((n for n in names if n.startswith("fid")), None)
    if fid and len(run["points"]) > 1 and _is_finite(start.get(fid)) and _is_finite(run["points"][-1].get(fid)):
        return run["points"][-1][fid], start[fid]
    return None


def run_collapsed(run: dict, start: dict, names: Sequence[str]) -> bool:
    """A run collapsed when any of its metric values is non-finite or its last FID is more than COLLAPSE_FACTOR
    times the start network's."""
    values = [p.get(n) for p in run["points"][1:] for n in names]
    if any(v is None or not math.isfinite(v) for v in values):
        return True
    fids = _final_and_start_fid(run, start, names)
    return bool(fids and fids[0] > COLLAPSE_FACTOR * fids[1])


def run_worse_than_start(run: dict, start: dict, names: Sequence[str]) -> bool:
    """The run's last FID is above the start network's (fine-tuning made it worse; collapsed runs included)."""
    fids = _final_and_start_fid(run, start, names)
    return run_collapsed(run, start, names) or bool(fids and fids[0] > fids[1])


def value_names(summary: dict) -> list[str]:
    """The values of each point, in the order of the comparison's metrics: the metric's name, or for a metric with
    several results (pr50k3_inception) the result names that start with it (taken from the shared start point)."""
    start = summary["start"]
    out: list[str] = []
    for metric in summary["config"]["metrics"]:
        out += [metric] if metric in start else sorted(k for k in start if k.startswith(metric + "_"))
    return out


def arm_label(run: dict) -> str:
    """The arm a run of a summary belongs to (summaries written before arms name its objective instead)."""
    return run["arm"] if "arm" in run else run["objective"]


def _kimgs(runs: Sequence[dict]) -> list[float]:
    return sorted({p["kimg"] for r in runs for p in r["points"]})


def _value_at(run: dict, kimg: float, name: str):
    return next((p.get(name) for p in run["points"] if p["kimg"] == kimg), None)


def comparison_statistics(summary: dict) -> dict:
    """Per arm: runs, collapsed and worse-than-start counts, sec/kimg, and per snapshot mean/sd of every metric; per
    other arm and snapshot: the paired difference (arm - first arm) over the shared seeds with its t interval."""
    names, runs, start = value_names(summary), summary["runs"], summary["start"]
    labels = list(dict.fromkeys(arm_label(r) for r in runs))
    per_arm = {}
    for label in labels:
        group = [r for r in runs if arm_label(r) == label]
        speeds = [r["train_sec"] / r["points"][-1]["kimg"] for r in group
                  if len(r["points"]) > 1 and r["points"][-1]["kimg"] > 0]
        per_arm[label] = dict(
            runs=len(group), seeds=[r["seed"] for r in group],
            collapsed=sum(run_collapsed(r, start, names) for r in group),
            worse_than_start=sum(run_worse_than_start(r, start, names) for r in group),
            sec_per_kimg=mean_sd(speeds),
            snapshots=[dict(kimg=k, **{n: mean_sd([_value_at(r, k, n) for r in group]) for n in names})
                       for k in _kimgs(group)])
    paired = {}
    if labels:
        base = {r["seed"]: r for r in runs if arm_label(r) == labels[0]}
        for label in labels[1:]:
            other = {r["seed"]: r for r in runs if arm_label(r) == label}
            seeds = [s for s in other if s in base]
            rows = []
            for k in _kimgs([base[s] for s in seeds] + [other[s] for s in seeds]):
                row = dict(kimg=k)
                for n in names:
                    pairs = [(_value_at(other[s], k, n), _value_at(base[s], k, n)) for s in seeds]
                    row[n] = t_interval([a - b for a, b in pairs if _is_finite(a) and _is_finite(b)])
                rows.append(row)
            paired[label] = dict(against=labels[0], seeds=seeds, snapshots=rows)
    return dict(confidence=CONFIDENCE, interval="Student t on per-seed paired differences",
                arms=per_arm, paired=paired)


def metric_cell(name: str, value: float | None) -> str:
    """A metric value as the summaries print it: KID to 4 decimals, precision/recall and the memorization fraction
    to 3, FID to 2, '-' for none."""
    if value is None:
        return "-"
    if name.startswith(("pr", "mem")):
        return f"{value:.3f}"
    return f"{value:.4f}" if name.startswith("kid") else f"{value:.2f}"


def markdown_table(rows: list[list[str]], header: list[str]) -> list[str]:
    """Lines of a markdown table."""
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"] + \
        ["| " + " | ".join(r) + " |" for r in rows]


def statistics_markdown(stats: dict, names: Sequence[str], labels: dict[str, str]) -> list[str]:
    """Markdown lines: mean +- sd per arm and snapshot, paired differences with CIs, speed, collapses.
    `labels` maps metric names to column titles (FID, KID)."""
    title = {n: labels.get(n, n) for n in names}
    lines = ["## Mean ± sd over seeds, per snapshot", ""]
    rows = []
    for label, arm in stats["arms"].items():
        for snap in arm["snapshots"]:
            rows.append([label, f"{snap['kimg']:g}", str(max(snap[n]["n"] for n in names))] +
                        [f"{metric_cell(n, snap[n]['mean'])} ± {metric_cell(n, snap[n]['sd'])}" for n in names])
    lines += markdown_table(rows, ["arm", "kimg", "runs"] + [f"{title[n]} (mean ± sd)" for n in names])
    pct = f"{stats['confidence'] * 100:g}%"
    for label, pair in stats["paired"].items():
        lines += ["", f"## Paired difference: {label} minus {pair['against']} (same seeds: "
                      f"{', '.join(map(str, pair['seeds'])) or 'none'})", "",
                  f"Negative is better for {label}"
                  + ("; for precision and recall, positive" if any(n.startswith("pr") for n in names) else "")
                  + f". {pct} interval: {stats['interval']}; an interval that "
                  "contains 0 means no difference was detected at this number of seeds.", ""]
        rows = [[f"{snap['kimg']:g}", str(max(snap[n]["n"] for n in names))] +
                [f"{metric_cell(n, snap[n]['mean'])} [{metric_cell(n, snap[n]['low'])}, "
                 f"{metric_cell(n, snap[n]['high'])}]" for n in names]
                for snap in pair["snapshots"] if snap["kimg"] > 0]
        lines += markdown_table(rows, ["kimg", "pairs"] + [f"Δ{title[n]} [{pct} CI]" for n in names])
    lines += ["", "## Speed and collapses", ""]
    rows = [[label, str(arm["runs"]), str(arm["collapsed"]), str(arm["worse_than_start"]),
             "-" if arm["sec_per_kimg"]["mean"] is None else
             f"{arm['sec_per_kimg']['mean']:.1f} ± {arm['sec_per_kimg']['sd'] or 0:.1f}"]
            for label, arm in stats["arms"].items()]
    lines += markdown_table(rows, ["arm", "runs", f"collapsed (non-finite, or final FID > {COLLAPSE_FACTOR:g} x start)",
                                   "final FID above start", "sec/kimg (training)"])
    return lines
