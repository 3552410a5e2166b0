"""`scripts/demo.py` (what `make demo` runs): fine-tune the pretrained animal model on dogs with the logistic and the
rooted objective and compare FID/KID. Options are parsed here; the work is stylegan_rlo.demo."""

from __future__ import annotations

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--outdir", default="demo-out", show_default=True, metavar="DIR", help="Where the results go.")
@click.option("--network", metavar="PKL", help="Source model [default: assets/demo-source.pkl].")
@click.option("--device", default="cpu", show_default=True, metavar="cpu|cuda|auto",
              help="Compute device (the demo is sized for 2 CPU cores).")
def main(outdir: str, network: str | None, device: str) -> None:
    """Fine-tune a small pretrained StyleGAN2 on 300 dog silhouettes with both objectives and compare them."""
    from stylegan_rlo.compare import CompareError
    from stylegan_rlo.demo import DEMO_NETWORK, DemoError, run_demo
    from stylegan_rlo.demo_data import DemoDataError
    from stylegan_rlo.inception_weights import InceptionWeightsError
    from stylegan_rlo.metrics import MetricError

    try:
        run_demo(outdir, network=network or DEMO_NETWORK, device=device, log=click.echo)
    except (DemoError, DemoDataError, InceptionWeightsError, CompareError, MetricError) as e:
        raise click.ClickException(str(e)) from None
