"""Recorded steps and the backward pass through them.

A ``Tape`` keeps, per recorded step s, what back-propagation needs and the
forward pass already computed: every layer's record (for an Elman or Leaky
layer v^l_s = [h^l_{s-1}; x^l_s; 1] and D^l_s = beta f'(z^l_s)), the readout
input [y^L_s; 1] and delta_s = dL_s/da_s (zero where the step had no target):
O(h n) numbers, the forward pass never recomputed.  The recurrent Jacobian is
not stored (it would be h n^2): each layer's cell forms its products from the
record and the current weights.

``backprop_stack`` walks rows newest to oldest, for each layer top-down,
with e_s = dL/dh_s (the layer's state):

    e_{s-1} = J_s^T e_s                            # the cell's ``backward``, into the row before
    dL/dx_s = (dh_s/dx_s)^T e_s                    # to the layer below, same step (stacks)

and then, for all rows at once, the cell's ``param_grad`` (for a dense cell
dL/dA = sum_s dz_s v_s^T, dz_s = D_s * e_s).  States before the oldest row are
held fixed: that is the truncation.  Epochwise BPTT holds the weights fixed over
the sequence, so this is its exact gradient; truncated BPTT, which updates
between steps, back-propagates through the window with the current weights
(as re-running the window would).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class Tape:
    def __init__(self, stack, rows: int, readout_width: int = 0, outputs: int = 0):
        self._stack = stack
        self.records = [{name: np.zeros((rows,) + a.shape) for name, a in layer.record.items()}
                        for layer in stack.layers]
        self.vr = np.zeros((rows, readout_width))
        self.delta = np.zeros((rows, outputs))
        # the numpy backward pass's scratch, made on its first use (``_scratch``): a compiled step
        # (``streamrnn.kernels``) never walks the tape here, and a daemon holds thousands of tapes
        self._e = None

    def _scratch(self) -> None:
        """dL/dh and dz per row, and per-row views made once (the backward loop is the hot path)."""
        stack, rows = self._stack, self.rows
        self._e = [np.zeros((rows, layer.batch, layer.s)) for layer in stack.layers]
        self._dz = [np.zeros((rows, layer.batch, layer.dz_width)) for layer in stack.layers]
        self._e_rows = [list(e) for e in self._e]
        # dL/dx^l at one row, sent to the layer below (None for layer 0: the inputs need none)
        self._e_in = [None] + [np.zeros((layer.batch, layer.m)) for layer in stack.layers[1:]]
        self._dz_rows = [list(dz) for dz in self._dz]
        self._rec_rows = [[{name: a[row] for name, a in rec.items()} for row in range(rows)] for rec in self.records]

    @classmethod
    def for_network(cls, net, rows: int) -> "Tape":
        return cls(net.stack, rows, net.vr.shape[0], net.n_outputs)

    @property
    def rows(self) -> int:
        return self.vr.shape[0]

    def record_stack(self, row: int, stack) -> None:
        for layer, rec in zip(stack.layers, self.records):
            for name, a in layer.record.items():
                rec[name][row] = a

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
        for l, rec in enumerate(self.records):
            for name in rec:  # only layer 0's v holds the network's inputs
                out[f"{prefix}{name}{l}"] = "inputs0" if (l == 0 and name == "v") else "fixed"
        return out

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}vr": self.vr, f"{prefix}delta": self.delta}
        for l, rec in enumerate(self.records):
            for name, a in rec.items():
                out[f"{prefix}{name}{l}"] = a[:, 0]  # one stream: the batch axis is not saved
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
        np.dot(deltas.T, tape.vr[sources], out=gB)  # dL/dB = sum_s delta_s [y_s; 1]^T
        errors = np.dot(deltas, net.V)  # dL_s/dy^L_s = V^T delta_s
    backprop_stack(net.stack, tape, order, errors, grad[: net.n_recurrent])


def _to_state(layer, rec, e_out: np.ndarray) -> np.ndarray:
    """An error on a layer's output y as an error on its state h: (dy/dh)^T e."""
    return e_out if layer.output_is_state else layer.output_vjp(rec, e_out)


def backprop_stack(stack, tape: Tape, order: Sequence[int], errors: np.ndarray, grad: np.ndarray) -> None:
    """Gradient (into ``grad``) of the stack's parameters, given errors[j] = dL/dy^L at row order[j]."""
    layers = stack.layers
    top, last = len(layers) - 1, len(order) - 1
    n_errors = errors.shape[0]
    if tape._e is None:
        tape._scratch()
    for dz in tape._dz:
        dz.fill(0.0)  # rows outside the window contribute nothing
    e_rows, dz_rows, rec_rows = tape._e_rows, tape._dz_rows, tape._rec_rows
    first, top_layer = order[0], layers[top]
    e_rows[top][first][...] = _to_state(top_layer, rec_rows[top][first], errors[0][None, :])
    for l in range(top):
        e_rows[l][first].fill(0.0)
    if top == 0:  # one layer: the hot path, one backward call per row
        backward, recs, es, dzs = top_layer.backward, rec_rows[0], e_rows[0], dz_rows[0]
        for j in range(last):
            row, prev = order[j], order[j + 1]
            backward(recs[row], es[row], dzs[row], es[prev])  # e_{s-1} = J_s^T e_s
            if j + 1 < n_errors:
                es[prev] += _to_state(top_layer, recs[prev], errors[j + 1][None, :])
        backward(recs[order[last]], es[order[last]], dzs[order[last]])
    else:
        for j, row in enumerate(order):
            prev = order[j + 1] if j < last else None
            for l in range(top, -1, -1):
                layer, e_in = layers[l], tape._e_in[l]
                # e is complete: carried from row's successor, injected, and from the layer above
                back = None if prev is None else e_rows[l][prev]
                layer.backward(rec_rows[l][row], e_rows[l][row], dz_rows[l][row], back, e_in)
                if l:  # to the layer below at the same step, through its output
                    e_rows[l - 1][row] += _to_state(layers[l - 1], rec_rows[l - 1][row], e_in)
            if prev is not None and j + 1 < n_errors:
                e_rows[top][prev] += _to_state(top_layer, rec_rows[top][prev], errors[j + 1][None, :])
    for layer, rec, dz, off in zip(layers, tape.records, tape._dz, stack.offsets):
        layer.param_grad(rec, dz, grad[None, off : off + layer.n_params])
