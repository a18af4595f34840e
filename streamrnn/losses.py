"""Per-step losses on the readout, each returning L and delta = dL/da.

a = V h + c is the readout pre-activation and o = g(a) the output.  Computing
from a keeps log-losses finite for any a (log-sum-exp, softplus).  A boolean
``mask`` drops outputs from the loss; masked outputs get zero delta.
"""

from __future__ import annotations

import numpy as np

from .activations import OutputActivation


class Loss:
    name: str = ""
    #: output activations the loss is defined for, None for any
    activations: tuple[str, ...] | None = None

    def check_output(self, activation: str) -> None:
        if self.activations is not None and activation not in self.activations:
            raise ValueError(
                f"loss {self.name!r} needs a readout activation in {list(self.activations)}, "
                f"got {activation!r}"
            )

    def check_target(self, y: np.ndarray, mask: np.ndarray | None) -> None:
        """ValueError if y cannot be a target of this loss."""

    def __call__(self, a, o, y, mask, out_act: OutputActivation) -> tuple[float, np.ndarray]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


class SquaredError(Loss):
    """L = 1/2 sum_k (o_k - y_k)^2 over unmasked outputs, for any output activation."""

    name = "squared"

    def __call__(self, a, o, y, mask, out_act):
        err = o - y  # dL/do
        if mask is not None:
            err *= mask
        return 0.5 * float(np.dot(err, err)), out_act.vjp(a, o, err)


class LogLoss(Loss):
    """Binary log-loss per sigmoid output: L = sum_k softplus(a_k) - y_k a_k, delta = o - y."""

    name = "logloss"
    activations = ("sigmoid",)

    def check_target(self, y, mask):
        if np.any((y < 0.0) | (y > 1.0)):
            raise ValueError(f"logloss targets must lie in [0, 1], got {y.tolist()}")

    def __call__(self, a, o, y, mask, out_act):
        per_output = np.logaddexp(0.0, a) - y * a  # -[y log o + (1-y) log(1-o)]
        delta = o - y
        if mask is not None:
            per_output *= mask
            delta *= mask
        return float(per_output.sum()), delta


class CrossEntropy(Loss):
    """Softmax cross-entropy L = logsumexp(a) - sum_k y_k a_k, delta = o - y.

    y is a probability vector over the outputs (one-hot for a class label).
    """

    name = "crossentropy"
    activations = ("softmax",)

    def check_target(self, y, mask):
        if mask is not None:
            raise ValueError("mask is not supported by the crossentropy loss: pass y=None to skip a step")
        if np.any(y < 0.0) or abs(float(y.sum()) - 1.0) > 1e-9:
            raise ValueError(f"crossentropy targets must be a probability vector, got {y.tolist()}")

    def __call__(self, a, o, y, mask, out_act):
        top = a.max()
        lse = top + np.log(np.exp(a - top).sum())
        return float(lse - np.dot(y, a)), o - y


LOSSES: dict[str, type[Loss]] = {cls.name: cls for cls in (SquaredError, LogLoss, CrossEntropy)}
