"""The gated recurrent unit (Cho et al., 2014).

    v_t = [h_{t-1}; x_t; 1],  A = [U | W | b] of shape (3n, n + m + 1), rows: update gate u, reset gate r, candidate c
    u_t = sigma(A_u v_t),  r_t = sigma(A_r v_t)
    c_t = f(U_c (r_t * h_{t-1}) + W_c x_t + b_c)
    h_t = (1 - u_t) * h_{t-1} + u_t * c_t

The candidate rows read w_t = [r_t * h_{t-1}; x_t; 1] instead of v_t.  The
step's record is v, u, r and the derivatives of h_t by the pre-activations
z_u, z_c and of the candidate's r * h_{t-1} by z_r:

    du = u (1 - u) (c - h_{t-1}),   dc = u f'(z_c),   dr = r (1 - r) h_{t-1}

From them, with the current weights:

    J = dh_t/dh_{t-1} = diag(1 - u) + diag(du) U_u + diag(dc) U_c (diag(r) + diag(dr) U_r)
    dh_t/dx_t = diag(du) W_u + diag(dc) (W_c + U_c diag(dr) W_r)
    dh_i/dA_u[i, :] = du_i v,  dh_i/dA_c[i, :] = dc_i w     (unit i only)
    dh_i/dA_r[j, :] = dc_i U_c[i, j] dr_j v                  (every unit i, through U_c)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..activations import Sigmoid
from .dense import BlockLayer, DenseCell


@dataclass(frozen=True)
class GRU(DenseCell):
    """GRU layer: gates u (update) and r (reset), candidate c = f(...), h_t = h_{t-1} + u (c - h_{t-1}).

    ``activation`` is the candidate's f ("tanh", "sigmoid", "relu", "identity"); the
    gates are sigmoids.  Each recurrent block U_u, U_r, U_c starts as a random
    orthogonal matrix times ``gain``, as for ``Elman``.
    """

    kind = "GRU"

    units: int
    activation: str = "tanh"
    gain: float = 1.0

    #: A's rows: update gate u, reset gate r, candidate c (each with its own orthogonal U; b = 0,
    #: so u starts at 1/2: half old state, half candidate)
    gates = 3

    def layer(self, m, flat, batch=1):
        return GRULayer(self, m, flat, batch)


def _candidate_input(v: np.ndarray, r: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """w = [r * h_{t-1}; x_t; 1], what the candidate rows read, from v (..., k) and r (..., n)."""
    out = np.empty_like(v) if out is None else out
    out[...] = v
    out[..., : r.shape[-1]] *= r
    return out


class GRULayer(BlockLayer):
    """Runtime of a GRU cell; record: v = [h_{t-1}; x_t; 1], u, r, du, dr, dc (see the module)."""

    def __init__(self, cell, m, flat, batch):
        super().__init__(cell, m, flat, batch, extra=("u", "r", "du", "dr", "dc"))
        n, k = self.n, self.n + m + 1
        self.Uc = self.U[2 * n :]
        self.sigma = Sigmoid()
        self._z = np.zeros((batch, 3 * n))
        self._w = np.zeros((batch, k))
        self._c = np.zeros((batch, n))

    def forward(self, x):
        n, rec = self.n, self.record
        v, u, r = rec["v"], rec["u"], rec["r"]
        h, z, c = v[:, :n], self._z, self._c
        zu, zr, zc = z[:, :n], z[:, n : 2 * n], z[:, 2 * n :]
        v[:, n:-1] = x
        # one matrix-vector product per stream: a batch row comes out as it would alone, bit for bit
        np.matmul(self.A[: 2 * n], v[:, :, None], out=z[:, : 2 * n, None])  # z_u, z_r = A_u v, A_r v
        self.sigma.f(zu, u)
        self.sigma.f(zr, r)
        w = _candidate_input(v, r, self._w)
        np.matmul(self.A[2 * n :], w[:, :, None], out=zc[:, :, None])  # z_c = U_c (r * h) + W_c x + b_c
        self.act.f(zc, c)
        self.act.derivative(zc, c, rec["dc"])
        rec["dc"] *= u  # dc = u f'(z_c)
        c -= h  # c - h_{t-1}
        self.sigma.derivative(zu, u, rec["du"])
        rec["du"] *= c  # du = u (1 - u) (c - h_{t-1})
        self.sigma.derivative(zr, r, rec["dr"])
        rec["dr"] *= h  # dr = r (1 - r) h_{t-1}
        np.multiply(u, c, out=self.new_state)  # h_t = h_{t-1} + u (c - h_{t-1})
        self.new_state += h
        return self.new_state

    def saturated(self):
        return int((np.abs(self.state) > 0.99).sum())

    # --- products ---------------------------------------------------------------
    def _tangent(self, rec, gu, q, out):
        """out = du * gu + dc * (U_c q): dh_t from a tangent gu of z_u and q of r * h_{t-1}."""
        np.matmul(self.Uc, q, out=out)
        out *= rec["dc"][:, :, None]
        out += rec["du"][:, :, None] * gu
        return out

    def jvp(self, rec, S, out):
        n = self.n
        g = np.matmul(self.U[: 2 * n], S)  # U_u S, U_r S
        q = rec["r"][:, :, None] * S  # d(r * h) = r dh + h dr
        q += rec["dr"][:, :, None] * g[:, n:]
        self._tangent(rec, g[:, :n], q, out)
        out += (1.0 - rec["u"])[:, :, None] * S
        return out

    def jvp_input(self, rec, S, out):
        n = self.n
        g = np.matmul(self.W, S)  # W_u S, W_r S, W_c S
        self._tangent(rec, g[:, :n], rec["dr"][:, :, None] * g[:, n : 2 * n], out)
        out += rec["dc"][:, :, None] * g[:, 2 * n :]
        return out

    def backward(self, rec, e, dz, back=None, e_in=None):
        n = self.n
        np.multiply(rec["du"], e, out=dz[:, :n])  # dL/dz_u
        np.multiply(rec["dc"], e, out=dz[:, 2 * n :])  # dL/dz_c
        g = dz[:, 2 * n :] @ self.Uc  # dL/d(r * h_{t-1})
        np.multiply(rec["dr"], g, out=dz[:, n : 2 * n])  # dL/dz_r
        if back is not None:
            np.dot(dz[:, : 2 * n], self.U[: 2 * n], out=back)  # J^T e = U_u^T dz_u + U_r^T dz_r + r g + (1 - u) e
            back += rec["r"] * g
            back += (1.0 - rec["u"]) * e
        if e_in is not None:
            np.dot(dz, self.W, out=e_in)

    @property
    def dz_width(self):
        return 3 * self.n

    def param_grad(self, recs, dzs, out):
        # dL/dA_{u,r} = sum_s dz_s v_s^T, dL/dA_c = sum_s dz_{c,s} w_s^T, per stream: (B, rows, T) @ (B, T, k)
        n = self.n
        A = out.reshape(out.shape[:-1] + self.A.shape)
        w = _candidate_input(recs["v"], recs["r"])
        for rows, inp in ((slice(0, 2 * n), recs["v"]), (slice(2 * n, None), w)):
            np.matmul(dzs[..., rows].transpose(1, 2, 0), inp.transpose(1, 0, 2), out=A[:, rows])

    def add_immediate(self, rec, S):
        n, k = self.n, self.A.shape[1]
        v, w = rec["v"], _candidate_input(rec["v"], rec["r"])
        diag = self.diagonal(S, k, gates=3)  # (B, 3, n, k): unit i's own row of A_u, A_r, A_c
        for g, d, inp in ((0, rec["du"], v), (2, rec["dc"], w)):  # dh_i/dA_u[i, :] = du_i v, dh_i/dA_c[i, :] = dc_i w
            diag[:, g] += d[:, :, None] * inp[:, None, :]
        # dh_i/dA_r[j, :] = dc_i U_c[i, j] dr_j v: the reset gate reaches every unit
        M = rec["dc"][:, :, None] * self.Uc * rec["dr"][:, None, :]
        S[..., n * k : 2 * n * k] += (M[..., None] * v[:, None, None, :]).reshape(S.shape[0], n, n * k)
