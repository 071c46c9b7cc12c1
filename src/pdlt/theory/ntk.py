r"""The neural tangent kernel at initialization: its mean Θ and its O(1/n) fluctuations A, B, D, F
(book Ch. 8; formula sheet §5).  Index layouts are documented on :class:`~pdlt.theory.state.LayerState`.

Everything follows from the forward equation of the NTK (n = n_ℓ, W = W^{(ℓ+1)}):

.. math::
    \hat H^{(\ell+1)}_{i_1i_2;\alpha_1\alpha_2} = \delta_{i_1i_2}\Big[\lambda_b + \frac{\lambda_W}{n}
      \sum_j \sigma_{j;\alpha_1}\sigma_{j;\alpha_2}\Big]
      + \sum_{j_1j_2} W_{i_1j_1}W_{i_2j_2}\,\sigma'_{j_1;\alpha_1}\sigma'_{j_2;\alpha_2}
        \hat H^{(\ell)}_{j_1j_2;\alpha_1\alpha_2},

by conditioning on layer ℓ, Wick-contracting the W's and keeping the leading order in 1/n
(derivations in the report of issue 4; they reproduce formula-sheet §5 for Θ, B, F and — after
fixing the sheet's D index layout, see below — D and A).  With r = n_ℓ/n_{ℓ−1}, all ⟨·⟩ at
K = K^{(ℓ)}, Θ = Θ^{(ℓ)} and

.. math:: \Omega_{\alpha_1\alpha_2} \equiv \lambda_W\sigma_{\alpha_1}\sigma_{\alpha_2}
          + C_W\Theta_{\alpha_1\alpha_2}\sigma'_{\alpha_1}\sigma'_{\alpha_2},

the recursions are (the ℓ+1 hyperparameters C_W, λ_b, λ_W; Σ over all β's)

.. math::
    \Theta'_{ab} &= \lambda_b + \lambda_W\langle\sigma_a\sigma_b\rangle + C_W\langle\sigma'_a\sigma'_b\rangle\Theta_{ab}\\
    B'_{acbd} &= C_W^2\big[\langle\sigma'_a\sigma'_b\sigma'_c\sigma'_d\rangle\Theta_{ab}\Theta_{cd}
        + r\,\langle\sigma'_a\sigma'_c\rangle\langle\sigma'_b\sigma'_d\rangle B_{acbd}\big]\\
    F'_{acbd} &= C_W^2\big[\langle\sigma'_a\sigma'_b\sigma_c\sigma_d\rangle\Theta_{ab}
        + r\sum_{\beta_1\beta_2}\langle\partial_{\beta_1}(\sigma'_a\sigma_c)\rangle
          \langle\partial_{\beta_2}(\sigma'_b\sigma_d)\rangle F_{a\beta_1b\beta_2}\big]\\
    D'_{abcd} &= C_W\big[\langle\Omega_{ab}\sigma_c\sigma_d\rangle - \langle\Omega_{ab}\rangle\langle\sigma_c\sigma_d\rangle\big]
        + \frac{r C_W}{4}\sum V_{(\beta_1\beta_2)(\beta_3\beta_4)}\langle\partial_{\beta_1}\partial_{\beta_2}\Omega_{ab}\rangle
          \langle\partial_{\beta_3}\partial_{\beta_4}(\sigma_c\sigma_d)\rangle
        + \frac{r C_W^2}{2}\langle\sigma'_a\sigma'_b\rangle\sum D_{ab\beta_3\beta_4}
          \langle\partial_{\beta_3}\partial_{\beta_4}(\sigma_c\sigma_d)\rangle\\
    A'_{abcd} &= \mathrm{Cov}(\Omega_{ab},\Omega_{cd})
        + \frac r4\sum V_{(\beta_1\beta_2)(\beta_3\beta_4)}\langle\partial_{\beta_1}\partial_{\beta_2}\Omega_{ab}\rangle
          \langle\partial_{\beta_3}\partial_{\beta_4}\Omega_{cd}\rangle
        + r C_W^2\langle\sigma'_a\sigma'_b\rangle\langle\sigma'_c\sigma'_d\rangle A_{abcd}\\
      &\quad + \frac{r C_W}{2}\Big[\langle\sigma'_a\sigma'_b\rangle\sum D_{ab\beta_3\beta_4}
          \langle\partial_{\beta_3}\partial_{\beta_4}\Omega_{cd}\rangle + (ab)\leftrightarrow(cd)\Big]

with Θ^{(1)} = λ_b^{(1)} + λ_W^{(1)} XXᵀ/n_0 and A = B = D = F = 0 at ℓ = 1.  The Gaussian
integration by parts is used in derivative form, :math:`\sum\langle(z z-K)_{\beta_1\beta_2}f\rangle
K^{\beta_1\beta_3}K^{\beta_2\beta_4}X_{\beta_3\beta_4} = \sum X_{\beta\beta'}\langle\partial_\beta
\partial_{\beta'}f\rangle` (and :math:`\sum\langle z_{\beta_1}f\rangle K^{\beta_1\beta_2}X_{\beta_2}
= \sum X_\beta\langle\partial_\beta f\rangle`), so K is never inverted and only the β's among f's
own inputs contribute; for a single variable the derivative moments are taken in Hermite form
(:math:`\langle\partial^2 f\rangle = \langle f\,(z^2-K)\rangle/K^2`), which needs no σ″.

Formula-sheet note: the sheet *defines* D with the NTK pair first (D_{α1α2α3α4}: α1α2 NTK, α3α4 z)
but writes its D recursion (and the D term of A) with the z pair first (its genesis term is
⟨σ_{α1}σ_{α2}Ω_{α3α4}⟩ and its propagation contracts D_{β3β4α3α4} against σ_{α1}σ_{α2}); the
recursion above is the sheet's transposed into the defined layout.  Θ, B, F agree with the sheet.

Expectations beyond :class:`~pdlt.theory._gauss.Expectations`: ⟨σ'σ'⟩ on the diagonal and the
mixed four-point tensors ⟨σ'σ'σ'σ'⟩, ⟨σ'σ'σσ⟩, ⟨σσσσ⟩ (:func:`mixed4`) — 1-D split rule when the
four inputs coincide, the 2-D polar rule for two distinct inputs (both exact to rounding for
piecewise-linear σ, whose σ' is a step), nested Gauss–Hermite for three or four distinct inputs
(crude for kinks: ~3e-3 relative for ReLU, see :mod:`pdlt.gaussian`).  Derivatives σ″, σ‴ enter
only through the pair moments ⟨σ''_aσ_c⟩, ⟨σ'''_aσ'_b⟩, ⟨σ''_aσ''_b⟩, which the activation must
give in closed form when its derivatives contain δ-functions (ReLU & co. do).  Activations whose
σ' itself is a δ (the step) have no finite NTK and are rejected.  For exactly collinear inputs to
a kinked σ (ReLU with C_b = 0 and x_b ∝ x_a) ⟨σ''_aσ''_b⟩ diverges and D, A come out non-finite.
"""

from __future__ import annotations

from itertools import product

import numpy as np

from .. import gaussian
from ..activations import PiecewiseLinear
from ._gauss import Expectations
from .four_point import _pick, derivative_coefficients

__all__ = ["first_layer_ntk", "check_ntk_activation", "sp_sp", "mixed4", "ntk_step", "ntk_step_single",
           "ntk_first_layer_fields"]


def check_ntk_activation(act) -> None:
    """Raise NotImplementedError for activations whose σ' contains a δ-function (no finite NTK)."""
    if not act.smooth and not isinstance(act, PiecewiseLinear):
        raise NotImplementedError(
            f"activation {act.name!r}: σ' contains a δ-function, so the NTK mean ⟨σ'σ'⟩ diverges")


def first_layer_ntk(X: np.ndarray, lambda_b: float, lambda_W: float) -> np.ndarray:
    r"""Θ^{(1)} = λ_b + λ_W X Xᵀ/n_0 for X of shape (N, n_0); exact (the first-layer NTK is deterministic)."""
    return lambda_b + lambda_W * (X @ X.T) / X.shape[1]


def ntk_first_layer_fields(X: np.ndarray, lambda_b: float, lambda_W: float) -> dict:
    """The NTK fields of layer 1: Θ^{(1)} and A = B = D = F = 0."""
    N = X.shape[0]
    z = np.zeros((N,) * 4)
    return {"Theta": first_layer_ntk(X, lambda_b, lambda_W), "A": z, "B": z, "D": z, "F": z}


# -- expectations -------------------------------------------------------------------------------
def _fn(act, p: int, q: int, s2: int = 0, s3: int = 0):
    """z ↦ σ(z)^p σ'(z)^q σ''(z)^s2 σ'''(z)^s3 (pointwise derivatives: for a kinked σ the σ'', σ'''
    factors are the a.e. values, zero; callers decide whether that is what they want)."""
    def f(z):
        out = np.ones_like(np.asarray(z, dtype=np.float64))
        if p:
            out = out * np.asarray(act.sigma(z), dtype=np.float64) ** p
        if q:
            out = out * np.asarray(act.derivative(z, 1), dtype=np.float64) ** q
        if s2:
            out = out * np.asarray(act.derivative(z, 2), dtype=np.float64) ** s2
        if s3:
            out = out * np.asarray(act.derivative(z, 3), dtype=np.float64) ** s3
        return out
    return f


def _sp2_single(E: Expectations, K) -> tuple[np.ndarray, np.ndarray]:
    r"""(⟨σ'²⟩_K, ⟨∂²(σ'²)⟩_K = ⟨σ'² (z²−K)⟩_K/K²) by the 1-D split rule, vectorized over K."""
    K = np.asarray(K, dtype=np.float64)
    f = _fn(E.act, 0, 2)
    m0 = gaussian.expect1(f, K)
    with np.errstate(divide="ignore", invalid="ignore"):
        m2 = gaussian.expect1(lambda z: f(z) * z * z, K)
        d2 = np.where(K > 0, (m2 - K * m0) / K ** 2, 0.0)
    return m0, d2


def sp_sp(K: np.ndarray, E: Expectations) -> np.ndarray:
    r"""⟨σ'_a σ'_b⟩_K as an (N, N) matrix (off-diagonal from the pair table, diagonal 1-D)."""
    check_ntk_activation(E.act)
    N = K.shape[0]
    P = E.pair_table(K)[(1, 1)].copy()
    P[np.diag_indices(N)] = _sp2_single(E, np.diag(K))[0]
    return P


def _nested(fs, L, x, w):
    """Σ_u Π_j w f_j(z_j), z = L u (zero-pivot Cholesky, batch (P, k, k)): :func:`pdlt.gaussian.nested_product`."""
    return gaussian.nested_product(fs, L, x, w)


#: Gauss–Legendre order per side of the kink, per level, of the kink-split nested rule (3, 4 distinct inputs).
SPLIT_ORDERS = {3: 24, 4: 14}
_SPLIT_RANGE = 9.0   # |u| ≤ 9 in standard units: e^{-81/2} ≈ 3e-18


def _nested_split(fs, L, kink: float, Q: int, chunk_nodes: int = 4_000_000):
    r"""Σ Π_j f_j(z_j), z = L u, for piecewise-smooth f_j with one kink at ``kink``.

    Nested over u_0, u_1, …: each u_j is integrated by Gauss–Legendre (order Q) on the two sides of
    the point where z_j crosses the kink given the outer u's, so every 1-D integrand is smooth on each
    piece (the inner integrals are smooth functions of the outer u's).  Cost (2Q)^k per covariance.
    """
    P, k = L.shape[0], L.shape[1]
    step = max(1, chunk_nodes // (2 * Q) ** k)
    if P > step:
        return np.concatenate([_nested_split(fs, L[s0:s0 + step], kink, Q, chunk_nodes)
                               for s0 in range(0, P, step)])
    x, wx = np.polynomial.legendre.leggauss(Q)
    x, wx = 0.5 * (x + 1.0), 0.5 * wx
    R = _SPLIT_RANGE
    us, ws, zs = [], [], []
    for j in range(k):
        shape = (P,) + (1,) * j                               # outer grid (P, M, …, M) broadcast
        lin = np.zeros(shape)
        for i in range(j):
            lin = lin + L[:, j, i].reshape((P,) + (1,) * j) * us[i]
        ljj = L[:, j, j].reshape((P,) + (1,) * j)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(ljj > 0, (kink - lin) / np.where(ljj > 0, ljj, 1.0), 0.0)
        t = np.clip(t, -R, R)[..., None]
        u = np.concatenate([-R + (t + R) * x, t + (R - t) * x], axis=-1)        # (…, 2Q)
        w = np.concatenate([(t + R) * wx, (R - t) * wx], axis=-1) * np.exp(-0.5 * u * u) / np.sqrt(2 * np.pi)
        us = [a[..., None] for a in us] + [u]
        ws.append(w)
        zs.append(lin[..., None] + ljj[..., None] * u)
    acc = None
    for j in range(k - 1, -1, -1):
        v = fs[j](zs[j])
        if acc is not None:
            v = v * acc
        acc = np.sum(v * ws[j], axis=-1)
    return acc


def mixed4(K: np.ndarray, orders: tuple[int, int, int, int], E: Expectations) -> np.ndarray:
    r"""⟨σ^{(o_1)}_a σ^{(o_2)}_b σ^{(o_3)}_c σ^{(o_4)}_d⟩_K as (N, N, N, N) over (a, b, c, d).

    o_s ∈ {0, 1} for every activation with a finite NTK.  o_s ∈ {2, 3} (σ'', σ''', needed by the
    dNTK/ddNTK recursions of :mod:`pdlt.theory.dntk`) only for smooth σ: for a kinked σ they are
    δ-functions and a ValueError is raised (:mod:`pdlt.theory.dntk` sets such explicit σ'' terms to
    zero itself, the a.e. convention).

    Each distinct (inputs, powers) pattern is computed once: one distinct input by the 1-D split rule,
    two by the 2-D polar rule, three or four by nested Gauss–Hermite (order ``E.order4`` or
    :data:`pdlt.gaussian.ORDERS`) for smooth σ, and by the kink-split nested Gauss–Legendre rule
    :func:`_nested_split` for kinked σ (a tensor Gauss–Hermite rule is off by ~4 % on the
    step σ' in 3-D; the split rule reproduces the orthant probability to ~1e-9).  Orders that are
    permutations of each other share one computation: the tensor for the orders sorted in decreasing
    order is computed (and memoized per K) once and transposed.
    """
    K = np.asarray(K, dtype=np.float64)
    orders = tuple(int(o) for o in orders)
    if len(orders) != 4 or not all(0 <= o <= 3 for o in orders):
        raise ValueError(f"orders must be four derivative orders in 0..3, got {orders!r}")
    if max(orders) > 1 and not E.act.smooth:
        raise ValueError(f"activation {E.act.name!r} is kinked: its σ'' and σ''' are δ-functions, so "
                         f"the moment with derivative orders {orders} is not finite")
    perm = sorted(range(4), key=lambda s: -orders[s])      # stable sort: canonical orders decreasing
    canon = tuple(orders[s] for s in perm)
    T = E._memo(f"ntk_mixed4_{canon}", K, lambda: _mixed4(K, canon, E))
    return T if canon == orders else T.transpose(np.argsort(perm))


def _mixed4(K, orders, E):
    act = E.act
    N = K.shape[0]
    keys: dict[tuple, list[int]] = {}
    for flat, idx in enumerate(product(range(N), repeat=4)):
        vs = tuple(sorted(set(idx)))
        sig = tuple(tuple(sum(1 for s in range(4) if idx[s] == v and orders[s] == o) for o in range(4))
                    for v in vs)
        keys.setdefault((vs, sig), []).append(flat)
    batches: dict[tuple, list[tuple]] = {}
    for vs, sig in keys:
        batches.setdefault(sig, []).append(vs)
    out = np.empty(N ** 4)
    kinked = not act.smooth
    for sig, vss in batches.items():
        k = len(sig)
        V = np.array(vss)                                   # (P, k)
        fs = [_fn(act, *counts) for counts in sig]
        if k == 1:
            vals = gaussian.expect1(fs[0], K[V[:, 0], V[:, 0]])
        elif k == 2:
            a, b = V[:, 0], V[:, 1]
            vals = gaussian.expect2(fs[0], fs[1], K[a, a], K[a, b], K[b, b],
                                    order=E.order2(float(np.max(np.diag(K)))))
        elif kinked:
            L = gaussian.psd_cholesky(K[V[:, :, None], V[:, None, :]])
            vals = _nested_split(fs, L, float(act.kink or 0.0), SPLIT_ORDERS[k])
        else:
            Q = E.order4 or gaussian.ORDERS["smooth"][k]
            x, w = gaussian.hermite_rule(Q)
            L = gaussian.psd_cholesky(K[V[:, :, None], V[:, None, :]])
            vals = _nested(fs, L, x, w)
        for vs, val in zip(vss, vals):
            out[keys[(vs, sig)]] = val
    return out.reshape((N,) * 4)


def _d2_spsp(K: np.ndarray, E: Expectations) -> dict:
    r"""Coefficients ⟨∂_{β1}∂_{β2}(σ'_a σ'_b)⟩, keyed like :func:`derivative_coefficients` (bits: 0 → a, 1 → b).

    Off-diagonal: the pair moments ⟨σ^{(3−m)}_a σ^{(1+m)}_b⟩ (m = number of β's equal to b); on the
    diagonal the whole sum sits on the all-a tuple: ⟨∂²σ'²⟩ in Hermite form.
    """
    N = K.shape[0]
    pm = E.pair_table(K)
    eye = np.eye(N, dtype=bool)
    diag = _sp2_single(E, np.diag(K))[1]
    out = {}
    for bits in product((0, 1), repeat=2):
        nb = sum(bits)
        out[bits] = np.where(eye, diag[:, None] * (nb == 0), pm[(3 - nb, 1 + nb)])
    return out


def _d1_spsig(K: np.ndarray, E: Expectations) -> dict:
    r"""⟨∂_β(σ'_a σ_c)⟩ for β = a (key 0) and β = c (key 1); on the diagonal all of it on key 0:
    ⟨σ'² + σσ''⟩ = ⟨∂²σ²⟩/2 (Hermite form, no σ″ needed)."""
    N = K.shape[0]
    pm = E.pair_table(K)
    eye = np.eye(N, dtype=bool)
    dd2 = E.g_derivs(np.diag(K))[1]
    return {0: np.where(eye, 0.5 * dd2[:, None], pm[(2, 0)]), 1: np.where(eye, 0.0, pm[(1, 1)])}


# -- one layer --------------------------------------------------------------------------------
def ntk_step(K, V, Theta, A, B, D, F, C_W: float, lambda_b: float, lambda_W: float, r: float,
             E: Expectations) -> dict:
    r"""(Θ, A, B, D, F) at layer ℓ+1 from layer ℓ's (K, V, Θ, A, B, D, F); r = n_ℓ/n_{ℓ−1}.

    K, Θ are (N, N); V, A, B, D, F are (N, N, N, N) in the layouts of
    :class:`~pdlt.theory.state.LayerState`.  C_W, λ_b, λ_W are those of layer ℓ+1.
    """
    check_ntk_activation(E.act)
    N = K.shape[0]
    S = E.sigma_sigma(K)
    P = sp_sp(K, E)
    T1111 = mixed4(K, (1, 1, 1, 1), E)
    T1100 = mixed4(K, (1, 1, 0, 0), E)                  # ⟨σ'_a σ'_b σ_c σ_d⟩
    T0000 = mixed4(K, (0, 0, 0, 0), E)
    d2s = derivative_coefficients(K, E)[0]              # ⟨∂∂(σ_a σ_b)⟩
    d2p = _d2_spsp(K, E)                                # ⟨∂∂(σ'_a σ'_b)⟩
    d1 = _d1_spsig(K, E)                                # ⟨∂(σ'_a σ_c)⟩
    d2o = {bits: lambda_W * d2s[bits] + C_W * Theta * d2p[bits] for bits in d2s}   # ⟨∂∂Ω_ab⟩
    Th2 = Theta[:, :, None, None]                       # Θ_ab on (a, b, ·, ·)
    Th4 = Theta[None, None, :, :]                       # Θ_cd

    Theta_new = lambda_b + lambda_W * S + C_W * P * Theta

    # (i, j, k, l) = (a, c, b, d) in the B and F layouts
    i, j, k, l = np.indices((N,) * 4, sparse=True)
    B_new = C_W ** 2 * (T1111 * Theta[i, k] * Theta[j, l] + r * P[i, j] * P[k, l] * B)

    F_prop = np.zeros((N,) * 4)
    if np.any(F):
        for s, t in product((0, 1), repeat=2):
            F_prop += d1[s][i, j] * d1[t][k, l] * F[i, (j if s else i), k, (l if t else k)]
    F_new = C_W ** 2 * (T1100[i, k, j, l] * Theta[i, k] + r * F_prop)

    # D and A in natural layout (a, b, c, d)
    a, b, c, d = np.indices((N,) * 4, sparse=True)
    Omega_mean = lambda_W * S + C_W * Theta * P                      # ⟨Ω_ab⟩
    Omega_ss = lambda_W * T0000 + C_W * Th2 * T1100                   # ⟨Ω_ab σ_c σ_d⟩
    Omega_OO = (lambda_W ** 2 * T0000 + lambda_W * C_W * (Th2 * T1100 + Th4 * T1100.transpose(2, 3, 0, 1))
                + C_W ** 2 * Th2 * Th4 * T1111)                       # ⟨Ω_ab Ω_cd⟩
    VOs = np.zeros((N,) * 4)    # Σ V ⟨∂∂Ω_ab⟩⟨∂∂σ_cσ_d⟩
    VOO = np.zeros((N,) * 4)    # Σ V ⟨∂∂Ω_ab⟩⟨∂∂Ω_cd⟩
    if np.any(V):
        for bl in product((0, 1), repeat=2):
            for br in product((0, 1), repeat=2):
                Vb = V[_pick(a, b, bl) + _pick(c, d, br)] * d2o[bl][a, b]
                VOs += Vb * d2s[br][c, d]
                VOO += Vb * d2o[br][c, d]
    DS = np.zeros((N,) * 4)     # Σ D_{ab β3β4} ⟨∂∂σ_cσ_d⟩
    DO = np.zeros((N,) * 4)     # Σ D_{ab β3β4} ⟨∂∂Ω_cd⟩
    if np.any(D):
        for br in product((0, 1), repeat=2):
            Db = D[(a, b) + _pick(c, d, br)]
            DS += Db * d2s[br][c, d]
            DO += Db * d2o[br][c, d]
    Pab = P[:, :, None, None]
    Pcd = P[None, None, :, :]
    D_new = (C_W * (Omega_ss - Omega_mean[:, :, None, None] * S[None, None, :, :])
             + 0.25 * r * C_W * VOs + 0.5 * r * C_W ** 2 * Pab * DS)
    A_new = (Omega_OO - Omega_mean[:, :, None, None] * Omega_mean[None, None, :, :] + 0.25 * r * VOO
             + r * C_W ** 2 * Pab * Pcd * A
             + 0.5 * r * C_W * (Pab * DO + (Pab * DO).transpose(2, 3, 0, 1)))
    return {"Theta": Theta_new, "A": A_new, "B": B_new, "D": D_new, "F": F_new}


def ntk_step_single(K: float, V: float, Theta: float, A: float, B: float, D: float, F: float,
                    C_W: float, lambda_b: float, lambda_W: float, r: float, E: Expectations) -> dict:
    r"""Single input (formula sheet §5), all 1-D integrals by the split rule.

    With χ_∥ = C_W⟨∂²σ²⟩/2, χ_⊥ = C_W⟨σ'²⟩, ω = ⟨∂²Ω⟩/2 = λ_W⟨∂²σ²⟩/2 + C_WΘ⟨∂²σ'²⟩/2:

    Θ' = λ_b + λ_W⟨σ²⟩ + χ_⊥Θ;  B' = C_W²⟨σ'⁴⟩Θ² + rχ_⊥²B;  F' = C_W²⟨σ²σ'²⟩Θ + rχ_∥²F;
    D' = C_W Cov(Ω, σ²) + r[χ_∥χ_⊥D + χ_∥ωV];  A' = Var(Ω) + r[χ_⊥²A + ω²V + 2χ_⊥ωD].
    """
    check_ntk_activation(E.act)
    act = E.act
    g, dd2, _ = (float(x) for x in E.g_derivs(K))
    P, d2p = (float(x) for x in _sp2_single(E, K))
    s4 = float(gaussian.expect1(_fn(act, 4, 0), K))
    sp4 = float(gaussian.expect1(_fn(act, 0, 4), K))
    s2p2 = float(gaussian.expect1(_fn(act, 2, 2), K))
    chi_par, chi_perp = 0.5 * C_W * dd2, C_W * P
    omega = 0.5 * (lambda_W * dd2 + C_W * Theta * d2p)
    cov_s = lambda_W * (s4 - g * g) + C_W * Theta * (s2p2 - g * P)            # Cov(Ω, σ²)
    var_O = (lambda_W ** 2 * (s4 - g * g) + 2 * lambda_W * C_W * Theta * (s2p2 - g * P)
             + C_W ** 2 * Theta ** 2 * (sp4 - P * P))
    return {"Theta": lambda_b + lambda_W * g + chi_perp * Theta,
            "A": var_O + r * (chi_perp ** 2 * A + omega ** 2 * V + 2 * chi_perp * omega * D),
            "B": C_W ** 2 * sp4 * Theta ** 2 + r * chi_perp ** 2 * B,
            "D": C_W * cov_s + r * (chi_par * chi_perp * D + chi_par * omega * V),
            "F": C_W ** 2 * s2p2 * Theta + r * chi_par ** 2 * F}
