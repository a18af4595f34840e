"""It learns: the Add task (Williams & Zipser style lags 3 and 8) and a dependency longer than the BPTT window."""

from __future__ import annotations

import numpy as np
import pytest

from streamrnn import RTRL, Adam, CrossEntropy, Elman, ExponentialDecay, OnlineRNN, Readout, SquaredError, TruncatedBPTT

from .frozen import frozen_when_asked  # noqa: F401  (STREAMRNN_TEST_FREEZE=1: every "learning" test must fail)

STEPS = 20_000
OPTIMUM, LAG3_ONLY, MEMORYLESS = 0.4545, 0.5192, 0.6616


def add_task(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """x_t ~ Bernoulli(0.5); P(y_t = 1) = 0.5 + 0.5 x_{t-3} - 0.25 x_{t-8}."""
    x = rng.integers(0, 2, n).astype(float)
    p = np.full(n, 0.5)
    p[3:] += 0.5 * x[:-3]
    p[8:] -= 0.25 * x[:-8]
    return x, (rng.random(n) < p).astype(int)


def held_out_cross_entropy(learner, seed=0, lr=0.002) -> float:
    """One online pass of 20,000 steps, then 5,000 held-out steps predicted before they are seen.

    The inputs are centred (x - 1/2, as any preprocessing would) and the readout starts three
    times larger than the engine's default, which lets the hidden layer learn sooner.  ``lr`` is
    the peak rate of the decaying Adam, the protocol's one knob.
    """
    rng = np.random.default_rng(seed)
    x, y = add_task(STEPS + 5000, rng)
    x = x - 0.5
    model = OnlineRNN(1, (Elman(32),), Readout(2, "softmax"), CrossEntropy(), learner,
                      Adam(ExponentialDecay(lr, 0.1, STEPS)), seed=seed)
    model.params["V"][...] *= 3.0
    onehot = np.eye(2)
    for t in range(STEPS):
        model.step([x[t]], onehot[y[t]])
    losses = []
    for t in range(STEPS, STEPS + 5000):
        losses.append(-np.log(model.predict([x[t]])[y[t]]))
        model.step([x[t]])  # advance, no learning
    return float(np.mean(losses))


def lag3_only_cross_entropy(seed=0) -> float:
    """The baseline on the same stream: P(y_t | x_{t-3}) counted on the 20,000 learning steps, scored on
    the 5,000 held-out ones (0.518 here; the theory says 0.5192)."""
    x, y = add_task(STEPS + 5000, np.random.default_rng(seed))
    x3 = np.concatenate([np.zeros(3), x[:-3]]).astype(int)
    p = np.array([y[:STEPS][x3[:STEPS] == v].mean() for v in (0, 1)])[x3[STEPS:]]
    return float(-np.mean(np.log(np.where(y[STEPS:] == 1, p, 1.0 - p))))


@pytest.mark.slow
@pytest.mark.learning
@pytest.mark.parametrize("learner", [RTRL(), TruncatedBPTT(10)], ids=["rtrl", "bptt-10"])
def test_add_task_learns_both_lags(learner):
    ce = held_out_cross_entropy(learner)
    # well below what x_{t-3} alone allows (0.519): the lag-8 dependency is learned too.
    # The goal is <= 0.46 (optimum 0.4545), reached here only after ~100,000 steps;
    # see the README's results section.
    assert OPTIMUM - 0.01 < ce < lag3_only_cross_entropy() - 0.033, ce


def delayed_recall_error(learner, lag=6, units=8, steps=8000, seeds=(0, 1, 2)) -> float:
    """y_t = x_{t-lag} for x_t = +-1: mean squared error over 1,000 steps after learning, the median
    over ``seeds``.  A single run is fragile: Adam at a fixed rate 0.01 learns the recall and then,
    for one seed in three, unlearns it as the weights keep moving (seen with this engine before and
    after the cell contract, whose rounding differs in the last bits).  The rate decays tenfold over
    the run, and the median of three runs stands for what the learner does."""
    out = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        x = rng.choice([-1.0, 1.0], size=steps + 1000)
        model = OnlineRNN(1, (Elman(units),), Readout(1), SquaredError(), learner,
                          Adam(ExponentialDecay(0.01, 0.1, steps)), seed=seed)
        errors = []
        for t in range(steps + 1000):
            result = model.step([x[t]], [x[t - lag] if t >= lag else 0.0])
            if t >= steps:
                errors.append(2 * result.loss)
        out.append(float(np.mean(errors)))
    return float(np.median(out))


def running_mean_error(steps=8000, seed=0) -> float:
    """The baseline on the same stream: the running mean of the targets as the prediction, scored as above (~1)."""
    x = np.random.default_rng(seed).choice([-1.0, 1.0], size=steps + 1000)
    targets = np.concatenate([np.zeros(6), x[:-6]])
    mean = np.concatenate([[0.0], np.cumsum(targets)[:-1] / np.arange(1, len(x))])  # of the targets before
    return float(np.mean((targets - mean)[steps:] ** 2))


@pytest.mark.slow
@pytest.mark.learning
def test_rtrl_learns_a_dependency_longer_than_the_bptt_window():
    chance = running_mean_error()
    assert delayed_recall_error(RTRL()) < 0.05 * chance  # recalls x_{t-6} almost perfectly
    assert delayed_recall_error(TruncatedBPTT(2)) > 0.8 * chance  # a 2-step window never sees the cause
    assert delayed_recall_error(TruncatedBPTT(8)) < 0.05 * chance  # ... while a window that spans the lag does
