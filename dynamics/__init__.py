"""MaskGIT dynamics transformer and its sampler."""

from dynamics.model import DynamicsModel
from dynamics.sampling import Rollout, sample_frame

__all__ = ["DynamicsModel", "Rollout", "sample_frame"]
