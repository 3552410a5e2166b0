"""torch_utils.ops.upfirdn2d against naive float64 references (forward, 1st and 2nd order gradients)."""

import numpy as np
import pytest
import torch
from naive_ops import filter_2d, naive_upfirdn2d

from torch_utils.ops import conv2d_gradfix, upfirdn2d

# --------------------------------------------------------------------------------------------
# setup_filter


def test_setup_filter_rules():
    taps = np.array([1.0, 3.0, 3.0, 1.0])
    f = upfirdn2d.setup_filter(taps)
    assert f.dtype == torch.float32 and f.shape == (4, 4)  # < 8 taps -> 2D outer product
    np.testing.assert_allclose(f.numpy(), np.outer(taps, taps) / np.outer(taps, taps).sum(), rtol=1e-6)

    eight = np.arange(1.0, 9.0)
    f = upfirdn2d.setup_filter(eight)
    assert f.shape == (8,)  # >= 8 taps -> separable
    np.testing.assert_allclose(f.numpy(), eight / eight.sum(), rtol=1e-6)
    assert upfirdn2d.setup_filter(eight, separable=False).shape == (8, 8)
    assert upfirdn2d.setup_filter(taps, separable=True).shape == (4,)

    raw = upfirdn2d.setup_filter([1, 2], normalize=False)
    np.testing.assert_array_equal(raw.numpy(), [[1, 2], [2, 4]])
    flipped = upfirdn2d.setup_filter([[1, 2], [3, 4]], normalize=False, flip_filter=True)
    np.testing.assert_array_equal(flipped.numpy(), [[4, 3], [2, 1]])

    # gain scales the 2D response: 2D filters by gain, separable taps by sqrt(gain) each.
    np.testing.assert_allclose(upfirdn2d.setup_filter([1, 2], normalize=False, gain=4).numpy(),
                               [[4, 8], [8, 16]])
    np.testing.assert_allclose(upfirdn2d.setup_filter([1, 2], normalize=False, gain=4, separable=True).numpy(),
                               [2, 4])

    identity = upfirdn2d.setup_filter(None)
    assert identity.shape == (1, 1) and identity.item() == 1
    assert upfirdn2d.setup_filter(5.0).shape == (1, 1)
    assert upfirdn2d.setup_filter(torch.tensor([[2.0]])).item() == 1
    with pytest.raises(AssertionError):
        upfirdn2d.setup_filter(np.zeros([2, 2, 2]))


# --------------------------------------------------------------------------------------------
# Random cases


def _random_case(rng: np.random.RandomState):
    """Random input, filter kind, factors and padding (often negative) with a non-empty output."""
    while True:
        x = torch.as_tensor(rng.randn(rng.randint(1, 3), rng.randint(1, 4), rng.randint(3, 8), rng.randint(3, 8)))
        kind = rng.choice(["separable", "full", "none"])
        if kind == "separable":
            f = torch.as_tensor(rng.randn(rng.randint(1, 6)), dtype=torch.float32)
        elif kind == "full":
            f = torch.as_tensor(rng.randn(rng.randint(1, 5), rng.randint(1, 5)), dtype=torch.float32)
        else:
            f = None
        up = [int(rng.randint(1, 4)), int(rng.randint(1, 4))]
        down = [int(rng.randint(1, 4)), int(rng.randint(1, 4))]
        pad = [int(p) for p in rng.randint(-2, 4, size=4)]
        kw = filter_2d(f).shape[1]
        kh = filter_2d(f).shape[0]
        big_w = x.shape[3] * up[0] + pad[0] + pad[1]
        big_h = x.shape[2] * up[1] + pad[2] + pad[3]
        if big_w - kw >= 0 and big_h - kh >= 0 and big_w > 0 and big_h > 0:
            return dict(x=x, f=f, up=up, down=down, padding=pad, flip_filter=bool(rng.rand() < 0.5),
                        gain=float(rng.choice([1.0, 4.0, 0.25])))


def _naive(case, x=None):
    """Naive result for a case (separable filters become their outer product)."""
    return naive_upfirdn2d(case["x"] if x is None else x, filter_2d(case["f"]), up=case["up"], down=case["down"],
                           pad=case["padding"], gain=case["gain"], correlate=case["flip_filter"])


def _run(case, x=None, impl="ref"):
    return upfirdn2d.upfirdn2d(case["x"] if x is None else x, case["f"], up=case["up"], down=case["down"],
                               padding=case["padding"], flip_filter=case["flip_filter"], gain=case["gain"],
                               impl=impl)


def _first_and_second_grads(fn, x, seed):
    """grad of a nonlinear loss of fn(x), and the gradient of <that grad, v> (second order)."""
    gen = torch.Generator().manual_seed(seed)
    x = x.detach().requires_grad_(True)
    y = fn(x)
    r = torch.randn(y.shape, generator=gen, dtype=y.dtype)
    v = torch.randn(x.shape, generator=gen, dtype=x.dtype)
    g, = torch.autograd.grad((y.pow(2) * r).sum(), x, create_graph=True)
    h, = torch.autograd.grad((g * v).sum(), x)
    return y.detach(), g.detach(), h


@pytest.mark.parametrize("seed", range(12))
def test_upfirdn2d_matches_naive(seed):
    case = _random_case(np.random.RandomState(seed))
    ref_y, ref_g, ref_h = _first_and_second_grads(lambda x: _naive(case, x), case["x"], seed)
    for impl in ["ref", "cuda"]:  # 'cuda' falls back to the reference path on CPU tensors
        y, g, h = _first_and_second_grads(lambda x: _run(case, x, impl=impl), case["x"], seed)
        assert y.shape == ref_y.shape and y.dtype == torch.float64
        torch.testing.assert_close(y, ref_y, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(g, ref_g, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(h, ref_h, rtol=1e-10, atol=1e-12)


def test_upfirdn2d_with_custom_conv_matches_naive(monkeypatch):
    monkeypatch.setattr(conv2d_gradfix, "enabled", True)
    case = _random_case(np.random.RandomState(100))
    ref = _first_and_second_grads(lambda x: _naive(case, x), case["x"], 0)
    ours = _first_and_second_grads(lambda x: _run(case, x), case["x"], 0)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_upfirdn2d_gradcheck_and_gradgradcheck():
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    f = upfirdn2d.setup_filter([1, 2, 1], normalize=False)
    fn = lambda x: upfirdn2d.upfirdn2d(x, f, up=2, down=[1, 2], padding=[1, -1, 0, 2])  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_upfirdn2d_argument_forms_are_equivalent():
    x = torch.randn(1, 1, 5, 5, dtype=torch.float64)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    torch.testing.assert_close(upfirdn2d.upfirdn2d(x, f, up=2, down=3, padding=1),
                               upfirdn2d.upfirdn2d(x, f, up=[2, 2], down=[3, 3], padding=[1, 1, 1, 1]), rtol=0, atol=0)
    torch.testing.assert_close(upfirdn2d.upfirdn2d(x, f, padding=[2, 1]),
                               upfirdn2d.upfirdn2d(x, f, padding=[2, 2, 1, 1]), rtol=0, atol=0)
    torch.testing.assert_close(upfirdn2d.upfirdn2d(x, None, padding=[1, 0, 0, 2]),
                               torch.nn.functional.pad(x, [1, 0, 0, 2]), rtol=0, atol=0)


def test_upfirdn2d_rejects_bad_filter():
    x = torch.randn(1, 1, 4, 4)
    with pytest.raises(AssertionError):
        upfirdn2d.upfirdn2d(x, torch.ones(2, 2, dtype=torch.float64))
    with pytest.raises(AssertionError):
        upfirdn2d.upfirdn2d(x, torch.ones(2, 2), impl="triton")


# --------------------------------------------------------------------------------------------
# Wrappers: the padding they choose, pinned by literal values and known equivalences.

F4 = [1, 3, 3, 1]
F3 = [1, 2, 1]

# wrapper, taps, factor [x, y], expected base padding [x0, x1, y0, y1], naive up, naive down, extra gain
WRAPPER_TABLE = [
    ("filter2d", F4, None, [2, 1, 2, 1], (1, 1), (1, 1), 1),
    ("filter2d", F3, None, [1, 1, 1, 1], (1, 1), (1, 1), 1),
    ("upsample2d", F4, [2, 2], [2, 1, 2, 1], (2, 2), (1, 1), 4),
    ("upsample2d", F3, [2, 2], [2, 0, 2, 0], (2, 2), (1, 1), 4),
    ("upsample2d", F4, [3, 2], [3, 0, 2, 1], (3, 2), (1, 1), 6),
    ("upsample2d", F3, [3, 1], [2, 0, 1, 1], (3, 1), (1, 1), 3),
    ("downsample2d", F4, [2, 2], [1, 1, 1, 1], (1, 1), (2, 2), 1),
    ("downsample2d", F4, [2, 3], [1, 1, 1, 0], (1, 1), (2, 3), 1),
    ("downsample2d", F3, [3, 2], [0, 0, 1, 0], (1, 1), (3, 2), 1),
    ("downsample2d", F3, [2, 3], [1, 0, 0, 0], (1, 1), (2, 3), 1),
]


@pytest.mark.parametrize("name,taps,factor,base,up,down,gain_mult", WRAPPER_TABLE)
@pytest.mark.parametrize("user_pad,extra", [(0, (0, 0, 0, 0)), ([1, 0, -1, 2], (1, 0, -1, 2)), ([1, 2], (1, 1, 2, 2))])
def test_wrappers_padding(name, taps, factor, base, up, down, gain_mult, user_pad, extra):
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    f = upfirdn2d.setup_filter(taps)
    kwargs = dict(padding=user_pad, flip_filter=True, gain=2)
    if factor is not None:
        kwargs["up" if name == "upsample2d" else "down"] = factor
    ours = getattr(upfirdn2d, name)(x, f, **kwargs)
    pad = [b + e for b, e in zip(base, extra)]
    ref = naive_upfirdn2d(x, filter_2d(f), up=up, down=down, pad=pad, gain=2 * gain_mult, correlate=True)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)


def test_wrappers_default_shapes_and_classic_equivalences():
    x = torch.randn(2, 3, 8, 6, dtype=torch.float64)
    box = upfirdn2d.setup_filter([1, 1])
    torch.testing.assert_close(upfirdn2d.downsample2d(x, box), torch.nn.functional.avg_pool2d(x, 2))
    nearest = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    torch.testing.assert_close(upfirdn2d.upsample2d(x, box), nearest)
    f = upfirdn2d.setup_filter(F4)
    assert upfirdn2d.filter2d(x, f).shape == x.shape
    assert upfirdn2d.upsample2d(x, f, up=[2, 3]).shape == (2, 3, 24, 12)
    assert upfirdn2d.downsample2d(x, f, down=[3, 2]).shape == (2, 3, 4, 2)
    # DC is preserved away from the borders.
    ones = torch.ones(1, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(upfirdn2d.upsample2d(ones, f)[..., 3:-3, 3:-3], torch.ones(1, 1, 10, 10,
                                                                                          dtype=torch.float64))


# --------------------------------------------------------------------------------------------
# CUDA-path autograd functions, driven on CPU by a Python stand-in for the compiled plugin.

class FakeUpfirdn2dPlugin:
    """Implements the plugin entry point's contract with the naive reference."""

    calls = 0

    @classmethod
    def upfirdn2d(cls, x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain):
        assert f.ndim == 2 and f.dtype == torch.float32 and isinstance(flip, bool) and isinstance(gain, float)
        cls.calls += 1
        return naive_upfirdn2d(x, f, up=(upx, upy), down=(downx, downy), pad=(padx0, padx1, pady0, pady1),
                               gain=gain, correlate=flip)


@pytest.mark.parametrize("seed", range(6))
def test_cuda_autograd_function_with_fake_plugin(seed, monkeypatch):
    monkeypatch.setattr(upfirdn2d, "_plugin", FakeUpfirdn2dPlugin)
    case = _random_case(np.random.RandomState(1000 + seed))
    cfg = upfirdn2d._cuda_config(case["up"], case["down"], case["padding"], case["flip_filter"], case["gain"])
    before = FakeUpfirdn2dPlugin.calls
    ours = _first_and_second_grads(lambda x: upfirdn2d._Upfirdn2dCuda.apply(x, case["f"], cfg), case["x"], seed)
    assert FakeUpfirdn2dPlugin.calls > before
    ref = _first_and_second_grads(lambda x: _run(case, x), case["x"], seed)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_cuda_autograd_function_gradgradcheck(monkeypatch):
    monkeypatch.setattr(upfirdn2d, "_plugin", FakeUpfirdn2dPlugin)
    f = upfirdn2d.setup_filter([1, 3, 3, 1], separable=True)
    cfg = upfirdn2d._cuda_config(2, [1, 2], [2, 1, -1, 1], False, 4)
    x = torch.randn(1, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    fn = lambda x: upfirdn2d._Upfirdn2dCuda.apply(x, f, cfg)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_cpu_tensors_never_touch_the_plugin(monkeypatch):
    def fail():
        raise AssertionError("plugin looked up for a CPU tensor")
    monkeypatch.setattr(upfirdn2d, "_init", fail)
    x = torch.randn(1, 1, 4, 4)
    upfirdn2d.upsample2d(x, upfirdn2d.setup_filter(F4))
