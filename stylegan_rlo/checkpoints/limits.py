"""Resource limits for loading untrusted network pickles: what an unpickled structure may look like (nesting depth,
size once shared references are expanded), and how much a network constructor may allocate compared with the
tensors the file actually stores. Used by stylegan_rlo.checkpoints.pickles; see SECURITY.md for what this guarantees.
"""

from __future__ import annotations

import math
import reprlib
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from stylegan_rlo.errors import UserError

MAX_NESTING = 100            # containers inside containers; network pickles need about 10
MAX_EXPANDED_ITEMS = 10**6   # items counted once per path (what a naive walk or repr would visit); pickles need ~10^4
# Largest integer constructor argument: sizes and counts of genuine networks are far below (channel_base 65536), and
# a constructor may build Python lists this long before it creates any tensor the AllocationGuard could stop.
MAX_INIT_INT = 2**20
# A constructor may allocate this much more than the file stores (temporaries, derived constants) before it is stopped.
ALLOC_FACTOR = 4
ALLOC_SLACK_BYTES = 64 * 2**20
ALLOC_SLACK_TENSORS = 256


class LimitExceeded(UserError):
    """An input would take more nesting, memory or work than a genuine network pickle needs."""


def children(value: Any, child_of: Callable[[Any], Iterable[Any] | None]) -> Iterable[Any]:
    """The items of a plain container (dict keys and values, list/tuple/set members), else `child_of(value)`."""
    if isinstance(value, dict):
        return [x for kv in value.items() for x in kv]
    if isinstance(value, (list, tuple, set, frozenset)):
        return value
    return child_of(value) or ()


def check_structure(root: Any, child_of: Callable[[Any], Iterable[Any] | None] = lambda _v: None) -> None:
    """Raise LimitExceeded if `root` nests deeper than MAX_NESTING or expands to more than MAX_EXPANDED_ITEMS items.

    Walks every distinct object once (iteratively, memoized by identity), so shared references cost nothing extra
    here; it is the consumers that walk the structure as a tree (repr, JSON, naive recursion) that this protects.
    `child_of` gives the children of non-container nodes (e.g. a persistent record's state).
    """
    expanded: dict[int, int] = {}   # id -> items in the subtree, counted once per path
    height: dict[int, int] = {}
    keep_alive = []                 # ids stay unique while their objects live
    stack: list[tuple[Any, int, bool]] = [(root, 1, False)]
    while stack:
        value, depth, kids_done = stack.pop()
        if id(value) in expanded:
            continue
        if depth > MAX_NESTING:
            raise LimitExceeded(f"nesting deeper than {MAX_NESTING} levels")
        kids = children(value, child_of)
        if not kids_done:
            stack.append((value, depth, True))
            stack.extend((kid, depth + 1, False) for kid in kids if id(kid) not in expanded)
            continue
        keep_alive.append(value)
        expanded[id(value)] = 1 + sum(expanded[id(kid)] for kid in kids)
        height[id(value)] = 1 + max((height[id(kid)] for kid in kids), default=0)
        if height[id(value)] > MAX_NESTING:  # a longer path to a node first met on a shorter one
            raise LimitExceeded(f"nesting deeper than {MAX_NESTING} levels")
        if expanded[id(value)] > MAX_EXPANDED_ITEMS:
            raise LimitExceeded(f"shared references expand to more than {MAX_EXPANDED_ITEMS} items")


def check_init_ints(value: Any, what: str) -> None:
    """Raise LimitExceeded if any integer inside constructor arguments `value` exceeds MAX_INIT_INT in magnitude."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool) and abs(int(item)) > MAX_INIT_INT:
            raise LimitExceeded(f"the constructor arguments of {what} contain the integer {int(item)}, beyond the "
                                f"{MAX_INIT_INT} any genuine network size or count needs")
        if isinstance(item, (dict, list, tuple, set, frozenset)):
            pending.extend(children(item, lambda _v: None))


def short_repr(value: Any) -> str:
    """A repr cut to a few hundred characters, whatever the size or sharing of `value` (for error messages)."""
    r = reprlib.Repr()
    r.maxlevel, r.maxdict, r.maxlist, r.maxtuple, r.maxset, r.maxstring, r.maxother = 3, 8, 8, 8, 8, 60, 60
    return r.repr(value)


class AllocationGuard(TorchFunctionMode):
    """Stops tensor creation before it allocates beyond a budget: the bytes and the number of tensors that the
    stored tensors of the network being rebuilt imply (times ALLOC_FACTOR, plus slack).

    Calls of the torch factory functions (randn, zeros, full, empty, ..., and Tensor.new_*) are counted before they
    run; LimitExceeded is raised instead of allocating. Other ops are not counted: they make tensors the size of
    their inputs. (A torch function mode, not a dispatch mode: entering the latter imports torch._dynamo, seconds.)
    """

    def __init__(self, stored_bytes: int, stored_tensors: int, what: str):
        super().__init__()
        self.max_bytes = ALLOC_FACTOR * stored_bytes + ALLOC_SLACK_BYTES
        self.max_tensors = ALLOC_FACTOR * stored_tensors + ALLOC_SLACK_TENSORS
        self.stored = f"{stored_tensors} tensors ({stored_bytes / 2**20:.1f} MiB)"
        self.what = what
        self.bytes = 0
        self.tensors = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        size = _factory_size(func, args, kwargs)
        if size is not None:
            dtype = kwargs.get("dtype") or torch.get_default_dtype()
            self.bytes += math.prod(max(int(s), 0) for s in size) * dtype.itemsize
            self.tensors += 1
            if self.bytes > self.max_bytes or self.tensors > self.max_tensors:
                raise LimitExceeded(
                    f"the constructor arguments of {self.what} imply more than {self.max_tensors} tensors or "
                    f"{self.max_bytes / 2**20:.0f} MiB, far more than the {self.stored} the file stores; the "
                    f"arguments were altered or the file is not a genuine network pickle")
        return func(*args, **kwargs)


_FACTORIES = {torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn, torch.randint}
_TENSOR_FACTORIES = {torch.Tensor.new_empty, torch.Tensor.new_zeros, torch.Tensor.new_ones, torch.Tensor.new_full}


def _factory_size(func: Callable, args: tuple, kwargs: dict) -> list[int] | None:
    """The shape a factory call asks for (`f(2, 3)`, `f([2, 3])`, `f(size=...)`), or None for other functions."""
    if func in _TENSOR_FACTORIES:
        args = args[1:]
    elif func not in _FACTORIES:
        return None
    if "size" in kwargs:
        return list(kwargs["size"])
    for arg in args:  # randint(low, high, size): the size is the first sequence
        if isinstance(arg, (list, tuple, torch.Size)):
            return list(arg)
    ints = [a for a in args if isinstance(a, int) and not isinstance(a, bool)]
    return ints if func is not torch.randint else []
