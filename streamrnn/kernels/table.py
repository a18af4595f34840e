"""Many arrays as one argument: their addresses and shapes in a table, views rebuilt inside the kernel.

numba checks and unboxes every argument of a call, about 0.15 µs each.  A
hybrid model's event touches some 50 arrays, so passing them one by one
costs more than the event's arithmetic.  An ``ArrayTable`` keeps the arrays
(so they stay alive and in place), and hands the kernel two int64 arrays:
their addresses and their shapes.  ``vec``/``mat``/``cube`` (and ``ivec`` for
int64) rebuild each as a view of the same memory with ``numba.carray``:
nothing is copied, and the kernel writes the owners' arrays.

A table is only valid while its owners hold these very arrays: whatever
replaces one must drop the table (the bindings in ``regressor`` do).

The accessors are inlined into the kernels (``inline="always"``): numba
compiles a called function once per *literal* argument, so ``vec(ptr, dims,
3)`` and ``vec(ptr, dims, 4)`` would otherwise be two compilations.  For the
same reason the kernels pass slot offsets and flags as run-time values, not
literals, to the functions they call.
"""

from __future__ import annotations

import numpy as np
from numba import carray, literal_unroll, njit
from numba.core import cgutils, types
from numba.extending import intrinsic


@intrinsic
def _pointer(typingctx, address):
    """An int64 address as a void pointer (for carray)."""

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(types.int64), codegen


@njit(cache=True, error_model="numpy", inline="always")
def vec(ptr, dims, i):
    return carray(_pointer(ptr[i]), (dims[i, 0],), np.float64)


@njit(cache=True, error_model="numpy", inline="always")
def ivec(ptr, dims, i):
    return carray(_pointer(ptr[i]), (dims[i, 0],), np.int64)


@njit(cache=True, error_model="numpy", inline="always")
def mat(ptr, dims, i):
    return carray(_pointer(ptr[i]), (dims[i, 0], dims[i, 1]), np.float64)


@njit(cache=True, error_model="numpy", inline="always")
def cube(ptr, dims, i):
    return carray(_pointer(ptr[i]), (dims[i, 0], dims[i, 1], dims[i, 2]), np.float64)


def owner(a: np.ndarray) -> np.ndarray:
    """The array that owns a's memory (a itself when a owns it)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def with_spare_row(S: np.ndarray) -> np.ndarray:
    """The (n + 1, P) buffer whose first n rows are the (n, P) array S: one stream's RTRL sensitivities,
    which ``rtrl_allocate`` gives a spare row."""
    full = owner(S)
    n, P = S.shape
    if full.size != (n + 1) * P or full.ctypes.data != S.ctypes.data or not S.flags.c_contiguous:
        raise ValueError("RTRL's sensitivity buffer has no spare row after it")
    return full.reshape(n + 1, P)


def _address_of(a):
    return a.ctypes.data


#: the numba type of each slot kind: a writeable C-contiguous array of its dtype and dimensions
_KIND_TYPES = {kind: types.Array(dtype, int(kind[1]), "C")
               for kind, dtype in (("f1", types.float64), ("f2", types.float64), ("f3", types.float64),
                                   ("i1", types.int64))}
#: the address of one array of each kind, compiled for exactly that kind (anything else raises TypeError):
#: what names the slot that does not fit when a whole table is refused
_ADDRESS = {kind: njit(types.int64(t), cache=True)(_address_of) for kind, t in _KIND_TYPES.items()}


def _addresses_and_shapes(arrays):
    """(addresses, shapes padded with 1 to 3-d) of a tuple of arrays, in one call."""
    ptr = np.empty(len(arrays), dtype=np.int64)
    dims = np.ones((len(arrays), 3), dtype=np.int64)
    i = 0
    for a in literal_unroll(arrays):
        ptr[i] = a.ctypes.data
        for d in range(a.ndim):
            dims[i, d] = a.shape[d]
        i += 1
    return ptr, dims


#: ``_addresses_and_shapes`` compiled for one sequence of slot kinds (a table layout), made on first use.
#: numba checks the whole tuple's types in C, where checking each array in a call of its own costs a
#: dispatch per slot: a new key's table costs a few µs, not tens (a daemon makes one per new key)
_TABLE_CALLS: dict[tuple, object] = {}


def _table_call(kinds: tuple):
    call = _TABLE_CALLS.get(kinds)
    if call is None:
        signature = types.Tuple((types.int64[::1], types.int64[:, ::1]))(
            types.Tuple(tuple(_KIND_TYPES[kind] for kind in kinds)))
        call = _TABLE_CALLS[kinds] = njit(signature, cache=True)(_addresses_and_shapes)
    return call
#: one ``dims`` array per layout of shapes
_DIMS: dict[bytes, np.ndarray] = {}
#: the kernels' read-only inputs (codes, constants, configuration), one array per content
_CONSTANTS: dict[tuple, np.ndarray] = {}


def constant(a: np.ndarray) -> np.ndarray:
    """The one array of a's dtype, shape and content that every table uses: a daemon's thousands of keys of
    one configuration share their codes and constants.  Only kernels read it; nothing may write it."""
    return _CONSTANTS.setdefault((a.dtype.str, a.shape, a.tobytes()), a)


class ArrayTable:
    """The addresses (``ptr``) and shapes (``dims``, up to 3-d) of ``arrays``, which it keeps.

    ``kinds`` gives, per slot, the dtype and dimensions the kernel reads it
    with: "f1", "f2", "f3" (float64) or "i1" (int64).  Every array must match
    its slot and be writeable and C-contiguous: else ValueError, and the caller
    takes another path.
    """

    _DTYPES = {"f": np.dtype(np.float64), "i": np.dtype(np.int64)}

    def __init__(self, arrays, kinds):
        if len(arrays) != len(kinds):
            raise ValueError(f"{len(arrays)} arrays for {len(kinds)} slots")
        self.arrays = tuple(arrays)
        try:
            self.ptr, dims = _table_call(tuple(kinds))(self.arrays)
        except TypeError:  # an array that does not fit its slot: name the first
            for i, (a, kind) in enumerate(zip(self.arrays, kinds)):
                try:
                    _ADDRESS[kind](a)
                except TypeError:
                    raise ValueError(f"slot {i}: {self._refusal(a, kind)}") from None
            raise
        # the kernels only read dims: tables of one layout share one array (a daemon holds thousands)
        self.dims = _DIMS.setdefault(dims.tobytes(), dims)
        self.dims.flags.writeable = False

    @classmethod
    def _refusal(cls, a, kind) -> str:
        """Why the array a cannot fill a slot of this kind."""
        dtype, nd = cls._DTYPES[kind[0]], int(kind[1])
        if not isinstance(a, np.ndarray) or a.dtype != dtype or a.ndim != nd:
            got = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
            return f"a {nd}-d {dtype} array is needed, got {got}"
        return "the array must be writeable and C-contiguous"
