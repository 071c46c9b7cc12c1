"""Every theory has its empirical twin: the observables table checked on real network ensembles.

One common test walks :data:`pdlt.observables.TABLE` (G = E[zz] vs K + G1/n, and V) over
activations at and off criticality, N = 1 and 3 inputs, widths 32 and 256, depth 8. Agreement means
|measured − theory| ≤ 4·stderr + the explicit O(1/n²) allowance of the table, for every entry of
every layer.  The tolerance was chosen by running the suite over seeds 0..19 once (see
``PDLT_TWIN_SEEDS`` below) and checking that a correct formula passes for (nearly) all of them, and
the sensitivity tests show that plausible wrong formulas fail.
"""

import os
from unittest import mock

import numpy as np
import pytest

import pdlt.theory
from pdlt import MLP
from pdlt.empirical import measure
from pdlt.estimate import _line_fit
from pdlt.observables import TABLE, compare, family_threshold

K_SIGMA = 4.0   # the floor; the family-wise (Bonferroni) threshold is used over many entries

#: (activation, C_b, C_W): each at criticality and off it (formula sheet §3).
CONFIGS = [
    ("relu", 0.0, 2.0), ("relu", 0.3, 1.5),
    ("tanh", 0.0, 1.0), ("tanh", 0.2, 1.6),
    ("sin", 0.0, 1.0), ("sin", 0.1, 1.3),
    ("gelu", 0.172922391, 1.98305826), ("gelu", 0.3, 1.5),
    ("linear", 0.0, 1.0), ("linear", 0.2, 0.9),
]

INPUTS = np.array([[1.0, 0.3, -0.5, 0.2], [-0.4, 1.1, 0.6, -0.3], [0.5, -0.2, 0.9, 1.2]])
SEEDS = [int(s) for s in os.environ.get("PDLT_TWIN_SEEDS", "7").split(",")]


def networks_for(width: int) -> int:
    # equal statistical power per layer at both widths: stderr of V ~ K²·sqrt(n/E)·O(1)
    return 4000 if width <= 64 else 6000


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("width", [32, 256])
@pytest.mark.parametrize("N", [1, 3])
@pytest.mark.parametrize("act, C_b, C_W", CONFIGS)
def test_twins_agree(act, C_b, C_W, N, width, seed):
    net = MLP(4, width, 8, act, C_b=C_b, C_W=C_W)
    X = INPUTS[:N]
    th = pdlt.theory(net, X)
    m = measure(net, X, networks=networks_for(width), seed=seed, progress=False)
    rows = compare(th, m)
    assert {r.name for r in rows} == {t.name for t in TABLE}
    # the 1/n expansion must hold at most layers, or the check would be vacuous
    assert sum(r.valid for r in rows) >= len(rows) // 2
    k = family_threshold(rows)
    bad = [(r.name, r.layer, round(r.max_abs_z(), 2)) for r in rows if r.valid and not r.ok(k)]
    assert not bad, f"twins disagree beyond {k:.2f}σ + O(1/n²) allowance: {bad}"


# ---------------------------------------------------------------------------------------------
# The tolerance is not vacuous: plausible wrong formulas fail the same comparison.


def _replace(state, **fields):
    from pdlt.theory import LayerState
    kw = {"layer": state.layer, "n_prev": state.n_prev, "K": state.K, "V": state.V, "G1": state.G1}
    kw.update(fields)
    return LayerState(**kw)


class _Patched:
    """A Theory whose layer states are altered by ``fn`` (a deliberately wrong formula)."""

    def __init__(self, th, fn):
        self.net, self._th, self._fn = th.net, th, fn

    def layer(self, ell):
        return self._fn(self._th.layer(ell))


@pytest.mark.parametrize("wrong, act, C_b, C_W, width, N", [
    # ν = 4 instead of 5 for ReLU (a wrong genesis coefficient)
    (lambda s: _replace(s, V=0.8 * s.V), "relu", 0.0, 2.0, 128, 1),
    # a 25% error in the vertex of ReLU off criticality, multi-input
    (lambda s: _replace(s, V=1.25 * s.V), "relu", 0.3, 1.5, 64, 3),
    # a 15% error in the vertex of tanh at criticality
    (lambda s: _replace(s, V=0.85 * s.V), "tanh", 0.0, 1.0, 64, 3),
])
def test_wrong_formulas_fail(wrong, act, C_b, C_W, width, N):
    net = MLP(4, width, 8, act, C_b=C_b, C_W=C_W)
    X = INPUTS[:N]
    th = pdlt.theory(net, X)
    m = measure(net, X, networks=networks_for(width), seed=SEEDS[0], progress=False)
    rows = compare(th, m)
    k = family_threshold(rows)
    assert all(r.ok(k) for r in rows if r.valid)
    assert not all(r.ok(k) for r in compare(_Patched(th, wrong), m) if r.valid)


def test_non_uniform_widths_twin():
    """The n_ℓ/n_{ℓ−1} factors of the recursions, checked on a network with alternating widths."""
    net = MLP(widths=[4, 48, 192, 48, 192, 48, 64], activation="tanh", C_b=0.1, C_W=1.3)
    th = pdlt.theory(net, INPUTS)
    m = measure(net, INPUTS, networks=6000, seed=SEEDS[0], progress=False)
    k = family_threshold(compare(th, m))
    assert all(r.ok(k) for r in compare(th, m) if r.valid)
    # …and the same recursions with the width ratio dropped (r = 1) are caught
    import pdlt.theory.network as network
    real_v, real_g = network.vertex_step, network.g1_step
    with mock.patch.object(network, "vertex_step", lambda K, V, C_W, r, E, d2=None: real_v(K, V, C_W, 1.0, E, d2)), \
         mock.patch.object(network, "g1_step", lambda K, V, G1, C_W, r, E, coeffs=None: real_g(K, V, G1, C_W, 1.0, E, coeffs)):
        wrong = pdlt.theory(net, INPUTS)
    assert not np.allclose(wrong.layer(6).V, th.layer(6).V)
    assert not all(r.ok(k) for r in compare(wrong, m) if r.valid)


# ---------------------------------------------------------------------------------------------
# Width sweep: the measured E[zz] minus (K + G1/n) shrinks faster than 1/n.


def _fit_a_plus_b_over_n(ns, y, se):
    """Weighted least squares y = a + b/n; returns (a, σ_a)."""
    return _line_fit(1.0 / ns, y, se)[:2]


FULL = os.environ.get("PDLT_SLOW") == "full"
#: (activation, C_b, C_W, depth, widths, networks per unit width); PDLT_SLOW=full doubles both.
SWEEPS = [("tanh", 0.0, 1.0, 10, [32, 64, 128], 340), ("relu", 0.0, 2.0, 6, [48, 96, 192], 200)]


def _sweep(act, C_b, C_W, L, widths, per_width, seed=11):
    """n·(E[zz] − K) and its stderr at layer L over the widths, with the theory's G1 (width-independent)."""
    if FULL:
        widths, per_width = widths + [2 * widths[-1]], 2 * per_width
    D, se, G1 = [], [], None
    for n in widths:
        net = MLP(4, n, L, act, C_b=C_b, C_W=C_W)
        s = pdlt.theory(net, INPUTS).layer(L)
        g = measure(net, INPUTS, networks=per_width * n, seed=seed, progress=False).layer(L).G
        D.append(n * (g.mean - s.K))
        se.append(n * g.stderr)
        G1 = s.G1
    return np.array(widths, dtype=float), np.array(D), np.array(se), G1


def _sweep_verdict(ns, D, se, G1):
    """Fits n·(E[zz] − K − G1/n) = a + b/n per entry: (all |a| ≤ 4σ_a, G1 resolved somewhere)."""
    ok, resolved = True, False
    for a, b in zip(*np.triu_indices(D.shape[1])):
        aR, sR = _fit_a_plus_b_over_n(ns, D[:, a, b] - G1[a, b], se[:, a, b])
        aD, sD = _fit_a_plus_b_over_n(ns, D[:, a, b], se[:, a, b])
        ok &= abs(aR) <= K_SIGMA * sR
        resolved |= abs(aD) > K_SIGMA * sD
    return ok, resolved


@pytest.fixture(scope="module", params=SWEEPS, ids=lambda p: p[0])
def sweep(request):
    return request.param, _sweep(*request.param)


@pytest.mark.slow
def test_width_sweep_residual_shrinks_faster_than_1_over_n(sweep):
    """n·(E[zz] − K − G1/n) → 0 (no 1/n term left: the residual shrinks faster than 1/n), and
    n·(E[zz] − K) → G1 ≠ 0 is resolved, so the check has power."""
    _, (ns, D, se, G1) = sweep
    ok, resolved = _sweep_verdict(ns, D, se, G1)
    assert ok and resolved


@pytest.mark.slow
@pytest.mark.parametrize("wrong", [lambda g: 0 * g, lambda g: -g],
                         ids=["G1=0", "sign"])
def test_width_sweep_rejects_wrong_G1(sweep, wrong):
    _, (ns, D, se, G1) = sweep
    assert not _sweep_verdict(ns, D, se, wrong(G1))[0]
