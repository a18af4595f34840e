"""Exact real-time recurrent learning (Williams & Zipser, 1989).

Layer l carries the sensitivities S^l_t = dh^l_t/dtheta_{<=l} of its state to
the parameters of itself and every layer below, as an (n_l, P_{<=l}) matrix
whose columns follow theta's layout.  One step, with J = dh_t/dh_{t-1}:

    S^l_t = J^l_t S^l_{t-1}                       # the one dense U.S product
          + D^l_t * (W^l S^{l-1}_t)               # through the layer below (l > 0)
          + D^l_t (x) v^l_t  on the diagonal      # immediate influence on row k of A_l

where D = beta f'(z) and v = [h_{t-1}; x_t; 1].  The immediate term touches
only entries (k, A_l[k, :]) and is added through a strided view, never built
as a dense matrix.  The gradient of L_t is then (V^T delta_t)^T S^L_t for the
recurrent parameters and delta_t [h_t; 1]^T for the readout.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .base import LayerSensitivities


class RTRL(LayerSensitivities):
    """Exact RTRL: cost O(n^2 P) per step, memory O(n P), no truncation."""

    name = "rtrl"

    def _allocate(self, net) -> None:
        st = net.stack
        self._S, self._S_next, self._diag, self._diag_next = [], [], [], []
        self._J, self._outer, self._DW, self._below = [], [], [], []
        for l, (n, m) in enumerate(zip(st.units, st.in_sizes)):
            k = n + m + 1
            cols = st.offsets[l] + n * k
            pair = [np.zeros((n, cols)), np.zeros((n, cols))]
            diags = [self._diagonal(S, st.offsets[l], n, k) for S in pair]
            self._S.append(pair[0])
            self._S_next.append(pair[1])
            self._diag.append(diags[0])
            self._diag_next.append(diags[1])
            self._J.append(np.zeros((n, n)))
            self._outer.append(np.zeros((n, k)))
            self._DW.append(np.zeros((n, m)) if l else None)
            self._below.append(np.zeros((n, st.offsets[l])) if l else None)
        # views made once: theta and the input buffers are never reallocated
        self._U = [st.U(l) for l in range(len(st.units))]
        self._W = [st.W(l) for l in range(len(st.units))]

    @staticmethod
    def _diagonal(S: np.ndarray, offset: int, n: int, k: int) -> np.ndarray:
        """The (n, k) view of S holding dh_i/dA[i, :] for each unit i."""
        block = S[:, offset:]
        return as_strided(block, shape=(n, k), strides=(S.strides[0] + k * S.strides[1], S.strides[1]))

    def step(self, net, delta, grad) -> bool:
        st = net.stack
        for l in range(len(st.units)):
            D, S, new = st.D[l], self._S[l], self._S_next[l]
            Dcol = D[:, None]
            J = np.multiply(Dcol, self._U[l], out=self._J[l])  # diag(beta f'(z)) U
            if st.betas[l] is not None:
                J.reshape(-1)[:: J.shape[0] + 1] += st.one_minus_betas[l]  # + (1 - beta) I
            np.matmul(J, S, out=new)
            if l:  # influence through the layer below at the same step
                DW = np.multiply(Dcol, self._W[l], out=self._DW[l])
                below = np.matmul(DW, self._S[l - 1], out=self._below[l])
                off = st.offsets[l]
                np.add(new[:, :off], below, out=new[:, :off])
            np.multiply(Dcol, st.v[l], out=self._outer[l])
            np.add(self._diag_next[l], self._outer[l], out=self._diag_next[l])
            # swap buffers: the new sensitivities become current
            self._S[l], self._S_next[l] = new, S
            self._diag[l], self._diag_next[l] = self._diag_next[l], self._diag[l]
        if delta is None:
            return False
        dh = np.dot(delta, net.V)  # dL/dh^L_t = V^T delta
        np.dot(dh, self._S[-1], out=grad[: net.n_recurrent])
        np.multiply(delta[:, None], net.vr, out=grad[net.n_recurrent :].reshape(net.B.shape))
        return True

    def layouts(self):
        return {f"S{l}": "theta" for l in range(len(self._S))}  # columns: theta's first P_{<=l} entries

    def config(self):
        return {"kind": "RTRL"}
