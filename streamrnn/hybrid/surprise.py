"""Surprise as a tail probability: how rare an error is among the errors learned so far.

* ``LogHistogram`` -- counts of positive values in bins of a tenth of a decade,
  one row per quantity: bounded memory, ranks exact up to the bin width.
* ``Surprise`` -- the anomaly score of a vector of squared errors e (one per
  feature), calibrated on the errors learned before it:

  1. per feature, the rank p-value p_j = (#{past e_j above} + #{equal}/2 + 1) / (n_j + 1),
     against that feature's own history, so the usual large errors of a
     heavy-tailed feature are not rare;
  2. Fisher's statistic T = -sum_j ln p_j;
  3. T as -log10 of a tail probability: with m and q the median and 90th
     percentile of past statistics, linear below m (log10 2 at m), then the
     exponential tail through (m, 1/2) and (q, 1/10):
     score = log10 2 + (T - m) log10 5 / (q - m).

  The tail is fitted to the bulk of the past statistics only. A filter that
  keeps the most surprising events from learning (river's
  ``protect_anomaly_detector``) removes them from the top of the history,
  which barely moves m and q, so the score does not drift upward as it
  would with ranks all the way.  For a statistic with a lighter tail than
  exponential (Fisher's is a Gamma under independence) the score is
  conservative: 3 is rarer than 1 in 1000 of typical events.

>>> import numpy as np
>>> s = Surprise(2)
>>> rng = np.random.default_rng(0)
>>> for _ in range(500):
...     s.learn(rng.normal(size=2) ** 2)
>>> typical, odd = s.score(np.array([1.0, 0.5])), s.score(np.array([30.0, 40.0]))
>>> print(f"{typical:.2f} {odd:.2f}")
0.44 3.56
"""

from __future__ import annotations

import math

import numpy as np

from .stateful import Stateful

LOW, STEP, BINS = -12.0, 0.1, 182  # log10 of the values; the first and last bins take everything beyond
#: statistics learned before a score can be anything but 0
WARM_UP = 20
_LOG2, _LOG5 = math.log10(2.0), math.log10(5.0)


class LogHistogram(Stateful):
    """Per-row counts of positive values in bins of ``STEP`` decades (rows can be added)."""

    _state = ("counts",)
    _growable = ("counts",)

    def __init__(self, rows: int = 0):
        self.counts = np.zeros((rows, BINS))

    def grow(self, k: int) -> None:
        self.counts = np.concatenate([self.counts, np.zeros((k, BINS))])

    @staticmethod
    def bins(values: np.ndarray) -> np.ndarray:
        logs = np.log10(np.maximum(values, 1e-300))
        return np.clip(np.floor((logs - LOW) / STEP).astype(int) + 1, 0, BINS - 1)

    def add(self, values: np.ndarray) -> None:
        self.counts[np.arange(len(values)), self.bins(values)] += 1.0

    def above(self, values: np.ndarray) -> np.ndarray:
        """Per row: the count of past values above ``values[row]``, its own bin counted half."""
        b = self.bins(values)
        rows = np.arange(len(values))
        tail = np.cumsum(self.counts[:, ::-1], axis=1)[:, ::-1]  # tail[j, i]: counts in bins >= i
        return tail[rows, b] - 0.5 * self.counts[rows, b]

    def quantile(self, row: int, q: float) -> float:
        """The q-quantile of a row's values, interpolated inside the bin (log scale)."""
        counts = self.counts[row]
        cumulative = np.cumsum(counts)
        target = q * cumulative[-1]
        i = int(np.searchsorted(cumulative, target))
        before = cumulative[i] - counts[i]
        within = (target - before) / counts[i] if counts[i] else 0.0
        return 10.0 ** (LOW + (i - 1 + within) * STEP)


class Surprise(Stateful):
    """Calibrated surprise of squared errors, one per feature (features can be added)."""

    _parts = ("errors", "statistics")

    def __init__(self, features: int = 0):
        self.errors = LogHistogram(features)
        self.statistics = LogHistogram(1)

    def grow(self, k: int) -> None:
        self.errors.grow(k)

    @property
    def learned(self) -> int:
        return int(self.statistics.counts.sum())

    def fisher(self, e: np.ndarray) -> float:
        """T = -sum_j ln p_j, each p_j the rank p-value of e_j in its feature's history."""
        n = self.errors.counts.sum(axis=1)
        p = (self.errors.above(e) + 1.0) / (n + 1.0)
        return float(-np.log(p).sum())

    def score(self, e: np.ndarray) -> float:
        """-log10 of the tail probability of ``e`` (0 until WARM_UP errors were learned)."""
        if self.learned < WARM_UP:
            return 0.0
        t = self.fisher(e)
        m, q = self.statistics.quantile(0, 0.5), self.statistics.quantile(0, 0.9)
        if t <= m:
            return -math.log10(1.0 - 0.5 * t / m) if m > 0.0 else _LOG2
        return _LOG2 + (t - m) * _LOG5 / max(q - m, 1e-12 * m, 1e-300)

    def learn(self, e: np.ndarray) -> None:
        """Take one vector of squared errors into the histories (its statistic first, as it was scored)."""
        if self.errors.counts.any():  # the first errors have nothing to be ranked against
            self.statistics.add(np.array([max(self.fisher(e), 1e-300)]))
        self.errors.add(e)
