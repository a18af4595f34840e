"""The dense cells (Elman, Leaky): the forward step against its equations, every product against
finite differences of that step, and the initialisation and configuration they declare.  Their
gradients through the model are checked in tests/test_gradients.py and tests/test_contract.py."""

from __future__ import annotations

import numpy as np
import pytest

from streamrnn.cells import GRU, Elman, Leaky, cell_from_config

from .cell_checks import check_products, point, rel, step

N, M, B = 4, 3, 3
ACTIVATIONS = ("tanh", "sigmoid", "relu", "identity")
CELLS = {
    **{f"elman-{a}": Elman(N, a) for a in ACTIVATIONS},
    "leaky-scalar": Leaky(N, "tanh", beta=0.3),
    "leaky-per-unit": Leaky(N, "sigmoid", beta=(0.2, 0.5, 1.0, 0.7)),
}


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


F = {"tanh": np.tanh, "sigmoid": sigmoid, "relu": lambda z: np.maximum(z, 0.0), "identity": lambda z: z}


def make_layer(cell, batch=B, seed=0):
    flat = np.random.default_rng(seed).normal(0.0, 0.6, cell.n_params(M))
    return cell.layer(M, flat, batch)


@pytest.mark.parametrize("key", CELLS)
def test_forward_is_the_equations_and_keeps_the_state(key):
    cell = CELLS[key]
    layer = make_layer(cell)
    A = layer.A
    beta = np.ones(N) if cell.kind == "Elman" else np.broadcast_to(np.asarray(cell.beta, float), (N,))
    rng = np.random.default_rng(1)
    h, x = rng.normal(size=(B, N)), rng.normal(size=(B, M))
    got = step(layer, h, x)
    np.testing.assert_array_equal(layer.state, h)  # forward leaves the state alone
    for b in range(B):
        v = np.concatenate([h[b], x[b], [1.0]])
        z = A[:, :N] @ h[b] + A[:, N:-1] @ x[b] + A[:, -1]
        np.testing.assert_allclose(got[b], (1 - beta) * h[b] + beta * F[cell.activation](z), rtol=1e-13, atol=1e-14)
        np.testing.assert_array_equal(layer.record["v"][b], v)
    assert layer.out is layer.new_state and layer.x_col == N
    layer.commit()
    np.testing.assert_array_equal(layer.state, got)
    np.testing.assert_array_equal(layer.record["v"][:, :N], got)  # v's head is the state itself
    layer.reset()
    assert not layer.state.any() and np.all(layer.record["v"][:, -1] == 1.0)


@pytest.mark.parametrize("key", CELLS)
def test_products_match_finite_differences(key):
    layer = make_layer(CELLS[key])
    rec, Jh, Jx, Jp = point(layer, 2)
    check_products(layer, rec, Jh, Jx, Jp, np.random.default_rng(3))


@pytest.mark.parametrize("build,message", [
    (lambda: Elman(0), r"^units must be an integer >= 1, got 0$"),
    (lambda: Leaky(2, beta=None), r"^beta must be a number in \(0, 1\] or a tuple of them, got None$"),
    (lambda: Leaky(2, beta=((0.5, 0.5),)), r"^beta must be a number in \(0, 1\] or a tuple of them"),
    (lambda: Leaky(2, beta=(0.5, 0.5, 0.5)), r"^beta must be a number or a tuple of 2 numbers"),
    (lambda: Leaky(2, beta=(0.5, 0.0)), r"^beta must lie in \(0, 1\]"),
])
def test_bad_arguments_say_what_is_wrong(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_a_leaky_cell_with_beta_one_is_the_elman_cell_bit_for_bit(activation):
    """beta = 1 lies in (0, 1], as one number or one per unit: h_t = f(z_t) exactly, and J = diag(D) U."""
    elman = Elman(N, activation)
    theta = np.random.default_rng(4).normal(0.0, 0.6, elman.n_params(M))
    layers = [cell.layer(M, theta.copy(), B) for cell in (elman, Leaky(N, activation, beta=1.0),
                                                          Leaky(N, activation, beta=(1.0,) * N))]
    rng = np.random.default_rng(5)
    S = rng.normal(size=(B, N, 3))
    for _ in range(3):
        x = rng.normal(size=(B, M))
        outs = [layer.forward(x).copy() for layer in layers]
        jvps = [layer.jvp(layer.record, S, np.empty((B, N, 3))) for layer in layers]
        for out, jvp in zip(outs[1:], jvps[1:]):
            np.testing.assert_array_equal(out, outs[0])
            np.testing.assert_array_equal(jvp, jvps[0])
        for layer in layers:
            layer.commit()


@pytest.mark.parametrize("cell", [
    Elman(3, "relu", gain=0.5), Leaky(3, "sigmoid", beta=0.25, gain=2.0), Leaky(3, beta=(0.2, 0.5, 1.0)),
], ids=["elman", "leaky-scalar", "leaky-per-unit"])
def test_config_rebuilds_the_cell_through_json(cell):
    import json

    config = json.loads(json.dumps(cell.config()))
    rebuilt = cell_from_config(config)
    assert rebuilt == cell and type(rebuilt) is type(cell)
    if cell.kind == "Leaky":
        np.testing.assert_array_equal(rebuilt.beta_vector(), cell.beta_vector())


@pytest.mark.parametrize("cell", [Elman(5, gain=0.7), Leaky(5, beta=0.4, gain=1.0), GRU(5, gain=1.3)],
                         ids=["elman", "leaky", "gru"])
def test_initial_weights_orthogonal_u_times_gain_w_of_variance_one_over_m_and_zero_b(cell):
    m = 900
    flat = np.full(cell.n_params(m), np.nan)
    cell.init(cell.split(flat, m), m, np.random.default_rng(8))
    view = cell.views(cell.split(flat, m), m)
    n = cell.units
    for g in range(cell.gates):  # each gate's n x n block: every singular value = gain
        U = view["U"][g * n : (g + 1) * n]
        np.testing.assert_allclose(U @ U.T, cell.gain**2 * np.eye(n), atol=1e-12)
    W = view["W"]
    assert W.shape == (cell.gates * n, m)
    # W ~ N(0, 1/m): over gates * n * m >= 4,500 draws the sample deviation is within 10 % of 1/sqrt(m)
    assert abs(W.std() * np.sqrt(m) - 1.0) < 0.1 and abs(W.mean()) * np.sqrt(m) < 0.1
    np.testing.assert_array_equal(view["b"], 0.0)


@pytest.mark.parametrize("beta", ["0.5", True, (0.5, "0.5", 0.2), None])
def test_leaky_refuses_a_beta_that_is_not_numbers(beta):
    """As gain and the LRU's ranges do: a string or a bool is not a leak rate."""
    with pytest.raises(ValueError, match="beta"):
        Leaky(3, beta=beta)
