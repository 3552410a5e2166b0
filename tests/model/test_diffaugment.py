"""DiffAugment against naive float64 implementations (loops over images and pixels) given the same draws; the ranges of
the draws; gradients (first and second order, as R1 needs) and the source of the randomness."""

import math

import numpy as np
import pytest
import torch

from stylegan_rlo.model import diffaugment as da


def round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def naive_color(x, brightness, saturation, contrast):
    """Per image: + brightness; saturation around each pixel's channel mean; contrast around the image mean."""
    out = np.empty_like(x)
    for n in range(x.shape[0]):
        img = x[n] + brightness[n]
        for i in range(img.shape[1]):
            for j in range(img.shape[2]):
                m = img[:, i, j].mean()
                img[:, i, j] = (img[:, i, j] - m) * saturation[n] + m
        m = img.mean()
        out[n] = (img - m) * contrast[n] + m
    return out


def naive_translate(x, shifts):
    """out[n, :, i, j] = x[n, :, i + dy, j + dx] where that pixel exists, else 0."""
    out = np.zeros_like(x)
    _, _, h, w = x.shape
    for n in range(x.shape[0]):
        dy, dx = shifts[n]
        for i in range(h):
            for j in range(w):
                if 0 <= i + dy < h and 0 <= j + dx < w:
                    out[n, :, i, j] = x[n, :, i + dy, j + dx]
    return out


def naive_cutout(x, centres):
    """Zero the side_h x side_w rectangle whose rows start at c_y - side_h // 2 (columns likewise)."""
    out = x.copy()
    _, _, h, w = x.shape
    side_h, side_w = round_half_up(h / 2), round_half_up(w / 2)
    for n in range(x.shape[0]):
        top, left = centres[n][0] - side_h // 2, centres[n][1] - side_w // 2
        for i in range(h):
            for j in range(w):
                if top <= i < top + side_h and left <= j < left + side_w:
                    out[n, :, i, j] = 0
    return out


def naive(x, draws):
    x = x.copy()
    if draws.brightness is not None:
        x = naive_color(x, draws.brightness.numpy(), draws.saturation.numpy(), draws.contrast.numpy())
    if draws.translation is not None:
        x = naive_translate(x, draws.translation.tolist())
    if draws.cutout is not None:
        x = naive_cutout(x, draws.cutout.tolist())
    return x


SHAPES = [(6, 3, 12, 16), (5, 1, 9, 7), (4, 2, 32, 32)]  # non-square, odd sides (odd cutout), grey, 32x32
POLICY_SETS = [("color",), ("translation",), ("cutout",), ("color", "translation", "cutout")]


def images(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("policies", POLICY_SETS)
def test_apply_matches_naive_implementation(shape, policies):
    x = images(shape)
    torch.manual_seed(3)
    draws = da.draw(policies, x.shape, x.dtype, x.device)
    got = da.apply(x, draws)
    assert got.shape == x.shape and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), naive(x.numpy(), draws), rtol=1e-12, atol=1e-12)
    assert not torch.equal(got, x)


def test_translation_by_the_largest_shift_leaves_a_zero_band():
    x = images((2, 3, 16, 16)) + 3  # no pixel is 0
    shift = round_half_up(16 / 8)
    draws = da.Draws(translation=torch.tensor([[shift, -shift], [-shift, 0]]))
    out = da.apply(x, draws)
    assert (out[0, :, -shift:, :] == 0).all() and (out[0, :, :, :shift] == 0).all()
    assert torch.equal(out[0, :, :-shift, shift:], x[0, :, shift:, :-shift])
    assert (out[1, :, :shift, :] == 0).all() and torch.equal(out[1, :, shift:, :], x[1, :, :-shift, :])


def test_cutout_square_is_half_the_image_and_clipped_at_the_border():
    x = images((3, 1, 16, 10)) + 3
    draws = da.Draws(cutout=torch.tensor([[8, 5], [0, 0], [16, 10]]))  # centre, a corner, the far corner
    zeros = (da.apply(x, draws) == 0).sum(dim=[1, 2, 3]).tolist()
    assert zeros == [8 * 5, 4 * 3, 4 * 2]  # side 8 x 5; at the corners what is left inside


@pytest.mark.parametrize("size", [4, 9, 12, 32, 256])
def test_draw_ranges_cover_the_documented_values(size):
    torch.manual_seed(0)
    n = 3000
    d = da.draw(da.POLICIES, (n, 3, size, size + 1), torch.float32, torch.device("cpu"))
    assert -0.5 <= float(d.brightness.min()) < -0.49 and 0.49 < float(d.brightness.max()) < 0.5
    assert 0 <= float(d.saturation.min()) < 0.01 and 1.99 < float(d.saturation.max()) < 2
    assert 0.5 <= float(d.contrast.min()) < 0.51 and 1.49 < float(d.contrast.max()) < 1.5
    for axis, extent in enumerate((size, size + 1)):
        shift = round_half_up(extent / 8)
        assert set(d.translation[:, axis].tolist()) == set(range(-shift, shift + 1))
        side = round_half_up(extent / 2)
        last = extent - 1 if side % 2 else extent  # an even square may be centred just past the last pixel
        assert set(d.cutout[:, axis].tolist()) == set(range(0, last + 1))
    assert d.translation.dtype == d.cutout.dtype == torch.int64


def test_each_image_gets_its_own_draws():
    torch.manual_seed(1)
    d = da.draw(da.POLICIES, (64, 3, 16, 16), torch.float32, torch.device("cpu"))
    for values in (d.brightness, d.saturation, d.contrast, d.translation, d.cutout):
        assert len(set(map(str, values.tolist()))) > 8


@pytest.mark.parametrize("policies", POLICY_SETS)
def test_gradients_first_and_second_order(policies):
    """Differentiable in the image, twice (R1 differentiates D(T(x)) and then its gradient)."""
    x = images((2, 2, 6, 5)).requires_grad_(True)
    torch.manual_seed(5)
    draws = da.draw(policies, x.shape, x.dtype, x.device)
    assert torch.autograd.gradcheck(lambda v: da.apply(v, draws), (x,))
    assert torch.autograd.gradgradcheck(lambda v: da.apply(v, draws).square(), (x,))


def test_gradient_flows_only_through_kept_pixels():
    x = images((2, 3, 8, 8)).requires_grad_(True)
    draws = da.Draws(translation=torch.tensor([[1, 0], [0, -2]]), cutout=torch.tensor([[4, 4], [0, 8]]))
    out = da.apply(x, draws)
    (grad,) = torch.autograd.grad(out.sum(), x)
    # d sum(out) / d x[n, c, i, j] is 1 where input pixel (i, j) lands in the output (at (i - dy, j - dx)) outside
    # the cutout, else 0.
    landed = torch.zeros_like(x)
    for n in range(2):
        dy, dx = draws.translation[n].tolist()
        kept = naive_cutout(np.ones((1, 1, 8, 8)), [draws.cutout[n].tolist()])[0, 0]
        for i in range(8):
            for j in range(8):
                if 0 <= i - dy < 8 and 0 <= j - dx < 8 and kept[i - dy, j - dx] == 1:
                    landed[n, :, i, j] = 1
    assert 0 < landed.sum() < landed.numel() and torch.equal(grad, landed)


def test_randomness_comes_from_torchs_generator():
    """The same torch RNG state gives the same augmentation (what exact resume relies on); another gives another."""
    x = images((4, 3, 16, 16))
    augment = da.DiffAugment("color,translation,cutout")
    torch.manual_seed(11)
    state = torch.get_rng_state()
    first = augment(x)
    second = augment(x)
    torch.set_rng_state(state)
    assert torch.equal(augment(x), first) and not torch.equal(first, second)


@pytest.mark.parametrize("text,policies", [
    ("color,translation,cutout", ("color", "translation", "cutout")),
    ("cutout, color", ("color", "cutout")),
    ("translation", ("translation",)),
    ("none", ()), ("", ()), (None, ()),
])
def test_parse_policy(text, policies):
    assert da.parse_policy(text) == policies


@pytest.mark.parametrize("text,match", [("colour", "unknown DiffAugment policy 'colour'"),
                                        ("color,color", "twice"), ("none,color", "unknown")])
def test_parse_policy_errors(text, match):
    with pytest.raises(ValueError, match=match):
        da.parse_policy(text)
    with pytest.raises(ValueError):
        da.DiffAugment(text)
