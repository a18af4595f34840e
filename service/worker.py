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

import numpy as np

from .checkpointer import Checkpointer, Position
from .pooled import PooledStream, loss_of, plain, target
from .protocol import Command, ProtocolError, SupervisedEvent, error, parse
from .stats import Stats
from .streams import KINDS, SupervisedStream
from .table import KeyCorrupt, KeyRefused, KeyUnavailable, StreamTable

log = logging.getLogger("streamrnn.worker")
_NAN = float("nan")  # a batch's target for an event without one


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


def _json_float(value: float) -> str:
    """A float as ``encode`` writes it: repr, or null when not finite."""
    return repr(value) if value - value == 0.0 else "null"


def _json_id(value) -> str:
    """An event's id (``protocol.EventId``: a str, an int or None) as ``encode`` writes it."""
    if type(value) is str:
        return encode_basestring_ascii(value)
    return repr(value) if type(value) is int else encode(value)


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
    an event of another key is refused with ``wrong_partition``, so no key's state is split over two.

    ``batch``: the most events of distinct pooled keys (``pooled``) stepped in one call.  A batch is cut
    from the input in input order, never by timing: it takes the next events while each is a supervised
    event of a key held as a row of the same pool (or a new such key the live table has room for), with
    plain numbers for features, no key twice, and no checkpoint falling due before its last event.  Its
    replies, counts and state are those of the same events applied one by one."""

    def __init__(self, table: StreamTable, stats: Stats, checkpointer: Checkpointer, default_key: str = "default",
                 owns=None, batch: int = 64):
        self.table = table
        self.stats = stats
        self.checkpointer = checkpointer
        self.default_key = default_key
        self.owns = owns
        self.batch = batch

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
        a fifth more per event).  An event's latency is its share of its pass's parsing and encoding,
        its share of the step it was taken in, and its own bookkeeping (the clock is read per pass and
        per step, not per line: a read costs about 0.07 us).  ``should_stop()`` is asked after each event
        applied: the lines after the one in hand get no reply and their position is not counted, as if
        never read.  Never raises.
        """
        clock, texts, observe = time.perf_counter, [], self.stats.latency.observe
        span = max(self.BATCH, self.batch)  # a pass holds the longest batch of events stepped together
        for at in range(0, len(lines), span):
            batch = lines[at: at + span]
            started = clock()
            parsed = [self._parse(line, size) for line, size in batch]
            parsing = (clock() - started) / len(batch)
            replies, stop, i = [], False, 0
            while i < len(batch) and not stop:
                run = self._run(parsed, i) if self.batch > 1 else None
                answered = self._apply_run(run, batch, parsed, i, position) if run is not None else None
                if answered is not None:
                    replies += answered
                    i += len(answered)
                else:
                    started = clock()
                    reply, timed = self._apply(parsed[i], batch[i][1], position)
                    replies.append((reply, timed, clock() - started))
                    i += 1
                stop = should_stop is not None and should_stop()
            started = clock()
            texts += [reply if type(reply) is str else self._encode(reply) for reply, _, _ in replies]
            shared = parsing + (clock() - started) / len(replies)
            for _, timed, seconds in replies:
                if timed:  # parse, step (and any checkpoint it made due: alerts on latency see stalls), reply
                    observe(shared + seconds)
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

    def _apply(self, event, size: int, position: Position | None, step=None) -> tuple[dict, bool]:
        """(the reply to a parsed line, whether it was an event applied); counts the line's position.
        ``step(event)``, when given, replies to an event of a batch, stepped already (``_apply_run``)."""
        command = type(event) is Command
        if not command:  # commands are questions, not part of the stream: they never move it
            self._count(position, size)
        if isinstance(event, Exception):
            if isinstance(event, ProtocolError):
                self.stats.reject(event.code)
                return error(event.code, event.message, event.id), False
            log.error("internal error on a line", exc_info=event)
            self.stats.reject("internal")
            return error("internal", f"internal error: {type(event).__name__}", None), False
        try:
            reply = self.respond(event, step, encoded=True)
        except ProtocolError as err:
            self.stats.reject(err.code)
            return error(err.code, err.message, event.id), False
        except Exception as err:  # a bug: keep serving, say where
            log.exception("internal error on a line")
            self.stats.reject("internal")
            return error("internal", f"internal error: {type(err).__name__}", getattr(event, "id", None)), False
        if command:
            return reply, False
        if step is None:  # a batch's events are counted first, and its checkpoint (if one fell due) comes last
            self.checkpointer.after_event()
        return reply, True

    @staticmethod
    def _count(position: Position | None, size: int) -> None:
        """A line of the stream was read (an event or not, applied or refused): its position moves past it."""
        if position is not None:
            position.lines += 1
            position.bytes += size

    # ----- batches ------------------------------------------------------------------------------
    def _run(self, parsed: list, at: int) -> tuple | None:
        """(pool, [(key, stream or None for a new key, features, u, y)]) of the events from ``at`` on that step
        together (see the class), or None when fewer than two do."""
        if at + 1 >= len(parsed):  # first the cheap test that two events in a row could go together
            return None
        first, second = parsed[at], parsed[at + 1]
        if type(first) is not SupervisedEvent or type(second) is not SupervisedEvent or \
                (first.key or self.default_key) == (second.key or self.default_key):
            return None  # (one key's events, the common case with few keys, never do)
        table, template = self.table, self.table.template
        room = self.checkpointer.room()
        limit = self.batch if room is None else min(self.batch, room)
        keys, items, pool, new = set(), [], None, 0
        for j in range(at, len(parsed)):
            event = parsed[j]
            if len(items) == limit or type(event) is not SupervisedEvent:
                break
            key = event.key or self.default_key
            if key in keys or (self.owns is not None and not self.owns(key)):
                break
            stream = table.live.get(key)
            if stream is None:  # a new key: one the live table has room for, whose first event this is
                if key in table.stored or len(table.live) + new >= table.max_keys:
                    break
                features = SupervisedStream.features_of(template, event)
                row_pool = template.pool(len(features)) if features else None
                new += 1
            elif type(stream) is PooledStream:
                features, row_pool = stream.features, stream.pool
            else:
                break
            if row_pool is None or (pool is not None and row_pool is not pool):
                break
            u = plain(event.x, features)
            try:
                y = target(event)
            except ProtocolError:
                break
            if u is None or (y is not None and not y - y == 0.0):  # y not finite: one to refuse on its own
                break
            pool = row_pool
            keys.add(key)
            items.append((key, stream, features, u, y))
        return (pool, items) if len(items) > 1 else None

    def _apply_run(self, run: tuple, lines: list, parsed: list, at: int, position: Position | None) -> list | None:
        """The (reply, timed, seconds) of each event of a run (``_run``), stepped in one call and answered in
        input order as ``_apply`` answers them one by one; None (nothing changed, logged) if the call fails:
        a bug, and the events are applied one by one instead."""
        clock = time.perf_counter
        started = clock()
        pool, items = run
        streams = [stream if stream is not None else PooledStream.new(pool, features)
                   for _, stream, features, _, _ in items]
        try:
            # what ``learn`` would check, ``_run`` did: distinct keys' rows, plain numbers, finite targets
            predictions = pool.learn_checked(
                np.array([s.row for s in streams], dtype=np.int64), np.array([item[3] for item in items], dtype=np.float64),
                np.array([_NAN if item[4] is None else item[4] for item in items], dtype=np.float64)).tolist()
        except Exception:  # noqa: BLE001 - it checks before changing anything
            log.exception("internal error stepping a batch; its events are applied one by one")
            for (_, stream, _, _, _), pooled in zip(items, streams):
                if stream is None:
                    pooled.release()
            return None
        errors, table, taken, count = pool.errors, self.table, self._taken, self._count
        out = []  # (reply, timed)
        for i, ((key, stream, _, _, y), pooled) in enumerate(zip(items, streams)):
            event, prediction = parsed[at + i], predictions[i]
            if stream is None or i in errors:  # a new key (which may be refused) or an event its row refused
                step = self._batched(key, pooled, stream is None, prediction, y, errors.get(i))
                out.append(self._apply(event, lines[at + i][1], position, step))
            else:  # a held key's event, taken: _apply's and the step's bookkeeping, which nothing here refuses
                count(position, lines[at + i][1])
                stream.events += 1
                table.get(key)
                out.append((taken(event, key, stream.events, prediction, loss_of(prediction, y)), True))
        self.checkpointer.after_event()
        share = (clock() - started) / len(items)  # the step and the bookkeeping, shared out
        return [(reply, timed, share) for reply, timed in out]

    def _batched(self, key: str, stream: PooledStream, created: bool, prediction: float, y, refusal):
        """``respond``'s step for an event of a batch that may be refused: one its row could not take, or a new
        key's (a held key's taken event is booked in ``_apply_run``): the key's bookkeeping, then its reply."""

        def step(event) -> dict:
            try:
                if refusal is not None:  # the row's state could not take the event (as the objects' ValueError)
                    raise ValueError(refusal)
                stream.events += 1  # a new key's: the table takes it, or refuses it (too large)
                self.table.check_size(key, stream)
                self.table.add(key, stream)
            except BaseException:
                if created:
                    stream.release()
                raise
            return self._taken(event, key, stream.events, prediction, loss_of(prediction, y))

        return step

    def _taken(self, event: SupervisedEvent, key: str, step: int, prediction: float, loss: float | None) -> str:
        """``_reply``'s reply to a supervised event with one output, encoded as ``encode`` encodes it, and its
        counts: the common case (every event of a batch), where the reply's dict and the general encoder cost
        twice this."""
        self.checkpointer.events += 1
        stats = self.stats
        stats.last_prediction = prediction
        text = (f'{{"id":{_json_id(event.id)},"key":{encode_basestring_ascii(key)},"step":{step},'
                f'"prediction":{_json_float(prediction)}')
        if event.y is not None:
            stats.last_target = event.y
        self._tally(loss)
        if loss is None:
            return text + "}"
        return f'{text},"loss":{_json_float(loss)}}}'

    def _encode(self, reply: dict | str) -> str:
        if type(reply) is str:  # encoded already (``_taken``)
            return reply
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
    def respond(self, event, step=None, encoded: bool = False) -> dict | str:
        """The reply to a parsed event (``step(event)``'s, when given); ProtocolError (and no state change)
        if it cannot apply.  ``encoded``: a supervised key's reply with one output may come as its text
        already (``_taken``'s, what ``encode`` writes of the dict), a third of the cost."""
        try:
            return self._respond(event, encoded) if step is None else step(event)
        except KeyUnavailable as err:
            raise ProtocolError("unavailable", str(err)) from None
        except KeyCorrupt as err:
            raise ProtocolError("corrupt_state", str(err)) from None
        except KeyRefused as err:
            raise ProtocolError(err.code, str(err)) from None

    def _respond(self, event, encoded: bool = False) -> dict | str:
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
        elif stream.kind != kind.kind:
            raise ProtocolError("wrong_kind", f"key {key!r} is a {stream.kind} stream; "
                                f"this is a {kind.kind} event")
        try:
            output, loss = stream.apply(event)
            if created:  # a new stream is not in the table yet: refusing it now changes nothing
                self.table.check_size(key, stream)
                self.table.add(key, stream)
        except BaseException:
            if created:  # what it holds outside itself (a pool's row) goes with it
                stream.release()
            raise
        return self._reply(event, key, stream, output, loss, encoded)

    def _reply(self, event, key: str, stream, output, loss, encoded: bool = False) -> dict | str:
        """The reply to an event the key's stream took (output and loss), and its counts; ``encoded``: as text
        at once where ``_taken`` writes it (a supervised key with one output)."""
        if encoded and type(output) is float and stream.kind == "supervised":
            return self._taken(event, key, stream.events, output, loss)
        self.checkpointer.events += 1
        stats = self.stats
        if stream.kind == "supervised":
            reply = {"id": event.id, "key": key, "step": stream.events, "prediction": output}
            stats.last_prediction = output
            if event.y is not None:
                stats.last_target = event.y
        else:
            reply = {"id": event.id, "key": key, "step": stream.events, "forecast": output}
            stats.last_prediction = output[0]
            stats.last_target = event.value
        if loss is not None:  # a loss that overflowed (the model skipped the update) is null: JSON has no Infinity
            reply["loss"] = loss if loss - loss == 0.0 else None
        self._tally(loss)
        return reply

    def _tally(self, loss: float | None) -> None:
        """The counts of an event a key's stream took, by its loss: none (a prediction), finite (learned: summed,
        and the newest) or not (the update was skipped)."""
        stats = self.stats
        if loss is None:
            stats.outcomes["predicted"] += 1
        elif loss - loss == 0.0:
            stats.outcomes["learned"] += 1
            stats.loss_sum += loss
            stats.last_loss = loss
            stats.loss_count += 1
        else:
            stats.outcomes["skipped"] += 1

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
