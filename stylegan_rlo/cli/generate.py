"""`scripts/generate.py`: images from a network pickle (per seed, grids, projected latents, style mixing).
Options are parsed and checked here; the work is stylegan_rlo.evaluation.generate."""

from __future__ import annotations

import math
import os

import click

from stylegan_rlo.checkpoints.pickles import load_network_pkl
from stylegan_rlo.cli.command import command
from stylegan_rlo.cli.options import device_option
from stylegan_rlo.errors import UserError
from stylegan_rlo.evaluation import generate as gen
from stylegan_rlo.evaluation.generate import NOISE_MODES, parse_grid, parse_int_list


def _int_list(what: str):
    def parse(_ctx: click.Context, _param: click.Parameter, value):
        if value is None:
            return None
        try:
            if isinstance(value, tuple):  # --style-mix ROWS COLS
                return tuple(parse_int_list(v, what) for v in value)
            return parse_int_list(value, what)
        except UserError as e:
            raise click.BadParameter(str(e)) from None
    return parse


def _grid(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    try:
        return None if value is None else parse_grid(value)
    except UserError as e:
        raise click.BadParameter(str(e)) from None


def _finite(_ctx: click.Context, _param: click.Parameter, value: float) -> float:
    if not math.isfinite(value):
        raise click.BadParameter(f"must be a finite number, got {value}")
    return value


@command()
@click.option("--network", required=True, metavar="PKL", help="Network pickle (its G_ema generates).")
@click.option("--seeds", callback=_int_list("seed list"), metavar="LIST", help="Seeds, e.g. 0-63 or 1,5,9.")
@click.option("--trunc", "truncation_psi", type=float, default=1.0, show_default=True, callback=_finite,
              help="Truncation psi (1 = none, 0 = the average image).")
@click.option("--class", "class_idx", type=click.IntRange(min=0), metavar="C",
              help="Class index (required for conditional networks).")
@click.option("--noise-mode", type=click.Choice(NOISE_MODES), default="const", show_default=True)
@click.option("--grid", callback=_grid, metavar="COLSxROWS", help="Also write grid.png with the seed images, "
              "labelled by seed (e.g. 8x8).")
@click.option("--outdir", default="out", show_default=True, metavar="DIR", help="Where to write the PNG files.")
@click.option("--projected-w", metavar="NPZ", help="Render the 'w' array [N, num_ws, w_dim] of a projector .npz "
              "(projNN.png) instead of seeds.")
@click.option("--style-mix", nargs=2, callback=_int_list("style-mix seed list"), metavar="ROWS COLS",
              help="Write stylemix.png: rows x cols seed lists, e.g. --style-mix 1-4 10-13.")
@click.option("--styles", callback=_int_list("style layer list"), default="0-6", show_default=True, metavar="LIST",
              help="ws layers the column seeds give in --style-mix.")
@click.option("--overwrite", is_flag=True, help="Replace images of an earlier run in --outdir (refused without).")
@device_option()
@click.option("--trust-pickle", is_flag=True, help="Execute code embedded in the pickle (trusted files only).")
def main(network: str, seeds: list[int] | None, truncation_psi: float, class_idx: int | None, noise_mode: str,
         grid: tuple[int, int] | None, outdir: str, projected_w: str | None,
         style_mix: tuple[list[int], list[int]] | None, styles: list[int], overwrite: bool, device,
         trust_pickle: bool) -> None:
    """Generate images with a trained network.

    \b
    Examples:
      python scripts/generate.py --network net.pkl --seeds 0-63 --trunc 0.7 --grid 8x8 --outdir out
      python scripts/generate.py --network dogs_cond.pkl --seeds 0-7 --class 3
      python scripts/generate.py --network net.pkl --style-mix 1-4 10-15 --styles 0-3
      python scripts/generate.py --network net.pkl --projected-w projected_w.npz
    """
    chosen = [name for name, v in (("--seeds", seeds), ("--projected-w", projected_w), ("--style-mix", style_mix))
              if v is not None]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --seeds, --projected-w or --style-mix"
                               + (f" (got {', '.join(chosen)})" if chosen else ""))
    if grid is not None and seeds is None:
        raise click.BadParameter("only applies to --seeds", param_hint="--grid")
    try:
        os.makedirs(outdir, exist_ok=True)
    except OSError as e:
        raise click.BadParameter(f"cannot create folder {outdir!r} ({e.strerror})", param_hint="--outdir") from None
    G = load_network_pkl(network, trust_pickle=trust_pickle)["G_ema"]
    if G is None:
        raise UserError(f"{network} has no G_ema network")
    G = G.eval().requires_grad_(False).to(device)
    if seeds is not None:
        paths = gen.save_seed_images(G, seeds, outdir, truncation_psi=truncation_psi, class_idx=class_idx,
                                     noise_mode=noise_mode, grid=grid, overwrite=overwrite)
    elif projected_w is not None:
        paths = gen.save_projected_images(G, gen.load_projected_w(projected_w, G), outdir, noise_mode=noise_mode,
                                          overwrite=overwrite)
    else:
        paths = [gen.save_style_mix_grid(G, style_mix[0], style_mix[1], styles, outdir, overwrite=overwrite,
                                         truncation_psi=truncation_psi, class_idx=class_idx, noise_mode=noise_mode)]
    click.echo(f"wrote {len(paths)} file(s) to {outdir}")
