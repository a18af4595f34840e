"""Socket sources: TCP and Unix listeners, many clients at once, each answered on its own connection.

Each connection is an ``asyncio.Protocol``: the bytes are split into lines and
handled as they arrive, and the replies are written back on the same transport.
A client resumes a key from the ``step`` of its last reply (or from
``{"command": "status", "key": ...}``): socket positions are per key, not per
connection.

At most ``sources.max_connections`` clients are connected at a time, over all
listeners: one more is sent a ``too_many_connections`` error line and closed.
A Unix socket is created with ``sources.unix_mode`` (0660: the owner and its
group).  A daemon refuses to start on a Unix path where another daemon answers,
and on stopping removes only the socket file it created.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import stat
from pathlib import Path

from .protocol import error
from .sources import LineSplitter, Source
from .stats import Stats

log = logging.getLogger("streamrnn.sources")


class _Connection(asyncio.Protocol):
    """One client: lines in, replies out on the same connection, handled as the bytes arrive.

    A client that does not read its replies stops being read (the transport's write
    buffer pauses reading), so it cannot make the daemon buffer without bound.
    """

    def __init__(self, source: "SocketSource"):
        self.source = source
        self.splitter = LineSplitter(source.limit)
        self.transport = None
        self.peer = source.address
        self.refused = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=1 << 20)  # replies of a whole read, before pausing
        self.peer = transport.get_extra_info("peername") or self.source.address
        stats = self.source.stats
        if stats.connections_open >= self.source.max_connections:
            self.refused = True
            stats.reject("too_many_connections")
            message = f"{stats.connections_open} clients are connected, the most sources.max_connections allows"
            transport.write((json.dumps(error("too_many_connections", message, None)) + "\n").encode())
            transport.close()
            log.warning("refused a %s client %s: %s", self.source.kind, self.peer, message)
            return
        self.source.clients.add(self)
        stats.connections += 1
        stats.connections_open += 1

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.source.should_stop():  # stopping: read nothing more
            self.transport.pause_reading()
            return
        self.transport.write(self.source.take(self.splitter, data, None))

    def eof_received(self) -> bool:
        if not self.refused:
            self._truncated("closed the connection")
        return False  # close once the replies written so far are flushed

    def connection_lost(self, exc) -> None:
        if self.refused:
            return
        if exc is not None:
            self._truncated(f"dropped ({exc})")
        self.source.clients.discard(self)
        self.source.stats.connections_open -= 1

    def _truncated(self, how: str) -> None:
        tail = self.splitter.close()
        if tail is not None:
            self.source.worker.unanswerable("truncated", f"{self.source.kind} client {self.peer} {how} "
                                            f"in the middle of a line ({tail[1]} bytes)")

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        if not self.source.should_stop():
            self.transport.resume_reading()


class SocketSource(Source):
    """A TCP ("HOST:PORT") or Unix (path) listener; runs until the daemon stops."""

    finite = False

    def __init__(self, kind: str, address: str, worker, limit, should_stop, stats: Stats,
                 max_connections: int = 256, unix_mode: int = 0o660):
        super().__init__(worker, limit, should_stop)
        self.kind, self.address, self.stats = kind, address, stats
        self.max_connections, self.unix_mode = max_connections, unix_mode
        self.name = f"{kind}:{address}"
        self.server: asyncio.AbstractServer | None = None
        self.clients: set[_Connection] = set()
        self._created = None  # (device, inode) of the Unix socket file this daemon made

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.kind == "tcp":
            host, _, port = self.address.rpartition(":")
            self.server = await loop.create_server(lambda: _Connection(self), host.strip("[]"), int(port))
            bound = self.server.sockets[0].getsockname()
            log.info("listening on tcp %s:%d", bound[0], bound[1])
        else:
            path = Path(self.address)
            if path.exists() and stat.S_ISSOCK(path.stat().st_mode):
                if _answers(path):
                    raise OSError(f"another process is listening on unix socket {path}")
                path.unlink()  # left by a daemon that did not stop cleanly
            self.server = await loop.create_unix_server(lambda: _Connection(self), str(path))
            os.chmod(path, self.unix_mode)
            info = path.stat()
            self._created = (info.st_dev, info.st_ino)
            log.info("listening on unix socket %s (mode %o)", path, self.unix_mode)

    async def stop(self, timeout: float) -> None:
        """Stop accepting and reading; flush the replies written so far (within ``timeout``), then close."""
        if self.server is not None:
            self.server.close()
        for client in self.clients:
            client.transport.pause_reading()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and any(c.transport.get_write_buffer_size() for c in self.clients):
            await asyncio.sleep(0.01)
        for client in list(self.clients):
            client.transport.close()
        await asyncio.sleep(0)  # let the transports close
        for client in list(self.clients):
            client.transport.abort()  # what could not be flushed in time
        if self.kind == "unix":
            self.remove_socket()

    def remove_socket(self) -> None:
        """Remove the Unix socket file, if it is still the one this daemon created."""
        path = Path(self.address)
        try:
            info = path.stat()
        except FileNotFoundError:
            return
        if self._created == (info.st_dev, info.st_ino):
            path.unlink(missing_ok=True)


def _answers(path: Path) -> bool:
    """Whether something accepts connections on the Unix socket at ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()
