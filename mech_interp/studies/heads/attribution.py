"""Experiment ``attribution``: who writes each massive entry (embedding, every head, every MLP), down to
the neurons and single weights of the writing MLP, and what zeroing the top neuron / weight does
against zeroing random ones."""

from __future__ import annotations

import random
from contextlib import nullcontext

import pandas as pd
import torch

from ...metrics.attribution import WRITE_DEFINITION, direct_writes, neuron_writes
from ...models.context import ModelContext
from ...runs.experiment import ExperimentResult
from ...validation.errors import NothingToMeasure
from ...viz.heads import component_bars, effect_bars
from .configs import AttributionConfig
from .inputs import first_massive, massive_layers, prompt_tokens, sequences
from .neuron_edits import ZeroNeuron, zeroed_weights
from .reduced_forward import probe, residual_tokens

WRITER_SHARE = 0.1  # a component is named a writer when it writes at least this share of the value, with its sign
DEFINITIONS = {
    "write": WRITE_DEFINITION,
    "closure": "resid_post value - sum of the writes (float rounding when the decomposition is exact)",
    "writer": f"a component whose write has the value's sign and is at least {WRITER_SHARE:.0%} of it",
    "neuron write": "post[n] * W_out[n, dim] (hook_post x W_out row n); the MLP's write is their sum + b_out[dim]",
    "input weight contribution": "x[i] * W[i, n] for W = W_in / W_gate, x = the MLP's input (after ln2)",
}


def _massive_keys(clean, layers: list[int]) -> set[tuple[int, int, int, int]]:
    return {(layer, *map(int, e)) for layer in layers for e in clean.entries[layer].tolist()}


def _writers(rows: pd.DataFrame) -> pd.DataFrame:
    value = rows["resid_value"].iloc[0]
    same_sign = rows[(rows["write"] * value > 0) & (rows["write"].abs() >= WRITER_SHARE * abs(value))]
    return same_sign.sort_values("write", key=abs, ascending=False)


def attribution(context: ModelContext, config: AttributionConfig) -> ExperimentResult:
    model, options, layout = context.model, context.options, context.layout
    criterion, n_layers = options.criterion, model.cfg.n_layers
    prompt = prompt_tokens(context, config.prompt)
    labels = residual_tokens(model.tokenizer, prompt[0], layout=layout)
    clean = probe(model, prompt, list(range(n_layers)), criterion, logits=False)
    first = first_massive(clean, 1, model.cfg.model_name, criterion)
    layers = massive_layers(clean, 1)
    keys = _massive_keys(clean, layers)
    entries = torch.tensor(sorted({k[1:] for k in keys}))
    writes = direct_writes(model, prompt, entries, layout=layout)
    table = writes.table(layers)
    table = table[[(l, s, p, d) in keys for l, s, p, d in
                   zip(table["layer_measured"], table["sequence"], table["position"], table["dim"])]].reset_index(drop=True)
    table.insert(3, "token", [labels[p] for p in table["position"]])
    lines = [f"attribution on {config.prompt!r}: direct writes to every massive entry at each block from its first "
             f"appearance (block {first}); {DEFINITIONS['write']}",
             f"  max |closure| over all entries and blocks: {table['closure'].abs().max():.3g} "
             f"(largest value {table['resid_value'].abs().max():.4g})"]
    for (p, d), rows in table.groupby(["position", "dim"], sort=False):
        at = rows[rows["layer_measured"] == rows["layer_measured"].min()]
        who = _writers(at)
        lines.append(f"  position {p} {labels[p]!r} dim {d} = {at['resid_value'].iloc[0]:.1f} at block "
                     f"{int(at['layer_measured'].iloc[0])}: writers " + (", ".join(
                         f"{r.component} {r.write:+.1f} ({r.share_of_value:.0%})" for r in who.head(4).itertuples())
                         or "none above the threshold (many small writes)"))

    # the prompt's largest entry at its first massive block, and the MLP that writes most of it
    top = table[table["layer_measured"] == first].sort_values("resid_value", key=abs, ascending=False).iloc[0]
    entry = (0, int(top["position"]), int(top["dim"]))
    at_first = table[(table["layer_measured"] == first) & (table["position"] == entry[1]) & (table["dim"] == entry[2])]
    mlps = at_first[at_first["kind"] == "mlp"]
    if mlps.empty:
        raise NothingToMeasure(f"{model.cfg.model_name} has no MLP blocks: the neuron and weight drill-down needs one")
    mlp_row = mlps.loc[(mlps["write"] * top["resid_value"]).idxmax()]
    mlp_layer = int(mlp_row["layer"])
    drill = neuron_writes(model, prompt, mlp_layer, entry, config.top_neurons, config.top_weights)
    lines.append(f"  writing MLP for position {entry[1]} dim {entry[2]}: block {mlp_layer}, write {mlp_row['write']:+.1f} "
                 f"(hook_mlp_out {drill.mlp_out:+.1f}, b_out {drill.b_out:+.3f})")
    lines.append("    top neurons (post x W_out[n, dim]): " + ", ".join(
        f"{r.neuron}: {r.activation:+.2f} x {r.w_out:+.3f} = {r.write:+.1f} ({r.share_of_mlp_write:.0%})"
        for r in drill.neurons.head(config.top_neurons).itertuples()))
    top_neuron = int(drill.neurons["neuron"].iloc[0])
    for matrix in ("W_in", "W_gate"):
        rows = drill.input_weights[(drill.input_weights["matrix"] == matrix) & (drill.input_weights["neuron"] == top_neuron)]
        if not rows.empty:
            lines.append(f"    neuron {top_neuron}'s top {matrix} weights (x[i] x {matrix}[i, n], pre-activation "
                         f"{rows['pre_activation'].iloc[0]:+.2f}): " + ", ".join(
                             f"[{r.input_index}] {r.x:+.2f} x {r.weight:+.3f} = {r.contribution:+.2f}" for r in rows.head(3).itertuples()))

    # the same decomposition averaged over sequences, and the effect of edits on perplexity there
    seqs, _, origin = sequences(context, config)
    seq_clean = probe(model, seqs, [first], criterion)
    seq_entries = seq_clean.entries[first]
    seq_rows = []
    if len(seq_entries):
        seq_writes = direct_writes(model, seqs, seq_entries, layout=layout)
        long = seq_writes.table([first])
        long["position_kind"] = ["first" if p == 0 else "later" for p in long["position"]]
        seq_rows = (long.groupby(["dim", "position_kind", "component", "kind", "layer", "head"], sort=False)
                    .agg(mean_write=("write", "mean"), mean_share=("share_of_value", "mean"), n_entries=("write", "size"),
                         mean_value=("resid_value", "mean"), max_abs_closure=("closure", lambda c: c.abs().max()))
                    .reset_index())
        for (d, kind), rows in seq_rows.groupby(["dim", "position_kind"], sort=False):
            best = rows.sort_values("mean_write", key=abs, ascending=False).head(3)
            lines.append(f"  over {len(seqs)} sequences, block {first}, dim {d} at {kind} positions (n={int(rows['n_entries'].iloc[0])}, "
                         f"mean {rows['mean_value'].iloc[0]:.1f}): " + ", ".join(
                             f"{r.component} {r.mean_write:+.1f} ({r.mean_share:.0%})" for r in best.itertuples()))
    seq_table = pd.DataFrame(seq_rows)

    mlp = model.blocks[mlp_layer].mlp
    rng = random.Random(options.seed)
    others = [n for n in range(mlp.W_out.shape[0]) if n != top_neuron]
    edits = [("none", None, nullcontext), (f"top neuron {mlp_layer}.{top_neuron}", ZeroNeuron(mlp_layer, top_neuron), nullcontext)]
    edits += [(f"random neuron {mlp_layer}.{n}", ZeroNeuron(mlp_layer, n), nullcontext) for n in rng.sample(others, config.n_random)]
    edits.append((f"top W_out[{top_neuron}, {entry[2]}]", None, lambda: zeroed_weights(mlp.W_out, [(top_neuron, entry[2])])))
    for _ in range(config.n_random):
        index = (rng.randrange(mlp.W_out.shape[0]), rng.randrange(mlp.W_out.shape[1]))
        edits.append((f"random W_out[{index[0]}, {index[1]}]", None, lambda index=index: zeroed_weights(mlp.W_out, [index])))
    for matrix in ("W_in", "W_gate"):
        rows = drill.input_weights[(drill.input_weights["matrix"] == matrix) & (drill.input_weights["neuron"] == top_neuron)]
        if rows.empty:
            continue
        index = (int(rows["input_index"].iloc[0]), top_neuron)
        edits.append((f"top {matrix}[{index[0]}, {index[1]}]", None,
                      lambda matrix=matrix, index=index: zeroed_weights(getattr(mlp, matrix), [index])))
        param = getattr(mlp, matrix)
        for _ in range(config.n_random):
            rand = (rng.randrange(param.shape[0]), rng.randrange(param.shape[1]))
            edits.append((f"random {matrix}[{rand[0]}, {rand[1]}]", None,
                          lambda matrix=matrix, rand=rand: zeroed_weights(getattr(mlp, matrix), [rand])))
    effect_rows = []
    prompt_entry = {first: torch.tensor([entry])}
    seq_entry = {first: seq_entries}
    for name, hook, context in edits:
        hooks = [hook.as_hook()] if hook is not None else []
        with context():
            on_prompt = probe(model, prompt, [first], criterion, hooks, prompt_entry, logits=False)
            on_seqs = probe(model, seqs, [first], criterion, hooks, seq_entry)
        effect_rows.append({"edit": name, "kind": name.split(" ")[0], "massive_value": float(on_prompt.values[first][0]),
                            "prompt_top1": float(on_prompt.top1[0, 0]),
                            "seq_massive_mean": float(on_seqs.values[first].mean()) if len(seq_entries) else float("nan"),
                            "seq_top1_mean": float(on_seqs.top1[0].mean()), "perplexity": on_seqs.ppl()})
    effects = pd.DataFrame(effect_rows)
    base = effects.iloc[0]
    effects["massive_change_pct"] = 100 * (effects["massive_value"] / base["massive_value"] - 1)
    effects["perplexity_change_pct"] = 100 * (effects["perplexity"] / base["perplexity"] - 1)
    lines.append(f"  edits at block {mlp_layer} (massive value at position {entry[1]} dim {entry[2]}, block {first}, prompt; "
                 f"perplexity over the {len(seqs)} sequences):")
    for r in effects.itertuples():
        lines.append(f"    {r.edit:<28} massive {r.massive_value:10.1f} ({r.massive_change_pct:+7.2f}%)  "
                     f"perplexity {r.perplexity:10.3f} ({r.perplexity_change_pct:+.2f}%)")

    name = model.cfg.model_name
    bars = at_first.copy()
    return ExperimentResult(
        tables={"attribution_prompt": table, "attribution_sequences": seq_table, "neurons": drill.neurons,
                "input_weights": drill.input_weights, "edits": effects},
        figures={"writers": component_bars(bars, f"{name}: direct writes to position {entry[1]} {labels[entry[1]]!r} dim "
                                                 f"{entry[2]} at block {first} (value {top['resid_value']:.1f})"),
                 "neurons": component_bars(drill.neurons.head(20).assign(component=lambda f: f["neuron"].astype(str)),
                                           f"{name}: neurons of MLP {mlp_layer} writing dim {entry[2]}"),
                 "edits": effect_bars(effects, f"{name}: zeroing the top neuron / weight of MLP {mlp_layer} vs random ones")},
        summary={"first_massive_layer": first, "entry": list(entry), "writing_mlp": mlp_layer, "top_neuron": top_neuron,
                 "text": origin, "n_sequences": len(seqs), "definitions": DEFINITIONS,
                 "max_abs_closure": float(table["closure"].abs().max()), "edits": effects.to_dict("records")},
        lines=lines,
    )
