"""Training against broken environments and inputs: an --outdir that is a file, read-only or fills up mid-run,
a 1x1 dataset, a --desc with '/': an error message (no traceback), validated before any run directory exists;
and temp files of killed runs are cleaned up when the next run starts."""

import errno
import os
import time

from test_train import FAST, cli
from training_fixtures import TINY_UNCOND, make_zip

from stylegan_rlo.training import loop as training_loop
from stylegan_rlo.training import run_dir


def _clean_failure(result, exit_code, *words):
    assert result.exit_code == exit_code and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.output, (word, result.output)


def test_tiny_images_are_refused_before_any_run_directory(tmp_path):
    for res in (1, 2):
        data = make_zip(tmp_path / f"res{res}.zip", num=2, res=res)
        result = cli("--data", data, "--outdir", tmp_path / "runs", *FAST)
        _clean_failure(result, 2, f"{res}x{res}", "at least 4x4", "--resolution 4")
    assert not (tmp_path / "runs").exists()


def test_desc_with_a_slash_is_a_usage_error(tmp_path):
    data = make_zip(tmp_path / "d.zip", num=2)
    result = cli("--data", data, "--outdir", tmp_path / "runs", "--resume", TINY_UNCOND, "--desc", "a/b", *FAST)
    _clean_failure(result, 2, "--desc", "'a/b'")
    assert not (tmp_path / "runs").exists()


def test_outdir_that_is_a_file_or_read_only(tmp_path, monkeypatch):
    data = make_zip(tmp_path / "d.zip", num=2)
    (tmp_path / "afile").write_text("x")
    result = cli("--data", data, "--outdir", tmp_path / "afile", "--resume", TINY_UNCOND, *FAST)
    _clean_failure(result, 2, "afile", "is a file")
    real_mkdir = os.mkdir

    def read_only(path, *args, **kwargs):
        if str(path).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", read_only)
    result = cli("--data", data, "--outdir", tmp_path / "ro", "--resume", TINY_UNCOND, *FAST)
    _clean_failure(result, 2, "Read-only file system", "--outdir")


def test_disk_full_mid_run_reports_the_first_error(tmp_path, monkeypatch, one_thread, small_grids):
    data = make_zip(tmp_path / "d.zip", num=4)
    writes = []

    def full_disk(path, line):
        writes.append(os.path.basename(path))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))

    monkeypatch.setattr(training_loop, "append_line", full_disk)
    result = cli("--data", data, "--outdir", tmp_path / "runs", "--resume", TINY_UNCOND, "--kimg", 0.004, *FAST)
    _clean_failure(result, 2, "cannot write", "log.txt", "No space left on device")
    assert writes == ["log.txt", "log.txt"]  # the first failure is reported, not the flush that failed after it


def test_stale_temp_files_of_killed_runs_are_removed_at_start(tmp_path):
    old_run = tmp_path / "runs" / "00000-old"
    old_run.mkdir(parents=True)
    stale, fresh, kept = (old_run / ".fakes000004.png.x1y2.tmp", old_run / ".network-snapshot-000004.pkl.z9.tmp",
                          old_run / "fakes000000.png")
    for path in (stale, fresh, kept):
        path.write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    os.utime(kept, (two_hours_ago, two_hours_ago))
    new = run_dir.create_run_dir(str(tmp_path / "runs"), "next")
    assert os.path.basename(new) == "00001-next"
    assert not stale.exists() and fresh.exists() and kept.exists()  # a young temp may be a write in progress
