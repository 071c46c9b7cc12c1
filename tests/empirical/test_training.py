"""Training real networks, and the twin of kernel learning (book Ch. 7, 10; formula sheet §0, §8).

1. The trainer is the book's update rule: one and several full-batch steps agree with a PyTorch
   autograd oracle to 1e-12; the NTK it computes by backpropagated Jacobians is the forward
   equation's; one tiny step moves the outputs by −ηĤε (forward_ntk) up to O(η²).
2. Ensembles: the networks are those of ``sample_parameters`` (same seed, same networks), results
   are bitwise shard-size invariant, divergence and bad input give clear errors.
3. Twins (width 512, depth 2 and 3, tanh and ReLU at criticality, 4 training points of a synthetic
   regression, 2 test points): the trained ensemble's mean, variance and covariance at the test
   points, the mean training-loss curve, and the one-Newton-step ensemble agree with the
   infinite-width theory within K_SIGMA standard errors (jackknife, 50 groups) plus an explicit
   O(1/n) allowance ALLOW/n. ALLOW is measured, not guessed: a width sweep (n = 16, 32, 64; 40000
   networks; tanh and ReLU, L = 2 and 3, same data, 20 steps) finds |n·(measured − theory)| ≤ 1.1
   for every mean and variance, and fits of Δ_n = a + b/n + c/n² give |b| ≤ 1.05 (tanh L = 2 mean:
   n·Δ = 0.56, 0.80, 1.06, 1.2–1.4 at n = 16..128 → b ≈ 1.0, c ≈ −8); ALLOW = 3 leaves a factor ≳ 2.5.
   At n = 512 the allowance (0.006) is below one standard error, so these are statistical checks.
4. Slow: the residual vanishes with width: Δ_n = a + b/n + c/n² fitted over n = 16..64
   (PDLT_SLOW=full: ..128) has a = 0 within 4σ_a (measured a = −0.007 ± 0.008, 0.007 ± 0.007;
   full: −0.0004 ± 0.003, 0.006 ± 0.003), |b| within the allowance, and the residual at n = 16
   resolved (the 1/n effect is real, and it is the only thing left).

Tolerances were checked over seeds 0..4 (``PDLT_TWIN_SEEDS``).
"""

import os

import numpy as np
import pytest

from pdlt import MLP
from pdlt.empirical import ntk
from pdlt.empirical import training as T
from pdlt.theory import training as theory

K_SIGMA = 4.0
ALLOW = 3.0
SEEDS = [int(s) for s in os.environ.get("PDLT_TWIN_SEEDS", "7").split(",")]
SLOW = os.environ.get("PDLT_SLOW", "reduced")

RNG = np.random.default_rng(3)
N0 = 4
X_TRAIN = RNG.standard_normal((4, N0))
X_TEST = RNG.standard_normal((2, N0))
_W = RNG.standard_normal(N0)


def target(X):
    return np.sin(X @ _W / 2)


CRITICAL = {"tanh": (0.0, 1.0), "relu": (0.0, 2.0)}


def critical_net(act, width, depth, output_dim=1):
    C_b, C_W = CRITICAL[act]
    return MLP(N0, width, depth, act, C_b=C_b, C_W=C_W, lambda_b=0.5, lambda_W=1.0, output_dim=output_dim)


# ---------------------------------------------------------------------------------------------
# 1. The update rule


ORACLE_NETS = {
    "ragged-tanh": dict(widths=[3, 5, 4, 2], activation="tanh", C_b=0.2, C_W=[1.5, 1.2, 0.9],
                        lambda_b=[0.3, 0.7, 1.1], lambda_W=[1.3, 0.5, 2.0]),
    "relu": dict(widths=[3, 6, 6, 2], activation="relu", C_b=0.1, C_W=2.0, lambda_b=0.4, lambda_W=1.2),
    "gelu-1out": dict(widths=[3, 7, 1], activation="gelu", C_b=0.1, C_W=1.7, lambda_b=0.2, lambda_W=0.8),
}


def _autograd_descent(torch, net, Ws, bs, z_train, Y, eta, steps):
    """``steps`` steps of θ ← θ − η λ ∂L/∂θ on the torch leaves Ws, bs (in place); the losses before each."""
    L, losses = net.depth, []
    for _ in range(steps):
        loss = 0.5 * ((z_train() - torch.tensor(Y)) ** 2).sum()
        losses.append(loss.item())
        grads = torch.autograd.grad(loss, Ws + bs)
        with torch.no_grad():
            for l in range(L):
                Ws[l] -= eta * net.lambda_W[l] / net.widths[l] * grads[l]
                bs[l] -= eta * net.lambda_b[l] * grads[L + l]
    return losses


@pytest.mark.torch
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("name", sorted(ORACLE_NETS))
def test_gradient_descent_matches_autograd(name, steps):
    """θ ← θ − η λ ∂L/∂θ, L = ½Σ(z − y)², λ_W/n_{ℓ−1} for weights and λ_b for biases, by torch autograd."""
    torch = pytest.importorskip("torch")
    net = MLP(**ORACLE_NETS[name])
    rng = np.random.default_rng(1)
    XA, XB = rng.standard_normal((3, 3)), rng.standard_normal((2, 3))
    Y = rng.standard_normal((3, net.widths[-1]))
    params = ntk.sample_parameters(net, 5, 0, 3)
    eta = 0.07
    res = T.train_networks(net, params, XA, Y, XB, eta=eta, steps=steps)
    act = {"tanh": torch.tanh, "relu": torch.relu,
           "gelu": lambda z: torch.nn.functional.gelu(z)}[net.activation.name]
    L = net.depth
    for e in range(3):
        Ws = [torch.tensor(params.W(l)[e], requires_grad=True) for l in range(1, L + 1)]
        bs = [torch.tensor(params.b(l)[e], requires_grad=True) for l in range(1, L + 1)]

        def f(X):
            h = torch.tensor(X)
            for l in range(L):
                z = h @ Ws[l].T + bs[l]
                h = act(z)
            return z

        losses = _autograd_descent(torch, net, Ws, bs, lambda: f(XA), Y, eta, steps)
        with torch.no_grad():
            np.testing.assert_allclose(res.z_test[e], f(XB).numpy(), rtol=0, atol=1e-12)
            for l in range(L):
                np.testing.assert_allclose(res.params[0][l][e], Ws[l].numpy(), rtol=0, atol=1e-12)
                np.testing.assert_allclose(res.params[1][l][e], bs[l].numpy(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(res.loss[e, :steps], losses, rtol=1e-12)


@pytest.mark.torch
def test_frozen_slopes_match_autograd():
    """frozen_slopes=True: σ(z) → σ'(z₀)·z with z₀ the preactivation of the same input at
    initialization, through forward and backward passes; three GD steps by torch autograd."""
    torch = pytest.importorskip("torch")
    net = MLP(**ORACLE_NETS["relu"])
    rng = np.random.default_rng(2)
    XA, XB = rng.standard_normal((3, 3)), rng.standard_normal((2, 3))
    Y = 3.0 * rng.standard_normal((3, net.widths[-1]))  # large steps: many neurons cross their kink
    params = ntk.sample_parameters(net, 5, 0, 3)
    eta, steps, L = 0.1, 3, net.depth
    res = T.train_networks(net, params, XA, Y, XB, eta=eta, steps=steps, frozen_slopes=True)
    real = T.train_networks(net, params, XA, Y, XB, eta=eta, steps=steps)
    assert np.max(np.abs(res.z_test - real.z_test)) > 1e-2  # kinks were crossed: the two differ
    for e in range(3):
        Ws = [torch.tensor(params.W(l)[e], requires_grad=True) for l in range(1, L + 1)]
        bs = [torch.tensor(params.b(l)[e], requires_grad=True) for l in range(1, L + 1)]
        masks = {}

        def f(X, key):
            h = torch.tensor(X)
            for l in range(L):
                z = h @ Ws[l].T + bs[l]
                if l < L - 1:
                    m = masks.setdefault((key, l), (z.detach() >= 0).double())
                    h = m * z
            return z

        f(XA, "A"), f(XB, "B")  # slopes at initialization
        _autograd_descent(torch, net, Ws, bs, lambda: f(XA, "A"), Y, eta, steps)
        with torch.no_grad():
            np.testing.assert_allclose(res.z_test[e], f(XB, "B").numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(ORACLE_NETS))
def test_backprop_ntk_equals_forward_equation(name):
    net = MLP(**ORACLE_NETS[name])
    X = np.random.default_rng(2).standard_normal((4, 3))
    params = ntk.sample_parameters(net, 3, 0, 5)
    H = T.empirical_ntk_train(net, params, X)
    z, Hf = ntk.forward_ntk(net, X, params)[net.depth]
    np.testing.assert_allclose(H, Hf, rtol=0, atol=1e-12 * np.abs(Hf).max())


@pytest.mark.parametrize("newton", [False, True])
def test_one_tiny_step_moves_outputs_by_minus_eta_ntk_epsilon(newton):
    """Per network: Δz_{i;δ} = −η Σ Ĥ_{ij;δα} ε_{j;α} + O(η²) at training and test inputs (Ĥ from
    forward_ntk); for the Newton step ε is replaced by Ĥ_AA⁻¹ε, so Δz_A = −ηε + O(η²)."""
    net = critical_net("tanh", 16, 3, output_dim=2)
    Y = np.column_stack([target(X_TRAIN), -target(X_TRAIN)])
    params = ntk.sample_parameters(net, 4, 0, 6)
    X = np.vstack([X_TRAIN, X_TEST])
    z0, H = ntk.forward_ntk(net, X, params)[net.depth]          # (E, n_L, N), (E, n_L, n_L, N, N)
    eps = z0[:, :, :4].transpose(0, 2, 1) - Y                     # (E, N_A, n_L)
    if newton:
        HA = H[:, :, :, :4, :4].transpose(0, 3, 1, 4, 2).reshape(6, 8, 8)   # rows (α, i)
        eps = np.linalg.solve(HA, eps.reshape(6, 8, 1)).reshape(6, 4, 2)
    pred = -np.einsum("eijda,eaj->edi", H[:, :, :, :, :4], eps)    # (E, N, n_L) per unit η
    errs = []
    for eta in (1e-3, 5e-4):
        r = T.train_networks(net, params, X_TRAIN, Y, X, eta=eta, steps=1, newton=newton)
        dz = (r.z_test - r.z_test0) / eta
        errs.append(np.abs(dz - pred).max())
        assert errs[-1] < 50 * eta * np.abs(pred).max()
    assert 1.6 < errs[0] / errs[1] < 2.4        # the residual is O(η): halves with η
    if newton:
        np.testing.assert_allclose(pred[:, :4], -(z0[:, :, :4].transpose(0, 2, 1) - Y), atol=1e-10)


# ---------------------------------------------------------------------------------------------
# 2. Ensembles: same networks, shard invariance, errors


def test_same_networks_and_shard_invariance():
    net = MLP(widths=[N0, 6, 5, 2], activation="tanh", C_b=0.1, C_W=1.3, lambda_b=0.4, lambda_W=1.1)
    Y = np.column_stack([target(X_TRAIN), X_TRAIN[:, 0]])
    runs = [T.train_ensemble(net, X_TRAIN, Y, X_TEST, 23, seed=3, eta=0.05, steps=4, groups=5, shard_size=s)
            for s in (1, 4, 23)]
    for r in runs[1:]:
        for name in ("mean", "cov", "initial_mean", "initial_cov", "loss"):
            np.testing.assert_array_equal(r.estimate(name).mean, runs[0].estimate(name).mean)
            np.testing.assert_array_equal(r.estimate(name).stderr, runs[0].estimate(name).stderr)
        np.testing.assert_array_equal(r.final_loss, runs[0].final_loss)
    # network e is sample_parameters(net, seed, e, e+1), trained by train_networks
    params = ntk.sample_parameters(net, 3, 0, 23)
    per = T.train_networks(net, params, X_TRAIN, Y, X_TEST, eta=0.05, steps=4)
    z0 = ntk.forward_ntk(net, X_TEST, params)[3][0].transpose(0, 2, 1)
    np.testing.assert_allclose(per.z_test0, z0, atol=1e-13)
    np.testing.assert_allclose(runs[0].mean.mean, per.z_test.mean(axis=0), atol=1e-13)
    np.testing.assert_allclose(runs[0].initial_mean.mean, z0.mean(axis=0), atol=1e-13)
    zc = per.z_test - per.z_test.mean(axis=0)
    np.testing.assert_allclose(runs[0].cov.mean, np.einsum("eai,ebi->ab", zc, zc) / (22 * 2), atol=1e-13)
    np.testing.assert_allclose(runs[0].final_loss, per.loss[:, -1], rtol=1e-13)
    other = T.train_ensemble(net, X_TRAIN, Y, X_TEST, 23, seed=4, eta=0.05, steps=4, groups=5)
    assert not np.array_equal(other.mean.mean, runs[0].mean.mean)
    d = runs[0].to_dict()
    assert d["settings"]["steps"] == 4 and "cov" in d and d["final_loss"]["max"] >= d["final_loss"]["min"]


def test_divergence_is_reported_with_the_threshold():
    net = critical_net("relu", 32, 2)
    eta_max = theory.max_learning_rate(net, X_TRAIN)
    with pytest.raises(T.TrainingDivergedError, match=rf"(?s)diverged.*eta < 2/λ_max\(Θ̃\) = {eta_max:.6g}"):
        T.train_ensemble(net, X_TRAIN, target(X_TRAIN), X_TEST, 8, eta=4 * eta_max, steps=60, groups=4)
    # non-finite loss is caught too (overflow to inf/NaN), never returned
    with pytest.raises(T.TrainingDivergedError, match="diverged"):
        T.train_ensemble(net, X_TRAIN, target(X_TRAIN), X_TEST, 4, eta=1e3 * eta_max, steps=400, groups=2)


def test_newton_step_needs_an_invertible_training_ntk():
    net = critical_net("tanh", 16, 2)
    X = np.vstack([X_TRAIN, X_TRAIN[0]])
    with pytest.raises(ValueError, match="newton step undefined.*singular"):
        T.train_ensemble(net, X, target(X), X_TEST, 4, newton=True, groups=2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(eta=-1.0, steps=2), "eta must be > 0"),
    (dict(eta=0.1, steps=-2), "steps must be an integer >= 0"),
    (dict(eta=None, steps=2), "eta .* is required"),
    (dict(eta=0.1, steps=None), "steps .* is required"),
    (dict(eta=0.1, steps=2, networks=1), "networks must be an integer >= 2"),
    (dict(eta=0.1, steps=2, groups=50), "groups must be an integer in 2..networks"),
    (dict(eta=0.1, steps=2, shard_size=0), "shard_size must be an integer >= 1"),
    (dict(eta=0.1, steps=2, y_train=np.ones((4, 2))), "give output_dim=2"),
    (dict(eta=0.1, steps=2, y_train=np.ones(3)), r"y_train must have shape \(4,\)"),
    (dict(eta=0.1, steps=2, X_test=np.ones((2, 3))), "X_test has 3 columns"),
    (dict(eta=0.1, steps=2, y_test=np.ones(5)), r"y_test must have shape \(2,\)"),
    (dict(eta=0.1, steps=2, frozen_slopes=True), "frozen_slopes=True needs a piecewise-linear activation"),
])
def test_bad_input_errors(kwargs, match):
    args = dict(net=critical_net("tanh", 8, 2), X_train=X_TRAIN, y_train=target(X_TRAIN), X_test=X_TEST,
                networks=10, groups=5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        T.train_ensemble(args.pop("net"), args.pop("X_train"), args.pop("y_train"), args.pop("X_test"), **args)


# ---------------------------------------------------------------------------------------------
# 3. Twins at width 512


def _judge(measured, theory_value, n, what):
    z = np.atleast_1d(measured.z_score(theory_value, allowance=ALLOW / n))
    assert np.all(np.abs(z) <= K_SIGMA), (
        f"{what}: measured {measured} vs theory {np.round(theory_value, 5)}, z = {np.round(z, 2)} "
        f"(allowance {ALLOW}/n)")


def _twin(act, depth, networks, steps, seed, width=512, newton=False):
    net = critical_net(act, width, depth)
    yA, yB = target(X_TRAIN), target(X_TEST)
    eta = 0.5 * theory.max_learning_rate(net, X_TRAIN)
    if newton:
        th = theory.newton_step(net, X_TRAIN, yA, X_TEST, y_test=yB)
        m = T.train_ensemble(net, X_TRAIN, yA, X_TEST, networks, seed, newton=True, y_test=yB, groups=50)
    else:
        th = theory.gradient_descent(net, X_TRAIN, yA, X_TEST, eta=eta, steps=steps, y_test=yB)
        m = T.train_ensemble(net, X_TRAIN, yA, X_TEST, networks, seed, eta=eta, steps=steps, y_test=yB,
                             groups=50)
    n = width
    _judge(m.mean, th.mean, n, "trained mean")
    _judge(m.variance, th.variance, n, "trained variance")
    _judge(m.cov[0, 1], th.cov[0, 1], n, "trained covariance")
    _judge(m.error, th.error, n, "generalization error")
    _judge(m.initial_mean, np.zeros(2), n, "initial mean")
    K = theory.gradient_descent(net, X_TRAIN, yA, X_TEST, eta=eta, steps=0).cov
    _judge(m.initial_cov, K, n, "initial covariance (K)")
    if not newton:
        loss = theory.expected_loss(net, X_TRAIN, yA, eta=eta, steps=steps)
        _judge(m.loss[np.array([0, steps // 2, steps])], loss[[0, steps // 2, steps]], n, "mean training loss")
    # the check has power: the trained mean is resolved and moved far from the untrained 0
    assert np.max(np.abs(th.mean) / m.mean.stderr) > 5
    return th, m


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_trained_ensemble_twin_depth2(act, seed):
    _twin(act, 2, 1500, 16, seed)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_trained_ensemble_twin_depth3(act, seed):
    _twin(act, 3, 200, 8, seed)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_newton_step_twin_depth3(act, seed):
    """One matrix-learning-rate step Ĥ_AA⁻¹ on real width-512 networks ≈ the infinite-width
    ηΘ̃ = 1 step = t = ∞ (algorithm independence), and it (nearly) fits the training set."""
    th, m = _twin(act, 3, 200, 1, seed, newton=True)
    init = np.median(m.initial_loss)
    assert np.median(m.final_loss) < 0.01 * init, (np.median(m.final_loss), init)


# ---------------------------------------------------------------------------------------------
# 4. Slow: the finite-width residual is O(1/n)


SWEEP_WIDTHS = [16, 32, 64, 128] if SLOW == "full" else [16, 32, 64]
SWEEP_NETWORKS = {16: 40000, 32: 40000, 64: 20000, 128: 10000} if SLOW == "full" else \
    {16: 20000, 32: 20000, 64: 10000}


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_trained_mean_residual_vanishes_like_one_over_width(seed):
    """tanh, L = 2, 20 steps at η = η*/2: Δ_n = mean_measured − mean_theory at each test input
    fitted by a + b/n + c/n² (weighted): a = 0 within 4σ_a (nothing survives infinite width) and
    |b| ≤ ALLOW/2 + 4σ_b (the CI allowance covers the measured 1/n coefficient with room), and the
    residual at the smallest width resolved (a real 1/n effect, not noise)."""
    ns, d, se = [], [], []
    for n in SWEEP_WIDTHS:
        net = critical_net("tanh", n, 2)
        eta = 0.5 * theory.max_learning_rate(net, X_TRAIN)
        th = theory.gradient_descent(net, X_TRAIN, target(X_TRAIN), X_TEST, eta=eta, steps=20)
        m = T.train_ensemble(net, X_TRAIN, target(X_TRAIN), X_TEST, SWEEP_NETWORKS[n], seed, eta=eta,
                             steps=20, groups=50)
        ns.append(n)
        d.append(m.mean.mean - th.mean)
        se.append(m.mean.stderr)
    ns, d, se = np.array(ns, float), np.array(d), np.array(se)
    for k in range(d.shape[1]):
        M = np.stack([np.ones_like(ns), 1 / ns, 1 / ns ** 2], axis=1) / se[:, k, None]
        cov = np.linalg.inv(M.T @ M)
        a, b, _ = cov @ M.T @ (d[:, k] / se[:, k])
        sa, sb = np.sqrt(cov[0, 0]), np.sqrt(cov[1, 1])
        assert abs(a) <= K_SIGMA * sa, (k, a, sa, d[:, k], se[:, k])
        assert abs(b) <= ALLOW / 2 + K_SIGMA * sb, (k, b, sb)
    # the 1/n effect at the smallest width is resolved for the larger-mean test input
    assert np.max(np.abs(d[0]) / se[0]) > 2 * K_SIGMA


def test_checkpoint_resume_is_identical(tmp_path):
    """Shard checkpoints of a trained ensemble: a lost shard is retrained alone and every number —
    group sums and per-network losses — equals the uninterrupted run; other settings are refused."""
    net = MLP(3, 8, 2, "tanh", C_b=0.1, C_W=1.0, lambda_b=0.5, lambda_W=1.0, output_dim=1)
    rng = np.random.default_rng(4)
    XA, XB = rng.standard_normal((3, 3)), rng.standard_normal((2, 3))
    y = np.sin(XA[:, 0])
    kw = dict(eta=0.2, steps=3, groups=4)
    ref = T.train_ensemble(net, XA, y, XB, 20, 5, **kw)
    ckpt = tmp_path / "train"
    T.train_ensemble(net, XA, y, XB, 20, 5, shard_size=6, checkpoint=ckpt, **kw)
    os.remove(ckpt / "shard-000002.npz")
    again = T.train_ensemble(net, XA, y, XB, 20, 5, shard_size=6, checkpoint=ckpt, **kw)
    for name in ("mean", "variance"):
        np.testing.assert_array_equal(ref.estimate(name).mean, again.estimate(name).mean)
        np.testing.assert_array_equal(ref.estimate(name).stderr, again.estimate(name).stderr)
    np.testing.assert_array_equal(ref.final_loss, again.final_loss)
    np.testing.assert_array_equal(ref.initial_loss, again.initial_loss)
    with pytest.raises(ValueError, match="different measurement.*eta"):
        T.train_ensemble(net, XA, y, XB, 20, 5, shard_size=6, checkpoint=ckpt, eta=0.1, steps=3, groups=4)
