"""RNNRegressor: one or several numeric targets, on the hybrid regressor (``streamrnn.hybrid.HybridRegressor``).

``TargetModels`` holds what it shares with ``RNNMultiTargetRegressor``
(``multioutput``): one ``HybridRegressor`` per named target, on one feature space.
"""

from __future__ import annotations

from river import base

from ..hybrid.regressor import HybridRegressor
from .base import FEATURES_DOC, PARAMETERS_DOC, RNNEstimator
from .features import frame_rows, value


def target_value(name, v) -> float | None:
    """A target's value as a float, None when missing (None or NaN); ValueError naming it otherwise."""
    try:
        return value(name, v)
    except ValueError:
        raise ValueError(f"target {name!r} must be a finite number, got {type(v).__name__} {v!r}") from None


class TargetModels(RNNEstimator):
    """One ``HybridRegressor`` per named target, all reading the same features.

    A target name gets its model at its first appearance (names new in the same
    event are ordered by ``repr``); a target missing from an event, or None or
    NaN there, is not learned from on that event.
    """

    def _init_learned(self) -> None:
        self._targets: list = []  # target names, in order of first appearance; [None] for a single number
        self._cores: dict = {}

    def _predictions(self, x: dict) -> dict:
        """{name: prediction} for every target seen so far (pure; {} before any)."""
        if not self._targets:
            return {}
        _, z, dx = self._features.read(x)
        return {name: self._cores[name].predict(z, dx) for name in self._targets}

    def _learn(self, x: dict, ys: dict) -> None:
        """Learn the event x with its checked targets ``ys`` ({name: float or None})."""
        features = self._features
        new = features.new(x)  # checks x before anything changes
        if new:
            k = features.add(new, x)
            for core in self._cores.values():
                core.grow_features(k)
        cores = self._cores
        if not cores.keys() >= ys.keys():  # a target seen for the first time
            for name in sorted((n for n in ys if n not in cores), key=repr):
                self._targets.append(name)
                cores[name] = HybridRegressor(features.width, **self._network())
        raw, z, dx = features.read(x)
        for name, v in ys.items():
            if v is not None:
                self._cores[name].learn(z, dx, v)
        features.learn(x, raw)

    def advance_one(self, x) -> None:
        """An event whose target never comes: the features' scales learn from it."""
        k = self._features.add(self._features.new(x), x)
        for core in self._cores.values():
            core.grow_features(k)
        self._features.learn(x)

    def learn_many(self, X, y) -> None:
        targets = frame_rows(y) if hasattr(y, "columns") else list(y)
        for x, yi in zip(frame_rows(X), targets):
            self.learn_one(x, yi)

    def _diagnostics(self) -> dict:
        if not self._targets:
            return {}
        core = self._cores[self._targets[0]]
        out = {"steps": int(core.targets.count[0]), "weights": core.weights(), "targets": len(self._targets)}
        if core.corrector is not None:
            out["rnn"] = core.corrector.rnn.diagnostics()
        return out


class RNNRegressor(TargetModels, base.MiniBatchRegressor):
    __doc__ = f"""Regressor that learns online, on every event.

    Exact online components -- the previous target, the running mean, a
    linear model of the features and a linear model of the target's change
    from the features, their changes and the previous target, both fitted by
    recursive least squares -- are aggregated by ML-Poly (regret-bounded: no
    worse than the best of them in the long run).  A recurrent network,
    trained on every event by RTRL or BPTT, reads the features, the
    components' disagreement and its own previous error, and learns what the
    combination misses; a second ML-Poly uses its correction as far as it has
    helped.  So a slowly moving target is followed like persistence from the
    start, and independent events are fitted like a linear model, with no
    option to set.

    ``y`` may be a number or a dict of named numbers; with a dict, each target
    has its own models, ``predict_one`` returns a dict, and a target missing
    from an event is not learned from.  Before any target, ``predict_one``
    returns 0.0.  (``RNNMultiTargetRegressor`` learns the same way and is a
    river ``MultiTargetRegressor``: use it for dict targets with river's
    ``metrics.multioutput`` and checks.)  ``advance_one(x)`` is accepted for an event whose target never
    comes (the feature scales learn from it).

    {FEATURES_DOC}

    Parameters
    ----------
    {PARAMETERS_DOC}

    Examples
    --------
    >>> from river import datasets, evaluate, metrics
    >>> from streamrnn import RNNRegressor
    >>> model = RNNRegressor()
    >>> mae = evaluate.progressive_val_score(datasets.TrumpApproval(), model, metrics.MAE())
    >>> print(f"{{mae.get():.3f}}")
    0.181

    (The last value scores 0.195 on the same 1001 events, counting a first
    prediction of 0 as every river regressor makes.)  Whom it trusts:

    >>> sorted(model.diagnostics["weights"])
    ['last', 'linear', 'linear_change', 'mean', 'rnn']
    """

    # the parameters are RNNEstimator's, so is __init__ (river reads the signature from it)

    def _split(self, y) -> dict:
        """y as {name: float or None}; a plain number is the single target named None."""
        if isinstance(y, dict):
            return {k: target_value(k, v) for k, v in y.items()}
        return {None: target_value("y", y)}

    def predict_one(self, x):
        targets = self._targets
        if len(targets) == 1 and targets[0] is None:  # a single number: no dict in between
            _, z, dx = self._features.read(x)
            return self._cores[None].predict(z, dx)
        return self._predictions(x) or 0.0

    def learn_one(self, x, y):
        self._learn(x, self._split(y))  # checks y, then x, before anything changes

    def predict_many(self, X):
        import pandas as pd

        preds = [self.predict_one(x) for x in frame_rows(X)]
        if preds and isinstance(preds[0], dict):
            return pd.DataFrame(preds, index=X.index)
        return pd.Series(preds, index=X.index, dtype=float)
