"""Software prefetch is a hint: it changes no byte, and asking for memory that is not there never faults."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")

from numba import njit  # noqa: E402

from streamrnn.kernels.prefetch import LINE, prefetch_span  # noqa: E402


@njit
def _prefetched_copy(a, address, nbytes):
    prefetch_span(address, nbytes)
    return a.copy()


@pytest.mark.parametrize("nbytes", [0, 1, LINE - 1, LINE, 24_192, 24_193])
def test_a_prefetched_span_reads_back_unchanged(nbytes):
    a = np.random.default_rng(0).normal(size=(24_200 + 7) // 8)
    before = a.copy()
    assert _prefetched_copy(a, a.ctypes.data, min(nbytes, a.nbytes)).tobytes() == before.tobytes()
    assert a.tobytes() == before.tobytes()


def test_prefetching_memory_that_is_not_mapped_does_not_fault():
    """The pool prefetches the next event's row without asking where its chunk ends: a hint never faults."""
    a = np.arange(3.0)
    assert _prefetched_copy(a, 0, 4 * LINE).tolist() == [0.0, 1.0, 2.0]
    assert _prefetched_copy(a, 1 << 47, 4 * LINE).tolist() == [0.0, 1.0, 2.0]
