"""Half-precision activations must fit their dtype: massive activations reach tens of thousands
and float16 ends at 65504, past which values become inf and every statistic after them is wrong."""

from __future__ import annotations

import warnings

import torch

from ..errors import UsageError


class ActivationRangeError(UsageError):
    pass


def check_range(acts: torch.Tensor, hook_name: str) -> None:
    """Refuse non-finite activations and warn near the dtype's limit: massive activations reach
    tens of thousands, close to float16's 65504."""
    if acts.dtype == torch.float32 or acts.dtype == torch.float64:
        return
    peak = acts.abs().max().item()
    limit = torch.finfo(acts.dtype).max
    if not peak < float("inf") or peak != peak:
        raise ActivationRangeError(
            f"activations at {hook_name} overflowed {acts.dtype} (max {limit:g}): rerun with --dtype float32 or bfloat16"
        )
    if peak > limit / 4:
        warnings.warn(f"activations at {hook_name} reach {peak:g}, within 4x of the {acts.dtype} limit {limit:g}")


def range_check_hook(acts: torch.Tensor, hook) -> None:
    """A forward hook form of ``check_range`` (for passes that compute no statistics)."""
    check_range(acts, hook.name)
