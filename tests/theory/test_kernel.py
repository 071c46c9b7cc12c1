"""The kernel recursion K' = C_b + C_W ⟨σσ⟩_K (book §4.3, §5.1) against closed forms."""

import math

import numpy as np
import pytest

import pdlt.theory
from pdlt import MLP
from pdlt.theory.kernel import first_layer_kernel

X = np.array([[1.0, 0.3, -0.5, 0.2], [-0.4, 1.1, 0.6, -0.3], [0.5, -0.2, 0.9, 1.2]])


def arccos_relu(K):
    """⟨relu(z_a) relu(z_b)⟩ = √(K_aa K_bb)(sin ψ + (π − ψ) cos ψ)/(2π) (book §5.5)."""
    d = np.sqrt(np.outer(np.diag(K), np.diag(K)))
    psi = np.arccos(np.clip(K / d, -1, 1))
    return d * (np.sin(psi) + (np.pi - psi) * np.cos(psi)) / (2 * np.pi)


def test_first_layer_kernel_is_exact_gram():
    K1 = first_layer_kernel(X, 0.3, 1.7)
    np.testing.assert_allclose(K1, 0.3 + 1.7 * X @ X.T / 4, rtol=1e-15)


def test_relu_kernel_recursion_is_the_arccos_map():
    net = MLP(4, 10, 6, "relu", C_b=0.1, C_W=1.8)
    th = pdlt.theory(net, X)
    K = first_layer_kernel(X, 0.1, 1.8)
    for ell in range(2, 7):
        K = 0.1 + 1.8 * arccos_relu(K)
        np.testing.assert_allclose(th.layer(ell).K, K, rtol=1e-13)


def test_relu_finite_angle_flow_at_criticality():
    """cos ψ' = [sin ψ + (π − ψ) cos ψ]/π at C_b = 0, C_W = 2 (book §5.5, formula sheet §3(a))."""
    th = pdlt.theory(MLP(4, 10, 30, "relu", C_b=0.0, C_W=2.0), X[:2])
    K = th.layer(1).K
    cos = K[0, 1] / math.sqrt(K[0, 0] * K[1, 1])
    for ell in range(2, 31):
        psi = math.acos(cos)
        cos = (math.sin(psi) + (math.pi - psi) * math.cos(psi)) / math.pi
        Kl = th.layer(ell).K
        assert Kl[0, 1] / math.sqrt(Kl[0, 0] * Kl[1, 1]) == pytest.approx(cos, rel=1e-12)
        assert Kl[0, 0] == pytest.approx(K[0, 0], rel=1e-12)     # K* line of fixed points


def test_erf_kernel_recursion_matches_closed_form():
    """⟨erf erf⟩ = (2/π) arcsin(2K_ab/√((1+2K_aa)(1+2K_bb))) (closed form used by neural-tangents' Erf)."""
    th = pdlt.theory(MLP(4, 10, 5, "erf", C_b=0.05, C_W=1.3), X)
    K = first_layer_kernel(X, 0.05, 1.3)
    for ell in range(2, 6):
        d = 1 + 2 * np.diag(K)
        K = 0.05 + 1.3 * (2 / np.pi) * np.arcsin(2 * K / np.sqrt(np.outer(d, d)))
        np.testing.assert_allclose(th.layer(ell).K, K, rtol=1e-12)


def test_quadrature_matches_closed_form_through_depth():
    """A callable erf (quadrature path) tracks the closed-form erf through 8 layers."""
    from scipy import special
    a = pdlt.theory(MLP(4, 10, 8, "erf", C_b=0.1, C_W=1.5), X)
    b = pdlt.theory(MLP(4, 10, 8, lambda z: special.erf(z), C_b=0.1, C_W=1.5), X)
    for ell in range(1, 9):
        np.testing.assert_allclose(b.layer(ell).K, a.layer(ell).K, rtol=1e-11)


def test_per_layer_hyperparameters():
    net = MLP(widths=[4, 8, 8, 8], activation="linear", C_b=[0.1, 0.2, 0.3], C_W=[1.0, 0.5, 2.0])
    th = pdlt.theory(net, X)
    K = 0.1 + X @ X.T / 4
    for ell, (cb, cw) in zip((2, 3), ((0.2, 0.5), (0.3, 2.0))):
        K = cb + cw * K
        np.testing.assert_allclose(th.layer(ell).K, K, rtol=1e-14)
