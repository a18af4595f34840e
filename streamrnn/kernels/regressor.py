"""The call that binds ``hybrid_step`` to one ``HybridRegressor``'s own arrays.

``RegressorKernel.for_model(model)`` returns the binding when the kernels
are on and the corrector (if any) runs on an engine kernel, else None.  The
arrays are the model's own (nothing is copied per event); the parts' Python
numbers are packed into ``sc`` before a call and written back after it, and
the caches the numpy side keeps (ML-Poly weights, the moments' standard
deviations, the predict-learn pass) are dropped when the state moves.  The
numbers are packed only when the numpy path has changed them since the
last call (``desync``): a kernel learn writes them to both sides.

A binding holds references to the parts' arrays: whatever replaces one
(growing the features, loading a state) must drop the binding (the model's
``grow_features`` and ``_loaded`` do).  It holds none to the model itself, which
passes itself to each call: a model that goes is freed at once, not by the
cycle collector (a daemon evicts thousands).
"""

from __future__ import annotations

import numpy as np

from . import enabled
from . import hybrid_step as k
from . import network_table as nt
from .table import ArrayTable, constant


class RegressorKernel:
    def __init__(self, model):
        cor = model.corrector
        lin, lc = model.linear, model.linear_change
        self.sc = np.zeros(len(k.SCALARS))
        # whether sc holds the parts' numbers: true from a pack until the numpy path learns an event
        # (``desync``); the parts' own numbers are written back after every kernel learn
        self.synced = False
        heads_lam = cor.heads.lam if cor is not None else 1.0
        cor_errors = cor.errors if cor is not None else None
        self.cst = constant(np.array([
            lin.lam, lin.huber or 0.0, lc.lam, lc.huber or 0.0, heads_lam,
            model.changes.rate, model.changes.floor,
            lin.errors[0].rate if lin.huber else 0.0, lc.errors[0].rate if lc.huber else 0.0,
            cor_errors.rate if cor is not None else 0.0, cor_errors.floor if cor is not None else 1.0,
            model.level2.margin,
        ]))
        # the parts whose numbers travel in sc; a part the model does not have reads 0 from a stand-in
        stand_in = _StandIn()
        self.scales = (model.changes, lin.errors[0] if lin.huber else stand_in,
                       lc.errors[0] if lc.huber else stand_in, cor_errors if cor is not None else stand_in)
        self.pending_of = cor if cor is not None else stand_in
        t, f = model.targets, model.feature_changes
        slots = {
            "targets.count": t.count, "targets.mean": t.mean, "targets.m2": t.m2,
            "feature_changes.count": f.count, "feature_changes.mean": f.mean, "feature_changes.m2": f.m2,
            "linear.w": lin.w, "linear.P": lin.P, "linear.updates": lin.updates,
            "linear_change.w": lc.w, "linear_change.P": lc.P, "linear_change.updates": lc.updates,
            "level1.R": model.level1.R, "level1.S": model.level1.S,
            "level2.R": model.level2.R, "level2.S": model.level2.S,
        }
        if model.level2.prior is not None:
            slots["level2.prior"] = model.level2.prior
        self._y = np.zeros(1)  # the network's target, when the call takes its step
        slots["target"] = self._y
        self.net = net = cor.rnn._kernel if cor is not None else None
        self._aimed = None  # RTRL: the S buffer the table's S slots are aimed for (``learn`` swaps them)
        self.rnn = cor.rnn if cor is not None else None
        self.layer = net.layer if net is not None else None
        self.numbers = np.zeros(len(nt.NUMBERS))
        ints = np.zeros(len(k.INTS), dtype=np.int64)
        ints[k.NET_SLOTS_AT], ints[k.NET_CODES_AT] = k.NET, k.NET_INTS
        if net is not None:  # the corrector: its arrays, and the network's slots after them
            slots.update({"corrector.pending": cor.pending, "corrector.errors_seen": cor.errors_seen,
                          "heads.w": cor.heads.w, "heads.P": cor.heads.P, "heads.updates": cor.heads.updates})
            ints[k.HAS_COR] = 1
            ints[k.NET_INTS:] = net.ints
            self.numbers[:] = net.numbers
        _check_shapes(model, slots)
        ints, self.numbers = constant(ints), constant(self.numbers)
        slots.update({"sc": self.sc, "cst": self.cst, "ints": ints, "numbers": self.numbers})
        arrays = nt.fill(slots, k.OWN_SLOTS) + nt.fill(net.slots if net is not None else {}, nt.SLOTS)
        self.table = ArrayTable(arrays, [kind for _, kind in k.SLOTS])
        self.ints = ints

    @classmethod
    def for_model(cls, model) -> "RegressorKernel | None":
        cor = model.corrector
        if cor is None and not enabled():
            return None
        if cor is not None:
            net = cor.rnn._kernel
            if net is None or cor.rnn.target_feedback or cor.memory != 1 or cor.heads.heads != 1:
                return None
        try:
            return cls(model)
        except ValueError:  # arrays the kernel cannot read (shapes that do not fit the model): numpy's to refuse
            return None

    def _pack(self, m) -> np.ndarray:
        sc = self.sc
        if self.synced:  # a kernel learn wrote the numbers both here and into the parts
            return sc
        ch, lin, lc, cor = self.scales
        sc[: k.OUT_TARGET] = (m.seen, m.last, m.lo, m.hi, m.bounded, ch.n, ch.s, lin.n, lin.s, lc.n, lc.s,
                              cor.n, cor.s, self.pending_of.has_pending)
        self.synced = True
        return sc

    def desync(self) -> None:
        """The numpy path is about to change the parts' numbers: pack them again before the next call."""
        self.synced = False

    def predict(self, m, z: np.ndarray, dx: np.ndarray) -> float | None:
        """``HybridRegressor.predict`` of the model m (the one bound) that has learned a target; None for
        an event the kernel leaves to numpy (z or dx of another type or width, or not finite)."""
        table = self.table
        self._pack(m)
        try:
            value = k.predict_table(z, dx, table.ptr, table.dims)
        except TypeError:  # not C-contiguous float64 arrays
            return None
        if self.sc[k.OUT_REFUSED]:
            return None
        if self.rnn is not None:  # the network's buffers hold a forward pass of its input
            self.layer.refresh()
            self.rnn._pending = True
        return value

    def learn(self, m, z: np.ndarray, dx: np.ndarray, y: float) -> float | None:
        """``HybridRegressor.learn`` of a finite y by the model m (the one bound), returning what ``predict``
        would have returned just before (once m has learned a target); None, and nothing changed, for an
        event the kernel leaves to numpy (as ``predict``)."""
        sc = self._pack(m)
        net, table = self.net, self.table
        lr = 0.0
        if net is not None:
            lr = float(net.lr(int(net.count[0]) + 1) if net.scheduled else net.lr)
            if net.rtrl:
                self._aimed = net.aim(table, k.NET, self._aimed)
        try:
            prediction = k.learn_table(z, dx, y, table.ptr, table.dims, lr)
        except TypeError:
            return None
        if sc[k.OUT_REFUSED]:
            return None
        target, step = self.unpack(m)
        if net is not None:
            if step:
                self.layer.refresh()
                status = int(net.out[0])
                if status:  # the network stepped in the call: its bookkeeping, as OnlineRNN.step does it
                    if net.rtrl:
                        self._aimed = net.stepped(status)
                    self.rnn._pending = False
                    self.rnn._kernel_stepped(status, True)
                else:  # a step the kernel leaves to numpy (a non-finite state or loss)
                    self._y[0] = target
                    self.rnn.step(m.corrector.pending, self._y)
        return prediction


    def unpack(self, m) -> tuple[float, float]:
        """The numbers a call wrote into ``sc`` written back into the model m (the one bound) and its parts,
        and the caches of the state before dropped; returns sc's (OUT_TARGET, OUT_STEP)."""
        seen, last, lo, hi, bounded, ch_n, ch_s, lin_n, lin_s, lc_n, lc_s, cor_n, cor_s, pending, target, step, _ = \
            self.sc.tolist()
        m.seen, m.last, m.lo, m.hi, m.bounded = bool(seen), last, lo, hi, int(bounded)
        ch, lin, lc, cor = self.scales
        ch.n, ch.s, lin.n, lin.s, lc.n, lc.s, cor.n, cor.s = int(ch_n), ch_s, int(lin_n), lin_s, int(lc_n), lc_s, \
            int(cor_n), cor_s
        self.pending_of.has_pending = bool(pending)
        self.synced = True
        m.level1._cache = {}
        m.targets._stale = m.feature_changes._stale = True
        m._last_pass = None  # a numpy predict's pass (an event refused here) is of the state before
        if self.net is not None:
            m.level2._cache = {}
        return target, step


def _check_shapes(model, slots: dict) -> None:
    """ValueError unless every array has the shape the model's width (and its network's) implies:
    the kernel reads them by address and checks nothing (a state loaded for another width)."""
    n, K = model.n, 4
    want = {"targets.count": (1,), "targets.mean": (1,), "targets.m2": (1,),
            "feature_changes.count": (n,), "feature_changes.mean": (n,), "feature_changes.m2": (n,),
            "linear.w": (1, 1 + n), "linear.P": (1, 1 + n, 1 + n), "linear.updates": (1,),
            "linear_change.w": (1, 2 + 2 * n), "linear_change.P": (1, 2 + 2 * n, 2 + 2 * n),
            "linear_change.updates": (1,), "level1.R": (1, K), "level1.S": (1, K),
            "level2.R": (1, 2), "level2.S": (1, 2), "level2.prior": (2,)}
    cor = model.corrector
    if cor is not None:
        d = 1 + cor.units + K
        want.update({"corrector.pending": (K + 1 + n,), "corrector.errors_seen": (1,),
                     "heads.w": (1, d), "heads.P": (1, d, d), "heads.updates": (1,)})
        if cor.rnn.n_inputs != K + 1 + n:
            raise ValueError(f"the corrector network reads {cor.rnn.n_inputs} inputs, not {K + 1 + n}")
    for name, shape in want.items():
        if name in slots and slots[name].shape != shape:
            raise ValueError(f"{name} has shape {slots[name].shape}, not {shape}")


class _StandIn:
    """The numbers of a part a model does not have (no Huber weights, no corrector): zeros, written to freely."""

    n, s, has_pending = 0, 0.0, False
