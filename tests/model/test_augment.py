"""Tests for stylegan_rlo.model.augment (the ADA pipeline) against the official fixtures and independent references.

What is exactly checkable: p = 0 (identity up to resampling round-off), integer translation (the padded image,
shifted), every color matrix (closed forms), band filtering of a constant image, cutout (a naive mask). Flips and
90-degree rotations go through the same orthogonal-wavelet resampling, whose low-pass is asymmetric (sym6), so a
mirrored axis comes out very slightly low-passed: they are compared on smooth images with a tolerance that still
tells every wrong orientation apart.
"""

from __future__ import annotations

import ast
import math
import pathlib
import pickle
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from training_fixtures import DATA

from stylegan_rlo.model import augment
from stylegan_rlo.model.augment import AUGPIPE_SPECS, AugmentPipe
from torch_utils import persistence
from torch_utils.ops import grid_sample_gradfix


def _images(batch=2, channels=3, height=16, width=16, seed=0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, channels, height, width, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)


def _smooth_images(batch=2, size=32, seed=0) -> torch.Tensor:
    """Sums of wide Gaussian blobs at random off-center positions (asymmetric, nearly band-limited)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    out = torch.zeros(batch, 3, size, size)
    for b in range(batch):
        for c in range(3):
            for _ in range(3):
                cx, cy = (torch.rand(2, generator=g) * size * 0.6 + size * 0.2).tolist()
                amp = float(torch.rand(1, generator=g)) * 2 - 1
                out[b, c] += amp * torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 6.0 ** 2))
    return out


def _pipe(p: float = 1.0, **kwargs) -> AugmentPipe:
    pipe = AugmentPipe(**kwargs)
    pipe.p.fill_(p)
    return pipe


# ---------------------------------------------------------------------------------------------------------------------
# Structure: specs, buffers and attributes against the official fixtures

def _fixture_listing(name: str) -> dict:
    """The augment_pipe block of a fixture's structure file: init kwargs, attributes, buffer shapes."""
    lines = (DATA / f"{name}.structure.txt").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("augment_pipe:"))
    head = lines[start]
    init_kwargs = ast.literal_eval(re.search(r"init_kwargs=(\{.*?\}) init_args", head).group(1))
    attrs, buffers, params = {}, {}, {}
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        line = line.strip()
        if line.startswith("attrs: "):
            for key, value in re.findall(r"(\w+)=(\[[^\]]*\]|[^,]+)", line[len("attrs: "):]):
                attrs[key] = ast.literal_eval(value)
        elif line.startswith(("buffer ", "param ")):
            kind, key, shape = line.split(" ", 2)
            (buffers if kind == "buffer" else params)[key] = ast.literal_eval(shape)
    return dict(init_kwargs=init_kwargs, attrs=attrs, buffers=buffers, params=params)


def test_structure_matches_fixture():
    listing = _fixture_listing("tiny_cond")  # (tiny_uncond's listing stops before its augment_pipe)
    assert listing["init_kwargs"] == AUGPIPE_SPECS["bgc"]  # the official default pipe
    pipe = AugmentPipe(**listing["init_kwargs"])
    assert {k: tuple(v.shape) for k, v in pipe.named_buffers()} == listing["buffers"]
    assert listing["params"] == {} and list(pipe.parameters()) == []
    assert listing["attrs"], "no attributes parsed from the structure file"
    for key, value in listing["attrs"].items():
        assert getattr(pipe, key) == value, key
    ours = {k for k, v in vars(pipe).items() if not k.startswith("_") and k != "training"}
    assert ours == set(listing["attrs"]) - {"training"}


def test_buffers_equal_the_official_pickle_values():
    pickles = pytest.importorskip("stylegan_rlo.checkpoints.pickles")
    stored = pickles.load_network_pkl(str(DATA / "tiny_cond.pkl"))["augment_pipe"]
    fresh = AugmentPipe(**AUGPIPE_SPECS["bgc"])
    for key in ("Hz_geom", "Hz_fbank"):
        assert getattr(fresh, key).dtype == torch.float32
        assert torch.allclose(getattr(fresh, key), getattr(stored, key), rtol=0, atol=1e-7), key
    assert float(fresh.p) == 1.0


def test_augpipe_specs():
    assert set(AUGPIPE_SPECS) == {"blit", "geom", "color", "filter", "noise", "cutout",
                                  "bg", "bgc", "bgcf", "bgcfn", "bgcfnc"}
    assert AUGPIPE_SPECS["blit"] == dict(xflip=1, rotate90=1, xint=1)
    assert AUGPIPE_SPECS["geom"] == dict(scale=1, rotate=1, aniso=1, xfrac=1)
    assert AUGPIPE_SPECS["color"] == dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
    assert AUGPIPE_SPECS["bgcfnc"] == dict(**AUGPIPE_SPECS["bgc"], imgfilter=1, noise=1, cutout=1)
    assert AUGPIPE_SPECS["bgcfn"] == dict(**AUGPIPE_SPECS["bgc"], imgfilter=1, noise=1)
    for spec in AUGPIPE_SPECS.values():
        AugmentPipe(**spec)  # every preset constructs


def test_filter_bank_properties():
    bank = augment.octave_filter_bank(augment.SYM2_LOWPASS)
    assert bank.shape == (4, 43)
    assert np.allclose(bank, bank[:, ::-1], atol=1e-15)  # zero phase
    impulse = np.zeros(43)
    impulse[21] = 1
    assert np.allclose(bank.sum(axis=0), impulse, atol=1e-12)  # equal gains are the identity

    def response(omega):
        return bank @ np.cos(omega * (np.arange(43) - 21))

    assert np.allclose(response(0.0), [1, 0, 0, 0], atol=1e-12)       # DC only in the lowest band
    assert np.allclose(response(np.pi), [0, 0, 0, 1], atol=1e-12)     # Nyquist only in the highest band
    # Octaves: the peak response of band i (1..3) sits in [pi / 2^(4-i), pi / 2^(3-i)].
    omegas = np.linspace(0, np.pi, 2001)
    resp = np.stack([response(w) for w in omegas], axis=1)
    for band in (1, 2, 3):
        peak = omegas[np.argmax(resp[band])]
        assert np.pi / 2 ** (4 - band) <= peak <= np.pi / 2 ** (3 - band) + 1e-9


def test_module_imports_only_what_the_official_loader_has():
    tree = ast.parse(pathlib.Path(augment.__file__).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module)
    allowed = ("__future__", "numpy", "torch", "torch.nn.functional", "torch_utils", "dnnlib")
    assert all(n in allowed or n.startswith(("torch_utils.", "dnnlib.")) for n in names), names


def test_persistent_and_picklable():
    pipe = _pipe(0.3, **AUGPIPE_SPECS["bgcf"])
    assert persistence.is_persistent(pipe)
    clone = pickle.loads(pickle.dumps(pipe))
    assert float(clone.p) == pytest.approx(0.3) and clone.imgfilter == 1.0
    x = _images(height=32, width=32)
    torch.manual_seed(5)
    a = pipe(x)
    torch.manual_seed(5)
    assert torch.equal(clone(x), a)


# ---------------------------------------------------------------------------------------------------------------------
# Identity and exact references

@pytest.mark.parametrize("spec", sorted(AUGPIPE_SPECS))
def test_p_zero_returns_the_input(spec):
    x = _images(height=32, width=32)
    y = _pipe(0.0, **AUGPIPE_SPECS[spec])(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    # Geometric pipes resample (pad, 2x up, sample at the same points, down): identity up to float round-off.
    assert torch.allclose(y, x, rtol=0, atol=1e-5), float((y - x).abs().max())


def test_nothing_enabled_is_exactly_the_input():
    x = _images()
    assert torch.equal(AugmentPipe()(x), x)
    assert torch.equal(_pipe(0.0, noise=1, cutout=1)(x), x)


def _shift_reflect(x: torch.Tensor, tx: int, ty: int) -> torch.Tensor:
    """Content moved by (tx, ty) pixels, the uncovered border filled by mirror reflection."""
    pad = max(abs(tx), abs(ty)) + 1
    padded = F.pad(x, [pad] * 4, mode="reflect")
    h, w = x.shape[2:]
    return padded[:, :, pad - ty:pad - ty + h, pad - tx:pad - tx + w]


@pytest.mark.parametrize("q", [0.05, 0.3, 0.5, 0.62, 0.95])
def test_integer_translation_is_an_exact_shift(q):
    x = _images(height=16, width=24)
    y = _pipe(xint=1)(x, debug_percentile=q)
    tx, ty = round((2 * q - 1) * 0.125 * 24), round((2 * q - 1) * 0.125 * 16)
    assert torch.allclose(y, _shift_reflect(x, tx, ty), rtol=0, atol=1e-5)


def test_random_integer_translations_are_exact_shifts_within_range():
    x = _images(batch=12, height=16, width=16, seed=1)
    torch.manual_seed(0)
    y = _pipe(xint=1, xint_max=0.25)(x)
    shifts = set()
    for b in range(12):
        errs = {(tx, ty): float((y[b:b + 1] - _shift_reflect(x[b:b + 1], tx, ty)).abs().max())
                for tx in range(-4, 5) for ty in range(-4, 5)}
        best = min(errs, key=errs.get)
        assert errs[best] < 1e-5
        shifts.add(best)
    assert len(shifts) >= 4  # the shifts are really random


def _dihedral(x: torch.Tensor, flip: int, quarter_turns: int) -> torch.Tensor:
    """x-flip first, then rot90 (torch.rot90 direction, dims (2, 3)): the order the pipe composes them."""
    return torch.rot90(x.flip(3) if flip else x, quarter_turns, dims=(2, 3))


@pytest.mark.parametrize("q", [0.1, 0.3, 0.55, 0.8])
def test_flip_and_quarter_turns_with_debug_percentile(q):
    x = _smooth_images()
    y = _pipe(xflip=1, rotate90=1)(x, debug_percentile=q)
    want = (math.floor(q * 2), math.floor(q * 4))
    errs = {(f, k): float((y - _dihedral(x, f, k)).abs().max()) for f in (0, 1) for k in range(4)}
    assert errs[want] < 0.02, errs
    assert all(e > 0.1 for key, e in errs.items() if key != want), errs


def test_random_blits_are_each_one_dihedral_image():
    x = _smooth_images(batch=16, seed=2)
    torch.manual_seed(1)
    y = _pipe(xflip=1, rotate90=1)(x)
    seen = set()
    for b in range(16):
        errs = {(f, k): float((y[b:b + 1] - _dihedral(x[b:b + 1], f, k)).abs().max()) for f in (0, 1) for k in range(4)}
        best = min(errs, key=errs.get)
        assert errs[best] < 0.02 and sorted(errs.values())[1] > 0.1
        seen.add(best)
    assert len(seen) >= 5


def test_blit_composition_flip_rotate_translate():
    x = _smooth_images(size=32)
    y = _pipe(**AUGPIPE_SPECS["blit"])(x, debug_percentile=0.8)  # flip, 3 quarter turns, shift round(0.6 * 4)
    want = _shift_reflect(_dihedral(x, 1, 3), 2, 2)
    assert float((y - want).abs().max()) < 0.02


def test_general_geometry_moves_content_and_keeps_constants():
    """An arbitrary rotation/scale of a constant image is the same constant (reflect padding, unit-DC filters)."""
    x = torch.full((2, 3, 16, 16), 0.37)
    torch.manual_seed(0)
    y = _pipe(**AUGPIPE_SPECS["geom"])(x)
    assert torch.allclose(y, x, atol=1e-5)
    z = _pipe(**AUGPIPE_SPECS["geom"])(_smooth_images(), debug_percentile=0.9)
    assert float((z - _smooth_images()).abs().max()) > 0.1


# Color: each transform alone, debug percentile q, against its closed form in float64.
def _erfinv(v: float) -> float:
    return float(torch.erfinv(torch.tensor(v, dtype=torch.float64)))


@pytest.mark.parametrize("q", [0.2, 0.7])
def test_brightness_and_contrast(q):
    x = _images().double()
    b = _erfinv(2 * q - 1) * 0.2
    c = 2 ** (_erfinv(2 * q - 1) * 0.5)
    y = _pipe(brightness=1)(x.float(), debug_percentile=q).double()
    assert torch.allclose(y, x + b, atol=1e-5)
    y = _pipe(contrast=1)(x.float(), debug_percentile=q).double()
    assert torch.allclose(y, x * c, atol=1e-5)
    y = _pipe(brightness=1, contrast=1)(x.float(), debug_percentile=q).double()  # brightness first
    assert torch.allclose(y, (x + b) * c, atol=1e-5)
    gray = x[:, :1]
    y = _pipe(brightness=1, contrast=1)(gray.float(), debug_percentile=q).double()
    assert y.shape == gray.shape and torch.allclose(y, (gray + b) * c, atol=1e-5)


def test_lumaflip_and_saturation():
    x = _images().double()
    mean = x.mean(dim=1, keepdim=True)
    y = _pipe(lumaflip=1)(x.float(), debug_percentile=0.75).double()  # reflection of the gray axis
    assert torch.allclose(y, x - 2 * mean, atol=1e-5)
    assert torch.equal(_pipe(lumaflip=1)(x.float(), debug_percentile=0.25), x.float())
    s = 2 ** (_erfinv(2 * 0.8 - 1) * 1.0)
    y = _pipe(saturation=1)(x.float(), debug_percentile=0.8).double()
    assert torch.allclose(y, mean + s * (x - mean), atol=1e-5)


def test_hue_rotation_by_a_third_turn_cycles_the_channels():
    """A 120-degree turn about the gray axis maps R -> G -> B -> R; a half turn is a reflection through it."""
    x = _images().double()
    y = _pipe(hue=1)(x.float(), debug_percentile=5 / 6).double()
    assert torch.allclose(y, x[:, [2, 0, 1]], atol=1e-5)
    y = _pipe(hue=1)(x.float(), debug_percentile=1 / 6).double()  # -120 degrees
    assert torch.allclose(y, x[:, [1, 2, 0]], atol=1e-5)
    y = _pipe(hue=1)(x.float(), debug_percentile=1.0).double()  # 180 degrees: mean + (mean - x) in chroma
    mean = x.mean(dim=1, keepdim=True)
    assert torch.allclose(y, 2 * mean - x, atol=1e-5)


def test_random_color_fires_with_probability_p():
    x = torch.zeros(4000, 3, 1, 1)
    torch.manual_seed(0)
    y = _pipe(0.3, brightness=1)(x)
    offsets = y[:, 0, 0, 0]
    assert torch.equal(y, offsets.reshape(-1, 1, 1, 1).expand_as(y))  # one offset per image, all channels
    fired = offsets != 0
    assert abs(float(fired.float().mean()) - 0.3) < 0.03
    assert abs(float(offsets[fired].std()) - 0.2) < 0.02


def test_color_rejects_two_channel_images():
    with pytest.raises(ValueError, match="RGB .3 channels. or L .1 channel."):
        _pipe(brightness=1)(_images(channels=2))


# Filtering and corruptions.
def _band_gains(q: float, bands) -> np.ndarray:
    """Per-band gains at debug percentile q: 2^(Phi^-1(q)) in the enabled bands, each power-normalized by
    sqrt(1 + w_i (t_i^2 - 1)) with the 1/f band powers w = (10, 1, 1, 1) / 13."""
    t = np.where(np.asarray(bands) > 0, 2 ** _erfinv(2 * q - 1), 1.0)
    w = np.array([10, 1, 1, 1]) / 13
    return t / np.prod(np.sqrt(1 + w * (t * t - 1)))


def test_band_filter_identity_and_dc_gain():
    x = _images(height=32, width=32)
    assert torch.allclose(_pipe(imgfilter=1)(x, debug_percentile=0.5), x, atol=1e-5)  # all gains 1
    q = 0.9
    t = 2 ** _erfinv(2 * q - 1)
    const = torch.full((1, 3, 32, 32), 0.5)
    # Only the lowest band passes DC (gain 1). The gain-weighted 1-D filter runs along rows and then columns,
    # so a constant image scales by g_0^2. Highest band boosted: g_0 = 1 / sqrt(1 + (t^2 - 1) / 13).
    y = _pipe(imgfilter=1, imgfilter_bands=[0, 0, 0, 1])(const, debug_percentile=q)
    assert torch.allclose(y, const / (1 + (t * t - 1) / 13), atol=1e-6)
    # Only the lowest band: g_0 = t / sqrt(1 + 10 (t^2 - 1) / 13).
    y = _pipe(imgfilter=1, imgfilter_bands=[1, 0, 0, 0])(const, debug_percentile=q)
    assert torch.allclose(y, const * t * t / (1 + 10 * (t * t - 1) / 13), atol=1e-6)


@pytest.mark.parametrize("bands", [(1, 1, 1, 1), (0, 1, 0, 1), (1, 0, 0, 0)])
def test_band_filter_matches_a_naive_2d_filter(bands):
    """Reflect-pad, then the full 2-D kernel k k^T (k = gains @ bank) applied by direct summation in float64."""
    q = 0.8
    x = _images(batch=2, channels=3, height=24, width=30, seed=3)
    y = _pipe(imgfilter=1, imgfilter_bands=list(bands))(x, debug_percentile=q).double().numpy()
    k = _band_gains(q, bands) @ augment.octave_filter_bank(augment.SYM2_LOWPASS)
    kernel, pad = np.outer(k, k), k.size // 2
    padded = np.pad(x.double().numpy(), [(0, 0), (0, 0), (pad, pad), (pad, pad)], mode="reflect")
    ref = np.zeros_like(y)
    for i in range(k.size):
        for j in range(k.size):
            ref += kernel[i, j] * padded[:, :, i:i + 24, j:j + 30]
    assert np.abs(y - ref).max() < 1e-5


def test_band_filter_needs_large_enough_images():
    with pytest.raises(ValueError, match="larger than 21x21"):
        _pipe(imgfilter=1)(_images(height=16, width=16))


def test_noise_std():
    x = torch.zeros(1, 3, 64, 64)
    torch.manual_seed(0)
    y = _pipe(noise=1)(x, debug_percentile=0.6)
    sigma = _erfinv(0.6) * 0.1
    assert abs(float(y.std()) - sigma) < 0.05 * sigma and abs(float(y.mean())) < 0.05 * sigma


@pytest.mark.parametrize("q", [0.2, 0.5, 0.9])
def test_cutout_matches_a_naive_mask(q):
    x = _images(height=12, width=20)
    y = _pipe(cutout=1, cutout_size=0.4)(x, debug_percentile=q)
    want = x.clone()
    for r in range(12):
        for c in range(20):
            if abs((c + 0.5) / 20 - q) < 0.2 and abs((r + 0.5) / 12 - q) < 0.2:
                want[:, :, r, c] = 0
    assert torch.equal(y, want)


# ---------------------------------------------------------------------------------------------------------------------
# Shapes, dtypes, determinism, gradients

@pytest.mark.parametrize("spec", ["bgc", "bgcfnc"])
@pytest.mark.parametrize("shape", [(3, 3, 32, 32), (2, 1, 32, 48), (1, 3, 24, 40)])
def test_shapes_dtypes_and_determinism(spec, shape):
    x = _images(*shape)
    pipe = _pipe(0.7, **AUGPIPE_SPECS[spec])
    torch.manual_seed(3)
    a = pipe(x)
    torch.manual_seed(3)
    b = pipe(x)
    torch.manual_seed(4)
    c = pipe(x)
    assert a.shape == x.shape and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="NCHW image tensor"):
        AugmentPipe(xflip=1)(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        _pipe(scale=1)(_images(), debug_percentile=0.0)


def test_gradients_flow_through_every_stage():
    x = _images(height=32, width=32).requires_grad_(True)
    torch.manual_seed(0)
    y = _pipe(1.0, **AUGPIPE_SPECS["bgcfnc"])(x)
    (g,) = torch.autograd.grad((y * torch.linspace(-1, 1, 32)).sum(), x)
    assert torch.isfinite(g).all() and float(g.abs().sum()) > 0


@pytest.fixture
def gradfix_on(monkeypatch):
    monkeypatch.setattr(grid_sample_gradfix, "enabled", True)


@pytest.mark.usefixtures("gradfix_on")
def test_double_backward_gradcheck():
    """First and second derivatives of the (random but reseeded) pipe in float64, against finite differences."""
    pipe = _pipe(1.0, **AUGPIPE_SPECS["bgc"])
    x = _images(batch=1, height=8, width=8, dtype=torch.float64).requires_grad_(True)

    def run(inp):
        torch.manual_seed(11)
        return pipe(inp)

    assert torch.autograd.gradcheck(run, (x,), atol=1e-6)
    assert torch.autograd.gradgradcheck(run, (x,), atol=1e-6)


@pytest.mark.usefixtures("gradfix_on")
def test_r1_penalty_through_the_pipe():
    """R1 = |d D(aug(x)) / dx|^2 needs the second derivative; its gradient w.r.t. D's weights matches a finite
    difference."""
    torch.manual_seed(0)
    weight = (torch.randn(4, 3, 3, 3, dtype=torch.float64) * 0.3).requires_grad_(True)
    x = _images(batch=2, height=8, width=8, dtype=torch.float64).requires_grad_(True)
    pipe = _pipe(1.0, **AUGPIPE_SPECS["bgc"])

    def r1(w):
        torch.manual_seed(21)
        logits = torch.tanh(F.conv2d(pipe(x), w)).square().sum()
        (g,) = torch.autograd.grad(logits, x, create_graph=True)
        return g.square().sum()

    value = r1(weight)
    (gw,) = torch.autograd.grad(value, weight)
    assert torch.isfinite(gw).all() and float(gw.abs().sum()) > 0
    direction = torch.randn_like(weight)
    eps = 1e-6
    fd = (r1(weight.detach() + eps * direction) - r1(weight.detach() - eps * direction)).detach() / (2 * eps)
    assert float((gw * direction).sum()) == pytest.approx(float(fd), rel=1e-5)
