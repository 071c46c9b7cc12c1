r"""The empirical neural tangent kernel: per-network NTK and its ensemble statistics (book Ch. 7–8).

Per network
-----------
The NTK of layer ℓ (formula sheet §0) is
:math:`\hat H^{(\ell)}_{i_1i_2;\alpha_1\alpha_2} = \sum_{\mu\nu}\lambda_{\mu\nu}\,
\frac{dz^{(\ell)}_{i_1;\alpha_1}}{d\theta_\mu}\frac{dz^{(\ell)}_{i_2;\alpha_2}}{d\theta_\nu}`, with
λ_b^{(ℓ)} for biases and λ_W^{(ℓ)}/n_{ℓ−1} for the weights of layer ℓ. Two independent computations:

- :func:`forward_ntk` (the engine): the forward equation (formula sheet §5) on explicit weights,

  .. math:: \hat H^{(1)} = \delta_{i_1i_2}\big[\lambda_b^{(1)} + \lambda_W^{(1)}\,x_{\alpha_1}\!\cdot x_{\alpha_2}/n_0\big],\\
            \hat H^{(\ell+1)}_{\alpha_1\alpha_2} = \delta\big[\lambda_b + \tfrac{\lambda_W}{n_\ell}\textstyle\sum_j\sigma_{j;\alpha_1}\sigma_{j;\alpha_2}\big]
            + \tilde W_{\alpha_1}\hat H^{(\ell)}_{\alpha_1\alpha_2}\tilde W_{\alpha_2}^\top,
            \qquad \tilde W_\alpha = W^{(\ell+1)}\operatorname{diag}(\sigma'_{\cdot;\alpha}),

  batched over networks, kept packed over sample pairs α1 ≤ α2 (Ĥ_{α2α1} = Ĥ_{α1α2}ᵀ as an
  n×n matrix). Cost O(N² n³) per layer and network.
- :func:`autodiff_ntk` (the oracle): torch.func ``jacrev`` of the same network's preactivations
  with respect to every weight and bias, contracted with the learning-rate tensor, ``vmap``-ed
  over networks.

Both return arrays laid out ``H[e, i1, i2, α1, α2]`` (as in the sheet).

Ensemble statistics
-------------------
:func:`measure_ntk` streams networks drawn exactly like ``pdlt.measure(method="naive")`` (network e
from ``SeedSequence(seed, spawn_key=(e,))``, per layer the n_ℓ×n_{ℓ−1} weights row-major then the
n_ℓ biases, one call per network; the preactivations are computed with the engine's arithmetic, so
they are bitwise the engine's). Per network and measured layer (n = n_ℓ, the sum over i ≠ j written
Σ'), it accumulates, by jackknife group:

=======  ==================================================================================
``P``    :math:`\frac1n\sum_i z_{i;a}z_{i;b}` (the kernel G, as in :mod:`pdlt.empirical.kernel`)
``Hd``   :math:`\frac1n\sum_i \hat H_{ii;ab}`
``MHH``  :math:`\frac1n\sum_i \hat H_{ii;ab}\hat H_{ii;cd}`;  ``HdHd`` = Hd⊗Hd
``MHZ``  :math:`\frac1n\sum_i \hat H_{ii;ab} z_{i;c}z_{i;d}`;  ``HdP`` = Hd⊗P
``QB``   :math:`\frac{1}{n(n-1)}\Sigma'\,\hat H_{ij;ac}\hat H_{ij;bd}`, stored [a, b, c, d]
``QF``   :math:`\frac{1}{n(n-1)}\Sigma'\,\hat H_{ij;ac}\,z_{i;b}\,z_{j;d}`, stored [a, b, c, d]
=======  ==================================================================================

and the estimators (E networks, bars = ensemble means, m = n_{ℓ−1} the fan-in) are, with the
sheet's index layout, from
:math:`E[\Delta\hat H_{i_1i_2}\Delta\hat H_{i_3i_4}] = \frac1m[\delta_{i_1i_2}\delta_{i_3i_4}A + \delta_{i_1i_3}\delta_{i_2i_4}B_{\alpha_1\alpha_3\alpha_2\alpha_4} + \delta_{i_1i_4}\delta_{i_2i_3}B_{\alpha_1\alpha_4\alpha_2\alpha_3}]`
and :math:`E[\Delta\hat H_{i_1i_2} z_{i_3}z_{i_4}] = \frac1m[\delta_{i_1i_2}\delta_{i_3i_4}D + \delta_{i_1i_3}\delta_{i_2i_4}F_{\alpha_1\alpha_3\alpha_2\alpha_4} + \delta_{i_1i_4}\delta_{i_2i_3}F_{\alpha_1\alpha_4\alpha_2\alpha_3}]`:

- ``Theta[a, b]`` = :math:`\overline{Hd}` = E[Ĥ_{ii;ab}], the NTK mean H^{(ℓ)} = Θ^{(ℓ)} + O(1/n).
- ``A[a, b, c, d]`` = A_{(ab)(cd)} = m Cov(Ĥ_{ii;ab}, Ĥ_{jj;cd}), i ≠ j (only the A term survives):
  :math:`m\big[\tfrac{n\overline{HdHd} - \overline{MHH}}{n-1} - \tfrac{E\,\overline{Hd}\otimes\overline{Hd} - \overline{HdHd}}{E-1}\big]`
  (the second term is the unbiased product of means, as for V).
- ``B[a, b, c, d]`` = B_{α1α3α2α4} with (α1, α3, α2, α4) = (a, b, c, d) = m E[Ĥ_{ij;ac} Ĥ_{ij;bd}],
  i ≠ j (i1 = i3 = i, i2 = i4 = j; E[Ĥ_{ij}] = 0 exactly for i ≠ j, by the sign flip of neuron i):
  :math:`m\,\overline{QB}`. The first two slots belong to neuron i, the last two to neuron j.
- ``D[a, b, c, d]`` = D_{α1α2α3α4} (NTK samples a, b; z samples c, d) = m Cov(Ĥ_{ii;ab}, z_{j;c}z_{j;d}),
  i ≠ j: :math:`m\big[\tfrac{n\overline{HdP} - \overline{MHZ}}{n-1} - \tfrac{E\,\overline{Hd}\otimes\overline{P} - \overline{HdP}}{E-1}\big]`.
- ``F[a, b, c, d]`` = F_{α1α3α2α4} with (α1, α3, α2, α4) = (a, b, c, d) = m E[Ĥ_{ij;ac} z_{i;b} z_{j;d}],
  i ≠ j: :math:`m\,\overline{QF}`. NTK samples are slots 0 and 2 (α1, α2), the z samples slots 1
  and 3 (α3 on neuron i = i1, α4 on neuron j = i2), as in the sheet's F recursion.

So for one input (N = 1): Var(Ĥ_ii) = (A + 2B)/m, Cov(Ĥ_ii, z_j²) = D/m, Cov(Ĥ_ii, z_i²) = (D + 2F)/m.
A, B, D and F need n_ℓ ≥ 2 (a pair i ≠ j) and vanish at ℓ = 1. Standard errors are the engine's
delete-one-group jackknife over the same groups (network e in group ⌊e G / E⌋).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import _validate as v
from ..mlp import MLP
from . import engine
from ._views import EstimatorMeasurement
from .kernel import pair_index

__all__ = ["forward_ntk", "autodiff_ntk", "sample_parameters", "measure_ntk", "NTKMeasurement",
           "NTKLayerMeasurement", "NTK_OBSERVABLES"]

#: Observables of :func:`measure_ntk` (besides ``G``, the kernel).
NTK_OBSERVABLES = ("Theta", "A", "B", "D", "F")
_NTK_CACHE_BYTES = 32 * 2 ** 20
_FEATURES = ("P", "Hd", "MHH", "HdHd", "MHZ", "HdP", "QB", "QF")


# ---------------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True)
class Parameters:
    """Explicit weights of a batch of E networks, layers 1..``depth``.

    ``W_raw[l-1]`` (E, n_ℓ, n_{ℓ−1}) and ``b_raw[l-1]`` (E, n_ℓ) are the standard normals; the
    weights are ``W_raw·√(C_W/n_{ℓ−1})`` and the biases ``b_raw·√C_b`` (see :meth:`W`, :meth:`b`).
    """

    net: MLP
    W_raw: tuple
    b_raw: tuple

    @property
    def depth(self) -> int:
        return len(self.W_raw)

    def W(self, l: int) -> np.ndarray:
        return self.W_raw[l - 1] * math.sqrt(self.net.C_W[l - 1] / self.net.widths[l - 1])

    def b(self, l: int) -> np.ndarray:
        return self.b_raw[l - 1] * math.sqrt(self.net.C_b[l - 1])


def sample_parameters(net: MLP, seed: int, start: int, stop: int, depth: int | None = None) -> Parameters:
    """Networks start..stop−1 of the ensemble with this seed, as ``measure(method="naive")`` draws them.

    Network e draws from ``SeedSequence(seed, spawn_key=(e,))`` all its normals in one call: per
    layer ℓ = 1..depth the n_ℓ×n_{ℓ−1} weights (row-major), then the n_ℓ biases.
    """
    depth = net.depth if depth is None else depth
    w = net.widths
    sizes = [w[l] * w[l - 1] + w[l] for l in range(1, depth + 1)]
    normals = engine._NumpyBackend().normals(engine._seeds(seed, start, stop), sum(sizes))
    E = stop - start
    Ws, bs, off = [], [], 0
    for l in range(1, depth + 1):
        n_in, n_out = w[l - 1], w[l]
        Ws.append(normals[:, off:off + n_out * n_in].reshape(E, n_out, n_in))
        bs.append(normals[:, off + n_out * n_in:off + n_out * n_in + n_out])
        off += n_out * n_in + n_out
    return Parameters(net, tuple(Ws), tuple(bs))


# ---------------------------------------------------------------------------------------------
# The forward equation (numpy, batched over networks)


def _sigma_prime(net: MLP):
    act = net.activation
    from .. import activations as A

    if isinstance(act, A.PiecewiseLinear) and type(act).derivative is A.PiecewiseLinear.derivative:
        ap, am = act.a_plus, act.a_minus
        return lambda z: np.where(z >= 0, ap, am)
    return lambda z: np.asarray(act.derivative(z, 1), dtype=np.float64)


def _forward_stream(params: Parameters, X: np.ndarray, max_layer: int):
    """Yield (ℓ, zᵀ (E, N, n_ℓ), Ĥ packed (E, p, n_ℓ, n_ℓ)) for ℓ = 1..max_layer.

    The packed entry k holds the n_ℓ×n_ℓ matrix Ĥ_{·,·;ia[k] ib[k]} with ia ≤ ib (``pair_index``).
    zᵀ is computed with the engine's exact arithmetic (bitwise the engine's naive preactivations).
    """
    net = params.net
    be = engine._NumpyBackend()
    sigma = be.sigma(net.activation)
    dsigma = _sigma_prime(net)
    N = X.shape[0]
    ia, ib, _ = pair_index(N)
    E = params.W_raw[0].shape[0]
    prev = H = None
    for l in range(1, max_layer + 1):
        n_in, n_out = net.widths[l - 1], net.widths[l]
        C_b, C_W = net.hyper(l)
        lam_b, lam_W = net.lambda_b[l - 1], net.lambda_W[l - 1]
        Wr, br = params.W_raw[l - 1], params.b_raw[l - 1]
        act = X if l == 1 else sigma(prev)  # (N, n0) or (E, N, n_in)
        z = Wr @ np.ascontiguousarray(act.mT)
        zt = np.ascontiguousarray(z.mT) * math.sqrt(C_W / n_in) + math.sqrt(C_b) * br[:, None, :]
        # the δ-term λ_b + (λ_W/n_in) Σ_j σ_jα σ_jβ, (E, p)
        gram = act @ act.mT
        packed = gram[..., ia, ib] if gram.ndim == 3 else np.broadcast_to(gram[ia, ib], (E, ia.size))
        c = lam_b + (lam_W / n_in) * packed
        if l == 1:
            Hn = np.zeros((E, ia.size, n_out, n_out))
        else:
            # W̃_α Ĥ_{αβ} W̃_βᵀ = W S W^T with S = diag(σ'_α) Ĥ_{αβ} diag(σ'_β): two large GEMMs per
            # network (all pairs stacked), much faster than p small batched products
            W = Wr * math.sqrt(C_W / n_in)
            sp = dsigma(prev)  # (E, N, n_in)
            S = H * sp[:, ia, :, None] * sp[:, ib, None, :]  # (E, p, n_in, n_in)
            T = (S.reshape(E, -1, n_in) @ W.mT).reshape(E, -1, n_in, n_out)  # S W^T
            T = np.ascontiguousarray(T.swapaxes(-1, -2)).reshape(E, -1, n_in)  # (S W^T)^T = W S^T
            Hn = np.ascontiguousarray((T @ W.mT).reshape(E, -1, n_out, n_out).swapaxes(-1, -2))
        d = np.arange(n_out)
        Hn[..., d, d] += c[..., None]
        yield l, zt, Hn
        prev, H = zt, Hn


def _unpack(Hp: np.ndarray, N: int) -> np.ndarray:
    """Packed (E, p, n, n) → full (E, N, N, n, n) with H[:, β, α] = H[:, α, β]ᵀ."""
    ia, ib, _ = pair_index(N)
    E, _, n, _ = Hp.shape
    out = np.empty((E, N, N, n, n))
    out[:, ia, ib] = Hp
    out[:, ib, ia] = Hp.swapaxes(-1, -2)
    return out


def forward_ntk(net: MLP, X, params: Parameters, layers=None) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The per-network NTK by the forward equation: ``{ℓ: (z, H)}``.

    z: (E, n_ℓ, N) preactivations; H: (E, n_ℓ, n_ℓ, N, N), ``H[e, i1, i2, α1, α2]`` = Ĥ^{(ℓ)}_{i1i2;α1α2}.
    ``params`` from :func:`sample_parameters` (or built by hand). Float64, numpy.
    """
    X = v.inputs("X", X, net.input_dim)
    layers = engine._check_layers(net, layers)
    if params.depth < layers[-1]:
        raise ValueError(f"params hold {params.depth} layers; layer {layers[-1]} was asked for")
    out = {}
    for l, zt, Hp in _forward_stream(params, X, layers[-1]):
        if l in layers:
            out[l] = (zt.mT.copy(), _unpack(Hp, X.shape[0]).transpose(0, 3, 4, 1, 2).copy())
    return out


# ---------------------------------------------------------------------------------------------
# The oracle: automatic differentiation


def autodiff_ntk(net: MLP, X, params: Parameters, layer: int | None = None, *, chunk: int | None = None):
    """The per-network NTK of layer ℓ (default L) by torch.func (jacrev, vmap): (E, n_ℓ, n_ℓ, N, N).

    Ĥ = Σ_ℓ' [λ_b J_b J_bᵀ + (λ_W/n_{ℓ'−1}) J_W J_Wᵀ] with J the Jacobians of z^{(ℓ)} (all
    outputs and inputs) with respect to the biases and weights of layer ℓ' ≤ ℓ, taken one layer ℓ'
    at a time (jacrev), then contracted. Float64 on the CPU.
    ``chunk``: networks per vmap call (memory).
    """
    import torch
    from torch.func import jacrev, vmap

    X = v.inputs("X", X, net.input_dim)
    layer = net.depth if layer is None else net.check_layer(layer)
    sig = engine._torch_sigma(net.activation, torch)
    Xt = torch.as_tensor(X, dtype=torch.float64)
    Ws = [torch.as_tensor(params.W(l)) for l in range(1, layer + 1)]
    bs = [torch.as_tensor(params.b(l)) for l in range(1, layer + 1)]

    def f(Wl, bl, k, Wk, bk):  # z^{(ℓ)} (n_ℓ, N) with layer k's parameters replaced by (Wk, bk)
        h = Xt.T
        for l in range(layer):
            W, b = (Wk, bk) if l == k else (Wl[l], bl[l])
            z = W @ h + b[:, None]
            h = sig(z)
        return z

    def ntk(Wl, bl):
        # one parameter layer at a time: the Jacobian of all outputs w.r.t. all weights at once would
        # take n_ℓ N × (number of parameters) floats
        H = 0.0
        for k in range(layer):
            jW, jb = jacrev(f, argnums=(3, 4))(Wl, bl, k, Wl[k], bl[k])
            lam_b, lam_W, n_in = net.lambda_b[k], net.lambda_W[k], net.widths[k]
            H = H + lam_b * torch.einsum("iak,jbk->ijab", jb, jb)
            jW = jW.reshape(jW.shape[0], jW.shape[1], -1)
            H = H + (lam_W / n_in) * torch.einsum("iap,jbp->ijab", jW, jW)
        return H

    E = Ws[0].shape[0]
    chunk = E if chunk is None else chunk
    parts = [vmap(ntk)([w[a:a + chunk] for w in Ws], [b[a:a + chunk] for b in bs]) for a in range(0, E, chunk)]
    return torch.cat(parts).numpy()


# ---------------------------------------------------------------------------------------------
# Features and estimators


def _features(zt: np.ndarray, Hp: np.ndarray, N: int) -> dict[str, np.ndarray]:
    """Per-network features (E, ...) of one layer; see the module docstring."""
    E, n = zt.shape[0], zt.shape[-1]
    ia, ib, idx = pair_index(N)
    nn = float(n)
    z = zt.mT  # (E, n, N)
    P = (zt @ z) / nn
    diag = np.diagonal(Hp, axis1=-2, axis2=-1)  # (E, p, n): Ĥ_{ii;ab}, pair-packed
    Hd_p = diag.mean(axis=-1)  # (E, p)
    Hd = Hd_p[:, idx]  # (E, N, N)
    dfull = diag[:, idx]  # (E, N, N, n)
    df = dfull.reshape(E, N * N, n)
    MHH = ((df @ df.mT) / nn).reshape(E, N, N, N, N)
    HdHd = Hd[:, :, :, None, None] * Hd[:, None, None, :, :]
    zz = (zt[:, :, None, :] * zt[:, None, :, :]).reshape(E, N * N, n)  # z_{ic} z_{id}
    MHZ = ((df @ zz.mT) / nn).reshape(E, N, N, N, N)
    HdP = Hd[:, :, :, None, None] * P[:, None, None, :, :]
    out = {"P": P, "Hd": Hd, "MHH": MHH, "HdHd": HdHd, "MHZ": MHZ, "HdP": HdP}
    if n >= 2:
        Hf = _unpack(Hp, N)  # (E, N, N, n, n): [a, c, i, j] = Ĥ_{ij;ac}
        flat = Hf.reshape(E, N * N, n * n)
        S = (flat @ flat.mT - nn * MHH.reshape(E, N * N, N * N)).reshape(E, N, N, N, N)  # [a,c,b,d]
        QB = S.transpose(0, 1, 3, 2, 4) / (nn * (nn - 1))  # [a, b, c, d] = Σ' Ĥ_{ij;ac} Ĥ_{ij;bd}
        # Σ_{ij} z_{ib} Ĥ_{ij;ac} z_{jd} = (zᵀ Ĥ_{ac} z)_{bd}; the i = j part is n·MHZ[a, c, b, d]
        T = (zt[:, None, None] @ Hf) @ z[:, None, None]  # (E, N, N, N, N) [a, c, b, d]
        QF = (T - nn * MHZ).transpose(0, 1, 3, 2, 4) / (nn * (nn - 1))
    else:
        QB = QF = np.zeros((E, N, N, N, N))
    out["QB"], out["QF"] = QB, QF
    return out


def _est_theta(m):
    return np.asarray(m["Hd"])


def _est_G(m):
    return np.asarray(m["P"])


def _unbiased_product(E: int, a_bar_outer: np.ndarray, mean_outer: np.ndarray) -> np.ndarray:
    return (E * a_bar_outer - mean_outer) / (E - 1)


def _est_A(m):
    n, E = m.width, m.count
    Hd = m["Hd"]
    T = (n * m["HdHd"] - m["MHH"]) / (n - 1)
    return m.fan_in * (T - _unbiased_product(E, np.multiply.outer(Hd, Hd), m["HdHd"]))


def _est_B(m):
    return m.fan_in * np.asarray(m["QB"])


def _est_D(m):
    n, E = m.width, m.count
    T = (n * m["HdP"] - m["MHZ"]) / (n - 1)
    return m.fan_in * (T - _unbiased_product(E, np.multiply.outer(m["Hd"], m["P"]), m["HdP"]))


def _est_F(m):
    return m.fan_in * np.asarray(m["QF"])


_ESTIMATORS = {"G": (_est_G, ("P",)), "Theta": (_est_theta, ("Hd",)),
               "A": (_est_A, ("Hd", "MHH", "HdHd")), "B": (_est_B, ("QB",)),
               "D": (_est_D, ("Hd", "P", "MHZ", "HdP")), "F": (_est_F, ("QF",))}


class _Name:
    """A named placeholder for Accumulation.features (only ``.name`` is read)."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"NTKFeature({self.name!r})"


class NTKLayerMeasurement(engine.LayerView):
    """Estimates at one layer: ``Theta`` (N, N), ``A``, ``B``, ``D``, ``F`` (N, N, N, N), ``G`` (N, N).

    Index layouts are the module docstring's (the formula sheet's, §5). ``H`` is an alias of
    ``Theta`` (the measured mean is H = Θ + O(1/n)); ``K`` an alias of ``G``.
    """

    Theta = property(lambda self: self["Theta"])
    H = property(lambda self: self["Theta"])
    A = property(lambda self: self["A"])
    B = property(lambda self: self["B"])
    D = property(lambda self: self["D"])
    F = property(lambda self: self["F"])
    G = property(lambda self: self["G"])
    K = property(lambda self: self["G"])

    def __repr__(self) -> str:
        return f"<NTKLayerMeasurement layer={self.layer} n={self.width} fan_in={self.fan_in}>"


class NTKMeasurement(EstimatorMeasurement):
    """Result of :func:`measure_ntk`; ``.layer(l)`` gives the estimates at layer ℓ."""

    estimators = _ESTIMATORS
    pair_names = ("A", "B", "D", "F")
    layer_view = NTKLayerMeasurement
    kind = "NTK"

    def __repr__(self) -> str:
        return (f"<NTKMeasurement {self.net!r}, N={self.X.shape[0]}, networks={self.networks}, "
                f"layers={list(self.layers)}>")


def default_ntk_shard_size(net: MLP, N: int, max_layer: int, networks: int) -> int:
    """Networks per shard: the forward equation's working set (packed Ĥ, its products, the full
    Ĥ of a measured layer and the weights) under :data:`engine.SHARD_BYTES`."""
    w = net.widths[:max_layer + 1]
    p = N * (N + 1) // 2
    n = max(w[1:])
    normals = sum(w[l] * w[l - 1] + w[l] for l in range(1, len(w)))
    per = 4 * p * n * n + 2 * N * N * n * n + 2 * N * n * n + normals + 16 * N ** 4
    # small shards stay in cache (measured: 4–8× faster than ~50 networks at n = 256)
    return max(1, min(networks, _NTK_CACHE_BYTES // (8 * per), engine.SHARD_BYTES // (8 * per)))


def measure_ntk(net: MLP, X, networks: int = 1000, seed: int = 0, *, layers=None, groups: int = 32,
                shard_size: int | None = None, progress: bool | None = None, checkpoint=None) -> NTKMeasurement:
    """Measure the NTK mean Θ (= H) and the fluctuation tensors A, B, D, F on an ensemble of networks.

    The networks are those of ``pdlt.measure(net, X, networks, seed, method="naive")``; the
    estimators and index layouts are in the module docstring. ``layers``: layers to report (default
    all; the recursion always runs from layer 1). ``groups``: jackknife groups. Results are bitwise
    independent of ``shard_size``. ``checkpoint``: a directory; finished shards are saved there
    atomically and skipped on a rerun (the engine's format, :func:`pdlt.measure`), so an interrupted
    run resumes with identical numbers. Returns an :class:`NTKMeasurement`.
    Cost O(N² n³) per layer and network (N inputs, width n), plus O(N⁴ n²) per measured layer.
    """
    if not isinstance(net, MLP):
        raise TypeError(f"net must be a pdlt.MLP, got {type(net).__name__}")
    X = v.inputs("X", X, net.input_dim)
    E, seed, G = engine._check_ensemble(networks, seed, groups)
    chosen = engine._check_layers(net, layers)
    N = X.shape[0]
    shard = (default_ntk_shard_size(net, N, chosen[-1], E) if shard_size is None
             else min(v.positive_int("shard_size", shard_size), E))
    shapes = {"P": (N, N), "Hd": (N, N)}
    shapes.update({k: (N,) * 4 for k in _FEATURES if k not in shapes})
    sums = {(l, k): np.zeros((G,) + shapes[k]) for l in chosen for k in _FEATURES}
    starts = engine._group_starts(E, G)
    store = engine._checkpoint_store(checkpoint, net, X, E, seed, shard, G, chosen, _FEATURES,
                                    measurement="measure_ntk")

    def accumulate(a, b, gid, segments):
        params = sample_parameters(net, seed, a, b, chosen[-1])
        with np.errstate(all="ignore"):
            for l, zt, Hp in _forward_stream(params, X, chosen[-1]):
                if not (np.isfinite(zt).all() and np.isfinite(Hp).all()):
                    raise engine.PreactivationOverflowError(
                        f"non-finite preactivations or NTK at layer {l}; lower C_W, λ or the depth")
                if l not in chosen:
                    continue
                for k, F in _features(zt, Hp, N).items():
                    engine._add_by_group(sums[(l, k)], F, gid, segments)

    show = (E * chosen[-1] >= 2000 and __import__("sys").stderr.isatty()) if progress is None else bool(progress)
    with engine._progress_bar(show, E, f"NTK: {E} networks, depth {chosen[-1]}") as bar:
        engine._shard_loop(E, shard, starts, sums, store, bar, accumulate)
    acc = engine.Accumulation(net, X, E, seed, G, "naive", "numpy", "cpu", shard, chosen,
                              tuple(_Name(k) for k in _FEATURES), sums, np.diff(starts))
    return NTKMeasurement(acc)
