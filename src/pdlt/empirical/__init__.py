"""Empirical twins: observables measured on ensembles of real random networks (Monte Carlo).

``measure(net, X, networks, seed)`` samples the networks at initialization (exactly in law, by the
layer-wise Gaussian construction, or naively with explicit weights) and returns per-layer estimates
with jackknife standard errors: the kernel ``G`` (= ``K``), the four-point vertex ``V`` and the
single-neuron fourth moment ``M4``. New estimators plug in as :class:`Feature` + :class:`Observable`.
"""

from .engine import (
    DEFAULT_OBSERVABLES,
    FOURTH_MOMENT,
    KERNEL,
    VERTEX,
    Accumulation,
    Backend,
    Feature,
    LayerMeans,
    LayerMeasurement,
    Measurement,
    Observable,
    PreactivationOverflowError,
    accumulate,
    measure,
    preactivations,
)
from .four_point import PairedFourthMoment, PairMomentSquare
from .kernel import PairMoment
from .ntk import NTKMeasurement, measure_ntk
from .dntk import DNTK_OBSERVABLES, DNTKMeasurement, measure_dntk
from .training import (TrainedNetworks, TrainingDivergedError, TrainingMeasurement, empirical_ntk_train,
                       train_ensemble, train_networks)

__all__ = [
    "measure", "Measurement", "LayerMeasurement", "accumulate", "Accumulation", "LayerMeans",
    "Observable", "Feature", "Backend", "preactivations", "PreactivationOverflowError",
    "KERNEL", "VERTEX", "FOURTH_MOMENT", "DEFAULT_OBSERVABLES",
    "PairMoment", "PairedFourthMoment", "PairMomentSquare", "measure_ntk", "NTKMeasurement",
    "measure_dntk", "DNTKMeasurement", "DNTK_OBSERVABLES", "train_ensemble", "train_networks",
    "TrainingMeasurement", "TrainedNetworks", "TrainingDivergedError", "empirical_ntk_train",
]
