"""The massive-activation criterion and its application to one hidden state."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Float


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


def order_statistics(
    mag: Float[torch.Tensor, "batch n"], k: int
) -> tuple[Float[torch.Tensor, "batch k"], Float[torch.Tensor, "batch"]]:
    """The ``k`` largest values of each row (descending) and its lower median (as ``torch.median``).

    Exact either way. On the CPU, numpy's introselect finds the median ~10x faster than
    ``torch.median`` (0.35 ms vs 4 ms for 512 x 576 values), and the top-k then come from the upper
    half it leaves; on other devices torch's own kernels run where the data is.
    """
    n = mag.shape[1]
    mid = (n - 1) // 2
    if mag.device.type != "cpu" or n - mid - 1 < k:
        return mag.topk(k, dim=1).values, mag.median(dim=1).values
    part = np.partition(mag.detach().numpy(), mid, axis=1)
    upper = part[:, mid + 1:]
    top = np.sort(np.partition(upper, upper.shape[1] - k, axis=1)[:, -k:], axis=1)[:, ::-1]
    return torch.from_numpy(top.copy()), torch.from_numpy(part[:, mid].copy())


def median_abs(acts: Float[torch.Tensor, "batch pos d_model"]) -> Float[torch.Tensor, "batch"]:
    """Median |a| over every (position, dim) of each sequence (lower median, as ``torch.median``)."""
    return order_statistics(acts.abs().flatten(1).float(), 1)[1].to(acts.device)


def massive_mask(
    acts: Float[torch.Tensor, "batch pos d_model"], criterion: MassiveCriterion
) -> Bool[torch.Tensor, "batch pos d_model"]:
    threshold = criterion.threshold(median_abs(acts))
    return acts.abs() > threshold[:, None, None].to(acts.dtype)
