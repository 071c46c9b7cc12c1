"""Peers benchmark: pdlt's infinite-width K^{(L)}, Θ^{(L)} against neural-tangents, in one run.

Run ``python benchmarks/bench_peers.py [--nt-python PATH] [--quick] [--json]``. Nothing is asserted:
wall times depend on the machine and its load, so they are printed as times and *ratios*.

What is timed (issue 7): the output-layer NNGP kernel K^{(L)} and NTK mean Θ^{(L)} of a depth-10
network on N random inputs of dimension n_0 = 10 (float64, CPU), for ReLU, erf and the exact GELU
(closed-form Gaussian moments in both libraries), and SWISH σ(z) = z·sigmoid(z), a quadrature
activation in both (pdlt: its 2-D polar rule per pair; neural-tangents: ``ElementwiseNumerical``,
Gauss–Hermite of degree 25). pdlt uses the K/Θ-only pairwise path
:func:`pdlt.theory.bayes.kernel_blocks` (``ntk=True``), never ``pdlt.theory`` (which also builds
N⁴ vertex tensors). neural-tangents runs ``stax.serial(Dense(W_std, b_std, parameterization='ntk'),
act(), ..., Dense)`` and ``kernel_fn(X, None, ('nngp', 'ntk'))`` with x64 enabled.

Conventions: neural-tangents' 'ntk' parameterization with W_std² = C_W, b_std² = C_b is pdlt with
λ_W = C_W, λ_b = C_b (pdlt's default; the same mapping as tests/peers/test_neural_tangents.py).

neural-tangents is never a pdlt dependency: it runs in its own virtual environment, found from
``--nt-python`` (default: the environment variable PDLT_NT_PYTHON). This file is its worker too
(``--nt-worker IN OUT``; no pdlt import there); inputs and results go through .npy/.npz files read
with ``allow_pickle=False``. The worker reports the JAX import time, the first ``kernel_fn`` call
(tracing and per-op compilation included), a warm second call, and a ``jax.jit``-compiled call
(first = compile + run, then warm).

Default sizes: N = 1000 for ReLU, erf and GELU; SWISH at a smaller N (``--n-quad``, default 100), both
libraries on the same inputs, since per-pair quadrature costs ~10³ times a closed form; pdlt's time
at N = 1000 is extrapolated by the pair count (N(N−1)/2), marked ``*``. ``--quick``: N = 300 and 40.
For ReLU the benchmark also checks the diagonal of Θ against the exact scalar recursion (both
libraries), since that is where they differ.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import _machine

N0, DEPTH = 10, 10
AGREE = 1e-8
TARGET = 1.0
NT_DEG = 25   # neural-tangents' ElementwiseNumerical degree ("a good place to start", its docstring)
# (pdlt registry name, neural-tangents stax layer, C_b, C_W)
CASES = [("relu", "Relu", 0.1, 2.0), ("erf", "Erf", 0.2, 1.5), ("gelu", "Gelu", 0.1, 1.8),
         ("swish", f"Numerical{NT_DEG}", 0.1, 1.8)]
QUADRATURE = {"swish"}   # no closed form in either library: pdlt's 2-D polar rule, NT's Gauss–Hermite


# ------------------------------------------------------------------------ neural-tangents side
def nt_worker(src: str, dst: str) -> None:
    t0 = time.perf_counter()
    import jax
    jax.config.update("jax_enable_x64", True)
    from neural_tangents import stax
    t_import = time.perf_counter() - t0
    X = np.load(src + ".X.npy", allow_pickle=False)
    spec = json.load(open(src + ".json"))
    if spec["layer"].startswith("Numerical"):
        deg = int(spec["layer"][len("Numerical"):])
        act = lambda: stax.ElementwiseNumerical(fn=lambda x: x * jax.nn.sigmoid(x), deg=deg)  # noqa: E731
    else:
        act = getattr(stax, spec["layer"])
    kw = {"approximate": False} if spec["layer"] == "Gelu" else {}
    dense = lambda: stax.Dense(512, W_std=spec["C_W"] ** 0.5, b_std=spec["C_b"] ** 0.5,  # noqa: E731
                               parameterization="ntk")
    layers = [dense()]
    for _ in range(spec["depth"] - 1):
        layers += [act(**kw), dense()]
    _, _, kernel_fn = stax.serial(*layers)

    def timed(f):
        t = time.perf_counter()
        k = f()
        k.nngp.block_until_ready(), k.ntk.block_until_ready()
        return time.perf_counter() - t, k

    t_first, _ = timed(lambda: kernel_fn(X, None, ("nngp", "ntk")))
    t_warm, k = timed(lambda: kernel_fn(X, None, ("nngp", "ntk")))
    jitted = jax.jit(kernel_fn, static_argnames="get")
    t_jit_first, _ = timed(lambda: jitted(X, None, ("nngp", "ntk")))
    t_jit_warm, _ = timed(lambda: jitted(X, None, ("nngp", "ntk")))
    np.save(dst + ".K.npy", np.asarray(k.nngp, dtype=np.float64))
    np.save(dst + ".T.npy", np.asarray(k.ntk, dtype=np.float64))
    json.dump({"import": t_import, "first": t_first, "warm": t_warm, "jit_first": t_jit_first,
               "jit_warm": t_jit_warm, "jax": jax.__version__, "devices": str(jax.devices()),
               "nt": __import__("neural_tangents").__version__}, open(dst + ".json", "w"))


def run_nt(nt_python: str, X: np.ndarray, layer: str, C_b: float, C_W: float, tmp: str):
    src, dst = os.path.join(tmp, f"in_{layer}"), os.path.join(tmp, f"out_{layer}")
    np.save(src + ".X.npy", X)
    json.dump({"layer": layer, "C_b": C_b, "C_W": C_W, "depth": DEPTH}, open(src + ".json", "w"))
    t = time.perf_counter()
    subprocess.run([nt_python, os.path.abspath(__file__), "--nt-worker", src, dst], check=True,
                   capture_output=True, timeout=3600)
    wall = time.perf_counter() - t
    info = json.load(open(dst + ".json"))
    info["process_wall"] = wall
    return np.load(dst + ".K.npy", allow_pickle=False), np.load(dst + ".T.npy", allow_pickle=False), info


# ------------------------------------------------------------------------ pdlt side
def run_pdlt(X: np.ndarray, act: str, C_b: float, C_W: float):
    import pdlt
    from pdlt.theory.bayes import kernel_blocks

    net = pdlt.MLP(N0, 512, DEPTH, act, C_b=C_b, C_W=C_W)
    kernel_blocks(net, X[:3], ntk=True)                            # warm-up: imports, tables
    t = time.perf_counter()
    kb = kernel_blocks(net, X, ntk=True)
    return time.perf_counter() - t, kb.train, kb.Theta_train


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def relu_exact_diagonal(X: np.ndarray, C_b: float, C_W: float) -> np.ndarray:
    """Θ^{(L)}_{αα} of ReLU from the scalar recursion, independent of both libraries:
    K' = C_b + C_W K/2, Θ' = λ_b + λ_W K/2 + C_W Θ/2 (⟨σ²⟩ = K/2, ⟨σ'²⟩ = 1/2), λ = C."""
    K = C_b + C_W * np.einsum("ij,ij->i", X, X) / X.shape[1]
    T = K.copy()
    for _ in range(DEPTH - 1):
        K, T = C_b + C_W * K / 2, C_b + C_W * K / 2 + C_W * T / 2
    return T


def row(act, layer, C_b, C_W, N, N_target, nt_python, tmp, log) -> dict:
    X = np.random.default_rng(0).standard_normal((N, N0))
    log(f"  {act}: pdlt on N = {N} ...")
    t_p, K, T = run_pdlt(X, act, C_b, C_W)
    r = {"activation": act, "nt_layer": layer, "C_b": C_b, "C_W": C_W, "N": N, "pdlt_s": t_p}
    scale = (N_target * (N_target - 1)) / (N * (N - 1))
    r["N_target"], r["pdlt_s_at_target"] = N_target, t_p * scale
    if nt_python:
        log(f"  {act}: neural-tangents on N = {N} ...")
        Kn, Tn, info = run_nt(nt_python, X, layer, C_b, C_W, tmp)
        r["nt"] = info
        r["ratio_warm"] = info["warm"] / t_p
        r["ratio_jit_warm"] = info["jit_warm"] / t_p
        r["ratio_first"] = info["first"] / t_p
        r["K_rel_diff"], r["Theta_rel_diff"] = rel(K, Kn), rel(T, Tn)
        off = ~np.eye(N, dtype=bool)
        r["Theta_rel_diff_offdiag"] = float(np.max(np.abs(T - Tn)[off]) / np.max(np.abs(Tn)))
        r["agree"] = max(r["K_rel_diff"], r["Theta_rel_diff"]) <= AGREE
        if act == "relu":  # which side is off on the diagonal (arccos near ρ = 1 amplifies rounding)
            exact = relu_exact_diagonal(X, C_b, C_W)
            r["Theta_diag_rel_err_pdlt"] = rel(np.diag(T), exact)
            r["Theta_diag_rel_err_nt"] = rel(np.diag(Tn), exact)
    return r


def report(doc: dict) -> None:
    m = doc["machine"]
    print("pdlt peers benchmark: infinite-width K^(L), Θ^(L) vs neural-tangents (issue 7)")
    print(_machine.machine_line(doc, f"OPENBLAS_NUM_THREADS={m['OPENBLAS_NUM_THREADS']}"))
    nt = next((r["nt"] for r in doc["rows"] if "nt" in r), None)
    print(f"software: python {m['python']}, numpy {m['numpy']}, pdlt {m['pdlt']}"
          + (f"; neural-tangents {nt['nt']}, jax {nt['jax']} ({nt['devices']}; import {nt['import']:.1f} s)"
             if nt else "; neural-tangents: not run (no --nt-python / PDLT_NT_PYTHON)"))
    print(f"networks: depth {DEPTH}, n_0 = {N0}, random normal inputs, float64, CPU; K^(L) and Θ^(L), "
          f"(N, N); pdlt: kernel_blocks(ntk=True)\n")
    head = (f"{'act':>5s} {'N':>5s} {'pdlt s':>8s} {'NT 1st s':>9s} {'NT warm s':>10s} {'NT jit1 s':>10s} "
            f"{'NT jit s':>9s} {'NT/pdlt':>8s} {'jit/pdlt':>9s} {'K rel':>8s} {'Θ rel':>8s} "
            f"{'pdlt s @' + str(doc['N_target']):>12s}")
    print(head)
    print("-" * len(head))
    for r in doc["rows"]:
        ext = f"{r['pdlt_s_at_target']:11.1f}{'*' if r['N'] != r['N_target'] else ' '}"
        if "nt" in r:
            n = r["nt"]
            print(f"{r['activation']:>5s} {r['N']:5d} {r['pdlt_s']:8.2f} {n['first']:9.2f} {n['warm']:10.2f} "
                  f"{n['jit_first']:10.2f} {n['jit_warm']:9.2f} {r['ratio_warm']:7.2f}x {r['ratio_jit_warm']:8.2f}x "
                  f"{r['K_rel_diff']:8.1e} {r['Theta_rel_diff']:8.1e} {ext}")
        else:
            print(f"{r['activation']:>5s} {r['N']:5d} {r['pdlt_s']:8.2f} {'-':>9s} {'-':>10s} {'-':>10s} "
                  f"{'-':>9s} {'-':>8s} {'-':>9s} {'-':>8s} {'-':>8s} {ext}")
    print()
    print(f"NT/pdlt = NT warm (second, un-jitted) kernel_fn time / pdlt time; jit/pdlt the same for "
          f"jax.jit(kernel_fn) warm. Target ≥ {TARGET:g}x at equal accuracy (K rel, Θ rel = "
          f"max|pdlt − NT| / max|NT| ≤ {AGREE:g}). NT 1st includes tracing and per-op compilation "
          f"(not the import); NT jit1 = jit compile + first run. '*': pdlt time extrapolated to "
          f"N = {doc['N_target']} by the pair count N(N−1)/2. pdlt runs single-threaded numpy "
          f"(elementwise over pairs); XLA uses its own CPU thread pool.")
    for r in doc["rows"]:
        if "Theta_diag_rel_err_nt" in r:
            print(f"{r['activation']}: Θ off the diagonal agrees to {r['Theta_rel_diff_offdiag']:.1e}; on the diagonal, "
                  f"against the exact scalar recursion, pdlt is off by {r['Theta_diag_rel_err_pdlt']:.1e} and "
                  f"neural-tangents by {r['Theta_diag_rel_err_nt']:.1e} (its arccos at ρ = 1).")
    print(f"\ntotal {doc['total_seconds']:.0f} s")


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--nt-worker"]:
        nt_worker(argv[1], argv[2])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nt-python", default=os.environ.get("PDLT_NT_PYTHON"),
                   help="python of a neural-tangents environment (default $PDLT_NT_PYTHON)")
    p.add_argument("--n", type=int, default=None, help="inputs for ReLU, erf, GELU (default 1000; --quick 300)")
    p.add_argument("--n-quad", type=int, default=None, help="inputs for SWISH (default 100; --quick 40)")
    p.add_argument("--quick", action="store_true", help="smaller N (≈ 1 min)")
    p.add_argument("--json", action="store_true", help="print one JSON document only")
    a = p.parse_args(argv)
    N = a.n or (300 if a.quick else 1000)
    Nq = a.n_quad or (40 if a.quick else 100)
    log = (lambda s: None) if a.json else (lambda s: print(s, flush=True))
    t0 = time.perf_counter()
    doc = {"machine": _machine.machine(), "depth": DEPTH, "n0": N0, "N_target": N, "cases": CASES}
    log(f"running (N = {N} closed form, {Nq} quadrature; neural-tangents: {a.nt_python or 'none'}) ...")
    with tempfile.TemporaryDirectory() as tmp:
        doc["rows"] = [row(act, layer, C_b, C_W, Nq if act in QUADRATURE else N, N, a.nt_python, tmp, log)
                       for act, layer, C_b, C_W in CASES]
    _machine.finish(doc, t0, a.json, report)


if __name__ == "__main__":
    main()
