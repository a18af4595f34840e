"""Hidden-unit activations f and output activations g.

Hidden activations write f(z) and the derivative f'(z) into caller-owned
buffers, computing f' from f(z) where that is cheaper (tanh, sigmoid).
Output activations map the readout pre-activation a = V h + c to o = g(a)
and back-propagate a gradient dL/do to dL/da (the vector-Jacobian product).
"""

from __future__ import annotations

import numpy as np


class Activation:
    """A hidden-unit nonlinearity: ``f(z, out)`` and ``derivative(z, fz, out)``."""

    name: str = ""

    def saturated(self, h: np.ndarray) -> np.ndarray:
        """Units whose f' is near 0 (|tanh| > 0.99, sigmoid within 0.01 of 0 or 1, dead relu)."""
        raise NotImplementedError

    def f(self, z: np.ndarray, out: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def derivative(self, z: np.ndarray, fz: np.ndarray, out: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class Tanh(Activation):
    name = "tanh"

    def f(self, z, out):
        return np.tanh(z, out=out)

    def derivative(self, z, fz, out):
        np.multiply(fz, fz, out=out)  # tanh' = 1 - tanh^2
        return np.subtract(1.0, out, out=out)

    def saturated(self, h):
        return np.abs(h) > 0.99


class Sigmoid(Activation):
    name = "sigmoid"

    def f(self, z, out):
        # with e = exp(-|z|) <= 1 (never overflows): sigma(z) = 1 / (1 + e) for z >= 0, e / (1 + e) below,
        # accurate to the last bit for every z (1 - 1/(1 + e^-z) would lose it all below z ~ -37)
        e = np.exp(-np.abs(z))
        np.divide(np.where(z >= 0.0, 1.0, e), 1.0 + e, out=out)
        return out

    def derivative(self, z, fz, out):
        # sigma' = sigma (1 - sigma) = e / (1 + e)^2, from z: 1 - sigma would cancel for large z
        e = np.exp(-np.abs(z))
        np.divide(e, np.square(1.0 + e), out=out)
        return out

    def saturated(self, h):
        return (h < 0.01) | (h > 0.99)


class ReLU(Activation):
    name = "relu"

    def f(self, z, out):
        return np.maximum(z, 0.0, out=out)

    def derivative(self, z, fz, out):
        return np.greater(z, 0.0, out=out, casting="unsafe")

    def saturated(self, h):
        return h <= 0.0  # a dead unit passes no gradient


class Identity(Activation):
    name = "identity"

    def f(self, z, out):
        out[...] = z
        return out

    def derivative(self, z, fz, out):
        out.fill(1.0)
        return out

    def saturated(self, h):
        return np.zeros(h.shape, dtype=bool)


HIDDEN_ACTIVATIONS: dict[str, type[Activation]] = {
    cls.name: cls for cls in (Tanh, Sigmoid, ReLU, Identity)
}


def hidden_activation(name: str) -> Activation:
    """The hidden activation called ``name``; ValueError lists the choices."""
    try:
        return HIDDEN_ACTIVATIONS[name]()
    except (KeyError, TypeError):
        raise ValueError(
            f"activation must be one of {sorted(HIDDEN_ACTIVATIONS)}, got {name!r}"
        ) from None


# ----- output activations g ------------------------------------------------


class OutputActivation:
    name: str = ""

    def g(self, a: np.ndarray, out: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def vjp(self, a: np.ndarray, o: np.ndarray, grad_o: np.ndarray) -> np.ndarray:
        """dL/da from dL/do, i.e. (do/da)^T dL/do."""
        raise NotImplementedError


class IdentityOutput(OutputActivation):
    name = "identity"

    def g(self, a, out):
        out[...] = a
        return out

    def vjp(self, a, o, grad_o):
        return grad_o


class SigmoidOutput(OutputActivation):
    name = "sigmoid"

    def g(self, a, out):
        return Sigmoid().f(a, out)

    def vjp(self, a, o, grad_o):
        return grad_o * o * (1.0 - o)


class SoftmaxOutput(OutputActivation):
    name = "softmax"

    def g(self, a, out):
        np.subtract(a, a.max(), out=out)  # shift for stability: softmax(a) = softmax(a - max a)
        np.exp(out, out=out)
        return np.divide(out, out.sum(), out=out)

    def vjp(self, a, o, grad_o):
        # (diag(o) - o o^T) grad_o
        return o * (grad_o - np.dot(o, grad_o))


OUTPUT_ACTIVATIONS: dict[str, type[OutputActivation]] = {
    cls.name: cls for cls in (IdentityOutput, SigmoidOutput, SoftmaxOutput)
}


def output_activation(name: str) -> OutputActivation:
    try:
        return OUTPUT_ACTIVATIONS[name]()
    except (KeyError, TypeError):
        raise ValueError(
            f"output activation must be one of {sorted(OUTPUT_ACTIVATIONS)}, got {name!r}"
        ) from None
