"""One keyed stream: a network with what the stream needs around it, and its whole state.

A key is a *supervised* stream (events with features x) or a *forecasting*
stream (events with a value), fixed by its first event.

* Supervised: the network's inputs are the stream's feature names in a fixed
  order: ``model.features`` from the settings, or else the sorted names of the
  key's first event.  Every later event must carry exactly those names
  (``unknown_feature`` / ``missing_feature`` otherwise).  x and y go to the
  network as they are: scale them upstream.
* Forecasting: ``value`` is one number or one per channel (the width is fixed
  by the first event).  Each channel is standardised
  online (running mean and variance) and the network predicts the *change* to
  the next value: its forecast is the newest value plus a learned correction,
  so zero output is exactly persistence.  On value v_t it learns from
  (x(v_{t-1}) -> (v_t - v_{t-1}) / std), then forecasts H steps from v_t by
  feeding each forecast back in (on a scratch copy: the stream's state does
  not move).

``snapshot()`` is the stream's whole state as named arrays and a JSON header
(the model's ``state_dict`` plus the stream's own fields); ``restore`` inverts it.
Nothing here changes state until the event has been checked.
"""

from __future__ import annotations

import numpy as np


from .protocol import ForecastEvent, ProtocolError, SupervisedEvent


CLIP = 5.0  # standardised inputs are clipped to +-CLIP: early on the variance is barely known


class Scale:
    """Welford's running mean and variance per channel, to standardise a series as it comes.

    (The estimators' ``RunningMoments`` does the same for growing feature sets; this one
    is fixed-width and keeps exactly the three arrays a checkpoint stores.)
    """

    def __init__(self, width: int):
        self.count, self.mean, self.m2 = 0, np.zeros(width), np.zeros(width)
        self.std = np.ones(width)

    def update(self, v: np.ndarray) -> None:
        self.count += 1
        delta = v - self.mean
        self.mean += delta / self.count
        delta *= v - self.mean
        self.m2 += delta
        self._refresh()

    def _refresh(self) -> None:
        var = self.m2 / max(self.count, 1)
        var[var <= 0.0] = 1.0  # std 1 until two values differed
        self.std = np.sqrt(var, out=var)

    def scale(self, v: np.ndarray) -> np.ndarray:
        """(v - mean) / std, clipped to +-CLIP."""
        z = v - self.mean
        z /= self.std
        np.minimum(z, CLIP, out=z)
        return np.maximum(z, -CLIP, out=z)

    def arrays(self) -> dict:
        return {"stream.count": np.array(self.count), "stream.mean": self.mean.copy(), "stream.m2": self.m2.copy()}

    def load(self, arrays: dict) -> None:
        self.count = int(arrays["stream.count"])
        self.mean = np.array(arrays["stream.mean"], dtype=float)
        self.m2 = np.array(arrays["stream.m2"], dtype=float)
        self._refresh()


def _width_error(what: str, expected: int, got: int) -> ProtocolError:
    return ProtocolError("wrong_width", f"{what} must have {expected} values for this key, got {got}")


class Stream:
    kind = ""

    def __init__(self, model):
        self.model = model
        self.events = 0  # events this key has taken in: its position, reported as "step"

    def snapshot(self) -> tuple[dict, dict]:
        arrays, header = self.model.state_dict()
        return arrays, {"kind": self.kind, "events": self.events, "model": header}

    def _load(self, arrays: dict, header: dict) -> None:
        own = {k: v for k, v in arrays.items() if not k.startswith("stream.")}
        self.model.load_state_dict(own, header["model"])
        self.events = int(header["events"])


class SupervisedStream(Stream):
    kind = "supervised"

    def __init__(self, template, features: list[str]):
        super().__init__(template.build(len(features), template.settings.outputs))
        self.features = list(features)
        self.outputs = template.settings.outputs

    @classmethod
    def create(cls, template, event: SupervisedEvent) -> "SupervisedStream":
        features = template.settings.features or sorted(event.x)
        if not features:
            raise ProtocolError("missing_feature", "the first event of a key needs at least one feature in x")
        return cls(template, features)

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
        try:
            result = self.model.step(x, y)
        except ValueError as err:  # the engine refused it and changed nothing
            raise ProtocolError("invalid_value", str(err)) from None
        self.events += 1
        o = result.prediction
        return (float(o[0]) if self.outputs == 1 else o.tolist()), result.loss

    def snapshot(self):
        arrays, header = super().snapshot()
        header["features"] = self.features
        return arrays, header

    @classmethod
    def restore(cls, template, arrays, header) -> "SupervisedStream":
        stream = cls(template, header["features"])
        stream._load(arrays, header)
        return stream


class ForecastStream(Stream):
    kind = "forecast"

    def __init__(self, template, width: int, scalar: bool):
        super().__init__(template.build(width, width, regression=True))
        self.width, self.scalar = width, scalar
        self.horizon = template.horizon
        self.moments = Scale(width)
        self.last: np.ndarray | None = None
        self._x: np.ndarray | None = None  # scale(last): the newest forecast's input, the next step's too

    @classmethod
    def create(cls, template, event: ForecastEvent) -> "ForecastStream":
        value = event.value
        return cls(template, 1 if isinstance(value, float) else len(value), isinstance(value, float))

    def apply(self, event: ForecastEvent) -> tuple:
        """(forecast, loss): learn to predict this value from the previous one, forecast the next H."""
        value = event.value
        v = np.array([value] if isinstance(value, float) else value)
        if v.shape[0] != self.width or isinstance(value, float) != self.scalar:
            raise _width_error("value", self.width, v.shape[0]) if v.shape[0] != self.width else ProtocolError(
                "wrong_width", f"value must be {'a number' if self.scalar else 'a list'} for this key")
        loss = None
        if self.last is not None:
            x = self._x if self._x is not None else self.moments.scale(self.last)
            result = self.model.step(x, (v - self.last) / self.moments.std)
            loss = result.loss
        self.moments.update(v)
        self.last = v
        self.events += 1
        return self.forecast(), loss

    def forecast(self) -> list:
        """The next H values from the newest one, without moving the stream's state."""
        std = self.moments.std
        # one step on the live model: the next event's step reuses this forward pass
        x = self._x = self.moments.scale(self.last)
        out = [self.last + std * self.model.predict(x)]
        if self.horizon > 1:  # feed each forecast back in, on a copy of the state
            values = [self.last]

            def next_input(k, change):
                if change is not None:  # the network predicts the standardised change
                    values.append(values[-1] + std * change)
                return self.moments.scale(values[-1])

            changes = self.model.rollout(next_input, self.horizon)
            out = values[1:] + [values[-1] + std * changes[-1]]
        return [float(f[0]) for f in out] if self.scalar else [f.tolist() for f in out]

    def snapshot(self):
        arrays, header = super().snapshot()
        arrays.update(self.moments.arrays())
        if self.last is not None:
            arrays["stream.last"] = self.last.copy()
        header.update(width=self.width, scalar=self.scalar)
        return arrays, header

    @classmethod
    def restore(cls, template, arrays, header) -> "ForecastStream":
        stream = cls(template, int(header["width"]), bool(header["scalar"]))
        stream._load(arrays, header)
        stream.moments.load(arrays)
        stream.last = np.array(arrays["stream.last"], dtype=float) if "stream.last" in arrays else None
        return stream


KINDS = {SupervisedEvent: SupervisedStream, ForecastEvent: ForecastStream}
BY_NAME = {cls.kind: cls for cls in KINDS.values()}


def restore(template, arrays: dict, header: dict) -> Stream:
    """The stream a ``snapshot`` describes (StateError/KeyError/ValueError if it does not fit)."""
    return BY_NAME[header["kind"]].restore(template, arrays, header)
