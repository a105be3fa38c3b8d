"""Attention logits and per-head attention to the massive-activation tokens (paper Fig. 6)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from .axes import LAYER_AXIS


def attention_logits_heatmap(logits: pd.DataFrame, title: str) -> go.Figure:
    pivot = logits.pivot(index="query_pos", columns="key_pos", values="logit")
    tokens = logits.drop_duplicates("query_pos").set_index("query_pos")["query_token"].reindex(pivot.index)
    labels = [f"{i}: {t!r}" for i, t in tokens.items()]
    fig = go.Figure(go.Heatmap(z=pivot.values, x=labels, y=labels, colorscale="RdBu_r", zmid=0,
                               colorbar={"title": "logit"}, hoverongaps=False))
    fig.update_layout(title=title, xaxis_title="key token", yaxis_title="query token", yaxis_autorange="reversed")
    return fig


def head_attention_heatmap(heads: pd.DataFrame, title: str) -> go.Figure:
    pivot = heads.pivot(index="layer", columns="head", values="attention_to_massive")
    fig = go.Figure(go.Heatmap(z=pivot.values, x=pivot.columns.values, y=pivot.index.values, colorscale="Viridis",
                               zmin=0, zmax=1, colorbar={"title": "attention"}))
    fig.update_layout(title=title, xaxis_title="head", yaxis_title=LAYER_AXIS)
    return fig
