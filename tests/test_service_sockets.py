"""Sockets the daemon owns: no take-over of a live Unix socket, its permissions, a bound on connections."""

from __future__ import annotations

import stat

from .test_service_support import Daemon


def test_a_second_daemon_refuses_a_live_unix_socket_and_leaves_it_alone(tmp_path):
    sock = str(tmp_path / "s.sock")
    with Daemon(tmp_path / "a", "--unix", sock, "--no-stdin", metrics=False) as first:
        first.ready()
        with Daemon(tmp_path / "b", "--unix", sock, "--no-stdin", metrics=False) as second:
            assert second.proc.wait(timeout=20) == 1
            assert "another process is listening on unix socket" in second.log()
        client = first.connect(sock)  # the first daemon's socket file is still there, and still its own
        assert client.ask({"key": "k", "value": 1.0})["step"] == 1
        client.close()
        assert first.stop() == 0
    assert not (tmp_path / "s.sock").exists()  # removed by the daemon that made it


def test_a_stale_unix_socket_is_replaced(tmp_path):
    import socket

    sock = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock))
    stale.close()  # the file stays, nobody listens: a daemon that was killed
    with Daemon(tmp_path, "--unix", str(sock), "--no-stdin", metrics=False) as daemon:
        daemon.ready()
        assert daemon.connect(str(sock)).ask({"value": 2.0})["step"] == 1
        assert daemon.stop() == 0


def test_the_unix_socket_gets_its_permission_mode(tmp_path):
    sock = tmp_path / "s.sock"
    for mode, args in (("0660", ()), ("0600", ("--set", "sources.unix_mode=0600"))):
        with Daemon(tmp_path / mode, "--unix", str(sock), "--no-stdin", *args, metrics=False) as daemon:
            daemon.ready()
            assert stat.S_IMODE(sock.stat().st_mode) == int(mode, 8)
            assert daemon.stop() == 0


def test_one_connection_too_many_is_told_and_closed(tmp_path):
    with Daemon(tmp_path, "--tcp", "127.0.0.1:0", "--no-stdin", "--set", "sources.max_connections=2") as daemon:
        daemon.ready()
        first, second = daemon.connect(), daemon.connect()
        assert first.ask({"value": 1.0})["step"] == 1 and second.ask({"value": 2.0})["step"] == 2
        third = daemon.connect()
        refused = third.reply()
        assert refused["error"]["code"] == "too_many_connections"
        assert third.file.readline() == b""  # closed
        first.close()
        for _ in range(100):  # the slot is free again once the first close is seen
            fourth = daemon.connect()
            reply = fourth.ask({"value": 3.0})
            fourth.close()
            if "step" in reply:
                break
        assert reply["step"] == 3
        status, text = daemon.get("/metrics")
        assert 'streamrnn_rejected_lines_total{reason="too_many_connections"}' in text
        second.close()
        assert daemon.stop() == 0
