"""streamrnn: recurrent networks that learn online, on every event of an unbounded stream.

The engine (this package's top level) needs only numpy.
"""

from .batch import BatchStep, ModelBatch
from .bidirectional import BidirectionalRNN
from .cells import CELLS, Readout
from .learners import REGISTRY as _LEARNERS
from .learners import Learner
from .losses import CrossEntropy, LogLoss, Loss, SquaredError
from .model import OnlineRNN, StepResult
from .optim import (
    SGD,
    Adam,
    Chain,
    ClipGlobalNorm,
    ExponentialDecay,
    InverseTimeDecay,
    Momentum,
    RMSProp,
    WeightDecay,
)
from .state import StateError

__version__ = "0.1.0"

globals().update(CELLS)  # every registered cell by its kind: Elman, Leaky, ...
globals().update({cls.__name__: cls for cls in _LEARNERS.values()})  # every learner: RTRL, TruncatedBPTT, ...

__all__ = [
    "OnlineRNN", "StepResult", "ModelBatch", "BatchStep", "BidirectionalRNN", *sorted(CELLS), "Readout",
    *sorted(cls.__name__ for cls in _LEARNERS.values()), "Learner",
    "SquaredError", "LogLoss", "CrossEntropy", "Loss",
    "SGD", "Momentum", "RMSProp", "Adam", "WeightDecay", "ClipGlobalNorm", "Chain",
    "ExponentialDecay", "InverseTimeDecay", "StateError",
    "RNNRegressor", "RNNMultiTargetRegressor", "RNNClassifier", "RNNForecaster", "RNNAnomalyDetector",
    "DiagnosticsCollector", "RegressorPool",
]

# river estimators, the prometheus collector and the pool of compiled regressors import river /
# prometheus_client / numba: they load on first use so that the engine itself needs only numpy.
_LAZY = {
    "RNNRegressor": "streamrnn.estimators",
    "RNNMultiTargetRegressor": "streamrnn.estimators",
    "RNNClassifier": "streamrnn.estimators",
    "RNNForecaster": "streamrnn.estimators",
    "RNNAnomalyDetector": "streamrnn.estimators",
    "DiagnosticsCollector": "streamrnn.metrics",
    "RegressorPool": "streamrnn.kernels.regressor_pool",
}


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'streamrnn' has no attribute {name!r}")
