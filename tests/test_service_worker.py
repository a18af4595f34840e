"""The worker in-process: library equivalence, forecasts, LRU eviction, snapshots and digests."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from streamrnn_service.config import load
from streamrnn_service.server import build_worker
from streamrnn_service.store import MemoryStore

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
    from streamrnn_service import streams

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


def test_a_key_hit_by_a_huge_value_forecasts_finite_values_again_after_a_restart(tmp_path):
    """One value of 1e308 used to make a forecasting key answer null for good (the running variance
    overflowed), even after a restart.  Now it is bounded before anything learns from it."""
    from streamrnn_service.store import DirectoryStore

    config = load(environ={}, overrides={"checkpoint.every_events": "0", "forecast.horizon": "3"})
    first = build_worker(config, DirectoryStore(tmp_path))
    for i in range(20):
        handle(first, {"key": "t", "value": 10.0 + np.sin(i)})
    hit = handle(first, {"key": "t", "value": 1e308})
    assert hit["step"] == 21 and all(np.isfinite(hit["forecast"]))
    assert first.checkpointer.checkpoint()
    again = build_worker(config, DirectoryStore(tmp_path))
    assert again.checkpointer.restore()
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
    from streamrnn_service.store import DirectoryStore

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


# ----- every error after parsing changes nothing -----------------------------------------------------

SMALL = {"u": 0.5, "v": -1.0}
WIDE = {f"f{i}": float(i) for i in range(12)}


def _unreadable(exc):
    def get_stream(ref):
        raise exc

    return get_stream


# code: (settings, the events before, the bad event, what breaks the store for it, the keys watched)
ERROR_CASES = {
    "invalid_value": ({"model.loss": "logloss", "model.readout": "sigmoid"},
                      [{"key": "a", "x": SMALL, "y": 1.0}, {"key": "a", "x": SMALL, "y": 0.0}],
                      {"key": "a", "x": SMALL, "y": 2.0}, None),
    "invalid_value-forecast": ({"forecast.multiplicative": "true"},
                               [{"key": "a", "value": 3.0}, {"key": "a", "value": 4.0}],
                               {"key": "a", "value": -1.0}, None),
    "wrong_width": ({}, [{"key": "a", "x": SMALL, "y": 1.0}], {"key": "a", "x": SMALL, "y": [1.0, 2.0]}, None),
    "wrong_width-forecast": ({}, [{"key": "a", "value": 1.0}], {"key": "a", "value": [1.0, 2.0]}, None),
    "unknown_feature": ({}, [{"key": "a", "x": SMALL, "y": 1.0}], {"key": "a", "x": {**SMALL, "w": 1.0}}, None),
    "missing_feature": ({}, [{"key": "a", "x": SMALL, "y": 1.0}], {"key": "a", "x": {"u": 1.0}}, None),
    "missing_feature-new-key": ({}, [{"key": "a", "x": SMALL, "y": 1.0}], {"key": "new", "x": {}}, None),
    "wrong_kind": ({}, [{"key": "a", "x": SMALL, "y": 1.0}], {"key": "a", "value": 1.0}, None),
    "unavailable": ({"streams.max_keys": "1"}, [{"key": "a", "value": 1.0}, {"key": "b", "value": 2.0}],
                    {"key": "a", "value": 3.0}, OSError("disk out of reach")),
    "too_large": ({"streams.max_key_bytes": "SIZE"}, [{"key": "a", "x": SMALL, "y": 1.0}],
                  {"key": "new", "x": WIDE, "y": 1.0}, None),
    "too_many_keys": ({"streams.max_keys": "1", "streams.max_stored_keys": "1"},
                      [{"key": "a", "value": 1.0}, {"key": "b", "value": 2.0}], {"key": "new", "value": 1.0}, None),
    "corrupt_state": ({"streams.max_keys": "1"}, [{"key": "a", "value": 1.0}, {"key": "b", "value": 2.0}],
                      {"key": "a", "value": 3.0}, "corrupt"),
}


def _observe(w) -> dict:
    """Everything an applied event would move: steps, digest, the worker's, table's and models' counters."""
    table = w.table
    steps = {key: handle(w, {"command": "status", "key": key})["step"] for key in ("a", "b", "new")}
    return {
        "steps": steps,
        "digest": handle(w, {"command": "digest"})["digest"],
        "events": w.events,
        "outcomes": {k: v for k, v in w.stats.outcomes.items() if k != "rejected"},
        "losses": (w.stats.loss_count, w.stats.loss_sum, w.stats.last_loss),
        "totals": table.totals(),
        "table": {name: getattr(table, name) for name in ("evictions", "restores", "restore_failures",
                                                          "eviction_failures", "corrupt_keys", "expired_keys")},
        "keys": (sorted(table.live), sorted(table.stored), len(table)),
        "models": {key: stream.counters for key, stream in table.live.items()},
    }


def _error_case_worker(case):
    settings, before, _, _ = ERROR_CASES[case]
    settings = dict(settings)
    if settings.get("streams.max_key_bytes") == "SIZE":  # room for the small key's state, not the wide one's
        probe = worker()
        handle(probe, before[0])
        settings["streams.max_key_bytes"] = str(sum(a.nbytes for a in probe.table.live["a"].snapshot()[0].values()))
    w = worker(**settings)
    for event in before:
        assert "step" in handle(w, event)
    return w


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_every_error_after_parsing_changes_no_step_digest_or_counter(case):
    """For each error a parsed event can get, the key's step, the digest and every counter stay as
    they were (only the rejection is counted).  corrupt_state is the one error that changes the
    table, as it says: the unreadable key is set aside and forgotten, and nothing else moves."""
    from streamrnn.state import StateError

    code = case.split("-")[0]
    _, _, bad, breaks = ERROR_CASES[case]
    w = _error_case_worker(case)
    before = _observe(w)
    rejected = dict(w.stats.rejected)
    read = w.table.store.get_stream
    if breaks is not None:
        w.table.store.get_stream = _unreadable(StateError("truncated") if breaks == "corrupt" else breaks)
    reply = handle(w, bad)
    w.table.store.get_stream = read
    assert reply["error"]["code"] == code, reply
    assert w.stats.rejected == {**rejected, code: rejected[code] + 1}
    after = _observe(w)
    if code == "corrupt_state":  # the key is forgotten: its step is 0 and it is out of the digest
        twin = _error_case_worker(case)
        del twin.table.stored["a"]
        twin.table.digests.pop("a")
        assert after["digest"] == _observe(twin)["digest"] != before["digest"]
        assert after["steps"] == {**before["steps"], "a": 0}
        assert after["table"] == {**before["table"], "corrupt_keys": 1, "restore_failures": 1}
        before["keys"] = (before["keys"][0], [], 1)
        for name in ("digest", "steps", "table"):
            del before[name], after[name]
    assert after == before


def test_events_refused_on_a_stored_key_leave_its_state_and_step_alone():
    """A refused event for a key checkpointed out brings it back into memory (a read, counted as a
    restore) but changes neither its state nor anyone's step."""
    w = worker(**{"streams.max_keys": "1"})
    handle(w, {"key": "a", "x": SMALL, "y": 1.0})
    handle(w, {"key": "b", "value": 1.0})
    digest, events, totals = handle(w, {"command": "digest"})["digest"], w.events, w.table.totals()
    for bad, code in (({"key": "a", "value": 1.0}, "wrong_kind"), ({"key": "a", "x": {"u": 1.0}}, "missing_feature"),
                      ({"key": "b", "value": [1.0, 2.0]}, "wrong_width")):
        assert handle(w, bad)["error"]["code"] == code
        assert handle(w, {"command": "digest"})["digest"] == digest and w.events == events
        assert [handle(w, {"command": "status", "key": k})["step"] for k in "ab"] == [1, 1]
        assert w.table.totals() == totals


def test_eviction_takes_the_least_recently_used_key_not_the_first_added():
    w = worker(**{"streams.max_keys": "3"})
    for key in "abc":
        handle(w, {"key": key, "value": 1.0})
    handle(w, {"key": "a", "value": 2.0})  # a, the oldest key, was used last: b is now the least recent
    handle(w, {"key": "d", "value": 1.0})
    assert list(w.table.stored) == ["b"] and list(w.table.live) == ["c", "a", "d"]
    handle(w, {"key": "c", "value": 2.0})  # a live key used again moves to the back ...
    handle(w, {"key": "b", "value": 2.0})  # ... so bringing b back evicts a, not c
    assert list(w.table.stored) == ["a"] and list(w.table.live) == ["d", "c", "b"]
    assert w.table.evictions == 2 and w.table.restores == 1
    assert [handle(w, {"command": "status", "key": k})["step"] for k in "abcd"] == [2, 2, 2, 1]


# ----- lines, positions, commands and checkpoints, in-process -------------------------------------


def test_positions_count_events_and_unreadable_lines_but_not_commands():
    from streamrnn_service.checkpointer import Position

    w = worker()
    p = Position()
    assert p.as_dict() == {"lines": 0, "bytes": 0}

    def send(text, size=None):
        line = None if text is None else text.encode()
        return json.loads(w.handle(line, size if size is not None else len(line) + 1, p))

    assert "step" in send('{"key": "a", "value": 1.0}')  # 27 bytes with its newline
    assert p.as_dict() == {"lines": 1, "bytes": 27}
    send('{"command": "status"}')  # a question, not part of the stream
    assert p.as_dict() == {"lines": 1, "bytes": 27}
    assert send('{"key": "a", "value": [1.0, 2.0]}')["error"]["code"] == "wrong_width"  # parsed: it was read
    assert p.as_dict() == {"lines": 2, "bytes": 61}
    assert send("{not json")["error"]["code"] == "malformed_json"
    assert p.as_dict() == {"lines": 3, "bytes": 71}
    too_long = send(None, size=5000)
    assert too_long == {"error": {"code": "too_long", "message": "line of 5000 bytes is over the length limit"},
                        "id": None}
    assert p.as_dict() == {"lines": 4, "bytes": 5071}
    assert w.stats.rejected["too_long"] == 1 and w.stats.rejected["malformed_json"] == 1
    w.unanswerable("truncated", "a connection closed mid-line", 9, p)
    assert p.as_dict() == {"lines": 4, "bytes": 5080} and w.stats.rejected["truncated"] == 1
    w.unanswerable("truncated", "again, from nowhere resumable")  # no position: nothing moves
    assert p.as_dict() == {"lines": 4, "bytes": 5080} and w.stats.rejected["truncated"] == 2


@pytest.mark.parametrize("settings", [{}, {"model.learner": "bptt"}, {"model.outputs": "2"}, {"model.hybrid": "false"}])
def test_a_lines_reply_is_the_encoded_reply_dict_whichever_way_it_is_written(settings):
    """A line's reply (the text written at once for a supervised key with one output, ``_taken``'s) is byte for
    byte ``encode`` of the dict ``respond`` gives (as the replay tool reads it), with the same counts, for
    targets as a number, a list of one, none, and on models whose replies are dicts."""
    from streamrnn_service.protocol import parse
    from streamrnn_service.worker import encode

    outputs = int(settings.get("model.outputs", "1"))
    text, dicts = worker(**settings), worker(**settings)
    rng = np.random.default_rng(3)
    for t in range(40):
        x = {"a": float(rng.normal()), "b": float(rng.normal())}
        y = [float(v) for v in rng.normal(size=outputs)]
        event = {"key": "k" if t % 3 else "other", "x": x, "id": t}
        if t % 5 != 4:
            event["y"] = y if outputs > 1 or t % 2 else y[0]
        line = json.dumps(event).encode()
        assert text.handle(line, len(line) + 1) == (encode(dicts.respond(parse(line))) + "\n").encode()
        dicts.checkpointer.after_event()
    counted = ("outcomes", "loss_sum", "loss_count", "last_loss", "last_prediction", "last_target")
    assert repr([getattr(text.stats, a) for a in counted]) == repr([getattr(dicts.stats, a) for a in counted])
    assert text.table.digest() == dicts.table.digest() and text.events == dicts.events


def test_an_internal_error_is_answered_counted_and_logged_and_the_line_still_counts(caplog, monkeypatch):
    from streamrnn_service.checkpointer import Position

    w = worker()
    p = Position()

    def broken(event, *_):
        raise KeyError("a bug")

    monkeypatch.setattr(w, "_respond", broken)
    line = b'{"key": "a", "value": 1.0, "id": "e7"}'
    with caplog.at_level("ERROR", logger="streamrnn.worker"):
        reply = json.loads(w.handle(line, len(line) + 1, p))
    assert reply == {"error": {"code": "internal", "message": "internal error: KeyError"}, "id": "e7"}
    assert p.as_dict() == {"lines": 1, "bytes": len(line) + 1}  # parsed: counted as read once
    assert w.stats.rejected["internal"] == 1
    assert [r.getMessage() for r in caplog.records] == ["internal error on a line"]


def test_errors_carry_the_events_id_whether_or_not_it_parsed():
    w = worker()
    handle(w, {"key": "a", "value": 1.0})
    assert handle(w, {"key": "a", "value": [1.0, 2.0], "id": "late"})["id"] == "late"  # refused after parsing
    assert handle(w, {"key": "a", "value": "x", "id": "early"})["id"] == "early"  # refused by the parser
    assert handle(w, {"key": "a", "value": "x"})["id"] is None


def test_unanswerable_lines_are_logged(caplog):
    w = worker()
    with caplog.at_level("WARNING", logger="streamrnn.worker"):
        w.unanswerable("truncated", "the connection closed after 3 bytes of a line")
    assert [r.getMessage() for r in caplog.records] == ["the connection closed after 3 bytes of a line"]


def test_command_replies():
    w = worker(**{"streams.max_keys": "1"})
    assert handle(w, {"command": "auth", "token": "t", "id": 1}) == {"id": 1, "authenticated": True}
    for key in ("a", "b"):
        handle(w, {"key": key, "value": 1.0})
    handle(w, {"key": "b", "value": 2.0})
    digest = handle(w, {"command": "digest", "id": 2})
    assert digest == {"id": 2, "digest": w.table.digest(), "keys": 2, "events": 3}
    w.checkpointer.position("stdin").lines = 5
    assert handle(w, {"command": "status", "id": 3}) == {
        "id": 3, "events": 3, "live_keys": 1, "keys": 2, "generation": 0,
        "positions": {"stdin": {"lines": 5, "bytes": 0}}}
    live, stored, new = (handle(w, {"command": "status", "key": k}) for k in ("b", "a", "c"))
    assert (live["key"], live["step"]) == ("b", 2)
    assert (stored["key"], stored["step"]) == ("a", 1)
    assert (new["key"], new["step"]) == ("c", 0)


def test_worker_defaults_stream_key_and_no_checkpoints():
    from streamrnn_service.checkpointer import Checkpointer
    from streamrnn_service.stats import Stats
    from streamrnn_service.worker import Worker

    table, stats = worker().table, Stats()
    w = Worker(table, stats, Checkpointer(table, stats))
    reply = handle(w, {"value": 1.0})
    assert reply["key"] == "default" and list(table.live) == ["default"]
    for i in range(5):
        handle(w, {"value": float(i)})
    assert w.checkpointer.generation == 0 and w.checkpointer.every_events == 0 and w.events == 6


def test_replies_encode_non_finite_numbers_as_null_everywhere():
    from streamrnn_service.worker import encode

    assert encode({"a": 1.5, "b": [1.0, 2.0], "c": {"d": -0.0}}) == '{"a":1.5,"b":[1.0,2.0],"c":{"d":-0.0}}'
    reply = {"a": [1.0, float("nan")], "b": {"c": float("inf"), "d": 2.5}, "e": "x", "f": 3, "g": 0.1}
    assert encode(reply) == '{"a":[1.0,null],"b":{"c":null,"d":2.5},"e":"x","f":3,"g":0.1}'
    with pytest.raises(TypeError, match="^object is not JSON serialisable$"):
        encode({"a": object()})


def test_the_worker_keeps_the_stats_the_metrics_publish():
    w = worker(**{"model.hybrid": "false"})
    stats = w.stats
    assert handle(w, {"key": "s", "x": SMALL, "id": "p"}) == {
        "id": "p", "key": "s", "step": 1, "prediction": stats.last_prediction}
    assert stats.outcomes["predicted"] == 1 and stats.last_target == []
    losses = []
    for i in range(3):
        reply = handle(w, {"key": "s", "x": SMALL, "y": float(i), "id": i})
        assert reply["id"] == i and reply["loss"] == reply["loss"]  # a finite loss
        losses.append(reply["loss"])
        assert stats.last_prediction == reply["prediction"] and stats.last_target == float(i)
    handle(w, {"key": "s", "x": SMALL})  # no target: the last target stays
    assert stats.last_target == 2.0
    assert stats.outcomes["learned"] == 3 and stats.outcomes["predicted"] == 2
    assert stats.loss_count == 3 and stats.loss_sum == pytest.approx(sum(losses)) and stats.last_loss == losses[-1]
    forecast = handle(w, {"key": "f", "value": 4.0, "id": "q"})
    assert forecast["id"] == "q" and "forecast" in forecast
    assert stats.last_prediction == forecast["forecast"][0] and stats.last_target == 4.0
    wrong = handle(w, {"key": "s", "value": 1.0})
    assert wrong["error"] == {"code": "wrong_kind", "message": "key 's' is a supervised stream; this is a forecast event"}


def test_unreadable_stored_keys_say_why(monkeypatch):
    from streamrnn.state import StateError

    w = worker(**{"streams.max_keys": "1"})
    handle(w, {"key": "a", "value": 1.0})
    handle(w, {"key": "b", "value": 1.0})

    def unreachable(ref):
        raise OSError("disk out of reach")

    monkeypatch.setattr(w.table.store, "get_stream", unreachable)
    assert handle(w, {"key": "a", "value": 2.0})["error"] == {"code": "unavailable", "message": (
        "the state of key 'a' cannot be read now (disk out of reach); nothing changed, try again")}
    assert list(w.table.stored) == ["a"] and w.table.restore_failures == 0  # still stored: retry later

    def corrupt(ref):
        raise StateError("truncated")

    monkeypatch.setattr(w.table.store, "get_stream", corrupt)
    error = handle(w, {"key": "a", "value": 2.0})["error"]
    assert error["code"] == "corrupt_state"
    assert error["message"].startswith("the stored state of key 'a' was corrupt and has been quarantined")


def test_a_line_the_parser_fails_on_with_a_bug_is_answered_and_still_counts_as_read(caplog, monkeypatch):
    import streamrnn_service.worker as worker_module
    from streamrnn_service.checkpointer import Position

    def broken(line):
        raise RuntimeError("a parser bug")

    monkeypatch.setattr(worker_module, "parse", broken)
    w = worker()
    p = Position(2, 30)
    line = b'{"key": "a", "value": 1.0, "id": "e8"}'
    with caplog.at_level("ERROR", logger="streamrnn.worker"):
        reply = json.loads(w.handle(line, len(line) + 1, p))
        assert json.loads(w.handle(line, len(line) + 1)) == reply  # no position: nothing to move, no crash
    assert reply == {"error": {"code": "internal", "message": "internal error: RuntimeError"}, "id": None}
    assert p.as_dict() == {"lines": 3, "bytes": 30 + len(line) + 1}  # unparsed, yet read: counted once
    assert w.stats.rejected["internal"] == 2 and w.events == 0
    assert [r.getMessage() for r in caplog.records] == ["internal error on a line"] * 2


def test_the_step_latency_histogram_times_events_not_commands():
    w = worker()
    for i in range(3):
        handle(w, {"key": "a", "value": float(i)})
        handle(w, {"command": "status"})
        handle(w, {"command": "digest"})
    assert sum(w.stats.latency.counts) == 3


@pytest.mark.parametrize("where", ["parse", "respond"])
def test_a_line_failing_on_a_bug_is_not_timed_as_an_event(monkeypatch, where):
    """A bug in parsing or in stepping a line is answered ``internal`` and, like any refusal, observes no
    latency: the histogram times events applied."""
    import streamrnn_service.worker as worker_module

    w = worker()
    handle(w, {"key": "a", "value": 1.0})

    def broken(*_):
        raise KeyError("a bug")

    monkeypatch.setattr(*((worker_module, "parse", broken) if where == "parse" else (w, "_respond", broken)))
    reply = handle(w, {"key": "a", "value": 2.0})
    assert reply["error"]["code"] == "internal" and w.stats.rejected["internal"] == 1
    assert sum(w.stats.latency.counts) == 1


def test_refusals_of_a_new_key_name_the_key():
    w = worker(**{"streams.max_keys": "1", "streams.max_stored_keys": "1"})
    handle(w, {"key": "a", "value": 1.0})
    handle(w, {"key": "b", "value": 1.0})
    full = handle(w, {"key": "newcomer", "value": 1.0})["error"]
    assert full["code"] == "too_many_keys" and full["message"].startswith("key 'newcomer' is new, and 1 keys are live")

    w = worker(**{"streams.max_key_bytes": "1024"})
    large = handle(w, {"key": "wide", "x": WIDE, "y": 1.0})["error"]
    assert large["code"] == "too_large" and large["message"].startswith("key 'wide' would hold ")


def test_an_event_whose_loss_overflows_is_answered_with_a_null_loss_and_counted_as_skipped():
    w = worker(**{"model.hybrid": "false"})
    handle(w, {"key": "p", "x": SMALL, "y": 0.25})
    stats = w.stats
    learned = (stats.outcomes["learned"], stats.loss_count, stats.loss_sum, stats.last_loss)
    line = json.dumps({"key": "p", "x": SMALL, "y": 1e300, "id": "big"}).encode()
    with np.errstate(over="ignore"):
        text = w.handle(line, len(line) + 1)
    reply = json.loads(text)
    assert reply["id"] == "big" and reply["step"] == 2 and "loss" in reply and reply["loss"] is None
    assert b'"loss":null' in text
    assert stats.outcomes["skipped"] == 1 and stats.outcomes["learned"] == learned[0]
    assert (stats.outcomes["learned"], stats.loss_count, stats.loss_sum, stats.last_loss) == learned
    assert w.table.totals()["skipped"] == 1


def test_unanswerable_moves_a_position_by_the_size_given_and_no_further():
    from streamrnn_service.checkpointer import Position

    w = worker()
    p = Position(1, 10)
    w.unanswerable("truncated", "closed before any byte of a line", position=p)
    assert p.as_dict() == {"lines": 1, "bytes": 10}


def test_every_event_whose_loss_overflows_is_counted_as_skipped():
    w = worker(**{"model.hybrid": "false"})
    handle(w, {"key": "p", "x": SMALL, "y": 0.25})
    with np.errstate(over="ignore"):
        for _ in range(2):
            assert handle(w, {"key": "p", "x": SMALL, "y": 1e300})["loss"] is None
    assert w.stats.outcomes["skipped"] == 2 and w.stats.outcomes["learned"] == 1


def _mixed_lines(n=150) -> list:
    """Events of several keys and kinds, with commands, refusals, malformed and over-long lines among them."""
    lines = [json.dumps(e).encode() for e in supervised_events(n, keys=("a", "b", "c"))]
    extra = [b'{"command": "status", "id": 7}', b'{not json', None, b'{"key": "f", "value": 1.5, "id": "v"}',
             b'{"key": "a", "value": 2.0}', b'{"key": "f", "value": [1.0, 2.0]}', b'', b'{"command": "digest"}']
    for i, line in enumerate(extra):
        lines.insert(13 * i + 5, line)
    return [(line, 5000 if line is None else len(line) + 1) for line in lines]


def test_a_batch_of_lines_is_answered_exactly_as_line_by_line():
    """``handle_lines`` parses a batch, applies it, then encodes it: the replies, positions, counts, latency
    observations and state are those of ``handle`` on each line in turn, across batch boundaries."""
    from streamrnn_service.checkpointer import Position

    lines = _mixed_lines()
    one, many = worker(), worker()
    p1, p2 = Position(), Position()
    expected = b"".join(one.handle(line, size, p1) for line, size in lines)
    got = many.handle_lines(lines, p2)
    assert len(lines) > 2 * many.BATCH
    assert got == expected
    assert p1.as_dict() == p2.as_dict()
    assert one.stats.rejected == many.stats.rejected and one.stats.outcomes == many.stats.outcomes
    applied = one.stats.outcomes["learned"] + one.stats.outcomes["predicted"] + one.stats.outcomes["skipped"]
    assert sum(one.stats.latency.counts) == sum(many.stats.latency.counts) == applied > 100  # events, not commands
    assert one.table.digest() == many.table.digest() and one.events == many.events
    assert many.handle_lines([]) == b""


def test_a_batch_stops_after_the_line_in_hand_when_the_daemon_stops():
    from streamrnn_service.checkpointer import Position

    lines = _mixed_lines()
    w, p = worker(), Position()
    asked = []

    def should_stop():
        asked.append(1)
        return len(asked) == 100

    replies = w.handle_lines(lines, p, should_stop).splitlines()
    reference, q = worker(), Position()
    expected = [reference.handle(line, size, q).rstrip(b"\n") for line, size in lines[:100]]
    assert replies == expected and len(asked) == 100  # nothing after the hundredth line was applied or counted
    assert p.as_dict() == q.as_dict() and w.table.digest() == reference.table.digest()


def _lines(events: list[dict]) -> list:
    return [(line, len(line) + 1) for line in (json.dumps(e).encode() for e in events)]


@pytest.mark.parametrize("settings", [{}, {"model.learner": "bptt"}])
def test_the_latencies_observed_add_up_to_at_most_the_time_the_lines_took(settings):
    """Each applied event's latency is its share of its pass's parsing and encoding and of the step it was taken
    in (one by one, or a batch of pooled keys): the shares add up to most of the call's time, never more."""
    import time

    w = worker(**settings)
    w.handle_lines(_lines(supervised_events(20, keys=("a", "b", "c", "d"))))  # the keys exist: no creation below
    lines = _lines(supervised_events(400, keys=("a", "b", "c", "d"), seed=1))
    latency = w.stats.latency
    count, total = sum(latency.counts), latency.sum
    started = time.perf_counter()
    w.handle_lines(lines)
    elapsed = time.perf_counter() - started
    assert sum(latency.counts) == count + len(lines)
    assert 0.2 * elapsed < latency.sum - total <= elapsed


@pytest.mark.parametrize("prediction, y", [(0.1234567890123, 0.5), (-0.0, 0.0), (0.0, -0.0), (3.0, 1e150),
                                           (-1e300, 1e300), (float("inf"), 1.0), (-float("inf"), 1.0),
                                           (float("nan"), 1.0), (1.0, float("nan")), (5e-324, -5e-324)])
def test_one_outputs_loss_is_squared_loss_bit_for_bit(prediction, y):
    """``loss_of`` (one output, the batches' hot path) is ``squared_loss`` of the one error, to the bit, and both
    are half the square of the error clipped to +-MAX_ABS: bounded errors, signed zeros and NaN alike."""
    from streamrnn.hybrid.scale import MAX_ABS
    from streamrnn_service.pooled import loss_of
    from streamrnn_service.streams import squared_loss

    assert loss_of(prediction, None) is None
    fast, general = loss_of(prediction, y), squared_loss((prediction,), (y,))
    clipped = float(np.clip(prediction - y, -MAX_ABS, MAX_ABS))
    assert type(fast) is float
    assert repr(fast) == repr(general) == repr(clipped * clipped * 0.5)
    assert math.isnan(fast) or 0.0 <= fast <= MAX_ABS * MAX_ABS * 0.5


@pytest.mark.parametrize("event_id", [7, "e-1 \"ü\"", None])
@pytest.mark.parametrize("prediction, y", [(0.1234567890123, 0.5), (-2.5, None), (3.0, 1e150), (float("nan"), 1.0),
                                           (float("inf"), None)])
def test_a_batched_reply_is_the_reply_dict_encoded_and_counts_the_same(event_id, prediction, y):
    """``_taken`` (a held pooled key's event of a batch) writes the reply text and the counts that ``_reply``
    and ``encode`` give the same event, whatever its id, target and prediction (non-finite ones as null)."""
    from streamrnn_service.pooled import loss_of
    from streamrnn_service.protocol import SupervisedEvent
    from streamrnn_service.worker import encode

    event = SupervisedEvent(key="k", id=event_id, x={"a": 1.0}, y=y)
    fast, slow = worker(), worker()

    class Stream:
        kind, events = "supervised", 4

    for _ in range(2):  # twice: the counts add up
        text = fast._taken(event, "k", 4, prediction, loss_of(prediction, y))
        assert text == encode(slow._reply(event, "k", Stream(), prediction, loss_of(prediction, y)))
    counted = ("outcomes", "loss_sum", "loss_count", "last_loss", "last_prediction", "last_target")
    assert repr([getattr(fast.stats, a) for a in counted]) == repr([getattr(slow.stats, a) for a in counted])
    assert fast.checkpointer.events == slow.checkpointer.events == 2
