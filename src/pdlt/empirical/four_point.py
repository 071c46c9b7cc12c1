r"""The measured four-point vertex V and single-neuron fourth moment M4 (book §4.1–4.2, formula sheet §2).

The connected four-point function of layer ℓ is, for distinct neurons i ≠ j,

.. math:: \operatorname{Cov}\big(z_{i;\alpha_1} z_{i;\alpha_2},\, z_{j;\alpha_3} z_{j;\alpha_4}\big)
          = \frac{1}{n_{\ell-1}} V^{(\ell)}_{(\alpha_1\alpha_2)(\alpha_3\alpha_4)} + O(1/n^2),

so :math:`\hat V = n_{\ell-1}\,\widehat{\operatorname{Cov}}`. Per network (n = n_ℓ, z of shape n×N):

.. math:: P = \tfrac1n z^\top z,\qquad
          M4_{abcd} = \tfrac1n \sum_i z_{ia} z_{ib} z_{ic} z_{id},\qquad
          T_{abcd} = \frac{1}{n(n-1)}\sum_{i\ne j} z_{ia} z_{ib} z_{jc} z_{jd}
                   = \frac{n\,P_{ab}P_{cd} - M4_{abcd}}{n-1}.

Over E networks, :math:`\hat V = n_{\ell-1}\big[\overline{T} - \widehat{\mu\otimes\mu}\big]` with the
unbiased product of means :math:`\widehat{\mu\otimes\mu} = (E\,\bar P\otimes\bar P - \overline{P\otimes P})/(E-1)`,
so that :math:`\hat V / n_{\ell-1}` is exactly unbiased for the i ≠ j covariance (the plain
:math:`\bar P\otimes\bar P` would carry an O(1/E) bias). Needs n_ℓ ≥ 2: one neuron has no i ≠ j pair.

M4 and P⊗P are symmetric under α1↔α2, α3↔α4, so both features are stored packed over pairs
α ≤ β (shape (N(N+1)/2, N(N+1)/2)); the estimators unpack them to (N, N, N, N). The sum over i of the
pair products is one batched matrix product, O(n_ℓ N⁴/4) per network.
"""

from __future__ import annotations

import math

import numpy as np

from .kernel import pair_index

__all__ = ["PairedFourthMoment", "PairMomentSquare", "fourth_moment_estimate", "vertex_estimate",
           "unpack_pairs"]


def _samples_from_pairs(p: int) -> int:
    """N such that p = N(N+1)/2."""
    N = (math.isqrt(8 * p + 1) - 1) // 2
    if N * (N + 1) // 2 != p:
        raise ValueError(f"{p} is not a number of sample pairs N(N+1)/2")
    return N


def unpack_pairs(packed: np.ndarray, N: int) -> np.ndarray:
    """Expand a pair-packed array (..., p, p), p = N(N+1)/2, to (..., N, N, N, N)."""
    _, _, idx = pair_index(N)
    return packed[..., idx[:, :, None, None], idx[None, None, :, :]]


class PairedFourthMoment:
    r"""Feature ``"M4"``: :math:`\frac1{n}\sum_i (z_{ia}z_{ib})(z_{ic}z_{id})`, pair-packed.

    Input z: (E, n_ℓ, N). Output: (E, p, p) with p = N(N+1)/2.
    """

    name = "M4"

    def shape(self, N: int) -> tuple[int, ...]:
        p = N * (N + 1) // 2
        return (p, p)

    def __call__(self, z, backend):
        ia, ib, _ = pair_index(z.shape[-1])
        zt = z.mT  # (E, N, n): gathering whole neuron rows is far faster than gathering columns
        zz = backend.take(zt, ia, axis=1) * backend.take(zt, ib, axis=1)
        return (zz @ zz.mT) / z.shape[-2]

    def __repr__(self) -> str:
        return "PairedFourthMoment()"

    def __eq__(self, other):
        return type(other) is type(self)

    def __hash__(self):
        return hash(type(self))


class PairMomentSquare:
    r"""Feature ``"PP"``: one network's :math:`P_{ab}P_{cd}` with :math:`P = z^\top z/n`, pair-packed.

    Input z: (E, n_ℓ, N). Output: (E, p, p) with p = N(N+1)/2.
    """

    name = "PP"

    def shape(self, N: int) -> tuple[int, ...]:
        p = N * (N + 1) // 2
        return (p, p)

    def __call__(self, z, backend):
        N = z.shape[-1]
        ia, ib, _ = pair_index(N)
        P = (z.mT @ z) / z.shape[-2]
        Pp = backend.take(P.reshape(P.shape[0], N * N), ia * N + ib, axis=1)
        return Pp[..., :, None] * Pp[..., None, :]

    def __repr__(self) -> str:
        return "PairMomentSquare()"

    def __eq__(self, other):
        return type(other) is type(self)

    def __hash__(self):
        return hash(type(self))


def fourth_moment_estimate(means) -> np.ndarray:
    r"""E[z_{i;a} z_{i;b} z_{i;c} z_{i;d}] (one neuron), shape (N, N, N, N), from the mean of ``"M4"``."""
    M4 = np.asarray(means["M4"], dtype=np.float64)
    return unpack_pairs(M4, _samples_from_pairs(M4.shape[-1]))


def vertex_estimate(means) -> np.ndarray:
    r"""V̂^{(ℓ)} = n_{ℓ−1} [ mean T − (E P̄⊗P̄ − mean P⊗P)/(E − 1) ], shape (N, N, N, N).

    ``means`` is a :class:`~pdlt.empirical.engine.LayerMeans` with the means of ``"P"``, ``"M4"``,
    ``"PP"`` over ``means.count`` = E ≥ 2 networks, ``means.width`` = n_ℓ ≥ 2 and
    ``means.fan_in`` = n_{ℓ−1}. Formula sheet §2; book (4.43) at ℓ = 2.
    """
    n, E = means.width, means.count
    if n < 2:
        raise ValueError(f"V at layer {means.layer} needs two distinct neurons i != j, but n_{means.layer} = {n}")
    if E < 2:
        raise ValueError(f"V needs the means of at least 2 networks, got {E}")
    P = np.asarray(means["P"], dtype=np.float64)
    N = P.shape[-1]
    ia, ib, _ = pair_index(N)
    Pp = P[ia, ib]
    T = (n * means["PP"] - means["M4"]) / (n - 1)
    mu_mu = (E * np.multiply.outer(Pp, Pp) - means["PP"]) / (E - 1)
    return unpack_pairs(means.fan_in * (T - mu_mu), N)
