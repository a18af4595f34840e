"""Many supervised streams' hybrid regressors as rows of one pool, their events stepped by row in one call.

A stream here is what the daemon keeps for a supervised key with one output:
a ``FeatureSpace`` of numbers and the ``HybridRegressor`` reading it.  A row
lays out every array of the model's compiled step and of the space (the
owners of ``regressor_rows.ROW_SLOTS``, each on a cache line, as
``pool.Pool`` lays out a network's), so a stream is one contiguous block and
its table is its row's address plus ``offsets``: no Python object per
stream, and a new stream is a copy of the template's row.  The slots a step
writes before it reads them, or never reads (``regressor_rows.SCRATCH_SLOTS``:
BPTT's gradient and backward errors, the last update's gradient; a quarter
of a 16-unit model), are not in the rows but in one scratch buffer per call.
Rows come in chunks that never move, each
zeroed with its pages in memory before a row is written (``chunks``: from
the second on, a thread faults the next one in ahead).  The numbers a model
keeps in Python travel in the row too: the parts' in its ``sc``, its
network's counters, norms and last loss in its ``book``
(``regressor_rows.BOOK``).

``learn(rows, U, Y)`` steps one event of each of the given (distinct) rows
by exactly the code a single model's compiled call runs: a row's result is
bit for bit what its objects give on the kernel path, whichever rows share
the call.  An event the kernel leaves to numpy (a non-finite state, or a
network step it declines) is run on the row's objects, made for it and
written back (``get``/``put``).  Only BPTT(h; h') correctors (or none) are
pooled: exact RTRL swaps its sensitivity buffers every step.

    pool = RegressorPool(lambda: HybridRegressor(4, layers=(Elman(16),), learner=TruncatedBPTT(10)), 4)
    r = pool.add()                           # a new stream: the template's state
    pool.learn([r], U, Y)                    # U (k, 4) raw features (FeatureSpace.raw); Y (k,), NaN: none
    space, model = pool.get(r)               # stream r as objects of its own (a copy)
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..estimators.features import FeatureSpace
from ..hybrid.scale import MAX_ABS
from ..model import COUNTERS
from . import hybrid_step as k
from .chunks import Ahead
from . import network_table as nt
from . import regressor_rows as rr
from .pool import _ALIGN, _owners, row_layout, single_threaded_blas

#: slots every model of one configuration shares (``table.constant``): copied into rows, never out of them
_CONSTANT_SLOTS = {i for i, (name, _) in enumerate(rr.ROW_SLOTS)
                   if name in ("cst", "ints", "numbers", "net.ints", "net.numbers")}


#: a chunk of rows, in small pages (never asked to be a huge page, as numpy asks for arrays over 4 MiB): a
#: first write to a 2 MiB page (a new row) stalled for milliseconds while the kernel assembled it, and
#: after a fork (the checkpoint child) a first write to one copies all of it
CHUNK_BYTES = 2 << 20


class RegressorPool:
    def __init__(self, new_model: Callable, n_features: int, chunk: int | None = None, parallel: bool | None = None):
        """``new_model()`` makes a fresh ``HybridRegressor`` of the pool's configuration (every stream's); the
        rows are allocated ``chunk`` at a time (growing copies nothing, and no row ever moves), by default as
        many as fit in ``CHUNK_BYTES``."""
        self._new = new_model
        self.n = int(n_features)
        space, model = self._fresh()
        binding = self._binding(model, space)
        arrays = self._arrays(binding, space, model)
        self.dims, self._where, self._sizes, _, _ = row_layout(arrays, [kind for _, kind in rr.ROW_SLOTS])
        self._lay_out()
        self._constants = {self._where[i][0] for i in _CONSTANT_SLOTS if self._where[i][0] >= 0}
        net = binding.net
        self.has_network = net is not None
        self._lr, self._scheduled = (net.lr, net.scheduled) if net is not None else (0.0, False)
        self._lr_all = np.zeros(0)  # ``_lr_of``'s
        self.parallel = single_threaded_blas() if parallel is None else bool(parallel)
        self._scaled = np.ones(self.n, dtype=bool)
        self.errors: dict[int, str] = {}  # the events of the newest ``learn`` a stream refused: index -> why
        self.size = 0
        self.chunk = max(int(chunk), 1) if chunk is not None else max(CHUNK_BYTES // self.row, 1)
        self._memory = Ahead(self.chunk * self.row)  # chunks of zeros, the next one faulted in off the event loop
        self._chunks: list[np.ndarray] = []  # (chunk, row / 8) float64 each: 64-byte aligned rows of words
        self._starts = np.zeros(0, dtype=np.int64)  # each chunk's address
        self._used = np.zeros(0, dtype=bool)
        self._free: list[int] = []  # rows not in use, the lowest last
        self._rng: list = []  # per row: its network's generator state and seed (read only when it is made)
        self._seeds: list = []
        self._viewed = None  # the pair ``view`` loads rows into
        self._spare = None  # the pair ``add_loaded`` loads states into
        self._template = np.zeros(self.row, dtype=np.uint8)  # a new stream's row
        self._copy_in(self._template, self._owners_of(arrays))
        self._template_rng = model.corrector.rnn.rng_state if net is not None else None
        self._template_seed = model.corrector.rnn.seed if net is not None else 0
        self._word = {name: self.offsets[slot] // 8 for name, slot in
                      (("sc", k.SC_), ("book", rr.BOOK_), ("count", k.NET + nt.COUNT))}
        # the single event's arrays (``learn_one``), made once
        self._one = (np.zeros(1, dtype=np.int64), np.zeros((1, self.n)), np.zeros(1), np.zeros(1, dtype=bool),
                     np.zeros(1), np.zeros(1), np.zeros((1, 2)))

    # ----- layout -------------------------------------------------------------------
    def _fresh(self, names=None) -> tuple[FeatureSpace, object]:
        """A new pair; the space's columns are ``names`` (x0, x1, ... by default), in that order."""
        names = [f"x{i}" for i in range(self.n)] if names is None else list(names)
        if len(names) != self.n or len(set(names)) != self.n:
            raise ValueError(f"a row's space has {self.n} distinct feature names, got {names!r}")
        space = FeatureSpace()
        space.add(names)
        return space, self._new()

    @staticmethod
    def _binding(model, space):
        """The model's compiled binding, or ValueError naming why the pair cannot be a row."""
        if space.clock_name is not None or not space.scaled.all():
            raise ValueError("only a feature space of numbers can be pooled (no calendar columns)")
        binding = model._compiled()
        if binding is None:
            raise ValueError("the model has no compiled step (kernels off, or a corrector they do not cover)")
        if binding.net is not None and binding.net.rtrl:
            raise ValueError("a corrector learning by exact RTRL cannot be pooled (only BPTT(h; h'))")
        return binding

    @staticmethod
    def _arrays(binding, space, model) -> list:
        """The pair's arrays in ``ROW_SLOTS`` order: the space's flags and the network's book are made here,
        from their Python numbers."""
        flags = np.array([1.0 if space.has_last else 0.0])
        book = np.zeros(len(rr.BOOK))
        if binding.net is not None:
            rnn = model.corrector.rnn
            loss = rnn.last_loss
            book[:] = (*(rnn.counters[name] for name in COUNTERS), 0.0 if loss is None else loss, loss is not None,
                       rnn.grad_norm, rnn.grad_norm_clipped, rnn.network.stack.h_sq_norms[0])
        m = space.moments
        return list(binding.table.arrays) + [m.count, m.mean, m.m2, space.last, flags, book]

    def _lay_out(self) -> None:
        """Where each owner lives: in the row (``_offsets``: its byte offset there), or, for an owner of only
        ``regressor_rows.SCRATCH_SLOTS``, in the one scratch buffer of a call (``scratch_at``); and the row's bytes."""
        owners = range(len(self._sizes))
        scratch = {o for i, (o, _) in enumerate(self._where) if i in rr.SCRATCH_SLOTS and o >= 0}
        scratch -= {o for i, (o, _) in enumerate(self._where) if i not in rr.SCRATCH_SLOTS}  # shared: in the row
        self._offsets, ends = [0] * len(self._sizes), [0, 0]
        for o in owners:
            place = o in scratch
            self._offsets[o] = ends[place]
            ends[place] += self._sizes[o] + (-self._sizes[o] % _ALIGN)
        self.row, self._scratch_bytes = max(ends[0], _ALIGN), max(ends[1], _ALIGN)
        self._scratch = None  # (address, events it has room for, the buffer): ``_scratch_for``
        self._in_row = [o for o in owners if o not in scratch]
        self.offsets = np.array([self._offsets[o] + off if o >= 0 and o not in scratch else 0
                                 for o, off in self._where], dtype=np.int64)
        self.scratch_at = np.array([self._offsets[o] + off if o in scratch else -1 for o, off in self._where],
                                   dtype=np.int64)

    def _scratch_for(self, events: int) -> int:
        """The address of a scratch buffer with room for ``events`` events' scratch slots (kept, and grown)."""
        if self._scratch is None or self._scratch[1] < events:
            room = max(events, 1 if self._scratch is None else 2 * self._scratch[1])
            buffer = np.zeros(room * self._scratch_bytes // 8)
            self._scratch = (buffer.ctypes.data, room, buffer)
        return self._scratch[0]

    def _owners_of(self, arrays) -> list:
        owners, where = _owners(arrays)
        if where != self._where or [o.nbytes for o in owners] != self._sizes:
            raise ValueError("the model's arrays are laid out differently from the pool's "
                             f"(a model of another configuration, or not {self.n} features)")
        return owners

    def _copy_in(self, row: np.ndarray, owners) -> None:
        for i in self._in_row:
            at, o = self._offsets[i], owners[i]
            row[at: at + o.nbytes] = o.reshape(-1).view(np.uint8)

    def _grow(self) -> None:
        """One more chunk of rows."""
        c, used = self.chunk, len(self._used)
        self._chunks.append(self._memory.take().reshape(c, self.row // 8))
        self._starts = np.array([a.ctypes.data for a in self._chunks], dtype=np.int64)
        self._free = list(range(used + c - 1, used - 1, -1)) + self._free
        self._used = np.concatenate([self._used, np.zeros(c, dtype=bool)])
        self._rng += [None] * c
        self._seeds += [0] * c

    def _words(self, r: int) -> np.ndarray:
        """Row r as float64 words (a view)."""
        return self._chunks[r // self.chunk][r % self.chunk]

    def _addresses(self, rows: np.ndarray) -> np.ndarray:
        return self._starts[rows // self.chunk] + (rows % self.chunk) * self.row

    # ----- rows -------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.size

    @property
    def capacity(self) -> int:
        return len(self._used)

    def add(self, space: FeatureSpace | None = None, model=None) -> int:
        """A new row holding a copy of (space, model), or of a fresh stream: its number."""
        if not self._free:
            self._grow()
        r = self._free[-1]
        if model is None:
            self._words(r).view(np.uint8)[...] = self._template
            self._rng[r], self._seeds[r] = self._template_rng, self._template_seed
        else:
            self._put(r, space, model)
        self._free.pop()
        self._used[r] = True
        self.size += 1
        return r

    def add_loaded(self, load: Callable) -> int:
        """A new row holding the state ``load(space, model)`` gives a pair of objects the pool keeps for it (a
        checkpoint is read back without new objects per stream); if ``load`` raises, nothing is added."""
        if self._spare is None:
            self._spare = self._fresh()
        space, model = self._spare
        load(space, model)
        return self.add(space, model)

    def remove(self, r: int) -> None:
        self._check_row(r)
        self._used[r] = False
        self._free.append(r)
        self.size -= 1

    def put(self, r: int, space: FeatureSpace, model) -> None:
        """Row r becomes (space, model)'s state, byte for byte."""
        self._check_row(r)
        self._put(r, space, model)

    def _put(self, r: int, space, model) -> None:
        if space.width != self.n or model.n != self.n:
            raise ValueError(f"the pool's streams have {self.n} features, not {space.width}")
        binding = self._binding(model, space)
        binding.desync()
        binding._pack(model)  # the model's Python numbers into its sc
        self._copy_in(self._words(r).view(np.uint8), self._owners_of(self._arrays(binding, space, model)))
        if self.has_network:
            rnn = model.corrector.rnn
            self._rng[r], self._seeds[r] = rnn.rng_state, rnn.seed

    def get(self, r: int, names=None) -> tuple[FeatureSpace, object]:
        """Row r as (space, model) of their own, as they stand now (copies: the pool does not see their changes).
        The space's columns are named ``names`` (the stream's features, in column order; x0, x1, ... by
        default), so that it reads an event's dict as the stream's own space does."""
        self._check_row(r)
        return self._load(r, self._bound(*self._fresh(names)))

    def view(self, r: int) -> tuple[FeatureSpace, object]:
        """Row r as (space, model) to read, not to change: the pool's one such pair, loaded again by the next
        ``view`` (tens of µs, where ``get`` makes new objects; a snapshot of it must copy its arrays)."""
        self._check_row(r)
        if self._viewed is None:
            self._viewed = self._bound(*self._fresh())
        return self._load(r, self._viewed)

    def _bound(self, space, model) -> tuple:
        """(space, model, binding, arrays, where each owner but the constants is filled from: (bytes, at))."""
        binding = self._binding(model, space)
        arrays = self._arrays(binding, space, model)
        owners = self._owners_of(arrays)
        fill = [(owners[i].reshape(-1).view(np.uint8), self._offsets[i]) for i in self._in_row if i not in self._constants]
        return space, model, binding, arrays, fill

    def _load(self, r: int, bound: tuple) -> tuple[FeatureSpace, object]:
        """The bound (space, model) made row r's state."""
        space, model, binding, arrays, fill = bound
        row = self._words(r).view(np.uint8)
        for dest, at in fill:
            dest[...] = row[at: at + dest.shape[0]]
        binding.unpack(model)
        space.has_last = bool(arrays[rr.SP_FLAGS][0])
        space.moments._stale = True
        if self.has_network:
            rnn = model.corrector.rnn
            binding.layer.refresh()
            book = dict(zip(rr.BOOK, arrays[rr.BOOK_].tolist()))
            rnn.counters = {name: int(book[name]) for name in COUNTERS}
            rnn.last_loss = book["last_loss"] if book["has_loss"] else None
            rnn.grad_norm, rnn.grad_norm_clipped = book["grad_norm"], book["grad_norm_clipped"]
            rnn.network.stack.h_sq_norms = [book["h_sq"]]
            rnn.seed, rnn.rng_state = self._seeds[r], self._rng[r]
        return space, model

    def counters_of(self, r: int) -> dict[str, int]:
        """Row r's network counters (``OnlineRNN.counters``) and ``bounded``: targets bounded before learning."""
        words, book = self._words(r), self._word["book"]
        out = {name: int(words[book + i]) for i, name in enumerate(COUNTERS)}
        out["bounded"] = int(words[self._word["sc"] + k.BOUNDED])
        return out

    def _check_row(self, r: int) -> None:
        if not (0 <= r < self.capacity and self._used[r]):
            raise IndexError(f"row {r} is not a stream of this pool")

    # ----- events -------------------------------------------------------------------
    def _lr_of(self, events: int) -> np.ndarray:
        """The unscheduled rate for ``events`` events: an array the calls share, grown as needed (read only)."""
        if self._lr_all.shape[0] < events:
            self._lr_all = np.full(max(events, 2 * self._lr_all.shape[0]), float(self._lr))
        return self._lr_all[:events]

    def _rate(self, r: int) -> float:
        if not self._scheduled:
            return self._lr
        return self._lr(int(self._words(r).view(np.int64)[self._word["count"]]) + 1)

    def _events(self, rows, U, Y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, U, Y) checked: ValueError naming what is wrong, before anything changes."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        listed = rows.tolist()
        if rows.size and (min(listed) < 0 or max(listed) >= self.capacity or not self._used[rows].all()):
            for r in listed:  # name the first row that is not a stream
                self._check_row(r)
        if len(set(listed)) != len(listed):
            raise ValueError("a row appears twice in one call: a stream takes one event per call")
        try:
            U = np.ascontiguousarray(U, dtype=np.float64)
            Y = np.ascontiguousarray(Y, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise ValueError("U and Y must be arrays of numbers") from None
        if U.shape != (len(rows), self.n) or Y.shape != (len(rows),):
            raise ValueError(f"U must have shape ({len(rows)}, {self.n}) and Y ({len(rows)},), "
                             f"got {U.shape} and {Y.shape}")
        bad = ~(np.abs(U) <= MAX_ABS).all(axis=1)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"U row {i} must be raw features, finite and within +-{MAX_ABS:g}: {U[i].tolist()}")
        if np.isinf(Y).any():
            raise ValueError(f"Y[{int(np.argmax(np.isinf(Y)))}] is infinite (NaN means no target)")
        return rows, U, Y

    def learn(self, rows, U, Y) -> np.ndarray:
        """One event for each of ``rows`` (distinct): raw features U[i] (``FeatureSpace.raw``) and target Y[i]
        (NaN: none, a prediction only).  Returns the predictions, each made before its stream learned, as
        the daemon's supervised key predicts and learns.  An event a stream's objects refuse (a state
        holding non-finite values) leaves that stream as it was: NaN, and why in ``errors[i]``."""
        return self.learn_checked(*self._events(rows, U, Y))

    def learn_checked(self, rows: np.ndarray, U: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """``learn`` for a caller that has made sure of everything ``learn`` checks, which is not checked
        again: rows an int64 array of distinct rows holding streams, U a C-contiguous float64 array of
        (len(rows), n) raw features, each finite and within +-MAX_ABS, Y float64, each finite or NaN.  The
        daemon's worker forms its batches of such events only, and the checks cost more than the rest of
        the call (about 30 us of a batch of 64's 55 us, outside the compiled step)."""
        has = Y == Y  # not NaN
        lr = self._lr_of(len(rows)) if not self._scheduled else np.array([self._rate(r) for r in rows.tolist()])
        out, res = np.empty(len(rows)), np.empty((len(rows), 2))
        if self.parallel and len(rows) > 1:
            rr.events_parallel(self._addresses(rows), self.offsets, self.scratch_at, self._scratch_for(len(rows)),
                               self._scratch_bytes, self.dims, U, np.where(has, Y, 0.0), has, lr, self._scaled, out, res)
        else:
            rr.events(self._addresses(rows), self.row, self.offsets, self.scratch_at, self._scratch_for(1), self.dims, U,
                      np.where(has, Y, 0.0), has, lr, self._scaled, out, res)
        self.errors = {}
        if res[:, 0].any():
            for i in np.flatnonzero(res[:, 0]).tolist():
                self._left_to_python(i, int(rows[i]), res[i], U[i], Y[i] if has[i] else None, out)
        return out

    def learn_one(self, r: int, u, y: float | None) -> float:
        """``learn`` of one event (u: the raw features, y: a finite target or None), for a caller that checked
        u's numbers itself (finite, within +-MAX_ABS: the daemon's ``pooled.plain``); the stream's
        refusal, if any, in ``errors[0]``."""
        self._check_row(r)
        if len(u) != self.n:
            raise ValueError(f"u must have {self.n} values, got {len(u)}")
        address, U, Y, has, lr, out, res = self._one
        address[0] = int(self._starts[r // self.chunk]) + (r % self.chunk) * self.row  # ``_addresses``, in ints
        U[0] = u
        has[0] = y is not None
        Y[0] = y if y is not None else 0.0
        lr[0] = self._rate(r)
        rr.events(address, self.row, self.offsets, self.scratch_at, self._scratch_for(1), self.dims, U, Y, has, lr, self._scaled,
                  out, res)
        self.errors = {}
        if res[0, 0]:
            self._left_to_python(0, r, res[0], U[0].copy(), y, out)
        return float(out[0])

    def _left_to_python(self, i: int, r: int, res, u: np.ndarray, y: float | None, out: np.ndarray) -> None:
        """What the kernel left of event i (of row r) to numpy, on the row's objects, written back."""
        what = int(res[0])
        space, model = self.get(r)
        if what == rr.REFUSED:
            try:
                z, dx = space.scale(u)
                out[i] = model.predict(z, dx) if y is None else model.predict_learn(z, dx, y)
                space.learn({}, u.copy())
            except ValueError as err:  # a state that cannot take it (non-finite): the stream does not move
                out[i] = np.nan
                self.errors[i] = str(err)
                return
        elif what == rr.NET_NUMPY:
            model.corrector.rnn.step(model.corrector.pending, np.array([res[1]]))
        else:  # NET_NONFINITE: as OnlineRNN does, traces holding non-finite values restart
            learner = model.corrector.rnn.learner
            if all(np.isfinite(a).all() for a in learner.state_arrays().values()):
                return
            learner.reset()
        self._put(r, space, model)

