"""conv2d_resample: a 2D convolution fused with FIR upsampling and/or downsampling.

Specification: docs/architecture-ops.md, section 2. The result is always that of the literal chain
(upsample + pad + filter, convolve, filter + decimate); `_plan` picks a cheaper ordering that computes the
same thing (strided or transposed convolutions, or resampling on the side with fewer channels).
"""

from __future__ import annotations

from typing import Sequence

import torch

from .. import misc
from . import conv2d_gradfix, upfirdn2d
from .upfirdn2d import _aligned_padding, _down_alignment, _filter_size, _pad4, _up_alignment


def _conv(x: torch.Tensor, w: torch.Tensor, correlate: bool, transpose: bool = False, stride: int = 1,
          padding: Sequence[int] = (0, 0), groups: int = 1) -> torch.Tensor:
    """(Transposed) convolution through conv2d_gradfix; correlate=False mirrors the kernel first."""
    if not correlate and (w.shape[2] > 1 or w.shape[3] > 1):
        w = w.flip([2, 3])
    op = conv2d_gradfix.conv_transpose2d if transpose else conv2d_gradfix.conv2d
    return op(x, w, stride=stride, padding=list(padding), groups=groups)


def _transpose_weight(w: torch.Tensor, groups: int) -> torch.Tensor:
    """[out, in/groups, kh, kw] conv weight -> [in, out/groups, kh, kw] conv_transpose weight, per group."""
    if groups == 1:
        return w.transpose(0, 1)
    o, i, kh, kw = w.shape
    return w.reshape(groups, o // groups, i, kh, kw).transpose(1, 2).reshape(groups * i, o // groups, kh, kw)


def _plan(k1x1: bool, up: int, down: int, pad: list[int]) -> str:
    """Which evaluation order to use (cases of the table in docs/architecture-ops.md, section 2)."""
    if k1x1 and up == 1 and down > 1:
        return "resample_then_1x1"
    if k1x1 and up > 1 and down == 1:
        return "1x1_then_resample"
    if up == 1 and down > 1:
        return "filter_then_strided"
    if up > 1:
        return "transposed"
    if down == 1 and pad[0] == pad[1] >= 0 and pad[2] == pad[3] >= 0:
        return "plain"
    return "literal"


@misc.profiled_function
def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None = None, up: int = 1,
                    down: int = 1, padding: int | Sequence[int] = 0, groups: int = 1, flip_weight: bool = True,
                    flip_filter: bool = False) -> torch.Tensor:
    """Convolve `x` [N, C, H, W] with `w` [O, C/groups, kh, kw], upsampling by `up` before and downsampling by
    `down` after with the setup_filter() filter `f`. `padding` ([x0, x1, y0, y1], [x, y] or int) is relative
    to the upsampled image. flip_weight=True correlates like torch.conv2d; False convolves."""
    assert isinstance(x, torch.Tensor) and x.ndim == 4
    assert isinstance(w, torch.Tensor) and w.ndim == 4 and w.dtype == x.dtype
    assert f is None or (isinstance(f, torch.Tensor) and f.ndim in (1, 2) and f.dtype == torch.float32)
    for name, value in (("up", up), ("down", down), ("groups", groups)):
        assert isinstance(value, int) and value >= 1, f"{name} must be an int >= 1, got {value!r}"
    with misc.suppress_tracer_warnings():  # sizes become constants when tracing
        kh, kw = int(w.shape[2]), int(w.shape[3])
    _filter_size(f)  # validates the filter shape

    pad = list(_pad4(padding))
    if up > 1:
        pad = _aligned_padding(pad, f, _up_alignment, up)
    if down > 1:
        pad = _aligned_padding(pad, f, _down_alignment, down)
    plan = _plan(kh == 1 and kw == 1, up, down, pad)

    if plan == "resample_then_1x1":  # a 1x1 convolution commutes with per-channel filtering
        x = upfirdn2d.upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter)
        return _conv(x, w, flip_weight, groups=groups)
    if plan == "1x1_then_resample":
        x = _conv(x, w, flip_weight, groups=groups)
        return upfirdn2d.upfirdn2d(x, f, up=up, padding=pad, gain=up ** 2, flip_filter=flip_filter)
    if plan == "filter_then_strided":
        x = upfirdn2d.upfirdn2d(x, f, padding=pad, flip_filter=flip_filter)
        return _conv(x, w, flip_weight, stride=down, groups=groups)
    if plan == "plain":
        return _conv(x, w, flip_weight, padding=(pad[2], pad[0]), groups=groups)

    if plan == "transposed":
        # Zero insertion and convolution in one op (which convolves, hence the opposite flip). It yields k - 1
        # extra samples before and k - up after what padding `pad` asks for; the common crop of an axis is
        # its own padding, the rest is left to the filter pass.
        rest = [pad[0] - (kw - 1), pad[1] - (kw - up), pad[2] - (kh - 1), pad[3] - (kh - up)]
        crop_x = max(min(-rest[0], -rest[1]), 0)
        crop_y = max(min(-rest[2], -rest[3]), 0)
        x = _conv(x, _transpose_weight(w, groups), not flip_weight, transpose=True, stride=up,
                  padding=(crop_y, crop_x), groups=groups)
        rest = [rest[0] + crop_x, rest[1] + crop_x, rest[2] + crop_y, rest[3] + crop_y]
        x = upfirdn2d.upfirdn2d(x, f, padding=rest, gain=up ** 2, flip_filter=flip_filter)
    else:  # literal chain
        x = upfirdn2d.upfirdn2d(x, f if up > 1 else None, up=up, padding=pad, gain=up ** 2, flip_filter=flip_filter)
        x = _conv(x, w, flip_weight, groups=groups)
    if down > 1:
        x = upfirdn2d.upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x
