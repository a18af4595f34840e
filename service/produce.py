"""``streamrnn produce --redis URL --partitions P``: JSON event lines on stdin, appended to their key's partition.

Exit codes: 0 when stdin ended and every line was appended, 1 when Redis
cannot be reached, 2 for invalid arguments.  See ``service.redis_log``.
"""

from __future__ import annotations

import argparse
import sys

from .redis_log import RedisUnreachable, connect, produce


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamrnn produce", description=__doc__.splitlines()[0])
    p.add_argument("--redis", metavar="URL", required=True, help="redis://HOST:PORT/DB")
    p.add_argument("--partitions", metavar="P", type=int, required=True, help="the workers' redis.partitions")
    p.add_argument("--prefix", default="streamrnn", help="the workers' redis.prefix (default streamrnn)")
    p.add_argument("--default-key", default="default", help="the workers' streams.default_key, for events "
                   "without a key (default: default)")
    p.add_argument("--reply-to", metavar="STREAM", help="the stream every reply goes to (default: "
                   "PREFIX:replies:<partition>)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.partitions < 1:
        print("streamrnn produce: --partitions must be at least 1", file=sys.stderr)
        return 2
    try:
        client = connect(args.redis)
    except RedisUnreachable as err:
        print(f"streamrnn produce: {err}", file=sys.stderr)
        return 1
    try:
        count = produce(client, sys.stdin.buffer, args.prefix, args.partitions, args.default_key, args.reply_to)
    finally:
        client.close()
    print(f"streamrnn produce: {count} lines appended to {args.prefix}:0..{args.partitions - 1}", file=sys.stderr)
    return 0
