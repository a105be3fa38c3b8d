"""Experiment 2: layer-wise top-1/2/3 and median |a| over many sequences."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformer_lens import HookedTransformer

from ..figures import layerwise_lines
from ..layer_stats import collect_layer_stats
from ..text_sources import load_text
from ..tokens import windows
from .registry import ExperimentResult, RunOptions, register_experiment, require_at_least


@dataclass
class LayerwiseConfig:
    text: str = field(default="builtin", metadata={"help": "builtin, wikitext2, c4, pg19, hf:NAME[:CONFIG[:SPLIT]] or a text file"})
    n_seqs: int = field(default=10, metadata={"help": "number of sequences (consecutive windows of the text)"})
    seq_len: int = field(default=512, metadata={"help": "tokens per sequence"})
    k: int = field(default=3, metadata={"help": "top-k largest |a| per sequence"})
    hooks: list[str] | None = field(default=None, metadata={"help": "hook points, comma-separated (default: every blocks.L.hook_resid_post)"})
    batch_size: int = field(default=1, metadata={"help": "sequences per forward"})
    log_y: bool = field(default=True, metadata={"help": "log-scale y axis in the plot"})

    def __post_init__(self) -> None:
        require_at_least(self, 1, "n_seqs", "k", "batch_size")
        require_at_least(self, 2, "seq_len")


@register_experiment("layerwise", LayerwiseConfig)
def layerwise(model: HookedTransformer, options: RunOptions, config: LayerwiseConfig) -> ExperimentResult:
    """Top-k and median |a| per layer, averaged over sequences (paper Fig. 2)."""
    source = load_text(config.text)
    seqs = windows(model.tokenizer, source.text, config.seq_len, config.n_seqs, options.prepend_bos, source.name, model.cfg.n_ctx)
    stats = collect_layer_stats(model, seqs.split(config.batch_size), hook_names=config.hooks, k=config.k,
                                criterion=options.criterion, total=-(-len(seqs) // config.batch_size))
    first = stats.first_massive_layer()
    title = f"{model.cfg.model_name}: layer-wise |a| over {len(seqs)} x {config.seq_len} tokens of {source.name}"
    summary_table = stats.summary
    lines = [f"layer-wise over {len(seqs)} sequences of {config.seq_len} tokens ({source.name}); first massive layer: {first}",
             "  layer      top1      top2      top3    median     ratio"]
    for r in summary_table.itertuples():
        label = r.hook if config.hooks else r.layer
        lines.append(f"  {label:>5} {r.top1:9.2f} {r.top2 if config.k > 1 else float('nan'):9.2f} "
                     f"{r.top3 if config.k > 2 else float('nan'):9.2f} {r.median:9.3f} {r.ratio_top1_median:9.1f}")
    massive_sites = stats.massive.groupby(["position", "dim"])["count"].sum().sort_values(ascending=False).head(5)
    lines.append("  massive (position, dim) by occurrences: " + (", ".join(
        f"({p}, {d}) x{c}" for (p, d), c in massive_sites.items()) or "none"))
    return ExperimentResult(
        tables={"layerwise": summary_table, "top_entries": stats.top_entries, "massive_entries": stats.massive},
        figures={"layerwise": layerwise_lines(summary_table, title, config.log_y)},
        summary={"text": source.name, "text_origin": source.origin, "n_sequences": len(seqs), "first_massive_layer": first,
                 "massive_dims": stats.massive_dims()},
        lines=lines,
    )
