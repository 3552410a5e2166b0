"""The objective comparison (experiments.compare, scripts/compare_objectives.py): a tiny end-to-end comparison on
the fixture network, checked against the runs' own metric records, stats and an independent rendering of the grids;
option parsing and CLI errors."""

from __future__ import annotations

import glob
import json
import os
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from training_fixtures import TINY_COND, TINY_UNCOND, make_zip

from stylegan_rlo.checkpoints.pickles import load_network_pkl
from stylegan_rlo.cli.compare_objectives import main as cli_main
from stylegan_rlo.errors import UserError
from stylegan_rlo.evaluation import metrics
from stylegan_rlo.experiments import compare, compare_run
from stylegan_rlo.experiments.arms import ArmError, objective_arms
from stylegan_rlo.experiments.compare import CompareError, compare_objectives, parse_seeds
from stylegan_rlo.training.preemption import TrainingStopped

METRICS = ["fid50k_full", "kid50k_full"]
GRID = (2, 2)
STRIP = 14  # title strip height of compare_run.save_labelled_blocks
ZOOM = 2  # 32x32 images are shown at 64x64


def _records(run_dir: str, name: str) -> list[dict]:
    with open(os.path.join(run_dir, f"metric-{name}.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _tiles(png: str, block: int, count: int) -> np.ndarray:
    """uint8 NHWC 32x32 tiles of block `block` of a compare_run.save_labelled_blocks image (GRID layout, ZOOM,
    2-pixel gaps)."""
    img = np.asarray(Image.open(png).convert("RGB"))
    cols, rows = GRID
    size = 32 * ZOOM
    top = block * (STRIP + rows * (size + 2) + 2) + STRIP
    tiles = [img[top + 2 + (i // cols) * (size + 2):][:size, 2 + (i % cols) * (size + 2):][:, :size]
             for i in range(count)]
    for t in tiles:  # every source pixel is a ZOOM x ZOOM block
        assert np.array_equal(t, t[::ZOOM, ::ZOOM].repeat(ZOOM, axis=0).repeat(ZOOM, axis=1))
    return np.stack([t[::ZOOM, ::ZOOM] for t in tiles])


def test_objectives_shorthand_and_seeds():
    arms = objective_arms("logistic, rooted:2.5")
    assert [(a.label, a.options) for a in arms] == [("logistic", {"loss": "logistic"}),
                                                    ("rooted2.5", {"loss": "rooted", "k": 2.5})]
    assert [(a.label, a.options) for a in objective_arms("rooted")] == [("rooted8", {"loss": "rooted", "k": 8.0})]
    for bad, message in [("nosuch", "expected one of"), ("rooted:x", "must be a number"),
                         ("rooted:0", r"must lie in \[0.001, 1e\+07\]"), ("logistic:2", "only applies to the rooted"),
                         ("rooted:8,rooted", "twice")]:
        with pytest.raises(ArmError, match=message):
            objective_arms(bad)
    assert parse_seeds("0-2,7") == [0, 1, 2, 7]
    with pytest.raises(CompareError, match="repeats"):
        parse_seeds("1,1")
    with pytest.raises(UserError, match="bad seed list"):
        parse_seeds("a")


def test_compare_end_to_end(tmp_path, weights, one_thread, table_rows):
    data = make_zip(tmp_path / "train.zip", num=8, seed=0)
    ref = make_zip(tmp_path / "ref.zip", num=6, seed=1)
    outdir = str(tmp_path / "out")
    lines: list[str] = []
    summary = compare_objectives(
        network=str(TINY_UNCOND), data=data, ref=ref, arms=objective_arms("logistic,rooted:8"), seeds=[3], kimg=0.008,
        snap_kimg=0.008, outdir=outdir, metrics=METRICS, metrics_num=4, device="cpu",
        train_options=dict(batch=4, workers=0, mirror=True, ema_kimg=0.002), grid=GRID, inception_weights=weights,
        log=lines.append, show_progress=False)

    with open(os.path.join(outdir, "summary.json"), encoding="utf-8") as f:
        assert json.load(f) == summary
    runs = summary["runs"]
    assert [(r["arm"], r["loss"], r["k"], r["seed"]) for r in runs] == [("logistic", "logistic", None, 3),
                                                                        ("rooted8", "rooted", 8.0, 3)]
    assert any("[run 2/2]" in line for line in lines)

    # The noise floor equals a direct dataset-vs-dataset evaluation.
    direct = metrics.evaluate_datasets(data, ref, metrics=METRICS, inception_weights=weights)
    assert summary["noise_floor"] == {r["metric"]: r["results"][r["metric"]] for r in direct}

    start_stamps = set()
    for run in runs:
        opts = json.load(open(os.path.join(run["run_dir"], "training_options.json"), encoding="utf-8"))
        spec = run["loss"] if run["k"] is None else f"{run['loss']}:{run['k']:g}"
        assert (opts["objective"], opts["random_seed"], opts["ema_kimg"]) == (spec, 3, 0.002)
        assert opts["batch_size"] == 4 and opts["training_set_kwargs"]["xflip"] is True
        stats = [json.loads(line) for line in open(os.path.join(run["run_dir"], "stats.jsonl"), encoding="utf-8")]
        for name in METRICS:
            start_rec, final_rec = _records(run["run_dir"], name)  # tick 0 (after one iteration) is not evaluated
            assert start_rec["shared_start"] is True and start_rec["kimg"] == 0
            assert start_rec["snapshot_pkl"] == str(TINY_UNCOND) and start_rec["num_gen"] == 4
            start_stamps.add((name, start_rec["timestamp"]))
            assert final_rec["snapshot_pkl"] == "network-snapshot-000000.pkl" and final_rec["kimg"] == 0.008
            assert [p[name] for p in run["points"]] == [start_rec["results"][name], final_rec["results"][name]]
        assert [p["kimg"] for p in run["points"]] == [0.0, 0.008]
        assert run["points"][-1]["wall_sec"] == stats[-1]["Timing/total_sec"]["mean"]
        assert stats[-1]["Progress/kimg"]["mean"] == 0.008
    assert len(start_stamps) == len(METRICS)  # the start network was evaluated once and shared
    assert runs[0]["points"][-1]["fid50k_full"] != runs[1]["points"][-1]["fid50k_full"]

    # summary.md: noise floor, one start row and one final row per run, with the records' values.
    md = open(os.path.join(outdir, "summary.md"), encoding="utf-8").read()
    floor = summary["noise_floor"]
    assert f"FID {floor['fid50k_full']:.2f}, KID {floor['kid50k_full']:.4f}" in md
    assert table_rows(md, "Arms") == [["logistic", "loss=logistic"], ["rooted8", "loss=rooted, k=8"]]
    rows = table_rows(md, "Final snapshot of each run")
    assert rows[0][:3] == [compare.START_LABEL, "-", "0"]
    assert len(rows) == 3
    for row, run in zip(rows[1:], runs):
        final = run["points"][-1]
        assert row == [run["arm"], "3", "0.008", f"{final['fid50k_full']:.2f}", f"{final['kid50k_full']:.4f}",
                       f"{round(final['wall_sec'])} s"]
    # One seed: means without sd, the paired difference over one seed without an interval.
    means = table_rows(md, "Mean ± sd over seeds, per snapshot")
    assert [r[:3] for r in means] == [["logistic", "0", "1"], ["logistic", "0.008", "1"], ["rooted8", "0", "1"],
                                      ["rooted8", "0.008", "1"]]
    diff = runs[1]["points"][-1]["fid50k_full"] - runs[0]["points"][-1]["fid50k_full"]
    paired = table_rows(md, "Paired difference: rooted8 minus logistic (same seeds: 3)")
    assert paired[0][:3] == ["0.008", "1", f"{diff:.2f} [-, -]"]

    # Best snapshot (by default the first metric): one snapshot per run here, so it is also the last.
    assert summary["config"]["best_metric"] == "fid50k_full"
    for run in runs:
        final = run["points"][-1]
        with open(os.path.join(run["run_dir"], "best-fid50k_full.json"), encoding="utf-8") as f:
            assert run["best"] == json.load(f) == dict(metric="fid50k_full", kimg=0.008, value=final["fid50k_full"],
                                                       snapshot="network-snapshot-000000.pkl")
        with open(os.path.join(run["run_dir"], "best-fid50k_full.pkl"), "rb") as a, \
                open(os.path.join(run["run_dir"], "network-snapshot-000000.pkl"), "rb") as b:
            assert a.read() == b.read()
    assert [row[:4] for row in table_rows(md, "Best snapshot of each run (by FID)")] == \
        [[r["arm"], "3", "0.008", f"{r['best']['value']:.2f}"] for r in runs]

    # Grids: 'before' is the start network on official seed latents 0..3, identical in every file; 'after' moved.
    G = load_network_pkl(TINY_UNCOND)["G_ema"]
    z = torch.from_numpy(np.concatenate([np.random.RandomState(s).randn(1, G.z_dim) for s in range(4)])).float()
    with torch.no_grad():
        expected = G(z, torch.zeros([4, 0]), noise_mode="const", force_fp32=True)
    expected = (expected * 127.5 + 128).clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    before = _tiles(os.path.join(outdir, "grid-start.png"), 0, 4)
    assert np.abs(before.astype(int) - expected.astype(int)).max() <= 1
    for slug in ("logistic", "rooted8"):
        path = os.path.join(outdir, f"grid-{slug}-seed3.png")
        assert np.array_equal(_tiles(path, 0, 4), before)
        assert not np.array_equal(_tiles(path, 1, 4), before)

    plot = Image.open(os.path.join(outdir, "metrics.png"))
    assert plot.format == "PNG" and plot.size == (1100, 400)
    assert not [f for f in os.listdir(outdir) if f.endswith(".tmp")]


@pytest.mark.parametrize("args, message", [
    (["--objectives", "nosuch"], "expected one of"),
    (["--seeds", "2,2"], "repeats a seed"),
    (["--kimg", "2", "--snap-kimg", "3"], "longer than the whole run"),
    (["--kimg", "4", "--snap-kimg", "0.5"], "named by whole kimg"),
    (["--metrics", "is50k"], "Inception Score is not offered"),
    (["--metrics-num", "1"], "at least 2"),
    (["--ema-kimg", "-1"], "--ema-kimg must be a finite number > 0, got -1.0"),
    (["--network", "/nonexistent/net.pkl"], "file not found"),
    (["--ref", "/nonexistent/ref.zip"], "--ref /nonexistent/ref.zip"),
    (["--metric-data", "/nonexistent/ref.zip"], "--ref /nonexistent/ref.zip"),  # the same option
    (["--metrics", "fid50k_full", "--best-metric", "kid"], "one of the evaluated metrics"),
    (["--gamma", "-1"], "--gamma must be"),
    (["--network", str(TINY_COND)], "conditional network"),
    (["--grid", "8"], "COLSxROWS"),
])
def test_cli_errors(tmp_path, args, message):
    data = make_zip(tmp_path / "d.zip", num=4)
    base = dict(zip(["--network", "--data", "--ref", "--kimg", "--outdir"],
                    [str(TINY_UNCOND), data, data, "4", str(tmp_path / "out")]))
    base.update(dict(zip(args[::2], args[1::2])))
    result = CliRunner().invoke(cli_main, [x for kv in base.items() for x in kv] + ["--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert re.search(re.escape(message), result.output), result.output
    assert not os.path.exists(tmp_path / "out" / "runs")  # nothing started


def test_channel_mismatch_is_refused(tmp_path):
    a = make_zip(tmp_path / "a.zip", num=4, channels=3)
    b = make_zip(tmp_path / "b.zip", num=4, channels=1)
    with pytest.raises(CompareError, match="compare like with like"):
        compare_objectives(network=str(TINY_UNCOND), data=a, ref=b, arms=objective_arms("logistic"), seeds=[0],
                           kimg=1, snap_kimg=1, outdir=str(tmp_path / "out"), device="cpu")


@pytest.mark.slow
def test_compare_seeds_and_snapshots_slow(tmp_path, weights, one_thread, table_rows):
    """Two objectives x two seeds, two evaluated snapshots each: ordering, wall times, the mean-over-seeds table."""
    data = make_zip(tmp_path / "train.zip", num=8, seed=0)
    ref = make_zip(tmp_path / "ref.zip", num=6, seed=1)
    outdir = str(tmp_path / "out")
    summary = compare_objectives(
        network=str(TINY_UNCOND), data=data, ref=ref, arms=objective_arms("logistic,rooted:2"), seeds=[0, 1],
        kimg=2, snap_kimg=1, outdir=outdir, metrics=METRICS, metrics_num=4, device="cpu",
        train_options=dict(batch=4, workers=0), grid=GRID, inception_weights=weights, log=lambda _m: None,
        show_progress=False)
    runs = summary["runs"]
    assert [(r["k"], r["seed"]) for r in runs] == [(None, 0), (None, 1), (2.0, 0), (2.0, 1)]
    for run in runs:
        assert [p["kimg"] for p in run["points"]] == [0.0, 1.004, 2.0]  # tick 0 after one batch of 4, then 1 kimg
        assert [p["snapshot"] for p in run["points"][1:]] == ["network-snapshot-000001.pkl",
                                                               "network-snapshot-000002.pkl"]
        assert 0 < run["points"][1]["wall_sec"] < run["points"][2]["wall_sec"]
        for name in METRICS:
            assert [r["results"][name] for r in _records(run["run_dir"], name)] == [p[name] for p in run["points"]]
    md = open(os.path.join(outdir, "summary.md"), encoding="utf-8").read()
    means = [r for r in table_rows(md, "Mean ± sd over seeds, per snapshot") if r[1] == "2"]
    for row, group in zip(means, (runs[:2], runs[2:])):
        assert row[:3] == [group[0]["arm"], "2", "2"]
        fid = np.array([g["points"][-1]["fid50k_full"] for g in group], dtype=np.float64)
        sd = np.sqrt(((fid - fid.mean()) ** 2).sum() / (len(fid) - 1))
        assert row[3] == f"{fid.mean():.2f} ± {sd:.2f}"
    assert len(table_rows(md, "Every snapshot")) == 1 + 4 * 2


@pytest.mark.parametrize("stop, exit_code, message", [
    (lambda: TrainingStopped(15, "out/runs/00000-x", "out/runs/00000-x/network-snapshot-000001.pkl"), 143,
     "Stopped by SIGTERM during a run (its last snapshot: out/runs/00000-x/network-snapshot-000001.pkl)"),
    (KeyboardInterrupt, 130, "Stopped by SIGINT."),  # e.g. Ctrl-C during an evaluation
])
def test_cli_reports_a_stopped_comparison_and_continues(tmp_path, monkeypatch, stop, exit_code, message):
    calls = []

    def stopped(**kwargs):
        calls.append(kwargs["resume"])
        raise stop()

    monkeypatch.setattr(compare, "compare_objectives", stopped)
    data = make_zip(tmp_path / "d.zip", num=4)
    args = ["--network", str(TINY_UNCOND), "--data", data, "--ref", data, "--kimg", "4", "--outdir",
            str(tmp_path / "out")]
    result = CliRunner().invoke(cli_main, args)
    assert result.exit_code == exit_code, result.output
    assert message in result.output and "Run the same command with --continue" in result.output
    CliRunner().invoke(cli_main, args + ["--continue"])
    assert calls == [False, True]


def test_an_interrupted_comparison_continues(tmp_path, weights, one_thread, table_rows, monkeypatch):
    """A comparison stopped during its second run: the outdir is then refused without --continue and with other
    settings; --continue keeps the finished run (records untouched) and runs only the missing one. (KID only: FID's
    matrix square root would double the test's time and adds nothing here.)"""
    data = make_zip(tmp_path / "train.zip", num=8, seed=0)
    ref = make_zip(tmp_path / "ref.zip", num=6, seed=1)
    outdir = str(tmp_path / "out")
    kwargs = dict(network=str(TINY_UNCOND), data=data, ref=ref, arms=objective_arms("logistic,rooted:8"), seeds=[3],
                  kimg=0.008, snap_kimg=0.008, outdir=outdir,
                  metrics=["kid50k_full"], metrics_num=4, device="cpu", train_options=dict(batch=4, workers=0),
                  grid=GRID, inception_weights=weights, show_progress=False)
    real_launch = compare_run.launch_training
    launched: list[str] = []

    def launch_then_stop(desc, options, outdir, **kw):
        launched.append(options["loss_kwargs"]["objective"])
        run_dir = real_launch(desc, options, outdir, **kw)
        if len(launched) == 2:
            raise TrainingStopped(2, run_dir, None)
        return run_dir

    monkeypatch.setattr(compare_run, "launch_training", launch_then_stop)
    with pytest.raises(TrainingStopped):
        compare_objectives(**kwargs, log=lambda _m: None)
    with open(os.path.join(outdir, "summary.json"), encoding="utf-8") as f:
        first = json.load(f)
    assert [r["arm"] for r in first["runs"]] == ["logistic"]
    stopped_dir = sorted(glob.glob(os.path.join(outdir, "runs", "*")))[-1]

    with pytest.raises(CompareError, match="already holds a comparison.*--continue"):
        compare_objectives(**kwargs, log=lambda _m: None)
    with pytest.raises(CompareError, match=r"other settings \(metrics_num differ\)"):
        compare_objectives(**dict(kwargs, metrics_num=5), resume=True, log=lambda _m: None)
    for changed in (data, ref):  # same path, same count, other images: refused, then restored
        original = open(changed, "rb").read()
        make_zip(changed, num=8 if changed == data else 6, seed=7)
        flag = "--data" if changed == data else "--ref"
        with pytest.raises(CompareError, match=f"{flag} .* is not the dataset the comparison in .* began with"):
            compare_objectives(**kwargs, resume=True, log=lambda _m: None)
        open(changed, "wb").write(original)

    monkeypatch.setattr(compare_run, "launch_training", real_launch)
    lines: list[str] = []
    summary = compare_objectives(**kwargs, resume=True, log=lines.append)
    assert [(r["arm"], r["seed"]) for r in summary["runs"]] == [("logistic", 3), ("rooted8", 3)]
    assert summary["runs"][0] == first["runs"][0]  # kept as it was
    assert len(_records(summary["runs"][0]["run_dir"], "kid50k_full")) == 2  # and not evaluated again
    assert summary["start"] == first["start"]  # the shared start evaluation is deterministic
    assert any("kept from the earlier comparison" in line for line in lines)
    assert any(stopped_dir in line and "did not finish" in line for line in lines)
    assert len(glob.glob(os.path.join(outdir, "runs", "*"))) == 3  # the stopped run's folder is left alone
    with open(os.path.join(outdir, "summary.json"), encoding="utf-8") as f:
        assert json.load(f) == summary
    assert len(table_rows(open(os.path.join(outdir, "summary.md"), encoding="utf-8").read(),
                           "Final snapshot of each run")) == 3  # start + both runs


def test_precision_recall_and_memorization_in_a_comparison(tmp_path, weights, one_thread, table_rows):
    """pr50k3_inception and mem50k_inception ride along with KID: every point holds precision, recall and the
    memorization fraction as each run's own metric records have them; memorization searches the run's training set
    (x-flips included), as a direct evaluation of the final snapshot with that training set gives; summary.md has
    their columns and paired differences, metrics.png a panel each, and each run's final snapshot its
    nearest-neighbour picture beside the grids."""
    data = make_zip(tmp_path / "train.zip", num=8, seed=0)
    ref = make_zip(tmp_path / "ref.zip", num=6, seed=1)
    outdir = str(tmp_path / "out")
    names = ["kid50k_full", "pr50k3_inception", "mem50k_inception"]
    summary = compare_objectives(
        network=str(TINY_UNCOND), data=data, ref=ref, arms=objective_arms("logistic,rooted:8"), seeds=[3], kimg=0.008,
        snap_kimg=0.008, outdir=outdir, metrics=names, metrics_num=6, device="cpu",
        train_options=dict(batch=4, workers=0, mirror=True, ema_kimg=0.002), grid=GRID, inception_weights=weights,
        log=lambda _m: None, show_progress=False)
    values = ["kid50k_full", "pr50k3_inception_precision", "pr50k3_inception_recall", "mem50k_inception"]
    assert compare.value_names(summary) == values
    assert set(values) <= set(summary["noise_floor"]) and set(values) <= set(summary["start"])
    for run in summary["runs"]:
        final = run["points"][-1]
        for name in names:
            record = _records(run["run_dir"], name)[-1]
            assert all(final[key] == value for key, value in record["results"].items())
        direct = metrics.evaluate_snapshot(
            load_network_pkl(os.path.join(run["run_dir"], final["snapshot"]))["G_ema"], metrics=["mem50k_inception"],
            data=ref, num_gen=6, seed=0, inception_weights=weights, training_data=data, training_mirror=True)
        assert direct[0]["results"]["mem50k_inception"] == final["mem50k_inception"]
        picture = Image.open(os.path.join(outdir, f"nn-{run['arm']}-seed3.png"))
        assert picture.format == "PNG" and picture.size[0] > 4 * 64
    assert os.path.isfile(os.path.join(outdir, "nn-start.png"))
    md = open(os.path.join(outdir, "summary.md"), encoding="utf-8").read()
    header = md.split("## Final snapshot of each run\n", 1)[1].split("\n")[1]
    assert [c.strip() for c in header.strip("|").split("|")][3:7] == ["KID", "precision", "recall", "memorization"]
    paired = table_rows(md, "Paired difference: rooted8 minus logistic (same seeds: 3)")
    runs = summary["runs"]
    mem_diff = runs[1]["points"][-1]["mem50k_inception"] - runs[0]["points"][-1]["mem50k_inception"]
    assert f"{mem_diff:.4f} [-, -]" in paired[0] or f"{mem_diff:.3f} [-, -]" in paired[0]
    assert Image.open(os.path.join(outdir, "metrics.png")).size == (550 * len(values), 400)
