"""`scripts/rlo_logreg.py`: the paper's convex experiment (Wine, logistic vs rooted objectives, gradient descent).
Options are parsed here; the work is stylegan_rlo.experiments.logreg."""

from __future__ import annotations

import click

from stylegan_rlo.cli.command import command
from stylegan_rlo.errors import UserError
from stylegan_rlo.experiments.logreg import format_table, load_wine_binary, run_experiment, save_plot
from stylegan_rlo.objectives import K_MAX, K_MIN, check_k


def _parse_ks(_ctx: click.Context, _param: click.Parameter, value: str) -> list[float]:
    try:
        ks = [check_k(v) for v in value.split(",") if v.strip()]
    except UserError as e:
        raise click.BadParameter(f"expected comma-separated roots such as 2,5,8,10: {e}") from None
    if not ks:
        raise click.BadParameter(f"need one or more roots k in [{K_MIN:g}, {K_MAX:g}], got {value!r}")
    return ks


@command()
@click.option("--iters", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Gradient-descent iterations per objective.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True,
              help="Step size (the same for every objective).")
@click.option("--ks", callback=_parse_ks, default="2,5,8,10", show_default=True, metavar="K,K,...",
              help="Roots k of the rooted objective to compare with the logistic loss.")
@click.option("--loss-target", type=click.FloatRange(min=0, min_open=True), default=0.05, show_default=True,
              help="Report the first iteration whose training cross-entropy is at most this.")
@click.option("--acc-target", type=click.FloatRange(0, 1), default=1.0, show_default=True,
              help="Report the first iteration whose training accuracy is at least this.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the 70/30 train/test split.")
@click.option("--out", default="rlo_logreg.png", show_default=True, metavar="PNG",
              help="Where to save the loss/accuracy plot.")
def main(iters: int, lr: float, ks: list[float], loss_target: float, acc_target: float, seed: int, out: str) -> None:
    """Logistic regression on UCI Wine (class 0 vs rest): logistic loss vs rooted logistic objectives.

    Prints a markdown table (iterations to the targets, final loss and accuracy, Hessian condition number
    at the final iterate) and saves a plot of loss and accuracy against iterations.
    """
    data = load_wine_binary(seed=seed)
    runs = run_experiment(data, ks=ks, iters=iters, lr=lr)
    save_plot(runs, out, lr=lr)
    click.echo(format_table(runs, loss_target=loss_target, acc_target=acc_target))
    click.echo(f"\nplot saved to {out}")
