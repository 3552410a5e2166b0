"""The training benchmark runs the loop's own TrainingStep on networks built by the training set-up's builders."""

from __future__ import annotations

import math

import pytest

from stylegan_rlo.bench import training as bench
from stylegan_rlo.training import config as training_config
from stylegan_rlo.training import step as training_step


def test_bench_builds_like_training_and_times_the_step(monkeypatch, one_thread):
    built = []
    original = training_step.build_networks

    def spy(G_kwargs, D_kwargs, device):
        built.append((G_kwargs, D_kwargs))
        return original(G_kwargs, D_kwargs, device)

    monkeypatch.setattr(bench, "build_networks", spy)
    result = bench.run_bench(res=8, cbase=64, cmax=16, batch=2, map_depth=1, iters=2, warmup=1, objective="rooted:2")
    assert (result["loss"], result["k"], result["iters"], result["batch"]) == ("rooted", 2.0, 2, 2)
    assert math.isfinite(result["sec_per_kimg"]) and result["sec_per_kimg"] > 0
    want = training_config.fresh_networks(training_config.cfg_spec("auto", 8, 1), "auto", 8, 3, 0, 64, 16, 1)
    assert built == [want]


def test_bench_refuses_an_out_of_range_root():
    with pytest.raises(ValueError, match="must lie in"):
        bench.run_bench(objective="rooted:1e308")


def test_bench_other_workload_and_profile(one_thread):
    """--channels/--mbstd-group reach the networks; --profile sums the timed iterations per phase and operator."""
    result = bench.run_bench(res=8, cbase=64, cmax=16, batch=4, map_depth=1, iters=4, warmup=0, channels=1,
                             mbstd_group=4, profile=True)
    assert (result["channels"], result["mbstd_group"]) == (1, 4)
    phases = result["profile"]["phases"]
    # Iterations 0..3: Gmain and Dmain every time, Greg at 0 (interval 4), Dreg at 0 (interval 16).
    assert {"Gmain", "Greg", "Dmain", "Dreg", "guard+Adam+EMA", "iteration"} <= set(phases)
    parts = sum(ms for name, ms in phases.items() if name != "iteration")
    assert phases["iteration"] > 0 and parts == pytest.approx(phases["iteration"], rel=1e-6)
    names = [row[0] for row in result["profile"]["ops"]]
    assert any("conv" in name for name in names)
    shares = [row[2] for row in result["profile"]["ops"]]
    assert shares == sorted(shares, reverse=True) and sum(shares) <= 100 + 1e-6
