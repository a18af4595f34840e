"""The protocol's models: parsing, error codes, and the published JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamrnn_service.protocol import Command, ForecastEvent, ProtocolError, SupervisedEvent, parse, schema

SCHEMA = Path(__file__).resolve().parents[1] / "service" / "schema.json"


def test_events():
    assert parse(b'{"key": "pump-7", "x": {"a": 1, "b": 2.5}, "y": 1.3, "id": "e-001"}') == SupervisedEvent(
        key="pump-7", x={"a": 1.0, "b": 2.5}, y=1.3, id="e-001")
    assert parse(b'{"value": [1, 2]}') == ForecastEvent(value=[1.0, 2.0])
    assert parse(b'{"key": "x", "value": 2}').key == "x"  # the fast path guessed wrong; the union decides
    assert parse(b'{"command": "status", "key": "k", "id": 3}') == Command(command="status", key="k", id=3)


@pytest.mark.parametrize("line, code, id", [
    (b"", "empty_line", None),
    (b'{"x": {"a": 1}, "y": NaN, "id": "q"}', "non_finite", "q"),
    (b'{"value": Infinity}', "non_finite", None),
    (b'{"x": {"a": "1"}}', "wrong_type", None),
    (b'{"x": {"a": 1}, "what": 1, "id": 4}', "unknown_field", 4),
    (b'{"id": 4}', "missing_field", 4),
    (b"[1]", "not_an_object", None),
    (b"{x", "malformed_json", None),
    (b"\xff\xfe", "not_utf8", None),
    (b'{"value": [], "id": "v"}', "wrong_type", "v"),
])
def test_errors(line, code, id):
    with pytest.raises(ProtocolError) as err:
        parse(line)
    assert (err.value.code, err.value.id) == (code, id)


def test_published_schema_is_current():
    assert json.loads(SCHEMA.read_text()) == schema(), "regenerate: streamrnn serve --print-schema > service/schema.json"
    assert set(schema()["$defs"]) >= {"SupervisedEvent", "ForecastEvent", "Command", "PredictionReply",
                                      "ForecastReply", "ErrorReply", "DigestReply", "StatusReply"}
