"""`make gpu-check`: everything a GPU must confirm, in one run of at most 8 minutes, written to gpu-report.md and
gpu-report.json (docs/gpu.md says what is checked where and how to read the report).

Each step is a function returning (data, lines): a dict for the JSON, with "status" ok / failed / skipped, and a
few markdown lines. `run_check` runs the steps in order, each in a fresh Python process with a time limit (a CUDA
fault or a hang ends that step only, and the PyTorch-path speed step needs its environment switch before the ops
load), records a failing step as failed with its error, and rewrites both report files atomically after every
step, so a killed run still leaves a partial report. The step functions take the device and the sizes as
arguments: the tests run them on the CPU with tiny sizes.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from stylegan_rlo import PACKAGE_DIR, __version__
from stylegan_rlo.bench.training import run_bench, sync_device
from stylegan_rlo.checkpoints.pickles import load_network_pkl
from stylegan_rlo.errors import UserError
from stylegan_rlo.fileio import atomic_write
from stylegan_rlo.training.config import setup_training_options
from stylegan_rlo.training.launch import launch_training
from stylegan_rlo.training.loss import StyleGAN2Loss
from stylegan_rlo.training.options import OPTIONS_BY_NAME
from torch_utils import custom_ops
from torch_utils.ops import bias_act, upfirdn2d

NO_GPU_MESSAGE = "no CUDA GPU: nothing to check (gpu-check needs a GPU)"
REPORT_JSON = "gpu-report.json"
REPORT_MD = "gpu-report.md"
REPO = os.path.dirname(PACKAGE_DIR)  # the checkout (its tests/ are there) or site-packages

DEADLINE_S = {"full": 470.0, "quick": 330.0}  # the whole check: under 8 minutes, --quick under 6
MIN_STEP_S = 10.0  # a step with less time than this left is skipped ("out of time")

# The paper256 capacity at 256x256 (--cfg paper256: cbase 16384, cmax 512, 8 mapping layers).
PAPER256 = dict(res=256, cbase=16384, cmax=512, map_depth=8)
FP16_GRAD_TOL = 0.1     # fp16 vs fp32 gradients of one step: relative L2 error per phase (see fp16_training)
RESUME_TOL = 1e-6       # exact resume: largest absolute difference of any parameter or buffer
NOISE_FACTOR = 10.0     # a resume difference within this factor of two straight runs' is the GPU's own noise
OP_TEST_FILES = ("tests/upstream_api/test_custom_ops.py",)

Result = tuple[dict, list[str]]


# ---------------------------------------------------------------------------------------------------------------
# Small helpers.

def _plain(value: Any) -> Any:
    """JSON-ready copy: dataclasses, named tuples and objects with attributes become dicts, tensors numbers."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "_asdict"):
        return _plain(value._asdict())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, (np.generic,)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "__dict__"):
        return _plain({k: v for k, v in vars(value).items() if not k.startswith("_")})
    return str(value)


def _run_text(cmd: list[str], timeout: float = 10) -> str | None:
    """stdout of a small command, or None when it is missing or fails."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def synthetic_dataset(path: str, num: int, res: int, seed: int = 0) -> str:
    """A dataset ZIP of `num` random RGB images (official layout): training speed and exactness do not depend on
    the pictures."""
    rnd = np.random.RandomState(seed)
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(num):
            buf = io.BytesIO()
            Image.fromarray(rnd.randint(0, 256, (res, res, 3), dtype=np.uint8)).save(buf, format="PNG")
            zf.writestr(f"img{i:05d}.png", buf.getvalue())
    return path


def _train(data: str, outdir: str, iters: int, batch: int, device: str, resume: str | None = None,
           **opts: Any) -> str:
    """A short run of `iters` iterations of `batch` images, a tick per iteration and one snapshot at the end (no
    metrics, 2x2 image grids); returns its run directory."""
    values = dict(data=data, resume=resume, cfg="paper256", device=device, workers=0, batch=batch,
                  kimg=iters * batch / 1000, tick=batch / 1000, snap=10 ** 6, metrics="none", seed=0)
    values.update(opts)
    desc, options = setup_training_options(**values)
    return launch_training(desc, options, outdir, show_progress=False, image_grid=(2, 2))


def _final_snapshot(run_dir: str) -> str:
    snapshots = sorted(f for f in os.listdir(run_dir) if f.startswith("network-snapshot-") and f.endswith(".pkl"))
    if not snapshots:
        raise RuntimeError(f"the run in {run_dir} wrote no snapshot")
    return os.path.join(run_dir, snapshots[-1])


def _read_stats(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "stats.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def max_state_diff(a: dict, b: dict) -> float:
    """Largest absolute difference over G, G_ema and D parameters and buffers (and the augment p) of two
    snapshots."""
    worst = 0.0
    if a.get("augment_pipe") is not None and b.get("augment_pipe") is not None:
        worst = abs(float(a["augment_pipe"].p) - float(b["augment_pipe"].p))
    for net in ("G", "G_ema", "D"):
        ta = dict(list(a[net].named_parameters()) + list(a[net].named_buffers()))
        tb = dict(list(b[net].named_parameters()) + list(b[net].named_buffers()))
        if ta.keys() != tb.keys():
            raise RuntimeError(f"the two snapshots' {net} tensors differ in names")
        worst = max([worst] + [float((ta[n].double() - tb[n].double()).abs().max()) for n in ta if ta[n].numel()])
    return worst


# ---------------------------------------------------------------------------------------------------------------
# The steps.

def env_info(device: str = "cuda") -> Result:
    """GPU, driver, Python, torch, CUDA, cuDNN and nvcc versions, and the checkout's commit."""
    dev = torch.device(device)
    data: dict[str, Any] = dict(status="ok", python=platform.python_version(), torch=torch.__version__,
                                cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                                stylegan_rlo=__version__, platform=platform.platform(), cpus=os.cpu_count())
    data["commit"] = _run_text(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    toolkit = custom_ops.find_cuda_toolkit()
    nvcc = _run_text([toolkit.nvcc, "--version"]) if toolkit else None
    data["nvcc"] = nvcc.splitlines()[-1] if nvcc else None
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        data.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2 ** 30, 1),
                    capability=f"{props.major}.{props.minor}", gpu_count=torch.cuda.device_count())
        data["driver"] = _run_text(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader",
                                    f"--id={dev.index or 0}"])
    else:
        data.update(gpu=None, driver=None)
    gpu = (f"{data['gpu']} ({data['gpu_memory_gib']} GiB, compute capability {data['capability']}), driver "
           f"{data['driver'] or 'unknown'}") if data["gpu"] else f"none (device {device})"
    lines = [f"GPU: {gpu}",
             f"Python {data['python']}, torch {data['torch']}, CUDA {data['cuda']}, cuDNN {data['cudnn']}, "
             f"nvcc: {data['nvcc'] or 'not found'}",
             f"stylegan-rlo {data['stylegan_rlo']}, commit {data['commit'] or 'unknown'}, {data['cpus']} CPUs"]
    return data, lines


def _self_check_results(device: torch.device, plugins: dict[str, Any]) -> dict | None:
    """The ops' self-check results (torch_utils.ops.self_check), or None where that module does not exist."""
    try:
        # optional: the self-check is newer than this step; without it the report says 'not available'
        from torch_utils.ops import self_check
    except ImportError:
        return None
    results = _plain(self_check.last_results())
    if not results:
        for name, plugin in plugins.items():
            if plugin is not None:
                self_check.check_plugin(name, plugin, device)
        results = _plain(self_check.last_results())
    return results


def _result_ok(result: Any) -> bool:
    return bool(result.get("ok", True)) if isinstance(result, dict) else bool(result)


def plugins(device: str = "cuda") -> Result:
    """Build (or load from the cache) the bias_act and upfirdn2d CUDA plugins, timed, and their self-check."""
    dev = torch.device(device)
    cache = custom_ops.default_cache_dir()
    before = set(os.listdir(cache)) if os.path.isdir(cache) else set()
    data: dict[str, Any] = dict(status="ok", cache_dir=cache, switch=os.environ.get(custom_ops.ENV_SWITCH, ""))
    loaded, lines = {}, []
    for name, module in (("bias_act", bias_act), ("upfirdn2d", upfirdn2d)):
        start = time.perf_counter()
        ok = module._init()  # pylint: disable=protected-access
        seconds = time.perf_counter() - start
        loaded[name] = module._plugin if ok else None  # pylint: disable=protected-access
        data[name] = dict(loaded=bool(ok), seconds=round(seconds, 2))
        lines.append(f"{name}: {'loaded' if ok else 'NOT available (the PyTorch path would be used)'} "
                     f"in {seconds:.1f} s")
    after = set(os.listdir(cache)) if os.path.isdir(cache) else set()
    data["built_now"] = sorted(after - before)
    lines.append(f"cache {cache}: " + (f"built now: {', '.join(data['built_now'])}" if data["built_now"]
                                       else "nothing new built (cached builds, or none possible)"))
    if not all(loaded.values()):
        data.update(status="failed", error="CUDA plugins not available: " +
                    ", ".join(name for name, p in loaded.items() if p is None))
    results = _self_check_results(dev, loaded) if any(p is not None for p in loaded.values()) else None
    data["self_check"] = results
    if results is None:
        lines.append("self-check: not available")
    else:
        bad = [op for op, r in results.items() if not _result_ok(r)]
        lines.append(f"self-check: {len(results) - len(bad)}/{len(results)} ok" + (f"; FAILED: {', '.join(bad)}"
                                                                                     if bad else ""))
        for op, r in results.items():
            if isinstance(r, dict):
                details = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()
                                    if k not in ("ok", "op", "device"))
                lines.append(f"  - {op}: {'ok' if _result_ok(r) else 'FAILED'}; {details}")
        if bad:
            data.update(status="failed", error=f"self-check failed: {', '.join(bad)}")
    return data, lines


_SUMMARY = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)\b")


def op_tests(paths: tuple[str, ...] | list[str] = OP_TEST_FILES, cwd: str = REPO, markexpr: str = "") -> Result:
    """Run pytest on the CUDA op tests with every mark (`-m ''`: the slow plugin builds too)."""
    missing = [p for p in paths if not os.path.exists(os.path.join(cwd, p))]
    if missing:
        return dict(status="skipped", reason=f"not found: {', '.join(missing)} (run from the checkout)"), [
            f"skipped: {', '.join(missing)} not found (run from the checkout)"]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", markexpr, "-rfEs",
           "--durations=5", *paths]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    out = proc.stdout + proc.stderr
    tail = out.strip().splitlines()[-1] if out.strip() else ""
    counts = {("error" if k.startswith("error") else k): int(n) for n, k in _SUMMARY.findall(tail)}
    failures = [line for line in out.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED ")]
    data = dict(status="ok" if proc.returncode == 0 else "failed", command=" ".join(cmd), returncode=proc.returncode,
                counts=counts, summary=tail, failures=failures[:20], skips=skips[:20], seconds=round(seconds, 1))
    if proc.returncode != 0:
        data["error"] = f"pytest exit status {proc.returncode}: {tail}"
        data["assertions"] = [line for line in out.splitlines() if line.startswith("E ")][:40]  # why each failed
        if not counts:
            data["output_tail"] = out[-3000:]
    lines = [f"`pytest -m '' {' '.join(paths)}`: {tail or 'no summary line'} (exit status {proc.returncode})"]
    lines += [f"  - {line}" for line in failures[:10]] + [f"  - {line}" for line in skips[:5]]
    lines += [f"    {line}" for line in data.get("assertions", [])[:20]]
    return data, lines


def gradient_comparison(G: torch.nn.Module, D: torch.nn.Module, device: torch.device | str, batch: int,
                        objective: str = "rooted", seed: int = 0) -> dict[str, dict]:
    """Gradients of one training step (the loss's Gmain, Greg, Dmain, Dreg phases) with the networks' fp16 layers
    (force_fp32=False) and without (force_fp32=True), on the same inputs, noise and weights: per phase the
    relative L2 error ||g16 - g32|| / ||g32||, the cosine similarity and whether the fp16 gradients are finite."""
    dev = torch.device(device)
    G.train(), D.train()  # as training runs them (a loaded snapshot comes in eval mode)
    gen = torch.Generator().manual_seed(seed)
    res = G.img_resolution
    z = torch.randn([batch, G.z_dim], generator=gen).to(dev)
    c = torch.zeros([batch, G.c_dim], device=dev)
    real = (torch.rand([batch, G.img_channels, res, res], generator=gen) * 2 - 1).to(dev)
    grads: dict[bool, dict[str, torch.Tensor]] = {}
    for force_fp32 in (False, True):
        loss = StyleGAN2Loss(dev, G, D, augment_pipe=None, objective=objective, r1_gamma=1, style_mixing_prob=0,
                             pl_weight=2)
        loss.force_fp32 = force_fp32  # what the training loop decides by device; both ways here
        grads[force_fp32] = {}
        for phase, net in (("Gmain", G), ("Greg", G), ("Dmain", D), ("Dreg", D)):
            params = [p for p in net.parameters()]
            net.requires_grad_(True)
            for p in params:
                p.grad = None
            torch.manual_seed(seed + 1)  # the same synthesis noise and path-length directions both ways
            loss.accumulate_gradients(phase, real, c, z, c, sync=True, gain=1)
            grads[force_fp32][phase] = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                                                  for p in params]).double()
            net.requires_grad_(False)
            for p in params:
                p.grad = None
    out = {}
    for phase, g32 in grads[True].items():
        g16 = grads[False][phase]
        norm = float(g32.norm())
        out[phase] = dict(rel_l2=float((g16 - g32).norm()) / norm if norm else float((g16 - g32).norm()),
                          cosine=float(torch.nn.functional.cosine_similarity(g16, g32, dim=0)),
                          finite=bool(torch.isfinite(g16).all()), norm_fp32=norm)
    return out


def fp16_training(device: str = "cuda", res: int = 256, batch: int = 32, iters: int = 8, grad_batch: int = 8,
                  cbase: int | None = None, cmax: int | None = None, map_depth: int | None = None,
                  tol: float = FP16_GRAD_TOL, workdir: str | None = None) -> Result:
    """A short fine-tuning run (rooted objective, ADA) of a network built from --cfg paper256 at `res`, with
    mixed precision as training uses it on a GPU (fp16 in the top 4 resolutions): the losses and gradients of
    every tick must be finite. Then the fp16 vs fp32 gradients of one step of the resulting networks
    (gradient_comparison) must lie within `tol` (relative L2 error, each phase)."""
    with tempfile.TemporaryDirectory(prefix="gpu-check-", dir=workdir) as tmp:
        data_zip = synthetic_dataset(os.path.join(tmp, "data.zip"), max(2 * batch, 16), res)
        sizes = {k: v for k, v in dict(cbase=cbase, cmax=cmax, map_depth=map_depth).items() if v is not None}
        start = time.perf_counter()
        run_dir = _train(data_zip, os.path.join(tmp, "runs"), iters, batch, device, **sizes)
        seconds = time.perf_counter() - start
        ticks = _read_stats(run_dir)
        bad = []
        for i, tick in enumerate(ticks):
            for key, value in tick.items():
                if key.startswith("Loss/") and isinstance(value, dict):
                    if not all(math.isfinite(v) for v in value.values() if isinstance(v, (int, float))):
                        bad.append(f"tick {i}: {key} {value}")
                if key.startswith("Grad/nonfinite_") and isinstance(value, dict) and value.get("mean", 0):
                    bad.append(f"tick {i}: {key} {value}")
        last = ticks[-1] if ticks else {}
        losses = {k: last[k]["mean"] for k in ("Loss/G/loss", "Loss/D/loss") if isinstance(last.get(k), dict)}
        snapshot = load_network_pkl(_final_snapshot(run_dir))
    dev = torch.device(device)
    G, D = snapshot["G"].to(dev), snapshot["D"].to(dev)
    comparison = gradient_comparison(G, D, dev, grad_batch)
    over = [phase for phase, r in comparison.items() if not r["finite"] or not r["rel_l2"] <= tol]
    data = dict(status="ok", res=res, batch=batch, iters=iters, kimg=iters * batch / 1000, cfg="paper256",
                sizes=sizes or "paper256", train_seconds=round(seconds, 1), ticks=len(ticks), last_losses=losses,
                nonfinite=bad[:10], grad_batch=grad_batch, tolerance_rel_l2=tol, gradients=comparison)
    problems = ([f"non-finite losses or gradients: {bad[0]}"] if bad else []) + (
        [f"fp16 vs fp32 gradients beyond {tol:g} (or not finite): {', '.join(over)}"] if over else [])
    if not ticks:
        problems.append("the run wrote no statistics")
    if problems:
        data.update(status="failed", error="; ".join(problems))
    lines = [f"{iters} iterations of batch {batch} at {res}x{res} (--cfg paper256"
             f"{', ' + ', '.join(f'{k} {v}' for k, v in sizes.items()) if sizes else ''}, rooted, ADA) in "
             f"{seconds:.1f} s: {len(ticks)} ticks, " + ("all losses and gradients finite" if not bad else
                                                          f"NON-FINITE: {bad[0]}") +
             (f"; last tick G loss {losses.get('Loss/G/loss', float('nan')):.3f}, D loss "
              f"{losses.get('Loss/D/loss', float('nan')):.3f}" if losses else ""),
             f"fp16 vs fp32 gradients of one step (batch {grad_batch}; tolerance: relative L2 error <= {tol:g}):"]
    lines += [f"  - {phase}: relative L2 error {r['rel_l2']:.2e}, cosine {r['cosine']:.5f}"
              f"{'' if r['finite'] else ', NOT FINITE'}{' (over)' if phase in over else ''}"
              for phase, r in comparison.items()]
    return data, lines


def _deterministic_settings(device: torch.device) -> Callable[[], None]:
    """Deterministic kernels where PyTorch has them (warnings name those it lacks); returns the undo."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS reproducibility (before its first use)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True

    def undo() -> None:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic = saved[2]
        if saved[3] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    return undo


def exact_resume(device: str = "cuda", res: int = 256, batch: int = 8, iters: int = 6, aug: str = "noaug",
                 cbase: int | None = None, cmax: int | None = None, map_depth: int | None = None,
                 tol: float = RESUME_TOL, workdir: str | None = None) -> Result:
    """Exact resume on `device`: a run of `iters` iterations against iters/2, a resume from that snapshot (with its
    training state file) and iters/2 more, under deterministic settings (deterministic cuDNN/cuBLAS, no cuDNN
    benchmark). Equal within `tol` passes. Otherwise two straight runs are compared as well: a resume difference
    within NOISE_FACTOR of theirs is the GPU's own run-to-run noise (reported, with the kernels PyTorch named as
    non-deterministic), anything larger fails.

    --aug noaug by default: the augmentation's grid_sample backward accumulates with atomics on CUDA, so ADA runs
    are not bit-reproducible there; the resumed ADA state itself is checked on the CPU (tests/training)."""
    dev = torch.device(device)
    undo = _deterministic_settings(dev)
    sizes = {k: v for k, v in dict(cbase=cbase, cmax=cmax, map_depth=map_depth).items() if v is not None}
    opts = dict(sizes, aug=aug, nobench=True) if "nobench" in OPTIONS_BY_NAME else dict(sizes, aug=aug)
    if aug == "ada":
        opts.update(p=0.2, target=0.3)
    try:
        with tempfile.TemporaryDirectory(prefix="gpu-check-", dir=workdir) as tmp, \
                warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data_zip = synthetic_dataset(os.path.join(tmp, "data.zip"), max(2 * batch, 16), res)
            start = time.perf_counter()
            straight = _train(data_zip, os.path.join(tmp, "straight"), iters, batch, device, **opts)
            half = _train(data_zip, os.path.join(tmp, "first"), iters // 2, batch, device, **opts)
            half_pkl = _final_snapshot(half)
            resumed = _train(data_zip, os.path.join(tmp, "resumed"), iters, batch, device, resume=half_pkl, **opts)
            with open(os.path.join(resumed, "log.txt"), encoding="utf-8") as f:
                restored = "Restored the training state" in f.read()
            a, b = load_network_pkl(_final_snapshot(straight)), load_network_pkl(_final_snapshot(resumed))
            diff = max_state_diff(a, b)
            same_progress = a.get("progress") == b.get("progress")
            floor = None
            if diff > tol:  # is it the resume, or does the GPU differ from run to run anyway?
                again = _train(data_zip, os.path.join(tmp, "again"), iters, batch, device, **opts)
                floor = max_state_diff(a, load_network_pkl(_final_snapshot(again)))
            seconds = time.perf_counter() - start
            nondeterministic = sorted({str(w.message).split("\n")[0][:200] for w in caught
                                       if "deterministic" in str(w.message)})
    finally:
        undo()
    data = dict(status="ok", res=res, batch=batch, iters=iters, split=iters // 2, aug=aug, sizes=sizes or "paper256",
                tolerance=tol, max_abs_diff=diff, straight_vs_straight=floor, restored_state=restored,
                same_progress=same_progress, nondeterministic_ops=nondeterministic, seconds=round(seconds, 1))
    what = (f"{iters} iterations straight vs {iters // 2} + resumed {iters - iters // 2} (batch {batch}, {res}x{res}, "
            f"--aug {aug}, deterministic settings): max abs difference {diff:.3g}")
    status, error, verdict = resume_verdict(diff, floor, tol, restored and same_progress, nondeterministic)
    data.update(status=status, **({"error": error} if error else {}))
    return data, [what, verdict]


def resume_verdict(diff: float, floor: float | None, tol: float, restored: bool,
                   nondeterministic: list[str] = ()) -> tuple[str, str | None, str]:
    """(status, error, report line) of an exact-resume comparison: `diff` straight vs resumed, `floor` two straight
    runs (None when not measured), `restored` whether the resumed run restored the training state and progress."""
    if not restored:
        return "failed", "the resumed run did not restore the training state or its progress", (
            "FAILED: the training state was not restored")
    if diff <= tol:
        return "ok", None, f"exact (<= {tol:g})"
    if floor is not None and floor > tol and diff <= NOISE_FACTOR * floor:
        why = f" (PyTorch names as non-deterministic: {'; '.join(nondeterministic)})" if nondeterministic else ""
        return "ok", None, (f"not bit-exact, but two straight runs differ by {floor:.3g} as well: the GPU's own "
                            f"run-to-run noise, not the resume{why}")
    floor_text = "not measured" if floor is None else f"{floor:.3g}"
    return "failed", f"the resume differs by {diff:.3g} (two straight runs: {floor_text})", (
        f"FAILED: beyond {tol:g}, and two straight runs differ by {floor_text} only")


def speed(device: str = "cuda", variant: str = "kernels", res: int = 256, cbase: int = 16384, cmax: int = 512,
          batch: int = 64, map_depth: int = 8, iters: int = 32, warmup: int = 4, min_batch: int = 8) -> Result:
    """Training speed (the loop's own iteration, stylegan_rlo.bench.training.run_bench) after `warmup` iterations,
    in sec/kimg, with peak GPU memory. variant 'kernels': mixed precision with the CUDA plugins; 'pytorch': mixed
    precision on the PyTorch path (needs STYLEGAN_RLO_CUSTOM_OPS=0 in the environment before the ops load, i.e. a
    fresh process); 'fp32': no fp16 layers (as --fp32). A batch that does not fit is halved (down to min_batch)."""
    if variant not in ("kernels", "pytorch", "fp32"):
        raise ValueError(f"unknown speed variant {variant!r}")
    dev = torch.device(device)
    if variant == "pytorch" and os.environ.get(custom_ops.ENV_SWITCH) != "0":
        raise UserError(f"the PyTorch-path variant needs {custom_ops.ENV_SWITCH}=0 set before the ops load")
    kernels = bias_act._init() and upfirdn2d._init()  # pylint: disable=protected-access
    if variant != "pytorch" and dev.type == "cuda" and not kernels:
        raise RuntimeError("the CUDA plugins did not load: this would time the PyTorch path")
    if dev.type == "cuda":  # no TF32, as training without --allow-tf32: fp32 means fp32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    tried = []
    while True:
        try:
            result = run_bench(res=res, cbase=cbase, cmax=cmax, batch=batch, map_depth=map_depth, iters=iters,
                               warmup=warmup, device=dev, objective="rooted", fp32=variant == "fp32")
            break
        except torch.cuda.OutOfMemoryError:
            tried.append(batch)
            torch.cuda.empty_cache()
            if batch // 2 < min_batch:
                raise
            batch //= 2
    name = ("fp32 (as --fp32)" if variant == "fp32" else "mixed precision") + (
        ", CUDA kernels" if kernels else ", PyTorch path")
    data = dict(status="ok", variant=variant, kernels_loaded=bool(kernels), batch_did_not_fit=tried, **result)
    results = _self_check_results(dev, {}) if kernels else None  # the checks the ops ran on first use
    failed_checks = sorted(op for op, r in (results or {}).items() if not _result_ok(r))
    if failed_checks:  # those ops fell back to the PyTorch path
        data.update(status="failed", error=f"self-check failed for {', '.join(failed_checks)}: those ops ran on the "
                                           f"PyTorch path")
    peak = result.get("peak_mem_gib")
    lines = [f"{name}: {result['sec_per_kimg']:.2f} s/kimg ({result['img_per_sec']:.1f} img/s), batch {batch}"
             + (f" (batch {', '.join(map(str, tried))} did not fit)" if tried else "")
             + f", {iters} timed iterations after {warmup} warm-up ({result['warmup_sec']:.1f} s)"
             + (f", peak GPU memory {peak:.1f} GiB" if peak is not None else "")]
    return data, lines


def inception(device: str = "cuda", batch: int = 64, rounds: int = 5, res: int = 256,
              weights: str | None = None) -> Result:
    """Images per second of the FID Inception (2048 features, uint8 images of `res` resized to 299 inside) on
    `device`: the median of `rounds` timed batches after one warm-up. Without the weights file (offline machines)
    the same architecture with random weights is timed, and the report says so."""
    # optional: torch-fidelity, which only this step needs (the other steps run without it)
    from stylegan_rlo.evaluation import inception_weights
    dev = torch.device(device)
    path = weights
    if path is None:
        for candidate in (inception_weights.default_weights_path(), inception_weights.fidelity_download_path()):
            if os.path.isfile(candidate):
                path = candidate
                break
    if path is not None:
        extractor = inception_weights.feature_extractor(inception_weights.resolve_weights_path(path), ["2048"])
    else:
        extractor = inception_weights.fidelity_skeleton()  # random weights: the speed is the same
    extractor = extractor.to(dev)
    images = torch.from_numpy(np.random.RandomState(0).randint(0, 256, (batch, 3, res, res), dtype=np.uint8)).to(dev)
    rates = []
    with torch.no_grad():
        for step in range(rounds + 1):
            sync_device(dev)
            start = time.perf_counter()
            extractor(images)
            sync_device(dev)
            if step:  # the first batch warms up
                rates.append(batch / (time.perf_counter() - start))
    median = statistics.median(rates)
    data = dict(status="ok", img_per_sec=median, rounds=rates, batch=batch, res=res, device=str(dev),
                weights=path or "random (no weights file on this machine)")
    lines = [f"{median:.0f} img/s (median of {rounds} batches of {batch} {res}x{res} images, after a warm-up; "
             f"weights: {'the FID weights' if path else 'random, same architecture (no weights file here)'})"]
    return data, lines


# ---------------------------------------------------------------------------------------------------------------
# The step table and its sizes.

@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    title: str
    budget_s: float          # time limit in a full check
    quick_budget_s: float    # time limit with --quick
    function: Callable[..., Result]
    full: dict               # keyword arguments in a full check
    quick: dict              # ... and with --quick
    env: dict = dataclasses.field(default_factory=dict)  # extra environment of its process


_SPEED = dict(PAPER256)
# Budgets (full, --quick) in seconds, from the H200 runs (docs/gpu/): env 5-7, plugin builds 51-62, op tests 25-34,
# fp16 run and gradient comparison 58, exact resume at 64x64 26-33, kernel speed (16 iterations) 34, Inception 14. The
# first iteration of a fresh process costs 20-35 s of cuDNN autotuning on the PyTorch path and in fp32, and the PyTorch
# path runs at about 70 s/kimg, so those two steps time few iterations of batch 32. Later steps are cut to the time
# that is left of the deadline.
STEPS: tuple[Step, ...] = (
    Step("env", "Machine and versions", 20, 20, env_info, {}, {}),
    Step("plugins", "CUDA plugin build and self-check", 100, 100, plugins, {}, {}),
    Step("op_tests", "CUDA op tests (tests/upstream_api/test_custom_ops.py, -m '')", 60, 60, op_tests, {}, {}),
    Step("fp16_training", "fp16 fine-tuning at 256x256 (paper256) and fp16 vs fp32 gradients", 90, 80,
         fp16_training, dict(res=256, batch=32, iters=8, grad_batch=8), dict(res=256, batch=16, iters=4, grad_batch=4)),
    # 64x64 in both modes: the resume machinery does not depend on the resolution, and 256x256 costs a minute more.
    Step("exact_resume", "Exact resume on CUDA", 45, 45, exact_resume, dict(res=64, batch=8, iters=6),
         dict(res=64, batch=8, iters=6)),
    Step("speed_kernels", "Speed: mixed precision with the CUDA kernels", 45, 40, speed,
         dict(_SPEED, variant="kernels", batch=64, iters=16, warmup=4),
         dict(_SPEED, variant="kernels", batch=64, iters=8, warmup=2)),
    Step("speed_pytorch", "Speed: mixed precision on the PyTorch path", 90, 75, speed,
         dict(_SPEED, variant="pytorch", batch=32, iters=4, warmup=1),
         dict(_SPEED, variant="pytorch", batch=32, iters=2, warmup=1), env={custom_ops.ENV_SWITCH: "0"}),
    Step("speed_fp32", "Speed: fp32 (--fp32)", 90, 75, speed,
         dict(_SPEED, variant="fp32", batch=32, iters=8, warmup=1),
         dict(_SPEED, variant="fp32", batch=32, iters=4, warmup=1)),
    Step("inception", "Inception throughput", 25, 20, inception, dict(batch=64, rounds=5), dict(batch=64, rounds=3)),
)
STEP_NAMES = tuple(step.name for step in STEPS)
STEPS_BY_NAME = {step.name: step for step in STEPS}


def call_step(name: str, quick: bool, device: str = "cuda") -> Result:
    """Run one step in this process with its full or --quick sizes; an exception becomes a failed result."""
    step = STEPS_BY_NAME[name]
    kwargs = dict(step.quick if quick else step.full)
    if step.function is not op_tests:
        kwargs["device"] = device
    try:
        data, lines = step.function(**kwargs)
    except Exception as e:  # pylint: disable=broad-except  # recorded, and the next step runs
        error = f"{type(e).__name__}: {e}".strip()
        data = dict(status="failed", error=error, traceback=traceback.format_exc()[-3000:])
        lines = [f"FAILED: {error.splitlines()[0] if error else type(e).__name__}"]
    return _plain(data), lines


def run_child(argv: list[str]) -> None:
    """Entry point of a step's process: argv = [step name, 'quick' or 'full', result file, device]."""
    name, mode, result_path, device = argv
    data, lines = call_step(name, mode == "quick", device)
    with atomic_write(result_path, "w") as f:
        json.dump(dict(data=data, lines=lines), f, default=str)


# ---------------------------------------------------------------------------------------------------------------
# The runner and the report.

def _run_process(cmd: list[str], env: dict, timeout: float, cwd: str) -> tuple[int | None, str]:
    """Run cmd in its own session; kill the whole session when it overruns. Returns (exit status or None when
    killed for time, combined output)."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            rc = None
        out.seek(0)
        return rc, out.read().decode("utf-8", "replace")


def run_step_process(step: Step, quick: bool, timeout: float, workdir: str, device: str = "cuda") -> Result:
    """One step in a fresh Python process (with the step's environment), within `timeout` seconds."""
    result_path = os.path.join(workdir, f"{step.name}.json")
    env = dict(os.environ, PYTHONUNBUFFERED="1", **step.env)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    code = "import sys; from stylegan_rlo.bench.gpu_check import run_child; run_child(sys.argv[1:])"
    cmd = [sys.executable, "-c", code, step.name, "quick" if quick else "full", result_path, device]
    rc, output = _run_process(cmd, env, timeout, os.getcwd())
    if rc is None:
        return (dict(status="failed", error=f"timed out after {timeout:.0f} s (killed)", output_tail=output[-3000:]),
                [f"FAILED: timed out after {timeout:.0f} s"])
    if not os.path.isfile(result_path):
        return (dict(status="failed", error=f"its process ended with exit status {rc} and no result",
                     output_tail=output[-3000:]), [f"FAILED: the process ended with exit status {rc}, no result"])
    with open(result_path, encoding="utf-8") as f:
        result = json.load(f)
    data = result["data"]
    if data.get("status") == "failed":
        data.setdefault("output_tail", output[-3000:])
    return data, result["lines"]


def format_markdown(report: dict) -> str:
    """gpu-report.md: a summary table, then each step's lines."""
    out = [f"# GPU check, {report['started'][:10]}", "",
           f"`stylegan-rlo-gpu-check{' --quick' if report['mode'] == 'quick' else ''}`: started {report['started']}, "
           + (f"finished {report['finished']} ({report['wall_s']:.0f} s of {report['deadline_s']:.0f} s)"
              if report.get("finished") else "NOT FINISHED (partial report: written after each step)"), ""]
    env = report["steps"].get("env", {})
    if env.get("status") == "ok":
        out += env.get("lines", [])[:2] + [""]
    out += ["| step | result | seconds (limit) |", "| --- | --- | ---: |"]
    for name, step in report["steps"].items():
        result = step["status"] + (f": {step['error']}" if step.get("error") else "") + (
            f": {step['reason']}" if step.get("reason") else "")
        result = result.replace("|", "\\|").replace("\n", " ")
        result = result if len(result) <= 160 else result[:157] + "..."
        out.append(f"| {name} | {result} | {step.get('seconds', 0):.1f} ({step.get('budget_s', 0):.0f}) |")
    for name, step in report["steps"].items():
        out += ["", f"## {name}: {step['title']} ({step['status']})", ""]
        out += [line if line.startswith("  - ") else f"- {line}" for line in step.get("lines", [])]
    return "\n".join(out) + "\n"


def write_report(report: dict, outdir: str) -> tuple[str, str]:
    """Both report files, each written atomically (a reader never sees half a file)."""
    os.makedirs(outdir, exist_ok=True)
    json_path, md_path = os.path.join(outdir, REPORT_JSON), os.path.join(outdir, REPORT_MD)
    with atomic_write(json_path, "w") as f:
        json.dump(report, f, indent=1, default=str)
    with atomic_write(md_path, "w") as f:
        f.write(format_markdown(report))
    return json_path, md_path


def parse_skip(text: str | None) -> list[str]:
    """--skip 'a,b' -> ['a', 'b'], each a step name."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in STEPS_BY_NAME]
    if unknown:
        raise UserError(f"--skip: unknown step(s) {', '.join(unknown)}; the steps are {', '.join(STEP_NAMES)}")
    return names


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def run_check(outdir: str = ".", quick: bool = False, skip: list[str] | tuple[str, ...] = (),
              echo: Callable[[str], None] = print, steps: tuple[Step, ...] = STEPS,
              runner: Callable[[Step, bool, float, str], Result] = run_step_process,
              deadline_s: float | None = None) -> int:
    """The whole check; returns the exit status (0: every step ok or skipped, 1: a step failed). Without a CUDA
    GPU it prints NO_GPU_MESSAGE, writes nothing and returns 0."""
    if not torch.cuda.is_available():
        echo(NO_GPU_MESSAGE)
        return 0
    mode = "quick" if quick else "full"
    deadline = DEADLINE_S[mode] if deadline_s is None else deadline_s
    t0 = time.monotonic()
    report: dict[str, Any] = dict(tool="stylegan-rlo gpu-check", version=__version__, mode=mode, started=_now(),
                                  finished=None, wall_s=None, deadline_s=deadline, steps={})
    workdir = tempfile.mkdtemp(prefix="gpu-check-")
    try:
        for i, step in enumerate(steps, 1):
            budget = step.quick_budget_s if quick else step.budget_s
            left = deadline - (time.monotonic() - t0)
            timeout = min(budget, left)
            echo(f"[{i}/{len(steps)}] {step.name}: {step.title} (limit {timeout:.0f} s) ...")
            start = time.monotonic()
            if step.name in skip:
                data, lines = dict(status="skipped", reason="--skip"), ["skipped (--skip)"]
            elif timeout < MIN_STEP_S:
                data, lines = dict(status="skipped", reason="out of time"), [
                    f"skipped: out of time ({left:.0f} s of the {deadline:.0f} s left)"]
            else:
                data, lines = runner(step, quick, timeout, workdir)
            seconds = time.monotonic() - start
            report["steps"][step.name] = dict(data, title=step.title, budget_s=budget, seconds=round(seconds, 1),
                                              lines=lines)
            echo(f"    {data['status']} ({seconds:.1f} s)" + (f": {data['error']}" if data.get("error") else ""))
            for line in lines:
                echo(f"    {line}")
            write_report(report, outdir)
        report.update(finished=_now(), wall_s=round(time.monotonic() - t0, 1))
        json_path, md_path = write_report(report, outdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    failed = [name for name, s in report["steps"].items() if s["status"] == "failed"]
    echo(f"wrote {md_path} and {json_path}: " + (f"FAILED: {', '.join(failed)}" if failed else "all steps ok or "
                                                                                             "skipped"))
    return 1 if failed else 0
