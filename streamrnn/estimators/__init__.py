"""river estimators built on OnlineRNN: regressor, classifier, forecaster, anomaly detector."""

from .anomaly import RNNAnomalyDetector
from .classifier import RNNClassifier
from .forecaster import RNNForecaster
from .multioutput import RNNMultiTargetRegressor
from .regressor import RNNRegressor

__all__ = ["RNNRegressor", "RNNMultiTargetRegressor", "RNNClassifier", "RNNForecaster", "RNNAnomalyDetector"]
