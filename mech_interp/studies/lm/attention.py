"""Experiment 4: attention logits at one layer, and attention paid to the massive-activation tokens."""

from __future__ import annotations

import pandas as pd
import torch
from transformer_lens import HookedTransformer
from transformer_lens.hook_points import HookPoint

from ...data.tokens import encode
from ...models.hook_names import check_layer
from ...runs.experiments import ExperimentResult
from ...runs.options import RunOptions
from ...viz.attention import attention_logits_heatmap, head_attention_heatmap
from .configs import AttentionConfig
from .prompt_stats import default_layer, prompt_layer_stats


def attention(model: HookedTransformer, options: RunOptions, config: AttentionConfig) -> ExperimentResult:
    """Head-averaged pre-softmax logits at one layer; per-head attention to massive tokens (paper Fig. 6)."""
    tokens = encode(model.tokenizer, config.prompt, options.prepend_bos)
    layer = check_layer(model.cfg.n_layers, config.layer, model.cfg.model_name) if config.layer is not None else None
    stats = prompt_layer_stats(model, tokens, options.criterion)
    layer = default_layer(stats, model, offset=1) if layer is None else layer
    massive_positions = sorted(int(p) for p in stats.massive["position"].unique())
    positions_source = "detected"
    if not massive_positions:
        massive_positions, positions_source = [0], "none detected; first token used"
    n_pos = tokens.numel()
    token_strs = [model.tokenizer.decode([t]) for t in tokens.tolist()]
    first_query = min(massive_positions)

    scores_mean: dict[str, torch.Tensor] = {}
    to_massive, to_first = {}, {}
    causal = torch.ones(n_pos, n_pos, dtype=torch.bool).tril()

    def keep_scores(scores: torch.Tensor, hook: HookPoint) -> None:  # [batch, head_index, query_pos, key_pos]
        masked = scores[0].float().cpu().masked_fill(~causal, float("nan"))  # -inf above the diagonal
        scores_mean["logits"] = masked.mean(0)

    def attention_share(pattern: torch.Tensor, hook: HookPoint) -> None:  # [batch, head_index, query_pos, key_pos]
        p = pattern[0].float().cpu()
        to_massive[hook.layer()] = p[:, first_query:, massive_positions].sum(-1).mean(-1)
        to_first[hook.layer()] = p[:, :, 0].mean(-1)

    hooks = [(f"blocks.{layer}.attn.hook_attn_scores", keep_scores)]
    hooks += [(f"blocks.{i}.attn.hook_pattern", attention_share) for i in range(model.cfg.n_layers)]
    with torch.inference_mode():
        model.run_with_hooks(tokens[None].to(model.cfg.device), return_type=None, fwd_hooks=hooks)

    logits = scores_mean["logits"]
    q, k = torch.meshgrid(torch.arange(n_pos), torch.arange(n_pos), indexing="ij")
    logit_table = pd.DataFrame({"query_pos": q.flatten().numpy(), "key_pos": k.flatten().numpy(),
                                "query_token": [token_strs[i] for i in q.flatten().tolist()],
                                "key_token": [token_strs[i] for i in k.flatten().tolist()],
                                "logit": logits.flatten().numpy()})
    heads = pd.DataFrame([{"layer": li, "head": h, "attention_to_massive": float(to_massive[li][h]),
                           "attention_to_first": float(to_first[li][h])}
                          for li in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)])
    sink_share = float((heads["attention_to_first"] > config.sink_eps).mean())
    top_heads = heads.sort_values("attention_to_massive", ascending=False).head(5)
    lines = [f"attention: logits at block {layer}; massive-token positions {massive_positions} ({positions_source}): "
             + ", ".join(repr(token_strs[p]) for p in massive_positions),
             f"  share of heads with mean attention to token 0 > {config.sink_eps}: {sink_share:.2f}",
             "  heads attending most to massive tokens: " + ", ".join(
                 f"{r.layer}.{r.head} ({r.attention_to_massive:.2f})" for r in top_heads.itertuples())]
    title = f"{model.cfg.model_name}: head-averaged attention logits, block {layer}"
    return ExperimentResult(
        tables={"attention_logits": logit_table, "head_attention": heads,
                "massive_positions": pd.DataFrame({"position": massive_positions,
                                                   "token": [token_strs[p] for p in massive_positions]})},
        figures={"attention_logits": attention_logits_heatmap(logit_table, title),
                 "head_attention": head_attention_heatmap(heads, f"{model.cfg.model_name}: attention to massive-activation tokens {massive_positions}")},
        summary={"layer": layer, "massive_positions": massive_positions, "positions_source": positions_source,
                 "sink_head_share": sink_share, "tokens": token_strs},
        lines=lines,
    )
