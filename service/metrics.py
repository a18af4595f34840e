"""The daemon's Prometheus metrics, all computed at scrape time.

Two collectors share a registry:

* model health comes from the estimators' ``streamrnn.metrics.DiagnosticsCollector``,
  fed one diagnostics mapping for the whole daemon (label ``model``): counters summed
  over every key, live or checkpointed out, and the health gauges as the *worst* value
  over the most recently active live keys (at most ``HEALTH_SAMPLE``): hidden-state
  norm, saturated fraction, gradient norm, recurrent Jacobian norm, RTRL sensitivity
  norm.  No metric has a per-key label.
* ``DaemonCollector`` publishes the daemon's own figures, which belong to no model and so
  carry no ``model`` label: keys in and out of memory, evictions, connections, checkpoint
  failures, times and generation (``DAEMON_FIGURES``), events by outcome, rejected lines by
  reason, the step latency and checkpoint duration histograms, loss sum and count, last
  prediction and target per output, and build information.
"""

from __future__ import annotations

import platform

import numpy as np
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    SummaryMetricFamily,
)

import streamrnn
from streamrnn.diagnostics import gradient_regime
from streamrnn.metrics import PREFIX, DiagnosticsCollector

from .stats import OUTCOMES, Histogram, Stats
from .table import StreamTable

HEALTH_SAMPLE = 100  # live keys, most recent first, whose health the gauges cover
HEALTH_MAX = ("hidden_norm", "saturated_fraction", "grad_norm", "grad_norm_clipped", "jacobian_norm",
              "sensitivity_norm")
MAX_OUTPUTS = 16  # entries of the last prediction and target published


def health(table: StreamTable, last_loss: float | None) -> dict:
    """One diagnostics mapping for all streams (see the module docstring)."""
    totals = table.totals()
    out = {"steps": totals["steps"], "updates": totals["updates"],
           "skipped_updates": totals["skipped"], "clipped_updates": totals["clipped"],
           "bounded_values": totals["bounded"]}
    if last_loss is not None:
        out["loss"] = last_loss
    recent = list(reversed(table.live.values()))[:HEALTH_SAMPLE]
    weights: dict = {}
    for stream in recent:
        diags = stream.health()
        for key in HEALTH_MAX:
            value = diags.get(key)
            if value is not None and (key not in out or value > out[key]):
                out[key] = value
        for name, w in diags.get("weights", {}).items():
            weights.setdefault(name, []).append(w)
    if weights:  # the mean weight of each component over the sampled keys
        out["weights"] = {name: sum(ws) / len(ws) for name, ws in weights.items()}
    if "jacobian_norm" in out:
        out["gradient_regime"] = gradient_regime(out["jacobian_norm"])
    return out


#: the daemon's own scalar figures: name in ``daemon_figures`` -> (metric name without the prefix, kind, help)
DAEMON_FIGURES = {
    "live_keys": ("live_keys", "gauge", "Keys whose network is in memory."),
    "stored_keys": ("stored_keys", "gauge", "Keys checkpointed out of memory."),
    "evictions": ("evictions", "counter", "Keys checkpointed out as least recently used."),
    "restores": ("restores", "counter", "Keys read back from the checkpoint store."),
    "eviction_failures": ("eviction_failures", "counter",
                          "Keys that could not be checkpointed out (they stay in memory)."),
    "restore_failures": ("restore_failures", "counter", "Stored keys that could not be read back."),
    "corrupt_keys": ("corrupt_keys", "counter",
                     "Stored keys whose state was unreadable: quarantined, answered corrupt_state, then forgotten."),
    "expired_keys": ("expired_keys", "counter",
                     "Stored keys forgotten to make room for new ones (streams.when_full = expire)."),
    "connections": ("connections", "gauge", "Open client connections."),
    "connections_accepted": ("connections_accepted", "counter", "Client connections accepted."),
    "checkpoint_failures": ("checkpoint_failures", "counter", "Checkpoints that could not be written."),
    "checkpoint_corrupt": ("checkpoint_corrupt", "counter",
                           "Checkpoints found corrupt or truncated at start-up (an older one was used)."),
    "checkpoint_last_success": ("checkpoint_last_success_timestamp_seconds", "gauge",
                                "Unix time of the newest checkpoint written (0: none yet)."),
    "checkpoint_generation": ("checkpoint_generation", "gauge", "Newest checkpoint generation."),
    "reply_write_failures": ("reply_write_failures", "counter", "Replies that could not be written to stdout."),
    "partition_take_failures": ("partition_take_failures", "counter",
                                "Redis Streams: partitions whose lease this worker took but whose checkpoint it "
                                "could not restore or write (the lease given back)."),
}


def daemon_figures(stats: Stats, table: StreamTable, checkpointer) -> dict:
    return {
        "live_keys": len(table.live), "stored_keys": len(table.stored), "evictions": table.evictions,
        "restores": table.restores, "eviction_failures": table.eviction_failures,
        "restore_failures": table.restore_failures, "corrupt_keys": table.corrupt_keys,
        "expired_keys": table.expired_keys,
        "connections": stats.connections_open,
        "connections_accepted": stats.connections, "checkpoint_failures": stats.checkpoint_failures,
        "checkpoint_corrupt": stats.checkpoint_corrupt, "checkpoint_last_success": stats.checkpoint_last_success,
        "checkpoint_generation": checkpointer.generation, "reply_write_failures": stats.stdout_failures,
        "partition_take_failures": stats.partition_take_failures,
    }


def _vector(value) -> list[float]:
    if value is None:
        return []
    return [float(v) for v in np.ravel(value)[:MAX_OUTPUTS]]


def _histogram(name: str, doc: str, h: Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, buckets=h.cumulative(), sum_value=h.sum)


class DaemonCollector:
    def __init__(self, stats: Stats, table: StreamTable, checkpointer, registry=None):
        self.stats, self.table, self.checkpointer = stats, table, checkpointer
        if registry is not None:
            registry.register(self)

    def collect(self):
        s = self.stats
        for key, value in daemon_figures(s, self.table, self.checkpointer).items():
            name, kind, doc = DAEMON_FIGURES[key]
            cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield cls(PREFIX + name, doc, value=value)
        events = CounterMetricFamily("streamrnn_events", "Input lines by outcome: learned (a target came), "
                                     "predicted (no target), skipped (the loss was not finite: no update), "
                                     "rejected.", labels=["outcome"])
        for outcome in OUTCOMES:
            events.add_metric([outcome], s.outcomes[outcome])
        yield events
        rejected = CounterMetricFamily("streamrnn_rejected_lines", "Input lines rejected, by reason "
                                       "(the error code of the reply).", labels=["reason"])
        for reason, count in s.rejected.items():
            rejected.add_metric([reason], count)
        yield rejected
        yield _histogram("streamrnn_step_latency_seconds", "Time to handle one event: parse, step, reply.",
                         s.latency)
        yield SummaryMetricFamily("streamrnn_event_loss", "Loss of each event that had a target; "
                                  "rate(_sum) / rate(_count) is the mean loss over a window.",
                                  count_value=s.loss_count, sum_value=s.loss_sum)
        for name, value, doc in (("streamrnn_last_prediction", s.last_prediction, "Newest prediction "
                                  "(one step ahead for forecasts), per output."),
                                 ("streamrnn_last_target", s.last_target, "Newest target or value, per output.")):
            gauge = GaugeMetricFamily(name, doc, labels=["output"])
            for i, v in enumerate(_vector(value)):
                gauge.add_metric([str(i)], v)
            yield gauge
        yield _histogram("streamrnn_checkpoint_duration_seconds", "Time to write one checkpoint.", s.checkpoint)
        if s.partition_lag:  # a worker on Redis Streams: its partitions, and how far behind each is
            lag = GaugeMetricFamily("streamrnn_partition_lag", "Entries of an owned partition not yet applied "
                                    "(behind its stream's tail), as of the newest read.", labels=["partition"])
            owned = GaugeMetricFamily("streamrnn_partition_owned", "1 for each partition this worker owns.",
                                      labels=["partition"])
            for partition, entries in sorted(s.partition_lag.items()):
                lag.add_metric([str(partition)], entries)
                owned.add_metric([str(partition)], 1)
            yield lag
            yield owned
        info = InfoMetricFamily("streamrnn_build", "Versions of the running daemon.")
        info.add_metric([], {"version": streamrnn.__version__, "python": platform.python_version(),
                             "numpy": np.__version__})
        yield info


def registry_for(stats: Stats, table: StreamTable, checkpointer, label: str = "daemon") -> CollectorRegistry:
    """A private registry with both collectors (nothing global)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)  # process_* memory, CPU and start time, as every exporter has
    DiagnosticsCollector(lambda: [(label, health(table, stats.last_loss))], registry=registry)
    DaemonCollector(stats, table, checkpointer, registry=registry)
    return registry
