"""Residual MLP recursions (book App. B, formula sheet §10): limits, an independent derivation, ν(ξ), criticality."""

import math

import numpy as np
import pytest

import pdlt.theory
from pdlt import MLP
from pdlt.activations import get_activation
from pdlt.theory._gauss import Expectations
from pdlt.theory.residual import (hermite_coefficients, plain_critical, residual_critical, residual_net,
                                  residual_nu, residual_nu_sheet, residual_theory, universality_class)
from pdlt.theory.two_input import susceptibilities

X = np.array([1.0, 0.5, -0.8])


def sheet_vertex(net, xi, x):
    """Formula sheet §10: V' = C_W²Var(σ²) + 2ξ²C_W(⟨z²σ²⟩ − K⟨σ²⟩) + r χ_∥² V (the even-cumulant closure)."""
    E = Expectations(net.activation)
    cb, cw = net.hyper(1)
    K, V, out = cb + cw * float(x @ x) / net.input_dim, 0.0, []
    for ell in range(1, net.depth + 1):
        out.append((K, V))
        cb, cw = net.hyper(min(ell + 1, net.depth))
        g, d2, _ = (float(a) for a in E.g_derivs(K))
        var = float(E.sigma4(K)) - g * g
        r = net.n(ell) / net.n(ell - 1)
        V = cw * cw * var + 2 * xi * xi * cw * K * K * d2 + r * (xi * xi + 0.5 * cw * d2) ** 2 * V
        K = xi * xi * K + cb + cw * g
    return np.array(out).T


@pytest.mark.parametrize("act, C_b, C_W", [("relu", 0.0, 2.0), ("relu", 0.3, 1.5), ("tanh", 0.0, 1.0),
                                            ("tanh", 0.2, 1.6), ("gelu", 0.172922391, 1.98305826),
                                            ("sin", 0.1, 1.3)])
def test_no_skip_reproduces_the_plain_recursions(act, C_b, C_W):
    """ξ = 0: K, V and G1 equal pdlt.theory's single-input recursions (book Ch. 4)."""
    net = MLP(widths=[3, 16, 24, 24, 20, 16, 16, 16, 8], activation=act, C_b=C_b, C_W=C_W)
    th = pdlt.theory(net, X[None])
    res = residual_theory(net, xi=0.0, x=X)
    for l in range(1, net.depth + 1):
        s = th.layer(l)
        assert res.K[l - 1] == pytest.approx(float(s.K[0, 0]), rel=1e-12)
        assert res.V[l - 1] == pytest.approx(float(s.V.ravel()[0]), rel=1e-10, abs=1e-14)
        assert res.G1[l - 1] == pytest.approx(float(s.G1[0, 0]), rel=1e-9, abs=1e-12)


def test_linear_skip_is_the_sheet_recursion():
    """σ² = z² has Hermite modes 0, 2 only: the closure reduces to formula sheet §10 exactly, and G1 = 0."""
    net = MLP(3, 16, 12, "linear", C_b=0.1, C_W=0.5)
    res = residual_theory(net, xi=0.6, x=X)
    K, V = sheet_vertex(net, 0.6, X)
    np.testing.assert_allclose(res.K, K, rtol=1e-13)
    np.testing.assert_allclose(res.V, V, rtol=1e-10)
    np.testing.assert_allclose(res.G1, 0.0, atol=1e-10)


def test_closure_matches_an_independent_cumulant_derivation():
    r"""σ = √(1 + z + z²), so σ² has Hermite modes 0, 1, 2 only. Then the O(1/n) two-neuron law is
    fixed by V and the odd cumulant T (E[z_i² z_j] = T/n_{ℓ−1}), derived separately by Edgeworth:

        T' = ξ C_W⟨zσ²⟩ + r ξ χ_∥ T,   V' = [sheet] + 2 r χ_∥ C_W (⟨zσ²⟩/K) T,   G1' = r χ_∥ G1 (= 0).
    """
    act = get_activation(lambda z: np.sqrt(1.0 + z + z * z))
    xi, cb, cw = 0.6, 0.1, 0.8
    net = MLP(widths=[3] + [32] * 10, activation=act, C_b=cb, C_W=cw)
    res = residual_theory(net, xi=xi, x=X)
    E = Expectations(act)
    K = cb + cw * float(X @ X) / 3
    V = T = 0.0
    for ell in range(1, net.depth + 1):
        assert res.K[ell - 1] == pytest.approx(K, rel=1e-12)
        assert res.V[ell - 1] == pytest.approx(V, rel=1e-9, abs=1e-13)
        g, d2, _ = (float(a) for a in E.g_derivs(K))
        var = float(E.sigma4(K)) - g * g
        chi = xi * xi + 0.5 * cw * d2
        zs2 = K                                    # ⟨z σ²⟩_K = ⟨z(1 + z + z²)⟩ = K
        V, T = (cw * cw * var + 2 * xi * xi * cw * K * K * d2 + chi * chi * V + 2 * chi * cw * zs2 / K * T,
                xi * cw * zs2 + xi * chi * T)
        K = xi * xi * K + cb + cw * g
    np.testing.assert_allclose(res.G1, 0.0, atol=1e-10)


def test_relu_vertex_depends_on_the_sign_of_xi():
    """The odd Hermite modes of σ² = relu(z)² enter V with ρ^b ∝ ξ^b: V(ξ) ≠ V(−ξ). The sheet's V is even in ξ."""
    xi = math.sqrt(0.5)
    net = residual_net(input_dim=3, width=64, depth=10, activation="relu", xi=xi)
    plus, minus = residual_theory(net, xi=xi, x=X), residual_theory(net, xi=-xi, x=X)
    _, Vs = sheet_vertex(net, xi, X)
    _, Vs_minus = sheet_vertex(net, -xi, X)
    np.testing.assert_allclose(Vs, Vs_minus, rtol=1e-13)
    np.testing.assert_allclose(plus.V[:2], Vs[:2], rtol=1e-12)          # layer 2 is exact for both
    assert plus.V[-1] / minus.V[-1] == pytest.approx(2.525, abs=0.01)
    assert plus.V[-1] / Vs[-1] == pytest.approx(1.915, abs=0.01)


def test_tanh_odd_sigma_even_modes_are_a_small_correction():
    """Odd σ: σ² is even, no odd modes; the modes ≥ 4 of σ² change V by O(K) relative only."""
    xi = math.sqrt(0.5)
    net = residual_net(input_dim=3, width=64, depth=20, activation="tanh", xi=xi)
    res = residual_theory(net, xi=xi, x=X)
    _, Vs = sheet_vertex(net, xi, X)
    rel = np.abs(res.V[1:] / Vs[1:] - 1)
    assert 1e-4 < rel.max() < 0.02


def test_hermite_coefficients():
    s = hermite_coefficients("linear", 2.0, 6)
    np.testing.assert_allclose(s, [2.0, 0, 2.0 * math.sqrt(2.0), 0, 0, 0, 0], atol=1e-13)
    for act, K in (("relu", 1.3), ("gelu", 3.5), ("tanh", 0.7)):
        E = Expectations(get_activation(act))
        s = hermite_coefficients(act, K, 200)
        g = float(E.g_derivs(K)[0])
        assert s[0] == pytest.approx(g, rel=1e-12)
        # (ReLU's kink leaves a tail Σ_{b>200} s_b² ~ 200^{-3/2}·1e-3 relative)
        assert float(np.sum(s[1:] ** 2)) == pytest.approx(float(E.sigma4(K)) - g * g, rel=1e-6)
    # relu(z)² = z²/2 + z|z|/2: beyond mode 2 only odd modes
    s = hermite_coefficients("relu", 1.0, 12)
    np.testing.assert_allclose(s[4::2], 0.0, atol=1e-13)
    assert s[1] == pytest.approx(math.sqrt(2 / math.pi), rel=1e-12)


def test_universality_classes_and_plain_critical_points():
    assert universality_class("relu") == "scale-invariant"
    assert universality_class("tanh") == "K*=0"
    assert universality_class("sin") == "K*=0"
    assert universality_class("gelu") == "half-stable"
    assert universality_class("swish") == "half-stable"
    assert universality_class("sigmoid") == "none"
    assert universality_class("softplus") == "none"
    cb, cw, K = plain_critical("gelu")
    assert (cb, cw, K) == pytest.approx((0.172922391, 1.98305826, 3.56155), rel=1e-6)
    cb, cw, K = plain_critical("swish")
    assert (cb, cw, K) == pytest.approx((0.555143171, 1.98800468, 14.3202), rel=1e-5)
    with pytest.raises(ValueError, match="no critical point"):
        plain_critical("sigmoid")


@pytest.mark.parametrize("xi", [0.3, math.sqrt(0.5), -0.6])
def test_residual_criticality(xi):
    """At (C_b, C_W) = (1 − ξ²)(C_b, C_W)_plain: χ_∥ = χ_⊥ = 1 at the fixed point."""
    x2 = xi * xi
    assert residual_critical("relu", xi) == pytest.approx((0.0, 2 * (1 - x2)))
    assert residual_critical("tanh", xi) == pytest.approx((0.0, 1 - x2))
    cb, cw = residual_critical("gelu", xi)
    K = plain_critical("gelu")[2]
    s = susceptibilities("gelu", K, cw)
    assert x2 + float(s["chi_par"]) == pytest.approx(1.0, rel=1e-9)
    assert x2 + float(s["chi_perp"]) == pytest.approx(1.0, rel=1e-9)
    assert x2 * K + cb + cw * float(s["g"]) == pytest.approx(K, rel=1e-10)
    s = susceptibilities("tanh", 1e-4, 1 - x2)          # K* = 0: χ's → 1 as K → 0
    assert x2 + float(s["chi_par"]) == pytest.approx(1.0, abs=1e-3)
    assert x2 + float(s["chi_perp"]) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="xi"):
        residual_critical("relu", 1.0)


@pytest.mark.parametrize("act", ["relu", "linear", "leaky_relu"])
@pytest.mark.parametrize("xi", [0.0, 0.3, math.sqrt(0.5), -math.sqrt(0.5), 0.9])
def test_nu_of_xi_is_the_slope_of_the_recursion(act, xi):
    """Scale-invariant class at criticality: V^{(ℓ)} − V^{(ℓ−1)} → ν(ξ) K² (iterate, read off the slope)."""
    net = residual_net(input_dim=3, width=100, depth=400, activation=act, xi=xi)
    res = residual_theory(net, xi=xi, x=X)
    nv = res.normalized_vertex()
    assert nv[-1] - nv[-2] == pytest.approx(residual_nu(act, xi), rel=1e-6)
    assert nv[-1] / 399 == pytest.approx(residual_nu(act, xi), rel=0.02)
    np.testing.assert_allclose(res.K, res.K[0], rtol=1e-12)
    if act == "linear" or xi == 0.0:
        assert residual_nu(act, xi) == pytest.approx(residual_nu_sheet(act, xi), rel=1e-10)


def test_nu_values():
    """ν(ξ): formula sheet §10's (1 − ξ²)[(1 − ξ²)ν₀ + 4ξ²] vs the full closure (odd modes, ReLU)."""
    r = math.sqrt(0.5)
    assert residual_nu_sheet("relu", r) == pytest.approx(2.25)
    assert residual_nu("relu", r) == pytest.approx(5.4425, abs=1e-4)
    assert residual_nu("relu", -r) == pytest.approx(1.6654, abs=1e-4)
    assert residual_nu("relu", 0.5) > residual_nu("relu", 0.0) == pytest.approx(5.0)
    assert residual_nu("linear", r) == pytest.approx(1.5)
    assert residual_nu("tanh", r) == pytest.approx(0.5)
    assert residual_nu("tanh", 0.0) == pytest.approx(2 / 3)
    # ν → 0 (linearly in 1 − ξ) as ξ → 1
    nus = [residual_nu("relu", x) for x in (0.9, 0.99, 0.999)]
    assert nus[0] > nus[1] > nus[2] > 0
    assert nus[2] / nus[1] == pytest.approx(0.1, rel=0.05)


def test_tanh_residual_nu_asymptotics():
    """K* = 0 class: K ≈ 1/((1 − ξ²)(−a₁)ℓ) and V/(K²ℓ) → (2/3)(1 − ξ⁴) (formula sheet §10)."""
    xi = math.sqrt(0.5)
    net = residual_net(input_dim=3, width=100, depth=1500, activation="tanh", xi=xi)
    res = residual_theory(net, xi=xi, x=X, modes=16)
    ell = np.arange(1, 1501)
    assert res.K[-1] * ell[-1] * 0.5 * 2 == pytest.approx(1.0, abs=0.01)
    v = res.normalized_vertex() / ell
    target = 2 / 3 * (1 - xi ** 4)
    assert abs(v[-1] - target) < abs(v[149] - target) < abs(v[14] - target) + 0.02
    assert v[-1] == pytest.approx(target, rel=0.01)


@pytest.mark.parametrize("xi", [0.0, 0.5, -0.5])
def test_half_stable_nu_at_the_fixed_point(xi):
    """GELU at its residual critical point with the input at K^{(1)} = K*: K stays, V grows as ν(ξ)K*²."""
    cb, cw = residual_critical("gelu", xi)
    K = plain_critical("gelu")[2]
    x = np.full(3, math.sqrt((K - cb) / cw))
    net = residual_net(input_dim=3, width=100, depth=300, activation="gelu", xi=xi)
    res = residual_theory(net, xi=xi, x=x)
    np.testing.assert_allclose(res.K, K, rtol=1e-8)
    nv = res.normalized_vertex()
    assert nv[-1] - nv[-2] == pytest.approx(residual_nu("gelu", xi, at_fixed_point=True), rel=1e-5)
    # approaching K* from the stable side instead, χ_∥² ≈ 1 − 4/ℓ and ν is a fifth of that
    assert residual_nu("gelu", xi) == pytest.approx(residual_nu("gelu", xi, at_fixed_point=True) / 5)


def test_agrees_with_the_criticality_module():
    """Classes, critical points and ν(ξ = 0) agree with pdlt.theory.criticality (an independent solver)."""
    crit = pytest.importorskip("pdlt.theory.criticality")
    for act in ("relu", "linear", "tanh", "sin", "gelu", "swish", "sigmoid", "softplus"):
        c = crit.criticality(act)
        assert universality_class(act) == c.universality_class
        if c.C_W is None:
            continue
        cb, cw, _ = plain_critical(act)
        assert (cb, cw) == pytest.approx((c.C_b, c.C_W), rel=1e-8, abs=1e-12)
        assert residual_nu(act, 0.0) == pytest.approx(c.nu, rel=1e-6)


def test_validation():
    with pytest.raises(ValueError, match="equal widths"):
        residual_net(widths=[3, 10, 12, 10], activation="relu", xi=0.5)
    residual_net(widths=[3, 10, 12, 10], activation="relu", C_b=0.0, C_W=2.0, xi=0.0)
    with pytest.raises(ValueError, match="input x"):
        residual_theory(input_dim=3, width=8, depth=3, activation="relu", xi=0.5)
    with pytest.raises(ValueError, match="single-input"):
        residual_theory(input_dim=3, width=8, depth=3, activation="relu", xi=0.5, x=np.ones((2, 3)))
    net = residual_net(input_dim=3, width=8, depth=3, activation="relu", xi=0.5)
    assert net.C_W == (1.5,) * 3 and net.C_b == (0.0,) * 3
    st = residual_theory(net, xi=0.5, x=X).layer(2)
    assert st.n_prev == 8 and st.K.shape == (1, 1) and st.V.shape == (1, 1, 1, 1)
