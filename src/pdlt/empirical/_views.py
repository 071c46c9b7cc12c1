"""The result object shared by the NTK and dNTK ensembles: named estimators over one accumulation."""

from __future__ import annotations

from ..estimate import Estimate
from . import engine


class EstimatorMeasurement:
    """Estimates of named observables from an :class:`engine.Accumulation`, cached per (name, layer).

    Subclasses set ``estimators`` (name → (function of the layer means, feature names)),
    ``pair_names`` (observables defined by neuron pairs i ≠ j, so n_ℓ ≥ 2), ``layer_view`` (the
    per-layer view class) and ``kind`` (a word for messages); ``observables`` lists what was measured.
    """

    estimators: dict = {}
    pair_names: tuple[str, ...] = ()
    layer_view: type = engine.LayerView
    kind = ""
    _ALIASES = {"H": "Theta", "K": "G"}

    def __init__(self, accumulation: engine.Accumulation):
        self.accumulation = accumulation
        self._cache: dict = {}

    net = property(lambda self: self.accumulation.net)
    X = property(lambda self: self.accumulation.X)
    networks = property(lambda self: self.accumulation.networks)
    seed = property(lambda self: self.accumulation.seed)
    groups = property(lambda self: self.accumulation.groups)
    shard_size = property(lambda self: self.accumulation.shard_size)
    layers = property(lambda self: self.accumulation.layers)

    @property
    def observables(self) -> tuple[str, ...]:
        return tuple(self.estimators)

    def layer(self, layer: int):
        return self.layer_view(self, self.accumulation._layer(layer))

    def _check(self, name: str, layer: int) -> None:
        """Raise ValueError if ``name`` was not measured (subclass hook)."""

    def _available(self, name: str, layer: int) -> bool:
        return name in self.observables and (name not in self.pair_names or self.net.n(layer) >= 2)

    def estimate(self, name: str, layer: int) -> Estimate:
        l = self.accumulation._layer(layer)
        name = self._ALIASES.get(name, name)
        if name not in self.estimators:
            raise ValueError(f"unknown {self.kind} observable {name!r}; known: {', '.join(self.estimators)}")
        self._check(name, l)
        if name in self.pair_names and self.net.n(l) < 2:
            raise ValueError(f"{name} is not measurable at layer {l}: n_{l} = 1, and {name} is defined "
                             f"by neuron pairs i != j")
        if (name, l) not in self._cache:
            fn, feats = self.estimators[name]
            self._cache[(name, l)] = self.accumulation.jackknife(l, fn, feats)
        return self._cache[(name, l)]

    def _header(self) -> dict:
        return {"net": self.net.to_dict(), "X": self.X.tolist(), "networks": self.networks,
                "seed": self.seed, "groups": self.groups, "shard_size": self.shard_size}

    def to_dict(self) -> dict:
        out = dict(self._header(), layers=[])
        for l in self.layers:
            entry = {"layer": l, "width": self.net.n(l), "fan_in": self.net.n(l - 1)}
            for name in self.estimators:
                entry[name] = self.estimate(name, l).to_dict() if self._available(name, l) else None
            out["layers"].append(entry)
        return out
