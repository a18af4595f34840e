"""service.forked: a checkpoint written by a forked child, recorded by the parent only when the child
succeeded, never left writing after its parent is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from streamrnn_service import forked, packing
from streamrnn_service.checkpointer import Checkpointer
from streamrnn_service.config import load
from streamrnn_service.server import build_worker
from streamrnn_service.store import DirectoryStore

from .test_service_support import supervised_events

pytestmark = pytest.mark.skipif(not forked.AVAILABLE, reason="forked checkpoints need fork and Linux")

REPO = Path(__file__).resolve().parents[1]


def worker(root, keep: int = 3, **overrides):
    config = load(environ={}, overrides={"checkpoint.dir": str(root), "checkpoint.every_events": "0",
                                         **overrides})
    return build_worker(config, DirectoryStore(root, keep=keep))


def feed(w, events):
    for event in events:
        line = json.dumps(event).encode()
        w.handle(line, len(line) + 1, w.checkpointer.position("test"))


class SlowStore(DirectoryStore):
    """A store whose files take ``delay`` seconds more to write (in the child: its copy of this object)."""

    delay = 0.0

    def write(self, checkpoint, where):
        time.sleep(self.delay)
        super().write(checkpoint, where)


def slow_worker(root, **overrides):
    """A worker on a ``SlowStore`` (and the store), checkpoints by count only if ``overrides`` says so, and
    no pause after a checkpoint unless it says so (``checkpoint.max_share``: the deferral alone)."""
    store = SlowStore(root)
    config = load(environ={}, overrides={"checkpoint.dir": str(root), "checkpoint.every_events": "0",
                                         "checkpoint.max_share": "1.0", **overrides})
    return build_worker(config, store), store


def deferred(root, delay: float):
    """A worker whose second checkpoint fell due while the first one's child (``delay`` s) was writing."""
    w, store = slow_worker(root)
    feed(w, supervised_events(4))
    store.delay = delay
    assert w.checkpointer.checkpoint(background=True)
    feed(w, supervised_events(2, seed=1))
    assert w.checkpointer.checkpoint(background=True) and w.checkpointer._deferred  # due while the child writes: deferred
    return w, store


def test_the_child_copies_the_states_of_the_instant_it_was_forked(tmp_path):
    """Events after the fork change the parent's keys, not what the child writes."""
    w, store = slow_worker(tmp_path)
    feed(w, supervised_events(30, keys=("a", "b")))
    digest = w.table.digest()
    store.delay = 0.3
    started = time.perf_counter()
    assert w.checkpointer.checkpoint(background=True)
    assert time.perf_counter() - started < 0.25  # the parent did not wait for the write
    writing = w.checkpointer._writing[0]
    assert isinstance(writing, forked.ForkedCommit) and not writing.done()
    feed(w, supervised_events(10, keys=("a", "b"), seed=3))  # while the child writes
    assert w.checkpointer.generation == 0  # nothing recorded before the child has exited
    w.checkpointer.close()
    assert w.checkpointer.generation == 1 and w.stats.checkpoint_failures == 0
    again = worker(tmp_path)
    assert again.checkpointer.restore() and again.events == 30 and again.table.digest() == digest


def test_a_child_that_dies_is_a_failed_checkpoint_whose_keys_the_next_one_writes(tmp_path):
    class Crashing(DirectoryStore):
        def write(self, checkpoint, where):
            os.kill(os.getpid(), signal.SIGKILL)

    store = Crashing(tmp_path)
    config = load(environ={}, overrides={"checkpoint.dir": str(tmp_path), "checkpoint.every_events": "0"})
    w = build_worker(config, store)
    feed(w, supervised_events(12, keys=("a", "b", "c")))
    assert w.checkpointer.checkpoint(background=True)
    assert not w.checkpointer.settle(wait=True)
    assert w.stats.checkpoint_failures == 1 and w.checkpointer.generation == 0 and w.checkpointer.dirty()
    assert not store.generations()  # the parent recorded nothing, and no manifest was renamed into place
    Crashing.write = DirectoryStore.write  # the disk is back: the next checkpoint writes every changed key
    assert w.checkpointer.checkpoint(background=True) and w.checkpointer.settle(wait=True)
    again = worker(tmp_path)
    assert again.checkpointer.restore() and again.events == 12 and again.table.digest() == w.table.digest()


def test_an_error_in_the_child_is_reported_by_the_parent_with_its_message(tmp_path, caplog):
    class Full(DirectoryStore):
        def write(self, checkpoint, where):
            raise OSError(28, "No space left on device")

    config = load(environ={}, overrides={"checkpoint.dir": str(tmp_path), "checkpoint.every_events": "0"})
    w = build_worker(config, Full(tmp_path))
    feed(w, supervised_events(3))
    assert w.checkpointer.checkpoint(background=True) and not w.checkpointer.settle(wait=True)
    assert "No space left on device" in caplog.text and w.stats.checkpoint_failures == 1


def test_the_child_dies_with_its_parent(tmp_path):
    """kill -9 of the daemon takes its checkpoint writer with it: no write after the daemon is gone."""
    script = textwrap.dedent(f"""
        import json, sys, time
        sys.path.insert(0, {str(REPO)!r})
        sys.path.insert(0, {str(REPO / 'tests')!r})
        from streamrnn_service.config import load
        from streamrnn_service.server import build_worker
        from streamrnn_service.store import DirectoryStore
        from test_service_support import supervised_events

        class Slow(DirectoryStore):
            def write(self, checkpoint, where):
                time.sleep(30)

        config = load(environ={{}}, overrides={{"checkpoint.dir": {str(tmp_path)!r}, "checkpoint.every_events": "0"}})
        w = build_worker(config, Slow({str(tmp_path)!r}))
        for event in supervised_events(3):
            line = json.dumps(event).encode()
            w.handle(line, len(line) + 1)
        w.checkpointer.checkpoint(background=True)
        print(w.checkpointer._writing[0].pid, flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=tmp_path)
    try:
        child = int(parent.stdout.readline())
        os.kill(child, 0)  # the writer is running
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(child, signal.SIGKILL)
            pytest.fail("the checkpoint writer outlived its parent")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    assert not list(tmp_path.glob("gen-*.npz"))


def test_without_fork_the_writer_thread_writes(tmp_path):
    w = worker(tmp_path, **{"checkpoint.fork": "false"})
    feed(w, supervised_events(5))
    assert w.checkpointer.checkpoint(background=True)
    assert not isinstance(w.checkpointer._writing[0], forked.ForkedCommit)
    w.checkpointer.close()
    assert w.checkpointer.generation == 1


def test_the_parent_records_the_childs_commit_so_the_next_one_is_incremental(tmp_path):
    """What the child wrote becomes the store's account in the parent: the next checkpoint writes only
    the key that changed, and generations past ``keep`` are deleted."""
    from .test_service_store import _shard_keys

    w = worker(tmp_path, keep=2)
    feed(w, supervised_events(9, keys=("a", "b", "c")))
    assert w.checkpointer.checkpoint(background=True) and w.checkpointer.settle(wait=True)
    assert set(_shard_keys(w.table.store._shard(1))) == {"a", "b", "c"}
    for generation in (2, 3):
        feed(w, supervised_events(1, keys=("a",), seed=generation))
        assert w.checkpointer.checkpoint(background=True) and w.checkpointer.settle(wait=True)
        assert _shard_keys(w.table.store._shard(generation)) == ["a"]
    assert w.table.store.generations() == [3, 2]
    again = worker(tmp_path)
    assert again.checkpointer.restore() and again.events == 11 and again.table.digest() == w.table.digest()


def test_a_checkpoint_due_while_the_child_writes_begins_after_it_and_events_never_wait(tmp_path):
    w, store = slow_worker(tmp_path, **{"checkpoint.every_events": "5"})
    store.delay = 0.4
    events = supervised_events(40, keys=("a", "b"))
    started = time.perf_counter()
    feed(w, events[:12])  # due at 5 (the child starts), and at 10 (deferred while it writes)
    assert time.perf_counter() - started < 0.3 and w.checkpointer.generation == 0
    first = w.checkpointer._writing[0]
    while not first.done():
        time.sleep(0.01)
    feed(w, events[12:13])  # the first event after the child exited takes in its outcome, starts the next
    assert w.checkpointer.generation == 1 and w.checkpointer._writing[0] is not first and w.checkpointer._writing[2][0] == 13
    w.checkpointer.close()
    assert w.checkpointer.generation == 2
    again = worker(tmp_path)
    assert again.checkpointer.restore() and again.events == 13


class Clock:
    """The checkpointer's clock, moved by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_after_a_checkpoint_that_took_t_seconds_the_next_due_waits_until_t_after_it_ended(tmp_path):
    """max_share 0.5 (the default): a checkpoint that falls due by count within the pause after the one before
    (as long as that one took) waits, while events go on uncut; the first event after the pause begins it."""
    w, store = slow_worker(tmp_path, **{"checkpoint.every_events": "5", "checkpoint.max_share": "0.5"})
    clock = w.checkpointer.clock = Clock()
    store.delay = 0.3
    events = supervised_events(40, keys=("a", "b"))
    feed(w, events[:5])  # the first checkpoint: its child takes at least 0.3 s
    first = w.checkpointer._writing[0]
    while not first.done():
        time.sleep(0.01)
    store.delay = 0.0
    feed(w, events[5:10])  # due at 10: takes in the first, which began a pause of its own length
    took = w.checkpointer.stats.checkpoint.sum
    assert took >= 0.3 and w.checkpointer.generation == 1
    assert w.checkpointer._writing is None and w.checkpointer._deferred and w.checkpointer.room() is None
    clock.now += 0.9 * took
    feed(w, events[10:14])  # still in the pause: events are applied, nothing begins
    assert w.checkpointer._writing is None and w.checkpointer.events == 14
    clock.now += 0.2 * took
    feed(w, events[14:15])  # the pause is over: the deferred checkpoint begins, covering all 15
    assert w.checkpointer._writing is not None and w.checkpointer._writing[2][0] == 15 and not w.checkpointer._deferred
    w.checkpointer.close()
    assert w.checkpointer.generation == 2 and worker(tmp_path).checkpointer.restore()


@pytest.mark.parametrize("share, pause", [(0.25, 3.0), (1.0, 0.0)])
def test_the_pause_is_the_checkpoints_time_times_one_over_max_share_minus_one_and_a_tick_ends_it(tmp_path, share,
                                                                                                   pause):
    w, store = slow_worker(tmp_path, **{"checkpoint.max_share": str(share), "checkpoint.every_seconds": "1"})
    clock = w.checkpointer.clock = Clock()
    w.checkpointer.start_timer()
    feed(w, supervised_events(3))
    store.delay = 0.4  # at max_share 0.25, a pause of 3 x 0.4 s or more: past the next tick a second later
    clock.now += 1.0
    w.checkpointer.tick()  # due by time: the child begins
    assert w.checkpointer.settle(wait=True) and w.checkpointer.generation == 1
    took = w.checkpointer.stats.checkpoint.sum
    store.delay = 0.0
    feed(w, supervised_events(2, seed=1))
    clock.now += 1.0  # due by time again, one second after the first began
    w.checkpointer.tick()
    if pause:
        assert w.checkpointer._writing is None and w.checkpointer._deferred
        clock.now += pause * took - 1.0 + 0.05  # one tick past the pause's end: it begins without an event
        w.checkpointer.tick()
    assert w.checkpointer._writing is not None and not w.checkpointer._deferred
    w.checkpointer.close()
    assert w.checkpointer.generation == 2


def test_explicit_checkpoints_and_the_last_one_are_never_paused(tmp_path):
    w, store = slow_worker(tmp_path, **{"checkpoint.max_share": "0.1"})
    feed(w, supervised_events(3))
    store.delay = 0.1
    assert w.checkpointer.checkpoint(background=True) and w.checkpointer.settle(wait=True)
    store.delay = 0.0
    feed(w, supervised_events(2, seed=1))
    assert w.checkpointer.checkpoint(background=True) and w.checkpointer._writing is not None  # asked for: begun
    assert w.checkpointer.settle(wait=True) and w.checkpointer.generation == 2
    feed(w, supervised_events(2, seed=2))
    assert w.checkpointer.checkpoint() and w.checkpointer.generation == 3  # in the foreground, as at shutdown


@pytest.mark.parametrize("share", ["0", "-0.5", "1.5"])
def test_a_max_share_outside_0_to_1_is_refused_naming_it(share, tmp_path):
    with pytest.raises(ValueError, match="max_share"):
        load(environ={}, overrides={"checkpoint.max_share": share})
    w = worker(tmp_path)
    with pytest.raises(ValueError, match=r"max_share must be in \(0, 1\], got "):
        Checkpointer(w.table, w.stats, max_share=float(share))  # the checkpointer's own check, for callers of it
    assert Checkpointer(w.table, w.stats, max_share=1.0).max_share == 1.0


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_failed_fork_leaks_nothing_and_the_writer_thread_writes_instead(tmp_path, monkeypatch, caplog):
    w = worker(tmp_path)
    feed(w, supervised_events(6))

    def no_fork():
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    before = _open_descriptors()
    with caplog.at_level("WARNING", logger="streamrnn.checkpointer"):
        for i in range(5):
            feed(w, supervised_events(1, seed=i))
            assert w.checkpointer.checkpoint(background=True) and w.checkpointer.settle(wait=True)
    assert _open_descriptors() == before and w.checkpointer.generation == 5 and w.stats.checkpoint_failures == 0
    assert [r.getMessage() for r in caplog.records] == [
        "cannot fork a checkpoint writer ([Errno 11] Resource temporarily unavailable); writing it on a thread"] * 5
    w.checkpointer.close()


def test_a_child_reaped_elsewhere_is_a_failure_not_an_exception(tmp_path, monkeypatch):
    """With SIGCHLD ignored (inherited by the daemon) the kernel reaps the child and waitpid fails:
    the checkpoint counts as failed, its keys are written again, and no event sees an exception."""
    w = worker(tmp_path, **{"checkpoint.every_events": "4"})
    feed(w, supervised_events(3))
    real = os.waitpid

    def reaped(pid, options):
        real(pid, 0)
        raise ChildProcessError(10, "No child processes")

    monkeypatch.setattr(os, "waitpid", reaped)
    feed(w, supervised_events(1, seed=1))  # the fourth event: the child is forked
    replies = [json.loads(w.handle(json.dumps(e).encode(), 10)) for e in supervised_events(2, seed=2)]
    assert all("error" not in r for r in replies)
    assert w.checkpointer.settle(wait=True) is False
    assert w.stats.checkpoint_failures == 1 and w.checkpointer.generation == 0 and w.checkpointer.dirty()
    monkeypatch.setattr(os, "waitpid", real)
    assert w.checkpointer.checkpoint()
    again = worker(tmp_path)
    assert again.checkpointer.restore() and again.events == 6


def test_a_deferred_checkpoint_begins_on_the_tick_after_the_child_without_another_event(tmp_path):
    w, store = deferred(tmp_path, 0.3)
    first = w.checkpointer._writing[0]
    while not first.done():
        time.sleep(0.01)
    store.delay = 0.0
    w.checkpointer.settle()  # what the server's tick calls: takes in the first, begins the deferred one
    assert w.checkpointer.generation == 1 and w.checkpointer._writing is not None and w.checkpointer._writing[0] is not first and not w.checkpointer._deferred
    w.checkpointer.close()
    assert w.checkpointer.generation == 2
    again = worker(tmp_path)
    assert again.checkpointer.restore() and again.events == 6


@pytest.mark.parametrize("overrides, events", [
    ({}, "supervised"), ({"model.hybrid": "false"}, "supervised"), ({}, "forecast"),
], ids=["hybrid", "bare", "forecast"])
def test_the_childs_snapshots_without_copies_pack_to_the_same_bytes(tmp_path, overrides, events):
    """What the child packs (the live arrays, copy=False) is byte for byte what a copied snapshot packs."""
    w = worker(tmp_path, **overrides)
    if events == "supervised":
        feed(w, supervised_events(20, keys=("a", "b")))
    else:
        feed(w, [{"key": k, "value": float(np.sin(i / 3.0))} for i in range(20) for k in ("a", "b")])
    for key, stream in w.table.live.items():
        copied, views = stream.snapshot(), stream.snapshot(copy=False)
        (a, ta), (b, tb) = packing.pack([(key, *copied)]), packing.pack([(key, *views)])
        assert ta == tb and np.array_equal(a, b)
        again = stream.snapshot(copy=False)[0]  # the live arrays: the same memory both times
        big = [name for name, v in views[0].items() if v.size > 8]
        shared = [name for name in big if np.shares_memory(views[0][name], again[name])]
        assert len(shared) >= len(big) // 2, f"copy=False copied {sorted(set(big) - set(shared))}"


def test_the_child_takes_each_keys_snapshot_when_the_packer_asks_for_it(tmp_path):
    """The child's view of the keys (``_Snapshots``) takes no snapshot until one is asked for, one per key asked,
    and packs to the bytes of the snapshots taken all at once."""
    w = worker(tmp_path)
    feed(w, supervised_events(12, keys=("a", "b", "c")))
    taken = []

    class Counting:
        def __init__(self, stream):
            self.stream = stream

        def snapshot(self, copy=True):
            taken.append(copy)
            return self.stream.snapshot(copy)

    snapshots = forked._Snapshots({key: Counting(s) for key, s in w.table.live.items()})
    assert len(snapshots) == 3 and list(snapshots) == list(w.table.live) and taken == []
    items = iter(snapshots.items())
    next(items)
    assert taken == [False]  # one key's, from the child's own copy of memory: no copy first
    lazily = packing.pack((key, *snap) for key, snap in snapshots.items())
    at_once = packing.pack([(key, *s.snapshot()) for key, s in w.table.live.items()])
    assert lazily[1] == at_once[1] and np.array_equal(lazily[0], at_once[0])
    assert len(taken) == 1 + 3


def test_a_deferred_checkpoint_survives_a_wait_that_took_in_the_child(tmp_path):
    """A deferral still stands after a blocking settle took in the child: the next tick begins it."""
    w, store = deferred(tmp_path, 0.2)
    assert w.checkpointer.settle(wait=True) and w.checkpointer.generation == 1 and w.checkpointer._writing is None and w.checkpointer._deferred
    store.delay = 0.0
    w.checkpointer.settle()  # the tick
    assert w.checkpointer._writing is not None and not w.checkpointer._deferred
    w.checkpointer.close()
    assert w.checkpointer.generation == 2
