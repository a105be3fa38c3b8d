"""Perplexity against the attention window W, one line per condition (StreamingLLM's comparison, sink-window)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from .print_style import COLORWAY

# One colour per kind of condition, one dash and marker per sink count: lines that coincide (the massive tokens are
# often exactly the first sink) stay visible as different markers on the same path.
COLORS = {"window": COLORWAY[1], "massive": COLORWAY[4], "sinks": COLORWAY[0], "sinks_set_zero": COLORWAY[3],
          "sinks_set_mean": COLORWAY[2]}
DASHES = ["solid", "dash", "dot", "dashdot"]
SYMBOLS = ["circle", "square", "triangle-up", "diamond"]


def sink_window_lines(table: pd.DataFrame, title: str) -> go.Figure:
    """``table`` is sink-window's perplexity table: one row per (condition, window, sinks). Both axes are log: the
    window alone sits orders of magnitude above the sinks, and windows are usually powers of two. Full attention has
    no window: a dashed black line over the whole range."""
    windowed = table[table["condition"] != "full"]
    full = table.loc[table["condition"] == "full", "perplexity"].item()
    ticks = sorted(int(w) for w in windowed["window"].unique())
    fig = go.Figure([go.Scatter(x=[ticks[0], ticks[-1]], y=[full, full], mode="lines" if len(ticks) > 1 else "markers",
                                name="full attention", line={"dash": "dash", "color": "#000000"})])
    sink_counts = sorted(int(s) for s in windowed["sinks"].unique() if s > 0)
    for (condition, sinks, label), rows in windowed.groupby(["condition", "sinks", "label"], sort=False):
        style = sink_counts.index(sinks) % len(DASHES) if sinks else 0
        rows = rows.sort_values("window")
        fig.add_trace(go.Scatter(
            x=rows["window"].astype(int), y=rows["perplexity"], mode="lines+markers", name=label,
            line={"color": COLORS[condition], "dash": DASHES[style]},
            marker={"symbol": SYMBOLS[style] + ("-open" if condition == "massive" else ""),
                    "size": 13 if condition == "massive" else 8}))
    fig.update_layout(title=title, xaxis_title="attention window W (tokens each query keeps)",
                      yaxis_title="perplexity (log scale)", legend_title_text="keys kept")
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=[str(w) for w in ticks])
    fig.update_yaxes(type="log")
    return fig
