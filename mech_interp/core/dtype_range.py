"""Half-precision activations must fit their dtype: massive activations reach tens of thousands
and float16 ends at 65504, past which values become inf and every statistic after them is wrong."""

from __future__ import annotations

import warnings

import torch

from ..validation.errors import UsageError


class ActivationRangeError(UsageError):
    pass


def needs_range_check(dtype: torch.dtype) -> bool:
    return dtype not in (torch.float32, torch.float64)


def check_peak(peak: float, dtype: torch.dtype, hook_name: str) -> None:
    """Refuse a non-finite peak |a| and warn within 4x of the dtype's limit."""
    limit = torch.finfo(dtype).max
    if not peak < float("inf") or peak != peak:
        raise ActivationRangeError(
            f"activations at {hook_name} overflowed {dtype} (max {limit:g}): run with dtype float32 or bfloat16"
        )
    if peak > limit / 4:
        warnings.warn(f"activations at {hook_name} reach {peak:g}, within 4x of the {dtype} limit {limit:g}")


def check_range(acts: torch.Tensor, hook_name: str) -> None:
    """``check_peak`` on one tensor (reads it on the host: a synchronisation on a GPU)."""
    if needs_range_check(acts.dtype):
        check_peak(acts.abs().max().item(), acts.dtype, hook_name)
