"""The immutable per-layer state that flows through depth (the book's RG flow, Ch. 4)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LayerState"]


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
    """

    layer: int
    n_prev: int
    K: np.ndarray
    V: np.ndarray
    G1: np.ndarray

    def __post_init__(self):
        for name in ("K", "V", "G1"):
            arr = np.array(getattr(self, name), dtype=np.float64)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    @property
    def G(self) -> np.ndarray:
        r"""The metric to O(1/n): :math:`G = K + G^{\{1\}}/n_{ℓ−1}`, the twin of the measured E[z z]."""
        return self.K + self.G1 / self.n_prev

    def to_dict(self) -> dict:
        return {"layer": self.layer, "n_prev": self.n_prev, "K": self.K.tolist(), "V": self.V.tolist(),
                "G1": self.G1.tolist(), "G": self.G.tolist()}
