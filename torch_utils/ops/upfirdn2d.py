"""upfirdn2d: zero-insertion upsampling, padding, FIR filtering and decimation of image batches.

Specification: docs/architecture-ops.md, section 1. On CPU (and with impl='ref') the op is a depthwise
(transposed) convolution through conv2d_gradfix; CUDA tensors use the compiled `upfirdn2d_plugin` when it
builds (torch_utils.custom_ops), with an adjoint-based backward. The plugin is self-checked against the
PyTorch path on first use per device (self_check.py; cases at the end).
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from .. import misc
from . import conv2d_gradfix, self_check

IntPair = int | Sequence[int]

# ---------------------------------------------------------------------------------------------
# The compiled plugin: built or loaded on first use, at most once per process.

_plugin = None
_plugin_checked = False
_PLUGIN_DEVICE_TYPE = "cuda"  # the device type the plugin serves (the self-check tests put a CPU stand-in there)


def _init() -> bool:
    """True when the CUDA plugin is usable (the first call builds or loads it)."""
    global _plugin, _plugin_checked  # pylint: disable=global-statement
    if _plugin_checked:
        return _plugin is not None
    _plugin_checked = True
    from .. import custom_ops  # lazy: the build machinery matters only for CUDA tensors
    _plugin = custom_ops.get_op_plugin("upfirdn2d", os.path.dirname(__file__))
    return _plugin is not None


def _use_plugin(x: torch.Tensor, impl: str) -> bool:
    """Validate `impl`; the plugin serves impl='cuda' on CUDA tensors when it is available and has passed its
    self-check on that device."""
    assert impl in ("ref", "cuda"), f"impl must be 'ref' or 'cuda', got {impl!r}"
    return (impl == "cuda" and x.device.type == _PLUGIN_DEVICE_TYPE and _init()
            and self_check.plugin_usable("upfirdn2d", _plugin, x.device))


# ---------------------------------------------------------------------------------------------
# Argument forms shared by every function here and by conv2d_resample.

def _xy(factor: IntPair) -> tuple[int, int]:
    """Resampling factor: int s -> (s, s), or a pair (sx, sy); both ints >= 1."""
    pair = (factor, factor) if isinstance(factor, int) else factor
    assert isinstance(pair, (list, tuple)) and len(pair) == 2
    assert all(isinstance(v, int) and v >= 1 for v in pair)
    return pair[0], pair[1]


def _pad4(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    """Padding: int p, (px, py) or (px0, px1, py0, py1) -> (px0, px1, py0, py1)."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    assert isinstance(padding, (list, tuple)) and len(padding) in (2, 4)
    assert all(isinstance(v, int) for v in padding)
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    return padding[0], padding[1], padding[2], padding[3]


def _filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """(fw, fh) of a 2D or separable 1D filter; None counts as a single tap."""
    if f is None:
        return 1, 1
    assert isinstance(f, torch.Tensor) and f.ndim in (1, 2)
    with misc.suppress_tracer_warnings():  # sizes become constants when tracing
        fw, fh = int(f.shape[-1]), int(f.shape[0])
    misc.assert_shape(f, [fh, fw][:f.ndim])
    assert fw >= 1 and fh >= 1
    return fw, fh


def _up_alignment(taps: int, factor: int) -> tuple[int, int]:
    """Padding (before, after) that centres a `taps`-long filter on an image upsampled by `factor`."""
    return (taps + factor - 1) // 2, (taps - factor) // 2


def _down_alignment(taps: int, factor: int) -> tuple[int, int]:
    """Padding (before, after) so that filtering then decimating by `factor` gives exactly 1/factor the size."""
    return (taps - factor + 1) // 2, (taps - factor) // 2


def _aligned_padding(padding: int | Sequence[int], f: torch.Tensor | None,
                     rule: Callable[[int, int], tuple[int, int]], factor: IntPair) -> list[int]:
    """User padding plus the alignment `rule` gives for each axis (filter size and factor of that axis)."""
    fw, fh = _filter_size(f)
    sx, sy = _xy(factor)
    user = _pad4(padding)
    extra = rule(fw, sx) + rule(fh, sy)
    return [p + e for p, e in zip(user, extra)]


# ---------------------------------------------------------------------------------------------

def setup_filter(f: Any, device: torch.device = torch.device("cpu"), normalize: bool = True,
                 flip_filter: bool = False, gain: float = 1, separable: bool | None = None) -> torch.Tensor:
    """Prepare filter taps (list, array, tensor; None = identity) as the float32 tensor the ops take.

    A 1D input stays 1D (separable) when `separable` says so, by default when it has 8 taps or more;
    otherwise it becomes its outer product. See docs/architecture-ops.md, 1.4.
    """
    taps = torch.as_tensor(1 if f is None else f, dtype=torch.float32)
    assert 0 < taps.numel() and taps.ndim <= 2, "filter must be a non-empty scalar, 1D or 2D array"
    taps = taps.reshape([1]) if taps.ndim == 0 else taps
    want_1d = (taps.ndim == 1 and taps.numel() >= 8) if separable is None else separable
    if taps.ndim == 1 and not want_1d:
        taps = torch.outer(taps, taps)
    assert taps.ndim == (1 if want_1d else 2), "a 2D filter cannot be separable"
    if normalize:
        taps = taps / taps.sum()
    if flip_filter:
        taps = taps.flip(list(range(taps.ndim)))
    taps = taps * (gain ** (taps.ndim / 2))
    return taps.to(device=device)


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up: IntPair = 1, down: IntPair = 1,
              padding: int | Sequence[int] = 0, flip_filter: bool = False, gain: float = 1,
              impl: str = "cuda") -> torch.Tensor:
    """Per channel: upsample by zero insertion, pad ([x0, x1, y0, y1]; negative crops), convolve with `f`
    (correlate when flip_filter), keep every down-th sample, times `gain`."""
    assert isinstance(x, torch.Tensor)
    if _use_plugin(x, impl):
        return _Upfirdn2dCuda.apply(x, f, _cuda_config(up, down, padding, flip_filter, gain))
    return _upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)


# ---------------------------------------------------------------------------------------------
# PyTorch path: depthwise (transposed) convolutions, one 2D pass or two 1D passes.

def _passes(f: torch.Tensor) -> list[tuple[torch.Tensor, int, int]]:
    """(2D kernel, acts along y, acts along x) for each convolution a filter needs."""
    if f.ndim == 2:
        return [(f, 1, 1)]
    return [(f.unsqueeze(0), 0, 1), (f.unsqueeze(1), 1, 0)]  # along the width, then along the height


def _shared_and_rest(a: int, b: int) -> tuple[int, int, int]:
    """Split a per-side amount pair into the largest common non-negative part and what remains on each side."""
    common = max(min(a, b), 0)
    return common, a - common, b - common


@misc.profiled_function
def _upfirdn2d_ref(x: torch.Tensor, f: torch.Tensor | None, up: IntPair = 1, down: IntPair = 1,
                   padding: int | Sequence[int] = 0, flip_filter: bool = False, gain: float = 1) -> torch.Tensor:
    """The op from standard PyTorch ops; differentiable to any order (docs/architecture-ops.md, 1.2)."""
    assert isinstance(x, torch.Tensor) and x.ndim == 4
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    assert isinstance(f, torch.Tensor) and f.ndim in (1, 2)
    assert f.dtype == torch.float32 and not f.requires_grad, "filter must be a float32 tensor without grad"
    ux, uy = _xy(up)
    dx, dy = _xy(down)
    px0, px1, py0, py1 = _pad4(padding)
    if gain != 1:
        f = f * (gain ** (f.ndim / 2))
    f = f.to(x.dtype)
    fw, fh = _filter_size(f)
    channels = x.shape[1]

    def depthwise(t, transpose, stride_y, stride_x, pad_y, pad_x):
        for kernel, on_y, on_x in _passes(f):
            weight = kernel[None, None].repeat([channels, 1, 1, 1])
            op = conv2d_gradfix.conv_transpose2d if transpose else conv2d_gradfix.conv2d
            t = op(t, weight, stride=[stride_y if on_y else 1, stride_x if on_x else 1],
                   padding=[pad_y * on_y, pad_x * on_x], groups=channels)
        return t

    if ux == 1 and uy == 1:
        # conv2d correlates: mirror the taps for a true convolution. A stride is filtering + decimation.
        if not flip_filter:
            f = f.flip(list(range(f.ndim)))
        cx, rx0, rx1 = _shared_and_rest(px0, px1)
        cy, ry0, ry1 = _shared_and_rest(py0, py1)
        if rx0 or rx1 or ry0 or ry1:
            x = F.pad(x, [rx0, rx1, ry0, ry1])
        return depthwise(x, False, dy, dx, cy, cx)

    # A strided transposed convolution zero-inserts and convolves in one go. Its output starts f - 1 samples
    # before the padded image and ends f - up samples after it, so padding p means cropping f - 1 - p0 / f - up - p1.
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    cx, rx0, rx1 = _shared_and_rest(fw - 1 - px0, fw - ux - px1)
    cy, ry0, ry1 = _shared_and_rest(fh - 1 - py0, fh - uy - py1)
    x = depthwise(x, True, uy, ux, cy, cx)
    if rx0 or rx1 or ry0 or ry1:
        x = F.pad(x, [-rx0, -rx1, -ry0, -ry1])
    if dx > 1 or dy > 1:
        x = x[:, :, ::dy, ::dx]
    return x


# ---------------------------------------------------------------------------------------------
# CUDA path. The plugin takes 2D filters only; the backward pass is the adjoint op, again upfirdn2d.

def _cuda_config(up: IntPair, down: IntPair, padding: int | Sequence[int], flip_filter: bool,
                 gain: float) -> tuple:
    """Parsed arguments in plugin order: (upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain)."""
    return (*_xy(up), *_xy(down), *_pad4(padding), bool(flip_filter), float(gain))


def _plugin_call(plugin, x: torch.Tensor, f: torch.Tensor, cfg: tuple) -> torch.Tensor:
    """One 2D plugin call, or a width pass and a height pass (each with sqrt(gain)) for separable taps."""
    if f.ndim == 2:
        return plugin.upfirdn2d(x, f, *cfg)
    ux, uy, dx, dy, px0, px1, py0, py1, flip, gain = cfg
    half = math.sqrt(gain)
    x = plugin.upfirdn2d(x, f.unsqueeze(0), ux, 1, dx, 1, px0, px1, 0, 0, flip, half)
    return plugin.upfirdn2d(x, f.unsqueeze(1), 1, uy, 1, dy, 0, 0, py0, py1, flip, half)


def _adjoint_config(cfg: tuple, f: torch.Tensor, in_size: tuple[int, int], out_size: tuple[int, int]) -> tuple:
    """The config of the gradient pass of `cfg` for an input of `in_size` and an output of `out_size` (each
    (width, height)): up and down swapped, the filter flipped, and per axis the upsampled-by-down gradient padded
    so that its length is (n_in - 1) * up + taps."""
    ux, uy, dx, dy, px0, px1, py0, py1, flip, gain = cfg
    fw, fh = _filter_size(f)
    pad = []
    for n_in, n_out, u, d, p0, taps in ((in_size[0], out_size[0], ux, dx, px0, fw),
                                        (in_size[1], out_size[1], uy, dy, py0, fh)):
        before = taps - 1 - p0
        pad += [before, (n_in - 1) * u + taps - n_out * d - before]
    return (dx, dy, ux, uy, *pad, not flip, gain)


class _Upfirdn2dCuda(torch.autograd.Function):
    """upfirdn2d through the plugin; cfg from _cuda_config. Differentiable to any order in x."""

    @staticmethod
    def forward(ctx, x, f, cfg):  # pylint: disable=arguments-differ
        assert isinstance(x, torch.Tensor) and x.ndim == 4
        if f is None:
            f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
        assert isinstance(f, torch.Tensor) and f.ndim in (1, 2)
        ctx.save_for_backward(f)
        ctx.in_size = (int(x.shape[3]), int(x.shape[2]))
        ctx.cfg = cfg
        return _plugin_call(_plugin, x, f, cfg)

    @staticmethod
    def backward(ctx, grad):  # pylint: disable=arguments-differ
        f, = ctx.saved_tensors
        assert not ctx.needs_input_grad[1], "upfirdn2d: gradients w.r.t. the filter are not supported"
        if not ctx.needs_input_grad[0]:
            return None, None, None
        adjoint = _adjoint_config(ctx.cfg, f, ctx.in_size, (int(grad.shape[3]), int(grad.shape[2])))
        return _Upfirdn2dCuda.apply(grad, f, adjoint), None, None


# ---------------------------------------------------------------------------------------------
# Wrappers that pick the padding for the usual cases (table in docs/architecture-ops.md, 1.5).

def filter2d(x: torch.Tensor, f: torch.Tensor | None, padding: int | Sequence[int] = 0,
             flip_filter: bool = False, gain: float = 1, impl: str = "cuda") -> torch.Tensor:
    """Filter without changing the image size; `padding` adds to (or crops) the output."""
    pad = _aligned_padding(padding, f, _up_alignment, 1)
    return upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x: torch.Tensor, f: torch.Tensor | None, up: IntPair = 2, padding: int | Sequence[int] = 0,
               flip_filter: bool = False, gain: float = 1, impl: str = "cuda") -> torch.Tensor:
    """Upsample to exactly `up` times the size; the gain includes upx * upy so that the mean level stays."""
    ux, uy = _xy(up)
    pad = _aligned_padding(padding, f, _up_alignment, (ux, uy))
    return upfirdn2d(x, f, up=(ux, uy), padding=pad, flip_filter=flip_filter, gain=gain * ux * uy, impl=impl)


def downsample2d(x: torch.Tensor, f: torch.Tensor | None, down: IntPair = 2, padding: int | Sequence[int] = 0,
                 flip_filter: bool = False, gain: float = 1, impl: str = "cuda") -> torch.Tensor:
    """Downsample to exactly 1/down of the size; `padding` is relative to the input."""
    pad = _aligned_padding(padding, f, _down_alignment, down)
    return upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)


# ---------------------------------------------------------------------------------------------
# Self-check cases (self_check.py): the plugin calls of each configuration StyleGAN2 and the ADA pipeline use,
# forward and in the gradient's (adjoint) configuration, against the PyTorch path in float64 on the same rounded
# inputs. The op is linear: its gradient is the adjoint call, and its second-order gradient is that call again.
# Random positive taps (not symmetric, so that a flipped filter shows).

_CHECK_CASES = (  # (what uses it, taps, up, down, padding, flip_filter, gain, input size)
    ("upsample2d 4 taps (skip architecture)", 4, 2, 1, (2, 1, 2, 1), False, 4, 8),
    ("downsample2d 4 taps (D, resnet shortcut)", 4, 1, 2, (1, 1, 1, 1), False, 1, 8),
    ("filter after a transposed 3x3 conv (up=2 layers)", 4, 1, 1, (1, 1, 1, 1), False, 4, 8),
    ("filter before a strided 3x3 conv (down=2 layers)", 4, 1, 1, (2, 2, 2, 2), False, 1, 8),
    ("ADA upsample2d, 12 separable taps", 12, 2, 1, (6, 5, 6, 5), False, 4, 8),
    ("ADA downsample2d, 12 separable taps, flipped, cropping", 12, 1, 2, (-3, -3, -3, -3), True, 1, 20),
)


def _self_check_cases(plugin, device: torch.device):
    gen = torch.Generator().manual_seed(0)
    for dtype, layout in self_check.DTYPES:
        for use, taps, up, down, padding, flip, gain, size in _CHECK_CASES:
            f = setup_filter(torch.rand([taps], generator=gen) + 0.5, device=device)
            x = torch.randn([2, 3, size, size], generator=gen, dtype=torch.float64).to(device, dtype).contiguous(
                memory_format=layout)
            xr = x.double().requires_grad_(True)
            y_ref = _upfirdn2d_ref(xr, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
            dy = torch.randn(y_ref.shape, generator=gen, dtype=torch.float64).to(device, dtype).contiguous(
                memory_format=layout)
            (dx_ref,) = torch.autograd.grad(y_ref, xr, dy.double())
            cfg = _cuda_config(up, down, padding, flip, gain)
            what = f"{use}, {dtype} {layout}"
            yield f"{what}: forward", _plugin_call(plugin, x, f, cfg), y_ref.detach(), None
            adjoint = _adjoint_config(cfg, f, (size, size), (int(y_ref.shape[3]), int(y_ref.shape[2])))
            yield f"{what}: gradient", _plugin_call(plugin, dy, f, adjoint), dx_ref, None


self_check.register("upfirdn2d", _self_check_cases)
