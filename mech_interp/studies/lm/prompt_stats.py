"""Detection on a single prompt, shared by the prompt-based experiments."""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer

from ...core.criterion import MassiveCriterion
from ...core.layer_stats import LayerStats
from ...metrics.layer_stats import collect_layer_stats


def prompt_layer_stats(model: HookedTransformer, tokens: torch.Tensor, criterion: MassiveCriterion) -> LayerStats:
    return collect_layer_stats(model, [tokens[None]], criterion=criterion, progress=False)


def default_layer(stats: LayerStats, model: HookedTransformer, offset: int = 0) -> int:
    """First layer with massive activations (+ ``offset``), else the middle block."""
    first = stats.first_massive_layer()
    layer = model.cfg.n_layers // 2 if first is None else first + offset
    return min(layer, model.cfg.n_layers - 1)
