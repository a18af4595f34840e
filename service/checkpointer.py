"""The checkpoints: the keys' states, the input positions and the event count they reflect, as one unit.

A ``Checkpointer`` owns everything a checkpoint records besides the states
(the events applied since the state began, and how far each resumable source
has been read), the newest generation, and both triggers:

* every ``every_events`` events, after the event that made it due
  (``after_event``, called by the worker);
* every ``every_seconds`` seconds, when anything moved (``tick``, called by
  the server's loop).

Any checkpoint, whatever made it, starts both counts again.  With
``background`` a checkpoint is written while events go on: by a forked child
that copies the keys' states from its copy-on-write memory of that instant
(``fork``, ``service.forked``), or else on a writer thread after the states
are copied between two events (the consistent cut).  One checkpoint is
written at a time, and ``settle`` takes in each one's outcome.  The next waits
for it, or, while a forked child writes, begins at the first event or tick
after the child has exited: events never wait for a child.

``max_share`` bounds the share of time that background checkpoints take, as
Flink's minimum pause between checkpoints does: after one that took T
seconds, the next that falls due waits until T * (1 / max_share - 1) seconds
after it ended: T at the daemon's 0.5 (``checkpoint.max_share``), none at 1,
this class's default.  With many keys a checkpoint can take
longer than the events between two (10,000 keys' changes take the child
about a second); back to back, a child would always be alive, and every row
the event loop writes would be copied on write once per checkpoint.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor

from . import forked
from .stats import Stats
from .table import StreamTable

log = logging.getLogger("streamrnn.checkpointer")


def _timed(f, *args) -> float:
    """Seconds that f(*args) took."""
    started = time.perf_counter()
    f(*args)
    return time.perf_counter() - started


class Position:
    """How far a resumable source has been read: lines and bytes handed to the worker, and for a log
    (``service.redis_source``) the ID of the newest entry handed over and how many entries were."""

    __slots__ = ("lines", "bytes", "entry", "entries")

    def __init__(self, lines: int = 0, bytes: int = 0, entry: str | None = None, entries: int = 0):
        self.lines, self.bytes, self.entry, self.entries = lines, bytes, entry, entries

    def as_dict(self) -> dict:
        out = {"lines": self.lines, "bytes": self.bytes}
        if self.entry is not None:
            out.update(entry=self.entry, entries=self.entries)
        return out


class Checkpointer:
    def __init__(self, table: StreamTable, stats: Stats, every_events: int = 0, every_seconds: float = 0.0,
                 background: bool = False, fork: bool = False, clock=time.monotonic, guard=None,
                 max_share: float = 1.0):
        self.table = table
        self.stats = stats
        self.every_events = every_events
        self.every_seconds = every_seconds
        self.background = background  # the checkpoints the triggers make are written while events go on
        self.fork = fork and forked.AVAILABLE  # ... by a forked child where the store allows it
        if not 0.0 < max_share <= 1.0:
            raise ValueError(f"max_share must be in (0, 1], got {max_share!r}")
        self.max_share = max_share  # of the time, at most, in background checkpoints (1: no pause)
        self.clock = clock
        # asked before every checkpoint: False refuses it (a partition whose lease is lost, ``service.leases``)
        self.guard = guard
        self.refused = 0  # checkpoints the guard refused
        self.events = 0  # events applied since the state began, across restarts
        self.generation = 0  # newest checkpoint written or restored
        self.positions: dict[str, Position] = {}
        self._due = every_events or None  # the event count at which the next checkpoint falls due
        self._last = clock()  # when the newest checkpoint began (or the checkpointer did)
        self._saved = None  # (events, positions) at the newest checkpoint
        self._writer: ThreadPoolExecutor | None = None
        # the checkpoint being written: (future of its seconds, generation, mark, seconds spent copying)
        self._writing: tuple[Future, int, tuple, float] | None = None
        self._deferred = False  # a background checkpoint fell due while a forked child wrote, or in the pause
        self._resume = None  # (clock) the end of the pause after the newest checkpoint: ``max_share``
        self._holding = False  # events are counted, and a checkpoint that falls due waits for ``release``
        self._held = False  # a checkpoint fell due during the hold

    # ----- what a checkpoint records besides the states ----------------------------------------
    def position(self, source: str) -> Position:
        """The position of a resumable source (restored from the checkpoint when there is one)."""
        return self.positions.setdefault(source, Position())

    def _mark(self):
        return self.events, tuple((name, p.bytes, p.entry) for name, p in self.positions.items())

    def dirty(self) -> bool:
        """Whether anything moved since the newest checkpoint."""
        return self._mark() != self._saved

    # ----- the triggers -------------------------------------------------------------------------
    def start_timer(self) -> None:
        """Count ``every_seconds`` from now: the server calls it when it begins serving (start-up, with
        the kernels' first compilation, can take longer than ``every_seconds``)."""
        self._last = self.clock()

    def hold(self) -> None:
        """Until ``release``, every checkpoint waits (by count, by time or asked for): a source whose replies
        go out after a batch of events (``service.redis_source``) holds it until they have, so that a
        checkpoint never covers an event whose reply was not sent.  A source that could not send them
        never releases: no checkpoint covers those events, and a restart applies and answers them again."""
        self._holding = True

    def release(self) -> None:
        """End a ``hold``: the checkpoint that fell due meanwhile, if one did."""
        self._holding = False
        if self._held:
            self._held = False
            self._fall_due()
        else:
            self.after_event()

    def after_event(self) -> None:
        """After an applied event (counted in ``events``): the checkpoint it made due, or the one deferred."""
        if self._holding:
            return
        if self._due is not None and self.events >= self._due:
            self._fall_due()
        elif self._deferred:
            self.settle()  # begins the deferred checkpoint once the child has exited

    def room(self) -> int | None:
        """How many events can be applied before a checkpoint falls due by count (at least 1; None: no limit).
        Events stepped together (``Worker``) stay within it, so a checkpoint covers whole batches.  A
        checkpoint deferred while a forked child writes the one before begins after a batch, not inside it."""
        if self._holding or self._due is None or self._deferred:
            return None
        return max(self._due - self.events, 1)

    def tick(self) -> None:
        """A moment without events (the server's loop): the outcome of a checkpoint being written, and
        one every ``every_seconds`` when anything moved."""
        self.settle()
        if self.every_seconds and self.clock() - self._last >= self.every_seconds:
            if self.dirty():
                self._fall_due()
            else:
                self._last = self.clock()

    # ----- checkpoints --------------------------------------------------------------------------
    def checkpoint(self, background: bool = False) -> bool:
        """Write a checkpoint of the changed keys with the positions; False (logged, counted) on failure.

        ``background``: write it while events go on (a forked child, or the writer thread after
        the states are copied here); True means the write has begun, and ``settle`` takes in how
        it ended.  A checkpoint waits for the one before it, except one for a forked child while
        the previous child is still writing: that one returns True at once and begins as soon as
        a ``settle`` finds the child has exited (the next event, the next tick), so that events
        never wait for a child.
        """
        if self._holding:  # written once the hold is released, if it ever is
            self._held = True
            return True
        writing = self._writing[0] if self._writing is not None else None
        if background and isinstance(writing, forked.ForkedCommit) and not writing.done():
            self._deferred = True
            return True
        self._deferred = False
        self.settle(wait=True)
        if self.guard is not None and not self.guard():
            self.refused += 1
            self.stats.checkpoint_failures += 1  # an operator hears of it as of any checkpoint not written
            log.error("checkpoint refused: this worker no longer owns the partition (its lease was taken)")
            return False
        started = time.perf_counter()
        meta = {"events": self.events, "created": time.time(),
                "positions": {name: p.as_dict() for name, p in self.positions.items()}}
        if self.every_events:
            self._due = self.events + self.every_events
        self._last = self.clock()
        in_child = background and self.fork and self.table.store.forkable
        try:
            checkpoint = self.table.checkpoint(self.generation + 1, meta, snapshots=not in_child)
            writing = self._write(checkpoint, background, in_child)
        except Exception as err:
            self.table.committed(ok=False)
            self._failed(err)
            return False
        self._writing = (writing, checkpoint.generation, self._mark(), time.perf_counter() - started)
        return True if background else self.settle(wait=True)

    def _write(self, checkpoint, background: bool, in_child: bool = False):
        """The store's commit of ``checkpoint``: by a forked child, on the writer thread or here; a future of
        its seconds (``ForkedCommit`` has the same ``done`` and ``result``)."""
        if in_child:
            try:
                return forked.ForkedCommit(self.table.store, checkpoint)
            except OSError as err:  # no fork now (memory, process limits): the writer thread instead
                log.warning("cannot fork a checkpoint writer (%s); writing it on a thread", err)
                checkpoint.live = {key: stream.snapshot() for key, stream in checkpoint.live.items()}
        if background:
            if self._writer is None:
                self._writer = ThreadPoolExecutor(1, thread_name_prefix="streamrnn-checkpoint")
            return self._writer.submit(_timed, self.table.store.commit, checkpoint)
        done = Future()
        try:
            done.set_result(_timed(self.table.store.commit, checkpoint))
        except Exception as err:
            done.set_exception(err)
        return done

    def settle(self, wait: bool = False, begin: bool = True) -> bool:
        """Take in the outcome of the checkpoint being written, if it has ended (or wait for it); then, unless
        waiting or told not to ``begin``, the deferred checkpoint, if its pause is over.

        False if it failed (logged and counted; its keys count as changed again), else True.
        """
        ok = True
        if self._writing is not None:
            future, generation, mark, copying = self._writing
            if not wait and not future.done():
                return True
            ok = self._take_in(future, generation, mark, copying)
        if self._deferred and begin and not wait:  # one fell due while the child wrote, or in the pause
            self._fall_due()
        return ok

    def _fall_due(self) -> None:
        """A checkpoint fell due (by count, by time, at the end of a hold, or deferred): it begins now, or, for
        a background one, once the pause after the newest one is over (``max_share``) and no child writes."""
        if self.background:
            self.settle(begin=False)  # the one before, if it has ended: that begins its pause
            if self._resume is not None and self.clock() < self._resume:
                self._deferred = True
                return
        self.checkpoint(background=self.background)

    def _take_in(self, future, generation: int, mark, copying: float) -> bool:
        self._writing = None
        try:
            writing = future.result()
        except Exception as err:
            self.table.committed(ok=False)
            self._failed(err)
            return False
        if self.max_share < 1.0:  # the pause before the next may begin (as long as this one took, at 0.5)
            self._resume = self.clock() + (copying + writing) * (1.0 / self.max_share - 1.0)
        self.table.committed()
        self.generation = generation
        self._saved = mark
        self.stats.checkpoint.observe(copying + writing)
        self.stats.checkpoint_last_success = time.time()
        log.debug("checkpoint %d written: %d events, %d live keys", generation, mark[0], len(self.table.live))
        return True

    def close(self) -> None:
        """Wait for a checkpoint being written, and stop the writer thread."""
        self.settle(wait=True)
        if self._writer is not None:
            self._writer.shutdown()
            self._writer = None

    def _failed(self, err: Exception) -> None:
        log.error("checkpoint failed: %s", err)
        self.stats.checkpoint_failures += 1

    def restore(self, checkpoint=None) -> bool:
        """Load ``checkpoint``, or else the store's newest good one, if any (StateError if it is for another
        model)."""
        checkpoint = checkpoint if checkpoint is not None else self.table.store.latest()
        if checkpoint is None:
            return False
        self.table.load(checkpoint)
        self.events = int(checkpoint.meta["events"])
        self.generation = checkpoint.generation
        self.positions = {name: Position(int(p["lines"]), int(p["bytes"]), p.get("entry"), int(p.get("entries", 0)))
                          for name, p in checkpoint.meta.get("positions", {}).items()}
        if self.every_events:
            self._due = self.events + self.every_events
        self._last = self.clock()
        self._saved = self._mark()
        # the last successful checkpoint is the one just restored, not "never"
        self.stats.checkpoint_last_success = float(checkpoint.meta.get("created", 0.0))
        return True
