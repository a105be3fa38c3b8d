"""One page per model: the findings of its runs, then each run, in the paper's order, with its
manifest, printed summary, every figure and every table (sortable, the first ``MAX_ROWS`` rows)."""

from __future__ import annotations

import hashlib
import html
import json
import re
from pathlib import Path

from ..runs.output import MANIFEST
from .discovery import Run
from .figures import figure_html, image_html, link
from .findings import Finding
from .findings_box import findings_box
from .page import render
from .run_files import run_folder
from .rounding import DEFINITION as ROUNDING
from .rounding import rounded
from .tables import MAX_ROWS, frame_table, read_head


def _safe(text: str, allowed: str) -> str:
    """``text`` with other characters replaced; a hash of the original when any was, so that two
    names never become one."""
    safe = re.sub(f"[^{allowed}]", "_", text)
    return safe if safe == text else f"{safe}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def model_page_path(site: Path, model: str) -> Path:
    return site / "models" / (_safe(model.replace("/", "__"), "A-Za-z0-9._,=-") + ".html")


def run_anchor(run: Run) -> str:
    return "run-" + _safe(run.rel, "A-Za-z0-9._,=/-")


def facts(run: Run) -> str:
    """The manifest's provenance in one line."""
    seconds = run.seconds
    parts = [f"experiment <b>{html.escape(run.experiment)}</b>", f"finished {html.escape(run.when)}",
             f"commit <code>{html.escape(run.commit)}</code>"]
    if seconds is not None:
        parts.append(f"{rounded(seconds)} s")
    if run.model_name:
        parts.append(f"model {html.escape(run.model_name)}")
    return " · ".join(parts)


def _table(name: str, path: Path, csv: Path, page: Path, anchor: str) -> str:
    try:
        frame, total = read_head(path)
    except (OSError, ValueError) as err:
        return f'<h3>{html.escape(name)}</h3><p class="note">could not be read: {html.escape(str(err))}</p>'
    shown = (f"all {total} rows" if total <= MAX_ROWS
             else f"the first {MAX_ROWS} of {total} rows (the whole table is the CSV)")
    csv_link = f' · <a href="{link(csv, page)}">CSV</a>' if csv.is_file() else ""
    return (f'<h3 id="{anchor}-{html.escape(name)}">{html.escape(name)}</h3>\n'
            f'<p class="note">{total} rows x {len(frame.columns)} columns; showing {shown}, rounded; '
            f"click a header to sort{csv_link}</p>\n"
            f'<div class="wide">{frame_table(frame, f"{anchor}-table-{name}")}</div>')


def run_section(run: Run, site: Path, page: Path) -> str:
    folder = run_folder(site, run)
    anchor = run_anchor(run)
    parts = [f'<section class="run" id="{anchor}">',
             f"<h2>{html.escape(run.name)}</h2>",
             f'<p class="note">{facts(run)} · directory <code>{html.escape(run.rel)}</code></p>']
    if run.unreadable:
        parts.append(f'<p class="note">its manifest.json could not be read as a JSON object: '
                     f"{html.escape(run.unreadable)}</p>")
    if run.problems:
        parts.append(f'<p class="note">manifest fields left out, of the wrong type: '
                     f"{html.escape('; '.join(run.problems))}</p>")
    if run.skipped:
        parts.append(f'<p class="note">not read, links leaving the results tree: '
                     f'{html.escape(", ".join(run.skipped))}</p>')
    parts.append(f'<details><summary>manifest (<a href="{link(folder / MANIFEST, page)}">manifest.json</a>)</summary>'
                 f"<pre>{html.escape(json.dumps(run.manifest, indent=2, default=str))}</pre></details>")
    for name in run.texts:
        text = (folder / name).read_text(encoding="utf-8", errors="replace")
        parts.append(f"<h3>{html.escape(name)}</h3><pre>{html.escape(text)}</pre>")
    for name in run.figures:
        png = folder / f"{name}.png" if name in run.images else None
        parts.append(figure_html(name, folder / f"{name}.html", page, png))
    for name in run.images:
        if name not in run.figures:
            parts.append(image_html(name, folder / f"{name}.png", page))
    for name, path in run.tables.items():
        parts.append(_table(name, path, folder / f"{name}.csv", page, anchor))
    parts.append("</section>")
    return "\n".join(parts)


def write_model_page(site: Path, model: str, runs: list[Run], found: dict[str, list[Finding]]) -> Path:
    """``runs`` in the order shown; ``found``: each run's findings, by its path."""
    page = model_page_path(site, model)
    contents = "".join(f'<li><a href="#{run_anchor(r)}">{html.escape(r.name)}</a> ({html.escape(r.experiment)}: '
                       f"{len(r.tables)} tables, {len(r.figures) + len(set(r.images) - set(r.figures))} figures)</li>"
                       for r in runs)
    names = sorted({r.model_name for r in runs if r.model_name})
    intro = (f'<p class="note">results directory <code>{html.escape(model)}</code>'
             + (f"; model {html.escape(', '.join(names))}" if names else "")
             + f"; runs in the paper's order; {html.escape(ROUNDING)} (each table's CSV holds every digit)</p>")
    body = (intro + findings_box(runs, found, run_anchor) + f"<h2>Runs</h2><ul>{contents}</ul>\n"
            + "\n".join(run_section(r, site, page) for r in runs))
    render(page, site, f"Model {model}", body)
    return page
