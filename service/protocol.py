"""The wire protocol, defined once: JSON lines in, one JSON line out per line in.

Events (one JSON object per line):

* supervised -- ``{"key": "pump-7", "x": {"temp": 41.2, "rpm": 1500}, "y": 1.3, "id": "e-001"}``:
  predict from x, then learn when y is present; reply ``{"id", "key", "step", "prediction", "loss"}``
  (``loss`` only when y came);
* forecasting -- ``{"key": "pump-7", "value": 41.2}`` (or a list, one number per channel):
  learn to predict this value from the previous one, reply the forecast of the next H values;
* command -- ``{"command": "digest"}`` or ``{"command": "status", "key": "pump-7"}``: read-only;
  ``{"command": "auth", "token": "..."}`` is the first line of a socket connection when the
  daemon has a token (``service.sockets`` checks it; anywhere else it is answered ``authenticated``).

``key`` and ``id`` are optional everywhere; events without a key go to the
default stream and ``id`` is echoed in the reply.  Any line that is not a
valid event is answered with ``{"error": {"code": ..., "message": ...}, "id": ...}``
and changes nothing.  ``schema()`` is the JSON Schema of all of it (also in
``service/schema.json``).

>>> parse(b'{"key": "pump-7", "value": 41.2}')
ForecastEvent(key='pump-7', id=None, value=41.2)
>>> parse(b'{"x": {"a": NaN}, "id": 7}')
Traceback (most recent call last):
...
streamrnn_service.protocol.ProtocolError: non_finite: x.a: Input should be a finite number
"""

from __future__ import annotations

import json
from typing import Annotated, Literal, Optional, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    TypeAdapter,
    ValidationError,
)

MAX_WIDTH = 4096  # numbers in one x, y or value
Name = Annotated[str, StringConstraints(min_length=1, max_length=256)]
EventId = Union[Annotated[str, StringConstraints(max_length=256)], int]
Numbers = Annotated[list[float], Field(min_length=1, max_length=MAX_WIDTH)]

#: error codes, each also a ``reason`` label of the rejected-inputs counter
ERROR_CODES = (
    "empty_line",       # nothing but whitespace
    "too_long",         # longer than sources.max_line_bytes
    "not_utf8",         # binary garbage
    "malformed_json",   # not JSON
    "not_an_object",    # JSON, but not an object
    "missing_field",    # an object without x, value or command
    "unknown_field",
    "wrong_type",
    "non_finite",       # NaN or Infinity
    "unknown_feature",  # an x name the stream does not have
    "missing_feature",  # a feature of the stream absent from x
    "wrong_width",      # y or value with the wrong number of entries
    "wrong_kind",       # a forecasting event on a supervised key, or the reverse
    "invalid_value",    # refused by the model, e.g. a log-loss target outside [0, 1]
    "unavailable",      # the key's stored state cannot be read now (I/O): nothing changed, retry
    "corrupt_state",    # the key's stored state was unreadable: quarantined; this event not applied
    "too_many_keys",    # a new key, and streams.max_keys live + streams.max_stored_keys stored are taken
    "too_large",        # a new key whose state would be over streams.max_key_bytes
    "too_many_connections",  # sources.max_connections clients are connected already: this one is closed
    "unauthenticated",  # a socket connection whose first line is not auth with the right token: closed
    "truncated",        # the connection closed in the middle of a line (no one to answer)
    "malformed_entry",  # a Redis Streams entry without a line field: acknowledged, nothing changed
    "wrong_partition",  # a Redis Streams event whose key hashes to another partition: nothing changed
    "internal",         # a bug: logged with its traceback
)
ErrorCode = Literal[ERROR_CODES]


class ProtocolError(ValueError):
    """A line that is not a valid event: ``code`` (one of ERROR_CODES), message, and the id if readable."""

    def __init__(self, code: str, message: str, id=None):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.id = code, message, id


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    key: Optional[Name] = Field(None, description="stream key; absent: the default stream")
    id: Optional[EventId] = Field(None, description="echoed in the reply")


class SupervisedEvent(Message):
    """Predict from features x; learn when the target y is present."""

    x: Annotated[dict[Name, float], Field(max_length=MAX_WIDTH)]
    y: Union[float, Numbers, None] = Field(None, description="target: a number, or one per output")


class ForecastEvent(Message):
    """The next value of a series (one number, or one per channel)."""

    value: Union[float, Numbers]


class Command(Message):
    """Read-only requests: ``digest`` of the whole learned state, ``status`` (with key: its step), ``auth``."""

    command: Literal["digest", "status", "auth"]
    token: Optional[Annotated[str, StringConstraints(max_length=1024)]] = Field(
        None, description="with auth: the daemon's shared secret (sources.auth_token_file)")


def _kind(data) -> str | None:
    if isinstance(data, dict):
        for field, tag in (("x", "supervised"), ("value", "forecast"), ("command", "command")):
            if field in data:
                return tag
    return None


Event = Annotated[
    Union[
        Annotated[SupervisedEvent, Tag("supervised")],
        Annotated[ForecastEvent, Tag("forecast")],
        Annotated[Command, Tag("command")],
    ],
    Discriminator(_kind, custom_error_type="no_kind",
                  custom_error_message="an event is an object with x (supervised), value (forecasting) or command"),
]
EVENT = TypeAdapter(Event)
# the fast path tries the model a line's bytes suggest; only a failure goes through the full union.  Each is
# its model's validator itself: ``model_validate_json`` is that call behind a wrapper costing half as much again
_GUESSES = tuple((marker, model.__pydantic_validator__.validate_json)
                 for marker, model in ((b'"x"', SupervisedEvent), (b'"value"', ForecastEvent), (b'"command"', Command)))


def parse(line: bytes) -> SupervisedEvent | ForecastEvent | Command:
    """The event on one line (without its newline); ProtocolError if it is not one."""
    for marker, validate in _GUESSES:
        if marker in line:
            try:
                return validate(line)
            except ValidationError:
                break
    if not line.strip():
        raise ProtocolError("empty_line", "empty line")
    try:
        return EVENT.validate_json(line)
    except ValidationError as err:
        raise _explain(err, line) from None


_CODES = {"missing": "missing_field", "extra_forbidden": "unknown_field", "finite_number": "non_finite",
          "json_invalid": "malformed_json"}
# the most telling error first; a type mismatch last, as in a union it often only says
# that the other branch did not fit ("value.float" when a list came)
_PRIORITY = ("json_invalid", "no_kind", "finite_number", "extra_forbidden", "missing")
_MISMATCH = {"float_type", "list_type", "string_type", "int_type", "dict_type"}
_BRANCHES = {"float", "int", "str", "list[float]", "constrained-str"}


def _rank(e) -> int:
    if e["type"] in _PRIORITY:
        return _PRIORITY.index(e["type"])
    return len(_PRIORITY) + (e["type"] in _MISMATCH)


def _explain(err: ValidationError, line: bytes) -> ProtocolError:
    errors = err.errors(include_url=False)
    first = min(errors, key=_rank)
    code = _CODES.get(first["type"], "wrong_type")
    if first["type"] == "no_kind":
        code = "missing_field" if line.lstrip().startswith(b"{") else "not_an_object"
    if code == "malformed_json":
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return ProtocolError("not_utf8", "line is not UTF-8 text")
    loc = first["loc"][1:] if first["loc"][:1] in (("supervised",), ("forecast",), ("command",)) else first["loc"]
    where = ".".join(str(p) for p in loc if p not in _BRANCHES)
    message = f"{where}: {first['msg']}" if where else first["msg"]
    return ProtocolError(code, message, readable_id(line))


def readable_id(line: bytes):
    """The event's id, when the line is a JSON object with a valid one (for error replies)."""
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):
        return None
    value = data.get("id") if isinstance(data, dict) else None
    if (isinstance(value, str) and len(value) <= 256) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return None


# ----- replies ------------------------------------------------------------------------
# Replies are written as plain dicts on the hot path; these models define their shape
# (the tests validate real replies against them) and go into the published schema.

Vector = Union[float, list[float]]


class PredictionReply(BaseModel):
    id: Optional[EventId] = None
    key: str
    step: int = Field(description="events this key has taken in, this one included")
    prediction: Vector = Field(description="a number for one output, else one per output")
    loss: Optional[float] = Field(None, description="L_t, present when y came; null when it was not finite "
                                  "(the update was skipped)")


class ForecastReply(BaseModel):
    id: Optional[EventId] = None
    key: str
    step: int
    forecast: list[Vector] = Field(description="the next H values, shaped like the event's value")
    loss: Optional[float] = Field(None, description="loss on this value in standardised units (after the first)")


class ErrorBody(BaseModel):
    code: ErrorCode
    message: str


class ErrorReply(BaseModel):
    error: ErrorBody
    id: Optional[EventId] = None


class DigestReply(BaseModel):
    id: Optional[EventId] = None
    digest: str = Field(description="SHA-256 over every key's state (live and checkpointed out)")
    keys: int
    events: int


class StatusReply(BaseModel):
    id: Optional[EventId] = None
    events: int = Field(description="events applied since the state began (across restarts)")
    live_keys: int
    keys: int
    generation: int = Field(description="newest checkpoint generation (0: none)")
    positions: dict[str, dict[str, int]] = Field(description="per input source: lines and bytes taken in")
    key: Optional[str] = None
    step: Optional[int] = Field(None, description="with key: events that key has taken in")


class AuthReply(BaseModel):
    id: Optional[EventId] = None
    authenticated: Literal[True] = Field(description="this connection may send events (a wrong token is an "
                                         "unauthenticated error instead, and the connection is closed)")


REPLIES = (PredictionReply, ForecastReply, ErrorReply, DigestReply, StatusReply, AuthReply)


def error(code: str, message: str, id=None) -> dict:
    return {"error": {"code": code, "message": message}, "id": id}


def schema() -> dict:
    """JSON Schema of the events (``event``) and of every reply (``$defs``)."""
    from pydantic.json_schema import models_json_schema

    _, defs = models_json_schema([(m, "serialization") for m in REPLIES], title="streamrnn protocol")
    event = EVENT.json_schema()
    defs["$defs"].update(event.pop("$defs"))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "streamrnn protocol: one JSON object per line",
        "description": __doc__.splitlines()[0],
        "event": event,
        "reply": {"oneOf": [{"$ref": f"#/$defs/{m.__name__}"} for m in REPLIES]},
        "$defs": defs["$defs"],
    }
