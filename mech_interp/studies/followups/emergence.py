"""When massive activations and attention sinks appear over training: the layer-wise statistics and the attention to
the first token of every checkpoint of a series, as a table and a figure over optimizer steps.

Each checkpoint (``checkpoint_series``) is loaded alone, measured on the same text (tokenized with its own tokenizer),
and freed before the next loads. Its row is saved as a piece as soon as it is measured: a run killed part way
computes only the checkpoints it had not finished when run again.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float, Int

from ...core.token_layout import TokenLayout
from ...data.texts import check_text, load_text
from ...data.tokens import windows
from ...metrics.attention_scores import SINK_DEFINITION, key_score, sink_share, token_keys
from ...metrics.layer_stats import collect_layer_stats
from ...models.hook_names import engine_hooks, pattern
from ...models.hooked_model import HookedModel
from ...runs.experiment import ExperimentResult
from ...validation.errors import UsageError
from ...viz.emergence import block_heatmap, emergence_lines
from .checkpoint_series import SeriesCheckpoint, check_hub, load, read_series
from .default_series import DEFAULT_SERIES, ensure_trained, is_trained
from .emergence_config import MAX_DEFAULT_SEQ_LEN, EmergenceConfig

DEFINITIONS = {
    "first_massive_layer": "the first 0-based block L (blocks.L.hook_resid_post) whose hidden state holds a massive "
                           "activation in at least half of the sequences; none when no block does",
    "top1, median": "at the first massive layer (at the last block where there is none): mean over sequences of the "
                    "largest / the lower median |a| of each sequence's hidden state (all positions x dims)",
    "top1_over_median": "mean top1 / mean median at that block (a ratio of the two means)",
    "max_top1_over_median": "the largest top1_over_median over all blocks, and its block",
    "sink_share": SINK_DEFINITION + ", over the heads of every block (Gu et al. 2024)",
    "attention_to_first_token": "mean over blocks and heads of each head's mean attention to token 0 (residual "
                                "position 0: a learned prefix position where the model has one; key slots excluded) "
                                "over the queries q > 0, averaged over sequences",
}
STEP_AXIS = "optimizer step"
ORDER_AXIS = "checkpoint (in the order of --models)"


def series_of(config: EmergenceConfig) -> list[SeriesCheckpoint]:
    """The checkpoints ``config`` names: its ``--series`` or ``--models``, or the default series (``default_series``,
    read as the trainer left it)."""
    if config.uses_default_series:
        return read_series(DEFAULT_SERIES, None)
    return read_series(config.series, config.models)


def checked_series(config: EmergenceConfig, check_devices: bool = True) -> list[SeriesCheckpoint]:
    """The series, refused in one line before any checkpoint loads when it cannot be measured (``read_series``, the
    hub, the text, the sequence length, and, unless the run goes to another machine, the device). The default series
    before it is trained: the text and the device only (the trainer checks the rest when it trains it)."""
    untrained = config.uses_default_series and not is_trained()
    checkpoints = [] if untrained else series_of(config)
    check_hub(checkpoints)
    for checkpoint in checkpoints:
        if config.seq_len and checkpoint.n_ctx is not None and config.seq_len > checkpoint.n_ctx:
            raise UsageError(f"--seq-len {config.seq_len} is longer than the context of {checkpoint.label!r} "
                             f"({checkpoint.n_ctx} tokens)")
    check_text(config.text)
    if check_devices and config.device not in ("auto", "cpu"):
        from ...models.loading import resolve_device

        resolve_device(config.device)
    return checkpoints


def sequence_length(config: EmergenceConfig, checkpoints: list[SeriesCheckpoint]) -> int:
    """``--seq-len``, or the shortest context of the series, at most ``MAX_DEFAULT_SEQ_LEN``."""
    contexts = [c.n_ctx for c in checkpoints if c.n_ctx is not None]
    return config.seq_len or min([MAX_DEFAULT_SEQ_LEN, *contexts])


def emergence(config: EmergenceConfig, pieces=None) -> ExperimentResult:
    """Every checkpoint of the series measured (its row from ``pieces`` when a killed run saved it), then the table,
    the figures and the printed lines."""
    if config.uses_default_series:
        ensure_trained()
    checkpoints = checked_series(config)
    seq_len = sequence_length(config, checkpoints)
    source = load_text(config.text)
    rows, blocks = [], []
    for index, checkpoint in enumerate(checkpoints):
        key = {"checkpoint": checkpoint.identity(), "seq_len": seq_len}
        saved = pieces.load_piece(key) if pieces is not None else None
        if saved is None:
            print(f"[{index + 1}/{len(checkpoints)}] {checkpoint.label}", flush=True)
            model = load(checkpoint, config.device, config.dtype, config.prepend_bos)
            layout = checkpoint.spec.metadata().layout if checkpoint.spec is not None else TokenLayout()
            seqs = windows(model.tokenizer, source.text, seq_len, config.n_seqs, config.prepend_bos, source.name,
                           model.cfg.n_ctx, add_special_tokens=source.special_tokens)
            saved = measure(model, layout, seqs, config)
            del model
            if pieces is not None:
                pieces.save_piece(key, saved)
        described = {"checkpoint": checkpoint.label, "step": checkpoint.step, "model": checkpoint.source}
        rows.append({**described, **{k: checkpoint.recorded.get(k) for k in ("tokens", "train_loss", "val_loss")},
                     **saved["row"]})
        blocks += [{**described, **block} for block in saved["blocks"]]
    table = _typed(pd.DataFrame(rows), ("step", "tokens", "first_massive_layer"))
    per_block = _typed(pd.DataFrame(blocks), ("step",))
    known_steps = table["step"].notna().all()
    x, x_title = ("step", STEP_AXIS) if known_steps else ("order", ORDER_AXIS)
    table.insert(0, "order", range(len(table)))
    per_block["order"] = per_block["checkpoint"].map(dict(zip(table["checkpoint"], table["order"])))
    what = (f"default series {DEFAULT_SERIES}" if config.uses_default_series
            else f"series {config.series}" if config.series.strip() else f"{len(checkpoints)} models")
    title = f"{what}: {len(checkpoints)} checkpoints, {config.n_seqs} x {seq_len} tokens of {source.name}"
    return ExperimentResult(
        tables={"emergence": table, "per_block": per_block},
        figures={"emergence": emergence_lines(table, x, x_title, title),
                 "per_block": block_heatmap(per_block, x, x_title, f"{title}: top1 / median per block")},
        summary={"text": source.name, "seq_len": seq_len, "n_checkpoints": len(checkpoints),
                 "criterion": {"min_abs": config.min_abs, "min_ratio": config.min_ratio}, "sink_eps": config.sink_eps,
                 "first_massive_layer": {r["checkpoint"]: _none_or_int(r["first_massive_layer"])
                                         for r in table.to_dict("records")},
                 "definitions": DEFINITIONS},
        lines=_lines(table, config, seq_len, source.name, what),
    )


def measure(model: HookedModel, layout: TokenLayout, seqs: Int[torch.Tensor, "seq pos"],
            config: EmergenceConfig) -> dict[str, Any]:
    """One checkpoint's numbers (``DEFINITIONS``): ``row``, its summary, and ``blocks``, one entry per block;
    JSON-able, as a piece keeps them."""
    stats = collect_layer_stats(model, seqs.split(config.batch_size), k=1, criterion=config.criterion,
                                progress=False, layout=layout)
    summary = stats.summary.sort_values("layer").reset_index(drop=True)
    first_attention = first_token_attention(model, seqs, layout, config.batch_size)  # [layer, head]
    per_block_share, share = sink_share(first_attention, config.sink_eps)
    first = stats.first_massive_layer()
    at = first if first is not None else int(summary["layer"].max())
    measured = summary[summary["layer"] == at].iloc[0]
    ratios = summary["ratio_of_means_top1_median"]
    row = {"n_layers": len(summary), "n_sequences": len(seqs), "first_massive_layer": first, "measured_block": at,
           "top1": float(measured["top1"]), "median": float(measured["median"]),
           "top1_over_median": float(measured["ratio_of_means_top1_median"]),
           "max_top1_over_median": float(ratios.max()), "max_block": int(summary["layer"][ratios.idxmax()]),
           "sink_share": share, "attention_to_first_token": float(first_attention.mean())}
    blocks = [{"block": int(r["layer"]), "top1": float(r["top1"]), "median": float(r["median"]),
               "top1_over_median": float(r["ratio_of_means_top1_median"]),
               "seq_fraction_with_massive": float(r["seq_fraction_with_massive"]),
               "attention_to_first_token": float(first_attention[int(r["layer"])].mean()),
               "sink_share": float(per_block_share[int(r["layer"])])}
              for r in summary.to_dict("records")]
    return {"row": row, "blocks": blocks}


def first_token_attention(model: HookedModel, seqs: Int[torch.Tensor, "seq pos"], layout: TokenLayout,
                          batch_size: int) -> Float[torch.Tensor, "layer head"]:
    """Per head: mean attention to residual position 0 over the queries q > 0 (``metrics.attention_scores``'s key
    score; key slots dropped), averaged over the sequences."""
    n_layers = model.cfg.n_layers
    sums = torch.zeros(n_layers, model.cfg.n_heads, dtype=torch.float64)

    def accumulate(attention: Float[torch.Tensor, "batch head query key"], hook, layer: int) -> None:
        sums[layer] += key_score(token_keys(attention, layout.n_key_slots), 0).double().cpu() * attention.shape[0]

    hooks = [(pattern(i), partial(accumulate, layer=i)) for i in range(n_layers)]
    with torch.inference_mode(), engine_hooks(model, hooks):
        for batch in seqs.split(batch_size):
            model(batch.to(model.cfg.device), return_type=None)
    return (sums / len(seqs)).float()


def _typed(table: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """Whole-number columns that may be empty (a step not known, no massive layer) as nullable integers."""
    for column in columns:
        table[column] = pd.array([None if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)
                                  for v in table[column]], dtype="Int64")
    return table


def _none_or_int(value) -> int | None:
    return None if pd.isna(value) else int(value)


def _lines(table: pd.DataFrame, config: EmergenceConfig, seq_len: int, text: str, what: str) -> list[str]:
    lines = [f"emergence over {len(table)} checkpoints ({what}): {config.n_seqs} sequences x {seq_len} tokens of "
             f"{text} each; massive: |a| > {config.min_abs:g} and >= {config.min_ratio:g} x the median |a| of its "
             "hidden state"]
    lines += [f"  {name}: {definition}" for name, definition in DEFINITIONS.items()]
    lines.append(f"  (sink_share with eps = {config.sink_eps:g})")
    width = max(10, *(len(c) for c in table["checkpoint"]))
    lines.append(f"  {'checkpoint':<{width}} {'step':>7} {'first':>5} {'block':>5} {'top1':>9} {'median':>8} "
                 f"{'top1/med':>9} {'max (block)':>13} {'sink_share':>10} {'attn_first':>10}")
    for r in table.to_dict("records"):
        first = "none" if pd.isna(r["first_massive_layer"]) else str(int(r["first_massive_layer"]))
        step = "?" if pd.isna(r["step"]) else str(int(r["step"]))
        largest = f"{r['max_top1_over_median']:.1f} ({r['max_block']})"
        lines.append(f"  {r['checkpoint']:<{width}} {step:>7} {first:>5} {r['measured_block']:>5} {r['top1']:9.2f} "
                     f"{r['median']:8.3f} {r['top1_over_median']:9.1f} {largest:>13} {r['sink_share']:10.2f} "
                     f"{r['attention_to_first_token']:10.3f}")
    massive = [r for r in table.to_dict("records") if not pd.isna(r["first_massive_layer"])]
    lines.append("  first checkpoint with a massive activation: " + (
        f"{massive[0]['checkpoint']} (block {int(massive[0]['first_massive_layer'])})" if massive else "none"))
    return lines
