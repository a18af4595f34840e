"""The engine's compiled step on a table of the network's arrays: one argument for some thirty arrays.

``dense_step`` takes each array as an argument, and numba checks every
argument of a call (about 0.15 µs each): for an 8-unit model that was most of
the step.  Here the arrays travel by address in an ``ArrayTable``
(``table.py``), at slot ``base + i`` for slot i of ``SLOTS``, and the codes and
numbers in two small arrays from ``ib`` on; ``forward`` and ``step`` rebuild the
views and call ``dense_step``'s forward pass and its RTRL or BPTT(h; h') step.
The hybrid regressor's table (``hybrid_step``) holds the same slots after its own.

``slots(kernel_step)`` gives a ``KernelStep``'s arrays by slot name.  Exact RTRL
swaps its two sensitivity buffers every step: the caller points the ``S`` and
``S_next`` slots at the learner's current ones before a step
(``KernelStep.point``), and ``model_step`` swaps the two slots after the step
it takes, as the learner swaps its buffers.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .dense_step import bptt_step, predict, rtrl_step
from .table import ivec, mat, vec

#: the network's arrays: the forward pass, the update, then BPTT(h; h')'s window or RTRL's sensitivities
SLOTS = (
    ("A", "f2"), ("B", "f2"), ("v", "f1"), ("x", "f1"), ("leak", "f1"), ("z", "f1"), ("fz", "f1"), ("D", "f1"),
    ("h", "f1"), ("vr", "f1"), ("a", "f1"), ("o", "f1"), ("y", "f1"),
    ("grad", "f1"), ("applied", "f1"), ("theta", "f1"), ("m", "f1"), ("s", "f1"), ("count", "i1"), ("out", "f1"),
    ("tape.v", "f2"), ("tape.D", "f2"), ("tape.vr", "f2"), ("tape.delta", "f2"), ("counters", "i1"),
    ("e", "f1"), ("dz", "f1"),
    ("S", "f2"), ("S_next", "f2"), ("J", "f2"), ("g", "f1"),
    ("net.ints", "i1"), ("net.numbers", "f1"),
)
(A_, B_, V_, X_, LEAK, Z_, FZ, D_, H_, VR, AO, O_, Y_, GRAD, APPLIED, THETA, M_, S_, COUNT, OUT,
 TV, TD, TVR, TDELTA, COUNTERS, E_, DZ, SENS, SENS_NEXT, JAC, G_, NET_INTS, NET_NUMBERS) = range(len(SLOTS))
#: codes: which step (``BPTT`` or ``RTRL``), the activations (``dense_step``), BPTT's h and h', the optimiser
INTS = ("step", "act", "out_code", "hwin", "hprime", "opt")
STEP, ACT, OUT_CODE, HWIN, HPRIME, OPT = range(len(INTS))
BPTT, RTRL = 1, 2
#: numbers: clip_norm (0: none) and Adam's constants
NUMBERS = ("clip", "b1", "b2", "eps")
CLIP_NORM, B1, B2, EPS = range(len(NUMBERS))


@njit(cache=True, error_model="numpy", inline="always")
def head(ptr, dims, base, ints, ib):
    """The forward pass's arguments (``dense_step.predict``'s), from the slots at ``base`` and codes at ``ib``."""
    return (mat(ptr, dims, base + A_), mat(ptr, dims, base + B_), vec(ptr, dims, base + V_),
            vec(ptr, dims, base + X_), vec(ptr, dims, base + LEAK), ints[ib + ACT], vec(ptr, dims, base + Z_),
            vec(ptr, dims, base + FZ), vec(ptr, dims, base + D_), vec(ptr, dims, base + H_),
            vec(ptr, dims, base + VR), vec(ptr, dims, base + AO), vec(ptr, dims, base + O_), ints[ib + OUT_CODE],
            vec(ptr, dims, base + Y_))


@njit(cache=True, error_model="numpy")
def forward(ptr, dims, base, ints, ib):
    """The forward pass and readout for the input in the ``x`` slot (``OnlineRNN.predict``)."""
    A, B, v, x, leak, act, z, fz, D, h, vr, a, o, out_code, yb = head(ptr, dims, base, ints, ib)
    predict(A, B, v, x, leak, act, z, fz, D, h, vr, a, o, out_code, yb)


@njit(cache=True, error_model="numpy")
def step(ptr, dims, base, ints, ib, numbers, y, has_y, lr, forwarded=False):
    """One model step (``dense_step.bptt_step`` or ``rtrl_step``); its status in the ``out`` slot's first number.
    ``forwarded``: the slots hold the forward pass of the ``x`` slot already (``dense_step._begin``)."""
    A, B, v, x, leak, act, z, fz, D, h, vr, a, o, out_code, _ = head(ptr, dims, base, ints, ib)
    grad, applied, theta = vec(ptr, dims, base + GRAD), vec(ptr, dims, base + APPLIED), vec(ptr, dims, base + THETA)
    m, s, count, out = vec(ptr, dims, base + M_), vec(ptr, dims, base + S_), ivec(ptr, dims, base + COUNT), \
        vec(ptr, dims, base + OUT)
    opt = ints[ib + OPT]
    clip, b1, b2, eps = numbers[CLIP_NORM], numbers[B1], numbers[B2], numbers[EPS]
    if ints[ib + STEP] == BPTT:
        bptt_step(A, B, v, x, leak, act, z, fz, D, h, vr, a, o, out_code,
                  mat(ptr, dims, base + TV), mat(ptr, dims, base + TD), mat(ptr, dims, base + TVR),
                  mat(ptr, dims, base + TDELTA), ivec(ptr, dims, base + COUNTERS), ints[ib + HWIN],
                  ints[ib + HPRIME], vec(ptr, dims, base + E_), vec(ptr, dims, base + DZ),
                  grad, applied, theta, clip, opt, b1, b2, eps, m, s, count, out, y, has_y, lr, forwarded)
    else:
        rtrl_step(A, B, v, x, leak, act, z, fz, D, h, vr, a, o, out_code, mat(ptr, dims, base + SENS),
                  mat(ptr, dims, base + SENS_NEXT), mat(ptr, dims, base + JAC), vec(ptr, dims, base + G_),
                  grad, applied, theta, clip, opt, b1, b2, eps, m, s, count, out, y, has_y, lr, forwarded)


@njit(cache=True, error_model="numpy")
def model_step(ptr, dims, x, y, has_y, lr):
    """One model's step (``OnlineRNN.step``) from its input x: x into the ``x`` slot, ``step`` with the
    codes and numbers of the ``net.ints`` and ``net.numbers`` slots (fewer arguments to check per call),
    and for exact RTRL the ``S`` and ``S_next`` slots swapped, as the learner swaps its buffers, once the
    step is taken (both buffers have the spare row, so the slots' shapes still hold).  The status."""
    ints, numbers = ivec(ptr, dims, NET_INTS), vec(ptr, dims, NET_NUMBERS)
    xs = vec(ptr, dims, X_)
    for j in range(x.shape[0]):
        xs[j] = x[j]
    step(ptr, dims, 0, ints, 0, numbers, y, has_y, lr)
    status = int(vec(ptr, dims, OUT)[0])
    if ints[STEP] == RTRL and status != 0:
        ptr[SENS], ptr[SENS_NEXT] = ptr[SENS_NEXT], ptr[SENS]
    return status


#: a slot the network does not use (BPTT has no sensitivities, RTRL no window) reads an empty array
EMPTY = {"f1": np.zeros(0), "f2": np.zeros((0, 0)), "f3": np.zeros((0, 0, 0)), "i1": np.zeros(0, np.int64)}


def fill(slots: dict, layout) -> list:
    """The arrays of ``slots`` in ``layout``'s order, empty ones for the slots it lacks."""
    return [slots.get(name, EMPTY[kind]) for name, kind in layout]
