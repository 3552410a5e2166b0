"""`scripts/scarce_report.py`: the cross-comparison report of experiment 2 (scarce dogs) from several comparison
summaries; the work is stylegan_rlo.experiments.scarce_report."""

from __future__ import annotations

import click

from stylegan_rlo.cli.command import command


@command()
@click.argument("summaries", nargs=-1, required=True, metavar="SUMMARY.json...")
@click.option("--outdir", required=True, metavar="DIR", help="Where report.json, report.md and scarce.png go.")
@click.option("--baseline", default="logistic", show_default=True, metavar="ARM",
              help="The arm every other arm is paired with (by seed, on the same training set).")
@click.option("--missing-ok", is_flag=True, help="A summary that does not exist is reported as missing instead of "
              "refused (for an experiment whose comparisons have not all run).")
def main(summaries: tuple[str, ...], outdir: str, baseline: str, missing_ok: bool) -> None:
    """Pair the runs of several comparisons (same network, reference, metric settings, seeds and shared options) by
    training set and seed, and report each arm against the baseline by training-set size.

    \b
    Example:
      python scripts/scarce_report.py experiments/scarce-dogs/n*/summary.json --outdir experiments/scarce-dogs
    """
    # start-up: the report's library (torch, scipy) loads only once the command runs (fast --help)
    from stylegan_rlo.experiments.scarce_report import load_summaries, scarce_report, write_report

    loaded, missing = load_summaries(summaries, allow_missing=missing_ok)
    report = scarce_report(loaded, missing, baseline=baseline)
    write_report(report, outdir)
    click.echo(f"Wrote {outdir}/report.md, report.json and scarce.png ({len(loaded)} summaries, "
               f"{len(report['missing'])} thing(s) missing)")
