"""Converting generator output to pictures: float [-1, 1] NCHW tensors -> uint8 -> PNG files and grids."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from stylegan_rlo.fileio import atomic_write


def to_uint8(images: torch.Tensor | np.ndarray, drange: tuple[float, float] = (-1, 1)) -> np.ndarray:
    """Map an NCHW batch with values in `drange` to uint8 NHWC (clipped, rounded)."""
    x = images.detach().float().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images, np.float32)
    lo, hi = drange
    x = (x - lo) * (255.0 / (hi - lo))
    return np.rint(x).clip(0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def save_png(image_hwc: np.ndarray, path: str | os.PathLike) -> None:
    """Write one uint8 HWC image (1 or 3 channels) as PNG, atomically."""
    img = image_hwc[:, :, 0] if image_hwc.shape[2] == 1 else image_hwc
    with atomic_write(path, "wb") as f:
        Image.fromarray(img, "L" if img.ndim == 2 else "RGB").save(f, format="PNG")


def _grid_shape(h: int, w: int, c: int, cols: int, rows: int, labelled: bool, pad: int) -> tuple[int, int, int]:
    label_h = 12 if labelled else 0
    return rows * (h + pad + label_h) + pad, cols * (w + pad) + pad, c


def grid_bytes(h: int, w: int, c: int, cols: int, rows: int, labelled: bool, pad: int = 2) -> int:
    """Memory make_grid needs for a cols x rows grid of h x w x c tiles (checked before generating the tiles)."""
    gh, gw, gc = _grid_shape(h, w, c, cols, rows, labelled, pad)
    return gh * gw * gc


def make_grid(images_nhwc: np.ndarray, cols: int, rows: int, labels: Sequence[str] | None = None,
              pad: int = 2) -> np.ndarray:
    """Tile up to cols*rows uint8 NHWC images row by row; `labels` (one per image) are drawn under each tile."""
    n, h, w, c = images_nhwc.shape
    label_h = 12 if labels else 0
    grid = np.full(_grid_shape(h, w, c, cols, rows, bool(labels), pad), 255, np.uint8)
    for i in range(min(n, cols * rows)):
        y, x = divmod(i, cols)
        top, left = pad + y * (h + pad + label_h), pad + x * (w + pad)
        grid[top:top + h, left:left + w] = images_nhwc[i]
    if labels:
        pil = Image.fromarray(grid[:, :, 0] if c == 1 else grid)
        draw = ImageDraw.Draw(pil)
        for i, text in enumerate(list(labels)[:cols * rows]):
            y, x = divmod(i, cols)
            draw.text((pad + x * (w + pad), pad + y * (h + pad + label_h) + h), str(text), fill=0)
        grid = np.asarray(pil).reshape(grid.shape)
    return grid


def save_image_grid(images: torch.Tensor | np.ndarray, path: str | os.PathLike, grid: tuple[int, int],
                    drange: tuple[float, float] = (-1, 1), labels: Sequence[str] | None = None) -> None:
    """Save an NCHW batch (float in `drange`, or uint8 with drange=(0, 255)) as one (cols, rows) grid PNG."""
    cols, rows = grid
    save_png(make_grid(to_uint8(images, drange), cols, rows, labels), path)
