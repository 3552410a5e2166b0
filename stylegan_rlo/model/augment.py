"""The ADA augmentation pipeline (Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data"):
`AugmentPipe` with the official class name, constructor keywords, attributes and buffers, so pickles move between
this toolkit and the official code in both directions.

This module is persisted into every network pickle and executed there by the official loader: it imports only
numpy, torch and the upstream-compatible `torch_utils` (never `stylegan_rlo`).

Pipeline order per batch: pixel blitting + general geometry (one combined inverse transform, executed on a 2x
upsampled, reflect-padded image), color (one 4x4 matrix per image), image-space band filtering, additive noise,
cutout. Every transform fires independently per image with probability (its multiplier) * p.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from torch_utils import misc, persistence
from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix, upfirdn2d

# Low-pass decomposition filters of the Daubechies symlets sym2 and sym6 (standard published coefficients).
SYM2_LOWPASS = (-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025)
SYM6_LOWPASS = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
                0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
                -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148)

# Share of natural-image power in each filter band, lowest first (a 1/f spectrum).
BAND_POWER = (10 / 13, 1 / 13, 1 / 13, 1 / 13)

# The official `--augpipe` presets. Each group names the transforms it switches on (multiplier 1); a combined preset
# such as 'bgc' is the union of the groups its letters stand for: always a prefix of the group order below.
_GROUPS = {
    "blit": ("xflip", "rotate90", "xint"),
    "geom": ("scale", "rotate", "aniso", "xfrac"),
    "color": ("brightness", "contrast", "lumaflip", "hue", "saturation"),
    "filter": ("imgfilter",),
    "noise": ("noise",),
    "cutout": ("cutout",),
}
_COMBOS = ("bg", "bgc", "bgcf", "bgcfn", "bgcfnc")
AUGPIPE_SPECS = {name: dict.fromkeys(names, 1) for name, names in _GROUPS.items()}
AUGPIPE_SPECS.update({combo: dict.fromkeys([t for group in list(_GROUPS)[:len(combo)] for t in _GROUPS[group]], 1)
                      for combo in _COMBOS})

_GEOMETRIC = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")


def octave_filter_bank(lowpass, num_bands: int = 4) -> np.ndarray:
    """Zero-phase filters [num_bands, taps] splitting the spectrum into octaves (lowest band first).

    Built from a wavelet's low-pass h: each round halves the bandwidth of the existing bands (zeros between taps,
    then the power response h*h~/2) and gives the freed top octave to a new band with the mirrored high-pass power
    response. The rows sum to a unit impulse, so equal gains leave an image unchanged.
    """
    lo = np.asarray(lowpass, dtype=np.float64)
    hi = lo * (-1.0) ** np.arange(lo.size)
    lo_power = np.convolve(lo, lo[::-1]) / 2
    hi_power = np.convolve(hi, hi[::-1]) / 2
    bank = np.zeros([num_bands, 1])
    bank[0, 0] = 1
    for band in range(1, num_bands):
        stretched = np.zeros([num_bands, bank.shape[1] * 2 - 1])
        stretched[:, ::2] = bank
        bank = np.stack([np.convolve(row, lo_power) for row in stretched])
        start = (bank.shape[1] - hi_power.size) // 2
        bank[band, start:start + hi_power.size] += hi_power
    return bank


# ---------------------------------------------------------------------------------------------------------------------
# Batched homogeneous matrices. Arguments are floats or tensors of one common shape [batch]; the result is
# [batch, n, n] (or [n, n] when every argument is a float).

def _affine2d(a, b, c, d, e, f, device=None) -> torch.Tensor:
    """[[a, b, c], [d, e, f], [0, 0, 1]]."""
    entries = (a, b, c, d, e, f, 0, 0, 1)
    ref = next((x for x in entries if isinstance(x, torch.Tensor)), None)
    if ref is None:
        return torch.tensor(entries, dtype=torch.float32, device=device).reshape(3, 3)
    cols = [x if isinstance(x, torch.Tensor) else torch.full_like(ref, x) for x in entries]
    return torch.stack(cols, dim=-1).reshape(ref.shape + (3, 3))


def _scale2d(sx, sy, device=None) -> torch.Tensor:
    return _affine2d(sx, 0, 0, 0, sy, 0, device=device)


def _translate2d(tx, ty, device=None) -> torch.Tensor:
    return _affine2d(1, 0, tx, 0, 1, ty, device=device)


def _rotate2d(theta: torch.Tensor) -> torch.Tensor:
    return _affine2d(torch.cos(theta), -torch.sin(theta), 0, torch.sin(theta), torch.cos(theta), 0)


def _per_image(x: torch.Tensor) -> torch.Tensor:
    """[batch] -> [batch, 1, 1], to scale 4x4 matrices per image."""
    return x.reshape(-1, 1, 1)


class _Draws:
    """Random parameters for one batch. `gate` keeps a drawn value where the transform fires for that image (a fresh
    uniform draw below `prob`) and the identity value elsewhere. With `debug` (a percentile in [0, 1]) the drawn
    values are replaced by a fixed quantile afterwards (the random numbers are still consumed)."""

    def __init__(self, batch: int, device: torch.device, debug_percentile):
        self.batch = batch
        self.device = device
        self.debug = None if debug_percentile is None else \
            torch.as_tensor(debug_percentile, dtype=torch.float32, device=device)

    def uniform(self, *shape: int) -> torch.Tensor:
        return torch.rand([self.batch, *shape], device=self.device)

    def normal(self, *shape: int) -> torch.Tensor:
        return torch.randn([self.batch, *shape], device=self.device)

    def gate(self, values: torch.Tensor, prob, identity: float) -> torch.Tensor:
        fires = self.uniform(*[1] * (values.ndim - 1)) < prob
        return torch.where(fires, values, torch.full_like(values, identity))

    def fixed(self, values: torch.Tensor, quantile) -> torch.Tensor:
        """values unchanged, or in debug mode every entry = quantile(debug percentile)."""
        return values if self.debug is None else torch.full_like(values, float(quantile(self.debug)))


def _uniform_q(d: torch.Tensor) -> torch.Tensor:
    """Debug quantile of U(-1, 1)."""
    return d * 2 - 1


def _normal_q(d: torch.Tensor) -> torch.Tensor:
    """Debug quantile of the normal draws (erfinv of the U(-1, 1) quantile, as the official pipe defines it)."""
    return torch.erfinv(d * 2 - 1)


@persistence.persistent_class
class AugmentPipe(torch.nn.Module):
    """Differentiable ADA augmentations, all disabled by default: set a transform's multiplier to 1 to enable it.
    The buffer `p` is the overall probability (tuned by the ADA heuristic during training)."""

    def __init__(self,
                 xflip=0, rotate90=0, xint=0, xint_max=0.125,
                 scale=0, rotate=0, aniso=0, xfrac=0, scale_std=0.2, rotate_max=1, aniso_std=0.2, xfrac_std=0.125,
                 brightness=0, contrast=0, lumaflip=0, hue=0, saturation=0, brightness_std=0.2, contrast_std=0.5,
                 hue_max=1, saturation_std=1,
                 imgfilter=0, imgfilter_bands=(1, 1, 1, 1), imgfilter_std=1,
                 noise=0, cutout=0, noise_std=0.1, cutout_size=0.5):
        super().__init__()
        self.register_buffer("p", torch.ones([]))

        # Pixel blitting: x-flip, rotations by multiples of 90 degrees, integer translation (max share of the size).
        self.xflip = float(xflip)
        self.rotate90 = float(rotate90)
        self.xint = float(xint)
        self.xint_max = float(xint_max)

        # General geometry: isotropic scale (log2 std), rotation (1 = full circle), anisotropic scale (log2 std),
        # fractional translation (std as a share of the size).
        self.scale = float(scale)
        self.rotate = float(rotate)
        self.aniso = float(aniso)
        self.xfrac = float(xfrac)
        self.scale_std = float(scale_std)
        self.rotate_max = float(rotate_max)
        self.aniso_std = float(aniso_std)
        self.xfrac_std = float(xfrac_std)

        # Color: brightness offset (std), contrast (log2 std), luma flip, hue rotation (1 = full circle), saturation
        # (log2 std).
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.lumaflip = float(lumaflip)
        self.hue = float(hue)
        self.saturation = float(saturation)
        self.brightness_std = float(brightness_std)
        self.contrast_std = float(contrast_std)
        self.hue_max = float(hue_max)
        self.saturation_std = float(saturation_std)

        # Image-space filtering: per-band multipliers and the log2 std of each band's gain.
        self.imgfilter = float(imgfilter)
        self.imgfilter_bands = list(imgfilter_bands)
        self.imgfilter_std = float(imgfilter_std)

        # Corruptions: additive RGB noise (std of its std) and cutout (rectangle size as a share of the image).
        self.noise = float(noise)
        self.cutout = float(cutout)
        self.noise_std = float(noise_std)
        self.cutout_size = float(cutout_size)

        # Orthogonal low-pass used to resample around the geometric transforms, and the band-filter bank.
        self.register_buffer("Hz_geom", upfirdn2d.setup_filter(list(SYM6_LOWPASS)))
        self.register_buffer("Hz_fbank", torch.as_tensor(octave_filter_bank(SYM2_LOWPASS), dtype=torch.float32))

    def forward(self, images: torch.Tensor, debug_percentile=None) -> torch.Tensor:
        """Augment an NCHW batch (1 or 3 channels for color transforms); differentiable w.r.t. the images."""
        if not (isinstance(images, torch.Tensor) and images.ndim == 4):
            raise ValueError(f'AugmentPipe expects an NCHW image tensor, got '
                             f'{type(images).__name__} {tuple(getattr(images, "shape", ()))}')
        draws = _Draws(images.shape[0], images.device, debug_percentile)
        if any(getattr(self, name) > 0 for name in _GEOMETRIC):
            images = self._warp(images, self._sample_geometry(draws, images.shape[3], images.shape[2]))
        color = self._sample_color(draws, images.shape[1])
        if color is not None:
            images = self._recolor(images, color)
        if self.imgfilter > 0:
            images = self._filter_bands(images, draws)
        if self.noise > 0:
            images = self._add_noise(images, draws)
        if self.cutout > 0:
            images = self._cut_out(images, draws)
        return images

    # ----------------------------------------------------------------------------------------------------------------
    # Geometry

    def _sample_geometry(self, draws: _Draws, width: int, height: int) -> torch.Tensor:
        """Inverse transform [batch, 3, 3]: output pixel -> input pixel, in pixel units centered on the image."""
        p = self.p
        g_inv = torch.eye(3, device=draws.device)
        if self.xflip > 0:
            i = draws.gate(torch.floor(draws.uniform() * 2), self.xflip * p, 0)
            i = draws.fixed(i, lambda d: torch.floor(d * 2))
            g_inv = g_inv @ _scale2d(1 - 2 * i, 1)
        if self.rotate90 > 0:
            i = draws.gate(torch.floor(draws.uniform() * 4), self.rotate90 * p, 0)
            i = draws.fixed(i, lambda d: torch.floor(d * 4))
            g_inv = g_inv @ _rotate2d(np.pi / 2 * i)
        if self.xint > 0:
            t = draws.gate(_uniform_q(draws.uniform(2)) * self.xint_max, self.xint * p, 0)
            t = draws.fixed(t, lambda d: _uniform_q(d) * self.xint_max)
            g_inv = g_inv @ _translate2d(-torch.round(t[:, 0] * width), -torch.round(t[:, 1] * height))
        if self.scale > 0:
            s = draws.gate(torch.exp2(draws.normal() * self.scale_std), self.scale * p, 1)
            s = draws.fixed(s, lambda d: torch.exp2(_normal_q(d) * self.scale_std))
            g_inv = g_inv @ _scale2d(1 / s, 1 / s)
        # Rotation happens before and after the anisotropic scaling, each with p_rot, so that P(either) = rotate * p.
        p_rot = 1 - torch.sqrt((1 - self.rotate * p).clamp(0, 1))
        if self.rotate > 0:
            theta = draws.gate(_uniform_q(draws.uniform()) * np.pi * self.rotate_max, p_rot, 0)
            theta = draws.fixed(theta, lambda d: _uniform_q(d) * np.pi * self.rotate_max)
            g_inv = g_inv @ _rotate2d(theta)
        if self.aniso > 0:
            s = draws.gate(torch.exp2(draws.normal() * self.aniso_std), self.aniso * p, 1)
            s = draws.fixed(s, lambda d: torch.exp2(_normal_q(d) * self.aniso_std))
            g_inv = g_inv @ _scale2d(1 / s, s)
        if self.rotate > 0:
            theta = draws.gate(_uniform_q(draws.uniform()) * np.pi * self.rotate_max, p_rot, 0)
            theta = draws.fixed(theta, lambda d: torch.zeros_like(d))
            g_inv = g_inv @ _rotate2d(theta)
        if self.xfrac > 0:
            t = draws.gate(draws.normal(2) * self.xfrac_std, self.xfrac * p, 0)
            t = draws.fixed(t, lambda d: _normal_q(d) * self.xfrac_std)
            g_inv = g_inv @ _translate2d(-t[:, 0] * width, -t[:, 1] * height)
        return g_inv

    def _warp(self, images: torch.Tensor, g_inv: torch.Tensor) -> torch.Tensor:
        """Resample the images through g_inv: reflect-pad just enough, upsample 2x with the orthogonal low-pass,
        bilinear-sample, low-pass and downsample back, cropping to the original size."""
        batch, channels, height, width = images.shape
        device = images.device
        extra = self.Hz_geom.shape[0] // 4  # filter half-support at the original resolution

        # Padding needed: how far the transformed corners reach past the image, plus the filter support.
        cx, cy = (width - 1) / 2, (height - 1) / 2
        corners = misc.constant([[-cx, cx, cx, -cx], [-cy, -cy, cy, cy], [1, 1, 1, 1]], device=device)
        reach = (g_inv @ corners)[:, :2, :].transpose(0, 1).reshape(2, -1)  # [xy, batch * corner]
        margin = torch.cat([(-reach).max(dim=1).values, reach.max(dim=1).values])  # [left, top, right, bottom]
        margin = margin + misc.constant([2 * extra - cx, 2 * extra - cy] * 2, device=device)
        margin = torch.minimum(margin.clamp(min=0), misc.constant([width - 1, height - 1] * 2, device=device))
        if not bool(torch.isfinite(margin).all()):
            raise ValueError("AugmentPipe: degenerate geometric transform (infinite or NaN scale); "
                             "debug_percentile must lie strictly between 0 and 1 for scaling transforms")
        pad_l, pad_t, pad_r, pad_b = margin.ceil().to(torch.int64).tolist()
        images = F.pad(images, [pad_l, pad_r, pad_t, pad_b], mode="reflect")
        images = upfirdn2d.upsample2d(images, self.Hz_geom, up=2)

        # Sampling grid in normalized coordinates: output (2x the final size plus the filter margins) -> the padded,
        # upsampled input, composed with g_inv in the original pixel units.
        out_h, out_w = (height + 2 * extra) * 2, (width + 2 * extra) * 2
        in_h, in_w = images.shape[2], images.shape[3]
        to_input = _scale2d(2 / in_w, 2 / in_h, device) @ _translate2d(-0.5, -0.5, device) @ \
            _scale2d(2, 2, device) @ _translate2d((pad_l - pad_r) / 2, (pad_t - pad_b) / 2, device)
        from_output = _scale2d(0.5, 0.5, device) @ _translate2d(0.5, 0.5, device) @ \
            _scale2d(out_w / 2, out_h / 2, device)
        theta = (to_input @ g_inv @ from_output)[:, :2, :].to(images.dtype)
        grid = F.affine_grid(theta, [batch, channels, out_h, out_w], align_corners=False)
        images = grid_sample_gradfix.grid_sample(images, grid)
        return upfirdn2d.downsample2d(images, self.Hz_geom, down=2, padding=-2 * extra, flip_filter=True)

    # ----------------------------------------------------------------------------------------------------------------
    # Color

    def _sample_color(self, draws: _Draws, channels: int) -> torch.Tensor | None:
        """Color transform [batch, 4, 4] acting on homogeneous RGB, or None when no color transform is enabled."""
        p = self.p
        device = draws.device
        eye = torch.eye(4, device=device)
        rgb = misc.constant(np.diag([1, 1, 1, 0]), device=device)
        offset = misc.constant(np.pad(np.ones([3, 1]), [[0, 1], [3, 0]]), device=device)  # ones in [:3, 3]
        luma = misc.constant(np.asarray([1, 1, 1, 0]) / np.sqrt(3), device=device)
        luma_proj = luma[:, None] * luma[None, :]
        color = None

        def then(m: torch.Tensor) -> None:
            nonlocal color
            color = m if color is None else m @ color

        if self.brightness > 0:
            b = draws.gate(draws.normal() * self.brightness_std, self.brightness * p, 0)
            b = draws.fixed(b, lambda d: _normal_q(d) * self.brightness_std)
            then(eye + _per_image(b) * offset)
        if self.contrast > 0:
            c = draws.gate(torch.exp2(draws.normal() * self.contrast_std), self.contrast * p, 1)
            c = draws.fixed(c, lambda d: torch.exp2(_normal_q(d) * self.contrast_std))
            then(eye + _per_image(c - 1) * rgb)
        if self.lumaflip > 0:  # Householder reflection of the luma axis: inverts brightness, keeps the chroma.
            i = draws.gate(torch.floor(draws.uniform(1, 1) * 2), self.lumaflip * p, 0)
            i = draws.fixed(i, lambda d: torch.floor(d * 2))
            then(eye - 2 * luma_proj * i)
        if self.hue > 0 and channels > 1:  # rotation about the luma axis (Rodrigues)
            theta = draws.gate(_uniform_q(draws.uniform()) * np.pi * self.hue_max, self.hue * p, 0)
            theta = draws.fixed(theta, lambda d: _uniform_q(d) * np.pi * self.hue_max)
            lx, ly, lz = luma[:3].tolist()
            cross = misc.constant([[0, -lz, ly, 0], [lz, 0, -lx, 0], [-ly, lx, 0, 0], [0, 0, 0, 0]], device=device)
            cos, sin = _per_image(torch.cos(theta)), _per_image(torch.sin(theta))
            then(eye - rgb + luma_proj + cos * (rgb - luma_proj) + sin * cross)
        if self.saturation > 0 and channels > 1:  # scale the chroma (the part orthogonal to the luma axis)
            s = draws.gate(torch.exp2(draws.normal(1, 1) * self.saturation_std), self.saturation * p, 1)
            s = draws.fixed(s, lambda d: torch.exp2(_normal_q(d) * self.saturation_std))
            then(eye - rgb + luma_proj + (rgb - luma_proj) * s)
        return color

    @staticmethod
    def _recolor(images: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
        """Apply per-image 4x4 color matrices; a grayscale image uses the mean of the three RGB rows."""
        batch, channels, height, width = images.shape
        color = color.to(images.dtype)
        flat = images.reshape(batch, channels, height * width)
        if channels == 3:
            flat = color[:, :3, :3] @ flat + color[:, :3, 3:]
        elif channels == 1:
            row = color[:, :3, :].mean(dim=1, keepdim=True)  # [batch, 1, 4]
            flat = flat * row[:, :, :3].sum(dim=2, keepdim=True) + row[:, :, 3:]
        else:
            raise ValueError(f"AugmentPipe color transforms need RGB (3 channels) or L (1 channel) images, "
                             f"got {channels} channels")
        return flat.reshape(batch, channels, height, width)

    # ----------------------------------------------------------------------------------------------------------------
    # Image-space filtering and corruptions

    def _filter_bands(self, images: torch.Tensor, draws: _Draws) -> torch.Tensor:
        """Amplify or attenuate each frequency band by a random gain, keeping the expected image power."""
        batch, channels, height, width = images.shape
        num_bands, taps = self.Hz_fbank.shape
        if len(self.imgfilter_bands) != num_bands:
            raise ValueError(f"AugmentPipe: imgfilter_bands has {len(self.imgfilter_bands)} entries, "
                             f"the filter bank has {num_bands} bands")
        pad = taps // 2
        if min(height, width) <= pad:
            raise ValueError(f"AugmentPipe image-space filtering needs images larger than {pad}x{pad} pixels, "
                             f"got {height}x{width}")
        gains = []
        for band_strength in self.imgfilter_bands:
            t = draws.gate(torch.exp2(draws.normal() * self.imgfilter_std), self.imgfilter * band_strength * self.p, 1)
            t = draws.fixed(t, (lambda d: torch.exp2(_normal_q(d) * self.imgfilter_std)) if band_strength > 0
                            else (lambda d: torch.ones_like(d)))
            gains.append(t)
        gains = torch.stack(gains, dim=1)  # [batch, band]
        # Each band's gain g_i changes the expected power by 1 + w_i (g_i^2 - 1); undo that, band by band.
        band_power = misc.constant(BAND_POWER, device=images.device)
        gains = gains / (1 + band_power * (gains.square() - 1)).sqrt().prod(dim=1, keepdim=True)

        kernel = (gains @ self.Hz_fbank).to(images.dtype)  # [batch, taps], symmetric
        kernel = kernel.repeat_interleave(channels, dim=0).unsqueeze(1)  # [batch * channel, 1, taps]
        x = F.pad(images.reshape(1, batch * channels, height, width), [pad] * 4, mode="reflect")
        x = conv2d_gradfix.conv2d(input=x, weight=kernel.unsqueeze(2), groups=batch * channels)
        x = conv2d_gradfix.conv2d(input=x, weight=kernel.unsqueeze(3), groups=batch * channels)
        return x.reshape(batch, channels, height, width)

    def _add_noise(self, images: torch.Tensor, draws: _Draws) -> torch.Tensor:
        """Gaussian noise with a per-image std drawn from |N(0, noise_std^2)|."""
        sigma = draws.gate(draws.normal(1, 1, 1).abs() * self.noise_std, self.noise * self.p, 0)
        sigma = draws.fixed(sigma, lambda d: torch.erfinv(d) * self.noise_std)
        return images + torch.randn_like(images) * sigma.to(images.dtype)

    def _cut_out(self, images: torch.Tensor, draws: _Draws) -> torch.Tensor:
        """Zero a centered-at-random rectangle of cutout_size times the image size."""
        batch, _, height, width = images.shape
        device = images.device
        size = torch.full([batch, 2, 1, 1, 1], self.cutout_size, device=device)
        size = draws.gate(size, self.cutout * self.p, 0)
        center = draws.uniform(2, 1, 1, 1)
        size = draws.fixed(size, lambda d: torch.full_like(d, self.cutout_size))
        center = draws.fixed(center, lambda d: d)
        xs = (torch.arange(width, device=device).reshape(1, 1, 1, -1) + 0.5) / width
        ys = (torch.arange(height, device=device).reshape(1, 1, -1, 1) + 0.5) / height
        keep = ((xs - center[:, 0]).abs() >= size[:, 0] / 2) | ((ys - center[:, 1]).abs() >= size[:, 1] / 2)
        return images * keep.to(images.dtype)
