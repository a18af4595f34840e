"""Learners: how a model gets dL/dtheta from its stream of steps."""

from .base import REGISTRY, Learner

# the registry: importing a learner's module registers its name in REGISTRY
from .epochwise import EpochwiseBPTT
from .rtrl import RTRL
from .snap import SnAp1
from .truncated_bptt import TruncatedBPTT
from .uoro import UORO

__all__ = ["Learner", "REGISTRY", "from_config", *(cls.__name__ for cls in REGISTRY.values())]

#: class name -> class: the ``kind`` of a learner's ``config()``, in checkpoint headers
LEARNERS = {cls.__name__: cls for cls in REGISTRY.values()}


def from_config(config: dict) -> Learner:
    """The learner a ``config()`` describes."""
    config = dict(config)
    kind = config.pop("kind", None)
    if kind not in LEARNERS:
        raise ValueError(f"learner kind must be one of {sorted(LEARNERS)}, got {kind!r}")
    return LEARNERS[kind](**config)
