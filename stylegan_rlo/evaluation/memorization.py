"""The memorization check: how close generated images come to the training images in Inception feature space,
judged against how close held-out real images come to the same training images.

The statistic is the fraction of generated images whose nearest training image is nearer than the 5th percentile of
the held-out images' nearest-training-image distances. A generator that draws new images from the data distribution
scores about 0.05 (as the held-out images do by construction), one that draws worse images scores less, one that
copies training images scores up to 1. The picture shows generated images next to their nearest training images.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from stylegan_rlo.errors import UserError
from stylegan_rlo.images import make_grid, save_png

METRIC_NAME = "mem50k_inception"  # as pr50k3_inception: 50k generated images by default, Inception pool features
COPY_QUANTILE = 0.05        # "close" = nearer than this quantile of the held-out nearest-neighbour distances
DUPLICATE_TOLERANCE = 1e-4  # nearer than this times the training features' spread: the same image
NN_BATCH = 1024             # query rows per block of pairwise distances (memory about NN_BATCH x keys floats)
_CANDIDATE_MARGIN = 4       # extra candidates per query whose exact distance is recomputed (matmul round-off)
PICTURE_ROWS = 8            # generated images in the nearest-neighbour picture
PICTURE_NEIGHBOURS = 3      # training images shown next to each
PICTURE_MIN_TILE = 64       # small images are enlarged to at least this many pixels, so that the labels fit


class MemorizationError(UserError):
    """The memorization check cannot be carried out on these sets; the message says why and what to change."""


class Neighbours(NamedTuple):
    """The k nearest keys of each query: distances float32 [N, k] (ascending) and key indices int64 [N, k]."""
    distances: torch.Tensor
    indices: torch.Tensor


def nearest_neighbours(queries: torch.Tensor, keys: torch.Tensor, k: int = 1, *,
                       query_groups: torch.Tensor | None = None, key_groups: torch.Tensor | None = None,
                       batch: int = NN_BATCH) -> Neighbours:
    """The `k` nearest `keys` [M, D] of each of the `queries` [N, D] by Euclidean distance, on the queries' device.
    With groups (int64 [N] and [M]) a query never finds a key of its own group: leave-one-out within one set (an
    image and its x-flip form a group). Candidates come from one matrix product per block of `batch` queries; the
    distances of the few best are then recomputed from the differences, so a copy scores exactly 0."""
    if (query_groups is None) != (key_groups is None):
        raise ValueError("give both query_groups and key_groups, or neither")
    device = queries.device
    center = keys.float().mean(0)           # centring shrinks the norms, and with them the matmul's round-off
    q_all, k_all = queries.float() - center, keys.float().to(device) - center
    k_sq = (k_all * k_all).sum(1)
    num_candidates = min(len(k_all), k + _CANDIDATE_MARGIN)
    distances, indices = [], []
    for start in range(0, len(q_all), batch):
        q = q_all[start:start + batch]
        d2 = (q * q).sum(1, keepdim=True) + k_sq[None, :] - 2 * q @ k_all.T
        if query_groups is not None:
            same = query_groups[start:start + batch].to(device)[:, None] == key_groups.to(device)[None, :]
            d2 = d2.masked_fill(same, math.inf)
        cand_d2, cand = d2.topk(num_candidates, dim=1, largest=False)
        exact = (q[:, None, :] - k_all[cand]).norm(dim=2).masked_fill(cand_d2.isinf(), math.inf)
        exact, order = exact.sort(dim=1)
        distances.append(exact[:, :k])
        indices.append(cand.gather(1, order)[:, :k])
    out = Neighbours(torch.cat(distances), torch.cat(indices))
    if out.distances.isinf().any():
        raise MemorizationError(f"nearest neighbours: fewer than {k} candidate images outside each image's own group "
                                f"(the set has {len(keys)} images)")
    return out


def copy_threshold(reference_distances: torch.Tensor, spread: float, quantile: float = COPY_QUANTILE) -> float:
    """The distance below which an image counts as close to the training set: the `quantile` of the held-out
    images' nearest-training-image distances (linear interpolation, as numpy.quantile). A threshold of (almost) 0
    (below DUPLICATE_TOLERANCE x `spread`, the training features' RMS distance from their mean) means those held-out
    images are in the training set, and nothing could be judged: MemorizationError."""
    ref = reference_distances.double().cpu()
    threshold = float(torch.quantile(ref, quantile))
    if threshold <= DUPLICATE_TOLERANCE * spread:
        copies = int((ref <= DUPLICATE_TOLERANCE * spread).sum())
        raise MemorizationError(f"{copies} of the {len(ref)} held-out images have an (almost) exact copy in the "
                                f"training set, so 'close to a training image' cannot be calibrated; the memorization "
                                f"check needs held-out images that are not in the training set")
    return threshold


class Memorization(NamedTuple):
    """The result: `fraction` of the samples nearer to a training image than `threshold`, and each sample's
    nearest training image (`nearest`, k=1)."""
    fraction: float
    threshold: float
    nearest: Neighbours


def memorization(samples: torch.Tensor, training: torch.Tensor, held_out: torch.Tensor | None = None, *,
                 training_groups: torch.Tensor | None = None, quantile: float = COPY_QUANTILE) -> Memorization:
    """The fraction of `samples` [N, D] whose nearest `training` feature [M, D] is nearer than the `quantile` of
    the `held_out` features' [H, D] nearest-training distances. Without `held_out`, the training images themselves
    calibrate the threshold, leave-one-out: each one's distance to the nearest other training image (other than
    its own group, e.g. its x-flip, when `training_groups` are given)."""
    nearest = nearest_neighbours(samples, training)
    if held_out is not None:
        reference = nearest_neighbours(held_out.to(samples.device), training).distances[:, 0]
    else:
        groups = torch.arange(len(training)) if training_groups is None else training_groups
        reference = nearest_neighbours(training.to(samples.device), training, query_groups=groups,
                                       key_groups=groups).distances[:, 0]
    spread = float((training - training.mean(0)).double().pow(2).sum(1).mean().sqrt())
    threshold = copy_threshold(reference, spread, quantile)
    fraction = float((nearest.distances[:, 0] < threshold).double().mean())
    return Memorization(fraction, threshold, nearest)


def _tile(image_chw: torch.Tensor, scale: int) -> np.ndarray:
    """uint8 [C, H, W] -> uint8 HWC, enlarged `scale` times by pixel repetition."""
    return np.asarray(image_chw).transpose(1, 2, 0).repeat(scale, axis=0).repeat(scale, axis=1)


def write_nearest_neighbour_picture(path: str, samples: torch.utils.data.Dataset, sample_features: torch.Tensor,
                                    training: torch.utils.data.Dataset, training_features: torch.Tensor, *,
                                    rows: int = PICTURE_ROWS, k: int = PICTURE_NEIGHBOURS,
                                    threshold: float | None = None, nearest: Neighbours | None = None) -> None:
    """A PNG grid, one row per sample: the `rows` samples nearest to the training set (nearest first), each followed
    by its `k` nearest training images. `samples` and `training` give uint8 [C, H, W] images (C = 1 or 3, the same
    for both) in the order of their features; tiles are labelled with the sample's index and each neighbour's
    distance, marked '<' when below `threshold` (the memorization metric's copy threshold). `nearest`: the samples'
    nearest training images when already known (Memorization.nearest), else they are searched."""
    k = min(k, len(training_features))
    nearest = nearest_neighbours(sample_features, training_features) if nearest is None else nearest
    shown = nearest.distances[:, 0].argsort(stable=True)[:rows].cpu()
    found = nearest_neighbours(sample_features[shown.to(sample_features.device)], training_features, k)
    height = samples[0].shape[-2]
    scale = max(1, math.ceil(PICTURE_MIN_TILE / height))
    tiles: list[np.ndarray] = []
    labels: list[str] = []
    for row, i in enumerate(shown.tolist()):
        tiles.append(_tile(samples[i], scale))
        labels.append(f"#{i}")
        for j, d in zip(found.indices[row].tolist(), found.distances[row].tolist()):
            tiles.append(_tile(training[j], scale))
            labels.append(f"{d:.2f}" + ("<" if threshold is not None and d < threshold else ""))
    save_png(make_grid(np.stack(tiles), k + 1, len(shown), labels), path)
