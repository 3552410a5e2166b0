"""`scripts/gpu_check.py` (`make gpu-check`): everything a GPU must confirm, in at most 8 minutes, written to
gpu-report.md and gpu-report.json. Without a CUDA GPU it says so in one line and exits 0. See docs/gpu.md."""

from __future__ import annotations

import click

from stylegan_rlo.cli.command import command

# The step names, for --help without loading torch (tests/bench/test_gpu_check.py checks them against the library).
STEP_NAMES = ("env", "plugins", "op_tests", "fp16_training", "exact_resume", "speed_kernels", "speed_pytorch",
              "speed_fp32", "inception")


@command()
@click.option("--outdir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Folder of gpu-report.md and gpu-report.json.")
@click.option("--quick", is_flag=True, help="Smaller runs and fewer iterations: about 5.5 minutes instead of 8.")
@click.option("--skip", metavar="STEP,...", help=f"Steps to leave out, of: {', '.join(STEP_NAMES)}.")
def main(outdir: str, quick: bool, skip: str | None) -> None:
    """Check this machine's GPU: versions, plugin build and self-check, the CUDA op tests, fp16 fine-tuning at
    256x256, exact resume, training speed (kernels, PyTorch path, fp32) and Inception throughput.

    Exit status 0 when every step passed or was skipped (and without a GPU), 1 when a step failed."""
    # start-up: torch and the check load only when it runs (fast --help)
    from stylegan_rlo.bench.gpu_check import parse_skip, run_check
    status = run_check(outdir, quick=quick, skip=parse_skip(skip), echo=click.echo)
    if status:
        raise SystemExit(status)
