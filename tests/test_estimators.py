"""The estimators' streaming contract, features, growth, and life inside river."""

from __future__ import annotations

import collections
import copy
import itertools
import math
import pickle

import numpy as np
import pandas as pd
import pytest
from river import compose, datasets, evaluate, metrics, preprocessing

from streamrnn import RNNAnomalyDetector, RNNClassifier, RNNForecaster, RNNRegressor

TRUMP = list(datasets.TrumpApproval())
PHISHING = list(datasets.Phishing().take(300))
SHUTTLE = [x for x, _ in datasets.Shuttle().take(300)]


def snapshot(model) -> bytes:
    return pickle.dumps(model)


# ----- the streaming contract ------------------------------------------------------


def count_forwards(model, monkeypatch):
    calls = []
    net = model.model.network
    forward = net.forward
    monkeypatch.setattr(net, "forward", lambda x: calls.append(1) or forward(x))
    return calls


def test_predict_one_is_pure_and_its_forward_pass_is_reused(monkeypatch):
    model = RNNRegressor(seed=1)
    for x, y in TRUMP[:20]:
        model.learn_one(x, y)
    x, y = TRUMP[20]
    before = snapshot(model)
    calls = count_forwards(model, monkeypatch)
    first = model.predict_one(dict(x))
    assert model.predict_one(dict(x)) == first
    assert snapshot(model) == before  # nothing advanced
    model.learn_one(dict(x), y)  # an equal event, not the same object
    assert len(calls) == 1  # one forward pass served both predictions and the learning step


def test_the_hidden_state_carries_across_calls():
    a, b = RNNRegressor(seed=1), RNNRegressor(seed=1)
    for x, y in TRUMP[:30]:
        a.learn_one(x, y)
        b.learn_one(x, y)
    a.advance_one(TRUMP[30][0])  # same weights, one more event in a's history
    assert a.model.counters["updates"] == b.model.counters["updates"]
    np.testing.assert_array_equal(a.model.network.theta, b.model.network.theta)
    assert a.predict_one(TRUMP[31][0]) != b.predict_one(TRUMP[31][0])
    assert a.diagnostics["steps"] == b.diagnostics["steps"] + 1


def test_classifier_advance_one_learns_nothing():
    model = RNNClassifier(seed=0)
    for x, y in PHISHING[:20]:
        model.learn_one(x, y)
    theta = model.model.network.theta.copy()
    model.advance_one(PHISHING[20][0])
    np.testing.assert_array_equal(model.model.network.theta, theta)
    assert model.diagnostics["steps"] == 21


@pytest.mark.parametrize("make, data", [
    (lambda: RNNRegressor(seed=3), TRUMP[:80]),
    (lambda: RNNClassifier(seed=3, differences=True), PHISHING[:80]),
], ids=["regressor", "classifier"])
def test_learn_many_equals_learn_one_in_order_and_predict_many_does_not_advance(make, data):
    one, many = make(), make()
    rows = [dict(x) for x, _ in data]
    for i in range(0, len(rows), 5):
        rows[i].pop(next(iter(rows[i])))  # a missing feature: NaN in the frame
    ys = [y for _, y in data]
    for x, y in zip(rows, ys):
        one.learn_one(x, y)
    for start in range(0, len(rows), 16):
        many.learn_many(pd.DataFrame(rows[start : start + 16]), pd.Series(ys[start : start + 16]))
    queries = pd.DataFrame(rows[:10])
    before = snapshot(many)
    if isinstance(one, RNNClassifier):
        got = many.predict_proba_many(queries)
        want = [one.predict_proba_one(x) for x in rows[:10]]
        for i, w in enumerate(want):
            assert {k: got.iloc[i][k] for k in got.columns} == w
    else:
        assert many.predict_many(queries).tolist() == [one.predict_one(x) for x in rows[:10]]
    assert snapshot(many) == before


def test_pickle_and_deepcopy_continue_exactly():
    model = RNNRegressor(seed=2, differences=True)
    for x, y in TRUMP[:50]:
        model.learn_one(x, y)
    for other in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        mine, theirs = copy.deepcopy(model), other
        for x, y in TRUMP[50:120]:
            assert theirs.predict_one(x) == mine.predict_one(x)
            theirs.learn_one(x, y)
            mine.learn_one(x, y)


def test_clone_is_a_fresh_estimator_with_the_same_parameters():
    model = RNNClassifier(hidden_size=8, seed=5)
    for x, y in PHISHING[:20]:
        model.learn_one(x, y)
    clone = model.clone()
    assert clone._get_params() == model._get_params()
    assert clone.model is None and clone.predict_proba_one(PHISHING[0][0]) == {}


def test_diagnostics_are_a_read_only_mapping():
    model = RNNRegressor(seed=0)
    assert dict(model.diagnostics) == {}
    for x, y in TRUMP[:5]:
        model.learn_one(x, y)
    diags = model.diagnostics
    assert diags["steps"] == 5 and "jacobian_norm" in diags and "grad_norm_clipped" in diags
    with pytest.raises(TypeError):
        diags["steps"] = 0


# ----- features ---------------------------------------------------------------------------


def test_features_take_positions_in_order_of_first_appearance_and_new_ones_start_at_zero():
    model = RNNRegressor(seed=0, standardize=False)
    model.learn_one({"b": 1.0, "a": 2.0}, 1.0)  # names new together: ordered by repr
    model.learn_one({"a": 1.0, "b": 0.5}, 2.0)
    W0 = model.model.params["W0"].copy()
    model.learn_one({"c": 3.0, "a": 1.0}, 3.0)  # c is new; b is missing and reads 0
    assert model._features.names == ["a", "b", "c"]
    assert model.model.params["W0"].shape == (16, 3)
    before = model.predict_one({"a": 1.0})
    assert model.predict_one({"a": 1.0, "d": 5.0}) == before  # unknown features are ignored
    assert model.predict_one({"a": 1.0, "b": 0.0}) == before  # missing reads 0
    assert W0.shape == (16, 2)


def test_a_grown_feature_starts_with_a_zero_column():
    model = RNNRegressor(seed=0)
    for x, y in TRUMP[:10]:
        model.learn_one({k: v for k, v in x.items() if k != "gallup"}, y)
    model.advance_one({**TRUMP[10][0]})  # gallup appears: grown, but nothing learned
    names = model._features.names
    np.testing.assert_array_equal(model.model.params["W0"][:, names.index("gallup")], 0.0)


@pytest.mark.parametrize("make", [RNNRegressor, RNNClassifier, RNNAnomalyDetector], ids=lambda c: c.__name__)
def test_a_non_numeric_value_raises_naming_the_feature(make):
    model = make()
    event = {"ok": 1.0, "when": "yesterday"}
    learn = (lambda x: model.learn_one(x)) if make is RNNAnomalyDetector else (lambda x: model.learn_one(x, 1))
    with pytest.raises(ValueError, match="'when'"):
        learn(event)
    learn({"ok": 1.0})
    before = snapshot(model)
    with pytest.raises(ValueError, match="'when'"):
        learn(event)
    assert snapshot(model) == before  # a bad event changes nothing
    predict = model.score_one if make is RNNAnomalyDetector else model.predict_one
    with pytest.raises(ValueError, match="'when'"):
        predict(event)


def test_forecaster_rejects_dates_until_they_are_turned_into_numbers():
    dataset = datasets.AirlinePassengers()
    x, y = next(iter(dataset))
    with pytest.raises(ValueError, match="'month'"):
        RNNForecaster().learn_one(y, x)
    month = compose.FuncTransformer(lambda x: {"month": float(x["month"].month)})
    model = month | RNNForecaster(seed=0)
    model.learn_one(x=x, y=y)


# ----- regressor ---------------------------------------------------------------------------


def test_several_targets_as_a_dict_and_a_target_appearing_midstream():
    model = RNNRegressor(seed=0)
    for i, (x, y) in enumerate(TRUMP[:40]):
        ys = {"approval": y, "date": x["ordinal_date"] / 1e5}
        if i >= 20:
            ys["gallup"] = x["gallup"]  # a third target from event 20
        if i % 9 == 4:
            del ys["date"]  # left out of this event's loss
        model.learn_one(x, ys if i != 30 else {})  # event 30 has no target at all
    pred = model.predict_one(TRUMP[40][0])
    assert sorted(pred) == ["approval", "date", "gallup"]
    assert all(isinstance(v, float) and math.isfinite(v) for v in pred.values())
    assert abs(pred["gallup"] - TRUMP[40][0]["gallup"]) < 5.0
    frame = model.predict_many(pd.DataFrame([x for x, _ in TRUMP[40:43]]))
    assert list(frame.columns) == ["approval", "date", "gallup"] and len(frame) == 3


# ----- classifier ----------------------------------------------------------------------------


def test_classes_appearing_midstream_grow_the_readout():
    model = RNNClassifier(seed=0)
    assert model.predict_proba_one({"a": 1.0}) == {}
    labels = itertools.cycle(["cat", "dog"])
    for i in range(60):
        label = next(labels) if i < 30 else ["cat", "dog", "eel"][i % 3]
        model.learn_one({"a": math.sin(i), "b": i % 3}, label)
    proba = model.predict_proba_one({"a": 0.5, "b": 1})
    assert list(proba) == ["cat", "dog", "eel"]
    assert all(type(p) is float for p in proba.values())
    assert math.isclose(sum(proba.values()), 1.0, rel_tol=1e-12)
    assert model.model.network.n_outputs == 3


# ----- forecaster -----------------------------------------------------------------------------


def test_forecast_rolls_a_copy_forward_and_leaves_the_live_state_alone():
    model = RNNForecaster(seed=0, lags=(1, 2), target_feedback=True, differences=True)
    for t in range(120):
        model.learn_one(10.0 + 3.0 * math.sin(t / 4.0), {"t": t % 7})
    before = snapshot(model)
    xs = collections.deque({"t": (120 + k) % 7} for k in range(6))
    forecast = model.forecast(6, xs=xs)
    assert isinstance(forecast, list) and len(forecast) == 6
    assert all(type(v) is float for v in forecast)
    assert snapshot(model) == before
    assert model.forecast(6, xs=list(xs)) == forecast
    assert len(set(forecast)) > 1  # each step feeds back the previous forecast
    assert model.forecast(3) == model.forecast(3)  # without xs the features are missing


# ----- anomaly detector ---------------------------------------------------------------------


def test_anomalous_events_are_more_surprising():
    model = RNNAnomalyDetector(seed=0)
    for x in SHUTTLE:
        model.learn_one(x)
    typical = np.median([model.score_one(x) for x in SHUTTLE[-50:]])
    odd = {k: v * 3 + 50 for k, v in SHUTTLE[-1].items()}
    assert model.score_one(odd) > 10 * typical
    before = snapshot(model)
    model.score_one(odd)
    assert snapshot(model) == before


# ----- inside river ---------------------------------------------------------------------------


@pytest.mark.parametrize("wrap", [
    lambda: preprocessing.StandardScaler() | RNNRegressor(seed=0),
    lambda: preprocessing.TargetStandardScaler(regressor=RNNRegressor(seed=0, residual=False)),
    lambda: compose.Pipeline(compose.Discard("ordinal_date"), preprocessing.StandardScaler(), RNNRegressor(seed=0)),
], ids=["scaler", "target-scaler", "pipeline"])
def test_regressor_in_pipelines_and_wrappers(wrap):
    model = wrap()
    mae = evaluate.progressive_val_score(TRUMP[:300], model, metrics.MAE())
    assert math.isfinite(mae.get()) and mae.get() < 2.0
    again = pickle.loads(pickle.dumps(model))
    x = TRUMP[300][0]
    assert again.predict_one(x) == model.predict_one(x)
    clone = model.clone()
    assert clone is not model and clone._get_params() == model._get_params()


def test_classifier_and_forecaster_in_pipelines():
    clf = preprocessing.StandardScaler() | RNNClassifier(seed=0)
    acc = evaluate.progressive_val_score(PHISHING, clf, metrics.Accuracy())
    assert acc.get() > 0.7
    month = compose.FuncTransformer(lambda x: {"month": float(x["month"].month)})
    fc = month | RNNForecaster(seed=0)
    mae = evaluate.evaluate(datasets.AirlinePassengers(), fc, metrics.MAE(), horizon=6)
    assert all(math.isfinite(m.get()) for m in mae.metrics)


# ----- memory -----------------------------------------------------------------------------------


def test_memory_is_bounded_on_ten_times_trump_approval():
    """Ten passes of TrumpApproval (10,010 events): nothing grows after the first.

    A model keeping anything per event would grow by kilobytes per pass; the
    tolerance only absorbs one-off interpreter caches (the first pickle) and
    counters gaining digits.
    """
    model = RNNRegressor(seed=0, differences=True)
    sizes = []
    for _ in range(10):
        for x, y in TRUMP:
            model.learn_one(x, y)
        sizes.append((model._raw_memory_usage, len(pickle.dumps(model))))
    memory0, pickled0 = sizes[0]
    for memory, pickled in sizes[1:]:
        assert memory - memory0 <= 2048 and pickled - pickled0 <= 64
