"""Experiment 2: layer-wise top-1/2/3 and median |a| over many sequences."""

from __future__ import annotations

from tqdm.auto import tqdm

from ...core.layer_stats import LayerStats
from ...core.recorder import TopKTooLarge
from ...data.texts import load_text
from ...data.tokens import windows
from ...metrics.layer_stats import TOKEN_COLUMNS, collect_layer_stats
from ...models.context import ModelContext
from ...models.placement.memory_units import format_bytes
from ...models.placement.peak_memory import PeakMemory
from ...models.placement.streamed_context import StreamedContext
from ...runs.experiment import ExperimentResult
from ...validation.errors import UsageError
from ...viz.layerwise import layerwise_lines
from .configs import LayerwiseConfig


def layerwise(context: ModelContext | StreamedContext, config: LayerwiseConfig, pieces=None) -> ExperimentResult:
    """Top-k and median |a| per layer, averaged over sequences (paper Fig. 2); the model whole, or streamed one
    block at a time."""
    options, streamed = context.options, isinstance(context, StreamedContext)
    tokenizer, n_ctx = context.tokenizer, context.n_ctx
    source = load_text(config.text)
    seqs = windows(tokenizer, source.text, config.seq_len, config.n_seqs, options.prepend_bos, source.name,
                   n_ctx, add_special_tokens=source.special_tokens)
    memory = PeakMemory(context.device if streamed else None)
    try:
        if streamed:
            stats = _streamed(context, config, seqs, pieces, memory)
        else:
            stats = collect_layer_stats(context.model, seqs.split(config.batch_size), hook_names=config.hooks,
                                        k=config.k, criterion=options.criterion,
                                        total=-(-len(seqs) // config.batch_size), layout=context.layout)
    except TopKTooLarge as err:  # the config's k is the --k flag
        raise UsageError(f"--k {err.k} is larger than the {err.n_entries} entries of one hidden state at {err.site}") from None
    first = stats.first_massive_layer()
    name = context.name
    title = f"{name}: layer-wise |a| over {len(seqs)} x {config.seq_len} tokens of {source.name}"
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
    if streamed:
        lines.append(_memory_line(context, memory))
    massive_sites = stats.massive.groupby(["position", "dim"])["count"].sum().sort_values(ascending=False).head(5)
    lines.append("  massive (position, dim) by occurrences: " + (", ".join(
        f"({p}, {d}) x{c}" for (p, d), c in massive_sites.items()) or "none"))
    return ExperimentResult(
        tables={"layerwise": summary_table, "top_entries": stats.top_entries, "massive_entries": stats.massive},
        figures={"layerwise": layerwise_lines(summary_table, title, config.log_y)},
        summary={"text": source.name, "text_origin": source.origin, "special_tokens": source.special_tokens,
                 "n_sequences": len(seqs), "n_seqs_requested": config.n_seqs, "first_massive_layer": first,
                 "massive_dims": stats.massive_dims(),
                 **({"streamed_peak_bytes": memory.added} if streamed else {})},
        lines=lines,
    )


def _streamed(context: StreamedContext, config: LayerwiseConfig, seqs, pieces, memory: PeakMemory) -> LayerStats:
    import torch

    from ...models.placement.streamed_pass import pass_state_dir, streamed_layer_stats

    blocks = [int(h.split(".")[1]) for h in config.hooks] if config.hooks else None
    with pass_state_dir(pieces, {"streamed_pass": True}) as state_dir:
        return streamed_layer_stats(
            context.source, seqs, config=context.config, device=context.device, batch_size=config.batch_size,
            k=config.k, criterion=context.options.criterion, dtype=getattr(torch, context.options.dtype),
            state_dir=state_dir, spill_dir=context.spill_dir(state_dir), blocks=blocks, label_name=context.label,
            label_columns=TOKEN_COLUMNS, report=tqdm.write, memory=memory)


def _memory_line(context: StreamedContext, memory: PeakMemory) -> str:
    planned = context.placement.plan.peak(context.placement.name)
    measured = "not measured here" if memory.added is None else \
        f"{format_bytes(memory.added)} ({memory.added / planned:.2f} x the plan)"
    where = "one block's weights at a time" + ("; the residual streams on disk between blocks"
                                               if context.placement.name == "spilled" else "")
    return (f"  {context.placement.name}, {where}: planned peak {format_bytes(planned)}; measured {measured} "
            f"({memory.source})")
