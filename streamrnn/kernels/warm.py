"""Load every compiled kernel before the first event needs it.

numba loads a kernel's machine code from its cache (or compiles it) on the
first call, which costs a few hundred milliseconds for the hybrid step: in a
server that is the first event's latency.  ``warm_up()`` runs each kernel once
on a throwaway model, so a daemon pays that at start-up, before it says it is
ready; ``warm_pool`` does the same for the pool its supervised keys are rows of.  The arrays' types are the same whatever the sizes, so a small model
loads the code every model uses.
"""

from __future__ import annotations

import time

import numpy as np

from . import enabled


def warm_up() -> float:
    """Run every kernel once on throwaway models; the seconds it took (0 when kernels are off)."""
    if not enabled():
        return 0.0
    from ..cells import Elman
    from ..estimators.features import FeatureSpace
    from ..hybrid.regressor import HybridRegressor
    from ..learners import RTRL, TruncatedBPTT
    from ..model import OnlineRNN

    started = time.perf_counter()
    space = FeatureSpace()
    space.add(["a", "b"])
    for learner in (TruncatedBPTT(2, 1), RTRL()):
        model = HybridRegressor(2, layers=(Elman(2),), learner=learner)
        bare = OnlineRNN(2, (Elman(2),), learner=learner)
        for t in range(3):
            x = {"a": float(t), "b": 1.0 - t}
            raw, z, dx = space.read(x)
            model.predict(z, dx)
            model.learn(z, dx, float(t))
            space.learn(x, raw)
            bare.predict(np.array(z))
            bare.step(np.array(z), [float(t)])
    return time.perf_counter() - started


def warm_pool(pool) -> float:
    """Run a ``RegressorPool``'s step once, on a throwaway row of it (left free again): a daemon whose keys are
    rows loads that kernel too (compiling it, about 20 s, where no cache has it); the seconds it took."""
    if pool is None:
        return 0.0
    started = time.perf_counter()
    r = pool.add()
    try:
        pool.learn_one(r, [1.0] * pool.n, 1.0)
    finally:
        pool.remove(r)
    return time.perf_counter() - started
