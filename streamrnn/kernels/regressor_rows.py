"""Many hybrid regressors' events in one compiled call, each model a row of a pool (``regressor_pool``).

A row holds every array of one ``HybridRegressor``'s compiled step
(``hybrid_step.SLOTS``, the corrector network's included) and of the
``FeatureSpace`` its features are read with (``SPACE_SLOTS``), at the same
offsets in every row: the model whose row starts at address a has the table
``a + offsets``.
An event is what the daemon does for a supervised key, in its order:

    z, dx = the space's standardised features and their changes (u raw)
    prediction = learn(z, dx, y)  (predict(z, dx) without a target)
    the space learns u

by the very code a single model's compiled call runs (``learn_in``,
``predict_in``), on its own row only: a model's result does not depend on
which others share the call, nor on whether the events are shared out over
threads (``events_parallel``).  The rows of one call must be distinct.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from . import NONFINITE, UPDATED
from . import hybrid_step as k
from . import network_table as nt
from .scale_step import moments_update_at, standardise
from .prefetch import prefetch_span
from .table import ivec, vec

#: the feature space's arrays, after the model's: its running moments, the previous raw values, and
#: ``flags`` = [has_last]; then ``book``: what ``OnlineRNN`` keeps in Python of its corrector network's
#: steps (``BOOK``), kept here by the kernel
SPACE_SLOTS = (("space.count", "f1"), ("space.mean", "f1"), ("space.m2", "f1"), ("space.last", "f1"),
               ("space.flags", "f1"), ("book", "f1"))
ROW_SLOTS = k.SLOTS + SPACE_SLOTS
SP_COUNT, SP_MEAN, SP_M2, SP_LAST, SP_FLAGS, BOOK_ = range(len(k.SLOTS), len(ROW_SLOTS))
#: ``book``: the network's counters (``model.COUNTERS``), its last loss and whether there is one, the
#: norms of its newest update, and ||h||^2 after its newest step
BOOK = ("steps", "updates", "skipped", "clipped", "last_loss", "has_loss", "grad_norm", "grad_norm_clipped",
        "h_sq")
#: the slots a step writes before it reads them (BPTT(h; h')'s gradient and backward errors) or never reads
#: (the last update's gradient, ``OnlineRNN.gradient``: a stream's objects read it as zeros, as after a
#: restore): not kept in every row, but in one scratch buffer per call (per event on threads)
SCRATCH_SLOTS = frozenset(k.NET + slot for slot in (nt.GRAD, nt.APPLIED, nt.E_, nt.DZ))
#: per event, what is left to Python: ``DONE``; ``REFUSED`` (``_refused``: the row did not move, the event
#: is numpy's); ``NET_NUMPY`` (the network's step is numpy's, on target res[1]); ``NONFINITE`` (the step
#: was skipped: traces holding non-finite values must restart)
DONE, REFUSED, NET_NUMPY, NET_NONFINITE = range(4)


@njit(cache=True, error_model="numpy", inline="always")
def _book(book, out):
    """``OnlineRNN._kernel_stepped``'s bookkeeping of a step the kernel took (status out[0] != 0)."""
    status = int(out[0])
    book[0] += 1.0
    if status == UPDATED:
        book[1] += 1.0
        book[6], book[7] = out[2], out[3]
        if out[5] != 0.0:
            book[3] += 1.0
    elif status == NONFINITE:
        book[2] += 1.0
    book[4], book[5], book[8] = out[1], 1.0, out[4]


@njit(cache=True, error_model="numpy", inline="always")
def _event(address, offsets, scratch_at, scratch, dims, u, y, has_y, lr, scaled, ptr, z, dx, res):
    """One event of the model whose row starts at ``address`` (its scratch slots at ``scratch`` +
    ``scratch_at``): its prediction (NaN for an event ``_refused`` leaves to numpy: then the row has not
    moved), and in res what is left to Python and the target."""
    for i in range(offsets.shape[0]):
        ptr[i] = address + offsets[i] if scratch_at[i] < 0 else scratch + scratch_at[i]
    sc, cst, ints, numbers = vec(ptr, dims, k.SC_), vec(ptr, dims, k.CST_), ivec(ptr, dims, k.INTS_), \
        vec(ptr, dims, k.NUMBERS_)
    count, mean, m2 = vec(ptr, dims, SP_COUNT), vec(ptr, dims, SP_MEAN), vec(ptr, dims, SP_M2)
    last, flags = vec(ptr, dims, SP_LAST), vec(ptr, dims, SP_FLAGS)
    res[0], res[1] = DONE, 0.0
    standardise(u, count, mean, m2, scaled, last, flags[0] != 0.0, z, dx)
    if k._refused(sc, z, dx, y if has_y else 0.0, dims):
        res[0] = REFUSED
        return math.nan
    learned = vec(ptr, dims, k.T_COUNT)[0] != 0.0  # HybridRegressor: nothing learned yet, the prediction is 0
    if has_y:
        p = k.learn_in(z, dx, y, ptr, dims, lr, sc, cst, ints, numbers)
        if ints[k.HAS_COR] == 1 and sc[k.OUT_STEP] != 0.0:
            out = vec(ptr, dims, k.NET + nt.OUT)
            if out[0] == 0.0:  # a step the kernel leaves to numpy (a non-finite state or loss)
                res[0], res[1] = NET_NUMPY, sc[k.OUT_TARGET]
            else:
                _book(vec(ptr, dims, BOOK_), out)
                if int(out[0]) == NONFINITE:
                    res[0] = NET_NONFINITE
    else:
        p = k.predict_in(z, dx, ptr, dims, sc, cst, ints) if learned else 0.0
    moments_update_at(count, mean, m2, u, scaled)
    for i in range(u.shape[0]):
        last[i] = u[i]
    flags[0] = 1.0
    return p if learned else 0.0


@njit(cache=True, error_model="numpy")
def events(addresses, row_bytes, offsets, scratch_at, scratch, dims, U, Y, has_y, lr, scaled, out, res):
    """Event i is that of the model whose row of ``row_bytes`` starts at addresses[i], with raw features U[i] and
    target Y[i] (when has_y[i]), at rate lr[i]: its prediction into out[i], what is left to Python into res[i]
    (``DONE``...).  Every event's scratch slots are in the buffer at address ``scratch``.  The next event's row
    is prefetched while an event steps (``prefetch``)."""
    n, last = U.shape[1], addresses.shape[0] - 1
    ptr, z, dx = np.empty_like(offsets), np.empty(n), np.empty(n)
    for i in range(addresses.shape[0]):
        if i < last:
            prefetch_span(addresses[i + 1], row_bytes)
        out[i] = _event(addresses[i], offsets, scratch_at, scratch, dims, U[i], Y[i], has_y[i], lr[i], scaled, ptr, z,
                        dx, res[i])


@njit(cache=True, error_model="numpy", parallel=True)
def events_parallel(addresses, offsets, scratch_at, scratch, scratch_bytes, dims, U, Y, has_y, lr, scaled, out, res):
    """``events`` with the events shared out over numba's threads (their rows must be distinct); event i's
    scratch slots are in the buffer at ``scratch`` + i * ``scratch_bytes``."""
    n = U.shape[1]
    for i in prange(addresses.shape[0]):
        ptr, z, dx = np.empty_like(offsets), np.empty(n), np.empty(n)
        out[i] = _event(addresses[i], offsets, scratch_at, scratch + i * scratch_bytes, dims, U[i], Y[i], has_y[i],
                        lr[i], scaled, ptr, z, dx, res[i])
