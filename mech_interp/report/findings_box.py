"""The findings as HTML: the box at the top of a model page (every finding of its runs, with its
definition, linking the run it comes from) and the index's short list per model (the headline
findings, their definitions on hover). Everything a results tree gave is escaped here."""

from __future__ import annotations

import html
from typing import Callable

from .discovery import Run
from .findings import Finding
from .rounding import DEFINITION as ROUNDING

NOTE = ("Each run's headline numbers, in the paper's order, each with its definition as the runs print it "
        "(docs/conventions.md); blocks are 0-based (blocks.L.hook_resid_post, the paper's layer L+1). "
        f"Shown rounded ({ROUNDING}); each run's CSV and parquet tables hold every digit.")


def _row(finding: Finding) -> str:
    return (f"<td>{html.escape(finding.label)}</td><td class=\"value\">{html.escape(finding.value)}</td>"
            f"<td class=\"def\">{html.escape(finding.definition)}</td>")


def findings_box(runs: list[Run], found: dict[str, list[Finding]], anchor: Callable[[Run], str]) -> str:
    """The box of a model page: ``found`` holds each run's findings by its path, ``anchor`` gives the id of
    its section. Empty where no run has any."""
    rows = []
    for run in runs:
        for i, finding in enumerate(found[run.rel]):
            head = (f'<td rowspan="{len(found[run.rel])}"><a href="#{anchor(run)}">{html.escape(run.name)}</a></td>'
                    if i == 0 else "")
            rows.append(f"<tr>{head}{_row(finding)}</tr>")
    if not rows:
        return ""
    return ('<section class="findings" id="findings"><h2>Findings</h2>\n'
            f'<p class="note">{html.escape(NOTE)}</p>\n<div class="scroll">'
            '<table class="findings" id="findings-table"><thead><tr>'
            "<th>run</th><th>finding</th><th>value</th><th>definition</th></tr></thead>\n<tbody>\n"
            + "\n".join(rows) + "\n</tbody></table></div></section>")


def headlines(runs: list[Run], found: dict[str, list[Finding]]) -> tuple[str, str]:
    """The index's short findings of one model: (HTML, plain text to sort by)."""
    shown = [f for run in runs for f in found[run.rel] if f.headline]
    items = [f'<span title="{html.escape(f.definition)}">{html.escape(f.label)}: {html.escape(f.value)}</span>'
             for f in shown]
    return "<br>".join(items) or "-", "; ".join(f"{f.label}: {f.value}" for f in shown)
