"""The daemon's own counts, kept as plain numbers on the hot path.

Incrementing a Python int costs a few tens of nanoseconds; prometheus_client's
locked counters cost more, and the worker counts several things per event.  The
collector in ``service.metrics`` turns these numbers into metrics at scrape time.
"""

from __future__ import annotations

import bisect

from .protocol import ERROR_CODES

#: step latency bucket bounds in seconds, 50 us to 1 s
LATENCY_BUCKETS = (5e-5, 7.5e-5, 1e-4, 1.5e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0)
CHECKPOINT_BUCKETS = (1e-3, 5e-3, 0.025, 0.1, 0.5, 2.5, 10.0, 60.0)
OUTCOMES = ("learned", "predicted", "skipped", "rejected")


class Histogram:
    """Counts per bucket (not cumulative) plus sum; ``observe`` is one bisect."""

    def __init__(self, bounds):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, int]]:
        """[(le, count of values <= le)] in Prometheus' order, +Inf last."""
        out, total = [], 0
        for bound, count in zip(self.bounds + (float("inf"),), self.counts):
            total += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return out


class Stats:
    def __init__(self):
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.rejected = dict.fromkeys(ERROR_CODES, 0)
        self.latency = Histogram(LATENCY_BUCKETS)
        self.loss_sum = 0.0
        self.loss_count = 0
        self.last_loss: float | None = None
        self.last_prediction: list[float] = []
        self.last_target: list[float] = []
        self.connections_open = 0
        self.connections = 0
        self.checkpoint = Histogram(CHECKPOINT_BUCKETS)
        self.checkpoint_failures = 0
        self.checkpoint_corrupt = 0
        self.checkpoint_last_success = 0.0  # unix time; 0: never
        self.stdout_failures = 0
        # on Redis Streams: per owned partition, entries not yet applied (behind the stream's tail)
        self.partition_lag: dict[int, int] = {}
        self.partition_take_failures = 0  # leases taken whose partition could not be restored or written here

    def reject(self, code: str) -> None:
        self.outcomes["rejected"] += 1
        self.rejected[code] += 1
