"""The cell contract: what a recurrent layer declares, and what a learner may ask of it.

A *cell* is a frozen specification (``Elman(16)``, ``GRU(8)``, ...).  Given its
input width m it declares its parameters as named 2-D blocks laid end to end
in the flat vector theta (``blocks``), and builds a *layer*: the runtime object
that holds views of those blocks and the per-step buffers.  Every array a layer
handles has a leading batch axis B: B independent streams, each with its own
state, stepped by one call.

A layer's step, for inputs x (B, m) and its state h_{t-1} (B, s):

    forward(x)                     new_state h_t (B, s), out y_t (B, o), and the step's
                                   *record* (named (B, w) arrays: what the products need)
    commit()                       h_t becomes the state

What the learners ask, at a recorded step (``rec``: the layer's own ``record``
or a row of a BPTT tape), each product written once per cell in its own
structure (dense, diagonal, gated), with J = dh_t/dh_{t-1}:

    jvp(rec, S)                    J S              S (B, s, K)      (RTRL, UORO)
    jvp_input(rec, S)              dh_t/dx_t S      S (B, m, K)      (stacks)
    output_jvp(rec, S)             dy_t/dh_t S                       (the layer above reads y)
    backward(rec, e, dz, back, e_in)  into dz (B, w) what the parameter gradient needs, and
                                   J^T e into ``back``, (dh_t/dx_t)^T e into ``e_in`` when
                                   they are given (not None)          (BPTT, UORO)
    param_grad(recs, dzs, out)     sum over steps of (dh_t/dtheta)^T e_t, from backward's dz
    output_vjp(rec, e)             (dy_t/dh_t)^T e
    add_immediate(rec, S)          S += dh_t/dtheta at fixed h_{t-1}  (RTRL's immediate influence)
    jacobian(rec)                  J as a dense (B, s, s) array       (diagnostics)

Rules every cell keeps:

* the record's ``"v"`` is the only record array that holds the layer's input
  x_t (from column ``x_col``); growing a model inserts new inputs there and
  nowhere else, so a cell rebuilds any other vector that contains x (a GRU's
  [r * h; x; 1]) from v when it needs it;
* a stream's result never depends on the batch it is stepped in: products are
  formed per stream (a (B, k) x (k, n) product would round differently for
  different B), so restart, replay and batching stay bit for bit;
* products use the parameters as they are; a layer that keeps anything
  derived from them (contiguous copies, eigenvalues) recomputes it in
  ``forward`` and in ``refresh``, which the network calls whenever parameters
  are written outside a step;
* ``param_grad`` and ``add_immediate`` write into the array they are given
  (``out`` contiguous; ``S`` may be a column slice of a larger array), never
  into a reshaped copy.

Exact RTRL goes through ``rtrl_allocate`` / ``rtrl_step`` / ``rtrl_gradient`` /
``rtrl_dense``; the defaults keep dense sensitivities (n, P) built from the
products above, and a cell with a cheaper structure (a diagonal J) overrides them.

Cells register themselves by ``kind``: ``CELLS[kind]`` is the class, and a
cell's ``config()`` (its dataclass fields plus ``kind``) rebuilds it.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

#: kind -> cell class, filled as cell classes are defined
CELLS: dict[str, type] = {}


def check_gain(value: object) -> float:
    """The initial recurrent gain: a finite number >= 0, else ValueError."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not np.isfinite(value) or value < 0:
        raise ValueError(f"gain must be a finite number >= 0, got {value!r}")
    return float(value)


def check_size(name: str, value: object) -> int:
    """A size argument: an int >= 1, else ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


class Block(NamedTuple):
    """A parameter block: ``rows`` x ``cols`` in theta, row-major; the layer's input x
    occupies columns x_col .. x_col + m - 1 (x_col None: the block does not read x)."""

    name: str
    rows: int
    cols: int
    x_col: int | None


class Cell:
    """Base of the cell specifications; subclasses are frozen dataclasses with ``units``."""

    #: the name in configurations ("" for an abstract class: not registered)
    kind = ""
    units: int
    activation: str

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("kind", "")
        if kind:
            if kind in CELLS:
                raise ValueError(f"a cell kind {kind!r} is registered already ({CELLS[kind]!r})")
            CELLS[kind] = cls

    # --- shape -------------------------------------------------------------
    @property
    def state_size(self) -> int:
        """Width s of the recurrent state h."""
        return self.units

    @property
    def out_size(self) -> int:
        """Width o of the output y that the layer above (or the readout) reads."""
        return self.units

    def blocks(self, m: int) -> tuple[Block, ...]:
        raise NotImplementedError

    def n_params(self, m: int) -> int:
        return sum(b.rows * b.cols for b in self.blocks(m))

    def split(self, flat: np.ndarray, m: int) -> dict[str, np.ndarray]:
        """The blocks as 2-D views of ``flat``'s last axis (laid out like this layer's theta)."""
        out, offset = {}, 0
        for b in self.blocks(m):
            out[b.name] = flat[..., offset : offset + b.rows * b.cols].reshape(flat.shape[:-1] + (b.rows, b.cols))
            offset += b.rows * b.cols
        return out

    def views(self, blocks: dict[str, np.ndarray], m: int) -> dict[str, np.ndarray]:
        """Named parameter views (U, W, b, ...) of the blocks, as users and checkpoints see them."""
        raise NotImplementedError

    def input_views(self) -> tuple[str, ...]:
        """Names of the views whose last axis is exactly the input x (a new input is a new column)."""
        raise NotImplementedError

    def init(self, blocks: dict[str, np.ndarray], m: int, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def layer(self, m: int, flat: np.ndarray, batch: int = 1) -> "Layer":
        raise NotImplementedError

    # --- configuration -------------------------------------------------------
    @classmethod
    def from_fields(cls, fields: dict) -> dict:
        """Constructor arguments from a ``config()`` without its kind (JSON lists back to tuples)."""
        return {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}

    def config(self) -> dict:
        out = {"kind": self.kind}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


def cell_config(cell: Cell) -> dict:
    """A JSON-ready description of a layer, for checkpoint headers."""
    return cell.config()


def cell_from_config(config: dict) -> Cell:
    """The cell a ``config()`` describes; ValueError for an unknown kind or bad fields."""
    config = dict(config)
    kind = config.pop("kind", None)
    if kind not in CELLS:
        raise ValueError(f"layer kind must be one of {sorted(CELLS)}, got {kind!r}")
    cls = CELLS[kind]
    return cls(**cls.from_fields(config))


def check_layers(layers) -> tuple:
    """The layers as a tuple of one or more registered cells; ValueError otherwise."""
    layers = tuple(layers)
    if not layers:
        raise ValueError("layers must hold at least one layer, got none")
    if not all(isinstance(cell, Cell) and cell.kind for cell in layers):
        raise ValueError(f"layers must be cells ({', '.join(sorted(CELLS))}), got {layers!r}")
    return layers


def diagonal_view(S: np.ndarray, n: int, k: int, gates: int = 1) -> np.ndarray:
    """The view of S (B, n, gates*n*k) holding S[b, i, g*n*k + i*k + j]: unit i's own row of each
    (n, k) block, shaped (B, n, k), or (B, gates, n, k) for several blocks side by side."""
    b, r, c = S.strides
    if gates == 1:
        return as_strided(S, shape=(S.shape[0], n, k), strides=(b, r + k * c, c))
    return as_strided(S, shape=(S.shape[0], gates, n, k), strides=(b, n * k * c, r + k * c, c))


class Layer:
    """A cell's runtime: views of its parameters, its state and its step buffers (see the module)."""

    def __init__(self, cell: Cell, m: int, flat: np.ndarray, batch: int):
        self.cell, self.m, self.batch = cell, m, batch
        self.n, self.s, self.o = cell.units, cell.state_size, cell.out_size
        self.n_params = cell.n_params(m)
        if flat.shape != (self.n_params,):
            raise ValueError(f"a {cell.kind} layer needs {self.n_params} parameters, got {flat.shape}")
        self.flat = flat
        self.blocks = cell.split(flat, m)
        #: the step's record; its "v" holds the input x_t from column ``x_col`` on
        self.record: dict[str, np.ndarray] = {}
        self.x_col = 0
        self._strided: dict[int, tuple] = {}
        self.new_state = np.zeros((batch, self.s))

    # state and output: subclasses define ``state`` (B, s) and ``out`` (B, o)
    def commit(self) -> None:
        self.state[...] = self.new_state

    def reset(self) -> None:
        self.state[...] = 0.0

    def refresh(self) -> None:
        """The parameters were written from outside a step (a checkpoint loaded, a compiled step
        ran): drop anything the layer derived from them (the network calls this)."""

    # --- products (see the module) ------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def jvp(self, rec, S, out):
        raise NotImplementedError

    def jvp_input(self, rec, S, out):
        raise NotImplementedError

    #: True when the output y is the state h itself (then output_jvp and output_vjp are identities)
    output_is_state = True

    def output_jvp(self, rec, S):
        return S  # y = h unless the cell says otherwise

    def output_vjp(self, rec, e):
        return e

    def backward(self, rec, e, dz, back=None, e_in=None) -> None:
        raise NotImplementedError

    def param_grad(self, recs, dzs, out):
        raise NotImplementedError

    def add_immediate(self, rec, S):
        raise NotImplementedError

    def jacobian(self, rec) -> np.ndarray:
        eye = np.broadcast_to(np.eye(self.s), (self.batch, self.s, self.s))
        out = np.empty((self.batch, self.s, self.s))
        return self.jvp(rec, np.ascontiguousarray(eye), out)

    @property
    def dz_width(self) -> int:
        """Width of what ``backward`` writes into dz for ``param_grad``."""
        return self.n

    def saturated(self) -> int:
        """Units near saturation in the current state (diagnostics)."""
        return 0

    # --- exact RTRL: dense sensitivities by default ----------------------------
    def diagonal(self, S: np.ndarray, k: int, gates: int = 1) -> np.ndarray:
        """``diagonal_view(S, n, k, gates)``, made once per array S (a strided view costs microseconds)."""
        hit = self._strided.get(id(S))
        if hit is None or hit[0] is not S:  # the cache holds S itself, so its id cannot be reused
            if len(self._strided) > 8:
                self._strided.clear()
            hit = self._strided[id(S)] = (S, diagonal_view(S, self.n, k, gates))
        return hit[1]

    def rtrl_allocate(self, below: int) -> dict[str, np.ndarray]:
        """RTRL's arrays for this layer; ``below`` = parameters of the layers under it."""
        # each buffer ends in one spare row (scratch, never state): the compiled RTRL step writes the
        # gradient there in the same product as S_t (``streamrnn.kernels.dense_step.rtrl_step``)
        width = below + self.n_params
        size = self.batch * self.s * width
        S, new = (np.zeros(size + width)[:size].reshape(self.batch, self.s, width) for _ in range(2))
        return {"S": S, "_next": new, "_own": S[..., below:], "_own_next": new[..., below:],
                "_below": np.zeros((self.batch, self.s, below))}

    def rtrl_step(self, rec, arrays: dict, S_in: np.ndarray | None) -> None:
        """S_t = J S_{t-1} + dh/dx S_in (on the layers below) + dh/dtheta (own block).

        ``S_in`` = dx_t/dtheta_below (B, m, below), the output sensitivities of the layer under."""
        S, new = arrays["S"], arrays["_next"]
        self.jvp(rec, S, new)
        if S_in is not None:
            below = S_in.shape[-1]
            new[..., :below] += self.jvp_input(rec, S_in, arrays["_below"])
        self.add_immediate(rec, arrays["_own_next"])  # the same view objects every step: cached strides
        arrays["S"], arrays["_next"] = new, S
        arrays["_own"], arrays["_own_next"] = arrays["_own_next"], arrays["_own"]

    def rtrl_gradient(self, arrays: dict, g: np.ndarray, out: np.ndarray) -> None:
        """out (B, below + P) = g^T S for g = dL/dh_t (B, s)."""
        np.matmul(g[:, None, :], arrays["S"], out=out[:, None, :])

    def rtrl_dense(self, arrays: dict) -> np.ndarray:
        """dh_t/dtheta_{<=this layer} as a dense (B, s, below + P) array."""
        return arrays["S"]

    def rtrl_layout(self, name: str) -> str:
        """Layout of an RTRL array (``streamrnn.learners.base``): "theta", "inputs" (columns follow
        the record v) or "fixed"."""
        return "theta"

    def rtrl_state(self, arrays: dict) -> dict[str, np.ndarray]:
        """The arrays that are RTRL state (saved), each with its layout; scratch is left out."""
        return {k: v for k, v in arrays.items() if not k.startswith("_")}
