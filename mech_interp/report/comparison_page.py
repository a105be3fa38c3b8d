"""The cross-model page: one sortable row per model, a "-" where the model lacks the run, and the
definition of every column under the table (and on hover over its header)."""

from __future__ import annotations

import html
from pathlib import Path

from .comparison import DEFINITIONS, PERPLEXITY_CONDITIONS, SOURCES, ModelComparison, value_text
from .figures import link
from .model_page import model_page_path, run_anchor
from .page import render
from .tables import Cell, cell, sortable_table

COLUMNS = ("first massive block", "criterion", "layerwise data", "massive dims", "positions", "tokens", "feature view",
           "top-1", "median", "top-1/median", "largest top-1/median", "intervention block")
MISSING = Cell("-", "")


def _value(column: str, value) -> Cell:
    if value is None:
        return MISSING
    if isinstance(value, tuple):  # sorted by its first number
        return Cell(html.escape(value_text(column, value)), repr(value[0]))
    return cell(value)


def write_comparison(site: Path, rows: list[ModelComparison]) -> Path:
    page = site / "compare.html"
    datasets = sorted({d for r in rows for d in r.perplexity})
    ppl_columns = [(d, c) for d in datasets for c in PERPLEXITY_CONDITIONS]
    headers = ["model", *COLUMNS, *(f"{d}: {c}" for d, c in ppl_columns), "sink share", "runs read"]
    titles = ["", *(DEFINITIONS[c] for c in COLUMNS), *(DEFINITIONS[c] for _, c in ppl_columns),
              DEFINITIONS["sink share"], "the runs whose tables gave this row"]
    table_rows = []
    for row in rows:
        href = link(model_page_path(site, row.model), page)
        others = [n for n in row.names if n != row.model]  # the manifests' model names, where they say more
        label = html.escape(row.model) + (f"<br><small>{html.escape(', '.join(others))}</small>" if others else "")
        used = ", ".join(f'<a href="{href}#{run_anchor(run)}">{html.escape(run.name)}</a>' for run in row.used.values())
        table_rows.append([
            Cell(f'<a href="{href}">{label}</a>', row.model),
            *(_value(c, row.values.get(c)) for c in COLUMNS),
            *(_value(c, row.perplexity.get(d, {}).get(c)) for d, c in ppl_columns),
            _value("sink share", row.values.get("sink share")),
            Cell(used, ""),
        ])
    sources = ", ".join(f"{table} of {experiment}" for experiment, (table, _) in SOURCES.items())
    definitions = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in DEFINITIONS.items())
    body = (f'<p class="note">Where massive activations appear in each model, read from its runs\' tables ({sources}). '
            "A '-': the model has no run that gives the value. Of several runs of one experiment, the one with the "
            "experiment's plain name (default settings) is read, else the latest; 'runs read' links them. "
            "Perplexity columns: one triple per dataset of the intervention runs. Click a header to sort.</p>\n"
            + '<div class="wide">' + sortable_table(headers, table_rows, "comparison", titles) + "</div>\n"
            + f'<h2>Definitions</h2>\n<dl class="defs">{definitions}</dl>')
    if not rows:
        body = '<p class="note">No model has a run this page reads (layerwise, feature_view, intervention or ' \
               "attention of mech-interp).</p>\n" + body
    render(page, site, "Cross-model comparison: where massive activations appear", body)
    return page
