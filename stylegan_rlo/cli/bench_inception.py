"""`scripts/bench_inception.py`: FID Inception throughput on the CPU, contiguous vs channels-last weights."""

from __future__ import annotations

import click
import torch

from stylegan_rlo.cli.command import command


@command()
@click.option("--batch", type=click.IntRange(min=1), default=32, show_default=True, help="Images per timed batch.")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True, help="Timed batches per format.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="torch CPU threads.")
@click.option("--inception-weights", metavar="FILE", help="Weights [default: the file `make setup` converts].")
def main(batch: int, rounds: int, threads: int, inception_weights: str | None) -> None:
    """Print images/s of each memory format (median of the rounds) and their ratio."""
    from stylegan_rlo.bench.inception import inception_throughput  # start-up: torch-fidelity (fast --help)
    torch.set_num_threads(threads)
    rates = inception_throughput(inception_weights, batch=batch, rounds=rounds)
    medians = {name: sorted(r)[len(r) // 2] for name, r in rates.items()}
    for name, r in rates.items():
        click.echo(f"{name:14s} {medians[name]:6.2f} img/s (rounds: {', '.join(f'{x:.2f}' for x in r)})")
    click.echo(f"channels_last / contiguous: {medians['channels_last'] / medians['contiguous']:.2f}x")
