"""The empirical dNTK and ddNTKs: forward equations ≡ autodiff, symmetries, estimators, exact layer-2
values and the ReLU table of the formula sheet (§6)."""

import itertools

import numpy as np
import pytest

from pdlt import MLP
from pdlt.empirical import dntk, ntk

RAGGED = dict(widths=[3, 4, 5, 3], C_b=0.1, C_W=[1.5, 2.0, 1.2], lambda_b=[0.3, 0.7, 1.1], lambda_W=[1.3, 0.5, 2.0])
SMALL = dict(widths=[2, 4, 3], C_b=0.2, C_W=1.7, lambda_b=0.4, lambda_W=[0.8, 1.6])


def _close(a, b, rel=1e-9):
    scale = max(np.abs(b).max(), 1e-300)
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= rel * scale, (np.abs(a - b).max(), scale)


@pytest.mark.torch
@pytest.mark.parametrize("activation, shape, N", [("tanh", "ragged", 2), ("gelu", "small", 3),
                                                  ("relu", "ragged", 2), ("linear", "small", 1)])
def test_forward_equations_match_autodiff(activation, shape, N):
    pytest.importorskip("torch")
    net = MLP(activation=activation, **(RAGGED if shape == "ragged" else SMALL))
    X = np.random.default_rng(N).standard_normal((N, net.input_dim))
    params = ntk.sample_parameters(net, 3, 0, 2)
    fd = dntk.forward_dntk(net, X, params)
    fdd = dntk.forward_ddntk(net, X, params)
    for l in range(2, net.depth + 1):
        ad = dntk.autodiff_dntk(net, X, params, l)
        assert fd[l].shape == (2,) + (net.n(l),) * 3 + (N,) * 3
        _close(fd[l], ad)
        adI, adII = dntk.autodiff_ddntk(net, X, params, l)
        assert fdd[l][0].shape == fdd[l][1].shape == (2,) + (net.n(l),) * 4 + (N,) * 4
        _close(fdd[l][1], adII)
        if activation in ("relu", "linear") and l == 2:
            assert np.abs(adI).max() == 0.0  # σ″ = σ‴ = 0 (a.e.): dd_I vanishes at layer 2
        _close(fdd[l][0], adI)


def test_symmetries_and_vanishing_tensors():
    X = np.array([[0.3, -1.0, 0.4], [1.2, 0.4, -0.2]])
    for activation in ("tanh", "relu"):
        net = MLP(activation=activation, **RAGGED)
        params = ntk.sample_parameters(net, 5, 0, 3)
        fd = dntk.forward_dntk(net, X, params)
        fdd = dntk.forward_ddntk(net, X, params)
        # the first layer is linear in its parameters
        assert not fd[1].any() and not fdd[1][0].any() and not fdd[1][1].any()
        for l in (2, 3):
            dH, I, II = fd[l], fdd[l][0], fdd[l][1]
            assert np.abs(dH).max() > 0.1 and np.abs(II).max() > 0.1
            # dĤ_{i0i1i2;δ0δ1δ2} = dĤ_{i0i2i1;δ0δ2δ1}
            np.testing.assert_allclose(dH, dH.transpose(0, 1, 3, 2, 4, 6, 5), atol=1e-12)
            # dd_I symmetric in its last three (neuron, input) pairs
            for perm in itertools.permutations((1, 2, 3)):
                axes = (0, 1) + tuple(1 + p for p in perm) + (5,) + tuple(5 + p for p in perm)
                np.testing.assert_allclose(I, I.transpose(axes), atol=1e-11)
            # dd_II under (i1δ1, i3δ3) <-> (i2δ2, i4δ4)
            np.testing.assert_allclose(II, II.transpose(0, 2, 1, 4, 3, 6, 5, 8, 7), atol=1e-11)
        n = net.n(2)
        off = ~np.eye(n, dtype=bool)
        if activation == "relu":
            # σ″ = 0: dĤ^{(2)} = c_W[δ_{i0i1}(…)_{i2} + δ_{i0i2}(…)_{i1}], dd_I^{(2)} = 0
            assert not fdd[2][0].any()
            D = fd[2][:, np.arange(n), :, :][:, :, np.arange(n), np.arange(n)]  # dĤ_{ijj}
            assert not D[:, off].any()
            distinct = np.array([[[len({a, b, c}) == 3 for c in range(n)] for b in range(n)] for a in range(n)])
            assert not fd[2][:, distinct].any()
        else:
            assert np.abs(fdd[2][0]).max() > 1e-3


def _brute(net, X, E, seed):
    """P, Q, R, S, T, U by explicit i ≠ j averages of the forward tensors (the module's index layouts)."""
    params = ntk.sample_parameters(net, seed, 0, E)
    fd, fdd = dntk.forward_dntk(net, X, params), dntk.forward_ddntk(net, X, params)
    z = {l: zz for l, (zz, _) in ntk.forward_ntk(net, X, params).items()}
    out = {}
    for l in range(2, net.depth + 1):
        n, m = net.n(l), net.n(l - 1)
        off = ~np.eye(n, dtype=bool)
        c = m / (E * n * (n - 1))
        I, II = fdd[l]
        out[l] = {"P": c * np.einsum("eijjabc,eid,ij->abcd", fd[l], z[l], off),
                  "Q": c * np.einsum("eiijabc,ejd,ij->abcd", fd[l], z[l], off),
                  "R": c * np.einsum("eiijjabcd,ij->abcd", I, off),
                  "S": c * np.einsum("eiijjabcd,ij->abcd", II, off),
                  # T[δ1, δ3, δ4, δ2] = m E[dd_II_{ijij; δ1δ2δ3δ4}], U[δ1, δ4, δ2, δ3] = m E[dd_II_{ijji; δ1δ2δ3δ4}]
                  "T": c * np.einsum("eijijadbc,ij->abcd", II, off),
                  "U": c * np.einsum("eijjiabcd,ij->adbc", II, off)}
    return out


@pytest.mark.parametrize("activation, N", [("gelu", 2), ("relu", 2), ("tanh", 3)])
def test_estimators_against_brute_force_neuron_averages(activation, N):
    net = MLP(widths=[2, 5, 4, 3], activation=activation, C_b=0.1, C_W=[1.7, 1.5, 1.9],
              lambda_b=[0.3, 0.6, 0.2], lambda_W=[0.9, 1.3, 0.7])
    X = np.random.default_rng(7).standard_normal((N, 2))
    E = 5
    ref = _brute(net, X, E, 2)
    # all layers (layer 2 from full tensors) and only the top layer (pattern-only recursion)
    for m in (dntk.measure_dntk(net, X, E, seed=2, groups=3),
              dntk.measure_dntk(net, X, E, seed=2, groups=3, layers=[3], shard_size=2)):
        for l in m.layers:
            if l == 1:
                continue
            for name in dntk.DNTK_OBSERVABLES:
                est = m.layer(l)[name]
                assert est.shape == (N,) * 4
                np.testing.assert_allclose(est.mean, ref[l][name], rtol=0,
                                           atol=1e-12 * max(1.0, np.abs(ref[l][name]).max()), err_msg=(l, name))
    lm = m.layer(3)
    # symmetries of the estimates: R[δ0,a,b,c] = R[δ0,a,c,b]; S, T, U under the swap of the two Hessians
    np.testing.assert_allclose(lm.R.mean, lm.R.mean.transpose(0, 1, 3, 2), atol=1e-12)
    np.testing.assert_allclose(lm.S.mean, lm.S.mean.transpose(1, 0, 3, 2), atol=1e-12)
    np.testing.assert_allclose(lm.T.mean, lm.T.mean.transpose(3, 2, 1, 0), atol=1e-12)
    np.testing.assert_allclose(lm.U.mean, lm.U.mean.transpose(2, 3, 0, 1), atol=1e-12)
    m1 = dntk.measure_dntk(net, X, E, seed=2, groups=3)
    assert not any(m1.layer(1)[k].mean.any() for k in dntk.DNTK_OBSERVABLES)


def test_shard_invariance_and_same_networks_as_measure_ntk():
    net = MLP(widths=[2, 6, 5, 4], activation="tanh", C_b=0.1, C_W=1.5, lambda_b=0.4, lambda_W=1.2)
    X = np.array([[0.3, -1.0], [1.2, 0.4]])
    ms = [dntk.measure_dntk(net, X, 11, seed=5, groups=4, shard_size=s) for s in (1, 4, 11)]
    ms.append(dntk.measure_dntk(net, X, 11, seed=5, groups=4))
    for m in ms[1:]:
        for l in (1, 2, 3):
            for name in ("G", "Theta") + dntk.DNTK_OBSERVABLES:
                a, b = ms[0].layer(l)[name], m.layer(l)[name]
                np.testing.assert_array_equal(a.mean, b.mean)
                np.testing.assert_array_equal(a.stderr, b.stderr)
    ref = ntk.measure_ntk(net, X, 11, seed=5, groups=4)
    for l in (1, 2, 3):
        for name in ("Theta", "G"):
            np.testing.assert_array_equal(ms[0].layer(l)[name].mean, ref.layer(l)[name].mean)
            np.testing.assert_array_equal(ms[0].layer(l)[name].stderr, ref.layer(l)[name].stderr)
    # ddntk=False: the same P, Q, no R..U
    light = dntk.measure_dntk(net, X, 11, seed=5, groups=4, ddntk=False, layers=[2, 3])
    np.testing.assert_array_equal(light.layer(3).Q.mean, ms[0].layer(3).Q.mean)
    with pytest.raises(ValueError, match="ddntk=True"):
        light.layer(3).R
    d = ms[0].to_dict()
    assert d["layers"][2]["U"]["mean"] == ms[0].layer(3).U.mean.tolist() and d["ddntk"] is True
    assert light.to_dict()["layers"][1]["R"] is None


def _mean_se(x):
    x = np.asarray(x)
    return x.mean(axis=0), x.std(axis=0, ddof=1) / np.sqrt(x.shape[0])


def test_neuron_structure():
    """E[dĤ] = 0, and E[dĤ z], E[dd_I] vanish unless the neurons pair up (sign flips of single neurons)."""
    net = MLP(widths=[2, 5, 5, 5], activation="tanh", C_b=0.2, C_W=1.6, lambda_b=0.5, lambda_W=1.0)
    X = np.array([[0.8, -0.3]])
    E = 160
    params = ntk.sample_parameters(net, 9, 0, E)
    dH = dntk.forward_dntk(net, X, params, [3])[3][..., 0, 0, 0]  # (E, n, n, n)
    I = dntk.forward_ddntk(net, X, params, [3])[3][0][..., 0, 0, 0, 0]  # (E, n, n, n, n)
    z = ntk.forward_ntk(net, X, params, [3])[3][0][..., 0]  # (E, n)
    n = 5
    idx = np.array(list(itertools.product(range(n), repeat=4)))
    i, j, k, q = idx.T
    distinct = (i != j) & (i != k) & (i != q) & (j != k) & (j != q) & (k != q)
    odd = (i == j) & (j == q) & (k != i)  # dĤ_{iij} z_i: neuron j appears once
    q_pat = (i == j) & (k == q) & (i != k)  # the Q pairing
    dz = dH[:, i, j, k] * z[:, q]
    checks = {"E[dH_ijk]": dH.reshape(E, -1).mean(1), "E[dH_ijk]_distinct": dH[:, i, j, k][:, distinct[:]].mean(1),
              "E[dH z]_distinct": dz[:, distinct].mean(1), "E[dH_iij z_i]": dz[:, odd].mean(1),
              "E[ddI]_distinct": I[:, i, j, k, q][:, distinct].mean(1),
              "E[ddI_iiij]": I[:, i, i, i, k][:, (k != i) & (j == 0) & (q == 0)].mean(1)}
    for name, x in checks.items():
        mu, se = _mean_se(x)
        assert abs(mu) <= 4 * se + 1e-12, (name, mu, se)
    mu, se = _mean_se(dz[:, q_pat].mean(1))
    assert abs(mu) > 6 * se  # the allowed pairing is clearly non-zero


# --- exact layer-2 values: layer 1 is Gaussian, so E over W^{(2)} gives them at any width ----------


def _gauss2(G, f, order=48):
    """⟨f(z_0, z_1)⟩ for (z_0, z_1) ~ N(0, G), 2×2, by a Gauss–Hermite product rule."""
    x, w = np.polynomial.hermite_e.hermegauss(order)
    w = w / np.sqrt(2 * np.pi)
    Lc = np.linalg.cholesky(G + 1e-300 * np.eye(2))
    u, v = np.meshgrid(x, x, indexing="ij")
    z = np.einsum("ab,bkl->akl", Lc, np.stack([u, v]))
    return float(np.sum(np.outer(w, w) * f(z)))


def _layer2_exact(net, X):
    """P, Q, R, S, T, U at layer 2 in the module's layouts (C_W, λ_W of layer 2; Θ, G of layer 1)."""
    act = net.activation
    N = X.shape[0]
    G1 = net.C_b[0] + net.C_W[0] * X @ X.T / net.input_dim
    Th = net.lambda_b[0] + net.lambda_W[0] * X @ X.T / net.input_dim
    CW, lW = net.C_W[1], net.lambda_W[1]

    def E(*factors):  # factors: (derivative order, input)
        return _gauss2(G1, lambda z: np.prod([act.derivative(z[a], r) for r, a in factors], axis=0))

    out = {k: np.zeros((N,) * 4) for k in dntk.DNTK_OBSERVABLES}
    for a, b, c, d in itertools.product(range(N), repeat=4):
        out["P"][a, b, c, d] = p = CW ** 2 * Th[a, b] * Th[a, c] * E((2, a), (1, b), (1, c), (0, d))
        out["Q"][a, b, c, d] = p + lW * CW * Th[a, c] * E((1, a), (0, b), (1, c), (0, d))
        out["R"][a, b, c, d] = (CW ** 2 * Th[a, b] * Th[a, c] * Th[a, d] * E((3, a), (1, b), (1, c), (1, d))
                                + lW * CW * Th[a, c] * Th[a, d] * E((2, a), (0, b), (1, c), (1, d)))
        # dd_II tuple (δ1, δ2, δ3, δ4) = (a, b, c, d)
        u = CW ** 2 * Th[a, b] * Th[a, c] * Th[b, d] * E((2, a), (2, b), (1, c), (1, d))
        out["S"][a, b, c, d] = lW * CW * Th[a, c] * Th[b, d] * E((1, a), (1, b), (1, c), (1, d)) + u
        out["T"][a, c, d, b] = (u + Th[a, b] * (lW * CW * (Th[a, c] * E((2, a), (1, b), (1, c), (0, d))
                                                          + Th[b, d] * E((1, a), (2, b), (0, c), (1, d)))
                                                + lW ** 2 * E((1, a), (1, b), (0, c), (0, d))))
        out["U"][a, d, b, c] = u
    return out


@pytest.mark.parametrize("activation", ["gelu", "linear"])
def test_layer2_values_are_exact(activation):
    """P, Q, R, S, T, U at layer 2 equal Gaussian integrals over G^{(1)} at any width: checks every index
    convention against a hand derivation (module docstring)."""
    # inputs of very different norms and a large λ_W^{(2)} separate the index conventions sharply
    # (e.g. Q's λ_W term Θ_{δ0δ2}⟨σ′_{δ0}σ_{δ1}σ′_{δ2}σ_{δ3}⟩ from the same with (δ0, δ2) <-> (δ1, δ3):
    # z ≈ 77; T or U in the raw tuple order: z > 250)
    net = MLP(widths=[3, 6, 4], activation=activation, C_b=0.3, C_W=[1.4, 1.8], lambda_b=[0.1, 0.2],
              lambda_W=[1.1, 2.0])
    X = np.array([[1.9, 0.5, -0.8], [0.2, -0.4, 0.3]])
    m = dntk.measure_dntk(net, X, 800, seed=4, groups=20, layers=[2])
    exact = _layer2_exact(net, X)
    for name in dntk.DNTK_OBSERVABLES:
        est = m.layer(2)[name]
        scale = max(1.0, np.abs(exact[name]).max())
        z = (np.abs(est.mean - exact[name]) - 1e-10 * scale) / np.maximum(est.stderr, 1e-300)
        assert (z <= 4.5).all(), (name, est.mean, exact[name], est.stderr)
        if activation == "linear" and name in ("P", "R", "U"):
            assert np.abs(est.mean).max() < 1e-12  # zero per network: σ″ = 0


def test_relu_sheet_table():
    """Sheet §6: ReLU, C_W = 2, λ_W = 1, λ_b = 0, K = 1: Q = 0.5 (L = 2, exact), 2 (L = 3); P^{(2)} = 0
    per network (a.e.), P^{(3)} = O(1/n)."""
    n = 48
    net = MLP(input_dim=2, width=n, depth=3, activation="relu", C_b=0.0, C_W=2.0, lambda_b=0.0, lambda_W=1.0)
    X = np.array([[0.6, 0.8]])  # K = C_W x·x/n0 = 1, Θ₁ = λ_W K/2 = 1/2
    m = dntk.measure_dntk(net, X, 300, seed=1, groups=20, ddntk=False)
    assert np.all(m.layer(2).P.mean == 0.0)
    Q2, Q3, P3 = (m.layer(l)[k] for l, k in ((2, "Q"), (3, "Q"), (3, "P")))
    assert abs(Q2.mean.item() - 0.5) <= 4 * Q2.stderr.item()
    assert abs(Q3.mean.item() - 2.0) <= 4 * Q3.stderr.item() + 3 * 3 / n * 2.0
    assert abs(P3.mean.item()) <= 4 * P3.stderr.item() + 3 * 3 / n * 2.0
    # layer 2, ddNTKs in the a.e. convention (one input): S = λ_W C_W Θ²/2, T = λ_W² Θ K/2, R = U = 0
    small = MLP(input_dim=2, width=6, depth=2, activation="relu", C_b=0.0, C_W=2.0, lambda_b=0.0, lambda_W=1.0)
    m2 = dntk.measure_dntk(small, X, 400, seed=2, groups=20).layer(2)
    assert not m2.R.mean.any() and np.abs(m2.U.mean).max() < 1e-14
    for name, value in (("S", 1.0 * 2.0 * 0.25 / 2), ("T", 0.5 / 2), ("Q", 0.5)):
        est = m2[name]
        assert abs(est.mean.item() - value) <= 4.5 * est.stderr.item(), (name, est, value)


def test_validation_and_small_widths():
    net = MLP(widths=[2, 1, 3], activation="tanh")
    X = np.ones((1, 2))
    m = dntk.measure_dntk(net, X, 4, groups=2)
    assert m.layer(1).Theta.shape == (1, 1)
    with pytest.raises(ValueError, match="n_1 = 1"):
        m.layer(1).P
    m.layer(2).U  # n_2 = 3 is fine
    with pytest.raises(ValueError, match="groups"):
        dntk.measure_dntk(net, X, 4, groups=5)
    with pytest.raises(ValueError, match="layer"):
        m.layer(3)
    with pytest.raises(ValueError, match="unknown"):
        m.estimate("V", 2)
    with pytest.raises(ValueError, match="ddntk"):
        dntk.measure_dntk(net, X, 4, groups=2, ddntk="yes")
    with pytest.raises(ValueError, match="columns"):
        dntk.measure_dntk(net, np.ones((1, 3)), 4, groups=2)
    with pytest.raises(TypeError):
        dntk.measure_dntk("net", X, 4)
    params = ntk.sample_parameters(net, 0, 0, 2, depth=1)
    with pytest.raises(ValueError, match="params hold 1 layers"):
        dntk.forward_dntk(net, X, params, [2])


def test_checkpoint_resume_is_identical(tmp_path):
    """Shard checkpoints: a rerun after losing a shard gives bitwise the uninterrupted numbers."""
    import os

    net = MLP(widths=[2, 4, 3], activation="tanh", C_b=0.1, C_W=1.2, lambda_b=0.5, lambda_W=1.0)
    X = np.array([[0.3, -1.0], [1.2, 0.4]])
    ref = dntk.measure_dntk(net, X, 12, seed=2, groups=4)
    ckpt = tmp_path / "d"
    dntk.measure_dntk(net, X, 12, seed=2, groups=4, shard_size=5, checkpoint=ckpt)
    os.remove(ckpt / "shard-000001.npz")
    again = dntk.measure_dntk(net, X, 12, seed=2, groups=4, shard_size=5, checkpoint=ckpt)
    for f in ("P", "Q", "R", "S", "T", "U"):
        np.testing.assert_array_equal(getattr(ref.layer(2), f).mean, getattr(again.layer(2), f).mean)
        np.testing.assert_array_equal(getattr(ref.layer(2), f).stderr, getattr(again.layer(2), f).stderr)
