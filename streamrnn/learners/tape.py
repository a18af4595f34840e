"""Recorded activations and the backward pass through them.

A ``Tape`` keeps, per recorded step s, what back-propagation needs and the
forward pass already computed: v^l_s = [h^l_{s-1}; x^l_s; 1],
D^l_s = beta f'(z^l_s) and the transposed recurrent Jacobian
J^l_s^T = ((1 - beta) I + diag(D^l_s) U^l)^T for every layer, the readout
input [h^L_s; 1] and delta_s = dL_s/da_s (zero where the step had no
target).  The forward pass is never recomputed.

``backprop_stack`` walks rows newest to oldest, for each layer top-down:

    dL/dh_{s-1} = J_s^T dL/dh_s                  # one matrix-vector product per step
    dL/dx_s = W^T (D_s * dL/dh_s)                # to the layer below, same step (stacks)

and then, for all rows at once,

    dz_s = D_s * dL/dh_s;   dL/dA = sum_s dz_s v_s^T

States before the oldest row are held fixed: that is the truncation.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class Tape:
    def __init__(self, stack, rows: int, readout_width: int = 0, outputs: int = 0):
        self.v = [np.zeros((rows, n + m + 1)) for n, m in zip(stack.units, stack.in_sizes)]
        self.D = [np.zeros((rows, n)) for n in stack.units]
        self.JT = [np.zeros((rows, n, n)) for n in stack.units]
        self.vr = np.zeros((rows, readout_width))
        self.delta = np.zeros((rows, outputs))
        # scratch: dL/dh per row, and per-row views made once (the backward loop is the hot path)
        self._dh = [np.zeros((rows, n)) for n in stack.units]
        self._dh_rows = [list(dh) for dh in self._dh]
        self._JT_rows = [list(JT) for JT in self.JT]
        self._JT_diag = [[JT.reshape(-1)[:: n + 1] for JT in rows_] for rows_, n in zip(self._JT_rows, stack.units)]

    @classmethod
    def for_network(cls, net, rows: int) -> "Tape":
        return cls(net.stack, rows, net.vr.shape[0], net.n_outputs)

    @property
    def rows(self) -> int:
        return self.vr.shape[0]

    def record_stack(self, row: int, stack) -> None:
        for l in range(len(stack.units)):
            self.v[l][row] = stack.v[l]
            D = self.D[l][row]
            D[...] = stack.D[l]
            np.multiply(stack.U(l).T, D, out=self._JT_rows[l][row])  # U^T diag(D)
            if stack.betas[l] is not None:
                self._JT_diag[l][row] += stack.one_minus_betas[l]

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
        for l, (v, D, JT) in enumerate(zip(self.v, self.D, self.JT)):
            out[f"{prefix}v{l}"] = v
            out[f"{prefix}D{l}"] = D
            out[f"{prefix}JT{l}"] = JT
        return out


def backprop(net, tape: Tape, order: Sequence[int], n_errors: int, grad: np.ndarray) -> None:
    """Write into ``grad`` the gradient of the losses at rows order[:n_errors].

    ``order`` lists tape rows newest first; the walk stops after its last row.
    """
    gB = grad[net.n_recurrent :].reshape(net.B.shape)
    if n_errors == 1:  # BPTT(h; 1): one loss, no gathering
        row = order[0]
        np.multiply(tape.delta[row][:, None], tape.vr[row], out=gB)
        errors = np.dot(tape.delta[row], net.V)[None, :]
    else:
        sources = order[:n_errors]
        deltas = tape.delta[sources]
        np.dot(deltas.T, tape.vr[sources], out=gB)  # dL/dB = sum_s delta_s [h_s; 1]^T
        errors = np.dot(deltas, net.V)  # dL_s/dh^L_s = V^T delta_s
    backprop_stack(net.stack, tape, order, errors, grad[: net.n_recurrent])


def backprop_stack(stack, tape: Tape, order: Sequence[int], errors: np.ndarray, grad: np.ndarray) -> None:
    """Gradient (into ``grad``) of the stack's parameters, given errors[j] = dL/dh^L at row order[j]."""
    top = len(stack.units) - 1
    n_errors = errors.shape[0]
    for dh in tape._dh:
        dh.fill(0.0)  # rows outside the window contribute nothing
    dh_rows, JT_rows = tape._dh_rows, tape._JT_rows
    dh_rows[top][order[0]][...] = errors[0]
    if top == 0:  # one layer: the walk is one matrix-vector product per step
        dh, JT = dh_rows[0], JT_rows[0]
        for j in range(1, len(order)):
            np.dot(JT[order[j - 1]], dh[order[j - 1]], out=dh[order[j]])  # dL/dh_{s-1} = J_s^T dL/dh_s
            if j < n_errors:
                dh[order[j]] += errors[j]
        order = ()
    for j, row in enumerate(order):
        prev = order[j + 1] if j + 1 < len(order) else None
        for l in range(top, -1, -1):
            dh = dh_rows[l][row]  # complete: carried from row's successor, injected, and from above
            if l:  # to the layer below at the same step: W^T (D * dL/dh)
                dz = dh * tape.D[l][row]
                dh_rows[l - 1][row] += np.dot(dz, stack.W(l))
            if prev is not None:
                np.dot(JT_rows[l][row], dh, out=dh_rows[l][prev])  # dL/dh_{s-1} = J_s^T dL/dh_s
        if prev is not None and j + 1 < n_errors:
            dh_rows[top][prev] += errors[j + 1]
    for l in range(top + 1):
        dz = np.multiply(tape._dh[l], tape.D[l], out=tape._dh[l])  # dz_s = D_s * dL/dh_s
        A = grad[stack.offsets[l] : stack.offsets[l] + stack.A[l].size].reshape(stack.A[l].shape)
        np.dot(dz.T, tape.v[l], out=A)  # dL/dA = sum_s dz_s v_s^T
