"""The Redis Streams source against a real redis-server: partitions, replies, exactly-once effect, bad entries.

Each test starts its own ``redis-server`` (``redis_support``) and real daemons (``streamrnn serve
--redis``), and compares them with in-process workers fed the same events in order, one per partition:
every reply for its (key, step), and each partition's digest (a partition's keys are a unit of their own,
checkpointed in ``checkpoint.dir/partition-<p>``, so a digest command answers for its partition).
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


def reference(lines: list[bytes]) -> tuple[dict, dict]:
    """({partition: digest}, {(key, step): reply}) of in-process workers, one per partition, fed ``lines``
    in order."""
    workers = {p: build_worker(load(environ={}), MemoryStore()) for p in range(P)}
    replies = {}
    for line in lines:
        reply = json.loads(workers[partition_of(key_of(line, "default"), P)].handle(line, len(line) + 1))
        replies[(reply["key"], reply["step"])] = reply
    return {p: w.table.digest() for p, w in workers.items()}, replies


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


def digests(client, daemon: Daemon, partitions=range(P)) -> dict:
    """{partition: the digest its worker answers}, asked on each partition's stream after everything in it."""
    return {p: ask_digest(client, daemon, p) for p in partitions}


def ask_digest(client, daemon: Daemon, partition: int) -> str:
    """The digest of partition ``partition``'s keys, as its worker answers (after everything before it).

    The command carries an id of its own: a worker restarted after a crash may still be answering the
    events after its checkpoint again when it is asked."""
    asked = f"digest-{time.monotonic_ns()}"
    client.xadd(stream_name("streamrnn", partition), {"line": json.dumps({"command": "digest", "id": asked}).encode()})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for _, fields in reversed(client.xrange(reply_stream("streamrnn", partition))):
            reply = json.loads(fields[b"reply"])
            if reply.get("id") == asked:
                return reply["digest"]
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
        assert digests(client, daemon) == digest
        status, body = daemon.get("/readyz")
        assert status == 200
        # lag: every entry ever added (events and the digest commands) has been applied; measured each second
        assert wait_metric(daemon, "streamrnn_partition_lag", 0.0) == {str(p): 0.0 for p in range(P)}
        assert partition_metric(daemon, "streamrnn_partition_owned") == {str(p): 1.0 for p in range(P)}
        assert daemon.stop() == 0
    assert "reading partitions [0, 1, 2, 3] of streamrnn" in daemon.log()


def partition_metric(daemon: Daemon, name: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(daemon.get("/metrics")[1])}
    return {s.labels["partition"]: s.value for s in families[name].samples} if name in families else {}


def wait_metric(daemon: Daemon, name: str, value: float, timeout: float = 10.0) -> dict:
    """The metric's samples by partition, once all of them equal ``value``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        samples = partition_metric(daemon, name)
        if samples and set(samples.values()) == {value}:
            return samples
        time.sleep(0.2)
    return partition_metric(daemon, name)


def test_lag_counts_the_entries_after_a_partitions_position(redis_server):
    from streamrnn_service.checkpointer import Position
    from streamrnn_service.partitions import WorkerGroup
    from streamrnn_service.redis_source import RedisSource
    from streamrnn_service.stats import Stats

    client = redis_server.client()
    for i in range(7):
        client.xadd(stream_name("streamrnn", 1), {"line": b"{}"})
    client.xtrim(stream_name("streamrnn", 1), maxlen=2)  # trimming does not lower entries-added
    settings = load(environ={}, overrides={"redis.url": redis_server.url, "sources.stdin": "false"}).redis
    group = WorkerGroup({p: build_worker(load(environ={}), MemoryStore()) for p in (1, 2)}, Stats())
    source = RedisSource(settings, group, 1 << 20, lambda: False)
    source.client = client
    group.workers[1].checkpointer.positions["redis:streamrnn:1"] = Position(entry="0-1", entries=3)
    assert source._entries_added([stream_name("streamrnn", p) for p in (1, 2)]) == [7, 0]
    import asyncio

    asyncio.run(source._measure_lag())
    assert group.stats.partition_lag == {1: 4, 2: 0}


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
        assert digests(client, second) == digest
        assert second.stop() == 0


def test_bad_entries_get_error_replies_and_change_nothing(redis_server, tmp_path):
    client = redis_server.client()
    p = partition_of("default", P)
    stray = next(k for k in KEYS if partition_of(k, P) != p)  # a producer that hashed it wrong
    bad = [
        {"nothing": b"here"},  # no line field
        {"line": b"not json"},
        {"line": b'{"x": {"a": 1.0}, "y": 1.0, "colour": "red"}'},
        {"line": b'{"x": {"a": 1.0}, "y": ' + b"1" * 300 + b"}"},  # over sources.max_line_bytes
        {"line": json.dumps({"key": stray, "x": {"a": 1.0}, "y": 1.0}).encode()},  # another partition's key
        {"line": b'{"value": 1.0}', "reply_to": b"mine"},  # a forecast: wrong kind once the key is supervised
        {"line": b'{"value": 2.0}', "reply_to": b"a-string"},  # a reply_to that is not a stream: dropped
    ]
    client.set("a-string", "not a stream")
    client.xadd(stream_name("streamrnn", p), {"line": b'{"x": {"a": 1.0}, "y": 0.5}'})
    for fields in bad:
        client.xadd(stream_name("streamrnn", p), fields)
    client.xadd(stream_name("streamrnn", p), {"line": b'{"x": {"a": 2.0}, "y": 0.5}'})
    with redis_daemon(tmp_path, redis_server, "--set", "sources.max_line_bytes=200") as daemon:
        replies = wait_replies(client, 7, daemon)
        mine = wait_replies_in(client, "mine", 1)
        codes = [r["error"]["code"] for r in replies if "error" in r]
        assert codes == ["malformed_entry", "malformed_json", "unknown_field", "too_long", "wrong_partition"]
        assert f"key {stray!r} belongs to partition {partition_of(stray, P)} of {P}" in replies[5]["error"]["message"]
        assert mine[0]["error"]["code"] == "wrong_kind"
        assert [r["step"] for r in replies if "error" not in r] == [1, 2]  # the bad ones moved nothing
        status = json.dumps({"command": "status", "key": stray, "id": "s"}).encode()
        client.xadd(stream_name("streamrnn", p), {"line": status, "reply_to": b"asked"})
        assert wait_replies_in(client, "asked", 1)[0]["step"] == 0  # the stray key was never made
        assert client.get("a-string") == b"not a stream"
        assert daemon.stop() == 0
    assert "cannot append replies to 'a-string'" in daemon.log()


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
        assert digests(client, daemon) == digest
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
        assert [sorted(partition_metric(w, "streamrnn_partition_owned")) for w in workers] == [["0", "2"], ["1", "3"]]
        assert all(w.stop() == 0 for w in workers)
    finally:
        for w in workers:
            w.__exit__(None, None, None)
    assert "reading partitions [0, 2] of streamrnn" in workers[0].log()
    assert "reading partitions [1, 3] of streamrnn" in workers[1].log()


def test_partitions_move_between_workers_one_two_one_with_a_shared_checkpoint_directory(redis_server, tmp_path):
    lines = event_lines(300, seed=4)
    digest, expected = reference(lines)
    client = redis_server.client()
    shared = tmp_path / "shared"  # every worker runs here: one checkpoint directory, a subdirectory per partition
    produce(client, lines[:100], "streamrnn", P)
    with redis_daemon(shared, redis_server) as one:
        wait_replies(client, 100, one)
        assert one.stop() == 0
    produce(client, lines[100:200], "streamrnn", P)
    two = [redis_daemon(shared, redis_server, "--workers", "2", "--worker-index", str(i)) for i in range(2)]
    try:
        wait_replies(client, 200, two[0])
        assert all(w.stop() == 0 for w in two)
    finally:
        for w in two:
            w.__exit__(None, None, None)
    assert "restored checkpoint" in two[0].log() and "restored checkpoint" in two[1].log()
    produce(client, lines[200:], "streamrnn", P)
    with redis_daemon(shared, redis_server) as again:
        replies = wait_replies(client, 300, again)
        assert len(replies) == 300  # clean stops: nothing answered twice
        assert_like_reference(replies, expected)
        assert digests(client, again) == digest
        assert again.stop() == 0
    assert sorted(path.name for path in (shared / "ckpt").iterdir()) == [f"partition-{p}" for p in range(P)]
    rows = inspect_rows(redis_server, shared / "ckpt")
    assert {row["partition"]: row["digest"] for row in rows} == digest  # what the workers answered
    assert [row["lag"] for row in rows] == [0] * P and all(row["entry"] for row in rows)
    assert sum(row["keys"] for row in rows) == len(KEYS)


def inspect_rows(server, ckpt, *args) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "streamrnn_service.cli", "inspect", "--redis", server.url,
                           "--partitions", str(P), "--checkpoint-dir", str(ckpt), "--json", *args],
                          capture_output=True, env={"PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_a_worker_killed_again_and_again_resumes_its_partitions_exactly(redis_server, tmp_path):
    lines = event_lines(400, seed=5)
    digest, expected = reference(lines)
    client = redis_server.client()
    args = ("--workers", "2", "--set", "checkpoint.every_events=23", "--set", "redis.read_count=2")
    steady = redis_daemon(tmp_path, redis_server, *args, "--worker-index", "0")
    try:
        sent = 0
        for round_ in range(4):  # worker 1 dies by SIGKILL after each quarter, and starts again
            produce(client, lines[sent: sent + 100], "streamrnn", P)
            sent += 100
            with redis_daemon(tmp_path, redis_server, *args, "--worker-index", "1") as victim:
                if round_:
                    assert "restored checkpoint" in victim.log()
                wait_until_answered(client, sent, victim)
                victim.stop(signal.SIGKILL)
        with redis_daemon(tmp_path, redis_server, *args, "--worker-index", "1") as last:
            replies = wait_until_answered(client, sent, last)
            assert_like_reference(replies, expected)  # re-sent replies are identical to the first ones
            assert digests(client, last, [1, 3]) == {p: digest[p] for p in (1, 3)}
            assert last.stop() == 0
        assert digests(client, steady, [0, 2]) == {p: digest[p] for p in (0, 2)}
        assert steady.stop() == 0
    finally:
        steady.__exit__(None, None, None)


def wait_until_answered(client, sent: int, daemon: Daemon, timeout: float = 60.0) -> list[dict]:
    """The replies, once ``sent`` distinct (key, step) have one (a crash makes some answered twice)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replies = read_replies(client)
        if len({(r["key"], r["step"]) for r in replies if "key" in r}) >= sent:
            return replies
        if daemon.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {daemon.proc.returncode}:\n{daemon.log()}")
        time.sleep(0.05)
    raise AssertionError(f"not every event answered within {timeout} s:\n{daemon.log()}")


# ----- ownership by leases ---------------------------------------------------------------------------
LEASES = ("--set", "redis.ownership=leases", "--set", "redis.lease_seconds=1.5")


def test_leases_are_taken_renewed_and_released_only_by_their_holder_with_growing_tokens(redis_server):
    from streamrnn_service.leases import Leases, owner_of

    client = redis_server.client()
    clock = [1000.0]
    a = Leases(client, "t", 4, "a", 1.0, clock=lambda: clock[0])
    b = Leases(client, "t", 4, "b", 1.0, clock=lambda: clock[0])
    assert a.heartbeat() == 4 and b.heartbeat() == 2  # alone: every partition; then half each
    assert [a.target(3, rank) for rank in range(3)] == [2, 1, 1]  # every partition owned, none twice
    assert [a.target(5, rank) for rank in range(5)] == [1, 1, 1, 1, 0]
    assert not a.valid(0)
    assert a.acquire(0) == 1 and b.acquire(0) is None  # held: no one else takes it
    assert a.valid(0) and not b.valid(0)
    assert owner_of(client, "t", 0) == ("a", 1) and owner_of(client, "t", 1) is None
    assert a.holds(0) and not b.holds(0)
    client.delete("t:lease:0")  # as if it had expired
    assert b.acquire(0) == 2  # the next token
    assert not a.holds(0) and 0 not in a.tokens and not a.valid(0)  # a's renewal is refused: it has lost it
    a.release(0)  # a stale holder cannot release another's lease
    assert owner_of(client, "t", 0) == ("b", 2)
    b.release(0)
    assert owner_of(client, "t", 0) is None
    clock[0] += 5  # a's and b's memberships expire unless renewed
    assert a.heartbeat() == 4
    a.acquire(3)
    a.leave()
    assert owner_of(client, "t", 3) is None and client.zcard("t:members") == 0


def test_membership_is_timed_by_the_clock_of_redis_not_of_the_worker(redis_server, monkeypatch):
    """Workers on hosts whose clocks disagree must agree on who is live: a heartbeat's expiry is Redis's TIME
    plus the lease (computed in the script), whatever the worker's own clock says."""
    from streamrnn_service import leases as leases_module

    client = redis_server.client()
    skewed = time.time() + 3 * 3600.0  # this worker's clock: three hours fast
    monkeypatch.setattr(leases_module.time, "time", lambda: skewed)
    a = leases_module.Leases(client, "c", 4, "a", 2.0)
    assert a.heartbeat() == 4
    seconds, micros = client.time()
    expires = client.zscore("c:members", "a")
    assert abs(expires - (seconds * 1000 + micros // 1000 + 2000)) < 1000
    b = leases_module.Leases(client, "c", 4, "b", 2.0)
    assert b.heartbeat() == 2 and a.heartbeat() == 2  # both live, by one clock


def owners(client) -> dict:
    from streamrnn_service.leases import owner_of

    return {p: owner_of(client, "streamrnn", p) for p in range(P)}


def wait_owned(client, count_by_worker: dict, timeout: float = 30.0) -> dict:
    """The owners, once each named worker holds that many partitions."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        held = owners(client)
        counts = {}
        for owner in held.values():
            if owner is not None:
                counts[owner[0]] = counts.get(owner[0], 0) + 1
        if counts == count_by_worker:
            return held
        time.sleep(0.1)
    raise AssertionError(f"owners {owners(client)}, not {count_by_worker}, within {timeout} s")


def test_with_leases_a_dead_workers_partitions_move_to_the_others_and_a_new_one_gets_its_share(
        redis_server, tmp_path):
    lines = event_lines(300, seed=6)
    digest, expected = reference(lines)
    client = redis_server.client()
    produce(client, lines[:100], "streamrnn", P)
    a = redis_daemon(tmp_path, redis_server, *LEASES, "--set", "redis.worker_id=a", "--set",
                     "checkpoint.every_events=17")
    b = redis_daemon(tmp_path, redis_server, *LEASES, "--set", "redis.worker_id=b", "--set",
                     "checkpoint.every_events=17")
    try:
        wait_owned(client, {"a": 2, "b": 2})
        wait_until_answered(client, 100, a)
        a.stop(signal.SIGKILL)
        wait_owned(client, {"b": 4})  # within about a lease
        produce(client, lines[100:200], "streamrnn", P)
        wait_until_answered(client, 200, b)
        with redis_daemon(tmp_path, redis_server, *LEASES, "--set", "redis.worker_id=c") as c:
            wait_owned(client, {"b": 2, "c": 2})  # b gives two back, c takes them
            produce(client, lines[200:], "streamrnn", P)
            replies = wait_until_answered(client, 300, c)
            assert_like_reference(replies, expected)
            assert digests(client, b) == digest
            assert c.stop() == 0
        assert b.stop() == 0
    finally:
        for w in (a, b):
            w.__exit__(None, None, None)
    assert "took partition" in b.log() and "giving partition" in b.log()
    assert owners(client) == dict.fromkeys(range(P))  # clean stops release their leases
    rows = inspect_rows(redis_server, tmp_path / "ckpt", "--set", "redis.ownership=leases")
    assert {row["partition"]: row["digest"] for row in rows} == digest
    assert [row["owner"] for row in rows] == ["none"] * P and [row["lag"] for row in rows] == [0] * P


def test_a_worker_paused_past_its_lease_cannot_commit(redis_server, tmp_path):
    lines = event_lines(200, seed=7)
    digest, expected = reference(lines)
    client = redis_server.client()
    produce(client, lines[:100], "streamrnn", P)
    args = (*LEASES, "--set", "checkpoint.every_events=1")
    a = redis_daemon(tmp_path, redis_server, *args, "--set", "redis.worker_id=a")
    b = redis_daemon(tmp_path, redis_server, *args, "--set", "redis.worker_id=b")
    try:
        held = wait_owned(client, {"a": 2, "b": 2})
        wait_until_answered(client, 100, a)
        mine = sorted(p for p, owner in held.items() if owner[0] == "a")
        a.proc.send_signal(signal.SIGSTOP)
        before = len(a.log())
        wait_owned(client, {"b": 4})
        produce(client, lines[100:], "streamrnn", P)  # a has entries to apply when it wakes up
        wait_until_answered(client, 200, b)
        # a wakes up to a stop: its shutdown would checkpoint the partitions it still believes it owns
        a.proc.send_signal(signal.SIGTERM)
        a.proc.send_signal(signal.SIGCONT)
        a.proc.wait(timeout=30)
        after = a.log()[before:]
        # it found out by its lease round or by its own clock (the checkpoint's guard), and wrote nothing:
        # no checkpoint written, and none even tried (b removed a's directories: a write would fail)
        assert after.count("checkpoint refused: this worker no longer owns") + sum(
            f"lost the lease on partition {p}" in after for p in mine) >= len(mine), after
        assert "written:" not in after and "checkpoint failed" not in after, after
        assert digests(client, b) == digest
        assert b.stop() == 0
    finally:
        for w in (a, b):
            w.__exit__(None, None, None)


def test_a_checkpoint_is_refused_once_the_lease_has_gone_to_another_worker(redis_server, tmp_path):
    """The fence on the write itself, in process: a worker whose lease another took cannot commit."""
    from streamrnn_service.leases import Leases
    from streamrnn_service.store import DirectoryStore

    client = redis_server.client()
    a = Leases(client, "f", 1, "a", 1.0)
    b = Leases(client, "f", 1, "b", 1.0)
    assert a.acquire(0) == 1
    store = DirectoryStore(tmp_path / "a")
    worker = build_worker(load(environ={}), store, guard=lambda: a.holds(0))
    worker.handle(b'{"x": {"u": 1.0}, "y": 0.5}', 28)
    assert worker.checkpointer.checkpoint() and store.generations() == [1]  # held: written
    client.delete("f:lease:0")  # a paused past its lease, which expired ...
    assert b.acquire(0) == 2  # ... and b took the partition
    worker.handle(b'{"x": {"u": 2.0}, "y": 0.5}', 28)
    assert not worker.checkpointer.checkpoint()
    assert store.generations() == [1] and worker.checkpointer.refused == 1  # nothing written
    assert worker.stats.checkpoint_failures == 1


def test_a_worker_takes_no_lease_before_it_is_ready_to_step(redis_server, tmp_path, monkeypatch):
    """A first start compiles the kernels (some 20 s) before the worker is ready: it takes its partitions only
    after that, so no lease it holds lapses while the compiler blocks it (in process, the warm-up slowed)."""
    import asyncio

    from streamrnn_service import server as server_module
    from streamrnn_service.leases import owner_of

    warming = {"done": False}

    def slow_warm_up() -> float:
        time.sleep(2.0)  # longer than the lease: a lease taken before this would lapse
        warming["done"] = True
        return 2.0

    monkeypatch.setattr(server_module, "warm_up", slow_warm_up)
    config = load(environ={"STREAMRNN_REDIS_URL": redis_server.url, "STREAMRNN_REDIS_PARTITIONS": "2",
                           "STREAMRNN_REDIS_OWNERSHIP": "leases", "STREAMRNN_REDIS_LEASE_SECONDS": "1.0",
                           "STREAMRNN_REDIS_WORKER_ID": "w", "STREAMRNN_SOURCES_STDIN": "false",
                           "STREAMRNN_METRICS_ENABLED": "false", "STREAMRNN_CHECKPOINT_DIR": str(tmp_path / "ckpt")})
    client, seen = redis_server.client(), []

    async def watch(server) -> None:
        while not server.ready:
            seen.append((warming["done"], [owner_of(client, "streamrnn", p) for p in range(2)]))
            await asyncio.sleep(0.05)
        seen.append((True, [owner_of(client, "streamrnn", p) for p in range(2)]))
        server.should_exit = True

    async def main() -> int:
        server = server_module.Server(config)
        watcher = asyncio.create_task(watch(server))
        code = await server.serve()
        await watcher
        return code

    assert asyncio.run(main()) == 0
    during = [owners for done, owners in seen if not done]
    assert len(during) > 10 and all(owners == [None, None] for owners in during)
    assert [o[0] for o in seen[-1][1]] == ["w", "w"]  # ready: both taken
    assert [owner_of(client, "streamrnn", p) for p in range(2)] == [None, None]  # released on the way out


def test_a_partition_that_cannot_be_taken_is_given_back_and_counted(redis_server, tmp_path):
    """With leases: a partition whose checkpoint directory cannot be made here (a file in its place, as an
    unwritable shared volume would) is given back at once, tried again each round, and counted in
    streamrnn_partition_take_failures_total; the other partitions are served."""
    import re

    from streamrnn_service.leases import owner_of

    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "partition-0").write_text("not a directory")
    client = redis_server.client()
    lines = [line for line in event_lines(80, seed=9) if partition_of(key_of(line, "default"), P) != 0]
    produce(client, lines, "streamrnn", P)
    with redis_daemon(tmp_path, redis_server, *LEASES, "--set", "redis.worker_id=w") as daemon:
        replies = wait_replies(client, len(lines), daemon)
        assert len(replies) == len(lines) and all("step" in r for r in replies)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            failures = re.search(r"^streamrnn_partition_take_failures_total (\S+)$", daemon.get("/metrics")[1], re.M)
            if failures and float(failures.group(1)) >= 2:  # given back, and tried again a round later
                break
            time.sleep(0.2)
        assert failures and float(failures.group(1)) >= 2
        # given back each time (a look may fall between a take and its give-back: look a few times)
        assert any(owner_of(client, "streamrnn", 0) is None for _ in range(20) if time.sleep(0.01) is None)
        assert sorted(partition_metric(daemon, "streamrnn_partition_owned")) == ["1", "2", "3"]
        assert daemon.stop() == 0
    assert "cannot take partition 0" in daemon.log()
