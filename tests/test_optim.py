"""Optimisers against their textbook formulas, and their contract."""

from __future__ import annotations


import numpy as np
import pytest

from streamrnn import SGD, Adam, Chain, ClipGlobalNorm, ExponentialDecay, InverseTimeDecay, Momentum, RMSProp, WeightDecay


def reference_steps(kind, grads, theta, lr=0.1):
    m = np.zeros_like(theta)
    s = np.zeros_like(theta)
    out = []
    for t, g in enumerate(grads, 1):
        if kind == "sgd":
            u = -lr * g
        elif kind == "momentum":
            m = 0.9 * m + g
            u = -lr * m
        elif kind == "nesterov":
            m = 0.9 * m + g
            u = -lr * (g + 0.9 * m)
        elif kind == "rmsprop":
            s = 0.9 * s + 0.1 * g * g
            u = -lr * g / (np.sqrt(s) + 1e-8)
        else:  # adam
            m = 0.9 * m + 0.1 * g
            s = 0.999 * s + 0.001 * g * g
            mhat, shat = m / (1 - 0.9**t), s / (1 - 0.999**t)
            u = -lr * mhat / (np.sqrt(shat) + 1e-8)
        out.append(u)
    return out


OPTS = {
    "sgd": SGD(0.1),
    "momentum": Momentum(0.1, 0.9),
    "nesterov": Momentum(0.1, 0.9, nesterov=True),
    "rmsprop": RMSProp(0.1, 0.9, 1e-8),
    "adam": Adam(0.1),
}


@pytest.mark.parametrize("kind", OPTS)
def test_updates_match_the_formulas(kind):
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=7) for _ in range(20)]
    theta = rng.normal(size=7)
    opt = OPTS[kind]
    state = opt.init(7)
    want = reference_steps(kind, grads, theta)
    for g, u in zip(grads, want):
        got = opt.update(g.copy(), state, theta)
        # Adam folds eps into the bias correction (eps_hat): equal up to eps-sized terms
        np.testing.assert_allclose(got, u, rtol=1e-6 if kind == "adam" else 1e-12)
    assert int(state["count"]) == 20


def test_clip_then_decay_then_adam_compose_in_order():
    theta = np.ones(3)
    g = np.array([3.0, 4.0, 0.0])  # norm 5
    chain = Chain(ClipGlobalNorm(1.0), WeightDecay(0.5), SGD(1.0))
    u = chain.update(g.copy(), chain.init(3), theta)
    np.testing.assert_allclose(u, -(np.array([0.6, 0.8, 0.0]) + 0.5))
    assert set(Chain(ClipGlobalNorm(1.0), Adam()).init(3)) == {"1.count", "1.m", "1.s"}


def test_schedules():
    assert ExponentialDecay(1.0, 0.5, 10)(10) == pytest.approx(0.5)
    assert InverseTimeDecay(1.0, 0.1)(10) == pytest.approx(0.5)
    opt = SGD(ExponentialDecay(1.0, 0.5, 1))
    state = opt.init(1)
    assert opt.update(np.ones(1), state, np.zeros(1))[0] == pytest.approx(-0.5)
    assert opt.update(np.ones(1), state, np.zeros(1))[0] == pytest.approx(-0.25)


@pytest.mark.parametrize("bad", [
    lambda: SGD(-1.0), lambda: Adam(float("nan")), lambda: Momentum(0.1, 1.5), lambda: ClipGlobalNorm(0.0),
    lambda: RMSProp(0.1, decay=2.0), lambda: Chain(), lambda: ExponentialDecay(1.0, steps=0),
])
def test_bad_arguments_raise_value_error(bad):
    with pytest.raises(ValueError):
        bad()
