"""`scripts/dataset_tool.py`: build a training dataset (official ZIP/folder layout) from images, a ZIP, a NumPy
array file or a Stanford Dogs tree. Options are parsed here; the work is stylegan_rlo.data.dataset_tool."""

from __future__ import annotations

import json

import click

from stylegan_rlo.cli.command import command
from stylegan_rlo.data.dataset_tool import ON_ERROR, RESIZE_FILTERS, TRANSFORMS, convert_dataset


def _power_of_two(_ctx: click.Context, _param: click.Parameter, value: int | None) -> int | None:
    if value is not None and (value < 4 or value & (value - 1)):
        raise click.BadParameter(f"must be a power of two >= 4, got {value}")
    return value


@command()
@click.option("--source", required=True, metavar="PATH",
              help="Folder of images (recursive), .zip, .npy/.npz (uint8 [N,H,W(,C)]) or Stanford Dogs root "
                   "(with Images/ and Annotation/).")
@click.option("--dest", required=True, metavar="PATH", help="Output: a .zip archive or a new (or empty) folder.")
@click.option("--resolution", type=int, callback=_power_of_two, metavar="R",
              help="Output size RxR (power of two). Default: keep the source size (must be square).")
@click.option("--transform", type=click.Choice(TRANSFORMS),
              help="center-crop: largest centred square. center-crop-wide: keep full width, black bars. "
                   "pad: black borders up to a square (and up to R). box-crop: one image per annotated box "
                   "(Stanford Dogs; needs --resolution).")
@click.option("--labels", is_flag=True,
              help="Write class labels: dataset.json labels of the source, else top-level sub-folder names; "
                   "breeds for Stanford Dogs; the labels/y array of a .npz.")
@click.option("--max-images", type=click.IntRange(min=1), metavar="N", help="Write at most N images.")
@click.option("--resize-filter", type=click.Choice(tuple(RESIZE_FILTERS)), default="lanczos", show_default=True,
              help="PIL filter used when resizing.")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing --dest (a .zip, or a folder holding a dataset).")
@click.option("--on-error", type=click.Choice(ON_ERROR), default="stop", show_default=True,
              help="Unreadable images or bad annotations: stop with an error, or report and skip them.")
def main(source: str, dest: str, resolution: int | None, transform: str | None, labels: bool,
         max_images: int | None, resize_filter: str, on_error: str, overwrite: bool) -> None:
    """Convert images into a StyleGAN2-ADA training dataset (PNG files + dataset.json).

    \b
    Examples:
      python scripts/dataset_tool.py --source StanfordDogs/ --dest dogs64.zip \\
          --transform box-crop --resolution 64 --labels
      python scripts/dataset_tool.py --source silhouettes.npy --dest sil32.zip --transform pad --resolution 32
    """
    summary = convert_dataset(source, dest, resolution=resolution, transform=transform, labels=labels,
                              max_images=max_images, resize_filter=resize_filter, on_error=on_error,
                              overwrite=overwrite)
    click.echo(json.dumps({"dest": summary.dest, "num_images": summary.num_images,
                           "resolution": summary.resolution, "channels": summary.channels,
                           "labels": summary.labelled, "skipped": len(summary.skipped)}))
