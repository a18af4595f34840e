"""What the four river estimators share: the network's parameters, features, diagnostics.

Every estimator is a hybrid (``streamrnn.hybrid``): exact online components,
aggregated by ML-Poly, and a recurrent network (the engine's ``OnlineRNN``,
trained by RTRL or BPTT on every event) that learns what the components miss.
The parameters below describe that network; the components need none.

The streaming contract, shared by all four:

* the hidden state carries across calls for the life of the estimator;
* inference (``predict_one``, ``predict_proba_one``, ``score_one``,
  ``forecast``) is pure: it does not advance the state;
* ``learn_one`` advances the state by one event and learns from it;
* ``learn_many`` is ``learn_one`` over the rows of a frame, in order, and
  ``predict_many`` is ``predict_one`` on each row from the *same* state (rows
  are not advanced through, as river's ``predict_many == predict_one`` check
  demands); NaN cells are missing features.
"""

from __future__ import annotations

from types import MappingProxyType

from ..cells import Elman, Leaky
from ..learners import REGISTRY, Learner
from ..optim import Transform
from .features import FeatureSpace

FEATURES_DOC = """Features are a dict whose keys may come and go.  Each name gets its input
    columns on first appearance (names new in the same event are ordered by
    ``repr``, so a dict's order never matters); a feature appearing later adds
    columns that read 0 in everything learned before; a missing feature reads
    0.  Numbers are standardised online (running mean and variance) and
    clipped to +-5, so a date ordinal near 736,000 and a percentage reach the
    models on the same scale.  A ``datetime`` or ``date`` becomes the sin and
    cos of its phase in the day, the week and the year.  Any other value
    raises ValueError naming the feature, and nothing changes (None and NaN
    count as missing)."""

PARAMETERS_DOC = """hidden_size
        Units in each recurrent layer of the network; 0 leaves the network out (the
        exact components alone: the ablation that shows what the network adds).
    n_layers
        Number of stacked recurrent layers.
    activation
        Hidden-unit activation: "tanh", "sigmoid", "relu" or "identity".
    beta
        Leak of every unit, in (0, 1]: h_t = (1 - beta) h_{t-1} + beta f(z_t).  1 gives
        the Elman cell; smaller values integrate over longer spans.
    recurrent_gain
        The recurrent weights U start as a random orthogonal matrix times this gain
        (0 starts feed-forward; U grows as it learns).
    learner
        ``streamrnn.RTRL()`` or ``streamrnn.TruncatedBPTT(h, h_prime)``; None for
        ``TruncatedBPTT(10, 1)``.
    optimizer
        A streamrnn optimiser (``Adam``, ``SGD``, ``Chain(...)``); None for ``Adam(0.001)``
        (``Adam(0.01)`` in the classifier).
    clip_norm
        Scale each gradient to at most this global norm (None: never).
    seed
        Seed of the network's initial weights (None: 0)."""


class RNNEstimator:
    """Mixin holding the network's parameters and a ``FeatureSpace``; see the module docstring.

    No parameter can be changed in place with river's ``mutate``: the models are built
    from them at the first event.  ``clone({"hidden_size": 32})`` gives a fresh
    estimator with new parameters.
    """

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
        self.seed = seed
        self._cells()  # ValueError now for a bad size, activation or beta
        if learner is not None and (not isinstance(learner, Learner) or learner.epochwise):
            online = ", ".join(c.__name__ for c in REGISTRY.values() if not c.epochwise)
            raise ValueError(f"learner must be a streamrnn learner that learns online ({online}), got {learner!r}")
        if optimizer is not None and not isinstance(optimizer, Transform):
            raise ValueError(f"optimizer must be a streamrnn optimiser, got {optimizer!r}")
        if clip_norm is not None and not (isinstance(clip_norm, (int, float)) and clip_norm > 0):
            raise ValueError(f"clip_norm must be a number > 0 or None, got {clip_norm!r}")
        self._features = FeatureSpace()
        self._init_learned()

    def _init_learned(self) -> None:
        """Create the estimator's learned state (its hybrid core, classes, ...)."""

    # ----- the network ----------------------------------------------------------
    def _cells(self) -> tuple:
        """The network's layers; () for ``hidden_size=0`` (no network)."""
        if isinstance(self.n_layers, bool) or not isinstance(self.n_layers, int) or self.n_layers < 1:
            raise ValueError(f"n_layers must be an integer >= 1, got {self.n_layers!r}")
        if self.hidden_size == 0 and not isinstance(self.hidden_size, bool):
            return ()
        if self.beta == 1.0:
            cell = Elman(self.hidden_size, self.activation, self.recurrent_gain)
        else:
            cell = Leaky(self.hidden_size, self.activation, self.beta, self.recurrent_gain)
        return (cell,) * self.n_layers

    def _network(self) -> dict:
        """The network arguments of a hybrid core (``layers``, ``learner``, ...)."""
        return dict(layers=self._cells() or None, learner=self.learner, optimizer=self.optimizer,
                    clip_norm=self.clip_norm, seed=0 if self.seed is None else self.seed)

    def _add_features(self, x: dict) -> int:
        """Give x's new features their columns (checking every value first); returns how many columns."""
        return self._features.add(self._features.new(x), x)

    # ----- introspection ------------------------------------------------------
    def _diagnostics(self) -> dict:
        return {}

    @property
    def diagnostics(self) -> MappingProxyType:
        """Health and state of the model after the newest event (read-only; empty before the first).

        ``weights`` are the aggregation weights of the components (and ``rnn``, the
        share of the network's correction); ``rnn`` holds the network's own figures:
        steps, updates, skipped_updates, clipped_updates, loss, prediction,
        hidden_norm, saturated_fraction, grad_norm, grad_norm_clipped,
        jacobian_norm, gradient_regime, sensitivity_norm (see ``streamrnn.diagnostics``).
        """
        return MappingProxyType(self._diagnostics())
