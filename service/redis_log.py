"""The partitioned log on Redis Streams: stream names, a key's partition, and the producer's side.

Events live in P streams, ``PREFIX:0`` .. ``PREFIX:P-1``.  An entry has one
field, ``line``: the JSON event line exactly as the daemon reads it on stdin
(without the newline), and optionally ``reply_to``: the stream its reply goes
to, instead of ``PREFIX:replies:P`` for the entry's partition.  A key's
partition is ``crc32(key) mod P`` (an event without ``key`` belongs to the
default key), so every event of a key lands in one stream, in order, and
one worker applies them in that order.  A producer only appends:

    XADD PREFIX:<crc32(key) mod P> * line '{"key": "k1", "x": {"a": 1.0}, "y": 2.0}'

``streamrnn produce --redis URL --partitions P`` does this for JSON lines on
stdin.  A line that is not a JSON object still goes (to the default key's
partition): the worker that reads it answers with the error.
"""

from __future__ import annotations

import json
import re
import zlib


class RedisUnreachable(OSError):
    """Redis cannot be reached (the message says where and why)."""


def partition_of(key: str, partitions: int) -> int:
    """The partition of ``key``: crc32 of its UTF-8 bytes, mod P (the same in every process and language)."""
    return zlib.crc32(key.encode()) % partitions


class PartitionKeys:
    """Whether a key belongs to ``partition`` of P: the test a partition's worker puts every event to."""

    def __init__(self, partition: int, partitions: int, prefix: str):
        self.partition, self.partitions, self.prefix = partition, partitions, prefix

    def __call__(self, key: str) -> bool:
        return zlib.crc32(key.encode()) % self.partitions == self.partition

    def refusal(self, key: str) -> str:
        return (f"key {key!r} belongs to partition {partition_of(key, self.partitions)} of {self.partitions} "
                f"({stream_name(self.prefix, partition_of(key, self.partitions))}), not {self.partition}: "
                "append each event to crc32(key) mod P with the workers' P; nothing changed")


def stream_name(prefix: str, partition: int) -> str:
    return f"{prefix}:{partition}"


def reply_stream(prefix: str, partition: int) -> str:
    return f"{prefix}:replies:{partition}"


def key_of(line: bytes, default_key: str) -> str:
    """The key a JSON event line names, the default key for one without (or for a line that is not an
    object with a string key: its error reply comes from the worker)."""
    try:
        key = json.loads(line).get("key")
    except (ValueError, AttributeError):
        return default_key
    return key if isinstance(key, str) and key else default_key


def redacted(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``: fit for logs and error messages.  Both places a
    Redis URL can hold one are masked: ``redis://user:PASSWORD@host`` and ``?password=PASSWORD``."""
    url = re.sub(r"^([A-Za-z][\w+.-]*://[^/?#@:]*:)[^/?#]*@", r"\1***@", url)
    return re.sub(r"(?i)([?&]password=)[^&#]*", r"\1***", url)


def connect(url: str, timeout: float = 5.0):
    """A client for ``url``, checked with PING; RedisUnreachable if it does not answer."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout + 60.0)
    try:
        client.ping()
    except (redis.RedisError, OSError) as err:
        client.close()
        raise RedisUnreachable(f"cannot reach Redis at {redacted(url)}: {err}") from None
    return client


def produce(client, lines, prefix: str, partitions: int, default_key: str = "default",
            reply_to: str | None = None, batch: int = 1000) -> int:
    """Append each JSON line (bytes, newline or not) to its key's partition stream; the lines appended.

    Blank lines are skipped.  Lines go in pipelines of ``batch``: one round trip per batch.
    """
    count, pipe = 0, client.pipeline(transaction=False)
    for line in lines:
        line = line.rstrip(b"\r\n")
        if not line.strip():
            continue
        fields = {"line": line}
        if reply_to is not None:
            fields["reply_to"] = reply_to
        pipe.xadd(stream_name(prefix, partition_of(key_of(line, default_key), partitions)), fields)
        count += 1
        if count % batch == 0:
            pipe.execute()
    pipe.execute()
    return count
