"""Recursive least squares: the exact online solution of a (weighted, forgetting) ridge regression.

After the samples (z_1, t_1) ... (z_n, t_n) the weights w_n minimise

    sum_i lam^(n-i) omega_i (t_i - w . z_i)^2  +  lam^n delta |w - w_0|^2

and P_n is the inverse of that problem's Gram matrix.  One sample updates
them in O(d^2) (Sherman-Morrison):

    e = t - w . z;   g = omega / (lam + omega z' P z);   k = g P z
    w <- w + k e;    P <- (P - g (P z)(P z)') / lam

P is updated in that symmetric form, (P z)_i (P z)_j g, so it stays symmetric
bit for bit and is saved as a triangle (``Stateful._symmetric``).

``lam`` = 1 is the exact least-squares fit of everything seen (with ridge
``delta``); lam < 1 forgets with a time constant of 1 / (1 - lam) samples.
``huber`` > 0 gives each sample the Huber weight omega = min(1, huber s / |e|),
s the running mean absolute error (``RobustScale``), so one outlier moves the
fit like a few ordinary samples and not like hundreds.

``RLS(d, heads=H)`` keeps H independent problems on the same d features (one
per forecast horizon), updated one head at a time.
"""

from __future__ import annotations

import numpy as np

from ..state import StateError
from .scale import RobustScale
from .stateful import Stateful


class RLS(Stateful):
    """H independent recursive least-squares problems on d features.

    >>> import numpy as np
    >>> rls = RLS(2, delta=1e-6)
    >>> for x in np.linspace(-1, 1, 20):
    ...     _ = rls.update(0, np.array([1.0, x]), 3.0 - 2.0 * x)
    >>> np.round(rls.w[0], 6).tolist()
    [3.0, -2.0]
    """

    _state = ("w", "P", "updates")
    _growable = _state
    _symmetric = ("P",)

    def __init__(self, d: int, lam: float = 1.0, delta: float = 1.0, huber: float | None = None, heads: int = 1):
        if not 0.0 < lam <= 1.0:
            raise ValueError(f"lam must be in (0, 1], got {lam!r}")
        if not delta > 0.0:
            raise ValueError(f"delta must be > 0, got {delta!r}")
        self.d, self.lam, self.delta, self.huber = int(d), float(lam), float(delta), huber
        self.w = np.zeros((heads, self.d))
        self.P = np.zeros((heads, self.d, self.d))
        diagonal = np.arange(self.d)
        self.P[:, diagonal, diagonal] = 1.0 / self.delta  # each head's: I / delta
        self.updates = np.zeros(heads)
        self.errors = [RobustScale() for _ in range(heads)] if huber else []

    @property
    def heads(self) -> int:
        return self.w.shape[0]

    def insert(self, at: int, k: int) -> None:
        """k new features before column ``at``: zero weights, the ridge prior, no correlation with the rest."""
        if k <= 0:
            return
        cols = [at] * k
        self.w = np.insert(self.w, cols, 0.0, axis=1)
        P = np.insert(np.insert(self.P, cols, 0.0, axis=1), cols, 0.0, axis=2)
        P[:, np.arange(at, at + k), np.arange(at, at + k)] = 1.0 / self.delta
        self.P, self.d = P, self.d + k

    def grow_heads(self, heads: int) -> None:
        """More heads, each starting as a copy of the last one."""
        extra = heads - self.heads
        if extra > 0:
            self.w = np.vstack([self.w, np.repeat(self.w[-1:], extra, 0)])
            self.P = np.concatenate([self.P, np.repeat(self.P[-1:], extra, 0)])
            self.updates = np.concatenate([self.updates, np.zeros(extra)])
            self.errors += [RobustScale() for _ in range(extra)] if self.huber else []

    def update(self, head: int, z: np.ndarray, t: float) -> bool:
        """Learn t from z on one head; False (nothing changed) if the sample is not finite."""
        w, P = self.w[head], self.P[head]
        e = t - float(w.dot(z))
        omega = 1.0
        if self.huber:
            scale = self.errors[head]
            if scale.ready and abs(e) > self.huber * scale.s:
                omega = self.huber * scale.s / abs(e)
        Pz = P.dot(z)
        den = self.lam + omega * float(z.dot(Pz))
        if not (e - e == 0.0 and den - den == 0.0 and den > 0.0):  # NaN or infinite
            return False
        g = omega / den
        if self.huber:
            self.errors[head].update(e)
        w += Pz * g * e
        outer = Pz[:, None] * Pz  # (Pz)_i (Pz)_j, then times g: symmetric bit for bit
        outer *= g
        P -= outer
        if self.lam != 1.0:
            P *= 1.0 / self.lam
        count = self.updates[head] + 1
        self.updates[head] = count
        if count % 64 == 0:  # a P saved before the symmetric update: made symmetric (a no-op on one that is)
            P += P.T
            P *= 0.5
        return True

    def update_heads(self, Z: np.ndarray, targets: np.ndarray) -> None:
        """``update`` of heads 0 .. n-1 at once, head h with input row Z[h] and target targets[h]."""
        n = min(len(Z), self.heads)
        if n == 1:
            self.update(0, Z[0], float(targets[0]))
            return
        if self.huber:  # each head's Huber weight depends on its own error scale
            for h in range(n):
                self.update(h, Z[h], float(targets[h]))
            return
        w, P = self.w[:n], self.P[:n]
        Z = Z[:n]
        e = targets[:n] - np.einsum("hd,hd->h", w, Z)
        Pz = np.einsum("hij,hj->hi", P, Z)
        den = self.lam + np.einsum("hd,hd->h", Z, Pz)
        ok = np.isfinite(e) & np.isfinite(den) & (den > 0.0)
        if not ok.all():
            e, den = np.where(ok, e, 0.0), np.where(ok, den, 1.0)
            Pz = np.where(ok[:, None], Pz, 0.0)  # a NaN times 0 would still be NaN
        w += Pz / den[:, None] * e[:, None]
        outer = Pz[:, :, None] * Pz[:, None, :]
        outer /= den[:, None, None]
        P -= outer
        if self.lam != 1.0:  # forgetting, as update(): only on the heads whose sample was taken
            if ok.all():
                P *= 1.0 / self.lam
            else:
                P[ok] *= 1.0 / self.lam
        self.updates[:n] += ok
        if int(self.updates[0]) % 64 == 0:
            P += np.transpose(P, (0, 2, 1))
            P *= 0.5

    # the Huber error scales are part of the state
    def state_into(self, out: dict, prefix: str, copy: bool = True) -> None:
        super().state_into(out, prefix, copy)
        if self.huber:
            out[prefix + "error_n"] = np.array([e.n for e in self.errors], dtype=float)
            out[prefix + "error_s"] = np.array([e.s for e in self.errors])

    def _plan(self, arrays):
        arrays = self._mirrored(arrays)
        w, P = np.shape(arrays.get("w", ())), np.shape(arrays.get("P", ()))
        if len(w) == 2 and P != (w[0], w[1], w[1]):  # the weights may have grown: the inverse must match them
            raise StateError(f"RLS state array 'P' has shape {P}, not {(w[0], w[1], w[1])} as its weights {w}")
        apply = super()._plan(arrays)
        if not self.huber:
            return apply
        n, s = np.asarray(arrays.get("error_n", ())), np.asarray(arrays.get("error_s", ()))
        if n.shape != (self.heads,) or s.shape != (self.heads,):
            raise StateError(f"RLS state needs error_n and error_s of shape ({self.heads},)")

        def both():
            apply()
            for e, count, value in zip(self.errors, n, s):
                e.n, e.s = int(count), float(value)

        return both


class SharedRLS(Stateful):
    """Recursive least squares for several outputs of the *same* inputs: one P, a weight row per output.

    The same exact solution as one ``RLS`` per output, at the cost of one.
    """

    _state = ("W", "P")
    _growable = _state
    _symmetric = ("P",)

    def __init__(self, d: int, outputs: int = 0, lam: float = 1.0, delta: float = 1.0):
        self.lam, self.delta = float(lam), float(delta)
        self.W = np.zeros((outputs, d))
        self.P = np.eye(d) / self.delta

    def grow(self, inputs: int = 0, outputs: int = 0) -> None:
        """More inputs (appended, with the ridge prior) and more outputs (zero weights)."""
        d = self.P.shape[0]
        if inputs:
            self.W = np.hstack([self.W, np.zeros((self.W.shape[0], inputs))])
            P = np.zeros((d + inputs, d + inputs))
            P[:d, :d] = self.P
            P[d:, d:] = np.eye(inputs) / self.delta
            self.P = P
        if outputs:
            self.W = np.vstack([self.W, np.zeros((outputs, self.W.shape[1]))])

    def predict(self, z: np.ndarray) -> np.ndarray:
        return self.W @ z

    def update(self, z: np.ndarray, targets: np.ndarray) -> bool:
        Pz = self.P @ z
        den = self.lam + float(z @ Pz)
        e = targets - self.W @ z
        if not (np.isfinite(e).all() and np.isfinite(den) and den > 0.0):
            return False
        k = Pz / den
        self.W += e[:, None] * k
        outer = Pz[:, None] * Pz  # symmetric bit for bit, as RLS's
        outer /= den
        self.P -= outer
        if self.lam != 1.0:
            self.P *= 1.0 / self.lam
        return True
