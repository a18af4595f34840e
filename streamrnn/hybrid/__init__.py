"""Hybrid models: exact online components, online aggregation, and the recurrent network that corrects them.

``HybridForecaster`` puts them together; the river estimators and the daemon
use it.  Everything here needs only numpy (and the engine, for the corrector).
"""

from .aggregation import MLPoly
from .calendar import Clock, periods_for_interval, phase_features, timestamp
from .corrector import RNNCorrector
from .history import History
from .forecaster import HybridForecaster, default_lags
from .linear import LinearAR
from .naive import Persistence, SeasonalNaive
from .rls import RLS
from .scale import RobustScale, RunningMoments
from .seasonality import detect_periods
from .smoothing import ExponentialSmoothing, Theta

__all__ = [
    "HybridForecaster", "MLPoly", "RNNCorrector", "History", "LinearAR", "Persistence", "SeasonalNaive",
    "RLS", "RobustScale", "RunningMoments", "ExponentialSmoothing", "Theta", "detect_periods", "default_lags",
    "Clock", "periods_for_interval", "phase_features", "timestamp",
]
