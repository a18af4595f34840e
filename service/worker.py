"""The worker: one line in, one reply out, the stream's network stepped in between.

``Worker.handle`` is everything the daemon does with a line, and the same
code serves ``streamrnn serve`` (all sources) and ``streamrnn replay``.  It is
synchronous: a source hands it one line at a time, so events never interleave
inside a step.

The worker also owns the input positions (lines and bytes taken in from each
resumable source) and the checkpoints: every ``checkpoint.every_events``
events it writes one, consistent with the positions, after the event that
made it due.  With ``background`` the checkpoint is written while events go
on: by a forked child that copies the keys' states from its copy-on-write
memory of that instant (``fork``, ``service.forked``), or else on a writer
thread after the states are copied between two events (the consistent cut).
One checkpoint is written at a time, and ``settle`` takes in each one's
outcome.  The next waits for it, or, while a forked child writes, begins at
the first event or tick after the child has exited: events never wait for a
child.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from json.encoder import c_make_encoder, encode_basestring_ascii

from . import forked
from .protocol import Command, ProtocolError, error, parse
from .stats import Stats
from .streams import KINDS
from .table import KeyCorrupt, KeyRefused, KeyUnavailable, StreamTable

log = logging.getLogger("streamrnn.worker")


def _unserialisable(value):
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


if c_make_encoder is not None:  # one C encoder for every reply, instead of one per json.dumps call
    _c_encode = c_make_encoder(None, _unserialisable, encode_basestring_ascii, None, ":", ",", False, False, False)

    def _encode(value) -> str:
        return "".join(_c_encode(value, 0))
else:  # pragma: no cover - CPython always has the C encoder
    _encode = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode


def encode(reply: dict) -> str:
    """A reply as compact JSON; a non-finite float (which JSON cannot hold) becomes null.

    Floats are written with ``repr``, as ``json`` writes them, so they read back bit for bit.
    """
    try:
        return _encode(reply)
    except ValueError:  # NaN or Infinity somewhere
        return _encode(_finite(reply))


def _finite(value):
    if isinstance(value, float):
        return value if value - value == 0.0 else None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def _timed(f, *args) -> float:
    """Seconds that f(*args) took."""
    started = time.perf_counter()
    f(*args)
    return time.perf_counter() - started


class Position:
    """How far a resumable source has been read: lines and bytes handed to the worker."""

    __slots__ = ("lines", "bytes")

    def __init__(self, lines: int = 0, bytes: int = 0):
        self.lines, self.bytes = lines, bytes

    def as_dict(self) -> dict:
        return {"lines": self.lines, "bytes": self.bytes}


class Worker:
    def __init__(self, table: StreamTable, stats: Stats, default_key: str = "default", every_events: int = 0,
                 background: bool = False, fork: bool = False):
        self.table = table
        self.stats = stats
        self.default_key = default_key
        self.every_events = every_events
        self.background = background  # the checkpoints this worker makes due are written while events go on
        self.fork = fork and forked.AVAILABLE  # ... by a forked child where the store allows it
        self.events = 0  # events applied since the state began, across restarts
        self.generation = 0  # newest checkpoint written or restored
        self.positions: dict[str, Position] = {}
        self._due = every_events or None
        self._saved = None  # (events, positions) at the newest checkpoint
        self._writer: ThreadPoolExecutor | None = None
        # the checkpoint on the writer thread: (future of its seconds, generation, mark, seconds spent copying)
        self._writing: tuple[Future, int, tuple, float] | None = None
        self._deferred = False  # a background checkpoint fell due while a forked child was writing

    # ----- lines ------------------------------------------------------------------------
    def handle(self, line: bytes | None, size: int, position: Position | None = None) -> bytes:
        """The reply line (with newline) to one input line of ``size`` bytes (newline included).

        ``line`` is None for a line over the length limit.  Never raises.
        """
        started = time.perf_counter()
        event = None
        try:
            if line is None:
                raise ProtocolError("too_long", f"line of {size} bytes is over the length limit")
            event = parse(line)
            if position is not None and type(event) is not Command:
                position.lines += 1  # commands are questions, not part of the stream: they never move it
                position.bytes += size
            text = encode(self.respond(event))
        except ProtocolError as err:
            if position is not None and event is None:  # a line that is not an event still was read
                position.lines += 1
                position.bytes += size
            self.stats.reject(err.code)
            text = encode(error(err.code, err.message, err.id if event is None else event.id))
        except Exception as err:  # a bug: keep serving, say where
            if position is not None and event is None:
                position.lines += 1
                position.bytes += size
            log.exception("internal error on a line")
            self.stats.reject("internal")
            text = encode(error("internal", f"internal error: {type(err).__name__}", getattr(event, "id", None)))
        else:
            if type(event) is not Command:
                if self._due is not None and self.events >= self._due:
                    # inside the event's latency: alerts on latency see checkpoint stalls
                    self.checkpoint(background=self.background)
                elif self._deferred:
                    self.settle()  # begins the deferred checkpoint once the child has exited
                self.stats.latency.observe(time.perf_counter() - started)
        return (text + "\n").encode()

    def unanswerable(self, code: str, message: str, size: int = 0, position: Position | None = None) -> None:
        """A line no one can be answered for (a connection dropped mid-line): count and log it."""
        if position is not None:
            position.bytes += size
        self.stats.reject(code)
        log.warning("%s", message)

    # ----- events -----------------------------------------------------------------------------
    def respond(self, event) -> dict:
        """The reply to a parsed event; ProtocolError (and no state change) if it cannot apply."""
        try:
            return self._respond(event)
        except KeyUnavailable as err:
            raise ProtocolError("unavailable", str(err)) from None
        except KeyCorrupt as err:
            raise ProtocolError("corrupt_state", str(err)) from None
        except KeyRefused as err:
            raise ProtocolError(err.code, str(err)) from None

    def _respond(self, event) -> dict:
        kind = KINDS.get(type(event))
        if kind is None:
            return self._command(event)
        key = event.key or self.default_key
        stream = self.table.get(key)
        created = stream is None
        if created:
            self.table.check_room(key)
            stream = kind.create(self.table.template, event)
        elif type(stream) is not kind:
            raise ProtocolError("wrong_kind", f"key {key!r} is a {stream.kind} stream; "
                                f"this is a {kind.kind} event")
        output, loss = stream.apply(event)
        if created:  # a new stream is not in the table yet: refusing it now changes nothing
            self.table.check_size(key, stream)
            self.table.add(key, stream)
        self.events += 1
        stats = self.stats
        if kind.kind == "supervised":
            reply = {"id": event.id, "key": key, "step": stream.events, "prediction": output}
            stats.last_prediction = output
            if event.y is not None:
                stats.last_target = event.y
        else:
            reply = {"id": event.id, "key": key, "step": stream.events, "forecast": output}
            stats.last_prediction = output[0]
            stats.last_target = event.value
        if loss is None:
            stats.outcomes["predicted"] += 1
        elif loss - loss == 0.0:  # finite
            reply["loss"] = loss
            stats.outcomes["learned"] += 1
            stats.loss_sum += loss
            stats.last_loss = loss
            stats.loss_count += 1
        else:  # the loss overflowed: the model skipped the update (JSON has no Infinity: null)
            reply["loss"] = None
            stats.outcomes["skipped"] += 1
        return reply

    def _command(self, command: Command) -> dict:
        table = self.table
        if command.command == "auth":  # a line that reaches the worker comes from a trusted or authenticated source
            return {"id": command.id, "authenticated": True}
        if command.command == "digest":
            return {"id": command.id, "digest": table.digest(), "keys": len(table), "events": self.events}
        reply = {
            "id": command.id, "events": self.events, "live_keys": len(table.live), "keys": len(table),
            "generation": self.generation,
            "positions": {name: p.as_dict() for name, p in self.positions.items()},
        }
        if command.key is not None:  # a stored key's header is read, the key stays where it is
            stream = table.live.get(command.key)
            step = stream.events if stream is not None else 0
            if command.key in table.stored:
                step = table.stored_step(command.key)
            reply.update(key=command.key, step=step)
        return reply

    # ----- positions and checkpoints ----------------------------------------------------------
    def position(self, source: str) -> Position:
        """The position of a resumable source (restored from the checkpoint when there is one)."""
        return self.positions.setdefault(source, Position())

    def _mark(self):
        return self.events, tuple((name, p.bytes) for name, p in self.positions.items())

    def dirty(self) -> bool:
        """Whether anything moved since the newest checkpoint."""
        return self._mark() != self._saved

    def checkpoint(self, background: bool = False) -> bool:
        """Write a checkpoint of the changed keys with the positions; False (logged, counted) on failure.

        ``background``: write it while events go on (a forked child, or the writer thread after
        the states are copied here); True means the write has begun, and ``settle`` takes in how
        it ended.  A checkpoint waits for the one before it, except one for a forked child while
        the previous child is still writing: that one returns True at once and begins as soon as
        a ``settle`` finds the child has exited (the next event, the next tick), so that events
        never wait for a child.
        """
        writing = self._writing[0] if self._writing is not None else None
        if background and isinstance(writing, forked.ForkedCommit) and not writing.done():
            self._deferred = True
            return True
        self._deferred = False
        self.settle(wait=True)
        started = time.perf_counter()
        meta = {"events": self.events, "created": time.time(),
                "positions": {name: p.as_dict() for name, p in self.positions.items()}}
        if self.every_events:
            self._due = self.events + self.every_events
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

    def settle(self, wait: bool = False) -> bool:
        """Take in the outcome of the checkpoint being written, if it has ended (or wait for it).

        False if it failed (logged and counted; its keys count as changed again), else True.
        """
        ok = True
        if self._writing is not None:
            future, generation, mark, copying = self._writing
            if not wait and not future.done():
                return True
            ok = self._take_in(future, generation, mark, copying)
        if self._deferred and not wait:  # a checkpoint fell due while the child wrote: it begins now
            self.checkpoint(background=True)
        return ok

    def _take_in(self, future, generation: int, mark, copying: float) -> bool:
        self._writing = None
        try:
            writing = future.result()
        except Exception as err:
            self.table.committed(ok=False)
            self._failed(err)
            return False
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

    def restore(self) -> bool:
        """Load the newest good checkpoint, if any (StateError if it is for another model)."""
        checkpoint = self.table.store.latest()
        if checkpoint is None:
            return False
        self.table.load(checkpoint)
        self.events = int(checkpoint.meta["events"])
        self.generation = checkpoint.generation
        self.positions = {name: Position(int(p["lines"]), int(p["bytes"]))
                          for name, p in checkpoint.meta.get("positions", {}).items()}
        if self.every_events:
            self._due = self.events + self.every_events
        self._saved = self._mark()
        # the last successful checkpoint is the one just restored, not "never"
        self.stats.checkpoint_last_success = float(checkpoint.meta.get("created", 0.0))
        return True
