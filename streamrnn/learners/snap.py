"""SnAp-1: RTRL with the sensitivities cut to the one-step influence pattern
(Menick, Elsen, Evci, Osindero, Simonyan & Graves, ICLR 2021, "Practical real
time recurrent learning with a sparse approximation").

Row i of layer l's block A_l = [U | W | b] reaches only unit i in one step, so
SnAp-1 keeps of S^l = dh^l/dA_l only the entries S^l[i, :] = dh^l_i/dA_l[i, :],
an (n_l, k_l) array (k = n + m + 1): memory O(P), cost O(P) per step.  With
D = beta f'(z), v = [h_{t-1}; x_t; 1] and J = dh_t/dh_{t-1} read only on its
diagonal, J_ii = (1 - beta_i) + D_i U_ii:

    S^l_t[i, :] = J_ii S^l_{t-1}[i, :] + D_i v_t       # the kept entries of J S + D (x) v

(the dropped entries are the paths through other units, J_ij for j != i; with a
diagonal U there are none and SnAp-1 is exact RTRL for one layer).  The gradient
of L_t, with g^L = V^T delta_t:

    dL/dA_l[i, :] = g^l_i S^l_t[i, :]
    g^{l-1} = W_l^T (D^l * g^l)                        # back through the stack, same step only

so influences of a lower layer's parameters that reach layer l through time
(l's own recurrence) are dropped too, as SnAp-1 does per layer.  The readout's
gradient delta_t [h_t; 1]^T is exact.
"""

from __future__ import annotations

import numpy as np

from ..cells.dense import DenseLayer
from .base import LayerSensitivities


class SnAp1(LayerSensitivities):
    """SnAp-1: diagonal-pattern RTRL, cost and memory O(P) per step; no settings."""

    name = "snap1"

    def _allocate(self, net) -> None:
        st = net.stack
        others = [layer for layer in st.layers if not isinstance(layer, DenseLayer)]
        if others:
            raise ValueError(f"SnAp-1 works on Elman and Leaky layers; use RTRL or UORO for "
                             f"{', '.join(sorted({layer.cell.kind for layer in others}))}")
        L = len(st.layers)
        self._layers = st.layers
        self._S = [np.zeros(layer.A.shape) for layer in st.layers]
        self._outer = [np.zeros_like(S) for S in self._S]
        self._Jd = [np.zeros((layer.n, 1)) for layer in st.layers]  # J_ii as a column, then scratch for D^l * g^l
        self._g = [np.zeros((layer.n, 1)) for layer in st.layers]  # g^l as a column
        self._gtop = self._g[-1][:, 0]
        # views made once: theta and the step's buffers are never reallocated; np.diagonal is a
        # read-only view of U's diagonal
        self._Udiag = [np.diagonal(layer.U)[:, None] for layer in st.layers]
        self._Dcol = [layer.record["D"][0][:, None] for layer in st.layers]
        self._v = [layer.record["v"][0] for layer in st.layers]
        self._oneminus = [None if layer.leak is None else layer.leak[:, None] for layer in st.layers]
        self._WT = [st.layers[l].W.T for l in range(L)]
        self._V = net.V
        self._grad = self._blocks = None  # the last grad vector and its per-layer (n, k) views

    def _views(self, net, grad):
        if grad is not self._grad:
            st = net.stack
            self._blocks = [grad[o : o + S.size].reshape(S.shape) for o, S in zip(st.offsets, self._S)]
            self._blocks.append(grad[net.n_recurrent :].reshape(net.B.shape))
            self._grad = grad
        return self._blocks

    def step(self, net, delta, grad) -> bool:
        for l, S in enumerate(self._S):
            D = self._Dcol[l]
            Jd = np.multiply(D, self._Udiag[l], out=self._Jd[l])  # J_ii = D_i U_ii
            if self._oneminus[l] is not None:
                np.add(Jd, self._oneminus[l], out=Jd)  # + (1 - beta_i)
            np.multiply(S, Jd, out=S)  # J_ii S[i, :]
            np.multiply(D, self._v[l], out=self._outer[l])  # D_i v_t
            np.add(S, self._outer[l], out=S)
        if delta is None:
            return False
        blocks = self._views(net, grad)
        np.dot(delta, self._V, out=self._gtop)  # g^L = V^T delta
        g = self._g[-1]
        for l in range(len(self._S) - 1, -1, -1):
            np.multiply(g, self._S[l], out=blocks[l])  # dL/dA_l[i, :] = g_i S[i, :]
            if l:  # g^{l-1} = W_l^T (D^l * g^l)
                Dg = np.multiply(self._Dcol[l], g, out=self._Jd[l])  # the step's J_ii is used up: scratch
                g = np.dot(self._WT[l], Dg, out=self._g[l - 1])
        np.multiply(delta[:, None], net.vr, out=blocks[-1])  # readout: delta [h_t; 1]^T
        return True

    def state_arrays(self):
        return {f"S{l}": S for l, S in enumerate(self._S)}

    def layouts(self):
        # S_l[i, :] = dh_i/dA_l[i, :]: its columns follow layer l's v; only layer 0 reads the inputs
        return {f"S{l}": "inputs0" if l == 0 else "fixed" for l in range(len(self._S))}

    def config(self):
        return {"kind": "SnAp1"}
