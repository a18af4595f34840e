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

from .protocol import error
from .redis_log import RedisUnreachable, connect, reply_stream, stream_name
from .sources import Source
from .worker import encode

log = logging.getLogger("streamrnn.redis")
FIRST_RETRY = 0.1


class RedisSource(Source):
    finite = False

    def __init__(self, settings, worker, limit, should_stop):
        super().__init__(worker, limit, should_stop)
        self.settings = s = settings
        self.name = f"redis:{s.prefix}"
        self.owned = [p for p in range(s.partitions) if p % s.workers == s.worker_index]
        self.streams = {stream_name(s.prefix, p): p for p in self.owned}
        self.healthy = False  # Redis answered the newest read and write
        self.client = None
        self.task: asyncio.Task | None = None

    def position_name(self, partition: int) -> str:
        return f"redis:{self.settings.prefix}:{partition}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.client = await loop.run_in_executor(None, connect, self.settings.url)
        self.healthy = True
        checkpointer = self.worker.checkpointer
        resume = {p: checkpointer.position(self.position_name(p)).entry for p in self.owned}
        log.info("reading partitions %s of %s:0..%d from %s", self.owned, self.settings.prefix,
                 self.settings.partitions - 1, {p: e or "the start" for p, e in resume.items()})
        self.task = asyncio.create_task(self.run(), name=self.name)
        self.task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.healthy = False
            log.error("the Redis reader failed: %r", task.exception())

    async def stop(self, timeout: float) -> None:
        if self.task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self.task), timeout)
            except asyncio.TimeoutError:
                log.error("the Redis reader did not stop within %.1f s", timeout)
                self.task.cancel()
        if self.client is not None:
            self.client.close()

    async def run(self) -> None:
        checkpointer = self.worker.checkpointer
        positions = {name: checkpointer.position(self.position_name(p)) for name, p in self.streams.items()}
        wait = FIRST_RETRY
        while not self.should_stop():
            ids = {name: position.entry or "0-0" for name, position in positions.items()}
            try:
                batch = await self._call(self._read, ids)
            except RedisUnreachable as err:
                wait = await self._retry(err, wait)
                continue
            replies: dict[str, list[bytes]] = {}
            checkpointer.hold()
            try:
                for name, entries in batch:
                    name = name.decode() if isinstance(name, bytes) else name
                    self._apply(name, entries, positions[name], replies)
                while replies and not self.should_stop():
                    try:
                        await self._call(self._write, replies)
                        replies = {}
                    except RedisUnreachable as err:
                        wait = await self._retry(err, wait)
                if replies:
                    log.error("stopping with the replies of %d entries not sent (Redis out of reach)",
                              sum(map(len, replies.values())))
            finally:
                checkpointer.release()
            self.healthy, wait = True, FIRST_RETRY
            await asyncio.sleep(0)  # let scrapes and timers in between batches

    def _apply(self, name: str, entries, position, replies: dict) -> None:
        partition, handle, limit = self.streams[name], self.worker.handle, self.limit
        default = reply_stream(self.settings.prefix, partition)
        for entry_id, fields in entries:
            position.entry = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            line = fields.get(b"line")
            if line is None:
                position.lines += 1
                self.worker.stats.reject("malformed_entry")
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
        return self.client.xread(ids, count=self.settings.read_count, block=self.settings.block_ms) or []

    def _write(self, replies: dict) -> None:
        pipe = self.client.pipeline(transaction=False)
        for target, lines in replies.items():
            for line in lines:
                pipe.xadd(target, {"reply": line})
        pipe.execute()

    async def _retry(self, err, wait: float) -> float:
        if self.healthy:
            log.error("Redis is out of reach (%s); retrying, not ready meanwhile", err)
        self.healthy = False
        await asyncio.sleep(wait)
        return min(wait * 2, self.settings.retry_seconds)
