"""The two forecasts every other one must beat: the last value, and the value a season ago."""

from __future__ import annotations

import numpy as np

from .component import Component


class Persistence(Component):
    """y_{t+h} = y_t for every h (the random walk's forecast)."""

    name = "persistence"

    def learn(self, features=None) -> None:
        pass

    def forecast(self, horizon: int, future=None) -> np.ndarray:
        return np.full(horizon, self.history.last)


class SeasonalNaive(Component):
    """y_{t+h} = y_{t+h-m k}, the newest value in the same phase of the season m.

    Sleeps until it has seen one full season.
    """

    def __init__(self, history, period: int):
        super().__init__(history)
        if period > history.capacity:
            raise ValueError(f"period {period} exceeds the history's capacity {history.capacity}")
        self.period = int(period)
        self.name = f"seasonal_naive_{period}"

    @property
    def ready(self) -> bool:
        return self.history.n >= self.period

    def learn(self, features=None) -> None:
        pass

    def forecast(self, horizon: int, future=None) -> np.ndarray:
        m = self.period
        cycle = self.history.window(m)  # y_{t-m+1} ... y_t
        return cycle[np.arange(horizon) % m]
