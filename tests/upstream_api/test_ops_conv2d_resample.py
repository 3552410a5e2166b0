"""torch_utils.ops.conv2d_resample against the naive chain it stands for, on every fast path."""

import numpy as np
import pytest
import torch
from naive_ops import filter_2d, naive_conv2d, naive_upfirdn2d

from torch_utils.ops import conv2d_gradfix, conv2d_resample, upfirdn2d


def naive_conv2d_resample(x, w, f, up, down, padding, groups, flip_weight, flip_filter):
    """Spec: zero-insert by `up` and pad (padding + the upsample2d/downsample2d alignment pads),
    filter with f (gain up**2, only when up > 1), convolve with w, then filter with f and keep every
    down-th sample (only when down > 1)."""
    kw, kh = (1, 1) if f is None else (f.shape[-1], f.shape[0])
    px0, px1, py0, py1 = padding
    if up > 1:
        px0, px1 = px0 + (kw + up - 1) // 2, px1 + (kw - up) // 2
        py0, py1 = py0 + (kh + up - 1) // 2, py1 + (kh - up) // 2
    if down > 1:
        px0, px1 = px0 + (kw - down + 1) // 2, px1 + (kw - down) // 2
        py0, py1 = py0 + (kh - down + 1) // 2, py1 + (kh - down) // 2
    pre = filter_2d(f) if up > 1 else filter_2d(None)
    x = naive_upfirdn2d(x, pre, up=(up, up), pad=(px0, px1, py0, py1), gain=up ** 2, correlate=flip_filter)
    x = naive_conv2d(x, w if flip_weight else w.flip([2, 3]), groups=groups)
    if down > 1:
        x = naive_upfirdn2d(x, filter_2d(f), down=(down, down), correlate=flip_filter)
    return x


PATHS = {  # name -> (kernel size, up, down, padding generator)
    "1x1_down": (1, 1, 2, "any"),
    "1x1_up": (1, 2, 1, "any"),
    "strided_down": (3, 1, 2, "any"),
    "transposed_up": (3, 2, 1, "any"),
    "transposed_up_down": (3, 2, 2, "any"),
    "up3_even_kernel": (2, 3, 1, "any"),
    "plain": (3, 1, 1, "symmetric"),
    "general": (3, 1, 1, "asymmetric"),
}


def _case(path, seed):
    rng = np.random.RandomState(seed)
    k, up, down, pad_kind = PATHS[path]
    groups = int(rng.randint(1, 3))
    cpg = int(rng.randint(1, 3))
    opg = int(rng.randint(1, 3))
    x = torch.as_tensor(rng.randn(int(rng.randint(1, 3)), groups * cpg, int(rng.randint(4, 7)), int(rng.randint(4, 7))))
    w = torch.as_tensor(rng.randn(groups * opg, cpg, k, k if rng.rand() < 0.5 else max(k - 1, 1)))
    # Taps are multiples of 1/8 so that scaling them by the gain is exact in float32.
    kind = rng.choice(["separable", "full", "none"] if up > 1 or down > 1 else ["full"])
    if kind == "separable":
        f = torch.as_tensor(rng.randint(1, 8, size=int(rng.randint(2, 5))) / 8, dtype=torch.float32)
    elif kind == "full":
        f = torch.as_tensor(rng.randint(-7, 8, size=(int(rng.randint(1, 4)), int(rng.randint(1, 4)))) / 8,
                            dtype=torch.float32)
    else:
        f = None
    if pad_kind == "symmetric":
        padding = [int(rng.randint(0, 3))] * 2
        padding = [padding[0], padding[0], padding[1], padding[1]]
    elif pad_kind == "asymmetric":
        padding = [1, 0, 2, -1] if rng.rand() < 0.5 else [-1, 2, 0, 1]
    else:
        padding = [int(p) for p in rng.randint(-1, 3, size=4)]
    return dict(x=x, w=w, f=f, up=up, down=down, padding=padding, groups=groups,
                flip_weight=bool(rng.rand() < 0.5), flip_filter=bool(rng.rand() < 0.5))


def _grads(fn, x, w, seed):
    """Output, first-order grads (x, w) of a nonlinear loss, second-order grads of <g, v>."""
    gen = torch.Generator().manual_seed(seed)
    x = x.detach().requires_grad_(True)
    w = w.detach().requires_grad_(True)
    y = fn(x, w)
    r = torch.randn(y.shape, generator=gen, dtype=y.dtype)
    gx, gw = torch.autograd.grad((y.pow(2) * r).sum(), [x, w], create_graph=True)
    vx = torch.randn(x.shape, generator=gen, dtype=x.dtype)
    vw = torch.randn(w.shape, generator=gen, dtype=w.dtype)
    hx, hw = torch.autograd.grad((gx * vx).sum() + (gw * vw).sum(), [x, w])
    return [t.detach() for t in (y, gx, gw, hx, hw)]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("path", list(PATHS))
def test_conv2d_resample_matches_naive_chain(path, seed):
    c = _case(path, seed)
    args = dict(f=c["f"], up=c["up"], down=c["down"], groups=c["groups"], flip_weight=c["flip_weight"],
                flip_filter=c["flip_filter"])
    ours = _grads(lambda x, w: conv2d_resample.conv2d_resample(x, w, padding=c["padding"], **args), c["x"], c["w"],
                  seed)
    ref = _grads(lambda x, w: naive_conv2d_resample(x, w, padding=c["padding"], **args), c["x"], c["w"], seed)
    assert ours[0].shape == ref[0].shape
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("path", ["transposed_up_down", "strided_down"])
def test_conv2d_resample_with_custom_conv_op(path, monkeypatch):
    monkeypatch.setattr(conv2d_gradfix, "enabled", True)
    c = _case(path, 5)
    args = dict(f=c["f"], up=c["up"], down=c["down"], groups=c["groups"], flip_weight=c["flip_weight"],
                flip_filter=c["flip_filter"], padding=c["padding"])
    ours = _grads(lambda x, w: conv2d_resample.conv2d_resample(x, w, **args), c["x"], c["w"], 3)
    ref = _grads(lambda x, w: naive_conv2d_resample(x, w, **args), c["x"], c["w"], 3)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_conv2d_resample_padding_forms_and_shapes():
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    assert conv2d_resample.conv2d_resample(x, w, padding=1).shape == (2, 6, 8, 8)
    assert conv2d_resample.conv2d_resample(x, w, f=f, up=2, padding=1).shape == (2, 6, 16, 16)
    assert conv2d_resample.conv2d_resample(x, w, f=f, down=2, padding=1).shape == (2, 6, 4, 4)
    torch.testing.assert_close(conv2d_resample.conv2d_resample(x, w, f=f, up=2, padding=[1, 2]),
                               conv2d_resample.conv2d_resample(x, w, f=f, up=2, padding=[1, 1, 2, 2]), rtol=0, atol=0)
    # The classic StyleGAN2 equivalences: up = upsample2d then conv; plain = torch conv2d.
    torch.testing.assert_close(conv2d_resample.conv2d_resample(x, w, f=f, up=2, padding=1),
                               torch.nn.functional.conv2d(upfirdn2d.upsample2d(x, f, padding=1), w),
                               rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(conv2d_resample.conv2d_resample(x, w, padding=1, flip_weight=False),
                               torch.nn.functional.conv2d(x, w.flip([2, 3]), padding=1), rtol=1e-12, atol=1e-12)


def test_conv2d_resample_validates_arguments():
    x = torch.randn(1, 2, 4, 4)
    with pytest.raises(AssertionError):
        conv2d_resample.conv2d_resample(x, torch.randn(2, 2, 3, 3, dtype=torch.float64))
    with pytest.raises(AssertionError):
        conv2d_resample.conv2d_resample(x, torch.randn(2, 2, 3, 3), f=torch.ones(2, 2, dtype=torch.float64), up=2)
    with pytest.raises(AssertionError):
        conv2d_resample.conv2d_resample(x, torch.randn(2, 2, 3, 3), up=0)
