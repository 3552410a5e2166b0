"""Upsample, pad, FIR-filter and downsample batches of 2D images (upstream-compatible `upfirdn2d`).

The PyTorch path (`impl='ref'`) is the reference and the CPU implementation; on CUDA tensors the
compiled `upfirdn2d_plugin` is used when it can be built (see torch_utils.custom_ops).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import misc
from . import conv2d_gradfix

# ---------------------------------------------------------------------------------------------
# CUDA plugin, looked up lazily once per process.

_plugin = None
_plugin_checked = False


def _init() -> bool:
    """Build/load the CUDA plugin on first use; True when it is available."""
    global _plugin, _plugin_checked  # pylint: disable=global-statement
    if not _plugin_checked:
        _plugin_checked = True
        from .. import custom_ops  # imported lazily: the build machinery is needed only on CUDA
        _plugin = custom_ops.get_plugin('upfirdn2d_plugin', sources=['upfirdn2d.cpp', 'upfirdn2d.cu'],
                                        headers=['upfirdn2d.h'], source_dir=os.path.dirname(__file__),
                                        extra_cuda_cflags=['--use_fast_math'])
    return _plugin is not None


# ---------------------------------------------------------------------------------------------
# Argument parsing shared with conv2d_resample.

def _parse_scaling(scaling: int | Sequence[int]) -> tuple[int, int]:
    """int or [x, y] -> (sx, sy), both >= 1."""
    if isinstance(scaling, int):
        scaling = [scaling, scaling]
    assert isinstance(scaling, (list, tuple))
    assert all(isinstance(s, int) for s in scaling)
    sx, sy = scaling
    assert sx >= 1 and sy >= 1
    return sx, sy


def _parse_padding(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    """int, [x, y] or [x0, x1, y0, y1] -> (x0, x1, y0, y1)."""
    if isinstance(padding, int):
        padding = [padding, padding]
    assert isinstance(padding, (list, tuple))
    assert all(isinstance(p, int) for p in padding)
    if len(padding) == 2:
        padx, pady = padding
        padding = [padx, padx, pady, pady]
    padx0, padx1, pady0, pady1 = padding
    return padx0, padx1, pady0, pady1


def _get_filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """(width, height) of a 2D or separable 1D filter; (1, 1) for None."""
    if f is None:
        return 1, 1
    assert isinstance(f, torch.Tensor) and f.ndim in [1, 2]
    with misc.suppress_tracer_warnings():
        fw = int(f.shape[-1])
        fh = int(f.shape[0])
    misc.assert_shape(f, [fh, fw][:f.ndim])
    assert fw >= 1 and fh >= 1
    return fw, fh


# ---------------------------------------------------------------------------------------------

def setup_filter(f: Any, device: torch.device = torch.device('cpu'), normalize: bool = True,
                 flip_filter: bool = False, gain: float = 1, separable: bool | None = None) -> torch.Tensor:
    """Turn a list/array/tensor (or None = identity) into a float32 FIR filter for upfirdn2d().

    1D input becomes separable when it has >= 8 taps (unless `separable` says otherwise), else
    its outer product. `normalize` makes the taps sum to 1; `gain` scales the 2D response.
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    assert f.ndim in [0, 1, 2]
    assert f.numel() > 0
    if f.ndim == 0:
        f = f.reshape([1])

    if separable is None:
        separable = (f.ndim == 1 and f.numel() >= 8)
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    assert f.ndim == (1 if separable else 2)

    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up: int | Sequence[int] = 1,
              down: int | Sequence[int] = 1, padding: int | Sequence[int] = 0, flip_filter: bool = False,
              gain: float = 1, impl: str = 'cuda') -> torch.Tensor:
    """Per channel: insert up-1 zeros after each pixel, pad (negative = crop), convolve with `f`,
    keep every down-th pixel. `padding` is [x0, x1, y0, y1] (or int / [x, y]) on the upsampled image;
    `flip_filter=True` correlates instead of convolving; `gain` scales the result.
    """
    assert isinstance(x, torch.Tensor)
    assert impl in ['ref', 'cuda']
    if impl == 'cuda' and x.device.type == 'cuda' and _init():
        cfg = _cuda_config(up, down, padding, flip_filter, gain)
        return _Upfirdn2dCuda.apply(x, f, cfg)
    return _upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)


@misc.profiled_function
def _upfirdn2d_ref(x: torch.Tensor, f: torch.Tensor | None, up=1, down=1, padding=0, flip_filter=False,
                   gain=1) -> torch.Tensor:
    """Reference implementation with standard PyTorch ops (differentiable to any order)."""
    assert isinstance(x, torch.Tensor) and x.ndim == 4
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    assert isinstance(f, torch.Tensor) and f.ndim in [1, 2]
    assert f.dtype == torch.float32 and not f.requires_grad
    channels = x.shape[1]
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)

    f = f * (gain ** (f.ndim / 2)) if gain != 1 else f
    f = f.to(x.dtype)
    fw, fh = _get_filter_size(f)
    if upx > 1 or upy > 1:
        return _upsample_ref(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, fw, fh)

    # Pad with zeros; negative amounts crop. The symmetric non-negative part is left to the convolution's own
    # padding (much cheaper than a separate padded copy), the rest is done here.
    convx, convy = max(min(padx0, padx1), 0), max(min(pady0, pady1), 0)
    if [padx0, padx1, pady0, pady1] != [convx, convx, convy, convy]:
        x = F.pad(x, [padx0 - convx, padx1 - convx, pady0 - convy, pady1 - convy])

    # conv2d correlates, so the filter is flipped for a true convolution. Downsampling keeps every down-th output,
    # which is what a strided convolution computes directly.
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        return conv2d_gradfix.conv2d(input=x, weight=f[None, None].repeat([channels, 1, 1, 1]),
                                     stride=[downy, downx], padding=[convy, convx], groups=channels)
    taps = f[None, None].repeat([channels, 1, 1])
    x = conv2d_gradfix.conv2d(input=x, weight=taps.unsqueeze(2), stride=[1, downx], padding=[0, convx],
                              groups=channels)  # along width
    return conv2d_gradfix.conv2d(input=x, weight=taps.unsqueeze(3), stride=[downy, 1], padding=[convy, 0],
                                 groups=channels)  # along height


def _upsample_ref(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, fw, fh):
    """The up > 1 case: a strided transposed convolution does zero insertion and the full convolution at once
    (without multiplying the inserted zeros). Its output sample m is the filtered upsampled image at m - (f - 1), so
    the requested padding becomes a crop of f - 1 - pad0 before and f - up - pad1 after; the symmetric part of the
    crop is the transposed convolution's own padding, the rest is cropped or zero-padded here."""
    channels = x.shape[1]
    if flip_filter:  # the transposed convolution convolves, so correlating means flipping the taps
        f = f.flip(list(range(f.ndim)))
    cropx0, cropx1, cropy0, cropy1 = fw - 1 - padx0, fw - upx - padx1, fh - 1 - pady0, fh - upy - pady1
    convx, convy = max(min(cropx0, cropx1), 0), max(min(cropy0, cropy1), 0)
    if f.ndim == 2:
        x = conv2d_gradfix.conv_transpose2d(x, f[None, None].repeat([channels, 1, 1, 1]), stride=[upy, upx],
                                            padding=[convy, convx], groups=channels)
    else:
        taps = f[None, None].repeat([channels, 1, 1])
        x = conv2d_gradfix.conv_transpose2d(x, taps.unsqueeze(2), stride=[1, upx], padding=[0, convx],
                                            groups=channels)  # along width
        x = conv2d_gradfix.conv_transpose2d(x, taps.unsqueeze(3), stride=[upy, 1], padding=[convy, 0],
                                            groups=channels)  # along height
    rest = [convx - cropx0, convx - cropx1, convy - cropy0, convy - cropy1]
    if any(rest):
        x = F.pad(x, rest)
    if downx > 1 or downy > 1:
        x = x[:, :, ::downy, ::downx]
    return x


# ---------------------------------------------------------------------------------------------
# CUDA path: the plugin computes one resampling pass; its adjoint is another resampling pass.

def _cuda_config(up, down, padding, flip_filter, gain) -> tuple:
    """Parsed arguments: (upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain)."""
    return (*_parse_scaling(up), *_parse_scaling(down), *_parse_padding(padding), bool(flip_filter),
            float(gain))


class _Upfirdn2dCuda(torch.autograd.Function):
    """upfirdn2d via the plugin; backward applies the adjoint resampling with the same op."""

    @staticmethod
    def forward(ctx, x, f, cfg):  # pylint: disable=arguments-differ
        assert isinstance(x, torch.Tensor) and x.ndim == 4
        if f is None:
            f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
        assert isinstance(f, torch.Tensor) and f.ndim in [1, 2]
        upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain = cfg
        if f.ndim == 2:
            y = _plugin.upfirdn2d(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain)
        else:
            half_gain = float(np.sqrt(gain))
            y = _plugin.upfirdn2d(x, f.unsqueeze(0), upx, 1, downx, 1, padx0, padx1, 0, 0, flip, half_gain)
            y = _plugin.upfirdn2d(y, f.unsqueeze(1), 1, upy, 1, downy, 0, 0, pady0, pady1, flip, half_gain)
        ctx.save_for_backward(f)
        ctx.x_shape = x.shape
        ctx.cfg = cfg
        return y

    @staticmethod
    def backward(ctx, dy):  # pylint: disable=arguments-differ
        f, = ctx.saved_tensors
        assert not ctx.needs_input_grad[1], 'upfirdn2d: gradients w.r.t. the filter are not supported'
        dx = None
        if ctx.needs_input_grad[0]:
            upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain = ctx.cfg
            _, _, in_h, in_w = ctx.x_shape
            _, _, out_h, out_w = dy.shape
            fw, fh = _get_filter_size(f)
            # Transposed op: swap up/down, flip the filter, and pad so that the full adjoint support
            # of every output pixel lands back on its input pixel.
            padding = [
                fw - padx0 - 1,
                in_w * upx - out_w * downx + padx0 - upx + 1,
                fh - pady0 - 1,
                in_h * upy - out_h * downy + pady0 - upy + 1,
            ]
            cfg = _cuda_config([downx, downy], [upx, upy], padding, not flip, gain)
            dx = _Upfirdn2dCuda.apply(dy, f, cfg)
        return dx, None, None


# ---------------------------------------------------------------------------------------------
# Convenience wrappers that choose the padding for the common cases.

def filter2d(x: torch.Tensor, f: torch.Tensor | None, padding: int | Sequence[int] = 0,
             flip_filter: bool = False, gain: float = 1, impl: str = 'cuda') -> torch.Tensor:
    """Filter keeping the image size; `padding` (w.r.t. the output) is applied on top."""
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [
        padx0 + fw // 2,
        padx1 + (fw - 1) // 2,
        pady0 + fh // 2,
        pady1 + (fh - 1) // 2,
    ]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x: torch.Tensor, f: torch.Tensor | None, up: int | Sequence[int] = 2,
               padding: int | Sequence[int] = 0, flip_filter: bool = False, gain: float = 1,
               impl: str = 'cuda') -> torch.Tensor:
    """Upsample by `up` to exactly up x the size; gain is multiplied by upx*upy to keep DC level."""
    upx, upy = _parse_scaling(up)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [
        padx0 + (fw + upx - 1) // 2,
        padx1 + (fw - upx) // 2,
        pady0 + (fh + upy - 1) // 2,
        pady1 + (fh - upy) // 2,
    ]
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(x: torch.Tensor, f: torch.Tensor | None, down: int | Sequence[int] = 2,
                 padding: int | Sequence[int] = 0, flip_filter: bool = False, gain: float = 1,
                 impl: str = 'cuda') -> torch.Tensor:
    """Downsample by `down` to exactly 1/down of the size; `padding` is w.r.t. the input."""
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [
        padx0 + (fw - downx + 1) // 2,
        padx1 + (fw - downx) // 2,
        pady0 + (fh - downy + 1) // 2,
        pady1 + (fh - downy) // 2,
    ]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)
