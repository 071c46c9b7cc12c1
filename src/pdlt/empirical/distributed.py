r"""Shards of an ensemble computed on a Dask distributed cluster, with the serial run's bits.

``measure(..., scheduler=...)`` (and ``pdlt measure --scheduler``) hands the shards of networks to
Dask workers and combines what comes back here, in shard order. Needs ``pip install 'pdlt[dask]'``;
on a remote cluster every worker needs the same pdlt (and numpy) as the client.

Why the result is bitwise the serial one
----------------------------------------
The serial engine adds each network's features into its jackknife group's sum strictly in network
order, starting from zeros. A shard's networks a..b−1 fall into consecutive groups g_lo..g_hi:

- every group that *starts* inside the shard starts from zeros in the serial run too, so the worker
  can sum it (the same ordered addition, from zeros) and the serial bits come out — including the
  last group, which the next shard then continues;
- only the first group can have started before the shard (the serial run continues a running sum);
  for it the worker returns the raw per-network rows, and the combiner adds them to the running sum
  in order, exactly as the serial loop does.

So a shard sends back at most one group's rows (≤ the smaller of a group and a shard) plus one sum
per group it touches. Per-network arithmetic never depends on the shard's other networks, so a
network's features are the same bits on a worker as in the serial loop (same numpy, same BLAS
settings; a cluster whose workers run a different numpy or BLAS may round differently).

Combining in shard order also reproduces the serial state after each shard, so the checkpoint files
are the serial run's: a run interrupted on a cluster resumes serially and vice versa.

Memory stays bounded: at most ``2 × worker threads`` shards (at least 4) are in flight or waiting
for their turn at a time.
"""

from __future__ import annotations

import collections
import contextlib
import os
from collections.abc import Iterator

import numpy as np

from . import engine

__all__ = ["run_shards", "compute_shard", "combine", "check_scheduler", "LOCAL_WORKERS"]

LOCAL_WORKERS = 2
"""Worker processes of the LocalCluster that ``scheduler="local"`` starts (one thread each)."""

_INSTALL = "scheduler= needs Dask distributed: install pdlt[dask] (pip install 'pdlt[dask]')"


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise ImportError(_INSTALL) from None
    return distributed


def check_scheduler(scheduler) -> None:
    """Raise ValueError for a scheduler that is none of "local", an address string or a Client;
    ImportError (install pdlt[dask]) when Dask distributed is missing."""
    if isinstance(scheduler, str):
        if not scheduler.strip():
            raise ValueError("scheduler must be 'local', a Dask scheduler address such as "
                             "'tcp://host:8786', or a distributed.Client; got an empty string")
        _import_distributed()
        return
    distributed = _import_distributed()
    if not isinstance(scheduler, distributed.Client):
        raise ValueError(f"scheduler must be 'local', a Dask scheduler address such as 'tcp://host:8786', "
                         f"or a distributed.Client; got {scheduler!r}")


@contextlib.contextmanager
def _client(scheduler) -> Iterator:
    """A connected Client: the one given, or one made (and closed) for this call."""
    check_scheduler(scheduler)
    distributed = _import_distributed()
    if isinstance(scheduler, distributed.Client):
        yield scheduler
    elif scheduler.strip() == "local":
        with distributed.LocalCluster(n_workers=LOCAL_WORKERS, threads_per_worker=1, processes=True,
                                      dashboard_address=None) as cluster, distributed.Client(cluster) as client:
            yield client
    else:
        with distributed.Client(scheduler.strip()) as client:
            yield client


def compute_shard(job, a: int, b: int) -> dict:
    """The features of networks a..b−1 reduced for :func:`combine` (runs on a worker; pure).

    Returns ``{"carry": bool, "head": {key: rows}, "sums": {key: (k, *shape)}}`` keyed by
    (layer, feature name): ``head`` holds the raw rows of the first group when it started before
    ``a`` (``carry``), ``sums`` the ordered sums from zeros of the groups starting in a..b−1.
    """
    gid, segments = engine._shard_segments(job.starts, a, b)
    carry = bool(job.starts[gid[0]] < a)
    be = engine._make_backend(job.backend, job.device)
    head, sums = {}, {}
    with np.errstate(all="ignore"):  # overflow is detected and reported per layer
        for l, name, F in engine._shard_features(job.net, job.X, be, job.method, job.seed, a, b, job.layers,
                                                 job.features, job.shapes):
            parts = []
            for k, (lo, hi) in enumerate(segments):
                if k == 0 and carry:
                    head[(l, name)] = np.array(F[lo:hi])
                else:
                    parts.append(engine._ordered_add(np.zeros(F.shape[1:]), F[lo:hi]))
            sums[(l, name)] = np.stack(parts) if parts else np.zeros((0,) + F.shape[1:])
    return {"carry": carry, "head": head, "sums": sums}


def combine(sums: dict, part: dict, g_lo: int, g_hi: int) -> None:
    """Fold one shard's :func:`compute_shard` result into the running group sums (in place)."""
    first = g_lo + int(part["carry"])
    for key, acc in sums.items():
        if part["carry"]:
            acc[g_lo] = engine._ordered_add(acc[g_lo], part["head"][key])
        block = part["sums"][key]
        if block.shape != (g_hi + 1 - first,) + acc.shape[1:]:
            raise RuntimeError(f"a worker returned group sums of shape {block.shape} for {key}; expected "
                               f"{(g_hi + 1 - first,) + acc.shape[1:]} (does it run the same pdlt?)")
        acc[first:g_hi + 1] = block


def run_shards(scheduler, job, networks: int, shard: int, sums: dict, store, bar) -> None:
    """Fill ``sums`` (zeros on entry) as the serial loop of :func:`engine.accumulate` would.

    Shards saved in the checkpoint ``store`` are loaded, the others computed on the cluster, in a
    window of at most 2 × worker threads; results are combined (and saved) strictly in shard order.
    """
    distributed = _import_distributed()
    plan = []
    for s, a in enumerate(range(0, networks, shard)):
        b = min(a + shard, networks)
        gid, _ = engine._shard_segments(job.starts, a, b)
        plan.append((s, a, b, int(gid[0]), int(gid[-1])))
    todo = collections.deque(p for p in plan if store is None or not os.path.exists(store._file(p[0])))
    with _client(scheduler) as client:
        threads = sum(client.nthreads().values())
        window = max(4, 2 * threads)
        [job_future] = client.scatter([job], broadcast=True, hash=False)
        running = distributed.as_completed()
        futures: dict = {}  # future -> shard index
        done: dict[int, dict] = {}  # finished shards waiting for their turn
        submitted = set()

        def submit(p) -> None:
            fut = client.submit(compute_shard, job_future, p[1], p[2], pure=False)
            futures[fut] = p[0]
            submitted.add(p[0])
            running.add(fut)

        def fill(next_s: int) -> None:
            # submit ahead, at most `window` shards past the one to combine next
            while todo and todo[0][0] < next_s + window:
                submit(todo.popleft())

        try:
            fill(0)
            for s, a, b, g_lo, g_hi in plan:
                header = np.array([s, a, b, g_lo, g_hi], dtype=np.int64)
                if s not in submitted:
                    if store.load(s, header, sums, g_lo, g_hi):
                        bar.advance(b - a)
                        fill(s + 1)
                        continue
                    submit((s, a, b, g_lo, g_hi))  # unreadable checkpoint file: compute it after all
                while s not in done:
                    fut = next(running)
                    done[futures.pop(fut)] = fut.result()  # re-raises a worker's exception here
                    fut.release()
                combine(sums, done.pop(s), g_lo, g_hi)
                if store is not None:
                    store.save(s, header, sums, g_lo, g_hi)
                bar.advance(b - a)
                fill(s + 1)
        finally:
            if futures:
                client.cancel(list(futures))
            with contextlib.suppress(Exception):
                client.cancel([job_future])
