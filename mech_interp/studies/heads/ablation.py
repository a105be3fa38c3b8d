"""Experiment ``head-ablation``: remove the top-k, bottom-k and random-k heads (by score) and measure,
at every block, the change of the top-1 |a| and of every massive entry of the clean run, with
bootstrap CIs over sequences; plus perplexity. The earlier study's residual-slice "pruning" of the
top-k heads runs beside them as a named contrast (``residual_slice``)."""

from __future__ import annotations

import pandas as pd
import torch

from ...core.head_names import head_names
from ...interventions.heads import SLICE_CONTRAST, ablate_heads, zero_output_slice
from ...metrics.bootstrap import CI_DEFINITION, bootstrap_ci
from ...models.context import ModelContext
from ...models.placement.streamed_context import StreamedContext
from ...runs.experiment import ExperimentResult
from ...viz.heads import change_by_layer
from .configs import HeadAblationConfig
from .head_sets_file import read_head_sets
from .inputs import massive_layers, sequences
from .passes import head_passes
from .reduced_forward import Probe, residual_tokens
from .scores import heads_of

CHANGE_DEFINITION = ("change = ablated / clean - 1 per sequence, at the same entry (the clean run's massive entries, "
                     "detected per sequence at each block's resid_post) or of the top-1 |a| of the sequence; "
                     "mean over sequences")


def _pct(values: torch.Tensor, n_boot: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    lo, hi = bootstrap_ci(values, n_boot=n_boot, seed=seed)
    return 100 * values.nanmean(0), 100 * lo, 100 * hi


def compare(clean: Probe, ablated: Probe, labels: dict[tuple[int, int], str], n_boot: int, seed: int
            ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per block: top-1 change with CI; per (block, position, dim): entry change with CI."""
    rel_top1 = ablated.top1 / clean.top1 - 1  # [layer, seq]
    mean, lo, hi = _pct(rel_top1.T, n_boot, seed)
    layers = pd.DataFrame({"layer": clean.layers, "top1_clean": clean.top1.mean(1).numpy(),
                           "top1_ablated": ablated.top1.mean(1).numpy(), "change_pct": mean.numpy(),
                           "ci_low_pct": lo.numpy(), "ci_high_pct": hi.numpy()})
    rows = []
    for layer in clean.layers:
        at = clean.entries[layer]
        if not len(at):
            continue
        rel = ablated.values[layer] / clean.values[layer] - 1
        frame = pd.DataFrame({"sequence": at[:, 0].numpy(), "position": at[:, 1].numpy(), "dim": at[:, 2].numpy(),
                              "clean": clean.values[layer].numpy(), "ablated": ablated.values[layer].numpy(),
                              "rel": rel.numpy()})
        for (p, d), group in frame.groupby(["position", "dim"]):
            m, low, high = _pct(torch.tensor(group["rel"].to_numpy())[:, None], n_boot, seed)
            rows.append({"layer": layer, "position": p, "token": labels.get((int(group["sequence"].iloc[0]), int(p)), ""),
                         "dim": d, "n_seqs": len(group), "clean_mean": group["clean"].mean(),
                         "ablated_mean": group["ablated"].mean(), "change_pct": float(m[0]),
                         "ci_low_pct": float(low[0]), "ci_high_pct": float(high[0])})
    return layers, pd.DataFrame(rows)


def head_ablation(context: ModelContext | StreamedContext, config: HeadAblationConfig, pieces=None) -> ExperimentResult:
    """Head sets removed on the loaded model, or one block's weights at a time (``--placement streamed``)."""
    passes = head_passes(context, pieces)
    options, layout = context.options, context.layout
    criterion, n_layers = options.criterion, passes.n_layers
    if config.head_sets is not None:
        sets = read_head_sets(config.head_sets, n_layers, passes.n_heads, passes.name)
    seqs, reference, origin = sequences(context, config, held_out=config.how == "mean")
    rank_by, fallback = None, ""  # None: the file's head sets, ranked by whatever ranked them
    if config.head_sets is None:
        scores = passes.scores(seqs, config.batch_size)
        rank_by, fallback = scores.rank_by_used(config.rank_by, criterion)
        sets = scores.head_sets(config.k, config.n_random, options.seed, rank_by)
    means = passes.means(config.how, reference, sorted(set(sets["layer"].tolist())))
    labels = {(b, p): tok for b in range(len(seqs))
              for p, tok in enumerate(residual_tokens(passes.tokenizer, seqs[b], layout=layout))}
    draws = sorted(set(sets.loc[sets["set"] == "random", "draw"].astype(int)))
    conditions = [(name, 0, heads_of(sets, name), config.how) for name in ("top", "bottom") if heads_of(sets, name)]
    conditions += [("random", d, heads_of(sets, "random", d), config.how) for d in draws]
    if heads_of(sets, "top"):
        conditions.append((f"top_{SLICE_CONTRAST}", 0, heads_of(sets, "top"), SLICE_CONTRAST))
    ablations = [[zero_output_slice(li, h, passes.d_head) for li, h in heads] if how == SLICE_CONTRAST
                 else ablate_heads(heads, how, means) for _, _, heads, how in conditions]
    clean, ablated_probes = passes.probes(seqs, ablations, config.batch_size)
    by_layer, by_entry, ppl_rows = [], [], [{"condition": "clean", "draw": 0, "heads": "", "how": "",
                                              "perplexity": clean.ppl(), "change_pct": 0.0}]
    for (name, draw, heads, how), ablated in zip(conditions, ablated_probes):
        layer_table, entry_table = compare(clean, ablated, labels, config.n_boot, options.seed)
        label = f"{name}-{len(heads)}" + (f" #{draw}" if name == "random" else "")
        for table in (layer_table, entry_table):
            table.insert(0, "condition", label)
            table.insert(1, "draw", draw)
            table.insert(2, "heads", head_names(heads))
        by_layer.append(layer_table)
        by_entry.append(entry_table)
        ppl = ablated.ppl()
        ppl_rows.append({"condition": label, "draw": draw, "heads": head_names(heads), "how": how,
                         "perplexity": ppl, "change_pct": 100 * (ppl / clean.ppl() - 1)})
    layer_table, entry_table, ppl_table = pd.concat(by_layer), pd.concat(by_entry), pd.DataFrame(ppl_rows)
    massive = massive_layers(clean, len(seqs))
    lines = [f"head ablation ({config.how} on hook_z) over {len(seqs)} sequences of {config.seq_len} tokens ({config.text}); "
             + (f"heads ranked by {rank_by} score" if rank_by else f"head sets of {config.head_sets}"),
             *([f"  {fallback}"] if fallback else []),
             f"  {CHANGE_DEFINITION}; CI = {CI_DEFINITION.format(n_boot=config.n_boot, seed=options.seed)}",
             f"  {SLICE_CONTRAST}: the earlier study's 'pruning', zeroing dims d_head*h..d_head*(h+1)-1 of hook_attn_out",
             "  perplexity = exp(sum of next-token NLL / predicted tokens) over the same sequences",
             "  blocks with massive entries (clean, >= half of the sequences): "
             + (f"{massive[0]}-{massive[-1]}" if massive else "none")]
    shown = [massive[0], massive[-1]] if massive else [n_layers - 1]
    for row in ppl_table.itertuples():
        if row.condition == "clean":
            lines.append(f"  clean: perplexity {row.perplexity:.3f}")
            continue
        sub = layer_table[layer_table["condition"] == row.condition].set_index("layer")
        at = ", ".join(f"block {li} {sub.loc[li, 'change_pct']:+.2f}% [{sub.loc[li, 'ci_low_pct']:+.2f}, "
                       f"{sub.loc[li, 'ci_high_pct']:+.2f}]" for li in dict.fromkeys(shown))
        worst = sub["change_pct"].abs().idxmax()
        lines.append(f"  {row.condition:<22} heads {row.heads}: top-1 {at}; largest |change| block {worst} "
                     f"{sub.loc[worst, 'change_pct']:+.2f}%; perplexity {row.perplexity:.3f} ({row.change_pct:+.2f}%)")
    name = passes.name
    return ExperimentResult(
        tables={"change_by_layer": layer_table.reset_index(drop=True), "entry_changes": entry_table.reset_index(drop=True),
                "perplexity": ppl_table, "head_sets": sets},
        figures={"change_by_layer": change_by_layer(layer_table, f"{name}: top-1 |a| after removing heads "
                                                    f"({config.how}; 95% bootstrap CI over sequences)")},
        summary={"text": origin, "n_sequences": len(seqs), "how": config.how, "massive_layers": massive,
                 "rank_by": rank_by, **({"rank_by_note": fallback} if fallback else {}),
                 "definition": CHANGE_DEFINITION, "perplexity": ppl_table.to_dict("records")},
        lines=lines,
    )
