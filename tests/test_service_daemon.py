"""The real daemon on stdin and on concurrent TCP and Unix clients gives the library's predictions."""

from __future__ import annotations

import json
import threading

import pytest

from streamrnn_service.protocol import ErrorReply, ForecastReply, PredictionReply, StatusReply

from .test_service_support import Daemon, library_replies, lines, run_stdin, supervised_events


def _compare(replies: list[dict], events: list[dict]) -> None:
    expected = library_replies(events)
    assert len(replies) == len(expected)
    for reply, event, (key, step, prediction, loss) in zip(replies, events, expected):
        PredictionReply.model_validate(reply)
        assert (reply["id"], reply["key"], reply["step"]) == (event["id"], key, step)
        assert reply["prediction"] == prediction  # bit for bit: same model, same arithmetic
        assert reply.get("loss") == loss


def test_stdin_replies_equal_the_library(tmp_path):
    events = supervised_events(300)
    replies, daemon = run_stdin(tmp_path, lines(events))
    _compare(replies, events)
    assert "every input has ended" in daemon.log()
    assert list((tmp_path / "ckpt").glob("gen-*.npz")), "a checkpoint on the way out"


def test_default_key_and_forecasts(tmp_path):
    data = b'{"value": 1.0}\n{"value": 2.0, "id": 9}\n{"key": "m", "value": [1.0, 5.0]}\n{"command": "status"}\n'
    replies, _ = run_stdin(tmp_path, data, "--horizon", "3")
    first, second, multi, status = replies
    assert (first["key"], first["step"], "loss" not in first) == ("default", 1, True)
    assert first["forecast"] == [1.0, 1.0, 1.0]  # one value seen: persistence
    assert second["id"] == 9 and isinstance(second["loss"], float) and len(second["forecast"]) == 3
    assert [len(f) for f in multi["forecast"]] == [2, 2, 2]
    for reply in (first, second, multi):
        ForecastReply.model_validate(reply)
    StatusReply.model_validate(status)
    assert status["positions"]["stdin"]["lines"] == 3 and status["keys"] == 2  # its own line is not counted


def test_concurrent_tcp_and_unix_clients(tmp_path):
    sock = str(tmp_path / "d.sock")
    with Daemon(tmp_path, "--tcp", "127.0.0.1:0", "--unix", sock, "--no-stdin", metrics=False) as daemon:
        daemon.ready()
        results, errors = {}, []

        def client(name: str, unix: bool) -> None:
            try:
                events = [dict(e, key=name) for e in supervised_events(120, keys=(name,), seed=len(name))]
                conn = daemon.connect(sock if unix else None)
                got = []
                for chunk in range(0, len(events), 17):  # several lines per write, replies in order
                    conn.send(lines(events[chunk:chunk + 17]))
                    got += [conn.reply() for _ in events[chunk:chunk + 17]]
                conn.close()
                results[name] = (events, got)
            except Exception as err:  # reported below
                errors.append(err)

        threads = [threading.Thread(target=client, args=(f"{kind}{i}", kind == "unix"))
                   for kind in ("tcp", "unix") for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert len(results) == 8
        for events, got in results.values():
            _compare(got, events)
        assert daemon.stop() == 0
    assert not (tmp_path / "d.sock").exists(), "the socket file is removed on the way out"


def test_invalid_setting_exits_2_naming_it(tmp_path):
    import subprocess
    import sys

    from .test_service_support import REPO

    result = subprocess.run([sys.executable, "-m", "streamrnn_service.cli", "serve", "--set", "model.units=0"], cwd=tmp_path,
                            capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "STREAMRNN_LOG_FORMAT": "json"},
                            timeout=30)
    assert result.returncode == 2
    assert "model.units" in result.stderr and "flag" in result.stderr
    result = subprocess.run([sys.executable, "-m", "streamrnn_service.cli", "serve"], cwd=tmp_path, capture_output=True,
                            text=True, env={"PYTHONPATH": str(REPO), "STREAMRNN_MODEL_LEARNER": "adam"}, timeout=30)
    assert result.returncode == 2 and "model.learner" in result.stderr and "STREAMRNN_MODEL_LEARNER" in result.stderr


def test_bare_serve_runs_on_defaults(tmp_path):
    """No flags at all: stdin to stdout, ./checkpoints, metrics on 127.0.0.1:9310 (or a clear error if taken)."""
    import subprocess
    import sys

    from .test_service_support import REPO

    result = subprocess.run([sys.executable, "-m", "streamrnn_service.cli", "serve"], cwd=tmp_path, input=b'{"x": {"a": 1}}\n',
                            capture_output=True, env={"PYTHONPATH": str(REPO)}, timeout=30)
    if result.returncode == 1 and b"cannot serve metrics" in result.stderr:
        pytest.skip("port 9310 is taken on this machine")
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["step"] == 1
    assert (tmp_path / "checkpoints").is_dir()
    assert b"metrics at http://127.0.0.1:9310/metrics" in result.stderr


def test_error_replies_have_the_published_shape(tmp_path):
    replies, _ = run_stdin(tmp_path, b'nope\n{"x": {"a": 1}, "id": "q", "zzz": 1}\n')
    for reply in replies:
        ErrorReply.model_validate(reply)
    assert replies[1]["id"] == "q" and replies[1]["error"]["code"] == "unknown_field"
