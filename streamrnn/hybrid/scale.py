"""Running scales: the one place where streamrnn standardises what it learns from.

* ``RunningMoments`` -- Welford's running mean and variance per position, for
  inputs whose positions come and go (features), with a per-position count.
* ``RobustScale`` -- the running mean absolute size of a quantity (an error,
  a change), with every new value winsorised at ``WINSOR`` times the current
  scale: one outlier moves it by at most a few percent, and it never becomes
  NaN or infinite whatever finite value arrives.

Standardised values are clipped to +-CLIP: early in a stream the scale is
barely known, and one extreme input must not saturate a network or an RLS
update.
"""

from __future__ import annotations

import numpy as np

from .stateful import Stateful

CLIP = 5.0
WINSOR = 5.0
#: no value or feature beyond +-MAX_ABS is learned from (it is bounded first): squares and sums stay finite
MAX_ABS = 1e100
#: a value beyond GUARD times the range of everything seen, outside that range, is bounded to that limit
GUARD = 10.0


def limits(lo: float, hi: float) -> tuple[float, float]:
    """The interval a new value is bounded to, given the range [lo, hi] of the values seen.

    Until two values differ the scale of the series is unknown and only +-MAX_ABS applies.
    """
    span = hi - lo
    if not span > 0.0:
        return -MAX_ABS, MAX_ABS
    width = GUARD * max(span, 1e-9 * max(abs(lo), abs(hi)))
    return max(lo - width, -MAX_ABS), min(hi + width, MAX_ABS)


def clamp(v: float, limit: float) -> float:
    """A number limited to +-limit (plain Python: numpy's clip costs microseconds on one number)."""
    return limit if v > limit else (-limit if v < -limit else v)


def bound(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """a limited to [lo, hi], in place (cheaper than np.clip on small arrays)."""
    np.minimum(a, hi, out=a)
    return np.maximum(a, lo, out=a)


class RunningMoments(Stateful):
    """Per-position running mean and variance (Welford), growing with the positions.

    Examples
    --------
    >>> import numpy as np
    >>> m = RunningMoments(2)
    >>> for row in ([1.0, 10.0], [3.0, 10.0], [5.0, 10.0]):
    ...     m.update(np.array(row))
    >>> m.mean.tolist(), m.std.tolist()
    ([3.0, 10.0], [1.632993161855452, 1.0])
    """

    _state = ("count", "mean", "m2")
    _growable = _state

    def __init__(self, width: int = 0):
        self.count = np.zeros(width)
        self.mean = np.zeros(width)
        self.m2 = np.zeros(width)
        self._stale = True

    def __len__(self) -> int:
        return len(self.mean)

    def grow(self, k: int) -> None:
        self.count, self.mean, self.m2 = (np.concatenate([a, np.zeros(k)]) for a in (self.count, self.mean, self.m2))
        self._stale = True

    def update(self, v: np.ndarray, present=True) -> None:
        """Learn the values v at the positions where ``present`` is True (a bool array, or True)."""
        if present is True:
            self.count += 1.0
            delta = v - self.mean
            self.mean += delta / self.count
        else:
            self.count += present
            delta = v - self.mean
            delta *= present
            self.mean += delta / np.maximum(self.count, 1.0)
        delta *= v - self.mean
        self.m2 += delta
        self._stale = True

    def _loaded(self) -> None:
        self._stale = True

    def _refresh(self) -> None:
        # std is 1 where fewer than two values differed (m2 = 0); scale() multiplies
        # by _gain, which is 1/std where a value was seen and 0 where none was
        count = np.maximum(self.count, 1.0)
        var = self.m2 / count
        var[~(var > 0.0)] = 1.0
        self._std = np.sqrt(var)
        self._gain = np.minimum(self.count, 1.0) / self._std
        self._stale = False

    # the standard deviation is a cache, recomputed on demand: leave it out of the state
    def __getstate__(self):
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._stale = True

    @property
    def std(self) -> np.ndarray:
        if self._stale:
            self._refresh()
        return self._std

    def scale(self, v: np.ndarray) -> np.ndarray:
        """(v - mean) / std, 0 at positions never seen, clipped to +-CLIP."""
        if self._stale:
            self._refresh()
        z = v - self.mean
        z *= self._gain
        return z.clip(-CLIP, CLIP, out=z)


class RobustScale(Stateful):
    """Running mean absolute size of a stream of numbers, robust to outliers.

    s_n = s_{n-1} + r_n (min(|e_n|, WINSOR s_{n-1}) - s_{n-1}),  r_n = max(rate, 1/n)

    (a plain mean of |e| over the first 1/rate values, then exponential forgetting).
    ``value`` is never below ``floor`` so that dividing by it is always safe.

    >>> s = RobustScale(rate=0.1)
    >>> for e in (1.0, -1.0, 1.0, 1e300):
    ...     s.update(e)
    >>> round(s.value, 3)
    2.0
    """

    _state = ("n", "s")

    def __init__(self, rate: float = 0.02, floor: float = 1e-12):
        self.rate, self.floor = rate, floor
        self.n = 0
        self.s = 0.0

    def update(self, e: float) -> None:
        a = abs(e)
        self.n += 1
        if self.n == 1:
            self.s = min(a, 1e300)
            return
        if self.s > 0.0:
            a = min(a, WINSOR * self.s)
        self.s += max(self.rate, 1.0 / self.n) * (a - self.s)

    @property
    def ready(self) -> bool:
        return self.n > 0 and self.s > 0.0

    @property
    def value(self) -> float:
        return max(self.s, self.floor)

    def clip(self, e: float, k: float) -> float:
        """e limited to +-k times the scale (unchanged before the scale is known)."""
        if not self.ready:
            return e
        lim = k * self.s
        return min(max(e, -lim), lim)
