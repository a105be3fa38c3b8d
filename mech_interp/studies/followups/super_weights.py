"""Experiment ``super-weights``: the super weights of Yu et al. (2024) found by one forward, each candidate zeroed,
zeroed with its spike restored, and scaled, beside the massive activations the layer-wise detection finds.

One forward scans every block's MLP down-projection (``down_proj_scan``): its largest |input| channel and |output| dim
on the prompt name one weight per block, ``W_out[row, col]``, ranked by what that one weight writes to the output
spike. The ``--top-k`` best are edited one forward each (``down_proj_edits``), with every condition in that forward;
each finished candidate is saved as a piece, so a killed run resumes after the last one.
"""

from __future__ import annotations

import pandas as pd
import torch

from ...metrics.relative_change import change_text
from ...models.context import ModelContext
from ...runs.experiment import ExperimentResult
from ...validation.errors import UsageError
from ...viz.super_weights import effect_bars, spike_lines
from .down_proj_edits import conditions, edited_forward
from .down_proj_scan import Scan, down_projections, scan_down_proj
from .scan_inputs import scan_inputs
from .super_weight_config import SuperWeightsConfig

MIN_WINDOW_SHARE = 0.5  # a dim is massive at a block when at least this share of the windows has it there
DEFINITIONS = {
    "input spike": "the largest |blocks.L.mlp.hook_post| over the prompt's positions and hidden channels (the "
                   "down-projection's input, [pos, d_mlp]), with its sign; its channel is the row",
    "output spike": "the largest |blocks.L.hook_mlp_out| over the prompt's positions and dims (the down-projection's "
                    "output, [pos, d_model]), with its sign; its dim is the col",
    "candidate": "block L's W_out[row, col] (TransformerLens, W_out [d_mlp, d_model]) = HF "
                 "model.layers.L.mlp.down_proj.weight[col, row] (HF stores the transpose, [d_model, d_mlp]; Yu et al.'s "
                 "(layer, row, col) is (L, col, row) here)",
    "write": "post[p, row] x W_out[row, col] at the output spike's position p: what that one weight adds to the output "
             "spike; share = write / output spike; candidates are ranked by |write|",
    "relation": "the output spike's entry (p, col) of the prompt's residual stream by the massive criterion, before the "
                "block (resid_pre) and after it (resid_post): creates (massive after only), removes (before only), keeps "
                "(both), none",
    "massive blocks": f"the blocks whose resid_post holds a massive entry in dim col in at least {MIN_WINDOW_SHARE:.0%} "
                      "of the windows (the layer-wise detection)",
    "zero / xS": "the weight multiplied by 0 / S: every row's mlp_out[..., col] += (S - 1) x post[..., row] x "
                 "W_out[row, col], which is what editing the weight does",
    "zero, spike restored": "the weight zeroed, then in each sequence mlp_out[q, col] set back to its clean value, q "
                            "the position of the sequence's largest clean |mlp_out[:, col]| (Yu et al.'s super activation "
                            "restored)",
    "spike change": "the prompt's resid_post at block L, entry (p, col) of the output spike: edited / clean - 1",
    "massive change": "the prompt's largest massive entry at the first block where it has one (block F): edited / clean "
                      "- 1; n/a for a candidate after block F, which cannot change it",
    "perplexity": "exp(sum of next-token NLL / predicted tokens) over the windows",
}


def _blocks_text(blocks: list[int]) -> str:
    """0-based blocks as runs: ``11-27``, ``2, 9-11``; ``none`` for none."""
    runs: list[list[int]] = []
    for block in sorted(blocks):
        if runs and block == runs[-1][1] + 1:
            runs[-1][1] = block
        else:
            runs.append([block, block])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs) or "none"


def _layerwise(scan: Scan, n_windows: int) -> pd.DataFrame:
    """Per block, what the layer-wise detection finds on the windows: the share of windows with a massive entry, and
    the dims massive in at least ``MIN_WINDOW_SHARE`` of them."""
    rows = []
    for layer, entries in sorted(scan.massive.items()):
        windows = entries[entries[:, 0] > 0]
        per_dim = pd.DataFrame(windows[:, [0, 2]].numpy(), columns=["window", "dim"]).drop_duplicates()
        counts = per_dim["dim"].value_counts()
        dims = sorted(int(d) for d, n in counts.items() if n >= MIN_WINDOW_SHARE * n_windows)
        rows.append({"layer": layer, "window_share_with_massive": windows[:, 0].unique().numel() / n_windows,
                     "massive_dims": " ".join(map(str, dims))})
    return pd.DataFrame(rows)


def _prompt_massive(scan: Scan) -> tuple[int | None, tuple[int, int] | None, float]:
    """The prompt's massive activation: the first block where the prompt has a massive entry, its largest entry there
    (position, dim) and its value; (None, None, NaN) without one."""
    for layer in sorted(scan.massive):
        mine = scan.massive[layer][:, 0] == 0
        if mine.any():
            best = int(scan.values[layer][mine].abs().argmax())
            _, position, dim = scan.massive[layer][mine][best].tolist()
            return layer, (position, dim), float(scan.values[layer][mine][best])
    return None, None, float("nan")


def _change_pct(new: float, old: float) -> float:
    return 100 * (new / old - 1) if old else float("nan")


def super_weights(context: ModelContext, config: SuperWeightsConfig, pieces=None) -> ExperimentResult:
    """Scan every block's down-projection in one forward; edit the ``top_k`` candidates, one forward each."""
    model, options = context.model, context.options
    n_layers, name = model.cfg.n_layers, model.cfg.model_name
    down_projections(model)  # a model it cannot scan is refused before anything runs
    if config.top_k > n_layers:
        raise UsageError(f"--top-k {config.top_k} is more than the {n_layers} candidates of {name} (one per block)")
    inputs = scan_inputs(context, config.prompt, config.text, config.n_seqs, config.seq_len, context.layout)
    scan = scan_down_proj(model, inputs, options.criterion)
    spikes, n_windows = scan.spikes, inputs.n_windows
    layerwise = _layerwise(scan, n_windows)
    massive_at = {int(r.layer): [int(d) for d in r.massive_dims.split()] for r in layerwise.itertuples()}
    spikes["massive_blocks"] = [_blocks_text([b for b, dims in massive_at.items() if c in dims]) for c in spikes["col"]]
    first, target, target_value = _prompt_massive(scan)
    n_tokens = scan.n_predicted * n_windows
    clean_ppl = float(torch.exp(scan.nll.double().sum() / n_tokens))

    edits = conditions(config.scales)
    rows = []
    for r in spikes.head(config.top_k).itertuples():
        reads = [(r.layer, r.output_position, r.col)]
        measured = first is not None and r.layer <= first  # a later block cannot change the entry at block F
        if measured:
            reads.append((first, *target))
        key = {"candidate": [r.layer, r.row, r.col], "conditions": [e.name for e in edits]}
        saved = pieces.load_piece(key) if pieces is not None else None
        if saved is None:
            edited = edited_forward(model, inputs, r.layer, r.row, r.col, edits, scan.restore[r.layer], reads)
            saved = {"values": edited.values.tolist(), "nll": edited.nll.double().sum(1).tolist()}
            if pieces is not None:
                pieces.save_piece(key, saved)
        for edit, values, nll in zip(edits, saved["values"], saved["nll"]):
            massive = values[1] if measured else float("nan")
            perplexity = float(torch.exp(torch.tensor(nll, dtype=torch.float64) / n_tokens))
            rows.append({"rank": r.rank, "layer": r.layer, "row": r.row, "col": r.col, "condition": edit.name,
                         "scale": edit.scale, "spike_restored": edit.restore, "spike_clean": r.resid_after,
                         "spike": values[0], "spike_change_pct": _change_pct(values[0], r.resid_after),
                         "massive_clean": target_value if measured else float("nan"), "massive": massive,
                         "massive_change_pct": _change_pct(massive, target_value) if measured else float("nan"),
                         "perplexity_clean": clean_ppl, "perplexity": perplexity,
                         "perplexity_change_pct": _change_pct(perplexity, clean_ppl)})
    effects = pd.DataFrame(rows)
    first_windows = next((int(r.layer) for r in layerwise.itertuples()
                          if r.window_share_with_massive >= MIN_WINDOW_SHARE), None)
    lines = [f"super weights (Yu et al. 2024) of {name}: one forward scans every block's MLP down-projection on "
             f"{config.prompt!r}; the top {config.top_k} candidates edited, one forward each; perplexity over "
             f"{n_windows} windows of {config.seq_len} tokens ({inputs.text})",
             *(f"  {term}: {text}" for term, text in DEFINITIONS.items()),
             _layerwise_line(layerwise, first_windows)]
    if first is None:
        lines.append(f"  prompt: no massive entry at any block by {options.criterion}: massive change n/a")
    else:
        lines.append(f"  prompt: first massive block {first}; its largest massive entry there: position {target[0]} "
                     f"{inputs.labels[target[0]]!r} dim {target[1]} = {target_value:.5g}")
    lines.append("  candidates by |write| (TransformerLens W_out[row, col] = HF model.layers.L.mlp.down_proj.weight[col, "
                 "row]):")
    lines += [_candidate_line(r) for r in spikes.head(config.top_k).itertuples()]
    lines.append("  edits (spike: the prompt's resid_post at the output spike's entry of the candidate's block; massive: "
                 + (f"position {target[0]} dim {target[1]} at block {first}" if first is not None else "n/a")
                 + f"; perplexity over the windows, clean {clean_ppl:.3f}):")
    for r in effects.itertuples():
        massive = (f"massive {r.massive:10.5g} ({change_text(r.massive, r.massive_clean):>9})" if r.massive == r.massive
                   else f"massive {'n/a':>22}")
        lines.append(f"    #{r.rank} block {r.layer} W_out[{r.row}, {r.col}] {r.condition:<21} spike {r.spike_clean:10.5g} -> "
                     f"{r.spike:10.5g} ({change_text(r.spike, r.spike_clean):>9})  {massive}  perplexity "
                     f"{r.perplexity:10.3f} ({change_text(r.perplexity, clean_ppl)})")
    return ExperimentResult(
        tables={"spikes": spikes, "effects": effects, "layerwise_massive": layerwise},
        figures={"spikes": spike_lines(spikes, f"{name}: MLP down-projection spikes per block on {config.prompt!r}"),
                 "effects": effect_bars(effects, clean_ppl, f"{name}: the top {config.top_k} candidate weights edited")},
        summary={"prompt": config.prompt, "text": inputs.text, "n_windows": n_windows,
                 "first_massive_block_prompt": first, "first_massive_block_windows": first_windows,
                 "massive_entry": [*target, target_value] if target is not None else None,
                 "clean_perplexity": clean_ppl, "definitions": DEFINITIONS,
                 "candidates": spikes.head(config.top_k)[["rank", "layer", "row", "col", "hf_row", "hf_col", "weight",
                                                          "write", "relation"]].to_dict("records"),
                 "effects": effects.to_dict("records")},
        lines=lines,
    )


def _layerwise_line(layerwise: pd.DataFrame, first: int | None) -> str:
    by_dim: dict[int, list[int]] = {}
    for r in layerwise.itertuples():
        for dim in map(int, r.massive_dims.split()):
            by_dim.setdefault(dim, []).append(int(r.layer))
    dims = ", ".join(f"dim {d} at blocks {_blocks_text(b)}" for d, b in sorted(by_dim.items(), key=lambda kv: kv[1][0]))
    return (f"  layer-wise (the windows): first massive block {first if first is not None else 'none'}; massive dims "
            f"(in >= {MIN_WINDOW_SHARE:.0%} of the windows): {dims or 'none'}")


def _candidate_line(r) -> str:
    return (f"    #{r.rank} block {r.layer} W_out[{r.row}, {r.col}] = HF down_proj.weight[{r.hf_row}, {r.hf_col}] = "
            f"{r.weight:+.4g}: input spike {r.input_spike:+.5g} (row {r.row} at {r.input_position} {r.input_token!r}), "
            f"output spike {r.output_spike:+.5g} (dim {r.col} at {r.output_position} {r.output_token!r}); write "
            f"{r.write:+.5g} ({r.write_share:.0%} of the spike); relation: {r.relation}; dim {r.col} massive at blocks "
            f"{r.massive_blocks}")
