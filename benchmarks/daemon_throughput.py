"""End-to-end throughput of `streamrnn serve` against the library alone, in the same run.

    python benchmarks/daemon_throughput.py            # 20,000 events, 5 repeats (about a minute)
    python benchmarks/daemon_throughput.py --quick    # 5,000 events, 3 repeats
    python benchmarks/daemon_throughput.py --bare     # keys as the bare network (model.hybrid = false)
    python benchmarks/daemon_throughput.py --keys 10000 --events 100000 --repeats 1 --learner bptt
                                                      # many keys: events spread over 10,000 keys

The same supervised events (4 features, a target on every event, one key) go

1. through the library alone: the key's model stepped in-process (the daemon's
   ``SupervisedStream``: a ``HybridRegressor`` with the default network, Elman(16)
   + exact RTRL + Adam, on features standardised by ``RunningMoments``), events
   already parsed;
2. through the daemon on stdin: JSON lines written to a pipe, every reply read
   back from stdout;
3. through the daemon on TCP: one connection, lines written while replies are read.

With ``--keys N`` the events go to N keys drawn uniformly at random (seeded),
and the table gives the daemon's rate on stdin beside the library's (and, for a
hybrid model on BPTT, the library's with the keys as rows of one ``RegressorPool``,
stepped many at a time on one thread and on both cores), the time
its checkpoints took (from its own histogram), its peak resident memory, and
the bytes of state per key in its newest checkpoint.

The daemon runs with its defaults: metrics on (scraped once per run), checkpoints
every 10,000 events (and, after one that took T seconds, none until T seconds after it).  The clock starts when the daemon reports ready (start-up and
the final checkpoint are not counted).  Step latency: the library's per-step time;
the daemon's ``streamrnn_step_latency_seconds`` histogram (parse, step, reply;
the upper bound of the bucket that holds the quantile); and the round trip of one event at a time over TCP.  BLAS runs on one
thread (threadpoolctl here, the daemon sets it itself).  Each figure is the median
over repeats, runs interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streamrnn_service.config import load  # noqa: E402
from streamrnn_service.names import ModelTemplate  # noqa: E402
from streamrnn_service.protocol import SupervisedEvent  # noqa: E402
from streamrnn_service.streams import SupervisedStream  # noqa: E402

FEATURES = ("f0", "f1", "f2", "f3")
SETTINGS: dict[str, str] = {}  # STREAMRNN_* settings for both the library and the daemon


def events(n: int, seed: int = 0, keys: int = 1) -> tuple[bytes, list, list, list]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(FEATURES)))
    Y = np.sin(X[:, 0]) + 0.1 * rng.normal(size=n)
    K = [f"k{k}" for k in rng.integers(0, keys, size=n)] if keys > 1 else [None] * n
    lines = []
    for i, (x, y, key) in enumerate(zip(X, Y, K)):
        event = {"x": dict(zip(FEATURES, map(float, x))), "y": float(y), "id": i}
        if key is not None:
            event["key"] = key
        lines.append(json.dumps(event).encode() + b"\n")
    return b"".join(lines), X.tolist(), [[float(y)] for y in Y], K


def library(xs, ys, keys=None) -> tuple[float, list[float]]:
    """(events per second, per-step seconds) of the keys' models stepped in-process (one key by default)."""
    config = load(environ=SETTINGS)
    template = ModelTemplate(config.model, config.forecast)
    streams = {}
    keys = keys or [None] * len(xs)
    parsed = [SupervisedEvent.model_construct(key=k, id=None, x=dict(zip(FEATURES, x)), y=y[0])
              for x, y, k in zip(xs, ys, keys)]
    steps = []
    clock = time.perf_counter
    start = clock()
    for event in parsed:
        t = clock()
        stream = streams.get(event.key)
        if stream is None:
            stream = streams[event.key] = SupervisedStream(template, list(FEATURES))
        stream.apply(event)
        steps.append(clock() - t)
    return len(xs) / (clock() - start), steps


def library_pool(xs, ys, keys, parallel: bool) -> tuple[float, int] | None:
    """(events per second, bytes of a row) of the same keys as rows of one ``RegressorPool`` (None where the
    model cannot be pooled: a bare network, or RTRL).  Each call takes the next events of distinct keys in
    input order, up to 64 (the cut the daemon's batches are to make); features are read from the dicts."""
    from streamrnn.kernels.regressor_pool import RegressorPool

    config = load(environ=SETTINGS)
    template = ModelTemplate(config.model, config.forecast)
    n = len(FEATURES)
    if not template.hybrid or config.model.outputs != 1:
        return None
    try:
        pool = RegressorPool(lambda: template.regressor(n), n, parallel=parallel)
    except ValueError:
        return None
    parsed = [SupervisedEvent.model_construct(key=k, id=None, x=dict(zip(FEATURES, x)), y=y[0])
              for x, y, k in zip(xs, ys, keys)]
    row_of: dict = {}
    clock = time.perf_counter
    start = clock()
    at, total = 0, len(parsed)
    while at < total:
        rows, U, Y, taken = [], [], [], set()
        while at < total and len(rows) < 64 and parsed[at].key not in taken:
            event = parsed[at]
            r = row_of.get(event.key)
            if r is None:
                r = row_of[event.key] = pool.add()
            taken.add(event.key)
            rows.append(r)
            U.append([event.x[name] for name in FEATURES])
            Y.append(event.y)
            at += 1
        pool.learn(rows, U, Y)
    return len(xs) / (clock() - start), pool.row


class Daemon:
    def __init__(self, workdir: str, *args: str, stdin=subprocess.DEVNULL):
        self.log_path = Path(workdir) / f"daemon-{time.monotonic_ns()}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMRNN_")}
        env["PYTHONPATH"] = str(REPO)
        env.update(SETTINGS)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamrnn_service.cli", "serve", "--metrics-port", "0", "--progress", "0",
             "--checkpoint-dir", str(Path(workdir) / f"ckpt-{time.monotonic_ns()}"), *args],
            cwd=workdir, stdin=stdin, stdout=subprocess.PIPE, stderr=self.log, env=env)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log_path.read_text())
            if match:
                return match
            if self.proc.poll() is not None:
                raise RuntimeError(self.log_path.read_text())
            time.sleep(0.01)
        raise RuntimeError(f"daemon not ready:\n{self.log_path.read_text()}")

    def metrics(self) -> dict:
        url = self.wait_for(r"metrics at (\S+)").group(1)
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
        return {f.name: f for f in text_string_to_metric_families(text)}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        self.log.close()
        if self.proc.stdout:
            self.proc.stdout.close()


def histogram_bound(family, q: float) -> float:
    """The upper bound of the histogram bucket holding quantile q (seconds): p50 <= this."""
    buckets = sorted((float(s.labels["le"]), s.value) for s in family.samples if s.name.endswith("_bucket"))
    rank = q * buckets[-1][1]
    return next(bound for bound, count in buckets if count >= rank)


def rss(pid: int, field: str = "VmHWM") -> int:
    """The process's peak (VmHWM) or current (VmRSS) resident set in bytes, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def newest_state_bytes(daemon: "Daemon") -> tuple[int, int, float]:
    """(bytes of the shards the newest checkpoint's manifest references, live keys in it, bytes per key of
    the newest shard: one copy of each key's state, where the referenced shards also hold older copies of
    keys written again since, until the store collects them)."""
    from streamrnn import state
    from streamrnn_service import packing
    from streamrnn_service.store import DirectoryStore

    root = Path(daemon.proc.args[daemon.proc.args.index("--checkpoint-dir") + 1])
    store = DirectoryStore(root)
    manifest, shards = store.files(store.generations()[0])
    with np.load(manifest, allow_pickle=False) as npz:
        keys = len(json.loads(npz["__header__"].tobytes())["live"])
    if not shards:
        return 0, keys, 0.0
    newest = shards[-1]
    written = len(packing.read_members(*state.load(newest)))
    return sum(shard.stat().st_size for shard in shards), keys, newest.stat().st_size / max(written, 1)


def stdin_run(workdir: str, data: bytes, n: int, facts: dict | None = None) -> tuple[float, dict]:
    daemon = Daemon(workdir, stdin=subprocess.PIPE)
    daemon.wait_for(r"ready: ")
    if facts is not None:
        facts["rss0"] = rss(daemon.proc.pid, "VmRSS")

    def feed():
        daemon.proc.stdin.write(data)
        daemon.proc.stdin.flush()

    writer = threading.Thread(target=feed, daemon=True)
    fd = daemon.proc.stdout.fileno()
    start = time.perf_counter()
    writer.start()
    read_lines(lambda: os.read(fd, 1 << 20), n)
    elapsed = time.perf_counter() - start
    metrics = daemon.metrics()
    if facts is not None:
        facts["rss"] = rss(daemon.proc.pid)
    daemon.proc.stdin.close()
    daemon.stop()
    if facts is not None:
        facts["state_bytes"], facts["state_keys"], facts["key_bytes"] = newest_state_bytes(daemon)
    return n / elapsed, metrics


def tcp_run(workdir: str, data: bytes, n: int, round_trips: int) -> tuple[float, dict, list[float]]:
    daemon = Daemon(workdir, "--no-stdin", "--tcp", "127.0.0.1:0")
    port = int(daemon.wait_for(r"listening on tcp [\d.]+:(\d+)").group(1))
    daemon.wait_for(r"ready: ")
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    writer = threading.Thread(target=sock.sendall, args=(data,), daemon=True)
    start = time.perf_counter()
    writer.start()
    read_lines(lambda: sock.recv(1 << 20), n)
    elapsed = time.perf_counter() - start
    replies = sock.makefile("rb")
    writer.join()
    metrics = daemon.metrics()
    lines = data.splitlines(keepends=True)[:round_trips]
    trips = []
    for line in lines:  # one event at a time: the latency a client sees
        t = time.perf_counter()
        sock.sendall(line)
        replies.readline()
        trips.append(time.perf_counter() - t)
    sock.close()
    daemon.stop()
    return n / elapsed, metrics, trips


def read_lines(read, n: int) -> None:
    """Read until n reply lines have come (counting newlines: the client costs little)."""
    seen = 0
    while seen < n:
        chunk = read()
        if not chunk:
            raise RuntimeError(f"replies ended after {seen} lines")
        seen += chunk.count(b"\n")


def pct(values, q) -> float:
    return float(np.percentile(values, q)) * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--bare", action="store_true", help="supervised keys as the bare network")
    p.add_argument("--keys", type=int, default=1, help="spread the events over this many keys (stdin only)")
    p.add_argument("--learner", help="model.learner for both (for example bptt: BPTT(10; 1))")
    args = p.parse_args()
    if args.bare:
        SETTINGS["STREAMRNN_MODEL_HYBRID"] = "false"
    if args.learner:
        SETTINGS["STREAMRNN_MODEL_LEARNER"] = args.learner
    if args.quick:
        args.events, args.repeats = 5_000, 3
    threadpool_limits(1)
    n = args.events
    data, xs, ys, keys = events(n, keys=args.keys)
    if args.keys > 1:
        many_keys(data, xs, ys, keys, args)
        return
    lib, std, tcp = [], [], []
    lib_p50, lib_p99, d50, d99, t50, t99, rt50, rt99 = ([] for _ in range(8))
    with tempfile.TemporaryDirectory() as work:
        for _ in range(args.repeats):
            rate, steps = library(xs, ys)
            lib.append(rate)
            lib_p50.append(pct(steps, 50))
            lib_p99.append(pct(steps, 99))
            rate, metrics = stdin_run(work, data, n)
            std.append(rate)
            d50.append(histogram_bound(metrics["streamrnn_step_latency_seconds"], 0.5) * 1e6)
            d99.append(histogram_bound(metrics["streamrnn_step_latency_seconds"], 0.99) * 1e6)
            rate, metrics, trips = tcp_run(work, data, n, min(n, 2000))
            tcp.append(rate)
            t50.append(histogram_bound(metrics["streamrnn_step_latency_seconds"], 0.5) * 1e6)
            t99.append(histogram_bound(metrics["streamrnn_step_latency_seconds"], 0.99) * 1e6)
            rt50.append(pct(trips, 50))
            rt99.append(pct(trips, 99))
    med = statistics.median
    print(f"\n{n:,} supervised events (4 features, one key), default model, medians of {args.repeats} runs\n")
    print("| path | events/s | ÷ library | p50 step (us) | p99 step (us) |")
    print("|---|---:|---:|---:|---:|")
    print(f"| library alone (the key's model in-process) | {med(lib):,.0f} | 1.00 | {med(lib_p50):.0f} | {med(lib_p99):.0f} |")
    print(f"| daemon, stdin -> stdout | {med(std):,.0f} | {med(std) / med(lib):.2f} | <= {med(d50):.0f} | <= {med(d99):.0f} |")
    print(f"| daemon, TCP (pipelined) | {med(tcp):,.0f} | {med(tcp) / med(lib):.2f} | <= {med(t50):.0f} | <= {med(t99):.0f} |")
    print(f"| daemon, TCP round trip, one event at a time | {1e6 / med(rt50):,.0f} | - | {med(rt50):.0f} | {med(rt99):.0f} |")
    print("\nDaemon step latency: the bucket of its own histogram (parse, step, reply) that holds the quantile.\n"
          "Round trip: client send -> reply read over 127.0.0.1, one event in flight.  Goal: daemon >= 0.70 x library.")


def many_keys(data, xs, ys, keys, args) -> None:
    n, med = len(xs), statistics.median
    lib, std, ck_sum, ck_count, peak, per_key, rss_key, key_bytes = [], [], [], [], [], [], [], []
    rows = {False: [], True: []}  # the keys as rows of a RegressorPool, on one thread and on both cores
    row_bytes = 0
    with tempfile.TemporaryDirectory() as work:
        for _ in range(args.repeats):
            lib.append(library(xs, ys, keys)[0])
            for parallel, rates in rows.items():
                pooled = library_pool(xs, ys, keys, parallel)
                if pooled is not None:
                    rates.append(pooled[0])
                    row_bytes = pooled[1]
            facts = {}
            rate, metrics = stdin_run(work, data, n, facts)
            std.append(rate)
            family = metrics["streamrnn_checkpoint_duration_seconds"]
            ck_sum.append(next(s.value for s in family.samples if s.name.endswith("_sum")))
            ck_count.append(next(s.value for s in family.samples if s.name.endswith("_count")))
            peak.append(facts["rss"])
            per_key.append(facts["state_bytes"] / max(facts["state_keys"], 1))
            key_bytes.append(facts["key_bytes"])
            rss_key.append((facts["rss"] - facts["rss0"]) / len(set(keys)))
    live = len(set(keys))
    print(f"\n{n:,} supervised events over {live:,} keys (4 features), model {'bare' if args.bare else 'hybrid'}"
          f"{', learner ' + args.learner if args.learner else ''}, medians of {args.repeats} runs\n")
    print("| path | events/s | ÷ library | checkpoints (while serving) | s in checkpoints | peak RSS (MB) | "
          "peak RSS growth per key (KB) | a key's state in a shard (KB) | checkpoint files per live key (KB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| library alone (the keys' models in-process) | {med(lib):,.0f} | 1.00 | - | - | - | - | - | - |")
    for parallel, rates in rows.items():
        if rates:
            print(f"| library, the keys as rows of a RegressorPool ({'both cores' if parallel else 'one thread'}) | "
                  f"{med(rates):,.0f} | {med(rates) / med(lib):.2f} | - | - | - | {row_bytes / 1e3:.1f} (a row) | - | - |")
    print(f"| daemon, stdin -> stdout | {med(std):,.0f} | {med(std) / med(lib):.2f} | {med(ck_count):.0f} | "
          f"{med(ck_sum):.1f} | {med(peak) / 1e6:,.0f} | {med(rss_key) / 1e3:.1f} | {med(key_bytes) / 1e3:.1f} | "
          f"{med(per_key) / 1e3:.1f} |")
    print("\nCheckpoints: every 10,000 events and every 60 s, each writing the keys that changed, none within a "
          "pause as long as the one before took (checkpoint.max_share 0.5; the final one, on the way out, is not "
          "counted).  A key's state: the newest shard's bytes per key in it (goal "
          "<= 16 KB); the checkpoint files also hold older copies of keys written again since, until they are "
          "collected.  Goal: >= 50,000 events/s with 10,000 keys.  The pool's rows (BPTT only) step the next "
          "events of distinct keys, up to 64, in one compiled call, a new key being a copy of the template's row; "
          "the daemon holds such keys as rows of its pool too (one thread), and steps them as the worker cuts "
          "its batches.")


if __name__ == "__main__":
    main()
