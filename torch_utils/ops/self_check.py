"""Self-check of the compiled plugins (bias_act, upfirdn2d) on first use.

The first time an op would use its plugin on a device, `plugin_usable` runs the op's check cases there: the plugin's
entry points on small random inputs against the op's PyTorch path in float64 on the same (rounded) inputs, in
float32 and float16. Each op declares its cases (with `register`, at import) as comparisons
(description, plugin result, float64 reference, elements to compare or None):

- bias_act: every activation with its default gain and no clamp, and with gain 1.5 and clamp 1; kernel modes 0, 1
  and 2, which are what the forward, the first-order and the second-order gradient call;
- upfirdn2d: the configurations StyleGAN2 and the ADA pipeline use (up 2 / down 2 / filter only, their paddings, the
  12-tap separable filter, a flipped filter, cropping), each forward and in the configuration its gradient calls.
  The op is linear, so its gradient is this transposed call and its second-order gradient is the same call again.

The error of a comparison is max |plugin - reference| / max(1, max |reference|): absolute for results of magnitude
up to 1, relative to the largest value beyond. A plugin passes when every error is within its dtype's TOLERANCES
entry. On a failure the op uses its PyTorch path for the rest of the process, after one warning that names the op,
the worst case and its error; the environment variable STYLEGAN_RLO_SELF_CHECK chooses: `warn` (default), `error`
(raise RuntimeError instead) or `off` (no check: for benchmarking only). See docs/custom-ops.md.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from typing import Any, Callable, Iterable

import torch

ENV_SWITCH = "STYLEGAN_RLO_SELF_CHECK"
MODES = ("warn", "error", "off")

# A correct kernel built with --use_fast_math stays well inside these; the largest error the first GPU run measured
# was 3e-5 (float32 tanh second-order gradient). float16 results are rounded to 11 significant bits.
TOLERANCES = {torch.float32: 1e-4, torch.float16: 1e-2}
DTYPES = ((torch.float32, torch.contiguous_format), (torch.float16, torch.channels_last))  # what the cases run in

# One comparison: (case description, plugin result, float64 reference, mask of the elements to compare or None).
Comparison = tuple[str, torch.Tensor, torch.Tensor, torch.Tensor | None]
CheckCases = Callable[[Any, torch.device], Iterable[Comparison]]


class SelfCheckWarning(UserWarning):
    """Category of the warning that a plugin failed its self-check, so that it can be filtered."""


@dataclasses.dataclass(frozen=True)
class SelfCheckResult:
    """The outcome of one op's self-check on one device."""
    op: str
    device: str
    ok: bool
    worst_case: str    # the comparison with the largest error / tolerance
    max_error: float   # its error (inf for a wrong shape or a non-finite result)
    tolerance: float   # its dtype's tolerance
    seconds: float     # wall time of the whole check, results synchronised
    cases: int         # comparisons run


_CASES: dict[str, CheckCases] = {}
_usable: dict[tuple[str, torch.device], bool] = {}   # decisions of this process, per (op, device)
_results: dict[str, SelfCheckResult] = {}            # "op@device" -> the latest result


def register(op: str, cases: CheckCases) -> None:
    """Declare the check cases of `op`: cases(plugin, device) yields Comparisons."""
    _CASES[op] = cases


def last_results() -> dict[str, SelfCheckResult]:
    """The latest result per op and device, keyed "op@device" (e.g. "bias_act@cuda:0")."""
    return dict(_results)


def _error(got: torch.Tensor, ref: torch.Tensor, keep: torch.Tensor | None) -> float:
    if got.shape != ref.shape:
        return math.inf
    diff = (got.double() - ref).abs()
    if keep is not None:
        diff, ref = diff[keep], ref[keep]
    if diff.numel() == 0:
        return 0.0
    error = float(diff.max()) / max(1.0, float(ref.abs().max()))
    return error if math.isfinite(error) else math.inf


def check_plugin(name: str, plugin: Any, device: torch.device | str) -> SelfCheckResult:
    """Run op `name`'s check cases for `plugin` on `device`; the result is also kept for last_results()."""
    device = torch.device(device)
    start = time.perf_counter()
    worst = ("", 0.0, TOLERANCES[torch.float32])
    count = 0
    with torch.inference_mode(False), torch.enable_grad():  # the references take gradients
        for case, got, ref, keep in _CASES[name](plugin, device):
            error, tolerance = _error(got, ref, keep), TOLERANCES[got.dtype]
            if count == 0 or error / tolerance > worst[1] / worst[2]:
                worst = (case, error, tolerance)
            count += 1
    result = SelfCheckResult(op=name, device=str(device), ok=worst[1] <= worst[2], worst_case=worst[0],
                             max_error=worst[1], tolerance=worst[2], seconds=time.perf_counter() - start, cases=count)
    _results[f"{name}@{device}"] = result
    return result


def _mode() -> str:
    mode = os.environ.get(ENV_SWITCH, "warn").strip().lower() or "warn"
    if mode not in MODES:
        raise ValueError(f"{ENV_SWITCH}={os.environ[ENV_SWITCH]!r} is not understood; use warn, error or off")
    return mode


def plugin_usable(op: str, plugin: Any, device: torch.device) -> bool:
    """Whether `op` may use `plugin` on `device`: checked the first time per (op, device), then remembered."""
    key = (op, device)
    if key not in _usable:
        _usable[key] = _decide(op, plugin, device)
    return _usable[key]


def _decide(op: str, plugin: Any, device: torch.device) -> bool:
    mode = _mode()
    if mode == "off":
        return True
    result = check_plugin(op, plugin, device)
    if result.ok:
        return True
    message = (f"{op}: the compiled plugin on {result.device} failed its self-check against the PyTorch path: "
               f"{result.worst_case}: error {result.max_error:.3g} > tolerance {result.tolerance:g} "
               f"(max |difference| / max(1, max |reference|); {result.cases} comparisons, {result.seconds:.2f} s)")
    if mode == "error":
        raise RuntimeError(f"{message}. Unset {ENV_SWITCH} (or set it to warn) to fall back to the PyTorch path.")
    warnings.warn(f"{message}. {op} uses its PyTorch path for the rest of this process (slower, correct); set "
                  f"{ENV_SWITCH}=error to make this an error.", SelfCheckWarning, stacklevel=5)  # the op's caller
    return False
