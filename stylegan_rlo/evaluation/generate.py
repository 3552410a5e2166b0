"""Image generation with a trained generator: one image per seed, labelled grids, projected latents, style mixing.

Seed and projected-w images are made as the official generate.py makes them, so the same pickle and seed give
byte-identical PNGs with either code base: z = `np.random.RandomState(seed).randn(1, z_dim)` handed over as a float64
tensor (the mapping network converts it), one image per call (the fused modulated convolution of fp16 blocks depends
on the batch size), the network's own precision (fp16 blocks run in fp16 on the CPU as well; forcing fp32 changes
about 3% of the pixels by one level), and upstream's pixel conversion (see official_pixels).

Each image is written (atomically) as soon as it exists, so memory stays flat with the number of seeds and an
interrupted run keeps every image written so far; grids and the style-mixing table are held in memory whole and are
refused above MAX_GRID_BYTES. Existing files are replaced only with `overwrite`.
"""

from __future__ import annotations

import os
import re
import zipfile
from typing import Sequence

import numpy as np
import torch

from stylegan_rlo.errors import UserError
from stylegan_rlo.fileio import BoundedReadError, open_regular
from stylegan_rlo.images import grid_bytes, save_image_grid, save_png

NOISE_MODES = ("const", "random", "none")
MAX_LIST_ITEMS = 1_000_000  # values in one --seeds (or similar) list; each one is an image to make
# A grid PNG (--grid, --style-mix) is built whole in memory with its tiles (the style-mixing table as float32, 4x
# more): 256 MiB of uint8 pixels at most, e.g. an 8x8 grid of 1024x1024 RGB images (about 200 MiB); larger grids
# are refused before anything is generated.
MAX_GRID_BYTES = 2**28


class GenerateError(UserError):
    """Generation was asked for something the network or the inputs cannot provide."""


def parse_int_list(text: str, what: str = "list") -> list[int]:
    """'0-3,7,10-11' -> [0, 1, 2, 3, 7, 10, 11] (inclusive ranges, order kept); at most MAX_LIST_ITEMS values."""
    out: list[int] = []
    for part in str(text).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise GenerateError(f"bad {what} {text!r}: expected numbers or ranges like '0-63,70'")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise GenerateError(f"bad {what} {text!r}: range {lo}-{hi} runs backwards")
        if len(out) + hi - lo + 1 > MAX_LIST_ITEMS:
            raise GenerateError(f"bad {what} {text!r}: more than {MAX_LIST_ITEMS} values (one image each); "
                                f"split the work into smaller ranges")
        out.extend(range(lo, hi + 1))
    return out


def parse_grid(text: str) -> tuple[int, int]:
    """'8x4' -> (8 columns, 4 rows)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise GenerateError(f"bad grid {text!r}: expected COLSxROWS such as 8x8")
    return int(m.group(1)), int(m.group(2))


def official_pixels(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] NCHW -> uint8 NHWC as the official scripts do it: x * 127.5 + 128 in the tensor's own dtype and
    device, clamped to [0, 255] and truncated toward zero (which rounds half up, unlike to_uint8's rint)."""
    pixels = images.mul(127.5).add(128).clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


def seed_latents(seeds: Sequence[int], z_dim: int) -> np.ndarray:
    """float64 z [len(seeds), z_dim], one official RandomState draw per seed."""
    for s in seeds:
        if not 0 <= s < 2**32:
            raise GenerateError(f"seed {s} is out of range 0..{2**32 - 1}")
    return np.concatenate([np.random.RandomState(s).randn(1, z_dim) for s in seeds]).reshape(len(seeds), z_dim)


def class_labels(G: torch.nn.Module, class_idx: int | None, n: int) -> torch.Tensor:
    """One-hot labels [n, c_dim] for `class_idx` ([n, 0] for unconditional networks); clear errors on misuse."""
    c_dim = int(G.c_dim)
    if c_dim == 0:
        if class_idx is not None:
            raise GenerateError(f"--class {class_idx} given, but this network is unconditional (c_dim=0)")
        return torch.zeros([n, 0])
    if class_idx is None:
        raise GenerateError(f"this network is conditional with {c_dim} classes: pass --class C (0..{c_dim - 1})")
    if not 0 <= class_idx < c_dim:
        raise GenerateError(f"--class {class_idx} is out of range: this network has classes 0..{c_dim - 1}")
    c = torch.zeros([n, c_dim])
    c[:, class_idx] = 1
    return c


def _check_noise_mode(noise_mode: str) -> None:
    if noise_mode not in NOISE_MODES:
        raise GenerateError(f"noise mode {noise_mode!r} is not one of {', '.join(NOISE_MODES)}")


def _synthesis_kwargs(device: torch.device, noise_mode: str) -> dict:
    """Synthesis keywords for batched generation: the noise mode, and fp32 off the GPU (fp16 layers are a CUDA
    speed-up only)."""
    _check_noise_mode(noise_mode)
    return dict(noise_mode=noise_mode, force_fp32=device.type != "cuda")


@torch.no_grad()
def generate_images(G: torch.nn.Module, z: torch.Tensor | np.ndarray, c: torch.Tensor, *,
                    truncation_psi: float = 1.0, noise_mode: str = "const", batch: int = 16) -> torch.Tensor:
    """G(z, c) in batches on G's device -> float32 NCHW in [-1, 1] (on that device)."""
    device = next(G.parameters()).device
    z = torch.as_tensor(np.asarray(z, dtype=np.float32) if isinstance(z, np.ndarray) else z, dtype=torch.float32)
    kwargs = _synthesis_kwargs(device, noise_mode)
    parts = [G(z[i:i + batch].to(device), c[i:i + batch].to(device), truncation_psi=truncation_psi, **kwargs)
             for i in range(0, len(z), batch)]
    return torch.cat(parts).float()


@torch.no_grad()
def synthesize_ws(G: torch.nn.Module, ws: torch.Tensor | np.ndarray, *, noise_mode: str = "const",
                  batch: int = 16) -> torch.Tensor:
    """G.synthesis(ws) in batches -> float32 NCHW in [-1, 1]."""
    device = next(G.parameters()).device
    ws = torch.as_tensor(np.asarray(ws), dtype=torch.float32)
    kwargs = _synthesis_kwargs(device, noise_mode)
    return torch.cat([G.synthesis(ws[i:i + batch].to(device), **kwargs) for i in range(0, len(ws), batch)]).float()


def check_grid_size(G: torch.nn.Module, cols: int, rows: int, option: str) -> None:
    """GenerateError, before any work, when a cols x rows grid of G's images would exceed MAX_GRID_BYTES."""
    res, channels = int(G.img_resolution), int(G.img_channels)
    size = grid_bytes(res, res, channels, cols, rows, labelled=True)
    if size > MAX_GRID_BYTES:
        raise GenerateError(f"{option}: a {cols}x{rows} grid of {res}x{res} images would take {size / 2**20:.0f} MiB "
                            f"of memory; grids may take at most {MAX_GRID_BYTES // 2**20} MiB (the grid is built "
                            f"whole before it is written). Use a smaller grid: every image is also written on its "
                            f"own")


def _check_new_files(paths: Sequence[str], overwrite: bool) -> None:
    """GenerateError when files to write exist and `overwrite` is off (a second run must not silently replace the
    images of the first)."""
    existing = [p for p in paths if os.path.lexists(p)] if not overwrite else []
    if existing:
        raise GenerateError(f"{len(existing)} of the {len(paths)} files to write exist already, e.g. {existing[0]}; "
                            f"pass --overwrite to replace them, or choose another --outdir")


def save_seed_images(G: torch.nn.Module, seeds: Sequence[int], outdir: str, *, truncation_psi: float = 1.0,
                     class_idx: int | None = None, noise_mode: str = "const",
                     grid: tuple[int, int] | None = None, overwrite: bool = False) -> list[str]:
    """Write seedNNNN.png per seed, each as soon as it is made (and grid.png labelled with the seeds when `grid` is
    given); returns the paths. Everything is checked before the first image is made."""
    if not seeds:
        raise GenerateError("no seeds given")
    if grid is not None and grid[0] * grid[1] < len(seeds):
        raise GenerateError(f"--grid {grid[0]}x{grid[1]} holds {grid[0] * grid[1]} images but {len(seeds)} seeds "
                            f"were given; use a grid with at least {len(seeds)} cells or fewer seeds")
    if grid is not None:
        check_grid_size(G, grid[0], grid[1], "--grid")
    _check_noise_mode(noise_mode)
    paths = [os.path.join(outdir, f"seed{seed:04d}.png") for seed in seeds]
    grid_path = [os.path.join(outdir, "grid.png")] if grid is not None else []
    _check_new_files(paths + grid_path, overwrite)
    device = next(G.parameters()).device
    c = class_labels(G, class_idx, len(seeds)).to(device)
    tiles = []  # kept only for the grid, whose size is bounded by MAX_GRID_BYTES
    for i, (seed, path) in enumerate(zip(seeds, paths)):
        with torch.no_grad():
            img = official_pixels(G(torch.from_numpy(seed_latents([seed], int(G.z_dim))).to(device), c[i:i + 1],
                                    truncation_psi=truncation_psi, noise_mode=noise_mode))[0]
        save_png(img, path)
        if grid is not None:
            tiles.append(img)
    if grid is not None:
        save_image_grid(np.stack(tiles).transpose(0, 3, 1, 2), grid_path[0], grid, drange=(0, 255),
                        labels=[str(s) for s in seeds])
    return paths + grid_path


def load_projected_w(path: str, G: torch.nn.Module) -> np.ndarray:
    """The 'w' array [N, num_ws, w_dim] of a projector .npz, checked against G."""
    try:
        with open_regular(path, "--projected-w file") as f:
            data = np.load(f, allow_pickle=False)
            arrays = None
            if isinstance(data, np.lib.npyio.NpzFile):
                with data:
                    arrays = {k: data[k] for k in data.keys()}
    except BoundedReadError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise GenerateError(f"{path}: not a readable .npz file ({e})") from e
    if arrays is None or "w" not in arrays:
        raise GenerateError(f"{path}: expected an .npz with an array 'w' [N, num_ws, w_dim] (as the projector "
                            f"writes), found {sorted(arrays) if arrays is not None else 'a plain .npy array'}")
    ws = arrays["w"]
    want = (int(G.num_ws), int(G.w_dim))
    if ws.ndim != 3 or tuple(ws.shape[1:]) != want:
        raise GenerateError(f"{path}: 'w' has shape {list(ws.shape)}, this network needs [N, {want[0]}, {want[1]}]")
    return ws


def save_projected_images(G: torch.nn.Module, ws: np.ndarray, outdir: str, *, noise_mode: str = "const",
                          overwrite: bool = False) -> list[str]:
    """Write projNN.png for every w in `ws` (one synthesis call each, as upstream), each as soon as it is made;
    returns the paths."""
    _check_noise_mode(noise_mode)
    paths = [os.path.join(outdir, f"proj{i:02d}.png") for i in range(len(ws))]
    _check_new_files(paths, overwrite)
    device = next(G.parameters()).device
    for w, path in zip(ws, paths):
        with torch.no_grad():
            w = torch.as_tensor(np.asarray(w), dtype=torch.float32)
            save_png(official_pixels(G.synthesis(w[None].to(device), noise_mode=noise_mode))[0], path)
    return paths


@torch.no_grad()
def style_mix_images(G: torch.nn.Module, row_seeds: Sequence[int], col_seeds: Sequence[int],
                     styles: Sequence[int], *, truncation_psi: float = 1.0, class_idx: int | None = None,
                     noise_mode: str = "const") -> torch.Tensor:
    """Images [(R+1)*(C+1), C, H, W] for a mixing table: row 0 the column seeds, column 0 the row seeds, cell (r, c)
    the row seed's ws with layers `styles` taken from the column seed; the top-left cell is blank (white)."""
    num_ws = int(G.num_ws)
    bad = [s for s in styles if not 0 <= s < num_ws]
    if bad or not styles:
        raise GenerateError(f"--styles: layer(s) {bad or 'none'} given; layers must be in 0..{num_ws - 1} for "
                            f"this network")
    if not row_seeds or not col_seeds:
        raise GenerateError("style mixing needs at least one row seed and one column seed")
    check_grid_size(G, len(col_seeds) + 1, len(row_seeds) + 1, "--style-mix")
    device = next(G.parameters()).device
    seeds = list(row_seeds) + list(col_seeds)
    z = torch.as_tensor(seed_latents(seeds, int(G.z_dim)), dtype=torch.float32, device=device)
    c = class_labels(G, class_idx, len(seeds)).to(device)
    ws = G.mapping(z, c, truncation_psi=truncation_psi)
    row_ws, col_ws = ws[:len(row_seeds)], ws[len(row_seeds):]
    mixed = row_ws[:, None].repeat(1, len(col_seeds), 1, 1)  # [R, C, num_ws, w_dim]
    mixed[:, :, list(styles)] = col_ws[None, :, list(styles)]
    table = torch.cat([col_ws[None], mixed])  # row 0: the column seeds themselves
    table_imgs = synthesize_ws(G, table.flatten(0, 1), noise_mode=noise_mode)
    row_imgs = synthesize_ws(G, row_ws, noise_mode=noise_mode)
    out = torch.ones([len(row_seeds) + 1, len(col_seeds) + 1, *table_imgs.shape[1:]], device=table_imgs.device)
    out[:, 1:] = table_imgs.reshape(len(row_seeds) + 1, len(col_seeds), *table_imgs.shape[1:])
    out[1:, 0] = row_imgs
    return out.flatten(0, 1)


def save_style_mix_grid(G: torch.nn.Module, row_seeds: Sequence[int], col_seeds: Sequence[int],
                        styles: Sequence[int], outdir: str, overwrite: bool = False, **kwargs) -> str:
    """Write stylemix.png (see style_mix_images), tiles labelled 'row-col' by seed; returns its path."""
    _check_new_files([os.path.join(outdir, "stylemix.png")], overwrite)
    imgs = style_mix_images(G, row_seeds, col_seeds, styles, **kwargs)
    labels = [""] + [str(c) for c in col_seeds]
    for r in row_seeds:
        labels += [str(r)] + [f"{r}-{c}" for c in col_seeds]
    path = os.path.join(outdir, "stylemix.png")
    save_image_grid(imgs, path, (len(col_seeds) + 1, len(row_seeds) + 1), labels=labels)
    return path
