"""Experiment ``head-scores``: which heads read the massive tokens, with spread over sequences, the
sink share, and the head sets (top-k, bottom-k, random-k) the ablation experiments take."""

from __future__ import annotations

from ...core.head_names import head_name
from ...models.context import ModelContext
from ...models.placement.streamed_context import StreamedContext
from ...runs.experiment import ExperimentResult
from ...viz.heads import layer_head_heatmap, ranking_plot
from .configs import HeadScoresConfig
from .inputs import sequences
from .passes import head_passes
from .scores import DEFINITIONS, FIRST_SCORE, MASSIVE_SCORE, score_lines


def head_scores_experiment(context: ModelContext | StreamedContext, config: HeadScoresConfig,
                           pieces=None) -> ExperimentResult:
    """The scores on the loaded model, or one block's weights at a time (``--placement streamed``)."""
    options, name = context.options, context.name
    seqs, _, origin = sequences(context, config)
    scores = head_passes(context, pieces).scores(seqs, config.batch_size)
    table = scores.table(config.sink_eps, config.n_boot, options.seed)
    rank_by, fallback = scores.rank_by_used(config.rank_by, options.criterion)
    sets = scores.head_sets(config.k, config.n_random, options.seed, rank_by)
    per_layer, overall = scores.sink_share(config.sink_eps)
    sinks = table.groupby("layer").agg(n_sink_heads=("sink_head", "sum"), slot_attention=("slot_attention", "mean")).reset_index()
    sinks["sink_share"] = per_layer
    sinks["sink_eps"] = config.sink_eps
    lines = [f"head scores over {len(seqs)} sequences of {config.seq_len} tokens ({config.text}):"]
    lines += score_lines(scores, table, config.sink_eps, config.n_boot, options.seed)
    lines += [f"  {fallback}"] if fallback else []
    for set_name in ("top", "bottom"):
        rows = sets[sets["set"] == set_name]
        lines.append(f"  {set_name}-{config.k} by {rank_by} score: " + ", ".join(
            f"{head_name(r.layer, r.head)} ({r.score:.3f})" for r in rows.itertuples()))
    value = MASSIVE_SCORE if rank_by == "massive" else FIRST_SCORE
    return ExperimentResult(
        tables={"head_scores": table, "head_sets": sets, "sink_share": sinks, "massive_positions": scores.massive_positions},
        figures={"head_scores_heatmap": layer_head_heatmap(table, MASSIVE_SCORE, f"{name}: attention to the massive tokens at "
                                                           "each block's input (queries after them)", "attention"),
                 "first_score_heatmap": layer_head_heatmap(table, FIRST_SCORE, f"{name}: attention to position 0 "
                                                           "(queries q > 0)", "attention"),
                 "head_ranking": ranking_plot(table, value, f"{name}: heads ranked by {value} (95% bootstrap CI)")},
        summary={"n_sequences": len(seqs), "text": origin, "sink_eps": config.sink_eps, "sink_head_share": overall,
                 "sink_share_per_layer": per_layer, "definitions": DEFINITIONS,
                 "rank_by": rank_by, "ranked_by_definition": DEFINITIONS[value],
                 **({"rank_by_note": fallback} if fallback else {}),
                 "head_sets": sets.to_dict("records")},
        lines=lines,
    )
