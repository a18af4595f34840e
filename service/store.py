"""Where stream states and checkpoints are kept, behind a small interface.

A ``Checkpoint`` is one consistent cut of the daemon: the state of every live
key, a reference to the stored state of every key that was checkpointed out,
and ``meta`` -- the input positions and event count the states correspond to.
Restoring it and feeding the inputs again from those positions continues
exactly like a daemon that never stopped.

``CheckpointStore`` is the seam for other back ends (the next step commits
states and partition offsets together in Redis Streams or Kafka):

    put_stream(key, arrays, header) -> ref   # an evicted key's state; immutable once written
    get_stream(ref) -> (arrays, header)      # StateError if unreadable
    commit(checkpoint)                       # atomically make it the newest
    latest() -> Checkpoint | None            # the newest readable one

``DirectoryStore`` writes with ``streamrnn.state.save`` (npz + JSON header +
SHA-256, temporary file, fsync, rename, directory fsync; never pickle):

    DIR/gen-000000000042.npz      a checkpoint: live keys' arrays as "<i>/<name>"
    DIR/keys/<sha256(key)>-<events>.npz   an evicted key's state at its event count

A key file is named by the key's event count, so a file is never rewritten
with other content, and a checkpoint's references stay valid for as long as
the checkpoint is kept.  A corrupt or truncated newest checkpoint is reported
(``on_corrupt``) and the previous good one is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from streamrnn import state
from streamrnn.state import StateError

FORMAT = "streamrnn-checkpoint"
VERSION = 1
log = logging.getLogger("streamrnn.store")


@dataclass
class Checkpoint:
    generation: int
    meta: dict  # {"events": n, "positions": {source: {"lines": n, "bytes": n}}, "created": unix time}
    live: dict[str, tuple[dict, dict]] = field(default_factory=dict)  # key -> (arrays, header)
    stored: dict[str, str] = field(default_factory=dict)  # key -> ref


class CheckpointStore:
    def put_stream(self, key: str, arrays: dict, header: dict) -> str:
        raise NotImplementedError

    def get_stream(self, ref: str) -> tuple[dict, dict]:
        raise NotImplementedError

    def quarantine(self, ref: str) -> str:
        """Set a stored key's unreadable state aside (never deleted); returns where it went."""
        raise NotImplementedError

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
    def __init__(self, root, keep: int = 3, on_corrupt: Callable[[Path, str], None] | None = None):
        self.root = Path(root)
        self.keys = self.root / "keys"
        self.keys.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self.on_corrupt = on_corrupt or (lambda path, why: None)
        self._refs: dict[int, set[str]] = {}  # generation -> key files it references

    # ----- evicted keys ----------------------------------------------------------------
    def put_stream(self, key, arrays, header):
        ref = f"{hashlib.sha256(key.encode()).hexdigest()[:32]}-{int(header['events'])}.npz"
        state.save(self.keys / ref, arrays, dict(header, key=key))
        return ref

    def get_stream(self, ref):
        if not self.keys.is_dir():  # out of reach (unmounted, moved): OSError, not a lost state
            raise OSError(f"checkpoint directory {self.keys} is not there")
        arrays, header = state.load(self.keys / ref)
        header.pop("key", None)
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

    def generations(self) -> list[int]:
        """Generations on disk, newest first."""
        out = []
        for path in self.root.glob("gen-*.npz"):
            try:
                out.append(int(path.stem[4:]))
            except ValueError:
                continue
        return sorted(out, reverse=True)

    def commit(self, checkpoint: Checkpoint) -> None:
        arrays, streams = {}, []
        for i, (key, (own, header)) in enumerate(checkpoint.live.items()):
            arrays.update({f"{i}/{name}": a for name, a in own.items()})
            streams.append({"key": key, "header": header})
        header = {
            "format": FORMAT, "version": VERSION, "generation": checkpoint.generation,
            "meta": checkpoint.meta, "streams": streams, "stored": checkpoint.stored,
        }
        state.save(self._path(checkpoint.generation), arrays, header)
        self._refs[checkpoint.generation] = set(checkpoint.stored.values())
        self._collect()

    def latest(self) -> Checkpoint | None:
        for junk in list(self.root.glob(".gen-*.tmp")) + list(self.keys.glob(".*.tmp")):
            junk.unlink(missing_ok=True)  # a write that a crash interrupted
        for generation in self.generations():
            path = self._path(generation)
            try:
                return self._read(path)
            except StateError as err:
                log.error("checkpoint %s is unusable (%s); trying the previous one", path.name, err)
                self.on_corrupt(path, str(err))
        return None

    def _read(self, path: Path) -> Checkpoint:
        arrays, header = state.load(path)
        if header.get("format") != FORMAT or header.get("version") != VERSION:
            raise StateError(f"{path} is not a {FORMAT} version {VERSION} file")
        try:
            live = {}
            for i, entry in enumerate(header["streams"]):
                prefix = f"{i}/"
                own = {k[len(prefix):]: a for k, a in arrays.items() if k.startswith(prefix)}
                live[entry["key"]] = (own, entry["header"])
            checkpoint = Checkpoint(int(header["generation"]), header["meta"], live, dict(header["stored"]))
        except (KeyError, TypeError, ValueError) as err:
            raise StateError(f"{path} has a malformed header: {err!r}") from None
        self._refs[checkpoint.generation] = set(checkpoint.stored.values())
        return checkpoint

    def _referenced(self, generation: int) -> set[str]:
        if generation not in self._refs:
            try:  # the header member alone, without reading or verifying the arrays
                with np.load(self._path(generation), allow_pickle=False) as npz:
                    header = json.loads(npz[state.HEADER].tobytes())
                self._refs[generation] = set(header.get("stored", {}).values())
            except Exception:  # unreadable: it can never be restored, so it keeps nothing alive
                self._refs[generation] = set()
        return self._refs[generation]

    def _collect(self) -> None:
        """Delete generations past ``keep`` and key files no kept generation references."""
        generations = self.generations()
        kept, dropped = generations[: self.keep], generations[self.keep :]
        for generation in dropped:
            self._path(generation).unlink(missing_ok=True)
            self._refs.pop(generation, None)
        needed = set().union(*(self._referenced(g) for g in kept)) if kept else set()
        for path in self.keys.glob("*.npz"):
            if path.name not in needed:
                path.unlink(missing_ok=True)
