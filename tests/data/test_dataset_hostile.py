"""Hostile or damaged datasets: deep or special-file dataset.json, damaged or encrypted members, enormous label
vectors, FIFOs posing as images. Training (ImageFolderDataset and `train --dry-run`) and dataset_tool each end in one
clear error (exit status 2 from the commands), quickly and without reading or allocating without bound."""

import io
import json
import os
import zipfile

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

from stylegan_rlo.cli import dataset_tool as dataset_tool_cli
from stylegan_rlo.cli import train as train_cli
from stylegan_rlo.data.dataset import MAX_LABEL_DIM, DatasetError, ImageFolderDataset
from stylegan_rlo.data.dataset_tool import DatasetToolError, convert_dataset


def png(value: int = 0, res: int = 8) -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(np.full((res, res, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_folder(root, files: dict) -> str:
    for name, data in files.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
    return str(root)


def write_zip(path, files: dict) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return str(path)


def convert(src, dest, **kwargs):
    return convert_dataset(str(src), str(dest), progress=False, log=lambda _m: None, **kwargs)


def both_refuse(src, tmp_path, words: str) -> None:
    """Training's reader and dataset_tool --labels refuse `src` with a message matching `words`; no output left."""
    with pytest.raises(DatasetError, match=words):
        ImageFolderDataset(src, use_labels=True)
    with pytest.raises(DatasetToolError, match=words):
        convert(src, tmp_path / "out.zip", labels=True)
    assert not (tmp_path / "out.zip").exists()


IMAGES = {"a.png": png(0), "b.png": png(255)}
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("kind", ["zip", "folder"])
def test_deeply_nested_labels_file_is_refused_without_recursion(tmp_path, kind):
    files = dict(IMAGES, **{"dataset.json": DEEP})
    src = write_zip(tmp_path / "d.zip", files) if kind == "zip" else write_folder(tmp_path / "d", files)
    both_refuse(src, tmp_path, "dataset.json .* nests 100000 levels deep")


def test_train_and_dataset_tool_commands_report_deep_labels_in_one_line(tmp_path):
    src = write_zip(tmp_path / "d.zip", dict(IMAGES, **{"dataset.json": DEEP}))
    result = CliRunner().invoke(train_cli.main, ["--data", src, "--outdir", str(tmp_path / "runs"), "--device", "cpu",
                                                 "--cond", "--dry-run"])
    assert result.exit_code == 2 and "nests 100000 levels deep" in result.output, result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(dataset_tool_cli.main, ["--source", src, "--dest", str(tmp_path / "o.zip"),
                                                        "--labels"])
    assert result.exit_code == 2 and "nests 100000 levels deep" in result.output, result.output
    assert "Traceback" not in result.output


def _corrupt_member(path, name: str) -> None:
    raw = bytearray(open(path, "rb").read())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + 2] ^= 0xFF  # one data byte: the stored CRC no longer matches
    open(path, "wb").write(bytes(raw))


def test_damaged_labels_member_is_named(tmp_path):
    labels = json.dumps({"labels": [["a.png", 0], ["b.png", 1]]})
    src = write_zip(tmp_path / "d.zip", dict(IMAGES, **{"dataset.json": labels}))
    _corrupt_member(src, "dataset.json")
    both_refuse(src, tmp_path, r"member 'dataset.json' of .*d.zip cannot be read .*CRC")


def test_encrypted_labels_member_is_named(tmp_path):
    src = write_zip(tmp_path / "e.zip", dict(IMAGES, **{"dataset.json": '{"labels": null}'}))
    raw = bytearray(open(src, "rb").read())
    with zipfile.ZipFile(src) as zf:
        info = zf.getinfo("dataset.json")
    raw[info.header_offset + 6] |= 1  # the 'encrypted' flag of the local header
    at = raw.index(b"PK\x01\x02")
    while raw[at + 46:at + 46 + len(b"dataset.json")] != b"dataset.json":  # its central directory entry
        at = raw.index(b"PK\x01\x02", at + 4)
    raw[at + 8] |= 1
    open(src, "wb").write(bytes(raw))
    both_refuse(src, tmp_path, r"member 'dataset.json' of .*e.zip is encrypted")


def test_damaged_image_member_is_named(tmp_path):
    src = write_zip(tmp_path / "i.zip", IMAGES)
    _corrupt_member(src, "b.png")
    with pytest.raises(DatasetError, match=r"'b.png' in .*i.zip .*Bad CRC-32"):
        ImageFolderDataset(src)[1]  # a tiny image is read whole (and checked) with its header


def test_enormous_label_vectors_are_refused_before_allocating(tmp_path):
    wide = [0] * 10**6
    src = write_zip(tmp_path / "w.zip", dict(IMAGES, **{"dataset.json": json.dumps(
        {"labels": [["a.png", wide], ["b.png", wide]]})}))
    both_refuse(src, tmp_path, f"'a.png' is a list of 1000000 numbers; labels may have at most {MAX_LABEL_DIM}")
    np.savez(tmp_path / "w.npz", x=np.zeros((2, 8, 8, 3), np.uint8), y=np.zeros((2, MAX_LABEL_DIM + 1), np.float32))
    with pytest.raises(DatasetToolError, match=f"{MAX_LABEL_DIM + 1} dimensions; at most {MAX_LABEL_DIM}"):
        convert(tmp_path / "w.npz", tmp_path / "out.zip", labels=True)


def test_widest_allowed_label_vectors_load(tmp_path):
    wide = [0.5] * MAX_LABEL_DIM
    src = write_zip(tmp_path / "w.zip", dict(IMAGES, **{"dataset.json": json.dumps(
        {"labels": [["a.png", wide], ["b.png", wide]]})}))
    assert ImageFolderDataset(src, use_labels=True).label_dim == MAX_LABEL_DIM


def test_labels_file_linked_to_dev_zero_is_refused(tmp_path):
    root = write_folder(tmp_path / "z", IMAGES)
    os.symlink("/dev/zero", os.path.join(root, "dataset.json"))
    both_refuse(root, tmp_path, "dataset.json is not a regular file")


def test_fifo_labels_file_is_refused(tmp_path):
    root = write_folder(tmp_path / "f", IMAGES)
    os.mkfifo(os.path.join(root, "dataset.json"))
    both_refuse(root, tmp_path, "dataset.json is not a regular file \\(a FIFO\\)")


def test_fifo_image_is_refused_not_waited_for(tmp_path):
    root = write_folder(tmp_path / "f", IMAGES)
    os.mkfifo(os.path.join(root, "c.png"))
    with pytest.raises(DatasetError, match="c.png is not a regular file"):
        ImageFolderDataset(root)
    with pytest.raises(DatasetToolError, match="c.png.*not a regular file"):
        convert(root, tmp_path / "out.zip")
    summary = convert(root, tmp_path / "out.zip", on_error="skip")
    assert summary.num_images == 2 and summary.skipped == ["c.png"]


@pytest.mark.parametrize("content, words", [
    ({"labels": [["a.png", 0], ["b.png", 1], ["a.png", 1]]}, "'a.png' is labelled twice"),
    ([["a.png", 0], ["b.png", 1]], "top level: expected an object"),
    ({"classes": []}, 'no "labels" key'),
    ({"labels": [["a.png", 0, 1], ["b.png", 1]]}, r"field labels\[0\]: expected \[a string"),
])
def test_dataset_tool_and_training_apply_the_same_label_rules(tmp_path, content, words):
    src = write_zip(tmp_path / "l.zip", dict(IMAGES, **{"dataset.json": json.dumps(content)}))
    both_refuse(src, tmp_path, words)


def test_fifo_as_the_dataset_itself_is_refused(tmp_path):
    fifo = tmp_path / "data.zip"
    os.mkfifo(fifo)
    with pytest.raises(DatasetError, match="not a folder or a regular file"):
        ImageFolderDataset(str(fifo))
    with pytest.raises(DatasetToolError, match="not a folder or a regular file"):
        convert(fifo, tmp_path / "out.zip")
