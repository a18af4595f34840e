"""The Redis Streams source against a real redis-server: partitions, replies, exactly-once effect, bad entries.

Each test starts its own ``redis-server`` (``redis_support``) and real daemons (``streamrnn serve
--redis``), and compares every key's state with one in-process worker fed the same events in order:
keys are independent, so reading the partitions in any interleaving must give the same states.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import zlib

import pytest

from streamrnn_service.config import load
from streamrnn_service.redis_log import key_of, partition_of, produce, reply_stream, stream_name
from streamrnn_service.server import build_worker
from streamrnn_service.store import MemoryStore

from .redis_support import RedisServer, needs_redis
from .test_service_support import REPO, Daemon, supervised_events

pytestmark = needs_redis
P = 4
KEYS = tuple(f"k{i}" for i in range(12))


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def event_lines(n: int, seed: int = 0) -> list[bytes]:
    return [json.dumps(e).encode() for e in supervised_events(n, keys=KEYS, seed=seed)]


def reference(lines: list[bytes]) -> tuple[str, dict]:
    """(digest, {(key, step): reply}) of one in-process worker fed ``lines`` in order."""
    worker = build_worker(load(environ={}), MemoryStore())
    replies = {}
    for line in lines:
        reply = json.loads(worker.handle(line, len(line) + 1))
        replies[(reply["key"], reply["step"])] = reply
    return worker.table.digest(), replies


def read_replies(client, streams=None) -> list[dict]:
    out = []
    for name in streams or [reply_stream("streamrnn", p) for p in range(P)]:
        out += [json.loads(fields[b"reply"]) for _, fields in client.xrange(name)]
    return out


def wait_replies(client, count: int, daemon: Daemon | None = None, timeout: float = 60.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replies = read_replies(client)
        if len(replies) >= count:
            return replies
        if daemon is not None and daemon.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {daemon.proc.returncode}:\n{daemon.log()}")
        time.sleep(0.05)
    raise AssertionError(f"{len(read_replies(client))} replies of {count} within {timeout} s"
                         + (f"\n{daemon.log()}" if daemon else ""))


def redis_daemon(workdir, server, *args) -> Daemon:
    return Daemon(workdir, "--no-stdin", "--redis", server.url, "--partitions", str(P), *args).ready()


def ask_digest(client, daemon: Daemon, partition: int = 0) -> str:
    """The digest a worker answers on partition ``partition``'s reply stream (after everything before it)."""
    before = len(client.xrange(reply_stream("streamrnn", partition)))
    client.xadd(stream_name("streamrnn", partition), {"line": b'{"command": "digest", "id": "d"}'})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        entries = client.xrange(reply_stream("streamrnn", partition))
        if len(entries) > before:
            return json.loads(entries[-1][1][b"reply"])["digest"]
        time.sleep(0.05)
    raise AssertionError(f"no digest reply:\n{daemon.log()}")


def assert_like_reference(replies: list[dict], expected: dict) -> None:
    """Every reply equals the reference's for its (key, step), and every (key, step) has one."""
    seen = {}
    for reply in replies:
        key = (reply["key"], reply["step"])
        assert reply == expected[key], key
        seen[key] = reply
    assert set(seen) == set(expected)


# ----- the log's naming -------------------------------------------------------------------------
def test_a_keys_partition_is_crc32_mod_p_and_the_producer_uses_it(redis_server):
    assert partition_of("k1", 4) == zlib.crc32(b"k1") % 4
    assert {partition_of(k, 4) for k in KEYS} == {0, 1, 2, 3}  # the test keys cover every partition
    assert key_of(b'{"key": "a", "value": 1.0}', "default") == "a"
    assert key_of(b'{"value": 1.0}', "default") == key_of(b"not json", "default") == "default"
    client = redis_server.client()
    lines = event_lines(40)
    assert produce(client, [line + b"\n" for line in lines] + [b"\n"], "streamrnn", P) == 40  # a blank line is skipped
    for p in range(P):
        for _, fields in client.xrange(stream_name("streamrnn", p)):
            assert partition_of(json.loads(fields[b"line"])["key"], P) == p


def test_the_produce_command_appends_stdin_and_exits_1_without_redis(redis_server, tmp_path):
    lines = event_lines(30)
    cmd = [sys.executable, "-m", "streamrnn_service.cli", "produce", "--partitions", str(P)]
    env = {"PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd + ["--redis", redis_server.url], input=b"\n".join(lines) + b"\n",
                          capture_output=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    client = redis_server.client()
    assert sum(client.xlen(stream_name("streamrnn", p)) for p in range(P)) == 30
    from .redis_support import free_port

    gone = subprocess.run(cmd + ["--redis", f"redis://127.0.0.1:{free_port()}/0"], input=b"{}\n",
                          capture_output=True, env=env, timeout=60)
    assert gone.returncode == 1
    assert b"cannot reach Redis at redis://127.0.0.1:" in gone.stderr


# ----- one worker ---------------------------------------------------------------------------------
def test_a_worker_on_four_partitions_equals_one_worker_fed_in_order(redis_server, tmp_path):
    lines = event_lines(240)
    digest, expected = reference(lines)
    client = redis_server.client()
    produce(client, lines, "streamrnn", P)
    with redis_daemon(tmp_path, redis_server) as daemon:
        replies = wait_replies(client, len(lines), daemon)
        assert_like_reference(replies, expected)
        for p in range(P):  # each partition's replies come in its entries' order
            steps = {}
            for reply in read_replies(client, [reply_stream("streamrnn", p)]):
                assert partition_of(reply["key"], P) == p
                assert reply["step"] == steps.get(reply["key"], 0) + 1
                steps[reply["key"]] = reply["step"]
        assert ask_digest(client, daemon) == digest
        status, body = daemon.get("/readyz")
        assert status == 200
        assert daemon.stop() == 0
    assert "reading partitions [0, 1, 2, 3] of streamrnn" in daemon.log()


def test_kill_9_resumes_after_the_checkpointed_entry_exactly_once(redis_server, tmp_path):
    lines = event_lines(300, seed=1)
    digest, expected = reference(lines)
    client = redis_server.client()
    produce(client, lines[:150], "streamrnn", P)
    args = ("--set", "checkpoint.every_events=37", "--set", "redis.read_count=3")  # small batches
    with redis_daemon(tmp_path, redis_server, *args) as first:
        wait_replies(client, 150, first)
        first.stop(signal.SIGKILL)
    produce(client, lines[150:], "streamrnn", P)  # arriving while no worker runs
    with redis_daemon(tmp_path, redis_server, *args) as second:
        restored = int(second.wait_for(r"restored checkpoint \d+ from \S+: (\d+) events").group(1))
        assert 37 <= restored <= 150
        # the events after the newest checkpoint are applied (and answered) again, and only those
        replies = wait_replies(client, 300 + 150 - restored, second)
        assert len(replies) == 300 + 150 - restored
        # the same state as one uninterrupted worker: nothing applied twice, nothing skipped; and an event
        # applied again after the crash answered exactly as the first time
        assert_like_reference(replies, expected)
        assert ask_digest(client, second) == digest
        assert second.stop() == 0


def test_bad_entries_get_error_replies_and_change_nothing(redis_server, tmp_path):
    client = redis_server.client()
    p = partition_of("default", P)
    bad = [
        {"nothing": b"here"},  # no line field
        {"line": b"not json"},
        {"line": b'{"x": {"a": 1.0}, "y": 1.0, "colour": "red"}'},
        {"line": b'{"x": {"a": 1.0}, "y": ' + b"1" * 300 + b"}"},  # over sources.max_line_bytes
        {"line": b'{"value": 1.0}', "reply_to": b"mine"},  # a forecast: wrong kind once the key is supervised
    ]
    client.xadd(stream_name("streamrnn", p), {"line": b'{"x": {"a": 1.0}, "y": 0.5}'})
    for fields in bad:
        client.xadd(stream_name("streamrnn", p), fields)
    client.xadd(stream_name("streamrnn", p), {"line": b'{"x": {"a": 2.0}, "y": 0.5}'})
    with redis_daemon(tmp_path, redis_server, "--set", "sources.max_line_bytes=200") as daemon:
        replies = wait_replies(client, 6, daemon)
        mine = wait_replies_in(client, "mine", 1)
        codes = [r["error"]["code"] for r in replies if "error" in r]
        assert codes == ["malformed_entry", "malformed_json", "unknown_field", "too_long"]
        assert mine[0]["error"]["code"] == "wrong_kind"
        assert [r["step"] for r in replies if "error" not in r] == [1, 2]  # the bad ones moved nothing
        assert daemon.stop() == 0


def wait_replies_in(client, name: str, count: int, timeout: float = 30.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = client.xrange(name)
        if len(entries) >= count:
            return [json.loads(fields[b"reply"]) for _, fields in entries]
        time.sleep(0.05)
    raise AssertionError(f"no {count} replies in {name}")


def test_an_unreachable_redis_stops_the_worker_with_exit_1(tmp_path):
    from .redis_support import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    daemon = Daemon(tmp_path, "--no-stdin", "--redis", url)
    assert daemon.proc.wait(timeout=30) == 1
    daemon.close_files()
    assert f"cannot read redis:streamrnn: cannot reach Redis at {url}" in daemon.log()


# ----- Redis going away -----------------------------------------------------------------------------
def test_a_redis_restart_mid_stream_loses_nothing(redis_server, tmp_path):
    lines = event_lines(200, seed=2)
    digest, expected = reference(lines)
    client = redis_server.client()
    produce(client, lines[:100], "streamrnn", P)
    with redis_daemon(tmp_path, redis_server) as daemon:
        wait_replies(client, 100, daemon)
        redis_server.stop()
        deadline = time.monotonic() + 30
        while daemon.get("/readyz")[0] != 503:  # not ready while Redis is away
            assert time.monotonic() < deadline, daemon.log()
            time.sleep(0.1)
        redis_server.start()  # the same port and directory: the append-only file brings the streams back
        client = redis_server.client()
        assert client.xlen(stream_name("streamrnn", 0)) > 0
        produce(client, lines[100:], "streamrnn", P)
        replies = wait_replies(client, 200, daemon)
        assert len(replies) == 200
        assert_like_reference(replies, expected)
        assert ask_digest(client, daemon) == digest
        assert daemon.get("/readyz")[0] == 200
        assert daemon.stop() == 0
    assert "Redis is out of reach" in daemon.log()


# ----- several workers ----------------------------------------------------------------------------
def test_two_workers_share_the_partitions_statically(redis_server, tmp_path):
    lines = event_lines(240, seed=3)
    _, expected = reference(lines)
    client = redis_server.client()
    produce(client, lines, "streamrnn", P)
    workers = [redis_daemon(tmp_path / f"w{i}", redis_server, "--workers", "2", "--worker-index", str(i))
               for i in range(2)]
    try:
        replies = wait_replies(client, len(lines), workers[0])
        assert_like_reference(replies, expected)
        assert all(w.stop() == 0 for w in workers)
    finally:
        for w in workers:
            w.__exit__(None, None, None)
    assert "reading partitions [0, 2] of streamrnn" in workers[0].log()
    assert "reading partitions [1, 3] of streamrnn" in workers[1].log()
