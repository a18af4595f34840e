"""Recorded activations and the backward pass through them.

A ``Tape`` keeps, per recorded step s, what back-propagation needs and the
forward pass already computed: v^l_s = [h^l_{s-1}; x^l_s; 1] and
D^l_s = beta f'(z^l_s) for every layer, the readout input [h^L_s; 1] and
delta_s = dL_s/da_s (zero where the step had no target).  The forward pass
is never recomputed.

``backprop_stack`` walks rows newest to oldest, for each layer top-down:

    dz_s = dL/dh_s * D_s                         # back through f and the leak's beta
    dL/dh_{s-1} = (1 - beta) dL/dh_s + U^T dz_s  # to the previous step
    dL/dx_s = W^T dz_s                           # to the layer below, same step
    dL/dA = sum_s dz_s v_s^T                     # one matrix product at the end

States before the oldest row are held fixed: that is the truncation.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class Tape:
    def __init__(self, stack, rows: int, readout_width: int = 0, outputs: int = 0):
        self.v = [np.zeros((rows, n + m + 1)) for n, m in zip(stack.units, stack.in_sizes)]
        self.D = [np.zeros((rows, n)) for n in stack.units]
        self.vr = np.zeros((rows, readout_width))
        self.delta = np.zeros((rows, outputs))
        self._dz = [np.zeros((rows, n)) for n in stack.units]

    @classmethod
    def for_network(cls, net, rows: int) -> "Tape":
        return cls(net.stack, rows, net.vr.shape[0], net.n_outputs)

    @property
    def rows(self) -> int:
        return self.vr.shape[0]

    def record_stack(self, row: int, stack) -> None:
        for l in range(len(stack.units)):
            self.v[l][row] = stack.v[l]
            self.D[l][row] = stack.D[l]

    def record(self, row: int, net, delta: np.ndarray | None) -> None:
        self.record_stack(row, net.stack)
        self.vr[row] = net.vr
        if delta is None:
            self.delta[row] = 0.0
        else:
            self.delta[row] = delta

    def resized(self, stack, rows: int) -> "Tape":
        """A copy with room for ``rows`` rows, the existing ones first."""
        other = Tape(stack, rows, self.vr.shape[1], self.delta.shape[1])
        keep = min(rows, self.rows)
        for mine, theirs in zip(self.arrays("").values(), other.arrays("").values()):
            theirs[:keep] = mine[:keep]
        return other

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}vr": self.vr, f"{prefix}delta": self.delta}
        for l, (v, D) in enumerate(zip(self.v, self.D)):
            out[f"{prefix}v{l}"] = v
            out[f"{prefix}D{l}"] = D
        return out


def backprop(net, tape: Tape, order: Sequence[int], n_errors: int, grad: np.ndarray) -> None:
    """Write into ``grad`` the gradient of the losses at rows order[:n_errors].

    ``order`` lists tape rows newest first; the walk stops after its last row.
    """
    sources = order[:n_errors]
    deltas = tape.delta[sources]
    # readout: dL/dB = sum_s delta_s [h_s; 1]^T
    np.dot(deltas.T, tape.vr[sources], out=grad[net.n_recurrent :].reshape(net.B.shape))
    errors = np.dot(deltas, net.V)  # dL_s/dh^L_s = V^T delta_s
    backprop_stack(net.stack, tape, order, errors, grad[: net.n_recurrent])


def backprop_stack(stack, tape: Tape, order: Sequence[int], errors: np.ndarray, grad: np.ndarray) -> None:
    """Gradient (into ``grad``) of the stack's parameters, given errors[j] = dL/dh^L at row order[j]."""
    top = len(stack.units) - 1
    n_errors = errors.shape[0]
    dh = [np.zeros(n) for n in stack.units]
    for dz in tape._dz:
        dz.fill(0.0)  # rows outside the window contribute nothing
    for j, row in enumerate(order):
        if j < n_errors:
            dh[top] += errors[j]
        for l in range(top, -1, -1):
            n = stack.units[l]
            dz = np.multiply(dh[l], tape.D[l][row], out=tape._dz[l][row])
            back = np.dot(dz, stack.A[l])  # A^T dz = [U^T dz; W^T dz; sum dz]
            if stack.betas[l] is None:
                dh[l] = back[:n]
            else:
                dh[l] *= stack.one_minus_betas[l]
                dh[l] += back[:n]
            if l:
                dh[l - 1] += back[n:-1]
    for l in range(top + 1):
        A = grad[stack.offsets[l] : stack.offsets[l] + stack.A[l].size].reshape(stack.A[l].shape)
        np.dot(tape._dz[l].T, tape.v[l], out=A)  # dL/dA = sum_s dz_s v_s^T
