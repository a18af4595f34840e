"""RNNForecaster: river's Forecaster on the hybrid forecaster (``streamrnn.hybrid.HybridForecaster``)."""

from __future__ import annotations

import numpy as np
from river.time_series.base import Forecaster

from ..hybrid.calendar import periods_for_interval, timestamp
from ..hybrid.forecaster import HybridForecaster, check_periods
from .base import FEATURES_DOC, PARAMETERS_DOC, RNNEstimator
from .features import value


class RNNForecaster(RNNEstimator, Forecaster):
    __doc__ = f"""Forecaster that learns online, on every value of the series.

    Exact online components -- the last value, the seasonal naive, exponential
    smoothing of level, trend and seasons (on log y for a positive series),
    the Theta method, and a linear autoregression on lags, seasonal lags,
    calendar phases and the features x, fitted by recursive least squares --
    are aggregated per horizon step by ML-Poly, whose regret bound makes the
    combination asymptotically no worse than the best of them.  A recurrent
    network, trained on every value by RTRL or BPTT, learns what the
    combination misses from the components' disagreement, its own recent
    errors and the features; a second ML-Poly uses its correction as far as
    it has helped.  ``diagnostics["weights"]`` shows whom the series trusts.

    ``forecast(horizon, xs)`` is pure.  ``xs``, one dict per step ahead, gives
    the features of the steps ahead (missing ones read 0).  When x carries a
    ``datetime`` (river's AirlinePassengers ``month``, WaterFlow ``Time``), the
    forecaster learns the sampling interval, uses the calendar phases as
    features, takes its candidate seasons from the calendar (12 for monthly
    data, 24 and 168 for hourly...), and forecasts for the *times* in ``xs``:
    river's ``evaluate`` asks, after learning y_t, for the values at t + 2 ...
    t + horizon + 1, and gets them.  Before any value it forecasts 0.

    {FEATURES_DOC}

    Parameters
    ----------
    season
        Seasonal period in steps, or several (``(48, 336)``: a day and a week of
        half-hourly data); None detects them during warm-up (autocorrelation of
        the differences, among the calendar's periods when x has a datetime) and
        reports them in ``diagnostics["periods"]``.
    lags
        The linear model's lags (any ints >= 1); None for 1, 2, 3 and m - 1, m, m + 1
        for each season m.
    multiplicative
        None: the trended smoothing and Theta model log y when every value so far
        is > 0; True: all smoothing does, and y must be > 0; False: none does.
    horizon
        The steps ahead you will ask for: the aggregation learns weights for each of
        them from the first value.  None: a season ahead (at most 48 steps), or 1
        without a season.  Asking further grows it (those steps then start
        learning); the cost per value grows with it (see the README).
    {PARAMETERS_DOC}

    Examples
    --------
    Monthly airline passengers, with defaults: the month in x says the data is
    monthly, and the season of 12 is confirmed after 50 values.  (River's
    ``evaluate`` scores this way; HoltWinters, which does not read the times,
    scores 27.5 there.  See benchmarks/forecast_quality.py for both protocols.)

    >>> import statistics
    >>> from river import datasets, evaluate, metrics
    >>> from streamrnn import RNNForecaster
    >>> model = RNNForecaster()
    >>> mae = evaluate.evaluate(datasets.AirlinePassengers(), model, metrics.MAE(), horizon=12)
    >>> round(statistics.mean(m.get() for m in mae.metrics))
    19
    >>> model.diagnostics["periods"]
    [12]
    >>> len(model.forecast(horizon=3))
    3
    """

    def __init__(
        self,
        season=None,
        lags=None,
        multiplicative: bool | None = None,
        horizon: int | None = None,
        hidden_size: int = 16,
        n_layers: int = 1,
        activation: str = "tanh",
        beta: float = 1.0,
        recurrent_gain: float = 1.0,
        learner=None,
        optimizer=None,
        clip_norm: float | None = 1.0,
        seed: int | None = None,
    ):
        self.season = season
        self.lags = lags
        self.multiplicative = multiplicative
        self.horizon = horizon
        check_periods("season", season)
        super().__init__(hidden_size, n_layers, activation, beta, recurrent_gain, learner, optimizer, clip_norm, seed)
        HybridForecaster(season, multiplicative, lags, horizon, layers=None)  # ValueError now for bad settings

    def _init_learned(self) -> None:
        self._core: HybridForecaster | None = None
        self._origin_rows = np.zeros((0, 0))  # the future features the newest origin was forecast with

    @classmethod
    def _unit_test_params(cls):
        yield {"season": 12}
        yield {"hidden_size": 4, "lags": (1, 2), "horizon": 3}

    # ----- the core ---------------------------------------------------------------
    def _ensure_core(self, x: dict) -> HybridForecaster:
        if self._core is None:
            candidates = None
            has_clock = self._features.clock_name is not None or any(timestamp(v) is not None for v in x.values())
            if self.season is None and has_clock:
                candidates = ()  # decided once the sampling interval is known (``_update_candidates``)
            self._core = HybridForecaster(
                self.season, self.multiplicative, self.lags, self.horizon, n_features=self._features.width,
                candidates=candidates, **self._network(),
            )
        return self._core

    def _update_candidates(self) -> None:
        """With a clock, the seasons to test come from the sampling interval once it is known."""
        core, clock = self._core, self._features.clock
        if self.season is None and core.candidates == () and clock.ready:
            core.candidates = periods_for_interval(clock.interval) or None

    def learn_one(self, y, x=None) -> None:
        y = value("y", y)
        if y is None:
            raise ValueError("y must be a number, got None or NaN")
        x = {} if x is None else x
        new = self._features.new(x)  # checks every value first
        core = self._ensure_core({**x})
        core._check(y, None)  # y's own checks, before anything changes
        k = self._features.add(new, x)
        if k:
            core.grow_features(k)
        raw = self._features.raw(x)
        features = self._features.vector(x, raw)
        self._features.learn(x, raw)  # the clock takes x's time: the calendar of the next steps is known
        self._update_candidates()
        self._origin_rows = self._calendar(core.horizon)
        core.learn(y, features, self._origin_rows if core.n_features else None)
        if core.horizon != self._origin_rows.shape[0]:  # detection lengthened it: those rows were not used
            self._origin_rows = np.zeros((0, core.n_features))

    def forecast(self, horizon: int, xs=None) -> list:
        if self._core is None or not self._core.history.n:
            return [0.0] * horizon
        core, clock = self._core, self._features.clock
        xs = list(xs) if xs is not None else []
        # the step ahead of each requested forecast: from its time when x has a clock, else k + 1
        steps = []
        for k in range(horizon):
            t = self._features.time_of(xs[k]) if k < len(xs) and xs[k] else None
            steps.append(clock.steps_to(t) if t is not None and clock.ready else k + 1)
        depth = max(steps)
        core.track(depth)  # learn weights for this many steps from now on
        name = self._features.clock_name
        only_times = all(not x or set(x) <= {name} for x in xs[:horizon])
        if only_times and steps == list(range(1, horizon + 1)) and horizon <= self._origin_rows.shape[0]:
            # the steps just ahead, known by their times alone: the forecasts the newest origin made,
            # with the clock's calendar for those steps, when its value was learned
            path = core.forecast(horizon)
        else:
            future = self._calendar(depth)
            for k, step in enumerate(steps):
                x = xs[k] if k < len(xs) and xs[k] else None
                if x:
                    self._features.new(x)  # ValueError for a bad value; unknown features are ignored
                    future[step - 1] = self._features.vector(x)
            path = core.forecast(depth, future if core.n_features else None)
        return [float(path[step - 1]) for step in steps]

    def _calendar(self, depth: int) -> np.ndarray:
        """(depth, features): the features of the next steps as far as the clock knows them (else zeros)."""
        future = np.zeros((depth, self._core.n_features))
        clock, name = self._features.clock, self._features.clock_name
        if clock.ready and name is not None:
            for k in range(depth):
                future[k] = self._features.vector({name: _datetime(clock.future_time(k + 1))})
        return future

    def _diagnostics(self) -> dict:
        return self._core.diagnostics() if self._core is not None else {}


def _datetime(t: float):
    import datetime as dt

    return dt.datetime.fromtimestamp(t, tz=dt.timezone.utc)
