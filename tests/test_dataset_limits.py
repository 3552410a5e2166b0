"""Dataset inputs that try to exhaust memory (a huge dataset.json, huge class indices) and labels that training
would refuse: clear errors up front, from the dataset reader and from dataset_tool, and nothing read that is not
needed."""

import io
import json
import zipfile

import numpy as np
import PIL.Image
import pytest

from stylegan_rlo import dataset as dataset_mod
from stylegan_rlo.dataset import DatasetError, ImageFolderDataset
from stylegan_rlo.dataset_tool import DatasetToolError, convert_dataset


def _png(value):
    buf = io.BytesIO()
    PIL.Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _zip(path, labels_json=None, huge_labels_mib=0):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("a.png", _png(0))
        zf.writestr("b.png", _png(255))
        if labels_json is not None:
            zf.writestr("dataset.json", json.dumps(labels_json))
        if huge_labels_mib:  # streamed: highly compressible, so the archive stays small
            with zf.open("dataset.json", "w", force_zip64=True) as f:
                block = b" " * 2**20
                for _ in range(huge_labels_mib):
                    f.write(block)
    return str(path)


def _convert(source, dest, **kwargs):
    return convert_dataset(str(source), str(dest), progress=False, log=lambda _m: None, **kwargs)


def test_oversized_labels_file_is_refused_and_never_read_without_labels(tmp_path):
    mib = dataset_mod.MAX_LABELS_FILE_BYTES // 2**20 + 1
    src = _zip(tmp_path / "bomb.zip", huge_labels_mib=mib)
    assert (tmp_path / "bomb.zip").stat().st_size < 2 * 2**20
    assert _convert(src, tmp_path / "plain.zip").num_images == 2  # dataset.json is not read without --labels
    with pytest.raises(DatasetToolError, match=r"dataset.json in .*bytes; a labels file may have at most"):
        _convert(src, tmp_path / "labelled.zip", labels=True)
    assert len(ImageFolderDataset(src)) == 2
    with pytest.raises(DatasetError, match="a labels file may have at most"):
        ImageFolderDataset(src, use_labels=True)


@pytest.mark.parametrize("bad", [10**12, 2**16, float("inf"), 1e300])
def test_huge_class_indices_are_refused(tmp_path, bad):
    src = _zip(tmp_path / "d.zip", {"labels": [["a.png", 0], ["b.png", bad]]})
    with pytest.raises(DatasetError, match=r"label of 'b.png'.*below 65536"):
        ImageFolderDataset(src, use_labels=True)


def test_largest_allowed_class_index_loads(tmp_path):
    src = _zip(tmp_path / "d.zip", {"labels": [["a.png", 0], ["b.png", 2**16 - 1]]})
    assert ImageFolderDataset(src, use_labels=True).label_dim == 2**16


@pytest.mark.parametrize("bad", ["cat", -1, 0.5, [1.0, float("nan")], [1e39]])
def test_dataset_tool_refuses_labels_training_would_refuse(tmp_path, bad):
    good = [1.0, 2.0] if isinstance(bad, list) else 1
    src = _zip(tmp_path / "src.zip", {"labels": [["a.png", good], ["b.png", bad]]})
    with pytest.raises(DatasetError):  # what training would say about the same labels
        ImageFolderDataset(src, use_labels=True)
    with pytest.raises(DatasetToolError, match="label of 'b.png'|float32 range"):
        _convert(src, tmp_path / "out.zip", labels=True)
    assert not (tmp_path / "out.zip").exists()


def test_dataset_tool_refuses_huge_npz_class_indices(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 8, 8, 3), np.uint8), y=np.array([0, 10**12]))
    with pytest.raises(DatasetToolError, match="below 65536"):
        _convert(tmp_path / "d.npz", tmp_path / "out.zip", labels=True)
