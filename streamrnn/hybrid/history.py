"""The recent values of a series in a fixed-size ring buffer (constant memory, one array to save)."""

from __future__ import annotations

import numpy as np

from .stateful import Stateful


class History(Stateful):
    """The newest ``capacity`` values, the number seen, and the range of all of them.

    >>> h = History(3)
    >>> for y in (1.0, 2.0, 3.0, 4.0):
    ...     h.push(y)
    >>> h.window(3).tolist(), h.lag(0), h.lag(2), h.n
    ([2.0, 3.0, 4.0], 4.0, 2.0, 4)
    """

    _state = ("buffer", "n", "lo", "hi", "positive")

    def __init__(self, capacity: int):
        self.buffer = np.zeros(max(int(capacity), 1))
        self.n = 0
        self.lo = self.hi = 0.0  # range of every value seen (meaningful once n > 0)
        self.positive = True  # every value so far > 0

    @property
    def capacity(self) -> int:
        return len(self.buffer)

    def push(self, y: float) -> None:
        self.buffer[self.n % len(self.buffer)] = y
        if self.n == 0:
            self.lo = self.hi = y
        else:
            self.lo, self.hi = min(self.lo, y), max(self.hi, y)
        self.positive = self.positive and y > 0.0
        self.n += 1

    @property
    def last(self) -> float:
        return float(self.buffer[(self.n - 1) % len(self.buffer)])

    def lag(self, k: int) -> float:
        """The value k steps before the newest (k = 0: the newest); needs k < min(n, capacity)."""
        return float(self.buffer[(self.n - 1 - k) % len(self.buffer)])

    @property
    def size(self) -> int:
        """How many values the buffer holds now."""
        return min(self.n, len(self.buffer))

    def window(self, k: int) -> np.ndarray:
        """The newest k values, oldest first (k <= size)."""
        idx = (self.n - k + np.arange(k)) % len(self.buffer)
        return self.buffer[idx]
