"""One keyed stream: the library's model for it, and its whole state.

A key is a *supervised* stream (events with features x) or a *forecasting*
stream (events with a value), fixed by its first event.  Both hold the same
library classes as the river estimators, so a key learns exactly what
``RNNRegressor`` or ``RNNForecaster`` would:

* Supervised: the inputs are the stream's feature names in a fixed order
  (``model.features`` from the settings, or else the sorted names of the
  key's first event); every later event must carry exactly those names
  (``unknown_feature`` / ``missing_feature`` otherwise).  With the default
  squared error on an identity readout, each output is a
  ``HybridRegressor`` on the estimators' ``FeatureSpace`` (features
  standardised online, and their changes); with a log-loss or cross-entropy
  readout, or ``model.hybrid`` off, the key is the bare network, fed x as it
  comes.
* Forecasting: ``value`` is one number or one per channel (the width is fixed
  by the first event).  Each channel is a ``HybridForecaster``; a reply
  carries the next H values of every channel, and ``loss`` is the mean
  absolute error of the previous one-step forecast.

``snapshot()`` is the stream's whole state as named arrays and a JSON header;
``restore`` inverts it.  Nothing here changes state until the event has been
checked.
"""

from __future__ import annotations

import numpy as np

from streamrnn.estimators.features import FeatureSpace
from streamrnn.hybrid.scale import MAX_ABS
from streamrnn.hybrid.stateful import prefixed, unprefixed
from streamrnn.model import COUNTERS
from streamrnn.state import StateError, model_state

from .protocol import ForecastEvent, ProtocolError, SupervisedEvent


def _width_error(what: str, expected: int, got: int) -> ProtocolError:
    return ProtocolError("wrong_width", f"{what} must have {expected} values for this key, got {got}")


def bounded_square(err: float) -> float:
    """err² with err bounded to ±MAX_ABS first (a wild target gives a large finite loss); NaN stays NaN."""
    if err > MAX_ABS:
        err = MAX_ABS
    elif err < -MAX_ABS:
        err = -MAX_ABS
    return err * err


def squared_loss(predictions, targets) -> float:
    """The reply's loss: half the sum of the bounded squared errors."""
    loss = 0.0
    for p, target in zip(predictions, targets):
        loss += bounded_square(p - target)
    return loss * 0.5


class Stream:
    kind = ""

    def __init__(self):
        self.events = 0  # events this key has taken in: its position, reported as "step"

    def networks(self) -> list:
        """The stream's recurrent networks (OnlineRNN), for counters and health."""
        raise NotImplementedError

    def layout(self) -> tuple:
        """What decides the size of its state: streams of one layout hold the same arrays (their JSON
        headers may differ by a few bytes)."""
        raise NotImplementedError

    @property
    def counters(self) -> dict[str, int]:
        """The networks' counters summed, and ``bounded``: values bounded before learning."""
        out = dict.fromkeys(COUNTERS, 0)
        for net in self.networks():
            for name in COUNTERS:
                out[name] += net.counters[name]
        out["bounded"] = self.bounded()
        return out

    def bounded(self) -> int:
        return 0

    def release(self) -> None:
        """The key leaves memory (evicted, or its table closed): what it holds outside itself is let go."""

    def health(self) -> dict:
        """The first network's diagnostics, and the component weights where there are any."""
        nets = self.networks()
        out = nets[0].diagnostics() if nets else {}
        weights = self.weights()
        if weights:
            out["weights"] = weights
        return out

    def weights(self) -> dict:
        return {}


class SupervisedStream(Stream):
    kind = "supervised"

    def __init__(self, template, features: list[str]):
        super().__init__()
        self.features = list(features)
        self.outputs = template.settings.outputs
        self.hybrid = template.hybrid
        n = len(self.features)
        if self.hybrid:
            self.cores = [template.regressor(n) for _ in range(self.outputs)]
            self.space = FeatureSpace()  # what RNNRegressor reads its features with
            self.space.add(self.features)
        else:
            self.model = template.build(n, self.outputs)

    @staticmethod
    def features_of(template, event: SupervisedEvent) -> list:
        """A new key's feature names: ``model.features`` from the settings, or its first event's, sorted."""
        return template.settings.features or sorted(event.x)

    @classmethod
    def create(cls, template, event: SupervisedEvent) -> "SupervisedStream":
        features = cls.features_of(template, event)
        if not features:
            raise ProtocolError("missing_feature", "the first event of a key needs at least one feature in x")
        pool = template.pool(len(features))
        if pool is not None:  # a row of the template's pool (``pooled``)
            from .pooled import PooledStream

            return PooledStream.new(pool, features)
        return cls(template, features)

    def layout(self) -> tuple:
        return self.kind, self.hybrid, len(self.features), self.outputs

    def networks(self) -> list:
        if not self.hybrid:
            return [self.model]
        return [c.corrector.rnn for c in self.cores if c.corrector is not None]

    def weights(self) -> dict:
        return self.cores[0].weights() if self.hybrid else {}

    def bounded(self) -> int:
        return sum(c.bounded for c in self.cores) if self.hybrid else 0

    def _inputs(self, x: dict) -> list[float]:
        try:
            if len(x) == len(self.features):
                return [x[name] for name in self.features]
        except KeyError:
            pass
        unknown = sorted(set(x) - set(self.features))
        if unknown:
            raise ProtocolError("unknown_feature", f"x has features this key does not know: {unknown[:5]}; "
                                f"its features are {self.features[:20]}")
        missing = [name for name in self.features if name not in x]
        raise ProtocolError("missing_feature", f"x lacks features of this key: {missing[:5]}")

    def apply(self, event: SupervisedEvent) -> tuple:
        """(prediction, loss): predict from x, learn when y came, advance the state."""
        x = self._inputs(event.x)
        y = event.y
        if y is not None:
            y = [y] if isinstance(y, float) else y
            if len(y) != self.outputs:
                raise _width_error("y", self.outputs, len(y))
        if not self.hybrid:
            try:
                result = self.model.step(x, y)
            except ValueError as err:  # the engine refused it and changed nothing
                raise ProtocolError("invalid_value", str(err)) from None
            o, loss = result.prediction, result.loss
        else:
            space = self.space  # x's names were checked above: read it once, with no memo for a second read
            raw = space.raw(event.x)
            z, dx = space.scale(raw)
            loss = None
            if y is None:
                o = [core.predict(z, dx) for core in self.cores]
            else:  # the outputs' models are independent: each predicts and learns in one pass
                o = [core.predict_learn(z, dx, target) for core, target in zip(self.cores, y)]
                loss = squared_loss(o, y)
            space.learn(event.x, raw)
        self.events += 1
        return (o[0] if self.outputs == 1 else o), loss

    def snapshot(self, copy: bool = True):
        header = {"kind": self.kind, "events": self.events, "features": self.features, "hybrid": self.hybrid}
        if not self.hybrid:
            arrays, header["model"] = model_state(self.model, copy)
            return arrays, header
        arrays: dict = {}
        self.space.state_into(arrays, "features.", copy)
        for i, core in enumerate(self.cores):
            core.state_into(arrays, f"out{i}.", copy)
        return arrays, header

    @classmethod
    def restore(cls, template, arrays, header) -> "SupervisedStream":
        pool = template.pool(len(header["features"])) if header.get("hybrid") else None
        if pool is not None:  # a row of the template's pool (``pooled``)
            from .pooled import PooledStream

            return PooledStream.restore_into(pool, arrays, header)
        stream = cls(template, header["features"])
        if bool(header.get("hybrid", False)) != stream.hybrid:
            raise StateError("the key was saved with another loss or readout")
        if stream.hybrid:
            stream.space.load(unprefixed(arrays, "features."))
            for i, core in enumerate(stream.cores):
                core.load(unprefixed(arrays, f"out{i}."))
        else:
            stream.model.load_state_dict(arrays, header["model"])
        stream.events = int(header["events"])
        return stream


class ForecastStream(Stream):
    kind = "forecast"

    def __init__(self, template, width: int, scalar: bool):
        super().__init__()
        self.width, self.scalar = width, scalar
        self.horizon = template.horizon
        self.channels = [template.forecaster() for _ in range(width)]

    def layout(self) -> tuple:
        return self.kind, self.width, self.scalar

    @classmethod
    def create(cls, template, event: ForecastEvent) -> "ForecastStream":
        value = event.value
        return cls(template, 1 if isinstance(value, float) else len(value), isinstance(value, float))

    def networks(self) -> list:
        return [c.corrector.rnn for c in self.channels if c.corrector is not None]

    def weights(self) -> dict:
        return self.channels[0].weights(0)

    def bounded(self) -> int:
        return sum(c.bounded for c in self.channels)

    def apply(self, event: ForecastEvent) -> tuple:
        """(forecast, loss): learn this value, forecast the next H; loss = |one-step error| of the last forecast."""
        value = event.value
        v = np.array([value] if isinstance(value, float) else value)
        if v.shape[0] != self.width or isinstance(value, float) != self.scalar:
            raise _width_error("value", self.width, v.shape[0]) if v.shape[0] != self.width else ProtocolError(
                "wrong_width", f"value must be {'a number' if self.scalar else 'a list'} for this key")
        for channel, y in zip(self.channels, v):
            try:
                channel._check(y, None)
            except ValueError as err:
                raise ProtocolError("invalid_value", str(err)) from None
        loss = None
        if self.events:
            previous = np.array([c.forecast(1)[0] for c in self.channels])
            loss = float(np.mean(np.abs(previous - v)))
        for channel, y in zip(self.channels, v):
            channel.learn(float(y))
        self.events += 1
        return self.forecast(), loss

    def forecast(self) -> list:
        """The next H values of every channel, without moving the stream's state."""
        paths = [c.forecast(self.horizon) for c in self.channels]
        if self.scalar:
            return [float(f) for f in paths[0]]
        return [[float(p[h]) for p in paths] for h in range(self.horizon)]

    def snapshot(self, copy: bool = True):
        arrays, headers = {}, []
        for i, channel in enumerate(self.channels):
            a, h = channel.state_dict(copy)
            arrays.update(prefixed(f"ch{i}.", a))
            headers.append(h)
        header = {"kind": self.kind, "events": self.events, "width": self.width, "scalar": self.scalar,
                  "channels": headers}
        return arrays, header

    @classmethod
    def restore(cls, template, arrays, header) -> "ForecastStream":
        stream = cls(template, int(header["width"]), bool(header["scalar"]))
        for i, channel in enumerate(stream.channels):
            channel.load_state_dict(unprefixed(arrays, f"ch{i}."), header["channels"][i])
        stream.events = int(header["events"])
        return stream


KINDS = {SupervisedEvent: SupervisedStream, ForecastEvent: ForecastStream}
BY_NAME = {cls.kind: cls for cls in KINDS.values()}


def restore(template, arrays: dict, header: dict) -> Stream:
    """The stream a ``snapshot`` describes (StateError/KeyError/ValueError if it does not fit)."""
    return BY_NAME[header["kind"]].restore(template, arrays, header)
