"""Which model steps a kernel runs, and the call that binds it to a model's own arrays.

``plan(model)`` returns a ``KernelStep`` when the model is one the kernels
cover (see the package docstring), else None.  The kernel reads and writes
the model's arrays in place (theta, the layer's record and state, the
readout buffers, the learner's state, the optimiser's moments), so nothing
is copied per step and the numpy path can take over at any step.
"""

from __future__ import annotations

import numpy as np

from ..cells.dense import DenseLayer
from ..learners.rtrl import RTRL
from ..learners.truncated_bptt import TruncatedBPTT
from ..losses import CrossEntropy, LogLoss, SquaredError
from ..model import buffer
from ..optim import SGD, Adam
from . import dense_step as k
from . import network_table as nt
from .table import ArrayTable, constant, with_spare_row

_ACTIVATIONS = {"tanh": 0, "sigmoid": 1, "relu": 2, "identity": 3}
#: the canonical readout/loss pairs, where delta = dL/da = o - y
_OUTPUTS = {("identity", SquaredError): 0, ("sigmoid", LogLoss): 1, ("softmax", CrossEntropy): 2}
_OPTIMIZERS = {SGD: 0, Adam: 1}


def plan(model) -> "KernelStep | None":
    net = model.network
    layers = net.stack.layers
    out_code = _OUTPUTS.get((net.readout.activation, type(model.loss)))
    opt_code = _OPTIMIZERS.get(type(model.optimizer))
    if len(layers) != 1 or type(layers[0]) is not DenseLayer or out_code is None or opt_code is None:
        return None
    if type(model.learner) not in (RTRL, TruncatedBPTT):
        return None
    return KernelStep(model, out_code, opt_code)


class KernelStep:
    """A model's arrays in an ``ArrayTable`` (``network_table.SLOTS``), and the calls that step them."""

    def __init__(self, model, out_code: int, opt_code: int):
        net, layer = model.network, model.network.stack.layers[0]
        self.layer = layer
        self.rtrl = isinstance(model.learner, RTRL)
        opt, state = model.optimizer, model.opt_state
        self.lr, self.scheduled = opt.lr, callable(opt.lr)
        self.count = state["count"].reshape(1)  # a view: the kernel advances the model's own counter
        # the step's outcome (read right after it) and the target of a step without one (read by nothing)
        self.out, self.y = buffer(model._buffers, "out", 6), buffer(model._buffers, "y", net.n_outputs)
        rec = layer.record
        slots = {"A": layer.A, "B": net.B, "v": rec["v"][0], "x": model._x, "z": layer._z[0], "fz": layer._fz[0],
                 "D": rec["D"][0], "h": layer.new_state[0], "vr": net.vr, "a": net.a, "o": net.o, "y": self.y,
                 "grad": model.grad, "applied": model._applied, "theta": net.theta, "count": self.count,
                 "out": self.out}
        if layer.leak is not None:
            slots["leak"] = layer.leak
        if opt_code == 1:
            slots.update(m=state["m"], s=state["s"])
        ints = {"act": _ACTIVATIONS[layer.cell.activation], "out_code": out_code, "opt": opt_code}
        if self.rtrl:
            # exact RTRL swaps its two sensitivity buffers every step: ``point`` aims the slots before each
            self.arrays = arrays = model.learner._arrays[0]
            first, second = arrays["S"], arrays["_next"]
            slots.update(self.sensitivities(), J=buffer(model._buffers, "J", layer.n + 1, layer.n),
                         g=buffer(model._buffers, "g", layer.n))
            a1, a2 = first[0].ctypes.data, second[0].ctypes.data
            self._parity = {id(first): (a1, a2), id(second): (a2, a1)}
            self._aimed = None  # the S buffer this object's own table is aimed for (``step``)
            ints["step"] = nt.RTRL
        else:
            learner = model.learner
            tape = learner._tape
            rec_t = tape.records[0]
            slots.update({"tape.v": rec_t["v"][:, 0], "tape.D": rec_t["D"][:, 0], "tape.vr": tape.vr,
                          "tape.delta": tape.delta, "counters": learner._counters,
                          "e": buffer(model._buffers, "e", 2 * layer.n), "dz": buffer(model._buffers, "dz", layer.n)})
            ints.update(step=nt.BPTT, hwin=learner.h, hprime=learner.h_prime)
        self.ints = constant(np.array([ints.get(name, 0) for name in nt.INTS], dtype=np.int64))
        clip = model.clip_norm if model.clip_norm is not None else 0.0
        self.numbers = constant(np.array([clip, *((opt.b1, opt.b2, opt.eps) if opt_code == 1 else (0.0, 0.0, 0.0))]))
        slots.update({"net.ints": self.ints, "net.numbers": self.numbers})
        self.slots = slots  # by name, for a table that holds the network's slots after its own
        self._table = None  # made on the first step through this object (a hybrid model steps through its own)

    @property
    def table(self) -> ArrayTable:
        if self._table is None:
            self._table = ArrayTable(nt.fill(self.slots, nt.SLOTS), [kind for _, kind in nt.SLOTS])
        return self._table

    def sensitivities(self) -> dict:
        """The S and S_next slots as the learner's buffers stand now: S_{t-1}, and the other buffer with
        the spare row the gradient rides on (``dense_step.rtrl_learn``)."""
        return {"S": self.arrays["S"][0], "S_next": with_spare_row(self.arrays["_next"][0])}

    def point(self, table, base: int = 0) -> None:
        """Aim the S and S_next slots (from ``base``) at the buffers that hold S_{t-1} and will get S_t."""
        table.ptr[base + nt.SENS], table.ptr[base + nt.SENS_NEXT] = self._parity[id(self.arrays["S"])]

    def swap(self) -> None:
        """After an RTRL step a kernel took: S_t is in the other buffer, swapped as the numpy learner does."""
        arrays = self.arrays
        arrays["S"], arrays["_next"] = arrays["_next"], arrays["S"]
        arrays["_own"], arrays["_own_next"] = arrays["_own_next"], arrays["_own"]

    def aim(self, table, base: int, aimed):
        """RTRL, before a compiled step on ``table`` (this network's slots from ``base``): aim its S slots at
        the learner's buffers unless they still are (``aimed``: what this or ``stepped`` returned for that
        table last; a numpy step swaps the buffers).  Returns the buffer the slots are aimed at."""
        S = self.arrays["S"]
        if S is not aimed:
            self.point(table, base)
        return S

    def stepped(self, status: int):
        """RTRL, after a compiled step: a step that ran (status not 0) swapped the table's S slots, and the
        learner's buffers follow.  Returns the buffer the slots are aimed at (for ``aim``)."""
        if status:
            self.swap()
        return self.arrays["S"]

    def forward(self) -> None:
        """The forward pass for the input in ``model._x``, into the network's buffers (a predict)."""
        table = self.table
        nt.forward(table.ptr, table.dims, 0, self.ints, 0)
        self.layer.refresh()

    def step(self, x: np.ndarray, y) -> int:
        """Run the step for the input x (a C-contiguous float64 vector); the status (``dense_step``)."""
        lr = self.lr(int(self.count[0]) + 1) if self.scheduled else self.lr
        table = self._table or self.table
        if self.rtrl:
            self._aimed = self.aim(table, 0, self._aimed)
        status = nt.model_step(table.ptr, table.dims, x, self.y if y is None else y, y is not None, lr)
        if self.rtrl:
            self._aimed = self.stepped(status)
        self.layer._copied = False  # ``refresh``, inline: the weights moved outside the layer's own forward
        return status
