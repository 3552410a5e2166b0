"""`scripts/compare_objectives.py`: fine-tune one checkpoint once per arm (objective and other per-arm options) and
seed under the same budget and compare FID/KID against a reference set. Options are parsed here (the shared training
options are generated from stylegan_rlo.training.options.TRAINING_OPTIONS, the arms by stylegan_rlo.experiments.arms);
the work is stylegan_rlo.experiments.compare."""

from __future__ import annotations

import contextlib
from typing import Iterator

import click

from stylegan_rlo.cli.command import command
from stylegan_rlo.cli.options import device_option, given, training_options
from stylegan_rlo.evaluation.generate import parse_grid
from stylegan_rlo.experiments.jobs import JobsStopped
from stylegan_rlo.objectives import DEFAULT_K
from stylegan_rlo.training.options import TRAINING_OPTIONS
from stylegan_rlo.training.preemption import TrainingStopped

PER_RUN_OPTIONS = [option.name for option in TRAINING_OPTIONS if option.per_run]
PER_ARM_FLAGS = ", ".join(option.name.replace("_", "-") for option in TRAINING_OPTIONS if option.per_arm)


@command()
@click.option("--network", required=True, metavar="PKL", help="Checkpoint every run starts from (path or URL).")
@click.option("--data", required=True, metavar="PATH", help="Fine-tuning dataset (ZIP or folder).")
@click.option("--ref", "--metric-data", "ref", required=True, metavar="PATH",
              help="Reference dataset for FID/KID (e.g. held-out images).")
@click.option("--arm", "arm_specs", multiple=True, metavar="LABEL:NAME=VALUE,...",
              help="One arm (repeatable): a label (letters, digits . _ + -) and its own training options, e.g. "
              "rlo8:loss=rooted,k=8 or g1:loss=rooted,k=2,gamma=1; options an arm may set: " + PER_ARM_FLAGS + ". "
              "They override the shared options of the same name. The first arm is the baseline.")
@click.option("--arms", "arms_file", metavar="FILE", help="Arms from a JSON or TOML file: {label: {option: value}} "
              "(before the --arm ones).")
@click.option("--objectives", metavar="LIST", help=f"Shorthand for one arm per objective, labelled by its name: "
              f"logistic, rooted:K (rooted alone = rooted:{DEFAULT_K:g}), comma-separated. [default: "
              f"logistic,rooted:{DEFAULT_K:g} without --arm/--arms]")
@click.option("--seeds", default="0", show_default=True, metavar="LIST", help="Training seeds, e.g. 0,1 or 0-3.")
@click.option("--kimg", type=float, required=True, metavar="FLOAT",
              help="Fine-tuning length of every run, in thousands of images (on top of the checkpoint's own).")
@click.option("--snap-kimg", type=float, metavar="FLOAT", help="kimg between snapshots / evaluations "
              "[default: kimg / 4].")
@click.option("--metrics", default="fid50k_full,kid50k_full", show_default=True, metavar="LIST",
              help="Metrics at every snapshot (fid50k_full, kid50k_full, pr50k3_inception, mem50k_inception: "
              "memorization of --data judged by --ref; pr50k3_full: VGG16 weights at the default place).")
@click.option("--metrics-num", type=int, metavar="INT", help="Generated images per evaluation [default: 50000].")
@click.option("--metric-seed", type=int, default=0, show_default=True, help="Seed of the metric latents (the same "
              "for every run and snapshot).")
@click.option("--inception-weights", metavar="FILE", help="torch-fidelity inception-v3-compat weights "
              "[default: the file `make setup` converts].")
@click.option("--outdir", required=True, metavar="DIR", help="Output folder (summary, plots, grids, runs/).")
@click.option("--continue", "resume", is_flag=True, help="Finish an interrupted comparison in --outdir: its finished "
              "runs are kept, the others run (again); the options and arms must be the same.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, help="Runs at a time, each in its "
              "own process (CPU: the threads are split between them; GPUs: spread over the visible ones) with its "
              "own log in --outdir/logs/; the results do not depend on it.")
@device_option()
@training_options(["best_metric"])
@click.option("--grid", default="8x4", show_default=True, metavar="COLSxROWS", help="Before/after image grid size.")
@training_options(PER_RUN_OPTIONS)
def main(network: str, data: str, ref: str, arm_specs: tuple[str, ...], arms_file: str | None, objectives: str | None,
         seeds: str, kimg: float, snap_kimg: float | None, metrics: str, metrics_num: int | None, metric_seed: int,
         inception_weights: str | None, outdir: str, resume: bool, jobs: int, device, best_metric: str | None,
         grid: str, **per_run) -> None:
    """Compare objectives (and other training options) by fine-tuning one checkpoint once per arm and seed.

    \b
    Examples (GPU machine):
      python scripts/compare_objectives.py --network ffhq256.pkl --data dogs.zip --ref dogs-heldout.zip \\
          --objectives logistic,rooted:8,rooted:2 --seeds 0,1 --kimg 200 --snap-kimg 20 \\
          --metrics-num 10000 --mirror --outdir compare-out
      python scripts/compare_objectives.py --network ffhq256.pkl --data dogs.zip --ref dogs-heldout.zip \\
          --arm g0.1:loss=rooted,k=2,gamma=0.1 --arm g1:loss=rooted,k=2,gamma=1 \\
          --arm g10:loss=rooted,k=2,gamma=10 --seeds 0-2 --kimg 200 --jobs 3 --outdir gammas
    """
    # start-up: the training loop and torch-fidelity load only once the command runs (fast --help)
    from stylegan_rlo.experiments.arms import load_arms_file, objective_arms, parse_arm
    from stylegan_rlo.experiments.compare import CompareError, compare_objectives, parse_seeds

    if objectives is not None and (arm_specs or arms_file):
        raise CompareError("--objectives is a shorthand for arms: give either it or --arm/--arms (e.g. --arm "
                           "logistic:loss=logistic --arm rlo8:loss=rooted,k=8)")
    arms = (load_arms_file(arms_file) if arms_file else []) + [parse_arm(spec) for spec in arm_specs]
    with stops_reported("Run the same command with --continue to finish it"):
        compare_objectives(network=network, data=data, ref=ref,
                           arms=arms or objective_arms(objectives or f"logistic,rooted:{DEFAULT_K:g}"),
                           seeds=parse_seeds(seeds), kimg=kimg,
                           snap_kimg=kimg / 4 if snap_kimg is None else snap_kimg, outdir=outdir,
                           metrics=metrics.split(","), metrics_num=metrics_num, device=str(device),
                           train_options=given(per_run), grid=parse_grid(grid), best_metric=best_metric,
                           metric_seed=metric_seed, inception_weights=inception_weights, resume=resume,
                           jobs=jobs, log=click.echo)


@contextlib.contextmanager
def stops_reported(how_to_continue: str) -> Iterator[None]:
    """A comparison stopped by SIGINT/SIGTERM (during a run: after its snapshot; during an evaluation: at once; with
    --jobs: every running run after its snapshot) ends with a message saying what is kept and `how_to_continue`, and
    the signal's exit status, not a traceback."""
    try:
        yield
    except (TrainingStopped, JobsStopped, KeyboardInterrupt) as e:
        if isinstance(e, TrainingStopped):
            during = f"by {e.signal_name} during a run (its last snapshot: {e.snapshot})"
        elif isinstance(e, JobsStopped):
            during = f"by {e.signal_name} (runs stopped after their snapshots: {', '.join(e.stopped) or 'none'})"
        else:
            during = "by SIGINT"
        click.echo(f"\nStopped {during}. The comparison is incomplete: summary.md covers the finished runs. "
                   f"{how_to_continue} (finished runs are kept; a stopped one starts again).", err=True)
        click.get_current_context().exit(130 if isinstance(e, KeyboardInterrupt) else e.exit_code)
