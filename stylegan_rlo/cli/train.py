"""`scripts/train.py`: train or fine-tune StyleGAN2-ADA with the logistic or the rooted logistic objective.

Options are parsed here and validated by stylegan_rlo.training_config (one place); the work is
stylegan_rlo.launch / stylegan_rlo.training_loop.
"""

from __future__ import annotations

import json
import os

import click

from stylegan_rlo.cli.options import bool_option

from stylegan_rlo.dataset import DatasetError
from stylegan_rlo.errors import UserError
from stylegan_rlo.launch import launch_training, torchrun_env
from stylegan_rlo.run_dir import next_run_id
from stylegan_rlo.training_config import CFG_NAMES, DEFAULT_K, TrainingOptionsError, setup_training_options


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", required=True, metavar="PATH", help="Training data: a ZIP or a folder of images.")
@click.option("--outdir", required=True, metavar="DIR", help="Where run directories are created.")
@click.option("--resume", metavar="PKL", help="Network to start from: path or URL of an official pickle or one of "
              "our snapshots (ours continue kimg, tick and ADA p).")
@click.option("--loss", default="rooted", show_default=True, metavar="logistic|rooted",
              help="Adversarial objective.")
@click.option("--k", type=float, metavar="FLOAT", help=f"Root of the rooted objective [default: {DEFAULT_K:g}].")
@click.option("--gamma", type=float, metavar="FLOAT", help="R1 regularization weight [default: from --cfg].")
@click.option("--cfg", default="auto", show_default=True, metavar="|".join(CFG_NAMES),
              help="Base configuration (official hyperparameters).")
@click.option("--cbase", type=int, metavar="INT", help="Channel base (capacity) [default: from --cfg].")
@click.option("--cmax", type=int, metavar="INT", help="Max feature maps [default: 512].")
@click.option("--map-depth", type=int, metavar="INT", help="Mapping network depth [default: from --cfg].")
@click.option("--mbstd-group", type=int, metavar="INT", help="Minibatch std group size [default: from --cfg or "
              "the resumed pickle].")
@click.option("--glr", type=float, metavar="FLOAT", help="G learning rate [default: from --cfg].")
@click.option("--dlr", type=float, metavar="FLOAT", help="D learning rate [default: from --cfg].")
@click.option("--freezed", type=int, default=0, show_default=True, metavar="INT",
              help="Freeze the first N discriminator layers (FreezeD).")
@bool_option("--mirror", "Add x-flipped copies of the dataset.")
@click.option("--subset", type=int, metavar="INT", help="Train on a random subset of N images.")
@bool_option("--cond", "Conditional training on the dataset.json labels.")
@click.option("--aug", default="ada", show_default=True, metavar="ada|noaug|fixed", help="Augmentation mode.")
@click.option("--p", type=float, metavar="FLOAT", help="Augmentation probability (--aug fixed; initial p for ada).")
@click.option("--target", type=float, metavar="FLOAT", help="ADA target [default: 0.6].")
@click.option("--augpipe", metavar="NAME", help="Augmentation pipeline: blit|geom|color|filter|noise|cutout|bg|"
              "bgc|bgcf|bgcfn|bgcfnc [default: bgc].")
@click.option("--gpus", type=int, default=1, show_default=True, metavar="INT",
              help="Number of local processes (GPUs; on CPU, gloo processes). Under torchrun: its world size.")
@click.option("--device", default="auto", show_default=True, metavar="auto|cuda|cpu", help="Compute device.")
@click.option("--kimg", type=float, metavar="FLOAT", help="Total training length in thousands of images "
              "[default: from --cfg].")
@click.option("--tick", type=float, metavar="FLOAT", help="kimg per tick (status line, stats) [default: 4].")
@click.option("--snap", type=int, metavar="INT", help="Ticks between snapshots and image grids [default: 50]. Files are "
              "named by whole kimg as upstream, so a later one within the same kimg replaces the earlier one.")
@click.option("--batch", type=int, metavar="INT", help="Total batch size [default: from --cfg].")
@click.option("--batch-gpu", type=int, metavar="INT", help="Batch per forward pass per process "
              "[default: batch / gpus].")
@click.option("--seed", type=int, default=0, show_default=True, metavar="INT", help="Random seed.")
@click.option("--workers", type=int, default=3, show_default=True, metavar="INT", help="DataLoader workers.")
@click.option("--desc", metavar="STR", help="Extra text appended to the run directory name.")
@click.option("--metrics", default="none", show_default=True, metavar="LIST",
              help="Metrics at each snapshot: comma-separated (fid50k_full,kid50k_full) or none.")
@click.option("--metrics-num", type=int, metavar="INT", help="Generated images per metric [default: 50000].")
@bool_option("--dry-run", "Print the training options and exit.")
@bool_option("--trust-pickle", "Execute the code embedded in the --resume pickle (only for trusted files).")
def main(outdir: str, dry_run: bool, **opts) -> None:
    """Train (fine-tune) a StyleGAN2-ADA network.

    \b
    Example:
      python scripts/train.py --data dogs.zip --resume ffhq.pkl --loss rooted --k 8 --outdir runs
    """
    env = torchrun_env()
    is_main = env is None or env["rank"] == 0
    if env is not None:
        if opts["gpus"] not in (1, env["world_size"]):
            raise click.UsageError(f"--gpus {opts['gpus']} under torchrun: the process count comes from torchrun "
                                   f"(WORLD_SIZE={env['world_size']}); leave --gpus out")
        opts["gpus"] = env["world_size"]
    try:
        run_desc, options = setup_training_options(**opts)
    except TrainingOptionsError as e:
        raise click.UsageError(str(e)) from e

    if is_main:
        run_dir = os.path.join(outdir, f"{next_run_id(outdir):05d}-{run_desc}")
        click.echo("Training options:")
        click.echo(json.dumps(options, indent=2))
        click.echo()
        click.echo(f"Output directory:    {run_dir}")
        click.echo(f"Training data:       {options.training_set_kwargs['path']}")
        click.echo(f"Training duration:   {options.total_kimg:g} kimg")
        click.echo(f"Number of processes: {options.num_gpus} ({options.device})")
        click.echo(f"Image resolution:    {options.training_set_kwargs['resolution']}")
        click.echo(f"Conditional model:   {options.training_set_kwargs['use_labels']}")
        click.echo(f"Dataset x-flips:     {options.training_set_kwargs['xflip']}")
        click.echo(f"Objective:           {options.loss}" + (f" (k={options.k:g})" if options.k is not None else ""))
        click.echo()
    if dry_run:
        if is_main:
            click.echo("Dry run; exiting.")
        return
    try:
        run_dir = launch_training(run_desc, options, outdir)
    except DatasetError as e:  # a bad image that only shows when decoded (e.g. truncated data)
        raise click.ClickException(f"--data: {e}") from e
    except UserError as e:  # e.g. an --outdir that cannot be written
        raise click.ClickException(str(e)) from e
    if is_main:
        click.echo(f"Run directory: {run_dir}")
