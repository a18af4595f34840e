"""Chunks of row memory: zeros, writable, their pages in memory when handed out, the next one prepared ahead."""

import ctypes
import mmap

import numpy as np
import pytest

import streamrnn as sr
from streamrnn import kernels
from streamrnn.hybrid.regressor import HybridRegressor
from streamrnn.kernels import chunks
from streamrnn.kernels.regressor_pool import RegressorPool

PAGE = mmap.PAGESIZE
linux = pytest.mark.skipif(chunks._MADVISE is None, reason="needs Linux's madvise(MADV_POPULATE_WRITE)")


def resident(words: np.ndarray) -> np.ndarray:
    """Per page of ``words`` (page-aligned), whether it is in memory (``mincore``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pages = -(-words.nbytes // PAGE)
    out = (ctypes.c_ubyte * pages)()
    assert libc.mincore(ctypes.c_void_p(words.ctypes.data), ctypes.c_size_t(words.nbytes), out) == 0
    return np.frombuffer(out, dtype=np.uint8) & 1 == 1


def writable_zeros(words: np.ndarray, nbytes: int) -> None:
    assert words.dtype == np.float64 and words.shape == (nbytes // 8,) and words.flags.writeable
    assert not words.any()
    words[-1] = 2.5
    assert words[-1] == 2.5


@pytest.mark.parametrize("populate", [True, False])
@pytest.mark.parametrize("system", ["linux", "other"])
def test_mapped_memory_is_writable_zeros_on_any_system(populate, system, monkeypatch):
    if system == "other":  # a system without MAP_POPULATE: numpy's zeros
        monkeypatch.delattr(chunks.mmap, "MAP_POPULATE", raising=False)
    writable_zeros(chunks.mapped(3 * PAGE, populate), 3 * PAGE)


@linux
def test_mapped_memory_has_its_pages_in_at_once_or_as_they_are_written():
    assert resident(chunks.mapped(8 * PAGE)).all()
    lazy = chunks.mapped(8 * PAGE, populate=False)
    assert not resident(lazy).any()
    lazy[PAGE // 8 * 3] = 1.0  # one write: one page
    assert resident(lazy).tolist() == [False, False, False, True, False, False, False, False]
    assert chunks.populate(lazy) and resident(lazy).all()
    assert lazy[PAGE // 8 * 3] == 1.0 and lazy.sum() == 1.0  # faulting pages in writes nothing


@linux
def test_from_the_second_chunk_on_the_next_is_prepared_ahead_and_handed_out_with_its_pages_in():
    ahead = chunks.Ahead(16 * PAGE)
    first = ahead.take()
    assert ahead._next is None  # a pool that has not outgrown its first chunk prepares nothing
    second = ahead.take()
    assert ahead._next is not None
    thread, prepared, _ = ahead._next
    third = ahead.take()
    assert third is prepared and not thread.is_alive()
    for words in (first, second, third):
        assert resident(words).all()
        writable_zeros(words, 16 * PAGE)
    assert len({w.ctypes.data for w in (first, second, third)}) == 3
    assert ahead._next is not None and ahead.taken == 3


@linux
def test_a_system_refusing_the_call_gets_chunks_all_the_same_and_no_more_threads(monkeypatch):
    monkeypatch.setattr(chunks, "populate", lambda words: False)
    ahead = chunks.Ahead(4 * PAGE)
    ahead.take(), ahead.take()
    refused = ahead.take()  # prepared by a thread whose call was refused: its pages fault in as written
    writable_zeros(refused, 4 * PAGE)
    assert not ahead.ahead and ahead._next is None
    later = ahead.take()  # mapped at once, as without ahead
    assert ahead._next is None and resident(later).all()
    writable_zeros(later, 4 * PAGE)


def test_ahead_off_maps_every_chunk_at_once_without_a_thread():
    ahead = chunks.Ahead(4 * PAGE, ahead=False)
    for _ in range(3):
        writable_zeros(ahead.take(), 4 * PAGE)
        assert ahead._next is None


@pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed")
def test_a_pool_growing_over_chunks_prepared_ahead_learns_as_one_that_never_grows(monkeypatch):
    monkeypatch.setenv(kernels.ENV, "1")  # rows are the kernels' (the suite runs with them off too)

    def new():
        return HybridRegressor(3, layers=(sr.Elman(4),), learner=sr.TruncatedBPTT(3))

    grown, roomy = RegressorPool(new, 3, chunk=2), RegressorPool(new, 3, chunk=64)
    rng = np.random.default_rng(5)
    rows = [(grown.add(), roomy.add()) for _ in range(9)]  # five chunks of two, the later ones prepared ahead
    assert grown.capacity == 10 and grown._memory.taken == 5
    for _ in range(6):
        U, Y = rng.normal(size=(9, 3)), rng.normal(size=9)
        a = grown.learn([g for g, _ in rows], U, Y)
        b = roomy.learn([r for _, r in rows], U, Y)
        np.testing.assert_array_equal(a, b)
    for g, r in rows:
        np.testing.assert_array_equal(grown._words(g), roomy._words(r))
