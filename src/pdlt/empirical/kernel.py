r"""The measured two-point function: per-network feature and estimator (book §4.1, eqs. (4.7)–(4.8)).

For one network and one layer ℓ with preactivations :math:`z_{i;\alpha}` (i = 1..n_ℓ, α = 1..N),

.. math:: P_{\alpha\beta} = \frac{1}{n_\ell}\sum_{i=1}^{n_\ell} z_{i;\alpha} z_{i;\beta},

and the ensemble mean of P estimates the raw two-point function
:math:`G^{(\ell)}_{\alpha\beta} = \mathbb E[z_{i;\alpha} z_{i;\beta}]`. Its theory twin is the full metric
:math:`G^{(\ell)} = K^{(\ell)} + G^{\{1\}(\ell)}/n_{\ell-1} + O(1/n^2)` (formula sheet §1), not the
infinite-width kernel K alone; at layers 1 and 2 the two coincide exactly.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PairMoment", "kernel_estimate", "pair_index"]


def pair_index(N: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Packing of symmetric sample-index pairs (α ≤ β).

    Returns ``(ia, ib, idx)``: the packed pairs are ``(ia[k], ib[k])`` for k = 0..N(N+1)/2 − 1, and
    ``idx[α, β]`` (N×N, symmetric) is the packed position of the pair {α, β}.
    """
    ia, ib = np.triu_indices(N)
    idx = np.empty((N, N), dtype=np.intp)
    idx[ia, ib] = np.arange(ia.size)
    idx[ib, ia] = np.arange(ia.size)
    return ia, ib, idx


class PairMoment:
    r"""Feature ``"P"``: one network's empirical two-point function :math:`P = z^\top z / n_\ell`.

    Input: preactivations z of shape (E, n_ℓ, N) (numpy array or torch tensor). Output: (E, N, N).
    """

    name = "P"

    def shape(self, N: int) -> tuple[int, ...]:
        return (N, N)

    def __call__(self, z, backend):
        return (z.mT @ z) / z.shape[-2]

    def __repr__(self) -> str:
        return "PairMoment()"

    def __eq__(self, other):
        return type(other) is type(self)

    def __hash__(self):
        return hash(type(self))


def kernel_estimate(means) -> np.ndarray:
    r"""Ĝ^{(ℓ)}_{αβ} = mean over networks of P_{αβ}: the measured kernel, shape (N, N).

    ``means`` is a :class:`~pdlt.empirical.engine.LayerMeans` holding the mean of feature ``"P"``.
    """
    return np.array(means["P"], dtype=np.float64, copy=True)
