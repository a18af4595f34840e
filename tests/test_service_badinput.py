"""Bad input never kills the daemon and never changes its state: a corpus, and a hypothesis fuzz."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from streamrnn_service.protocol import ERROR_CODES, ErrorReply, ProtocolError, parse

from .test_service_support import Daemon, digest, lines, run_stdin

CORPUS = [
    b"", b"   ", b"\t", b"not json", b"{", b'{"x": {"u": 1}', b"}{",
    b'{"x": {"u": NaN, "v": 1}}', b'{"x": {"u": Infinity, "v": 1}}', b'{"value": -Infinity}', b'{"value": NaN}',
    b'{"x": {"u": 1e999, "v": 1}}', b'{"key": "a", "x": {"u": 1, "v": 2}, "y": [1, NaN]}',
    b'{"x": {"u": "1", "v": 2}}', b'{"x": {"u": 1, "v": 2}, "y": "a"}', b'{"x": [1, 2]}', b'{"x": null}',
    b'{"value": []}', b'{"value": [1, null]}', b'{"value": true}', b'{"value": "3"}', b'{"value": {"a": 1}}',
    b'{"key": 5, "value": 1}', b'{"key": "", "value": 1}', b'{"key": null, "x": {"u": true, "v": 1}}',
    b'{"id": {"a": 1}, "value": 1}', b'{"id": 1.5, "value": 1}', b'{"id": true, "value": "x"}',
    b'{"y": 1}', b"{}", b"[]", b"null", b"42", b'"text"', b"true",
    b'{"x": {"u": 1, "v": 2}, "extra": 1}', b'{"value": 1, "x": {"u": 1}}', b'{"command": "rm -rf /"}',
    b'{"command": "digest", "extra": 1}',
    b"\xff\xfe\x00\x01garbage", b"\x00" * 10, b"\xc3\x28", b"\x1b[31mred\x1b[0m", "\u2028".encode(),
    b"[" * 50_000, b'{"a":' * 10_000,
    # valid JSON events that the streams refuse (key "a" has features u, v and one output)
    b'{"key": "a", "x": {"u": 1, "v": 2, "w": 3}, "id": "unknown-feature"}',
    b'{"key": "a", "x": {"u": 1}, "id": "missing-feature"}',
    b'{"key": "a", "x": {"u": 1, "v": 2}, "y": [1, 2], "id": "wrong-width"}',
    b'{"key": "a", "value": 1, "id": "wrong-kind"}',
    b'{"key": "s", "value": [1, 2], "id": "wrong-width"}',
    b'{"key": "s", "x": {"u": 1}, "id": "wrong-kind"}',
    b'{"key": "new", "x": {}, "id": "no-features"}',
]
SEED = [{"key": "a", "x": {"u": 0.5, "v": -1.0}, "y": 0.25}, {"key": "s", "value": 3.0}]


def _check_errors(replies: list[dict], sent: list[bytes]) -> None:
    assert len(replies) == len(sent)
    for reply, line in zip(replies, sent):
        ErrorReply.model_validate(reply)
        assert reply["error"]["code"] in ERROR_CODES and reply["error"]["message"], (line[:80], reply)
    assert replies[CORPUS.index(b'{"key": "a", "x": {"u": 1, "v": 2, "w": 3}, "id": "unknown-feature"}')] == {
        "error": {"code": "unknown_feature", "message": replies[-7]["error"]["message"]}, "id": "unknown-feature"}


def test_bad_lines_on_stdin(tmp_path):
    replies, daemon = run_stdin(tmp_path, lines(SEED) + b"\n".join(CORPUS) + b"\n" + b'{"command": "status"}\n')
    assert [r["step"] for r in replies[:2]] == [1, 1]
    _check_errors(replies[2:-1], CORPUS)
    assert replies[-1]["events"] == 2, "no bad line changed anything"
    codes = {r["error"]["code"] for r in replies[2:-1]}
    assert {"empty_line", "malformed_json", "not_utf8", "non_finite", "wrong_type", "missing_field",
            "unknown_field", "not_an_object", "unknown_feature", "missing_feature", "wrong_width",
            "wrong_kind"} <= codes


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    work = tmp_path_factory.mktemp("bad")
    with Daemon(work, "--tcp", "127.0.0.1:0", "--no-stdin", "--set", "sources.max_line_bytes=65536",
                metrics=False) as d:
        d.ready()
        client = d.connect()
        for event in SEED:
            assert "step" in client.ask(event)
        d.client = client
        yield d
        client.close()
        assert d.stop() == 0


def test_bad_lines_on_tcp(daemon):
    before = digest(daemon, daemon.client)
    daemon.client.send(b"\n".join(CORPUS) + b"\n")  # all at once: one reply each, in order
    _check_errors([daemon.client.reply() for _ in CORPUS], CORPUS)
    assert digest(daemon, daemon.client) == before


def test_over_long_line_and_dropped_connections(daemon):
    before = digest(daemon, daemon.client)
    reply = daemon.client.ask(b'{"key": "a", "x": {"u": ' + b"1" * 70_000 + b"}}\n")
    assert reply["error"]["code"] == "too_long"
    reply = daemon.client.ask(b"x" * 200_000 + b"\n")  # longer than the read size, too
    assert reply["error"]["code"] == "too_long"
    for partial in (b'{"key": "a", "x": {"u"', b"\xff" * 100, b"y" * 100_000):  # closed mid-line
        other = daemon.connect()
        other.send(partial)
        other.close()
    daemon.wait_for(r"(closed the connection|dropped) in the middle of a line(.|\n)*" * 3)
    assert daemon.client.ask({"command": "status"})["events"] == 2, "the daemon is alive and unchanged"
    assert digest(daemon, daemon.client) == before


def _valid(line: bytes) -> bool:
    try:
        event = parse(line)
    except ProtocolError:
        return False
    return not (hasattr(event, "x") and event.key in (None, "a") and set(event.x) == {"u", "v"})


scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=5))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(st.text(max_size=3), inner, max_size=3)),
                      max_leaves=6)
fields = st.sampled_from(["key", "x", "y", "value", "id", "command", "extra"])
objects = st.dictionaries(fields, values, max_size=4)
fuzz_lines = st.one_of(
    objects.map(lambda o: json.dumps(o).encode()),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" ")),
    st.text(max_size=30).map(lambda t: t.replace("\n", " ").encode()),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.filter_too_much])
@given(line=fuzz_lines)
def test_fuzzed_lines_are_answered_and_change_nothing(daemon, line):
    assume(not _valid(line))  # a valid event may rightly change a stream: only bad lines here
    if not hasattr(daemon, "digest_before"):
        daemon.digest_before = digest(daemon, daemon.client)
    reply = daemon.client.ask(line + b"\n")
    if "error" not in reply:  # an event that parses only under the daemon's view: must not happen
        pytest.fail(f"{line!r} was accepted: {reply}")
    ErrorReply.model_validate(reply)


def test_fuzz_left_the_state_unchanged(daemon):
    # runs after the fuzz (same module-scoped daemon): the state digest is still the one from before
    if hasattr(daemon, "digest_before"):
        assert digest(daemon, daemon.client) == daemon.digest_before
    assert daemon.client.ask({"command": "status"})["events"] == 2
