"""Figures of a checkpoint series over training (the ``emergence`` experiment), drawn from the tables it saves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .axes import LAYER_AXIS


def _x(table: pd.DataFrame, x: str) -> tuple[list, dict]:
    """The x values, and, for checkpoints without a step (``order``), ticks that name them."""
    values = table[x].astype(float).tolist()
    ticks = {} if x == "step" else {"tickmode": "array", "tickvals": values, "ticktext": table["checkpoint"].tolist()}
    return values, ticks


def emergence_lines(table: pd.DataFrame, x: str, x_title: str, title: str) -> go.Figure:
    """Three panels over the series (one row of ``table`` per checkpoint, sorted by ``x``): top1/median at the measured
    block and its largest value over blocks (log scale); the first massive block, blank where there is none; the sink
    share and the attention to the first token."""
    table = table.sort_values(x)
    xs, ticks = _x(table, x)
    fig = make_subplots(rows=3, cols=1, vertical_spacing=0.15, subplot_titles=(
        "top1 / median |a|", "first massive block", "attention to token 0"))
    fig.add_trace(go.Scatter(x=xs, y=table["top1_over_median"], mode="lines+markers", name="top1/median at the first "
                             "massive block (else the last)", text=table["measured_block"],
                             hovertemplate="block %{text}: %{y:.4g}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=xs, y=table["max_top1_over_median"], mode="lines+markers",
                             name="largest top1/median over the blocks", text=table["max_block"],
                             hovertemplate="block %{text}: %{y:.4g}<extra></extra>"), row=1, col=1)
    first = [None if pd.isna(v) else int(v) for v in table["first_massive_layer"]]
    fig.add_trace(go.Scatter(x=xs, y=first, mode="markers", marker={"size": 10, "symbol": "diamond"},
                             name="first massive block (none: no point)"), row=2, col=1)
    fig.add_trace(go.Scatter(x=xs, y=table["sink_share"], mode="lines+markers", name="sink share"), row=3, col=1)
    fig.add_trace(go.Scatter(x=xs, y=table["attention_to_first_token"], mode="lines+markers",
                             name="attention to token 0 (mean over blocks, heads, queries q > 0)"), row=3, col=1)
    fig.update_xaxes(title_text=x_title, **ticks)
    fig.update_yaxes(title_text="top1 / median", type="log", row=1, col=1)
    n_layers = int(table["n_layers"].max())
    fig.update_yaxes(title_text="block (0-based)", range=[-0.5, n_layers - 0.5], row=2, col=1)
    fig.update_yaxes(title_text="share / attention", range=[0, 1.05], row=3, col=1)
    fig.update_layout(title=title, height=1050, legend={"orientation": "h", "y": -0.1})
    return fig


def block_heatmap(per_block: pd.DataFrame, x: str, x_title: str, title: str) -> go.Figure:
    """log10 of top1/median per (checkpoint, block): where along training and depth the ratio grows."""
    pivot = per_block.pivot(index="block", columns=x, values="top1_over_median").sort_index(axis=1)
    names = per_block.drop_duplicates(x).set_index(x)["checkpoint"]
    fig = go.Figure(go.Heatmap(z=np.log10(pivot.values.astype(float)), x=pivot.columns.astype(float),
                               y=pivot.index.values, colorscale="Viridis", colorbar={"title": "log10 top1/median"},
                               hovertemplate="block %{y}, x %{x}: 10^%{z:.2f}<extra></extra>"))
    ticks = {} if x == "step" else {"tickmode": "array", "tickvals": list(pivot.columns.astype(float)),
                                    "ticktext": [names[c] for c in pivot.columns]}
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=LAYER_AXIS)
    fig.update_xaxes(**ticks)
    return fig
