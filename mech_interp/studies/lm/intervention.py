"""Experiment 3: set massive activations to zero or to their mean, and measure perplexity (Table 3).

The means come from a separate text (``mean_text``), never from the windows being evaluated. Which
entries ``set_mean`` writes is the config's ``mean_mode`` (see ``core.massive_reset``); the table
``massive_means`` and the manifest record every mean with the number of entries it averages.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from ...core.massive_reset import FixedSiteMeans, MassiveMeans
from ...data.texts import TextSource, is_local_file, load_text
from ...data.tokens import windows
from ...interventions import make_reset
from ...metrics.layer_stats import TOKEN_COLUMNS, collect_layer_stats
from ...metrics.perplexity import perplexity
from ...metrics.relative_change import FACTOR_FROM, change_text
from ...models.context import ModelContext
from ...models.hook_names import check_layer, engine_hooks, resid_post
from ...models.placement.streamed_context import StreamedContext
from ...runs.experiment import ExperimentResult
from ...validation.errors import NoMassiveActivations, NothingToMeasure, UsageError
from ...viz.perplexity import perplexity_bars
from .configs import InterventionConfig


class _Whole:
    """The experiment's passes on the loaded model: hooks in TransformerLens' forward."""

    all_in_one_pass = False  # one forward per condition, each saved as it ends

    def __init__(self, context: ModelContext) -> None:
        self.context, self.model = context, context.model

    def stats(self, seqs: torch.Tensor, layer: int | None, config: InterventionConfig):
        return collect_layer_stats(self.model, seqs.split(config.batch_size),
                                   hook_names=[resid_post(layer)] if layer is not None else None,
                                   criterion=self.context.options.criterion,
                                   total=-(-len(seqs) // config.batch_size), layout=self.context.layout)

    def record(self, fixed: FixedSiteMeans, seqs: torch.Tensor, layer: int, config: InterventionConfig) -> None:
        model = self.model
        with torch.inference_mode(), engine_hooks(model, [(resid_post(layer), lambda acts, hook: fixed.record(acts))]):
            for batch in seqs.split(config.batch_size):
                model(batch.to(model.cfg.device), return_type=None, stop_at_layer=layer + 1)

    def perplexities(self, seqs, conditions: dict, layer: int, config: InterventionConfig, desc: str) -> dict:
        return {name: perplexity(self.model, seqs, [reset.as_hook()] if reset is not None else [],
                                 batch_size=config.batch_size, desc=f"{desc} {name}")
                for name, reset in conditions.items()}


class _Streamed:
    """The same passes one block's weights at a time (``--placement streamed``): every condition in one pass.
    Spilled (``--placement spilled``), the residual streams wait on disk between blocks, among the run's pieces."""

    all_in_one_pass = True  # the weights are read once for every condition

    def __init__(self, context: StreamedContext, pieces) -> None:
        self.context, self.pieces = context, pieces

    def _model(self):
        from ...models.placement.streamed_model import StreamedModel

        c = self.context
        return StreamedModel(c.source, c.config, getattr(torch, c.options.dtype), c.device)

    def stats(self, seqs: torch.Tensor, layer: int | None, config: InterventionConfig, observe=None):
        from ...models.placement.streamed_pass import pass_state_dir, streamed_layer_stats

        c = self.context
        # resumable unless it observes: a resumed pass would not show the observer the blocks it skips
        with pass_state_dir(self.pieces, {"streamed_pass": "means", "observed": observe is not None}) as state_dir:
            return streamed_layer_stats(
                c.source, seqs, config=c.config, device=c.device, batch_size=config.batch_size,
                criterion=c.options.criterion, dtype=getattr(torch, c.options.dtype),
                blocks=[layer] if layer is not None else None, label_name=c.label, label_columns=TOKEN_COLUMNS,
                report=tqdm.write, observe=observe, state_dir=state_dir if observe is None else None,
                spill_dir=c.spill_dir(state_dir))

    def record(self, fixed: FixedSiteMeans, seqs: torch.Tensor, layer: int, config: InterventionConfig) -> None:
        def at_layer(block, hidden):
            if block == layer:
                for j in range(len(hidden)):
                    fixed.record(hidden[j])

        self.stats(seqs, layer, config, observe=at_layer)

    def perplexities(self, seqs, conditions: dict, layer: int, config: InterventionConfig, desc: str) -> dict:
        from ...models.placement.streamed_pass import pass_state_dir
        from ...models.placement.streamed_perplexity import streamed_perplexity

        with pass_state_dir(self.pieces, {"streamed_pass": "perplexity", "dataset": desc}) as state_dir:
            return streamed_perplexity(self._model(), seqs, conditions, layer, batch_size=config.batch_size, desc=desc,
                                       spill_dir=self.context.spill_dir(state_dir))


def _windows(context, source: TextSource, config: InterventionConfig, n_windows: int | None, prepend_bos: bool):
    return windows(context.tokenizer, source.text, config.seq_len, n_windows, prepend_bos, source.name,
                   context.n_ctx, add_special_tokens=source.special_tokens)


def measure_means(passes, seqs: torch.Tensor, layer: int, stats, config: InterventionConfig) -> MassiveMeans:
    """The ``set_mean`` values at ``layer`` in the config's mode, from ``seqs`` (and their ``stats``)."""
    site = resid_post(layer)
    detected = MassiveMeans.from_stats(stats, site)  # refuses a layer without massive activations
    if config.mean_mode == "detected":
        return detected
    fixed = FixedSiteMeans(site, stats.massive_dims(layer))
    passes.record(fixed, seqs, layer, config)
    return fixed.result()


def intervention(context: ModelContext | StreamedContext, config: InterventionConfig, pieces=None) -> ExperimentResult:
    """Perplexity with massive activations set to zero / to their mean (paper Table 3); the model whole, or streamed
    one block at a time."""
    passes = _Streamed(context, pieces) if isinstance(context, StreamedContext) else _Whole(context)
    options = context.options
    criterion = options.criterion
    layer = check_layer(context.n_layers, config.layer, context.name) if config.layer is not None else None
    for name in config.datasets:
        if is_local_file(name):
            load_text(name)  # a missing local file fails now, not after the means pass
    pieces = pieces or _NoPieces()

    mean_source = load_text(config.mean_text)
    mean_seqs = _windows(context, mean_source, config, config.n_mean_seqs, options.prepend_bos)
    stats = passes.stats(mean_seqs, layer, config)
    if layer is None:
        layer = stats.first_massive_layer()
        if layer is None:
            raise NoMassiveActivations(
                f"no massive activations found in {context.name} by {criterion}: pass --layer or loosen the criterion")
    means = measure_means(passes, mean_seqs, layer, stats, config)

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
        seqs = _windows(context, source, config, config.n_windows or None, options.prepend_bos)
        conditions = ["original", *config.resets]
        keys = {condition: {"dataset": name, "origin": source.origin, "condition": condition, "layer": layer,
                            "means": means.describe() if condition == "set_mean" else None}
                for condition in conditions}
        done = {condition: pieces.load_piece(key) for condition, key in keys.items()}
        missing = {condition: None if condition == "original" else make_reset(condition, layer, means, criterion)
                   for condition in conditions if done[condition] is None}
        # each group is one pass over the weights; its rows are saved as soon as it is measured
        for group in ([missing] if passes.all_in_one_pass else [{c: r} for c, r in missing.items()]):
            if not group:
                continue
            for condition, result in passes.perplexities(seqs, group, layer, config, name).items():
                reset = group[condition]
                done[condition] = {
                    "dataset": name, "origin": source.origin, "special_tokens": source.special_tokens,
                    "condition": condition, "perplexity": result.value,
                    "nll_sum": result.nll_sum, "n_tokens": result.n_tokens, "n_windows": result.n_windows,
                    "replaced": reset.counts["replaced"] if reset is not None else 0,
                    "unmatched": reset.counts["unmatched"] if reset is not None else 0, "status": "ok"}
                pieces.save_piece(keys[condition], done[condition])
        rows += [done[condition] for condition in conditions]
    if not any(r["status"] == "ok" for r in rows):
        raise NothingToMeasure(f"none of the perplexity datasets could be loaded ({', '.join(config.datasets)}): "
                               "pass a local text file to --datasets")

    long = pd.DataFrame(rows)
    ok = long[long["status"] == "ok"]
    table = ok.pivot(index="dataset", columns="condition", values="perplexity").reindex(columns=["original", *config.resets])
    for reset in config.resets:
        table[f"{reset}_change_pct"] = 100 * (table[reset] / table["original"] - 1)
    table = table.reset_index()
    lines.append("  perplexity = exp(sum of next-token NLL / predicted tokens); change = reset / original - 1, "
                 f"printed as a factor (x) from {FACTOR_FROM:g}x up")
    lines.append("  dataset        original      " + "      ".join(config.resets))
    for r in table.to_dict("records"):
        lines.append(f"  {r['dataset']:<12} {r['original']:10.3f} " + " ".join(f"{r[c]:14.4g} ({change_text(r[c], r['original'])})" for c in config.resets))
    for r in long[long["status"] != "ok"].itertuples():
        lines.append(f"  {r.dataset}: {r.status}")
    return ExperimentResult(
        tables={"perplexity": table, "perplexity_long": long, "massive_means": means_table, "mean_pass_layerwise": stats.summary},
        figures={"perplexity": perplexity_bars(
            table, ["original", *config.resets],
            f"{context.name}: perplexity with the massive activations of block {layer} reset")},
        summary={"layer": layer, "mean_text": mean_source.origin, "n_mean_sequences": means.n_sequences,
                 "set_mean": means.describe(), "perplexity": table.to_dict("records")},
        lines=lines,
    )


class _NoPieces:
    def load_piece(self, key):
        return None

    def save_piece(self, key, value):
        pass
