r"""Learning-rate scalings: the learning-rate equivalence principle (book Ch. 9; formula sheet §0, §5).

The learning-rate tensor is diagonal: λ_b^{(ℓ)} for the biases of layer ℓ and λ_W^{(ℓ)}/n_{ℓ−1} for
its weights (Ch. 7). At infinite width the single-input NTK obeys

.. math:: \Theta^{(\ell+1)} = \lambda_b^{(\ell+1)} + \lambda_W^{(\ell+1)} g(K^{(\ell)})
          + \chi_\perp(K^{(\ell)})\,\Theta^{(\ell)},\qquad
          \Theta^{(1)} = \lambda_b^{(1)} + \lambda_W^{(1)}\,\frac{x\cdot x}{n_0},

with g(K) = ⟨σ²⟩_K and χ⊥(K) = C_W^{(ℓ+1)}⟨σ′²⟩_K. Unrolled, it is a sum of one term per layer,

.. math:: \Theta^{(L)} = \sum_{\ell=1}^{L}\Big[\lambda_b^{(\ell)} + \lambda_W^{(\ell)} g(K^{(\ell-1)})\Big]
          \prod_{\ell'=\ell}^{L-1}\chi_\perp(K^{(\ell')}),\qquad g(K^{(0)}) \equiv \frac{x\cdot x}{n_0},

(:func:`layer_contributions`). The *equivalence principle* chooses λ^{(ℓ)} so that every layer
contributes equally, 1/L of Θ^{(L)} (:func:`equivalence_principle`):

* scale-invariant (§5.2): λ_b = λ̃_b/L, λ_W = λ̃_W/L → Θ^{(L)} = λ̃_b + λ̃_W A₂K*, exactly;
* K* = 0 (§5.3.3): λ_b = λ̃_b L^{p⊥−1}/ℓ^{p⊥}, λ_W = λ̃_W (L/ℓ)^{p⊥−1} → Θ^{(L)} → λ̃_b + λ̃_W σ₁²/(−a₁);
* half-stable (§5.3.4): at the critical point K^{(ℓ)} = K*, χ⊥ = 1 and g = g(K*) in every layer, so
  the decomposition gives λ = λ̃/L and Θ^{(L)} = λ̃_b + λ̃_W g(K*) exactly (derived here; the book's
  Ch. 9 treats the first two classes).

For an input off the fixed point (``K1=...``) the rates are chosen numerically on the single-input
kernel trajectory so that each layer's bias and weight terms are each exactly λ̃_b/L and
λ̃_W g*/L, with g* the class's asymptotic value above (any class).

Status: the Ch. 9 scalings are tagged [D] in the formula sheet (structure recalled, equation numbers
unconfirmed). Θ's single-input recursion is implemented locally here (float64), independent of
:mod:`pdlt.theory.ntk`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from .. import _validate
from ..activations import Activation, CallableActivation, get_activation
from ..mlp import MLP

__all__ = ["EquivalenceRates", "equivalence_principle", "theta_limit", "LayerContributions",
           "layer_contributions"]


class EquivalenceRates(NamedTuple):
    """Per-layer learning rates (ℓ = 1..L): unpacks as ``lambda_b, lambda_W = ...``."""

    lambda_b: tuple[float, ...]
    lambda_W: tuple[float, ...]


@lru_cache(maxsize=32)
def _crit_cached(act: Activation):
    from .criticality import criticality

    return criticality(act)


def _crit(act: Activation):
    if isinstance(act, CallableActivation):
        from .criticality import criticality

        return criticality(act)
    crit = _crit_cached(act)
    if crit.universality_class == "none":
        raise ValueError(f"activation {act.name} has no criticality (universality class 'none'), so the "
                         f"learning-rate equivalence principle (book Ch. 9) does not apply: {crit.explanation}")
    return crit


def _g(act: Activation, K: float) -> float:
    from .criticality import kernel_map

    return float(kernel_map(act, np.array([K]), 0.0, 1.0)[0])


def _sp2(act: Activation, K: float) -> float:
    from .criticality import chi_perp

    return float(chi_perp(act, np.array([K]), 1.0)[0])


def _g_star(crit, K1: float | None) -> float:
    """The per-layer weight source g at criticality the equivalence principle normalizes to."""
    cls = crit.universality_class
    if cls == "scale-invariant":
        if K1 is None:
            raise ValueError("the scale-invariant class has a line of fixed points: give K1 (K* = K1)")
        return K1 / crit.C_W                       # A₂K* with A₂ = 1/C_W, K* = K1 (C_b = 0)
    if cls == "K*=0":
        return 1.0 / (crit.C_W * (-crit.a1))       # σ₁²/(−a₁), σ₁² = 1/C_W
    return _g(crit.activation, crit.K_star)        # half-stable: g(K*)


def theta_limit(activation, lambda_b_tilde: float = 1.0, lambda_W_tilde: float = 1.0, *,
                K1: float | None = None) -> float:
    r"""Θ^{(L)} under the equivalence-principle rates (book Ch. 9): λ̃_b + λ̃_W g*.

    g* = A₂K* (scale-invariant; K* = K1, required), σ₁²/(−a₁) (K* = 0; the L → ∞ limit),
    g(K*) (half-stable).
    """
    act = get_activation(activation)
    lb = _validate.real("lambda_b_tilde", lambda_b_tilde, low=0.0)
    lw = _validate.real("lambda_W_tilde", lambda_W_tilde, low=0.0)
    K1 = None if K1 is None else _validate.real("K1", K1, low=0.0, low_open=True)
    return lb + lw * _g_star(_crit(act), K1)


def _trajectory(act: Activation, C_b, C_W, K1: float, depth: int):
    """K^{(1..L)}, the sources g(K^{(0..L−1)}) and the susceptibilities χ⊥(K^{(1..L−1)})."""
    K = np.empty(depth)
    gs = np.empty(depth)
    chi = np.empty(max(depth - 1, 0))
    K[0] = K1
    gs[0] = (K1 - C_b[0]) / C_W[0]              # x·x/n₀
    for i in range(depth - 1):
        if not K[i] > 0.0:
            raise ValueError(f"the kernel K^({i + 1}) = {K[i]:g} is not positive; the Θ recursion needs K > 0")
        g = _g(act, K[i])
        gs[i + 1] = g
        chi[i] = C_W[i + 1] * _sp2(act, K[i])
        K[i + 1] = C_b[i + 1] + C_W[i + 1] * g
    return K, gs, chi


def _suffix_products(chi: np.ndarray, depth: int) -> np.ndarray:
    """P_ℓ = Π_{ℓ'=ℓ}^{L−1} χ⊥(K^{(ℓ')}) for ℓ = 1..L (P_L = 1)."""
    P = np.ones(depth)
    for i in range(depth - 2, -1, -1):
        P[i] = P[i + 1] * chi[i]
    return P


def equivalence_principle(activation, depth: int, lambda_b_tilde: float = 1.0, lambda_W_tilde: float = 1.0,
                          *, K1: float | None = None) -> EquivalenceRates:
    r"""Per-layer learning rates (λ_b^{(ℓ)}, λ_W^{(ℓ)}), ℓ = 1..L, from the equivalence principle (Ch. 9).

    Every layer then contributes the same share 1/L of the NTK Θ^{(L)} of a critically initialized MLP.

    Without ``K1`` the class's closed form is returned (see the module docstring): exact for the
    scale-invariant class (any input) and for the half-stable class at K^{(1)} = K*; for K* = 0 the
    shares are 1/L up to corrections from the early layers, where K^{(ℓ)} ≠ 1/(−a₁ℓ).

    With ``K1`` (the first-layer kernel C_b + C_W x·x/n₀ of the input) the rates are solved on that
    input's single-input kernel trajectory so that each layer contributes exactly λ̃_b/L + λ̃_W g*/L
    and Θ^{(L)} = :func:`theta_limit` exactly (K1 ≥ C_b; K1 > C_b if λ̃_W > 0).

    Raises ValueError for activations without criticality (class ``"none"``).
    """
    act = get_activation(activation)
    L = _validate.positive_int("depth", depth)
    lb = _validate.real("lambda_b_tilde", lambda_b_tilde, low=0.0)
    lw = _validate.real("lambda_W_tilde", lambda_W_tilde, low=0.0)
    crit = _crit(act)
    cls = crit.universality_class
    if K1 is None:
        if cls == "K*=0":
            p = float(crit.p_perp)
            return EquivalenceRates(tuple(lb * L ** (p - 1.0) / ell ** p for ell in range(1, L + 1)),
                                    tuple(lw * (L / ell) ** (p - 1.0) for ell in range(1, L + 1)))
        return EquivalenceRates((lb / L,) * L, (lw / L,) * L)
    K1 = _validate.real("K1", K1, low=0.0, low_open=True)
    C_b, C_W = (float(crit.C_b),) * L, (float(crit.C_W),) * L
    if K1 < C_b[0] or (lw > 0 and K1 <= C_b[0]):
        raise ValueError(f"K1 = {K1:g} is below the critical C_b = {C_b[0]:g}: no input has that kernel"
                         if K1 < C_b[0] else
                         f"K1 = C_b = {K1:g} means x = 0: the first layer's weights cannot contribute")
    _, gs, chi = _trajectory(act, C_b, C_W, K1, L)
    P = _suffix_products(chi, L)
    g_star = _g_star(crit, K1)
    lam_b = tuple(float(lb / (L * P[i])) for i in range(L))
    lam_W = tuple(float(lw * g_star / (L * P[i] * gs[i])) if lw > 0 else 0.0 for i in range(L))
    return EquivalenceRates(lam_b, lam_W)


@dataclass(frozen=True)
class LayerContributions:
    r"""Each layer's term in Θ^{(L)} = Σ_ℓ [λ_b^{(ℓ)} + λ_W^{(ℓ)} g(K^{(ℓ−1)})] Π_{ℓ'=ℓ}^{L−1} χ⊥^{(ℓ')}.

    Arrays have one entry per layer ℓ = 1..L. ``Theta`` is the recursion's Θ^{(ℓ)} (ℓ = 1..L), so
    ``total.sum() == Theta[-1]`` up to rounding; ``share = total/Theta[-1]``.
    """

    bias: np.ndarray
    weight: np.ndarray
    total: np.ndarray
    share: np.ndarray
    Theta: np.ndarray
    K: np.ndarray
    chi_perp: np.ndarray   # χ⊥(K^{(ℓ)}) C_W^{(ℓ+1)} for ℓ = 1..L−1

    @property
    def Theta_L(self) -> float:
        return float(self.Theta[-1])


def layer_contributions(net: MLP, x) -> LayerContributions:
    r"""Decompose the infinite-width single-input NTK Θ^{(L)} of ``net`` at input ``x`` by layer.

    ``net``: a :class:`~pdlt.mlp.MLP` (per-layer C_b, C_W, λ_b, λ_W); ``x``: one input, shape (n₀,)
    or (1, n₀). Θ is iterated with the single-input recursion of the formula sheet §5 (float64).
    """
    if not isinstance(net, MLP):
        raise ValueError(f"net must be a pdlt.MLP, got {type(net).__name__}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 1 or x.shape[0] != net.input_dim:
        raise ValueError(f"x must be one input of shape ({net.input_dim},) or (1, {net.input_dim}); "
                         f"got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x has non-finite entries")
    L = net.depth
    act = net.activation
    C_b, C_W = np.array(net.C_b), np.array(net.C_W)
    lam_b, lam_W = np.array(net.lambda_b), np.array(net.lambda_W)
    K1 = float(C_b[0] + C_W[0] * (x @ x) / net.input_dim)
    K, gs, chi = _trajectory(act, C_b, C_W, K1, L)
    P = _suffix_products(chi, L)
    bias = lam_b * P
    weight = lam_W * gs * P
    total = bias + weight
    Theta = np.empty(L)
    Theta[0] = lam_b[0] + lam_W[0] * gs[0]
    for i in range(L - 1):
        Theta[i + 1] = lam_b[i + 1] + lam_W[i + 1] * gs[i + 1] + chi[i] * Theta[i]
    with np.errstate(divide="ignore", invalid="ignore"):
        share = total / Theta[-1]
    return LayerContributions(bias, weight, total, share, Theta, K, chi)
