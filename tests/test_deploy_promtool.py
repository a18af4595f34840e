"""promtool accepts the shipped Prometheus configuration and rules, and the rules' own unit tests pass:
each alert fires on synthetic series of a sick daemon and stays quiet on healthy ones."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from .test_deploy_support import PROMETHEUS_DIR, alert_rules, load_yaml

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None,
                                reason="promtool is not installed (CI installs Debian's prometheus package)")


def promtool(*args: str) -> str:
    result = subprocess.run(["promtool", *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_check_config():
    out = promtool("check", "config", "prometheus.yml")
    assert "SUCCESS: prometheus.yml is valid" in out and "1 rule files found" in out


def test_check_rules():
    out = promtool("check", "rules", "alerts.yml")
    assert f"SUCCESS: {len(alert_rules())} rules found" in out


def test_alert_unit_tests_cover_every_alert_both_ways():
    out = promtool("test", "rules", "alerts_test.yml")
    assert "SUCCESS" in out and "FAILED" not in out
    (doc,) = load_yaml(PROMETHEUS_DIR / "alerts_test.yml")
    cases = [case for test in doc["tests"] for case in test["alert_rule_test"]]
    firing = {case["alertname"] for case in cases if case["exp_alerts"]}
    assert firing == {rule["alert"] for rule in alert_rules()}, "an alert is never shown firing"
    for case in cases:  # every case that fires also shows healthy instances that stay quiet
        fired = {alert["exp_labels"]["instance"] for alert in case["exp_alerts"]}
        test = next(t for t in doc["tests"] if case in t["alert_rule_test"])
        instances = {s["series"].split('instance="')[1].split('"')[0] for s in test["input_series"]}
        assert not fired or instances - fired, f"{case['alertname']} at {case['eval_time']}: no quiet instance"
    for name in ("StreamrnnLossDiverging", "StreamrnnCheckpointStale"):  # the two: quiet before firing
        assert any(c["alertname"] == name and not c["exp_alerts"] for c in cases), name
