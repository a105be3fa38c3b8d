"""Plotly figures of the vision study, each made from a saved table. The language-model study's 3D
feature view and layer-wise lines (``mech_interp.viz``) are reused as they are; these are the ones
that only a ViT has: image-shaped patch grids, per-role curves, register means, attention to roles."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

BLOCK_INPUT_AXIS = "block (0-based; values at its input, blocks.L.hook_resid_pre)"
BLOCK_OUTPUT_AXIS = "block (0-based; output = blocks.L.hook_resid_post)"


def patch_grid_heatmaps(grid: pd.DataFrame, title: str) -> go.Figure:
    """One image-shaped heatmap (patch row x col) per dim of ``grid`` (columns dim, row, col, value)."""
    dims = sorted(grid["dim"].unique())
    cols = min(3, len(dims))
    fig = make_subplots(rows=math.ceil(len(dims) / cols), cols=cols, subplot_titles=[f"dim {d}" for d in dims])
    for i, d in enumerate(dims):
        pivot = grid[grid["dim"] == d].pivot(index="row", columns="col", values="value")
        fig.add_trace(
            go.Heatmap(
                z=pivot.values,
                x=pivot.columns.values,
                y=pivot.index.values,
                colorscale="RdBu_r",
                zmid=0,
                coloraxis=None,
                showscale=i == 0,
                colorbar={"title": "value"},
                hovertemplate="row %{y}, col %{x}: %{z:.2f}<extra></extra>",
            ),
            row=i // cols + 1,
            col=i % cols + 1,
        )
    fig.update_yaxes(autorange="reversed", title_text="patch row")
    fig.update_xaxes(title_text="patch column")
    fig.update_layout(title=title)
    return fig


def role_lines(by_role: pd.DataFrame, value: str, title: str, axis: str) -> go.Figure:
    fig = go.Figure()
    for kind, sub in by_role.groupby("kind", sort=False):
        fig.add_trace(go.Scatter(x=sub["layer"], y=sub[value], mode="lines+markers", name=kind))
    fig.update_layout(title=title, xaxis_title=BLOCK_OUTPUT_AXIS, yaxis_title=axis)
    fig.update_yaxes(type="log")
    return fig


def register_mean_lines(table: pd.DataFrame, entries: list[tuple[int, int]], title: str) -> go.Figure:
    """Mean register value across blocks for the (register, dim) pairs in ``entries``."""
    fig = go.Figure()
    for r, d in entries:
        sub = table[(table["register"] == r) & (table["dim"] == d)]
        fig.add_trace(go.Scatter(x=sub["block"], y=sub["mean"], mode="lines+markers", name=f"register {r}, dim {d}"))
    fig.update_layout(title=title, xaxis_title=BLOCK_INPUT_AXIS, yaxis_title="mean register feature")
    return fig


def condition_bars(table: pd.DataFrame, columns: list[str], title: str) -> go.Figure:
    fig = go.Figure()
    for column in columns:
        fig.add_trace(
            go.Bar(
                x=table["condition"],
                y=table[column],
                name=column,
                text=[f"{v:.4g}" for v in table[column]],
                textposition="outside",
            )
        )
    fig.update_layout(title=title, barmode="group", xaxis_title="condition", yaxis_title="value (see the table's definitions)")
    return fig


def head_heatmaps(heads: pd.DataFrame, targets: list[str], title: str) -> go.Figure:
    """Per (block, head) attention to each target column (NaN blank)."""
    fig = make_subplots(rows=1, cols=len(targets), subplot_titles=targets, shared_yaxes=True)
    for i, target in enumerate(targets):
        pivot = heads.pivot(index="layer", columns="head", values=target)
        fig.add_trace(
            go.Heatmap(
                z=pivot.values,
                x=pivot.columns.values,
                y=pivot.index.values,
                colorscale="Viridis",
                zmin=0,
                zmax=1,
                showscale=i == 0,
                colorbar={"title": "attention"},
                hoverongaps=False,
            ),
            row=1,
            col=i + 1,
        )
        fig.update_xaxes(title_text="head", row=1, col=i + 1)
    fig.update_yaxes(title_text="block (0-based)")
    fig.update_layout(title=title)
    return fig
