r"""The 1/n correction :math:`H^{\{1\}}` to the NTK mean (book Ch. 8 / Ch. ∞; derived here, not from the book).

Purpose
-------
At finite width the mean NTK is

.. math:: E\big[\hat H^{(\ell)}_{i_1i_2;\alpha_1\alpha_2}\big] = \delta_{i_1i_2}\Big[\Theta^{(\ell)}_{\alpha_1\alpha_2}
          + \frac{1}{n_{\ell-1}} H^{\{1\}(\ell)}_{\alpha_1\alpha_2} + O(1/n^2)\Big],

the NTK analogue of the kernel's :math:`G^{\{1\}}` (:mod:`pdlt.theory.four_point`).  The trained-network
predictions of Ch. ∞ (formula sheet §9) use H = Θ + O(1/n); :math:`H^{\{1\}}` is that O(1/n).

Derivation
----------
Condition the NTK forward equation (formula sheet §5) on layer ℓ and contract the W's
(n = n_ℓ, all neurons j of layer ℓ equivalent):

.. math:: E[\hat H^{(\ell+1)}_{ii;ab}] = \lambda_b + \lambda_W E[\sigma_{j;a}\sigma_{j;b}]
          + C_W E[\sigma'_{j;a}\sigma'_{j;b}\hat H^{(\ell)}_{jj;ab}]\qquad\text{(exact)}.

Expand both expectations to O(1/n_{ℓ−1}):

* the single-neuron marginal of z_j (formula sheet §2):
  :math:`E[f(z_j)] = \langle f\rangle_K + \frac1{n_{\ell-1}}\big[\tfrac12\sum G^{\{1\}}_{\beta_1\beta_2}
  \langle\partial_{\beta_1}\partial_{\beta_2}f\rangle + \tfrac18\sum V_{(\beta_1\beta_2)(\beta_3\beta_4)}
  \langle\partial_{\beta_1}\cdots\partial_{\beta_4}f\rangle\big]`;
* the same-neuron NTK–preactivation correlation: given layer ℓ−1, z_j is Gaussian (linear in the
  row W_j) and Ĥ_jj's W-dependent part is a quadratic form in the same row, so E[Ĥ_jj | z_j] is at
  leading order a quadratic polynomial in z_j; by Gaussian integration by parts
  :math:`\mathrm{Cov}(f(z_j),\hat H_{jj;ab}) = \frac{1}{2n_{\ell-1}}\sum_{cd} Y^{ab}_{cd}
  \langle\partial_c\partial_d f\rangle_K`, and matching f = z_c z_d against the definitions of D, F
  (:class:`~pdlt.theory.state.LayerState`, all four neuron indices equal) gives
  :math:`Y^{ab}_{cd} = D_{abcd} + F_{acbd} + F_{adbc}`.

With r = n_ℓ/n_{ℓ−1}, :math:`\Omega_{ab} = \lambda_W\sigma_a\sigma_b + C_W\Theta_{ab}\sigma'_a\sigma'_b`
(formula sheet §5) and all ⟨·⟩ at K = K^{(ℓ)}:

.. math::
    H^{\{1\}(\ell+1)}_{ab} = r\Big[C_W\langle\sigma'_a\sigma'_b\rangle H^{\{1\}(\ell)}_{ab}
      + \tfrac12\sum G^{\{1\}}_{\beta_1\beta_2}\langle\partial_{\beta_1}\partial_{\beta_2}\Omega_{ab}\rangle
      + \tfrac18\sum V_{(\beta_1\beta_2)(\beta_3\beta_4)}\langle\partial_{\beta_1}\cdots\partial_{\beta_4}\Omega_{ab}\rangle
      + \tfrac{C_W}2\sum_{cd}\big(D_{abcd} + F_{acbd} + F_{adbc}\big)
        \langle\partial_c\partial_d(\sigma'_a\sigma'_b)\rangle\Big],

all β, c, d running over {a, b}, with :math:`H^{\{1\}(1)} = H^{\{1\}(2)} = 0` (layer 1 is deterministic,
layer 2's inputs z^{(1)} are exactly Gaussian).  The λ_W part of the G1/V terms is
:math:`(\lambda_W/C_W)\,G^{\{1\}(\ell+1)}`.  Single input (χ_⊥ = C_W⟨σ'²⟩, h = C_W⟨∂²σ'²⟩/4,
ω = λ_Wχ_∥/C_W + 2hΘ, formula sheet §3, §5):

.. math:: H^{\{1\}(\ell+1)} = r\Big[\chi_\perp H^{\{1\}} + \omega G^{\{1\}}
          + \tfrac18\big(\lambda_W\langle\partial^4\sigma^2\rangle + C_W\Theta\langle\partial^4\sigma'^2\rangle\big)V
          + 2h\,(D + 2F)\Big].

Exact checks: for a deep linear network and for the scale-invariant class with one input
(ReLU, any C_b, C_W) every bracket term but the first vanishes, so :math:`H^{\{1\}} \equiv 0`; both
are exact at any width (E[Ĥ'] = λ_b + λ_W A_2E[z²] + C_W A_2E[Ĥ] by the sign flip z_j → −z_j).

Numerics
--------
Derivative moments are taken in Hermite form, :math:`\langle\partial_{\beta_1}\cdots\partial_{\beta_m}f\rangle
= \langle f\,\mathcal H_{\beta_1\ldots\beta_m}(z)\rangle` with the multivariate Hermite polynomials of K
(y = K^{-1}z; :math:`\mathcal H_{cd} = y_cy_d - K^{cd}`, and the quartic one), so no σ″…σ⁽⁵⁾ are needed
and kinked σ are exact: the diagonal by the 1-D split rule, pairs a ≠ b by the 2-D polar rule of
:mod:`pdlt.gaussian`.  The 2×2 block of K for a pair must be invertible (distinct, non-collinear
inputs, or C_b > 0); repeated inputs are handled by computing on the distinct rows.
"""

from __future__ import annotations

import numpy as np

from .. import gaussian
from ..mlp import MLP
from ._gauss import Expectations
from .ntk import check_ntk_activation

__all__ = ["ntk_mean_correction", "ntk_mean", "h1_step", "h1_step_single"]


def _act_fns(act):
    s = lambda z: np.asarray(act.sigma(z), dtype=np.float64)             # noqa: E731
    sp = lambda z: np.asarray(act.derivative(z, 1), dtype=np.float64)    # noqa: E731
    return s, sp


def _hermite_moments_1d(f, K):
    r"""(⟨f⟩, ⟨∂²f⟩, ⟨∂⁴f⟩) at variance K (vectorized over K) in Hermite form."""
    K = np.asarray(K, dtype=np.float64)
    m0 = gaussian.expect1(f, K)
    m2 = gaussian.expect1(lambda z: f(z) * z ** 2, K)
    m4 = gaussian.expect1(lambda z: f(z) * z ** 4, K)
    return m0, (m2 - K * m0) / K ** 2, (m4 - 6 * K * m2 + 3 * K * K * m0) / K ** 4


def h1_step_single(K: float, V: float, G1: float, Theta: float, H1: float, D: float, F: float,
                   C_W: float, lambda_W: float, r: float, E: Expectations) -> float:
    r"""Single input: :math:`H^{\{1\}(\ell+1)}` from layer ℓ's scalars; r = n_ℓ/n_{ℓ−1}.

    H1' = r[χ_⊥ H1 + ω G1 + (λ_W⟨∂⁴σ²⟩ + C_WΘ⟨∂⁴σ'²⟩)V/8 + 2h(D + 2F)], with
    χ_⊥ = C_W⟨σ'²⟩, h = C_W⟨∂²σ'²⟩/4, ω = λ_W⟨∂²σ²⟩/2 + 2hΘ; C_W, λ_W those of layer ℓ+1.
    """
    check_ntk_activation(E.act)
    s, sp = _act_fns(E.act)
    _, s2, s4 = (float(x) for x in _hermite_moments_1d(lambda z: s(z) ** 2, K))
    p0, p2, p4 = (float(x) for x in _hermite_moments_1d(lambda z: sp(z) ** 2, K))
    chi_perp, h = C_W * p0, 0.25 * C_W * p2
    omega = 0.5 * lambda_W * s2 + 2 * h * Theta
    return float(r * (chi_perp * H1 + omega * G1 + 0.125 * (lambda_W * s4 + C_W * Theta * p4) * V
                      + 2 * h * (D + 2 * F)))


def _pair_terms(K, V, G1, D, F, Theta, C_W, lambda_W, E):
    r"""For every pair a < b: (⟨σ'_aσ'_b⟩, ⟨Ω_ab(½G1·𝓗₂ + ⅛V·𝓗₄)⟩ + (C_W/2)⟨σ'_aσ'_b Y·𝓗₂⟩)."""
    N = K.shape[0]
    a, b = np.triu_indices(N, 1)
    if not a.size:
        return a, b, np.zeros(0), np.zeros(0)
    s, sp = _act_fns(E.act)
    za, zb, w = gaussian.polar_nodes(K[a, a], K[a, b], K[b, b], E.order2(float(np.max(np.diag(K)))))
    idx = np.stack([a, b], axis=1)                                   # (P, 2)
    Kp = K[idx[:, :, None], idx[:, None, :]]                         # (P, 2, 2)
    det = Kp[:, 0, 0] * Kp[:, 1, 1] - Kp[:, 0, 1] ** 2
    if np.any(det <= 1e-12 * Kp[:, 0, 0] * Kp[:, 1, 1]):
        raise ValueError("two inputs have a (near-)singular 2×2 kernel block (collinear inputs with "
                         "C_b = 0): the Hermite-form moments of H^{1} need distinct directions")
    Ki = np.linalg.inv(Kp)
    z = np.stack([za, zb], axis=-1)                                  # (P, M, 2)
    y = np.einsum("pcd,pmd->pmc", Ki, z)
    G1p = G1[idx[:, :, None], idx[:, None, :]]
    Vp = V[idx[:, :, None, None, None], idx[:, None, :, None, None], idx[:, None, None, :, None],
           idx[:, None, None, None, :]]                              # (P, 2, 2, 2, 2)
    Dp = D[a[:, None, None], b[:, None, None], idx[:, :, None], idx[:, None, :]]
    # Y_cd = D_abcd + F_acbd + F_adbc over c, d ∈ {a, b}
    Fp = F[a[:, None, None], idx[:, :, None], b[:, None, None], idx[:, None, :]]
    Yp = Dp + Fp + Fp.transpose(0, 2, 1)
    yy = y[:, :, :, None] * y[:, :, None, :]                         # (P, M, 2, 2)
    H2 = yy - Ki[:, None]
    h2_G = np.einsum("pcd,pmcd->pm", G1p, H2)
    h2_Y = np.einsum("pcd,pmcd->pm", Yp, H2)
    t1 = np.einsum("pcdef,pmcd,pmef->pm", Vp, yy, yy)
    t2 = (np.einsum("pcdef,pcd,pmef->pm", Vp, Ki, yy) + np.einsum("pcdef,pce,pmdf->pm", Vp, Ki, yy)
          + np.einsum("pcdef,pcf,pmde->pm", Vp, Ki, yy) + np.einsum("pcdef,pde,pmcf->pm", Vp, Ki, yy)
          + np.einsum("pcdef,pdf,pmce->pm", Vp, Ki, yy) + np.einsum("pcdef,pef,pmcd->pm", Vp, Ki, yy))
    t3 = (np.einsum("pcdef,pcd,pef->p", Vp, Ki, Ki) + np.einsum("pcdef,pce,pdf->p", Vp, Ki, Ki)
          + np.einsum("pcdef,pcf,pde->p", Vp, Ki, Ki))
    h4_V = t1 - t2 + t3[:, None]
    ss = s(za) * s(zb)
    pp = sp(za) * sp(zb)
    Om = lambda_W * ss + C_W * Theta[a, b][:, None] * pp
    P_ab = np.sum(pp * w, axis=-1)
    corr = np.sum(w * (Om * (0.5 * h2_G + 0.125 * h4_V) + 0.5 * C_W * pp * h2_Y), axis=-1)
    return a, b, P_ab, corr


def h1_step(K: np.ndarray, V: np.ndarray, G1: np.ndarray, Theta: np.ndarray, H1: np.ndarray,
            D: np.ndarray, F: np.ndarray, C_W: float, lambda_W: float, r: float,
            E: Expectations) -> np.ndarray:
    r""":math:`H^{\{1\}(\ell+1)}` (N, N) from layer ℓ's K, Θ, G1, H1 (N, N) and V, D, F (N, N, N, N)
    (layouts of :class:`~pdlt.theory.state.LayerState`); r = n_ℓ/n_{ℓ−1}; C_W, λ_W of layer ℓ+1.
    The recursion is in the module docstring."""
    check_ntk_activation(E.act)
    N = K.shape[0]
    out = np.empty((N, N))
    for i in range(N):
        out[i, i] = h1_step_single(K[i, i], V[i, i, i, i], G1[i, i], Theta[i, i], H1[i, i], D[i, i, i, i],
                                   F[i, i, i, i], C_W, lambda_W, r, E)
    a, b, P_ab, corr = _pair_terms(K, V, G1, D, F, Theta, C_W, lambda_W, E)
    out[a, b] = out[b, a] = r * (C_W * P_ab * H1[a, b] + corr)
    return out


def ntk_mean_correction(net: MLP, X, th=None) -> list[np.ndarray]:
    r"""[H^{\{1\}(1)}, …, H^{\{1\}(L)}], each (N, N), for inputs X of shape (N, n_0).

    ``th``: a ``pdlt.theory(net, X, ntk=True)`` result to reuse (computed if None).
    The measured E[Ĥ_ii] of layer ℓ is Θ^{(ℓ)} + H^{\{1\}(ℓ)}/n_{ℓ−1} + O(1/n²) (see :func:`ntk_mean`).
    """
    from .network import theory as _theory
    X = np.asarray(X, dtype=np.float64)
    if th is None:
        th = _theory(net, X, ntk=True)
    # distinct inputs only (repeats make singular 2×2 blocks); expand at the end
    _, first, inverse = np.unique(X, axis=0, return_index=True, return_inverse=True)
    keep = np.sort(first)
    pos = {int(f): k for k, f in enumerate(keep)}
    expand = np.array([pos[int(first[i])] for i in inverse.reshape(-1)])
    sel = np.ix_(keep, keep)
    sel4 = np.ix_(keep, keep, keep, keep)
    E = Expectations(net.activation)
    Nu = keep.size
    H1 = np.zeros((Nu, Nu))
    out = [H1]
    for ell in range(1, net.depth):
        s = th.layer(ell)
        C_W, lam_W = net.C_W[ell], net.lambda_W[ell]
        r = net.n(ell) / net.n(ell - 1)
        H1 = h1_step(s.K[sel], s.V[sel4], s.G1[sel], s.Theta[sel], H1, s.D[sel4], s.F[sel4],
                     C_W, lam_W, r, E)
        out.append(H1)
    return [h[np.ix_(expand, expand)] for h in out]


def ntk_mean(net: MLP, X, th=None) -> list[np.ndarray]:
    r"""The NTK mean to O(1/n): [Θ^{(ℓ)} + H^{\{1\}(ℓ)}/n_{ℓ−1}] for ℓ = 1..L, each (N, N)."""
    from .network import theory as _theory
    if th is None:
        th = _theory(net, X, ntk=True)
    H1 = ntk_mean_correction(net, X, th)
    return [th.layer(l).Theta + H1[l - 1] / net.n(l - 1) for l in range(1, net.depth + 1)]
