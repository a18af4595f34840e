"""Exponential smoothing of level, trend and seasons, and the Theta method built on it.

``ExponentialSmoothing`` works on v = y, or v = log y for a multiplicative
model of a positive series (seasonal swings proportional to the level).  In
error-correction form, with one-step error e_t = v_t - v_hat_t:

    v_hat_t = l_{t-1} + b_{t-1} + sum_j s_j[t mod m_j]
    l_t     = l_{t-1} + b_{t-1} + alpha e_t
    s_j     = s_j + gamma (1 - alpha) e_t / J         at the phase t mod m_j
    b_t     = b_{t-1} + max(kappa, 1/k) ((v_t - v_{t-m}) / m - b_{t-1})

The trend b is the growth per step *over a full season* (m the longest
period, 12 without seasons), from the values themselves, year on year; k
counts these observations, so the first one sets b and later ones average
in.  Within a season growth cannot be told apart from the seasonal shape,
and on high-frequency data a per-step trend gain blows up long forecasts.  Three choices make it work from the first
events without batch initialisation:

* a seasonal phase seen for the first time takes the whole error (so after one
  season the model forecasts that season again), and its first visits use the
  rate max(gamma, 1/visits): a running mean of the phase's deviations until the
  exponential window is reached;
* the error that updates the state is limited to +-3 times its running mean
  absolute size (``RobustScale``), so an outlier or a glitch moves the level by
  a bounded amount;
* a multiplicative model retires (``ready`` False for good) at the first value
  <= 0, rather than taking the log of it.

``Theta`` (Assimakopoulos & Nikolopoulos 2000; Hyndman & Billah 2003) is
simple exponential smoothing of the deseasonalised series plus half of its
least-squares linear drift: forecast_h = l_t + (b / 2) (h - 1 + 1 / alpha).
"""

from __future__ import annotations

import math

import numpy as np

from .component import Component
from .scale import RobustScale

LOG_LIMIT = 700.0  # exp() of more overflows; forecasts are bounded by the forecaster anyway


class ExponentialSmoothing(Component):
    """Level, trend measured over a season, and additive seasons, on y or on log y."""

    _state = ("started", "retired", "level", "slope", "t", "season", "visits")
    _parts = ("errors",)

    def __init__(self, history, periods=(), alpha: float = 0.2, gamma: float = 0.2, trend: bool = True,
                 kappa: float = 0.05, log: bool = False, robust: float = 3.0):
        super().__init__(history)
        self.periods = tuple(int(m) for m in periods)
        self.alpha, self.gamma, self.trend, self.kappa, self.log, self.robust = alpha, gamma, trend, kappa, log, robust
        self.name = "smoothing" + ("_log" if log else "") + ("_trend" if trend else "")
        self._offsets = np.concatenate([[0], np.cumsum(self.periods)]).astype(int)
        self.cycle = max(self.periods, default=12)
        self.started = self.retired = False
        self.level = self.slope = 0.0
        self.t = 0  # values learned: the phase of the next one is t mod m
        self.season = np.zeros(int(self._offsets[-1]))
        self.visits = np.zeros(int(self._offsets[-1]))
        self.errors = RobustScale(rate=0.05)

    @property
    def ready(self) -> bool:
        return self.started and not self.retired and self.t >= min(self.periods, default=2)

    def _phases(self, t: int) -> list[int]:
        """Index into ``season`` of each period's phase at step t."""
        return [int(o) + t % m for o, m in zip(self._offsets, self.periods)]

    def _v(self, y: float) -> float:
        return math.log(y) if self.log else y

    def seasonal(self, t: int) -> float:
        """The sum of the seasons' values at the phase of step t."""
        season = self.season
        return sum(float(season[i]) for i in self._phases(t))

    def one_step(self) -> float:
        """v_hat for the next value (log units when log)."""
        return self.level + self.slope + self.seasonal(self.t)

    def learn(self, features=None) -> None:
        if self.retired:
            return
        y = self.history.last
        if self.log and y <= 0.0:
            self.retired = True
            return
        v = self._v(y)
        visits, season = self.visits, self.season
        if not self.started:
            self.started, self.level, self.t = True, v, 1
            for i in self._phases(0):
                visits[i] = 1.0
            return
        e = v - self.one_step()
        idx = self._phases(self.t)
        unseen = [i for i in idx if visits[i] == 0.0]
        for i in idx:
            visits[i] += 1.0
        if unseen:
            # an unseen phase takes the whole error (the longest unseen period's): nothing else moves
            season[unseen[-1]] += e
            self.level += self.slope
        else:
            ec = self.errors.clip(e, self.robust)
            self.errors.update(e)
            self.level += self.slope + self.alpha * ec
            share = (1.0 - self.alpha) * ec / max(len(idx), 1)
            for i in idx:
                season[i] += max(self.gamma, 1.0 / visits[i]) * share
        self.t += 1
        m = self.cycle
        if self.trend and self.t > m and self.history.size > m:
            # the growth per step over the last full season, of the values themselves
            growth = (v - self._v(self.history.lag(m))) / m
            k = self.t - m
            self.slope += max(self.kappa, 1.0 / k) * (growth - self.slope)

    def seasons_ahead(self, horizon: int) -> np.ndarray | float:
        """The seasons' sum at steps t+1 ... t+horizon (0.0 without seasons)."""
        if not self.periods:
            return 0.0
        if horizon == 1:
            return self.seasonal(self.t)
        h = np.arange(horizon)
        out = 0.0
        for o, m in zip(self._offsets, self.periods):
            out = out + self.season[int(o) + (self.t + h) % m]
        return out

    def forecast_v(self, horizon: int) -> np.ndarray:
        """Forecasts in the model's units (log y when log)."""
        if horizon == 1:
            return np.array([self.one_step()])
        return self.level + self.slope * np.arange(1.0, horizon + 1.0) + self.seasons_ahead(horizon)

    def forecast(self, horizon: int, future=None) -> np.ndarray:
        out = self.forecast_v(horizon)
        return _exp(out) if self.log else out


class Theta(Component):
    """Smoothing of the deseasonalised series plus half its least-squares drift (the Theta method).

    The drift is the slope of a weighted least-squares line through the
    deseasonalised values, with weights forgetting at ``lam`` per step.
    """

    _state = ("w", "mean_t", "mean_v", "c_tv", "c_tt")
    _parts = ("smoothing",)

    def __init__(self, history, periods=(), log: bool = False, alpha: float = 0.2, gamma: float = 0.2, lam: float = 0.999):
        super().__init__(history)
        self.smoothing = ExponentialSmoothing(history, periods, alpha, gamma, trend=False, log=log)
        self.name = "theta" + ("_log" if log else "")
        self.lam = lam
        self.w = self.mean_t = self.mean_v = self.c_tv = self.c_tt = 0.0

    @property
    def ready(self) -> bool:
        return self.smoothing.ready and self.w >= 3.0

    def learn(self, features=None) -> None:
        s = self.smoothing
        s.learn()
        if not s.started or s.retired:
            return
        t = float(s.t - 1)  # the step just learned
        v = s._v(self.history.last) - s.seasonal(s.t - 1)
        # weighted Welford: running means and co-moments of (t, v) with forgetting lam
        self.w = self.lam * self.w + 1.0
        dt, dv = t - self.mean_t, v - self.mean_v
        self.mean_t += dt / self.w
        self.mean_v += dv / self.w
        self.c_tt = self.lam * self.c_tt + dt * (t - self.mean_t)
        self.c_tv = self.lam * self.c_tv + dt * (v - self.mean_v)

    def forecast(self, horizon: int, future=None) -> np.ndarray:
        s = self.smoothing
        drift = self.c_tv / self.c_tt if self.c_tt > 0.0 else 0.0
        out = s.level + 0.5 * drift * (np.arange(horizon) + 1.0 / s.alpha) + s.seasons_ahead(horizon)
        return _exp(out) if s.log else out


def _exp(v: np.ndarray) -> np.ndarray:
    """exp(v), with v bounded so that it cannot overflow."""
    np.minimum(v, LOG_LIMIT, out=v)
    np.maximum(v, -LOG_LIMIT, out=v)
    return np.exp(v, out=v)
