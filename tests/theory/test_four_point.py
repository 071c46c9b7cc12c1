"""Known results of the K, V, G1 recursions (book Ch. 3–5; formula sheet §1, §2, §4, §11)."""

import numpy as np
import pytest

import pdlt.theory
from pdlt import MLP
from pdlt.activations import LeakyReLU
from pdlt.theory import deep_linear

X3 = np.array([[1.0, 0.3, -0.5, 0.2], [-0.4, 1.1, 0.6, -0.3], [0.5, -0.2, 0.9, 1.2]])


def single(act, C_W, depth, width=100, C_b=0.0, x=(1.0, 0.5, -0.7, 0.2), **kw):
    return pdlt.theory(MLP(len(x), width, depth, act, C_b=C_b, C_W=C_W, **kw), np.array([x]))


@pytest.mark.parametrize("act, C_W, nu", [
    ("relu", 2.0, 5.0), ("linear", 1.0, 2.0), (LeakyReLU(0.3), 2 / 1.09, (5 - 2 * .09 + 5 * .0081) / 1.09 ** 2),
])
def test_scale_invariant_vertex_grows_linearly(act, C_W, nu):
    """V^{(ℓ)}/(K²) = ν(ℓ−1) at criticality, equal widths (formula sheet §4)."""
    th = single(act, C_W, 8)
    for ell in range(1, 9):
        s = th.layer(ell)
        assert s.V[0, 0, 0, 0] / s.K[0, 0] ** 2 == pytest.approx(nu * (ell - 1), rel=1e-12, abs=1e-12)
        assert s.G1[0, 0] == pytest.approx(0.0, abs=1e-12)   # E[z²] propagates exactly


def test_scale_invariant_vertex_off_criticality_is_C_W_independent():
    """At C_b = 0 the normalized vertex V/K² does not depend on C_W (formula sheet §4)."""
    a = single("relu", 1.5, 6).layer(6)
    b = single("relu", 2.5, 6).layer(6)
    assert a.V[0, 0, 0, 0] / a.K[0, 0] ** 2 == pytest.approx(b.V[0, 0, 0, 0] / b.K[0, 0] ** 2, rel=1e-12)
    assert a.K[0, 0] / b.K[0, 0] == pytest.approx((1.5 / 2.5) ** 6, rel=1e-12)


def test_tanh_large_depth_asymptotics():
    """K* = 0 class: V/(K²) → (2/3)ℓ and G1 → 1/(3a₁) = −1/6 for tanh (formula sheet §2, §4)."""
    th = single("tanh", 1.0, 2000, x=(1.0,))
    s = th.layer(2000)
    assert s.K[0, 0] * 2000 == pytest.approx(0.5, abs=0.01)
    assert s.V[0, 0, 0, 0] / s.K[0, 0] ** 2 / 2000 == pytest.approx(2 / 3, abs=0.005)
    assert s.G1[0, 0] == pytest.approx(-1 / 6, abs=0.003)
    # the asymptotic law is approached monotonically (it is not already true at small depth)
    ratios = [th.layer(l).V[0, 0, 0, 0] / th.layer(l).K[0, 0] ** 2 / l for l in (20, 200, 2000)]
    assert abs(ratios[0] - 2 / 3) > abs(ratios[1] - 2 / 3) > abs(ratios[2] - 2 / 3)
    assert abs(ratios[0] - 2 / 3) > 0.05


def test_deep_linear_recursion_matches_exact_leading_order():
    """For σ(z) = z, the general multi-input recursion equals the exact Ch. 3 leading order (with biases)."""
    net = MLP(widths=[4, 7, 5, 9, 6], activation="linear", C_b=[0.1, 0.2, 0.0, 0.3], C_W=[1.0, 0.8, 1.3, 1.1])
    th = pdlt.theory(net, X3)
    lo = deep_linear.leading_order_kernel_and_vertex(net, X3)
    for ell in range(1, 5):
        s = th.layer(ell)
        np.testing.assert_allclose(s.K, lo.K[ell - 1], rtol=1e-12)
        np.testing.assert_allclose(s.V, lo.V[ell - 1], rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(s.G1, 0.0, atol=1e-12)


def test_deep_linear_exact_vertex_is_the_1_over_n_limit():
    """n·|V_exact − V| shrinks like 1/n: the recursion's V is the n → ∞ limit of the exact vertex."""
    devs = []
    for n in (20, 40, 80, 160):
        net = MLP(4, n, 5, "linear", C_b=0.1, C_W=1.0)
        ex = deep_linear.exact_two_and_four_point(net, X3)
        V = pdlt.theory(net, X3).layer(5).V
        devs.append(np.max(np.abs(ex.V[4] - V)))
    devs = np.array(devs)
    assert np.all(np.diff(devs) < 0)
    np.testing.assert_allclose(devs[1:] / devs[:-1], 0.5, atol=0.05)


def test_vertex_symmetries_and_single_input_consistency():
    net = MLP(4, 50, 5, "tanh", C_b=0.1, C_W=1.2)
    th = pdlt.theory(net, X3)
    for ell in (2, 5):
        V = th.layer(ell).V
        np.testing.assert_allclose(V, V.transpose(1, 0, 2, 3), atol=1e-14)
        np.testing.assert_allclose(V, V.transpose(0, 1, 3, 2), atol=1e-14)
        np.testing.assert_allclose(V, V.transpose(2, 3, 0, 1), atol=1e-14)
        np.testing.assert_allclose(th.layer(ell).K, th.layer(ell).K.T, atol=1e-15)
    # the multi-input recursion restricted to one input equals the single-input fast path
    for i in range(3):
        one = pdlt.theory(net, X3[i:i + 1])
        for ell in (2, 5):
            a, b = th.layer(ell), one.layer(ell)
            assert a.K[i, i] == pytest.approx(b.K[0, 0], rel=1e-12)
            assert a.V[i, i, i, i] == pytest.approx(b.V[0, 0, 0, 0], rel=1e-10)
            assert a.G1[i, i] == pytest.approx(b.G1[0, 0], rel=1e-9, abs=1e-14)


def test_repeated_inputs_and_nearly_repeated_inputs():
    net = MLP(4, 50, 6, "relu", C_b=0.05, C_W=2.0)
    X = np.vstack([X3[0], X3[0], X3[1]])
    th = pdlt.theory(net, X)
    s = th.layer(6)
    np.testing.assert_allclose(s.K[0], s.K[1], rtol=1e-13)
    np.testing.assert_allclose(s.V[0, 0, 0, 0], s.V[0, 1, 1, 0], rtol=1e-12)
    near = pdlt.theory(net, np.vstack([X3[0], X3[0] + 1e-6, X3[1]])).layer(6)
    np.testing.assert_allclose(near.G1[0, 1], s.G1[0, 1], rtol=1e-3, atol=1e-8)
    np.testing.assert_allclose(near.V[0, 1, 0, 1], s.V[0, 1, 0, 1], rtol=1e-4)


def test_user_callable_goes_through_the_pipeline():
    """A plain callable gives the same theory as the registered activation it equals."""
    net_a = MLP(4, 64, 5, "tanh", C_b=0.0, C_W=1.0)
    net_b = MLP(4, 64, 5, lambda z: np.tanh(z), C_b=0.0, C_W=1.0)
    a, b = pdlt.theory(net_a, X3[:2]).layer(5), pdlt.theory(net_b, X3[:2]).layer(5)
    np.testing.assert_allclose(b.K, a.K, rtol=1e-12)
    np.testing.assert_allclose(b.V, a.V, rtol=1e-8)
    np.testing.assert_allclose(b.G1, a.G1, rtol=1e-8)


def test_non_uniform_widths_carry_the_width_ratios():
    """V^{(ℓ+1)} = genesis + (n_ℓ/n_{ℓ−1}) χ∥² V: check on ReLU where χ∥ = 1 and genesis = 5K²."""
    widths = [4, 10, 40, 20, 80]
    th = pdlt.theory(MLP(widths=widths, activation="relu", C_W=2.0), X3[:1])
    V = 0.0
    for ell in range(2, 5):
        V = 5.0 + widths[ell - 1] / widths[ell - 2] * V
        s = th.layer(ell)
        assert s.V[0, 0, 0, 0] / s.K[0, 0] ** 2 == pytest.approx(V, rel=1e-12)
        assert s.n_prev == widths[ell - 1]


def test_overflow_is_reported_with_the_layer():
    with pytest.raises(OverflowError, match="layer"):
        pdlt.theory(MLP(4, 10, 400, "relu", C_W=50.0), X3[:2])
