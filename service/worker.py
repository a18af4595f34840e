"""The worker: one line in, one reply out, the stream's network stepped in between.

``Worker.handle`` is everything the daemon does with a line, and the same
code serves ``streamrnn serve`` (all sources) and ``streamrnn replay``.  It is
synchronous: a source hands it one line at a time, so events never interleave
inside a step.  After each applied event it tells its ``Checkpointer``
(``service.checkpointer``), which counts the events, keeps the input positions
and writes the checkpoints they fall due at.
"""

from __future__ import annotations

import json
import logging
import time
from json.encoder import c_make_encoder, encode_basestring_ascii

from .checkpointer import Checkpointer, Position
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


class Worker:
    """``owns(key)``, when given, says whether a key is this worker's (a partition's worker on Redis Streams):
    an event of another key is refused with ``wrong_partition``, so no key's state is split over two."""

    def __init__(self, table: StreamTable, stats: Stats, checkpointer: Checkpointer, default_key: str = "default",
                 owns=None):
        self.table = table
        self.stats = stats
        self.checkpointer = checkpointer
        self.default_key = default_key
        self.owns = owns

    @property
    def events(self) -> int:
        """Events applied since the state began, across restarts (the checkpointer counts them)."""
        return self.checkpointer.events

    # ----- lines ------------------------------------------------------------------------
    #: lines a batch parses before it applies them: the batch's events stay in the cache between the passes
    BATCH = 64

    def handle(self, line: bytes | None, size: int, position: Position | None = None) -> bytes:
        """The reply line (with newline) to one input line of ``size`` bytes (newline included).

        ``line`` is None for a line over the length limit.  Never raises.
        """
        return self.handle_lines([(line, size)], position)

    def handle_lines(self, lines: list, position: Position | None = None, should_stop=None) -> bytes:
        """The reply lines to ``lines`` [(line, size), ...], in input order, each as ``handle`` answers it.

        In passes over batches of ``BATCH`` lines: every line is parsed (which changes nothing), then
        the events are applied one by one in input order, then the replies are encoded, so that each
        pass's code and data stay in the cache (parsing, stepping and encoding event by event cost about
        a fifth more per event).  ``should_stop()`` is asked after each event applied: the lines after
        the one in hand get no reply and their position is not counted, as if never read.  Never raises.
        """
        clock, texts = time.perf_counter, []
        for at in range(0, len(lines), self.BATCH):
            batch = lines[at: at + self.BATCH]
            parsed = []
            for line, size in batch:
                started = clock()
                parsed.append((self._parse(line, size), clock() - started))
            replies, stop = [], False
            for (_, size), (event, seconds) in zip(batch, parsed):
                started = clock()
                reply, timed = self._apply(event, size, position)
                replies.append((reply, timed, seconds + clock() - started))
                if should_stop is not None and should_stop():
                    stop = True
                    break
            for reply, timed, seconds in replies:
                started = clock()
                texts.append(self._encode(reply))
                if timed:  # parse, step (and any checkpoint it made due: alerts on latency see stalls), reply
                    self.stats.latency.observe(seconds + clock() - started)
            if stop:
                break
        return ("\n".join(texts) + "\n").encode() if texts else b""

    @staticmethod
    def _parse(line: bytes | None, size: int):
        """The event on the line, or the ProtocolError (or other exception: a bug) that refuses it."""
        try:
            if line is None:
                raise ProtocolError("too_long", f"line of {size} bytes is over the length limit")
            return parse(line)
        except Exception as err:  # noqa: BLE001 - answered by _apply, in input order
            return err

    def _apply(self, event, size: int, position: Position | None) -> tuple[dict, bool]:
        """(the reply to a parsed line, whether it was an event applied); counts the line's position."""
        command = type(event) is Command
        if position is not None and not command:  # commands are questions, not part of the stream: they never
            position.lines += 1  # move it; a line that is not an event still was read
            position.bytes += size
        if isinstance(event, Exception):
            if isinstance(event, ProtocolError):
                self.stats.reject(event.code)
                return error(event.code, event.message, event.id), False
            log.error("internal error on a line", exc_info=event)
            self.stats.reject("internal")
            return error("internal", f"internal error: {type(event).__name__}", None), False
        try:
            reply = self.respond(event)
        except ProtocolError as err:
            self.stats.reject(err.code)
            return error(err.code, err.message, event.id), False
        except Exception as err:  # a bug: keep serving, say where
            log.exception("internal error on a line")
            self.stats.reject("internal")
            return error("internal", f"internal error: {type(err).__name__}", getattr(event, "id", None)), False
        if command:
            return reply, False
        self.checkpointer.after_event()
        return reply, True

    def _encode(self, reply: dict) -> str:
        try:
            return encode(reply)
        except Exception as err:  # a bug: keep serving, say where
            log.exception("internal error encoding a reply")
            self.stats.reject("internal")
            return encode(error("internal", f"internal error: {type(err).__name__}", reply.get("id")))

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
        if self.owns is not None and not self.owns(key):
            raise ProtocolError("wrong_partition", self.owns.refusal(key))
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
        self.checkpointer.events += 1
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
            "generation": self.checkpointer.generation,
            "positions": {name: p.as_dict() for name, p in self.checkpointer.positions.items()},
        }
        if command.key is not None:
            reply.update(key=command.key, step=table.step_of(command.key))
        return reply
