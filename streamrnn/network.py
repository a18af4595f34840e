"""The network's arrays and its forward step.

All parameters live in one flat float64 vector ``theta`` so that gradients,
optimiser moments and RTRL sensitivities are flat too and an optimiser step
is a handful of vector operations.  Layer l owns the block

    A_l = [U_l | W_l | b_l]        shape (n_l, n_l + m_l + 1), row-major in theta

so that z_t = A_l v_t with v_t = [h_{t-1}; x_t; 1].  The readout owns
B = [V | c] of shape (n_out, n_L + 1) after the last layer, a_t = B [h_t; 1].

Named views U0, W0, b0, U1, ..., V, c alias the same memory.

A step is ``forward(x)`` (writes z, f(z), f'(z) and the new states into
scratch buffers, leaving the hidden state as it was) followed by
``commit()`` (the new states become the hidden state).  Between the two,
learners read the buffers: ``v[l]`` = [h^l_{t-1}; x^l_t; 1], ``D[l]`` =
beta f'(z^l_t), ``h_new[l]``, ``vr`` = [h^L_t; 1], ``a`` and ``o``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .activations import hidden_activation, output_activation
from .cells import Cell, Elman, Leaky, Readout, check_size


def check_layers(layers) -> tuple:
    """The layers as a tuple of one or more Elman or Leaky cells; ValueError otherwise."""
    layers = tuple(layers)
    if not layers:
        raise ValueError("layers must hold at least one layer, got none")
    if not all(isinstance(cell, (Elman, Leaky)) for cell in layers):
        raise ValueError(f"layers must be Elman or Leaky cells, got {layers!r}")
    return layers


class Stack:
    """Recurrent layers 0..L-1 over a slice of a flat parameter vector."""

    def __init__(self, n_inputs: int, layers: Sequence[Cell], theta: np.ndarray):
        self.n_inputs = check_size("n_inputs", n_inputs)
        self.layers = check_layers(layers)
        self.units = [cell.units for cell in self.layers]
        self.in_sizes = [self.n_inputs] + self.units[:-1]
        self.acts = [hidden_activation(cell.activation) for cell in self.layers]
        self.betas = [cell.beta_vector() for cell in self.layers]
        self.one_minus_betas = [None if b is None else 1.0 - b for b in self.betas]
        self.n_params = self.size(self.n_inputs, self.layers)
        if theta.shape != (self.n_params,):
            raise ValueError(f"theta must have {self.n_params} entries, got {theta.shape}")
        self.A, self.offsets = [], []
        offset = 0
        for n, m in zip(self.units, self.in_sizes):
            k = n + m + 1
            self.offsets.append(offset)
            self.A.append(theta[offset : offset + n * k].reshape(n, k))
            offset += n * k
        # v[l] = [h_{t-1}; x_t; 1]: its head is the hidden state itself
        self.v = [np.zeros(n + m + 1) for n, m in zip(self.units, self.in_sizes)]
        for v in self.v:
            v[-1] = 1.0
        self.z = [np.zeros(n) for n in self.units]
        self.D = [np.zeros(n) for n in self.units]
        self.h_new = [np.zeros(n) for n in self.units]
        self._fz = [np.zeros(n) for n in self.units]
        self._leak = [np.zeros(n) for n in self.units]
        #: squared norm of each layer's newest state, a by-product of the finiteness check
        self.h_sq_norms = [0.0] * len(self.units)

    @staticmethod
    def size(n_inputs: int, layers: Sequence[Cell]) -> int:
        total, m = 0, n_inputs
        for cell in layers:
            total += cell.units * (cell.units + m + 1)
            m = cell.units
        return total

    # --- named views -------------------------------------------------------
    def U(self, l: int) -> np.ndarray:
        return self.A[l][:, : self.units[l]]

    def W(self, l: int) -> np.ndarray:
        return self.A[l][:, self.units[l] : -1]

    def b(self, l: int) -> np.ndarray:
        return self.A[l][:, -1]

    def hidden(self, l: int) -> np.ndarray:
        return self.v[l][: self.units[l]]

    # --- the step ----------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Compute every layer's new state from x; returns the top one."""
        inp = x
        for l, (A, v, n) in enumerate(zip(self.A, self.v, self.units)):
            v[n:-1] = inp
            z, D, fz = self.z[l], self.D[l], self._fz[l]
            np.dot(A, v, out=z)  # z_t = U h_{t-1} + W x_t + b
            act = self.acts[l]
            act.f(z, fz)
            act.derivative(z, fz, D)
            beta = self.betas[l]
            if beta is None:
                h = self.h_new[l]
                h[...] = fz
            else:  # h_t = (1 - beta) h_{t-1} + beta f(z_t);  dh_t/dz_t = beta f'(z_t)
                h = self.h_new[l]
                np.multiply(beta, fz, out=h)
                np.multiply(self.one_minus_betas[l], v[:n], out=self._leak[l])
                np.add(h, self._leak[l], out=h)
                np.multiply(D, beta, out=D)
            inp = h
        return inp

    def commit(self) -> bool:
        """Make the new states the hidden state; False (and no change) if one is not finite."""
        norms = [float(np.dot(h, h)) for h in self.h_new]
        if not all(math.isfinite(s) for s in norms):
            return False
        for v, h, n in zip(self.v, self.h_new, self.units):
            v[:n] = h
        self.h_sq_norms = norms
        return True

    def reset(self) -> None:
        for v, n in zip(self.v, self.units):
            v[:n] = 0.0
        self.h_sq_norms = [0.0] * len(self.units)

    def recurrent_jacobian(self, l: int) -> np.ndarray:
        """dh_t/dh_{t-1} of layer l at the newest step: (1 - beta) I + diag(beta f'(z)) U."""
        J = self.D[l][:, None] * self.U(l)
        if self.betas[l] is not None:
            J[np.diag_indices_from(J)] += self.one_minus_betas[l]
        return J

    def init_params(self, rng: np.random.Generator) -> None:
        for l, (n, m) in enumerate(zip(self.units, self.in_sizes)):
            q, r = np.linalg.qr(rng.standard_normal((n, n)))
            # orthogonal (every singular value 1) times the layer's gain
            self.U(l)[...] = q * np.sign(np.diag(r)) * self.layers[l].gain
            self.W(l)[...] = rng.standard_normal((n, m)) / math.sqrt(m)
            self.b(l)[...] = 0.0


class Network:
    """A stack of recurrent layers and a linear readout over one flat ``theta``."""

    def __init__(self, n_inputs: int, layers: Sequence[Cell], readout: Readout):
        if not isinstance(readout, Readout):
            raise ValueError(f"readout must be a streamrnn.Readout, got {readout!r}")
        layers = check_layers(layers)
        n_rec = Stack.size(check_size("n_inputs", n_inputs), layers)
        n_top = layers[-1].units
        self.readout = readout
        self.n_outputs = readout.outputs
        self.n_recurrent = n_rec
        self.theta = np.zeros(n_rec + readout.outputs * (n_top + 1))
        self.stack = Stack(n_inputs, layers, self.theta[:n_rec])
        self.n_inputs = self.stack.n_inputs
        self.B = self.theta[n_rec:].reshape(readout.outputs, n_top + 1)
        self.out_act = output_activation(readout.activation)
        self.vr = np.zeros(n_top + 1)
        self.vr[-1] = 1.0
        self.a = np.zeros(readout.outputs)
        self.o = np.zeros(readout.outputs)

    @property
    def n_params(self) -> int:
        return self.theta.shape[0]

    @property
    def V(self) -> np.ndarray:
        return self.B[:, :-1]

    @property
    def c(self) -> np.ndarray:
        return self.B[:, -1]

    def views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Named views of a flat vector laid out like theta (params, gradients, moments)."""
        out, stack = {}, self.stack
        for l, (n, m) in enumerate(zip(stack.units, stack.in_sizes)):
            A = flat[stack.offsets[l] : stack.offsets[l] + n * (n + m + 1)].reshape(n, n + m + 1)
            out[f"U{l}"], out[f"W{l}"], out[f"b{l}"] = A[:, :n], A[:, n:-1], A[:, -1]
        B = flat[self.n_recurrent :].reshape(self.B.shape)
        out["V"], out["c"] = B[:, :-1], B[:, -1]
        return out

    def params(self) -> dict[str, np.ndarray]:
        return self.views(self.theta)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """o_t = g(V h_t + c) for input x, leaving the hidden state untouched."""
        top = self.stack.forward(x)
        self.vr[:-1] = top
        np.dot(self.B, self.vr, out=self.a)
        return self.out_act.g(self.a, self.o)

    def commit(self) -> bool:
        return self.stack.commit()

    def init_params(self, rng: np.random.Generator) -> None:
        self.stack.init_params(rng)
        n_top = self.B.shape[1] - 1
        self.V[...] = rng.standard_normal(self.V.shape) * (0.1 / math.sqrt(n_top))
        self.c[...] = 0.0
