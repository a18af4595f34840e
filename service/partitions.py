"""A worker per partition of a log, seen by the rest of the daemon as one worker.

On a partitioned log (``service.redis_source``) each partition is a unit of
its own: its keys' states and the newest entry applied are checkpointed
together, in the partition's own checkpoint directory
(``checkpoint.dir/partition-<p>``).  So a partition can move to another
worker (change ``redis.workers``, with the checkpoint directory on a volume
every worker mounts) and that worker continues it exactly: it restores the
partition's newest checkpoint and reads on after its entry.

``WorkerGroup`` holds one ``Worker`` (with its own ``StreamTable`` and
``Checkpointer``) per owned partition, all counting into one ``Stats``, and
offers what the server, the metrics and the progress lines read of a worker:
``stats``, ``events``, a ``table`` and a ``checkpointer`` that sum or run
over the partitions'.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import OrderedDict
from pathlib import Path

from .checkpointer import Position
from .stats import Stats
from .table import COUNTERS
from .worker import Worker

log = logging.getLogger("streamrnn.partitions")
_SUMMED = ("evictions", "restores", "restore_failures", "eviction_failures", "corrupt_keys", "expired_keys")


class TableGroup:
    """The partitions' tables as one, for reading (the metrics, progress lines)."""

    def __init__(self, group: "WorkerGroup"):
        self.group = group

    @property
    def tables(self) -> list:
        return [w.table for w in self.group.workers.values()]

    def __len__(self) -> int:
        return sum(len(t) for t in self.tables)

    def __getattr__(self, name):
        if name in _SUMMED:
            return sum(getattr(t, name) for t in self.tables)
        raise AttributeError(name)

    @property
    def live(self) -> OrderedDict:
        out = OrderedDict()
        for table in self.tables:
            out.update(table.live)
        return out

    @property
    def stored(self) -> dict:
        return {key: ref for table in self.tables for key, ref in table.stored.items()}

    def totals(self) -> dict[str, int]:
        out = dict.fromkeys(COUNTERS, 0)
        for table in self.tables:
            for name, value in table.totals().items():
                out[name] += value
        return out


class CheckpointerGroup:
    """The partitions' checkpointers, run together; each writes its own partition's checkpoints."""

    def __init__(self, group: "WorkerGroup"):
        self.group = group

    @property
    def checkpointers(self) -> list:
        return [w.checkpointer for w in self.group.workers.values()]

    @property
    def events(self) -> int:
        return sum(c.events for c in self.checkpointers)

    @property
    def generation(self) -> int:
        return max((c.generation for c in self.checkpointers), default=0)

    @property
    def positions(self) -> dict[str, Position]:
        return {name: p for c in self.checkpointers for name, p in c.positions.items()}

    def restore(self) -> bool:
        restored = [c.restore() for c in self.checkpointers]
        return any(restored)

    def checkpoint(self) -> bool:
        results = [c.checkpoint() for c in self.checkpointers]
        return all(results)

    def start_timer(self) -> None:
        for c in self.checkpointers:
            c.start_timer()

    def tick(self) -> None:
        for c in self.checkpointers:
            c.tick()

    def hold(self) -> None:
        for c in self.checkpointers:
            c.hold()

    def release(self) -> None:
        for c in self.checkpointers:
            c.release()

    def close(self) -> None:
        for c in self.checkpointers:
            c.close()


class WorkerGroup:
    """The workers of the partitions this process owns now (with leases, partitions come and go)."""

    def __init__(self, workers: dict[int, Worker], stats: Stats):
        self.workers = dict(workers)  # partition -> its worker
        self.stats = stats
        self.table = TableGroup(self)
        self.checkpointer = CheckpointerGroup(self)

    @property
    def events(self) -> int:
        return self.checkpointer.events


# ----- checkpoints under leases ---------------------------------------------------------------------
def lease_dir(partition_dir: Path, token: int) -> Path:
    """Where the owner holding ``token`` writes the partition's checkpoints."""
    return Path(partition_dir) / f"lease-{token:012d}"


def earlier_dirs(partition_dir: Path, token: int) -> list[tuple[int, Path]]:
    """The partition's checkpoint directories of owners before ``token``, newest first: each lease's
    own, and the partition directory itself (static ownership) as token 0."""
    found = [(0, Path(partition_dir))]
    for path in Path(partition_dir).glob("lease-*"):
        try:
            number = int(path.name[len("lease-"):])
        except ValueError:
            continue
        if number < token:
            found.append((number, path))
    return sorted(found, reverse=True)


def take_over(worker: Worker, partition_dir: Path, token: int, store_class) -> int | None:
    """Load into ``worker`` (whose store is ``lease_dir(partition_dir, token)``) the newest readable
    checkpoint an earlier owner wrote, and write it at once under ``token``; the token it came from, or
    None when there was none.

    An earlier owner's evicted keys are linked into the new directory (their files are immutable), so
    the new checkpoint stands on its own.  Once it is written, the earlier directories are removed: a
    stale owner writing on in one of them is never read.
    """
    later = [d for d in Path(partition_dir).glob("lease-*") if d.name > lease_dir(partition_dir, token).name]
    if later:  # tokens only grow: Redis has lost PREFIX:fence:<p> (no persistence, a fail-over)
        raise OSError(f"{later[0]} was written under a later lease than {token}: the fencing tokens went back "
                      "(Redis lost its fence keys?); move it away once it is safe, or restore the fence key")
    source, unreadable = None, []
    for number, path in earlier_dirs(partition_dir, token):
        if not any(path.glob("gen-*.npz")):
            continue
        checkpoint = store_class(path, read_only=True).latest()
        if checkpoint is not None:
            source = number, path, checkpoint
            break
        unreadable.append(path)
    if source is None:
        if unreadable:  # never start a partition afresh over checkpoints that exist: its stream may be trimmed
            raise OSError(f"no readable checkpoint in {', '.join(map(str, unreadable))}")
        return None
    number, path, checkpoint = source
    keys = Path(worker.table.store.keys)
    for ref in checkpoint.stored.values():
        try:
            os.link(path / "keys" / ref, keys / ref)
        except FileExistsError:
            pass
    worker.checkpointer.restore(checkpoint)
    if not worker.checkpointer.checkpoint():
        raise OSError(f"cannot write the checkpoint of {partition_dir} under lease {token}")
    for other, old in earlier_dirs(partition_dir, token):
        if other:
            shutil.rmtree(old, ignore_errors=True)
        else:  # the static layout's files in the partition directory itself
            for item in old.iterdir():
                if not item.name.startswith("lease-"):
                    shutil.rmtree(item, ignore_errors=True) if item.is_dir() else item.unlink(missing_ok=True)
    return number
