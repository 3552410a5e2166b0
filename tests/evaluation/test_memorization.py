"""The memorization check on features: nearest neighbours and the copy fraction against a direct float64 numpy
implementation, copies flagged and new samples not, overlapping held-out sets refused, and the picture's layout."""

import numpy as np
import pytest
import torch
from PIL import Image

from stylegan_rlo.evaluation import memorization as mem


def numpy_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.sqrt(((x[:, None, :].astype(np.float64) - y[None, :, :].astype(np.float64)) ** 2).sum(-1))


def numpy_fraction(samples, training, held_out=None, groups=None, q=0.05) -> float:
    """The definition written out: nearest training distance of each sample, below the q-quantile (numpy's linear
    interpolation) of the held-out images' nearest training distances, or of the training images' own nearest
    other-image distances (leave-one-out, an image's group excluded) without a held-out set."""
    d_samples = numpy_distances(samples, training).min(1)
    if held_out is not None:
        d_ref = numpy_distances(held_out, training).min(1)
    else:
        d = numpy_distances(training, training)
        groups = np.arange(len(training)) if groups is None else groups
        d[groups[:, None] == groups[None, :]] = np.inf
        d_ref = d.min(1)
    return float(np.mean(d_samples < np.quantile(d_ref, q)))


def features(rng, n, dim=64, scale=1.0):
    return torch.from_numpy((rng.standard_normal((n, dim)) * scale).astype(np.float32))


@pytest.mark.parametrize("n, m, dim, k, batch", [(30, 40, 8, 1, 1024), (57, 13, 2048, 3, 1024), (90, 70, 16, 5, 7)])
def test_nearest_neighbours_match_numpy(n, m, dim, k, batch):
    rng = np.random.default_rng([n, m, dim])
    q, keys = features(rng, n, dim) + 3.0, features(rng, m, dim) + 3.0  # off-centre: round-off matters
    found = mem.nearest_neighbours(q, keys, k, batch=batch)
    d = numpy_distances(q.numpy(), keys.numpy())
    assert np.array_equal(found.indices.numpy(), np.argsort(d, 1)[:, :k])
    assert found.distances.numpy() == pytest.approx(np.sort(d, 1)[:, :k], rel=1e-5)


def test_copies_are_at_distance_zero_and_groups_are_left_out():
    rng = np.random.default_rng(1)
    keys = features(rng, 50, 2048, scale=30) + 100  # large norms: the matmul alone would not give 0
    found = mem.nearest_neighbours(keys[[3, 7]], keys)
    assert found.indices[:, 0].tolist() == [3, 7] and found.distances[:, 0].tolist() == [0.0, 0.0]
    groups = torch.arange(50) // 2  # pairs, as an image and its x-flip
    loo = mem.nearest_neighbours(keys, keys, 2, query_groups=groups, key_groups=groups)
    d = numpy_distances(keys.numpy(), keys.numpy())
    d[groups.numpy()[:, None] == groups.numpy()[None, :]] = np.inf
    assert np.array_equal(loo.indices.numpy(), np.argsort(d, 1)[:, :2])
    with pytest.raises(mem.MemorizationError, match="fewer than 3 candidate images"):  # 2 others each
        mem.nearest_neighbours(keys[:3], keys[:3], 3, query_groups=torch.arange(3), key_groups=torch.arange(3))


@pytest.mark.parametrize("held_out", [True, False])
def test_fraction_matches_numpy(held_out):
    rng = np.random.default_rng([2, held_out])
    training, samples, reference = features(rng, 120), features(rng, 90, scale=0.97), features(rng, 150)
    samples[:20] = training[:20] + 0.01 * features(rng, 20)  # some near-copies
    result = mem.memorization(samples, training, reference if held_out else None)
    expected = numpy_fraction(samples.numpy(), training.numpy(), reference.numpy() if held_out else None)
    assert result.fraction == pytest.approx(expected, abs=1e-12)
    assert 20 / 90 < expected < 1  # the copies and a few more
    groups = torch.arange(120) % 60  # training image i + 60 is "the x-flip" of i
    grouped = mem.memorization(samples, training, training_groups=groups)
    assert grouped.fraction == pytest.approx(numpy_fraction(samples.numpy(), training.numpy(), groups=groups.numpy()),
                                             abs=1e-12)


def test_copying_generator_flagged_new_samples_not():
    """A 'generator' returning training images (slightly perturbed) scores about 1; new draws from the training
    distribution about 0.05, as the held-out images do by construction; half copies about 0.5."""
    rng = np.random.default_rng(3)
    training, held_out = features(rng, 400, 128), features(rng, 400, 128)
    copies = training[rng.permutation(400)[:300]] + 0.05 * features(rng, 300, 128)
    new = features(rng, 600, 128)
    assert mem.memorization(copies, training, held_out).fraction == 1.0
    fresh = mem.memorization(new, training, held_out).fraction
    assert 0.02 < fresh < 0.09  # Binomial(600, 0.05) with a threshold estimated from 400 values: sd about 0.014
    assert mem.memorization(held_out, training, held_out).fraction == pytest.approx(0.05, abs=1 / 400)
    half = mem.memorization(torch.cat([copies[:300], new[:300]]), training, held_out).fraction
    assert 0.5 < half < 0.56
    blurry = mem.memorization(new * 0.3 + 3, training, held_out).fraction  # far from every training image
    assert blurry == 0.0
    assert mem.memorization(training, training).fraction == 1.0  # a set against itself, leave-one-out calibrated


def test_held_out_overlapping_training_is_refused():
    rng = np.random.default_rng(4)
    training = features(rng, 100)
    held_out = torch.cat([training[:10], features(rng, 90)])  # 10% of the held-out images are training images
    with pytest.raises(mem.MemorizationError, match="10 of the 100 held-out images have an .*exact copy"):
        mem.memorization(features(rng, 20), training, held_out)
    assert mem.memorization(features(rng, 20), training, held_out[8:]).threshold > 0  # 2 of 92: below 5%


class _Images(torch.utils.data.Dataset):
    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i]


def test_picture_rows_are_the_nearest_samples_with_their_neighbours(tmp_path):
    """Features are the flattened pixels, so the picture can be checked tile by tile: 16x16 images are enlarged
    4x to 64 pixels; make_grid places tiles with 2 pixels of padding and 12 pixels of label under each."""
    rng = np.random.default_rng(5)
    training = torch.from_numpy(rng.integers(0, 256, (20, 3, 16, 16), dtype=np.uint8))
    samples = torch.from_numpy(rng.integers(0, 256, (10, 3, 16, 16), dtype=np.uint8))
    samples[6] = training[11]   # an exact copy: the first row
    samples[2] = (training[4].int() + 3).clamp(0, 255).to(torch.uint8)  # a near copy: the second row
    feats = [x.reshape(len(x), -1).float() for x in (samples, training)]
    path = tmp_path / "nn.png"
    mem.write_nearest_neighbour_picture(str(path), _Images(samples), feats[0], _Images(training), feats[1], rows=4,
                                        k=3, threshold=100.0)
    grid = np.asarray(Image.open(path))
    assert grid.shape == (4 * (64 + 2 + 12) + 2, 4 * (64 + 2) + 2, 3)
    d = numpy_distances(feats[0].numpy(), feats[1].numpy())
    rows = np.argsort(d.min(1), kind="stable")[:4]
    assert rows[:2].tolist() == [6, 2]

    def tile(row, col):
        top, left = 2 + row * (64 + 2 + 12), 2 + col * (64 + 2)
        return grid[top:top + 64:4, left:left + 64:4].transpose(2, 0, 1)

    for row, i in enumerate(rows):
        assert np.array_equal(tile(row, 0), samples[i].numpy())
        for col, j in enumerate(np.argsort(d[i])[:3]):
            assert np.array_equal(tile(row, col + 1), training[j].numpy())
