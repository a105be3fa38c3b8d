"""Experiment 2: layer-wise top-1/2/3 and median |a| over many sequences."""

from __future__ import annotations

from ...core.recorder import TopKTooLarge
from ...data.texts import load_text
from ...data.tokens import windows
from ...metrics.layer_stats import collect_layer_stats
from ...models.context import ModelContext
from ...runs.experiment import ExperimentResult
from ...validation.errors import UsageError
from ...viz.layerwise import layerwise_lines
from .configs import LayerwiseConfig


def layerwise(context: ModelContext, config: LayerwiseConfig) -> ExperimentResult:
    """Top-k and median |a| per layer, averaged over sequences (paper Fig. 2)."""
    model, options = context.model, context.options
    source = load_text(config.text)
    seqs = windows(model.tokenizer, source.text, config.seq_len, config.n_seqs, options.prepend_bos, source.name,
                   model.cfg.n_ctx, add_special_tokens=source.special_tokens)
    try:
        stats = collect_layer_stats(model, seqs.split(config.batch_size), hook_names=config.hooks, k=config.k,
                                    criterion=options.criterion, total=-(-len(seqs) // config.batch_size),
                                    layout=context.layout)
    except TopKTooLarge as err:  # the config's k is the --k flag
        raise UsageError(f"--k {err.k} is larger than the {err.n_entries} entries of one hidden state at {err.site}") from None
    first = stats.first_massive_layer()
    title = f"{model.cfg.model_name}: layer-wise |a| over {len(seqs)} x {config.seq_len} tokens of {source.name}"
    summary_table = stats.summary
    # The run directory is named by the request (n_seqs=...) before the text is tokenized: say what ran.
    shortfall = (f" (--n-seqs {config.n_seqs} asked for; the text holds only {len(seqs)} windows of {config.seq_len} "
                 "tokens)" if len(seqs) < config.n_seqs else "")
    lines = [f"layer-wise over {len(seqs)} sequences of {config.seq_len} tokens ({source.name}){shortfall}; "
             f"first massive layer: {first}",
             "  topK, median: mean over sequences of the K-th largest / the lower median |a| of each sequence's hidden state",
             "  ratio = mean top1 / mean median (ratio of means); ratio_seq = mean over sequences of top1 / median",
             f"  {'site' if config.hooks else 'layer':>5} " + " ".join(f"{'top' + str(r + 1):>9}" for r in range(min(config.k, 3)))
             + f" {'median':>9} {'ratio':>9} {'ratio_seq':>9}"]
    for r in summary_table.to_dict("records"):
        label = r["site"] if config.hooks else r["layer"]
        lines.append(f"  {label:>5} " + " ".join(f"{r['top' + str(k + 1)]:9.2f}" for k in range(min(config.k, 3)))
                     + f" {r['median']:9.3f} {r['ratio_of_means_top1_median']:9.1f} {r['mean_ratio_top1_median']:9.1f}")
    massive_sites = stats.massive.groupby(["position", "dim"])["count"].sum().sort_values(ascending=False).head(5)
    lines.append("  massive (position, dim) by occurrences: " + (", ".join(
        f"({p}, {d}) x{c}" for (p, d), c in massive_sites.items()) or "none"))
    return ExperimentResult(
        tables={"layerwise": summary_table, "top_entries": stats.top_entries, "massive_entries": stats.massive},
        figures={"layerwise": layerwise_lines(summary_table, title, config.log_y)},
        summary={"text": source.name, "text_origin": source.origin, "special_tokens": source.special_tokens,
                 "n_sequences": len(seqs), "n_seqs_requested": config.n_seqs, "first_massive_layer": first,
                 "massive_dims": stats.massive_dims()},
        lines=lines,
    )
