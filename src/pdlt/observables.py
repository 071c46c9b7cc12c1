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

The NTK rows (:data:`NTK_TABLE`: Θ, A, B, D, F, book Ch. 8; measured by
:func:`pdlt.empirical.ntk.measure_ntk`, index layouts as on :class:`~pdlt.theory.state.LayerState`)
compare a leading-order theory, so their allowance is the first neglected order itself,
ε_ℓ·max|X| (relative O(1/n)). :func:`compare` uses the rows that both the theory and the
measurement carry.

Where ε_ℓ > :data:`EPS_MAX` the 1/n expansion itself has broken down (e.g. ReLU at ℓ/n ≳ 0.1,
where ν ℓ/n ≳ ½): such rows are marked ``valid = False`` and are reported, not judged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import special

from .estimate import Estimate
from .theory.state import DDNTK_FIELDS, DNTK_FIELDS, LayerState

__all__ = ["Twin", "TABLE", "NTK_TABLE", "NTK_ROWS", "EPS_MAX", "first_order_effect", "compare", "Comparison",
           "family_threshold", "distinct_entries", "DNTK_TABLE", "DNTK_ROWS"]

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


def _scale(field: str):
    def f(state: LayerState) -> float:
        return float(np.max(np.abs(getattr(state, field))))
    return f


def _ntk_unit(name: str, state: LayerState) -> float:
    """Natural size of an NTK observable: |Θ| for Θ, |Θ|² for A and B, |Θ|·K for D and F."""
    theta = float(np.max(np.abs(state.Theta)))
    return {"Theta": theta, "A": theta ** 2, "B": theta ** 2}.get(name, theta * _kernel_scale(state))


def _ntk_twin(name: str, description: str) -> Twin:
    # The NTK theory is leading order: Θ, A, B, D, F carry no 1/n correction, so the first neglected
    # order is relative O(1/n): allowance ε_ℓ·max|X| (for ReLU at L = 3, n = 256 the measured
    # deviations of A, B, D, F are 1–3.5%, ε = 3.9%), plus 10⁻⁹ of the observable's natural size
    # for rounding (at ℓ = 1 everything is deterministic and the jackknife stderr is 0 or rounding).
    return Twin(name, description, lambda s: getattr(s, name, None), lambda m: getattr(m, name),
                lambda s: first_order_effect(s) * _scale(name)(s) + 1e-9 * _ntk_unit(name, s))


TABLE: tuple[Twin, ...] = (
    Twin("G", "two-point function E[z_a z_b] vs K + G1/n_{l-1} (book §4.3)",
         lambda s: s.G, lambda m: m.G,
         lambda s: first_order_effect(s) ** 2 * _kernel_scale(s)),
    Twin("V", "four-point vertex n_{l-1} Cov(z_i z_i, z_j z_j) vs V (book §4.1)",
         lambda s: s.V, lambda m: m.V,
         lambda s: first_order_effect(s) * float(np.max(np.abs(s.V)))),
)

#: The NTK rows (book Ch. 8; formula sheet §5), measured by :func:`pdlt.empirical.ntk.measure_ntk`
#: (whose measurement also carries G); :func:`compare` uses them when both sides have them.
NTK_TABLE: tuple[Twin, ...] = (
    _ntk_twin("Theta", "NTK mean E[H_ii;ab] vs Theta (book Ch. 8; sheet §5)"),
    _ntk_twin("A", "NTK fluctuation n_{l-1} Cov(H_ii;ab, H_jj;cd), i != j, vs A (sheet §5)"),
    _ntk_twin("B", "NTK fluctuation B[a,b,c,d] = n_{l-1} E[H_ij;ac H_ij;bd], i != j, vs B (sheet §5)"),
    _ntk_twin("D", "NTK-z correlation n_{l-1} Cov(H_ii;ab, z_j;c z_j;d), i != j, vs D (sheet §5)"),
    _ntk_twin("F", "NTK-z correlation F[a,b,c,d] = n_{l-1} E[H_ij;ac z_i;b z_j;d], i != j, vs F (sheet §5)"),
)

NTK_ROWS = tuple(t.name for t in NTK_TABLE)

#: The dNTK (P, Q) and ddNTK (R, S, T, U) statistics share one natural size per family: for ReLU at
#: criticality P = 0 at leading order but not at O(1/n) (measured P = 0.032 ± 0.0004 against
#: Q = 2.10 at ℓ = 3, n = 64), so the first neglected order is ε times the family's largest entry.
_FAMILIES = {name: family for family in (DNTK_FIELDS, DDNTK_FIELDS) for name in family}


def _family_scale(name: str):
    def f(state: LayerState) -> float:
        return max(float(np.max(np.abs(getattr(state, k)))) for k in _FAMILIES[name])
    return f


def _dntk_twin(name: str, description: str) -> Twin:
    # leading order, like the NTK rows; 1e-9 of the family's size covers rounding where everything
    # is exact (ℓ ≤ 2 for several of them)
    return Twin(name, description, lambda s: getattr(s, name, None), lambda m: getattr(m, name),
                lambda s: (first_order_effect(s) + 1e-9) * _family_scale(name)(s))


#: The dNTK and ddNTK rows (book Ch. 11, ∞; formula sheet §6), measured by
#: :func:`pdlt.empirical.dntk.measure_dntk`; layouts on :class:`~pdlt.theory.state.LayerState`.
DNTK_TABLE: tuple[Twin, ...] = (
    _dntk_twin("P", "dNTK-z correlation P[d0,d1,d2,d3] = n_{l-1} E[dH_ijj;d0d1d2 z_i;d3], i != j (Ch. 11)"),
    _dntk_twin("Q", "dNTK-z correlation Q[d0,d1,d2,d3] = n_{l-1} E[dH_iij;d0d1d2 z_j;d3], i != j (Ch. 11)"),
    _dntk_twin("R", "ddNTK-I mean R[d0,d1,d2,d3] = n_{l-1} E[ddI_iijj;d0d1d2d3], i != j (Ch. inf)"),
    _dntk_twin("S", "ddNTK-II mean S[d1,d2,d3,d4] = n_{l-1} E[ddII_iijj;d1d2d3d4], i != j (Ch. inf)"),
    _dntk_twin("T", "ddNTK-II mean T[d1,d3,d4,d2] = n_{l-1} E[ddII_ijij;d1d2d3d4], i != j (Ch. inf)"),
    _dntk_twin("U", "ddNTK-II mean U[d1,d4,d2,d3] = n_{l-1} E[ddII_ijji;d1d2d3d4], i != j (Ch. inf)"),
)

DNTK_ROWS = tuple(t.name for t in DNTK_TABLE)


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
    every = TABLE + NTK_TABLE + DNTK_TABLE
    rows = [t for t in every if names is None or t.name in names]
    if names is not None:
        unknown = set(names) - {t.name for t in every}
        if unknown:
            raise ValueError(f"unknown observables {sorted(unknown)}; the tables have {[t.name for t in every]}")
    out = []
    for ell in layers:
        state, meas = th.layer(ell), m.layer(ell)
        eps = first_order_effect(state)
        for t in rows:
            # a kernel measurement has no NTK rows, an NTK measurement no V; a theory run without
            # the NTK has Theta = None, a dNTK measurement without ddNTKs raises for R..U: such
            # rows are skipped unless asked for by name
            if (not hasattr(type(meas), t.name) or t.theory(state) is None
                    or (t.name in DDNTK_FIELDS and not getattr(m, "ddntk", True))):
                if names is not None:
                    raise ValueError(f"{t.name} is not available in both the theory and the measurement")
                continue
            out.append(Comparison(t.name, ell, t.theory(state), t.measured(meas), t.allowance(state), eps))
    return out


def _orbits(N: int, perms) -> int:
    """Number of distinct entries of an (N,)*4 array invariant under these index permutations."""
    from itertools import product

    seen, count = set(), 0
    for idx in product(range(N), repeat=4):
        if idx in seen:
            continue
        count += 1
        stack = [idx]
        while stack:
            cur = stack.pop()
            if cur in seen:
                continue
            seen.add(cur)
            stack.extend(tuple(cur[p] for p in perm) for perm in perms)
    return count


# index symmetries (LayerState docstring): A like V; B[p,q,r,s] = B[q,p,s,r] = B[r,s,p,q];
# D[a,b,c,d] = D[b,a,c,d] = D[a,b,d,c]; F[p,q,r,s] = F[r,s,p,q]. From the definitions (dĤ symmetric
# in its last two (neuron, input) pairs, dd_I in its last three, dd_II under (1,3) ↔ (2,4)):
# P[a,b,c,d] = P[a,c,b,d]; R[a,b,c,d] = R[a,b,d,c]; S[a,b,c,d] = S[b,a,d,c]; T[a,b,c,d] = T[d,c,b,a];
# U[a,b,c,d] = U[c,d,a,b]; Q has none.
_SYMMETRIES = {"A": ((1, 0, 2, 3), (0, 1, 3, 2), (2, 3, 0, 1)), "B": ((1, 0, 3, 2), (2, 3, 0, 1)),
               "D": ((1, 0, 2, 3), (0, 1, 3, 2)), "F": ((2, 3, 0, 1),), "P": ((0, 2, 1, 3),), "Q": (),
               "R": ((0, 1, 3, 2),), "S": ((1, 0, 3, 2),), "T": ((3, 2, 1, 0),), "U": ((2, 3, 0, 1),)}


def distinct_entries(name: str, N: int) -> int:
    """Number of distinct entries of an observable: N(N+1)/2 for G and Theta; P(P+1)/2 with
    P = N(N+1)/2 for V and A; the orbits of their index symmetries for B, D, F."""
    P = N * (N + 1) // 2
    if name in ("G", "Theta"):
        return P
    if name in ("V", "A"):
        return P * (P + 1) // 2
    return _orbits(N, _SYMMETRIES[name])


def family_threshold(rows: list[Comparison], alpha: float = 1e-3, floor: float = 4.0) -> float:
    r"""Bonferroni threshold for all valid rows: max(floor, Φ⁻¹(1 − α/(2m))), m = distinct comparisons."""
    m = sum(distinct_entries(r.name, np.shape(r.theory)[0]) for r in rows if r.valid)
    if m == 0:
        return floor
    return max(floor, float(-special.ndtri(alpha / (2 * m))))
