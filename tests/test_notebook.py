"""The notebook runs top to bottom on the embedded default model and shows what it claims."""

from __future__ import annotations

from pathlib import Path

import pytest

from .support.notebook_runs import execute_with_probe, plotly_figures

pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "01_massive_activations.ipynb"

# Appended to a copy of the notebook: reads the notebook's own variables after it ran.
PROBE = """
import json as _json
print("PROBE " + _json.dumps({
    "first": FIRST,
    "n_layers": model.cfg.n_layers,
    "massive_dims": lw.summary["massive_dims"],
    "perplexity": iv.tables["perplexity"].to_dict("records"),
    "feature_massive": fv.summary["massive"],
}))
"""


@pytest.fixture(scope="module")
def executed():
    return execute_with_probe(NOTEBOOK, PROBE)


def test_notebook_finds_the_massive_activation_and_draws_every_figure(executed):
    nb, probe = executed
    assert probe["first"] is not None and 0 < probe["first"] < probe["n_layers"]
    assert probe["massive_dims"], "no massive dim found on the real model"
    assert probe["feature_massive"] and {m["dim"] for m in probe["feature_massive"]} <= set(probe["massive_dims"])
    # 3D feature view, layer-wise lines, perplexity bars, attention logits, head attention.
    figures = plotly_figures(nb)
    assert figures == 5, figures


def test_notebook_intervention_shows_the_paper_claim(executed):
    _, probe = executed
    (row,) = probe["perplexity"]
    assert row["set_zero"] > 10 * row["original"]
    assert abs(row["set_mean_change_pct"]) < 5.0
