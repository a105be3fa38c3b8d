"""Perplexity per dataset and intervention (paper Table 3)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go


def perplexity_bars(table: pd.DataFrame, conditions: list[str], title: str) -> go.Figure:
    """Perplexity per dataset and condition, log scale: set_zero sits orders of magnitude above."""
    fig = go.Figure([
        go.Bar(x=table["dataset"], y=table[c], name=c, text=[f"{v:.4g}" for v in table[c]], textposition="outside")
        for c in conditions
    ])
    fig.update_layout(title=title, barmode="group", xaxis_title="dataset", yaxis_title="perplexity (log scale)")
    fig.update_yaxes(type="log")
    return fig
