"""RNNClassifier: binary and multiclass labels, a recurrent network and an online logistic model, mixed by log-loss."""

from __future__ import annotations

import numpy as np
from river import base

from ..cells import Readout
from ..grow import grow_inputs, grow_outputs
from ..hybrid.aggregation import MLPoly
from ..hybrid.forecaster import DEFAULT_LEARNER
from ..hybrid.logistic import EPS, OnlineLogistic, log_loss_regret
from ..losses import CrossEntropy
from ..model import OnlineRNN
from ..optim import Adam
from .base import FEATURES_DOC, PARAMETERS_DOC, RNNEstimator
from .features import frame_rows

EXPERTS = ("prior", "logistic", "rnn")
#: a softmax readout trained by cross-entropy needs a larger step than the regression corrector's
DEFAULT_OPTIMIZER = Adam(0.01)


class RNNClassifier(RNNEstimator, base.MiniBatchClassifier):
    __doc__ = f"""Classifier that learns online, on every event.

    Three experts give class probabilities for each event: the class
    frequencies so far, an online logistic model (one against the rest,
    fitted by the online Newton step, no learning rate to tune) and a
    recurrent network with a softmax readout, trained on every event by RTRL
    or BPTT with cross-entropy (``Adam(0.01)`` unless ``optimizer`` is given).
    Their probabilities are mixed by ML-Poly on the log-loss, whose regret
    bound makes the mixture no worse than the best of them in the long run.  A class seen for the first time
    is added to all three (a zero row in the network's readout);
    ``predict_proba_one`` returns every class seen so far, and an empty dict
    before the first label.  Labels may be of any hashable type.

    ``advance_one(x)`` advances the network's state on an event whose label
    never comes.

    {FEATURES_DOC}

    Parameters
    ----------
    {PARAMETERS_DOC}

    Examples
    --------
    >>> from river import datasets, evaluate, metrics
    >>> from streamrnn import RNNClassifier
    >>> model = RNNClassifier()
    >>> accuracy = evaluate.progressive_val_score(datasets.Phishing(), model, metrics.Accuracy())
    >>> print(f"{{accuracy.get():.1%}}")
    89.4%
    >>> sorted(model.predict_proba_one({{"https": 1.0}}))
    [False, True]
    """

    # the parameters are RNNEstimator's, so is __init__ (river reads the signature from it)

    def _init_learned(self) -> None:
        self._classes: list = []
        self._index: dict = {}
        self._counts = np.zeros(0)
        self._logistic = OnlineLogistic(0)
        self._mixture = MLPoly(len(EXPERTS))
        self._model: OnlineRNN | None = None

    @property
    def _multiclass(self) -> bool:
        return True

    def _grow(self, x: dict, y=None) -> None:
        k = self._add_features(x)
        if k:
            self._logistic.grow_features(k)
            if self._model is not None:
                self._model = grow_inputs(self._model, k)
        if y is not None and y not in self._index:
            self._index[y] = len(self._classes)
            self._classes.append(y)
            self._counts = np.append(self._counts, 0.0)
            self._logistic.add_class()
            if self._model is not None:
                self._model = grow_outputs(self._model, 1)
        if self._model is None and self._classes and self._features.width and self.hidden_size:
            net = self._network()
            self._model = OnlineRNN(
                self._features.width, net["layers"], Readout(len(self._classes), "softmax"), CrossEntropy(),
                net["learner"] if net["learner"] is not None else DEFAULT_LEARNER,
                net["optimizer"] if net["optimizer"] is not None else DEFAULT_OPTIMIZER,
                net["clip_norm"], False, net["seed"],
            )
            self._model.params["V"][...] = 0.0  # uniform until it learns

    def _experts(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probs (3, C), awake) of the experts for features z."""
        C = len(self._classes)
        probs = np.full((len(EXPERTS), C), 1.0 / C)
        probs[0] = (self._counts + 1.0) / (self._counts.sum() + C)
        probs[1] = self._logistic.proba(z)
        awake = np.array([True, True, self._model is not None])
        if self._model is not None:
            probs[2] = np.clip(self._model.predict(z), EPS, 1.0)
        return probs, awake

    def predict_proba_one(self, x) -> dict:
        if not self._classes:
            return {}
        probs, awake = self._experts(self._features.vector(x))
        p = self._mixture.weights(0, awake) @ probs
        return dict(zip(self._classes, (p / p.sum()).tolist()))

    def learn_one(self, x, y) -> None:
        self._features.new(x)  # checks every value before anything grows
        self._grow(x, y)
        raw = self._features.raw(x)
        z = self._features.vector(x, raw)
        label = self._index[y]
        probs, awake = self._experts(z)
        self._mixture.learn(0, log_loss_regret(probs, awake, self._mixture.weights(0, awake), label))
        self._logistic.learn(z, label)
        if self._model is not None:
            target = np.zeros(len(self._classes))
            target[label] = 1.0
            self._model.step(z, target)
        self._counts[label] += 1.0
        self._features.learn(x, raw)

    def advance_one(self, x) -> None:
        """Advance the network's state on an event whose label never comes (nothing is learned)."""
        self._features.new(x)
        self._grow(x)
        if self._model is not None:
            self._model.step(self._features.vector(x))
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

    def _diagnostics(self) -> dict:
        if not self._classes:
            return {}
        awake = np.array([True, True, self._model is not None])
        out = {"steps": int(self._counts.sum()), "weights": dict(zip(EXPERTS, self._mixture.weights(0, awake).tolist())),
               "classes": len(self._classes)}
        if self._model is not None:
            out["rnn"] = self._model.diagnostics()
        return out
