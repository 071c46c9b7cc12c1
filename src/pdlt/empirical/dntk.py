r"""The empirical dNTK and ddNTKs: per-network tensors and their ensemble statistics (book Ch. 11, ∞).

Definitions (formula sheet §6)
------------------------------
With λ the (diagonal) learning-rate tensor, :math:`v_{i;\delta} \equiv \lambda\nabla_\theta z_{i;\delta}`
and :math:`\mathcal H_{i;\delta} \equiv \nabla_\theta\nabla_\theta z_{i;\delta}` (all at layer ℓ),

.. math::
    \widehat{dH}_{i_0i_1i_2;\delta_0\delta_1\delta_2} = \mathcal H_{i_0;\delta_0}[v_{i_1;\delta_1}, v_{i_2;\delta_2}],\qquad
    \widehat{dd_IH}_{i_0i_1i_2i_3;\delta_0\ldots\delta_3} = D^3z_{i_0;\delta_0}[v_{i_1;\delta_1}, v_{i_2;\delta_2}, v_{i_3;\delta_3}],

.. math::
    \widehat{dd_{II}H}_{i_1i_2i_3i_4;\delta_1\ldots\delta_4}
      = (\mathcal H_{i_1;\delta_1}v_{i_3;\delta_3})^\top\,\lambda\,(\mathcal H_{i_2;\delta_2}v_{i_4;\delta_4}).

dĤ is symmetric under (i1δ1) ↔ (i2δ2); dd_IĤ under any permutation of its last three (i, δ) pairs;
dd_IIĤ under (i1δ1, i3δ3) ↔ (i2δ2, i4δ4).

Forward equations (the engine)
------------------------------
Write, for the step from layer ℓ (width n, neurons j, m) to ℓ+1 (neurons i, k), W ≡ W^{(ℓ+1)},
σ^{(r)}_{j;\alpha} ≡ σ^{(r)}(z^{(ℓ)}_{j;α}), c_W ≡ λ_W^{(ℓ+1)}/n_ℓ, and lower-layer tensors Ĥ, dĤ,
dd_I, dd_II (layer ℓ). The basic objects are

.. math::
    \tilde W_{\beta;km} = W_{km}\sigma'_{m;\beta},\qquad
    A_{\alpha\beta;jk} \equiv \nabla z^{(\ell)}_{j;\alpha}\cdot v^{(\ell+1)}_{k;\beta}
      = \sum_m \hat H_{jm;\alpha\beta}\,\tilde W_{\beta;km},

.. math::
    Y_{\delta_0\delta_1\delta_2;j\,i_1i_2} = \sum_{m_1m_2}\tilde W_{\delta_1;i_1m_1}\tilde W_{\delta_2;i_2m_2}\,
        \widehat{dH}_{jm_1m_2;\delta_0\delta_1\delta_2},\qquad
    Z_{\delta_0\delta_1\delta_2;i_0\,m_1\,i_2} = \sum_{j,m_2}\tilde W_{\delta_0;i_0j}\tilde W_{\delta_2;i_2m_2}\,
        \widehat{dH}_{jm_1m_2;\delta_0\delta_1\delta_2}

(A is the lower-layer gradient paired with an upper-layer one: Ĥ^{(ℓ+1)} = δ[λ_b + c_W Σσσ] + W̃ A).
Differentiating :math:`z^{(\ell+1)}_i = b_i + \sum_j W_{ij}\sigma(z^{(\ell)}_j)` (the weights W enter
linearly, the biases only at first order, and the learning-rate tensor is block diagonal) gives,
with the inputs carried along (write a_r ≡ A_{δ0δr;j i_r}, Y_{rs} ≡ Y_{δ0δrδs;j i_r i_s}):

.. math::
    \widehat{dH}^{(\ell+1)}_{i_0i_1i_2} = \sum_j W_{i_0j}\big[\sigma''_{j;\delta_0}a_1a_2 + \sigma'_{j;\delta_0}Y_{12}\big]
      + c_W\Big[\delta_{i_0i_1}\sum_j\sigma_{j;\delta_1}\sigma'_{j;\delta_0}a_2
              + \delta_{i_0i_2}\sum_j\sigma_{j;\delta_2}\sigma'_{j;\delta_0}a_1\Big],

.. math::
    \widehat{dd_IH}^{(\ell+1)}_{i_0i_1i_2i_3} = \sum_j W_{i_0j}\Big[\sigma'''_{j;\delta_0}a_1a_2a_3
      + \sigma''_{j;\delta_0}(Y_{12}a_3 + Y_{13}a_2 + Y_{23}a_1)
      + \sigma'_{j;\delta_0}\!\!\sum_{m_1m_2m_3}\!\tilde W_{\delta_1;i_1m_1}\tilde W_{\delta_2;i_2m_2}\tilde W_{\delta_3;i_3m_3}
        \widehat{dd_IH}_{jm_1m_2m_3}\Big]
      + c_W\Big[\delta_{i_0i_1}\sum_j\sigma_{j;\delta_1}\big(\sigma''_{j;\delta_0}a_2a_3 + \sigma'_{j;\delta_0}Y_{23}\big)
        + (1\leftrightarrow2) + (1\leftrightarrow3)\Big],

and for dd_II (inputs δ1..δ4; the second-derivative factor of neuron i1 carries the derivative along
v_{i3}, that of i2 along v_{i4}),

.. math::
    c^{(1)}_{j}(i_1,i_3) = W_{i_1j}\sigma''_{j;\delta_1}A_{\delta_1\delta_3;ji_3} + c_W\delta_{i_1i_3}\sigma_{j;\delta_3}\sigma'_{j;\delta_1},
    \qquad c^{(2)}_{j}(i_2,i_4)\ \text{likewise with}\ (\delta_2,\delta_4),

.. math::
    \widehat{dd_{II}H}^{(\ell+1)}_{i_1i_2i_3i_4} =
      c_W\,\delta_{i_1i_2}\sum_j \sigma'_{j;\delta_1}\sigma'_{j;\delta_2}A_{\delta_1\delta_3;ji_3}A_{\delta_2\delta_4;ji_4}
      + \sum_{jj'} c^{(1)}_j\hat H_{jj';\delta_1\delta_2}c^{(2)}_{j'}
      + \sum_{j} c^{(1)}_j Z_{\delta_2\delta_1\delta_4;i_2\,j\,i_4}
      + \sum_{j} c^{(2)}_j Z_{\delta_1\delta_2\delta_3;i_1\,j\,i_3}
      + \!\!\sum_{jj'mm'}\!\!\tilde W_{\delta_1;i_1j}\tilde W_{\delta_2;i_2j'}\tilde W_{\delta_3;i_3m}\tilde W_{\delta_4;i_4m'}
        \widehat{dd_{II}H}_{jj'mm'}.

The first layer is linear in its parameters: dĤ^{(1)} = dd_IĤ^{(1)} = dd_IIĤ^{(1)} = 0. Every
recursion is diagonal in the input tuple (the tensors at inputs (δ0..δ3) need the lower-layer
tensors at the same inputs only, plus Ĥ and dĤ at sub-tuples), so :func:`measure_dntk` runs the
ddNTKs one input tuple at a time through all layers, and only for one tuple per symmetry class
(permutations of δ1, δ2, δ3 for dd_I; (δ1δ2δ3δ4) ↔ (δ2δ1δ4δ3) for dd_II). At the last layer it
computes only the neuron-pair patterns it needs (i i j j, i j i j, i j j i), never the full tensor.
Cost per network: O(N³ n⁴) per layer for dĤ; for the ddNTKs O(N⁴ n⁵) per intermediate layer and
O(N⁴ n⁴ p) at the last one (N inputs, width n, last width p); memory O(N³ n³ + n⁴).

Exact consequences checked by the tests: for activations with σ'' = 0 (piecewise linear, a.e.)
dĤ^{(2)}_{i0i1i2} = c_W[δ_{i0i1}(…)_{i2} + δ_{i0i2}(…)_{i1}], so dĤ^{(2)}_{ijj} = 0 (P^{(2)} = 0 per
network), dd_IĤ^{(2)} = 0 (R^{(2)} = 0) and dd_IIĤ^{(2)}_{ijji} = 0 (U^{(2)} = 0).

Activations with kinks: the a.e. convention
-------------------------------------------
For ReLU, leaky ReLU and other piecewise-linear σ, σ'' and σ''' are δ-functions. Per network the
derivatives exist almost everywhere and σ'' = σ''' = 0 there; that is what automatic
differentiation computes and what is measured here (σ'' = σ''' = 0 for :class:`PiecewiseLinear`;
smooth activations use their own σ'' and σ'''). The ensemble of these a.e. derivatives does **not**
contain the kink-crossing contributions, which is where ⟨δ(z)…⟩ terms of a theory come from. For a
single input those vanish anyway (z δ(z) = 0), and in the ddNTKs, terms with σ''σ'' at the same input
would be infinite (δ²), so the a.e. convention is the only finite definition there. Compare such
measurements with a theory evaluated in the same convention.

Ensemble statistics
-------------------
Networks are those of :func:`pdlt.empirical.measure_ntk` (network e from
``SeedSequence(seed, spawn_key=(e,))``, :func:`~pdlt.empirical.ntk.sample_parameters`), and z, Ĥ are
computed by its forward stream, so ``G`` and ``Theta`` are bitwise those of ``measure_ntk``.
With m = n_{ℓ−1} the fan-in of the measured layer and averages over ordered pairs i ≠ j of the
layer's neurons, then over networks (all estimators are ensemble means; standard errors are the
delete-one-group jackknife over the engine's groups):

.. math::
    E[\widehat{dH}_{i_0i_1i_2;\delta_0\delta_1\delta_2}z_{i_3;\delta_3}] = \tfrac1m\big[\delta_{i_0i_3}\delta_{i_1i_2}P_{\delta_0\delta_1\delta_2\delta_3}
        + \delta_{i_0i_1}\delta_{i_2i_3}Q_{\delta_0\delta_1\delta_2\delta_3} + \delta_{i_0i_2}\delta_{i_1i_3}Q_{\delta_0\delta_2\delta_1\delta_3}\big],

.. math::
    E[\widehat{dd_IH}_{i_0i_1i_2i_3}] = \tfrac1m\big[\delta_{i_0i_1}\delta_{i_2i_3}R_{\delta_0\delta_1\delta_2\delta_3}
        + \delta_{i_0i_2}\delta_{i_3i_1}R_{\delta_0\delta_2\delta_3\delta_1} + \delta_{i_0i_3}\delta_{i_1i_2}R_{\delta_0\delta_3\delta_1\delta_2}\big],

.. math::
    E[\widehat{dd_{II}H}_{i_1i_2i_3i_4}] = \tfrac1m\big[\delta_{i_1i_2}\delta_{i_3i_4}S_{\delta_1\delta_2\delta_3\delta_4}
        + \delta_{i_1i_3}\delta_{i_4i_2}T_{\delta_1\delta_3\delta_4\delta_2} + \delta_{i_1i_4}\delta_{i_2i_3}U_{\delta_1\delta_4\delta_2\delta_3}\big],

so, for i ≠ j (arrays indexed exactly as written):

- ``P[δ0, δ1, δ2, δ3]`` = m E[dĤ_{ijj;δ0δ1δ2} z_{i;δ3}],  ``Q[δ0, δ1, δ2, δ3]`` = m E[dĤ_{iij;δ0δ1δ2} z_{j;δ3}]
- ``R[δ0, δ1, δ2, δ3]`` = m E[dd_IĤ_{iijj;δ0δ1δ2δ3}]
- ``S[δ1, δ2, δ3, δ4]`` = m E[dd_IIĤ_{iijj;δ1δ2δ3δ4}],  ``T[δ1, δ3, δ4, δ2]`` = m E[dd_IIĤ_{ijij;δ1δ2δ3δ4}],
  ``U[δ1, δ4, δ2, δ3]`` = m E[dd_IIĤ_{ijji;δ1δ2δ3δ4}].

E[dĤ] = 0 and E[dĤ z], E[dd] vanish for every neuron pattern in which some neuron appears an odd
number of times (flip the sign of that neuron's incoming weights and bias), so no mean is
subtracted. The measured values include the O(1/n) relative corrections to the leading-order
theory. ``Theta`` = E[Ĥ_{ii}] and ``G`` = E[z_i z_i] as in :mod:`pdlt.empirical.ntk`.

At layer 2 the first layer is exactly Gaussian and W^{(2)} is independent of it, so the expectations
are exact at any width (⟨·⟩ over G^{(1)}, Θ ≡ Θ^{(1)}, C_W and λ_W of layer 2, subscripts 0..3 the
δ0..δ3 of P, Q, R and 1..4 the δ1..δ4 of the dd_II tuple):

- P^{(2)}_{0123} = C_W²Θ_{01}Θ_{02}⟨σ''_0σ'_1σ'_2σ_3⟩,
  Q^{(2)}_{0123} = P^{(2)}_{0123} + λ_W C_W Θ_{02}⟨σ'_0σ_1σ'_2σ_3⟩
  (the λ_W term is (λ_W/C_W)F^{(2)}[δ0, δ1, δ2, δ3] in the F layout of :mod:`pdlt.empirical.ntk`);
- R^{(2)}_{0123} = C_W²Θ_{01}Θ_{02}Θ_{03}⟨σ'''_0σ'_1σ'_2σ'_3⟩ + λ_W C_W Θ_{02}Θ_{03}⟨σ''_0σ_1σ'_2σ'_3⟩;
- with u ≡ C_W²Θ_{12}Θ_{13}Θ_{24}⟨σ''_1σ''_2σ'_3σ'_4⟩: S^{(2)}_{1234} = λ_W C_W Θ_{13}Θ_{24}⟨σ'_1σ'_2σ'_3σ'_4⟩ + u,
  U^{(2)}_{1423} = u, and T^{(2)}_{1342} = u + Θ_{12}[λ_W C_W(Θ_{13}⟨σ''_1σ'_2σ'_3σ_4⟩
  + Θ_{24}⟨σ'_1σ''_2σ_3σ'_4⟩) + λ_W²⟨σ'_1σ'_2σ_3σ_4⟩].

The tests check all six against Monte Carlo, which pins down every index convention above.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np

from .. import _validate as v
from ..mlp import MLP
from . import engine
from ._views import EstimatorMeasurement
from .kernel import pair_index
from .ntk import Parameters, _forward_stream, _unpack, sample_parameters

__all__ = ["forward_dntk", "forward_ddntk", "autodiff_dntk", "autodiff_ddntk", "measure_dntk",
           "DNTKMeasurement", "DNTKLayerMeasurement", "DNTK_OBSERVABLES", "sample_parameters"]

#: Observables of :func:`measure_dntk` (besides ``Theta`` and ``G``).
DNTK_OBSERVABLES = ("P", "Q", "R", "S", "T", "U")
_DD = ("R", "S", "T", "U")
_FEATURES_D = ("ZZ", "Hd", "FP", "FQ")
_FEATURES_DD = ("FR", "FS", "FT", "FU")


# ---------------------------------------------------------------------------------------------
# Activation derivatives


def _derivatives(net: MLP):
    """z ↦ (σ, σ′, σ″, σ‴) elementwise; σ″ and σ‴ are None when identically zero (a.e.)."""
    from .. import activations as A

    act = net.activation
    sigma = engine._NumpyBackend().sigma(act)
    pwl = isinstance(act, A.PiecewiseLinear) and type(act).derivative is A.PiecewiseLinear.derivative
    if pwl:
        ap, am = act.a_plus, act.a_minus

        def d(z):
            return sigma(z), np.where(z >= 0, ap, am), None, None
        return d

    def d(z):
        s0 = sigma(z)
        _, s1, s2, s3 = (np.asarray(x, dtype=np.float64) for x in act.derivatives(z, 3))
        return s0, s1, s2, s3
    return d


# ---------------------------------------------------------------------------------------------
# The forward equations (numpy, batched over networks; every product is a per-network matmul)


@dataclass
class _Step:
    """The step ℓ−1 → ℓ: what the ddNTK recursions need from the lower layer (see the docstring)."""

    cw: float            # λ_W^{(ℓ)} / n_{ℓ−1}
    s0: np.ndarray       # σ(z^{(ℓ−1)}), (E, N, n)
    s1: np.ndarray       # σ′, (E, N, n)
    s2: np.ndarray | None
    B: np.ndarray        # W̃_β = W diag σ′_β, (E, N, p, n)
    W2: np.ndarray | None  # W diag σ″_β
    W3: np.ndarray | None  # W diag σ‴_β
    A: np.ndarray        # (E, N, N, n, p): A[α, β, j, k]
    H: np.ndarray        # Ĥ^{(ℓ−1)}, (E, N, N, n, n): H[α, β, j, m]
    Y: np.ndarray | None  # (E, N, N, N, n, p, p)
    Z: np.ndarray | None  # (E, N, N, N, p, n, p)


def _step(W: np.ndarray, cw: float, zt: np.ndarray, Hf: np.ndarray, dH, derivs, keep: bool):
    """One layer up: (dĤ^{(ℓ)} (E, N, N, N, p, p, p) [δ0, δ1, δ2, i0, i1, i2], the _Step or None).

    zt (E, N, n), Hf (E, N, N, n, n) and dH (E, N, N, N, n, n, n) or None belong to layer ℓ−1.
    """
    E, p, n = W.shape
    N = zt.shape[1]
    s0, s1, s2, s3 = derivs(zt)
    B = W[:, None] * s1[:, :, None, :]
    W2 = None if s2 is None else W[:, None] * s2[:, :, None, :]
    W3 = None if s3 is None else W[:, None] * s3[:, :, None, :]
    A = Hf @ B.mT[:, None]  # A[α, β] = Ĥ_{αβ} W̃_βᵀ
    out = np.zeros((E, N, N, N, p, p * p))
    if W2 is not None:
        AA = A[:, :, :, None, :, :, None] * A[:, :, None, :, :, None, :]  # [a, b, c, j, i1, i2]
        out += W2[:, :, None, None] @ AA.reshape(E, N, N, N, n, p * p)
        del AA
    Y = Z = None
    if dH is not None:
        X = (dH.reshape(E, N, N, N, n * n, n) @ B.mT[:, None, None]).reshape(E, N, N, N, n, n, p)
        Y = B[:, None, :, None, None] @ X  # [a, b, c, j, i1, i2]
        out += B[:, :, None, None] @ Y.reshape(E, N, N, N, n, p * p)
        if keep:
            Z = (B[:, :, None, None] @ X.reshape(E, N, N, N, n, n * p)).reshape(E, N, N, N, p, n, p)
        del X
    out = out.reshape(E, N, N, N, p, p, p)
    if cw:
        w = s1[:, :, None, :] * s0[:, None, :, :]  # [a, b, j] = σ′_{j;a} σ_{j;b}
        c = (w[:, :, :, None, None, :] @ A[:, :, None]).reshape(E, N, N, N, p)  # [a, b, c, k]
        d = np.arange(p)
        out[..., d, d, :] += cw * c[..., None, :]
        out.swapaxes(-1, -2)[..., d, d, :] += cw * c.swapaxes(2, 3)[..., None, :]
    step = _Step(cw, s0, s1, s2, B, W2, W3, A, Hf, Y, Z) if keep else None
    return out, step


def _contract(T: np.ndarray, axis: int, M: np.ndarray) -> np.ndarray:
    """Σ_m M[e, i, m] T[e, …, m, …], m at ``axis`` (≥ 1) of a row-major T; that axis becomes i, in place.

    M (E, p, n). Per network one GEMM per leading index block, no transposed copies.
    """
    shape = T.shape
    pre, post = math.prod(shape[1:axis]), math.prod(shape[axis + 1:])
    T = np.ascontiguousarray(T)
    if post == 1:
        out = T.reshape(shape[0], pre, shape[axis]) @ M.mT
    else:
        out = M[:, None] @ T.reshape(shape[0], pre, shape[axis], post)
    return out.reshape(shape[:axis] + (M.shape[1],) + shape[axis + 1:])


def _pair_rows(U: np.ndarray, V: np.ndarray) -> np.ndarray:
    """(E, p, n) × (E, p, n) → (E, p, n·n): rows U[i, a] V[i, b]."""
    E, p, n = U.shape
    return (U[:, :, :, None] * V[:, :, None, :]).reshape(E, p, n * n)


def _push_patterns(T: np.ndarray, B0, B1, B2, B3, need=(True, True, True)):
    """Pair patterns of Σ B0[i0,s0] B1[i1,s1] B2[i2,s2] B3[i3,s3] T[s0,s1,s2,s3], each (E, p, p) [i, k]:

    (i0=i1=i, i2=i3=k), (i0=i2=i, i1=i3=k), (i0=i3=i, i1=i2=k); None where ``need`` is False.
    Cost O(n⁴p) (one full contraction) plus O(n³p) per pattern, instead of O(n⁴p + n³p² + …)
    for the whole pushed tensor.
    """
    E, n = T.shape[0], T.shape[1]
    X = _contract(T, 4, B3)  # [s0, s1, s2, i3]
    out = [None, None, None]
    if need[0]:
        Ya = np.einsum("ekc,eabck->eabk", B2, X).reshape(E, n * n, -1)  # i2 = i3 = k
        out[0] = _pair_rows(B0, B1) @ Ya
    if need[1]:
        Yb = np.einsum("ekb,eabck->eack", B1, X).reshape(E, n * n, -1)  # i1 = i3 = k
        out[1] = _pair_rows(B0, B2) @ Yb
    if need[2]:
        Yc = np.einsum("eia,eabci->ebci", B0, X).reshape(E, n * n, -1)  # i0 = i3 = i
        out[2] = (_pair_rows(B1, B2) @ Yc).mT
    return out


def _ddI_full(st: _Step, k, ddI):
    """dd_IĤ^{(ℓ)} at inputs k = (δ0, δ1, δ2, δ3), (E, p, p, p, p) [i0, i1, i2, i3], from layer ℓ−1's."""
    d0, d1, d2, d3 = k
    E, _, p, n = st.B.shape
    a = {1: st.A[:, d0, d1], 2: st.A[:, d0, d2], 3: st.A[:, d0, d3]}  # (E, n, p)
    dk = {1: d1, 2: d2, 3: d3}
    out = np.zeros((E, p, p, p, p))
    views = {1: out, 2: out.transpose(0, 1, 3, 2, 4), 3: out.transpose(0, 1, 4, 2, 3)}  # [i0, i_r, i_s, i_t]
    d = np.arange(p)
    for r, (s, t) in ((1, (2, 3)), (2, (1, 3)), (3, (1, 2))):
        Yst = None if st.Y is None else st.Y[:, d0, dk[s], dk[t]]  # [j, i_s, i_t]
        # σ‴ a_r a_s a_t (once, r = 1) and σ″ a_r Y_st: (W_{i0 j} x_j a_r[j, i_r]) · (…)[j, i_s, i_t]
        if st.W3 is not None and r == 1:
            L = (st.W3[:, d0][:, :, None, :] * a[1].mT[:, None]).reshape(E, p * p, n)
            views[1] += (L @ (a[2][:, :, :, None] * a[3][:, :, None, :]).reshape(E, n, p * p)).reshape(E, p, p, p, p)
        if st.W2 is not None and Yst is not None:
            L = (st.W2[:, d0][:, :, None, :] * a[r].mT[:, None]).reshape(E, p * p, n)
            views[r] += (L @ Yst.reshape(E, n, p * p)).reshape(E, p, p, p, p)
        if st.cw:  # c_W δ_{i0 i_r} Σ_j σ_{j;δr} (σ″_{j;δ0} a_s a_t + σ′_{j;δ0} Y_st)
            g = np.zeros((E, 1, p * p))
            if st.s2 is not None:
                aa = (a[s][:, :, :, None] * a[t][:, :, None, :]).reshape(E, n, p * p)
                g += (st.s0[:, dk[r]] * st.s2[:, d0])[:, None, :] @ aa
            if Yst is not None:
                g += (st.s0[:, dk[r]] * st.s1[:, d0])[:, None, :] @ Yst.reshape(E, n, p * p)
            views[r][:, d, d] += st.cw * g.reshape(E, 1, p, p)
    if ddI is not None:
        T = ddI
        for axis, dx in ((4, d3), (3, d2), (2, d1), (1, d0)):
            T = _contract(T, axis, st.B[:, dx])
        out += T
    return out


def _ddI_top(st: _Step, k, ddI, need=(True, True, True)):
    """The pair patterns of dd_IĤ^{(ℓ)} at inputs k, without the full tensor: (E, p, p) [i, k] each for
    (i i k k), (i k i k), (i k k i), i.e. i0 paired with slot r = 1, 2, 3 (None where not ``need``-ed)."""
    d0, d1, d2, d3 = k
    E, _, p, n = st.B.shape
    a = {1: st.A[:, d0, d1], 2: st.A[:, d0, d2], 3: st.A[:, d0, d3]}
    dk = {1: d1, 2: d2, 3: d3}
    pats = [np.zeros((E, p, p)) if w else None for w in need]
    push = (_push_patterns(ddI, st.B[:, d0], st.B[:, d1], st.B[:, d2], st.B[:, d3], need)
            if ddI is not None else None)
    Y = {} if st.Y is None else {(x, y): st.Y[:, d0, dk[x], dk[y]] for x in (1, 2, 3) for y in (1, 2, 3) if x != y}
    for q, (r, (s, t)) in enumerate(((1, (2, 3)), (2, (1, 3)), (3, (1, 2)))):
        M = pats[q]
        if M is None:
            continue
        at_diag = a[s] * a[t]  # [j, k]
        if st.W3 is not None:
            M += (st.W3[:, d0] * a[r].mT) @ at_diag
        if st.W2 is not None and Y:
            W2 = st.W2[:, d0]
            M += (W2 * a[r].mT) @ np.diagonal(Y[(s, t)], axis1=-2, axis2=-1)  # Y_st[j, k, k]
            # Σ_j W2[i, j] (Y_rs[j, i, k] a_t[j, k] + Y_rt[j, i, k] a_s[j, k])
            M += np.einsum("eij,ejik->eik", W2, Y[(r, s)] * a[t][:, :, None, :] + Y[(r, t)] * a[s][:, :, None, :])
        if st.cw:
            g = np.zeros((E, 1, p))
            if st.s2 is not None:
                g += (st.s0[:, dk[r]] * st.s2[:, d0])[:, None, :] @ at_diag
            if Y:
                g += (st.s0[:, dk[r]] * st.s1[:, d0])[:, None, :] @ np.diagonal(Y[(s, t)], axis1=-2, axis2=-1)
            M += st.cw * g
        if push is not None:
            M += push[q]
    return pats


def _c_of(st: _Step, da, db, Aab):
    """c[i, i′, j] = W_ij σ″_{j;a} A_ab[j, i′] + c_W δ_{ii′} σ_{j;b} σ′_{j;a}, as (E, p·p, n)."""
    E, _, p, n = st.B.shape
    c = np.zeros((E, p, p, n))
    if st.W2 is not None:
        c += st.W2[:, da][:, :, None, :] * Aab.mT[:, None, :, :]
    if st.cw:
        d = np.arange(p)
        c[:, d, d, :] += st.cw * (st.s0[:, db] * st.s1[:, da])[:, None, :]
    return c.reshape(E, p * p, n)


def _ddII_parts(st: _Step, k):
    d1, d2, d3, d4 = k
    E, _, p, n = st.B.shape
    Aq, Ar = st.A[:, d1, d3], st.A[:, d2, d4]
    C1, C2 = _c_of(st, d1, d3, Aq), _c_of(st, d2, d4, Ar)
    L = C1 @ st.H[:, d1, d2]
    Z2 = None
    if st.Z is not None:
        L += st.Z[:, d1, d2, d3].transpose(0, 1, 3, 2).reshape(E, p * p, n)  # [(i1, i3), j′]
        Z2 = st.Z[:, d2, d1, d4].transpose(0, 1, 3, 2).reshape(E, p * p, n)  # [(i2, i4), j]
    MW = (Aq * (st.s1[:, d1] * st.s1[:, d2])[:, :, None]).mT @ Ar if st.cw else None  # [i3, i4]
    return C1, C2, L, Z2, MW


def _ddII_full(st: _Step, k, ddII):
    """dd_IIĤ^{(ℓ)} at inputs k = (δ1, δ2, δ3, δ4), (E, p, p, p, p) [i1, i2, i3, i4], from layer ℓ−1's."""
    E, _, p, n = st.B.shape
    C1, C2, L, Z2, MW = _ddII_parts(st, k)
    M = L @ C2.mT
    if Z2 is not None:
        M += C1 @ Z2.mT
    out = np.ascontiguousarray(M.reshape(E, p, p, p, p).transpose(0, 1, 3, 2, 4))  # [i1, i2, i3, i4]
    if MW is not None:
        d = np.arange(p)
        out[:, d, d] += st.cw * MW[:, None]
    if ddII is not None:
        T = ddII
        for axis, dx in ((4, k[3]), (3, k[2]), (2, k[1]), (1, k[0])):
            T = _contract(T, axis, st.B[:, dx])
        out += T
    return out


def _ddII_top(st: _Step, k, ddII):
    """The pair patterns (i i k k), (i k i k), (i k k i) of dd_IIĤ^{(ℓ)} at inputs k, (E, p, p) [i, k] each."""
    E, _, p, n = st.B.shape
    C1, C2, L, Z2, MW = _ddII_parts(st, k)
    L4, C14, C24 = (x.reshape(E, p, p, n) for x in (L, C1, C2))  # [i, i′, j]
    # M[(i1, i3), (i2, i4)] = Σ_j L[(i1, i3), j] C2[(i2, i4), j] + C1[(i1, i3), j] Z2[(i2, i4), j]
    S = (L4 * C24).sum(axis=-1)  # i1 = i2 = i, i3 = i4 = k
    T = np.einsum("eiij->eij", L4) @ np.einsum("ekkj->ekj", C24).mT  # i1 = i3 = i, i2 = i4 = k
    U = (L4 * C24.swapaxes(1, 2)).sum(axis=-1)  # i1 = i4 = i, i2 = i3 = k
    if Z2 is not None:
        Z4 = Z2.reshape(E, p, p, n)
        S += (C14 * Z4).sum(axis=-1)
        T += np.einsum("eiij->eij", C14) @ np.einsum("ekkj->ekj", Z4).mT
        U += (C14 * Z4.swapaxes(1, 2)).sum(axis=-1)
    if MW is not None:
        S += st.cw * np.diagonal(MW, axis1=-2, axis2=-1)[:, None, :]
    if ddII is not None:
        pS, pT, pU = _push_patterns(ddII, *(st.B[:, dx] for dx in k))
        S += pS
        T += pT
        U += pU
    return [S, T, U]


def _dd_orbits(N: int):
    """Representative input tuples: for dd_I one (δ0, δ1 ≤ δ2 ≤ δ3) per permutation class of the last
    three inputs; for dd_II one per pair {(δ1, δ2, δ3, δ4), (δ2, δ1, δ4, δ3)}."""
    import itertools

    ddI = [(d0,) + e for d0 in range(N) for e in itertools.combinations_with_replacement(range(N), 3)]
    ddII = [k for k in itertools.product(range(N), repeat=4) if k <= (k[1], k[0], k[3], k[2])]
    return ddI, ddII


def _walk_tuple(steps: dict, k: tuple, full_step, top_step, chosen, top: int, fill: dict):
    """Run one input tuple's ddNTK recursion up the layers; yield (ℓ, the three neuron-pair patterns
    [iijj, ijij, ijji] per network) at every chosen layer that has a ``fill`` entry. Below the top the
    full tensor is kept (the next layer needs it); the top layer computes only the patterns."""
    T = None
    for l in range(2, top + 1):
        if l < top:
            T = full_step(steps[l], k, T)
            if l not in chosen:
                continue
            dd = np.arange(T.shape[1])
            pats = [T[:, dd, dd][:, :, dd, dd], T.transpose(0, 1, 3, 2, 4)[:, dd, dd][:, :, dd, dd],
                    T.transpose(0, 1, 4, 2, 3)[:, dd, dd][:, :, dd, dd]]
        else:
            pats = top_step(steps[l], k, T)
        if fill.get(l) is None:
            continue
        yield l, pats


def _dd_features(steps: dict, N: int, chosen, top: int, fill: dict) -> None:
    """Run the ddNTK recursions tuple by tuple and write the pair averages FR, FS, FT, FU (E, N, N, N, N)
    of every chosen layer into ``fill[ℓ]`` (the top layer by patterns only)."""
    orbI, orbII = _dd_orbits(N)
    for k in orbI:
        d0, e1, e2, e3 = k
        need = (True, e2 != e1, e3 != e2)  # the other patterns repeat the first's entries of R
        top_step = lambda step, k, T, need=need: _ddI_top(step, k, T, need)
        for l, pats in _walk_tuple(steps, k, _ddI_full, top_step, chosen, top, fill):
            F = fill[l]["FR"]
            # dd_I_{iijj; δ0 a b c} = dd_I_{ijij; δ0 b a c} = dd_I_{ijji; δ0 b c a} (slot symmetry), and
            # R[δ0, a, b, c] = R[δ0, a, c, b]; write in a fixed order (later writes of equal entries win)
            for P, (x, y, z) in zip(pats[::-1], ((e3, e1, e2), (e2, e1, e3), (e1, e2, e3))):
                if P is not None:
                    F[:, d0, x, y, z] = F[:, d0, x, z, y] = _offdiag(P)
    for k in orbII:
        d1, d2, d3, d4 = k
        for l, pats in _walk_tuple(steps, k, _ddII_full, _ddII_top, chosen, top, fill):
            pS, pT, pU = (_offdiag(P) for P in pats)
            f = fill[l]
            for (a, b, c, d_) in ((d2, d1, d4, d3), (d1, d2, d3, d4)):  # the pair swap gives equal averages
                f["FS"][:, a, b, c, d_] = pS
                f["FT"][:, a, c, d_, b] = pT  # T[δ1, δ3, δ4, δ2]
                f["FU"][:, a, d_, b, c] = pU  # U[δ1, δ4, δ2, δ3]


def _first_pass(params: Parameters, X: np.ndarray, max_layer: int, keep: bool):
    """Yield (ℓ, zᵀ (E, N, n_ℓ), packed Ĥ, dĤ or None (ℓ = 1), _Step or None) for ℓ = 1..max_layer."""
    net = params.net
    derivs = _derivatives(net)
    N = X.shape[0]
    prev = None
    for l, zt, Hp in _forward_stream(params, X, max_layer):
        dH = step = None
        if l > 1:
            zp, Hf, dHp = prev
            cw = net.lambda_W[l - 1] / net.widths[l - 1]
            dH, step = _step(params.W(l), cw, zp, Hf, dHp, derivs, keep)
        yield l, zt, Hp, dH, step
        if l < max_layer:
            prev = (zt, _unpack(Hp, N), dH)


def _check_params(net, X, params, layers):
    X = v.inputs("X", X, net.input_dim)
    layers = engine._check_layers(net, layers)
    if not isinstance(params, Parameters):
        raise TypeError(f"params must come from sample_parameters, got {type(params).__name__}")
    if params.depth < layers[-1]:
        raise ValueError(f"params hold {params.depth} layers; layer {layers[-1]} was asked for")
    return X, layers


def forward_dntk(net: MLP, X, params: Parameters, layers=None) -> dict[int, np.ndarray]:
    """The per-network dNTK by the forward equation: ``{ℓ: dH}``, dH (E, n_ℓ, n_ℓ, n_ℓ, N, N, N).

    ``dH[e, i0, i1, i2, δ0, δ1, δ2]`` = dĤ^{(ℓ)}_{i0i1i2;δ0δ1δ2} (zero at ℓ = 1). ``params`` from
    :func:`~pdlt.empirical.ntk.sample_parameters`. Float64, numpy.
    """
    X, layers = _check_params(net, X, params, layers)
    out = {}
    E, N = params.W_raw[0].shape[0], X.shape[0]
    for l, _, _, dH, _ in _first_pass(params, X, layers[-1], False):
        if l in layers:
            n = net.n(l)
            out[l] = (np.zeros((E, n, n, n, N, N, N)) if dH is None
                      else np.ascontiguousarray(dH.transpose(0, 4, 5, 6, 1, 2, 3)))
    return out


def forward_ddntk(net: MLP, X, params: Parameters, layers=None) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The per-network ddNTKs by the forward equations: ``{ℓ: (ddI, ddII)}``.

    ``ddI[e, i0, i1, i2, i3, δ0, δ1, δ2, δ3]`` = dd_IĤ^{(ℓ)}, ``ddII[e, i1, i2, i3, i4, δ1, δ2, δ3, δ4]``
    = dd_IIĤ^{(ℓ)}, each (E, n_ℓ⁴, N⁴) (zero at ℓ = 1). Memory E N⁴ n⁴ per layer: small networks only.
    """
    X, layers = _check_params(net, X, params, layers)
    E, N = params.W_raw[0].shape[0], X.shape[0]
    steps = {l: st for l, _, _, _, st in _first_pass(params, X, layers[-1], True)}
    out = {}
    for l in layers:
        n = net.n(l)
        out[l] = (np.zeros((E, n, n, n, n, N, N, N, N)), np.zeros((E, n, n, n, n, N, N, N, N)))
    for k in np.ndindex(N, N, N, N):
        ddI = ddII = None
        for l in range(2, layers[-1] + 1):
            ddI, ddII = _ddI_full(steps[l], k, ddI), _ddII_full(steps[l], k, ddII)
            if l in out:
                out[l][0][(...,) + k] = ddI
                out[l][1][(...,) + k] = ddII
    return out


# ---------------------------------------------------------------------------------------------
# The oracle: automatic differentiation


def _autodiff(net: MLP, X, params: Parameters, layer, third: bool):
    import torch
    from torch.func import jacfwd, jacrev

    X = v.inputs("X", X, net.input_dim)
    layer = net.depth if layer is None else net.check_layer(layer)
    if params.depth < layer:
        raise ValueError(f"params hold {params.depth} layers; layer {layer} was asked for")
    sig = engine._torch_sigma(net.activation, torch)
    Xt = torch.as_tensor(X, dtype=torch.float64)
    w = net.widths
    sizes, lam = [], []
    for l in range(1, layer + 1):
        sizes += [w[l] * w[l - 1], w[l]]
        lam += [np.full(w[l] * w[l - 1], net.lambda_W[l - 1] / w[l - 1]), np.full(w[l], net.lambda_b[l - 1])]
    lam_t = torch.as_tensor(np.concatenate(lam))

    def f(theta):  # z^{(ℓ)} as (n_ℓ, N)
        parts = torch.split(theta, sizes)
        h = Xt.T
        for l in range(1, layer + 1):
            Wl = parts[2 * l - 2].reshape(w[l], w[l - 1])
            z = Wl @ h + parts[2 * l - 1][:, None]
            h = sig(z)
        return z

    E = params.W_raw[0].shape[0]
    results = []
    for e in range(E):
        theta = torch.cat([torch.as_tensor(a[e]).reshape(-1) for l in range(1, layer + 1)
                           for a in (params.W(l), params.b(l))])
        J = jacrev(f)(theta)  # (n, N, P)
        Hs = jacfwd(jacrev(f))(theta)  # (n, N, P, P)
        V = J * lam_t
        dH = torch.einsum("iapq,jbp,kcq->ijkabc", Hs, V, V)
        if not third:
            results.append(dH.numpy())
            continue
        T3 = jacfwd(jacfwd(jacrev(f)))(theta)  # (n, N, P, P, P)
        ddI = torch.einsum("iapqr,jbp,kcq,ldr->ijklabcd", T3, V, V, V)
        g = torch.einsum("iapq,kcq->iakcp", Hs, V)  # 𝓗_{i;a} v_{k;c}
        ddII = torch.einsum("iakcp,jbldp,p->ijklabcd", g, g, lam_t)
        results.append((ddI.numpy(), ddII.numpy()))
    if not third:
        return np.stack(results)
    return np.stack([r[0] for r in results]), np.stack([r[1] for r in results])


def autodiff_dntk(net: MLP, X, params: Parameters, layer: int | None = None) -> np.ndarray:
    """The per-network dNTK of layer ℓ (default L) by torch.func: (E, n_ℓ, n_ℓ, n_ℓ, N, N, N).

    Full Hessians of z^{(ℓ)} over the flat vector of all parameters of layers 1..ℓ (jacfwd of
    jacrev), contracted with v = λ∇z. Float64 on the CPU, one network at a time: tiny networks only.
    """
    return _autodiff(net, X, params, layer, False)


def autodiff_ddntk(net: MLP, X, params: Parameters, layer: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The per-network ddNTKs of layer ℓ (default L) by torch.func: (ddI, ddII), each (E, n_ℓ⁴, N⁴).

    Full third derivatives of z^{(ℓ)} (jacfwd of jacfwd of jacrev) over all parameters of layers
    1..ℓ, contracted with v = λ∇z; dd_II = (𝓗 v)ᵀ λ (𝓗 v). Tiny networks only (P³ entries per output).
    """
    return _autodiff(net, X, params, layer, True)


# ---------------------------------------------------------------------------------------------
# Features and estimators


def _offdiag(M: np.ndarray) -> np.ndarray:
    """Σ_{i≠j} M[e, i, j] / (n(n−1)) for M (E, n, n) (the diagonal zeroed, then summed row-major)."""
    E, n, _ = M.shape
    M = np.array(M)
    d = np.arange(n)
    M[:, d, d] = 0.0
    return M.reshape(E, n * n).sum(axis=-1) / (n * (n - 1.0))


def _features_d(zt: np.ndarray, Hp: np.ndarray, dH, N: int) -> dict[str, np.ndarray]:
    """Kernel, NTK diagonal and the dNTK pair features of one layer (E, ...)."""
    E, n = zt.shape[0], zt.shape[-1]
    _, _, idx = pair_index(N)
    z = zt.mT
    out = {"ZZ": (zt @ z) / float(n)}  # as ntk._features' "P", bitwise
    diag = np.diagonal(Hp, axis1=-2, axis2=-1)
    out["Hd"] = diag.mean(axis=-1)[:, idx]
    if dH is None or n < 2:
        out["FP"] = out["FQ"] = np.zeros((E, N, N, N, N))
        return out
    dd = np.arange(n)
    D1 = dH[..., :, dd, dd]  # [a, b, c, i, j] = dĤ_{i j j}
    D2 = np.ascontiguousarray(dH[..., dd, dd, :].swapaxes(-1, -2))  # [a, b, c, j, i] = dĤ_{i i j}
    D1[..., dd, dd] = 0.0
    D2[..., dd, dd] = 0.0
    rows = D1.sum(axis=-1)  # Σ_{j≠i} dĤ_{ijj}, [.., i]
    cols = D2.sum(axis=-1)  # Σ_{i≠j} dĤ_{iij}, [.., j]
    den = n * (n - 1.0)
    out["FP"] = (rows.reshape(E, N ** 3, n) @ z).reshape(E, N, N, N, N) / den
    out["FQ"] = (cols.reshape(E, N ** 3, n) @ z).reshape(E, N, N, N, N) / den
    return out


def _linear(name):
    return lambda m: m.fan_in * np.asarray(m[name])


_ESTIMATORS = {"G": (lambda m: np.asarray(m["ZZ"]), ("ZZ",)), "Theta": (lambda m: np.asarray(m["Hd"]), ("Hd",)),
               "P": (_linear("FP"), ("FP",)), "Q": (_linear("FQ"), ("FQ",)), "R": (_linear("FR"), ("FR",)),
               "S": (_linear("FS"), ("FS",)), "T": (_linear("FT"), ("FT",)), "U": (_linear("FU"), ("FU",))}


class _Name:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"DNTKFeature({self.name!r})"


class DNTKLayerMeasurement(engine.LayerView):
    """Estimates at one layer: ``P``, ``Q``, ``R``, ``S``, ``T``, ``U`` (N, N, N, N); ``Theta``, ``G`` (N, N).

    Index layouts are the module docstring's. ``H`` aliases ``Theta``, ``K`` aliases ``G``.
    """

    Theta = property(lambda self: self["Theta"])
    H = property(lambda self: self["Theta"])
    G = property(lambda self: self["G"])
    K = property(lambda self: self["G"])
    P = property(lambda self: self["P"])
    Q = property(lambda self: self["Q"])
    R = property(lambda self: self["R"])
    S = property(lambda self: self["S"])
    T = property(lambda self: self["T"])
    U = property(lambda self: self["U"])

    def __repr__(self) -> str:
        return f"<DNTKLayerMeasurement layer={self.layer} n={self.width} fan_in={self.fan_in}>"


class DNTKMeasurement(EstimatorMeasurement):
    """Result of :func:`measure_dntk`; ``.layer(l)`` gives the estimates at layer ℓ."""

    estimators = _ESTIMATORS
    pair_names = DNTK_OBSERVABLES
    layer_view = DNTKLayerMeasurement
    kind = "dNTK"

    def __init__(self, accumulation: engine.Accumulation, ddntk: bool):
        super().__init__(accumulation)
        self.ddntk = ddntk

    @property
    def observables(self) -> tuple[str, ...]:
        return ("G", "Theta") + (DNTK_OBSERVABLES if self.ddntk else ("P", "Q"))

    def _check(self, name: str, layer: int) -> None:
        if name in _DD and not self.ddntk:
            raise ValueError(f"{name} was not measured: measure_dntk(..., ddntk=True) measures R, S, T, U")

    def _header(self) -> dict:
        return dict(super()._header(), ddntk=self.ddntk)

    def __repr__(self) -> str:
        return (f"<DNTKMeasurement {self.net!r}, N={self.X.shape[0]}, networks={self.networks}, "
                f"layers={list(self.layers)}, ddntk={self.ddntk}>")


def default_dntk_shard_size(net: MLP, N: int, max_layer: int, networks: int, ddntk: bool) -> int:
    """Networks per shard: the forward equations' working set under :data:`engine.SHARD_BYTES`.

    Per network: the first pass holds ~8 arrays of N³n³ (dĤ and its contractions; with ``ddntk``
    Y and Z of every layer are kept), the ddNTK pass ~10 arrays of n⁴ (one input tuple at a time).
    """
    w = net.widths[:max_layer + 1]
    n = max(w[1:])
    per = 8 * N ** 3 * n ** 3 + 6 * N * N * n * n + sum(a * b + a for a, b in zip(w[1:], w[:-1]))
    if ddntk:
        per += 2 * max_layer * N ** 3 * n ** 3 + 10 * n ** 4
    return max(1, min(networks, engine.SHARD_BYTES // (8 * per)))


def measure_dntk(net: MLP, X, networks: int = 1000, seed: int = 0, *, layers=None, groups: int = 32,
                 shard_size: int | None = None, progress: bool | None = None,
                 ddntk: bool = True, checkpoint=None) -> DNTKMeasurement:
    """Measure the dNTK statistics P, Q and (``ddntk=True``) the ddNTK statistics R, S, T, U.

    The networks are those of :func:`~pdlt.empirical.measure_ntk` with the same seed (``Theta`` and
    ``G`` agree bitwise); estimators and index layouts are in the module docstring. ``layers``:
    layers to report (default all; the recursions always run from layer 1). ``groups``: jackknife
    groups. Results are bitwise independent of ``shard_size``. ``checkpoint``: a directory for
    shard-level resume (as :func:`~pdlt.empirical.measure_ntk`). Returns a :class:`DNTKMeasurement`.
    Cost per network and layer O(N³ n⁴) (dNTK) plus O(N⁴ n⁵) (ddNTKs), N inputs, width n.
    """
    if not isinstance(net, MLP):
        raise TypeError(f"net must be a pdlt.MLP, got {type(net).__name__}")
    X = v.inputs("X", X, net.input_dim)
    E, seed, G = engine._check_ensemble(networks, seed, groups)
    chosen = engine._check_layers(net, layers)
    if not isinstance(ddntk, bool | np.bool_):
        raise ValueError(f"ddntk must be True or False, got {ddntk!r}")
    ddntk = bool(ddntk)
    N = X.shape[0]
    shard = (default_dntk_shard_size(net, N, chosen[-1], E, ddntk) if shard_size is None
             else min(v.positive_int("shard_size", shard_size), E))
    names = _FEATURES_D + (_FEATURES_DD if ddntk else ())
    shapes = {"ZZ": (N, N), "Hd": (N, N)}
    shapes.update({k: (N,) * 4 for k in names if k not in shapes})
    sums = {(l, k): np.zeros((G,) + shapes[k]) for l in chosen for k in names}
    starts = engine._group_starts(E, G)
    store = engine._checkpoint_store(checkpoint, net, X, E, seed, shard, G, chosen, names,
                                    measurement="measure_dntk")

    def accumulate(a, b, gid, segments):
        params = sample_parameters(net, seed, a, b, chosen[-1])
        feats: dict = {}
        steps: dict = {}
        with np.errstate(all="ignore"):
            for l, zt, Hp, dH, st in _first_pass(params, X, chosen[-1], ddntk):
                if not (np.isfinite(zt).all() and np.isfinite(Hp).all()):
                    raise engine.PreactivationOverflowError(
                        f"non-finite preactivations or NTK at layer {l}; lower C_W, λ or the depth")
                if st is not None:
                    steps[l] = st
                if l in chosen:
                    feats[l] = _features_d(zt, Hp, dH, N)
            if ddntk:
                fill = {l: feats[l] if net.n(l) >= 2 else None for l in chosen}
                for l in chosen:
                    for k in _FEATURES_DD:
                        feats[l][k] = np.zeros((b - a, N, N, N, N))
                _dd_features(steps, N, chosen, chosen[-1], fill)
            del steps
        for l in chosen:
            for k, F in feats[l].items():
                if not np.isfinite(F).all():
                    raise engine.PreactivationOverflowError(
                        f"non-finite dNTK feature {k} at layer {l}; lower C_W, λ or the depth")
                engine._add_by_group(sums[(l, k)], F, gid, segments)

    show = (E * chosen[-1] >= 200 and sys.stderr.isatty()) if progress is None else bool(progress)
    with engine._progress_bar(show, E, f"dNTK: {E} networks, depth {chosen[-1]}") as bar:
        engine._shard_loop(E, shard, starts, sums, store, bar, accumulate)
    acc = engine.Accumulation(net, X, E, seed, G, "naive", "numpy", "cpu", shard, chosen,
                              tuple(_Name(k) for k in names), sums, np.diff(starts))
    return DNTKMeasurement(acc, ddntk)
