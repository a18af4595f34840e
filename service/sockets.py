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

Authentication: with ``sources.auth_token_file`` set, the first line of every
connection must be ``{"command": "auth", "token": "..."}`` with the token in that
file (compared in constant time).  It is answered ``{"id": ..., "authenticated":
true}`` and the lines after it (in the same packet or later) are handled.  Any
other first line, a wrong token, or no complete first line within
``sources.auth_timeout_seconds``, is answered with an ``unauthenticated`` error
and the connection is closed: nothing it sent is applied.  The check happens here,
before the worker sees a line; the worker answers any later ``auth`` line
``authenticated``, as it does on stdin and input files, which are trusted.
Without a token, a TCP listener that other hosts can reach stops start-up unless
``sources.allow_unauthenticated`` is set.  There is no access control per key:
an authenticated client may write to, and read the status of, any key.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import socket
import stat
from pathlib import Path

from .protocol import Command, ProtocolError, error, parse, readable_id
from .sources import LineSplitter, Source
from .stats import Stats

log = logging.getLogger("streamrnn.sources")
AUTH_LINE = '{"command": "auth", "token": ...}'


class AuthError(Exception):
    """Authentication is set up wrong, or missing where other hosts can connect: the daemon does not start."""


def read_token(path: Path) -> bytes:
    """The shared secret in ``path`` (sources.auth_token_file), surrounding whitespace stripped.

    Refused when empty, several words, or short: a file still holding a placeholder sentence, or a
    guessable token, stops start-up rather than protecting nothing.
    """
    setting = f"sources.auth_token_file {path}"
    try:
        token, mode = path.read_bytes().strip(), path.stat().st_mode
    except OSError as err:
        raise AuthError(f"cannot read {setting}: {err.strerror or err}") from None
    if not token:
        raise AuthError(f"{setting} is empty; put a random token in it, e.g. `openssl rand -hex 32 > {path}`")
    if len(token.split()) > 1:
        raise AuthError(f"{setting} holds more than one word; it must hold the token alone "
                        "(is it still the placeholder?)")
    if len(token) < 16:
        raise AuthError(f"{setting} holds a token of {len(token)} characters; use at least 16, "
                        "e.g. `openssl rand -hex 32`")
    if mode & 0o007:
        log.warning("%s can be read by every user on this system (mode %o); chmod o-rwx it", setting, mode & 0o777)
    return token


def authenticates(line: bytes | None, token: bytes) -> bool:
    """Whether ``line`` is an auth command carrying ``token`` (compared in constant time)."""
    if line is None:
        return False
    try:
        event = parse(line)
    except ProtocolError:
        return False
    return (type(event) is Command and event.command == "auth" and event.token is not None
            and hmac.compare_digest(event.token.encode(), token))


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
        self.token = source.token  # what the first line must carry; None once it did (or with no token)
        self._deadline: asyncio.TimerHandle | None = None  # when a client that has not authenticated is closed

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=1 << 20)  # replies of a whole read, before pausing
        self.peer = transport.get_extra_info("peername") or self.source.address
        stats = self.source.stats
        if stats.connections_open >= self.source.max_connections:
            self.refused = True
            message = f"{stats.connections_open} clients are connected, the most sources.max_connections allows"
            self._refuse("too_many_connections", message, message)
            return
        self.source.clients.add(self)
        stats.connections += 1
        stats.connections_open += 1
        if self.token is not None:  # a client that never authenticates must not hold a connection slot
            self._deadline = asyncio.get_running_loop().call_later(self.source.auth_timeout, self._too_slow)

    def data_received(self, data: bytes) -> None:
        if self.refused or self.transport.is_closing():  # closing: told too many, or unauthenticated
            return
        if self.source.should_stop():  # stopping: read nothing more
            self.transport.pause_reading()
            return
        if self.token is not None:
            data = self._authenticate(data)
            if not data:
                return
        self.transport.write(self.source.take(self.splitter, data, None))

    def _authenticate(self, data: bytes) -> bytes:
        """Check the first line once it is complete; the bytes after it, b"" until then or when refused.

        Only the bytes up to the first newline go into the splitter, so the lines after a good
        auth line are handled as usual, and those after a bad one are never looked at.
        """
        head, newline, rest = data.partition(b"\n")
        lines = self.splitter.feed(head + newline)
        if not lines:  # the first line is not complete yet (the splitter bounds what it keeps)
            return b""
        (line, size), = lines
        if not authenticates(line, self.token):
            self._refuse("unauthenticated", f"the first line of a connection must be {AUTH_LINE} with the daemon's "
                         "token", "its first line is not auth with the right token",
                         readable_id(line) if line is not None else None)
            return b""
        self.token = None
        self._deadline.cancel()
        log.debug("%s client %s authenticated", self.source.kind, self.peer)
        self.transport.write(self.source.worker.handle(line, size, None))
        return rest

    def _refuse(self, code: str, message: str, why: str, id=None) -> None:
        """Count it, tell the client in one error line, and close once that is flushed; nothing more is read."""
        self.source.stats.reject(code)
        self.transport.write((json.dumps(error(code, message, id)) + "\n").encode())
        self.transport.close()
        log.warning("refused a %s client %s: %s", self.source.kind, self.peer, why)

    def eof_received(self) -> bool:
        if not self.refused:
            self._truncated("closed the connection")
        return False  # close once the replies written so far are flushed

    def _too_slow(self) -> None:
        if self.token is not None and not self.transport.is_closing():
            wait = self.source.auth_timeout
            self._refuse("unauthenticated", f"no {AUTH_LINE} line within {wait:g} s", f"no auth line within {wait:g} s")

    def connection_lost(self, exc) -> None:
        if self.refused:
            return
        if self._deadline is not None:
            self._deadline.cancel()
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
                 max_connections: int = 256, unix_mode: int = 0o660, token: bytes | None = None,
                 allow_unauthenticated: bool = False, auth_timeout: float = 10.0):
        super().__init__(worker, limit, should_stop)
        self.kind, self.address, self.stats = kind, address, stats
        self.max_connections, self.unix_mode = max_connections, unix_mode
        self.token, self.allow_unauthenticated, self.auth_timeout = token, allow_unauthenticated, auth_timeout
        self.name = f"{kind}:{address}"
        self.server: asyncio.AbstractServer | None = None
        self.clients: set[_Connection] = set()
        self._created = None  # (device, inode) of the Unix socket file this daemon made

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.kind == "tcp":
            host, _, port = self.address.rpartition(":")
            self.server = await loop.create_server(lambda: _Connection(self), host.strip("[]"), int(port),
                                                   start_serving=False)
            self._check_exposure()
            await self.server.start_serving()
            bound = self.server.sockets[0].getsockname()
            log.info("listening on tcp %s:%d%s", bound[0], bound[1], " (token required)" if self.token else "")
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
            log.info("listening on unix socket %s (mode %o%s)", path, self.unix_mode,
                     ", token required" if self.token else "")

    def _check_exposure(self) -> None:
        """Refuse to serve unauthenticated TCP that other hosts can reach, unless told to (before accepting any)."""
        if self.token is not None or self.allow_unauthenticated:
            return
        hosts = [s.getsockname()[0] for s in self.server.sockets]
        if not all(ipaddress.ip_address(h.partition("%")[0]).is_loopback for h in hosts):
            raise AuthError("other hosts can reach it and sources.auth_token_file is not set; set it (every "
                            f"client then sends {AUTH_LINE} first), or set sources.allow_unauthenticated = true "
                            "to let anyone who can connect write to any key")

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
