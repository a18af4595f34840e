"""Hidden and output activations: values to the last bit where it matters, derivatives by finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamrnn.activations import hidden_activation


def exact_sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def test_sigmoid_keeps_its_relative_accuracy_far_into_both_tails():
    z = np.array([-745.0, -700.0, -100.0, -40.0, -37.5, -20.0, -1e-3, 0.0, 1e-3, 20.0, 40.0, 700.0])
    act = hidden_activation("sigmoid")
    got = act.f(z, np.empty_like(z))
    expected = np.array([exact_sigmoid(v) for v in z])
    assert np.all(got > 0.0) and np.all(got <= 1.0)  # never exactly 0, whatever the tail
    np.testing.assert_allclose(got, expected, rtol=1e-15, atol=0.0)
    slope = act.derivative(z, got, np.empty_like(z))
    np.testing.assert_allclose(slope, [exact_sigmoid(v) * exact_sigmoid(-v) for v in z], rtol=1e-14, atol=0.0)
    assert slope[-2] > 0.0  # sigma'(40) = 4.2e-18, where sigma (1 - sigma) rounds to 0


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "relu", "identity"])
def test_derivative_agrees_with_finite_differences(name):
    act = hidden_activation(name)
    z = np.linspace(-6.0, 6.0, 25) + 0.0123  # off the relu kink
    fz = act.f(z, np.empty_like(z))
    eps = 1e-6
    numeric = (act.f(z + eps, np.empty_like(z)) - act.f(z - eps, np.empty_like(z))) / (2 * eps)
    np.testing.assert_allclose(act.derivative(z, fz, np.empty_like(z)), numeric, rtol=1e-7, atol=1e-9)
