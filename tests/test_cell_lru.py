"""The diagonal complex cell (LRU): its step written out, its eigenvalues, its O(n (m + 1)) exact RTRL,
and the long-range recall it makes learnable online.  Its gradients, checkpoints, growth and
batching are checked with every other cell in tests/test_contract.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamrnn import RTRL, Adam, Elman, ExponentialDecay, OnlineRNN, Readout, SquaredError, TruncatedBPTT
from streamrnn.cells import LRU

from .frozen import frozen_when_asked  # noqa: F401  (STREAMRNN_TEST_FREEZE=1: every "learning" test must fail)


def test_the_step_is_the_complex_recurrence_written_out():
    cell = LRU(3, "tanh")
    m = 2
    rng = np.random.default_rng(0)
    theta = rng.normal(0.0, 0.5, cell.n_params(m))
    layer = cell.layer(m, theta)
    view = cell.views(cell.split(theta, m), m)
    lam = np.exp(-np.exp(view["nu"]) + 1j * view["phase"])
    gamma = np.sqrt(1.0 - np.abs(lam) ** 2)
    B = (view["W"][:3] + 1j * view["W"][3:], view["b"][:3] + 1j * view["b"][3:])
    c = np.zeros(3, complex)
    for _ in range(4):
        x = rng.normal(size=m)
        c = lam * c + gamma * (B[0] @ x + B[1])
        y = layer.forward(x[None, :])[0].copy()
        layer.commit()
        want = np.empty(6)
        want[0::2], want[1::2] = np.tanh(c.real), np.tanh(c.imag)  # (re, im) of each unit, interleaved
        np.testing.assert_allclose(y, want, rtol=1e-13)


@pytest.mark.parametrize("nu", [-60.0, -5.0, 0.0, 3.0, 60.0])
def test_eigenvalues_stay_inside_the_unit_circle_for_every_parameter(nu):
    cell = LRU(2)
    theta = np.zeros(cell.n_params(1))
    layer = cell.layer(1, theta)
    layer.nu[...] = nu
    layer.phase[...] = (0.3, 2.0)
    layer.forward(np.ones((1, 1)))
    assert np.all(np.abs(layer.lam) < 1.0) or nu < -36  # exp(-exp(nu)) rounds to 1 below nu ~ -36 ...
    assert np.all(np.abs(layer.lam) <= 1.0) and np.all(np.isfinite(layer.gamma))  # ... and never exceeds it
    assert np.all(np.isfinite(layer.dgamma_dnu))


def test_initial_moduli_and_phases_lie_in_their_ranges():
    model = OnlineRNN(1, (LRU(200, r_min=0.8, r_max=0.95, max_phase=1.0),), seed=4)
    r = np.exp(-np.exp(model.params["nu0"]))
    assert 0.8 <= r.min() and r.max() <= 0.95 and r.max() - r.min() > 0.1
    assert 0.0 <= model.params["phase0"].min() and model.params["phase0"].max() <= 1.0


def test_exact_rtrl_keeps_o_of_n_times_inputs_numbers():
    """Sensitivities to nu, phase (one complex number per unit) and B (n (m + 1) complex): no n x P matrix."""
    for n, m in ((8, 3), (64, 1), (256, 1)):
        model = OnlineRNN(m, (LRU(n),), Readout(1), SquaredError(), RTRL(), seed=0)
        size = sum(a.size for a in model.learner.state_arrays().values())
        assert size == 2 * (n + n + n * (m + 1))  # real and imaginary parts
        assert size < model.network.n_params * 2  # about 2P, where dense RTRL keeps n P


@pytest.mark.parametrize("kwargs,word", [
    (dict(r_min=0.0), "r_min"), (dict(r_min=1.0), "r_min"), (dict(r_min=0.9, r_max=0.5), "r_max"),
    (dict(r_max=1.5), "r_max"), (dict(max_phase=7.0), "max_phase"), (dict(max_phase=-1.0), "max_phase"),
    (dict(r_min="0.5"), "r_min"),
])
def test_bad_arguments_name_the_argument(kwargs, word):
    with pytest.raises(ValueError, match=word):
        LRU(4, **kwargs)


def delayed_recall(cells, learner, lag=50, steps=80_000, lr=0.003, seed=0) -> float:
    """y_t = x_{t-lag} for x_t = +-1: mean squared error over the last 2,000 of ``steps`` online steps."""
    rng = np.random.default_rng(seed)
    x = rng.choice([-1.0, 1.0], size=steps)
    model = OnlineRNN(1, cells, Readout(1), SquaredError(), learner, Adam(ExponentialDecay(lr, 0.1, steps)), seed=seed)
    errors = [2 * model.step([x[t]], [x[t - lag] if t >= lag else 0.0]).loss for t in range(steps)]
    return float(np.mean(errors[-2000:]))


@pytest.mark.slow
@pytest.mark.learning
def test_a_diagonal_cell_recalls_fifty_steps_back_where_truncated_bptt_cannot():
    chance = 1.0  # predicting 0 (the mean) for targets +-1
    lru = delayed_recall((LRU(64, r_min=0.9, r_max=0.999),), RTRL())
    assert lru < 0.05 * chance, lru
    dense = delayed_recall((Elman(64),), TruncatedBPTT(10), steps=20_000, lr=0.001)
    assert dense > 0.9 * chance, dense  # a 10-step window never sees a cause 50 steps back
    assert math.isfinite(dense)
