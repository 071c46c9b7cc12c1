"""Criticality engine (book Ch. 5): susceptibilities, fixed points, universality classes, power laws.

Every critical point is checked against the recursion it claims to make marginal: the kernel map
returns K* and χ∥ = χ⊥ = 1 there; the asymptotic laws are checked against iterated recursions.
"""

import json
import math

import numpy as np
import pytest
from scipy import integrate

import pdlt.theory
from pdlt import MLP
from pdlt.theory.criticality import (CLASSES, Criticality, FixedPoint, PowerLaw, chi_parallel, chi_perp,
                                     criticality, fixed_points, h, kernel_map)

ALPHA = math.sqrt(2.5)


class PolyHalfStable(pdlt.activations.Activation):
    """σ = z + √2.5 z² − z³: every moment is a polynomial in K, K* = 1/18 exactly (see below)."""

    name = "poly_half_stable"

    def sigma(self, z):
        z = np.asarray(z, dtype=float)
        return z + ALPHA * z ** 2 - z ** 3

    def derivative(self, z, order=1):
        z = np.asarray(z, dtype=float)
        return [self.sigma(z), 1 + 2 * ALPHA * z - 3 * z * z, 2 * ALPHA - 6 * z,
                -6.0 + 0 * z, 0 * z][order]


def quad(f, K):
    """⟨f(z)⟩_K by adaptive quadrature (independent of pdlt.gaussian)."""
    s = math.sqrt(K)
    return integrate.quad(lambda u: f(s * u) * math.exp(-u * u / 2) / math.sqrt(2 * math.pi),
                          -np.inf, np.inf, epsabs=1e-14, epsrel=1e-13, limit=200)[0]


# --------------------------------------------------------------------------------------------
# susceptibilities


def test_relu_susceptibilities_are_constant():
    K = np.array([1e-3, 0.1, 1.0, 7.0])
    np.testing.assert_allclose(chi_parallel("relu", K, 2.0), 1.0, atol=1e-13)
    np.testing.assert_allclose(chi_perp("relu", K, 2.0), 1.0, atol=1e-13)
    np.testing.assert_array_equal(h("relu", K, 2.0), 0.0)
    np.testing.assert_allclose(chi_perp("leaky_relu", K, 1.0), (1 + 0.01 ** 2) / 2, rtol=1e-14)


def test_sin_closed_forms():
    """g = (1 − e^{−2K})/2, ⟨cos²⟩ = (1 + e^{−2K})/2."""
    K = np.array([0.05, 0.5, 2.0, 9.0])
    e = np.exp(-2 * K)
    np.testing.assert_allclose(chi_parallel("sin", K, 1.3), 1.3 * e, rtol=1e-12)
    np.testing.assert_allclose(chi_perp("sin", K, 1.3), 1.3 * (1 + e) / 2, rtol=1e-13)
    np.testing.assert_allclose(h("sin", K, 1.3), -1.3 * e / 2, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("K", [0.05, 0.7, 4.0])
def test_tanh_against_adaptive_quadrature(K):
    sech2 = lambda z: 1 - np.tanh(z) ** 2  # noqa: E731
    cpar = quad(lambda z: np.tanh(z) ** 2 * (z * z - K), K) / (2 * K * K)
    cperp = quad(lambda z: sech2(z) ** 2, K)
    hh = quad(lambda z: sech2(z) ** 2 * (z * z - K), K) / (4 * K * K)
    assert chi_parallel("tanh", K) == pytest.approx(cpar, rel=1e-10)
    assert chi_perp("tanh", K) == pytest.approx(cperp, rel=1e-12)
    assert h("tanh", K) == pytest.approx(hh, rel=1e-8, abs=1e-12)


@pytest.mark.parametrize("act", ["gelu", "swish", "erf", lambda z: np.tanh(z) + 0.1 * z])
def test_derivative_identities(act):
    """χ∥ = df/dK with f the kernel map (C_b drops out), and h = ½ dχ⊥/dK."""
    K = np.array([0.3, 1.5, 6.0])
    d = 1e-4 * K
    dmap = (kernel_map(act, K + d, 0.2, 1.7) - kernel_map(act, K - d, 0.2, 1.7)) / (2 * d)
    np.testing.assert_allclose(chi_parallel(act, K, 1.7), dmap, rtol=1e-7)
    dperp = (chi_perp(act, K + d, 1.7) - chi_perp(act, K - d, 1.7)) / (2 * d)
    np.testing.assert_allclose(h(act, K, 1.7), dperp / 2, rtol=1e-5, atol=1e-9)


def test_shapes_follow_K():
    assert np.shape(chi_parallel("tanh", 0.5)) == ()
    assert chi_perp("gelu", np.ones((2, 3))).shape == (2, 3)
    assert h("sin", [0.1, 0.2]).shape == (2,)
    assert kernel_map("tanh", 0.0, 0.3, 1.0) == pytest.approx(0.3)


# --------------------------------------------------------------------------------------------
# universality classes and critical values


@pytest.mark.parametrize("act, C_W, nu", [
    ("relu", 2.0, 5.0),
    ("linear", 1.0, 2.0),
    *[(pdlt.activations.LeakyReLU(a), 2 / (1 + a * a), (5 - 2 * a * a + 5 * a ** 4) / (1 + a * a) ** 2)
      for a in (0.01, 0.2, 0.5)],
])
def test_scale_invariant(act, C_W, nu):
    c = criticality(act, depth=100)
    assert c.universality_class == "scale-invariant"
    assert c.C_b == 0.0 and c.K_star is None
    assert c.C_W == pytest.approx(C_W, abs=1e-8)
    assert c.nu == pytest.approx(nu, rel=1e-10)
    # the fitted vertex law (a power law fitted to ν(ℓ−1)) reproduces V/(nK²) at the last layer
    fit = c.law("V/(nK²)", "recursion fit")
    assert fit.exponent == pytest.approx(1.0, abs=0.05)       # local slope of ℓ − 1 on [10, 100]
    assert fit.at(100) == pytest.approx(nu * 99, rel=1e-2)
    assert c.law("V/(nK²)").source == "analytic"


def test_callable_relu_is_scale_invariant():
    c = criticality(lambda z: np.maximum(z, 0.0), depth=50)
    assert c.universality_class == "scale-invariant"
    assert c.C_W == pytest.approx(2.0, abs=1e-10) and c.nu == pytest.approx(5.0, rel=1e-10)


@pytest.mark.parametrize("act, a1", [("tanh", -2.0), ("sin", -1.0), ("erf", -2.0)])
def test_k_star_zero(act, a1):
    c = criticality(act, depth=50)
    assert c.universality_class == "K*=0"
    assert (c.C_b, c.K_star) == (0.0, 0.0)
    s1 = 2 / math.sqrt(math.pi) if act == "erf" else 1.0
    assert c.C_W == pytest.approx(1 / s1 ** 2, abs=1e-12)
    assert c.a1 == pytest.approx(a1, abs=1e-10) and c.b1 == pytest.approx(a1, abs=1e-10)
    assert c.p_perp == pytest.approx(1.0, abs=1e-10)
    assert c.nu == pytest.approx(2 / 3) and c.stable_side.startswith("above")
    assert c.law("K").coefficient == pytest.approx(-1 / a1)
    assert c.law("G1").coefficient == pytest.approx(1 / (3 * a1))


def test_user_callable_tanh_plus_linear():
    """σ₁ = 1.1, σ₂ = 0, σ₃ = −2 ⇒ a₁ = b₁ = −2/1.1 < 0: K*=0 class with C_W = 1/1.21."""
    c = criticality(lambda z: np.tanh(z) + 0.1 * z, depth=400)
    assert c.universality_class == "K*=0"
    assert c.C_b == 0.0 and c.C_W == pytest.approx(1 / 1.21, abs=1e-10)
    assert c.a1 == pytest.approx(-2 / 1.1, abs=1e-8) and c.p_perp == pytest.approx(1.0, abs=1e-8)
    assert c.law("K").text == "K ≈ 0.55 ℓ^-1"
    assert c.law("K", "recursion fit").exponent == pytest.approx(-1.0, abs=0.04)


# Values of the formula sheet §3(c) ([N; S4]); the 10-digit values are ours.
HALF_STABLE = {
    "gelu": dict(K_star=3.56155, C_W=1.98305826, C_b=0.172922391, side="above"),
    "swish": dict(K_star=14.3202, C_W=1.98800468, C_b=0.555143171, side="below"),
}


@pytest.mark.parametrize("name", HALF_STABLE)
def test_half_stable_values_and_recursion(name):
    ref = HALF_STABLE[name]
    c = criticality(name, depth=50)
    assert c.universality_class == "half-stable" and c.stable_side.startswith(ref["side"])
    assert c.K_star == pytest.approx(ref["K_star"], rel=2e-6)
    assert c.C_W == pytest.approx(ref["C_W"], rel=1e-8)
    assert c.C_b == pytest.approx(ref["C_b"], rel=1e-8)
    # the recursion itself: K* is a fixed point with χ∥ = χ⊥ = 1
    assert kernel_map(name, c.K_star, c.C_b, c.C_W) == pytest.approx(c.K_star, abs=1e-10)
    assert chi_parallel(name, c.K_star, c.C_W) == pytest.approx(1.0, abs=1e-9)
    assert chi_perp(name, c.K_star, c.C_W) == pytest.approx(1.0, abs=1e-9)
    # ... and pdlt.theory started at K⁽¹⁾ = K* stays there
    x = math.sqrt((c.K_star - c.C_b) / c.C_W)
    th = pdlt.theory(MLP(1, 8, 40, name, C_b=c.C_b, C_W=c.C_W), np.array([[x]]))
    assert th.layer(40).K[0, 0] == pytest.approx(c.K_star, abs=1e-9)
    # half-stable: the map's curvature picks the side, f(K) < K above K* (GELU), > K below (SWISH)
    sign = -1 if ref["side"] == "above" else 1
    for dK in (-0.05, 0.05):
        assert sign * (kernel_map(name, c.K_star + dK, c.C_b, c.C_W) - c.K_star - dK) > 0


def test_callable_matches_registered_swish():
    """No special code for user functions: z·sigmoid(z) as a lambda gives SWISH's critical point."""
    ref = criticality("swish", depth=20)
    c = criticality(lambda z: z / (1 + np.exp(-z)), depth=20)
    assert c.universality_class == "half-stable"
    for k in ("K_star", "C_W", "C_b", "p_perp", "nu"):
        assert getattr(c, k) == pytest.approx(getattr(ref, k), rel=1e-8), k


def test_polynomial_half_stable_exact_and_derived_laws():
    """σ = z + αz² − z³ (α² = 5/2): g′ − ⟨σ′²⟩ = (2α² − 6)K + 18K², so K* = 1/18 and
    ⟨σ′²⟩ = 1 + 4K + 27K², f″ = 8 C_W > 0 (stable from below), p⊥ = 4h/f″ = 7/4 exactly.
    The leading-order laws derived about K* must match the iterated recursions."""
    L = 2000
    c = criticality(PolyHalfStable(), depth=L)
    K = 1 / 18
    C_W = 1 / (1 + 4 * K + 27 * K * K)
    assert c.universality_class == "half-stable" and c.stable_side.startswith("below")
    assert c.K_star == pytest.approx(K, rel=1e-12)
    assert c.C_W == pytest.approx(C_W, rel=1e-12)
    assert c.C_b == pytest.approx(K - C_W * (K + 1.5 * K * K + 15 * K ** 3), abs=1e-14)
    assert c.p_perp == pytest.approx(1.75, rel=1e-10)
    assert c.law("K − K*").coefficient == pytest.approx(-2 / (8 * C_W), rel=1e-10)
    for q in ("K − K*", "1 − χ∥", "1 − χ⊥", "δK[1]", "δδK[2]", "V/(nK²)", "G1"):
        ana, fit = c.law(q), c.law(q, "recursion fit")
        assert fit.exponent == pytest.approx(ana.exponent, abs=0.04), q  # log corrections
    for q in ("K − K*", "1 − χ∥", "1 − χ⊥", "V/(nK²)", "G1"):
        ana, fit = c.law(q), c.law(q, "recursion fit")
        assert fit.at(L) == pytest.approx(ana.at(L), rel=0.03), q


@pytest.mark.parametrize("act, phrase", [
    ("sigmoid", "σ(0) = 0.5 ≠ 0"),
    ("softplus", "σ(0) = 0.693147 ≠ 0"),
    (pdlt.activations.Monomial(2), "(2p−1)/p = 1.5"),
    (pdlt.activations.Monomial(3), "(2p−1)/p = 1.66667"),
    (lambda z: np.abs(z) ** 1.5, "(2p−1)/p = 1.33333"),
])
def test_no_criticality(act, phrase):
    c = criticality(act)
    assert c.universality_class == "none"
    assert (c.C_b, c.C_W, c.K_star) == (None, None, None) and c.asymptotics == ()
    assert phrase in c.explanation
    if isinstance(act, str):
        assert "no root for K in (1e-06, 60)" in c.explanation


# --------------------------------------------------------------------------------------------
# asymptotics at depth: analytic laws against the iterated recursions


def test_tanh_asymptotics_match_recursion():
    L = 2000
    c = criticality("tanh", depth=L)
    fit = {p.quantity: p for p in c.asymptotics if p.source == "recursion fit"}
    for p in c.asymptotics:
        if p.source == "analytic":
            assert fit[p.quantity].exponent == pytest.approx(p.exponent, abs=0.02), p.quantity
    assert fit["K"].at(L) * L == pytest.approx(0.5, abs=0.01)
    assert fit["V/(nK²)"].at(L) / L == pytest.approx(2 / 3, abs=0.005)
    assert fit["G1"].at(L) == pytest.approx(-1 / 6, abs=0.005)
    # the raw recursion (pdlt.theory), independently of the fit
    th = pdlt.theory(MLP(1, 1, L, "tanh", C_b=0.0, C_W=1.0), np.array([[1.0]]))
    s = th.layer(L)
    K, V = s.K[0, 0], s.V[0, 0, 0, 0]
    assert K * L == pytest.approx(0.5, abs=0.01)
    assert chi_perp("tanh", K) == pytest.approx(1 - 1 / L, rel=1e-3)
    assert chi_parallel("tanh", K) == pytest.approx(1 - 2 / L, rel=1e-3)
    assert V / K ** 2 / L == pytest.approx(2 / 3, abs=0.005)


def test_half_stable_fits_are_flagged_pre_asymptotic():
    c = criticality("gelu", depth=200)
    fits = [p for p in c.asymptotics if p.source == "recursion fit"]
    assert fits and all("pre-asymptotic" in p.text for p in fits)
    assert all("(derived)" in p.text for p in c.asymptotics if p.source == "analytic")


# --------------------------------------------------------------------------------------------
# fixed points


def test_fixed_points_simple_and_degenerate():
    (fp,) = fixed_points("relu", 0.1, 1.0)
    assert fp == FixedPoint(pytest.approx(0.2, rel=1e-12), pytest.approx(0.5), pytest.approx(0.5), "stable")
    (line,) = fixed_points("relu", 0.0, 2.0)
    assert math.isnan(line.K) and line.stability.startswith("marginal (line")
    assert fixed_points("relu", 0.1, 3.0) == []                      # K runs off to infinity
    assert [f.stability for f in fixed_points("relu", 0.0, 3.0)] == ["unstable"]
    (zero,) = fixed_points("tanh", 0.0, 1.0)
    assert zero.K == 0.0 and zero.stability == "marginal (stable for K > K*)"
    (fp,) = fixed_points("tanh", 0.3, 1.5)
    assert fp.stability == "stable" and fp.chi_parallel < 1
    assert kernel_map("tanh", fp.K, 0.3, 1.5) == pytest.approx(fp.K, rel=1e-13)


@pytest.mark.parametrize("name, expect", [
    ("gelu", ["stable", "marginal (stable for K > K*)"]),
    ("swish", ["marginal (stable for K < K*)", "stable"]),
])
def test_fixed_points_at_half_stable_criticality(name, expect):
    """The critical point is a tangency (f − K does not change sign); a second, stable but
    non-critical fixed point sits on the unstable side."""
    c = criticality(name, depth=20)
    fps = fixed_points(name, c.C_b, c.C_W)
    assert [f.stability for f in fps] == expect
    crit = next(f for f in fps if f.stability.startswith("marginal"))
    assert crit.K == pytest.approx(c.K_star, rel=1e-8)
    for f in fps:
        assert kernel_map(name, f.K, c.C_b, c.C_W) == pytest.approx(f.K, rel=1e-12)


# --------------------------------------------------------------------------------------------
# errors


def test_overflowing_activation():
    with pytest.raises(ValueError, match=r"callable <lambda>.*diverges or overflows"):
        criticality(lambda z: np.exp(z ** 2))
    with pytest.raises(ValueError, match="diverges or overflows"):
        chi_parallel(lambda z: np.exp(z ** 2), 1.0)


@pytest.mark.parametrize("act", ["step", lambda z: np.heaviside(z, 0.5), lambda z: np.sign(z - 0.3)])
def test_discontinuous_activation(act):
    with pytest.raises(ValueError, match="no criticality: σ′ is a δ-function.*χ⊥.*diverges"):
        criticality(act)
    with pytest.raises(ValueError, match="δ-function"):
        chi_perp(act, 1.0)


@pytest.mark.parametrize("K_range", [(0.0, 1.0), (2.0, 1.0), (1.0, float("nan")), (1.0,), "ab", None])
def test_bad_K_range(K_range):
    with pytest.raises(ValueError, match="K_range"):
        criticality("tanh", K_range=K_range)
    with pytest.raises(ValueError, match="K_range"):
        fixed_points("tanh", 0.0, 1.0, K_range=K_range)


def test_bad_parameters():
    with pytest.raises(ValueError, match="K must be finite and > 0"):
        chi_parallel("tanh", [1.0, -1.0])
    with pytest.raises(ValueError, match="K must be finite and > 0"):
        h("tanh", 0.0)
    with pytest.raises(ValueError, match="C_W"):
        chi_perp("tanh", 1.0, C_W=0.0)
    with pytest.raises(ValueError, match="C_b"):
        kernel_map("tanh", 1.0, -0.1, 1.0)
    with pytest.raises(ValueError, match="depth"):
        criticality("tanh", depth=5)
    with pytest.raises(ValueError, match="unknown activation"):
        criticality("nope")
    with pytest.raises(ValueError, match="identically zero"):
        criticality(lambda z: 0.0 * z)


# --------------------------------------------------------------------------------------------
# output


@pytest.mark.parametrize("act", ["relu", "tanh", "gelu", "sigmoid"])
def test_report_and_dict(act):
    c = criticality(act, depth=30)
    assert isinstance(c, Criticality) and c.universality_class in CLASSES
    d = json.loads(json.dumps(c.to_dict()))
    assert d["universality_class"] == c.universality_class and d["activation"] == act
    assert all(set(p) == {"quantity", "coefficient", "exponent", "source", "text"} for p in d["asymptotics"])
    text = c.report()
    assert c.universality_class in text.splitlines()[0]
    if c.C_W is not None:
        assert f"C_W = {c.C_W:.10g}" in text
    assert all(isinstance(p, PowerLaw) and p.source in ("analytic", "recursion fit") for p in c.asymptotics)
