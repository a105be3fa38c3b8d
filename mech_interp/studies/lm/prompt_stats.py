"""Detection on a single prompt, shared by the prompt-based experiments."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Int

from ...core.criterion import MassiveCriterion
from ...core.layer_stats import LayerStats
from ...core.token_layout import TokenLayout
from ...metrics.layer_stats import collect_layer_stats
from ...models.hooked_model import HookedModel


def prompt_layer_stats(model: HookedModel, tokens: Int[torch.Tensor, "pos"], criterion: MassiveCriterion,
                       hook_names: Sequence[str] | None = None, *, layout: TokenLayout) -> LayerStats:
    """Statistics of one prompt at ``hook_names`` (default: every ``blocks.L.hook_resid_post``)."""
    return collect_layer_stats(model, [tokens[None]], hook_names=hook_names, criterion=criterion, progress=False,
                               layout=layout)


def default_layer(stats: LayerStats, n_layers: int, offset: int = 0) -> int:
    """First layer with massive activations at the hooked sites (+ ``offset``), else the middle block."""
    first = stats.first_massive_layer()
    layer = n_layers // 2 if first is None else first + offset
    return min(layer, n_layers - 1)
