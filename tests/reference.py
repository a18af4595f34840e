"""An independent, deliberately plain forward pass used as ground truth in tests.

Written from the equations with named parameters and no shared code with the
engine: z = U h + W x + b, h' = (1 - beta) h + beta f(z), o = g(V h + c).
"""

from __future__ import annotations

import numpy as np

F = {
    "tanh": np.tanh,
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "relu": lambda z: np.maximum(z, 0.0),
    "identity": lambda z: z,
}


def output(name, a):
    if name == "identity":
        return a
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-a))
    e = np.exp(a - a.max())
    return e / e.sum()


def loss_value(name, a, o, y, mask):
    m = np.ones_like(y) if mask is None else mask.astype(float)
    if name == "squared":
        return 0.5 * np.sum(m * (o - y) ** 2)
    if name == "logloss":
        return -np.sum(m * (y * np.log(o) + (1 - y) * np.log(1 - o)))
    return -np.sum(y * np.log(o))


def run(params, layers, readout_act, X, h0=None):
    """Readout pre-activations and outputs for each row of X, from states h0 (default zero)."""
    hs = [np.zeros(c["units"]) if h0 is None else np.array(h0[l], dtype=float) for l, c in enumerate(layers)]
    A, O = [], []
    for x in X:
        inp = np.asarray(x, dtype=float)
        for l, c in enumerate(layers):
            z = params[f"U{l}"] @ hs[l] + params[f"W{l}"] @ inp + params[f"b{l}"]
            beta = np.asarray(c.get("beta", [1.0]), dtype=float)
            hs[l] = (1 - beta) * hs[l] + beta * F[c["activation"]](z)
            inp = hs[l]
        a = params["V"] @ inp + params["c"]
        A.append(a)
        O.append(output(readout_act, a))
    return A, O, hs


def total_loss(params, layers, readout_act, loss_name, X, Y, weights, h0=None, masks=None):
    """sum_t weights[t] L_t, Y[t] None meaning no loss at t."""
    A, O, _ = run(params, layers, readout_act, X, h0)
    total = 0.0
    for t, (a, o, y, w) in enumerate(zip(A, O, Y, weights)):
        if y is not None and w:
            total += w * loss_value(loss_name, a, o, np.asarray(y, float), None if masks is None else masks[t])
    return total


def finite_difference(params, fn, eps=1e-5):
    """Central differences of fn(params) for every entry of every parameter array."""
    grads = {}
    for name, p in params.items():
        g = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + eps
            up = fn(params)
            p[i] = old - eps
            down = fn(params)
            p[i] = old
            g[i] = (up - down) / (2 * eps)
        grads[name] = g
    return grads
