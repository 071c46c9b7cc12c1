"""NTK benchmark: the forward equation against torch.func autodiff, on the same networks, in one run.

Run ``python benchmarks/bench_ntk.py [--networks E] [--quick] [--full] [--json]``. Nothing is
asserted: wall times depend on the machine and its load, so they are printed as times and *ratios*.

What is timed (issue 4, "NTK at initialization"): the per-network empirical NTK
Ĥ^{(L)}_{i1i2;α1α2} of E networks (default 1,000) of width 256 and depth 8, tanh at criticality
(C_b = 0, C_W = 1, λ_b = λ_W = 1), on N = 8 inputs of dimension 8, computed two ways:

* the forward equation, :func:`pdlt.empirical.ntk.forward_ntk` (numpy, float64): the recursion
  ``measure_ntk`` runs per network, plus unpacking the last layer into the full array;
* torch.func (``jacrev`` + ``vmap``), :func:`pdlt.empirical.ntk.autodiff_ntk` (torch, float64, CPU).

Both return the same array, (E, n_L, n_L, N, N), from the same explicit weights
(:func:`~pdlt.empirical.ntk.sample_parameters`; drawing them is not timed). Two output widths:

1. n_L = 256, the NTK of the full last layer: the quantity the ensemble measures. The target
   (≥ 5× faster than autodiff) is stated for this row.
2. n_L = 8, a small output layer: autodiff needs only n_L·N = 64 backward passes per layer, so it is
   much cheaper there; shown for context.

Autodiff costs about n_L·N backward passes and an (n_L N)×(parameters) Jacobian per layer, so at
n_L = 256 it takes about a minute per network on 2 cores. By default it is therefore timed on the
first n_ad networks only and extrapolated per network (every network costs the same number of
operations): network 0 first, whose time t₁ sets n_ad = ⌈``--ad-budget``/t₁⌉ (at least 1, at most
20; budget 120 s), then the other n_ad − 1 in up to ~10 calls spread evenly between the
forward-equation shards, so that both methods see the same load on a shared machine. The report
says how many were timed. ``--full`` times autodiff on all E networks. On every network timed by
both, the two results are compared: max|Ĥ_fwd − Ĥ_autodiff| / max|Ĥ_autodiff| must be ≤ 1e-10.

Warm-up: one call of each method on a small network first (imports, thread pools).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

import _machine

from pdlt import MLP
from pdlt.empirical import ntk

WIDTH, DEPTH, N_INPUTS, INPUT_DIM = 256, 8, 8, 8
TARGET = 5.0
AGREE = 1e-10
AD_MAX_DEFAULT = 20
AD_BYTES = 2 * 2 ** 30       # autodiff's per-call Jacobian memory (networks per vmap call)


def machine() -> dict:
    import torch

    return _machine.machine(torch_threads=torch.get_num_threads(), torch=torch.__version__)

def network(n_out: int) -> MLP:
    return MLP(input_dim=INPUT_DIM, width=WIDTH, depth=DEPTH, activation="tanh", C_b=0.0, C_W=1.0,
               output_dim=n_out)


def inputs() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((N_INPUTS, INPUT_DIM))


def warm_up(X: np.ndarray) -> None:
    small = MLP(input_dim=INPUT_DIM, width=16, depth=2, activation="tanh", C_b=0.0, C_W=1.0)
    p = ntk.sample_parameters(small, 0, 0, 2)
    ntk.forward_ntk(small, X, p, [2])
    ntk.autodiff_ntk(small, X, p, 2)


def ad_chunk(net: MLP) -> int:
    """Networks per autodiff (vmap) call: its largest Jacobian, n_L N × n²+n floats, under AD_BYTES."""
    jac = net.n(DEPTH) * N_INPUTS * (WIDTH * WIDTH + WIDTH) * 8
    return max(1, AD_BYTES // jac)


def row(n_out: int, networks: int, seed: int, budget: float, full: bool, log) -> dict:
    """Time both methods on networks 0..E−1 (autodiff: the first n_ad), interleaved.

    Autodiff runs on network 0 first; its time t₁ fixes n_ad = ⌈budget/t₁⌉ (1..20; all with
    --full). The remaining n_ad − 1 autodiff networks run in up to ~10 calls spread evenly between
    the forward-equation shards, so both methods see the same machine load on a shared machine.
    """
    net, X = network(n_out), inputs()
    L = net.depth
    cap = ad_chunk(net)
    st = {"t_ad": 0.0, "n_ad": 0, "err": 0.0, "t_fwd": 0.0}

    def autodiff(a: int, b: int) -> None:
        params = ntk.sample_parameters(net, seed, a, b)                      # untimed
        t = time.perf_counter()
        ad = ntk.autodiff_ntk(net, X, params, L, chunk=cap)
        st["t_ad"] += time.perf_counter() - t
        fwd = ntk.forward_ntk(net, X, params, [L])[L][1]                      # untimed: agreement
        st["err"] = max(st["err"], float(np.max(np.abs(fwd - ad)) / np.max(np.abs(ad))))
        st["n_ad"] += b - a

    shard = ntk.default_ntk_shard_size(net, N_INPUTS, L, networks)

    def forward(a: int, b: int) -> None:
        for c in range(a, b, shard):
            params = ntk.sample_parameters(net, seed, c, min(c + shard, b))  # untimed
            t = time.perf_counter()
            ntk.forward_ntk(net, X, params, [L])
            st["t_fwd"] += time.perf_counter() - t

    log(f"  n_L = {n_out}: autodiff, network 0 ...")
    autodiff(0, 1)
    n_ad = networks if full else max(1, min(networks, AD_MAX_DEFAULT, math.ceil(budget / st["t_ad"])))
    left = n_ad - 1
    size = max(1, min(cap, math.ceil(left / 10))) if left else 1
    calls = [(a, min(a + size, n_ad)) for a in range(1, n_ad, size)]
    log(f"  n_L = {n_out}: autodiff {st['t_ad']:.1f} s per network; forward equation on {networks} networks, "
        f"interleaved with {left} more autodiff network(s) in {len(calls)} call(s) ...")
    cuts = [round(i * networks / max(1, len(calls))) for i in range(max(1, len(calls)) + 1)]
    for i in range(len(cuts) - 1):
        forward(cuts[i], cuts[i + 1])
        if i < len(calls):
            autodiff(*calls[i])
    fwd_1000, ad_1000 = 1000 * st["t_fwd"] / networks, 1000 * st["t_ad"] / st["n_ad"]
    ratio = ad_1000 / fwd_1000
    return {"n_L": n_out, "networks": networks, "forward_seconds": st["t_fwd"], "forward_shard": shard,
            "forward_s_per_1000": fwd_1000, "forward_extrapolated": networks != 1000,
            "autodiff_seconds": st["t_ad"], "autodiff_networks": st["n_ad"], "autodiff_chunk": cap,
            "autodiff_calls": 1 + len(calls), "autodiff_s_per_1000": ad_1000,
            "autodiff_extrapolated": st["n_ad"] != 1000, "ratio": ratio, "target": TARGET,
            "verdict": "PASS" if ratio >= TARGET else "MISS", "max_rel_diff": st["err"],
            "agree": st["err"] <= AGREE}


def report(doc: dict) -> None:
    m = doc["machine"]
    print("pdlt NTK benchmark: forward equation vs torch.func autodiff (issue 4)")
    print(_machine.machine_line(doc, f"torch threads {m['torch_threads']}; numpy BLAS {m['numpy_blas']}; "
                                     f"OMP_NUM_THREADS={m['OMP_NUM_THREADS']}"))
    print(f"software: python {m['python']}, numpy {m['numpy']}, torch {m['torch']}, pdlt {m['pdlt']}")
    print(f"networks: width {WIDTH}, depth {DEPTH}, tanh critical (C_b = 0, C_W = 1, λ_b = λ_W = 1), "
          f"N = {N_INPUTS} inputs, float64, CPU; NTK of layer L, (E, n_L, n_L, N, N)\n")
    head = (f"{'n_L':>4s} {'networks':>8s} {'fwd s/1000':>11s} {'autodiff s/1000':>16s} {'AD timed':>8s} "
            f"{'ratio':>8s} {'target':>7s} {'verdict':>7s} {'max rel diff':>13s}")
    print(head)
    print("-" * len(head))
    for r in doc["rows"]:
        mark = "*" if r["autodiff_extrapolated"] else " "
        fmark = "*" if r["forward_extrapolated"] else " "
        print(f"{r['n_L']:4d} {r['networks']:8d} {r['forward_s_per_1000']:10.1f}{fmark} "
              f"{r['autodiff_s_per_1000']:15.1f}{mark} {r['autodiff_networks']:8d} {r['ratio']:7.1f}x "
              f"{'≥' + format(r['target'], 'g') + 'x':>7s} {r['verdict']:>7s} "
              f"{r['max_rel_diff']:9.1e} {'ok' if r['agree'] else 'BAD'}")
    print()
    for r in doc["rows"]:
        if r["autodiff_extrapolated"]:
            print(f"* n_L = {r['n_L']}: autodiff timed on {r['autodiff_networks']} network(s) "
                  f"({r['autodiff_seconds']:.1f} s in {r['autodiff_calls']} call(s) interleaved with the forward "
                  f"shards; ≤ {r['autodiff_chunk']} networks per vmap) and extrapolated to 1000 (same operation "
                  f"count per network); the forward equation "
                  f"{'was extrapolated from' if r['forward_extrapolated'] else 'was timed on all'} "
                  f"{r['networks']} networks ({r['forward_seconds']:.1f} s, shards of {r['forward_shard']}).")
    print(f"max rel diff = max|Ĥ_fwd − Ĥ_autodiff| / max|Ĥ_autodiff| on the networks timed by both "
          f"(ok ≤ {AGREE:g}). The ≥{TARGET:g}x target is stated for n_L = {WIDTH} (the full last layer, what "
          f"the ensemble measures); n_L = 8 is context: autodiff's cost scales with n_L·N, the forward "
          f"equation's hardly with n_L.")
    print(f"\ntotal {doc['total_seconds']:.0f} s")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--networks", type=int, default=None, help="networks for the forward equation (default 1000)")
    p.add_argument("--quick", action="store_true", help="100 networks and a 30 s autodiff budget (≈ 3 min)")
    p.add_argument("--full", action="store_true", help="time autodiff on all networks too (very slow at n_L = 256)")
    p.add_argument("--ad-budget", type=float, default=None,
                   help="seconds of autodiff per row before extrapolating (default 120; --quick 30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON document only")
    a = p.parse_args(argv)
    networks = a.networks or (100 if a.quick else 1000)
    budget = a.ad_budget if a.ad_budget is not None else (30.0 if a.quick else 120.0)
    if networks < 1 or budget < 0:
        p.error("--networks must be >= 1 and --ad-budget >= 0")
    log = (lambda s: None) if a.json else (lambda s: print(s, flush=True))
    t0 = time.perf_counter()
    doc = {"machine": machine(), "width": WIDTH, "depth": DEPTH, "inputs": N_INPUTS, "activation": "tanh",
           "C_b": 0.0, "C_W": 1.0, "seed": a.seed, "ad_budget": budget, "full": a.full}
    log(f"running ({networks} networks per row; autodiff budget {budget:g} s per row"
        f"{', all networks' if a.full else ''}) ...")
    warm_up(inputs())
    doc["rows"] = [row(n_out, networks, a.seed, budget, a.full, log) for n_out in (WIDTH, 8)]
    _machine.finish(doc, t0, a.json, report)


if __name__ == "__main__":
    main()
