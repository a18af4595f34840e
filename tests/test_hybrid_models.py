"""The hybrid forecaster and regressor: exact state round trips, bad values, the network's share."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import streamrnn as sr
from streamrnn.hybrid import HybridForecaster
from streamrnn.hybrid.regressor import HybridRegressor
from streamrnn.state import StateError

from .frozen import frozen_when_asked  # noqa: F401  (STREAMRNN_TEST_FREEZE=1: every "learning" test must fail)


def series(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 100 + 0.2 * t + 10 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 1, n)


def forecaster(**kw) -> HybridForecaster:
    kw.setdefault("layers", (sr.Elman(8),))
    return HybridForecaster(**kw)


@pytest.mark.parametrize("learner", [sr.TruncatedBPTT(5, 1), sr.RTRL()], ids=["bptt", "rtrl"])
def test_state_round_trip_continues_bit_for_bit(learner):
    y = series(300)
    a = forecaster(periods=12, horizon=4, learner=learner)
    for v in y[:150]:
        a.learn(v)
    arrays, header = a.state_dict()
    b = forecaster(periods=12, horizon=1, learner=learner)  # built for one step: the state says four
    b.load_state_dict(arrays, header)
    for v in y[150:]:
        assert b.forecast(4).tolist() == a.forecast(4).tolist()
        a.learn(v)
        b.learn(v)


def test_state_round_trip_with_detected_periods_and_features():
    y = series(260)
    a = forecaster(horizon=2, n_features=2)
    feats = np.stack([np.sin(np.arange(260)), np.cos(np.arange(260))], axis=1)
    for v, f in zip(y[:220], feats):
        a.learn(v, f)
    assert a.periods == (12,)
    b = forecaster(horizon=2, n_features=2)
    b.load_state_dict(*a.state_dict())
    for v, f in zip(y[220:], feats[220:]):
        a.learn(v, f)
        b.learn(v, f)
    assert b.forecast(2).tolist() == a.forecast(2).tolist()


def test_loading_a_state_for_another_configuration_changes_nothing():
    a = forecaster(periods=12)
    for v in series(40):
        a.learn(v)
    other = forecaster(periods=12, layers=(sr.Elman(4),))
    before = other.forecast(1).tolist()
    with pytest.raises(StateError):
        other.load_state_dict(*a.state_dict())
    arrays, header = a.state_dict()
    arrays["c0.rls.w"] = np.zeros((1, 1)) if "c0.rls.w" in arrays else arrays["history.buffer"][:3]
    arrays["history.buffer"] = arrays["history.buffer"][:-1]  # truncated
    with pytest.raises(StateError):
        forecaster(periods=12).load_state_dict(arrays, header)
    assert other.forecast(1).tolist() == before


def test_a_regressor_state_with_a_bad_network_part_is_refused_and_changes_nothing():
    """The corrector's network is checked with the rest of the state before anything is written: a wrong
    network array or header leaves every part, network included, as it was."""
    rng = np.random.default_rng(1)
    data = [(rng.normal(size=3), rng.normal(size=3)) for _ in range(60)]
    a, b = HybridRegressor(3, layers=(sr.Elman(8),)), HybridRegressor(3, layers=(sr.Elman(8),), seed=5)
    for z, dx in data[:40]:
        a.learn(z, dx, float(z.sum()))
        b.learn(z, dx, float(z[0]))
    good, before = a.state(), b.state()
    header = json.loads(good["corrector.rnn.__header__"].tobytes())
    counters = good["corrector.rnn.learner.counters"]
    bad_states = [
        {**good, "corrector.rnn.U0": good["corrector.rnn.U0"][:, :-1]},  # a network array of the wrong shape
        {**good, "corrector.rnn.U0": np.full(good["corrector.rnn.U0"].shape, "x")},  # of the right shape, no numbers
        {**good, "corrector.rnn.optimizer.count": np.array("many")},
        {**good, "corrector.rnn.learner.counters": np.full(counters.shape, 1e30)},  # no counter of a window
        {**good, "corrector.rnn.__header__": np.frombuffer(  # a network header without its counters
            json.dumps({k: v for k, v in header.items() if k != "counters"}).encode(), dtype=np.uint8)},
        {**good, "corrector.rnn.__header__": np.frombuffer(
            json.dumps(dict(header, rng={"bit_generator": "PCG64"})).encode(), dtype=np.uint8)},
    ]
    for bad in bad_states:
        with pytest.raises(StateError):
            b.load(bad)
        after = b.state()
        assert after.keys() == before.keys()
        assert all(np.array_equal(after[k], before[k]) for k in before)
    b.load(good)  # and the good state still loads, and continues as the original
    for z, dx in data[40:]:
        assert b.predict(z, dx) == a.predict(z, dx)
        a.learn(z, dx, 1.0)
        b.learn(z, dx, 1.0)


def test_bad_values_raise_and_change_nothing():
    f = forecaster(periods=12, multiplicative=True, n_features=1)
    for v in series(30):
        f.learn(v, [0.5])
    arrays, _ = f.state_dict()
    for bad, features, message in ((float("nan"), [0.0], "finite"), (-1.0, [0.0], "> 0"),
                                   (1.0, [float("inf")], "features"), (1.0, [1.0, 2.0], "features"),
                                   ("x", [0.0], "number")):
        with pytest.raises(ValueError, match=message):
            f.learn(bad, features)
    after, _ = f.state_dict()
    assert all(np.array_equal(arrays[k], after[k]) for k in arrays)


@pytest.mark.learning
@pytest.mark.parametrize("huge", [1e200, 1e308, -1e308])
def test_a_huge_value_is_bounded_and_forecasts_recover(huge):
    y = series(400)
    f = forecaster(periods=12, horizon=12)
    for v in y[:200]:
        f.learn(v)
    f.learn(huge)
    assert f.bounded == 1
    arrays, _ = f.state_dict()
    assert all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f")  # nothing infinite stored
    for v in y[201:]:
        assert np.isfinite(f.forecast(12)).all()
        f.learn(v)
    truth = series(412)[400:]
    naive = np.mean(np.abs(y[388:400] - truth))  # the seasonal naive on the same values: 2.45
    assert np.mean(np.abs(f.forecast(12) - truth)) < 0.6 * naive  # 0.93


def test_a_value_that_leaves_the_range_slowly_is_followed_not_bounded():
    f = forecaster(periods=None, layers=None)
    for t in range(300):
        f.learn(10.0 * 1.03 ** t)  # exponential growth: each value a little beyond the range
    assert f.bounded == 0 and f.forecast(1)[0] > 10.0 * 1.03 ** 299


def test_forecasts_are_bounded_and_pure():
    f = forecaster(periods=12, horizon=3)
    for v in series(100):
        f.learn(v)
    arrays, _ = f.state_dict()
    assert f.forecast(500).shape == (500,) and np.isfinite(f.forecast(500)).all()  # beyond any season
    f.forecast(3, future=None)
    after, _ = f.state_dict()
    assert all(np.array_equal(arrays[k], after[k]) for k in arrays)


@pytest.mark.learning
def test_the_network_learns_a_correction_the_components_cannot_make():
    """Every 7th value jumps by +5, with no season given: the components cannot foresee it,
    the network can (its errors repeat every 7 steps), and the second aggregation lets it."""
    t = np.arange(3000)
    y = 50 + np.where(t % 7 == 6, 5.0, 0.0) + np.random.default_rng(0).normal(0, 0.3, len(t))
    plain, full = HybridForecaster(periods=(), layers=None), HybridForecaster(periods=(), layers=(sr.Elman(16),))
    errors = {id(plain): [], id(full): []}
    for i, v in enumerate(y):
        for m in (plain, full):
            if i > 2000:
                errors[id(m)].append(abs(m.forecast(1)[0] - v))
            m.learn(v)
    assert np.mean(errors[id(full)]) < 0.8 * np.mean(errors[id(plain)])
    assert full.weights(0)["rnn"] > 0.5


def test_regressor_state_round_trip_and_bounded_targets():
    rng = np.random.default_rng(0)
    a = HybridRegressor(3, layers=(sr.Elman(8),))
    data = [(rng.normal(size=3), rng.normal(size=3)) for _ in range(200)]
    for z, dx in data[:100]:
        a.learn(z, dx, float(z @ [1.0, -2.0, 0.5]))
    a.learn(data[0][0], data[0][1], 1e300)
    assert a.bounded == 1 and math.isfinite(a.predict(*data[1]))
    b = HybridRegressor(3, layers=(sr.Elman(8),))
    b.load(a.state())
    for z, dx in data[100:]:
        assert b.predict(z, dx) == a.predict(z, dx)
        target = float(z @ [1.0, -2.0, 0.5])
        a.learn(z, dx, target)
        b.learn(z, dx, target)
