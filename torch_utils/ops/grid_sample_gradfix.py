"""Drop-in bilinear `grid_sample` (zeros padding, align_corners=False) with gradients of any order
between input and output.

When `enabled` is true a custom autograd function is used whose backward is itself differentiable
w.r.t. the incoming gradient (that is what R1 through the augmentation pipeline needs), built only
from public PyTorch ops. The grid is treated as a constant for second-order gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# pylint: disable=redefined-builtin

enabled = False  # Use the custom op (set by the training loop).


def grid_sample(input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """torch.nn.functional.grid_sample with mode='bilinear', padding_mode='zeros', align_corners=False."""
    if enabled:
        return _GridSample2dForward.apply(input, grid)
    return _sample(input, grid)


def _sample(input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(input=input, grid=grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class _GridSample2dForward(torch.autograd.Function):
    """Bilinear sampling; backward delegates to _GridSample2dBackward so it can be differentiated."""

    @staticmethod
    def forward(ctx, input, grid):  # pylint: disable=arguments-differ
        assert input.ndim == 4 and grid.ndim == 4
        ctx.save_for_backward(input, grid)
        return _sample(input, grid)

    @staticmethod
    def backward(ctx, grad_output):  # pylint: disable=arguments-differ
        input, grid = ctx.saved_tensors
        return _GridSample2dBackward.apply(grad_output, input, grid, ctx.needs_input_grad[0],
                                           ctx.needs_input_grad[1])


class _GridSample2dBackward(torch.autograd.Function):
    """(grad_output, input, grid) -> (grad_input, grad_grid).

    grad_input is linear in grad_output (the adjoint of sampling at `grid`), so its derivative
    w.r.t. grad_output is sampling again and w.r.t. input is zero; terms involving the grid
    (or grad_grid) are not provided and raise a clear error if requested.
    """

    @staticmethod
    def forward(ctx, grad_output, input, grid, want_input, want_grid):  # pylint: disable=arguments-differ
        # Differentiate a fresh bilinear sampling with torch's own (first-order) kernels.
        with torch.enable_grad():
            leaf_input = input.detach().requires_grad_(want_input)
            leaf_grid = grid.detach().requires_grad_(want_grid)
            wanted = [t for t in (leaf_input, leaf_grid) if t.requires_grad]
            grads = torch.autograd.grad(_sample(leaf_input, leaf_grid), wanted, grad_output) if wanted else ()
        grads = list(grads)
        grad_input = grads.pop(0) if want_input else None
        grad_grid = grads.pop(0) if want_grid else None
        ctx.save_for_backward(grid)
        ctx.set_materialize_grads(False)
        return grad_input, grad_grid

    @staticmethod
    def backward(ctx, grad2_grad_input, grad2_grad_grid):  # pylint: disable=arguments-differ
        grid, = ctx.saved_tensors
        if grad2_grad_grid is not None or (grad2_grad_input is not None and ctx.needs_input_grad[2]):
            raise NotImplementedError("grid_sample_gradfix: second-order gradients involving the grid are not "
                                      "supported; disable grid_sample_gradfix.enabled to use plain grid_sample")
        grad2_grad_output = None
        if ctx.needs_input_grad[0] and grad2_grad_input is not None:
            grad2_grad_output = _GridSample2dForward.apply(grad2_grad_input, grid)
        # grad_input does not depend on `input` (it is linear in grad_output): no second term there.
        return grad2_grad_output, None, None, None, None
