"""mem50k_inception through the library, calc_fid and training's snapshot metrics, on the tiny fixture datasets and
the fast '64' Inception layer: one Inception pass over the generated images for all metrics, the value equal to
the numpy definition on the features used, a set against itself flagged, the picture written, clear refusals."""

import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from test_memorization import numpy_fraction
from test_metrics import metric_datasets, read_zip_rgb, tiny_generator
from training_fixtures import TINY_UNCOND

from stylegan_rlo.cli.calc_fid import main as calc_fid_main
from stylegan_rlo.evaluation import inception_weights, metrics
from stylegan_rlo.training.snapshot_metrics import SnapshotMetrics

WEIGHTS = inception_weights.default_weights_path()
pytestmark = pytest.mark.skipif(not os.path.isfile(WEIGHTS),
                                reason=f"converted Inception weights missing at {WEIGHTS}: run `make setup`")
MEM = "mem50k_inception"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Datasets a (8 smooth images) and p (8 perturbed copies), the '64' layer, a private cache."""
    yield from metric_datasets(tmp_path_factory, "mem", 8, seed=31, perturb_seed=32)


def inception_64(images: torch.utils.data.Dataset) -> np.ndarray:
    extractor = inception_weights.feature_extractor(WEIGHTS, ["64"])
    with torch.no_grad():
        return extractor(torch.stack([images[i] for i in range(len(images))]))[0].numpy()


@pytest.fixture
def spy(monkeypatch):
    """Records each Inception pass (its dataset) and the features handed to the memorization check."""
    seen = dict(passes=[], mem=[])
    real_pass, real_mem = metrics.get_featuresdict_from_dataset, metrics.memorization

    def counting_pass(dataset, *args):
        seen["passes"].append(type(dataset).__name__)
        return real_pass(dataset, *args)

    def recording_mem(*args, **kwargs):
        out = real_mem(*args, **kwargs)
        seen["mem"].append((args, kwargs, out))
        return out
    monkeypatch.setattr(metrics, "get_featuresdict_from_dataset", counting_pass)
    monkeypatch.setattr(metrics, "memorization", recording_mem)
    return seen


def records_of(result) -> dict:
    assert result.exit_code == 0, result.output
    return {r["metric"]: r for r in map(json.loads, result.stdout.splitlines())}


def test_dataset_against_itself_is_flagged(data, spy):
    """--data A --ref A: precision = recall = 1, and every image of A is a copy (memorization 1)."""
    out = records_of(CliRunner().invoke(calc_fid_main, ["--data", data.a, "--ref", data.a, "--metrics",
                                                        f"pr50k3_inception,{MEM}", "--device", "cpu"]))
    assert list(out["pr50k3_inception"]["results"].values()) == [1.0, 1.0]
    assert out[MEM]["results"] == {MEM: 1.0} and out[MEM]["num_gen"] == 8


def test_dataset_mode_equals_numpy_on_the_features(data, spy):
    """--data P --ref A: are P's images copies of A's, calibrated leave-one-out within A (mirror: with x-flips)."""
    for mirror in ([], ["--mirror"]):
        spy["mem"].clear()
        out = records_of(CliRunner().invoke(calc_fid_main, ["--data", data.p, "--ref", data.a, "--metrics", MEM,
                                                            "--device", "cpu"] + mirror))
        (samples, training, held_out), kwargs, result = spy["mem"][0]
        assert held_out is None and len(training) == 8 * (2 if mirror else 1)
        expected = numpy_fraction(samples.numpy(), training.numpy(), groups=kwargs["training_groups"].numpy())
        assert out[MEM]["results"][MEM] == expected == result.fraction
    assert kwargs["training_groups"].tolist() == list(range(8)) * 2  # an image and its x-flip are one
    a = inception_64(read_zip_rgb(data.a))
    assert training[:8].numpy() == pytest.approx(a, abs=1e-4)  # the pool features FID uses, here the '64' layer


def test_network_with_training_and_held_out_sets(data, spy, tmp_path):
    """All four metrics in one command, one Inception pass over the generated images; the metrics compare with
    --ref (held-out), memorization searches --data (training); the picture shows the nearest generated images."""
    picture = tmp_path / "nn.png"
    args = ["--network", str(TINY_UNCOND), "--data", data.a, "--ref", data.p, "--num", "6", "--batch", "4",
            "--metrics", f"fid,kid,pr50k3_inception,{MEM}", "--device", "cpu", "--nn-picture", str(picture)]
    out = records_of(CliRunner().invoke(calc_fid_main, args))
    assert list(out) == ["fid50k_full", "kid50k_full", "pr50k3_inception", MEM]
    assert spy["passes"].count("GeneratedImages") == 1
    (samples, training, held_out), _, result = spy["mem"][0]
    assert training.numpy() == pytest.approx(inception_64(read_zip_rgb(data.a)), abs=1e-4)
    assert held_out.numpy() == pytest.approx(inception_64(read_zip_rgb(data.p)), abs=1e-4)
    assert out[MEM]["results"][MEM] == numpy_fraction(samples.numpy(), training.numpy(), held_out.numpy())
    # FID against the held-out set, as training with --metric-data computes it; the datasets' features are cached.
    spy["passes"].clear()
    fid_ref = records_of(CliRunner().invoke(calc_fid_main, ["--network", str(TINY_UNCOND), "--data", data.p, "--num",
                                                            "6", "--batch", "4", "--device", "cpu"]))
    assert out["fid50k_full"]["results"] == fid_ref["fid50k_full"]["results"]
    assert spy["passes"] == ["GeneratedImages"]
    with Image.open(picture) as img:  # 6 generated images of 32x32 (enlarged to 64) with 3 neighbours each
        assert img.size == (4 * 66 + 2, 6 * 78 + 2)


def test_library_refuses_without_training_set_and_with_overlap(data):
    with pytest.raises(metrics.MetricError, match=f"{MEM} .* needs the training set"):
        metrics.evaluate_snapshot(tiny_generator(), metrics=[MEM], data=data.p, num_gen=4)
    with pytest.raises(metrics.UserError, match="8 of the 8 held-out images have an .*exact copy"):
        metrics.evaluate_snapshot(tiny_generator(), metrics=[MEM], data=data.a, training_data=data.a, num_gen=4)


def test_training_snapshot_metrics_record(data, tmp_path):
    """As training's --metrics with --metric-data: the training data is searched, the held-out set calibrates."""
    plan = SnapshotMetrics.plan([MEM, "fid50k_full"], 4, dict(path=data.a, xflip=True), data.p, "fid50k_full",
                                torch.device("cpu"), 0)
    assert (plan.data, plan.mirror, plan.training_data, plan.training_mirror) == (data.p, False, data.a, True)
    snapshot = tmp_path / "network-snapshot-000000.pkl"
    snapshot.write_bytes(b"stands in for the pickle")
    results = plan.evaluate(tiny_generator(), str(snapshot), 0, str(tmp_path), lambda _: None)
    line = json.loads((tmp_path / f"metric-{MEM}.jsonl").read_text())
    assert set(results) == {MEM, "fid50k_full"} and line["results"] == {MEM: results[MEM]}
    assert 0 <= results[MEM] <= 1 and line["data"] == data.p
