"""The feature space's per-event numpy work, compiled: standardising an event and learning its moments.

The same element-wise arithmetic as ``RunningMoments`` (``hybrid.scale``)
and ``FeatureSpace`` (``estimators.features``), so the results are equal
bit for bit:

    std_i = sqrt(m2_i / max(n_i, 1)) (1 where that is not > 0);   z_i = clip((u_i - mean_i) min(n_i, 1) / std_i)

in the scaled columns (calendar phases pass as they are); and Welford's update
at the columns an event has.
"""

from __future__ import annotations

import math

from numba import njit

from ..hybrid.scale import CLIP


@njit(cache=True, error_model="numpy")
def moments_update(count, mean, m2, v):
    """``RunningMoments.update(v)`` (Welford) at every position."""
    for i in range(v.shape[0]):
        count[i] += 1.0
        delta = v[i] - mean[i]
        mean[i] += delta / count[i]
        delta *= v[i] - mean[i]
        m2[i] += delta


@njit(cache=True, error_model="numpy")
def moments_update_at(count, mean, m2, v, present):
    """``RunningMoments.update(v, present)``: the positions not present do not move."""
    for i in range(v.shape[0]):
        if present[i]:
            count[i] += 1.0
            delta = v[i] - mean[i]
            mean[i] += delta / max(count[i], 1.0)
            delta *= v[i] - mean[i]
            m2[i] += delta


@njit(cache=True, error_model="numpy", inline="always")
def moments_std(count, m2, i):
    var = m2[i] / max(count[i], 1.0)
    if not var > 0.0:
        var = 1.0
    return math.sqrt(var)


@njit(cache=True, error_model="numpy")
def standardise(u, count, mean, m2, scaled, last, has_last, z, dx):
    """z and dx (the caller's arrays, as wide as u): ``FeatureSpace.vector`` and ``change`` of the raw
    values u.  (Arrays made here would cost more to hand back to Python than the arithmetic.)"""
    n = u.shape[0]
    for i in range(n):
        if scaled[i]:
            v = (u[i] - mean[i]) * (min(count[i], 1.0) / moments_std(count, m2, i))
            z[i] = CLIP if v > CLIP else (-CLIP if v < -CLIP else v)
        else:
            z[i] = u[i]
        dx[i] = (u[i] - last[i]) * (1.0 if scaled[i] else 0.0) if has_last else 0.0
