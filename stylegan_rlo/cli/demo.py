"""`scripts/demo.py` (what `make demo` runs): fine-tune the pretrained animal model on dogs with the logistic and the
rooted objective and compare FID/KID. Options are parsed here; the work is stylegan_rlo.experiments.demo."""

from __future__ import annotations

import click

from stylegan_rlo.cli.command import command
from stylegan_rlo.cli.compare_objectives import stops_reported
from stylegan_rlo.cli.options import device_option


@command()
@click.option("--outdir", default="demo-out", show_default=True, metavar="DIR", help="Where the results go.")
@click.option("--network", metavar="PKL", help="Source model [default: the package's assets/demo-source.pkl].")
@device_option(default="cpu", help_text="Compute device (the demo is sized for 2 CPU cores).")
@click.option("--data-only", is_flag=True, help="Only build the demo datasets (and check the source model), then "
              "stop: e.g. on a machine with network access before an offline run.")
def main(outdir: str, network: str | None, device, data_only: bool) -> None:
    """Fine-tune a small pretrained StyleGAN2 on 300 dog silhouettes with both objectives and compare them."""
    # start-up: the training loop and torch-fidelity load only once the command runs (fast --help)
    from stylegan_rlo.experiments.demo import DEMO_NETWORK, prepare_demo_data, run_demo
    if data_only:
        paths = prepare_demo_data(network or DEMO_NETWORK, log=click.echo)
        click.echo(f"Demo data ready: {paths.dogs}, {paths.dogs_heldout}")
        return
    with stops_reported(f"Run it again (same --outdir {outdir}) to continue"):
        run_demo(outdir, network=network or DEMO_NETWORK, device=str(device), log=click.echo)
