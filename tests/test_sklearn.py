"""scikit-learn estimators for infinite-width networks (book Ch. 6, 10) and the finite-width trained
mean (Ch. ∞): equality with GaussianProcessRegressor and with pdlt.theory, sklearn API conformance,
real data (digits)."""

import pickle
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone                                       # noqa: E402
from sklearn.datasets import load_digits                             # noqa: E402
from sklearn.gaussian_process import GaussianProcessRegressor        # noqa: E402
from sklearn.pipeline import make_pipeline                           # noqa: E402
from sklearn.preprocessing import StandardScaler                     # noqa: E402

from pdlt import MLP                                                 # noqa: E402
from pdlt.sklearn import FiniteWidthRegressor, NNGPKernel, NNGPRegressor, NTKRegressor  # noqa: E402
from pdlt.theory import bayes, training                              # noqa: E402
from pdlt.theory.finite_width import finite_width_mean               # noqa: E402

RNG = np.random.default_rng(8)
X = RNG.standard_normal((40, 5))
Y = np.sin(X @ RNG.standard_normal(5)) + 0.05 * RNG.standard_normal(40)
X_TR, X_TE, Y_TR, Y_TE = X[:30], X[30:], Y[:30], Y[30:]
CONFIGS = [dict(activation="relu", depth=3, C_b=0.0, C_W=2.0), dict(activation="tanh", depth=2, C_b=0.0, C_W=1.0)]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c["activation"])
def test_nngp_equals_gaussian_process_regressor_with_the_same_kernel(cfg):
    noise = 1e-3
    ours = NNGPRegressor(noise=noise, **cfg).fit(X_TR, Y_TR)
    gpr = GaussianProcessRegressor(kernel=NNGPKernel(**cfg), optimizer=None, alpha=noise).fit(X_TR, Y_TR)
    m, s = ours.predict(X_TE, return_std=True)
    gm, gs = gpr.predict(X_TE, return_std=True)
    np.testing.assert_allclose(m, gm, rtol=0, atol=1e-10)
    np.testing.assert_allclose(s, gs, rtol=0, atol=1e-10)
    _, c = ours.predict(X_TE, return_cov=True)
    _, gc = gpr.predict(X_TE, return_cov=True)
    np.testing.assert_allclose(c, gc, rtol=0, atol=1e-10)
    assert ours.log_marginal_likelihood_value_ == pytest.approx(gpr.log_marginal_likelihood_value_, rel=1e-10)
    # and the theory function
    net = MLP(5, 1, cfg["depth"], cfg["activation"], C_b=cfg["C_b"], C_W=cfg["C_W"], output_dim=1)
    post = bayes.posterior(net, X_TR, Y_TR, X_TE, noise=noise)
    np.testing.assert_allclose(m, post.mean, atol=1e-12)
    np.testing.assert_allclose(s, post.std, atol=1e-12)


@pytest.mark.parametrize("steps, eta", [(None, None), (25, 0.02)])
def test_ntk_regressor_equals_theory(steps, eta):
    xa, ya, xb = X_TR[:15], Y_TR[:15], X_TE[:5]
    est = NTKRegressor(activation="tanh", depth=3, C_W=1.0, lambda_b=0.5, lambda_W=1.0, eta=eta, steps=steps)
    m, s = est.fit(xa, ya).predict(xb, return_std=True)
    _, c = est.predict(xb, return_cov=True)
    net = MLP(5, 1, 3, "tanh", C_b=0.0, C_W=1.0, lambda_b=0.5, lambda_W=1.0, output_dim=1)
    th = training.gradient_descent(net, xa, ya, xb, eta=eta, steps=steps)
    np.testing.assert_allclose(m, th.mean, atol=1e-12)
    np.testing.assert_allclose(s, th.std, atol=1e-12)
    np.testing.assert_allclose(c, th.cov, atol=1e-12)
    if steps is None:      # fully trained: interpolates
        np.testing.assert_allclose(est.predict(xa), ya, atol=1e-8)


def test_multi_output_shapes():
    Y2 = np.column_stack([Y_TR, -2 * Y_TR])
    for est in (NNGPRegressor(noise=1e-4), NTKRegressor()):
        m, s = est.fit(X_TR, Y2).predict(X_TE, return_std=True)
        assert m.shape == (10, 2) and s.shape == (10, 2)
        np.testing.assert_allclose(m[:, 1], -2 * m[:, 0], atol=1e-10)
        np.testing.assert_allclose(s[:, 0], s[:, 1])


def test_clone_params_pickle_and_pipeline():
    est = NNGPRegressor(activation="tanh", depth=4, C_W=1.0, noise=1e-3)
    assert est.get_params()["depth"] == 4
    c = clone(est).set_params(depth=2)
    assert c.depth == 2 and est.depth == 4
    pipe = make_pipeline(StandardScaler(), est).fit(X_TR, Y_TR)
    back = pickle.loads(pickle.dumps(pipe))
    np.testing.assert_array_equal(back.predict(X_TE), pipe.predict(X_TE))
    assert back[-1].net_.depth == 4
    with pytest.raises(ValueError, match="features"):
        pipe.predict(X_TE[:, :3])


def test_check_estimator():
    """scikit-learn's own conformance suite. The defaults (critical ReLU, C_b = 0, noise 1e-10) fail
    four of its checks by design: an all-zero input row (preactivations identically 0 at C_b = 0),
    and inputs centred at 100 on which the C_b = 0 kernel is singular to rounding — a clear
    ValueError rather than numbers dominated by rounding. With C_b > 0 every check passes."""
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for est in (NNGPRegressor(C_b=0.1, noise=1e-4), NTKRegressor(C_b=0.1)):
            res = check_estimator(est, on_fail=None)
            failed = [(r["check_name"], str(r["exception"])[:200]) for r in res if r["status"] == "failed"]
            assert not failed, failed


def test_digits_two_classes_beat_the_trivial_baseline():
    """scikit-learn's bundled digits (no download): 3 against 8 as ±1 targets, 100 training and 50 test
    images, StandardScaler + infinite-width network. Both beat the majority-class baseline clearly."""
    X, y = load_digits(return_X_y=True)
    keep = (y == 3) | (y == 8)
    X, t = X[keep], np.where(y[keep] == 3, 1.0, -1.0)
    order = np.random.default_rng(0).permutation(len(t))
    tr, te = order[:100], order[100:150]
    baseline = max(np.mean(t[te] == 1), np.mean(t[te] == -1))
    for est in (NNGPRegressor(noise=0.1), NTKRegressor(lambda_b=0.1)):
        pipe = make_pipeline(StandardScaler(), est).fit(X[tr], t[tr])
        acc = np.mean(np.sign(pipe.predict(X[te])) == t[te])
        assert acc >= baseline + 0.3 and acc >= 0.9, (type(est).__name__, acc, baseline)
        assert pipe.score(X[te], t[te]) > 0.3                     # R²; the constant predictor has ≈ 0


def test_errors():
    Xd = np.vstack([X_TR, X_TR[:1]])
    yd = np.append(Y_TR, 0.0)
    with pytest.raises(ValueError, match=r"(?s)identical.*noise"):
        NNGPRegressor(noise=0.0).fit(Xd, yd)
    NNGPRegressor(noise=1e-6).fit(Xd, yd)                          # noise makes duplicates fine
    NTKRegressor().fit(Xd, yd)                                      # t = ∞ handles exact duplicates
    eta_max = training.max_learning_rate(MLP(5, 1, 3, "relu", output_dim=1), X_TR)
    with pytest.raises(ValueError, match="diverges"):
        NTKRegressor(eta=1.1 * eta_max).fit(X_TR, Y_TR)
    with pytest.warns(training.DivergenceWarning):
        NTKRegressor(eta=1.1 * eta_max, steps=3).fit(X_TR, Y_TR)
    with pytest.raises(ValueError, match="noise must be >= 0"):
        NNGPRegressor(noise=-1.0).fit(X_TR, Y_TR)
    with pytest.raises(ValueError, match="depth must be an integer >= 1"):
        NNGPRegressor(depth=0).fit(X_TR, Y_TR)
    with pytest.raises(ValueError, match="NaN"):
        NNGPRegressor().fit(np.where(X_TR > 2, np.nan, X_TR), Y_TR)


# ---------------------------------------------------------------------------------------------
# FiniteWidthRegressor: the theory's cost grows like (N_A + N_B)^4, so 3 training and 2 test inputs

FW_X = np.random.default_rng(3).standard_normal((5, 4))
FW_XA, FW_XB = FW_X[:3], FW_X[3:]
FW_YA = np.sin(FW_XA @ np.array([1.0, -0.5, 0.3, 0.8]))
FW_NETS = {"tanh": dict(activation="tanh", depth=2, width=32, C_W=1.0),
           "relu": dict(activation="relu", depth=2, width=32, C_W=2.0)}


def _fw_net(cfg, n_out=1):
    return MLP(4, cfg["width"], cfg["depth"], cfg["activation"], C_W=cfg["C_W"], output_dim=n_out)


def _fw_eta(cfg):
    return 0.5 * training.max_learning_rate(_fw_net(cfg), FW_XA)


@pytest.mark.parametrize("act, algo", [("tanh", "gd"), ("tanh", "newton"), ("relu", "newton-delta")])
def test_finite_width_regressor_equals_theory(act, algo):
    cfg = FW_NETS[act]
    run = {"gd": lambda: dict(eta=_fw_eta(cfg), steps=8, newton=False), "newton": lambda: dict(newton=True),
           "newton-delta": lambda: dict(newton=True, kinks="delta")}[algo]()
    est = FiniteWidthRegressor(**cfg, **{k: x for k, x in run.items() if k != "kinks"}).fit(FW_XA, FW_YA)
    assert est._run["kinks"] == run.get("kinks", "a.e.")                  # kinks="auto": δ for one Newton step
    m = est.predict(FW_XB)
    th = finite_width_mean(_fw_net(cfg), FW_XA, FW_YA, FW_XB, **run)
    assert m.shape == (2,)
    np.testing.assert_allclose(m, th.total, rtol=0, atol=1e-12)
    assert est.net_.n(1) == 32 and est.net_.n(2) == 1
    assert np.max(np.abs(th.total - th.infinite)) > 1e-4                   # the 1/n terms are there
    # the spread is NTKRegressor's (Newton: t = ∞), the infinite part its mean
    ntk = NTKRegressor(**{k: x for k, x in cfg.items() if k != "width"},
                       eta=run.get("eta"), steps=run.get("steps")).fit(FW_XA, FW_YA)
    m2, s = est.predict(FW_XB, return_std=True)
    _, c = est.predict(FW_XB, return_cov=True)
    nm, ns = ntk.predict(FW_XB, return_std=True)
    _, nc = ntk.predict(FW_XB, return_cov=True)
    np.testing.assert_array_equal(m2, m)
    np.testing.assert_allclose(s, ns, rtol=0, atol=1e-14)
    np.testing.assert_allclose(c, nc, rtol=0, atol=1e-14)
    np.testing.assert_allclose(th.infinite, nm, rtol=0, atol=1e-12)


def test_finite_width_regressor_two_targets_and_parts():
    cfg = FW_NETS["tanh"]
    Y2 = np.column_stack([FW_YA, np.cos(FW_XA[:, 1])])
    est = FiniteWidthRegressor(**cfg, newton=True).fit(FW_XA, Y2)
    assert est.net_.n(2) == 2
    m, s = est.predict(FW_XB, return_std=True)
    assert m.shape == (2, 2) and s.shape == (2, 2)
    np.testing.assert_allclose(s[:, 0], s[:, 1])
    th = finite_width_mean(_fw_net(cfg, 2), FW_XA, Y2, FW_XB, newton=True)
    np.testing.assert_allclose(m, th.total, rtol=0, atol=1e-12)
    parts = est.predict_parts(FW_XB)
    assert parts.n == 32 and set(parts.parts) == {"H1", "NTK-fluct", "dNTK", "ddNTK"}
    np.testing.assert_allclose(parts.total, m, rtol=0, atol=1e-12)
    np.testing.assert_allclose(parts.infinite + sum(parts.parts.values()) / 32, m, rtol=0, atol=1e-12)


def test_finite_width_regressor_params_clone_pickle_pipeline():
    est = FiniteWidthRegressor(activation="tanh", depth=2, width=32, C_W=1.0, newton=True)
    p = est.get_params()
    assert p["width"] == 32 and p["newton"] is True and p["kinks"] == "auto" and p["eta"] is None
    c = clone(est).set_params(width=64, kinks="delta")
    assert c.width == 64 and c.kinks == "delta" and est.width == 32 and est.kinks == "auto"
    pipe = make_pipeline(StandardScaler(), est).fit(FW_XA, FW_YA)
    m = pipe.predict(FW_XB)
    Z = pipe[0].transform(FW_XB)
    th = finite_width_mean(_fw_net(FW_NETS["tanh"]), pipe[0].transform(FW_XA), FW_YA, Z, newton=True)
    np.testing.assert_allclose(m, th.total, rtol=0, atol=1e-12)
    back = pickle.loads(pickle.dumps(pipe))
    # recomputed (not the kept result); reordering the inputs moves the theory's finite differences ~1e-11
    np.testing.assert_allclose(back.predict(FW_XB[::-1]), m[::-1], rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="features"):
        pipe.predict(FW_XB[:, :3])


def test_finite_width_regressor_defaults_predict_real_relu_networks():
    """FiniteWidthRegressor() works as is: one Newton step, ReLU, the δ-function kink terms (real networks)."""
    est = FiniteWidthRegressor(depth=2, width=32).fit(FW_XA, FW_YA)
    th = finite_width_mean(MLP(4, 32, 2, "relu", C_W=2.0, output_dim=1), FW_XA, FW_YA, FW_XB, newton=True,
                           kinks="delta")
    np.testing.assert_allclose(est.predict(FW_XB), th.total, rtol=0, atol=1e-12)


def test_finite_width_regressor_errors():
    relu, tanh = FW_NETS["relu"], FW_NETS["tanh"]
    with pytest.raises(ValueError, match="kinks='delta' predicts one Newton step"):
        FiniteWidthRegressor(**relu, eta=_fw_eta(relu), steps=2, newton=False, kinks="delta").fit(FW_XA, FW_YA)
    with pytest.raises(ValueError, match="kinks='delta' predicts one Newton step"):
        FiniteWidthRegressor(**relu, newton=True, steps=2, kinks="delta").fit(FW_XA, FW_YA)
    eta_max = training.max_learning_rate(_fw_net(tanh), FW_XA)
    with pytest.raises(ValueError, match="diverges"):
        FiniteWidthRegressor(**tanh, eta=1.1 * eta_max, steps=3, newton=False).fit(FW_XA, FW_YA)
    with pytest.raises(ValueError, match="needs a learning rate"):
        FiniteWidthRegressor(**tanh, newton=False).fit(FW_XA, FW_YA)
    with pytest.raises(ValueError, match="eta = None or 1"):
        FiniteWidthRegressor(**tanh, newton=True, eta=0.5).fit(FW_XA, FW_YA)
    with pytest.raises(ValueError, match="kinks must be"):
        FiniteWidthRegressor(**tanh, newton=True, kinks="smooth").fit(FW_XA, FW_YA)
    with pytest.raises(ValueError, match="steps must be an integer"):
        FiniteWidthRegressor(**tanh, eta=0.1, steps=2.5, newton=False).fit(FW_XA, FW_YA)
    with pytest.raises(ValueError, match="width must be an integer"):
        FiniteWidthRegressor(**dict(tanh, width=0), newton=True).fit(FW_XA, FW_YA)
    with pytest.raises(ValueError, match="singular"):
        FiniteWidthRegressor(**tanh, newton=True).fit(np.vstack([FW_XA, FW_XA[:1]]), np.append(FW_YA, 0.0))
    # δ-terms are ill-defined at a training input: a clear error at predict
    est = FiniteWidthRegressor(**relu, newton=True, kinks="delta").fit(FW_XA, FW_YA)
    with pytest.raises(ValueError, match="equals a training input"):
        est.predict(FW_XA[:1])
    with pytest.raises(RuntimeError, match="at most one"):
        est.predict(FW_XB, return_std=True, return_cov=True)
