"""Just-in-time build of the C++/CUDA plugins of torch_utils.ops, cached on disk.

`get_plugin()` returns the compiled module, or None when it cannot be used (PyTorch without CUDA, no GPU, no
CUDA toolkit, no ninja, a failed build). The ops then take their PyTorch path, and ONE warning per process says
what failed and how to fix it. `build_plugin()` only compiles and imports (no GPU needed), for compile checks.

Environment:
  STYLEGAN_RLO_CUSTOM_OPS            auto (default) | 0: never use the plugins, silently | 1: failures raise
  STYLEGAN_RLO_CUSTOM_OPS_VERBOSITY  none | brief (default: one line per actual compile) | full (compiler commands)
  STYLEGAN_RLO_EXTENSIONS_DIR        cache folder (default $TORCH_EXTENSIONS_DIR/stylegan_rlo, else
                                     ~/.cache/stylegan_rlo/torch_extensions)
  CUDA_HOME / CUDA_PATH              CUDA toolkit root; found automatically when nvcc is on PATH or in /usr/local/cuda*
  TORCH_CUDA_ARCH_LIST               GPU architectures to compile for (default: the visible GPUs)
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import types
import warnings
from typing import Iterator, Sequence

import torch

try:
    import fcntl
except ImportError:  # Windows: concurrent builds stay correct (atomic rename), they may just duplicate work
    fcntl = None

ENV_SWITCH = "STYLEGAN_RLO_CUSTOM_OPS"
ENV_VERBOSITY = "STYLEGAN_RLO_CUSTOM_OPS_VERBOSITY"
ENV_CACHE_DIR = "STYLEGAN_RLO_EXTENSIONS_DIR"
VERBOSITY_LEVELS = ("none", "brief", "full")
ARCH_WITHOUT_GPU = "7.5+PTX"  # compile-only builds: oldest arch every supported toolkit knows, PTX runs on newer GPUs
TOOLKIT_GLOBS = ("/usr/local/cuda", "/usr/local/cuda-*", "/opt/cuda", "/opt/cuda-*")
_CACHE_FORMAT = 1  # part of the cache key: bump when the layout of a cached build changes
_MANAGED_KWARGS = ("name", "sources", "build_directory", "verbose", "is_python_module", "is_standalone")
_SWITCH_VALUES = {"": "auto", "auto": "auto", "0": "off", "off": "off", "false": "off", "no": "off",
                  "1": "force", "on": "force", "true": "force", "yes": "force", "force": "force"}

verbosity = os.environ.get(ENV_VERBOSITY, "brief")  # module-level, as upstream: 'none' | 'brief' | 'full'

_logger = logging.getLogger(__name__)


class CustomOpsWarning(UserWarning):
    """Category of the fallback warning, so that it can be filtered."""


class PluginUnavailable(RuntimeError):
    """A plugin cannot be built or used: `reason` says why, `fix` what to do, `log_path` holds compiler output."""

    def __init__(self, reason: str, fix: str, log_path: str | None = None):
        self.reason, self.fix, self.log_path = reason, fix, log_path
        super().__init__(f"{reason}. To fix: {fix}")


@dataclasses.dataclass(frozen=True)
class CudaToolkit:
    """A CUDA toolkit install: its root (holding bin/nvcc), nvcc, and the release reported by nvcc ('13.0')."""
    root: str
    nvcc: str
    version: str | None


@dataclasses.dataclass
class _ProcessState:
    plugins: dict = dataclasses.field(default_factory=dict)  # module_name -> module or None
    warned: bool = False


_STATE = _ProcessState()

# ---------------------------------------------------------------------------------------------
# Public entry points.


def get_plugin(module_name: str, sources: Sequence[str], headers: Sequence[str] | None = None,
               source_dir: str | None = None, **build_kwargs) -> types.ModuleType | None:
    """Return the CUDA plugin `module_name` (built on first use, then cached), or None to use the PyTorch path.

    sources/headers are file names, relative to source_dir when given; headers=None takes the *.h/*.cuh files
    next to the sources. build_kwargs go to torch.utils.cpp_extension.load (extra_cuda_cflags, ...).
    The result is memoized per process by module_name.
    """
    if module_name in _STATE.plugins:
        return _STATE.plugins[module_name]
    mode = _switch()
    _check_verbosity()
    plugin = None
    if mode == "off":
        _logger.info("CUDA plugin %s disabled by %s=0; using the PyTorch path.", module_name, ENV_SWITCH)
    else:
        try:
            _require_cuda_runtime()
            plugin = build_plugin(module_name, sources, headers=headers, source_dir=source_dir, **build_kwargs)
        except Exception as exc:  # pylint: disable=broad-except
            if mode == "force":
                raise
            if not isinstance(exc, PluginUnavailable):
                exc = PluginUnavailable(f"unexpected error while setting it up: {exc!r}",
                                        "please report this error; meanwhile set "
                                        f"{ENV_SWITCH}=0 to skip the plugins")
            _warn_once(module_name, exc)
    _STATE.plugins[module_name] = plugin
    return plugin



def get_op_plugin(stem: str, source_dir: str) -> types.ModuleType | None:
    """get_plugin for one of our ops: `<stem>_plugin` from <stem>.cpp, <stem>.cu and <stem>.h in `source_dir`,
    compiled with fast math (the ops' kernels are written for it)."""
    return get_plugin(f"{stem}_plugin", sources=[f"{stem}.cpp", f"{stem}.cu"], headers=[f"{stem}.h"],
                      source_dir=source_dir, extra_cuda_cflags=["--use_fast_math"])

def build_plugin(module_name: str, sources: Sequence[str], headers: Sequence[str] | None = None,
                 source_dir: str | None = None, *, cache_dir: str | None = None,
                 **build_kwargs) -> types.ModuleType:
    """Compile (or take from the disk cache) and import a plugin; needs a compiler, not a GPU.

    The cache entry is keyed by the content of sources and headers, the torch/CUDA/Python versions, the
    target GPU architectures and build_kwargs. Concurrent builders of one entry wait for each other (file
    lock) and a finished build is published by an atomic rename, so a crash never leaves a half-built entry.
    Raises PluginUnavailable with the reason, a fix and (for compile errors) the path of the compiler log.
    """
    _check_verbosity()
    bad = sorted(set(build_kwargs) & set(_MANAGED_KWARGS))
    if bad:
        raise ValueError(f"build_plugin: {bad} are set by custom_ops itself; pass only compiler/linker options")
    files, source_names = _read_plugin_files(sources, headers, source_dir)
    needs_cuda = any(name.endswith((".cu", ".cuh")) for name in source_names)
    arch_list = _cuda_arch_list() if needs_cuda else ""
    key = _cache_key(module_name, files, arch_list, build_kwargs)
    root = _prepare_cache_root(cache_dir)
    final_dir = os.path.join(root, f"{module_name}-{key}")
    if _is_complete(final_dir):
        return _import_built(final_dir)

    toolkit = None
    if needs_cuda:
        toolkit = find_cuda_toolkit()
        if toolkit is None:
            raise PluginUnavailable(
                'the CUDA compiler nvcc was not found (looked at $CUDA_HOME, $CUDA_PATH, nvcc on PATH, '
                f'{", ".join(TOOLKIT_GLOBS)})',
                f'install the CUDA toolkit {torch.version.cuda or ""} (the version PyTorch was built with) and '
                'set CUDA_HOME to its root, the folder holding bin/nvcc')
    import torch.utils.cpp_extension as cpp_ext  # pylint: disable=import-outside-toplevel
    if not cpp_ext.is_ninja_available():
        raise PluginUnavailable("the ninja build tool was not found", "pip install ninja (in this environment)")

    with _exclusive_lock(final_dir + ".lock"):
        if _is_complete(final_dir):  # another process finished it while we waited
            return _import_built(final_dir)
        return _build_and_publish(module_name, files, source_names, final_dir, toolkit, arch_list, build_kwargs)


def find_cuda_toolkit(globs: Sequence[str] | None = None) -> CudaToolkit | None:
    """Locate a CUDA toolkit, robust to nvcc wrappers that make torch's CUDA_HOME guess wrong.

    Order: $CUDA_HOME, $CUDA_PATH, the install behind nvcc on PATH (following symlinks, then asking nvcc itself,
    which works for wrapper scripts such as /usr/local/bin/nvcc), then `globs` (default TOOLKIT_GLOBS). Among
    the automatic candidates one whose major version matches torch.version.cuda is preferred.
    """
    explicit = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    for root in explicit:
        if root and _is_toolkit_root(root):
            return _describe_toolkit(root)

    seen, toolkits = set(), []
    for root in _automatic_toolkit_candidates(TOOLKIT_GLOBS if globs is None else globs):
        if root and os.path.realpath(root) not in seen and _is_toolkit_root(root):
            seen.add(os.path.realpath(root))
            toolkits.append(_describe_toolkit(root))
    wanted_major = (torch.version.cuda or "").split(".")[0]
    for toolkit in toolkits:
        if toolkit.version and toolkit.version.split(".")[0] == wanted_major:
            return toolkit
    return toolkits[0] if toolkits else None


def _automatic_toolkit_candidates(globs: Sequence[str]) -> Iterator[str | None]:
    nvcc = shutil.which("nvcc")
    if nvcc:
        root = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
        yield root
        if not _is_toolkit_root(root):  # a wrapper script: only nvcc itself knows
            yield _root_reported_by_nvcc(nvcc)
    for pattern in globs:
        yield from sorted(glob.glob(pattern), key=_version_sort_key, reverse=True)


def default_cache_dir() -> str:
    """Folder holding the cached plugin builds (see the module docstring for the variables that move it)."""
    if os.environ.get(ENV_CACHE_DIR):
        return os.environ[ENV_CACHE_DIR]
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return os.path.join(os.environ["TORCH_EXTENSIONS_DIR"], "stylegan_rlo")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "stylegan_rlo", "torch_extensions")

# ---------------------------------------------------------------------------------------------
# Policy: switch, runtime requirements, the single warning.


def _switch() -> str:
    value = os.environ.get(ENV_SWITCH, "").strip().lower()
    if value not in _SWITCH_VALUES:
        raise ValueError(f"{ENV_SWITCH}={os.environ[ENV_SWITCH]!r} is not understood; use auto, 0 (skip the CUDA "
                         "plugins) or 1 (require them)")
    return _SWITCH_VALUES[value]


def _check_verbosity() -> None:
    if verbosity not in VERBOSITY_LEVELS:
        raise ValueError(f"custom_ops.verbosity (or ${ENV_VERBOSITY}) is {verbosity!r}; use one of {VERBOSITY_LEVELS}")


def _require_cuda_runtime() -> None:
    """Raise PluginUnavailable unless this process can run CUDA kernels."""
    if not torch.version.cuda:
        raise PluginUnavailable("this PyTorch build has no CUDA support (torch.version.cuda is None)",
                                "install a CUDA build of PyTorch (see https://pytorch.org/get-started/locally/)")
    if not torch.cuda.is_available():
        raise PluginUnavailable("no CUDA GPU is usable (torch.cuda.is_available() is False)",
                                "check the NVIDIA driver (nvidia-smi) and CUDA_VISIBLE_DEVICES")


def _warn_once(module_name: str, exc: PluginUnavailable) -> None:
    message = (f"CUDA plugin {module_name!r} is not available: {exc.reason}. The ops use their PyTorch "
               f"implementation instead (same results, slower). To fix: {exc.fix}")
    if exc.log_path:
        message += f"; the full compiler output is in {exc.log_path}"
    message += f". Set {ENV_SWITCH}=0 to use the PyTorch path without this warning, or =1 to make it an error."
    if _STATE.warned:
        _logger.info(message)
        return
    _STATE.warned = True
    warnings.warn(message, CustomOpsWarning, stacklevel=3)

# ---------------------------------------------------------------------------------------------
# Sources and the cache key.


def _read_plugin_files(sources, headers, source_dir) -> tuple[dict, list]:
    """Return ({basename: bytes} for sources and headers, [source basenames])."""
    def resolve(name):
        return os.path.join(source_dir, name) if source_dir else name

    source_paths = [resolve(s) for s in sources]
    if not source_paths:
        raise ValueError("build_plugin: no sources given")
    if headers is None:
        folders = sorted({os.path.dirname(os.path.abspath(p)) for p in source_paths})
        header_paths = sorted(p for d in folders for ext in ("*.h", "*.cuh", "*.hpp") for p in glob.glob(os.path.join(d, ext)))
    else:
        header_paths = [resolve(h) for h in headers]
    files = {}
    for path in source_paths + header_paths:
        name = os.path.basename(path)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise PluginUnavailable(f"plugin file {path} cannot be read ({exc.strerror})",
                                    "reinstall the package; the .cpp/.cu/.h files must ship with torch_utils/ops") from exc
        if name in files and files[name] != data:
            raise ValueError(f"build_plugin: two different files are named {name!r}; basenames must be unique")
        files[name] = data
    return files, [os.path.basename(p) for p in source_paths]


def _cache_key(module_name: str, files: dict, arch_list: str, build_kwargs: dict) -> str:
    meta = {"format": _CACHE_FORMAT, "module": module_name, "torch": torch.__version__,
            "cuda": torch.version.cuda, "python": sysconfig.get_config_var("EXT_SUFFIX") or sys.version,
            "arch": arch_list, "kwargs": repr(sorted(build_kwargs.items()))}
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()[:20]


def _cuda_arch_list() -> str:
    """TORCH_CUDA_ARCH_LIST if set, else the visible GPUs (clamped to what this torch supports), else a default."""
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return os.environ["TORCH_CUDA_ARCH_LIST"]
    if not torch.cuda.is_available():
        return ARCH_WITHOUT_GPU
    supported = [int(a[3:]) for a in torch.cuda.get_arch_list() if re.fullmatch(r"sm_\d+", a)]
    newest = max(((s // 10, s % 10) for s in supported), default=None)
    caps = set()
    for i in range(torch.cuda.device_count()):
        cap = torch.cuda.get_device_capability(i)
        caps.add(min(cap, newest) if newest else cap)
    return ";".join(f"{major}.{minor}" for major, minor in sorted(caps)) + "+PTX"

# ---------------------------------------------------------------------------------------------
# The cache folder.


def _prepare_cache_root(cache_dir: str | None) -> str:
    root = os.path.abspath(cache_dir or default_cache_dir())
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as exc:
        raise PluginUnavailable(f"the plugin cache folder {root} cannot be created ({exc.strerror})",
                                f"set {ENV_CACHE_DIR} to a writable folder") from exc
    return root


def _is_complete(build_dir: str) -> bool:
    return os.path.isfile(os.path.join(build_dir, "manifest.json"))


def _import_built(build_dir: str) -> types.ModuleType:
    """Import the extension of a finished build (no compiler needed)."""
    try:
        with open(os.path.join(build_dir, "manifest.json"), encoding="utf-8") as fh:
            manifest = json.load(fh)
        return _import_extension(manifest["module"], os.path.join(build_dir, manifest["library"]))
    except Exception as exc:  # pylint: disable=broad-except
        raise PluginUnavailable(f"the cached build in {build_dir} cannot be loaded ({exc})",
                                "delete that folder to rebuild the plugin") from exc


def _import_extension(name: str, path: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _exclusive_lock(path: str) -> Iterator[None]:
    """Hold an advisory lock on `path` (released by the OS even if the process dies)."""
    if fcntl is None:
        yield
        return
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _build_and_publish(module_name, files, source_names, final_dir, toolkit, arch_list, build_kwargs):
    """Build in a private folder, then publish it as final_dir with an atomic rename."""
    root = os.path.dirname(final_dir)
    work_dir = tempfile.mkdtemp(prefix=f".{os.path.basename(final_dir)}-", dir=root)
    try:
        for name, data in files.items():
            with open(os.path.join(work_dir, name), "wb") as fh:
                fh.write(data)
        start = time.time()
        if verbosity != "none":
            print(f"Building plugin {module_name!r} (first use, cached afterwards in {final_dir})...",
                  file=sys.stderr, flush=True)
        try:
            module = _compile(module_name, work_dir, source_names, toolkit, arch_list, build_kwargs, root)
        except Exception as exc:  # pylint: disable=broad-except
            raise _build_failure(module_name, final_dir, exc, toolkit) from exc
        if verbosity != "none":
            print(f"Built plugin {module_name!r} in {time.time() - start:.0f} s.", file=sys.stderr, flush=True)
        library = os.path.basename(module.__file__)
        manifest = {"module": module.__name__, "library": library, "built_at": time.time(),
                    "toolkit": toolkit.root if toolkit else None, "arch": arch_list}
        tmp_manifest = os.path.join(work_dir, "manifest.json.tmp")
        with open(tmp_manifest, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh)
        os.replace(tmp_manifest, os.path.join(work_dir, "manifest.json"))
        if os.path.isdir(final_dir) and not _is_complete(final_dir):
            shutil.rmtree(final_dir, ignore_errors=True)  # leftover of a crashed build
        try:
            os.rename(work_dir, final_dir)
        except OSError:
            if not _is_complete(final_dir):  # someone else published meanwhile: theirs is as good as ours
                raise
        return module
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _compile(module_name, work_dir, source_names, toolkit, arch_list, build_kwargs, cache_root):
    import torch.utils.cpp_extension as cpp_ext  # pylint: disable=import-outside-toplevel
    kwargs = dict(build_kwargs)
    kwargs["extra_include_paths"] = [work_dir] + list(kwargs.get("extra_include_paths") or [])
    if toolkit is not None:
        kwargs["extra_ldflags"] = list(kwargs.get("extra_ldflags") or []) + _cudart_link_flags(toolkit, cache_root)
    with _cuda_build_environment(toolkit, arch_list):
        return cpp_ext.load(name=module_name, sources=[os.path.join(work_dir, s) for s in source_names],
                            build_directory=work_dir, verbose=(verbosity == "full"), **kwargs)


def _build_failure(module_name, final_dir, exc, toolkit) -> PluginUnavailable:
    """Save the compiler output next to the cache entry and describe the failure."""
    log_path = final_dir + ".log"
    text = f"Building {module_name} failed.\nToolkit: {toolkit}\n\n{exc}\n"
    try:
        with open(log_path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError:
        log_path = None
    first_error = next((line.strip() for line in str(exc).splitlines() if re.search(r"\berror\b", line, re.I)),
                       str(exc).splitlines()[0] if str(exc) else repr(exc))
    where = f"CUDA_HOME={toolkit.root} (CUDA {toolkit.version})" if toolkit else "the C++ compiler"
    return PluginUnavailable(f"building it failed: {first_error[:300]}",
                             f"read the compiler output; check that {where} matches PyTorch's CUDA "
                             f"{torch.version.cuda} and that a host C++ compiler supported by nvcc is installed",
                             log_path)

# ---------------------------------------------------------------------------------------------
# CUDA toolkit details.


def _is_toolkit_root(root: str) -> bool:
    nvcc = os.path.join(root, "bin", "nvcc.exe" if os.name == "nt" else "nvcc")
    headers = [os.path.join(root, "include", "cuda_runtime.h")]
    headers += glob.glob(os.path.join(root, "targets", "*", "include", "cuda_runtime.h"))
    return os.path.isfile(nvcc) and os.access(nvcc, os.X_OK) and any(os.path.isfile(h) for h in headers)


def _describe_toolkit(root: str) -> CudaToolkit:
    nvcc = os.path.join(root, "bin", "nvcc.exe" if os.name == "nt" else "nvcc")
    version = None
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60, check=False).stdout
        match = re.search(r"release (\d+\.\d+)", out)
        version = match.group(1) if match else None
    except (OSError, subprocess.SubprocessError):
        pass
    return CudaToolkit(root=os.path.abspath(root), nvcc=nvcc, version=version)


def _root_reported_by_nvcc(nvcc: str) -> str | None:
    """Ask nvcc where it lives (its dry run prints `#$ TOP=<root>/bin/..`)."""
    try:
        out = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                             capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"^#\$ TOP=(.+)$", out.stdout + out.stderr, re.M)
    return os.path.normpath(match.group(1).strip()) if match else None


def _version_sort_key(path: str) -> tuple:
    return tuple(int(n) for n in re.findall(r"\d+", os.path.basename(path)))


def _cudart_link_flags(toolkit: CudaToolkit, cache_root: str) -> list[str]:
    """-L flags that let the linker resolve torch's `-lcudart` (toolkit lib64/lib/targets, or the pip wheel)."""
    if os.name == "nt":
        return []
    dirs = [os.path.join(toolkit.root, "lib64"), os.path.join(toolkit.root, "lib")]
    dirs += sorted(glob.glob(os.path.join(toolkit.root, "targets", "*", "lib")))
    flags = [f"-L{d}" for d in dirs if os.path.isfile(os.path.join(d, "libcudart.so"))]
    if flags:
        return flags[:1]
    # The nvidia-cuda-runtime wheel ships only libcudart.so.<major>: link through a private unversioned symlink.
    for lib in _pip_cudart_libraries():
        link_dir = os.path.join(cache_root, "_cudart")
        os.makedirs(link_dir, exist_ok=True)
        tmp_link = os.path.join(link_dir, f".libcudart.so.{os.getpid()}")
        if os.path.lexists(tmp_link):
            os.remove(tmp_link)
        os.symlink(lib, tmp_link)
        os.replace(tmp_link, os.path.join(link_dir, "libcudart.so"))
        return [f"-L{link_dir}"]
    return []


def _pip_cudart_libraries() -> list[str]:
    """libcudart.so.<major> files of the installed nvidia-* wheels, matching torch's CUDA major first."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return []
    found = []
    for base in spec.submodule_search_locations:
        found += glob.glob(os.path.join(base, "*", "lib", "libcudart.so.[0-9]*"))
    major = (torch.version.cuda or "").split(".")[0]
    return sorted(found, key=lambda p: not p.endswith(f".so.{major}"))


@contextlib.contextmanager
def _cuda_build_environment(toolkit: CudaToolkit | None, arch_list: str) -> Iterator[None]:
    """Point torch.utils.cpp_extension at our toolkit and arch list for the duration of one build."""
    import torch.utils.cpp_extension as cpp_ext  # pylint: disable=import-outside-toplevel
    if toolkit is None:
        yield
        return
    saved_home = cpp_ext.CUDA_HOME
    saved_env = {k: os.environ.get(k) for k in ("CUDA_HOME", "TORCH_CUDA_ARCH_LIST")}
    cpp_ext.CUDA_HOME = toolkit.root  # torch guessed it at import time, possibly wrongly (nvcc wrappers)
    os.environ["CUDA_HOME"] = toolkit.root
    os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list
    try:
        yield
    finally:
        cpp_ext.CUDA_HOME = saved_home
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
