"""The massive-activation criterion and its application to one hidden state."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float

from .order_statistics import order_statistics


@dataclass(frozen=True)
class MassiveCriterion:
    """An entry is massive when |a| > max(``min_abs``, ``min_ratio`` x median |a|), the median taken
    over its own sequence's hidden state (all positions x dims of that layer). Paper: 100, ~1000."""

    min_abs: float = 100.0
    min_ratio: float = 1000.0

    def __post_init__(self) -> None:
        if self.min_abs < 0 or self.min_ratio <= 0:
            raise ValueError(f"criterion needs min_abs >= 0 and min_ratio > 0, got {self}")

    def threshold(self, median: Float[torch.Tensor, "batch"]) -> Float[torch.Tensor, "batch"]:
        return torch.clamp(median * self.min_ratio, min=self.min_abs)


def median_abs(acts: Float[torch.Tensor, "batch pos d_model"]) -> Float[torch.Tensor, "batch"]:
    """Median |a| over every (position, dim) of each sequence (lower median, as ``torch.median``)."""
    return order_statistics(acts.abs().flatten(1).float(), 1)[1].to(acts.device)


def massive_mask(
    acts: Float[torch.Tensor, "batch pos d_model"], criterion: MassiveCriterion
) -> Bool[torch.Tensor, "batch pos d_model"]:
    threshold = criterion.threshold(median_abs(acts))
    return acts.abs() > threshold[:, None, None].to(acts.dtype)
