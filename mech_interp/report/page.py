"""The frame every page of the site shares: its head, navigation, style sheet, sorting script and
the script that loads figures as they come into view."""

from __future__ import annotations

import html
from pathlib import Path

from .figures import LAZY_FILE, LAZY_JS, link

CSS_FILE = "report.css"
SORT_FILE = "sort.js"

# Fits any window from 800 px up without a horizontal scroll of the page: tables too wide scroll in their
# own box (.wide, .scroll), figures take the page's width, and long names (run directories, tokens) break
# anywhere outside tables rather than widen the page.
CSS = """\
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h1, h2, h3, p, li, dt, dd, figcaption, summary { overflow-wrap: anywhere; }
nav { margin-bottom: 1em; } nav a { margin-right: 1.2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table.sortable, table.findings { border-collapse: collapse; font-size: 13px; margin: .5em 0 1em; }
table.sortable th, table.sortable td, table.findings th, table.findings td { border: 1px solid #ddd;
  padding: 2px 6px; text-align: left; vertical-align: top; }
table.sortable th { background: #f3f3f3; cursor: pointer; user-select: none; position: sticky; top: 0; }
table.sortable th.asc::after { content: " \\25B2"; } table.sortable th.desc::after { content: " \\25BC"; }
table.findings th { background: #f3f3f3; }
table.findings td.value { font-weight: 600; min-width: 12em; } table.findings td.def { color: #555; min-width: 16em; }
.findings { background: #f7faff; border: 1px solid #cdddf3; padding: 0 1em .5em; }
.findings h2 { margin-top: .6em; }
.wide { overflow-x: auto; max-height: 32em; overflow-y: auto; }
.scroll { overflow-x: auto; }
figure { margin: 1em 0; }
figure.plot iframe { width: 100%; height: 560px; border: 1px solid #ddd; box-sizing: border-box; }
figure.image img { max-width: 100%; }
figcaption, .note { color: #555; font-size: 13px; }
pre { background: #f8f8f8; padding: .6em; overflow-x: auto; font-size: 12px; }
dl.defs dt { font-weight: bold; margin-top: .5em; } dl.defs dd { margin-left: 1.5em; }
"""

# Sorts a table's body by the clicked column: numbers before text, numbers numerically, text in natural
# order (so a column holding both "11" and "none" still sorts its numbers as numbers); empty cells last
# either way. A second click reverses.
SORT_JS = """\
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var headers = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(headers, function (th, col) {
      th.addEventListener("click", function () {
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        var desc = th.classList.contains("asc");
        Array.prototype.forEach.call(headers, function (h) { h.classList.remove("asc", "desc"); });
        th.classList.add(desc ? "desc" : "asc");
        var value = function (row) { return row.cells[col] ? row.cells[col].getAttribute("data-v") : ""; };
        rows.sort(function (a, b) {
          var x = value(a), y = value(b);
          if (x === "" || y === "") { return (x === "") - (y === ""); }
          var nx = !isNaN(Number(x)), ny = !isNaN(Number(y));
          var order = nx && ny ? Number(x) - Number(y) : nx !== ny ? (nx ? -1 : 1)
                    : x.localeCompare(y, undefined, {numeric: true});
          return desc ? -order : order;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
});
"""


def write_assets(site: Path) -> None:
    (site / CSS_FILE).write_text(CSS, encoding="utf-8")
    (site / SORT_FILE).write_text(SORT_JS, encoding="utf-8")
    (site / LAZY_FILE).write_text(LAZY_JS, encoding="utf-8")


def render(path: Path, site: Path, title: str, body: str) -> None:
    """Write one page at ``path`` with the site's navigation, style and scripts."""
    nav = " ".join(f'<a href="{link(site / target, path)}">{label}</a>'
                   for target, label in (("index.html", "Index"), ("compare.html", "Cross-model comparison")))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{html.escape(title)}</title>\n'
        f'<link rel="stylesheet" href="{link(site / CSS_FILE, path)}">\n'
        f'<script src="{link(site / SORT_FILE, path)}"></script>\n'
        f'<script src="{link(site / LAZY_FILE, path)}"></script>\n</head>\n<body>\n<nav>{nav}</nav>\n'
        f"<h1>{html.escape(title)}</h1>\n{body}\n</body>\n</html>\n",
        encoding="utf-8",
    )
