"""--metric-data and best-snapshot tracking: metrics against held-out images during training, recorded with their
dataset; best-<metric>.pkl / .json follow the lowest value; bad options are clear errors."""

import json
import os

import numpy as np
import pytest
from training_fixtures import TINY_COND, TINY_UNCOND, make_zip

from stylegan_rlo.checkpoints.pickles import load_network_pkl
from stylegan_rlo.evaluation import inception_weights, metrics
from stylegan_rlo.training import best_snapshot
from stylegan_rlo.training.config import setup_training_options
from stylegan_rlo.training.options import TrainingOptionsError
from stylegan_rlo.training.launch import launch_training

WEIGHTS = inception_weights.default_weights_path()


def test_best_follows_the_lowest_finite_value(tmp_path):
    run_dir = str(tmp_path)
    sequence = [(5.0, True), (3.0, True), (4.0, False), (float("nan"), False), (3.0, False), (2.5, True)]
    for i, (value, improves) in enumerate(sequence):
        snap = tmp_path / f"network-snapshot-{i:06d}.pkl"
        snap.write_bytes(f"snapshot {i}".encode())
        assert best_snapshot.update_best(run_dir, "fid50k_full", value, str(snap), kimg=i) is improves
        best = best_snapshot.read_best(run_dir, "fid50k_full")
        expected = max(j for j in range(i + 1) if sequence[j][1])
        assert best == dict(metric="fid50k_full", kimg=expected, value=sequence[expected][0],
                            snapshot=f"network-snapshot-{expected:06d}.pkl")
        assert (tmp_path / "best-fid50k_full.pkl").read_bytes() == f"snapshot {expected}".encode()
    assert not [n for n in os.listdir(run_dir) if n.endswith(".tmp")]


def test_best_metric_defaults_to_the_first_metric_and_accepts_shorthands():
    assert best_snapshot.resolve_best_metric(None, ["kid50k_full", "fid50k_full"]) == "kid50k_full"
    assert best_snapshot.resolve_best_metric("fid", ["kid50k_full", "fid50k_full"]) == "fid50k_full"
    assert best_snapshot.resolve_best_metric(None, []) is None


def test_precision_recall_ranks_no_snapshot():
    """pr50k3_inception is two numbers that trade off: the default skips it, naming it is refused."""
    assert best_snapshot.resolve_best_metric(None, ["pr50k3_inception", "kid50k_full"]) == "kid50k_full"
    assert best_snapshot.resolve_best_metric(None, ["pr50k3_inception"]) is None
    with pytest.raises(TrainingOptionsError, match="--best-metric pr50k3_inception: precision and recall .* "
                                                   "fid50k_full or kid50k_full"):
        best_snapshot.resolve_best_metric("pr50k3_inception", ["pr50k3_inception", "fid50k_full"])
    unranked = {"pr50k3_inception", "pr50k3_full", "mem50k_inception"}
    assert set(best_snapshot.RANKING_METRICS) | unranked == set(metrics.METRIC_NAMES)


@pytest.mark.parametrize("opts,words", [
    (dict(metric_data="HELDOUT"), ["--metric-data needs --metrics"]),
    (dict(metrics="fid50k_full", best_metric="kid"), ["--best-metric kid", "one of the evaluated metrics"]),
    (dict(metrics="fid50k_full", best_metric="is50k"), ["--best-metric", "Inception Score"]),
    (dict(metrics="fid50k_full,pr50k3_inception", best_metric="pr50k3_inception"),
     ["--best-metric pr50k3_inception", "trade off"]),
    (dict(metrics="fid50k_full,mem50k_inception"), ["--metrics mem50k_inception needs --metric-data HELD_OUT"]),
    (dict(metrics="fid,mem50k_inception", metric_data="HELDOUT", best_metric="mem50k_inception"),
     ["--best-metric mem50k_inception", "copied training images", "fid50k_full or kid50k_full"]),
    (dict(metrics="pr50k3_full"), ["pr50k3_full", "VGG16", "pr50k3_inception"]),
    (dict(metrics="pr50k3_full", vgg16="MISSING"), ["--metrics", "VGG16 weights file not found", "missing.zip"]),
    (dict(metrics="fid50k_full", vgg16="HELDOUT"), ["--vgg16 is the feature network of pr50k3_full"]),
    (dict(metrics="fid50k_full", metric_data="SMALL"), ["--metric-data", "16x16", "32x32"]),
    (dict(metrics="fid50k_full", metric_data="MISSING"), ["--metric-data", "missing.zip"]),
    (dict(metrics="fid50k_full", metric_data="HELDOUT", cond=True, resume=str(TINY_COND)),
     ["--metric-data", "conditional"]),
])
def test_bad_metric_options_are_clear_errors(tmp_path, opts, words):
    data = make_zip(tmp_path / "train.zip", num=3, classes=3)
    paths = dict(HELDOUT=make_zip(tmp_path / "heldout.zip", num=2), SMALL=make_zip(tmp_path / "small.zip", res=16),
                 MISSING=str(tmp_path / "missing.zip"))
    opts = {key: paths.get(value, value) if isinstance(value, str) else value for key, value in opts.items()}
    opts.setdefault("resume", str(TINY_UNCOND))
    with pytest.raises(TrainingOptionsError) as info:
        setup_training_options(data=data, device="cpu", **opts)
    for word in words:
        assert word in str(info.value)


def test_training_hook_uses_held_out_data_and_tracks_the_best(tmp_path, one_thread, monkeypatch):
    """The fast twin of the test below: the metric is replaced by a recorded sequence of values."""
    data = make_zip(tmp_path / "train.zip", num=8, seed=0)
    heldout = make_zip(tmp_path / "heldout.zip", num=6, seed=1)
    values, calls = iter([3.0, 1.0, 2.0]), []

    def fake_evaluate(G, **kwargs):
        calls.append(kwargs)
        return [metrics.make_record("fid50k_full", next(values), num_gen=4, total_time=0.0,
                                    snapshot_pkl=kwargs["snapshot_pkl"])]

    monkeypatch.setattr(metrics, "evaluate_snapshot", fake_evaluate)
    desc, options = setup_training_options(data=data, resume=str(TINY_UNCOND), device="cpu", workers=0, batch=4,
                                           tick=0.004, snap=1, kimg=0.012, metrics="fid", metric_data=heldout,
                                           mirror=True)
    run_dir = launch_training(desc, options, str(tmp_path / "runs"), show_progress=False, image_grid=(2, 2))
    assert [(c["data"], c["mirror"]) for c in calls] == [(heldout, False)] * 3
    with open(os.path.join(run_dir, "metric-fid50k_full.jsonl"), encoding="utf-8") as f:
        assert [json.loads(line)["data"] for line in f] == [heldout] * 3
    assert best_snapshot.read_best(run_dir, "fid50k_full") == dict(
        metric="fid50k_full", kimg=0.008, value=1.0, snapshot="network-snapshot-000000.pkl")
    with open(os.path.join(run_dir, "log.txt"), encoding="utf-8") as f:
        assert f.read().count("New best fid50k_full") == 2


def test_training_passes_the_vgg16_file_to_pr50k3_full(tmp_path, one_thread, monkeypatch):
    """--vgg16 FILE reaches every snapshot evaluation of pr50k3_full (the metric itself: tests/evaluation)."""
    data = make_zip(tmp_path / "train.zip", num=8, seed=0)
    weights = tmp_path / "vgg16-397923af.pth"
    weights.write_bytes(b"stand-in")
    calls = []

    def fake_evaluate(G, **kwargs):
        calls.append(kwargs)
        return [metrics.make_record("pr50k3_full", dict(pr50k3_full_precision=0.5, pr50k3_full_recall=0.5), num_gen=4,
                                    total_time=0.0, snapshot_pkl=kwargs["snapshot_pkl"])]

    monkeypatch.setattr(metrics, "evaluate_snapshot", fake_evaluate)
    desc, options = setup_training_options(data=data, resume=str(TINY_UNCOND), device="cpu", workers=0, batch=4,
                                           tick=0.004, snap=1, kimg=0.008, metrics="pr50k3_full", vgg16=str(weights))
    launch_training(desc, options, str(tmp_path / "runs"), show_progress=False, image_grid=(2, 2))
    assert [(c["metrics"], c["vgg16_weights"]) for c in calls] == [(["pr50k3_full"], str(weights))] * 2


@pytest.mark.slow  # ~90 s on a shared CPU: five Inception evaluations
@pytest.mark.skipif(not os.path.isfile(WEIGHTS), reason=f"converted Inception weights missing at {WEIGHTS}")
def test_training_evaluates_against_held_out_data_and_keeps_the_best(tmp_path, one_thread, monkeypatch):
    monkeypatch.setenv("DNNLIB_CACHE_DIR", str(tmp_path / "cache"))
    data = make_zip(tmp_path / "train.zip", num=8, seed=0)
    heldout = make_zip(tmp_path / "heldout.zip", num=6, seed=1)
    desc, options = setup_training_options(data=data, resume=str(TINY_UNCOND), device="cpu", workers=0, batch=4,
                                           tick=0.004, snap=1, kimg=0.012, metrics="fid", metrics_num=4,
                                           metric_data=heldout, mirror=True)
    assert options.best_metric == "fid50k_full" and options.metric_data == heldout
    run_dir = launch_training(desc, options, str(tmp_path / "runs"), show_progress=False, image_grid=(2, 2))
    with open(os.path.join(run_dir, "metric-fid50k_full.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    assert [r["data"] for r in records] == [heldout] * 3  # one evaluation per tick (kimg 0.004, 0.008, 0.012)
    values = [r["results"]["fid50k_full"] for r in records]
    with open(os.path.join(run_dir, "best-fid50k_full.json"), encoding="utf-8") as f:
        best = json.load(f)
    i = int(np.argmin(values))
    assert best == dict(metric="fid50k_full", kimg=pytest.approx(0.004 * (i + 1)), value=values[i],
                        snapshot="network-snapshot-000000.pkl")
    # An independent evaluation of the kept snapshot against the held-out images (as they are: no x-flips)
    # reproduces the recorded best; against the training data it would differ.
    G = load_network_pkl(os.path.join(run_dir, "best-fid50k_full.pkl"))["G_ema"]
    again = metrics.evaluate_snapshot(G, metrics=["fid50k_full"], data=heldout, num_gen=4, seed=0)
    assert again[0]["results"]["fid50k_full"] == pytest.approx(values[i], rel=1e-6)
    train = metrics.evaluate_snapshot(G, metrics=["fid50k_full"], data=data, num_gen=4, seed=0, mirror=True)
    assert train[0]["results"]["fid50k_full"] != pytest.approx(values[i], rel=1e-3)
