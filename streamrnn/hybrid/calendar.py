"""Time stamps: calendar phase features, the sampling interval, and the seasons it implies.

A forecaster that is given times (river's datasets carry a ``datetime`` per
event) learns the series' sampling interval, turns each time into calendar
phases, and can place a requested future time on its own step grid:

* ``phase_features(t, interval)`` -- sin and cos of the phase of the day, the
  week and the year at time t (seconds since the epoch, UTC), 6 numbers; a
  phase the sampling cannot resolve (fewer than two samples per cycle) reads 0;
* ``periods_for_interval(interval)`` -- the seasonal periods, in steps, that
  the calendar suggests: 24 and 168 for hourly data, 12 for monthly data...;
* ``Clock`` -- the newest time and the typical interval between times.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np

from .stateful import Stateful

DAY = 86_400.0
WEEK = 7 * DAY
YEAR = 365.2425 * DAY
#: (cycle length, phase origin): the week starts on Monday 1970-01-05 00:00 UTC
CYCLES = ((DAY, 0.0), (WEEK, 4 * DAY), (YEAR, 0.0))
N_CALENDAR = 2 * len(CYCLES)
#: calendar periods a sampling interval may imply: a day, a week, a year
_CALENDAR_PERIODS = (DAY, WEEK, YEAR)


def timestamp(value) -> float | None:
    """Seconds since the epoch for a ``datetime`` or ``date`` (naive ones as UTC); None otherwise."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.timestamp()
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc).timestamp()
    return None


def phase_features(t: float, interval: float) -> np.ndarray:
    """[sin, cos] of the day, week and year phases of time t; 0 for cycles shorter than 2 intervals."""
    out = np.zeros(N_CALENDAR)
    for i, (cycle, origin) in enumerate(CYCLES):
        if interval > 0.0 and cycle >= 2.0 * interval:
            angle = 2.0 * math.pi * (((t - origin) / cycle) % 1.0)
            out[2 * i], out[2 * i + 1] = math.sin(angle), math.cos(angle)
    return out


def periods_for_interval(interval: float) -> tuple[int, ...]:
    """Seasonal periods in steps that the calendar implies for a sampling interval (seconds).

    >>> periods_for_interval(3600.0), periods_for_interval(1800.0), periods_for_interval(30.4 * 86400)
    ((24, 168), (48, 336), (12,))
    """
    if not interval > 0.0:
        return ()
    out = []
    for cycle in _CALENDAR_PERIODS:
        steps = cycle / interval
        nearest = round(steps)
        # a whole number of steps per cycle (to 2 %), at least 4 of them and at most 1000
        if 4 <= nearest <= 1000 and abs(steps - nearest) <= 0.02 * steps:
            out.append(int(nearest))
    return tuple(out)


class Clock(Stateful):
    """The newest time and the typical sampling interval (a running median of the gaps).

    >>> c = Clock()
    >>> for day in range(1, 5):
    ...     c.tick(dt.datetime(2024, 1, day).timestamp())
    >>> c.interval, c.steps_to(c.last + 2 * 86400.0)
    (86400.0, 2)
    """

    _state = ("last", "interval", "ticks")

    def __init__(self):
        self.last = 0.0
        self.interval = 0.0
        self.ticks = 0

    @property
    def ready(self) -> bool:
        return self.ticks >= 2 and self.interval > 0.0

    def tick(self, t: float) -> None:
        if self.ticks:
            gap = t - self.last
            if gap > 0.0:
                if self.interval <= 0.0:
                    self.interval = gap
                else:  # a running median: moves 1 % of itself towards each gap
                    self.interval *= 1.01 if gap > self.interval else (0.99 if gap < self.interval else 1.0)
        self.last = t
        self.ticks += 1

    def steps_to(self, t: float) -> int:
        """How many steps after the newest time t falls (at least 1)."""
        if not self.ready:
            return 1
        return max(1, int(round((t - self.last) / self.interval)))

    def future_time(self, steps: int) -> float:
        return self.last + steps * self.interval
