"""dataset_tool destinations: the source is never replaced, an existing output only with --overwrite, and an
unwritable destination gives a clear error (no traceback) with nothing half-written left behind."""

from __future__ import annotations

import errno
import os
import zipfile

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

from stylegan_rlo.cli.dataset_tool import main as cli_main
from stylegan_rlo.dataset import ImageFolderDataset
from stylegan_rlo.dataset_tool import DatasetToolError, convert_dataset


def _source_zip(path, value: int, n: int = 2) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(n):
            img = PIL.Image.fromarray(np.full((8, 8, 3), value, np.uint8))
            with zf.open(f"{i}.png", "w") as f:
                img.save(f, format="PNG")


def _convert(source, dest, **kwargs):
    return convert_dataset(str(source), str(dest), progress=False, log=lambda _m: None, **kwargs)


def test_dest_equal_to_source_is_refused_even_through_a_link(tmp_path):
    src = tmp_path / "data.zip"
    _source_zip(src, 7, n=3)
    before = src.read_bytes()
    (tmp_path / "link.zip").symlink_to(src)
    os.link(src, tmp_path / "hard.zip")
    for dest in (src, tmp_path / "link.zip", tmp_path / "hard.zip", tmp_path / "." / "data.zip"):
        with pytest.raises(DatasetToolError, match="same file"):
            _convert(src, dest, overwrite=True)
    assert src.read_bytes() == before
    result = CliRunner().invoke(cli_main, ["--source", str(src), "--dest", str(src)])
    assert result.exit_code != 0 and "same file" in result.output and "Traceback" not in result.output
    assert src.read_bytes() == before


def test_existing_zip_dest_needs_overwrite(tmp_path):
    _source_zip(tmp_path / "a.zip", 10)
    _source_zip(tmp_path / "b.zip", 200, n=4)
    before = (tmp_path / "b.zip").read_bytes()
    with pytest.raises(DatasetToolError, match="--overwrite"):
        _convert(tmp_path / "a.zip", tmp_path / "b.zip")
    assert (tmp_path / "b.zip").read_bytes() == before
    result = CliRunner().invoke(cli_main, ["--source", str(tmp_path / "a.zip"), "--dest", str(tmp_path / "b.zip")])
    assert result.exit_code != 0 and "--overwrite" in result.output
    result = CliRunner().invoke(cli_main, ["--source", str(tmp_path / "a.zip"), "--dest", str(tmp_path / "b.zip"),
                                           "--overwrite"])
    assert result.exit_code == 0, result.output
    ds = ImageFolderDataset(str(tmp_path / "b.zip"))
    assert len(ds) == 2 and int(ds[0][0][0, 0, 0]) == 10


def test_overwrite_replaces_a_dataset_folder_but_never_another_folder(tmp_path):
    _source_zip(tmp_path / "a.zip", 10)
    _source_zip(tmp_path / "b.zip", 200, n=4)
    _convert(tmp_path / "b.zip", tmp_path / "out")
    _convert(tmp_path / "a.zip", tmp_path / "out", overwrite=True)
    assert len(ImageFolderDataset(str(tmp_path / "out"))) == 2
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    with pytest.raises(DatasetToolError, match="not a dataset"):
        _convert(tmp_path / "a.zip", tmp_path / "mine", overwrite=True)
    assert os.listdir(tmp_path / "mine") == ["thesis.tex"]
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_unwritable_destinations_give_clear_errors(tmp_path, monkeypatch):
    _source_zip(tmp_path / "a.zip", 10)
    (tmp_path / "folder.zip").mkdir()
    (tmp_path / "afile").write_text("x")
    runner = CliRunner()
    for dest, expected in ((tmp_path / "folder.zip", "is a folder"), (tmp_path / "afile" / "d.zip", "cannot write"),
                           (tmp_path / "afile" / "d", "cannot write")):
        result = runner.invoke(cli_main, ["--source", str(tmp_path / "a.zip"), "--dest", str(dest)])
        assert result.exit_code != 0 and expected in result.output, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)

    def disk_full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(zipfile.ZipFile, "writestr", disk_full)
    with pytest.raises(DatasetToolError, match="No space left"):
        _convert(tmp_path / "a.zip", tmp_path / "new.zip")
    assert sorted(os.listdir(tmp_path)) == ["a.zip", "afile", "folder.zip"]
