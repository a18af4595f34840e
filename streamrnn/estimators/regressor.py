"""RNNRegressor: one or several numeric targets, predicted from the stream so far."""

from __future__ import annotations

import numpy as np
from river import base

from .base import FEATURES_DOC, PARAMETERS_DOC, RNNEstimator
from .features import RunningMoments, frame_rows, value


class RNNRegressor(RNNEstimator, base.MiniBatchRegressor):
    __doc__ = f"""Recurrent regressor that learns online, on every event.

    The network predicts the target in standardised units (running mean and
    variance of the targets learned so far), so targets on any scale train
    alike.  With ``residual`` it predicts the *change* from the previous target
    instead: persistence (the next value like the last) is then the starting
    point the network corrects, which suits slowly moving series; leave it off
    for events that are not a time series.  The readout starts at zero, so the
    untrained model predicts the running mean (or the last value).

    ``y`` may be a number or a dict of named numbers; with a dict,
    ``predict_one`` returns a dict, a target seen for the first time grows the
    readout, and a target missing from an event is left out of its loss.
    Before any target, ``predict_one`` returns 0.0.

    Streaming contract: the hidden state carries across calls for the life of
    the estimator; ``predict_one`` is pure (the state does not advance) and a
    following ``learn_one`` on an equal x reuses its forward pass;
    ``learn_one`` advances the state and learns; ``advance_one(x)`` advances
    the state on an event whose target never comes.  ``learn_many`` is
    ``learn_one`` over the rows in order; ``predict_many`` predicts every row
    from the current state, like calls to ``predict_one`` (rows do not advance
    it).

    {FEATURES_DOC}

    Parameters
    ----------
    {PARAMETERS_DOC}
    residual
        Predict the change from the previous target (persistence plus a learned
        correction) rather than the target itself.

    Examples
    --------
    TrumpApproval moves slowly: predict changes, and read each feature's change too.

    >>> from river import datasets, evaluate, metrics
    >>> from streamrnn import RNNRegressor
    >>> model = RNNRegressor(residual=True, differences=True, seed=1)
    >>> mae = evaluate.progressive_val_score(datasets.TrumpApproval(), model, metrics.MAE())
    >>> print(f"{{mae.get():.2f}}")
    0.19

    (The last value scores 0.195 on the same 1001 events, counting a first
    prediction of 0 as every river regressor makes.)  The engine's health after
    the newest event:

    >>> model.diagnostics["steps"], model.diagnostics["updates"]
    (1001, 1000)
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
        residual: bool = False,
        seed: int | None = None,
    ):
        super().__init__(
            hidden_size, n_layers, activation, beta, recurrent_gain, learner, optimizer, clip_norm,
            target_feedback, standardize, differences, seed,
        )
        self.residual = residual
        self._targets: list = []  # target names; [None] for a single numeric target
        self._moments = RunningMoments()  # of (y - baseline), per target
        self._last = np.zeros(0)  # previous value of each target (the residual's baseline)
        self._seen = np.zeros(0, dtype=bool)  # targets with a previous value

    # ----- targets ------------------------------------------------------------
    def _split(self, y) -> dict:
        """y as {name: float}; a plain number is the single target named None."""
        if isinstance(y, dict):
            return {k: value(k, v) for k, v in y.items()}
        return {None: value("y", y)}

    def _add_targets(self, ys: dict) -> None:
        fresh = [k for k in ys if k not in self._targets]
        if not fresh:
            return
        self._targets.extend(sorted(fresh, key=repr))
        k = len(fresh)
        self._moments.grow(k)
        self._last = np.concatenate([self._last, np.zeros(k)])
        self._seen = np.concatenate([self._seen, np.zeros(k, dtype=bool)])
        self._add_outputs(k)

    def _baseline(self) -> np.ndarray:
        return self._last * self._seen if self.residual else np.zeros(len(self._targets))

    def _output(self, o: np.ndarray | None):
        """Network output (standardised) -> the prediction in the caller's units."""
        if not self._targets:
            return 0.0
        pred = self._baseline() + self._moments.mean
        if o is not None:
            pred = pred + self._moments.std * o
        if self._targets == [None]:
            return float(pred[0])
        return {k: float(p) for k, p in zip(self._targets, pred)}

    # ----- the river API --------------------------------------------------------
    def predict_one(self, x):
        o = None
        if self._model is not None:
            o = self._model.predict(self._features.vector(x))
        return self._output(o)

    def learn_one(self, x, y):
        ys = self._split(y)
        can_step = self._add_features(x)  # checks every value before anything grows
        self._add_targets(ys)
        if not self._targets:  # no target yet (an empty dict): the event only advances
            self.advance_one(x)
            return
        if self._targets == [None]:  # one number: no per-name bookkeeping
            v, present = np.array([ys[None] or 0.0]), np.array([ys[None] is not None])
        else:
            v = np.array([ys.get(name) or 0.0 for name in self._targets])
            present = np.array([ys.get(name) is not None for name in self._targets])
        # the residual needs a previous value: the first one only sets the baseline
        learnable = present & self._seen if self.residual else present
        raw = self._features.raw(x)
        if can_step:
            model = self._ensure_model(len(self._targets))
            vec = self._features.vector(x, raw)
            if learnable.any():
                target = (v - self._baseline() - self._moments.mean) / self._moments.std
                target *= learnable
                model.step(vec, target, None if learnable.all() else learnable)
            else:
                model.step(vec)
        if self.residual:
            self._moments.update(v - self._last, learnable)
            self._last = np.where(present, v, self._last)
            self._seen |= present
        else:
            self._moments.update(v, present)
        self._features.learn(x, raw)

    def advance_one(self, x) -> None:
        """Advance the hidden state on an event whose target never comes (nothing is learned)."""
        if self._add_features(x) and self._targets:
            self._ensure_model(len(self._targets)).step(self._features.vector(x))
        self._features.learn(x)

    def learn_many(self, X, y) -> None:
        targets = frame_rows(y) if hasattr(y, "columns") else list(y)
        for x, yi in zip(frame_rows(X), targets):
            self.learn_one(x, yi)

    def predict_many(self, X):
        import pandas as pd

        preds = [self.predict_one(x) for x in frame_rows(X)]
        if preds and isinstance(preds[0], dict):
            return pd.DataFrame(preds, index=X.index)
        return pd.Series(preds, index=X.index, dtype=float)
