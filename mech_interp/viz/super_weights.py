"""Figures of the super-weight scan, each drawn from the table the run saves beside it."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

SCAN_AXIS = "block (0-based TransformerLens block whose MLP is scanned)"


def spike_lines(spikes: pd.DataFrame, title: str) -> go.Figure:
    """Per block: the largest |input| and |output| of the MLP's down-projection on the prompt, and |write| of the
    block's candidate weight, on a log axis (a super weight is a spike in all three at one block)."""
    rows = spikes.sort_values("layer")
    fig = go.Figure()
    for column, name in (("input_spike", "max |down-projection input| (hook_post)"),
                         ("output_spike", "max |down-projection output| (hook_mlp_out)"),
                         ("write", "|write| of W_out[row, col]")):
        fig.add_trace(go.Scatter(x=rows["layer"], y=rows[column].abs(), mode="lines+markers", name=name,
                                 text=[f"W_out[{r.row}, {r.col}]" for r in rows.itertuples()],
                                 hovertemplate="block %{x}: %{y:.4g} (%{text})<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=SCAN_AXIS, yaxis_title="|activation| on the prompt")
    fig.update_yaxes(type="log")
    return fig


def effect_bars(effects: pd.DataFrame, clean_perplexity: float, title: str) -> go.Figure:
    """Per candidate and condition: the change of its own output spike, and the perplexity (the clean one dashed)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("the candidate's output spike (prompt)", "perplexity (windows)"))
    for condition, rows in effects.groupby("condition", sort=False):
        labels = [f"#{r.rank} block {r.layer} W_out[{r.row}, {r.col}]" for r in rows.itertuples()]
        fig.add_trace(go.Bar(x=labels, y=rows["spike_change_pct"], name=condition, legendgroup=condition), row=1, col=1)
        fig.add_trace(go.Bar(x=labels, y=rows["perplexity"], name=condition, legendgroup=condition, showlegend=False),
                      row=1, col=2)
    fig.add_hline(y=clean_perplexity, line_dash="dash", annotation_text="clean", row=1, col=2)
    fig.update_xaxes(title_text="candidate weight")
    fig.update_yaxes(title_text="change of the spike (%)", row=1, col=1)
    fig.update_yaxes(type="log", title_text="perplexity (log scale)", row=1, col=2)
    fig.update_layout(title=title, barmode="group")
    return fig
