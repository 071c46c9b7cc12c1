"""The NTK has its empirical twin: Θ, A, B, D, F of ``pdlt.theory(..., ntk=True)`` against
``pdlt.empirical.measure_ntk`` on real network ensembles (book Ch. 8; formula sheet §5).

1. A twin matrix: ReLU, tanh and GELU at criticality, N = 1 and 3 inputs, widths 32 and 96 (and 256,
   slow), depth 4, λ_b = 0.5, λ_W = 1; every valid row of :func:`pdlt.observables.compare` agrees
   within the family-wise (Bonferroni) threshold plus the table's explicit O(1/n) allowance. One
   cell is judged differently (:data:`NOT_JUDGED`): tanh's A at N = 1, n = 32, checked by 3.
2. A width sweep (slow): for tanh at criticality, N = 1, layer 3, the normalized NTK fluctuation
   n·Var(Ĥ_ii)/Θ² = (A + 2B)/Θ² tends to the theory's value with a residual that shrinks with n
   (weighted fit a + b/n, |a − theory| ≤ 4σ_a), and Var(Ĥ_ii) itself scales as 1/n.
3. tanh's A alone (slow): small by cancellation, so its O(1/n) correction exceeds the table's
   allowance ε·|A|; a width sweep n = 16, 32, 64 extrapolates to the theory.

Tolerances were checked by running every statistical test over seeds 0..4 (``PDLT_TWIN_SEEDS``).
"""

import os

import numpy as np
import pytest

import pdlt
from pdlt import MLP
from pdlt.empirical import ntk
from pdlt.estimate import _line_fit
from pdlt.observables import NTK_ROWS, compare, family_threshold

K_SIGMA = 4.0
LAMBDA_B, LAMBDA_W = 0.5, 1.0
DEPTH = 4

#: (activation, C_b, C_W), each at criticality (formula sheet §3).
CONFIGS = [("relu", 0.0, 2.0), ("tanh", 0.0, 1.0), ("gelu", 0.172922391, 1.98305826)]

INPUTS = np.array([[1.0, 0.3, -0.5, 0.2], [-0.4, 1.1, 0.6, -0.3], [0.5, -0.2, 0.9, 1.2]])
SEEDS = [int(s) for s in os.environ.get("PDLT_TWIN_SEEDS", "7").split(",")]
FULL_MATRIX = os.environ.get("PDLT_SLOW") == "full"


def networks_for(width: int, N: int) -> int:
    # measure_ntk costs O(N² n³) per network and layer: fewer networks for the widest, N = 3 case
    if width <= 32:
        return 2000
    return 2000 if N == 1 else 1200


def _check_twins(act, C_b, C_W, N, width, seed, networks, skip=()):
    net = MLP(4, width, DEPTH, act, C_b=C_b, C_W=C_W, lambda_b=LAMBDA_B, lambda_W=LAMBDA_W)
    X = INPUTS[:N]
    th = pdlt.theory(net, X, ntk=True)
    m = ntk.measure_ntk(net, X, networks, seed=seed, groups=20, progress=False)
    rows = compare(th, m)
    assert {r.name for r in rows} == {"G"} | set(NTK_ROWS)
    ntk_rows = [r for r in rows if r.name in NTK_ROWS]
    # the 1/n expansion must hold at most layers, or the check would be vacuous
    assert sum(r.valid for r in ntk_rows) >= len(ntk_rows) // 2
    judged = [r for r in rows if (r.name, r.layer) not in skip]
    k = family_threshold(judged)
    bad = [(r.name, r.layer, round(r.max_abs_z(), 2)) for r in judged if r.valid and not r.ok(k)]
    assert not bad, f"NTK twins disagree beyond {k:.2f}σ + O(1/n) allowance: {bad}"


#: (activation, N, width) → rows not judged at that width, each with the test that checks it instead.
#: tanh's A is small by cancellation (A = 0.037 against Θ² = 2.56 at ℓ = 3), so its first neglected
#: order, measured as n·(A_meas − A) = 0.39 ± 0.04 (test_tanh_A_width_sweep), is ~6× the table's
#: allowance ε·|A| at every width: at n = 32 that is ~1σ of the jackknife error, enough to fail
#: 3 seeds in 5. The width sweep resolves it instead: A_meas = a + b/n with a equal to the theory.
NOT_JUDGED = {("tanh", 1, 32): {("A", 2), ("A", 3), ("A", 4)}}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("width", [32, 96])
@pytest.mark.parametrize("N", [1, 3])
@pytest.mark.parametrize("act, C_b, C_W", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_ntk_twins_agree(act, C_b, C_W, N, width, seed):
    _check_twins(act, C_b, C_W, N, width, seed, networks_for(width, N), NOT_JUDGED.get((act, N, width), ()))


# the widest networks of the matrix: O(N² n³) per network and layer, so slow; CI (reduced) runs N = 1
# for every activation (three inputs at widths 32 and 96 are in the fast matrix above), full also N = 3
WIDE = [(c, N) for c in CONFIGS for N in (1, 3) if FULL_MATRIX or N == 1]


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("config, N", WIDE, ids=[f"{c[0]}-N{N}" for c, N in WIDE])
def test_ntk_twins_agree_at_width_256(config, N, seed):
    act, C_b, C_W = config
    _check_twins(act, C_b, C_W, N, 256, seed, 1200 if N == 1 or FULL_MATRIX else 600)


# ---------------------------------------------------------------------------------------------
# Width sweep: n·Var(Ĥ_ii)/Θ² → (A + 2B)/Θ², and Var(Ĥ_ii) ∝ 1/n


FULL = os.environ.get("PDLT_SLOW") == "full"
SWEEP_LAYER = 3
SWEEP_WIDTHS = [24, 48, 96, 192] if FULL else [24, 48, 96]
SWEEP_NETWORKS = 8000 if FULL else 4000


def _fit_a_plus_b_over_n(ns, y, se):
    """Weighted least squares y = a + b/n; returns (a, σ_a, b, σ_b)."""
    return _line_fit(1.0 / ns, y, se)


def _fit_line(x, y, se):
    """Weighted least squares y = c + s·x; returns (s, σ_s)."""
    return _line_fit(x, y, se)[2:]


def _normalized(mm):
    """n·Var(Ĥ_ii)/Θ² = (A + 2B)/Θ², measured Θ (N = 1)."""
    return (ntk._est_A(mm) + 2 * ntk._est_B(mm)) / ntk._est_theta(mm) ** 2


def _variance(mm):
    """Var(Ĥ_ii) = (A + 2B)/n_{ℓ−1} (N = 1)."""
    return (ntk._est_A(mm) + 2 * ntk._est_B(mm)) / mm.fan_in


_NEEDED = ("Hd", "HdHd", "MHH", "QB")


def _sweep(seed):
    ns, y, se_y, var, se_var, theo = [], [], [], [], [], []
    X = INPUTS[:1]
    for n in SWEEP_WIDTHS:
        net = MLP(4, n, SWEEP_LAYER, "tanh", C_b=0.0, C_W=1.0, lambda_b=LAMBDA_B, lambda_W=LAMBDA_W)
        s = pdlt.theory(net, X, ntk=True).layer(SWEEP_LAYER)
        theo.append(float((s.A + 2 * s.B).ravel()[0] / s.Theta.ravel()[0] ** 2))
        acc = ntk.measure_ntk(net, X, SWEEP_NETWORKS, seed=seed, groups=20, progress=False).accumulation
        e = acc.jackknife(SWEEP_LAYER, _normalized, _NEEDED)
        v = acc.jackknife(SWEEP_LAYER, _variance, _NEEDED)
        ns.append(n)
        y.append(float(np.ravel(e.mean)[0]))
        se_y.append(float(np.ravel(e.stderr)[0]))
        var.append(float(np.ravel(v.mean)[0]))
        se_var.append(float(np.ravel(v.stderr)[0]))
    return tuple(np.array(a, dtype=float) for a in (ns, y, se_y, var, se_var, theo))


@pytest.fixture(scope="module", params=SEEDS, ids=lambda s: f"seed{s}")
def sweep(request):
    return _sweep(request.param)


@pytest.mark.slow
def test_ntk_width_sweep_approaches_theory(sweep):
    """(A + 2B)/Θ² measured = a + b/n with a the leading-order theory (width-independent)."""
    ns, y, se, _, _, theo = sweep
    np.testing.assert_allclose(theo, theo[0], rtol=1e-9)   # leading order: no width dependence
    a, sa, _, _ = _fit_a_plus_b_over_n(ns, y, se)
    assert abs(a - theo[0]) <= K_SIGMA * sa, (a, sa, theo[0], y, se)
    # the check has power: the theory value is resolved far from zero
    assert abs(a) > K_SIGMA * sa


@pytest.mark.slow
def test_ntk_fluctuation_scales_as_1_over_n(sweep):
    """Var(Ĥ_ii) (not multiplied by n) falls as n^{-1}: fitted log-log slope within 4σ of −1.

    n·Var = a + b/n is not a pure power law: its local log-slope −b/(a n + b) biases a power-law fit
    (measured: slope ≈ −1.005 ± 0.003 at n = 24..96, 4000 networks). That O(1/n) effect, taken from
    the a + b/n fit at the smallest width, is an explicit allowance, as in the observables table.
    """
    ns, y, se, var, se_var, _ = sweep
    assert np.all(var > 0)
    s, ss = _fit_line(np.log(ns), np.log(var), se_var / var)
    a, _, b, _ = _fit_a_plus_b_over_n(ns, y, se)
    allowance = abs(b / (a * ns[0] + b))
    assert abs(s + 1.0) <= K_SIGMA * ss + allowance, (s, ss, allowance, var, se_var)
    # the check has power: Var ∝ n^{-1/2} or no decay at all would fail it
    assert K_SIGMA * ss + allowance < 0.25


# ---------------------------------------------------------------------------------------------
# tanh's A: small by cancellation, so judged by its width sweep rather than at one width


A_WIDTHS = [16, 32, 64]
A_NETWORKS = {16: 40000, 32: 30000, 64: 16000}


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_tanh_A_width_sweep(seed):
    """tanh at criticality, N = 1, layer 3: A_meas = a + b/n with a = A (leading order) within 4σ_a,
    a resolved from 0, and the residual A_meas − A a resolved b/n term: the theory is right and the
    n = 32 misses of the twin matrix are its O(1/n) correction. Seeds 0..9: |a − A|/σ_a ≤ 1.07,
    a = 0.0358…0.0383 against A = 0.03692 (σ_a ≈ 0.0013), b = 0.33…0.47."""
    X = INPUTS[:1]
    ns, y, se = [], [], []
    for n in A_WIDTHS:
        net = MLP(4, n, SWEEP_LAYER, "tanh", C_b=0.0, C_W=1.0, lambda_b=LAMBDA_B, lambda_W=LAMBDA_W)
        A_th = float(pdlt.theory(net, X, ntk=True).layer(SWEEP_LAYER).A.ravel()[0])
        e = ntk.measure_ntk(net, X, A_NETWORKS[n], seed=seed, groups=20, layers=[SWEEP_LAYER],
                            progress=False).layer(SWEEP_LAYER).A
        ns.append(n)
        y.append(float(np.ravel(e.mean)[0]))
        se.append(float(np.ravel(e.stderr)[0]))
    ns, y, se = (np.array(a, dtype=float) for a in (ns, y, se))
    a, sa, b, sb = _fit_a_plus_b_over_n(ns, y, se)
    assert abs(a - A_th) <= K_SIGMA * sa, (a, sa, A_th, y, se)
    assert abs(a) > 10 * sa
    # the residual is a resolved 1/n term (σ_b from the same weighted fit)
    assert b > K_SIGMA * sb, (b, sb)
