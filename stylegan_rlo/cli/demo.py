"""`scripts/demo.py` (what `make demo` runs): fine-tune the pretrained animal model on dogs with the logistic and the
rooted objective and compare FID/KID. Options are parsed here; the work is stylegan_rlo.demo."""

from __future__ import annotations

import click

from stylegan_rlo.cli.command import command
from stylegan_rlo.cli.options import device_option


@command()
@click.option("--outdir", default="demo-out", show_default=True, metavar="DIR", help="Where the results go.")
@click.option("--network", metavar="PKL", help="Source model [default: assets/demo-source.pkl].")
@device_option(default="cpu", help_text="Compute device (the demo is sized for 2 CPU cores).")
def main(outdir: str, network: str | None, device) -> None:
    """Fine-tune a small pretrained StyleGAN2 on 300 dog silhouettes with both objectives and compare them."""
    from stylegan_rlo.demo import DEMO_NETWORK, run_demo
    run_demo(outdir, network=network or DEMO_NETWORK, device=str(device), log=click.echo)
