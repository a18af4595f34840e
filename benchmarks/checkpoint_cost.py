"""What a daemon's checkpoint costs: all keys, only the keys that changed, and nothing changed.

    python benchmarks/checkpoint_cost.py                    # 10,000 keys, 3 repeats (a few minutes)
    python benchmarks/checkpoint_cost.py --keys 2000 --repeats 1

In-process, with the daemon's own worker, table, DirectoryStore (on a
temporary directory) and garbage-collector thresholds: N keys (default model, BPTT(10; 1), 16 units, 4
features) each take a few events, and a first checkpoint writes them all.
Then, in each repeat:

1. 10,000 events go to keys drawn uniformly at random (about 63 % of 10,000
   keys take at least one), and the worker writes its checkpoint: the keys
   that changed, and a manifest referencing the rest;
2. the same changed keys alone are written as a checkpoint into a fresh
   store: the cost of writing only what changed, the floor for (1);
3. a checkpoint with nothing changed: a manifest only.

Last, a new worker reads the newest checkpoint back, every key (what a
restart does before it reports ready), and its digest must equal the
writer's.

Goals (the speed issue): (1) <= 2 x (2), and (3) < 50 ms.  Each figure is the
median over repeats; the state per key is the newest shard's size over the
keys in it.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streamrnn_service.config import load  # noqa: E402
from streamrnn_service.serve import GC_THRESHOLDS  # noqa: E402
from streamrnn_service.server import build_worker  # noqa: E402
from streamrnn_service.store import Checkpoint, DirectoryStore  # noqa: E402

FEATURES = ("f0", "f1", "f2", "f3")


def lines(rng, keys: int, n: int, spread: bool = True) -> list[bytes]:
    picks = rng.integers(0, keys, size=n) if spread else np.arange(n) % keys
    X = rng.normal(size=(n, len(FEATURES)))
    return [json.dumps({"key": f"k{k}", "x": dict(zip(FEATURES, map(float, x))), "y": float(np.sin(x[0]))}).encode()
            for k, x in zip(picks, X)]


def feed(worker, batch) -> set[str]:
    for line in batch:
        worker.handle(line, len(line) + 1)
    return {json.loads(line)["key"] for line in batch}


def timed(f) -> float:
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keys", type=int, default=10_000)
    p.add_argument("--events", type=int, default=10_000, help="events between the measured checkpoints")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--learner", default="bptt")
    p.add_argument("--bare", action="store_true", help="supervised keys as the bare network")
    args = p.parse_args()
    threadpool_limits(1)
    gc.set_threshold(*GC_THRESHOLDS)  # as the daemon runs
    rng = np.random.default_rng(0)
    overrides = {"model.learner": args.learner, "streams.max_keys": str(args.keys), "checkpoint.every_events": "0",
                 "model.hybrid": "false" if args.bare else "true"}
    incremental, changed_only, unchanged, changed_counts = [], [], [], []
    with tempfile.TemporaryDirectory() as work:
        config = load(environ={}, overrides=dict(overrides, **{"checkpoint.dir": work}))
        worker = build_worker(config, DirectoryStore(Path(work) / "daemon"))
        feed(worker, lines(rng, args.keys, 2 * args.keys, spread=False))
        first = timed(worker.checkpointer.checkpoint)
        store = worker.table.store
        _, (shard,) = store.files(worker.checkpointer.generation)  # the first checkpoint: one shard, every key
        per_key = shard.stat().st_size / args.keys
        for r in range(args.repeats):
            changed = feed(worker, lines(rng, args.keys, args.events))
            changed_counts.append(len(changed))
            incremental.append(timed(worker.checkpointer.checkpoint))
            alone = DirectoryStore(Path(work) / f"alone-{r}")
            live = worker.table.live

            def only_changed():
                alone.commit(Checkpoint(1, {"events": 0}, {k: live[k].snapshot() for k in changed}, {}))

            changed_only.append(timed(only_changed))
            unchanged.append(timed(worker.checkpointer.checkpoint))
        again = build_worker(config, DirectoryStore(Path(work) / "daemon"))
        restore = timed(again.checkpointer.restore)
        if again.table.digest() != worker.table.digest():
            raise SystemExit("the keys read back differ from the keys written")
    med = statistics.median
    print(f"\n{args.keys:,} keys ({'bare network' if args.bare else 'hybrid'}, learner {args.learner}, 16 units, "
          f"4 features); {args.events:,} events between checkpoints, about {med(changed_counts):,.0f} keys "
          f"changed; medians of {args.repeats}\n")
    print("| checkpoint | s | ÷ only the changed keys |")
    print("|---|---:|---:|")
    print(f"| first: every key | {first:.3f} | - |")
    print(f"| after {args.events:,} events: the changed keys + a manifest (the daemon's) | {med(incremental):.3f} | "
          f"{med(incremental) / med(changed_only):.2f} |")
    print(f"| the changed keys alone, into an empty store (the floor) | {med(changed_only):.3f} | 1.00 |")
    print(f"| nothing changed: a manifest only | {med(unchanged) * 1e3:.1f} ms | - |")
    print(f"\nA restart's read-back of all {args.keys:,} keys: {restore:.2f} s ({restore / args.keys * 1e6:,.0f} µs a key).")
    print(f"\nState per key on disk: {per_key / 1e3:.1f} KB (the first shard over its keys, two events into each: "
          "young keys still share most of their bytes, which the compression finds; a trained key's state is in "
          "daemon_throughput.py --keys).  Goals: the daemon's <= 2.00 x the floor; nothing changed < 50 ms.")


if __name__ == "__main__":
    main()
