"""Bidirectional RNN over finite sequences (Schuster & Paliwal 1997).

A forward stack reads x_1..x_T into h_t, a backward stack with its own
weights reads x_T..x_1 into h'_t, and the readout sees both:

    o_t = g(V h_t + V' h'_t + c)

o_t depends on the future of the sequence, so this model cannot run on an
unbounded stream: it is fitted sequence by sequence with epochwise BPTT.
Parameter names are those of OnlineRNN with the backward stack's primed:
U0 W0 b0 ... (forward), U0' W0' b0' ... (backward), V, V', c.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .activations import output_activation
from .cells import Cell, Readout, check_layers, check_size
from .learners.tape import Tape, backprop_stack
from .losses import Loss, SquaredError
from .network import Stack
from .optim import Adam, Transform


class BidirectionalRNN:
    """Forward and backward recurrent stacks with one readout, trained by epochwise BPTT.

    Examples
    --------
    >>> import numpy as np
    >>> from streamrnn import Adam, BidirectionalRNN, Elman, Readout
    >>> model = BidirectionalRNN(1, (Elman(4),), Readout(1), optimizer=Adam(0.01), seed=0)
    >>> X = np.random.default_rng(0).normal(size=(20, 1))
    >>> Y = np.vstack([X[1:], [[0.0]]])           # y_t = x_{t+1}: the future
    >>> first = model.fit_sequence(X, Y)
    >>> for _ in range(200):
    ...     last = model.fit_sequence(X, Y)
    >>> bool(last < first / 100)
    True
    """

    def __init__(
        self,
        n_inputs: int,
        layers: Sequence[Cell],
        readout: Readout = Readout(1),
        loss: Loss | None = None,
        optimizer: Transform | None = None,
        seed: int = 0,
    ):
        check_size("n_inputs", n_inputs)
        layers = check_layers(layers)
        self.loss = loss if loss is not None else SquaredError()
        self.loss.check_output(readout.activation)
        self.optimizer = optimizer if optimizer is not None else Adam(1e-3)
        self.readout = readout
        n_rec = Stack.size(n_inputs, layers)
        n_top = layers[-1].out_size
        self.theta = np.zeros(2 * n_rec + readout.outputs * (2 * n_top + 1))
        self.forward_stack = Stack(n_inputs, layers, self.theta[:n_rec])
        self.backward_stack = Stack(n_inputs, layers, self.theta[n_rec : 2 * n_rec])
        self.n_recurrent = 2 * n_rec
        self.B = self.theta[2 * n_rec :].reshape(readout.outputs, 2 * n_top + 1)  # [V | V' | c]
        self.out_act = output_activation(readout.activation)
        rng = np.random.default_rng(seed)
        self.forward_stack.init_params(rng)
        self.backward_stack.init_params(rng)
        self.B[:, :-1] = rng.standard_normal((readout.outputs, 2 * n_top)) * (0.1 / np.sqrt(n_top))
        self.opt_state = self.optimizer.init(self.theta.shape[0])
        self.grad = np.zeros_like(self.theta)

    def params(self) -> dict[str, np.ndarray]:
        half = self.n_recurrent // 2
        out = {**self.forward_stack.views(self.theta[:half]), **self.backward_stack.views(self.theta[half : 2 * half], "'")}
        n_top = self.forward_stack.out_size
        out["V"], out["V'"], out["c"] = self.B[:, :n_top], self.B[:, n_top:-1], self.B[:, -1]
        return out

    def _run(self, stack: Stack, X: np.ndarray, tape: Tape | None) -> np.ndarray:
        """Top states for the rows of X in order, from a zero state; records each step on ``tape``."""
        stack.reset()
        H = np.zeros((X.shape[0], stack.out_size))
        for t, x in enumerate(X):
            H[t] = stack.forward(x)
            if tape is not None:
                tape.record_stack(t, stack)
            stack.commit()
        return H

    def _outputs(self, X: np.ndarray, tapes=(None, None)):
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != self.forward_stack.n_inputs or X.shape[0] < 1:
            raise ValueError(f"X must have shape (T, {self.forward_stack.n_inputs}) with T >= 1, got {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("X must be finite")
        H = self._run(self.forward_stack, X, tapes[0])
        Hb = self._run(self.backward_stack, X[::-1], tapes[1])[::-1]  # h'_t aligned with t
        R = np.hstack([H, Hb, np.ones((X.shape[0], 1))])  # readout inputs [h_t; h'_t; 1]
        A = R @ self.B.T
        O = np.array([self.out_act.g(a, np.empty_like(a)) for a in A])
        return R, A, O

    def predict_sequence(self, X) -> np.ndarray:
        """Outputs o_1..o_T for a whole sequence (rows of X)."""
        return self._outputs(X)[2]

    def gradient(self, X, Y) -> tuple[float, np.ndarray]:
        """Total loss over the sequence and its exact gradient (flat, laid out like theta)."""
        X = np.asarray(X, dtype=float)
        Y = np.asarray(Y, dtype=float).reshape(X.shape[0], -1)
        if Y.shape[1] != self.readout.outputs or not np.isfinite(Y).all():
            raise ValueError(f"Y must be finite with shape ({X.shape[0]}, {self.readout.outputs})")
        T = X.shape[0]
        tapes = (Tape(self.forward_stack, T), Tape(self.backward_stack, T))
        R, A, O = self._outputs(X, tapes)
        total, deltas = 0.0, np.zeros_like(A)
        for t in range(T):
            self.loss.check_target(Y[t], None)
            loss, deltas[t] = self.loss(A[t], O[t], Y[t], None, self.out_act)
            total += loss
        g = self.grad
        n_top = self.forward_stack.out_size
        np.dot(deltas.T, R, out=g[self.n_recurrent :].reshape(self.B.shape))
        half = self.n_recurrent // 2
        order = np.arange(T - 1, -1, -1)
        # forward stack: newest row is t = T; backward stack: its newest row (T-1) is t = 1
        backprop_stack(self.forward_stack, tapes[0], order, (deltas @ self.B[:, :n_top])[order], g[:half])
        backprop_stack(self.backward_stack, tapes[1], order, deltas @ self.B[:, n_top:-1], g[half : self.n_recurrent])
        return total, g

    def fit_sequence(self, X, Y) -> float:
        """One epochwise-BPTT update on a sequence; returns its loss before the update."""
        total, g = self.gradient(X, Y)
        if np.isfinite(total) and np.isfinite(g).all():
            self.theta += self.optimizer.update(g.copy(), self.opt_state, self.theta)
        return total
