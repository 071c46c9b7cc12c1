r"""Empirical twin of the two-input theory: γ-basis kernel, correlation ρ and angle ψ on real ensembles.

For x± = x₀ ± δx/2 the measured two-point function :math:`\hat G_{ab} = \overline{z^\top z/n_\ell}`
(a, b ∈ {+, −}) is rotated to the γ-basis and to

.. math:: \rho^{(\ell)} = \frac{G_{+-}}{\sqrt{G_{++}G_{--}}} = \cos\psi^{(\ell)},

each a smooth function of the ensemble mean of the per-network feature ``P`` (so the jackknife of
:mod:`pdlt.empirical.engine` gives its standard error). Twins: :func:`pdlt.theory.two_input.delta_expansion`
(small δ), ``pdlt.theory(net, [x₊, x₋])`` (any δ) and :func:`~pdlt.theory.two_input.relu_angle_flow`
(ReLU, C_b = 0). Book §5.1, §5.5; formula sheet §3.
"""

from __future__ import annotations

import numpy as np

from .. import _validate
from ..mlp import MLP
from ..theory.two_input import angle, correlation, from_kernel
from .engine import Measurement, Observable, measure
from .kernel import PairMoment

__all__ = ["GAMMA", "RHO", "PSI", "two_inputs", "measure_two_input"]

_P = PairMoment()

#: γ-basis (K_{[0]}, K_{[1]}, K_{[2]}) of the measured 2×2 two-point function, shape (3,). Needs N = 2.
GAMMA = Observable("gamma", (_P,), lambda m: from_kernel(np.asarray(m["P"])))
#: ρ = G₊₋/√(G₊₊G₋₋), shape (). Needs N = 2.
RHO = Observable("rho", (_P,), lambda m: correlation(np.asarray(m["P"])))
#: ψ = arccos ρ, computed stably near ψ = 0, shape (). Needs N = 2.
PSI = Observable("psi", (_P,), lambda m: angle(np.asarray(m["P"])))


def two_inputs(x0, dx) -> np.ndarray:
    """The pair X = [x₀ + δx/2, x₀ − δx/2], shape (2, n₀), from x0, dx of shape (n₀,)."""
    x0 = np.asarray(x0, dtype=np.float64).reshape(-1)
    dx = np.asarray(dx, dtype=np.float64).reshape(-1)
    if x0.shape != dx.shape:
        raise ValueError(f"x0 and dx must have the same shape (n0,), got {x0.shape} and {dx.shape}")
    return _validate.inputs("X", np.stack([x0 + 0.5 * dx, x0 - 0.5 * dx]))


def measure_two_input(net: MLP, x0, dx, networks: int = 1000, seed: int = 0, **kwargs) -> Measurement:
    r"""Measure G (2×2), ``gamma`` (3,), ``rho`` and ``psi`` per layer for x± = x₀ ± δx/2.

    net : the network. x0, dx : (n₀,). networks, seed and keyword arguments as in
    :func:`pdlt.empirical.measure` (method, shard_size, groups, layers, …). Returns a
    :class:`~pdlt.empirical.Measurement`: ``m.layer(ℓ)["rho"]`` is an :class:`~pdlt.estimate.Estimate`.
    """
    if "observables" in kwargs:
        raise ValueError("measure_two_input chooses its observables (G, gamma, rho, psi)")
    return measure(net, two_inputs(x0, dx), networks, seed, observables=["G", GAMMA, RHO, PSI], **kwargs)
