r"""Residual MLPs at leading order and O(1/n): kernel, four-point vertex, criticality (book App. B).

Network (the first layer has no skip, so n₀ is free; n₁ = … = n_L when ξ ≠ 0):

.. math:: z^{(1)}_i = b^{(1)}_i + \sum_j W^{(1)}_{ij}x_j,\qquad
          z^{(\ell+1)}_i = \xi\, z^{(\ell)}_i + b^{(\ell+1)}_i + \sum_j W^{(\ell+1)}_{ij}\sigma(z^{(\ell)}_j),

b ~ N(0, C_b), W ~ N(0, C_W/n_ℓ) (the residual block's variance is absorbed into C_W, as in formula
sheet §10; the book's App. B naming of ξ is not confirmed). Single input throughout.

Leading order: :math:`K' = \xi^2K + C_b + C_W g(K)`, :math:`\chi_\parallel = \xi^2 + C_W g'(K)`,
:math:`\chi_\perp = \xi^2 + C_W\langle\sigma'^2\rangle_K`.

**O(1/n): why the formula sheet's V recursion is incomplete.** Formula sheet §10 gives
:math:`V' = C_W^2\operatorname{Var}_K(\sigma^2) + 2\xi^2C_W(\langle z^2\sigma^2\rangle_K - K\langle\sigma^2\rangle_K) + r\chi_\parallel^2V`.
It treats the two-neuron law as Gaussian plus the even cumulant V only. With a skip, neuron j of
layer ℓ+1 carries :math:`\xi z_j^{(\ell)}` *and* feeds the variance :math:`\hat G = C_b + \frac{C_W}{n}\sum_k\sigma(z_k)^2`
of every other neuron's increment, so :math:`\operatorname{Cov}(F(z_i), H(z_j))` picks up O(1/n) pieces that are
not functions of V — e.g. the odd :math:`E[z_i^2 z_j] = \xi C_W\langle z\sigma^2\rangle/n + …` for ReLU — and
these feed back into V at leading order. For odd σ (tanh, sin) or linear σ the extra terms vanish
or are subleading in K; for ReLU they change V at O(1) and make it depend on the sign of ξ
(measured: tests/test_criticality_twins.py, tests/theory/test_residual.py).

**Exact O(1/n) closure used here.** Expand single-neuron functions in the orthonormal Hermite basis
:math:`h_a(z/\sqrt K) = \mathrm{He}_a(z/\sqrt K)/\sqrt{a!}` of layer ℓ, F_a = ⟨F h_a⟩_K. Then

.. math:: \operatorname{Cov}\big(F(z_i),H(z_j)\big) = \frac1{n_{\ell-1}}\sum_{a,b\ge1}F_aC_{ab}H_b,\qquad
          E[F(z_i)] = \langle F\rangle_K + \frac1{n_{\ell-1}}\sum_{a\ge1} m_aF_a + O(n^{-2}),

so :math:`V = 2K^2C_{22}` and :math:`G^{\{1\}} = \sqrt2\,K\,m_2`. Given layer ℓ,
:math:`z' = \xi z + \hat G^{1/2}\epsilon`; conditioning on z is the Mehler kernel with
ρ = ξ√(K/K′) (diagonal: :math:`h_a \to \rho^a h_a`), and :math:`\partial_{\hat G}` is ½∂². With
s_a = ⟨σ² h_a⟩_K, D = diag(ρ^a), e = e₂, w = 1/(√2K′), r = n_ℓ/n_{ℓ−1}:

.. math::
    C' = r\,DCD + w\,(e\,p^\top + p\,e^\top) + w^2C_W^2\big(\operatorname{Var}_K\sigma^2 + r\,s^\top Cs\big)\,ee^\top,
    \qquad p = C_W\,D\,(s + r\,Cs),

.. math::
    m'_a = r\rho^a m_a + \delta_{a2}\frac{r C_W\,m^\top s}{\sqrt2K'}
           + \rho^{a-2}\frac{\sqrt{a(a-1)}}{2K'}C_W\big(s_{a-2} + r(Cs)_{a-2}\big)\big|_{a\ge3}
           + \delta_{a4}\frac{\sqrt{24}}{8K'^2}C_W^2\big(\operatorname{Var}_K\sigma^2 + r\,s^\top Cs\big).

Restricted to C ∝ e₂e₂ᵀ and m ∈ span(e₂, e₄) this is exactly the formula sheet's V recursion and
the plain-MLP G^{\{1\}} recursion (ξ = 0 reproduces :func:`pdlt.theory.theory` to rounding). Derivation:
expand :math:`E_\epsilon F(\xi z + \hat G^{1/2}\epsilon)` to first order in :math:`\hat G - E\hat G` for C and
to second order for m; :math:`\hat G` contains each neuron's own σ² (the self terms :math:`C_W s`).
Truncated at Hermite order ``modes`` (default 64; every mode is damped by ρ^a per layer).

Criticality (χ_∥ = χ_⊥ = 1 at the fixed point): the plain critical point scaled by (1 − ξ²),
:math:`(C_b, C_W)_{\rm res} = (1-\xi^2)(C_b, C_W)_{\xi=0}`. At it (K ≡ K* ≠ 0, equal widths) C is
supported on row/column 2, :math:`C_{2b} \to wC_W\rho^bs_b/(1-\rho^b)`, and V grows linearly,
V^{(ℓ)}/(nK²) ≈ ν(ξ) ℓ/n with

.. math:: \nu(\xi) = \frac{1}{K^{*2}}\Big[C_W^2\operatorname{Var}_{K^*}(\sigma^2) + 4\xi^2K^{*2}C_Wg'(K^*)
          + 2C_W^2\sum_{b\ge1,\,b\ne2}\frac{\xi^b s_b^2}{1-\xi^b}\Big],

the first two terms being the sheet's (1 − ξ²)[(1 − ξ²)ν₀ + 4ξ²]. For the K* = 0 class the new terms
are O(K) relative and ν(ξ) = (2/3)(1 − ξ⁴) (formula sheet §10) stands. For the half-stable class K
approaches K* as −2/(f''ℓ), χ_∥² ≈ 1 − 4/ℓ, and the asymptotic ν is a fifth of the bracket
(:func:`residual_nu`). Book App. B; formula sheet §10.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .. import _validate
from ..activations import Activation, get_activation
from ..mlp import MLP
from ._gauss import Expectations
from .criticality import criticality
from .state import LayerState
from .two_input import susceptibilities

__all__ = ["ResidualTheory", "residual_net", "residual_theory", "residual_critical", "residual_nu",
           "universality_class", "plain_critical", "hermite_coefficients", "residual_nu_sheet"]


# ---------------------------------------------------------------------------------------------
# Hermite coefficients


_RMAX = 13.0


@lru_cache(maxsize=8)
def _half_line_rule(order: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Legendre nodes u ∈ (0, 13) and weights × standard normal density."""
    t, w = np.polynomial.legendre.leggauss(order)
    u = 0.5 * _RMAX * (t + 1.0)
    return u, 0.5 * _RMAX * w * np.exp(-0.5 * u * u) / math.sqrt(2.0 * math.pi)


def hermite_coefficients(activation, K: float, modes: int, order: int = 320) -> np.ndarray:
    r"""s_a = ⟨σ(z)² h_a(z/√K)⟩_K, a = 0..modes, with the orthonormal h_a = He_a/√(a!).

    The line is split at z = 0 (where registered activations have their kinks) and each half is
    integrated by Gauss–Legendre of the given order on |z|/√K ∈ [0, 13]; h_a by the stable
    three-term recurrence. s_0 = g(K) and Σ_{a≥1} s_a² = Var_K(σ²). Returns shape (modes + 1,).
    """
    act = _activation(activation)
    u, w = _half_line_rule(order)
    x = np.concatenate([u, -u])
    wt = np.concatenate([w, w])
    f = np.asarray(act.sigma(math.sqrt(K) * x), dtype=np.float64) ** 2 * wt
    out = np.empty(modes + 1)
    h_prev, h = np.zeros_like(x), np.ones_like(x)
    for k in range(modes + 1):
        out[k] = float(f @ h)
        h_prev, h = h, (x * h - math.sqrt(k) * h_prev) / math.sqrt(k + 1)
    return out


# ---------------------------------------------------------------------------------------------
# Universality class and the plain network's critical point (from the criticality engine)


def _activation(spec) -> Activation:
    return spec if isinstance(spec, Activation) else get_activation(spec)


@lru_cache(maxsize=64)
def _plain(act: Activation):
    """The criticality analysis of the network without skips (only the class and critical point)."""
    return criticality(act, depth=20)


def universality_class(activation) -> str:
    r"""'scale-invariant', 'K*=0', 'half-stable' or 'none' (book §5.2–5.3): :func:`pdlt.theory.criticality.criticality`."""
    return _plain(_activation(activation)).universality_class


def plain_critical(activation) -> tuple[float, float, float]:
    r"""(C_b, C_W, K*) of the network without skips: χ_∥(K*) = χ_⊥(K*) = 1 (book §5.2–5.3).

    Scale-invariant: K* is free (returned as nan); K* = 0 class: K* = 0. Raises ValueError for no
    criticality.
    """
    act = _activation(activation)
    c = _plain(act)
    if c.universality_class == "none":
        raise ValueError(f"activation {act.name!r} has no critical point: {c.explanation}")
    return c.C_b, c.C_W, (math.nan if c.K_star is None else c.K_star)


def residual_critical(activation, xi: float) -> tuple[float, float]:
    r"""Critical (C_b, C_W) of the residual MLP with skip strength ξ, |ξ| < 1 (book App. B).

    .. math:: (C_b, C_W) = (1-\xi^2)\,(C_b, C_W)_{\xi=0}

    — scale-invariant: (0, (1 − ξ²)/A₂); K* = 0: (0, (1 − ξ²)/σ₁²); half-stable: same K* as ξ = 0.
    """
    xi = _validate.real("xi", xi)
    if not xi * xi < 1:
        raise ValueError(f"criticality needs |xi| < 1 (C_W = (1 - xi²)/... > 0), got xi = {xi}")
    C_b, C_W, _ = plain_critical(activation)
    return (1 - xi * xi) * C_b, (1 - xi * xi) * C_W


def residual_nu(activation, xi: float = 0.0, *, at_fixed_point: bool = False, modes: int = 200) -> float:
    r"""ν(ξ): V^{(ℓ)}/(n K²) ≈ ν ℓ/n for the critical residual MLP (book App. B; module docstring).

    .. math:: \nu_{K^*}(\xi) = \frac{1}{K^{*2}}\Big[C_W^2\operatorname{Var}_{K^*}(\sigma^2) + 4\xi^2K^{*2}C_Wg'(K^*)
              + 2C_W^2\sum_{b\ge1,\,b\ne2}\frac{\xi^b s_b^2}{1-\xi^b}\Big],\qquad
              \nu(\xi) = \tfrac23(1-\xi^4)\quad(K^*=0),

    with (C_b, C_W) = :func:`residual_critical`, s_b = ⟨σ²h_b⟩_{K*} (:func:`hermite_coefficients`,
    summed to b = ``modes``). ν_{K*} is the growth of V/K² per layer while K sits at K*.

    * Scale-invariant σ: K ≡ K^{(1)} (ν does not depend on it), ν = ν_{K*}. The first two terms are
      the formula sheet's (1 − ξ²)[(1 − ξ²)(3A₄/A₂² − 1) + 4ξ²]; the sum (odd b only) is the correction
      derived in this module.
    * Half-stable σ (GELU, SWISH; our extension): K approaches K* from its stable side as
      K − K* ≈ −2/(f''ℓ), so χ_∥² ≈ 1 − 4/ℓ and V ≈ ν_{K*}K*²ℓ/5: ν = ν_{K*}/5 (the convention of
      :func:`pdlt.theory.criticality.criticality`), reached only very slowly (ℓ ≫ 10³ for GELU).
      ``at_fixed_point=True`` returns ν_{K*}, the growth when the input sits exactly at K^{(1)} = K*.

    ξ = 0 gives the plain network's ν.
    """
    xi = _validate.real("xi", xi)
    if not xi * xi < 1:
        raise ValueError(f"nu(xi) needs |xi| < 1, got xi = {xi}")
    act = _activation(activation)
    cls = universality_class(act)
    x2 = xi * xi
    if cls == "K*=0":
        return 2.0 / 3.0 * (1 - x2 * x2)
    if cls == "scale-invariant":
        K, C_W = 1.0, (1 - x2) / act.A2
    elif cls == "half-stable":
        _, C_W, K = plain_critical(act)
        C_W *= 1 - x2
    else:
        raise ValueError(f"activation {act.name!r} has no critical point, so no ν")
    E = Expectations(act)
    g, d2, _ = (float(v) for v in E.g_derivs(K))
    var = float(E.sigma4(K)) - g * g
    nu = C_W ** 2 * var + 2.0 * x2 * K * K * C_W * d2
    if xi != 0.0:
        sb = hermite_coefficients(act, K, modes)
        b = np.arange(modes + 1)
        keep = (b >= 1) & (b != 2)
        xb = xi ** b[keep].astype(np.float64)
        nu += 2.0 * C_W ** 2 * float(np.sum(xb * sb[keep] ** 2 / (1.0 - xb)))
    nu /= K * K
    return nu / 5.0 if cls == "half-stable" and not at_fixed_point else nu


def residual_nu_sheet(activation, xi: float = 0.0) -> float:
    r"""The formula sheet's ν(ξ) (§10): (1 − ξ²)[(1 − ξ²)ν₀ + 4ξ²] (K* ≠ 0), (2/3)(1 − ξ⁴) (K* = 0).

    Kept for comparison: for non-odd σ it omits the odd-mode term of :func:`residual_nu` and fails
    the Monte Carlo twin (ReLU at ξ² = ½: sheet 2.25, :func:`residual_nu` 5.45).
    """
    xi = _validate.real("xi", xi)
    act = _activation(activation)
    cls = universality_class(act)
    x2 = xi * xi
    if cls == "K*=0":
        return 2.0 / 3.0 * (1 - x2 * x2)
    nu = (1 - x2) * ((1 - x2) * residual_nu(act, 0.0, at_fixed_point=True) + 4 * x2)
    return nu / 5.0 if cls == "half-stable" else nu


# ---------------------------------------------------------------------------------------------
# The recursion


def residual_net(widths: Sequence[int] | MLP | None = None, activation="relu", C_b=None, C_W=None,
                 xi: float = 0.0, *, input_dim: int | None = None, width: int | None = None,
                 depth: int | None = None) -> MLP:
    """The :class:`~pdlt.mlp.MLP` spec (widths, σ, C_b, C_W) of a residual network, validated for skip ξ.

    widths : [n₀, n₁, …, n_L], or an MLP, or None with ``input_dim``, ``width``, ``depth``
    (then n_L = width). C_b, C_W : numbers or per-layer lists; None → the residual critical values.
    With ξ ≠ 0 the skip needs n₁ = … = n_L.
    """
    xi = _validate.real("xi", xi)
    if isinstance(widths, MLP):
        if C_b is not None or C_W is not None:
            raise ValueError("give C_b/C_W either in the MLP or as arguments, not both")
        net = widths
    else:
        if C_b is None or C_W is None:
            cb, cw = residual_critical(activation, xi)
            C_b = cb if C_b is None else C_b
            C_W = cw if C_W is None else C_W
        if widths is None:
            if input_dim is None or width is None or depth is None:
                raise ValueError("give widths=[n0, n1, ..., nL] or input_dim, width and depth")
            net = MLP(input_dim, width, depth, activation, C_b=C_b, C_W=C_W)
        else:
            if input_dim is not None or width is not None or depth is not None:
                raise ValueError("give widths or input_dim/width/depth, not both")
            net = MLP(widths=widths, activation=activation, C_b=C_b, C_W=C_W)
    if xi != 0.0 and len(set(net.widths[1:])) > 1:
        raise ValueError(f"a skip connection z' = xi z + ... needs equal widths n_1 = ... = n_L; "
                         f"got {list(net.widths)}")
    return net


@dataclass(frozen=True)
class ResidualTheory:
    r"""Per-layer single-input observables of a residual MLP. Arrays have shape (L,), entry ℓ−1 ↔ layer ℓ.

    K, V, G1 : kernel, four-point vertex (E[z_i²z_j²]_conn = V/n_{ℓ−1}), 1/n kernel correction.
    chi_par, chi_perp : susceptibilities at K^{(ℓ)} for the step ℓ → ℓ+1 (last entry: same C_W).
    C, m : per layer, the (M, M) two-neuron covariance form and the (M,) one-neuron 1/n shift in the
        Hermite basis of that layer (module docstring); V = 2K²C[1, 1], G1 = √2 K m[1].
    ``layer(ℓ)`` gives a :class:`~pdlt.theory.LayerState`, so :func:`pdlt.observables.compare` works
    against a residual measurement (:func:`pdlt.empirical.residual.measure`).
    """

    net: MLP
    xi: float
    x: np.ndarray
    K: np.ndarray
    V: np.ndarray
    G1: np.ndarray
    chi_par: np.ndarray
    chi_perp: np.ndarray
    C: tuple = ()
    m: tuple = ()

    @property
    def G(self) -> np.ndarray:
        """E[z²] to O(1/n): K + G1/n_{ℓ−1}."""
        return self.K + self.G1 / np.array(self.net.widths[:-1], dtype=np.float64)

    def normalized_vertex(self) -> np.ndarray:
        """V^{(ℓ)}/(K^{(ℓ)})², the width-free growth ≈ ν(ℓ − 1) at criticality."""
        return self.V / self.K ** 2

    def layer(self, layer: int) -> LayerState:
        l = self.net.check_layer(layer)
        return LayerState(l, self.net.n(l - 1), np.full((1, 1), self.K[l - 1]),
                          np.full((1,) * 4, self.V[l - 1]), np.full((1, 1), self.G1[l - 1]))

    @property
    def depth(self) -> int:
        return self.net.depth


def residual_theory(widths=None, activation="relu", C_b=None, C_W=None, xi: float = 0.0, x=None, *,
                    input_dim: int | None = None, width: int | None = None, depth: int | None = None,
                    modes: int = 64) -> ResidualTheory:
    r"""K, V and G^{\{1\}} of a residual MLP through depth, single input (book App. B).

    widths : [n₀, …, n_L], an MLP, or None with input_dim/width/depth. activation : name or object.
    C_b, C_W : numbers or per-layer lists (None → critical for this ξ). xi : skip strength ξ.
    x : the input, shape (n₀,) or (1, n₀). K^{(1)} = C_b + C_W x·x/n₀, V^{(1)} = G^{\{1\}(1)} = 0.
    modes : Hermite truncation order M of the O(1/n) closure. Recursions in the module docstring.
    Returns :class:`ResidualTheory`.
    """
    net = residual_net(widths, activation, C_b, C_W, xi, input_dim=input_dim, width=width, depth=depth)
    xi = float(xi)
    if x is None:
        raise ValueError("give the input x, shape (n0,)")
    X = _validate.inputs("x", np.reshape(np.asarray(x, dtype=np.float64), (1, -1)) if np.ndim(x) == 1
                         else x, net.input_dim)
    if X.shape[0] != 1:
        raise ValueError(f"residual_theory is single-input; x has {X.shape[0]} rows")
    x = X[0]
    E = Expectations(net.activation)
    cb, cw = net.hyper(1)
    K = cb + cw * float(x @ x) / net.input_dim
    if K <= 0:
        raise ValueError("x = 0 with C_b = 0 in layer 1: K = 0; give C_b > 0 or a non-zero input")
    M = _validate.positive_int("modes", modes, minimum=4)
    a = np.arange(1, M + 1, dtype=np.float64)          # Hermite orders 1..M (index a-1)
    C = np.zeros((M, M))
    m = np.zeros(M)
    rows, Cs_, ms_ = [], [], []
    L = net.depth
    x2 = xi * xi
    for ell in range(1, L + 1):
        cb, cw = net.hyper(min(ell + 1, L))
        s = susceptibilities(E, K, cw)
        g = float(s["g"])
        cp, cq = x2 + float(s["chi_par"]), x2 + float(s["chi_perp"])
        rows.append((K, 2.0 * K * K * C[1, 1], math.sqrt(2.0) * K * m[1], cp, cq))
        Cs_.append(C)
        ms_.append(m)
        if ell == L:
            break
        r = net.n(ell) / net.n(ell - 1)
        var = float(E.sigma4(K)) - g * g
        sa = hermite_coefficients(net.activation, K, M)[1:]       # s_1..s_M
        K1 = x2 * K + cb + cw * g
        rho = xi * math.sqrt(K / K1)
        D = rho ** a
        w = 1.0 / (math.sqrt(2.0) * K1)
        Cs = C @ sa
        sCs = float(sa @ Cs)
        p = cw * D * (sa + r * Cs)
        Cn = r * D[:, None] * C * D[None, :]
        Cn[1, :] += w * p
        Cn[:, 1] += w * p
        Cn[1, 1] += w * w * cw * cw * (var + r * sCs)
        mn = r * D * m
        mn[1] += r * cw * float(m @ sa) / (math.sqrt(2.0) * K1)
        # a = b + 2 ≥ 3 from ∂_Ĝ Φ = Φ(½∂²): ρ^b √((b+1)(b+2))/(2K') C_W (s_b + r (Cs)_b), b = 1..M-2
        mn[2:] += D[:-2] * np.sqrt(a[2:] * (a[2:] - 1)) / (2.0 * K1) * cw * (sa[:-2] + r * Cs[:-2])
        mn[3] += math.sqrt(24.0) / (8.0 * K1 * K1) * cw * cw * (var + r * sCs)
        C, m, K = Cn, mn, K1
        if not (math.isfinite(K) and abs(K) < 1e150 and np.all(np.isfinite(C)) and np.all(np.isfinite(m))):
            raise OverflowError(f"the residual recursion overflowed at layer {ell + 1}; lower C_W, "
                                f"xi or the depth")
    arr = np.array(rows).T
    return ResidualTheory(net, xi, x, *arr, C=tuple(Cs_), m=tuple(ms_))
