"""The 1/n correction H^{1} to the NTK mean (pdlt.theory.ntk_correction; derived here, not from the book).

Exact and consistency checks; the Monte Carlo twin is tests/test_ntk_correction_twin.py.
"""

import numpy as np
import pytest

import pdlt
from pdlt import MLP
from pdlt.theory._gauss import Expectations
from pdlt.theory.four_point import g1_step
from pdlt.theory.ntk import _d2_spsp
from pdlt.theory.ntk_correction import h1_step, h1_step_single, ntk_mean, ntk_mean_correction

X3 = np.array([[1.0, 0.3, -0.5, 0.2], [-0.4, 1.1, 0.6, -0.3], [0.5, -0.2, 0.9, 1.2]])
CRITICAL = {"tanh": (0.0, 1.0), "relu": (0.0, 2.0), "gelu": (0.172922391, 1.98305826)}


@pytest.mark.parametrize("act, C_b, C_W", [("linear", 0.0, 1.0), ("linear", 0.3, 0.8), ("relu", 0.0, 2.0),
                                           ("relu", 0.4, 1.7), ("leaky_relu", 0.0, 1.5)])
def test_single_input_exact_zero(act, C_b, C_W):
    """Deep linear nets and the scale-invariant class with one input: E[Ĥ'] = λ_b + λ_W A₂E[z²] + C_W A₂E[Ĥ]
    exactly at any width (sign flip z_j → −z_j), and E[z²] has no 1/n correction, so H^{1} ≡ 0."""
    net = MLP(4, 30, 6, act, C_b=C_b, C_W=C_W, lambda_b=0.5, lambda_W=1.0)
    for h in ntk_mean_correction(net, X3[:1]):
        assert abs(h[0, 0]) < 1e-10


def test_deep_linear_multi_input_exact_zero():
    """Deep linear: σ'σ' = 1 has no derivatives and E[zz] = K exactly, so H^{1} = 0 for every pair."""
    net = MLP(4, 30, 5, "linear", C_b=0.2, C_W=1.0, lambda_b=0.5, lambda_W=1.0)
    for h in ntk_mean_correction(net, X3):
        np.testing.assert_allclose(h, 0.0, atol=1e-9)


@pytest.mark.parametrize("act", list(CRITICAL))
def test_first_two_layers_vanish(act):
    """Layer 1 is deterministic and layer 2 sees exactly Gaussian z^{(1)}: H^{1(1)} = H^{1(2)} = 0."""
    C_b, C_W = CRITICAL[act]
    net = MLP(4, 20, 4, act, C_b=C_b, C_W=C_W, lambda_b=0.5, lambda_W=1.0)
    H = ntk_mean_correction(net, X3)
    np.testing.assert_allclose(H[0], 0.0, atol=1e-12)
    np.testing.assert_allclose(H[1], 0.0, atol=1e-10)
    assert np.max(np.abs(H[3])) > 1e-3                 # and it is not trivially zero deeper


@pytest.mark.parametrize("act", list(CRITICAL))
def test_lambda_W_part_is_the_kernel_G1(act):
    """With Θ = H1 = D = F = 0 only λ_W⟨σσ⟩'s finite-width shift remains: H^{1(ℓ+1)} = (λ_W/C_W) G^{1(ℓ+1)}.
    Checks the Hermite-form moments (2-D polar rule) against four_point.g1_step's pair-derivative form."""
    C_b, C_W = CRITICAL[act]
    net = MLP(4, 20, 4, act, C_b=C_b, C_W=C_W, lambda_b=0.5, lambda_W=1.0)
    s = pdlt.theory(net, X3).layer(3)
    E = Expectations(net.activation)
    N, z2, z4 = 3, np.zeros((3, 3)), np.zeros((3,) * 4)
    rng = np.random.default_rng(0)
    G1 = s.G1 + 0.3 * (lambda m: m + m.T)(rng.normal(size=(N, N)))   # exercise every G1 entry
    got = h1_step(s.K, s.V, G1, z2, z2, z4, z4, C_W, 0.7, 1.3, E)
    ref = g1_step(s.K, s.V, G1, C_W, 1.3, E) * 0.7 / C_W
    np.testing.assert_allclose(got, ref, rtol=2e-6, atol=1e-9)


def test_DF_term_matches_pair_derivative_form():
    """The D/F term (C_W/2)Σ(D_abcd + F_acbd + F_adbc)⟨∂_c∂_d(σ'_aσ'_b)⟩ in Hermite form against the
    pair moments ⟨σ'''σ'⟩, ⟨σ''σ''⟩ of ntk._d2_spsp (tanh, smooth)."""
    net = MLP(4, 20, 4, "tanh", C_b=0.0, C_W=1.0, lambda_b=0.5, lambda_W=1.0)
    s = pdlt.theory(net, X3).layer(3)
    E = Expectations(net.activation)
    rng = np.random.default_rng(1)
    D = rng.normal(size=(3,) * 4)
    D = D + D.transpose(1, 0, 2, 3)
    D = D + D.transpose(0, 1, 3, 2)
    F = rng.normal(size=(3,) * 4)
    F = F + F.transpose(2, 3, 0, 1)
    z2, z4 = np.zeros((3, 3)), np.zeros((3,) * 4)
    C_W, r = 1.2, 0.8
    got = h1_step(s.K, z4, z2, z2, z2, D, F, C_W, 1.0, r, E)
    d2p = _d2_spsp(s.K, E)
    ref = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            for bits, coef in d2p.items():
                c, d = (b if bits[0] else a), (b if bits[1] else a)
                Y = D[a, b, c, d] + F[a, c, b, d] + F[a, d, b, c]
                ref[a, b] += Y * coef[a, b]
    ref *= 0.5 * r * C_W
    np.testing.assert_allclose(got, ref, rtol=2e-6, atol=1e-9)


@pytest.mark.parametrize("act", ["tanh", "gelu"])
def test_single_and_multi_input_agree(act):
    """The diagonal of the multi-input result equals the single-input recursion run on that input alone."""
    C_b, C_W = CRITICAL[act]
    net = MLP(4, 20, 5, act, C_b=C_b, C_W=C_W, lambda_b=0.5, lambda_W=1.0)
    Hm = ntk_mean_correction(net, X3)
    for a in range(3):
        Hs = ntk_mean_correction(net, X3[a:a + 1])
        np.testing.assert_allclose([h[a, a] for h in Hm], [h[0, 0] for h in Hs], rtol=1e-9, atol=1e-12)


def test_single_input_closed_form_small_pieces():
    """h1_step_single pieces: with only H1 ≠ 0 it is r χ_⊥ H1; with only D (or F) it is 2h r D (4h r F)."""
    E = Expectations(MLP(1, 5, 2, "tanh").activation)
    K, C_W, r = 0.4, 1.0, 1.5
    chi = h1_step_single(K, 0, 0, 0, 1.0, 0, 0, C_W, 1.0, r, E) / r
    twoh = h1_step_single(K, 0, 0, 0, 0, 1.0, 0, C_W, 1.0, r, E) / r
    fourh = h1_step_single(K, 0, 0, 0, 0, 0, 1.0, C_W, 1.0, r, E) / r
    from pdlt import gaussian
    sp2 = lambda z: (1 - np.tanh(z) ** 2) ** 2                      # noqa: E731
    assert chi == pytest.approx(C_W * float(gaussian.expect1(sp2, K)), rel=1e-12)
    h = C_W / (4 * K * K) * float(gaussian.expect1(lambda z: sp2(z) * (z * z - K), K))
    assert twoh == pytest.approx(2 * h, rel=1e-10)
    assert fourh == pytest.approx(4 * h, rel=1e-10)
    assert h < 0                                                    # tanh: χ_⊥ decreases with K


def test_repeated_inputs_and_ntk_mean():
    """Repeated rows are computed once and copied; ntk_mean = Θ + H1/n_{ℓ−1}."""
    net = MLP(4, 20, 4, "tanh", C_b=0.0, C_W=1.0, lambda_b=0.5, lambda_W=1.0)
    X = X3[[0, 1, 0]]
    H = ntk_mean_correction(net, X)
    Hu = ntk_mean_correction(net, X3[:2])
    np.testing.assert_allclose(H[-1][np.ix_([0, 1], [0, 1])], Hu[-1], rtol=1e-12)
    np.testing.assert_allclose(H[-1][2], H[-1][0], rtol=1e-12)
    th = pdlt.theory(net, X, ntk=True)
    m = ntk_mean(net, X, th)
    np.testing.assert_allclose(m[-1], th.layer(4).Theta + H[-1] / 20, rtol=1e-12)


def test_relu_multi_input_nonzero():
    """ReLU: H^{1} ≡ 0 for one input (exact) but not between distinct inputs (the kernel's G1 ≠ 0 there)."""
    net = MLP(4, 20, 5, "relu", C_b=0.0, C_W=2.0, lambda_b=0.5, lambda_W=1.0)
    H = ntk_mean_correction(net, X3)
    np.testing.assert_allclose(np.diag(H[-1]), 0.0, atol=1e-9)
    assert abs(H[-1][0, 1]) > 0.1
