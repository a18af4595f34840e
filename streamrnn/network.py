"""The network's arrays and its forward step.

All parameters live in one flat float64 vector ``theta`` so that gradients,
optimiser moments and RTRL sensitivities are flat too and an optimiser step
is a handful of vector operations.  Layer l owns a contiguous slice of theta,
laid out as its cell declares (``streamrnn.cells.base``): for an Elman or
Leaky layer one block A_l = [U_l | W_l | b_l] of shape (n_l, n_l + m_l + 1).
The readout owns B = [V | c] of shape (n_out, o_L + 1) after the last layer,
a_t = B [y^L_t; 1] on the top layer's output y^L.

Named views U0, W0, b0, U1, ..., V, c alias the same memory.

A step is ``forward(x)`` (each layer writes its new state, output and record
into its buffers, leaving the hidden state as it was) followed by
``commit()`` (the new states become the hidden state).  Between the two,
learners read ``stack.layers[l].record`` and the readout's ``vr`` = [y^L_t; 1],
``a`` and ``o``.  The stack runs one stream (batch 1); the cells take a batch.
"""

from __future__ import annotations

import math
import threading
from typing import Sequence

import numpy as np

from .activations import output_activation
from .cells import Cell, Readout, check_layers, check_size


class Stack:
    """Recurrent layers 0..L-1 over a slice of a flat parameter vector: a loop over cells."""

    def __init__(self, n_inputs: int, layers: Sequence[Cell], theta: np.ndarray):
        self.n_inputs = check_size("n_inputs", n_inputs)
        self.cells = check_layers(layers)
        self.units = [cell.units for cell in self.cells]
        self.in_sizes = [self.n_inputs] + [cell.out_size for cell in self.cells[:-1]]
        self.n_params = self.size(self.n_inputs, self.cells)
        if theta.shape != (self.n_params,):
            raise ValueError(f"theta must have {self.n_params} entries, got {theta.shape}")
        self.offsets, self.layers = [], []
        offset = 0
        for cell, m in zip(self.cells, self.in_sizes):
            size = cell.n_params(m)
            self.offsets.append(offset)
            self.layers.append(cell.layer(m, theta[offset : offset + size]))
            offset += size
        self.out_size = self.cells[-1].out_size
        self._x = np.zeros((1, self.n_inputs))
        #: squared norm of each layer's newest state, a by-product of the finiteness check
        self.h_sq_norms = [0.0] * len(self.cells)

    @staticmethod
    def size(n_inputs: int, layers: Sequence[Cell]) -> int:
        total, m = 0, n_inputs
        for cell in layers:
            total += cell.n_params(m)
            m = cell.out_size
        return total

    def views(self, flat: np.ndarray, suffix: str = "") -> dict[str, np.ndarray]:
        """Named views (U0, W0, b0, ...) of a flat vector laid out like the stack's theta."""
        out = {}
        for l, (cell, m, off) in enumerate(zip(self.cells, self.in_sizes, self.offsets)):
            blocks = cell.split(flat[off : off + cell.n_params(m)], m)
            out.update({f"{name}{l}{suffix}": view for name, view in cell.views(blocks, m).items()})
        return out

    def hidden(self, l: int) -> np.ndarray:
        """Layer l's state h^l (a view)."""
        return self.layers[l].state[0]

    def output(self, l: int) -> np.ndarray:
        """Layer l's newest output y^l_t, after ``forward`` (a view)."""
        return self.layers[l].out[0]

    # --- the step ----------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Compute every layer's new state from x; returns the top output."""
        inp = self._x
        inp[0] = x
        for layer in self.layers:
            inp = layer.forward(inp)
        return inp[0]

    def commit(self) -> bool:
        """Make the new states the hidden state; False (and no change) if one is not finite."""
        norms = [float(np.vdot(layer.new_state, layer.new_state)) for layer in self.layers]
        if not all(math.isfinite(s) for s in norms):
            return False
        for layer in self.layers:
            layer.commit()
        self.h_sq_norms = norms
        return True

    def reset(self) -> None:
        for layer in self.layers:
            layer.reset()
        self.h_sq_norms = [0.0] * len(self.cells)

    def refresh(self) -> None:
        """Parameters were written outside a step: every layer drops what it derived from them."""
        for layer in self.layers:
            layer.refresh()

    def recurrent_jacobian(self, l: int) -> np.ndarray:
        """dh_t/dh_{t-1} of layer l at the newest step, from its record."""
        layer = self.layers[l]
        return layer.jacobian(layer.record)[0]

    def init_params(self, rng: np.random.Generator) -> None:
        for cell, m, layer in zip(self.cells, self.in_sizes, self.layers):
            cell.init(layer.blocks, m, rng)


#: first draws of theta by (layout, generator state): the newest ``_INITIAL_KEPT`` of them, each of at most
#: ``_INITIAL_BYTES`` (at most 16 MB in all)
_INITIAL: dict = {}
_INITIAL_KEPT = 64
_INITIAL_BYTES = 256 << 10
_INITIAL_LOCK = threading.Lock()


def _keep(key, theta: np.ndarray, after: dict) -> None:
    """Remember a first draw (and the generator's state after it), dropping the oldest beyond the bound."""
    with _INITIAL_LOCK:
        while len(_INITIAL) >= _INITIAL_KEPT:
            del _INITIAL[next(iter(_INITIAL))]
        _INITIAL[key] = (theta.copy(), after)


def _frozen(value):
    """A generator's state as a hashable value, arrays by their bytes (a repr may elide them)."""
    if isinstance(value, dict):
        return tuple((k, _frozen(v)) for k, v in sorted(value.items()))
    if isinstance(value, np.ndarray):
        return value.dtype.str, value.shape, value.tobytes()
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


class Network:
    """A stack of recurrent layers and a linear readout over one flat ``theta``."""

    def __init__(self, n_inputs: int, layers: Sequence[Cell], readout: Readout):
        if not isinstance(readout, Readout):
            raise ValueError(f"readout must be a streamrnn.Readout, got {readout!r}")
        layers = check_layers(layers)
        n_rec = Stack.size(check_size("n_inputs", n_inputs), layers)
        n_top = layers[-1].out_size
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
        out = self.stack.views(flat[: self.n_recurrent])
        B = flat[self.n_recurrent :].reshape(self.B.shape)
        out["V"], out["c"] = B[:, :-1], B[:, -1]
        return out

    def params(self) -> dict[str, np.ndarray]:
        return self.views(self.theta)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """o_t = g(V y_t + c) for input x, leaving the hidden state untouched."""
        top = self.stack.forward(x)
        self.vr[:-1] = top
        np.dot(self.B, self.vr, out=self.a)
        return self.out_act.g(self.a, self.o)

    def commit(self) -> bool:
        return self.stack.commit()

    def init_params(self, rng: np.random.Generator) -> None:
        """Draw theta from rng.  The draw depends only on the layout and rng's state, so for a small
        theta it is made once per process and copied after that, with rng left where the draw leaves
        it (a daemon makes thousands of models of one layout and seed, and the draw is a third of
        making one)."""
        key = None
        if isinstance(rng, np.random.Generator) and self.theta.nbytes <= _INITIAL_BYTES:
            key = (self._layout, _frozen(rng.bit_generator.state))
            after = self._copy_drawn(key)
            if after is not None:
                rng.bit_generator.state = after
                return
        self._draw(rng)
        if key is not None:
            _keep(key, self.theta, rng.bit_generator.state)

    def _copy_drawn(self, key) -> dict | None:
        """The generator's state after the draw kept under ``key``, that draw copied into theta; None if none is."""
        with _INITIAL_LOCK:
            drawn = _INITIAL.get(key)
        if drawn is None:
            return None
        theta, after = drawn
        self.theta[...] = theta
        self.stack.refresh()
        return after

    def _draw(self, rng: np.random.Generator) -> None:
        self.stack.init_params(rng)
        n_top = self.B.shape[1] - 1
        self.V[...] = rng.standard_normal(self.V.shape) * (0.1 / math.sqrt(n_top))
        self.c[...] = 0.0

    def init_params_seeded(self, seed) -> tuple[np.random.Generator | None, dict]:
        """``init_params(np.random.default_rng(seed))`` for an integer seed: (the generator, or None when the
        draw was copied and no generator was made, and its state after the draw).  Making a generator costs
        more than copying a small draw (tens of µs for a daemon's new key): the caller makes it when needed."""
        key = None
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and self.theta.nbytes <= _INITIAL_BYTES:
            key = (self._layout, "seed", int(seed))
            after = self._copy_drawn(key)
            if after is not None:
                return None, after
        rng = np.random.default_rng(seed)
        self._draw(rng)
        after = rng.bit_generator.state
        if key is not None:
            _keep(key, self.theta, after)
        return rng, after

    @property
    def _layout(self) -> tuple:
        return (tuple(repr(c) for c in self.stack.cells), tuple(self.stack.in_sizes), self.B.shape)

