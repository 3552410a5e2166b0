"""bias_act: bias, activation, gain and clamp in one op, with gradients of any order.

Specification: docs/architecture-ops.md, section 3. Three implementations of the same function:
- `_bias_act_ref`: plain PyTorch ops and autograd (impl='ref', and whatever the others do not cover);
- `_BiasActCuda`: the compiled `bias_act_plugin` (impl='cuda', CUDA tensors, when it builds);
- `_BiasActTorch`: linear/relu/lrelu fused in one buffer, for impl='cuda' without the plugin (e.g. CPU).
The plugin is self-checked against `_bias_act_ref` on first use per device (self_check.py; cases at the end).
"""

from __future__ import annotations

import os
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .. import misc
from . import self_check


class ActivationSpec(NamedTuple):
    """An activation (official field names): `func(x, alpha=...)`, default alpha and gain, plugin id, which
    forward tensor its derivative is computed from ('x' input, 'y' output, '' none), nonzero 2nd derivative."""
    func: Callable
    def_alpha: float
    def_gain: float
    cuda_idx: int
    ref: str
    has_2nd_grad: bool


_ACTIVATIONS = (
    # name       function                                               alpha gain        id ref  2nd
    ("linear",   lambda x, **_: x,                                      0,    1,          1, "",  False),
    ("relu",     lambda x, **_: F.relu(x),                              0,    np.sqrt(2), 2, "y", False),
    ("lrelu",    lambda x, alpha, **_: F.leaky_relu(x, alpha),          0.2,  np.sqrt(2), 3, "y", False),
    ("tanh",     lambda x, **_: torch.tanh(x),                          0,    1,          4, "y", True),
    ("sigmoid",  lambda x, **_: torch.sigmoid(x),                       0,    1,          5, "y", True),
    ("elu",      lambda x, **_: F.elu(x),                               0,    1,          6, "y", True),
    ("selu",     lambda x, **_: F.selu(x),                              0,    1,          7, "y", True),
    ("softplus", lambda x, **_: F.softplus(x),                          0,    1,          8, "y", True),
    ("swish",    lambda x, **_: torch.sigmoid(x) * x,                   0,    np.sqrt(2), 9, "x", True),
)
activation_funcs = {row[0]: ActivationSpec(*row[1:]) for row in _ACTIVATIONS}

# ---------------------------------------------------------------------------------------------
# The compiled plugin: built or loaded on first use, at most once per process.

_plugin = None
_plugin_checked = False
_null_tensor = torch.empty([0])  # the plugin's "absent" argument
_PLUGIN_DEVICE_TYPE = "cuda"  # the device type the plugin serves (the self-check tests put a CPU stand-in there)


def _init() -> bool:
    """True when the CUDA plugin is usable (the first call builds or loads it)."""
    global _plugin, _plugin_checked  # pylint: disable=global-statement
    if _plugin_checked:
        return _plugin is not None
    _plugin_checked = True
    from .. import custom_ops  # lazy: the build machinery matters only for CUDA tensors
    _plugin = custom_ops.get_op_plugin("bias_act", os.path.dirname(__file__))
    return _plugin is not None


def _use_plugin(x: torch.Tensor) -> bool:
    """Whether the plugin serves `x`: on a CUDA device, built or loaded, and past its self-check on that device."""
    return x.device.type == _PLUGIN_DEVICE_TYPE and _init() and self_check.plugin_usable("bias_act", _plugin, x.device)


# ---------------------------------------------------------------------------------------------
# Shared helpers.

def _settings(act: str, alpha: float | None, gain: float | None, clamp: float | None) -> tuple[float, float, float]:
    """(alpha, gain, clamp) with the activation's defaults filled in; clamp -1 stands for "no clamp"."""
    spec = activation_funcs[act]  # KeyError names an unknown activation
    assert clamp is None or clamp >= 0, f"clamp must be None or >= 0, got {clamp}"
    return (float(spec.def_alpha if alpha is None else alpha), float(spec.def_gain if gain is None else gain),
            -1.0 if clamp is None else float(clamp))


def _check_bias(x: torch.Tensor, b: torch.Tensor | None, dim: int) -> None:
    """`b` must be None or 1D with as many entries as `x` has along `dim`."""
    if b is None:
        return
    assert isinstance(b, torch.Tensor) and b.ndim == 1, "bias must be a 1D tensor"
    assert 0 <= dim < x.ndim, f"dim {dim} out of range for a {x.ndim}D input"
    assert b.shape[0] == x.shape[dim], f"bias has {b.shape[0]} entries, input has {x.shape[dim]} along dim {dim}"


def _along(b: torch.Tensor, dim: int, ndim: int) -> torch.Tensor:
    """View of the 1D `b` that broadcasts along dimension `dim` of an `ndim`-D tensor."""
    shape = [1] * ndim
    shape[dim] = -1
    return b.reshape(shape)


def _sum_except(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum over every dimension but `dim` (the bias gradient); a 1D `t` is returned as is."""
    dims = [i for i in range(t.ndim) if i != dim]
    return t.sum(dims) if dims else t


# ---------------------------------------------------------------------------------------------

def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = "linear",
             alpha: float | None = None, gain: float | None = None, clamp: float | None = None,
             impl: str = "cuda") -> torch.Tensor:
    """y = clamp(act(x + b, alpha) * gain, -clamp, clamp), `b` broadcast along `dim`; None skips a step.

    alpha and gain default per activation (`activation_funcs`); gradients of any order.
    """
    assert isinstance(x, torch.Tensor)
    assert impl in ("ref", "cuda"), f"impl must be 'ref' or 'cuda', got {impl!r}"
    if impl == "cuda":
        cfg = (dim, act, *_settings(act, alpha, gain, clamp))
        if _use_plugin(x):
            return _BiasActCuda.apply(x, b, cfg)
        if _fusable(*cfg[1:]):
            _check_bias(x, b, dim)
            return _BiasActTorch.apply(x, b, cfg)
    return _bias_act_ref(x, b, dim, act, alpha, gain, clamp)


@misc.profiled_function
def _bias_act_ref(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = "linear",
                  alpha: float | None = None, gain: float | None = None,
                  clamp: float | None = None) -> torch.Tensor:
    """The op from standard PyTorch ops; autograd provides every gradient."""
    assert isinstance(x, torch.Tensor)
    alpha, gain, clamp = _settings(act, alpha, gain, clamp)
    _check_bias(x, b, dim)
    z = x if b is None else x + _along(b, dim, x.ndim)
    y = activation_funcs[act].func(z, alpha=alpha)
    y = y * gain if gain != 1 else y
    return y.clamp(-clamp, clamp) if clamp >= 0 else y


# ---------------------------------------------------------------------------------------------
# Fused PyTorch path. For linear/relu/lrelu with gain > 0 and alpha >= 0 the sign of the output equals the sign
# of x + b, so the output alone gives the derivative, and the second derivative is zero. The forward works in one
# buffer and the backward is one pass per step, where the reference chain needs several passes and masks.

_FUSABLE_ACTS = ("linear", "relu", "lrelu")


def _fusable(act: str, alpha: float, gain: float, clamp: float) -> bool:
    """Whether the fused path computes this case (a bare linear op gains nothing from it unless clamped)."""
    return act in _FUSABLE_ACTS and gain > 0 and alpha >= 0 and (act != "linear" or clamp >= 0)


def _negative_slope(act: str, alpha: float) -> float:
    return alpha if act == "lrelu" else 0.0


class _BiasActTorch(torch.autograd.Function):
    """Fused forward that keeps only its output; cfg = (dim, act, alpha, gain, clamp), defaults resolved."""

    @staticmethod
    def forward(ctx, x, b, cfg):  # pylint: disable=arguments-differ
        dim, act, alpha, gain, clamp = cfg
        out = x.clone() if b is None else x + _along(b, dim, x.ndim)
        if act != "linear":
            F.leaky_relu(out, _negative_slope(act, alpha), inplace=True)
        if gain != 1:
            out.mul_(gain)
        if clamp >= 0:
            out.clamp_(-clamp, clamp)
        ctx.save_for_backward(out)
        ctx.cfg = cfg
        return out

    @staticmethod
    def backward(ctx, grad):  # pylint: disable=arguments-differ
        out, = ctx.saved_tensors
        grad_x = _BiasActTorchGrad.apply(grad, out, ctx.cfg)
        grad_b = _sum_except(grad_x, ctx.cfg[0]) if ctx.needs_input_grad[1] else None
        return grad_x, grad_b, None


class _BiasActTorchGrad(torch.autograd.Function):
    """grad -> grad * act'(x + b) * gain, zero where the forward clamped, read off the forward output `out`.
    Linear in grad and independent of x (zero second derivative), so its backward is itself."""

    @staticmethod
    def forward(ctx, grad, out, cfg):  # pylint: disable=arguments-differ
        _dim, act, alpha, gain, clamp = cfg
        ctx.save_for_backward(out)
        ctx.cfg = cfg
        result = grad
        if act != "linear":  # out > 0 exactly where x + b > 0
            result = torch.ops.aten.leaky_relu_backward(result, out, _negative_slope(act, alpha), False)
        if clamp >= 0:  # passes strictly inside (-clamp, clamp) only, like the CUDA kernel
            result = torch.ops.aten.hardtanh_backward(result, out, -clamp, clamp)
        if gain != 1:
            result = result.mul_(gain) if result is not grad else result * gain
        return result

    @staticmethod
    def backward(ctx, grad2):  # pylint: disable=arguments-differ
        out, = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        return _BiasActTorchGrad.apply(grad2, out, ctx.cfg), None, None


# ---------------------------------------------------------------------------------------------
# CUDA path; cfg = (dim, act, alpha, gain, clamp), defaults resolved. Plugin entry point:
# bias_act(x, b, xref, yref, dy, grad, dim, act, alpha, gain, clamp), grad = 0 forward, 1 first derivative
# (times x), 2 second-derivative term (times x and dy); see bias_act.h.

def _layout(t: torch.Tensor) -> torch.memory_format:
    """The memory format the plugin calls keep: channels_last when the channel stride is 1."""
    return torch.channels_last if t.ndim > 2 and t.stride()[1] == 1 else torch.contiguous_format


def _or_null(t: torch.Tensor | None) -> torch.Tensor:
    return _null_tensor if t is None else t


def _kernel(plugin, mode: int, x, b, xref, yref, dy, cfg) -> torch.Tensor:
    """One plugin call; None tensors are passed as absent."""
    dim, act, alpha, gain, clamp = cfg
    return plugin.bias_act(x, _or_null(b), _or_null(xref), _or_null(yref), _or_null(dy), mode, dim,
                           activation_funcs[act].cuda_idx, alpha, gain, clamp)


def _kept_refs(act: str, clamp: float) -> tuple[bool, bool]:
    """(keep x and b, keep the forward output) for the backward: what the derivative and the clamp mask read.
    The clamp mask reads the output; keeping it for a clamped 'linear' too makes the gradient stop at the clamp
    as in the reference."""
    spec = activation_funcs[act]
    return spec.ref == "x" or spec.has_2nd_grad, spec.ref == "y" or (act == "linear" and clamp >= 0)


class _BiasActCuda(torch.autograd.Function):
    """Forward through the plugin, saving only what the activation's derivative reads."""

    @staticmethod
    def forward(ctx, x, b, cfg):  # pylint: disable=arguments-differ
        _dim, act, _alpha, gain, clamp = cfg
        ctx.layout = _layout(x)
        x = x.contiguous(memory_format=ctx.layout)
        b = None if b is None else b.contiguous()
        identity = act == "linear" and gain == 1 and clamp < 0 and b is None
        out = x if identity else _kernel(_plugin, 0, x, b, None, None, None, cfg)
        needs_x, needs_y = _kept_refs(act, clamp)
        ctx.save_for_backward(x if needs_x else _null_tensor, b if needs_x and b is not None else _null_tensor,
                              out if needs_y else _null_tensor)
        ctx.cfg = cfg
        return out

    @staticmethod
    def backward(ctx, grad):  # pylint: disable=arguments-differ
        want_x, want_b = ctx.needs_input_grad[:2]
        if not (want_x or want_b):
            return None, None, None
        grad = grad.contiguous(memory_format=ctx.layout)
        x, b, out = ctx.saved_tensors
        dim, act, _alpha, gain, clamp = ctx.cfg
        if act == "linear" and gain == 1 and clamp < 0:
            grad_x = grad
        else:
            grad_x = _BiasActCudaGrad.apply(grad, x, b, out, ctx.cfg)
        return grad_x, (_sum_except(grad_x, dim) if want_b else None), None


class _BiasActCudaGrad(torch.autograd.Function):
    """(grad, x, b, out) -> grad * act'(x + b) * gain, zero where clamped; differentiable again."""

    @staticmethod
    def forward(ctx, grad, x, b, out, cfg):  # pylint: disable=arguments-differ
        ctx.layout = _layout(grad)
        result = _kernel(_plugin, 1, grad, b, x, out, None, cfg)
        second = activation_funcs[cfg[1]].has_2nd_grad
        ctx.save_for_backward(grad if second else _null_tensor, x, b, out)
        ctx.cfg = cfg
        return result

    @staticmethod
    def backward(ctx, grad2):  # pylint: disable=arguments-differ
        grad2 = grad2.contiguous(memory_format=ctx.layout)
        grad, x, b, out = ctx.saved_tensors
        want_grad, want_x, want_b = ctx.needs_input_grad[:3]
        result = [None] * 5
        if want_grad:  # linear in grad: the same map again
            result[0] = _BiasActCudaGrad.apply(grad2, x, b, out, ctx.cfg)
        if activation_funcs[ctx.cfg[1]].has_2nd_grad and (want_x or want_b):
            result[1] = _kernel(_plugin, 2, grad2, b, x, out, grad, ctx.cfg)
            result[2] = _sum_except(result[1], ctx.cfg[0]) if want_b else None
        return tuple(result)


# ---------------------------------------------------------------------------------------------
# Self-check cases (self_check.py): the plugin's three modes, given what _BiasActCuda gives them, against the
# reference path in float64 (autograd) on the same rounded inputs. Every activation with its default gain and no
# clamp, and with gain 1.5 and clamp 1 (which cuts); float32 contiguous and float16 channels_last.

_CHECK_SETTINGS = ((None, None), (1.5, 1.0))  # (gain, clamp); None: the activation's default gain, no clamp


def _check_reference(x, b, dy, d_dx, dim, act, alpha, gain, clamp):
    """Float64 output, first-order term (dy -> dx) and, for activations with one, the second-order term."""
    xr = x.double().requires_grad_(True)
    y = _bias_act_ref(xr, b.double(), dim, act, alpha, gain, None if clamp < 0 else clamp)
    second = activation_funcs[act].has_2nd_grad
    (dx,) = torch.autograd.grad(y, xr, dy.double(), create_graph=second)
    d_x = torch.autograd.grad(dx, xr, d_dx.double())[0] if second else None
    return y.detach(), dx.detach(), d_x


def _self_check_cases(plugin, device: torch.device):
    gen = torch.Generator().manual_seed(0)
    for dtype, layout in self_check.DTYPES:
        for act, spec in activation_funcs.items():
            for gain, clamp in _CHECK_SETTINGS:
                cfg = (1, act, *_settings(act, None, gain, clamp))
                x, dy, d_dx = (torch.randn([3, 8, 4, 5], generator=gen, dtype=torch.float64).mul(scale).to(
                    device, dtype).contiguous(memory_format=layout) for scale in (2, 1, 1))
                b = torch.randn([8], generator=gen, dtype=torch.float64).to(device, dtype)
                y_ref, dx_ref, d_x_ref = _check_reference(x, b, dy, d_dx, *cfg)
                # Where the output sits within 1% of +-clamp, rounding may flip the gradient mask.
                keep = None if cfg[4] < 0 else (y_ref.abs() - cfg[4]).abs() > 0.01 * cfg[4]
                what = f"{act} gain={cfg[3]:.4g} clamp={clamp}, {dtype} {layout}"
                y = _kernel(plugin, 0, x, b, None, None, None, cfg)
                yield f"{what}: forward (mode 0)", y, y_ref, None
                needs_x, needs_y = _kept_refs(act, cfg[4])
                xref, bref, yref = (x if needs_x else None), (b if needs_x else None), (y if needs_y else None)
                yield (f"{what}: first-order gradient (mode 1)", _kernel(plugin, 1, dy, bref, xref, yref, None, cfg),
                       dx_ref, keep)
                if spec.has_2nd_grad:
                    yield (f"{what}: second-order gradient (mode 2)",
                           _kernel(plugin, 2, d_dx, bref, xref, yref, dy, cfg), d_x_ref, keep)


self_check.register("bias_act", _self_check_cases)
