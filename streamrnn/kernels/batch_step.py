"""B streams' model steps in one compiled call: the network's kernel step (``network_table.step``), once per row.

Each stream's arrays lie in one row of a byte pool (``pool.py``), at the
same offsets in every row: stream b's table is ``base + b * row``.  A row is
stepped by exactly the code a single model's step runs, on its own arrays
only, so its result does not depend on which streams share the call, nor on
whether the rows are shared out over threads (``step_rows_parallel``: numba's
prange over rows, each thread with its own table).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import network_table as nt
from .table import vec


@njit(cache=True, error_model="numpy", inline="always")
def _row(base, row, b, ptr):
    shift = b * row
    for i in range(base.shape[0]):
        ptr[i] = base[i] + shift


@njit(cache=True, error_model="numpy")
def step_rows(base, row, dims, ints, numbers, X, Y, has_y, lr, ptr):
    """Stream b: input X[b] into its ``x`` slot, then its step on target Y[b] (when ``has_y[b]``) at rate lr[b]."""
    for b in range(X.shape[0]):
        _row(base, row, b, ptr)
        x = vec(ptr, dims, nt.X_)
        for j in range(X.shape[1]):
            x[j] = X[b, j]
        nt.step(ptr, dims, 0, ints, 0, numbers, Y[b], has_y[b], lr[b])


@njit(cache=True, error_model="numpy", parallel=True)
def step_rows_parallel(base, row, dims, ints, numbers, X, Y, has_y, lr):
    """``step_rows`` with the rows shared out over numba's threads."""
    for b in prange(X.shape[0]):
        ptr = np.empty_like(base)
        _row(base, row, b, ptr)
        x = vec(ptr, dims, nt.X_)
        for j in range(X.shape[1]):
            x[j] = X[b, j]
        nt.step(ptr, dims, 0, ints, 0, numbers, Y[b], has_y[b], lr[b])


@njit(cache=True, error_model="numpy")
def forward_rows(base, row, dims, ints, X, ptr):
    """Stream b: the forward pass and readout for X[b] (a predict: no state moves)."""
    for b in range(X.shape[0]):
        _row(base, row, b, ptr)
        x = vec(ptr, dims, nt.X_)
        for j in range(X.shape[1]):
            x[j] = X[b, j]
        nt.forward(ptr, dims, 0, ints, 0)
