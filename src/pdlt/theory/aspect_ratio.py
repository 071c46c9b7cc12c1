r"""The optimal aspect ratio r* = (L/n)* of a critical network (book App. A).

.. math:: r^* = \Big(\frac{L}{n}\Big)^{*} = \frac{4}{(20 + 3n_L)\,\nu},

where ν is the growth coefficient of the normalized four-point vertex at criticality,
:math:`V^{(L)}/(n (K^{(L)})^2) \approx \nu L/n`. Source: formula sheet §10, tag [S: S4] — a public
implementation of appendices A/B (CritMLP). **The information-theoretic derivation of App. A (the
origin of "20 + 3n_L") was not available to us; the formula is taken from S4 unverified, and only
its arithmetic and the ν that feeds it are tested here.**

ν by universality class (book §5, formula sheet §4, §10; :func:`pdlt.theory.residual.residual_nu`):
scale-invariant 3A₄/A₂² − 1 (ReLU 5, linear 2); K* = 0 class 2/3 (tanh, sin); residual MLP with
skip ξ: ν(ξ), which → 0 as ξ → 1, so r* → ∞ (arbitrarily deep residual networks at fixed width).
For ReLU-like σ our ν(ξ) includes the odd-mode term that the formula sheet's ν(ξ) omits (see
:mod:`pdlt.theory.residual`); it is not monotone in ξ (ν(0.5) ≈ 6.50 > ν(0) = 5 for ReLU).
"""

from __future__ import annotations

import math

from .. import _validate
from .residual import residual_nu
from .residual import universality_class as residual_universality

__all__ = ["optimal_aspect_ratio", "class_nu", "recommended_max_depth", "half_stable_crossover",
           "effective_nu"]


def optimal_aspect_ratio(nu: float, n_L: int = 1) -> float:
    r"""r* = 4 / ((20 + 3 n_L) ν) (book App. A via formula sheet §10 [S: S4]; derivation unavailable).

    nu : ν > 0, the coefficient of V/(nK²) ≈ ν L/n. n_L : output width ≥ 1. Returns r* (float).
    """
    nu = _validate.real("nu", nu, low=0.0, low_open=True)
    n_L = _validate.positive_int("n_L", n_L)
    return 4.0 / ((20.0 + 3.0 * n_L) * nu)


def class_nu(activation, xi: float = 0.0) -> float:
    r"""ν of the activation's universality class at criticality, with skip strength ξ (|ξ| < 1).

    ξ = 0: 3A₄/A₂² − 1 (scale-invariant), 2/3 (K* = 0), C_W²Var_{K*}(σ²)/(5K*²) (half-stable, K
    approaching K* from its stable side; our extension, = :func:`pdlt.theory.criticality.criticality`'s
    ν). ξ ≠ 0: the residual ν(ξ) of :func:`pdlt.theory.residual.residual_nu`.
    """
    return residual_nu(activation, xi)


def half_stable_crossover(activation) -> float:
    r"""ℓ_c = 2/(|f″(K*)| K*): the depth beyond which a half-stable kernel feels the curvature of its map.

    For ℓ ≪ ℓ_c the map K' = f(K) is flat (χ∥ ≈ 1 wherever K starts near K*) and V/(nK²) grows with
    ν_{K*} = C_W²Var(σ²)/K*²; only for ℓ ≫ ℓ_c does it approach K* from the stable side with ν_{K*}/5.
    f″ = C_W g″(K*) (formula sheet §3(c); our extension).
    """
    from ._gauss import Expectations
    from .criticality import criticality
    c = criticality(activation, depth=20)
    if c.universality_class != "half-stable":
        raise ValueError(f"activation {c.activation.name!r} is not half-stable ({c.universality_class})")
    f2 = c.C_W * float(Expectations(c.activation).g_derivs(c.K_star)[2]) / 4.0
    return 2.0 / (abs(f2) * c.K_star)


def effective_nu(activation, width: int, n_L: int = 1, xi: float = 0.0) -> float:
    r"""The ν that governs depths of order L* = r*·n for this width.

    :func:`class_nu`, except for a half-stable activation (ξ = 0): there the pre-asymptotic
    ν_{K*} (5× the asymptotic one) unless L* would exceed the crossover depth ℓ_c
    (:func:`half_stable_crossover`, ≈ 2·10³ for GELU, 2·10⁴ for SWISH).
    """
    width = _validate.positive_int("width", width)
    nu = class_nu(activation, xi)
    if xi == 0.0 and residual_universality(activation) == "half-stable":
        nu_pre = residual_nu(activation, 0.0, at_fixed_point=True)
        if optimal_aspect_ratio(nu_pre, n_L) * width < half_stable_crossover(activation):
            return nu_pre
    return nu


def recommended_max_depth(activation, width: int, n_L: int = 1, xi: float = 0.0) -> int:
    r"""⌊r*·n⌋: the depth L at the optimal aspect ratio for hidden width n (book App. A).

    .. math:: L^* = \Big\lfloor \frac{4\,n}{(20 + 3n_L)\,\nu} \Big\rfloor, \quad \nu = \text{effective\_nu}

    activation : name or object (must have a critical point). width : n ≥ 1. n_L : output width.
    xi : residual skip strength, |ξ| < 1 (0: plain MLP). Returns an int ≥ 0.
    """
    r = optimal_aspect_ratio(effective_nu(activation, width, n_L, xi), n_L)
    return int(math.floor(r * width * (1 + 1e-12)))
