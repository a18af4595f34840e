"""Stop and restart: SIGTERM continues identically; kill -9 resumes from the checkpoint and its position."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import numpy as np

from streamrnn_service.store import DirectoryStore

from .test_service_support import Daemon, lines, run_stdin, supervised_events

# several keys, both kinds of stream, at most three keys in memory: checkpoints hold stored keys too
ARGS = ("--max-keys", "3", "--horizon", "2", "--set", "checkpoint.every_events=37")


def workload(n: int = 400) -> bytes:
    rng = np.random.default_rng(5)
    events = supervised_events(n, keys=("a", "b"))
    for i in range(0, n, 3):
        events.insert(i, {"key": "s", "value": float(np.sin(i / 9) + 0.1 * rng.normal()), "id": f"f{i}"})
    for i in range(0, len(events), 40):  # a rare key: it evicts one, which later comes back
        events.insert(i, {"key": "rare", "x": {"w": float(i)}, "y": 0.5, "id": f"r{i}"})
    return lines(events)


DIGEST = b'{"command": "digest"}\n'


def position(workdir) -> int:
    """Bytes of stdin that the newest good checkpoint in ``workdir`` has taken in."""
    checkpoint = DirectoryStore(workdir / "ckpt").latest()
    return checkpoint.meta["positions"]["stdin"]["bytes"] if checkpoint else 0


def interrupted(workdir, data: bytes, after_replies: int, sig) -> list[bytes]:
    """Feed ``data`` on stdin, signal the daemon after ``after_replies`` replies; the replies it wrote.

    Only some 60 lines past that point are ever written and stdin stays open, so the
    signal always comes mid-stream, with lines still in flight, however loaded the machine.
    """
    daemon = Daemon(workdir, *ARGS, stdin=subprocess.PIPE, metrics=False)
    daemon.ready()
    part = b"".join(data.splitlines(keepends=True)[: after_replies + 60])

    def feed():
        try:
            for i in range(0, len(part), 1024):
                daemon.proc.stdin.write(part[i:i + 1024])
                daemon.proc.stdin.flush()
                time.sleep(0.002)
        except (BrokenPipeError, ValueError, OSError):
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    replies = [daemon.proc.stdout.readline() for _ in range(after_replies)]
    os.kill(daemon.proc.pid, sig)
    replies += daemon.proc.stdout.read().splitlines(keepends=True)  # up to its exit
    writer.join(10)
    rc = daemon.stop()
    if sig == signal.SIGTERM:
        assert rc == 0, daemon.log()
        assert "shutting down" in daemon.log()
    return replies


def test_sigterm_then_restart_continues_identically(tmp_path):
    data = workload()
    whole, _ = run_stdin(tmp_path / "whole", data + DIGEST, *ARGS)

    work = tmp_path / "split"
    started = time.monotonic()
    first = interrupted(work, data, after_replies=150, sig=signal.SIGTERM)
    assert time.monotonic() - started < 15
    offset = position(work)
    assert 0 < offset < len(data)
    rest, _ = run_stdin(work, data[offset:] + DIGEST, *ARGS)
    first = [json.loads(line) for line in first]
    assert sum(len(line) + 1 for line in data.split(b"\n")[:len(first)]) == offset, "the position is exact"
    assert first + rest == whole


def test_kill_9_resumes_from_the_checkpoint_and_its_position(tmp_path):
    data = workload()
    whole, _ = run_stdin(tmp_path / "whole", data + DIGEST, *ARGS)
    expected = whole[-1]["digest"]

    work = tmp_path / "killed"
    rng = np.random.default_rng(11)
    for kill_after in sorted(rng.integers(20, 350, size=2)):  # two crashes, each at a random point
        offset = position(work)
        interrupted(work, data[offset:], after_replies=int(kill_after) // 2, sig=signal.SIGKILL)
    offset = position(work)
    rest, _ = run_stdin(work, data[offset:] + DIGEST, *ARGS)
    assert rest[-1]["digest"] == expected
    assert rest[-1]["events"] == whole[-1]["events"]


def test_file_input_resumes_by_itself(tmp_path):
    data = workload(200)
    whole, _ = run_stdin(tmp_path / "whole", data + DIGEST, *ARGS)
    work = tmp_path / "file"
    work.mkdir()
    (work / "events.jsonl").write_bytes(data)
    args = (*ARGS, "--no-stdin", "--input", "events.jsonl", "--rate", "2000")
    with Daemon(work, *args, metrics=False) as daemon:
        daemon.wait_for(r"checkpoint 2 written")
        daemon.stop(signal.SIGKILL)
    with Daemon(work, *args, "--tcp", "127.0.0.1:0", metrics=False) as daemon:
        daemon.wait_for(r"resuming file:\S+events.jsonl at line")
        daemon.wait_for(r"ended after \d+ lines")
        client = daemon.connect()
        assert client.ask(DIGEST)["digest"] == whole[-1]["digest"]
        client.close()
        assert daemon.stop() == 0


def test_stdin_resumes_the_documented_way_after_kill_9(tmp_path):
    """README: after a restart, send {"command": "status"} on stdin and feed the input again from its
    positions.stdin.bytes. The status line itself is not counted (commands never move a position),
    so its figure is the restored checkpoint's, and a later crash resumes the same way."""
    data = workload()
    whole, _ = run_stdin(tmp_path / "whole", data + DIGEST, *ARGS)
    work = tmp_path / "killed"
    interrupted(work, data, after_replies=140, sig=signal.SIGKILL)
    for last in (False, True):
        daemon = Daemon(work, *ARGS, stdin=subprocess.PIPE, metrics=False)
        restored = int(daemon.wait_for(r"restored checkpoint \d+ .*'stdin': \{'lines': \d+, 'bytes': (\d+)\}").group(1))
        daemon.proc.stdin.write(b'{"command": "status"}\n')
        daemon.proc.stdin.flush()
        offset = json.loads(daemon.proc.stdout.readline())["positions"]["stdin"]["bytes"]
        assert offset == restored and data[offset - 1 : offset] == b"\n"  # a line boundary of the input
        half = data.index(b"\n", offset + (len(data) - offset) // 2) + 1  # stop at a line's end
        rest = data[offset:] if last else data[offset:half]
        daemon.proc.stdin.write(rest + (DIGEST if last else b""))
        daemon.proc.stdin.close()
        replies = [json.loads(line) for line in daemon.proc.stdout.read().splitlines()]
        assert daemon.stop() == 0
    assert replies[-1]["digest"] == whole[-1]["digest"]
