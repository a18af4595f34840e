"""From river's dict events to the models' input vector.

A ``FeatureSpace`` gives every feature a fixed set of input columns, in order
of first appearance (names new in the same event are ordered by ``repr``, so
a dict's key order never matters):

* a number takes one column, standardised online by its running mean and
  variance (``RunningMoments``, the one scaler streamrnn uses) and clipped to
  +-5, so that a date ordinal near 736,000 and a percentage reach a model on
  the same scale; a missing feature reads 0 before standardising, as in a
  sparse dict;
* a ``datetime`` or ``date`` takes six columns, the sin and cos of its phase in
  the day, the week and the year (``hybrid.calendar``); the first such
  feature is also the stream's clock, whose sampling interval decides which
  phases mean something and lets a forecaster place future times on its grid.

Anything else (a string, a list) raises ValueError naming the feature, before
anything changes.  None and NaN count as missing.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .. import kernels
from ..hybrid.calendar import N_CALENDAR, Clock, phase_features, timestamp
from ..hybrid.scale import MAX_ABS, RunningMoments
from ..hybrid.stateful import Stateful


_SCALE_STEP = []  # ``kernels.scale_step``, once imported (a module is not held by the spaces: not state)


def _scale_step():
    """``kernels.scale_step`` (numba loads on first use)."""
    if not _SCALE_STEP:
        from ..kernels import scale_step

        _SCALE_STEP.append(scale_step)
    return _SCALE_STEP[0]


def value(name, v) -> float | None:
    """v as a float, None when missing (None or NaN); ValueError naming the feature otherwise."""
    if type(v) is float or type(v) is int:  # the common case, without the ABC check
        f = float(v)
    elif v is None:
        return None
    elif isinstance(v, numbers.Real):
        f = float(v)
    else:
        raise ValueError(f"feature {name!r} must be a number or a datetime, got {type(v).__name__} {v!r}")
    if f - f != 0.0:  # NaN or infinite
        if math.isnan(f):
            return None
        raise ValueError(f"feature {name!r} must be finite, got {v!r}")
    return f


def check(name, v) -> float | None:
    """A feature's value: a float, a timestamp for a datetime, or None when missing."""
    if type(v) is float and v - v == 0.0:  # the common case first
        return v
    t = timestamp(v)
    return t if t is not None else value(name, v)


class FeatureSpace(Stateful):
    """Feature names -> input columns, and the standardised input vector.

    Its learned state is ``state()``'s arrays; the names, in column order, are the
    owner's to keep (``add`` them again before ``load``).

    Examples
    --------
    >>> import datetime as dt
    >>> space = FeatureSpace()
    >>> event = {"b": 2, "a": 1}
    >>> space.add(space.new(event), event)
    2
    >>> space.names, space.width
    (['a', 'b'], 2)
    >>> event = {"when": dt.datetime(2024, 1, 1)}
    >>> space.add(space.new(event), event)
    6
    >>> space.width, space.clock_name
    (8, 'when')
    """

    _state = ("scaled", "last", "has_last")
    _parts = ("moments", "clock")
    _growable = ("scaled", "last")

    def __init__(self):
        self.names: list = []  # every feature, in column order of first appearance
        self.kinds: list = []  # "number" or "time", per name
        self.index: dict = {}  # name -> first column
        self.moments = RunningMoments()  # per column (calendar columns are not scaled)
        self.scaled = np.zeros(0, dtype=bool)  # columns that are standardised
        self.clock = Clock()
        self.clock_name = None
        self.last = np.zeros(0)  # the previous event's raw values (for changes)
        self.has_last = False
        self._memo = None  # (id and copy of x, (raw, vector, change), its unknown names) until the space changes
        self._compiled = kernels.enabled()  # read and learn with ``kernels.scale_step``, else numpy

    def _loaded(self) -> None:
        self._memo = None

    # the memo of the newest event read, and the path it runs on, are not state
    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_memo", "_compiled")}

    def __setstate__(self, state):
        self.__dict__.update(state, _memo=None, _compiled=kernels.enabled())

    def __len__(self) -> int:
        return len(self.names)

    @property
    def width(self) -> int:
        return len(self.scaled)

    def new(self, x: dict) -> list:
        """Names in x not known yet, in the order they will be added; checks every value
        first, so that a bad event raises before anything changes."""
        memo = self._memo_of(x)
        if memo is not None and memo[3] is not None:  # read() checked every value of this very event
            return list(memo[3])
        for name, item in x.items():
            check(name, item)
        index = self.index
        return sorted((name for name in x if name not in index), key=repr)

    def add(self, names: list, x: dict | None = None) -> int:
        """Give ``names`` their columns (their kind read from ``x``, or from the value passed to
        ``new``); returns how many columns were added."""
        if not names:
            return 0
        self._memo = None
        times = [x is not None and timestamp(x.get(name)) is not None for name in names]
        scaled = []  # the new columns: standardised (numbers) or not (calendar phases)
        for is_time in times:
            scaled += [not is_time] * (N_CALENDAR if is_time else 1)
        at, k = self.width, len(scaled)  # every array grows once (a daemon makes a space for each new key)
        grown = (np.concatenate([self.scaled, np.array(scaled, dtype=bool)]), np.concatenate([self.last, np.zeros(k)]))
        self.moments.grow(k)
        self.scaled, self.last = grown
        for name, is_time in zip(names, times):  # the names last: nothing above left a name without columns
            self.index[name] = at
            self.names.append(name)
            self.kinds.append("time" if is_time else "number")
            at += N_CALENDAR if is_time else 1
            if is_time and self.clock_name is None:
                self.clock_name = name
        return k

    def _raw(self, x: dict, unknown: list | None = None) -> np.ndarray:
        """x's raw values; the (name, value) pairs it does not know go into ``unknown``."""
        u = np.zeros(self.width)
        index, interval = self.index, self.clock.interval
        for name, item in x.items():
            i = index.get(name)
            if i is None:
                if unknown is not None:
                    unknown.append((name, item))
                continue
            if (type(item) is float or type(item) is int) and -MAX_ABS <= item <= MAX_ABS:  # the common cases
                u[i] = item
                continue
            t = timestamp(item)
            if t is not None:
                u[i : i + N_CALENDAR] = phase_features(t, interval)
            else:
                f = value(name, item)
                if f is not None:
                    u[i] = min(max(f, -MAX_ABS), MAX_ABS)  # squares stay finite in the moments
        return u

    def raw(self, x: dict) -> np.ndarray:
        """x's values in column order, unscaled (0 where missing; times as calendar phases).

        ``vector``, ``change`` and ``learn`` take it, so that an event is read once, not once for each.
        """
        return self._raw(x)

    def read(self, x: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(raw, vector, change) of x; the caller must not write to them.

        River calls ``predict_one(x)`` and then ``learn_one(x, y)`` with the same event: until
        the space learns or grows, an event equal to the newest one read is not read again.
        """
        memo = self._memo_of(x)
        if memo is not None:
            return memo[2]
        unknown: list = []
        raw = self._raw(x, unknown)
        out = (raw, *self.scale(raw))
        names: list | None = []
        try:  # what new() will answer for this event (a bad value there is new()'s to raise)
            for name, item in unknown:
                check(name, item)
            if unknown:
                names = sorted((name for name, _ in unknown), key=repr)
        except Exception:  # noqa: BLE001 - ValueError, or OverflowError for a huge int: new() raises it
            names = None
        self._memo = (id(x), dict(x), out, names)
        return out

    def scale(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(vector, change) of raw values in column order (``raw``'s): what ``read`` returns after raw,
        for a caller that checked the event's names itself and reads each event once (the daemon)."""
        if self._compiled:
            m = self.moments
            out = (np.empty(raw.shape[0]), np.empty(raw.shape[0]))
            _scale_step().standardise(raw, m.count, m.mean, m.m2, self.scaled, self.last, self.has_last, *out)
            return out
        return self.vector({}, raw), self.change({}, raw)

    def _memo_of(self, x: dict):
        """(id, copy of x, (raw, vector, change), its unknown names or None if one has a bad value) of the
        newest event read, if x is that very dict, unchanged (an equal dict with, say, 1 for True or
        -0.0 for 0.0 is read again)."""
        memo = self._memo
        if memo is None or memo[0] != id(x):
            return None
        try:
            return memo if memo[1] == x else None
        except Exception:  # noqa: BLE001 - values that do not compare: read it again
            return None

    def vector(self, x: dict, raw: np.ndarray | None = None) -> np.ndarray:
        """The input vector for x: numbers standardised (0 where missing), calendar phases as they are."""
        u = self._raw(x) if raw is None else raw
        z = self.moments.scale(u)
        return np.where(self.scaled, z, u)

    def change(self, x: dict, raw: np.ndarray | None = None) -> np.ndarray:
        """Each number's change since the previous event, unscaled (0 before there is one)."""
        if not self.has_last:
            return np.zeros(self.width)
        return ((self._raw(x) if raw is None else raw) - self.last) * self.scaled

    def learn(self, x: dict, raw: np.ndarray | None = None) -> None:
        """Update the running moments (and the clock) with x, after the model stepped on it."""
        self._memo = None
        if self.width:
            raw = self._raw(x) if raw is None else raw
            if self._compiled:
                m = self.moments
                _scale_step().moments_update_at(m.count, m.mean, m.m2, raw, self.scaled)
                m._stale = True
            else:
                self.moments.update(raw, self.scaled)
            self.last, self.has_last = raw, True
        t = self.time_of(x)
        if t is not None:
            self.clock.tick(t)

    def time_of(self, x: dict | None) -> float | None:
        """The clock feature's time in x (seconds since the epoch), or None."""
        if not x or self.clock_name is None:
            return None
        return timestamp(x.get(self.clock_name))


def frame_rows(X) -> list[dict]:
    """The rows of a pandas DataFrame as event dicts; NaN cells are missing features."""
    return [
        {k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
        for row in X.to_dict(orient="records")
    ]
