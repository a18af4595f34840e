"""``Server(config)``: start-up, the main loop, and a graceful shutdown.

Start-up builds the parts from the validated ``Config`` (names resolved once in
``service.names``), restores the newest good checkpoint, opens the sources and
the HTTP endpoints, and only then reports ready.  The main loop wakes every
0.1 s to write time-based checkpoints (on the worker's writer thread, see
``checkpoint.background``) and progress lines.  SIGTERM and SIGINT
only set a flag; the loop notices it, and the shutdown stops reading, lets the
event in hand finish and its replies flush, writes a checkpoint and exits 0,
all within ``shutdown.timeout_seconds``.  When every input is finite (stdin,
files) and all have ended, the daemon shuts down the same way.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from streamrnn.kernels.warm import warm_pool, warm_up
from streamrnn.state import StateError

from .config import Config
from .endpoints import Endpoints
from .metrics import registry_for
from .partitions import WorkerGroup, lease_dir, take_over
from .names import ModelTemplate
from .sockets import AuthError, SocketSource, read_token
from .redis_log import PartitionKeys
from .redis_source import RedisSource
from .sources import FileSource, StdinSource, Stdout
from .checkpointer import Checkpointer
from .stats import Stats
from .store import DirectoryStore, MemoryStore, NewerCheckpoint
from .table import StreamTable
from .worker import Worker

log = logging.getLogger("streamrnn.server")
TICK = 0.1


class StartupError(RuntimeError):
    """The daemon cannot start (the message says why); exit code 1."""


def build_worker(config: Config, store, stats: Stats | None = None, template: ModelTemplate | None = None,
                 guard=None, partition: int | None = None) -> Worker:
    """The worker, the keyed streams behind it and their checkpointer, from the settings (shared with
    ``replay``); workers of one process's partitions share ``stats`` and ``template``, ``guard`` is
    asked before each of their checkpoints (``Checkpointer``), and a partition's worker takes only its keys."""
    template = template or ModelTemplate(config.model, config.forecast)
    s, c = config.streams, config.checkpoint
    table = StreamTable(template, store, s.max_keys, s.max_stored_keys, s.when_full, s.max_key_bytes)
    stats = stats or Stats()
    checkpointer = Checkpointer(table, stats, c.every_events if c.enabled else 0,
                                c.every_seconds if c.enabled else 0.0, c.background, c.fork, guard=guard,
                                max_share=c.max_share)
    owns = None if partition is None else PartitionKeys(partition, config.redis.partitions, config.redis.prefix)
    return Worker(table, stats, checkpointer, s.default_key, owns, s.batch)


class Server:
    def __init__(self, config: Config):
        self.config = config
        self.should_exit = False  # set by a signal handler, nothing else
        self.ready = False
        self.sources = []
        self.tasks: list[asyncio.Task] = []
        self.endpoints: Endpoints | None = None
        self.metrics_url = ""
        self.redis: RedisSource | None = None
        self.failed = False  # a source failed: exit code 1

    def run(self) -> int:
        return asyncio.run(self.serve())

    def handle_exit(self, sig: int) -> None:
        self.should_exit = True

    async def serve(self) -> int:
        try:
            await self.startup()
        except StartupError as err:
            log.error("cannot start: %s", err)
            await self._close()
            return 1
        await self.main_loop()
        return await self.shutdown()

    # ----- start-up -------------------------------------------------------------------------
    def _store(self, partition: int | None = None):
        """The checkpoint store: ``checkpoint.dir``, or its ``partition-<p>`` for one partition of a log."""
        c = self.config.checkpoint
        if not c.enabled:
            return MemoryStore()
        where = c.dir if partition is None else c.dir / f"partition-{partition}"
        try:
            return DirectoryStore(where, c.keep, on_corrupt=self._corrupt)
        except OSError as err:
            raise StartupError(f"cannot use checkpoint directory {where}: {err}") from None

    def _build(self):
        """One worker, or on Redis Streams a worker per owned partition (``service.partitions``)."""
        config = self.config
        self._template = template = ModelTemplate(config.model, config.forecast)
        if config.redis.url is None:
            return build_worker(config, self._store(), template=template)
        stats = Stats()
        if config.redis.ownership == "leases":  # partitions come with leases (``_adopt``)
            return WorkerGroup({}, stats)
        workers = {p: build_worker(config, self._store(p), stats, template, partition=p)
                   for p in RedisSource.owned_by(config.redis)}
        return WorkerGroup(workers, stats)

    def _adopt(self, partition: int, token: int) -> Worker:
        """The worker of a partition whose lease was just taken: restored from the newest checkpoint an earlier
        owner wrote, and checkpointed at once under ``token`` (``partitions.take_over``)."""
        c = self.config.checkpoint
        source = self.redis

        def holds() -> bool:  # asked before each checkpoint: not lapsed by this worker's clock (no round trip)
            return source.leases.valid(partition)

        partition_dir = c.dir / f"partition-{partition}"
        store = DirectoryStore(lease_dir(partition_dir, token), c.keep, on_corrupt=self._corrupt) if c.enabled \
            else MemoryStore()
        worker = build_worker(self.config, store, self.worker.stats, self._template, guard=holds, partition=partition)
        if c.enabled:
            came_from = take_over(worker, partition_dir, token, DirectoryStore)
            if came_from is not None:
                log.info("partition %d restored from %s: %d events", partition,
                         "its static checkpoint" if came_from == 0 else f"lease {came_from}", worker.events)
        return worker

    def _corrupt(self, path, why) -> None:
        self.worker.stats.checkpoint_corrupt += 1

    async def startup(self) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):  # first: a signal during start-up stops cleanly too
            loop.add_signal_handler(sig, self.handle_exit, sig)
        # a SIGCHLD ignored by whoever started the daemon (it survives exec) would let the kernel reap
        # the forked checkpoint writers before their outcome is read (``service.forked``)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        token = self._token()  # before restoring a checkpoint, which may take a while
        self.worker = worker = self._build()
        if config.redis.ownership != "leases" or config.redis.url is None:  # with leases: per partition taken
            self._restore()
        limit, stop = config.sources.max_line_bytes, lambda: self.should_exit
        out = Stdout(worker.stats)
        if config.sources.stdin:
            self.sources.append(StdinSource(worker, limit, stop, out))
        for spec in config.sources.input:
            self.sources.append(FileSource(spec, worker, limit, stop, out, config.sources.input_rate))
        for kind, addresses in (("tcp", config.sources.tcp), ("unix", config.sources.unix)):
            for address in addresses:
                self.sources.append(SocketSource(kind, address, worker, limit, stop, worker.stats,
                                                 config.sources.max_connections, int(config.sources.unix_mode, 8),
                                                 token, config.sources.allow_unauthenticated,
                                                 config.sources.auth_timeout_seconds))
        if config.redis.url is not None:
            self.redis = RedisSource(config.redis, worker, limit, stop, self._adopt)
            self.sources.append(self.redis)
        for source in self.sources:
            try:
                await source.start()
            except (OSError, AuthError) as err:
                what = "read" if isinstance(source, RedisSource) else "listen on"
                raise StartupError(f"cannot {what} {source.name}: {err}") from None
        if config.metrics.enabled:
            registry = registry_for(worker.stats, worker.table, worker.checkpointer)
            self.endpoints = Endpoints(registry, self.is_ready)
            try:
                port = await self.endpoints.start(config.metrics.host, config.metrics.port)
            except OSError as err:
                raise StartupError(f"cannot serve metrics on {config.metrics.host}:{config.metrics.port}: {err}")
            self.metrics_url = f"http://{config.metrics.host}:{port}/metrics"
            log.info("metrics at %s (also /healthz and /readyz)", self.metrics_url)
        # the compiled kernels, loaded now rather than on the first event (compiled, where no cache has
        # them yet): on a thread, so that /healthz answers and a signal is heard meanwhile; not ready before
        seconds = await loop.run_in_executor(None, warm_up)
        width = max(1, len(config.model.features))  # the pool supervised keys are rows of, where they are
        seconds += await loop.run_in_executor(None, lambda: warm_pool(self._template.pool(width)))
        if seconds:
            log.info("compiled kernels loaded in %.2f s", seconds)
        self.tasks = [asyncio.create_task(s.run(), name=s.name) for s in self.sources if s.finite]
        if self.should_exit:  # a signal during the warm-up: no partitions taken, never ready
            return
        if self.redis is not None:
            try:
                await self.redis.begin()
            except OSError as err:  # RedisUnreachable: Redis went away since ``start``
                raise StartupError(f"cannot read {self.redis.name}: {err}") from None
        self.ready = True
        log.info("ready: %s", ", ".join(s.name for s in self.sources) or "no sources")

    def is_ready(self) -> bool:
        """Started, and every source that depends on a server (Redis) can reach it."""
        return self.ready and all(getattr(s, "healthy", True) for s in self.sources)

    def _token(self) -> bytes | None:
        """The socket clients' shared secret, read once at start-up (None: they do not authenticate, or
        there is no socket source: a Redis worker in the image, whose token file is not mounted)."""
        sources = self.config.sources
        path = sources.auth_token_file if sources.tcp or sources.unix else None
        try:
            return None if path is None else read_token(path)
        except AuthError as err:
            raise StartupError(str(err)) from None

    def _restore(self) -> None:
        worker, c = self.worker, self.config.checkpoint
        checkpointer = worker.checkpointer
        try:
            restored = checkpointer.restore()
        except NewerCheckpoint as err:
            raise StartupError(f"cannot restore the checkpoint in {c.dir}: {err}") from None
        except (StateError, KeyError, ValueError) as err:
            raise StartupError(f"the checkpoint in {c.dir} does not fit this configuration ({err}); "
                               f"restore the settings it was written with, or move it away") from None
        if restored:
            log.info("restored checkpoint %d from %s: %d events, %d keys, positions %s", checkpointer.generation,
                     c.dir, worker.events, len(worker.table),
                     {k: p.as_dict() for k, p in checkpointer.positions.items()})
        elif c.enabled:
            log.info("no checkpoint in %s: starting afresh", c.dir)

    # ----- running ----------------------------------------------------------------------------
    async def main_loop(self) -> None:
        progress = self.config.log.progress_seconds
        last_progress = time.monotonic()
        events_then = self.worker.events
        endless = any(not s.finite for s in self.sources)
        self.worker.checkpointer.start_timer()
        while not self.should_exit:
            await asyncio.sleep(TICK)
            for task in [t for t in self.tasks if t.done()]:
                self.tasks.remove(task)
                if not task.cancelled() and task.exception() is not None:
                    log.error("source %s failed: %r", task.get_name(), task.exception())
            if not self.tasks and not endless:
                log.info("every input has ended")
                break
            if any(getattr(s, "failed", False) for s in self.sources):
                log.error("stopping: a source has failed")
                self.failed = True
                break
            now = time.monotonic()
            self.worker.checkpointer.tick()  # a background checkpoint's outcome; one every_seconds
            if progress and now - last_progress >= progress:
                self._progress(self.worker.events - events_then, now - last_progress)
                last_progress, events_then = now, self.worker.events

    def _progress(self, events: int, seconds: float) -> None:
        s, table = self.worker.stats, self.worker.table
        mean = f"{s.loss_sum / s.loss_count:.4g}" if s.loss_count else "none yet"
        log.info("%d events (%.0f/s); keys: %d live, %d stored; %d rejected; mean loss %s%s",
                 self.worker.events, events / seconds, len(table.live), len(table.stored),
                 s.outcomes["rejected"], mean, f"; metrics at {self.metrics_url}" if self.metrics_url else "")

    # ----- shutdown ---------------------------------------------------------------------------
    async def shutdown(self) -> int:
        started = time.monotonic()
        budget = self.config.shutdown.timeout_seconds
        self.should_exit, self.ready = True, False
        log.info("shutting down")
        for source in self.sources:  # stop reading; replies in hand are flushed
            await source.stop(max(0.0, budget - (time.monotonic() - started)))
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        ok = True
        checkpointer = self.worker.checkpointer
        if self.config.checkpoint.enabled:
            ok = checkpointer.checkpoint()  # after the one being written, if any
        checkpointer.close()
        await self._close()
        elapsed = time.monotonic() - started
        s = self.worker.stats
        log.info("stopped in %.2f s after %d events (%d rejected lines); checkpoint %d", elapsed,
                 self.worker.events, s.outcomes["rejected"], checkpointer.generation)
        if elapsed > budget:
            log.error("shutdown took %.1f s, over its bound of %.1f s", elapsed, budget)
        return 0 if ok and not self.failed else 1

    async def _close(self) -> None:
        if self.endpoints is not None:
            await self.endpoints.stop()
        for source in self.sources:
            if isinstance(source, SocketSource) and source.server is not None:
                source.server.close()
