"""Shards on a Dask cluster (a LocalCluster of 2 worker processes) give the serial run's bits."""

import os
import sys

import numpy as np
import pytest

from pdlt.empirical import PreactivationOverflowError, accumulate, measure
from pdlt.empirical import engine
from pdlt.mlp import MLP

NET = MLP(3, 16, 3, "tanh", C_W=1.0)
X = np.random.default_rng(0).standard_normal((2, 3))


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as c:
        yield c


def assert_same_bits(a, b):
    assert a.layers == b.layers and a.shard_size == b.shard_size
    for l in a.layers:
        for name in a.observables:
            x, y = a.estimate(name, l), b.estimate(name, l)
            assert np.array_equal(x.mean, y.mean), (name, l)
            assert np.array_equal(x.stderr, y.stderr), (name, l)
    assert a.accumulation.sums.keys() == b.accumulation.sums.keys()
    for key, s in a.accumulation.sums.items():
        assert np.array_equal(s, b.accumulation.sums[key]), key


@pytest.mark.parametrize("shard_size, groups, method", [
    (50, 32, "gaussian"),  # groups of 12-13 networks, several per shard, some cut by shard borders
    (7, 4, "gaussian"),    # groups of 100 networks spanning many shards
    (33, 5, "naive"),
])
def test_cluster_equals_serial_bitwise(client, shard_size, groups, method):
    kw = dict(seed=11, shard_size=shard_size, groups=groups, method=method)
    serial = measure(NET, X, 400, **kw)
    cluster = measure(NET, X, 400, scheduler=client, **kw)
    assert_same_bits(serial, cluster)


def test_checkpoints_are_shared_with_the_serial_run(client, tmp_path):
    kw = dict(seed=3, shard_size=50, groups=16)
    serial = measure(NET, X, 400, checkpoint=tmp_path / "serial", **kw)
    cluster = measure(NET, X, 400, checkpoint=tmp_path / "cluster", scheduler=client, **kw)
    assert_same_bits(serial, cluster)
    files = sorted(os.listdir(tmp_path / "serial"))
    assert files == sorted(os.listdir(tmp_path / "cluster")) and len(files) == 1 + 8
    for name in files:  # the cluster writes the serial run's checkpoint, array for array
        if name.endswith(".npz"):
            with np.load(tmp_path / "serial" / name) as a, np.load(tmp_path / "cluster" / name) as b:
                assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    # an interrupted run (some shards missing, one corrupt) resumes on the cluster
    ck = tmp_path / "serial"
    for s in (1, 2, 5, 7):
        os.remove(ck / f"shard-{s:06d}.npz")
    (ck / "shard-000004.npz").write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match="unreadable"):
        resumed = measure(NET, X, 400, checkpoint=ck, scheduler=client, **kw)
    assert_same_bits(serial, resumed)
    # and a cluster checkpoint resumes serially
    for s in (0, 6):
        os.remove(tmp_path / "cluster" / f"shard-{s:06d}.npz")
    assert_same_bits(serial, measure(NET, X, 400, checkpoint=tmp_path / "cluster", **kw))


def test_worker_errors_reach_the_caller(client):
    with pytest.raises(PreactivationOverflowError, match="layer"):
        measure(MLP(2, 16, 600, "relu", C_W=8.0), X[:, :2], 40, shard_size=10, groups=4, observables=["G"],
                scheduler=client)


def test_few_shards_in_flight_and_every_network_on_the_bar(client, monkeypatch):
    from pdlt.empirical import distributed as dist

    feats = [f for o in engine.DEFAULT_OBSERVABLES for f in o.features]
    serial = accumulate(NET, X, feats, 300, seed=5, shard_size=3, groups=7)
    job = engine._ShardJob(NET, X, "numpy", "cpu", "gaussian", 5, (1, 2, 3), tuple(feats),
                           {f.name: tuple(f.shape(2)) for f in feats}, engine._group_starts(300, 7))
    count = {"submitted": 0, "combined": 0, "networks": 0, "most": 0}
    submit = client.submit

    def counting_submit(*args, **kw):
        count["submitted"] += 1
        count["most"] = max(count["most"], count["submitted"] - count["combined"])
        return submit(*args, **kw)

    class Bar:
        def advance(self, k):
            count["combined"] += 1
            count["networks"] += k

    monkeypatch.setattr(client, "submit", counting_submit)
    sums = {k: np.zeros_like(v) for k, v in serial.sums.items()}
    dist.run_shards(client, job, 300, 3, sums, None, Bar())
    assert count["submitted"] == count["combined"] == 100 and count["networks"] == 300
    assert count["most"] <= 4  # 2 × worker threads, not all 100 shards at once
    for key, s in serial.sums.items():
        assert np.array_equal(s, sums[key]), key


def test_bad_scheduler():
    pytest.importorskip("distributed")
    for bad in (3, "", object()):
        with pytest.raises(ValueError, match="scheduler must be"):
            measure(NET, X, 10, groups=4, scheduler=bad)


def test_without_dask_the_error_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "distributed", None)  # makes `import distributed` fail
    with pytest.raises(ImportError, match=r"pdlt\[dask\]"):
        measure(NET, X, 10, groups=4, scheduler="local", checkpoint=tmp_path / "ck")
    assert not (tmp_path / "ck").exists()  # refused before any work
    measure(NET, X, 10, groups=4)  # the serial path needs no dask
