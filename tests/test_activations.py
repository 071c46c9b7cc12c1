"""Table-driven tests of pdlt.activations, driven by ``REGISTRY`` (like scipy.stats' distribution table).

Every registered activation (built with its ``test_params``) plus a few extra parameterizations is
checked for: finite vectorized σ; derivatives against Ridders-extrapolated numerical derivatives of
the previous order; ``derivatives`` == list of ``derivative``; ``smooth``/``kink`` flags; every
closed form ⟨σ^(j)_a σ^(k)_b⟩ (j+k ∈ {0,2,4}) against an independent computation — 2-D quadrature
of the pointwise derivatives for smooth activations, Price's theorem by finite differences in C
for the kinked ones (whose derivatives contain δ-functions) — and ``closed_single``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import special

from pdlt.activations import (
    REGISTRY,
    Activation,
    CallableActivation,
    LeakyReLU,
    Monomial,
    PiecewiseLinear,
    ReLU,
    Step,
    get_activation,
    parse_activation_params,
)
from pdlt.gaussian import expect1, expect2

# ---------------------------------------------------------------------------------------------
# The table

ACTS: dict[str, Activation] = {name: e.factory(**e.test_params) for name, e in REGISTRY.items()}
ACTS.update({                       # extra parameterizations of the parametric families
    "monomial[p=3]": Monomial(3),
    "monomial[p=5]": Monomial(5),
    "step[-1,2]": Step(-1.0, 2.0),
    "leaky_relu[a=-0.3]": LeakyReLU(-0.3),
    "piecewise_linear[0.5,0.5]": PiecewiseLinear(0.5, 0.5),   # equal slopes: linear, smooth
})
#: Activations with a kink at z = 0 (δ-functions in σ' or σ''): these must not claim to be smooth.
KINKED = {"relu", "leaky_relu", "piecewise_linear", "step", "step[-1,2]", "leaky_relu[a=-0.3]"}
SMOOTH = [n for n in ACTS if n not in KINKED]

#: ⟨σ^(j)_a σ^(k)_b⟩ needed by the recursions (j + k ∈ {0, 2, 4}).
PAIRS = [(0, 0), (1, 1), (2, 0), (0, 2), (2, 2), (3, 1), (1, 3), (4, 0), (0, 4)]

#: (C_aa, C_ab, C_bb): generic, strongly correlated, strongly anti-correlated, anti, uncorrelated.
COVS = {
    "generic": (1.0, 0.3, 0.7),
    "rho=+0.99": (2.0, 1.98, 2.0),
    "rho=-0.99": (0.4, -0.396, 0.4),
    "anti": (1.5, -0.9, 0.8),
    "uncorrelated": (3.0, 0.0, 0.5),
}
SINGULAR = {"rho=+1": (1.0, 1.0, 1.0), "rho=+1 (0.7)": (0.7, 0.7, 0.7), "rho=-1": (2.0, -2.0, 2.0)}

#: Points at least 0.35 from the kink at 0, so the differentiation stencil (h ≤ 0.2) never crosses it.
Z_AWAY = np.array([-3.7, -2.1, -0.9, -0.35, 0.42, 1.3, 2.6, 4.1])


def _ridders(f, z, h0=0.2, n=10, con=1.6):
    """Ridders' polynomial extrapolation of central differences (Numerical Recipes ``dfridr``),
    vectorized over z.  Returns (derivative, error estimate)."""
    z = np.asarray(z, dtype=float)
    a = np.empty((n, n) + z.shape)
    hh = h0
    a[0, 0] = (f(z + hh) - f(z - hh)) / (2 * hh)
    best, err = a[0, 0].copy(), np.full(z.shape, np.inf)
    for i in range(1, n):
        hh /= con
        a[0, i] = (f(z + hh) - f(z - hh)) / (2 * hh)
        fac = con * con
        for j in range(1, i + 1):
            a[j, i] = (a[j - 1, i] * fac - a[j - 1, i - 1]) / (fac - 1)
            fac *= con * con
            errt = np.maximum(abs(a[j, i] - a[j - 1, i]), abs(a[j, i] - a[j - 1, i - 1]))
            better = errt <= err
            err, best = np.where(better, errt, err), np.where(better, a[j, i], best)
    return best, err


# ---------------------------------------------------------------------------------------------
# Registry, evaluation, derivatives


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registry_entry_builds_its_activation(name):
    entry = REGISTRY[name]
    act = entry.factory(**entry.test_params)
    assert isinstance(act, Activation)
    assert act.name == name
    assert set(entry.test_params) <= set(entry.param_types)
    assert set(act.params) <= set(entry.param_types)
    assert get_activation(name, **entry.test_params) == act
    assert hash(get_activation(name, **entry.test_params)) == hash(act)


@pytest.mark.parametrize("name", ACTS)
def test_sigma_finite_and_vectorized(name):
    act = ACTS[name]
    z = np.concatenate([np.linspace(-30.0, 30.0, 61), [-700.0, -50.0, 50.0, 700.0]]).reshape(5, 13)
    with np.errstate(over="raise", invalid="raise"):     # no overflow warnings in σ, σ', …
        out = act.sigma(z)
        assert out.shape == z.shape and np.all(np.isfinite(out))
        np.testing.assert_array_equal(act(z), out)
        for k in range(5):
            d = act.derivative(z, k)
            assert np.shape(d) == z.shape and np.all(np.isfinite(d)), k
    # elementwise: the array call equals scalar calls
    for x in (-2.5, -0.3, 0.0, 0.7, 3.1):
        assert float(act.sigma(np.float64(x))) == pytest.approx(float(act.sigma(np.array([x]))[0]), rel=1e-15)
    np.testing.assert_array_equal(act.derivative(Z_AWAY, 0), act.sigma(Z_AWAY))


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("name", ACTS)
def test_derivative_matches_numerical_derivative_of_previous_order(name, k):
    """σ^(k) vs Ridders' extrapolated central differences of σ^(k-1), away from the kink.

    Ridders' error estimate is ≲ 4e-14 for all entries here (measured), so 1e-10 × max(1, |σ^(k)|)
    leaves four orders of magnitude for platform differences while still catching any wrong
    coefficient or sign.
    """
    act = ACTS[name]
    num, est = _ridders(lambda x: act.derivative(x, k - 1), Z_AWAY)
    exact = act.derivative(Z_AWAY, k)
    assert np.all(est < 1e-11 * np.maximum(1.0, np.abs(exact)))
    np.testing.assert_allclose(exact, num, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ACTS)
def test_derivatives_list_equals_derivative(name):
    act = ACTS[name]
    z = np.linspace(-4.0, 4.0, 17).reshape(1, 17)
    ds = act.derivatives(z, 4)
    assert len(ds) == 5
    for k, d in enumerate(ds):
        np.testing.assert_array_equal(np.broadcast_to(d, z.shape), act.derivative(z, k))
    assert len(act.derivatives(z, 2)) == 3


@pytest.mark.parametrize("name", ACTS)
def test_smooth_and_kink_flags_are_consistent(name):
    act = ACTS[name]
    eps = 1e-9
    left = [act.derivative(np.array([-eps]), k)[0] for k in range(5)]
    right = [act.derivative(np.array([eps]), k)[0] for k in range(5)]
    jump = max(abs(r - l) for l, r in zip(left, right))
    if name in KINKED:
        assert act.smooth is False and act.kink == 0.0
        assert jump > 0.1              # σ or σ' jumps: a δ-function in σ' or σ''
    else:
        assert act.smooth is True and act.kink is None
        assert jump < 1e-6             # σ … σ'''' continuous at 0


def test_only_relu_family_and_step_are_kinked():
    assert {n for n in REGISTRY if not ACTS[n].smooth} == {"relu", "leaky_relu", "piecewise_linear", "step"}


# ---------------------------------------------------------------------------------------------
# Closed forms ⟨σ^(j)_a σ^(k)_b⟩


def _closed(act, j, k, C):
    v = act.closed_pair(j, k, *C)
    return None if v is None else float(v)


_SMOOTH_WITH_CLOSED = [n for n in SMOOTH if any(ACTS[n].closed_pair(j, k, 1.0, 0.3, 0.7) is not None
                                                for j, k in PAIRS)]


def test_table_has_smooth_closed_forms():
    assert {"linear", "sin", "erf"} <= set(_SMOOTH_WITH_CLOSED)


@pytest.mark.parametrize("cov", list(COVS) + list(SINGULAR))
@pytest.mark.parametrize("name", _SMOOTH_WITH_CLOSED)
def test_closed_pair_smooth_matches_quadrature(name, cov):
    """Smooth activations: closed form vs 2-D polar quadrature (order 96) of σ^(j)(z_a) σ^(k)(z_b).

    Measured agreement ≲ 3e-14 relative; asserted 1e-10 (the brief's bound)."""
    act = ACTS[name]
    C = {**COVS, **SINGULAR}[cov]
    n = 0
    for j, k in PAIRS:
        c = _closed(act, j, k, C)
        if c is None:
            continue
        q = float(expect2(lambda z: act.derivative(z, j), lambda z: act.derivative(z, k), *C, order=96))
        assert c == pytest.approx(q, rel=1e-10, abs=1e-12), (j, k)
        n += 1
    assert n >= 2


# Finite-difference stencils (8th order) for ∂ and ∂² along the covariance entries.
_D1 = np.array([1 / 280, -4 / 105, 1 / 5, -4 / 5, 0, 4 / 5, -1 / 5, 4 / 105, -1 / 280])
_D2 = np.array([-1 / 560, 8 / 315, -1 / 5, 8 / 5, -205 / 72, 8 / 5, -1 / 5, 8 / 315, -1 / 560])
_M = np.arange(-4, 5)


def _fd(f, C, axes, steps):
    """∂f/∂C_i (one axis) or ∂²f/∂C_i∂C_j (two axes) of f(C_aa, C_ab, C_bb); axes index (aa, ab, bb)."""
    C = np.asarray(C, dtype=float)
    E = np.eye(3)
    if len(axes) == 1:
        (i,), h = axes, steps[axes[0]]
        return sum(c * f(*(C + m * h * E[i])) for c, m in zip(_D1, _M) if c) / h
    i, j = axes
    hi, hj = steps[i], steps[j]
    if i == j:
        return sum(c * f(*(C + m * hi * E[i])) for c, m in zip(_D2, _M)) / hi ** 2
    return sum(ci * cj * f(*(C + m * hi * E[i] + n * hj * E[j]))
               for ci, m in zip(_D1, _M) if ci for cj, n in zip(_D1, _M) if cj) / (hi * hj)


#: Price's theorem: ∂/∂C_ab ↔ ∂_a∂_b, ∂/∂C_aa ↔ ½∂_a².  (j, k) -> (factor, derivative axes of f = ⟨σσ⟩)
_PRICE = {(1, 1): (1, (1,)), (2, 0): (2, (0,)), (0, 2): (2, (2,)), (2, 2): (1, (1, 1)),
          (3, 1): (2, (0, 1)), (1, 3): (2, (2, 1)), (4, 0): (4, (0, 0)), (0, 4): (4, (2, 2))}


@pytest.mark.parametrize("cov", COVS)
@pytest.mark.parametrize("name", sorted(KINKED))
def test_closed_pair_kinked_satisfies_price_theorem(name, cov):
    """Kinked activations: (1,1) = ∂f/∂C_ab, (2,0) = 2∂f/∂C_aa, (2,2) = ∂²f/∂C_ab²,
    (3,1) = 2∂²f/∂C_aa∂C_ab, (4,0) = 4∂²f/∂C_aa² (and a <-> b), f = closed_pair(0, 0).

    Steps are 2% of the distance to the singular boundary det C = 0 along each axis, so the
    8th-order stencils are accurate to ≲ 4e-8 relative even at ρ = ±0.99 (measured); asserted 1e-6.
    """
    act = ACTS[name]
    Caa, Cab, Cbb = C = COVS[cov]
    det = Caa * Cbb - Cab * Cab
    steps = (0.02 * det / Cbb, 0.02 * (math.sqrt(Caa * Cbb) - abs(Cab)), 0.02 * det / Caa)

    def f(a, b, c):
        return float(act.closed_pair(0, 0, a, b, c))

    for jk, (factor, axes) in _PRICE.items():
        exact = _closed(act, *jk, C)
        assert exact is not None, f"{name} needs a closed form for {jk} (its derivatives have δ's)"
        assert exact == pytest.approx(factor * _fd(f, C, axes, steps), rel=1e-6, abs=1e-9), jk


@pytest.mark.parametrize("cov", list(COVS) + list(SINGULAR))
@pytest.mark.parametrize("name", sorted(KINKED))
def test_closed_pair_kinked_00_matches_polar_quadrature(name, cov):
    """(0,0) vs the polar rule (which splits at the kink lines): measured ≲ 1e-14, asserted 1e-12.
    For the ReLU family σ' is bounded (no δ), so (1,1) is checked the same way."""
    act = ACTS[name]
    C = {**COVS, **SINGULAR}[cov]
    q = float(expect2(act.sigma, act.sigma, *C))
    assert _closed(act, 0, 0, C) == pytest.approx(q, rel=1e-12, abs=1e-14)
    if isinstance(act, PiecewiseLinear) and cov in COVS:
        q11 = float(expect2(lambda z: act.derivative(z, 1), lambda z: act.derivative(z, 1), *C))
        assert _closed(act, 1, 1, C) == pytest.approx(q11, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("name", ACTS)
def test_closed_pair_symmetric_and_broadcasts(name):
    act = ACTS[name]
    Caa, Cab, Cbb = (np.array([1.0, 2.0, 0.4, 1.5]), np.array([0.3, 1.98, -0.396, -0.9]),
                     np.array([0.7, 2.0, 0.4, 0.8]))
    for j, k in PAIRS:
        v = act.closed_pair(j, k, Caa, Cab, Cbb)
        if v is None:
            continue
        v = np.asarray(v)
        assert v.shape == Caa.shape
        w = act.closed_pair(k, j, Cbb, Cab, Caa)
        np.testing.assert_allclose(v, w, rtol=1e-14, atol=1e-15)
        for i in range(Caa.size):
            np.testing.assert_allclose(v[i], act.closed_pair(j, k, Caa[i], Cab[i], Cbb[i]), rtol=1e-14)


_WITH_SINGLE = [n for n in ACTS if ACTS[n].closed_single(0, 1.0) is not None]


@pytest.mark.parametrize("K", [0.3, 1.0, 3.0])
@pytest.mark.parametrize("name", _WITH_SINGLE)
def test_closed_single(name, K):
    """closed_single(m, K) = ⟨∂^{2m}σ²⟩_K = 2^m g^(m)(K), g = ⟨σ²⟩_K, three independent ways:
    quadrature of σ² (1e-12), 8th-order finite differences of g (1e-7), and the Hermite-weight
    identities ⟨∂²σ²⟩ = ⟨σ²(z²−K)⟩/K², ⟨∂⁴σ²⟩ = ⟨σ²(z⁴−6Kz²+3K²)⟩/K⁴, which need σ only (1e-10)."""
    act = ACTS[name]
    s2 = lambda z: act.sigma(z) ** 2  # noqa: E731
    g = [float(act.closed_single(m, K)) for m in range(3)]
    assert g[0] == pytest.approx(float(expect1(s2, K, order=128)), rel=1e-12, abs=1e-14)
    h = 0.02 * K
    g0 = lambda x: float(act.closed_single(0, x))  # noqa: E731
    d1 = sum(c * g0(K + m * h) for c, m in zip(_D1, _M)) / h
    d2 = sum(c * g0(K + m * h) for c, m in zip(_D2, _M)) / h ** 2
    assert g[1] == pytest.approx(2 * d1, rel=1e-7, abs=1e-9)
    assert g[2] == pytest.approx(4 * d2, rel=1e-7, abs=1e-7)
    h2 = float(expect1(lambda z: s2(z) * (z * z - K), K, order=128)) / K ** 2
    h4 = float(expect1(lambda z: s2(z) * (z ** 4 - 6 * K * z * z + 3 * K * K), K, order=128)) / K ** 4
    assert g[1] == pytest.approx(h2, rel=1e-10, abs=1e-12)
    assert g[2] == pytest.approx(h4, rel=1e-10, abs=1e-10)
    if act.closed_pair(0, 0, K, K, K) is not None:      # ρ = 1 limit of the pair kernel
        assert float(act.closed_pair(0, 0, K, K, K)) == pytest.approx(g[0], rel=1e-12)
    assert act.closed_single(3, K) is None


def test_step_second_derivative_pair_regression():
    """⟨σ''_a σ_b⟩ for the step is 2∂/∂C_aa of γ₀² + (2γ₁²/π) arcsin ρ = −(2γ₁²/π) C_ab/(C_aa D)
    (it was off by a factor 2)."""
    Caa, Cab, Cbb = 1.0, 0.3, 0.7
    D = math.sqrt(Caa * Cbb - Cab * Cab)
    assert float(Step().closed_pair(2, 0, Caa, Cab, Cbb)) == pytest.approx(-(0.5 / math.pi) * Cab / (Caa * D))


# ---------------------------------------------------------------------------------------------
# get_activation and CLI parameters


def test_get_activation_accepts_name_object_and_callable():
    assert isinstance(get_activation("relu"), ReLU)
    assert get_activation(" Leaky-ReLU ", a=0.2) == LeakyReLU(0.2)
    assert get_activation("piecewise_linear", a_plus=1.0, a_minus=-0.5).params == {"a_plus": 1.0, "a_minus": -0.5}
    obj = Step(-1.0, 1.0)
    assert get_activation(obj) is obj
    fn = np.tanh
    wrapped = get_activation(fn)
    assert isinstance(wrapped, CallableActivation) and wrapped.fn is fn
    assert wrapped == get_activation(fn)


@pytest.mark.parametrize("spec, params, needle", [
    ("swishy", {}, "swishy"),
    ("", {}, "unknown activation"),
    ("leaky_relu", {"b": 1.0}, "'b'"),
    ("relu", {"a": 0.1}, "'a'"),
    ("leaky_relu", {"a": float("nan")}, "^a must be"),
    ("leaky_relu", {"a": "x"}, "^a must be"),
    ("piecewise_linear", {"a_plus": math.inf}, "a_plus"),
    ("piecewise_linear", {"a_minus": None}, "a_minus"),
    ("step", {"low": float("nan")}, "low"),
    ("step", {"high": "x"}, "high"),
    ("monomial", {"p": 0}, "power p must be"),
    ("monomial", {"p": 2.5}, "power p must be"),
    ("monomial", {"p": "x"}, "power p must be"),
    ("monomial", {"p": True}, "power p must be"),
])
def test_get_activation_rejects_unknown_names_and_bad_params(spec, params, needle):
    with pytest.raises(ValueError, match=needle):
        get_activation(spec, **params)


def test_get_activation_rejects_params_for_objects_and_non_callables():
    with pytest.raises(ValueError, match="registered name"):
        get_activation(ReLU(), a=0.1)
    with pytest.raises(ValueError, match="registered name"):
        get_activation(np.tanh, a=0.1)
    with pytest.raises(ValueError, match="registered name"):
        get_activation(42)


def test_parse_activation_params():
    assert parse_activation_params("leaky_relu", ["a=0.2"]) == {"a": 0.2}
    assert parse_activation_params("Leaky-ReLU", [" a = -0.1 "]) == {"a": -0.1}
    assert parse_activation_params("relu", None) == {}
    p = parse_activation_params("monomial", ["p=3"])
    assert p == {"p": 3} and type(p["p"]) is int
    assert parse_activation_params("step", ["low=-1", "high=2"]) == {"low": -1.0, "high": 2.0}
    with pytest.raises(ValueError, match=r"a must be a float.*__import__"):
        parse_activation_params("leaky_relu", ["a=__import__('os')"])
    with pytest.raises(ValueError, match="no parameter 'b'"):
        parse_activation_params("leaky_relu", ["b=1"])
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_activation_params("leaky_relu", ["a"])
    with pytest.raises(ValueError, match="p must be a int"):
        parse_activation_params("monomial", ["p=2.5"])
    with pytest.raises(ValueError, match="unknown activation 'nope'"):
        parse_activation_params("nope", [])
    # parsed values still go through the activation's own validation
    with pytest.raises(ValueError, match="^a must be"):
        get_activation("leaky_relu", **parse_activation_params("leaky_relu", ["a=nan"]))


# ---------------------------------------------------------------------------------------------
# User callables

_Z = np.linspace(-3.0, 3.0, 61)


def test_callable_analytic_uses_complex_contour():
    """Cauchy's formula on a circle of radius 1/4 with 48 points: the aliasing error is
    (0.25/1.57)^48 ≈ 1e-38 for tanh (poles at ±iπ/2), rounding ≈ k! 1e-16/0.25^k ≲ 1e-12."""
    act = CallableActivation(lambda z: np.tanh(z) + 0.1 * z)
    assert act.derivative_method == "complex-contour"
    t = np.tanh(_Z)
    s = 1 - t * t
    exact = [s + 0.1, -2 * t * s, -2 * s * (1 - 3 * t * t), 8 * t * s * (2 - 3 * t * t)]
    for k in range(1, 5):
        np.testing.assert_allclose(act.derivative(_Z, k), exact[k - 1], rtol=0, atol=1e-10)
    np.testing.assert_array_equal(act.sigma(_Z), np.tanh(_Z) + 0.1 * _Z)
    assert act.smooth and act.kink is None
    # no closed forms: the theory integrates by quadrature
    assert act.closed_pair(0, 0, 1.0, 0.5, 1.0) is None and act.closed_single(0, 1.0) is None


#: Documented finite-difference accuracy for O(1) smooth functions (activations.py docstring).
_FD_BOUND = {1: 1e-9, 2: 1e-7, 3: 1e-5, 4: 1e-4}


@pytest.mark.parametrize("label, fn, ref", [
    # real-only numpy/scipy code: expit rejects complex input; np.abs/np.maximum/np.real are not analytic
    ("expit", lambda z: special.expit(z), "sigmoid"),
    ("softplus via abs", lambda z: np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0.0), "softplus"),
    ("tanh of real part", lambda z: np.tanh(np.real(z)), "tanh"),
    ("odd erf via abs", lambda z: special.erf(np.abs(z)) * np.sign(z), "erf"),
])
def test_callable_non_analytic_falls_back_to_finite_differences(label, fn, ref):
    act = CallableActivation(fn)
    assert act.derivative_method == "finite-difference", label
    exact = get_activation(ref)
    for k in range(1, 5):
        err = np.max(np.abs(act.derivative(_Z, k) - exact.derivative(_Z, k)))
        assert err < _FD_BOUND[k], (label, k, err)   # measured: 7e-14, 4e-12, 8e-8, 4e-6


def test_callable_kinked_power_finite_differences_away_from_kink():
    act = CallableActivation(lambda z: np.maximum(z, 0.0) ** 3)
    assert act.derivative_method == "finite-difference"
    z = np.array([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 3.0])    # stencils reach ±0.2 at most
    r = np.maximum(z, 0.0)
    exact = [3 * r * r, 6 * r, 6.0 * (z > 0), 0 * z]
    for k in range(1, 5):
        np.testing.assert_allclose(act.derivative(z, k), exact[k - 1], rtol=0, atol=_FD_BOUND[k])


@pytest.mark.parametrize("fn, needle", [
    (lambda z: np.log(z), "NaN"),                          # NaN for z < 0
    (lambda z: 1.0 / z, "NaN/inf"),                       # inf at z = 0
    (lambda z: np.sum(z), "elementwise"),                 # wrong shape
    (lambda z: 1.0, "elementwise"),
    (lambda z: np.stack([z, z]), "elementwise"),
    (lambda z: math.tanh(z), "failed on a numpy array"),  # not vectorized
    ("not a function", "registered"),
])
def test_callable_bad_functions_are_rejected(fn, needle):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(ValueError, match=needle):
            CallableActivation(fn) if callable(fn) else get_activation(fn)
