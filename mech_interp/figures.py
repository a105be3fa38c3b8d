"""Plotly figures built from the saved tables, and how they are written (HTML + PNG)."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

PLOTLY_JS = "plotly.min.js"


def ensure_plotly_js(results_root: Path) -> Path:
    """One copy of plotly.js per results tree, shared by every figure in it."""
    from plotly.offline import get_plotlyjs

    target = Path(results_root) / PLOTLY_JS
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
        tmp.write_text(get_plotlyjs(), encoding="utf-8")
        os.replace(tmp, target)
    return target


def png_export_available() -> bool:
    return any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "chrome")) or bool(
        os.environ.get("BROWSER_PATH")
    )


_warned_png = False


def write_figure(fig: go.Figure, base: Path, plotly_js_src: str) -> list[Path]:
    """``base.html`` always; ``base.png`` when a Chromium is there for kaleido (else one warning)."""
    global _warned_png
    html = base.with_suffix(".html")
    fig.write_html(html, include_plotlyjs=plotly_js_src, full_html=True)
    written = [html]
    if png_export_available():
        png = base.with_suffix(".png")
        fig.write_image(png, width=1100, height=750, scale=1)
        written.append(png)
    elif not _warned_png:
        warnings.warn("no Chromium found: figures are written as HTML only (install chromium for PNG)")
        _warned_png = True
    return written


LAYER_AXIS = "block (0-based, output = blocks.L.hook_resid_post)"


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


def layerwise_lines(summary: pd.DataFrame, title: str, log_y: bool = True) -> go.Figure:
    fig = go.Figure()
    for column in [c for c in summary.columns if c.startswith("top") and c[3:].isdigit()] + ["median"]:
        fig.add_trace(go.Scatter(x=summary["layer"], y=summary[column], mode="lines+markers", name=column))
    fig.update_layout(title=title, xaxis_title=LAYER_AXIS, yaxis_title="|activation| (mean over sequences)")
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def attention_logits_heatmap(logits: pd.DataFrame, title: str) -> go.Figure:
    pivot = logits.pivot(index="query_pos", columns="key_pos", values="logit")
    tokens = logits.drop_duplicates("query_pos").set_index("query_pos")["query_token"].reindex(pivot.index)
    labels = [f"{i}: {t!r}" for i, t in tokens.items()]
    fig = go.Figure(go.Heatmap(z=pivot.values, x=labels, y=labels, colorscale="RdBu_r", zmid=0,
                               colorbar={"title": "logit"}, hoverongaps=False))
    fig.update_layout(title=title, xaxis_title="key token", yaxis_title="query token", yaxis_autorange="reversed")
    return fig


def head_attention_heatmap(heads: pd.DataFrame, title: str) -> go.Figure:
    pivot = heads.pivot(index="layer", columns="head", values="attention_to_massive")
    fig = go.Figure(go.Heatmap(z=pivot.values, x=pivot.columns.values, y=pivot.index.values, colorscale="Viridis",
                               zmin=0, zmax=1, colorbar={"title": "attention"}))
    fig.update_layout(title=title, xaxis_title="head", yaxis_title=LAYER_AXIS)
    return fig


def perplexity_bars(table: pd.DataFrame, conditions: list[str], title: str) -> go.Figure:
    """Perplexity per dataset and condition, log scale: set_zero sits orders of magnitude above."""
    fig = go.Figure([
        go.Bar(x=table["dataset"], y=table[c], name=c, text=[f"{v:.4g}" for v in table[c]], textposition="outside")
        for c in conditions
    ])
    fig.update_layout(title=title, barmode="group", xaxis_title="dataset", yaxis_title="perplexity (log scale)")
    fig.update_yaxes(type="log")
    return fig
