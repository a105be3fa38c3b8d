"""Notebook 05 runs top to bottom (super weights and the sink window on the embedded SmolLM2, emergence over a tiny
series trained in it) and shows what it claims."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import shared_data
from .support.notebook_runs import execute_with_probe, plotly_figures

pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

pytestmark = pytest.mark.acceptance

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "05_followups.ipynb"

PROBE = """
import json as _json
print("PROBE " + _json.dumps({
    "candidates": weights.summary["candidates"],
    "massive_entry": weights.summary["massive_entry"],
    "effects": weights.tables["effects"][["layer", "scale", "spike_restored", "perplexity"]].to_dict("records"),
    "clean_perplexity": weights.summary["clean_perplexity"],
    "window": window.tables["perplexity"][["condition", "window", "sinks", "perplexity"]].to_dict("records"),
    "series": series.tables["emergence"][["step", "first_massive_layer", "sink_share"]].astype(object).where(
        series.tables["emergence"][["step", "first_massive_layer", "sink_share"]].notna(), None).to_dict("records"),
}))
"""


@pytest.fixture(scope="module")
def executed():
    shared_data("wikitext-2-raw/wiki.test.raw")  # the sink window's text
    # the kernel's torch: one thread (a second only adds synchronisation to these small forwards on a busy CPU)
    return execute_with_probe(NOTEBOOK, PROBE, env={"OMP_NUM_THREADS": "1"})


def test_notebook_runs_and_draws_every_figure(executed):
    nb, _ = executed
    figures = plotly_figures(nb)
    assert figures == 4, figures


def test_the_super_weight_it_finds_writes_the_massive_activation(executed):
    """The top candidate is the weight the head study's attribution names (block 11, W_out[1229, 507] into dim 507 of
    token 0), and zeroing it breaks the model where restoring the massive activation mends most of it."""
    _, probe = executed
    top = probe["candidates"][0]
    position, dim, _ = probe["massive_entry"]
    assert (top["layer"], top["row"], top["col"]) == (11, 1229, dim) and (position, dim) == (0, 507)
    zeroed = {(e["scale"], e["spike_restored"]): e["perplexity"] for e in probe["effects"] if e["layer"] == 11}
    assert zeroed[(0.0, False)] > 3 * probe["clean_perplexity"]
    assert zeroed[(0.0, True)] < zeroed[(0.0, False)]


def test_the_window_without_its_sink_is_worse_than_with_it(executed):
    _, probe = executed
    at = {(r["condition"], r["sinks"]): r["perplexity"] for r in probe["window"]}
    full, alone, one_sink = at[("full", 0)], at[("window", 0)], at[("sinks", 1)]
    assert full < one_sink < alone


def test_emergence_measures_every_checkpoint_of_the_tiny_series(executed):
    _, probe = executed
    assert [r["step"] for r in probe["series"]] == [10, 20, 30, 40]
    assert all(0 <= r["sink_share"] <= 1 for r in probe["series"])
