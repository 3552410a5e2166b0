"""The GPU check (`make gpu-check`): its one line and exit status 0 without a GPU, each step run on the CPU with tiny
sizes where it can run there, the step processes and their time limit, and the report (JSON + markdown, written
atomically after every step, partial after a failing one)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import types
import warnings

import pytest
import torch
from click.testing import CliRunner
from training_fixtures import REPO, subprocess_env

import torch_utils.ops
from stylegan_rlo.bench import gpu_check
from stylegan_rlo.bench import training as bench_training
from stylegan_rlo.cli import gpu_check as cli
from torch_utils import custom_ops
from torch_utils.ops import bias_act, upfirdn2d

TINY = dict(res=32, cbase=256, cmax=32, map_depth=1)  # a paper256-configured network, CPU-sized


# ---------------------------------------------------------------------------------------------------------------
# Without a GPU: one line, exit status 0, nothing written.

def test_without_a_gpu_the_command_says_so_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(cli.main, ["--outdir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert result.output == gpu_check.NO_GPU_MESSAGE + "\n"
    assert not (tmp_path / "out").exists()


def test_make_gpu_check_runs_the_script_which_exits_0_without_a_gpu(tmp_path):
    with open(os.path.join(REPO, "Makefile"), encoding="utf-8") as f:
        makefile = f.read()
    recipe = re.search(r"^gpu-check:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe and "scripts/gpu_check.py" in recipe.group(1) and "gpu-check" in re.search(
        r"^\.PHONY:(.*)$", makefile, re.M).group(1)
    # what the target runs (make itself would first set up .venv): no GPU here, or hidden from it
    env = dict(subprocess_env(), CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "gpu_check.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == gpu_check.NO_GPU_MESSAGE + "\n"
    assert "Traceback" not in proc.stderr
    assert os.listdir(tmp_path) == []


def test_help_names_every_step_and_unknown_skips_are_refused():
    assert cli.STEP_NAMES == gpu_check.STEP_NAMES
    result = CliRunner().invoke(cli.main, ["--help"])
    assert result.exit_code == 0 and all(name in result.output.replace("\n", " ") for name in cli.STEP_NAMES[:3])
    result = CliRunner().invoke(cli.main, ["--skip", "env,nonsense"])
    assert result.exit_code == 2 and "Error: --skip: unknown step(s) nonsense" in result.output
    assert gpu_check.parse_skip(" env, inception ") == ["env", "inception"]


def test_quick_sizes_are_smaller_and_budgets_fit_the_deadlines():
    for step in gpu_check.STEPS:
        assert step.quick_budget_s <= step.budget_s
        for key in ("iters", "batch", "rounds"):
            if key in step.full:
                assert step.quick[key] <= step.full[key], (step.name, key)
    assert gpu_check.DEADLINE_S["full"] <= 8 * 60 and gpu_check.DEADLINE_S["quick"] <= 5.5 * 60
    speeds = [s for s in gpu_check.STEPS if s.name.startswith("speed_")]
    assert all(s.full["res"] == 256 and s.full["cbase"] == 16384 and s.full["batch"] >= 32 for s in speeds)
    assert gpu_check.STEPS_BY_NAME["speed_kernels"].full["batch"] == 64  # the figure the README quotes
    assert [s for s in speeds if s.env] == [gpu_check.STEPS_BY_NAME["speed_pytorch"]]


# ---------------------------------------------------------------------------------------------------------------
# Each step on the CPU.

def test_env_info_on_cpu():
    data, lines = gpu_check.env_info("cpu")
    assert data["status"] == "ok" and data["torch"] == torch.__version__ and data["gpu"] is None
    assert lines[0] == "GPU: none (device cpu)" and json.dumps(data)


def _fake_plugins(monkeypatch):
    for module in (bias_act, upfirdn2d):
        monkeypatch.setattr(module, "_init", lambda: True)
        monkeypatch.setattr(module, "_plugin", types.SimpleNamespace())


def test_plugins_on_cpu_report_them_unavailable(one_thread):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", custom_ops.CustomOpsWarning)  # the one warning of the PyTorch fallback
        data, lines = gpu_check.plugins("cpu")
    assert data["status"] == "failed" and "bias_act, upfirdn2d" in data["error"]
    assert data["self_check"] is None and "self-check: not available" in lines


def test_plugins_without_the_self_check_module_say_not_available(monkeypatch):
    _fake_plugins(monkeypatch)
    monkeypatch.delattr(torch_utils.ops, "self_check", raising=False)
    monkeypatch.setitem(sys.modules, "torch_utils.ops.self_check", None)  # import fails
    data, lines = gpu_check.plugins("cpu")
    assert data["status"] == "ok" and data["bias_act"]["loaded"] and data["upfirdn2d"]["loaded"]
    assert data["self_check"] is None and lines[-1] == "self-check: not available"


def test_plugins_report_the_self_check(monkeypatch):
    _fake_plugins(monkeypatch)
    checked = []
    results = {}

    def check_plugin(name, plugin, device):
        checked.append(name)
        results[f"{name}@cpu"] = dict(ok=name == "bias_act", worst_case="x", error=0.5, tolerance=1e-4,
                                      seconds=0.01)
    fake = types.SimpleNamespace(check_plugin=check_plugin, last_results=lambda: dict(results))
    monkeypatch.setattr(torch_utils.ops, "self_check", fake, raising=False)
    monkeypatch.setitem(sys.modules, "torch_utils.ops.self_check", fake)
    data, lines = gpu_check.plugins("cpu")
    assert checked == ["bias_act", "upfirdn2d"]  # last_results() was empty: the step ran the check
    assert data["status"] == "failed" and data["error"] == "self-check failed: upfirdn2d@cpu"
    assert data["self_check"]["bias_act@cpu"]["tolerance"] == 1e-4
    assert "self-check: 1/2 ok; FAILED: upfirdn2d@cpu" in lines


def test_op_tests_run_pytest_and_count(tmp_path):
    (tmp_path / "test_a.py").write_text("import pytest\n\ndef test_ok():\n    pass\n\n@pytest.mark.slow\n"
                                        "def test_slow_fails():\n    assert 1 == 2\n")
    (tmp_path / "test_b.py").write_text("def test_ok():\n    pass\n")
    data, lines = gpu_check.op_tests(["test_a.py"], cwd=str(tmp_path))
    assert data["status"] == "failed" and data["counts"] == dict(passed=1, failed=1)
    assert "-m" in data["command"] and any("test_slow_fails" in f for f in data["failures"])
    assert "1 failed, 1 passed" in lines[0]
    data, _ = gpu_check.op_tests(["test_b.py"], cwd=str(tmp_path))
    assert data["status"] == "ok" and data["counts"] == dict(passed=1)
    data, lines = gpu_check.op_tests(["missing.py"], cwd=str(tmp_path))
    assert data["status"] == "skipped" and "missing.py" in lines[0]
    assert all(os.path.exists(os.path.join(REPO, p)) for p in gpu_check.OP_TEST_FILES)


def test_fp16_training_on_cpu(tmp_path, one_thread):
    data, lines = gpu_check.fp16_training("cpu", batch=8, iters=2, grad_batch=8, workdir=str(tmp_path), **TINY)
    assert data["status"] == "ok", data
    assert data["ticks"] == 2 and not data["nonfinite"] and set(data["last_losses"]) == {"Loss/G/loss", "Loss/D/loss"}
    assert set(data["gradients"]) == {"Gmain", "Greg", "Dmain", "Dreg"}
    for phase in data["gradients"].values():  # fp16 really differs from fp32, within the tolerance
        assert 0 < phase["rel_l2"] <= gpu_check.FP16_GRAD_TOL and phase["finite"] and phase["cosine"] > 0.99
    assert "all losses and gradients finite" in lines[0] and os.listdir(tmp_path) == []


def test_fp16_gradients_beyond_the_tolerance_fail(tmp_path, one_thread):
    data, lines = gpu_check.fp16_training("cpu", batch=8, iters=1, grad_batch=8, tol=1e-9, workdir=str(tmp_path),
                                          **TINY)
    assert data["status"] == "failed" and "fp16 vs fp32 gradients beyond 1e-09" in data["error"]
    assert any("(over)" in line for line in lines)


def test_exact_resume_on_cpu(tmp_path, one_thread):
    data, lines = gpu_check.exact_resume("cpu", batch=8, iters=6, workdir=str(tmp_path), **TINY)
    assert data["status"] == "ok", data
    assert data["max_abs_diff"] <= gpu_check.RESUME_TOL and data["restored_state"] and data["same_progress"]
    assert data["straight_vs_straight"] is None and lines[1].startswith("exact")
    assert not torch.are_deterministic_algorithms_enabled()  # the settings are undone


def test_resume_verdicts():
    assert gpu_check.resume_verdict(0.0, None, 1e-6, True)[0] == "ok"
    status, error, line = gpu_check.resume_verdict(2e-3, 1e-3, 1e-6, True, ["grid_sampler_2d_backward_cuda ..."])
    assert status == "ok" and error is None and "run-to-run noise" in line and "grid_sampler" in line
    status, error, line = gpu_check.resume_verdict(1e-1, 1e-4, 1e-6, True)
    assert status == "failed" and "differs by 0.1" in error
    assert gpu_check.resume_verdict(0.0, None, 1e-6, False)[0] == "failed"


def test_speed_on_cpu(monkeypatch, one_thread):
    built = []
    original = bench_training.build_networks
    monkeypatch.setattr(bench_training, "build_networks", lambda G, D, dev: built.append((G, D)) or original(G, D, dev))
    sizes = dict(res=16, cbase=256, cmax=32, batch=2, map_depth=1, iters=1, warmup=1)
    data, lines = gpu_check.speed("cpu", "fp32", **sizes)
    assert data["status"] == "ok" and data["fp32"] and data["sec_per_kimg"] > 0 and data["peak_mem_gib"] is None
    assert built[-1][0]["synthesis_kwargs"]["num_fp16_res"] == 0 and built[-1][1]["conv_clamp"] is None
    assert lines[0].startswith("fp32 (as --fp32), PyTorch path: ") and "s/kimg" in lines[0]
    with pytest.raises(Exception, match="STYLEGAN_RLO_CUSTOM_OPS=0"):
        gpu_check.speed("cpu", "pytorch", **sizes)
    monkeypatch.setenv(custom_ops.ENV_SWITCH, "0")
    data, _ = gpu_check.speed("cpu", "pytorch", **sizes)
    assert data["status"] == "ok" and not data["fp32"] and built[-1][0]["synthesis_kwargs"]["num_fp16_res"] == 4


def test_inception_throughput_on_cpu(monkeypatch, one_thread):
    from stylegan_rlo.evaluation import inception_weights
    if os.path.isfile(inception_weights.default_weights_path()):
        data, lines = gpu_check.inception("cpu", batch=2, rounds=1, res=32)
        assert data["status"] == "ok" and data["img_per_sec"] > 0 and "the FID weights" in lines[0]
    monkeypatch.setattr(inception_weights, "default_weights_path", lambda: "/nonexistent/a.pth")
    monkeypatch.setattr(inception_weights, "fidelity_download_path", lambda: "/nonexistent/b.pth")
    data, lines = gpu_check.inception("cpu", batch=2, rounds=1, res=32)
    assert data["status"] == "ok" and data["weights"].startswith("random") and "random" in lines[0]


# ---------------------------------------------------------------------------------------------------------------
# Steps in their own processes, and the report.

def test_a_step_runs_in_its_own_process(tmp_path):
    data, lines = gpu_check.run_step_process(gpu_check.STEPS_BY_NAME["env"], True, 120, str(tmp_path), device="cpu")
    assert data["status"] == "ok" and data["gpu"] is None and lines[0] == "GPU: none (device cpu)"


def test_a_step_over_its_limit_is_killed():
    start = time.monotonic()
    rc, output = gpu_check._run_process([sys.executable, "-c", "import time; print('started', flush=True); "
                                         "time.sleep(60)"], dict(os.environ), 2, REPO)
    assert rc is None and "started" in output and time.monotonic() - start < 30


def test_an_exception_in_a_step_is_recorded(monkeypatch):
    def broken(device):
        raise RuntimeError("CUDA error: an illegal memory access")
    monkeypatch.setitem(gpu_check.STEPS_BY_NAME, "env", gpu_check.Step("env", "t", 1, 1, broken, {}, {}))
    data, lines = gpu_check.call_step("env", quick=False, device="cpu")
    assert data["status"] == "failed" and data["error"] == "RuntimeError: CUDA error: an illegal memory access"
    assert "Traceback" in data["traceback"] and lines == ["FAILED: RuntimeError: CUDA error: an illegal memory access"]


def test_report_is_rewritten_atomically_after_every_step(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    writes = []
    original = gpu_check.atomic_write

    def spy(path, mode="wb"):
        writes.append(os.path.basename(path))
        return original(path, mode)
    monkeypatch.setattr(gpu_check, "atomic_write", spy)
    out = tmp_path / "out"
    steps = tuple(gpu_check.Step(name, f"title {name}", 60, 30, None, {}, {}) for name in ("a", "b", "c", "d"))
    seen = {}

    def runner(step, quick, timeout, workdir):
        assert quick and timeout == 30
        if step.name == "b":  # the report of the steps before, already on disk
            seen["b"] = json.loads((out / gpu_check.REPORT_JSON).read_text())
            return dict(status="failed", error="boom | bang"), ["FAILED: boom"]
        if step.name == "c":
            seen["c"] = json.loads((out / gpu_check.REPORT_JSON).read_text())
        return dict(status="ok", value=1), [f"{step.name} fine", "  - detail"]

    lines = []
    status = gpu_check.run_check(str(out), quick=True, skip=["d"], echo=lines.append, steps=steps, runner=runner)
    assert status == 1
    assert list(seen["b"]["steps"]) == ["a"] and seen["b"]["finished"] is None
    assert seen["c"]["steps"]["b"]["status"] == "failed" and seen["c"]["steps"]["b"]["error"] == "boom | bang"
    report = json.loads((out / gpu_check.REPORT_JSON).read_text())
    assert [s["status"] for s in report["steps"].values()] == ["ok", "failed", "ok", "skipped"]
    assert report["steps"]["d"]["reason"] == "--skip" and report["finished"] and report["mode"] == "quick"
    assert writes == [gpu_check.REPORT_JSON, gpu_check.REPORT_MD] * 5  # after each of 4 steps, then at the end
    md = (out / gpu_check.REPORT_MD).read_text()
    assert "| b | failed: boom \\| bang |" in md and "## a: title a (ok)" in md and "- a fine\n  - detail" in md
    assert sorted(os.listdir(out)) == [gpu_check.REPORT_JSON, gpu_check.REPORT_MD]  # no temp files left
    assert any("FAILED: b" in line for line in lines)


def test_steps_beyond_the_deadline_are_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    steps = tuple(gpu_check.Step(name, name, 60, 60, None, {}, {}) for name in ("a", "b"))
    calls = []

    def runner(step, quick, timeout, workdir):
        calls.append((step.name, timeout))
        return dict(status="ok"), []
    status = gpu_check.run_check(str(tmp_path), steps=steps, runner=runner, echo=lambda line: None, deadline_s=5)
    report = json.loads((tmp_path / gpu_check.REPORT_JSON).read_text())
    assert status == 0 and calls == [] and [s["reason"] for s in report["steps"].values()] == ["out of time"] * 2
