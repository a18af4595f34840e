"""Classification parts: an online second-order logistic model, and aggregation of class probabilities by log-loss.

``OnlineLogistic`` keeps one binary logistic model per class (one against
the rest) and fits each by the online Newton step of its Laplace
approximation (the extended Kalman filter for logistic regression): with
p = sigmoid(w . z), y in {0, 1} and g = p (1 - p),

    P <- P - g P z (P z)' / (1 + g z' P z)
    w <- w - (p - y) P z

P starts as I / delta (a Gaussian prior of precision delta), so the first
events are fitted like a ridge-regularised logistic regression, not by a
learning rate that needs tuning.  Class probabilities are the per-class p,
normalised.

Experts' class probabilities are mixed by ML-Poly (``aggregation``) on the
linearised log-loss (``log_loss_regret``): the mixture competes with the best
convex combination of the experts' probabilities, with no learning rate to
tune.
"""

from __future__ import annotations

import numpy as np

from .stateful import Stateful

#: probabilities are kept inside [EPS, 1 - EPS] so that every log-loss is finite
EPS = 1e-6


class OnlineLogistic(Stateful):
    """One-against-the-rest logistic models, one per class, by the online Newton step."""

    _state = ("w", "P")
    _growable = _state
    _symmetric = ("P",)  # the update subtracts outer(Px, Px) times a number: symmetric bit for bit

    def __init__(self, n_features: int, delta: float = 1.0):
        self.delta = float(delta)
        self.d = 1 + int(n_features)
        self.w = np.zeros((0, self.d))
        self.P = np.zeros((0, self.d, self.d))

    @property
    def classes(self) -> int:
        return self.w.shape[0]

    def add_class(self) -> None:
        self.w = np.vstack([self.w, np.zeros((1, self.d))])
        self.P = np.concatenate([self.P, (np.eye(self.d) / self.delta)[None]])

    def grow_features(self, k: int) -> None:
        if k <= 0:
            return
        at = self.d
        self.w = np.insert(self.w, [at] * k, 0.0, axis=1)
        P = np.insert(np.insert(self.P, [at] * k, 0.0, axis=1), [at] * k, 0.0, axis=2)
        P[:, np.arange(at, at + k), np.arange(at, at + k)] = 1.0 / self.delta
        self.P, self.d = P, self.d + k

    def proba(self, z: np.ndarray) -> np.ndarray:
        """Class probabilities (the one-against-the-rest probabilities, normalised)."""
        if not self.classes:
            return np.zeros(0)
        x = np.concatenate([[1.0], z])
        p = 1.0 / (1.0 + np.exp(-np.clip(self.w @ x, -30.0, 30.0)))
        p = np.clip(p, EPS, 1.0 - EPS)
        return p / p.sum()

    def learn(self, z: np.ndarray, label: int) -> None:
        x = np.concatenate([[1.0], z])
        for c in range(self.classes):
            w, P = self.w[c], self.P[c]
            p = 1.0 / (1.0 + np.exp(-np.clip(w @ x, -30.0, 30.0)))
            g = max(p * (1.0 - p), EPS)
            Px = P @ x
            P -= np.outer(Px, Px) * (g / (1.0 + g * (x @ Px)))
            w -= (p - (1.0 if c == label else 0.0)) * (P @ x)


def log_loss_regret(probs: np.ndarray, awake: np.ndarray, weights: np.ndarray, label: int) -> np.ndarray:
    """ML-Poly's linearised regrets for the log-loss of the mixture p = sum_k w_k p_k:
    r_k = (p_k(y) - p(y)) / p(y) (the gradient trick; 0 for a sleeping expert)."""
    mixed = max(float(weights @ np.where(awake, probs[:, label], 0.0)), EPS)
    return (probs[:, label] - mixed) / mixed * awake
