"""Learners: how a model gets dL/dtheta from its stream of steps."""

from .base import Learner
from .epochwise import EpochwiseBPTT
from .rtrl import RTRL
from .truncated_bptt import TruncatedBPTT

__all__ = ["Learner", "RTRL", "TruncatedBPTT", "EpochwiseBPTT", "from_config"]

LEARNERS = {cls.__name__: cls for cls in (RTRL, TruncatedBPTT, EpochwiseBPTT)}


def from_config(config: dict) -> Learner:
    """The learner a ``config()`` describes."""
    config = dict(config)
    kind = config.pop("kind", None)
    if kind not in LEARNERS:
        raise ValueError(f"learner kind must be one of {sorted(LEARNERS)}, got {kind!r}")
    return LEARNERS[kind](**config)
