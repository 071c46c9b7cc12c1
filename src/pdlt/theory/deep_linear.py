r"""Deep linear networks, σ(z) = z: exactly solvable at every finite width (book Ch. 3).

Two settings:

* **Single input, no biases** (the book's Ch. 3 setting, eqs. (3.4)–(3.57)). With
  :math:`G^{(0)} = \frac1{n_0}\sum_j x_j^2` (3.9), every correlator of layer ℓ has the Wick structure

  .. math:: \mathbb E\big[z^{(\ell)}_{i_1}\cdots z^{(\ell)}_{i_{2m}}\big]
            = \Big(\sum_{\text{pairings}}\delta\cdots\delta\Big)\, G^{(\ell)}_{2m},
            \qquad \mathbb E\big[(z^{(\ell)}_i)^{2m}\big] = (2m-1)!!\,G^{(\ell)}_{2m},

  and :math:`G^{(\ell)}_{2m} = \mathbb E[(\hat G^{(\ell)})^m]` is the m-th moment of the random
  single-neuron variance :math:`\hat G^{(\ell+1)} = \frac{C_W}{n_\ell}\sum_j (z^{(\ell)}_j)^2`.

* **Several inputs with biases, exact at every width.** Conditional on layer ℓ,
  :math:`z^{(\ell+1)}_i \sim \mathcal N(0, \hat G^{(\ell+1)})` iid over i, with the random Gram matrix
  :math:`\hat G^{(\ell+1)}_{ab} = C_b + \frac{C_W}{n_\ell}\sum_j z^{(\ell)}_{j;a} z^{(\ell)}_{j;b}` and
  :math:`\hat G^{(1)} = C_b + \frac{C_W}{n_0} X X^\top` deterministic. The Wishart moments
  :math:`\mathbb E[S_{ab}] = n G_{ab}`,
  :math:`\mathbb E[S_{ab}S_{cd}] = n^2 G_{ab}G_{cd} + n(G_{ac}G_{bd} + G_{ad}G_{bc})` of
  :math:`S = \sum_{j=1}^{n} z_j z_j^\top` close the recursion for :math:`m = \mathbb E[\hat G]` and
  :math:`M_{abcd} = \mathbb E[\hat G_{ab}\hat G_{cd}]` exactly:

  .. math::
      m' = C_b + C_W m,\qquad
      M'_{abcd} = C_b^2 + C_b C_W (m_{ab} + m_{cd})
                 + C_W^2\Big[M_{abcd} + \tfrac{1}{n_\ell}(M_{acbd} + M_{adbc})\Big].

  The width that enters the step ℓ → ℓ+1 is n_ℓ, the width summed over in :math:`\hat G^{(\ell+1)}`.

Conventions are the book's (formula sheet §0, §2): W^{(ℓ)} has variance C_W^{(ℓ)}/n_{ℓ−1}; layers are
ℓ = 1..L; the four-point vertex of layer ℓ carries the prefactor 1/n_{ℓ−1}. A scaled identity
σ(z) = a z is also accepted by the :class:`~pdlt.mlp.MLP` functions; it acts as C_W → a² C_W in
layers ℓ ≥ 2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import special

from .. import _validate as v
from ..activations import Monomial, PiecewiseLinear
from ..mlp import MLP

__all__ = [
    "c2m", "even_moment", "even_moment_recursion", "connected_four_point", "connected_six_point",
    "observable_variance", "even_moment_fixed_ratio", "connected_four_point_fixed_ratio",
    "connected_six_point_fixed_ratio", "normalized_excess", "OrderOfLimits", "order_of_limits",
    "LinearMoments", "LeadingOrder", "exact_two_and_four_point", "leading_order_kernel_and_vertex",
    "same_neuron_four_point",
]


# ---------------------------------------------------------------------------------------------
# argument handling


def _order(m) -> int:
    return v.positive_int("m", m)


def _hidden_widths(widths, upto: int) -> list[float]:
    """[n_1, ..., n_upto] from an int (every hidden width) or the list [n_0, n_1, ..., n_L]."""
    if isinstance(widths, MLP):
        widths = widths.widths
    if isinstance(widths, Sequence | np.ndarray) and not isinstance(widths, str):
        ws = list(widths)
        if len(ws) < upto + 1:
            raise ValueError(f"widths must list [n0, n1, ..., n_{upto}] (at least {upto + 1} entries) "
                             f"for this layer; got {len(ws)} entries")
        return [v.positive_int(f"widths[{i}]", ws[i]) for i in range(1, upto + 1)]
    n = v.positive_int("widths", widths)
    return [n] * upto


def _per_layer_CW(C_W, layer: int) -> list[float]:
    """[C_W^{(1)}, ..., C_W^{(layer)}] from one number or a per-layer sequence (entry ℓ−1 is layer ℓ)."""
    if isinstance(C_W, Sequence | np.ndarray) and not isinstance(C_W, str):
        cs = list(C_W)
        if len(cs) < layer:
            raise ValueError(f"C_W has {len(cs)} entries but layer {layer} needs C_W^(1..{layer})")
        return [v.real(f"C_W[{i}]", cs[i], low=0.0, low_open=True) for i in range(layer)]
    return [v.real("C_W", C_W, low=0.0, low_open=True)] * layer


def _log_c2m(m: int, n) -> float:
    return math.fsum(math.log1p(2.0 * s / n) for s in range(1, m))


# ---------------------------------------------------------------------------------------------
# single input, no biases (book §3.2–3.4)


def c2m(m: int, n) -> float:
    r"""The per-layer growth factor of the 2m-point function, eq. (3.46).

    .. math:: c_{2m}(n) = \prod_{s=1}^{m-1}\Big(1 + \frac{2s}{n}\Big)
              = \frac{\Gamma(n/2 + m)}{\Gamma(n/2)}\Big(\frac{2}{n}\Big)^m
              = \frac{\mathbb E[(\chi^2_n)^m]}{n^m}.

    ``n`` > 0 may be any real number (the product form is used). Returns a float.
    """
    m = _order(m)
    n = v.real("n", n, low=0.0, low_open=True)
    return math.exp(_log_c2m(m, n))


def even_moment(m: int, layer: int, widths, C_W, G0) -> float:
    r"""Exact G^{(ℓ)}_{2m} of a bias-free deep linear network with a single input, eq. (3.47).

    .. math:: G^{(\ell)}_{2m} = \Big[\prod_{\ell'=1}^{\ell-1} c_{2m}(n_{\ell'})\Big]\big(G^{(\ell)}_2\big)^m,
              \qquad G^{(\ell)}_2 = \Big[\prod_{\ell'=1}^{\ell} C_W^{(\ell')}\Big] G^{(0)}
              \quad\big(= C_W^\ell G^{(0)},\ (3.15)\big),

    defined by :math:`\mathbb E[z_{i_1}\cdots z_{i_{2m}}] = (\sum_\text{pairings}\delta\cdots\delta)\,G_{2m}`,
    so :math:`\mathbb E[z_i^{2m}] = (2m-1)!!\,G_{2m}`. m = 1 is the two-point function.

    Parameters
    ----------
    m : order, ≥ 1.
    layer : ℓ ≥ 1.
    widths : one int (every hidden width n) or [n_0, n_1, ..., n_L] (only n_1..n_{ℓ−1} enter), or an MLP.
    C_W : one number or per-layer values [C_W^{(1)}, ...] (at least ℓ of them).
    G0 : G^{(0)} = (1/n_0) Σ_j x_j² ≥ 0.
    """
    m = _order(m)
    layer = v.positive_int("layer", layer)
    ns = _hidden_widths(widths, layer - 1)
    cws = _per_layer_CW(C_W, layer)
    G0 = v.real("G0", G0, low=0.0)
    if G0 == 0.0:
        return 0.0
    log_g2 = math.fsum(math.log(c) for c in cws) + math.log(G0)
    log_growth = math.fsum(_log_c2m(m, n) for n in ns)
    return math.exp(log_growth + m * log_g2)


def even_moment_recursion(m: int, layer: int, widths, C_W, G0) -> np.ndarray:
    r"""G^{(ℓ')}_{2m} for ℓ' = 1..ℓ by iterating the layer-to-layer recursion (3.45); shape (ℓ,).

    .. math:: G^{(1)}_{2m} = \big(C_W^{(1)} G^{(0)}\big)^m,\qquad
              G^{(\ell+1)}_{2m} = c_{2m}(n_\ell)\,\big(C_W^{(\ell+1)}\big)^m\,G^{(\ell)}_{2m},

    with c_{2m} evaluated in its Gamma-function form (3.46),
    :math:`c_{2m}(n) = (n/2)_m (2/n)^m` (Pochhammer symbol), i.e. the m-th moment of χ²_n/n:
    an independent route to the closed form of :func:`even_moment`. Arguments as there.
    """
    m = _order(m)
    layer = v.positive_int("layer", layer)
    ns = _hidden_widths(widths, layer - 1)
    cws = _per_layer_CW(C_W, layer)
    G0 = v.real("G0", G0, low=0.0)
    out = np.empty(layer)
    out[0] = (cws[0] * G0) ** m
    for ell in range(1, layer):
        n = ns[ell - 1]
        c = special.poch(n / 2.0, m) * (2.0 / n) ** m
        out[ell] = c * cws[ell] ** m * out[ell - 1]
    return out


def connected_four_point(layer: int, widths, C_W, G0) -> float:
    r"""Connected four-point function of layer ℓ, exact, eq. (3.28).

    .. math:: \mathbb E[z_{i_1}z_{i_2}z_{i_3}z_{i_4}]\big|_\text{conn}
              = (\delta_{i_1i_2}\delta_{i_3i_4} + \delta_{i_1i_3}\delta_{i_2i_4} + \delta_{i_1i_4}\delta_{i_2i_3})
                \big(G_4^{(\ell)} - (G_2^{(\ell)})^2\big),\qquad
              G_4 - G_2^2 = \Big[\prod_{\ell'<\ell}\big(1+\tfrac{2}{n_{\ell'}}\big) - 1\Big] G_2^2
              = \tfrac{2(\ell-1)}{n}G_2^2 + O(n^{-2}).

    Returns the scalar coefficient G_4 − G_2² (= Cov(z_i², z_j²), i ≠ j; = V^{(ℓ)}/n_{ℓ−1} at leading
    order). Arguments as in :func:`even_moment`.
    """
    g2 = even_moment(1, layer, widths, C_W, G0)
    ns = _hidden_widths(widths, v.positive_int("layer", layer) - 1)
    excess = math.expm1(math.fsum(math.log1p(2.0 / n) for n in ns))
    return excess * g2 * g2


def connected_six_point(layer: int, widths, C_W, G0) -> float:
    r"""Connected six-point function of layer ℓ, exact (structure of eq. (3.57)).

    .. math:: \mathbb E[z_{i_1}\cdots z_{i_6}]\big|_\text{conn}
              = \Big(\sum_{15\ \text{pairings}}\delta\delta\delta\Big)
                \big(G_6 - 3 G_2 G_4 + 2 G_2^3\big) = O(1/n^2).

    Returns the scalar coefficient G_6 − 3 G_2 G_4 + 2 G_2³. Arguments as in :func:`even_moment`.
    """
    g2 = even_moment(1, layer, widths, C_W, G0)
    if g2 == 0.0:
        return 0.0
    ns = _hidden_widths(widths, v.positive_int("layer", layer) - 1)
    e4 = math.fsum(_log_c2m(2, n) for n in ns)
    e6 = math.fsum(_log_c2m(3, n) for n in ns)
    # e^{e6} − 3 e^{e4} + 2 written with expm1 to keep precision when both exponents are tiny
    return (math.expm1(e6) - 3.0 * math.expm1(e4)) * g2 ** 3


def observable_variance(layer: int, widths, C_W, G0) -> float:
    r"""Variance of the mean-square observable O^{(ℓ)} = (1/n_ℓ) Σ_j (z^{(ℓ)}_j)², exact, eq. (3.33).

    .. math:: \mathrm{Var}\big[O^{(\ell)}\big] = \frac{2}{n_\ell}G^{(\ell)}_4
              + \big(G^{(\ell)}_4 - (G^{(\ell)}_2)^2\big)
              = \frac{2\ell}{n}\big(G^{(\ell)}_2\big)^2 + O(n^{-2}).

    The first term is the self-averaging of n_ℓ neurons, the second the neuron–neuron correlation.
    ``widths`` must reach n_ℓ (the layer's own width), i.e. [n_0, ..., n_ℓ, ...] or one int.
    """
    layer = v.positive_int("layer", layer)
    n_l = _hidden_widths(widths, layer)[-1]
    g4 = even_moment(2, layer, widths, C_W, G0)
    return 2.0 / n_l * g4 + connected_four_point(layer, widths, C_W, G0)


# ---------------------------------------------------------------------------------------------
# large depth and width at fixed r = L/n (book §3.4)


def _ratio(r) -> float:
    return v.real("r", r, low=0.0)


def even_moment_fixed_ratio(m: int, r, G2=1.0) -> float:
    r"""G^{(L)}_{2m} in the limit L, n → ∞ at fixed depth-to-width ratio r = L/n, eqs. (3.52)–(3.55).

    .. math:: G^{(L)}_{2m} \to e^{m(m-1) r}\,\big(G^{(L)}_2\big)^m,

    from c_{2m}(n) = 1 + m(m−1)/n + O(n^{−2}) (3.53). ``G2`` = G_2^{(L)} (= G^{(0)} at criticality C_W = 1).
    """
    m = _order(m)
    r = _ratio(r)
    G2 = v.real("G2", G2, low=0.0)
    return math.exp(m * (m - 1) * r) * G2 ** m


def connected_four_point_fixed_ratio(r, G2=1.0) -> float:
    r"""Connected four-point coefficient at fixed r = L/n, eq. (3.56).

    .. math:: G_4 - G_2^2 \to \big(e^{2r} - 1\big) G_2^2 = 2r\,G_2^2 + O(r^2).
    """
    r = _ratio(r)
    G2 = v.real("G2", G2, low=0.0)
    return math.expm1(2.0 * r) * G2 ** 2


def connected_six_point_fixed_ratio(r, G2=1.0) -> float:
    r"""Connected six-point coefficient at fixed r = L/n, eq. (3.57).

    .. math:: G_6 - 3G_2G_4 + 2G_2^3 \to \big(e^{6r} - 3e^{2r} + 2\big) G_2^3 = 12 r^2 G_2^3 + O(r^3).
    """
    r = _ratio(r)
    G2 = v.real("G2", G2, low=0.0)
    return (math.expm1(6.0 * r) - 3.0 * math.expm1(2.0 * r)) * G2 ** 3


def normalized_excess(m: int, depth: int, width) -> float:
    r"""Exact R_{2m} ≡ G^{(L)}_{2m}/(G^{(L)}_2)^m − 1 at layer L of a network with every hidden width n.

    .. math:: R_{2m}(L, n) = c_{2m}(n)^{L-1} - 1
              \quad\xrightarrow{\,L = rn,\ n\to\infty\,}\quad e^{m(m-1)r} - 1.

    It measures the non-Gaussianity of the output; independent of C_W and G^{(0)}. ``width`` may be any
    real n > 0, ``depth`` = L ≥ 1. Returns ``inf`` on overflow (depth ≫ width).
    """
    m = _order(m)
    depth = v.positive_int("depth", depth)
    n = v.real("width", width, low=0.0, low_open=True)
    expo = (depth - 1) * _log_c2m(m, n)
    if expo > 709.0:
        return math.inf
    return math.expm1(expo)


class OrderOfLimits(NamedTuple):
    """The two iterated limits of R_{2m} and the joint limit at fixed r (see :func:`order_of_limits`)."""

    width_first: float  #: lim_{L→∞} lim_{n→∞} R_{2m}: infinite width first — Gaussian, 0
    depth_first: float  #: lim_{n→∞} lim_{L→∞} R_{2m}: infinite depth first — ∞ (for m ≥ 2)
    fixed_ratio: float  #: lim_{L,n→∞, L/n=r} R_{2m} = e^{m(m−1)r} − 1


def order_of_limits(r, m: int = 2) -> OrderOfLimits:
    r"""The non-commuting limits of eq. (3.51) for the normalized excess R_{2m} = G_{2m}/G_2^m − 1.

    .. math::
        \lim_{L\to\infty}\lim_{n\to\infty} R_{2m} = 0 \;\neq\;
        \lim_{n\to\infty}\lim_{L\to\infty} R_{2m} = \infty,\qquad
        \lim_{L = rn\to\infty} R_{2m} = e^{m(m-1)r} - 1 .

    Taking the width to infinity first gives the Gaussian (infinite-width) answer at every depth; taking the
    depth to infinity first at fixed width makes c_{2m}(n)^{L−1} diverge. The physical answer interpolates
    between them and is governed by r = L/n alone. For m = 1 all three vanish. Compare with
    :func:`normalized_excess` at large finite (L, n).
    """
    m = _order(m)
    r = _ratio(r)
    return OrderOfLimits(width_first=0.0, depth_first=math.inf if m >= 2 else 0.0,
                         fixed_ratio=math.expm1(m * (m - 1) * r))


# ---------------------------------------------------------------------------------------------
# several inputs with biases, exact at every width


class LinearMoments(NamedTuple):
    r"""Exact two- and four-point data of a deep linear network, stacked over layers ℓ = 1..L (index ℓ−1).

    Attributes
    ----------
    m : (L, N, N), :math:`m^{(\ell)}_{ab} = \mathbb E[\hat G^{(\ell)}_{ab}] = \mathbb E[z_{i;a}z_{i;b}]`
        (the exact kernel; equals the infinite-width K^{(ℓ)} for linear networks).
    M : (L, N, N, N, N), :math:`M^{(\ell)}_{abcd} = \mathbb E[\hat G_{ab}\hat G_{cd}]
        = \mathbb E[z_{i;a}z_{i;b}z_{j;c}z_{j;d}]` for i ≠ j.
    V : (L, N, N, N, N), the exact vertex :math:`V^{(\ell)} = n_{\ell-1}(M^{(\ell)} - m^{(\ell)}\otimes m^{(\ell)})`,
        so that Cov(z_{i;a}z_{i;b}, z_{j;c}z_{j;d}) = V_{(ab)(cd)}/n_{ℓ−1} exactly. V^{(1)} = 0.
    """

    m: np.ndarray
    M: np.ndarray
    V: np.ndarray

    def layer(self, ell: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(m, M, V) of layer ℓ = 1..L."""
        L = self.m.shape[0]
        if isinstance(ell, bool) or not isinstance(ell, int | np.integer) or not 1 <= ell <= L:
            raise ValueError(f"layer must be an integer in 1..{L}, got {ell!r}")
        return self.m[ell - 1], self.M[ell - 1], self.V[ell - 1]


class LeadingOrder(NamedTuple):
    """Leading-order kernel K (L, N, N) and vertex V (L, N, N, N, N), stacked over ℓ = 1..L."""

    K: np.ndarray
    V: np.ndarray


def _linear_gain(net) -> float:
    """a² for σ(z) = a z; ValueError naming ``net`` otherwise."""
    if not isinstance(net, MLP):
        raise ValueError(f"net must be a pdlt.MLP, got {type(net).__name__}")
    act = net.activation
    if isinstance(act, PiecewiseLinear) and act.a_plus == act.a_minus:
        return act.a_plus ** 2
    if isinstance(act, Monomial) and act.p == 1:
        return 1.0
    raise ValueError(f"net.activation must be linear (sigma(z) = a z, e.g. 'linear') for the exact deep-linear "
                     f"results; got {act!r}")


def _swap_pairs(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T_acbd, T_adbc) as arrays indexed [a, b, c, d]."""
    return np.einsum("acbd->abcd", T), np.einsum("adbc->abcd", T)


def exact_two_and_four_point(net: MLP, X) -> LinearMoments:
    r"""Exact m = E[Ĝ], M = E[Ĝ⊗Ĝ] and vertex V of every layer of a deep linear MLP with biases.

    Iterates, for ℓ = 1..L−1 (with c_W ≡ a² C_W^{(ℓ+1)}, c_b ≡ C_b^{(ℓ+1)}):

    .. math::
        m^{(1)} = C_b^{(1)} + \frac{C_W^{(1)}}{n_0} X X^\top,\quad M^{(1)} = m^{(1)}\otimes m^{(1)},\\
        m^{(\ell+1)} = c_b + c_W m^{(\ell)},\qquad
        M^{(\ell+1)}_{abcd} = c_b^2 + c_b c_W(m_{ab} + m_{cd})
            + c_W^2\Big[M_{abcd} + \frac{M_{acbd} + M_{adbc}}{n_\ell}\Big],

    carried as the covariance :math:`C = M - m\otimes m`,
    :math:`C^{(\ell+1)} = c_W^2[C^{(\ell)} + (M_{acbd} + M_{adbc})/n_\ell]` (no cancellation), and
    :math:`V^{(\ell)} = n_{\ell-1} C^{(\ell)}`. Same-neuron four-point functions follow from
    :func:`same_neuron_four_point`. Expanding in 1/n reproduces :func:`leading_order_kernel_and_vertex`;
    the difference obeys :math:`V_\text{exact} - V_\text{LO} = O(\ell^2/n)\,K^2`.

    Parameters
    ----------
    net : MLP with a linear activation (σ(z) = a z); any widths, per-layer C_b, C_W.
    X : inputs, shape (N, n_0).

    Returns
    -------
    LinearMoments with m (L, N, N), M (L, N, N, N, N), V (L, N, N, N, N); float64. Memory is O(L N⁴).
    """
    gain = _linear_gain(net)
    X = v.inputs("X", X, net.input_dim)
    ns = net.widths
    L, N = net.depth, X.shape[0]
    cb, cw = net.hyper(1)
    m = cb + cw * (X @ X.T) / ns[0]
    C = np.zeros((N,) * 4)
    ms, Ms, Vs = np.empty((L, N, N)), np.empty((L,) + (N,) * 4), np.empty((L,) + (N,) * 4)
    for ell in range(1, L + 1):
        mm = np.einsum("ab,cd->abcd", m, m)
        M = mm + C
        ms[ell - 1], Ms[ell - 1], Vs[ell - 1] = m, M, ns[ell - 1] * C
        if ell == L:
            break
        cb, cw = net.hyper(ell + 1)
        cw = cw * gain
        acbd, adbc = _swap_pairs(M)
        C = cw ** 2 * (C + (acbd + adbc) / ns[ell])
        m = cb + cw * m
    return LinearMoments(ms, Ms, Vs)


def leading_order_kernel_and_vertex(net: MLP, X) -> LeadingOrder:
    r"""Leading-order (in 1/n) kernel and four-point vertex of a deep linear MLP, per layer.

    The general recursion (formula sheet §1–2) specialised to σ(z) = a z (c_W ≡ a² C_W^{(ℓ+1)}):

    .. math::
        K^{(\ell+1)} = C_b^{(\ell+1)} + c_W K^{(\ell)},\qquad
        V^{(\ell+1)}_{(ab)(cd)} = c_W^2\big(K_{ac}K_{bd} + K_{ad}K_{bc}\big)
            + \frac{n_\ell}{n_{\ell-1}}\, c_W^2\, V^{(\ell)}_{(ab)(cd)},

    with K^{(1)} = C_b^{(1)} + C_W^{(1)} X Xᵀ/n_0 and V^{(1)} = 0. The exact result
    (:func:`exact_two_and_four_point`) adds :math:`c_W^2 (V_{(ac)(bd)} + V_{(ad)(bc)})/n_{\ell-1}` at each step.

    Returns LeadingOrder with K (L, N, N) and V (L, N, N, N, N).
    """
    gain = _linear_gain(net)
    X = v.inputs("X", X, net.input_dim)
    ns = net.widths
    L, N = net.depth, X.shape[0]
    cb, cw = net.hyper(1)
    K = cb + cw * (X @ X.T) / ns[0]
    V = np.zeros((N,) * 4)
    Ks, Vs = np.empty((L, N, N)), np.empty((L,) + (N,) * 4)
    for ell in range(1, L + 1):
        Ks[ell - 1], Vs[ell - 1] = K, V
        if ell == L:
            break
        cb, cw = net.hyper(ell + 1)
        cw = cw * gain
        V = cw ** 2 * (np.einsum("ac,bd->abcd", K, K) + np.einsum("ad,bc->abcd", K, K)
                       + (ns[ell] / ns[ell - 1]) * V)
        K = cb + cw * K
    return LeadingOrder(Ks, Vs)


def same_neuron_four_point(M: np.ndarray) -> np.ndarray:
    r"""Same-neuron four-point function from the Gram second moment (exact for Gaussian-given-Ĝ layers).

    .. math:: \mathbb E[z_{i;a}z_{i;b}z_{i;c}z_{i;d}] = M_{abcd} + M_{acbd} + M_{adbc}.

    ``M`` has shape (..., N, N, N, N) (e.g. :attr:`LinearMoments.M`); the result has the same shape.
    """
    M = np.asarray(M, dtype=np.float64)
    if M.ndim < 4 or len(set(M.shape[-4:])) != 1:
        raise ValueError(f"M must have shape (..., N, N, N, N); got {M.shape}")
    return M + np.einsum("...acbd->...abcd", M) + np.einsum("...adbc->...abcd", M)
