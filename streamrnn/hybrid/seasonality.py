"""Which seasonal periods a series has: from its sampling interval, or from its autocorrelation.

``detect_periods`` looks at the autocorrelation of the first differences (so
that a trend does not make every lag look seasonal) and keeps the strongest
local peak above ``threshold``, then a second peak that is a multiple of the
first (a day inside a week).  It is what the forecaster runs during warm-up
when no ``season`` is given.

>>> import numpy as np
>>> t = np.arange(600)
>>> y = np.sin(2 * np.pi * t / 24) + 0.01 * t + np.random.default_rng(0).normal(0, 0.1, 600)
>>> detect_periods(y)
(24,)
>>> detect_periods(np.random.default_rng(1).normal(size=600))
()
"""

from __future__ import annotations

import numpy as np

#: the smallest period that counts as a season (2 and 3 are just short-term autocorrelation)
MIN_PERIOD = 4


def autocorrelation(x: np.ndarray, max_lag: int) -> np.ndarray:
    """acf[k] for k = 0..max_lag (acf[0] = 1; all zeros for a constant series)."""
    x = np.asarray(x, dtype=float) - np.mean(x)
    denom = float(x @ x)
    out = np.zeros(max_lag + 1)
    if denom <= 0.0:
        return out
    out[0] = 1.0
    for k in range(1, min(max_lag, len(x) - 1) + 1):
        out[k] = float(x[k:] @ x[:-k]) / denom
    return out


def detect_periods(values, candidates=None, threshold: float = 0.3, max_periods: int = 2) -> tuple[int, ...]:
    """Seasonal periods of ``values``: peaks of the differences' autocorrelation above ``threshold``.

    ``candidates`` limits the search (e.g. the periods a sampling interval suggests);
    a period needs at least four cycles in ``values``.
    """
    diffs = np.diff(np.asarray(values, dtype=float))
    longest = len(diffs) // 4  # a period needs four cycles: three can line up by chance
    if candidates is None:
        candidates = range(MIN_PERIOD, longest + 1)
    candidates = sorted(p for p in set(int(c) for c in candidates) if MIN_PERIOD <= p <= longest)
    if not candidates:
        return ()
    acf = autocorrelation(diffs, longest + 1)
    bound = max(threshold, 2.0 / np.sqrt(len(diffs)))
    peaks = [p for p in candidates if acf[p] > bound and acf[p] >= acf[p - 1] and acf[p] >= acf[p + 1]]
    if not peaks:
        return ()
    # the strongest peak, or the shortest of its divisors nearly as strong (a year repeats the season);
    # a divisor must be a peak give or take noise (0.02), not just a short lag of a smooth series
    strongest = max(peaks, key=lambda p: acf[p])
    near_peaks = [p for p in candidates if acf[p] > bound and acf[p] >= max(acf[p - 1], acf[p + 1]) - 0.02]
    found = [min(p for p in near_peaks if strongest % p == 0 and acf[p] >= 0.7 * acf[strongest])]
    # then a multiple of it, at least three cycles long, that stands out from its neighbouring
    # multiples (the week around the day)
    while len(found) < max_periods:
        base = found[-1]
        longer = [k * base for k in range(3, longest // base + 1)
                  if k * base in peaks and (k + 1) * base <= longest + 1
                  and acf[k * base] >= 0.9 * acf[base]
                  and acf[k * base] > max(acf[(k - 1) * base], acf[(k + 1) * base]) + 0.05]
        if not longer:
            break
        found.append(max(longer, key=lambda p: acf[p]))
    return tuple(found)
