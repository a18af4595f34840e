"""The one lookup table from configuration names to engine objects.

The engine takes objects (``RTRL()``, ``Adam(1e-3)``); the daemon's settings
are names (``learner = "rtrl"``, ``optimizer = "adam"``).  They meet here, at
the edge, once: ``ModelTemplate(settings)`` resolves every name when the
daemon starts and then builds one network per stream key.

>>> from streamrnn_service.config import ModelSettings
>>> template = ModelTemplate(ModelSettings(learner={"kind": "bptt", "h": 8}, optimizer="momentum", weight_decay=1e-4))
>>> model = template.build(n_inputs=3, outputs=1)
>>> model.learner, model.optimizer.config()["kind"]
(TruncatedBPTT(h=8, h_prime=1), 'Chain')
"""

from __future__ import annotations

import dataclasses
import os

from streamrnn import (
    SGD,
    Adam,
    Chain,
    ExponentialDecay,
    InverseTimeDecay,
    Momentum,
    OnlineRNN,
    Readout,
    RMSProp,
    WeightDecay,
)
from streamrnn import kernels
from streamrnn.model import Scratch
from streamrnn.activations import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS
from streamrnn.cells import CELLS as CELL_KINDS
from streamrnn.hybrid import HybridForecaster
from streamrnn.hybrid.regressor import HybridRegressor
from streamrnn.learners import REGISTRY
from streamrnn.losses import LOSSES

# name -> builder from the model settings ``s``
def _cell_builder(cls):
    """Build a registered cell from [model] settings: each of its fields that [model] has (units, activation, ...)."""
    return lambda s: cls(**{f.name: getattr(s, f.name) for f in dataclasses.fields(cls) if hasattr(s, f.name)})


#: every registered cell, by its kind in lower case (elman, leaky, ...)
CELLS = {kind.lower(): _cell_builder(cls) for kind, cls in CELL_KINDS.items()}
#: the learners a daemon can run: every registered one that learns online (not epochwise)
LEARNERS = {name: cls for name, cls in REGISTRY.items() if not cls.epochwise}
SCHEDULES = {
    "constant": lambda s: s.lr,
    "exponential": lambda s: ExponentialDecay(s.lr, s.decay, s.decay_steps),
    "inverse_time": lambda s: InverseTimeDecay(s.lr, s.decay),
}
OPTIMIZERS = {  # (settings, learning rate or schedule) -> optimiser
    "sgd": lambda s, lr: SGD(lr),
    "momentum": lambda s, lr: Momentum(lr, s.momentum),
    "nesterov": lambda s, lr: Momentum(lr, s.momentum, nesterov=True),
    "rmsprop": lambda s, lr: RMSProp(lr),
    "adam": lambda s, lr: Adam(lr),
}
ACTIVATIONS = tuple(HIDDEN_ACTIVATIONS)
READOUTS = tuple(OUTPUT_ACTIVATIONS)
LOSS_NAMES = tuple(LOSSES)


class ModelTemplate:
    """Every name in the model settings resolved to engine objects; ``build`` makes a network.

    ValueError (from the engine, naming the argument) when the combination is invalid,
    e.g. a cross-entropy loss on an identity readout.
    """

    def __init__(self, settings, forecast=None):
        self.settings = s = settings
        if not s.kernels:  # for every model this process builds, the library's own and the hybrid ones inside
            os.environ[kernels.ENV] = "0"
        self.forecast = forecast  # the forecast settings (horizon, season, multiplicative), or None
        self.layers = (CELLS[s.cell](s),) * s.layers
        self.learner = s.learner.build()
        optimizer = OPTIMIZERS[s.optimizer](s, SCHEDULES[s.schedule](s))
        self.optimizer = Chain(WeightDecay(s.weight_decay), optimizer) if s.weight_decay else optimizer
        self.loss = LOSSES[s.loss]()
        # the keys step one at a time on the event loop: their networks share their gradient buffers
        self.scratch = Scratch()
        self._pools: dict = {}  # n_features -> the RegressorPool of such supervised keys, or None (``pool``)
        self.build(max(1, len(s.features)), s.outputs)  # fail now, not on the first event
        if forecast is not None:
            self.forecaster()

    @property
    def horizon(self) -> int:
        return self.forecast.horizon if self.forecast is not None else 1

    @property
    def hybrid(self) -> bool:
        """Whether supervised keys use the library's hybrid regressor (squared error on an identity readout,
        unless ``model.hybrid`` is off)."""
        s = self.settings
        return s.hybrid and s.loss == "squared" and s.readout == "identity"

    def _network(self) -> dict:
        s = self.settings
        return dict(layers=self.layers, learner=self.learner, optimizer=self.optimizer, clip_norm=s.clip_norm,
                    seed=s.seed)

    def build(self, n_inputs: int, outputs: int) -> OnlineRNN:
        """A bare network (supervised keys with a log-loss or cross-entropy readout)."""
        s = self.settings
        return OnlineRNN(
            n_inputs, self.layers, Readout(outputs, s.readout), self.loss, self.learner, self.optimizer,
            s.clip_norm, s.target_feedback, s.seed, scratch=self.scratch,
        )

    def regressor(self, n_features: int) -> HybridRegressor:
        """The library's hybrid regressor for one output of a supervised key (what RNNRegressor uses)."""
        return HybridRegressor(n_features, **self._network(), scratch=self.scratch)

    def pool(self, n_features: int):
        """The ``RegressorPool`` whose rows are the supervised keys of ``n_features`` features, made on first use;
        None where keys stay objects: no hybrid regressor, several outputs, a corrector on exact RTRL, or the
        kernels off."""
        if n_features in self._pools:
            return self._pools[n_features]
        pool = None
        if self.hybrid and self.settings.outputs == 1 and kernels.enabled():
            from streamrnn.kernels.regressor_pool import RegressorPool

            try:
                # one thread: while a forked checkpoint child lives, every first write to a page copies it, and
                # with two threads each copy also stops the other (measured: ten times slower, not faster)
                pool = RegressorPool(lambda: self.regressor(n_features), n_features, parallel=False)
            except ValueError:  # what a row cannot hold (RTRL's swapped buffers)
                pool = None
        self._pools[n_features] = pool
        return pool

    def forecaster(self) -> HybridForecaster:
        """The library's hybrid forecaster for one channel of a forecasting key (what RNNForecaster uses)."""
        f = self.forecast
        return HybridForecaster(f.season or None, f.multiplicative, horizon=f.horizon, **self._network())
