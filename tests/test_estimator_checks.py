"""river's own check suite (river.checks.check_estimator) on the five estimators, with no skips.

river's checks for a multi-target regressor stream scikit-learn's linnerud and
a one-hot encoded ``datasets.SolarFlare``; its inference-purity and cold-start
checks do nothing for one (tests/test_estimator_multioutput.py covers them).

river's anomaly-detection checks stream ``datasets.CreditCard``, which must be
downloaded; for the anomaly detector the same list of checks runs instead on
``datasets.Shuttle().take(1000 * scale)``, which ships with river, by
replacing ``river.checks._yield_datasets`` for anomaly detectors only.  Every
other estimator gets river's datasets unchanged.
"""

from __future__ import annotations

import pytest
import river.checks
from river import base, checks, datasets

from streamrnn import RTRL, RNNAnomalyDetector, RNNClassifier, RNNForecaster, RNNMultiTargetRegressor, RNNRegressor

_river_datasets = river.checks._yield_datasets


def _offline_datasets(model, scale=1):
    if isinstance(model, base.AnomalyDetector):
        yield datasets.Shuttle().take(1000 * scale)
        return
    yield from _river_datasets(model, scale)


ESTIMATORS = {
    "regressor": RNNRegressor(),
    "classifier": RNNClassifier(),
    "forecaster": RNNForecaster(),
    "anomaly": RNNAnomalyDetector(),
    "multi-target": RNNMultiTargetRegressor(),  # river's multi-output checks: linnerud and one-hot SolarFlare
    # the other code paths: RTRL, stacked leaky layers, given seasons and lags, multiplicative models
    "regressor-rtrl-stack": RNNRegressor(n_layers=2, beta=0.5, learner=RTRL()),
    "classifier-rtrl": RNNClassifier(learner=RTRL(), recurrent_gain=0.0),
    "forecaster-season-lags": RNNForecaster(season=(4, 12), lags=[1, 3], multiplicative=False),
    "anomaly-small": RNNAnomalyDetector(hidden_size=8, learner=RTRL()),
    "multi-target-rtrl-stack": RNNMultiTargetRegressor(hidden_size=4, n_layers=2, beta=0.5, learner=RTRL()),
}


@pytest.mark.parametrize("name", ESTIMATORS)
def test_river_check_estimator(name, monkeypatch):
    model = ESTIMATORS[name]
    assert model._unit_test_skips() == set()  # nothing is skipped
    monkeypatch.setattr(river.checks, "_yield_datasets", _offline_datasets)
    checks.check_estimator(model)
