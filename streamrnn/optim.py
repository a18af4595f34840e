"""Optimisers as gradient transformations on flat vectors.

Each transformation is a small immutable object with

    init(n) -> state              # a dict of named arrays, all it remembers
    update(g, state, theta) -> u  # may overwrite g; updates state in place

and the model adds u to theta.  ``Chain(ClipGlobalNorm(1.0), Adam(1e-3))``
composes them left to right; its state is the union of its parts' states
under "0.", "1.", ... prefixes.  Gradient transforms (clipping, weight decay)
go before the optimiser that turns the gradient into a step.

A learning rate is a number or a schedule, a callable from the step count
(1 on the first update) to a rate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Callable, Union

import numpy as np

LearningRate = Union[float, Callable[[int], float]]


def _check_rate(name: str, value, low: float = 0.0, high: float = math.inf, closed_high=False):
    if callable(value):
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and value >= low and (value <= high if closed_high else value < high)
    if not ok:
        bound = f"{high}]" if closed_high else f"{high})"
        raise ValueError(f"{name} must be a number in [{low}, {bound}, got {value!r}")


def _rate(lr: LearningRate, count: int) -> float:
    return lr(count) if callable(lr) else lr


def _count_state(state) -> int:
    """Advance and return the update counter kept in state['count'] (a 0-d array)."""
    count = int(state["count"]) + 1
    state["count"][...] = count  # in place, and cheaper than a ufunc on a 0-d array
    return count


# ----- schedules ------------------------------------------------------------


@dataclass(frozen=True)
class ExponentialDecay:
    """lr_t = initial * rate^(t / steps), floored at ``minimum``."""

    initial: float
    rate: float = 0.5
    steps: int = 10_000
    minimum: float = 0.0

    def __post_init__(self):
        _check_rate("initial", self.initial)
        _check_rate("rate", self.rate, 0.0, 1.0, closed_high=True)
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {self.steps!r}")

    def __call__(self, count: int) -> float:
        return max(self.minimum, self.initial * self.rate ** (count / self.steps))


@dataclass(frozen=True)
class InverseTimeDecay:
    """lr_t = initial / (1 + decay t): the Robbins-Monro rate for decay > 0."""

    initial: float
    decay: float = 1e-4

    def __post_init__(self):
        _check_rate("initial", self.initial)
        _check_rate("decay", self.decay)

    def __call__(self, count: int) -> float:
        return self.initial / (1.0 + self.decay * count)


# ----- transformations ------------------------------------------------------


class Transform:
    def init(self, n: int) -> dict[str, np.ndarray]:
        return {}

    def update(self, g: np.ndarray, state: dict, theta: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def config(self) -> dict:
        out = {"kind": type(self).__name__}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = asdict(value) | {"kind": type(value).__name__} if hasattr(value, "__dataclass_fields__") else value
        return out


def global_norm(g: np.ndarray) -> float:
    return math.sqrt(float(np.dot(g, g)))


def clip_by_global_norm(g: np.ndarray, max_norm: float, norm: float) -> np.ndarray:
    """g scaled in place to norm at most max_norm; ``norm`` is ||g||, already known."""
    if norm > max_norm:
        g *= max_norm / norm
    return g


@dataclass(frozen=True)
class ClipGlobalNorm(Transform):
    """g <- g min(1, max_norm / ||g||)."""

    max_norm: float = 1.0

    def __post_init__(self):
        _check_rate("max_norm", self.max_norm)
        if self.max_norm <= 0:
            raise ValueError(f"max_norm must be > 0, got {self.max_norm!r}")

    def update(self, g, state, theta):
        return clip_by_global_norm(g, self.max_norm, global_norm(g))


@dataclass(frozen=True)
class WeightDecay(Transform):
    """g <- g + rate theta (L2 regularisation); place it before the optimiser."""

    rate: float = 1e-4

    def __post_init__(self):
        _check_rate("rate", self.rate)

    def update(self, g, state, theta):
        g += self.rate * theta
        return g


@dataclass(frozen=True)
class SGD(Transform):
    """u = -lr g."""

    lr: LearningRate = 0.01

    def __post_init__(self):
        _check_rate("lr", self.lr)

    def init(self, n):
        return {"count": np.zeros((), dtype=np.int64)}

    def update(self, g, state, theta):
        g *= -_rate(self.lr, _count_state(state))
        return g


@dataclass(frozen=True)
class Momentum(Transform):
    """m <- mu m + g; u = -lr m, or -lr (g + mu m) with Nesterov's look-ahead."""

    lr: LearningRate = 0.01
    momentum: float = 0.9
    nesterov: bool = False

    def __post_init__(self):
        _check_rate("lr", self.lr)
        _check_rate("momentum", self.momentum, 0.0, 1.0)

    def init(self, n):
        return {"count": np.zeros((), dtype=np.int64), "m": np.zeros(n)}

    def update(self, g, state, theta):
        lr, m = _rate(self.lr, _count_state(state)), state["m"]
        m *= self.momentum
        m += g
        if self.nesterov:
            g += self.momentum * m
            g *= -lr
            return g
        return np.multiply(m, -lr, out=g)


@dataclass(frozen=True)
class RMSProp(Transform):
    """s <- rho s + (1 - rho) g^2; u = -lr g / (sqrt(s) + eps)."""

    lr: LearningRate = 0.001
    decay: float = 0.9
    eps: float = 1e-8

    def __post_init__(self):
        _check_rate("lr", self.lr)
        _check_rate("decay", self.decay, 0.0, 1.0)
        _check_rate("eps", self.eps)

    def init(self, n):
        return {"count": np.zeros((), dtype=np.int64), "s": np.zeros(n)}

    def update(self, g, state, theta):
        lr, s = _rate(self.lr, _count_state(state)), state["s"]
        s *= self.decay
        s += (1.0 - self.decay) * g * g
        denom = np.sqrt(s)
        denom += self.eps
        g /= denom
        g *= -lr
        return g


@dataclass(frozen=True)
class Adam(Transform):
    """Adam (Kingma & Ba) with the bias corrections folded into the step size.

    m <- b1 m + (1 - b1) g;  s <- b2 s + (1 - b2) g^2
    u = -lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(s) + eps sqrt(1 - b2^t))
    """

    lr: LearningRate = 0.001
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self):
        _check_rate("lr", self.lr)
        _check_rate("b1", self.b1, 0.0, 1.0)
        _check_rate("b2", self.b2, 0.0, 1.0)
        _check_rate("eps", self.eps)

    def init(self, n):
        return {"count": np.zeros((), dtype=np.int64), "m": np.zeros(n), "s": np.zeros(n)}

    def update(self, g, state, theta):
        t = _count_state(state)
        m, s = state["m"], state["s"]
        m -= g
        m *= self.b1
        m += g  # m <- b1 m + (1 - b1) g, without a temporary
        np.multiply(g, g, out=g)
        s -= g
        s *= self.b2
        s += g  # s <- b2 s + (1 - b2) g^2
        c2 = math.sqrt(1.0 - self.b2**t)
        step = _rate(self.lr, t) * c2 / (1.0 - self.b1**t)
        np.sqrt(s, out=g)
        g += self.eps * c2
        np.divide(m, g, out=g)
        g *= -step
        return g


class Chain(Transform):
    """Apply transformations in order: Chain(ClipGlobalNorm(1.0), Adam(1e-3))."""

    def __init__(self, *transforms: Transform):
        if not transforms or not all(isinstance(t, Transform) for t in transforms):
            raise ValueError(f"Chain needs one or more optimiser transforms, got {transforms!r}")
        self.transforms = transforms

    def init(self, n):
        return {f"{i}.{k}": v for i, t in enumerate(self.transforms) for k, v in t.init(n).items()}

    def update(self, g, state, theta):
        for i, t in enumerate(self.transforms):
            prefix = f"{i}."
            own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            g = t.update(g, own, theta)
            for k, v in own.items():  # counters are 0-d arrays updated in place; keep any rebinding
                state[prefix + k] = v
        return g

    def config(self):
        return {"kind": "Chain", "transforms": [t.config() for t in self.transforms]}

    def __repr__(self):
        return f"Chain({', '.join(map(repr, self.transforms))})"

    def __eq__(self, other):
        return isinstance(other, Chain) and self.transforms == other.transforms

    def __hash__(self):
        return hash(self.transforms)


OPTIMISERS = {cls.__name__: cls for cls in (SGD, Momentum, RMSProp, Adam)}
TRANSFORMS = {cls.__name__: cls for cls in (ClipGlobalNorm, WeightDecay)}
SCHEDULES = {cls.__name__: cls for cls in (ExponentialDecay, InverseTimeDecay)}


def from_config(config: dict) -> Transform:
    """The transformation a ``config()`` describes (the inverse of ``Transform.config``)."""
    config = dict(config)
    kind = config.pop("kind", None)
    if kind == "Chain":
        return Chain(*(from_config(t) for t in config["transforms"]))
    cls = OPTIMISERS.get(kind) or TRANSFORMS.get(kind)
    if cls is None:
        raise ValueError(f"optimizer kind must be one of {sorted(OPTIMISERS | TRANSFORMS) + ['Chain']}, got {kind!r}")
    if isinstance(config.get("lr"), dict):
        schedule = dict(config["lr"])
        name = schedule.pop("kind", None)
        if name not in SCHEDULES:
            raise ValueError(f"schedule kind must be one of {sorted(SCHEDULES)}, got {name!r}")
        config["lr"] = SCHEDULES[name](**schedule)
    return cls(**config)
