"""Head ablation on ``hook_z`` (before ``W_O``): what removing a head means.

Zeroing a 64-wide slice of the attention *output* (after ``W_O``) is not a head: it removes residual
dims of every head's sum. ``ablate_head`` replaces ``z[:, :, head]`` instead, with zeros or with
``HeadMeans``: the mean of that head's ``z`` over a reference set of other sequences, per position
or pooled over positions. The mean never depends on the sequence being ablated, so no position sees
a later token of its own sequence (a mean over the same window's positions would).

``ablate_heads`` removes any set of (layer, head) pairs (one intervention per layer);
``ablate_head_per_row`` removes a different head in each batch row (the batched single-head sweep);
``zero_output_slice`` is the named contrast: the residual-slice "pruning" of the earlier GPT-2 head
study, which zeroed dims ``d_head*h .. d_head*(h+1)-1`` of ``hook_attn_out`` and called it head h.
"""

from __future__ import annotations

from typing import Any, Iterable, Literal

import torch
from jaxtyping import Float, Int

from ..core.head_names import head_name
from ..core.intervention import Intervention
from ..core.running_stats import Mean
from ..models.hook_names import act_name, engine_hooks
from ..models.hooked_model import HookedModel
from ..validation.errors import UsageError

HOW = ("zero", "mean")
SLICE_CONTRAST = "residual_slice"  # the name the contrast carries in tables


def check_how(how: str) -> str:
    if how not in HOW:
        raise UsageError(f"unknown head ablation {how!r}: expected one of {', '.join(HOW)}")
    return how


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
    def measure(cls, model: HookedModel, batches: Iterable[Int[torch.Tensor, "_batch _pos"]], layer: int,
                per_position: bool = True) -> "HeadMeans":
        stat, seen = Mean(), [0]

        def keep(z: Float[torch.Tensor, "batch pos head_index d_head"], hook: Any) -> None:
            stat.add(z if per_position else z.flatten(0, 1))
            seen[0] += z.shape[0]

        name = act_name("z", layer)
        with engine_hooks(model, [(name, keep)]):
            for tokens in batches:
                model(tokens.to(model.cfg.device), return_type=None, stop_at_layer=layer + 1)
        if stat.count == 0:
            raise UsageError("HeadMeans.measure got no reference sequences")
        return cls(layer, stat.mean().float(), per_position, seen[0])

    @classmethod
    @torch.inference_mode()
    def measure_all(cls, model: HookedModel, batches: Iterable[Int[torch.Tensor, "_batch _pos"]],
                    layers: Iterable[int], per_position: bool = True) -> dict[int, "HeadMeans"]:
        """``measure`` for several blocks in one pass over the reference sequences."""
        layers = sorted(set(layers))
        stats, seen = {layer: Mean() for layer in layers}, [0]

        def keep(z: Float[torch.Tensor, "batch pos head_index d_head"], hook: Any) -> None:
            stats[hook.layer()].add(z if per_position else z.flatten(0, 1))

        with engine_hooks(model, [(act_name("z", layer), keep) for layer in layers]):
            for tokens in batches:
                model(tokens.to(model.cfg.device), return_type=None, stop_at_layer=max(layers) + 1)
                seen[0] += tokens.shape[0]
        if seen[0] == 0:
            raise UsageError("HeadMeans.measure_all got no reference sequences")
        return {layer: cls(layer, stat.mean().float(), per_position, seen[0]) for layer, stat in stats.items()}


def _replacement(means: HeadMeans | None, heads: torch.Tensor,
                 z: Float[torch.Tensor, "batch pos head_index d_head"]) -> torch.Tensor:
    """What goes into ``z[:, :, heads]``: zeros, or the reference means of those heads."""
    if means is None:
        return z.new_zeros(())
    mean = means.mean.to(z.device, z.dtype)
    if means.per_position:
        if z.shape[1] > mean.shape[0]:
            raise UsageError(f"per-position head means cover {mean.shape[0]} positions, the input has {z.shape[1]}")
        return mean[: z.shape[1], heads]  # [pos, n_heads_ablated, d_head]
    return mean[heads]  # [n_heads_ablated, d_head]


def _check_means(layer: int, how: str, means: HeadMeans | None) -> None:
    check_how(how)
    if how == "mean" and means is None:
        raise UsageError("ablate_head(how='mean') needs HeadMeans measured over reference sequences")
    if means is not None and means.layer != layer:
        raise UsageError(f"HeadMeans were measured at layer {means.layer}, not {layer}")


class AblateHead(Intervention):
    """Replace ``z[:, :, h]`` of every head ``h`` in ``heads`` (all in block ``layer``)."""

    def __init__(self, layer: int, head: int | list[int], how: Literal["zero", "mean"] = "zero",
                 means: HeadMeans | None = None):
        _check_means(layer, how, means)
        heads = [head] if isinstance(head, int) else sorted(set(head))
        label = ",".join(map(str, heads))
        super().__init__(f"ablate_head_{layer}.{label}_{how}", act_name("z", layer))
        self.layer, self.heads, self.how = layer, heads, how
        self.means = means if how == "mean" else None

    @property
    def head(self) -> int:
        return self.heads[0]

    def forward(self, z: Float[torch.Tensor, "batch pos head_index d_head"], hook: Any = None) -> Float[torch.Tensor, "batch pos head_index d_head"]:
        if not all(0 <= h < z.shape[2] for h in self.heads):
            bad = next(h for h in self.heads if not 0 <= h < z.shape[2])
            raise UsageError(f"head {bad} out of range: layer {self.layer} has heads 0..{z.shape[2] - 1}")
        heads = torch.tensor(self.heads, device=z.device)
        out = z.clone()
        out[:, :, heads] = _replacement(self.means, heads, z)
        self.counts["replaced"] += z.shape[0] * z.shape[1] * len(self.heads)
        return out


class AblateHeadPerRow(Intervention):
    """Batch row ``b`` loses head ``heads[b]`` of block ``layer`` (``-1``: nothing removed), so one
    forward over stacked copies of the same sequences evaluates several single-head ablations."""

    def __init__(self, layer: int, heads: Int[torch.Tensor, "batch"], how: str = "zero",
                 means: HeadMeans | None = None):
        _check_means(layer, how, means)
        super().__init__(f"ablate_head_per_row_{layer}_{how}", act_name("z", layer))
        self.layer, self.how = layer, how
        self.means = means if how == "mean" else None
        self.register_buffer("heads", heads.long())

    def forward(self, z: Float[torch.Tensor, "batch pos head_index d_head"], hook: Any = None) -> Float[torch.Tensor, "batch pos head_index d_head"]:
        heads = self.heads.to(z.device)
        if heads.shape[0] != z.shape[0]:
            raise ValueError(f"{heads.shape[0]} per-row heads for a batch of {z.shape[0]}")
        if int(heads.max()) >= z.shape[2]:
            raise UsageError(f"head {int(heads.max())} out of range: layer {self.layer} has heads 0..{z.shape[2] - 1}")
        rows = (heads >= 0).nonzero().flatten()
        out = z.clone()
        if len(rows):
            replacement = _replacement(self.means, heads[rows], z)  # [] / [pos, rows, d_head] / [rows, d_head]
            if replacement.dim() == 3:
                replacement = replacement.transpose(0, 1)  # [rows, pos, d_head]
            elif replacement.dim() == 2:
                replacement = replacement[:, None]  # [rows, 1, d_head]
            out[rows, :, heads[rows]] = replacement.expand(len(rows), z.shape[1], z.shape[3]).to(z.dtype)
        self.counts["replaced"] += len(rows) * z.shape[1]
        return out


class ZeroOutputSlice(Intervention):
    """The earlier study's "head pruning": zero residual dims ``d_head*h .. d_head*(h+1)-1`` of the
    attention output (after ``W_O``, every head summed). Not a head ablation: kept as a named contrast."""

    def __init__(self, layer: int, head: int, d_head: int):
        super().__init__(f"{SLICE_CONTRAST}_{head_name(layer, head)}", act_name("attn_out", layer))
        self.layer, self.head, self.d_head = layer, head, d_head

    @property
    def dims(self) -> range:
        return range(self.d_head * self.head, self.d_head * (self.head + 1))

    def forward(self, out: Float[torch.Tensor, "batch pos d_model"], hook: Any = None) -> Float[torch.Tensor, "batch pos d_model"]:
        if self.dims.stop > out.shape[2]:
            raise UsageError(f"slice {self.dims.start}..{self.dims.stop - 1} lies beyond d_model {out.shape[2]}")
        out = out.clone()
        out[:, :, self.dims.start:self.dims.stop] = 0
        self.counts["replaced"] += out.shape[0] * out.shape[1] * self.d_head
        return out


def ablate_head(layer: int, head: int, how: Literal["zero", "mean"] = "zero", means: HeadMeans | None = None) -> AblateHead:
    """Remove head ``head`` of block ``layer``: its ``hook_z`` slice is zeroed or replaced by ``means``."""
    return AblateHead(layer, head, how, means)


def ablate_heads(heads: list[tuple[int, int]], how: str = "zero",
                 means: dict[int, HeadMeans] | None = None) -> list[AblateHead]:
    """Remove every (layer, head) of ``heads``: one intervention per block, in block order.
    ``means`` (``how="mean"``) maps each block to its ``HeadMeans``."""
    check_how(how)
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    if how == "mean":
        missing = sorted(set(by_layer) - set(means or {}))
        if missing:
            raise UsageError(f"ablate_heads(how='mean') has no HeadMeans for block {missing[0]}")
    return [AblateHead(layer, hs, how, (means or {}).get(layer)) for layer, hs in sorted(by_layer.items())]


def ablate_head_per_row(layer: int, heads: Int[torch.Tensor, "batch"], how: str = "zero",
                        means: HeadMeans | None = None) -> AblateHeadPerRow:
    """Row ``b`` of the batch loses head ``heads[b]`` of block ``layer`` (``-1``: none)."""
    return AblateHeadPerRow(layer, heads, how, means)


def zero_output_slice(layer: int, head: int, d_head: int) -> ZeroOutputSlice:
    """The contrast: zero dims ``d_head*head .. d_head*(head+1)-1`` of ``blocks.{layer}.hook_attn_out``."""
    return ZeroOutputSlice(layer, head, d_head)
