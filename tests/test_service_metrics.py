"""/metrics of the real daemon parses, every metric moves as events flow, and promtool accepts it."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .test_service_support import Daemon, lines, run_stdin, supervised_events

# sample -> how it must change between a scrape after a few events and one after many
MOVING = {
    "streamrnn_events_total{outcome=learned}": "up",
    "streamrnn_events_total{outcome=predicted}": "up",
    "streamrnn_events_total{outcome=rejected}": "up",
    "streamrnn_rejected_lines_total{reason=malformed_json}": "up",
    "streamrnn_rejected_lines_total{reason=non_finite}": "up",
    "streamrnn_step_latency_seconds_count": "up",
    "streamrnn_step_latency_seconds_sum": "up",
    "streamrnn_step_latency_seconds_bucket{le=1.0}": "up",
    "streamrnn_event_loss_sum": "up",
    "streamrnn_event_loss_count": "up",
    "streamrnn_last_prediction{output=0}": "changes",
    "streamrnn_last_target{output=0}": "changes",
    "streamrnn_hidden_norm{model=daemon}": "changes",
    "streamrnn_grad_norm{model=daemon}": "changes",
    "streamrnn_clipped_updates_total{model=daemon}": "up",
    "streamrnn_bounded_values_total{model=daemon}": "up",
    "streamrnn_jacobian_norm{model=daemon}": "changes",
    "streamrnn_sensitivity_norm{model=daemon}": "changes",
    "streamrnn_steps_total{model=daemon}": "up",
    "streamrnn_live_keys": "changes",
    "streamrnn_stored_keys": "changes",
    "streamrnn_evictions_total": "up",
    "streamrnn_restores_total": "up",
    "streamrnn_checkpoint_duration_seconds_count": "up",
    "streamrnn_checkpoint_failures_total": "up",
    "streamrnn_eviction_failures_total": "up",
    "streamrnn_checkpoint_last_success_timestamp_seconds": "up",
    "streamrnn_checkpoint_generation": "up",
    "streamrnn_connections_accepted_total": "up",
}
PRESENT = {
    "streamrnn_build_info": 1.0,
    "streamrnn_checkpoint_corrupt_total": 1.0,  # the newest checkpoint it started on was truncated
}


def samples(text: str) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k not in ("version", "python", "numpy"))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def test_every_metric_moves(tmp_path):
    # a first run leaves two checkpoints; the newest is then truncated
    run_stdin(tmp_path, lines(supervised_events(30, keys=("a",))), "--set", "checkpoint.every_events=20")
    newest = sorted((tmp_path / "ckpt").glob("gen-*.npz"))[-1]
    newest.write_bytes(newest.read_bytes()[:100])

    # checkpoints in line: one falls due while the directory is gone whatever the machine's load (a forked
    # writer still busy with the one before would put it off until the directory is back)
    with Daemon(tmp_path, "--tcp", "127.0.0.1:0", "--no-stdin", "--max-keys", "2",
                "--set", "checkpoint.every_events=25", "--set", "checkpoint.background=false") as daemon:
        daemon.ready()
        assert daemon.get("/healthz") == (200, "ok\n") and daemon.get("/readyz")[0] == 200
        client = daemon.connect()
        for event in supervised_events(10, keys=("a",)):
            client.ask(event)
        status, text = daemon.get("/metrics")
        assert status == 200
        before = samples(text)

        events = supervised_events(120, keys=("a", "b", "c", "d"), seed=1)
        for event in events[:60]:
            client.ask(event)
        ckpt = tmp_path / "ckpt"
        shutil.move(ckpt, tmp_path / "moved")  # checkpoints fail while the directory is gone
        ckpt.write_text("not a directory")
        for event in events[60:90]:  # answered, or refused as "unavailable" when a key must be read back
            reply = client.ask(event)
            assert "step" in reply or reply["error"]["code"] == "unavailable", reply
        assert client.ask({"key": "new", "x": {"u": 1.0, "v": 2.0}})["step"] == 1  # cannot evict: stays in memory
        ckpt.unlink()
        shutil.move(tmp_path / "moved", ckpt)
        daemon.connect().close()
        for event in events[90:]:
            client.ask(event)
        assert client.ask(b"{oops\n")["error"]["code"] == "malformed_json"
        assert client.ask(b'{"key": "a", "x": {"u": 1, "v": 1}, "y": NaN}\n')["error"]["code"] == "non_finite"
        huge = client.ask({"key": "a", "x": {"u": 1.0, "v": 1.0}, "y": 1e300})  # bounded before it is learned
        assert huge["loss"] > 1e100 and huge["step"] > 1
        client.ask({"key": "d", "x": {"u": 80.0, "v": -80.0}})  # far out: standardised and clipped to +-5
        client.close()
        after = samples(daemon.get("/metrics")[1])
        assert daemon.stop() == 0

    for name, how in MOVING.items():
        assert name in after, f"{name} missing from /metrics"
        if how == "up":
            assert after[name] > before.get(name, 0.0), f"{name} did not grow: {before.get(name)} -> {after[name]}"
        else:
            assert after[name] != before.get(name), f"{name} did not change: {after[name]}"
    for name, value in PRESENT.items():
        assert after[name] == value, name
    # a fraction of 16 units: it need not move between two scrapes, but it must be one
    assert 0.0 <= after["streamrnn_saturated_ratio{model=daemon}"] <= 1.0
    assert not [n for n in after if "key=" in n], "no per-key labels"
    assert "is corrupt" not in daemon.log()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (CI installs prometheus)")
def test_promtool_accepts_the_exposition(tmp_path):
    # stdin is /dev/null here: it ends at once, and the TCP listener keeps the daemon running
    with Daemon(tmp_path, "--tcp", "127.0.0.1:0") as daemon:
        daemon.ready()
        client = daemon.connect()
        for event in supervised_events(20):
            client.ask(event)
        client.ask(b'{"value": 3.0}\n')
        text = daemon.get("/metrics")[1]
        client.close()
        daemon.stop()
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), \
        result.stdout + result.stderr
