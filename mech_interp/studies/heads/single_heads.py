"""Experiment ``head-sweep``: every head removed alone, on the feature view's prompt and averaged over
sequences: the change of the clean massive entries at one block and of perplexity, per head."""

from __future__ import annotations

import pandas as pd
import torch

from ...core.head_names import head_name
from ...models.context import ModelContext
from ...models.hook_names import check_layer
from ...runs.experiment import ExperimentResult
from ...validation.errors import UsageError
from ...viz.heads import layer_head_heatmap
from .configs import HeadSweepConfig
from .inputs import first_massive, head_means, prompt_tokens, sequences
from .reduced_forward import probe, residual_tokens
from .sweep import Sweep, fast_sweep

DEFINITIONS = {
    "massive_change_pct": "per sequence, 100 x (ablated / clean - 1) of its largest clean massive entry at the measured "
                          "block's resid_post (same position and dim), averaged over sequences; heads of later blocks "
                          "cannot change it (0 by causality)",
    "perplexity": "exp(sum of next-token NLL / predicted tokens) over the input",
}


def _tables(sweep: Sweep, input_name: str, labels: list[list[str]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    n_seq = sweep.clean.top1.shape[1]
    entries = sweep.entries
    long = []
    for i, (li, h) in enumerate(sweep.heads):
        for e in range(entries.shape[0]):
            b, p, d = entries[e].tolist()
            clean, ablated = float(sweep.clean.values[sweep.layer][e]), float(sweep.values[i, e])
            long.append({"input": input_name, "layer": li, "head": h, "sequence": b, "position": p, "token": labels[b][p],
                         "dim": d, "clean": clean, "ablated": ablated, "change": ablated - clean,
                         "change_pct": 100 * (ablated / clean - 1)})
    clean_values = sweep.clean.values[sweep.layer]
    top = torch.full((n_seq,), -1, dtype=torch.long)  # per sequence, its largest clean entry
    for b in range(n_seq):
        mine = (entries[:, 0] == b).nonzero().flatten()
        if len(mine):
            top[b] = mine[clean_values[mine].abs().argmax()]
    has = top >= 0
    clean_ppl = float(torch.exp(sweep.clean.nll.double().sum() / (sweep.clean.n_predicted * n_seq)))
    ppl = torch.exp(sweep.nll.double().sum(1) / (sweep.clean.n_predicted * n_seq))
    rel = sweep.values[:, top[has]] / clean_values[top[has]] - 1  # [ablation, seq with an entry]
    per_head = pd.DataFrame({
        "input": input_name, "layer": [li for li, _ in sweep.heads], "head": [h for _, h in sweep.heads],
        "measured_layer": sweep.layer,
        "massive_change_pct": (100 * rel.mean(1)).numpy() if has.any() else float("nan"),
        "top1_clean": float(sweep.clean.top1[0].mean()), "top1_ablated": sweep.top1.mean(1).numpy(),
        "perplexity_clean": clean_ppl, "perplexity": ppl.numpy(), "perplexity_change_pct": (100 * (ppl / clean_ppl - 1)).numpy()})
    return per_head, pd.DataFrame(long)


def head_sweep(context: ModelContext, config: HeadSweepConfig, pieces=None) -> ExperimentResult:
    model, options, layout = context.model, context.options, context.layout
    criterion = options.criterion
    layer = check_layer(model.cfg.n_layers, config.layer, model.cfg.model_name) if config.layer is not None else None
    prompt = prompt_tokens(context, config.prompt)
    seqs, reference, origin = sequences(context, config, held_out=config.how == "mean")
    if layer is None:
        layer = first_massive(probe(model, prompt, list(range(model.cfg.n_layers)), criterion, logits=False), 1,
                              model.cfg.model_name, criterion)
    means = head_means(model, config.how, reference, range(model.cfg.n_layers))
    per_head, long = [], []
    for name, tokens in (("prompt", prompt), ("sequences", seqs)):
        if config.how == "mean" and tokens.shape[1] > reference.shape[1]:
            raise UsageError(f"--how mean writes per-position means of {reference.shape[1]}-token windows, and the "
                             f"{name} has {tokens.shape[1]} tokens: raise --seq-len to at least {tokens.shape[1]}")
        sweep = fast_sweep(model, tokens, layer, criterion, config.how, means, config.heads_per_forward, progress=True,
                           pieces=pieces, piece_key={"input": name, "measured_layer": layer}, layout=layout)
        heads_table, entries_table = _tables(sweep, name, [residual_tokens(model.tokenizer, row, layout=layout) for row in tokens])
        per_head.append(heads_table)
        long.append(entries_table)
    heads, entries = pd.concat(per_head, ignore_index=True), pd.concat(long, ignore_index=True)
    title = f"{model.cfg.model_name}: one head removed ({config.how})"
    figures = {}
    for name in ("prompt", "sequences"):
        rows = heads[heads["input"] == name]
        figures[f"massive_change_{name}"] = layer_head_heatmap(
            rows, "massive_change_pct", f"{title}: change of the massive entry at block {layer} ({name})", "%", True)
        figures[f"perplexity_change_{name}"] = layer_head_heatmap(
            rows, "perplexity_change_pct", f"{title}: change of perplexity ({name})", "%", True)
    lines = [f"single-head sweep ({config.how} on hook_z): every head alone; massive entries measured at block {layer} "
             f"resid_post; prompt {config.prompt!r} and {len(seqs)} sequences of {config.seq_len} tokens ({config.text})",
             f"  massive change = {DEFINITIONS['massive_change_pct']}",
             f"  perplexity = {DEFINITIONS['perplexity']}"]
    for name in ("prompt", "sequences"):
        rows = heads[heads["input"] == name]
        top = rows.reindex(rows["massive_change_pct"].abs().sort_values(ascending=False).index).head(5)
        worst = rows.reindex(rows["perplexity_change_pct"].abs().sort_values(ascending=False).index).head(3)
        lines.append(f"  {name}: clean top-1 at block {layer} {rows['top1_clean'].iloc[0]:.1f}, perplexity "
                     f"{rows['perplexity_clean'].iloc[0]:.3f}")
        lines.append("    heads moving the massive entry most: " + ", ".join(
            f"{head_name(r.layer, r.head)} {r.massive_change_pct:+.2f}%" for r in top.itertuples()))
        lines.append("    heads moving perplexity most: " + ", ".join(
            f"{head_name(r.layer, r.head)} {r.perplexity_change_pct:+.2f}%" for r in worst.itertuples()))
    return ExperimentResult(
        tables={"sweep_heads": heads, "sweep_entries": entries}, figures=figures,
        summary={"measured_layer": layer, "text": origin, "n_sequences": len(seqs), "how": config.how,
                 "definitions": DEFINITIONS},
        lines=lines,
    )
