"""The worker in-process: library equivalence, forecasts, LRU eviction, snapshots and digests."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.config import load
from service.server import build_worker
from service.store import MemoryStore

from .test_service_support import library_forecaster, library_replies, supervised_events


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


def test_forecasting_keys_give_the_library_forecasts():
    rng = np.random.default_rng(3)
    series = np.cumsum(rng.normal(size=150)) + 40 + 5 * np.sin(np.arange(150) * 2 * np.pi / 12)
    w = worker(**{"forecast.horizon": "3"})
    replies = [handle(w, {"value": float(v)}) for v in series]
    model = library_forecaster(horizon=3)
    forecasts, losses = [], []
    for v in series:
        if forecasts:
            losses.append(abs(forecasts[-1][0] - v))
        model.learn(v)
        forecasts.append(model.forecast(3).tolist())
    assert [r["forecast"] for r in replies] == forecasts  # bit for bit
    assert [r["loss"] for r in replies[1:]] == losses


def test_a_forecast_does_not_move_the_state():
    w = worker(**{"forecast.horizon": "3"})
    for v in np.sin(np.arange(60) / 4.0):
        r = handle(w, {"value": [float(v), 1.0]})
    stream = w.table.live["default"]
    before = w.table.digest()
    assert stream.forecast() == r["forecast"] and stream.forecast() == r["forecast"]
    assert w.table.digest() == before
    assert [len(step) for step in r["forecast"]] == [2, 2, 2]


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
    configured, alphabetical = worker(**{"model.features": "v,u"}), worker()
    rng = np.random.default_rng(0)
    for _ in range(20):  # the configured order v, u is what sorted names b, a would give
        u, v, y = rng.normal(size=3)
        r1 = handle(configured, {"x": {"u": u, "v": v}, "y": y})
        r2 = handle(alphabetical, {"x": {"a": v, "b": u}, "y": y})
        assert r1["prediction"] == r2["prediction"]


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


def test_a_key_hit_by_a_huge_value_forecasts_finite_values_again_after_a_restart(tmp_path):
    """One value of 1e308 used to make a forecasting key answer null for good (the running variance
    overflowed), even after a restart.  Now it is bounded before anything learns from it."""
    from service.store import DirectoryStore

    config = load(environ={}, overrides={"checkpoint.every_events": "0", "forecast.horizon": "3"})
    first = build_worker(config, DirectoryStore(tmp_path))
    for i in range(20):
        handle(first, {"key": "t", "value": 10.0 + np.sin(i)})
    hit = handle(first, {"key": "t", "value": 1e308})
    assert hit["step"] == 21 and all(np.isfinite(hit["forecast"]))
    assert first.checkpoint()
    again = build_worker(config, DirectoryStore(tmp_path))
    assert again.restore()
    replies = [handle(again, {"key": "t", "value": 10.0 + np.sin(i)}) for i in range(21, 80)]
    assert all(r["forecast"] is not None and all(np.isfinite(r["forecast"])) for r in replies)
    assert abs(replies[-1]["forecast"][0] - (10.0 + np.sin(80))) < 1.5
    assert again.table.totals()["bounded"] == 1


def test_supervised_keys_can_be_the_bare_network():
    import streamrnn as sr

    w = worker(**{"model.hybrid": "false"})
    model = sr.OnlineRNN(2, (sr.Elman(16, "tanh"),), sr.Readout(1), sr.SquaredError(), sr.RTRL(), sr.Adam(1e-3),
                         clip_norm=1.0, seed=0)
    for e in supervised_events(40, keys=("a",)):
        r = handle(w, e)
        expected = model.step([e["x"]["u"], e["x"]["v"]], [e["y"]] if "y" in e else None)
        assert r["prediction"] == float(expected.prediction[0]) and r.get("loss") == expected.loss


def test_a_corrupt_stored_key_is_quarantined_and_answered_one_way_everywhere(tmp_path):
    """Truncate a stored key's file: digest, status and the key's next event all say corrupt_state
    (none says internal, none starts the key over silently); the file is kept aside."""
    from service.store import DirectoryStore

    config = load(environ={}, overrides={"checkpoint.every_events": "0", "streams.max_keys": "1"})
    for ask in ("event", "status", "digest"):
        store = DirectoryStore(tmp_path / ask)
        w = build_worker(config, store)
        for i in range(5):
            handle(w, {"key": "a", "value": float(i)})
        handle(w, {"key": "b", "value": 1.0})  # evicts a to keys/
        (ref,) = w.table.stored.values()
        path = store.keys / ref
        path.write_bytes(path.read_bytes()[:200])
        before = w.events
        if ask == "digest":  # the digest kept at eviction answers without reading the store ...
            assert handle(w, {"command": "digest"})["keys"] == 2 and path.exists()
            w.table.digests.clear()  # ... so read it, as for a checkpoint written before digests were kept
        request = {"event": {"key": "a", "value": 9.0}, "status": {"command": "status", "key": "a"},
                   "digest": {"command": "digest"}}[ask]
        reply = handle(w, request)
        if ask == "digest":
            assert "digest" in reply and reply["keys"] == 1  # the corrupt key is left out, not an internal error
        else:
            assert reply["error"]["code"] == "corrupt_state", reply
        assert w.events == before and w.table.corrupt_keys == 1
        assert not path.exists() and (store.keys / "quarantine" / ref).exists()
        again = handle(w, {"key": "a", "value": 9.0})  # told once: the next event starts the key afresh
        assert again["step"] == 1
