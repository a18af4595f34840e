"""ModelBatch: B independent streams of one architecture, stepped together by one compiled call.

Each stream has its own weights, state, learner and optimiser, as B separate
``OnlineRNN`` models would; they share only the architecture (the models'
``config()``, seeds may differ).  Where the compiled kernels cover the model
(one Elman or Leaky layer, RTRL or BPTT(h; h'), SGD or Adam, no target
feedback; ``streamrnn.kernels``), the streams' arrays live in one byte pool,
a row per stream, and ``step`` runs every row through the single-model
kernel step in one call: stream b's result is bit for bit what its model
stepping alone on the kernel path gives, whichever streams share the batch.
Elsewhere the batch steps its models one by one, on their own paths.

``parallel`` shares the rows out over numba's threads (both cores here).  By
default it does so when the BLAS the kernels call runs on one thread (as the
daemon and the benchmarks set it, and as it is fastest for these small
products): with several BLAS threads each product would already ask for
every core.  The results are the same bit for bit either way.

    batch = ModelBatch([OnlineRNN(1, (Elman(8),), seed=s) for s in range(64)])
    out = batch.step(X, Y)      # X (B, n_inputs); Y (B, outputs), a row of NaN: no target for that stream
    out.predictions, out.losses # (B, outputs) made before learning; (B,) NaN where there was no target
    batch.model(3)              # stream 3 as an OnlineRNN of its own (a copy: save it, inspect it)

The batch takes copies of the models' states: the models given to it do not move.  Bad X or Y
raise ValueError naming the row, and change nothing.
"""

from __future__ import annotations

import copy
from typing import NamedTuple, Sequence

import numpy as np

from .losses import SquaredError
from .model import COUNTERS, OnlineRNN


class BatchStep(NamedTuple):
    """What one ``ModelBatch.step`` gave: each stream's prediction o_t (made before learning) and L_t."""

    predictions: np.ndarray  # (B, outputs)
    losses: np.ndarray  # (B,), NaN for a stream without a target


class ModelBatch:
    def __init__(self, models: Sequence[OnlineRNN], parallel: bool | None = None):
        models = list(models)
        if not models:
            raise ValueError("a ModelBatch needs at least one model")
        for b, m in enumerate(models):
            if not isinstance(m, OnlineRNN):
                raise ValueError(f"model {b} is a {type(m).__name__}, not an OnlineRNN")
        if len({id(m) for m in models}) != len(models):
            raise ValueError("a model appears twice: each stream needs a model of its own")
        config = models[0].config()
        for b, m in enumerate(models[1:], 1):
            if m.config() != config:
                raise ValueError(f"model {b} is configured differently from model 0: "
                                 f"{m.config()!r} against {config!r}")
        self.config = config
        self.n_inputs = models[0].n_inputs
        self.n_outputs = models[0].network.n_outputs
        self._loss = models[0].loss
        self._pool = None
        if all(m._kernel is not None for m in models) and not models[0].target_feedback:
            from .kernels.pool import Pool, single_threaded_blas

            if parallel is None:
                parallel = single_threaded_blas()
            self._pool = Pool(models, config, bool(parallel))
            self._models = None
        else:  # no kernel covers them (or kernels are off): the models step one by one
            self._models = [copy.deepcopy(m) for m in models]

    def __len__(self) -> int:
        return self._pool.size if self._pool is not None else len(self._models)

    @property
    def compiled(self) -> bool:
        """Whether the streams step in one compiled call (else one model at a time)."""
        return self._pool is not None

    # ----- input checks -------------------------------------------------------
    def _inputs(self, X) -> np.ndarray:
        try:
            X = np.ascontiguousarray(X, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"X must be a ({len(self)}, {self.n_inputs}) array of numbers") from None
        if X.shape != (len(self), self.n_inputs):
            raise ValueError(f"X must have shape ({len(self)}, {self.n_inputs}), got {X.shape}")
        bad = ~np.isfinite(X).all(axis=1)
        if bad.any():
            raise ValueError(f"X row {int(np.argmax(bad))} is not finite: {X[np.argmax(bad)].tolist()}")
        return X

    def _targets(self, Y) -> tuple[np.ndarray, np.ndarray]:
        """(Y, which rows have a target); a row of NaN is a stream without a target."""
        B, o = len(self), self.n_outputs
        if Y is None:
            return np.zeros((B, o)), np.zeros(B, dtype=bool)
        try:
            Y = np.array(Y, dtype=np.float64, order="C")
        except (TypeError, ValueError):
            raise ValueError(f"Y must be a ({B}, {o}) array of numbers") from None
        if Y.shape != (B, o):
            raise ValueError(f"Y must have shape ({B}, {o}), got {Y.shape}")
        finite = np.isfinite(Y)
        has = finite.all(axis=1)
        partial = ~has & (finite.any(axis=1) | np.isinf(Y).any(axis=1))
        if partial.any():
            b = int(np.argmax(partial))
            raise ValueError(f"Y row {b} must be all numbers (a target) or all NaN (none), got {Y[b].tolist()}")
        Y[~has] = 0.0
        if type(self._loss) is not SquaredError:
            for b in np.flatnonzero(has):
                try:
                    self._loss.check_target(Y[b], None)
                except ValueError as err:
                    raise ValueError(f"Y row {b}: {err}") from None
        return Y, has

    # ----- the public step ----------------------------------------------------
    def step(self, X, Y=None) -> BatchStep:
        """Every stream's step: predict o_t from X[b], learn from Y[b] when it is a target, advance."""
        X = self._inputs(X)
        Y, has = self._targets(Y)
        if self._pool is not None:
            return self._pool.step(X, Y, has)
        predictions = np.empty((len(self), self.n_outputs))
        losses = np.full(len(self), np.nan)
        for b, m in enumerate(self._models):
            result = m.step(X[b], Y[b] if has[b] else None)
            predictions[b] = result.prediction
            if result.loss is not None:
                losses[b] = result.loss
        return BatchStep(predictions, losses)

    def predict(self, X) -> np.ndarray:
        """Every stream's o_t for X[b] from its current state, without advancing it: (B, outputs)."""
        X = self._inputs(X)
        if self._pool is not None:
            return self._pool.predict(X)
        return np.stack([m.predict(X[b]) for b, m in enumerate(self._models)])

    def model(self, b: int) -> OnlineRNN:
        """Stream b as a model of its own, as it stands now (a copy: the batch does not see its changes)."""
        if not 0 <= b < len(self):
            raise IndexError(f"stream {b} is not in a batch of {len(self)}")
        if self._pool is not None:
            return self._pool.model(b)
        return copy.deepcopy(self._models[b])

    @property
    def counters(self) -> dict[str, np.ndarray]:
        """Each stream's steps, updates, skipped and clipped counts (copies, (B,) int arrays)."""
        if self._pool is not None:
            return {name: self._pool.counters[:, i].copy() for i, name in enumerate(COUNTERS)}
        return {name: np.array([m.counters[name] for m in self._models]) for name in COUNTERS}

