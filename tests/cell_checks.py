"""What every cell's tests check the same way: central differences and the contract's products
against them (tests/test_cell_dense.py, test_cell_gru.py, test_cell_lru.py)."""

from __future__ import annotations

import numpy as np

EPS = 1e-6


def rel(got, want):
    return np.linalg.norm(got - want) / np.linalg.norm(want)


def fd(fn, a, eps=EPS):
    """Central differences (B, out, a's width) of fn(a) by each column of a (B, w) (rows independent)."""
    cols = []
    for j in range(a.shape[1]):
        up, down = a.copy(), a.copy()
        up[:, j] += eps
        down[:, j] -= eps
        cols.append((fn(up) - fn(down)) / (2 * eps))
    return np.stack(cols, axis=-1)


def step(layer, h, x):
    """The new state h_t (not the output) for states h (B, s) and inputs x (B, m); the layer's
    record is that step's."""
    layer.state[...] = h
    layer.forward(x)
    return layer.new_state.copy()


def fd_params(layer, h, x):
    """dh_t/dtheta (B, s, P) by central differences on the shared flat parameters."""
    flat, cols = layer.flat, []
    for p in range(flat.shape[0]):
        old = flat[p]
        flat[p] = old + EPS
        up = step(layer, h, x)
        flat[p] = old - EPS
        down = step(layer, h, x)
        flat[p] = old
        cols.append((up - down) / (2 * EPS))
    return np.stack(cols, axis=-1)


def point(layer, seed):
    """The record of a random step (h, x) and its finite-difference Jacobians by h, x and theta."""
    rng = np.random.default_rng(seed)
    h, x = rng.normal(0.0, 0.8, (layer.batch, layer.s)), rng.normal(size=(layer.batch, layer.m))
    Jh = fd(lambda a: step(layer, a, x), h)
    Jx = fd(lambda a: step(layer, h, a), x)
    Jp = fd_params(layer, h, x)
    step(layer, h, x)
    rec = {k: a.copy() for k, a in layer.record.items()}
    return rec, Jh, Jx, Jp


def check_products(layer, rec, Jh, Jx, Jp, rng, tol=1e-7):
    """Every product of the contract at record ``rec`` against the finite-difference Jacobians of the
    state: Jh = dh_t/dh_{t-1} (B, s, s), Jx = dh_t/dx_t (B, s, m), Jp = dh_t/dtheta (B, s, P)."""
    B, s, m, P = layer.batch, layer.s, layer.m, layer.n_params
    S = rng.normal(size=(B, s, 5))
    assert rel(layer.jvp(rec, S, np.empty((B, s, 5))), Jh @ S) < tol
    assert rel(layer.jacobian(rec), Jh) < tol
    Sx = rng.normal(size=(B, m, 2))
    assert rel(layer.jvp_input(rec, Sx, np.empty((B, s, 2))), Jx @ Sx) < tol
    # the immediate influence, into a view like RTRL's (the parameters below come first)
    big = rng.normal(size=(B, s, 7 + P))
    before = big.copy()
    layer.add_immediate(rec, big[..., 7:])
    np.testing.assert_array_equal(big[..., :7], before[..., :7])
    assert rel(big[..., 7:] - before[..., 7:], Jp) < tol
    # the backward products, and the parameter gradient from what backward left in dz
    e = rng.normal(size=(B, s))
    dz = np.zeros((B, layer.dz_width))
    back, dx = np.zeros_like(e), np.zeros((B, m))
    layer.backward(rec, e, dz, back, dx)
    assert rel(back, np.einsum("bij,bi->bj", Jh, e)) < tol
    assert rel(dx, np.einsum("bij,bi->bj", Jx, e)) < tol
    out = np.zeros((B, P))
    layer.param_grad({k: a[None] for k, a in rec.items()}, dz[None], out)
    assert rel(out, np.einsum("bip,bi->bp", Jp, e)) < tol
    return e
