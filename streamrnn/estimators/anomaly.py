"""RNNAnomalyDetector: the surprise of each event under a network that predicts the next one."""

from __future__ import annotations

import numpy as np
from river import base

from .base import FEATURES_DOC, PARAMETERS_DOC, RNNEstimator
from .features import RunningMoments

_FLOOR = 1e-3  # smallest error variance, in standardised units: a perfectly predicted feature is not infinitely surprising


class RNNAnomalyDetector(RNNEstimator, base.AnomalyDetector):
    __doc__ = f"""Anomaly detector that scores each event by how badly it was predicted.

    The network reads the previous event (its standardised features) and
    predicts the next one; its hidden state summarises the stream before.  The
    score of an event is its squared prediction error per feature, divided by
    that feature's running mean squared error and averaged over the features:
    a standardised surprise, near 1 for a typical event and higher for
    anomalies.  Score before learning, as in river's progressive evaluation.

    Streaming contract: the hidden state carries across calls for the life of
    the estimator; ``score_one`` is pure and a following ``learn_one`` reuses
    its forward pass (the prediction depends only on the events before);
    ``learn_one`` advances the state and learns.

    {FEATURES_DOC}  A new feature is also a new output (a zero readout row).

    Parameters
    ----------
    {PARAMETERS_DOC}

    Examples
    --------
    >>> from river import datasets, metrics
    >>> from streamrnn import RNNAnomalyDetector
    >>> model = RNNAnomalyDetector(seed=1)
    >>> auc = metrics.ROCAUC()
    >>> for x, is_anomaly in datasets.Shuttle().take(2000):
    ...     auc.update(is_anomaly, model.score_one(x))
    ...     model.learn_one(x)
    >>> print(f"{{auc.get():.1f}}")
    0.9
    """

    # the parameters are RNNEstimator's, so is __init__ (river reads the signature from it)

    def _init_learned(self) -> None:
        self._previous = np.zeros(0)  # the previous event, as the network's input (a copy)
        self._errors = RunningMoments()  # of the squared prediction error per output

    def _add_features(self, x: dict) -> bool:
        before = self._features.width
        known = super()._add_features(x)
        k = self._features.width - before
        if k:  # a new feature is also a new output, and reads 0 in the previous event
            self._add_outputs(k)
            self._previous = np.concatenate([self._previous, np.zeros(k)])
            self._errors.grow(k)
        return known

    def _squared_errors(self, target: np.ndarray) -> np.ndarray:
        o = self._model.predict(self._previous)
        return (o - target) ** 2

    def score_one(self, x) -> float:
        if self._model is None or not len(self._features):
            return 0.0
        target = self._features.vector(x)
        # an output without errors yet counts with the prior variance 1 (standardised units)
        scale = np.where(self._errors.count > 0, np.maximum(self._errors.mean, _FLOOR), 1.0)
        ratio = self._squared_errors(target) / scale
        return float(ratio.mean())

    def learn_one(self, x) -> None:
        if not self._add_features(x):
            return
        raw = self._features.raw(x)
        target = self._features.vector(x, raw)
        model = self._ensure_model(self._features.width)
        self._errors.update(self._squared_errors(target), True)
        model.step(self._previous, target)
        self._previous = target
        self._features.learn(x, raw)
