"""Small PyTorch helpers shared by the networks, the ops and the training loop.

Names, signatures and behaviour follow the upstream StyleGAN2-ADA `torch_utils.misc`, so that
network code persisted into pickles runs unchanged against either implementation.
"""

from __future__ import annotations

import contextlib
import functools
import re
import warnings
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

# ---------------------------------------------------------------------------------------------
# Cached constant tensors: repeated use of the same constant costs no host-to-device copy.

_constant_cache: dict = {}


def constant(value: Any, shape: Sequence[int] | None = None, dtype: torch.dtype | None = None,
             device: torch.device | str | None = None,
             memory_format: torch.memory_format | None = None) -> torch.Tensor:
    """Return a (cached, shared, do-not-modify) tensor holding `value` broadcast to `shape`."""
    value = np.asarray(value)
    shape = None if shape is None else tuple(shape)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    device = torch.device('cpu') if device is None else torch.device(device)
    memory_format = torch.contiguous_format if memory_format is None else memory_format

    key = (value.shape, value.dtype, value.tobytes(), shape, dtype, device, memory_format)
    cached = _constant_cache.get(key)
    if cached is None:
        cached = torch.as_tensor(value.copy(), dtype=dtype, device=device)
        if shape is not None:
            cached = torch.broadcast_to(cached, torch.broadcast_shapes(cached.shape, shape))
        cached = cached.contiguous(memory_format=memory_format)
        _constant_cache[key] = cached
    return cached


# ---------------------------------------------------------------------------------------------
# NaN/Inf replacement (kept as a name for upstream compatibility).

nan_to_num = torch.nan_to_num

# Assertion that also works symbolically inside torch.jit.trace().
symbolic_assert = torch._assert  # pylint: disable=protected-access


class suppress_tracer_warnings(warnings.catch_warnings):  # pylint: disable=invalid-name
    """Context manager that silences torch.jit.TracerWarning (expected when shapes become constants)."""

    def __enter__(self):
        super().__enter__()
        warnings.simplefilter('ignore', category=torch.jit.TracerWarning)
        return self


def assert_shape(tensor: torch.Tensor, ref_shape: Sequence[Any]) -> None:
    """Raise AssertionError unless `tensor` has shape `ref_shape`; None entries match any size.

    Tensor-valued sizes (as seen during tracing) are checked symbolically.
    """
    if tensor.ndim != len(ref_shape):
        raise AssertionError(f'Wrong number of dimensions: got {tensor.ndim}, expected {len(ref_shape)}')
    for idx, (size, ref_size) in enumerate(zip(tensor.shape, ref_shape)):
        if ref_size is None:
            continue
        if isinstance(ref_size, torch.Tensor):
            with suppress_tracer_warnings():
                symbolic_assert(torch.equal(torch.as_tensor(size), ref_size), f'Wrong size for dimension {idx}')
        elif isinstance(size, torch.Tensor):
            with suppress_tracer_warnings():
                symbolic_assert(torch.equal(size, torch.as_tensor(ref_size)),
                                f'Wrong size for dimension {idx}: expected {ref_size}')
        elif size != ref_size:
            raise AssertionError(f'Wrong size for dimension {idx}: got {size}, expected {ref_size}')


def profiled_function(fn: Callable) -> Callable:
    """Decorator: run `fn` inside a torch profiler record_function block named after it."""
    @functools.wraps(fn)
    def decorator(*args, **kwargs):
        with torch.autograd.profiler.record_function(fn.__name__):
            return fn(*args, **kwargs)
    return decorator


# ---------------------------------------------------------------------------------------------
# Endless, optionally shuffled sampler for torch.utils.data.DataLoader.

class InfiniteSampler(torch.utils.data.Sampler):
    """Yield dataset indices forever; with shuffle, items also drift locally within a window.

    Each replica (`rank` of `num_replicas`) sees every num_replicas-th index of one shared stream.
    """

    def __init__(self, dataset, rank: int = 0, num_replicas: int = 1, shuffle: bool = True,
                 seed: int = 0, window_size: float = 0.5):
        assert len(dataset) > 0
        assert num_replicas > 0
        assert 0 <= rank < num_replicas
        assert 0 <= window_size <= 1
        super().__init__()
        self.dataset = dataset
        self.rank = rank
        self.num_replicas = num_replicas
        self.shuffle = shuffle
        self.seed = seed
        self.window_size = window_size

    def __iter__(self) -> Iterator[int]:
        order = np.arange(len(self.dataset))
        rnd = None
        window = 0
        if self.shuffle:
            rnd = np.random.RandomState(self.seed)
            rnd.shuffle(order)
            window = int(np.rint(order.size * self.window_size))

        step = 0
        while True:
            pos = step % order.size
            if step % self.num_replicas == self.rank:
                yield order[pos]
            if window >= 2:
                other = (pos - rnd.randint(window)) % order.size
                order[pos], order[other] = order[other], order[pos]
            step += 1


# ---------------------------------------------------------------------------------------------
# Parameters and buffers.

def params_and_buffers(module: torch.nn.Module) -> list:
    """All parameters followed by all buffers of `module`."""
    assert isinstance(module, torch.nn.Module)
    return list(module.parameters()) + list(module.buffers())


def named_params_and_buffers(module: torch.nn.Module) -> list:
    """(name, tensor) pairs of all parameters followed by all buffers of `module`."""
    assert isinstance(module, torch.nn.Module)
    return list(module.named_parameters()) + list(module.named_buffers())


@torch.no_grad()  # in-place copies into leaves that may require grad
def copy_params_and_buffers(src_module: torch.nn.Module, dst_module: torch.nn.Module,
                            require_all: bool = False) -> None:
    """Copy same-named tensors from `src_module` into `dst_module` in place (requires_grad kept)."""
    assert isinstance(src_module, torch.nn.Module)
    assert isinstance(dst_module, torch.nn.Module)
    src_tensors = dict(named_params_and_buffers(src_module))
    for name, tensor in named_params_and_buffers(dst_module):
        assert (name in src_tensors) or (not require_all)
        if name in src_tensors:
            tensor.copy_(src_tensors[name].detach()).requires_grad_(tensor.requires_grad)


@contextlib.contextmanager
def ddp_sync(module: torch.nn.Module, sync: bool):
    """Context manager: skip DistributedDataParallel gradient sync unless `sync` is true."""
    assert isinstance(module, torch.nn.Module)
    if sync or not isinstance(module, torch.nn.parallel.DistributedDataParallel):
        yield
    else:
        with module.no_sync():
            yield


def check_ddp_consistency(module: torch.nn.Module, ignore_regex: str | None = None) -> None:
    """Assert that every parameter/buffer equals rank 0's copy (NaNs compare equal)."""
    assert isinstance(module, torch.nn.Module)
    for name, tensor in named_params_and_buffers(module):
        fullname = type(module).__name__ + '.' + name
        if ignore_regex is not None and re.fullmatch(ignore_regex, fullname):
            continue
        tensor = tensor.detach()
        other = tensor.clone()
        torch.distributed.broadcast(tensor=other, src=0)
        assert (nan_to_num(tensor) == nan_to_num(other)).all(), fullname


# ---------------------------------------------------------------------------------------------
# Module summary table.

class _SummaryEntry:
    """One module call seen while running the module for print_module_summary()."""

    def __init__(self, mod: torch.nn.Module, outputs: list):
        self.mod = mod
        self.outputs = outputs
        self.unique_params: list = []
        self.unique_buffers: list = []
        self.unique_outputs: list = []


def print_module_summary(module: torch.nn.Module, inputs: Sequence[Any], max_nesting: int = 3,
                         skip_redundant: bool = True, kwargs: dict | None = None) -> Any:
    """Run `module(*inputs, **kwargs)`, print a table of submodules (params, buffers, outputs); return outputs."""
    assert isinstance(module, torch.nn.Module)
    assert not isinstance(module, torch.jit.ScriptModule)
    assert isinstance(inputs, (tuple, list))

    entries: list[_SummaryEntry] = []
    depth = [0]

    def pre_hook(_mod, _inputs):
        depth[0] += 1

    def post_hook(mod, _inputs, outputs):
        depth[0] -= 1
        if depth[0] <= max_nesting:
            outs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
            entries.append(_SummaryEntry(mod, [t for t in outs if isinstance(t, torch.Tensor)]))

    hooks = [mod.register_forward_pre_hook(pre_hook) for mod in module.modules()]
    hooks += [mod.register_forward_hook(post_hook) for mod in module.modules()]
    try:
        outputs = module(*inputs, **(kwargs or {}))
    finally:
        for hook in hooks:
            hook.remove()

    # Attribute every tensor to the first (innermost, earliest finished) entry that owns it.
    seen: set = set()
    for e in entries:
        e.unique_params = [t for t in e.mod.parameters() if id(t) not in seen]
        e.unique_buffers = [t for t in e.mod.buffers() if id(t) not in seen]
        e.unique_outputs = [t for t in e.outputs if id(t) not in seen]
        seen |= {id(t) for t in e.unique_params + e.unique_buffers + e.unique_outputs}
    if skip_redundant:
        entries = [e for e in entries if e.unique_params or e.unique_buffers or e.unique_outputs]

    rows = [[type(module).__name__, 'Parameters', 'Buffers', 'Output shape', 'Datatype']]
    rows.append(['---'] * len(rows[0]))
    param_total = 0
    buffer_total = 0
    names = {mod: name for name, mod in module.named_modules()}
    for e in entries:
        name = '<top-level>' if e.mod is module else names[e.mod]
        n_params = sum(t.numel() for t in e.unique_params)
        n_buffers = sum(t.numel() for t in e.unique_buffers)
        shapes = [str(list(t.shape)) for t in e.outputs]
        dtypes = [str(t.dtype).split('.')[-1] for t in e.outputs]
        rows.append([
            name + (':0' if len(e.outputs) >= 2 else ''),
            str(n_params) if n_params else '-',
            str(n_buffers) if n_buffers else '-',
            (shapes + ['-'])[0],
            (dtypes + ['-'])[0],
        ])
        for idx in range(1, len(e.outputs)):
            rows.append([name + f':{idx}', '-', '-', shapes[idx], dtypes[idx]])
        param_total += n_params
        buffer_total += n_buffers
    rows.append(['---'] * len(rows[0]))
    rows.append(['Total', str(param_total), str(buffer_total), '-', '-'])

    widths = [max(len(cell) for cell in column) for column in zip(*rows)]
    print()
    for row in rows:
        print('  '.join(cell.ljust(width) for cell, width in zip(row, widths)))
    print()
    return outputs
