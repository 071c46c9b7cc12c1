r"""The multilayer perceptron specification in the book's conventions (eqs. (2.5), (4.1)–(4.4)).

.. math::
    z^{(1)}_{i;\alpha} = b^{(1)}_i + \sum_{j=1}^{n_0} W^{(1)}_{ij} x_{j;\alpha},\qquad
    z^{(\ell+1)}_{i;\alpha} = b^{(\ell+1)}_i + \sum_{j=1}^{n_\ell} W^{(\ell+1)}_{ij}\,\sigma(z^{(\ell)}_{j;\alpha}),

with :math:`b^{(\ell)}_i \sim \mathcal N(0, C_b^{(\ell)})` and
:math:`W^{(\ell)}_{ij} \sim \mathcal N(0, C_W^{(\ell)}/n_{\ell-1})`. Layers are ℓ = 1..L; ℓ = L is the output.
The learning-rate tensor is diagonal: λ_b^{(ℓ)} for biases and λ_W^{(ℓ)}/n_{ℓ−1} for weights (Ch. 7).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import _validate as v
from .activations import get_activation

__all__ = ["MLP"]


def _per_layer(name: str, value, depth: int, *, low: float, low_open: bool) -> tuple[float, ...]:
    if isinstance(value, Sequence | np.ndarray) and not isinstance(value, str):
        vals = list(value)
        if len(vals) != depth:
            raise ValueError(f"{name} has {len(vals)} entries but the network has depth {depth} "
                             f"(one value per layer 1..L, or a single number)")
        return tuple(v.real(f"{name}[{i + 1}]", x, low=low, low_open=low_open) for i, x in enumerate(vals))
    return (v.real(name, value, low=low, low_open=low_open),) * depth


class MLP:
    """Immutable specification of a fully connected network.

    Parameters
    ----------
    input_dim : n₀ ≥ 1.
    width : hidden width n ≥ 1 (every hidden layer; ignored when ``widths`` is given).
    depth : number of layers L ≥ 1 (ℓ = 1..L, the last is the output layer).
    activation : registered name, :class:`~pdlt.activations.Activation` or callable.
    C_b, C_W : bias and weight variances, one number or one per layer (length L). C_b ≥ 0, C_W > 0.
    lambda_b, lambda_W : learning rates per layer (default λ_b = C_b, λ_W = C_W, the NTK
        parameterization of neural-tangents). λ ≥ 0.
    output_dim : n_L (default: ``width``).
    widths : the full list [n₀, n₁, …, n_L]; overrides input_dim/width/depth/output_dim.
    activation_params : parameters for a registered activation name, e.g. ``{"a": 0.2}``.
    """

    _FIELDS = ("widths", "activation", "C_b", "C_W", "lambda_b", "lambda_W")
    __slots__ = _FIELDS + ("_lambda_given",)

    def __init__(self, input_dim: int | None = None, width: int | None = None, depth: int | None = None,
                 activation="relu", C_b=0.0, C_W=2.0, lambda_b=None, lambda_W=None, *,
                 output_dim: int | None = None, widths: Sequence[int] | None = None,
                 activation_params: dict | None = None):
        if widths is not None:
            ws = list(widths)
            if len(ws) < 2:
                raise ValueError(f"widths must list [n0, n1, ..., nL] with L >= 1; got {ws!r}")
            ws = [v.positive_int(f"widths[{i}]", w) for i, w in enumerate(ws)]
        else:
            if input_dim is None or width is None or depth is None:
                raise ValueError("give input_dim, width and depth, or widths=[n0, n1, ..., nL]")
            n0 = v.positive_int("input_dim", input_dim)
            n = v.positive_int("width", width)
            L = v.positive_int("depth", depth)
            nL = n if output_dim is None else v.positive_int("output_dim", output_dim)
            ws = [n0] + [n] * (L - 1) + [nL]
        L = len(ws) - 1
        act = get_activation(activation, **(activation_params or {}))
        set_ = object.__setattr__
        set_(self, "widths", tuple(ws))
        set_(self, "activation", act)
        set_(self, "C_b", _per_layer("C_b", C_b, L, low=0.0, low_open=False))
        set_(self, "C_W", _per_layer("C_W", C_W, L, low=0.0, low_open=True))
        lb = self.C_b if lambda_b is None else _per_layer("lambda_b", lambda_b, L, low=0.0, low_open=False)
        lw = self.C_W if lambda_W is None else _per_layer("lambda_W", lambda_W, L, low=0.0, low_open=False)
        set_(self, "lambda_b", lb)
        set_(self, "lambda_W", lw)
        # remember which rates were defaulted, so that replace(C_b=…) moves a defaulted λ_b along
        set_(self, "_lambda_given", (lambda_b is not None, lambda_W is not None))

    def __setattr__(self, key, value):
        raise AttributeError("MLP is immutable; use MLP.replace(...)")

    def __reduce__(self):
        # immutable slots: pickle (Dask workers, scikit-learn clones) rebuilds through __init__,
        # keeping which learning rates were defaulted
        kw = {"widths": self.widths, "activation": self.activation, "C_b": self.C_b, "C_W": self.C_W,
              "lambda_b": self.lambda_b if self._lambda_given[0] else None,
              "lambda_W": self.lambda_W if self._lambda_given[1] else None}
        return (_rebuild, (kw,))

    @property
    def depth(self) -> int:
        """L, the number of layers."""
        return len(self.widths) - 1

    @property
    def input_dim(self) -> int:
        return self.widths[0]

    def n(self, layer: int) -> int:
        """n_ℓ for ℓ = 0..L."""
        if not 0 <= layer <= self.depth:
            raise ValueError(f"layer must be in 0..{self.depth}, got {layer}")
        return self.widths[layer]

    def check_layer(self, layer: int) -> int:
        """Validate a layer index ℓ = 1..L."""
        if isinstance(layer, bool) or not isinstance(layer, int | np.integer) or not 1 <= layer <= self.depth:
            raise ValueError(f"layer must be an integer in 1..{self.depth}, got {layer!r}")
        return int(layer)

    def hyper(self, layer: int) -> tuple[float, float]:
        """(C_b^{(ℓ)}, C_W^{(ℓ)}) for ℓ = 1..L."""
        return self.C_b[layer - 1], self.C_W[layer - 1]

    def replace(self, **changes) -> "MLP":
        """A copy with some fields changed (``widths``, ``activation``, ``C_b``, ``C_W``, …).

        ``input_dim``, ``width``, ``depth`` and ``output_dim`` rebuild ``widths`` (the output width
        follows ``width`` when it equalled the hidden width). Per-layer values that are the same in
        every layer are carried over as one number, so the depth may change.
        """
        kw = {"widths": self.widths, "activation": self.activation, "C_b": self.C_b, "C_W": self.C_W,
              "lambda_b": self.lambda_b if self._lambda_given[0] else None,
              "lambda_W": self.lambda_W if self._lambda_given[1] else None}
        for name in ("C_b", "C_W", "lambda_b", "lambda_W"):
            if kw[name] is None:
                continue
            if len(set(kw[name])) == 1:
                kw[name] = kw[name][0]
        shape = {k: changes.pop(k) for k in ("input_dim", "width", "depth", "output_dim") if k in changes}
        if shape:
            if "widths" in changes:
                raise ValueError("give widths or input_dim/width/depth/output_dim, not both")
            hidden = set(self.widths[1:-1]) or {self.widths[-1]}
            if "width" not in shape and len(hidden) > 1:
                raise ValueError(f"the hidden widths {list(self.widths[1:-1])} differ; give width or widths")
            old_width = next(iter(hidden)) if len(hidden) == 1 else None
            width = shape.get("width", old_width)
            out = shape.get("output_dim", width if self.widths[-1] == old_width else self.widths[-1])
            del kw["widths"]
            kw.update(input_dim=shape.get("input_dim", self.input_dim), width=width,
                      depth=shape.get("depth", self.depth), output_dim=out)
        kw.update(changes)
        return MLP(**kw)

    def to_dict(self) -> dict:
        return {"widths": list(self.widths), "activation": self.activation.name,
                "activation_params": self.activation.params, "C_b": list(self.C_b),
                "C_W": list(self.C_W), "lambda_b": list(self.lambda_b), "lambda_W": list(self.lambda_W)}

    def __eq__(self, other):
        return isinstance(other, MLP) and all(getattr(self, s) == getattr(other, s) for s in self._FIELDS)

    def __hash__(self):
        return hash(tuple(getattr(self, s) for s in self._FIELDS))

    def __repr__(self) -> str:
        cb = self.C_b[0] if len(set(self.C_b)) == 1 else list(self.C_b)
        cw = self.C_W[0] if len(set(self.C_W)) == 1 else list(self.C_W)
        return f"MLP(widths={list(self.widths)}, activation={self.activation!r}, C_b={cb}, C_W={cw})"


def _rebuild(kw: dict) -> MLP:
    return MLP(**kw)
