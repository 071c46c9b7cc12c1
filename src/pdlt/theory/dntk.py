r"""The dNTK statistics P, Q (book Ch. 11) and the ddNTK statistics R, S, T, U (book Ch. ∞, §∞.1/∞.3)
at initialization, for N inputs, with their leading-order forward recursions through depth.

Definitions (formula sheet §6; index layouts on :class:`~pdlt.theory.state.LayerState`)
-----------------------------------------------------------------------------------------
With λ the learning-rate tensor (λ_b for biases, λ_W/n_{ℓ−1} for weights) and n ≡ n_{ℓ−1},

.. math::
    n\,E[\widehat{dH}_{i_0i_1i_2;\delta_0\delta_1\delta_2}z_{i_3;\delta_3}]
      = \delta_{i_0i_3}\delta_{i_1i_2}P_{\delta_0\delta_1\delta_2\delta_3}
      + \delta_{i_0i_1}\delta_{i_2i_3}Q_{\delta_0\delta_1\delta_2\delta_3}
      + \delta_{i_0i_2}\delta_{i_1i_3}Q_{\delta_0\delta_2\delta_1\delta_3},

.. math::
    n\,E[dd_I\hat H_{i_0i_1i_2i_3}] = \delta_{i_0i_1}\delta_{i_2i_3}R_{\delta_0\delta_1\delta_2\delta_3} + \ldots,\qquad
    n\,E[dd_{II}\hat H_{i_1i_2i_3i_4}] = \delta_{i_1i_2}\delta_{i_3i_4}S_{\delta_1\delta_2\delta_3\delta_4}
      + \delta_{i_1i_3}\delta_{i_4i_2}T_{\delta_1\delta_3\delta_4\delta_2}
      + \delta_{i_1i_4}\delta_{i_2i_3}U_{\delta_1\delta_4\delta_2\delta_3}.

Derivation (layer ℓ → ℓ+1; n = n_ℓ, r = n_ℓ/n_{ℓ−1}, W = W^{(ℓ+1)}, C ≡ C_W^{(ℓ+1)}, λ ≡ λ_W^{(ℓ+1)})
--------------------------------------------------------------------------------------------------
1. *Forward equations.*  z'_i = b_i + Σ_j W_{ij}σ(z_j) is linear in W and b, and λ is block
   diagonal, so a derivative of z' is either along lower-layer parameters,
   dz'_i = Σ_j W_{ij}σ'_j dz_j (and d²z'_i = Σ_j W_{ij}[σ''_j dz_j dz_j + σ'_j d²z_j], …), or along one
   weight W_{pq} (dz'_i/dW_{pq} = δ_{ip}σ_q, d²z'_i/dW_{pq}dθ = δ_{ip}σ'_q dz_q/dθ, …); two
   derivatives along layer-(ℓ+1) parameters vanish.  Contracting with λ (a pair of W-derivatives
   carries λ/n):

   .. math::
       \widehat{dH}'_{i_0i_1i_2} = \sum W_{i_0j}W_{i_1k}W_{i_2m}\big[\sigma''_{j;0}\sigma'_{k;1}\sigma'_{m;2}
         \hat H_{jk;01}\hat H_{jm;02} + \sigma'_{j;0}\sigma'_{k;1}\sigma'_{m;2}\widehat{dH}_{jkm;012}\big]
         + \frac{\lambda}{n}\Big[\delta_{i_0i_1}\sum_{k,m}\sigma'_{k;0}\sigma_{k;1}W_{i_2m}\sigma'_{m;2}\hat H_{km;02}
         + (1\leftrightarrow2)\Big],

   and likewise dd_IĤ' (terms σ'''ĤĤĤ, σ''(dĤ Ĥ)×3, σ'dd_IĤ, and (λ/n)δ_{i0i_s}σ_{·;s}[σ''ĤĤ + σ'dĤ]
   for s = 1, 2, 3) and dd_IIĤ' (pair groups of (μ1ν1, μ2ν2, μ3ν3) all lower-layer: σ''σ''ĤĤĤ,
   σ''σ'ĤdĤ, σ'σ''dĤĤ, σ'σ'dd_IIĤ; the group of one pair along W: (λ/n)δ_{i_1i_2}σ'σ'ĤĤ,
   (λ/n)δ_{i_1i_3}σ'σ[σ''ĤĤ + σ'dĤ], (λ/n)δ_{i_2i_4}σ'σ[σ''ĤĤ + σ'dĤ]; two pairs:
   (λ/n)²δ_{i_1i_3}δ_{i_2i_4}σ'σσ'σĤ).
2. *Condition on layer ℓ and Wick-contract the W's* (E[W_{ij}W_{kl}] = δδ C/n): every pairing of the
   neuron indices i gives (C/n)² Σ over two layer-ℓ neurons (j, m) of a layer-ℓ expectation.
3. *Leading order in 1/n.*  The sum has a *genesis* part j = m (n terms, evaluated with Gaussian
   z ~ N(0, K) and Ĥ_{jj} → Θ) and a *propagation* part j ≠ m (n² terms), which needs exactly one
   O(1/n_{ℓ−1}) link between the two neurons, i.e. one of the layer-ℓ statistics: an off-diagonal
   NTK pair Ĥ_{jm}Ĥ_{jm} (B), Ĥ_{jm} against functions of z_j, z_m (F), dĤ_{jmm}, dĤ_{jjm} against a
   function of the other neuron (P, Q), or dd_{I,II}Ĥ (R, S, T, U).  Products of two link objects
   (e.g. dĤ_{jjm}Ĥ_{jm}, or three off-diagonal Ĥ's) are O(1/n²) and dropped.  A link against smooth
   functions of z is turned into the defined statistics by Gaussian integration by parts, in the
   derivative form of :mod:`pdlt.theory.ntk` (K is never inverted):
   :math:`n_{\ell-1}E[\Delta\hat H_{jm;ab}f(z_j)g(z_m)] = \sum F_{a\beta b\beta'}\langle\partial_\beta f\rangle\langle\partial_{\beta'}g\rangle`,
   :math:`n_{\ell-1}E[\widehat{dH}_{jjm;abc}f(z_j)g(z_m)] = \langle f\rangle\sum_\beta Q_{abc\beta}\langle\partial_\beta g\rangle`,
   :math:`n_{\ell-1}E[\widehat{dH}_{jmm;abc}f(z_j)g(z_m)] = \sum_\beta P_{abc\beta}\langle\partial_\beta f\rangle\langle g\rangle`.

Result.  With :math:`\Omega_{ab} = \lambda\sigma_a\sigma_b + C\Theta_{ab}\sigma'_a\sigma'_b` (the NTK
genesis of :mod:`pdlt.theory.ntk`) and its *explicit* derivatives (from the forward equation)

.. math::
    \Psi_{ab} \equiv \partial_a\Omega_{ab} = \lambda\sigma'_a\sigma_b + C\Theta_{ab}\sigma''_a\sigma'_b,\quad
    \partial_a^2\Omega_{ab} = \lambda\sigma''_a\sigma_b + C\Theta_{ab}\sigma'''_a\sigma'_b,\quad
    \Phi_{ab} \equiv \partial_a\partial_b\Omega_{ab} = \lambda\sigma'_a\sigma'_b + C\Theta_{ab}\sigma''_a\sigma''_b,

all ⟨·⟩ at K = K^{(ℓ)}, Θ = Θ^{(ℓ)}, statistics on the right at layer ℓ, ∂_β the Stein derivatives
(Σ_β over the inputs of the function it acts on):

.. math::
    P'_{abcd} &= C^2\Big[\Theta_{ab}\Theta_{ac}\langle\sigma''_a\sigma'_b\sigma'_c\sigma_d\rangle
      + r\langle\sigma'_b\sigma'_c\rangle\big(B_{aabc}\langle\sigma''_a\sigma_d\rangle
      + \textstyle\sum_\beta P_{abc\beta}\langle\partial_\beta(\sigma'_a\sigma_d)\rangle\big)\Big]\\
    Q'_{abcd} &= C\Theta_{ac}\langle\Psi_{ab}\sigma'_c\sigma_d\rangle
      + rC\textstyle\sum_{\beta\beta'}F_{a\beta c\beta'}\langle\partial_\beta\Psi_{ab}\rangle\langle\partial_{\beta'}(\sigma'_c\sigma_d)\rangle
      + rC^2\langle\sigma'_a\sigma'_b\rangle\textstyle\sum_\beta Q_{abc\beta}\langle\partial_\beta(\sigma'_c\sigma_d)\rangle\\
    R'_{abcd} &= C\Theta_{ac}\Theta_{ad}\langle\partial_a^2\Omega_{ab}\,\sigma'_c\sigma'_d\rangle
      + rC\langle\sigma'_c\sigma'_d\rangle\big(B_{aacd}\langle\partial_a^2\Omega_{ab}\rangle
      + \textstyle\sum_\beta P_{acd\beta}\langle\partial_\beta\Psi_{ab}\rangle\big)
      + rC^2\langle\sigma'_a\sigma'_b\rangle\langle\sigma'_c\sigma'_d\rangle R_{abcd}\\
    S'_{abcd} &= C\Theta_{ac}\Theta_{bd}\langle\Phi_{ab}\sigma'_c\sigma'_d\rangle
      + rC\langle\sigma'_c\sigma'_d\rangle\langle\Phi_{ab}\rangle B_{abcd}
      + rC^2\langle\sigma'_a\sigma'_b\rangle\langle\sigma'_c\sigma'_d\rangle S_{abcd}\\
    T'_{abcd} &= \Theta_{ad}\langle\Psi_{ab}\Psi_{dc}\rangle
      + r\textstyle\sum_{\beta\beta'}F_{a\beta d\beta'}\langle\partial_\beta\Psi_{ab}\rangle\langle\partial_{\beta'}\Psi_{dc}\rangle
      + rC\big[\langle\sigma'_d\sigma'_c\rangle\textstyle\sum_\beta Q_{dca\beta}\langle\partial_\beta\Psi_{ab}\rangle
      + \langle\sigma'_a\sigma'_b\rangle\textstyle\sum_\beta Q_{abd\beta}\langle\partial_\beta\Psi_{dc}\rangle\big]
      + rC^2\langle\sigma'_a\sigma'_b\rangle\langle\sigma'_d\sigma'_c\rangle T_{abcd}\\
    U'_{abcd} &= C^2\Theta_{ac}\Theta_{ad}\Theta_{cb}\langle\sigma''_a\sigma'_b\sigma''_c\sigma'_d\rangle
      + rC^2\langle\sigma'_a\sigma'_b\rangle\langle\sigma'_c\sigma'_d\rangle U_{abcd}

with P = Q = R = S = T = U = 0 at ℓ = 1.  Expanded, Q contains
(λ/C) F^{(ℓ+1)}_{abcd} (the terms with λ), T contains (λ/C)² F^{(ℓ+1)}_{abdc}, and T has 13
terms (the "13-term recursion" of the sheet).  All use layer-ℓ statistics only.

Comparison with formula sheet §6 (S5): P, R, S and U agree term by term (expand ∂_β over the two
inputs of the function it acts on).  Q agrees once F is put in the defined layout: both F terms of
the sheet's Q carry S5's F with the z inputs first — its (λ/C)F'_{azcb} is F'[z, a, b, c] here and
its F_{fzgb} is F[z, f, b, g] (the defined layout has the NTK input of each neuron first: read
literally, F_{azcb} would swap NTK and z inputs).  T is not in the sheet; it is derived here.

Kinked activations (ReLU & co.): the a.e. convention
----------------------------------------------------
σ'' and σ''' are δ-functions.  Per network, d²z/dθ² and d³z/dθ³ are taken almost everywhere
(σ'' = σ''' = 0, what autodiff and :mod:`pdlt.empirical.dntk` compute), so every σ'' or σ''' that
comes *explicitly from the forward equation* — in Ψ, ∂²Ω, Φ and the genesis moments above — is set
to zero here (:func:`explicit_mixed4`, :func:`explicit_pair`, :func:`explicit_stein_sppsp` return
zeros).  Derivatives that come from Gaussian integration by parts (the Stein ∂_β acting on σ'_aσ_d,
Ψ, …) express exact Gaussian averages of functions that are smooth in expectation and keep their δ
contributions (via the closed-form pair moments, e.g. ⟨∂_a(σ'_aσ_d)⟩ = ⟨σ''_aσ_d⟩ ≠ 0 for a ≠ d).
For a single input those δ-terms vanish anyway (zδ(z) = 0), while ddNTK terms such as ⟨σ''_aσ''_a⟩
would be infinite (δ²): the a.e. convention is the only finite one.

The δ convention (``Expectations(act, kinks="delta")``, :mod:`pdlt.theory._delta`) takes the explicit
σ'' = Jδ and σ''' = Jδ' instead (J = a₊ − a₋): finite in every entry whose first input (the one the
explicit derivative acts on) differs from the others, NaN where a δ meets σ' at one input.  It is not
what autodiff measures on one network (the dNTK twins are a.e.), but the expansion of the ensemble
mean of a training step of real networks, whose neurons cross the kink (:mod:`pdlt.theory.finite_width`).

Consequences for the scale-invariant class (σ = a₊z or a₋z) at criticality (C_W = 1/A₂, C_b = 0,
so χ_⊥ = χ_∥ = 1; equal widths; layer-independent λ): P = R = U = 0 identically (multi-input too),
and for a single input

.. math::
    Q' = Q + \tfrac{\lambda}{C}F',\qquad S' = S + \tfrac{\lambda}{C}B',\qquad T' = T + \tfrac{\lambda}{C}(Q + Q'),

hence, with Θ₁ = λ_b + λ_W A₂K*, (:func:`scale_invariant_critical`)
Q = λ_W (A₄/A₂) K*Θ₁ (ℓ+1)ℓ(ℓ−1)/6, S = λ_W (A₄/A₂) Θ₁² ℓ²(ℓ²−1)/12, T = λ_W² A₄ K*Θ₁ ℓ²(ℓ²−1)/12.
With r₄ = A₄/A₂², f_W = λ_W A₂K*/Θ₁ and Θ = ℓΘ₁, at large ℓ: Q/Θ² ≈ r₄f_W ℓ/6,
SK*/Θ³ ≈ r₄f_W ℓ/12, TK*/Θ³ ≈ r₄f_W² ℓ/12 (ReLU: r₄ = 2).  These are leading-order statements:
at finite width P, R, U are O(1/n) (measured, ReLU at ℓ = 3, λ_b = 0.5, λ_W = 1, K* = 0.69:
n·P ≈ 2.3, n·R ≈ 1.16, n·U ≈ 2.0, constant from n = 12 to 64).

Monte Carlo checks (layer 3; λ_b = 0.5, λ_W = 1; x = (1, .3, −.5, .2) and (−.4, 1.1, .6, −.3))
------------------------------------------------------------------------------------------------
At ℓ = 2 the recursions are exact at any width (Gaussian first layer, deterministic Θ^{(1)}): the
twin test against :func:`pdlt.empirical.dntk.measure_dntk` uses narrow networks.  At ℓ = 3 the
measured values differ from the theory by O(1/n) with large coefficients (the ddNTKs are cubic in
fluctuating NTKs), e.g. tanh (C_W = 1): n·(MC − theory) ≈ 0.8 for T (6.8/n relative), 1.1 for U;
ReLU (C_W = 2): P, R, U vanish at leading order but n·P ≈ 2.3, n·R ≈ 1.2, n·U ≈ 2.0.  So the
theory was checked as the n → ∞ limit: an independent torch.func ensemble (the joint law of two
output neurons does not depend on the output width, so widths [4, n, n, 2]; 20000 networks per
width for one input, 8000 for two), fitted by a + b/n.  One input, a ± σ_a vs theory:

======  =========================  =========================  =========================
field   tanh (n = 32, 64, 128)      ReLU (n = 32, 64)          GELU crit. (n = 32, 64)
======  =========================  =========================  =========================
P       −0.2691 ± 0.0037 / −0.2699  −0.0049 ± 0.0045 / 0        0.661 ± 0.052 / 0.668
Q       −0.1053 ± 0.0028 / −0.1077  2.257 ± 0.050 / 2.332       3.515 ± 0.090 / 3.424
R       −2.874 ± 0.010 / −2.880     −0.0006 ± 0.0004 / 0        −4.241 ± 0.075 / −4.245
S       1.9260 ± 0.0036 / 1.9311    4.303 ± 0.029 / 4.284       5.774 ± 0.050 / 5.763
T       0.1196 ± 0.0013 / 0.1213    1.748 ± 0.016 / 1.749       5.007 ± 0.044 / 5.015
U       0.4179 ± 0.0015 / 0.4208    −0.0009 ± 0.0011 / 0        1.741 ± 0.025 / 1.748
======  =========================  =========================  =========================

Two inputs (all 16 entries of each field, a from n = 32, 64): largest |a − theory|/σ_a is 1.4, 1.5,
2.3, 2.3, 2.7, 1.7 (tanh, P … U) and 1.6, 1.4, 2.4, 1.3, 1.2, 0.5 (ReLU).  The same data reject the
formula sheet's Q read literally in the defined F layout ((λ/C)F'_{azcb} → F'[a, z, c, b]):
|z| = 24 (tanh), 29 (ReLU).  Also checked, one input, a from two widths: layer 4 of tanh
([4, n, n, n, 2], n = 32, 64: |z| ≤ 2.1, R the largest) and unequal widths r = 2 off criticality
(tanh, C_b = 0.1, C_W = 1.2, [4, n, 2n, 2], n = 32, 64: |z| ≤ 1.5).

Memory (float64, N inputs): each (N,N,N,N) tensor is 8N⁴ bytes.  A state with all fields carries
11 of them (V, A, B, D, F, P, Q, R, S, T, U), and every layer's state is kept: 11·L tensors.  One
step holds at most ~30 more at once: the new state (11), the memoized mixed moments of the layer
(⟨σσσσ⟩ and six canonical ⟨σ^{(o)}…⟩ of :func:`~pdlt.theory.ntk.mixed4`), the products being
summed (~8), and mixed4's per-entry bookkeeping (~5 tensor-equivalents, Python).  At depth 10 that
is ≈ 140 · 8N⁴ bytes, so 24 GiB holds N ≤ 68 (N = 64: 18 GiB).  Measured with tracemalloc
(N = 6, depth 10, tanh): 127 tensors retained after the run, as counted.  In practice time, not
memory, bounds N: the 3-/4-distinct-input quadratures grow as N⁴ (N = 6, depth 10, tanh: 10 s with
the ddNTKs against 3.8 s for the NTK alone, two shared cores).
"""

from __future__ import annotations

import numpy as np

from .. import gaussian
from ._delta import check_delta_activation, delta_moments, delta_tensor
from ._gauss import Expectations
from .ntk import _d1_spsig, _fn, _sp2_single, check_ntk_activation, mixed4, sp_sp

__all__ = ["LayerMoments", "dntk_step", "ddntk_step", "dntk_step_single", "ddntk_step_single", "dntk_first_layer_fields",
           "ddntk_first_layer_fields", "keeps_explicit_sigma2", "explicit_mixed4", "explicit_pair",
           "explicit_stein_sppsp", "stein_spsig", "scale_invariant_critical"]


def dntk_first_layer_fields(N: int) -> dict:
    """P = Q = 0 at ℓ = 1 (z^{(1)} is linear in θ, so d²z^{(1)}/dθ² = 0)."""
    z = np.zeros((N,) * 4)
    return {"P": z, "Q": z}


def ddntk_first_layer_fields(N: int) -> dict:
    """R = S = T = U = 0 at ℓ = 1."""
    z = np.zeros((N,) * 4)
    return {"R": z, "S": z, "T": z, "U": z}


# -- explicit (forward-equation) σ'' terms versus Stein derivatives --------------------------------
def keeps_explicit_sigma2(act) -> bool:
    """True when σ'', σ''' from the forward equation are kept (smooth σ); False for kinked σ, whose
    explicit σ'', σ''' are zero almost everywhere (the a.e. convention, see the module docstring)."""
    return bool(act.smooth)


def explicit_mixed4(K: np.ndarray, orders, E: Expectations) -> np.ndarray:
    """:func:`~pdlt.theory.ntk.mixed4` for moments whose σ''/σ''' factors come from the forward
    equation.  For a kinked σ when any order is ≥ 2: zero (a.e. convention) or, with
    ``E.kinks == "delta"``, the δ-function moment (NaN where inputs coincide; :mod:`pdlt.theory._delta`)."""
    if max(orders) > 1 and not keeps_explicit_sigma2(E.act):
        if _delta_kinks(E):
            orders = tuple(orders)
            return E._memo(f"delta4_{orders}", K, lambda: delta_tensor(E.act, K, orders))
        return np.zeros((K.shape[0],) * 4)
    return mixed4(K, orders, E)


def _delta_kinks(E: Expectations) -> bool:
    """True when a kinked σ's explicit σ'', σ''' are δ-functions (``E.kinks == "delta"``)."""
    if E.act.smooth or E.kinks != "delta":
        return False
    check_delta_activation(E.act)
    return True


def _one_d(E: Expectations, K, counts) -> np.ndarray:
    """⟨σ^{c0} σ'^{c1} σ''^{c2} σ'''^{c3}⟩ at variance K (1-D split rule, vectorized)."""
    return gaussian.expect1(_fn(E.act, *counts), np.asarray(K, dtype=np.float64))


def _explicit_one_d(E: Expectations, K, counts) -> np.ndarray:
    if (counts[2] or counts[3]) and not keeps_explicit_sigma2(E.act):
        K = np.asarray(K, dtype=np.float64)
        if _delta_kinks(E):
            req = tuple((0, o) for o in range(4) for _ in range(counts[o]))
            return np.array([delta_moments(E.act, np.full((1, 1), k), [req])[0]
                             for k in K.reshape(-1)]).reshape(K.shape)
        return np.zeros_like(K)
    return _one_d(E, K, counts)


def explicit_pair(K: np.ndarray, j: int, k: int, E: Expectations) -> np.ndarray:
    r"""⟨σ^{(j)}_a σ^{(k)}_b⟩_K as an (N, N) matrix, diagonal included (1-D), for explicit σ'', σ'''
    (zero for a kinked σ when j or k ≥ 2).  Off-diagonal from the pair table (j + k even, ≤ 4)."""
    N = K.shape[0]
    if max(j, k) > 1 and not keeps_explicit_sigma2(E.act):
        return delta_tensor(E.act, K, (j, k)) if _delta_kinks(E) else np.zeros((N, N))
    out = E.pair_table(K)[(j, k)].copy()
    counts = [0, 0, 0, 0]
    counts[j] += 1
    counts[k] += 1
    out[np.diag_indices(N)] = _one_d(E, np.diag(K), counts)
    return out


def stein_spsig(K: np.ndarray, E: Expectations) -> dict:
    r"""Stein coefficients ⟨∂_β(σ'_a σ_b)⟩ for β = a (key 0) and β = b (key 1), (N, N) each; on the
    diagonal the total derivative ⟨σ'² + σσ''⟩ sits on key 0.  δ contributions kept (kinked σ)."""
    return _d1_spsig(K, E)


def explicit_stein_sppsp(K: np.ndarray, E: Expectations) -> dict:
    r"""Stein coefficients ⟨∂_β(σ''_a σ'_b)⟩ (β = a: ⟨σ'''_aσ'_b⟩, key 0; β = b: ⟨σ''_aσ''_b⟩, key 1;
    diagonal: ⟨σ'''σ' + σ''²⟩ on key 0).  The σ'' is explicit: for a kinked σ all zero (a.e.) or the
    δ-function moments (``E.kinks == "delta"``; the diagonal of key 0 is then NaN, ill-defined)."""
    N = K.shape[0]
    if _delta_kinks(E):
        eye = np.eye(N, dtype=bool)
        return {0: delta_tensor(E.act, K, (3, 1)), 1: np.where(eye, 0.0, delta_tensor(E.act, K, (2, 2)))}
    if not keeps_explicit_sigma2(E.act):
        z = np.zeros((N, N))
        return {0: z, 1: z}
    pm = E.pair_table(K)
    eye = np.eye(N, dtype=bool)
    dK = np.diag(K)
    diag = _one_d(E, dK, (0, 1, 0, 1)) + _one_d(E, dK, (0, 0, 2, 0))
    return {0: np.where(eye, diag[:, None], pm[(3, 1)]), 1: np.where(eye, 0.0, pm[(2, 2)])}


def _pick(x, y, s):
    return y if s else x


# -- one layer, N inputs ----------------------------------------------------------------------------
class LayerMoments:
    """Layer-ℓ moments shared by :func:`dntk_step` and :func:`ddntk_step` (computed once per layer):
    ⟨σ'_aσ'_b⟩, the Stein coefficients ⟨∂_β(σ'_aσ_b)⟩ and ⟨∂_βΨ_ab⟩, ⟨σ''_aσ'_bσ'_cσ_d⟩, ⟨σ''_aσ_b⟩."""

    def __init__(self, K, Theta, C_W, lambda_W, E):
        check_ntk_activation(E.act)
        N = K.shape[0]
        self.N = N
        self.idx = np.indices((N,) * 4, sparse=True)
        self.Sp = sp_sp(K, E)                                    # ⟨σ'_aσ'_b⟩
        self.d1 = stein_spsig(K, E)                              # ⟨∂_β(σ'_aσ_b)⟩
        dpp = explicit_stein_sppsp(K, E)                         # ⟨∂_β(σ''_aσ'_b)⟩
        self.dPsi = {s: lambda_W * self.d1[s] + C_W * Theta * dpp[s] for s in (0, 1)}   # ⟨∂_β Ψ_ab⟩
        self.M2110 = explicit_mixed4(K, (2, 1, 1, 0), E)         # ⟨σ''_aσ'_bσ'_cσ_d⟩
        self.e20 = explicit_pair(K, 2, 0, E)                     # ⟨σ''_aσ_b⟩


def dntk_step(K, Theta, B, F, P, Q, C_W: float, lambda_W: float, r: float, E: Expectations,
              moments: LayerMoments | None = None) -> dict:
    r"""(P, Q) at layer ℓ+1 from layer ℓ's (K, Θ, B, F, P, Q) (book Ch. 11).

    .. math::
        P'_{abcd} = C_W^2\Big[\Theta_{ab}\Theta_{ac}\langle\sigma''_a\sigma'_b\sigma'_c\sigma_d\rangle
          + r\langle\sigma'_b\sigma'_c\rangle\big(B_{aabc}\langle\sigma''_a\sigma_d\rangle
          + \sum_\beta P_{abc\beta}\langle\partial_\beta(\sigma'_a\sigma_d)\rangle\big)\Big],

    .. math::
        Q'_{abcd} = C_W\Theta_{ac}\langle\Psi_{ab}\sigma'_c\sigma_d\rangle
          + rC_W\sum_{\beta\beta'}F_{a\beta c\beta'}\langle\partial_\beta\Psi_{ab}\rangle\langle\partial_{\beta'}(\sigma'_c\sigma_d)\rangle
          + rC_W^2\langle\sigma'_a\sigma'_b\rangle\sum_\beta Q_{abc\beta}\langle\partial_\beta(\sigma'_c\sigma_d)\rangle,

    Ψ_ab = λ_Wσ'_aσ_b + C_WΘ_abσ''_aσ'_b (module docstring; explicit σ'' = 0 for kinked σ).
    K, Θ: (N, N); B, F, P, Q: (N, N, N, N) in the layouts of :class:`~pdlt.theory.state.LayerState`;
    C_W, λ_W of layer ℓ+1; r = n_ℓ/n_{ℓ−1}; ``moments``: a :class:`LayerMoments` of the same layer to
    share with :func:`ddntk_step` (computed here when None).  Returns {"P", "Q"}, each (N, N, N, N).
    """
    cm = moments or LayerMoments(K, Theta, C_W, lambda_W, E)
    C, lam = C_W, lambda_W
    a, b, c, d = cm.idx
    Sp, d1, dPsi = cm.Sp, cm.d1, cm.dPsi
    M1010 = mixed4(K, (1, 0, 1, 0), E)                           # ⟨σ'_aσ_bσ'_cσ_d⟩
    P_prop = np.zeros((cm.N,) * 4)
    Q_prop = np.zeros((cm.N,) * 4)
    F_prop = np.zeros((cm.N,) * 4)
    for s in (0, 1):
        if np.any(P):
            P_prop += d1[s][a, d] * P[a, b, c, _pick(a, d, s)]
        if np.any(Q):
            Q_prop += d1[s][c, d] * Q[a, b, c, _pick(c, d, s)]
        if np.any(F):
            for t in (0, 1):
                F_prop += F[a, _pick(a, b, s), c, _pick(c, d, t)] * dPsi[s][a, b] * d1[t][c, d]
    P_new = C ** 2 * (Theta[a, b] * Theta[a, c] * cm.M2110
                      + r * Sp[b, c] * (B[a, a, b, c] * cm.e20[a, d] + P_prop))
    Q_new = (C * Theta[a, c] * (lam * M1010 + C * Theta[a, b] * cm.M2110)
             + r * C * F_prop + r * C ** 2 * Sp[a, b] * Q_prop)
    return {"P": P_new, "Q": Q_new}


def ddntk_step(K, Theta, B, F, P, Q, R, S, T, U, C_W: float, lambda_W: float, r: float, E: Expectations,
               moments: LayerMoments | None = None) -> dict:
    r"""(R, S, T, U) at layer ℓ+1 from layer ℓ's (K, Θ, B, F, P, Q, R, S, T, U) (book Ch. ∞).

    With Ψ_ab = ∂_aΩ_ab, ∂²_aΩ_ab and Φ_ab = ∂_a∂_bΩ_ab the explicit derivatives of
    Ω_ab = λ_Wσ_aσ_b + C_WΘ_abσ'_aσ'_b (module docstring), C = C_W:

    .. math::
        R'_{abcd} = C\Theta_{ac}\Theta_{ad}\langle\partial_a^2\Omega_{ab}\sigma'_c\sigma'_d\rangle
          + rC\langle\sigma'_c\sigma'_d\rangle\big(B_{aacd}\langle\partial_a^2\Omega_{ab}\rangle
          + \sum_\beta P_{acd\beta}\langle\partial_\beta\Psi_{ab}\rangle\big)
          + rC^2\langle\sigma'_a\sigma'_b\rangle\langle\sigma'_c\sigma'_d\rangle R_{abcd}

    .. math::
        S'_{abcd} = C\Theta_{ac}\Theta_{bd}\langle\Phi_{ab}\sigma'_c\sigma'_d\rangle
          + rC\langle\sigma'_c\sigma'_d\rangle\langle\Phi_{ab}\rangle B_{abcd}
          + rC^2\langle\sigma'_a\sigma'_b\rangle\langle\sigma'_c\sigma'_d\rangle S_{abcd}

    .. math::
        T'_{abcd} = \Theta_{ad}\langle\Psi_{ab}\Psi_{dc}\rangle
          + r\sum_{\beta\beta'}F_{a\beta d\beta'}\langle\partial_\beta\Psi_{ab}\rangle\langle\partial_{\beta'}\Psi_{dc}\rangle
          + rC\Big[\langle\sigma'_d\sigma'_c\rangle\sum_\beta Q_{dca\beta}\langle\partial_\beta\Psi_{ab}\rangle
          + \langle\sigma'_a\sigma'_b\rangle\sum_\beta Q_{abd\beta}\langle\partial_\beta\Psi_{dc}\rangle\Big]
          + rC^2\langle\sigma'_a\sigma'_b\rangle\langle\sigma'_d\sigma'_c\rangle T_{abcd}

    .. math::
        U'_{abcd} = C^2\Theta_{ac}\Theta_{ad}\Theta_{cb}\langle\sigma''_a\sigma'_b\sigma''_c\sigma'_d\rangle
          + rC^2\langle\sigma'_a\sigma'_b\rangle\langle\sigma'_c\sigma'_d\rangle U_{abcd}

    Shapes as in :func:`dntk_step`; returns {"R", "S", "T", "U"}.
    """
    cm = moments or LayerMoments(K, Theta, C_W, lambda_W, E)
    C, lam = C_W, lambda_W
    a, b, c, d = cm.idx
    Sp, dPsi = cm.Sp, cm.dPsi
    N = cm.N
    Om2 = lam * cm.e20 + C * Theta * explicit_pair(K, 3, 1, E)             # ⟨∂_a²Ω_ab⟩
    Phi = lam * Sp + C * Theta * explicit_pair(K, 2, 2, E)                 # ⟨Φ_ab⟩
    SS = Sp[a, b] * Sp[c, d]
    M1111 = mixed4(K, (1, 1, 1, 1), E)

    R_prop = np.zeros((N,) * 4)
    if np.any(P):
        for s in (0, 1):
            R_prop += P[a, c, d, _pick(a, b, s)] * dPsi[s][a, b]
    R_new = (C * Theta[a, c] * Theta[a, d] * (lam * explicit_mixed4(K, (2, 0, 1, 1), E)
                                              + C * Theta[a, b] * explicit_mixed4(K, (3, 1, 1, 1), E))
             + r * C * Sp[c, d] * (B[a, a, c, d] * Om2[a, b] + R_prop) + r * C ** 2 * SS * R)

    S_new = (C * Theta[a, c] * Theta[b, d] * (lam * M1111 + C * Theta[a, b] * explicit_mixed4(K, (2, 2, 1, 1), E))
             + r * C * Sp[c, d] * Phi[a, b] * B + r * C ** 2 * SS * S)

    PsiPsi = (lam ** 2 * mixed4(K, (1, 0, 0, 1), E)
              + lam * C * Theta[d, c] * explicit_mixed4(K, (1, 0, 1, 2), E)
              + lam * C * Theta[a, b] * explicit_mixed4(K, (2, 1, 0, 1), E)
              + C ** 2 * Theta[a, b] * Theta[d, c] * explicit_mixed4(K, (2, 1, 1, 2), E))   # ⟨Ψ_abΨ_dc⟩
    T_prop = np.zeros((N,) * 4)
    for s in (0, 1):
        if np.any(F):
            for t in (0, 1):
                T_prop += F[a, _pick(a, b, s), d, _pick(d, c, t)] * dPsi[s][a, b] * dPsi[t][d, c]
        if np.any(Q):
            T_prop += C * (Sp[d, c] * Q[d, c, a, _pick(a, b, s)] * dPsi[s][a, b]
                           + Sp[a, b] * Q[a, b, d, _pick(d, c, s)] * dPsi[s][d, c])
    T_new = Theta[a, d] * PsiPsi + r * T_prop + r * C ** 2 * Sp[a, b] * Sp[d, c] * T

    U_new = (C ** 2 * Theta[a, c] * Theta[a, d] * Theta[c, b] * explicit_mixed4(K, (2, 1, 2, 1), E)
             + r * C ** 2 * SS * U)
    return {"R": R_new, "S": S_new, "T": T_new, "U": U_new}


# -- one layer, one input ---------------------------------------------------------------------------
def _single_moments(K: float, E: Expectations) -> dict:
    _, dd2, _ = (float(x) for x in E.g_derivs(K))
    sp2 = float(_sp2_single(E, K)[0])
    m = {"sp2": sp2, "dsps": 0.5 * dd2,                          # ⟨σ'²⟩, ⟨(σ'σ)'⟩ = ⟨σ'² + σσ''⟩
         "s2p2": float(_one_d(E, K, (2, 2, 0, 0))), "sp4": float(_one_d(E, K, (0, 4, 0, 0)))}
    for name, counts in (("e20", (1, 0, 1, 0)), ("e31", (0, 1, 0, 1)), ("e22", (0, 0, 2, 0)),
                         ("e2110", (1, 2, 1, 0)), ("e3111", (0, 3, 0, 1)), ("e2211", (0, 2, 2, 0))):
        m[name] = float(_explicit_one_d(E, K, counts))
    m["dpp"] = m["e31"] + m["e22"]                                # ⟨(σ''σ')'⟩ (explicit σ'')
    return m


def dntk_step_single(K: float, Theta: float, B: float, F: float, P: float, Q: float, C_W: float,
                     lambda_W: float, r: float, E: Expectations) -> dict:
    r"""Single input (formula sheet §6), with χ_⊥ = C_W⟨σ'²⟩, χ_∥ = C_W⟨(σσ')'⟩, 1-D integrals only:

    .. math::
        P' = C_W^2\Theta^2\langle\sigma''\sigma'^2\sigma\rangle + r\big[\chi_\perp\chi_\parallel P
             + C_W^2\langle\sigma'^2\rangle\langle\sigma''\sigma\rangle B\big],

    .. math::
        Q' = C_W\Theta\langle\Psi\sigma'\sigma\rangle + r\,F\langle\Psi'\rangle\chi_\parallel + r\chi_\perp\chi_\parallel Q,
        \qquad \Psi = \lambda_W\sigma'\sigma + C_W\Theta\sigma''\sigma'

    (so Q' = C_W²Θ²⟨σ''σ'²σ⟩ + rC_W²Θ⟨(σ''σ')'⟩⟨(σ'σ)'⟩F + rχ_⊥χ_∥Q + (λ_W/C_W)F').
    Returns {"P", "Q"} as floats.
    """
    check_ntk_activation(E.act)
    m = _single_moments(K, E)
    C, lam = C_W, lambda_W
    chi_perp, chi_par = C * m["sp2"], C * m["dsps"]
    dPsi = lam * m["dsps"] + C * Theta * m["dpp"]
    P_new = C ** 2 * Theta ** 2 * m["e2110"] + r * (chi_perp * chi_par * P + C ** 2 * m["sp2"] * m["e20"] * B)
    Q_new = (C * Theta * (lam * m["s2p2"] + C * Theta * m["e2110"]) + r * F * dPsi * chi_par
             + r * chi_perp * chi_par * Q)
    return {"P": P_new, "Q": Q_new}


def ddntk_step_single(K: float, Theta: float, B: float, F: float, P: float, Q: float, R: float, S: float,
                      T: float, U: float, C_W: float, lambda_W: float, r: float, E: Expectations) -> dict:
    r"""Single input forms of :func:`ddntk_step` (1-D integrals; χ_⊥ = C_W⟨σ'²⟩):

    .. math::
        R' = C_W\Theta^2\langle\Omega''\sigma'^2\rangle + rC_W\langle\sigma'^2\rangle\big(\langle\Omega''\rangle B
             + \langle\Psi'\rangle P\big) + r\chi_\perp^2R,\qquad \Omega'' = \lambda_W\sigma''\sigma + C_W\Theta\sigma'''\sigma',

    .. math::
        S' = C_W\Theta^2\langle\Phi\sigma'^2\rangle + rC_W\langle\sigma'^2\rangle\langle\Phi\rangle B + r\chi_\perp^2S,
        \qquad \Phi = \lambda_W\sigma'^2 + C_W\Theta\sigma''^2,

    .. math::
        T' = \Theta\langle\Psi^2\rangle + r\langle\Psi'\rangle^2F + 2rC_W\langle\sigma'^2\rangle\langle\Psi'\rangle Q
             + r\chi_\perp^2T,\qquad U' = C_W^2\Theta^3\langle\sigma''^2\sigma'^2\rangle + r\chi_\perp^2U.

    Returns {"R", "S", "T", "U"} as floats.
    """
    check_ntk_activation(E.act)
    m = _single_moments(K, E)
    C, lam = C_W, lambda_W
    chi2 = (C * m["sp2"]) ** 2
    dPsi = lam * m["dsps"] + C * Theta * m["dpp"]
    Om2 = lam * m["e20"] + C * Theta * m["e31"]
    Om2sp2 = lam * m["e2110"] + C * Theta * m["e3111"]            # ⟨Ω''σ'²⟩
    Phi = lam * m["sp2"] + C * Theta * m["e22"]
    Phisp2 = lam * m["sp4"] + C * Theta * m["e2211"]
    Psi2 = lam ** 2 * m["s2p2"] + 2 * lam * C * Theta * m["e2110"] + C ** 2 * Theta ** 2 * m["e2211"]
    return {"R": C * Theta ** 2 * Om2sp2 + r * C * m["sp2"] * (Om2 * B + dPsi * P) + r * chi2 * R,
            "S": C * Theta ** 2 * Phisp2 + r * C * m["sp2"] * Phi * B + r * chi2 * S,
            "T": Theta * Psi2 + r * dPsi ** 2 * F + 2 * r * C * m["sp2"] * dPsi * Q + r * chi2 * T,
            "U": C ** 2 * Theta ** 3 * m["e2211"] + r * chi2 * U}


# -- closed forms -------------------------------------------------------------------------------------
def scale_invariant_critical(ell, K_star: float, lambda_b: float, lambda_W: float, A2: float,
                             A4: float) -> dict:
    r"""P, Q, R, S, T, U of one input for the scale-invariant class at criticality (a.e. convention).

    Assumes σ(z) = a₊z (z ≥ 0), a₋z (z < 0) with A₂ = (a₊²+a₋²)/2, A₄ = (a₊⁴+a₋⁴)/2, C_b = 0,
    C_W = 1/A₂ in every layer ℓ ≥ 2, equal hidden widths, layer-independent λ_b, λ_W, and
    K* = K^{(1)} of that input.  With Θ₁ = λ_b + λ_W A₂K*:

    .. math::
        P = R = U = 0,\quad Q^{(\ell)} = \lambda_W\frac{A_4}{A_2}K^*\Theta_1\frac{(\ell+1)\ell(\ell-1)}{6},\quad
        S^{(\ell)} = \lambda_W\frac{A_4}{A_2}\Theta_1^2\frac{\ell^2(\ell^2-1)}{12},\quad
        T^{(\ell)} = \lambda_W^2A_4K^*\Theta_1\frac{\ell^2(\ell^2-1)}{12},

    from Q' = Q + λA₂F', S' = S + λA₂B', T' = T + λA₂(Q + Q') with the NTK solutions
    F = (A₄/A₂²)K*Θ₁ℓ(ℓ−1)/2, B = (A₄/A₂²)Θ₁²(ℓ−1)ℓ(2ℓ−1)/6 (formula sheet §5).  ``ell`` may be an array.
    """
    ell = np.asarray(ell, dtype=np.float64)
    T1 = lambda_b + lambda_W * A2 * K_star
    quart = ell ** 2 * (ell ** 2 - 1) / 12
    zero = np.zeros_like(ell)
    return {"P": zero, "Q": lambda_W * A4 / A2 * K_star * T1 * (ell + 1) * ell * (ell - 1) / 6,
            "R": zero, "S": lambda_W * A4 / A2 * T1 ** 2 * quart,
            "T": lambda_W ** 2 * A4 * K_star * T1 * quart, "U": zero}
