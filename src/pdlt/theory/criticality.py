r"""Criticality: susceptibilities, fixed points and universality classes (book Ch. 5).

Single-input kernel map (book §5.1, formula sheet §1, §3)

.. math:: K' = f(K) = C_b + C_W\, g(K),\qquad g(K) = \langle\sigma(z)^2\rangle_K ,

parallel and perpendicular susceptibilities and the curvature of χ⊥

.. math:: \chi_\parallel(K) = C_W g'(K) = \frac{C_W}{2K^2}\langle\sigma^2 (z^2-K)\rangle_K,\qquad
          \chi_\perp(K) = C_W\langle\sigma'\sigma'\rangle_K,\qquad
          h(K) = \tfrac12\frac{d\chi_\perp}{dK} = \frac{C_W}{4K^2}\langle\sigma'^2 (z^2-K)\rangle_K .

Criticality means a fixed point K* = f(K*) with χ∥(K*) = χ⊥(K*) = 1. :func:`criticality` finds it
for any activation — registered, :class:`~pdlt.activations.Activation` or plain callable — with no
lookup table, and sorts the activation into one of the book's universality classes:

* ``"scale-invariant"`` (§5.2): σ(λz) = λσ(z); C_b = 0, C_W = 1/A₂, a line of fixed points.
* ``"K*=0"`` (§5.3.3): σ(0) = 0, σ′(0) = σ₁ ≠ 0, a₁ < 0; C_b = 0, C_W = 1/σ₁², K → 0 as 1/(−a₁ℓ).
* ``"half-stable"`` (§5.3.4): a K* > 0 with g′(K*) = ⟨σ′²⟩_{K*}, where the map is tangent to the
  diagonal with f″(K*) ≠ 0, so K* attracts from one side only (SWISH, GELU).
* ``"none"`` (§5.3.2): no critical point (sigmoid, softplus, monomials z^p with p ≠ 1).

Every class with a critical point also gets power laws fitted to the iterated single-input
recursions of :func:`pdlt.theory` (K, V, G¹) and of the two-input δ-expansion (δK[1], δδK[2]),
reported next to the analytic ones.

NTK criticality (book Ch. 9, formula sheet §5). The single-input NTK obeys

.. math:: \Theta^{(\ell+1)} = \lambda_b + \lambda_W\, g(K^{(\ell)}) + \chi_\perp(K^{(\ell)})\,\Theta^{(\ell)},

so χ⊥ is the per-layer factor of the gradients: layer ℓ's contribution to Θ^{(L)} carries
Π χ⊥ ≈ χ⊥^{L−ℓ}, and off criticality (χ⊥ ≠ 1) the gradients explode or vanish exponentially
(:func:`gradient_growth`). Each critical result carries an :class:`NTKCriticality`
(``Criticality.ntk``): χ⊥ at the critical point, the gradient problem in words, the learning-rate
equivalence principle's per-layer scalings (:mod:`pdlt.theory.learning_rates`) with the resulting
Θ^{(L)}, and the NTK power laws known for the class (none are guessed where they are not known).

dNTK and ddNTKs at criticality (book Ch. 11, ∞; :mod:`pdlt.theory.dntk`). Each critical result also
carries a :class:`DNTKCriticality` (``Criticality.dntk``): the depth scaling of the single-input dNTK
statistics P, Q and ddNTK statistics R, S, T, U in the dimensionless combinations

.. math:: \frac{P}{n\Theta^2},\ \frac{Q}{n\Theta^2},\qquad
          \frac{RK}{n\Theta^3},\ \frac{SK}{n\Theta^3},\ \frac{TK}{n\Theta^3},\ \frac{UK}{n\Theta^3}

(Θ, K of the same layer, equal widths n), each ≈ c(f_W) ℓ^e/n with f_W the weights' share of Θ:
exact for the scale-invariant class (closed forms of :func:`pdlt.theory.dntk.scale_invariant_critical`)
and for the half-stable class at K⁽¹⁾ = K* (constant-coefficient recursions, solved exactly here),
fitted to the iterated recursions for the K* = 0 class (no analytic result is known to pdlt).

Numerics: float64; 1-D Gaussian expectations by the split Gauss–Legendre rule of
:func:`pdlt.gaussian.expect1` (≲ 1e-13 relative); derivatives of g by Hermite weights (σ only, so
exact for kinks and for user callables); ⟨σ′²⟩ from a closed form where the activation has one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
from scipy import optimize

from .. import _validate, gaussian
from ..activations import Activation, CallableActivation, PiecewiseLinear, Step, get_activation
from ..mlp import MLP
from ._gauss import Expectations

__all__ = ["chi_parallel", "chi_perp", "h", "kernel_map", "FixedPoint", "fixed_points", "PowerLaw",
           "Criticality", "criticality", "CLASSES", "NTKCriticality", "GradientGrowth", "gradient_growth",
           "DNTKCriticality", "DNTK_STATISTICS"]

#: The universality classes :func:`criticality` can return.
CLASSES = ("scale-invariant", "K*=0", "half-stable", "none")

_U_EDGE = 13.0                                   # gaussian.expect1 integrates u = z/√K over [−13, 13]
_PHI_EDGE = math.exp(-0.5 * _U_EDGE ** 2) / math.sqrt(2.0 * math.pi)
_TAIL_RTOL = 1e-10                               # neglected tail / ⟨σ²⟩ above this: not resolvable
_MARGINAL = 1e-8                                 # |χ∥ − 1| below this: marginal fixed point


# ---------------------------------------------------------------------------------------------
# validation helpers


def _label(act: Activation) -> str:
    """A short human-readable name of an activation for error messages and reports."""
    if isinstance(act, CallableActivation):
        return f"callable {act.params['fn']}"
    p = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in act.params.items())
    return f"{act.name}({p})" if p else act.name


def _variances(K, *, allow_zero: bool = False) -> np.ndarray:
    try:
        arr = np.asarray(K, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"K must be a real number or an array of variances, got {K!r}") from None
    bad = ~np.isfinite(arr) | ((arr < 0) if allow_zero else (arr <= 0))
    if np.any(bad):
        first = arr[bad].ravel()[0]
        need = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"K must be finite and {need} (a variance); got {first!r}")
    return arr


def _C_W(C_W) -> float:
    return _validate.real("C_W", C_W, low=0.0, low_open=True)


def _C_b(C_b) -> float:
    return _validate.real("C_b", C_b, low=0.0)


def _K_range(K_range) -> tuple[float, float]:
    try:
        if isinstance(K_range, str | bytes):
            raise TypeError
        lo, hi = (float(k) for k in K_range)
    except (TypeError, ValueError):
        raise ValueError(f"K_range must be a pair (K_min, K_max) of numbers, got {K_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 < lo < hi):
        raise ValueError(
            f"K_range must be (K_min, K_max) with 0 < K_min < K_max, both finite; got {K_range!r}")
    return lo, hi


def _check_tails(act: Activation, K, hint: str = "") -> None:
    """ValueError if ⟨σ²⟩_K is non-finite, or not resolved by the quadrature (mass beyond |z| = 13√K)."""
    K = np.atleast_1d(np.asarray(K, dtype=np.float64)).ravel()
    s = np.sqrt(K)
    with np.errstate(all="ignore"):
        edge = (np.maximum(act.sigma(_U_EDGE * s) ** 2, act.sigma(-_U_EDGE * s) ** 2)
                * _U_EDGE ** 4 * _PHI_EDGE)
        g = gaussian.expect1(lambda z: act.sigma(z) ** 2, K)
        bad = ~np.isfinite(edge) | ~np.isfinite(g) | (edge > _TAIL_RTOL * np.abs(g))
    if np.any(bad):
        Kb = float(K[bad][0])
        raise ValueError(
            f"activation {_label(act)}: the Gaussian expectation ⟨σ²⟩_K diverges or overflows at "
            f"K = {Kb:.3g} "
            f"(σ grows so fast, e.g. like exp(z²), that ⟨σ²⟩_K is infinite or dominated by |z| > 13√K); "
            f"no susceptibility or fixed point can be computed there{hint}")


@lru_cache(maxsize=256)
def _jump(act: Activation) -> float | None:
    """Location of a jump discontinuity of σ on [−8, 8] (σ′ has a δ-function there), or None.

    A jump keeps |Δσ| between neighbouring grid points constant under refinement; a continuous σ
    (kinks included) has |Δσ| shrinking with the spacing.
    """
    if isinstance(act, Step):
        return 0.0
    if isinstance(act, PiecewiseLinear):
        return None
    zc, zf = np.linspace(-8.0, 8.0, 4001), np.linspace(-8.0, 8.0, 16001)
    with np.errstate(all="ignore"):
        sc, sf = np.asarray(act.sigma(zc), dtype=float), np.asarray(act.sigma(zf), dtype=float)
    if not (np.all(np.isfinite(sc)) and np.all(np.isfinite(sf))):
        return None                             # reported by the overflow check instead
    dc, df = np.abs(np.diff(sc)), np.abs(np.diff(sf))
    i = int(np.argmax(df))
    scale = max(float(np.max(np.abs(sf))), 1e-300)
    if df[i] > 1e-6 * scale and df[i] > 0.5 * float(np.max(dc)):
        z = 0.5 * (zf[i] + zf[i + 1])
        return 0.0 if abs(z) < 2e-3 else float(z)
    return None


def _check_no_delta(act: Activation) -> None:
    z = _jump(act)
    if z is not None:
        raise ValueError(
            f"activation {_label(act)}: no criticality: σ′ is a δ-function (σ jumps at z ≈ {z:g}), so "
            f"χ⊥ = C_W⟨σ′σ′⟩_K = C_W⟨δ²⟩ diverges at every K; a discontinuous activation has no "
            f"critical initialization")


# ---------------------------------------------------------------------------------------------
# single-variable Gaussian moments


def _g(act: Activation, K: np.ndarray):
    """(g, g′, g″) at variance K, from Expectations.g_derivs (Hermite weights: σ only)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        g, d2, d4 = Expectations(act).g_derivs(K)
    return g, 0.5 * d2, 0.25 * d4


def _sp2(act: Activation, K: np.ndarray) -> np.ndarray:
    """⟨σ′(z)²⟩_K: closed form ⟨σ′_a σ′_b⟩ at C_aa = C_ab = C_bb = K if the activation has one."""
    with np.errstate(divide="ignore", invalid="ignore"):
        closed = act.closed_pair(1, 1, K, K, K)
    if closed is not None:
        return np.asarray(closed, dtype=np.float64)
    return gaussian.expect1(lambda z: act.derivative(z, 1) ** 2, K)


def _sp2_dK(act: Activation, K: np.ndarray) -> np.ndarray:
    """d⟨σ′²⟩_K/dK = ⟨σ′²(z² − K)⟩_K/(2K²) (needs σ′ pointwise only; σ″ never appears)."""
    return _sp2_both(act, K)[1]


def _sp2_both(act: Activation, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(⟨σ′²⟩_K, d⟨σ′²⟩_K/dK) with σ′ evaluated once per quadrature node (user callables: costly)."""
    if isinstance(act, PiecewiseLinear):
        return _sp2(act, K), np.zeros_like(K)
    Kb = K[..., None]

    def both(z):
        d = act.derivative(z, 1) ** 2
        return np.stack([d, d * (z * z - Kb)])

    with np.errstate(divide="ignore", invalid="ignore"):
        m0, m2 = gaussian.expect1(both, K)
        closed = act.closed_pair(1, 1, K, K, K)
    sp2 = m0 if closed is None else np.asarray(closed, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return sp2, m2 / (2.0 * K * K)


def chi_parallel(activation, K, C_W=1.0) -> np.ndarray:
    r"""Parallel susceptibility χ∥(K) = C_W g′(K) (book §5.1).

    .. math:: \chi_\parallel(K) = C_W \frac{d}{dK}\langle\sigma^2\rangle_K
              = \frac{C_W}{2K^2}\langle\sigma(z)^2\,(z^2-K)\rangle_K

    χ∥ governs the flow of the diagonal kernel, δK' = χ∥ δK (and δK[1] of two nearby inputs).

    Parameters
    ----------
    activation : registered name, :class:`~pdlt.activations.Activation` or callable.
    K : variance(s) K > 0, any shape.
    C_W : weight variance > 0.

    Returns an array of the shape of K.
    """
    act = get_activation(activation)
    K = _variances(K)
    C_W = _C_W(C_W)
    _check_tails(act, K)
    return C_W * _g(act, K)[1]


def chi_perp(activation, K, C_W=1.0) -> np.ndarray:
    r"""Perpendicular susceptibility χ⊥(K) = C_W ⟨σ′σ′⟩_K (book §5.1).

    .. math:: \chi_\perp(K) = C_W \langle\sigma'(z)\,\sigma'(z)\rangle_K

    χ⊥ multiplies the distance δδK[2] between two nearby inputs per layer. Closed forms are used
    where the activation has ⟨σ′_aσ′_b⟩ in closed form (ReLU family, sin, erf), otherwise a 1-D
    Gaussian quadrature of σ′². Raises ValueError for a discontinuous σ (σ′ contains a δ-function,
    χ⊥ = ∞). K: any shape, > 0; returns an array of the same shape.
    """
    act = get_activation(activation)
    K = _variances(K)
    C_W = _C_W(C_W)
    _check_no_delta(act)
    _check_tails(act, K)
    return C_W * _sp2(act, K)


def h(activation, K, C_W=1.0) -> np.ndarray:
    r"""Curvature h(K) = ½ dχ⊥/dK (book §5.1), the source of δδK[2] from δK[1].

    .. math:: h(K) = \frac12\frac{d\chi_\perp}{dK} = \frac{C_W}{4K^2}\langle\sigma'(z)^2\,(z^2-K)\rangle_K

    It enters δδK[2]' = χ⊥ δδK[2] + h (δK[1])². K: any shape, > 0; returns the same shape.
    Exactly 0 for the scale-invariant (piecewise-linear) class.
    """
    act = get_activation(activation)
    K = _variances(K)
    C_W = _C_W(C_W)
    _check_no_delta(act)
    _check_tails(act, K)
    return 0.5 * C_W * _sp2_dK(act, K)


def kernel_map(activation, K, C_b, C_W) -> np.ndarray:
    r"""The single-input kernel recursion K' = f(K) = C_b + C_W g(K) (book §4.3, §5.1).

    .. math:: f(K) = C_b + C_W \langle \sigma(z)^2\rangle_K

    K: any shape, ≥ 0; returns an array of the same shape.
    """
    act = get_activation(activation)
    K = _variances(K, allow_zero=True)
    C_b, C_W = _C_b(C_b), _C_W(C_W)
    _check_tails(act, K[K > 0])
    return C_b + C_W * _g(act, K)[0]


# ---------------------------------------------------------------------------------------------
# fixed points of the kernel map


@dataclass(frozen=True)
class FixedPoint:
    """A fixed point K* = C_b + C_W g(K*) of the single-input kernel map, with its susceptibilities.

    ``stability``: ``"stable"`` (χ∥ < 1: nearby K converge exponentially), ``"unstable"`` (χ∥ > 1),
    ``"marginal (stable for K > K*)"`` / ``"marginal (stable for K < K*)"`` (χ∥ = 1: the map is
    tangent to the diagonal and attracts from one side, as a power law), ``"marginal"`` (χ∥ = 1,
    side undetermined), or ``"marginal (line of fixed points: every K is fixed)"`` (scale-invariant
    activations at C_b = 0, C_W = 1/A₂; then ``K`` is NaN and the susceptibilities hold at every K).
    """

    K: float
    chi_parallel: float
    chi_perp: float
    stability: str


def _marginal_label(f2: float, K: float) -> str:
    if abs(f2) * max(K, 1.0) <= 1e-10:
        return "marginal"
    return "marginal (stable for K > K*)" if f2 < 0 else "marginal (stable for K < K*)"


def _stability(chi_par: float, f2: float, K: float) -> str:
    if chi_par < 1.0 - _MARGINAL:
        return "stable"
    if chi_par > 1.0 + _MARGINAL:
        return "unstable"
    return _marginal_label(f2, K)


def _log_grid(lo: float, hi: float, per_decade: int = 40, minimum: int = 200) -> np.ndarray:
    n = max(minimum, int(math.ceil(per_decade * math.log10(hi / lo))) + 1)
    return np.geomspace(lo, hi, n)


def _brent(fn, a: float, b: float) -> float:
    return float(optimize.brentq(fn, a, b, xtol=1e-15 * a, rtol=1e-14, maxiter=500))


def _sign_changes(y: np.ndarray) -> list[int]:
    """Indices i with a sign change (or exact zero at i) between y[i] and y[i+1]."""
    s = np.sign(y)
    return [i for i in range(len(y) - 1) if s[i] == 0 or s[i] * s[i + 1] < 0]


def fixed_points(activation, C_b, C_W, K_range=(1e-10, 1e4)) -> list[FixedPoint]:
    r"""All fixed points K* = C_b + C_W g(K*) of the single-input kernel map in K_range (book §5.1).

    .. math:: K^\star = C_b + C_W\langle\sigma^2\rangle_{K^\star},\qquad
              \chi_\parallel(K^\star) = f'(K^\star) \lessgtr 1

    Simple roots are bracketed on a log grid (40 points per decade) and refined by Brent's method to
    |ΔK| ≲ 1e-13 K; tangent (double) roots — critical fixed points, where f(K) − K does not change
    sign — are found as roots of χ∥ − 1 at which |f(K) − K| ≤ 1e-10 K. K = 0 is included when it is a
    fixed point (C_b = 0 and σ(0) = 0). An empty list means K flows out of K_range (to 0 or ∞).

    Returns the fixed points sorted by K.
    """
    act = get_activation(activation)
    C_b, C_W = _C_b(C_b), _C_W(C_W)
    lo, hi = _K_range(K_range)
    Ks = _log_grid(lo, hi, per_decade=40)
    _check_tails(act, Ks, "; narrow K_range")
    g, g1, g2 = _g(act, Ks)
    D = (C_b + C_W * g - Ks) / Ks                 # (f(K) − K)/K
    out: list[FixedPoint] = []

    if C_b == 0.0 and abs(float(act.sigma(np.array(0.0)))) <= 1e-12 * _sigma_scale(act):
        # K = 0 is fixed; susceptibilities as the K → 0 limit
        K0 = np.array([1e-14])
        c_par = float(C_W * _g(act, K0)[1][0])
        c_perp = float(C_W * _sp2(act, K0)[0]) if _jump(act) is None else math.inf
        if c_par < 1.0 - _MARGINAL:
            stab = "stable"
        elif c_par > 1.0 + _MARGINAL:
            stab = "unstable"
        else:   # tangent at 0: stable from above iff f(K) < K just above 0
            stab = "marginal (stable for K > K*)" if D[0] < 0 else "unstable"
        out.append(FixedPoint(0.0, c_par, c_perp, stab))

    if np.max(np.abs(D)) <= 1e-12:
        c_par = float(C_W * _g(act, np.array([1.0]))[1][0])
        c_perp = float(C_W * _sp2(act, np.array([1.0]))[0]) if _jump(act) is None else math.inf
        return [FixedPoint(math.nan, c_par, c_perp, "marginal (line of fixed points: every K is fixed)")]

    def resid(k):
        return (C_b + C_W * float(_g(act, np.array(k))[0]) - k) / k

    roots: list[tuple[float, str | None]] = []
    for i in _sign_changes(D):
        k = Ks[i] if D[i] == 0 else _brent(resid, Ks[i], Ks[i + 1])
        roots.append((k, None))
    # tangencies: χ∥ = 1 where f(K) ≈ K. Two roots of χ∥ − 1 can share one grid cell (a tangency
    # next to a crossing), so each local minimum of |f(K) − K| is also scanned on a fine sub-grid.
    def chi_m1(x):
        return C_W * float(_g(act, np.array(x))[1]) - 1.0

    cells = {(float(Ks[i]), float(Ks[i + 1])) for i in _sign_changes(C_W * g1 - 1.0)}
    aD = np.abs(D)
    for i in range(1, len(Ks) - 1):
        if aD[i] <= aD[i - 1] and aD[i] <= aD[i + 1]:
            sub = np.geomspace(Ks[i - 1], Ks[i + 1], 201)
            Psub = C_W * _g(act, sub)[1] - 1.0
            cells |= {(float(sub[j]), float(sub[j + 1])) for j in _sign_changes(Psub)}
    tangent: list[float] = []
    for a, b in sorted(cells):
        k = a if chi_m1(a) == 0 else _brent(chi_m1, a, b)
        if any(abs(k - t) <= 1e-9 * k for t in tangent):
            continue
        tangent.append(k)
        if abs(resid(k)) <= 1e-10:
            roots = [(r, s) for r, s in roots if abs(r - k) > 1e-3 * k]
            f2 = C_W * float(_g(act, np.array(k))[2])
            roots.append((k, _marginal_label(f2, k)))
    roots.sort()
    for k, label in roots:
        kk = np.array(k)
        _, a1, a2 = _g(act, kk)
        c_par, f2 = C_W * float(a1), C_W * float(a2)
        c_perp = float(C_W * _sp2(act, kk)) if _jump(act) is None else math.inf
        out.append(FixedPoint(float(k), c_par, c_perp, label or _stability(c_par, f2, k)))
    return out


# ---------------------------------------------------------------------------------------------
# results


def _num(x: float) -> str:
    """Compact number: 4 significant digits, integers without a decimal point."""
    if x is None or not math.isfinite(x):
        return str(x)
    if x == 0 or (abs(x) >= 1 and abs(x - round(x)) < 1e-9 * abs(x)):
        return str(int(round(x)))
    return f"{x:.4g}"


@dataclass(frozen=True)
class PowerLaw:
    """An asymptotic law quantity ≈ coefficient · ℓ^exponent at large depth ℓ.

    ``source`` is ``"analytic"`` (a formula: from the book/formula sheet, or derived at leading order
    as the text says) or ``"recursion fit"`` (least-squares slope of log|quantity| against log ℓ over
    the last decade of the iterated recursions). ``coefficient`` is NaN where it depends on the
    inputs (δK[1], δδK[2]). For ``"V/(nK²)"`` the law is V/(nK²) ≈ coefficient · ℓ^exponent / n.
    """

    quantity: str
    coefficient: float
    exponent: float
    source: str
    text: str

    def at(self, ell) -> np.ndarray:
        """coefficient · ℓ^exponent (without the 1/n of V/(nK²))."""
        return self.coefficient * np.asarray(ell, dtype=np.float64) ** self.exponent

    def to_dict(self) -> dict:
        return {"quantity": self.quantity, "coefficient": _jsonable(self.coefficient),
                "exponent": _jsonable(self.exponent), "source": self.source, "text": self.text}


def _law_text(quantity: str, c: float, e: float, approx: str = "≈") -> str:
    if quantity == "V/(nK²)":
        lead = "" if math.isnan(c) else f"{_num(c)} "
        ell = "ℓ" if abs(e - 1) < 1e-12 else f"ℓ^{_num(e)}"
        return f"V/(nK²) {approx} {lead}{ell}/n"
    if abs(e) < 1e-12 and not math.isnan(c):
        return f"{quantity} → {_num(c)}"
    if math.isnan(c):
        return f"{quantity} ∝ ℓ^{_num(e)}"
    return f"{quantity} {approx} {_num(c)} ℓ^{_num(e)}"


def _law(quantity, c, e, source, text=None, note="") -> PowerLaw:
    t = text or _law_text(quantity, c, e)
    return PowerLaw(quantity, float(c), float(e), source, t + (f" {note}" if note else ""))


def _jsonable(x):
    if isinstance(x, float | np.floating):
        x = float(x)
        return x if math.isfinite(x) else None
    return x


@dataclass(frozen=True)
class NTKCriticality:
    r"""The NTK at criticality (book Ch. 9): gradients, equivalence-principle learning rates, Θ's laws.

    .. math:: \Theta^{(\ell+1)} = \lambda_b^{(\ell+1)} + \lambda_W^{(\ell+1)} g(K^{(\ell)})
              + \chi_\perp(K^{(\ell)})\,\Theta^{(\ell)}

    Attributes
    ----------
    chi_perp : χ⊥ at the critical point (1 for every critical class).
    gradients : plain words: χ⊥ as the gradients' per-layer factor, what happens off criticality,
        and how Θ grows with depth at criticality with layer-independent λ.
    off_criticality : the off-critical law as a formula (e.g. ReLU: the backward factor
        (C_W/2)^(L−ℓ)); numbers for a given (C_b, C_W) come from :func:`gradient_growth`.
    lambda_b, lambda_W : the equivalence principle's per-layer scalings λ^{(ℓ)} as formulas
        (:func:`pdlt.theory.learning_rates.equivalence_principle`).
    theta_limit : the resulting Θ^{(L)} as a formula; ``theta_limit_value`` its value at
        ``theta_limit_at`` (λ̃_b = λ̃_W = 1; scale-invariant: also K* = 1), as
        :func:`pdlt.theory.learning_rates.theta_limit` gives it.
    laws : NTK power laws at criticality with layer-independent λ (:class:`PowerLaw`; ``"analytic"``
        formulas, ``"recursion fit"`` to the iterated Θ recursion where the law is asymptotic).
        Normalized fluctuations X/(nΘ²), X/(nKΘ) are laws in ℓ/n (``at`` omits the 1/n).
    fluctuations : ``{"A": (c₀, c₁, c₂), ...}``: the coefficient of ℓ/n of A/(nΘ²), B/(nΘ²),
        D/(nKΘ), F/(nKΘ) is c₀ + c₁f_W + c₂f_W² (f_W the weights' share of Θ₁); empty where unknown.
    unknown : what is not known for this class (stated, not guessed), or None.
    """

    chi_perp: float
    gradients: str
    off_criticality: str
    lambda_b: str
    lambda_W: str
    theta_limit: str
    theta_limit_value: float | None
    theta_limit_at: str
    laws: tuple[PowerLaw, ...] = field(default=())
    fluctuations: dict = field(default_factory=dict, hash=False)
    unknown: str | None = None

    def law(self, quantity: str, source: str = "analytic") -> PowerLaw | None:
        """The NTK law of ``quantity`` (e.g. ``"Θ/Θ₁"``, ``"B/(nΘ²)"``) from ``source``, or None."""
        for p in self.laws:
            if p.quantity == quantity and p.source == source:
                return p
        return None

    def fluctuation(self, name: str, f_W: float) -> float:
        """Coefficient c of ``name`` ≈ c·ℓ/n (A, B: /(nΘ²); D, F: /(nKΘ)) at weight share f_W ∈ [0, 1]."""
        if name not in self.fluctuations:
            raise ValueError(f"no known power law for the NTK fluctuation {name!r} in this class"
                             + (f" (known: {', '.join(self.fluctuations)})" if self.fluctuations else
                                f": {self.unknown}"))
        f = _validate.real("f_W", f_W, low=0.0, high=1.0)
        c0, c1, c2 = self.fluctuations[name]
        return c0 + c1 * f + c2 * f * f

    def to_dict(self) -> dict:
        return {"chi_perp": _jsonable(self.chi_perp), "gradients": self.gradients,
                "off_criticality": self.off_criticality, "lambda_b": self.lambda_b,
                "lambda_W": self.lambda_W, "theta_limit": self.theta_limit,
                "theta_limit_value": _jsonable(self.theta_limit_value), "theta_limit_at": self.theta_limit_at,
                "laws": [p.to_dict() for p in self.laws],
                "fluctuations": {k: [_jsonable(c) for c in v] for k, v in self.fluctuations.items()},
                "unknown": self.unknown}

    def report_lines(self) -> list[str]:
        """The NTK section of :meth:`Criticality.report` (unindented)."""
        lines = [f"χ⊥ at the critical point = {_num(self.chi_perp)}"]
        lines += _wrap(self.gradients, 92)
        lines += [f"off criticality: {self.off_criticality}",
                  f"equivalence principle: {self.lambda_b}, {self.lambda_W}",
                  f"  → {self.theta_limit}"]
        if self.laws:
            lines += ["NTK asymptotics (layer-independent λ, large depth ℓ):"]
            w = max(len(p.text) for p in self.laws)
            lines += [f"  {p.text:<{w}}  [{p.source}]" for p in self.laws]
        if self.unknown:
            lines += _wrap(self.unknown, 92)
        return lines


#: The normalized dNTK/ddNTK statistics of :class:`DNTKCriticality`: name → (printed quantity, power k
#: of Θ, power m of K) of n·X̂ = X K^m/Θ^k (X = P, Q: n E[dĤ z]; X = R, S, T, U: n E[ddĤ]).
DNTK_STATISTICS = {"P": ("P/(nΘ²)", 2, 0), "Q": ("Q/(nΘ²)", 2, 0), "R": ("RK/(nΘ³)", 3, 1),
                   "S": ("SK/(nΘ³)", 3, 1), "T": ("TK/(nΘ³)", 3, 1), "U": ("UK/(nΘ³)", 3, 1)}


@dataclass(frozen=True)
class DNTKCriticality:
    r"""The dNTK (book Ch. 11) and ddNTKs (Ch. ∞) of one input at criticality: depth scaling (equal widths n).

    The statistics P, Q (n E[dĤ z]) and R, S, T, U (n E[ddĤ]) of :mod:`pdlt.theory.dntk` are reported in
    the dimensionless combinations (:data:`DNTK_STATISTICS`; Θ, K, n = n_{ℓ−1} of the same layer ℓ)

    .. math:: \frac{P}{n\Theta^2},\ \frac{Q}{n\Theta^2},\quad \frac{RK}{n\Theta^3},\ \frac{SK}{n\Theta^3},\
              \frac{TK}{n\Theta^3},\ \frac{UK}{n\Theta^3}\ \approx\ \frac{c(f_W)\,\ell^{e}}{n},\qquad
              c(f_W) = c_0 + c_1 f_W + c_2 f_W^2 + c_3 f_W^3,

    with f_W ∈ [0, 1] the weights' share of Θ (the part of Θ ∝ λ_W; the rest comes from λ_b).

    Why these ratios (dimensional analysis). dĤ carries two factors of the learning-rate tensor λ and
    ddĤ three, so under λ → cλ: Θ → cΘ, (P, Q) → c²(P, Q), (R, S, T, U) → c³(R, S, T, U). For the
    scale-invariant class, rescaling the input x → sx together with λ_b → s²λ_b (the bias has the units
    of z) is an exact symmetry of the network at C_b = 0: z → sz, K → s²K, Θ → s²Θ, and dĤ, ddĤ, being
    (d/dθ)² z³ and (d/dθ)³ z⁴ contracted with λ's, scale as z³ and z⁴: E[dĤ z] → s⁴, E[ddĤ] → s⁴. The
    only ratios invariant under both are P/Θ², Q/Θ² and (R, S, T, U)·K/Θ³. They measure what the dNTKs
    do in training: a gradient step with the natural η ~ 1/Θ moves the outputs by O(ε) (the error, of
    the size of z ~ √K) and changes the NTK by ΔĤ = −η dĤ ε, a relative change ΔĤ/Θ ~ dĤ z/Θ² ~
    (P, Q)/(nΘ²); the ddNTKs change dĤ (and Ĥ at order η²), relative size η² ddĤ ε²/Θ ~ (R…U)K/(nΘ³).
    The same ratios are used for the other classes (no exact symmetry there; K still sets the size of z).

    Attributes
    ----------
    learning_rates : which λ the laws assume, in words (the learning-rate equivalence principle's
        per-layer scalings; their overall L-dependent factor cancels in every ratio).
    normalization : the ratios and the reason for them, in words.
    laws : one :class:`PowerLaw` per statistic (``at`` omits the 1/n; ``coefficient`` is NaN where it
        depends on f_W): ``"analytic"`` (scale-invariant: closed forms; half-stable: exact solution
        derived here, marked "(derived)") or ``"recursion fit"`` (K* = 0).
    scaling : {"P": (e, (c₀, c₁, …)), …}: n·X̂ ≈ c(f_W) ℓ^e at large depth (leading term).
    exact : {"P": ((a₀₀, a₀₁, …), (a₁₀, …), …), …} where the recursions are solved exactly
        (scale-invariant; half-stable at K⁽¹⁾ = K*): n·X̂ = Σ_ij a_ij f_W^j ℓ^(i−k), k the power of Θ
        (2 for P, Q; 3 for R, S, T, U). Empty for the K* = 0 class (fits only).
    notes : class-specific remarks in words (conventions, what drives the growth).
    unknown : what is not known for this class (stated, not guessed), or None.
    """

    learning_rates: str
    normalization: str
    laws: tuple[PowerLaw, ...] = field(default=())
    scaling: dict = field(default_factory=dict, hash=False)
    exact: dict = field(default_factory=dict, hash=False)
    notes: str = ""
    unknown: str | None = None

    def _name(self, name: str) -> str:
        for key, (quantity, _, _) in DNTK_STATISTICS.items():
            if name in (key, quantity):
                return key
        raise ValueError(f"unknown dNTK statistic {name!r}: one of {', '.join(DNTK_STATISTICS)} "
                         f"({', '.join(q for q, _, _ in DNTK_STATISTICS.values())})")

    def law(self, quantity: str, source: str | None = None) -> PowerLaw | None:
        """The law of ``quantity`` (``"Q"`` or ``"Q/(nΘ²)"``, …), from ``source`` if given, or None."""
        q = DNTK_STATISTICS[self._name(quantity)][0]
        for p in self.laws:
            if p.quantity == q and (source is None or p.source == source):
                return p
        return None

    def coefficient(self, name: str, f_W: float) -> float:
        """c(f_W) of n·X̂ ≈ c(f_W) ℓ^e for the statistic ``name`` (``"P"`` … ``"U"``)."""
        key = self._name(name)
        if key not in self.scaling:
            raise ValueError(f"no depth scaling of {key} for this class: {self.unknown}")
        f = _validate.real("f_W", f_W, low=0.0, high=1.0)
        return float(sum(c * f ** j for j, c in enumerate(self.scaling[key][1])))

    def exponent(self, name: str) -> float:
        """e of n·X̂ ≈ c(f_W) ℓ^e for the statistic ``name``."""
        key = self._name(name)
        if key not in self.scaling:
            raise ValueError(f"no depth scaling of {key} for this class: {self.unknown}")
        return float(self.scaling[key][0])

    def value(self, name: str, ell, f_W: float) -> np.ndarray:
        """Exact n·X̂ at depth(s) ℓ ≥ 1 and weight share f_W, where the recursions are solved exactly
        (``exact``); ValueError for the K* = 0 class (use the fitted laws)."""
        key = self._name(name)
        if key not in self.exact:
            raise ValueError(f"no exact solution of the {key} recursion for this class: the laws are "
                             f"recursion fits ({self.unknown})")
        f = _validate.real("f_W", f_W, low=0.0, high=1.0)
        ell = np.asarray(ell, dtype=np.float64)
        k = DNTK_STATISTICS[key][1]
        return sum(a * f ** j * ell ** (i - k) for i, row in enumerate(self.exact[key])
                   for j, a in enumerate(row) if a != 0.0) + 0.0 * ell

    def to_dict(self) -> dict:
        return {"learning_rates": self.learning_rates, "normalization": self.normalization,
                "statistics": {k: q for k, (q, _, _) in DNTK_STATISTICS.items()},
                "laws": [p.to_dict() for p in self.laws],
                "scaling": {k: {"exponent": _jsonable(e), "coefficients": [_jsonable(c) for c in cs]}
                            for k, (e, cs) in self.scaling.items()},
                "exact": {k: [[_jsonable(a) for a in row] for row in rows] for k, rows in self.exact.items()},
                "notes": self.notes, "unknown": self.unknown}

    def report_lines(self) -> list[str]:
        """The dNTK section of :meth:`Criticality.report` (unindented)."""
        lines = _wrap(self.normalization, 92) + _wrap(f"Learning rates: {self.learning_rates}", 92)
        if self.laws:
            lines += ["Depth scaling (one input, large depth ℓ):"]
            w = min(max(len(p.text) for p in self.laws), 64)
            lines += [f"  {p.text:<{w}}  [{p.source}]" for p in self.laws]
        if self.notes:
            lines += _wrap(self.notes, 92)
        if self.unknown:
            lines += _wrap(self.unknown, 92)
        return lines


@dataclass(frozen=True)
class Criticality:
    """The critical initialization of an activation and its universality class (book Ch. 5).

    Attributes
    ----------
    activation : the :class:`~pdlt.activations.Activation`.
    universality_class : ``"scale-invariant"``, ``"K*=0"``, ``"half-stable"`` or ``"none"``.
    C_b, C_W : critical bias and weight variances (None when there is no criticality).
    K_star : the critical fixed point (None for the scale-invariant line of fixed points and for "none").
    a1, b1 : σ₃/σ₁ + ¾(σ₂/σ₁)² and σ₃/σ₁ + (σ₂/σ₁)² when σ(0) = 0 and σ′(0) ≠ 0, else None.
    p_perp : exponent of δδK[2] ∝ ℓ^{−p⊥} (b₁/a₁ for K*=0; 4h(K*)/f″(K*) for half-stable).
    stable_side : from which side the critical fixed point attracts, e.g. ``"above (K > K*)"``.
    nu : coefficient of V/(nK²) ≈ ν ℓ/n (scale-invariant: ν(ℓ−1)/n exactly).
    explanation : plain words: why this class, what it means in practice.
    asymptotics : :class:`PowerLaw` entries, analytic first, then recursion fits.
    ntk : the NTK section (:class:`NTKCriticality`, book Ch. 9); None without criticality.
    dntk : the dNTK/ddNTK section (:class:`DNTKCriticality`, book Ch. 11, ∞); None without criticality.
    """

    activation: Activation
    universality_class: str
    C_b: float | None
    C_W: float | None
    K_star: float | None
    a1: float | None
    b1: float | None
    p_perp: float | None
    stable_side: str | None
    nu: float | None
    explanation: str
    asymptotics: tuple[PowerLaw, ...] = field(default=())
    ntk: NTKCriticality | None = None
    dntk: DNTKCriticality | None = None

    def law(self, quantity: str, source: str = "analytic") -> PowerLaw | None:
        """The asymptotic law of ``quantity`` from ``source``, or None."""
        for p in self.asymptotics:
            if p.quantity == quantity and p.source == source:
                return p
        return None

    def to_dict(self) -> dict:
        """A JSON-serializable dict (NaN/inf become None)."""
        act = self.activation
        return {
            "activation": act.name,
            "activation_params": {k: _jsonable(v) for k, v in act.params.items()},
            "universality_class": self.universality_class,
            **{k: _jsonable(getattr(self, k)) for k in
               ("C_b", "C_W", "K_star", "a1", "b1", "p_perp", "stable_side", "nu")},
            "explanation": self.explanation,
            "asymptotics": [p.to_dict() for p in self.asymptotics],
            "ntk": None if self.ntk is None else self.ntk.to_dict(),
            "dntk": None if self.dntk is None else self.dntk.to_dict(),
        }

    def report(self) -> str:
        """A readable multi-line summary."""
        lines = [f"Criticality of {_label(self.activation)}: {self.universality_class}"]
        if self.C_W is not None:
            ks = "line of fixed points (every K)" if self.K_star is None else f"{self.K_star:.10g}"
            lines.append(f"  critical C_b = {self.C_b:.10g}, C_W = {self.C_W:.10g}, K* = {ks}")
        extra = [f"{k} = {getattr(self, k):.6g}" for k in ("a1", "b1", "p_perp", "nu")
                 if getattr(self, k) is not None]
        if extra:
            lines.append("  " + ", ".join(extra))
        if self.stable_side:
            lines.append(f"  stable side: {self.stable_side}")
        lines.append("")
        lines += ["  " + s for s in _wrap(self.explanation, 94)]
        if self.asymptotics:
            lines += ["", "  Asymptotics (large depth ℓ):"]
            w = max(len(p.text) for p in self.asymptotics)
            lines += [f"    {p.text:<{w}}  [{p.source}]" for p in self.asymptotics]
        if self.ntk is not None:
            lines += ["", "  NTK and learning rates (book Ch. 9):"]
            lines += ["    " + s for s in self.ntk.report_lines()]
        if self.dntk is not None:
            lines += ["", "  dNTK and ddNTKs at criticality (book Ch. 11, ∞):"]
            lines += ["    " + s for s in self.dntk.report_lines()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


def _wrap(text: str, width: int) -> list[str]:
    import textwrap
    out = []
    for para in text.split("\n"):
        out += textwrap.wrap(para, width) or [""]
    return out


# ---------------------------------------------------------------------------------------------
# structural tests on σ


def _sigma_scale(act: Activation) -> float:
    with np.errstate(all="ignore"):
        v = np.abs(act.sigma(np.linspace(-3.0, 3.0, 61)))
    return float(np.max(v[np.isfinite(v)], initial=0.0))


def _homogeneity(act: Activation) -> float | None:
    """p with σ(λz) = λ^p σ(z) for λ > 0 (checked at several z, λ), or None."""
    if isinstance(act, PiecewiseLinear):
        return 1.0
    zs = np.array([-2.7, -1.3, -0.45, 0.45, 1.3, 2.7])
    lams = np.array([0.37, 2.0, 5.3])
    with np.errstate(all="ignore"):
        s = np.asarray(act.sigma(zs), dtype=float)
        sl = np.asarray(act.sigma(lams[:, None] * zs[None, :]), dtype=float)
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(sl))):
        return None
    i = int(np.argmax(np.abs(s)))
    if s[i] == 0.0:
        return None
    r = sl[1, i] / s[i]                          # λ = 2
    if r <= 0:
        return None
    p = math.log(r) / math.log(2.0)
    if abs(p - round(p)) < 1e-9:
        p = float(round(p))
    pred = lams[:, None] ** p * s[None, :]
    S = float(np.max(np.abs(pred)))
    if np.all(np.abs(sl - pred) <= 1e-9 * np.abs(pred) + 1e-12 * S):
        return p
    return None


def _smooth_at_zero(act: Activation) -> bool:
    """σ′ and σ″ continuous at 0 (one-sided polynomial fits agree); registered smooth ones: True."""
    if not isinstance(act, CallableActivation):
        return act.smooth and act.kink is None
    hs = 0.02 * np.arange(1, 9)
    s0 = float(act.sigma(np.array(0.0)))
    ders = []
    for side in (1.0, -1.0):
        z = side * hs
        A = np.stack([z ** k for k in range(1, 7)], axis=1)
        c = np.linalg.lstsq(A, act.sigma(z) - s0, rcond=None)[0]
        ders.append((c[0], 2.0 * c[1]))
    (p1, p2), (m1, m2) = ders
    return abs(p1 - m1) <= 1e-5 * (1 + abs(p1)) and abs(p2 - m2) <= 1e-3 * (1 + abs(p1) + abs(p2))


def _taylor0(act: Activation) -> tuple[float, float, float, float]:
    with np.errstate(all="ignore"):
        return tuple(float(np.asarray(act.derivative(np.array(0.0), k))) for k in range(4))


# ---------------------------------------------------------------------------------------------
# asymptotics from the iterated recursions


def _trajectory(act: Activation, C_b: float, C_W: float, K1: float, depth: int):
    """K, V, G¹ (single input, equal widths, per unit 1/n) and δK[1], δδK[2] for ℓ = 1..depth."""
    from .network import theory    # pdlt.theory's own single-input path: the twin of these laws

    x = math.sqrt(max(K1 - C_b, 0.0) / C_W)
    net = MLP(input_dim=1, width=1, depth=depth, activation=act, C_b=C_b, C_W=C_W)
    try:
        th = theory(net, np.array([[x]]))
    except OverflowError:          # the recursion left the regime of any real network: no fits
        return None
    K = np.array([s.K[0, 0] for s in th.layers])
    V = np.array([s.V[0, 0, 0, 0] for s in th.layers])
    G1 = np.array([s.G1[0, 0] for s in th.layers])
    c_par = C_W * _g(act, K)[1]
    sp2, dsp2 = _sp2_both(act, K)
    c_perp, hh = C_W * sp2, 0.5 * C_W * dsp2
    d1, d2 = np.empty(depth), np.empty(depth)
    d1[0] = d2[0] = 1.0
    for i in range(depth - 1):     # δ-expansion, formula sheet §3
        d1[i + 1] = c_par[i] * d1[i]
        d2[i + 1] = c_perp[i] * d2[i] + hh[i] * d1[i] ** 2
    return {"K": K, "V": V, "G1": G1, "chi_par": c_par, "chi_perp": c_perp, "d1": d1, "d2": d2}


def _fit(quantity: str, values: np.ndarray, depth: int) -> PowerLaw | None:
    """Least-squares log-log slope over the last decade ℓ ∈ [depth/10, depth]."""
    ell = np.arange(1, depth + 1, dtype=np.float64)
    sel = ell >= max(2.0, depth / 10.0)
    y = values[sel]
    if y.size < 3 or not np.all(np.isfinite(y)) or np.any(y == 0):
        return None
    sgn = float(np.sign(y[-1]))
    if np.any(np.sign(y) != sgn):
        return None
    e, c = np.polyfit(np.log(ell[sel]), np.log(np.abs(y)), 1)
    return _law(quantity, sgn * math.exp(c), e, "recursion fit")


def _fits(traj: dict | None, depth: int, K_star: float | None, scale_invariant: bool,
          note: str = "") -> list[PowerLaw]:
    if traj is None:
        return []
    K = traj["K"]
    series = []
    if scale_invariant:
        series += [("K/K⁽¹⁾", K / K[0]), ("V/(nK²)", traj["V"] / K ** 2)]
    else:
        series += [("K" if not K_star else "K − K*", K - (K_star or 0.0)),
                   ("1 − χ∥", 1.0 - traj["chi_par"]), ("1 − χ⊥", 1.0 - traj["chi_perp"]),
                   ("δK[1]", traj["d1"]), ("δδK[2]", traj["d2"]),
                   ("V/(nK²)", traj["V"] / K ** 2), ("G1", traj["G1"])]
    out = []
    for q, v in series:
        p = _fit(q, v, depth)
        if p is not None and note:
            p = PowerLaw(p.quantity, p.coefficient, p.exponent, p.source, f"{p.text} {note}")
        if p is not None:
            out.append(p)
    return out


# ---------------------------------------------------------------------------------------------
# the classifier


def criticality(activation, *, K_range=(1e-6, 60.0), depth=2000) -> Criticality:
    r"""Critical initialization (C_b, C_W) and universality class of an activation (book Ch. 5).

    Criticality: a fixed point of the kernel map with both susceptibilities equal to one,

    .. math:: K^\star = C_b + C_W\langle\sigma^2\rangle_{K^\star},\qquad
              \chi_\parallel(K^\star) = C_W g'(K^\star) = 1,\qquad
              \chi_\perp(K^\star) = C_W\langle\sigma'^2\rangle_{K^\star} = 1 .

    Decision procedure (no lookup tables; works for any activation or user callable):

    1. σ(λz) = λ^p σ(z) checked numerically: p = 1 → ``"scale-invariant"`` (§5.2) with C_b = 0,
       C_W = 1/A₂, A₂ = g(1), ν = 3A₄/A₂² − 1 (A₄ = ⟨σ⁴⟩₁/3); p ≠ 1 → ``"none"``, since
       χ∥/χ⊥ = (2p−1)/p ≠ 1 at every K (§5.3.2).
    2. σ(0) = 0, σ′(0) = σ₁ ≠ 0 (σ smooth at 0): a₁ = σ₃/σ₁ + ¾(σ₂/σ₁)², b₁ = σ₃/σ₁ + (σ₂/σ₁)²;
       a₁ < 0 → ``"K*=0"`` (§5.3.3) with C_b = 0, C_W = 1/σ₁², p⊥ = b₁/a₁, ν = 2/3.
    3. Otherwise roots K* of g′(K) = ⟨σ′²⟩_K on a log grid over K_range (Brent, |ΔK| ≲ 1e-13 K),
       C_W = 1/⟨σ′²⟩_{K*}, C_b = K* − C_W g(K*) ≥ 0 (the smallest such K*); f″(K*) = C_W g″(K*) ≠ 0
       → ``"half-stable"`` (§5.3.4), stable from above if f″ < 0, from below if f″ > 0.
    4. Otherwise ``"none"`` with the reason in plain words.

    Then the single-input recursions for K, V, G¹ (via :func:`pdlt.theory`) and the δ-expansion
    for δK[1], δδK[2] are iterated for ``depth`` layers from the critical point's stable side and
    log-log slopes are fitted on the last decade, next to the analytic power laws.

    Parameters
    ----------
    activation : registered name, :class:`~pdlt.activations.Activation` or callable σ(z).
    K_range : (K_min, K_max), 0 < K_min < K_max: where to search for K* > 0.
    depth : number of layers for the fitted power laws (≥ 20).

    Raises ValueError for a discontinuous activation (σ′ ∝ δ: χ⊥ diverges), for one whose Gaussian
    expectations diverge in K_range (e.g. exp(z²)), and for an invalid K_range or depth.
    """
    act = get_activation(activation)
    lo, hi = _K_range(K_range)
    depth = _validate.positive_int("depth", depth, minimum=20)
    Ks = _log_grid(lo, hi)
    _check_tails(act, Ks, "; narrow K_range")
    _check_no_delta(act)
    scale = _sigma_scale(act)
    if scale == 0.0:
        raise ValueError(f"activation {_label(act)} is identically zero on [-3, 3]: nothing propagates")

    p = _homogeneity(act)
    if p is not None and abs(p - 1.0) <= 1e-9:
        return _scale_invariant(act, depth)
    if p is not None:
        return _homogeneous_none(act, p)

    s0, s1, s2, s3 = _taylor0(act)
    zero_at_0 = abs(s0) <= 1e-12 * scale
    smooth0 = _smooth_at_zero(act)
    a1 = b1 = None
    if zero_at_0 and smooth0 and abs(s1) > 1e-8 * scale:
        a1 = s3 / s1 + 0.75 * (s2 / s1) ** 2
        b1 = s3 / s1 + (s2 / s1) ** 2
        if a1 < -1e-9:
            return _k_star_zero(act, s1, a1, b1, depth)
        why_not_0 = (f"σ(0) = 0 and σ′(0) = {s1:.6g}, but a₁ = σ₃/σ₁ + ¾(σ₂/σ₁)² = {a1:.6g} ≥ 0: with "
                     f"C_b = 0, C_W = 1/σ₁² the kernel map K' = K + a₁K² + … pushes K away from 0 "
                     f"(or is flat), so K* = 0 is not an attractive critical point.")
    elif not zero_at_0:
        why_not_0 = (f"σ(0) = {s0:.6g} ≠ 0 rules out K* = 0: even at C_b = 0 the next layer has "
                     f"K' → C_W σ(0)² > 0 as K → 0, so K = 0 is not a fixed point.")
    elif not smooth0:
        why_not_0 = ("σ(0) = 0 but σ is not twice differentiable at 0 (its one-sided derivatives "
                     "differ), so the K* = 0 expansion (a₁, b₁) does not apply.")
    else:
        why_not_0 = (f"σ(0) = 0 and σ′(0) = {s1:.3g} ≈ 0: χ⊥ → C_W σ′(0)² = 0 as K → 0, so K* = 0 "
                     f"cannot be critical.")

    # step 3: K* > 0 with χ∥ = χ⊥
    g, g1, _ = _g(act, Ks)
    sp = _sp2(act, Ks)
    with np.errstate(divide="ignore", invalid="ignore"):
        R = g1 / sp - 1.0
    if not np.all(np.isfinite(R)):
        k = float(Ks[~np.isfinite(R)][0])
        raise ValueError(f"activation {_label(act)}: χ∥/χ⊥ is not finite at K = {k:.3g} (⟨σ′²⟩_K = "
                         f"{float(sp[~np.isfinite(R)][0]):.3g}); narrow K_range")

    def ratio(k):
        kk = np.array(k)
        return float(_g(act, kk)[1] / _sp2(act, kk)) - 1.0

    roots, rejected = [], []
    for i in _sign_changes(R):
        k = float(Ks[i]) if R[i] == 0 else _brent(ratio, float(Ks[i]), float(Ks[i + 1]))
        kk = np.array(k)
        gk, _, g2k = (float(x) for x in _g(act, kk))
        C_W = 1.0 / float(_sp2(act, kk))
        C_b = k - C_W * gk
        if C_b < -1e-12 * k:
            rejected.append((k, C_b))
            continue
        roots.append((k, max(C_b, 0.0), C_W, C_W * g2k))
    if roots:
        return _half_stable(act, roots, rejected, a1, b1, why_not_0, (lo, hi), depth)

    rmin, rmax = float(np.min(R + 1.0)), float(np.max(R + 1.0))
    reason = (f"{why_not_0} And g′(K) − ⟨σ′²⟩_K has no root for K in ({lo:g}, {hi:g}): χ∥/χ⊥ stays "
              f"between {rmin:.4g} and {rmax:.4g} there, so no choice of C_b, C_W makes χ∥ = χ⊥ = 1 "
              f"at a fixed point.")
    if rejected:
        reason += (" (Roots at K = " + ", ".join(f"{k:.6g}" for k, _ in rejected)
                   + " would need a negative bias variance C_b.)")
    reason += (" In practice: there is no initialization that keeps both the size and the angles of "
               "signals from changing exponentially with depth; such networks must stay shallow "
               "(or use a different activation).")
    return Criticality(act, "none", None, None, None, a1, b1, None, None, None, reason, ())


def _scale_invariant(act: Activation, depth: int) -> Criticality:
    E = Expectations(act)
    A2 = float(E.g_derivs(np.array(1.0))[0])
    A4 = float(E.sigma4(np.array(1.0))) / 3.0
    if not A2 > 0:
        raise ValueError(f"activation {_label(act)} has ⟨σ²⟩ = 0")
    C_W = 1.0 / A2
    nu = 3.0 * A4 / A2 ** 2 - 1.0
    he = " (He initialization)" if abs(C_W - 2.0) < 1e-12 else ""
    expl = (f"σ(λz) = λσ(z) for every λ > 0 (σ is linear on each half-line), so ⟨σ²⟩_K = A₂K with "
            f"A₂ = {A2:.6g}, and χ∥ = χ⊥ = C_W·A₂ at every K (h = 0). Criticality needs C_b = 0 and "
            f"C_W = 1/A₂ = {C_W:.10g}: then every K is a fixed point (a line of fixed points), so the "
            f"size of each input's signal is preserved exactly through depth, neither exploding nor "
            f"vanishing. In practice: initialize with zero bias variance and weight variance "
            f"{C_W:.6g}/fan-in{he}. The leading finite-width effect grows linearly with depth, "
            f"V/(nK²) = ν(ℓ−1)/n with ν = 3A₄/A₂² − 1 = {nu:.6g} (A₄ = ⟨σ⁴⟩_1/3 = {A4:.6g}; ν ≥ 2 "
            f"always): keep the depth-to-width ratio L/n well below 1/ν = {1 / nu:.3g}.")
    laws = [_law("K/K⁽¹⁾", 1.0, 0.0, "analytic", "K = K⁽¹⁾ (constant: line of fixed points)"),
            _law("V/(nK²)", nu, 1.0, "analytic", f"V/(nK²) = {_num(nu)}(ℓ−1)/n"),
            _law("G1", 0.0, 0.0, "analytic", "G1 = 0 (E[z²] propagates exactly)")]
    laws += _fits(_trajectory(act, 0.0, C_W, 1.0, depth), depth, None, True)
    return _with_dntk_scale_invariant(_with_ntk_scale_invariant(
        Criticality(act, "scale-invariant", 0.0, C_W, None, None, None, None, None, nu, expl, tuple(laws))))


def _homogeneous_none(act: Activation, p: float) -> Criticality:
    if p == 0.0:
        reason = ("σ is constant: the next layer's preactivations do not depend on the input at all "
                  "(χ∥ = χ⊥ = 0), so there is nothing to make critical.")
    elif p <= 0.5:
        reason = (f"σ is homogeneous of degree p = {_num(p)} ≤ 1/2: ⟨σ′²⟩_K diverges (σ′ ∝ |z|^(p−1) "
                  f"is not square-integrable at 0), so χ⊥ is infinite.")
    else:
        reason = (f"σ is homogeneous of degree p = {_num(p)} (σ(λz) = λ^p σ(z), like the monomial z^p), "
                  f"so ⟨σ²⟩_K ∝ K^p and χ∥/χ⊥ = (2p−1)/p = {(2 * p - 1) / p:.6g} at every K and for every "
                  f"C_b, C_W: χ∥ and χ⊥ can never both be 1. In practice: the kernel either explodes or "
                  f"collapses (for p > 1, K' ∝ K^p runs off super-exponentially), so such networks "
                  f"must stay shallow.")
    return Criticality(act, "none", None, None, None, None, None, None, None, None, reason, ())


def _k_star_zero(act: Activation, s1: float, a1: float, b1: float, depth: int) -> Criticality:
    C_W = 1.0 / s1 ** 2
    p_perp = b1 / a1
    nu = 2.0 / 3.0
    expl = (f"σ(0) = 0 and σ′(0) = σ₁ = {s1:.6g} ≠ 0, with a₁ = σ₃/σ₁ + ¾(σ₂/σ₁)² = {a1:.6g} < 0. "
            f"With C_b = 0 and C_W = 1/σ₁² = {C_W:.10g} the kernel map is K' = K + a₁K² + O(K³): "
            f"K* = 0 is a fixed point with χ∥ = χ⊥ = 1, approached from above only slowly, as the "
            f"power law K ≈ 1/((−a₁)ℓ) = {1 / -a1:.4g}/ℓ instead of exponentially, so signals "
            f"(and gradients) survive through very deep networks. Nearby inputs stay distinguishable: "
            f"their distance decays as ℓ^(−p⊥) with p⊥ = b₁/a₁ = {p_perp:.4g}. In practice: "
            f"initialize with zero bias variance and weight variance {C_W:.6g}/fan-in; any other "
            f"choice makes the kernel shrink or blow up exponentially with depth. Finite-width "
            f"effects grow as V/(nK²) ≈ (2/3)ℓ/n, so the depth-to-width ratio L/n controls how far "
            f"the network is from its infinite-width (Gaussian) limit.")
    laws = [_law("K", 1.0 / -a1, -1.0, "analytic"),
            _law("1 − χ∥", 2.0, -1.0, "analytic"),
            _law("1 − χ⊥", p_perp, -1.0, "analytic"),
            _law("δK[1]", math.nan, -2.0, "analytic"),
            _law("δδK[2]", math.nan, -p_perp, "analytic"),
            _law("V/(nK²)", nu, 1.0, "analytic"),
            _law("G1", 1.0 / (3.0 * a1), 0.0, "analytic")]
    traj = _trajectory(act, 0.0, C_W, 1.0, depth)
    laws += _fits(traj, depth, None, False)
    crit = Criticality(act, "K*=0", 0.0, C_W, 0.0, a1, b1, p_perp, "above (K > K*)", nu, expl, tuple(laws))
    return _with_dntk_k_star_zero(_with_ntk_k_star_zero(crit, traj, depth), traj, depth)


def _half_stable(act, roots, rejected, a1, b1, why_not_0, K_range, depth) -> Criticality:
    K_star, C_b, C_W, f2 = roots[0]
    kk = np.array(K_star)
    notes = ""
    if len(roots) > 1:
        notes += (" Other solutions of χ∥ = χ⊥ = 1 in K_range: K* = "
                  + ", ".join(f"{r[0]:.6g} (C_b = {r[1]:.6g}, C_W = {r[2]:.6g})" for r in roots[1:]) + ".")
    if rejected:
        notes += (" Roots at K = " + ", ".join(f"{k:.6g}" for k, _ in rejected)
                  + " were discarded: they would need a negative bias variance.")
    if abs(f2) * max(K_star, 1.0) <= 1e-10:
        expl = (f"{why_not_0} χ∥ = χ⊥ at K* = {K_star:.10g} (C_b = {C_b:.10g}, C_W = {C_W:.10g}), but "
                f"there the map's curvature f″(K*) vanishes too, so the fixed point's stability needs "
                f"higher orders; no universality class is assigned.{notes}")
        return Criticality(act, "none", C_b, C_W, K_star, a1, b1, None, None, None, expl, ())
    above = f2 < 0
    side = "above (K > K*)" if above else "below (K < K*)"
    hK = 0.5 * C_W * float(_sp2_dK(act, kk))
    p_perp = 4.0 * hK / f2
    g0 = float(_g(act, kk)[0])
    A = C_W ** 2 * (float(Expectations(act).sigma4(kk)) - g0 * g0)
    nu = A / (5.0 * K_star ** 2)
    ell_c = 2.0 / (abs(f2) * K_star)
    others = [fp for fp in fixed_points(act, C_b, C_W, K_range=(K_range[0], max(K_range[1], 4 * K_star)))
              if fp.K == fp.K and abs(fp.K - K_star) > 1e-6 * K_star]
    wrong = [fp for fp in others if (fp.K < K_star) == above]
    if wrong:
        fp = min(wrong, key=lambda q: abs(q.K - K_star))
        fate = (f" Inputs on the other side flow away from K* to the {fp.stability} fixed point at "
                f"K = {fp.K:.4g}, which is not critical (χ∥ = {fp.chi_parallel:.6g}, "
                f"χ⊥ = {fp.chi_perp:.6g})")
        if fp.chi_perp < 1:
            fate += (f": there nearby inputs become indistinguishable over about "
                     f"1/|ln χ⊥| ≈ {1 / abs(math.log(fp.chi_perp)):.3g} layers.")
        else:
            fate += ": there nearby inputs are driven apart (χ⊥ > 1)."
    else:
        fate = " Inputs on the other side drift away from K*" + (" towards K = 0." if above else ".")
    flat = (f" The map is very flat at K* (|f″(K*)| = {abs(f2):.3g}): a deviation ΔK₀ only shrinks "
            f"as ΔK₀/(1 + |f″|ΔK₀ℓ/2), so for depths up to ℓ_c = 2/(|f″|K*) ≈ {ell_c:.3g} a deviation "
            f"of order K* hardly decays, and the 1/ℓ power law only holds for ℓ ≫ ℓ_c."
            if ell_c > 50 else "")
    expl = (f"{why_not_0} Instead χ∥/χ⊥ = 1 at K* = {K_star:.10g} > 0, and choosing C_W = 1/⟨σ′²⟩_K* "
            f"= {C_W:.10g}, C_b = K* − C_W⟨σ²⟩_K* = {C_b:.10g} makes K* a fixed point with "
            f"χ∥ = χ⊥ = 1. There the kernel map is tangent to the diagonal with curvature "
            f"f″(K*) = C_W g″(K*) = {f2:.4g} {'<' if above else '>'} 0, so K* attracts only from "
            f"{'above' if above else 'below'} (half-stable): inputs whose first-layer kernel "
            f"K⁽¹⁾ = C_b + C_W|x|²/n₀ is {'larger' if above else 'smaller'} than K* approach it as a "
            f"power law, K − K* ≈ {-2 / f2:.4g}/ℓ.{fate}{flat} In practice: use C_b = {C_b:.6g}, "
            f"C_W = {C_W:.6g}/fan-in and scale the inputs so that K⁽¹⁾ ≈ K* = {K_star:.4g}, erring "
            f"on the {'high' if above else 'low'} side. Finite-width effects: for ℓ ≪ ℓ_c the "
            f"kernel sits near K* with χ∥ ≈ 1 and V/(nK²) grows as {5 * nu:.4g} ℓ/n (use this for "
            f"depth choices); only for ℓ ≫ ℓ_c does the growth slow to ν = {nu:.4g}, i.e. "
            f"V/(nK²) ≈ {nu:.4g} ℓ/n. The power laws marked 'derived' below are "
            f"leading-order results of expanding the map about K* (not from the book; the recursion "
            f"fits check them).{notes}")
    laws = [_law("K − K*", -2.0 / f2, -1.0, "analytic", note="(derived)"),
            _law("1 − χ∥", 2.0, -1.0, "analytic", note="(derived)"),
            _law("1 − χ⊥", p_perp, -1.0, "analytic", note="(derived)"),
            _law("δK[1]", math.nan, -2.0, "analytic", note="(derived)"),
            _law("δδK[2]", math.nan, -p_perp, "analytic", note="(derived)"),
            _law("V/(nK²)", nu, 1.0, "analytic", note="(derived)"),
            _law("G1", f2 * A / 40.0, 2.0, "analytic", note="(derived)")]
    K1 = 2.0 * K_star if above else max(0.5 * K_star, 0.5 * (C_b + K_star))
    traj = _trajectory(act, C_b, C_W, K1, depth)
    pre = f"(pre-asymptotic: ℓ_c ≈ {ell_c:.3g})" if depth < 100 * ell_c else ""
    laws += _fits(traj, depth, K_star, False, pre)
    return _with_dntk_half_stable(_with_ntk_half_stable(
        Criticality(act, "half-stable", C_b, C_W, K_star, a1, b1, p_perp, side, nu, expl, tuple(laws))))


# ---------------------------------------------------------------------------------------------
# NTK: exploding/vanishing gradients and the learning-rate equivalence principle (book Ch. 9)

_RECURSION = "Θ' = λ_b + λ_W g(K) + χ⊥ Θ"


@dataclass(frozen=True)
class GradientGrowth:
    """Exploding or vanishing gradients at large depth: the NTK recursion's per-layer factor χ⊥ (Ch. 9).

    ``K_limit``: where the single-input kernel flows from ``K1`` (0, a fixed point, ``inf``; for the
    scale-invariant class, whose χ⊥ does not depend on K, the kernel's own fate). ``chi_perp``: χ⊥
    there; ``rate`` = ln χ⊥ per layer; ``regime``: ``"exploding"`` (χ⊥ > 1), ``"vanishing"``
    (χ⊥ < 1) or ``"critical"`` (|χ⊥ − 1| ≤ 1e-8). ``text``: the same in words.
    """

    activation: Activation
    C_b: float
    C_W: float
    K1: float
    K_limit: float
    chi_perp: float
    rate: float
    regime: str
    text: str

    def to_dict(self) -> dict:
        return {"activation": self.activation.name, "C_b": self.C_b, "C_W": self.C_W, "K1": self.K1,
                **{k: _jsonable(getattr(self, k)) for k in ("K_limit", "chi_perp", "rate")},
                "regime": self.regime, "text": self.text}


def gradient_growth(activation, C_b, C_W, *, K1: float = 1.0, depth: int = 1000) -> GradientGrowth:
    r"""The exponential rate ln χ⊥ per layer at which the NTK's gradients explode or vanish (book Ch. 9).

    .. math:: \Theta^{(L)} = \sum_{\ell=1}^{L}\big[\lambda_b + \lambda_W g(K^{(\ell-1)})\big]
              \prod_{\ell'=\ell}^{L-1}\chi_\perp(K^{(\ell')}) ,\qquad
              \prod\chi_\perp \approx \chi_\perp(K_\infty)^{L-\ell}

    χ⊥ = C_W⟨σ′²⟩ is evaluated where the kernel goes at large depth: for the scale-invariant class
    χ⊥ = C_W A₂ at every K (ReLU: C_W/2); otherwise the kernel map is iterated from K1 for up to
    ``depth`` layers and χ⊥ is taken at the fixed point it reaches (K = 0 included, as the limit
    K → 0). Works for any (C_b, C_W) and any activation, including those without criticality.

    Raises ValueError for a discontinuous σ (χ⊥ = ∞) and for invalid arguments.
    """
    act = get_activation(activation)
    C_b, C_W = _C_b(C_b), _C_W(C_W)
    K1 = _validate.real("K1", K1, low=0.0, low_open=True)
    depth = _validate.positive_int("depth", depth, minimum=2)
    _check_no_delta(act)
    _check_tails(act, np.array([K1]))
    p = _homogeneity(act)
    if p is not None and abs(p - 1.0) <= 1e-9:
        chi = C_W * float(_sp2(act, np.array(1.0)))        # C_W A₂ at every K (K' = C_b + χK)
        if chi < 1.0 - 1e-12:
            K_lim = C_b / (1.0 - chi)
        else:
            K_lim = K1 if (C_b == 0.0 and chi <= 1.0 + 1e-12) else math.inf
        where = "every K (χ⊥ = C_W·A₂ does not depend on K)"
    else:
        K, converged, up = K1, False, True
        for _ in range(depth):
            with np.errstate(all="ignore"):
                Kn = C_b + C_W * float(_g(act, np.array(K))[0])
            if 0.0 <= Kn < 1e-200:              # flowed to K = 0 (its χ⊥ is the K → 0 limit)
                K = 0.0
                break
            if not (math.isfinite(Kn) and Kn < 1e6):
                K = math.inf
                break
            if abs(Kn - K) <= 1e-13 * max(K, 1e-300):
                K, converged = Kn, True
                break
            K, up = Kn, Kn > K
        _check_tails(act, np.array([min(K, 1e6)]))
        if K == math.inf:
            K_lim, chi = math.inf, C_W * float(_sp2(act, np.array(1e6)))
            where = "K → ∞ (χ⊥ evaluated at K = 1e6)"
        elif converged and K > 0:
            K_lim, chi = K, C_W * float(_sp2(act, np.array(K)))
            where = f"the fixed point K = {K:.6g}"
        else:       # slow (power-law) approach: the next fixed point in the direction of the flow
            with np.errstate(over="ignore"):     # e.g. a user's exp(−z) at the grid's large K
                fps = [fp for fp in fixed_points(act, C_b, C_W, K_range=(1e-10, max(1e4, 2.0 * K)))
                       if math.isfinite(fp.K)]
            ahead = [fp for fp in fps if (fp.K >= K if up else fp.K <= K)] or fps
            if ahead:
                fp = min(ahead, key=lambda q: abs(q.K - K))
                K_lim, chi = fp.K, fp.chi_perp
                where = "K → 0" if fp.K == 0.0 else f"the fixed point K = {fp.K:.6g}"
            else:
                K_lim, chi = K, C_W * float(_sp2(act, np.array(K)))
                where = f"K = {K:.6g} after {depth} layers (not converged)"
    rate = math.log(chi) if chi > 0 else -math.inf
    if chi > 1.0 + _MARGINAL:
        regime = "exploding"
        text = (f"χ⊥ = {chi:.6g} > 1 at {where}: exploding gradients. The backward factor "
                f"χ⊥^(L−ℓ) = e^({rate:.4g}·(L−ℓ)) that layer ℓ's contribution to Θ^(L) carries grows "
                f"by e every ≈ {1.0 / rate:.3g} layers, and Θ^(L) grows like χ⊥^L.")
    elif chi < 1.0 - _MARGINAL:
        regime = "vanishing"
        text = (f"χ⊥ = {chi:.6g} < 1 at {where}: vanishing gradients. The backward factor "
                f"χ⊥^(L−ℓ) = e^({rate:.4g}·(L−ℓ)) that layer ℓ's contribution to Θ^(L) carries shrinks "
                f"by e every ≈ {1.0 / abs(rate):.3g} layers."
                if math.isfinite(rate) else
                f"χ⊥ = 0 at {where}: no gradient reaches any layer below the output.")
    else:
        regime = "critical"
        text = (f"χ⊥ = 1 at {where}: no exponential growth or decay of the NTK; only power laws "
                f"remain (Criticality.ntk).")
    return GradientGrowth(act, C_b, C_W, K1, float(K_lim), float(chi), float(rate), regime, text)


def _is_odd(act: Activation) -> bool:
    z = np.array([0.3, 0.8, 1.7, 3.1])
    with np.errstate(all="ignore"):
        a, b = np.asarray(act.sigma(z), dtype=float), np.asarray(act.sigma(-z), dtype=float)
    return bool(np.all(np.isfinite(a)) and np.all(np.abs(a + b) <= 1e-12 * np.maximum(np.abs(a), 1e-300)))


def _theta_traj(traj: dict, C_b: float, C_W: float, lam_b: float, lam_W: float) -> np.ndarray:
    """Θ^{(ℓ)}, ℓ = 1..depth, iterated on a kernel trajectory: Θ' = λ_b + λ_W g(K) + χ⊥Θ."""
    K, chi = traj["K"], traj["chi_perp"]
    gs = (K - C_b) / C_W                        # g(K^{(ℓ−1)}) = (K^{(ℓ)} − C_b)/C_W, ℓ = 1..depth
    T = np.empty_like(K)
    T[0] = lam_b + lam_W * gs[0]
    for i in range(len(K) - 1):
        T[i + 1] = lam_b + lam_W * gs[i + 1] + chi[i] * T[i]
    return T


def _theta_limit_unit(crit: Criticality, K1: float | None) -> float:
    """theta_limit(act, 1, 1, K1=K1): λ̃_b + λ̃_W g* at λ̃ = 1, from learning_rates' own g*
    (theta_limit itself would solve criticality again)."""
    from .learning_rates import _g_star

    return 1.0 + float(_g_star(crit, K1))


def _with_ntk_scale_invariant(crit: Criticality) -> Criticality:
    A2 = 1.0 / crit.C_W
    nu = crit.nu
    r4 = (nu + 1.0) / 3.0                        # A₄/A₂², ν = 3r₄ − 1
    cw = _num(crit.C_W)
    chi = "C_W" if cw == "1" else f"C_W/{cw}"
    grad = (f"The single-input NTK obeys {_RECURSION} (formula sheet §5), so χ⊥ is the per-layer factor "
            f"of the gradients: layer ℓ's contribution to Θ^(L) carries the backward factor χ⊥^(L−ℓ). "
            f"Here χ⊥ = C_W·A₂ = {chi} at every K. Off criticality (C_W ≠ 1/A₂ = {cw}) that factor "
            f"explodes (C_W > {cw}) or vanishes (C_W < {cw}) exponentially, at the rate ln({chi}) per "
            f"layer: exploding or vanishing gradients (gradient_growth gives the numbers). With C_b = 0 "
            f"the weights' part of Θ is exactly ℓ λ_W A₂K⁽¹⁾ ({chi})^(ℓ−2). At criticality χ⊥ = 1 and with "
            f"layer-independent λ every layer adds the same Θ₁ = λ_b + λ_W A₂K*, so Θ = ℓΘ₁ grows "
            f"linearly with depth: the learning rates must scale as 1/L. Write f_W = λ_W A₂K*/Θ₁ ∈ [0, 1] "
            f"for the weights' share of Θ₁ and r₄ = A₄/A₂² = {_num(r4)}.")
    fl = {"A": ((r4 - 1.0) / 3.0, (r4 - 1.0) / 3.0, nu / 3.0), "B": (r4 / 3.0, 0.0, 0.0),
          "D": ((r4 - 1.0) / 2.0, nu / 2.0, 0.0), "F": (r4 / 2.0, 0.0, 0.0)}

    def poly(c):
        terms = [f"{_num(c[0])}"] + [f"{_num(x)}{t}" for x, t in zip(c[1:], (" f_W", " f_W²")) if x != 0]
        return " + ".join(terms)

    laws = (_law("Θ/Θ₁", 1.0, 1.0, "analytic", "Θ = ℓΘ₁ (Θ₁ = λ_b + λ_W A₂K*), exactly"),
            _law("A/(nΘ²)", math.nan, 1.0, "analytic",
                 f"A/(nΘ²) ≈ [(r₄−1)(1+f_W) + νf_W²] ℓ/(3n) = ({poly(fl['A'])}) ℓ/n"),
            _law("B/(nΘ²)", fl["B"][0], 1.0, "analytic", f"B/(nΘ²) ≈ r₄ℓ/(3n) = {_num(fl['B'][0])} ℓ/n"),
            _law("D/(nKΘ)", math.nan, 1.0, "analytic",
                 f"D/(nKΘ) ≈ (νf_W + r₄ − 1) ℓ/(2n) = ({poly(fl['D'])}) ℓ/n"),
            _law("F/(nKΘ)", fl["F"][0], 1.0, "analytic", f"F/(nKΘ) ≈ r₄ℓ/(2n) = {_num(fl['F'][0])} ℓ/n"))
    ntk = NTKCriticality(
        chi_perp=1.0, gradients=grad,
        off_criticality=(f"χ⊥ = C_W·A₂ = {chi} at every K: backward factor ({chi})^(L−ℓ), rate ln({chi}) per "
                         f"layer; with C_b = 0, Θ = ℓ λ_W A₂K⁽¹⁾ ({chi})^(ℓ−2) + λ_b (χ⊥^ℓ − 1)/(χ⊥ − 1)"),
        lambda_b="λ_b^(ℓ) = λ̃_b/L", lambda_W="λ_W^(ℓ) = λ̃_W/L",
        theta_limit=f"Θ^(L) = λ̃_b + λ̃_W A₂K* = λ̃_b + {_num(A2)} λ̃_W K*, exactly at every depth",
        theta_limit_value=_theta_limit_unit(crit, 1.0), theta_limit_at="λ̃_b = λ̃_W = 1, K* = 1",
        laws=laws, fluctuations=fl,
        unknown=None)
    return replace(crit, ntk=ntk)


def _with_ntk_k_star_zero(crit: Criticality, traj: dict | None, depth: int) -> Criticality:
    p = float(crit.p_perp)
    s1sq = 1.0 / crit.C_W
    a1 = float(crit.a1)
    w_lim = s1sq / (-a1)
    cw = _num(crit.C_W)
    chi = "C_W" if cw == "1" else f"C_W/{cw}"
    odd = (f"; σ is odd, so for C_b = 0 and C_W > {cw} that fixed point has χ⊥ > 1 (Gaussian Poincaré "
           f"inequality ⟨σ²⟩_K ≤ K⟨σ′²⟩_K; derived): exploding gradients" if _is_odd(crit.activation) else "")
    grad = (f"The single-input NTK obeys {_RECURSION} (formula sheet §5), so χ⊥ is the per-layer factor "
            f"of the gradients: layer ℓ's contribution to Θ^(L) carries Π χ⊥. At the critical point "
            f"K* = 0, χ⊥ = C_Wσ₁² = 1, approached only as χ⊥ ≈ 1 − p⊥/ℓ (p⊥ = {_num(p)}): the product "
            f"is (ℓ/L)^p⊥, a power law, not an exponential. Off criticality the kernel flows elsewhere and "
            f"χ⊥ ≠ 1 there: for C_b = 0 and C_W < 1/σ₁² = {cw}, K → 0 exponentially and "
            f"χ⊥ → C_Wσ₁² = {chi} < 1 (vanishing gradients, rate ln({chi}) per layer); for larger C_W or C_b > 0 "
            f"K flows to a fixed point K > 0 with χ⊥ ≠ 1 (gradient_growth gives the rate){odd}. Without "
            f"λ scaling, layer ℓ contributes ∝ (ℓ/L)^p⊥ through its bias and ∝ ℓ^(p⊥−1)/L^p⊥ through "
            f"its weights, so Θ ≈ λ_b ℓ/(1+p⊥) + λ_W σ₁²/((−a₁)p⊥): the bias part grows linearly "
            f"with depth, the weight part saturates.")
    if abs(p - 1.0) <= 1e-9:
        lb, lw = "λ_b^(ℓ) = λ̃_b/ℓ", "λ_W^(ℓ) = λ̃_W"
    else:
        lb = f"λ_b^(ℓ) = λ̃_b L^(p⊥−1)/ℓ^p⊥ (p⊥ = {_num(p)})"
        lw = "λ_W^(ℓ) = λ̃_W (L/ℓ)^(p⊥−1)"
    laws = [_law("Θ/λ_b", 1.0 / (1.0 + p), 1.0, "analytic",
                 f"Θ/λ_b ≈ ℓ/(1+p⊥) = {_num(1.0 / (1.0 + p))} ℓ (λ_W = 0)"),
            _law("Θ/λ_W", w_lim / p, 0.0, "analytic",
                 f"Θ/λ_W → σ₁²/((−a₁)p⊥) = {_num(w_lim / p)} (λ_b = 0)")]
    if traj is not None:
        for q, lam in (("Θ/λ_b", (1.0, 0.0)), ("Θ/λ_W", (0.0, 1.0))):
            fit = _fit(q, _theta_traj(traj, 0.0, crit.C_W, *lam), depth)
            if fit is not None:
                laws.append(fit)
    ntk = NTKCriticality(
        chi_perp=1.0, gradients=grad,
        off_criticality=(f"χ⊥ → C_Wσ₁² = {chi} as K → 0 (C_b = 0, C_W < {cw}): backward factor "
                         f"({chi})^(L−ℓ), rate ln({chi}) per layer; elsewhere χ⊥ at the fixed point reached"),
        lambda_b=lb, lambda_W=lw,
        theta_limit=f"Θ^(L) → λ̃_b + λ̃_W σ₁²/(−a₁) = λ̃_b + {_num(w_lim)} λ̃_W as L → ∞",
        theta_limit_value=_theta_limit_unit(crit, None), theta_limit_at="λ̃_b = λ̃_W = 1, L → ∞",
        laws=tuple(laws), fluctuations={},
        unknown=("NTK fluctuations: the power laws of A, B, D, F for the K* = 0 class are not known to "
                 "pdlt (not in the formula sheet, §12, and not derived here). pdlt.theory(net, X, ntk=True) "
                 "iterates their recursions and pdlt.empirical.measure_ntk measures them."))
    return replace(crit, ntk=ntk)


def _with_ntk_half_stable(crit: Criticality) -> Criticality:
    g_star = _theta_limit_unit(crit, None) - 1.0
    K1 = 0.5 * crit.K_star if crit.stable_side.startswith("above") else 2.0 * crit.K_star
    try:
        gg = gradient_growth(crit.activation, crit.C_b, crit.C_W, K1=K1)
        efold = (f", by e every {1.0 / abs(gg.rate):.3g} layers" if gg.regime != "critical"
                 and math.isfinite(gg.rate) else "")
        other = (f"; e.g. at the critical (C_b, C_W) an input with K⁽¹⁾ = {K1:.4g} flows to K = "
                 f"{gg.K_limit:.6g}, where χ⊥ = {gg.chi_perp:.6g} ({gg.regime}{efold})")
    except ValueError:
        other = ""
    grad = (f"The single-input NTK obeys {_RECURSION} (formula sheet §5), so χ⊥ is the per-layer factor "
            f"of the gradients: layer ℓ's contribution to Θ^(L) carries Π χ⊥. At the critical point "
            f"K* = {crit.K_star:.6g}, χ⊥ = 1; an input on the stable side approaches it with "
            f"χ⊥ ≈ 1 − p⊥/ℓ (p⊥ = {_num(crit.p_perp)}, derived; for ℓ ≫ ℓ_c), so the product is "
            f"(ℓ/L)^p⊥, a power law, not an exponential. Off criticality (other "
            f"C_b, C_W, or an input on the unstable side) the kernel flows to a fixed point with χ⊥ ≠ 1: "
            f"exploding (χ⊥ > 1) or vanishing (χ⊥ < 1) gradients at the rate ln χ⊥ per layer "
            f"(gradient_growth gives it){other}. At K⁽¹⁾ = K* the kernel stays at K*, so with layer-independent "
            f"λ every layer adds Θ₁ = λ_b + λ_W g(K*) and Θ = ℓΘ₁: the learning rates must scale as 1/L "
            f"(derived here; the book's Ch. 9 treats the scale-invariant and K* = 0 classes).")
    laws = (_law("Θ/Θ₁", 1.0, 1.0, "analytic",
                 "Θ = ℓΘ₁ (Θ₁ = λ_b + λ_W g(K*)), exactly at K⁽¹⁾ = K* (derived)"),)
    ntk = NTKCriticality(
        chi_perp=1.0, gradients=grad,
        off_criticality=("χ⊥ ≠ 1 at the fixed point K∞ the kernel reaches: backward factor χ⊥(K∞)^(L−ℓ), "
                         "rate ln χ⊥(K∞) per layer"),
        lambda_b="λ_b^(ℓ) = λ̃_b/L", lambda_W="λ_W^(ℓ) = λ̃_W/L",
        theta_limit=(f"Θ^(L) = λ̃_b + λ̃_W g(K*) = λ̃_b + {_num(g_star)} λ̃_W, exactly at K⁽¹⁾ = K* "
                     f"(derived)"),
        theta_limit_value=1.0 + g_star, theta_limit_at="λ̃_b = λ̃_W = 1, K⁽¹⁾ = K*",
        laws=laws, fluctuations={},
        unknown=("NTK fluctuations: the power laws of A, B, D, F for the half-stable class are not known "
                 "to pdlt (not in the formula sheet and not derived here; h(K*) ≠ 0 feeds Θ into D and A, "
                 "so the scale-invariant ℓ/n laws need not carry over). pdlt.theory(net, X, ntk=True) "
                 "iterates their recursions and pdlt.empirical.measure_ntk measures them."))
    return replace(crit, ntk=ntk)


# ---------------------------------------------------------------------------------------------
# dNTK and ddNTKs at criticality (book Ch. 11, ∞; pdlt.theory.dntk)

_DNTK_NORMALIZATION = (
    "Normalized statistics of one input (equal widths n; Θ, K of the same layer): P/(nΘ²), Q/(nΘ²) for "
    "the dNTK (P, Q = n·E[dĤ z]) and RK/(nΘ³), SK/(nΘ³), TK/(nΘ³), UK/(nΘ³) for the ddNTKs (R…U = n·E[ddĤ]). "
    "They are the only ratios unchanged by rescaling the learning rates (λ → cλ: Θ → cΘ, dĤ → c²dĤ, "
    "ddĤ → c³ddĤ) and, for the scale-invariant class, by its exact symmetry x → sx, λ_b → s²λ_b (z → sz, "
    "Θ → s²Θ, E[dĤ z] and E[ddĤ] → s⁴). They measure the NTK's change in training: a step with η ~ 1/Θ "
    "and errors ε ~ z changes Ĥ by η·dĤ·ε, relative size (P, Q)/(nΘ²), and the ddNTKs enter as "
    "η²·ddĤ·ε²/Θ ~ (R…U)K/(nΘ³). f_W is the weights' share of Θ (the part ∝ λ_W).")


def _dntk_moments(act: Activation, K) -> dict:
    """Single-input Gaussian moments of the dNTK/ddNTK recursions at variance(s) K (any shape), as
    :func:`pdlt.theory.dntk.dntk_step_single` and ``ddntk_step_single`` use them, vectorized over K (one
    quadrature pass for all σ-products). σ″, σ‴ from the forward equation are zero for a kinked σ (the
    a.e. convention, :func:`pdlt.theory.dntk.keeps_explicit_sigma2`)."""
    from .dntk import keeps_explicit_sigma2
    from .ntk import _sp2_single

    E = Expectations(act)
    K = np.asarray(K, dtype=np.float64)
    explicit = keeps_explicit_sigma2(act)

    def products(z):
        s, d1 = (np.asarray(act.derivative(z, k), dtype=np.float64) for k in (0, 1))
        if explicit:
            d2, d3 = (np.asarray(act.derivative(z, k), dtype=np.float64) for k in (2, 3))
        else:
            d2 = d3 = np.zeros_like(s)
        return np.stack([s * s * d1 * d1, d1 ** 4, s * d2, d1 * d3, d2 * d2, s * d1 * d1 * d2,
                         d1 ** 3 * d3, d1 * d1 * d2 * d2])

    with np.errstate(divide="ignore", invalid="ignore"):
        g, dd2, _ = E.g_derivs(K)
        sp2 = _sp2_single(E, K)[0]
        m = dict(zip(("s2p2", "sp4", "e20", "e31", "e22", "e2110", "e3111", "e2211"),
                     gaussian.expect1(products, K)))
    m.update(g=np.asarray(g, dtype=np.float64), sp2=np.asarray(sp2, dtype=np.float64),
             dsps=0.5 * np.asarray(dd2, dtype=np.float64))      # ⟨σ′² + σσ″⟩ = g′(K) = χ∥/C_W
    m["dpp"] = m["e31"] + m["e22"]                                # ⟨(σ″σ′)′⟩ = 2h/C_W
    return m


def _linrec(a: np.ndarray, s: np.ndarray, x0=0.0) -> np.ndarray:
    """x[0] = x0, x[i+1] = a[i]·x[i] + s[i] (a, s: (L−1, …)) → x (L, …), summed in closed form:
    x[i] = A[i]·(x0 + Σ_{k<i} s[k]/A[k+1]) with A[i] = Π_{k<i} a[k] (a > 0 here: susceptibilities)."""
    A = np.concatenate([np.ones((1,) + a.shape[1:]), np.cumprod(a, axis=0)])
    acc = np.concatenate([np.zeros((1,) + s.shape[1:]), np.cumsum(s / A[1:], axis=0)])
    return A * (x0 + acc)


def _dntk_trajectory(act: Activation, K: np.ndarray, C_W: float, lam_b: np.ndarray, lam_W: np.ndarray,
                     Theta1) -> dict:
    """Θ, B, F, P, Q, R, S, T, U of one input at layers ℓ = 1..L on the kernel trajectory K^{(ℓ)}
    (equal widths, r = 1, C_b-independent), for several learning-rate choices at once.

    The single-input recursions of :func:`pdlt.theory.ntk.ntk_step_single`,
    :func:`pdlt.theory.dntk.dntk_step_single` and ``ddntk_step_single`` (the same terms, in the same
    order) are each a first-order linear recursion X' = a X + s in the layer, with s built from
    lower fields, so they are summed in closed form (:func:`_linrec`) one field after another.
    ``lam_b``, ``lam_W``: (L, runs) per-layer rates of layers 1..L; ``Theta1``: (runs,) Θ^{(1)}.
    Returns (L, runs) arrays (twin-tested against :func:`pdlt.theory` in the tests).
    """
    m = {k: v[:-1, None] for k, v in _dntk_moments(act, K).items()}     # layer-ℓ moments, ℓ = 1..L−1
    lb, lam = lam_b[1:], lam_W[1:]                                      # λ of layer ℓ+1
    C = C_W
    ones = np.ones_like(lb)
    chi_perp, chi_par = C * m["sp2"] * ones, C * m["dsps"] * ones
    chi2 = chi_perp ** 2
    Th = _linrec(chi_perp, lb + lam * m["g"], np.asarray(Theta1, dtype=np.float64))
    T0 = Th[:-1]
    B = _linrec(chi2, C ** 2 * m["sp4"] * T0 ** 2)
    F = _linrec(chi_par ** 2, C ** 2 * m["s2p2"] * T0)
    B0, F0 = B[:-1], F[:-1]
    dPsi = lam * m["dsps"] + C * T0 * m["dpp"]                          # ⟨Ψ′⟩
    P = _linrec(chi_perp * chi_par, C ** 2 * T0 ** 2 * m["e2110"] + C ** 2 * m["sp2"] * m["e20"] * B0)
    Q = _linrec(chi_perp * chi_par, C * T0 * (lam * m["s2p2"] + C * T0 * m["e2110"]) + F0 * dPsi * chi_par)
    P0, Q0 = P[:-1], Q[:-1]
    Om2 = lam * m["e20"] + C * T0 * m["e31"]                            # ⟨Ω″⟩
    Om2sp2 = lam * m["e2110"] + C * T0 * m["e3111"]                     # ⟨Ω″σ′²⟩
    Phi = lam * m["sp2"] + C * T0 * m["e22"]                            # ⟨Φ⟩
    Phisp2 = lam * m["sp4"] + C * T0 * m["e2211"]                       # ⟨Φσ′²⟩
    Psi2 = lam ** 2 * m["s2p2"] + 2 * lam * C * T0 * m["e2110"] + C ** 2 * T0 ** 2 * m["e2211"]   # ⟨Ψ²⟩
    R = _linrec(chi2, C * T0 ** 2 * Om2sp2 + C * m["sp2"] * (Om2 * B0 + dPsi * P0))
    S = _linrec(chi2, C * T0 ** 2 * Phisp2 + C * m["sp2"] * Phi * B0)
    T = _linrec(chi2, T0 * Psi2 + dPsi ** 2 * F0 + 2 * C * m["sp2"] * dPsi * Q0)
    U = _linrec(chi2, C ** 2 * T0 ** 3 * m["e2211"])
    return {"Theta": Th, "B": B, "F": F, "P": P, "Q": Q, "R": R, "S": S, "T": T, "U": U}


# -- exact solution at a critical point with constant K (scale-invariant line, half-stable K⁽¹⁾ = K*) --

@lru_cache(maxsize=1)
def _power_sums(imax: int = 8) -> tuple[np.ndarray, ...]:
    """H_i(ℓ) = Σ_{k=1}^{ℓ−1} k^i, i = 0..imax, as ascending coefficients in ℓ, from the telescoping
    identity ℓ^{i+1} − 1 = Σ_{j≤i} C(i+1, j) H_j(ℓ) in exact rationals."""
    from fractions import Fraction

    H: list[list[Fraction]] = []
    for i in range(imax + 1):
        c = [Fraction(0)] * (i + 2)
        c[i + 1] += 1
        c[0] -= 1
        for j in range(i):
            for d, v in enumerate(H[j]):
                c[d] -= math.comb(i + 1, j) * v
        H.append([x / (i + 1) for x in c])
    return tuple(np.array([float(x) for x in h]) for h in H)


def _pmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Product of polynomials in (ℓ, f): a[i, j] multiplies ℓ^i f^j."""
    out = np.zeros((a.shape[0] + b.shape[0] - 1, a.shape[1] + b.shape[1] - 1))
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i:i + b.shape[0], j:j + b.shape[1]] += a[i, j] * b
    return out


def _padd(*ps: np.ndarray) -> np.ndarray:
    out = np.zeros((max(p.shape[0] for p in ps), max(p.shape[1] for p in ps)))
    for p in ps:
        out[:p.shape[0], :p.shape[1]] += p
    return out


def _psum(s: np.ndarray) -> np.ndarray:
    """X(ℓ) = Σ_{k=1}^{ℓ−1} s(k): the solution of X' = X + s(ℓ) with X(1) = 0."""
    H = _power_sums()
    out = np.zeros((s.shape[0] + 1, s.shape[1]))
    for i in range(s.shape[0]):
        out[:i + 2] += np.outer(H[i], s[i])
    return out


def _constant_solution(act: Activation, K: float, C_W: float, g_star: float) -> dict:
    r"""Exact single-input B, F, P, Q, R, S, T, U at a critical point that the kernel does not leave
    (K^{(ℓ)} = K, χ∥ = χ⊥ = 1), equal widths and layer-independent λ, as polynomials in (ℓ, f_W).

    With Θ₁ = 1 (every statistic is homogeneous in λ), λ_b = 1 − f_W, λ_W = f_W/g*, Θ = ℓ. Criticality
    also makes ⟨σσ″⟩ = (χ∥ − χ⊥)/C_W vanish exactly, and every recursion of
    :func:`_dntk_trajectory` becomes X' = X + s(ℓ) with a polynomial source, summed by :func:`_psum`.
    Returns {"P": a, …} with a[i, j] the coefficient of ℓ^i f_W^j in X·K^m (m = 1 for R…U).
    """
    m = {k: float(np.asarray(v).ravel()[0]) for k, v in _dntk_moments(act, np.array([K])).items()}
    C = C_W
    m["sp2"] = m["dsps"] = 1.0 / C                   # χ⊥ = χ∥ = 1
    m["e20"] = 0.0                                   # ⟨σσ″⟩ = ⟨σ′² + σσ″⟩ − ⟨σ′²⟩ = 0
    Th = np.array([[0.0], [1.0]])
    lam = np.array([[0.0, 1.0 / g_star]])
    Th2 = _pmul(Th, Th)
    B = _psum(C ** 2 * m["sp4"] * Th2)
    F = _psum(C ** 2 * m["s2p2"] * Th)
    P = _psum(_padd(C ** 2 * m["e2110"] * Th2, C * m["e20"] * B))
    dPsi = _padd(lam / C, C * m["dpp"] * Th)
    Q = _psum(_padd(C * _pmul(Th, _padd(m["s2p2"] * lam, C * m["e2110"] * Th)), _pmul(F, dPsi)))
    Om2 = _padd(m["e20"] * lam, C * m["e31"] * Th)
    R = _psum(_padd(C * _pmul(Th2, _padd(m["e2110"] * lam, C * m["e3111"] * Th)), _pmul(Om2, B),
                    _pmul(dPsi, P)))
    Phi = _padd(lam / C, C * m["e22"] * Th)
    S = _psum(_padd(C * _pmul(Th2, _padd(m["sp4"] * lam, C * m["e2211"] * Th)), _pmul(Phi, B)))
    Psi2 = _padd(m["s2p2"] * _pmul(lam, lam), 2 * C * m["e2110"] * _pmul(lam, Th), C ** 2 * m["e2211"] * Th2)
    T = _psum(_padd(_pmul(Th, Psi2), _pmul(_pmul(dPsi, dPsi), F), 2 * _pmul(dPsi, Q)))
    U = _psum(C ** 2 * m["e2211"] * _pmul(Th, Th2))
    out = {}
    for name, X in (("P", P), ("Q", Q), ("R", R), ("S", S), ("T", T), ("U", U)):
        X = X * K ** DNTK_STATISTICS[name][2]
        scale = float(np.max(np.abs(X), initial=0.0))
        while X.shape[0] > 1 and float(np.max(np.abs(X[-1]))) <= 1e-13 * scale:
            X = X[:-1]                               # trailing rows that cancel (or vanish a.e.)
        while X.shape[1] > 1 and float(np.max(np.abs(X[:, -1]))) <= 1e-13 * scale:
            X = X[:, :-1]
        out[name] = X
    return out


def _fpoly(cs) -> str:
    """c₀ + c₁ f_W + … as text (zero terms omitted); parenthesized when it has several terms."""
    names = ("", " f_W", " f_W²", " f_W³")
    terms = [(c, names[j]) for j, c in enumerate(cs) if c != 0.0]
    if not terms:
        return "0"
    c0, t0 = terms[0]
    out = f"{'−' if c0 < 0 else ''}{_num(abs(c0))}{t0}"
    for c, t in terms[1:]:
        out += f" {'−' if c < 0 else '+'} {_num(abs(c))}{t}"
    return f"({out})" if len(terms) > 1 else out


def _ell_pow(e: float) -> str:
    sup = {1: "", 2: "²", 3: "³", 4: "⁴"}
    if abs(e - round(e)) < 1e-12 and round(e) in sup:
        return "ℓ" + sup[round(e)]
    return f"ℓ^{_num(e)}".replace("-", "−")


def _exact_law(name: str, X: np.ndarray) -> tuple[PowerLaw, tuple]:
    """The derived law of n·X̂ = Σ a_ij f^j ℓ^(i−k) (half-stable): the growing terms, leading first."""
    q, k, _ = DNTK_STATISTICS[name]
    d = X.shape[0] - 1
    lead = tuple(float(c) for c in X[d])
    if not np.any(X):
        return _law(q, 0.0, 0.0, "analytic", f"{q} = 0", note="(derived)"), (0.0, lead)
    grow = [i for i in range(d, -1, -1) if i - k >= 1 and np.any(X[i])]
    if grow:
        body = " + ".join(f"{_fpoly(X[i])} {_ell_pow(i - k)}" for i in grow)
        rest = " + O(1)" if np.any(X[:min(grow)]) else ""
        text = f"{q} = [{body}{rest}]/n" if len(grow) > 1 or rest else f"{q} = {body}/n"
    else:
        text = f"{q} ≈ {_fpoly(lead)} {_ell_pow(d - k)}/n" if d != k else f"{q} → {_fpoly(lead)}/n"
    c = lead[0] if not any(lead[1:]) else math.nan
    return _law(q, c, d - k, "analytic", text, note="(derived)"), (float(d - k), lead)


def _with_dntk_scale_invariant(crit: Criticality) -> Criticality:
    r4 = (crit.nu + 1.0) / 3.0                        # A₄/A₂²
    q6, q12 = r4 / 6.0, r4 / 12.0
    ae = "(a.e. convention: σ″ = σ‴ = 0 per network)"
    laws = (_law("P/(nΘ²)", 0.0, 0.0, "analytic", f"P/(nΘ²) = 0 {ae}"),
            _law("Q/(nΘ²)", math.nan, 1.0, "analytic",
                 f"Q/(nΘ²) = r₄f_W(ℓ − 1/ℓ)/(6n) = {_num(q6)} f_W (ℓ − 1/ℓ)/n"),
            _law("RK/(nΘ³)", 0.0, 0.0, "analytic", f"RK/(nΘ³) = 0 {ae}"),
            _law("SK/(nΘ³)", math.nan, 1.0, "analytic",
                 f"SK/(nΘ³) = r₄f_W(ℓ − 1/ℓ)/(12n) = {_num(q12)} f_W (ℓ − 1/ℓ)/n"),
            _law("TK/(nΘ³)", math.nan, 1.0, "analytic",
                 f"TK/(nΘ³) = r₄f_W²(ℓ − 1/ℓ)/(12n) = {_num(q12)} f_W² (ℓ − 1/ℓ)/n"),
            _law("UK/(nΘ³)", 0.0, 0.0, "analytic", f"UK/(nΘ³) = 0 {ae}"))
    z3, z4 = (0.0,) * 3, (0.0,) * 4
    scaling = {"P": (0.0, z3), "Q": (1.0, (0.0, q6, 0.0)), "R": (0.0, z4), "S": (1.0, (0.0, q12, 0.0, 0.0)),
               "T": (1.0, (0.0, 0.0, q12, 0.0)), "U": (0.0, z4)}
    # n·X̂ = Σ a_ij f^j ℓ^(i−k): Q = r₄f(ℓ³ − ℓ)/6, SK = r₄f(ℓ⁴ − ℓ²)/12, TK = r₄f²(ℓ⁴ − ℓ²)/12 (Θ₁ = 1)
    exact = {"P": ((0.0,),), "Q": ((0.0, 0.0), (0.0, -q6), (0.0, 0.0), (0.0, q6)), "R": ((0.0,),),
             "S": ((0.0, 0.0),) * 2 + ((0.0, -q12), (0.0, 0.0), (0.0, q12)),
             "T": ((0.0, 0.0, 0.0),) * 2 + ((0.0, 0.0, -q12), (0.0, 0.0, 0.0), (0.0, 0.0, q12)),
             "U": ((0.0,),)}
    notes = (f"Exact at every depth ℓ (C_b = 0, C_W = 1/A₂, equal widths, layer-independent λ; "
             f"r₄ = A₄/A₂² = {_num(r4)}), from the closed forms Q = λ_W(A₄/A₂)K*Θ₁(ℓ+1)ℓ(ℓ−1)/6, "
             f"S = λ_W(A₄/A₂)Θ₁²ℓ²(ℓ²−1)/12, T = λ_W²A₄K*Θ₁ℓ²(ℓ²−1)/12 with Θ = ℓΘ₁ "
             f"(pdlt.theory.dntk.scale_invariant_critical; Q as in formula sheet §6, S and T derived there). "
             f"Like the NTK fluctuations they grow as ℓ/n: the depth-to-width ratio controls how much the "
             f"NTK moves during training. Only the weights source them: with λ_W = 0 (f_W = 0) all vanish. "
             f"P, R and U vanish identically in the a.e. convention (what autodiff computes per network): "
             f"their sources carry σ″ or σ‴ from the forward equation, zero almost everywhere for a "
             f"piecewise-linear σ (P's source B·⟨σ″σ⟩ is ⟨zδ(z)⟩-like, zero for one input); at finite width "
             f"they first appear at the next order in 1/n.")
    dntk = DNTKCriticality(
        learning_rates=("layer-independent λ_b, λ_W (the equivalence principle's λ̃/L; its 1/L cancels in "
                        "every ratio); f_W = λ_W A₂K*/Θ₁ at every layer (Θ₁ = λ_b + λ_W A₂K*)."),
        normalization=_DNTK_NORMALIZATION, laws=laws, scaling=scaling, exact=exact, notes=notes)
    return replace(crit, dntk=dntk)


def _with_dntk_half_stable(crit: Criticality) -> Criticality:
    K = float(crit.K_star)
    g_star = (K - crit.C_b) / crit.C_W
    sol = _constant_solution(crit.activation, K, crit.C_W, g_star)
    laws, scaling = [], {}
    for name in DNTK_STATISTICS:
        law, sc = _exact_law(name, sol[name])
        laws.append(law)
        scaling[name] = sc
    exact = {k: tuple(tuple(float(a) for a in row) for row in X) for k, X in sol.items()}
    fast = [f"{DNTK_STATISTICS[k][0]} (∝ {_ell_pow(e)})" for k, (e, _) in scaling.items() if e > 1]
    hK = 0.5 * crit.C_W * float(_sp2_dK(crit.activation, np.array(K)))
    notes = (f"Derived here (not from the book), exact at every depth for an input at the critical point: at "
             f"K = K* = {K:.6g} with χ∥ = χ⊥ = 1 (hence ⟨σσ″⟩ = (χ∥ − χ⊥)/C_W = 0) the single-input "
             f"recursions of pdlt.theory.dntk have constant coefficients, X' = X + s(ℓ) with s polynomial in "
             f"ℓ, and are summed exactly (polynomials in ℓ and f_W: DNTKCriticality.value). Unlike the "
             f"scale-invariant class, the σ″ and σ‴ moments do not vanish at K* > 0 (e.g. ⟨σ″²⟩ and "
             f"⟨σ′σ‴ + σ″²⟩ = 2h(K*)/C_W, h(K*) = {hK:.4g}), and they multiply the growing Θ = ℓΘ₁")
    f_free = all(not any(scaling[k][1][1:]) for k in scaling if scaling[k][0] > 1)
    notes += (f", so {', '.join(fast)} grow faster than ℓ/n"
              + ("; their leading terms do not depend on f_W" if f_free else "")
              + ". As leading-order results in 1/n they hold while each normalized statistic is ≪ 1."
              if fast else ".")
    dntk = DNTKCriticality(
        learning_rates=("layer-independent λ_b, λ_W (the equivalence principle's λ̃/L; its 1/L cancels in "
                        "every ratio) and an input at the critical point, K⁽¹⁾ = K*, so K = K* in every "
                        "layer; f_W = λ_W g(K*)/Θ₁ at every layer (Θ₁ = λ_b + λ_W g(K*))."),
        normalization=_DNTK_NORMALIZATION, laws=tuple(laws), scaling=scaling, exact=exact, notes=notes,
        unknown=("The book does not treat the half-stable class: nothing here is checked against it; "
                 "inputs with K⁽¹⁾ ≠ K* are not covered (pdlt.theory(net, X, dntk=True, ddntk=True) "
                 "iterates any case)."))
    return replace(crit, dntk=dntk)


#: f_W of the runs a K* = 0 fit is built from (cubic in f_W at most: four runs).
_FIT_SHARES = (0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0)
#: f_W-terms whose own log-log slope is more than this below the common exponent are subleading.
_SUBLEADING = 0.1


def _dntk_fits(crit: Criticality, K: np.ndarray, depth: int) -> tuple[list[PowerLaw], dict]:
    r"""Power laws n·X̂ ≈ c(f_W) ℓ^e fitted to the iterated single-input recursions (K* = 0 class).

    Rates of the equivalence principle without its overall L-factor, λ_b^{(ℓ)} = λ̃_b ℓ^{−p⊥},
    λ_W^{(ℓ)} = λ̃_W ℓ^{1−p⊥} (the factor cancels in every ratio), at the four shares f = 0, ⅓, ⅔, 1
    (λ̃_b = 1 − f, λ̃_W = f/g*, g* = σ₁²/(−a₁)). Every statistic is a homogeneous polynomial in
    (λ̃_b, λ̃_W) of degree k (the power of Θ), so at each ℓ n·X̂ is exactly a polynomial in the layer's
    weight share f_W(ℓ), whose coefficients c_j(ℓ) are solved for. The exponent e is the log-log slope of
    the L²([0, 1]) norm of that polynomial over the last decade (ℓ ≥ depth/10, as :func:`_fit`); c_j whose
    own slope is more than 0.1 lower are subleading and dropped; the rest are least-squares fits
    c_j(ℓ) ≈ c_j ℓ^e.
    """
    p = float(crit.p_perp)
    g_star = 1.0 / (crit.C_W * -float(crit.a1))
    L = K.size
    ell = np.arange(1, L + 1, dtype=np.float64)
    f = np.array(_FIT_SHARES)
    lb_t, lw_t = 1.0 - f, f / g_star
    lam_b = lb_t[None, :] * ell[:, None] ** (-p)
    lam_W = lw_t[None, :] * ell[:, None] ** (1.0 - p)
    with np.errstate(all="ignore"):
        tr = _dntk_trajectory(crit.activation, K, crit.C_W, lam_b, lam_W, lam_b[0] + lam_W[0] * K[0] / crit.C_W)
    Th = tr["Theta"]
    fW = Th[:, -1:] / lw_t[-1] * lw_t[None, :] / Th              # Θ is linear in (λ̃_b, λ̃_W)
    sel = ell >= max(2.0, depth / 10.0)
    X = np.log(ell[sel])
    laws, scaling = [], {}
    for name, (q, k, mK) in DNTK_STATISTICS.items():
        runs = [0, 1, 3] if k == 2 else [0, 1, 2, 3]
        with np.errstate(all="ignore"):
            y = tr[name][:, runs] * K[:, None] ** mK / Th[:, runs] ** k
            V = fW[:, runs, None] ** np.arange(k + 1)
            cj = np.linalg.solve(V[sel], y[sel][:, :, None])[:, :, 0]           # (ℓ, j)
            G = 1.0 / (np.arange(k + 1)[:, None] + np.arange(k + 1)[None, :] + 1.0)
            norm2 = np.einsum("li,ij,lj->l", cj, G, cj)
        if cj.shape[0] < 3 or not np.all(np.isfinite(cj)) or not np.all(norm2 > 0):
            continue
        e = float(np.polyfit(X, 0.5 * np.log(norm2), 1)[0])
        coef = [0.0] * (k + 1)
        w = ell[sel] ** e
        for j in range(k + 1):
            c = cj[:, j]
            if np.all(c != 0) and np.all(np.sign(c) == np.sign(c[-1])):
                if np.polyfit(X, np.log(np.abs(c)), 1)[0] > e - _SUBLEADING:
                    coef[j] = float(np.sum(c * w) / np.sum(w * w))
        if not any(coef):
            continue
        scaling[name] = (e, tuple(coef))
        c0 = coef[0] if not any(coef[1:]) else math.nan
        laws.append(_law(q, c0, e, "recursion fit", f"{q} ≈ {_fpoly(coef)} {_ell_pow(e)}/n"))
    return laws, scaling


def _with_dntk_k_star_zero(crit: Criticality, traj: dict | None, depth: int) -> Criticality:
    p = float(crit.p_perp)
    laws, scaling = ([], {}) if traj is None else _dntk_fits(crit, traj["K"], depth)
    if abs(p - 1.0) <= 1e-9:
        rates = "λ_b^(ℓ) = λ̃_b/ℓ, λ_W^(ℓ) = λ̃_W (p⊥ = 1)"
    else:
        rates = (f"λ_b^(ℓ) ∝ λ̃_b ℓ^(−p⊥), λ_W^(ℓ) ∝ λ̃_W ℓ^(1−p⊥) (p⊥ = {_num(p)}; the factor L^(p⊥−1) cancels "
                 f"in every ratio)")
    w_lim = 1.0 / (crit.C_W * -float(crit.a1))
    lr = (f"the equivalence principle's {rates}, so Θ^(L) → λ̃_b + λ̃_W σ₁²/(−a₁) = λ̃_b + {_num(w_lim)} λ̃_W "
          f"and f_W → {_num(w_lim)} λ̃_W/Θ^(L) (f_W: the weights' share of Θ at layer ℓ). Layer-independent λ_b would "
          f"make Θ ∝ ℓ dominated by the biases (f_W → 0): the f_W = 0 values.")
    notes = (f"Fits to the single-input recursions of pdlt.theory.dntk (the same as "
             f"pdlt.theory(net, X, dntk=True, ddntk=True)), iterated for {depth} layers from K⁽¹⁾ = 1 at "
             f"f_W = 0, ⅓, ⅔, 1 and fitted over the last decade (ℓ ≥ {max(2, depth // 10)}). Terms of c(f_W) "
             f"that grow more slowly than the leading power are omitted, so where c(f_W) = 0 the statistic "
             f"grows more slowly than shown. The normalizing K → 0 like 1/((−a₁)ℓ).")
    if traj is None:
        notes = "The kernel recursion overflowed, so no fits could be made."
    dntk = DNTKCriticality(
        learning_rates=lr, normalization=_DNTK_NORMALIZATION, laws=tuple(laws), scaling=scaling, exact={},
        notes=notes,
        unknown=("Analytic dNTK and ddNTK laws for the K* = 0 class are not known to pdlt (formula sheet §12; "
                 "not derived here): the laws above are recursion fits, not formulas."))
    return replace(crit, dntk=dntk)
