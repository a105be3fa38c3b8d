"""Experiment 1: |a| of one layer's residual stream over (token, dim) for one prompt."""

from __future__ import annotations

import pandas as pd
import torch

from ...core.criterion import median_abs
from ...core.layer_stats import LayerStats
from ...data.tokens import encode
from ...metrics.layer_stats import PREFIX_NAME, TOKEN_COLUMNS
from ...models.context import ModelContext
from ...models.hook_names import check_layer, engine_hooks, resid_post
from ...models.placement.streamed_context import StreamedContext
from ...runs.experiment import ExperimentResult
from ...viz.feature_view import feature_view_3d
from .configs import FeatureViewConfig
from .prompt_stats import default_layer, prompt_layer_stats


def feature_view(context: ModelContext | StreamedContext, config: FeatureViewConfig) -> ExperimentResult:
    """3D view of |a| over (token, dim) at one layer, massive dims labelled (paper Fig. 1); the model whole, or
    streamed one block at a time."""
    options, layout = context.options, context.layout
    streamed = isinstance(context, StreamedContext)
    tokenizer, name, n_layers = context.tokenizer, context.name, context.n_layers
    tokens = encode(tokenizer, config.prompt, options.prepend_bos)
    layer = check_layer(n_layers, config.layer, name) if config.layer is not None else None
    if streamed:
        stats, outputs = _streamed(context, tokens, layer)
        layer = default_layer(stats, n_layers) if layer is None else layer
        acts = outputs[layer]
    else:
        model = context.model
        stats = prompt_layer_stats(model, tokens, options.criterion, layout=layout)
        layer = default_layer(stats, n_layers) if layer is None else layer
        kept = []
        with torch.inference_mode(), engine_hooks(model, [(resid_post(layer), lambda acts, hook: kept.append(acts[0]))]):
            model(tokens[None].to(model.cfg.device), stop_at_layer=layer + 1, return_type=None)
        acts = kept[0].float().cpu()  # [pos, d_model]
    # positions are the residual stream's: learned prefix positions (a sink token) come first
    token_strs = [PREFIX_NAME] * layout.n_prefix_tokens + [tokenizer.decode([t]) for t in tokens.tolist()]
    n_pos, d_model = acts.shape
    grid = pd.DataFrame({
        "position": torch.arange(n_pos).repeat_interleave(d_model).numpy(),
        "token": [token_strs[p] for p in range(n_pos) for _ in range(d_model)],
        "dim": torch.arange(d_model).repeat(n_pos).numpy(),
        "value": acts.flatten().numpy(),
    })
    grid["abs"] = grid["value"].abs()
    massive = stats.massive[stats.massive["layer"] == layer][["position", "token", "dim"]].copy()
    massive = massive.merge(grid[["position", "dim", "value", "abs"]], on=["position", "dim"])
    # the lower median, as the criterion uses (pandas' median would average the two middle values)
    median = float(median_abs(acts[None])[0])
    title = f"{name}: |a| at block {layer} resid_post, prompt {config.prompt!r}"
    lines = [(f"feature view, block {layer}: median |a| {median:.3g} (lower median over positions x dims), "
              f"max |a| {grid['abs'].max():.4g}")]
    lines += [f"  massive: position {r.position} {r.token!r} dim {r.dim} value {r.value:.1f}" for r in massive.itertuples()]
    return ExperimentResult(
        tables={"activations": grid, "massive_entries": massive.reset_index(drop=True)},
        figures={"feature_view_3d": feature_view_3d(grid, massive, title)},
        summary={"layer": layer, "median_abs": median, "max_abs": float(grid["abs"].max()),
                 "massive": massive[["position", "dim", "value"]].to_dict("records"), "tokens": token_strs},
        lines=lines,
    )


def _streamed(context: StreamedContext, tokens, layer: int | None) -> tuple[LayerStats, dict[int, torch.Tensor]]:
    """The prompt's statistics and output ([pos, d_model], float32 on the CPU: one prompt's worth per block) at every
    block up to ``layer`` (all of them when it is to be found), one block's weights at a time."""
    from ...models.placement.streamed_pass import pass_state_dir, streamed_layer_stats

    outputs: dict[int, torch.Tensor] = {}
    with pass_state_dir(None, {}) as scratch:  # one prompt: nothing worth resuming
        stats = streamed_layer_stats(
            context.source, tokens[None], config=context.config, device=context.device,
            criterion=context.options.criterion, dtype=getattr(torch, context.options.dtype), label_name=context.label,
            label_columns=TOKEN_COLUMNS, blocks=None if layer is None else range(layer + 1), progress=False,
            spill_dir=context.spill_dir(scratch),
            observe=lambda block, hidden: outputs.__setitem__(block, hidden[0][0].float().cpu()))
    return stats, outputs
