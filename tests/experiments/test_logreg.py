"""Tests for stylegan_rlo.experiments.logreg (the Wine convex experiment) and its CLI, with closed-form references."""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("sklearn")

from stylegan_rlo.cli.rlo_logreg import main as cli_main  # noqa: E402
from stylegan_rlo.errors import UserError  # noqa: E402
from stylegan_rlo.experiments import logreg  # noqa: E402
from stylegan_rlo.objectives import Objective  # noqa: E402


@pytest.fixture(scope="module")
def data() -> logreg.BinaryData:
    return logreg.load_wine_binary()


def test_load_wine_binary_split_and_standardization(data):
    n_train, n_test = len(data.y_train), len(data.y_test)
    assert n_train + n_test == 178 and data.x_train.shape == (n_train, 14) and data.x_test.shape == (n_test, 14)
    # Wine has 59 class-0 wines; 30% of each class (rounded) is held out.
    assert int((data.y_train == 1).sum() + (data.y_test == 1).sum()) == 59
    assert int((data.y_test == 1).sum()) == round(59 * 0.3) and int((data.y_test == -1).sum()) == round(119 * 0.3)
    assert set(data.y_train.tolist()) == {-1.0, 1.0}
    feats = data.x_train[:, :13].numpy()
    assert np.allclose(feats.mean(axis=0), 0, atol=1e-12) and np.allclose(feats.std(axis=0), 1, atol=1e-12)
    assert torch.equal(data.x_train[:, 13], torch.ones(n_train)) and torch.equal(data.x_test[:, 13], torch.ones(n_test))
    again = logreg.load_wine_binary()
    assert torch.equal(again.x_test, data.x_test)
    assert not torch.equal(logreg.load_wine_binary(seed=1).x_test, data.x_test)


def test_missing_sklearn_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes the import raise ImportError
    with pytest.raises(UserError, match="pip install scikit-learn"):
        logreg.load_wine_binary()


@pytest.mark.parametrize("objective,k", [("logistic", None), ("rooted", 2.0), ("rooted", 8.0)])
def test_first_step_and_histories(data, objective, k):
    """At w = 0 every margin is 0 and l'(0) = -2^(1/k) / 2 (k -> infinity: -1/2), so step one is closed-form."""
    lr = 0.3
    run = logreg.gradient_descent(data, Objective(objective, k), iters=1, lr=lr)
    slope = 0.5 * (2.0 ** (1.0 / k) if k else 1.0)
    expected = lr * slope * (data.y_train[:, None] * data.x_train).mean(dim=0)
    assert torch.allclose(run.w, expected, rtol=1e-12, atol=1e-15)
    assert len(run.cross_entropy) == len(run.train_accuracy) == len(run.objective_value) == 2
    assert run.cross_entropy[0] == pytest.approx(math.log(2.0), rel=1e-12)
    assert run.objective_value[0] == pytest.approx(k * (2 ** (1 / k) - 1) if k else math.log(2.0), rel=1e-12)
    assert run.train_accuracy[0] == 0.0  # margins of exactly 0 count as wrong


@pytest.mark.parametrize("objective,k", [("logistic", None), ("rooted", 2.0)])
def test_gradient_descent_decreases_its_objective(data, objective, k):
    run = logreg.gradient_descent(data, Objective(objective, k), iters=60, lr=0.1)
    obj = np.array(run.objective_value)
    assert (np.diff(obj) <= 1e-15).all()
    assert run.train_accuracy[-1] > 0.9 and 0 <= run.test_accuracy <= 1
    assert run.test_accuracy == logreg.accuracy(data.x_test, data.y_test, run.w)


def _analytic_hessian(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, k: float | None) -> np.ndarray:
    """X^T diag(l''(m)) X / n with l'' from the closed form (y^2 = 1), numpy float64."""
    x, y, w = x.numpy(), y.numpy(), w.numpy()
    m = y * (x @ w)
    sig_pos, sig_neg = 1 / (1 + np.exp(-m)), 1 / (1 + np.exp(m))
    if k is None:
        curv = sig_pos * sig_neg
    else:
        growth = np.exp(np.logaddexp(0, -m) / k)  # e^(softplus(-m)/k)
        curv = growth * (sig_pos * sig_neg + sig_neg ** 2 / k)
    return (x * curv[:, None]).T @ x / len(m)


@pytest.mark.parametrize("k", [None, 2.0, 10.0])
def test_hessian_condition_number_matches_closed_form(data, k):
    w = torch.linspace(-0.5, 0.5, 14, dtype=torch.float64)
    h = _analytic_hessian(data.x_train, data.y_train, w, k)
    eig = np.linalg.eigvalsh(h)
    got = logreg.hessian_condition_number(data.x_train, data.y_train, w,
                                          Objective("logistic" if k is None else "rooted", k))
    assert got == pytest.approx(eig[-1] / eig[0], rel=1e-8)


def test_first_reach():
    hist = [0.9, 0.5, 0.2, 0.4, 0.1]
    assert logreg.first_reach(hist, 0.45, below=True) == 2
    assert logreg.first_reach(hist, 0.05, below=True) is None
    assert logreg.first_reach(hist, 0.5, below=False) == 0
    assert logreg.first_reach([0.1, 0.6, 1.0], 1.0, below=False) == 2


def test_run_experiment_table_and_plot(data, tmp_path):
    runs = logreg.run_experiment(data, ks=(2, 10), iters=5, lr=0.1)
    assert [r.objective.label for r in runs] == ["logistic", "rooted k=2", "rooted k=10"]
    table = logreg.format_table(runs, loss_target=1e-9, acc_target=0.5)
    rows = table.splitlines()
    assert len(rows) == 5 and rows[0].startswith("| objective |")
    for r, row in zip(runs, rows[2:]):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0] == r.objective.label and cells[1] == "never"
        assert cells[2] == str(logreg.first_reach(r.train_accuracy, 0.5, below=False))
        assert float(cells[6]) == pytest.approx(r.hessian_cond, rel=1e-3)
    out = tmp_path / "plots" / "logreg.png"
    logreg.save_plot(runs, out, lr=0.1)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(out.parent) == ["logreg.png"]  # no temp file left behind


def test_bad_settings():
    d = logreg.BinaryData(torch.ones(2, 2, dtype=torch.float64), torch.ones(2, dtype=torch.float64),
                          torch.ones(0, 2, dtype=torch.float64), torch.ones(0, dtype=torch.float64))
    with pytest.raises(UserError, match="lr > 0"):
        logreg.gradient_descent(d, Objective("logistic"), iters=3, lr=0.0)
    with pytest.raises(UserError, match="unknown objective"):
        Objective.parse("bogus")


def test_cli(tmp_path):
    out = tmp_path / "p.png"
    res = CliRunner().invoke(cli_main, ["--iters", "3", "--ks", "2,5", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "| rooted k=5 |" in res.output and "| logistic |" in res.output and out.exists()
    bad = CliRunner().invoke(cli_main, ["--iters", "3", "--ks", "2,-1", "--out", str(out)])
    assert bad.exit_code == 2 and "must lie in [0.001, 1e+07]" in bad.output
