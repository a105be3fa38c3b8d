"""Experiment 4: attention logits at one layer, per-head attention to the massive-activation tokens,
and the sink share (paper Fig. 6; Gu et al. 2024).

The definitions are those of ``metrics.attention_scores``: a head's score for key k averages its
attention over the queries q > k only, and the massive tokens a block's heads are scored against
are the ones detected at that block's input (``blocks.L.hook_resid_pre``, what its attention reads).

Positions are residual-stream positions: the learned prefix positions of the model's layout
(``n_prefix_tokens``) come first and are labelled ``<prefix>``. Its extra key slots (``n_key_slots``:
key columns in front of the positions in every pattern) are dropped from every score and from the
logits heatmap, and their attention is reported apart (``slot_attention``), never as token 0.
"""

from __future__ import annotations

import pandas as pd
import torch
from transformer_lens.hook_points import HookPoint

from ...core.head_names import head_name
from ...data.tokens import encode
from ...metrics.attention_scores import (
    SINK_DEFINITION,
    key_score,
    massive_set_score,
    sink_share,
    slot_attention,
    token_keys,
)
from ...metrics.layer_stats import PREFIX_NAME
from ...models.context import ModelContext
from ...models.hook_names import act_name, check_layer, engine_hooks, resid_pre
from ...runs.experiment import ExperimentResult
from ...validation.errors import UsageError
from ...viz.attention import (
    MASSIVE_SCORE,
    attention_logits_heatmap,
    head_attention_heatmap,
)
from .configs import AttentionConfig
from .prompt_stats import default_layer, prompt_layer_stats

FIRST_SCORE = "attention_to_first_from_later_queries"
POSITIONS_SOURCE = "detected at each block's input (blocks.L.hook_resid_pre)"
DEFINITIONS = {
    FIRST_SCORE: "mean over queries q > 0 of attention[q, 0] (query 0 left out: its attention to itself is 1)",
    MASSIVE_SCORE: "mean over queries q with at least one massive key k < q of the attention summed over those keys; "
                   "massive keys detected at that block's input (blocks.L.hook_resid_pre); NaN when it has none",
    "sink_share": SINK_DEFINITION + " (Gu et al. 2024)",
    "slot_attention": "mean over queries of the attention summed over the block's extra key slots (0 without slots)",
}


def _layer_ranges(positions: dict[int, list[int]]) -> list[tuple[int, int, list[int]]]:
    """Consecutive layers with the same massive positions, as (first, last, positions)."""
    runs: list[tuple[int, int, list[int]]] = []
    for layer in sorted(positions):
        if runs and runs[-1][2] == positions[layer] and runs[-1][1] == layer - 1:
            runs[-1] = (runs[-1][0], layer, runs[-1][2])
        else:
            runs.append((layer, layer, positions[layer]))
    return runs


def attention(context: ModelContext, config: AttentionConfig) -> ExperimentResult:
    """Head-averaged pre-softmax logits at one layer; per-head scores for token 0 and for the
    massive tokens at each block's input; the share of sink heads."""
    model, options, layout = context.model, context.options, context.layout
    tokens = encode(model.tokenizer, config.prompt, options.prepend_bos)
    n_layers, n_heads, n_tokens = model.cfg.n_layers, model.cfg.n_heads, tokens.numel()
    n_prefix, slots = layout.n_prefix_tokens, layout.n_key_slots
    n_pos = n_prefix + n_tokens  # residual positions
    if n_tokens < 2:  # every score averages over the queries after a key: one token has none
        raise UsageError(f"--prompt {config.prompt!r} is {n_tokens} token long: the attention scores need at least 2 tokens")
    layer = check_layer(n_layers, config.layer, model.cfg.model_name) if config.layer is not None else None
    stats = prompt_layer_stats(model, tokens, options.criterion, [resid_pre(i) for i in range(n_layers)], layout=layout)
    layer = default_layer(stats, model.cfg.n_layers) if layer is None else layer  # the first block that reads a massive input
    input_massive = {li: sorted(int(p) for p in stats.massive.loc[stats.massive["site"] == resid_pre(li), "position"].unique())
                     for li in range(n_layers)}
    token_strs = [PREFIX_NAME] * n_prefix + [model.tokenizer.decode([t]) for t in tokens.tolist()]

    scores_mean: dict[str, torch.Tensor] = {}
    to_massive: dict[int, torch.Tensor] = {}
    to_first: dict[int, torch.Tensor] = {}
    to_slots: dict[int, torch.Tensor] = {}
    causal = torch.ones(n_pos, n_pos, dtype=torch.bool).tril()

    def keep_scores(scores: torch.Tensor, hook: HookPoint) -> None:  # [batch, head_index, query_pos, key_pos]
        scores = token_keys(scores, slots)
        masked = scores[0].float().cpu().masked_fill(~causal, float("nan"))  # -inf above the diagonal
        scores_mean["logits"] = masked.mean(0)

    def head_scores(pattern: torch.Tensor, hook: HookPoint) -> None:  # [batch, head_index, query_pos, key_pos]
        li = hook.layer()
        to_slots[li] = slot_attention(pattern, slots).cpu()
        pattern = token_keys(pattern, slots)  # [batch, head_index, query_pos, pos]
        to_first[li] = key_score(pattern, 0).cpu()
        massive = torch.zeros(1, n_pos, dtype=torch.bool)
        massive[0, input_massive[li]] = True
        to_massive[li] = massive_set_score(pattern, massive).cpu()

    hooks = [(act_name("attn_scores", layer), keep_scores)]
    hooks += [(act_name("pattern", i), head_scores) for i in range(n_layers)]
    with torch.inference_mode(), engine_hooks(model, hooks):
        model(tokens[None].to(model.cfg.device), return_type=None)

    logits = scores_mean["logits"]
    q, k = torch.meshgrid(torch.arange(n_pos), torch.arange(n_pos), indexing="ij")
    logit_table = pd.DataFrame({"query_pos": q.flatten().numpy(), "key_pos": k.flatten().numpy(),
                                "query_token": [token_strs[i] for i in q.flatten().tolist()],
                                "key_token": [token_strs[i] for i in k.flatten().tolist()],
                                "logit": logits.flatten().numpy()})
    first = torch.stack([to_first[li] for li in range(n_layers)])  # [layer, head]
    per_layer_share, overall_share = sink_share(first, config.sink_eps)
    heads = pd.DataFrame([{"layer": li, "head": h, FIRST_SCORE: float(first[li, h]), MASSIVE_SCORE: float(to_massive[li][h]),
                           "slot_attention": float(to_slots[li][h]),
                           "input_massive_positions": " ".join(map(str, input_massive[li])),
                           "sink_head": bool(first[li, h] > config.sink_eps)}
                          for li in range(n_layers) for h in range(n_heads)])
    sinks = pd.DataFrame({"layer": range(n_layers), "n_heads": n_heads,
                          "n_sink_heads": (first > config.sink_eps).sum(1).tolist(),
                          "sink_share": per_layer_share.tolist(), "sink_eps": config.sink_eps})
    positions_table = pd.DataFrame([{"layer": li, "position": p, "token": token_strs[p]}
                                    for li in range(n_layers) for p in input_massive[li]],
                                   columns=["layer", "position", "token"])

    lines = [f"attention: head-averaged pre-softmax logits at block {layer} (masked above the diagonal)"]
    lines.append(f"  massive tokens, {POSITIONS_SOURCE}:")
    for lo, hi, positions in _layer_ranges(input_massive):
        where = f"block {lo}" if lo == hi else f"blocks {lo}-{hi}"
        lines.append(f"    {where}: " + (", ".join(f"{p} {token_strs[p]!r}" for p in positions) if positions
                                        else "none (massive-set scores NaN)"))
    lines.append("  head score for key k = mean over queries q > k of attention[q, k]; massive-set score = mean over "
                 "queries with a massive key k < q of the attention summed over those keys")
    lines.append(f"  sink share (Gu et al. 2024) = {SINK_DEFINITION.replace('eps', f'eps = {config.sink_eps}')}: "
                 f"{overall_share:.2f} of {n_layers * n_heads} heads; per block "
                 + " ".join(f"{s:.2f}" for s in per_layer_share.tolist()))
    if slots:
        lines.append(f"  attention to key slots (apart, never token 0): max over heads {heads['slot_attention'].max():.3f}")
    top_heads = heads.dropna(subset=[MASSIVE_SCORE]).sort_values(MASSIVE_SCORE, ascending=False).head(5)
    lines.append("  heads with the highest massive-set score: " + (", ".join(
        f"{head_name(r.layer, r.head)} ({getattr(r, MASSIVE_SCORE):.2f})" for r in top_heads.itertuples()) or "none (no massive tokens)"))
    title = f"{model.cfg.model_name}: head-averaged attention logits, block {layer}"
    return ExperimentResult(
        tables={"attention_logits": logit_table, "head_attention": heads, "sink_share": sinks,
                "massive_positions": positions_table},
        figures={"attention_logits": attention_logits_heatmap(logit_table, title),
                 "head_attention": head_attention_heatmap(heads, f"{model.cfg.model_name}: attention to the massive tokens "
                                                                 "at each block's input (queries after them)")},
        summary={"layer": layer, "massive_positions": input_massive, "positions_source": POSITIONS_SOURCE,
                 "sink_eps": config.sink_eps, "sink_head_share": overall_share,
                 "sink_share_per_layer": per_layer_share.tolist(), "definitions": DEFINITIONS, "tokens": token_strs},
        lines=lines,
    )
