"""The diagonal complex cell (LRU): its step written out, its eigenvalues, its O(n (m + 1)) exact RTRL,
and the long-range recall it makes learnable online.  Its gradients, checkpoints, growth and
batching are checked with every other cell in tests/test_contract.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamrnn import RTRL, Adam, Elman, ExponentialDecay, OnlineRNN, Readout, SquaredError, TruncatedBPTT
from streamrnn.cells import LRU

from .cell_checks import check_products, fd, fd_params, rel, step
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


@pytest.mark.parametrize("nu", [-np.inf, -800.0, -60.0, -5.0, 0.0, 3.0, 60.0])
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
    if nu < -745:  # exp(nu) underflows to 0: lambda on the circle, gamma = 0, and dgamma/dnu -> 0 in the limit
        assert np.all(layer.gamma == 0.0) and np.all(layer.dgamma_dnu == 0.0)


def test_initial_moduli_and_phases_lie_in_their_ranges():
    model = OnlineRNN(1, (LRU(200, r_min=0.8, r_max=0.95, max_phase=1.0),), seed=4)
    r = np.exp(-np.exp(model.params["nu0"]))
    assert 0.8 <= r.min() and r.max() <= 0.95 and r.max() - r.min() > 0.1
    assert 0.0 <= model.params["phase0"].min() and model.params["phase0"].max() <= 1.0
    # one phase per unit, spread over the whole range (200 uniform draws: within 0.05 of each end)
    assert model.params["phase0"].min() < 0.05 and model.params["phase0"].max() > 0.95


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


# --- the products, against finite differences of the layer's own step ----------------------------

N, M, B = 3, 2, 2


def make_layer(activation="tanh", batch=B, seed=0):
    cell = LRU(N, activation)
    rng = np.random.default_rng(seed)
    flat = rng.normal(0.0, 0.6, cell.n_params(M))
    layer = cell.layer(M, flat, batch)
    layer.nu[...] = rng.uniform(-2.0, 0.5, N)  # |lambda| between 0.2 and 0.87
    return layer


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "identity"])
def test_products_match_finite_differences(activation):
    layer = make_layer(activation)
    rng = np.random.default_rng(2)
    c, x = rng.normal(0.0, 0.8, (B, 2 * N)), rng.normal(size=(B, M))
    Jh = fd(lambda a: step(layer, a, x), c)
    Jx = fd(lambda a: step(layer, c, a), x)
    Jp = fd_params(layer, c, x)
    layer.state[...] = c
    y = layer.forward(x).copy()
    Jy = fd(lambda a: layer.act.f(a, np.empty_like(a)), layer.new_state.copy())  # dy/dc, diagonal
    rec = {k: a.copy() for k, a in layer.record.items()}
    np.testing.assert_array_equal(rec["c"], c)
    check_products(layer, rec, Jh, Jx, Jp, rng)
    S, e = rng.normal(size=(B, 2 * N, 5)), rng.normal(size=(B, 2 * N))
    assert rel(layer.output_jvp(rec, S), Jy @ S) < 1e-7  # the output y = f(c), apart from the state
    assert rel(layer.output_vjp(rec, e), np.einsum("bij,bi->bj", Jy, e)) < 1e-7
    np.testing.assert_array_equal(layer.out, y)


@pytest.mark.parametrize("below", [0, 4])
def test_diagonal_rtrl_equals_the_dense_recursion(below):
    """rtrl_step's O(n (m + 1)) sensitivities = the contract's dense S_t = J S_{t-1} + dh/dx S_in + dh/dtheta,
    and rtrl_gradient = g^T S, over several steps (float64 rounding only)."""
    from streamrnn.cells.base import Layer

    layer = make_layer()
    rng = np.random.default_rng(6)
    fast, dense = layer.rtrl_allocate(below), Layer.rtrl_allocate(layer, below)
    for t in range(6):
        S_in = rng.normal(size=(B, M, below)) if below else None
        layer.forward(rng.normal(size=(B, M)))
        layer.rtrl_step(layer.record, fast, S_in)
        Layer.rtrl_step(layer, layer.record, dense, S_in)
        layer.commit()
        want = Layer.rtrl_dense(layer, dense)
        np.testing.assert_allclose(layer.rtrl_dense(fast), want, rtol=1e-12, atol=1e-13)
        g = rng.normal(size=(B, 2 * N))
        got, ref = np.full((B, below + layer.n_params), np.nan), np.zeros((B, below + layer.n_params))
        layer.rtrl_gradient(fast, g, got)
        Layer.rtrl_gradient(layer, dense, g, ref)
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-13)


def test_the_ranges_are_closed_and_the_message_names_the_range():
    top = 1.0 - 1e-9
    for kwargs in (dict(r_min=1e-6, r_max=1e-6), dict(r_min=top, r_max=top), dict(r_min=0.3, r_max=0.3),
                   dict(max_phase=0.0), dict(max_phase=2.0 * math.pi), dict(r_min=np.float32(0.5), max_phase=3)):
        LRU(2, **kwargs)  # every bound belongs to its range
    with pytest.raises(ValueError, match=r"^r_min must be a number in \[1e-06, 0.999999999\], got True$"):
        LRU(2, r_min=True)
    with pytest.raises(ValueError, match=r"^r_max must be a number in \[0.6, 0.999999999\], got 0.5$"):
        LRU(2, r_min=0.6, r_max=0.5)
    with pytest.raises(ValueError, match=r"^max_phase must be a number in \[0.0, 6.28"):
        LRU(2, max_phase=2.0 * math.pi + 1e-9)


def test_initial_input_weights_have_variance_one_over_two_m_and_zero_bias():
    """W ~ N(0, 1/(2m)) on the real and the imaginary rows: |B x| has the scale of |x| / sqrt(m) per unit."""
    m, cell = 900, LRU(4)
    flat = np.full(cell.n_params(m), np.nan)
    cell.init(cell.split(flat, m), m, np.random.default_rng(3))
    view = cell.views(cell.split(flat, m), m)
    assert abs(view["W"].std() * math.sqrt(2 * m) - 1.0) < 0.1
    np.testing.assert_array_equal(view["b"], 0.0)
    assert np.all(np.isfinite(flat))


def test_saturated_counts_the_outputs_near_the_bounds_of_tanh():
    layer = make_layer("tanh", batch=1)
    layer.nu[...] = 0.0
    layer.forward(np.full((1, M), 40.0))  # a large input drives most parts to +-1
    layer.commit()
    count = layer.saturated()
    assert count == int(np.sum(np.abs(np.tanh(layer.state)) > 0.99)) and count > 0
    layer.reset()
    layer.B[:, -1] = 0.0
    layer.forward(np.zeros((1, M)))  # c = 0: nothing saturated
    layer.commit()
    assert layer.saturated() == 0
