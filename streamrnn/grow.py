"""Grow a live model: more inputs (a new feature) or more outputs (a new class or target).

The model's whole state is named arrays (``OnlineRNN.state_dict``).  Growing
rewrites those arrays for the wider network and loads them into a freshly
built model, so that the grown model continues from the same point:

* **inputs** -- layer 0 reads v = [h_{t-1}; x_t; 1], so a new input is a new
  column of W0.  It starts at zero, and so does everything that would have
  multiplied it: the RTRL sensitivities dh/dW0 of the new column (exactly 0,
  as the input was never seen), the recorded inputs in a BPTT tape, the
  optimiser's moments.  A grown model fed 0 on its new inputs computes what
  the old one computes (``grow_inputs``).
* **outputs** -- the readout o = g(V h + c) gets new rows of V and c, at zero
  (``grow_outputs``).  For an identity or sigmoid readout the other outputs
  are unchanged; give the new output no target (``mask``) until it has one.
  For a softmax readout -- a class seen for the first time -- a zero row gives
  the new class logit 0 whatever the hidden state: the "no evidence yet"
  start of a linear softmax model, which shares probability with the old
  classes and is then learned like them.  The hidden layers are shared, so
  nothing below the readout moves.

With ``target_feedback`` layer 0 reads [x_t; fed-back target], so the model's
own inputs sit before the fed-back values: new inputs are inserted after the
old ones, and new outputs also add fed-back inputs (zero columns, fed 0 until
the output has a target).
"""

from __future__ import annotations

import numpy as np

from .cells import check_size
from .model import OnlineRNN

#: the layouts a learner's state arrays may declare (``streamrnn.learners.base``)
LAYOUTS = ("theta", "inputs0", "outputs", "fixed")


def _rebuild(model: OnlineRNN, n_inputs: int, outputs: int) -> OnlineRNN:
    """A fresh model like ``model`` but n_inputs wide with ``outputs`` readout outputs, on the same path and
    sharing the same ``Scratch`` (if it shares one)."""
    net = model.network
    readout = type(net.readout)(outputs, net.readout.activation)
    # a bound learner is also a spec: bind() copies it and allocates afresh
    return OnlineRNN(
        n_inputs, net.stack.cells, readout, model.loss, model.learner, model.optimizer,
        model.clip_norm, model.target_feedback, model.seed, kernels=model._kernel is not None,
        scratch=model._buffers,
    )


def _insert_columns(a: np.ndarray, at: int, k: int) -> np.ndarray:
    """``a`` with k zero columns (last axis) inserted before column ``at``."""
    zeros = np.zeros(a.shape[:-1] + (k,), dtype=a.dtype)
    return np.concatenate([a[..., :at], zeros, a[..., at:]], axis=-1)


def _layer0_flat(a: np.ndarray, layer0, at: int, k: int) -> np.ndarray:
    """A theta-laid-out last axis that starts with layer 0's blocks: insert k zero columns
    before input ``at`` into each block that reads the inputs, keep the rest."""
    parts, offset = [], 0
    for block in layer0.cell.blocks(layer0.m):
        size = block.rows * block.cols
        piece = a[..., offset : offset + size]
        if block.x_col is not None:
            piece = piece.reshape(a.shape[:-1] + (block.rows, block.cols))
            piece = _insert_columns(piece, block.x_col + at, k).reshape(a.shape[:-1] + (-1,))
        parts.append(piece)
        offset += size
    return np.concatenate(parts + [a[..., offset:]], axis=-1)


def _grow_arrays(model: OnlineRNN, arrays: dict, at: int, k_in: int, k_out: int) -> dict:
    """The state arrays of ``model`` with k_in layer-0 inputs inserted before input
    ``at`` (0 = first model input) and k_out readout outputs appended."""
    net = model.network
    layer0 = net.stack.layers[0]
    col = layer0.x_col + at  # column of layer 0's record v where the new inputs go
    n_params, n_out = net.n_params, net.n_outputs
    layouts = {f"learner.{k}": v for k, v in model.learner.layouts().items()}
    undeclared = sorted(k[len("learner."):] for k in arrays if k.startswith("learner.") and k not in layouts)
    if undeclared:
        raise ValueError(f"{type(model.learner).__name__} declares no layout for its state arrays {undeclared}")
    unknown = sorted({v for v in layouts.values()} - set(LAYOUTS))
    if unknown:
        raise ValueError(f"{type(model.learner).__name__} declares unknown layouts {unknown}; they are {LAYOUTS}")
    # layer 0's named parameter views that read the inputs (W0 of an Elman layer): the view is x's columns
    inputs0 = {f"{name}0" for name in layer0.cell.input_views()}
    out = {}
    for name, a in arrays.items():
        layout = layouts.get(name)
        if k_in and name in inputs0:
            a = _insert_columns(a, at, k_in)
        elif k_out and name in ("V", "c"):
            a = np.concatenate([a, np.zeros((k_out,) + a.shape[1:])])
        elif name == "grad" or layout == "theta" or (name.startswith("optimizer.") and a.shape == (n_params,)):
            full = a.shape[-1] == n_params  # a prefix of theta (RTRL's S_l) has no readout block
            if k_in:  # flat like theta: layer 0's blocks, then the rest
                a = _layer0_flat(a, layer0, at, k_in)
            if k_out and full:  # the readout is theta's last block; new rows go at its end
                a = _insert_columns(a, a.shape[-1], k_out * net.B.shape[1])
        elif k_in and layout == "inputs0":
            a = _insert_columns(a, col, k_in)  # columns follow layer 0's [h; x; 1]
        elif k_out and layout == "outputs":
            a = _insert_columns(a, n_out, k_out)
        elif k_out and name == "feedback" and model.target_feedback:
            a = _insert_columns(a, a.shape[-1], k_out)
        out[name] = a
    return out


def _grown(model: OnlineRNN, n_inputs: int, outputs: int, at: int, k_in: int, k_out: int) -> OnlineRNN:
    arrays, header = model.state_dict()
    fresh = _rebuild(model, n_inputs, outputs)
    grown = _grow_arrays(model, arrays, at, k_in, k_out)
    fresh.load_state_dict(grown, dict(header, config=fresh.config()))
    return fresh


def grow_inputs(model: OnlineRNN, k: int = 1, at: int | None = None) -> OnlineRNN:
    """A copy of ``model`` with k more inputs, inserted before input ``at`` (None: appended).

    Fed 0 on the new inputs it continues like ``model`` -- to floating-point rounding:
    BLAS sums the longer dot products in another order, so the last bits may differ.
    ``model`` itself is left unchanged.

    Examples
    --------
    >>> import numpy as np
    >>> from streamrnn import OnlineRNN, Elman, Readout
    >>> from streamrnn.grow import grow_inputs
    >>> model = OnlineRNN(2, (Elman(4),), Readout(1), seed=0)
    >>> _ = model.step([0.5, -1.0], [1.0])
    >>> wider = grow_inputs(model, 1)
    >>> wider.n_inputs, bool(np.allclose(wider.predict([0.3, 0.2, 0.0]), model.predict([0.3, 0.2]), rtol=1e-14))
    (3, True)
    """
    k = check_size("k", k)
    at = model.n_inputs if at is None else at
    if not 0 <= at <= model.n_inputs:
        raise ValueError(f"at must be in 0..{model.n_inputs}, got {at!r}")
    n_out = model.network.n_outputs
    return _grown(model, model.n_inputs + k, n_out, at, k, 0)


def grow_outputs(model: OnlineRNN, k: int = 1) -> OnlineRNN:
    """A copy of ``model`` with k more readout outputs (zero rows of V and c), appended last.

    With target feedback the fed-back inputs widen too (zero columns, fed 0).
    ``model`` itself is left unchanged.

    Examples
    --------
    >>> from streamrnn import OnlineRNN, Elman, Readout, CrossEntropy
    >>> from streamrnn.grow import grow_outputs
    >>> model = OnlineRNN(2, (Elman(4),), Readout(2, "softmax"), CrossEntropy(), seed=0)
    >>> _ = model.step([0.5, -1.0], [1.0, 0.0])
    >>> wider = grow_outputs(model, 1)
    >>> wider.predict([0.3, 0.2]).shape
    (3,)
    """
    k = check_size("k", k)
    n_out = model.network.n_outputs
    k_fb = k if model.target_feedback else 0
    return _grown(model, model.n_inputs, n_out + k, model.n_inputs + n_out, k_fb, k)
