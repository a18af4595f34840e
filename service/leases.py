"""Who owns which partition, by leases in Redis with fencing tokens (``redis.ownership = "leases"``).

Keys, for partition p:

    PREFIX:lease:<p>   "<worker id> <token>", expiring after redis.lease_seconds unless renewed
    PREFIX:fence:<p>   the newest token: every acquisition takes the next one (INCR), so tokens only grow
    PREFIX:members     the live workers: a sorted set of worker id -> when its membership expires (ms, by
                       Redis's own clock: workers on hosts whose clocks disagree still agree on who is live)

Each step is one Lua script, atomic in Redis: a lease is taken only when no
one holds it, renewed or released only by the holder of that very token.  A
worker that was paused past its lease (a long GC, SIGSTOP, a partitioned
network) finds its renewal refused, and must drop the partition without
writing: ``Leases.holds`` is asked before every checkpoint of the partition.
Its token also orders the checkpoints on disk (``service.partitions``): the
next owner writes under a higher token, and a reader takes the highest, so a
write that slipped between the check and the disk is never read.

Before a checkpoint a worker asks ``valid``: whether its last renewal is recent
enough, by its own clock, that the lease has not lapsed (with a margin of a
fifth of the lease).  No round trip, so a checkpoint never waits on Redis.

Balance: with W live workers, the first P mod W of them by name aim at
floor(P / W) + 1 partitions and the others at floor(P / W).  One over its aim
checkpoints and releases its highest partitions; one under it takes free ones.
"""

from __future__ import annotations

import time

_ACQUIRE = """
if redis.call('exists', KEYS[1]) == 1 then return false end
local token = redis.call('incr', KEYS[2])
redis.call('set', KEYS[1], ARGV[1] .. ' ' .. token, 'PX', ARGV[2])
return token
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
_HEARTBEAT = """
local now = tonumber(ARGV[3])
if now < 0 then
  local t = redis.call('time')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
redis.call('zadd', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('zremrangebyscore', KEYS[1], '-inf', now)
return redis.call('zrange', KEYS[1], 0, -1)
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def lease_key(prefix: str, partition: int) -> str:
    return f"{prefix}:lease:{partition}"


def owner_of(client, prefix: str, partition: int) -> tuple[str, int] | None:
    """(worker id, token) of the lease on ``partition``, None when no one holds it."""
    value = client.get(lease_key(prefix, partition))
    if value is None:
        return None
    worker, _, token = value.decode().rpartition(" ")
    return worker, int(token)


class Leases:
    """This worker's leases: ``tokens`` maps each partition it holds to its fencing token."""

    def __init__(self, client, prefix: str, partitions: int, worker_id: str, seconds: float, clock=None):
        self.client, self.prefix, self.partitions = client, prefix, partitions
        self.worker_id, self.ms, self.clock = worker_id, int(seconds * 1000), clock
        self.members = f"{prefix}:members"
        self.tokens: dict[int, int] = {}
        self.renewed: dict[int, float] = {}  # partition -> when its lease was last taken or renewed (clock)
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._heartbeat = client.register_script(_HEARTBEAT)

    def _value(self, partition: int) -> str:
        return f"{self.worker_id} {self.tokens[partition]}"

    def heartbeat(self) -> int:
        """Say this worker is alive; the number of partitions it should own now (``target``).  Membership is
        timed by Redis's clock (``TIME``), or by ``clock`` (seconds) where one was given (tests)."""
        now = -1 if self.clock is None else int(self.clock() * 1000)
        members = self._heartbeat(keys=[self.members], args=[self.worker_id, self.ms, now])
        names = sorted(name.decode() for name in members)
        return self.target(len(names), names.index(self.worker_id) if self.worker_id in names else len(names))

    def target(self, live: int, rank: int) -> int:
        """The share of the worker ranked ``rank`` (by name) of ``live``: every partition owned, none twice."""
        base, extra = divmod(self.partitions, max(live, 1))
        return base + (1 if rank < extra else 0)

    def acquire(self, partition: int) -> int | None:
        """The token of a new lease on ``partition``, None when another worker holds it."""
        token = self._acquire(keys=[lease_key(self.prefix, partition), f"{self.prefix}:fence:{partition}"],
                              args=[self.worker_id, self.ms])
        if token is None:
            return None
        self.tokens[partition] = int(token)
        self.renewed[partition] = time.monotonic()
        return int(token)

    def holds(self, partition: int) -> bool:
        """Whether this worker still holds ``partition`` under its token (renewing the lease if so)."""
        if partition not in self.tokens:
            return False
        now = time.monotonic()
        held = bool(self._renew(keys=[lease_key(self.prefix, partition)], args=[self._value(partition), self.ms]))
        if held:
            self.renewed[partition] = now
        else:
            del self.tokens[partition]
            self.renewed.pop(partition, None)
        return held

    def valid(self, partition: int) -> bool:
        """Whether the lease on ``partition`` is still this worker's by its own clock: renewed less than four
        fifths of a lease ago (no round trip; a worker paused past its lease finds it is not)."""
        renewed = self.renewed.get(partition)
        return renewed is not None and time.monotonic() - renewed < 0.8 * self.ms / 1000

    def release(self, partition: int) -> None:
        if partition in self.tokens:
            self._release(keys=[lease_key(self.prefix, partition)], args=[self._value(partition)])
            del self.tokens[partition]
            self.renewed.pop(partition, None)

    def leave(self) -> None:
        """Release every lease and the membership (a clean stop: the others take over at once)."""
        for partition in list(self.tokens):
            self.release(partition)
        self.client.zrem(self.members, self.worker_id)
