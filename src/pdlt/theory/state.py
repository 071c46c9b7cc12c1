"""The immutable per-layer state that flows through depth (the book's RG flow, Ch. 4)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LayerState", "NTK_FIELDS", "DNTK_FIELDS", "DDNTK_FIELDS", "OPTIONAL_FIELDS"]

#: The NTK fields of a :class:`LayerState` (None when the NTK was not computed).
NTK_FIELDS = ("Theta", "A", "B", "D", "F")
#: The dNTK fields (None unless ``pdlt.theory(..., dntk=True)``).
DNTK_FIELDS = ("P", "Q")
#: The ddNTK fields (None unless ``pdlt.theory(..., ddntk=True)``).
DDNTK_FIELDS = ("R", "S", "T", "U")
#: Every field that may be None.
OPTIONAL_FIELDS = NTK_FIELDS + DNTK_FIELDS + DDNTK_FIELDS


@dataclass(frozen=True)
class LayerState:
    r"""Macroscopic observables of layer ℓ for N inputs.

    Attributes
    ----------
    layer : ℓ (1..L).
    n_prev : n_{ℓ−1}, the width that sets the 1/n expansion of this layer (n_0 for ℓ = 1).
    K : (N, N) leading-order kernel K^{(ℓ)}.
    V : (N, N, N, N) four-point vertex V^{(ℓ)}_{(α1α2)(α3α4)}: the connected
        :math:`E[z_{i;α1}z_{i;α2}z_{j;α3}z_{j;α4}]` for i ≠ j is V/n_{ℓ−1} + O(1/n²) (book §4.1).
    G1 : (N, N) the 1/n correction G^{\{1\}(ℓ)} to the kernel (book §4.3):
        :math:`E[z_{i;α1} z_{i;α2}] = K + G^{\{1\}}/n_{ℓ−1} + O(1/n^2)`.

    NTK fields (book Ch. 8; :mod:`pdlt.theory.ntk`), None when not computed.  Write
    :math:`\hat H_{i_1i_2;α_1α_2}` for the NTK of layer ℓ (neurons i, inputs α) and
    :math:`Δ\hat H = \hat H - E[\hat H]`; n ≡ n_{ℓ−1}; every statement holds to leading order.

    Theta : (N, N) mean NTK, :math:`E[\hat H_{i_1i_2;α_1α_2}] = δ_{i_1i_2} Θ_{α_1α_2} + O(1/n)`.
        Θ^{(1)} = λ_b^{(1)} + λ_W^{(1)} X Xᵀ/n_0 exactly.
    A, B : (N, N, N, N) NTK–NTK covariance, book layout
        :math:`n\,E[Δ\hat H_{i_1i_2;α_1α_2} Δ\hat H_{i_3i_4;α_3α_4}] =
        δ_{i_1i_2}δ_{i_3i_4} A[α_1,α_2,α_3,α_4] + δ_{i_1i_3}δ_{i_2i_4} B[α_1,α_3,α_2,α_4]
        + δ_{i_1i_4}δ_{i_2i_3} B[α_1,α_4,α_2,α_3]`.
        So for i ≠ j: ``A[a,b,c,d]`` = n Cov(Ĥ_{ii;ab}, Ĥ_{jj;cd}); ``B[a,c,b,d]`` = n E[Ĥ_{ij;ab} Ĥ_{ij;cd}]
        (B's first two indices are the inputs carried by neuron i — one from each Ĥ — and the last two
        those carried by neuron j); n Var(Ĥ_{ii;ab}) = A[a,b,a,b] + B[a,a,b,b] + B[a,b,b,a].
        Symmetries: A[a,b,c,d] = A[b,a,c,d] = A[c,d,a,b]; B[a,c,b,d] = B[c,a,d,b] = B[b,d,a,c].
    D, F : (N, N, N, N) NTK–preactivation cross-correlation, book layout
        :math:`n\,E[Δ\hat H_{i_1i_2;α_1α_2} z_{i_3;α_3} z_{i_4;α_4}] =
        δ_{i_1i_2}δ_{i_3i_4} D[α_1,α_2,α_3,α_4] + δ_{i_1i_3}δ_{i_2i_4} F[α_1,α_3,α_2,α_4]
        + δ_{i_1i_4}δ_{i_2i_3} F[α_1,α_4,α_2,α_3]`.
        So for i ≠ j: ``D[a,b,c,d]`` = n Cov(Ĥ_{ii;ab}, z_{j;c} z_{j;d}) — the first pair are NTK inputs,
        the second pair z inputs; ``F[a,c,b,d]`` = n E[Ĥ_{ij;ab} z_{i;c} z_{j;d}] — F's index 0 is the
        NTK input on neuron i and index 1 the z input on neuron i, indices 2, 3 the same for neuron j.
        Symmetries: D[a,b,c,d] = D[b,a,c,d] = D[a,b,d,c]; F[a,c,b,d] = F[b,d,a,c].
    A, B, D, F vanish at ℓ = 1 (the first-layer NTK is deterministic).

    dNTK fields (book Ch. 11; :mod:`pdlt.theory.dntk`), None when not computed.  With λ the
    learning-rate tensor, :math:`\widehat{dH}_{i_0i_1i_2;δ_0δ_1δ_2} = \sum λ_{μ_1ν_1}λ_{μ_2ν_2}
    \frac{d^2z_{i_0;δ_0}}{dθ_{μ_1}dθ_{μ_2}}\frac{dz_{i_1;δ_1}}{dθ_{ν_1}}\frac{dz_{i_2;δ_2}}{dθ_{ν_2}}` (E[dĤ] = 0):

    P, Q : (N, N, N, N), :math:`n\,E[\widehat{dH}_{i_0i_1i_2;δ_0δ_1δ_2} z_{i_3;δ_3}] =
        δ_{i_0i_3}δ_{i_1i_2} P[δ_0,δ_1,δ_2,δ_3] + δ_{i_0i_1}δ_{i_2i_3} Q[δ_0,δ_1,δ_2,δ_3]
        + δ_{i_0i_2}δ_{i_1i_3} Q[δ_0,δ_2,δ_1,δ_3]`.
        So for i ≠ j: ``P[a,b,c,d]`` = n E[dĤ_{ijj;abc} z_{i;d}] (index 0 is the input of the
        second-derivative neuron, 1 and 2 the first-derivative inputs, 3 the z input);
        ``Q[a,b,c,d]`` = n E[dĤ_{iij;abc} z_{j;d}].  Symmetry: P[a,b,c,d] = P[a,c,b,d].

    ddNTK fields (book Ch. ∞), None when not computed.  With dd_IĤ (third derivative of z_{i0} against
    three first derivatives) and dd_IIĤ (two second derivatives and two first derivatives, formula
    sheet §6):

    R : (N, N, N, N), :math:`n\,E[dd_I\hat H_{i_0i_1i_2i_3;δ_0..δ_3}] = δ_{i_0i_1}δ_{i_2i_3}R[δ_0,δ_1,δ_2,δ_3]
        + δ_{i_0i_2}δ_{i_3i_1}R[δ_0,δ_2,δ_3,δ_1] + δ_{i_0i_3}δ_{i_1i_2}R[δ_0,δ_3,δ_1,δ_2]`;
        ``R[a,b,c,d]`` = n E[dd_IĤ_{iijj;abcd}] (i ≠ j).  Symmetry: R[a,b,c,d] = R[a,b,d,c].
    S, T, U : (N, N, N, N), :math:`n\,E[dd_{II}\hat H_{i_1i_2i_3i_4;δ_1..δ_4}] =
        δ_{i_1i_2}δ_{i_3i_4}S[δ_1,δ_2,δ_3,δ_4] + δ_{i_1i_3}δ_{i_4i_2}T[δ_1,δ_3,δ_4,δ_2]
        + δ_{i_1i_4}δ_{i_2i_3}U[δ_1,δ_4,δ_2,δ_3]`.
        So for i ≠ j: ``S[a,b,c,d]`` = n E[dd_IIĤ_{iijj;abcd}]; ``T[a,b,c,d]`` = n E[dd_IIĤ_{ijij;adbc}]
        (slots 0, 1: the second- and first-derivative inputs of neuron i, slots 2, 3: the first- and
        second-derivative inputs of neuron j); ``U[a,b,c,d]`` = n E[dd_IIĤ_{ijji;acdb}].
        Symmetries (from dd_IIĤ_{i1i2i3i4;δ1δ2δ3δ4} = dd_IIĤ_{i2i1i4i3;δ2δ1δ4δ3}):
        S[a,b,c,d] = S[b,a,d,c]; T[a,b,c,d] = T[d,c,b,a]; U[a,b,c,d] = U[c,d,a,b].
    P, …, U vanish at ℓ = 1 (z^{(1)} is linear in the parameters).
    """

    layer: int
    n_prev: int
    K: np.ndarray
    V: np.ndarray
    G1: np.ndarray
    Theta: np.ndarray | None = None
    A: np.ndarray | None = None
    B: np.ndarray | None = None
    D: np.ndarray | None = None
    F: np.ndarray | None = None
    P: np.ndarray | None = None
    Q: np.ndarray | None = None
    R: np.ndarray | None = None
    S: np.ndarray | None = None
    T: np.ndarray | None = None
    U: np.ndarray | None = None

    def __post_init__(self):
        for name in ("K", "V", "G1") + OPTIONAL_FIELDS:
            if getattr(self, name) is None and name in OPTIONAL_FIELDS:
                continue
            arr = np.array(getattr(self, name), dtype=np.float64)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    @property
    def G(self) -> np.ndarray:
        r"""The metric to O(1/n): :math:`G = K + G^{\{1\}}/n_{ℓ−1}`, the twin of the measured E[z z]."""
        return self.K + self.G1 / self.n_prev

    def to_dict(self) -> dict:
        d = {"layer": self.layer, "n_prev": self.n_prev, "K": self.K.tolist(), "V": self.V.tolist(),
             "G1": self.G1.tolist(), "G": self.G.tolist()}
        for name in OPTIONAL_FIELDS:
            if getattr(self, name) is not None:
                d[name] = getattr(self, name).tolist()
        return d
