"""`scripts/compare_objectives.py`: fine-tune one checkpoint with several objectives / k values / seeds under the
same budget and compare FID/KID against a reference set. Options are parsed here (the per-run training options are
generated from stylegan_rlo.training.options.TRAINING_OPTIONS); the work is stylegan_rlo.experiments.compare."""

from __future__ import annotations

import contextlib
from typing import Iterator

import click

from stylegan_rlo.cli.command import command
from stylegan_rlo.cli.options import device_option, given, training_options
from stylegan_rlo.evaluation.generate import parse_grid
from stylegan_rlo.objectives import DEFAULT_K
from stylegan_rlo.training.options import TRAINING_OPTIONS
from stylegan_rlo.training.preemption import TrainingStopped

PER_RUN_OPTIONS = [option.name for option in TRAINING_OPTIONS if option.per_run]


@command()
@click.option("--network", required=True, metavar="PKL", help="Checkpoint every run starts from (path or URL).")
@click.option("--data", required=True, metavar="PATH", help="Fine-tuning dataset (ZIP or folder).")
@click.option("--ref", "--metric-data", "ref", required=True, metavar="PATH",
              help="Reference dataset for FID/KID (e.g. held-out images).")
@click.option("--objectives", default=f"logistic,rooted:{DEFAULT_K:g}", show_default=True, metavar="LIST",
              help=f"Objectives to compare: logistic, rooted:K (rooted alone = rooted:{DEFAULT_K:g}), comma-separated.")
@click.option("--seeds", default="0", show_default=True, metavar="LIST", help="Training seeds, e.g. 0,1 or 0-3.")
@click.option("--kimg", type=float, required=True, metavar="FLOAT",
              help="Fine-tuning length of every run, in thousands of images (on top of the checkpoint's own).")
@click.option("--snap-kimg", type=float, metavar="FLOAT", help="kimg between snapshots / evaluations "
              "[default: kimg / 4].")
@click.option("--metrics", default="fid50k_full,kid50k_full", show_default=True, metavar="LIST",
              help="Metrics at every snapshot (fid50k_full, kid50k_full, pr50k3_inception).")
@click.option("--metrics-num", type=int, metavar="INT", help="Generated images per evaluation [default: 50000].")
@click.option("--metric-seed", type=int, default=0, show_default=True, help="Seed of the metric latents (the same "
              "for every run and snapshot).")
@click.option("--inception-weights", metavar="FILE", help="torch-fidelity inception-v3-compat weights "
              "[default: the file `make setup` converts].")
@click.option("--outdir", required=True, metavar="DIR", help="Output folder (summary, plots, grids, runs/).")
@click.option("--continue", "resume", is_flag=True, help="Finish an interrupted comparison in --outdir: its finished "
              "runs are kept, the others run (again); the options must be the same.")
@device_option()
@training_options(["best_metric"])
@click.option("--grid", default="8x4", show_default=True, metavar="COLSxROWS", help="Before/after image grid size.")
@training_options(PER_RUN_OPTIONS)
def main(network: str, data: str, ref: str, objectives: str, seeds: str, kimg: float, snap_kimg: float | None,
         metrics: str, metrics_num: int | None, metric_seed: int, inception_weights: str | None, outdir: str,
         resume: bool, device, best_metric: str | None, grid: str, **per_run) -> None:
    """Compare adversarial objectives by fine-tuning one checkpoint once per objective and seed.

    \b
    Example (GPU machine):
      python scripts/compare_objectives.py --network ffhq256.pkl --data dogs.zip --ref dogs-heldout.zip \\
          --objectives logistic,rooted:8,rooted:2 --seeds 0,1 --kimg 200 --snap-kimg 20 \\
          --metrics-num 10000 --mirror --outdir compare-out
    """
    # start-up: the training loop and torch-fidelity load only once the command runs (fast --help)
    from stylegan_rlo.experiments.compare import compare_objectives, parse_objectives, parse_seeds

    with stops_reported("Run the same command with --continue to finish it"):
        compare_objectives(network=network, data=data, ref=ref, objectives=parse_objectives(objectives),
                           seeds=parse_seeds(seeds), kimg=kimg,
                           snap_kimg=kimg / 4 if snap_kimg is None else snap_kimg, outdir=outdir,
                           metrics=metrics.split(","), metrics_num=metrics_num, device=str(device),
                           train_options=given(per_run), grid=parse_grid(grid), best_metric=best_metric,
                           metric_seed=metric_seed, inception_weights=inception_weights, resume=resume,
                           log=click.echo)


@contextlib.contextmanager
def stops_reported(how_to_continue: str) -> Iterator[None]:
    """A comparison stopped by SIGINT/SIGTERM (during a run: after its snapshot; during an evaluation: at once) ends
    with a message saying what is kept and `how_to_continue`, and the signal's exit status, not a traceback."""
    try:
        yield
    except (TrainingStopped, KeyboardInterrupt) as e:
        during = f"by {e.signal_name} during a run (its last snapshot: {e.snapshot})" \
            if isinstance(e, TrainingStopped) else "by SIGINT"
        click.echo(f"\nStopped {during}. The comparison is incomplete: summary.md covers the finished runs. "
                   f"{how_to_continue} (finished runs are kept; a stopped one starts again).", err=True)
        click.get_current_context().exit(e.exit_code if isinstance(e, TrainingStopped) else 130)
