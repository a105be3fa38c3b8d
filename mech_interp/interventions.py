"""Interventions as small named hook objects that compose (after pyvene).

Each ``Intervention`` has a ``name``, the ``hook_name`` it acts on and a ``forward(acts, hook)``;
pass several to ``model.hooks(fwd_hooks=[i.as_hook() for i in interventions])``.

Massive entries away from the first position are token-dependent, so ``set_zero``/``set_mean``
detect the entries in each sequence at run time (with the same criterion as the statistics)
rather than overwriting a fixed (position, dim) list taken from one sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
from jaxtyping import Float
from transformer_lens.hook_points import HookPoint

from .detection import MassiveCriterion, massive_mask
from .errors import NoMassiveActivations, UsageError
from .layer_stats import LayerStats, resid_post

RESETS = ("set_zero", "set_mean")


@dataclass
class Intervention:
    name: str
    hook_name: str
    forward: Callable[[torch.Tensor, HookPoint], torch.Tensor | None]
    counts: dict[str, int] = field(default_factory=lambda: {"replaced": 0, "unmatched": 0})

    def as_hook(self) -> tuple[str, Callable]:
        return (self.hook_name, self.forward)


@dataclass(frozen=True)
class MassiveMeans:
    """Mean signed value of massive entries per dim at one layer, measured over many sequences.
    The first position keeps its own means (its state differs from later delimiter tokens)."""

    layer: int
    first_position: dict[int, float]
    other_positions: dict[int, float]
    all_positions: dict[int, float]
    n_sequences: int

    @classmethod
    def from_stats(cls, stats: LayerStats, layer: int) -> "MassiveMeans":
        rows = stats.massive[stats.massive["hook"] == resid_post(layer)]
        if rows.empty:
            raise NoMassiveActivations(
                f"no massive activations found at layer {layer} over {stats.n_sequences} sequences: "
                "choose another --layer or loosen the criterion (--min-abs / --min-ratio)"
            )

        def means(sub) -> dict[int, float]:
            weighted = (sub["mean_value"] * sub["count"]).groupby(sub["dim"]).sum()
            counts = sub["count"].groupby(sub["dim"]).sum()
            return {int(d): float(v) for d, v in (weighted / counts).items()}

        return cls(
            layer=layer,
            first_position=means(rows[rows["position"] == 0]),
            other_positions=means(rows[rows["position"] > 0]),
            all_positions=means(rows),
            n_sequences=stats.n_sequences,
        )

    def value_for(self, position: int, dim: int) -> float | None:
        table = self.first_position if position == 0 else self.other_positions
        if dim in table:
            return table[dim]
        return self.all_positions.get(dim)


def _massive_entries(acts: Float[torch.Tensor, "batch pos d_model"], criterion: MassiveCriterion):
    return massive_mask(acts, criterion).nonzero(as_tuple=True)


def set_zero(layer: int, criterion: MassiveCriterion = MassiveCriterion()) -> Intervention:
    """Zero every massive entry of ``blocks.{layer}.hook_resid_post``, detected per sequence."""

    def forward(acts: Float[torch.Tensor, "batch pos d_model"], hook: HookPoint):
        b, p, d = _massive_entries(acts, criterion)
        out = acts.clone()
        out[b, p, d] = 0
        intervention.counts["replaced"] += int(b.numel())
        return out

    intervention = Intervention("set_zero", resid_post(layer), forward)
    return intervention


def set_mean(means: MassiveMeans, criterion: MassiveCriterion = MassiveCriterion()) -> Intervention:
    """Overwrite every massive entry with its dim's mean over many sequences (first position: its
    own mean). Entries in dims never seen while measuring the means are left as they are and
    counted as ``unmatched``."""

    def forward(acts: Float[torch.Tensor, "batch pos d_model"], hook: HookPoint):
        b, p, d = _massive_entries(acts, criterion)
        out = acts.clone()
        for bi, pi, di in zip(b.tolist(), p.tolist(), d.tolist()):
            value = means.value_for(pi, di)
            if value is None:
                intervention.counts["unmatched"] += 1
                continue
            out[bi, pi, di] = value
            intervention.counts["replaced"] += 1
        return out

    intervention = Intervention("set_mean", resid_post(means.layer), forward)
    return intervention


def make_reset(kind: str, layer: int, means: MassiveMeans | None, criterion: MassiveCriterion) -> Intervention:
    if kind == "set_zero":
        return set_zero(layer, criterion)
    if kind == "set_mean":
        if means is None:
            raise ValueError("set_mean needs MassiveMeans")
        return set_mean(means, criterion)
    raise UsageError(f"unknown reset type {kind!r}: expected one of {', '.join(RESETS)}")


def ablate_head(layer: int, head: int, how: Literal["zero", "mean"] = "zero") -> Intervention:
    """Remove one head's contribution: its ``hook_z`` slice, before W_O, is zeroed or replaced by
    its mean over positions. (Zeroing a 64-wide slice of the attention *output* is not a head.)"""
    if how not in ("zero", "mean"):
        raise UsageError(f"unknown head ablation {how!r}: expected zero or mean")

    def forward(z: Float[torch.Tensor, "batch pos head_index d_head"], hook: HookPoint):
        out = z.clone()
        out[:, :, head] = 0 if how == "zero" else z[:, :, head].mean(dim=1, keepdim=True)
        return out

    return Intervention(f"ablate_head_{layer}.{head}_{how}", f"blocks.{layer}.attn.hook_z", forward)
