"""The image grids of a run: reals.png once, and fakes*.png from fixed latents and labels, so that successive
grids show how the same samples evolve."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch

from stylegan_rlo.data.dataset import ImageFolderDataset
from stylegan_rlo.images import save_image_grid


def default_grid_size(image_shape: list[int]) -> tuple[int, int]:
    """(cols, rows) of reals.png / fakes*.png as upstream: about 7680x4320 pixels, 7..32 columns, 4..32 rows."""
    return int(np.clip(7680 // image_shape[2], 7, 32)), int(np.clip(4320 // image_shape[1], 4, 32))


def setup_snapshot_image_grid(training_set: ImageFolderDataset, grid_size: tuple[int, int], random_seed: int = 0
                              ) -> tuple[tuple[int, int], np.ndarray, np.ndarray]:
    """Grid (cols, rows) of randomly chosen reals (one label per row if labelled), with their labels."""
    rnd = np.random.RandomState(random_seed)
    gw, gh = grid_size
    if not training_set.has_labels:
        order = list(range(len(training_set)))
        rnd.shuffle(order)
        indices = [order[i % len(order)] for i in range(gw * gh)]
    else:
        groups: dict[tuple, list[int]] = {}
        for idx in range(len(training_set)):
            groups.setdefault(tuple(training_set.get_label(idx).flat[::-1]), []).append(idx)
        keys = sorted(groups)
        for key in keys:
            rnd.shuffle(groups[key])
        indices = []
        for y in range(gh):
            members = groups[keys[y % len(keys)]]
            indices += [members[x % len(members)] for x in range(gw)]
            groups[keys[y % len(keys)]] = [members[(i + gw) % len(members)] for i in range(len(members))]
    images, labels = zip(*[training_set[i] for i in indices])
    return (gw, gh), np.stack(images), np.stack(labels)


@dataclasses.dataclass
class FakesGrid:
    """The fixed latents and labels of fakes*.png, in generator batches, and the grid they fill."""
    size: tuple[int, int]
    z: tuple[torch.Tensor, ...]
    c: tuple[torch.Tensor, ...]
    force_fp32: bool

    def save(self, G_ema: torch.nn.Module, path: str) -> None:
        """Generate the grid's images with `G_ema` (constant noise) and write them to `path`."""
        with torch.no_grad():
            images = torch.cat([G_ema(z=z, c=c, noise_mode="const", force_fp32=self.force_fp32).cpu()
                                for z, c in zip(self.z, self.c)])
        save_image_grid(images, path, grid=self.size)


def export_start_grids(training_set: ImageFolderDataset, G_ema: torch.nn.Module, run_dir: str,
                       grid_size: tuple[int, int], *, batch_gpu: int, device: torch.device,
                       force_fp32: bool) -> FakesGrid:
    """Write reals.png and fakes_init.png; returns the grid of the later fakes*.png (its latents drawn here)."""
    grid_size, images, labels = setup_snapshot_image_grid(training_set, grid_size)
    save_image_grid(images, os.path.join(run_dir, "reals.png"), grid=grid_size, drange=(0, 255))
    grid_batch = batch_gpu if device.type == "cuda" else max(batch_gpu, 64)  # CPU: fewer, larger calls
    grid = FakesGrid(size=grid_size, z=torch.randn([labels.shape[0], G_ema.z_dim], device=device).split(grid_batch),
                     c=torch.from_numpy(labels).to(device).split(grid_batch), force_fp32=force_fp32)
    grid.save(G_ema, os.path.join(run_dir, "fakes_init.png"))
    return grid
