"""Layer-wise top-k and median |a| (paper Fig. 2)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from .axes import LAYER_AXIS


def layerwise_lines(summary: pd.DataFrame, title: str, log_y: bool = True) -> go.Figure:
    fig = go.Figure()
    for column in [c for c in summary.columns if c.startswith("top") and c[3:].isdigit()] + ["median"]:
        fig.add_trace(go.Scatter(x=summary["layer"], y=summary[column], mode="lines+markers", name=column))
    fig.update_layout(title=title, xaxis_title=LAYER_AXIS, yaxis_title="|activation| (mean over sequences)")
    if log_y:
        fig.update_yaxes(type="log")
    return fig
