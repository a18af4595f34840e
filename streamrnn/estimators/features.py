"""From river's dict events to the network's input vector.

A ``FeatureSpace`` gives every feature name a fixed input position, in order
of first appearance; names new in the same event are ordered by ``repr`` so
that a dict's key order never matters.  ``RunningMoments`` standardises each
position online (Welford's running mean and variance, from the events
learned so far), so that inputs on any scale -- a date ordinal near 736,000
beside a percentage -- reach the network near unit scale.
"""

from __future__ import annotations

import copy
import math
import numbers

import numpy as np

#: standardised values are clipped to +-CLIP: early in a stream the variance is
#: barely known, and one extreme input should not saturate every unit
CLIP = 5.0
_ALL = True  # every position learnable


def value(name, v) -> float | None:
    """v as a float, None when missing (None or NaN); ValueError naming the feature otherwise."""
    if type(v) is float or type(v) is int:  # the common case, without the ABC check
        f = float(v)
    elif v is None:
        return None
    elif isinstance(v, numbers.Real):
        f = float(v)
    else:
        raise ValueError(f"feature {name!r} must be a number, got {type(v).__name__} {v!r}")
    if f - f != 0.0:  # NaN or infinite
        if math.isnan(f):
            return None
        raise ValueError(f"feature {name!r} must be finite, got {v!r}")
    return f


class RunningMoments:
    """Per-position running mean and variance (Welford), growing with the positions.

    Examples
    --------
    >>> import numpy as np
    >>> m = RunningMoments(2)
    >>> for row in ([1.0, 10.0], [3.0, 10.0], [5.0, 10.0]):
    ...     m.update(np.array(row), np.array([True, True]))
    >>> m.mean.tolist(), m.std.tolist()
    ([3.0, 10.0], [1.632993161855452, 1.0])
    """

    def __init__(self, width: int = 0):
        self.count = np.zeros(width)
        self.mean = np.zeros(width)
        self.m2 = np.zeros(width)
        self._stale = True

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

    def _refresh(self) -> None:
        # std is 1 where fewer than two values differed (m2 = 0); scale() multiplies
        # by _gain, which is 1/std where a value was seen and 0 where none was
        count = np.maximum(self.count, 1.0)
        var = self.m2 / count
        var[var <= 0.0] = 1.0
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


class FeatureSpace:
    """Feature names -> input positions, and the (optionally standardised) input vector.

    A missing feature reads 0, as in a sparse dict (then standardised like any
    other value), so that one-hot features keep their meaning.  Features not
    yet known are ignored by ``vector``; ``add`` them first (the estimator grows
    its network at the same time).  With
    ``differences`` each feature takes two inputs, side by side: its value and
    its change since the previous event (0 while it has no previous value),
    each standardised on its own.

    Examples
    --------
    >>> space = FeatureSpace(standardize=False)
    >>> space.add(space.new({"b": 2, "a": 1}))
    >>> space.names, space.vector({"a": 5.0, "c": 7.0}).tolist()
    (['a', 'b'], [5.0, 0.0])
    >>> space = FeatureSpace(standardize=False, differences=True)
    >>> space.add(space.new({"a": 1.0}))
    >>> space.learn({"a": 1.0})
    >>> space.vector({"a": 3.5}).tolist()
    [3.5, 2.5]
    """

    def __init__(self, standardize: bool = True, differences: bool = False):
        self.standardize = standardize
        self.differences = differences
        self.names: list = []
        self.index: dict = {}
        self.moments = RunningMoments()  # per input: value (and change) moments
        self.last = np.zeros(0)  # each feature's last value, for differences
        self.seen = np.zeros(0, dtype=bool)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def width(self) -> int:
        """Inputs the features take: one per feature, two with differences."""
        return len(self.names) * (2 if self.differences else 1)

    def new(self, x: dict) -> list:
        """Names in x not known yet, in the order they will be added; checks every value
        first, so that a bad event raises before anything changes."""
        for name, item in x.items():
            value(name, item)
        index = self.index
        return sorted((name for name in x if name not in index), key=repr)

    def add(self, names: list) -> None:
        for name in names:
            self.index[name] = len(self.names)
            self.names.append(name)
        if names:
            k = len(names)
            self.moments.grow(k * (2 if self.differences else 1))
            self.last = np.concatenate([self.last, np.zeros(k)])
            self.seen = np.concatenate([self.seen, np.zeros(k, dtype=bool)])

    def raw(self, x: dict) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, learnable) before scaling, over the known positions.

        Inputs are the values (0 where missing; unknown names are ignored) and,
        with differences, the changes -- 0 for a feature not known at the previous
        event, which the moments do not learn (``learnable`` False).
        """
        v = np.zeros(len(self.names))
        index = self.index
        for name, item in x.items():
            f = value(name, item)
            i = index.get(name)
            if i is not None and f is not None:
                v[i] = f
        if not self.differences:
            return v, _ALL
        u = np.empty(2 * len(v))
        p = np.ones(2 * len(v), dtype=bool)
        u[0::2] = v  # value, change, value, change, ...
        u[1::2] = (v - self.last) * self.seen
        p[1::2] = self.seen
        return u, p

    def vector(self, x: dict, raw: tuple | None = None) -> np.ndarray:
        """The input vector for x: its values (0 where missing), standardised if asked.

        ``raw`` is ``self.raw(x)`` when the caller has it already.
        """
        u, p = raw if raw is not None else self.raw(x)
        return self.moments.scale(u) if self.standardize else u.copy()

    def learn(self, x: dict, raw: tuple | None = None) -> None:
        """Update the running moments (and last values) with x, after the network stepped on it."""
        u, p = raw if raw is not None else self.raw(x)
        if self.standardize:
            self.moments.update(u, p if self.differences else True)
        self.remember((u, p))

    def remember(self, raw: tuple) -> None:
        """Keep the values of ``raw`` (from ``self.raw``) as the last ones, for differences."""
        if self.differences:
            self.last = raw[0][0::2].copy()
            self.seen = np.ones(len(self.names), dtype=bool)

    def fork(self) -> "FeatureSpace":
        """A copy to roll forward (``remember``) without touching this one; moments are shared."""
        other = copy.copy(self)
        other.last, other.seen = self.last.copy(), self.seen.copy()
        return other


def frame_rows(X) -> list[dict]:
    """The rows of a pandas DataFrame as event dicts; NaN cells are missing features."""
    return [
        {k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
        for row in X.to_dict(orient="records")
    ]
