"""Estimators of G, V and M4: brute-force equality, exact results, and honest jackknife errors."""

import json

import numpy as np
import pytest

from pdlt import MLP
from pdlt.empirical import measure, preactivations


def _brute_force(z_by_net, fan_in, starts):
    """V̂, M4, G and their group jackknife from explicit loops over neurons i != j (the definition)."""
    E, n, N = z_by_net.shape
    P = np.einsum("eia,eib->eab", z_by_net, z_by_net) / n
    M4 = np.einsum("eia,eib,eic,eid->eabcd", *(z_by_net,) * 4) / n
    T = np.zeros((E, N, N, N, N))
    for i in range(n):
        for j in range(n):
            if i != j:
                zi, zj = z_by_net[:, i], z_by_net[:, j]
                T += np.einsum("ea,eb,ec,ed->eabcd", zi, zi, zj, zj)
    T /= n * (n - 1)
    PP = np.einsum("eab,ecd->eabcd", P, P)

    def stats(idx):
        k = len(idx)
        Pm, Tm, PPm = P[idx].mean(0), T[idx].mean(0), PP[idx].mean(0)
        mu_mu = (k * np.einsum("ab,cd->abcd", Pm, Pm) - PPm) / (k - 1)
        return Pm, fan_in * (Tm - mu_mu), M4[idx].mean(0)

    full = stats(np.arange(E))
    G = len(starts) - 1
    loo = [stats(np.r_[0:starts[g], starts[g + 1]:E]) for g in range(G)]
    se = [np.sqrt((G - 1) / G * ((np.stack(x) - np.mean(x, axis=0)) ** 2).sum(0)) for x in zip(*loo)]
    return full, se


def test_estimators_equal_their_definition_by_brute_force():
    net = MLP(widths=[3, 4, 5], activation="tanh", C_b=0.2, C_W=1.7)
    X = np.random.default_rng(1).standard_normal((3, 3))
    E, G = 13, 4
    m = measure(net, X, E, seed=11, groups=G, shard_size=5)
    samples = {l: [] for l in (1, 2)}
    for _, _, zs in preactivations(net, X, E, seed=11, shard_size=4):
        for l, z in zs.items():
            samples[l].append(z)
    starts = [-(-g * E // G) for g in range(G + 1)]  # ceil(g E / G): group g = e G // E
    for l in (1, 2):
        (G_bf, V_bf, M4_bf), (G_se, V_se, M4_se) = _brute_force(np.concatenate(samples[l]), net.n(l - 1), starts)
        L = m.layer(l)
        for est, mean, se in ((L.G, G_bf, G_se), (L.V, V_bf, V_se), (L.M4, M4_bf, M4_se)):
            np.testing.assert_allclose(est.mean, mean, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(est.stderr, se, rtol=1e-8, atol=1e-12)
            assert est.count == E


def test_linear_estimator_jackknife_is_the_spread_of_group_means():
    net = MLP(2, 6, 2, "relu")
    X = np.array([[1.0, -0.5], [0.3, 0.8]])
    m = measure(net, X, 64, seed=2, groups=8)
    gm = m.accumulation.group_means(2, "P")  # equal groups of 8 networks
    np.testing.assert_allclose(m.layer(2).G.mean, gm.mean(0), rtol=1e-13)
    np.testing.assert_allclose(m.layer(2).G.stderr, gm.std(0, ddof=1) / np.sqrt(8), rtol=1e-10)
    np.testing.assert_array_equal(m.accumulation.counts, np.full(8, 8))


def test_group_assignment_and_counts():
    net = MLP(2, 3, 1, "relu")
    acc = measure(net, np.ones((1, 2)), 10, groups=3).accumulation
    expected = np.bincount(np.arange(10) * 3 // 10, minlength=3)
    np.testing.assert_array_equal(acc.counts, expected)


def test_vertex_and_fourth_moment_symmetries():
    net = MLP(3, 8, 2, "tanh", C_b=0.1, C_W=1.2)
    X = np.random.default_rng(4).standard_normal((3, 3))
    L = measure(net, X, 50, seed=0, groups=5).layer(2)
    V, M4 = L.V.mean, L.M4.mean
    for perm in ((1, 0, 2, 3), (0, 1, 3, 2), (2, 3, 0, 1)):
        np.testing.assert_array_equal(V, V.transpose(perm))
    for perm in ((1, 0, 2, 3), (0, 1, 3, 2), (2, 3, 0, 1)):
        np.testing.assert_array_equal(M4, M4.transpose(perm))
    for perm in ((0, 2, 1, 3), (3, 1, 2, 0)):  # same products, rounded in another order
        np.testing.assert_allclose(M4, M4.transpose(perm), rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(L.G.mean, L.G.mean.T)
    assert L.V.shape == (3, 3, 3, 3) and L.G.shape == (3, 3)


def test_second_layer_exact_relu():
    """Layer 2 at any n1 (book (4.37)–(4.43)): G = C_b + C_W K/2, V = C_W² Var(σ²) = 1.25 C_W² K²,
    M4 = 3 (G² + V/n1), single input, K = G^{(1)}."""
    C_b, C_W, n1 = 0.3, 2.0, 8
    net = MLP(widths=[2, n1, 6], activation="relu", C_b=C_b, C_W=C_W)
    X = np.array([[1.0, -2.0]])
    K = C_b + C_W * (X @ X.T)[0, 0] / 2
    G2, V2 = C_b + C_W * K / 2, 1.25 * C_W ** 2 * K ** 2
    L = measure(net, X, 20000, seed=5).layer(2)
    for est, exact in ((L.G, G2), (L.V, V2), (L.M4, 3 * (G2 ** 2 + V2 / n1))):
        assert abs(est.z_score(exact).item()) < 4
        assert est.stderr.item() < 0.05 * exact  # the comparison has teeth


def test_jackknife_stderr_is_honest_for_deep_linear_networks():
    """Deep linear, C_b = 0, C_W = 1, one input (book §3.3, eqs. (3.15), (3.25)): exactly
    G = x·x/n0 at every layer, V^{(ℓ)} = n_{ℓ−1}[Π_{ℓ'<ℓ}(1 + 2/n_ℓ') − 1] G² and M4 = 3 Π(...) G².
    Over 30 seeds the z-scores must look like draws from a unit-width distribution."""
    widths = [2, 16, 12, 20]
    net = MLP(widths=widths, activation="linear", C_b=0.0, C_W=1.0)
    X = np.array([[1.0, 0.5]])
    G = (X @ X.T)[0, 0] / widths[0]
    exact = {}
    for l in (1, 2, 3):
        prod = np.prod([1 + 2 / widths[k] for k in range(1, l)])
        exact[l] = {"G": G, "V": widths[l - 1] * (prod - 1) * G ** 2, "M4": 3 * prod * G ** 2}
    z = {(l, k): [] for l in (1, 2, 3) for k in ("G", "V", "M4")}
    spread = {l: [] for l in (2, 3)}
    for seed in range(30):
        m = measure(net, X, 1000, seed=seed)
        for (l, k), zs in z.items():
            est = m.layer(l)[k]
            zs.append(((est.mean - exact[l][k]) / est.stderr).item())
            if k == "V" and l > 1:
                spread[l].append((est.mean.item(), est.stderr.item()))
    for (l, k), zs in z.items():
        zs = np.array(zs)
        frac, rms = np.mean(np.abs(zs) < 2), np.sqrt(np.mean(zs ** 2))
        assert 0.8 <= frac <= 1.0, (l, k, frac)
        assert 0.5 <= rms <= 1.8, (l, k, rms)
    for l, pairs in spread.items():
        v, se = np.array(pairs).T
        # the stderr predicts the seed-to-seed scatter of V̂ (neither too small nor too large)
        assert 0.6 <= v.std(ddof=1) / np.sqrt(np.mean(se ** 2)) <= 1.6, l


def test_first_layer_is_gaussian_with_kernel_G1():
    """Layer 1 is exactly Gaussian (book (4.23)): G = C_b + C_W XXᵀ/n0, V = 0, M4 by Wick."""
    net = MLP(3, 16, 1, "tanh", C_b=0.5, C_W=1.5)
    X = np.array([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]])
    G1 = 0.5 + 1.5 * X @ X.T / 3
    wick = (np.einsum("ab,cd->abcd", G1, G1) + np.einsum("ac,bd->abcd", G1, G1)
            + np.einsum("ad,bc->abcd", G1, G1))
    for method in ("gaussian", "naive"):
        L = measure(net, X, 4000, seed=9, method=method).layer(1)
        assert np.abs(L.G.z_score(G1)).max() < 4
        assert np.abs(L.V.z_score(0.0)).max() < 4
        assert np.abs(L.M4.z_score(wick)).max() < 4


def test_to_dict_is_json_and_round_trips_the_numbers():
    net = MLP(2, 4, 2, "relu")
    m = measure(net, np.eye(2), 20, seed=1, groups=4)
    d = json.loads(json.dumps(m.to_dict()))
    assert d["networks"] == 20 and d["seed"] == 1 and d["method"] == "gaussian"
    assert [e["layer"] for e in d["layers"]] == [1, 2]
    np.testing.assert_array_equal(np.array(d["layers"][1]["V"]["mean"]), m.layer(2).V.mean)
    np.testing.assert_array_equal(np.array(d["layers"][0]["G"]["stderr"]), m.layer(1).G.stderr)


@pytest.mark.parametrize("bad", [0, 3, True, 1.0])
def test_layer_index_is_validated(bad):
    m = measure(MLP(2, 4, 2, "relu"), np.eye(2), 8, groups=2)
    with pytest.raises(ValueError, match="layer"):
        m.layer(bad)
