"""Interventions on HookedTransformer hook points, built on the core's intervention protocol.

``set_zero``/``set_mean`` name their site by layer (``blocks.L.hook_resid_post``); ``ablate_head``
acts on ``blocks.L.attn.hook_z[:, :, head]`` before ``W_O``.
"""

from ..core.massive_reset import FixedSiteMeans, MassiveMeans, SetMean, SetZero
from ..core.reset_kinds import MEAN_MODES, RESETS
from .heads import HeadMeans, ablate_head
from .massive import make_reset, set_mean, set_zero

__all__ = ["MEAN_MODES", "RESETS", "FixedSiteMeans", "HeadMeans", "MassiveMeans", "SetMean", "SetZero",
           "ablate_head", "make_reset", "set_mean", "set_zero"]
