"""Deliberately naive float64 references for the torch_utils.ops tests.

Written straight from the definitions (selection matrices, per-tap sums, explicit bilinear
weights) and independent of the library code paths; all are differentiable so they also give
reference first- and second-order gradients.
"""

from __future__ import annotations

import torch


def _placement(n_in: int, step: int, offset: int, n_out: int) -> torch.Tensor:
    """[n_out, n_in] 0/1 matrix putting input sample i at output position i*step + offset (if inside)."""
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_in):
        pos = i * step + offset
        if 0 <= pos < n_out:
            m[pos, i] = 1
    return m


def naive_upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up=(1, 1), down=(1, 1), pad=(0, 0, 0, 0),
                    gain: float = 1.0, correlate: bool = False) -> torch.Tensor:
    """Zero-insert by `up`, pad [x0, x1, y0, y1] (negative crops), convolve (or correlate) with the 2D
    `kernel` keeping only fully covered positions, keep every `down`-th sample, times `gain`."""
    upx, upy = up
    downx, downy = down
    px0, px1, py0, py1 = pad
    _, _, h, w = x.shape
    k = kernel.to(torch.float64)
    if not correlate:
        k = k.flip([0, 1])  # convolution = correlation with the reversed kernel
    kh, kw = k.shape
    big_h = h * upy + py0 + py1
    big_w = w * upx + px0 + px1
    canvas = torch.einsum("Yi,ncij,Xj->ncYX", _placement(h, upy, py0, big_h), x, _placement(w, upx, px0, big_w))
    out_h = -(-(big_h - kh + 1) // downy)
    out_w = -(-(big_w - kw + 1) // downx)
    out = x.new_zeros(x.shape[0], x.shape[1], out_h, out_w)
    for i in range(kh):
        for j in range(kw):
            window = canvas[:, :, i:i + (out_h - 1) * downy + 1:downy, j:j + (out_w - 1) * downx + 1:downx]
            out = out + k[i, j] * window
    return out * gain


def filter_2d(f: torch.Tensor | None) -> torch.Tensor:
    """The 2D kernel a setup_filter() result stands for (separable taps -> outer product)."""
    if f is None:
        return torch.ones(1, 1, dtype=torch.float64)
    f = f.to(torch.float64)
    return f[:, None] * f[None, :] if f.ndim == 1 else f


def naive_conv2d(x: torch.Tensor, w: torch.Tensor, stride=1, padding=0, dilation=1, groups=1) -> torch.Tensor:
    """Cross-correlation as torch.nn.functional.conv2d defines it, one kernel tap at a time."""
    s, p, d = stride, padding, dilation
    n, c, h, wd = x.shape
    o, cpg, kh, kw = w.shape
    xp = torch.nn.functional.pad(x, [p, p, p, p])
    out_h = (h + 2 * p - d * (kh - 1) - 1) // s + 1
    out_w = (wd + 2 * p - d * (kw - 1) - 1) // s + 1
    opg = o // groups
    outs = []
    for g in range(groups):
        acc = x.new_zeros(n, opg, out_h, out_w)
        xg = xp[:, g * cpg:(g + 1) * cpg]
        for i in range(kh):
            for j in range(kw):
                patch = xg[:, :, i * d:i * d + (out_h - 1) * s + 1:s, j * d:j * d + (out_w - 1) * s + 1:s]
                acc = acc + torch.einsum("oc,nchw->nohw", w[g * opg:(g + 1) * opg, :, i, j], patch)
        outs.append(acc)
    return torch.cat(outs, dim=1)


def naive_conv_transpose2d(x: torch.Tensor, w: torch.Tensor, stride=1, padding=0, output_padding=0, groups=1,
                           dilation=1) -> torch.Tensor:
    """Transposed convolution by scattering every input pixel times every kernel tap, then cropping."""
    s, p, op, d = stride, padding, output_padding, dilation
    n, c, h, wd = x.shape
    _, opg, kh, kw = w.shape
    cpg = c // groups
    full_h = (h - 1) * s + d * (kh - 1) + 1 + op
    full_w = (wd - 1) * s + d * (kw - 1) + 1 + op
    outs = []
    for g in range(groups):
        full = x.new_zeros(n, opg, full_h, full_w)
        xg = x[:, g * cpg:(g + 1) * cpg]
        for i in range(kh):
            for j in range(kw):
                contrib = torch.einsum("nchw,co->nohw", xg, w[g * cpg:(g + 1) * cpg, :, i, j])
                shifted = x.new_zeros(n, opg, full_h, full_w)
                shifted[:, :, i * d:i * d + (h - 1) * s + 1:s, j * d:j * d + (wd - 1) * s + 1:s] = contrib
                full = full + shifted
        outs.append(full[:, :, p:full_h - p, p:full_w - p])
    return torch.cat(outs, dim=1)


def naive_grid_sample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear sampling, zeros outside, align_corners=False: pixel centres at (i + 0.5) * 2 / size - 1."""
    n, c, h, w = x.shape
    px = ((grid[..., 0] + 1) * w - 1) / 2  # [n, gh, gw] continuous pixel coordinates
    py = ((grid[..., 1] + 1) * h - 1) / 2
    x0 = torch.floor(px.detach()).long()
    y0 = torch.floor(py.detach()).long()
    batch = torch.arange(n)[:, None, None]
    out = 0
    for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            corner = x[batch, :, yy.clamp(0, h - 1), xx.clamp(0, w - 1)]  # [n, gh, gw, c]
            out = out + (wy * wx * inside)[..., None] * corner
    return out.permute(0, 3, 1, 2)
