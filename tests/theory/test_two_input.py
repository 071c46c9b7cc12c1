"""Two nearby inputs: δ-expansion vs the full two-input recursion, and the finite-angle ReLU flow (book §5.1, §5.5)."""

import math

import numpy as np
import pytest

import pdlt.theory
from pdlt import MLP
from pdlt.theory.two_input import (angle, correlation, delta_expansion, from_kernel, relu_angle_asymptotic,
                                   relu_angle_flow, scale_invariant_angle_flow, susceptibilities,
                                   to_kernel)

X0 = np.array([1.0, 0.3, -0.5, 0.2])
DX = np.array([0.2, -0.4, 0.3, 0.5])
DEPTH = 8
#: δx → t·DX; the scaling is read off the smallest three.
SCALES = (0.1, 0.05, 0.025, 0.0125)

#: (activation, C_b, C_W): at criticality and off it (formula sheet §3).
CONFIGS = [
    ("relu", 0.0, 2.0), ("relu", 0.3, 1.5),
    ("tanh", 0.0, 1.0), ("tanh", 0.2, 1.6),
    ("gelu", 0.172922391, 1.98305826), ("gelu", 0.3, 1.5),
]


def _full(net, t):
    dx = t * DX
    th = pdlt.theory(net, np.stack([X0 + dx / 2, X0 - dx / 2]))
    return np.array([th.layer(l).K for l in range(1, net.depth + 1)])


def _slope(ts, errs):
    return float(np.polyfit(np.log(ts), np.log(errs), 1)[0])


def test_gamma_basis_round_trip_and_definition():
    K = np.array([[2.0, 1.5], [1.5, 1.2]])
    g = from_kernel(K)
    np.testing.assert_allclose(g, [0.25 * (2 + 1.2 + 3), 0.5 * (2 - 1.2), 0.25 * (2 + 1.2 - 3)])
    np.testing.assert_allclose(to_kernel(g), K, rtol=1e-15)
    np.testing.assert_allclose(correlation(K), 1.5 / math.sqrt(2.4))
    assert float(angle(K)) == pytest.approx(math.acos(1.5 / math.sqrt(2.4)), rel=1e-12)
    # from the γ-basis directly, and no NaN where a rounded ρ exceeds 1
    psi = 1e-3
    Kc = to_kernel([math.cos(psi / 2) ** 2, 0.0, math.sin(psi / 2) ** 2])
    assert float(angle(Kc)) == pytest.approx(psi, rel=1e-9)
    assert float(angle(np.array([[1.0, 1.0 + 1e-16], [1.0 + 1e-16, 1.0]]))) == 0.0


@pytest.mark.parametrize("act, C_b, C_W", CONFIGS)
def test_first_layer_is_exact(act, C_b, C_W):
    net = MLP(4, 10, DEPTH, act, C_b=C_b, C_W=C_W)
    fl = delta_expansion(net, X0, DX)
    np.testing.assert_allclose(fl.kernel()[0], _full(net, 1.0)[0], rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("act, C_b, C_W", CONFIGS)
def test_delta_expansion_error_shrinks_like_delta_cubed(act, C_b, C_W):
    """max_ℓ |K_δ-expansion − K_full| / max|K| ∝ δ³ (with the O(δ²) midpoint shift δδK_[0]).

    Components: δK_[1] and δδK_[2] have relative errors ∝ δ² for smooth σ. For ReLU δK_[1] is exact
    (K₊₊ − K₋₋ obeys a linear recursion) and δδK_[2] is off by O(δ) relative: the ψ³/(3π) term of
    the arc-cosine map is odd in ψ ∝ |δ|, invisible to an expansion in δ² (book §5.5).
    """
    net = MLP(4, 10, DEPTH, act, C_b=C_b, C_W=C_W)
    fl = delta_expansion(net, X0, DX)
    tot, tot_noshift, rel1, rel2 = [], [], [], []
    for t in SCALES:
        Kt = _full(net, t)
        f = fl.scaled(t)
        scale = np.max(np.abs(Kt))
        tot.append(np.max(np.abs(f.kernel() - Kt)) / scale)
        tot_noshift.append(np.max(np.abs(f.kernel(midpoint_shift=False) - Kt)) / scale)
        gt, gp = from_kernel(Kt), f.gamma()
        rel1.append(np.max(np.abs(gp[:, 1] - gt[:, 1]) / np.abs(gt[:, 1])))
        rel2.append(np.max(np.abs(gp[:, 2] - gt[:, 2]) / np.abs(gt[:, 2])))
    ts = np.array(SCALES)
    assert tot[0] < 2e-3
    assert 2.7 < _slope(ts[1:], tot[1:]) < 3.3, tot
    if act == "relu":
        assert max(rel1) < 1e-10
        assert 0.9 < _slope(ts[1:], rel2[1:]) < 1.1, rel2
    else:
        assert 1.8 < _slope(ts[1:], rel1[1:]) < 2.2, rel1
        assert 1.8 < _slope(ts[1:], rel2[1:]) < 2.2, rel2
        # without δδK_[0] the reconstructed kernel is only O(δ²)
        assert 1.8 < _slope(ts[1:], tot_noshift[1:]) < 2.2, tot_noshift


def test_susceptibilities_against_definitions():
    """χ_∥ = C_W g', χ_⊥ = C_W⟨σ'²⟩, h = ½ dχ_⊥/dK, k₀ = ½ C_W g'' − h (finite differences)."""
    for act, K, C_W in [("tanh", 0.7, 1.3), ("gelu", 2.0, 1.9), ("sin", 0.4, 1.0)]:
        s = susceptibilities(act, K, C_W)
        d = 1e-4
        sp, sm = susceptibilities(act, K + d, C_W), susceptibilities(act, K - d, C_W)
        assert float(s["chi_par"]) == pytest.approx(C_W * (sp["g"] - sm["g"]) / (2 * d), rel=1e-7)
        assert float(s["h"]) == pytest.approx(0.5 * (sp["chi_perp"] - sm["chi_perp"]) / (2 * d), rel=1e-6)
        g2 = (sp["g"] - 2 * s["g"] + sm["g"]) / d ** 2
        assert float(s["k0"]) == pytest.approx(0.5 * C_W * g2 - s["h"], rel=1e-4, abs=1e-8)
    s = susceptibilities("relu", np.array([0.5, 3.0]), 2.0)
    np.testing.assert_allclose(s["chi_par"], 1.0)
    np.testing.assert_allclose(s["chi_perp"], 1.0)
    np.testing.assert_allclose(s["h"], 0.0)


def test_tanh_critical_power_laws():
    """K*=0 class at criticality: K₀₀ ≈ 1/(2ℓ), δK_[1] ∝ ℓ^{-2}, δδK_[2] ∝ ℓ^{-p⊥}, p⊥ = 1 (formula sheet §3(b)).

    So δδK_[2]/K₀₀ tends to a constant: nearby inputs keep a fixed small angle.
    """
    fl = delta_expansion(MLP(4, 64, 2000, "tanh", C_b=0.0, C_W=1.0), X0, 0.02 * DX)
    ell = np.arange(1, 2001)
    assert fl.K00[-1] * 2000 == pytest.approx(0.5, abs=2e-3)
    for arr, p in ((fl.dK1, 2.0), (fl.ddK2, 1.0)):
        local = np.log(arr[999] / arr[1999]) / np.log(2.0)
        assert local == pytest.approx(p, abs=0.01)
    np.testing.assert_allclose((1 - fl.chi_perp[-1]) * ell[-1], 1.0, atol=2e-3)
    ratio = fl.ddK2 / fl.K00
    assert abs(ratio[1999] / ratio[999] - 1) < 1e-3


def test_relu_delta_expansion_misses_the_angle_flow():
    """ReLU at criticality: χ_⊥ = 1, h = 0 keep δδK_[2] constant, while the true K_[2] decays (book §5.5)."""
    net = MLP(4, 10, 50, "relu", C_b=0.0, C_W=2.0)
    fl = delta_expansion(net, X0, 0.1 * DX)
    np.testing.assert_allclose(fl.ddK2, fl.ddK2[0], rtol=1e-13)
    dx = 0.1 * DX
    th = pdlt.theory(net, np.stack([X0 + dx / 2, X0 - dx / 2]))
    K2 = from_kernel(th.layer(50).K)[2]
    assert K2 < 0.8 * fl.ddK2[-1]


@pytest.mark.parametrize("C_W", [2.0, 1.4])
def test_relu_angle_flow_matches_full_recursion(C_W):
    X = np.array([[1.0, 0.3, -0.5, 0.2], [-0.4, 1.1, 0.6, -0.3]])
    th = pdlt.theory(MLP(4, 10, 40, "relu", C_b=0.0, C_W=C_W), X)
    psi = relu_angle_flow(float(angle(th.layer(1).K)), 40)
    got = np.array([float(angle(th.layer(l).K)) for l in range(1, 41)])
    np.testing.assert_allclose(got, psi, rtol=1e-10)


def test_leaky_angle_flow_matches_full_recursion():
    X = np.array([[1.0, 0.3, -0.5, 0.2], [-0.4, 1.1, 0.6, -0.3]])
    th = pdlt.theory(MLP(4, 10, 25, "leaky_relu", C_b=0.0, C_W=1.5, activation_params={"a": 0.2}), X)
    psi = scale_invariant_angle_flow(float(angle(th.layer(1).K)), 25, 1.0, 0.2)
    got = np.array([float(angle(th.layer(l).K)) for l in range(1, 26)])
    np.testing.assert_allclose(got, psi, rtol=1e-10)


@pytest.mark.parametrize("psi0", [0.5, 1.0, math.pi / 2, math.pi])
def test_relu_angle_asymptotics(psi0):
    """ψ^{(ℓ)} ≈ 3π/ℓ; ψℓ/(3π) ≈ 0.998 at ℓ = 10⁴ (formula sheet §3(a)).

    Subleading (our derivation): ψ' = ψ − ψ²/(3π) − ψ³/(18π²) + O(ψ⁴), so
    1/ψ = ℓ/(3π) + ln ℓ/(2π) + c(ψ₀) + o(1), i.e. ψℓ/(3π) = 1 − (3/2) ln ℓ/ℓ + O(1/ℓ).
    """
    psi = relu_angle_flow(psi0, 100_000)
    ell = np.arange(1, 100_001)
    r = psi * ell / relu_angle_asymptotic(1.0)
    assert 0.997 < r[9_999] < 0.999
    assert 0.99965 < r[99_999] < 0.99985
    c = 1 / psi - ell / (3 * math.pi) - np.log(ell) / (2 * math.pi)
    assert abs(c[99_999] - c[9_999]) < 2e-3
    assert np.all(np.diff(psi) < 0)
