"""Scaling benchmark: ensemble throughput against the machine's GEMM peak, and finite-width theory vs N.

Run ``python benchmarks/bench_scaling.py [--quick] [--json]``. Nothing is asserted: wall times depend
on the machine and its load, so they are printed as times, rates and fitted exponents.

Part 1, throughput (issue 7). The machine's float64 GEMM rate is measured with a 2000×2000 numpy
matmul (best of 3, same BLAS thread count as the rest). Then ``pdlt.measure`` (methods gaussian and
naive) and ``pdlt.measure_ntk`` run on E networks (default 1,000; ``--quick`` 200) of width 256,
depth 8, tanh at criticality, on N = 4 inputs of dimension 8. Flop counts:

* naive forward pass: 2·n_ℓ·n_{ℓ−1}·N per layer per network (the matmuls; biases and σ ignored);
* gaussian: the method never multiplies by weights. Per layer it forms Ĝ = C_b + C_W/n σσᵀ
  (2·n·N² flops), an N×N eigh and z = ξ Ĝ^{1/2} (2·n·N²). Its "actual" rate uses 4·n·N² per layer;
  its "naive-equivalent" rate divides the naive flop count by its time (the work it replaces);
* measure_ntk (forward equation): nominal 2·N²·n_ℓ·n_{ℓ−1}² per layer per network, the O(N² n³)
  term of the recursion (its docstring's cost), plus the naive forward pass.

Part 2, finite-width tensors vs N: ``pdlt.theory(net, X, ntk=True)`` (K, V, G1, Θ, A, B, D, F) for
tanh (C_W = 1) and ReLU (C_W = 2), C_b = 0, depth 10, width 64, N random inputs of dimension 8, each
in a fresh subprocess: its wall time and peak-RSS increase (Linux /proc VmHWM, reset after the
imports). The log-log slope of time and memory in N over the largest three N is extrapolated to
the largest N that fits in 24 GiB and in 1 hour.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time

import numpy as np

import _machine

import pdlt
from pdlt import MLP
from pdlt.empirical.ntk import measure_ntk

WIDTH, DEPTH, N_IN, DIM = 256, 8, 4, 8
MEM_BUDGET, TIME_BUDGET = 24 * 2 ** 30, 3600.0


def gemm_gflops(n: int = 2000) -> float:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    a @ b
    best = min(_t(lambda: a @ b) for _ in range(3))
    return 2 * n ** 3 / best / 1e9


def _t(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def throughput(networks: int, peak: float, log) -> list[dict]:
    net = MLP(input_dim=DIM, width=WIDTH, depth=DEPTH, activation="tanh", C_b=0.0, C_W=1.0)
    X = np.random.default_rng(0).standard_normal((N_IN, DIM))
    widths = [DIM] + [net.n(l) for l in range(1, DEPTH + 1)]
    naive = sum(2 * widths[l] * widths[l - 1] * N_IN for l in range(1, DEPTH + 1))
    gauss = sum(4 * widths[l] * N_IN ** 2 for l in range(1, DEPTH + 1))
    ntk_f = naive + sum(2 * N_IN ** 2 * widths[l] * widths[l - 1] ** 2 for l in range(2, DEPTH + 1))
    small = MLP(input_dim=DIM, width=16, depth=2, activation="tanh", C_b=0.0, C_W=1.0)
    for m in ("gaussian", "naive"):
        pdlt.measure(small, X, 64, method=m)
    measure_ntk(small, X, 64)
    rows = []
    for name, f, flops, extra in (
            ("measure gaussian", lambda: pdlt.measure(net, X, networks, method="gaussian"), gauss, naive),
            ("measure naive", lambda: pdlt.measure(net, X, networks, method="naive"), naive, None),
            ("measure_ntk", lambda: measure_ntk(net, X, networks), ntk_f, None)):
        log(f"  {name} on {networks} networks ...")
        t = _t(f)
        r = {"what": name, "networks": networks, "seconds": t, "flops_per_network": flops,
             "gflops": flops * networks / t / 1e9}
        r["fraction_of_peak"] = r["gflops"] / peak
        if extra is not None:
            r["naive_equivalent_gflops"] = extra * networks / t / 1e9
            r["naive_equivalent_fraction"] = r["naive_equivalent_gflops"] / peak
        rows.append(r)
    return rows


_PROBE = """
import json, sys, time
import numpy as np
import pdlt
act, N = sys.argv[1], int(sys.argv[2])
rss = lambda key: int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith(key))) * 1024
X = np.random.default_rng(0).standard_normal((N, 8))
net = pdlt.MLP(8, 64, 10, act, C_b=0.0, C_W=1.0 if act == "tanh" else 2.0)
pdlt.theory(pdlt.MLP(8, 64, 2, act, C_b=0.0, C_W=1.0 if act == "tanh" else 2.0), X[:2], ntk=True)
open("/proc/self/clear_refs", "w").write("5")
r0 = rss("VmRSS:")
t = time.perf_counter()
pdlt.theory(net, X, ntk=True)
t = time.perf_counter() - t
print(json.dumps([t, rss("VmHWM:") - r0]))
"""


def probe(act: str, N: int) -> tuple[float, int]:
    out = subprocess.run([sys.executable, "-c", _PROBE, act, str(N)], capture_output=True, text=True,
                         check=True).stdout
    return tuple(json.loads(out.splitlines()[-1]))


def slope(x, y) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def theory_scaling(Ns: list[int], log) -> list[dict]:
    out = []
    for act in ("tanh", "relu"):
        pts = []
        for N in Ns:
            log(f"  theory(ntk=True), {act}, N = {N} ...")
            t, mem = probe(act, N)
            pts.append({"N": N, "seconds": t, "peak_bytes": mem})
        x = [p["N"] for p in pts[-3:]]
        st = slope(x, [p["seconds"] for p in pts[-3:]])
        sm = slope(x, [max(p["peak_bytes"], 1) for p in pts[-3:]])
        last = pts[-1]
        n_time = last["N"] * (TIME_BUDGET / last["seconds"]) ** (1 / st) if st > 0 else math.inf
        n_mem = last["N"] * (MEM_BUDGET / max(last["peak_bytes"], 1)) ** (1 / sm) if sm > 0 else math.inf
        out.append({"activation": act, "points": pts, "time_exponent": st, "memory_exponent": sm,
                    "N_max_1h": n_time, "N_max_24GiB": n_mem})
    return out


def report(doc: dict) -> None:
    m = doc["machine"]
    print("pdlt scaling benchmark: ensemble throughput vs GEMM peak; finite-width theory vs N (issue 7)")
    print(_machine.machine_line(doc, f"numpy BLAS {m['numpy_blas']}; OPENBLAS_NUM_THREADS={m['OPENBLAS_NUM_THREADS']}"))
    print(f"software: python {m['python']}, numpy {m['numpy']}, pdlt {m['pdlt']}\n")
    print(f"1. Throughput: width {WIDTH}, depth {DEPTH}, tanh critical, N = {N_IN}, float64; "
          f"GEMM peak {doc['gemm_gflops']:.2f} GFLOP/s (2000² matmul)")
    head = f"{'what':>17s} {'networks':>8s} {'s':>8s} {'MFLOP/net':>10s} {'GFLOP/s':>8s} {'of peak':>8s} {'naive-eq GFLOP/s':>17s} {'of peak':>8s}"
    print(head)
    print("-" * len(head))
    for r in doc["throughput"]:
        eq = (f"{r['naive_equivalent_gflops']:17.2f} {100 * r['naive_equivalent_fraction']:7.1f}%"
              if "naive_equivalent_gflops" in r else f"{'-':>17s} {'-':>8s}")
        print(f"{r['what']:>17s} {r['networks']:8d} {r['seconds']:8.2f} {r['flops_per_network'] / 1e6:10.3f} "
              f"{r['gflops']:8.2f} {100 * r['fraction_of_peak']:7.1f}% {eq}")
    print("flops: naive 2·n_ℓ·n_{ℓ−1}·N per layer; gaussian 4·n·N² per layer (σσᵀ and ξĜ^{1/2}; "
          "naive-eq = naive flops / gaussian time); measure_ntk nominal 2·N²·n_ℓ·n_{ℓ−1}² per layer + naive. "
          "Times include everything measure() does (sampling, features, jackknife sums).\n")
    print("2. Finite-width theory pdlt.theory(ntk=True), depth 10, width 64, fresh process per N")
    head = f"{'act':>5s} {'N':>4s} {'s':>9s} {'peak MiB':>9s}"
    print(head)
    print("-" * len(head))
    for s in doc["scaling"]:
        for p in s["points"]:
            print(f"{s['activation']:>5s} {p['N']:4d} {p['seconds']:9.2f} {p['peak_bytes'] / 2 ** 20:9.1f}")
    print()
    for s in doc["scaling"]:
        print(f"{s['activation']}: time ∝ N^{s['time_exponent']:.2f}, memory ∝ N^{s['memory_exponent']:.2f} "
              f"(last three N); largest N in 1 h ≈ {s['N_max_1h']:.0f}, in 24 GiB ≈ {s['N_max_24GiB']:.0f}")
    print("(extrapolations from small N; the memory fit at small N is dominated by fixed overheads)")
    print(f"\ntotal {doc['total_seconds']:.0f} s")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--networks", type=int, default=None, help="networks for part 1 (default 1000; --quick 200)")
    p.add_argument("--ns", type=str, default=None, help="comma-separated N for part 2 (default 2,4,6,8,12)")
    p.add_argument("--quick", action="store_true", help="200 networks, N = 2,3,4,5 (≈ 1–2 min)")
    p.add_argument("--json", action="store_true", help="print one JSON document only")
    a = p.parse_args(argv)
    networks = a.networks or (200 if a.quick else 1000)
    Ns = [int(s) for s in a.ns.split(",")] if a.ns else ([2, 3, 4, 5] if a.quick else [2, 4, 6, 8, 12])
    log = (lambda s: None) if a.json else (lambda s: print(s, flush=True))
    t0 = time.perf_counter()
    doc = {"machine": _machine.machine()}
    log("running ...")
    doc["gemm_gflops"] = gemm_gflops()
    doc["throughput"] = throughput(networks, doc["gemm_gflops"], log)
    doc["scaling"] = theory_scaling(Ns, log)
    _machine.finish(doc, t0, a.json, report)


if __name__ == "__main__":
    main()
