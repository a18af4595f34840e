"""Unbiased online recurrent optimisation (Tallec & Ollivier, ICLR 2018).

UORO replaces RTRL's sensitivities S_t = dH_t/dtheta (N x P) by a random
rank-one estimate S_t ~ h~_t theta~_t^T with E[h~_t theta~_t^T] = S_t exactly.
RTRL's recursion is S_t = J_t S_{t-1} + F_t, J_t = dH_t/dH_{t-1} and F_t =
dH_t/dtheta at fixed H_{t-1} (the immediate influence).  Per step, with signs
nu (+-1 per unit, independent of the past):

    h~_t     = rho0 J_t h~_{t-1} + rho1 nu
    theta~_t = theta~_{t-1} / rho0 + (nu^T F_t) / rho1
    rho0 = sqrt(|theta~_{t-1}| / (|J h~_{t-1}| + eps)) + eps
    rho1 = sqrt(|nu^T F_t| / (|nu| + eps)) + eps

E[nu nu^T] = I gives E[h~ theta~^T | past] = J h~_{t-1} theta~_{t-1}^T + F_t; the
cross terms are odd in nu (rho1 depends on nu only through |nu^T F|, even in nu)
and vanish.  rho0, rho1 balance the two factors' norms, which keeps the
variance down.  The gradient of L_t is (g . h~_t) theta~_t for the recurrent
parameters, g = dL/dh^L_t = V^T delta_t, and the exact delta_t [h_t; 1]^T for
the readout.

A stack is one state vector H = [h^0; ...; h^{L-1}] with one estimate for all
of theta.  Per-layer estimates with spatial backprop would miss the paths by
which A_k at time s reaches h^l (l > k) through layer l's own recurrence, so
they are biased; the whole-stack estimate is unbiased like RTRL is exact.
Its J is block lower-triangular (layer l sees layer l-1's new output) and its F
includes the same-step paths up the stack.  Both products are one sweep each
through the cells' own products (``streamrnn.cells.base``), never a dense J or F:

    (J h~)^l = J^l h~^l + dh^l/dx^l dy^{l-1}/dh^{l-1} (J h~)^{l-1}           # up the stack: jvp
    nu^T F   = the same-step backward pass of nu^T H_t, with no recurrence  # down: backward

(for an Elman layer, nu^T F on block A_l is a^l (x) v^l with a^l = D^l * e^l).
Cost O(P) per step for dense cells, memory O(N + P); it works for every cell.

The signs come from a PCG64 generator seeded with ``seed`` whose state is part
of the learner state, so a checkpoint continues bit for bit; ``reset`` zeroes
the estimate and keeps the generator running (a restarted sequence draws new
signs).  Every model bound to the same spec starts from the same sign stream.
"""

from __future__ import annotations

import math

import numpy as np

from .base import Learner

_MASK64 = (1 << 64) - 1


class UORO(Learner):
    """UORO: an unbiased rank-one estimate of RTRL's sensitivities, O(P) per step."""

    name = "uoro"

    def __init__(self, seed: int = 0, eps: float = 1e-7):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
            raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating, np.integer)) \
                or not (math.isfinite(eps) and 0 < eps <= 1e-2):
            raise ValueError(f"eps must be a number in (0, 0.01], got {eps!r}")
        self.seed = int(seed)
        self.eps = float(eps)

    def _allocate(self, net) -> None:
        st = net.stack
        sizes = [layer.s for layer in st.layers]
        N, P = sum(sizes), net.n_recurrent
        self._layers, self._offsets = st.layers, st.offsets
        self._bits = np.random.PCG64(self.seed)  # a fresh generator per bound copy
        self._gen = np.random.Generator(self._bits)
        self._rng_state = np.zeros(6, dtype=np.uint64)  # PCG64 state, inc (128 bits each), has_uint32, uinteger
        self._h = np.zeros(N)  # h~, all layers stacked
        self._theta = np.zeros(P)  # theta~, laid out like theta's recurrent part
        self._Jh = np.zeros(N)  # J h~_{t-1}
        self._nuF = np.zeros(P)  # nu^T F
        self._nu = np.zeros(N)
        ends = np.cumsum([0] + sizes)
        part = lambda a: [a[i:j].reshape(1, j - i, 1) for i, j in zip(ends[:-1], ends[1:])]  # noqa: E731
        self._h_l, self._Jh_l = part(self._h), part(self._Jh)
        self._nu_l = [a[..., 0] for a in part(self._nu)]
        self._nuF_l = [self._nuF[None, o : o + layer.n_params] for o, layer in zip(st.offsets, st.layers)]
        self._below = [np.zeros((1, layer.s, 1)) for layer in st.layers]
        self._dz = [np.zeros((1, 1, layer.dz_width)) for layer in st.layers]
        self._e_in = [None] + [np.zeros((1, layer.m)) for layer in st.layers[1:]]
        self._records = [{k: a[None] for k, a in layer.record.items()} for layer in st.layers]  # as one-row tapes

    def _draw_signs(self, nu: np.ndarray) -> None:
        """nu <- independent +-1 signs: the signs of u - 1/2 for uniform u (copysign: never 0)."""
        self._gen.random(out=nu)
        nu -= 0.5
        np.copysign(1.0, nu, out=nu)

    def step(self, net, delta, grad) -> bool:
        eps, layers = self.eps, self._layers
        L = len(layers)
        # J h~_{t-1}, up the stack: each layer's own J, plus the layer below's (J h~) through its input
        for l, layer in enumerate(layers):
            Jh = layer.jvp(layer.record, self._h_l[l], self._Jh_l[l])
            if l:
                below = layers[l - 1]
                Jh += layer.jvp_input(layer.record, below.output_jvp(below.record, self._Jh_l[l - 1]), self._below[l])
        # nu^T F, down the stack: the same-step backward pass of nu^T H_t, without the recurrence
        self._draw_signs(self._nu)
        e = self._nu_l[L - 1]
        for l in range(L - 1, -1, -1):
            layer, dz = layers[l], self._dz[l]
            e_in = self._e_in[l]
            layer.backward(layer.record, e, dz[0], None, e_in)
            layer.param_grad(self._records[l], dz, self._nuF_l[l])
            if l:
                e = self._nu_l[l - 1] + layers[l - 1].output_vjp(layers[l - 1].record, e_in)
        # the rank-one update, with the norms balanced
        theta_norm = math.sqrt(np.dot(self._theta, self._theta))
        rho0 = math.sqrt(theta_norm / (math.sqrt(np.dot(self._Jh, self._Jh)) + eps)) + eps
        rho1 = math.sqrt(math.sqrt(np.dot(self._nuF, self._nuF)) / (math.sqrt(self._nu.shape[0]) + eps)) + eps
        np.multiply(self._Jh, rho0, out=self._h)
        self._nu *= rho1  # nu and nu^T F are scratch, rewritten every step
        self._h += self._nu
        self._theta *= 1.0 / rho0
        self._nuF *= 1.0 / rho1
        self._theta += self._nuF
        if delta is None:
            return False
        top = layers[-1]
        g = top.output_vjp(top.record, np.dot(delta, net.V)[None, :])[0]  # dL/dh^L_t
        np.multiply(self._theta, np.dot(g, self._h_l[-1][0, :, 0]), out=grad[: net.n_recurrent])
        np.multiply(delta[:, None], net.vr, out=grad[net.n_recurrent :].reshape(net.B.shape))
        return True

    def sensitivity_norm(self) -> float:
        """Frobenius norm of the estimate |h~ theta~^T| = |h~| |theta~|."""
        return float(math.sqrt(np.dot(self._h, self._h) * np.dot(self._theta, self._theta)))

    def reset(self) -> None:
        self._h[...] = 0.0
        self._theta[...] = 0.0  # the generator keeps running

    def state_arrays(self):
        # "rng" is a snapshot of the generator, refreshed by every call; load_state_arrays restores it.
        s = self._bits.state
        words = (s["state"]["state"] >> 64, s["state"]["state"] & _MASK64,
                 s["state"]["inc"] >> 64, s["state"]["inc"] & _MASK64, s["has_uint32"], s["uinteger"])
        self._rng_state[...] = np.array(words, dtype=np.uint64)
        return {"h_tilde": self._h, "S_theta": self._theta, "rng": self._rng_state}

    def layouts(self):
        return {"h_tilde": "fixed", "S_theta": "theta", "rng": "fixed"}

    def load_state_arrays(self, arrays):
        rng = arrays.get("rng")
        if rng is not None:  # a missing or misshapen array is refused below, by the base class
            if rng.dtype != np.uint64:
                raise ValueError(f"learner array 'rng' must be uint64, got {rng.dtype}")
            w = [int(x) for x in np.asarray(rng).reshape(-1)]
            if len(w) == 6 and (w[3] % 2 == 0 or w[4] > 1 or w[5] >> 32):
                raise ValueError(f"learner array 'rng' is not a PCG64 state: {w!r}")
        super().load_state_arrays(arrays)
        w = [int(x) for x in self._rng_state]
        self._bits.state = {"bit_generator": "PCG64",
                            "state": {"state": (w[0] << 64) | w[1], "inc": (w[2] << 64) | w[3]},
                            "has_uint32": w[4], "uinteger": w[5]}

    def config(self):
        return {"kind": "UORO", "seed": self.seed, "eps": self.eps}
