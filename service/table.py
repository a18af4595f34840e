"""The keyed streams: live ones in memory up to a bound, the rest checkpointed out.

Live keys sit in least-recently-used order.  Past ``max_keys`` the least
recently used key is written to the checkpoint store and dropped from memory;
when an event for it comes again its state is read back, exactly as it was.

Bounds, so that no stream of events can exhaust memory or disk:

* a new key whose state is over ``max_key_bytes`` (measured after its first
  event) is refused (``too_large``), so memory stays under about
  ``2.5 * max_keys * max_key_bytes`` (a live key holds its covariances in
  full, where its state has their triangles, and its Python objects);
* at most ``max_stored_keys`` keys are checkpointed out.  When that many are
  stored and the live table is full, a new key is refused
  (``too_many_keys``, policy ``refuse``), or the stored key that has gone
  longest without an event is forgotten (policy ``expire``: logged, counted,
  its file deleted once no kept checkpoint refers to it).

``digest`` is incremental: a stored key's digest is computed once, when it is
checkpointed out, and kept with the checkpoint; a live key's is computed again
only when the key has taken events since the last ``digest``.

Model counters (steps, updates, skipped and clipped updates) of keys out of
memory are kept in ``retired`` so that totals over all keys stay monotonic.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict

from streamrnn import state

from . import streams
from .store import Checkpoint, CheckpointStore

log = logging.getLogger("streamrnn.table")


class KeyUnavailable(Exception):
    """A stored key's state cannot be read now (the store is out of reach); nothing changed, retry."""


class KeyCorrupt(Exception):
    """A stored key's state is unreadable for good; its file was quarantined and the key forgotten."""


class KeyRefused(Exception):
    """A new key the bounds do not admit: ``code`` (``too_many_keys`` or ``too_large``) and why; nothing changed."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


POLICIES = ("refuse", "expire")
COUNTERS = (*streams.COUNTERS, "bounded")


def digest_of(arrays: dict, header: dict) -> str:
    """SHA-256 of one stream's whole state (its arrays' checksum and its header)."""
    text = json.dumps(header, sort_keys=True) + state.checksum(arrays)
    return hashlib.sha256(text.encode()).hexdigest()


class StreamTable:
    def __init__(self, template, store: CheckpointStore, max_keys: int, max_stored_keys: int = 100_000,
                 when_full: str = "refuse", max_key_bytes: int = 16 << 20):
        if when_full not in POLICIES:
            raise ValueError(f"when_full must be one of {POLICIES}, got {when_full!r}")
        self.template = template
        self.store = store
        self.max_keys = max_keys
        self.max_stored_keys = max_stored_keys
        self.when_full = when_full
        self.max_key_bytes = max_key_bytes
        self._sizes: dict[tuple, int] = {}  # a new key's state size, by its stream's layout
        self.live: OrderedDict[str, streams.Stream] = OrderedDict()
        self.stored: dict[str, str] = {}  # key -> store reference, least recently used first
        self.digests: dict[str, str] = {}  # stored key -> digest_of its state
        self._live_digests: dict[str, tuple[int, str]] = {}  # live key -> (its events then, digest)
        self._changed: set[str] = set()  # live keys handed out (``get``) or added since the newest checkpoint
        self._writing: set[str] = set()  # the changed keys of the checkpoint being written
        self.retired = dict.fromkeys(COUNTERS, 0)
        self.evictions = 0
        self.restores = 0
        self.restore_failures = 0
        self.eviction_failures = 0
        self.corrupt_keys = 0  # stored keys found unreadable and quarantined
        self.expired_keys = 0  # stored keys forgotten to make room (policy "expire")

    def __len__(self) -> int:
        return len(self.live) + len(self.stored)

    def get(self, key: str) -> streams.Stream | None:
        """The key's stream (read back if it was checkpointed out), or None for a new key.

        The caller is about to apply an event to it, so the next checkpoint writes it.
        """
        stream = self.live.get(key)
        if stream is not None:
            self.live.move_to_end(key)
            self._changed.add(key)
            return stream
        ref = self.stored.get(key)
        if ref is None:
            return None
        stream = streams.restore(self.template, *self.read(key))
        del self.stored[key]
        digest = self.digests.pop(key, None)
        if digest is not None:  # the state read back is the state that was hashed
            self._live_digests[key] = (stream.events, digest)
        self._retire(stream, -1)
        self.restores += 1
        self.add(key, stream)
        return stream

    def read(self, key: str) -> tuple[dict, dict]:
        """A stored key's (arrays, header).

        KeyUnavailable if the store is out of reach (the key stays stored); KeyCorrupt if the
        state is unreadable for good: then its file is quarantined, the key is forgotten (its
        next event starts it afresh), it is logged and counted -- never reset silently.
        """
        ref = self.stored[key]
        try:
            arrays, header = self.store.get_stream(ref)
            if header.get("kind") not in streams.BY_NAME:
                raise state.StateError(f"no stream kind in {ref}")
            return arrays, header
        except OSError as err:
            raise KeyUnavailable(f"the state of key {key!r} cannot be read now ({err}); nothing changed, "
                                 "try again") from None
        except (state.StateError, KeyError, ValueError) as err:
            where = self.store.quarantine(ref)
            del self.stored[key]
            self.digests.pop(key, None)
            self.corrupt_keys += 1
            self.restore_failures += 1
            log.error("the stored state of key %r is corrupt (%s); moved to %s, and the key is forgotten",
                      key, err, where)
            raise KeyCorrupt(f"the stored state of key {key!r} was corrupt and has been quarantined; "
                             "this event was not applied, and the key's next event starts it afresh") from None

    def step_of(self, key: str) -> int:
        """The events ``key`` has taken in, 0 for a key never seen; a stored key's are read from its
        header, and it stays stored (KeyUnavailable / KeyCorrupt as ``read``)."""
        if key in self.stored:
            return int(self.read(key)[1]["events"])
        stream = self.live.get(key)
        return stream.events if stream is not None else 0

    def check_room(self, key: str) -> None:
        """KeyRefused if a new ``key`` would need a stored key more than ``max_stored_keys`` allows."""
        full = len(self.live) >= self.max_keys and len(self.stored) >= self.max_stored_keys
        if full and self.when_full == "refuse":
            raise KeyRefused("too_many_keys", f"key {key!r} is new, and {len(self.live)} keys are live and "
                             f"{len(self.stored)} stored, the most streams.max_keys and "
                             "streams.max_stored_keys allow (policy refuse)")

    def check_size(self, key: str, stream: streams.Stream) -> None:
        """KeyRefused if a new key's state (after its first event) is over ``max_key_bytes``."""
        # measured once per layout (a snapshot costs more than the key's first event), and again for every
        # key of a layout that is not far under the limit
        layout = stream.layout()
        size = self._sizes.get(layout)
        if size is None or size > self.max_key_bytes // 2:
            size = self._sizes[layout] = sum(a.nbytes for a in stream.snapshot()[0].values())
        if size > self.max_key_bytes:
            raise KeyRefused("too_large", f"key {key!r} would hold {size} bytes of state, over "
                             f"streams.max_key_bytes = {self.max_key_bytes}; use fewer features, outputs or channels")

    def add(self, key: str, stream: streams.Stream) -> None:
        self.live[key] = stream
        self._changed.add(key)
        while len(self.live) > self.max_keys and self._evict():
            pass
        while len(self.stored) > self.max_stored_keys and self.when_full == "expire":
            self._expire()

    def _evict(self) -> bool:
        """Checkpoint the least recently used key out; False (it stays in memory) if the store fails."""
        key, stream = next(iter(self.live.items()))
        snap = stream.snapshot()
        try:
            ref = self.store.put_stream(key, *snap)
        except Exception as err:
            self.eviction_failures += 1
            log.error("cannot checkpoint key %r out of memory (%s); it stays in memory for now", key, err)
            return False
        del self.live[key]
        self.stored[key] = ref
        self.digests[key] = digest_of(*snap)
        self._live_digests.pop(key, None)
        self._changed.discard(key)
        self._retire(stream, +1)
        stream.release()
        self.evictions += 1
        return True

    def _expire(self) -> None:
        """Forget the stored key that has gone longest without an event (its counters stay in the totals)."""
        key = next(iter(self.stored))
        del self.stored[key]
        self.digests.pop(key, None)
        self.expired_keys += 1
        log.warning("forgot stored key %r: %d keys are stored, the most streams.max_stored_keys allows "
                    "(policy expire)", key, self.max_stored_keys)

    def _retire(self, stream, sign: int) -> None:
        for name in COUNTERS:
            self.retired[name] += sign * stream.counters[name]

    def totals(self) -> dict[str, int]:
        """Model counters summed over every key, live or stored."""
        out = dict(self.retired)
        for stream in self.live.values():
            counters = stream.counters
            for name in COUNTERS:
                out[name] += counters[name]
        return out

    # ----- whole-table state ------------------------------------------------------------
    def checkpoint(self, generation: int, meta: dict, snapshots: bool = True) -> Checkpoint:
        """A checkpoint of the keys that changed since the last one (``committed``); the store holds the rest.

        A stream changes only by taking an event, and events reach it through ``get``, so a live
        key not handed out or added since the last commit or load is unchanged; of those, the
        store says which it can reuse.  ``snapshots=False`` leaves the streams themselves in
        ``live``, for a forked child to copy (``service.forked``): such a checkpoint must be
        committed before the next event.
        """
        meta = dict(meta, retired=dict(self.retired), digests=dict(self.digests))
        changed = self._changed
        unchanged = [k for k in self.live if k not in changed]
        reuse = self.store.reusable(unchanged, len(self.live) - len(unchanged))
        live = {k: s.snapshot() if snapshots else s for k, s in self.live.items() if k not in reuse}
        checkpoint = Checkpoint(generation, meta, live, dict(self.stored), order=list(self.live), cut=self.store.cut())
        self._writing, self._changed = changed, set()
        return checkpoint

    def committed(self, ok: bool = True) -> None:
        """The newest checkpoint built is in the store (ok), or failed: its keys count as changed again."""
        if not ok:
            self._changed |= self._writing
        self._writing = set()

    def load(self, checkpoint: Checkpoint) -> None:
        """Replace everything with the checkpoint's keys (StateError if one does not fit)."""
        live = OrderedDict()
        try:
            for key, snap in checkpoint.live.items():
                live[key] = streams.restore(self.template, *snap)
        except BaseException:
            for stream in live.values():
                stream.release()
            raise
        self.close()
        self.live, self.stored = live, dict(checkpoint.stored)
        self._live_digests = {}
        self._changed, self._writing = set(), set()
        digests = checkpoint.meta.get("digests", {})
        self.digests = {key: digests[key] for key in self.stored if key in digests}
        retired = checkpoint.meta.get("retired", {})
        self.retired = {name: int(retired.get(name, 0)) for name in COUNTERS}
        while len(self.live) > self.max_keys and self._evict():
            pass

    def close(self) -> None:
        """Let every live key go from memory (the table is done with, or replaced): their rows are freed."""
        for stream in self.live.values():
            stream.release()
        self.live = OrderedDict()

    def digest(self) -> str:
        """SHA-256 over every key's state, live or stored: equal digests, equal daemons.

        A stored key's digest was kept when it was checkpointed out, and a live key's is reused
        while its event count stays the same (a stream changes only by taking an event), so only
        the live keys that moved are hashed here.  A stored key without one (a checkpoint written before digests were kept) is
        read once; found corrupt, it is quarantined and left out (``read``); KeyUnavailable if
        the store is out of reach.
        """
        total = hashlib.sha256()
        for key in sorted(set(self.live) | set(self.stored)):
            stream = self.live.get(key)
            if stream is not None:
                events, digest = self._live_digests.get(key, (-1, ""))
                if events != stream.events:
                    digest = digest_of(*stream.snapshot())
                    self._live_digests[key] = (stream.events, digest)
            elif key in self.digests:
                digest = self.digests[key]
            else:
                try:
                    digest = self.digests[key] = digest_of(*self.read(key))
                except KeyCorrupt:
                    continue
            total.update(f"{key}\0{digest}\n".encode())
        return total.hexdigest()
