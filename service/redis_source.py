"""``RedisSource``: events from partitioned Redis Streams, replies back to streams, exactly-once effect.

The worker owns the partitions ``p`` with ``p mod workers = worker_index``
(static assignment: worker i of N, as a StatefulSet ordinal gives; see
``service.redis_log`` for the streams and how producers write them).  It
reads them with XREAD from the newest entry it has applied, at most
``redis.read_count`` entries per partition at a time, hands each entry's
line to the worker, and appends the replies to the entry's ``reply_to``
stream or to ``PREFIX:replies:<p>``.

Exactly-once effect: the ID of the newest entry applied in each partition is
a source position (``redis:PREFIX:<p>``), so it is written in the same
checkpoint as the keys' states it produced.  A restarted worker loads that
checkpoint and reads on right after those IDs: no entry is applied twice
and none is skipped.  A checkpoint waits until the replies of the entries
it covers have been appended (``Checkpointer.hold``), so every event in a
checkpoint has had its reply; the replies of entries after the newest
checkpoint are sent again when a crashed worker applies them again.  The
log itself is the acknowledgement: nothing is deleted from it (trim it
with XTRIM or MAXLEN by age, behind every worker's checkpoint).

When Redis goes away mid-run, the worker keeps trying (waits doubling from
0.1 s to ``redis.retry_seconds``), reports not ready on ``/readyz``, and
reads on from where it was once Redis is back: nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

from .protocol import error
from .redis_log import RedisUnreachable, connect, reply_stream, stream_name
from .sources import Source
from .worker import encode

log = logging.getLogger("streamrnn.redis")
FIRST_RETRY = 0.1
LAG_EVERY = 1.0  # seconds between measurements of the partitions' lag


class RedisSource(Source):
    """Reads the partitions of ``group`` (a ``WorkerGroup``: a worker per owned partition).

    With leases (``redis.ownership = "leases"``) the group starts empty, and ``adopt(partition, token)``
    (the server's) builds a partition's worker when a lease is taken: restored from its checkpoints and
    checkpointed at once under the new token (``service.partitions.take_over``).
    """

    finite = False

    def __init__(self, settings, group, limit, should_stop, adopt=None):
        super().__init__(group, limit, should_stop)
        self.settings = s = settings
        self.name = f"redis:{s.prefix}"
        self.adopt = adopt
        self.leases = None  # service.leases.Leases, with ownership by leases
        self.healthy = False  # Redis answered the newest read and write
        self.failed = False  # the reader died of a bug: the server stops
        self.unsent = 0  # replies that could not be sent before a stop: nothing after them is checkpointed
        self.client = None
        self.task: asyncio.Task | None = None
        self._renewed = 0.0  # when the leases were last renewed (monotonic)
        self._measured = 0.0  # when the lag was last measured (monotonic)

    @staticmethod
    def owned_by(settings) -> list[int]:
        """The partitions worker ``worker_index`` of ``workers`` owns: p mod workers = worker_index."""
        return [p for p in range(settings.partitions) if p % settings.workers == settings.worker_index]

    @property
    def owned(self) -> list[int]:
        return sorted(self.worker.workers)

    def _worker(self, partition: int):
        return self.worker.workers[partition]

    def position_name(self, partition: int) -> str:
        return f"redis:{self.settings.prefix}:{partition}"

    def _position(self, partition: int):
        return self._worker(partition).checkpointer.position(self.position_name(partition))

    async def start(self) -> None:
        """Connect (an unreachable Redis stops start-up).  Partitions are taken, and read, in ``begin``."""
        loop = asyncio.get_running_loop()
        self.client = await loop.run_in_executor(None, connect, self.settings.url)
        self.healthy = True

    async def begin(self) -> None:
        """Take partitions (by leases, or the static share) and start reading them: once the server is ready
        to step events.  Before that, a first start that compiles the kernels (some 20 s) would block the
        loop while holding leases it cannot renew, and the other workers would take them back."""
        if self.settings.ownership == "leases":
            from .leases import Leases

            s = self.settings
            worker_id = s.worker_id or f"{socket.gethostname()}-{os.getpid()}"
            self.leases = Leases(self.client, s.prefix, s.partitions, worker_id, s.lease_seconds)
            await self._lease_round()
        resume = {p: self._position(p).entry for p in self.owned}
        log.info("reading partitions %s of %s:0..%d from %s", self.owned, self.settings.prefix,
                 self.settings.partitions - 1, {p: e or "the start" for p, e in resume.items()})
        self.task = asyncio.create_task(self.run(), name=self.name)
        self.task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.healthy, self.failed = False, True  # the server stops (exit code 1)
            log.error("the Redis reader failed: %r", task.exception())

    async def stop(self, timeout: float) -> None:
        if self.task is not None:
            done, _ = await asyncio.wait({self.task}, timeout=timeout)  # its own failure was logged (``_ended``)
            if not done:
                log.error("the Redis reader did not stop within %.1f s", timeout)
                self.task.cancel()
                await asyncio.wait({self.task})
        if self.leases is not None:  # a clean stop: checkpoint, then let the others take over at once
            for partition in self.owned:
                self._let_go(partition, checkpoint=True)
            try:
                await self._call(self.leases.leave)
            except RedisUnreachable as err:
                log.error("cannot release the leases (%s); they expire in %.1f s", err, self.settings.lease_seconds)
        if self.client is not None:
            self.client.close()

    # ----- ownership by leases ---------------------------------------------------------------------------
    async def _lease_round(self) -> None:
        """Renew this worker's leases (dropping the lost ones), give back partitions over its share, take free
        ones under it."""
        leases = self.leases
        target = await self._call(leases.heartbeat)
        await self._renew()
        for partition in sorted(self.owned, reverse=True)[: max(0, len(self.owned) - target)]:
            log.info("giving partition %d back: this worker's share is %d of %d partitions", partition, target,
                     self.settings.partitions)
            self._let_go(partition, checkpoint=True)
            await self._call(leases.release, partition)
        for partition in range(self.settings.partitions):
            if len(self.owned) >= target:
                break
            if partition in self.worker.workers:
                continue
            token = await self._call(leases.acquire, partition)
            if token is None:
                continue
            try:
                self.worker.workers[partition] = self.adopt(partition, token)
            except Exception as err:  # its checkpoint cannot be read or written here: leave it to another
                self.worker.stats.partition_take_failures += 1
                log.error("cannot take partition %d (%s); giving the lease back", partition, err)
                await self._call(leases.release, partition)
            else:
                log.info("took partition %d (lease token %d), resuming after entry %s", partition, token,
                         self._position(partition).entry or "none (the start)")
                if time.monotonic() - self._renewed >= self.settings.lease_seconds / 3:
                    await self._renew()  # restoring partitions one after another must not let the others lapse

    async def _renew(self) -> None:
        """Renew every owned lease; drop (unwritten) the partitions whose lease another worker has taken."""
        self._renewed = time.monotonic()
        for partition in self.owned:
            if not await self._call(self.leases.holds, partition):
                log.error("lost the lease on partition %d (another worker took it); dropping its keys unwritten",
                          partition)
                self._let_go(partition, checkpoint=False)

    async def _measure_lag(self) -> None:
        """Each owned partition's lag: the entries ever added to its stream (XINFO STREAM's entries-added,
        which trimming does not lower) less the entries this partition's position has taken."""
        self._measured = time.monotonic()
        owned = self.owned
        added = await self._call(self._entries_added, [stream_name(self.settings.prefix, p) for p in owned])
        self.worker.stats.partition_lag = {p: max(0, n - self._position(p).entries) for p, n in zip(owned, added)}

    def _entries_added(self, names: list[str]) -> list[int]:
        import redis

        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.xinfo_stream(name)
        out = []
        for name, info in zip(names, pipe.execute(raise_on_error=False)):
            if isinstance(info, redis.ResponseError):  # no such stream yet: nothing added
                out.append(0)
            elif isinstance(info, Exception):
                raise info
            else:
                out.append(int(info.get("entries-added", info.get("length", 0))))
        return out

    def _let_go(self, partition: int, checkpoint: bool) -> None:
        self.worker.stats.partition_lag.pop(partition, None)
        worker = self.worker.workers.pop(partition)
        if checkpoint:
            worker.checkpointer.checkpoint()
        worker.checkpointer.close()
        worker.table.close()

    # ----- reading -----------------------------------------------------------------------------------
    async def run(self) -> None:
        checkpointer = self.worker.checkpointer  # every partition's, run together
        wait = FIRST_RETRY
        renew_every = self.settings.lease_seconds / 3
        while not self.should_stop():
            try:
                if self.leases is not None and time.monotonic() - self._renewed >= renew_every:
                    await self._lease_round()
                if time.monotonic() - self._measured >= LAG_EVERY:
                    await self._measure_lag()
                positions = {stream_name(self.settings.prefix, p): self._position(p) for p in self.owned}
                ids = {name: position.entry or "0-0" for name, position in positions.items()}
                batch = await self._call(self._read, ids) if ids else await asyncio.sleep(
                    self.settings.block_ms / 1000, [])
            except RedisUnreachable as err:
                wait = await self._retry(err, wait)
                continue
            if self.should_stop():  # read but not applied: the positions have not moved past it
                break
            replies: dict[str, list[bytes]] = {}
            checkpointer.hold()
            for name, entries in batch:
                name = name.decode() if isinstance(name, bytes) else name
                self._apply(name, entries, positions[name], replies)
            while replies:  # at least one attempt, even when stopping
                try:
                    await self._call(self._write, replies)
                    replies = {}
                except RedisUnreachable as err:
                    if self.should_stop():
                        break
                    wait = await self._retry(err, wait)
            if replies:  # stopping while Redis is away: the hold stays, so no checkpoint covers these events
                self.unsent = sum(map(len, replies.values()))
                log.error("stopping with the replies of %d entries not sent (Redis out of reach): no checkpoint "
                          "covers them, and a restart applies and answers them again", self.unsent)
                return
            checkpointer.release()
            self.healthy, wait = True, FIRST_RETRY
            await asyncio.sleep(0)  # let scrapes and timers in between batches

    def _apply(self, name: str, entries, position, replies: dict) -> None:
        partition, limit = int(name.rsplit(":", 1)[1]), self.limit
        worker = self._worker(partition)
        handle = worker.handle
        default = reply_stream(self.settings.prefix, partition)
        for entry_id, fields in entries:
            position.entry = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            position.entries += 1
            line = fields.get(b"line")
            if line is None:
                position.lines += 1
                worker.stats.reject("malformed_entry")
                reply = (encode(error("malformed_entry", f"entry {position.entry} of {name} has no line "
                                      "field; nothing changed")) + "\n").encode()
            else:
                size = len(line) + 1
                reply = handle(line if len(line) <= limit else None, size, position)
            target = fields.get(b"reply_to")
            replies.setdefault(target.decode("utf-8", "replace") if target else default, []).append(reply[:-1])

    # ----- Redis calls, on a thread (the client blocks) ------------------------------------------------
    async def _call(self, f, *args):
        import redis

        try:
            return await asyncio.get_running_loop().run_in_executor(None, f, *args)
        except (redis.RedisError, OSError) as err:
            raise RedisUnreachable(str(err)) from None

    def _read(self, ids: dict):
        block = self.settings.block_ms
        if self.leases is not None:  # wake up in time to renew the leases
            block = max(1, min(block, int(self.settings.lease_seconds * 1000 / 6)))
        return self.client.xread(ids, count=self.settings.read_count, block=block) or []

    def _write(self, replies: dict) -> None:
        """Append the replies; a reply Redis refuses (a ``reply_to`` that names a key of another type) is logged
        and dropped, so that one producer's mistake does not stall the partitions."""
        import redis

        pipe = self.client.pipeline(transaction=False)
        targets = []
        for target, lines in replies.items():
            for line in lines:
                pipe.xadd(target, {"reply": line})
                targets.append(target)
        refused = {}
        for target, result in zip(targets, pipe.execute(raise_on_error=False)):
            if isinstance(result, redis.ResponseError):
                refused[target] = str(result)
            elif isinstance(result, Exception):
                raise result
        for target, why in refused.items():
            log.error("cannot append replies to %r (%s); they are dropped", target, why)

    async def _retry(self, err, wait: float) -> float:
        if self.healthy:
            log.error("Redis is out of reach (%s); retrying, not ready meanwhile", err)
        self.healthy = False
        await asyncio.sleep(wait)
        return min(wait * 2, self.settings.retry_seconds)
