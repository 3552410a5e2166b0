"""pr50k3_full: precision/recall (k=3) on VGG16 fc2 features from a weights file given by path.

Always on: the weights-file checks (wrong layout, shapes, pickles with code, TorchScript, folders, size), the refusal
without weights, and the metric through calc_fid with a small stand-in feature network (the real VGG16 costs about
0.7 s per image on one CPU thread), compared with the numpy definition on the same features, the dataset cap and
the cache. Slow: a full-size VGG16 with random weights, loaded from its file, against torch-fidelity's own VGG16.
"""

import json
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_metrics import read_zip_rgb, smooth_images, perturb, write_zip
from test_metrics_precision_recall import numpy_precision_recall
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from stylegan_rlo.cli.calc_fid import main as calc_fid_main
from stylegan_rlo.evaluation import metrics, vgg16

PRECISION, RECALL = "pr50k3_full_precision", "pr50k3_full_recall"


class SmallFeatures(FeatureExtractorBase):
    """Stand-in for VGG16 with its interface (uint8 images in, 4096-d 'fc2_relu' out): 4x4 average colours through a
    fixed random projection and a ReLU. Counts the images it sees."""

    def __init__(self) -> None:
        super().__init__(vgg16.EXTRACTOR_NAME, [vgg16.FEATURE_LAYER])
        self.register_buffer("proj", torch.randn(48, vgg16.FEATURE_DIM, generator=torch.Generator().manual_seed(3)))
        self.seen = 0

    @staticmethod
    def get_provided_features_list():
        return (vgg16.FEATURE_LAYER,)

    def forward(self, x: torch.Tensor):
        self.seen += len(x)
        pooled = torch.nn.functional.adaptive_avg_pool2d(x.float() / 255, 4).flatten(1)
        return (torch.relu(pooled @ self.proj - 1.0),)


@pytest.fixture
def small_vgg(monkeypatch, tmp_path):
    """The stand-in network behind vgg16.feature_extractor, a weights 'file' to name, a private cache, and no
    Inception weights at all (pr50k3_full alone must not need them)."""
    net = SmallFeatures()
    monkeypatch.setattr(vgg16, "feature_extractor", lambda path, sha256: net)
    monkeypatch.setenv("DNNLIB_CACHE_DIR", str(tmp_path / "cache"))

    def no_inception(*args, **kwargs):
        raise AssertionError("pr50k3_full alone looked for Inception weights")
    monkeypatch.setattr(metrics, "resolve_weights_path", no_inception)
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"stand-in")
    imgs = smooth_images(8, seed=31)
    a = write_zip(tmp_path / "a.zip", imgs)
    p = write_zip(tmp_path / "p.zip", np.concatenate([smooth_images(5, seed=32), perturb(imgs[:3], 33)]))
    return type("SmallVGG", (), dict(net=net, weights=str(weights), a=a, p=p))


def small_features(net: SmallFeatures, path: str) -> np.ndarray:
    images = read_zip_rgb(path)
    with torch.no_grad():
        return net(torch.stack([images[i] for i in range(len(images))]))[0].numpy()


def test_names_and_other_pr_variants():
    assert metrics.validate_metric_names(["pr50k3_full", "fid", "PR50K3_FULL"]) == ["pr50k3_full", "fid50k_full"]
    assert metrics.result_names(["pr50k3_full", "kid50k_full"]) == [PRECISION, RECALL, "kid50k_full"]
    for name in ("pr50k3", "pr10k3_full"):
        with pytest.raises(metrics.MetricError) as info:
            metrics.validate_metric_names([name])
        assert all(w in str(info.value) for w in ("pr50k3_full", "VGG16", "vgg16-397923af.pth", "pr50k3_inception"))


def test_calc_fid_matches_numpy_on_the_same_features(small_vgg):
    args = ["--data", small_vgg.a, "--ref", small_vgg.p, "--metrics", "pr50k3_full", "--vgg16", small_vgg.weights,
            "--device", "cpu", "--batch", "3"]
    result = CliRunner().invoke(calc_fid_main, args)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["metric"] == "pr50k3_full" and set(record["results"]) == {PRECISION, RECALL}
    ref = numpy_precision_recall(small_features(small_vgg.net, small_vgg.a), small_features(small_vgg.net, small_vgg.p))
    assert (record["results"][PRECISION], record["results"][RECALL]) == pytest.approx(ref, abs=1e-6)
    assert 0 < ref[0] < 1 or 0 < ref[1] < 1  # not a trivial case
    # Both datasets' features are cached: a second run passes no image through the network.
    small_vgg.net.seen = 0
    again = CliRunner().invoke(calc_fid_main, args)
    assert again.exit_code == 0 and json.loads(again.stdout)["results"] == record["results"]
    assert small_vgg.net.seen == 0


def test_dataset_sides_are_capped(small_vgg, monkeypatch):
    """As the official max_real: a dataset counts its first PR_FULL_MAX_REAL images (5 of 8 here)."""
    monkeypatch.setattr(metrics, "PR_FULL_MAX_REAL", 5)
    record = metrics.evaluate_datasets(small_vgg.a, small_vgg.p, metrics=["pr50k3_full"],
                                       vgg16_weights=small_vgg.weights)[0]
    ref = numpy_precision_recall(small_features(small_vgg.net, small_vgg.a)[:5],
                                 small_features(small_vgg.net, small_vgg.p)[:5])
    assert (record["results"][PRECISION], record["results"][RECALL]) == pytest.approx(ref, abs=1e-6)


def test_snapshot_uses_the_vgg_pass_for_generated_images(small_vgg):
    from test_metrics import tiny_generator
    kwargs = dict(metrics=["pr50k3_full"], data=small_vgg.a, num_gen=6, batch=4, vgg16_weights=small_vgg.weights)
    first = metrics.evaluate_snapshot(tiny_generator(), **kwargs)[0]
    assert metrics.evaluate_snapshot(tiny_generator(), **kwargs)[0]["results"] == first["results"]
    assert first["num_gen"] == 6 and all(0 <= v <= 1 for v in first["results"].values())


def test_without_weights_says_what_to_fetch(small_vgg, monkeypatch, tmp_path):
    monkeypatch.setattr(vgg16, "default_weights_paths", lambda: [str(tmp_path / "none" / vgg16.WEIGHTS_NAME)])
    result = CliRunner().invoke(calc_fid_main, ["--data", small_vgg.a, "--ref", small_vgg.p,
                                                "--metrics", "pr50k3_full"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert vgg16.WEIGHTS_URL in result.output and "--vgg16 FILE" in result.output
    missing = CliRunner().invoke(calc_fid_main, ["--data", small_vgg.a, "--ref", small_vgg.p, "--metrics",
                                                 "pr50k3_full", "--vgg16", str(tmp_path / "nope.pth")])
    assert missing.exit_code == 2 and "not found" in missing.output and vgg16.WEIGHTS_URL in missing.output


# ---- the weights file ----------------------------------------------------------------------------------------------

class _Planted:
    """A pickled object whose unpickling would create a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _torchscript_file(path) -> str:
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    return str(path)


@pytest.mark.parametrize("make, message", [
    (lambda p, m: torch.save({"features.0.weight": torch.zeros(3)}, p), "not a torchvision VGG16 state dict"),
    (lambda p, m: torch.save({k: torch.zeros(1) for k in vgg16._skeleton().state_dict()}, p),
     "features.0.weight should be a float tensor of shape (64, 3, 3, 3), got (1,)"),
    (lambda p, m: torch.save([torch.zeros(1)], p), "holds a list, not a state dict"),
    (lambda p, m: torch.save({"x": _Planted(m)}, p), "not a plain tensor state dict"),
    (lambda p, m: p.write_bytes(pickle.dumps(_Planted(m))), "not a plain tensor state dict"),
    (lambda p, m: _torchscript_file(p), "is a TorchScript file"),
    (lambda p, m: p.write_bytes(b"\x00garbage"), "not a plain tensor state dict"),
    (lambda p, m: p.mkdir(), "not a regular file"),
])
def test_bad_weight_files_are_refused(tmp_path, make, message):
    path, marker = tmp_path / "w.pth", tmp_path / "marker"
    make(path, str(marker))
    with pytest.raises(vgg16.VGG16WeightsError) as info:
        vgg16.load_checked_state_dict(path)
    assert message in str(info.value) and str(path) in str(info.value)
    assert not marker.exists()  # no code from the file ran


def test_oversized_file_refused_and_cli_message(tmp_path, monkeypatch):
    path = tmp_path / "w.pth"
    torch.save({"x": torch.zeros(100)}, path)
    monkeypatch.setattr(vgg16, "MAX_FILE_BYTES", 64)
    with pytest.raises(vgg16.VGG16WeightsError, match="more than a VGG16 state dict"):
        vgg16.load_checked_state_dict(path)
    monkeypatch.undo()
    script = _torchscript_file(tmp_path / "vgg16.pt")
    imgs = write_zip(tmp_path / "a.zip", smooth_images(4, seed=1))
    monkeypatch.setenv("DNNLIB_CACHE_DIR", str(tmp_path / "cache"))
    result = CliRunner().invoke(calc_fid_main, ["--data", imgs, "--ref", imgs, "--metrics", "pr50k3_full",
                                                "--vgg16", script, "--device", "cpu"])
    assert result.exit_code == 2 and "is a TorchScript file" in result.output and "Traceback" not in result.output


# ---- the real network, full size -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_full_size_random_vgg16_matches_torch_fidelity(tmp_path):
    """Random weights of the real shapes (He-scaled, so fc2 is not all zero) saved as a state dict: our loader and
    extractor give torch-fidelity's own VGG16 features (its constructor reads the same file)."""
    from torch_fidelity.feature_extractor_vgg16 import FeatureExtractorVGG16
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, ref in vgg16._skeleton().state_dict().items():
        fan_in = int(np.prod(ref.shape[1:])) if ref.ndim > 1 else 1
        state[key] = torch.randn(ref.shape, generator=gen) * (2 / fan_in) ** 0.5 if ref.ndim > 1 else \
            torch.randn(ref.shape, generator=gen) * 0.01
    path = tmp_path / "vgg16-random.pth"
    torch.save(state, path)
    images = torch.from_numpy(smooth_images(3, seed=5, size=48)).permute(0, 3, 1, 2).contiguous()
    ours = vgg16.feature_extractor(path, "not-torchvision")
    theirs = FeatureExtractorVGG16(vgg16.EXTRACTOR_NAME, [vgg16.FEATURE_LAYER], feature_extractor_weights_path=path)
    with torch.no_grad():
        a, b = ours(images)[0], theirs(images)[0]
    assert a.shape == (3, vgg16.FEATURE_DIM) and (a > 0).sum() > 100
    assert torch.equal(a, b)
    state["classifier.3.bias"][0] = float("nan")
    torch.save(state, path)
    with pytest.raises(vgg16.VGG16WeightsError, match="classifier.3.bias holds NaN"):
        vgg16.load_checked_state_dict(path)
