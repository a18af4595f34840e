"""Optimisers against their textbook formulas, and their contract."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from streamrnn import SGD, Adam, Chain, ClipGlobalNorm, ExponentialDecay, InverseTimeDecay, Momentum, RMSProp, WeightDecay
from streamrnn.optim import from_config


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


# (class, parameter, other arguments, upper bound, whether the bound itself is allowed)
RANGES = [
    (SGD, "lr", {}, math.inf, False),
    (Momentum, "lr", {}, math.inf, False),
    (Momentum, "momentum", {}, 1.0, False),
    (RMSProp, "lr", {}, math.inf, False),
    (RMSProp, "decay", {}, 1.0, False),
    (RMSProp, "eps", {}, math.inf, False),
    (Adam, "lr", {}, math.inf, False),
    (Adam, "b1", {}, 1.0, False),
    (Adam, "b2", {}, 1.0, False),
    (Adam, "eps", {}, math.inf, False),
    (WeightDecay, "rate", {}, math.inf, False),
    (ClipGlobalNorm, "max_norm", {}, math.inf, False),
    (ExponentialDecay, "initial", {}, math.inf, False),
    (ExponentialDecay, "rate", {"initial": 1.0}, 1.0, True),
    (InverseTimeDecay, "initial", {}, math.inf, False),
    (InverseTimeDecay, "decay", {"initial": 1.0}, math.inf, False),
]


@pytest.mark.parametrize("cls, name, others, high, closed", RANGES, ids=lambda v: getattr(v, "__name__", None))
def test_every_setting_is_checked_against_its_range_and_named_in_the_error(cls, name, others, high, closed):
    def make(value):
        return cls(**others, **{name: value})

    if cls is not ClipGlobalNorm:  # the lower bound is allowed, except for a clipping norm
        assert getattr(make(0.0), name) == 0.0
    assert getattr(make(0.5), name) == 0.5
    if high < math.inf:
        if closed:
            assert getattr(make(high), name) == high
        else:
            with pytest.raises(ValueError, match=re.escape(f"{name} must be a number in [0.0, {high}), got {high!r}")):
                make(high)
        with pytest.raises(ValueError, match=re.escape(f"{name} must be a number")):
            make(high + 0.5)
    interval = f"[0.0, {high}{']' if closed else ')'}"
    for bad in (-1.0, float("nan"), math.inf, True, "0.1"):
        with pytest.raises(ValueError, match=re.escape(f"{name} must be a number in {interval}, got {bad!r}")):
            make(bad)


def test_the_errors_of_the_other_checks_say_what_is_wrong():
    with pytest.raises(ValueError, match="^max_norm must be > 0, got 0.0$"):
        ClipGlobalNorm(0.0)
    with pytest.raises(ValueError, match="^steps must be an integer >= 1, got 0$"):
        ExponentialDecay(1.0, steps=0)
    with pytest.raises(ValueError, match="^Chain needs one or more optimiser transforms, got \\(\\)$"):
        Chain()
    kinds = "['Adam', 'ClipGlobalNorm', 'Momentum', 'RMSProp', 'SGD', 'WeightDecay', 'Chain']"
    for config, kind in (({"kind": "Nope"}, "'Nope'"), ({}, "None")):
        with pytest.raises(ValueError, match=re.escape(f"optimizer kind must be one of {kinds}, got {kind}")):
            from_config(config)
    for lr, kind in (({"kind": "Cosine", "initial": 1.0}, "'Cosine'"), ({"initial": 1.0}, "None")):
        with pytest.raises(ValueError, match=re.escape(
                f"schedule kind must be one of ['ExponentialDecay', 'InverseTimeDecay'], got {kind}")):
            from_config({"kind": "SGD", "lr": lr})


def test_update_counters_are_exact_integers():
    for opt in (SGD(0.1), Momentum(0.1), RMSProp(0.1), Adam(0.1)):
        state = opt.init(2)
        assert state["count"].dtype == np.int64 and state["count"].shape == ()
        opt.update(np.ones(2), state, np.zeros(2))
        assert int(state["count"]) == 1


def test_weight_decay_adds_rate_times_theta():
    theta = np.array([2.0, -4.0, 0.5])
    g = WeightDecay(0.25).update(np.ones(3), {}, theta)
    np.testing.assert_array_equal(g, [1.5, 0.0, 1.125])


def test_adam_steps_downhill_on_gradients_smaller_than_eps():
    # with a gradient far below eps the step is dominated by the eps term of the
    # denominator: m / (sqrt(s) + eps sqrt(1 - b2^t)), which must keep the gradient's sign
    opt = Adam(0.1)
    state = opt.init(2)
    g = np.array([1e-9, -1e-9])
    u = opt.update(g.copy(), state, np.zeros(2))
    c2 = math.sqrt(1 - 0.999)
    want = -0.1 * c2 / (1 - 0.9) * (0.1 * g) / (np.sqrt(0.001 * g * g) + 1e-8 * c2)
    np.testing.assert_allclose(u, want, rtol=1e-12)
    assert np.all(np.sign(u) == -np.sign(g))


def test_chain_repr_and_equality():
    chain = Chain(ClipGlobalNorm(2.0), SGD(0.5))
    assert repr(chain) == "Chain(ClipGlobalNorm(max_norm=2.0), SGD(lr=0.5))"
    assert chain == Chain(ClipGlobalNorm(2.0), SGD(0.5))
    assert hash(chain) == hash(Chain(ClipGlobalNorm(2.0), SGD(0.5)))
    assert chain != Chain(SGD(0.5), ClipGlobalNorm(2.0))
    assert Chain(SGD(0.5)) != SGD(0.5)
    assert from_config(chain.config()) == chain
