"""RNNMultiTargetRegressor: several named numeric targets, as a river ``MultiTargetRegressor``."""

from __future__ import annotations

from river import base

from .base import FEATURES_DOC, PARAMETERS_DOC
from .features import frame_rows
from .regressor import TargetModels, target_value


class RNNMultiTargetRegressor(TargetModels, base.MultiTargetRegressor):
    __doc__ = f"""Regressor of several named targets that learns online, on every event.

    Each target gets the model ``RNNRegressor`` fits to a single one (exact
    online components aggregated by ML-Poly, and a recurrent network that learns
    what they miss), all reading the same features.  Being a river
    ``MultiTargetRegressor``, it is accepted by ``metrics.multioutput``
    (``MicroAverage``, ``MacroAverage``, ``PerOutput``) and checked as one by
    ``river.checks``.

    ``learn_one(x, y)`` takes ``y`` as a dict of named numbers; anything else
    raises ValueError, and nothing changes.  A target name gets its model at
    its first appearance, so targets may appear mid-stream; a target missing
    from an event (or None or NaN there) is not learned from on that event,
    and the others are.  ``predict_one`` returns a dict with every target
    seen so far: empty until a first target arrives (river's ``progressive_val_score``
    does not score an empty prediction), 0.0 for a target named but not yet
    learned.  (river's multi-output metrics look up each target of ``y`` in the
    prediction, and raise ``KeyError`` at an event bringing a target the model
    has never seen: score such a stream per target.)  ``advance_one(x)`` is
    accepted for an event whose targets never come.

    {FEATURES_DOC}

    Parameters
    ----------
    {PARAMETERS_DOC}

    Examples
    --------
    river's SolarFlare counts the flares of three classes; its categorical
    features are one-hot encoded first:

    >>> from river import compose, datasets, evaluate, metrics, preprocessing
    >>> from streamrnn import RNNMultiTargetRegressor
    >>> model = (
    ...     (compose.SelectType(str) | preprocessing.OneHotEncoder()) + compose.SelectType(int)
    ... ) | RNNMultiTargetRegressor()
    >>> metric = metrics.multioutput.MicroAverage(metrics.MAE())
    >>> metric = evaluate.progressive_val_score(datasets.SolarFlare(), model, metric)
    >>> print(f"{{metric.get():.3f}}")
    0.157

    On the same events, each target's running mean scores 0.214 and
    river's ``multioutput.RegressorChain(linear_model.LinearRegression())``
    0.221.  (Most counts are 0: predicting 0 scores 0.118 in MAE, which
    rewards the median, but 0.545 in micro-averaged RMSE, where this model
    scores 0.504 and the running mean 0.518.)  A prediction names every target:

    >>> x, y = next(iter(datasets.SolarFlare()))
    >>> y
    {{'c-class-flares': 0, 'm-class-flares': 0, 'x-class-flares': 0}}
    >>> {{k: round(v, 3) for k, v in model.predict_one(x).items()}}
    {{'c-class-flares': 0.087, 'm-class-flares': 0.001, 'x-class-flares': -0.001}}
    """

    # the parameters are RNNEstimator's, so is __init__ (river reads the signature from it)

    @classmethod
    def _unit_test_params(cls):
        yield {}
        yield {"hidden_size": 4, "n_layers": 2, "beta": 0.5}

    def _split(self, y) -> dict:
        """y as {name: float or None}, checked before anything changes."""
        if not isinstance(y, dict):
            raise ValueError(f"y must be a dict of named numbers, got {type(y).__name__} {y!r}")
        return {k: target_value(k, v) for k, v in y.items()}

    def learn_one(self, x, y) -> None:
        self._learn(x, self._split(y))  # checks y, then x, before anything changes

    def predict_one(self, x) -> dict:
        return self._predictions(x)

    def predict_many(self, X):
        """A frame with a column per target seen so far (none before the first event)."""
        import pandas as pd

        return pd.DataFrame([self.predict_one(x) for x in frame_rows(X)], index=X.index, columns=self._targets)
