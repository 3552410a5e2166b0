"""The plugins' self-check on first use (torch_utils/ops/self_check.py), on the CPU.

Stand-ins for the compiled plugins, written in Python on CPU tensors, take the plugins' place: correct ones (the
plugin contract computed in float64 and rounded to the input's dtype) and ones that are wrong by 1% in one case.
The ops are told that their plugin serves CPU tensors (`_PLUGIN_DEVICE_TYPE`).
"""

import warnings

import pytest
import torch

from naive_ops import naive_upfirdn2d
from torch_utils.ops import bias_act, self_check, upfirdn2d

ACT_NAMES = {spec.cuda_idx: name for name, spec in bias_act.activation_funcs.items()}


class RefBiasActPlugin:
    """bias_act(x, b, xref, yref, dy, mode, dim, act, alpha, gain, clamp) from the reference path in float64.

    In modes 1 and 2 the pre-activation z is xref + b where the op passes x, and otherwise yref: the op then passes
    no x only for linear, relu and lrelu, whose derivative needs nothing but the sign of z.
    """

    def __init__(self):
        self.calls = 0

    def bias_act(self, x, b, xref, yref, dy, mode, dim, act_idx, alpha, gain, clamp):
        self.calls += 1
        act = ACT_NAMES[act_idx]
        bias = b.double() if b.numel() else None
        if mode == 0:
            y = bias_act._bias_act_ref(x.double(), bias, dim, act, alpha, gain, None if clamp < 0 else clamp)
            return y.to(x.dtype)
        if xref.numel():
            z = xref.double() if bias is None else xref.double() + bias_act._along(bias, dim, x.ndim)
        else:
            z = yref.double() if yref.numel() else torch.zeros_like(x, dtype=torch.float64)
        z.requires_grad_(True)
        with torch.enable_grad():
            y = bias_act.activation_funcs[act].func(z, alpha=alpha) * gain
            (d,) = torch.autograd.grad(y.sum(), z, create_graph=mode == 2)
            if mode == 2:
                (d,) = torch.autograd.grad(d.sum(), z)
        out = x.double() * d * (dy.double() if mode == 2 else 1)
        if clamp >= 0:  # like the kernel: zero where the forward output is not strictly inside (-clamp, clamp)
            y_fwd = yref.double() if yref.numel() else y.detach()
            out = torch.where(y_fwd.abs() < clamp, out, torch.zeros_like(out))
        return out.to(x.dtype)


class WrongBiasActPlugin(RefBiasActPlugin):
    """1% off in one case: the float32 second-order gradient of tanh without clamp."""

    def bias_act(self, x, b, xref, yref, dy, mode, dim, act_idx, alpha, gain, clamp):
        out = super().bias_act(x, b, xref, yref, dy, mode, dim, act_idx, alpha, gain, clamp)
        wrong = ACT_NAMES[act_idx] == "tanh" and mode == 2 and x.dtype == torch.float32 and clamp < 0
        return out * 1.01 if wrong else out


class RefUpfirdn2dPlugin:
    """upfirdn2d(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain) from the naive float64 op."""

    def __init__(self):
        self.calls = 0

    def upfirdn2d(self, x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain):
        assert f.ndim == 2 and f.dtype == torch.float32
        self.calls += 1
        y = naive_upfirdn2d(x.double(), f, up=(upx, upy), down=(downx, downy), pad=(padx0, padx1, pady0, pady1),
                            gain=gain, correlate=flip)
        return y.to(x.dtype)


class WrongUpfirdn2dPlugin(RefUpfirdn2dPlugin):
    """1% off in one case: the float32 forward of downsample2d with the 4x4 filter (8x8 inputs)."""

    def upfirdn2d(self, x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain):
        y = super().upfirdn2d(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain)
        wrong = (downx, tuple(f.shape), x.dtype, x.shape[-1]) == (2, (4, 4), torch.float32, 8)
        return y * 1.01 if wrong else y


def _bias_act_op(x, impl="cuda"):
    b = torch.linspace(-1, 1, x.shape[1], dtype=x.dtype)
    return bias_act.bias_act(x, b, act="tanh", impl=impl)


def _upfirdn2d_op(x, impl="cuda"):
    return upfirdn2d.downsample2d(x, upfirdn2d.setup_filter([1, 3, 3, 1]), impl=impl)


OPS = {  # name -> (module, correct stand-in, wrong stand-in, public op, the wrong case)
    "bias_act": (bias_act, RefBiasActPlugin, WrongBiasActPlugin, _bias_act_op,
                 "tanh gain=1 clamp=None, torch.float32 torch.contiguous_format: second-order gradient (mode 2)"),
    "upfirdn2d": (upfirdn2d, RefUpfirdn2dPlugin, WrongUpfirdn2dPlugin, _upfirdn2d_op,
                  "downsample2d 4 taps (D, resnet shortcut), torch.float32 torch.contiguous_format: forward"),
}
CASES = {"bias_act": 96, "upfirdn2d": 24}  # comparisons per check: float32 and float16, see the ops' case tables


@pytest.fixture
def fresh(monkeypatch):
    """self_check as in a new process: nothing checked yet, the switch unset."""
    monkeypatch.setattr(self_check, "_usable", {})
    monkeypatch.setattr(self_check, "_results", {})
    monkeypatch.delenv(self_check.ENV_SWITCH, raising=False)


def _install(monkeypatch, name, plugin):
    """Make `plugin` the op's loaded plugin, serving CPU tensors."""
    module = OPS[name][0]
    monkeypatch.setattr(module, "_plugin", plugin)
    monkeypatch.setattr(module, "_plugin_checked", True)
    monkeypatch.setattr(module, "_PLUGIN_DEVICE_TYPE", "cpu")


def _value_and_grad(op, impl="cuda"):
    x = torch.randn([2, 4, 8, 8], generator=torch.Generator().manual_seed(1), requires_grad=True)
    y = op(x, impl)
    (g,) = torch.autograd.grad((y * y).sum(), x)
    return y.detach(), g


def _self_check_warnings(records):
    return [str(r.message) for r in records if issubclass(r.category, self_check.SelfCheckWarning)]


@pytest.mark.parametrize("name", list(OPS))
def test_correct_plugin_passes_and_is_used(name, fresh, monkeypatch):
    plugin = OPS[name][1]()
    _install(monkeypatch, name, plugin)
    rng_state = torch.random.get_rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter("error", self_check.SelfCheckWarning)
        _value_and_grad(OPS[name][3])
        checked = plugin.calls
        _value_and_grad(OPS[name][3])
    assert plugin.calls > checked  # the op uses the plugin after the check, and checks only once
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # the check has its own generator
    result = self_check.last_results()[f"{name}@cpu"]
    assert result.ok and result.op == name and result.device == "cpu" and result.cases == CASES[name]
    assert result.max_error <= result.tolerance and result.seconds > 0


@pytest.mark.parametrize("name", list(OPS))
def test_wrong_plugin_warns_once_and_the_op_falls_back(name, fresh, monkeypatch):
    _module, _, wrong, op, case = OPS[name]
    plugin = wrong()
    _install(monkeypatch, name, plugin)
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        y, g = _value_and_grad(op)
        checked = plugin.calls
        y2, g2 = _value_and_grad(op)
    messages = _self_check_warnings(records)
    assert len(messages) == 1, messages
    assert messages[0].startswith(f"{name}: ") and case in messages[0] and "> tolerance 0.0001" in messages[0]
    assert f"{self_check.ENV_SWITCH}=error" in messages[0]
    assert plugin.calls == checked  # the plugin is not used after the failed check
    y_ref, g_ref = _value_and_grad(op, impl="ref")  # for these two ops impl='cuda' without a plugin is this path
    for got in (y, y2):
        assert torch.equal(got, y_ref)
    for got in (g, g2):
        assert torch.equal(got, g_ref)
    result = self_check.last_results()[f"{name}@cpu"]
    assert not result.ok and result.worst_case == case
    assert 10 * result.tolerance < result.max_error <= 0.0101 and result.tolerance == 1e-4


@pytest.mark.parametrize("name", list(OPS))
def test_error_switch_raises(name, fresh, monkeypatch):
    _install(monkeypatch, name, OPS[name][2]())
    monkeypatch.setenv(self_check.ENV_SWITCH, "error")
    with pytest.raises(RuntimeError, match="failed its self-check") as info:
        _value_and_grad(OPS[name][3])
    assert OPS[name][4] in str(info.value)


@pytest.mark.parametrize("name", list(OPS))
def test_off_switch_skips_the_check(name, fresh, monkeypatch):
    plugin = OPS[name][2]()
    _install(monkeypatch, name, plugin)
    monkeypatch.setenv(self_check.ENV_SWITCH, "off")
    with warnings.catch_warnings():
        warnings.simplefilter("error", self_check.SelfCheckWarning)
        _value_and_grad(OPS[name][3])
    assert plugin.calls > 0 and self_check.last_results() == {}


def test_unknown_switch_value_is_an_error(fresh, monkeypatch):
    _install(monkeypatch, "bias_act", RefBiasActPlugin())
    monkeypatch.setenv(self_check.ENV_SWITCH, "maybe")
    with pytest.raises(ValueError, match=self_check.ENV_SWITCH):
        _value_and_grad(_bias_act_op)


@pytest.mark.parametrize("name", list(OPS))
def test_check_plugin_reports_each_call(name, fresh):
    """The API the gpu-check calls: a direct check, kept in last_results(); every case and dtype within tolerance."""
    result = self_check.check_plugin(name, OPS[name][1](), "cpu")
    assert result.ok and result.cases == CASES[name]
    assert result.tolerance in self_check.TOLERANCES.values()
    assert self_check.last_results() == {f"{name}@cpu": result}
