"""Figures fit for papers: one white template for every figure the toolkit writes, applied once when it is written
(``viz.writing``), plus what a reader needs that plotly does not do by itself: whole-number ticks on block axes, power
labels on log axes, and a legend entry for the blank cells of a heatmap (a missing value, not a small one).

A block axis is one whose title starts with "block" (every figure's block axis says which block convention it uses,
``viz.axes``). ``untitled_axes`` names the axes a figure leaves untitled; the tests run it on every figure written."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

# Okabe & Ito's colour-blind-safe palette, black last: lines stay distinguishable in greyscale print too.
COLORWAY = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
FONT = "Helvetica, Arial, sans-serif"
_AXIS = {"showline": True, "linecolor": "#444", "mirror": True, "ticks": "outside", "gridcolor": "#e5e5e5",
         "zeroline": False, "title": {"standoff": 8}, "automargin": True}
TEMPLATE = go.layout.Template(pio.templates["plotly_white"])
TEMPLATE.layout.update(font={"family": FONT, "size": 14, "color": "#222"}, colorway=COLORWAY,
                       title={"font": {"size": 17}, "x": 0.01, "xanchor": "left"},
                       xaxis=_AXIS, yaxis=_AXIS, paper_bgcolor="white", plot_bgcolor="white",
                       legend={"bgcolor": "rgba(255,255,255,0.8)"}, margin={"t": 70, "l": 70, "r": 30, "b": 60})
MISSING_LABEL = "blank cell: no value (NaN)"
MISSING_COLOR = "#d9d9d9"  # the heatmap's background: what a NaN cell shows


def print_style(fig: go.Figure) -> go.Figure:
    """``fig`` in the print template, block axes on whole numbers, log axes with power labels, missing cells in the
    legend. Idempotent: a figure styled twice looks the same."""
    fig.update_layout(template=TEMPLATE)
    for axis_name in [k for k in fig.layout.to_plotly_json() if k.startswith(("xaxis", "yaxis"))] + ["xaxis", "yaxis"]:
        axis = fig.layout[axis_name]
        if axis.type == "log":
            axis.update(exponentformat="power", showexponent="all")
        if _title(axis).lower().startswith("block"):
            axis.update(_block_ticks(_values_on(fig, axis_name)))
    _legend_missing(fig)
    return fig


def untitled_axes(fig: go.Figure) -> list[str]:
    """The axes of ``fig`` that carry data and have no title (cartesian and 3D)."""
    used = set()
    for trace in fig.data:
        if trace.type in ("scatter3d", "surface", "mesh3d", "cone"):
            scene = getattr(trace, "scene", None) or "scene"
            used |= {f"{scene}.{a}" for a in ("xaxis", "yaxis", "zaxis")}
        elif trace.type in ("scatter", "bar", "heatmap", "histogram", "box"):
            if trace.name == MISSING_LABEL:
                continue
            used |= {_axis_name(getattr(trace, "xaxis", None) or "x"), _axis_name(getattr(trace, "yaxis", None) or "y")}
    missing = []
    for name in sorted(used):
        if "." in name:
            scene, axis = name.split(".")
            title = _title(fig.layout[scene][axis])
        else:
            title = _title(fig.layout[name])
        if not title.strip():
            missing.append(name)
    return missing


def _title(axis) -> str:
    return (axis.title.text or "") if axis.title is not None else ""


def _axis_name(ref: str) -> str:
    """Trace reference ``x2`` -> layout key ``xaxis2``."""
    return ref[0] + "axis" + ref[1:]


def _values_on(fig: go.Figure, axis_name: str) -> list[float]:
    letter, suffix = axis_name[0], axis_name[5:]
    values: list[float] = []
    for trace in fig.data:
        if (getattr(trace, f"{letter}axis", None) or letter) != letter + suffix:
            continue
        data = getattr(trace, letter, None)
        if data is not None:
            values += [float(v) for v in np.asarray(data, dtype=object).ravel()
                       if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)]
    return values


def _block_ticks(values: list[float]) -> dict:
    """Ticks on whole blocks only: every block up to 16 of them, else a round step (2, 5, 10, ...)."""
    finite = [v for v in values if math.isfinite(v)]
    span = (max(finite) - min(finite)) if finite else 0
    step = 1
    for candidate in (1, 2, 5, 10, 20, 50, 100):
        step = candidate
        if span / candidate <= 16:
            break
    return {"tickmode": "linear", "tick0": 0, "dtick": step, "tickformat": "d"}


def _legend_missing(fig: go.Figure) -> None:
    """A legend entry for blank heatmap cells, once, when any heatmap has one; their colour is the plot background."""
    if any(t.name == MISSING_LABEL for t in fig.data):
        return
    has_nan = any(t.type == "heatmap" and t.z is not None and np.isnan(np.asarray(t.z, dtype=float)).any()
                  for t in fig.data)
    if not has_nan:
        return
    fig.update_layout(plot_bgcolor=MISSING_COLOR)
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=MISSING_LABEL, showlegend=True,
                             marker={"symbol": "square", "size": 14, "color": MISSING_COLOR,
                                     "line": {"color": "#888", "width": 1}}, hoverinfo="skip"))
    fig.update_layout(showlegend=True, legend={"orientation": "h", "x": 0, "y": 1.0, "yanchor": "bottom"})
