"""Sliding-window truncated BPTT(h; h') (Williams & Peng 1990, Williams & Zipser 1995).

The last h steps' activations sit in a ring buffer.  Every h' steps the losses
of the last h' steps are back-propagated through at most h steps (states
older than that are held fixed) and an update is due.  h' = 1 updates on
every event; h' = h is the classic non-overlapping truncation.
"""

from __future__ import annotations

import numpy as np

from ..cells import check_size
from ..cells.dense import DenseLayer
from .base import Learner
from .tape import Tape, backprop


#: f'(z) from h = f(z), computed as the forward pass computes it (so equal to the bit)
_F_PRIME_OF_F = {
    "tanh": lambda h: 1.0 - h * h,
    "relu": lambda h: (h > 0.0).astype(float),
    "identity": lambda h: np.ones_like(h),
}


class TruncatedBPTT(Learner):
    """BPTT(h; h'): window ``h`` steps, an update every ``h_prime`` steps."""

    name = "bptt"

    def __init__(self, h: int = 10, h_prime: int = 1):
        self.h = check_size("h", h)
        self.h_prime = check_size("h_prime", h_prime)
        if self.h_prime > self.h:
            raise ValueError(f"h_prime must be <= h (h = {h}), got {h_prime}")

    def _allocate(self, net) -> None:
        self._tape = Tape.for_network(net, self.h)
        # ring position of the newest row, rows filled, steps since the last update,
        # and whether any of those steps had a target
        self._counters = np.array([-1, 0, 0, 0], dtype=np.int64)

    def step(self, net, delta, grad) -> bool:
        c = self._counters
        pos = (int(c[0]) + 1) % self.h
        self._tape.record(pos, net, delta)
        c[0] = pos
        c[1] = min(int(c[1]) + 1, self.h)
        c[2] += 1
        if delta is not None:
            c[3] = 1
        if c[2] < self.h_prime:
            return False
        due = bool(c[3])
        c[2] = c[3] = 0
        if due:
            filled = int(c[1])
            # ring rows newest first: pos, pos - 1, ..., 0, h - 1, ... (O(h) memory, made per update)
            order = list(range(pos, -1, -1)) + list(range(self.h - 1, pos, -1))
            backprop(net, self._tape, order[:filled], min(self.h_prime, filled), grad)
        return due

    def reset(self) -> None:
        super().reset()
        self._counters[0] = -1

    def state_arrays(self):
        return {"counters": self._counters, **self._tape.arrays("tape.")}

    def layouts(self):
        return {"counters": "fixed", **self._tape.layouts("tape.")}

    def derived(self, net, arrays, h):
        """For one Elman layer whose f' is a function of f (tanh, relu, identity), the tape's read-out
        inputs vr_s = [h_s; 1] and D_s = f'(z_s), from h_s: the next row's head of v = [h_s; x_{s+1}; 1],
        or h_t for the newest row; rows never written are 0.  Nothing for other networks (a leaky unit's
        f(z) is not recoverable from h bit for bit, nor a stack's read-out input from layer 0's v)."""
        layers = net.stack.layers
        f_prime = _F_PRIME_OF_F.get(getattr(layers[0].cell, "activation", None))
        if len(layers) != 1 or type(layers[0]) is not DenseLayer or layers[0].beta is not None or f_prime is None:
            return {}
        v, counters = arrays["tape.v0"], arrays["counters"]
        rows, n = v.shape[0], layers[0].n
        newest, filled = int(counters[0]), min(int(counters[1]), rows)
        written = (newest - np.arange(filled)) % rows  # newest first
        vr, D = np.zeros((rows, n + 1)), np.zeros((rows, n))
        if filled:
            vr[written[0], :n] = h
            vr[written[1:], :n] = v[(written[1:] + 1) % rows, :n]
            vr[written, n] = 1.0
            D[written] = f_prime(vr[written, :n])
        return {"tape.vr": vr, "tape.D0": D}

    def config(self):
        return {"kind": "TruncatedBPTT", "h": self.h, "h_prime": self.h_prime}
