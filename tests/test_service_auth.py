"""Socket authentication: with sources.auth_token_file, a connection's first line is auth with the token,
or the connection is closed with nothing applied; without one, TCP that other hosts reach does not start."""

from __future__ import annotations

import json
import time

import pytest

from streamrnn_service.config import ConfigError, load
from streamrnn_service.protocol import AuthReply, ErrorReply

from .test_service_support import Daemon, digest, lines

TOKEN = "3f9c1b7e0d2a4c6e8b1f3a5d7c9e0b2d"


def auth_line(token: str = TOKEN, id=None) -> bytes:
    return json.dumps({"command": "auth", "token": token, "id": id}).encode() + b"\n"


def token_file(tmp_path, text: str = TOKEN + "\n", mode: int = 0o600):
    path = tmp_path / "token"
    path.write_text(text)
    path.chmod(mode)
    return path


def guarded(tmp_path, *args: str) -> Daemon:
    """A daemon on 127.0.0.1 whose socket clients must send TOKEN first."""
    path = token_file(tmp_path)
    return Daemon(tmp_path, "--tcp", "127.0.0.1:0", "--no-stdin", "--set", f"sources.auth_token_file={path}", *args)


def authenticated(daemon: Daemon, unix: str | None = None):
    client = daemon.connect(unix)
    reply = client.ask(auth_line(id="a"))
    assert AuthReply.model_validate(reply) == AuthReply(id="a", authenticated=True)
    return client


def assert_refused(client) -> None:
    reply = client.reply()
    assert ErrorReply.model_validate(reply).error.code == "unauthenticated", reply
    assert client.file.readline() == b""  # closed


@pytest.mark.parametrize("first", [
    auth_line("0" * len(TOKEN), id=1),                        # a wrong token
    lines([{"key": "k", "value": 9.0}]) + auth_line(),        # an event before the auth line
    b'{"command": "auth"}\n',                                 # no token at all
    b'{"command": "status"}\n',                               # a read-only command is not auth either
    b"not json\n",
])
def test_a_first_line_without_the_token_is_refused_and_nothing_is_applied(tmp_path, first):
    with guarded(tmp_path) as daemon:
        daemon.ready()
        good = authenticated(daemon)
        assert good.ask({"key": "k", "value": 1.0})["step"] == 1
        before = (digest(daemon, good), good.ask({"command": "status", "key": "k"}))
        bad = daemon.connect()
        bad.send(first + lines([{"key": "k", "value": 5.0}, {"key": "other", "value": 1.0}]))
        assert_refused(bad)
        assert (digest(daemon, good), good.ask({"command": "status", "key": "k"})) == before
        assert before[1]["events"] == 1 and before[1]["step"] == 1
        _, text = daemon.get("/metrics")
        assert 'streamrnn_rejected_lines_total{reason="unauthenticated"} 1.0' in text
        assert TOKEN not in daemon.log() and "0" * len(TOKEN) not in daemon.log()
        good.close()
        assert daemon.stop() == 0


def test_a_client_that_does_not_authenticate_in_time_is_closed_and_frees_its_slot(tmp_path):
    with guarded(tmp_path, "--set", "sources.auth_timeout_seconds=0.5", "--set", "sources.max_connections=1") as daemon:
        daemon.ready()
        idle = daemon.connect()
        idle.send(b'{"command": "au')  # half a first line, then nothing
        started = time.monotonic()
        assert_refused(idle)
        assert 0.4 < time.monotonic() - started < 5.0
        client = authenticated(daemon)  # the only slot is free again
        time.sleep(0.7)  # authenticated clients have no deadline
        assert client.ask({"key": "k", "value": 1.0})["step"] == 1
        client.close()
        assert daemon.stop() == 0


def test_the_right_token_lets_events_through_however_the_bytes_arrive(tmp_path):
    with guarded(tmp_path) as daemon:
        daemon.ready()
        client = authenticated(daemon)  # auth alone, then events
        assert client.ask({"key": "k", "value": 1.0})["step"] == 1
        assert client.ask(auth_line("anything"))["authenticated"] is True  # already authenticated
        together = daemon.connect()  # auth and events in one packet: the events are applied
        together.send(auth_line(id=7) + lines([{"key": "k", "value": 2.0}, {"key": "k", "value": 3.0}]))
        assert together.reply() == {"id": 7, "authenticated": True}
        assert [together.reply()["step"] for _ in range(2)] == [2, 3]
        split = daemon.connect()  # the auth line over two packets, its newline with the next event
        line = auth_line()
        split.send(line[:20])
        time.sleep(0.1)
        split.send(line[20:] + lines([{"key": "k", "value": 4.0}]))
        assert split.reply()["authenticated"] is True and split.reply()["step"] == 4
        _, text = daemon.get("/metrics")
        assert 'streamrnn_rejected_lines_total{reason="unauthenticated"} 0.0' in text
        for c in (client, together, split):
            c.close()
        assert daemon.stop() == 0


def test_unix_sockets_need_the_token_too(tmp_path):
    sock = str(tmp_path / "s.sock")
    with guarded(tmp_path, "--unix", sock) as daemon:
        daemon.ready()
        assert "token required" in daemon.wait_for(r"listening on unix socket .*").group()
        bad = daemon.connect(sock)
        bad.send(lines([{"value": 1.0}]))
        assert_refused(bad)
        client = authenticated(daemon, sock)
        assert client.ask({"value": 1.0})["step"] == 1
        client.close()
        assert daemon.stop() == 0


def test_without_a_token_loopback_clients_need_no_auth_line(tmp_path):
    with Daemon(tmp_path, "--tcp", "127.0.0.1:0", "--no-stdin", metrics=False) as daemon:
        daemon.ready()
        client = daemon.connect()
        assert client.ask({"value": 1.0})["step"] == 1
        assert client.ask(auth_line("whatever", id=2)) == {"id": 2, "authenticated": True}  # clients may always send it
        assert client.ask({"command": "status"})["events"] == 1  # the auth line moved nothing
        client.close()
        assert daemon.stop() == 0


def test_tcp_that_other_hosts_reach_needs_a_token_or_an_explicit_setting(tmp_path):
    with Daemon(tmp_path / "a", "--tcp", "0.0.0.0:0", "--no-stdin", metrics=False) as daemon:
        assert daemon.proc.wait(timeout=30) == 1
        assert "cannot listen on tcp:0.0.0.0:0: other hosts can reach it and sources.auth_token_file is not set" \
            in daemon.log() and "sources.allow_unauthenticated = true" in daemon.log()
    with Daemon(tmp_path / "b", "--tcp", "0.0.0.0:0", "--no-stdin", "--set", "sources.allow_unauthenticated=true",
                metrics=False) as daemon:
        daemon.ready()
        assert daemon.connect().ask({"value": 1.0})["step"] == 1
        assert daemon.stop() == 0
    path = token_file(tmp_path)
    env = {"STREAMRNN_SOURCES_AUTH_TOKEN_FILE": str(path)}  # the route the deploy files take
    with Daemon(tmp_path / "c", "--tcp", "0.0.0.0:0", "--no-stdin", env=env, metrics=False) as daemon:
        daemon.ready()
        assert authenticated(daemon).ask({"value": 1.0})["step"] == 1
        assert daemon.stop() == 0


@pytest.mark.parametrize("text, message", [
    (None, "cannot read sources.auth_token_file"),
    ("\n", "is empty"),
    ("replace this line with a random token\n", "holds more than one word"),
    ("short\n", "holds a token of 5 characters; use at least 16"),
])
def test_a_bad_token_file_stops_start_up_and_names_the_setting(tmp_path, text, message):
    path = tmp_path / "token" if text is None else token_file(tmp_path, text)
    with Daemon(tmp_path, "--tcp", "127.0.0.1:0", "--no-stdin", "--set", f"sources.auth_token_file={path}",
                metrics=False) as daemon:
        assert daemon.proc.wait(timeout=30) == 1
        assert "cannot start: " in daemon.log() and message in daemon.log()
        assert f"sources.auth_token_file {path}" in daemon.log()


def test_a_token_file_every_user_can_read_is_warned_about(tmp_path):
    path = token_file(tmp_path, mode=0o644)
    with Daemon(tmp_path, "--tcp", "127.0.0.1:0", "--no-stdin", "--set", f"sources.auth_token_file={path}",
                metrics=False) as daemon:
        daemon.ready()
        assert f"sources.auth_token_file {path} can be read by every user on this system (mode 644)" in daemon.log()
        assert daemon.stop() == 0


def test_auth_settings():
    config = load(environ={"STREAMRNN_SOURCES_AUTH_TOKEN_FILE": "/run/secrets/streamrnn-token",
                           "STREAMRNN_SOURCES_ALLOW_UNAUTHENTICATED": "true"})
    assert str(config.sources.auth_token_file) == "/run/secrets/streamrnn-token"
    assert config.sources.allow_unauthenticated
    defaults = load(environ={}).sources
    assert defaults.auth_token_file is None and not defaults.allow_unauthenticated
    assert load(environ={}, overrides={"sources.auth_token_file": "none"}).sources.auth_token_file is None
    with pytest.raises(ConfigError, match="invalid setting sources.auth_token_file = ' ' .*must name a file"):
        load(environ={}, overrides={"sources.auth_token_file": " "})
    with pytest.raises(ConfigError, match="invalid setting sources.allow_unauthenticated"):
        load(environ={"STREAMRNN_SOURCES_ALLOW_UNAUTHENTICATED": "maybe"})
