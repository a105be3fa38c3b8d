"""Figures of the head study, each drawn from the table the run saves beside it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..core.head_names import head_name
from .feature_view import scene, stems, token_labels

HEAD_LAYER_AXIS = "block (0-based TransformerLens block)"


def layer_head_heatmap(table: pd.DataFrame, value: str, title: str, colorbar: str, diverging: bool = False) -> go.Figure:
    """One cell per (block, head); blank where the value is NaN."""
    pivot = table.pivot(index="layer", columns="head", values=value)
    z = pivot.values.astype(float)
    kwargs = {"colorscale": "RdBu_r", "zmid": 0} if diverging else {"colorscale": "Viridis"}
    fig = go.Figure(go.Heatmap(z=z, x=pivot.columns.values, y=pivot.index.values, colorbar={"title": colorbar},
                               hoverongaps=False, hovertemplate="block %{y} head %{x}: %{z:.4g}<extra></extra>", **kwargs))
    fig.update_layout(title=title, xaxis_title="head", yaxis_title=HEAD_LAYER_AXIS)
    return fig


def ranking_plot(table: pd.DataFrame, value: str, title: str) -> go.Figure:
    """Heads sorted by score, with their bootstrap CI, coloured by block."""
    ranked = table.dropna(subset=[value]).sort_values(value, ascending=False).reset_index(drop=True)
    fig = go.Figure(go.Scatter(
        x=np.arange(len(ranked)), y=ranked[value], mode="markers",
        error_y={"type": "data", "symmetric": False, "array": ranked[f"{value}_ci_high"] - ranked[value],
                 "arrayminus": ranked[value] - ranked[f"{value}_ci_low"]},
        marker={"color": ranked["layer"], "colorscale": "Turbo", "showscale": True, "colorbar": {"title": "block"}},
        text=[head_name(r.layer, r.head) for r in ranked.itertuples()],
        hovertemplate="head %{text}: %{y:.3f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="rank", yaxis_title=value.replace("_", " "))
    return fig


def change_by_layer(summary: pd.DataFrame, title: str) -> go.Figure:
    """Relative change (%) of the top-1 |a| per block for every condition, with CI bands."""
    fig = go.Figure()
    for condition, rows in summary.groupby("condition", sort=False):
        rows = rows.sort_values("layer")
        fig.add_trace(go.Scatter(x=rows["layer"], y=rows["change_pct"], mode="lines+markers", name=condition,
                                 error_y={"type": "data", "symmetric": False,
                                          "array": rows["ci_high_pct"] - rows["change_pct"],
                                          "arrayminus": rows["change_pct"] - rows["ci_low_pct"]}))
    fig.update_layout(title=title, xaxis_title=HEAD_LAYER_AXIS + ", resid_post", yaxis_title="change of top-1 |a| (%)")
    return fig


def cumulative_plot(table: pd.DataFrame, title: str) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("massive activation (mean over sequences)", "perplexity"))
    for (order, draw), rows in table.groupby(["order", "draw"], sort=False):
        name = order if order != "random" else f"random {draw}"
        rows = rows.sort_values("k")
        fig.add_trace(go.Scatter(x=rows["k"], y=rows["massive_value"], mode="lines+markers", name=name,
                                 legendgroup=name, text=rows["head_added"]), row=1, col=1)
        fig.add_trace(go.Scatter(x=rows["k"], y=rows["perplexity"], mode="lines+markers", name=name,
                                 legendgroup=name, showlegend=False, text=rows["head_added"]), row=1, col=2)
    fig.update_xaxes(title_text="heads removed (k)")
    fig.update_yaxes(title_text="massive |a| (mean over sequences)", row=1, col=1)
    fig.update_yaxes(title_text="perplexity", row=1, col=2)
    fig.update_layout(title=title)
    return fig


def component_bars(table: pd.DataFrame, title: str, top: int = 20) -> go.Figure:
    """The ``top`` components by |write|, signed."""
    rows = table.reindex(table["write"].abs().sort_values(ascending=False).index).head(top)
    fig = go.Figure(go.Bar(x=rows["component"], y=rows["write"], marker={"color": np.sign(rows["write"]),
                                                                         "colorscale": "RdBu_r", "cmid": 0}))
    fig.update_layout(title=title, xaxis_title="component", yaxis_title="direct write to the entry")
    return fig


def effect_bars(table: pd.DataFrame, title: str) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("massive entry (prompt)", "perplexity (sequences)"))
    fig.add_trace(go.Bar(x=table["edit"], y=table["massive_value"], name="massive value"), row=1, col=1)
    fig.add_trace(go.Bar(x=table["edit"], y=table["perplexity"], name="perplexity"), row=1, col=2)
    fig.update_xaxes(title_text="edit")
    fig.update_yaxes(title_text="massive value (prompt)", row=1, col=1)
    fig.update_yaxes(type="log", title_text="perplexity (log scale)", row=1, col=2)
    fig.update_layout(title=title, showlegend=False)
    return fig


def before_after_3d(before: pd.DataFrame, after: pd.DataFrame, title: str) -> go.Figure:
    """|a| over (position, dim) before and after, side by side as stems on one scale: the same value axis, the same
    colour scale and the same camera in both."""
    fig = make_subplots(rows=1, cols=2, specs=[[{"type": "scene"}, {"type": "scene"}]],
                        subplot_titles=("before", "after"))
    zmax = float(max(before["abs"].max(), after["abs"].max()))
    for col, grid in ((1, before), (2, after)):
        fig.add_trace(stems(grid, zmax, showscale=col == 2), row=1, col=col)
    shared = scene(token_labels(before), zmax)
    fig.update_layout(title=title, scene=shared, scene2=shared)
    return fig


def difference_heatmap(diff: pd.DataFrame, title: str) -> go.Figure:
    pivot = diff.pivot(index="position", columns="dim", values="change")
    tokens = diff.drop_duplicates("position").set_index("position")["token"].reindex(pivot.index)
    fig = go.Figure(go.Heatmap(z=pivot.values, x=pivot.columns.values, y=[f"{p}: {t!r}" for p, t in tokens.items()],
                               colorscale="RdBu_r", zmid=0, colorbar={"title": "after - before"}))
    fig.update_layout(title=title, xaxis_title="dim", yaxis_title="token", yaxis_autorange="reversed")
    return fig
