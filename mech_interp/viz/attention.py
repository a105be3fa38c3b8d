"""Attention logits and per-head attention to the massive-activation tokens (paper Fig. 6)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

# The head table column this heatmap shows; the attention experiment names its column with it.
MASSIVE_SCORE = "attention_to_input_massive_from_later_queries"


def attention_logits_heatmap(logits: pd.DataFrame, title: str) -> go.Figure:
    pivot = logits.pivot(index="query_pos", columns="key_pos", values="logit")
    tokens = logits.drop_duplicates("query_pos").set_index("query_pos")["query_token"].reindex(pivot.index)
    labels = [f"{i}: {t!r}" for i, t in tokens.items()]
    fig = go.Figure(go.Heatmap(z=pivot.values, x=labels, y=labels, colorscale="RdBu_r", zmid=0,
                               colorbar={"title": "logit"}, hoverongaps=False))
    fig.update_layout(title=title, xaxis_title="key token", yaxis_title="query token", yaxis_autorange="reversed")
    return fig


def head_attention_heatmap(heads: pd.DataFrame, title: str) -> go.Figure:
    """Massive-set score per (block, head); blocks whose input has no massive token are blank (NaN)."""
    pivot = heads.pivot(index="layer", columns="head", values=MASSIVE_SCORE)
    fig = go.Figure(go.Heatmap(z=pivot.values, x=pivot.columns.values, y=pivot.index.values, colorscale="Viridis",
                               zmin=0, zmax=1, colorbar={"title": "attention"}, hoverongaps=False))
    fig.update_layout(title=title, xaxis_title="head", yaxis_title="block (0-based; massive tokens taken at blocks.L.hook_resid_pre)")
    return fig
