"""The state contract of every forecasting part: its learned state is a flat dict of named arrays.

A part lists the attributes that make up its state in ``_state``; numbers
(floats, ints, bools) travel as 0-d arrays and come back as Python numbers.
Parts made of parts list those in ``_parts``; their arrays are prefixed with
the part's name and a dot.  ``state()`` copies, ``load`` checks every array
before it changes anything, so a file for another configuration raises
``StateError`` and leaves the object as it was.

Matrices a part keeps exactly symmetric (RLS inverses, listed in
``_symmetric``) are saved as their upper triangles, ``<name>_upper``, when
they are symmetric bit for bit, and mirrored back on load: half the bytes,
the same bits.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..state import StateError


def prefixed(prefix: str, arrays: dict) -> dict:
    """``arrays`` with every name prefixed (a part's arrays inside its owner's)."""
    return {f"{prefix}{k}": v for k, v in arrays.items()}


def unprefixed(arrays: dict, prefix: str) -> dict:
    """The arrays whose names start with ``prefix``, without it (``prefixed``'s inverse)."""
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


@functools.lru_cache(maxsize=64)
def _triangle(d: int) -> tuple[np.ndarray, np.ndarray]:
    """Where the entries of a d x d upper triangle, row by row, sit in the flat matrix, and where their mirror
    images do (a daemon saves thousands of matrices a second)."""
    i, j = np.triu_indices(d)
    return i * d + j, j * d + i


def upper(a: np.ndarray) -> np.ndarray | None:
    """The upper triangles (row by row) of a stack of square float64 matrices, or None unless every one is
    symmetric bit for bit (0.0 facing -0.0 is not; a NaN facing the same NaN bits is)."""
    if a.dtype != np.float64 or a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        return None
    d = a.shape[-1]
    flat = a.reshape(*a.shape[:-2], d * d)
    at, mirror = _triangle(d)
    triangles = flat.take(at, axis=-1)
    return triangles if triangles.tobytes() == flat.take(mirror, axis=-1).tobytes() else None


def mirrored(triangles: np.ndarray, name: str) -> np.ndarray:
    """``upper``'s inverse: the symmetric matrices whose upper triangles these are (StateError if the
    last axis is no triangle's length)."""
    m = triangles.shape[-1] if triangles.ndim else -1
    d = (math.isqrt(8 * m + 1) - 1) // 2 if m >= 0 else -1
    if d < 0 or d * (d + 1) // 2 != m:
        raise StateError(f"state array {name!r} has shape {triangles.shape}: its last axis is not a triangle's")
    at, mirror = _triangle(d)
    out = np.empty(triangles.shape[:-1] + (d * d,), dtype=np.float64)
    out[..., at] = triangles
    out[..., mirror] = triangles
    return out.reshape(triangles.shape[:-1] + (d, d))


class Stateful:
    _state: tuple[str, ...] = ()
    _parts: tuple[str, ...] = ()
    #: arrays whose length may differ from the current one (they grow with the features)
    _growable: tuple[str, ...] = ()
    #: square matrices (or stacks of them) in ``_state`` that the part keeps symmetric bit for bit
    _symmetric: tuple[str, ...] = ()

    def state(self) -> dict[str, np.ndarray]:
        """Every learned array and number, by name (copies)."""
        out: dict[str, np.ndarray] = {}
        self.state_into(out, "")
        return out

    def state_into(self, out: dict, prefix: str, copy: bool = True) -> None:
        """``state()`` written into ``out`` with every name prefixed: a whole tree of parts in one
        dict, without one dict per part (a daemon checkpoints thousands of keys at a time).

        ``copy=False`` gives the live arrays themselves (numbers as 0-d arrays): only for memory
        that nothing changes while they are read, such as a forked checkpoint writer's.
        """
        take = np.array if copy else np.asarray
        for name in self._state:
            value = getattr(self, name)
            triangles = upper(value) if name in self._symmetric else None
            if triangles is None:
                out[prefix + name] = take(value)
            else:  # a copy already
                out[f"{prefix}{name}_upper"] = triangles
        for part in self._parts:
            child = getattr(self, part)
            if child is not None:
                child.state_into(out, f"{prefix}{part}.", copy)

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore ``state()``'s arrays; StateError (and nothing changed) if they do not fit."""
        self._plan(arrays)()

    def _plan(self, arrays: dict[str, np.ndarray]):
        """Check ``arrays`` and return a function that applies them (two phases: check all, then write)."""
        values = {}
        arrays = self._mirrored(arrays)
        for name in self._state:
            if name not in arrays:
                raise StateError(f"{type(self).__name__} state has no array {name!r}")
            current = getattr(self, name)
            given = np.asarray(arrays[name])
            if isinstance(current, np.ndarray):
                if given.ndim != current.ndim or (name not in self._growable and given.shape != current.shape):
                    raise StateError(f"state array {name!r} has shape {given.shape}, expected {current.shape}")
                value = np.array(given, dtype=current.dtype, copy=True)
                finite = value.dtype.kind != "f" or np.isfinite(value).all()
            elif given.ndim != 0:
                raise StateError(f"state value {name!r} must be a number, got shape {given.shape}")
            else:
                kind = type(current) if isinstance(current, (bool, int, float)) else float
                value = kind(given.item())
                finite = not isinstance(value, float) or math.isfinite(value)
            if not finite:
                raise StateError(f"state array {name!r} is not finite")
            values[name] = value
        applies = []
        if self._parts:
            by_part: dict[str, dict] = {}  # each part's arrays, in one pass over them (not one per part)
            for name, value in arrays.items():
                head, dot, rest = name.partition(".")
                if dot:
                    by_part.setdefault(head, {})[rest] = value
            for part in self._parts:
                child = getattr(self, part)
                if child is not None:
                    applies.append(child._plan(by_part.get(part, {})))

        def apply():
            for name, value in values.items():
                setattr(self, name, value)
            for f in applies:
                f()
            self._loaded()

        return apply

    def _mirrored(self, arrays: dict) -> dict:
        """``arrays`` with each symmetric matrix saved as a triangle (``<name>_upper``) mirrored back."""
        for name in self._symmetric:
            if name not in arrays and f"{name}_upper" in arrays:
                arrays = {**arrays, name: mirrored(np.asarray(arrays[f"{name}_upper"]), f"{name}_upper")}
        return arrays

    def _loaded(self) -> None:
        """Recompute caches after ``load`` (nothing by default)."""
