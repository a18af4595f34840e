"""An autoregression on lags, seasonal lags, calendar terms and exogenous features, fitted exactly.

The model predicts the next *change*, in units of the series' typical change
s (``RobustScale`` of |y_t - y_{t-1}|), from the lags taken relative to the
newest value:

    (y_{t+1} - y_t) / s  =  w . [1, (y_{t+1-k} - y_t) / s for k in lags, features_t]

so that zero weights are persistence, and a ridge prior pulls towards it.
Any linear AR on the levels whose coefficients sum to one is of this form;
the intercept is a drift.  The weights are the exact recursive least-squares
solution (``RLS``: forgetting 0.999, Huber weights so that a glitch does not
bend the fit).  Forecasts beyond one step feed the forecasts back as lags
(the recursive strategy), with the features of each future step.
"""

from __future__ import annotations

import numpy as np

from .component import Component
from .rls import RLS
from .scale import RobustScale, bound, clamp

#: standardised features and relative lags are bounded: a level shift of 1000 typical
#: changes must not produce a 1000-fold forecast
FEATURE_LIMIT = 50.0


class LinearAR(Component):
    """Exact online least-squares AR of the next change on relative lags and features.

    ``features`` given to ``learn`` are those of the step just observed (the
    one the model predicts), and ``future`` rows those of the steps ahead.
    """

    _parts = ("rls", "changes")

    def __init__(self, history, lags=(1, 2, 3), n_features: int = 0, lam: float = 0.999, delta: float = 1.0,
                 huber: float = 2.0):
        super().__init__(history)
        self.lags = tuple(sorted({int(k) for k in lags}))
        if min(self.lags) < 1 or max(self.lags) + 2 > history.capacity:
            raise ValueError(f"lags must be in 1..{history.capacity - 2}, got {self.lags}")
        self.n_features = n_features
        self.name = "linear"
        self.rls = RLS(1 + len(self.lags) + n_features, lam, delta, huber)
        self.changes = RobustScale()
        self._lag_index = -np.array(self.lags)  # positions of the lags in a window ending at the origin

    @property
    def ready(self) -> bool:
        return self.history.n > max(self.lags) + 2 * self.rls.d

    @property
    def scale(self) -> float:
        """The typical one-step change s; predictions are in units of s."""
        h = self.history
        return max(self.changes.value, 1e-9 * (abs(h.last) + 1.0)) if h.n else 1.0

    def grow_features(self, k: int) -> None:
        """k more features: zero weights and the ridge prior on them."""
        self.rls.insert(self.rls.d, k)
        self.n_features += k

    def _inputs(self, window: np.ndarray, features, s: float) -> np.ndarray:
        """The input vector from the values up to the origin (oldest first) and the target step's features."""
        z = np.empty(self.rls.d)
        z[0] = 1.0
        z[1 : 1 + len(self.lags)] = (window[self._lag_index - 1] - window[-1]) / s
        z[1 + len(self.lags) :] = features if features is not None and self.n_features else 0.0
        return bound(z, -FEATURE_LIMIT, FEATURE_LIMIT)

    def learn(self, features=None) -> None:
        h = self.history
        if h.n < 2:
            return
        change = h.lag(0) - h.lag(1)
        p = max(self.lags)
        if h.size > p + 1 and self.changes.ready:
            s = self.scale
            z = self._inputs(h.window(p + 2)[:-1], features, s)
            self.rls.update(0, z, clamp(change / s, FEATURE_LIMIT))
        self.changes.update(change)

    def forecast(self, horizon: int, future=None) -> np.ndarray:
        # the recursion in plain floats: a handful of lags per step, where numpy calls would cost more
        p, L = max(self.lags), len(self.lags)
        values = self.history.window(p + 1).tolist()
        w, s = self.rls.w[0], self.scale
        lag_weights = list(zip(w[1 : 1 + L].tolist(), self.lags))
        drift = float(w[0])
        steer = [0.0] * horizon  # the features' part of each step, (future @ w_features)
        if future is not None and self.n_features:
            steer = np.clip(future, -FEATURE_LIMIT, FEATURE_LIMIT).dot(w[1 + L :]).tolist()
        limit = FEATURE_LIMIT
        for h in range(horizon):
            last = values[-1]
            change = drift + steer[h]
            for weight, k in lag_weights:
                r = (values[-1 - k] - last) / s
                change += weight * (limit if r > limit else (-limit if r < -limit else r))
            values.append(last + s * change)
        return np.array(values[p + 1 :])
