"""`scripts/compare_objectives.py`: fine-tune one checkpoint with several objectives / k values / seeds under the
same budget and compare FID/KID against a reference set. Options are parsed here; the work is
stylegan_rlo.compare (and, per run, the training library)."""

from __future__ import annotations

import click

from stylegan_rlo.cli.options import bool_option
from stylegan_rlo.generate import GenerateError, parse_grid

@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--network", required=True, metavar="PKL", help="Checkpoint every run starts from (path or URL).")
@click.option("--data", required=True, metavar="PATH", help="Fine-tuning dataset (ZIP or folder).")
@click.option("--ref", "--metric-data", "ref", required=True, metavar="PATH",
              help="Reference dataset for FID/KID (e.g. held-out images).")
@click.option("--objectives", default="logistic,rooted:8", show_default=True, metavar="LIST",
              help="Objectives to compare: logistic, rooted:K (rooted alone = rooted:8), comma-separated.")
@click.option("--seeds", default="0", show_default=True, metavar="LIST", help="Training seeds, e.g. 0,1 or 0-3.")
@click.option("--kimg", type=float, required=True, metavar="FLOAT",
              help="Fine-tuning length of every run, in thousands of images (on top of the checkpoint's own).")
@click.option("--snap-kimg", type=float, metavar="FLOAT", help="kimg between snapshots / evaluations "
              "[default: kimg / 4].")
@click.option("--metrics", default="fid50k_full,kid50k_full", show_default=True, metavar="LIST",
              help="Metrics at every snapshot (fid50k_full, kid50k_full).")
@click.option("--metrics-num", type=int, metavar="INT", help="Generated images per evaluation [default: 50000].")
@click.option("--metric-seed", type=int, default=0, show_default=True, help="Seed of the metric latents (the same "
              "for every run and snapshot).")
@click.option("--inception-weights", metavar="FILE", help="torch-fidelity inception-v3-compat weights "
              "[default: the file `make setup` converts].")
@click.option("--outdir", required=True, metavar="DIR", help="Output folder (summary, plots, grids, runs/).")
@click.option("--device", default="auto", show_default=True, metavar="auto|cuda|cpu", help="Compute device.")
@click.option("--ema-kimg", type=float, metavar="FLOAT", help="G_ema half-life in kimg [default: from --cfg auto, "
              "10; use ~kimg/5 for short runs].")
@click.option("--best-metric", metavar="NAME", help="Keep each run's best snapshot by this metric as "
              "best-NAME.pkl and report it [default: the first of --metrics].")
@click.option("--grid", default="8x4", show_default=True, metavar="COLSxROWS", help="Before/after image grid size.")
@bool_option("--mirror", "Add x-flipped copies of the fine-tuning dataset.")
@click.option("--batch", type=int, metavar="INT", help="Total batch size [default: from --cfg auto].")
@click.option("--batch-gpu", type=int, metavar="INT", help="Batch per forward pass per process.")
@click.option("--gamma", type=float, metavar="FLOAT", help="R1 regularization weight [default: from --cfg auto].")
@click.option("--glr", type=float, metavar="FLOAT", help="G learning rate.")
@click.option("--dlr", type=float, metavar="FLOAT", help="D learning rate.")
@click.option("--freezed", type=int, metavar="INT", help="Freeze the first N discriminator layers (FreezeD).")
@click.option("--mbstd-group", type=int, metavar="INT", help="Minibatch std group size.")
@click.option("--aug", metavar="ada|noaug|fixed", help="Augmentation mode [default: ada].")
@click.option("--p", type=float, metavar="FLOAT", help="Augmentation probability (fixed; initial for ada).")
@click.option("--target", type=float, metavar="FLOAT", help="ADA target [default: 0.6].")
@click.option("--augpipe", metavar="NAME", help="Augmentation pipeline [default: bgc].")
@click.option("--workers", type=int, metavar="INT", help="DataLoader workers [default: 3].")
@click.option("--gpus", type=int, metavar="INT", help="Processes (GPUs) per run [default: 1].")
@bool_option("--cond", "Conditional training on the dataset.json labels (--ref needs labels too).")
@bool_option("--trust-pickle", "Execute code embedded in the --network pickle (only for trusted files).")
def main(network: str, data: str, ref: str, objectives: str, seeds: str, kimg: float, snap_kimg: float | None,
         metrics: str, metrics_num: int | None, metric_seed: int, inception_weights: str | None, outdir: str,
         device: str, ema_kimg: float | None, grid: str, best_metric: str | None, mirror: bool, cond: bool,
         trust_pickle: bool, **passthrough) -> None:
    """Compare adversarial objectives by fine-tuning one checkpoint once per objective and seed.

    \b
    Example (GPU machine):
      python scripts/compare_objectives.py --network ffhq256.pkl --data dogs.zip --ref dogs-heldout.zip \\
          --objectives logistic,rooted:8,rooted:2 --seeds 0,1 --kimg 200 --snap-kimg 20 \\
          --metrics-num 10000 --mirror --outdir compare-out
    """
    from stylegan_rlo.compare import CompareError, compare_objectives, parse_objectives, parse_seeds
    from stylegan_rlo.dataset import DatasetError
    from stylegan_rlo.inception_weights import InceptionWeightsError
    from stylegan_rlo.metrics import MetricError
    from stylegan_rlo.pickles import PickleError
    from stylegan_rlo.preemption import TrainingStopped

    try:
        grid_size = parse_grid(grid)
    except GenerateError as e:
        raise click.BadParameter(str(e), param_hint="--grid") from None
    # The remaining options (--batch ... --gpus) go unchanged to every run's setup_training_options.
    train_options = {name: value for name, value in passthrough.items() if value is not None}
    train_options.update({name: True for name, flag in (("mirror", mirror), ("cond", cond),
                                                          ("trust_pickle", trust_pickle)) if flag})
    try:
        objective_list = parse_objectives(objectives)
        seed_list = parse_seeds(seeds)
    except CompareError as e:
        raise click.UsageError(str(e)) from None
    try:
        compare_objectives(network=network, data=data, ref=ref, objectives=objective_list, seeds=seed_list,
                           kimg=kimg, snap_kimg=kimg / 4 if snap_kimg is None else snap_kimg, outdir=outdir,
                           metrics=metrics.split(","), metrics_num=metrics_num, device=device,
                           train_options=train_options, ema_kimg=ema_kimg, grid=grid_size, best_metric=best_metric,
                           metric_seed=metric_seed,
                           inception_weights=inception_weights, log=click.echo)
    except CompareError as e:
        raise click.UsageError(str(e)) from None
    except (MetricError, InceptionWeightsError, DatasetError, PickleError) as e:
        raise click.ClickException(str(e)) from None
    except TrainingStopped as e:  # SIGINT / SIGTERM during a run: it stopped after a snapshot
        click.echo(f"\nStopped by {e.signal_name} during a run; its last snapshot is {e.snapshot}. The comparison is "
                   f"incomplete: summary.md covers the finished runs.", err=True)
        click.get_current_context().exit(e.exit_code)
