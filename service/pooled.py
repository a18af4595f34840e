"""A supervised key held as a row of its template's ``RegressorPool``: no model objects of its own.

Where the keys' models can be rows (the hybrid regressor with one output,
its corrector on BPTT(h; h') or none, the kernels on: ``ModelTemplate.pool``),
a supervised key is a ``PooledStream``: its feature names, its event count
and a row number.  It learns exactly what a ``SupervisedStream`` learns, and
its ``snapshot`` is the same arrays and header, so checkpoints, digests and
restores do not tell them apart.  The worker steps the next events of
distinct pooled keys in one call (``Worker``); ``apply`` takes one event,
on the row when its features are plain numbers, else on the row's objects
(made for it and written back).
"""

from __future__ import annotations

from streamrnn.hybrid.scale import MAX_ABS
from streamrnn.hybrid.stateful import unprefixed

from .protocol import SupervisedEvent
from .streams import SupervisedStream, _width_error, bounded_square


def plain(x: dict, features: list) -> list | None:
    """x's values in the key's feature order when they are all numbers a row reads as they are (float or
    int within +-MAX_ABS, and exactly the key's names), else None: the event is one for the objects."""
    if len(x) != len(features):
        return None
    u = []
    for name in features:
        v = x.get(name)
        if not ((type(v) is float or type(v) is int) and -MAX_ABS <= v <= MAX_ABS):
            return None
        u.append(v)
    return u


def target(event: SupervisedEvent) -> float | None:
    """The event's one target (a number or a list of one), None without one; ProtocolError otherwise."""
    y = event.y
    if y is None or isinstance(y, float):
        return y
    if len(y) != 1:
        raise _width_error("y", 1, len(y))
    return y[0]


def loss_of(prediction: float, y: float | None) -> float | None:
    """The reply's loss for one output, None without a target: ``squared_loss`` of one error, bit for bit."""
    return None if y is None else bounded_square(prediction - y) * 0.5


class PooledStream(SupervisedStream):
    def __init__(self, pool, features: list[str], row: int):  # not SupervisedStream's: no objects of its own
        self.events = 0
        self.features = features
        self.outputs = 1
        self.hybrid = True
        self.pool = pool
        self.row = row

    @classmethod
    def new(cls, pool, features: list[str]) -> "PooledStream":
        """A new key: a new row of ``pool``, a fresh model's state."""
        return cls(pool, list(features), pool.add())

    @classmethod
    def restore_into(cls, pool, arrays: dict, header: dict) -> "PooledStream":
        """A key's ``snapshot`` read back into a new row of ``pool`` (StateError, and no row taken, if it does
        not fit): loaded as ``SupervisedStream.restore`` loads it, into objects the pool keeps for that."""
        def load(space, model):
            space.load(unprefixed(arrays, "features."))
            model.load(unprefixed(arrays, "out0."))

        stream = cls(pool, list(header["features"]), pool.add_loaded(load))
        stream.events = int(header["events"])
        return stream

    def release(self) -> None:
        """The key leaves memory: its row is free for another."""
        if self.row is not None:
            self.pool.remove(self.row)
            self.row = None

    def _objects(self, view: bool = False) -> SupervisedStream:
        """The key as a ``SupervisedStream`` of its own (a copy of the row, whose space names its columns by the
        key's features: it reads an event's x as the key's own objects would), or with ``view`` one whose
        state to read at once: the pool's pair of objects, which the next view loads again
        (``RegressorPool.view``), its columns named x0, x1, ... (not for events)."""
        stream = SupervisedStream.__new__(SupervisedStream)
        stream.events, stream.features, stream.outputs, stream.hybrid = self.events, self.features, 1, True
        stream.space, core = self.pool.view(self.row) if view else self.pool.get(self.row, self.features)
        stream.cores = [core]
        return stream

    def networks(self) -> list:
        return self._objects().networks()

    def weights(self) -> dict:
        return self._objects(view=True).weights()

    def health(self) -> dict:
        return self._objects(view=True).health()

    @property
    def counters(self) -> dict[str, int]:
        return self.pool.counters_of(self.row)

    def bounded(self) -> int:
        return self.counters["bounded"]

    def apply(self, event: SupervisedEvent) -> tuple:
        u = plain(event.x, self.features)
        if u is None:  # names to refuse, or values to read as the space reads them: on the objects
            stream = self._objects()
            result = stream.apply(event)
            self.pool.put(self.row, stream.space, stream.cores[0])
            self.events = stream.events
            return result
        y = target(event)
        prediction = self.pool.learn_one(self.row, u, y)
        if self.pool.errors:  # the row's state cannot take it: as the objects' ValueError
            raise ValueError(self.pool.errors[0])
        self.events += 1
        return prediction, loss_of(prediction, y)

    def snapshot(self, copy: bool = True):
        """``SupervisedStream.snapshot``, always of copies (the arrays are the pool's viewing pair's)."""
        return self._objects(view=True).snapshot(True)

