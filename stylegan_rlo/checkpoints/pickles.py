"""Network pickles in the official StyleGAN2-ADA format: a safe loader and an interoperable writer.

A network pickle is a dict with 'G', 'D', 'G_ema', 'augment_pipe' (persistent objects, see
`torch_utils.persistence`) and 'training_set_kwargs' (a `dnnlib.util.EasyDict`); our snapshots add 'progress'.

Loading is safe by default: a restricted unpickler admits only the few globals such files need, never
executes the module source embedded in the file, and rebuilds every network as our class of the same name
from its stored constructor arguments, then copies parameters and buffers with shape checks.
"""

from __future__ import annotations

import _compat_pickle
import collections
import copy
import copyreg
import hashlib
import importlib
import io
import math
import os
import pickle
import struct
import zipfile
from typing import IO, Any, Callable, Iterable

import numpy as np
import torch

from dnnlib.util import DownloadError, EasyDict, is_url, open_url
from stylegan_rlo.checkpoints.limits import AllocationGuard, LimitExceeded, check_init_ints, check_structure, short_repr
from stylegan_rlo.errors import UserError
from stylegan_rlo.fileio import BoundedReadError, atomic_write, open_regular
from torch_utils import persistence

try:  # numpy's scalar reconstructor (numpy 2 moved it to numpy._core, numpy 1 pickles say numpy.core)
    from numpy._core.multiarray import scalar as _numpy_scalar
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import scalar as _numpy_scalar

SNAPSHOT_KEYS = ("G", "D", "G_ema", "augment_pipe", "training_set_kwargs")
# Set to 1 to load networks whose parameters or buffers hold NaN or Inf (to inspect a diverged run); otherwise such
# a pickle is refused, naming the tensors, by every command that loads one (generate, calc_fid, compare, train).
ALLOW_NONFINITE_ENV = "STYLEGAN_RLO_ALLOW_NONFINITE"
SAFE_CLASS_MODULES = ("stylegan_rlo.model.networks", "stylegan_rlo.model.augment")
_PICKLE_PROTOCOL = 4  # what the official release writes (Python 3 default); readable by Python >= 3.4


class PickleError(UserError):
    """Base class: a network pickle could not be loaded or saved."""


class MissingPickleError(PickleError, FileNotFoundError):
    """The given pickle path does not exist."""


class PickleDownloadError(MissingPickleError, DownloadError):
    """The given pickle URL could not be downloaded."""


class NonFiniteNetworkError(PickleError):
    """A network in the pickle has NaN or Inf parameters or buffers (a diverged run or a damaged file)."""


class UnsafePickleError(PickleError):
    """The pickle references a global outside the allow-list (possibly malicious, or an exotic pickle)."""


class TensorFlowPickleError(PickleError):
    """A legacy TensorFlow StyleGAN pickle."""


class CorruptPickleError(PickleError):
    """Truncated, corrupt, or not a network pickle at all."""


class TrustedCodeError(PickleError):
    """With trust_pickle, unpickling failed: in the embedded code it executed, or on a corrupt file."""


class UnknownClassError(PickleError):
    """A persistent object names a class we do not implement."""


class IncompatibleNetworkError(PickleError):
    """Stored init args, tensor names or attributes do not fit our class of the same name."""


class ShapeMismatchError(IncompatibleNetworkError):
    """A stored parameter or buffer has a different shape than our rebuilt network expects."""


class PickleLimitError(PickleError, UserError):
    """The file would need more nesting, memory or work than a genuine network pickle (see pickle_limits)."""


# ---------------------------------------------------------------------------------------------------------------
# Loading.

def load_network_pkl(source: str | os.PathLike | IO[bytes], trust_pickle: bool = False) -> dict:
    """Load a network pickle from a path, an open binary file, or an http(s)/file URL (downloaded once, cached).

    Returns a dict with every key of SNAPSHOT_KEYS (missing ones None) plus any extra keys (e.g. 'progress').
    `trust_pickle=True` unpickles without restrictions and executes the embedded module source, exactly like
    the official loader: only for files from a trusted origin.
    """
    if hasattr(source, "read"):
        return _load_from_file(source, getattr(source, "name", "<file object>"), trust_pickle)
    name = os.fspath(source)
    if is_url(name):
        try:
            path = open_url(name, return_filename=True)  # downloaded once into the cache, then reused
        except DownloadError as e:
            raise PickleDownloadError(str(e)) from None
        with _open_pickle(path, "downloaded network pickle") as f:
            try:
                return _load_from_file(f, f"{path} (downloaded from {name})", trust_pickle)
            except CorruptPickleError as e:
                raise CorruptPickleError(f"{e}. Delete the cached copy {path} to download it again.") from None
    if not os.path.exists(name):
        raise MissingPickleError(f"network pickle not found: {name}")
    with _open_pickle(name, "network pickle") as f:
        return _load_from_file(f, name, trust_pickle)


def _open_pickle(path: str, what: str) -> IO[bytes]:
    """Open a regular file (a FIFO, device or folder is refused, not read); MissingPickleError otherwise."""
    try:
        return open_regular(path, what)
    except BoundedReadError as e:
        raise MissingPickleError(str(e)) from None


def _load_from_file(f: IO[bytes], name: str, trust_pickle: bool) -> dict:
    """Unpickle one file (restricted or trusted), then turn persistent records into our networks."""
    unpickler = _TrustedUnpickler(f, name) if trust_pickle else _SafeUnpickler(f, name)
    try:
        if trust_pickle:
            for module_name in SAFE_CLASS_MODULES:  # register our sources first so identical ones are reused
                importlib.import_module(module_name)
            with persistence.trusted_source():
                data = unpickler.load()
        else:
            data = unpickler.load()
    except PickleError:
        raise
    except Exception as e:
        if trust_pickle:  # the embedded code ran: it, not only the bytes, may be what failed
            raise TrustedCodeError(f"{name}: loading with trust_pickle failed, in the code embedded in the pickle "
                                   f"or because the file is corrupt ({type(e).__name__}: {e})") from e
        if isinstance(e, _CORRUPTION_ERRORS):
            raise CorruptPickleError(f"{name}: the file is truncated or corrupt, or not a network pickle "
                                     f"({type(e).__name__}: {e}); re-download or re-create it") from e
        raise

    if not isinstance(data, dict):
        raise CorruptPickleError(f"{name}: not a network pickle (top level is {type(data).__name__}, expected a dict "
                                 f"with keys {', '.join(SNAPSHOT_KEYS)})")
    memo: dict[int, tuple[Any, Any]] = {}
    try:
        check_structure(data, lambda v: [v.state] if isinstance(v, _PersistentRecord) else None)
        data = {key: _materialize(value, f"{name}:{key}", memo) for key, value in data.items()}
    except LimitExceeded as e:
        raise PickleLimitError(f"{name}: {e}; refusing to load it") from None
    for key in SNAPSHOT_KEYS:
        data.setdefault(key, None)
    for key in ("G", "D", "G_ema"):
        if data[key] is not None and not isinstance(data[key], torch.nn.Module):
            raise CorruptPickleError(f"{name}: entry {key!r} is a {type(data[key]).__name__}, not a network")
    check_finite(data, name)
    return data


def check_finite(data: dict, name: str) -> None:
    """NonFiniteNetworkError naming every parameter or buffer with a NaN or Inf, unless ALLOW_NONFINITE_ENV=1."""
    if os.environ.get(ALLOW_NONFINITE_ENV) == "1":
        return
    bad = [f"{key}.{tensor_name}" for key, value in data.items() if isinstance(value, torch.nn.Module)
           for tensor_name, t in (*value.named_parameters(), *value.named_buffers())
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        shown = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise NonFiniteNetworkError(
            f"{name}: {len(bad)} parameter/buffer tensor(s) hold NaN or Inf: {shown}. The run diverged or the file "
            f"is damaged: use an earlier snapshot (or set {ALLOW_NONFINITE_ENV}=1 to load it anyway, for debugging)")


# What a damaged or non-pickle file makes the (restricted) unpickler raise.
_CORRUPTION_ERRORS = (EOFError, pickle.UnpicklingError, struct.error, zipfile.BadZipFile, UnicodeDecodeError,
                      IndexError, ValueError, RuntimeError, TypeError, AttributeError)


class _PersistentRecord:
    """What the safe unpickler makes of a persistent object: its meta dict, rebuilt later top-down."""

    def __init__(self, meta: Any):
        if not isinstance(meta, dict) or not isinstance(meta.get("state"), dict) \
                or not isinstance(meta.get("class_name"), str):
            raise CorruptPickleError("malformed persistent object: expected a meta dict with 'class_name' and 'state'")
        if meta.get("type") != "class" or meta.get("version") != persistence._version:
            raise CorruptPickleError(f"unsupported persistent object format type={meta.get('type')!r} "
                                     f"version={meta.get('version')!r} for class {meta['class_name']}")
        self.class_name: str = meta["class_name"]
        self.state: dict = meta["state"]


def _tf_error(name: str) -> TensorFlowPickleError:
    return TensorFlowPickleError(
        f"{name} is a legacy TensorFlow StyleGAN pickle; TF pickles are not supported. Convert it with the "
        f"official StyleGAN2-ADA PyTorch `legacy.py --source={name} --dest=converted.pkl` and load the result.")


def _load_storage_from_bytes(data: bytes) -> Any:
    """Safe replacement for torch.storage._load_from_bytes: the nested torch.save blob goes through torch's
    weights-only unpickler, which only admits tensors and storages."""
    if not isinstance(data, (bytes, bytearray)):
        raise CorruptPickleError("malformed tensor storage in pickle")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafePickleError(f"refused a tensor storage blob that torch's weights-only loader rejects: {e}. Use "
                                f"--trust-pickle (trust_pickle=True) only if you trust the file.") from e


def _latin1_encode(text: Any, encoding: str = "utf-8") -> bytes:
    """What protocol 0-2 pickles store bytes as (`_codecs.encode(text, 'latin1')`), limited to that use."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"refusing _codecs.encode({type(text).__name__}, {encoding!r}): network pickles "
                                f"only use it to store bytes as latin1 text")
    return text.encode("latin1")


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """copyreg._reconstructor (how protocol 0-1 pickles rebuild an EasyDict), for the allow-listed dicts only."""
    if base is not dict or cls not in (dict, EasyDict, collections.OrderedDict):
        raise UnsafePickleError(f"refusing copyreg._reconstructor({short_repr(cls)}, {short_repr(base)}): only "
                                f"allow-listed classes may be rebuilt")
    return copyreg._reconstructor(cls, base, state)


def _python3_name(module: str, name: str) -> tuple[str, str]:
    """The Python 3 name of a global, as the stdlib unpickler maps Python 2 names (`__builtin__.set`, `copy_reg`)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _PersistentRecord,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "dict"): dict,
    ("_codecs", "encode"): _latin1_encode,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): np.dtype,
}


class _TrustedUnpickler(pickle.Unpickler):
    """Unrestricted (the user vouched for the file), except that TF pickles are reported clearly."""

    def __init__(self, f: IO[bytes], name: str):
        super().__init__(f)
        self.name = name

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("dnnlib.tflib"):
            raise _tf_error(self.name)
        return super().find_class(module, name)


class _SafeUnpickler(_TrustedUnpickler):
    """Admits only _SAFE_GLOBALS; everything else is refused before it can be called."""

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("dnnlib.tflib"):
            raise _tf_error(self.name)
        module, name = _python3_name(module, name)
        found = _SAFE_GLOBALS.get((module, name))
        if found is None:
            raise UnsafePickleError(
                f"{self.name}: refusing to load global '{module}.{name}', which network pickles do not need; the "
                f"file may be malicious or made by other code. Use --trust-pickle (trust_pickle=True) only if you "
                f"trust where the file came from: that runs arbitrary code from it.")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.name}: unexpected persistent id {pid!r}; not a network pickle")


def _materialize(value: Any, where: str, memo: dict[int, tuple[Any, Any]]) -> Any:
    """Replace persistent records (anywhere inside plain containers) by rebuilt objects. Each distinct object is
    handled once (`memo`: id -> (object, result)), so shared references stay shared and cost nothing extra."""
    if not isinstance(value, (_PersistentRecord, dict, list, tuple)):
        return value
    if id(value) in memo:
        return memo[id(value)][1]
    if isinstance(value, _PersistentRecord):
        result = _build(value.class_name, value.state, where, memo)
    elif isinstance(value, dict):
        result = type(value)((k, _materialize(v, where, memo)) for k, v in value.items())
    else:
        result = type(value)(_materialize(v, where, memo) for v in value)
    memo[id(value)] = (value, result)
    return result


def find_persistent_class(class_name: str) -> type:
    """Our persistent class called `class_name` (from SAFE_CLASS_MODULES), or UnknownClassError."""
    for module_name in SAFE_CLASS_MODULES:
        cls = getattr(importlib.import_module(module_name), class_name, None)
        if isinstance(cls, type) and persistence.is_persistent(cls):
            return cls
    raise UnknownClassError(f"the pickle contains a persistent object of class {class_name!r}, which stylegan-rlo "
                            f"does not implement (known: {', '.join(_known_class_names())}). If the file comes "
                            f"from a trusted source, load it with --trust-pickle (trust_pickle=True).")


def _known_class_names() -> list[str]:
    names = []
    for module_name in SAFE_CLASS_MODULES:
        module = importlib.import_module(module_name)
        names += [k for k, v in vars(module).items() if isinstance(v, type) and persistence.is_persistent(v)]
    return sorted(names)


def rebuild_persistent_obj(meta: dict) -> Any:
    """Rebuild an object from a persistent meta dict without executing its source (plain pickle.load path).

    Called by `torch_utils.persistence._reconstruct_persistent_obj`. If the embedded source is exactly that of
    our class, the stored state is adopted as is (like the official loader); otherwise the object is rebuilt.
    """
    cls = find_persistent_class(meta["class_name"])
    if meta.get("module_src") == cls._orig_module_src:
        obj = cls.__new__(cls)
        obj.__setstate__(dict(meta["state"]))
        return obj
    return _build(meta["class_name"], meta["state"], meta["class_name"], {})


def _build(class_name: str, state: dict, where: str, memo: dict[int, tuple[Any, Any]]) -> Any:
    """Construct our class from the stored init args/kwargs, then load the stored tensors into it.

    The constructor runs under an AllocationGuard: it may not allocate much more than the tensors stored for it.
    """
    cls = find_persistent_class(class_name)
    args = _materialize(state.get("_init_args", ()), where, memo)
    kwargs = _materialize(state.get("_init_kwargs", {}), where, memo)
    if not isinstance(args, (tuple, list)) or not isinstance(kwargs, dict):
        raise CorruptPickleError(f"{where}: malformed init args for {class_name}")
    check_init_ints((args, kwargs), f"{where} ({class_name})")
    stored_bytes, stored_tensors = _stored_size(state)
    try:
        # Loading must not disturb the caller's random stream, nor allocate much beyond what the file stores.
        guard = AllocationGuard(stored_bytes, stored_tensors, f"{where} ({class_name})")
        with torch.random.fork_rng(devices=[]), guard:
            obj = cls(*args, **dict(kwargs))
    except LimitExceeded:
        raise
    except Exception as e:
        raise IncompatibleNetworkError(f"{where}: cannot construct {class_name}(*{short_repr(args)}, "
                                       f"**{short_repr(dict(kwargs))}): {type(e).__name__}: {e}") from e
    if isinstance(obj, torch.nn.Module):
        _load_module_state(obj, state, where)
    return obj


def _stored_size(state: Any) -> tuple[int, int]:
    """(bytes, count) of the tensors stored in a module state and its stored submodules."""
    total_bytes = count = 0
    pending = [state]
    while pending:
        current = pending.pop()
        if not isinstance(current, dict):
            continue
        for table in ("_parameters", "_buffers"):
            tensors = current.get(table)
            for t in tensors.values() if isinstance(tensors, dict) else ():
                if isinstance(t, torch.Tensor):
                    total_bytes += t.numel() * t.element_size()
                    count += 1
        modules = current.get("_modules")
        for child in modules.values() if isinstance(modules, dict) else ():
            pending.append(_child_view(child)[1] if child is not None else None)
    return total_bytes, count


def _child_view(child: Any) -> tuple[str, dict]:
    """(class name, state dict) of a stored submodule: a safe-loader record or an already unpickled module."""
    if isinstance(child, _PersistentRecord):
        return child.class_name, child.state
    return type(child).__name__, child.__dict__


def _load_module_state(module: torch.nn.Module, state: dict, where: str) -> None:
    """Copy stored parameters, buffers and training flags into `module` and its submodules, checking structure."""
    _copy_tensors(module._parameters, state.get("_parameters", {}), where, "parameter")
    _copy_tensors(module._buffers, state.get("_buffers", {}), where, "buffer")
    _check_plain_attributes(module, state, where)
    module.training = bool(state.get("training", module.training))

    stored_children = state.get("_modules", {})
    _check_same_names(module._modules, stored_children, where, "submodule")
    for name, child in module._modules.items():
        stored = stored_children[name]
        if (child is None) != (stored is None):
            raise IncompatibleNetworkError(f"{where}.{name}: submodule present on one side only")
        if child is None:
            continue
        stored_class, stored_state = _child_view(stored)
        if stored_class != type(child).__name__:
            raise IncompatibleNetworkError(f"{where}.{name}: stored class {stored_class}, but our "
                                           f"{type(module).__name__} builds a {type(child).__name__} here")
        _load_module_state(child, stored_state, f"{where}.{name}")


def _check_same_names(ours: dict, stored: Any, where: str, kind: str) -> None:
    if not isinstance(stored, dict):
        raise CorruptPickleError(f"{where}: malformed {kind} table ({type(stored).__name__})")
    missing = sorted(set(ours) - set(stored))
    extra = sorted(set(stored) - set(ours))
    if missing or extra:
        raise IncompatibleNetworkError(f"{where}: {kind}s differ from our class: missing in file {missing}, "
                                       f"unexpected in file {extra}")


def _copy_tensors(ours: dict, stored: Any, where: str, kind: str) -> None:
    """Copy each stored tensor into ours after checking type and shape; keep the stored requires_grad flag."""
    _check_same_names(ours, stored, where, kind)
    for name, dst in ours.items():
        src = stored[name]
        if dst is None or src is None:
            if (dst is None) != (src is None):
                raise IncompatibleNetworkError(f"{where}.{name}: {kind} is None on one side only")
            continue
        if not isinstance(src, torch.Tensor):
            raise CorruptPickleError(f"{where}.{name}: stored {kind} is a {type(src).__name__}, not a tensor")
        if tuple(src.shape) != tuple(dst.shape):
            raise ShapeMismatchError(f"{where}.{name}: {kind} shape mismatch: our network expects "
                                     f"{tuple(dst.shape)}, the file has {tuple(src.shape)}")
        with torch.no_grad():
            dst.copy_(src)
        if isinstance(dst, torch.nn.Parameter):
            dst.requires_grad_(src.requires_grad)


def _check_plain_attributes(module: torch.nn.Module, state: dict, where: str) -> None:
    """Scalar attributes derived from init args must agree: a mismatch means different network code."""
    for key, stored in state.items():
        if key.startswith("_") or key == "training" or key not in module.__dict__:
            continue
        ours = module.__dict__[key]
        if _is_scalar(stored) and _is_scalar(ours) and not _scalars_equal(stored, ours):
            raise IncompatibleNetworkError(f"{where}.{key}: the file says {stored!r} but our "
                                           f"{type(module).__name__} computes {ours!r} from the same init args")


def _is_scalar(x: Any) -> bool:
    return x is None or isinstance(x, (bool, int, float, str, np.generic))


def _scalars_equal(a: Any, b: Any) -> bool:
    if isinstance(a, (str, type(None))) or isinstance(b, (str, type(None))):
        return a == b
    return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Saving.

def save_network_pkl(path: str | os.PathLike, snapshot: dict,
                     before_commit: Callable[[str], None] | None = None) -> None:
    """Write a snapshot dict as an official-format network pickle, atomically.

    Networks must be persistent objects (our classes); those holding non-CPU tensors are saved as CPU copies.
    The file loads with plain `pickle.load` (this package installed), our safe loader, and the official loader.
    `before_commit(sha256_hex)` runs once the bytes are written but before the file replaces `path`: training
    writes the snapshot's state file there, so the pickle never appears without its state.
    """
    if not isinstance(snapshot, dict):
        raise TypeError(f"snapshot must be a dict, got {type(snapshot).__name__}")
    data: dict[str, Any] = {}
    for key, value in snapshot.items():
        if key == "training_set_kwargs" and value is not None:
            value = EasyDict(value)
        elif key in SNAPSHOT_KEYS and value is not None:
            if not persistence.is_persistent(value):
                raise TypeError(f"snapshot[{key!r}] is a {type(value).__name__} that is not a persistent class "
                                f"instance; only persistent networks can be loaded by other code")
            value = _cpu_copy_if_needed(value)
        data[key] = value
    with atomic_write(path, "wb") as f:
        hashing = _HashingWriter(f)
        pickle.dump(data, hashing, protocol=_PICKLE_PROTOCOL)
        if before_commit is not None:
            before_commit(hashing.sha256.hexdigest())


class _HashingWriter:
    """A binary file's write() that also feeds a SHA-256 of everything written."""

    def __init__(self, f: IO[bytes]):
        self.f = f
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        return self.f.write(data)


def _tensors_of(module: torch.nn.Module) -> Iterable[torch.Tensor]:
    yield from module.parameters()
    yield from module.buffers()


def _cpu_copy_if_needed(value: Any) -> Any:
    if isinstance(value, torch.nn.Module) and any(t.device.type != "cpu" for t in _tensors_of(value)):
        return copy.deepcopy(value).cpu()
    return value


__all__ = [
    "SNAPSHOT_KEYS", "SAFE_CLASS_MODULES", "PickleError", "MissingPickleError", "PickleDownloadError",
    "UnsafePickleError", "TensorFlowPickleError", "CorruptPickleError", "TrustedCodeError", "UnknownClassError",
    "IncompatibleNetworkError", "ShapeMismatchError", "PickleLimitError", "load_network_pkl", "save_network_pkl",
    "find_persistent_class", "rebuild_persistent_obj",
]
