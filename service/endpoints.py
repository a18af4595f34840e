"""/metrics, /healthz and /readyz over HTTP, served on the daemon's own event loop.

Serving from the loop (not a thread) means a scrape reads the networks between
two events, never in the middle of a step.  The server is deliberately tiny:
GET only, one request per connection.

* ``/metrics`` -- the registry in Prometheus' text format;
* ``/healthz`` -- 200 while the loop answers at all;
* ``/readyz`` -- 200 once the checkpoint is restored and the sources listen,
  503 before that and while shutting down.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger("streamrnn.http")
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class Endpoints:
    def __init__(self, registry, ready: Callable[[], bool]):
        self.registry = registry
        self.ready = ready
        self.server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        self.server = await asyncio.start_server(self._serve, host, port)
        return self.server.sockets[0].getsockname()[1]

    def route(self, method: str, path: str) -> tuple[int, str, bytes]:
        path = path.split("?", 1)[0]
        if method != "GET":
            return 405, "text/plain", b"only GET\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if path == "/readyz":
            return (200, "text/plain", b"ready\n") if self.ready() else (503, "text/plain", b"not ready\n")
        return 404, "text/plain", b"not found: try /metrics, /healthz or /readyz\n"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            status, kind, body = self.route(parts[0], parts[1]) if len(parts) == 3 else (400, "text/plain", b"")
            writer.write(f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: {kind}\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except Exception:
            log.exception("error answering an HTTP request")
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
