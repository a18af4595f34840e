"""Growing a live model: a new input or output starts at zero and changes nothing else.

Exactness is to floating-point rounding, not bit for bit: the grown layer 0
computes z = A v with a longer v, and BLAS sums a longer dot product in a
different order (SIMD lanes, blocking), so the same value may differ in the
last bits (~1e-17 at the first step).  The tests check the first step to a few
ulps and a long continuation to a tight relative tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest

from streamrnn import (
    RTRL, Adam, Chain, ClipGlobalNorm, CrossEntropy, Elman, EpochwiseBPTT, Leaky, Momentum,
    OnlineRNN, Readout, SnAp1, TruncatedBPTT, UORO,
)
from streamrnn.learners import REGISTRY
from streamrnn.grow import grow_inputs, grow_outputs

LEARNERS = {"rtrl": RTRL(), "bptt-5-1": TruncatedBPTT(5, 1), "bptt-6-3": TruncatedBPTT(6, 3), "epochwise": EpochwiseBPTT(),
            "snap1": SnAp1(), "uoro": UORO(seed=2)}


def test_every_registered_learner_is_grown_here():
    assert {type(learner) for learner in LEARNERS.values()} == set(REGISTRY.values())
STACKS = {"elman": (Elman(5),), "stack-2": (Elman(4), Leaky(3, beta=0.5))}


def make(learner, layers, feedback, n_inputs=3, readout=Readout(2), loss=None):
    optimizer = Chain(ClipGlobalNorm(5.0), Adam(0.01)) if feedback else Momentum(0.02)
    return OnlineRNN(n_inputs, layers, readout, loss, learner, optimizer, clip_norm=2.0,
                     target_feedback=feedback, seed=4)


def stream(n, n_inputs, n_outputs, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_inputs))
    Y = np.tanh(np.cumsum(X, axis=0)[:, :1] * np.linspace(0.3, 1.0, n_outputs))
    return X, Y


def same_trajectory(a, b, steps):
    """Step a and b through (x_a, y_a, x_b, y_b, mask_b) and compare a's outputs with b's first ones."""
    for t, (xa, ya, xb, yb, mask) in enumerate(steps):
        pa = a.step(xa, ya).prediction
        pb = b.step(xb, yb, mask if yb is not None else None).prediction[: len(pa)]
        # one forward pass apart: equal to a few ulps; later, rounding may compound a little
        np.testing.assert_allclose(pb, pa, rtol=1e-8, atol=1e-14 if t == 0 else 1e-10, err_msg=f"step {t}")
        if isinstance(a.learner, EpochwiseBPTT) and t % 25 == 24:
            a.end_sequence()
            b.end_sequence()


@pytest.mark.parametrize("feedback", [False, True], ids=["plain", "feedback"])
@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("learner", LEARNERS)
def test_grown_inputs_fed_zeros_continue_like_the_original(learner, stack, feedback):
    model = make(LEARNERS[learner], STACKS[stack], feedback)
    X, Y = stream(200, 3, 2)
    for x, y in zip(X[:30], Y[:30]):
        model.step(x, y)
    before = model.state_dict()[0]
    grown = grow_inputs(model, 2)
    for name, a in model.state_dict()[0].items():  # the original is left alone
        np.testing.assert_array_equal(a, before[name])
    assert grown.n_inputs == 5 and grown.config()["n_inputs"] == 5
    W0 = grown.params["W0"]
    np.testing.assert_array_equal(W0[:, 3:5], 0.0)  # the new columns, before any fed-back ones
    np.testing.assert_array_equal(np.delete(W0, [3, 4], axis=1), model.params["W0"])
    steps = []
    for t, (x, y) in enumerate(zip(X[30:], Y[30:])):
        y = None if t % 7 == 3 else y  # some events have no target
        steps.append((x, y, np.concatenate([x, [0.0, 0.0]]), y, None))
    same_trajectory(model, grown, steps)


@pytest.mark.parametrize("feedback", [False, True], ids=["plain", "feedback"])
@pytest.mark.parametrize("learner", ["rtrl", "bptt-6-3"])
def test_grown_outputs_without_targets_leave_the_old_ones_alone(learner, feedback):
    model = make(LEARNERS[learner], STACKS["stack-2"], feedback)
    X, Y = stream(150, 3, 2)
    for x, y in zip(X[:30], Y[:30]):
        model.step(x, y)
    grown = grow_outputs(model, 1)
    np.testing.assert_array_equal(grown.params["V"][2], 0.0)
    assert grown.params["c"][2] == 0.0
    assert grown.network.n_outputs == 3
    mask = np.array([True, True, False])  # the new output has no target yet
    steps = [(x, y, x, np.append(y, 0.0), mask) for x, y in zip(X[30:], Y[30:])]
    same_trajectory(model, grown, steps)


def test_a_new_softmax_class_starts_at_logit_zero_and_keeps_the_old_odds():
    model = make(RTRL(), STACKS["elman"], False, readout=Readout(2, "softmax"), loss=CrossEntropy())
    X, _ = stream(40, 3, 1)
    for t, x in enumerate(X):
        model.step(x, np.eye(2)[t % 2])
    x = X[0]
    old, new = model.predict(x), grow_outputs(model, 1).predict(x)
    a = model.network.a
    np.testing.assert_allclose(new[:2] / new[:2].sum(), old, rtol=1e-12)  # relative odds kept
    np.testing.assert_allclose(new[2], 1.0 / (1.0 + np.exp(a).sum()), rtol=1e-12)  # e^0 / (sum e^a + e^0)


def test_growth_keeps_counters_optimiser_and_a_saveable_state(tmp_path):
    model = make(TruncatedBPTT(5, 1), STACKS["stack-2"], True)
    X, Y = stream(60, 3, 2)
    for x, y in zip(X, Y):
        model.step(x, y)
    grown = grow_outputs(grow_inputs(model, 1), 2)
    assert grown.counters == model.counters
    m = grown.opt_state["1.m"]  # the Adam moments, laid out like theta
    assert m.shape == (grown.network.n_params,)
    np.testing.assert_array_equal(grown.network.views(m)["W0"][:, 3], 0.0)
    np.testing.assert_array_equal(grown.network.views(m)["V"][2:], 0.0)
    grown.save(tmp_path / "grown.npz")
    again = grow_outputs(grow_inputs(model, 1), 2)
    again.load(tmp_path / "grown.npz")
    x = np.concatenate([X[0], [0.5]])
    np.testing.assert_array_equal(again.predict(x), grown.predict(x))


def test_a_grown_model_keeps_sharing_its_scratch_and_its_path():
    """A model on a shared ``Scratch`` (a daemon's keys of one configuration) grows into one on the same
    scratch, whose buffers of the new size it takes from there, and on the same path (kernels or numpy)."""
    from streamrnn.model import Scratch

    scratch = Scratch()
    model = OnlineRNN(2, Elman(4), Readout(1), learner=TruncatedBPTT(5, 1), seed=0, scratch=scratch)
    model.step(np.array([0.5, -0.5]), np.array([0.1]))
    grown = grow_outputs(grow_inputs(model, 1), 1)
    P = grown.network.n_params
    assert grown._buffers is scratch and grown.grad is scratch.array("grad", (P,))
    assert (grown._kernel is None) == (model._kernel is None)
    result = grown.step(np.array([0.5, -0.5, 0.0]), np.array([0.1, 0.2]))
    assert np.isfinite(result.prediction).all() and grown.counters["updates"] == model.counters["updates"] + 1
    own = grow_inputs(OnlineRNN(2, Elman(4), Readout(1), seed=0), 1)
    assert own._buffers is None and own.grad is not scratch.array("grad", (own.network.n_params,))


def test_growth_rejects_a_bad_width():
    model = make(RTRL(), STACKS["elman"], False)
    with pytest.raises(ValueError, match="k must be an integer"):
        grow_inputs(model, 0)
    with pytest.raises(ValueError, match="k must be an integer"):
        grow_outputs(model, 1.5)


@pytest.mark.parametrize("learner", LEARNERS)
def test_every_learner_declares_a_known_layout_for_each_state_array_and_grow_refuses_others(learner, monkeypatch):
    from streamrnn.grow import LAYOUTS

    model = make(LEARNERS[learner], STACKS["stack-2"], False)
    layouts = model.learner.layouts()
    assert set(layouts) == set(model.learner.state_arrays()) and set(layouts.values()) <= set(LAYOUTS)
    wrong = dict(layouts, **{next(iter(layouts)): "FIXED"})
    monkeypatch.setattr(model.learner, "layouts", lambda: wrong)
    with pytest.raises(ValueError, match=r"declares unknown layouts \['FIXED'\]"):
        grow_inputs(model, 1)
