"""The metrics cache cannot run code: planted pickle payloads in our cache files or under torch-fidelity's cache
names never execute, are reported by name and replaced, and the metric values stay those of a clean run."""

import os
import pathlib

import pytest
import torch
from test_metrics import WEIGHTS, perturb, smooth_images, write_zip

from stylegan_rlo.data.dataset import ImageFolderDataset
from stylegan_rlo.evaluation import metrics, metrics_cache

pytestmark = pytest.mark.skipif(not os.path.isfile(WEIGHTS), reason="converted Inception weights missing")


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("DNNLIB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(metrics, "FEATURE_LAYER", "64")
    imgs = smooth_images(4, seed=1)
    return (write_zip(tmp_path / "a.zip", imgs), write_zip(tmp_path / "p.zip", perturb(imgs, 2)),
            tmp_path / "marker")


def _values(a, p):
    return [r["results"] for r in metrics.evaluate_datasets(a, p, metrics=["fid", "kid"], seed=3, batch=4)]


def test_planted_payloads_never_run_and_are_replaced(env, capsys):
    a, p, marker = env
    clean = _values(a, p)
    cache = pathlib.Path(metrics.cache_dir())
    ours = sorted(os.listdir(cache))
    evil_path = str(cache.parent / "evil.pt")
    torch.save({"features": Payload(marker)}, evil_path)  # a genuine torch.save archive around the payload
    torch.load(evil_path, weights_only=False)  # positive control: a free unpickler (torch-fidelity's) runs it
    assert marker.exists()
    marker.unlink()
    evil = open(evil_path, "rb").read()
    for data in (a, p):  # our file names, and those torch-fidelity 0.4 reads from its cache folder
        prefix = metrics.dataset_cache_name(ImageFolderDataset(data), WEIGHTS, False)
        for suffix in ("features-64", "fid-stats-64", "inception-v3-compat-features-64",
                       "inception-v3-compat-stat-fid-64"):
            (cache / f"{prefix}-{suffix}.pt").write_bytes(evil)
    capsys.readouterr()
    try:
        again = _values(a, p)
    finally:
        assert not marker.exists()
    assert again == clean
    err = capsys.readouterr().err
    assert ours and all(f"Ignoring the metrics cache file {cache / name}" in err for name in ours)
    assert "weights-only" in err
    assert _values(a, p) == clean and capsys.readouterr().err == ""  # replaced by good files


def test_cache_reader_bounds_what_it_reads(tmp_path):
    path = str(tmp_path / "t.pt")
    torch.save({"features": torch.zeros(1000, 1024)}, path)
    assert metrics_cache.read_tensors(path, 1000 * 1024 * 4)["features"].shape == (1000, 1024)
    with pytest.raises(ValueError, match="more than"):
        metrics_cache.read_tensors(path, 10)  # far more data than the caller expects: not even unpickled
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ValueError, match="dict of tensors"):
        metrics_cache.read_tensors(path, 100)
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a torch.save archive"):
        metrics_cache.read_tensors(str(tmp_path / "junk.pt"), 100)
