"""Elman and leaky-integrator layers: a dense recurrent matrix U.

    z_t = U h_{t-1} + W x_t + b
    h_t = (1 - beta) h_{t-1} + beta f(z_t)        (beta = 1: the Elman cell)

The parameters are one block A = [U | W | b] of shape (n, n + m + 1), so that
z_t = A v_t with v_t = [h_{t-1}; x_t; 1].  The step's record is v and
D = beta f'(z); from them, with the current U:

    J = dh_t/dh_{t-1} = (1 - beta) I + diag(D) U
    dh_t/dx_t = diag(D) W
    dh_t/dA[i, :] = D_i v_t      (unit i only: the immediate influence is row-wise)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import numpy as np

from ..activations import hidden_activation
from .base import Block, Cell, Layer, check_gain, check_size


class DenseCell(Cell):
    """A cell whose parameters are one block A = [U | W | b] over v = [h_{t-1}; x_t; 1], with
    ``gates`` row blocks of n rows each (1 for Elman and Leaky, 3 for a GRU), and its
    initialisation: each n x n block of U orthogonal times ``gain``, W ~ N(0, 1/m), b = 0."""

    gain: float
    #: row blocks of A, each with its own recurrent matrix
    gates = 1

    def __post_init__(self):
        check_size("units", self.units)
        hidden_activation(self.activation)
        check_gain(self.gain)

    def beta_vector(self) -> np.ndarray | None:
        """Per-unit leak beta, or None for beta = 1 (no leak term)."""
        return None

    def blocks(self, m):
        return (Block("A", self.gates * self.units, self.units + m + 1, self.units),)

    def views(self, blocks, m):
        A, n = blocks["A"], self.units
        return {"U": A[..., :n], "W": A[..., n:-1], "b": A[..., -1]}

    def input_views(self):
        return ("W",)

    def init(self, blocks, m, rng):
        n = self.units
        view = self.views(blocks, m)
        for g in range(self.gates):
            q, r = np.linalg.qr(rng.standard_normal((n, n)))
            # orthogonal (every singular value 1) times the layer's gain
            view["U"][g * n : (g + 1) * n] = q * np.sign(np.diag(r)) * self.gain
        view["W"][...] = rng.standard_normal((self.gates * n, m)) / math.sqrt(m)
        view["b"][...] = 0.0

    def layer(self, m, flat, batch=1):
        return DenseLayer(self, m, flat, batch)


@dataclass(frozen=True)
class Elman(DenseCell):
    """Elman layer, h_t = f(U h_{t-1} + W x_t + b).

    ``activation`` is one of "tanh", "sigmoid", "relu", "identity".  U starts as a
    random orthogonal matrix times ``gain``: 1 keeps every direction of the state
    (a long memory from the start); a small gain starts nearly feed-forward, which
    suits streams whose events are independent, and learning grows U as needed.
    """

    kind = "Elman"

    units: int
    activation: str = "tanh"
    gain: float = 1.0


@dataclass(frozen=True)
class Leaky(DenseCell):
    """Leaky-integrator layer, h_t = (1 - beta) h_{t-1} + beta f(z_t).

    The Euler discretisation of tau dh/dt = -h + f(z) with step beta = dt/tau.
    ``beta`` lies in (0, 1], one value for all units or a tuple of one per unit;
    ``gain`` scales the initial orthogonal U, as for ``Elman``.
    """

    kind = "Leaky"

    units: int
    activation: str = "tanh"
    beta: Union[float, tuple] = 0.5
    gain: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        values = self.beta if isinstance(self.beta, tuple) else (self.beta,)
        if not all(isinstance(b, (int, float, np.integer, np.floating)) and not isinstance(b, bool) for b in values):
            raise ValueError(f"beta must be a number in (0, 1] or a tuple of them, got {self.beta!r}")
        beta = np.asarray(self.beta, dtype=float)
        if beta.ndim > 1 or (beta.ndim == 1 and beta.shape[0] != self.units):
            raise ValueError(
                f"beta must be a number or a tuple of {self.units} numbers (one per unit), "
                f"got {self.beta!r}"
            )
        if not np.all((beta > 0.0) & (beta <= 1.0)):
            raise ValueError(f"beta must lie in (0, 1], got {self.beta!r}")

    def beta_vector(self) -> np.ndarray | None:
        return np.broadcast_to(np.asarray(self.beta, dtype=float), (self.units,)).copy()

    @classmethod
    def from_fields(cls, fields):
        fields = dict(fields)
        beta = fields["beta"]
        fields["beta"] = beta[0] if len(beta) == 1 else tuple(beta)
        return fields

    def config(self):
        # beta always as a list (one value, or one per unit), as checkpoint headers have always had it
        return {"kind": self.kind, "units": self.units, "activation": self.activation, "gain": self.gain,
                "beta": list(np.atleast_1d(np.asarray(self.beta, dtype=float)).tolist())}


class BlockLayer(Layer):
    """The runtime a DenseCell's layers share: views U, W of the block A, the activation f, and the
    record's v = [h_{t-1}; x_t; 1], whose head is the state itself; ``extra`` names the record's
    other (B, n) arrays."""

    def __init__(self, cell, m, flat, batch, extra=()):
        super().__init__(cell, m, flat, batch)
        n = self.n
        self.A = self.blocks["A"]
        self.U, self.W = self.A[:, :n], self.A[:, n:-1]
        self.act = hidden_activation(cell.activation)
        v = np.zeros((batch, n + m + 1))
        v[:, -1] = 1.0
        self.record = {"v": v, **{name: np.zeros((batch, n)) for name in extra}}
        self.x_col = n
        self.state = v[:, :n]  # v's head is the hidden state itself
        self.out = self.new_state


class DenseLayer(BlockLayer):
    """Runtime of an Elman or Leaky cell; record: v = [h_{t-1}; x_t; 1] and D = beta f'(z_t)."""

    def __init__(self, cell, m, flat, batch):
        super().__init__(cell, m, flat, batch, extra=("D",))
        n = self.n
        beta = cell.beta_vector()
        self.beta = beta
        self.leak = None if beta is None else 1.0 - beta
        self._z = np.zeros((batch, n))
        self._fz = np.zeros((batch, n))
        # scratch of the numpy products, made on first use (``_buffer``): RTRL's J, dh/dx and
        # immediate influence, and the contiguous copies of U and W for the backward products
        # (numpy's dot copies a strided view on every call), taken at the first backward after
        # each forward: the weights of a walk back through a window are those of its newest step.
        # A compiled step (``streamrnn.kernels``) uses none of them.
        self._J = self._outer = self._DW = self._Uc = self._Wc = None
        self._copied = False

    def _buffer(self, name: str) -> np.ndarray:
        """The scratch array ``name``, made on its first use."""
        buf = getattr(self, name)
        if buf is None:
            n, m, b = self.n, self.m, self.batch
            k = n + m + 1  # v = [h_{t-1}; x_t; 1]
            shape = {"_J": (b, n, n), "_outer": (b, n, k), "_DW": (b, n, m), "_Uc": (n, n), "_Wc": (n, m)}
            buf = np.zeros(shape[name])
            setattr(self, name, buf)
        return buf

    def refresh(self):
        self._copied = False

    def forward(self, x):
        n, v, D = self.n, self.record["v"], self.record["D"]
        v[:, n:-1] = x
        self._copied = False
        z, fz, h = self._z, self._fz, self.new_state
        # z_t = U h_{t-1} + W x_t + b, one matrix-vector product per stream: a stream's result
        # never depends on the batch it is in (a (B, k) x (k, n) product would change the rounding)
        np.matmul(self.A, v[:, :, None], out=z[:, :, None])
        self.act.f(z, fz)
        self.act.derivative(z, fz, D)
        if self.beta is None:
            h[...] = fz
        else:  # h_t = (1 - beta) h_{t-1} + beta f(z_t);  dh_t/dz_t = beta f'(z_t)
            np.multiply(self.beta, fz, out=h)
            h += self.leak * v[:, :n]
            D *= self.beta
        return h

    def saturated(self):
        return int(self.act.saturated(self.state).sum())

    # --- products ---------------------------------------------------------------
    def jvp(self, rec, S, out):
        J = np.multiply(rec["D"][:, :, None], self.U, out=self._buffer("_J"))  # J = diag(D) U + (1 - beta) I
        if self.leak is not None:
            J.reshape(self.batch, -1)[:, :: self.n + 1] += self.leak
        return np.matmul(J, S, out=out)

    def jvp_input(self, rec, S, out):
        DW = np.multiply(rec["D"][:, :, None], self.W, out=self._buffer("_DW"))  # diag(D) W
        return np.matmul(DW, S, out=out)

    def backward(self, rec, e, dz, back=None, e_in=None):
        if not self._copied:
            np.copyto(self._buffer("_Uc"), self.U)
            np.copyto(self._buffer("_Wc"), self.W)
            self._copied = True
        np.multiply(rec["D"], e, out=dz)  # dz_s = D_s * dL/dh_s
        if back is not None:
            np.dot(dz, self._Uc, out=back)  # J^T e = U^T dz + (1 - beta) e
            if self.leak is not None:
                back += self.leak * e
        if e_in is not None:
            np.dot(dz, self._Wc, out=e_in)  # (dh/dx)^T e = W^T dz

    def param_grad(self, recs, dzs, out):
        # dL/dA = sum_s dz_s v_s^T, per stream: (B, n, T) @ (B, T, k)
        A = out.reshape(out.shape[:-1] + self.A.shape)
        np.matmul(dzs.transpose(1, 2, 0), recs["v"].transpose(1, 0, 2), out=A)

    def add_immediate(self, rec, S):
        diag = self.diagonal(S, self.A.shape[1])  # dh_i/dA[i, :] += D_i v_t
        diag += np.multiply(rec["D"][:, :, None], rec["v"][:, None, :], out=self._buffer("_outer"))
