r"""Critical initialization of PyTorch MLPs (book Ch. 5).

:func:`critical_init_` re-draws, in place, every ``nn.Linear`` of an ``nn.Sequential`` MLP from the
critical distribution of its activation σ (book §5.2–5.3):

.. math:: W^{(\ell)}_{ij} \sim \mathcal N\!\left(0, \frac{C_W}{n_{\ell-1}}\right),\qquad
          b^{(\ell)}_i \sim \mathcal N(0, C_b),

with (C_b, C_W) from :func:`pdlt.theory.criticality.criticality` — the point where χ∥ = χ⊥ = 1 at the
kernel's fixed point, so that signals neither explode nor vanish exponentially with depth (§5.1).
Every layer, the output layer included, gets C_W/fan_in. Activation modules are recognised
(ReLU, LeakyReLU, PReLU with one slope, Tanh, exact GELU, SiLU, Sigmoid, Softplus, Identity); any
other parameter-free elementwise module goes to the criticality solver as a numpy function
(float64 round trip through the module).

This module is ``pdlt.torch``; it imports the real PyTorch with absolute imports.
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .activations import Activation, CallableActivation, get_activation

__all__ = ["critical_init_", "InitReport", "LayerInit", "param_groups"]


# --- the report --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerInit:
    """What :func:`critical_init_` did to one ``nn.Linear`` (ℓ = 1..L; ℓ = L is the output)."""

    layer: int
    module: str  # the module's name inside the Sequential, e.g. "2" or "body.0"
    fan_in: int
    fan_out: int
    C_b: float
    C_W: float
    bias: bool
    acts_on: str  # "x" for ℓ = 1, else "σ(z^(ℓ-1))" with σ the network's activation
    activation: str
    universality_class: str

    @property
    def weight_std(self) -> float:
        """√(C_W / fan_in)."""
        return math.sqrt(self.C_W / self.fan_in)

    def to_dict(self) -> dict:
        return {"layer": self.layer, "module": self.module, "fan_in": self.fan_in, "fan_out": self.fan_out,
                "C_b": self.C_b, "C_W": self.C_W, "weight_std": self.weight_std, "bias": self.bias,
                "acts_on": self.acts_on, "activation": self.activation,
                "universality_class": self.universality_class}


@dataclass(frozen=True)
class InitReport:
    """The outcome of :func:`critical_init_`: the activation, its class, (C_b, C_W) and each layer."""

    activation: Activation
    universality_class: str
    C_b: float
    C_W: float
    layers: tuple[LayerInit, ...]
    notes: tuple[str, ...] = ()
    criticality: object = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {"activation": _label(self.activation), "universality_class": self.universality_class,
                "C_b": self.C_b, "C_W": self.C_W, "layers": [l.to_dict() for l in self.layers],
                "notes": list(self.notes)}

    def __str__(self) -> str:
        head = (f"critical initialization (book Ch. 5): σ = {_label(self.activation)}, "
                f"class {self.universality_class}, C_b = {self.C_b:.6g}, C_W = {self.C_W:.6g}")
        cols = ("ℓ", "module", "fan_in→fan_out", "acts on", "C_b", "C_W", "std(W)=√(C_W/fan_in)", "class")
        rows = [(str(l.layer), l.module, f"{l.fan_in}→{l.fan_out}", l.acts_on,
                 f"{l.C_b:.6g}" if l.bias else "no bias", f"{l.C_W:.6g}", f"{l.weight_std:.4g}",
                 l.universality_class) for l in self.layers]
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
        fmt = lambda r: "  ".join(s.rjust(w) for s, w in zip(r, widths))  # noqa: E731
        lines = [head, fmt(cols), "  ".join("-" * w for w in widths), *map(fmt, rows)]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _label(act: Activation) -> str:
    p = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in act.params.items()
                  if not isinstance(act, CallableActivation))
    return f"{act.name}({p})" if p else act.name


# --- recognising the architecture ---------------------------------------------------------------

_NOT_COVERED = {
    "convolution": (nn.modules.conv._ConvNd,),
    "normalization": (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
                      getattr(nn, "RMSNorm", nn.LayerNorm)),
    "dropout": (nn.modules.dropout._DropoutNd,),
    "pooling": (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
                nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd),
    "recurrent": (nn.RNNBase,),
    "embedding": (nn.Embedding, nn.EmbeddingBag),
    "attention": (nn.MultiheadAttention, nn.Transformer, nn.TransformerEncoderLayer,
                  nn.TransformerDecoderLayer),
    "non-elementwise": (nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.Softmax2d, nn.GLU, nn.Bilinear),
}


def _leaves(seq: nn.Sequential, prefix: str = ""):
    """(name, module) for every module of a Sequential, nested Sequentials flattened."""
    for name, mod in seq.named_children():
        full = f"{prefix}{name}"
        if isinstance(mod, nn.Sequential):
            yield from _leaves(mod, full + ".")
        else:
            yield full, mod


def _check_covered(name: str, mod: nn.Module) -> None:
    for kind, types in _NOT_COVERED.items():
        if isinstance(mod, types):
            raise ValueError(f"module {name} ({type(mod).__name__}) is a {kind} layer; critical_init_ covers "
                             "MLPs only: nn.Linear layers with elementwise activations between them (book Ch. 5)")
    if isinstance(mod, nn.modules.lazy.LazyModuleMixin) and mod.has_uninitialized_params():
        raise ValueError(f"module {name} ({type(mod).__name__}) has uninitialized lazy parameters; "
                         "run one forward pass first")


def _module_function(mods: list[nn.Module]):
    """σ as a numpy function: float64 (or complex128) arrays through a float64 copy of the module(s)."""
    net = nn.Sequential(*(copy.deepcopy(m) for m in mods)).eval().to("cpu", torch.float64)

    def fn(z):
        arr = np.asarray(z)  # np.array copies and keeps 0-d arrays 0-d (ascontiguousarray would not)
        arr = np.array(arr, dtype=np.complex128 if np.iscomplexobj(arr) else np.float64, order="C")
        with torch.no_grad():
            out = net(torch.from_numpy(arr))
        return out.detach().cpu().numpy()

    return fn


def _wrapped(mods: list[nn.Module], where: str) -> Activation:
    """A :class:`CallableActivation` for modules pdlt has no closed form for (after an elementwise check)."""
    label = " ∘ ".join(repr(m) for m in reversed(mods))
    fn = _module_function(mods)
    fn.__name__ = label
    x = np.linspace(-3.0, 3.0, 16)
    try:
        row = np.asarray(fn(x[None, :]), dtype=np.float64)
        col = np.asarray(fn(x[:, None]), dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - user modules: report, don't crash
        raise ValueError(f"activation {label} at {where} failed on a float64 tensor: {exc!r}") from None
    if row.shape != (1, 16) or col.shape != (16, 1) or not np.allclose(row.ravel(), col.ravel(), rtol=1e-12,
                                                                          atol=1e-12, equal_nan=True):
        raise ValueError(f"module(s) {label} at {where} do not act elementwise; critical_init_ needs an "
                         "elementwise activation σ(z) between the Linear layers")
    return CallableActivation(fn, name=label)


def _known(mods: list[nn.Module], where: str) -> tuple[Activation, object]:
    """The pdlt activation for the modules between two Linear layers, and a key to compare gaps."""
    mods = [m for m in mods if not isinstance(m, nn.Identity)]
    if not mods:
        return get_activation("linear"), "linear"
    if len(mods) == 1:
        m = mods[0]
        t = type(m)
        if t is nn.ReLU:
            return get_activation("relu"), "relu"
        if t is nn.LeakyReLU:
            a = float(m.negative_slope)
            return get_activation("leaky_relu", a=a), ("leaky_relu", a)
        if t is nn.PReLU and m.num_parameters == 1:
            a = float(m.weight.detach().reshape(()))
            return get_activation("leaky_relu", a=a), ("leaky_relu", a)
        if t is nn.Tanh:
            return get_activation("tanh"), "tanh"
        if t is nn.SiLU:
            return get_activation("swish"), "swish"
        if t is nn.Sigmoid:
            return get_activation("sigmoid"), "sigmoid"
        if t is nn.Softplus and float(m.beta) == 1.0:
            return get_activation("softplus"), "softplus"
        if t is nn.GELU:
            if m.approximate == "none":
                return get_activation("gelu"), "gelu"
            warnings.warn(f"{m!r} at {where} is the tanh approximation of GELU; its criticality comes from "
                          "the numerical solver on the module, not from the exact GELU", UserWarning, stacklevel=4)
    key = tuple((type(m).__name__, repr(m), tuple(tuple(p.detach().cpu().reshape(-1).tolist())
                                                  for p in m.parameters())) for m in mods)
    return _wrapped(mods, where), key


def _architecture(model: nn.Module):
    """Linear layers (name, module), the activation between them and notes about ignored modules."""
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"critical_init_ needs a torch.nn.Sequential MLP, got {type(model).__name__}")
    linears: list[tuple[str, nn.Linear]] = []
    gaps: list[list[nn.Module]] = []
    names: list[list[str]] = []
    lead: list[str] = []
    current: list[nn.Module] = []
    current_names: list[str] = []
    for name, mod in _leaves(model):
        _check_covered(name, mod)
        if isinstance(mod, nn.Linear):
            if linears:
                gaps.append(current)
                names.append(current_names)
            elif current_names:
                lead = current_names
            linears.append((name, mod))
            current, current_names = [], []
        elif isinstance(mod, nn.Flatten) and not linears:
            continue
        elif any(True for _ in mod.parameters()) and not isinstance(mod, nn.PReLU):
            raise ValueError(f"module {name} ({type(mod).__name__}) has parameters but is not nn.Linear; "
                             "critical_init_ covers MLPs only (book Ch. 5)")
        else:
            current.append(mod)
            current_names.append(name)
    if not linears:
        raise ValueError("the model has no nn.Linear layers; critical_init_ initializes MLPs")
    notes = []
    if lead:
        notes.append(f"module(s) {', '.join(lead)} before the first Linear act on the input and were ignored")
    if current_names:
        notes.append(f"module(s) {', '.join(current_names)} after the last Linear act on the output and were ignored")
    return linears, gaps, names, notes


def _network_activation(linears, gaps, gap_names, notes: list, activation=None) -> Activation:
    """The one activation σ of the MLP (detected from the modules between Linear layers, or given)."""
    if activation is not None:
        act = get_activation(activation)
        notes.append(f"activation {_label(act)} given by the caller (modules between Linear layers not inspected)")
    elif gaps:
        found = [_known(g, ", ".join(n) or f"after Linear {linears[i][0]}")
                 for i, (g, n) in enumerate(zip(gaps, gap_names))]
        keys = [k for _, k in found]
        if any(k != keys[0] for k in keys[1:]):
            labels = sorted({_label(a) for a, _ in found})
            raise ValueError(f"mixed activations between Linear layers ({'; '.join(labels)}); criticality "
                             "(book Ch. 5) tunes one activation per network — pass activation= to override")
        act = found[0][0]
    else:
        act = get_activation("linear")
        notes.append("a single Linear layer: no hidden activation, initialized as a linear network (C_W = 1)")
    return act


@functools.lru_cache(maxsize=32)
def _criticality_cached(act: Activation):
    from .theory.criticality import criticality

    return criticality(act)


def _criticality(act: Activation):
    if isinstance(act, CallableActivation):  # hashed by identity: no point caching
        from .theory.criticality import criticality

        return criticality(act)
    return _criticality_cached(act)


# --- the initializer ----------------------------------------------------------------------------


def critical_init_(model: nn.Module, *, activation=None, generator: torch.Generator | None = None) -> InitReport:
    """Re-initialize an ``nn.Sequential`` MLP in place at criticality (book Ch. 5); return what was done.

    Parameters
    ----------
    model : ``nn.Sequential`` of ``nn.Linear`` layers and elementwise activation modules (nested
        Sequentials are flattened). Every hidden gap must hold the same activation.
    activation : override the detected σ — a registered name (``"tanh"``), an
        :class:`~pdlt.activations.Activation` or a numpy callable. Default: detect it from the modules.
    generator : a ``torch.Generator`` (on the parameters' device) for reproducible draws.

    Raises ValueError for architectures outside the book's MLP (non-Sequential, convolution,
    normalization, dropout…, no Linear layer, different activations in different gaps), for
    activations without criticality (universality class "none", e.g. sigmoid and softplus), and for
    Linear layers without bias when criticality needs C_b > 0.
    """
    linears, gaps, gap_names, notes = _architecture(model)
    act = _network_activation(linears, gaps, gap_names, notes, activation)
    crit = _criticality(act)
    cls = crit.universality_class
    if cls == "none":
        raise ValueError(f"activation {_label(act)} has no criticality (universality class 'none'): "
                         f"{crit.explanation}")
    C_b, C_W = float(crit.C_b), float(crit.C_W)
    for name, lin in linears:
        if lin.bias is None and C_b > 0:
            raise ValueError(f"Linear {name} has no bias, but criticality for {_label(act)} needs C_b = {C_b:.6g} "
                             "(book §5.3.4); add biases or choose another activation")
        if generator is not None and generator.device != lin.weight.device:
            raise ValueError(f"generator is on {generator.device} but Linear {name} is on {lin.weight.device}")
    layers = []
    with torch.no_grad():
        for ell, (name, lin) in enumerate(linears, start=1):
            fan_out, fan_in = lin.weight.shape
            nn.init.normal_(lin.weight, 0.0, math.sqrt(C_W / fan_in), generator=generator)
            if lin.bias is not None:
                if C_b > 0:
                    nn.init.normal_(lin.bias, 0.0, math.sqrt(C_b), generator=generator)
                else:
                    nn.init.zeros_(lin.bias)
            layers.append(LayerInit(ell, name, int(fan_in), int(fan_out), C_b, C_W, lin.bias is not None,
                                    "x" if ell == 1 else f"σ(z^({ell - 1}))", _label(act), cls))
    return InitReport(act, cls, C_b, C_W, tuple(layers), tuple(notes), crit)


# --- the learning-rate tensor -------------------------------------------------------------------


def _per_layer(name: str, value, depth: int) -> tuple[float, ...]:
    if isinstance(value, (list, tuple, np.ndarray)):
        vals = [float(v) for v in value]
        if len(vals) != depth:
            raise ValueError(f"{name} has {len(vals)} entries but the model has {depth} Linear layers "
                             "(one value per layer 1..L, or a single number)")
    else:
        vals = [float(value)] * depth
    for i, v in enumerate(vals):
        if not (math.isfinite(v) and v >= 0.0):
            raise ValueError(f"{name}[{i + 1}] must be a finite number >= 0, got {v}")
    return tuple(vals)


def param_groups(model: nn.Module, lambda_b=1.0, lambda_W=1.0, *, lr: float = 1.0, scaling: str | None = None,
                 activation=None, K1: float | None = None) -> list[dict]:
    r"""Optimizer parameter groups implementing the book's learning-rate tensor (Ch. 7, 9).

    One group per parameter of each ``nn.Linear`` (ℓ = 1..L) of an ``nn.Sequential`` MLP:

    * bias b^{(ℓ)}: ``lr`` · λ_b^{(ℓ)};
    * weight W^{(ℓ)}: ``lr`` · λ_W^{(ℓ)} / n_{ℓ−1} (n_{ℓ−1} = fan_in),

    so that ``torch.optim.SGD(param_groups(model, ..., lr=η))`` performs the book's gradient descent
    θ_μ ← θ_μ − η Σ_ν λ_{μν} ∂L/∂θ_ν (formula sheet §0). (Each group carries its own ``lr``, since a
    PyTorch optimizer's ``lr=`` argument is only a default for groups without one; LR schedulers
    scale every group's lr by the same factor and so keep the tensor's ratios.) Each group also has
    ``name``, ``layer``, ``kind`` ("bias"/"weight"), ``lambda`` (λ_b^{(ℓ)} or λ_W^{(ℓ)}) and ``fan_in``.

    Parameters
    ----------
    lambda_b, lambda_W : one number or one per Linear layer (≥ 0). With ``scaling="equivalence"``
        they are the λ̃ of the equivalence principle and must be numbers.
    lr : η, the global learning rate (> 0).
    scaling : ``None`` (take the λ's as given) or ``"equivalence"``: per-layer λ from
        :func:`pdlt.theory.learning_rates.equivalence_principle` for the detected activation and
        depth L, so every layer contributes equally to the NTK at criticality (book Ch. 9).
    activation : override the detected σ (only used for ``scaling="equivalence"``).
    K1 : forwarded to ``equivalence_principle`` (rates solved on that input's kernel trajectory).
    """
    linears, gaps, gap_names, notes = _architecture(model)
    for name, mod in _leaves(model):
        if not isinstance(mod, nn.Linear) and any(True for _ in mod.parameters()):
            raise ValueError(f"module {name} ({type(mod).__name__}) has parameters outside the book's "
                             "learning-rate tensor (nn.Linear biases and weights only)")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    L = len(linears)
    if scaling is None:
        lam_b, lam_W = _per_layer("lambda_b", lambda_b, L), _per_layer("lambda_W", lambda_W, L)
    elif scaling == "equivalence":
        if isinstance(lambda_b, (list, tuple, np.ndarray)) or isinstance(lambda_W, (list, tuple, np.ndarray)):
            raise ValueError("with scaling='equivalence', lambda_b and lambda_W are the λ̃ of the "
                             "equivalence principle (book Ch. 9): one number each")
        from .theory.learning_rates import equivalence_principle

        act = _network_activation(linears, gaps, gap_names, notes, activation)
        lam_b, lam_W = equivalence_principle(act, L, lambda_b, lambda_W, K1=K1)
    else:
        raise ValueError(f"scaling must be None or 'equivalence', got {scaling!r}")
    groups = []
    for ell, (name, lin) in enumerate(linears, start=1):
        fan_in = int(lin.weight.shape[1])
        groups.append({"params": [lin.weight], "lr": lr * lam_W[ell - 1] / fan_in, "name": f"{name}.weight",
                       "layer": ell, "kind": "weight", "lambda": lam_W[ell - 1], "fan_in": fan_in})
        if lin.bias is not None:
            groups.append({"params": [lin.bias], "lr": lr * lam_b[ell - 1], "name": f"{name}.bias",
                           "layer": ell, "kind": "bias", "lambda": lam_b[ell - 1], "fan_in": fan_in})
    return groups
