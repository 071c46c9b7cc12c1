"""NTK mean Θ and fluctuation tensors A, B, D, F (book Ch. 8; formula sheet §5; pdlt.theory.ntk)."""

import math

import numpy as np
import pytest

import pdlt.theory
from pdlt import MLP
from pdlt.activations import LeakyReLU
from pdlt.theory.ntk import mixed4, ntk_step
from pdlt.theory._gauss import Expectations

X3 = np.array([[1.0, 0.3, -0.5, 0.2], [-0.4, 1.1, 0.6, -0.3], [0.5, -0.2, 0.9, 1.2]])
LAMBDAS = {"b only": (1.0, 0.0), "W only": (0.0, 1.0), "both": (0.7, 0.4)}
FIELDS = ("Theta", "A", "B", "D", "F")


def ntk_theory(net, X, **kw):
    """pdlt.theory with the NTK recursions switched on."""
    return pdlt.theory(net, X, ntk=True, **kw)


@pytest.mark.parametrize("act", ["relu", "linear", LeakyReLU(0.3)])
@pytest.mark.parametrize("lam", list(LAMBDAS), ids=list(LAMBDAS))
@pytest.mark.parametrize("N", [1, 2])
def test_scale_invariant_closed_forms(act, lam, N):
    """Critical scale-invariant class, equal widths, layer-independent λ (formula sheet §5):
    Θ = ℓΘ₁, F = r₄K*Θ₁ℓ(ℓ−1)/2, B = r₄Θ₁²(ℓ−1)ℓ(2ℓ−1)/6, D = K*Θ₁(νf_W + r₄ − 1)ℓ(ℓ−1)/2 and the
    exact increment A^{(ℓ+1)} − A^{(ℓ)}.  N = 1 runs the single-input path, N = 2 the multi-input one
    (checked on its diagonal)."""
    lb, lw = LAMBDAS[lam]
    x = X3[:N]
    net = MLP(4, 50, 7, act, C_b=0.0, C_W=1.0, lambda_b=lb, lambda_W=lw)
    A2, A4 = net.activation.A2, net.activation.A4
    net = net.replace(C_W=1.0 / A2)
    th = ntk_theory(net, x)
    r4, prev = A4 / A2 ** 2, None
    nu = 3 * r4 - 1
    for a in range(N):
        K = th.layer(1).K[a, a]
        T1 = lb + lw * A2 * K
        fW = lw * A2 * K / T1
        for ell in range(1, net.depth + 1):
            s = th.layer(ell)
            got = {f: getattr(s, f)[(a,) * getattr(s, f).ndim] for f in FIELDS}
            assert got["Theta"] == pytest.approx(ell * T1, rel=1e-12)
            assert got["F"] == pytest.approx(r4 * K * T1 * ell * (ell - 1) / 2, rel=1e-10, abs=1e-12)
            assert got["B"] == pytest.approx(r4 * T1 ** 2 * (ell - 1) * ell * (2 * ell - 1) / 6, rel=1e-10,
                                             abs=1e-12)
            assert got["D"] == pytest.approx(K * T1 * (nu * fW + r4 - 1) * ell * (ell - 1) / 2, rel=1e-10,
                                             abs=1e-12)
            if ell > 1:
                m = ell - 1
                dA = T1 ** 2 * (nu * fW ** 2 * (m - 1) + fW * (nu * fW + r4 - 1) * m * (m - 1)
                                + (r4 - 1) * m * m + 2 * fW * (r4 - 1) * m + nu * fW ** 2)
                assert got["A"] - prev == pytest.approx(dA, rel=1e-9, abs=1e-10)
            prev = got["A"]


def test_relu_normalized_large_depth_slopes():
    """A/(nΘ²) ≈ (1 + f_W + 5f_W²)ℓ/(3n) and B/(nΘ²) ≈ 2ℓ/(3n) for ReLU (formula sheet §5)."""
    L = 400
    for lb, lw, fW in ((1.0, 0.0, 0.0), (0.0, 1.0, 1.0)):
        s = ntk_theory(MLP(4, 50, L, "relu", C_W=2.0, lambda_b=lb, lambda_W=lw), X3[:1]).layer(L)
        T2 = s.Theta[0, 0] ** 2
        assert s.A[0, 0, 0, 0] / T2 / L == pytest.approx((1 + fW + 5 * fW ** 2) / 3, rel=1e-2)
        assert s.B[0, 0, 0, 0] / T2 / L == pytest.approx(2 / 3, rel=1e-2)


def test_first_layer():
    lb, lw = 0.3, 1.7
    th = ntk_theory(MLP(4, 10, 3, "tanh", C_b=0.1, C_W=1.0, lambda_b=lb, lambda_W=lw), X3)
    s = th.layer(1)
    np.testing.assert_allclose(s.Theta, lb + lw * X3 @ X3.T / 4, rtol=1e-15)
    for f in "ABDF":
        assert getattr(s, f).shape == (3,) * 4 and not np.any(getattr(s, f))


@pytest.mark.parametrize("act, C_b, C_W", [("relu", 0.1, 2.0), ("tanh", 0.1, 1.2), ("linear", 0.2, 1.0),
                                           ("gelu", 0.05, 1.5), (LeakyReLU(0.2), 0.0, 1.9)])
def test_multi_input_diagonal_is_single_input(act, C_b, C_W):
    """Every recursion's diagonal depends on the diagonal only: it must equal the single-input path
    (unequal widths, so r ≠ 1, and per-layer λ)."""
    net = MLP(widths=[4, 30, 20, 40, 25, 10], activation=act, C_b=C_b, C_W=C_W,
              lambda_b=[0.5, 0.2, 0.1, 0.3, 0.4], lambda_W=[1.3, 0.7, 1.1, 0.9, 1.0])
    th = ntk_theory(net, X3)
    for i in range(3):
        one = ntk_theory(net, X3[i:i + 1])
        for ell in range(1, net.depth + 1):
            for f in FIELDS:
                m, s = getattr(th.layer(ell), f), getattr(one.layer(ell), f)
                assert m[(i,) * m.ndim] == pytest.approx(s.reshape(-1)[0], rel=1e-9, abs=1e-12), (f, ell)


def test_relu_theta_is_arccos_recursion():
    """Θ' = λ_b + λ_W⟨σσ⟩ + C_W⟨σ'σ'⟩Θ with the arc-cosine kernels ⟨σ'σ'⟩ = (π − ψ)/(2π),
    ⟨σσ⟩ = √(K_aa K_bb)(sin ψ + (π − ψ) cos ψ)/(2π)."""
    C_b, C_W, lb, lw, L = 0.2, 1.8, 0.4, 1.1, 6
    th = ntk_theory(MLP(4, 10, L, "relu", C_b=C_b, C_W=C_W, lambda_b=lb, lambda_W=lw), X3)
    K = C_b + C_W * X3 @ X3.T / 4
    T = lb + lw * X3 @ X3.T / 4
    for ell in range(2, L + 1):
        d = np.sqrt(np.outer(np.diag(K), np.diag(K)))
        psi = np.arccos(np.clip(K / d, -1, 1))
        ss = d * (np.sin(psi) + (np.pi - psi) * np.cos(psi)) / (2 * np.pi)
        T = lb + lw * ss + C_W * (np.pi - psi) / (2 * np.pi) * T
        K = C_b + C_W * ss
        np.testing.assert_allclose(th.layer(ell).Theta, T, rtol=1e-12)
        np.testing.assert_allclose(th.layer(ell).K, K, rtol=1e-12)


def test_deep_linear_matrix_recursions():
    """σ(z) = z: every expectation is Wick, so the recursions close on matrices (all entries, C_b > 0):
    Θ' = λ_b + λ_W K + C_W Θ;  B'_{acbd} = C_W²(Θ_abΘ_cd + r B_{acbd});  F'_{acbd} = C_W²(Θ_ab K_cd + r F_{acbd});
    D' = C_Wλ_W(K_acK_bd + K_adK_bc) + rC_Wλ_W V_{abcd} + rC_W² D;
    A' = λ_W²(K_acK_bd + K_adK_bc) + rλ_W² V_{abcd} + rC_W² A + rC_Wλ_W(D_{abcd} + D_{cdab}).
    (For linear networks Θ is moreover exact at any width: E[Ĥ] closes on E[zz] = K.)"""
    widths = [4, 30, 20, 40, 25]
    C_b, C_W, lb, lw = 0.3, 0.9, 0.5, 1.2
    th = ntk_theory(MLP(widths=widths, activation="linear", C_b=C_b, C_W=C_W, lambda_b=lb, lambda_W=lw), X3)
    s = th.layer(1)
    K, V, T, A, B, D, F = s.K, s.V, s.Theta, s.A, s.B, s.D, s.F
    e = np.einsum
    for ell in range(2, len(widths)):
        r = widths[ell - 1] / widths[ell - 2]
        KK = e("ac,bd->abcd", K, K) + e("ad,bc->abcd", K, K)
        T, A, B, D, F = (lb + lw * K + C_W * T,
                         lw ** 2 * KK + r * lw ** 2 * V + r * C_W ** 2 * A
                         + r * C_W * lw * (D + D.transpose(2, 3, 0, 1)),
                         C_W ** 2 * (e("ik,jl->ijkl", T, T) + r * B),
                         C_W * lw * KK + r * C_W * lw * V + r * C_W ** 2 * D,
                         C_W ** 2 * (e("ik,jl->ijkl", T, K) + r * F))
        s = th.layer(ell)
        K, V = s.K, s.V
        for f, want in zip(FIELDS, (T, A, B, D, F)):
            np.testing.assert_allclose(getattr(s, f), want, rtol=1e-11, atol=1e-12, err_msg=f"{f} at {ell}")


@pytest.mark.parametrize("act, C_b, C_W", [("relu", 0.1, 2.0), ("tanh", 0.1, 1.2)])
def test_symmetries(act, C_b, C_W):
    """A_abcd = A_bacd = A_cdab; B_acbd = B_cadb = B_bdac; D_abcd = D_bacd = D_abdc; F_acbd = F_bdac; Θ symmetric."""
    s = ntk_theory(MLP(4, 20, 4, act, C_b=C_b, C_W=C_W, lambda_b=0.5, lambda_W=1.3), X3).layer(4)
    t = np.transpose
    for arr, perms in ((s.A, [(1, 0, 2, 3), (2, 3, 0, 1)]), (s.B, [(1, 0, 3, 2), (2, 3, 0, 1)]),
                       (s.D, [(1, 0, 2, 3), (0, 1, 3, 2)]), (s.F, [(2, 3, 0, 1)])):
        for p in perms:
            np.testing.assert_allclose(arr, t(arr, p), rtol=1e-12, atol=1e-14 * np.abs(arr).max())
    np.testing.assert_allclose(s.Theta, s.Theta.T, rtol=1e-14)
    # positivity: n Var(Ĥ_ii;aa) = A_aaaa + 2 B_aaaa > 0, B_aaaa > 0
    for a in range(3):
        assert s.A[a, a, a, a] + 2 * s.B[a, a, a, a] > 0 and s.B[a, a, a, a] > 0


def test_repeated_inputs_are_copied():
    X = np.vstack([X3, X3[1]])
    net = MLP(4, 20, 3, "tanh", C_b=0.1, C_W=1.2)
    th, th3 = ntk_theory(net, X), ntk_theory(net, X3)
    idx = [0, 1, 2, 1]
    for f in FIELDS:
        m = getattr(th3.layer(3), f)
        np.testing.assert_array_equal(getattr(th.layer(3), f), m[np.ix_(*(idx,) * m.ndim)])


def test_ntk_switch_and_step_activation():
    net = MLP(4, 20, 3, "tanh", C_b=0.1, C_W=1.2)
    assert pdlt.theory(net, X3).layer(3).Theta is None              # off by default
    step = MLP(4, 20, 3, "step", C_b=0.1, C_W=1.2)
    with pytest.raises(NotImplementedError):
        ntk_theory(step, X3)                                      # σ' = δ: no finite NTK
    d = ntk_theory(net, X3).layer(2).to_dict()
    assert set(FIELDS) <= set(d) and np.array(d["A"]).shape == (3,) * 4


def test_mixed4_against_closed_forms():
    """ReLU: ⟨σ'σ'σ'σ'⟩ with two distinct inputs equals ⟨σ'_aσ'_b⟩ (σ'² = σ'), and with one input 1/2;
    ⟨σ'_a σ'_a σ_a σ_a⟩ = K/2; three distinct inputs (kink-split nested rule): the orthant probability."""
    E = Expectations(MLP(4, 10, 2, "relu").activation)
    K = 0.1 + X3 @ X3.T
    T = mixed4(K, (1, 1, 1, 1), E)
    pm = E.pair_table(K)[(1, 1)]
    assert T[0, 0, 0, 0] == pytest.approx(0.5, rel=1e-13)
    assert T[0, 1, 1, 0] == pytest.approx(pm[0, 1], rel=1e-12)
    assert mixed4(K, (1, 1, 0, 0), E)[2, 2, 2, 2] == pytest.approx(K[2, 2] / 2, rel=1e-13)
    # three distinct: P(z_0>0, z_1>0, z_2>0) by the orthant formula 1/8 + (asin ρ01 + asin ρ02 + asin ρ12)/(4π)
    rho = K / np.sqrt(np.outer(np.diag(K), np.diag(K)))
    orth = 1 / 8 + (math.asin(rho[0, 1]) + math.asin(rho[0, 2]) + math.asin(rho[1, 2])) / (4 * math.pi)
    assert T[0, 1, 2, 2] == pytest.approx(orth, rel=1e-9)


def test_ntk_step_zero_fluctuations_stay_genesis_only():
    """From A = B = D = F = V = 0 one step gives the pure genesis terms (e.g. B' = C_W²⟨σ'σ'σ'σ'⟩ΘΘ)."""
    E = Expectations(MLP(4, 10, 2, "tanh").activation)
    K = 0.1 + X3 @ X3.T / 4
    T = 0.5 + X3 @ X3.T / 4
    z = np.zeros((3,) * 4)
    out = ntk_step(K, z, T, z, z, z, z, 1.3, 0.2, 0.7, 1.0, E)
    want_B = 1.3 ** 2 * np.einsum("ijkl,ik,jl->ijkl", mixed4(K, (1, 1, 1, 1), E), T, T)
    np.testing.assert_allclose(out["B"], want_B, rtol=1e-13)


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_last_layer_ntk_fluctuation_is_the_vertex(act):
    """When only the last layer trains its NTK is λ_b + (λ_W/C_W)(Ĝ − C_b), so A = (λ_W/C_W)²V and B = 0:
    two independent recursions (NTK: mixed moments; vertex: ⟨σσσσ⟩) agree, three-input entries included."""
    X = np.array([[1.0, 0.3, -0.5, 0.2], [-0.4, 1.1, 0.6, -0.3], [0.2, -0.7, 0.9, 1.0], [0.5, 0.5, -1.2, 0.1]])
    net = MLP(4, 16, 3, act, C_b=0.0, C_W=2.0 if act == "relu" else 1.0, lambda_b=[0, 0, 0.5],
              lambda_W=[0, 0, 1.0])
    s = pdlt.theory(net, X, ntk=True).layer(3)
    r = (1.0 / net.C_W[2]) ** 2
    np.testing.assert_allclose(s.A, r * np.asarray(s.V), rtol=0, atol=1e-4 * np.max(np.abs(s.V)))
    assert not np.any(s.B)
