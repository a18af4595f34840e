"""Checkpoints on disk: atomic generations, the previous good one after a corrupt newest, cleanup."""

from __future__ import annotations

import json

import pytest

from service.config import load
from service.server import build_worker
from service.store import DirectoryStore

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
        w.handle(line, len(line) + 1, w.position("test"))


def test_restore_equals_the_state_written(tmp_path):
    w, _ = _worker(tmp_path)
    _feed(w, supervised_events(60, keys=("a", "b", "c", "d")))
    assert w.checkpoint() and w.table.stored
    digest = w.table.digest()
    again, corrupt = _worker(tmp_path)
    assert again.restore() and not corrupt
    assert again.table.digest() == digest and again.events == 60
    assert again.positions["test"].lines == 60


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b[:300] + bytes([b[300] ^ 1]) + b[301:],
                                    lambda b: b""])
def test_corrupt_newest_falls_back_to_the_previous(tmp_path, damage):
    w, _ = _worker(tmp_path)
    _feed(w, supervised_events(30, keys=("a", "b", "c")))
    w.checkpoint()
    first = w.table.digest()
    _feed(w, supervised_events(30, keys=("a", "b", "c"), seed=1))
    w.checkpoint()
    newest = sorted(tmp_path.glob("gen-*.npz"))[-1]
    newest.write_bytes(damage(newest.read_bytes()))
    again, corrupt = _worker(tmp_path)
    assert again.restore() and corrupt == [newest.name]
    assert again.table.digest() == first and again.events == 30


def test_old_generations_and_unreferenced_key_files_are_removed(tmp_path):
    w, _ = _worker(tmp_path)
    for seed in range(5):
        _feed(w, supervised_events(20, keys=("a", "b", "c", "d"), seed=seed))
        w.checkpoint()
    assert len(list(tmp_path.glob("gen-*.npz"))) == 2
    needed = set()
    for path in tmp_path.glob("gen-*.npz"):
        needed |= set(DirectoryStore(tmp_path)._read(path).stored.values())
    assert {p.name for p in (tmp_path / "keys").glob("*.npz")} == needed
    assert not list(tmp_path.glob(".*.tmp"))


def test_leftover_temporary_files_are_ignored(tmp_path):
    w, _ = _worker(tmp_path)
    _feed(w, supervised_events(10))
    w.checkpoint()
    (tmp_path / ".gen-000000000002.npz.abc.tmp").write_bytes(b"half a file")
    again, corrupt = _worker(tmp_path)
    assert again.restore() and not corrupt and again.generation == 1
    assert not list(tmp_path.glob(".*.tmp"))
