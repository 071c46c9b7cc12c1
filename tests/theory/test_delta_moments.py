"""δ-function moments of kinked activations (pdlt.theory._delta) against closed forms, Stein's lemma
and Monte Carlo."""

import numpy as np
import pytest

from pdlt.activations import LeakyReLU, PiecewiseLinear, get_activation
from pdlt.theory._delta import check_delta_activation, delta_moments, delta_tensor
from pdlt.theory.ntk import _fn, _nested_split
from pdlt import gaussian

K3 = np.array([[1.3, 0.4, -0.2], [0.4, 0.9, 0.3], [-0.2, 0.3, 1.1]])
ACTS = [PiecewiseLinear(1.0, 0.0), PiecewiseLinear(1.0, 0.2), PiecewiseLinear(0.7, -0.4)]


def quad(act, C, counts):
    """⟨Π_r σ^{c0}σ'^{c1}(z_r)⟩ over N(0, C) by the kink-split rule (no δ's)."""
    L = gaussian.psd_cholesky(np.asarray(C)[None])
    return float(_nested_split([_fn(act, c0, c1) for c0, c1 in counts], L, 0.0, 24)[0])


def m(act, *req):
    return float(delta_moments(act, K3, [tuple(req)])[0])


@pytest.mark.parametrize("act", ACTS, ids=lambda a: f"{a.a_plus}/{a.a_minus}")
@pytest.mark.parametrize("jk", [(2, 0), (0, 2), (3, 1), (1, 3), (2, 2)])
def test_pair_moments_equal_closed_forms(act, jk):
    """Off the diagonal the δ rule reproduces the activation's closed-form pair moments (Price's theorem)."""
    T = delta_tensor(act, K3, jk)
    for a, b in [(0, 1), (1, 2), (2, 0)]:
        want = act.closed_pair(jk[0], jk[1], K3[a, a], K3[a, b], K3[b, b])
        assert T[a, b] == pytest.approx(float(want), rel=1e-10, abs=1e-13)


@pytest.mark.parametrize("act", ACTS, ids=lambda a: f"{a.a_plus}/{a.a_minus}")
def test_three_input_delta_moments_satisfy_stein(act):
    """E[z_a F] = Σ_r K_ar E[∂_r F] with z σ'(z) = σ(z): the δ moments against plain kink-split quadrature."""
    K = K3
    # F = σ'_a σ_b σ_c
    lhs = quad(act, K, [(1, 0), (1, 0), (1, 0)])
    rhs = (K[0, 0] * m(act, (0, 2), (1, 0), (2, 0)) + K[0, 1] * quad(act, K, [(0, 1), (0, 1), (1, 0)])
           + K[0, 2] * quad(act, K, [(0, 1), (1, 0), (0, 1)]))
    assert rhs == pytest.approx(lhs, rel=1e-9)
    # F = σ'_a σ'_b σ_c: two δ moments at different inputs
    lhs = quad(act, K, [(1, 0), (0, 1), (1, 0)])
    rhs = (K[0, 0] * m(act, (0, 2), (1, 1), (2, 0)) + K[0, 1] * m(act, (0, 1), (1, 2), (2, 0))
           + K[0, 2] * quad(act, K, [(0, 1), (0, 1), (0, 1)]))
    assert rhs == pytest.approx(lhs, rel=1e-9)


@pytest.mark.parametrize("act", ACTS, ids=lambda a: f"{a.a_plus}/{a.a_minus}")
def test_delta_prime_moment_satisfies_stein_along_another_input(act):
    """The δ' rule is Stein's lemma along the δ's own input; along another input (b) it must hold too:
    E[z_b σ''_a σ'_b σ_c] = K_ba⟨σ'''_aσ'_bσ_c⟩ + K_bb⟨σ''_aσ''_bσ_c⟩ + K_bc⟨σ''_aσ'_bσ'_c⟩."""
    K = K3
    lhs = m(act, (0, 2), (1, 0), (2, 0))
    rhs = (K[1, 0] * m(act, (0, 3), (1, 1), (2, 0)) + K[1, 1] * m(act, (0, 2), (1, 2), (2, 0))
           + K[1, 2] * m(act, (0, 2), (1, 1), (2, 1)))
    assert rhs == pytest.approx(lhs, rel=1e-9)


def test_delta_prime_moment_matches_monte_carlo():
    """⟨σ'''_aσ'_bσ'_c⟩ = −p_a(0) d/dt E[σ'_bσ'_c | z_a = t] at t = 0, the derivative by a central
    difference with common random numbers (2M draws; over seeds 0–19 |z| ≤ 2.9 without the bias allowance)."""
    act = ACTS[1]
    K = K3
    Cc = K[1:, 1:] - np.outer(K[1:, 0], K[0, 1:]) / K[0, 0]
    xi = np.random.default_rng(0).standard_normal((2_000_000, 2)) @ np.linalg.cholesky(Cc).T
    h = 0.1
    sp = lambda x: act.derivative(x, 1)
    g = [sp(t * K[1, 0] / K[0, 0] + xi[:, 0]) * sp(t * K[2, 0] / K[0, 0] + xi[:, 1]) for t in (h, -h)]
    d = (g[0] - g[1]) / (2 * h)
    J = act.a_plus - act.a_minus
    scale = -J / np.sqrt(2 * np.pi * K[0, 0])
    mc, se = scale * d.mean(), abs(scale) * d.std() / np.sqrt(d.size)
    # O(h²) bias of the central difference: below 1e-4 here (h = 0.05 and 0.1 agree to that)
    assert abs(m(act, (0, 3), (1, 1), (2, 1)) - mc) < 4 * se + 1e-4, (mc, se)


def test_coincident_inputs_are_nan_or_zero():
    """δ next to σ' at one input is ill-defined (NaN), δ² infinite (NaN); δ next to σ^p vanishes."""
    act = ACTS[0]
    assert np.isnan(m(act, (0, 2), (0, 1)))
    assert np.isnan(m(act, (0, 2), (0, 2)))
    assert np.isnan(m(act, (0, 3), (0, 0), (1, 1)))
    assert m(act, (0, 2), (0, 0), (1, 1)) == 0.0
    assert m(act, (0, 3), (0, 0), (0, 0)) == 0.0
    # σ'_b² is one step function: its derivative (in the δ' rule) is (a₊² − a₋²)δ, finite
    assert np.isfinite(m(act, (0, 3), (1, 1), (1, 1)))


def test_only_piecewise_linear_kinks_are_covered():
    check_delta_activation(get_activation("tanh"))
    check_delta_activation(LeakyReLU(0.1))
    with pytest.raises(NotImplementedError, match="kinks='a.e.'"):
        check_delta_activation(get_activation("step"))


def test_delta_prime_of_a_product_that_vanishes():
    """σ_b δ(z_b) ≡ 0, so the δ′ rule at another input differentiates it to 0 (not to the ill-defined
    σ_b δ′(z_b)): ⟨σ'''_a σ_b σ''_b⟩ = 0."""
    act = ACTS[1]
    assert m(act, (0, 3), (1, 0), (1, 2)) == 0.0
    assert np.isnan(m(act, (0, 3), (1, 1), (1, 2)))
