"""The worker in-process: library equivalence, forecasts, LRU eviction, snapshots and digests."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.config import load
from service.server import build_worker
from service.store import MemoryStore

from .test_service_support import library_model, library_replies, supervised_events


def worker(**settings):
    config = load(environ={}, overrides={"checkpoint.enabled": "false", **settings})
    return build_worker(config, MemoryStore())


def handle(w, event) -> dict:
    line = json.dumps(event).encode()
    return json.loads(w.handle(line, len(line) + 1))


def test_supervised_equals_library_with_and_without_eviction():
    events = supervised_events(200, keys=("a", "b", "c", "d"))
    expected = library_replies(events)
    for max_keys in ("100", "1"):  # with one live key every event evicts one key and restores another
        w = worker(**{"streams.max_keys": max_keys})
        got = [handle(w, e) for e in events]
        assert [(r["key"], r["step"], r["prediction"], r.get("loss")) for r in got] == expected
    assert w.table.evictions > 190 and w.table.restores > 190
    status = handle(w, {"command": "status", "key": "a"})  # a stored key: read, not brought back
    assert status["step"] == 50 and "a" in w.table.stored


def test_forecasting_matches_the_standardised_residual_model():
    rng = np.random.default_rng(3)
    series = np.cumsum(rng.normal(size=120)) + 40
    w = worker(**{"forecast.horizon": "1"})
    replies = [handle(w, {"value": float(v)}) for v in series]
    model = library_model(1)
    n, mean, m2, last, forecasts, losses = 0, 0.0, 0.0, None, [], []
    for v in series:  # Welford, persistence plus a learned correction, as the module docstring says
        if last is not None:
            std = np.sqrt(m2 / n) if m2 > 0 else 1.0
            losses.append(model.step([np.clip((last - mean) / std, -5, 5)], [(v - last) / std]).loss)
        n += 1
        d = v - mean
        mean += d / n
        m2 += d * (v - mean)
        std = np.sqrt(m2 / n) if m2 > 0 else 1.0
        forecasts.append(v + std * model.predict([np.clip((v - mean) / std, -5, 5)])[0])
        last = v
    assert np.allclose([r["forecast"][0] for r in replies], forecasts, rtol=1e-12, atol=1e-12)
    assert np.allclose([r["loss"] for r in replies[1:]], losses, rtol=1e-12)


@pytest.mark.parametrize("feedback", ["false", "true"])
def test_multi_step_forecast_does_not_move_the_state(feedback):
    w1 = worker(**{"model.target_feedback": feedback})
    w3 = worker(**{"forecast.horizon": "3", "model.target_feedback": feedback})
    for v in np.sin(np.arange(60) / 4.0):
        r1, r3 = handle(w1, {"value": [float(v), 1.0]}), handle(w3, {"value": [float(v), 1.0]})
        assert r3["forecast"][0] == pytest.approx(r1["forecast"][0], rel=1e-12) and len(r3["forecast"]) == 3
    assert r3["forecast"][1] != r3["forecast"][2]  # each step fed the previous forecast back in
    assert w1.table.digest() == w3.table.digest()


def test_snapshot_restore_round_trip_and_digest():
    from service import streams

    w = worker()
    for e in supervised_events(50):
        handle(w, e)
    for v in range(20):
        handle(w, {"key": "f", "value": float(v % 7)})
    before = w.table.digest()
    for key, stream in list(w.table.live.items()):
        w.table.live[key] = streams.restore(w.table.template, *stream.snapshot())
    assert w.table.digest() == before
    assert handle(w, {"key": "f", "value": 3.0})["step"] == 21


@pytest.mark.parametrize("event, code", [
    ({"key": "a", "x": {"u": 1.0, "v": 2.0, "z": 1.0}}, "unknown_feature"),
    ({"key": "a", "x": {"u": 1.0}}, "missing_feature"),
    ({"key": "a", "x": {"u": 1.0, "v": 2.0}, "y": [1.0, 2.0]}, "wrong_width"),
    ({"key": "a", "value": 1.0}, "wrong_kind"),
])
def test_refused_events_change_nothing(event, code):
    w = worker()
    handle(w, {"key": "a", "x": {"u": 0.5, "v": 0.5}, "y": 1.0})
    before = w.table.digest()
    assert handle(w, event)["error"]["code"] == code
    assert w.table.digest() == before and w.events == 1


def test_configured_features_fix_the_order():
    w = worker(**{"model.features": "v,u"})
    r = handle(w, {"x": {"u": 1.0, "v": 2.0}, "y": 0.0})
    model = library_model(2)
    assert r["prediction"] == float(model.step([2.0, 1.0], [0.0]).prediction[0])


def test_invalid_target_for_the_loss():
    w = worker(**{"model.loss": "logloss", "model.readout": "sigmoid"})
    assert handle(w, {"x": {"a": 1.0}, "y": 2.0})["error"]["code"] == "invalid_value"
    assert w.events == 0 and len(w.table) == 0


def test_a_restored_checkpoint_counts_as_the_last_success(tmp_path):
    from service.store import DirectoryStore

    config = load(environ={}, overrides={"checkpoint.every_events": "0"})
    first = build_worker(config, DirectoryStore(tmp_path))
    for e in supervised_events(10):
        handle(first, e)
    assert first.checkpoint()
    written = first.stats.checkpoint_last_success
    again = build_worker(config, DirectoryStore(tmp_path))
    assert again.stats.checkpoint_last_success == 0.0  # nothing yet: never
    assert again.restore()
    assert again.stats.checkpoint_last_success == pytest.approx(written, abs=1.0)
