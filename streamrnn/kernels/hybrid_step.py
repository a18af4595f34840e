"""The hybrid regressor's event, compiled: its exact parts in the notation and order of ``streamrnn.hybrid``.

One call computes what ``HybridRegressor.predict`` computes, and one what
``learn`` does, the corrector network's RTRL or BPTT(h; h') step included
(``network_table.step``, on the network's slots of the same table):

    F = [y_{t-1}, mean, mean + std (w_1 . [1, z]), y_{t-1} + s (w_2 . [1, z, dz, ylag])]
    f = ML-Poly(F);  D = clip((F - f) / s_c) awake;  u = [D, e_{t-1} / s_c, z]
    h_t = the network's forward pass on u;  c = s_c (w_h . [1, h_t, D])
    prediction = w'_0 f + w'_1 (f + c)            (the second ML-Poly)

and on learning y: both ML-Poly updates, the read-out head's RLS step, the
corrector's error scale, both RLS components, the change and feature-change
scales, the target moments.  The parts' numbers that are Python scalars on
the numpy side travel in ``sc`` (layout: ``SCALARS``); their constants in
``cst`` (``CONSTANTS``); the arrays in a table (``SLOTS``).  The entry points,
``predict_table`` and ``learn_table``, refuse an event whose inputs do not fit
the model or are not finite, before changing anything: the caller takes the
numpy path for it.  Tests hold this equal to the numpy path to 1e-12.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types

from ..hybrid.scale import CLIP, GUARD, MAX_ABS, WINSOR
from . import network_table as nt
from .dense_step import predict as network_forward
from .scale_step import moments_std, moments_update
from .table import cube, ivec, mat, vec

#: ``sc``: the scalars of the regressor and of its parts, then the call's outputs
SCALARS = ("seen", "last", "lo", "hi", "bounded", "changes.n", "changes.s", "linear.n", "linear.s",
           "linear_change.n", "linear_change.s", "corrector.n", "corrector.s", "has_pending",
           "out.target", "out.step", "out.refused")
#: ``cst``: the configuration the step reads
CONSTANTS = ("linear.lam", "linear.huber", "linear_change.lam", "linear_change.huber", "heads.lam",
             "changes.rate", "changes.floor", "linear.rate", "linear_change.rate", "corrector.rate",
             "corrector.floor", "level2.margin")
(SEEN, LAST, LO, HI, BOUNDED, CH_N, CH_S, LIN_N, LIN_S, LC_N, LC_S, COR_N, COR_S, HAS_PENDING,
 OUT_TARGET, OUT_STEP, OUT_REFUSED) = range(len(SCALARS))
(LIN_LAM, LIN_HUBER, LC_LAM, LC_HUBER, HEADS_LAM, CH_RATE, CH_FLOOR, LIN_RATE, LC_RATE, COR_RATE, COR_FLOOR,
 L2_MARGIN) = range(len(CONSTANTS))


@njit(cache=True, error_model="numpy", inline="always")
def _clamp(v, limit):
    return limit if v > limit else (-limit if v < -limit else v)


@njit(cache=True, error_model="numpy", inline="always")
def _dot(a, b):
    acc = 0.0
    for i in range(a.shape[0]):
        acc += a[i] * b[i]
    return acc


@njit(cache=True, error_model="numpy", inline="always")
def robust_update(ns, e, rate):
    """``RobustScale.update``: its n and s in ns[0], ns[1] (a view of ``sc``)."""
    a = abs(e)
    n = ns[0] + 1.0
    ns[0] = n
    if n == 1.0:
        ns[1] = min(a, 1e300)
        return
    s = ns[1]
    if s > 0.0:
        a = min(a, WINSOR * s)
    ns[1] = s + max(rate, 1.0 / n) * (a - s)


@njit(cache=True, error_model="numpy", inline="always")
def _ready(ns):
    return ns[0] > 0.0 and ns[1] > 0.0


@njit(cache=True, error_model="numpy")
def rls_update(w, P, updates, z, t, lam, huber, ns, rate):
    """``RLS.update`` of head 0; the Huber error scale (when huber > 0) in ns (``robust_update``)."""
    d = z.shape[0]
    w0, P0 = w[0], P[0]
    e = t - _dot(w0, z)
    omega = 1.0
    if huber > 0.0 and _ready(ns) and abs(e) > huber * ns[1]:
        omega = huber * ns[1] / abs(e)
    Pz = np.empty(d)
    for i in range(d):
        Pz[i] = _dot(P0[i], z)
    den = lam + omega * _dot(z, Pz)
    if not (math.isfinite(e) and math.isfinite(den) and den > 0.0):
        return False
    g = omega / den
    if huber > 0.0:
        robust_update(ns, e, rate)
    for i in range(d):
        w0[i] += Pz[i] * g * e
        for j in range(d):
            P0[i, j] -= (Pz[i] * Pz[j]) * g  # symmetric bit for bit, as RLS.update
    if lam != 1.0:
        r = 1.0 / lam
        for i in range(d):
            for j in range(d):
                P0[i, j] *= r
    count = updates[0] + 1.0
    updates[0] = count
    if count % 64.0 == 0.0:  # a P saved before the symmetric update: made symmetric (a no-op on one that is)
        for i in range(d):
            for j in range(i, d):
                m = (P0[i, j] + P0[j, i]) * 0.5
                P0[i, j] = m
                P0[j, i] = m
    return True


@njit(cache=True, error_model="numpy")
def mlpoly_weights(R, S, prior, margin, awake, w):
    """``MLPoly.weights`` of one row into w: (R_k)_+ / S_k over the awake experts, normalised."""
    K = R.shape[0]
    total = 0.0
    for k in range(K):
        r = R[k]
        if margin != 0.0 and prior.shape[0] > 0 and prior[k] == 0.0:
            r = r - margin * math.sqrt(S[k])
        v = max(r, 0.0)
        v = v / S[k] if S[k] > 0.0 else 0.0
        v = v * (1.0 if awake[k] else 0.0)
        w[k] = v
        total += v
    if total > 0.0:
        for k in range(K):
            w[k] /= total
        return
    total = 0.0
    for k in range(K):
        w[k] = (1.0 if awake[k] else 0.0) if prior.shape[0] == 0 else prior[k] * (1.0 if awake[k] else 0.0)
        total += w[k]
    if not total > 0.0:
        total = 0.0
        for k in range(K):
            w[k] = 1.0 if awake[k] else 0.0
            total += w[k]
    total = max(total, 1e-300)
    for k in range(K):
        w[k] /= total


@njit(cache=True, error_model="numpy")
def mlpoly_learn(R, S, w, F, awake, y):
    """``MLPoly.update`` of one row with its weights w: the linearised absolute-loss regrets."""
    K = R.shape[0]
    combined = 0.0
    for k in range(K):
        combined += w[k] * (F[k] if awake[k] else 0.0)
    sign = 1.0 if combined > y else (-1.0 if combined < y else 0.0)
    r = np.empty(K)
    for k in range(K):
        r[k] = sign * (combined - F[k]) * (1.0 if awake[k] else 0.0)
        if not math.isfinite(r[k]):
            return
    for k in range(K):
        R[k] += r[k]
        S[k] += r[k] * r[k]


@njit(cache=True, error_model="numpy")
def _components(sc, cst, z, dx, t_count, t_mean, t_m2, f_count, f_mean, f_m2, lin_w, lc_w, x1, x2, F, awake):
    """F, awake, x1 and x2 (``HybridRegressor._components``); returns (mean, std, s)."""
    n = z.shape[0]
    mean = t_mean[0]
    std = moments_std(t_count, t_m2, 0)
    s = max(max(sc[CH_S], cst[CH_FLOOR]), 1e-12 * (abs(sc[LAST]) + 1.0))
    seen = sc[SEEN] != 0.0
    x1[0] = 1.0
    x2[0] = 1.0
    for i in range(n):
        x1[1 + i] = z[i]
        x2[1 + i] = z[i]
        gain = min(f_count[i], 1.0) / moments_std(f_count, f_m2, i)
        x2[1 + n + i] = _clamp((dx[i] - f_mean[i]) * gain, CLIP)
    x2[1 + 2 * n] = _clamp((sc[LAST] - mean) / std, CLIP) if seen else 0.0
    count = t_count[0]
    F[0] = sc[LAST]
    F[1] = mean
    F[2] = mean + std * _dot(lin_w[0], x1)
    F[3] = sc[LAST] + s * _dot(lc_w[0], x2)
    awake[0] = seen
    awake[1] = count >= 1.0
    awake[2] = count >= 2.0
    awake[3] = seen and _ready(sc[CH_N : CH_N + 2])
    for k in range(4):
        if not math.isfinite(F[k]):
            awake[k] = False
            F[k] = mean
    return mean, std, s


@njit(cache=True, error_model="numpy")
def _correction(sc, cst, F, awake, comb, z, errors_seen, heads_w, u, D, Zrow,
                A, B, v, x, leak, act, zb, fz, Db, h, vr, a, o, out_code, yb):
    """D, the network's input u (also written into its input x), its forward pass, the head's row
    [1, h_t, D] and the correction c (``RNNCorrector.propose`` and ``corrections``)."""
    K = F.shape[0]
    s_c = max(sc[COR_S], cst[COR_FLOOR])
    for k in range(K):
        D[k] = _clamp((F[k] - comb) / s_c, CLIP) * (1.0 if awake[k] else 0.0)
        u[k] = D[k]
    m = errors_seen.shape[0]
    for j in range(m):
        u[K + j] = errors_seen[j]
    for i in range(z.shape[0]):
        u[K + m + i] = z[i]
    for j in range(u.shape[0]):
        x[j] = u[j]
    network_forward(A, B, v, x, leak, act, zb, fz, Db, h, vr, a, o, out_code, yb)
    units = h.shape[0]
    Zrow[0] = 1.0
    for i in range(units):
        Zrow[1 + i] = h[i]
    for k in range(K):
        Zrow[1 + units + k] = D[k]
    return s_c * _dot(Zrow, heads_w[0])


@njit(cache=True, error_model="numpy")
def regressor_predict(sc, cst, z, dx, t_count, t_mean, t_m2, f_count, f_mean, f_m2, lin_w, lc_w,
                      R1, S1, R2, S2, prior2, has_cor, errors_seen, heads_w,
                      A, B, v, x, leak, act, zb, fz, Db, h, vr, a, o, out_code, yb):
    """``HybridRegressor.predict`` for a model that has seen a target: the prediction."""
    n, K = z.shape[0], R1.shape[1]
    x1, x2, F, w = np.empty(1 + n), np.empty(2 + 2 * n), np.empty(K), np.empty(K)
    awake = np.empty(K, dtype=np.bool_)
    _components(sc, cst, z, dx, t_count, t_mean, t_m2, f_count, f_mean, f_m2, lin_w, lc_w, x1, x2, F, awake)
    comb = 0.0
    if awake.any():
        mlpoly_weights(R1[0], S1[0], np.empty(0), 0.0, awake, w)
        comb = _dot(w, F)
    if not has_cor:
        return comb
    corr = 0.0
    if awake.any():
        u, D = np.empty(K + errors_seen.shape[0] + n), np.empty(K)
        Zrow = np.empty(heads_w.shape[1])
        corr = _correction(sc, cst, F, awake, comb, z, errors_seen, heads_w, u, D, Zrow,
                           A, B, v, x, leak, act, zb, fz, Db, h, vr, a, o, out_code, yb)
    w2 = np.empty(2)
    mlpoly_weights(R2[0], S2[0], prior2, cst[L2_MARGIN], np.ones(2, dtype=np.bool_), w2)
    return w2[0] * comb + w2[1] * (comb + corr)


@njit(cache=True, error_model="numpy")
def regressor_learn(sc, cst, z, dx, y, t_count, t_mean, t_m2, f_count, f_mean, f_m2,
                    lin_w, lin_P, lin_upd, lc_w, lc_P, lc_upd, R1, S1, R2, S2, prior2,
                    has_cor, pending, errors_seen, heads_w, heads_P, heads_upd,
                    A, B, v, x, leak, act, zb, fz, Db, h, vr, a, o, out_code, yb):
    """``HybridRegressor.learn`` of a finite y, up to the network's step: when one is due,
    sc[OUT_STEP] is 1 and the network learns sc[OUT_TARGET] from ``pending`` (the caller's step).
    Returns the prediction the state made before learning (``regressor_predict``'s, bit for bit: the
    same pass, computed before anything it reads is updated)."""
    n, K = z.shape[0], R1.shape[1]
    sc[OUT_STEP] = 0.0
    ch_ns, cor_ns = sc[CH_N : CH_N + 2], sc[COR_N : COR_N + 2]  # RobustScale numbers: (n, s) views
    seen = sc[SEEN] != 0.0
    lo, hi = -MAX_ABS, MAX_ABS  # scale.limits
    if seen and sc[HI] - sc[LO] > 0.0:
        width = GUARD * max(sc[HI] - sc[LO], 1e-9 * max(abs(sc[LO]), abs(sc[HI])))
        lo, hi = max(sc[LO] - width, -MAX_ABS), min(sc[HI] + width, MAX_ABS)
    if not (lo <= y <= hi):
        y = min(max(y, lo), hi)
        sc[BOUNDED] += 1.0
    if seen:
        sc[LO], sc[HI] = min(sc[LO], y), max(sc[HI], y)
    else:
        sc[LO], sc[HI] = y, y
    x1, x2, F, w = np.empty(1 + n), np.empty(2 + 2 * n), np.empty(K), np.empty(K)
    awake = np.empty(K, dtype=np.bool_)
    mean, std, s = _components(sc, cst, z, dx, t_count, t_mean, t_m2, f_count, f_mean, f_m2, lin_w, lc_w,
                               x1, x2, F, awake)
    any_awake = awake.any()
    comb = 0.0
    if any_awake:
        mlpoly_weights(R1[0], S1[0], np.empty(0), 0.0, awake, w)
        comb = _dot(w, F)
        mlpoly_learn(R1[0], S1[0], w, F, awake, y)
    prediction = comb
    if has_cor and not any_awake:  # no correction to learn from: the prediction's level-2 weights alone
        w2 = np.empty(2)
        mlpoly_weights(R2[0], S2[0], prior2, cst[L2_MARGIN], np.ones(2, dtype=np.bool_), w2)
        prediction = w2[0] * comb + w2[1] * (comb + 0.0)
    if has_cor and any_awake:
        D, Zrow = np.empty(K), np.empty(heads_w.shape[1])
        corr = _correction(sc, cst, F, awake, comb, z, errors_seen, heads_w, pending, D, Zrow,
                           A, B, v, x, leak, act, zb, fz, Db, h, vr, a, o, out_code, yb)
        s_c = max(sc[COR_S], cst[COR_FLOOR])
        t = (y - comb) / s_c
        t = min(max(t, -CLIP), CLIP)
        rls_update(heads_w, heads_P, heads_upd, Zrow, t, cst[HEADS_LAM], 0.0, cor_ns, 0.0)
        w2, F2 = np.empty(2), np.empty(2)
        ones = np.ones(2, dtype=np.bool_)
        mlpoly_weights(R2[0], S2[0], prior2, cst[L2_MARGIN], ones, w2)
        prediction = w2[0] * comb + w2[1] * (comb + corr)
        F2[0], F2[1] = comb, comb + corr
        mlpoly_learn(R2[0], S2[0], w2, F2, ones, y)
        # RNNCorrector.observe: the network learns e_t / s_c from the input it just read
        error = y - comb
        s_e = s_c if _ready(cor_ns) else max(abs(error), 1e-12)
        sc[OUT_TARGET] = _clamp(error / s_e, CLIP)
        sc[OUT_STEP] = 1.0
        sc[HAS_PENDING] = 0.0
        robust_update(cor_ns, error, cst[COR_RATE])
        for j in range(errors_seen.shape[0]):
            errors_seen[j] = 0.0
        errors_seen[0] = min(max(error / s_e, -CLIP), CLIP)
    if t_count[0] >= 1.0:
        rls_update(lin_w, lin_P, lin_upd, x1, _clamp((y - mean) / std, CLIP), cst[LIN_LAM], cst[LIN_HUBER],
                   sc[LIN_N : LIN_N + 2], cst[LIN_RATE])
    if seen:
        change = y - sc[LAST]
        if _ready(ch_ns):
            rls_update(lc_w, lc_P, lc_upd, x2, _clamp(change / s, 10.0 * CLIP), cst[LC_LAM], cst[LC_HUBER],
                       sc[LC_N : LC_N + 2], cst[LC_RATE])
        robust_update(ch_ns, change, cst[CH_RATE])
        moments_update(f_count, f_mean, f_m2, dx)
    yv = np.empty(1)
    yv[0] = y
    moments_update(t_count, t_mean, t_m2, yv)
    sc[LAST] = y
    sc[SEEN] = 1.0
    return prediction


#: the arrays a call reads and writes, by address (``table.ArrayTable``): name and kind, in slot order;
#: the corrector network's slots (``network_table.SLOTS``) follow from ``NET``
OWN_SLOTS = (
    ("targets.count", "f1"), ("targets.mean", "f1"), ("targets.m2", "f1"),
    ("feature_changes.count", "f1"), ("feature_changes.mean", "f1"), ("feature_changes.m2", "f1"),
    ("linear.w", "f2"), ("linear.P", "f3"), ("linear.updates", "f1"),
    ("linear_change.w", "f2"), ("linear_change.P", "f3"), ("linear_change.updates", "f1"),
    ("level1.R", "f2"), ("level1.S", "f2"), ("level2.R", "f2"), ("level2.S", "f2"), ("level2.prior", "f1"),
    ("corrector.pending", "f1"), ("corrector.errors_seen", "f1"),
    ("heads.w", "f2"), ("heads.P", "f3"), ("heads.updates", "f1"), ("target", "f1"),
    ("sc", "f1"), ("cst", "f1"), ("ints", "i1"), ("numbers", "f1"),
)
(T_COUNT, T_MEAN, T_M2, F_COUNT, F_MEAN, F_M2, LIN_W, LIN_P, LIN_UPD, LC_W, LC_P, LC_UPD, R1_, S1_, R2_, S2_,
 PRIOR2, PENDING, ERRORS_SEEN, HEADS_W, HEADS_P, HEADS_UPD, TARGET, SC_, CST_, INTS_, NUMBERS_) = range(len(OWN_SLOTS))
NET = len(OWN_SLOTS)
SLOTS = OWN_SLOTS + nt.SLOTS
#: ``ints``: whether there is a corrector, where the network's slots and codes start (``NET``,
#: ``NET_INTS``: passed to ``network_table.step`` as run-time values, see ``table``), then its codes
INTS = ("has_cor", "net_slots", "net_codes") + nt.INTS
HAS_COR, NET_SLOTS_AT, NET_CODES_AT = range(3)
NET_INTS = 3


#: the entry points' exact argument types: an array of another dtype, layout or mutability is refused
#: with TypeError (the caller takes the numpy path) rather than compiled again.  Everything but the
#: event travels in the table (``sc``, ``cst``, ``ints`` and ``numbers`` too): numba checks each argument
_F1, _I1 = types.Array(types.float64, 1, "C"), types.Array(types.int64, 1, "C")
_DIMS = types.Array(types.int64, 2, "C", readonly=True)
_PREDICT = types.float64(_F1, _F1, _I1, _DIMS)
_LEARN = types.float64(_F1, _F1, types.float64, _I1, _DIMS, types.float64)


@njit(cache=True, error_model="numpy", inline="always")
def _refused(sc, z, dx, y, dims):
    """Whether the event is one for the numpy path (sc[OUT_REFUSED] = 1, nothing changed): z or dx not
    as wide as the model's features, or a value that is not finite, which numpy's checks handle."""
    n = dims[F_COUNT, 0]
    ok = z.shape[0] == n and dx.shape[0] == n and math.isfinite(y)
    for i in range(z.shape[0] if ok else 0):
        ok = ok and math.isfinite(z[i]) and math.isfinite(dx[i])
    sc[OUT_REFUSED] = 0.0 if ok else 1.0
    return not ok


@njit(cache=True, error_model="numpy", inline="always")
def predict_in(z, dx, ptr, dims, sc, cst, ints):
    """``regressor_predict`` on the arrays of a table whose ``sc``, ``cst`` and ``ints`` are given (the
    body of ``predict_table``, and of a pool row's predict: ``regressor_rows``)."""
    A, B, v, x, leak, act, zb, fz, Db, h, vr, a, o, out_code, yb = nt.head(ptr, dims, NET, ints, NET_INTS)
    return regressor_predict(
        sc, cst, z, dx, vec(ptr, dims, T_COUNT), vec(ptr, dims, T_MEAN), vec(ptr, dims, T_M2),
        vec(ptr, dims, F_COUNT), vec(ptr, dims, F_MEAN), vec(ptr, dims, F_M2), mat(ptr, dims, LIN_W),
        mat(ptr, dims, LC_W), mat(ptr, dims, R1_), mat(ptr, dims, S1_), mat(ptr, dims, R2_), mat(ptr, dims, S2_),
        vec(ptr, dims, PRIOR2), ints[HAS_COR] == 1, vec(ptr, dims, ERRORS_SEEN), mat(ptr, dims, HEADS_W),
        A, B, v, x, leak, act, zb, fz, Db, h, vr, a, o, out_code, yb,
    )


@njit(_PREDICT, cache=True, error_model="numpy")
def predict_table(z, dx, ptr, dims):
    """``regressor_predict`` on the arrays of a table (NaN and sc[OUT_REFUSED] = 1 for an event it refuses)."""
    sc, cst, ints = vec(ptr, dims, SC_), vec(ptr, dims, CST_), ivec(ptr, dims, INTS_)
    if _refused(sc, z, dx, 0.0, dims):
        return math.nan
    return predict_in(z, dx, ptr, dims, sc, cst, ints)


@njit(cache=True, error_model="numpy", inline="always")
def learn_in(z, dx, y, ptr, dims, lr, sc, cst, ints, numbers):
    """The body of ``learn_table`` (and of a pool row's learn, ``regressor_rows``), on a table whose
    ``sc``, ``cst``, ``ints`` and ``numbers`` are given, for an event it does not refuse."""
    A, B, v, x, leak, act, zb, fz, Db, h, vr, a, o, out_code, yb = nt.head(ptr, dims, NET, ints, NET_INTS)
    prediction = regressor_learn(
        sc, cst, z, dx, y, vec(ptr, dims, T_COUNT), vec(ptr, dims, T_MEAN), vec(ptr, dims, T_M2),
        vec(ptr, dims, F_COUNT), vec(ptr, dims, F_MEAN), vec(ptr, dims, F_M2),
        mat(ptr, dims, LIN_W), cube(ptr, dims, LIN_P), vec(ptr, dims, LIN_UPD),
        mat(ptr, dims, LC_W), cube(ptr, dims, LC_P), vec(ptr, dims, LC_UPD),
        mat(ptr, dims, R1_), mat(ptr, dims, S1_), mat(ptr, dims, R2_), mat(ptr, dims, S2_), vec(ptr, dims, PRIOR2),
        ints[HAS_COR] == 1, vec(ptr, dims, PENDING), vec(ptr, dims, ERRORS_SEEN),
        mat(ptr, dims, HEADS_W), cube(ptr, dims, HEADS_P), vec(ptr, dims, HEADS_UPD),
        A, B, v, x, leak, act, zb, fz, Db, h, vr, a, o, out_code, yb,
    )
    if ints[HAS_COR] != 1:
        return prediction
    out = vec(ptr, dims, NET + nt.OUT)
    out[0] = 0.0
    if sc[OUT_STEP] == 0.0:
        return prediction
    target = vec(ptr, dims, TARGET)
    target[0] = sc[OUT_TARGET]
    base, ib = ints[NET_SLOTS_AT], ints[NET_CODES_AT]
    # the correction ran the network's forward pass on this very input (``_correction``), and nothing it
    # reads has moved since: the step does not run it again
    nt.step(ptr, dims, base, ints, ib, numbers, target, sc[OUT_STEP] != 0.0, lr, True)
    if ints[ib + nt.STEP] == nt.RTRL and out[0] != 0.0:  # S_t went into S_next: swap the slots, as model_step
        ptr[base + nt.SENS], ptr[base + nt.SENS_NEXT] = ptr[base + nt.SENS_NEXT], ptr[base + nt.SENS]
    return prediction


@njit(_LEARN, cache=True, error_model="numpy")
def learn_table(z, dx, y, ptr, dims, lr):
    """``regressor_learn`` on the arrays of a table and then, when a corrector step is due, the
    network's step on sc[OUT_TARGET] (``network_table.step``: its status in the ``out`` slot's first
    number, 0 when none ran or it must run on numpy).  Returns the prediction made before learning
    (``predict_table``'s); an event it refuses changes nothing (NaN, and sc[OUT_REFUSED] = 1)."""
    sc, cst, ints, numbers = vec(ptr, dims, SC_), vec(ptr, dims, CST_), ivec(ptr, dims, INTS_), \
        vec(ptr, dims, NUMBERS_)
    if _refused(sc, z, dx, y, dims):
        return math.nan
    return learn_in(z, dx, y, ptr, dims, lr, sc, cst, ints, numbers)
