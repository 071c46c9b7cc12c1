"""Optimal aspect ratio r* = 4/((20 + 3n_L)ν) (book App. A via formula sheet §10 [S: S4]; derivation not available)."""

import math

import pytest

from pdlt.theory.aspect_ratio import class_nu, optimal_aspect_ratio, recommended_max_depth
from pdlt.theory.residual import residual_nu

#: formula sheet §10 table: activation → (ν, {n_L: r*}) (rounded as printed there).
TABLE = {
    "relu": (5.0, {1: 0.0348, 2: 0.0308, 3: 0.0276, 10: 0.016}),
    "linear": (2.0, {1: 0.087, 2: 0.077, 3: 0.069, 10: 0.040}),
    "tanh": (2 / 3, {1: 0.261, 2: 0.231, 3: 0.207, 10: 0.120}),
}


@pytest.mark.parametrize("act", sorted(TABLE))
def test_table_values(act):
    nu, row = TABLE[act]
    assert class_nu(act) == pytest.approx(nu, rel=1e-12)
    for n_L, r in row.items():
        digits = len(str(r).split(".")[1])
        assert round(optimal_aspect_ratio(nu, n_L), digits) == pytest.approx(r, abs=1e-12)
        assert round(optimal_aspect_ratio(class_nu(act), n_L), digits) == pytest.approx(r, abs=1e-12)


def test_s4_quote_and_other_members_of_the_classes():
    assert optimal_aspect_ratio(5.0, 3) == pytest.approx(0.027, abs=1e-3)        # "r* ≈ 0.027" (S4, truncated)
    assert class_nu("sin") == pytest.approx(2 / 3)
    a = 0.2
    assert class_nu(_leaky(a)) == pytest.approx(6 * (1 + a ** 4) / (1 + a ** 2) ** 2 - 1, rel=1e-12)


def _leaky(a):
    from pdlt.activations import get_activation
    return get_activation("leaky_relu", a=a)


def test_recommended_max_depth():
    assert recommended_max_depth("relu", 1000) == 34          # 4000/115 = 34.78
    assert recommended_max_depth("relu", 115) == 4            # exactly 4.0: no rounding down to 3
    assert recommended_max_depth("relu", 1000, n_L=10) == 16
    assert recommended_max_depth("tanh", 512) == math.floor(512 * 6 / 23)
    assert recommended_max_depth("linear", 100, xi=math.sqrt(0.5)) == math.floor(100 * 4 / (23 * 1.5))
    assert recommended_max_depth("relu", 1000, xi=0.5) < recommended_max_depth("relu", 1000)  # ν(0.5) > 5
    with pytest.raises(ValueError, match="no critical point"):
        recommended_max_depth("sigmoid", 100)
    with pytest.raises(ValueError):
        optimal_aspect_ratio(0.0, 1)
    with pytest.raises(ValueError):
        optimal_aspect_ratio(1.0, 0)


@pytest.mark.parametrize("act", ["relu", "linear", "tanh", "gelu"])
def test_residual_aspect_ratio_diverges_as_xi_to_one(act):
    """ν(ξ) → 0 as ξ → 1, so r* → ∞: arbitrarily deep residual networks at fixed width (App. B)."""
    rs = [optimal_aspect_ratio(residual_nu(act, xi), 1) for xi in (0.9, 0.99, 0.999, 0.9999)]
    assert all(b > 5 * a for a, b in zip(rs, rs[1:]))
    assert rs[-1] > 50
    assert recommended_max_depth(act, 1000, xi=0.9999) > 50_000


def test_half_stable_depth_uses_the_growth_seen_at_practical_depths():
    """GELU at criticality: within the first layers V/(nK²) grows with ν_{K*}, not ν_{K*}/5."""
    import numpy as np
    import pdlt
    from pdlt.theory import aspect_ratio, residual
    c = pdlt.criticality("gelu")
    n, L = 256, 12
    # an input with K^(1) = K* exactly: C_b + C_W x²/n0 = K*
    x = np.array([[np.sqrt((c.K_star - c.C_b) / c.C_W)]])
    th = pdlt.theory(pdlt.MLP(1, n, L, "gelu", C_b=c.C_b, C_W=c.C_W), x)
    s = th.layer(L)
    growth = s.V[0, 0, 0, 0] / (n * s.K[0, 0] ** 2) / ((L - 1) / n)
    nu_pre = residual.residual_nu("gelu", 0.0, at_fixed_point=True)
    assert growth == pytest.approx(nu_pre, rel=0.02)
    assert aspect_ratio.effective_nu("gelu", n) == pytest.approx(nu_pre)
    assert aspect_ratio.half_stable_crossover("gelu") > 1000 > aspect_ratio.recommended_max_depth("gelu", n)
