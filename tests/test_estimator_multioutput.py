"""RNNMultiTargetRegressor: river's multi-output metrics accept it, it learns, and targets may come and go."""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pandas as pd
import pytest
from river import compose, datasets, evaluate, metrics, preprocessing

from streamrnn import RNNMultiTargetRegressor, RNNRegressor


def signal_stream(n: int, seed: int = 0) -> list[tuple[dict, dict]]:
    """Three features; two targets that they explain (one linear, one not) up to small noise."""
    rng = np.random.default_rng(seed)
    events = []
    for _ in range(n):
        a, b, c = rng.normal(size=3)
        x = {"a": float(a), "b": float(b), "c": float(c)}
        y = {"lin": float(10 + 3 * a - 2 * b + 0.1 * rng.normal()),
             "curve": float(5 + 2 * np.tanh(c) + a + 0.1 * rng.normal())}
        events.append((x, y))
    return events


STREAM = signal_stream(600)


def one_hot():
    return (compose.SelectType(str) | preprocessing.OneHotEncoder()) + compose.SelectType(int)


def snapshot(model) -> bytes:
    return pickle.dumps(model)


# ----- river's multi-output metrics ------------------------------------------------------------


@pytest.mark.parametrize("average", [metrics.multioutput.MicroAverage, metrics.multioutput.MacroAverage,
                                     metrics.multioutput.PerOutput], ids=lambda c: c.__name__)
def test_rivers_multioutput_metrics_accept_it_alone_and_in_a_pipeline(average):
    metric = average(metrics.MAE())
    assert metric.works_with(RNNMultiTargetRegressor())
    assert not metric.works_with(RNNRegressor())  # the single-target regressor is a river Regressor
    alone = evaluate.progressive_val_score(STREAM[:200], RNNMultiTargetRegressor(seed=0), average(metrics.MAE()))
    piped = evaluate.progressive_val_score(datasets.SolarFlare().take(300), one_hot() | RNNMultiTargetRegressor(),
                                           average(metrics.MAE()))
    for result in (alone, piped):
        got = result.get()
        values = [m.get() for m in got.values()] if isinstance(got, dict) else [got]  # PerOutput: a metric each
        assert values and all(math.isfinite(v) for v in values)


def test_micro_and_macro_average_agree_when_every_event_has_every_target():
    micro = evaluate.progressive_val_score(STREAM[:200], RNNMultiTargetRegressor(seed=0),
                                           metrics.multioutput.MicroAverage(metrics.MAE()))
    macro = evaluate.progressive_val_score(STREAM[:200], RNNMultiTargetRegressor(seed=0),
                                           metrics.multioutput.MacroAverage(metrics.MAE()))
    assert micro.get() == pytest.approx(macro.get(), rel=1e-12)


# ----- what it predicts -------------------------------------------------------------------------


def test_a_fresh_model_predicts_an_empty_dict_and_a_named_target_predicts_zero():
    model = RNNMultiTargetRegressor()
    assert model.predict_one({"a": 1.0}) == {}
    assert list(model.predict_many(pd.DataFrame([{"a": 1.0}] * 2)).columns) == []
    assert dict(model.diagnostics) == {}
    model.learn_one({"a": 1.0}, {"later": None})  # named, not yet learned
    assert model.predict_one({"a": 1.0}) == {"later": 0.0}
    model.learn_one({"a": 2.0}, {"later": 3.0})
    pred = model.predict_one({"a": 2.0})
    assert list(pred) == ["later"] and type(pred["later"]) is float


def test_it_learns_each_target_from_the_features_far_better_than_the_running_mean():
    model = RNNMultiTargetRegressor(seed=0)
    errors, mean_errors = [], []
    sums, count = {"lin": 0.0, "curve": 0.0}, 0
    for x, y in STREAM:
        pred = model.predict_one(x)
        if count:
            errors.append([abs(pred[k] - y[k]) for k in y])
            mean_errors.append([abs(sums[k] / count - y[k]) for k in y])
        model.learn_one(x, y)
        for k in y:
            sums[k] += y[k]
        count += 1
    ours, mean = np.mean(errors[-300:], axis=0), np.mean(mean_errors[-300:], axis=0)
    # on the last 300 events: the running mean scores 3.3 (lin) and 1.3 (curve), this model 0.13 and 0.24
    # (the linear components take the linear target; the noise alone scores 0.08)
    assert ours[0] < 0.1 * mean[0] and ours[1] < 0.3 * mean[1], (ours, mean)
    assert model.diagnostics["targets"] == 2


def test_it_learns_exactly_what_rnnregressor_learns_from_dict_targets():
    multi, single = RNNMultiTargetRegressor(seed=4), RNNRegressor(seed=4)
    for x, y in STREAM[:80]:
        assert multi.predict_one(x) == (single.predict_one(x) if single._targets else {})
        multi.learn_one(x, y)
        single.learn_one(x, y)


# ----- targets that come and go, and bad targets --------------------------------------------------


def test_a_missing_target_is_not_learned_from_and_a_new_one_grows_the_model():
    model = RNNMultiTargetRegressor(seed=0)
    for x, y in STREAM[:30]:
        model.learn_one(x, y)
    counts = {k: int(core.targets.count[0]) for k, core in model._cores.items()}
    x, y = STREAM[30]
    model.learn_one(x, {"lin": y["lin"]})  # "curve" missing: the others still learn
    assert int(model._cores["lin"].targets.count[0]) == counts["lin"] + 1
    assert int(model._cores["curve"].targets.count[0]) == counts["curve"]
    assert sorted(model.predict_one(x)) == ["curve", "lin"]  # still predicted
    model.learn_one(x, {"lin": y["lin"], "curve": float("nan")})  # NaN counts as missing
    assert int(model._cores["curve"].targets.count[0]) == counts["curve"]
    for x, y in STREAM[31:60]:
        model.learn_one(x, {**y, "sum": y["lin"] + y["curve"]})  # a third target from here on
    pred = model.predict_one(STREAM[60][0])
    assert list(pred) == ["curve", "lin", "sum"]  # names new together are ordered by repr
    assert abs(pred["sum"] - sum(STREAM[60][1].values())) < 5.0


@pytest.mark.parametrize("bad, match", [
    (3.0, "y must be a dict"),
    ([1.0, 2.0], "y must be a dict"),
    ({"lin": "high"}, "target 'lin'"),
    ({"lin": 1.0, "curve": float("inf")}, "target 'curve'"),
])
def test_a_bad_target_raises_a_clear_error_and_changes_nothing(bad, match):
    model = RNNMultiTargetRegressor(seed=0)
    for x, y in STREAM[:10]:
        model.learn_one(x, y)
    before = snapshot(model)
    with pytest.raises(ValueError, match=match):
        model.learn_one(STREAM[10][0], bad)
    assert snapshot(model) == before


# ----- the streaming contract ---------------------------------------------------------------


def test_inference_is_pure_and_pickle_and_deepcopy_continue_exactly():
    model = RNNMultiTargetRegressor(seed=1)
    for x, y in STREAM[:60]:
        model.learn_one(x, y)
    before = snapshot(model)
    first = model.predict_one(STREAM[60][0])
    assert model.predict_one(STREAM[60][0]) == first and snapshot(model) == before

    def outputs(m):
        out = []
        for x, y in STREAM[60:100]:
            out.append(m.predict_one(x))
            m.learn_one(x, y)
        return out

    expected = outputs(copy.deepcopy(model))
    assert outputs(pickle.loads(pickle.dumps(model))) == expected
    clone = model.clone()
    assert clone._get_params() == model._get_params() and clone.predict_one(STREAM[0][0]) == {}


def test_learn_many_equals_learn_one_and_predict_many_does_not_advance():
    one, many = RNNMultiTargetRegressor(seed=3), RNNMultiTargetRegressor(seed=3)
    xs = [dict(x) for x, _ in STREAM[:64]]
    ys = [dict(y) for _, y in STREAM[:64]]
    for i in range(0, 64, 7):
        del ys[i]["curve"]  # a missing target: NaN in the frame
    for x, y in zip(xs, ys):
        one.learn_one(x, y)
    for start in range(0, 64, 16):
        many.learn_many(pd.DataFrame(xs[start : start + 16]), pd.DataFrame(ys[start : start + 16]))
    before = snapshot(many)
    frame = many.predict_many(pd.DataFrame(xs[:5]))
    assert list(frame.columns) == ["lin", "curve"]  # the first event had no "curve"
    assert frame.to_dict(orient="records") == [one.predict_one(x) for x in xs[:5]]
    assert snapshot(many) == before
