"""The immutable per-layer state that flows through depth (the book's RG flow, Ch. 4)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LayerState", "NTK_FIELDS"]

#: The NTK fields of a :class:`LayerState` (None when the NTK was not computed).
NTK_FIELDS = ("Theta", "A", "B", "D", "F")


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

    def __post_init__(self):
        for name in ("K", "V", "G1") + NTK_FIELDS:
            if getattr(self, name) is None and name in NTK_FIELDS:
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
        for name in NTK_FIELDS:
            if getattr(self, name) is not None:
                d[name] = getattr(self, name).tolist()
        return d
