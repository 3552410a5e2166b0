"""`scripts/bench.py`: time the training iteration and print one JSON line (sec_per_kimg, img_per_sec, ...)."""

from __future__ import annotations

import json

import click

from stylegan_rlo.bench.profile import format_summary
from stylegan_rlo.bench.training import run_bench
from stylegan_rlo.cli.command import command
from stylegan_rlo.cli.options import device_option
from stylegan_rlo.objectives import DEFAULT_K, OBJECTIVES, Objective


@command()
@click.option("--res", type=click.IntRange(min=4), default=32, show_default=True, help="Image resolution.")
@click.option("--cbase", type=click.IntRange(min=1), default=2048, show_default=True, help="Channel base.")
@click.option("--cmax", type=click.IntRange(min=1), default=128, show_default=True, help="Max feature maps.")
@click.option("--batch", type=click.IntRange(min=2), default=8, show_default=True, help="Batch size.")
@click.option("--map", "map_depth", type=click.IntRange(min=1), default=2, show_default=True,
              help="Mapping network depth.")
@click.option("--iters", type=click.IntRange(min=1), default=16, show_default=True, help="Timed iterations.")
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True, help="Untimed iterations first.")
@device_option(default="cpu")
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads [default: torch's choice].")
@click.option("--loss", type=click.Choice(OBJECTIVES), default="logistic", show_default=True)
@click.option("--k", type=float, help=f"Root of the rooted objective [default: {DEFAULT_K:g} with --loss rooted].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--channels", type=click.IntRange(min=1), default=3, show_default=True, help="Image channels.")
@click.option("--mbstd-group", type=click.IntRange(min=1), help="D's minibatch-stddev group [default: --cfg auto's].")
@click.option("--profile", is_flag=True, help="Also print where the time goes (torch.profiler; slows the run).")
def main(res: int, cbase: int, cmax: int, batch: int, map_depth: int, iters: int, warmup: int, device,
         threads: int | None, loss: str, k: float | None, seed: int, channels: int, mbstd_group: int | None,
         profile: bool) -> None:
    """Benchmark one training iteration (same code as the training loop) on synthetic data."""
    if res & (res - 1):
        raise click.BadParameter(f"must be a power of two, got {res}", param_hint="--res")
    if mbstd_group is not None and batch % min(mbstd_group, batch):
        raise click.BadParameter(f"the batch ({batch}) must be a multiple of the group ({mbstd_group}) or smaller "
                                 f"than it", param_hint="--mbstd-group")
    result = run_bench(res=res, cbase=cbase, cmax=cmax, batch=batch, map_depth=map_depth, iters=iters,
                       warmup=warmup, device=device, threads=threads, objective=Objective(loss, k), seed=seed,
                       channels=channels, mbstd_group=mbstd_group, profile=profile)
    summary = result.pop("profile", None)
    click.echo(json.dumps(result))
    if summary is not None:
        click.echo(format_summary(summary))
