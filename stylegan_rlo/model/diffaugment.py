"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training"): the same random,
differentiable transforms applied to every image D sees, real and generated, in D's and G's passes.

Policies, always applied in this order (whatever order they are listed in), each with its own draws per image:
- `color`: brightness + U(-0.5, 0.5); saturation: (x - m) * U(0, 2) + m with m each pixel's mean over the channels;
  contrast: (x - m) * U(0.5, 1.5) + m with m the image's mean over channels and pixels (in that order).
- `translation`: shift by whole pixels, independently along rows and columns, by up to round(size / 8) either way
  (uniform integers); pixels shifted in from outside are 0.
- `cutout`: zero a square of round(size / 2) pixels per side (rows and columns separately: a rectangle for non-square
  images) whose centre is a uniform pixel position; the parts outside the image are dropped.

Every transform is differentiable in the image (translation and cutout move or mask pixels), so G gets gradients
through it and R1 can differentiate through it. The draws come from torch's default generator of the images' device,
which the training state file saves: an exactly resumed run draws the same augmentations. Sizes and ranges follow
the authors' reference code (mit-han-lab/data-efficient-gans).
"""

from __future__ import annotations

import dataclasses

import torch

POLICIES = ("color", "translation", "cutout")
TRANSLATION_RATIO = 1 / 8  # largest shift, as a share of the image size
CUTOUT_RATIO = 1 / 2  # side of the cutout square, as a share of the image size


def parse_policy(text: str | None) -> tuple[str, ...]:
    """'color,translation,cutout' (any subset, any order) -> the policies in application order; '', 'none' and None
    mean no DiffAugment. ValueError for an unknown or repeated policy."""
    if text is None:
        return ()
    names = [name.strip() for name in str(text).split(",") if name.strip()]
    if names == ["none"]:
        return ()
    unknown = [name for name in names if name not in POLICIES]
    if unknown:
        raise ValueError(f"unknown DiffAugment policy {unknown[0]!r}: expected a comma-separated subset of "
                         f"{','.join(POLICIES)} (or none)")
    if len(set(names)) != len(names):
        raise ValueError(f"DiffAugment policy {text!r} names a policy twice")
    return tuple(name for name in POLICIES if name in names)


def _rounded(size: int, ratio: float) -> int:
    """size * ratio rounded half up, as the reference code sizes its shifts and squares."""
    return int(size * ratio + 0.5)


@dataclasses.dataclass
class Draws:
    """One batch's random parameters, per image (None where the policy is off): brightness offsets, saturation and
    contrast factors [N]; translations [N, 2] (rows, columns; the output pixel (i, j) is the input's (i + dy, j + dx));
    cutout centres [N, 2] (row, column)."""
    brightness: torch.Tensor | None = None
    saturation: torch.Tensor | None = None
    contrast: torch.Tensor | None = None
    translation: torch.Tensor | None = None
    cutout: torch.Tensor | None = None


def draw(policies: tuple[str, ...], shape: torch.Size | tuple[int, ...], dtype: torch.dtype,
         device: torch.device) -> Draws:
    """Random parameters for a batch of images of `shape` [N, C, H, W] (torch's default generator on `device`)."""
    n, _, h, w = shape
    draws = Draws()
    if "color" in policies:
        draws.brightness = torch.rand([n], dtype=dtype, device=device) - 0.5
        draws.saturation = torch.rand([n], dtype=dtype, device=device) * 2
        draws.contrast = torch.rand([n], dtype=dtype, device=device) + 0.5
    if "translation" in policies:
        shifts = (_rounded(h, TRANSLATION_RATIO), _rounded(w, TRANSLATION_RATIO))
        draws.translation = torch.stack([torch.randint(-s, s + 1, [n], device=device) for s in shifts], 1)
    if "cutout" in policies:
        # An even side s centred on index c covers c - s/2 .. c + s/2 - 1, so its centre may also be the index just
        # past the last pixel (as in the reference code); an odd-sided square is centred on a pixel.
        sides = (_rounded(h, CUTOUT_RATIO), _rounded(w, CUTOUT_RATIO))
        draws.cutout = torch.stack([torch.randint(0, size + 1 - side % 2, [n], device=device)
                                    for size, side in zip((h, w), sides)], 1)
    return draws


def _color(x: torch.Tensor, draws: Draws) -> torch.Tensor:
    """Brightness, then saturation around each pixel's channel mean, then contrast around the image mean."""
    x = x + draws.brightness.view(-1, 1, 1, 1)
    pixel_mean = x.mean(dim=1, keepdim=True)
    x = (x - pixel_mean) * draws.saturation.view(-1, 1, 1, 1) + pixel_mean
    image_mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - image_mean) * draws.contrast.view(-1, 1, 1, 1) + image_mean


def _translate(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """out[n, :, i, j] = x[n, :, i + dy_n, j + dx_n], 0 where that falls outside the image."""
    n, _, h, w = x.shape
    pad_h, pad_w = _rounded(h, TRANSLATION_RATIO), _rounded(w, TRANSLATION_RATIO)
    padded = torch.nn.functional.pad(x, [pad_w, pad_w, pad_h, pad_h])
    rows = torch.arange(h, device=x.device) + shifts[:, :1] + pad_h  # [N, H] indices into the padded image
    cols = torch.arange(w, device=x.device) + shifts[:, 1:] + pad_w  # [N, W]
    batch = torch.arange(n, device=x.device).view(-1, 1, 1)
    return padded[batch, :, rows.unsqueeze(2), cols.unsqueeze(1)].permute(0, 3, 1, 2)  # [N, H, W, C] -> NCHW


def _cut_out(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Zero the rows [c_y - side_h // 2, c_y - side_h // 2 + side_h) x columns (likewise) of every image."""
    _, _, h, w = x.shape
    inside = []  # per axis, [N, size]: whether each row (column) index lies in the square
    for axis, size in enumerate((h, w)):
        side = _rounded(size, CUTOUT_RATIO)
        start = centres[:, axis:axis + 1] - side // 2
        index = torch.arange(size, device=x.device)
        inside.append((index >= start) & (index < start + side))
    cut = inside[0].unsqueeze(2) & inside[1].unsqueeze(1)  # [N, H, W]
    return x * (~cut).unsqueeze(1).to(x.dtype)


def apply(x: torch.Tensor, draws: Draws) -> torch.Tensor:
    """The transforms `draws` holds, applied to images x [N, C, H, W] in policy order."""
    if draws.brightness is not None:
        x = _color(x, draws)
    if draws.translation is not None:
        x = _translate(x, draws.translation)
    if draws.cutout is not None:
        x = _cut_out(x, draws.cutout)
    return x


class DiffAugment:
    """The augmentation of one policy: `DiffAugment('color,translation,cutout')(images)` draws and applies it."""

    def __init__(self, policy: str):
        self.policies = parse_policy(policy)
        if not self.policies:
            raise ValueError("DiffAugment needs at least one policy (color, translation, cutout)")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return apply(x, draw(self.policies, x.shape, x.dtype, x.device))

    def __repr__(self) -> str:
        return f"DiffAugment({','.join(self.policies)!r})"
