"""Kernel learning at infinite width (book Ch. 10; formula sheet §8): the closed form against the
explicitly iterated frozen-NTK dynamics, algorithm independence at t = ∞, divergence, duplicates."""

import math
import warnings

import numpy as np
import pytest

from pdlt import MLP
from pdlt.theory import bayes, training

RNG = np.random.default_rng(5)
XA = RNG.standard_normal((4, 3))
XB = np.vstack([RNG.standard_normal((2, 3)), XA[0]])      # the last test input is a training input
YA = np.column_stack([np.sin(XA @ [0.5, -0.3, 0.8]), XA[:, 1]])
NET = MLP(3, 8, 3, "tanh", C_b=0.0, C_W=1.0, lambda_b=0.5, lambda_W=1.0)


def _iterate(net, X_train, y, X_test, eta, steps):
    """The frozen-NTK dynamics step by step, as an affine map of z(0) ~ N(0, K) on A ∪ B:
    z_A ← z_A − ηΘ_AA(z_A − y), z_B ← z_B − ηΘ_BA(z_A − y). Returns (mean, cov) of z_B(t)."""
    kb = bayes.kernel_blocks(net, X_train, X_test, ntk=True)
    NA, NB = len(X_train), len(X_test)
    Th = np.block([[kb.Theta_train], [kb.Theta_cross]])              # Θ_{(A∪B), A}
    K = np.block([[kb.train, kb.cross.T], [kb.cross, kb.test]])
    Amap, c = np.eye(NA + NB), np.zeros((NA + NB, y.shape[1]))       # z(t) = Amap z(0) + c
    for _ in range(steps):
        Amap = Amap - eta * Th @ Amap[:NA]
        c = c - eta * Th @ (c[:NA] - y)
    return c[NA:], (Amap @ K @ Amap.T)[NA:, NA:]


@pytest.mark.parametrize("steps", [0, 1, 7, 60])
@pytest.mark.parametrize("frac", [0.3, 0.9, 1.5])
def test_closed_form_equals_iterated_dynamics(steps, frac):
    eta = frac * training.max_learning_rate(NET, XA)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", training.DivergenceWarning)     # frac = 1.5: diverging, still exact
        pred = training.gradient_descent(NET, XA, YA, XB, eta=eta, steps=steps)
    mean, cov = _iterate(NET, XA, YA, XB, eta, steps)
    np.testing.assert_allclose(pred.mean, mean, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(pred.cov, cov, rtol=1e-9, atol=1e-11)
    if steps == 0:   # untrained: mean 0, covariance K
        np.testing.assert_allclose(pred.cov, bayes.kernel_blocks(NET, XA, XB).test, atol=1e-14)


def test_fully_trained_network_is_algorithm_independent():
    """t = ∞ at any convergent η, the Newton step ηΘ̃ = 1, and long finite runs all agree; the
    trained network interpolates the training set with zero variance there (book §10.2)."""
    eta_max = training.max_learning_rate(NET, XA)
    ref = training.newton_step(NET, XA, YA, XB)
    for frac in (0.1, 0.5, 0.99):
        inf = training.gradient_descent(NET, XA, YA, XB, eta=frac * eta_max, steps=None)
        np.testing.assert_allclose(inf.mean, ref.mean, atol=1e-12)
        np.testing.assert_allclose(inf.cov, ref.cov, atol=1e-12)
    assert training.gradient_descent(NET, XA, YA, XB).mean == pytest.approx(ref.mean, abs=1e-12)
    long = training.gradient_descent(NET, XA, YA, XB, eta=0.9 * eta_max, steps=20000)
    np.testing.assert_allclose(long.mean, ref.mean, atol=1e-8)
    np.testing.assert_allclose(ref.mean[-1], YA[0], atol=1e-10)       # test input = training input 0
    np.testing.assert_allclose(ref.cov[-1], 0.0, atol=1e-10)
    # the sheet's t = ∞ formulas, written out: m = Θ_BA Θ̃⁻¹ y and the K/Θ mixing covariance
    kb = bayes.kernel_blocks(NET, XA, XB, ntk=True)
    P = kb.Theta_cross @ np.linalg.inv(kb.Theta_train)
    np.testing.assert_allclose(ref.mean, P @ YA, atol=1e-10)
    cov = kb.test - P @ kb.cross.T - kb.cross @ P.T + P @ kb.train @ P.T
    np.testing.assert_allclose(ref.cov, cov, atol=1e-10)


def test_bias_variance_split_and_result_object():
    yB = np.sin(XB @ [0.5, -0.3, 0.8])
    p = training.gradient_descent(NET, XA, YA[:, 0], XB, eta=0.3, steps=10, y_test=yB)
    assert p.mean.shape == (3,) and p.cov.shape == (3, 3) and p.variance.shape == (3,)
    np.testing.assert_allclose(p.bias, p.mean - yB)
    np.testing.assert_allclose(p.error, (p.mean - yB) ** 2 + np.diag(p.cov))
    d = p.to_dict()
    assert d["method"] == "gradient descent" and d["info"]["steps"] == 10 and d["info"]["eta"] == 0.3
    assert d["info"]["eta_max"] == pytest.approx(training.max_learning_rate(NET, XA))
    p2 = training.gradient_descent(NET, XA, YA, XB, eta=0.3, steps=10)
    assert p2.mean.shape == (3, 2) and p2.bias is None and p2.error is None


def test_spectral_filter_limits():
    lam = np.array([0.0, 1e-14, 1e-3, 0.5, 1.9])
    f = training.spectral_filter(lam, 1.0, 5)
    np.testing.assert_allclose(f[:2], 5.0, rtol=1e-12)                  # f_t(0) = ηt
    np.testing.assert_allclose(f[2:], (1 - (1 - lam[2:]) ** 5) / lam[2:], rtol=1e-12)
    np.testing.assert_allclose(training.spectral_filter(lam[2:], 1.0, math.inf), 1 / lam[2:])


# ---------------------------------------------------------------------------------------------
# Errors and edge cases


def test_too_large_learning_rate_diverges_with_threshold_in_message():
    eta_max = training.max_learning_rate(NET, XA)
    with pytest.raises(ValueError, match=rf"diverges: eta = .* >= 2/λ_max\(Θ̃\) = {eta_max:.6g}"):
        training.gradient_descent(NET, XA, YA, XB, eta=1.01 * eta_max, steps=None)
    with pytest.warns(training.DivergenceWarning, match="diverges"):
        p = training.gradient_descent(NET, XA, YA, XB, eta=1.01 * eta_max, steps=30)
    assert np.all(np.isfinite(p.mean))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        training.gradient_descent(NET, XA, YA, XB, eta=0.99 * eta_max, steps=30)


def test_duplicate_training_inputs():
    """Exact duplicates leave t = ∞ determined (their null directions of Θ̃ are annihilated by
    Θ_BA): the network fits their average target. Finite t works with the singular Θ̃ as is.
    The Bayesian posterior without noise refuses them (no posterior for conflicting exact targets)."""
    X = np.vstack([XA, XA[1]])
    y = np.append(YA[:, 0], YA[1, 0] + 0.4)
    merged = YA[:, 0].copy()
    merged[1] += 0.2
    p = training.gradient_descent(NET, X, y, XB)
    q = training.gradient_descent(NET, XA, merged, XB)
    np.testing.assert_allclose(p.mean, q.mean, atol=1e-9)
    np.testing.assert_allclose(p.cov, q.cov, atol=1e-9)
    eta = 0.5 * training.max_learning_rate(NET, X)
    mean, cov = _iterate(NET, X, y[:, None], XB, eta, 12)
    r = training.gradient_descent(NET, X, y, XB, eta=eta, steps=12)
    np.testing.assert_allclose(r.mean, mean[:, 0], atol=1e-11)
    with pytest.raises(ValueError, match="identical"):
        bayes.posterior(NET, X, y, XB)


def test_singular_ntk_raises():
    """ReLU, C_b = λ_b = 0, one feature: Θ̃ has rank 2 for 4 distinct inputs."""
    net = MLP(1, 8, 3, "relu", C_b=0.0, C_W=2.0, lambda_b=0.0, lambda_W=1.0)
    X = np.array([[1.0], [2.0], [3.0], [-1.0]])
    with pytest.raises(ValueError, match=r"(?s)training NTK .* singular.*n_features = 1"):
        training.gradient_descent(net, X, np.arange(4.0), X[:2])
    p = training.gradient_descent(net, X, np.arange(4.0), X[:2], eta=0.02, steps=5)   # finite t is fine
    assert np.all(np.isfinite(p.cov))


@pytest.mark.parametrize("kwargs, match", [
    (dict(eta=-0.1, steps=3), "eta must be > 0"),
    (dict(eta=0.0, steps=3), "eta must be > 0"),
    (dict(eta=float("nan"), steps=3), "eta must be finite"),
    (dict(eta=0.1, steps=-1), "steps must be an integer >= 0"),
    (dict(eta=0.1, steps=2.5), "steps must be an integer >= 0"),
    (dict(eta=None, steps=3), "eta is required"),
    (dict(eta=0.1, steps=3, y_test=np.ones((3, 2))), "y_test has 2 outputs"),
])
def test_bad_input_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        training.gradient_descent(NET, XA, YA[:, 0], XB, **kwargs)
