"""`scripts/train.py`: train or fine-tune StyleGAN2-ADA with the logistic or the rooted logistic objective.

The options are generated from stylegan_rlo.training.options.TRAINING_OPTIONS and validated there (one place); the
work is stylegan_rlo.training.launch / stylegan_rlo.training.loop.
"""

from __future__ import annotations

import json
import os
import shlex
import sys

import click

from stylegan_rlo.cli.command import command
from stylegan_rlo.cli.options import bool_option, given, training_options
from stylegan_rlo.errors import UserError
from stylegan_rlo.objectives import Objective
from stylegan_rlo.training.config import setup_training_options
from stylegan_rlo.training.launch import launch_training, options_record, torchrun_env
from stylegan_rlo.training.preemption import TrainingStopped
from stylegan_rlo.training.run_dir import next_run_id


def resume_command(argv: list[str], snapshot: str) -> str:
    """The command line `argv` with its --resume replaced by `snapshot`."""
    args, skip = [], False
    for arg in argv[1:]:
        if skip or arg == "--resume" or arg.startswith("--resume="):
            skip = arg == "--resume"
            continue
        args.append(arg)
    return shlex.join(["python", argv[0]] + args + ["--resume", snapshot])


@command()
@click.option("--outdir", required=True, metavar="DIR", help="Where run directories are created.")
@training_options(required=("data",))
@bool_option("--dry-run", "Print the training options and exit.")
def main(outdir: str, dry_run: bool, **opts) -> None:
    """Train (fine-tune) a StyleGAN2-ADA network.

    \b
    Example:
      python scripts/train.py --data dogs.zip --resume ffhq.pkl --loss rooted --k 8 --outdir runs
    """
    opts = given(opts)
    env = torchrun_env()
    is_main = env is None or env["rank"] == 0
    if env is not None:
        if opts.get("gpus") not in (None, 1, env["world_size"]):
            raise UserError(f"--gpus {opts['gpus']} under torchrun: the process count comes from torchrun "
                            f"(WORLD_SIZE={env['world_size']}); leave --gpus out")
        opts["gpus"] = env["world_size"]
    run_desc, options = setup_training_options(**opts)

    if is_main:
        run_dir = os.path.join(outdir, f"{next_run_id(outdir):05d}-{run_desc}")
        click.echo("Training options:")
        click.echo(json.dumps(options_record(options), indent=2))
        click.echo()
        click.echo(f"Output directory:    {run_dir}")
        click.echo(f"Training data:       {options.training_set_kwargs['path']}")
        click.echo(f"Training duration:   {options.total_kimg:g} kimg")
        click.echo(f"Number of processes: {options.num_gpus} ({options.device})")
        click.echo(f"Image resolution:    {options.training_set_kwargs['resolution']}")
        click.echo(f"Conditional model:   {options.training_set_kwargs['use_labels']}")
        click.echo(f"Dataset x-flips:     {options.training_set_kwargs['xflip']}")
        click.echo(f"Objective:           {Objective.parse(options.loss_kwargs['objective']).label}")
        click.echo()
    if dry_run:
        if is_main:
            click.echo("Dry run; exiting.")
        return
    try:
        run_dir = launch_training(run_desc, options, outdir)
    except TrainingStopped as e:  # SIGINT / SIGTERM (not a user error): a snapshot with its training state is written
        if is_main and e.snapshot is None:
            click.echo(f"\nStopped by {e.signal_name} before training began; no snapshot was written "
                       f"(log: {os.path.join(e.run_dir, 'log.txt')}).", err=True)
        elif is_main:
            click.echo(f"\nStopped by {e.signal_name}; {e.snapshot} and its training state are written. "
                       f"Continue exactly with:\n  {resume_command(sys.argv, e.snapshot)}", err=True)
        click.get_current_context().exit(e.exit_code)
    if is_main:
        click.echo(f"Run directory: {run_dir}")
