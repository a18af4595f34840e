"""HybridForecaster: exact components, a recurrent corrector and online aggregation, on every value.

The design follows what wins in forecasting practice (the M4 winner let
exponential smoothing carry level and seasons and a network learn the rest;
load forecasters aggregate many models online):

1. **Components**, exact and cheap, each forecasting y_{t+1..t+H}: the last
   value, the seasonal naive, exponential smoothing (additive; and on log y
   with a trend, for a positive series), the Theta method, and a linear
   autoregression on lags, seasonal lags, calendar and exogenous features
   fitted by recursive least squares.
2. **Aggregation** (level 1): ML-Poly weights per horizon step over the
   components that are awake, learned from each value as it arrives.
3. **The RNN** (``RNNCorrector``) learns online what that combination misses,
   from the components' disagreement, its own recent errors and the features,
   and proposes a correction per horizon step.
4. **Aggregation** (level 2): ML-Poly between the combination and the
   corrected combination, so the network's correction is used exactly as far
   as it has helped.

Seasonal periods are given (``periods``) or found during warm-up by the
autocorrelation of the differences (``seasonality.detect_periods``) among
``candidates``; when they are found, the seasonal components are built and
replayed over the stored history.

Values must be finite (ValueError otherwise, and nothing changes).  A finite
value far outside everything seen -- beyond ``scale.GUARD`` (10) times the
range from it, or beyond +-``scale.MAX_ABS`` (1e100) -- is bounded to that
limit before anything learns from it, and counted in ``diagnostics()["bounded_values"]``: a glitch
of 1e200 cannot overflow a state, and the components' robust updates limit
what it teaches them.  Every forecast is bounded the same way.

Memory per stream is constant: O(H^2 K) for the forecasts awaiting their
values (H horizon steps, K components), plus the history ring and the network.
"""

from __future__ import annotations

import math

import numpy as np

from ..cells import cell_config
from ..learners import TruncatedBPTT
from ..optim import Adam
from ..state import StateError
from .aggregation import MLPoly
from .corrector import RNNCorrector
from .history import History
from .linear import LinearAR
from .naive import Persistence, SeasonalNaive
from .scale import CLIP, GUARD, MAX_ABS, bound, limits
from .seasonality import detect_periods
from .smoothing import ExponentialSmoothing, Theta
from .stateful import unprefixed

#: warm-up: when no periods are given, detection runs at these counts of values
DETECT_AT = (50, 100, 200, 400, 800, 1600)
AUTO_CAPACITY = 1600
#: the default horizon tracked for a seasonal series is its season, up to this many steps
SEASON_HORIZON = 48
#: what the forecasts in flight keep, one slot per origin (see ``_reset_ring``)
RING = ("ring_F", "ring_awake", "ring_comb", "ring_corr", "ring_hidden", "ring_scale")
DEFAULT_LEARNER = TruncatedBPTT(10, 1)
DEFAULT_OPTIMIZER = Adam(0.001)


def default_lags(periods) -> tuple[int, ...]:
    """1, 2, 3 and each period m's m - 1, m, m + 1 (the values around the same phase a season ago)."""
    lags = {1, 2, 3}
    for m in periods:
        lags.update(k for k in (m - 1, m, m + 1) if k >= 1)
    return tuple(sorted(lags))


def check_periods(name: str, value) -> tuple[int, ...] | None:
    """None, or a tuple of distinct ints >= 2 (an int becomes a 1-tuple; () is "no season");
    ValueError otherwise."""
    if value is None:
        return None
    items = (value,) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
    try:
        items = tuple(items)
    except TypeError:
        raise ValueError(f"{name} must be an int or a sequence of ints, got {value!r}") from None
    if not all(isinstance(m, (int, np.integer)) and not isinstance(m, bool) and m >= 2 for m in items):
        raise ValueError(f"{name} must be ints >= 2, got {value!r}")
    if len(set(items)) != len(items):
        raise ValueError(f"{name} must not repeat a period, got {value!r}")
    return tuple(sorted(int(m) for m in items))


class HybridForecaster:
    """A univariate forecaster with exogenous features, learning on every value.

    Parameters
    ----------
    periods
        Seasonal periods in steps (an int or a sequence; () for none), or None to
        detect them during warm-up among ``candidates`` (default: every period from 4 up).
    multiplicative
        None: for a positive series, the trended smoothing and Theta work on log y
        (seasonal swings proportional to the level); True: every smoothing model
        does, and y must be > 0; False: none does.
    lags
        The linear model's lags; None for ``default_lags(periods)``.
    horizon
        Horizon steps whose aggregation weights are learned from the first value
        (forecasts further ahead use the last step's weights; ``track`` raises it).
        None: a season ahead (the longest period, at most ``SEASON_HORIZON``
        steps), or 1 without a season, raised when periods are detected.
    n_features
        Width of the feature vector each value comes with (calendar phases and
        exogenous inputs, standardised by the caller); ``grow_features`` widens it.
    layers, learner, optimizer, clip_norm, seed
        The corrector network (``OnlineRNN`` arguments); ``layers=None`` leaves the
        network out (the linear-only ablation).

    Examples
    --------
    >>> import numpy as np
    >>> f = HybridForecaster(periods=12, horizon=3, layers=None)
    >>> for t in range(120):
    ...     f.learn(10.0 + np.sin(2 * np.pi * t / 12))
    >>> np.round(f.forecast(3), 2).tolist()
    [10.0, 10.5, 10.87]
    """

    def __init__(self, periods=None, multiplicative: bool | None = None, lags=None, horizon: int | None = None,
                 n_features: int = 0, layers=None, learner=None, optimizer=None, clip_norm: float | None = 1.0,
                 seed: int = 0, candidates=None):
        self.fixed_periods = check_periods("periods", periods)
        if multiplicative not in (None, True, False):
            raise ValueError(f"multiplicative must be None, True or False, got {multiplicative!r}")
        self.multiplicative = multiplicative
        self.user_lags = None if lags is None else _check_lags(lags)
        if horizon is not None and (isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer))
                                    or horizon < 1):
            raise ValueError(f"horizon must be None or an integer >= 1, got {horizon!r}")
        self.candidates = candidates
        self.n_features = int(n_features)
        self.rnn_spec = None if layers is None else dict(
            layers=tuple(layers), learner=learner if learner is not None else DEFAULT_LEARNER,
            optimizer=optimizer if optimizer is not None else DEFAULT_OPTIMIZER, clip_norm=clip_norm, seed=seed,
        )
        self.auto_horizon = horizon is None
        self.horizon = int(horizon) if horizon is not None else _season_horizon(self.fixed_periods or ())
        self.bounded = 0
        periods = self.fixed_periods or ()
        lags = self.user_lags or default_lags(periods)
        capacity = max(max(lags) + 2, max(periods, default=12) + 2)  # the trend looks a season back
        if self.fixed_periods is None:
            capacity = max(capacity, AUTO_CAPACITY)
        self.history = History(capacity)
        self._build(periods)

    # ----- the parts --------------------------------------------------------
    def _build(self, periods: tuple[int, ...]) -> None:
        """Components, aggregations and corrector for these periods (fresh), and the origin ring."""
        h, self.periods = self.history, tuple(periods)
        positive = h.positive if h.n else True
        log_trend = self.multiplicative is True or (self.multiplicative is None and positive)
        log_all = self.multiplicative is True
        lags = self.user_lags or default_lags(self.periods)
        lags = tuple(k for k in lags if k + 2 <= h.capacity)
        comps = [Persistence(h)]
        if self.periods:
            comps.append(SeasonalNaive(h, max(self.periods)))
        comps += [
            ExponentialSmoothing(h, self.periods, trend=False, log=log_all),
            ExponentialSmoothing(h, self.periods, trend=True, log=log_trend),
            Theta(h, self.periods, log=log_trend),
            LinearAR(h, lags, self.n_features),
        ]
        self.components = comps
        K, H = len(comps), self.horizon
        self.level1 = MLPoly(K, H)
        self.level2 = MLPoly(2, H, prior=(1.0, 0.0), margin=2.0)  # the correction must prove itself
        self.corrector = None
        if self.rnn_spec is not None:
            s = self.rnn_spec
            self.corrector = RNNCorrector(K, self.n_features, H, s["layers"], s["learner"], s["optimizer"],
                                          s["clip_norm"], s["seed"], memory=H)
        self._reset_ring()

    def _reset_ring(self) -> None:
        K, H = len(self.components), self.horizon
        units = self.corrector.units if self.corrector is not None else 0
        self.origins = 0
        self.ring_F = np.zeros((H, K, H))
        self.ring_awake = np.zeros((H, K), dtype=bool)
        self.ring_comb = np.zeros((H, H))
        self.ring_corr = np.zeros((H, H))
        self.ring_hidden = np.zeros((H, units))
        self.ring_scale = np.ones(H)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.components]

    def track(self, horizon: int) -> None:
        """Learn aggregation weights for at least ``horizon`` steps from now on."""
        if horizon > self.horizon:
            self.horizon = int(horizon)
            self.level1.grow_horizon(horizon)
            self.level2.grow_horizon(horizon)
            if self.corrector is not None:
                self.corrector.grow_horizon(horizon)
                self.corrector.grow_memory(horizon)
            self._reset_ring()  # forecasts in flight had fewer steps: they are dropped

    def grow_features(self, k: int) -> None:
        """k more features (appended); they read 0 in everything learned so far."""
        if k <= 0:
            return
        self.n_features += k
        for c in self.components:
            if isinstance(c, LinearAR):
                c.grow_features(k)
        if self.corrector is not None:
            self.corrector.grow_features(k)

    # ----- checks -----------------------------------------------------------
    def _check(self, y, features) -> tuple[float, np.ndarray | None]:
        try:
            y = float(y)
        except (TypeError, ValueError):
            raise ValueError(f"y must be a number, got {y!r}") from None
        if not math.isfinite(y):
            raise ValueError(f"y must be finite, got {y!r}")
        if self.multiplicative is True and y <= 0.0:
            raise ValueError(f"y must be > 0 with multiplicative=True, got {y!r}")
        if features is not None:
            features = np.asarray(features, dtype=float).reshape(-1)
            if features.shape[0] != self.n_features:
                raise ValueError(f"features must have {self.n_features} values, got {features.shape[0]}")
            if not np.isfinite(features).all():
                raise ValueError(f"features must be finite, got {features.tolist()}")
        return y, features

    def _limits(self) -> tuple[float, float]:
        h = self.history
        return limits(h.lo, h.hi) if h.n else (-MAX_ABS, MAX_ABS)

    def bound(self, y: float) -> float:
        lo, hi = self._limits()
        return min(max(y, lo), hi)

    # ----- learning -----------------------------------------------------------
    def learn(self, y, features=None, future=None) -> None:
        """Learn the next value y (with the features of its step); ValueError and no change if bad.

        ``future``: the features of the next ``horizon`` steps where they are known now (the
        calendar), (horizon, n_features); the forecasts made from this value are learned, and
        served by ``forecast(h)`` without recomputing them, with these rows (None: zeros).
        """
        y, features = self._check(y, features)
        if future is not None:
            future = np.asarray(future, dtype=float).reshape(self.horizon, self.n_features)
            if not np.isfinite(future).all():
                raise ValueError("future features must be finite")
        yb = self.bound(y)
        self.bounded += yb != y
        y = yb
        self._feedback(y)
        self.history.push(y)
        for c in self.components:
            c.learn(features)
        if self.fixed_periods is None and self.history.n in DETECT_AT:
            self._detect()
        if future is not None and future.shape[0] != self.horizon:  # detection lengthened the horizon
            future = None
        self._origin(features, future)

    def _feedback(self, y: float) -> None:
        """The forecasts made 1..H steps ago for this value: aggregations and heads learn from them."""
        H, n = self.horizon, min(self.origins, self.horizon)
        if not n:
            return
        steps = np.arange(n)  # horizon step h of the origin made h + 1 steps ago
        slots = (self.origins - 1 - steps) % H
        F = self.ring_F[slots, :, steps]  # (n, K)
        awake = self.ring_awake[slots]
        comb = self.ring_comb[slots, steps]
        self.level1.update_steps(F, awake, y)
        cor = self.corrector
        if cor is not None:
            s = self.ring_scale[slots][:, None]
            D = bound((F - comb[:, None]) / s, -CLIP, CLIP) * awake
            Z = np.hstack([np.ones((n, 1)), self.ring_hidden[slots], D])
            cor.learn_heads(Z, (y - comb) / s[:, 0])
            corrected = comb + self.ring_corr[slots, steps]
            self.level2.update_steps(np.stack([comb, corrected], axis=1), np.ones((n, 2), dtype=bool), y)
            cor.observe(y - comb)  # the errors at steps 1..n; the first trains the network

    def _detect(self) -> None:
        h = self.history
        found = detect_periods(h.window(h.size), self.candidates)
        if found != self.periods:  # new periods, or the evidence for the old ones is gone
            values = h.window(h.size).copy()
            if self.auto_horizon:
                self.horizon = max(self.horizon, _season_horizon(found))
            self.history = History(h.capacity)
            self._build(found)
            assert h.n == h.size, "detection runs before the history wraps around"
            for v in values:  # replay what is stored through the new components (no features kept)
                self.history.push(float(v))
                for c in self.components:
                    c.learn(None)
            self.history.n = h.n
            self.history.lo, self.history.hi, self.history.positive = h.lo, h.hi, h.positive

    def _forecasts(self, horizon: int, future=None) -> tuple[np.ndarray, np.ndarray]:
        """(F, awake): each awake component's bounded forecasts, (K, horizon)."""
        lo, hi = self._limits()
        last = self.history.last
        F = np.full((len(self.components), horizon), last)
        awake = np.array([c.ready for c in self.components])
        for k, c in enumerate(self.components):
            if awake[k]:
                F[k] = c.forecast(horizon, future)
        if not np.isfinite(F.dot(np.ones(horizon))).all():  # one pass for the common case: all finite
            F[~np.isfinite(F)] = last
        return bound(F, lo, hi), awake

    def _combine(self, F: np.ndarray, awake: np.ndarray) -> np.ndarray:
        W = self.level1.table(awake)
        H = F.shape[1]
        if H > len(W):  # beyond the tracked steps: the last step's weights
            W = np.vstack([W, np.repeat(W[-1:], H - len(W), 0)])
        return np.einsum("hk,kh->h", W[:H], F)

    def _origin(self, features, future=None) -> None:
        """Forecast H steps from the newest value and keep what the aggregations will need."""
        H = self.horizon
        F, awake = self._forecasts(H, future)
        comb = self._combine(F, awake)
        slot = self.origins % H
        self.ring_F[slot], self.ring_awake[slot], self.ring_comb[slot] = F, awake, comb
        cor = self.corrector
        if cor is not None:
            s = cor.scale
            D = bound((F - comb) / s, -CLIP, CLIP) * awake[:, None]
            hidden = cor.propose(D[:, 0], features)
            self.ring_hidden[slot], self.ring_scale[slot] = hidden, s
            self.ring_corr[slot] = cor.corrections(cor.inputs(hidden, D))
        self.origins += 1

    # ----- forecasting ----------------------------------------------------------
    def forecast(self, horizon: int, future=None) -> np.ndarray:
        """y_{t+1} ... y_{t+horizon} from the newest value; ``future``: (horizon, n_features) or None.

        With ``future`` None and horizon <= H, the forecasts made when the newest value was
        learned (with the ``future`` rows given then); otherwise they are computed from ``future``.
        Pure: nothing changes.  Before any value the forecast is 0.
        """
        if not self.history.n:
            return np.zeros(horizon)
        if future is not None:
            future = np.asarray(future, dtype=float).reshape(horizon, self.n_features)
        slot = (self.origins - 1) % self.horizon
        if future is None and horizon <= self.horizon:
            comb, corr = self.ring_comb[slot, :horizon], self.ring_corr[slot, :horizon]
        else:
            F, awake = self._forecasts(horizon, future)
            comb = self._combine(F, awake)
            corr = np.zeros(horizon)
            if self.corrector is not None:
                cor = self.corrector
                D = bound((F - comb) / self.ring_scale[slot], -CLIP, CLIP) * awake[:, None]
                corr = cor.corrections(cor.inputs(self.ring_hidden[slot], D))
        if self.corrector is None:
            return comb.copy()
        w = self.level2.table(np.ones(2, dtype=bool))[:, 1]  # the correction's share at each step
        share = w[np.minimum(np.arange(horizon), len(w) - 1)]
        lo, hi = self._limits()
        return bound(comb + share * corr, lo, hi)

    # ----- introspection ---------------------------------------------------------
    def weights(self, h: int = 0) -> dict[str, float]:
        """Level-1 weight of each component at horizon step h (0-based), and the corrector's share."""
        slot = (self.origins - 1) % self.horizon
        awake = self.ring_awake[slot] if self.origins else np.array([c.ready for c in self.components])
        out = dict(zip(self.names, self.level1.weights(h, awake).tolist()))
        if self.corrector is not None:
            out["rnn"] = float(self.level2.weights(h, np.ones(2, dtype=bool))[1])
        return out

    def diagnostics(self) -> dict:
        out = {
            "steps": self.history.n,
            "bounded_values": self.bounded,
            "periods": list(self.periods),
            "weights": self.weights(0),
            "weights_last_step": self.weights(self.horizon - 1),
        }
        if self.corrector is not None:
            out["rnn"] = self.corrector.rnn.diagnostics()
        return out

    # ----- state -------------------------------------------------------------
    def config(self) -> dict:
        s = self.rnn_spec
        return {
            "periods": None if self.fixed_periods is None else list(self.fixed_periods),
            "multiplicative": self.multiplicative,
            "lags": None if self.user_lags is None else list(self.user_lags),
            "rnn": None if s is None else {
                "layers": [cell_config(c) for c in s["layers"]],
                "learner": s["learner"].config(),
                "optimizer": s["optimizer"].config(),
                "clip_norm": s["clip_norm"],
                "seed": s["seed"],
            },
        }

    def state_dict(self, copy: bool = True) -> tuple[dict[str, np.ndarray], dict]:
        arrays: dict[str, np.ndarray] = {}
        self.history.state_into(arrays, "history.", copy)
        for i, c in enumerate(self.components):
            c.state_into(arrays, f"c{i}.", copy)
        for name in ("level1", "level2", "corrector"):
            part = getattr(self, name)
            if part is not None:
                part.state_into(arrays, f"{name}.", copy)
        for name in RING:
            arrays[name] = getattr(self, name).copy()
        header = {
            "config": self.config(),
            "periods": list(self.periods),
            "horizon": self.horizon,
            "n_features": self.n_features,
            "names": self.names,
            "bounded": self.bounded,
            "origins": self.origins,
            "candidates": None if self.candidates is None else [int(c) for c in self.candidates],
        }
        return arrays, header

    def load_state_dict(self, arrays: dict, header: dict) -> None:
        """Restore ``state_dict``; StateError (and nothing changed) if it does not fit this forecaster."""
        if header.get("config") != self.config():
            raise StateError(f"forecaster state was saved with another configuration: {header.get('config')!r}")
        try:
            clone = HybridForecaster.__new__(HybridForecaster)
            clone.__dict__.update({k: v for k, v in self.__dict__.items()})
            clone.horizon, clone.n_features = int(header["horizon"]), int(header["n_features"])
            clone.history = History(self.history.capacity)
            clone._build(tuple(header["periods"]))
            if clone.names != header["names"]:
                raise StateError(f"forecaster state has components {header['names']}, expected {clone.names}")
            clone.history.load(unprefixed(arrays, "history."))
            for i, c in enumerate(clone.components):
                c.load(unprefixed(arrays, f"c{i}."))
            for name in ("level1", "level2", "corrector"):
                part = getattr(clone, name)
                if part is not None:
                    part.load(unprefixed(arrays, f"{name}."))
            for name in RING:
                current = getattr(clone, name)
                given = np.asarray(arrays[name])
                if given.shape != current.shape:
                    raise StateError(f"state array {name!r} has shape {given.shape}, expected {current.shape}")
                setattr(clone, name, given.astype(current.dtype, copy=True))
            clone.bounded, clone.origins = int(header["bounded"]), int(header["origins"])
            clone.candidates = None if header["candidates"] is None else tuple(header["candidates"])
        except KeyError as err:
            raise StateError(f"forecaster state lacks {err}") from None
        self.__dict__.update(clone.__dict__)


def _season_horizon(periods) -> int:
    return min(max(periods), SEASON_HORIZON) if periods else 1


def _check_lags(lags) -> tuple[int, ...]:
    try:
        items = tuple(lags)
    except TypeError:
        raise ValueError(f"lags must be a sequence of ints >= 1, got {lags!r}") from None
    if not items or not all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 1 for k in items):
        raise ValueError(f"lags must be a sequence of ints >= 1, got {lags!r}")
    return tuple(sorted({int(k) for k in items}))

