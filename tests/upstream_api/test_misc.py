"""torch_utils.misc helpers."""

import itertools
import warnings

import numpy as np
import pytest
import torch

from torch_utils import misc


def test_constant_is_cached_and_broadcast():
    a = misc.constant([1.0, 2.0], shape=[3, 2], dtype=torch.float64)
    assert a.shape == (3, 2) and a.dtype == torch.float64 and a.is_contiguous()
    np.testing.assert_array_equal(a.numpy(), [[1, 2]] * 3)
    assert misc.constant([1.0, 2.0], shape=[3, 2], dtype=torch.float64) is a
    assert misc.constant([1.0, 2.0], shape=[3, 2], dtype=torch.float32) is not a
    assert misc.constant([1.0, 3.0], shape=[3, 2], dtype=torch.float64) is not a
    assert misc.constant(0.5).dtype == torch.get_default_dtype() and misc.constant(0.5).ndim == 0
    cl = misc.constant(1, shape=[1, 3, 2, 2], memory_format=torch.channels_last)
    assert cl.is_contiguous(memory_format=torch.channels_last)


def test_nan_to_num():
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 1.5])
    out = misc.nan_to_num(x)
    assert out[0] == 0 and out[1] == torch.finfo(x.dtype).max and out[2] == torch.finfo(x.dtype).min
    assert out[3] == 1.5


def test_assert_shape():
    t = torch.zeros(2, 3, 4)
    misc.assert_shape(t, [2, 3, 4])
    misc.assert_shape(t, [None, 3, None])
    with pytest.raises(AssertionError, match="number of dimensions"):
        misc.assert_shape(t, [2, 3])
    with pytest.raises(AssertionError, match="dimension 1: got 3, expected 5"):
        misc.assert_shape(t, [2, 5, 4])


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_assert_shape_while_tracing():
    def fn(x):
        misc.assert_shape(x, [None, 3])
        return x * 2
    traced = torch.jit.trace(fn, torch.zeros(2, 3), check_trace=False)
    assert traced(torch.ones(5, 3)).shape == (5, 3)


def test_suppress_tracer_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with misc.suppress_tracer_warnings():
            warnings.warn("hidden", torch.jit.TracerWarning)
        warnings.warn("visible", UserWarning)
    assert [str(w.message) for w in caught] == ["visible"]


def test_profiled_function_keeps_name_and_result():
    @misc.profiled_function
    def add_one(x, *, y=1):
        return x + y
    assert add_one.__name__ == "add_one"
    with torch.autograd.profiler.profile() as prof:
        assert add_one(2, y=3) == 5
    assert any(e.name == "add_one" for e in prof.function_events)


class _Tiny(torch.nn.Module):
    def __init__(self, extra=False):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)
        self.register_buffer("count", torch.zeros([]))
        if extra:
            self.more = torch.nn.Parameter(torch.ones(4))

    def forward(self, x):
        return self.lin(x), x.sum()


def test_params_and_buffers():
    m = _Tiny()
    assert [n for n, _ in misc.named_params_and_buffers(m)] == ["lin.weight", "lin.bias", "count"]
    assert [t is u for t, u in zip(misc.params_and_buffers(m), [m.lin.weight, m.lin.bias, m.count])] == [True] * 3


def test_copy_params_and_buffers():
    src, dst = _Tiny(), _Tiny(extra=True)
    src.count.fill_(7)
    dst.lin.weight.requires_grad_(False)
    misc.copy_params_and_buffers(src, dst)
    assert torch.equal(dst.lin.weight, src.lin.weight) and torch.equal(dst.lin.bias, src.lin.bias)
    assert dst.count.item() == 7
    assert not dst.lin.weight.requires_grad and dst.lin.bias.requires_grad
    assert torch.equal(dst.more, torch.ones(4))  # absent from src: untouched
    with pytest.raises(AssertionError):
        misc.copy_params_and_buffers(src, _Tiny(extra=True), require_all=True)


def test_ddp_sync_plain_module_is_a_no_op():
    m = _Tiny()
    for sync in (True, False):
        with misc.ddp_sync(m, sync):
            pass


def test_check_ddp_consistency_single_process(tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path}/rendezvous", rank=0, world_size=1)
    try:
        m = _Tiny()
        m.count.fill_(float("nan"))  # NaNs compare equal to themselves here
        misc.check_ddp_consistency(m)
        misc.check_ddp_consistency(m, ignore_regex=r".*count")
    finally:
        torch.distributed.destroy_process_group()


def test_print_module_summary(capsys):
    outputs = misc.print_module_summary(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU()),
                                        [torch.zeros(2, 3)])
    assert outputs.shape == (2, 4)
    lines = [line.split() for line in capsys.readouterr().out.strip().splitlines()]
    assert lines[0] == ["Sequential", "Parameters", "Buffers", "Output", "shape", "Datatype"]
    assert lines[2] == ["0", "16", "-", "[2,", "4]", "float32"]
    assert lines[3] == ["1", "-", "-", "[2,", "4]", "float32"]
    assert lines[-1] == ["Total", "16", "0", "-", "-"]

    outputs = misc.print_module_summary(_Tiny(), [torch.zeros(5, 3)])
    rows = [line.split() for line in capsys.readouterr().out.strip().splitlines()]
    assert ["lin", "8", "-", "[5,", "2]", "float32"] in rows
    assert ["<top-level>:0", "-", "1", "[5,", "2]", "float32"] in rows  # first output of a 2-output module
    assert ["<top-level>:1", "-", "-", "[]", "float32"] in rows
    assert rows[-1] == ["Total", "8", "1", "-", "-"]


def _take(sampler, n):
    return [int(i) for i in itertools.islice(iter(sampler), n)]


def test_infinite_sampler_without_shuffle_cycles_in_order():
    data = list(range(5))
    assert _take(misc.InfiniteSampler(data, shuffle=False), 12) == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]


def test_infinite_sampler_replicas_split_one_stream():
    data = list(range(7))
    stream = _take(misc.InfiniteSampler(data, seed=3), 60)
    for rank in range(3):
        part = _take(misc.InfiniteSampler(data, rank=rank, num_replicas=3, seed=3), 20)
        assert part == stream[rank::3]


def test_infinite_sampler_shuffles_deterministically():
    data = list(range(50))
    first = _take(misc.InfiniteSampler(data, seed=1), 500)
    assert first == _take(misc.InfiniteSampler(data, seed=1), 500)
    assert first != _take(misc.InfiniteSampler(data, seed=2), 500)
    assert first[:50] != list(range(50))
    assert sorted(_take(misc.InfiniteSampler(data, seed=1, window_size=0), 50)) == list(range(50))
    counts = np.bincount(first, minlength=50)
    assert counts.min() > 0  # every item keeps coming back
    with pytest.raises(AssertionError):
        misc.InfiniteSampler([], seed=0)
    with pytest.raises(AssertionError):
        misc.InfiniteSampler(data, rank=2, num_replicas=2)
