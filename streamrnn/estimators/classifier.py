"""RNNClassifier: binary and multiclass labels, classes added as they appear."""

from __future__ import annotations

import numpy as np
from river import base

from ..losses import CrossEntropy
from ..optim import Adam
from .base import FEATURES_DOC, PARAMETERS_DOC, RNNEstimator
from .features import frame_rows


class RNNClassifier(RNNEstimator, base.MiniBatchClassifier):
    __doc__ = f"""Recurrent classifier that learns online, on every event.

    A softmax readout over the classes seen so far, trained with cross-entropy.
    A class seen for the first time adds an output (a zero row of the readout:
    logit 0, see ``streamrnn.grow``); ``predict_proba_one`` returns every class
    seen so far as float64 probabilities summing to 1, and an empty dict before
    the first label.  Labels may be of any hashable type (bool, str, int).  The
    readout starts at zero, so the untrained model is uniform over the classes.

    Streaming contract: the hidden state carries across calls for the life of
    the estimator; ``predict_proba_one`` and ``predict_one`` are pure and a
    following ``learn_one`` on an equal x reuses their forward pass;
    ``learn_one`` advances the state and learns; ``advance_one(x)`` advances
    the state on an event whose label never comes.  ``learn_many`` is
    ``learn_one`` over the rows in order; ``predict_proba_many`` and
    ``predict_many`` predict every row from the current state, like calls to
    the one-event methods (rows do not advance it).

    {FEATURES_DOC}

    Parameters
    ----------
    {PARAMETERS_DOC}

    Examples
    --------
    >>> from river import datasets, evaluate, metrics
    >>> from streamrnn import RNNClassifier
    >>> model = RNNClassifier(seed=1)
    >>> accuracy = evaluate.progressive_val_score(datasets.Phishing(), model, metrics.Accuracy())
    >>> print(f"{{accuracy.get():.0%}}")
    89%
    >>> sorted(model.predict_proba_one({{"https": 1.0}}))
    [False, True]
    """

    _activation = "softmax"
    _loss = CrossEntropy
    _default_optimizer = Adam(0.01)

    # the parameters are RNNEstimator's, so is __init__ (river reads the signature from it)

    def _init_learned(self) -> None:
        self._classes: list = []
        self._index: dict = {}

    @property
    def _multiclass(self) -> bool:
        return True

    def _add_class(self, y) -> None:
        if y not in self._index:
            self._index[y] = len(self._classes)
            self._classes.append(y)
            self._add_outputs(1)

    def predict_proba_one(self, x) -> dict:
        if self._model is None:
            return {c: 1.0 / len(self._classes) for c in self._classes}
        p = self._model.predict(self._features.vector(x))
        return dict(zip(self._classes, p.tolist()))

    def learn_one(self, x, y) -> None:
        can_step = self._add_features(x)  # checks every value before anything grows
        self._add_class(y)
        raw = self._features.raw(x)
        if can_step:
            model = self._ensure_model(len(self._classes))
            target = np.zeros(len(self._classes))
            target[self._index[y]] = 1.0
            model.step(self._features.vector(x, raw), target)
        self._features.learn(x, raw)

    def advance_one(self, x) -> None:
        """Advance the hidden state on an event whose label never comes (nothing is learned)."""
        if self._add_features(x) and self._classes:
            self._ensure_model(len(self._classes)).step(self._features.vector(x))
        self._features.learn(x)

    def learn_many(self, X, y) -> None:
        for x, yi in zip(frame_rows(X), y):
            self.learn_one(x, yi)

    def predict_proba_many(self, X):
        import pandas as pd

        rows = [self.predict_proba_one(x) for x in frame_rows(X)]
        return pd.DataFrame(rows, index=X.index, columns=list(self._classes), dtype=float)

    def predict_many(self, X):
        import pandas as pd

        return pd.Series([self.predict_one(x) for x in frame_rows(X)], index=X.index)
