"""Drop-in `conv2d` / `conv_transpose2d` with gradients of any order and optional weight-gradient skipping.

When `enabled` is true the ops run through a custom autograd function built only from public
PyTorch ops, so double backward works on every PyTorch 2.x (the upstream version relies on private
cuDNN entry points that changed in 1.11). Inside `no_weight_gradients()` the backward pass skips
the weight gradient, which saves work in the path length regularizer. Disabled -> plain torch ops.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, NamedTuple

import torch
import torch.nn.functional as F

# pylint: disable=redefined-builtin

enabled = False                    # Use the custom op (set by the training loop).
weight_gradients_disabled = False  # Skip weight gradients (set by no_weight_gradients()).


@contextlib.contextmanager
def no_weight_gradients() -> Iterator[None]:
    """Within this context, backward passes of the custom op return no weight gradient."""
    global weight_gradients_disabled  # pylint: disable=global-statement
    previous = weight_gradients_disabled
    weight_gradients_disabled = True
    try:
        yield
    finally:
        weight_gradients_disabled = previous


def conv2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0,
           dilation=1, groups: int = 1) -> torch.Tensor:
    """Same as torch.nn.functional.conv2d."""
    if _should_use_custom_op(input):
        spec = _ConvSpec.make(False, weight.shape, stride, padding, 0, dilation, groups)
        return _Conv2d.apply(input, weight, bias, spec)
    return _in_fast_layout(F.conv2d, input, weight, bias, stride=stride, padding=padding, dilation=dilation,
                           groups=groups)


def conv_transpose2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1,
                     padding=0, output_padding=0, groups: int = 1, dilation=1) -> torch.Tensor:
    """Same as torch.nn.functional.conv_transpose2d."""
    if _should_use_custom_op(input):
        spec = _ConvSpec.make(True, weight.shape, stride, padding, output_padding, dilation, groups)
        # output_padding >= stride (possible only with dilation) adds rows the conv2d adjoint cannot
        # reproduce; that rare case is left to torch's own autograd.
        if all(op < s for op, s in zip(spec.output_padding, spec.stride)):
            return _Conv2d.apply(input, weight, bias, spec)
    return _in_fast_layout(F.conv_transpose2d, input, weight, bias, stride=stride, padding=padding,
                           output_padding=output_padding, groups=groups, dilation=dilation)


def _in_fast_layout(op, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, **kwargs
                    ) -> torch.Tensor:
    """`op(input, weight, bias, **kwargs)`. On the CPU a depthwise (one channel per group) convolution of an input
    that is not channels_last runs in channels_last, where oneDNN's depthwise kernels are several times faster
    (2-15x for the FIR filters of upfirdn2d on 3-channel images), and returns in the input's layout. Same values up
    to float rounding."""
    groups = kwargs["groups"]
    depthwise = groups > 1 and weight.shape[1] == 1 and input.shape[1] == groups
    if not (depthwise and input.device.type == "cpu" and input.ndim == 4) or _is_channels_last(input):
        return op(input, weight, bias, **kwargs)
    output = op(input.contiguous(memory_format=torch.channels_last), weight, bias, **kwargs)
    return output.contiguous()


def _is_channels_last(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def _should_use_custom_op(input: torch.Tensor) -> bool:
    assert isinstance(input, torch.Tensor)
    return enabled


def _pair(value, name: str) -> tuple[int, int]:
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    assert len(pair) == 2 and all(isinstance(v, int) for v in pair), f"{name} must be an int or a pair of ints"
    return pair


class _ConvSpec(NamedTuple):
    """Everything but the tensors that defines one (transposed) convolution."""
    transpose: bool
    weight_shape: tuple
    stride: tuple
    padding: tuple
    output_padding: tuple
    dilation: tuple
    groups: int

    @staticmethod
    def make(transpose, weight_shape, stride, padding, output_padding, dilation, groups) -> '_ConvSpec':
        spec = _ConvSpec(bool(transpose), tuple(weight_shape), _pair(stride, "stride"), _pair(padding, "padding"),
                         _pair(output_padding, "output_padding"), _pair(dilation, "dilation"), groups)
        assert groups >= 1 and len(spec.weight_shape) == 4
        assert all(s >= 1 for s in spec.stride) and all(p >= 0 for p in spec.padding)
        assert all(d >= 1 for d in spec.dilation)
        if transpose:
            assert all(0 <= op < max(s, d) for op, s, d in zip(spec.output_padding, spec.stride, spec.dilation))
        else:
            assert all(op == 0 for op in spec.output_padding)
        return spec

    def run(self, input, weight, bias=None):
        """Evaluate the convolution this spec describes."""
        if self.transpose:
            return _in_fast_layout(F.conv_transpose2d, input, weight, bias, stride=self.stride, padding=self.padding,
                                   output_padding=self.output_padding, groups=self.groups, dilation=self.dilation)
        return _in_fast_layout(F.conv2d, input, weight, bias, stride=self.stride, padding=self.padding,
                               dilation=self.dilation, groups=self.groups)

    def input_adjoint(self, input_shape, output_shape) -> '_ConvSpec':
        """Spec of the op mapping output gradients back to input gradients (same weight)."""
        if self.transpose:
            output_padding = (0, 0)
        else:
            # Rows/cols of the input that the strided forward conv never reached.
            output_padding = tuple(
                input_shape[i + 2] - (output_shape[i + 2] - 1) * self.stride[i] + 2 * self.padding[i]
                - self.dilation[i] * (self.weight_shape[i + 2] - 1) - 1
                for i in range(2))
        return self._replace(transpose=not self.transpose, output_padding=output_padding)

    def weight_grad(self, grad_output, input):
        """Gradient w.r.t. the weight, given the output gradient and the forward input."""
        if self.transpose:
            # conv_transpose2d(x, w) is the input-adjoint of conv2d(., w): swap the roles of x and dy.
            grad_output, input = input, grad_output
        return torch.nn.grad.conv2d_weight(input, self.weight_shape, grad_output, stride=self.stride,
                                           padding=self.padding, dilation=self.dilation, groups=self.groups)


class _Conv2d(torch.autograd.Function):
    """(Transposed) convolution whose backward is again made of differentiable custom ops."""

    @staticmethod
    def forward(ctx, input, weight, bias, spec):  # pylint: disable=arguments-differ
        assert tuple(weight.shape) == spec.weight_shape
        ctx.save_for_backward(input, weight)
        ctx.spec = spec
        return spec.run(input, weight, bias)

    @staticmethod
    def backward(ctx, grad_output):  # pylint: disable=arguments-differ
        input, weight = ctx.saved_tensors
        spec = ctx.spec
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            adjoint = spec.input_adjoint(input.shape, grad_output.shape)
            grad_input = _Conv2d.apply(grad_output, weight, None, adjoint)
            assert grad_input.shape == input.shape
        if ctx.needs_input_grad[1] and not weight_gradients_disabled:
            grad_weight = _Conv2dGradWeight.apply(grad_output, input, spec)
        if ctx.needs_input_grad[2]:
            grad_bias = grad_output.sum([0, 2, 3])
        return grad_input, grad_weight, grad_bias, None


class _Conv2dGradWeight(torch.autograd.Function):
    """Weight gradient as a function of (grad_output, input); it is bilinear, so its own backward
    is one forward conv and one input-adjoint conv."""

    @staticmethod
    def forward(ctx, grad_output, input, spec):  # pylint: disable=arguments-differ
        ctx.save_for_backward(grad_output, input)
        ctx.spec = spec
        grad_weight = spec.weight_grad(grad_output, input)
        assert tuple(grad_weight.shape) == spec.weight_shape
        return grad_weight

    @staticmethod
    def backward(ctx, grad2_weight):  # pylint: disable=arguments-differ
        grad_output, input = ctx.saved_tensors
        spec = ctx.spec
        grad2_grad_output = grad2_input = None
        if ctx.needs_input_grad[0]:
            grad2_grad_output = _Conv2d.apply(input, grad2_weight, None, spec)
            assert grad2_grad_output.shape == grad_output.shape
        if ctx.needs_input_grad[1]:
            adjoint = spec.input_adjoint(input.shape, grad_output.shape)
            grad2_input = _Conv2d.apply(grad_output, grad2_weight, None, adjoint)
            assert grad2_input.shape == input.shape
        return grad2_grad_output, grad2_input, None
