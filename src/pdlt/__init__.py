"""pdlt: The Principles of Deep Learning Theory as verified software.

Every theoretical observable (``pdlt.theory(net, X)``) has an empirical twin measured on ensembles
of real networks (``pdlt.measure(net, X, networks, seed)``); :mod:`pdlt.observables` pairs them.
"""

from . import theory
from .activations import get_activation
from .empirical import Measurement, measure, train_ensemble
from .estimate import Estimate
from .mlp import MLP
from .observables import compare
from .theory import LayerState, Prediction, Theory
from .theory.criticality import Criticality, criticality

__all__ = ["MLP", "Estimate", "get_activation", "theory", "Theory", "LayerState", "measure",
           "Measurement", "compare", "criticality", "Criticality", "Prediction", "train_ensemble"]
__version__ = "0.1.0"
