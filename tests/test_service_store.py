"""Checkpoints on disk: atomic generations, the previous good one after a corrupt newest, cleanup."""

from __future__ import annotations

import contextlib
import json

import pytest

from streamrnn_service.config import load
from streamrnn_service.server import build_worker
from streamrnn_service.store import DirectoryStore

from .test_service_support import supervised_events


def _worker(root, max_keys="2"):
    config = load(environ={}, overrides={"checkpoint.dir": str(root), "streams.max_keys": max_keys,
                                         "checkpoint.keep": "2"})
    corrupt = []
    w = build_worker(config, DirectoryStore(root, keep=2, on_corrupt=lambda p, why: corrupt.append(p.name)))
    return w, corrupt


def _feed(w, events):
    for e in events:
        line = json.dumps(e).encode()
        w.handle(line, len(line) + 1, w.checkpointer.position("test"))


def test_restore_equals_the_state_written(tmp_path):
    w, _ = _worker(tmp_path)
    _feed(w, supervised_events(60, keys=("a", "b", "c", "d")))
    assert w.checkpointer.checkpoint() and w.table.stored
    digest = w.table.digest()
    again, corrupt = _worker(tmp_path)
    assert again.checkpointer.restore() and not corrupt
    assert again.table.digest() == digest and again.events == 60
    assert again.checkpointer.positions["test"].lines == 60


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b[:300] + bytes([b[300] ^ 1]) + b[301:],
                                    lambda b: b""])
def test_corrupt_newest_falls_back_to_the_previous(tmp_path, damage):
    w, _ = _worker(tmp_path)
    _feed(w, supervised_events(30, keys=("a", "b", "c")))
    w.checkpointer.checkpoint()
    first = w.table.digest()
    _feed(w, supervised_events(30, keys=("a", "b", "c"), seed=1))
    w.checkpointer.checkpoint()
    newest = sorted(tmp_path.glob("gen-*.npz"))[-1]
    newest.write_bytes(damage(newest.read_bytes()))
    again, corrupt = _worker(tmp_path)
    assert again.checkpointer.restore() and corrupt == [newest.name]
    assert again.table.digest() == first and again.events == 30


def test_a_checkpoint_of_a_newer_version_stops_the_restore_and_is_neither_quarantined_nor_passed_over(tmp_path):
    from streamrnn import state
    from streamrnn_service.store import VERSION, NewerCheckpoint

    w, _ = _worker(tmp_path)
    _feed(w, supervised_events(30, keys=("a", "b", "c")))
    w.checkpointer.checkpoint()
    _feed(w, supervised_events(30, keys=("a", "b", "c"), seed=1))
    w.checkpointer.checkpoint()
    newest = sorted(tmp_path.glob("gen-*.npz"))[-1]
    arrays, header = state.load(newest)
    header.pop("checksum", None)
    state.save(newest, arrays, dict(header, version=VERSION + 1))  # as a later streamrnn would write it
    files = sorted(p.name for p in tmp_path.rglob("*.npz"))
    again, corrupt = _worker(tmp_path)
    with pytest.raises(NewerCheckpoint, match=f"newer streamrnn \\(checkpoint version {VERSION + 1}"):
        again.checkpointer.restore()
    assert corrupt == [] and not again.table.live and again.events == 0
    assert sorted(p.name for p in tmp_path.rglob("*.npz")) == files  # nothing moved, nothing deleted


def test_old_generations_and_unreferenced_key_files_are_removed(tmp_path):
    w, _ = _worker(tmp_path)
    for seed in range(5):
        _feed(w, supervised_events(20, keys=("a", "b", "c", "d"), seed=seed))
        w.checkpointer.checkpoint()
    assert len(list(tmp_path.glob("gen-*.npz"))) == 2
    needed = set()
    for path in tmp_path.glob("gen-*.npz"):
        needed |= set(DirectoryStore(tmp_path)._read(path).stored.values())
    assert {p.name for p in (tmp_path / "keys").glob("*.npz")} == needed
    assert not list(tmp_path.glob(".*.tmp"))


def test_leftover_temporary_files_are_ignored(tmp_path):
    w, _ = _worker(tmp_path)
    _feed(w, supervised_events(10))
    w.checkpointer.checkpoint()
    (tmp_path / ".gen-000000000002.npz.abc.tmp").write_bytes(b"half a file")
    again, corrupt = _worker(tmp_path)
    assert again.checkpointer.restore() and not corrupt and again.checkpointer.generation == 1
    assert not list(tmp_path.glob(".*.tmp"))


# ----- the store's own contract: key files, quarantine, generations, unusable checkpoints -------------


def test_key_files_are_named_by_the_keys_hash_and_events_and_keep_the_key(tmp_path):
    import hashlib

    import numpy as np

    from streamrnn import state

    store = DirectoryStore(tmp_path)
    arrays = {"w": np.arange(3.0)}
    ref = store.put_stream("pump", arrays, {"kind": "forecast", "events": 7})
    assert ref == hashlib.sha256(b"pump").hexdigest()[:32] + "-7.npz"
    assert state.load(store.keys / ref)[1]["key"] == "pump"  # for a person reading the file
    got, header = store.get_stream(ref)
    assert header == {"kind": "forecast", "events": 7} and np.array_equal(got["w"], arrays["w"])
    state.save(store.keys / "older-1.npz", arrays, {"kind": "forecast", "events": 1})  # a writer that kept no key
    assert store.get_stream("older-1.npz")[1] == {"kind": "forecast", "events": 1}


def test_quarantine_moves_each_file_aside_and_says_where(tmp_path):
    import re
    import shutil

    import numpy as np

    from streamrnn_service.store import MemoryStore

    store = DirectoryStore(tmp_path)
    refs = [store.put_stream(key, {"w": np.zeros(2)}, {"events": 1}) for key in ("a", "b")]
    for ref in refs:  # the second finds keys/quarantine/ there already
        where = store.quarantine(ref)
        assert where == str(store.keys / "quarantine" / ref) and (store.keys / "quarantine" / ref).exists()
        assert not (store.keys / ref).exists()
    assert store.quarantine("gone.npz") == str(store.keys / "quarantine" / "gone.npz")  # nothing there, nothing moved
    shutil.rmtree(store.keys)
    with pytest.raises(OSError, match="^" + re.escape(f"checkpoint directory {store.keys} is not there") + "$"):
        store.get_stream(refs[0])

    memory = MemoryStore()
    ref = memory.put_stream("a", {"w": np.zeros(2)}, {"events": 1})
    assert memory.quarantine(ref) == "nowhere (kept in memory only)"
    with pytest.raises(KeyError):  # dropped, not kept in memory for ever
        memory.get_stream(ref)
    assert memory.quarantine(ref) == "nowhere (kept in memory only)"


def test_generations_skip_files_that_are_not_named_by_a_number(tmp_path, monkeypatch):
    from pathlib import Path

    from streamrnn_service.store import Checkpoint

    store = DirectoryStore(tmp_path)
    for generation in (1, 2):
        store.commit(Checkpoint(generation, {"events": generation}))
    (tmp_path / "gen-backup.npz").write_bytes(b"not a generation")
    real = Path.glob
    # the stray file listed first, whatever order the directory gives
    monkeypatch.setattr(Path, "glob", lambda self, pattern: sorted(real(self, pattern), key=lambda p: "backup" not in p.name))
    assert store.generations() == [2, 1]


def test_unusable_checkpoints_are_logged_and_reported_with_why_and_leftovers_swept(tmp_path, caplog):
    from streamrnn_service.store import Checkpoint
    from streamrnn import state

    whys = []
    store = DirectoryStore(tmp_path, keep=5, on_corrupt=lambda path, why: whys.append((path.name, why)))
    store.commit(Checkpoint(1, {"events": 1}))
    base = {"format": "streamrnn-checkpoint", "meta": {"events": 2}, "streams": [], "stored": {}}
    # the right format, a version this code never read (a newer one stops the restore: see the test above)
    state.save(store._path(2), {}, dict(base, version=0, generation=2))
    state.save(store._path(3), {}, {k: v for k, v in dict(base, version=1, generation=3).items() if k != "streams"})
    (store.keys / ".0123.npz.abc.tmp").write_bytes(b"half a key file")
    with caplog.at_level("ERROR", logger="streamrnn.store"):
        assert store.latest().generation == 1
    expected = [("gen-000000000003.npz", f"{store._path(3)} has a malformed header: KeyError('streams')"),
                ("gen-000000000002.npz", f"{store._path(2)} is not a streamrnn-checkpoint file of version 1 or 2")]
    assert whys == expected
    assert [r.getMessage() for r in caplog.records] == [
        f"checkpoint {name} is unusable ({why}); trying the previous one" for name, why in expected]
    assert not list(store.keys.glob(".*.tmp"))


def test_after_a_restart_kept_generations_keep_their_key_files_and_dropped_ones_are_forgotten(tmp_path):
    from streamrnn import state

    config = load(environ={}, overrides={"checkpoint.dir": str(tmp_path), "streams.max_keys": "1",
                                         "checkpoint.keep": "3"})
    w = build_worker(config, DirectoryStore(tmp_path, keep=3))
    for seed in range(4):
        _feed(w, supervised_events(9, keys=("a", "b", "c"), seed=seed))
        assert w.checkpointer.checkpoint()

    def refs():
        return {int(p.stem[4:]): set(DirectoryStore(tmp_path)._read(p).stored.values()) for p in tmp_path.glob("gen-*.npz")}

    store = DirectoryStore(tmp_path, keep=3)  # a new process: it reads the newest generation only
    again = build_worker(config, store)
    assert again.checkpointer.restore() and again.checkpointer.generation == 4
    _feed(again, supervised_events(9, keys=("a", "b", "c"), seed=9))
    assert again.checkpointer.checkpoint()  # generation 5: keeps 5, 4 and 3 (its header read now), drops 2 (never read)
    kept = refs()
    assert set(kept) == {3, 4, 5} and set(store._refs) == {3, 4, 5}
    assert kept[3] - kept[4] - kept[5]  # key files only generation 3 needs ...
    assert {p.name for p in store.keys.glob("*.npz")} == set().union(*kept.values())  # ... are still there

    # an unreadable kept generation keeps nothing alive, and does not stop a checkpoint
    store._path(4).write_bytes(b"garbage")
    store = DirectoryStore(tmp_path, keep=3)
    third = build_worker(config, store)
    assert third.checkpointer.restore() and third.checkpointer.generation == 5
    _feed(third, supervised_events(3, keys=("a",), seed=11))
    assert third.checkpointer.checkpoint() and store.generations() == [6, 5, 4] and store._refs[4] == (set(), set())
    assert state.load(store._path(6))[1]["generation"] == 6


def test_by_default_three_generations_are_kept_and_dropped_ones_are_forgotten(tmp_path):
    from streamrnn_service.store import Checkpoint

    store = DirectoryStore(tmp_path)
    for generation in range(1, 6):
        store.commit(Checkpoint(generation, {"events": generation}))
    assert store.generations() == [5, 4, 3] and set(store._refs) == {3, 4, 5}


# ----- incremental checkpoints: what changed is written, the rest referenced ------------------------


def _shard_keys(path) -> list[str]:
    from streamrnn import state
    from streamrnn_service import packing

    return list(packing.read_members(*state.load(path)))


def _manifest(store, generation) -> dict:
    from streamrnn import state

    header = state.load(store._path(generation))[1]
    return dict(zip(header["live"], header["shards"]))


@contextlib.contextmanager
def _manifests_fail(monkeypatch):
    """Within: writing a manifest fails (the disk is full), after its shard was written."""
    from streamrnn import state

    real = state.save

    def manifest_fails(path, arrays, header):
        if path.name.startswith("gen-"):
            raise OSError("disk full")
        real(path, arrays, header)

    monkeypatch.setattr(state, "save", manifest_fails)
    yield
    monkeypatch.setattr(state, "save", real)


def test_a_checkpoint_writes_the_keys_that_changed_and_references_the_rest(tmp_path):
    w, _ = _worker(tmp_path, max_keys="8")
    store = w.table.store
    _feed(w, supervised_events(40, keys=("a", "b", "c", "d")))
    assert w.checkpointer.checkpoint()
    assert _shard_keys(store._shard(1)) == ["a", "b", "c", "d"]
    _feed(w, supervised_events(3, keys=("c",), seed=1))
    assert w.checkpointer.checkpoint()
    assert _shard_keys(store._shard(2)) == ["c"]  # only the key that took events
    assert _manifest(store, 2) == {"a": 1, "b": 1, "d": 1, "c": 2}
    assert w.checkpointer.checkpoint()  # nothing changed: a manifest and no shard
    assert not store._shard(3).exists() and _manifest(store, 3) == _manifest(store, 2)
    digest = w.table.digest()
    again, corrupt = _worker(tmp_path, max_keys="8")
    assert again.checkpointer.restore() and not corrupt and again.checkpointer.generation == 3
    assert again.table.digest() == digest and list(again.table.live) == list(w.table.live)  # LRU order kept
    _feed(again, supervised_events(2, keys=("a",), seed=2))
    _feed(w, supervised_events(2, keys=("a",), seed=2))
    assert again.table.digest() == w.table.digest()  # and it continues as the daemon that never stopped


def test_shards_and_key_files_written_uncompressed_by_an_earlier_version_restore_and_continue(tmp_path, monkeypatch):
    from streamrnn import state

    monkeypatch.setattr(DirectoryStore, "codec", None)  # as the version before compression wrote them
    w, _ = _worker(tmp_path)
    _feed(w, supervised_events(60, keys=("a", "b", "c", "d")))
    assert w.checkpointer.checkpoint() and w.table.stored
    shard = state.load(w.table.store._shard(1))[1]
    assert "codec" not in shard and "table" in shard
    digest = w.table.digest()
    monkeypatch.undo()
    again, corrupt = _worker(tmp_path)
    assert again.checkpointer.restore() and not corrupt and again.table.digest() == digest
    later = supervised_events(20, keys=("a", "b", "c", "d"), seed=5)  # the evicted keys are read back too
    _feed(again, later)
    _feed(w, later)
    assert again.table.digest() == w.table.digest()
    assert again.checkpointer.checkpoint()
    assert state.load(again.table.store._shard(2))[1]["codec"] == "zstd"  # and written compressed from then on


def test_the_emptiest_shards_are_written_again_while_disk_holds_over_twice_the_live_keys(tmp_path):
    w, _ = _worker(tmp_path, max_keys="8")
    store = w.table.store
    _feed(w, supervised_events(40, keys=("a", "b", "c", "d")))
    assert w.checkpointer.checkpoint()
    _feed(w, supervised_events(6, keys=("a", "b", "c"), seed=1))
    assert w.checkpointer.checkpoint()  # 4 + 3 copies on disk for 4 live keys: within twice, nothing written again
    assert _shard_keys(store._shard(2)) == ["a", "b", "c"]
    assert _manifest(store, 2) == {"d": 1, "a": 2, "b": 2, "c": 2}
    _feed(w, supervised_events(4, keys=("a", "b"), seed=2))
    assert w.checkpointer.checkpoint()  # 4 + 3 + 2 > 8: shard 1 (1 of 4 live, the emptiest) goes, its "d" written again
    assert _shard_keys(store._shard(3)) == ["d", "a", "b"]
    assert _manifest(store, 3) == {"c": 2, "d": 3, "a": 3, "b": 3}
    assert w.checkpointer.checkpoint() and not store._shard(1).exists()  # generation 2 (keep = 2) is gone, and shard 1
    digest = w.table.digest()
    again, _ = _worker(tmp_path, max_keys="8")
    assert again.checkpointer.restore() and again.table.digest() == digest


def _policy(where: dict, sizes: dict) -> DirectoryStore:
    """A store holding only where each key is and how big each shard was: the compaction policy alone."""
    store = DirectoryStore.__new__(DirectoryStore)
    store._where, store._shard_sizes = where, sizes
    return store


def test_a_checkpoint_writes_again_at_most_as_many_keys_as_changed():
    store = _policy({**{f"old{i}": 1 for i in range(10)}, **{f"mid{i}": 2 for i in range(30)}}, {1: 100, 2: 40})
    keys = list(store._where)
    assert store.reusable(keys, changed=0) == set(keys)  # nothing changed: nothing written
    kept = store.reusable(keys, changed=10)  # 150 on disk for 50 live: shard 1 (10 live of 100) goes
    assert kept == {k for k in keys if k.startswith("mid")}
    assert store.reusable(keys, changed=9) == set(keys)  # shard 1's 10 keys are over a budget of 9
    store._shard_sizes = {1: 12, 2: 40}
    assert store.reusable(keys, changed=10) == set(keys)  # 62 on disk for 50 live: within twice


def test_exactly_twice_the_live_keys_is_within_bounds():
    store = _policy({**{f"o{i}": 1 for i in range(10)}, **{f"m{i}": 2 for i in range(10)}}, {1: 40, 2: 10})
    keys = list(store._where)
    assert store.reusable(keys, changed=10) == set(keys)  # 50 + 10 on disk for 20 + 10 live: exactly twice


def test_the_budget_is_spent_across_shards():
    store = _policy({**{f"a{i}": 1 for i in range(5)}, **{f"b{i}": 2 for i in range(5)},
                     **{f"c{i}": 3 for i in range(40)}}, {1: 100, 2: 100, 3: 40})
    keys = list(store._where)
    assert store.reusable(keys, changed=5) == {k for k in keys if not k.startswith("a")}  # shard 2 over budget


def test_a_rewritten_shards_live_keys_still_count_on_disk():
    store = _policy({**{f"a{i}": 1 for i in range(5)}, **{f"b{i}": 2 for i in range(5)},
                     **{f"c{i}": 3 for i in range(40)}}, {1: 30, 2: 20, 3: 100})
    keys = list(store._where)
    # 170 on disk for 70 live; shard 1 going leaves 145 (its 5 keys move), still over: shard 2 goes too
    assert store.reusable(keys, changed=20) == {k for k in keys if k.startswith("c")}


def test_compaction_after_a_restart_knows_the_shard_sizes(tmp_path):
    w, _ = _worker(tmp_path, max_keys="8")
    _feed(w, supervised_events(40, keys=("a", "b", "c", "d")))
    assert w.checkpointer.checkpoint()
    _feed(w, supervised_events(6, keys=("a", "b", "c"), seed=1))
    assert w.checkpointer.checkpoint()
    again, _ = _worker(tmp_path, max_keys="8")  # a new process: shard sizes come from reading the shards
    assert again.checkpointer.restore()
    _feed(again, supervised_events(4, keys=("a", "b"), seed=2))
    assert again.checkpointer.checkpoint()
    assert _shard_keys(again.table.store._shard(3)) == ["d", "a", "b"]


def test_a_failed_synchronous_checkpoint_has_its_keys_written_by_the_next(tmp_path, monkeypatch):
    w, _ = _worker(tmp_path, max_keys="8")
    _feed(w, supervised_events(20, keys=("a", "b")))
    assert w.checkpointer.checkpoint()
    _feed(w, supervised_events(4, keys=("a",), seed=1))
    with _manifests_fail(monkeypatch):
        assert not w.checkpointer.checkpoint()
    assert w.checkpointer.checkpoint() and _shard_keys(w.table.store._shard(2)) == ["a"]
    again, _ = _worker(tmp_path, max_keys="8")
    assert again.checkpointer.restore() and again.table.digest() == w.table.digest()


# ----- the store's commits and reads, refused and unusable ones --------------------------------


def _state(value: float = 0.0) -> tuple[dict, dict]:
    import numpy as np

    return {"w": np.full(2, value)}, {"kind": "supervised", "events": 1}


def _one_generation(tmp_path):
    from streamrnn_service.store import Checkpoint

    whys = []
    store = DirectoryStore(tmp_path, keep=5, on_corrupt=lambda path, why: whys.append(why))
    store.commit(Checkpoint(1, {"events": 1}, {"a": _state(1.0)}))
    return store, whys


def test_a_commit_leaving_out_a_key_the_store_does_not_hold_is_refused(tmp_path):
    from streamrnn_service.store import Checkpoint

    store = DirectoryStore(tmp_path)
    with pytest.raises(ValueError, match="^checkpoint 1 leaves out key 'ghost', whose state this store does not hold$"):
        store.commit(Checkpoint(1, {"events": 0}, {}, {}, order=["ghost"]))
    assert store.generations() == []


def test_a_commit_with_nothing_changed_writes_only_a_manifest(tmp_path, monkeypatch):
    from streamrnn_service.store import Checkpoint
    from streamrnn import state

    store = DirectoryStore(tmp_path)
    store.commit(Checkpoint(1, {"events": 0}, {"a": _state()}))
    saved, real = [], state.save

    def recorded(path, arrays, header):
        saved.append(path.name)
        real(path, arrays, header)

    monkeypatch.setattr(state, "save", recorded)
    store.commit(Checkpoint(2, {"events": 0}, {}, {}, order=["a"]))
    assert saved == ["gen-000000000002.npz"]


@pytest.mark.parametrize("live, shards, why", [
    (["a", "b"], [1], "live and shards differ in length"),
    (["a", "ghost"], [1, 1], "shards lack the state of 1 keys, ['ghost'] among them"),
])
def test_a_manifest_that_does_not_fit_its_shards_is_unusable(tmp_path, live, shards, why):
    from streamrnn import state

    store, whys = _one_generation(tmp_path)
    state.save(store._path(2), {}, {"format": "streamrnn-checkpoint", "version": 2, "generation": 2, "meta": {},
                                    "live": live, "shards": shards, "stored": {}})
    assert store.latest().generation == 1 and len(whys) == 1 and why in whys[0]


def test_a_shard_of_another_format_is_unusable(tmp_path):
    from streamrnn_service.store import Checkpoint
    from streamrnn import state

    store, whys = _one_generation(tmp_path)
    store.commit(Checkpoint(2, {"events": 2}, {"a": _state(2.0)}))
    arrays, header = state.load(store._shard(2))
    state.save(store._shard(2), arrays, dict(header, format="streamrnn-key"))
    assert store.latest().generation == 1 and whys == [f"{store._shard(2)} is not a streamrnn-shard file"]


def test_an_unpacked_key_file_that_kept_its_key_reads_back_without_it(tmp_path):
    import numpy as np

    from streamrnn import state

    store = DirectoryStore(tmp_path)
    state.save(store.keys / "older-2.npz", {"w": np.zeros(2)}, {"kind": "forecast", "events": 2, "key": "pump"})
    assert store.get_stream("older-2.npz")[1] == {"kind": "forecast", "events": 2}


def test_a_key_file_whose_table_overruns_its_data_is_a_state_error(tmp_path):
    import numpy as np

    from streamrnn_service import packing
    from streamrnn import state
    from streamrnn.state import StateError

    store = DirectoryStore(tmp_path)
    data, table = packing.pack([("k", {"w": np.zeros(2)}, {"events": 1})])
    table["keys"][0][2] = 1000  # k's offset: past the end
    state.save(store.keys / "bad-1.npz", {"data": data}, {"format": "streamrnn-key", "key": "k", "table": table})
    with pytest.raises(StateError, match="^key file bad-1.npz cannot be unpacked: ValueError"):
        store.get_stream("bad-1.npz")


def test_a_crash_between_shard_and_manifest_restores_the_previous_and_sweeps_the_shard(tmp_path, monkeypatch):
    w, _ = _worker(tmp_path, max_keys="8")
    _feed(w, supervised_events(20, keys=("a", "b")))
    assert w.checkpointer.checkpoint()
    digest = w.table.digest()
    _feed(w, supervised_events(4, keys=("a",), seed=1))
    with _manifests_fail(monkeypatch):
        assert not w.checkpointer.checkpoint() and w.table.store._shard(2).exists()  # failed: logged and counted
    again, corrupt = _worker(tmp_path, max_keys="8")
    assert again.checkpointer.restore() and again.checkpointer.generation == 1 and again.table.digest() == digest and not corrupt
    _feed(again, supervised_events(1, keys=("b",), seed=3))
    assert again.checkpointer.checkpoint()
    assert _shard_keys(again.table.store._shard(2)) == ["b"]  # the stray shard 2 was replaced, not trusted


def test_a_lost_shard_makes_its_generation_unusable_and_the_previous_one_is_used(tmp_path):
    w, _ = _worker(tmp_path, max_keys="8")
    _feed(w, supervised_events(20, keys=("a", "b")))
    assert w.checkpointer.checkpoint()
    digest = w.table.digest()
    _feed(w, supervised_events(4, keys=("a",), seed=1))
    assert w.checkpointer.checkpoint()
    w.table.store._shard(2).unlink()
    again, corrupt = _worker(tmp_path, max_keys="8")
    assert again.checkpointer.restore() and again.checkpointer.generation == 1 and corrupt == ["gen-000000000002.npz"]
    assert again.table.digest() == digest


def test_a_generations_files_are_its_manifest_and_the_shards_it_references(tmp_path):
    w, _ = _worker(tmp_path, max_keys="8")
    store = w.table.store
    _feed(w, supervised_events(20, keys=("a", "b")))
    assert w.checkpointer.checkpoint()
    _feed(w, supervised_events(4, keys=("a",), seed=1))  # b unchanged: generation 2 still references shard 1
    assert w.checkpointer.checkpoint()
    assert store.files(1) == (tmp_path / "gen-000000000001.npz", [tmp_path / "shard-000000000001.npz"])
    manifest, shards = store.files(2)
    assert manifest.name == "gen-000000000002.npz" and [s.name for s in shards] == \
        ["shard-000000000001.npz", "shard-000000000002.npz"]
    assert manifest.exists() and all(s.exists() for s in shards)
    assert w.checkpointer.checkpoint() and store.files(3)[1] == shards  # nothing changed: a manifest only


def _close(x, y) -> bool:
    """Equal JSON values, but for floats, which may differ by rounding (1e-12 relative)."""
    if isinstance(x, float) and isinstance(y, float):
        return abs(x - y) <= 1e-12 * max(abs(x), abs(y), 1e-300)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(_close(a, b) for a, b in zip(x, y))
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_close(x[k], y[k]) for k in x)
    return x == y


@pytest.mark.parametrize("hybrid_kernel", [False, True], ids=["numpy-hybrid", "compiled-hybrid"])
def test_a_checkpoint_written_before_shards_loads_and_the_next_commit_writes_every_key(tmp_path, monkeypatch,
                                                                                      hybrid_kernel):
    import shutil
    from pathlib import Path

    from streamrnn.kernels.regressor import RegressorKernel

    from streamrnn import kernels

    monkeypatch.setenv(kernels.ENV, "1")  # the network's kernel, as the old daemon ran (CI also runs with 0)
    if not hybrid_kernel:  # the path the old daemon ran its hybrid keys on
        monkeypatch.setattr(RegressorKernel, "for_model", classmethod(lambda cls, model: None))

    # written by the commit before shards (a2c237c): 24 events on keys a, b (supervised) and c (forecast),
    # at most 2 live (so one key is in a key file); ``replies`` are that daemon's replies to ``then``
    fixture = Path(__file__).parent / "data" / "checkpoint_v1"
    expected = json.loads((fixture / "expected.json").read_text())
    shutil.copytree(fixture, tmp_path, dirs_exist_ok=True)
    config = load(environ={}, overrides={"checkpoint.dir": str(tmp_path), "streams.max_keys": "2", "model.units": "4"})

    def handle(worker, event):
        return json.loads(worker.handle(json.dumps(event).encode(), 10))

    w = build_worker(config, DirectoryStore(tmp_path, keep=3))
    assert w.checkpointer.restore() and w.events == expected["events"] and len(w.table) == 3
    assert w.checkpointer.checkpoint()
    assert sorted(_shard_keys(w.table.store._shard(2))) == sorted(w.table.live)
    again = build_worker(config, DirectoryStore(tmp_path, keep=3))
    assert again.checkpointer.restore() and again.table.digest() == w.table.digest()
    continued = [[handle(worker_, e) for e in expected["then"]] for worker_ in (w, again)]
    # restored once or twice, the keys continue bit for bit alike; as the old daemon did, to rounding: it
    # ran on another CPU, whose BLAS kernels (and the compiled hybrid step's order of sums) round differently
    assert continued[0] == continued[1] and continued[0] != []
    assert _close(continued[0], expected["replies"])


def test_a_commit_on_the_writer_thread_keeps_the_key_files_written_after_its_checkpoint_was_built(tmp_path):
    import numpy as np

    from streamrnn_service.store import Checkpoint

    store = DirectoryStore(tmp_path)
    early = store.put_stream("early", {"w": np.zeros(2)}, {"events": 1})  # stored before: in the checkpoint
    gone = store.put_stream("gone", {"w": np.zeros(2)}, {"events": 1})  # read back before: in no checkpoint
    checkpoint = Checkpoint(1, {"events": 1}, {}, {"early": early}, cut=store.cut())
    late = store.put_stream("late", {"w": np.ones(2)}, {"events": 3})  # evicted while the commit runs
    store.commit(checkpoint)
    assert (store.keys / early).exists() and not (store.keys / gone).exists()
    assert (store.keys / late).exists()  # younger than the checkpoint: not its to collect
    store.commit(Checkpoint(2, {"events": 2}, {}, {"early": early, "late": late}, cut=store.cut()))
    assert np.array_equal(store.get_stream(late)[0]["w"], np.ones(2))
    store.commit(Checkpoint(3, {"events": 3}, {}, {}, cut=store.cut()))
    store.commit(Checkpoint(4, {"events": 4}, {}, {}, cut=store.cut()))
    store.commit(Checkpoint(5, {"events": 5}, {}, {}, cut=store.cut()))
    assert not list(store.keys.glob("*.npz"))  # once no kept generation references them, they go


@pytest.mark.parametrize("fork", ["true", "false"], ids=["forked-child", "writer-thread"])
def test_a_background_checkpoint_restores_like_a_synchronous_one_and_a_failed_one_is_written_again(tmp_path, fork):
    from streamrnn import state

    def run(root, background):
        config = load(environ={}, overrides={"checkpoint.dir": str(root), "streams.max_keys": "3",
                                             "checkpoint.background": background, "checkpoint.every_events": "7",
                                             "checkpoint.fork": fork, "checkpoint.max_share": "1.0"})  # no pause
        w = build_worker(config, DirectoryStore(root))
        for event in supervised_events(40, keys=("a", "b", "c", "d")):
            _feed(w, [event])
            w.checkpointer.settle(wait=True)  # each write ends before the next event: every checkpoint falls where it is due
        w.checkpointer.close()
        return w

    sync, bg = run(tmp_path / "sync", "false"), run(tmp_path / "bg", "true")
    assert bg.checkpointer.generation == sync.checkpointer.generation == 5 and bg.table.digest() == sync.table.digest()
    for root, w in ((tmp_path / "sync", sync), (tmp_path / "bg", bg)):
        config = load(environ={}, overrides={"checkpoint.dir": str(root), "streams.max_keys": "3"})
        again = build_worker(config, DirectoryStore(root))
        assert again.checkpointer.restore() and again.events == 35 and again.checkpointer.generation == 5

    # a write that fails in the background (on the thread, or in the child, which took its memory
    # when it was forked) is counted when it settles, and its keys are written by the next
    real = state.save
    broken = [False]

    def failing(path, arrays, header):
        if broken[0] and path.name.startswith("gen-"):
            raise OSError("disk full")
        real(path, arrays, header)

    w = run(tmp_path / "fail", "true")
    _feed(w, supervised_events(1, keys=("a",), seed=5))  # 41 events: the next one due at 42
    state.save = failing
    try:
        broken[0] = True
        assert w.checkpointer.checkpoint(background=True)
        w.checkpointer.settle(wait=True)
        broken[0] = False
        assert w.stats.checkpoint_failures == 1 and w.checkpointer.generation == 5
        assert w.checkpointer.checkpoint()
    finally:
        state.save = real
    assert w.checkpointer.generation == 6 and "a" in _shard_keys(w.table.store._shard(6))
