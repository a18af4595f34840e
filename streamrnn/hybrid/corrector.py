"""The recurrent network that learns what the exact components miss.

At every step the network reads, in units of the combination's typical
one-step error s:

* how far each component's next-step forecast is from the combination
  (D_1 = (f_k - f) / s: which components disagree, and in which direction),
* the errors the combination has just made at each horizon step h, on the
  forecasts made h steps ago for the newest value (target feedback: its own
  newest target, the one-step error e_t / s, is the first of them; a forecaster
  reads all ``memory`` of them, a regressor the one),
* the step's calendar phases and exogenous features,

and is trained online by the engine (RTRL or BPTT(h; h')) to predict the
next one-step error e_{t+1} / s.  Its hidden state h_t then summarises the
recent behaviour of the series and of the components.  A correction for
each horizon step is read out of it exactly: per step h an RLS head maps
[1, h_t, D_h] to (y_{t+h} - f_{t+h|t}) / s, fitted on the stored states when
y_{t+h} arrives.  The forecaster then aggregates the combination with and
without this correction, so the network can only add what it has shown it
knows.
"""

from __future__ import annotations

import json

import numpy as np

from ..cells import Readout
from ..losses import SquaredError
from ..model import OnlineRNN
from .rls import RLS
from .scale import CLIP, RobustScale, bound, clamp
from .stateful import Stateful

HEADER = "rnn.__header__"


class RNNCorrector(Stateful):
    """An OnlineRNN on the combination's errors, and one exact linear read-out per horizon step."""

    _state = ("pending", "has_pending", "errors_seen")
    _parts = ("heads", "errors")
    _growable = ("pending", "errors_seen")

    def __init__(self, experts: int, n_features: int, horizon: int, layers, learner, optimizer, clip_norm, seed,
                 memory: int = 1, lam: float = 0.999, delta: float = 10.0, kernels: bool | None = None,
                 scratch=None):
        self.experts, self.memory = experts, memory
        self.rnn = OnlineRNN(experts + memory + n_features, layers, Readout(1), SquaredError(), learner, optimizer,
                             clip_norm, False, seed, kernels=kernels, scratch=scratch)
        self.rnn.network.V[...] = 0.0  # predicts no error until it has learned one (``params`` would build every view)
        self.units = self.rnn.network.stack.out_size
        self.heads = RLS(1 + self.units + experts, lam, delta, heads=horizon)
        self.errors = RobustScale()
        self.pending = np.zeros(self.rnn.n_inputs)  # the input of the newest step, waiting for its target
        self.has_pending = False
        self.errors_seen = np.zeros(memory)  # the newest errors at each horizon step, in units of s

    @property
    def scale(self) -> float:
        return self.errors.value

    def grow_horizon(self, horizon: int) -> None:
        self.heads.grow_heads(horizon)

    def grow_features(self, k: int) -> None:
        from ..grow import grow_inputs

        self.rnn = grow_inputs(self.rnn, k)
        self.pending = np.concatenate([self.pending, np.zeros(k)])

    def grow_memory(self, memory: int) -> None:
        """Read the errors of more horizon steps (new inputs, zero weights)."""
        from ..grow import grow_inputs

        k = memory - self.memory
        if k > 0:
            at = self.experts + self.memory
            self.rnn = grow_inputs(self.rnn, k, at)
            self.pending = np.insert(self.pending, [at] * k, 0.0)
            self.errors_seen = np.concatenate([self.errors_seen, np.zeros(k)])
            self.memory = memory

    def observe(self, errors) -> None:
        """The combination's newest errors at horizon steps 1, 2, ... (the first, e_t, is the pending
        input's target: the network learns from it)."""
        errors = np.atleast_1d(np.asarray(errors, dtype=float))
        error = float(errors[0])
        s = self.scale if self.errors.ready else max(abs(error), 1e-12)
        target = clamp(error / s, CLIP)
        if self.has_pending:
            self.rnn.step(self.pending, [target])
            self.has_pending = False
        self.errors.update(error)
        n = min(len(errors), self.memory)
        self.errors_seen[:] = 0.0
        self.errors_seen[:n] = bound(errors[:n] / s, -CLIP, CLIP)

    def propose(self, disagreement: np.ndarray, features) -> np.ndarray:
        """Read the newest step (D_1 and its features); returns the hidden state h_t (a copy)."""
        u = self.pending
        k, m = self.experts, self.memory
        u[:k] = disagreement
        u[k : k + m] = self.errors_seen
        if len(u) > k + m:
            u[k + m :] = 0.0 if features is None else features
        self.rnn.predict(u)
        self.has_pending = True
        return self.rnn.network.stack.output(-1).copy()

    def inputs(self, hidden: np.ndarray, disagreement: np.ndarray) -> np.ndarray:
        """Each head's input [1, h_t, D_h], as rows (H, d); ``disagreement`` is (K, H)."""
        H = disagreement.shape[1]
        Z = np.empty((H, 1 + self.units + self.experts))
        Z[:, 0] = 1.0
        Z[:, 1 : 1 + self.units] = hidden
        Z[:, 1 + self.units :] = disagreement.T
        return Z

    def corrections(self, Z: np.ndarray) -> np.ndarray:
        """s (w_h . z_h) for each row h (beyond the tracked steps, the last head)."""
        w = self.heads.w
        idx = np.minimum(np.arange(len(Z)), len(w) - 1)
        return self.scale * np.einsum("hd,hd->h", Z, w[idx])

    def learn_heads(self, Z: np.ndarray, targets: np.ndarray) -> None:
        """Heads 0 .. n-1 learn from their input rows Z and targets (clipped to +-CLIP)."""
        self.heads.update_heads(Z, bound(np.array(targets, dtype=float), -CLIP, CLIP))

    # the network's own state: its arrays, and its header as JSON bytes
    def state_into(self, out: dict, prefix: str, copy: bool = True) -> None:
        from ..state import model_state

        super().state_into(out, prefix, copy)
        arrays, header = model_state(self.rnn, copy)
        for k, v in arrays.items():
            out[f"{prefix}rnn.{k}"] = v
        out[prefix + HEADER] = np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8)

    def _plan(self, arrays):
        from ..state import StateError

        apply = super()._plan(arrays)
        if HEADER not in arrays:
            raise StateError("corrector state has no network header")
        try:
            header = json.loads(np.asarray(arrays[HEADER], dtype=np.uint8).tobytes().decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise StateError(f"corrector network header is corrupt: {err}") from None
        own = {k[4:]: v for k, v in arrays.items() if k.startswith("rnn.") and k != HEADER}
        if header.get("config") != self.rnn.config():
            raise StateError("corrector network was saved with another configuration")
        load = self.rnn.plan_state(own, header)  # StateError if it does not fit

        def both():
            apply()
            load()

        return both
