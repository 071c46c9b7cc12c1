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
from pdlt.theory.criticality import (CLASSES, Criticality, FixedPoint, NTKCriticality, PowerLaw, chi_parallel,
                                     chi_perp, criticality, fixed_points, gradient_growth, h, kernel_map)

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


# --------------------------------------------------------------------------------------------
# NTK criticality (book Ch. 9): gradients, learning-rate scalings, Θ's power laws


def theta_recursion(act, C_b, C_W, K1, L, lam_b, lam_W):
    """Θ^{(ℓ)}, ℓ = 1..L, by iterating Θ' = λ_b + λ_W g(K) + χ⊥(K)Θ with K' = C_b + C_W g(K) (sheet §5)."""
    K, T = K1, lam_b + lam_W * (K1 - C_b) / C_W
    out = [T]
    for _ in range(L - 1):
        g = float(kernel_map(act, K, 0.0, 1.0))
        T = lam_b + lam_W * g + float(chi_perp(act, K, C_W)) * T
        K = C_b + C_W * g
        out.append(T)
    return np.array(out)


@pytest.mark.parametrize("act", ["relu", "tanh", "gelu"])
def test_ntk_section_in_report_and_dict(act):
    from pdlt.theory.learning_rates import theta_limit

    c = criticality(act, depth=60)
    assert isinstance(c.ntk, NTKCriticality) and c.ntk.chi_perp == 1.0
    d = json.loads(json.dumps(c.to_dict(), allow_nan=False))
    ntk = d["ntk"]
    assert {"chi_perp", "gradients", "off_criticality", "lambda_b", "lambda_W", "theta_limit",
            "theta_limit_value", "laws", "fluctuations", "unknown"} <= set(ntk)
    assert ntk["lambda_b"].startswith("λ_b^(ℓ) = ") and ntk["lambda_W"].startswith("λ_W^(ℓ) = ")
    assert all(set(p) == {"quantity", "coefficient", "exponent", "source", "text"} for p in ntk["laws"])
    assert all(isinstance(p, PowerLaw) and p.source in ("analytic", "recursion fit") for p in c.ntk.laws)
    text = c.report()
    assert "NTK and learning rates (book Ch. 9)" in text and c.ntk.theta_limit in text
    assert "exploding" in c.ntk.gradients and "vanishing" in c.ntk.gradients
    # Θ^(L) under the equivalence principle is learning_rates.theta_limit's (λ̃ = 1; K* = 1 if needed)
    K1 = 1.0 if c.universality_class == "scale-invariant" else None
    assert c.ntk.theta_limit_value == pytest.approx(theta_limit(act, 1.0, 1.0, K1=K1), rel=1e-12)
    # χ⊥ = 1 at the critical point, by the susceptibility itself
    K_crit = 1.0 if c.K_star is None else (c.K_star or 1e-12)
    assert chi_perp(act, K_crit, c.C_W) == pytest.approx(1.0, abs=1e-9)


def test_ntk_section_absent_without_criticality():
    c = criticality("sigmoid")
    assert c.ntk is None and c.to_dict()["ntk"] is None and "NTK" not in c.report()
    from pdlt.theory.learning_rates import equivalence_principle

    with pytest.raises(ValueError, match="no criticality"):
        equivalence_principle("sigmoid", 5)


@pytest.mark.parametrize("C_W", [1.6, 2.5])
def test_relu_off_criticality_rate_matches_the_theta_recursion(C_W):
    """χ⊥ = C_W/2 for ReLU: Θ's backward factor per layer, against the iterated Θ recursion."""
    gg = gradient_growth("relu", 0.0, C_W)
    assert gg.regime == ("exploding" if C_W > 2 else "vanishing")
    assert gg.chi_perp == pytest.approx(chi_perp("relu", 1.0, C_W), rel=1e-14)
    L, K1 = 40, 0.7
    # λ_W only: Θ^{(ℓ)}/ℓ is exactly exponential in ℓ (C_b = 0), its slope the rate
    T = theta_recursion("relu", 0.0, C_W, K1, L, 0.0, 1.0)
    ell = np.arange(1, L + 1)
    slope = np.polyfit(ell, np.log(T / ell), 1)[0]
    assert slope == pytest.approx(gg.rate, rel=1e-10)
    # λ_b only, exploding: Θ^{(ℓ+1)}/Θ^{(ℓ)} → χ⊥; any case: layer ℓ's bias term carries χ⊥^(L−ℓ)
    T = theta_recursion("relu", 0.0, C_W, K1, L, 1.0, 0.0)
    chi = math.exp(gg.rate)
    np.testing.assert_allclose(T, (chi ** ell - 1) / (chi - 1), rtol=1e-12)   # Σ χ⊥^(ℓ−ℓ')
    if C_W > 2:
        assert math.log(T[-1] / T[-2]) == pytest.approx(gg.rate, rel=1e-3)
    from pdlt.theory.learning_rates import layer_contributions

    lc = layer_contributions(MLP(1, 4, L, "relu", C_b=0.0, C_W=C_W, lambda_b=1.0, lambda_W=0.0), [math.sqrt(K1 / C_W)])
    np.testing.assert_allclose(np.log(lc.bias[:-1] / lc.bias[1:]), gg.rate, rtol=1e-12)
    assert lc.Theta_L == pytest.approx(T[-1], rel=1e-12)


def test_gradient_growth_other_classes():
    tanh = gradient_growth("tanh", 0.0, 0.8)        # K → 0, χ⊥ → C_Wσ₁² = 0.8
    assert tanh.regime == "vanishing" and tanh.K_limit == 0.0 and tanh.chi_perp == pytest.approx(0.8, rel=1e-9)
    assert gradient_growth("tanh", 0.0, 1.0).regime == "critical"
    c = criticality("gelu", depth=30)
    at = gradient_growth("gelu", c.C_b, c.C_W, K1=c.K_star)
    assert at.regime == "critical" and at.K_limit == pytest.approx(c.K_star, rel=1e-6)
    off = gradient_growth("tanh", 0.3, 1.5)          # flows to K* > 0; χ⊥ there sets the rate
    fp = [f for f in fixed_points("tanh", 0.3, 1.5) if f.stability == "stable"][0]
    assert off.K_limit == pytest.approx(fp.K, rel=1e-9) and off.chi_perp == pytest.approx(fp.chi_perp, rel=1e-9)
    assert off.rate == pytest.approx(math.log(fp.chi_perp), rel=1e-9)
    assert off.regime == "vanishing"
    # odd σ, C_b = 0, C_W > 1: χ⊥ > 1 at K* > 0; the iterated Θ recursion grows by χ⊥ per layer
    up = gradient_growth("tanh", 0.0, 1.5)
    assert up.regime == "exploding" and up.K_limit > 0 and up.chi_perp > 1
    T = theta_recursion("tanh", 0.0, 1.5, 1.0, 400, 1.0, 0.0)
    assert math.log(T[-1] / T[-2]) == pytest.approx(up.rate, rel=1e-6)
    with pytest.raises(ValueError, match="δ-function"):
        gradient_growth("step", 0.0, 1.0)
    with pytest.raises(ValueError, match="C_W"):
        gradient_growth("relu", 0.0, 0.0)


@pytest.mark.parametrize("act", ["relu", pdlt.activations.LeakyReLU(0.3)])
def test_scale_invariant_ntk_fluctuation_laws_match_theory(act):
    """A/(nΘ²), B/(nΘ²), D/(nKΘ), F/(nKΘ) ≈ c(f_W) ℓ/n (sheet §5) against pdlt.theory(ntk=True) at depth."""
    c = criticality(act, depth=30)
    L, K1 = 200, 1.0
    x = np.array([[math.sqrt(K1 / c.C_W)]])
    assert c.ntk.law("Θ/Θ₁").at(L) == L
    for lb, lw in ((1.0, 0.0), (0.0, 1.0), (0.6, 0.8)):
        s = pdlt.theory(MLP(1, 50, L, act, C_b=0.0, C_W=c.C_W, lambda_b=lb, lambda_W=lw), x, ntk=True).layer(L)
        T, K = s.Theta[0, 0], s.K[0, 0]
        f_W = lw * K1 / c.C_W / (lb + lw * K1 / c.C_W)
        assert T == pytest.approx(L * (lb + lw * K1 / c.C_W), rel=1e-9)           # Θ = ℓΘ₁
        got = {"A": s.A[0, 0, 0, 0] / T ** 2, "B": s.B[0, 0, 0, 0] / T ** 2,
               "D": s.D[0, 0, 0, 0] / (K * T), "F": s.F[0, 0, 0, 0] / (K * T)}
        for name, value in got.items():
            assert value / L == pytest.approx(c.ntk.fluctuation(name, f_W), rel=3e-2), (name, lb, lw)
    assert c.ntk.law("B/(nΘ²)").coefficient == pytest.approx(c.ntk.fluctuation("B", 0.3))
    assert c.ntk.law("F/(nKΘ)").coefficient == pytest.approx(c.ntk.fluctuation("F", 0.3))
    assert math.isnan(c.ntk.law("A/(nΘ²)").coefficient) and "f_W" in c.ntk.law("A/(nΘ²)").text


def test_k_star_zero_ntk_laws_match_recursion():
    L = 2000
    c = criticality("tanh", depth=L)
    laws = {(p.quantity, p.source): p for p in c.ntk.laws}
    assert laws[("Θ/λ_b", "analytic")].coefficient == pytest.approx(0.5)              # ℓ/(1+p⊥)
    assert laws[("Θ/λ_W", "analytic")].coefficient == pytest.approx(0.5)              # σ₁²/((−a₁)p⊥)
    assert laws[("Θ/λ_b", "recursion fit")].exponent == pytest.approx(1.0, abs=0.02)
    assert laws[("Θ/λ_b", "recursion fit")].at(L) / L == pytest.approx(0.5, abs=0.01)
    assert laws[("Θ/λ_W", "recursion fit")].at(L) == pytest.approx(0.5, abs=0.01)   # sheet [N]: 0.5016
    T = theta_recursion("tanh", 0.0, 1.0, 1.0, L, 0.0, 1.0)
    assert T[-1] == pytest.approx(laws[("Θ/λ_W", "recursion fit")].at(L), rel=2e-3)
    assert c.ntk.fluctuations == {} and "not known" in c.ntk.unknown
    with pytest.raises(ValueError, match="not known"):
        c.ntk.fluctuation("A", 0.5)
    assert c.ntk.lambda_b == "λ_b^(ℓ) = λ̃_b/ℓ" and c.ntk.lambda_W == "λ_W^(ℓ) = λ̃_W"   # p⊥ = 1


def test_half_stable_theta_is_linear_at_the_fixed_point():
    from pdlt.theory.learning_rates import layer_contributions

    c = criticality("gelu", depth=30)
    L = 25
    net = MLP(1, 4, L, "gelu", C_b=c.C_b, C_W=c.C_W, lambda_b=1.0, lambda_W=1.0)
    lc = layer_contributions(net, [math.sqrt((c.K_star - c.C_b) / c.C_W)])
    np.testing.assert_allclose(lc.Theta, np.arange(1, L + 1) * c.ntk.theta_limit_value, rtol=1e-8)
    assert c.ntk.laws[0].quantity == "Θ/Θ₁" and "(derived)" in c.ntk.laws[0].text
    assert "not known" in c.ntk.unknown


# --------------------------------------------------------------------------------------------
# dNTK and ddNTKs at criticality (book Ch. 11, ∞): normalized statistics and their depth scaling

DNTK_KEYS = ("P", "Q", "R", "S", "T", "U")


def normalized(state, name):
    """n·X̂ of a single-input LayerState: P/Θ², Q/Θ², (R, S, T, U)·K/Θ³."""
    from pdlt.theory.criticality import DNTK_STATISTICS

    _, k, m = DNTK_STATISTICS[name]
    return getattr(state, name)[0, 0, 0, 0] * state.K[0, 0] ** m / state.Theta[0, 0] ** k


@pytest.mark.parametrize("act", ["relu", "tanh", "gelu"])
def test_dntk_section_in_report_and_dict(act):
    from pdlt.theory.criticality import DNTK_STATISTICS, DNTKCriticality

    c = criticality(act, depth=60)
    assert isinstance(c.dntk, DNTKCriticality)
    assert [p.quantity for p in c.dntk.laws] == [q for q, _, _ in DNTK_STATISTICS.values()]
    assert all(p.source in ("analytic", "recursion fit") for p in c.dntk.laws)
    assert set(c.dntk.scaling) == set(DNTK_KEYS)
    d = json.loads(json.dumps(c.to_dict(), allow_nan=False))["dntk"]
    assert {"learning_rates", "normalization", "statistics", "laws", "scaling", "exact", "notes", "unknown"} <= set(d)
    assert d["statistics"]["R"] == "RK/(nΘ³)" and len(d["laws"]) == 6
    text = c.report()
    assert "dNTK and ddNTKs at criticality (book Ch. 11, ∞)" in text
    assert all(p.text in text for p in c.dntk.laws)
    if act == "tanh":
        assert all(p.source == "recursion fit" for p in c.dntk.laws) and not c.dntk.exact
        assert "not known to pdlt" in c.dntk.unknown and "λ_b^(ℓ) = λ̃_b/ℓ" in c.dntk.learning_rates
        with pytest.raises(ValueError, match="recursion fits"):
            c.dntk.value("Q", 10, 0.5)
    else:
        assert all(p.source == "analytic" for p in c.dntk.laws) and set(c.dntk.exact) == set(DNTK_KEYS)
    if act == "relu":
        assert "a.e. convention" in c.dntk.law("P").text and c.dntk.law("P").coefficient == 0.0
    if act == "gelu":
        assert all("(derived)" in p.text for p in c.dntk.laws)


def test_dntk_section_absent_without_criticality():
    c = criticality("sigmoid")
    assert c.dntk is None and c.to_dict()["dntk"] is None and "dNTK" not in c.report()


def test_dntk_section_in_the_cli():
    from typer.testing import CliRunner

    from pdlt.cli import app

    result = CliRunner().invoke(app, ["criticality", "relu"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "dNTK and ddNTKs at criticality (book Ch. 11, ∞)" in out and "dNTK/ddNTK depth scaling" in out
    assert "Q/(nΘ²) = r₄f_W(ℓ − 1/ℓ)/(6n) = 0.3333 f_W (ℓ − 1/ℓ)/n" in out
    result = CliRunner().invoke(app, ["criticality", "relu", "--json"])
    assert result.exit_code == 0, result.output
    q = json.loads(result.stdout)["dntk"]["scaling"]["Q"]
    assert q["exponent"] == 1.0 and q["coefficients"] == pytest.approx([0.0, 1 / 3, 0.0], rel=1e-12)   # ReLU: r₄/6


@pytest.mark.parametrize("act", ["relu", pdlt.activations.LeakyReLU(0.3)])
def test_scale_invariant_dntk_laws_match_theory(act):
    """Q/(nΘ²) = r₄f_W(ℓ − 1/ℓ)/(6n), SK/(nΘ³), TK/(nΘ³) exactly, P = R = U = 0, against the full
    recursions (pdlt.theory, ddntk=True) at depth 200 and the closed forms of dntk.scale_invariant_critical."""
    from pdlt.theory.criticality import _constant_solution
    from pdlt.theory.dntk import scale_invariant_critical

    c = criticality(act, depth=30)
    A2 = 1 / c.C_W
    A4 = (c.nu + 1) / 3 * A2 ** 2
    r4 = A4 / A2 ** 2
    L, K1, lb, lw = 200, 0.7, 0.6, 0.8
    f_W = lw * A2 * K1 / (lb + lw * A2 * K1)
    th = pdlt.theory(MLP(1, 50, L, act, C_b=0.0, C_W=c.C_W, lambda_b=lb, lambda_W=lw),
                     np.array([[math.sqrt(K1 / c.C_W)]]), ddntk=True)
    for ell in (2, 3, 17, L):
        s = th.layer(ell)
        for name in DNTK_KEYS:
            assert normalized(s, name) == pytest.approx(float(c.dntk.value(name, ell, f_W)), rel=1e-9, abs=1e-300)
    for name in ("P", "R", "U"):
        assert th.layer(L).__getattribute__(name)[0, 0, 0, 0] == 0.0 and c.dntk.coefficient(name, f_W) == 0.0
    # leading laws c(f_W)·ℓ: the analytic coefficients r₄f_W/6, r₄f_W/12, r₄f_W²/12, relative 1/ℓ² at ℓ = 200
    assert c.dntk.coefficient("Q", f_W) == pytest.approx(r4 * f_W / 6, rel=1e-12)
    assert c.dntk.coefficient("S", f_W) == pytest.approx(r4 * f_W / 12, rel=1e-12)
    assert c.dntk.coefficient("T", f_W) == pytest.approx(r4 * f_W ** 2 / 12, rel=1e-12)
    for name in ("Q", "S", "T"):
        assert c.dntk.exponent(name) == 1.0
        assert normalized(th.layer(L), name) == pytest.approx(c.dntk.coefficient(name, f_W) * L, rel=1.01 / L ** 2)
    # the closed forms of pdlt.theory.dntk at small ℓ, and the generic constant-coefficient solver
    ell = np.arange(1, 9)
    Theta = ell * (lb + lw * A2 * K1)
    cf = scale_invariant_critical(ell, K1, lb, lw, A2, A4)
    for name in DNTK_KEYS:
        _, k, m = pdlt.theory.criticality.DNTK_STATISTICS[name]
        np.testing.assert_allclose(c.dntk.value(name, ell, f_W), cf[name] * K1 ** m / Theta ** k, rtol=1e-12, atol=0)
    sol = _constant_solution(c.activation, 1.0, c.C_W, A2)
    for name in DNTK_KEYS:
        ex = np.zeros((7, 4))
        for X, sign in ((np.array(c.dntk.exact[name]), 1.0), (sol[name], -1.0)):
            ex[:X.shape[0], :X.shape[1]] += sign * X
        assert np.max(np.abs(ex)) <= 1e-12, name


def test_half_stable_dntk_exact_solution_matches_theory():
    """GELU at K⁽¹⁾ = K*: the exact polynomials (derived) against the full recursions at depth 200."""
    c = criticality("gelu", depth=30)
    g_star = (c.K_star - c.C_b) / c.C_W
    L, lb, lw = 200, 0.5, 0.9
    f_W = lw * g_star / (lb + lw * g_star)
    th = pdlt.theory(MLP(1, 50, L, "gelu", C_b=c.C_b, C_W=c.C_W, lambda_b=lb, lambda_W=lw),
                     np.array([[math.sqrt(g_star)]]), ddntk=True)
    for ell in (2, 3, 20, L):
        s = th.layer(ell)
        assert s.K[0, 0] == pytest.approx(c.K_star, rel=1e-10)
        for name in DNTK_KEYS:
            assert normalized(s, name) == pytest.approx(float(c.dntk.value(name, ell, f_W)), rel=1e-8), (name, ell)
    # leading powers: P, U ∝ ℓ; Q, R, S ∝ ℓ²; T ∝ ℓ³ (⟨σσ″⟩ = 0 at criticality; σ″-moments ≠ 0 at K* > 0)
    assert {k: c.dntk.exponent(k) for k in DNTK_KEYS} == {"P": 1, "Q": 2, "R": 2, "S": 2, "T": 3, "U": 1}
    big = 10 ** 6
    for name in DNTK_KEYS:
        lead = c.dntk.coefficient(name, f_W) * big ** c.dntk.exponent(name)
        assert float(c.dntk.value(name, big, f_W)) == pytest.approx(lead, rel=1e-4)
        assert c.dntk.law(name).exponent == c.dntk.exponent(name)


def test_k_star_zero_dntk_fits_match_the_recursions():
    """tanh: the fitted laws (depth 1000) against the iterated recursions at depth 4000; the vectorized
    recursion of the fits against pdlt.theory (ddntk=True) itself."""
    from pdlt.theory.criticality import DNTK_STATISTICS, _dntk_trajectory, _trajectory

    c = criticality("tanh", depth=1000)
    d = c.dntk
    for name in DNTK_KEYS:                             # what comes out: ∝ ℓ/n, except U ∝ 1/(ℓn)
        assert d.exponent(name) == pytest.approx(-1.0 if name == "U" else 1.0, abs=0.03), name
    # twin: _dntk_trajectory = pdlt.theory's single-input recursions (equivalence-principle λ, mixed)
    L = 40
    ell = np.arange(1, L + 1.0)
    lam_b, lam_W = 0.7 / ell, np.full(L, 1.3)
    th = pdlt.theory(MLP(1, 50, L, "tanh", C_b=0.0, C_W=1.0, lambda_b=list(lam_b), lambda_W=list(lam_W)),
                     np.array([[1.0]]), ddntk=True)
    K = np.array([s.K[0, 0] for s in th.layers])
    tr = _dntk_trajectory(c.activation, K, 1.0, lam_b[:, None], lam_W[:, None], np.array([0.7 + 1.3 * K[0]]))
    for name in ("Theta", "B", "F") + DNTK_KEYS:
        ref = np.array([getattr(s, name).reshape(-1)[0] for s in th.layers])
        np.testing.assert_allclose(tr[name][:, 0], ref, rtol=1e-10, atol=1e-12 * np.max(np.abs(ref)))
    # the fits extrapolated to ℓ = 4000 (4× the fitted range), at three weight shares
    L = 4000
    K = _trajectory(c.activation, 0.0, 1.0, 1.0, L)["K"]
    ell = np.arange(1, L + 1.0)
    lbt, lwt = np.array([1.0, 0.6, 0.0]), np.array([0.0, 0.8, 2.0])       # f_W → 0, 0.4, 1
    tr = _dntk_trajectory(c.activation, K, 1.0, lbt / ell[:, None], np.tile(lwt, (L, 1)), lbt + lwt * K[0])
    Th = tr["Theta"][-1]
    f_W = Th[2] / lwt[2] * lwt / Th
    grid = np.linspace(0, 1, 11)
    for name, (_, k, m) in DNTK_STATISTICS.items():
        got = tr[name][-1] * K[-1] ** m / Th ** k
        size = max(abs(d.coefficient(name, f)) for f in grid) * L ** d.exponent(name)
        for g, f in zip(got, f_W):
            assert abs(g - d.coefficient(name, f) * L ** d.exponent(name)) <= 0.04 * size, (name, f, g)
