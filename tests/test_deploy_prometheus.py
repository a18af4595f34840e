"""Every PromQL expression deploy/ ships returns data from a real Prometheus scraping the real daemon.

The daemon, a worker on Redis Streams (for the partitions' lag) with its redis-server, and a
Prometheus server run on 127.0.0.1.  Prometheus reads the shipped
prometheus.yml with its targets pointed at the test's ports and its intervals at 1 s, and
loads the shipped alerts.yml.  Events of every kind stream in (supervised with and without
targets, forecasting, rejected lines, a loss that overflows) while each dashboard query and
each alert expression is evaluated through the HTTP API.  A quiet alert still has to show
its metrics exist: its comparisons are made ``bool`` ones, and each of its selectors is
evaluated on its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from .redis_support import SERVER as REDIS_SERVER
from .redis_support import RedisServer
from .test_deploy_support import PROMETHEUS_DIR, alert_rules, dashboard_queries, load_yaml, selectors, with_bool, yaml
from .test_service_support import Daemon

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
DEADLINE = 60.0  # seconds for everything to show up, generous for a loaded 2-core machine

pytestmark = [
    pytest.mark.skipif(not os.access(PROMETHEUS, os.X_OK),
                       reason="the prometheus server is not installed (CI installs Debian's prometheus package)"),
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed (CI installs Debian's package)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape_config(daemon_port: int, prometheus_port: int, worker_port: int | None = None) -> dict:
    """The shipped prometheus.yml, pointed at the test's ports (the streamrnn job: the daemon, and the Redis
    worker when there is one), scraping and evaluating every second."""
    (config,) = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    ports = {"streamrnn": daemon_port, "prometheus": prometheus_port}
    for job in config["scrape_configs"]:
        job.pop("scrape_interval", None)
        job.pop("scrape_timeout", None)
        for static in job["static_configs"]:
            static["targets"] = [f"127.0.0.1:{ports[job['job_name']]}"]
            if job["job_name"] == "streamrnn" and worker_port is not None:
                static["targets"].append(f"127.0.0.1:{worker_port}")
    return config


class Prometheus:
    def __init__(self, workdir: Path, config: dict, port: int):
        self.url = f"http://127.0.0.1:{port}"
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config_path}", f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                cwd=workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def get(self, path: str, **params) -> dict:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(self.url + path + query, timeout=10) as r:
            return json.loads(r.read())

    def query(self, expr: str) -> list:
        try:
            body = self.get("/api/v1/query", query=expr)
        except urllib.error.HTTPError as err:  # 400: the expression does not parse
            raise AssertionError(f"{expr}: {err.read().decode()}") from None
        assert body["status"] == "success", body
        result = body["data"]["result"]
        return result if body["data"]["resultType"] == "vector" else [result]

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready within {timeout} s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def stream(daemon: Daemon, stop: threading.Event, errors: list, limit_s: float = 120.0) -> None:
    """Events of every kind, about 200 a second, until ``stop`` (or ``limit_s``)."""
    try:
        client = daemon.connect()
        started, i = time.monotonic(), 0
        while not stop.is_set() and time.monotonic() - started < limit_s:
            u = (i % 17) / 17.0
            if i % 50 == 49:
                event = b"{not json\n"  # rejected: malformed_json
            elif i % 50 == 24:
                event = {"key": "pump", "x": {"u": u, "v": 1.0}, "y": 1e300}  # the loss overflows: skipped
            elif i % 3 == 0:
                event = {"key": "tank", "value": [u, 1.0 - u]}  # forecasting, two channels
            elif i % 7 == 1:
                event = {"key": "pump", "x": {"u": u, "v": 1.0}}  # no target: predicted
            else:
                event = {"key": ("pump", "fan")[i % 2], "x": {"u": u, "v": 1.0}, "y": u * u}
            client.ask(event)
            i += 1
            time.sleep(0.005)
        client.close()
    except Exception as err:  # reported by the test, not lost in the thread
        errors.append(err)


def test_every_shipped_query_returns_data_from_a_real_prometheus(tmp_path):
    redis = RedisServer(tmp_path / "redis").start()  # first: nothing else runs yet if it cannot start
    daemon = Daemon(tmp_path / "daemon", "--tcp", "127.0.0.1:0", "--no-stdin",
                    "--set", "checkpoint.every_events=150", "--set", "checkpoint.every_seconds=1")
    worker = Daemon(tmp_path / "worker", "--no-stdin", "--redis", redis.url, "--partitions", "4")
    prometheus: Prometheus | None = None
    stop, errors = threading.Event(), []
    streamer = threading.Thread(target=stream, args=(daemon, stop, errors), daemon=True)
    try:
        daemon.ready()
        worker.ready()
        daemon_port = int(daemon.metrics_url.split(":")[2].split("/")[0])
        worker_port = int(worker.metrics_url.split(":")[2].split("/")[0])
        for attempt in range(3):  # a free port can be taken between the probe and the bind
            port = free_port()
            prometheus = Prometheus(tmp_path, scrape_config(daemon_port, port, worker_port), port)
            try:
                prometheus.wait_ready(DEADLINE)
                break
            except AssertionError:
                prometheus.stop()
                if attempt == 2:
                    raise
        streamer.start()

        deadline = time.monotonic() + DEADLINE
        up = []
        while time.monotonic() < deadline and not up:
            up = prometheus.query('up{job="streamrnn"} == 1')
            time.sleep(0.5)
        assert up, f"the daemon was never scraped:\n{prometheus.get('/api/v1/targets')}"

        # every expression as Grafana and the rule evaluator would run it, and every selector alone
        checks = dict(dashboard_queries())
        for rule in alert_rules():
            checks[f"alert {rule['alert']} (comparisons as bool)"] = with_bool(rule["expr"].strip())
        for where, expr in list(checks.items()):
            for selector in selectors(expr):
                checks.setdefault(f"selector {selector}", selector)
        pending = dict(checks)
        while pending and time.monotonic() < deadline and not errors:
            for where, expr in list(pending.items()):
                if prometheus.query(expr):
                    del pending[where]
            time.sleep(0.5)
        assert not errors, errors
        assert not pending, "no data for:\n" + "\n".join(f"  {w}: {e}" for w, e in pending.items())

        # the rule evaluator ran every alert rule without an error
        while time.monotonic() < deadline:
            rules = [r for g in prometheus.get("/api/v1/rules")["data"]["groups"] for r in g["rules"]]
            if len(rules) == len(alert_rules()) and all(r["health"] == "ok" for r in rules):
                break
            time.sleep(0.5)
        assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules()}
        assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
    finally:
        stop.set()
        if streamer.is_alive():
            streamer.join(timeout=30)
        if prometheus is not None:
            prometheus.stop()
        daemon.stop()
        worker.stop()
        redis.stop()
