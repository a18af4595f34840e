"""Frozen mode: every learning part of every model disabled, to prove the learning tests have teeth.

A test marked ``learning`` claims that a model learns, and checks it against a
baseline computed on the same stream (the last value, the running mean, a
linear model...) by a margin.  A model that never updates must fail every one
of those tests.  With ``STREAMRNN_TEST_FREEZE=1`` in the environment, the
fixture ``frozen_when_asked`` (imported by the test modules that hold such
tests) freezes the models inside each ``learning`` test:

* the network: every optimiser's update is zero (the weights never move);
* the exact parts: recursive least squares (the linear models and the
  corrector's heads), exponential smoothing and Theta, the online logistic
  regression, and the ML-Poly aggregation weights never update.

What is left is what a model that never learns still has: the data it has
seen (the last value, the history ring) and the running statistics it
standardises with.  A hybrid model then predicts a fixed, uniform mix of its
non-learning experts (the last value, the running mean, zero-weight linear
models), which is exactly the kind of baseline the tests must beat.

Frozen mode is off unless asked for, so the ordinary run is unchanged::

    STREAMRNN_TEST_FREEZE=1 .venv/bin/python -m pytest -m learning tests/   # every test must FAIL
    .venv/bin/python tools/frozen_check.py                                   # both runs, checked
"""

from __future__ import annotations

import os

import pytest

ENV = "STREAMRNN_TEST_FREEZE"


def frozen_mode() -> bool:
    return os.environ.get(ENV, "") not in ("", "0")


def _no_step(self, g, state, theta):
    g[...] = 0.0
    return g


def _nothing(self, *args, **kwargs):
    return None


def _refused(self, *args, **kwargs):
    return False


def freeze(monkeypatch) -> None:
    """Make every model part that learns a no-op, for the life of ``monkeypatch``."""
    from streamrnn import optim
    from streamrnn.hybrid import aggregation, logistic, rls, smoothing

    for cls in (*optim.OPTIMISERS.values(), optim.Chain):
        monkeypatch.setattr(cls, "update", _no_step)
    monkeypatch.setattr(rls.RLS, "update", _refused)
    monkeypatch.setattr(rls.RLS, "update_heads", _nothing)
    monkeypatch.setattr(rls.SharedRLS, "update", _refused)
    monkeypatch.setattr(aggregation.MLPoly, "learn", _nothing)
    monkeypatch.setattr(aggregation.MLPoly, "update_steps", _nothing)
    monkeypatch.setattr(smoothing.ExponentialSmoothing, "learn", _nothing)
    monkeypatch.setattr(smoothing.Theta, "learn", _nothing)
    monkeypatch.setattr(logistic.OnlineLogistic, "learn", _nothing)


@pytest.fixture(autouse=True)
def frozen_when_asked(request, monkeypatch):
    """In frozen mode, freeze the models of every test marked ``learning``; otherwise nothing."""
    if frozen_mode() and request.node.get_closest_marker("learning") is not None:
        freeze(monkeypatch)
    yield
