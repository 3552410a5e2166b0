"""Image datasets in the official StyleGAN2-ADA layout: a ZIP archive or a folder of images plus an optional
`dataset.json` ({"labels": [[name, label], ...]}), served as uint8 CHW arrays with optional x-flips and labels.

Behaviour matches the official `training.dataset.ImageFolderDataset` (same sorted image order, same max_size
subset for a given seed, same x-flip indexing, same one-hot labels), with stricter checks: every image header is
read at construction so bad data fails early with a message naming the file, and decoding happens on access.
"""

from __future__ import annotations

import math
import os
import threading
import zipfile
from typing import IO, Any

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch

from dnnlib.util import EasyDict
from stylegan_rlo.checked_json import AnyValue, JsonFileError, List, Nullable, Obj, Str, Tuple, check, parse_json
from stylegan_rlo.errors import UserError
from stylegan_rlo.fileio import BoundedReadError, open_regular, read_bounded, read_zip_member

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
LABELS_FILE = "dataset.json"
MAX_LABELS_FILE_BYTES = 256 * 2**20  # dataset.json is read whole; a million labelled images need about 60 MB
MAX_CLASSES = 2**16                  # class indices become one-hot vectors (and G's embedding) of this size at most
# Vector labels are capped like one-hot ones: c_dim is the input width of G's and D's label embedding (c_dim x 512
# weights each: 128 MiB at 2^16), and a 10^6-wide label would make every batch and the label table gigabytes.
MAX_LABEL_DIM = MAX_CLASSES
# All label values are held as float32 in every data-loading process: at most 2^25 of them (128 MiB), e.g. a
# million images with 32-dimensional labels.
MAX_LABEL_VALUES = 2**25
# dataset.json: an object whose "labels" is null or a list of [name, label] (labels are checked by labels_array).
LABELS_FILE_SPEC = Obj({"labels": Nullable(List(Tuple(Str(), AnyValue())))})

# PIL modes training accepts -> (channels, mode to convert to before handing out pixels).
_MODE_CHANNELS = {
    "1": (1, "L"), "L": (1, "L"),
    "RGB": (3, "RGB"), "P": (3, "RGB"), "CMYK": (3, "RGB"), "YCbCr": (3, "RGB"),
}
GRAY_MODES = ("1", "L", "LA", "La")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
HIGH_DEPTH_MODES = ("I", "F", "I;16", "I;16L", "I;16B", "I;16N")
_FIX_HINT = "convert the images with scripts/dataset_tool.py"
_HIGH_DEPTH_HINT = ("16-bit and float images are read by neither training nor scripts/dataset_tool.py: convert it to "
                    "8 bits per channel first (e.g. ImageMagick: magick IN.png -depth 8 OUT.png)")


class DatasetError(UserError):
    """The dataset on disk cannot be used as it is; the message names the path or file and what is wrong."""


def is_image_name(name: str) -> bool:
    """True for file names with an image extension that are not hidden or macOS archive junk."""
    parts = name.split("/")
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return False
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def has_transparency(img: PIL.Image.Image) -> bool:
    """An alpha channel, or a transparent palette index / colour key (PNG tRNS, GIF), known from the header."""
    return img.mode in ALPHA_MODES or "transparency" in img.info


def image_channels(img: PIL.Image.Image, where: str) -> tuple[int, str]:
    """Channel count and conversion target of an opened image (header only); DatasetError for images training
    cannot use as they are: transparency (dataset_tool composites it), more than 8 bits, unknown modes."""
    mode = img.mode
    if mode in HIGH_DEPTH_MODES:
        raise DatasetError(f"{where}: image mode {mode}: {_HIGH_DEPTH_HINT}")
    if has_transparency(img):
        raise DatasetError(f"{where}: image mode {mode} has an alpha channel or a transparent colour, which training "
                           f"cannot use; {_FIX_HINT} (it composites transparency onto black)")
    if mode in _MODE_CHANNELS:
        return _MODE_CHANNELS[mode]
    raise DatasetError(f"{where}: image mode {mode} is not supported (only 8-bit grayscale or RGB); {_FIX_HINT}")


def decode_image(img: PIL.Image.Image, gray: bool) -> PIL.Image.Image:
    """The one decoder of training and dataset_tool: an opened image -> its pixels as 'L' (gray) or 'RGB', turned
    upright by its EXIF orientation (as image viewers show it) and with any transparency composited onto black.
    DatasetError for 16-bit or float images."""
    if img.mode in HIGH_DEPTH_MODES:
        raise DatasetError(f"image mode {img.mode}: {_HIGH_DEPTH_HINT}")
    img = PIL.ImageOps.exif_transpose(img) or img
    target = "L" if gray else "RGB"
    if has_transparency(img):
        rgba = img.convert("RGBA")
        img = PIL.Image.alpha_composite(PIL.Image.new("RGBA", img.size, (0, 0, 0, 255)), rgba)
    return img if img.mode == target else img.convert(target)


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
        if not os.path.isfile(self._path):  # a FIFO or device would block or never end
            raise DatasetError(f"{self._path}: not a folder or a regular file (a ZIP archive is expected)")
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
        """A file of the dataset: only regular files of a folder (a FIFO or device would block or never end), and
        ZIP members that are neither encrypted nor stored with a method zipfile lacks."""
        if self._type == "dir":
            return open_regular(os.path.join(self._path, *name.split("/")), "dataset file")
        info = self._zip().getinfo(name)
        if info.flag_bits & 0x1:
            raise DatasetError(f"member '{name}' of {self._path} is encrypted; rebuild the archive without a "
                               f"password ({_FIX_HINT})")
        return self._zip().open(info, "r")

    def _read_bytes(self, name: str, max_bytes: int) -> bytes:
        """All of one file of the dataset, at most `max_bytes` (read, not trusted from st_size or the archive)."""
        try:
            if self._type == "zip":
                return read_zip_member(self._zip(), name, max_bytes, self._path)
            with self._open(name) as f:
                return read_bounded(f, max_bytes, f"{name} in {self._path}")
        except (BoundedReadError, OSError) as e:
            raise DatasetError(str(e) if isinstance(e, BoundedReadError) else f"{name} in {self._path}: {e}") from e

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
                    channels, _ = image_channels(img, self._where(name))
            except DatasetError:
                raise
            except Exception as e:  # PIL raises many exception types for broken files
                raise DatasetError(f"{self._where(name)} is not a readable image: {e}") from e
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
        table = read_labels_file(self._read_bytes(LABELS_FILE, MAX_LABELS_FILE_BYTES), where)
        if table is None:
            return None
        values = match_labels(table, self._image_names, self._image_names, where)
        return labels_array(values, self._image_names, where)

    # ---- official Dataset interface ----------------------------------------------------------------------------

    def _load_raw_image(self, raw_idx: int) -> np.ndarray:
        """Decode one image to uint8 CHW; DatasetError naming the file if the data is corrupt or truncated."""
        name = self._image_names[raw_idx]
        try:
            with self._open(name) as f, PIL.Image.open(f) as img:
                channels, _ = image_channels(img, self._where(name))
                pixels = np.asarray(decode_image(img, gray=channels == 1))
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


def read_labels_file(data: bytes, where: str) -> dict[str, Any] | None:
    """The label rules of training and dataset_tool, for the bytes of a dataset.json: {image name: label}, or None
    for "labels": null. DatasetError for JSON that is invalid or too deep, a file that is not an object with a
    "labels" key holding null or a list of [name, label], or a name labelled twice. The labels themselves are
    checked by labels_array."""
    try:
        meta = parse_json(data, where, allow_nonfinite=True)  # labels_array names the image of a NaN label
        check(meta, LABELS_FILE_SPEC, where)
    except JsonFileError as e:
        raise DatasetError(f'{e}; expected {{"labels": [[name, label], ...]}} or {{"labels": null}}') from e
    if meta["labels"] is None:
        return None
    table: dict[str, Any] = {}
    for i, (name, label) in enumerate(meta["labels"]):
        name = name.replace("\\", "/")
        if name in table:
            raise DatasetError(f"{where}: '{name}' is labelled twice (field labels[{i}])")
        table[name] = label
    return table


def match_labels(table: dict[str, Any], all_images: list[str], images: list[str], where: str) -> list[Any]:
    """The labels of `images` in order; DatasetError when the table labels a name that is none of `all_images` (the
    dataset's image files) or lacks one of `images` (those to be used)."""
    known = set(all_images)
    unknown = sorted(n for n in table if n not in known)
    if unknown:
        raise DatasetError(f"{where} labels {len(unknown)} image(s) that are not in the dataset, e.g. "
                           f"'{unknown[0]}'")
    missing = [n for n in images if n not in table]
    if missing:
        raise DatasetError(f"{where} has no label for {len(missing)} image(s), e.g. '{missing[0]}'")
    return [table[n] for n in images]


def labels_array(values: list[Any], names: list[str], where: str) -> np.ndarray:
    """Validate labels as training reads them: class indices (integers 0..MAX_CLASSES-1) -> int64 [N]; number
    lists of one length (finite) -> float32 [N, D]. DatasetError naming the first bad label otherwise."""
    def is_number(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    def kind(v: Any) -> str:
        if is_number(v):
            return "index" if 0 <= v < MAX_CLASSES and v == int(v) else "bad"
        if isinstance(v, list) and len(v) > MAX_LABEL_DIM:
            raise DatasetError(f"{where}: label of '{names[values.index(v)]}' is a list of {len(v)} numbers; labels "
                               f"may have at most {MAX_LABEL_DIM} dimensions (the width of the networks' label "
                               f"embedding)")
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
    if len(values) * len(values[0]) > MAX_LABEL_VALUES:
        raise DatasetError(f"{where}: {len(values)} labels of {len(values[0])} numbers are more than the "
                           f"{MAX_LABEL_VALUES} label values held in memory; use fewer images or dimensions")
    with np.errstate(over="ignore"):
        vectors = np.array(values, dtype=np.float32).reshape(len(values), -1)
    if not np.isfinite(vectors).all():
        raise DatasetError(f"{where}: some label values exceed the float32 range (about 3.4e38)")
    return vectors
