"""A checkpoint written by a forked child process, as Redis writes its snapshots (BGSAVE).

On a writer thread, copying, packing and hashing thousands of keys' states
holds the interpreter lock that events need: with 10,000 keys the daemon
spent most of its time in checkpoints.  ``fork()`` gives a child the
parent's memory as it was at that instant, copy-on-write, so the child
copies, packs and writes the changed keys' states on another core while the
parent goes on with the next event at once.  The parent then records the
commit in its store (``DirectoryStore.record``) when the child has exited
well, and counts a failure (its keys count as changed again) otherwise.

The child:

* dies with its parent (``PR_SET_PDEATHSIG``), so it never writes after a
  kill -9 of the daemon: what it left half written are temporary files,
  which the next start sweeps, or a shard no manifest names, which the next
  commit sweeps;
* closes every descriptor it inherited but its status pipe, so a client
  connection the parent closes is closed at once;
* ignores SIGINT and SIGTERM (a terminal's Ctrl-C, or a service manager
  stopping the whole group: the parent stops gracefully and waits for it),
  with signals blocked across the fork so that none reaches the parent's
  wake-up descriptor from the child;
* offers itself to the OOM killer first (``oom_score_adj`` 1000): under a
  memory limit, losing a checkpoint beats losing the daemon.

    commit = ForkedCommit(store, checkpoint)   # forks now; the parent returns at once
    commit.done()                              # whether the child has exited (never blocks)
    commit.result()                            # waits; its seconds, or RuntimeError saying why it failed

``checkpoint.live`` may hold the streams themselves (``StreamTable.checkpoint(...,
snapshots=False)``): the child takes their snapshots from its copy of memory,
one key at a time as the shard is packed.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import os
import signal
import sys
import time
from collections.abc import Mapping

#: where a checkpoint can be written by a forked child: fork, and a parent-death signal (Linux)
AVAILABLE = hasattr(os, "fork") and sys.platform.startswith("linux")
_PR_SET_PDEATHSIG = 1
_MESSAGE = 4096
_SIGNALS = {signal.SIGINT, signal.SIGTERM}
# resolved here, in the parent: a dlopen in a child forked from a threaded process is best avoided
_prctl = ctypes.CDLL(None, use_errno=True).prctl if AVAILABLE else None


class ForkedCommit:
    def __init__(self, store, checkpoint):
        self._store, self._checkpoint = store, checkpoint
        self._where = store.placement(checkpoint)  # a checkpoint that cannot be placed fails here, unforked
        self._status: int | None = None
        self._lost: str | None = None
        parent = os.getpid()
        read, write = os.pipe()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            os.close(read)
            os.close(write)
            raise
        if pid == 0:  # pragma: no cover - the child's lines run in another process (tests check its files)
            _child(parent, store, checkpoint, self._where, read, write, blocked)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(write)
        self.pid, self._pipe = pid, read

    def done(self) -> bool:
        """Whether the child has exited (reaped here: a zombie never lingers)."""
        if self._status is None and self._lost is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError as err:  # reaped elsewhere (SIGCHLD ignored): its outcome is unknown
                self._lost = str(err)
                return True
            if pid == 0:
                return False
            self._status = status
        return True

    def result(self) -> float:
        """Wait for the child; record the commit in the store and return the child's seconds, or raise."""
        try:
            if self._status is None and self._lost is None:
                try:
                    _, self._status = os.waitpid(self.pid, 0)
                except ChildProcessError as err:
                    self._lost = str(err)
            message = _read_all(self._pipe)
        finally:
            os.close(self._pipe)
        if self._lost is not None:
            raise RuntimeError(f"the checkpoint writer (process {self.pid}) was reaped elsewhere ({self._lost}); "
                               "its outcome is unknown, so its keys are written again")
        code = os.waitstatus_to_exitcode(self._status)
        if code != 0 or not message.startswith("ok "):
            why = message.removeprefix("error ") or (f"signal {-code}" if code < 0 else f"exit code {code}")
            raise RuntimeError(f"the checkpoint writer (process {self.pid}) failed: {why}")
        self._store.record(self._checkpoint, self._where)
        return float(message[3:])


class _Snapshots(Mapping):
    """The keys' snapshots, each taken when it is asked for: the shard's packer takes one key's at a time, so
    the child holds one key's arrays, not every key's (hundreds of megabytes with 10,000 keys, each page of
    them a fault to take).  Its memory is a copy nothing else changes: a stream's state is packed from it
    without being copied first."""

    def __init__(self, live: dict):
        self._live = live

    def __getitem__(self, key):
        snap = self._live[key]
        return snap.snapshot(copy=False) if hasattr(snap, "snapshot") else snap

    def __iter__(self):
        return iter(self._live)

    def __len__(self) -> int:
        return len(self._live)


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        chunk = os.read(fd, _MESSAGE)
        if not chunk:
            return b"".join(chunks).decode(errors="replace")
        chunks.append(chunk)


def _child(parent: int, store, checkpoint, where: dict, read: int, pipe: int,
           blocked) -> None:  # pragma: no cover - runs in the child
    """Write the checkpoint's files, say how it went on ``pipe``, and exit without running anything of
    the parent's (no atexit handlers, no buffers flushed twice)."""
    code = 1
    try:
        gc.disable()  # a collection would touch, and so copy, every page of the parent's objects
        signal.set_wakeup_fd(-1)
        for sig in _SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(read)
        os.closerange(3, pipe)
        os.closerange(pipe + 1, os.sysconf("SC_OPEN_MAX"))
        if _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before the signal was asked for
            os._exit(1)
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")
        except OSError:
            pass
        started = time.perf_counter()
        store.write(dataclasses.replace(checkpoint, live=_Snapshots(checkpoint.live)), where)
        os.write(pipe, f"ok {time.perf_counter() - started!r}".encode())
        code = 0
    except BaseException as err:  # noqa: BLE001 - whatever it is, the parent hears of it
        try:
            os.write(pipe, f"error {type(err).__name__}: {err}".encode()[:_MESSAGE - 1])
        except OSError:
            pass
    finally:
        os._exit(code)
