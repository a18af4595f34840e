"""The GRU cell: every product against finite differences of its own forward step, the forward
step against the equations, batch rows independent, and through the model RTRL = BPTT."""

from __future__ import annotations

import numpy as np
import pytest

from streamrnn import RTRL, SGD, Adam, Elman, EpochwiseBPTT, OnlineRNN, Readout, SquaredError, TruncatedBPTT
from streamrnn.cells import GRU, cell_from_config

from . import reference as ref
from .cell_checks import check_products, fd, point, rel, step

N, M, B = 4, 3, 3
ACTIVATIONS = ("tanh", "sigmoid", "relu", "identity")


def rel_dict(got, want):
    diff = np.sqrt(sum(np.sum((got[k] - want[k]) ** 2) for k in want))
    return diff / np.sqrt(sum(np.sum(w**2) for w in want.values()))


def make_layer(activation="tanh", batch=B, seed=0):
    cell = GRU(N, activation)
    flat = np.random.default_rng(seed).normal(0.0, 0.6, cell.n_params(M))
    return cell.layer(M, flat, batch)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


F = {"tanh": np.tanh, "sigmoid": sigmoid, "relu": lambda z: np.maximum(z, 0.0), "identity": lambda z: z}


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_forward_is_the_gru_equations_and_keeps_the_state(activation):
    layer = make_layer(activation)
    A = layer.A
    rng = np.random.default_rng(1)
    h, x = rng.normal(size=(B, N)), rng.normal(size=(B, M))
    got = step(layer, h, x)
    np.testing.assert_array_equal(layer.state, h)  # forward leaves the state alone
    for b in range(B):
        v = np.concatenate([h[b], x[b], [1.0]])
        u, r = sigmoid(A[:N] @ v), sigmoid(A[N : 2 * N] @ v)
        c = F[activation](A[2 * N :, :N] @ (r * h[b]) + A[2 * N :, N:-1] @ x[b] + A[2 * N :, -1])
        np.testing.assert_allclose(got[b], (1 - u) * h[b] + u * c, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(layer.record["u"][b], u, rtol=1e-13)
        np.testing.assert_allclose(layer.record["r"][b], r, rtol=1e-13)
    assert layer.out is layer.new_state
    layer.commit()
    np.testing.assert_array_equal(layer.state, got)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_products_match_finite_differences(activation):
    layer = make_layer(activation)
    rec, Jh, Jx, Jp = point(layer, 2)
    check_products(layer, rec, Jh, Jx, Jp, np.random.default_rng(3))


def test_param_grad_sums_over_recorded_steps():
    layer = make_layer()
    rng = np.random.default_rng(4)
    recs, dzs, want = [], [], 0.0
    for t in range(4):
        rec, _, _, Jp = point(layer, 10 + t)
        e = rng.normal(size=(B, N))
        dz = np.zeros((B, layer.dz_width))
        layer.backward(rec, e, dz)
        recs.append(rec)
        dzs.append(dz)
        want = want + np.einsum("bip,bi->bp", Jp, e)
    out = np.zeros((B, layer.n_params))
    layer.param_grad({k: np.stack([r[k] for r in recs]) for k in recs[0]}, np.stack(dzs), out)
    assert rel(out, want) < 1e-7


def test_batch_rows_are_independent_bit_for_bit():
    layer = make_layer(batch=B)
    alone = [make_layer(batch=1) for _ in range(B)]
    rng = np.random.default_rng(5)
    layer.state[...] = rng.normal(size=(B, N))
    for b, one in enumerate(alone):
        one.state[...] = layer.state[b]
    for _ in range(5):
        X = rng.normal(size=(B, M))
        layer.forward(X)
        for b, one in enumerate(alone):
            one.forward(X[b : b + 1])
            np.testing.assert_array_equal(one.new_state[0], layer.new_state[b])
            for name, a in one.record.items():
                np.testing.assert_array_equal(a[0], layer.record[name][b], err_msg=name)
            one.commit()
        layer.commit()


# --- through the model ------------------------------------------------------------

STACKS = {"gru": (GRU(5),), "gru-elman": (GRU(4), Elman(3)), "elman-gru": (Elman(3), GRU(4))}
T = 30


def make_model(cells, learner, seed=3):
    model = OnlineRNN(3, cells, Readout(2), SquaredError(), learner, SGD(0.0), seed=seed)
    rng = np.random.default_rng(seed + 100)
    for view in model.params.values():  # random weights everywhere, biases and readout included
        view += rng.normal(0.0, 0.3, view.shape)
    return model


def epochwise_gradient(cells, X, Y):
    model = make_model(cells, EpochwiseBPTT())
    for x, y in zip(X, Y):
        model.step(x, y)
    model.end_sequence()
    return {k: v.copy() for k, v in model.gradient.items()}


@pytest.mark.parametrize("learner", [RTRL(), TruncatedBPTT(50)], ids=["rtrl", "bptt-50"])
@pytest.mark.parametrize("key", STACKS)
def test_online_gradient_equals_full_bptt_at_every_step(key, learner):
    cells = STACKS[key]
    rng = np.random.default_rng(7)
    X, Y = rng.normal(size=(T, 3)), rng.normal(size=(T, 2))
    model = make_model(cells, learner)
    before = {k: v.copy() for k, v in model.params.items()}
    for t in range(T):
        model.step(X[t], Y[t])
        got = model.gradient
        want = epochwise_gradient(cells, X[: t + 1], [None] * t + [Y[t]])
        assert rel_dict(got, want) < 1e-9, t
    for k, v in model.params.items():  # learning rate 0: the weights never moved
        np.testing.assert_array_equal(v, before[k])


def test_model_gradient_matches_finite_differences_of_the_loss():
    cells = STACKS["gru-elman"]
    rng = np.random.default_rng(8)
    X, Y = rng.normal(size=(12, 3)), rng.normal(size=(12, 2))
    model = make_model(cells, RTRL())
    params = {k: v.copy() for k, v in model.params.items()}
    for x, y in zip(X, Y):
        model.step(x, y)

    def last_loss(p):
        other = make_model(cells, EpochwiseBPTT())
        for k, v in p.items():
            other.params[k][...] = v
        for x in X[:-1]:
            other.step(x)
        return other.step(X[-1], Y[-1]).loss

    want = ref.finite_difference(params, last_loss)
    assert rel_dict(model.gradient, want) < 1e-6


def make_saved(learner):
    return OnlineRNN(2, (GRU(5, gain=0.8), Elman(3)), Readout(2), SquaredError(), learner, Adam(0.01), seed=11)


def events(n, seed=0):
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(n, 2)), rng.normal(size=(n, 2))
    return [(x, None if i % 5 == 4 else y) for i, (x, y) in enumerate(zip(X, Y))]


def run(model, evs, start=0):
    """Predictions along evs (numbered from ``start``); epochwise BPTT closes a sequence every 7 events."""
    out = []
    for i, (x, y) in enumerate(evs, start):
        out.append(model.step(x, y).prediction)
        if isinstance(model.learner, EpochwiseBPTT) and (i + 1) % 7 == 0:
            model.end_sequence()
    return np.array(out)


def test_config_rebuilds_the_model():
    model = make_saved(RTRL())
    config = model.config()
    assert config["layers"][0] == {"kind": "GRU", "units": 5, "activation": "tanh", "gain": 0.8}
    assert cell_from_config(config["layers"][0]) == GRU(5, "tanh", 0.8)
    rebuilt = OnlineRNN.from_config(config, seed=11)
    assert rebuilt.network.stack.cells == model.network.stack.cells
    assert {k: v.shape for k, v in rebuilt.params.items()} == {
        "U0": (15, 5), "W0": (15, 2), "b0": (15,), "U1": (3, 3), "W1": (3, 5), "b1": (3,), "V": (2, 3), "c": (2,)}
    evs = events(20)  # same seed, same weights: the same model, step for step
    np.testing.assert_array_equal(run(rebuilt, evs), run(model, evs))


@pytest.mark.parametrize("learner", [RTRL(), TruncatedBPTT(6, 2), EpochwiseBPTT()], ids=["rtrl", "bptt", "epochwise"])
def test_save_load_continues_bit_for_bit(tmp_path, learner):
    evs = events(50)
    straight = make_saved(learner)
    expected = run(straight, evs)
    first = make_saved(learner)
    run(first, evs[:23])  # stop mid-sequence, mid-window
    first.save(tmp_path / "m.npz")
    resumed = OnlineRNN.from_file(tmp_path / "m.npz")  # rebuilt from the header's config
    np.testing.assert_array_equal(run(resumed, evs[23:], start=23), expected[23:])
    a_straight, _ = straight.state_dict()
    a_resumed, _ = resumed.state_dict()
    assert a_straight.keys() == a_resumed.keys()
    for k in a_straight:
        np.testing.assert_array_equal(a_straight[k], a_resumed[k], err_msg=k)


@pytest.mark.parametrize("args,kwargs,name", [((0,), {}, "units"), ((3, "swish"), {}, "activation"),
                                              ((3,), {"gain": -1}, "gain")])
def test_bad_arguments_name_the_argument(args, kwargs, name):
    with pytest.raises(ValueError, match=name):
        GRU(*args, **kwargs)


def test_saturated_counts_the_state_entries_beyond_0_99():
    layer = make_layer(batch=2)
    layer.state[...] = [[0.995, -0.999, 0.5, 0.0], [0.99, -0.2, 1.0, -0.991]]
    assert layer.saturated() == 4  # |h| > 0.99 strictly: 0.99 itself is not saturated
    layer.reset()
    assert layer.saturated() == 0
