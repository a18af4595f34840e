"""Supervised keys as rows of a RegressorPool (service.pooled, and the worker's batches): the same replies,
counts, digests and checkpoints as keys held as objects, whether events are stepped in batches or one by
one, through bad lines, odd feature values, evictions, restores and checkpoints falling due mid-input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamrnn import kernels
from streamrnn.state import StateError
from streamrnn_service.checkpointer import Position
from streamrnn_service.config import load
from streamrnn_service.names import ModelTemplate
from streamrnn_service.pooled import PooledStream
from streamrnn_service.server import build_worker
from streamrnn_service.store import DirectoryStore, MemoryStore

pytestmark = pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed")
BPTT = {"model.learner": "bptt", "model.units": "6"}


@pytest.fixture(autouse=True)
def kernels_on(monkeypatch):
    """The compiled path, whatever the environment (CI runs the suite with STREAMRNN_KERNELS=0 too)."""
    monkeypatch.setenv(kernels.ENV, "1")


def make(store=None, objects=False, monkeypatch=None, **settings):
    config = load(environ={}, overrides={"checkpoint.enabled": "false", **BPTT, **settings})
    template = ModelTemplate(config.model, config.forecast)
    if objects:  # keys as SupervisedStream objects (on the kernel path): the reference
        template._pools = _NoPools()
    return build_worker(config, store if store is not None else MemoryStore(), template=template)


class _NoPools(dict):
    def __contains__(self, n):
        return True

    def __getitem__(self, n):
        return None


def rows_in_use(worker) -> int:
    """Rows in use over the template's pools (one per width of the keys' features)."""
    return sum(pool.size for pool in worker.table.template._pools.values() if pool is not None)


def lines(events) -> list:
    out = []
    for e in events:
        line = e if isinstance(e, bytes) else json.dumps(e).encode()
        out.append((line, len(line) + 1))
    return out


def mixed_events(n: int, keys: int, seed: int = 0) -> list:
    """Supervised events over many keys, with the lines a daemon meets besides: no target, y as a list, int
    and None features (the second read on the row's objects), unknown features, wrong widths, a
    forecasting event for a supervised key, commands and broken JSON."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        key = f"k{int(rng.integers(0, keys))}"
        x = {"a": float(rng.normal()), "b": float(rng.normal() * 10), "c": float(rng.uniform())}
        event = {"id": i, "key": key, "x": x, "y": float(np.sin(x["a"]) + 0.1 * x["b"])}
        roll = rng.random()
        if roll < 0.08:
            del event["y"]
        elif roll < 0.12:
            event["y"] = [event["y"]]
        elif roll < 0.15:
            x["c"] = int(rng.integers(-3, 3))
        elif roll < 0.17:
            x["b"] = None
        elif roll < 0.19:
            x["d"] = 1.0
        elif roll < 0.20:
            event["y"] = [1.0, 2.0]
        elif roll < 0.21:
            event = {"id": i, "key": key, "value": 1.0}
        elif roll < 0.22:
            event = {"id": i, "command": "status", "key": key}
        elif roll < 0.23:
            event = b'{"x": {"a": 1.0}, "y": '
        elif roll < 0.24:  # a feature past what a row reads as it is: taken on the row's objects, written back
            x["a"] = float(rng.choice([-1.0, 1.0])) * 1e150
        elif roll < 0.25:  # a wild target: the error is bounded (counted in ``bounded``)
            event["y"] = float(rng.choice([-1.0, 1.0])) * 1e150
        if isinstance(event, dict) and i % 5 == 1:  # ids as the protocol has them: ints, strings, none
            event["id"] = f'e-{i} "ü"'
        elif isinstance(event, dict) and i % 5 == 2:
            del event["id"]
        out.append(event)
    return out


def run(worker, events, chunk=250, position=None, raw=False) -> list:
    """The worker's replies to ``events``, parsed (with ``raw``: the lines as written)."""
    replies = []
    for at in range(0, len(events), chunk):
        text = worker.handle_lines(lines(events[at: at + chunk]), position)
        replies += text.decode().splitlines() if raw else [json.loads(r) for r in text.decode().splitlines()]
    return replies


def test_batches_answer_as_objects_do_event_by_event(monkeypatch):
    """The same replies, state, counts and input position, and the events of distinct keys in a row are
    stepped together (up to ``streams.batch``), each batch one that ``learn`` would take as it is: the worker
    calls ``learn_checked``, which checks nothing."""
    from streamrnn.kernels.regressor_pool import RegressorPool

    stepped = []  # events per successful pool call of more than one
    learn_checked = RegressorPool.learn_checked

    def counted(self, rows, U, Y):
        checked = self._events(rows, U, Y)  # raises on what learn refuses
        for given, made in zip((rows, U, Y), checked):
            assert given.dtype == made.dtype and given.shape == made.shape and given.flags.c_contiguous
            np.testing.assert_array_equal(given, made)
        out = learn_checked(self, rows, U, Y)
        if len(rows) > 1:
            stepped.append(len(rows))
        return out

    monkeypatch.setattr(RegressorPool, "learn_checked", counted)
    events = mixed_events(1500, keys=40)
    objects, at = make(objects=True), Position()
    want = run(objects, events, position=at, raw=True)
    assert stepped == []
    for batch in ("64", "1", "200"):
        pooled, position = make(**{"streams.batch": batch}), Position()
        assert run(pooled, events, position=position, raw=True) == want  # byte for byte
        assert position.as_dict() == at.as_dict()
        assert (sum(stepped) > 600 and max(stepped) <= int(batch)) if batch != "1" else not stepped
        stepped.clear()
        assert pooled.table.digest() == objects.table.digest()
        assert pooled.table.totals() == objects.table.totals()
        assert pooled.stats.outcomes == objects.stats.outcomes
        assert list(pooled.table.live) == list(objects.table.live)  # the LRU order: every event touched its key
        assert sum(pooled.stats.latency.counts) == sum(objects.stats.latency.counts)  # every event's latency
        assert [getattr(pooled.stats, a) for a in ("loss_sum", "loss_count", "last_loss", "last_prediction", "last_target")] \
            == [getattr(objects.stats, a) for a in ("loss_sum", "loss_count", "last_loss", "last_prediction", "last_target")]
        assert all(type(s) is PooledStream for s in pooled.table.live.values())
        assert rows_in_use(pooled) == len(pooled.table.live)
        bounded = {key: s.bounded() for key, s in pooled.table.live.items()}
        assert bounded == {key: s.bounded() for key, s in objects.table.live.items()}
        assert {s.layout() for s in pooled.table.live.values()} == {s.layout() for s in objects.table.live.values()}
    assert sum(bounded.values()) > 5
    assert not any(type(s) is PooledStream for s in objects.table.live.values())
    want = [json.loads(r) for r in want]
    assert sum("error" in r for r in want) > 50 and sum("prediction" in r for r in want) > 1200
    assert {type(r.get("id")) for r in want} == {int, str, type(None)}


def test_evictions_restores_and_checkpoints_due_mid_input_change_nothing(tmp_path):
    """Few live keys (new keys evict, old ones are read back) and a checkpoint every 37 events: the batches
    are cut before each, and the rows of evicted keys are freed."""
    events = mixed_events(800, keys=30, seed=1)
    settings = {"streams.max_keys": "8", "checkpoint.enabled": "true", "checkpoint.every_events": "37",
                "checkpoint.every_seconds": "0", "checkpoint.background": "false"}
    objects = make(DirectoryStore(tmp_path / "objects"), objects=True, **settings)
    pooled = make(DirectoryStore(tmp_path / "pooled"), **settings)
    assert run(pooled, events) == run(objects, events)
    assert pooled.table.evictions > 100 and pooled.table.restores > 100
    assert pooled.checkpointer.generation == objects.checkpointer.generation > 15
    assert pooled.table.digest() == objects.table.digest()
    assert rows_in_use(pooled) == len(pooled.table.live) <= 8


def checkpoint_marks(worker) -> list:
    """The events counted at each of the worker's checkpoints from now on."""
    marks, checkpointer = [], worker.checkpointer
    checkpoint = checkpointer.checkpoint
    checkpointer.checkpoint = lambda *a, **k: marks.append(checkpointer.events) or checkpoint(*a, **k)
    return marks


def test_a_batch_ends_where_a_checkpoint_falls_due(tmp_path):
    """With every key live, runs of distinct keys are long; a checkpoint every 37 events still covers exactly
    37 events, as applying them one by one does: the batch is cut short of it (``Checkpointer.room``)."""
    events = mixed_events(600, keys=60, seed=3)
    settings = {"checkpoint.enabled": "true", "checkpoint.every_events": "37", "checkpoint.every_seconds": "0",
                "checkpoint.background": "false"}
    objects = make(DirectoryStore(tmp_path / "objects"), objects=True, **settings)
    pooled = make(DirectoryStore(tmp_path / "pooled"), **settings)
    want, got = checkpoint_marks(objects), checkpoint_marks(pooled)
    assert run(pooled, events) == run(objects, events)
    assert got == want == [37 * (i + 1) for i in range(len(want))] and len(want) > 10
    assert pooled.table.digest() == objects.table.digest()


def test_a_restart_continues_bit_for_bit(tmp_path):
    events = mixed_events(600, keys=25, seed=2)
    settings = {"checkpoint.enabled": "true", "checkpoint.every_events": "0"}
    straight = make(**settings)
    want = run(straight, events)
    first = make(DirectoryStore(tmp_path), **settings)
    got = run(first, events[:310])
    assert first.checkpointer.checkpoint()
    again = make(DirectoryStore(tmp_path), **settings)
    assert again.checkpointer.restore()
    assert all(type(s) is PooledStream for s in again.table.live.values())
    got += run(again, events[310:])
    for reply in got + want:  # a status reply says which checkpoint generation it stands on
        reply.pop("generation", None)
    assert got == want
    assert again.table.digest() == straight.table.digest()


def test_a_new_key_refused_or_failing_leaves_no_row():
    w = make(**{"streams.max_key_bytes": "1024"})
    replies = run(w, [{"key": f"k{i}", "x": {"a": 1.0}, "y": 1.0} for i in range(5)])
    assert {r["error"]["code"] for r in replies} == {"too_large"}
    assert len(w.table) == 0 and w.table.template.pool(1).size == 0


def test_a_state_that_does_not_fit_takes_no_row():
    w = make()
    run(w, [{"key": "k", "x": {"a": 1.0, "b": 2.0}, "y": 1.0}])
    arrays, header = w.table.live["k"].snapshot()
    pool = w.table.template.pool(2)
    del arrays["out0.linear.w"]
    with pytest.raises(StateError, match="linear|w"):
        PooledStream.restore_into(pool, arrays, header)
    assert pool.size == 1


def test_a_forked_checkpoint_writes_the_rows_of_the_instant_it_was_forked(tmp_path):
    """The child snapshots the rows as they were at the fork while the parent's rows move on (a pooled key's
    snapshot copies what the pool's reused objects read, so no key's arrays alias another's)."""
    from streamrnn_service import forked

    from .test_service_forked import SlowStore

    settings = {"checkpoint.enabled": "true", "checkpoint.every_events": "0"}
    store = SlowStore(tmp_path)
    w = make(store, **settings)
    events = mixed_events(400, keys=20, seed=3)
    run(w, events[:250])
    digest = w.table.digest()
    store.delay = 0.3
    assert w.checkpointer.checkpoint(background=True)
    writing = w.checkpointer._writing[0]
    assert isinstance(writing, forked.ForkedCommit) and not writing.done()
    run(w, events[250:])  # while the child writes
    w.checkpointer.close()
    assert w.checkpointer.generation == 1 and w.stats.checkpoint_failures == 0
    again = make(DirectoryStore(tmp_path), **settings)
    assert again.checkpointer.restore() and again.table.digest() == digest
    assert all(type(s) is PooledStream for s in again.table.live.values()) and len(again.table.live) == 20


def test_a_pooled_keys_networks_are_its_own_and_its_row_is_freed_once():
    """``networks`` hands out objects of the key's own (a later view of another key does not change them), and
    a key released twice frees its row once."""
    worker = make()
    run(worker, [{"key": k, "x": {"a": float(i), "b": 1.0, "c": -float(i)}, "y": float(i % 3) + (k == "q")}
                 for i in range(30) for k in ("p", "q")])
    p, q = worker.table.live["p"], worker.table.live["q"]
    nets = p.networks()
    held = [{name: a.copy() for name, a in net.network.params().items()} for net in nets]
    assert q.weights() != p.weights()  # the keys differ
    q.health()  # a view of q: the pool's viewing pair now holds q's row
    for net, before in zip(nets, held):
        for name, a in net.network.params().items():
            np.testing.assert_array_equal(a, before[name])
    pool, size = p.pool, p.pool.size
    p.release()
    p.release()
    assert pool.size == size - 1 and p.row is None


def test_plain_events_and_reads_never_make_a_keys_objects(monkeypatch):
    """The row path is taken wherever it can be: events whose features are plain numbers step the row (one by
    one or in batches), and health, weights and snapshots read the pool's viewing pair; only an event the
    row does not take makes objects of the key's own (``RegressorPool.get``, about 100 us)."""
    from streamrnn.kernels.regressor_pool import RegressorPool

    made = []
    get = RegressorPool.get
    monkeypatch.setattr(RegressorPool, "get", lambda self, r, names=None: made.append(r) or get(self, r, names))
    worker = make()
    one_key = [{"key": "p", "x": {"a": float(i), "b": 1.0, "c": 0.5}, "y": 0.1 * i} for i in range(20)]
    many_keys = [{"key": f"k{i % 7}", "x": {"a": float(i), "b": -1.0, "c": 0.5}, "y": 0.2} for i in range(70)]
    assert all("prediction" in r for r in run(worker, one_key + many_keys))
    for stream in worker.table.live.values():
        stream.health(), stream.weights(), stream.snapshot()
    assert made == []
    run(worker, [{"key": "p", "x": {"a": 1e150, "b": 1.0, "c": 0.5}, "y": 0.1}])
    assert made == [worker.table.live["p"].row]


class _EvenKeys:
    """A partition's ``owns``: the keys k0, k2, k4, ..."""

    def __call__(self, key: str) -> bool:
        return int(key[1:]) % 2 == 0

    def refusal(self, key: str) -> str:
        return f"key {key!r} is another partition's"


def test_a_batch_stops_at_a_key_of_another_partition_as_events_one_by_one_do():
    """A partition's worker steps together only its own keys' events: another partition's is refused in its
    place in the input, with the same replies, state and counts as one by one."""
    events = [e for e in mixed_events(800, keys=12, seed=3) if isinstance(e, dict) and "command" not in e]
    reference, batched = make(**{"streams.batch": "1"}), make()
    for w in (reference, batched):
        w.owns = _EvenKeys()
    want = run(reference, events, raw=True)
    assert run(batched, events, raw=True) == want
    refused = [json.loads(r) for r in want if "wrong_partition" in r]
    assert len(refused) > 100 and all(int(r["error"]["message"].split("'")[1][1:]) % 2 for r in refused)
    assert sorted(batched.table.live) == sorted(reference.table.live) and all(int(k[1:]) % 2 == 0 for k in batched.table.live)
    assert batched.table.digest() == reference.table.digest()
    assert batched.stats.rejected == reference.stats.rejected and batched.stats.outcomes == reference.stats.outcomes
