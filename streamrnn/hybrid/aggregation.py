"""Online aggregation of expert forecasts with a regret bound: ML-Poly, one weight vector per horizon.

ML-Poly (Gaillard, Stoltz & van Erven, COLT 2014), with the gradient trick:
at each round the loss of the combination f = sum_k w_k f_k is linearised,
r_k = l'(f; y) (f - f_k), and

    R_k <- R_k + r_k;   S_k <- S_k + r_k^2;   w_k  proportional to  (R_k)_+ / S_k

(while no R_k is positive: uniform, or the ``prior`` weights given).  Every
expert has its own learning rate 1 / S_k, so nothing is tuned and the weights
do not depend on the scale of the series.  The regret against the best *convex combination* of the experts is
O(sqrt(ln K sum_t r_t^2)): the aggregate is asymptotically never worse than the
best expert, and better when experts err differently.  With the absolute loss,
l' = sign(f - y), the bound is on the mean absolute error.

A ``prior`` with a ``margin`` makes a challenger prove itself: the experts with
prior weight 0 count (R_k - margin sqrt(S_k))_+, so they get weight only once
their cumulative gain exceeds ``margin`` times its own noise (R_k / sqrt(S_k)
is a t-statistic).  The forecaster uses it for its network's correction, which
must beat the plain combination before it is used.

Experts may sleep (a component still warming up): a sleeping expert gets no
weight and its regret does not move (the "sleeping experts" setting of the same
paper).  The forecaster keeps one aggregation per horizon step h, fed with the
forecasts made h steps before each value: a component may be the best at one
step ahead and another a season ahead.
"""

from __future__ import annotations

import numpy as np

from .stateful import Stateful


class MLPoly(Stateful):
    """ML-Poly weights for K experts at each of H horizon steps.

    >>> import numpy as np
    >>> agg = MLPoly(experts=2, horizon=1)
    >>> awake = np.array([True, True])
    >>> for y in np.linspace(0.0, 1.0, 50):
    ...     agg.update(0, np.array([y + 0.1, y + 1.0]), awake, y)
    >>> np.round(agg.weights(0, awake), 2).tolist()
    [1.0, 0.0]
    """

    _state = ("R", "S")
    _growable = _state

    def __init__(self, experts: int, horizon: int = 1, prior=None, margin: float = 0.0):
        self.R = np.zeros((horizon, experts))
        self.S = np.zeros((horizon, experts))
        self.prior = None if prior is None else np.asarray(prior, dtype=float)
        self.margin = margin
        self._cache: dict = {}  # (h, awake bytes) -> weights, dropped when step h learns

    def _loaded(self) -> None:
        self._cache = {}

    def __getstate__(self):
        return {"R": self.R, "S": self.S, "prior": self.prior, "margin": self.margin}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._cache = {}

    def _positive(self, R: np.ndarray, S: np.ndarray) -> np.ndarray:
        """(R_k)_+, or with a margin (R_k - margin sqrt(S_k))_+ for the experts without prior weight:
        such an expert must be better by more than its noise before it gets weight."""
        if self.margin and self.prior is not None:
            R = R - self.margin * np.sqrt(S) * (self.prior == 0.0)
        return np.maximum(R, 0.0)  # a new array: callers may write to it

    def _fallback(self, awake: np.ndarray) -> np.ndarray:
        """The weights while no awake expert has a positive regret."""
        if self.prior is not None:
            w = self.prior * awake
            if w.sum() > 0.0:
                return w / w.sum()
        return awake / max(awake.sum(), 1)

    @property
    def horizon(self) -> int:
        return self.R.shape[0]

    def grow_horizon(self, horizon: int) -> None:
        """Track more horizon steps; a new step starts from uniform weights.

        (Not from a shorter step's: one step ahead favours persistence, which a season ahead does not.)
        """
        if horizon > self.horizon:
            self.add_steps(horizon - self.horizon)

    def add_steps(self, k: int) -> None:
        """k more horizon steps (or outputs), starting from uniform weights."""
        experts = self.R.shape[1]
        self.R = np.vstack([self.R, np.zeros((k, experts))])
        self.S = np.vstack([self.S, np.zeros((k, experts))])
        self._cache = {}

    def _rows(self, R: np.ndarray, S: np.ndarray, awake: np.ndarray) -> np.ndarray:
        """Normalised weights for rows of regrets R, S (n, K) and awake masks (n, K) or (K,)."""
        w = self._positive(R, S)
        w /= np.where(S > 0.0, S, np.inf)
        w *= awake
        total = w.sum(axis=1, keepdims=True)
        if (total > 0.0).all():
            w /= total
            return w
        awake = np.broadcast_to(awake, w.shape)  # some rows have no positive regret yet
        fallback = awake.astype(float) if self.prior is None else self.prior * awake
        empty = fallback.sum(axis=1, keepdims=True) <= 0.0
        fallback = np.where(empty, awake, fallback)
        fallback /= np.maximum(fallback.sum(axis=1, keepdims=True), 1e-300)
        return np.where(total > 0.0, w / np.where(total > 0.0, total, 1.0), fallback)

    def table(self, awake: np.ndarray) -> np.ndarray:
        """The weights of every tracked step (H, K) for one awake mask; cached until the next update."""
        key = awake.tobytes()
        w = self._cache.get(key)
        if w is None:
            w = self._cache[key] = self._rows(self.R, self.S, awake)
        return w

    def weights(self, h: int, awake: np.ndarray) -> np.ndarray:
        """The weights at horizon step h (0-based; beyond the tracked ones, the last), summing to 1."""
        return self.table(awake)[min(h, self.horizon - 1)]

    def update(self, h: int, forecasts: np.ndarray, awake: np.ndarray, y: float) -> None:
        """Learn from the value y that the experts forecast h + 1 steps before (absolute loss)."""
        if h >= self.horizon or not awake.any():
            return
        w = self.weights(h, awake)
        combined = float(w @ np.where(awake, forecasts, 0.0))
        self.learn(h, np.sign(combined - y) * (combined - forecasts) * awake)

    def update_steps(self, forecasts: np.ndarray, awake: np.ndarray, y: float) -> None:
        """``update`` for steps 0 .. n-1 at once: row h of ``forecasts`` (n, K) was made h + 1 steps ago."""
        n = min(len(forecasts), self.horizon)
        if n == 0:
            return
        if n == 1:  # one step: the weights are most likely cached from the forecast
            self.update(0, forecasts[0], awake[0], y)
            return
        F, awake = forecasts[:n], awake[:n]
        w = self._rows(self.R[:n], self.S[:n], awake)
        combined = (w * np.where(awake, F, 0.0)).sum(axis=1, keepdims=True)
        r = np.sign(combined - y) * (combined - F) * awake
        r[~awake.any(axis=1)] = 0.0
        if np.isfinite(r).all():
            self.R[:n] += r
            self.S[:n] += r * r
            self._cache = {}

    def learn(self, h: int, regret: np.ndarray) -> None:
        """Add one round's (linearised) instantaneous regrets r_k at horizon step h (0 for sleeping experts)."""
        if np.isfinite(regret).all():
            self.R[h] += regret
            self.S[h] += regret * regret
            self._cache = {}
