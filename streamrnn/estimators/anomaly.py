"""RNNAnomalyDetector: the surprise of each event against a combined forecast of it."""

from __future__ import annotations

import numpy as np
from river import base

from ..cells import Readout
from ..grow import grow_inputs, grow_outputs
from ..hybrid.aggregation import MLPoly
from ..hybrid.forecaster import DEFAULT_LEARNER, DEFAULT_OPTIMIZER
from ..hybrid.rls import SharedRLS
from ..hybrid.surprise import WARM_UP, Surprise
from ..losses import SquaredError
from ..model import OnlineRNN
from .base import FEATURES_DOC, PARAMETERS_DOC, RNNEstimator

EXPERTS = ("last", "mean", "linear", "rnn")


class RNNAnomalyDetector(RNNEstimator, base.AnomalyDetector):
    __doc__ = f"""Anomaly detector that scores each event by how badly it was forecast.

    Each standardised feature of the next event is forecast by four experts --
    its previous value, its running mean, a linear model of the previous
    event (recursive least squares, all features at once) and a recurrent
    network trained on every event by RTRL or BPTT -- combined per feature by
    ML-Poly.

    The score is calibrated: it is 1 - p, where p estimates how rare the
    event's errors are among the errors learned so far.  Each feature's
    squared error is ranked against that feature's own past errors, the ranks
    are combined by Fisher's method, and the statistic becomes a tail
    probability through an exponential tail fitted to the median and 90th
    percentile of the past statistics (``streamrnn.hybrid.surprise``).  A
    typical event scores about 0.5, 0.9 is about as rare as 1 in 10, and 0.999
    rarer than 1 in 1000 (the tail is conservative).  Scores lie in [0, 1], as
    river's ``metrics.ROCAUC`` and ``anomaly.ThresholdFilter`` expect, and are
    0 for the first {WARM_UP} events.  The tail is fitted to the bulk of the
    past only, so when river's ``ThresholdFilter`` or ``QuantileFilter`` keeps
    flagged events from being learned (``protect_anomaly_detector``), the
    score does not drift.  Score before learning, as in river's progressive
    evaluation.

    {FEATURES_DOC}

    Parameters
    ----------
    {PARAMETERS_DOC}

    Examples
    --------
    >>> from river import datasets, metrics
    >>> from streamrnn import RNNAnomalyDetector
    >>> model = RNNAnomalyDetector()
    >>> auc = metrics.ROCAUC()
    >>> for x, is_anomaly in datasets.Shuttle().take(2000):
    ...     auc.update(is_anomaly, model.score_one(x))
    ...     model.learn_one(x)
    >>> print(f"{{auc.get():.2f}}")
    0.95
    """

    # the parameters are RNNEstimator's, so is __init__ (river reads the signature from it)

    def _init_learned(self) -> None:
        self._previous = np.zeros(0)  # the previous event, standardised (the models' input)
        self._linear = SharedRLS(1)
        self._mixture = MLPoly(len(EXPERTS), 0)
        self._surprise = Surprise()  # of the combined forecast's squared errors, per feature
        self._model: OnlineRNN | None = None
        self._events = 0

    def _grow(self, x: dict) -> None:
        k = self._add_features(x)
        if not k:
            return
        self._previous = np.concatenate([self._previous, np.zeros(k)])
        self._linear.grow(inputs=k, outputs=k)
        self._mixture.add_steps(k)
        self._surprise.grow(k)
        if self._model is None and self.hidden_size:
            net = self._network()
            self._model = OnlineRNN(
                self._features.width, net["layers"], Readout(self._features.width), SquaredError(),
                net["learner"] if net["learner"] is not None else DEFAULT_LEARNER,
                net["optimizer"] if net["optimizer"] is not None else DEFAULT_OPTIMIZER,
                net["clip_norm"], False, net["seed"],
            )
            self._model.params["V"][...] = 0.0
        elif self._model is not None:
            self._model = grow_outputs(grow_inputs(self._model, k), k)

    def _experts(self) -> np.ndarray:
        """(4, F) forecasts of the next event's standardised features."""
        prev = self._previous
        F = np.empty((len(EXPERTS), len(prev)))
        F[0] = prev
        F[1] = 0.0  # the running mean, in standardised units
        F[2] = self._linear.predict(np.concatenate([[1.0], prev]))
        F[3] = self._model.predict(prev) if self._model is not None else prev
        return np.clip(F, -10.0, 10.0)

    def _awake(self) -> np.ndarray:
        return np.array([True, True, True, self._model is not None])

    def _combined(self, F: np.ndarray) -> np.ndarray:
        awake = self._awake()
        return np.array([self._mixture.weights(j, awake) @ F[:, j] for j in range(F.shape[1])])

    def score_one(self, x) -> float:
        if not self._features.width:
            return 0.0
        target = self._features.vector(x)
        combined = self._combined(self._experts())
        return 1.0 - 10.0 ** -self._surprise.score((combined - target) ** 2)  # 1 - p

    def learn_one(self, x) -> None:
        self._features.new(x)  # checks every value before anything grows
        self._grow(x)
        if not self._features.width:
            return
        raw = self._features.raw(x)
        target = self._features.vector(x, raw)
        F = self._experts()
        combined = self._combined(F)
        awake = self._awake()
        for j in range(len(target)):
            self._mixture.update(j, F[:, j], awake, float(target[j]))
        if self._events:  # the first event had no forecast
            self._surprise.learn((combined - target) ** 2)
        self._linear.update(np.concatenate([[1.0], self._previous]), target)
        if self._model is not None:
            self._model.step(self._previous, target)
        self._previous = target
        self._features.learn(x, raw)
        self._events += 1

    def _diagnostics(self) -> dict:
        if not self._events:
            return {}
        awake = self._awake()
        w = np.mean([self._mixture.weights(j, awake) for j in range(len(self._previous))], axis=0)
        out = {"steps": self._events, "weights": dict(zip(EXPERTS, w.tolist()))}
        if self._model is not None:
            out["rnn"] = self._model.diagnostics()
        return out
