"""Compiled per-event kernels (numba): one call per model step on the common paths.

The numpy engine is the reference; a kernel computes the same step (forward,
loss, learner, the finiteness guard, clipping, optimiser) in one compiled
call and writes the same arrays, so a model can switch paths at any step and
its checkpoints do not say which path wrote them.  Tests hold the two paths
equal to 1e-12 relative.

Which steps have a kernel:

* the engine's step (``plan.py``, ``dense_step.py``): one Elman or Leaky
  layer, exact RTRL or BPTT(h; h'), the canonical readout/loss pairs
  (identity + squared error, sigmoid + log-loss, softmax + cross-entropy),
  SGD or Adam (a number or a schedule for the rate), clipping by
  ``clip_norm``, with or without target feedback, no mask;
* the hybrid regressor's event (``regressor.py``, ``hybrid_step.py``) --
  what ``RNNRegressor`` and the daemon's supervised keys run: its exact
  components, both ML-Poly aggregations, the RLS problems and scales, and
  the corrector network's forward pass and step, in one call for predict
  and one for learn; its ~50 arrays go by address (``table.py``), since numba
  checks each argument of a call;
* the feature space's standardising and moments (``scale_step.py``).

The kernels compile with numba's numpy error model: a division by zero gives
inf or NaN, as numpy does (the finiteness guard then takes the step), never
a ZeroDivisionError, and the loops it leaves free of checks vectorise (Adam's
update over 1,121 parameters went from 5.5 to 3.4 µs).

Every other model runs on numpy.  ``warm.warm_up()`` loads them all on
throwaway models; the daemon calls it at start-up, before it is ready.

Switches: ``STREAMRNN_KERNELS=0`` in the environment turns them off for the
process, and ``OnlineRNN(..., kernels=False)`` for one model.  numba compiles
each kernel on its first call (a few seconds) and caches the machine code
beside the package where that is writable, so later processes start in
well under a second.
"""

from __future__ import annotations

import os

ENV = "STREAMRNN_KERNELS"
#: what a kernel step returns (``dense_step``): nothing changed (take the numpy path), the state advanced
#: with no update due, an update applied, an update due but its gradient not finite (nothing applied)
FALLBACK, ADVANCED, UPDATED, NONFINITE = 0, 1, 2, 3

try:  # numba is a dependency, but the numpy engine must keep working where it cannot load
    import numba  # noqa: F401

    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised only where numba is missing
    AVAILABLE = False


def _cache_dirs(here) -> list:
    """Where numba keeps this folder's machine code: beside the sources, and under NUMBA_CACHE_DIR when
    that is set (the folder numba's own locator picks there)."""
    from pathlib import Path

    from numba.core import config
    from numba.core.caching import UserProvidedCacheLocator

    dirs = [here / "__pycache__"]
    if config.CACHE_DIR:
        dirs.append(Path(config.CACHE_DIR) / UserProvidedCacheLocator.get_suitable_cache_subpath(
            str(here / "dense_step.py")))
    return dirs


def _drop_stale_cache() -> None:
    """Delete this folder's numba cache when any kernel source changed since it was written.

    numba checks a cached function against its own file only: a kernel that calls one in another file
    (``network_table.step`` calls ``dense_step.rtrl_step``), or that compiles in another module's
    constants (``hybrid/scale.py``'s CLIP), would load machine code built from the old source.  Installs
    rewrite every file, so this matters where the source is edited in place.
    """
    import hashlib
    from pathlib import Path

    here = Path(__file__).parent
    sources = [*sorted(here.glob("*.py")), here.parent / "hybrid" / "scale.py"]
    try:
        digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()
    except OSError:  # sources that cannot be read: numba's own checks are all there is
        return
    for cache in _cache_dirs(here):
        stamp = cache / "kernels.sha256"
        try:
            if stamp.read_text() == digest:
                continue
        except OSError:
            pass
        try:
            for old in (*cache.glob("*.nbi"), *cache.glob("*.nbc")):
                old.unlink()
            cache.mkdir(parents=True, exist_ok=True)
            stamp.write_text(digest)
        except OSError:  # not writable: numba cannot cache there either
            pass


if AVAILABLE:
    _drop_stale_cache()


def step_for(model):
    """The compiled step for ``model``, or None where no kernel covers it (numba loads on first use)."""
    from .plan import plan as make

    return make(model)


def enabled() -> bool:
    """Whether kernels run: numba is importable and STREAMRNN_KERNELS is not 0/false/off."""
    return AVAILABLE and os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "off", "no")
