"""The contract between a model and its learner.

A learner turns the network's per-step activations into gradients.  The
model calls, for every step that advances the state,

    due = learner.step(net, delta, grad)

after ``net.forward`` and before ``net.commit``, with ``delta`` = dL_t/da_t
(None when the step has no target).  When an update is due the learner has
written dL/dtheta into the flat vector ``grad`` and returns True.

A learner object is a specification, as an optax transformation is:
``init(net)`` returns a fresh copy bound to one network that owns the state
(``bind`` is the same), so one spec can serve many models.  Its whole state is
``state_arrays()``, a mapping of named numpy arrays.  A finite sequence ends
explicitly: ``end_sequence(net, grad)`` writes the gradient of what the
sequence accumulated and returns True (epochwise BPTT), or returns False for
the online learners, which have already learned on every step.  Learners read
the network only through the cells' contract (``streamrnn.cells.base``).

Each state array declares its layout (``layouts()``), so that growing a
model (``streamrnn.grow``) and checkpoints need no knowledge of the learner:

* ``"theta"`` -- the last axis follows theta's layout from its start (RTRL's
  sensitivities dh/dtheta, UORO's theta~): a new input is a new zero column of
  W_0's block, and an array as long as theta also gets the new readout rows;
* ``"inputs0"`` -- the last axis follows layer 0's v = [h; x; 1] (a BPTT
  tape's recorded v_0, SnAp-1's dh_i/dA_0[i, :]): the new input's column is 0;
* ``"outputs"`` -- the last axis holds one entry per readout output (a tape's
  delta): new outputs are appended, at 0;
* ``"fixed"`` -- neither new inputs nor new outputs change it.

``derived(net, arrays, h)`` names the state arrays that follow from the others
and the network's state h_t, with their values: a saved state leaves out those
that equal what they hold, and loading computes them again (``streamrnn.state``).

A learner registers itself by subclassing with a ``name``: ``REGISTRY[name]``
is its class, and ``settings()`` lists its constructor's arguments with their
types and defaults, which is all a configuration needs to build it (the
daemon's ``[model.learner]`` table is ``kind = name`` plus these).
"""

from __future__ import annotations

import copy
import inspect
import typing

import numpy as np

#: name -> learner class, filled as learner classes are defined
REGISTRY: dict[str, type] = {}


class Learner:
    #: the learner's name in configurations ("" for an abstract class: not registered)
    name = ""
    #: True when the learner needs a finite sequence (``end_sequence``) to give gradients
    epochwise = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            if cls.name in REGISTRY:
                raise ValueError(f"a learner named {cls.name!r} is registered already ({REGISTRY[cls.name]!r})")
            REGISTRY[cls.name] = cls

    @classmethod
    def settings(cls) -> dict[str, tuple[type, object]]:
        """The constructor's arguments: name -> (type, default)."""
        if cls.__init__ is object.__init__:
            return {}
        hints = typing.get_type_hints(cls.__init__)
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return {name: (hints.get(name, object), p.default)
                for name, p in inspect.signature(cls.__init__).parameters.items() if name != "self" and p.kind in named}

    def init(self, net) -> "Learner":
        """A copy of this spec bound to ``net``, with its state allocated (zero, or seeded)."""
        bound = copy.copy(self)
        bound._allocate(net)
        return bound

    bind = init

    def end_sequence(self, net, grad: np.ndarray) -> bool:
        """Close a finite sequence; True when ``grad`` now holds an update (see the module)."""
        return False

    def _allocate(self, net) -> None:
        raise NotImplementedError

    def step(self, net, delta: np.ndarray | None, grad: np.ndarray) -> bool:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget everything carried between steps (a new sequence, or after a non-finite step)."""
        for array in self.state_arrays().values():
            array[...] = 0

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The learner's whole state as named arrays (views: writing them restores state)."""
        raise NotImplementedError

    def layouts(self) -> dict[str, str]:
        """The layout of each state array: "theta", "inputs0", "outputs" or "fixed" (see the module)."""
        raise NotImplementedError

    def derived(self, net, arrays: dict[str, np.ndarray], h: np.ndarray) -> dict[str, np.ndarray]:
        """The state arrays that follow from the others in ``arrays`` and the state h_t (see the module)."""
        return {}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore state saved by ``state_arrays``; ValueError on a missing or misshapen array."""
        own = self.state_arrays()
        for name, target in own.items():
            if name not in arrays:
                raise ValueError(f"learner state is missing array {name!r}")
            if arrays[name].shape != target.shape:
                raise ValueError(
                    f"learner array {name!r} has shape {arrays[name].shape}, expected {target.shape}"
                )
        for name, target in own.items():
            target[...] = arrays[name]

    def config(self) -> dict:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "kind")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.config() == other.config()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.config().items())))


class LayerSensitivities(Learner):
    """A learner whose whole state is sensitivity arrays, per layer (RTRL, SnAp-1)."""

    def sensitivity_norm(self) -> float:
        """Frobenius norm of the sensitivities kept, ||dh/dtheta||."""
        return float(np.sqrt(sum(np.vdot(S, S) for S in self.state_arrays().values())))
