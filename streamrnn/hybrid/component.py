"""What every forecasting component offers the hybrid forecaster.

A component reads the series from a shared ``History`` (the newest value is
pushed before ``learn`` is called) and, if it wants them, the step's extra
features (calendar phase and exogenous inputs, already standardised):

    learn(features)               # after history.push(y_t)
    forecast(H, future) -> (H,)   # y_{t+1} ... y_{t+H}; future: (H, k) features or None
    ready                         # False while it cannot forecast yet (it sleeps)

Forecasts are in the series' own units.  A component never sees a value that
is not finite (the forecaster checks and bounds every value first), and its
state is its ``state()`` arrays.
"""

from __future__ import annotations

import numpy as np

from .history import History
from .stateful import Stateful


class Component(Stateful):
    name = "component"

    def __init__(self, history: History):
        self.history = history

    @property
    def ready(self) -> bool:
        return self.history.n > 0

    def learn(self, features: np.ndarray | None = None) -> None:
        raise NotImplementedError

    def forecast(self, horizon: int, future: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError
