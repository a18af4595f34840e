"""A diagonal complex linear recurrent unit with a nonlinear output (LRU / RTU style).

n complex units, each a damped rotation of its own past (Orvieto et al. 2023,
"Resurrecting recurrent neural networks"; Zucchet et al. 2023, "Online
learning of long-range dependencies"; Elelimy et al. 2024, recurrent trace units):

    c_t = lambda * c_{t-1} + gamma * (B v_t),     v_t = [x_t; 1],  B = B_re + i B_im
    y_t = f(c_t) on the real and imaginary parts  (2n outputs)
    lambda = exp(-exp(nu) + i phase)              |lambda| = exp(-exp(nu)) < 1 for every nu
    gamma  = sqrt(1 - |lambda|^2)                 keeps c at the scale of B v

Because J = dc_t/dc_{t-1} = diag(lambda), each unit's sensitivities to its own
parameters stay its own, and exact RTRL keeps O(n (m + 1)) numbers:

    s^nu_t    = lambda s^nu_{t-1}    + (dlambda/dnu) c_{t-1} + (dgamma/dnu) (B v_t)
    s^phase_t = lambda s^phase_{t-1} + i lambda c_{t-1}
    s^B_t     = lambda s^B_{t-1}     + gamma v_t^T          (dc/dB_re;  dc/dB_im = i s^B)

and dL/dp = Re(conj(g) s^p) for g = dL/dc_re + i dL/dc_im.  The state is held
as real numbers, (re, im) interleaved per unit, so the rest of the engine sees a
real state of width 2n.  Parameters: block "lam" (n, 2) = [nu | phase] and block
"B" (2n, m + 1) = [B_re; B_im] over [x; 1]; named views nu, phase, W (2n, m), b.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..activations import hidden_activation
from .base import Block, Cell, Layer, check_size


def _check_unit(name: str, value: object, low: float, high: float) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class LRU(Cell):
    """Diagonal complex recurrent layer of ``units`` complex units, 2 * units outputs.

    The moduli |lambda| start uniform in [r_min, r_max] (memory spans from about
    1 / (1 - r_min) to 1 / (1 - r_max) steps) and the phases uniform in
    [0, max_phase]; learning moves both, always inside the unit circle.  Exact RTRL
    costs O(units * (inputs + 1)) per step.
    """

    kind = "LRU"

    units: int
    activation: str = "tanh"
    r_min: float = 0.5
    r_max: float = 0.99
    max_phase: float = math.pi

    def __post_init__(self):
        check_size("units", self.units)
        hidden_activation(self.activation)
        _check_unit("r_min", self.r_min, 1e-6, 1.0 - 1e-9)
        _check_unit("r_max", self.r_max, self.r_min, 1.0 - 1e-9)
        _check_unit("max_phase", self.max_phase, 0.0, 2.0 * math.pi)

    @property
    def state_size(self) -> int:
        return 2 * self.units

    @property
    def out_size(self) -> int:
        return 2 * self.units

    def blocks(self, m):
        return (Block("lam", self.units, 2, None), Block("B", 2 * self.units, m + 1, 0))

    def views(self, blocks, m):
        lam, B = blocks["lam"], blocks["B"]
        return {"nu": lam[..., 0], "phase": lam[..., 1], "W": B[..., :-1], "b": B[..., -1]}

    def input_views(self):
        return ("W",)

    def init(self, blocks, m, rng):
        n, view = self.units, self.views(blocks, m)
        r = rng.uniform(self.r_min, self.r_max, n)
        view["nu"][...] = np.log(-np.log(r))  # |lambda| = exp(-exp(nu)) = r
        view["phase"][...] = rng.uniform(0.0, self.max_phase, n)
        view["W"][...] = rng.standard_normal((2 * n, m)) / math.sqrt(2 * m)
        view["b"][...] = 0.0

    def layer(self, m, flat, batch=1):
        return LRULayer(self, m, flat, batch)


class LRULayer(Layer):
    """Runtime of an LRU cell; record: v = [x_t; 1], c = c_{t-1}, u = B v_t, D = f'(c_t) (interleaved)."""

    def __init__(self, cell, m, flat, batch):
        super().__init__(cell, m, flat, batch)
        n = self.n
        lam, self.B = self.blocks["lam"], self.blocks["B"]
        self.nu, self.phase = lam[:, 0], lam[:, 1]
        self.act = hidden_activation(cell.activation)
        v = np.zeros((batch, m + 1))
        v[:, -1] = 1.0
        self.record = {"v": v, "c": np.zeros((batch, 2 * n)), "u": np.zeros((batch, 2 * n)),
                       "D": np.zeros((batch, 2 * n))}
        self.x_col = 0
        self.state = np.zeros((batch, 2 * n))
        self.out = np.zeros((batch, 2 * n))
        self._u2 = np.zeros((batch, 2 * n))  # B v as [re rows | im rows]
        self._coefficients()
        # where each own sensitivity sits in the dense (2n, 2n + 2n (m + 1)) layout (``rtrl_dense``)
        k, i = m + 1, np.arange(n)
        self._re_cols = (2 * n + i[:, None] * k + np.arange(k)).ravel()  # B_re[i, :]
        self._im_cols = (2 * n + (n + i[:, None]) * k + np.arange(k)).ravel()  # B_im[i, :]
        self._B_rows_re = np.repeat(2 * i, k)
        self._B_rows_im = np.repeat(2 * i + 1, k)

    def _coefficients(self) -> None:
        """lambda, gamma and their derivatives for the current nu and phase."""
        enu = np.exp(self.nu)
        r = np.exp(-enu)
        self.lam = r * np.exp(1j * self.phase)
        self.gamma = np.sqrt(-np.expm1(-2.0 * enu))  # sqrt(1 - r^2), accurate as r -> 1
        self.dlam_dnu = -enu * self.lam
        # dgamma/dnu = r^2 exp(nu) / gamma, which -> 0 as r -> 1
        self.dgamma_dnu = np.divide(r * r * enu, self.gamma, out=np.zeros_like(r), where=self.gamma > 0)
        g2 = np.repeat(self.gamma, 2)  # interleaved: (re, im) of unit i share gamma_i
        n = self.n
        M = np.empty((2 * n, self.m))  # dc/dx, interleaved rows: gamma_i B_re[i], gamma_i B_im[i]
        M[0::2], M[1::2] = self.B[:n, :-1], self.B[n:, :-1]
        self.dc_dx = g2[:, None] * M

    @staticmethod
    def _complex(a: np.ndarray) -> np.ndarray:
        return a.view(np.complex128)

    def forward(self, x):
        n, rec = self.n, self.record
        self._coefficients()
        v = rec["v"]
        v[:, :-1] = x
        rec["c"][...] = self.state
        np.matmul(self.B, v[:, :, None], out=self._u2[:, :, None])  # per stream, as DenseLayer does
        u = self._complex(rec["u"])
        u.real, u.imag = self._u2[:, :n], self._u2[:, n:]
        c = self._complex(self.new_state)
        np.multiply(self.lam, self._complex(self.state), out=c)  # c_t = lambda c_{t-1} + gamma B v_t
        c += self.gamma * u
        self.act.f(self.new_state, self.out)
        self.act.derivative(self.new_state, self.out, rec["D"])
        return self.out

    def commit(self):
        self.state[...] = self.new_state

    def refresh(self):
        self._coefficients()

    def saturated(self):
        return int(self.act.saturated(self.out).sum())

    # --- products -----------------------------------------------------------------
    def jvp(self, rec, S, out):
        lr, li = self.lam.real[:, None], self.lam.imag[:, None]
        Sa, Sb = S[:, 0::2], S[:, 1::2]
        out[:, 0::2] = lr * Sa - li * Sb  # diag(lambda) S, on (re, im) pairs
        out[:, 1::2] = li * Sa + lr * Sb
        return out

    def jvp_input(self, rec, S, out):
        return np.matmul(self.dc_dx, S, out=out)

    def output_jvp(self, rec, S):
        return rec["D"][:, :, None] * S

    def output_vjp(self, rec, e):
        return rec["D"] * e

    @property
    def dz_width(self):
        return 4 * self.n  # dL/dnu, dL/dphase, dL/d(B v) on the re rows, then the im rows

    output_is_state = False

    def backward(self, rec, e, dz, back=None, e_in=None):
        n = self.n
        ec = self._complex(np.ascontiguousarray(e))
        cp, u = self._complex(rec["c"]), self._complex(rec["u"])
        # dL/dp = Re(conj(e) dc/dp) for each unit's nu and phase
        c_nu, c_phase = self._immediate_lambda(rec)
        dz[:, :n] = (np.conj(ec) * c_nu).real
        dz[:, n : 2 * n] = (np.conj(ec) * c_phase).real
        dz[:, 2 * n : 3 * n] = self.gamma * ec.real
        dz[:, 3 * n :] = self.gamma * ec.imag
        if back is not None:
            self._complex(back)[...] = np.conj(self.lam) * ec  # J^T e
        if e_in is not None:
            np.dot(e, self.dc_dx, out=e_in)

    def param_grad(self, recs, dzs, out):
        n = self.n
        lam = out[:, : 2 * n].reshape(out.shape[0], n, 2)
        lam[..., 0] = dzs[..., :n].sum(axis=0)
        lam[..., 1] = dzs[..., n : 2 * n].sum(axis=0)
        B = out[:, 2 * n :].reshape((out.shape[0],) + self.B.shape)
        np.matmul(dzs[..., 2 * n :].transpose(1, 2, 0), recs["v"].transpose(1, 0, 2), out=B)

    def _immediate_lambda(self, rec):
        """dc_t/dnu and dc_t/dphase (B, n) at fixed c_{t-1}: (dlambda/dnu) c + (dgamma/dnu) B v, i lambda c."""
        cp, u = self._complex(rec["c"]), self._complex(rec["u"])
        return self.dlam_dnu * cp + self.dgamma_dnu * u, 1j * self.lam * cp

    def _immediate_B(self, rec):
        """dc_t/dB_re (B, n, m + 1) at fixed c_{t-1}: gamma v^T (dc/dB_im is i times it)."""
        return self.gamma[:, None] * rec["v"][:, None, :]

    def _scatter(self, s_nu, s_phase, s_B, out, add=False):
        """Write (or add) own complex sensitivities into the dense interleaved layout."""
        batch, n = out.shape[0], self.n
        i = np.arange(n)
        entries = (
            (2 * i, 2 * i, s_nu.real), (2 * i + 1, 2 * i, s_nu.imag),
            (2 * i, 2 * i + 1, s_phase.real), (2 * i + 1, 2 * i + 1, s_phase.imag),
            (self._B_rows_re, self._re_cols, s_B.real.reshape(batch, -1)),
            (self._B_rows_im, self._re_cols, s_B.imag.reshape(batch, -1)),
            (self._B_rows_re, self._im_cols, -s_B.imag.reshape(batch, -1)),  # dc/dB_im = i s^B
            (self._B_rows_im, self._im_cols, s_B.real.reshape(batch, -1)),
        )
        for rows, cols, values in entries:
            if add:
                out[:, rows, cols] += values
            else:
                out[:, rows, cols] = values

    def add_immediate(self, rec, S):
        s_nu, s_phase = self._immediate_lambda(rec)
        self._scatter(s_nu, s_phase, self._immediate_B(rec).astype(complex), S, add=True)

    # --- exact RTRL in O(n (m + 1)) ------------------------------------------------------
    def rtrl_allocate(self, below):
        batch, n, k = self.batch, self.n, self.m + 1
        arrays = {"s_nu": np.zeros((batch, n), complex), "s_phase": np.zeros((batch, n), complex),
                  "s_B": np.zeros((batch, n, k), complex),
                  "_dense": np.zeros((batch, 2 * n, below + self.n_params))}
        if below:
            arrays["S"] = np.zeros((batch, 2 * n, below))
            arrays["_next"] = np.zeros_like(arrays["S"])
            arrays["_in"] = np.zeros_like(arrays["S"])
        return arrays

    def rtrl_step(self, rec, arrays, S_in):
        # s_t = lambda s_{t-1} + the immediate influence, for each of the unit's own parameters
        c_nu, c_phase = self._immediate_lambda(rec)
        for name, lam, immediate in (("s_nu", self.lam, c_nu), ("s_phase", self.lam, c_phase),
                                     ("s_B", self.lam[:, None], self._immediate_B(rec))):
            s = arrays[name]
            s *= lam
            s += immediate
        if S_in is not None:  # the layers below: J S + dc/dx S_in, dense
            new = self.jvp(rec, arrays["S"], arrays["_next"])
            new += self.jvp_input(rec, S_in, arrays["_in"])
            arrays["S"], arrays["_next"] = new, arrays["S"]

    def rtrl_gradient(self, arrays, g, out):
        n, below = self.n, out.shape[-1] - self.n_params
        gc = np.conj(self._complex(np.ascontiguousarray(g)))
        lam = out[:, below : below + 2 * n].reshape(out.shape[0], n, 2)
        lam[..., 0] = (gc * arrays["s_nu"]).real
        lam[..., 1] = (gc * arrays["s_phase"]).real
        w = gc[:, :, None] * arrays["s_B"]
        B = out[:, below + 2 * n :].reshape((out.shape[0],) + self.B.shape)
        B[:, :n], B[:, n:] = w.real, -w.imag  # Re(conj(g) i s) = -Im(conj(g) s)
        if below:
            np.matmul(g[:, None, :], arrays["S"], out=out[:, None, :below])

    def rtrl_dense(self, arrays):
        dense = arrays["_dense"]
        below = dense.shape[-1] - self.n_params
        if below:
            dense[..., :below] = arrays["S"]
        self._scatter(arrays["s_nu"], arrays["s_phase"], arrays["s_B"], dense[..., below:])
        return dense

    def rtrl_layout(self, name):
        return {"S": "theta"}.get(name, "inputs" if name.startswith("s_B") else "fixed")

    def rtrl_state(self, arrays):
        out = {}
        for name in ("s_nu", "s_phase", "s_B"):
            out[f"{name}_re"], out[f"{name}_im"] = arrays[name].real, arrays[name].imag
        if "S" in arrays:
            out["S"] = arrays["S"]
        return out
