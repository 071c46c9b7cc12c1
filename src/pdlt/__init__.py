"""pdlt: The Principles of Deep Learning Theory as verified software.

Every theoretical observable (``pdlt.theory``) has an empirical twin measured on ensembles of real
networks (``pdlt.measure``).
"""

from .activations import get_activation
from .estimate import Estimate
from .mlp import MLP

__all__ = ["MLP", "Estimate", "get_activation"]
__version__ = "0.1.0"
