"""Many models' kernel arrays in one byte pool, a row per stream (what ``streamrnn.batch.ModelBatch`` steps).

A model's kernel slots (``network_table.SLOTS``) are views of a few arrays
that own their memory (theta holds A and B, the optimiser's state holds
``count``, ...).  A row lays those owners end to end, each on a cache line,
so every stream's slot sits at the same offset of its row and stream b's
table is ``base + b * row``: no table per stream, and a stream's state is one
contiguous block.  Copying a model in or out copies its owners byte for byte.

Exact RTRL keeps S_{t-1} in one buffer and writes S_t into the other; the
rows step together, so the pool swaps the two slots' offsets for all of
them at once and remembers the parity.  Bookkeeping the model keeps in
Python (its counters, last loss, gradient norms) is kept per row in arrays.
"""

from __future__ import annotations

import numpy as np

from . import ADVANCED, FALLBACK, NONFINITE, UPDATED  # noqa: F401
from . import batch_step as bs
from . import network_table as nt
from .table import _ADDRESS, ArrayTable, owner
from ..model import COUNTERS

_ALIGN = 64


def single_threaded_blas() -> bool:
    """Whether the BLAS the kernels call (scipy's, for np.dot) runs on one thread: then rows may be shared
    out over numba's threads without each one's products also asking for every core."""
    from threadpoolctl import ThreadpoolController

    blas = [lib.num_threads for lib in ThreadpoolController().lib_controllers
            if lib.user_api == "blas" and "numpy" not in lib.filepath]
    return bool(blas) and max(blas) == 1


def _slot_arrays(model) -> list:
    """The model's arrays in slot order, S and S_next being the learner's current S_{t-1} and other buffer.
    Not its codes and numbers: the pool passes its own to the batch kernels, and a model's are shared by
    every model of its configuration (``table.constant``), so no row may be copied into them."""
    kstep = model._kernel
    slots = {name: a for name, a in kstep.slots.items() if name not in ("net.ints", "net.numbers")}
    if kstep.rtrl:
        slots.update(kstep.sensitivities())
    return nt.fill(slots, nt.SLOTS)


def _address(a: np.ndarray) -> int:
    """a's address: by a compiled call for the kinds the kernels read (a fraction of ``a.ctypes.data``'s cost)."""
    call = _ADDRESS.get(_KINDS.get((a.dtype.char, a.ndim)))
    if call is not None and a.flags.c_contiguous and a.flags.writeable:
        return call(a)
    return a.ctypes.data


_KINDS = {("d", 1): "f1", ("d", 2): "f2", ("d", 3): "f3", ("q", 1): "i1", ("l", 1): "i1"}


def _owners(arrays) -> tuple[list, list]:
    """The distinct arrays owning the slots' memory (in slot order), and each slot's (owner, byte offset)."""
    owners, where, index, at = [], [], {}, []
    for a in arrays:
        if a.size == 0:
            where.append((-1, 0))
            continue
        o = owner(a)
        i = index.setdefault(id(o), len(owners))
        if i == len(owners):
            if not o.flags.c_contiguous:
                raise ValueError("a kernel array's owner is not contiguous")
            owners.append(o)
            at.append(_address(o))
        where.append((i, (_address(a) if a is not o else at[i]) - at[i]))
    return owners, where


def row_layout(arrays, kinds) -> tuple:
    """(dims, each slot's (owner, byte offset in it), owners' sizes, owners' byte offsets in a row, row bytes):
    the slot arrays' owners laid end to end, each on a cache line."""
    dims = ArrayTable(arrays, kinds).dims
    owners, where = _owners(arrays)
    sizes = [o.nbytes for o in owners]
    offsets, row = [], 0
    for size in sizes:
        offsets.append(row)
        row += size + (-size % _ALIGN)
    return dims, where, sizes, offsets, row


class Pool:
    def __init__(self, models, config: dict, parallel: bool):
        first = models[0]
        self.config = config
        self.parallel = parallel and len(models) > 1
        arrays = _slot_arrays(first)
        self.dims, self._where, self._sizes, self._offsets, row = row_layout(arrays, [kind for _, kind in nt.SLOTS])
        self.row = row
        self.size = B = len(models)
        self.data = np.zeros((B, max(row, _ALIGN) // 8), dtype=np.float64)  # 8-byte words, 64-byte aligned rows
        self.bytes = self.data.view(np.uint8)
        kstep = first._kernel
        self.rtrl = kstep.rtrl
        self.ints, self.numbers = kstep.ints.copy(), kstep.numbers.copy()
        self._lr, self._scheduled = kstep.lr, kstep.scheduled
        self._s_owner = self._where[nt.SENS][0] if self.rtrl else -1
        self._n_owner = self._where[nt.SENS_NEXT][0] if self.rtrl else -1
        self.parity = False  # RTRL: whether S_{t-1} is in the row's region of the model's S_next owner
        self.counters = np.zeros((B, 4), dtype=np.int64)  # steps, updates, skipped, clipped
        self.last_loss = np.full(B, np.nan)
        self.grad_norm = np.zeros(B)
        self.grad_norm_clipped = np.zeros(B)
        self.h_sq_norm = np.zeros(B)
        self._rng = [None] * B
        self._seeds = [0] * B
        self._ptr = np.zeros(len(nt.SLOTS), dtype=np.int64)
        self._aim()
        word = lambda slot: (self._offsets[self._where[slot][0]] + self._where[slot][1]) // 8  # noqa: E731
        self._out = self.data[:, word(nt.OUT): word(nt.OUT) + 6]
        self._o = self.data[:, word(nt.O_): word(nt.O_) + first.network.n_outputs]
        self._count = self.data.view(np.int64)[:, word(nt.COUNT)]
        for b, m in enumerate(models):
            self.put(b, m)

    # ----- layout ---------------------------------------------------------------
    def _region(self, owner: int, parity: bool | None = None) -> int:
        """Byte offset in a row of the model's owner array number ``owner`` (RTRL's two buffers by parity)."""
        parity = self.parity if parity is None else parity
        if parity and owner in (self._s_owner, self._n_owner):
            owner = self._n_owner if owner == self._s_owner else self._s_owner
        return self._offsets[owner]

    def _aim(self) -> None:
        """Every slot's address in row 0."""
        at = self.data.ctypes.data
        self.base = np.array([at + (self._region(i) + off if i >= 0 else 0) for i, off in self._where],
                             dtype=np.int64)

    def put(self, b: int, model) -> None:
        """Row b becomes the model's state (its arrays byte for byte, its counters and numbers)."""
        owners, where = _owners(_slot_arrays(model))
        if where != self._where or [o.nbytes for o in owners] != self._sizes:
            raise ValueError("the model's arrays are laid out differently from the batch's")
        row = self.bytes[b]
        for i, o in enumerate(owners):
            at = self._region(i)
            row[at: at + o.nbytes] = o.reshape(-1).view(np.uint8)
        self.counters[b] = [model.counters[name] for name in COUNTERS]
        self.last_loss[b] = np.nan if model.last_loss is None else model.last_loss
        self.grad_norm[b], self.grad_norm_clipped[b] = model.grad_norm, model.grad_norm_clipped
        self.h_sq_norm[b] = model.network.stack.h_sq_norms[0]
        self._rng[b] = model.rng_state
        self._seeds[b] = model.seed

    def model(self, b: int, parity: bool | None = None):
        """A new model in row b's state (read with RTRL's ``parity``, by default the pool's)."""
        from ..model import OnlineRNN

        model = OnlineRNN.from_config(self.config, seed=self._seeds[b], kernels=True)
        owners, _ = _owners(_slot_arrays(model))
        row = self.bytes[b]
        for i, o in enumerate(owners):
            at = self._region(i, parity)
            o.reshape(-1).view(np.uint8)[...] = row[at: at + o.nbytes]
        for layer in model.network.stack.layers:
            layer.refresh()
        model.counters = dict(zip(COUNTERS, self.counters[b].tolist()))
        loss = float(self.last_loss[b])
        model.last_loss = None if loss != loss else loss
        model.grad_norm, model.grad_norm_clipped = float(self.grad_norm[b]), float(self.grad_norm_clipped[b])
        model.network.stack.h_sq_norms = [float(self.h_sq_norm[b])]
        model.rng_state = self._rng[b]
        return model

    # ----- steps ------------------------------------------------------------------
    def _rates(self) -> np.ndarray:
        if not self._scheduled:
            return np.full(self.size, self._lr)
        counts = self._count + 1
        return np.array([self._lr(int(c)) for c in counts.tolist()])

    def step(self, X, Y, has):
        from ..batch import BatchStep

        if self.parallel:
            bs.step_rows_parallel(self.base, self.row, self.dims, self.ints, self.numbers, X, Y, has, self._rates())
        else:
            bs.step_rows(self.base, self.row, self.dims, self.ints, self.numbers, X, Y, has, self._rates(), self._ptr)
        # first what the rows' next step needs to be right, before anything that may raise
        before = self.parity
        if self.rtrl:  # S_t is in the rows' other buffer now (a row the kernel declined is written below)
            self.parity = not self.parity
            self._aim()
        out = self._out
        status = out[:, 0].astype(np.int64)
        predictions, losses = self._o.copy(), np.where(has, out[:, 1], np.nan)
        stepped = status != FALLBACK
        c = self.counters
        c[:, 0] += stepped
        updated = status == UPDATED
        c[:, 1] += updated
        c[:, 2] += status == NONFINITE
        c[:, 3] += updated & (out[:, 5] != 0.0)
        self.grad_norm[updated] = out[updated, 2]
        self.grad_norm_clipped[updated] = out[updated, 3]
        self.h_sq_norm[stepped] = out[stepped, 4]
        self.last_loss[stepped] = losses[stepped]
        for b in np.flatnonzero(status == NONFINITE):  # as the model's step: traces holding non-finite values restart
            self._restart_if_nonfinite(int(b))
        # the rows the kernel left to numpy (a non-finite state or loss; it changed nothing there), each
        # stepped as its model would be, from the state it had (read with the parity before the step)
        for b in np.flatnonzero(status == FALLBACK).tolist():
            model = self.model(b, before)
            result = model.step(X[b], Y[b] if has[b] else None)
            self.put(b, model)
            predictions[b] = result.prediction
            losses[b] = np.nan if result.loss is None else result.loss
        return BatchStep(predictions, losses)

    def _restart_if_nonfinite(self, b: int) -> None:
        model = self.model(b)
        if not all(np.isfinite(a).all() for a in model.learner.state_arrays().values()):
            model.learner.reset()
            self.put(b, model)

    def predict(self, X) -> np.ndarray:
        bs.forward_rows(self.base, self.row, self.dims, self.ints, X, self._ptr)
        return self._o.copy()
