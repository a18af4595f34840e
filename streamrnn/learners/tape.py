"""Recorded activations and the backward pass through them.

A ``Tape`` keeps, per recorded step s, what back-propagation needs and the
forward pass already computed: v^l_s = [h^l_{s-1}; x^l_s; 1] and
D^l_s = beta f'(z^l_s) for every layer, the readout input [h^L_s; 1] and
delta_s = dL_s/da_s (zero where the step had no target): O(h n) numbers, the
forward pass never recomputed.  The recurrent Jacobian is not stored (it
would be h n^2): its product is formed from D_s and the current U.

``backprop_stack`` walks rows newest to oldest, for each layer top-down:

    dz_s = D_s * dL/dh_s
    dL/dh_{s-1} = J_s^T dL/dh_s = U^T dz_s + (1 - beta) dL/dh_s
    dL/dx_s = W^T dz_s                           # to the layer below, same step (stacks)

and then, for all rows at once, dL/dA = sum_s dz_s v_s^T.  States before the
oldest row are held fixed: that is the truncation.  Epochwise BPTT holds U
fixed over the sequence, so this is its exact gradient; truncated BPTT, which
updates U between steps, back-propagates through the window with the current
weights (as re-running the window would).
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
        # scratch: dL/dh and dz per row, and per-row views made once (the backward loop is the hot path)
        self._dh = [np.zeros((rows, n)) for n in stack.units]
        self._dz = [np.zeros((rows, n)) for n in stack.units]
        self._dh_rows = [list(dh) for dh in self._dh]
        self._dz_rows = [list(dz) for dz in self._dz]
        self._D_rows = [list(D) for D in self.D]

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

    def layouts(self, prefix: str) -> dict[str, str]:
        out = {f"{prefix}vr": "fixed", f"{prefix}delta": "outputs"}
        for l in range(len(self.v)):
            out[f"{prefix}v{l}"] = "inputs0" if l == 0 else "fixed"  # only layer 0's v holds the inputs
            out[f"{prefix}D{l}"] = "fixed"
        return out

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
    for dz in tape._dz:
        dz.fill(0.0)  # rows outside the window contribute nothing
    dh_rows, dz_rows, D_rows = tape._dh_rows, tape._dz_rows, tape._D_rows
    # contiguous copies, once per walk: numpy would copy a strided view of A on every product
    UT = [np.ascontiguousarray(stack.U(l).T) for l in range(top + 1)]
    W = [None] + [np.ascontiguousarray(stack.W(l)) for l in range(1, top + 1)]
    leak = stack.one_minus_betas
    dh_rows[top][order[0]][...] = errors[0]
    if top == 0:  # one layer: the hot path, two small products per step
        dh, dz, D, U_T, lk = dh_rows[0], dz_rows[0], D_rows[0], UT[0], leak[0]
        multiply, dot = np.multiply, np.dot
        for j in range(len(order) - 1):
            row, prev = order[j], order[j + 1]
            z = multiply(D[row], dh[row], out=dz[row])  # dz_s = D_s * dL/dh_s
            back = dot(U_T, z, out=dh[prev])  # dL/dh_{s-1} = U^T dz_s (+ (1 - beta) dL/dh_s)
            if lk is not None:
                back += lk * dh[row]
            if j + 1 < n_errors:
                back += errors[j + 1]
        multiply(D[order[-1]], dh[order[-1]], out=dz[order[-1]])
        order = ()
    else:
        for l in range(top):
            dh_rows[l][order[0]].fill(0.0)
    for j, row in enumerate(order):
        prev = order[j + 1] if j + 1 < len(order) else None
        for l in range(top, -1, -1):
            dh = dh_rows[l][row]  # complete: carried from row's successor, injected, and from above
            dz = np.multiply(D_rows[l][row], dh, out=dz_rows[l][row])  # dz_s = D_s * dL/dh_s
            if l:  # to the layer below at the same step: W^T dz
                dh_rows[l - 1][row] += np.dot(dz, W[l])
            if prev is not None:
                back = np.dot(UT[l], dz, out=dh_rows[l][prev])  # dL/dh_{s-1} = U^T dz_s ...
                if leak[l] is not None:
                    back += leak[l] * dh  # ... + (1 - beta) dL/dh_s
        if prev is not None and j + 1 < n_errors:
            dh_rows[top][prev] += errors[j + 1]
    for l in range(top + 1):
        A = grad[stack.offsets[l] : stack.offsets[l] + stack.A[l].size].reshape(stack.A[l].shape)
        np.dot(tape._dz[l].T, tape.v[l], out=A)  # dL/dA = sum_s dz_s v_s^T
