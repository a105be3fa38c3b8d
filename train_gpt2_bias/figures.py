"""Figures of the training study, drawn from saved tables."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots


def loss_curve(log: pd.DataFrame, title: str) -> go.Figure:
    """Train loss per step, val loss where evaluated, learning rate on a second axis."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=log["step"], y=log["train_loss"], name="train loss", mode="lines"))
    val = log.dropna(subset=["val_loss"])
    fig.add_trace(go.Scatter(x=val["step"], y=val["val_loss"], name="val loss", mode="lines+markers"))
    fig.add_trace(go.Scatter(x=log["step"], y=log["lr"], name="learning rate", mode="lines",
                             line={"dash": "dot", "width": 1}), secondary_y=True)
    fig.update_layout(title=title, xaxis_title="optimizer step")
    fig.update_yaxes(title_text="cross-entropy (nats per token)", secondary_y=False)
    fig.update_yaxes(title_text="learning rate", secondary_y=True)
    return fig


def comparison_lines(table: pd.DataFrame, column: str, title: str, y_title: str, log_y: bool = False) -> go.Figure:
    """One line per variant of ``column`` over blocks (0-based TransformerLens blocks)."""
    fig = go.Figure()
    for variant, rows in table.groupby("variant", sort=False):
        fig.add_trace(go.Scatter(x=rows["layer"], y=rows[column], name=variant, mode="lines+markers"))
    fig.update_layout(title=title, xaxis_title="block (0-based; blocks.L.hook_resid_post)", yaxis_title=y_title)
    if log_y:
        fig.update_yaxes(type="log")
    return fig
