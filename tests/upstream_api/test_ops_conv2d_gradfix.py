"""torch_utils.ops.conv2d_gradfix: the custom op equals naive convolutions to any derivative order."""

import pytest
import torch
from naive_ops import naive_conv2d, naive_conv_transpose2d

from torch_utils.ops import conv2d_gradfix

CONV_CASES = [  # input shape, weight shape, kwargs
    ((2, 4, 7, 6), (6, 2, 3, 2), dict(stride=2, padding=1, dilation=1, groups=2)),
    ((1, 3, 6, 6), (2, 3, 2, 3), dict(stride=1, padding=0, dilation=2, groups=1)),
    ((2, 2, 5, 5), (3, 2, 3, 3), dict(stride=3, padding=2, dilation=1, groups=1)),
    ((2, 3, 7, 6), (3, 1, 2, 4), dict(stride=2, padding=1, dilation=1, groups=3)),  # depthwise: the FIR filters
]
TRANSPOSE_CASES = [
    ((2, 4, 4, 3), (4, 3, 3, 2), dict(stride=2, padding=1, output_padding=1, groups=2, dilation=1)),
    ((1, 3, 3, 4), (3, 2, 2, 3), dict(stride=1, padding=0, output_padding=1, groups=1, dilation=2)),
    ((2, 2, 3, 3), (2, 3, 3, 3), dict(stride=3, padding=2, output_padding=2, groups=1, dilation=1)),
    ((2, 3, 4, 3), (3, 1, 4, 2), dict(stride=2, padding=1, output_padding=1, groups=3, dilation=1)),  # depthwise
]


def _all_grads(fn, tensors, seed):
    """Output, first-order grads of a nonlinear loss, and second-order grads of <grads, v>."""
    gen = torch.Generator().manual_seed(seed)
    tensors = [t.detach().requires_grad_(True) for t in tensors]
    y = fn(*tensors)
    r = torch.randn(y.shape, generator=gen, dtype=y.dtype)
    first = torch.autograd.grad((y.pow(3) * r).sum(), tensors, create_graph=True)
    second = torch.autograd.grad(sum((g * torch.randn(g.shape, generator=gen, dtype=g.dtype)).sum() for g in first),
                                 tensors)
    return [y.detach()] + [g.detach() for g in first] + list(second)


def _compare(ours_fn, naive_fn, tensors, seed):
    ours = _all_grads(ours_fn, tensors, seed)
    ref = _all_grads(naive_fn, tensors, seed)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-11)


def _tensors(x_shape, w_shape, bias_len, seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64) for s in (x_shape, w_shape, (bias_len,))]


@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv2d_all_orders_match_naive(case, enabled, monkeypatch):
    monkeypatch.setattr(conv2d_gradfix, "enabled", enabled)
    x_shape, w_shape, kw = CONV_CASES[case]
    _compare(lambda x, w, b: conv2d_gradfix.conv2d(x, w, b, **kw),
             lambda x, w, b: naive_conv2d(x, w, **kw) + b[None, :, None, None],
             _tensors(x_shape, w_shape, w_shape[0], case), case)


@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("case", range(len(TRANSPOSE_CASES)))
def test_conv_transpose2d_all_orders_match_naive(case, enabled, monkeypatch):
    monkeypatch.setattr(conv2d_gradfix, "enabled", enabled)
    x_shape, w_shape, kw = TRANSPOSE_CASES[case]
    out_channels = w_shape[1] * kw["groups"]
    _compare(lambda x, w, b: conv2d_gradfix.conv_transpose2d(x, w, b, **kw),
             lambda x, w, b: naive_conv_transpose2d(x, w, **kw) + b[None, :, None, None],
             _tensors(x_shape, w_shape, out_channels, case), case)


@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_depthwise_keeps_the_input_layout(layout, enabled, monkeypatch):
    """Depthwise convolutions run in channels_last on the CPU; the result (and its gradient) comes back in the
    layout of the tensor given."""
    monkeypatch.setattr(conv2d_gradfix, "enabled", enabled)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn([2, 3, 9, 8], generator=gen).contiguous(memory_format=layout).requires_grad_(True)
    w = torch.randn([3, 1, 1, 4], generator=gen)
    for op in (conv2d_gradfix.conv2d, conv2d_gradfix.conv_transpose2d):
        y = op(x, w, stride=2, groups=3)
        assert y.is_contiguous(memory_format=layout)
        torch.testing.assert_close(y, op(x.double(), w.double(), stride=2, groups=3).float(), rtol=1e-5, atol=1e-5)
        grad, = torch.autograd.grad(y.square().sum(), [x])
        assert grad.shape == x.shape


def test_custom_op_gradgradcheck(monkeypatch):
    monkeypatch.setattr(conv2d_gradfix, "enabled", True)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 1, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, generator=gen, dtype=torch.float64, requires_grad=True)
    conv = lambda x, w, b: conv2d_gradfix.conv2d(x, w, b, stride=2, padding=1, groups=2)  # noqa: E731
    assert torch.autograd.gradcheck(conv, (x, w, b), fast_mode=True)
    assert torch.autograd.gradgradcheck(conv, (x, w, b), fast_mode=True)
    wt = torch.randn(2, 3, 2, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    convt = lambda x, w: conv2d_gradfix.conv_transpose2d(x, w, stride=2, output_padding=1)  # noqa: E731
    assert torch.autograd.gradcheck(convt, (x, wt), fast_mode=True)
    assert torch.autograd.gradgradcheck(convt, (x, wt), fast_mode=True)


def test_no_weight_gradients(monkeypatch):
    monkeypatch.setattr(conv2d_gradfix, "enabled", True)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 5, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    y = conv2d_gradfix.conv2d(x, w, padding=1)
    with conv2d_gradfix.no_weight_gradients():
        with conv2d_gradfix.no_weight_gradients():
            assert conv2d_gradfix.weight_gradients_disabled
        assert conv2d_gradfix.weight_gradients_disabled
        gx, gw = torch.autograd.grad(y.square().sum(), [x, w], create_graph=True, allow_unused=True)
    assert not conv2d_gradfix.weight_gradients_disabled
    assert gw is None
    x_ref = x.detach().requires_grad_(True)
    w_ref = w.detach().requires_grad_(True)
    gx_ref, = torch.autograd.grad(naive_conv2d(x_ref, w_ref, padding=1).square().sum(), x_ref, create_graph=True)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-10, atol=1e-12)
    # The second-order path to the weights survives (path length regularization relies on it).
    gw2, = torch.autograd.grad(gx.sum(), w)
    gw2_ref, = torch.autograd.grad(gx_ref.sum(), w_ref)
    torch.testing.assert_close(gw2, gw2_ref, rtol=1e-10, atol=1e-12)


def test_flag_restored_after_exception():
    with pytest.raises(RuntimeError):
        with conv2d_gradfix.no_weight_gradients():
            raise RuntimeError("boom")
    assert not conv2d_gradfix.weight_gradients_disabled


def test_custom_op_rejects_bad_arguments(monkeypatch):
    monkeypatch.setattr(conv2d_gradfix, "enabled", True)
    x = torch.randn(1, 2, 4, 4)
    with pytest.raises(AssertionError):
        conv2d_gradfix.conv_transpose2d(x, torch.randn(2, 2, 3, 3), stride=2, output_padding=2)
    with pytest.raises(AssertionError):
        conv2d_gradfix.conv2d(x, torch.randn(2, 2, 3, 3), stride=0)
