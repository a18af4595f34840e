"""Epochwise BPTT over a finite sequence (Williams & Zipser 1995).

Every step of the sequence is recorded; ``end_sequence`` back-propagates the sum of
all its losses through the whole sequence from its first step.  This is
offline learning, and the exact reference the online learners are tested
against.
"""

from __future__ import annotations

import numpy as np

from .base import Learner
from .tape import Tape, backprop


class EpochwiseBPTT(Learner):
    """Full BPTT over each sequence; the model updates at ``end_sequence()``."""

    name = "epochwise"

    epochwise = True

    def _allocate(self, net) -> None:
        self._net = net
        self._tape = Tape.for_network(net, 16)
        self._length = np.zeros((), dtype=np.int64)

    def step(self, net, delta, grad) -> bool:
        t = int(self._length)
        if t == self._tape.rows:
            self._tape = self._tape.resized(net.stack, 2 * t)
        self._tape.record(t, net, delta)
        self._length[...] = t + 1
        return False

    def end_sequence(self, net, grad) -> bool:
        """Gradient of the whole sequence's loss into ``grad``; forgets the sequence."""
        T = int(self._length)
        if T == 0:
            return False
        backprop(net, self._tape, list(range(T - 1, -1, -1)), T, grad)
        self._length[...] = 0
        return True

    def load_state_arrays(self, arrays):
        rows = arrays.get("tape.vr", self._tape.vr).shape[0]
        if rows != self._tape.rows:
            self._tape = self._tape.resized(self._net.stack, rows)
        super().load_state_arrays(arrays)

    def state_arrays(self):
        return {"length": self._length, **self._tape.arrays("tape.")}

    def layouts(self):
        return {"length": "fixed", **self._tape.layouts("tape.")}

    def config(self):
        return {"kind": "EpochwiseBPTT"}
