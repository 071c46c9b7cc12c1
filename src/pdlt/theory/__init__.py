"""Theoretical observables of the effective theory (book chapters 3–11, ∞).

``pdlt.theory(net, X)`` runs the layer-to-layer recursions and returns a :class:`Theory` whose
``layer(ℓ)`` is an immutable :class:`LayerState` (K, V, G1, …). The package itself is callable, so
``pdlt.theory(net, X)`` and ``pdlt.theory.kernel`` both work.
"""

import sys as _sys

from . import bayes, finite_width, training
from .bayes import (Prediction, hebbian_shift, kernel_blocks, log_evidence, log_evidence_ratio, posterior,
                    posterior_mean_nlo)
from .finite_width import FiniteWidthPrediction, finite_width_covariance, finite_width_mean
from .network import Theory, _CallableModule, theory
from .state import LayerState
from .training import DivergenceWarning, expected_loss, gradient_descent, max_learning_rate, newton_step

__all__ = ["theory", "Theory", "LayerState", "bayes", "training", "Prediction", "kernel_blocks", "posterior",
           "log_evidence", "log_evidence_ratio", "posterior_mean_nlo", "hebbian_shift", "gradient_descent",
           "newton_step", "max_learning_rate", "expected_loss", "DivergenceWarning", "finite_width",
           "finite_width_mean", "finite_width_covariance", "FiniteWidthPrediction"]

_sys.modules[__name__].__class__ = _CallableModule
