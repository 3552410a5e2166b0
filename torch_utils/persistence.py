"""Persistent classes in the official StyleGAN2-ADA pickle format.

A class decorated with `persistent_class` remembers its constructor arguments and pickles as a call of
`_reconstruct_persistent_obj(meta)`, where `meta` holds the full source of the defining module, the class name
and the instance `__dict__` (format version 6). The official loader rebuilds such objects by executing that
source; this module does NOT by default: untrusted pickles must never run code. Instead the object is rebuilt
as our own class of the same name (see `stylegan_rlo.pickles`), and embedded source is executed only inside
`with trusted_source():`, an explicit opt-in for files the user trusts.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import inspect
import io
import pickle
import sys
import types
import uuid
from typing import Any, Callable, Iterator

import dnnlib

_version = 6  # Format version written into every meta dict; the official code writes and accepts only 6.
_decorators: set[type] = set()  # Every class produced by persistent_class.
_import_hooks: list[Callable[[dnnlib.EasyDict], dnnlib.EasyDict]] = []
_module_to_src_dict: dict[types.ModuleType, str] = {}
_src_to_module_dict: dict[str, types.ModuleType] = {}
_source_exec_allowed: contextvars.ContextVar[bool] = contextvars.ContextVar("source_exec_allowed", default=False)


def is_persistent(obj: Any) -> bool:
    """True for a class made by `persistent_class`, or an instance of one."""
    try:
        if obj in _decorators:
            return True
    except TypeError:  # unhashable instance
        pass
    return type(obj) in _decorators


def import_hook(func: Callable[[dnnlib.EasyDict], dnnlib.EasyDict]) -> None:
    """Register `func(meta) -> meta`, applied to every meta dict before an object is rebuilt (official API)."""
    if not callable(func):
        raise TypeError(f"import_hook expects a callable, got {type(func).__name__}")
    _import_hooks.append(func)


def persistent_class(orig_class: type) -> type:
    """Class decorator: instances record their init args and pickle together with their module's source."""
    if not isinstance(orig_class, type):
        raise TypeError(f"persistent_class expects a class, got {type(orig_class).__name__}")
    if is_persistent(orig_class):
        return orig_class
    if orig_class.__module__ not in sys.modules:
        raise ValueError(f"persistent_class: module {orig_class.__module__!r} of {orig_class.__name__} is not loaded")
    orig_module = sys.modules[orig_class.__module__]
    orig_module_src = _module_to_src(orig_module)
    class_name = orig_class.__name__

    class Decorator(orig_class):
        _orig_module_src = orig_module_src
        _orig_class_name = class_name

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._init_args = copy.deepcopy(args)
            self._init_kwargs = copy.deepcopy(kwargs)
            if orig_module.__dict__.get(class_name) is None:
                raise ValueError(f"persistent_class: {class_name} must be reachable by name at the top level of "
                                 f"module {orig_module.__name__}, or pickles of it cannot be loaded")
            _check_pickleable(self.__reduce__())

        @property
        def init_args(self) -> tuple:
            """Positional constructor arguments (a copy)."""
            return copy.deepcopy(self._init_args)

        @property
        def init_kwargs(self) -> dnnlib.EasyDict:
            """Keyword constructor arguments (a copy)."""
            return dnnlib.EasyDict(copy.deepcopy(self._init_kwargs))

        def __reduce__(self):
            fields = list(super().__reduce__())
            fields += [None] * max(3 - len(fields), 0)
            if fields[0] is not _reconstruct_persistent_obj:
                meta = dict(type="class", version=_version, module_src=self._orig_module_src,
                            class_name=self._orig_class_name, state=fields[2])
                fields[0] = _reconstruct_persistent_obj
                fields[1] = (meta,)
                fields[2] = None
            return tuple(fields)

    Decorator.__name__ = class_name
    Decorator.__qualname__ = class_name
    Decorator.__doc__ = orig_class.__doc__
    _decorators.add(Decorator)
    return Decorator


@contextlib.contextmanager
def trusted_source() -> Iterator[None]:
    """Within this block `_reconstruct_persistent_obj` executes embedded module source, like the official loader.

    Only for pickles whose origin the user trusts: that source can do anything.
    """
    token = _source_exec_allowed.set(True)
    try:
        yield
    finally:
        _source_exec_allowed.reset(token)


def _reconstruct_persistent_obj(meta: dict) -> Any:
    """Rebuild a persistent object from its pickled meta dict (the name official pickles call on load).

    Source that this process already runs is reused. Otherwise, by default, the embedded source is ignored and
    the object is rebuilt as our class of the same name (`stylegan_rlo.pickles.rebuild_persistent_obj`);
    inside `trusted_source()` the source is executed instead, as the official loader does.
    """
    meta = dnnlib.EasyDict(meta)
    meta.state = dnnlib.EasyDict(meta.state)
    for hook in _import_hooks:
        meta = hook(meta)
        if meta is None:
            raise ValueError("a persistence import hook returned None instead of the meta dict")
    if meta.get("version") != _version or meta.get("type") != "class":
        raise ValueError(f"unsupported persistent object format: type={meta.get('type')!r} "
                         f"version={meta.get('version')!r} (expected type='class' version={_version})")

    # Source already imported or executed in this process (e.g. our own networks module) runs nothing new.
    module = _src_to_module_dict.get(meta.module_src)
    if module is None and _source_exec_allowed.get():
        module = _src_to_module(meta.module_src)
    orig_class = module.__dict__.get(meta.class_name) if module is not None else None
    if isinstance(orig_class, type):
        decorator_class = persistent_class(orig_class)
        obj = decorator_class.__new__(decorator_class)
        setstate = getattr(obj, "__setstate__", None)
        if callable(setstate):
            setstate(meta.state)
        else:
            obj.__dict__.update(meta.state)
        return obj

    # Unknown source, not trusted (or a placeholder that defines nothing): rebuild as our class of that name.
    # The one deliberate upward import of the low layers (dnnlib, torch_utils never import stylegan_rlo otherwise):
    # the official pickles name this module's _reconstruct_persistent_obj, so the hook must live here, while only
    # stylegan_rlo knows our classes. Lazy, because stylegan_rlo imports this module.
    from stylegan_rlo.pickles import rebuild_persistent_obj
    return rebuild_persistent_obj(meta)


def _module_to_src(module: types.ModuleType) -> str:
    """Source text of a module, cached both ways so that re-loading identical source reuses the module."""
    src = _module_to_src_dict.get(module)
    if src is None:
        src = inspect.getsource(module)
        _module_to_src_dict[module] = src
        _src_to_module_dict[src] = module
    return src


def _src_to_module(src: str) -> types.ModuleType:
    """Module for a source text, executing it in a fresh uniquely named module if not seen before (trusted only)."""
    module = _src_to_module_dict.get(src)
    if module is None:
        module_name = "_imported_module_" + uuid.uuid4().hex
        module = types.ModuleType(module_name)
        sys.modules[module_name] = module
        _module_to_src_dict[module] = src
        _src_to_module_dict[src] = module
        exec(src, module.__dict__)  # noqa: S102 -- reached only inside trusted_source()
    return module


def _check_pickleable(obj: Any) -> None:
    """Fail at construction time, not at save time, if init args or state hold something unpicklable."""
    def strip(x: Any) -> Any:
        if isinstance(x, (list, tuple, set, frozenset)):
            return [strip(v) for v in x]
        if isinstance(x, dict):
            return [[strip(k), strip(v)] for k, v in x.items()]
        if x is None or isinstance(x, (str, int, float, bool, complex, bytes, bytearray)):
            return None
        if type(x).__module__ == "numpy" or type(x).__name__ in ("Tensor", "Parameter"):
            return None  # arrays, numpy scalars and tensors pickle fine
        if is_persistent(x):
            return None  # checked when it was constructed
        return x

    with io.BytesIO() as f:
        pickle.dump(strip(obj), f)
