r"""Monte Carlo of real residual MLPs at initialization: the twin of :mod:`pdlt.theory.residual` (book App. B).

.. math:: z^{(1)} = b^{(1)} + W^{(1)}x,\qquad z^{(\ell+1)} = \xi\,z^{(\ell)} + b^{(\ell+1)} + W^{(\ell+1)}\sigma(z^{(\ell)}),

b ~ N(0, C_b), W_ij ~ N(0, C_W/n_ℓ); the skip needs n₁ = … = n_L (checked).

Sampling (numpy, float64):

* ``method="gaussian"`` (default): given layer ℓ, the rows of :math:`u = b + W\sigma(z^{(\ell)})` are iid
  :math:`\mathcal N(0, \hat G)` with :math:`\hat G = C_b + \frac{C_W}{n_\ell}\sigma(z)^\top\sigma(z)` (N×N) and
  independent of :math:`z^{(\ell)}` given it, so :math:`z^{(\ell+1)} = \xi z^{(\ell)} + \epsilon\,\hat G^{1/2}`
  with ε standard normal (n_ℓ×N) is exact in law for the whole depth. Cost O(n N²) per layer.
* ``method="naive"``: explicit weights and biases (the oracle), O(n²N) per layer.

Randomness: network e draws from ``SeedSequence(seed).spawn(networks)[e]`` (built directly as
``SeedSequence(seed, spawn_key=(e,))``), all normals up front — gaussian: per layer the N×n_ℓ matrix
εᵀ; naive: per layer W (n_ℓ×n_{ℓ−1}, row-major) then b (n_ℓ). Networks are processed in shards;
group sums are added in network order, so results do not depend on the shard size.

Statistics reuse :mod:`pdlt.empirical.engine`: any :class:`~pdlt.empirical.Feature` is summed per
jackknife group into an :class:`~pdlt.empirical.Accumulation`, and :func:`measure` returns a
:class:`~pdlt.empirical.Measurement` whose ``layer(ℓ).G`` (E[z_a z_b]) and ``layer(ℓ).V``
(n_{ℓ−1} Cov(z_i z_i, z_j z_j), i ≠ j) are :class:`~pdlt.estimate.Estimate` objects with
delete-one-group jackknife errors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np

from .. import _validate as v
from ..activations import PiecewiseLinear
from ..mlp import MLP
from ..theory.residual import residual_net
from . import engine
from .engine import (DEFAULT_OBSERVABLES, Accumulation, Measurement, Observable,
                     PreactivationOverflowError)

__all__ = ["preactivations", "accumulate", "measure", "ResidualMeasurement"]

METHODS = ("gaussian", "naive")
_SHARD_NORMALS = 2 ** 22   # float64 normals per shard (32 MiB)


def _sigma(activation):
    if isinstance(activation, PiecewiseLinear) and type(activation).sigma is PiecewiseLinear.sigma:
        ap, am = activation.a_plus, activation.a_minus
        if am == 0.0:
            return (lambda z: np.maximum(z, 0.0)) if ap == 1.0 else (lambda z: ap * np.maximum(z, 0.0))
        if ap == am:
            return lambda z: ap * z
    return lambda z: np.asarray(activation.sigma(z), dtype=np.float64)


def _sqrt_psd(G: np.ndarray) -> np.ndarray:
    """Symmetric PSD root of (..., N, N) (negative rounding eigenvalues → 0)."""
    if G.shape[-1] == 1:
        return np.sqrt(np.maximum(G, 0.0))
    w, U = np.linalg.eigh(G)
    return (U * np.sqrt(np.maximum(w, 0.0))[..., None, :]) @ np.swapaxes(U, -1, -2)


def _sizes(net: MLP, N: int, method: str, max_layer: int) -> list[int]:
    w = net.widths
    if method == "naive":
        return [w[l] * w[l - 1] + w[l] for l in range(1, max_layer + 1)]
    return [w[l] * N for l in range(1, max_layer + 1)]


def _stream(net: MLP, xi: float, X: np.ndarray, method: str, start: int, stop: int, seed: int,
            max_layer: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (ℓ, z) with z of shape (E, n_ℓ, N) (a transposed view) for networks start..stop−1."""
    E, N = stop - start, X.shape[0]
    w = net.widths
    sizes = _sizes(net, N, method, max_layer)
    normals = np.empty((E, sum(sizes)))
    for k, e in enumerate(range(start, stop)):
        np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(e,))).standard_normal(out=normals[k])
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    sigma = _sigma(net.activation)
    zt = None                                   # (E, N, n_ℓ), contiguous
    for l in range(1, max_layer + 1):
        n_in, n_out = w[l - 1], w[l]
        C_b, C_W = net.hyper(l)
        block = normals[:, offsets[l - 1]:offsets[l]]
        act = X if l == 1 else sigma(zt)        # (N, n0) or (E, N, n_ℓ−1)
        if method == "naive":
            W = block[:, :n_out * n_in].reshape(E, n_out, n_in)
            b = block[:, n_out * n_in:]
            if l == 1:
                act = np.broadcast_to(act, (E,) + act.shape)
            u = W @ np.ascontiguousarray(np.swapaxes(act, -1, -2))
            new = np.ascontiguousarray(np.swapaxes(u, -1, -2)) * math.sqrt(C_W / n_in) \
                + math.sqrt(C_b) * b[:, None, :]
        else:
            G = C_b + (C_W / n_in) * (act @ np.swapaxes(act, -1, -2))
            if not np.isfinite(G).all():
                raise PreactivationOverflowError(
                    f"non-finite empirical kernel at layer {l}: the signal explodes with depth; "
                    f"lower C_W, xi or the depth")
            root = _sqrt_psd(G)
            new = np.swapaxes(root, -1, -2) @ block.reshape(E, N, n_out)
        zt = new if (l == 1 or xi == 0.0) else xi * zt + new
        if not np.isfinite(zt).all():
            raise PreactivationOverflowError(
                f"non-finite preactivations at layer {l}; lower C_W, xi or the depth")
        yield l, np.swapaxes(zt, -1, -2)


def _config(net, xi, X, networks, seed, method, shard_size, groups, layers):
    if not isinstance(net, MLP):
        raise TypeError(f"net must be a pdlt.MLP (see pdlt.theory.residual.residual_net), got {type(net).__name__}")
    xi = v.real("xi", xi)
    net = residual_net(net, xi=xi)
    X = v.inputs("X", X, net.input_dim)
    networks, seed, groups = engine._check_ensemble(networks, seed, groups)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    layers = engine._check_layers(net, layers)
    if shard_size is None:
        per = sum(_sizes(net, X.shape[0], method, layers[-1]))
        shard_size = max(1, min(networks, _SHARD_NORMALS // max(per, 1), 4096))
    else:
        shard_size = min(v.positive_int("shard_size", shard_size), networks)
    return net, xi, X, networks, seed, int(groups), layers, shard_size


def preactivations(net: MLP, xi: float, X, networks: int = 1000, seed: int = 0, *,
                   method: str = "gaussian", shard_size: int | None = None, layers=None
                   ) -> Iterator[tuple[int, int, dict[int, np.ndarray]]]:
    """Stream a residual ensemble: yields ``(start, stop, {ℓ: z})``, z of shape (stop − start, n_ℓ, N).

    net : widths, σ, C_b, C_W (an MLP; see :func:`pdlt.theory.residual.residual_net`). xi : skip ξ.
    X : (N, n₀) inputs. The same networks (same numbers) as :func:`measure` with these arguments.
    """
    net, xi, X, networks, seed, _, layers, shard = _config(net, xi, X, networks, seed, method, shard_size,
                                                            2, layers)
    chosen = set(layers)
    for a in range(0, networks, shard):
        b = min(a + shard, networks)
        with np.errstate(all="ignore"):
            out = {l: np.array(z) for l, z in _stream(net, xi, X, method, a, b, seed, layers[-1])
                   if l in chosen}
        yield a, b, out


class _NumpyOps:
    """The two backend operations that the engine's features use (numpy)."""

    name = "numpy"
    xp = np
    device = "cpu"

    @staticmethod
    def take(a, indices, axis):
        return np.take(a, indices, axis=axis)


def accumulate(net: MLP, xi: float, X, features: Iterable, networks: int = 1000, seed: int = 0, *,
               method: str = "gaussian", shard_size: int | None = None, groups: int = 32,
               layers=None) -> Accumulation:
    """Per-group sums of per-network features (:class:`~pdlt.empirical.Feature`) over a residual ensemble.

    Arguments as in :func:`preactivations`, plus ``features`` and ``groups`` (jackknife groups,
    2..networks). Returns an :class:`~pdlt.empirical.Accumulation` (``method`` = "residual-<method>").
    """
    net, xi, X, E, seed, G, layers, shard = _config(net, xi, X, networks, seed, method, shard_size,
                                                    groups, layers)
    feats = engine._check_features(list(features))
    N = X.shape[0]
    shapes = {f.name: tuple(int(d) for d in f.shape(N)) for f in feats}
    sums = {(l, f.name): np.zeros((G,) + shapes[f.name]) for l in layers for f in feats}
    starts = engine._group_starts(E, G)
    chosen = set(layers)
    ops = _NumpyOps()

    def accumulate_shard(a, b, gid, segments):
        with np.errstate(all="ignore"):
            for l, z in _stream(net, xi, X, method, a, b, seed, layers[-1]):
                if l not in chosen:
                    continue
                for f in feats:
                    F = np.asarray(f(z, ops), dtype=np.float64)
                    if not np.isfinite(F).all():
                        raise PreactivationOverflowError(f"feature {f.name!r} is not finite at layer {l}")
                    engine._add_by_group(sums[(l, f.name)], F, gid, segments)

    engine._shard_loop(E, shard, starts, sums, None, engine._NoBar(), accumulate_shard)
    return Accumulation(net, X, E, seed, G, f"residual-{method}", "numpy", "cpu", shard, layers, feats,
                        sums, np.diff(starts))


class ResidualMeasurement(Measurement):
    """A :class:`~pdlt.empirical.Measurement` of a residual ensemble; ``xi`` is the skip strength."""

    def __init__(self, accumulation: Accumulation, observables, xi: float):
        super().__init__(accumulation, observables)
        self.xi = xi

    def __repr__(self) -> str:
        return (f"<ResidualMeasurement {self.net!r}, xi={self.xi}, N={self.X.shape[0]}, "
                f"networks={self.networks}, method={self.method!r}, layers={list(self.layers)}>")


def measure(net: MLP, xi: float, X, networks: int = 1000, seed: int = 0, *, method: str = "gaussian",
            shard_size: int | None = None, groups: int = 32, layers=None,
            observables: Iterable[str | Observable] | None = None) -> ResidualMeasurement:
    r"""Measure E[z_a z_b] (``G``), the vertex ``V`` and ``M4`` per layer of a residual MLP ensemble.

    .. math:: \hat V^{(\ell)} = n_{\ell-1}\,\widehat{\operatorname{Cov}}(z_{i;a}z_{i;b},\,z_{j;c}z_{j;d}),\ i\ne j

    net : an MLP (widths [n₀, n, …, n], σ, C_b, C_W). xi : skip strength. X : (N, n₀).
    observables : names "G"/"K", "V", "M4" or :class:`~pdlt.empirical.Observable` objects
    (default all three). Returns :class:`ResidualMeasurement`; compare with
    :func:`pdlt.theory.residual.residual_theory` (e.g. via :func:`pdlt.observables.compare`).
    Book App. B; formula sheet §10.
    """
    builtin = {o.name: o for o in DEFAULT_OBSERVABLES}
    obs = []
    for o in (tuple(builtin) if observables is None else
              (observables,) if isinstance(observables, str | Observable) else observables):
        if isinstance(o, str):
            if o not in ("G", "K", "V", "M4"):
                raise ValueError(f"unknown observable {o!r}; give 'G', 'K', 'V', 'M4' or Observable objects")
            o = builtin["G" if o == "K" else o]
        elif not isinstance(o, Observable):
            raise ValueError(f"observables must be names or Observable objects, got {o!r}")
        if o.name not in {x.name for x in obs}:
            obs.append(o)
    if not obs:
        raise ValueError("observables must name at least one observable")
    feats = [f for o in obs for f in o.features]
    acc = accumulate(net, xi, X, feats, networks, seed, method=method, shard_size=shard_size,
                     groups=groups, layers=layers)
    return ResidualMeasurement(acc, obs, float(xi))
