"""Tests for stylegan_rlo.objectives against high-precision (decimal) and float64 references."""

from __future__ import annotations

import decimal
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stylegan_rlo import objectives as obj
from stylegan_rlo.errors import UserError

RANGE = r"must lie in \[0.001, 1e\+07\]"  # the message of a root outside obj.K_RANGE

KS = [0.1, 0.5, 1.0, 2.0, 5.0, 8.0, 10.0, 100.0, 1e3, 1e7]
LIMIT = obj.ROOT_EXP_LIMIT
F32_TINY = torch.finfo(torch.float32).tiny

_CTX = decimal.Context(prec=60, Emax=10**9, Emin=-(10**9))


def _series(x: decimal.Decimal, sign: int) -> decimal.Decimal:
    """Taylor sum of e^x - 1 (sign=+1) or ln(1 + x) (sign=-1) for |x| < 1e-6: eight terms are far past 60 digits."""
    total, term = decimal.Decimal(0), decimal.Decimal(1)
    for n in range(1, 9):
        term = term * x
        total += term / math.factorial(n) if sign > 0 else term * (-1) ** (n + 1) / n
    return _CTX.plus(total)


def _expm1_dec(x: decimal.Decimal) -> decimal.Decimal:
    return _series(x, +1) if abs(x) < decimal.Decimal("1e-6") else _CTX.exp(x) - 1


def _softplus_neg_dec(z: float) -> decimal.Decimal:
    """softplus(-z) = ln(1 + e^-z) in 60-digit decimal arithmetic (series where e^-z is tiny)."""
    e = _CTX.exp(decimal.Decimal(-z))
    return _series(e, -1) if e < decimal.Decimal("1e-6") else _CTX.ln(_CTX.add(1, e))


def ref_rooted(z: float, k: float) -> tuple[float, float]:
    """(reference value, u = softplus(-z)/k): the exact formula below the limit, the documented tangent line above."""
    s = _softplus_neg_dec(z)
    kd = decimal.Decimal(k)
    u = _CTX.divide(s, kd)
    if u <= LIMIT:
        value = kd * _expm1_dec(u)
    else:
        t = decimal.Decimal(LIMIT)
        value = kd * _expm1_dec(t) + _CTX.exp(t) * (s - kd * t)
    return float(value), float(u)


def ref_grad(z: np.ndarray, k: float) -> np.ndarray:
    """Analytic derivative -sigmoid(-z) * exp(min(softplus(-z)/k, limit)) in float64."""
    s = np.logaddexp(0.0, -z)
    sigmoid_neg = np.exp(-z - s)  # sigmoid(-z) = e^-z / (1 + e^-z)
    return -sigmoid_neg * np.exp(np.minimum(s / k, LIMIT))


def _z_grid() -> np.ndarray:
    mags = np.concatenate([[0.0], np.logspace(-4, 6, 61)])
    return np.unique(np.concatenate([-mags, mags, [-20.0, -19.99, 20.0, 88.0, 100.0]]))


# ---------------------------------------------------------------------------------------------------------------------
# Accuracy against the decimal reference

@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-5), (torch.float64, 1e-9)])
def test_rooted_matches_decimal_reference(k, dtype, rtol):
    z = _z_grid()
    refs = [ref_rooted(float(zi), k) for zi in z]
    ref = np.array([r[0] for r in refs])
    u = np.array([r[1] for r in refs])
    got = obj.rooted_logistic(torch.tensor(z, dtype=dtype), k).double().numpy()
    assert got.dtype == np.float64 and np.isfinite(got).all()
    exact = u <= LIMIT
    tiny = F32_TINY if dtype == torch.float32 else torch.finfo(torch.float64).tiny
    err = np.abs(got - ref)
    bad = exact & (err > rtol * np.abs(ref) + tiny)
    assert not bad.any(), f"k={k}: z={z[bad][:5]} got={got[bad][:5]} ref={ref[bad][:5]}"
    # Past the limit the documented tangent-line continuation holds too (looser: it is a long sum in float32).
    far = ~exact
    assert np.allclose(got[far], ref[far], rtol=1e-4, atol=0), f"k={k}: continuation differs"


def test_rooted_k1_is_exp_and_value_at_zero():
    """Independent closed forms: k = 1 gives e^-z; z = 0 gives k (2^(1/k) - 1)."""
    z = torch.linspace(-19.0, 60.0, 301, dtype=torch.float64)
    assert torch.allclose(obj.rooted_logistic(z, 1.0), torch.exp(-z), rtol=1e-12, atol=0)
    for k in KS:
        want = k * (2.0 ** (1.0 / k) - 1.0) if k < 1e3 else math.log(2.0)
        got = obj.rooted_logistic(torch.zeros((), dtype=torch.float64), k).item()
        assert got == pytest.approx(want, rel=1e-6 if k < 1e3 else 1e-3)


def test_rooted_matches_naive_power_form_where_it_is_well_conditioned():
    z = torch.linspace(-30.0, 3.0, 200, dtype=torch.float64)
    for k in [0.5, 1.0, 2.0, 8.0, 10.0]:
        naive = k * ((1.0 + torch.exp(-z)) ** (1.0 / k) - 1.0)
        live = torch.log1p(torch.exp(-z)) / k <= LIMIT
        assert torch.allclose(obj.rooted_logistic(z, k)[live], naive[live], rtol=1e-10, atol=0)


def test_logistic_is_softplus_of_minus_z():
    z = _z_grid()
    got = obj.logistic(torch.tensor(z, dtype=torch.float64)).numpy()
    ref = np.array([float(_softplus_neg_dec(float(zi))) for zi in z])
    assert np.allclose(got, ref, rtol=1e-12, atol=1e-300)


@settings(max_examples=200, deadline=None)
@given(z=st.floats(-1000.0, 80.0))
def test_huge_k_agrees_with_logistic(z):
    zt = torch.tensor([z], dtype=torch.float32)
    a = obj.rooted_logistic(zt, 1e7).item()
    b = obj.logistic(zt).item()
    assert abs(a - b) <= 1e-4 * abs(b) + F32_TINY


# ---------------------------------------------------------------------------------------------------------------------
# Gradients

@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_gradient_matches_analytic(k, dtype, rtol):
    z = _z_grid()
    zt = torch.tensor(z, dtype=dtype, requires_grad=True)
    (g,) = torch.autograd.grad(obj.rooted_logistic(zt, k).sum(), zt)
    g = g.double().numpy()
    ref = ref_grad(z, k)
    assert np.isfinite(g).all()
    tiny = F32_TINY if dtype == torch.float32 else torch.finfo(torch.float64).tiny
    bad = np.abs(g - ref) > rtol * np.abs(ref) + tiny
    assert not bad.any(), f"k={k}: z={z[bad][:5]} grad={g[bad][:5]} ref={ref[bad][:5]}"
    # Strictly negative wherever sigmoid(-z) is representable: always on the wrong side (z <= 0).
    assert (g[z <= 50] < 0).all()


@pytest.mark.parametrize("k", [0.3, 2.0, 8.0])
def test_gradcheck_including_the_continuation(k):
    z = torch.tensor([-1e4, -300.0, -45.0, -3.0, 0.0, 0.7, 9.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: obj.rooted_logistic(x, k), (z,))
    assert torch.autograd.gradgradcheck(lambda x: obj.rooted_logistic(x, k), (z,))


def test_gradient_exactly_at_the_limit_is_not_zero():
    """u == limit exactly (k = 1, z = -20 in float32) sits on the seam between the two pieces."""
    z = torch.tensor([-20.0], requires_grad=True)
    assert (obj.rooted_logistic(z, 1.0) / 1.0).item() == pytest.approx(math.expm1(20.0), rel=1e-6)
    (g,) = torch.autograd.grad(obj.rooted_logistic(z, 1.0).sum(), z)
    assert g.item() == pytest.approx(-math.exp(20.0), rel=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# Shape properties (hypothesis)

K_STRAT = st.floats(1e-3, 1e7)
Z_STRAT = st.floats(-1e6, 1e6)


@settings(max_examples=300, deadline=None)
@given(a=Z_STRAT, b=Z_STRAT, k=K_STRAT)
def test_monotone_decreasing(a, b, k):
    lo, hi = min(a, b), max(a, b)
    for dtype in (torch.float32, torch.float64):
        v = obj.rooted_logistic(torch.tensor([lo, hi], dtype=dtype), k)
        assert torch.isfinite(v).all() and (v >= 0).all()
        assert v[0] >= v[1]


@settings(max_examples=300, deadline=None)
@given(a=Z_STRAT, b=Z_STRAT, k=K_STRAT)
def test_convex(a, b, k):
    z = torch.tensor([a, (a + b) / 2, b], dtype=torch.float64)
    v = obj.rooted_logistic(z, k)
    assert v[1] <= (v[0] + v[2]) / 2 * (1 + 1e-12) + 1e-300


@settings(max_examples=300, deadline=None)
@given(z=Z_STRAT, k=K_STRAT)
def test_finite_values_and_gradients_at_extreme_logits(z, k):
    for dtype in (torch.float32, torch.float64):
        zt = torch.tensor([z], dtype=dtype, requires_grad=True)
        v = obj.rooted_logistic(zt, k)
        (g,) = torch.autograd.grad(v.sum(), zt)
        assert torch.isfinite(v).all() and torch.isfinite(g).all()
        assert g.item() <= 0
        if z <= 0:
            assert g.item() < 0
            # The slope never exceeds the cap e^limit nor falls below the logistic slope sigmoid(-z) >= 1/2.
            assert 0.5 * (1 - 1e-6) <= -g.item() <= math.exp(LIMIT) * (1 + 1e-6)


@settings(max_examples=100, deadline=None)
@given(z=st.floats(-60.0, 60.0), k1=st.floats(0.1, 1e4), k2=st.floats(0.1, 1e4))
def test_decreasing_in_k_toward_logistic(z, k1, k2):
    """k (e^(s/k) - 1) decreases in k and stays above its limit s = softplus(-z)."""
    lo, hi = min(k1, k2), max(k1, k2)
    zt = torch.tensor([z], dtype=torch.float64)
    a, b = obj.rooted_logistic(zt, lo).item(), obj.rooted_logistic(zt, hi).item()
    s = obj.logistic(zt).item()
    assert a >= b * (1 - 1e-12) and b >= s * (1 - 1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k", [0.5, 2.0, 8.0, 1e7])
def test_half_precision_inputs_computed_in_float32(dtype, k):
    big = min(torch.finfo(dtype).max, 1e6)  # the required range; float16 tops out at 65504
    z = torch.tensor([-big, -1000.0, -30.0, -2.5, 0.0, 1.5, 30.0, big]).to(dtype)
    out = obj.rooted_logistic(z, k)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    zr = z.double().numpy()
    for zi, got in zip(zr, out.numpy()):
        ref, u = ref_rooted(float(zi), k)
        if u <= LIMIT:
            assert abs(got - ref) <= 1e-5 * abs(ref) + F32_TINY
    assert obj.logistic(z).dtype == torch.float32
    zg = z.clone().requires_grad_(True)
    obj.rooted_logistic(zg, k).sum().backward()
    assert zg.grad.dtype == dtype
    if dtype == torch.bfloat16:  # float16 cannot hold slopes up to e^20; bfloat16 can
        assert torch.isfinite(zg.grad).all() and (zg.grad[:4] < 0).all()


@settings(max_examples=200, deadline=None)
@given(a=Z_STRAT, b=Z_STRAT, k=K_STRAT, dtype=st.sampled_from([torch.float16, torch.bfloat16]))
def test_half_precision_properties(a, b, k, dtype):
    """Half inputs (clipped to the dtype's range) give exactly the float32 result of the rounded input:
    finite, nonnegative and decreasing (rounding to half keeps the order of the inputs)."""
    big = torch.finfo(dtype).max
    z = torch.tensor(sorted([a, b]), dtype=torch.float64).clamp(-big, big).to(dtype)
    v = obj.rooted_logistic(z, k)
    assert v.dtype == torch.float32
    assert torch.equal(v, obj.rooted_logistic(z.float(), k))
    assert torch.isfinite(v).all() and (v >= 0).all() and v[0] >= v[1]


def test_integer_input_is_promoted():
    out = obj.rooted_logistic(torch.tensor([-2, 0, 3]), 2.0)
    assert out.dtype == torch.get_default_dtype()
    assert torch.allclose(out, obj.rooted_logistic(torch.tensor([-2.0, 0.0, 3.0]), 2.0))


# ---------------------------------------------------------------------------------------------------------------------
# get_objective

def test_get_objective():
    z = torch.linspace(-5, 5, 11)
    assert torch.equal(obj.get_objective("logistic")(z), torch.nn.functional.softplus(-z))
    assert torch.equal(obj.get_objective("logistic", k=8)(z), torch.nn.functional.softplus(-z))
    assert torch.equal(obj.get_objective("rooted", k=8)(z), obj.rooted_logistic(z, 8))
    assert torch.equal(obj.get_objective("hinge", k=8)(z), torch.clamp(1 - z, min=0))
    assert torch.equal(obj.get_objective("lsgan")(z), (z - 1) ** 2 / 2)
    assert set(obj.OBJECTIVES) == {"logistic", "rooted", "hinge", "lsgan"}


@pytest.mark.parametrize("name,k,match", [
    ("bogus", None, "unknown objective 'bogus'"),
    ("rooted", None, "needs a root k"),
    ("rooted", 0.0, RANGE),
    ("rooted", -2.0, RANGE),
    ("rooted", float("inf"), "use 'logistic'"),
    ("rooted", "eight", "k must be a number"),
])
def test_get_objective_errors(name, k, match):
    with pytest.raises(ValueError, match=match):
        obj.get_objective(name, k)


def test_rooted_logistic_rejects_bad_k():
    with pytest.raises(ValueError, match=RANGE):
        obj.rooted_logistic(torch.zeros(3), float("nan"))


# ---------------------------------------------------------------------------------------------------------------------
# Rooted cross-entropy

def _probs_f64(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over dim 1 by the textbook formula (float64, moderate logits only)."""
    e = torch.exp(logits.double())
    return e / e.sum(dim=1, keepdim=True)


@pytest.mark.parametrize("k", [0.5, 2.0, 8.0, 1e7])
def test_two_class_rlo_equals_binary_rooted_logistic(k):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 2, generator=g, dtype=torch.float64) * 6
    target = torch.randint(0, 2, (64,), generator=g)
    got = obj.rooted_cross_entropy(logits, target, k, form="rlo", reduction="none")
    diff = logits[torch.arange(64), target] - logits[torch.arange(64), 1 - target]
    assert torch.allclose(got, obj.rooted_logistic(diff, k), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("k", [0.7, 3.0, 10.0])
def test_multiclass_forms_against_probability_formulas(k):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(32, 5, generator=g) * 3
    target = torch.randint(0, 5, (32,), generator=g)
    p_y = _probs_f64(logits)[torch.arange(32), target]
    rlo = obj.rooted_cross_entropy(logits, target, k, form="rlo", reduction="none")
    paper = obj.rooted_cross_entropy(logits, target, k, form="paper", m=2.5, reduction="none")
    assert rlo.dtype == torch.float32
    live = -torch.log(p_y) / k <= LIMIT  # past the limit the rlo form is the documented tangent line
    assert live.sum() > 20
    assert torch.allclose(rlo.double()[live], k * (p_y[live] ** (-1.0 / k) - 1), rtol=1e-5)
    assert torch.allclose(paper.double(), 2.5 * (1 - p_y ** (1.0 / k)), rtol=1e-5, atol=1e-7)
    # Reductions.
    assert torch.allclose(obj.rooted_cross_entropy(logits, target, k), rlo.mean())
    assert torch.allclose(obj.rooted_cross_entropy(logits, target, k, reduction="sum"), rlo.sum())


def test_cross_entropy_large_k_tends_to_ordinary_cross_entropy():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(16, 4, generator=g, dtype=torch.float64)
    target = torch.randint(0, 4, (16,), generator=g)
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert obj.rooted_cross_entropy(logits, target, 1e7).item() == pytest.approx(ce.item(), rel=1e-6)
    # The paper form scaled by k tends to the same thing: k (1 - p^(1/k)) -> -log p.
    paper = obj.rooted_cross_entropy(logits, target, 1e7, form="paper", m=1e7)
    assert paper.item() == pytest.approx(ce.item(), rel=1e-6)


def test_cross_entropy_spatial_dims_and_extreme_logits():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 4, 5, generator=g)
    target = torch.randint(0, 3, (2, 4, 5), generator=g)
    full = obj.rooted_cross_entropy(logits, target, 2.0, reduction="none")
    assert full.shape == (2, 4, 5)
    flat = obj.rooted_cross_entropy(logits.permute(0, 2, 3, 1).reshape(-1, 3), target.reshape(-1), 2.0,
                                    reduction="none")
    assert torch.allclose(full.reshape(-1), flat)
    # A confidently wrong prediction stays finite with a useful gradient.
    x = torch.tensor([[1e6, -1e6, 0.0]], requires_grad=True)
    loss = obj.rooted_cross_entropy(x, torch.tensor([1]), 0.5)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all() and x.grad[0, 1] < 0


def test_cross_entropy_half_precision():
    logits = torch.randn(8, 3).half()
    target = torch.arange(8) % 3
    out = obj.rooted_cross_entropy(logits, target, 4.0, reduction="none")
    assert out.dtype == torch.float32
    assert torch.allclose(out, obj.rooted_cross_entropy(logits.float(), target, 4.0, reduction="none"))


@pytest.mark.parametrize("kwargs,match", [
    (dict(form="focal"), "unknown rooted cross-entropy form 'focal'"),
    (dict(reduction="avg"), "unknown reduction 'avg'"),
    (dict(k=0.0), RANGE),
    (dict(target=torch.tensor([0, 3])), r"must lie in \[0, 2\]"),
    (dict(target=torch.tensor([0.0, 1.0])), "integer class indices"),
    (dict(target=torch.tensor([0, 1, 2])), "does not match logits"),
    (dict(logits=torch.zeros(3)), r"logits must be \[N, C, ...\]"),
])
def test_cross_entropy_errors(kwargs, match):
    args = dict(logits=torch.zeros(2, 3), target=torch.tensor([0, 2]), k=2.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        obj.rooted_cross_entropy(**args)


# ---------------------------------------------------------------------------------------------------------------------
# Modules

def test_modules_match_functions():
    z = torch.randn(10) * 4
    assert torch.equal(obj.LogisticLoss()(z), obj.logistic(z).mean())
    assert torch.equal(obj.LogisticLoss(reduction="none")(z), obj.logistic(z))
    assert torch.equal(obj.RootedLogisticLoss(5.0, reduction="sum")(z), obj.rooted_logistic(z, 5.0).sum())
    logits, target = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    mod = obj.RootedCrossEntropyLoss(3.0, form="paper", m=2.0)
    assert torch.equal(mod(logits, target), obj.rooted_cross_entropy(logits, target, 3.0, form="paper", m=2.0))
    assert "k=3.0" in repr(mod)
    with pytest.raises(ValueError, match="unknown reduction"):
        obj.RootedLogisticLoss(2.0, reduction="max")
    with pytest.raises(ValueError, match=RANGE):
        obj.RootedCrossEntropyLoss(-1.0)


# ---------------------------------------------------------------------------------------------------------------------
# The Objective value type and the range of k


@pytest.mark.parametrize("text,name,k,label,slug", [
    ("logistic", "logistic", None, "logistic", "logistic"),
    ("rooted", "rooted", 8.0, "rooted k=8", "rooted8"),
    ("rooted:2.5", "rooted", 2.5, "rooted k=2.5", "rooted2.5"),
    (" rooted:1e3", "rooted", 1000.0, "rooted k=1000", "rooted1000"),
])
def test_objective_parse_label_slug_spec(text, name, k, label, slug):
    o = obj.Objective.parse(text)
    assert (o.name, o.k, o.label, o.slug) == (name, k, label, slug)
    assert obj.Objective.parse(o.spec) == o and obj.Objective.parse(o) is o
    z = torch.linspace(-30, 30, 61, dtype=torch.float64)
    want = obj.logistic(z) if k is None else obj.rooted_logistic(z, k)
    assert torch.equal(o.function(z), want)


@pytest.mark.parametrize("text,match", [
    ("bogus", "unknown objective 'bogus'"),
    ("hinge:2", "only applies to the rooted objective"),
    ("lsgan:8", "the lsgan loss has no root"),
    ("logistic:2", "only applies to the rooted"),
    ("rooted:x", "must be a number"),
    ("rooted:0", RANGE),
    ("rooted:1e308", RANGE),
    ("rooted:inf", "use 'logistic'"),
    ("rooted:nan", RANGE),
])
def test_objective_parse_errors_are_user_errors(text, match):
    with pytest.raises(UserError, match=match):
        obj.Objective.parse(text)


EXTREME_KS = [5e-324, 1e-300, 1e-45, 1e-8, 1e-4, obj.K_MIN, 0.03, 1.0, 1e4, obj.K_MAX, 1e8, 1e30, 1e38, 1e308,
              1.7976931348623157e308]


@pytest.mark.parametrize("k", EXTREME_KS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_every_finite_k_gives_finite_values_or_is_refused(k, dtype):
    """Issue: k = 1e308 trained NaN losses (k is inf in float32), k = 1e-300 made every gradient non-finite. Every
    finite k > 0 is either refused with the documented range or gives finite values (float32 and float16 logits) and
    finite float32 gradients over the logits a discriminator can produce."""
    if not obj.K_MIN <= k <= obj.K_MAX:
        for make in (lambda: obj.Objective("rooted", k), lambda: obj.rooted_logistic(torch.zeros(2), k),
                     lambda: obj.RootedLogisticLoss(k)):
            with pytest.raises(UserError, match=RANGE):
                make()
        return
    big = min(torch.finfo(dtype).max, 1e6)
    z = torch.tensor([-big, -1e3, -60.0, -20.0, -1.0, -1e-6, 0.0, 1e-6, 1.0, 20.0, 60.0, 1e3, big],
                     dtype=dtype).requires_grad_(True)
    value = obj.Objective("rooted", k).function(z)
    (grad,) = torch.autograd.grad(value.sum(), z)
    assert value.dtype == torch.float32 and torch.isfinite(value).all() and (value >= 0).all(), (k, value)
    if dtype == torch.float32:  # (a float16 input gets a float16 gradient, which overflows past 65504 for any k)
        assert torch.isfinite(grad).all() and (grad <= 0).all(), (k, grad)


# ---------------------------------------------------------------------------------------------------------------------
# The three GAN terms of every objective: D real, D fake, G -- values and gradients against float64 formulas


def _log1pexp(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(x - np.logaddexp(0.0, x))


def _rooted64(x: np.ndarray, k: float) -> tuple[np.ndarray, np.ndarray]:
    """k * expm1(softplus(x) / k) and its derivative in x, for x where softplus(x)/k stays below the limit."""
    s = _log1pexp(x)
    return k * np.expm1(s / k), _sigmoid(x) * np.exp(s / k)


def reference_terms(name: str, k: float | None, z: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(value, d value / d z) of each term at logits z, straight from the definitions (float64 numpy)."""
    if name == "logistic":
        real = (_log1pexp(-z), -_sigmoid(-z))
        fake = (_log1pexp(z), _sigmoid(z))
        return dict(real=real, fake=fake, generator=real)
    if name == "rooted":
        value, slope = _rooted64(-z, k)
        real = (value, -slope)
        return dict(real=real, fake=_rooted64(z, k), generator=real)
    if name == "hinge":
        return dict(real=(np.maximum(0.0, 1 - z), np.where(z < 1, -1.0, 0.0)),
                    fake=(np.maximum(0.0, 1 + z), np.where(z > -1, 1.0, 0.0)),
                    generator=(-z, -np.ones_like(z)))
    assert name == "lsgan"  # labels a = -1 (fake), b = 1 (real), c = 0, with the 1/2 factors
    return dict(real=((z - 1) ** 2 / 2, z - 1), fake=((z + 1) ** 2 / 2, z + 1), generator=(z ** 2 / 2, z))


TERM_OBJECTIVES = ["logistic", "rooted:8", "rooted:2", "hinge", "lsgan"]
MODERATE_Z = np.array([-30.0, -7.5, -2.0, -1.5, -0.999, -0.25, 0.0, 0.3, 0.999, 1.001, 2.0, 6.0, 30.0])


def _terms(o: obj.Objective, z: torch.Tensor) -> dict[str, torch.Tensor]:
    return dict(real=o.discriminator_real(z), fake=o.discriminator_fake(z), generator=o.generator(z))


@pytest.mark.parametrize("spec", TERM_OBJECTIVES)
@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_gan_terms_and_gradients_match_float64_formulas(spec, dtype, rtol):
    o = obj.Objective.parse(spec)
    exact = torch.tensor(MODERATE_Z, dtype=dtype)
    ref = reference_terms(o.name, o.k, exact.double().numpy())  # at the logits as `dtype` holds them
    for term in ("real", "fake", "generator"):
        z = exact.clone().requires_grad_(True)
        value = _terms(o, z)[term]
        (grad,) = torch.autograd.grad(value.sum(), z)
        want_value, want_grad = ref[term]
        assert value.dtype == dtype and grad.dtype == dtype
        np.testing.assert_allclose(value.detach().double().numpy(), want_value, rtol=rtol, atol=1e-300,
                                   err_msg=f"{spec} {term} value")
        np.testing.assert_allclose(grad.double().numpy(), want_grad, rtol=rtol, atol=1e-300,
                                   err_msg=f"{spec} {term} gradient")


def test_d_terms_are_the_margin_loss_of_plus_and_minus_the_logit():
    """The interface's definition: D real l(z), D fake l(-z); logistic and rooted use l for G as well."""
    z = torch.linspace(-40, 40, 161, dtype=torch.float64)
    for spec in TERM_OBJECTIVES:
        o = obj.Objective.parse(spec)
        assert torch.equal(o.discriminator_real(z), o.function(z))
        assert torch.equal(o.discriminator_fake(z), o.function(-z))
        if o.name in ("logistic", "rooted"):
            assert torch.equal(o.generator(z), o.function(z))


@pytest.mark.parametrize("spec", TERM_OBJECTIVES)
@pytest.mark.parametrize("magnitude", [1e4, 1e30])
def test_gan_terms_at_extreme_logits_in_float32(spec, magnitude):
    """Logits of +-1e4 and +-1e30 (finite in float32): every gradient is finite and right. Values are finite and
    right too, except where the documented float32 limits are passed: the least squares squares past |z| ~ 2.6e19,
    and a rooted term on the wrong side past |z| ~ 7e29 (its gradient is capped at e^20 there)."""
    o = obj.Objective.parse(spec)
    z32 = torch.tensor([-magnitude, magnitude], dtype=torch.float32)
    wrong_side = dict(real=0, fake=1, generator=0)  # the index whose logit the term penalizes without bound
    for term in ("real", "fake", "generator"):
        z = z32.clone().requires_grad_(True)
        value = _terms(o, z)[term]
        (grad,) = torch.autograd.grad(value.sum(), z)
        assert torch.isfinite(grad).all(), (spec, term, grad)
        finite = torch.ones(2, dtype=torch.bool)
        if o.name == "lsgan" and magnitude > 2.6e19:
            finite[:] = False
        if o.name == "rooted" and magnitude > 7e29:
            finite[wrong_side[term]] = False
        assert torch.equal(torch.isfinite(value), finite), (spec, term, value)
        if o.name == "rooted":  # past the limit: the tangent continuation, gradient magnitude capped at e^20
            slope = abs(float(grad[wrong_side[term]]))
            assert slope == pytest.approx(math.exp(LIMIT), rel=1e-5) and float(grad[1 - wrong_side[term]]) == 0
            continue
        want_value, want_grad = reference_terms(o.name, o.k, z32.double().numpy())[term]
        np.testing.assert_allclose(grad.double().numpy(), want_grad, rtol=1e-6, err_msg=f"{spec} {term}")
        np.testing.assert_allclose(value.detach().double().numpy()[finite.numpy()], want_value[finite.numpy()],
                                   rtol=1e-6, err_msg=f"{spec} {term}")


def test_hinge_kink_gets_a_subgradient():
    z = torch.tensor([1.0, -1.0], dtype=torch.float64, requires_grad=True)
    o = obj.Objective("hinge")
    (g_real,) = torch.autograd.grad(o.discriminator_real(z[:1]).sum(), z)
    (g_fake,) = torch.autograd.grad(o.discriminator_fake(z[1:]).sum(), z)
    assert -1 <= float(g_real[0]) <= 0 and 0 <= float(g_fake[1]) <= 1


@pytest.mark.parametrize("spec", ["hinge", "lsgan"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_hinge_and_least_squares_half_precision_computed_in_float32(spec, dtype):
    o = obj.Objective.parse(spec)
    z = torch.tensor([-300.0, -1.5, 0.0, 2.0, 300.0], dtype=dtype)
    for term, got in _terms(o, z).items():
        assert got.dtype == torch.float32 and torch.isfinite(got).all()
        assert torch.equal(got, _terms(o, z.float())[term])
