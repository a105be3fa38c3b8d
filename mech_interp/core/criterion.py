"""The massive-activation criterion and its application to one hidden state.

Every pass compares in float32 (``|a|`` and the median both cast first), so a float16 or bfloat16
run calls exactly the entries massive that its statistics pass reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float

from .order_statistics import order_statistics


@dataclass(frozen=True)
class MassiveCriterion:
    """An entry is massive when |a| > ``min_abs`` and |a| >= ``min_ratio`` x median |a|, the median
    taken over its own sequence's hidden state (all positions x dims of that layer, the lower
    median). Paper: 100, ~1000."""

    min_abs: float = 100.0
    min_ratio: float = 1000.0

    def __post_init__(self) -> None:
        # written so that NaN fails too
        if not (0 <= self.min_abs < math.inf and 0 < self.min_ratio < math.inf):
            raise ValueError(f"criterion needs finite min_abs >= 0 and min_ratio > 0, got {self}")

    def lower_bound(self, median: Float[torch.Tensor, "batch"]) -> Float[torch.Tensor, "batch"]:
        """Every massive entry is >= this (so a ``>=`` search finds them all, and a few more)."""
        return torch.clamp(median.float() * self.min_ratio, min=self.min_abs)

    def is_massive(self, mag: torch.Tensor, median: torch.Tensor) -> Bool[torch.Tensor, "..."]:
        """``mag`` (|a|) against ``median`` broadcast to its shape, both compared in float32."""
        mag = mag.float()
        return (mag > self.min_abs) & (mag >= median.float() * self.min_ratio)


def median_abs(acts: Float[torch.Tensor, "batch pos d_model"]) -> Float[torch.Tensor, "batch"]:
    """Median |a| over every (position, dim) of each sequence: the lower median (as
    ``torch.median``), in float32. The one median definition used everywhere."""
    return order_statistics(acts.detach().abs().flatten(2).float(), 1)[1].to(acts.device)


def massive_mask(
    acts: Float[torch.Tensor, "batch pos d_model"], criterion: MassiveCriterion
) -> Bool[torch.Tensor, "batch pos d_model"]:
    median = median_abs(acts)[:, None, None]
    return criterion.is_massive(acts.abs(), median)
