"""The tutorial notebooks (notebooks/*.ipynb) as pages of the site: mkdocs-jupyter renders them from their stored
outputs and never runs them (scripts/execute_notebooks.py stores the outputs; the notebook tests run the notebooks).
A notebook stored unexecuted, with an error among its outputs, or with a heading its page's table of contents would
link wrongly, is a warning: the strict build fails on it."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
from mkdocs.plugins import event_priority, get_plugin_logger
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"

log = get_plugin_logger(__name__)


def stored_problems(path: Path) -> list[str]:
    """Why a notebook's stored outputs are not those of one run from the top without an error; empty when they are."""
    nb = nbformat.read(path, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code" and cell.source.strip()]
    counts = [cell.execution_count for cell in code]
    if not any(counts) or not any(cell.outputs for cell in code):
        return ["stored unexecuted (no outputs)"]
    problems = []
    if counts != list(range(1, len(code) + 1)):
        problems.append(f"not stored from one run from the top (execution counts {counts})")
    problems += [f"cell {index} stored an error: {output.ename}: {output.evalue}"
                 for index, cell in enumerate(nb.cells) for output in cell.get("outputs", [])
                 if output.output_type == "error"]
    return problems


def heading_problems(path: Path) -> list[str]:
    """Headings with code in them: mkdocs-jupyter's table of contents slugs them without the code, the page's headings
    keep it, so the contents would link to anchors that do not exist."""
    nb = nbformat.read(path, as_version=4)
    return [f"cell {index}: code in the heading {heading!r} (its table of contents entry would link nowhere)"
            for index, cell in enumerate(nb.cells) if cell.cell_type == "markdown"
            for heading in _headings(cell.source) if "`" in heading]


def _headings(markdown: str):
    fenced = False
    for line in markdown.splitlines():
        fenced ^= line.lstrip().startswith("```")
        if not fenced and re.match(r"#{1,6}\s", line):
            yield line


@event_priority(50)  # before mkdocs-jupyter's on_files, which turns the notebooks it is given into pages
def on_files(files, config):
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        for problem in stored_problems(path):
            log.warning(f"notebooks/{path.name}: {problem}; make notebooks stores them executed")
        for problem in heading_problems(path):
            log.warning(f"notebooks/{path.name}: {problem}")
        # Served as notebooks/NAME.html although they live outside docs/: the pages' links name them so.
        files.append(File(f"notebooks/{path.name}", str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files
