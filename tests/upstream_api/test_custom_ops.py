"""Tests of torch_utils.custom_ops and of the upfirdn2d / bias_act CUDA kernels.

Always: the fallback policy (None + exactly one warning naming the reason; the ops still work), CUDA toolkit
detection on fake installs, caching and concurrent builds of a tiny C++ plugin (needs g++ and ninja).
With g++: the kernel math (torch_utils/ops/*.h), run through a CPU emulation of the CUDA grid
(tests/fixtures/custom_ops_host_harness.cpp), against naive float64 references.
With nvcc: the .cu device code compiles to PTX with every kernel instance (always on, seconds); the full
plugin build + import through custom_ops is marked slow (about 1 CPU-minute per plugin; cached on disk).
With a GPU: the kernels against the same references and against the PyTorch path, values and gradients.
"""

import ctypes
import os
import re
import shutil
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from training_fixtures import FIXTURES, REPO

from torch_utils import custom_ops
from torch_utils.ops import bias_act, upfirdn2d

OPS_DIR = str(REPO / "torch_utils" / "ops")
HARNESS_SRC = str(FIXTURES / "custom_ops_host_harness.cpp")
PLUGINS = {  # module name -> (sources, headers), as torch_utils.ops builds them
    "upfirdn2d_plugin": (["upfirdn2d.cpp", "upfirdn2d.cu"], ["upfirdn2d.h"]),
    "bias_act_plugin": (["bias_act.cpp", "bias_act.cu"], ["bias_act.h"]),
}
BUILD_KWARGS = {"extra_cuda_cflags": ["--use_fast_math"]}
CXX = shutil.which("g++") or shutil.which("c++")
HAVE_NINJA = shutil.which("ninja") is not None or os.path.isfile(os.path.join(os.path.dirname(sys.executable), "ninja"))
HAVE_GPU = torch.cuda.is_available()

needs_cxx = pytest.mark.skipif(CXX is None or os.name == "nt", reason="needs a C++ compiler (g++) on Linux")
needs_ninja = pytest.mark.skipif(CXX is None or not HAVE_NINJA or os.name == "nt", reason="needs g++ and ninja")
needs_gpu = pytest.mark.skipif(not HAVE_GPU, reason="needs a CUDA GPU")


def _get_plugin(name):
    sources, headers = PLUGINS[name]
    return custom_ops.get_plugin(name, sources=sources, headers=headers, source_dir=OPS_DIR, **BUILD_KWARGS)


@pytest.fixture
def fresh_process(monkeypatch, tmp_path):
    """custom_ops as in a new process (no memoized plugins, no warning yet), with a private cache folder."""
    monkeypatch.setattr(custom_ops, "_STATE", custom_ops._ProcessState())
    monkeypatch.setenv(custom_ops.ENV_CACHE_DIR, str(tmp_path / "cache"))
    monkeypatch.delenv(custom_ops.ENV_SWITCH, raising=False)
    monkeypatch.setattr(custom_ops, "verbosity", "none")


def _hide_cuda_toolkit(monkeypatch, tmp_path):
    empty_bin = tmp_path / "empty_bin"
    empty_bin.mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(empty_bin))
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "no_such_cuda"))
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setattr(custom_ops, "TOOLKIT_GLOBS", ())


def _pretend_gpu(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", torch.version.cuda or "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "7.5")  # the arch list must not query the (absent) devices


def _fallback_warnings(records):
    return [str(r.message) for r in records if issubclass(r.category, custom_ops.CustomOpsWarning)]

# ---------------------------------------------------------------------------------------------
# Independent float64 references.


def ref_upfirdn2d(x, f, up=(1, 1), down=(1, 1), pad=(0, 0, 0, 0), flip=False, gain=1.0):
    """Definition-level upfirdn2d: zero-insert, pad/crop, correlate with the (flipped unless flip) filter, decimate."""
    x = np.asarray(x, dtype=np.float64)
    f = np.asarray(f, dtype=np.float64)
    n, c, h, w = x.shape
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, pad
    xu = np.zeros((n, c, h * upy, w * upx))
    xu[:, :, ::upy, ::upx] = x
    xp = np.pad(xu, ((0, 0), (0, 0), (max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0))))
    xp = xp[:, :, max(-py0, 0):xp.shape[2] - max(-py1, 0), max(-px0, 0):xp.shape[3] - max(-px1, 0)]
    weights = f if flip else f[::-1, ::-1]
    fh, fw = f.shape
    out_h, out_w = (xp.shape[2] - fh) // downy + 1, (xp.shape[3] - fw) // downx + 1
    y = np.zeros((n, c, out_h, out_w))
    for oy in range(out_h):
        for ox in range(out_w):
            window = xp[:, :, oy * downy:oy * downy + fh, ox * downx:ox * downx + fw]
            y[:, :, oy, ox] = (window * weights).sum(axis=(2, 3))
    return y * gain


SELU_SCALE, SELU_ALPHA = 1.0507009873554804934193349852946, 1.6732632423543772848170429916717
REF_ACTS = {  # name: (cuda_idx, float64 torch formula of act(v, alpha))
    "linear": (1, lambda v, a: v),
    "relu": (2, lambda v, a: torch.where(v > 0, v, torch.zeros_like(v))),
    "lrelu": (3, lambda v, a: torch.where(v > 0, v, v * a)),
    "tanh": (4, lambda v, a: torch.tanh(v)),
    "sigmoid": (5, lambda v, a: torch.sigmoid(v)),
    "elu": (6, lambda v, a: torch.where(v >= 0, v, torch.expm1(v))),
    "selu": (7, lambda v, a: SELU_SCALE * torch.where(v >= 0, v, SELU_ALPHA * torch.expm1(v))),
    "softplus": (8, lambda v, a: torch.logaddexp(v, torch.zeros_like(v))),
    "swish": (9, lambda v, a: v * torch.sigmoid(v)),
}


def ref_bias_act(x, b, dim, act, alpha, gain, clamp, dy, d_dx):
    """Forward, first-grad (mode 1) and second-grad (mode 2) results of the plugin, by float64 autograd."""
    x = torch.as_tensor(np.asarray(x, dtype=np.float64))
    v = x.clone()
    if b is not None:
        v = v + torch.as_tensor(np.asarray(b, dtype=np.float64)).reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    v.requires_grad_(True)
    fv = REF_ACTS[act][1](v, alpha)
    (d1,) = torch.autograd.grad(fv.sum(), v, create_graph=True)
    d2 = torch.autograd.grad(d1.sum(), v)[0] if d1.requires_grad else torch.zeros_like(v)
    y = fv.detach() * gain
    keep = (y.abs() < clamp) if clamp >= 0 else torch.ones_like(y, dtype=torch.bool)
    if clamp >= 0:
        y = y.clamp(-clamp, clamp)
    dy = torch.as_tensor(np.asarray(dy, dtype=np.float64))
    d_dx = torch.as_tensor(np.asarray(d_dx, dtype=np.float64))
    dx = torch.where(keep, dy * gain * d1.detach(), torch.zeros_like(y))
    d_x = torch.where(keep, d_dx * dy * gain * d2, torch.zeros_like(y))
    return y.numpy(), dx.numpy(), d_x.numpy()


def random_upfirdn2d_case(rng):
    """Random shape, filter, factors and (possibly negative) padding with a non-empty output."""
    while True:
        n, c = rng.integers(1, 3), rng.integers(1, 4)
        h, w = rng.integers(1, 11), rng.integers(1, 11)
        up = tuple(int(v) for v in rng.integers(1, 4, size=2))
        down = tuple(int(v) for v in rng.integers(1, 4, size=2))
        fh, fw = rng.integers(1, 7), rng.integers(1, 7)
        pad = tuple(int(v) for v in rng.integers(-3, 5, size=4))
        out_w = (w * up[0] + pad[0] + pad[1] - fw + down[0]) // down[0]
        out_h = (h * up[1] + pad[2] + pad[3] - fh + down[1]) // down[1]
        if out_w >= 1 and out_h >= 1:
            break
    x = rng.standard_normal((n, c, h, w))
    f = rng.standard_normal((fh, fw)).astype(np.float32)
    return dict(x=x, f=f, up=up, down=down, pad=pad, flip=bool(rng.integers(2)),
                gain=float(rng.choice([1.0, rng.uniform(0.25, 4)])))

# ---------------------------------------------------------------------------------------------
# Fallback policy (always on).


def test_missing_nvcc_gives_none_and_exactly_one_warning(fresh_process, monkeypatch, tmp_path):
    _pretend_gpu(monkeypatch)
    _hide_cuda_toolkit(monkeypatch, tmp_path)
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        assert _get_plugin("upfirdn2d_plugin") is None
        assert _get_plugin("bias_act_plugin") is None
        assert _get_plugin("upfirdn2d_plugin") is None
    messages = _fallback_warnings(records)
    assert len(messages) == 1
    assert "nvcc was not found" in messages[0] and "CUDA_HOME" in messages[0]
    assert "PyTorch implementation" in messages[0] and custom_ops.ENV_SWITCH in messages[0]


def test_no_gpu_reason_is_named(fresh_process, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        assert _get_plugin("bias_act_plugin") is None
    (message,) = _fallback_warnings(records)
    assert "no CUDA GPU" in message and "nvidia-smi" in message


def test_switch_off_is_silent_and_switch_on_raises(fresh_process, monkeypatch, tmp_path):
    _pretend_gpu(monkeypatch)
    _hide_cuda_toolkit(monkeypatch, tmp_path)
    monkeypatch.setenv(custom_ops.ENV_SWITCH, "0")
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        assert _get_plugin("upfirdn2d_plugin") is None
    assert not _fallback_warnings(records)

    monkeypatch.setattr(custom_ops, "_STATE", custom_ops._ProcessState())
    monkeypatch.setenv(custom_ops.ENV_SWITCH, "1")
    with pytest.raises(custom_ops.PluginUnavailable, match="nvcc was not found"):
        _get_plugin("upfirdn2d_plugin")

    monkeypatch.setenv(custom_ops.ENV_SWITCH, "maybe")
    with pytest.raises(ValueError, match=custom_ops.ENV_SWITCH):
        _get_plugin("bias_act_plugin")


def test_ops_fall_back_to_pytorch_and_match_reference(fresh_process, monkeypatch, tmp_path):
    """The ops' own plugin lookup gets None (one warning for both ops) and the ops still compute correctly."""
    _pretend_gpu(monkeypatch)
    _hide_cuda_toolkit(monkeypatch, tmp_path)
    for mod in (upfirdn2d, bias_act):
        monkeypatch.setattr(mod, "_plugin_checked", False)
        monkeypatch.setattr(mod, "_plugin", None)
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        assert upfirdn2d._init() is False
        assert bias_act._init() is False
    assert len(_fallback_warnings(records)) == 1

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 6))
    f = rng.standard_normal((4, 3)).astype(np.float32)
    y = upfirdn2d.upfirdn2d(torch.tensor(x), torch.tensor(f), up=2, down=1, padding=[1, 2, 0, -1], impl="cuda")
    np.testing.assert_allclose(y.numpy(), ref_upfirdn2d(x, f, (2, 2), (1, 1), (1, 2, 0, -1)), rtol=1e-6, atol=1e-8)
    b = rng.standard_normal(3)
    y = bias_act.bias_act(torch.tensor(x), torch.tensor(b), act="lrelu", clamp=0.5, impl="cuda")
    ones = np.ones_like(x)
    expected = ref_bias_act(x, b, 1, "lrelu", 0.2, np.sqrt(2), 0.5, ones, ones)[0]
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)

# ---------------------------------------------------------------------------------------------
# CUDA toolkit detection on fake installs (always on, Linux).


def _fake_toolkit(root, release):
    """A folder that looks like a CUDA toolkit: bin/nvcc answering --version and --dryrun, cuda_runtime.h."""
    (root / "bin").mkdir(parents=True)
    (root / "include").mkdir()
    (root / "include" / "cuda_runtime.h").write_text("// fake\n")
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        case "$1" in
          --version) echo "Cuda compilation tools, release {release}, V{release}.1" ;;
          --dryrun) echo "#$ TOP={root}/bin/.." >&2 ;;
        esac
        """))
    nvcc.chmod(0o755)
    return root


@pytest.mark.skipif(os.name == "nt", reason="fake toolkits are shell scripts")
def test_find_cuda_toolkit(monkeypatch, tmp_path):
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    old = _fake_toolkit(tmp_path / "cuda-12.1", "12.1")
    new = _fake_toolkit(tmp_path / "cuda-13.0", "13.0")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))

    monkeypatch.setenv("CUDA_HOME", str(new))  # explicit choice wins, whatever its version
    assert custom_ops.find_cuda_toolkit(globs=()).root == str(new)

    monkeypatch.delenv("CUDA_HOME")
    assert custom_ops.find_cuda_toolkit(globs=()) is None
    found = custom_ops.find_cuda_toolkit(globs=[str(tmp_path / "cuda-*")])
    assert (found.root, found.version) == (str(old), "12.1")  # matches torch's major although 13.0 is newer

    # A wrapper script on PATH (like /usr/local/bin/nvcc here): torch would guess its grandparent folder.
    wrapper_dir = tmp_path / "wrapper" / "bin"
    wrapper_dir.mkdir(parents=True)
    (wrapper_dir / "nvcc").write_text(f'#!/bin/sh\nexec {new}/bin/nvcc "$@"\n')
    (wrapper_dir / "nvcc").chmod(0o755)
    monkeypatch.setenv("PATH", str(wrapper_dir))
    found = custom_ops.find_cuda_toolkit(globs=())
    assert (found.root, found.version) == (str(new), "13.0")


@pytest.mark.skipif(os.name == "nt", reason="Linux library layout")
def test_cudart_link_flags(monkeypatch, tmp_path):
    toolkit = custom_ops.CudaToolkit(root=str(_fake_toolkit(tmp_path / "cuda", "13.0")), nvcc="", version="13.0")
    (tmp_path / "cuda" / "lib").mkdir()
    monkeypatch.setattr(custom_ops, "_pip_cudart_libraries", lambda: [])
    assert custom_ops._cudart_link_flags(toolkit, str(tmp_path / "cache")) == []

    wheel_lib = tmp_path / "wheel" / "libcudart.so.13"
    wheel_lib.parent.mkdir()
    wheel_lib.write_bytes(b"")
    monkeypatch.setattr(custom_ops, "_pip_cudart_libraries", lambda: [str(wheel_lib)])
    link_dir = tmp_path / "cache" / "_cudart"
    assert custom_ops._cudart_link_flags(toolkit, str(tmp_path / "cache")) == [f"-L{link_dir}"]
    assert os.path.realpath(link_dir / "libcudart.so") == str(wheel_lib)

    (tmp_path / "cuda" / "lib" / "libcudart.so").write_bytes(b"")  # the toolkit's own library wins
    assert custom_ops._cudart_link_flags(toolkit, str(tmp_path / "cache")) == [f'-L{tmp_path / "cuda" / "lib"}']

# ---------------------------------------------------------------------------------------------
# Building, caching and concurrency, with a tiny C++ plugin (no CUDA needed).

TINY_PLUGIN = """
#include <Python.h>
#define SGRLO_CAT2(a, b) a##b
#define SGRLO_CAT(a, b) SGRLO_CAT2(a, b)
#define SGRLO_STR2(a) #a
#define SGRLO_STR(a) SGRLO_STR2(a)
static PyObject* answer(PyObject*, PyObject*) { return PyLong_FromLong(ANSWER); }
static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, "test"}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, SGRLO_STR(TORCH_EXTENSION_NAME), NULL, -1, methods};
PyMODINIT_FUNC SGRLO_CAT(PyInit_, TORCH_EXTENSION_NAME)(void) { return PyModule_Create(&module); }
"""


def _write_tiny_plugin(folder, answer):
    folder.mkdir(exist_ok=True)
    (folder / "answer.h").write_text(f"#define ANSWER {answer}\n")
    (folder / "tiny.cpp").write_text('#include "answer.h"\n' + TINY_PLUGIN)


@needs_ninja
def test_build_is_cached_by_content(fresh_process, monkeypatch, tmp_path):
    src, cache = tmp_path / "src", str(tmp_path / "cache")
    _write_tiny_plugin(src, 42)
    module = custom_ops.build_plugin("sgrlo_tiny", ["tiny.cpp"], ["answer.h"], str(src), cache_dir=cache)
    assert module.answer() == 42

    def no_compiling(*args, **kwargs):
        raise AssertionError("a cached plugin must not be rebuilt")
    monkeypatch.setattr(custom_ops, "_compile", no_compiling)
    assert custom_ops.build_plugin("sgrlo_tiny", ["tiny.cpp"], ["answer.h"], str(src), cache_dir=cache).answer() == 42

    _write_tiny_plugin(src, 7)  # a header change is a new cache entry
    with pytest.raises(custom_ops.PluginUnavailable, match="must not be rebuilt"):
        custom_ops.build_plugin("sgrlo_tiny", ["tiny.cpp"], ["answer.h"], str(src), cache_dir=cache)
    folders = [e for e in os.listdir(cache) if os.path.isdir(os.path.join(cache, e))]
    assert len(folders) == 1 and folders[0].startswith("sgrlo_tiny-")  # no half-built or temporary folders left


@needs_ninja
def test_concurrent_builds_share_one_compile(tmp_path):
    src, cache = tmp_path / "src", tmp_path / "cache"
    _write_tiny_plugin(src, 5)
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from torch_utils import custom_ops
        custom_ops.verbosity = 'brief'
        m = custom_ops.build_plugin('sgrlo_race', ['tiny.cpp'], ['answer.h'], {str(src)!r}, cache_dir={str(cache)!r})
        print('answer', m.answer())
        """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert all("answer 5" in out for out, _ in outputs)
    assert sum(err.count("Building plugin") for _, err in outputs) == 1  # the second waited, then loaded
    assert len([e for e in os.listdir(cache) if os.path.isdir(cache / e)]) == 1


@needs_ninja
def test_compile_error_names_log_and_falls_back(fresh_process, monkeypatch, tmp_path):
    _pretend_gpu(monkeypatch)
    src = tmp_path / "src"
    src.mkdir()
    (src / "broken.cpp").write_text("this is not C++;\n")
    with pytest.raises(custom_ops.PluginUnavailable) as info:
        custom_ops.build_plugin("sgrlo_broken", ["broken.cpp"], [], str(src))
    assert info.value.log_path and "error" in open(info.value.log_path, encoding="utf-8").read()
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        assert custom_ops.get_plugin("sgrlo_broken", ["broken.cpp"], [], str(src)) is None
    (message,) = _fallback_warnings(records)
    assert "building it failed" in message and info.value.log_path in message

# ---------------------------------------------------------------------------------------------
# Kernel math on the CPU: the CUDA grid emulated around the functions of upfirdn2d.h / bias_act.h.


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    if CXX is None or os.name == "nt":
        pytest.skip("needs a C++ compiler (g++) on Linux")
    lib_path = str(tmp_path_factory.mktemp("harness") / "harness.so")
    subprocess.run([CXX, "-O1", "-std=c++17", "-shared", "-fPIC", "-Wall", "-Werror", f"-I{OPS_DIR}", HARNESS_SRC,
                    "-o", lib_path], check=True)
    return ctypes.CDLL(lib_path)


def _ptr(a):
    return ctypes.c_void_p(a.ctypes.data) if a is not None else None


def emulate_upfirdn2d(lib, x, f, up, down, pad, flip, gain, tile=(-1, 0, 0), nthreads=256, out_channels_last=False):
    """Run the kernel code on x (any strides, float32/float64); returns (y, tile actually used)."""
    n, c, h, w = x.shape
    fh, fw = f.shape
    out_w = (w * up[0] + pad[0] + pad[1] - fw + down[0]) // down[0]
    out_h = (h * up[1] + pad[2] + pad[3] - fh + down[1]) // down[1]
    if out_channels_last:
        y = np.full((n, out_h, out_w, c), np.nan, dtype=x.dtype).transpose(0, 3, 1, 2)
    else:
        y = np.full((n, c, out_h, out_w), np.nan, dtype=x.dtype)
    xs, fs, ys = (np.array(a.strides) // a.itemsize for a in (x, f, y))
    cfg = np.array([up[0], up[1], down[0], down[1], pad[0], pad[2], int(flip), w, h, c, n,
                    xs[3], xs[2], xs[1], xs[0], fw, fh, fs[1], fs[0], out_w, out_h, ys[3], ys[2], ys[1], ys[0]],
                   dtype=np.int64)
    chosen = (ctypes.c_int * 3)()
    lib.emu_upfirdn2d(ctypes.c_int(x.dtype == np.float64), _ptr(x), _ptr(f), _ptr(y), _ptr(cfg),
                      ctypes.c_double(gain), tile[0], tile[1], tile[2], nthreads, chosen)
    return y, tuple(chosen)


def _random_layout(rng, x):
    """x as contiguous, channels-last, or a reversed-stride view of the same values."""
    kind = rng.integers(3)
    if kind == 1:
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    if kind == 2:
        return np.ascontiguousarray(x[:, ::-1, :, ::-1])[:, ::-1, :, ::-1]
    return np.ascontiguousarray(x)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("seed", range(12))
def test_emulated_upfirdn2d_matches_reference(harness, dtype, seed):
    rng = np.random.default_rng(seed)
    for _ in range(5):
        case = random_upfirdn2d_case(rng)
        expected = ref_upfirdn2d(**case)
        x = _random_layout(rng, case["x"].astype(dtype))
        tol = dict(rtol=1e-9, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)
        small_tile = (int(rng.choice([1, 2, 4, 8])), int(rng.integers(1, 6)), int(rng.integers(1, 4)))
        for tile, nthreads in [((-1, 0, 0), 256), ((0, 0, 0), 1), (small_tile, int(rng.choice([1, 7, 32])))]:
            args = {k: case[k] for k in ("up", "down", "pad", "flip", "gain")}
            y, used = emulate_upfirdn2d(harness, x, case["f"], **args, tile=tile, nthreads=nthreads,
                                        out_channels_last=bool(rng.integers(2)))
            np.testing.assert_allclose(y, expected, **tol, err_msg=f"tile {used}, case {args}")


def test_emulated_upfirdn2d_stylegan_shapes_use_tiles(harness):
    """Typical resampling calls take the tiled path (and match); channels-last output takes the direct path."""
    rng = np.random.default_rng(1)
    f = np.outer([1, 3, 3, 1], [1, 3, 3, 1]).astype(np.float32) / 64
    x = rng.standard_normal((2, 3, 40, 36)).astype(np.float32)
    for up, down, pad in [((2, 2), (1, 1), (2, 1, 2, 1)), ((1, 1), (2, 2), (1, 1, 1, 1)), ((1, 1), (1, 1), (2, 1, 2, 1))]:
        y, used = emulate_upfirdn2d(harness, x, f, up, down, pad, False, 4.0)
        assert used[0] > 0
        np.testing.assert_allclose(y, ref_upfirdn2d(x, f, up, down, pad, False, 4.0), rtol=1e-5, atol=1e-5)
    y, used = emulate_upfirdn2d(harness, x, f, (1, 1), (2, 2), (1, 1, 1, 1), False, 1.0, out_channels_last=True)
    assert used[0] == 0
    np.testing.assert_allclose(y, ref_upfirdn2d(x, f, (1, 1), (2, 2), (1, 1, 1, 1)), rtol=1e-5, atol=1e-5)


def emulate_bias_act(lib, x, b, xref, yref, dy, grad, dim, act, alpha, gain, clamp):
    """Run the kernel code on dense arrays sharing one memory layout (b 1-D, others like x)."""
    y = np.empty_like(x)  # keeps x's layout
    assert all(a is None or a.strides == x.strides for a in (xref, yref, dy, y))
    step_b = x.strides[dim] // x.itemsize if b is not None and b.size > 1 else 1
    lib.emu_bias_act(ctypes.c_int(x.dtype == np.float64), _ptr(x), _ptr(b), _ptr(xref), _ptr(yref), _ptr(dy),
                     _ptr(y), grad, REF_ACTS[act][0], ctypes.c_double(alpha), ctypes.c_double(gain),
                     ctypes.c_double(clamp), ctypes.c_int64(x.size), ctypes.c_int64(b.size if b is not None else 1),
                     ctypes.c_int64(step_b))
    return y


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("act", list(REF_ACTS))
def test_emulated_bias_act_matches_reference(harness, act, dtype):
    rng = np.random.default_rng(list(REF_ACTS).index(act))
    for trial in range(6):
        shape = tuple(int(s) for s in rng.integers(1, 6, size=rng.integers(1, 5)))
        perm = rng.permutation(len(shape))  # memory order of the dims
        dim = int(rng.integers(len(shape)))
        as_layout = lambda a: np.ascontiguousarray(a.transpose(perm)).transpose(np.argsort(perm))  # noqa: E731
        x, dy, d_dx = (as_layout(rng.standard_normal(shape) * 3).astype(dtype) for _ in range(3))
        b = rng.standard_normal(shape[dim]).astype(dtype) if trial % 3 else None
        alpha = float(rng.uniform(0.05, 0.5))
        gain = [1.0, float(np.sqrt(2)), float(rng.uniform(-2, 3))][trial % 3]
        clamp = [-1.0, float(rng.uniform(0.2, 2)), 0.0][trial % 3] if trial < 5 else -1.0
        y_ref, dx_ref, d_x_ref = ref_bias_act(x, b, dim, act, alpha, gain, clamp, dy, d_dx)
        tol = dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-5)
        y = emulate_bias_act(harness, x, b, None, None, None, 0, dim, act, alpha, gain, clamp)
        np.testing.assert_allclose(y, y_ref, **tol, err_msg="forward")
        # Modes 1 and 2 as the autograd functions call them: xref = x (pre-bias), yref = forward output,
        # except for swish whose output is not kept.
        yref = None if act == "swish" else y
        dx = emulate_bias_act(harness, dy, b, x, yref, None, 1, dim, act, alpha, gain, clamp)
        np.testing.assert_allclose(dx, dx_ref, **tol, err_msg="grad 1")
        d_x = emulate_bias_act(harness, d_dx, b, x, yref, dy, 2, dim, act, alpha, gain, clamp)
        np.testing.assert_allclose(d_x, d_x_ref, **tol, err_msg="grad 2")


def test_emulated_bias_act_is_stable_for_large_inputs(harness):
    x = np.array([-1e4, -100.0, -30.0, 0.0, 30.0, 100.0, 1e4], dtype=np.float32)
    for act in ("tanh", "sigmoid", "softplus", "swish", "elu", "selu"):
        y = emulate_bias_act(harness, x, None, None, None, None, 0, 0, act, 0.2, 1.0, -1.0)
        yref = None if act == "swish" else y
        dx = emulate_bias_act(harness, np.ones_like(x), None, x, yref, None, 1, 0, act, 0.2, 1.0, -1.0)
        d_x = emulate_bias_act(harness, np.ones_like(x), None, x, yref, np.ones_like(x), 2, 0, act, 0.2, 1.0, -1.0)
        assert np.isfinite(y).all() and np.isfinite(dx).all() and np.isfinite(d_x).all(), act
        y_ref, dx_ref, d_x_ref = ref_bias_act(x.astype(np.float64), None, 0, act, 0.2, 1.0, -1.0, np.ones(7), np.ones(7))
        for got, want in ((y, y_ref), (dx, dx_ref), (d_x, d_x_ref)):
            finite = np.isfinite(want)  # the float64 autograd reference itself overflows at +-1e4 for some
            np.testing.assert_allclose(got[finite], want[finite], rtol=1e-4, atol=1e-6, err_msg=act)

# ---------------------------------------------------------------------------------------------
# Compile checks (when nvcc is present; no GPU needed).
# Always on: nvcc compiles the device code of each .cu file to PTX (a few seconds) and every kernel instance the
# launchers need is there. Slow (the C++ bindings include torch/extension.h: about 1 CPU-minute per plugin, 3.5 min
# wall on a busy 2-core machine): the full build through custom_ops, link against libcudart, and import.

TOOLKIT = custom_ops.find_cuda_toolkit()
needs_nvcc = pytest.mark.skipif(TOOLKIT is None or CXX is None, reason="needs nvcc (set CUDA_HOME) and g++")
KERNEL_DTYPES = {"float": "f", "double": "d", "half": "N3c104HalfE", "bfloat16": "N3c108BFloat16E"}
PTX_KERNELS = {  # .cu file -> templated __global__ functions, each instantiated for every dtype
    "upfirdn2d.cu": ["ufd_tiled_kernel", "ufd_direct_kernel"],
    "bias_act.cu": ["ba_kernel"],
}


@needs_nvcc
@pytest.mark.parametrize("cu_file", list(PTX_KERNELS))
def test_cuda_kernels_compile_to_ptx(cu_file, tmp_path):
    ptx = tmp_path / "out.ptx"
    cmd = [TOOLKIT.nvcc, "-ptx", "-std=c++17", "-arch=compute_75", "--expt-relaxed-constexpr", "--use_fast_math",
           "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__", "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
           "-D__CUDA_NO_HALF2_OPERATORS__", "-isystem", os.path.join(os.path.dirname(torch.__file__), "include"),
           "-I", OPS_DIR, os.path.join(OPS_DIR, cu_file), "-o", str(ptx)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"nvcc failed on {cu_file}:\n{result.stderr[-3000:]}"
    entries = re.findall(r"^\.visible \.entry (\w+)\(", ptx.read_text(), re.M)
    for kernel in PTX_KERNELS[cu_file]:
        for dtype, mangled in KERNEL_DTYPES.items():
            found = [e for e in entries if kernel in e and f"I{mangled}" in e]
            assert found, f"{cu_file}: no {kernel} instance for {dtype} in the PTX (entries: {entries})"
    if cu_file == "bias_act.cu":  # one instance per activation (its cuda_idx) and dtype
        wanted = {spec.cuda_idx for spec in bias_act.activation_funcs.values()}
        for mangled in KERNEL_DTYPES.values():
            acts = {int(m) for e in entries for m in re.findall(rf"ba_kernelI{mangled}Li(\d+)E", e)}
            assert acts == wanted, (mangled, acts)


@pytest.mark.slow
@needs_nvcc
@pytest.mark.skipif(not HAVE_NINJA, reason="needs ninja")
@pytest.mark.parametrize("name", list(PLUGINS))
def test_cuda_plugins_compile_and_import(name):
    sources, headers = PLUGINS[name]
    module = custom_ops.build_plugin(name, sources, headers, OPS_DIR, **BUILD_KWARGS)
    entry = getattr(module, name.replace("_plugin", ""))
    cpu = torch.zeros([1, 1, 2, 2])
    with pytest.raises(RuntimeError, match="must be a CUDA tensor"):  # the binding runs, up to its first check
        if name == "upfirdn2d_plugin":
            entry(cpu, torch.ones([1, 1]), 1, 1, 1, 1, 0, 0, 0, 0, False, 1.0)
        else:
            empty = torch.empty([0])
            entry(cpu, empty, empty, empty, empty, 0, 1, 3, 0.2, 1.0, -1.0)

# ---------------------------------------------------------------------------------------------
# On a GPU: kernels vs references and vs the PyTorch path.

GPU_DTYPES = [(torch.float32, 1e-5), (torch.float16, 1e-2), (torch.float64, 1e-9)]


def _fast_math_tol(act, dtype, tol):
    """The plugins build with --use_fast_math (as upstream): its float32 tanhf puts tanh's second-order gradient about
    3e-5 off float64 (measured on an H200, docs/gpu/), so tanh in float32 is held to the self-check's 1e-4."""
    return max(tol, 1e-4) if act == "tanh" and dtype == torch.float32 else tol


def _gpu_plugin(name):
    plugin = _get_plugin(name)
    assert plugin is not None, f"{name} did not build on this GPU machine (see the warning above)"
    return plugin


def _close(actual, expected, tol, ignore=None):
    """Within tol relative to the result's magnitude; `ignore` masks elements that sit on a clamp boundary."""
    actual = actual.detach().double().cpu()
    expected = torch.as_tensor(np.asarray(expected), dtype=torch.float64)
    if ignore is not None:
        keep = ~torch.as_tensor(np.asarray(ignore))
        actual, expected = actual[keep], expected[keep]
    scale = max(1.0, float(expected.abs().max()))
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * scale)


def _near_clamp(y_ref, clamp, width=0.02):
    """Elements whose output is within `width` (relative) of +-clamp, where fp16 rounding may flip the mask."""
    return np.abs(np.abs(np.asarray(y_ref, dtype=np.float64)) - clamp) < width * max(clamp, 1e-3)


@needs_gpu
@pytest.mark.parametrize("dtype,tol", GPU_DTYPES)
@pytest.mark.parametrize("seed", range(8))
def test_gpu_upfirdn2d_kernel_matches_reference(dtype, tol, seed):
    plugin = _gpu_plugin("upfirdn2d_plugin")
    rng = np.random.default_rng(100 + seed)
    for _ in range(6):
        case = random_upfirdn2d_case(rng)
        x = torch.tensor(case["x"], dtype=dtype, device="cuda")
        if rng.integers(2):
            x = x.contiguous(memory_format=torch.channels_last)
        xr = x.double().cpu().numpy()  # reference on the rounded inputs
        f = torch.tensor(case["f"], device="cuda")
        (upx, upy), (downx, downy), pad = case["up"], case["down"], case["pad"]
        y = plugin.upfirdn2d(x, f, upx, upy, downx, downy, *pad, case["flip"], case["gain"])
        assert y.dtype == dtype
        _close(y, ref_upfirdn2d(xr, case["f"], case["up"], case["down"], pad, case["flip"], case["gain"]), tol)


@needs_gpu
@pytest.mark.parametrize("dtype,tol", GPU_DTYPES)
@pytest.mark.parametrize("res", [4, 8, 32, 128])
def test_gpu_upfirdn2d_stylegan_shapes_match_reference(dtype, tol, res):
    plugin = _gpu_plugin("upfirdn2d_plugin")
    rng = np.random.default_rng(res)
    x = torch.tensor(rng.standard_normal((2, 16, res, res)), dtype=dtype, device="cuda")
    f = torch.tensor(np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64, dtype=torch.float32, device="cuda")
    xr = x.double().cpu().numpy()
    for up, down, pad, gain in [(2, 1, (2, 1, 2, 1), 4.0), (1, 2, (1, 1, 1, 1), 1.0), (1, 1, (1, 2, 1, 2), 1.0)]:
        y = plugin.upfirdn2d(x, f, up, up, down, down, *pad, False, gain)
        _close(y, ref_upfirdn2d(xr, f.cpu().numpy(), (up, up), (down, down), pad, False, gain), tol)


@needs_gpu
@pytest.mark.parametrize("dtype,tol", GPU_DTYPES)
@pytest.mark.parametrize("act", list(REF_ACTS))
def test_gpu_bias_act_kernel_matches_reference(dtype, tol, act):
    plugin = _gpu_plugin("bias_act_plugin")
    tol = _fast_math_tol(act, dtype, tol)
    rng = np.random.default_rng(7)
    empty = torch.empty([0])
    for channels_last, clamp in [(False, -1.0), (True, 1.5)]:
        x = torch.tensor(rng.standard_normal((3, 5, 4, 6)) * 2, dtype=dtype, device="cuda")
        dy, d_dx = (torch.tensor(rng.standard_normal(x.shape), dtype=dtype, device="cuda") for _ in range(2))
        if channels_last:
            x, dy, d_dx = (t.contiguous(memory_format=torch.channels_last) for t in (x, dy, d_dx))
        b = torch.tensor(rng.standard_normal(5), dtype=dtype, device="cuda")
        idx, alpha, gain = REF_ACTS[act][0], 0.2, 1.4
        y = plugin.bias_act(x, b, empty, empty, empty, 0, 1, idx, alpha, gain, clamp)
        y_ref, dx_ref, d_x_ref = ref_bias_act(*(t.double().cpu().numpy() for t in (x, b)), 1, act, alpha, gain,
                                              clamp, dy.double().cpu().numpy(), d_dx.double().cpu().numpy())
        near = _near_clamp(y_ref, clamp) if clamp >= 0 else None
        _close(y, y_ref, tol)
        yref = empty if act == "swish" else y
        _close(plugin.bias_act(dy, b, x, yref, empty, 1, 1, idx, alpha, gain, clamp), dx_ref, tol, near)
        _close(plugin.bias_act(d_dx, b, x, yref, dy, 2, 1, idx, alpha, gain, clamp), d_x_ref, tol, near)


@needs_gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 1e-2)])
def test_gpu_ops_match_pytorch_path_with_gradients(monkeypatch, dtype, tol):
    """Public ops, impl='cuda' (kernels) vs impl='ref': values, first and second order gradients."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # keep the reference convolutions exact fp32
    _gpu_plugin("upfirdn2d_plugin")
    _gpu_plugin("bias_act_plugin")
    gen = torch.Generator(device="cuda").manual_seed(0)
    f = upfirdn2d.setup_filter([1, 3, 3, 1], device="cuda")
    ops = {
        "upsample2d": lambda x, impl: upfirdn2d.upsample2d(x, f, up=2, impl=impl),
        "downsample2d": lambda x, impl: upfirdn2d.downsample2d(x, f, down=2, impl=impl),
        "filter2d": lambda x, impl: upfirdn2d.filter2d(x, f, padding=1, impl=impl),
        "upfirdn2d_sep": lambda x, impl: upfirdn2d.upfirdn2d(x, upfirdn2d.setup_filter([1, 2, 3, 2, 1] * 2, device="cuda"),
                                                             up=[1, 2], down=[2, 1], padding=[1, 2, -1, 3], impl=impl),
    }
    bias = torch.randn([8], device="cuda", generator=gen).to(dtype)
    for act in ("lrelu", "tanh", "swish", "softplus"):
        ops[f"bias_act_{act}"] = (lambda x, impl, act=act:
                                  bias_act.bias_act(x, bias, act=act, clamp=2.0, impl=impl))
    for name, op in ops.items():
        x = torch.randn([2, 8, 16, 16], device="cuda", generator=gen).to(dtype).requires_grad_(True)
        w = torch.randn(op(x, "ref").shape, device="cuda", generator=gen).to(dtype)
        results = []
        for impl in ("cuda", "ref"):
            y = op(x, impl)
            (g,) = torch.autograd.grad((y * w).sum(), x, create_graph=True)
            if g.requires_grad:
                (gg,) = torch.autograd.grad((g * g).sum(), x, allow_unused=True)
            else:  # a linear op (upfirdn2d): its gradient does not depend on x, so the second-order term is zero
                gg = None
            results.append((y, g, gg if gg is not None else torch.zeros_like(x)))
        clamped = name.startswith("bias_act")
        near = _near_clamp(results[1][0].detach().double().cpu().numpy(), 2.0) if clamped else None
        for got, want in zip(results[0], results[1]):
            _close(got, want.detach().double().cpu().numpy(), _fast_math_tol(name.removeprefix("bias_act_"), dtype, tol),
                   near)
