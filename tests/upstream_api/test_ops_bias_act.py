"""torch_utils.ops.bias_act against direct formulas (forward, 1st and 2nd order gradients)."""

import math

import numpy as np
import pytest
import torch

from torch_utils.ops import bias_act

SELU_SCALE = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717


def _sigmoid(z, _alpha=None):
    return 1 / (1 + torch.exp(-z))


# Direct formulas: activation, its first derivative and its second derivative.
FORMULAS = {
    "linear": (lambda z, a: z, lambda z, a: torch.ones_like(z), lambda z, a: torch.zeros_like(z)),
    "relu": (lambda z, a: torch.where(z > 0, z, 0 * z), lambda z, a: (z > 0).double(),
             lambda z, a: torch.zeros_like(z)),
    "lrelu": (lambda z, a: torch.where(z > 0, z, a * z), lambda z, a: torch.where(z > 0, 1.0, a).double(),
              lambda z, a: torch.zeros_like(z)),
    "tanh": (lambda z, a: (torch.exp(2 * z) - 1) / (torch.exp(2 * z) + 1), lambda z, a: 1 / torch.cosh(z) ** 2,
             lambda z, a: -2 * torch.sinh(z) / torch.cosh(z) ** 3),
    "sigmoid": (_sigmoid, lambda z, a: _sigmoid(z) * (1 - _sigmoid(z)),
                lambda z, a: _sigmoid(z) * (1 - _sigmoid(z)) * (1 - 2 * _sigmoid(z))),
    "elu": (lambda z, a: torch.where(z >= 0, z, torch.exp(z) - 1), lambda z, a: torch.where(z >= 0, 1.0, torch.exp(z)),
            lambda z, a: torch.where(z >= 0, 0.0, torch.exp(z))),
    "selu": (lambda z, a: SELU_SCALE * torch.where(z >= 0, z, SELU_ALPHA * (torch.exp(z) - 1)),
             lambda z, a: SELU_SCALE * torch.where(z >= 0, 1.0, SELU_ALPHA * torch.exp(z)),
             lambda z, a: SELU_SCALE * torch.where(z >= 0, 0.0, SELU_ALPHA * torch.exp(z))),
    "softplus": (lambda z, a: torch.log(1 + torch.exp(z)), _sigmoid,
                 lambda z, a: _sigmoid(z) * (1 - _sigmoid(z))),
    "swish": (lambda z, a: z * _sigmoid(z), lambda z, a: _sigmoid(z) * (1 + z * (1 - _sigmoid(z))),
              lambda z, a: _sigmoid(z) * (1 - _sigmoid(z)) * (2 + z * (1 - 2 * _sigmoid(z)))),
}
DEFAULTS = {  # name -> (alpha, gain), as the upstream table defines them
    "linear": (0, 1), "relu": (0, math.sqrt(2)), "lrelu": (0.2, math.sqrt(2)), "tanh": (0, 1), "sigmoid": (0, 1),
    "elu": (0, 1), "selu": (0, 1), "softplus": (0, 1), "swish": (0, math.sqrt(2)),
}
SMOOTH = ["tanh", "sigmoid", "elu", "selu", "softplus", "swish"]


def _grad_rtol(act):
    # torch's leaky_relu backward rounds the slope to float32 (so does upstream's reference path).
    return 1e-7 if act == "lrelu" else 1e-10


def test_activation_table():
    assert set(bias_act.activation_funcs) == set(FORMULAS)
    for name, (alpha, gain) in DEFAULTS.items():
        spec = bias_act.activation_funcs[name]
        assert spec.def_alpha == alpha and spec.def_gain == pytest.approx(gain, rel=1e-15)
        assert spec.has_2nd_grad == (name in SMOOTH)
    assert [bias_act.activation_funcs[n].cuda_idx for n in FORMULAS] == list(range(1, 10))


def _expected(x, b, dim, act, alpha, gain, clamp):
    """Direct evaluation of the forward value and of d/dz (z = x + b), both after gain and clamp."""
    d_alpha, d_gain = DEFAULTS[act]
    alpha = d_alpha if alpha is None else alpha
    gain = d_gain if gain is None else gain
    z = x if b is None else x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    fn, d1, d2 = FORMULAS[act]
    y = fn(z, alpha) * gain
    inside = torch.ones_like(y, dtype=torch.bool) if clamp is None else (y.abs() < clamp)
    if clamp is not None:
        y = y.clamp(-clamp, clamp)
    return y, d1(z, alpha) * gain * inside, d2(z, alpha) * gain * inside


def _cases():
    rng = np.random.RandomState(0)
    for act in FORMULAS:
        for clamp in [None, 0.7]:
            seed = int(rng.randint(1 << 30))
            shape = [int(s) for s in rng.randint(1, 5, size=rng.randint(1, 5))]
            dim = int(rng.randint(len(shape)))
            with_bias = bool(rng.rand() < 0.7)
            alpha = None if rng.rand() < 0.5 else 0.3
            gain = None if rng.rand() < 0.5 else 1.5
            yield seed, act, shape, dim, with_bias, alpha, gain, clamp


@pytest.mark.parametrize("seed,act,shape,dim,with_bias,alpha,gain,clamp", list(_cases()))
@pytest.mark.parametrize("impl", ["ref", "cuda"])
def test_bias_act_matches_formulas(impl, seed, act, shape, dim, with_bias, alpha, gain, clamp):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 2).requires_grad_(True)
    b = torch.randn(shape[dim], generator=gen, dtype=torch.float64).requires_grad_(True) if with_bias else None
    y = bias_act.bias_act(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp, impl=impl)
    y_ref, d1, d2 = _expected(x.detach(), None if b is None else b.detach(), dim, act, alpha, gain, clamp)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)

    # First order: d/dx <y, r> = r * f'(z) * gain (zero where clamped); bias gets its reduction.
    r = torch.randn(shape, generator=gen, dtype=torch.float64)
    inputs = [x] + ([b] if with_bias else [])
    grads = torch.autograd.grad((y * r).sum(), inputs, create_graph=True)
    torch.testing.assert_close(grads[0], r * d1, rtol=_grad_rtol(act), atol=1e-12)
    if with_bias:
        per_elem = (r * d1).movedim(dim, 0).reshape(shape[dim], -1)
        torch.testing.assert_close(grads[1], per_elem.sum(1), rtol=_grad_rtol(act), atol=1e-12)

    # Second order: d/dx <grad_x, v> = v * r * f''(z) * gain.
    if grads[0].requires_grad:
        v = torch.randn(shape, generator=gen, dtype=torch.float64)
        h, = torch.autograd.grad((grads[0] * v).sum(), x, allow_unused=True)
        h = torch.zeros_like(x) if h is None else h
        torch.testing.assert_close(h, v * r * d2, rtol=1e-9, atol=1e-12)


def test_bias_act_defaults_and_clamp_zero():
    x = torch.randn(3, 4, 2, dtype=torch.float64)
    torch.testing.assert_close(bias_act.bias_act(x), x, rtol=0, atol=0)
    torch.testing.assert_close(bias_act.bias_act(x, act="lrelu"),
                               torch.nn.functional.leaky_relu(x, 0.2) * math.sqrt(2), rtol=1e-15, atol=0)
    assert bias_act.bias_act(x, act="relu", clamp=0).abs().max() == 0
    with pytest.raises(AssertionError):
        bias_act.bias_act(x, clamp=-1)
    with pytest.raises(KeyError):
        bias_act.bias_act(x, act="gelu")
    with pytest.raises(AssertionError):
        bias_act.bias_act(x, torch.zeros(5, dtype=torch.float64))


@pytest.mark.parametrize("act", ["lrelu", "swish"])
def test_bias_act_gradgradcheck(act):
    x = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    fn = lambda x, b: bias_act.bias_act(x, b, act=act, gain=1.3, clamp=2.5)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


# --------------------------------------------------------------------------------------------
# CUDA-path autograd functions, driven on CPU by a Python stand-in for the compiled plugin.

class FakeBiasActPlugin:
    """Implements the plugin entry point's contract (grad = 0, 1, 2) with the direct formulas.

    grad=0: y = clamp(f(x + b) * gain). grad=1: x is dy; returns dy * f'(z) * gain. grad=2: x is
    d_dx; returns d_dx * f''(z) * gain * dy. In modes 1/2 z is recovered from xref (+ b) for
    activations that keep x and from yref / gain otherwise; positions where |yref| >= clamp get 0.
    """

    calls = 0
    NAMES = {spec.cuda_idx: name for name, spec in bias_act.activation_funcs.items()}
    INVERSE = {  # z from y (enough to know the derivative) for activations that only keep y
        "relu": lambda y, a: y, "lrelu": lambda y, a: y, "tanh": torch.atanh, "elu": lambda y, a: torch.where(
            y >= 0, y, torch.log1p(y)),
        "sigmoid": lambda y, a: torch.log(y / (1 - y)), "softplus": lambda y, a: torch.log(torch.expm1(y)),
        "selu": lambda y, a: torch.where(y >= 0, y / SELU_SCALE, torch.log1p(y / (SELU_SCALE * SELU_ALPHA))),
    }

    @classmethod
    def bias_act(cls, x, b, xref, yref, dy, grad, dim, act, alpha, gain, clamp):
        cls.calls += 1
        name = cls.NAMES[act]
        fn, d1, d2 = FORMULAS[name]
        bias = 0 if b.numel() == 0 else b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
        if grad == 0:
            y = fn(x + bias, alpha) * gain
            return y.clamp(-clamp, clamp) if clamp >= 0 else y
        if xref.numel():
            z = xref + bias
        elif name == "linear":
            z = torch.zeros_like(x)
        else:
            z = cls.INVERSE[name](yref / gain, alpha)
        out = x * (d1 if grad == 1 else d2)(z, alpha) * gain * (dy if grad == 2 else 1)
        if clamp >= 0:
            y_ref = fn(z, alpha) * gain if xref.numel() else yref if yref.numel() else torch.zeros_like(x)
            out = torch.where(y_ref.abs() < clamp, out, torch.zeros_like(out))
        return out


def _fake_cuda(x, b, dim, act, alpha, gain, clamp):
    spec = bias_act.activation_funcs[act]
    alpha = float(spec.def_alpha if alpha is None else alpha)
    gain = float(spec.def_gain if gain is None else gain)
    return bias_act._BiasActCuda.apply(x, b, (dim, act, alpha, gain, -1.0 if clamp is None else float(clamp)))


@pytest.mark.parametrize("act", list(FORMULAS))
@pytest.mark.parametrize("clamp", [None, 0.9])
def test_cuda_autograd_function_with_fake_plugin(act, clamp, monkeypatch):
    monkeypatch.setattr(bias_act, "_plugin", FakeBiasActPlugin)
    gen = torch.Generator().manual_seed(7)
    x = (torch.randn(2, 3, 4, 2, generator=gen, dtype=torch.float64) * 1.5).contiguous(
        memory_format=torch.channels_last)
    b = torch.randn(3, generator=gen, dtype=torch.float64)
    r = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    v = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    w = torch.randn(x.shape, generator=gen, dtype=torch.float64)

    def evaluate(fn):
        xs = x.detach().clone().requires_grad_(True)
        bs = b.detach().clone().requires_grad_(True)
        y = fn(xs, bs, 1, act, None, None, clamp)
        gx, gb = torch.autograd.grad((y * r).sum(), [xs, bs], create_graph=True)
        second = (gx * v).sum() + (gb * w[0, :, 0, 0]).sum()
        if second.requires_grad:  # second order w.r.t. x and b
            hx, hb = torch.autograd.grad(second, [xs, bs], allow_unused=True, materialize_grads=True)
        else:  # a path whose gradient is a constant mask
            hx, hb = torch.zeros_like(xs), torch.zeros_like(bs)
        return [t.detach() for t in (y, gx, gb, hx, hb)]

    before = FakeBiasActPlugin.calls
    ours = evaluate(_fake_cuda)
    assert FakeBiasActPlugin.calls > before
    ref = evaluate(lambda *a: bias_act._bias_act_ref(*a))
    for a, b_ in zip(ours, ref):
        torch.testing.assert_close(a, b_, rtol=max(_grad_rtol(act), 1e-9), atol=1e-11)


@pytest.mark.parametrize("act", ["tanh", "lrelu"])
def test_cuda_autograd_function_gradgradcheck(act, monkeypatch):
    monkeypatch.setattr(bias_act, "_plugin", FakeBiasActPlugin)
    x = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    fn = lambda x, b: _fake_cuda(x, b, 1, act, None, 1.2, 1.5)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


def test_cpu_tensors_never_touch_the_plugin(monkeypatch):
    def fail():
        raise AssertionError("plugin looked up for a CPU tensor")
    monkeypatch.setattr(bias_act, "_init", fail)
    bias_act.bias_act(torch.randn(2, 3), torch.randn(3), act="lrelu")
