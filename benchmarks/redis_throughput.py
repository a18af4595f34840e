"""Workers on partitioned Redis Streams: events/s with one worker and with two, in the same run.

    python benchmarks/redis_throughput.py            # 40,000 events over 1,000 keys, 4 partitions, 3 repeats
    python benchmarks/redis_throughput.py --quick    # 10,000 events, 2 repeats

A ``redis-server`` (Debian's package) starts on 127.0.0.1 in a temporary
directory, with the append-only file on, and is stopped by PID at the end.
The events (supervised, 4 features, a target on each, keys drawn uniformly)
are appended once per run to a fresh prefix with ``streamrnn.produce``'s
function.  Then the workers start (``streamrnn serve --no-stdin --redis``,
default model and checkpoints, static assignment: worker I of N owns the
partitions p mod N = I), and the clock runs from the last one's "ready" to
the moment the reply streams hold a reply for every event.  Lag is sampled
every 0.25 s: per partition, the entries not yet answered (stream length
minus replies).  One worker and two run in turn within each repeat; the
table gives medians and the ratio of the medians.  Redis, the workers and
this script share the machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streamrnn_service.redis_log import produce, reply_stream, stream_name  # noqa: E402
from tests.redis_support import SERVER, RedisServer  # noqa: E402

FEATURES = ("f0", "f1", "f2", "f3")


def event_lines(n: int, keys: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(FEATURES)))
    Y = np.sin(X[:, 0]) + 0.1 * rng.normal(size=n)
    K = rng.integers(0, keys, size=n)
    return [json.dumps({"key": f"k{k}", "x": dict(zip(FEATURES, map(float, x))), "y": float(y), "id": i}).encode()
            for i, (x, y, k) in enumerate(zip(X, Y, K))]


def worker(work: Path, url: str, prefix: str, partitions: int, workers: int, index: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMRNN_")}
    env["PYTHONPATH"] = str(REPO)
    log = open(work / f"{prefix}-{index}.log", "wb")
    return subprocess.Popen(
        [sys.executable, "-m", "streamrnn_service.cli", "serve", "--no-stdin", "--no-metrics", "--progress", "0",
         "--redis", url, "--partitions", str(partitions), "--workers", str(workers), "--worker-index", str(index),
         "--set", f"redis.prefix={prefix}", "--checkpoint-dir", str(work / f"{prefix}-{index}-ckpt")],
        cwd=work, stdout=subprocess.DEVNULL, stderr=log, env=env)


def wait_ready(work: Path, prefix: str, index: int, proc) -> None:
    path = work / f"{prefix}-{index}.log"
    deadline = time.monotonic() + 120
    while b"ready: " not in path.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(path.read_text())
        time.sleep(0.01)


def run(work: Path, server, lines, prefix: str, partitions: int, workers: int) -> tuple[float, list[int]]:
    """(events/s, the largest lag seen per partition) for ``workers`` workers on fresh streams."""
    client = server.client()
    produce(client, lines, prefix, partitions)
    # the workers load the compiled kernels and then read: the clock starts when the last one is ready
    procs = [worker(work, server.url, prefix, partitions, workers, i) for i in range(workers)]
    try:
        for i, proc in enumerate(procs):
            wait_ready(work, prefix, i, proc)
        start, peak = time.perf_counter(), [0] * partitions
        total, sampled = len(lines), 0.0
        pipe = client.pipeline(transaction=False)
        while True:
            for p in range(partitions):
                pipe.xlen(stream_name(prefix, p))
                pipe.xlen(reply_stream(prefix, p))
            counts = pipe.execute()
            answered = sum(counts[1::2])
            now = time.perf_counter()
            if now - sampled >= 0.25:
                peak = [max(peak[p], counts[2 * p] - counts[2 * p + 1]) for p in range(partitions)]
                sampled = now
            if answered >= total:
                return total / (now - start), peak
            if any(proc.poll() is not None for proc in procs):
                raise RuntimeError("a worker exited early: " + (work / f"{prefix}-0.log").read_text())
            time.sleep(0.005)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=40_000)
    p.add_argument("--keys", type=int, default=1_000)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.events, args.repeats = 10_000, 2
    if SERVER is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    lines = event_lines(args.events, args.keys)
    rates = {1: [], 2: []}
    lags = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server = RedisServer(work / "redis").start()
        try:
            for r in range(args.repeats):
                for n in (1, 2):
                    rate, peak = run(work, server, lines, f"bench{r}w{n}", args.partitions, n)
                    rates[n].append(rate)
                    lags[n].append(peak)
        finally:
            server.stop()
    med = statistics.median
    one = med(rates[1])
    print(f"\n{args.events:,} supervised events over {args.keys:,} keys, {args.partitions} partitions, default model; "
          f"medians of {args.repeats} runs (Redis on the same machine)\n")
    print("| workers | events/s | ÷ one worker | runs (events/s) | largest lag per partition (entries, median run) |")
    print("|---:|---:|---:|---|---|")
    for n in (1, 2):
        peak = lags[n][sorted(range(len(rates[n])), key=lambda i: rates[n][i])[len(rates[n]) // 2]]
        print(f"| {n} | {med(rates[n]):,.0f} | {med(rates[n]) / one:.2f} | "
              f"{', '.join(f'{x:,.0f}' for x in rates[n])} | {peak} |")
    print("\nGoal (issue 10): two workers >= 1.8 x one on this 2-core machine.")


if __name__ == "__main__":
    main()
