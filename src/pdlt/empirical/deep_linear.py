r"""Empirical twins of :mod:`pdlt.theory.deep_linear`: estimators on ensembles of real networks.

Every estimator is a pure function of one layer's preactivation samples, an array ``samples`` of shape
(R, n_ℓ, N): R independent networks, n_ℓ neurons, N inputs (for the single-input functions N = 1, and a
2-D array (R, n_ℓ) is accepted too). Neurons of one network are exchangeable but correlated, so every
statistic is first reduced to one value per network, and standard errors are taken over networks.
Nonlinear statistics (products of means) use the delete-one jackknife over networks: bias-corrected to
O(1/R²), with the jackknife standard error.

Each returns a :class:`pdlt.estimate.Estimate` (mean, stderr, count = R) of the same shape as its theory twin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .. import _validate as v
from ..estimate import Estimate

__all__ = ["even_moment", "connected_four_point", "connected_six_point", "observable_variance",
           "EmpiricalLinearMoments", "exact_two_and_four_point", "per_network_gram_moments", "jackknife"]


def _samples(samples, *, single_input: bool = False, min_neurons: int = 1) -> np.ndarray:
    try:
        z = np.asarray(samples, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"samples must be a numeric array of shape (networks, n_l, N): {exc}") from None
    if single_input and z.ndim == 2:
        z = z[:, :, None]
    if z.ndim != 3:
        raise ValueError(f"samples must have shape (networks, n_l, N)"
                         f"{' or (networks, n_l)' if single_input else ''}; got shape {z.shape}")
    R, n, N = z.shape
    if R < 2:
        raise ValueError(f"samples must hold at least 2 networks (axis 0) for a standard error; got {R}")
    if n < min_neurons:
        raise ValueError(f"samples must hold at least {min_neurons} neurons (axis 1) for this estimator; got {n}")
    if single_input and N != 1:
        raise ValueError(f"samples must be single-input, shape (networks, n_l, 1) or (networks, n_l); "
                         f"got N = {N} inputs")
    if not np.all(np.isfinite(z)):
        raise ValueError("samples contain NaN or inf")
    return z


def _mean_estimate(per_network: np.ndarray) -> Estimate:
    R = per_network.shape[0]
    return Estimate(per_network.mean(axis=0), per_network.std(axis=0, ddof=1) / np.sqrt(R), R)


def jackknife(stat: Callable[..., np.ndarray], *per_network: np.ndarray, chunk: int = 4096) -> Estimate:
    r"""Delete-one jackknife over networks for a smooth function of ensemble means.

    .. math:: \hat\theta_J = R\,f(\bar x) - (R-1)\,\overline{f(\bar x_{-r})},\qquad
              \mathrm{se}_J = \sqrt{\tfrac{R-1}{R}\textstyle\sum_r \big(f(\bar x_{-r}) - \overline{f(\bar x_{-\cdot})}\big)^2}.

    ``per_network`` are arrays with leading axis R (one value per network); ``stat`` maps the
    corresponding means (with an optional leading batch axis) to the observable. Leave-one-out values
    are processed in chunks and accumulated as deviations from f(x̄) (no cancellation).
    """
    R = per_network[0].shape[0]
    means = [x.mean(axis=0) for x in per_network]
    f0 = np.asarray(stat(*[mu[None] for mu in means]))[0]
    s1 = np.zeros_like(f0)
    s2 = np.zeros_like(f0)
    for start in range(0, R, chunk):
        loo = [(R * mu[None] - x[start:start + chunk]) / (R - 1) for mu, x in zip(means, per_network)]
        d = np.asarray(stat(*loo)) - f0
        s1 += d.sum(axis=0)
        s2 += (d * d).sum(axis=0)
    dbar = s1 / R
    mean = f0 - (R - 1) * dbar
    var = (R - 1) / R * np.maximum(s2 - R * dbar * dbar, 0.0)
    return Estimate(mean, np.sqrt(var), R)


def _double_factorial_odd(m: int) -> float:
    out = 1.0
    for k in range(1, 2 * m, 2):
        out *= k
    return out


def _neuron_power_means(z: np.ndarray, ms) -> list[np.ndarray]:
    """Per network, (1/n) Σ_i z_i^{2m}/(2m−1)!! for each m in ms; each shape (R,)."""
    z2 = z[:, :, 0] ** 2
    return [(z2 ** k).mean(axis=1) / _double_factorial_odd(k) for k in ms]


def even_moment(m: int, samples) -> Estimate:
    r"""Estimate of G_{2m} of one layer, single input: :math:`\widehat{G}_{2m} = \overline{z^{2m}}/(2m-1)!!`.

    Averaged over the n_ℓ neurons of each network, then over the R networks (stderr over networks).
    Twin of :func:`pdlt.theory.deep_linear.even_moment`. ``samples``: (R, n_ℓ, 1) or (R, n_ℓ).
    Returns a scalar Estimate.
    """
    m = v.positive_int("m", m)
    z = _samples(samples, single_input=True)
    return _mean_estimate(_neuron_power_means(z, [m])[0])


def connected_four_point(samples) -> Estimate:
    r"""Estimate of G_4 − G_2² of one layer (single input), twin of the theory function (3.28).

    Jackknife of :math:`\overline{z^4}/3 - (\overline{z^2})^2` over networks. ``samples``: (R, n_ℓ[, 1]).
    """
    z = _samples(samples, single_input=True)
    g2, g4 = _neuron_power_means(z, [1, 2])
    return jackknife(lambda a, b: b - a * a, g2, g4)


def connected_six_point(samples) -> Estimate:
    r"""Estimate of G_6 − 3G_2G_4 + 2G_2³ of one layer (single input), twin of the theory function (3.57).

    Jackknife over networks of the plug-in estimate from :math:`\overline{z^{2m}}/(2m-1)!!`, m = 1, 2, 3.
    """
    z = _samples(samples, single_input=True)
    g2, g4, g6 = _neuron_power_means(z, [1, 2, 3])
    return jackknife(lambda a, b, c: c - 3.0 * a * b + 2.0 * a ** 3, g2, g4, g6)


def observable_variance(samples) -> Estimate:
    r"""Estimate of Var[O] with O = (1/n_ℓ) Σ_j z_j² of one layer (single input), twin of (3.33).

    Jackknife (which here reproduces the unbiased sample variance) of
    :math:`\overline{O^2} - \bar O^{\,2}` over networks. ``samples``: (R, n_ℓ[, 1]).
    """
    z = _samples(samples, single_input=True)
    O = (z[:, :, 0] ** 2).mean(axis=1)
    return jackknife(lambda a, b: b - a * a, O, O * O)


def per_network_gram_moments(samples) -> tuple[np.ndarray, np.ndarray]:
    r"""Unbiased per-network estimates of m = E[z_{i;a}z_{i;b}] and M = E[z_{i;a}z_{i;b}z_{j;c}z_{j;d}] (i ≠ j).

    With :math:`S = \sum_i z_i z_i^\top` over the n neurons of one network:

    .. math:: \hat m = S/n,\qquad
              \hat M_{abcd} = \frac{S_{ab}S_{cd} - \sum_i z_{i;a}z_{i;b}z_{i;c}z_{i;d}}{n(n-1)}.

    ``samples``: (R, n_ℓ, N) with n_ℓ ≥ 2. Returns (m̂ (R, N, N), M̂ (R, N, N, N, N)).
    """
    z = _samples(samples, min_neurons=2)
    n = z.shape[1]
    S = np.einsum("ria,rib->rab", z, z)
    diag = np.einsum("ria,rib,ric,rid->rabcd", z, z, z, z, optimize=True)
    M = (np.einsum("rab,rcd->rabcd", S, S) - diag) / (n * (n - 1))
    return S / n, M


class EmpiricalLinearMoments(NamedTuple):
    """Estimates of one layer's m (N, N), M (N, N, N, N) and exact vertex V (N, N, N, N)."""

    m: Estimate
    M: Estimate
    V: Estimate


def exact_two_and_four_point(samples, n_prev: int) -> EmpiricalLinearMoments:
    r"""Empirical twin of one layer of :func:`pdlt.theory.deep_linear.exact_two_and_four_point`.

    .. math:: m_{ab} = \mathbb E[z_{i;a}z_{i;b}],\quad
              M_{abcd} = \mathbb E[z_{i;a}z_{i;b}z_{j;c}z_{j;d}]\ (i\ne j),\quad
              V = n_{\ell-1}\,(M - m\otimes m).

    m and M are averages of the unbiased per-network estimates of :func:`per_network_gram_moments`; V is
    their jackknife combination. Valid for any network (the estimators assume nothing about σ).

    Parameters
    ----------
    samples : (R, n_ℓ, N) preactivations of layer ℓ, n_ℓ ≥ 2.
    n_prev : n_{ℓ−1}, the width of the previous layer (n_0 for ℓ = 1).
    """
    n_prev = v.positive_int("n_prev", n_prev)
    m_r, M_r = per_network_gram_moments(samples)
    Vest = jackknife(lambda m, M: n_prev * (M - np.einsum("...ab,...cd->...abcd", m, m)), m_r, M_r)
    return EmpiricalLinearMoments(_mean_estimate(m_r), _mean_estimate(M_r), Vest)
