"""Precision and recall (k-NN manifolds, k=3) on the Inception features: the computation against a direct numpy
implementation, the known cases, the metric through the library and calc_fid, and its name (pr50k3_full, on VGG16
features: test_metrics_vgg16.py)."""

import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_metrics import metric_datasets, read_zip_rgb, tiny_generator

from stylegan_rlo.cli.calc_fid import main as calc_fid_main
from stylegan_rlo.evaluation import inception_weights, metrics
from stylegan_rlo.experiments.compare import summary_markdown
from stylegan_rlo.experiments.compare_stats import comparison_statistics, metric_cell, value_names

WEIGHTS = inception_weights.default_weights_path()
needs_weights = pytest.mark.skipif(not os.path.isfile(WEIGHTS),
                                   reason=f"converted Inception weights missing at {WEIGHTS}: run `make setup`")
PRECISION, RECALL = "pr50k3_inception_precision", "pr50k3_inception_recall"


def numpy_precision_recall(gen: np.ndarray, real: np.ndarray, k: int = 3) -> tuple[float, float]:
    """The definition, written out: radius = distance to the k-th nearest other point of the same set; a point is
    covered by a set when it lies within the radius of one of that set's points."""
    def dist(x, y):
        return np.sqrt(((x[:, None, :].astype(np.float64) - y[None, :, :]) ** 2).sum(-1))

    def radii(x):
        d = dist(x, x)
        np.fill_diagonal(d, np.inf)  # the point itself is no neighbour
        return np.sort(d, axis=1)[:, k - 1]

    cross = dist(gen, real)
    precision = (cross <= radii(real)[None, :]).any(axis=1).mean()
    recall = (cross.T <= radii(gen)[None, :]).any(axis=1).mean()
    return float(precision), float(recall)


@pytest.mark.parametrize("n_gen, n_real, dim, scale, shift, batch", [
    (20, 30, 8, 1.3, 0.5, 10000),
    (57, 13, 64, 1.3, 0.2, 10000),
    (40, 40, 2048, 1.01, 0.05, 10000),   # the pool feature size
    (90, 70, 16, 1.3, 0.3, 7),           # blocks smaller than the sets
])
def test_matches_numpy_definition(n_gen, n_real, dim, scale, shift, batch):
    rng = np.random.default_rng([n_gen, n_real, dim])
    real = rng.standard_normal((n_real, dim)).astype(np.float32)
    gen = (rng.standard_normal((n_gen, dim)) * scale + shift).astype(np.float32)
    ours = metrics.precision_recall(torch.from_numpy(gen), torch.from_numpy(real), batch=batch)
    ref = numpy_precision_recall(gen, real)
    assert ours == pytest.approx(ref, abs=1e-6)  # float32 means; one point = 1/N
    assert 0 < ref[0] < 1 or 0 < ref[1] < 1  # not a trivial case


def test_known_cases():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((50, 32)).astype(np.float32))
    assert metrics.precision_recall(x, x) == (1.0, 1.0)                         # a set against itself
    assert metrics.precision_recall(x, x + 1000) == (0.0, 0.0)                  # disjoint, far apart
    assert metrics.precision_recall(x[:10] * 0.01, x) == (1.0, pytest.approx(numpy_precision_recall(
        x[:10].numpy() * 0.01, x.numpy())[1]))                                 # a tight cluster inside: precise
    with pytest.raises(metrics.MetricError, match="k=3 needs more than 3 images"):
        metrics.precision_recall(x[:3], x)


def test_name_and_record_shape():
    assert metrics.validate_metric_names(["fid", "pr50k3_inception", "PR50K3_INCEPTION"]) == [
        "fid50k_full", "pr50k3_inception"]
    assert metrics.result_names(["fid50k_full", "pr50k3_inception", "kid50k_full"]) == [
        "fid50k_full", PRECISION, RECALL, "kid50k_full"]
    rec = metrics.make_record("pr50k3_inception", {PRECISION: 0.5, RECALL: 0.25}, num_gen=8, total_time=1.0,
                              snapshot_pkl=None)
    assert rec["metric"] == "pr50k3_inception" and rec["results"] == {PRECISION: 0.5, RECALL: 0.25}


def test_calc_fid_cli_refuses_other_pr_names():
    result = CliRunner().invoke(calc_fid_main, ["--data", "X.zip", "--ref", "Y.zip", "--metrics", "pr10k3_full"])
    assert result.exit_code != 0 and "VGG16" in result.output and "pr50k3_inception" in result.output


def test_compare_summaries_show_both_values():
    summary = dict(config=dict(metrics=["fid50k_full", "pr50k3_inception"]),
                   start={"kimg": 0.0, "fid50k_full": 40.0, PRECISION: 0.5, RECALL: 0.25})
    assert value_names(summary) == ["fid50k_full", PRECISION, RECALL]
    assert metric_cell(RECALL, 0.25) == "0.250" and metric_cell("fid50k_full", 40.0) == "40.00"
    config = dict(network="start.pkl", start_kimg=0, data="d.zip", num_data=8, mirror=False, kimg=2, batch=4,
                  device="cpu", train_options={}, metrics_num=8, metric_seed=0, ref="r.zip", num_ref=8, snap_kimg=1,
                  outdir="out", metrics=["fid50k_full", "pr50k3_inception"], best_metric="fid50k_full")
    runs = [dict(objective=o, loss=o, k=None, seed=s, run_dir=f"out/runs/{o}{s}", train_sec=10.0, eval_sec=1.0,
                 best=None, points=[dict(summary["start"], wall_sec=0.0),
                                    {"kimg": 1.0, "wall_sec": 5.0, "fid50k_full": 30.0 + s,
                                     PRECISION: 0.6 + 0.1 * s, RECALL: 0.3}])
            for o in ("logistic", "rooted") for s in (0, 1)]
    summary.update(config=config, runs=runs, noise_floor={"fid50k_full": 5.0, PRECISION: 0.9, RECALL: 0.8},
                   timings=dict(train_sec=40.0, eval_sec=4.0))
    stats = comparison_statistics(summary)
    assert stats["arms"]["rooted"]["snapshots"][1][PRECISION]["mean"] == pytest.approx(0.65)
    text = summary_markdown(summary)
    assert "| FID | precision | recall |" in text and "precision 0.900, recall 0.800" in text
    assert "Negative is better for rooted; for precision and recall, positive." in text


# ---- through the library and calc_fid, on Inception features -----------------------------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two tiny datasets (8 images and 8 perturbed copies), the fast '64' feature layer, a private cache."""
    yield from metric_datasets(tmp_path_factory, "prc", 8, seed=21, perturb_seed=22)


@needs_weights
def test_datasets_through_the_library(data):
    fid, pr = metrics.evaluate_datasets(data.a, data.p, metrics=["fid", "pr50k3_inception"], batch=4)
    assert fid["metric"] == "fid50k_full" and pr["metric"] == "pr50k3_inception"
    assert set(pr["results"]) == {PRECISION, RECALL} and pr["num_gen"] == 8
    # The same features as FID (one pass), fed to the numpy definition.
    extractor = inception_weights.feature_extractor(WEIGHTS, ["64"])
    feats = []
    for path in (data.a, data.p):
        images = read_zip_rgb(path)
        with torch.no_grad():
            feats.append(extractor(torch.stack([images[i] for i in range(len(images))]))[0].numpy())
    ref = numpy_precision_recall(feats[0], feats[1])
    assert (pr["results"][PRECISION], pr["results"][RECALL]) == pytest.approx(ref, abs=1e-6)
    same = metrics.evaluate_datasets(data.a, data.a, metrics=["pr50k3_inception"])[0]
    assert same["results"] == {PRECISION: 1.0, RECALL: 1.0}


@needs_weights
def test_snapshot_record_in_the_run_directory(data, tmp_path):
    """As training's --metrics writes it: metric-pr50k3_inception.jsonl, one line holding both values."""
    kwargs = dict(metrics=["pr50k3_inception", "fid"], data=data.a, num_gen=6, batch=3, run_dir=str(tmp_path),
                  snapshot_pkl=str(tmp_path / "network-snapshot-000004.pkl"))
    first = metrics.evaluate_snapshot(tiny_generator(), **kwargs)
    assert metrics.evaluate_snapshot(tiny_generator(), **kwargs)[0]["results"] == first[0]["results"]
    lines = [json.loads(line) for line in (tmp_path / "metric-pr50k3_inception.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and lines[0] == first[0] and set(lines[0]["results"]) == {PRECISION, RECALL}
    assert all(0 <= v <= 1 for v in lines[0]["results"].values()) and lines[0]["num_gen"] == 6


@needs_weights
def test_calc_fid_cli_records_precision_and_recall(data):
    result = CliRunner().invoke(calc_fid_main, ["--data", data.a, "--ref", data.a, "--metrics", "kid,pr50k3_inception",
                                                "--device", "cpu", "--inception-weights", WEIGHTS])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["metric"] for r in records] == ["kid50k_full", "pr50k3_inception"]
    assert records[1]["results"] == {PRECISION: 1.0, RECALL: 1.0}
