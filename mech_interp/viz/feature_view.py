"""The 3D feature view: |a| over (token, dim) at one layer (paper Fig. 1), drawn as measured.

Each (token, dim) entry is one vertical stem from 0 to its |a|, coloured by |a|: a surface would interpolate
between tokens and smear a single-entry spike into a wedge spanning its neighbours. The camera and aspect are fixed
so that every token label and the whole value axis (0 to the largest |a|) are in view."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

HOVER = "dim %{x}<br>token %{y}<br>|a| %{z:.4g}<extra></extra>"
# Looking from the high-dim, first-token corner, a little above: token labels face the reader, stems stand upright.
CAMERA = {"eye": {"x": 1.8, "y": -2.2, "z": 0.9}, "center": {"x": 0.05, "y": 0.15, "z": -0.05}}
ASPECT = {"x": 2.0, "y": 1.2, "z": 0.9}


def stems(grid: pd.DataFrame, cmax: float, showscale: bool = True) -> go.Scatter3d:
    """One line per row of ``grid`` (columns position, dim, abs) from |a| = 0 to its value; gaps (None) between."""
    n = len(grid)
    x = np.full(3 * n, np.nan)
    y = np.full(3 * n, np.nan)
    z = np.full(3 * n, np.nan)
    positions = grid["position"].to_numpy()
    rank = {p: i for i, p in enumerate(sorted(set(positions.tolist())))}  # token axis: 0..T-1 in position order
    x[0::3] = x[1::3] = grid["dim"].to_numpy()
    y[0::3] = y[1::3] = [rank[p] for p in positions]
    z[0::3], z[1::3] = 0.0, grid["abs"].to_numpy()
    color = np.repeat(grid["abs"].to_numpy(), 3)
    as_list = lambda a: [None if np.isnan(v) else float(v) for v in a]  # noqa: E731 (plotly gaps a line at None)
    return go.Scatter3d(x=as_list(x), y=as_list(y), z=as_list(z), mode="lines", name="|a|", showlegend=False,
                        line={"color": color.tolist(), "colorscale": "Viridis", "cmin": 0, "cmax": cmax, "width": 3,
                              "showscale": showscale, "colorbar": {"title": {"text": "|a|"}}},
                        hovertemplate=HOVER)


def token_labels(grid: pd.DataFrame) -> list[str]:
    tokens = grid.drop_duplicates("position").sort_values("position")
    return [f"{p}: {t!r}" for p, t in zip(tokens["position"], tokens["token"])]


def scene(labels: list[str], zmax: float) -> dict:
    return {"xaxis": {"title": {"text": "dim"}},
            "yaxis": {"title": {"text": "token"}, "tickvals": list(range(len(labels))), "ticktext": labels},
            "zaxis": {"title": {"text": "|activation|"}, "range": [0, zmax * 1.05 or 1.0]},
            "camera": CAMERA, "aspectmode": "manual", "aspectratio": ASPECT}


def feature_view_3d(grid: pd.DataFrame, massive: pd.DataFrame, title: str) -> go.Figure:
    """|a| over (token position, dim) as stems; massive entries marked and labelled with their dim."""
    zmax = float(grid["abs"].max())
    fig = go.Figure(stems(grid, zmax))
    labels = token_labels(grid)
    if not massive.empty:
        rank = {p: i for i, p in enumerate(sorted(grid["position"].unique().tolist()))}
        fig.add_trace(go.Scatter3d(
            x=massive["dim"], y=[rank[p] for p in massive["position"]], z=massive["abs"], mode="markers+text",
            text=[f"dim {d}" for d in massive["dim"]], textposition="top center", marker={"size": 4, "color": "red"},
            name="massive", hovertemplate="dim %{x}, token %{y}: |a| %{z:.4g}<extra></extra>"))
    fig.update_layout(title=title, scene=scene(labels, zmax), showlegend=not massive.empty,
                      legend={"x": 0, "y": 1, "xanchor": "left"})
    return fig
