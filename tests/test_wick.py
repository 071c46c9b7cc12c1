"""Tests for pdlt.wick: Wick pairings, Gaussian moments, cumulants, and the quartic action (book Ch. 1)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from pdlt.wick import (
    connected_four_point,
    connected_from_quartic_coupling,
    cumulants_from_moments,
    double_factorial,
    gaussian_moment,
    gaussian_moment_tensor,
    moments_from_cumulants,
    pairings,
    quartic_action_moments,
    quartic_coupling_from_connected,
    sample_cumulants,
    two_point_from_quartic_coupling,
)

K2 = np.array([[1.0, 0.3], [0.3, 0.7]])
K3 = np.array([[1.2, 0.4, -0.3], [0.4, 0.9, 0.2], [-0.3, 0.2, 0.6]])


def _pair_sum(A):
    return (np.einsum("ij,kl->ijkl", A, A) + np.einsum("ik,jl->ijkl", A, A)
            + np.einsum("il,jk->ijkl", A, A))


def _batch_kstats(x, n_batches):
    """Mean and stderr over batches of the unbiased k-statistics (tensor list or scalar array)."""
    per = [sample_cumulants(b, order=4, unbiased=True) for b in np.array_split(x, n_batches)]
    if isinstance(per[0], np.ndarray):
        arr = np.array(per)
        return arr.mean(0), arr.std(0, ddof=1) / math.sqrt(n_batches)
    out = []
    for k in range(4):
        arr = np.array([p[k] for p in per])
        out.append((arr.mean(0), arr.std(0, ddof=1) / math.sqrt(n_batches)))
    return out


# ---------------------------------------------------------------------------------------------
# pairings and Wick's theorem
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("m", range(0, 6))
def test_number_of_pairings_is_double_factorial(m):
    ps = pairings(range(2 * m))
    assert len(ps) == double_factorial(2 * m - 1) == math.factorial(2 * m) // (2 ** m * math.factorial(m))
    assert len(set(frozenset(frozenset(pr) for pr in p) for p in ps)) == len(ps)  # all distinct
    for p in ps:
        assert sorted(i for pr in p for i in pr) == list(range(2 * m))  # perfect matchings


def test_pairings_odd_and_labels():
    assert pairings(range(5)) == []
    assert pairings([]) == [()]
    # book eq. (1.44) order, and items are carried through as labels
    assert pairings("abcd") == [(("a", "b"), ("c", "d")), (("a", "c"), ("b", "d")),
                                (("a", "d"), ("b", "c"))]


def test_diagonal_gaussian_moments():
    sig2 = np.array([0.5, 1.7, 2.3])
    cov = np.diag(sig2)
    for powers in itertools.product(range(5), repeat=3):
        idx = [i for i, p in enumerate(powers) for _ in range(p)]
        if any(p % 2 for p in powers):
            expected = 0.0
        else:
            expected = math.prod(double_factorial(p - 1) * s ** (p // 2) for p, s in zip(powers, sig2))
        assert gaussian_moment(cov, idx) == pytest.approx(expected, rel=1e-13, abs=1e-15)


def test_wick_closed_forms():
    K = 1.7
    assert gaussian_moment([[K]], [0] * 4) == pytest.approx(3 * K ** 2, rel=1e-14)
    assert gaussian_moment([[K]], [0] * 6) == pytest.approx(15 * K ** 3, rel=1e-14)
    assert gaussian_moment([[K]], [0] * 3) == 0.0
    assert gaussian_moment(K2, []) == 1.0
    assert gaussian_moment(K2, [0, 0, 1, 1]) == pytest.approx(K2[0, 0] * K2[1, 1] + 2 * K2[0, 1] ** 2)
    assert gaussian_moment(K2, [0, 0, 0, 1]) == pytest.approx(3 * K2[0, 0] * K2[0, 1])
    assert gaussian_moment(K2, [0, 1]) == pytest.approx(K2[0, 1])
    with pytest.raises(ValueError):
        gaussian_moment(K2, [0, 2])
    with pytest.raises(ValueError):
        gaussian_moment([[1.0, 0.2], [0.3, 1.0]], [0, 1])


@pytest.mark.parametrize("order", range(0, 7))
def test_moment_tensor_matches_scalar_wick(order):
    T = gaussian_moment_tensor(K3, order)
    assert T.shape == (3,) * order
    for idx in itertools.product(range(3), repeat=order):
        assert T[idx] == pytest.approx(gaussian_moment(K3, idx), rel=1e-13, abs=1e-14)
    if order == 4:
        np.testing.assert_allclose(T, _pair_sum(K3), rtol=1e-14, atol=0)


def test_wick_vs_monte_carlo():
    rng = np.random.default_rng(20240601)
    S = 400_000
    z = rng.multivariate_normal(np.zeros(3), K3, size=S)
    for order in (4, 6):
        T = gaussian_moment_tensor(K3, order)
        for idx in itertools.combinations_with_replacement(range(3), order):
            prod = np.prod(z[:, list(idx)], axis=1)
            se = prod.std(ddof=1) / math.sqrt(S)
            assert abs(prod.mean() - T[idx]) < 4 * se, (idx, prod.mean(), T[idx], se)


# ---------------------------------------------------------------------------------------------
# cumulants
# ---------------------------------------------------------------------------------------------

def test_scalar_cumulants_known_distributions():
    # exponential(1): m_n = n!, κ_n = (n−1)!
    m = [math.factorial(n) for n in range(1, 7)]
    k = [math.factorial(n - 1) for n in range(1, 7)]
    np.testing.assert_allclose(cumulants_from_moments(m), k, rtol=1e-13)
    np.testing.assert_allclose(moments_from_cumulants(k), m, rtol=1e-13)
    # Poisson(λ): every κ_n = λ, moments are Touchard polynomials
    lam = 0.7
    touchard = [lam, lam + lam ** 2, lam ** 3 + 3 * lam ** 2 + lam,
                lam ** 4 + 6 * lam ** 3 + 7 * lam ** 2 + lam]
    np.testing.assert_allclose(moments_from_cumulants([lam] * 4), touchard, rtol=1e-13)
    # N(μ, s²): κ1 = μ, κ2 = s², higher ones vanish
    mu, s2 = 0.4, 1.3
    mom = moments_from_cumulants([mu, s2, 0, 0, 0, 0])
    np.testing.assert_allclose(mom[:4], [mu, mu ** 2 + s2, mu ** 3 + 3 * mu * s2,
                                         mu ** 4 + 6 * mu ** 2 * s2 + 3 * s2 ** 2], rtol=1e-13)
    np.testing.assert_allclose(cumulants_from_moments(mom), [mu, s2, 0, 0, 0, 0], atol=1e-12)


def test_scalar_round_trip_random():
    rng = np.random.default_rng(1)
    for _ in range(20):
        k = rng.normal(size=6)
        np.testing.assert_allclose(cumulants_from_moments(moments_from_cumulants(k)), k,
                                   rtol=1e-11, atol=1e-11)


def test_tensor_round_trip_nonzero_mean_and_scalar_agreement():
    rng = np.random.default_rng(2)
    x = rng.gamma(2.0, size=(50, 2)) + np.array([0.5, -1.0])  # skewed, nonzero mean
    # raw moments of the empirical distribution of x: a genuine set of moment tensors
    M = [x.mean(axis=0)]
    for k in range(2, 5):
        letters = "abcd"[:k]
        M.append(np.einsum(",".join("s" + c for c in letters) + "->" + letters, *([x] * k)) / len(x))
    kap = cumulants_from_moments(M)
    back = moments_from_cumulants(kap)
    for a, b in zip(M, back):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(kap[1], np.cov(x.T, bias=True), rtol=1e-12)
    # each diagonal entry equals the scalar recursion for that coordinate
    for i in range(2):
        scal = cumulants_from_moments([Mk[(i,) * k] for k, Mk in enumerate(M, start=1)])
        np.testing.assert_allclose([kk[(i,) * k] for k, kk in enumerate(kap, start=1)], scal,
                                   rtol=1e-12, atol=1e-12)
    # the plug-in sample cumulants are exactly the cumulants of the empirical distribution
    sc = sample_cumulants(x, order=4)
    for a, b in zip(sc, kap):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_gaussian_connected_correlators_vanish():
    M2, M4 = gaussian_moment_tensor(K3, 2), gaussian_moment_tensor(K3, 4)
    assert np.max(np.abs(connected_four_point(M2, M4))) < 1e-12
    assert abs(connected_four_point(1.7, 3 * 1.7 ** 2)) < 1e-12
    moments = [gaussian_moment_tensor(K2, k) for k in range(1, 7)]
    kap = cumulants_from_moments(moments)
    np.testing.assert_allclose(kap[1], K2, rtol=1e-14)
    for k in (0, 2, 3, 4, 5):
        assert np.max(np.abs(kap[k])) < 1e-12
    # and the inverse rebuilds Wick's theorem from κ2 alone
    zero = [np.zeros((2,) * k) for k in range(1, 7)]
    zero[1] = K2
    for a, b in zip(moments_from_cumulants(zero), moments):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


def test_cubic_transform_cumulants_vs_monte_carlo():
    # z = x + a x³ with x ~ N(0, 1): E[z^n] = Σ_k C(n, k) a^k E[x^{n+2k}], E[x^{2j}] = (2j−1)!!
    a = 0.15
    m = [sum(math.comb(n, k) * a ** k * ((n + 2 * k) % 2 == 0) * double_factorial(n + 2 * k - 1)
             for k in range(n + 1)) for n in range(1, 7)]
    kap = cumulants_from_moments(m)
    assert kap[0] == kap[2] == kap[4] == 0.0
    assert kap[3] > 0.5  # clearly non-Gaussian
    rng = np.random.default_rng(7)
    x = rng.standard_normal(400_000)
    mean, se = _batch_kstats(x + a * x ** 3, 200)
    assert np.all(np.abs(mean - kap[:4]) < 4 * se), (mean, kap[:4], se)


def test_exponential_cumulants_vs_monte_carlo():
    # nonzero mean and odd cumulants: κ_n = (n−1)!
    rng = np.random.default_rng(8)
    mean, se = _batch_kstats(rng.exponential(size=400_000), 200)
    assert np.all(np.abs(mean - [1, 1, 2, 6]) < 4 * se), (mean, se)


def test_scale_mixture_connected_four_point_vs_monte_carlo():
    # z = √w L x with w ∈ {0.5, 2}: M2 = E[w] K, M4 = E[w²] ΣKK, so conn4 = Var(w) ΣKK
    ws = np.array([0.5, 2.0])
    Ew, Ew2 = ws.mean(), (ws ** 2).mean()
    conn = connected_four_point(Ew * K3, Ew2 * _pair_sum(K3))
    np.testing.assert_allclose(conn, (Ew2 - Ew ** 2) * _pair_sum(K3), rtol=1e-13)
    rng = np.random.default_rng(9)
    S = 400_000
    w = rng.choice(ws, size=S)
    z = np.sqrt(w)[:, None] * (rng.standard_normal((S, 3)) @ np.linalg.cholesky(K3).T)
    res = _batch_kstats(z, 200)
    for est, exact in zip(res, [np.zeros(3), Ew * K3, np.zeros((3,) * 3), conn]):
        assert np.all(np.abs(est[0] - exact) < 4 * est[1])


def test_k_statistics_match_scipy():
    rng = np.random.default_rng(3)
    x = rng.gamma(1.5, size=(37, 2))
    for col in range(2):
        ref = [stats.kstat(x[:, col], n) for n in range(1, 5)]
        np.testing.assert_allclose(sample_cumulants(x[:, col], unbiased=True), ref, rtol=1e-12)
        tens = sample_cumulants(x, unbiased=True)
        np.testing.assert_allclose([t[(col,) * k] for k, t in enumerate(tens, start=1)], ref, rtol=1e-12)
    with pytest.raises(ValueError):
        sample_cumulants(x, order=5, unbiased=True)


def test_input_validation():
    with pytest.raises(ValueError):
        cumulants_from_moments([np.zeros(2), np.zeros((3, 3))])
    with pytest.raises(ValueError):
        gaussian_moment_tensor(K2, -1)
    with pytest.raises(ValueError):
        connected_from_quartic_coupling([[1.0, 2.0], [2.0, 1.0]], np.zeros((2,) * 4))  # not pos. def.
    with pytest.raises(ValueError):
        quartic_action_moments(1.0, -0.1)
    with pytest.raises(ValueError):
        quartic_action_moments(K3, np.zeros((3,) * 4))


# ---------------------------------------------------------------------------------------------
# quartic action (book §1.3)
# ---------------------------------------------------------------------------------------------

def _positive_quartic(N, rng):
    """A totally symmetric V whose quartic form Σ c_a (u_a·z)⁴ is nonnegative."""
    V = np.zeros((N,) * 4)
    for _ in range(3):
        u = rng.normal(size=N)
        V += rng.uniform(0.5, 1.5) * np.einsum("i,j,k,l->ijkl", u, u, u, u)
    return V


def test_quartic_coupling_and_connected_are_inverse():
    rng = np.random.default_rng(4)
    V = _positive_quartic(3, rng)
    conn = connected_from_quartic_coupling(K3, V)
    np.testing.assert_allclose(quartic_coupling_from_connected(K3, conn), V, rtol=1e-12, atol=1e-12)
    assert connected_from_quartic_coupling(1.3, 0.2) == pytest.approx(-0.2 * 1.3 ** 4)
    assert quartic_coupling_from_connected(1.3, -0.2 * 1.3 ** 4) == pytest.approx(0.2)
    assert two_point_from_quartic_coupling(1.3, 0.2) == pytest.approx(1.3 - 0.1 * 1.3 ** 3)
    # only the symmetric part of a coupling matters
    W = rng.normal(size=(2,) * 4)
    Wsym = sum(np.transpose(W, p) for p in itertools.permutations(range(4))) / 24
    np.testing.assert_allclose(connected_from_quartic_coupling(K2, W),
                               connected_from_quartic_coupling(K2, Wsym), rtol=1e-13)


def test_quadrature_reproduces_gaussian_at_zero_coupling():
    M = quartic_action_moments(K2, np.zeros((2,) * 4), max_order=6)
    for k, Mk in enumerate(M, start=1):
        np.testing.assert_allclose(Mk, gaussian_moment_tensor(K2, k), rtol=1e-12, atol=1e-13)


def _leading_order_residuals(K, V, eps):
    M = quartic_action_moments(K, eps * V)
    conn_exact = cumulants_from_moments(M)[3]
    r4 = np.max(np.abs(conn_exact - connected_from_quartic_coupling(K, eps * V)))
    r2 = np.max(np.abs(M[1] - two_point_from_quartic_coupling(K, eps * V)))
    rV = np.max(np.abs(quartic_coupling_from_connected(K, conn_exact) - eps * V))
    return np.array([r4, r2, rV]), np.max(np.abs(conn_exact))


@pytest.mark.parametrize("dim", [1, 2])
def test_quartic_action_leading_order_residual_is_quadratic(dim):
    if dim == 1:
        K, V = np.array([[1.3]]), np.ones((1,) * 4)
    else:
        K, V = K2, _positive_quartic(2, np.random.default_rng(5))
        V /= np.max(np.abs(V))  # so that the same ε is comparably small in 1-D and 2-D
    r_big, c_big = _leading_order_residuals(K, V, 0.005)
    r_small, c_small = _leading_order_residuals(K, V, 0.0025)
    # conn4 itself is O(ε) (ratio 2) while what the leading-order formulas miss is O(ε²) (ratio 4)
    assert 1.85 < c_big / c_small < 2.15
    ratios = r_big / r_small
    assert np.all((ratios > 3.6) & (ratios < 4.4)), ratios
    assert np.all(r_small < 0.05 * c_small)
