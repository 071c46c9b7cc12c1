r"""The observables table: each theoretical observable paired with its empirical estimator.

Every row names one quantity, how the theory computes it (:func:`pdlt.theory.theory`), how the
ensemble measures it (:func:`pdlt.empirical.measure`), and the explicit O(1/n²) allowance with which
the two are compared: a twin agrees when, entry by entry,

.. math:: |\text{measured} - \text{theory}| \le k\,\text{stderr} + \text{allowance}.

The allowance is the size of the first neglected order, estimated as the *square* of the relative
1/n effect the theory itself predicts at that layer:
:math:`\epsilon_\ell = \max\big(|V^{(\ell)}|/(n_{\ell-1}K^2),\ |G^{\{1\}(\ell)}|/(n_{\ell-1}K)\big)`,
so the kernel gets :math:`\epsilon_\ell^2\,K` and the vertex (whose own 1/n correction is relative
order ε) gets :math:`\epsilon_\ell\,|V|`, i.e. :math:`n\cdot\epsilon^2 K^2`. For scale-invariant
activations this matches the exact next order, e.g. ReLU's
:math:`E[z^4]/(3E[z^2]^2) = \prod(1 + 5/n_{\ell'})` (formula sheet §4) to within a factor 2.

Many entries are compared at once (for N = 3 and depth 8, 216 distinct entries of G and V), so the
largest |z| of a correct formula exceeds 4 in about 1% of ensembles.  :func:`family_threshold`
gives the Bonferroni threshold max(4, Φ⁻¹(1 − α/2m)) for m distinct comparisons at family-wise
error α = 10⁻³ (4.6 for m = 216); 4σ is the floor.

Where ε_ℓ > :data:`EPS_MAX` the 1/n expansion itself has broken down (e.g. ReLU at ℓ/n ≳ 0.1,
where ν ℓ/n ≳ ½): such rows are marked ``valid = False`` and are reported, not judged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import special

from .estimate import Estimate
from .theory.state import LayerState

__all__ = ["Twin", "TABLE", "EPS_MAX", "first_order_effect", "compare", "Comparison",
           "family_threshold", "distinct_entries"]

#: Largest relative first-order effect ε at which the 1/n expansion is still judged.
EPS_MAX = 0.5


def first_order_effect(state: LayerState) -> float:
    r"""ε_ℓ: the largest relative 1/n effect the theory predicts at this layer (dimensionless)."""
    K = np.abs(state.K)
    k = float(np.max(np.diag(K)))
    n = state.n_prev
    return max(float(np.max(np.abs(state.V))) / (n * k * k), float(np.max(np.abs(state.G1))) / (n * k))


@dataclass(frozen=True)
class Twin:
    """One row of the observables table.

    theory(state) → array; measured(layer_measurement) → Estimate; allowance(state) → float.
    """

    name: str
    description: str
    theory: Callable[[LayerState], np.ndarray]
    measured: Callable[[object], Estimate]
    allowance: Callable[[LayerState], float]


def _kernel_scale(state: LayerState) -> float:
    return float(np.max(np.diag(np.abs(state.K))))


TABLE: tuple[Twin, ...] = (
    Twin("G", "two-point function E[z_a z_b] vs K + G1/n_{l-1} (book §4.3)",
         lambda s: s.G, lambda m: m.G,
         lambda s: first_order_effect(s) ** 2 * _kernel_scale(s)),
    Twin("V", "four-point vertex n_{l-1} Cov(z_i z_i, z_j z_j) vs V (book §4.1)",
         lambda s: s.V, lambda m: m.V,
         lambda s: first_order_effect(s) * float(np.max(np.abs(s.V)))),
)


@dataclass(frozen=True)
class Comparison:
    """Theory against measurement for one observable at one layer."""

    name: str
    layer: int
    theory: np.ndarray
    measured: Estimate
    allowance: float
    effect: float

    @property
    def valid(self) -> bool:
        """Whether the 1/n expansion applies at this layer (ε ≤ EPS_MAX)."""
        return self.effect <= EPS_MAX

    @property
    def z(self) -> np.ndarray:
        """Entrywise z-scores after the allowance is subtracted from |difference|."""
        return self.measured.z_score(self.theory, self.allowance)

    def max_abs_z(self) -> float:
        return float(np.max(np.abs(self.z)))

    def ok(self, k: float = 4.0) -> bool:
        return self.max_abs_z() <= k

    def to_dict(self) -> dict:
        return {"name": self.name, "layer": self.layer, "theory": np.asarray(self.theory).tolist(),
                "measured": self.measured.to_dict(), "allowance": self.allowance,
                "first_order_effect": self.effect, "valid": self.valid, "max_abs_z": self.max_abs_z()}


def compare(th, m, layers=None, names=None) -> list[Comparison]:
    """Compare a :class:`~pdlt.theory.Theory` with a measurement of the same network and inputs."""
    net = th.net
    layers = range(1, net.depth + 1) if layers is None else [net.check_layer(l) for l in layers]
    rows = [t for t in TABLE if names is None or t.name in names]
    out = []
    for ell in layers:
        state, meas = th.layer(ell), m.layer(ell)
        eps = first_order_effect(state)
        for t in rows:
            out.append(Comparison(t.name, ell, t.theory(state), t.measured(meas), t.allowance(state), eps))
    return out


def distinct_entries(name: str, N: int) -> int:
    """Number of distinct entries of an observable: N(N+1)/2 for G; P(P+1)/2 with P = N(N+1)/2 for V."""
    P = N * (N + 1) // 2
    return {"G": P, "V": P * (P + 1) // 2}[name]


def family_threshold(rows: list[Comparison], alpha: float = 1e-3, floor: float = 4.0) -> float:
    r"""Bonferroni threshold for all valid rows: max(floor, Φ⁻¹(1 − α/(2m))), m = distinct comparisons."""
    m = sum(distinct_entries(r.name, np.shape(r.theory)[0]) for r in rows if r.valid)
    if m == 0:
        return floor
    return max(floor, float(-special.ndtri(alpha / (2 * m))))
