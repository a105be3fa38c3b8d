"""Experiment ``head-3d``: |a| over (token, dim) at one block before and after removing a head set,
side by side on the same axes, the difference as a heatmap, and the change at the massive entries.
``--how residual_slice`` shows what the earlier study's "pruning" did instead."""

from __future__ import annotations

import pandas as pd
import torch

from ...core.criterion import massive_mask
from ...core.head_names import head_names
from ...data.texts import load_text
from ...data.tokens import windows
from ...interventions.heads import (
    SLICE_CONTRAST,
    ablate_heads,
    zero_output_slice,
)
from ...models.context import ModelContext
from ...models.hook_names import check_layer
from ...models.placement.streamed_context import StreamedContext
from ...runs.experiment import ExperimentResult
from ...validation.errors import UsageError
from ...viz.heads import before_after_3d, difference_heatmap
from .configs import HeadBeforeAfterConfig
from .inputs import first_massive, prompt_tokens
from .named_heads import parse_head_list, require_in_model
from .passes import head_passes
from .reduced_forward import residual_tokens


def _grid(acts: torch.Tensor, labels: list[str]) -> pd.DataFrame:
    n_pos, d_model = acts.shape
    grid = pd.DataFrame({"position": torch.arange(n_pos).repeat_interleave(d_model).numpy(),
                         "token": [labels[p] for p in range(n_pos) for _ in range(d_model)],
                         "dim": torch.arange(d_model).repeat(n_pos).numpy(), "value": acts.flatten().numpy()})
    grid["abs"] = grid["value"].abs()
    return grid


def head_before_after(context: ModelContext | StreamedContext, config: HeadBeforeAfterConfig,
                      pieces=None) -> ExperimentResult:
    """The view on the loaded model, or one block's weights at a time (``--placement streamed``)."""
    passes, options, layout = head_passes(context, pieces), context.options, context.layout
    criterion, n_layers = options.criterion, passes.n_layers
    layer = check_layer(n_layers, config.layer, passes.name) if config.layer is not None else None
    tokens = prompt_tokens(context, config.prompt)
    if config.heads is not None:
        heads = parse_head_list(config.heads)
        for li, h in heads:
            require_in_model(li, h, n_layers, passes.n_heads, passes.name)
    if layer is None:
        clean, _ = passes.probes(tokens, [], logits=False)
        layer = first_massive(clean, 1, passes.name, criterion)
    if config.heads is None:
        score = passes.scores(tokens).score("first")[: layer + 1]  # [layer, head]
        if config.k > score.numel():
            raise UsageError(f"k {config.k} is larger than the {score.numel()} heads of blocks 0..{layer}")
        order = score.flatten().argsort(descending=True)[: config.k].tolist()
        heads = [(i // passes.n_heads, i % passes.n_heads) for i in order]
    if config.how == SLICE_CONTRAST:
        ablation = [zero_output_slice(li, h, passes.d_head) for li, h in heads]
    else:
        means = None
        if config.how == "mean":
            reference = windows(passes.tokenizer, load_text("builtin").text, tokens.shape[1], 16, options.prepend_bos)
            means = passes.means("mean", reference, {li for li, _ in heads})
        ablation = ablate_heads(heads, config.how, means)
    before_acts, after_acts = passes.outputs(tokens, ablation, layer)
    kept = {0: before_acts, 1: after_acts}
    labels = residual_tokens(passes.tokenizer, tokens[0], layout=layout)
    before, after = _grid(kept[0], labels), _grid(kept[1], labels)
    diff = before[["position", "token", "dim"]].copy()
    diff["before"], diff["after"] = before["value"], after["value"]
    diff["change"] = diff["after"] - diff["before"]
    at = massive_mask(kept[0][None], criterion).nonzero()  # the clean run's massive entries at the block
    massive = pd.DataFrame([{"position": p, "token": labels[p], "dim": d, "before": float(kept[0][p, d]),
                             "after": float(kept[1][p, d])} for _, p, d in at.tolist()],
                           columns=["position", "token", "dim", "before", "after"])
    massive["change_pct"] = 100 * (massive["after"] / massive["before"] - 1)
    named = head_names(heads)
    what = "residual slices (the earlier study's contrast)" if config.how == SLICE_CONTRAST else f"heads ({config.how} on hook_z)"
    lines = [f"before/after at block {layer} resid_post on {config.prompt!r}, removing {what} {named}:",
             f"  max |a| {before['abs'].max():.1f} -> {after['abs'].max():.1f}; largest |change| "
             f"{diff['change'].abs().max():.3g}"]
    lines += [f"  massive: position {r.position} {r.token!r} dim {r.dim}: {r.before:.1f} -> {r.after:.1f} ({r.change_pct:+.2f}%)"
              for r in massive.itertuples()]
    title = f"{passes.name}: |a| at block {layer}, before / after removing {what} {named}"
    return ExperimentResult(
        tables={"before_after": diff, "massive_entries": massive},
        figures={"before_after_3d": before_after_3d(before, after, title),
                 "difference": difference_heatmap(diff, f"{passes.name}: after - before at block {layer} ({named})")},
        summary={"layer": layer, "heads": [list(h) for h in heads], "how": config.how,
                 "massive": massive.to_dict("records")},
        lines=lines,
    )
