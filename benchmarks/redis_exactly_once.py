"""Issue 10's exactly-once check at full scale: 2 workers on leases, 4 partitions, 1,000 keys, through
kill -9s, scaling 2 -> 1 -> 2, and a Redis restart; every partition's digest against one worker per
partition fed the same entries in order, and every key's steps counted.

    python benchmarks/redis_exactly_once.py              # 20,000 events, 1,000 keys, 10 kills (a few minutes)
    python benchmarks/redis_exactly_once.py --quick      # 4,000 events, 200 keys, 3 kills

The events go in in slices.  Between slices one of these happens, in this order: a kill -9 of a
random worker at a random moment while it applies a slice (a new one takes its place), 2 -> 1 -> 2
workers, a Redis restart (append-only file on).  At the end the table gives, per partition, the
digest the workers answer against the reference's, and whether every key took exactly its events.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streamrnn_service.config import load  # noqa: E402
from streamrnn_service.redis_log import key_of, partition_of, produce, reply_stream, stream_name  # noqa: E402
from streamrnn_service.server import build_worker  # noqa: E402
from streamrnn_service.store import MemoryStore  # noqa: E402
from tests.redis_support import RedisServer  # noqa: E402
from tests.test_service_support import Daemon, supervised_events  # noqa: E402

P = 4


def reference(lines):
    workers = {p: build_worker(load(environ={}), MemoryStore()) for p in range(P)}
    steps = {}
    for line in lines:
        key = key_of(line, "default")
        reply = json.loads(workers[partition_of(key, P)].handle(line, len(line) + 1))
        steps[key] = reply["step"]
    return {p: w.table.digest() for p, w in workers.items()}, steps


def answered(client) -> set:
    out = set()
    for p in range(P):
        for _, fields in client.xrange(reply_stream("streamrnn", p)):
            r = json.loads(fields[b"reply"])
            if "key" in r:
                out.add((r["key"], r["step"]))
    return out


def wait_answered(client, count, timeout=600.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(answered(client)) >= count:
            return
        time.sleep(0.2)
    raise RuntimeError(f"only {len(answered(client))} of {count} events answered")


def worker(work, server, name):
    return Daemon(work, "--no-stdin", "--redis", server.url, "--partitions", str(P), "--log-level", "info",
                  "--set", "redis.ownership=leases", "--set", "redis.lease_seconds=2",
                  "--set", f"redis.worker_id={name}", "--set", "checkpoint.every_events=500").ready()


def ask_digests(client) -> dict:
    """Each partition's digest, as its worker answers a digest command with an id of its own."""
    out = {}
    for p in range(P):
        asked = f"digest-{p}-{time.monotonic_ns()}"
        client.xadd(stream_name("streamrnn", p), {"line": json.dumps({"command": "digest", "id": asked}).encode()})
        while p not in out:
            for _, fields in reversed(client.xrange(reply_stream("streamrnn", p))):
                reply = json.loads(fields[b"reply"])
                if reply.get("id") == asked:
                    out[p] = reply["digest"]
                    break
            else:
                time.sleep(0.05)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--keys", type=int, default=1_000)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.events, args.keys, args.kills = 4_000, 200, 3
    rng = random.Random(0)
    lines = [json.dumps(e).encode() for e in supervised_events(args.events, keys=[f"k{i}" for i in range(args.keys)])]
    digest, steps = reference(lines)
    slices = args.kills + 2  # a slice per kill, then 2 -> 1 -> 2, then a Redis restart
    cut = [round(i * len(lines) / slices) for i in range(slices + 1)]
    log = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "workers"
        server = RedisServer(Path(tmp) / "redis").start()
        client = server.client()
        workers = {"w0": worker(work, server, "w0"), "w1": worker(work, server, "w1")}
        serial = 2
        try:
            for i in range(slices):
                produce(client, lines[cut[i]: cut[i + 1]], "streamrnn", P)
                if i < args.kills:  # kill -9 a random worker at a random moment of this slice
                    time.sleep(rng.uniform(0.0, 1.5))
                    victim = rng.choice(sorted(workers))
                    workers.pop(victim).stop(signal.SIGKILL)
                    name = f"w{serial}"
                    serial += 1
                    workers[name] = worker(work, server, name)
                    log.append(f"slice {i}: kill -9 {victim}, {name} started")
                elif i == args.kills:  # 2 -> 1 -> 2 (a clean stop: its partitions move at once)
                    wait_answered(client, cut[i + 1])
                    gone = sorted(workers)[0]
                    workers.pop(gone).stop()
                    name = f"w{serial}"
                    serial += 1
                    workers[name] = worker(work, server, name)
                    log.append(f"slice {i}: {gone} stopped, then {name} started")
                else:  # Redis restarts mid-stream
                    time.sleep(0.5)
                    server.stop()
                    time.sleep(1.0)
                    server.start()
                    client = server.client()
                    log.append(f"slice {i}: Redis restarted")
            wait_answered(client, len(lines))
            got = ask_digests(client)
            took = {}
            for key, step in answered(client):
                took[key] = max(took.get(key, 0), step)
        finally:
            for w in workers.values():
                w.stop()
            server.stop()
    print(f"\n{len(lines):,} events over {args.keys:,} keys, {P} partitions, workers on leases (2 s)\n")
    for line in log:
        print(f"- {line}")
    print("\n| partition | digest (workers) | digest (reference) | equal |")
    print("|---:|---|---|---|")
    for p in range(P):
        print(f"| {p} | {got[p][:16]} | {digest[p][:16]} | {'yes' if got[p] == digest[p] else 'NO'} |")
    exact = sum(took.get(k, 0) == n for k, n in steps.items())
    print(f"\nkeys whose newest step equals their events: {exact:,} of {len(steps):,}")


if __name__ == "__main__":
    main()
