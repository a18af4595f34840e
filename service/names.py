"""The one lookup table from configuration names to engine objects.

The engine takes objects (``RTRL()``, ``Adam(1e-3)``); the daemon's settings
are names (``learner = "rtrl"``, ``optimizer = "adam"``).  They meet here, at
the edge, once: ``ModelTemplate(settings)`` resolves every name when the
daemon starts and then builds one network per stream key.

>>> from service.config import ModelSettings
>>> template = ModelTemplate(ModelSettings(learner="bptt", h=8, optimizer="momentum", weight_decay=1e-4))
>>> model = template.build(n_inputs=3, outputs=1)
>>> model.learner, model.optimizer.config()["kind"]
(TruncatedBPTT(h=8, h_prime=1), 'Chain')
"""

from __future__ import annotations

from streamrnn import (
    RTRL,
    SGD,
    Adam,
    Chain,
    Elman,
    ExponentialDecay,
    InverseTimeDecay,
    Leaky,
    Momentum,
    OnlineRNN,
    Readout,
    RMSProp,
    TruncatedBPTT,
    WeightDecay,
)
from streamrnn.activations import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS
from streamrnn.losses import LOSSES

# name -> builder from the model settings ``s``
CELLS = {
    "elman": lambda s: Elman(s.units, s.activation, s.gain),
    "leaky": lambda s: Leaky(s.units, s.activation, s.beta, s.gain),
}
LEARNERS = {
    "rtrl": lambda s: RTRL(),
    "bptt": lambda s: TruncatedBPTT(s.h, s.h_prime),
}
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

    def __init__(self, settings, horizon: int = 1):
        self.settings = s = settings
        self.horizon = horizon  # forecast steps in a forecasting stream's reply
        self.layers = (CELLS[s.cell](s),) * s.layers
        self.learner = LEARNERS[s.learner](s)
        optimizer = OPTIMIZERS[s.optimizer](s, SCHEDULES[s.schedule](s))
        self.optimizer = Chain(WeightDecay(s.weight_decay), optimizer) if s.weight_decay else optimizer
        self.loss = LOSSES[s.loss]()
        self.build(max(1, len(s.features)), s.outputs)  # fail now, not on the first event

    def build(self, n_inputs: int, outputs: int, regression: bool = False) -> OnlineRNN:
        """A fresh network; ``regression`` forces an identity readout and squared error (forecasting)."""
        s = self.settings
        readout = Readout(outputs, "identity" if regression else s.readout)
        loss = LOSSES["squared"]() if regression else self.loss
        return OnlineRNN(
            n_inputs, self.layers, readout, loss, self.learner, self.optimizer,
            s.clip_norm, s.target_feedback, s.seed,
        )
