"""stylegan_rlo.experiments.compare_stats against hand-computed references (float64 sums, a tabulated t quantile)."""

import math

import numpy as np
import pytest

from stylegan_rlo.experiments.compare_stats import (comparison_statistics, mean_sd, run_collapsed,
                                                     run_worse_than_start, statistics_markdown, t_interval)

T_975 = {1: 12.706204736, 2: 4.302652730, 4: 2.776445105}  # two-sided 95% Student t quantiles, from tables


def _run(objective, seed, fids, train_sec=10.0, kimgs=(0.0, 2.0, 4.0)):
    points = [dict(kimg=k, fid50k_full=f, kid50k_full=f / 1000) for k, f in zip(kimgs, fids)]
    return dict(objective=objective, loss=objective.split()[0], k=None, seed=seed, run_dir="r", points=points,
                train_sec=train_sec, eval_sec=0.0)


def _summary(runs, start_fid=100.0):
    return dict(config=dict(metrics=["fid50k_full", "kid50k_full"]), runs=runs,
                start=dict(kimg=0.0, fid50k_full=start_fid, kid50k_full=start_fid / 1000))


def test_mean_sd_and_t_interval_match_hand_computation():
    vals = [3.0, 5.0, 10.0]
    m = sum(vals) / 3
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / 2)
    assert mean_sd(vals) == dict(n=3, mean=pytest.approx(m, rel=1e-15), sd=pytest.approx(sd, rel=1e-15))
    assert mean_sd([7.0]) == dict(n=1, mean=7.0, sd=None)
    assert mean_sd([float("nan"), None, 2.0])["n"] == 1
    ci = t_interval(vals)
    half = T_975[2] * sd / math.sqrt(3)
    assert ci["low"] == pytest.approx(m - half, rel=1e-9) and ci["high"] == pytest.approx(m + half, rel=1e-9)
    assert t_interval([1.5]) == dict(n=1, mean=1.5, low=None, high=None)


def test_paired_differences_per_seed_and_snapshot():
    base = [_run("logistic", s, [100.0, 80.0 + s, 60.0 + 2 * s]) for s in range(5)]
    rooted = [_run("rooted k=8", s, [100.0, 78.0 + s * 1.5, 61.0 + s], train_sec=12.0) for s in (4, 0, 1, 2, 3)]
    stats = comparison_statistics(_summary(base + rooted))
    pair = stats["paired"]["rooted k=8"]
    assert pair["against"] == "logistic" and sorted(pair["seeds"]) == [0, 1, 2, 3, 4]
    at4 = next(s for s in pair["snapshots"] if s["kimg"] == 4.0)["fid50k_full"]
    d = np.array([(61.0 + s) - (60.0 + 2 * s) for s in range(5)])  # paired by seed, not by position
    half = T_975[4] * d.std(ddof=1) / math.sqrt(5)
    assert at4["n"] == 5 and at4["mean"] == pytest.approx(d.mean())
    assert (at4["low"], at4["high"]) == (pytest.approx(d.mean() - half), pytest.approx(d.mean() + half))
    obj = stats["arms"]["rooted k=8"]
    assert obj["runs"] == 5 and obj["collapsed"] == 0 and obj["worse_than_start"] == 0
    assert obj["sec_per_kimg"]["mean"] == pytest.approx(3.0)  # 12 s over 4 kimg
    snap2 = next(s for s in obj["snapshots"] if s["kimg"] == 2.0)["fid50k_full"]
    assert snap2["mean"] == pytest.approx(np.mean([78 + 1.5 * s for s in range(5)]))


def test_collapsed_and_worse_runs_are_counted_not_dropped():
    ok = _run("logistic", 0, [100.0, 90.0, 80.0])
    worse = _run("logistic", 1, [100.0, 90.0, 110.0])  # final FID above the start, within 1.2x
    blown = _run("logistic", 3, [100.0, 90.0, 121.0])  # more than 1.2x the start
    nan = _run("logistic", 2, [100.0, float("nan"), 80.0])
    summary = _summary([ok, worse, blown, nan])
    runs = (ok, worse, blown, nan)
    assert [run_collapsed(r, summary["start"], ["fid50k_full"]) for r in runs] == [False, False, True, True]
    assert [run_worse_than_start(r, summary["start"], ["fid50k_full"]) for r in runs] == [False, True, True, True]
    stats = comparison_statistics(summary)["arms"]["logistic"]
    assert (stats["runs"], stats["collapsed"], stats["worse_than_start"]) == (4, 2, 3)
    at2 = next(s for s in stats["snapshots"] if s["kimg"] == 2.0)["fid50k_full"]
    assert at2["n"] == 3  # the NaN is not averaged in, but the run is still counted
    md = "\n".join(statistics_markdown(comparison_statistics(summary), ["fid50k_full"], {"fid50k_full": "FID"}))
    assert "| logistic | 4 | 2 | 3 |" in md
