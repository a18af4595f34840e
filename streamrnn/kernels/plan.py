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
from ..optim import SGD, Adam
from . import dense_step as k

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
    def __init__(self, model, out_code: int, opt_code: int):
        net, layer = model.network, model.network.stack.layers[0]
        self.layer = layer
        self.rtrl = isinstance(model.learner, RTRL)
        opt, state = model.optimizer, model.opt_state
        self.lr, self.scheduled = opt.lr, callable(opt.lr)
        b1, b2, eps = (opt.b1, opt.b2, opt.eps) if opt_code == 1 else (0.0, 0.0, 0.0)
        empty = np.zeros(0)
        m, s = (state["m"], state["s"]) if opt_code == 1 else (empty, empty)
        self.count = state["count"].reshape(1)  # a view: the kernel advances the model's own counter
        clip = model.clip_norm if model.clip_norm is not None else 0.0
        rec = layer.record
        head = (layer.A, net.B, rec["v"][0], model._x, empty if layer.leak is None else layer.leak,
                _ACTIVATIONS[layer.cell.activation], layer._z[0], layer._fz[0], rec["D"][0],
                layer.new_state[0], net.vr, net.a, net.o, out_code)
        tail = (model.grad, model._applied, net.theta, float(clip), opt_code, b1, b2, eps, m, s, self.count)
        self.out = np.zeros(6)
        self.y = np.zeros(net.n_outputs)  # the target of a step without one (read by nothing)
        self.head, self.tail = head, tail
        if self.rtrl:
            # exact RTRL swaps its two sensitivity buffers every step: one argument tuple per parity
            self.arrays = arrays = model.learner._arrays[0]
            self.J, self.g = J, g = np.zeros((layer.n, layer.n)), np.zeros(layer.n)
            self.calls = {id(arrays[a]): head + (arrays[a][0], arrays[b][0], J, g) + tail + (self.out,)
                          for a, b in (("S", "_next"), ("_next", "S"))}
        else:
            learner = model.learner
            tape = learner._tape
            rec_t = tape.records[0]
            self.window = (rec_t["v"][:, 0], rec_t["D"][:, 0], tape.vr, tape.delta, learner._counters,
                           learner.h, learner.h_prime, np.zeros(2 * layer.n), np.zeros(layer.n))
            self.call = head + self.window + tail + (self.out,)

    def swap(self) -> None:
        """After an RTRL step a kernel took: S_t is in the other buffer, swapped as the numpy learner does."""
        arrays = self.arrays
        arrays["S"], arrays["_next"] = arrays["_next"], arrays["S"]
        arrays["_own"], arrays["_own_next"] = arrays["_own_next"], arrays["_own"]

    def forward(self) -> None:
        """The forward pass for the input in ``model._x``, into the network's buffers (a predict)."""
        k.predict(*self.head, self.y)
        self.layer.refresh()

    def step(self, y) -> int:
        """Run the step for the input already in ``model._x``; the status (``dense_step``)."""
        has_y = y is not None
        lr = self.lr(int(self.count[0]) + 1) if self.scheduled else self.lr
        if self.rtrl:
            arrays = self.arrays
            k.rtrl_step(*self.calls[id(arrays["S"])], y if has_y else self.y, has_y, lr)
            if self.out[0] != k.FALLBACK:
                self.swap()
        else:
            k.bptt_step(*self.call, y if has_y else self.y, has_y, lr)
        self.layer.refresh()  # the weights moved outside the layer's own forward
        return int(self.out[0])
