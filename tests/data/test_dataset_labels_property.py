"""Property: a valid dataset.json mutated at random (bytes flipped, inserted or cut; values swapped for random JSON)
is either refused cleanly (DatasetError / DatasetToolError naming dataset.json) or loaded correctly (labels equal
to a reference built from Python's json module), and training and dataset_tool always decide alike. Never
another exception."""

import io
import json
import os
import shutil
import tempfile

import numpy as np
import PIL.Image
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from stylegan_rlo.data.dataset import DatasetError, ImageFolderDataset
from stylegan_rlo.data.dataset_tool import DatasetToolError, convert_dataset

NAMES = ["a.png", "b.png", "sub/c.png"]
VALID = [json.dumps({"labels": [[n, i] for i, n in enumerate(NAMES)]}).encode(),
         json.dumps({"labels": [[n, [i * 0.5, -1.0]] for i, n in enumerate(NAMES)]}).encode()]
ALPHABET = b'[]{}",:0123456789.-+eE \\ntruefalsenullNaInfiy/\xff\x00'

json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() |
                           st.sampled_from(NAMES + ["x.png", ""]),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner,
                                                                                       max_size=3),
                           max_leaves=12)


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    if draw(st.booleans()):  # structural: replace one label, name or the labels list by random JSON
        doc = json.loads(data)
        where = draw(st.sampled_from(["labels", "name", "label", "top", "extra"]))
        value = draw(json_values)
        i = draw(st.integers(0, len(NAMES) - 1))
        if where == "labels":
            doc["labels"] = value
        elif where == "name":
            doc["labels"][i][0] = value
        elif where == "label":
            doc["labels"][i][1] = value
        elif where == "extra":
            doc["labels"].append(value)
        else:
            doc = value
        data = bytearray(json.dumps(doc).encode())
    for _ in range(draw(st.integers(0, 3))):  # byte-level damage
        op = draw(st.sampled_from(["flip", "insert", "cut"]))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and pos < len(data):
            data[pos] = draw(st.sampled_from(list(ALPHABET)))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(max_size=6).map(lambda b: bytes(ALPHABET[x % len(ALPHABET)] for x in b)))
        else:
            del data[pos:pos + draw(st.integers(1, 8))]
    return bytes(data)


def reference_labels(data: bytes) -> np.ndarray:
    """Labels of NAMES as training should serve them, computed with Python's json (assumes the file is accepted)."""
    table = {name: label for name, label in json.loads(data)["labels"]}
    values = [table[n] for n in NAMES]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        onehot = np.zeros((len(NAMES), int(max(values)) + 1), np.float32)
        onehot[np.arange(len(NAMES)), [int(v) for v in values]] = 1
        return onehot
    return np.array(values, np.float32)


@pytest.fixture(scope="module")
def folder():
    root = tempfile.mkdtemp(prefix="labels-property-")
    for i, name in enumerate(NAMES):
        os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
        buf = io.BytesIO()
        PIL.Image.fromarray(np.full((4, 4, 3), 60 * i, np.uint8)).save(buf, format="PNG")
        with open(os.path.join(root, name), "wb") as f:
            f.write(buf.getvalue())
    yield root
    shutil.rmtree(root)


@settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=mutated())
def test_mutated_labels_file_is_refused_cleanly_or_loaded_correctly(folder, tmp_path_factory, data):
    with open(os.path.join(folder, "dataset.json"), "wb") as f:
        f.write(data)
    try:
        ds = ImageFolderDataset(folder, use_labels=True)
        training = np.stack([ds.get_label(i) for i in range(len(ds))]) if ds.has_labels else None
    except DatasetError as e:
        assert "dataset.json" in str(e)
        training = "refused"
    dest = tmp_path_factory.mktemp("out") / "out.zip"
    try:
        convert_dataset(folder, str(dest), labels=True, progress=False, log=lambda _m: None)
        tool = "written"
    except DatasetToolError as e:
        assert "dataset.json" in str(e) or "labels" in str(e)
        tool = "refused"
    event(f"training {'refused' if isinstance(training, str) else 'loaded'}")
    if isinstance(training, str):
        assert tool == "refused"
        return
    if training is None:  # "labels": null: dataset_tool falls back to folder classes
        assert json.loads(data)["labels"] is None
        return
    assert tool == "written"
    assert np.array_equal(training, reference_labels(data))
    written = ImageFolderDataset(str(dest), use_labels=True)
    assert np.array_equal(np.stack([written.get_label(i) for i in range(len(written))]), training)
