"""The daemon's bounds on keys, state and pauses, each tested at its limit with its metric."""

from __future__ import annotations

import json
import time

import pytest
from prometheus_client import generate_latest

from service.config import ConfigError, load
from service.metrics import registry_for
from service.server import build_worker
from service.store import DirectoryStore, MemoryStore

from .test_service_metrics import samples

FEATURES = {"u": 1.0, "v": -2.0, "w": 0.5, "z": 3.0}


def worker(store=None, **settings):
    config = load(environ={}, overrides={"checkpoint.every_events": "0", **settings})
    return build_worker(config, store if store is not None else MemoryStore())


def handle(w, event) -> dict:
    line = json.dumps(event).encode()
    return json.loads(w.handle(line, len(line) + 1))


def metrics(w) -> dict[str, float]:
    return samples(generate_latest(registry_for(w.stats, w.table, w)).decode())


def key_bytes(event) -> int:
    """The state size of a key after ``event``, its first, measured on a worker without bounds."""
    w = worker()
    handle(w, event)
    (stream,) = w.table.live.values()
    return sum(a.nbytes for a in stream.snapshot()[0].values())


@pytest.mark.parametrize("event, small", [
    ({"key": "k", "x": FEATURES, "y": 1.0}, {"key": "small", "x": {"u": 1.0}, "y": 1.0}),
    ({"key": "k", "value": [1.0, 2.0, 3.0]}, {"key": "small", "value": 1.0}),
])
def test_a_new_key_over_max_key_bytes_is_refused_and_changes_nothing(event, small):
    size = key_bytes(event)
    at_limit = worker(**{"streams.max_key_bytes": str(size)})
    assert handle(at_limit, event)["step"] == 1  # exactly at the budget: admitted

    w = worker(**{"streams.max_key_bytes": str(size - 1)})
    assert handle(w, small)["step"] == 1
    digest, events = handle(w, {"command": "digest"})["digest"], w.events
    reply = handle(w, event)
    assert reply["error"]["code"] == "too_large" and str(size) in reply["error"]["message"]
    assert "k" not in w.table.live and w.events == events and handle(w, {"command": "digest"})["digest"] == digest
    assert metrics(w)["streamrnn_rejected_lines_total{reason=too_large}"] == 1.0
    assert handle(w, small)["step"] == 2  # a key admitted before still learns


def test_max_stored_keys_refuses_new_keys_when_full_but_serves_known_ones():
    w = worker(**{"streams.max_keys": "1", "streams.max_stored_keys": "2"})
    for key in "abc":  # one live, two stored: full
        assert handle(w, {"key": key, "value": 1.0})["step"] == 1
    assert len(w.table.live) == 1 and len(w.table.stored) == 2
    digest = handle(w, {"command": "digest"})["digest"]
    reply = handle(w, {"key": "d", "value": 1.0})
    assert reply["error"]["code"] == "too_many_keys" and "max_stored_keys" in reply["error"]["message"]
    assert handle(w, {"command": "digest"})["digest"] == digest and len(w.table) == 3
    for key in "abca":  # known keys move in and out as before
        assert "step" in handle(w, {"key": key, "value": 2.0})
    m = metrics(w)
    assert m["streamrnn_rejected_lines_total{reason=too_many_keys}"] == 1.0
    assert m["streamrnn_stored_keys{model=daemon}"] == 2.0 and m["streamrnn_expired_keys_total{model=daemon}"] == 0.0


def test_max_stored_keys_with_expire_forgets_the_least_recently_used_and_its_file(tmp_path):
    store = DirectoryStore(tmp_path, keep=1)
    w = worker(store, **{"streams.max_keys": "1", "streams.max_stored_keys": "2", "streams.when_full": "expire"})
    for key in "abc":
        handle(w, {"key": key, "value": 1.0})
    handle(w, {"key": "a", "value": 2.0})  # a is used again: b is now the least recently used stored key
    assert list(w.table.stored) == ["b", "c"]
    assert handle(w, {"key": "d", "value": 1.0})["step"] == 1
    assert list(w.table.stored) == ["c", "a"] and set(w.table.live) == {"d"}
    assert metrics(w)["streamrnn_expired_keys_total{model=daemon}"] == 1.0
    w.checkpoint()
    assert len(list(store.keys.glob("*.npz"))) == 2  # b's file went with the checkpoint that dropped it
    assert handle(w, {"key": "b", "value": 5.0})["step"] == 1  # forgotten: it starts afresh


@pytest.mark.parametrize("setting, value", [("streams.max_stored_keys", "-1"), ("streams.when_full", "drop"),
                                            ("streams.max_key_bytes", "10")])
def test_bad_bounds_are_refused_by_name(setting, value):
    with pytest.raises(ConfigError, match=setting):
        load(environ={}, overrides={setting: value})


def test_digest_hashes_live_keys_only_and_agrees_with_reading_every_stored_key(tmp_path):
    store = DirectoryStore(tmp_path)
    w = worker(store, **{"streams.max_keys": "2"})
    for i in range(30):
        handle(w, {"key": f"k{i % 6}", "value": float(i)})
    kept = handle(w, {"command": "digest"})["digest"]

    def unreachable(ref):
        raise AssertionError("digest read a stored key")

    read, store.get_stream = store.get_stream, unreachable
    assert handle(w, {"command": "digest"})["digest"] == kept
    store.get_stream = read
    w.table.digests.clear()  # every stored key read back and hashed: the same digest
    assert handle(w, {"command": "digest"})["digest"] == kept

    w.checkpoint()  # the kept digests travel with the checkpoint
    again = worker(DirectoryStore(tmp_path), **{"streams.max_keys": "2"})
    assert again.restore() and set(again.table.digests) == set(again.table.stored)
    again.table.store.get_stream = unreachable
    assert handle(again, {"command": "digest"})["digest"] == kept


class SlowStore(MemoryStore):
    def commit(self, checkpoint):
        time.sleep(0.3)


def test_the_step_latency_includes_the_checkpoint_an_event_triggers():
    w = worker(SlowStore(), **{"checkpoint.every_events": "3"})
    for i in range(3):
        handle(w, {"value": float(i)})
    assert w.generation == 1 and w.stats.latency.sum >= 0.3
    assert metrics(w)["streamrnn_step_latency_seconds_bucket{le=0.25}"] == 2.0  # the third waited for it


def test_digest_rehashes_only_the_live_keys_that_took_events(monkeypatch):
    import service.table as table

    w = worker(**{"streams.max_keys": "3"})
    for i in range(20):
        handle(w, {"key": f"k{i % 5}", "value": float(i)})
    first = handle(w, {"command": "digest"})["digest"]
    hashed = []
    real = table.digest_of
    monkeypatch.setattr(table, "digest_of", lambda arrays, header: hashed.append(1) or real(arrays, header))
    assert handle(w, {"command": "digest"})["digest"] == first and hashed == []
    handle(w, {"key": "k1", "value": 3.0})  # a stored key comes back: only it moved
    second = handle(w, {"command": "digest"})["digest"]
    assert second != first and len(hashed) == 2  # k1 hashed at the digest; k2 when it was evicted for k1
    w.table._live_digests.clear()
    assert handle(w, {"command": "digest"})["digest"] == second  # against hashing every live key afresh
