"""The checkpointer: both triggers, and the positions, event count and generation a checkpoint records
with the keys' states (the store's own work is tests/test_service_store.py, forked writers
tests/test_service_forked.py)."""

from __future__ import annotations

import time

import pytest

from streamrnn_service.checkpointer import Checkpointer
from streamrnn_service.config import load
from streamrnn_service.server import build_worker
from streamrnn_service.stats import Stats
from streamrnn_service.store import MemoryStore
from streamrnn_service.worker import Worker

from .test_service_support import supervised_events
from .test_service_worker import handle, worker


class _CountingStore(MemoryStore):
    def __init__(self, fail=False):
        super().__init__()
        self.commits, self.fail, self.written = [], fail, []

    def commit(self, checkpoint):
        if self.fail:
            raise OSError("disk full")
        self.commits.append(checkpoint.meta["events"])
        self.written.append(sorted(checkpoint.live))  # the keys whose states this checkpoint writes


def test_a_restored_checkpoint_counts_as_the_last_success(tmp_path):
    from streamrnn_service.store import DirectoryStore

    config = load(environ={}, overrides={"checkpoint.every_events": "0"})
    first = build_worker(config, DirectoryStore(tmp_path))
    for e in supervised_events(10):
        handle(first, e)
    assert first.checkpointer.checkpoint()
    written = first.stats.checkpoint_last_success
    again = build_worker(config, DirectoryStore(tmp_path))
    assert again.stats.checkpoint_last_success == 0.0  # nothing yet: never
    assert again.checkpointer.restore()
    assert again.stats.checkpoint_last_success == pytest.approx(written, abs=1.0)


def test_a_checkpoint_every_n_events_and_dirty_tracks_them():
    config = load(environ={}, overrides={"checkpoint.every_events": "3", "checkpoint.background": "false"})
    from streamrnn_service.server import build_worker as build

    store = _CountingStore()
    w = build(config, store)
    assert w.checkpointer.dirty()  # nothing written yet
    for i in range(10):
        handle(w, {"key": "a", "value": float(i)})
        handle(w, {"command": "status"})  # commands never make a checkpoint due
    assert store.commits == [3, 6, 9] and w.checkpointer.generation == 3
    assert w.checkpointer.dirty()  # the tenth event came after the last one
    assert w.checkpointer.checkpoint() and store.commits[-1] == 10 and w.checkpointer.generation == 4
    assert not w.checkpointer.dirty()
    w.checkpointer.position("stdin").bytes += 4  # a position that moved is something to write, too
    assert w.checkpointer.dirty()


def test_a_failed_checkpoint_is_counted_logged_and_changes_no_generation(caplog):
    config = load(environ={}, overrides={"checkpoint.every_events": "0"})
    from streamrnn_service.server import build_worker as build

    w = build(config, _CountingStore(fail=True))
    handle(w, {"key": "a", "value": 1.0})
    with caplog.at_level("ERROR", logger="streamrnn.checkpointer"):
        assert w.checkpointer.checkpoint() is False
        assert w.checkpointer.checkpoint() is False
    assert w.stats.checkpoint_failures == 2 and w.checkpointer.generation == 0 and w.checkpointer.dirty()
    assert [r.getMessage() for r in caplog.records] == ["checkpoint failed: disk full"] * 2


def test_restore_brings_back_positions_the_checkpoint_schedule_and_a_clean_slate(tmp_path):
    from streamrnn_service.server import build_worker as build
    from streamrnn_service.store import Checkpoint, DirectoryStore

    config = load(environ={}, overrides={"checkpoint.every_events": "4", "checkpoint.background": "false"})
    assert build(config, DirectoryStore(tmp_path / "empty")).checkpointer.restore() is False
    first = build(config, DirectoryStore(tmp_path))
    for i in range(6):
        first.checkpointer.position("in.jsonl").lines += 1
        first.checkpointer.position("in.jsonl").bytes += 10
        handle(first, {"key": "a", "value": float(i)})
    assert first.checkpointer.checkpoint() and first.checkpointer.generation == 2  # one at 4 events, this one at 6

    again = build(config, DirectoryStore(tmp_path))
    assert again.checkpointer.restore() and again.checkpointer.generation == 2 and again.events == 6
    assert {k: p.as_dict() for k, p in again.checkpointer.positions.items()} == {"in.jsonl": {"lines": 6, "bytes": 60}}
    assert not again.checkpointer.dirty()
    for i in range(3):
        handle(again, {"key": "a", "value": 1.0})
    assert again.checkpointer.generation == 2  # the next one is due 4 events after the restored one ...
    handle(again, {"key": "a", "value": 1.0})
    assert again.checkpointer.generation == 3  # ... at event 10

    # a checkpoint that has no positions or creation time (an older writer) restores with none
    old = DirectoryStore(tmp_path / "old")
    old.commit(Checkpoint(5, {"events": 0}))
    w = build(config, old)
    assert w.checkpointer.restore() and w.checkpointer.positions == {} and w.stats.checkpoint_last_success == 0.0 and w.checkpointer.generation == 5


def test_a_checkpoint_is_timed_and_logged(caplog):
    import time

    config = load(environ={}, overrides={"checkpoint.every_events": "0"})
    w = build_worker(config, _CountingStore())
    for i in range(3):
        handle(w, {"key": "a", "value": float(i)})
    with caplog.at_level("DEBUG", logger="streamrnn.checkpointer"):
        before = time.perf_counter()
        assert w.checkpointer.checkpoint()
        elapsed = time.perf_counter() - before
    assert sum(w.stats.checkpoint.counts) == 1 and 0.0 <= w.stats.checkpoint.sum <= elapsed
    assert [r.getMessage() for r in caplog.records] == ["checkpoint 1 written: 3 events, 1 live keys"]


class Clock:
    """A clock the test moves."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _with_clock(store, clock, **settings):
    """A worker whose checkpointer (foreground, as configured otherwise) reads ``clock``."""
    config = load(environ={}, overrides={"checkpoint.background": "false", **settings})
    w = build_worker(config, store)
    c = w.checkpointer
    w.checkpointer = Checkpointer(w.table, w.stats, c.every_events, c.every_seconds, clock=clock)
    return w


def _tick_at(w, clock, now):
    clock.now = now
    w.checkpointer.tick()


def test_a_tick_writes_a_checkpoint_every_every_seconds_when_something_moved():
    store, clock = _CountingStore(), Clock()
    w = _with_clock(store, clock, **{"checkpoint.every_events": "0", "checkpoint.every_seconds": "10"})
    handle(w, {"key": "a", "value": 1.0})
    _tick_at(w, clock, 9.9)
    assert store.commits == []
    _tick_at(w, clock, 10.0)
    assert store.commits == [1]
    _tick_at(w, clock, 25.0)  # nothing moved: nothing written, and the count starts again
    assert store.commits == [1]
    handle(w, {"key": "a", "value": 2.0})
    _tick_at(w, clock, 34.9)
    assert store.commits == [1]
    _tick_at(w, clock, 35.0)
    assert store.commits == [1, 2] and w.checkpointer.generation == 2


def test_any_checkpoint_starts_both_counts_again():
    """One checkpointer, two triggers: a checkpoint the events made due puts off the next timed one,
    and a timed one puts off the next the events make due."""
    store, clock = _CountingStore(), Clock()
    w = _with_clock(store, clock, **{"checkpoint.every_events": "3", "checkpoint.every_seconds": "10"})
    clock.now = 5.0
    for i in range(4):
        handle(w, {"key": "a", "value": float(i)})
    assert store.commits == [3]  # at 5 s, by the event count
    _tick_at(w, clock, 14.9)  # 10 s after the start, but not after that checkpoint
    assert store.commits == [3]
    _tick_at(w, clock, 15.0)
    assert store.commits == [3, 4]  # by the time
    for i in range(2):
        handle(w, {"key": "a", "value": float(i)})
    assert store.commits == [3, 4]  # 6 events: the count started again at 4
    handle(w, {"key": "a", "value": 9.0})
    assert store.commits == [3, 4, 7]


def test_the_timer_counts_from_when_serving_begins():
    """Start-up (the kernels' first compilation) may outlast every_seconds: the server starts the timer
    when it begins serving, so the first timed checkpoint does not fall at once."""
    store, clock = _CountingStore(), Clock()
    w = _with_clock(store, clock, **{"checkpoint.every_events": "0", "checkpoint.every_seconds": "10"})
    clock.now = 30.0
    w.checkpointer.start_timer()
    handle(w, {"key": "a", "value": 1.0})
    _tick_at(w, clock, 39.9)
    assert store.commits == []
    _tick_at(w, clock, 40.0)
    assert store.commits == [1]


def test_a_checkpoint_that_fails_before_writing_leaves_its_keys_for_the_next(tmp_path, caplog):
    """A failure before anything is written (the store cannot give its cut; no writer after it): False,
    counted, no new generation, and the key that changed still counts as changed: the next checkpoint
    writes its new state rather than pointing at the one an older generation holds."""
    from streamrnn_service.store import DirectoryStore

    class NoCut(DirectoryStore):
        broken = False

        def cut(self):
            if self.broken:
                raise OSError("store unreachable")
            return super().cut()

    config = load(environ={}, overrides={"checkpoint.every_events": "0", "checkpoint.background": "false"})
    store = NoCut(tmp_path)
    w = build_worker(config, store)
    handle(w, {"key": "a", "value": 1.0})
    handle(w, {"key": "b", "value": 1.0})
    assert w.checkpointer.checkpoint() and w.checkpointer.generation == 1
    handle(w, {"key": "a", "value": 2.0})
    store.broken = True
    with caplog.at_level("ERROR", logger="streamrnn.checkpointer"):
        assert w.checkpointer.checkpoint() is False and w.checkpointer.checkpoint(background=True) is False
    assert [r.getMessage() for r in caplog.records] == ["checkpoint failed: store unreachable"] * 2
    assert w.stats.checkpoint_failures == 2 and w.checkpointer.generation == 1 and w.checkpointer.dirty()
    store.broken = False
    real = w.checkpointer._write

    def writer_gone(*args):  # after the cut: the keys it took count as changed again
        raise RuntimeError("no writer")

    w.checkpointer._write = writer_gone
    assert w.checkpointer.checkpoint() is False and w.stats.checkpoint_failures == 3
    w.checkpointer._write = real
    assert w.checkpointer.checkpoint() and w.checkpointer.generation == 2
    again = build_worker(config, DirectoryStore(tmp_path))
    assert again.checkpointer.restore() and again.table.digest() == w.table.digest()
    assert handle(again, {"command": "status", "key": "a"})["step"] == 2


class _SlowStore(_CountingStore):
    def commit(self, checkpoint):
        time.sleep(0.3)
        super().commit(checkpoint)


def test_the_defaults_make_no_checkpoint():
    table, stats, clock = worker().table, Stats(), Clock()
    c = Checkpointer(table, stats, clock=clock)
    w = Worker(table, stats, c)
    for i in range(5):
        handle(w, {"key": "a", "value": float(i)})
        _tick_at(w, clock, 1e6 * (i + 1))
    assert c.generation == 0 and c.dirty()


def test_settle_is_true_unless_a_write_failed_and_a_timed_checkpoint_goes_in_the_background():
    store, clock = _SlowStore(), Clock()
    config = load(environ={}, overrides={"checkpoint.every_events": "0", "checkpoint.every_seconds": "10"})
    w = build_worker(config, store)
    w.checkpointer = c = Checkpointer(w.table, w.stats, 0, 10.0, background=True, fork=False, clock=clock)
    assert c.settle() is True and c.settle(wait=True) is True  # nothing written yet: nothing failed
    handle(w, {"key": "a", "value": 1.0})
    started = time.perf_counter()
    _tick_at(w, clock, 10.0)
    assert time.perf_counter() - started < 0.25 and c.generation == 0  # the tick did not wait for the write
    assert c.settle() is True  # still being written: no failure to report
    assert c.settle(wait=True) is True and c.generation == 1 and store.commits == [1]
    c.close()


def test_a_timed_checkpoint_counts_from_a_restored_one(tmp_path):
    from streamrnn_service.store import DirectoryStore

    config = load(environ={}, overrides={"checkpoint.every_events": "0", "checkpoint.background": "false"})
    first = build_worker(config, DirectoryStore(tmp_path))
    handle(first, {"key": "a", "value": 1.0})
    assert first.checkpointer.checkpoint()
    clock = Clock()
    again = _with_clock(DirectoryStore(tmp_path), clock, **{"checkpoint.every_events": "0",
                                                             "checkpoint.every_seconds": "10"})
    clock.now = 100.0
    assert again.checkpointer.restore() and again.checkpointer.generation == 1
    handle(again, {"key": "a", "value": 2.0})
    _tick_at(again, clock, 109.9)
    assert again.checkpointer.generation == 1
    _tick_at(again, clock, 110.0)
    assert again.checkpointer.generation == 2


def test_a_hold_puts_off_every_checkpoint_until_it_is_released():
    """A source holds the checkpoints while a batch's replies go out (``service.redis_source``): neither the
    event count, nor the timer, nor an explicit request writes one before ``release``."""
    store, clock = _CountingStore(), Clock()
    w = _with_clock(store, clock, **{"checkpoint.every_events": "2", "checkpoint.every_seconds": "10"})
    w.checkpointer.hold()
    handle(w, {"key": "a", "value": 1.0})
    handle(w, {"key": "a", "value": 2.0})  # the count falls due
    _tick_at(w, clock, 11.0)  # and the timer
    assert w.checkpointer.checkpoint() and store.commits == []  # asked for: put off as well
    w.checkpointer.release()
    assert store.commits == [2] and not w.checkpointer.dirty()  # one checkpoint, of both events
    w.checkpointer.release()  # nothing more fell due
    assert store.commits == [2]


def test_a_checkpoint_the_guard_refuses_writes_nothing_and_is_counted_and_logged(caplog):
    """A partition whose lease was taken (``guard`` says False): no checkpoint, False, counted as refused and
    as a failure, logged; once the guard agrees again the next one writes."""
    store = _CountingStore()
    w = build_worker(load(environ={}, overrides={"checkpoint.every_events": "0"}), store)
    owned = [False]
    w.checkpointer.guard = lambda: owned[0]
    handle(w, {"key": "a", "value": 1.0})
    with caplog.at_level("ERROR", logger="streamrnn.checkpointer"):
        assert w.checkpointer.checkpoint() is False and w.checkpointer.checkpoint(background=True) is False
    assert [r.getMessage() for r in caplog.records] == [
        "checkpoint refused: this worker no longer owns the partition (its lease was taken)"] * 2
    assert w.checkpointer.refused == 2 and w.stats.checkpoint_failures == 2
    assert store.commits == [] and w.checkpointer.generation == 0 and w.checkpointer.dirty()
    owned[0] = True
    assert w.checkpointer.checkpoint() and store.commits == [1] and w.checkpointer.refused == 2


def test_a_log_sources_position_comes_back_from_its_checkpoint_with_its_entry(tmp_path):
    """A Redis stream's position (``Position.entry`` and ``entries``) is written with the checkpoint and read
    back by ``restore``; a plain source's has neither."""
    from streamrnn_service.store import DirectoryStore

    config = load(environ={}, overrides={"checkpoint.every_events": "0"})
    w = build_worker(config, DirectoryStore(tmp_path))
    handle(w, {"key": "a", "value": 1.0})
    log_source, plain = w.checkpointer.position("redis:p0"), w.checkpointer.position("stdin")
    log_source.lines, log_source.bytes, log_source.entry, log_source.entries = 3, 120, "1700000000000-2", 3
    plain.lines, plain.bytes = 1, 40
    assert log_source.as_dict() == {"lines": 3, "bytes": 120, "entry": "1700000000000-2", "entries": 3}
    assert plain.as_dict() == {"lines": 1, "bytes": 40}
    assert w.checkpointer.checkpoint()
    again = build_worker(config, DirectoryStore(tmp_path))
    assert again.checkpointer.restore()
    back = again.checkpointer.positions
    assert (back["redis:p0"].lines, back["redis:p0"].bytes, back["redis:p0"].entry, back["redis:p0"].entries) == \
        (3, 120, "1700000000000-2", 3)
    assert (back["stdin"].lines, back["stdin"].bytes, back["stdin"].entry, back["stdin"].entries) == (1, 40, None, 0)
