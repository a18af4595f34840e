"""The daemon's bounds on keys, state and pauses, each tested at its limit with its metric."""

from __future__ import annotations

import json
import time

import pytest
from prometheus_client import generate_latest

from streamrnn_service.config import ConfigError, load
from streamrnn_service.metrics import registry_for
from streamrnn_service.server import build_worker
from streamrnn_service.store import DirectoryStore, MemoryStore

from .test_service_metrics import samples

FEATURES = {"u": 1.0, "v": -2.0, "w": 0.5, "z": 3.0}


def worker(store=None, **settings):
    config = load(environ={}, overrides={"checkpoint.every_events": "0", **settings})
    return build_worker(config, store if store is not None else MemoryStore())


def handle(w, event) -> dict:
    line = json.dumps(event).encode()
    return json.loads(w.handle(line, len(line) + 1))


def metrics(w) -> dict[str, float]:
    return samples(generate_latest(registry_for(w.stats, w.table, w.checkpointer)).decode())


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


def test_a_new_keys_size_is_measured_once_per_layout_unless_it_is_near_the_limit(monkeypatch):
    """Far under max_key_bytes, the first key of a layout is measured and the rest of that layout are
    not (a snapshot costs more than a key's first event); within half of it, every new key is."""
    from streamrnn_service.streams import SupervisedStream

    snapshots = []
    real = SupervisedStream.snapshot
    monkeypatch.setattr(SupervisedStream, "snapshot", lambda self: snapshots.append(self) or real(self))
    size = key_bytes({"key": "k", "x": FEATURES, "y": 1.0})
    for limit, measured in ((str(16 << 20), 2), (str(size + 100), 4)):
        snapshots.clear()
        w = worker(**{"streams.max_key_bytes": limit})
        for key in ("a", "b", "c"):
            handle(w, {"key": key, "x": FEATURES, "y": 1.0})
        handle(w, {"key": "d", "x": {"u": 1.0}, "y": 1.0})  # another layout: one feature
        assert len(snapshots) == measured and len(w.table.live) == 4


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
    assert m["streamrnn_stored_keys"] == 2.0 and m["streamrnn_expired_keys_total"] == 0.0


def test_max_stored_keys_with_expire_forgets_the_least_recently_used_and_its_file(tmp_path):
    store = DirectoryStore(tmp_path, keep=1)
    w = worker(store, **{"streams.max_keys": "1", "streams.max_stored_keys": "2", "streams.when_full": "expire"})
    for key in "abc":
        handle(w, {"key": key, "value": 1.0})
    handle(w, {"key": "a", "value": 2.0})  # a is used again: b is now the least recently used stored key
    assert list(w.table.stored) == ["b", "c"]
    assert handle(w, {"key": "d", "value": 1.0})["step"] == 1
    assert list(w.table.stored) == ["c", "a"] and set(w.table.live) == {"d"}
    assert metrics(w)["streamrnn_expired_keys_total"] == 1.0
    w.checkpointer.checkpoint()
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

    w.checkpointer.checkpoint()  # the kept digests travel with the checkpoint
    again = worker(DirectoryStore(tmp_path), **{"streams.max_keys": "2"})
    assert again.checkpointer.restore() and set(again.table.digests) == set(again.table.stored)
    again.table.store.get_stream = unreachable
    assert handle(again, {"command": "digest"})["digest"] == kept


class SlowStore(MemoryStore):
    def commit(self, checkpoint):
        time.sleep(0.3)


def test_the_step_latency_includes_the_checkpoint_an_event_triggers():
    handle(worker(), {"value": 0.0})  # a first event in this process loads the compiled kernels: not timed here
    w = worker(SlowStore(), **{"checkpoint.every_events": "3", "checkpoint.background": "false"})
    for i in range(3):
        handle(w, {"value": float(i)})
    assert w.checkpointer.generation == 1 and w.stats.latency.sum >= 0.3
    assert metrics(w)["streamrnn_step_latency_seconds_bucket{le=0.25}"] == 2.0  # the third waited for it


def test_in_the_background_a_checkpoint_is_written_while_events_go_on_and_counts_when_it_ends():
    handle(worker(), {"value": 0.0})  # a first event in this process loads the compiled kernels: not timed here
    w = worker(SlowStore(), **{"checkpoint.every_events": "3"})  # checkpoint.background is on by default
    for i in range(4):
        handle(w, {"value": float(i)})
    assert w.stats.latency.sum < 0.25 and w.checkpointer.generation == 0  # the events did not wait; nothing counted yet
    assert not metrics(w)["streamrnn_checkpoint_duration_seconds_count"]
    w.checkpointer.settle(wait=True)
    assert w.checkpointer.generation == 1 and w.stats.checkpoint.sum >= 0.3
    assert metrics(w)["streamrnn_checkpoint_duration_seconds_count"] == 1.0
    assert w.checkpointer.dirty()  # the fourth event came after the cut
    w.checkpointer.close()


def test_a_checkpoint_waits_for_the_one_being_written():
    handle(worker(), {"value": 0.0})  # kernels loaded outside the test
    w = worker(SlowStore())
    handle(w, {"value": 1.0})
    assert w.checkpointer.checkpoint(background=True) and w.checkpointer.checkpoint(background=True)
    assert w.checkpointer.generation == 1  # the first was taken in before the second began
    w.checkpointer.close()
    assert w.checkpointer.generation == 2 and sum(w.stats.checkpoint.counts) == 2


def test_an_outcome_is_taken_in_once_and_close_stops_the_one_writer_thread():
    import threading

    def writers():
        return {t for t in threading.enumerate() if t.name.startswith("streamrnn-checkpoint")}

    before = writers()
    w = worker()
    for i in range(3):
        handle(w, {"value": float(i)})
        assert w.checkpointer.checkpoint(background=True)
        w.checkpointer.settle(wait=True)
        w.checkpointer.settle(wait=True)
    assert sum(w.stats.checkpoint.counts) == 3 and w.checkpointer.generation == 3 and len(writers() - before) == 1
    w.checkpointer.close()
    assert sum(w.stats.checkpoint.counts) == 3
    time.sleep(0.05)
    assert not writers() - before


def test_a_background_checkpoints_time_includes_copying_the_states(monkeypatch):
    w = worker()
    handle(w, {"value": 1.0})
    build = w.table.checkpoint

    def slow_copy(*args, **kwargs):
        time.sleep(0.2)
        return build(*args, **kwargs)

    monkeypatch.setattr(w.table, "checkpoint", slow_copy)
    assert w.checkpointer.checkpoint(background=True)
    w.checkpointer.close()
    assert w.stats.checkpoint.sum >= 0.2


def test_digest_rehashes_only_the_live_keys_that_took_events(monkeypatch):
    import streamrnn_service.table as table

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


# ----- the table itself: defaults, counters, failures, digests --------------------------------------


def test_table_defaults_and_a_bad_policy_named():
    from streamrnn_service.table import StreamTable

    template = worker().table.template
    table = StreamTable(template, MemoryStore(), 2)
    assert (table.max_keys, table.max_stored_keys, table.when_full, table.max_key_bytes) == (2, 100_000, "refuse", 16 << 20)
    assert (table.evictions, table.restores, table.restore_failures, table.eviction_failures,
            table.corrupt_keys, table.expired_keys) == (0, 0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match=r"^when_full must be one of \('refuse', 'expire'\), got 'drop'$"):
        StreamTable(template, MemoryStore(), 2, when_full="drop")


def test_the_digest_of_a_state_covers_its_header():
    import numpy as np

    from streamrnn_service.table import digest_of

    arrays = {"a": np.arange(3.0)}
    assert digest_of(arrays, {"events": 1}) != digest_of(arrays, {"events": 2})
    assert digest_of(arrays, {"events": 1}) == digest_of({"a": np.arange(3.0)}, {"events": 1})


def test_totals_count_every_keys_steps_live_or_stored_through_evictions_and_restores():
    w = worker(**{"streams.max_keys": "2", "model.hybrid": "false"})
    events = {"a": 5, "b": 3, "c": 4, "d": 1}
    for i in range(5):
        for key, n in events.items():
            if i < n:
                handle(w, {"key": key, "x": FEATURES, "y": 0.5})
    assert w.table.evictions > 3 and w.table.restores > 3
    assert w.table.totals()["steps"] == sum(events.values()) and w.table.totals()["updates"] == sum(events.values())
    stored = sum(events[k] for k in w.table.stored)
    assert w.table.retired["steps"] == stored


def test_a_checkpoint_carries_the_retired_counters_and_an_older_one_without_them_loads(tmp_path):
    settings = {"streams.max_keys": "1", "model.hybrid": "false"}
    w = worker(DirectoryStore(tmp_path), **settings)
    for i in range(3):
        for key in "abc":
            handle(w, {"key": key, "x": FEATURES, "y": 0.5})
    totals, digest = w.table.totals(), handle(w, {"command": "digest"})["digest"]
    assert w.checkpointer.checkpoint()
    again = worker(DirectoryStore(tmp_path), **settings)
    assert again.checkpointer.restore() and again.table.totals() == totals and again.table.retired == w.table.retired

    old = w.table.store.latest()  # as an older writer would have left it: no digests, retired counters in part
    del old.meta["digests"]
    old.meta["retired"] = {"steps": 6}
    older = worker(w.table.store, **settings)
    older.table.load(old)
    assert older.table.digests == {} and handle(older, {"command": "digest"})["digest"] == digest
    assert older.table.retired == {"steps": 6, "updates": 0, "skipped": 0, "clipped": 0, "bounded": 0}


def test_a_checkpoint_with_more_live_keys_than_max_keys_is_loaded_down_to_max_keys(tmp_path):
    w = worker(DirectoryStore(tmp_path), **{"streams.max_keys": "5"})
    for key in "abcd":
        handle(w, {"key": key, "value": 1.0})
    digest = handle(w, {"command": "digest"})["digest"]
    assert w.checkpointer.checkpoint()
    smaller = worker(DirectoryStore(tmp_path), **{"streams.max_keys": "2"})
    assert smaller.checkpointer.restore()
    assert list(smaller.table.live) == ["c", "d"] and list(smaller.table.stored) == ["a", "b"]
    assert smaller.table.evictions == 2 and handle(smaller, {"command": "digest"})["digest"] == digest


class FlakyStore(MemoryStore):
    fail = False

    def put_stream(self, key, arrays, header):
        if self.fail:
            raise OSError("disk full")
        return super().put_stream(key, arrays, header)


def test_a_key_that_cannot_be_checkpointed_out_stays_live_counted_and_logged(caplog):
    store = FlakyStore()
    w = worker(store, **{"streams.max_keys": "1"})
    handle(w, {"key": "a", "value": 1.0})
    store.fail = True
    with caplog.at_level("ERROR", logger="streamrnn.table"):
        assert handle(w, {"key": "b", "value": 1.0})["step"] == 1
    assert list(w.table.live) == ["a", "b"] and not w.table.stored
    assert w.table.eviction_failures == 1 and w.table.evictions == 0
    assert [r.getMessage() for r in caplog.records] == [
        "cannot checkpoint key 'a' out of memory (disk full); it stays in memory for now"]
    store.fail = False
    handle(w, {"key": "c", "value": 1.0})  # room again: both keys over the bound go out at once
    assert list(w.table.live) == ["c"] and list(w.table.stored) == ["a", "b"]
    assert w.table.eviction_failures == 1 and w.table.evictions == 2


def test_the_live_digest_cache_holds_live_keys_only():
    w = worker(**{"streams.max_keys": "1"})
    for key in "abcab":
        handle(w, {"key": key, "value": 1.0})
        handle(w, {"command": "digest"})
        assert set(w.table._live_digests) <= set(w.table.live)
        assert set(w.table.digests) == set(w.table.stored)


def test_a_stored_key_read_back_keeps_its_digest_and_one_without_a_digest_is_hashed_afresh(monkeypatch):
    import streamrnn_service.table as table

    w = worker(**{"streams.max_keys": "2"})
    for i, key in enumerate("abc"):
        handle(w, {"key": key, "value": float(i)})
    assert list(w.table.stored) == ["a"]
    digest = handle(w, {"command": "digest"})["digest"]
    hashed = []
    real = table.digest_of
    monkeypatch.setattr(table, "digest_of", lambda arrays, header: hashed.append(1) or real(arrays, header))
    # a refused event reads a back (evicting b) and changes no state: a's kept digest is still good
    assert handle(w, {"key": "a", "x": {"u": 1.0}})["error"]["code"] == "wrong_kind"
    assert list(w.table.live) == ["c", "a"] and list(w.table.stored) == ["b"]
    assert handle(w, {"command": "digest"})["digest"] == digest and len(hashed) == 1  # b, at its eviction
    w.table.digests.clear()  # as after an older checkpoint: b comes back without a digest
    assert handle(w, {"key": "b", "x": {"u": 1.0}})["error"]["code"] == "wrong_kind"
    assert handle(w, {"command": "digest"})["digest"] == digest


def _corrupt(ref):
    from streamrnn.state import StateError

    raise StateError("truncated")


def test_corrupt_stored_keys_are_counted_each_logged_and_forgotten_with_their_digests(caplog, monkeypatch):
    w = worker(**{"streams.max_keys": "1"})
    for key in "abc":
        handle(w, {"key": key, "value": 1.0})
    assert set(w.table.digests) == {"a", "b"}
    monkeypatch.setattr(w.table.store, "get_stream", _corrupt)
    with caplog.at_level("ERROR", logger="streamrnn.table"):
        for key in "ab":
            error = handle(w, {"key": key, "value": 2.0})["error"]
            assert error == {"code": "corrupt_state", "message": (
                f"the stored state of key {key!r} was corrupt and has been quarantined; "
                "this event was not applied, and the key's next event starts it afresh")}
    assert w.table.corrupt_keys == 2 and w.table.restore_failures == 2
    assert w.table.digests == {} and w.table.stored == {}
    assert [r.getMessage() for r in caplog.records] == [
        f"the stored state of key {key!r} is corrupt (truncated); moved to nowhere (kept in memory only), "
        "and the key is forgotten" for key in "ab"]


def test_a_stored_state_without_a_stream_kind_is_corrupt(caplog, monkeypatch):
    w = worker(**{"streams.max_keys": "1"})
    handle(w, {"key": "a", "value": 1.0})
    handle(w, {"key": "b", "value": 1.0})
    arrays, header = w.table.store.get_stream("a@1")
    monkeypatch.setattr(w.table.store, "get_stream", lambda ref: (arrays, {k: v for k, v in header.items() if k != "kind"}))
    with caplog.at_level("ERROR", logger="streamrnn.table"):
        assert handle(w, {"key": "a", "value": 2.0})["error"]["code"] == "corrupt_state"
    assert "(no stream kind in a@1)" in caplog.records[0].getMessage()


def test_a_digest_leaves_out_a_corrupt_stored_key_and_only_it(monkeypatch):
    w = worker(**{"streams.max_keys": "2"})
    twin = worker(**{"streams.max_keys": "2"})
    for i, key in enumerate("abc"):
        handle(w, {"key": key, "value": float(i)})
        if key != "a":
            handle(twin, {"key": key, "value": float(i)})
    w.table.digests.clear()  # a, stored, sorts first and must be read
    monkeypatch.setattr(w.table.store, "get_stream", _corrupt)
    assert handle(w, {"command": "digest"})["digest"] == handle(twin, {"command": "digest"})["digest"]
    assert w.table.corrupt_keys == 1


def test_the_refusal_of_a_new_key_says_which_bound_and_policy():
    w = worker(**{"streams.max_keys": "1", "streams.max_stored_keys": "1"})
    for key in "ab":
        handle(w, {"key": key, "value": 1.0})
    assert handle(w, {"key": "c", "value": 1.0})["error"]["message"] == (
        "key 'c' is new, and 1 keys are live and 1 stored, the most streams.max_keys and "
        "streams.max_stored_keys allow (policy refuse)")


def test_expired_keys_are_counted_each_logged_and_leave_no_digest(caplog):
    w = worker(**{"streams.max_keys": "1", "streams.max_stored_keys": "1", "streams.when_full": "expire"})
    handle(w, {"key": "a", "value": 1.0})
    handle(w, {"key": "b", "value": 1.0})
    w.table.digests.clear()  # as after an older checkpoint: a has no digest kept
    with caplog.at_level("WARNING", logger="streamrnn.table"):
        for key in "cd":
            assert handle(w, {"key": key, "value": 1.0})["step"] == 1
    assert w.table.expired_keys == 2 and list(w.table.stored) == ["c"] and set(w.table.digests) <= {"c"}
    assert [r.getMessage() for r in caplog.records] == [
        f"forgot stored key {key!r}: 1 keys are stored, the most streams.max_stored_keys allows (policy expire)"
        for key in "ab"]


def test_every_failed_eviction_is_counted():
    store = FlakyStore()
    store.fail = True
    w = worker(store, **{"streams.max_keys": "1"})
    for key in "abc":
        assert handle(w, {"key": key, "value": 1.0})["step"] == 1
    assert w.table.eviction_failures == 2 and list(w.table.live) == ["a", "b", "c"]
