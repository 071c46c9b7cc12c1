"""Foundation benchmark: how fast and how big are pdlt's theory and its Monte Carlo twin?

Run ``python benchmarks/bench_foundation.py [--quick]`` (full < 3 min, --quick < 40 s on 2 cores).
Everything is measured side by side in one run and printed as times and *ratios*; nothing is
asserted (wall times depend on the machine and its load, so they are reported, never tested).

1. Theory speed. K, V, G1 through L = 50 layers of a critical tanh MLP (C_b = 0, C_W = 1, width 64)
   on N = 16 random inputs (dimension 8), with the default quadrature and with ``order4`` = 8, 6
   (the Gauss–Hermite order of the 3-/4-point integrals, which dominate the cost). Accuracy is
   max|V − V_ref| / max|V_ref| at layer 50 on the first 5 inputs, V_ref from order2 = 64,
   order4 = 16 on those 5 inputs (V_abcd depends only on inputs a..d, so the 5-input block of the
   16-input run is directly comparable). Target: < 5 s.
2. Scaling. Theory time for N ∈ {1, 2, 4, 8, 16} at L = 10 and L ∈ {10, 25, 50} at N = 8, fitted
   to time ∝ N^a, ∝ L^b (N ≥ 4: below that fixed overheads dominate). Peak memory is the peak RSS
   increase of a fresh process (Linux /proc; it covers the cold first call, which builds the per-N
   multiset tables). All layers' V (N⁴ floats each) are kept, so peak ≈ (a·L + b)·N⁴·8 bytes plus
   capped quadrature buffers; a and b come from two probes at larger N with cheap quadrature
   (so the N⁴ arrays dominate), and give the largest N that fits 24 GiB at L = 50.
3. Measurement. 1,000 networks (width 256, depth 8, N = 4, ReLU at criticality C_b = 0, C_W = 2):
   method="naive" (explicit weights, O(n² N) per layer) vs "gaussian" (rows drawn from the empirical
   kernel, O(n N²)), the speed-up (target ≥ 20×), and on the same two runs the largest
   |Δ|/√(se₁² + se₂²) over all layers and entries of G and of V: both methods sample the same law, so
   it must be O(1). Also the torch (CPU) backend of the gaussian path, as a ratio to numpy.

Theory times are warm (a depth-2 call first builds the thread pool and the per-N tables); each
time is the best of up to 3 repeats within a small time budget.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
from scipy.stats import t as student

import pdlt
import pdlt.theory
from pdlt import gaussian
from pdlt.empirical import measure
from pdlt.theory import _gauss

GiB = 2 ** 30


def best_time(fn, repeat: int = 3, budget: float = 1.0):
    """(best wall time, last result) over up to ``repeat`` calls, stopping once ``budget`` s are spent."""
    times, out = [], None
    while len(times) < repeat and sum(times) < budget:
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def inputs(N: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((N, 8))


def theory(N: int, L: int, **orders):
    return pdlt.theory.theory(pdlt.MLP(8, 64, L, "tanh", C_b=0.0, C_W=1.0), inputs(N), **orders)


def time_theory(N: int, L: int, budget: float = 1.0, **orders):
    theory(N, 2, **orders)  # warm-up: thread pool and the per-N multiset tables
    return best_time(lambda: theory(N, L, **orders), budget=budget)


_PROBE = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import bench_foundation as b
N, L, orders, sort = json.loads(sys.argv[2])
rss = lambda key: int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith(key))) * 1024
X = b.inputs(N)
b.inputs = lambda n: np.unique(X, axis=0) if sort else X
open("/proc/self/clear_refs", "w").write("5")  # reset the peak-RSS mark (VmHWM) past the imports
r0 = rss("VmRSS:")
t = b.time_theory(N, L, **orders)[0]
print(json.dumps([t, rss("VmHWM:") - r0]))
"""


def probe(N: int, L: int, orders=None, sort=False):
    """(warm theory time in s, peak RSS increase in bytes) in a fresh process; ``sort``: rows of X
    pre-sorted as np.unique orders them (theory() then skips its final reordering copy)."""
    arg = json.dumps([N, L, orders or {}, sort])
    out = subprocess.run([sys.executable, "-c", _PROBE, os.path.dirname(os.path.abspath(__file__)), arg],
                         capture_output=True, text=True, check=True).stdout
    return tuple(json.loads(out.splitlines()[-1]))


def slope(x, y) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def machine() -> None:
    try:
        import torch
        tv = f"{torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        tv = "not installed"
    cpu = platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine : {cpu}; {len(os.sched_getaffinity(0))} cores usable; load average {load}")
    print(f"software: python {platform.python_version()}, numpy {np.__version__}, torch {tv}, "
          f"pdlt {getattr(pdlt, '__version__', '?')}")


def default_orders() -> str:
    E = _gauss.Expectations(pdlt.MLP(1, 1, 1, "tanh").activation)
    if getattr(E, "order4", 0) is None and hasattr(_gauss, "ORDER4_CHOICES"):
        return (f"order2 = {E.order2(1.0)} (K ≤ 4; 48 up to K = 20, then 64); order4 adaptive per layer (smallest of "
                f"{_gauss.ORDER4_CHOICES['smooth']} within {E.tol4:g} of order {_gauss.ORDER4_REFERENCE})")
    o = gaussian.ORDERS["smooth"]
    return f"order2 = {E.order2(1.0)}; order4 = {o[3]} (3-point), {o[4]} (4-point)"


def section_theory(N: int, budget: float) -> None:
    L = 50
    print(f"\n[1] theory: K, V, G1, tanh critical, width 64, N = {N}, L = {L}\n"
          f"    default: {default_orders()}; order4 = k fixes both 3- and 4-point orders to k")
    ref = theory(5, L, order2=64, order4=16).layer(L).V
    rows = []
    for label, kw in [("default", {}), ("order4=8", {"order4": 8}), ("order4=6", {"order4": 6})]:
        t, th = time_theory(N, L, budget=budget, **kw)
        V = th.layer(L).V[:5, :5, :5, :5]
        rows.append((label, t, float(np.max(np.abs(V - ref)) / np.max(np.abs(ref)))))
    t0 = rows[0][1]
    print(f"  {'quadrature':10s} {'time s':>8s} {'ms/layer':>9s} {'vs default':>10s} {'rel dV(50)':>11s}")
    for label, t, err in rows:
        print(f"  {label:10s} {t:8.2f} {1e3 * t / (L - 1):9.1f} {t / t0:9.2f}x {err:11.1e}")
    scope = "" if N == 16 else f" (the target is for N = 16; this run has N = {N})"
    fast = [lab for lab, t, _ in rows if t < 5]
    print(f"  target < 5 s at default orders: {'MET' if t0 < 5 else 'NOT MET'} ({t0:.1f} s){scope}; "
          f"under 5 s: {', '.join(fast) or 'none'}")


def section_scaling(Ns, N_fixed: int, Ls, N_probe: int) -> None:
    print(f"\n[2] theory scaling (default orders): N sweep at L = 10, L sweep at N = {N_fixed}")
    grid = {p: probe(*p) for p in [(N, 10) for N in Ns] + [(N_fixed, L) for L in Ls if L != 10]}
    print(f"  {'N':>3s} {'L':>3s} {'time s':>8s} {'peak MB':>9s} {'kept V MB':>10s}")
    for (N, L), (t, peak) in grid.items():
        print(f"  {N:3d} {L:3d} {t:8.3f} {peak / 1e6:9.1f} {L * N ** 4 * 8 / 1e6:10.3f}")
    big = [N for N in Ns if N >= 4]
    print(f"  time ∝ N^{slope(big, [grid[(N, 10)][0] for N in big]):.2f} (N ≥ 4; V has N⁴ entries), "
          f"∝ L^{slope(Ls, [grid[(N_fixed, L)][0] for L in Ls]):.2f} (N = {N_fixed})")
    # memory probes: cheap quadrature (order2 = 8, order4 = 2) so that the N⁴ arrays dominate
    cheap = {"order2": 8, "order4": 2}
    units = N_probe ** 4 * 8
    # L = 35 and 50: long enough that the kept layers, not the cold multiset-table build, set the peak
    m35, m50 = (probe(N_probe, L, cheap)[1] / units for L in (35, 50))
    s50 = probe(N_probe, 50, cheap, sort=True)[1] / units
    a = (m50 - m35) / 15
    b = m50 - 50 * a
    copy = (m50 - s50) / 50
    Nq = max(Ns)
    buffers = max(0.0, grid[(Nq, 10)][1] - (10 * a + b) * Nq ** 4 * 8)
    print(f"  memory probes, N = {N_probe}, cheap orders: peak = {m35:.1f}·N⁴·8 at L = 35, {m50:.1f}·N⁴·8 at "
          f"L = 50, {s50:.1f}·N⁴·8 at L = 50 with pre-sorted inputs")
    print(f"  → peak ≈ ({a:.2f}·L + {b:.1f})·N⁴·8, of which {copy:.2f}·L·N⁴·8 is theory()'s final copy of "
          f"all layers for unsorted inputs; quadrature buffers at default orders ≈ {buffers / 1e6:.0f} MB "
          f"(N = {Nq}, L = 10)")
    n_max = lambda per: int(((24 * GiB - buffers) / (per * 8)) ** 0.25)
    print(f"  largest N in 24 GiB at L = 50: {n_max(50 * a + b)} (unsorted inputs), "
          f"{n_max(50 * (a - copy) + b)} (pre-sorted), {n_max(50)} counting only the kept V's (L·N⁴·8)")


def section_measure(networks: int) -> None:
    net, X = pdlt.MLP(8, 256, 8, "relu", C_b=0.0, C_W=2.0), inputs(4)
    print(f"\n[3] measurement: {networks} networks, width 256, depth 8, N = 4, ReLU critical, CPU")
    runs = [("naive", "numpy", 1), ("gaussian", "numpy", 3), ("gaussian", "torch", 3)]
    try:
        import torch  # noqa: F401
    except ImportError:
        runs.pop()
    res = {}
    for method, backend, rep in runs:
        go = lambda n, s: measure(net, X, networks=n, seed=s, method=method, backend=backend, progress=False)
        go(64, 99)  # warm-up (imports, thread pools)
        res[method, backend] = best_time(lambda: go(networks, 1 if method == "naive" else 2), repeat=rep)
    t_gauss = res["gaussian", "numpy"][0]
    for (method, backend), (t, _) in res.items():
        print(f"  {method:8s} {backend:5s} {t:8.2f} s   {t / t_gauss:6.2f}x the numpy gaussian time")
    speed = res["naive", "numpy"][0] / t_gauss
    print(f"  gaussian speed-up over naive: {speed:.1f}x (target ≥ 20x: {'MET' if speed >= 20 else 'NOT MET'})")
    mn, mg = res["naive", "numpy"][1], res["gaussian", "numpy"][1]
    N, L = X.shape[0], net.depth
    P = N * (N + 1) // 2
    for name, distinct in (("G", P), ("V", P * (P + 1) // 2)):
        z = []
        for l in range(1, L + 1):
            e1, e2 = getattr(mn.layer(l), name), getattr(mg.layer(l), name)
            se = np.sqrt(e1.stderr ** 2 + e2.stderr ** 2)
            z.append(np.abs(e1.mean - e2.mean)[se > 0] / se[se > 0])
        n = distinct * L
        q99 = student.ppf((1 + 0.99 ** (1 / n)) / 2, df=2 * (mn.groups - 1))
        print(f"  naive vs gaussian, {name}: max |z| = {np.max(np.concatenate(z)):.2f} over {n} distinct entries "
              f"(99% of maxima of {n} independent |t_{2 * (mn.groups - 1)}| are < {q99:.2f})")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes (< 40 s)")
    quick = p.parse_args(argv).quick
    t = time.perf_counter()
    print(f"pdlt foundation benchmark{' (--quick)' if quick else ''}")
    machine()
    section_theory(8 if quick else 16, 1.5 if quick else 10.0)
    section_scaling([1, 2, 4, 8] if quick else [1, 2, 4, 8, 16], 4 if quick else 8, [10, 25, 50],
                    20 if quick else 24)
    section_measure(250 if quick else 1000)
    print(f"\ntotal {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
