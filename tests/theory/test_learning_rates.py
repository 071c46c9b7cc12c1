"""Learning-rate equivalence principle (book Ch. 9; formula sheet §5): equal layer shares of Θ^{(L)}."""

import math

import numpy as np
import pytest

pytest.importorskip("pdlt.theory.criticality")
from pdlt.mlp import MLP  # noqa: E402
from pdlt.theory.criticality import criticality  # noqa: E402
from pdlt.theory.learning_rates import (equivalence_principle, layer_contributions,  # noqa: E402
                                        theta_limit)


def critical_net(act, L, lam_b, lam_W):
    c = criticality(act)
    return MLP(input_dim=1, width=1, depth=L, activation=act, C_b=c.C_b, C_W=c.C_W,
               lambda_b=lam_b, lambda_W=lam_W), c


def x_for(c, K1):
    """The one-dimensional input whose first-layer kernel is K1."""
    return np.array([math.sqrt((K1 - c.C_b) / c.C_W)])


def test_decomposition_sums_to_the_recursion():
    # per-layer C's and λ's, off criticality: Σ_ℓ contributions must equal the iterated Θ^{(L)}
    net = MLP(input_dim=3, width=4, depth=6, activation="tanh", C_b=[0.1, 0.2, 0.0, 0.3, 0.1, 0.2],
              C_W=[1.5, 0.8, 1.2, 1.0, 2.0, 0.9], lambda_b=[0.3, 1.0, 0.0, 2.0, 0.5, 1.0],
              lambda_W=[1.0, 0.2, 0.7, 0.0, 1.3, 2.0])
    lc = layer_contributions(net, np.array([0.3, -1.2, 0.8]))
    assert lc.total.sum() == pytest.approx(lc.Theta_L, rel=1e-13)
    assert lc.share.sum() == pytest.approx(1.0, rel=1e-13)
    np.testing.assert_allclose(lc.bias + lc.weight, lc.total)
    # first layer: Θ^{(1)} = λ_b + λ_W x·x/n₀ (formula sheet §5)
    assert lc.Theta[0] == pytest.approx(0.3 + 1.0 * (0.09 + 1.44 + 0.64) / 3, rel=1e-14)


@pytest.mark.parametrize("act, K1", [("relu", 1.0), ("relu", 3.7), ("linear", 0.4), ("leaky_relu", 2.0)])
def test_scale_invariant_exact(act, K1):
    L = 50
    lb, lw = equivalence_principle(act, L, 0.7, 1.3)
    assert lb == (0.7 / L,) * L and lw == (1.3 / L,) * L
    net, c = critical_net(act, L, lb, lw)
    lc = layer_contributions(net, x_for(c, K1))
    np.testing.assert_allclose(lc.share, 1.0 / L, rtol=1e-12)
    A2 = 1.0 / c.C_W
    assert lc.Theta_L == pytest.approx(0.7 + 1.3 * A2 * K1, rel=1e-12)
    assert theta_limit(act, 0.7, 1.3, K1=K1) == pytest.approx(lc.Theta_L, rel=1e-12)


def test_tanh_closed_form_scalings():
    L = 50
    lb, lw = equivalence_principle("tanh", L, 2.0, 3.0)
    # p⊥ = 1: λ_b = λ̃_b/ℓ, λ_W = λ̃_W (formula sheet §5)
    np.testing.assert_allclose(lb, [2.0 / ell for ell in range(1, L + 1)], rtol=1e-12)
    np.testing.assert_allclose(lw, 3.0, rtol=1e-12)
    assert theta_limit("tanh", 0.0, 1.0) == pytest.approx(0.5, rel=1e-10)   # σ₁²/(−a₁) = 1/2


@pytest.mark.parametrize("lam", [(1.0, 0.0), (0.0, 1.0), (1.0, 1.0)])
def test_tanh_equal_shares_at_L50(lam):
    L = 50
    net, c = critical_net("tanh", L, *equivalence_principle("tanh", L, *lam))
    lc = layer_contributions(net, [1.0])
    # every share is 1/L = 0.02 to 1e-2; the bulk (ℓ ≥ 10) to 10 % of 1/L: only the first few layers,
    # where K^{(ℓ)} is not yet 1/(2ℓ), deviate at O(1) relative
    assert np.max(np.abs(lc.share - 1.0 / L)) < 1e-2
    assert np.max(np.abs(lc.share[9:] * L - 1.0)) < 0.1


def test_tanh_theta_approaches_the_limit():
    errs = []
    for L in (50, 200, 800):
        net, _ = critical_net("tanh", L, *equivalence_principle("tanh", L, 0.0, 1.0))
        errs.append(layer_contributions(net, [1.0]).Theta_L - 0.5)
    assert errs[0] > errs[1] > errs[2] > 0 and errs[2] < 0.01


def test_tanh_unscaled_weight_rate():
    # formula sheet §5 [N]: λ_W = 1, λ_b = 0, no scaling: Θ → 0.5016 at ℓ = 2000
    net = MLP(input_dim=1, width=1, depth=2000, activation="tanh", C_b=0.0, C_W=1.0, lambda_b=0.0, lambda_W=1.0)
    assert layer_contributions(net, [1.0]).Theta_L == pytest.approx(0.5016, abs=2e-4)


@pytest.mark.parametrize("act", ["gelu", "swish"])
def test_half_stable_at_the_fixed_point(act):
    L = 40
    lb, lw = equivalence_principle(act, L, 1.0, 2.0)
    assert lb == (1.0 / L,) * L and lw == (2.0 / L,) * L
    net, c = critical_net(act, L, lb, lw)
    lc = layer_contributions(net, x_for(c, c.K_star))
    np.testing.assert_allclose(lc.share, 1.0 / L, rtol=1e-8)
    np.testing.assert_allclose(lc.K, c.K_star, rtol=1e-8)
    assert lc.Theta_L == pytest.approx(theta_limit(act, 1.0, 2.0), rel=1e-8)


@pytest.mark.parametrize("act, K1", [("tanh", 1.0), ("tanh", 0.05), ("gelu", 1.0), ("swish", 20.0),
                                     ("relu", 2.0), ("sin", 0.7)])
def test_numerical_rates_on_a_trajectory(act, K1):
    L = 30
    lb, lw = equivalence_principle(act, L, 0.5, 1.5, K1=K1)
    net, c = critical_net(act, L, lb, lw)
    lc = layer_contributions(net, x_for(c, K1))
    np.testing.assert_allclose(lc.share, 1.0 / L, rtol=1e-10)
    np.testing.assert_allclose(lc.bias, 0.5 / L, rtol=1e-10)
    assert lc.Theta_L == pytest.approx(theta_limit(act, 0.5, 1.5, K1=K1), rel=1e-10)


def test_numerical_rates_match_closed_form_deep_for_tanh():
    # the trajectory-solved rates approach λ̃_b/ℓ and λ̃_W in the deep layers
    L = 400
    lb, lw = equivalence_principle("tanh", L, 1.0, 1.0, K1=1.0)
    ell = np.arange(1, L + 1)
    assert np.max(np.abs(np.array(lb)[100:] * ell[100:] - 1.0)) < 0.05
    assert np.max(np.abs(np.array(lw)[100:] - 1.0)) < 0.05


@pytest.mark.parametrize("call, words", [
    (lambda: equivalence_principle("sigmoid", 10), "no criticality"),
    (lambda: equivalence_principle("tanh", 0), "depth"),
    (lambda: equivalence_principle("tanh", 5, -1.0), "lambda_b_tilde"),
    (lambda: equivalence_principle("gelu", 5, K1=0.01), "below the critical C_b"),
    (lambda: theta_limit("relu"), "K1"),
    (lambda: layer_contributions(MLP(input_dim=2, width=3, depth=2), np.ones((2, 2))), "one input"),
])
def test_errors(call, words):
    with pytest.raises(ValueError, match=words):
        call()
