r"""The four-point vertex V and the 1/n correction G^{\{1\}} to the kernel (book §4.1–4.3).

Both recursions use the derivative form of the Gaussian integration by parts
(:math:`\langle f\,(z_{\beta_1}z_{\beta_2}-K_{\beta_1\beta_2})\rangle` raised with K⁻¹ equals
:math:`\sum K K\langle\partial\partial f\rangle`), so K never has to be inverted and only the β's equal
to the α's of :math:`\sigma_{\alpha_1}\sigma_{\alpha_2}` contribute:

.. math::
    V^{(\ell+1)}_{(\alpha_1\alpha_2)(\alpha_3\alpha_4)} =
      C_W^2\big[\langle\sigma_{\alpha_1}\sigma_{\alpha_2}\sigma_{\alpha_3}\sigma_{\alpha_4}\rangle_K
               - \langle\sigma_{\alpha_1}\sigma_{\alpha_2}\rangle_K\langle\sigma_{\alpha_3}\sigma_{\alpha_4}\rangle_K\big]
      + \frac{C_W^2}{4}\frac{n_\ell}{n_{\ell-1}}\sum_{\beta}
        V^{(\ell)}_{(\beta_1\beta_2)(\beta_3\beta_4)}
        \langle\partial_{\beta_1}\partial_{\beta_2}(\sigma_{\alpha_1}\sigma_{\alpha_2})\rangle_K
        \langle\partial_{\beta_3}\partial_{\beta_4}(\sigma_{\alpha_3}\sigma_{\alpha_4})\rangle_K

.. math::
    G^{\{1\}(\ell+1)}_{\alpha_1\alpha_2} = \frac{n_\ell}{n_{\ell-1}} C_W\Big[
      \tfrac12\sum_{\beta} G^{\{1\}(\ell)}_{\beta_1\beta_2}\langle\partial_{\beta_1}\partial_{\beta_2}(\sigma_{\alpha_1}\sigma_{\alpha_2})\rangle_K
      + \tfrac18\sum_{\beta} V^{(\ell)}_{(\beta_1\beta_2)(\beta_3\beta_4)}
        \langle\partial_{\beta_1}\cdots\partial_{\beta_4}(\sigma_{\alpha_1}\sigma_{\alpha_2})\rangle_K\Big]

The second uses the single-neuron Edgeworth expansion
:math:`E[f(z)] = \langle f\rangle_G + \frac{1}{8n}\sum V\langle\partial^4 f\rangle + O(1/n^2)` (book §4.3,
formula sheet §2). Initial values V^{(1)} = G^{\{1\}(1)} = 0 (the first layer is exactly Gaussian).
"""

from __future__ import annotations

from itertools import product

import numpy as np

from ._gauss import Expectations

__all__ = ["vertex_step", "g1_step", "vertex_step_single", "g1_step_single", "derivative_coefficients"]


def derivative_coefficients(K: np.ndarray, E: Expectations):
    r"""Coefficients of :math:`\langle\partial_{\beta_1}\cdots\partial_{\beta_m}(\sigma_{a}\sigma_{b})\rangle_K`.

    Returns (d2, d4): ``d2[(s, t)]`` and ``d4[(s, t, u, v)]`` are (N, N) arrays over (a, b), where each
    of s, t, … ∈ {0, 1} says whether that β is a (0) or b (1).  For a ≠ b the value is the pair
    moment ⟨σ^{(#a)}_a σ^{(#b)}_b⟩; for a = b (a single variable) the whole sum over β-tuples is put
    on the all-a tuple: ⟨∂²σ²⟩ = 2g′ and ⟨∂⁴σ²⟩ = 4g″.
    """
    N = K.shape[0]
    pm = E.pair_table(K)
    _, dd2, dd4 = E.g_derivs(np.diag(K))
    eye = np.eye(N, dtype=bool)
    d2, d4 = {}, {}
    for bits in product((0, 1), repeat=2):
        nb = sum(bits)
        d2[bits] = np.where(eye, dd2[:, None] * (nb == 0), pm[(2 - nb, nb)])
    for bits in product((0, 1), repeat=4):
        nb = sum(bits)
        d4[bits] = np.where(eye, dd4[:, None] * (nb == 0), pm[(4 - nb, nb)])
    return d2, d4


def _pick(a, b, bits):
    """The β index tuple for a pair (a, b) and a bit pattern (0 → a, 1 → b)."""
    return tuple(b if s else a for s in bits)


def vertex_step(K: np.ndarray, V: np.ndarray, C_W: float, r: float, E: Expectations,
                d2=None) -> np.ndarray:
    r"""V^{(ℓ+1)} from (K^{(ℓ)}, V^{(ℓ)}); r = n_ℓ/n_{ℓ−1}. Shapes (N,N), (N,N,N,N) → (N,N,N,N)."""
    N = K.shape[0]
    S = E.sigma_sigma(K)
    genesis = E.sigma4_tensor(K) - S[:, :, None, None] * S[None, None, :, :]
    if d2 is None:
        d2 = derivative_coefficients(K, E)[0]
    a, b, c, d = np.indices((N,) * 4, sparse=True)
    prop = np.zeros((N,) * 4)
    if np.any(V):
        for bl in product((0, 1), repeat=2):
            for br in product((0, 1), repeat=2):
                beta = _pick(a, b, bl) + _pick(c, d, br)
                prop += V[beta] * d2[bl][a, b] * d2[br][c, d]
    return C_W ** 2 * genesis + 0.25 * C_W ** 2 * r * prop


def g1_step(K: np.ndarray, V: np.ndarray, G1: np.ndarray, C_W: float, r: float, E: Expectations,
            coeffs=None) -> np.ndarray:
    r"""G^{\{1\}(ℓ+1)} from (K, V, G^{\{1\}}) at layer ℓ; r = n_ℓ/n_{ℓ−1}. Shapes (N,N) … → (N,N)."""
    N = K.shape[0]
    d2, d4 = coeffs if coeffs is not None else derivative_coefficients(K, E)
    a, b = np.indices((N, N), sparse=True)
    two = np.zeros((N, N))
    four = np.zeros((N, N))
    for bits, coef in d2.items():
        two += G1[_pick(a, b, bits)] * coef
    for bits, coef in d4.items():
        four += V[_pick(a, b, bits)] * coef
    return r * C_W * (0.5 * two + 0.125 * four)


def vertex_step_single(K: float, V: float, C_W: float, r: float, E: Expectations) -> float:
    r"""Single input: V' = C_W²[⟨σ⁴⟩ − ⟨σ²⟩²] + r χ_∥² V, χ_∥ = C_W g′(K) (formula sheet §2)."""
    g, dd2, _ = E.g_derivs(K)
    chi_par = C_W * 0.5 * dd2
    return float(C_W ** 2 * (E.sigma4(K) - g * g) + r * chi_par ** 2 * V)


def g1_step_single(K: float, V: float, G1: float, C_W: float, r: float, E: Expectations) -> float:
    r"""Single input: G1' = r [χ_∥ G1 + (C_W/8) ⟨∂⁴σ²⟩_K V] with ⟨∂⁴σ²⟩ = ⟨σ²(z⁴−6Kz²+3K²)⟩/K⁴."""
    _, dd2, dd4 = E.g_derivs(K)
    return float(r * (C_W * 0.5 * dd2 * G1 + C_W / 8.0 * dd4 * V))
