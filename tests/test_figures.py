"""Figures fit for papers (issue 19): the print style every written figure gets, the 3D views drawn as measured,
and ``--figure-format``. Every figure the other tests write is also checked for untitled axes (tests/conftest.py)."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from mech_interp.validation.errors import UsageError
from mech_interp.viz import writing
from mech_interp.viz.feature_view import feature_view_3d
from mech_interp.viz.heads import before_after_3d, layer_head_heatmap
from mech_interp.viz.layerwise import layerwise_lines
from mech_interp.viz.print_style import MISSING_LABEL, TEMPLATE, print_style, untitled_axes

from .cli_runs import run_cli


def _grid(values: dict[tuple[int, int], float], n_pos: int = 3, d: int = 4) -> pd.DataFrame:
    rows = [{"position": p, "token": f"t{p}", "dim": k, "abs": values.get((p, k), 0.5)} for p in range(n_pos) for k in range(d)]
    return pd.DataFrame(rows)


def test_block_axes_tick_whole_blocks_and_log_axes_label_powers():
    summary = pd.DataFrame({"layer": [0, 1, 2, 3], "top1": [1.0, 10.0, 1e3, 1e4], "median": [0.5, 0.5, 0.6, 0.6]})
    fig = print_style(layerwise_lines(summary, "t"))
    assert fig.layout.xaxis.dtick == 1 and fig.layout.xaxis.tickformat == "d" and fig.layout.xaxis.tick0 == 0
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis.exponentformat == "power"
    assert fig.layout.template.layout.paper_bgcolor == TEMPLATE.layout.paper_bgcolor == "white"
    many = pd.DataFrame({"layer": range(40), "top1": np.linspace(1, 2, 40), "median": np.ones(40)})
    assert print_style(layerwise_lines(many, "t")).layout.xaxis.dtick == 5  # 39 blocks: every 5th, still whole


def test_blank_heatmap_cells_are_named_in_the_legend_once():
    table = pd.DataFrame({"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1], "score": [0.2, math.nan, 0.4, 0.9]})
    fig = print_style(print_style(layer_head_heatmap(table, "score", "t", "score")))
    assert [t.name for t in fig.data].count(MISSING_LABEL) == 1 and fig.layout.showlegend
    full = print_style(layer_head_heatmap(table.fillna(0.1), "score", "t", "score"))
    assert MISSING_LABEL not in [t.name for t in full.data]


def test_untitled_axes_are_found():
    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 2]))
    assert untitled_axes(fig) == ["xaxis", "yaxis"]
    fig.update_layout(xaxis_title="block", yaxis_title="|a|")
    assert untitled_axes(fig) == []
    assert untitled_axes(go.Figure(go.Scatter3d(x=[0], y=[0], z=[0]))) == ["scene.xaxis", "scene.yaxis", "scene.zaxis"]


def test_the_3d_view_draws_each_entry_as_measured():
    """One stem per (token, dim) from 0 to exactly its |a|: the spike stays at its own token and dim, nothing is
    interpolated; every token is labelled and the value axis reaches the largest |a|."""
    grid = _grid({(1, 2): 5000.0})
    fig = feature_view_3d(grid, pd.DataFrame({"position": [1], "dim": [2], "abs": [5000.0]}), "t")
    stems = fig.data[0]
    x, y, z = (np.array(v, dtype=float) for v in (stems.x, stems.y, stems.z))
    tops = {(int(x[i]), int(y[i])): z[i] for i in range(1, len(z), 3)}
    assert len(tops) == 3 * 4 and tops[(2, 1)] == 5000.0 and all(v == 0.5 for k, v in tops.items() if k != (2, 1))
    assert np.all(z[0::3] == 0) and np.all(np.isnan(z[2::3]))
    scene = fig.layout.scene
    assert list(scene.yaxis.ticktext) == ["0: 't0'", "1: 't1'", "2: 't2'"] and scene.zaxis.range[1] >= 5000


def test_before_and_after_share_one_scale():
    before, after = _grid({(0, 1): 900.0}), _grid({(0, 1): 30.0})
    fig = before_after_3d(before, after, "t")
    assert fig.layout.scene.zaxis.range == fig.layout.scene2.zaxis.range and fig.layout.scene.zaxis.range[1] >= 900
    assert fig.data[0].line.cmax == fig.data[1].line.cmax == 900.0
    assert fig.layout.scene.camera == fig.layout.scene2.camera


@pytest.mark.parametrize("value", ["jpg", "png,gif", "", " , "])
def test_a_bad_figure_format_is_refused(value):
    with pytest.raises(UsageError, match=r"--figure-format .* is not allowed: expected a comma-separated list of png, "
                                         r"svg, pdf \(HTML is always written\), or none"):
        writing.parse_formats(value)
    assert writing.parse_formats("SVG, pdf,svg") == ("svg", "pdf") and writing.parse_formats("none") == ()


def test_bad_figure_format_on_the_command_line_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(writing.FORMAT_ENV, "png")
    code, _, err = run_cli(["layerwise", "--model", "random:gpt2-tiny", "--figure-format", "tiff",
                            "--out", tmp_path / "r"], capsys)
    assert code == 2 and err.strip().splitlines() == [
        "mech-interp: error: --figure-format 'tiff' is not allowed: expected a comma-separated list of png, svg, pdf "
        "(HTML is always written), or none"]
    assert not (tmp_path / "r").exists()


@pytest.mark.png
def test_figures_are_written_as_svg_and_pdf_when_asked(tmp_path, capsys, monkeypatch):
    if not writing.browser_available():
        pytest.skip("no Chromium for kaleido here: static figures cannot be exported")
    monkeypatch.setenv(writing.FORMAT_ENV, "png")
    out = tmp_path / "r"
    code, _, err = run_cli(["layerwise", "--model", "random:gpt2-tiny", "--device", "cpu", "--n-seqs", "2",
                            "--seq-len", "32", "--figure-format", "svg,pdf", "--out", out], capsys)
    assert code == 0, err
    run_dir = next((out / "random-gpt2-tiny").iterdir())
    assert (run_dir / "layerwise.svg").read_text().lstrip().startswith(("<svg", "<?xml"))
    assert (run_dir / "layerwise.pdf").read_bytes()[:5] == b"%PDF-" and not (run_dir / "layerwise.png").exists()
    files = json.loads((run_dir / "manifest.json").read_text())["files"]
    assert {"layerwise.html", "layerwise.svg", "layerwise.pdf"} <= set(files)
    assert os.environ[writing.FORMAT_ENV] == "png"  # the flag was the command's: a later command in-process is as before
