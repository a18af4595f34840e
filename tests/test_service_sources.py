"""service.sources: the stdin and stdout pipes' buffers (the line splitting is in its doctests)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from streamrnn_service.sources import PIPE_BYTES, widen_pipe


def _limit() -> int:
    """The largest pipe buffer a process without CAP_SYS_RESOURCE may ask for."""
    try:
        return int(Path("/proc/sys/fs/pipe-max-size").read_text())
    except OSError:
        return 0


@pytest.mark.skipif(not hasattr(fcntl, "F_SETPIPE_SZ"), reason="no F_SETPIPE_SZ on this system")
def test_a_pipe_is_widened_from_either_end_and_never_narrowed():
    if _limit() < PIPE_BYTES:
        pytest.skip("this user may not ask for a pipe buffer that large")
    for end in (0, 1):  # the daemon widens stdin from its reading end, stdout from its writing end
        fds = os.pipe()
        try:
            assert fcntl.fcntl(fds[end], fcntl.F_GETPIPE_SZ) < PIPE_BYTES
            widen_pipe(fds[end])
            assert fcntl.fcntl(fds[end], fcntl.F_GETPIPE_SZ) == PIPE_BYTES
            assert fcntl.fcntl(fds[1 - end], fcntl.F_GETPIPE_SZ) == PIPE_BYTES  # one buffer, both ends
        finally:
            for fd in fds:
                os.close(fd)
    read, write = os.pipe()
    try:
        fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        widen_pipe(write, PIPE_BYTES // 4)
        assert fcntl.fcntl(write, fcntl.F_GETPIPE_SZ) == PIPE_BYTES
    finally:
        os.close(read)
        os.close(write)


def test_anything_but_a_pipe_is_left_alone(tmp_path):
    path = tmp_path / "replies.jsonl"
    with open(path, "wb") as f:
        widen_pipe(f.fileno())  # a regular file: no error, nothing asked
        f.write(b"{}\n")
    assert path.read_bytes() == b"{}\n"
    read, write = os.pipe()
    os.close(read)
    os.close(write)
    widen_pipe(write)  # a closed descriptor: the OSError is the caller's default, not a crash
