"""ModelBatch (streamrnn.batch, kernels.pool, kernels.batch_step): B streams in one call, each bit for bit
what its own model gives stepping alone, whatever else is in the batch, and bad input changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

import streamrnn as sr
from streamrnn import kernels
from streamrnn.batch import ModelBatch

compiled_only = pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed")


@pytest.fixture
def kernels_on(monkeypatch):
    """The compiled path, whatever the environment (CI runs the suite with STREAMRNN_KERNELS=0 too)."""
    monkeypatch.setenv(kernels.ENV, "1")


SETUPS = {
    "elman-rtrl-adam": dict(layers=(sr.Elman(6),), learner=sr.RTRL(), clip_norm=1.0),
    "leaky-rtrl-sgd": dict(layers=(sr.Leaky(5, beta=0.4),), learner=sr.RTRL(), optimizer=sr.SGD(0.05)),
    "elman-bptt-5-2": dict(layers=(sr.Elman(6),), learner=sr.TruncatedBPTT(5, 2), clip_norm=0.5),
    "leaky-bptt-4-1": dict(layers=(sr.Leaky(4, beta=0.7),), learner=sr.TruncatedBPTT(4, 1)),
    "logloss": dict(layers=(sr.Elman(4),), readout=sr.Readout(1, "sigmoid"), loss=sr.LogLoss()),
    "softmax": dict(layers=(sr.Elman(4),), readout=sr.Readout(3, "softmax"), loss=sr.CrossEntropy(),
                    learner=sr.TruncatedBPTT(3, 1)),
    "scheduled-lr": dict(layers=(sr.Elman(4),), optimizer=sr.Adam(sr.ExponentialDecay(0.01, 0.5, 7))),
}


def make(setup: str, seed: int, kernels_flag=None, n_inputs=2) -> sr.OnlineRNN:
    kw = dict(SETUPS[setup])
    return sr.OnlineRNN(n_inputs, kw.pop("layers"), kernels=kernels_flag, seed=seed, **kw)


def targets(rng, setup: str, B: int, outputs: int) -> np.ndarray:
    if setup == "logloss":
        return rng.uniform(size=(B, outputs))
    if setup == "softmax":
        return np.eye(outputs)[rng.integers(0, outputs, size=B)]
    return rng.normal(size=(B, outputs))


def assert_same_state(a: sr.OnlineRNN, b: sr.OnlineRNN, unsaved: bool = True) -> None:
    (xa, ha), (xb, hb) = a.state_dict(), b.state_dict()
    assert ha == hb
    assert xa.keys() == xb.keys()
    for name in xa:
        np.testing.assert_array_equal(xa[name], xb[name], err_msg=name)
    if unsaved:  # what a compiled batch copies beside the saved state: the newest prediction, the norms
        assert a.diagnostics() == b.diagnostics()


def run_against_alone(setup, parallel, steps=30, B=6, seed=0):
    """Step a batch and the very models it was made from, one by one, on the same events: every
    prediction, loss and, at the end, every array and number equal (what the batch took in included)."""
    rng = np.random.default_rng(seed)
    models = [make(setup, s) for s in range(B)]
    models[1].step(np.ones(2), None)  # streams need not be in step with each other
    batch = ModelBatch(models, parallel=parallel)
    alone = models  # the batch took copies: these move only by their own steps below
    outputs = models[0].network.n_outputs
    for t in range(steps):
        X, Y = rng.normal(size=(B, 2)), targets(rng, setup, B, outputs)
        if t % 5 == 2:
            Y[rng.integers(0, B)] = np.nan  # a stream without a target at this step
        if t == 17:
            Y = None
        got = batch.step(X, Y)
        for b, m in enumerate(alone):
            y = None if Y is None or np.isnan(Y[b]).all() else Y[b]
            want = m.step(X[b], y)
            np.testing.assert_array_equal(got.predictions[b], want.prediction)
            if want.loss is None:
                assert np.isnan(got.losses[b])
            else:
                assert got.losses[b] == want.loss
    for b, m in enumerate(alone):
        assert_same_state(batch.model(b), m)
    counters = batch.counters
    assert [int(counters["steps"][b]) for b in range(B)] == [m.counters["steps"] for m in alone]
    return batch


@compiled_only
@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
@pytest.mark.parametrize("setup", sorted(SETUPS))
def test_each_stream_is_its_model_stepping_alone(kernels_on, setup, parallel):
    batch = run_against_alone(setup, parallel)
    assert batch.compiled


@pytest.mark.parametrize("setup", ["elman-rtrl-adam", "elman-bptt-5-2"])
def test_models_off_the_kernels_step_one_by_one(setup):
    """Models with kernels=False (or a process without them) keep their path; the batch is a loop."""
    rng = np.random.default_rng(1)
    models = [make(setup, s, kernels_flag=False) for s in range(3)]
    batch = ModelBatch(models)
    assert not batch.compiled
    alone = models
    assert all(m._kernel is None for m in batch._models)
    for _ in range(10):
        X, Y = rng.normal(size=(3, 2)), rng.normal(size=(3, 1))
        got = batch.step(X, Y)
        for b, m in enumerate(alone):
            np.testing.assert_array_equal(got.predictions[b], m.step(X[b], Y[b]).prediction)
    for b, m in enumerate(alone):
        assert_same_state(batch.model(b), m, unsaved=False)  # the batch's copies of the models hold their saved state


@compiled_only
@pytest.mark.parametrize("setup", ["elman-rtrl-adam", "elman-bptt-5-2", "softmax"])
def test_the_compiled_batch_equals_the_numpy_engine(kernels_on, setup):
    """Against the reference: the same streams on numpy, one by one, to 1e-12 relative."""
    rng = np.random.default_rng(2)
    batch = ModelBatch([make(setup, s) for s in range(4)])
    reference = [make(setup, s, kernels_flag=False) for s in range(4)]
    outputs = reference[0].network.n_outputs
    for _ in range(40):
        X, Y = rng.normal(size=(4, 2)), targets(rng, setup, 4, outputs)
        got = batch.step(X, Y)
        for b, m in enumerate(reference):
            np.testing.assert_allclose(got.predictions[b], m.step(X[b], Y[b]).prediction, rtol=1e-12, atol=1e-14)
    for b, m in enumerate(reference):
        np.testing.assert_allclose(batch.model(b).network.theta, m.network.theta, rtol=1e-12, atol=1e-14)


@compiled_only
@pytest.mark.parametrize("setup", ["elman-rtrl-adam", "elman-bptt-5-2"])
def test_a_streams_result_does_not_depend_on_its_batch(kernels_on, setup):
    """Stream 0 with two other companies (other seeds, another batch size, parallel or not): the same bits."""
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(25, 5, 2)), rng.normal(size=(25, 5, 1))
    companies = [([make(setup, 0), make(setup, 1)], False),
                 ([make(setup, 0)] + [make(setup, s) for s in (7, 8, 9, 10)], True)]
    trajectories = []
    for models, parallel in companies:
        batch = ModelBatch(models, parallel=parallel)
        B = len(models)
        trajectories.append(np.array([batch.step(X[t, :B], Y[t, :B]).predictions[0] for t in range(25)]))
    np.testing.assert_array_equal(trajectories[0], trajectories[1])


@compiled_only
def test_the_models_given_do_not_move_and_model_b_is_a_copy(kernels_on):
    models = [make("elman-rtrl-adam", s) for s in range(3)]
    models[0].step(np.ones(2), np.zeros(1))
    before = [_restored(m.state_dict()) for m in models]
    batch = ModelBatch(models)
    for b, m in enumerate(models):
        assert_same_state(batch.model(b), m)  # in: byte for byte, counters and numbers too
    batch.step(np.ones((3, 2)), np.zeros((3, 1)))
    for m, was in zip(models, before):
        assert_same_state(m, was, unsaved=False)
    copy = batch.model(2)
    copy.step(np.ones(2), np.zeros(1))
    assert int(batch.counters["steps"][2]) == 1 and copy.counters["steps"] == 2
    assert int(batch.counters["steps"][0]) == 2


@compiled_only
def test_predict_moves_nothing_and_agrees_with_the_step(kernels_on):
    rng = np.random.default_rng(4)
    batch = ModelBatch([make("elman-bptt-5-2", s) for s in range(3)])
    for _ in range(5):
        batch.step(rng.normal(size=(3, 2)), rng.normal(size=(3, 1)))
    X = rng.normal(size=(3, 2))
    states = [batch.model(b).state_dict() for b in range(3)]
    predicted = batch.predict(X)
    for b in range(3):
        assert_same_state(batch.model(b), _restored(states[b]), unsaved=False)
    np.testing.assert_array_equal(predicted, batch.step(X, rng.normal(size=(3, 1))).predictions)


def _restored(state) -> sr.OnlineRNN:
    arrays, header = state
    model = sr.OnlineRNN.from_config(header["config"])
    model.load_state_dict(arrays, header)
    return model


@compiled_only
@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
@pytest.mark.parametrize("setup", ["elman-rtrl-adam", "elman-bptt-5-2"])
def test_a_non_finite_step_is_taken_as_the_model_takes_it(kernels_on, setup):
    """A state that overflows: the kernel declines, the row steps on numpy and comes back, as alone."""
    models = [make(setup, s) for s in range(3)]
    for m in models:
        m.network.theta[:] *= 1e3
    batch = ModelBatch(models)
    alone = models
    X = np.array([[1e306, -1e306], [0.5, 0.1], [1e306, 1e306]])
    for t in range(6):
        Y = np.full((3, 1), 0.3)
        got = batch.step(X if t == 2 else X * 0 + 0.2, Y)
        for b, m in enumerate(alone):
            want = m.step((X if t == 2 else X * 0 + 0.2)[b], Y[b])
            np.testing.assert_array_equal(got.predictions[b], want.prediction)
    for b, m in enumerate(alone):
        assert_same_state(batch.model(b), m)
    assert int(batch.counters["skipped"].sum()) > 0


BAD_X = {
    "shape": (np.zeros((3, 3)), "shape"),
    "nan": (np.array([[0.0, 0.0], [np.nan, 0.0], [0.0, 0.0]]), "X row 1"),
    "inf": (np.array([[0.0, 0.0], [0.0, 0.0], [0.0, np.inf]]), "X row 2"),
    "text": ([["a", "b"]] * 3, "numbers"),
}
@compiled_only
@pytest.mark.parametrize("which", sorted(BAD_X))
def test_bad_x_names_the_row_and_changes_nothing(kernels_on, which):
    batch = ModelBatch([make("elman-rtrl-adam", s) for s in range(3)])
    batch.step(np.ones((3, 2)), np.zeros((3, 1)))
    before = bytes(batch._pool.bytes)
    X, message = BAD_X[which]
    with pytest.raises(ValueError, match=message):
        batch.step(X, np.zeros((3, 1)))
    with pytest.raises(ValueError, match=message):
        batch.predict(X)
    assert bytes(batch._pool.bytes) == before
    assert int(batch.counters["steps"][0]) == 1


@compiled_only
def test_bad_y_names_the_row_and_changes_nothing(kernels_on):
    batch = ModelBatch([make("elman-bptt-5-2", s, n_inputs=1) for s in range(3)])
    before = bytes(batch._pool.bytes)
    with pytest.raises(ValueError, match="shape"):
        batch.step(np.zeros((3, 1)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="Y row 1"):
        batch.step(np.zeros((3, 1)), np.array([[0.0], [np.inf], [0.0]]))
    with pytest.raises(ValueError, match="numbers"):
        batch.step(np.zeros((3, 1)), [["x"], ["y"], ["z"]])
    two = ModelBatch([sr.OnlineRNN(1, (sr.Elman(3),), sr.Readout(2), seed=s) for s in range(2)])
    with pytest.raises(ValueError, match="Y row 0 must be all numbers"):
        two.step(np.zeros((2, 1)), np.array([[0.0, np.nan], [1.0, 1.0]]))
    assert bytes(batch._pool.bytes) == before


@compiled_only
def test_a_loss_refuses_a_target_by_row(kernels_on):
    batch = ModelBatch([make("logloss", s) for s in range(2)])
    before = bytes(batch._pool.bytes)
    with pytest.raises(ValueError, match=r"Y row 1: logloss targets must lie in \[0, 1\]"):
        batch.step(np.zeros((2, 2)), np.array([[0.5], [1.5]]))
    assert bytes(batch._pool.bytes) == before


def test_a_batch_of_what_cannot_be_batched_is_refused():
    with pytest.raises(ValueError, match="at least one model"):
        ModelBatch([])
    with pytest.raises(ValueError, match="model 1 is a str"):
        ModelBatch([make("elman-rtrl-adam", 0), "model"])
    m = make("elman-rtrl-adam", 0)
    with pytest.raises(ValueError, match="appears twice"):
        ModelBatch([m, m])
    with pytest.raises(ValueError, match="model 1 is configured differently"):
        ModelBatch([make("elman-rtrl-adam", 0), make("elman-bptt-5-2", 0)])
    with pytest.raises(IndexError, match="stream 5"):
        ModelBatch([m]).model(5)


@compiled_only
def test_what_no_kernel_covers_steps_one_by_one(kernels_on):
    """A GRU and a model with target feedback: correct results on the models' own paths."""
    rng = np.random.default_rng(5)
    for kw in (dict(layers=(sr.GRU(3),)), dict(layers=(sr.Elman(3),), target_feedback=True)):
        models = [sr.OnlineRNN(2, kw["layers"], seed=s, target_feedback=kw.get("target_feedback", False))
                  for s in range(2)]
        batch = ModelBatch(models)
        assert not batch.compiled
        alone = [batch.model(b) for b in range(2)]
        for _ in range(5):
            X, Y = rng.normal(size=(2, 2)), rng.normal(size=(2, 1))
            got = batch.step(X, Y)
            for b, m in enumerate(alone):
                np.testing.assert_array_equal(got.predictions[b], m.step(X[b], Y[b]).prediction)


@compiled_only
def test_a_batch_of_compiled_models_in_a_process_without_kernels_still_hands_them_out(monkeypatch):
    """Models built with kernels=True where STREAMRNN_KERNELS=0: the batch is compiled, and the
    models it hands out (and steps a declined row with) are on the kernel path too."""
    monkeypatch.setenv(kernels.ENV, "0")
    models = [make("elman-rtrl-adam", s, kernels_flag=True) for s in range(2)]
    batch = ModelBatch(models)
    assert batch.compiled
    X = np.array([[1e306, 1e306], [0.1, 0.2]])
    with np.errstate(over="ignore"):
        for m in models:
            m.network.theta[:] *= 1e3
        batch = ModelBatch(models)
        got = batch.step(X, np.zeros((2, 1)))
        for b, m in enumerate(models):
            np.testing.assert_array_equal(got.predictions[b], m.step(X[b], np.zeros(1)).prediction)
    assert batch.model(0)._kernel is not None
