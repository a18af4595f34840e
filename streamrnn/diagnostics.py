"""Model health after the newest step, computed when asked (scrape time), not per step.

Exploding and vanishing gradients (Bengio et al. 1994; Pascanu et al. 2013):
the error reaching k steps back is multiplied by J_t J_{t-1} ... J_{t-k+1}
with J_t = dh_t/dh_{t-1} = (1 - beta) I + diag(beta f'(z_t)) U, so it is
bounded by prod ||J_t||.  ``jacobian_norm`` is the largest spectral norm
||J_t||_2 over the layers at the newest step; with it below 1 every
back-propagated error shrinks geometrically (``gradient_regime`` "vanishing"
when ||J||^10 < 0.01), above 1 it may grow ("exploding" when ||J||^10 > 100).
"""

from __future__ import annotations

import math

import numpy as np

VANISHING = 0.01 ** 0.1  # ||J|| below which errors shrink 100-fold in 10 steps
EXPLODING = 100 ** 0.1


def gradient_regime(jacobian_norm: float) -> str:
    if jacobian_norm < VANISHING:
        return "vanishing"
    if jacobian_norm > EXPLODING:
        return "exploding"
    return "stable"


def diagnostics(model) -> dict:
    """Named health figures of an OnlineRNN (every value a number, str or list)."""
    st = model.network.stack
    hidden = [st.hidden(l) for l in range(len(st.layers))]
    saturated = sum(layer.saturated() for layer in st.layers)
    jac = max(float(np.linalg.norm(st.recurrent_jacobian(l), 2)) for l in range(len(st.layers)))
    c = model.counters
    out = {
        "steps": c["steps"],
        "updates": c["updates"],
        "skipped_updates": c["skipped"],
        "clipped_updates": c["clipped"],
        "loss": model.last_loss,
        "prediction": model.network.o.tolist(),
        "hidden_norm": math.sqrt(sum(float(np.dot(h, h)) for h in hidden)),
        "saturated_fraction": saturated / sum(layer.s for layer in st.layers),
        "grad_norm": model.grad_norm,
        "grad_norm_clipped": model.grad_norm_clipped,
        "jacobian_norm": jac,
        "gradient_regime": gradient_regime(jac),
        "sensitivity_norm": None,
    }
    if hasattr(model.learner, "sensitivity_norm"):
        out["sensitivity_norm"] = model.learner.sensitivity_norm()
    return out
