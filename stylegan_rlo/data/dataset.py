"""Image datasets in the official StyleGAN2-ADA layout: a ZIP archive or a folder of images plus an optional
`dataset.json` ({"labels": [[name, label], ...]}), served as uint8 CHW arrays with optional x-flips and labels.

Behaviour matches the official `training.dataset.ImageFolderDataset` (same sorted image order, same max_size
subset for a given seed, same x-flip indexing, same one-hot labels), with stricter checks: every image header is
read at construction so bad data fails early with a message naming the file, and decoding happens on access.
"""

from __future__ import annotations

import json
import math
import os
import threading
import zipfile
from typing import IO, Any

import numpy as np
import PIL.Image
import torch

from dnnlib.util import EasyDict
from stylegan_rlo.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
LABELS_FILE = "dataset.json"
MAX_LABELS_FILE_BYTES = 256 * 2**20  # dataset.json is read whole; a million labelled images need about 60 MB
MAX_CLASSES = 2**16                  # class indices become one-hot vectors (and G's embedding) of this size at most

# PIL modes we accept -> (channels, mode to convert to before handing out pixels).
_MODE_CHANNELS = {
    "1": (1, "L"), "L": (1, "L"),
    "RGB": (3, "RGB"), "P": (3, "RGB"), "CMYK": (3, "RGB"), "YCbCr": (3, "RGB"),
}
_FIX_HINT = "convert the images with scripts/dataset_tool.py"


class DatasetError(UserError):
    """The dataset on disk cannot be used as it is; the message names the path or file and what is wrong."""


def is_image_name(name: str) -> bool:
    """True for file names with an image extension that are not hidden or macOS archive junk."""
    parts = name.split("/")
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return False
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def image_channels(mode: str, where: str) -> tuple[int, str]:
    """Channel count and conversion target for a PIL mode; DatasetError for modes we cannot train on."""
    if mode in _MODE_CHANNELS:
        return _MODE_CHANNELS[mode]
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        raise DatasetError(f"{where}: image mode {mode} has an alpha channel, which training cannot use; "
                           f"{_FIX_HINT} (it composites transparency onto black)")
    raise DatasetError(f"{where}: image mode {mode} is not supported (only 8-bit grayscale or RGB); {_FIX_HINT}")


class ImageFolderDataset(torch.utils.data.Dataset):
    """Images of a ZIP or folder as (uint8 [C, H, W], float32 label [label_dim]) pairs.

    `max_size` keeps a seeded random subset (before x-flips); `xflip` appends a mirrored copy of every image
    (indices len/2.. are the mirrors); `use_labels` reads dataset.json (integer labels become one-hot).
    """

    def __init__(self, path: str | os.PathLike, resolution: int | None = None, use_labels: bool = False,
                 max_size: int | None = None, xflip: bool = False, random_seed: int = 0) -> None:
        self._path = os.fspath(path)
        self._zip_local: threading.local | None = None
        self._zip_pid: int | None = None
        self._all_names = self._list_files()
        self._image_names = sorted(n for n in self._all_names if is_image_name(n))
        if not self._image_names:
            raise DatasetError(f'{self._path}: no images found (looked for {", ".join(IMAGE_EXTENSIONS)}); '
                               f'{_FIX_HINT} to build a dataset')
        self._name = os.path.splitext(os.path.basename(os.path.normpath(self._path)))[0]
        self._modes: list[str] = []
        self._raw_shape = [len(self._image_names)] + self._scan_headers()
        if resolution is not None and self._raw_shape[2] != resolution:
            raise DatasetError(f"{self._path}: images are {self._raw_shape[2]}x{self._raw_shape[3]} but resolution "
                               f"{resolution} was requested; {_FIX_HINT} --resolution {resolution}")
        self._use_labels = bool(use_labels)
        self._raw_labels = self._load_raw_labels() if self._use_labels else None
        if self._raw_labels is None:
            self._raw_labels = np.zeros([len(self._image_names), 0], dtype=np.float32)
        self._label_shape = ([int(self._raw_labels.max()) + 1] if self._raw_labels.dtype == np.int64
                             else list(self._raw_labels.shape[1:]))

        # Subset and mirrors, indexed exactly like the official dataset so seeds select the same images.
        order = np.arange(len(self._image_names), dtype=np.int64)
        if max_size is not None:
            if max_size < 1:
                raise DatasetError(f"max_size must be at least 1, got {max_size}")
            if order.size > max_size:  # a seeded shuffle, then the first max_size kept in file order
                np.random.RandomState(random_seed).shuffle(order)
                order = np.sort(order[:max_size])
        flips = np.zeros(order.size, dtype=np.uint8)
        if xflip:  # every image once as stored, then once mirrored
            order = np.concatenate([order, order])
            flips = np.concatenate([flips, np.ones_like(flips)])
        self._raw_idx, self._xflip = order, flips

    # ---- file access -------------------------------------------------------------------------------------------

    def _list_files(self) -> set[str]:
        """All file names in the dataset, relative, with '/' separators."""
        if not os.path.exists(self._path):
            raise DatasetError(f"dataset not found: {self._path} (expected a folder of images or a .zip archive)")
        if os.path.isdir(self._path):
            self._type = "dir"
            names = set()
            for root, _dirs, files in os.walk(self._path):
                rel_root = os.path.relpath(root, self._path)
                for fname in files:
                    rel = fname if rel_root == "." else os.path.join(rel_root, fname)
                    names.add(rel.replace(os.sep, "/"))
            return names
        self._type = "zip"
        if not zipfile.is_zipfile(self._path):
            raise DatasetError(f"{self._path}: not a folder or a readable ZIP archive")
        try:
            return {n for n in self._zip().namelist() if not n.endswith("/")}
        except (zipfile.BadZipFile, OSError) as e:
            raise DatasetError(f"{self._path}: cannot read ZIP archive: {e}") from e

    def _zip(self) -> zipfile.ZipFile:
        """This thread's handle on the archive; reopened in every process and thread (ZipFile is not shareable)."""
        if self._zip_local is None or self._zip_pid != os.getpid():
            with _ZIP_LOCK:
                if self._zip_local is None or self._zip_pid != os.getpid():
                    self._zip_local, self._zip_pid = threading.local(), os.getpid()
        zf = getattr(self._zip_local, "zf", None)
        if zf is None:
            zf = self._zip_local.zf = zipfile.ZipFile(self._path)
        return zf

    def _open(self, name: str) -> IO[bytes]:
        if self._type == "dir":
            return open(os.path.join(self._path, *name.split("/")), "rb")
        return self._zip().open(name, "r")

    def _file_size(self, name: str) -> int:
        """Size in bytes of a file of the dataset (a ZIP member's declared size, which also bounds its reading)."""
        if self._type == "dir":
            return os.path.getsize(os.path.join(self._path, *name.split("/")))
        return self._zip().getinfo(name).file_size

    def _where(self, name: str) -> str:
        return f"image '{name}' in {self._path}"

    def close(self) -> None:
        """Close the calling thread's ZIP handle (others close when their thread or process ends)."""
        zf = getattr(self._zip_local, "zf", None) if self._zip_pid == os.getpid() else None
        if zf is not None:
            zf.close()
            self._zip_local.zf = None

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__, _zip_local=None, _zip_pid=None)

    # ---- validation --------------------------------------------------------------------------------------------

    def _scan_headers(self) -> list[int]:
        """Read every image header (no pixel decoding); check square, power-of-two, uniform size and channels."""
        first_shape: list[int] | None = None
        first_name = self._image_names[0]
        for name in self._image_names:
            try:
                with self._open(name) as f, PIL.Image.open(f) as img:
                    (w, h), mode = img.size, img.mode
            except Exception as e:  # PIL raises many exception types for broken files
                raise DatasetError(f"{self._where(name)} is not a readable image: {e}") from e
            channels, _ = image_channels(mode, self._where(name))
            self._modes.append(mode)
            if w != h:
                raise DatasetError(f"{self._where(name)} is {w}x{h}; images must be square. {_FIX_HINT} "
                                   f"--transform center-crop")
            if w < 1 or w & (w - 1):
                raise DatasetError(f"{self._where(name)} is {w}x{h}; the size must be a power of two. "
                                   f"{_FIX_HINT} --resolution R")
            shape = [channels, h, w]
            if first_shape is None:
                first_shape = shape
            elif shape[1:] != first_shape[1:]:
                raise DatasetError(f"mixed image sizes in {self._path}: '{first_name}' is {first_shape[2]}x"
                                   f"{first_shape[1]} but '{name}' is {w}x{h}; {_FIX_HINT} --resolution R")
            elif channels != first_shape[0]:
                raise DatasetError(f"mixed channel counts in {self._path}: '{first_name}' has {first_shape[0]} "
                                   f"but '{name}' has {channels} (mode {mode}); {_FIX_HINT}")
        assert first_shape is not None
        return first_shape

    def _load_raw_labels(self) -> np.ndarray | None:
        """Labels from dataset.json in image order: int64 [N] class indices or float32 [N, D] vectors."""
        if LABELS_FILE not in self._all_names:
            return None
        where = f"{LABELS_FILE} in {self._path}"
        check_labels_file_size(self._file_size(LABELS_FILE), where)
        try:
            with self._open(LABELS_FILE) as f:
                meta = json.load(f)
        except (ValueError, UnicodeDecodeError) as e:
            raise DatasetError(f"{where} is not valid JSON: {e}") from e
        if not isinstance(meta, dict) or "labels" not in meta:
            raise DatasetError(f'{where} must be an object with a "labels" key')
        entries = meta["labels"]
        if entries is None:
            return None
        if not isinstance(entries, list):
            raise DatasetError(f'{where}: "labels" must be a list of [name, label] pairs or null')
        table: dict[str, Any] = {}
        for entry in entries:
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
                raise DatasetError(f"{where}: every labels entry must be [name, label], got {entry!r:.80}")
            name = entry[0].replace("\\", "/")
            if name in table:
                raise DatasetError(f"{where}: '{name}' is labelled twice")
            table[name] = entry[1]
        images = set(self._image_names)
        unknown = sorted(set(table) - images)
        if unknown:
            raise DatasetError(f"{where} labels {len(unknown)} image(s) that are not in the dataset, e.g. "
                               f"'{unknown[0]}'")
        missing = [n for n in self._image_names if n not in table]
        if missing:
            raise DatasetError(f"{where} has no label for {len(missing)} image(s), e.g. '{missing[0]}'")
        return labels_array([table[n] for n in self._image_names], self._image_names, where)

    # ---- official Dataset interface ----------------------------------------------------------------------------

    def _load_raw_image(self, raw_idx: int) -> np.ndarray:
        """Decode one image to uint8 CHW; DatasetError naming the file if the data is corrupt or truncated."""
        name = self._image_names[raw_idx]
        try:
            with self._open(name) as f, PIL.Image.open(f) as img:
                _, target = image_channels(img.mode, self._where(name))
                pixels = np.asarray(img.convert(target) if img.mode != target else img)
        except DatasetError:
            raise
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, zlib errors... for corrupt data
            raise DatasetError(f"{self._where(name)} cannot be decoded (corrupt or truncated?): {e}") from e
        if pixels.ndim == 2:
            pixels = pixels[:, :, np.newaxis]
        image = pixels.transpose(2, 0, 1)
        if list(image.shape) != self.image_shape:
            raise DatasetError(f"{self._where(name)} decoded to shape {list(image.shape)}, "
                               f"expected {self.image_shape}")
        return image

    def __len__(self) -> int:
        return int(self._raw_idx.size)

    def __getitem__(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        image = self._load_raw_image(int(self._raw_idx[idx]))
        if self._xflip[idx]:
            image = image[:, :, ::-1]
        return image.copy(), self.get_label(idx)

    def get_label(self, idx: int) -> np.ndarray:
        """Label of item `idx` as float32 [label_dim] (one-hot for class indices, [0] without labels)."""
        label = self._raw_labels[self._raw_idx[idx]]
        if label.dtype == np.int64:
            onehot = np.zeros(self.label_shape, dtype=np.float32)
            onehot[label] = 1
            return onehot
        return label.copy()

    def get_details(self, idx: int) -> EasyDict:
        """Where item `idx` comes from: raw_idx, xflip, raw_label (and the file name)."""
        raw_idx = int(self._raw_idx[idx])
        return EasyDict(raw_idx=raw_idx, xflip=bool(self._xflip[idx]), raw_label=self._raw_labels[raw_idx].copy(),
                        name=self._image_names[raw_idx])

    @property
    def name(self) -> str:
        return self._name

    @property
    def path(self) -> str:
        return self._path

    @property
    def image_shape(self) -> list[int]:
        return list(self._raw_shape[1:])

    @property
    def num_channels(self) -> int:
        return self._raw_shape[1]

    @property
    def resolution(self) -> int:
        return self._raw_shape[2]

    @property
    def label_shape(self) -> list[int]:
        return list(self._label_shape)

    @property
    def label_dim(self) -> int:
        return self.label_shape[0]

    @property
    def has_labels(self) -> bool:
        return self.label_dim != 0

    @property
    def has_onehot_labels(self) -> bool:
        return self._raw_labels.dtype == np.int64


_ZIP_LOCK = threading.Lock()


def check_labels_file_size(size: int, where: str) -> None:
    """DatasetError for a labels file too large to read whole (MAX_LABELS_FILE_BYTES)."""
    if size > MAX_LABELS_FILE_BYTES:
        raise DatasetError(f"{where} is {size} bytes; a labels file may have at most {MAX_LABELS_FILE_BYTES} "
                           f"(about 4 million labelled images); rebuild the dataset with scripts/dataset_tool.py")


def labels_array(values: list[Any], names: list[str], where: str) -> np.ndarray:
    """Validate labels as training reads them: class indices (integers 0..MAX_CLASSES-1) -> int64 [N]; number
    lists of one length (finite) -> float32 [N, D]. DatasetError naming the first bad label otherwise."""
    def is_number(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    def kind(v: Any) -> str:
        if is_number(v):
            return "index" if 0 <= v < MAX_CLASSES and v == int(v) else "bad"
        if isinstance(v, list) and all(is_number(x) for x in v):
            return f"vector{len(v)}"
        return "bad"

    kinds = [kind(v) for v in values]
    for k, v, n in zip(kinds, values, names):
        if k == "bad" or k != kinds[0]:
            raise DatasetError(f"{where}: label of '{n}' is {v!r:.80}, but labels must be all class indices "
                               f"(integers >= 0 and below {MAX_CLASSES}) or all lists of finite numbers of one length "
                               f"(first label: {values[0]!r:.80})")
    if kinds[0] == "index":
        return np.array([int(v) for v in values], dtype=np.int64)
    with np.errstate(over="ignore"):
        vectors = np.array(values, dtype=np.float32).reshape(len(values), -1)
    if not np.isfinite(vectors).all():
        raise DatasetError(f"{where}: some label values exceed the float32 range (about 3.4e38)")
    return vectors
