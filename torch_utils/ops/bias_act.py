"""Fused bias + activation + gain + clamp (upstream-compatible `bias_act`).

The PyTorch path (`impl='ref'`) is the reference. With the default `impl='cuda'`, CUDA tensors use the
compiled `bias_act_plugin` when it can be built (see torch_utils.custom_ops); elsewhere linear/relu/lrelu run
through a fused PyTorch autograd function and the other activations through the reference.
"""

from __future__ import annotations

import os
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .. import misc


class ActivationSpec(NamedTuple):
    """One activation: its function, default alpha and gain, plugin index, which forward tensor
    (x = input, y = output) its derivative needs, and whether it has a nonzero second derivative."""
    func: Callable
    def_alpha: float
    def_gain: float
    cuda_idx: int
    ref: str
    has_2nd_grad: bool


activation_funcs = {
    'linear':   ActivationSpec(lambda x, **_: x,                           0,   1,          1, '',  False),
    'relu':     ActivationSpec(lambda x, **_: F.relu(x),                   0,   np.sqrt(2), 2, 'y', False),
    'lrelu':    ActivationSpec(lambda x, alpha, **_: F.leaky_relu(x, alpha), 0.2, np.sqrt(2), 3, 'y', False),
    'tanh':     ActivationSpec(lambda x, **_: torch.tanh(x),               0,   1,          4, 'y', True),
    'sigmoid':  ActivationSpec(lambda x, **_: torch.sigmoid(x),            0,   1,          5, 'y', True),
    'elu':      ActivationSpec(lambda x, **_: F.elu(x),                    0,   1,          6, 'y', True),
    'selu':     ActivationSpec(lambda x, **_: F.selu(x),                   0,   1,          7, 'y', True),
    'softplus': ActivationSpec(lambda x, **_: F.softplus(x),               0,   1,          8, 'y', True),
    'swish':    ActivationSpec(lambda x, **_: torch.sigmoid(x) * x,        0,   np.sqrt(2), 9, 'x', True),
}

# ---------------------------------------------------------------------------------------------
# CUDA plugin, looked up lazily once per process.

_plugin = None
_plugin_checked = False
_null_tensor = torch.empty([0])


def _init() -> bool:
    """Build/load the CUDA plugin on first use; True when it is available."""
    global _plugin, _plugin_checked  # pylint: disable=global-statement
    if not _plugin_checked:
        _plugin_checked = True
        from .. import custom_ops  # imported lazily: the build machinery is needed only on CUDA
        _plugin = custom_ops.get_plugin('bias_act_plugin', sources=['bias_act.cpp', 'bias_act.cu'],
                                        headers=['bias_act.h'], source_dir=os.path.dirname(__file__),
                                        extra_cuda_cflags=['--use_fast_math'])
    return _plugin is not None


def _resolve(act: str, alpha: float | None, gain: float | None, clamp: float | None) -> tuple:
    """Fill in the activation's defaults: (spec, alpha, gain, clamp) with clamp = -1 meaning none."""
    assert clamp is None or clamp >= 0
    spec = activation_funcs[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    clamp = float(clamp if clamp is not None else -1)
    return spec, alpha, gain, clamp


# ---------------------------------------------------------------------------------------------

def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = 'linear',
             alpha: float | None = None, gain: float | None = None, clamp: float | None = None,
             impl: str = 'cuda') -> torch.Tensor:
    """y = clamp(act(x + b, alpha) * gain, -clamp, clamp); each step optional.

    `b` is 1D and broadcast along dimension `dim` of `x`; alpha/gain default per activation (see
    `activation_funcs`); clamp=None disables clamping. First and second order gradients supported.
    """
    assert isinstance(x, torch.Tensor)
    assert impl in ['ref', 'cuda']
    if impl == 'cuda' and x.device.type == 'cuda' and _init():
        return _BiasActCuda.apply(x, b, (dim, act, *_resolve(act, alpha, gain, clamp)[1:]))
    if impl == 'cuda':
        _spec, r_alpha, r_gain, r_clamp = _resolve(act, alpha, gain, clamp)
        if act in _OUTPUT_DERIVATIVE_ACTS and r_gain > 0 and r_alpha >= 0 and (act != 'linear' or r_clamp >= 0):
            _check_bias(x, b, dim)
            return _BiasActTorch.apply(x, b, (dim, act, r_alpha, r_gain, r_clamp))
    return _bias_act_ref(x=x, b=b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)


def _check_bias(x: torch.Tensor, b: torch.Tensor | None, dim: int) -> None:
    """`b` must be None or a 1D tensor as long as dimension `dim` of `x`."""
    if b is not None:
        assert isinstance(b, torch.Tensor) and b.ndim == 1
        assert 0 <= dim < x.ndim
        assert b.shape[0] == x.shape[dim]


@misc.profiled_function
def _bias_act_ref(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = 'linear',
                  alpha: float | None = None, gain: float | None = None,
                  clamp: float | None = None) -> torch.Tensor:
    """Reference implementation with standard PyTorch ops."""
    assert isinstance(x, torch.Tensor)
    spec, alpha, gain, clamp = _resolve(act, alpha, gain, clamp)
    _check_bias(x, b, dim)
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha=alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


# ---------------------------------------------------------------------------------------------
# Fused PyTorch path (CPU, or CUDA without the plugin) for activations whose derivative follows from the output
# y (with gain > 0 and alpha >= 0) and whose second derivative is zero. The forward works in place on one buffer and the backward
# uses single-pass derivative kernels; the reference chain needs several passes and boolean masks per step.

_OUTPUT_DERIVATIVE_ACTS = ('linear', 'relu', 'lrelu')


class _BiasActTorch(torch.autograd.Function):
    """y = clamp(act(x + b) * gain); saves only y. cfg = (dim, act, alpha, gain, clamp) with defaults resolved."""

    @staticmethod
    def forward(ctx, x, b, cfg):  # pylint: disable=arguments-differ
        dim, act, alpha, gain, clamp = cfg
        y = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)]) if b is not None else x.clone()
        if act != 'linear':
            F.leaky_relu(y, alpha if act == 'lrelu' else 0.0, inplace=True)
        if gain != 1:
            y.mul_(gain)
        if clamp >= 0:
            y.clamp_(-clamp, clamp)
        ctx.save_for_backward(y)
        ctx.cfg = cfg
        return y

    @staticmethod
    def backward(ctx, dy):  # pylint: disable=arguments-differ
        y, = ctx.saved_tensors
        dx = _BiasActTorchGrad.apply(dy, y, ctx.cfg)
        db = _sum_except(dx, ctx.cfg[0]) if ctx.needs_input_grad[1] else None
        return dx, db, None


class _BiasActTorchGrad(torch.autograd.Function):
    """dx = f'(z) * gain * dy (zero where the forward clamped), read off y; linear in dy, so it is its own
    derivative (the activation's second derivative is zero)."""

    @staticmethod
    def forward(ctx, dy, y, cfg):  # pylint: disable=arguments-differ
        _dim, act, alpha, gain, clamp = cfg
        ctx.save_for_backward(y)
        ctx.cfg = cfg
        dx = dy
        if act != 'linear':  # y > 0 exactly where z > 0, since gain > 0 and clamping keeps the sign
            dx = torch.ops.aten.leaky_relu_backward(dx, y, alpha if act == 'lrelu' else 0.0, False)
        if clamp >= 0:  # strictly inside (-clamp, clamp), as in the CUDA kernel
            dx = torch.ops.aten.hardtanh_backward(dx, y, -clamp, clamp)
        if gain != 1:
            dx = dx * gain if dx is dy else dx.mul_(gain)
        return dx

    @staticmethod
    def backward(ctx, d_dx):  # pylint: disable=arguments-differ
        y, = ctx.saved_tensors
        d_dy = _BiasActTorchGrad.apply(d_dx, y, ctx.cfg) if ctx.needs_input_grad[0] else None
        return d_dy, None, None


# ---------------------------------------------------------------------------------------------
# CUDA path. cfg = (dim, act, alpha, gain, clamp) with defaults resolved.
# Plugin modes: grad=0 forward, grad=1 first derivative (times dy), grad=2 second-derivative term.

def _memory_format(t: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if t.ndim > 2 and t.stride()[1] == 1 else torch.contiguous_format


def _sum_except(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Reduce to the bias shape (an empty dim list would make torch sum over everything)."""
    others = [i for i in range(t.ndim) if i != dim]
    return t.sum(others) if others else t


class _BiasActCuda(torch.autograd.Function):
    """Forward through the plugin; saves only the tensors the activation's derivative needs."""

    @staticmethod
    def forward(ctx, x, b, cfg):  # pylint: disable=arguments-differ
        dim, act, alpha, gain, clamp = cfg
        spec = activation_funcs[act]
        ctx.memory_format = _memory_format(x)
        x = x.contiguous(memory_format=ctx.memory_format)
        b = b.contiguous() if b is not None else _null_tensor
        y = x
        if act != 'linear' or gain != 1 or clamp >= 0 or b is not _null_tensor:
            y = _plugin.bias_act(x, b, _null_tensor, _null_tensor, _null_tensor, 0, dim, spec.cuda_idx,
                                 alpha, gain, clamp)
        keep_x = 'x' in spec.ref or spec.has_2nd_grad
        # The kernel masks clamped outputs using yref; upstream omits y for 'linear', which lets
        # gradients through clamped values. Keeping it makes the gradient match the reference.
        keep_y = 'y' in spec.ref or (act == 'linear' and clamp >= 0)
        ctx.save_for_backward(x if keep_x else _null_tensor, b if keep_x else _null_tensor,
                              y if keep_y else _null_tensor)
        ctx.cfg = cfg
        return y

    @staticmethod
    def backward(ctx, dy):  # pylint: disable=arguments-differ
        dy = dy.contiguous(memory_format=ctx.memory_format)
        x, b, y = ctx.saved_tensors
        dim, act, _alpha, gain, clamp = ctx.cfg
        dx = db = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            dx = dy
            if act != 'linear' or gain != 1 or clamp >= 0:
                dx = _BiasActCudaGrad.apply(dy, x, b, y, ctx.cfg)
        if ctx.needs_input_grad[1]:
            db = _sum_except(dx, dim)
        return dx, db, None


class _BiasActCudaGrad(torch.autograd.Function):
    """dx = f'(x + b) * gain * dy (zero where the forward clamped), as a differentiable function."""

    @staticmethod
    def forward(ctx, dy, x, b, y, cfg):  # pylint: disable=arguments-differ
        dim, act, alpha, gain, clamp = cfg
        spec = activation_funcs[act]
        ctx.memory_format = _memory_format(dy)
        dx = _plugin.bias_act(dy, b, x, y, _null_tensor, 1, dim, spec.cuda_idx, alpha, gain, clamp)
        ctx.save_for_backward(dy if spec.has_2nd_grad else _null_tensor, x, b, y)
        ctx.cfg = cfg
        return dx

    @staticmethod
    def backward(ctx, d_dx):  # pylint: disable=arguments-differ
        d_dx = d_dx.contiguous(memory_format=ctx.memory_format)
        dy, x, b, y = ctx.saved_tensors
        dim, act, alpha, gain, clamp = ctx.cfg
        spec = activation_funcs[act]
        d_dy = d_x = d_b = None
        if ctx.needs_input_grad[0]:
            d_dy = _BiasActCudaGrad.apply(d_dx, x, b, y, ctx.cfg)
        if spec.has_2nd_grad and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
            d_x = _plugin.bias_act(d_dx, b, x, y, dy, 2, dim, spec.cuda_idx, alpha, gain, clamp)
        if spec.has_2nd_grad and ctx.needs_input_grad[2]:
            d_b = _sum_except(d_x, dim)
        return d_dy, d_x, d_b, None, None
