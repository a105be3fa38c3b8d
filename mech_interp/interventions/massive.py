"""``set_zero``/``set_mean`` at a layer's residual stream output (the paper's intervention)."""

from __future__ import annotations

from ..core.criterion import MassiveCriterion
from ..core.massive_reset import MassiveMeans, SetMean, SetZero
from ..core.reset_kinds import RESETS
from ..models.hook_names import resid_post
from ..validation.errors import UsageError


def set_zero(layer: int, criterion: MassiveCriterion = MassiveCriterion()) -> SetZero:
    """Zero every massive entry of ``blocks.{layer}.hook_resid_post``, detected per sequence."""
    return SetZero(resid_post(layer), criterion)


def set_mean(means: MassiveMeans, criterion: MassiveCriterion = MassiveCriterion()) -> SetMean:
    """Overwrite the massive entries at ``means.site`` with ``means`` (its mode says which entries)."""
    return SetMean(means, criterion)


def make_reset(kind: str, layer: int, means: MassiveMeans | None, criterion: MassiveCriterion):
    if kind == "set_zero":
        return set_zero(layer, criterion)
    if kind == "set_mean":
        if means is None:
            raise ValueError("set_mean needs MassiveMeans")
        return set_mean(means, criterion)
    raise UsageError(f"unknown reset type {kind!r}: expected one of {', '.join(RESETS)}")
