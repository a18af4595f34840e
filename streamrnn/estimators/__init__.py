"""river estimators built on OnlineRNN: regressor, classifier, forecaster, anomaly detector.

They load on first use, so that what reads only this package's feature space
(``features``: the daemon's supervised keys) does not import river, whose time
series module alone takes about 2 s to import.
"""

import importlib as _importlib

_MODULES = {
    "RNNRegressor": "regressor",
    "RNNMultiTargetRegressor": "multioutput",
    "RNNClassifier": "classifier",
    "RNNForecaster": "forecaster",
    "RNNAnomalyDetector": "anomaly",
}

__all__ = ["RNNRegressor", "RNNMultiTargetRegressor", "RNNClassifier", "RNNForecaster", "RNNAnomalyDetector"]


def __dir__():
    return sorted(list(globals()) + __all__)


def __getattr__(name):
    if name in _MODULES:
        value = globals()[name] = getattr(_importlib.import_module(f".{_MODULES[name]}", __name__), name)
        return value  # kept: later lookups find it without asking again
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
