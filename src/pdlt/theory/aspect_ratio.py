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

__all__ = ["optimal_aspect_ratio", "class_nu", "recommended_max_depth"]


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


def recommended_max_depth(activation, width: int, n_L: int = 1, xi: float = 0.0) -> int:
    r"""⌊r*·n⌋: the depth L at the optimal aspect ratio for hidden width n (book App. A).

    .. math:: L^* = \Big\lfloor \frac{4\,n}{(20 + 3n_L)\,\nu(\xi)} \Big\rfloor

    activation : name or object (must have a critical point). width : n ≥ 1. n_L : output width.
    xi : residual skip strength, |ξ| < 1 (0: plain MLP). Returns an int ≥ 0.
    """
    width = _validate.positive_int("width", width)
    r = optimal_aspect_ratio(class_nu(activation, xi), n_L)
    return int(math.floor(r * width * (1 + 1e-12)))
