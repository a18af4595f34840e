"""Learners: how a model gets dL/dtheta from its stream of steps."""

from .base import Learner
from .epochwise import EpochwiseBPTT
from .rtrl import RTRL
from .truncated_bptt import TruncatedBPTT

__all__ = ["Learner", "RTRL", "TruncatedBPTT", "EpochwiseBPTT"]
