r"""Monte Carlo engine: ensembles of random MLPs at initialization, streamed shard by shard (book Ch. 2, 4).

Sampling
--------
``method="naive"`` draws every weight and bias and does the matrix products (book eqs. (2.5), (4.1)):

.. math:: z^{(1)} = b^{(1)} + W^{(1)} x,\qquad z^{(\ell+1)} = b^{(\ell+1)} + W^{(\ell+1)}\sigma(z^{(\ell)}),

with :math:`b \sim \mathcal N(0, C_b)`, :math:`W_{ij} \sim \mathcal N(0, C_W/n_{\ell-1})`.

``method="gaussian"`` (default) uses that, given layer ℓ, the rows :math:`z^{(\ell+1)}_i` are iid
:math:`\mathcal N(0, \hat G^{(\ell+1)})` with the empirical kernel (N×N)

.. math:: \hat G^{(\ell+1)} = C_b + \frac{C_W}{n_\ell}\sum_{j=1}^{n_\ell}\sigma(z_j^{(\ell)})\sigma(z_j^{(\ell)})^\top,
          \qquad \hat G^{(1)} = C_b + \frac{C_W}{n_0} X X^\top,

so :math:`z^{(\ell+1)} = \xi\,\hat G^{1/2}` with ξ standard normal (n_{ℓ+1}×N) and the symmetric PSD root
from ``eigh`` (negative rounding eigenvalues clipped to 0, so singular Ĝ is fine). This is exact in law
for the joint process of all layers' preactivations and costs O(n N²) per layer instead of O(n² N).

Randomness
----------
Network e (0-based) draws from ``SeedSequence(seed).spawn(networks)[e]``, built directly as
``SeedSequence(seed, spawn_key=(e,))``. All of a network's normals are drawn in one call, up front:
naive, per layer ℓ = 1..L the n_ℓ×n_{ℓ−1} weights (row-major) then the n_ℓ biases; gaussian, per layer
ℓ = 1..L the N×n_ℓ matrix ξᵀ (row-major). The torch backend seeds one ``torch.Generator`` per network
with the 64-bit ``generate_state(1, uint64)`` (32 bits would collide, by the birthday bound, in
ensembles of ~10⁵ networks). Same seed, backend and device give bitwise identical results whatever
the shard size: per-network arithmetic never mixes networks, and group sums are accumulated strictly
in network order. (On CUDA, batched kernels such as eigh may switch algorithm with the batch size;
fix ``shard_size`` there to reproduce bits.)

Statistics
----------
Network e belongs to jackknife group g = ⌊e G / networks⌋. For each layer and each *feature* (a map
from a shard's preactivations (E, n_ℓ, N) to per-network arrays (E, ...)), the engine accumulates
per-group sums. An *observable* is a smooth function of the overall feature means; its standard error
is the delete-one-group jackknife,

.. math:: \mathrm{se}^2 = \frac{G-1}{G}\sum_{g=1}^{G}\big(\hat\theta_{(-g)} - \bar\theta\big)^2 .

:func:`measure` returns the kernel G (alias K), the four-point vertex V and the fourth moment M4 per
layer; extra observables plug in through ``observables=``, and :func:`accumulate` exposes the raw
per-group sums for other estimators.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .. import _validate as v
from ..estimate import Estimate
from ..mlp import MLP
from . import four_point, kernel

__all__ = [
    "measure", "Measurement", "LayerMeasurement", "accumulate", "Accumulation", "LayerMeans",
    "Observable", "Feature", "Backend", "preactivations", "PreactivationOverflowError",
    "KERNEL", "VERTEX", "FOURTH_MOMENT", "DEFAULT_OBSERVABLES", "default_shard_size", "SHARD_BYTES",
    "CACHE_BYTES", "ACCUMULATOR_BYTES",
]

SHARD_BYTES = 256 * 2 ** 20
"""Memory cap for one shard's arrays; the default shard size keeps the estimate below it."""
CACHE_BYTES = 8 * 2 ** 20
"""Target working set of one layer of a shard: small shards stay in cache and run faster."""
ACCUMULATOR_BYTES = 2 * 2 ** 30
"""Cap on the per-group feature sums (G × layers × feature sizes); beyond it accumulate() refuses."""

METHODS = ("gaussian", "naive")
BACKENDS = ("numpy", "torch")
_CHECKPOINT_FORMAT = "pdlt-measure-checkpoint/1"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PROGRESS_AUTO = 20_000  # networks × layers above which a TTY gets a progress bar


class PreactivationOverflowError(FloatingPointError):
    """Preactivations, the empirical kernel or a feature left the float64 range at some layer."""


@runtime_checkable
class Feature(Protocol):
    """A per-network statistic of one layer's preactivations.

    Attributes and methods
    ----------------------
    name : identifier, unique within a measurement (it keys checkpoint files).
    shape(N) : the per-network feature shape for N inputs.
    __call__(z, backend) : z of shape (E, n_ℓ, N) (numpy array or torch tensor, float64) → (E, *shape(N))
        of the same kind. z is a transposed view: ``z.mT`` (E, N, n_ℓ) is the contiguous one. Use
        operations common to numpy and torch (``@``, ``.mT``, indexing, arithmetic, ``reshape``),
        ``backend.take`` (gather along an axis) or ``backend.xp``.
    """

    name: str

    def shape(self, N: int) -> tuple[int, ...]: ...

    def __call__(self, z, backend): ...


@dataclass(frozen=True)
class Observable:
    """An estimator built from per-network features: ``estimate`` maps their means to the observable.

    Attributes
    ----------
    name : identifier used in :meth:`Measurement.layer` (``layer[name]``) and in ``to_dict``.
    features : the features whose means ``estimate`` reads (by feature name).
    estimate : ``LayerMeans -> ndarray``; a smooth function of the means (the jackknife needs it).
    min_width : layers with n_ℓ below this cannot be measured; asking raises ValueError with ``why``.
    why : the reason, for that error message.
    """

    name: str
    features: tuple
    estimate: Callable[["LayerMeans"], np.ndarray]
    min_width: int = 1
    why: str = ""


@dataclass(frozen=True)
class LayerMeans(Mapping):
    """Means of features over ``count`` networks at one layer; ``means[name]`` is an ndarray.

    Attributes: ``layer`` ℓ, ``width`` n_ℓ, ``fan_in`` n_{ℓ−1} (n_0 = input dimension for ℓ = 1),
    ``count`` (networks averaged; fewer than the ensemble in a jackknife replicate).
    """

    layer: int
    width: int
    fan_in: int
    count: int
    values: Mapping[str, np.ndarray] = field(repr=False)

    def __getitem__(self, key):
        return self.values[key]

    def __iter__(self):
        return iter(self.values)

    def __len__(self):
        return len(self.values)


_P = kernel.PairMoment()
_M4 = four_point.PairedFourthMoment()
_PP = four_point.PairMomentSquare()

KERNEL = Observable("G", (_P,), kernel.kernel_estimate)
FOURTH_MOMENT = Observable("M4", (_M4,), four_point.fourth_moment_estimate)
VERTEX = Observable(
    "V", (_P, _M4, _PP), four_point.vertex_estimate, min_width=2,
    why="V is the i != j covariance Cov(z_i z_i, z_j z_j) and a layer of one neuron has no pair i != j")
DEFAULT_OBSERVABLES = (KERNEL, VERTEX, FOURTH_MOMENT)


# ---------------------------------------------------------------------------------------------
# Backends


class Backend:
    """Array operations of one backend (numpy or torch, float64). Features get it as ``backend``.

    Attributes: ``name`` ("numpy" or "torch"), ``xp`` (the array module), ``device`` (a string).
    """

    name = "?"
    xp: Any = None
    device = "cpu"

    def asarray(self, a):
        """A numpy array (float64 or integer) as an array of this backend on its device."""
        raise NotImplementedError

    def take(self, a, indices: np.ndarray, axis: int):
        """Entries of ``a`` at integer ``indices`` (a numpy array) along ``axis``, like ``np.take``."""
        raise NotImplementedError

    def contiguous(self, a):
        """``a`` laid out row-major (a copy only if needed)."""
        raise NotImplementedError

    def to_numpy(self, a) -> np.ndarray:
        """``a`` as a float64 numpy array on the host."""
        raise NotImplementedError

    def normals(self, seeds: Sequence[np.random.SeedSequence], size: int):
        """(len(seeds), size) standard normals; row k drawn in one call from its own seed only."""
        raise NotImplementedError

    def batch(self, a: np.ndarray, E: int):
        """A numpy matrix shared by E networks, as an operand of batched products with (E, ., .)."""
        raise NotImplementedError

    def sigma(self, activation) -> Callable:
        """The activation as an elementwise function on this backend's arrays."""
        raise NotImplementedError

    def sqrt_psd(self, G):
        """Symmetric PSD square root R = U diag(√w) Uᵀ (R² = G) of symmetric (..., N, N), via eigh;
        numerically null eigenvalues are set to 0, so singular G is fine."""
        raise NotImplementedError

    def all_finite(self, a) -> bool:
        raise NotImplementedError

    def abs_max(self, a) -> float:
        """Largest finite |a| (for error messages)."""
        raise NotImplementedError


class _NumpyBackend(Backend):
    name = "numpy"
    xp = np
    device = "cpu"

    def asarray(self, a):
        return np.asarray(a)

    def take(self, a, indices, axis):
        return np.take(a, indices, axis=axis)

    def contiguous(self, a):
        return np.ascontiguousarray(a)

    def to_numpy(self, a) -> np.ndarray:
        return np.asarray(a, dtype=np.float64)

    def normals(self, seeds: Sequence[np.random.SeedSequence], size: int) -> np.ndarray:
        out = np.empty((len(seeds), size))
        for k, s in enumerate(seeds):
            np.random.default_rng(s).standard_normal(out=out[k])
        return out

    def batch(self, a: np.ndarray, E: int):
        return a  # matmul broadcasts per network, so no copy is needed

    def sigma(self, activation) -> Callable:
        from .. import activations as A

        if isinstance(activation, A.PiecewiseLinear) and type(activation).sigma is A.PiecewiseLinear.sigma:
            # np.where evaluates both branches; ReLU-like layers are the common case, keep them cheap
            ap, am = activation.a_plus, activation.a_minus
            if am == 0.0:
                return (lambda z: np.maximum(z, 0.0)) if ap == 1.0 else (lambda z: ap * np.maximum(z, 0.0))
            if ap == am:
                return lambda z: ap * z
        return lambda z: np.asarray(activation.sigma(z), dtype=np.float64)

    def sqrt_psd(self, G):
        w, U = np.linalg.eigh(G)
        return (U * np.sqrt(_null_to_zero(np, w))[..., None, :]) @ U.mT

    def all_finite(self, a) -> bool:
        return bool(np.isfinite(a).all())

    def abs_max(self, a) -> float:
        return _abs_max(a)


class _TorchBackend(Backend):
    name = "torch"

    def __init__(self, device):
        try:
            import torch
        except ImportError:
            raise ImportError("backend='torch' needs PyTorch (pip install 'pdlt[torch]')") from None
        self.xp = torch
        try:
            dev = torch.device("cpu" if device is None else device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device must be a torch device string such as 'cpu' or 'cuda:0': {exc}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={device!r} requested but torch.cuda.is_available() is False")
        self.dev = dev
        self.device = str(dev)

    def asarray(self, a):
        return self.xp.as_tensor(np.asarray(a), device=self.dev)

    def take(self, a, indices, axis):
        return self.xp.index_select(a, axis % a.ndim, self.asarray(np.asarray(indices, dtype=np.int64)))

    def contiguous(self, a):
        return a.contiguous()

    def to_numpy(self, a) -> np.ndarray:
        return np.asarray(a.detach().to("cpu").numpy(), dtype=np.float64)

    def normals(self, seeds, size):
        torch = self.xp
        out = torch.empty((len(seeds), size), dtype=torch.float64, device=self.dev)
        gen = torch.Generator(device=self.dev)
        for k, s in enumerate(seeds):
            gen.manual_seed(int(s.generate_state(1, dtype=np.uint64)[0]))
            torch.randn(size, generator=gen, dtype=torch.float64, device=self.dev, out=out[k])
        return out

    def batch(self, a, E: int):
        # An explicit batch keeps torch from folding the networks into one large product, whose
        # blocking (and rounding) would then depend on the shard size.
        return self.asarray(a).expand(E, *a.shape)

    def sigma(self, activation) -> Callable:
        return _torch_sigma(activation, self.xp)

    def sqrt_psd(self, G):
        w, U = self.xp.linalg.eigh(G)
        return (U * self.xp.sqrt(_null_to_zero(self.xp, w))[..., None, :]) @ U.mT

    def all_finite(self, a) -> bool:
        return bool(self.xp.isfinite(a).all().item())

    def abs_max(self, a) -> float:
        return _abs_max(self.to_numpy(a))


def _null_to_zero(xp, w):
    """Eigenvalues w (..., N), ascending, with the numerically null ones set to 0.

    Rounding leaves |w| ~ N·eps·max(w) on null directions (repeated inputs, N > n); a square root
    would blow that up to ~1e-8 relative noise in z, so anything below the threshold is exactly 0.
    """
    tol = w[..., -1:] * (w.shape[-1] * np.finfo(np.float64).eps)
    return xp.where(w > tol, w, 0.0 * w)


def _abs_max(a: np.ndarray) -> float:
    """Largest finite |a| (for error messages)."""
    a = np.abs(a[np.isfinite(a)])
    return float(a.max()) if a.size else math.nan


def _torch_sigma(activation, torch) -> Callable:
    """σ on torch tensors: native torch ops for the registered activations, else a numpy round trip."""
    from .. import activations as A

    def native(cls) -> bool:  # a subclass that overrides sigma is treated as unknown
        return isinstance(activation, cls) and type(activation).sigma is cls.sigma

    if native(A.PiecewiseLinear):
        ap, am = activation.a_plus, activation.a_minus
        return lambda z: torch.where(z >= 0, ap * z, am * z)
    if native(A.Step):
        hi, lo = float(activation.high), float(activation.low)
        return lambda z: torch.where(z >= 0, torch.full_like(z, hi), torch.full_like(z, lo))
    if native(A.Monomial):
        p = activation.p
        return lambda z: z ** p
    simple = [(A.Tanh, torch.tanh), (A.Sin, torch.sin), (A.Sigmoid, torch.sigmoid),
              (A.Erf, torch.special.erf), (A.Softplus, lambda z: torch.logaddexp(z, torch.zeros_like(z))),
              (A.Swish, lambda z: z * torch.sigmoid(z)), (A.GELU, lambda z: z * torch.special.ndtr(z))]
    for cls, fn in simple:
        if native(cls):
            return fn

    def round_trip(z):
        out = np.asarray(activation.sigma(z.detach().to("cpu").numpy()), dtype=np.float64)
        return torch.as_tensor(out, device=z.device)

    return round_trip


def _make_backend(backend: str, device) -> Backend:
    if backend == "numpy":
        if device not in (None, "cpu"):
            raise ValueError(f"device={device!r} needs backend='torch'; the numpy backend runs on the CPU only")
        return _NumpyBackend()
    if backend == "torch":
        return _TorchBackend(device)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


# ---------------------------------------------------------------------------------------------
# Sampling


def _seeds(seed: int, start: int, stop: int) -> list[np.random.SeedSequence]:
    """Children start..stop−1 of SeedSequence(seed).spawn(networks), without building all of them."""
    return [np.random.SeedSequence(seed, spawn_key=(e,)) for e in range(start, stop)]


def _overflow(layer: int, what: str, where: str, size: float) -> PreactivationOverflowError:
    return PreactivationOverflowError(
        f"non-finite {what} at layer {layer} (largest finite |z| {where}: {size:.3g}). The signal "
        f"explodes with depth beyond the float64 range; lower C_W (criticality) or the depth, or "
        f"measure only shallower layers with layers=...")


def _layer_stream(net: MLP, X: np.ndarray, be: Backend, method: str, seeds, max_layer: int
                  ) -> Iterator[tuple[int, Any]]:
    """Yield (ℓ, z^{(ℓ)}) for ℓ = 1..max_layer; z has shape (E, n_ℓ, N), E = len(seeds).

    Internally each network's preactivations are kept as the contiguous N×n_ℓ matrix zᵀ (z is
    yielded as a transposed view), so that per-neuron rows are contiguous for σ, the kernels and
    the feature gathers. Raises PreactivationOverflowError naming the layer when z or Ĝ is not finite.
    """
    E, N = len(seeds), X.shape[0]
    w = net.widths
    sigma = be.sigma(net.activation)
    if method == "naive":
        sizes = [w[l] * w[l - 1] + w[l] for l in range(1, max_layer + 1)]
    else:
        sizes = [w[l] * N for l in range(1, max_layer + 1)]
    normals = be.normals(seeds, sum(sizes))
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    prev = None  # zᵀ of the layer below, (E, N, n_{ℓ-1})
    for l in range(1, max_layer + 1):
        n_in, n_out = w[l - 1], w[l]
        C_b, C_W = net.hyper(l)
        block = normals[:, offsets[l - 1]:offsets[l]]
        act = be.batch(X, E) if l == 1 else sigma(prev)  # (E, N, n_in); layer 1 is fed the inputs
        if method == "naive":
            W = block[:, :n_out * n_in].reshape(E, n_out, n_in)
            b = block[:, n_out * n_in:]
            # W σ with both operands row-major: batched matmul on transposed views can be many
            # times slower (it may leave the BLAS path).
            z = W @ be.contiguous(act.mT)
            zt = be.contiguous(z.mT) * math.sqrt(C_W / n_in) + math.sqrt(C_b) * b[:, None, :]
        else:
            if l == 1:
                G = C_b + (C_W / n_in) * (X @ X.T)
                root = be.batch(be.to_numpy(be.sqrt_psd(be.asarray(G))), E)
            else:
                G = C_b + (C_W / n_in) * (act @ act.mT)
                if not be.all_finite(G):
                    raise _overflow(l, "empirical kernel Ĝ", f"at layer {l - 1}", be.abs_max(prev))
                root = be.sqrt_psd(G)
            # Rows z_i = ξ_i R with RᵀR = Ĝ, i.e. zᵀ = Rᵀ ξᵀ; ξᵀ is drawn directly as N×n_ℓ.
            zt = root.mT @ block.reshape(E, N, n_out)
        if not be.all_finite(zt):
            raise _overflow(l, "preactivations z", f"at layer {max(l - 1, 1)}",
                            be.abs_max(zt if prev is None else prev))
        yield l, zt.mT
        prev = zt


def preactivations(net: MLP, X, networks: int = 1000, seed: int = 0, *, method: str = "gaussian",
                   backend: str = "numpy", device=None, shard_size: int | None = None,
                   layers=None) -> Iterator[tuple[int, int, dict[int, np.ndarray]]]:
    """Stream the ensemble's preactivations: yields ``(start, stop, {ℓ: z})`` per shard of networks.

    z has shape (stop − start, n_ℓ, N) (numpy, float64) and holds networks start..stop−1, the same
    networks (same numbers) that :func:`measure` uses with these arguments. For estimators that need
    the raw samples; prefer :func:`accumulate` with a feature, which never holds the ensemble.
    """
    cfg = _config(net, X, networks, seed, method, backend, device, shard_size, 2, layers, (_P,))
    be = cfg["be"]
    for start in range(0, cfg["networks"], cfg["shard_size"]):
        stop = min(start + cfg["shard_size"], cfg["networks"])
        with np.errstate(all="ignore"):
            out = {l: be.to_numpy(z) for l, z in _layer_stream(
                cfg["net"], cfg["X"], be, cfg["method"], _seeds(cfg["seed"], start, stop), cfg["layers"][-1])
                if l in cfg["layers"]}
        yield start, stop, out


# ---------------------------------------------------------------------------------------------
# Validation and configuration


def default_shard_size(net: MLP, N: int, method: str, feature_size: int, max_layer: int,
                       networks: int) -> int:
    """Networks per shard: one layer's working set near :data:`CACHE_BYTES` (at least 16 networks,
    to amortize per-shard overhead), and the whole shard under :data:`SHARD_BYTES`.

    ``feature_size``: total float64 entries of all features of one network at one layer.
    """
    w = net.widths[:max_layer + 1]
    if method == "naive":
        normals = sum(w[l] * w[l - 1] + w[l] for l in range(1, len(w)))
    else:
        normals = sum(w[l] * N for l in range(1, len(w)))
    # Per layer: z, σ(z) and a product, a pair-product intermediate (the M4 feature's), the kernels
    # and roots, and each feature three times (backend array, numpy copy, ordered-sum buffer).
    layer = (4 * N + N * (N + 1) // 2) * max(w) + 4 * N * N + 3 * feature_size
    by_cache = max(16, CACHE_BYTES // (8 * layer))
    by_memory = SHARD_BYTES // (8 * (normals + layer))
    return max(1, min(networks, by_cache, by_memory))


def _check_features(features) -> tuple:
    feats: dict[str, Any] = {}
    for f in features:
        if not isinstance(f, Feature):
            raise ValueError(f"a feature needs a name, shape(N) and __call__(z, backend); got {f!r}")
        if not isinstance(f.name, str) or not _NAME.match(f.name):
            raise ValueError(f"feature name must be an identifier (letters, digits, _), got {f.name!r}")
        if f.name in feats and feats[f.name] != f:
            raise ValueError(f"two different features are named {f.name!r}")
        feats.setdefault(f.name, f)
    if not feats:
        raise ValueError("features must list at least one feature")
    return tuple(feats.values())


def _check_layers(net: MLP, layers) -> tuple[int, ...]:
    if layers is None:
        return tuple(range(1, net.depth + 1))
    if isinstance(layers, int | np.integer) and not isinstance(layers, bool):
        layers = (layers,)
    try:
        chosen = sorted({net.check_layer(l) for l in layers})
    except TypeError:
        raise ValueError(f"layers must be None, an integer or a list of integers in 1..{net.depth}, "
                         f"got {layers!r}") from None
    if not chosen:
        raise ValueError(f"layers must name at least one layer in 1..{net.depth}")
    return tuple(chosen)


def _check_ensemble(networks, seed, groups) -> tuple[int, int, int]:
    """Validate (networks ≥ 2, seed ≥ 0, 2 ≤ groups ≤ networks) for every ensemble sampler."""
    networks = v.positive_int("networks", networks, minimum=2)
    seed = v.positive_int("seed", seed, minimum=0)
    if isinstance(groups, bool) or not isinstance(groups, int | np.integer) or not 2 <= groups <= networks:
        raise ValueError(f"groups must be an integer in 2..networks (= {networks}), got {groups!r}")
    return networks, seed, int(groups)


def _config(net, X, networks, seed, method, backend, device, shard_size, groups, layers, features) -> dict:
    if not isinstance(net, MLP):
        raise TypeError(f"net must be a pdlt.MLP, got {type(net).__name__}")
    X = v.inputs("X", X, net.input_dim)
    networks, seed, groups = _check_ensemble(networks, seed, groups)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    layers = _check_layers(net, layers)
    features = _check_features(features)
    N = X.shape[0]
    if shard_size is None:
        size = sum(math.prod(f.shape(N)) for f in features)
        shard_size = default_shard_size(net, N, method, size, layers[-1], networks)
    else:
        shard_size = min(v.positive_int("shard_size", shard_size), networks)
    be = _make_backend(backend, device)
    return dict(net=net, X=X, networks=networks, seed=seed, groups=int(groups), method=method, be=be,
                layers=layers, features=features, shard_size=shard_size)


# ---------------------------------------------------------------------------------------------
# Accumulation


def _group_starts(networks: int, groups: int) -> np.ndarray:
    """First network of each group g = 0..G (last entry = networks): start_g = ⌈g·networks/G⌉."""
    g = np.arange(groups + 1, dtype=np.int64)
    return (g * networks + groups - 1) // groups


def _ordered_add(acc: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """acc + rows[0] + rows[1] + … added strictly in that order.

    A fixed order makes group sums bitwise independent of where shard boundaries fall (numpy's
    ``sum`` may switch to pairwise summation); ``add.accumulate`` is sequential by definition.
    """
    block = np.concatenate((acc[None], rows), axis=0)
    return np.add.accumulate(block, axis=0)[-1]


def _add_by_group(acc: np.ndarray, F: np.ndarray, gid: np.ndarray, segments: list) -> None:
    """Add the rows of F (one per network of a shard) into their jackknife groups ``acc[g]``, each
    run [lo, hi) of one group in order (:func:`_shard_segments`, :func:`_ordered_add`)."""
    for lo, hi in segments:
        acc[gid[lo]] = _ordered_add(acc[gid[lo]], F[lo:hi])


def _shard_segments(starts: np.ndarray, a: int, b: int) -> tuple[np.ndarray, list]:
    """Jackknife group of each network a..b−1 (gid, offsets from a) and the runs [lo, hi) of equal group."""
    gid = np.searchsorted(starts, np.arange(a, b), side="right") - 1
    cuts = np.flatnonzero(np.diff(gid)) + 1
    return gid, list(zip(np.concatenate(([0], cuts)), np.concatenate((cuts, [b - a]))))


def _shard_loop(E: int, shard: int, starts: np.ndarray, sums: dict, store, bar,
                accumulate: Callable[[int, int, np.ndarray, list], None], per_network: dict | None = None) -> None:
    """Shards 0, 1, … of networks [a, b) in order: restored from ``store`` (a :class:`_Checkpoint` or
    None) when saved, else ``accumulate(a, b, gid, segments)`` adds them into ``sums`` (and fills rows
    [a, b) of the ``per_network`` arrays) and the shard is saved. Every estimator streams its ensemble
    through this one loop."""
    for s, a in enumerate(range(0, E, shard)):
        b = min(a + shard, E)
        gid, segments = _shard_segments(starts, a, b)
        g_lo, g_hi = int(gid[0]), int(gid[-1])
        header = np.array([s, a, b, g_lo, g_hi], dtype=np.int64)
        if store is None or not store.load(s, header, sums, g_lo, g_hi, per_network):
            accumulate(a, b, gid, segments)
            if store is not None:
                store.save(s, header, sums, g_lo, g_hi, per_network)
        bar.advance(b - a)


def _checkpoint_store(checkpoint, net: MLP, X: np.ndarray, E: int, seed: int, shard: int, G: int, chosen,
                      features, **settings) -> _Checkpoint | None:
    """The checkpoint store of an ensemble measurement (:func:`accumulate`, measure_ntk, measure_dntk,
    train_ensemble), or None: the manifest names the networks, inputs and layout, and ``settings``
    (JSON-able: the estimator, method, learning rates, …) join it, so a run with other settings is refused."""
    if checkpoint is None:
        return None
    return _Checkpoint(checkpoint, {
        "format": _CHECKPOINT_FORMAT, "net": net.to_dict(), "X_sha256": _x_digest(X), "X_shape": list(X.shape),
        "networks": E, "seed": seed, "shard_size": shard, "groups": G, "layers": list(chosen),
        "features": list(features), **settings})


def _shard_features(net: MLP, X: np.ndarray, be: Backend, method: str, seed: int, a: int, b: int,
                    chosen: Sequence[int], feats: Sequence, shapes: dict
                    ) -> Iterator[tuple[int, str, np.ndarray]]:
    """Yield (ℓ, feature name, F) for networks a..b−1, F a numpy array (b − a, *shape), in the fixed
    order layers then features; call it under ``np.errstate(all="ignore")`` (overflow is checked)."""
    chosen_set = set(chosen)
    for l, z in _layer_stream(net, X, be, method, _seeds(seed, a, b), chosen[-1]):
        if l not in chosen_set:
            continue
        for f in feats:
            F = be.to_numpy(f(z, be))
            if F.shape != (b - a,) + shapes[f.name]:
                raise ValueError(f"feature {f.name!r} returned shape {F.shape} for {b - a} "
                                 f"networks; expected {(b - a,) + shapes[f.name]}")
            if not np.isfinite(F).all():
                raise _overflow(l, f"feature {f.name!r} (a power of the preactivations)",
                                f"at layer {l}", be.abs_max(z))
            yield l, f.name, F


@dataclass(frozen=True, eq=False)
class _ShardJob:
    """Everything a worker needs to compute the features of any shard (see :mod:`.distributed`)."""

    net: MLP
    X: np.ndarray
    backend: str
    device: str
    method: str
    seed: int
    layers: tuple
    features: tuple
    shapes: dict
    starts: np.ndarray


@dataclass(frozen=True, eq=False)
class Accumulation:
    """Per-group sums of per-network features over an ensemble: the raw result of :func:`accumulate`.

    Attributes
    ----------
    sums : ``{(ℓ, feature name): ndarray (G, *feature shape)}``, sums over the networks of each group.
    counts : (G,) networks per group (group g holds networks ⌈g·E/G⌉ … ⌈(g+1)·E/G⌉ − 1).
    """

    net: MLP
    X: np.ndarray
    networks: int
    seed: int
    groups: int
    method: str
    backend: str
    device: str
    shard_size: int
    layers: tuple[int, ...]
    features: tuple
    sums: dict = field(repr=False)
    counts: np.ndarray = field(repr=False)

    def _layer(self, layer) -> int:
        l = self.net.check_layer(layer)
        if l not in self.layers:
            raise ValueError(f"layer {l} was not measured (measured layers: {list(self.layers)})")
        return l

    def _names(self, names) -> list[str]:
        known = [f.name for f in self.features]
        names = known if names is None else list(names)
        for nm in names:
            if nm not in known:
                raise ValueError(f"unknown feature {nm!r}; accumulated: {known}")
        return names

    def group_means(self, layer: int, name: str) -> np.ndarray:
        """Per-group means of feature ``name`` at layer ℓ, shape (G, *feature shape)."""
        l = self._layer(layer)
        self._names([name])
        shape = (-1,) + (1,) * (self.sums[(l, name)].ndim - 1)
        return self.sums[(l, name)] / self.counts.reshape(shape)

    def means(self, layer: int, names: Iterable[str] | None = None) -> LayerMeans:
        """Overall means of the features (default: all) at layer ℓ over the whole ensemble."""
        l = self._layer(layer)
        total = int(self.counts.sum())
        vals = {nm: self.sums[(l, nm)].sum(axis=0) / total for nm in self._names(names)}
        return LayerMeans(l, self.net.n(l), self.net.n(l - 1), total, vals)

    def jackknife(self, layer: int, estimate: Callable[[LayerMeans], np.ndarray],
                  names: Iterable[str] | None = None) -> Estimate:
        r"""θ = estimate(overall means) with its delete-one-group jackknife standard error.

        se² = (G−1)/G Σ_g (θ_{(−g)} − θ̄)², θ_{(−g)} computed from the means without group g.
        ``names`` restricts the features handed to ``estimate`` (default: all).
        """
        l = self._layer(layer)
        names = self._names(names)
        sums = {nm: self.sums[(l, nm)] for nm in names}
        tot = {nm: s.sum(axis=0) for nm, s in sums.items()}
        total = int(self.counts.sum())
        n, fan_in = self.net.n(l), self.net.n(l - 1)

        def at(values, count):
            return np.asarray(estimate(LayerMeans(l, n, fan_in, count, values)), dtype=np.float64)

        theta = at({nm: t / total for nm, t in tot.items()}, total)
        loo = np.stack([at({nm: (tot[nm] - sums[nm][g]) / (total - c) for nm in names}, total - int(c))
                        for g, c in enumerate(self.counts)])
        G = self.groups
        se = np.sqrt((G - 1) / G * ((loo - loo.mean(axis=0)) ** 2).sum(axis=0))
        return Estimate(theta, se, total)


class _Checkpoint:
    """A directory of per-shard group sums plus a manifest; every write is atomic (temp + os.replace).

    Shard s's file holds, for each group it touched, the running group sum after its last network:
    complete for groups that end inside the shard, partial for the one that continues. Loading it
    therefore restores exactly the state an uninterrupted run has after shard s.
    """

    def __init__(self, path, manifest: dict):
        self.path = os.fspath(path)
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise ValueError(f"checkpoint must be a directory; {self.path!r} is a file")
        os.makedirs(self.path, exist_ok=True)
        manifest = json.loads(json.dumps(manifest, default=str))
        mpath = os.path.join(self.path, "manifest.json")
        if os.path.exists(mpath):
            try:
                with open(mpath, encoding="utf-8") as fh:
                    old = json.load(fh)
            except (OSError, ValueError) as exc:
                raise ValueError(f"checkpoint manifest {mpath!r} is unreadable ({exc}); "
                                 f"use a fresh checkpoint directory") from None
            if old != manifest:
                keys = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
                raise ValueError(
                    f"checkpoint directory {self.path!r} belongs to a different measurement (differs in: "
                    f"{', '.join(keys)}); use a fresh directory or delete this one to start over")
        else:
            self._atomic(mpath, lambda fh: fh.write(json.dumps(manifest, indent=1, sort_keys=True).encode()))

    def _atomic(self, final: str, write: Callable) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise

    def _file(self, s: int) -> str:
        return os.path.join(self.path, f"shard-{s:06d}.npz")

    @staticmethod
    def _key(key) -> str:
        return f"L{key[0]}_{key[1]}"

    def load(self, s: int, header: np.ndarray, sums: dict, g_lo: int, g_hi: int,
             per_network: dict | None = None) -> bool:
        """Restore shard s's group sums (and the rows [a, b) of the ``per_network`` arrays); False
        when the shard was not saved or its file is unreadable (it is then recomputed)."""
        path = self._file(s)
        if not os.path.exists(path):
            return False
        try:
            with np.load(path, allow_pickle=False) as data:
                if not np.array_equal(data["header"], header):
                    raise ValueError("shard range differs from the manifest's")
                new = {}
                for key, arr in sums.items():
                    part = data[self._key(key)]
                    if part.shape != (g_hi - g_lo + 1,) + arr.shape[1:] or part.dtype != np.float64:
                        raise ValueError(f"array {self._key(key)} has shape {part.shape}")
                    new[key] = part
                a, b = int(header[1]), int(header[2])
                rows = {}
                for name, arr in (per_network or {}).items():
                    part = data[f"net_{name}"]
                    if part.shape != (b - a,) + arr.shape[1:] or part.dtype != arr.dtype:
                        raise ValueError(f"array net_{name} has shape {part.shape}")
                    rows[name] = part
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            warnings.warn(f"checkpoint shard {path!r} is unreadable ({exc}); recomputing it", stacklevel=4)
            return False
        for key, part in new.items():
            sums[key][g_lo:g_hi + 1] = part
        for name, part in rows.items():
            per_network[name][a:b] = part
        return True

    def save(self, s: int, header: np.ndarray, sums: dict, g_lo: int, g_hi: int,
             per_network: dict | None = None) -> None:
        arrays = {"header": header}
        arrays.update({self._key(key): arr[g_lo:g_hi + 1] for key, arr in sums.items()})
        a, b = int(header[1]), int(header[2])
        arrays.update({f"net_{name}": arr[a:b] for name, arr in (per_network or {}).items()})
        self._atomic(self._file(s), lambda fh: np.savez(fh, **arrays))


class _NoBar:
    def advance(self, k: int) -> None:
        pass


@contextlib.contextmanager
def _progress_bar(show: bool, total: int, description: str):
    if not show:
        yield _NoBar()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)

        class _Bar:
            def advance(self, k: int) -> None:
                bar.advance(task, k)

        yield _Bar()


def _x_digest(X: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(X, dtype=np.float64).tobytes()).hexdigest()


def accumulate(net: MLP, X, features: Iterable, networks: int = 1000, seed: int = 0, *,
               method: str = "gaussian", backend: str = "numpy", device=None,
               shard_size: int | None = None, groups: int = 32, layers=None, checkpoint=None,
               progress: bool | None = None, scheduler=None) -> Accumulation:
    """Stream an ensemble of random networks and sum per-network features by jackknife group.

    Parameters
    ----------
    net : the network (:class:`~pdlt.mlp.MLP`).
    X : inputs, shape (N, n0), one per row.
    features : :class:`Feature` objects, evaluated at each measured layer.
    networks : ensemble size E ≥ 2.  seed : integer ≥ 0.
    method : "gaussian" (fast, exact in law) or "naive" (explicit weights; the test oracle).
    backend, device : "numpy", or "torch" with a device string ("cpu", "cuda", "cuda:1"); float64.
    shard_size : networks per shard (default: cache-sized, and a shard's arrays under ~256 MB).
    groups : jackknife groups G, 2..networks.  layers : layers to measure (default all 1..L).
    checkpoint : a directory; finished shards are saved there and skipped on a rerun.
    progress : show a rich progress bar (None: only for a large run on a terminal).
    scheduler : None (default) computes the shards here, one after another. Otherwise they are
        computed on a Dask distributed cluster (needs ``pdlt[dask]``): ``"local"`` starts a
        LocalCluster of 2 worker processes for this call, a string such as ``"tcp://host:8786"`` is a
        scheduler address, or pass a ``distributed.Client``. The result is bitwise identical to the
        serial run's (see :mod:`pdlt.empirical.distributed`); checkpoints are shared between the two.

    Returns an :class:`Accumulation` with per-group sums; raises :class:`PreactivationOverflowError`
    when a layer's preactivations or features leave the float64 range.
    """
    cfg = _config(net, X, networks, seed, method, backend, device, shard_size, groups, layers,
                  list(features))
    if scheduler is not None:
        from .distributed import check_scheduler

        check_scheduler(scheduler)  # before any checkpoint is written
    net, X, E, G, be = cfg["net"], cfg["X"], cfg["networks"], cfg["groups"], cfg["be"]
    feats, chosen, shard = cfg["features"], cfg["layers"], cfg["shard_size"]
    N = X.shape[0]
    shapes = {f.name: tuple(int(d) for d in f.shape(N)) for f in feats}
    need = 8 * G * len(chosen) * sum(math.prod(shp) for shp in shapes.values())
    if need > ACCUMULATOR_BYTES:
        raise ValueError(
            f"the group sums would take {need / 2 ** 30:.1f} GiB ({G} groups × {len(chosen)} layers × "
            f"features {dict(shapes)}); measure fewer layers (layers=...), fewer groups, or for many "
            f"inputs only the kernel (observables=['G']): V and M4 have N⁴ entries")
    sums = {(l, f.name): np.zeros((G,) + shapes[f.name]) for l in chosen for f in feats}
    starts = _group_starts(E, G)
    store = _checkpoint_store(checkpoint, net, X, E, cfg["seed"], shard, G, chosen,
                              [[f.name, f"{type(f).__module__}.{type(f).__qualname__}"] for f in feats],
                              method=cfg["method"], backend=be.name, device=be.device.split(":")[0])
    show = (E * chosen[-1] >= _PROGRESS_AUTO and sys.stderr.isatty()) if progress is None else bool(progress)
    with _progress_bar(show, E, f"{E} networks, depth {chosen[-1]}") as bar:
        if scheduler is not None:  # shards computed on a Dask cluster, combined here in shard order
            from . import distributed

            job = _ShardJob(net, X, be.name, be.device, cfg["method"], cfg["seed"], chosen, feats, shapes,
                            starts)
            distributed.run_shards(scheduler, job, E, shard, sums, store, bar)
        else:
            def accumulate(a, b, gid, segments):
                with np.errstate(all="ignore"):  # overflow is detected and reported per layer below
                    for l, name, F in _shard_features(net, X, be, cfg["method"], cfg["seed"], a, b, chosen,
                                                      feats, shapes):
                        _add_by_group(sums[(l, name)], F, gid, segments)
            _shard_loop(E, shard, starts, sums, store, bar, accumulate)
    counts = np.diff(starts)
    return Accumulation(net, X, E, cfg["seed"], G, cfg["method"], be.name, be.device, shard, chosen,
                        feats, sums, counts)


# ---------------------------------------------------------------------------------------------
# Measurement


class LayerView:
    """One layer ℓ of a measurement: ``view[name]`` is ``parent.estimate(name, ℓ)``; width and fan-in."""

    def __init__(self, parent, layer: int):
        self._parent = parent
        self.layer = layer
        self.width = parent.net.n(layer)
        self.fan_in = parent.net.n(layer - 1)

    def __getitem__(self, name: str) -> Estimate:
        return self._parent.estimate(name, self.layer)


class LayerMeasurement(LayerView):
    """The estimates at one layer ℓ: ``G`` (= ``K``), ``V``, ``M4`` and any extra observable by name.

    - ``G`` / ``K``: (N, N) raw two-point function E[z_{i;a} z_{i;b}]. Its theory twin is the metric
      K^{(ℓ)} + G^{{1}(ℓ)}/n_{ℓ−1} + O(1/n²), not K alone (book §4.1–4.3; formula sheet §1).
    - ``V``: (N, N, N, N) four-point vertex, n_{ℓ−1} Cov(z_{i;a}z_{i;b}, z_{j;c}z_{j;d}), i ≠ j (§2);
      raises ValueError when n_ℓ = 1.
    - ``M4``: (N, N, N, N) single-neuron fourth moment E[z_{i;a}z_{i;b}z_{i;c}z_{i;d}].
    """

    @property
    def G(self) -> Estimate:
        return self["G"]

    @property
    def K(self) -> Estimate:
        """Alias of G, the measured kernel; compare it with K + G^{{1}}/n_{ℓ−1} from the theory."""
        return self["G"]

    @property
    def V(self) -> Estimate:
        return self["V"]

    @property
    def M4(self) -> Estimate:
        return self["M4"]

    def __repr__(self) -> str:
        return f"<LayerMeasurement layer={self.layer} n={self.width} fan_in={self.fan_in}>"


class Measurement:
    """The result of :func:`measure`: per-layer estimates with jackknife standard errors.

    Attributes: ``net``, ``X`` (N, n0), ``networks``, ``seed``, ``method``, ``backend``, ``device``,
    ``groups``, ``shard_size``, ``layers`` (measured), ``observables`` (names), ``accumulation``.
    """

    def __init__(self, accumulation: Accumulation, observables: Sequence[Observable]):
        self.accumulation = accumulation
        self._observables = {o.name: o for o in observables}
        self._cache: dict[tuple[str, int], Estimate] = {}

    @property
    def net(self) -> MLP:
        return self.accumulation.net

    @property
    def X(self) -> np.ndarray:
        return self.accumulation.X

    @property
    def networks(self) -> int:
        return self.accumulation.networks

    @property
    def seed(self) -> int:
        return self.accumulation.seed

    @property
    def method(self) -> str:
        return self.accumulation.method

    @property
    def backend(self) -> str:
        return self.accumulation.backend

    @property
    def device(self) -> str:
        return self.accumulation.device

    @property
    def groups(self) -> int:
        return self.accumulation.groups

    @property
    def shard_size(self) -> int:
        return self.accumulation.shard_size

    @property
    def layers(self) -> tuple[int, ...]:
        return self.accumulation.layers

    @property
    def observables(self) -> tuple[str, ...]:
        return tuple(self._observables)

    def layer(self, layer: int) -> LayerMeasurement:
        """Estimates at layer ℓ = 1..L (a measured layer)."""
        return LayerMeasurement(self, self.accumulation._layer(layer))

    def estimate(self, name: str, layer: int) -> Estimate:
        """The observable ``name`` ("G", "K", "V", "M4" or an extra one) at layer ℓ."""
        l = self.accumulation._layer(layer)
        name = "G" if name == "K" else name
        if name not in self._observables:
            raise ValueError(f"observable {name!r} was not measured (measured: {', '.join(self._observables)}); "
                             f"pass it in measure(..., observables=[...])")
        obs = self._observables[name]
        if self.net.n(l) < obs.min_width:
            raise ValueError(f"{name} is not measurable at layer {l}: n_{l} = {self.net.n(l)} < "
                             f"{obs.min_width}. {obs.why}".rstrip())
        if (name, l) not in self._cache:
            est = self.accumulation.jackknife(l, obs.estimate, [f.name for f in obs.features])
            if not (np.isfinite(est.mean).all() and np.isfinite(est.stderr).all()):
                raise PreactivationOverflowError(
                    f"the estimate of {name} at layer {l} is not finite in float64 (the layer's moments "
                    f"overflow); lower C_W or the depth, or measure shallower layers")
            self._cache[(name, l)] = est
        return self._cache[(name, l)]

    def to_dict(self) -> dict:
        """JSON-able summary: settings plus every observable at every measured layer (None if n_ℓ too small)."""
        out = {"net": self.net.to_dict(), "X": self.X.tolist(), "networks": self.networks,
               "seed": self.seed, "method": self.method, "backend": self.backend, "device": self.device,
               "groups": self.groups, "shard_size": self.shard_size, "layers": []}
        for l in self.layers:
            entry = {"layer": l, "width": self.net.n(l), "fan_in": self.net.n(l - 1)}
            for name, obs in self._observables.items():
                entry[name] = (self.estimate(name, l).to_dict() if self.net.n(l) >= obs.min_width else None)
            out["layers"].append(entry)
        return out

    def __repr__(self) -> str:
        return (f"<Measurement {self.net!r}, N={self.X.shape[0]}, networks={self.networks}, "
                f"method={self.method!r}, backend={self.backend!r}, layers={list(self.layers)}>")


def measure(net: MLP, X, networks: int = 1000, seed: int = 0, *, method: str = "gaussian",
            backend: str = "numpy", device=None, shard_size: int | None = None, groups: int = 32,
            layers=None, observables: Iterable[str | Observable] | None = None, checkpoint=None,
            progress: bool | None = None, scheduler=None) -> Measurement:
    """Measure the kernel G (= K), the four-point vertex V and M4 on an ensemble of random networks.

    Parameters are those of :func:`accumulate`, plus ``observables``: what to measure, a list of
    the built-in names "G" (alias "K"), "V", "M4" and/or extra :class:`Observable` objects
    (default: G, V and M4). Only the features these need are computed: V and M4 cost O(n N⁴) per
    network and layer, G only O(n N²). Returns a :class:`Measurement`;
    ``measure(net, X).layer(l).V`` is an :class:`~pdlt.estimate.Estimate` of shape (N, N, N, N).
    Book Ch. 4 (eqs. (4.7), (4.43)); formula sheet §1–2.
    """
    builtin = {o.name: o for o in DEFAULT_OBSERVABLES}
    obs: list[Observable] = []
    for o in (tuple(builtin) if observables is None else
              (observables,) if isinstance(observables, str | Observable) else observables):
        if isinstance(o, str) and o in ("G", "K", "V", "M4"):
            o = builtin["G" if o == "K" else o]
        elif isinstance(o, Observable):
            if o.name in ("G", "K", "V", "M4") and o is not builtin.get(o.name) or not _NAME.match(o.name):
                raise ValueError(f"observable name must be an identifier other than G, K, V, M4; got {o.name!r}")
        else:
            raise ValueError(f"observables must list 'G', 'K', 'V', 'M4' or pdlt.empirical.Observable "
                             f"objects, got {o!r}")
        if o.name in {x.name for x in obs}:
            if o is not next(x for x in obs if x.name == o.name):
                raise ValueError(f"two different observables are named {o.name!r}")
            continue
        obs.append(o)
    if not obs:
        raise ValueError("observables must name at least one observable")
    feats = [f for o in obs for f in o.features]
    acc = accumulate(net, X, feats, networks, seed, method=method, backend=backend, device=device,
                     shard_size=shard_size, groups=groups, layers=layers, checkpoint=checkpoint,
                     progress=progress, scheduler=scheduler)
    return Measurement(acc, obs)
