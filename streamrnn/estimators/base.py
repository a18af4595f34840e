"""What the four river estimators share: parameters, the engine, growth, diagnostics, pickling.

Each estimator owns one ``OnlineRNN`` (``_model``), built on the first event
that has a feature, and a ``FeatureSpace`` (``_features``).  The network is
grown -- never rebuilt from scratch -- when a feature, class or target appears
for the first time (``streamrnn.grow``), so the hidden state and everything
learned carry on.

The streaming contract, shared by all four:

* the hidden state carries across calls for the life of the estimator;
* inference (``predict_one``, ``predict_proba_one``, ``score_one``) is pure:
  it does not advance the state, and the forward pass it ran is reused by a
  following ``learn_one`` on an equal event (the engine compares the input
  vector by content; the event itself is never stored);
* ``learn_one`` advances the state by one event and learns from it;
* ``learn_many`` is ``learn_one`` over the rows of a frame, in order, and
  ``predict_many`` is ``predict_one`` on each row from the *same* state (rows
  are not advanced through, as river's ``predict_many == predict_one`` check
  demands); NaN cells are missing features.
"""

from __future__ import annotations

from types import MappingProxyType

from ..cells import Elman, Leaky, Readout
from ..grow import grow_inputs, grow_outputs
from ..learners import Learner, TruncatedBPTT
from ..losses import SquaredError
from ..model import OnlineRNN
from ..optim import Adam, Transform
from .features import FeatureSpace

#: the learner when none is given: BPTT over the last 10 events, an update on every event
DEFAULT_LEARNER = TruncatedBPTT(10, 1)

FEATURES_DOC = """Features are a dict whose keys may come and go.  Each name gets an input
    position on first appearance (names new in the same event are ordered by
    ``repr``, so a dict's order never matters); a feature appearing after the
    network is built grows a zero input column; a missing feature reads 0, as
    in a sparse dict; a
    value that is not a number raises ValueError naming the feature (None and
    NaN count as missing).  With ``standardize`` every input is scaled online
    by its running mean and variance -- a date ordinal near 736,000 and a
    percentage reach the network on the same scale -- and clipped to +-5."""

PARAMETERS_DOC = """hidden_size
        Units in each recurrent layer.
    n_layers
        Number of stacked recurrent layers.
    activation
        Hidden-unit activation: "tanh", "sigmoid", "relu" or "identity".
    beta
        Leak of every unit, in (0, 1]: h_t = (1 - beta) h_{t-1} + beta f(z_t).  1 gives
        the Elman cell; smaller values integrate over longer spans.
    recurrent_gain
        The recurrent weights U start as a random orthogonal matrix times this gain:
        1 remembers from the start; a small gain (or 0) starts nearly feed-forward,
        which suits streams of independent events, and U grows as it learns.
    learner
        ``streamrnn.RTRL()`` or ``streamrnn.TruncatedBPTT(h, h_prime)``; None for
        ``TruncatedBPTT(10, 1)``.
    optimizer
        A streamrnn optimiser (``Adam``, ``SGD``, ``Chain(...)``); None for ``Adam(0.005)``
        (``Adam(0.01)`` in the classifier).
    clip_norm
        Scale each gradient to at most this global norm (None: never).
    target_feedback
        Feed the previous event's target (in the network's units) back as extra inputs.
    standardize
        Standardise each feature online (running mean and variance of the events
        learned so far) before it reaches the network.
    differences
        Also give the network each feature's change since the previous event (a
        second input per feature, standardised on its own): a recurrent network
        can learn differences, but reading them directly learns faster.
    seed
        Seed of the initial weights (None: not reproducible)."""


class RNNEstimator:
    """Mixin holding an OnlineRNN for a river estimator; see the module docstring."""

    _activation = "identity"  # readout activation
    _loss = SquaredError
    _default_optimizer = Adam(0.005)  # when optimizer is None

    def __init__(
        self,
        hidden_size: int = 16,
        n_layers: int = 1,
        activation: str = "tanh",
        beta: float = 1.0,
        recurrent_gain: float = 1.0,
        learner: Learner | None = None,
        optimizer: Transform | None = None,
        clip_norm: float | None = 1.0,
        target_feedback: bool = False,
        standardize: bool = True,
        differences: bool = False,
        seed: int | None = None,
    ):
        self.hidden_size = hidden_size
        self.n_layers = n_layers
        self.activation = activation
        self.beta = beta
        self.recurrent_gain = recurrent_gain
        self.learner = learner
        self.optimizer = optimizer
        self.clip_norm = clip_norm
        self.target_feedback = target_feedback
        self.standardize = standardize
        self.differences = differences
        self.seed = seed
        self._cells()  # ValueError now for a bad size, activation or beta
        self._model: OnlineRNN | None = None
        self._features = FeatureSpace(standardize, differences)
        self._init_learned()

    def _init_learned(self) -> None:
        """Create an estimator's own learned state (classes, running errors, ...); none here."""

    # ----- the engine -------------------------------------------------------
    def _cells(self) -> tuple:
        if isinstance(self.n_layers, bool) or not isinstance(self.n_layers, int) or self.n_layers < 1:
            raise ValueError(f"n_layers must be an integer >= 1, got {self.n_layers!r}")
        if self.beta == 1.0:
            cell = Elman(self.hidden_size, self.activation, self.recurrent_gain)
        else:
            cell = Leaky(self.hidden_size, self.activation, self.beta, self.recurrent_gain)
        return (cell,) * self.n_layers

    def _new_model(self, n_inputs: int, outputs: int) -> OnlineRNN:
        return OnlineRNN(
            n_inputs,
            self._cells(),
            Readout(outputs, self._activation),
            self._loss(),
            self.learner if self.learner is not None else DEFAULT_LEARNER,
            self.optimizer if self.optimizer is not None else self._default_optimizer,
            self.clip_norm,
            self.target_feedback,
            self.seed,
        )

    def _extra_inputs(self) -> int:
        """Inputs the estimator places before the features (a forecaster's lags)."""
        return 0

    def _add_features(self, x: dict) -> bool:
        """Give x's new features input positions, growing the network; False if it has none."""
        names = self._features.new(x)
        if names:
            before = self._features.width
            self._features.add(names)
            if self._model is not None:
                self._model = grow_inputs(self._model, self._features.width - before)
        return self._model is not None or self._extra_inputs() + self._features.width > 0

    def _ensure_model(self, outputs: int) -> OnlineRNN:
        if self._model is None:
            self._model = self._new_model(self._extra_inputs() + self._features.width, outputs)
            # a zero readout: the untrained estimator predicts its baseline exactly (the
            # running mean, the last value with ``residual``, uniform class probabilities)
            self._model.params["V"][...] = 0.0
        return self._model

    def _add_outputs(self, k: int) -> None:
        if self._model is not None:
            self._model = grow_outputs(self._model, k)

    # ----- introspection ------------------------------------------------------
    @property
    def diagnostics(self) -> MappingProxyType:
        """The engine's health figures after the newest event (read-only; empty before the first).

        Keys: steps, updates, skipped_updates, clipped_updates, loss, prediction,
        hidden_norm, saturated_fraction, grad_norm, grad_norm_clipped, jacobian_norm,
        gradient_regime, sensitivity_norm (see ``streamrnn.diagnostics``).
        """
        return MappingProxyType(self._model.diagnostics() if self._model is not None else {})

    @property
    def model(self) -> OnlineRNN | None:
        """The underlying ``OnlineRNN`` (None before the first event)."""
        return self._model

    # ----- pickling -----------------------------------------------------------
    # The engine's arrays are views into one flat vector, which pickle and deepcopy
    # would split apart; the engine is stored as its state_dict and rebuilt instead.
    def __getstate__(self):
        state = self.__dict__.copy()
        if self._model is not None:
            state["_model"] = self._model.state_dict()
        return state

    def __setstate__(self, state):
        saved = state.get("_model")
        self.__dict__.update(state)
        if isinstance(saved, tuple):
            arrays, header = saved
            config = header["config"]
            self._model = self._new_model(config["n_inputs"], config["readout"]["outputs"])
            self._model.load_state_dict(arrays, header)
