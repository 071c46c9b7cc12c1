"""Theoretical observables of the effective theory (book chapters 3–11, ∞).

``pdlt.theory(net, X)`` runs the layer-to-layer recursions and returns a :class:`Theory` whose
``layer(ℓ)`` is an immutable :class:`LayerState` (K, V, G1, …). The package itself is callable, so
``pdlt.theory(net, X)`` and ``pdlt.theory.kernel`` both work.
"""

import sys as _sys

from .network import Theory, _CallableModule, theory
from .state import LayerState

__all__ = ["theory", "Theory", "LayerState"]

_sys.modules[__name__].__class__ = _CallableModule
