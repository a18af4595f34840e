"""One model step of a single Elman or Leaky layer, compiled: forward, loss, RTRL or BPTT(h; h'),
the guard, clipping and SGD or Adam, in the notation and the order of the numpy engine.

    z = A v,  v = [h_{t-1}; x_t; 1];  h_t = (1 - beta) h_{t-1} + beta f(z);  D = beta f'(z)
    a = B [h_t; 1];  o = g(a);  delta = dL/da = o - y   (the canonical readout/loss pairs)

Codes: hidden f (0 tanh, 1 sigmoid, 2 relu, 3 identity); readout g and its loss
(0 identity + squared error, 1 sigmoid + log-loss, 2 softmax + cross-entropy);
optimiser (0 SGD, 1 Adam).  ``out`` returns [status, loss, ||g||, ||g|| clipped,
||h_t||^2]; status: 0 nothing was changed, the caller must take the numpy path
(a non-finite loss or state, which the numpy engine's guard handles); 1 the
state advanced and no update was due; 2 an update was applied; 3 an update was
due but its gradient was not finite (nothing applied, as the numpy engine).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  the BLAS numba's np.dot calls: loaded now, to set its threads
from numba import njit
from threadpoolctl import ThreadpoolController

from . import ADVANCED, FALLBACK, NONFINITE, UPDATED  # noqa: F401


def _match_blas_threads() -> None:
    """Give scipy's BLAS (numba's) numpy's BLAS thread count: a process that chose one thread for
    numpy before the kernels loaded (the daemon does, benchmarks do) gets one thread here too."""
    controller = ThreadpoolController()
    blas = [lib for lib in controller.lib_controllers if lib.user_api == "blas"]
    numpy_blas = [lib.num_threads for lib in blas if "numpy" in lib.filepath]
    if numpy_blas:
        for lib in blas:
            if "numpy" not in lib.filepath:
                lib.set_num_threads(min(numpy_blas))


_match_blas_threads()


@njit(cache=True, error_model="numpy")
def forward(A, v, x, n, leak, act, z, fz, D, h):
    """z = A v, f(z), D = beta f'(z), h_t; writes x into v (its head, the state, is read only)."""
    m = x.shape[0]
    for j in range(m):
        v[n + j] = x[j]
    k = v.shape[0]
    for i in range(n):
        s = 0.0
        for j in range(k):
            s += A[i, j] * v[j]
        z[i] = s
        if act == 0:
            f = math.tanh(s)
            d = 1.0 - f * f
        elif act == 1:
            e = math.exp(-abs(s))
            f = (1.0 if s >= 0.0 else e) / (1.0 + e)
            d = e / ((1.0 + e) * (1.0 + e))
        elif act == 2:
            f = s if s > 0.0 else 0.0
            d = 1.0 if s > 0.0 else 0.0
        else:
            f = s
            d = 1.0
        fz[i] = f
        if leak.shape[0] == 0:
            h[i] = f
            D[i] = d
        else:  # beta = 1 - leak
            beta = 1.0 - leak[i]
            h[i] = beta * f + leak[i] * v[i]
            D[i] = d * beta


@njit(cache=True, error_model="numpy")
def readout(B, h, vr, a, o, y, has_y, out_code):
    """a = B [h; 1] and o = g(a); returns L when there is a target (delta = o - y is the caller's)."""
    n = h.shape[0]
    for i in range(n):
        vr[i] = h[i]
    vr[n] = 1.0
    K = a.shape[0]
    for r in range(K):
        acc = 0.0
        for i in range(n + 1):
            acc += B[r, i] * vr[i]
        a[r] = acc
    if out_code == 0:
        for r in range(K):
            o[r] = a[r]
    elif out_code == 1:
        for r in range(K):
            e = math.exp(-abs(a[r]))
            o[r] = (1.0 if a[r] >= 0.0 else e) / (1.0 + e)
    else:
        top = a[0]
        for r in range(1, K):
            top = max(top, a[r])
        total = 0.0
        for r in range(K):
            o[r] = math.exp(a[r] - top)
            total += o[r]
        for r in range(K):
            o[r] /= total
    if not has_y:
        return 0.0
    loss = 0.0
    if out_code == 0:  # 1/2 |o - y|^2
        for r in range(K):
            loss += (o[r] - y[r]) * (o[r] - y[r])
        return 0.5 * loss
    if out_code == 1:  # sum logaddexp(0, a) - y a, logaddexp as numpy computes it
        for r in range(K):
            if a[r] == 0.0:
                lae = math.log(2.0)
            elif a[r] < 0.0:
                lae = math.log1p(math.exp(a[r]))
            else:
                lae = a[r] + math.log1p(math.exp(-a[r]))
            loss += lae - y[r] * a[r]
        return loss
    top = a[0]  # logsumexp(a) - y . a
    for r in range(1, K):
        top = max(top, a[r])
    total = 0.0
    for r in range(K):
        total += math.exp(a[r] - top)
    for r in range(K):
        loss += y[r] * a[r]
    return top + math.log(total) - loss


@njit(cache=True, error_model="numpy")
def predict(A, B, v, x, leak, act, z, fz, D, h, vr, a, o, out_code, y):
    """The forward pass and the readout alone (``OnlineRNN.predict``): the same arithmetic as a step's."""
    forward(A, v, x, A.shape[0], leak, act, z, fz, D, h)
    readout(B, h, vr, a, o, y, False, out_code)


@njit(cache=True, error_model="numpy", inline="always")
def _squared_norm(g):
    """sum g_p^2 in eight interleaved partial sums: one running sum waits on each addition before the next
    (0.33 us for a 16-unit model's 433 gradients here, 0.07 in eight).  numpy's dot sums in an order of
    its own, so the two paths' norms agree to rounding, as they did before; each path's is the same on
    every run."""
    P = g.shape[0]
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    full = P - P % 8
    for p in range(0, full, 8):
        s0 += g[p] * g[p]
        s1 += g[p + 1] * g[p + 1]
        s2 += g[p + 2] * g[p + 2]
        s3 += g[p + 3] * g[p + 3]
        s4 += g[p + 4] * g[p + 4]
        s5 += g[p + 5] * g[p + 5]
        s6 += g[p + 6] * g[p + 6]
        s7 += g[p + 7] * g[p + 7]
    for p in range(full, P):
        s0 += g[p] * g[p]
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@njit(cache=True, error_model="numpy")
def apply_update(grad, applied, theta, clip, opt, lr, b1, b2, eps, m, s, count, out):
    """The model's _apply: the norm, the guard, clipping, then SGD or Adam; returns the status."""
    norm = math.sqrt(_squared_norm(grad))
    if not math.isfinite(norm):
        return NONFINITE
    out[2] = norm
    out[3] = norm
    if clip > 0.0 and norm > clip:
        scale = clip / norm
        for p in range(grad.shape[0]):
            grad[p] *= scale
        out[3] = clip
        out[5] = 1.0
    t = count[0] + 1
    count[0] = t
    if opt == 0:
        for p in range(grad.shape[0]):
            applied[p] = grad[p]
            theta[p] += grad[p] * -lr
        return UPDATED
    c2 = math.sqrt(1.0 - b2**t)
    step = lr * c2 / (1.0 - b1**t)
    floor = eps * c2
    for p in range(grad.shape[0]):
        g = grad[p]
        applied[p] = g
        mp = m[p]
        mp -= g
        mp *= b1
        mp += g
        m[p] = mp
        g2 = g * g
        sp = s[p]
        sp -= g2
        sp *= b2
        sp += g2
        s[p] = sp
        theta[p] += mp / (math.sqrt(sp) + floor) * -step
    return UPDATED


@njit(cache=True, error_model="numpy")
def _begin(A, B, v, x, leak, act, z, fz, D, h, vr, a, o, out_code, y, has_y, out, forwarded=False):
    """Forward pass and loss; False (and nothing but scratch written) when either is not finite, or
    the input or the target is not (``OnlineRNN.step`` leaves that check to this call).
    ``forwarded``: z, f(z), D and h hold the forward pass of this x already (the hybrid regressor's
    prediction ran it, ``hybrid_step``), which is not run twice."""
    out[:] = 0.0
    for j in range(x.shape[0]):
        if not math.isfinite(x[j]):
            return False
    for r in range(y.shape[0] if has_y else 0):
        if not math.isfinite(y[r]):
            return False
    if not forwarded:
        forward(A, v, x, A.shape[0], leak, act, z, fz, D, h)
    loss = readout(B, h, vr, a, o, y, has_y, out_code)
    norm2 = 0.0
    for i in range(h.shape[0]):
        norm2 += h[i] * h[i]
    if not math.isfinite(norm2) or not math.isfinite(loss):
        return False
    out[1] = loss
    out[4] = norm2
    return True


@njit(cache=True, error_model="numpy")
def rtrl_learn(A, D, v, leak, S, S_next, J, g, grad, has_y):
    """The RTRL learner's own step: S_t into S_next's first n rows and, with a target, the recurrent
    gradient g^T S_t into grad[:P] (g = dL/dh_t = V^T delta, already in g).

    The gradient rides on the product as its spare row n: g^T S_t = (J^T g)^T S_{t-1} + g^T (D (x) v),
    so J gets the row u^T = (J^T g)^T and one (n + 1, n) @ (n, P) product gives S_t and u^T S_{t-1}
    (no second pass over S_t)."""
    n, k = A.shape[0], A.shape[1]
    # S_t = J S_{t-1} + D (x) v on each unit's own row of A;  J = diag(D) U + (1 - beta) I
    for j in range(n):
        J[n, j] = 0.0
    for i in range(n):
        for j in range(n):
            J[i, j] = D[i] * A[i, j]
        if leak.shape[0] > 0:
            J[i, i] += leak[i]
        if has_y:
            for j in range(n):
                J[n, j] += g[i] * J[i, j]
    np.dot(J, S, S_next)
    for i in range(n):
        base = i * k
        for j in range(k):
            S_next[i, base + j] += D[i] * v[j]
    if has_y:
        for p in range(S.shape[1]):
            grad[p] = S_next[n, p]
        for i in range(n):
            base = i * k
            d = g[i] * D[i]
            for j in range(k):
                grad[base + j] += d * v[j]


@njit(cache=True, error_model="numpy")
def rtrl_step(A, B, v, x, leak, act, z, fz, D, h, vr, a, o, out_code, S, S_next, J, g,
              grad, applied, theta, clip, opt, b1, b2, eps, m, s, count, out, y, has_y, lr, forwarded=False):
    """One model step with exact RTRL (``rtrl_learn``); the caller swaps the two buffers after it.
    ``forwarded``: as ``_begin``'s."""
    n = A.shape[0]
    if not _begin(A, B, v, x, leak, act, z, fz, D, h, vr, a, o, out_code, y, has_y, out, forwarded):
        return
    K = a.shape[0]
    if has_y:
        for i in range(n):  # g = V^T delta
            acc = 0.0
            for r in range(K):
                acc += (o[r] - y[r]) * B[r, i]
            g[i] = acc
    rtrl_learn(A, D, v, leak, S, S_next, J, g, grad, has_y)  # before the commit: it reads v_t
    for i in range(n):  # commit: v's head is the state
        v[i] = h[i]
    if not has_y:
        out[0] = ADVANCED
        return
    P = S.shape[1]
    for r in range(K):
        d = o[r] - y[r]
        for i in range(n + 1):
            grad[P + r * (n + 1) + i] = d * vr[i]
    out[0] = apply_update(grad, applied, theta, clip, opt, lr, b1, b2, eps, m, s, count, out)


@njit(cache=True, error_model="numpy")
def bptt_step(A, B, v, x, leak, act, z, fz, D, h, vr, a, o, out_code, tv, tD, tvr, tdelta,
              counters, hwin, hprime, e, dz, grad, applied, theta, clip, opt, b1, b2, eps, m, s, count, out,
              y, has_y, lr, forwarded=False):
    """One model step with BPTT(h; h'): record the step in the ring, and every h' steps
    back-propagate the last h' losses through at most h steps, then update.  ``forwarded``: as ``_begin``'s."""
    n, k = A.shape[0], A.shape[1]
    if not _begin(A, B, v, x, leak, act, z, fz, D, h, vr, a, o, out_code, y, has_y, out, forwarded):
        return
    K = a.shape[0]
    pos = (counters[0] + 1) % hwin
    for j in range(k):
        tv[pos, j] = v[j]
    for i in range(n):
        tD[pos, i] = D[i]
    for i in range(n + 1):
        tvr[pos, i] = vr[i]
    for r in range(K):
        tdelta[pos, r] = (o[r] - y[r]) if has_y else 0.0
    counters[0] = pos
    counters[1] = min(counters[1] + 1, hwin)
    counters[2] += 1
    if has_y:
        counters[3] = 1
    for i in range(n):  # commit
        v[i] = h[i]
    if counters[2] < hprime:
        out[0] = ADVANCED
        return
    due = counters[3] == 1
    counters[2] = 0
    counters[3] = 0
    if not due:
        out[0] = ADVANCED
        return
    filled = counters[1]
    n_errors = min(hprime, filled)
    P = n * k
    # readout: dL/dB = sum over the loss rows of delta_s [h_s; 1]^T
    for r in range(K):
        for i in range(n + 1):
            grad[P + r * (n + 1) + i] = 0.0
    for j in range(n_errors):
        row = (pos - j) % hwin
        for r in range(K):
            d = tdelta[row, r]
            for i in range(n + 1):
                grad[P + r * (n + 1) + i] += d * tvr[row, i]
    # walk back, newest row first: dz_s = D_s e_s; e_{s-1} = U^T dz_s + (1 - beta) e_s (+ V^T delta_{s-1})
    for i in range(n):
        acc = 0.0
        for r in range(K):
            acc += tdelta[pos, r] * B[r, i]
        e[i] = acc
    for p in range(P):
        grad[p] = 0.0
    for j in range(filled):
        row = (pos - j) % hwin
        for i in range(n):
            dz[i] = tD[row, i] * e[i]
        for i in range(n):  # dL/dA += dz_s v_s^T
            base = i * k
            d = dz[i]
            for c in range(k):
                grad[base + c] += d * tv[row, c]
        if j + 1 < filled:
            prev = (row - 1) % hwin
            # into the second half of e (the first is still read): U^T dz row by row, contiguous in A
            for c in range(n):
                e[n + c] = 0.0
            for i in range(n):
                d = dz[i]
                for c in range(n):
                    e[n + c] += A[i, c] * d
            for c in range(n):
                acc = e[n + c]
                if leak.shape[0] > 0:
                    acc += leak[c] * e[c]
                if j + 1 < n_errors:
                    for r in range(K):
                        acc += tdelta[prev, r] * B[r, c]
                e[c] = acc
    out[0] = apply_update(grad, applied, theta, clip, opt, lr, b1, b2, eps, m, s, count, out)
