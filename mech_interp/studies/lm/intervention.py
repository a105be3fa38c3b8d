"""Experiment 3: set massive activations to zero or to their mean, and measure perplexity (Table 3).

The means come from a separate text (``mean_text``), never from the windows being evaluated. Which
entries ``set_mean`` writes is the config's ``mean_mode`` (see ``core.massive_reset``); the table
``massive_means`` and the manifest record every mean with the number of entries it averages.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from ...core.massive_reset import FixedSiteMeans, MassiveMeans
from ...data.texts import TextSource, is_local_file, load_text
from ...data.tokens import windows
from ...interventions import make_reset
from ...metrics.layer_stats import collect_layer_stats
from ...metrics.perplexity import perplexity
from ...models.context import ModelContext
from ...models.hook_names import check_layer, engine_hooks, resid_post
from ...models.hooked_model import HookedModel
from ...runs.experiment import ExperimentResult
from ...validation.errors import NoMassiveActivations, NothingToMeasure, UsageError
from ...viz.perplexity import perplexity_bars
from .configs import InterventionConfig


def _windows(context: ModelContext, source: TextSource, config: InterventionConfig, n_windows: int | None) -> torch.Tensor:
    model = context.model
    return windows(model.tokenizer, source.text, config.seq_len, n_windows, context.options.prepend_bos, source.name,
                   model.cfg.n_ctx, add_special_tokens=source.special_tokens)


def measure_means(model: HookedModel, seqs: torch.Tensor, layer: int, stats, config: InterventionConfig) -> MassiveMeans:
    """The ``set_mean`` values at ``layer`` in the config's mode, from ``seqs`` (and their ``stats``)."""
    site = resid_post(layer)
    detected = MassiveMeans.from_stats(stats, site)  # refuses a layer without massive activations
    if config.mean_mode == "detected":
        return detected
    fixed = FixedSiteMeans(site, stats.massive_dims(layer))
    with torch.inference_mode(), engine_hooks(model, [(site, lambda acts, hook: fixed.record(acts))]):
        for batch in seqs.split(config.batch_size):
            model(batch.to(model.cfg.device), return_type=None, stop_at_layer=layer + 1)
    return fixed.result()


def intervention(context: ModelContext, config: InterventionConfig, pieces=None) -> ExperimentResult:
    """Perplexity with massive activations set to zero / to their mean (paper Table 3)."""
    model, options = context.model, context.options
    criterion = options.criterion
    layer = check_layer(model.cfg.n_layers, config.layer, model.cfg.model_name) if config.layer is not None else None
    for name in config.datasets:
        if is_local_file(name):
            load_text(name)  # a missing local file fails now, not after the means pass
    pieces = pieces or _NoPieces()

    mean_source = load_text(config.mean_text)
    mean_seqs = _windows(context, mean_source, config, config.n_mean_seqs)
    hooks = [resid_post(layer)] if layer is not None else None
    stats = collect_layer_stats(model, mean_seqs.split(config.batch_size), hook_names=hooks, criterion=criterion,
                                total=-(-len(mean_seqs) // config.batch_size), layout=context.layout)
    if layer is None:
        layer = stats.first_massive_layer()
        if layer is None:
            raise NoMassiveActivations(
                f"no massive activations found in {model.cfg.model_name} by {criterion}: pass --layer or loosen the criterion")
    means = measure_means(model, mean_seqs, layer, stats, config)

    means_table = means.table()
    lines = [f"intervention at block {layer} resid_post; set_mean mode {means.mode}, means over {means.n_sequences} "
             f"sequences of {mean_source.name}:"]
    for where, label in (("first_position", "first position"), ("later", "top-1 position" if means.mode == "fixed_sites" else "other positions")):
        rows = means_table[means_table["where"] == where]
        if not rows.empty:
            lines.append(f"  {label}: " + ", ".join(f"dim {r.dim} = {r.mean:.1f} (n={r.n_entries})" for r in rows.itertuples()))
    rows: list[dict[str, Any]] = []
    for name in config.datasets:
        try:
            source = load_text(name)
        except UsageError as err:
            if is_local_file(name):
                raise  # a local file: checked before the means pass, so this is a real error
            rows.append({"dataset": name, "condition": "original", "status": f"unavailable: {err}"})
            continue
        seqs = _windows(context, source, config, config.n_windows or None)
        for condition in ["original", *config.resets]:
            key = {"dataset": name, "origin": source.origin, "condition": condition, "layer": layer,
                   "means": means.describe() if condition == "set_mean" else None}
            row = pieces.load_piece(key)
            if row is None:
                resets = [] if condition == "original" else [make_reset(condition, layer, means, criterion)]
                result = perplexity(model, seqs, [r.as_hook() for r in resets], batch_size=config.batch_size,
                                    desc=f"{name} {condition}")
                row = {"dataset": name, "origin": source.origin, "special_tokens": source.special_tokens,
                       "condition": condition, "perplexity": result.value,
                       "nll_sum": result.nll_sum, "n_tokens": result.n_tokens, "n_windows": result.n_windows,
                       "replaced": resets[0].counts["replaced"] if resets else 0,
                       "unmatched": resets[0].counts["unmatched"] if resets else 0, "status": "ok"}
                pieces.save_piece(key, row)
            rows.append(row)
    if not any(r["status"] == "ok" for r in rows):
        raise NothingToMeasure(f"none of the perplexity datasets could be loaded ({', '.join(config.datasets)}): "
                               "pass a local text file to --datasets")

    long = pd.DataFrame(rows)
    ok = long[long["status"] == "ok"]
    table = ok.pivot(index="dataset", columns="condition", values="perplexity").reindex(columns=["original", *config.resets])
    for reset in config.resets:
        table[f"{reset}_change_pct"] = 100 * (table[reset] / table["original"] - 1)
    table = table.reset_index()
    lines.append("  perplexity = exp(sum of next-token NLL / predicted tokens); change = reset / original - 1")
    lines.append("  dataset        original      " + "      ".join(config.resets))
    for r in table.to_dict("records"):
        lines.append(f"  {r['dataset']:<12} {r['original']:10.3f} " + " ".join(f"{r[c]:14.4g} ({r[c + '_change_pct']:+.2f}%)" for c in config.resets))
    for r in long[long["status"] != "ok"].itertuples():
        lines.append(f"  {r.dataset}: {r.status}")
    return ExperimentResult(
        tables={"perplexity": table, "perplexity_long": long, "massive_means": means_table, "mean_pass_layerwise": stats.summary},
        figures={"perplexity": perplexity_bars(
            table, ["original", *config.resets],
            f"{model.cfg.model_name}: perplexity with the massive activations of block {layer} reset")},
        summary={"layer": layer, "mean_text": mean_source.origin, "n_mean_sequences": means.n_sequences,
                 "set_mean": means.describe(), "perplexity": table.to_dict("records")},
        lines=lines,
    )


class _NoPieces:
    def load_piece(self, key):
        return None

    def save_piece(self, key, value):
        pass
