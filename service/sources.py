"""Where JSON lines come from, and where each reply goes: back where its line came from.

A source is a small interface, ``start()``, ``run()`` (until the input ends or the
daemon stops) and ``stop(timeout)``.  Each hands lines to ``Worker.handle`` one at
a time.  The next step adds sources on partitioned logs (Redis Streams, Kafka),
whose offsets are positions like the ones kept here.

* ``StdinSource`` -- standard input, replies on standard output; resumable: its
  position (lines, bytes) is checkpointed, and feeding stdin again from that byte
  continues exactly.
* ``FileSource`` -- a JSON-lines file or a series bundled with river
  (``river:waterflow``); replies on standard output.  On restart it seeks to its
  checkpointed position by itself.
* ``SocketSource`` (in ``service.sockets``) -- TCP and Unix listeners; many clients
  at once, each answered on its own connection.

Lines are split here, with the length limit: an over-long line is dropped
(bytes past the limit are never kept) and answered with ``too_long``; a
connection that closes in the middle of a line is logged and counted as
``truncated``.
"""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import logging
import os
import stat
from pathlib import Path
from typing import Callable

from .stats import Stats
from .checkpointer import Position
from .worker import Worker

log = logging.getLogger("streamrnn.sources")
CHUNK = 1 << 18
#: the buffer asked for a pipe on stdin or stdout (Linux's default is 64 KiB, and its limit for a user 1 MiB)
PIPE_BYTES = 1 << 20


def widen_pipe(fd: int, size: int = PIPE_BYTES) -> None:
    """A pipe's buffer grown toward ``size`` bytes, where the system allows it: fewer, longer reads and
    writes, and a reader of replies that falls behind blocks the daemon less often.  Anything else (a file,
    a terminal, a socket, another system) is left as it is."""
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode) and fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) < size:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    except (OSError, AttributeError, ValueError):  # over the user's limit, no such call here: keep the default
        pass


class LineSplitter:
    """Bytes in, (line, size) out; line None when over ``limit`` bytes.  ``size`` counts the newline.

    >>> s = LineSplitter(limit=8)
    >>> s.feed(b'{"a":1}\\n{"b"'), s.feed(b':2}\\n0123456789\\n'), s.close()
    ([(b'{"a":1}', 8)], [(b'{"b":2}', 8), (None, 11)], None)
    """

    def __init__(self, limit: int):
        self.limit = limit
        self._parts: list[bytes] = []
        self._size = 0  # bytes of the unfinished line
        self._over = False  # the unfinished line is over the limit (its bytes are not kept)

    def feed(self, chunk: bytes) -> list[tuple[bytes | None, int]]:
        *complete, rest = chunk.split(b"\n")
        out = []
        for part in complete:
            if self._size or self._over:
                out.append(self._finish(part, 1))
            elif len(part) > self.limit:
                out.append((None, len(part) + 1))
            else:
                out.append((part, len(part) + 1))
        if rest:
            self._size += len(rest)
            if self._size > self.limit:
                self._over, self._parts = True, []
            else:
                self._parts.append(rest)
        return out

    def _finish(self, part: bytes, newline: int) -> tuple[bytes | None, int]:
        size = self._size + len(part)
        line = None if self._over or size > self.limit else b"".join(self._parts) + part
        self._parts, self._size, self._over = [], 0, False
        return line, size + newline

    def close(self) -> tuple[bytes | None, int] | None:
        """The unfinished line at the end of the input, if any (without a newline)."""
        if not (self._size or self._over):
            return None
        return self._finish(b"", 0)


class Stdout:
    """Replies for stdin and file sources: blocking writes to fd 1 (a slow reader slows the daemon)."""

    def __init__(self, stats: Stats, fd: int = 1):
        self.stats, self.fd, self.broken = stats, fd, False
        widen_pipe(fd)

    def write(self, data: bytes) -> None:
        if self.broken or not data:
            if self.broken:
                self.stats.stdout_failures += data.count(b"\n")
            return
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as err:
            self.broken = True
            self.stats.stdout_failures += bytes(view).count(b"\n")
            log.error("cannot write replies to standard output (%s); going on without them", err)


class Source:
    """A stream of lines; ``finite`` sources end, and the daemon may stop when all have."""

    name = ""
    finite = True

    def __init__(self, worker: Worker, limit: int, should_stop: Callable[[], bool]):
        self.worker, self.limit, self.should_stop = worker, limit, should_stop

    async def start(self) -> None:
        pass

    async def run(self) -> None:
        pass

    async def stop(self, timeout: float) -> None:
        pass

    def take(self, splitter: LineSplitter, chunk: bytes, position: Position | None) -> bytes:
        """Handle the complete lines in ``chunk``; stop after the line in hand if the daemon stops."""
        return self.worker.handle_lines(splitter.feed(chunk), position, self.should_stop)


class StdinSource(Source):
    name = "stdin"

    def __init__(self, worker, limit, should_stop, out: Stdout, fd: int = 0):
        super().__init__(worker, limit, should_stop)
        self.out, self.fd = out, fd

    async def run(self) -> None:
        position = self.worker.checkpointer.position(self.name)
        splitter = LineSplitter(self.limit)
        read = self._reader()
        while not self.should_stop():
            chunk = await read()
            if not chunk:
                tail = splitter.close()
                if tail is not None:  # a last line without its newline
                    self.out.write(self.worker.handle(*tail, position))
                log.info("standard input ended")
                return
            self.out.write(self.take(splitter, chunk, position))

    def _reader(self):
        """A coroutine function returning the next chunk (b"" at the end).

        Pipes, sockets and terminals are polled by the event loop and read when ready, so
        the read never blocks and stdin stays in blocking mode (making it non-blocking would
        change a terminal shared with stdout).  A regular file cannot be polled and never
        blocks (nor does /dev/null): it is read directly.
        """
        loop, fd = asyncio.get_running_loop(), self.fd
        widen_pipe(fd)
        try:
            loop.add_reader(fd, lambda: None)
            loop.remove_reader(fd)
            pollable = True
        except (OSError, ValueError):  # a regular file, /dev/null
            pollable = False
        if not pollable:
            async def read_file() -> bytes:
                await asyncio.sleep(0)  # let sockets, timers and scrapes in between chunks
                return os.read(fd, CHUNK)
            return read_file

        async def read_polled() -> bytes:
            ready = loop.create_future()
            loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
            try:
                await ready
            finally:
                loop.remove_reader(fd)
            try:
                return os.read(fd, CHUNK)
            except OSError:
                return b""
        return read_polled


class FileSource(Source):
    """A JSON-lines file, or ``river:NAME`` for a bundled series; seeks to its checkpointed position."""

    def __init__(self, spec: str, worker, limit, should_stop, out: Stdout, rate: float = 0.0):
        super().__init__(worker, limit, should_stop)
        self.spec, self.out, self.rate = spec, out, rate
        self.name = spec if spec.startswith("river:") else f"file:{Path(spec).resolve()}"

    def open(self):
        if self.spec.startswith("river:"):
            return io.BytesIO(series_lines(self.spec[len("river:"):]))
        return open(self.spec, "rb")

    async def run(self) -> None:
        position = self.worker.checkpointer.position(self.name)
        splitter = LineSplitter(self.limit)
        loop, due = asyncio.get_running_loop(), None
        with self.open() as f:
            if position.bytes:
                log.info("resuming %s at line %d (byte %d)", self.name, position.lines, position.bytes)
                f.seek(position.bytes)
            while not self.should_stop():
                chunk = f.read(CHUNK if not self.rate else 4096)
                if not chunk:
                    tail = splitter.close()
                    if tail is not None:
                        self.out.write(self.worker.handle(*tail, position))
                    log.info("input %s ended after %d lines", self.name, position.lines)
                    return
                if not self.rate:
                    self.out.write(self.take(splitter, chunk, position))
                    await asyncio.sleep(0)
                    continue
                for line, size in splitter.feed(chunk):  # paced: one line at a time, on a fixed schedule
                    self.out.write(self.worker.handle(line, size, position))
                    due = (due if due is not None else loop.time()) + 1.0 / self.rate
                    await asyncio.sleep(max(0.0, due - loop.time()))
                    if self.should_stop():
                        return


#: series bundled with river, by the name that follows "river:" in an input
RIVER_SERIES = {"waterflow": "WaterFlow", "trump": "TrumpApproval", "airline": "AirlinePassengers"}


def series_lines(name: str) -> bytes:
    """A series bundled with river (river:waterflow, river:trump, river:airline) as forecasting events."""
    from river import datasets

    dataset = RIVER_SERIES.get(name.lower())
    if dataset is None:
        raise ValueError(f"unknown series river:{name}; try {', '.join('river:' + n for n in RIVER_SERIES)}")
    key = f"river-{name.lower()}"
    return b"".join(json.dumps({"key": key, "value": float(y), "id": i}).encode() + b"\n"
                    for i, (_, y) in enumerate(getattr(datasets, dataset)()))
