"""Head ablation on ``hook_z`` (before ``W_O``): what removing a head means.

Zeroing a 64-wide slice of the attention *output* (after ``W_O``) is not a head: it removes residual
dims of every head's sum. ``ablate_head`` replaces ``z[:, :, head]`` instead, with zeros or with
``HeadMeans``: the mean of that head's ``z`` over a reference set of other sequences, per position
or pooled over positions. The mean never depends on the sequence being ablated, so no position sees
a later token of its own sequence (a mean over the same window's positions would).
"""

from __future__ import annotations

from typing import Any, Iterable, Literal

import torch
from jaxtyping import Float, Int
from transformer_lens import HookedTransformer
from transformer_lens.utils import get_act_name

from ..core.intervention import Intervention
from ..core.running_stats import Mean
from ..errors import UsageError

HOW = ("zero", "mean")


class HeadMeans(torch.nn.Module):
    """Mean ``hook_z`` of every head of one layer over reference sequences.

    ``per_position=True``: one mean per position (``[pos, head_index, d_head]``), for inputs no
    longer than the reference windows; ``False``: pooled over positions (``[head_index, d_head]``).
    """

    def __init__(self, layer: int, mean: torch.Tensor, per_position: bool, n_sequences: int) -> None:
        super().__init__()
        self.layer, self.per_position, self.n_sequences = layer, per_position, n_sequences
        self.register_buffer("mean", mean)

    @classmethod
    @torch.inference_mode()
    def measure(cls, model: HookedTransformer, batches: Iterable[Int[torch.Tensor, "_batch _pos"]], layer: int,
                per_position: bool = True) -> "HeadMeans":
        stat, seen = Mean(), [0]

        def keep(z: Float[torch.Tensor, "batch pos head_index d_head"], hook: Any) -> None:
            stat.add(z if per_position else z.flatten(0, 1))
            seen[0] += z.shape[0]

        name = get_act_name("z", layer)
        with model.hooks(fwd_hooks=[(name, keep)]):
            for tokens in batches:
                model(tokens.to(model.cfg.device), return_type=None, stop_at_layer=layer + 1)
        if stat.count == 0:
            raise UsageError("HeadMeans.measure got no reference sequences")
        return cls(layer, stat.mean().float(), per_position, seen[0])


class AblateHead(Intervention):
    def __init__(self, layer: int, head: int, how: Literal["zero", "mean"] = "zero", means: HeadMeans | None = None):
        if how not in HOW:
            raise UsageError(f"unknown head ablation {how!r}: expected one of {', '.join(HOW)}")
        if how == "mean" and means is None:
            raise UsageError("ablate_head(how='mean') needs HeadMeans measured over reference sequences")
        if means is not None and means.layer != layer:
            raise UsageError(f"HeadMeans were measured at layer {means.layer}, not {layer}")
        super().__init__(f"ablate_head_{layer}.{head}_{how}", get_act_name("z", layer))
        self.layer, self.head, self.how, self.means = layer, head, how, means

    def forward(self, z: Float[torch.Tensor, "batch pos head_index d_head"], hook: Any = None) -> Float[torch.Tensor, "batch pos head_index d_head"]:
        if not 0 <= self.head < z.shape[2]:
            raise UsageError(f"head {self.head} out of range: layer {self.layer} has heads 0..{z.shape[2] - 1}")
        out = z.clone()
        if self.how == "zero":
            out[:, :, self.head] = 0
        else:
            mean = self.means.mean.to(z.device, z.dtype)
            if self.means.per_position:
                if z.shape[1] > mean.shape[0]:
                    raise UsageError(f"per-position head means cover {mean.shape[0]} positions, the input has {z.shape[1]}")
                out[:, :, self.head] = mean[: z.shape[1], self.head]
            else:
                out[:, :, self.head] = mean[self.head]
        self.counts["replaced"] += z.shape[0] * z.shape[1]
        return out


def ablate_head(layer: int, head: int, how: Literal["zero", "mean"] = "zero", means: HeadMeans | None = None) -> AblateHead:
    """Remove head ``head`` of block ``layer``: its ``hook_z`` slice is zeroed or replaced by ``means``."""
    return AblateHead(layer, head, how, means)
