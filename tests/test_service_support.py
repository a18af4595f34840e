"""Helpers for the daemon tests: start the real `streamrnn serve` as a subprocess and talk to it.

Every daemon runs in a temporary directory, listens on 127.0.0.1 (port 0, read
back from its log) or on Unix sockets in that directory, and is stopped by PID.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

import streamrnn as sr

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 20.0


#: the daemon's default network (service.config defaults), as library arguments
NETWORK = dict(learner=sr.RTRL(), optimizer=sr.Adam(1e-3), clip_norm=1.0, seed=0)


def library_regressor() -> sr.RNNRegressor:
    """What a supervised key of the default daemon is: the river regressor with the same network."""
    return sr.RNNRegressor(hidden_size=16, **NETWORK)


def library_forecaster(horizon: int = 1):
    """What one channel of a forecasting key of the default daemon is."""
    from streamrnn.hybrid import HybridForecaster

    return HybridForecaster(horizon=horizon, layers=(sr.Elman(16, "tanh"),), **NETWORK)


def supervised_events(n: int, keys=("a", "b", "c"), seed: int = 0, features=("u", "v")) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x = {f: float(rng.normal()) for f in features}
        event = {"key": keys[i % len(keys)], "x": x, "id": f"e{i}"}
        if i % 7 != 3:  # some events come without a target
            event["y"] = float(np.sin(x[features[0]]) + 0.1 * rng.normal())
        out.append(event)
    return out


def library_replies(events: list[dict]) -> list[tuple]:
    """(key, step, prediction, loss) per supervised event, computed with RNNRegressor alone."""
    models, steps, out = {}, {}, []
    for e in events:
        key = e.get("key", "default")
        model = models.setdefault(key, library_regressor())
        steps[key] = steps.get(key, 0) + 1
        y = e.get("y")
        prediction = model.predict_one(e["x"])
        if y is None:
            model.advance_one(e["x"])
            loss = None
        else:
            model.learn_one(e["x"], y)
            loss = 0.5 * (prediction - y) ** 2
        out.append((key, steps[key], float(prediction), loss))
    return out


def lines(events) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


class Daemon:
    """`streamrnn serve` in ``workdir``; ``args`` are extra flags."""

    def __init__(self, workdir: Path, *args: str, stdin=subprocess.DEVNULL, env: dict | None = None,
                 metrics: bool = True):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"daemon-{time.monotonic_ns()}.log"
        cmd = [sys.executable, "-m", "streamrnn_service.cli", "serve", "--checkpoint-dir", str(self.workdir / "ckpt"),
               "--progress", "0", "--log-level", "debug"]
        cmd += ["--metrics-port", "0"] if metrics else ["--no-metrics"]
        # no daemon settings from the test's environment, but the library's kernel switch passes
        # through: the second CI pass (STREAMRNN_KERNELS=0) runs the daemons on numpy too
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMRNN_") or k == "STREAMRNN_KERNELS"}
        full_env["PYTHONPATH"] = str(REPO)
        full_env.update(env or {})
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd + list(args), cwd=self.workdir, stdin=stdin, stdout=subprocess.PIPE,
                                     stderr=self.log_file, env=full_env)

    # ----- start-up ------------------------------------------------------------------------
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log())
            if match:
                return match
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.02)
        raise AssertionError(f"no {pattern!r} in the daemon's log within {timeout} s:\n{self.log()}")

    def ready(self) -> "Daemon":
        try:
            self.wait_for(r"ready: ")
        except AssertionError:  # ``with Daemon(...).ready()`` has not entered: stop it here, or it outlives the test
            self.__exit__()
            raise
        return self

    @property
    def tcp_port(self) -> int:
        return int(self.wait_for(r"listening on tcp [\d.]+:(\d+)").group(1))

    @property
    def metrics_url(self) -> str:
        return self.wait_for(r"metrics at (http://\S+/metrics)").group(1)

    def get(self, path: str) -> tuple[int, str]:
        url = self.metrics_url.rsplit("/", 1)[0] + path
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    # ----- talking --------------------------------------------------------------------------
    def connect(self, unix: str | None = None) -> "Client":
        if unix:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(unix)
        else:
            sock = socket.create_connection(("127.0.0.1", self.tcp_port), timeout=30)
        sock.settimeout(30)
        return Client(sock)

    # ----- stopping ---------------------------------------------------------------------------
    def stop(self, sig=signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"daemon did not stop within {timeout} s:\n{self.log()}")
        finally:
            self.close_files()
        return self.proc.returncode

    def close_files(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream and not stream.closed:
                try:
                    stream.close()
                except BrokenPipeError:
                    pass
        self.log_file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.close_files()


class Client:
    """A line-oriented connection to the daemon."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.file = sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> dict:
        line = self.file.readline()
        assert line.endswith(b"\n"), f"no reply line (got {line!r})"
        return json.loads(line)

    def ask(self, event) -> dict:
        self.send(event if isinstance(event, bytes) else json.dumps(event).encode() + b"\n")
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def run_stdin(workdir: Path, data: bytes, *args: str, timeout: float = 60) -> tuple[list[dict], Daemon]:
    """Feed ``data`` on stdin until EOF; the replies, and the stopped daemon (rc 0 asserted)."""
    daemon = Daemon(workdir, *args, stdin=subprocess.PIPE, metrics=False)
    out, _ = daemon.proc.communicate(data, timeout=timeout)
    daemon.close_files()
    assert daemon.proc.returncode == 0, daemon.log()
    return [json.loads(line) for line in out.splitlines()], daemon


def digest(daemon: Daemon, client: Client | None = None) -> str:
    own = client is None
    client = client or daemon.connect()
    try:
        return client.ask({"command": "digest"})["digest"]
    finally:
        if own:
            client.close()


def test_library_network_matches_the_default_settings():
    from streamrnn_service.config import load
    from streamrnn_service.names import ModelTemplate

    config = load(environ={})
    template = ModelTemplate(config.model, config.forecast)
    assert template.forecaster().config() == library_forecaster().config()
    regressor = library_regressor()
    regressor.learn_one({"a": 1.0, "b": 2.0}, 1.0)
    assert template.regressor(2).corrector.rnn.config() == regressor._cores[None].corrector.rnn.config()
