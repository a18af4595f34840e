"""RNNForecaster: a recurrent autoregression that forecasts by feeding back its own forecasts."""

from __future__ import annotations

import collections
import math

import numpy as np
from river.time_series.base import Forecaster

from .base import FEATURES_DOC, PARAMETERS_DOC, RNNEstimator
from .features import RunningMoments, value


class RNNForecaster(RNNEstimator, Forecaster):
    __doc__ = f"""Recurrent forecaster that learns online, on every value of the series.

    At each step the network reads the series' recent values (``lags``, in
    standardised units) and the exogenous features x, and predicts the next
    value -- with ``residual``, its change from the last value (persistence
    plus a learned correction).  ``forecast(horizon, xs)`` copies the network
    and its hidden state, rolls the copy forward feeding back its own forecasts
    as lagged values (and as fed-back targets with ``target_feedback``), and
    leaves the live state untouched.  Before any value it forecasts 0.

    Streaming contract: the hidden state carries across calls for the life of
    the estimator; ``learn_one(y, x=None)`` advances it by one step and learns;
    ``forecast`` is pure.  ``xs``, a list or deque of one dict per forecast
    step, gives the features of the steps ahead; without it they are missing.

    {FEATURES_DOC}  Dates are not numbers: turn them into numbers upstream,
    e.g. with ``compose.FuncTransformer``, or drop them with ``compose.Discard``.

    Parameters
    ----------
    {PARAMETERS_DOC}
    residual
        Predict the change from the last value rather than the value itself.
    lags
        Which past values the network reads at each step: ``(1,)`` is the last
        one, ``(1, 12)`` adds the value a season of 12 steps ago.
    multiplicative
        Model log y instead of y, for a positive series whose swings grow with
        its level (as HoltWinters' ``multiplicative``).

    Examples
    --------
    Monthly airline passengers: the month as one-hot features, last month's and
    last year's values, a multiplicative season.

    >>> import statistics
    >>> from river import compose, datasets, evaluate, metrics
    >>> from streamrnn import Adam, RNNForecaster
    >>> month = compose.FuncTransformer(lambda x: {{f"month_{{x['month'].month}}": 1.0}})
    >>> model = month | RNNForecaster(
    ...     lags=(1, 12), residual=False, multiplicative=True, differences=True,
    ...     clip_norm=None, optimizer=Adam(0.02), seed=2,
    ... )
    >>> mae = evaluate.evaluate(datasets.AirlinePassengers(), model, metrics.MAE(), horizon=12)
    >>> round(statistics.mean(m.get() for m in mae.metrics))
    24
    >>> len(model.forecast(horizon=3))
    3
    """

    def __init__(
        self,
        hidden_size: int = 16,
        n_layers: int = 1,
        activation: str = "tanh",
        beta: float = 1.0,
        recurrent_gain: float = 1.0,
        learner=None,
        optimizer=None,
        clip_norm: float | None = 1.0,
        target_feedback: bool = False,
        standardize: bool = True,
        differences: bool = False,
        residual: bool = True,
        lags: tuple = (1,),
        multiplicative: bool = False,
        seed: int | None = None,
    ):
        super().__init__(
            hidden_size, n_layers, activation, beta, recurrent_gain, learner, optimizer, clip_norm,
            target_feedback, standardize, differences, seed,
        )
        self.residual = residual
        self.lags = lags
        self.multiplicative = multiplicative
        if not isinstance(lags, tuple) or not lags or not all(
            isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in lags
        ):
            raise ValueError(f"lags must be a tuple of integers >= 1, got {lags!r}")
        self._history = collections.deque(maxlen=max(lags))  # newest last
        self._level = RunningMoments(1)  # of y: scales the lagged inputs
        self._change = RunningMoments(1)  # of the network's target, y or y - y_prev

    def _extra_inputs(self) -> int:
        return len(self.lags)

    def _lag_inputs(self, history) -> np.ndarray:
        n = len(history)
        v = np.array([history[n - k] if k <= n else 0.0 for k in self.lags])
        present = np.array([k <= n for k in self.lags])
        return self._level.scale(v) * present

    def _base(self, history) -> float:
        return history[-1] if self.residual else 0.0

    def learn_one(self, y, x=None) -> None:
        y = value("y", y)
        if y is None:
            raise ValueError("y must be a number, got None or NaN")
        if self.multiplicative:
            if y <= 0.0:
                raise ValueError(f"y must be > 0 with multiplicative=True, got {y!r}")
            y = math.log(y)
        x = {} if x is None else x
        self._add_features(x)
        raw = self._features.raw(x)
        model = self._ensure_model(1)
        inputs = np.concatenate([self._lag_inputs(self._history), self._features.vector(x, raw)])
        if self._history:  # a change needs a previous value; the first one only starts the series
            change = y - self._base(self._history)
            target = (np.array([change]) - self._change.mean) / self._change.std
            model.step(inputs, target)
            self._change.update(np.array([change]))
        else:
            model.step(inputs)
        self._level.update(np.array([y]))
        self._features.learn(x, raw)
        self._history.append(y)

    def forecast(self, horizon: int, xs=None) -> list:
        if not self._history:
            return [0.0] * horizon
        out = self._rollout(horizon, list(xs) if xs is not None else [])
        return [math.exp(v) for v in out] if self.multiplicative else out

    def _rollout(self, horizon: int, xs: list) -> list:
        """Forecasts in the network's units (log y when multiplicative), from a copy of the state."""
        history = collections.deque(self._history, maxlen=self._history.maxlen)
        space = self._features.fork()
        mean, std = float(self._change.mean[0]), float(self._change.std[0])
        out = []

        def next_input(k, o):  # (the engine feeds each output back itself with target_feedback)
            if o is not None:  # step k - 1's forecast joins the history it is fed from
                out.append(self._base(history) + mean + std * float(o[0]))
                history.append(out[-1])
            x = xs[k] if k < len(xs) and xs[k] is not None else {}
            raw = space.raw(x)
            inputs = np.concatenate([self._lag_inputs(history), space.vector(x, raw)])
            space.remember(raw)
            return inputs

        last = self._model.rollout(next_input, horizon)[-1]
        out.append(self._base(history) + mean + std * float(last[0]))
        return out
