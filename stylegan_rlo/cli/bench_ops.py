"""`scripts/bench_ops.py`: time the upfirdn2d and bias_act CUDA kernels against the PyTorch path (needs a GPU).

    python scripts/bench_ops.py [--batch 32] [--dtype float32] [--max-res 256] [--iters 50] [--json out.json]

Options are parsed here; the work is stylegan_rlo.bench.ops.
"""

from __future__ import annotations

import json

import click

from stylegan_rlo.cli.command import command
from stylegan_rlo.fileio import atomic_write


@command()
@click.option("--batch", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--dtype", "dtype_name", type=click.Choice(["float32", "float16"]), default="float32", show_default=True)
@click.option("--min-res", type=click.IntRange(min=4), default=8, show_default=True)
@click.option("--max-res", type=click.IntRange(min=4), default=256, show_default=True)
@click.option("--iters", type=click.IntRange(min=1), default=50, show_default=True, help="Timed calls per measurement.")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the records to this file.")
def main(batch: int, dtype_name: str, min_res: int, max_res: int, iters: int, warmup: int,
         json_path: str | None) -> None:
    """Benchmark the custom CUDA ops against the PyTorch path."""
    if min_res > max_res:
        raise click.BadParameter(f"--min-res {min_res} is above --max-res {max_res}", param_hint="--min-res")
    # start-up: torch and the benchmark load only once the options are checked (fast --help)
    import torch

    from stylegan_rlo.bench.ops import format_table, require_kernels, run
    require_kernels()
    resolutions = [r for r in (4, 8, 16, 32, 64, 128, 256, 512, 1024) if min_res <= r <= max_res]
    records = run(batch, dtype_name, resolutions, iters, warmup)
    click.echo(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, batch {batch}, {dtype_name}")
    click.echo(format_table(records))
    if json_path:
        with atomic_write(json_path, "w") as fh:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "records": records},
                      fh, indent=1)
