"""Notebook 02 runs top to bottom on the embedded SmolLM2 and shows what it claims."""

from __future__ import annotations

from pathlib import Path

import pytest

from .support.notebook_runs import execute_with_probe, plotly_figures

pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

pytestmark = pytest.mark.acceptance

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "02_attention_heads.ipynb"

PROBE = """
import json as _json
print("PROBE " + _json.dumps({
    "first": attribution.summary["first_massive_layer"],
    "entry": attribution.summary["entry"],
    "closure": attribution.summary["max_abs_closure"],
    "edits": attribution.tables["edits"][["edit", "massive_change_pct"]].to_dict("records"),
    "sink_share": scores.summary["sink_head_share"],
    "sweep_prompt": sweep.tables["sweep_heads"].query("input == 'prompt'")[["layer", "massive_change_pct"]].to_dict("records"),
    "contrast": CONTRAST,
}))
"""


@pytest.fixture(scope="module")
def executed():
    # the kernel's torch: one thread (a second only adds synchronisation to these small forwards on a busy CPU)
    return execute_with_probe(NOTEBOOK, PROBE, env={"OMP_NUM_THREADS": "1"})


def test_notebook_runs_and_draws_every_figure(executed):
    nb, probe = executed
    figures = plotly_figures(nb)
    assert figures == 6, figures
    assert probe["sink_share"] > 0.5  # most of SmolLM2's heads are sink heads


def test_notebook_finds_the_writer_and_the_heads_that_cannot_move_it(executed):
    _, probe = executed
    first, (_, position, _) = probe["first"], probe["entry"]
    assert position == 0 and 0 < first < 29
    assert probe["closure"] < 1e-2 * 1e4  # the writes add up to the ~2e4 residual value
    top_neuron = next(e["massive_change_pct"] for e in probe["edits"] if e["edit"].startswith("top neuron"))
    randoms = [e["massive_change_pct"] for e in probe["edits"] if e["edit"].startswith("random neuron")]
    assert top_neuron < -50 and max(abs(r) for r in randoms) < 5  # one neuron writes it; a random one does not
    # heads after the first massive block cannot move it there (causality)
    assert all(r["massive_change_pct"] == 0 for r in probe["sweep_prompt"] if r["layer"] > first)
    contrast = probe["contrast"]
    assert len(contrast) == 3
