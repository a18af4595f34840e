"""Where stream states and checkpoints are kept, behind a small interface.

A ``Checkpoint`` is one consistent cut of the daemon: the state of every live
key, a reference to the stored state of every key that was checkpointed out,
and ``meta`` -- the input positions and event count the states correspond to.
Restoring it and feeding the inputs again from those positions continues
exactly like a daemon that never stopped.

Checkpoints cost what changed, as incremental checkpoints do in Flink: a
committed ``Checkpoint`` carries the states of the live keys that changed
since the previous one, and ``order`` names every live key; the others are
the states the store already holds (``reusable``).

``CheckpointStore`` is the seam for other back ends (the next step commits
states and partition offsets together in Redis Streams or Kafka):

    put_stream(key, arrays, header) -> ref   # an evicted key's state; immutable once written
    get_stream(ref) -> (arrays, header)      # StateError if unreadable
    reusable(keys, changed) -> set           # of these unchanged live keys, those a commit may leave out
    cut() -> int                             # where the evicted keys' writes stand (Checkpoint.cut)
    commit(checkpoint)                       # atomically make it the newest (may run on another thread)
    latest() -> Checkpoint | None            # the newest readable one, every live key's state in it

``DirectoryStore`` writes with ``streamrnn.state.save`` (npz + JSON header +
SHA-256, temporary file, fsync, rename, directory fsync; never pickle):

    DIR/gen-000000000042.npz      a manifest: meta, the live keys in LRU order and the shard
                                  that holds each one's state, and the stored keys' files
    DIR/shard-000000000042.npz    the live keys that changed since generation 41, packed
                                  (``service.packing``: one byte array, not one member per array,
                                  compressed with Zstandard)
    DIR/keys/<sha256(key)>-<events>.npz   an evicted key's state at its event count, packed and compressed

Shards and key files are immutable once written: a key file is named by the
key's event count, a shard by the generation that wrote it.  A generation is
kept with every shard and key file it references; the shard is written
before its manifest, so a crash between the two leaves a shard no manifest
names, swept at the next commit.  While the shards hold more than twice the
live keys, the remaining keys of the emptiest ones are written again (into
the new shard, at most as many as changed) so that those can go: a
checkpoint writes at most twice what changed, and the disk holds about
twice the live state.  A corrupt or truncated newest checkpoint (manifest or shard)
is reported (``on_corrupt``) and the previous good one is used.

Checkpoints written by earlier versions (version 1: every live key's arrays
in the generation file itself) are read, and the first new commit writes
every key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from streamrnn import state
from streamrnn.state import StateError

from . import packing

FORMAT = "streamrnn-checkpoint"
#: 2: a manifest and shards of packed keys; 1: every live key's arrays in the generation file
VERSION = 2
READABLE = (1, 2)
SHARD_FORMAT = "streamrnn-shard"
KEY_FORMAT = "streamrnn-key"
DATA = packing.DATA
log = logging.getLogger("streamrnn.store")


class NewerCheckpoint(StateError):
    """A checkpoint of a newer format than this code reads: restoring stops (an older generation would lose
    what the newest holds, and a quarantine would hide it from the version that can read it)."""


@dataclass
class Checkpoint:
    generation: int
    meta: dict  # {"events": n, "positions": {source: {"lines": n, "bytes": n}}, "created": unix time}
    # key -> (arrays, header): read back, every live key; to commit, the keys ``reusable`` did not cover
    live: dict[str, tuple[dict, dict]] = field(default_factory=dict)
    stored: dict[str, str] = field(default_factory=dict)  # key -> ref
    order: list[str] | None = None  # every live key, least recently used first (None: the keys of ``live``)
    cut: int = 0  # the store's ``cut()`` when it was built: key files written later are not its to collect

    def keys(self) -> list[str]:
        return list(self.live) if self.order is None else self.order


class CheckpointStore:
    #: whether a forked child may write a commit that this process then ``record``s (``service.forked``)
    forkable = False

    def put_stream(self, key: str, arrays: dict, header: dict) -> str:
        raise NotImplementedError

    def get_stream(self, ref: str) -> tuple[dict, dict]:
        raise NotImplementedError

    def quarantine(self, ref: str) -> str:
        """Set a stored key's unreadable state aside (never deleted); returns where it went."""
        raise NotImplementedError

    def reusable(self, keys, changed: int = 0) -> set[str]:
        """Of these live keys, unchanged since the newest commit (``changed`` others did change), the
        ones whose state a commit may leave out."""
        return set()

    def cut(self) -> int:
        """A mark of the evicted keys written so far (``Checkpoint.cut``): a commit running on another
        thread while keys are evicted deletes no key file written after its checkpoint was built."""
        return 0

    def commit(self, checkpoint: Checkpoint) -> None:
        raise NotImplementedError

    def latest(self) -> Checkpoint | None:
        raise NotImplementedError


class MemoryStore(CheckpointStore):
    """Evicted keys kept in memory, no checkpoints (``streamrnn replay``, tests)."""

    def __init__(self):
        self._streams: dict[str, tuple[dict, dict]] = {}

    def put_stream(self, key, arrays, header):
        ref = f"{key}@{header['events']}"
        self._streams[ref] = ({k: v.copy() for k, v in arrays.items()}, header)
        return ref

    def get_stream(self, ref):
        return self._streams[ref]

    def quarantine(self, ref):
        self._streams.pop(ref, None)
        return "nowhere (kept in memory only)"

    def commit(self, checkpoint):
        pass

    def latest(self):
        return None


class DirectoryStore(CheckpointStore):
    forkable = True
    #: how shards and key files are compressed (``service.packing``; None writes them as they are)
    codec: str | None = packing.CODEC

    def __init__(self, root, keep: int = 3, on_corrupt: Callable[[Path, str], None] | None = None,
                 read_only: bool = False):
        self.root = Path(root)
        self.keys = self.root / "keys"
        self.read_only = read_only  # only read (``streamrnn inspect``, a take-over): no directories made, no sweep
        if not read_only:
            self.keys.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self.on_corrupt = on_corrupt or (lambda path, why: None)
        self._refs: dict[int, tuple[set[int], set[str]]] = {}  # generation -> (shards, key files) it references
        self._where: dict[str, int] = {}  # live key -> shard holding its state, as of the newest commit or read
        self._shard_sizes: dict[int, int] = {}  # shard -> keys written into it
        # key files written by this process, by the order of their writing; a commit (which may run
        # on a writer thread while the event loop evicts keys) collects only those up to its cut
        self._lock = threading.Lock()
        self._written: dict[str, int] = {}
        self._writes = 0

    # ----- evicted keys ----------------------------------------------------------------
    def put_stream(self, key, arrays, header):
        ref = f"{hashlib.sha256(key.encode()).hexdigest()[:32]}-{int(header['events'])}.npz"
        members, fields = packing.members([(key, arrays, header)], self.codec)
        with self._lock:  # counted before the file exists: a commit in progress must not collect it
            self._writes += 1
            self._written[ref] = self._writes
        state.save(self.keys / ref, members, {"format": KEY_FORMAT, "key": key, **fields})
        return ref

    def cut(self) -> int:
        with self._lock:
            return self._writes

    def get_stream(self, ref):
        if not self.keys.is_dir():  # out of reach (unmounted, moved): OSError, not a lost state
            raise OSError(f"checkpoint directory {self.keys} is not there")
        arrays, header = state.load(self.keys / ref)
        if header.get("format") != KEY_FORMAT:  # written before keys were packed: the arrays themselves
            header.pop("key", None)
            return arrays, header
        try:
            (arrays, header), = packing.read_members(arrays, header).values()
        except (KeyError, TypeError, ValueError) as err:
            raise StateError(f"key file {ref} cannot be unpacked: {err!r}") from None
        return arrays, header

    def quarantine(self, ref):
        """Move an unreadable key file to ``keys/quarantine/`` (for a person to look at; never deleted)."""
        target = self.keys / "quarantine"
        target.mkdir(exist_ok=True)
        source = self.keys / ref
        if source.exists():
            os.replace(source, target / ref)
        return str(target / ref)

    # ----- checkpoints ---------------------------------------------------------------------
    def _path(self, generation: int) -> Path:
        return self.root / f"gen-{generation:012d}.npz"

    def _shard(self, generation: int) -> Path:
        return self.root / f"shard-{generation:012d}.npz"

    @staticmethod
    def _numbered(paths, prefix: str) -> list[int]:
        out = []
        for path in paths:
            try:
                out.append(int(path.stem[len(prefix):]))
            except ValueError:
                continue
        return sorted(out, reverse=True)

    def generations(self) -> list[int]:
        """Generations on disk, newest first."""
        return self._numbered(self.root.glob("gen-*.npz"), "gen-")

    def files(self, generation: int) -> tuple[Path, list[Path]]:
        """The files a generation's checkpoint is made of, for tools that report sizes: its manifest, and the
        shards the manifest references, oldest first (generation n writes shard n)."""
        shards, _ = self._referenced(generation)
        return self._path(generation), [self._shard(s) for s in sorted(shards)]

    def reusable(self, keys, changed: int = 0) -> set[str]:
        """The unchanged keys a commit may leave in their shards; the rest are written again.

        While the shards would hold more than twice the live keys, the remaining keys of the
        emptiest shards are written again, at most ``changed`` of them: a checkpoint writes at
        most twice what changed, and each key rewritten frees at least one dead copy (the
        emptiest shard is under half live), so dead copies go as fast as they come.
        """
        keys = [k for k in keys if k in self._where]
        used: dict[int, int] = {}
        for key in keys:
            shard = self._where[key]
            used[shard] = used.get(shard, 0) + 1
        sizes = {shard: self._shard_sizes.get(shard, n) for shard, n in used.items()}
        disk, live, budget = sum(sizes.values()) + changed, len(keys) + changed, changed
        rewrite = set()
        for shard in sorted(used, key=lambda s: used[s] / sizes[s]):
            if disk <= 2 * live:
                break
            if used[shard] <= budget:
                rewrite.add(shard)
                budget -= used[shard]
                disk -= sizes[shard] - used[shard]  # the shard goes; its live keys move to the new one
        return {key for key in keys if self._where[key] not in rewrite}

    def commit(self, checkpoint: Checkpoint) -> None:
        where = self.placement(checkpoint)
        self.write(checkpoint, where)
        self.record(checkpoint, where)

    # A commit in three parts, so that a forked child can write what its parent records
    # (``service.forked``): where each key's state will be, the files, then this store's own account.
    def placement(self, checkpoint: Checkpoint) -> dict[str, int]:
        """The shard that will hold each key's state once ``checkpoint`` is committed (ValueError for a
        key it leaves out whose state this store does not hold)."""
        generation = checkpoint.generation
        where = {}
        for key in checkpoint.keys():
            if key in checkpoint.live:
                where[key] = generation
            elif key in self._where:
                where[key] = self._where[key]
            else:
                raise ValueError(f"checkpoint {generation} leaves out key {key!r}, whose state this store does not hold")
        return where

    def write(self, checkpoint: Checkpoint, where: dict[str, int]) -> None:
        """The checkpoint's files: its shard (the live keys' states), then its manifest."""
        generation = checkpoint.generation
        if checkpoint.live:
            members, fields = packing.members(((key, *snap) for key, snap in checkpoint.live.items()), self.codec)
            state.save(self._shard(generation), members, {"format": SHARD_FORMAT, "generation": generation, **fields})
        header = {
            "format": FORMAT, "version": VERSION, "generation": generation,
            "meta": checkpoint.meta, "live": list(where), "shards": list(where.values()),
            "stored": checkpoint.stored,
        }
        state.save(self._path(generation), {}, header)

    def record(self, checkpoint: Checkpoint, where: dict[str, int]) -> None:
        """After ``write``: the checkpoint is the newest; files no kept generation needs are deleted."""
        generation = checkpoint.generation
        self._where = where
        if checkpoint.live:
            self._shard_sizes[generation] = len(checkpoint.live)
        self._refs[generation] = (set(where.values()), set(checkpoint.stored.values()))
        self._collect(checkpoint.cut)

    def latest(self) -> Checkpoint | None:
        junk = [*self.root.glob(".gen-*.tmp"), *self.root.glob(".shard-*.tmp"), *self.keys.glob(".*.tmp")]
        for path in junk if not self.read_only else ():
            path.unlink(missing_ok=True)  # a write that a crash interrupted
        for generation in self.generations():
            path = self._path(generation)
            try:
                return self._read(path)
            except NewerCheckpoint:  # not damage: neither quarantined nor passed over for an older one
                raise
            except StateError as err:
                log.error("checkpoint %s is unusable (%s); trying the previous one", path.name, err)
                self.on_corrupt(path, str(err))
        return None

    def _read(self, path: Path) -> Checkpoint:
        arrays, header = state.load(path)
        version = header.get("version")
        if header.get("format") == FORMAT and type(version) is int and version > VERSION:
            raise NewerCheckpoint(f"{path.name} was written by a newer streamrnn (checkpoint version {version}; "
                                  f"this one reads {' or '.join(map(str, READABLE))}): run that version, or move "
                                  "the checkpoints away")
        if header.get("format") != FORMAT or version not in READABLE:
            raise StateError(f"{path} is not a {FORMAT} file of version {' or '.join(map(str, READABLE))}")
        try:
            generation, stored = int(header["generation"]), dict(header["stored"])
            if header["version"] == 1:
                live, where = self._inline(arrays, header["streams"]), {}
            else:
                if len(header["live"]) != len(header["shards"]):
                    raise ValueError("live and shards differ in length")
                where = dict(zip(header["live"], map(int, header["shards"])))
                live = self._from_shards(where)
            checkpoint = Checkpoint(generation, header["meta"], live, stored)
        except StateError:  # a shard it needs is unusable: that says why on its own
            raise
        except (KeyError, TypeError, ValueError) as err:
            raise StateError(f"{path} has a malformed header: {err!r}") from None
        self._where = where
        self._refs[generation] = (set(where.values()), set(stored.values()))
        return checkpoint

    @staticmethod
    def _inline(arrays: dict, streams: list) -> dict:
        """Version 1: key i's arrays are the members named "<i>/<name>"."""
        live = {}
        for i, entry in enumerate(streams):
            prefix = f"{i}/"
            own = {k[len(prefix):]: a for k, a in arrays.items() if k.startswith(prefix)}
            live[entry["key"]] = (own, entry["header"])
        return live

    def _from_shards(self, where: dict[str, int]) -> dict:
        """Every key's state from the shard ``where`` names, in ``where``'s order (StateError if one is unusable)."""
        states: dict[str, tuple] = {}
        for shard in sorted(set(where.values())):
            path = self._shard(shard)
            arrays, header = state.load(path)
            if header.get("format") != SHARD_FORMAT or DATA not in arrays:
                raise StateError(f"{path} is not a {SHARD_FORMAT} file")
            try:
                held = packing.read_members(arrays, header)
            except (KeyError, TypeError, ValueError) as err:
                raise StateError(f"{path} cannot be unpacked: {err!r}") from None
            self._shard_sizes[shard] = len(held)
            for key, snap in held.items():
                if where.get(key) == shard:
                    states[key] = snap
        missing = [key for key in where if key not in states]
        if missing:
            raise StateError(f"shards lack the state of {len(missing)} keys, {missing[:3]} among them")
        return {key: states[key] for key in where}

    def _referenced(self, generation: int) -> tuple[set[int], set[str]]:
        if generation not in self._refs:
            try:  # the header member alone, without reading or verifying anything else
                with np.load(self._path(generation), allow_pickle=False) as npz:
                    header = json.loads(npz[state.HEADER].tobytes())
                shards = {int(shard) for shard in header.get("shards", [])}
                self._refs[generation] = (shards, set(header.get("stored", {}).values()))
            except Exception:  # unreadable: it can never be restored, so it keeps nothing alive
                self._refs[generation] = (set(), set())
        return self._refs[generation]

    def _collect(self, cut: int) -> None:
        """Delete generations past ``keep``, and the shards and key files no kept generation references
        (of the key files this process wrote, only those written before ``cut``)."""
        generations = self.generations()
        kept, dropped = generations[: self.keep], generations[self.keep :]
        for generation in dropped:
            self._path(generation).unlink(missing_ok=True)
            self._refs.pop(generation, None)
        shards, files = set(), set()
        for generation in kept:
            s, f = self._referenced(generation)
            shards |= s
            files |= f
        for shard in self._numbered(self.root.glob("shard-*.npz"), "shard-"):
            if shard not in shards:
                self._shard(shard).unlink(missing_ok=True)
                self._shard_sizes.pop(shard, None)
        with self._lock:
            young = {ref for ref, n in self._written.items() if n > cut}
            self._written = {ref: self._written[ref] for ref in young}
        for path in self.keys.glob("*.npz"):
            if path.name not in files and path.name not in young:
                path.unlink(missing_ok=True)
