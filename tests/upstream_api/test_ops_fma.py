"""torch_utils.ops.fma: a * b + c with broadcasting, gradients reduced to each operand's shape."""

import pytest
import torch

from torch_utils.ops import fma

SHAPES = [  # a, b, c
    ((2, 3, 4), (2, 3, 4), (2, 3, 4)),
    ((3, 1), (1, 4), (4,)),
    ((4,), (2, 3, 1), (1, 3, 4)),
    ((1, 1, 4), (3, 4), (2, 1, 1)),
]


@pytest.mark.parametrize("shapes", SHAPES)
def test_fma_value_and_gradients(shapes):
    gen = torch.Generator().manual_seed(0)
    a, b, c = [torch.randn(s, generator=gen, dtype=torch.float64, requires_grad=True) for s in shapes]
    out = fma.fma(a, b, c)
    torch.testing.assert_close(out, a * b + c, rtol=1e-15, atol=1e-15)
    r = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    ours = torch.autograd.grad((out.square() * r).sum(), [a, b, c])
    ref = torch.autograd.grad(((a * b + c).square() * r).sum(), [a, b, c])
    for g, g_ref, t in zip(ours, ref, (a, b, c)):
        assert g.shape == t.shape
        torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradgradcheck(fma.fma, (a, b, c))
