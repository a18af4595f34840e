"""Memory for a pool's chunks of rows: zeroed pages, faulted in before any row is written, the next chunk ahead.

A page's first write costs a page fault in which the system finds and
zeroes the page: about 1.3 us per 4 KB page here when the page was lately
freed, and about 11 us when it was not (this machine is a virtual one whose
free memory goes back to its host, which must back the page again).  A
16-unit hybrid regressor's row is six pages, so a new key's pages cost
8-70 us against the 10-20 us of its event.

``mapped(nbytes)`` maps zeros with their pages faulted in at once (Linux's
``MAP_POPULATE``).  ``Ahead`` hands out chunks so that, once a pool has grown
past its first chunk (it is taking many keys), the next chunk is mapped
and its pages are faulted in by a thread while events go on: the system
call that does it (``madvise(MADV_POPULATE_WRITE)``, Linux 5.14) is made
through ctypes, which releases the interpreter lock.  A chunk taken before
its thread is done waits for the rest.  Where the call is missing or fails,
the chunk's pages fault in as rows are written, and later chunks are mapped
at once as before.

    chunks = Ahead(2 << 20)
    words = chunks.take()     # 2 MiB of zeros as float64 words, its pages in memory
"""

from __future__ import annotations

import ctypes
import mmap
import threading

import numpy as np

#: madvise's advice that faults a range's pages in for writing, as a first write would (Linux 5.14)
MADV_POPULATE_WRITE = 23


def _madvise():
    """libc's madvise through ctypes (which releases the interpreter lock around the call), or None."""
    if not hasattr(mmap, "MAP_POPULATE"):  # not Linux: no MADV_POPULATE_WRITE either
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.madvise
    except (OSError, AttributeError):
        return None
    call.argtypes, call.restype = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int), ctypes.c_int
    return call


_MADVISE = _madvise()


def mapped(nbytes: int, populate: bool = True) -> np.ndarray:
    """``nbytes`` of zeros as float64 words in a mapping of their own, with ``populate`` their pages faulted in
    at once where the system can (``MAP_POPULATE``); numpy's zeros where it has no such flag."""
    if not hasattr(mmap, "MAP_POPULATE"):
        return np.zeros(nbytes // 8)
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | (mmap.MAP_POPULATE if populate else 0)
    return np.frombuffer(mmap.mmap(-1, nbytes, flags=flags), dtype=np.float64)  # the array keeps the mapping


def populate(words: np.ndarray) -> bool:
    """Fault in the pages of ``words`` for writing (``MADV_POPULATE_WRITE``), without the interpreter lock;
    False where the system cannot (the pages then fault in as they are written)."""
    if _MADVISE is None:
        return False
    return _MADVISE(words.ctypes.data, words.nbytes, MADV_POPULATE_WRITE) == 0


class Ahead:
    """Chunks of ``nbytes`` (a multiple of 8), each zeros with its pages in memory; from the second one taken
    on, the next is prepared by a thread as soon as one is taken."""

    def __init__(self, nbytes: int, ahead: bool = True):
        self.nbytes = int(nbytes)
        self.ahead = ahead and _MADVISE is not None
        self.taken = 0
        self._next: tuple[threading.Thread, np.ndarray, list] | None = None  # the chunk being prepared

    def take(self) -> np.ndarray:
        """The next chunk: the one prepared ahead (waiting for its thread if it is not done), else mapped now."""
        if self._next is not None:
            thread, words, done = self._next
            self._next = None
            thread.join()
            if not done[0]:  # the system refused: its pages fault in as rows are written; no more ahead
                self.ahead = False
        else:
            words = mapped(self.nbytes)
        self.taken += 1
        if self.ahead and self.taken >= 2:  # a pool past its first chunk keeps growing: prepare the next
            self._prepare()
        return words

    def _prepare(self) -> None:
        words, done = mapped(self.nbytes, populate=False), [False]

        def fault_in() -> None:
            done[0] = populate(words)

        thread = threading.Thread(target=fault_in, name="streamrnn-chunk-ahead", daemon=True)
        thread.start()
        self._next = (thread, words, done)
