"""Small PyTorch helpers used by the networks, the ops and the training loop.

The names and parameter lists are the official StyleGAN2-ADA `torch_utils.misc` API, because the network
source we persist into pickles calls them and may run against either code base. Contracts:
docs/architecture-ops.md, section 4.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import re
import warnings
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

# ---------------------------------------------------------------------------------------------
# Constants and assertions.

_constant_cache: dict[tuple, torch.Tensor] = {}


def constant(value: Any, shape: Sequence[int] | None = None, dtype: torch.dtype | None = None,
             device: torch.device | str | None = None,
             memory_format: torch.memory_format | None = None) -> torch.Tensor:
    """`value` as a tensor (broadcast to `shape`), created once per distinct request and then shared.

    Saves a host-to-device copy per use of a constant; callers must not modify the returned tensor.
    """
    array = np.asarray(value)
    target = None if shape is None else tuple(shape)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    device = torch.device("cpu" if device is None else device)
    layout = torch.contiguous_format if memory_format is None else memory_format
    key = (array.tobytes(), array.shape, array.dtype, target, dtype, device, layout)
    if key not in _constant_cache:
        tensor = torch.as_tensor(array.copy(), dtype=dtype, device=device)
        if target is not None:
            tensor = tensor.broadcast_to(torch.broadcast_shapes(tensor.shape, target))
        _constant_cache[key] = tensor.contiguous(memory_format=layout)
    return _constant_cache[key]


nan_to_num = torch.nan_to_num  # official name; NaN -> 0, +-inf -> the largest finite values
symbolic_assert = torch._assert  # pylint: disable=protected-access  # an assert that survives torch.jit.trace


class suppress_tracer_warnings(warnings.catch_warnings):  # pylint: disable=invalid-name
    """`with suppress_tracer_warnings():` hides torch.jit.TracerWarning (shapes turning into trace constants)."""

    def __enter__(self):
        super().__enter__()
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        return self


def assert_shape(tensor: torch.Tensor, ref_shape: Sequence[Any]) -> None:
    """AssertionError unless `tensor` has shape `ref_shape`, where None matches any size.

    Sizes that are tensors (under tracing) are compared with symbolic_assert so that the trace keeps the check.
    """
    if tensor.ndim != len(ref_shape):
        raise AssertionError(f"Wrong number of dimensions: got {tensor.ndim}, expected {len(ref_shape)}")
    for axis, (size, wanted) in enumerate(zip(tensor.shape, ref_shape)):
        if wanted is None:
            continue
        if isinstance(size, torch.Tensor) or isinstance(wanted, torch.Tensor):
            with suppress_tracer_warnings():
                same = torch.equal(torch.as_tensor(size), torch.as_tensor(wanted))
                symbolic_assert(same, f"Wrong size for dimension {axis}: expected {wanted}")
        elif size != wanted:
            raise AssertionError(f"Wrong size for dimension {axis}: got {size}, expected {wanted}")


def profiled_function(fn: Callable) -> Callable:
    """Decorator: each call of `fn` shows up in the torch profiler as a block named after it."""
    @functools.wraps(fn)
    def profiled(*args, **kwargs):
        with torch.autograd.profiler.record_function(fn.__name__):
            return fn(*args, **kwargs)
    return profiled


# ---------------------------------------------------------------------------------------------

class InfiniteSampler(torch.utils.data.Sampler):
    """Dataset indices forever, for torch.utils.data.DataLoader.

    With `shuffle`, the order is a seeded permutation that keeps drifting: after each step the current item
    swaps places with one at most `window_size * len(dataset)` positions behind it. Replica `rank` of
    `num_replicas` takes every num_replicas-th index of that one stream.
    """

    def __init__(self, dataset, rank: int = 0, num_replicas: int = 1, shuffle: bool = True, seed: int = 0,
                 window_size: float = 0.5):
        assert len(dataset) > 0, "InfiniteSampler needs a non-empty dataset"
        assert num_replicas > 0 and 0 <= rank < num_replicas, f"bad rank {rank} of {num_replicas} replicas"
        assert 0 <= window_size <= 1, f"window_size must be in [0, 1], got {window_size}"
        super().__init__()
        self.dataset, self.rank, self.num_replicas = dataset, rank, num_replicas
        self.shuffle, self.seed, self.window_size = shuffle, seed, window_size

    def __iter__(self) -> Iterator[int]:
        size = len(self.dataset)
        order = np.arange(size)
        rnd, window = None, 0
        if self.shuffle:
            rnd = np.random.RandomState(self.seed)
            rnd.shuffle(order)
            window = int(np.rint(size * self.window_size))
        for step in itertools.count():
            here = step % size
            if step % self.num_replicas == self.rank:
                yield order[here]
            if window >= 2:
                there = (here - rnd.randint(window)) % size
                order[[here, there]] = order[[there, here]]


# ---------------------------------------------------------------------------------------------
# Parameters, buffers and distributed training.

def params_and_buffers(module: torch.nn.Module) -> list[torch.Tensor]:
    """Every parameter, then every buffer of `module`."""
    assert isinstance(module, torch.nn.Module)
    return [*module.parameters(), *module.buffers()]


def named_params_and_buffers(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) for every parameter, then every buffer of `module`."""
    assert isinstance(module, torch.nn.Module)
    return [*module.named_parameters(), *module.named_buffers()]


def copy_params_and_buffers(src_module: torch.nn.Module, dst_module: torch.nn.Module,
                            require_all: bool = False) -> None:
    """Overwrite, in place, each parameter/buffer of `dst_module` with the same-named one of `src_module`.

    Names `src_module` lacks are left alone, or are an AssertionError with `require_all`.
    """
    assert isinstance(src_module, torch.nn.Module) and isinstance(dst_module, torch.nn.Module)
    source = dict(named_params_and_buffers(src_module))
    with torch.no_grad():  # in-place writes into leaves that may require grad; their flag stays as it is
        for name, target in named_params_and_buffers(dst_module):
            if name in source:
                target.copy_(source[name])
            else:
                assert not require_all, f"copy_params_and_buffers: {name} is missing from the source module"


@contextlib.contextmanager
def ddp_sync(module: torch.nn.Module, sync: bool) -> Iterator[None]:
    """Context: a DistributedDataParallel `module` skips its gradient all-reduce unless `sync`."""
    assert isinstance(module, torch.nn.Module)
    skip = not sync and isinstance(module, torch.nn.parallel.DistributedDataParallel)
    with module.no_sync() if skip else contextlib.nullcontext():
        yield


def check_ddp_consistency(module: torch.nn.Module, ignore_regex: str | None = None) -> None:
    """Assert that each parameter/buffer equals rank 0's copy (NaNs count as equal).

    Names are '<class name>.<tensor name>'; those fully matching `ignore_regex` are skipped.
    """
    assert isinstance(module, torch.nn.Module)
    for name, tensor in named_params_and_buffers(module):
        qualified = f"{type(module).__name__}.{name}"
        if ignore_regex is not None and re.fullmatch(ignore_regex, qualified):
            continue
        mine = tensor.detach()
        rank0 = mine.clone()
        torch.distributed.broadcast(tensor=rank0, src=0)
        assert torch.equal(nan_to_num(mine), nan_to_num(rank0)), qualified


# ---------------------------------------------------------------------------------------------
# Summary table of a forward pass.

def _tensors(outputs: Any) -> list[torch.Tensor]:
    items = outputs if isinstance(outputs, (tuple, list)) else [outputs]
    return [t for t in items if isinstance(t, torch.Tensor)]


def _record_calls(module: torch.nn.Module, inputs: Sequence[Any], kwargs: dict, max_nesting: int) -> tuple:
    """Run the module; return (outputs, [(submodule, output tensors)] in order of completion)."""
    calls: list[tuple[torch.nn.Module, list[torch.Tensor]]] = []
    depth = 0

    def before(_mod, _inputs):
        nonlocal depth
        depth += 1

    def after(mod, _inputs, outputs):
        nonlocal depth
        depth -= 1
        if depth <= max_nesting:
            calls.append((mod, _tensors(outputs)))

    handles = [m.register_forward_pre_hook(before) for m in module.modules()]
    handles += [m.register_forward_hook(after) for m in module.modules()]
    try:
        outputs = module(*inputs, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return outputs, calls


def print_module_summary(module: torch.nn.Module, inputs: Sequence[Any], max_nesting: int = 3,
                         skip_redundant: bool = True, kwargs: dict | None = None) -> Any:
    """Run `module(*inputs, **kwargs)` and print per submodule: parameters, buffers, output shapes and dtypes.

    A tensor is counted at the first call that owns it (the innermost, as calls are listed when they finish);
    with `skip_redundant`, calls that own nothing new are left out. Returns the module's outputs.
    """
    assert isinstance(module, torch.nn.Module) and not isinstance(module, torch.jit.ScriptModule)
    assert isinstance(inputs, (tuple, list))
    outputs, calls = _record_calls(module, inputs, kwargs or {}, max_nesting)

    names = {mod: name for name, mod in module.named_modules()}
    counted: set[int] = set()
    table = [[type(module).__name__, "Parameters", "Buffers", "Output shape", "Datatype"], ["---"] * 5]
    total_params = total_buffers = 0
    for mod, outs in calls:
        params = [t for t in mod.parameters() if id(t) not in counted]
        buffers = [t for t in mod.buffers() if id(t) not in counted]
        fresh = [t for t in outs if id(t) not in counted]
        counted.update(id(t) for t in params + buffers + fresh)
        if skip_redundant and not (params or buffers or fresh):
            continue
        n_params = sum(t.numel() for t in params)
        n_buffers = sum(t.numel() for t in buffers)
        total_params += n_params
        total_buffers += n_buffers
        label = "<top-level>" if mod is module else names[mod]
        described = [(str(list(t.shape)), str(t.dtype).rsplit(".", 1)[-1]) for t in outs] or [("-", "-")]
        for idx, (shape, dtype) in enumerate(described):
            row_label = f"{label}:{idx}" if len(outs) >= 2 else label
            counts = (str(n_params or "-"), str(n_buffers or "-")) if idx == 0 else ("-", "-")
            table.append([row_label, *counts, shape, dtype])
    table += [["---"] * 5, ["Total", str(total_params), str(total_buffers), "-", "-"]]

    widths = [max(len(row[col]) for row in table) for col in range(5)]
    print()
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))
    print()
    return outputs
