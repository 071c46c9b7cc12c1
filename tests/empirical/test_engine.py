"""The Monte Carlo engine: reproducibility, naive ≡ gaussian in law, backends, checkpoints, errors."""

import json
import os

import numpy as np
import pytest

from pdlt import MLP
from pdlt.empirical import (Observable, PreactivationOverflowError, accumulate, engine, measure,
                            preactivations)

NAMES = ("G", "V", "M4")


def _estimates(m):
    return [(l, k, m.layer(l)[k]) for l in m.layers for k in NAMES]


def _assert_identical(m1, m2):
    for (_, _, a), (_, _, b) in zip(_estimates(m1), _estimates(m2)):
        np.testing.assert_array_equal(a.mean, b.mean)
        np.testing.assert_array_equal(a.stderr, b.stderr)


def _assert_agree(m1, m2, sigmas=4.0):
    """Every entry of G and V agrees within `sigmas` combined standard errors."""
    for l in m1.layers:
        for k in ("G", "V"):
            a, b = m1.layer(l)[k], m2.layer(l)[k]
            z = np.abs(a.mean - b.mean) / np.hypot(a.stderr, b.stderr)
            assert z.max() < sigmas, (l, k, z.max())


def test_network_seeds_are_the_spawned_children():
    children = np.random.SeedSequence(7).spawn(5)
    for e, child in enumerate(children):
        mine = engine._seeds(7, e, e + 1)[0]
        np.testing.assert_array_equal(mine.generate_state(8), child.generate_state(8))


@pytest.mark.parametrize("method", ["gaussian", "naive"])
def test_same_seed_same_numbers_whatever_the_shard_size_numpy(method):
    net = MLP(3, 12, 3, "tanh", C_b=0.1, C_W=1.4)
    X = np.random.default_rng(0).standard_normal((3, 3))
    runs = [measure(net, X, 45, seed=3, method=method, groups=6, shard_size=s) for s in (None, 1, 7, 16)]
    for other in runs[1:]:
        _assert_identical(runs[0], other)
    different = measure(net, X, 45, seed=4, method=method, groups=6)
    assert not np.array_equal(different.layer(3).G.mean, runs[0].layer(3).G.mean)


def test_first_layer_is_xi_times_the_root_of_G1():
    """z^{(1)} = ξ Ĝ^{(1)1/2} with ξ the network's own normals: exactly N(0, Ĝ^{(1)}) in law."""
    net = MLP(4, 5, 2, "relu", C_b=0.2, C_W=1.3)
    X = np.array([[1.0, 2.0, 0.0, -1.0], [1.0, 2.0, 0.0, -1.0], [0.5, 0.0, 1.0, 1.0]])  # singular Ĝ
    G1 = 0.2 + 1.3 * X @ X.T / 4
    w, U = np.linalg.eigh(G1)
    root = U @ np.diag(np.sqrt(np.clip(w, 0, None))) @ U.T
    np.testing.assert_allclose(root @ root, G1, atol=1e-12)
    R = engine._NumpyBackend().sqrt_psd(G1)
    np.testing.assert_allclose(R.T @ R, G1, atol=1e-12)
    np.testing.assert_allclose(R, R.T, atol=1e-14)
    (_, _, zs), = preactivations(net, X, 3, seed=5, layers=1)
    for e in range(3):
        rng = np.random.default_rng(np.random.SeedSequence(5).spawn(3)[e])
        xi = rng.standard_normal(3 * 5).reshape(3, 5).T  # (n1, N)
        np.testing.assert_allclose(zs[1][e], xi @ root, atol=1e-12)
        np.testing.assert_allclose(zs[1][e][:, 0], zs[1][e][:, 1], atol=1e-14)  # repeated input


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_naive_and_gaussian_paths_agree_statistically(activation):
    net = MLP(3, 32, 3, activation, C_b=0.1, C_W=2.0 if activation == "relu" else 1.5)
    X = np.array([[1.0, -0.5, 0.3], [0.2, 0.9, -1.1]])
    naive = measure(net, X, 20000, seed=1, method="naive")
    fast = measure(net, X, 20000, seed=2, method="gaussian")
    _assert_agree(naive, fast)
    V3 = fast.layer(3).V
    assert V3.stderr[0, 0, 0, 0] < 0.1 * abs(V3.mean[0, 0, 0, 0])  # precise enough to catch an O(1) error


def test_overflow_is_reported_with_its_layer():
    net = MLP(2, 16, 200, "relu", C_W=50.0)
    X = np.array([[1.0, 1.0]])
    for method in ("gaussian", "naive"):
        with pytest.raises(PreactivationOverflowError, match=r"at layer \d+"):
            measure(net, X, 4, groups=2, method=method)
    shallow = measure(net, X, 4, groups=2, layers=range(1, 40))  # still finite there
    assert np.isfinite(shallow.layer(39).G.mean).all()
    assert issubclass(PreactivationOverflowError, FloatingPointError)


def test_width_one_layer_has_no_vertex():
    net = MLP(widths=[2, 1, 3], activation="tanh")
    m = measure(net, np.eye(2), 40, groups=4)
    with pytest.raises(ValueError, match="n_1 = 1"):
        m.layer(1).V
    assert m.layer(1).G.shape == (2, 2) and m.layer(1).M4.shape == (2, 2, 2, 2)
    assert np.isfinite(m.layer(2).V.mean).all()
    d = json.loads(json.dumps(m.to_dict()))
    assert d["layers"][0]["V"] is None and d["layers"][1]["V"] is not None


def test_measurement_api():
    net = MLP(2, 6, 3, "relu")
    X = np.eye(2)
    m = measure(net, X, 30, seed=4, groups=3, layers=[3, 2])
    assert m.layers == (2, 3) and m.networks == 30 and m.seed == 4 and m.groups == 3
    assert m.net is net and np.array_equal(m.X, X) and m.observables == ("G", "V", "M4")
    L = m.layer(2)
    assert L.K is L.G or np.array_equal(L.K.mean, L.G.mean)
    assert (L.width, L.fan_in) == (6, 6) and L.G.count == 30
    with pytest.raises(ValueError, match="not measured"):
        m.layer(1)
    with pytest.raises(ValueError, match="not measured"):
        L["nope"]
    only_G = measure(net, X, 30, seed=4, groups=3, layers=[3, 2], observables=["K"])
    assert only_G.observables == ("G",) and [f.name for f in only_G.accumulation.features] == ["P"]
    np.testing.assert_array_equal(only_G.layer(3).K.mean, m.layer(3).G.mean)
    with pytest.raises(ValueError, match="'V' was not measured"):
        only_G.layer(2).V


class _FirstNeuron:
    """A user feature: the first neuron's preactivation per input, shape (N,)."""

    name = "z1"

    def shape(self, N):
        return (N,)

    def __call__(self, z, backend):
        return z[:, 0, :] * 1.0


def test_extra_observables_and_raw_accumulation():
    net = MLP(2, 5, 2, "tanh", C_b=0.2)
    X = np.array([[1.0, 0.0], [0.3, -0.4]])
    obs = Observable("mean_z", (_FirstNeuron(),), lambda means: means["z1"])
    m = measure(net, X, 60, seed=2, groups=6, observables=["G", "V", obs])
    assert m.observables == ("G", "V", "mean_z")
    samples = np.concatenate([zs[2] for _, _, zs in preactivations(net, X, 60, seed=2)])
    np.testing.assert_allclose(m.layer(2)["mean_z"].mean, samples[:, 0, :].mean(0), rtol=1e-12)
    acc = accumulate(net, X, [_FirstNeuron()], 60, seed=2, groups=6)
    assert acc.group_means(2, "z1").shape == (6, 2)
    means = acc.means(1)
    assert (means.layer, means.width, means.fan_in, means.count) == (1, 5, 2, 60)
    with pytest.raises(ValueError, match="observable name"):
        measure(net, X, 10, groups=2, observables=[Observable("V", (_FirstNeuron(),), lambda m: m["z1"])])
    with pytest.raises(ValueError, match="observables must list"):
        measure(net, X, 10, groups=2, observables=["W"])


def test_checkpoint_resume_is_identical(tmp_path, monkeypatch):
    net = MLP(2, 6, 3, "tanh", C_b=0.1, C_W=1.5)
    X = np.array([[1.0, 0.5], [-0.2, 0.7]])
    kw = dict(seed=8, groups=4)
    reference = measure(net, X, 40, **kw)  # default shard size, no checkpoint
    ckpt = tmp_path / "ckpt"
    first = measure(net, X, 40, shard_size=7, checkpoint=ckpt, **kw)
    _assert_identical(reference, first)
    files = sorted(os.listdir(ckpt))
    assert files == ["manifest.json"] + [f"shard-{s:06d}.npz" for s in range(6)]
    os.remove(ckpt / "shard-000001.npz")
    os.remove(ckpt / "shard-000004.npz")
    calls = []
    real = engine._layer_stream
    monkeypatch.setattr(engine, "_layer_stream", lambda *a: calls.append(1) or real(*a))
    resumed = measure(net, X, 40, shard_size=7, checkpoint=ckpt, **kw)
    assert len(calls) == 2  # only the two missing shards were recomputed
    _assert_identical(reference, resumed)
    calls.clear()
    again = measure(net, X, 40, shard_size=7, checkpoint=ckpt, **kw)
    assert calls == [] and sorted(os.listdir(ckpt)) == files  # nothing recomputed, no temp files left
    _assert_identical(reference, again)
    (ckpt / "shard-000002.npz").write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match="unreadable"):
        repaired = measure(net, X, 40, shard_size=7, checkpoint=ckpt, **kw)
    _assert_identical(reference, repaired)


def test_checkpoint_manifest_mismatch_is_an_error(tmp_path):
    net = MLP(2, 4, 2, "relu")
    X = np.eye(2)
    measure(net, X, 20, seed=1, groups=4, shard_size=5, checkpoint=tmp_path)
    with pytest.raises(ValueError, match="different measurement.*seed"):
        measure(net, X, 20, seed=2, groups=4, shard_size=5, checkpoint=tmp_path)
    with pytest.raises(ValueError, match="X_sha256"):
        measure(net, 2 * X, 20, seed=1, groups=4, shard_size=5, checkpoint=tmp_path)
    with pytest.raises(ValueError, match="net"):
        measure(net.replace(C_W=1.0), X, 20, seed=1, groups=4, shard_size=5, checkpoint=tmp_path)
    file = tmp_path / "plain-file"
    file.write_text("x")
    with pytest.raises(ValueError, match="directory"):
        measure(net, X, 20, groups=4, checkpoint=file)


@pytest.mark.parametrize("kwargs, match", [
    (dict(networks=1), "networks"), (dict(networks=0), "networks"), (dict(networks=2.5), "networks"),
    (dict(seed=-1), "seed"), (dict(seed="a"), "seed"),
    (dict(groups=1), r"groups must be an integer in 2\.\.networks"), (dict(groups=11), "groups"),
    (dict(shard_size=0), "shard_size"), (dict(method="exact"), "method"),
    (dict(backend="jax"), "backend"), (dict(device="cuda"), "device"), (dict(layers=[0]), "layer"),
    (dict(layers=[]), "layers"),
])
def test_bad_parameters_are_rejected(kwargs, match):
    net = MLP(2, 4, 2, "relu")
    args = dict(networks=10, groups=5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        measure(net, np.eye(2), **args)


def test_bad_inputs_are_rejected():
    net = MLP(2, 4, 2, "relu")
    with pytest.raises(ValueError, match="input_dim"):
        measure(net, np.ones((2, 3)), 10, groups=2)
    with pytest.raises(ValueError, match="X"):
        measure(net, np.array([1.0, np.nan]).reshape(1, 2), 10, groups=2)
    with pytest.raises(TypeError, match="MLP"):
        measure("net", np.eye(2), 10, groups=2)


def test_oversized_accumulators_are_refused_before_allocation():
    net = MLP(3, 8, 20, "relu")
    X = np.random.default_rng(0).standard_normal((40, 3))
    with pytest.raises(ValueError, match="GiB.*observables=\\['G'\\]"):
        measure(net, X, 100)
    assert measure(net, X, 10, groups=2, observables=["G"], layers=20).layer(20).G.shape == (40, 40)


def test_progress_bar_can_be_forced():
    net = MLP(2, 4, 2, "relu")
    quiet = measure(net, np.eye(2), 12, groups=3, progress=False)
    loud = measure(net, np.eye(2), 12, groups=3, shard_size=5, progress=True)
    _assert_identical(quiet, loud)


# ---------------------------------------------------------------------------------------------
# torch backend (CPU)


def test_torch_same_seed_same_numbers_whatever_the_shard_size():
    pytest.importorskip("torch")
    net = MLP(3, 10, 3, "tanh", C_b=0.1, C_W=1.4)
    X = np.random.default_rng(0).standard_normal((3, 3))
    for method in ("gaussian", "naive"):
        runs = [measure(net, X, 30, seed=3, method=method, backend="torch", groups=5, shard_size=s)
                for s in (None, 1, 8)]
        for other in runs[1:]:
            _assert_identical(runs[0], other)
    assert runs[0].backend == "torch" and runs[0].device == "cpu"


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
def test_torch_backend_agrees_with_numpy(activation):
    pytest.importorskip("torch")
    net = MLP(3, 32, 3, activation, C_b=0.1, C_W=1.5)
    X = np.array([[1.0, -0.5, 0.3], [0.2, 0.9, -1.1]])
    ref = measure(net, X, 8000, seed=1)
    tch = measure(net, X, 8000, seed=2, backend="torch", device="cpu")
    _assert_agree(ref, tch)
    naive = measure(net, X, 2000, seed=3, backend="torch", method="naive")
    _assert_agree(ref, naive)


def test_torch_sigma_matches_the_activation():
    torch = pytest.importorskip("torch")
    from pdlt.activations import get_activation

    z = np.linspace(-4, 4, 41)
    for name, params in [("relu", {}), ("leaky_relu", {"a": 0.2}), ("linear", {}), ("tanh", {}),
                         ("sin", {}), ("sigmoid", {}), ("softplus", {}), ("swish", {}), ("gelu", {}),
                         ("erf", {}), ("monomial", {"p": 3}), ("step", {})]:
        act = get_activation(name, **params)
        got = engine._torch_sigma(act, torch)(torch.as_tensor(z)).numpy()
        np.testing.assert_allclose(got, act.sigma(z), rtol=1e-13, atol=1e-14, err_msg=name)
    custom = get_activation(lambda x: np.arctan(x))
    got = engine._torch_sigma(custom, torch)(torch.as_tensor(z)).numpy()
    np.testing.assert_allclose(got, np.arctan(z), rtol=1e-15)


def test_torch_missing_cuda_is_a_clear_error():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="cuda"):
        measure(MLP(2, 4, 2, "relu"), np.eye(2), 10, groups=2, backend="torch", device="cuda")
