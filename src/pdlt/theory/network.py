"""A network's theory is a composition of layer steps acting on an immutable :class:`LayerState`."""

from __future__ import annotations

import types

import numpy as np

from .. import _validate
from ..mlp import MLP
from ._gauss import Expectations
from .dntk import (LayerMoments, ddntk_first_layer_fields, ddntk_step, ddntk_step_single,
                   dntk_first_layer_fields, dntk_step, dntk_step_single)
from .four_point import (derivative_coefficients, g1_step, g1_step_single, vertex_step,
                         vertex_step_single)
from .kernel import first_layer_kernel, kernel_step, kernel_step_single
from .ntk import check_ntk_activation, ntk_first_layer_fields, ntk_step, ntk_step_single
from .state import DDNTK_FIELDS, DNTK_FIELDS, NTK_FIELDS, OPTIONAL_FIELDS, LayerState

__all__ = ["Theory", "theory", "layer_step"]

#: |K| beyond this is reported as an overflow (the recursion has left the regime of any real network).
OVERFLOW = 1e150


class Theory:
    """The per-layer states of a network on a set of inputs. ``layer(ℓ)`` for ℓ = 1..L."""

    def __init__(self, net: MLP, X: np.ndarray, states: tuple[LayerState, ...]):
        self.net = net
        self.X = X
        self.layers = states

    def layer(self, layer: int) -> LayerState:
        return self.layers[self.net.check_layer(layer) - 1]

    def __repr__(self) -> str:
        return f"Theory({self.net!r}, N={self.X.shape[0]})"

    def to_dict(self) -> dict:
        return {"net": self.net.to_dict(), "X": self.X.tolist(), "layers": [s.to_dict() for s in self.layers]}


def layer_step(state: LayerState, net: MLP, E: Expectations) -> LayerState:
    """Layer ℓ → ℓ+1: (K, V, G^{{1}}) through one hidden layer of ``net``, and the NTK fields
    (Θ, A, B, D, F), dNTK fields (P, Q) and ddNTK fields (R, S, T, U) when ``state`` carries them
    (each recursion reads layer-ℓ fields only)."""
    ell = state.layer
    C_b, C_W = net.hyper(ell + 1)
    lam_b, lam_W = net.lambda_b[ell], net.lambda_W[ell]
    n_l, n_prev = net.n(ell), net.n(ell - 1)
    r = n_l / n_prev
    K, V, G1 = state.K, state.V, state.G1
    with_ntk = state.Theta is not None
    with_dntk = with_ntk and state.P is not None
    with_ddntk = with_dntk and state.R is not None
    if K.shape[0] == 1:
        k, v, g = float(K[0, 0]), float(V[0, 0, 0, 0]), float(G1[0, 0])
        K2 = kernel_step_single(k, C_b, C_W, E)
        V2 = vertex_step_single(k, v, C_W, r, E)
        G2 = g1_step_single(k, v, g, C_W, r, E)
        ntk = {}
        if with_ntk:
            args = (float(getattr(state, f).reshape(-1)[0]) for f in NTK_FIELDS)
            ntk = {f: np.full((1,) * (2 if f == "Theta" else 4), val) for f, val in
                   ntk_step_single(k, v, *args, C_W, lam_b, lam_W, r, E).items()}
        one = {f: float(getattr(state, f).reshape(-1)[0]) for f in OPTIONAL_FIELDS
               if getattr(state, f) is not None}
        if with_dntk:
            new = dntk_step_single(k, *(one[f] for f in ("Theta", "B", "F", "P", "Q")), C_W, lam_W, r, E)
            ntk.update({f: np.full((1,) * 4, val) for f, val in new.items()})
        if with_ddntk:
            new = ddntk_step_single(k, *(one[f] for f in ("Theta", "B", "F", "P", "Q", "R", "S", "T", "U")),
                                    C_W, lam_W, r, E)
            ntk.update({f: np.full((1,) * 4, val) for f, val in new.items()})
        return LayerState(ell + 1, n_l, np.full((1, 1), K2), np.full((1,) * 4, V2), np.full((1, 1), G2),
                          **ntk)
    coeffs = derivative_coefficients(K, E)
    ntk = {}
    if with_ntk:
        ntk = ntk_step(K, V, *(getattr(state, f) for f in NTK_FIELDS), C_W, lam_b, lam_W, r, E)
    if with_dntk:
        common = LayerMoments(K, state.Theta, C_W, lam_W, E)
        ntk.update(dntk_step(K, *(getattr(state, f) for f in ("Theta", "B", "F", "P", "Q")), C_W, lam_W, r, E,
                             moments=common))
        if with_ddntk:
            ntk.update(ddntk_step(K, *(getattr(state, f) for f in ("Theta", "B", "F") + DNTK_FIELDS
                                       + DDNTK_FIELDS), C_W, lam_W, r, E, moments=common))
    return LayerState(ell + 1, n_l, kernel_step(K, C_b, C_W, E),
                      vertex_step(K, V, C_W, r, E, d2=coeffs[0]),
                      g1_step(K, V, G1, C_W, r, E, coeffs=coeffs), **ntk)


def _check_finite(state: LayerState, net: MLP, nan_ok=()) -> None:
    for name in ("K", "V", "G1") + OPTIONAL_FIELDS:
        arr = getattr(state, name)
        if arr is None:
            continue
        if name in nan_ok:
            arr = np.where(np.isnan(arr), 0.0, arr)   # ill-defined entries of the δ convention
        if name in OPTIONAL_FIELDS and not np.all(np.isfinite(arr)):
            raise ValueError(
                f"NTK field {name} is not finite at layer {state.layer}: for a kinked activation "
                f"(ReLU) two exactly collinear inputs with C_b = 0 make ⟨σ″σ″⟩ diverge; perturb the "
                f"inputs or use C_b > 0")
        if not np.all(np.isfinite(arr)) or np.max(np.abs(arr), initial=0.0) > OVERFLOW:
            k = float(np.max(np.abs(np.diag(state.K))))
            raise OverflowError(
                f"{name} overflowed at layer {state.layer} of {net.depth} (max |K_aa| = {k:.3g}): the "
                f"kernel grows exponentially with depth away from criticality; lower C_W (now "
                f"{net.C_W[state.layer - 1]:g}) or the depth")


def theory(net: MLP, X, *, order2: int | None = None, order4: int | None = None,
           ntk: bool = False, dntk: bool = False, ddntk: bool = False, kinks: str = "a.e.") -> Theory:
    r"""Run the leading-order recursions for K, V and G^{\{1\}} through every layer (book Ch. 4).

    Parameters
    ----------
    net : the network specification.
    X : (N, n_0) inputs, one per row.
    order2, order4 : quadrature orders for 2-D and 3/4-D Gaussian integrals (see :mod:`pdlt.gaussian`).
    ntk : also run the NTK recursions (Θ, A, B, D, F; :mod:`pdlt.theory.ntk`); off by default
        because the four-index NTK tensors cost far more than K, V, G1 (8 ReLU inputs, 4 layers:
        46 s against 0.8 s). NotImplementedError for activations whose σ′ is a δ-function (the
        step). Fields not computed are None.
    dntk : also run the dNTK recursions (P, Q; :mod:`pdlt.theory.dntk`); implies ``ntk``.
    ddntk : also run the ddNTK recursions (R, S, T, U); implies ``dntk``.  For kinked activations
        (ReLU & co.) both use the a.e. convention: the σ″, σ‴ that come from the forward equation
        are zero (what autodiff gives per network; see :mod:`pdlt.theory.dntk`).
    kinks : "a.e." (default, as just said) or "delta": for a kinked σ the explicit σ″, σ‴ are
        δ-functions (:mod:`pdlt.theory._delta`), the expansion of a network whose neurons may cross
        the kink when trained.  Entries where such a δ meets another factor at the same input are
        ill-defined and NaN (only entries whose first input differs from the rest are finite).

    Repeated inputs are computed once and copied, so the theory is exact for them too.
    """
    if not isinstance(net, MLP):
        raise ValueError(f"net must be a pdlt.MLP, got {type(net).__name__}")
    X = _validate.inputs("X", X, net.input_dim)
    # distinct inputs in order of first appearance: without repeats nothing is reordered or copied
    _, first, inverse = np.unique(X, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    Xu, inverse = X[np.sort(first)], rank[inverse.reshape(-1)]
    E = Expectations(net.activation, order2=order2, order4=order4, kinks=kinks)
    N = Xu.shape[0]
    C_b, C_W = net.hyper(1)
    dntk = dntk or ddntk
    ntk = ntk or dntk
    if ntk:
        check_ntk_activation(net.activation)
    fields = ntk_first_layer_fields(Xu, net.lambda_b[0], net.lambda_W[0]) if ntk else {}
    if dntk:
        fields.update(dntk_first_layer_fields(N))
    if ddntk:
        fields.update(ddntk_first_layer_fields(N))
    state = LayerState(1, net.n(0), first_layer_kernel(Xu, C_b, C_W), np.zeros((N,) * 4), np.zeros((N, N)),
                       **fields)
    if np.any(np.diag(state.K) <= 0):
        raise ValueError("X contains an all-zero input and C_b = 0 in layer 1: its preactivations are "
                         "identically zero; give C_b > 0 or remove that input")
    states = [state]
    for _ in range(net.depth - 1):
        with np.errstate(over="ignore", invalid="ignore"):
            state = layer_step(state, net, E)
        _check_finite(state, net, nan_ok=DNTK_FIELDS + DDNTK_FIELDS if kinks == "delta" else ())
        states.append(state)
    if N != X.shape[0] or np.any(inverse != np.arange(N)):
        i = inverse
        def expand(arr):
            return None if arr is None else arr[np.ix_(*(i,) * arr.ndim)]
        states = [LayerState(s.layer, s.n_prev, expand(s.K), expand(s.V), expand(s.G1),
                             **{f: expand(getattr(s, f)) for f in OPTIONAL_FIELDS}) for s in states]
    return Theory(net, X, tuple(states))


class _CallableModule(types.ModuleType):
    """Lets ``pdlt.theory(net, X)`` work while ``pdlt.theory.kernel`` etc. stay importable."""

    def __call__(self, *args, **kwargs):
        return theory(*args, **kwargs)
