"""Perplexity against the attention window W, one line per condition (StreamingLLM's comparison, sink-window)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go


def sink_window_lines(table: pd.DataFrame, title: str) -> go.Figure:
    """``table`` is sink-window's perplexity table: one row per (condition, window, sinks). Both axes are log: the
    window alone sits orders of magnitude above the sinks, and the windows are powers of two in practice. Full
    attention has no window: a dashed line over the whole range."""
    windowed = table[table["condition"] != "full"]
    full = table.loc[table["condition"] == "full", "perplexity"].item()
    span = [int(windowed["window"].min()), int(windowed["window"].max())]
    fig = go.Figure([go.Scatter(x=span, y=[full, full], mode="lines" if span[0] < span[1] else "markers", name="full attention",
                                line={"dash": "dash", "color": "#000000"})])
    for label, rows in windowed.groupby("label", sort=False):
        rows = rows.sort_values("window")
        fig.add_trace(go.Scatter(x=rows["window"].astype(int), y=rows["perplexity"], mode="lines+markers", name=label))
    fig.update_layout(title=title, xaxis_title="attention window W (tokens each query keeps)",
                      yaxis_title="perplexity (log scale)", legend_title_text="keys kept")
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log")
    return fig
