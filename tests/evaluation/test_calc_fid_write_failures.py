"""calc_fid when its files cannot be written: the records are printed first, and every failed write (the run
directory's metric-*.jsonl, --nn-picture) ends in one message naming the file, the cause and the remedy, exit status
2, never a traceback; a metrics cache that cannot be written costs a warning only.

Tests run as root here, where a read-only mode bit stops no write: read-only and full disks are simulated by making
the writer raise OSError(EROFS / ENOSPC); real failures use paths no user can write (a folder where the file should
be, a file where a folder should be).
"""

import errno
import json
import os
import shutil

import pytest
from click.testing import CliRunner
from test_metrics_vgg16 import small_vgg  # noqa: F401 (fixture)
from training_fixtures import DATA

from stylegan_rlo.cli.calc_fid import main as calc_fid_main
from stylegan_rlo.evaluation import inception_weights, metrics

WEIGHTS = inception_weights.default_weights_path()


@pytest.fixture
def run_dir(tmp_path):
    """A training run directory holding a network snapshot."""
    run = tmp_path / "00000-run"
    run.mkdir()
    (run / "training_options.json").write_text("{}")
    shutil.copy(os.path.join(DATA, "tiny_uncond.pkl"), run / "network-snapshot-000000.pkl")
    return run


def calc_fid(small_vgg, run_dir, *extra):  # noqa: F811 (fixture value)
    args = ["--network", str(run_dir / "network-snapshot-000000.pkl"), "--data", small_vgg.a, "--num", "4",
            "--batch", "4", "--device", "cpu", "--metrics", "pr50k3_full", "--vgg16", small_vgg.weights, *extra]
    return CliRunner().invoke(calc_fid_main, args)


def printed_records(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def raising(code: int):
    def write(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    return write


@pytest.mark.parametrize("code, cause", [(errno.EROFS, "the file system is read-only"),
                                         (errno.ENOSPC, "the disk is full"),
                                         (errno.EACCES, "permission denied")])
def test_records_printed_then_one_message(small_vgg, run_dir, monkeypatch, code, cause):  # noqa: F811
    good = calc_fid(small_vgg, run_dir)
    assert good.exit_code == 0, good.output
    expected = printed_records(good)[0]["results"]
    monkeypatch.setattr(metrics, "append_line", raising(code))
    result = calc_fid(small_vgg, run_dir)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert [r["results"] for r in printed_records(result)] == [expected]  # the result, printed in full
    message = result.stderr
    assert f"could not write {run_dir / 'metric-pr50k3_full.jsonl'}: {cause}" in message
    assert "append that line to the file" in message
    assert len((run_dir / "metric-pr50k3_full.jsonl").read_text().splitlines()) == 1  # only the good run's line


def test_real_write_failures_without_simulation(small_vgg, run_dir, tmp_path):  # noqa: F811
    """A folder where the records file should be (EISDIR even for root)."""
    (run_dir / "metric-pr50k3_full.jsonl").mkdir()
    result = calc_fid(small_vgg, run_dir)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert printed_records(result)[0]["metric"] == "pr50k3_full"
    assert f"could not write {run_dir / 'metric-pr50k3_full.jsonl'}" in result.stderr


def test_unwritable_cache_is_a_warning(small_vgg, run_dir, tmp_path, monkeypatch):  # noqa: F811
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("DNNLIB_CACHE_DIR", str(blocker / "cache"))  # a file where a folder must go: ENOTDIR
    result = calc_fid(small_vgg, run_dir)
    assert result.exit_code == 0, result.output
    assert printed_records(result)[0]["metric"] == "pr50k3_full"
    assert "Could not write the metrics cache file" in result.stderr and "DNNLIB_CACHE_DIR" in result.stderr


@pytest.mark.skipif(not os.path.isfile(WEIGHTS), reason=f"converted Inception weights missing at {WEIGHTS}")
def test_picture_and_records_both_fail(small_vgg, run_dir, tmp_path, monkeypatch):  # noqa: F811
    """Every write is tried and named: the records (read-only) and the picture (a file where its folder should be,
    a real ENOTDIR); both records printed."""
    monkeypatch.setattr(metrics, "resolve_weights_path", inception_weights.resolve_weights_path)
    monkeypatch.setattr(metrics, "FEATURE_LAYER", "64")  # the fast Inception layer
    monkeypatch.setattr(metrics, "append_line", raising(errno.EROFS))
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    picture = blocker / "nn.png"
    result = calc_fid(small_vgg, run_dir, "--ref", small_vgg.p, "--metrics", "pr50k3_full,mem50k_inception",
                      "--nn-picture", str(picture), "--inception-weights", WEIGHTS)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert [r["metric"] for r in printed_records(result)] == ["pr50k3_full", "mem50k_inception"]
    for name in ("metric-pr50k3_full.jsonl", "metric-mem50k_inception.jsonl"):
        assert f"could not write {run_dir / name}: the file system is read-only" in result.stderr
    assert f"could not write {picture}" in result.stderr and "--nn-picture" in result.stderr

