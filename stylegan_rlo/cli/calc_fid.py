"""`scripts/calc_fid.py`: FID/KID of a network pickle against a dataset (its training data, or held-out images with
--ref), or of one dataset against another. Options are parsed and checked here; the work is
stylegan_rlo.evaluation.metrics."""

from __future__ import annotations

import json
import os
import sys

import click

from stylegan_rlo.cli.command import command
from stylegan_rlo.cli.options import device_option
from stylegan_rlo.errors import UserError

RUN_DIR_MARKER = "training_options.json"


def _parse_metrics(_ctx: click.Context, _param: click.Parameter, value: str) -> list[str]:
    from stylegan_rlo.evaluation.metrics import validate_metric_names  # start-up: torch, torch-fidelity (fast --help)
    try:
        names = validate_metric_names(value.split(","))
    except UserError as e:
        raise click.BadParameter(str(e)) from None
    if not names:
        raise click.BadParameter("name at least one metric, e.g. fid50k_full,kid50k_full")
    return names


def _print_records(records: list[dict]) -> None:
    """One JSON line per record on stdout, flushed: out before any file is written."""
    for record in records:
        click.echo(json.dumps(record))
    sys.stdout.flush()


def run_dir_of(network: str) -> str | None:
    """The folder of a local network pickle when it is a training run directory (has training_options.json)."""
    if "://" in network:
        return None
    folder = os.path.dirname(os.path.abspath(network))
    return folder if os.path.isfile(os.path.join(folder, RUN_DIR_MARKER)) else None


@command()
@click.option("--network", metavar="PKL", help="Network pickle (its G_ema is evaluated).")
@click.option("--data", required=True, metavar="PATH",
              help="Dataset (.zip or folder): the real images; with --network, the training data.")
@click.option("--ref", metavar="PATH", help="Reference dataset. Without --network: compare --data against it. With "
              "--network: held-out images; the metrics compare the generated images with them, and "
              "mem50k_inception takes them as its held-out set.")
@click.option("--metrics", "metric_names", default="fid50k_full", show_default=True, callback=_parse_metrics,
              metavar="LIST", help="Comma-separated: fid50k_full, kid50k_full (or fid, kid), pr50k3_inception, "
              "pr50k3_full (needs --vgg16), mem50k_inception.")
@click.option("--num", type=click.IntRange(min=2), metavar="N", help="Generated images [default: 50000].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of latents, labels, noise and KID subsets.")
@click.option("--mirror", is_flag=True, help="Add x-flipped copies of --data's images (as training with --mirror); "
              "without --network, of --ref's too.")
@device_option()
@click.option("--batch", type=click.IntRange(min=1), default=64, show_default=True, help="Images per batch.")
@click.option("--inception-weights", metavar="FILE",
              help="torch-fidelity inception-v3-compat weights [default: the file `make setup` converts].")
@click.option("--vgg16", "vgg16_weights", metavar="FILE", help="VGG16 weights for pr50k3_full: torchvision's state "
              "dict vgg16-397923af.pth (never a TorchScript file) [default: .cache/vgg16/ or torch hub's "
              "checkpoints folder].")
@click.option("--trust-pickle", is_flag=True, help="Execute code embedded in the pickle (trusted files only).")
@click.option("--verbose", is_flag=True, help="Show torch-fidelity's progress on stderr.")
@click.option("--nn-picture", metavar="PNG", help="Also write this picture: the generated images (or --data's, "
              "without --network) nearest to the training data (--ref's, without --network), each with its 3 "
              "nearest training images and their distances.")
def main(network: str | None, data: str, ref: str | None, metric_names: list[str], num: int | None, seed: int,
         mirror: bool, device, batch: int, inception_weights: str | None, vgg16_weights: str | None,
         trust_pickle: bool, verbose: bool, nn_picture: str | None) -> None:
    """Compute FID/KID and print one JSON line per metric (the official metric-*.jsonl record).

    The records are printed before anything is written (the run directory's metric-*.jsonl, --nn-picture), so a
    full disk or read-only folder costs no result: it ends in one message naming the file (exit status 2).

    \b
    Examples:
      python scripts/calc_fid.py --network runs/00000-dogs/network-snapshot-000200.pkl --data dogs.zip --num 5000
      python scripts/calc_fid.py --network snap.pkl --data dogs.zip --ref heldout.zip --metrics fid,mem50k_inception
      python scripts/calc_fid.py --data half_a.zip --ref half_b.zip --metrics fid,kid
    """
    # start-up: torch and torch-fidelity load only once the command runs (fast --help)
    from stylegan_rlo.checkpoints.pickles import load_network_pkl
    from stylegan_rlo.evaluation.metrics import MEM_METRIC, evaluate_datasets, evaluate_snapshot

    if network is None and ref is None:
        raise click.UsageError("give --network PKL (a generator against --data), --ref PATH (--data against another "
                               "dataset), or both (a generator against held-out images --ref; --data is its "
                               "training data)")
    if network is None and num is not None:
        raise click.BadParameter("only applies to --network (the generated image count)", param_hint="--num")
    if network is not None and ref is None and MEM_METRIC in metric_names:
        raise click.UsageError(f"--metrics {MEM_METRIC} with --network needs --ref HELD_OUT: images of the data that "
                               f"the network was not trained on, whose distances to the training data (--data) "
                               f"calibrate how near a generated image may come")
    common = dict(metrics=metric_names, device=device, seed=seed, batch=batch, inception_weights=inception_weights,
                  vgg16_weights=vgg16_weights, verbose=verbose, nn_picture=nn_picture, emit=_print_records)
    if network is None:
        evaluate_datasets(data, ref, mirror=mirror, **common)
    else:
        G = load_network_pkl(network, trust_pickle=trust_pickle)["G_ema"]
        if G is None:
            raise UserError(f"{network} has no G_ema network to evaluate")
        # With --ref the metrics compare with the held-out images as they are, as training's --metric-data does.
        evaluate_snapshot(G, data=data if ref is None else ref, mirror=mirror and ref is None, training_data=data,
                          training_mirror=mirror, num_gen=num, snapshot_pkl=network, run_dir=run_dir_of(network),
                          **common)
