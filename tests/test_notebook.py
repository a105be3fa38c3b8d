"""The notebook runs top to bottom on the embedded default model and shows what it claims."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "01_massive_activations.ipynb"
PLOTLY_MIME = "application/vnd.plotly.v1+json"

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
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError with the failing cell's traceback
    probe = next(o["text"] for o in nb.cells[-1].outputs if o.get("name") == "stdout" and "PROBE " in o["text"])
    return nb, json.loads(probe.split("PROBE ", 1)[1])


def test_notebook_finds_the_massive_activation_and_draws_every_figure(executed):
    nb, probe = executed
    assert probe["first"] is not None and 0 < probe["first"] < probe["n_layers"]
    assert probe["massive_dims"], "no massive dim found on the real model"
    assert probe["feature_massive"] and {m["dim"] for m in probe["feature_massive"]} <= set(probe["massive_dims"])
    # 3D feature view, layer-wise lines, perplexity bars, attention logits, head attention.
    figures = sum(PLOTLY_MIME in out.get("data", {}) for c in nb.cells if c.cell_type == "code" for out in c.outputs)
    assert figures == 5, figures


def test_notebook_intervention_shows_the_paper_claim(executed):
    _, probe = executed
    (row,) = probe["perplexity"]
    assert row["set_zero"] > 10 * row["original"]
    assert abs(row["set_mean_change_pct"]) < 5.0
