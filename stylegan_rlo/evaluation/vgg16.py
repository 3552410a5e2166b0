"""VGG16 fc2 features for `pr50k3_full`, the official precision/recall, from a plain state-dict file given by path.

The official metric runs NVIDIA's `vgg16.pt`, a TorchScript file; loading TorchScript runs code from the file, so it
is never read here. torch-fidelity's VGG16 extractor does the same work on torchvision's ImageNet VGG16 weights
(`vgg16-397923af.pth`, a state dict): images resized to 224x224 with TensorFlow-1 style bilinear sampling (as the
official detector resizes), ImageNet mean/std normalisation, and the 4096-d fc2 output after its ReLU. That
extractor unpickles whatever file it is given, so it only ever gets tensors we loaded with `weights_only=True` and
checked key by key, assigned into a VGG16 built without random initialisation.
"""

from __future__ import annotations

import os
import pickle
import sys
import zipfile

import torch
import torchvision
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.feature_extractor_vgg16 import FeatureExtractorVGG16

from stylegan_rlo.errors import UserError
from stylegan_rlo.evaluation.inception_weights import cache_root
from stylegan_rlo.fileio import BoundedReadError, open_regular

EXTRACTOR_NAME = "vgg16"
FEATURE_LAYER = "fc2_relu"   # fc2 after its ReLU: the official detector's features, torch-fidelity's default for prc
FEATURE_DIM = 4096
WEIGHTS_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
WEIGHTS_SHA256 = "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0"
WEIGHTS_NAME = os.path.basename(WEIGHTS_URL)
MAX_FILE_BYTES = 1 << 30     # the torchvision file is 553 MB; anything much larger is not a VGG16 state dict
_CLASSIFIER_TAIL = (4, 5, 6)  # classifier indices after fc2's ReLU (dropout, fc3): removed, as torch-fidelity does


class VGG16WeightsError(UserError):
    """VGG16 weights are missing, unsafe or of the wrong layout; the message says what to do."""


def default_weights_paths() -> list[str]:
    """Where the weights are looked for without a path: `<repo>/.cache/vgg16/` (beside the Inception weights), then
    torch hub's checkpoints folder (where torchvision itself downloads them)."""
    return [os.path.join(cache_root(), "vgg16", WEIGHTS_NAME),
            os.path.join(torch.hub.get_dir(), "checkpoints", WEIGHTS_NAME)]


def how_to_get() -> str:
    """What to fetch and where to put or pass it (for messages)."""
    return (f"download {WEIGHTS_URL} (torchvision's ImageNet VGG16, 528 MiB, sha256 {WEIGHTS_SHA256[:16]}...) and "
            f"pass it with --vgg16 FILE, or put it at {' or '.join(default_weights_paths())}")


def resolve_vgg16_path(user_path: str | os.PathLike | None = None) -> str:
    """The VGG16 weights file to use: `user_path`, else the first default location holding the file; refused with
    what to fetch when there is none (nothing is downloaded: the file is 528 MiB)."""
    if user_path is not None:
        path = os.fspath(user_path)
        if not os.path.exists(path):
            raise VGG16WeightsError(f"VGG16 weights file not found: {path}; {how_to_get()}")
        return path
    found = next((p for p in default_weights_paths() if os.path.isfile(p)), None)
    if found is None:
        raise VGG16WeightsError(f"pr50k3_full measures VGG16 features and no VGG16 weights file was given; "
                                f"{how_to_get()} (or measure pr50k3_inception, on the Inception features of FID, "
                                f"which needs no VGG16)")
    return found


def _skeleton() -> torch.nn.Module:
    """torchvision's VGG16 on the meta device: the layout reference and loading target, without 138M random
    numbers."""
    with torch.device("meta"):
        return torchvision.models.vgg16()


def _refuse_torchscript(path: str) -> None:
    """TorchScript archives (NVIDIA's vgg16.pt) carry code that runs when loaded: refused by their contents."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a ZIP archive: the legacy torch.save format, or garbage that torch.load refuses below
    if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
        raise VGG16WeightsError(f"{path} is a TorchScript file (such as NVIDIA's vgg16.pt); loading TorchScript runs "
                                f"code from the file, so it is not read. Use a plain state dict instead: "
                                f"{how_to_get()}")


def load_checked_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A torchvision VGG16 state dict from `path`, loaded as tensors only (weights_only=True: no code runs) and
    checked: a regular file of at most MAX_FILE_BYTES, no TorchScript, every key and shape, finite floats."""
    path = os.fspath(path)
    try:
        with open_regular(path, "VGG16 weights file") as f:
            size = os.fstat(f.fileno()).st_size
    except BoundedReadError as e:
        raise VGG16WeightsError(str(e)) from e
    if size > MAX_FILE_BYTES:
        raise VGG16WeightsError(f"{path} holds {size} bytes, more than a VGG16 state dict ({MAX_FILE_BYTES} at "
                                f"most); {how_to_get()}")
    _refuse_torchscript(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError,
            AttributeError, ImportError) as e:  # code or objects in the pickle, truncated or foreign files
        raise VGG16WeightsError(f"{path} is not a plain tensor state dict and was not loaded ({type(e).__name__}: "
                                f"{str(e).splitlines()[0][:200] if str(e) else ''}); {how_to_get()}") from e
    if not isinstance(state, dict):
        raise VGG16WeightsError(f"{path} holds a {type(state).__name__}, not a state dict; {how_to_get()}")
    expected = _skeleton().state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(map(str, set(state) - set(expected)))
    if missing or extra:
        raise VGG16WeightsError(f"{path} is not a torchvision VGG16 state dict (missing {missing[:3]}, unexpected "
                                f"{extra[:3]}); {how_to_get()}")
    for key, ref in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or value.shape != ref.shape or not value.is_floating_point():
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise VGG16WeightsError(f"{path}: {key} should be a float tensor of shape {tuple(ref.shape)}, got "
                                    f"{got}; {how_to_get()}")
        if not bool(torch.isfinite(value).all()):
            raise VGG16WeightsError(f"{path}: {key} holds NaN or Inf; the file is damaged. {how_to_get()}")
    return {key: state[key].float() for key in expected}


class VGG16Features(FeatureExtractorVGG16):
    """torch-fidelity's VGG16 extractor (its resizing, normalisation and fc2 features) on weights we loaded: its
    own constructor, which unpickles a file and randomly initialises 138M weights first, is not run."""

    def __init__(self, state: dict[str, torch.Tensor], features: tuple[str, ...] = (FEATURE_LAYER,)) -> None:
        FeatureExtractorBase.__init__(self, EXTRACTOR_NAME, list(features))
        self.feature_extractor_internal_dtype = torch.float32
        model = _skeleton()
        model.load_state_dict(state, strict=True, assign=True)
        for index in sorted(_CLASSIFIER_TAIL, reverse=True):
            del model.classifier[index]
        self.model = model
        self.requires_grad_(False).eval()


def feature_extractor(path: str | os.PathLike, sha256: str) -> VGG16Features:
    """The fc2 feature extractor with the checked weights at `path` (whose sha256 the caller has computed); weights
    other than torchvision's ImageNet file are used with a warning (their values compare with no one else's)."""
    state = load_checked_state_dict(path)
    if sha256 != WEIGHTS_SHA256:
        print(f"Warning: {path} is not torchvision's ImageNet VGG16 ({WEIGHTS_NAME}, sha256 {WEIGHTS_SHA256[:16]}...); "
              f"pr50k3_full values from it compare only with values from the same file.", file=sys.stderr)
    return VGG16Features(state)

