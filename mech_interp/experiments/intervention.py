"""Experiment 3: set massive activations to zero or to their mean, and measure perplexity."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from transformer_lens import HookedTransformer

from ..errors import NoMassiveActivations, NothingToMeasure, UsageError
from ..figures import perplexity_bars
from ..interventions import RESETS, MassiveMeans, make_reset
from ..layer_stats import check_layer, collect_layer_stats, resid_post
from ..perplexity import perplexity
from ..text_sources import is_local_file, load_text
from ..tokens import windows
from .registry import ExperimentResult, RunOptions, register_experiment, require_at_least



@dataclass
class InterventionConfig:
    layer: int | None = field(default=None, metadata={"help": "0-based block whose resid_post is overwritten (default: first layer with massive activations)"})
    resets: list[str] = field(default_factory=lambda: list(RESETS), metadata={"help": "comma-separated: set_zero, set_mean"})
    datasets: list[str] = field(default_factory=lambda: ["wikitext2", "c4", "pg19"], metadata={"help": "perplexity texts, comma-separated (names as for --text)"})
    seq_len: int = field(default=512, metadata={"help": "tokens per perplexity window"})
    n_windows: int | None = field(default=32, metadata={"help": "windows per dataset (0 = all)"})
    mean_text: str = field(default="builtin", metadata={"help": "text whose sequences give the set_mean values"})
    n_mean_seqs: int = field(default=100, metadata={"help": "sequences for the means (fewer if the text is shorter)"})
    batch_size: int = field(default=1, metadata={"help": "windows per forward"})

    def __post_init__(self) -> None:
        for reset in self.resets:
            if reset not in RESETS:
                raise UsageError(f"unknown reset type {reset!r}: expected one of {', '.join(RESETS)}")
        require_at_least(self, 0, "n_windows")
        require_at_least(self, 1, "n_mean_seqs", "batch_size")
        require_at_least(self, 2, "seq_len")


def _window_count(n: int | None) -> int | None:
    return None if not n else n


@register_experiment("intervention", InterventionConfig)
def intervention(model: HookedTransformer, options: RunOptions, config: InterventionConfig, pieces=None) -> ExperimentResult:
    """Perplexity with massive activations set to zero / to their mean (paper Table 3)."""
    criterion = options.criterion
    layer = check_layer(model, config.layer) if config.layer is not None else None
    for name in config.datasets:
        if is_local_file(name):
            load_text(name)  # a missing local file fails now, not after the means pass
    pieces = pieces or _NoPieces()

    mean_source = load_text(config.mean_text)
    mean_seqs = windows(model.tokenizer, mean_source.text, config.seq_len, config.n_mean_seqs, options.prepend_bos, mean_source.name, model.cfg.n_ctx)
    hooks = [resid_post(layer)] if layer is not None else None
    stats = collect_layer_stats(model, mean_seqs.split(config.batch_size), hook_names=hooks, criterion=criterion,
                                total=-(-len(mean_seqs) // config.batch_size))
    if layer is None:
        first = stats.first_massive_layer()
        if first is None:
            raise NoMassiveActivations(
                f"no massive activations found in {model.cfg.model_name} by {criterion}: pass --layer or loosen the criterion")
        layer = first
    means = MassiveMeans.from_stats(stats, layer)

    rows, lines = [], [f"intervention at block {layer} resid_post; means over {means.n_sequences} sequences of {mean_source.name}:"]
    lines.append("  first position: " + ", ".join(f"dim {d} = {v:.1f}" for d, v in means.first_position.items()))
    if means.other_positions:
        lines.append("  other positions: " + ", ".join(f"dim {d} = {v:.1f}" for d, v in means.other_positions.items()))
    for name in config.datasets:
        try:
            source = load_text(name)
        except UsageError as err:
            if is_local_file(name):
                raise  # a local file: checked before the means pass, so this is a real error
            rows.append({"dataset": name, "condition": "original", "status": f"unavailable: {err}"})
            continue
        seqs = windows(model.tokenizer, source.text, config.seq_len, _window_count(config.n_windows), options.prepend_bos, source.name, model.cfg.n_ctx)
        for condition in ["original", *config.resets]:
            key = f"{name}__{condition}"
            row = pieces.load_piece(key)
            if row is None:
                resets = [] if condition == "original" else [make_reset(condition, layer, means, criterion)]
                result = perplexity(model, seqs, resets, batch_size=config.batch_size, desc=f"{name} {condition}")
                row = {"dataset": name, "origin": source.origin, "condition": condition, "perplexity": result.value,
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
    lines.append("  dataset        original      " + "      ".join(config.resets))
    for r in table.to_dict("records"):
        lines.append(f"  {r['dataset']:<12} {r['original']:10.3f} " + " ".join(f"{r[c]:14.4g} ({r[c + '_change_pct']:+.2f}%)" for c in config.resets))
    for r in long[long["status"] != "ok"].itertuples():
        lines.append(f"  {r.dataset}: {r.status}")
    means_table = pd.DataFrame(
        [{"position": "first", "dim": d, "mean": v} for d, v in means.first_position.items()]
        + [{"position": "other", "dim": d, "mean": v} for d, v in means.other_positions.items()]
    )
    return ExperimentResult(
        tables={"perplexity": table, "perplexity_long": long, "massive_means": means_table, "mean_pass_layerwise": stats.summary},
        figures={"perplexity": perplexity_bars(
            table, ["original", *config.resets],
            f"{model.cfg.model_name}: perplexity with the massive activations of block {layer} reset")},
        summary={"layer": layer, "mean_text": mean_source.origin, "n_mean_sequences": means.n_sequences,
                 "perplexity": table.to_dict("records")},
        lines=lines,
    )


class _NoPieces:
    def load_piece(self, key):
        return None

    def save_piece(self, key, value):
        pass
