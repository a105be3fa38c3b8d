"""Experiment ``head-cumulative``: remove the 1..K highest-scoring heads one more at a time (and the
same for random orders): the massive activation and perplexity at each step."""

from __future__ import annotations

import random

import pandas as pd

from ...core.head_names import head_name
from ...interventions.heads import ablate_heads
from ...models.context import ModelContext
from ...models.hook_names import check_layer
from ...models.placement.streamed_context import StreamedContext
from ...runs.experiment import ExperimentResult
from ...validation.errors import UsageError
from ...viz.heads import cumulative_plot
from .configs import DEFAULT_MAX_HEADS, HeadCumulativeConfig
from .inputs import massive_layers, sequences
from .passes import head_passes

DEFINITION = ("massive value = mean over sequences of the value at the clean run's massive entries of the measured "
              "block's resid_post (each sequence's entries, same positions and dims); top1 = mean over sequences of "
              "the largest |a| there; perplexity over the same sequences")


def head_cumulative(context: ModelContext | StreamedContext, config: HeadCumulativeConfig,
                    pieces=None) -> ExperimentResult:
    """Heads removed one more at a time on the loaded model, or one block's weights at a time (``--placement
    streamed``: every step a branch of one pass over the weights)."""
    passes, options = head_passes(context, pieces), context.options
    criterion = options.criterion
    layer = check_layer(passes.n_layers, config.layer, passes.name) if config.layer is not None else None
    seqs, reference, origin = sequences(context, config, held_out=config.how == "mean")
    scores = passes.scores(seqs)
    rank_by, fallback = scores.rank_by_used(config.rank_by, criterion)
    ranked = scores.ranking(rank_by)
    if (config.max_heads or 0) > len(ranked):
        raise UsageError(f"--max-heads {config.max_heads} is larger than the number of heads with a {rank_by} "
                         f"score ({len(ranked)}): expected 1..{len(ranked)}")
    max_heads = config.max_heads or min(DEFAULT_MAX_HEADS, len(ranked))
    scored = [(li, h) for li, h, _ in ranked]
    rng = random.Random(options.seed)
    orders = [("top", 0, scored[: max_heads])]
    orders += [("random", d, rng.sample(scored, max_heads)) for d in range(config.n_random)]
    means = passes.means(config.how, reference, sorted({li for _, _, o in orders for li, _ in o}))
    steps = [(order, draw, heads, k) for order, draw, heads in orders for k in range(1, max_heads + 1)]
    clean, ablated = passes.probes(seqs, [ablate_heads(heads[:k], config.how, means) for _, _, heads, k in steps])
    if layer is None:
        massive = massive_layers(clean, len(seqs))
        layer = massive[-1] if massive else passes.n_layers - 1
    has_entries = len(clean.entries[layer]) > 0
    clean_value = float(clean.values[layer].mean()) if has_entries else float("nan")
    rows = [{"order": o, "draw": d, "k": 0, "head_added": "", "massive_value": clean_value,
             "top1": float(clean.top1[layer].mean()), "perplexity": clean.ppl()} for o, d, _ in orders]
    for (order, draw, heads, k), out in zip(steps, ablated):
        rows.append({"order": order, "draw": draw, "k": k, "head_added": head_name(*heads[k - 1]),
                     "massive_value": float(out.values[layer].mean()) if has_entries else float("nan"),
                     "top1": float(out.top1[layer].mean()), "perplexity": out.ppl()})
    table = pd.DataFrame(rows)
    table["massive_change_pct"] = 100 * (table["massive_value"] / clean_value - 1)
    table["perplexity_change_pct"] = 100 * (table["perplexity"] / clean.ppl() - 1)
    lines = [f"cumulative head removal ({config.how} on hook_z), 1..{max_heads} heads by {rank_by} score and "
             f"{config.n_random} random order{'s' if config.n_random > 1 else ''}; measured at block {layer} resid_post over {len(seqs)} sequences of "
             f"{config.seq_len} tokens ({config.text})", *([f"  {fallback}"] if fallback else []), f"  {DEFINITION}",
             f"  clean: massive value {clean_value:.1f}, perplexity {clean.ppl():.3f}"]
    for (order, draw), sub in table[table["k"] > 0].groupby(["order", "draw"], sort=False):
        last = sub.iloc[-1]
        lines.append(f"  {order if order == 'top' else f'random #{draw}'}: after {int(last.k)} heads "
                     f"({' '.join(sub['head_added'])}): massive {last.massive_value:.1f} ({last.massive_change_pct:+.2f}%), "
                     f"perplexity {last.perplexity:.3f} ({last.perplexity_change_pct:+.2f}%)")
    return ExperimentResult(
        tables={"cumulative": table},
        figures={"cumulative": cumulative_plot(table, f"{passes.name}: heads removed one more at a time "
                                                      f"({config.how}), block {layer}")},
        summary={"measured_layer": layer, "text": origin, "n_sequences": len(seqs), "definition": DEFINITION,
                 "rank_by": rank_by, **({"rank_by_note": fallback} if fallback else {}),
                 "steps": table.to_dict("records")},
        lines=lines,
    )
