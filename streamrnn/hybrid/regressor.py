"""HybridRegressor: a numeric target from features, on every event -- the forecaster's scheme for regression.

Level-1 components, each predicting y_t from the event's standardised
features z_t and the targets seen before:

* ``last`` -- the previous target (many regression streams are autocorrelated);
* ``mean`` -- the running mean of the targets;
* ``linear`` -- y_t on [1, z_t] (in the target's standardised units), by RLS;
* ``linear_change`` -- the change y_t - y_{t-1}, in units of the typical change,
  on [1, z_t, z_t - z_{t-1}, standardised y_{t-1}], by RLS: zero weights are
  persistence, and the features' changes often say where the target moves.

They are aggregated by ML-Poly; an ``RNNCorrector`` reads the components'
disagreement, its own previous error and z_t, and proposes a correction; a
second ML-Poly decides how much of it to use (``forecaster`` explains why).
``predict`` is pure; ``learn`` learns from the event and its target.  A target
far outside the range of those seen is bounded first, as the forecaster bounds
its values (``forecaster`` module), and counted in ``bounded``.
"""

from __future__ import annotations

import math

import numpy as np

from .aggregation import MLPoly
from .corrector import RNNCorrector
from .forecaster import DEFAULT_LEARNER, DEFAULT_OPTIMIZER
from .rls import RLS
from .scale import CLIP, MAX_ABS, RobustScale, RunningMoments, bound, clamp, limits
from .stateful import Stateful

NAMES = ("last", "mean", "linear", "linear_change")


class HybridRegressor(Stateful):
    """One numeric target from a growing vector of standardised features.

    >>> import numpy as np
    >>> model = HybridRegressor(2, layers=None)
    >>> rng = np.random.default_rng(0)
    >>> dx = np.zeros(2)
    >>> for _ in range(300):
    ...     z = rng.normal(size=2)
    ...     model.learn(z, dx, 3.0 + 2.0 * z[0] - z[1])
    >>> abs(model.predict(np.array([1.0, 1.0]), dx) - 4.0) < 0.2  # y = 3 + 2 z_0 - z_1
    True
    >>> model.weights()["linear"] > 0.5
    True
    """

    _state = ("seen", "last", "lo", "hi", "bounded")
    _parts = ("targets", "changes", "feature_changes", "linear", "linear_change", "level1", "level2", "corrector")

    def __init__(self, n_features: int, layers=None, learner=None, optimizer=None, clip_norm: float | None = 1.0,
                 seed: int = 0, lam: float = 0.999, delta: float = 1.0, huber: float | None = 2.0,
                 kernels: bool | None = None, scratch=None):
        self.n = int(n_features)
        self.kernels = kernels  # False: numpy only (the network too); None: as STREAMRNN_KERNELS says
        self.seen = False
        self.last = 0.0
        self.lo = self.hi = 0.0  # range of the targets seen
        self._last_pass = None  # (key, results) of the newest predict, reused by learn on the same event
        self.bounded = 0  # targets bounded before learning (far outside everything seen)
        self.targets = RunningMoments(1)
        self.changes = RobustScale()
        self.feature_changes = RunningMoments(self.n)  # of z_t - z_{t-1}: changes are read on their own scale
        self.linear = RLS(1 + self.n, lam, delta, huber)
        self.linear_change = RLS(2 + 2 * self.n, lam, delta, huber)
        self.level1 = MLPoly(len(NAMES))
        self.level2 = MLPoly(2, prior=(1.0, 0.0), margin=2.0)  # the correction must prove itself
        self.corrector = None
        self._kernel = False  # the compiled step (``streamrnn.kernels.regressor``): False = not bound yet
        if layers is not None:
            self.corrector = RNNCorrector(
                len(NAMES), self.n, 1, tuple(layers), learner if learner is not None else DEFAULT_LEARNER,
                optimizer if optimizer is not None else DEFAULT_OPTIMIZER, clip_norm, seed, kernels=kernels,
                scratch=scratch,
            )

    # the cached pass of the newest predict and the compiled step's binding are not state
    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_last_pass", "_kernel")}

    def __setstate__(self, state):
        self.__dict__.update({"kernels": None, **state}, _last_pass=None, _kernel=False)

    def _compiled(self):
        """The compiled step bound to this model's arrays, or None where it runs on numpy."""
        kernel = self._kernel
        if kernel is False:
            from ..kernels.regressor import RegressorKernel

            kernel = self._kernel = None if self.kernels is False else RegressorKernel.for_model(self)
        return kernel

    def _loaded(self) -> None:
        self._last_pass = None
        self._kernel = False  # the parts' arrays were replaced

    def _plan(self, arrays):
        # the parts' arrays may be longer than at construction (they grow with the features), but they
        # must fit this model's width: a state saved for another one is refused, and nothing changes
        n = self.n
        for name, width in (("feature_changes.mean", n), ("linear.w", 1 + n), ("linear_change.w", 2 + 2 * n)):
            if name in arrays and np.shape(arrays[name])[-1:] != (width,):
                from ..state import StateError

                raise StateError(f"state array {name!r} has shape {np.shape(arrays[name])}, "
                                 f"not the {width} columns of a model of {n} features")
        return super()._plan(arrays)

    def grow_features(self, k: int) -> None:
        if k <= 0:
            return
        self._last_pass = None
        self._kernel = False
        n = self.n
        self.linear.insert(1 + n, k)
        self.linear_change.insert(1 + 2 * n, k)  # the new changes, after the old ones
        self.linear_change.insert(1 + n, k)  # the new values, after the old ones
        self.feature_changes.grow(k)
        self.n += k
        if self.corrector is not None:
            self.corrector.grow_features(k)

    # ----- the components -------------------------------------------------------
    def _scales(self) -> tuple[float, float, float]:
        mean = float(self.targets.mean[0])
        std = float(self.targets.std[0])
        return mean, std, max(self.changes.value, 1e-12 * (abs(self.last) + 1.0))

    def _inputs(self, z: np.ndarray, dx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, std, _ = self._scales()
        x1 = np.concatenate([[1.0], z])
        ylag = clamp((self.last - mean) / std, CLIP) if self.seen else 0.0
        x2 = np.concatenate([[1.0], z, self.feature_changes.scale(dx), [ylag]])
        return x1, x2

    def _components(self, z: np.ndarray, dx: np.ndarray):
        """(F, awake, x1, x2): each component's prediction for this event."""
        mean, std, s = self._scales()
        x1, x2 = self._inputs(z, dx)
        count = float(self.targets.count[0])
        F = np.array([
            self.last,
            mean,
            mean + std * float(self.linear.w[0] @ x1),
            self.last + s * float(self.linear_change.w[0] @ x2),
        ])
        awake = np.array([self.seen, count >= 1, count >= 2, self.seen and self.changes.ready])
        if not np.isfinite(F).all():
            awake &= np.isfinite(F)
            F = np.where(np.isfinite(F), F, mean)
        return F, awake, x1, x2

    def _combined(self, z: np.ndarray, dx: np.ndarray, advance: bool):
        key = (z.tobytes(), dx.tobytes())
        cached = self._last_pass
        if cached is not None and cached[0] == key:  # predict's pass, reused by learn on the same event
            out = cached[1]
            if advance and self.corrector is not None and out[6] is not None:
                self.corrector.propose(out[7], z)  # the network's forward pass is cached by the engine
            return out
        out = self._compute(z, dx, advance)
        self._last_pass = None if advance else (key, out)
        return out

    def _compute(self, z: np.ndarray, dx: np.ndarray, advance: bool):
        F, awake, x1, x2 = self._components(z, dx)
        comb = float(self.level1.weights(0, awake) @ F) if awake.any() else 0.0
        corr, hidden, D = 0.0, None, None
        cor = self.corrector
        if cor is not None and awake.any():
            s = cor.scale
            D = bound((F - comb) / s, -CLIP, CLIP) * awake
            if advance:
                hidden = cor.propose(D, z)
            else:  # the network's forward pass without advancing (cached for a following learn)
                u = np.concatenate([D, cor.errors_seen, z])
                cor.rnn.predict(u)
                hidden = cor.rnn.network.stack.output(-1).copy()
            corr = float(cor.corrections(cor.inputs(hidden, D[:, None]))[0])
        return F, awake, x1, x2, comb, corr, hidden, D

    # ----- the public step ---------------------------------------------------------
    def predict(self, z: np.ndarray, dx: np.ndarray) -> float:
        """The prediction for an event with features z and feature changes dx (pure)."""
        if not self.targets.count[0]:
            return 0.0
        kernel = self._compiled()
        if kernel is not None:
            value = kernel.predict(self, z, dx)
            if value is not None:
                return value
        return self._predict_numpy(z, dx)

    def _predict_numpy(self, z: np.ndarray, dx: np.ndarray) -> float:
        *_, comb, corr, _, _ = self._combined(z, dx, advance=False)
        if self.corrector is None:
            return comb
        w = self.level2.weights(0, np.ones(2, dtype=bool))
        return float(w[0] * comb + w[1] * (comb + corr))

    def learn(self, z: np.ndarray, dx: np.ndarray, y: float) -> None:
        """Learn the event (standardised features z, their raw changes dx, target y); y must be finite."""
        if not math.isfinite(y):
            raise ValueError(f"y must be finite, got {y!r}")
        kernel = self._compiled()
        if kernel is not None:
            if kernel.learn(self, z, dx, float(y)) is not None:
                return
            kernel.desync()  # the numpy path moves the numbers the kernel keeps a copy of
        self._learn_numpy(z, dx, y)

    def _learn_numpy(self, z: np.ndarray, dx: np.ndarray, y: float) -> None:
        lo, hi = limits(self.lo, self.hi) if self.seen else (-MAX_ABS, MAX_ABS)
        if not lo <= y <= hi:  # a target far outside everything seen teaches a bounded lesson
            y = min(max(y, lo), hi)
            self.bounded += 1
        self.lo, self.hi = (min(self.lo, y), max(self.hi, y)) if self.seen else (y, y)
        F, awake, x1, x2, comb, corr, hidden, D = self._combined(z, dx, advance=True)
        self._last_pass = None  # the state moves on
        mean, std, s = self._scales()
        if awake.any():
            self.level1.update(0, F, awake, y)
        cor = self.corrector
        if cor is not None and hidden is not None:
            scale = cor.scale
            cor.learn_heads(cor.inputs(hidden, D[:, None]), np.array([(y - comb) / scale]))
            self.level2.update(0, np.array([comb, comb + corr]), np.ones(2, dtype=bool), y)
            cor.observe(y - comb)
        if self.targets.count[0] >= 1:
            self.linear.update(0, x1, clamp((y - mean) / std, CLIP))
        if self.seen:
            change = y - self.last
            if self.changes.ready:  # the first change only starts the scale it is measured in
                self.linear_change.update(0, x2, clamp(change / s, 10 * CLIP))
            self.changes.update(change)
        if self.seen:
            self.feature_changes.update(dx)
        self.targets.update(np.array([y]))
        self.last, self.seen = float(y), True

    def predict_learn(self, z: np.ndarray, dx: np.ndarray, y: float) -> float:
        """``predict(z, dx)``, then ``learn(z, dx, y)``: the prediction made before learning, bit for bit.
        Where the kernels run it is one compiled call, the prediction's pass being the learning's own."""
        if not math.isfinite(y):
            raise ValueError(f"y must be finite, got {y!r}")
        if not self.targets.count[0]:  # nothing learned yet: the prediction is 0
            self.learn(z, dx, y)
            return 0.0
        kernel = self._compiled()
        if kernel is not None:
            value = kernel.learn(self, z, dx, float(y))
            if value is not None:
                return value
            kernel.desync()  # refused (the event is numpy's): not asked again for the same event
        value = self._predict_numpy(z, dx)
        self._learn_numpy(z, dx, y)
        return value

    def weights(self) -> dict[str, float]:
        awake = np.array([self.seen, self.targets.count[0] >= 1, self.targets.count[0] >= 2,
                          self.seen and self.targets.count[0] >= 2])
        out = dict(zip(NAMES, self.level1.weights(0, awake).tolist()))
        if self.corrector is not None:
            out["rnn"] = float(self.level2.weights(0, np.ones(2, dtype=bool))[1])
        return out
