"""The readout o_t = g(V h_t + c) on the top layer's output."""

from __future__ import annotations

from dataclasses import dataclass

from ..activations import output_activation
from .base import check_size


@dataclass(frozen=True)
class Readout:
    """Linear readout o_t = g(V h_t + c) with g in "identity", "sigmoid", "softmax"."""

    outputs: int
    activation: str = "identity"

    def __post_init__(self):
        check_size("outputs", self.outputs)
        output_activation(self.activation)
