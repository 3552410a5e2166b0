"""FID, KID and precision/recall of a generator (or of one dataset against another), with torch-fidelity's feature
extractor and formulas.

Metric names and records follow the official StyleGAN2-ADA metrics: `fid50k_full` / `kid50k_full` compare 50k
generated images (or `num_gen`) with the full dataset, and every result is one JSON object per line in
`metric-<name>.jsonl`. `pr50k3_inception` is the k-NN precision and recall (Kynkaanniemi et al. 2019, k=3) on the
same Inception pool features; its record holds two results, `pr50k3_inception_precision` and
`pr50k3_inception_recall`. `pr50k3_full` is the same computation on VGG16 fc2 features (evaluation.vgg16), as the
official metric, from a VGG16 weights file given by path, in a second feature pass.
`mem50k_inception` is the memorization check of evaluation.memorization on the same features: the fraction of
generated images nearer to a training image than most held-out images are (about 0.05 when nothing is copied).

Dataset features and FID statistics are cached under a key made of the image content, the feature network and the
sha256 of its weights file, and the mirror flag, in $DNNLIB_CACHE_DIR/stylegan_rlo-metrics (default
~/.cache/dnnlib/...), by evaluation.metrics_cache: torch-fidelity's own cache, which unpickles whatever it finds, is
never used.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import os
import re
import errno
import time
import zipfile
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import torch
import torch_fidelity
from torch_fidelity.defaults import DEFAULTS as FIDELITY_DEFAULTS
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric
from torch_fidelity.utils import get_featuresdict_from_dataset

from dnnlib.util import make_cache_dir_path
from stylegan_rlo.data.dataset import ImageFolderDataset, is_image_name
from stylegan_rlo.errors import UserError
from stylegan_rlo.evaluation import vgg16
from stylegan_rlo.evaluation.generate import generate_images
from stylegan_rlo.evaluation.inception_weights import (EXTRACTOR_NAME, feature_extractor, resolve_weights_path,
                                                       sha256_file)
from stylegan_rlo.evaluation.memorization import METRIC_NAME as MEM_METRIC
from stylegan_rlo.evaluation.memorization import memorization, write_nearest_neighbour_picture
from stylegan_rlo.evaluation.metrics_cache import cached_tensors
from stylegan_rlo.fileio import append_line
from stylegan_rlo.images import to_uint8


class _Spec(NamedTuple):
    num_gen: int                       # generated images by default
    results: tuple[str, ...] = ()      # the keys of the record's results; () means the metric name alone


PR_METRIC = "pr50k3_inception"
PR_FULL_METRIC = "pr50k3_full"
PR_METRICS = (PR_METRIC, PR_FULL_METRIC)  # two results each (precision, recall): they rank no snapshot
METRIC_SPECS = {
    "fid50k_full": _Spec(50000),
    "kid50k_full": _Spec(50000),
    PR_METRIC: _Spec(50000, (f"{PR_METRIC}_precision", f"{PR_METRIC}_recall")),
    PR_FULL_METRIC: _Spec(50000, (f"{PR_FULL_METRIC}_precision", f"{PR_FULL_METRIC}_recall")),
    MEM_METRIC: _Spec(50000),
}
METRIC_NAMES = tuple(METRIC_SPECS)
METRIC_ALIASES = {"fid": "fid50k_full", "kid": "kid50k_full"}
PR_NEIGHBORHOOD = 3         # k of the k-NN manifolds, as the official pr50k3_full
PR_BATCH = 10000            # rows per block of pairwise distances, as the official pr50k3_full
PR_FULL_MAX_REAL = 200000   # dataset images pr50k3_full measures at most (the first ones), as the official one
KID_NUM_SUBSETS = 100       # as the official kid50k_full
KID_MAX_SUBSET_SIZE = 1000  # as the official kid50k_full; smaller when fewer images exist
CACHE_FORMAT = 1            # bump when the cached content changes meaning
FEATURE_LAYER = "2048"      # Inception pool3 features, the standard FID/KID embedding


class MetricError(UserError):
    """A metric request that cannot be carried out; the message says what to change."""


def validate_metric_names(names: Sequence[str]) -> list[str]:
    """Canonical metric names, deduplicated in order; 'fid'/'kid' are shorthands, 'none' and '' are skipped."""
    if isinstance(names, str):
        raise MetricError(f"metric names must be a list, got the string {names!r}; split it on commas first")
    out: list[str] = []
    for raw in names:
        name = str(raw).strip().lower()
        if name in ("", "none"):
            continue
        name = METRIC_ALIASES.get(name, name)
        if re.fullmatch(r"is(\d+k)?(_full)?|isc|inception_score", name):
            raise MetricError(f"{raw!r}: Inception Score is not offered (the offline Inception weights have no "
                              f"1008-way classifier); available: {', '.join(METRIC_NAMES)}")
        if name not in METRIC_SPECS and re.fullmatch(r"pr\d+k\d+(_full)?", name):
            raise MetricError(f"{raw!r}: precision/recall (k=3, 50k generated images) is offered as "
                              f"{PR_FULL_METRIC} (VGG16 features, as the official metric; needs the VGG16 weights "
                              f"file {vgg16.WEIGHTS_NAME}) and as {PR_METRIC} (the Inception features of FID)")
        if name not in METRIC_SPECS:
            raise MetricError(f"unknown metric {raw!r}; available: {', '.join(METRIC_NAMES)} "
                              f"(or the shorthands {', '.join(METRIC_ALIASES)})")
        if name not in out:
            out.append(name)
    return out


def result_names(names: Sequence[str]) -> list[str]:
    """The result keys the records of these (canonical) metrics hold, in order: one per metric, two for
    pr50k3_inception and pr50k3_full (precision, recall)."""
    return [key for name in names for key in (METRIC_SPECS[name].results or (name,))]


def precision_recall(gen: torch.Tensor, real: torch.Tensor, *, k: int = PR_NEIGHBORHOOD,
                     batch: int = PR_BATCH) -> tuple[float, float]:
    """k-NN precision and recall of generated features `gen` [N1, D] against real features `real` [N2, D]
    (Kynkaanniemi et al. 2019): each set's manifold is the union of balls around its points reaching their k-th
    nearest neighbour (self excluded); precision is the fraction of generated points inside the real manifold,
    recall the fraction of real points inside the generated one. torch-fidelity's computation, in blocks of
    `batch` rows (memory O(batch * N)); the distances run on the features' device."""
    if min(len(gen), len(real)) <= k:
        raise MetricError(f"precision/recall with k={k} needs more than {k} images on each side, got {len(gen)} "
                          f"and {len(real)}")
    out = _call_fidelity(prc_features_to_metric, gen, real, prc_neighborhood=int(k), prc_batch_size=int(batch),
                         save_cpu_ram=True, verbose=False)
    return float(out[KEY_METRIC_PRECISION]), float(out[KEY_METRIC_RECALL])


def _call_fidelity(func: Callable, *args: Any, **kwargs: Any) -> Any:
    """A torch-fidelity function, refusing keyword names it does not know (it would silently ignore them)."""
    unknown = sorted(set(kwargs) - set(FIDELITY_DEFAULTS))
    if unknown:
        raise TypeError(f"torch-fidelity {torch_fidelity.__version__} has no option(s) {unknown}")
    return func(*args, **kwargs)


# ---- inputs as torch-fidelity wants them: Datasets of uint8 [3, H, W] tensors -------------------------------------

def _to_rgb(images: torch.Tensor) -> torch.Tensor:
    """uint8 [..., C, H, W] with C in (1, 3) -> 3 channels (grayscale repeated, as Inception needs RGB)."""
    channels = images.shape[-3]
    if channels == 3:
        return images
    if channels == 1:
        return images.expand(*images.shape[:-3], 3, *images.shape[-2:]).contiguous()
    raise MetricError(f"images have {channels} channels; FID/KID need 1 (grayscale) or 3 (RGB)")


class RealImages(torch.utils.data.Dataset):
    """The images of an ImageFolderDataset as uint8 [3, H, W] tensors; `mirror` says whether the dataset was made
    with x-flips (part of its cache key)."""

    def __init__(self, dataset: ImageFolderDataset, mirror: bool = False) -> None:
        self.dataset, self.mirror = dataset, bool(mirror)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> torch.Tensor:
        return _to_rgb(torch.from_numpy(self.dataset[idx][0]))


class GeneratedImages(torch.utils.data.Dataset):
    """`num` images of G as uint8 [3, H, W] tensors, made lazily one batch at a time in the calling process.

    Image i depends only on (seed, i): z and the label index come from a generator seeded with [seed, i]; labels are
    drawn from `label_source` like the official metrics do. Random noise inputs are seeded per batch, so the values
    also repeat for the same batch size. torch-fidelity reads datasets in order, so each batch is made once.
    """

    def __init__(self, G: torch.nn.Module, num: int, *, seed: int = 0, batch: int = 64,
                 label_source: ImageFolderDataset | None = None, noise_mode: str = "random") -> None:
        if int(G.c_dim) > 0 and (label_source is None or label_source.label_dim != int(G.c_dim)):
            have = "no labels" if label_source is None or not label_source.has_labels else \
                f"labels of size {label_source.label_dim}"
            raise MetricError(f"the network is conditional (c_dim={int(G.c_dim)}) but the dataset has {have}; "
                              f"use a dataset with matching dataset.json labels")
        self.G, self.num, self.seed, self.batch = G, int(num), int(seed), int(batch)
        self.label_source, self.noise_mode = label_source, noise_mode
        self.device = next(G.parameters()).device
        self._chunk_idx: int | None = None
        self._chunk: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.num

    def _latents_and_labels(self, indices: range) -> tuple[np.ndarray, torch.Tensor]:
        z = np.empty([len(indices), int(self.G.z_dim)])
        c = torch.zeros([len(indices), int(self.G.c_dim)])
        for row, i in enumerate(indices):
            rng = np.random.default_rng([self.seed, i])
            z[row] = rng.standard_normal(z.shape[1])
            if self.label_source is not None:
                c[row] = torch.from_numpy(self.label_source.get_label(int(rng.integers(len(self.label_source)))))
        return z, c

    def _make_chunk(self, k: int) -> torch.Tensor:
        indices = range(k * self.batch, min((k + 1) * self.batch, self.num))
        z, c = self._latents_and_labels(indices)
        noise_seed = int(np.random.default_rng([self.seed, indices.start, 1]).integers(2**63))
        cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.device] if cuda else []):
            torch.default_generator.manual_seed(noise_seed)
            if cuda:
                with torch.cuda.device(self.device):
                    torch.cuda.manual_seed(noise_seed)
            imgs = generate_images(self.G, z, c, noise_mode=self.noise_mode, batch=len(indices))
        return _to_rgb(torch.from_numpy(to_uint8(imgs)).permute(0, 3, 1, 2).contiguous())

    def __getitem__(self, idx: int) -> torch.Tensor:
        if not 0 <= idx < self.num:
            raise IndexError(idx)
        k = idx // self.batch
        if k != self._chunk_idx:
            self._chunk, self._chunk_idx = self._make_chunk(k), k
        return self._chunk[idx - k * self.batch]


# ---- cache keys ----------------------------------------------------------------------------------------------------

def dataset_fingerprint(path: str | os.PathLike) -> str:
    """sha256 over the dataset's image files: names + CRC-32 + sizes from a ZIP's directory (no decompression),
    names + bytes for a folder. Labels do not affect FID/KID and are left out."""
    path = os.fspath(path)
    digest = hashlib.sha256()
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for fname in sorted(files):
                full = os.path.join(root, fname)
                rel = os.path.relpath(full, path).replace(os.sep, "/")
                if is_image_name(rel):
                    digest.update(f"{rel}\0{sha256_file(full)}\n".encode())
    else:
        with zipfile.ZipFile(path) as zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                if not info.is_dir() and is_image_name(info.filename):
                    digest.update(f"{info.filename}\0{info.CRC:08x}\0{info.file_size}\n".encode())
    return digest.hexdigest()


@functools.lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def weights_fingerprint(path: str | os.PathLike) -> str:
    """sha256 of a weights file, memoised per (path, size, mtime)."""
    st = os.stat(path)
    return _sha256_cached(os.path.realpath(path), st.st_size, st.st_mtime_ns)


def cache_dir() -> str:
    """Folder of the cached dataset features and statistics."""
    return make_cache_dir_path("stylegan_rlo-metrics")


def dataset_cache_name(dataset: ImageFolderDataset, weights_path: str, mirror: bool, extractor: str = EXTRACTOR_NAME,
                       layer: str | None = None) -> str:
    """Cache entry name for a dataset: readable prefix + hash of content, feature network (name, layer: by default
    Inception's FEATURE_LAYER) and its weights, and mirror."""
    key = json.dumps(dict(format=CACHE_FORMAT, extractor=extractor, layer=FEATURE_LAYER if layer is None else layer,
                          weights=weights_fingerprint(weights_path), data=dataset_fingerprint(dataset.path),
                          mirror=bool(mirror)), sort_keys=True)
    prefix = re.sub(r"[^A-Za-z0-9_.]+", "_", dataset.name)[:40] or "data"
    return f"{prefix}-{hashlib.sha256(key.encode()).hexdigest()[:32]}"


# ---- running the metrics -------------------------------------------------------------------------------------------

class _Input:
    """One side of a comparison in one feature network (`layer` of `extractor`, `dim` wide): its images and, for a
    dataset, the cache entry name of its features and stats."""

    def __init__(self, images: torch.utils.data.Dataset, cache_name: str | None, extractor: torch.nn.Module,
                 layer: str, dim: int, cuda: bool, batch: int, verbose: bool) -> None:
        self.images, self.cache_name, self.extractor = images, cache_name, extractor
        self.layer, self.dim = layer, int(dim)
        self.cuda, self.batch, self.verbose = cuda, batch, verbose

    def _cached(self, kind: str, max_bytes: int, check: Callable, compute: Callable) -> dict[str, torch.Tensor]:
        if self.cache_name is None:
            return compute()
        path = os.path.join(cache_dir(), f"{self.cache_name}-{kind}-{self.layer}.pt")
        return cached_tensors(path, max_bytes, check, compute)

    @functools.cached_property
    def features(self) -> torch.Tensor:
        """The features, float32 [N, dim]."""
        n = len(self.images)

        def compute() -> dict[str, torch.Tensor]:
            found = get_featuresdict_from_dataset(self.images, self.extractor, self.batch, self.cuda, True,
                                                  self.verbose)
            return {"features": found[self.layer]}

        def check(data: dict[str, torch.Tensor]) -> None:
            f = data.get("features")
            if f is None or f.dtype != torch.float32 or tuple(f.shape) != (n, self.dim):
                raise ValueError(f"expected float32 features of shape {(n, self.dim)}")

        return self._cached("features", n * self.dim * 4, check, compute)["features"]

    @functools.cached_property
    def fid_statistics(self) -> dict[str, np.ndarray]:
        """Mean (float32 [dim]) and covariance (float64 [dim, dim]) of the features, as torch-fidelity computes."""
        def compute() -> dict[str, torch.Tensor]:
            return {k: torch.from_numpy(v) for k, v in fid_features_to_statistics(self.features).items()}

        def check(data: dict[str, torch.Tensor]) -> None:
            mu, sigma = data.get("mu"), data.get("sigma")
            if mu is None or sigma is None or mu.dtype != torch.float32 or sigma.dtype != torch.float64 \
                    or tuple(mu.shape) != (self.dim,) or tuple(sigma.shape) != (self.dim, self.dim):
                raise ValueError(f"expected FID statistics mu [{self.dim}] and sigma [{self.dim}, {self.dim}]")

        stats = self._cached("fid-stats", self.dim * 4 + self.dim ** 2 * 8, check, compute)
        return {k: v.numpy() for k, v in stats.items()}


# Inception on the CPU runs about 1.5x faster with channels-last weights (oneDNN's preferred layout); the features
# move by float32 rounding only (within 1e-5: tests/test_metrics.py). Measured by scripts/bench_inception.py.
CPU_MEMORY_FORMAT = torch.channels_last


def _image_groups(images: RealImages) -> torch.Tensor:
    """The stored image each item of a dataset shows (an image and its x-flip share one): int64 [N]."""
    return torch.tensor([images.dataset.get_details(i).raw_idx for i in range(len(images))])


def _cache_name(images: torch.utils.data.Dataset, weights_path: str, extractor: str = EXTRACTOR_NAME,
                layer: str | None = None) -> str | None:
    """The cache entry of a dataset's features in one feature network; None for generated images (never cached)."""
    if not isinstance(images, RealImages):
        return None
    return dataset_cache_name(images.dataset, weights_path, images.mirror, extractor, layer)


def _vgg16_precision_recall(input1: torch.utils.data.Dataset, input2: torch.utils.data.Dataset, vgg16_path: str,
                            device: torch.device, batch: int, verbose: bool) -> tuple[float, float]:
    """pr50k3_full: precision and recall (k=3) of input1 against input2 on VGG16 fc2 features, in a feature pass
    of its own; a dataset side counts its first PR_FULL_MAX_REAL images (as the official max_real) and is cached."""
    extractor = vgg16.feature_extractor(vgg16_path, weights_fingerprint(vgg16_path)).to(device)
    features = []
    for images in (input1, input2):
        name = _cache_name(images, vgg16_path, vgg16.EXTRACTOR_NAME, vgg16.FEATURE_LAYER)
        if name is not None and len(images) > PR_FULL_MAX_REAL:
            images = torch.utils.data.Subset(images, range(PR_FULL_MAX_REAL))
        side = _Input(images, name, extractor, vgg16.FEATURE_LAYER, vgg16.FEATURE_DIM, device.type == "cuda", batch,
                      verbose)
        features.append(side.features.to(device))
    return precision_recall(*features)


class _Measured(NamedTuple):
    """What _measure found: {metric name: {result name: value}}, and the nearest-neighbour picture's writer (None
    without one), kept until the results are out."""
    values: dict[str, dict[str, float]]
    write_picture: Callable[[], None] | None


def _measure(input1: torch.utils.data.Dataset, input2: torch.utils.data.Dataset, names: list[str], *,
             device: torch.device, batch: int, seed: int, weights_path: str | None, vgg16_path: str | None,
             verbose: bool, training: RealImages | None = None, nn_picture: str | None = None) -> _Measured:
    """All requested metrics of input1 against input2: one Inception pass per input, shared by all metrics but
    pr50k3_full, which makes a VGG16 pass (first, so that a bad VGG16 file stops the run before any other work).
    Memorization and the nearest-neighbour picture search input1's neighbours in `training`, calibrated by input2 as
    the held-out set; without `training`, in input2, calibrated leave-one-out within input2 (an image and its x-flip
    are one image there). `weights_path` (Inception) may be None when only pr50k3_full is asked for."""
    n1, n2 = len(input1), len(input2)
    if min(n1, n2) < 2:
        raise MetricError(f"the metrics need at least 2 images on each side, got {n1} and {n2}")
    cuda = device.type == "cuda"
    values, write_picture = {}, None
    with torch.cuda.device(device) if cuda else contextlib.nullcontext():
        if PR_FULL_METRIC in names:
            values.update(zip(METRIC_SPECS[PR_FULL_METRIC].results,
                              _vgg16_precision_recall(input1, input2, vgg16_path, device, batch, verbose)))
        if weights_path is not None:
            extractor = feature_extractor(weights_path, [FEATURE_LAYER]).to(device)
            if not cuda:
                extractor = extractor.to(memory_format=CPU_MEMORY_FORMAT)
            a, b = (_Input(x, _cache_name(x, weights_path), extractor, FEATURE_LAYER, int(FEATURE_LAYER), cuda, batch,
                           verbose) for x in (input1, input2))
            if "fid50k_full" in names:
                values["fid50k_full"] = fid_statistics_to_metric(a.fid_statistics, b.fid_statistics,
                                                                 verbose)[torch_fidelity.KEY_METRIC_FID]
            if "kid50k_full" in names:
                kid = _call_fidelity(kid_features_to_metric, a.features, b.features, kid_subsets=KID_NUM_SUBSETS,
                                     kid_subset_size=min(KID_MAX_SUBSET_SIZE, n1, n2), rng_seed=seed,
                                     verbose=verbose)
                values["kid50k_full"] = kid[torch_fidelity.KEY_METRIC_KID_MEAN]
            if PR_METRIC in names:
                # Pairwise distances gen-gen, real-real and gen-real (twice), in blocks, on the evaluation device.
                precision, recall = precision_recall(a.features.to(device), b.features.to(device))
                values.update(zip(METRIC_SPECS[PR_METRIC].results, (precision, recall)))
            t = b if training is None or _cache_name(training, weights_path) == b.cache_name else \
                _Input(training, _cache_name(training, weights_path), extractor, FEATURE_LAYER, int(FEATURE_LAYER),
                       cuda, batch, verbose)
            mem = None
            if MEM_METRIC in names:
                mem = memorization(a.features.to(device), t.features.to(device),
                                   None if training is None else b.features.to(device),
                                   training_groups=None if training is not None else _image_groups(b.images))
                values[MEM_METRIC] = mem.fraction
            if nn_picture is not None:
                write_picture = functools.partial(
                    write_nearest_neighbour_picture, nn_picture, a.images, a.features.to(device), t.images,
                    t.features.to(device), threshold=None if mem is None else mem.threshold,
                    nearest=None if mem is None else mem.nearest)
    return _Measured({n: {key: float(values[key]) for key in result_names([n])} for n in names}, write_picture)


def make_record(name: str, value: float | dict[str, float], *, num_gen: int, total_time: float,
                snapshot_pkl: str | None, **extra: Any) -> dict:
    """One official-format metric record (plus num_gen and any `extra` fields); `value` is the metric's one value or
    its {result name: value} (precision and recall)."""
    results = dict(value) if isinstance(value, dict) else {name: value}
    return dict(results=results, metric=name, num_gen=int(num_gen), snapshot_pkl=snapshot_pkl,
                total_time=float(total_time), timestamp=time.time(), **extra)


def record_path(run_dir: str, metric: str) -> str:
    """run_dir/metric-<name>.jsonl, the file of a metric's records."""
    return os.path.join(run_dir, f"metric-{metric}.jsonl")


def append_records(records: Sequence[dict], run_dir: str) -> None:
    """Append each record as one JSON line to run_dir/metric-<name>.jsonl (locked: concurrent writers lose nothing)."""
    for rec in records:
        append_line(record_path(run_dir, rec["metric"]), json.dumps(rec))


# ---- writing the outputs: every file tried, every failure named ----------------------------------------------------

class OutputWriteError(MetricError):
    """The metrics were computed (and handed to `emit`), but an output file could not be written; the message names
    each such file, why, and what to do."""


_WRITE_CAUSES = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
                 errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                 errno.EPERM: "permission denied", errno.ENOENT: "its folder does not exist"}
_RECORD_REMEDY = ("the record is in the output (calc_fid prints the records before writing them): append that line "
                  "to the file once it can be written (free space or make the run directory writable)")
_PICTURE_REMEDY = "free space or choose a writable --nn-picture path and run again (the metrics are unaffected)"


def _write_all(writes: Sequence[tuple[str, str, Callable[[], None]]]) -> None:
    """Run every (path, remedy, write), each even after another failed; then one OutputWriteError naming every file
    that could not be written, the cause (ENOSPC, read-only, permissions...) and the remedy."""
    failures = []
    for path, remedy, write in writes:
        try:
            write()
        except OSError as e:
            cause = _WRITE_CAUSES.get(e.errno, e.strerror or str(e) or type(e).__name__)
            failures.append(f"could not write {path}: {cause} ({e.strerror or e}); {remedy}")
    if failures:
        raise OutputWriteError("\n".join(failures))


def _deliver(records: list[dict], emit: Callable[[list[dict]], None] | None, run_dir: str | None,
             nn_picture: str | None, write_picture: Callable[[], None] | None) -> None:
    """Hand the records to `emit` first, then write them to run_dir and the picture: a failed write loses no
    result."""
    if emit is not None:
        emit(records)
    writes = [(path, _RECORD_REMEDY, functools.partial(append_line, path, json.dumps(rec)))
              for rec in records if run_dir is not None for path in [record_path(run_dir, rec["metric"])]]
    if write_picture is not None:
        writes.append((nn_picture, _PICTURE_REMEDY, write_picture))
    _write_all(writes)


# ---- the two entry points ------------------------------------------------------------------------------------------

def _checked_names(metrics: Sequence[str], batch: int) -> list[str]:
    names = validate_metric_names(metrics)
    if not names:
        raise MetricError(f"no metric requested; choose from {', '.join(METRIC_NAMES)}")
    if int(batch) < 1:
        raise MetricError(f"batch must be at least 1, got {batch}")
    return names


def _weights_paths(names: list[str], nn_picture: str | None, inception_weights: str | None,
                   vgg16_weights: str | None, verbose: bool) -> tuple[str | None, str | None]:
    """(Inception weights, VGG16 weights), each resolved only when a requested output needs it, before any image
    is processed: pr50k3_full alone needs no Inception."""
    inception = resolve_weights_path(inception_weights, verbose=verbose) \
        if nn_picture is not None or any(n != PR_FULL_METRIC for n in names) else None
    return inception, vgg16.resolve_vgg16_path(vgg16_weights) if PR_FULL_METRIC in names else None


def _training_set(training_data: str | None, training_mirror: bool, data: str, names: list[str],
                  nn_picture: str | None) -> RealImages | None:
    """The training set of the memorization metric and the picture (None when neither is asked for)."""
    if training_data is None and MEM_METRIC in names:
        raise MetricError(f"{MEM_METRIC} compares the generated images' distances to the training set with those of "
                          f"held-out images ({data}), so it needs the training set as well (calc_fid: --data "
                          f"TRAINING --ref HELD_OUT; training: --metric-data HELD_OUT)")
    if training_data is None and nn_picture is not None:
        raise MetricError("the nearest-neighbour picture needs the training set to search (training_data)")
    if training_data is None or (MEM_METRIC not in names and nn_picture is None):
        return None
    return RealImages(ImageFolderDataset(training_data, xflip=training_mirror), training_mirror)


def evaluate_snapshot(G: torch.nn.Module, *, metrics: Sequence[str], data: str, num_gen: int | None = None,
                      mirror: bool = False, device: str | torch.device = "cpu", seed: int = 0, batch: int = 64,
                      snapshot_pkl: str | None = None, run_dir: str | None = None,
                      inception_weights: str | None = None, vgg16_weights: str | None = None, verbose: bool = False,
                      training_data: str | None = None, training_mirror: bool = False, nn_picture: str | None = None,
                      emit: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Compare G's images (num_gen, default 50k) with the whole dataset `data` (x-flipped copies added with
    `mirror`); one record per metric, also appended to run_dir/metric-<name>.jsonl when run_dir is given.
    `snapshot_pkl` is stored relative to run_dir when inside it. Same seed and batch give the same values.
    The memorization metric needs `training_data` (x-flipped copies added with `training_mirror`), with `data` as
    the held-out images; `nn_picture` writes that PNG: the generated images nearest to the training set, each with
    its nearest training images (evaluation.memorization). pr50k3_full needs the VGG16 weights (`vgg16_weights`, or
    a file at a default location: evaluation.vgg16). `emit` gets the records before any file is written; a failed
    write raises OutputWriteError once every write was tried."""
    names = _checked_names(metrics, batch)
    start = time.time()
    device = torch.device(device)
    num = int(num_gen) if num_gen is not None else max(METRIC_SPECS[n].num_gen for n in names)
    weights_path, vgg16_path = _weights_paths(names, nn_picture, inception_weights, vgg16_weights, verbose)
    training = _training_set(training_data, training_mirror, data, names, nn_picture)
    real = ImageFolderDataset(data, use_labels=int(G.c_dim) > 0, xflip=mirror)
    G = copy.deepcopy(G).eval().requires_grad_(False).to(device)
    fake = GeneratedImages(G, num, seed=seed, batch=batch, label_source=real if int(G.c_dim) > 0 else None)
    measured = _measure(fake, RealImages(real, mirror), names, device=device, batch=batch, seed=seed,
                        weights_path=weights_path, vgg16_path=vgg16_path, verbose=verbose, training=training,
                        nn_picture=nn_picture)
    if run_dir is not None and snapshot_pkl is not None:
        rel = os.path.relpath(os.path.abspath(snapshot_pkl), os.path.abspath(run_dir))
        snapshot_pkl = rel if not rel.startswith("..") else snapshot_pkl
    elapsed = time.time() - start
    records = [make_record(n, measured.values[n], num_gen=num, total_time=elapsed, snapshot_pkl=snapshot_pkl)
               for n in names]
    _deliver(records, emit, run_dir, nn_picture, measured.write_picture)
    return records


def evaluate_datasets(data: str, ref: str, *, metrics: Sequence[str], mirror: bool = False,
                      device: str | torch.device = "cpu", seed: int = 0, batch: int = 64,
                      inception_weights: str | None = None, vgg16_weights: str | None = None, verbose: bool = False,
                      nn_picture: str | None = None, emit: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """FID/KID between two datasets (e.g. two halves of one: the noise floor of FID on that many images). Both are
    cached; `mirror` x-flips both. num_gen in the records is the size of `data`. Memorization asks whether `data`'s
    images are copies of `ref`'s, calibrated by `ref`'s own leave-one-out nearest-neighbour distances (about 0.05
    for two disjoint samples of one distribution, 1 for a set against itself); `nn_picture` shows `data`'s images
    nearest to `ref` with their nearest images in `ref`. `emit` and write failures as in evaluate_snapshot."""
    names = _checked_names(metrics, batch)
    start = time.time()
    weights_path, vgg16_path = _weights_paths(names, nn_picture, inception_weights, vgg16_weights, verbose)
    a, b = ImageFolderDataset(data, xflip=mirror), ImageFolderDataset(ref, xflip=mirror)
    measured = _measure(RealImages(a, mirror), RealImages(b, mirror), names, device=torch.device(device),
                        batch=batch, seed=seed, weights_path=weights_path, vgg16_path=vgg16_path, verbose=verbose,
                        nn_picture=nn_picture)
    elapsed = time.time() - start
    records = [make_record(n, measured.values[n], num_gen=len(a), total_time=elapsed, snapshot_pkl=None, data=data,
                           ref=ref) for n in names]
    _deliver(records, emit, None, nn_picture, measured.write_picture)
    return records
