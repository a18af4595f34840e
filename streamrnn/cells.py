"""Recurrent layer and readout specifications.

A layer l maps its input x^l_t (the network input for l = 0, the state of
layer l-1 at the same step otherwise) and its own previous state:

    z_t = U h_{t-1} + W x_t + b
    h_t = (1 - beta) h_{t-1} + beta f(z_t)        (beta = 1: the Elman cell)

The readout is o_t = g(V h_t + c) on the top layer's state.  These classes
only describe and validate; `streamrnn.network.Network` owns the arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from .activations import hidden_activation, output_activation


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


@dataclass(frozen=True)
class Elman:
    """Elman layer, h_t = f(U h_{t-1} + W x_t + b).

    ``activation`` is one of "tanh", "sigmoid", "relu", "identity".  U starts as a
    random orthogonal matrix times ``gain``: 1 keeps every direction of the state
    (a long memory from the start); a small gain starts nearly feed-forward, which
    suits streams whose events are independent, and learning grows U as needed.
    """

    units: int
    activation: str = "tanh"
    gain: float = 1.0

    def __post_init__(self):
        check_size("units", self.units)
        hidden_activation(self.activation)
        check_gain(self.gain)

    def beta_vector(self) -> np.ndarray | None:
        """Per-unit leak beta, or None for beta = 1 (no leak term)."""
        return None


@dataclass(frozen=True)
class Leaky:
    """Leaky-integrator layer, h_t = (1 - beta) h_{t-1} + beta f(z_t).

    The Euler discretisation of tau dh/dt = -h + f(z) with step beta = dt/tau.
    ``beta`` lies in (0, 1], one value for all units or a tuple of one per unit;
    ``gain`` scales the initial orthogonal U, as for ``Elman``.
    """

    units: int
    activation: str = "tanh"
    beta: Union[float, tuple] = 0.5
    gain: float = 1.0

    def __post_init__(self):
        check_size("units", self.units)
        hidden_activation(self.activation)
        check_gain(self.gain)
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


Cell = Union[Elman, Leaky]


@dataclass(frozen=True)
class Readout:
    """Linear readout o_t = g(V h_t + c) with g in "identity", "sigmoid", "softmax"."""

    outputs: int
    activation: str = "identity"

    def __post_init__(self):
        check_size("outputs", self.outputs)
        output_activation(self.activation)


def cell_config(cell: Cell) -> dict:
    """A JSON-ready description of a layer, for checkpoint headers."""
    config = {"kind": type(cell).__name__, "units": cell.units, "activation": cell.activation, "gain": cell.gain}
    if isinstance(cell, Leaky):
        config["beta"] = list(np.atleast_1d(np.asarray(cell.beta, dtype=float)).tolist())
    return config


def cell_from_config(config: dict) -> Cell:
    kind = config.get("kind")
    gain = config.get("gain", 1.0)
    if kind == "Elman":
        return Elman(config["units"], config["activation"], gain)
    if kind == "Leaky":
        beta = config["beta"]
        return Leaky(config["units"], config["activation"], beta[0] if len(beta) == 1 else tuple(beta), gain)
    raise ValueError(f"layer kind must be 'Elman' or 'Leaky', got {kind!r}")
