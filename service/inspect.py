"""``streamrnn inspect --redis URL``: each partition's owner, checkpointed entry, lag, keys and state digest.

For an operator checking a run: the digest of a partition here equals the
digest its worker answers (the ``digest`` command on the partition's
stream) once the worker has checkpointed, and two runs fed the same entries
give the same digests.  The settings are read as ``streamrnn serve`` reads
them (``--config``, environment, ``--set``), so pass the workers' own:
``redis.partitions``, ``redis.prefix``, ``checkpoint.dir`` and the model.

Exit codes: 0, 1 when Redis cannot be reached or a checkpoint cannot be
read, 2 for an invalid setting.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import config as config_module
from .serve import assignments


def newest_checkpoint(partition_dir: Path):
    """(where, checkpoint) of the partition's newest readable checkpoint: the highest lease's, else the
    static layout's; (None, None) when there is none."""
    from .partitions import earlier_dirs
    from .store import DirectoryStore

    for _, path in earlier_dirs(partition_dir, 1 << 62):
        if path.is_dir() and any(path.glob("gen-*.npz")):
            checkpoint = DirectoryStore(path, read_only=True).latest()
            if checkpoint is not None:
                return path, checkpoint
    return None, None


def inspect(config) -> list[dict]:
    from .leases import owner_of
    from .redis_log import connect, stream_name
    from .server import build_worker
    from .store import DirectoryStore

    r = config.redis
    client = connect(r.url)
    rows = []
    try:
        for p in range(r.partitions):
            owner = owner_of(client, r.prefix, p) if r.ownership == "leases" else None
            try:
                added = int(client.xinfo_stream(stream_name(r.prefix, p)).get("entries-added", 0))
            except Exception:  # no such stream yet
                added = 0
            row = {"partition": p, "owner": f"{owner[0]} (token {owner[1]})" if owner else
                   ("none" if r.ownership == "leases" else f"worker {p % r.workers} of {r.workers}"),
                   "entry": None, "lag": added, "keys": 0, "digest": None}
            where, checkpoint = newest_checkpoint(config.checkpoint.dir / f"partition-{p}")
            if checkpoint is not None:
                worker = build_worker(config, DirectoryStore(where, read_only=True))
                worker.checkpointer.restore(checkpoint)
                position = worker.checkpointer.positions.get(f"redis:{r.prefix}:{p}")
                if position is not None:
                    row.update(entry=position.entry, lag=max(0, added - position.entries))
                row.update(keys=len(worker.table), digest=worker.table.digest())
            rows.append(row)
    finally:
        client.close()
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="streamrnn inspect", description=__doc__.splitlines()[0])
    p.add_argument("--redis", metavar="URL", help="redis://HOST:PORT/DB (or redis.url in the settings)")
    p.add_argument("--partitions", metavar="P")
    p.add_argument("--checkpoint-dir", metavar="DIR")
    p.add_argument("--config", metavar="FILE", help="TOML settings file")
    p.add_argument("--set", metavar="SECTION.FIELD=VALUE", action="append", default=[], help="any setting")
    p.add_argument("--json", action="store_true", help="one JSON object per partition")
    args = p.parse_args(argv)
    try:
        overrides = {"sources.stdin": "false", **assignments(args.set)}
        for flag, dotted in (("redis", "redis.url"), ("partitions", "redis.partitions"),
                             ("checkpoint_dir", "checkpoint.dir")):
            if getattr(args, flag) is not None:
                overrides[dotted] = getattr(args, flag)
        config = config_module.load(args.config, overrides=overrides)
    except config_module.ConfigError as err:
        print(f"streamrnn inspect: {err}", file=sys.stderr)
        return 2
    if config.redis.url is None:
        print("streamrnn inspect: give --redis URL (or redis.url)", file=sys.stderr)
        return 2
    from .redis_log import RedisUnreachable
    from streamrnn.state import StateError

    try:
        rows = inspect(config)
    except (RedisUnreachable, StateError, OSError) as err:
        print(f"streamrnn inspect: {err}", file=sys.stderr)
        return 1
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(f"{'partition':>9}  {'owner':<28} {'checkpointed entry':<22} {'lag':>8} {'keys':>7}  digest")
    for row in rows:
        print(f"{row['partition']:>9}  {row['owner']:<28} {row['entry'] or '-':<22} {row['lag']:>8} "
              f"{row['keys']:>7}  {row['digest'] or '-'}")
    return 0
