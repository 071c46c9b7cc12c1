"""The empirical NTK: forward equation ≡ autodiff, reproducibility, and ReLU closed forms (sheet §5)."""

import numpy as np
import pytest

from pdlt import MLP
from pdlt.empirical import measure
from pdlt.empirical import ntk

NETS = {
    "uniform": dict(widths=[3, 8, 8, 8], C_b=0.0, C_W=2.0),
    "ragged": dict(widths=[4, 7, 5, 6], C_b=0.1, C_W=[1.5, 2.0, 1.2], lambda_b=[0.3, 0.7, 1.1],
                   lambda_W=[1.3, 0.5, 2.0]),
    "wide": dict(widths=[2, 24, 16], C_b=0.2, C_W=1.0, lambda_b=0.5, lambda_W=[2.0, 0.25]),
    "one-output": dict(widths=[3, 6, 6, 1], C_b=0.05, C_W=1.8),
}


@pytest.mark.torch
@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
@pytest.mark.parametrize("N", [1, 3])
@pytest.mark.parametrize("shape", sorted(NETS))
def test_forward_equation_matches_autodiff(activation, N, shape):
    pytest.importorskip("torch")
    net = MLP(activation=activation, **NETS[shape])
    X = np.random.default_rng(N).standard_normal((N, net.input_dim))
    params = ntk.sample_parameters(net, 11, 0, 4)
    fwd = ntk.forward_ntk(net, X, params)
    for l in range(1, net.depth + 1):
        z, H = fwd[l]
        assert H.shape == (4, net.n(l), net.n(l), N, N)
        ad = ntk.autodiff_ntk(net, X, params, l)
        np.testing.assert_allclose(H, ad, rtol=0, atol=1e-10 * max(1.0, np.abs(ad).max()))
    # the first layer is deterministic: δ [λ_b + λ_W x·x / n0]
    c = net.lambda_b[0] + net.lambda_W[0] * (X @ X.T) / net.input_dim
    first = np.eye(net.n(1))[:, :, None, None] * c
    np.testing.assert_allclose(fwd[1][1], np.broadcast_to(first, fwd[1][1].shape), atol=1e-14)


def test_same_networks_as_naive_measure_and_shard_invariance():
    net = MLP(widths=[2, 6, 5, 4], activation="tanh", C_b=0.1, C_W=1.5, lambda_b=0.4, lambda_W=1.2)
    X = np.array([[0.3, -1.0], [1.2, 0.4]])
    ms = [ntk.measure_ntk(net, X, 37, seed=5, groups=6, shard_size=s) for s in (1, 4, 37)]
    ms.append(ntk.measure_ntk(net, X, 37, seed=5, groups=6))
    for m in ms[1:]:
        for l in (1, 2, 3):
            for name in ("G", "Theta", "A", "B", "D", "F"):
                a, b = ms[0].layer(l)[name], m.layer(l)[name]
                np.testing.assert_array_equal(a.mean, b.mean)
                np.testing.assert_array_equal(a.stderr, b.stderr)
    ref = measure(net, X, 37, seed=5, method="naive", groups=6, observables=["G"])
    for l in (1, 2, 3):
        np.testing.assert_array_equal(ms[0].layer(l).G.mean, ref.layer(l).G.mean)
        np.testing.assert_array_equal(ms[0].layer(l).G.stderr, ref.layer(l).G.stderr)
    other = ntk.measure_ntk(net, X, 37, seed=6, groups=6)
    assert not np.array_equal(other.layer(3).Theta.mean, ms[0].layer(3).Theta.mean)


def test_estimators_against_brute_force_neuron_averages():
    """A, B, D, F from the packed features equal explicit i ≠ j averages over the raw Ĥ and z."""
    net = MLP(widths=[2, 5, 4], activation="gelu", C_b=0.1, C_W=1.7, lambda_b=0.3, lambda_W=0.9)
    X = np.array([[0.5, -0.2], [-1.0, 0.7]])
    E = 9
    m = ntk.measure_ntk(net, X, E, seed=2, groups=3)
    z, H = ntk.forward_ntk(net, X, ntk.sample_parameters(net, 2, 0, E))[2]
    n, fan_in = net.n(2), net.n(1)
    off = ~np.eye(n, dtype=bool)
    Hd = np.einsum("eiiab->eab", H) / n
    # B[a,b,c,d] = m E[Ĥ_ij;ac Ĥ_ij;bd], F[a,b,c,d] = m E[Ĥ_ij;ac z_i;b z_j;d], i ≠ j
    B = fan_in * np.einsum("eijac,eijbd,ij->abcd", H, H, off) / (E * n * (n - 1))
    F = fan_in * np.einsum("eijac,eib,ejd,ij->abcd", H, z, z, off) / (E * n * (n - 1))
    # A = m Cov(Ĥ_ii;ab, Ĥ_jj;cd), D = m Cov(Ĥ_ii;ab, z_j;c z_j;d), i ≠ j (unbiased over networks)
    Hii = np.einsum("eiiab->eiab", H)
    zz = np.einsum("eic,eid->eicd", z, z)

    def cov(u, w):
        s = np.einsum("eiab,ejcd,ij->abcd", u, w, off) / (E * n * (n - 1))
        um, wm = u.mean(axis=1), w.mean(axis=1)
        prod = (E * np.multiply.outer(um.mean(0), wm.mean(0)) - np.einsum("eab,ecd->abcd", um, wm) / E) / (E - 1)
        return fan_in * (s - prod)

    lm = m.layer(2)
    np.testing.assert_allclose(lm.Theta.mean, Hd.mean(0), atol=1e-13)
    np.testing.assert_allclose(lm.B.mean, B, atol=1e-12)
    np.testing.assert_allclose(lm.F.mean, F, atol=1e-12)
    np.testing.assert_allclose(lm.A.mean, cov(Hii, Hii), atol=1e-12)
    np.testing.assert_allclose(lm.D.mean, cov(Hii, zz), atol=1e-12)
    # symmetries: A_(ab)(cd) = A_(cd)(ab); B[a,b,c,d] = B[b,a,d,c] (swap the two NTKs)
    np.testing.assert_allclose(lm.A.mean, lm.A.mean.transpose(2, 3, 0, 1), atol=1e-12)
    np.testing.assert_allclose(lm.B.mean, lm.B.mean.transpose(1, 0, 3, 2), atol=1e-12)
    # layer 1 is deterministic: no fluctuations
    for name in ("A", "B", "D", "F"):
        assert np.abs(m.layer(1)[name].mean).max() < 1e-12


def _relu_closed_forms(l: int, f_W: float):
    """Scale-invariant closed forms at criticality, ReLU (r4 = 2, ν = 5), normalized:
    A/Θ², B/Θ², D/(KΘ), F/(KΘ) with Θ = ℓΘ₁ (formula sheet §5)."""
    r4, nu = 2.0, 5.0
    B = r4 * (l - 1) * l * (2 * l - 1) / 6 / l ** 2
    F = r4 * l * (l - 1) / 2 / l
    D = (nu * f_W + r4 - 1) * l * (l - 1) / 2 / l
    A = sum(nu * f_W ** 2 * (k - 1) + f_W * (nu * f_W + r4 - 1) * k * (k - 1) + (r4 - 1) * k * k
            + 2 * f_W * (r4 - 1) * k + nu * f_W ** 2 for k in range(1, l)) / l ** 2
    return {"A": A, "B": B, "D": D, "F": F, "A+2B": A + 2 * B, "D+2F": D + 2 * F}


def _combined(m, l, name):
    if name == "A+2B":
        return m.accumulation.jackknife(l, lambda mm: ntk._est_A(mm) + 2 * ntk._est_B(mm),
                                        ("Hd", "MHH", "HdHd", "QB"))
    if name == "D+2F":
        return m.accumulation.jackknife(l, lambda mm: ntk._est_D(mm) + 2 * ntk._est_F(mm),
                                        ("Hd", "P", "MHZ", "HdP", "QF"))
    return m.layer(l)[name]


def test_checkpoint_resume_is_identical(tmp_path, monkeypatch):
    """A killed run (shards missing) resumes from the saved shards: identical numbers, only the
    missing shards recomputed; a different measurement in the same directory is refused."""
    import os

    net = MLP(widths=[2, 5, 4], activation="tanh", C_b=0.1, C_W=1.5, lambda_b=0.4, lambda_W=1.2)
    X = np.array([[0.3, -1.0], [1.2, 0.4]])
    ref = ntk.measure_ntk(net, X, 30, seed=3, groups=5)
    ckpt = tmp_path / "ntk"
    ntk.measure_ntk(net, X, 30, seed=3, groups=5, shard_size=7, checkpoint=ckpt)
    assert sorted(os.listdir(ckpt)) == ["manifest.json"] + [f"shard-{s:06d}.npz" for s in range(5)]
    os.remove(ckpt / "shard-000002.npz")
    calls = []
    real = ntk.sample_parameters
    monkeypatch.setattr(ntk, "sample_parameters", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    resumed = ntk.measure_ntk(net, X, 30, seed=3, groups=5, shard_size=7, checkpoint=ckpt)
    assert calls == [14]
    for l in (1, 2):
        for name in ("Theta", "A", "B", "D", "F"):
            np.testing.assert_array_equal(ref.layer(l)[name].mean, resumed.layer(l)[name].mean)
            np.testing.assert_array_equal(ref.layer(l)[name].stderr, resumed.layer(l)[name].stderr)
    with pytest.raises(ValueError, match="different measurement.*seed"):
        ntk.measure_ntk(net, X, 30, seed=4, groups=5, shard_size=7, checkpoint=ckpt)


def test_relu_lambda_W_only_matches_sheet_table():
    """Sheet §5 MC table: ReLU, C_W = 2, L = 3, λ_W only, n = 256: A+2B ≈ 6.444, B ≈ 1.111, A ≈ 4.222,
    D ≈ 6.0, D + 2F ≈ 10 (normalized by Θ² and KΘ). Also the exact layer-2 values."""
    n, L = 256, 3
    net = MLP(input_dim=1, width=n, depth=L, activation="relu", C_b=0.0, C_W=2.0, lambda_b=0.0, lambda_W=1.0)
    X = np.array([[1.3]])
    K = 2.0 * 1.3 ** 2  # K* = C_W x²/n0 (C_b = 0)
    theta1 = 1.0 * K / 2  # Θ₁ = λ_W A₂ K*
    m = ntk.measure_ntk(net, X, 800, seed=3, groups=20)
    assert m.layer(L).B.shape == (1, 1, 1, 1)
    closed = _relu_closed_forms(3, 1.0)
    assert abs(closed["A+2B"] - 6.444) < 1e-3 and abs(closed["B"] - 1.111) < 1e-3 and abs(closed["A"] - 4.222) < 1e-3
    for l in (1, 2, 3):
        # Θ = ℓΘ₁ holds exactly at any width for ReLU with C_b = 0 (sign symmetry of σ′)
        th = m.layer(l).Theta
        assert abs(th.mean.item() - l * theta1) <= 4 * th.stderr.item() + 1e-12
    for l in (2, 3):
        theta = l * theta1
        pred = _relu_closed_forms(l, 1.0)
        for name, value in pred.items():
            scale = theta ** 2 if name in ("A", "B", "A+2B") else K * theta
            est = _combined(m, l, name)
            mean, se = est.mean.item() / scale, est.stderr.item() / scale
            allowance = 3 * l / n * abs(value)  # first neglected order, O(ℓ/n) relative
            assert abs(mean - value) <= 4 * se + allowance, (l, name, mean, se, value)


def test_relu_lambda_b_only_theta_is_linear_in_depth():
    n, L, lam_b = 48, 5, 0.7
    net = MLP(input_dim=2, width=n, depth=L, activation="relu", C_b=0.0, C_W=2.0, lambda_b=lam_b,
              lambda_W=0.0, output_dim=8)
    X = np.array([[1.0, -0.5]])
    m = ntk.measure_ntk(net, X, 400, seed=1, groups=16, layers=[1, 3, 5])
    for l in (1, 3, 5):
        th = m.layer(l).Theta
        assert abs(th.mean.item() - l * lam_b) <= 4 * th.stderr.item() + 1e-12, (l, th)
    B = m.layer(5).B
    pred = _relu_closed_forms(5, 0.0)["B"] * (5 * lam_b) ** 2
    assert abs(B.mean.item() - pred) <= 4 * B.stderr.item() + 3 * 5 / n * pred


def test_validation_and_small_widths():
    net = MLP(widths=[2, 1, 3], activation="relu")
    X = np.ones((1, 2))
    m = ntk.measure_ntk(net, X, 4, groups=2)
    assert m.layer(1).Theta.shape == (1, 1)
    with pytest.raises(ValueError, match="n_1 = 1"):
        m.layer(1).B
    m.layer(2).B  # n_2 = 3 is fine
    with pytest.raises(ValueError, match="groups"):
        ntk.measure_ntk(net, X, 4, groups=5)
    with pytest.raises(ValueError, match="layer"):
        m.layer(3)
    with pytest.raises(TypeError):
        ntk.measure_ntk("net", X, 4)


@pytest.mark.parametrize("activation, C_b, C_W, n, L", [("tanh", 0.0, 1.0, 64, 4), ("gelu", 0.17, 1.98, 48, 3)])
def test_observables_table_ntk_twins(activation, C_b, C_W, n, L):
    """Two inputs at criticality: every entry of Θ, A, B, D, F agrees with pdlt.theory within the
    family-wise threshold plus the O(1/n) allowance of the observables table."""
    from pdlt.observables import NTK_ROWS, compare, distinct_entries, family_threshold
    from pdlt.theory import theory

    net = MLP(input_dim=3, width=n, depth=L, activation=activation, C_b=C_b, C_W=C_W, lambda_b=0.5, lambda_W=1.0)
    X = np.array([[1.0, 0.5, -0.3], [0.2, -1.1, 0.6]])
    m = ntk.measure_ntk(net, X, 1000, seed=7, groups=20)
    rows = compare(theory(net, X, ntk=True), m)
    assert {r.name for r in rows} == {"G"} | set(NTK_ROWS)
    k = family_threshold(rows)
    for r in rows:
        assert r.valid and r.ok(k), (r.layer, r.name, r.max_abs_z(), k)
    assert [distinct_entries(s, 1) for s in ("Theta", "A", "B", "D", "F")] == [1] * 5
    assert distinct_entries("B", 2) == 7 and distinct_entries("D", 2) == 9 and distinct_entries("F", 2) == 10
