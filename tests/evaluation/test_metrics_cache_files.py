"""The metrics cache's reader on special and damaged files (no Inception weights needed): a FIFO, a folder or a
link to /dev/zero under a cache file name is named in a warning and recomputed, never opened for a blocking read."""

import os

import pytest
import torch

from stylegan_rlo.evaluation import metrics_cache

VALUES = {"mu": torch.arange(4, dtype=torch.float64)}


def _check(data):
    if set(data) != {"mu"} or data["mu"].shape != (4,):
        raise ValueError("wrong tensors")


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "garbage"])
def test_special_or_damaged_cache_file_is_recomputed(tmp_path, kind):
    path = tmp_path / "stats.pt"
    if kind == "fifo":
        os.mkfifo(path)  # no writer: opening it for a blocking read would hang
    elif kind == "dev-zero":
        os.symlink("/dev/zero", path)
    else:
        path.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    warnings = []
    data = metrics_cache.cached_tensors(str(path), 1000, _check, lambda: dict(VALUES), warn=warnings.append)
    assert torch.equal(data["mu"], VALUES["mu"])
    assert len(warnings) == 1 and str(path) in warnings[0] and "Recomputing" in warnings[0]
    if kind != "garbage":
        assert "not a regular file" in warnings[0]
    assert os.path.isfile(path) and not os.path.islink(path)  # replaced by a genuine cache file, which now loads
    assert torch.equal(metrics_cache.read_tensors(str(path), 1000)["mu"], VALUES["mu"])


def test_oversized_cache_file_is_not_read_whole(tmp_path):
    path = tmp_path / "stats.pt"
    path.write_bytes(b"\x00" * (3 * 2**20 + 10))
    with pytest.raises(ValueError, match="larger than"):
        metrics_cache.read_tensors(str(path), 1000)
