"""Window attention with and without attention sinks (StreamingLLM, Xiao et al. 2024), on the model's own attention.

Every query keeps only the last W tokens (``window_mask``), with or without the first S tokens of the sequence, or the
massive tokens wherever they are, or the first S tokens with their massive entries reset; perplexity over the same
predicted tokens in every condition says what each kept token is worth. Positions stay the original absolute ones
(``DEFINITIONS["positions"]`` says why), and each condition is one forward per batch of sequences.

The first massive block and the ``set_mean`` values come from ``mean_text``, as the ``intervention`` experiment takes
them; the massive tokens of condition (d) are detected in each sequence's own full-attention forward, which is
condition (a), so they cost no forward of their own. Each finished condition is saved as a piece: a killed run
resumes at the next one.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from ...core.criterion import massive_mask
from ...core.dtype_range import ActivationRangeError, needs_range_check
from ...core.intervention import Intervention
from ...core.massive_reset import MassiveMeans
from ...data.texts import load_text
from ...data.tokens import windows
from ...interventions import make_reset
from ...metrics.layer_stats import collect_layer_stats
from ...metrics.perplexity import Perplexity, next_token_nll
from ...models.context import ModelContext
from ...models.hook_names import check_layer, engine_hooks, resid_post
from ...runs.experiment import ExperimentResult
from ...validation.errors import UsageError
from ...viz.sink_window import sink_window_lines
from .cache_positions import cache_score_hooks, check_cache_positions
from .sink_window_config import SinkWindowConfig
from .window_mask import allowed_keys, window_masks

DEFINITIONS = {
    "mask": "query q may attend to key k iff k <= q and (q - k < W, or k < S, or k is a massive token); the other "
            "keys' scores are set to -inf at every block's blocks.L.attn.hook_attn_scores, before the model's softmax",
    "full": "(a) full causal attention: every key k <= q",
    "window": "(b) window W: the last W tokens, q - W < k <= q (q itself included)",
    "sinks": "(c) window W + S sinks: also the first S tokens of the sequence, k < S",
    "massive": "(d) window W + massive tokens: also every position holding a massive entry at block L's resid_post "
               "in the same sequence's full-attention forward (the run's criterion), wherever it is",
    "sinks_set_zero": "(e) as (c), with the massive entries of the S sink positions at block L's resid_post set to "
                      "zero (detected in that forward by the run's criterion, over the whole hidden state)",
    "sinks_set_mean": "(e) as (c), with those entries set to their mean over --mean-text's massive entries at block L "
                      "(per dim, position 0 apart from later positions, as intervention's set_mean, mode detected); an "
                      "entry whose kind was never seen there is left as it is",
    "block": "L: the first 0-based block whose resid_post holds a massive activation in at least half the "
             "--mean-text sequences, or --layer",
    "positions (text)": "--positions text: token t keeps position t in every condition (rotary angles and learned "
                        "position embeddings unchanged), so a kept key outside the window keeps its distance q - k",
    "positions (cache)": "--positions cache, StreamingLLM's positions within the cache: a query and its window keys "
                         "keep their distance q - k; the kept keys outside the window sit first in the cache, a key of "
                         "rank r among the n of them at distance n + W - 1 - r (W + S - 1 - k for sink k once the "
                         "window has passed it), its score recomputed at that distance from the block's hook_rot_q "
                         "and hook_rot_k (rotary models, HookedTransformer)",
    "perplexity": "exp(sum of next-token NLL / predicted tokens) over the tokens predicted from query positions "
                  "q >= the largest W (every window of the sweep cuts those queries off), the same tokens in every "
                  "condition",
}
LABELS = {"full": "full attention", "window": "window", "massive": "window + massive tokens",
          "sinks": "window + S={S} sinks", "sinks_set_zero": "window + S={S} sinks, set_zero",
          "sinks_set_mean": "window + S={S} sinks, set_mean"}
HEADERS = {"window": "window only", "massive": "+massive", "sinks": "+S={S}", "sinks_set_zero": "+S={S} zero",
           "sinks_set_mean": "+S={S} mean"}  # the printed table's columns


@dataclass(frozen=True)
class Condition:
    name: str  # a key of LABELS
    window: int | None = None  # None: full attention
    sinks: int = 0
    reset: str | None = None

    @property
    def label(self) -> str:
        return LABELS[self.name].format(S=self.sinks)


def conditions(config: SinkWindowConfig, massive: bool) -> list[Condition]:
    """Every condition of the sweep, full attention first (its forward finds the massive tokens (d) keeps)."""
    out = [Condition("full")]
    for w in config.windows:
        out += [Condition("window", w)] + ([Condition("massive", w)] if massive else [])
        for s in config.sinks:
            out.append(Condition("sinks", w, s))
            if massive:
                out += [Condition(f"sinks_{reset}", w, s, reset) for reset in config.resets]
    return out


class SinksOnly(Intervention):
    """``reset`` (set_zero / set_mean at one block's resid_post) kept to the sink positions: the massive entries are
    detected over the whole hidden state, as the reset always detects them, and every other position keeps its value,
    so that (e) removes only what the sinks carry. ``counts["replaced"]`` is the number of massive entries at the
    sinks (set_mean leaves those it has no mean for)."""

    def __init__(self, reset: Intervention, n_sinks: int, n_prefix: int = 0) -> None:
        super().__init__(reset.name, reset.site)
        self.reset, self.start, self.end = reset, n_prefix, n_prefix + n_sinks

    def forward(self, acts: Float[torch.Tensor, "batch pos d_model"], hook: Any = None) -> Float[torch.Tensor, "batch pos d_model"]:
        out = self.reset(acts)
        out[:, :self.start] = acts[:, :self.start]
        out[:, self.end:] = acts[:, self.end:]
        self.counts["replaced"] += int(massive_mask(acts, self.reset.criterion)[:, self.start:self.end].sum())
        return out


class _Forwards:
    """One condition's forwards over the sequences: its hooks per batch, the NLL of the scored tokens."""

    def __init__(self, context: ModelContext, seqs: Int[torch.Tensor, "seq pos"], config: SinkWindowConfig,
                 layer: int | None, means: MassiveMeans | None, bar: tqdm) -> None:
        self.model, self.seqs, self.config, self.bar = context.model, seqs, config, bar
        self.layer, self.means = layer, means
        self.criterion, self.n_prefix = context.options.criterion, context.layout.n_prefix_tokens
        self.first_scored = config.windows[-1]  # queries 0..W_max-1 keep every token under some window of the sweep

    def run(self, condition: Condition, massive_positions: list[list[int]] | None) -> dict[str, Any]:
        model, n_pos = self.model, self.seqs.shape[1]
        device = model.cfg.device
        found: list[torch.Tensor] = []
        reset = None
        if condition.reset is not None:
            reset = SinksOnly(make_reset(condition.reset, self.layer, self.means, self.criterion), condition.sinks,
                              self.n_prefix)
        nll_sum, n_tokens, start = 0.0, 0, 0
        for batch in self.seqs.split(self.config.batch_size):
            hooks = []
            if condition.window is not None:
                kept = None
                if condition.name == "massive":
                    kept = torch.zeros(len(batch), n_pos, dtype=torch.bool)
                    for row, positions in enumerate(massive_positions[start:start + len(batch)]):
                        kept[row, positions] = True
                allowed = allowed_keys(n_pos, condition.window, condition.sinks, kept, device)
                if self.config.positions == "cache":  # the kept keys' scores first, then the mask of the rest
                    hooks += cache_score_hooks(model, allowed, condition.window)
                hooks += [mask.as_hook() for mask in window_masks(model.cfg.n_layers, allowed)]
            if reset is not None:
                hooks.append(reset.as_hook())
            if condition.name == "full" and self.layer is not None:
                def record(acts: Float[torch.Tensor, "batch pos d_model"], hook: Any) -> None:  # [batch, pos, d_model]
                    found.append(massive_mask(acts, self.criterion)[:, self.n_prefix:].any(-1).cpu())
                hooks.append((resid_post(self.layer), record))
            batch = batch.to(device)
            with engine_hooks(model, hooks):
                nll = next_token_nll(model(batch, return_type="logits"), batch)[:, self.first_scored:]
            batch_sum = nll.double().sum().item()
            if needs_range_check(model.cfg.dtype) and not math.isfinite(batch_sum):
                raise ActivationRangeError(f"sink-window {condition.label}: the loss is not finite in "
                                           f"{model.cfg.dtype}: rerun in float32")
            nll_sum, n_tokens, start = nll_sum + batch_sum, n_tokens + nll.numel(), start + len(batch)
            self.bar.update()
        done: dict[str, Any] = {"nll_sum": nll_sum, "n_tokens": n_tokens, "n_seqs": start,
                                "replaced": reset.counts["replaced"] if reset is not None else None}
        if found:
            done["massive_positions"] = [row.nonzero().flatten().tolist() for row in torch.cat(found)]
        return done


def _means_pass(context: ModelContext, config: SinkWindowConfig):
    """The first massive block (or --layer) and the set_mean values, from --mean-text, as intervention takes them."""
    options = context.options
    source = load_text(config.mean_text)
    seqs = windows(context.tokenizer, source.text, config.seq_len, config.n_mean_seqs, options.prepend_bos,
                   source.name, context.n_ctx, add_special_tokens=source.special_tokens)
    layer = check_layer(context.n_layers, config.layer, context.name) if config.layer is not None else None
    stats = collect_layer_stats(context.model, seqs.split(config.batch_size),
                                hook_names=[resid_post(layer)] if layer is not None else None,
                                criterion=options.criterion, total=-(-len(seqs) // config.batch_size),
                                layout=context.layout)
    layer = layer if layer is not None else stats.first_massive_layer()
    wants_means = layer is not None and "set_mean" in config.resets
    means = MassiveMeans.from_stats(stats, resid_post(layer)) if wants_means else None
    return source, layer, means


def sink_window(context: ModelContext, config: SinkWindowConfig, pieces=None) -> ExperimentResult:
    """Perplexity under window attention with and without sinks, massive tokens, or sinks whose massive entries are
    reset (StreamingLLM's experiment, with the massive activations' part in it)."""
    options = context.options
    if config.positions == "cache":
        try:
            check_cache_positions(context.model)
        except ValueError as err:
            raise UsageError(f"{err}: {context.name} is not one; use --positions text") from None
        if context.layout.n_prefix_tokens:
            raise UsageError(f"--positions cache: {context.name} has learned prefix positions, which no cache "
                             "holds; use --positions text")
    source = load_text(config.text)
    seqs = windows(context.tokenizer, source.text, config.seq_len, config.n_seqs, options.prepend_bos, source.name,
                   context.n_ctx, add_special_tokens=source.special_tokens)
    mean_source, layer, means = _means_pass(context, config)
    todo = conditions(config, massive=layer is not None)
    keys = {c: {"condition": c.name, "window": c.window, "sinks": c.sinks, "layer": layer, "positions": config.positions}
            for c in todo}
    done = {c: pieces.load_piece(keys[c]) if pieces is not None else None for c in todo}
    n_batches = -(-len(seqs) // config.batch_size)
    with torch.inference_mode(), tqdm(total=n_batches * sum(v is None for v in done.values()), desc="sink-window",
                                      unit="forward") as bar:
        forwards = _Forwards(context, seqs, config, layer, means, bar)
        for condition in todo:
            if done[condition] is None:
                done[condition] = forwards.run(condition, (done[todo[0]] or {}).get("massive_positions"))
                if pieces is not None:
                    pieces.save_piece(keys[condition], done[condition])

    full = done[todo[0]]
    table = _table(todo, done, full)
    massive_tokens = _massive_tokens(context, seqs, full.get("massive_positions"))
    lines = _lines(context, config, source, seqs, layer, mean_source, table, massive_tokens, full)
    return ExperimentResult(
        tables={"perplexity": table, "massive_tokens": massive_tokens},
        figures={"perplexity": sink_window_lines(
            table, f"{context.name}: perplexity with window attention, {len(seqs)} x {seqs.shape[1]} tokens of "
                   f"{source.name}")},
        summary={"text": source.origin, "n_seqs": len(seqs), "seq_len": int(seqs.shape[1]),
                 "first_scored_query": config.windows[-1], "n_scored_tokens": full["n_tokens"], "layer": layer,
                 "positions": config.positions,
                 "mean_text": mean_source.origin, "set_mean": means.describe() if means is not None else None,
                 "full_attention": Perplexity(full["nll_sum"], full["n_tokens"], len(seqs)).value,
                 "perplexity": table.to_dict("records"), "definitions": DEFINITIONS},
        lines=lines,
    )


def _table(todo: list[Condition], done: dict, full: dict) -> pd.DataFrame:
    rows = []
    full_value = Perplexity(full["nll_sum"], full["n_tokens"], full["n_seqs"]).value
    for c in todo:
        d = done[c]
        value = Perplexity(d["nll_sum"], d["n_tokens"], d["n_seqs"]).value
        rows.append({"condition": c.name, "label": c.label, "window": c.window, "sinks": c.sinks, "perplexity": value,
                     "ratio_to_full": value / full_value, "nll_sum": d["nll_sum"], "n_tokens": d["n_tokens"],
                     "n_seqs": d["n_seqs"], "sink_massive_entries": d["replaced"]})
    table = pd.DataFrame(rows)
    table["window"] = table["window"].astype("Int64")
    table["sink_massive_entries"] = table["sink_massive_entries"].astype("Int64")
    return table


def _massive_tokens(context: ModelContext, seqs: Int[torch.Tensor, "seq pos"],
                    positions: list[list[int]] | None) -> pd.DataFrame:
    rows = [{"seq": i, "position": p, "token_id": int(seqs[i, p]), "token": context.tokenizer.decode([int(seqs[i, p])])}
            for i, found in enumerate(positions or []) for p in found]
    return pd.DataFrame(rows, columns=["seq", "position", "token_id", "token"])


def _lines(context, config: SinkWindowConfig, source, seqs, layer, mean_source, table: pd.DataFrame,
           massive_tokens: pd.DataFrame, full: dict) -> list[str]:
    criterion = context.options.criterion
    lines = [f"sink-window on {_count(len(seqs), 'sequence')} x {seqs.shape[1]} tokens of {source.name}; "
             f"{full['n_tokens']} predicted tokens scored in every condition"]
    unused = {"positions (text)", "positions (cache)"} - {f"positions ({config.positions})"}
    lines += [f"  {name}: {text}" for name, text in DEFINITIONS.items() if name not in unused and
              (layer is not None or name not in ("massive", "sinks_set_zero", "sinks_set_mean", "block"))]
    if layer is None:
        lines.append(f"  (d), (e) not run: no block holds massive activations in half the sequences of "
                     f"{mean_source.name} by |a| > {criterion.min_abs:g} and >= {criterion.min_ratio:g} x median: "
                     "pass --layer or loosen the criterion")
    else:
        counts = Counter(massive_tokens["position"])
        tokens = massive_tokens.groupby("position")["token"].unique()
        found = "; ".join(f"position {p} in {n} of {_count(len(seqs), 'sequence')} "
                          f"({', '.join(map(repr, tokens[p][:3]))})" for p, n in counts.most_common(5)) or "none"
        lines.append(f"  L = block {layer}; the massive tokens (d) keeps: {found}")
    full_value = table.loc[table["condition"] == "full", "perplexity"].item()
    lines.append(f"  perplexity, full attention (a): {full_value:.4g}")
    columns = [(c, s) for c, s in dict.fromkeys(zip(table["condition"], table["sinks"])) if c != "full"]
    headers = [HEADERS[c].format(S=s) for c, s in columns]
    width = max(10, *map(len, headers)) + 2
    lines.append("  " + "W".rjust(6) + "".join(h.rjust(width) for h in headers))
    for w in config.windows:
        at = table[table["window"] == w].set_index(["condition", "sinks"])["perplexity"]
        lines.append("  " + str(w).rjust(6) + "".join(f"{at[c, s]:.4g}".rjust(width) for c, s in columns))
    return lines


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
