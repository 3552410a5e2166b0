"""torch_utils.ops.grid_sample_gradfix: bilinear sampling and its double backward (R1 through ADA)."""

import pytest
import torch
from naive_ops import naive_grid_sample

from torch_utils.ops import grid_sample_gradfix


def _inputs(seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64)
    grid = torch.rand(2, 3, 4, 2, generator=gen, dtype=torch.float64) * 2.6 - 1.3  # some samples fall outside
    return x, grid


@pytest.mark.parametrize("enabled", [True, False])
def test_forward_and_grads_match_naive_bilinear(enabled, monkeypatch):
    monkeypatch.setattr(grid_sample_gradfix, "enabled", enabled)
    x, grid = _inputs(0)
    results = []
    for fn in (grid_sample_gradfix.grid_sample, naive_grid_sample):
        xs = x.clone().requires_grad_(True)
        gs = grid.clone().requires_grad_(True)
        y = fn(xs, gs)
        r = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
        gx, gg = torch.autograd.grad((y * r).sum(), [xs, gs])
        results.append((y.detach(), gx, gg))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def _r1_like(sample, x, grid, w):
    """Penalty on d/dx of a nonlinear 'discriminator' applied after sampling, as in R1 with ADA."""
    y = sample(x.square(), grid)
    score = (torch.sin(y) * w[None, :, None, None]).sum()
    gx, = torch.autograd.grad(score, x, create_graph=True)
    return gx.square().sum()


def test_double_backward_matches_naive(monkeypatch):
    monkeypatch.setattr(grid_sample_gradfix, "enabled", True)
    x, grid = _inputs(2)
    w = torch.randn(3, dtype=torch.float64)
    grads = []
    for sample in (grid_sample_gradfix.grid_sample, naive_grid_sample):
        xs = x.clone().requires_grad_(True)
        ws = w.clone().requires_grad_(True)
        grads.append(torch.autograd.grad(_r1_like(sample, xs, grid, ws), [xs, ws]))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_gradcheck_and_gradgradcheck(monkeypatch):
    monkeypatch.setattr(grid_sample_gradfix, "enabled", True)
    x, grid = _inputs(3)
    x = x[:1, :2].clone().requires_grad_(True)
    grid = grid[:1].clone()
    assert torch.autograd.gradcheck(lambda x: grid_sample_gradfix.grid_sample(x, grid), (x,))
    assert torch.autograd.gradgradcheck(lambda x: grid_sample_gradfix.grid_sample(x, grid), (x,))
    gs = grid.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(grid_sample_gradfix.grid_sample, (x, gs))


def test_second_order_through_grid_is_refused(monkeypatch):
    monkeypatch.setattr(grid_sample_gradfix, "enabled", True)
    x, grid = _inputs(4)
    x.requires_grad_(True)
    grid.requires_grad_(True)
    y = grid_sample_gradfix.grid_sample(x, grid)
    gx, gg = torch.autograd.grad(y.square().sum(), [x, grid], create_graph=True)
    with pytest.raises(NotImplementedError, match="grid"):
        torch.autograd.grad(gg.sum(), x)
