"""Tests of the Gaussian toolkit pdlt.gaussian against independent references.

References: exact moments and closed forms; mpmath.quad at 30 digits (1-D); nested
scipy.integrate.quad on the Cholesky factor (2-D); Wick's theorem (pdlt.wick) for polynomials;
Monte Carlo; and, for the 3-D/4-D accuracy table, a nested Gauss–Legendre rule written here that
splits every level at the zero of its own variable (where the ReLU kink and the near-real poles of
tanh sit) — converged to ≲ 1e-6 of the integrand scale (checked against n_p + 2 nodes per piece).

``pytest -s tests/test_gaussian.py -k accuracy`` prints the measured accuracy table.
"""

from __future__ import annotations

import functools
import math
import warnings

import mpmath as mp
import numpy as np
import pytest
from scipy import integrate, special

from pdlt.activations import get_activation
from pdlt.gaussian import ORDERS, expect1, expect2, expect_powers, hermite_rule, polar_nodes, psd_cholesky
from pdlt.wick import gaussian_moment

relu = get_activation("relu").sigma
SMOOTH = ("tanh", "gelu", "swish", "sigmoid")

# Independent scalar implementations (mpmath for the 1-D reference, math for the 2-D one).
_MP = {
    "tanh": (mp.tanh, lambda z: 1 / mp.cosh(z) ** 2),
    "gelu": (lambda z: z * mp.ncdf(z), lambda z: mp.ncdf(z) + z * mp.npdf(z)),
    "swish": (lambda z: z / (1 + mp.exp(-z)), lambda z: 1 / (1 + mp.exp(-z)) * (1 + z * mp.exp(-z) / (1 + mp.exp(-z)))),
    "sigmoid": (lambda z: 1 / (1 + mp.exp(-z)), lambda z: mp.exp(-z) / (1 + mp.exp(-z)) ** 2),
}


def _sig(z):
    return 1.0 / (1.0 + math.exp(-z))


_MATH = {
    "tanh": (math.tanh, lambda z: 1.0 / math.cosh(z) ** 2),
    "gelu": (lambda z: 0.5 * z * math.erfc(-z / math.sqrt(2.0)),
             lambda z: 0.5 * math.erfc(-z / math.sqrt(2.0)) + z * math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)),
    "swish": (lambda z: z * _sig(z), lambda z: _sig(z) * (1.0 + z * (1.0 - _sig(z)))),
    "sigmoid": (_sig, lambda z: _sig(z) * (1.0 - _sig(z))),
}


@functools.lru_cache(maxsize=None)
def _mp_expect1(name: str, power: int, K: float) -> float:
    """⟨σ(z)^power⟩_K by mpmath.quad at 30 digits, split at 0 and ±5 standard deviations."""
    f = _MP[name][0]
    with mp.workdps(30):
        s = mp.sqrt(mp.mpf(K))
        v = mp.quad(lambda u: f(s * u) ** power * mp.exp(-u * u / 2), [-mp.inf, -5, 0, 5, mp.inf])
        return float(v / mp.sqrt(2 * mp.pi))


_R = 10.0   # e^{-50} ≈ 2e-22: the truncation is far below the tolerances


def _quad2(f, g, Caa, Cab, Cbb):
    """⟨f(z_a) g(z_b)⟩ by nested adaptive quadrature in the standardized plane z_a = p u,
    z_b = q u + t w, with breakpoints at the kink lines u = 0 and w = −q u/t."""
    p = math.sqrt(Caa)
    q = Cab / p
    t = math.sqrt(max(Caa * Cbb - Cab * Cab, 0.0)) / p
    kw = dict(epsabs=1e-14, epsrel=1e-12, limit=200)

    def inner(u):
        if t == 0.0:
            return g(q * u)
        c = -q * u / t
        return integrate.quad(lambda w: g(q * u + t * w) * math.exp(-0.5 * w * w), -_R, _R,
                              points=[c] if -_R < c < _R else None, **kw)[0] / math.sqrt(2 * math.pi)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)   # roundoff at 1e-14 abs
        return integrate.quad(lambda u: f(p * u) * math.exp(-0.5 * u * u) * inner(u), -_R, _R,
                              points=[0.0], **kw)[0] / math.sqrt(2 * math.pi)


# ---- nested kink-split Gauss–Legendre reference for 3-D/4-D ------------------------------------

_FIX = np.array([-_R, -5.0, -2.0, 0.0, 2.0, 5.0, _R])


def _split_rule(m, L, n_p):
    """Nodes/weights (P, 7 n_p) for E_u[g(m + L u)], u ~ N(0, 1), m of shape (P,).

    Pieces between the breakpoints {±10, ±5, ±2, 0} ∪ {c = −m/L} (fixed breakpoints within 1 of c
    are moved onto c); the pieces touching c use u = c ± α sinh(t), α = min(1, max(1/L, 0.2)),
    which clusters nodes geometrically at the kink (ReLU) or next to tanh's poles at distance
    π/(2L); the others plain Gauss–Legendre.
    """
    m = np.asarray(m, dtype=float).reshape(-1)
    P = m.size
    c = np.clip(-m / L, -_R, _R)[:, None]
    al = min(1.0, max(1.0 / L, 0.2))
    x, w = np.polynomial.legendre.leggauss(n_p)
    x, w = 0.5 * (x + 1.0), 0.5 * w
    fix = np.broadcast_to(_FIX, (P, _FIX.size))
    fix = np.where((np.abs(fix - c) < 1.0) & (np.abs(fix) < _R), c, fix)
    bp = np.sort(np.concatenate([fix, c], axis=1), axis=1)
    lo, hi = bp[:, :-1, None], bp[:, 1:, None]
    cc = c[:, :, None]
    ends, starts = hi == cc, (lo == cc) & (hi != cc)
    T = np.arcsinh((hi - lo) / al)
    u = np.where(ends, cc - al * np.sinh(T * x), np.where(starts, cc + al * np.sinh(T * x), lo + (hi - lo) * x))
    wt = np.where(ends | starts, T * w * al * np.cosh(T * x), (hi - lo) * w)
    u, wt = u.reshape(P, -1), wt.reshape(P, -1)
    return u, wt * np.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)


def _nested_reference(f, C, powers, n_p):
    """⟨Π_k f(z_k)^{p_k}⟩_C by the nested kink-split rule on the Cholesky factor (C positive definite)."""
    C = np.asarray(C, dtype=float)
    k = C.shape[0]
    L = np.linalg.cholesky(C)
    u0, w0 = (a[0] for a in _split_rule(np.zeros(1), L[0, 0], n_p))
    F0 = f(L[0, 0] * u0) ** powers[0] * w0
    total = 0.0
    for i in np.flatnonzero(w0):
        U, F = np.array([[u0[i]]]), np.array([F0[i]])
        for j in range(1, k):
            m = U @ L[j, :j]
            u, w = _split_rule(m, L[j, j], n_p)
            F = (F[:, None] * (f(m[:, None] + L[j, j] * u) ** powers[j] * w)).reshape(-1)
            if j < k - 1:
                U = np.concatenate([np.repeat(U, u.shape[1], axis=0), u.reshape(-1, 1)], axis=1)
        total += F.sum()
    return total


#: A generic correlation matrix (ρ from 0.2 to 0.7) for the 3-D/4-D tests.
R4 = np.array([[1.0, 0.6, 0.3, 0.5], [0.6, 1.0, 0.4, 0.2], [0.3, 0.4, 1.0, 0.7], [0.5, 0.2, 0.7, 1.0]])


# ---------------------------------------------------------------------------------------------
# expect1


@pytest.mark.parametrize("method, order", [("split", None), ("hermite", 16)])
@pytest.mark.parametrize("K", [0.1, 1.0, 3.0, 15.0])
def test_expect1_exact_moments(K, method, order):
    """⟨z^{2k}⟩ = (2k−1)!! K^k and odd moments vanish; both rules are exact for polynomials."""
    for k in range(7):
        v = float(expect1(lambda z, k=k: z ** (2 * k), K, order=order, method=method))
        assert v == pytest.approx(math.prod(range(1, 2 * k, 2)) * K ** k, rel=1e-13)
        odd = float(expect1(lambda z, k=k: z ** (2 * k + 1), K, order=order, method=method))
        assert abs(odd) <= 1e-13 * math.prod(range(1, 2 * k + 3, 2)) * K ** (k + 0.5)


@pytest.mark.parametrize("K", [0.1, 0.3, 1.0, 3.0, 15.0])
def test_expect1_closed_forms(K):
    cases = [
        (lambda z: special.erf(z) ** 2, 2 / math.pi * math.asin(2 * K / (1 + 2 * K))),
        (lambda z: np.sin(z) ** 2, 0.5 * (1 - math.exp(-2 * K))),
        (np.cos, math.exp(-K / 2)),
        (relu, math.sqrt(K / (2 * math.pi))),
        (lambda z: relu(z) ** 2, K / 2),
        (lambda z: relu(z) ** 4, 1.5 * K * K),
        (np.abs, math.sqrt(2 * K / math.pi)),
        (get_activation("step").sigma, 0.5),
    ]
    for f, exact in cases:
        assert float(expect1(f, K)) == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize("K", [0.1, 1.0, 3.0, 15.0])
@pytest.mark.parametrize("name", SMOOTH)
def test_expect1_vs_mpmath(name, K):
    """Default rule vs mpmath.quad at 30 digits: measured ≤ 2e-14 relative, asserted 1e-10."""
    act = get_activation(name)
    powers = (2,) if name == "tanh" else (1, 2)       # ⟨tanh⟩ = 0 by symmetry
    for p in powers:
        assert float(expect1(lambda z: act.sigma(z) ** p, K)) == pytest.approx(_mp_expect1(name, p, K), rel=1e-10)


def test_expect1_vectorized_and_degenerate():
    K = np.array([[0.1, 1.0, 3.0], [15.0, 0.0, 2.0]])
    v = expect1(lambda z: z * z, K)
    assert v.shape == (2, 3)
    np.testing.assert_allclose(v, K, rtol=1e-13, atol=1e-300)
    assert float(expect1(np.cos, 0.0)) == pytest.approx(1.0, rel=1e-14)   # K = 0: point mass at 0
    with pytest.raises(ValueError, match="method"):
        expect1(np.tanh, 1.0, method="simpson")


def test_hermite_rule_normalized():
    x, w = hermite_rule(20)
    assert w.sum() == pytest.approx(1.0, rel=1e-14)
    assert np.dot(w, x ** 4) == pytest.approx(3.0, rel=1e-13)
    with pytest.raises(ValueError):
        x[0] = 1.0                          # cached arrays are read-only


# ---------------------------------------------------------------------------------------------
# expect2

COVS2 = {
    "generic": (1.0, 0.3, 0.7),
    "rho=+0.99": (2.0, 1.98, 2.0),
    "rho=-0.99": (1.5, -1.485, 1.5),
    "anti, K=3": (3.0, -0.9, 0.8),
    "singular rho=+1": (1.0, 1.0, 1.0),
    "singular rho=-1": (0.7, -0.7, 0.7),
}


@pytest.mark.parametrize("cov", COVS2)
@pytest.mark.parametrize("name", SMOOTH)
def test_expect2_vs_adaptive_quadrature(name, cov):
    """Polar rule (default order) vs nested scipy quad: measured ≤ 4e-14 relative, asserted 1e-10."""
    act = get_activation(name)
    C = COVS2[cov]
    for j in (0, 1):
        fm = _MATH[name][j]
        ref = _quad2(fm, fm, *C)
        v = float(expect2(lambda z, j=j: act.derivative(z, j), lambda z, j=j: act.derivative(z, j), *C))
        assert v == pytest.approx(ref, rel=1e-10), j
    # an asymmetric pair ⟨σ(z_a) σ'(z_b)⟩
    ref = _quad2(_MATH[name][0], _MATH[name][1], *C)
    v = float(expect2(act.sigma, lambda z: act.derivative(z, 1), *C))
    assert v == pytest.approx(ref, rel=1e-10, abs=1e-13)


def _arccos_kernel(Caa, Cab, Cbb):
    """⟨relu(z_a) relu(z_b)⟩ = √(C_aa C_bb)/(2π) (sin θ + (π − θ) cos θ), cos θ = ρ (Cho & Saul)."""
    rho = max(-1.0, min(1.0, Cab / math.sqrt(Caa * Cbb)))
    th = math.acos(rho)
    return math.sqrt(Caa * Cbb) / (2 * math.pi) * (math.sin(th) + (math.pi - th) * math.cos(th))


@pytest.mark.parametrize("C", [(1.0, 0.3, 0.7), (2.0, 1.98, 2.0), (0.4, -0.396, 0.4), (3.0, -0.9, 0.8),
                               (1.0, 1.0, 1.0), (2.2, 2.2, 2.2), (15.0, 7.0, 4.0), (1.0, 0.0, 1.0)])
def test_expect2_relu_arccos(C):
    assert float(expect2(relu, relu, *C)) == pytest.approx(_arccos_kernel(*C), rel=1e-12)


def test_expect2_relu_anticorrelated_singular_is_zero():
    assert abs(float(expect2(relu, relu, 2.0, -2.0, 2.0))) < 1e-15


def test_expect2_broadcasts_and_polar_nodes():
    Caa = np.array([[1.0, 2.0], [0.5, 3.0]])
    Cab = np.array([[0.3, -1.9], [0.5, 0.0]])
    Cbb = 1.5
    v = expect2(np.tanh, np.sin, Caa, Cab, Cbb)
    assert v.shape == (2, 2)
    for i in np.ndindex(2, 2):
        assert v[i] == pytest.approx(float(expect2(np.tanh, np.sin, Caa[i], Cab[i], Cbb)), rel=1e-14)
    za, zb, w = polar_nodes(Caa, Cab, Cbb)
    np.testing.assert_allclose(np.sum(np.tanh(za) * np.sin(zb) * w, axis=-1), v.reshape(-1), rtol=1e-14)
    # zero variance: z_b ≡ 0 (or z_a ≡ 0)
    assert float(expect2(np.cos, np.cos, 1.3, 0.0, 0.0)) == pytest.approx(math.exp(-0.65), rel=1e-13)
    assert float(expect2(np.cos, np.cos, 0.0, 0.0, 1.3)) == pytest.approx(math.exp(-0.65), rel=1e-13)
    with pytest.raises(ValueError, match="method"):
        expect2(np.tanh, np.tanh, 1.0, 0.5, 1.0, method="mc")


def test_expect2_gauss_hermite_available_and_converges():
    """Q×Q Gauss–Hermite: exact for ⟨sin sin⟩ = e^{−(C_aa+C_bb)/2} sinh C_ab by Q = 16; for tanh the
    error falls from 4e-3 (Q = 8) to 1e-13 (Q = 128) at K = 1 and from 5e-2 to 1e-8 at K = 3."""
    exact = math.exp(-1.0) * math.sinh(0.5)
    assert float(expect2(np.sin, np.sin, 1.0, 0.5, 1.0, method="hermite", order=16)) == pytest.approx(exact, rel=1e-13)
    for C, final in (((1.0, 0.5, 1.0), 1e-12), ((3.0, 2.5, 3.0), 1e-7)):
        ref = float(expect2(np.tanh, np.tanh, *C))
        errs = [abs(float(expect2(np.tanh, np.tanh, *C, method="hermite", order=Q)) / ref - 1)
                for Q in (8, 16, 32, 64, 128)]
        assert all(b < a for a, b in zip(errs, errs[1:])), errs
        assert errs[-1] < final


# ---------------------------------------------------------------------------------------------
# expect_powers (3-D/4-D)


def _wick(C, powers):
    idx = [i for i, p in enumerate(powers) for _ in range(p)]
    return gaussian_moment(C, idx)


@pytest.mark.parametrize("powers", [(1, 1, 1, 1), (2, 1, 1, 0), (2, 2, 1, 1), (3, 1, 2, 0), (2, 2, 2, 2),
                                    (4, 0, 2, 2), (1, 1, 1, 0), (3, 1, 1, 1), (1, 0, 0, 0)])
@pytest.mark.parametrize("k", [3, 4])
def test_expect_powers_polynomials_are_exact(k, powers):
    """f(z) = z: ⟨Π z_k^{p_k}⟩ is a Wick sum; the tensor Gauss–Hermite rule is exact for it."""
    pw = powers[:k]
    Cs = [3.0 * R4[:k, :k], 0.4 * R4[:k, :k] * np.outer([1, -1, 1, -1][:k], [1, -1, 1, -1][:k])]
    v = np.asarray([1.0, 2.0, 0.5, 1.5][:k])
    Cs.append(np.outer(v, v))                                          # rank 1
    Cs.append(np.block([[R4[:2, :2], R4[:2, :2]], [R4[:2, :2], R4[:2, :2]]])[:k, :k])   # z3 = z1, z4 = z2
    for C in Cs:
        exact = _wick(C, pw)
        got = float(expect_powers(lambda z: z, C[None], np.array([pw]))[0])
        assert got == pytest.approx(exact, rel=1e-12, abs=1e-12 * max(1.0, np.max(np.diag(C))) ** (sum(pw) / 2))


def test_expect_powers_batches_and_mixed_patterns():
    C = np.stack([R4, 2.0 * R4, 0.5 * R4])
    pw = np.array([[1, 1, 1, 1], [2, 2, 0, 0], [1, 1, 1, 1]])
    got = expect_powers(lambda z: z * z, C, pw)
    for i in range(3):
        idx = [j for j, p in enumerate(pw[i]) for _ in range(2 * p)]
        assert got[i] == pytest.approx(gaussian_moment(C[i], idx), rel=1e-12)
    assert expect_powers(np.tanh, np.zeros((0, 3, 3)), np.zeros((0, 3), int)).shape == (0,)


def _documented(k, K, kinked):
    """Relative accuracy of expect_powers at its default orders, as documented in pdlt.gaussian."""
    if kinked:
        return ACCURACY_BOUNDS[("relu", k)]
    Ks = sorted(key[2] for key in ACCURACY_BOUNDS if key[:2] == ("tanh", k))
    return ACCURACY_BOUNDS[("tanh", k, next(K_ for K_ in Ks if K_ >= K))]


@pytest.fixture(scope="module")
def mc_samples():
    """2e6 draws of z ~ N(0, R4) (fixed seed); the leading k columns are N(0, R4[:k, :k])."""
    rng = np.random.default_rng(20240617)
    return rng.standard_normal((2_000_000, 4)) @ np.linalg.cholesky(R4).T


@pytest.mark.parametrize("k, powers", [(3, (2, 1, 1)), (4, (1, 1, 1, 1))])
@pytest.mark.parametrize("name", ["tanh", "relu"])
def test_expect_powers_vs_monte_carlo(name, k, powers, mc_samples):
    """Against 2e6 Monte Carlo samples: |quadrature − MC| ≤ 4 stderr + the documented quadrature
    error (for ReLU in 4-D the two are comparable: 3e-3 vs ≈ 2e-3 relative)."""
    f, kinked, K = (np.tanh, False, 0.5) if name == "tanh" else (relu, True, 1.0)
    C = K * R4[:k, :k]
    vals = np.prod(f(math.sqrt(K) * mc_samples[:, :k]) ** np.asarray(powers), axis=1)
    mc, se = vals.mean(), vals.std(ddof=1) / math.sqrt(vals.size)
    got = float(expect_powers(f, C[None], np.array([powers]), kinked=kinked)[0])
    assert abs(got - mc) <= 4 * se + _documented(k, K, kinked) * abs(got), (got, mc, se)


@pytest.mark.parametrize("name", ["tanh", "relu", "cube"])
def test_expect_powers_singular_equals_lower_dimensional(name):
    """Repeated variables give zero Cholesky pivots; the tensor rule then collapses *exactly* (to
    rounding) onto the lower-dimensional rule of the same order, and so agrees with the precise
    1-D/2-D rules to within the Gauss–Hermite error of that order (exact for polynomials)."""
    f = {"tanh": np.tanh, "relu": relu, "cube": lambda z: z ** 3}[name]
    kinked = name == "relu"
    C2 = np.array([[0.8, 0.5], [0.5, 0.6]])
    C3 = R4[:3, :3]

    def ep(C, pw, order=None):
        return float(expect_powers(f, np.asarray(C)[None], np.array([pw]), order=order, kinked=kinked)[0])

    def two(p, q):
        return float(expect2(lambda z: f(z) ** p, lambda z: f(z) ** q, C2[0, 0], C2[0, 1], C2[1, 1]))

    sub = lambda C, idx: C[np.ix_(idx, idx)]  # noqa: E731  covariance of (z_idx[0], z_idx[1], …)
    cases = [  # (singular covariance, its powers, the lower-dimensional covariance, powers, precise value)
        (sub(C2, [0, 0, 1]), (1, 1, 1), C2, (2, 1), two(2, 1)),
        (sub(C2, [0, 1, 1]), (2, 1, 1), C2, (2, 2), two(2, 2)),
        (sub(C2, [0, 0, 1, 1]), (1, 1, 1, 1), C2, (2, 2), two(2, 2)),
        (sub(C2, [0, 0, 0, 1]), (1, 1, 1, 1), C2, (3, 1), two(3, 1)),
        (sub(C2, [1, 1, 1, 1]), (1, 1, 1, 1), C2[1:, 1:], (4,), float(expect1(lambda z: f(z) ** 4, C2[1, 1]))),
        (sub(C3, [0, 1, 2, 1]), (1, 1, 1, 1), C3, (1, 2, 1), None),
    ]
    for C, pw, C_low, pw_low, precise in cases:
        Q = ORDERS["kinked" if kinked else "smooth"][len(pw)]    # the default order of the singular call
        got = ep(C, pw)
        assert got == pytest.approx(ep(C_low, pw_low, order=Q), rel=1e-12, abs=1e-15), (pw, pw_low)
        if precise is not None:
            tol = 1e-12 if name == "cube" else 10 * _documented(len(pw), 1.0, kinked)
            assert got == pytest.approx(precise, rel=tol), (pw, pw_low)


# ---------------------------------------------------------------------------------------------
# The measured accuracy table (the numbers quoted in pdlt.gaussian's module docstring)

#: Asserted relative-error bounds at the default orders, generic covariance K·R4 (docstring values
#: rounded up): ("tanh", k, K) and ("relu", k).
ACCURACY_BOUNDS = {
    ("tanh", 3, 0.3): 1e-7, ("tanh", 3, 1.0): 1e-4, ("tanh", 3, 3.0): 1e-2, ("tanh", 3, 15.0): 1e-1,
    ("tanh", 4, 0.3): 1e-5, ("tanh", 4, 1.0): 1e-3, ("tanh", 4, 3.0): 1e-2, ("tanh", 4, 15.0): 2e-1,
    ("relu", 3): 1e-3, ("relu", 4): 1e-2,
}


def test_accuracy_table():
    rows = []      # (what, K, measured relative error, asserted bound)
    # 1-D: default split rule vs mpmath (also Gauss–Hermite 64 for contrast)
    for K in (0.1, 0.3, 1.0, 3.0, 15.0):
        err = max(abs(float(expect1(lambda z, a=get_activation(n): a.sigma(z) ** 2, K)) / _mp_expect1(n, 2, K) - 1)
                  for n in SMOOTH)
        rows.append(("1-D split (96), <s^2> tanh/gelu/swish/sigmoid", K, err, 1e-12))
    for K in (1.0, 3.0, 15.0):
        h = float(expect1(lambda z: np.tanh(z) ** 2, K, method="hermite", order=64))
        rows.append(("1-D Gauss-Hermite 64, <tanh^2>", K, abs(h / _mp_expect1("tanh", 2, K) - 1), None))
    # 2-D: polar rule at the default order 48 and at 32 (pdlt.theory's default) vs adaptive quadrature
    for K in (0.3, 1.0, 3.0, 15.0):
        e48 = e32 = 0.0
        for rho in (0.3, 0.99, -0.99):
            C = (K, rho * K, K)
            for n in SMOOTH:
                a, fm = get_activation(n), _MATH[n][0]
                ref = _quad2(fm, fm, *C)
                e48 = max(e48, abs(float(expect2(a.sigma, a.sigma, *C)) / ref - 1))
                e32 = max(e32, abs(float(expect2(a.sigma, a.sigma, *C, order=32)) / ref - 1))
        rows.append(("2-D polar (48), rho in {.3,+-.99}", K, e48, 1e-12 if K <= 3 else 1e-8))
        rows.append(("2-D polar (32), rho in {.3,+-.99}", K, e32, 1e-7 if K <= 3 else 1e-5))
    # 3-D/4-D: nested Gauss–Hermite at the default orders vs the nested kink-split reference
    for k, pw in ((3, (2, 1, 1)), (4, (1, 1, 1, 1))):
        for name, f, kinked, Ks in (("tanh", np.tanh, False, (0.3, 1.0, 3.0, 15.0)), ("relu", relu, True, (1.0,))):
            for K in Ks:
                C = K * R4[:k, :k]
                ref = _nested_reference(f, C, pw, 12 if k == 3 else 8)
                got = float(expect_powers(f, C[None], np.array([pw]), kinked=kinked)[0])
                bound = ACCURACY_BOUNDS[(name, k, K)] if name == "tanh" else ACCURACY_BOUNDS[(name, k)]
                rows.append((f"{k}-D Gauss-Hermite (default), {name}, powers {pw}", K, abs(got / ref - 1), bound))
    print("\n  measured relative errors of pdlt.gaussian (default orders unless stated)")
    for what, K, err, bound in rows:
        b = "(not asserted)" if bound is None else f"<= {bound:.0e}"
        print(f"  {what:<58s} K={K:<5g} {err:9.1e}  {b}")
    for what, K, err, bound in rows:
        if bound is not None:
            assert err <= bound, (what, K, err, bound)


def test_nested_reference_is_converged():
    """The reference itself: 3-D at n_p = 12 vs 14 agree to ≲ 1e-9; polynomial and ReLU moments ≲ 1e-8."""
    C = 3.0 * R4[:3, :3]
    a, b = (_nested_reference(np.tanh, C, (2, 1, 1), n) for n in (12, 14))
    assert abs(a - b) <= 1e-9 * abs(b)
    # exact: polynomial moments and the ReLU second moment
    assert _nested_reference(lambda z: z, C, (2, 1, 1), 12) == pytest.approx(_wick(C, (2, 1, 1)), rel=1e-8)
    assert _nested_reference(relu, C, (2, 0, 0), 12) == pytest.approx(1.5, rel=1e-8)


# ---------------------------------------------------------------------------------------------
# psd_cholesky


def test_psd_cholesky_positive_definite_batch():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((20, 4, 4))
    C = A @ np.swapaxes(A, -1, -2) + 0.1 * np.eye(4)
    L = psd_cholesky(C)
    np.testing.assert_allclose(L @ np.swapaxes(L, -1, -2), C, rtol=1e-12, atol=1e-12)
    assert np.all(np.triu(L, 1) == 0) and np.all(np.diagonal(L, axis1=-2, axis2=-1) > 0)
    np.testing.assert_allclose(L, np.linalg.cholesky(C), rtol=1e-12, atol=1e-12)


def test_psd_cholesky_rank_deficient():
    rng = np.random.default_rng(1)
    B = rng.standard_normal((6, 4, 2))
    C = np.concatenate([
        B @ np.swapaxes(B, -1, -2),                                         # rank 2
        R4[np.ix_([0, 1, 0, 2], [0, 1, 0, 2])][None],                       # repeated input
        np.full((1, 4, 4), 2.5),                                            # rank 1, all equal
        np.zeros((1, 4, 4)),                                                # zero kernel
        np.diag([1.0, 0.0, 2.0, 0.0])[None],                               # zero variances
    ])
    L = psd_cholesky(C)
    np.testing.assert_allclose(L @ np.swapaxes(L, -1, -2), C, rtol=1e-10, atol=1e-12)
    assert np.all(np.triu(L, 1) == 0) and np.all(np.isfinite(L))
    assert np.all(np.diagonal(L, axis1=-2, axis2=-1) >= 0)
    assert np.all(L[6][:, 2] == 0) and np.all(L[8] == 0)     # dropped columns are exactly zero


def test_sigma4_tensor_of_relu_with_three_distinct_inputs_matches_monte_carlo():
    """⟨σ_aσ_bσ_cσ_d⟩ of ReLU over three distinct inputs (the kink-split rule; the tensor Gauss–Hermite
    rule used before was 1.5 % off on ⟨σ_0σ_1²σ_2⟩): 4M draws, within 4 stderr (seeds 0–2 agree)."""
    from pdlt.theory._gauss import Expectations

    K = np.array([[1.3, 0.4, -0.2], [0.4, 0.9, 0.3], [-0.2, 0.3, 1.1]])
    T = Expectations(get_activation("relu")).sigma4_tensor(K)
    z = np.maximum(np.random.default_rng(0).standard_normal((4_000_000, 3)) @ np.linalg.cholesky(K).T, 0.0)
    for idx in [(0, 0, 1, 2), (0, 1, 1, 2), (0, 1, 2, 2)]:
        x = np.prod(z[:, list(idx)], axis=1)
        assert abs(T[idx] - x.mean()) < 4 * x.std() / np.sqrt(x.size), (idx, T[idx], x.mean())
