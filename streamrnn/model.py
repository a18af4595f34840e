"""OnlineRNN: a network, a loss, a learner and an optimiser, stepped one event at a time."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from . import state as state_io
from . import learners, optim
from .cells import Cell, Readout, cell_config, cell_from_config, check_size
from . import kernels as kernel_switch
from .diagnostics import diagnostics
from .kernels import NONFINITE, UPDATED
from .learners import RTRL, Learner
from .losses import LOSSES, Loss, SquaredError
from .network import Network
from .optim import Adam, Transform, clip_by_global_norm

#: float64's dtype: numpy hands out this one object for every native float64 array
_F64 = np.dtype(np.float64)
#: what a model counts, in ``OnlineRNN.counters``
COUNTERS = ("steps", "updates", "skipped", "clipped")

class Scratch:
    """Buffers a step writes and nothing reads once it is over, one of each name and shape: the gradient, the
    gradient handed to the optimiser at the last update (``OnlineRNN.gradient``), and the compiled step's
    working arrays (the recurrent Jacobian, BPTT's errors).

    Models that step one at a time, in one thread -- a daemon's thousands of keys of one configuration --
    can share one (``OnlineRNN(..., scratch=...)``) instead of holding two parameter-sized vectors each;
    ``gradient`` then shows the newest update of any of them.  A copy or an unpickled model gets its own.
    """

    def __init__(self):
        self._arrays: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}

    def array(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """The shared float64 array ``name`` of this shape (zeros when first made)."""
        array = self._arrays.get((name, shape))
        if array is None:
            array = self._arrays[(name, shape)] = np.zeros(shape)
        return array


def buffer(scratch: Scratch | None, name: str, *shape: int) -> np.ndarray:
    """A model's working array: from ``scratch`` when it shares one, else its own zeros."""
    return np.zeros(shape) if scratch is None else scratch.array(name, shape)


@dataclass(slots=True)  # slots, not frozen: a fifth of the cost of making one, on every step
class StepResult:
    """What one step gave: the prediction o_t made before learning, and L_t (None without target)."""

    prediction: np.ndarray
    loss: float | None


class OnlineRNN:
    """A recurrent network that learns on every step of an unbounded stream.

    Parameters
    ----------
    n_inputs
        Width of the input vector x_t.
    layers
        Recurrent layers, bottom first: ``(Elman(32),)`` or ``(Leaky(16, beta=0.3), Elman(8))``.
    readout
        ``Readout(outputs, activation)``; o_t = g(V h_t + c).
    loss
        ``SquaredError()`` (default), ``LogLoss()`` or ``CrossEntropy()``.
    learner
        ``RTRL()`` (default), ``TruncatedBPTT(h, h_prime)`` or ``EpochwiseBPTT()``.
    optimizer
        An optimiser transform, ``Adam(1e-3)`` by default; compose with ``Chain``.
    clip_norm
        Scale each gradient to at most this global norm before the optimiser (None: never).
    target_feedback
        Feed the previous step's target (or, where none came, the previous prediction)
        as extra inputs (Williams & Zipser's teacher forcing).  With a ``mask``, a
        masked-out output is fed back as 0, not as its prediction: a masked target
        is unknown, and 0 is the input's "no information" value.
    seed
        Seed of the generator that draws the initial weights.
    kernels
        Run each step as one compiled call where a kernel covers the model
        (``streamrnn.kernels``); None (default) follows STREAMRNN_KERNELS, which is on
        unless set to 0.  Both paths compute the same step to 1e-12 and share every array.
    scratch
        A ``Scratch`` to take the gradient buffers from, shared with other models that
        step one at a time in the same thread (None: this model's own).

    Examples
    --------
    >>> import numpy as np
    >>> from streamrnn import OnlineRNN, Elman, Readout, TruncatedBPTT
    >>> model = OnlineRNN(1, (Elman(8),), Readout(1), learner=TruncatedBPTT(5), seed=1)
    >>> xs = np.sin(np.arange(300) / 5.0)
    >>> losses = [model.step([x], [y]).loss for x, y in zip(xs[:-1], xs[1:])]
    >>> bool(np.mean(losses[-50:]) < np.mean(losses[:50]))
    True
    """

    def __init__(
        self,
        n_inputs: int,
        layers: Sequence[Cell],
        readout: Readout = Readout(1),
        loss: Loss | None = None,
        learner: Learner | None = None,
        optimizer: Transform | None = None,
        clip_norm: float | None = None,
        target_feedback: bool = False,
        seed: int = 0,
        kernels: bool | None = None,
        scratch: Scratch | None = None,
    ):
        check_size("n_inputs", n_inputs)
        if isinstance(layers, Cell):
            layers = (layers,)
        self.loss = loss if loss is not None else SquaredError()
        if not isinstance(self.loss, Loss):
            raise ValueError(f"loss must be a streamrnn loss, got {self.loss!r}")
        self.loss.check_output(readout.activation if isinstance(readout, Readout) else None)
        learner = learner if learner is not None else RTRL()
        if not isinstance(learner, Learner):
            raise ValueError(f"learner must be a streamrnn learner ({', '.join(c.__name__ for c in learners.REGISTRY.values())}), "
                             f"got {learner!r}")
        self.optimizer = optimizer if optimizer is not None else Adam(1e-3)
        if not isinstance(self.optimizer, Transform):
            raise ValueError(f"optimizer must be a streamrnn optimiser transform, got {self.optimizer!r}")
        if clip_norm is not None and not (isinstance(clip_norm, (int, float)) and clip_norm > 0):
            raise ValueError(f"clip_norm must be a number > 0 or None, got {clip_norm!r}")
        # the constructor's arguments, to rebuild this model when it is unpickled or copied
        self._spec = dict(
            n_inputs=n_inputs, layers=tuple(layers), readout=readout, loss=self.loss, learner=learner,
            optimizer=self.optimizer, clip_norm=clip_norm, target_feedback=target_feedback, seed=seed,
            kernels=kernels,
        )
        self.n_inputs = n_inputs
        self.clip_norm = clip_norm
        self.target_feedback = bool(target_feedback)
        self.seed = seed
        n_feedback = readout.outputs if self.target_feedback else 0
        self.network = Network(n_inputs + n_feedback, tuple(layers), readout)
        # the generator theta was drawn from, made on first use (``rng``); until then its state after the draw
        self._rng, self._rng_state = self.network.init_params_seeded(seed)
        self.learner = learner.bind(self.network)
        self.opt_state = self.optimizer.init(self.network.n_params)
        P = self.network.n_params
        self._buffers = scratch
        self.grad = buffer(scratch, "grad", P)
        # the gradient of the last update (``gradient``): introspection, never read by a step
        self._applied = buffer(scratch, "applied", P)
        self._x = np.zeros(self.network.n_inputs)  # [x_t; fed-back target]
        self._feedback = self._x[n_inputs:]
        self._x_shape, self._y_shape = (n_inputs,), (readout.outputs,)
        self._y_unchecked = type(self.loss).check_target is Loss.check_target
        self._pending = False  # the scratch buffers hold a forward pass for self._x
        self._scratch: Network | None = None  # a network to roll forecasts forward on
        # counters and the newest values, all part of the saved state
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.last_loss: float | None = None
        self.grad_norm = 0.0
        self.grad_norm_clipped = 0.0
        use = kernel_switch.enabled() if kernels is None else bool(kernels)
        self._kernel = kernel_switch.step_for(self) if use and kernel_switch.AVAILABLE else None

    @property
    def rng(self) -> np.random.Generator:
        """The generator theta was drawn from, where the draw left it (made on first use)."""
        if self._rng is None:
            self._rng = np.random.default_rng()
            self._rng.bit_generator.state = self._rng_state
        return self._rng

    @property
    def rng_state(self) -> dict:
        """``rng.bit_generator.state`` (a copy), without making the generator; assigning it sets the generator."""
        if self._rng is not None:
            return self._rng.bit_generator.state
        # the kept state may be shared (a copied first draw's): a copy, its nested dicts too
        return {k: dict(v) if isinstance(v, dict) else v for k, v in self._rng_state.items()}

    @rng_state.setter
    def rng_state(self, state: dict) -> None:
        if self._rng is not None:
            self._rng.bit_generator.state = state
        else:  # a state the generator refuses is refused now, not on first use
            self._rng_state = state_io.generator_state(state)

    # ----- input checks -----------------------------------------------------
    def _vector(self, name: str, value, width: int) -> np.ndarray:
        if type(value) is np.ndarray and value.dtype == np.float64:
            arr = value.reshape(-1)
        else:
            try:
                arr = np.asarray(value, dtype=float).reshape(-1)
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be {width} numbers, got {value!r}") from None
        if arr.shape[0] != width:
            raise ValueError(f"{name} must have {width} values, got {arr.shape[0]}")
        # one dot product on the hot path (inf or NaN anywhere makes it non-finite); the
        # element-wise test only then, since huge finite values can overflow it too
        if not math.isfinite(arr.dot(arr)) and not np.isfinite(arr).all():
            raise ValueError(f"{name} must be finite, got {arr.tolist()}")
        return arr

    def _target(self, y, mask):
        if y is None:
            if mask is not None:
                raise ValueError("mask given without a target y")
            return None, None
        if mask is not None:
            mask = np.asarray(mask, dtype=bool).reshape(-1)
            width = self.network.n_outputs
            if mask.shape[0] != width:
                raise ValueError(f"mask must have {width} values, got {mask.shape[0]}")
            try:  # masked-out targets may be anything numeric (NaN for "unknown")
                y = np.where(mask, np.asarray(y, dtype=float).reshape(-1), 0.0)
            except (TypeError, ValueError):
                raise ValueError(f"y must be {width} numbers, got {y!r}") from None
        yv = self._vector("y", y, self.network.n_outputs)
        self.loss.check_target(yv, mask)
        return yv, mask

    def _forward(self, x) -> np.ndarray:
        """Run the forward pass for x unless the scratch buffers already hold it."""
        x = self._vector("x", x, self.n_inputs)
        if not (self._pending and np.array_equal(x, self._x[: self.n_inputs])):
            self._x[: self.n_inputs] = x
            if self._kernel is not None:  # the arithmetic of the kernel's step, so a step after it agrees
                self._kernel.forward()
            else:
                self.network.forward(self._x)
            self._pending = True
        return self.network.o

    # ----- the public step ----------------------------------------------------
    def predict(self, x) -> np.ndarray:
        """o_t for input x from the current state, without advancing it.

        A following ``step`` with the same x reuses this forward pass.
        """
        return self._forward(x).copy()

    def step(self, x, y=None, mask=None) -> StepResult:
        """Predict o_t, then (when y is given) learn from L_t, and advance the state.

        Without y the state advances and nothing is learned.  ``mask`` (booleans, one
        per output) leaves outputs out of the loss.  Bad x, y or mask raise ValueError
        and change nothing.
        """
        kernel = self._kernel
        if kernel is not None and mask is None and self._plain(x, y):
            # float64 vectors of the right width: the kernel checks that they are finite, and a step it
            # does not take (not finite, or a non-finite state) changed nothing and goes the long way
            self._pending = False  # the buffers no longer hold a predict's forward pass
            status = kernel.step(x, y)
            return self._after_kernel(status, y) if status else self._step(x, y, mask, kernel=False)
        return self._step(x, y, mask, kernel=kernel is not None and mask is None)

    def _plain(self, x, y) -> bool:
        """Whether x and y (or no y) are float64 vectors of the model's widths, x contiguous, and y needs no
        check of the loss's own (squared error): the inputs ``step`` may hand to the kernel unchecked."""
        return (type(x) is np.ndarray and x.dtype is _F64 and x.shape == self._x_shape and x.flags.c_contiguous
                and (y is None or (type(y) is np.ndarray and y.dtype is _F64 and y.shape == self._y_shape
                                   and self._y_unchecked)))

    def _kernel_step(self, x: np.ndarray, y) -> StepResult | None:
        """The compiled step for the input vector x (C-contiguous); None (and only scratch written) where it
        is not taken."""
        self._pending = False  # the buffers no longer hold a predict's forward pass
        status = self._kernel.step(x, y)
        return self._after_kernel(status, y) if status else None

    def _step(self, x, y, mask, kernel: bool) -> StepResult:
        y, mask = self._target(y, mask)
        if kernel:
            result = self._kernel_step(np.ascontiguousarray(self._vector("x", x, self.n_inputs)), y)
            if result is not None:
                return result
        o = self._forward(x)
        net = self.network
        loss = delta = None
        if y is not None:
            loss, delta = self.loss(net.a, o, y, mask, net.out_act)
            if not math.isfinite(loss):
                delta = None
        due = self.learner.step(net, delta, self.grad)
        self._pending = False
        healthy = net.commit() and (loss is None or math.isfinite(loss))
        if not healthy:
            self.learner.reset()  # its traces hold the non-finite step
        elif due:
            healthy = self._apply(self.grad)
        if not healthy:
            self.counters["skipped"] += 1
        prediction = o.copy()
        if self.target_feedback:
            self._feedback[...] = y if y is not None else o
        self.counters["steps"] += 1
        self.last_loss = loss
        return StepResult(prediction, loss)

    def _after_kernel(self, status: int, y) -> StepResult:
        """The bookkeeping of a step a kernel ran (``streamrnn.kernels.dense_step`` statuses), and its result."""
        loss = self._kernel_stepped(status, y is not None)
        prediction = self.network.o.copy()
        if self.target_feedback:
            self._feedback[...] = y if y is not None else prediction
        return StepResult(prediction, loss)

    def _kernel_stepped(self, status: int, has_y: bool) -> float | None:
        """What ``step`` keeps of a step a kernel ran: the counters, the norms, the loss (returned)."""
        _, loss, norm, clipped_norm, h_sq, clipped = self._kernel.out.tolist()
        counters = self.counters
        if status == UPDATED:
            counters["updates"] += 1
            self.grad_norm, self.grad_norm_clipped = norm, clipped_norm
            if clipped:
                counters["clipped"] += 1
        elif status == NONFINITE:  # as _apply: no update; traces that hold the non-finite values restart
            if not all(np.isfinite(a).all() for a in self.learner.state_arrays().values()):
                self.learner.reset()
            counters["skipped"] += 1
        self.network.stack.h_sq_norms = [h_sq]
        counters["steps"] += 1
        self.last_loss = loss = loss if has_y else None
        return loss

    def rollout(self, next_input, horizon: int) -> np.ndarray:
        """Outputs o_{t+1}, ..., o_{t+horizon} rolled forward from a copy of the current state.

        ``next_input(k, previous)`` gives the input of step k, knowing the output of step
        k - 1 (None for k = 0), so a forecaster can feed back its own forecasts.  With
        ``target_feedback`` each output is also fed back as the next fed-back target.
        The live state, weights and learner are not touched.

        >>> import numpy as np
        >>> from streamrnn import OnlineRNN, Elman
        >>> model = OnlineRNN(1, (Elman(4),), seed=0)
        >>> path = model.rollout(lambda k, previous: [0.0] if previous is None else previous, 3)
        >>> path.shape, model.counters["steps"]
        ((3, 1), 0)
        """
        horizon = check_size("horizon", horizon)
        live = self.network
        if self._scratch is None:
            self._scratch = Network(live.n_inputs, live.stack.cells, live.readout)
        net = self._scratch
        net.theta[...] = live.theta
        for l in range(len(live.stack.cells)):
            net.stack.hidden(l)[...] = live.stack.hidden(l)
        x = self._x.copy()
        out = np.empty((horizon, live.n_outputs))
        previous = None
        for k in range(horizon):
            x[: self.n_inputs] = self._vector("x", next_input(k, previous), self.n_inputs)
            out[k] = net.forward(x)
            net.commit()
            previous = out[k]
            if self.target_feedback:
                x[self.n_inputs :] = previous
        return out

    def end_sequence(self) -> None:
        """Close a finite sequence: epochwise BPTT learns from it; the hidden state restarts at 0."""
        if self.learner.end_sequence(self.network, self.grad):
            if not self._apply(self.grad):
                self.counters["skipped"] += 1
        self.reset_state()

    def reset_state(self) -> None:
        """Zero the hidden state, the learner's traces and the fed-back target."""
        self.network.stack.reset()
        self.learner.reset()
        self._feedback[...] = 0.0
        self._pending = False

    def _apply(self, g: np.ndarray) -> bool:
        """Clip, optimise and add the update; False (nothing changed) if g is not finite."""
        norm = math.sqrt(float(np.dot(g, g)))
        if not math.isfinite(norm):
            if not all(np.isfinite(a).all() for a in self.learner.state_arrays().values()):
                self.learner.reset()
            return False
        self.grad_norm = self.grad_norm_clipped = norm
        if self.clip_norm is not None and norm > self.clip_norm:
            clip_by_global_norm(g, self.clip_norm, norm)
            self.grad_norm_clipped = self.clip_norm
            self.counters["clipped"] += 1
        np.copyto(self._applied, g)
        update = self.optimizer.update(g, self.opt_state, self.network.theta)
        self.network.theta += update
        self.counters["updates"] += 1
        return True

    # ----- introspection ------------------------------------------------------
    @property
    def params(self) -> dict[str, np.ndarray]:
        """Named views U0, W0, b0, ..., V, c of the parameters (writing them changes the model)."""
        return self.network.params()

    @property
    def gradient(self) -> dict[str, np.ndarray]:
        """The gradient handed to the optimiser at the last update (after clipping), by parameter.

        It is introspection, not state: a model loaded from a state file shows zeros until its next update.
        A model on a shared ``Scratch`` shows the newest update of any model sharing it.
        """
        return self.network.views(self._applied)

    def diagnostics(self) -> dict:
        """Health of the model after the newest step; see ``streamrnn.diagnostics``."""
        return diagnostics(self)

    # ----- state --------------------------------------------------------------
    def config(self) -> dict:
        net = self.network
        return {
            "n_inputs": self.n_inputs,
            "layers": [cell_config(c) for c in net.stack.cells],
            "readout": {"outputs": net.readout.outputs, "activation": net.readout.activation},
            "loss": self.loss.name,
            "learner": self.learner.config(),
            "optimizer": self.optimizer.config(),
            "clip_norm": self.clip_norm,
            "target_feedback": self.target_feedback,
        }

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, header): everything needed to continue exactly, as named arrays and JSON."""
        return state_io.model_state(self)

    def load_state_dict(self, arrays: dict[str, np.ndarray], header: dict) -> None:
        self.plan_state(arrays, header)()

    def plan_state(self, arrays: dict[str, np.ndarray], header: dict):
        """``load_state_dict`` in two steps: StateError now, and nothing changed, if (arrays, header) do not
        fit; else the function that loads them (for a model whose state is part of a larger one)."""
        write = state_io.plan_model_state(self, arrays, header)

        def load() -> None:
            write()
            self._pending = False

        return load

    @classmethod
    def from_config(cls, config: dict, seed: int = 0, kernels: bool | None = None) -> "OnlineRNN":
        """A fresh model as ``config()`` describes it (weights drawn from ``seed``; ``kernels`` as for the
        constructor)."""
        try:
            return cls(
                config["n_inputs"],
                tuple(cell_from_config(c) for c in config["layers"]),
                Readout(**config["readout"]),
                LOSSES[config["loss"]](),
                learners.from_config(config["learner"]),
                optim.from_config(config["optimizer"]),
                config["clip_norm"],
                config["target_feedback"],
                seed,
                kernels,
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"not a streamrnn model configuration: {err!r}") from None

    @classmethod
    def from_file(cls, path) -> "OnlineRNN":
        """The model saved at ``path``, rebuilt from its header and restored."""
        arrays, header = state_io.load(path)
        model = cls.from_config(header.get("config", {}))
        model.load_state_dict(arrays, header)
        return model

    def __getstate__(self) -> dict:
        # parameters are views into one flat vector: pickle them as named arrays, never as views
        arrays, header = self.state_dict()
        return {"spec": self._spec, "arrays": arrays, "header": header}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state["spec"])
        self.load_state_dict(state["arrays"], state["header"])

    def save(self, path) -> None:
        """Write the whole state to ``path`` (.npz with a JSON header and checksum, no pickle)."""
        arrays, header = self.state_dict()
        state_io.save(path, arrays, header)

    def load(self, path) -> None:
        """Restore a state written by ``save`` into this model (same architecture)."""
        self.load_state_dict(*state_io.load(path))
