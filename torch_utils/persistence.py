"""Persistent classes: objects that pickle together with the source code of their defining module.

This is the official StyleGAN2-ADA pickle format (docs/architecture-ops.md, section 5): an instance of a
`persistent_class` pickles as `_reconstruct_persistent_obj(meta)`, meta = {type: 'class', version: 6,
module_src, class_name, state}. Loading differs from the official code on one point: embedded source is
executed only inside `with trusted_source():`. Otherwise source this process already runs is reused, and
anything else is rebuilt as our class of the same name by `stylegan_rlo.checkpoints.pickles` from the stored state.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import inspect
import pickle
import sys
import types
import uuid
from typing import Any, Callable, Iterator

import dnnlib

_version = 6  # the format version written into every meta dict (the only one the official loader accepts)
_decorators: set[type] = set()  # every class persistent_class has produced
_import_hooks: list[Callable[[dnnlib.EasyDict], dnnlib.EasyDict]] = []  # applied to each meta before rebuilding
_module_to_src_dict: dict[types.ModuleType, str] = {}  # module -> its source text
_src_to_module_dict: dict[str, types.ModuleType] = {}  # source text -> the module running it in this process
_trusted = contextvars.ContextVar("persistence_trusted_source", default=False)


def is_persistent(obj: Any) -> bool:
    """Whether `obj` is a class made by persistent_class, or an instance of one."""
    cls = obj if isinstance(obj, type) else type(obj)
    return cls in _decorators


def import_hook(func: Callable[[dnnlib.EasyDict], dnnlib.EasyDict]) -> None:
    """Register `func(meta) -> meta`, called on every meta dict before its object is rebuilt."""
    if not callable(func):
        raise TypeError(f"import_hook expects a callable, got {type(func).__name__}")
    _import_hooks.append(func)


def persistent_class(orig_class: type) -> type:
    """Class decorator: instances remember their constructor arguments and pickle with their module's source."""
    if not isinstance(orig_class, type):
        raise TypeError(f"persistent_class expects a class, got {type(orig_class).__name__}")
    if is_persistent(orig_class):
        return orig_class
    home = sys.modules.get(orig_class.__module__)
    if home is None:
        raise ValueError(f"persistent_class: module {orig_class.__module__!r} of {orig_class.__name__} is not loaded")
    source = _module_to_src(home)
    name = orig_class.__name__

    class Persistent(orig_class):
        _orig_module_src = source
        _orig_class_name = name

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._init_args, self._init_kwargs = copy.deepcopy((args, kwargs))  # immune to later caller edits
            if home.__dict__.get(name) is None:
                raise ValueError(f"persistent_class: {name} must be defined at the top level of module "
                                 f"{home.__name__} under that name, or its pickles cannot be loaded")
            _check_pickleable(self.__reduce__())

        @property
        def init_args(self) -> tuple:
            """The positional constructor arguments (a copy)."""
            return copy.deepcopy(self._init_args)

        @property
        def init_kwargs(self) -> dnnlib.EasyDict:
            """The keyword constructor arguments (a copy)."""
            return dnnlib.EasyDict(copy.deepcopy(self._init_kwargs))

        def __reduce__(self):
            parts = list(super().__reduce__())
            parts.extend([None] * (3 - len(parts)))  # (callable, args, state, ...)
            if parts[0] is not _reconstruct_persistent_obj:
                meta = dict(type="class", version=_version, module_src=self._orig_module_src,
                            class_name=self._orig_class_name, state=parts[2])
                parts[:3] = [_reconstruct_persistent_obj, (meta,), None]
            return tuple(parts)

    Persistent.__name__ = Persistent.__qualname__ = name
    Persistent.__doc__ = orig_class.__doc__
    _decorators.add(Persistent)
    return Persistent


@contextlib.contextmanager
def trusted_source() -> Iterator[None]:
    """Inside this block, pickled module source is executed like the official loader does.

    Only for files whose origin the user trusts: that source can do anything.
    """
    token = _trusted.set(True)
    try:
        yield
    finally:
        _trusted.reset(token)


def _reconstruct_persistent_obj(meta: dict) -> Any:
    """Rebuild a persistent object from its meta dict; pickles name this function as the constructor."""
    meta = dnnlib.EasyDict(meta, state=dnnlib.EasyDict(meta["state"]))
    for hook in _import_hooks:
        meta = hook(meta)
        if meta is None:
            raise ValueError("a persistence import hook returned None instead of the meta dict")
    if (meta.get("type"), meta.get("version")) != ("class", _version):
        raise ValueError(f"unsupported persistent object format: type={meta.get('type')!r} "
                         f"version={meta.get('version')!r} (expected type='class' version={_version})")

    cls = _runnable_class(meta.module_src, meta.class_name)
    if cls is None:  # source we may not run: rebuild as our class of that name
        # The one deliberate upward import of the low layers (dnnlib, torch_utils never import stylegan_rlo
        # otherwise): official pickles name this module's _reconstruct_persistent_obj, so the hook must live here,
        # while only stylegan_rlo knows our classes. Lazy, because stylegan_rlo imports this module.
        from stylegan_rlo.checkpoints.pickles import rebuild_persistent_obj
        return rebuild_persistent_obj(meta)
    obj = cls.__new__(cls)
    if callable(getattr(obj, "__setstate__", None)):
        obj.__setstate__(meta.state)
    else:
        obj.__dict__.update(meta.state)
    return obj


def _runnable_class(src: str, name: str) -> type | None:
    """The persistent class `name` from module source `src`, if that source already runs in this process or
    may be executed now (trusted_source); else None."""
    module = _src_to_module_dict.get(src)
    if module is None and _trusted.get():
        module = _src_to_module(src)
    found = None if module is None else module.__dict__.get(name)
    return persistent_class(found) if isinstance(found, type) else None


def _remember(module: types.ModuleType, src: str) -> None:
    _module_to_src_dict[module] = src
    _src_to_module_dict[src] = module


def _module_to_src(module: types.ModuleType) -> str:
    """The source text of a loaded module (read once)."""
    if module not in _module_to_src_dict:
        _remember(module, inspect.getsource(module))
    return _module_to_src_dict[module]


def _src_to_module(src: str) -> types.ModuleType:
    """The module running `src`; unseen source is executed once in a new module `_imported_module_<hex>`."""
    if src not in _src_to_module_dict:
        module = types.ModuleType(f"_imported_module_{uuid.uuid4().hex}")
        sys.modules[module.__name__] = module
        _remember(module, src)
        exec(src, module.__dict__)  # noqa: S102 -- reached only for trusted source (or by explicit call)
    return _src_to_module_dict[src]


def _check_pickleable(obj: Any) -> None:
    """Raise now, at construction, if the init args or state hold something that cannot be pickled."""
    def skeleton(x: Any) -> Any:  # containers opened up; values known to pickle replaced by None
        if isinstance(x, (list, tuple, set, frozenset)):
            return [skeleton(v) for v in x]
        if isinstance(x, dict):
            return [[skeleton(k), skeleton(v)] for k, v in x.items()]
        if x is None or isinstance(x, (str, int, float, bool, complex, bytes, bytearray)) or is_persistent(x):
            return None
        if type(x).__module__ == "numpy" or type(x).__name__ in ("Tensor", "Parameter"):
            return None
        return x

    pickle.dumps(skeleton(obj))
