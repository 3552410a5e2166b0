"""The paper's convex experiment: binary logistic regression on UCI Wine (class 0 vs rest) trained by full-batch
gradient descent with the logistic loss or the rooted logistic objective, compared by speed, accuracy and the
conditioning of the Hessian. Everything runs in float64 on the CPU; scikit-learn only supplies the data."""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np
import torch

from stylegan_rlo.errors import UserError
from stylegan_rlo.fileio import atomic_write
from stylegan_rlo.objectives import Objective, logistic


@dataclasses.dataclass
class BinaryData:
    """Standardized features with a trailing bias column of ones, labels in {-1, +1} (+1 = wine class 0)."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


@dataclasses.dataclass
class RunResult:
    """One gradient-descent run: histories are per iteration (index t = iterate before the t-th update)."""
    objective: Objective
    w: torch.Tensor
    cross_entropy: list[float]   # mean logistic loss on the training set (the common yardstick)
    objective_value: list[float]  # the objective being minimized
    train_accuracy: list[float]
    test_accuracy: float
    hessian_cond: float  # of the run's own objective at the final iterate


def first_reach(history: Sequence[float], target: float, below: bool) -> int | None:
    """First iteration whose value reaches `target` (<= when `below`, else >=); None if never."""
    for t, v in enumerate(history):
        if (v <= target) if below else (v >= target):
            return t
    return None


def load_wine_binary(test_fraction: float = 0.3, seed: int = 0) -> BinaryData:
    """UCI Wine, class 0 against the rest, split per class with a seeded shuffle, standardized by training stats."""
    try:
        from sklearn.datasets import load_wine  # optional package: scikit-learn comes with the logreg extra
    except ImportError as e:
        raise UserError("the Wine experiment needs scikit-learn for its bundled copy of the data: "
                          "pip install scikit-learn (or pip install -e '.[logreg]')") from e
    if not 0 <= test_fraction < 1:
        raise UserError(f"test_fraction must be in [0, 1), got {test_fraction}")
    features, classes = load_wine(return_X_y=True)
    labels = np.where(classes == 0, 1.0, -1.0)
    rng = np.random.default_rng(seed)
    test_idx = []
    for value in (1.0, -1.0):  # stratified: the same share of each class goes to the test set
        idx = rng.permutation(np.flatnonzero(labels == value))
        test_idx.extend(idx[:int(round(len(idx) * test_fraction))])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_idx] = True
    mean = features[~is_test].mean(axis=0)
    std = features[~is_test].std(axis=0)

    def prepare(mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = (features[mask] - mean) / std
        x = np.hstack([x, np.ones((len(x), 1))])
        return torch.tensor(x, dtype=torch.float64), torch.tensor(labels[mask], dtype=torch.float64)

    x_train, y_train = prepare(~is_test)
    x_test, y_test = prepare(is_test)
    return BinaryData(x_train, y_train, x_test, y_test)


def mean_objective(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, objective: Objective) -> torch.Tensor:
    """Mean per-example objective of the margins y * (x . w)."""
    return objective.function(y * (x @ w)).mean()


def accuracy(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> float:
    """Share of examples on the right side of the hyperplane (a margin of exactly 0 counts as wrong)."""
    return float((y * (x @ w) > 0).double().mean()) if len(y) else float("nan")


def hessian_condition_number(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, objective: Objective) -> float:
    """lambda_max / lambda_min of the Hessian of the mean objective at w (autograd, float64)."""
    hessian = torch.autograd.functional.hessian(lambda v: mean_objective(x, y, v, objective), w.detach().double())
    eig = torch.linalg.eigvalsh(hessian)
    return float(eig[-1] / eig[0]) if eig[0] > 0 else float("inf")


def gradient_descent(data: BinaryData, objective: Objective, iters: int, lr: float) -> RunResult:
    """Plain full-batch gradient descent from w = 0, recording the yardsticks at every iterate."""
    if iters < 0 or not lr > 0:
        raise UserError(f"need iters >= 0 and lr > 0, got iters={iters}, lr={lr}")
    loss_fn = objective.function
    x, y = data.x_train, data.y_train
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    ce, obj_hist, acc_hist = [], [], []
    for step in range(iters + 1):
        margins = y * (x @ w)
        value = loss_fn(margins).mean()
        ce.append(float(logistic(margins.detach()).mean()))
        obj_hist.append(float(value.detach()))
        acc_hist.append(float((margins.detach() > 0).double().mean()))
        if step == iters:
            break
        (grad,) = torch.autograd.grad(value, w)
        with torch.no_grad():
            w -= lr * grad
    w = w.detach()
    return RunResult(objective=objective, w=w, cross_entropy=ce, objective_value=obj_hist,
                     train_accuracy=acc_hist, test_accuracy=accuracy(data.x_test, data.y_test, w),
                     hessian_cond=hessian_condition_number(x, y, w, objective))


def run_experiment(data: BinaryData, ks: Sequence[float] = (2, 5, 8, 10), iters: int = 1000,
                   lr: float = 0.1) -> list[RunResult]:
    """The logistic baseline followed by one rooted run per k, all with the same step size and budget."""
    runs = [gradient_descent(data, Objective("logistic"), iters, lr)]
    runs += [gradient_descent(data, Objective("rooted", k), iters, lr) for k in ks]
    return runs


def format_table(runs: Sequence[RunResult], loss_target: float, acc_target: float) -> str:
    """Markdown table: iterations to the targets, final loss/accuracies, Hessian condition number."""
    def count(n: int | None) -> str:
        return "never" if n is None else str(n)

    lines = [f"| objective | iters to train CE <= {loss_target:g} | iters to train acc >= {acc_target:g} "
             "| final train CE | final train acc | test acc | Hessian cond. |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in runs:
        lines.append(f"| {r.objective.label} | {count(first_reach(r.cross_entropy, loss_target, below=True))} "
                     f"| {count(first_reach(r.train_accuracy, acc_target, below=False))} "
                     f"| {r.cross_entropy[-1]:.4g} | {r.train_accuracy[-1]:.3f} | {r.test_accuracy:.3f} "
                     f"| {r.hessian_cond:.4g} |")
    return "\n".join(lines)


def save_plot(runs: Sequence[RunResult], path: str | os.PathLike, lr: float) -> None:
    """Training cross-entropy (log scale) and accuracy against iterations, one line per run, PNG written atomically."""
    import matplotlib  # start-up: matplotlib loads only when a plot is drawn (not on the commands' import path)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # start-up, as matplotlib above

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for r in runs:
        ax_loss.plot(r.cross_entropy, label=r.objective.label)
        ax_acc.plot(r.train_accuracy, label=r.objective.label)
    ax_loss.set_yscale("log")
    ax_loss.set(xlabel="iteration", ylabel="training cross-entropy (logistic loss)",
                title=f"Wine class 0 vs rest, gradient descent, lr={lr:g}")
    ax_acc.set_xscale("symlog", linthresh=10)  # the accuracy settles early: stretch the first iterations
    ax_acc.set(xlabel="iteration (symlog)", ylabel="training accuracy", title="training accuracy",
               ylim=(0.8, 1.005))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    try:
        with atomic_write(path, "wb") as f:
            fig.savefig(f, format="png", dpi=110)
    finally:
        plt.close(fig)
