"""Adversarial objectives: the logistic loss, the rooted logistic objective (RLO, arXiv 2310.03890), the hinge loss
and the least squares (LSGAN) loss, plus a rooted cross-entropy for multiclass classification. This module owns the
math; the GAN loss only calls it, through the three terms of an `Objective`.

Every objective has a margin loss l (its `function`): D real l(D(x)), D fake l(-D(G(z))). The G term is l(D(G(z)))
for the logistic and rooted objectives (non-saturating), -D(G(z)) for the hinge loss and D(G(z))^2 / 2 for least
squares:

| objective | l(z)                     | D real + D fake                          | G                  |
| logistic  | softplus(-z)             | softplus(-D(x)) + softplus(D(G(z)))      | softplus(-D(G(z))) |
| rooted:K  | k((1 + e^-z)^(1/k) - 1)  | l(D(x)) + l(-D(G(z)))                    | l(D(G(z)))         |
| hinge     | relu(1 - z)              | relu(1 - D(x)) + relu(1 + D(G(z)))       | -D(G(z))           |
| lsgan     | (z - 1)^2 / 2            | (D(x) - 1)^2 / 2 + (D(G(z)) + 1)^2 / 2   | D(G(z))^2 / 2      |

Least squares uses the LSGAN paper's (Mao et al. 2017) labels a = -1 (fake), b = 1 (real), c = 0 (what G wants D
to say), with its 1/2 factors: the scheme b - c = 1, b - a = 2 under which the game minimizes the Pearson chi^2
divergence, and whose labels sit symmetrically around 0, so the sign of D's output means real/fake as for the other
objectives (ADA's overfitting heuristic reads that sign). The paper's other scheme, a = 0, b = c = 1, would put
every real image's optimal output in [0, 1], positive, and drive ADA's p up regardless of overfitting.

Numerics shared by every function here:
- The rooted value k * ((1 + e^-z)^(1/k) - 1) is computed as k * expm1(u) with u = softplus(-z) / k, which is accurate
  to a few ulps for every z (no 1 + tiny cancellation, no overflow of e^-z).
- Beyond u = ROOT_EXP_LIMIT (= 20) the exact value grows like k * e^u and would overflow (u reaches 2e6 for
  z = -1e6, k = 0.5). There we continue the function linearly in u from its tangent at the limit:
  k * (expm1(T) + e^T * (u - T)). The continuation is C1, keeps the function finite, decreasing and convex in z
  (a nondecreasing convex function of the convex softplus), and caps the gradient magnitude at
  e^T * sigmoid(-z) <= e^20 ~ 4.9e8, which is the exact gradient's magnitude at the limit -- so a wrong-side
  logit always gets a finite, strictly negative gradient, for any k in K_RANGE (values stay finite while
  4.9e8 * |z| does, i.e. |z| < 7e29 in float32).
- k is limited to K_RANGE = [1e-3, 1e7]: every k in it gives finite values and gradients in float32 for every finite
  logit below 7e29 in magnitude, while k = 1e308 rounds to inf in float32 (NaN losses) and k = 1e-300 to 0 (every
  gradient non-finite). Beyond 1e7 the objective is the logistic loss to float32 precision.
- float16/bfloat16 inputs are computed in float32 and the result is returned in float32 (as autocast does for
  losses): the values easily exceed the float16 range (k * e^20 for k = 1 is 4.9e8).
- The hinge terms are finite with finite gradients (0 or +-1) for every finite logit. The least squares values are
  squares: in float32 they overflow to inf past |z| ~ 2.6e19, but their gradients (z - 1, z + 1, z) stay finite for
  every finite logit.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import torch
import torch.nn.functional as F

from stylegan_rlo.errors import UserError

OBJECTIVES = ("logistic", "rooted", "hinge", "lsgan")
DEFAULT_K = 8.0  # the root used when 'rooted' is given without one
K_MIN, K_MAX = 1e-3, 1e7  # K_RANGE: see the module docstring
K_RANGE = (K_MIN, K_MAX)
CROSS_ENTROPY_FORMS = ("rlo", "paper")
REDUCTIONS = ("mean", "sum", "none")

ROOT_EXP_LIMIT = 20.0  # u = softplus(-z)/k beyond which rooted values are continued linearly (see module doc)
_EXP_LIMIT = math.exp(ROOT_EXP_LIMIT)
_SOFTPLUS_LINEAR_FROM = 40.0  # log(1 + e^x) == x to float64 precision beyond this (e^-40 = 4e-18)


def _as_compute_dtype(x: torch.Tensor) -> torch.Tensor:
    """Half precision and integer inputs are promoted (to float32 / the default float dtype); float32/64 kept."""
    if x.dtype in (torch.float16, torch.bfloat16):
        return x.float()
    if not x.is_floating_point():
        return x.to(torch.get_default_dtype())
    return x


def check_k(k: float) -> float:
    """Validate the root k: a number in K_RANGE (outside it float32 training overflows or underflows; see above)."""
    try:
        k = float(k)
    except (TypeError, ValueError):
        raise ObjectiveError(f"the root k must be a number, got {k!r}") from None
    if not K_MIN <= k <= K_MAX:  # also refuses nan and inf
        raise ObjectiveError(f"the root k must lie in [{K_MIN:g}, {K_MAX:g}], got {k!r}; beyond {K_MAX:g} the "
                             f"rooted objective equals the logistic loss to float32 precision (use 'logistic'), "
                             f"and below {K_MIN:g} it is its linear continuation almost everywhere")
    return k


class ObjectiveError(UserError, ValueError):
    """A bad objective name or root k (also a ValueError, as torch's own loss modules raise for bad arguments)."""


def _rooted_from_nll(nll: torch.Tensor, k: float) -> torch.Tensor:
    """k * (e^(nll/k) - 1) for a nonnegative negative log-likelihood, with the linear continuation past the limit."""
    u = nll / k
    past = u > ROOT_EXP_LIMIT  # one mask for both parts, so the gradient is right exactly at the limit too
    exact = k * torch.expm1(torch.where(past, torch.full_like(u, ROOT_EXP_LIMIT), u))
    # Past the limit the tangent line takes over; written in nll (not u) so a tiny k cannot overflow it.
    excess = torch.where(past, nll - k * ROOT_EXP_LIMIT, torch.zeros_like(nll))
    return exact + _EXP_LIMIT * excess


def _softplus_neg(z: torch.Tensor) -> torch.Tensor:
    """softplus(-z) to full float64 accuracy: torch's default switch to the identity at 20 is off by up to 2e-9."""
    return F.softplus(-_as_compute_dtype(z), threshold=_SOFTPLUS_LINEAR_FROM)


def logistic(z: torch.Tensor) -> torch.Tensor:
    """The logistic loss softplus(-z) = log(1 + e^-z), elementwise (half precision computed and returned in float32)."""
    return _softplus_neg(z)


def rooted_logistic(z: torch.Tensor, k: float) -> torch.Tensor:
    """The rooted logistic objective k * ((1 + e^-z)^(1/k) - 1), elementwise, for k in K_RANGE.

    Computed as k * expm1(softplus(-z) / k); past softplus(-z)/k = 20 it continues linearly in softplus(-z)/k
    (finite, decreasing, convex, gradient magnitude capped at e^20; see the module docstring). Tends to
    softplus(-z) as k -> infinity. Half precision inputs are computed and returned in float32.
    """
    k = check_k(k)
    return _rooted_from_nll(_softplus_neg(z), k)


def hinge(z: torch.Tensor) -> torch.Tensor:
    """The hinge loss relu(1 - z), elementwise (half precision computed and returned in float32)."""
    return F.relu(1 - _as_compute_dtype(z))


def least_squares(z: torch.Tensor) -> torch.Tensor:
    """The least squares margin loss (z - 1)^2 / 2, elementwise: LSGAN's D terms with labels real 1, fake -1."""
    return torch.square(_as_compute_dtype(z) - 1) / 2


def hinge_generator(z: torch.Tensor) -> torch.Tensor:
    """The hinge loss's G term -D(G(z)), elementwise."""
    return -_as_compute_dtype(z)


def least_squares_generator(z: torch.Tensor) -> torch.Tensor:
    """LSGAN's G term (D(G(z)) - c)^2 / 2 with c = 0, elementwise."""
    return torch.square(_as_compute_dtype(z)) / 2


# The G terms that are not the margin loss itself (logistic and rooted use l(D(G(z))), the non-saturating form).
_GENERATOR_TERMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "hinge": hinge_generator, "lsgan": least_squares_generator}


@dataclasses.dataclass(frozen=True)
class Objective:
    """One adversarial objective, the value every layer passes on: 'logistic', 'hinge', 'lsgan', or 'rooted' with
    its root k. The GAN loss calls its three terms: discriminator_real, discriminator_fake and generator.

    Written as 'logistic', 'hinge', 'lsgan', 'rooted' (k = DEFAULT_K) or 'rooted:K' (see parse and spec).
    """
    name: str
    k: float | None = None

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            raise ObjectiveError(f"unknown objective {self.name!r}: expected one of {', '.join(OBJECTIVES)}, "
                                 f"optionally with a root for rooted (e.g. rooted:8)")
        if self.name != "rooted" and self.k is not None:
            raise ObjectiveError(f"k={self.k:g} only applies to the rooted objective (the {self.name} loss has no "
                                 f"root); drop k or use rooted")
        if self.name == "rooted":
            object.__setattr__(self, "k", check_k(DEFAULT_K if self.k is None else self.k))

    @classmethod
    def parse(cls, text: str | Objective) -> Objective:
        """'logistic', 'rooted' or 'rooted:2.5' (also an Objective, returned as it is)."""
        if isinstance(text, Objective):
            return text
        name, colon, k_text = str(text).strip().partition(":")
        if not colon:
            return cls(name)
        try:
            k = float(k_text)
        except ValueError:
            raise ObjectiveError(f"objective {text!r}: the root must be a number, as in rooted:8") from None
        return cls(name, k)

    @property
    def spec(self) -> str:
        """The text parse reads back: 'logistic' or 'rooted:8'."""
        return self.name if self.k is None else f"{self.name}:{self.k:g}"

    @property
    def label(self) -> str:
        """For people: 'logistic' or 'rooted k=8'."""
        return self.name if self.k is None else f"{self.name} k={self.k:g}"

    @property
    def slug(self) -> str:
        """For file and run names: 'logistic' or 'rooted8'."""
        return self.name if self.k is None else f"{self.name}{self.k:g}"

    @property
    def function(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The elementwise margin loss l(z): D real l(D(x)), D fake l(-D(G(z))) (also a binary classifier's loss)."""
        if self.name == "rooted":
            return functools.partial(rooted_logistic, k=self.k)
        return {"logistic": logistic, "hinge": hinge, "lsgan": least_squares}[self.name]

    def discriminator_real(self, logits: torch.Tensor) -> torch.Tensor:
        """D's per-sample loss on real images, l(D(x))."""
        return self.function(logits)

    def discriminator_fake(self, logits: torch.Tensor) -> torch.Tensor:
        """D's per-sample loss on generated images, l(-D(G(z)))."""
        return self.function(-logits)

    def generator(self, logits: torch.Tensor) -> torch.Tensor:
        """G's per-sample loss on D(G(z)): l(D(G(z))), or the hinge / least squares G term."""
        return _GENERATOR_TERMS.get(self.name, self.function)(logits)


def get_objective(name: str, k: float | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The per-element margin loss for `name` in OBJECTIVES ('rooted' needs k; k is ignored for the others)."""
    if name == "rooted" and k is None:
        raise ObjectiveError("objective 'rooted' needs a root k (e.g. k=8)")
    return Objective(name, k if name == "rooted" else None).function


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> str:
    """Validate a string option against its allowed values."""
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}: expected one of {', '.join(choices)}")
    return value


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    """Apply a torch-style reduction ('mean', 'sum' or 'none')."""
    _check_choice("reduction", reduction, REDUCTIONS)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def rooted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, k: float, form: str = "rlo", m: float = 1.0,
                         reduction: str = "mean") -> torch.Tensor:
    """Rooted multiclass loss from log-softmax of `logits` [N, C, *] at class indices `target` [N, *].

    form 'rlo':   k * (p_y^(-1/k) - 1), the multiclass RLO (two classes: rooted_logistic of the logit difference);
    form 'paper': m * (1 - p_y^(1/k)), the bounded form of the paper's classification code.
    """
    k = check_k(k)
    _check_choice("rooted cross-entropy form", form, CROSS_ENTROPY_FORMS)
    _check_choice("reduction", reduction, REDUCTIONS)
    if logits.ndim < 2:
        raise ValueError(f"rooted_cross_entropy: logits must be [N, C, ...], got shape {tuple(logits.shape)}")
    if target.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"rooted_cross_entropy: target must hold integer class indices, got dtype {target.dtype}")
    expected = (logits.shape[0],) + tuple(logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(f"rooted_cross_entropy: target shape {tuple(target.shape)} does not match logits "
                         f"{tuple(logits.shape)} (expected {expected})")
    num_classes = logits.shape[1]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise ValueError(f"rooted_cross_entropy: target class indices must lie in [0, {num_classes - 1}], "
                         f"got range [{int(target.min())}, {int(target.max())}]")
    log_p = torch.log_softmax(_as_compute_dtype(logits), dim=1)
    log_p_y = log_p.gather(1, target.long().unsqueeze(1)).squeeze(1)
    if form == "rlo":
        loss = _rooted_from_nll(-log_p_y, k)
    else:
        loss = -float(m) * torch.expm1(log_p_y / k)
    return _reduce(loss, reduction)


class LogisticLoss(torch.nn.Module):
    """Module form of `logistic`, reduced like torch losses ('mean', 'sum' or 'none')."""

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = _check_choice("reduction", reduction, REDUCTIONS)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return _reduce(logistic(z), self.reduction)


class RootedLogisticLoss(torch.nn.Module):
    """Module form of `rooted_logistic` with a fixed root k, reduced like torch losses."""

    def __init__(self, k: float, reduction: str = "mean"):
        super().__init__()
        self.k = check_k(k)
        self.reduction = _check_choice("reduction", reduction, REDUCTIONS)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return _reduce(rooted_logistic(z, self.k), self.reduction)

    def extra_repr(self) -> str:
        return f"k={self.k}, reduction={self.reduction!r}"


class RootedCrossEntropyLoss(torch.nn.Module):
    """Module form of `rooted_cross_entropy`: forward(logits [N, C, *], target [N, *])."""

    def __init__(self, k: float, form: str = "rlo", m: float = 1.0, reduction: str = "mean"):
        super().__init__()
        self.k = check_k(k)
        self.form = _check_choice("rooted cross-entropy form", form, CROSS_ENTROPY_FORMS)
        self.m = float(m)
        self.reduction = _check_choice("reduction", reduction, REDUCTIONS)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return rooted_cross_entropy(logits, target, self.k, form=self.form, m=self.m, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"k={self.k}, form={self.form!r}, m={self.m}, reduction={self.reduction!r}"
