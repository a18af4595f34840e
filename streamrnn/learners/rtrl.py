"""Exact real-time recurrent learning (Williams & Zipser, 1989).

Layer l carries the sensitivities S^l_t = dh^l_t/dtheta_{<=l} of its state to
the parameters of itself and every layer below.  One step, with
J = dh_t/dh_{t-1}:

    S^l_t = J^l_t S^l_{t-1}                       # the layer's own recurrence
          + dh^l_t/dx^l_t  dy^{l-1}_t/dtheta       # through the layer below (l > 0)
          + dh^l_t/dtheta_l                        # the immediate influence

Each layer's cell computes these products in its own structure (see
``streamrnn.cells.base``): a dense cell keeps S^l as an (n_l, P_{<=l}) matrix
and pays O(n^2 P) for J S; a diagonal cell pays O(n (m + 1)) for its own
parameters.  The gradient of L_t is g^T S^L_t for the recurrent parameters,
g = dL/dh^L_t = (dy/dh)^T V^T delta_t, and delta_t [y_t; 1]^T for the readout.
"""

from __future__ import annotations

import numpy as np

from .base import LayerSensitivities


class RTRL(LayerSensitivities):
    """Exact RTRL: no truncation; cost and memory as each layer's cell gives them."""

    name = "rtrl"

    def _allocate(self, net) -> None:
        st = net.stack
        self._layers = st.layers
        self._arrays = [layer.rtrl_allocate(off) for layer, off in zip(st.layers, st.offsets)]
        self._g = np.zeros((1, st.layers[-1].o))
        self._grad = self._views = None  # the last grad vector, and its recurrent and readout views

    def step(self, net, delta, grad) -> bool:
        S_in = None
        for layer, arrays in zip(self._layers, self._arrays):
            layer.rtrl_step(layer.record, arrays, S_in)
            S_in = layer.output_jvp(layer.record, layer.rtrl_dense(arrays)) if layer is not self._layers[-1] else None
        if delta is None:
            return False
        if grad is not self._grad:
            self._grad, self._views = grad, (grad[None, : net.n_recurrent], grad[net.n_recurrent :].reshape(net.B.shape))
        top = self._layers[-1]
        np.dot(delta, net.V, out=self._g[0])  # dL/dy^L_t = V^T delta
        g = self._g if top.output_is_state else top.output_vjp(top.record, self._g)
        top.rtrl_gradient(self._arrays[-1], g, self._views[0])
        np.multiply(delta[:, None], net.vr, out=self._views[1])
        return True

    def state_arrays(self):
        out = {}
        for l, (layer, arrays) in enumerate(zip(self._layers, self._arrays)):
            for name, a in layer.rtrl_state(arrays).items():
                out[f"{name}{l}"] = a[0]  # one stream: the batch axis is not saved
        return out

    def layouts(self):
        out = {}
        for l, (layer, arrays) in enumerate(zip(self._layers, self._arrays)):
            for name in layer.rtrl_state(arrays):
                layout = layer.rtrl_layout(name)  # "inputs": columns follow the layer's record v
                out[f"{name}{l}"] = ("inputs0" if l == 0 else "fixed") if layout == "inputs" else layout
        return out

    def config(self):
        return {"kind": "RTRL"}
