"""Building training datasets: read images from a folder, ZIP, NumPy array file or a Stanford Dogs tree, crop and
resize them, and write the official StyleGAN2-ADA layout (PNG files `00000/img00000000.png` plus `dataset.json`).

Output is all-or-nothing: a ZIP goes through a temp file and a folder through a temp folder, renamed into place
only after the last image, so an error or Ctrl-C never leaves a half-written dataset behind.

Channels: the output is grayscale (1 channel) when every source image is grayscale, otherwise RGB (grayscale
images are replicated into 3 channels). Pixels are decoded by training's decoder (dataset.decode_image): EXIF
orientation applied, transparent pixels (alpha or a transparent palette colour) composited onto black, 16-bit and
float images refused (convert them to 8-bit first). Labels follow training's rules (dataset.read_labels_file and
dataset.labels_array), checked before anything is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import shutil
import sys
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from typing import Any, Callable

import numpy as np
import PIL.Image
from tqdm import tqdm

from stylegan_rlo.data.dataset import (
    GRAY_MODES, LABELS_FILE, MAX_LABEL_DIM, MAX_LABELS_FILE_BYTES, DatasetError, decode_image, is_image_name,
    labels_array, match_labels, read_labels_file,
)
from stylegan_rlo.errors import UserError
from stylegan_rlo.fileio import BoundedReadError, atomic_write, open_regular, read_regular_bytes, read_zip_member

TRANSFORMS = ("center-crop", "center-crop-wide", "box-crop", "pad")
RESIZE_FILTERS = {"box": PIL.Image.Resampling.BOX, "lanczos": PIL.Image.Resampling.LANCZOS}
ON_ERROR = ("skip", "stop")


class DatasetToolError(UserError):
    """The conversion cannot go on; the message says which input and what to change."""


class ItemError(Exception):
    """One source image (or box) is unusable; handled per --on-error."""


@dataclasses.dataclass(frozen=True)
class SourceItem:
    """One output image to be: `name` (for messages), `key` (what the source reads), label and optional box."""
    name: str
    key: Any
    label: Any = None
    box: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 in pixels, half-open, 0-based


@dataclasses.dataclass
class ConvertSummary:
    """What convert_dataset wrote."""
    dest: str
    num_images: int
    resolution: int
    channels: int
    labelled: bool
    skipped: list[str]


class ErrorPolicy:
    """--on-error: 'stop' turns an unusable input into DatasetToolError; 'skip' reports it and goes on."""

    def __init__(self, mode: str, log: Callable[[str], None]) -> None:
        if mode not in ON_ERROR:
            raise DatasetToolError(f"on_error must be one of {ON_ERROR}, got {mode!r}")
        self.mode, self.log, self.skipped = mode, log, []

    def handle(self, name: str, reason: str) -> None:
        if self.mode == "stop":
            raise DatasetToolError(f"{name}: {reason} (pass --on-error skip to leave such inputs out)")
        self.skipped.append(name)
        self.log(f"skipping {name}: {reason}")


# ---- sources -----------------------------------------------------------------------------------------------------

class ImageSource:
    """A list of SourceItems plus a way to decode each; subclasses say where the pixels come from."""

    items: list[SourceItem]
    gray: bool = False                       # every image is grayscale -> 1-channel output
    class_names: list[str] | None = None     # names of integer labels, when labels come from folders
    dropped_labels: bool = False             # the source has labels but they were not asked for

    def read(self, item: SourceItem) -> PIL.Image.Image:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _FileSource(ImageSource):
    """Images stored as encoded files (folder or ZIP), named by '/'-separated relative paths."""

    def _open_file(self, name: str) -> Any:
        raise NotImplementedError

    def _has_file(self, name: str) -> bool:
        raise NotImplementedError

    def _read_bytes(self, name: str, max_bytes: int) -> bytes:
        """All of one file of the source, at most `max_bytes`; BoundedReadError otherwise."""
        raise NotImplementedError

    def read(self, item: SourceItem) -> PIL.Image.Image:
        with self._open_file(item.key) as f, PIL.Image.open(f) as img:
            img.load()
            return img.copy()

    def _probe(self, names: list[str], policy: ErrorPolicy) -> tuple[list[str], dict[str, tuple[str, int, int]]]:
        """Read the header of each file: keep the readable ones, their (mode, width, height); set `gray`."""
        headers = {}
        for name in names:
            try:
                with self._open_file(name) as f, PIL.Image.open(f) as img:
                    headers[name] = (img.mode, img.width, img.height)
            except Exception as e:  # PIL raises many exception types for broken files
                policy.handle(name, f"not a readable image ({e})")
        self.gray = bool(headers) and all(mode in GRAY_MODES for mode, _, _ in headers.values())
        return [n for n in names if n in headers], headers

    def _setup(self, names: list[str], labels: bool, policy: ErrorPolicy, where: str) -> None:
        """Probe headers and attach labels (the source's dataset.json, else top-level sub-folder names)."""
        all_names = sorted(names)
        names, _ = self._probe(all_names, policy)
        if not labels:  # the labels file is not even read
            self.dropped_labels = self._has_file(LABELS_FILE)
            self.items = [SourceItem(n, n) for n in names]
            return
        stored = self._stored_labels(where)
        if stored is not None:
            try:
                values = match_labels(stored, all_names, names, f"{LABELS_FILE} in {where}")
            except DatasetError as e:
                raise DatasetToolError(str(e)) from e
            self.items = [SourceItem(n, n, v) for n, v in zip(names, values)]
        else:
            self.items, self.class_names = _labels_from_folders(names, where)

    def _stored_labels(self, where: str) -> dict[str, Any] | None:
        if not self._has_file(LABELS_FILE):
            return None
        try:
            return read_labels_file(self._read_bytes(LABELS_FILE, MAX_LABELS_FILE_BYTES), f"{LABELS_FILE} in {where}")
        except (DatasetError, BoundedReadError) as e:
            raise DatasetToolError(str(e)) from e


def _labels_from_folders(names: list[str], where: str) -> tuple[list[SourceItem], list[str]]:
    """Class label = index of the image's top-level sub-folder among all of them, sorted by name."""
    loose = [n for n in names if "/" not in n]
    if loose:
        raise DatasetToolError(f"--labels takes classes from sub-folder names, but '{loose[0]}' lies directly in "
                               f"{where}; put every image in a class folder")
    class_names = sorted({n.split("/", 1)[0] for n in names})
    index = {c: i for i, c in enumerate(class_names)}
    return [SourceItem(n, n, index[n.split("/", 1)[0]]) for n in names], class_names


class FolderSource(_FileSource):
    """Every image file under a folder, recursively, in sorted order of relative path."""

    def __init__(self, root: str, labels: bool, policy: ErrorPolicy) -> None:
        self.root = root
        names = []
        for folder, _dirs, files in os.walk(root):
            rel = os.path.relpath(folder, root)
            for fname in files:
                name = fname if rel == "." else os.path.join(rel, fname).replace(os.sep, "/")
                if is_image_name(name):  # a FIFO or device is refused when read, as training refuses it
                    names.append(name)
        self._setup(names, labels, policy, root)

    def _open_file(self, name: str) -> Any:
        return open_regular(os.path.join(self.root, *name.split("/")), "source file")

    def _has_file(self, name: str) -> bool:
        return os.path.lexists(os.path.join(self.root, *name.split("/")))

    def _read_bytes(self, name: str, max_bytes: int) -> bytes:
        return read_regular_bytes(os.path.join(self.root, *name.split("/")), max_bytes, "source file")


_UNSAFE_MEMBER = re.compile(r"^([/\\]|[A-Za-z]:)|(^|[/\\])\.\.([/\\]|$)")


class ZipSource(_FileSource):
    """Every image member of a ZIP archive. Archives with absolute or '..' member paths are refused."""

    def __init__(self, path: str, labels: bool, policy: ErrorPolicy) -> None:
        self.path = path
        try:
            self.zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise DatasetToolError(f"{path}: not a readable ZIP archive ({e})") from e
        members = self.zf.namelist()
        unsafe = [m for m in members if _UNSAFE_MEMBER.search(m)]
        if unsafe:
            self.zf.close()
            raise DatasetToolError(f"{path}: refusing archive member '{unsafe[0]}' (absolute path or '..' "
                                   f"component: a zip-slip archive); rebuild the archive with relative paths")
        names = [m for m in members if not m.endswith("/") and is_image_name(m)]
        self._setup(names, labels, policy, path)

    def _open_file(self, name: str) -> Any:
        if self.zf.getinfo(name).flag_bits & 0x1:
            raise BoundedReadError(f"member '{name}' of {self.path} is encrypted")
        return self.zf.open(name)

    def _has_file(self, name: str) -> bool:
        return name in self.zf.NameToInfo

    def _read_bytes(self, name: str, max_bytes: int) -> bytes:
        return read_zip_member(self.zf, name, max_bytes, self.path)

    def close(self) -> None:
        self.zf.close()


class ArraySource(ImageSource):
    """Images from a NumPy file: .npy holding uint8 [N, H, W] or [N, H, W, C], or .npz with such an array (the
    only one, or the one named 'images' or 'x') and optionally labels named 'labels' or 'y'."""

    def __init__(self, path: str, labels: bool) -> None:
        label_array = None
        try:
            if path.lower().endswith(".npz"):
                with np.load(path, allow_pickle=False) as z:
                    key = _pick_key(z.files, ("images", "x"), path, single_ok=True)
                    label_key = next((k for k in ("labels", "y") if k in z.files and k != key), None)
                    self.array = z[key]
                    label_array = z[label_key] if label_key else None
            else:
                self.array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise DatasetToolError(f"{path}: cannot read NumPy array file ({e})") from e
        a = self.array
        if a.dtype != np.uint8:
            raise DatasetToolError(f"{path}: images have dtype {a.dtype}, expected uint8 (0..255); convert with "
                                   f"np.clip(np.rint(x * 255), 0, 255).astype(np.uint8) or similar")
        if not (a.ndim == 3 or (a.ndim == 4 and a.shape[3] in (1, 3))) or a.shape[0] == 0:
            raise DatasetToolError(f"{path}: images have shape {a.shape}, expected [N, H, W] or [N, H, W, C] with "
                                   f"C = 1 or 3 and N > 0")
        self.gray = a.ndim == 3 or a.shape[3] == 1
        n = a.shape[0]
        stem = os.path.basename(path)
        self.dropped_labels = label_array is not None and not labels
        if labels and label_array is None:
            raise DatasetToolError(f"{path}: --labels needs a label array; store the images in a .npz together "
                                   f"with 'labels' (int [N] class indices or float [N, D] vectors)")
        values: list[Any] = [None] * n
        if labels:
            values = _label_values(label_array, n, path)
        self.items = [SourceItem(f"{stem}[{i}]", i, values[i]) for i in range(n)]

    def read(self, item: SourceItem) -> PIL.Image.Image:
        pixels = np.asarray(self.array[item.key])
        if pixels.ndim == 3 and pixels.shape[2] == 1:
            pixels = pixels[:, :, 0]
        return PIL.Image.fromarray(np.ascontiguousarray(pixels), "L" if pixels.ndim == 2 else "RGB")


def _pick_key(keys: list[str], preferred: tuple[str, ...], path: str, single_ok: bool) -> str:
    if single_ok and len(keys) == 1:
        return keys[0]
    for k in preferred:
        if k in keys:
            return k
    raise DatasetToolError(f"{path}: holds arrays {keys}; name the image array one of {preferred}")


def _label_values(labels: np.ndarray, n: int, path: str) -> list[Any]:
    """Label array -> per-image JSON values: ints for an integer [N] array, float lists for a float [N, D] one."""
    if labels.shape[:1] != (n,):
        raise DatasetToolError(f"{path}: {labels.shape[0] if labels.ndim else 0} labels for {n} images")
    if labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer):
        if labels.min() < 0:
            raise DatasetToolError(f"{path}: class labels must be >= 0, found {labels.min()}")
        return [int(v) for v in labels]
    if labels.ndim == 2 and np.issubdtype(labels.dtype, np.number):
        if labels.shape[1] > MAX_LABEL_DIM:  # refused before n x D Python floats are made
            raise DatasetToolError(f"{path}: labels have {labels.shape[1]} dimensions; at most {MAX_LABEL_DIM} (the "
                                   f"width of the networks' label embedding)")
        return [[float(x) for x in row] for row in labels]
    raise DatasetToolError(f"{path}: labels have shape {labels.shape} and dtype {labels.dtype}; expected "
                           f"integer [N] class indices or float [N, D] vectors")


class StanfordDogsSource(FolderSource):
    """A Stanford Dogs root: Images/<breed>/<stem>.jpg and Annotation/<breed>/<stem> (PASCAL VOC XML, no
    extension). Each <object><bndbox> becomes one item with its box; labels are breed indices (sorted folders)."""

    def __init__(self, root: str, labels: bool, policy: ErrorPolicy) -> None:
        self.root = os.path.join(root, "Images")
        breeds = sorted(d for d in os.listdir(self.root) if os.path.isdir(os.path.join(self.root, d)))
        names = [f"{b}/{f}" for b in breeds for f in sorted(os.listdir(os.path.join(self.root, b)))
                 if is_image_name(f)]
        names, headers = self._probe(names, policy)
        self.class_names = breeds if labels else None
        self.items = []
        for name in names:
            breed, fname = name.split("/")
            _mode, width, height = headers[name]
            ann_path = os.path.join(root, "Annotation", breed, os.path.splitext(fname)[0])
            try:
                boxes = read_voc_boxes(ann_path, width, height)
            except ItemError as e:
                policy.handle(f"Images/{name}", str(e))
                continue
            label = breeds.index(breed) if labels else None
            for k, box in enumerate(boxes):
                self.items.append(SourceItem(f"Images/{name} box {k + 1}/{len(boxes)}", name, label, box))


def is_stanford_dogs(path: str) -> bool:
    """A folder with Images/ and Annotation/ sub-folders."""
    return all(os.path.isdir(os.path.join(path, d)) for d in ("Images", "Annotation"))


def read_voc_boxes(ann_path: str, width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Boxes of a PASCAL VOC annotation as (x0, y0, x1, y1): xmin..xmax are taken as pixel edges, clipped to the
    image; ItemError when the file is missing or malformed or a box is empty."""
    if not os.path.isfile(ann_path):
        raise ItemError(f"no annotation file {ann_path}")
    try:
        root = ET.parse(ann_path).getroot()
        raw = [[int(round(float(obj.findtext(f"bndbox/{k}", "")))) for k in ("xmin", "ymin", "xmax", "ymax")]
               for obj in root.iter("object")]
    except (ET.ParseError, ValueError) as e:
        raise ItemError(f"malformed annotation {ann_path} ({e})") from e
    if not raw:
        raise ItemError(f"annotation {ann_path} has no <object><bndbox>")
    boxes = []
    for k, (x0, y0, x1, y1) in enumerate(raw):
        x0, x1 = max(0, x0), min(width, x1)
        y0, y1 = max(0, y0), min(height, y1)
        if x1 <= x0 or y1 <= y0:
            raise ItemError(f"box {k + 1} in {ann_path} is empty inside the {width}x{height} image")
        boxes.append((x0, y0, x1, y1))
    return boxes


def open_source(path: str, *, labels: bool, box_crop: bool, policy: ErrorPolicy) -> ImageSource:
    """Pick the reader for `path` (Stanford Dogs root, folder, .zip, .npy/.npz) and list its items."""
    if not os.path.exists(path):
        raise DatasetToolError(f"source not found: {path}")
    dogs = os.path.isdir(path) and is_stanford_dogs(path)
    if box_crop and not dogs:
        raise DatasetToolError(f"--transform box-crop needs a Stanford Dogs root (with Images/ and Annotation/ "
                               f"folders); {path} is not one")
    if dogs:
        if box_crop:
            return StanfordDogsSource(path, labels, policy)
        return FolderSource(os.path.join(path, "Images"), labels, policy)
    if os.path.isdir(path):
        return FolderSource(path, labels, policy)
    if not os.path.isfile(path):  # a FIFO or device would block or never end
        raise DatasetToolError(f"{path}: not a folder or a regular file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".zip":
        return ZipSource(path, labels, policy)
    if ext in (".npy", ".npz"):
        return ArraySource(path, labels)
    raise DatasetToolError(f"{path}: unknown source type; expected a folder, a .zip, a .npy/.npz file or a "
                           f"Stanford Dogs root")


# ---- pixels ------------------------------------------------------------------------------------------------------

def to_output_mode(img: PIL.Image.Image, gray: bool) -> PIL.Image.Image:
    """Convert to 'L' (gray) or 'RGB' with training's decoder (dataset.decode_image); ItemError for >8-bit images."""
    try:
        return decode_image(img, gray)
    except DatasetError as e:
        raise ItemError(str(e)) from e


def square_around_box(box: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int]:
    """(left, top, side) of the square centred on `box` with side = the box's longer side, shifted to lie inside
    the width x height image; along an axis where the square is longer than the image it covers the whole image,
    as close to centred on the box as possible (the rest is padding)."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0)

    def place(start: int, extent: int) -> int:
        lo, hi = min(0, extent - side), max(0, extent - side)
        return min(max(start, lo), hi)

    return place(x0 - (side - (x1 - x0)) // 2, width), place(y0 - (side - (y1 - y0)) // 2, height), side


def _paste_centered(img: PIL.Image.Image, side: int) -> PIL.Image.Image:
    canvas = PIL.Image.new(img.mode, (side, side))
    canvas.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    return canvas


def apply_transform(img: PIL.Image.Image, transform: str | None, resolution: int | None, resize_filter: str,
                    box: tuple[int, int, int, int] | None = None) -> PIL.Image.Image:
    """Crop/pad one 'L' or 'RGB' image to a square and resize it to `resolution` (None = keep the size).

    None: the image must already be square. center-crop: the largest centred square. center-crop-wide: wide
    images keep their full width and get black bars above and below; tall ones are centre-cropped. pad: black
    borders around the image up to a square (and up to `resolution` when that is larger; never scaled up).
    box-crop: the square around `box` (see square_around_box), padded with black where it leaves the image.
    """
    w, h = img.size
    if transform is None:
        if w != h:
            raise DatasetToolError(f"image is {w}x{h}, not square; choose --transform center-crop, "
                                   f"center-crop-wide or pad")
    elif transform == "center-crop":
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    elif transform == "center-crop-wide":
        if w >= h:
            side = resolution or w
            scaled_h = max(1, round(side * h / w))
            img = _paste_centered(img.resize((side, scaled_h), RESIZE_FILTERS[resize_filter]), side)
        else:
            img = img.crop((0, (h - w) // 2, w, (h - w) // 2 + w))
    elif transform == "pad":
        img = _paste_centered(img, max(w, h, resolution or 0))
    elif transform == "box-crop":
        if box is None:
            raise DatasetToolError("box-crop needs a box for every image")
        left, top, side = square_around_box(box, w, h)
        img = img.crop((left, top, left + side, top + side))  # PIL fills the part outside the image with black
    else:
        raise DatasetToolError(f"unknown transform {transform!r}; choose from {TRANSFORMS}")
    if resolution is not None and img.size != (resolution, resolution):
        img = img.resize((resolution, resolution), RESIZE_FILTERS[resize_filter])
    return img


# ---- output ------------------------------------------------------------------------------------------------------

class DatasetWriter:
    """Writes PNGs and dataset.json in the official layout to a .zip (uncompressed archive) or a folder, going
    through a temp file/folder that replaces `dest` only when the context exits without an error. An existing
    `dest` (a .zip file, or a folder holding a dataset.json) is replaced only with `overwrite`; an empty folder
    is always used."""

    def __init__(self, dest: str, overwrite: bool = False) -> None:
        self.dest = dest
        self.overwrite = overwrite
        self.is_zip = dest.lower().endswith(".zip")
        self.labels: list[list[Any]] = []
        self.class_names: list[str] | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> 'DatasetWriter':
        self._check_dest()
        with _writing(self.dest):
            if self.is_zip:
                handle = self._stack.enter_context(atomic_write(self.dest, "wb"))
                self._zip = self._stack.enter_context(zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED))
            else:
                parent = os.path.dirname(os.path.abspath(self.dest))
                os.makedirs(parent, exist_ok=True)
                self._tmp = tempfile.mkdtemp(prefix="." + os.path.basename(os.path.abspath(self.dest)) + ".",
                                             suffix=".tmp", dir=parent)
        return self

    def _check_dest(self) -> None:
        """Refuse a destination of the wrong kind, or an existing one without `overwrite`."""
        dest = self.dest
        if not os.path.lexists(dest) or (os.path.isdir(dest) and not self.is_zip and not os.listdir(dest)):
            return
        if self.is_zip and os.path.isdir(dest):
            raise DatasetToolError(f"--dest {dest} is a folder; a .zip destination must be a file path")
        if not self.is_zip and not os.path.isdir(dest):
            raise DatasetToolError(f"--dest {dest} is a file; name a .zip archive or a new (or empty) folder")
        if not self.overwrite:
            what = "exists" if self.is_zip else "exists and is not an empty folder"
            raise DatasetToolError(f"--dest {dest} {what}; pass --overwrite to replace it, or choose a new path")
        if not self.is_zip and not os.path.isfile(os.path.join(dest, LABELS_FILE)):
            raise DatasetToolError(f"--dest {dest} is a folder without {LABELS_FILE} (not a dataset); --overwrite "
                                   f"only replaces datasets: choose a new or empty folder")

    def _put(self, name: str, data: bytes) -> None:
        with _writing(self.dest):
            if self.is_zip:
                self._zip.writestr(name, data)
                return
            path = os.path.join(self._tmp, *name.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)

    def add(self, image: np.ndarray, label: Any = None) -> str:
        """Store one uint8 [H, W] or [H, W, 3] image as the next PNG; returns its name in the dataset."""
        idx = f"{len(self.labels):08d}"
        name = f"{idx[:5]}/img{idx}.png"
        buf = io.BytesIO()
        PIL.Image.fromarray(image, "L" if image.ndim == 2 else "RGB").save(buf, format="PNG", compress_level=1)
        self._put(name, buf.getvalue())
        self.labels.append([name, label])
        return name

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            meta: dict[str, Any] = {"labels": self.labels if all(l is not None for _, l in self.labels) else None}
            if meta["labels"] is not None and self.class_names is not None:
                meta["class_names"] = self.class_names
            self._put(LABELS_FILE, json.dumps(meta).encode("utf-8"))
        if self.is_zip:
            with _writing(self.dest):
                self._stack.__exit__(exc_type, exc, tb)  # closes the archive, then renames it in place or deletes it
            return
        if exc_type is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            return
        with _writing(self.dest):
            self._replace_folder()

    def _replace_folder(self) -> None:
        """Move the finished temp folder to `dest`; an old dataset there (checked on entry) is deleted after."""
        if not os.path.isdir(self.dest):
            os.replace(self._tmp, self.dest)
            return
        if not os.listdir(self.dest):
            os.rmdir(self.dest)
            os.replace(self._tmp, self.dest)
            return
        old = tempfile.mkdtemp(prefix="." + os.path.basename(os.path.abspath(self.dest)) + ".old.", suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(self.dest)))
        os.replace(self.dest, os.path.join(old, "dataset"))
        os.replace(self._tmp, self.dest)
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _writing(dest: str) -> Any:
    """Turn an OSError while writing the output (read-only or full disk, a file in the way) into DatasetToolError."""
    try:
        yield
    except OSError as e:
        raise DatasetToolError(f"cannot write --dest {dest}: {e.strerror or e}"
                               + (f" ({e.filename})" if e.filename else "")
                               + "; choose a writable location with free space") from e


# ---- the conversion ----------------------------------------------------------------------------------------------

def _stderr(msg: str) -> None:
    tqdm.write(msg, file=sys.stderr)


def convert_dataset(source: str, dest: str, *, resolution: int | None = None, transform: str | None = None,
                    labels: bool = False, max_images: int | None = None, resize_filter: str = "lanczos",
                    on_error: str = "stop", overwrite: bool = False, progress: bool = True,
                    log: Callable[[str], None] = _stderr) -> ConvertSummary:
    """Convert `source` into a training dataset at `dest` (.zip or folder); see the module docstring.
    An existing `dest` is replaced only with `overwrite`, and never when it is `source` itself."""
    if resolution is not None and (resolution < 1 or resolution & (resolution - 1)):
        raise DatasetToolError(f"--resolution must be a power of two, got {resolution}")
    if transform == "box-crop" and resolution is None:
        raise DatasetToolError("--transform box-crop needs --resolution (the boxes differ in size)")
    if transform is not None and transform not in TRANSFORMS:
        raise DatasetToolError(f"unknown transform {transform!r}; choose from {TRANSFORMS}")
    if resize_filter not in RESIZE_FILTERS:
        raise DatasetToolError(f"resize filter must be one of {tuple(RESIZE_FILTERS)}, got {resize_filter!r}")
    if max_images is not None and max_images < 1:
        raise DatasetToolError(f"--max-images must be at least 1, got {max_images}")
    if os.path.isdir(source) and not dest.lower().endswith(".zip") and \
            os.path.commonpath([os.path.abspath(source), os.path.abspath(dest)]) == os.path.abspath(source):
        raise DatasetToolError(f"--dest {dest} lies inside --source {source}; choose a folder outside it")
    if _same_file(source, dest):
        raise DatasetToolError(f"--dest {dest} is --source {source} (the same file); write to a new path")
    policy = ErrorPolicy(on_error, log)
    with DatasetWriter(dest, overwrite=overwrite) as writer:
        src = open_source(source, labels=labels, box_crop=transform == "box-crop", policy=policy)
        try:
            if src.dropped_labels:
                log(f"note: {source} has labels ({LABELS_FILE} or a label array); they are not written without "
                    f"--labels")
            if labels:
                _check_labels(src.items, source)
            writer.class_names = src.class_names
            total = len(src.items) if max_images is None else min(len(src.items), max_images)
            shape = _write_items(src, writer, total, resolution, transform, resize_filter, policy, progress)
        finally:
            src.close()
        if shape is None:
            raise DatasetToolError(f"{source}: no usable images found")
    if policy.skipped:
        log(f"skipped {len(policy.skipped)} input(s) with errors")
    return ConvertSummary(dest=dest, num_images=len(writer.labels), resolution=shape[0],
                          channels=1 if len(shape) == 2 else 3, labelled=labels, skipped=list(policy.skipped))


def _check_labels(items: list[SourceItem], source: str) -> None:
    """The labels about to be written must be ones training accepts (dataset.labels_array), checked up front."""
    try:
        labels_array([item.label for item in items], [item.name for item in items], f"labels of {source}")
    except DatasetError as e:
        raise DatasetToolError(f"{e}; fix them in the source") from e


def _same_file(a: str, b: str) -> bool:
    """Whether two paths name one file or folder (through symbolic or hard links too)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def _write_items(src: ImageSource, writer: DatasetWriter, total: int, resolution: int | None,
                 transform: str | None, resize_filter: str, policy: ErrorPolicy,
                 progress: bool) -> tuple[int, ...] | None:
    """Decode, transform and store items until `total` are written; returns the common image shape."""
    shape: tuple[int, ...] | None = None
    first = ""
    decoded: tuple[Any, PIL.Image.Image | Exception] = (None, ValueError())  # boxes of one file decode it once
    with tqdm(total=total, disable=not progress, unit="img", desc="dataset") as bar:
        for item in src.items:
            if len(writer.labels) >= total:
                break
            if decoded[0] != item.key:
                try:
                    decoded = item.key, to_output_mode(src.read(item), src.gray)
                except Exception as e:  # unreadable, truncated or unsupported image
                    decoded = item.key, e
            if isinstance(decoded[1], Exception):
                policy.handle(item.name, f"cannot use this image ({decoded[1]})")
                continue
            try:
                img = apply_transform(decoded[1], transform, resolution, resize_filter, item.box)
            except DatasetToolError as e:
                raise DatasetToolError(f"{item.name}: {e}") from e
            pixels = np.asarray(img)
            if shape is None:
                if pixels.shape[0] != pixels.shape[1] or pixels.shape[0] & (pixels.shape[0] - 1):
                    raise DatasetToolError(f"{item.name}: output would be {pixels.shape[1]}x{pixels.shape[0]}; "
                                           f"images must be square with a power-of-two size: pass --resolution")
                shape, first = pixels.shape, item.name
            elif pixels.shape != shape:
                raise DatasetToolError(f"{item.name}: output would be {pixels.shape} but {first} gave {shape}; "
                                       f"pass --resolution to give every image the same size")
            writer.add(pixels, item.label)
            bar.update(1)
    return shape
