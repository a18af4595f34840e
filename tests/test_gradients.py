"""Gradients are exact: RTRL = full BPTT per step, BPTT(h; h') = brute-force truncation,
both = central finite differences (float64, learning rate 0 so weights stay fixed)."""

from __future__ import annotations

import numpy as np
import pytest

from streamrnn import (
    RTRL, SGD, BidirectionalRNN, CrossEntropy, Elman, EpochwiseBPTT, Leaky, LogLoss,
    OnlineRNN, Readout, SquaredError, TruncatedBPTT,
)
from streamrnn.cells import cell_config

from . import reference as ref

N_IN, T = 3, 50

CELLS = {
    "elman-tanh": (Elman(5, "tanh"),),
    "elman-sigmoid": (Elman(5, "sigmoid"),),
    "elman-relu": (Elman(5, "relu"),),
    "elman-identity": (Elman(5, "identity"),),
    "leaky": (Leaky(5, "tanh", beta=(0.2, 0.5, 0.7, 1.0, 0.35)),),
    "stack-2": (Elman(4, "tanh"), Leaky(3, "sigmoid", beta=0.6)),
}
LOSSES = {
    "squared": (Readout(2, "identity"), SquaredError),
    "squared-sigmoid": (Readout(2, "sigmoid"), SquaredError),
    "logloss": (Readout(2, "sigmoid"), LogLoss),
    "crossentropy": (Readout(3, "softmax"), CrossEntropy),
}


def make(cells, loss_key, learner, target_feedback=False, seed=3):
    readout, loss = LOSSES[loss_key]
    model = OnlineRNN(N_IN, cells, readout, loss(), learner, SGD(0.0), target_feedback=target_feedback, seed=seed)
    rng = np.random.default_rng(seed + 100)
    for view in model.params.values():  # random weights everywhere, biases and readout included
        view += rng.normal(0.0, 0.3, view.shape)
    if cells[0].activation in ("identity", "relu"):
        # keep an unbounded recurrence from blowing up over 50 steps (and saturating
        # a sigmoid readout, whose tiny gradients finite differences cannot resolve)
        model.params["U0"][...] *= 0.5
        model.params["V"][...] *= 0.3
    return model


def stream(loss_key, seed=7, length=T):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(length, N_IN))
    outputs = LOSSES[loss_key][0].outputs
    if loss_key == "crossentropy":
        Y = np.eye(outputs)[rng.integers(0, outputs, length)]
    elif loss_key == "logloss":
        Y = rng.uniform(size=(length, outputs))
    else:
        Y = rng.normal(size=(length, outputs))
    return X, Y


def rel_err(got: dict, want: dict) -> float:
    diff = np.sqrt(sum(np.sum((got[k] - want[k]) ** 2) for k in want))
    return diff / np.sqrt(sum(np.sum(want[k] ** 2) for k in want))


def epochwise_gradient(cells, loss_key, X, Y, h0=None):
    """The full BPTT gradient of sum_t L_t (Y[t] None: no loss) from state h0."""
    model = make(cells, loss_key, EpochwiseBPTT())
    if h0 is not None:
        for l, h in enumerate(h0):
            model.network.stack.hidden(l)[...] = h
    for x, y in zip(X, Y):
        model.step(x, y)
    model.end_sequence()
    return {k: v.copy() for k, v in model.gradient.items()}


def layer_dicts(cells):
    return [cell_config(c) for c in cells]


@pytest.mark.parametrize("loss_key", LOSSES)
@pytest.mark.parametrize("cell_key", CELLS)
def test_rtrl_equals_full_bptt_at_every_step(cell_key, loss_key):
    cells = CELLS[cell_key]
    X, Y = stream(loss_key)
    model = make(cells, loss_key, RTRL())
    before = {k: v.copy() for k, v in model.params.items()}
    for t in range(T):
        model.step(X[t], Y[t])
        rtrl = {k: v.copy() for k, v in model.gradient.items()}
        only_t = [None] * t + [Y[t]]
        assert rel_err(rtrl, epochwise_gradient(cells, loss_key, X[: t + 1], only_t)) < 1e-9, t
    for k, v in model.params.items():  # learning rate 0: the weights never moved
        np.testing.assert_array_equal(v, before[k])


@pytest.mark.parametrize("loss_key", LOSSES)
@pytest.mark.parametrize("cell_key", CELLS)
def test_rtrl_and_epochwise_match_finite_differences(cell_key, loss_key):
    cells = CELLS[cell_key]
    X, Y = stream(loss_key)
    readout = LOSSES[loss_key][0]
    model = make(cells, loss_key, RTRL())
    params = {k: v.copy() for k, v in model.params.items()}
    for t in range(T):
        model.step(X[t], Y[t])
    weights = [0.0] * (T - 1) + [1.0]
    fd = ref.finite_difference(
        params, lambda p: ref.total_loss(p, layer_dicts(cells), readout.activation, loss_key.split("-")[0], X, Y, weights)
    )
    assert rel_err(model.gradient, fd) < 1e-6
    # epochwise BPTT of the whole sequence's loss against finite differences of the same
    full = ref.finite_difference(
        params, lambda p: ref.total_loss(p, layer_dicts(cells), readout.activation, loss_key.split("-")[0], X, Y, [1.0] * T)
    )
    assert rel_err(epochwise_gradient(cells, loss_key, X, Y), full) < 1e-6


def hidden_states(cells, loss_key, X):
    """h^l_t for every step (row t = state after step t) under fixed weights."""
    model = make(cells, loss_key, RTRL())
    out = []
    for x in X:
        model.step(x)
        out.append([model.network.stack.hidden(l).copy() for l in range(len(cells))])
    return out


@pytest.mark.parametrize("h,h_prime", [(7, 3), (5, 1), (6, 6)])
@pytest.mark.parametrize("loss_key", LOSSES)
@pytest.mark.parametrize("cell_key", CELLS)
def test_truncated_bptt_equals_brute_force_truncation(cell_key, loss_key, h, h_prime):
    cells = CELLS[cell_key]
    X, Y = stream(loss_key)
    Y = [None if t % 4 == 2 else y for t, y in enumerate(Y)]  # some steps come without a target
    readout = LOSSES[loss_key][0]
    states = hidden_states(cells, loss_key, X)
    model = make(cells, loss_key, TruncatedBPTT(h, h_prime))
    params = {k: v.copy() for k, v in model.params.items()}
    checked = 0
    for t in range(T):
        updates = model.counters["updates"]
        model.step(X[t], Y[t])
        if model.counters["updates"] == updates:
            continue
        start = max(0, t - h + 1)  # the window: steps start..t, state before it held fixed
        h0 = None if start == 0 else states[start - 1]
        window_y = [y if s > t - h_prime else None for s, y in enumerate(Y[start : t + 1], start)]
        got = {k: v.copy() for k, v in model.gradient.items()}
        assert rel_err(got, epochwise_gradient(cells, loss_key, X[start : t + 1], window_y, h0)) < 1e-9
        if checked % 4 == 0:  # finite differences are slower: every fourth update
            weights = [1.0] * len(window_y)
            fd = ref.finite_difference(
                params,
                lambda p: ref.total_loss(
                    p, layer_dicts(cells), readout.activation, loss_key.split("-")[0],
                    X[start : t + 1], window_y, weights, h0,
                ),
            )
            assert rel_err(got, fd) < 1e-6
        checked += 1
    assert checked >= (T // h_prime) // 2


def test_masked_outputs_get_no_gradient_and_match_finite_differences():
    cells = CELLS["elman-tanh"]
    X, Y = stream("squared")
    masks = [np.array([t % 2 == 0, True]) for t in range(T)]
    model = make(cells, "squared", RTRL())
    params = {k: v.copy() for k, v in model.params.items()}
    for t in range(T):
        model.step(X[t], Y[t], masks[t])
    weights = [0.0] * (T - 1) + [1.0]
    fd = ref.finite_difference(
        params, lambda p: ref.total_loss(p, layer_dicts(cells), "identity", "squared", X, Y, weights, masks=masks)
    )
    assert rel_err(model.gradient, fd) < 1e-6
    assert np.all(model.gradient["V"][0] == 0.0)  # output 0 masked at the last step (t = 49 is odd)


def test_target_feedback_gradient_treats_fed_back_targets_as_inputs():
    cells = CELLS["leaky"]
    X, Y = stream("squared")
    Y = [None if t % 3 == 0 else y for t, y in enumerate(Y)]
    model = make(cells, "squared", RTRL(), target_feedback=True)
    params = {k: v.copy() for k, v in model.params.items()}
    fed, prev = [], np.zeros(2)
    for t in range(T):
        fed.append(np.concatenate([X[t], prev]))
        prediction = model.step(X[t], Y[t]).prediction
        prev = Y[t] if Y[t] is not None else prediction
    weights = [0.0] * (T - 1) + [1.0]
    fd = ref.finite_difference(
        params, lambda p: ref.total_loss(p, layer_dicts(cells), "identity", "squared", fed, Y, weights)
    )
    assert rel_err(model.gradient, fd) < 1e-6


@pytest.mark.parametrize("loss_key", ["squared", "crossentropy"])
def test_bidirectional_gradient_matches_finite_differences(loss_key):
    readout, loss = LOSSES[loss_key]
    X, Y = stream(loss_key, length=12)
    model = BidirectionalRNN(N_IN, (Elman(4, "tanh"), Leaky(3, "tanh", beta=0.5)), readout, loss(), seed=1)
    rng = np.random.default_rng(5)
    model.theta += rng.normal(0, 0.3, model.theta.shape)
    total, g = model.gradient(X, Y)
    analytic = {"theta": g.copy()}

    def fn(p):
        model.theta[...] = p["theta"]
        return model.gradient(X, Y)[0]

    fd = ref.finite_difference({"theta": model.theta.copy()}, fn)
    assert rel_err(analytic, fd) < 1e-6
    # the output at t = 0 depends on the last input: a backward path exists
    X2 = X.copy()
    X2[-1] += 1.0
    assert not np.allclose(model.predict_sequence(X)[0], model.predict_sequence(X2)[0])
