"""The 3D feature view: |a| over (token, dim) at one layer (paper Fig. 1)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go


def feature_view_3d(grid: pd.DataFrame, massive: pd.DataFrame, title: str) -> go.Figure:
    """|a| over (token position, dim) as a surface; massive entries labelled with their dim."""
    pivot = grid.pivot(index="position", columns="dim", values="abs")
    tokens = grid.drop_duplicates("position").set_index("position")["token"].reindex(pivot.index)
    labels = [f"{p}: {t!r}" for p, t in tokens.items()]
    fig = go.Figure(go.Surface(z=pivot.values, x=pivot.columns.values, y=np.arange(len(pivot.index)),
                               colorscale="Viridis", showscale=True, colorbar={"title": "|a|"},
                               hovertemplate="dim %{x}<br>token %{y}<br>|a| %{z:.1f}<extra></extra>"))
    if not massive.empty:
        fig.add_trace(go.Scatter3d(
            x=massive["dim"], y=massive["position"], z=massive["abs"], mode="markers+text",
            text=[f"dim {d}" for d in massive["dim"]], marker={"size": 4, "color": "red"},
            name="massive", hovertemplate="dim %{x}, token %{y}: |a| %{z:.1f}<extra></extra>"))
    fig.update_layout(title=title, scene={
        "xaxis_title": "dim", "zaxis_title": "|activation|",
        "yaxis": {"title": "token", "tickvals": list(range(len(labels))), "ticktext": labels}})
    return fig
